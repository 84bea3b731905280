/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The option tables' sources (src/lib/options.c): precedence defaults < file
 * < drop-ins (lexical order) < command line, and the SIGHUP reload (live
 * options applied, others reported, a bad file changes nothing). Real files
 * in a temporary folder.
 */
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stddef.h>
#include <string.h>

#include <glib/gstdio.h>

#include "options.h"

struct cfg {
        char *name;
        unsigned a, b, c, d;
        guint64 rate;
        bool flag;
        struct fy_options_sources *sources;
};

#define O(f) offsetof(struct cfg, f)

static const struct fy_option options[] = {
        { "name", FY_OPT_STRING, "dflt", 1, 32, O(name), "a string", true },
        { "a", FY_OPT_UINT, "1", 0, 100, O(a), "from the file", true },
        { "b", FY_OPT_UINT, "1", 0, 100, O(b), "from the first drop-in", true },
        { "c", FY_OPT_UINT, "1", 0, 100, O(c), "from the second drop-in", true },
        { "d", FY_OPT_UINT, "1", 0, 100, O(d), "from the command line", true },
        { "rate", FY_OPT_SIZE, "0", 0, 1024, O(rate), "a size", true },
        { "flag", FY_OPT_BOOL, "false", 0, 0, O(flag), "not live" },
};

static char *tmpdir;
static char *conf_path;

static struct fy_options_spec spec = {
        .program = "test",
        .section = "test",
        .summary = "test",
        .version = "0",
        .options = options,
        .n_options = G_N_ELEMENTS(options),
        .config_size = sizeof(struct cfg),
};

static void write_file(const char *rel, const char *text)
{
        g_autofree char *path = g_build_filename(tmpdir, rel, NULL);
        g_autofree char *dir = g_path_get_dirname(path);

        g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
        g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void setup(void)
{
        GError *error = NULL;

        tmpdir = g_dir_make_tmp("test-options-XXXXXX", &error);
        g_assert_no_error(error);
        conf_path = g_build_filename(tmpdir, "test.conf", NULL);
        spec.default_config = conf_path;
}

static void teardown(void)
{
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);

        g_assert_cmpint(system(cmd), ==, 0);
        g_clear_pointer(&tmpdir, g_free);
        g_clear_pointer(&conf_path, g_free);
}

/* Runs the loader on "prog ARGS..." (NULL-terminated). */
static int load(struct cfg *c, GError **error, ...)
{
        g_autoptr(GPtrArray) args = g_ptr_array_new();
        char **argv;
        int argc, r;
        const char *arg;
        va_list ap;

        g_ptr_array_add(args, (char *) "prog");
        va_start(ap, error);
        while ((arg = va_arg(ap, const char *)))
                g_ptr_array_add(args, (char *) arg);
        va_end(ap);
        g_ptr_array_add(args, NULL);
        argc = (int) args->len - 1;
        argv = (char **) args->pdata;
        memset(c, 0, sizeof(*c));
        r = fy_options_load(&spec, c, &argc, &argv, &c->sources, error);
        return r;
}

static void cfg_clear(struct cfg *c)
{
        fy_options_clear(&spec, c);
        g_clear_pointer(&c->sources, fy_options_sources_free);
}

static void test_defaults_without_file(void)
{
        struct cfg c;
        GError *error = NULL;

        setup();
        g_assert_cmpint(load(&c, &error, NULL), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(c.name, ==, "dflt");
        g_assert_cmpuint(c.a, ==, 1);
        g_assert_cmpuint(c.d, ==, 1);
        cfg_clear(&c);
        /* An explicit --config must exist. */
        g_assert_cmpint(load(&c, &error, "--config", "/nonexistent/test.conf", NULL), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "/nonexistent/test.conf"));
        g_clear_error(&error);
        teardown();
}

static void test_precedence(void)
{
        struct cfg c;
        GError *error = NULL;

        setup();
        write_file("test.conf", "[test]\nname = file\na = 2\nb = 2\nc = 2\nd = 2\n");
        /* Written in reverse order: the loader sorts, the directory order does not matter. */
        write_file("test.conf.d/20-second.conf", "[test]\nc = 4\nd = 4\n");
        write_file("test.conf.d/10-first.conf", "[test]\nb = 3\nc = 3\nd = 3\n");
        /* Not drop-ins: another suffix, an editor backup, a hidden file. */
        write_file("test.conf.d/30-ignored.txt", "[test]\na = 99\n");
        write_file("test.conf.d/40-backup.conf~", "[test]\na = 99\n");
        write_file("test.conf.d/.hidden.conf", "[test]\na = 99\n");
        g_assert_cmpint(load(&c, &error, "--d=5", "--rate=2M", NULL), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(c.name, ==, "file");
        g_assert_cmpuint(c.a, ==, 2);    /* file only */
        g_assert_cmpuint(c.b, ==, 3);    /* first drop-in over the file */
        g_assert_cmpuint(c.c, ==, 4);    /* second drop-in over the first */
        g_assert_cmpuint(c.d, ==, 5);    /* command line over all */
        g_assert_cmpuint(c.rate, ==, 2 * 1024 * 1024);
        cfg_clear(&c);

        /* --config FILE reads FILE.d too. */
        write_file("other.conf", "[test]\na = 7\n");
        write_file("other.conf.d/x.conf", "[test]\nb = 8\n");
        {
                g_autofree char *other = g_build_filename(tmpdir, "other.conf", NULL);

                g_assert_cmpint(load(&c, &error, "--config", other, NULL), ==, 0);
                g_assert_no_error(error);
                g_assert_cmpuint(c.a, ==, 7);
                g_assert_cmpuint(c.b, ==, 8);
                g_assert_cmpuint(c.c, ==, 1);    /* test.conf.d is not read */
                cfg_clear(&c);
        }
        /* Drop-ins alone, without the main file. */
        g_assert_cmpint(g_unlink(conf_path), ==, 0);
        g_assert_cmpint(load(&c, &error, NULL), ==, 0);
        g_assert_cmpuint(c.a, ==, 1);
        g_assert_cmpuint(c.c, ==, 4);
        cfg_clear(&c);
        teardown();
}

static void test_bad_input(void)
{
        struct cfg c;
        GError *error = NULL;
        g_autofree char *big = NULL;

        setup();
        write_file("test.conf.d/10-bad.conf", "[test]\na = 1000\n");
        g_assert_cmpint(load(&c, &error, NULL), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "10-bad.conf"));
        g_assert_nonnull(strstr(error->message, "from 0 to 100"));
        g_clear_error(&error);

        write_file("test.conf.d/10-bad.conf", "[test]\nnosuch = 1\n");
        g_assert_cmpint(load(&c, &error, NULL), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "unknown option 'nosuch'"));
        g_clear_error(&error);

        write_file("test.conf.d/10-bad.conf", "[other]\na = 1\n");
        g_assert_cmpint(load(&c, &error, NULL), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "unknown section [other]"));
        g_clear_error(&error);

        /* Larger than the limit: refused before parsing. */
        big = g_strnfill(FY_OPTIONS_MAX_FILE + 1, '#');
        write_file("test.conf.d/10-bad.conf", big);
        g_assert_cmpint(load(&c, &error, NULL), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "larger than 1 MiB"));
        g_clear_error(&error);
        teardown();
}

/* Configuration management installs files as symlinks: followed, for the file and drop-ins. */
static void test_symlinks_followed(void)
{
        struct cfg c;
        GError *error = NULL;
        g_autofree char *target = NULL, *dtarget = NULL, *link = NULL;

        setup();
        write_file("real/main.conf", "[test]\na = 7\n");
        write_file("real/dropin.conf", "[test]\nb = 8\n");
        target = g_build_filename(tmpdir, "real/main.conf", NULL);
        dtarget = g_build_filename(tmpdir, "real/dropin.conf", NULL);
        g_assert_cmpint(symlink(target, conf_path), ==, 0);
        write_file("test.conf.d/.keep", "");
        link = g_build_filename(tmpdir, "test.conf.d/10-link.conf", NULL);
        g_assert_cmpint(symlink(dtarget, link), ==, 0);
        g_assert_cmpint(load(&c, &error, NULL), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpuint(c.a, ==, 7);
        g_assert_cmpuint(c.b, ==, 8);
        cfg_clear(&c);
        teardown();
}

static void on_alarm(int sig)
{
        (void) sig;
        g_error("loading a FIFO config blocked");
}

/* A FIFO named *.conf is refused at once (O_NONBLOCK + fstat), not waited on forever. */
static void test_fifo_refused(void)
{
        struct cfg c;
        GError *error = NULL;
        g_autofree char *fifo = NULL;

        setup();
        write_file("test.conf.d/.keep", "");
        fifo = g_build_filename(tmpdir, "test.conf.d/10-fifo.conf", NULL);
        g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
        signal(SIGALRM, on_alarm);
        alarm(10);
        g_assert_cmpint(load(&c, &error, NULL), ==, -EINVAL);
        alarm(0);
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error->message, "10-fifo.conf"));
        g_assert_nonnull(strstr(error->message, "not a regular file"));
        g_clear_error(&error);
        teardown();
}

/* A value GKeyFile cannot return (invalid UTF-8) is an error naming file and key, never "". */
static void test_invalid_utf8_value(void)
{
        struct cfg c;
        GError *error = NULL;

        setup();
        write_file("test.conf", "[test]\nname = ab\xff\xfe\n");
        g_assert_cmpint(load(&c, &error, NULL), ==, -EINVAL);
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error->message, "test.conf: name: "));
        g_clear_error(&error);
        teardown();
}

static void test_reload(void)
{
        struct cfg c;
        GError *error = NULL;
        g_autoptr(GPtrArray) changed = NULL;

        setup();
        write_file("test.conf", "[test]\na = 2\nflag = false\n");
        g_assert_cmpint(load(&c, &error, "--d=5", NULL), ==, 0);
        g_assert_no_error(error);

        /* Nothing changed: nothing applied. */
        g_assert_cmpint(fy_options_reload(&spec, c.sources, &c, &changed, &error), ==, 0);
        g_assert_cmpuint(changed->len, ==, 0);
        g_clear_pointer(&changed, g_ptr_array_unref);

        /* Live options change; the non-live one is reported, not applied; the command line still wins. */
        write_file("test.conf", "[test]\na = 3\nname = renamed\nflag = true\nd = 9\n");
        write_file("test.conf.d/10-rate.conf", "[test]\nrate = 1K\n");
        /* What the daemon's log shows, in table order. */
        g_test_expect_message(NULL, G_LOG_LEVEL_MESSAGE, "reload: name: dflt -> renamed");
        g_test_expect_message(NULL, G_LOG_LEVEL_MESSAGE, "reload: a: 2 -> 3");
        g_test_expect_message(NULL, G_LOG_LEVEL_MESSAGE, "reload: rate: 0 -> 1024");
        g_test_expect_message(NULL, G_LOG_LEVEL_WARNING, "*flag changed (false -> true)*next start*");
        g_assert_cmpint(fy_options_reload(&spec, c.sources, &c, &changed, &error), ==, 0);
        g_test_assert_expected_messages();
        g_assert_no_error(error);
        g_assert_cmpuint(changed->len, ==, 3);
        g_assert_cmpstr(changed->pdata[0], ==, "name");
        g_assert_cmpstr(changed->pdata[1], ==, "a");
        g_assert_cmpstr(changed->pdata[2], ==, "rate");
        g_assert_cmpstr(c.name, ==, "renamed");
        g_assert_cmpuint(c.a, ==, 3);
        g_assert_cmpuint(c.rate, ==, 1024);
        g_assert_false(c.flag);
        g_assert_cmpuint(c.d, ==, 5);
        g_clear_pointer(&changed, g_ptr_array_unref);

        /* A bad drop-in: the reload fails and the running values stay. */
        write_file("test.conf", "[test]\na = 4\n");
        write_file("test.conf.d/20-bad.conf", "[test]\nb = many\n");
        g_assert_cmpint(fy_options_reload(&spec, c.sources, &c, &changed, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "20-bad.conf"));
        g_clear_error(&error);
        g_assert_null(changed);
        g_assert_cmpuint(c.a, ==, 3);
        g_assert_cmpstr(c.name, ==, "renamed");

        /* Options back to their default when removed from the files. */
        g_assert_cmpint(g_unlink(conf_path), ==, 0);
        {
                g_autofree char *bad = g_build_filename(tmpdir, "test.conf.d", "20-bad.conf", NULL);

                g_assert_cmpint(g_unlink(bad), ==, 0);
        }
        g_assert_cmpint(fy_options_reload(&spec, c.sources, &c, &changed, &error), ==, 0);
        g_assert_cmpstr(c.name, ==, "dflt");
        g_assert_cmpuint(c.a, ==, 1);
        g_assert_cmpuint(c.rate, ==, 1024);      /* still in 10-rate.conf */
        cfg_clear(&c);
        teardown();
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/options/defaults-without-file", test_defaults_without_file);
        g_test_add_func("/options/precedence", test_precedence);
        g_test_add_func("/options/bad-input", test_bad_input);
        g_test_add_func("/options/reload", test_reload);
        g_test_add_func("/options/symlinks-followed", test_symlinks_followed);
        g_test_add_func("/options/fifo-refused", test_fifo_refused);
        g_test_add_func("/options/invalid-utf8-value", test_invalid_utf8_value);
        return g_test_run();
}
