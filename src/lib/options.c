/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <fcntl.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "options.h"

static void *field_of(const struct fy_option *o, void *config)
{
        return (char *) config + o->offset;
}

static int option_set(const struct fy_option *o, void *config, const char *value, const char *origin, GError **error)
{
        void *field = field_of(o, config);

        switch (o->type) {
        case FY_OPT_STRING:
                if (strlen(value) > o->max || strlen(value) < o->min) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be %u-%u characters long", origin, o->name, o->min, o->max);
                        return -EINVAL;
                }
                g_free(*(char **) field);
                *(char **) field = g_strdup(value);
                return 0;
        case FY_OPT_UINT: {
                guint64 v;

                if (!g_ascii_string_to_unsigned(value, 10, o->min, o->max, &v, NULL)) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be a whole number from %u to %u, got '%s'",
                                    origin, o->name, o->min, o->max, value);
                        return -EINVAL;
                }
                *(unsigned *) field = (unsigned) v;
                return 0;
        }
        case FY_OPT_SIZE: {
                guint64 v, mult = 1;
                g_autofree char *num = g_strdup(value);
                size_t len = strlen(num);

                if (len > 0 && strchr("KkMmGg", num[len - 1])) {
                        char unit = g_ascii_toupper(num[len - 1]);
                        mult = unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1024 * 1024 * 1024;
                        num[len - 1] = '\0';
                }
                if (!g_ascii_string_to_unsigned(num, 10, 0, G_MAXUINT64 / mult, &v, NULL) ||
                    v * mult > (guint64) o->max * 1024 * 1024) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be a size in bytes (suffix K, M or G allowed) up to %uM, got '%s'",
                                    origin, o->name, o->max, value);
                        return -EINVAL;
                }
                *(guint64 *) field = v * mult;
                return 0;
        }
        case FY_OPT_BOOL:
                if (g_ascii_strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0 ||
                    g_ascii_strcasecmp(value, "yes") == 0)
                        *(bool *) field = true;
                else if (g_ascii_strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0 ||
                         g_ascii_strcasecmp(value, "no") == 0)
                        *(bool *) field = false;
                else {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be true or false, got '%s'", origin, o->name, value);
                        return -EINVAL;
                }
                return 0;
        }
        g_assert_not_reached();
}

static const struct fy_option *option_find(const struct fy_options_spec *spec, const char *name)
{
        for (size_t i = 0; i < spec->n_options; i++)
                if (strcmp(spec->options[i].name, name) == 0)
                        return &spec->options[i];
        return NULL;
}

int fy_options_set(const struct fy_options_spec *spec, void *config, const char *name, const char *value,
                   const char *origin, GError **error)
{
        const struct fy_option *o = option_find(spec, name);

        if (!o) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "%s: unknown option '%s' (see %s --help)", origin, name, spec->program);
                return -EINVAL;
        }
        return option_set(o, config, value, origin, error);
}

/*
 * Config files are the admin's: configuration management often installs them
 * as symlinks, so symlinks are followed (unlike fy_read_small_file_at, which
 * guards daemon-owned state). O_NONBLOCK keeps a FIFO named *.conf from
 * blocking start-up or a SIGHUP reload in open(); fstat then refuses it.
 */
static int read_config_file(const char *path, char **ret_text, size_t *ret_len)
{
        int fd, r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        r = fy_read_small_fd(fd, FY_OPTIONS_MAX_FILE, ret_text, ret_len);
        close(fd);
        return r;
}

/* One INI file: only the spec's section, only known keys. */
static int load_file(const struct fy_options_spec *spec, void *config, const char *path, GError **error)
{
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_auto(GStrv) groups = NULL;
        g_auto(GStrv) keys = NULL;
        g_autoptr(GError) e = NULL;
        g_autofree char *text = NULL;
        size_t len;
        int r;

        r = read_config_file(path, &text, &len);
        if (r < 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "cannot read config file %s: %s", path,
                            r == -EFBIG     ? "larger than 1 MiB"
                            : r == -EBADFD ? "not a regular file"
                            : r == -EISDIR ? "is a directory"
                                           : g_strerror(-r));
                return -EINVAL;
        }
        if (!g_key_file_load_from_data(kf, text, len, G_KEY_FILE_NONE, &e)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "cannot read config file %s: %s", path, e->message);
                return -EINVAL;
        }
        groups = g_key_file_get_groups(kf, NULL);
        for (size_t i = 0; groups[i]; i++)
                if (strcmp(groups[i], spec->section) != 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: unknown section [%s]; %s reads only [%s]", path, groups[i],
                                    spec->program, spec->section);
                        return -EINVAL;
                }
        keys = g_key_file_get_keys(kf, spec->section, NULL, NULL);
        for (size_t i = 0; keys && keys[i]; i++) {
                g_autofree char *value = NULL;
                g_autoptr(GError) ve = NULL;

                /* NULL here is a value GKeyFile cannot return (invalid UTF-8): never "". */
                value = g_key_file_get_string(kf, spec->section, keys[i], &ve);
                if (!value) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "%s: %s: %s", path, keys[i],
                                    ve ? ve->message : "unreadable value");
                        return -EINVAL;
                }
                if (fy_options_set(spec, config, keys[i], value, path, error) < 0)
                        return -EINVAL;
        }
        return 0;
}

static int compare_names(gconstpointer a, gconstpointer b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * The .conf files of FILE.d in byte order, as systemd and sysctl order drop-ins: a
 * missing directory is no error; hidden files and other suffixes (editor
 * backups, .dpkg-old) are skipped.
 */
static int load_dropins(const struct fy_options_spec *spec, void *config, const char *dir, GError **error)
{
        g_autoptr(GDir) d = NULL;
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GError) e = NULL;
        const char *name;

        d = g_dir_open(dir, 0, &e);
        if (!d) {
                if (g_error_matches(e, G_FILE_ERROR, G_FILE_ERROR_NOENT))
                        return 0;
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "cannot read drop-in folder %s: %s", dir, e->message);
                return -EINVAL;
        }
        while ((name = g_dir_read_name(d))) {
                if (name[0] == '.' || !g_str_has_suffix(name, ".conf"))
                        continue;
                if (names->len == FY_OPTIONS_MAX_DROPINS) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: more than %d drop-in files; merge some", dir, FY_OPTIONS_MAX_DROPINS);
                        return -EINVAL;
                }
                g_ptr_array_add(names, g_strdup(name));
        }
        g_ptr_array_sort(names, compare_names);
        for (unsigned i = 0; i < names->len; i++) {
                g_autofree char *path = g_build_filename(dir, names->pdata[i], NULL);

                if (load_file(spec, config, path, error) < 0)
                        return -EINVAL;
        }
        return 0;
}

struct fy_options_sources {
        char *config_file;      /* NULL: none */
        bool required;          /* given with --config: must exist */
        char **values;          /* command line, per option; NULL where not given */
        size_t n_values;
};

void fy_options_sources_free(struct fy_options_sources *src)
{
        if (!src)
                return;
        g_free(src->config_file);
        for (size_t i = 0; i < src->n_values; i++)
                g_free(src->values[i]);
        g_free(src->values);
        g_free(src);
}

/* defaults < file < drop-ins < command line, then the spec's checks. */
static int load_sources(const struct fy_options_spec *spec, const struct fy_options_sources *src, void *config,
                        GError **error)
{
        for (size_t i = 0; i < spec->n_options; i++)
                if (option_set(&spec->options[i], config, spec->options[i].def, "default", error) < 0)
                        g_assert_not_reached();
        if (src->config_file) {
                g_autofree char *dropins = g_strconcat(src->config_file, ".d", NULL);

                if ((src->required || g_file_test(src->config_file, G_FILE_TEST_EXISTS)) &&
                    load_file(spec, config, src->config_file, error) < 0)
                        return -EINVAL;
                if (load_dropins(spec, config, dropins, error) < 0)
                        return -EINVAL;
        }
        for (size_t i = 0; i < spec->n_options; i++)
                if (src->values[i] && option_set(&spec->options[i], config, src->values[i], "command line", error) < 0)
                        return -EINVAL;
        if (spec->validate && spec->validate(config, error) < 0)
                return -EINVAL;
        return 0;
}

static char *option_text(const struct fy_option *o, const void *config)
{
        const void *field = (const char *) config + o->offset;

        switch (o->type) {
        case FY_OPT_STRING:
                return g_strdup(*(char *const *) field);
        case FY_OPT_UINT:
                return g_strdup_printf("%u", *(const unsigned *) field);
        case FY_OPT_BOOL:
                return g_strdup(*(const bool *) field ? "true" : "false");
        case FY_OPT_SIZE:
                return g_strdup_printf("%" G_GUINT64_FORMAT, *(const guint64 *) field);
        }
        g_assert_not_reached();
}

char *fy_options_dump(const struct fy_options_spec *spec, const void *config)
{
        GString *s = g_string_new(NULL);

        g_string_append_printf(s, "[%s]\n", spec->section);
        for (size_t i = 0; i < spec->n_options; i++) {
                g_autofree char *value = option_text(&spec->options[i], config);

                g_string_append_printf(s, "%s = %s\n", spec->options[i].name, value);
        }
        return g_string_free(s, FALSE);
}

void fy_options_clear(const struct fy_options_spec *spec, void *config)
{
        for (size_t i = 0; i < spec->n_options; i++)
                if (spec->options[i].type == FY_OPT_STRING)
                        g_clear_pointer((char **) field_of(&spec->options[i], config), g_free);
}

int fy_options_load(const struct fy_options_spec *spec, void *config, int *argc, char ***argv,
                    struct fy_options_sources **ret_sources, GError **error)
{
        g_autofree char *config_file = NULL;
        gboolean show_config = FALSE, version = FALSE;
        struct fy_options_sources *src = g_new0(struct fy_options_sources, 1);
        g_autofree GOptionEntry *entries = g_new0(GOptionEntry, spec->n_options + 4);
        g_autoptr(GOptionContext) ctx = NULL;
        g_autofree char *section_help = NULL;
        size_t n = 0;
        int r = -EINVAL;

        src->values = g_new0(char *, spec->n_options + 1);
        src->n_values = spec->n_options;
        entries[n++] = (GOptionEntry) { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_file,
                                        "INI file with the options below, read with its drop-ins FILE.d/*.conf "
                                        "(the command line overrides both)", "FILE" };
        entries[n++] = (GOptionEntry) { "show-config", 0, 0, G_OPTION_ARG_NONE, &show_config,
                                        "print the effective configuration and exit", NULL };
        entries[n++] = (GOptionEntry) { "version", 0, 0, G_OPTION_ARG_NONE, &version, "print the version and exit", NULL };
        for (size_t i = 0; i < spec->n_options; i++) {
                const struct fy_option *o = &spec->options[i];
                g_autofree char *dashed = g_strdelimit(g_strdup(o->name), "_", '-');
                g_autofree char *help = g_strdup_printf("%s (default: %s)%s", o->help, *o->def ? o->def : "unset",
                                                        o->live ? "; reloaded on SIGHUP" : "");

                /* GOption keeps pointers to the names: intern them. */
                entries[n++] = (GOptionEntry) {
                        g_intern_string(dashed), 0, 0, G_OPTION_ARG_STRING, &src->values[i], g_intern_string(help),
                        o->type == FY_OPT_BOOL ? "BOOL" : o->type == FY_OPT_STRING ? "VALUE" : "N",
                };
        }

        ctx = g_option_context_new(NULL);
        section_help = g_strdup_printf("%s\nEvery option may also be set as 'name = value' in the [%s] section of "
                                       "the config file (default %s) or of its drop-ins.",
                                       spec->summary, spec->section,
                                       spec->default_config ? spec->default_config : "none");
        g_option_context_set_summary(ctx, section_help);
        g_option_context_add_main_entries(ctx, entries, NULL);
        if (!g_option_context_parse(ctx, argc, argv, error))
                goto out;
        if (version) {
                printf("%s %s\n", spec->program, spec->version);
                r = 1;
                goto out;
        }
        if (*argc > 1) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "unexpected argument '%s' (see --help)", (*argv)[1]);
                goto out;
        }
        src->required = config_file != NULL;
        src->config_file = config_file ? g_steal_pointer(&config_file) : g_strdup(spec->default_config);
        if (load_sources(spec, src, config, error) < 0)
                goto out;
        if (show_config) {
                g_autofree char *dump = fy_options_dump(spec, config);
                fputs(dump, stdout);
                r = 1;
                goto out;
        }
        r = 0;
out:
        if (r != 0)
                fy_options_clear(spec, config);
        if (r == 0 && ret_sources)
                *ret_sources = src;
        else
                fy_options_sources_free(src);
        return r;
}

int fy_options_reload(const struct fy_options_spec *spec, const struct fy_options_sources *src, void *config,
                      GPtrArray **ret_changed, GError **error)
{
        g_autofree void *fresh = g_malloc0(spec->config_size);
        g_autoptr(GPtrArray) changed = g_ptr_array_new();

        if (load_sources(spec, src, fresh, error) < 0) {
                fy_options_clear(spec, fresh);
                return -EINVAL;
        }
        for (size_t i = 0; i < spec->n_options; i++) {
                const struct fy_option *o = &spec->options[i];
                g_autofree char *before = option_text(o, config);
                g_autofree char *after = option_text(o, fresh);

                if (strcmp(before, after) == 0)
                        continue;
                if (!o->live) {
                        g_warning("reload: %s changed (%s -> %s) but takes effect only at the next start",
                                  o->name, before, after);
                        continue;
                }
                g_message("reload: %s: %s -> %s", o->name, before, after);
                if (option_set(o, config, after, "reload", error) < 0)
                        g_assert_not_reached();         /* validated above */
                g_ptr_array_add(changed, (gpointer) o->name);
        }
        fy_options_clear(spec, fresh);
        if (changed->len == 0)
                g_message("reload: no live option changed");
        if (ret_changed)
                *ret_changed = g_steal_pointer(&changed);
        return 0;
}
