/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "error.h"
#include "fileio.h"
#include "uuid.h"

/* volmeta.h's G_DEFINE_AUTOPTR_CLEANUP_FUNC needs this name; C11 allows repeating it. */
#include "volmeta.h"

#define DOM "3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d90"
#define IMG "8f2c1d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
#define VOL "c0ffee00-1234-4abc-8def-0123456789ab"
#define PAR "11111111-2222-4333-8444-555555555555"

static const char valid_text[] =
        "CAP=1073741824\n"
        "CTIME=1700000000\n"
        "DESCRIPTION={\"DiskAlias\":\"disk1\",\"DiskDescription\":\"a=b\"}\n"
        "DISKTYPE=DATA\n"
        "DOMAIN=" DOM "\n"
        "FORMAT=COW\n"
        "GEN=7\n"
        "IMAGE=" IMG "\n"
        "LEGALITY=LEGAL\n"
        "PUUID=" PAR "\n"
        "TYPE=SPARSE\n"
        "VOLTYPE=LEAF\n"
        "EOF\n";

static bool meta_equal(const struct fy_volume_meta *a, const struct fy_volume_meta *b)
{
        return a->capacity == b->capacity &&
                a->ctime == b->ctime &&
                g_strcmp0(a->description, b->description) == 0 &&
                g_strcmp0(a->disktype, b->disktype) == 0 &&
                strcmp(a->domain, b->domain) == 0 &&
                a->format == b->format &&
                a->generation == b->generation &&
                strcmp(a->image, b->image) == 0 &&
                a->legality == b->legality &&
                strcmp(a->parent, b->parent) == 0 &&
                a->type == b->type &&
                a->voltype == b->voltype;
}

static struct fy_volume_meta *sample_meta(void)
{
        struct fy_volume_meta *m = fy_volume_meta_new();

        m->capacity = 10737418240ULL;
        m->ctime = 1700000123;
        g_free(m->description);
        m->description = g_strdup("test volume");
        memcpy(m->domain, DOM, sizeof(m->domain));
        m->format = FY_FORMAT_RAW;
        m->generation = 999;
        memcpy(m->image, IMG, sizeof(m->image));
        m->legality = FY_LEGALITY_ILLEGAL;
        m->type = FY_TYPE_PREALLOCATED;
        m->voltype = FY_VOLTYPE_INTERNAL;
        return m;
}

/* Replaces the whole "KEY=..." line of valid_text; value NULL drops the line. */
static char *text_with(const char *key, const char *value)
{
        g_auto(GStrv) lines = g_strsplit(valid_text, "\n", -1);
        g_autofree char *prefix = g_strconcat(key, "=", NULL);
        GString *s = g_string_new(NULL);
        bool found = false;

        for (char **l = lines; *l; l++) {
                if (**l == '\0' && !l[1])
                        break;
                if (g_str_has_prefix(*l, prefix)) {
                        found = true;
                        if (value)
                                g_string_append_printf(s, "%s%s\n", prefix, value);
                        continue;
                }
                g_string_append_printf(s, "%s\n", *l);
        }
        g_assert_true(found);
        return g_string_free(s, FALSE);
}

static void assert_parse_fails(const char *text, size_t len, int expected_r, const char *fragment)
{
        g_autoptr(fy_volume_meta) m = NULL;
        g_autoptr(GError) error = NULL;
        int r;

        r = fy_volume_meta_parse(text, len, &m, &error);
        if (r >= 0)
                g_error("parse unexpectedly succeeded for:\n%s", text);
        g_assert_cmpint(r, ==, expected_r);
        g_assert_null(m);
        g_assert_error(error, FY_ERROR, FY_ERR_METADATA);
        g_assert_true(g_str_has_prefix(error->message, "volume metadata: "));
        if (!strstr(error->message, fragment))
                g_error("message \"%s\" does not contain \"%s\"", error->message, fragment);
}

static void assert_value_fails(const char *key, const char *value, const char *fragment)
{
        g_autofree char *text = text_with(key, value);

        assert_parse_fails(text, strlen(text), -EINVAL, fragment);
}

static void assert_value_ok(const char *key, const char *value)
{
        g_autofree char *text = text_with(key, value);
        g_autoptr(fy_volume_meta) m = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_cmpint(fy_volume_meta_parse(text, strlen(text), &m, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_nonnull(m);
}

static void test_parse_valid(void)
{
        g_autoptr(fy_volume_meta) m = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_cmpint(fy_volume_meta_parse(valid_text, strlen(valid_text), &m, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpuint(m->capacity, ==, 1073741824ULL);
        g_assert_cmpint(m->ctime, ==, 1700000000);
        g_assert_cmpstr(m->description, ==, "{\"DiskAlias\":\"disk1\",\"DiskDescription\":\"a=b\"}");
        g_assert_cmpstr(m->disktype, ==, "DATA");
        g_assert_cmpstr(m->domain, ==, DOM);
        g_assert_cmpint(m->format, ==, FY_FORMAT_COW);
        g_assert_cmpuint(m->generation, ==, 7);
        g_assert_cmpstr(m->image, ==, IMG);
        g_assert_cmpint(m->legality, ==, FY_LEGALITY_LEGAL);
        g_assert_cmpstr(m->parent, ==, PAR);
        g_assert_cmpint(m->type, ==, FY_TYPE_SPARSE);
        g_assert_cmpint(m->voltype, ==, FY_VOLTYPE_LEAF);

        /* The canonical text of a canonical file is the file itself. */
        g_autofree char *out = fy_volume_meta_format(m);
        g_assert_cmpstr(out, ==, valid_text);
}

static void test_round_trip(void)
{
        g_autoptr(fy_volume_meta) m = sample_meta();
        g_autoptr(fy_volume_meta) back = NULL;
        g_autoptr(fy_volume_meta) copy = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *text = fy_volume_meta_format(m);

        g_assert_cmpint(fy_volume_meta_parse(text, strlen(text), &back, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_true(meta_equal(m, back));

        copy = fy_volume_meta_copy(m);
        g_assert_true(copy->description != m->description);
        g_assert_true(meta_equal(m, copy));
}

static void test_sorted_output(void)
{
        g_autoptr(fy_volume_meta) m = sample_meta();
        g_autofree char *text = fy_volume_meta_format(m);
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        guint n = g_strv_length(lines);

        /* 12 keys, "EOF", and the empty string after the final newline. */
        g_assert_cmpuint(n, ==, 14);
        g_assert_cmpstr(lines[12], ==, "EOF");
        g_assert_cmpstr(lines[13], ==, "");
        for (guint i = 1; i < 12; i++)
                g_assert_cmpint(strcmp(lines[i - 1], lines[i]), <, 0);
        g_assert_true(g_str_has_prefix(lines[0], "CAP="));
        g_assert_true(g_str_has_prefix(lines[11], "VOLTYPE="));
        g_assert_cmpstr(lines[9], ==, "PUUID=" FY_ZERO_UUID);
}

static void test_new_defaults(void)
{
        g_autoptr(fy_volume_meta) m = fy_volume_meta_new();

        g_assert_cmpstr(m->description, ==, "");
        g_assert_cmpstr(m->parent, ==, FY_ZERO_UUID);
        fy_volume_meta_free(NULL);
        g_assert_null(fy_volume_meta_copy(NULL));
}

static void test_values_invalid(void)
{
        g_autofree char *long_desc = g_strnfill(FY_META_DESCRIPTION_MAX + 1, 'x');
        g_autofree char *max_desc = g_strnfill(FY_META_DESCRIPTION_MAX, 'x');

        assert_value_fails("CAP", "0", "CAP=0 must be greater than 0");
        assert_value_fails("CAP", "", "CAP= is not a decimal");
        assert_value_fails("CAP", "-1", "CAP=-1 is not a decimal");
        assert_value_fails("CAP", "+1", "CAP=+1 is not a decimal");
        assert_value_fails("CAP", "01", "CAP=01 is not a decimal");
        assert_value_fails("CAP", "1 ", "is not a decimal");
        assert_value_fails("CAP", "0x10", "is not a decimal");
        assert_value_fails("CAP", "18446744073709551616", "CAP=18446744073709551616 is out of range");
        assert_value_ok("CAP", "18446744073709551615");

        assert_value_fails("CTIME", "-5", "CTIME=-5 is not a non-negative");
        assert_value_fails("CTIME", "abc", "CTIME=abc");
        assert_value_fails("CTIME", "9223372036854775808", "CTIME=9223372036854775808 is out of range");
        assert_value_ok("CTIME", "9223372036854775807");
        assert_value_ok("CTIME", "0");

        assert_value_fails("DESCRIPTION", long_desc, "DESCRIPTION is 211 bytes, longer than the limit of 210");
        assert_value_ok("DESCRIPTION", max_desc);
        assert_value_ok("DESCRIPTION", "");

        assert_value_fails("DISKTYPE", "", "DISKTYPE= is not 1-32 characters");
        assert_value_fails("DISKTYPE", "data", "DISKTYPE=data");
        assert_value_fails("DISKTYPE", "DA-TA", "DISKTYPE=DA-TA");
        assert_value_fails("DISKTYPE", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456", "DISKTYPE=");
        assert_value_ok("DISKTYPE", "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
        assert_value_ok("DISKTYPE", "2");
        assert_value_ok("DISKTYPE", "ISOF");

        assert_value_fails("DOMAIN", "nope", "DOMAIN=nope is not a UUID");
        assert_value_fails("IMAGE", "../../etc/passwd", "IMAGE=../../etc/passwd is not a UUID");
        assert_value_fails("PUUID", "", "PUUID= is not a UUID");
        assert_value_ok("PUUID", FY_ZERO_UUID);

        assert_value_fails("FORMAT", "QCOW2", "FORMAT=QCOW2 is not RAW or COW");
        assert_value_fails("FORMAT", "raw", "FORMAT=raw");

        assert_value_fails("GEN", "1200", "volume metadata: GEN=1200 is out of range 0-999");
        assert_value_fails("GEN", "1000", "GEN=1000 is out of range 0-999");
        assert_value_fails("GEN", "99999999999999999999999", "is out of range 0-999");
        assert_value_fails("GEN", "x", "GEN=x is not a decimal number");
        assert_value_ok("GEN", "0");
        assert_value_ok("GEN", "999");

        assert_value_fails("LEGALITY", "FAKE", "LEGALITY=FAKE marks a VDSM placeholder volume");
        assert_value_fails("LEGALITY", "legal", "LEGALITY=legal is not LEGAL or ILLEGAL");
        assert_value_ok("LEGALITY", "ILLEGAL");

        assert_value_fails("TYPE", "THIN", "TYPE=THIN is not SPARSE or PREALLOCATED");
        assert_value_ok("TYPE", "PREALLOCATED");

        assert_value_fails("VOLTYPE", "ROOT", "VOLTYPE=ROOT is not LEAF, INTERNAL or SHARED");
        assert_value_ok("VOLTYPE", "SHARED");
        assert_value_ok("VOLTYPE", "INTERNAL");
}

static void test_error_message_bounded(void)
{
        g_autofree char *junk = g_strnfill(1000, 'Q');
        g_autofree char *text = text_with("FORMAT", junk);
        g_autoptr(fy_volume_meta) m = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_cmpint(fy_volume_meta_parse(text, strlen(text), &m, &error), ==, -EINVAL);
        g_assert_cmpuint(strlen(error->message), <, 200);
        g_assert_nonnull(strstr(error->message, "..."));

        /* Control characters are escaped, never copied raw into the message. */
        g_clear_error(&error);
        g_free(text);
        text = text_with("TYPE", "\x1b[31mred\r");
        g_assert_cmpint(fy_volume_meta_parse(text, strlen(text), &m, &error), ==, -EINVAL);
        g_assert_null(strchr(error->message, '\x1b'));
        g_assert_null(strchr(error->message, '\r'));
}

static void test_missing_keys(void)
{
        static const char *const keys[] = {
                "CAP", "CTIME", "DESCRIPTION", "DISKTYPE", "DOMAIN", "FORMAT",
                "GEN", "IMAGE", "LEGALITY", "PUUID", "TYPE", "VOLTYPE",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
                g_autofree char *text = text_with(keys[i], NULL);
                g_autofree char *want = g_strdup_printf("required key %s is missing", keys[i]);

                assert_parse_fails(text, strlen(text), -EINVAL, want);
        }
}

static void test_duplicate_key(void)
{
        g_autofree char *text = g_strconcat("GEN=3\n", valid_text, NULL);
        g_autofree char *text2 = g_strconcat("MTIME=1\nMTIME=2\n", valid_text, NULL);

        assert_parse_fails(text, strlen(text), -EINVAL, "GEN appears more than once");
        assert_parse_fails(text2, strlen(text2), -EINVAL, "line 2 repeats an earlier key");
}

static void test_unknown_keys(void)
{
        g_autoptr(fy_volume_meta) m = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *legacy = g_strconcat("MTIME=1700000000\nPOOL_UUID=\nSIZE=2097152\n", valid_text, NULL);
        g_autofree char *out = NULL;

        /* Older VDSM keys are accepted and dropped from the canonical text. */
        g_assert_cmpint(fy_volume_meta_parse(legacy, strlen(legacy), &m, &error), ==, 0);
        g_assert_no_error(error);
        out = fy_volume_meta_format(m);
        g_assert_cmpstr(out, ==, valid_text);

        static const struct {
                const char *prefix;
                const char *fragment;
        } bad[] = {
                { "mtime=1\n", "invalid key \"mtime\"" },
                { "SIZE2=1\n", "invalid key \"SIZE2\"" },
                { "=1\n", "invalid key \"\"" },
                { "A B=1\n", "invalid key" },
                { "ABCDEFGHIJKLMNOPQRSTUVWXYZ_ABCDEF=1\n", "invalid key" },
                { "EOF=1\n", "invalid key \"EOF\"" },
                { "JUSTTEXT\n", "line 1 \"JUSTTEXT\" is not KEY=VALUE" },
                { "\n", "line 1 \"\" is not KEY=VALUE" },
                { "CAP=1\r\n", "CAP=1\\r is not a decimal" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autofree char *text = g_strconcat(bad[i].prefix, valid_text, NULL);

                assert_parse_fails(text, strlen(text), -EINVAL, bad[i].fragment);
        }

        /* 32 characters is the longest unknown key accepted. */
        g_autofree char *ok = g_strconcat("ABCDEFGHIJKLMNOPQRSTUVWXYZ_ABCDE=1\n", valid_text, NULL);
        g_clear_pointer(&m, fy_volume_meta_free);
        g_assert_cmpint(fy_volume_meta_parse(ok, strlen(ok), &m, NULL), ==, 0);
}

static void test_eof_handling(void)
{
        g_autoptr(fy_volume_meta) m = NULL;
        size_t n = strlen(valid_text);
        char padded[512] = {};

        /* Missing EOF line. */
        g_autofree char *no_eof = text_with("VOLTYPE", "LEAF");
        no_eof[strlen(no_eof) - 4] = '\0';
        assert_parse_fails(no_eof, strlen(no_eof), -EINVAL, "the final EOF line is missing");
        assert_parse_fails("", 0, -EINVAL, "the final EOF line is missing");
        assert_parse_fails("EOF\n", 4, -EINVAL, "required key CAP is missing");

        /* "EOF" without a final newline is fine, so is VDSM's NUL padding. */
        g_assert_cmpint(fy_volume_meta_parse(valid_text, n - 1, &m, NULL), ==, 0);
        g_clear_pointer(&m, fy_volume_meta_free);
        memcpy(padded, valid_text, n);
        padded[n + 3] = '\n';
        g_assert_cmpint(fy_volume_meta_parse(padded, sizeof(padded), &m, NULL), ==, 0);
        g_clear_pointer(&m, fy_volume_meta_free);

        /* Anything else after EOF is rejected. */
        g_autofree char *trailing = g_strconcat(valid_text, "GEN=5\n", NULL);
        assert_parse_fails(trailing, strlen(trailing), -EINVAL, "unexpected data after the EOF line");
        g_autofree char *spaces = g_strconcat(valid_text, " \n", NULL);
        assert_parse_fails(spaces, strlen(spaces), -EINVAL, "unexpected data after the EOF line");
        padded[n + 10] = 'x';
        assert_parse_fails(padded, sizeof(padded), -EINVAL, "unexpected data after the EOF line");

        /* "EOF " or "EOFX" is not the EOF line. */
        g_autofree char *eofx = g_strndup(valid_text, n - 1);
        g_autofree char *eofx2 = g_strconcat(eofx, " \n", NULL);
        assert_parse_fails(eofx2, strlen(eofx2), -EINVAL, "is not KEY=VALUE");

        /* A NUL inside the lines is not padding. */
        g_autofree char *nul = g_strdup(valid_text);
        nul[5] = '\0';
        assert_parse_fails(nul, n, -EINVAL, "line 1 contains a NUL byte");
}

static void test_too_large(void)
{
        g_autofree char *big = g_malloc0(FY_META_MAX + 1);
        size_t n = strlen(valid_text);

        /* Exactly the limit (padding included) is fine, one byte more is not. */
        memcpy(big, valid_text, n);
        g_autoptr(fy_volume_meta) m = NULL;
        g_assert_cmpint(fy_volume_meta_parse(big, FY_META_MAX, &m, NULL), ==, 0);
        assert_parse_fails(big, FY_META_MAX + 1, -EFBIG, "4097 bytes is larger than the limit of 4096");
}

static void test_enum_strings(void)
{
        enum fy_vol_format f;
        enum fy_vol_legality l;
        enum fy_vol_type t;
        enum fy_vol_voltype v;

        g_assert_cmpstr(fy_vol_format_to_string(FY_FORMAT_RAW), ==, "RAW");
        g_assert_cmpstr(fy_vol_format_to_string(FY_FORMAT_COW), ==, "COW");
        g_assert_null(fy_vol_format_to_string((enum fy_vol_format) 7));
        g_assert_cmpint(fy_vol_format_from_string("COW", &f), ==, 0);
        g_assert_cmpint(f, ==, FY_FORMAT_COW);
        f = FY_FORMAT_RAW;
        g_assert_cmpint(fy_vol_format_from_string("cow", &f), ==, -EINVAL);
        g_assert_cmpint(f, ==, FY_FORMAT_RAW);
        g_assert_cmpint(fy_vol_format_from_string(NULL, &f), ==, -EINVAL);

        g_assert_cmpstr(fy_vol_legality_to_string(FY_LEGALITY_ILLEGAL), ==, "ILLEGAL");
        g_assert_cmpint(fy_vol_legality_from_string("LEGAL", &l), ==, 0);
        g_assert_cmpint(l, ==, FY_LEGALITY_LEGAL);
        g_assert_cmpint(fy_vol_legality_from_string("FAKE", &l), ==, -EINVAL);

        g_assert_cmpstr(fy_vol_type_to_string(FY_TYPE_PREALLOCATED), ==, "PREALLOCATED");
        g_assert_cmpint(fy_vol_type_from_string("SPARSE", &t), ==, 0);
        g_assert_cmpint(t, ==, FY_TYPE_SPARSE);
        g_assert_cmpint(fy_vol_type_from_string("", &t), ==, -EINVAL);

        g_assert_cmpstr(fy_vol_voltype_to_string(FY_VOLTYPE_SHARED), ==, "SHARED");
        g_assert_cmpint(fy_vol_voltype_from_string("INTERNAL", &v), ==, 0);
        g_assert_cmpint(v, ==, FY_VOLTYPE_INTERNAL);
        g_assert_cmpint(fy_vol_voltype_from_string("LEAF ", &v), ==, -EINVAL);
        g_assert_null(fy_vol_voltype_to_string((enum fy_vol_voltype) -1));
}

static char *make_tmpdir(int *ret_fd)
{
        g_autoptr(GError) error = NULL;
        char *dir = g_dir_make_tmp("test-volmeta-XXXXXX", &error);

        g_assert_no_error(error);
        *ret_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(*ret_fd, >=, 0);
        return dir;
}

static void rm_tmpdir(const char *path, int fd)
{
        g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
        const char *name;

        g_assert_nonnull(dir);
        while ((name = g_dir_read_name(dir))) {
                g_autofree char *p = g_build_filename(path, name, NULL);
                g_assert_cmpint(g_remove(p), ==, 0);
        }
        g_assert_cmpint(g_rmdir(path), ==, 0);
        close(fd);
}

static guint count_entries(const char *path)
{
        g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
        guint n = 0;

        while (g_dir_read_name(dir))
                n++;
        return n;
}

static void test_write_read(void)
{
        g_autoptr(fy_volume_meta) m = sample_meta();
        g_autoptr(fy_volume_meta) back = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *contents = NULL, *path = NULL;
        int dirfd;
        g_autofree char *dir = make_tmpdir(&dirfd);

        path = g_build_filename(dir, VOL ".meta", NULL);
        g_assert_true(g_file_set_contents(path, "old contents", -1, NULL));

        g_assert_cmpint(fy_volume_meta_write_at(dirfd, VOL, m, &error), ==, 0);
        g_assert_no_error(error);

        /* Replaced, with no temp file left behind. */
        g_assert_cmpuint(count_entries(dir), ==, 1);
        g_assert_true(g_file_get_contents(path, &contents, NULL, NULL));
        g_autofree char *want = fy_volume_meta_format(m);
        g_assert_cmpstr(contents, ==, want);

        g_assert_cmpint(fy_volume_meta_read_at(dirfd, VOL, &back, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_true(meta_equal(m, back));

        /* Update in place: GEN wraps, the reader sees the new version. */
        m->generation = 0;
        g_assert_cmpint(fy_volume_meta_write_at(dirfd, VOL, m, &error), ==, 0);
        g_clear_pointer(&back, fy_volume_meta_free);
        g_assert_cmpint(fy_volume_meta_read_at(dirfd, VOL, &back, &error), ==, 0);
        g_assert_cmpuint(back->generation, ==, 0);
        g_assert_cmpuint(count_entries(dir), ==, 1);

        rm_tmpdir(dir, dirfd);
}

static void test_write_read_errors(void)
{
        g_autoptr(fy_volume_meta) m = sample_meta();
        g_autoptr(fy_volume_meta) back = NULL;
        g_autoptr(GError) error = NULL;
        int dirfd;
        g_autofree char *dir = make_tmpdir(&dirfd);
        g_autofree char *path = g_build_filename(dir, VOL ".meta", NULL);

        /* Never builds a path from something that is not a UUID. */
        g_assert_cmpint(fy_volume_meta_write_at(dirfd, "../evil", m, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER);
        g_clear_error(&error);
        g_assert_cmpint(fy_volume_meta_read_at(dirfd, VOL "/x", &back, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER);
        g_clear_error(&error);
        g_assert_cmpint(fy_volume_meta_read_at(dirfd, NULL, &back, &error), ==, -EINVAL);
        g_clear_error(&error);

        /* Missing file. */
        g_assert_cmpint(fy_volume_meta_read_at(dirfd, VOL, &back, &error), ==, -ENOENT);
        g_assert_error(error, FY_ERROR, FY_ERR_METADATA);
        g_assert_nonnull(strstr(error->message, VOL ".meta"));
        g_clear_error(&error);
        g_assert_null(back);

        /* An invalid struct is refused before anything touches the disk. */
        m->generation = 1000;
        g_assert_cmpint(fy_volume_meta_write_at(dirfd, VOL, m, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_METADATA);
        g_assert_cmpstr(error->message, ==, "volume metadata: GEN=1000 is out of range 0-999");
        g_clear_error(&error);
        m->generation = 1;
        g_free(m->description);
        m->description = g_strdup("two\nlines");
        g_assert_cmpint(fy_volume_meta_write_at(dirfd, VOL, m, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "newline"));
        g_clear_error(&error);
        g_free(m->description);
        m->description = g_strdup("");
        m->domain[0] = 'x';
        g_assert_cmpint(fy_volume_meta_write_at(dirfd, VOL, m, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "DOMAIN="));
        g_clear_error(&error);
        memcpy(m->domain, DOM, sizeof(m->domain));
        m->capacity = 0;
        g_assert_cmpint(fy_volume_meta_write_at(dirfd, VOL, m, &error), ==, -EINVAL);
        g_clear_error(&error);
        m->capacity = 1;
        m->voltype = (enum fy_vol_voltype) 9;
        g_assert_cmpint(fy_volume_meta_write_at(dirfd, VOL, m, &error), ==, -EINVAL);
        g_clear_error(&error);
        g_assert_cmpuint(count_entries(dir), ==, 0);

        /* Corrupt file on disk: the message names the file and the problem. */
        g_autofree char *bad = text_with("GEN", "1200");
        g_assert_true(g_file_set_contents(path, bad, -1, NULL));
        g_assert_cmpint(fy_volume_meta_read_at(dirfd, VOL, &back, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_METADATA);
        g_assert_cmpstr(error->message, ==, VOL ".meta: volume metadata: GEN=1200 is out of range 0-999");
        g_clear_error(&error);

        /* Oversized file. */
        g_autofree char *big = g_strnfill(FY_META_MAX + 1, '\n');
        g_assert_true(g_file_set_contents(path, big, -1, NULL));
        g_assert_cmpint(fy_volume_meta_read_at(dirfd, VOL, &back, &error), ==, -EFBIG);
        g_assert_error(error, FY_ERROR, FY_ERR_METADATA);
        g_clear_error(&error);
        g_assert_null(back);

        rm_tmpdir(dir, dirfd);
}

static void test_uuid(void)
{
        static const char *const good[] = {
                FY_ZERO_UUID,
                "3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d90",
                "3B5E4A6C-0F3D-4D2A-9A43-2B1F6A7C8D90",
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
        };
        static const char *const bad[] = {
                "",
                "3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d9",
                "3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d900",
                "3b5e4a6c0f3d-4d2a-9a43-2b1f6a7c8d90-",
                "3b5e4a6c-0f3d-4d2a-9a43_2b1f6a7c8d90",
                "3b5e4a6g-0f3d-4d2a-9a43-2b1f6a7c8d90",
                "{3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d90}",
                " 3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d90",
                "3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d90\n",
                "3b5e4a6c0f3d4d2a9a432b1f6a7c8d90",
                "../../../../../../../../../etc/pass",
                "3b5e4a6c-0f3d-4d2a-9a43-2b1f6a7c8d/0",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
                g_assert_true(fy_uuid_is_valid(good[i]));
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_false(fy_uuid_is_valid(bad[i]));
        g_assert_false(fy_uuid_is_valid(NULL));

        g_autofree char *a = fy_uuid_new();
        g_autofree char *b = fy_uuid_new();
        g_assert_true(fy_uuid_is_valid(a));
        g_assert_true(fy_uuid_is_valid(b));
        g_assert_cmpstr(a, !=, b);
        g_assert_cmpint(a[14], ==, '4');
}

static void test_fileio(void)
{
        g_autofree char *text = NULL;
        char *untouched = (char *) "untouched";
        size_t len = 12345;
        int dirfd;
        g_autofree char *dir = make_tmpdir(&dirfd);
        g_autofree char *sub = g_build_filename(dir, "sub", NULL);
        g_autofree char *link = g_build_filename(dir, "link", NULL);

        g_assert_cmpint(fy_write_file_atomic_at(dirfd, "f", "hello", 5), ==, 0);

        /* Exactly max is fine, the text is NUL-terminated, ret_len is optional. */
        g_assert_cmpint(fy_read_small_file_at(dirfd, "f", 5, &text, &len), ==, 0);
        g_assert_cmpstr(text, ==, "hello");
        g_assert_cmpuint(len, ==, 5);
        g_clear_pointer(&text, g_free);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "f", 100, &text, NULL), ==, 0);
        g_assert_cmpstr(text, ==, "hello");
        g_clear_pointer(&text, g_free);

        /* Failures leave the outputs alone. */
        text = untouched;
        len = 42;
        g_assert_cmpint(fy_read_small_file_at(dirfd, "f", 4, &text, &len), ==, -EFBIG);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "f", 0, &text, &len), ==, -EFBIG);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "missing", 10, &text, &len), ==, -ENOENT);
        g_assert_true(text == untouched);
        g_assert_cmpuint(len, ==, 42);
        text = NULL;

        /* Empty file. */
        g_assert_cmpint(fy_write_file_atomic_at(dirfd, "empty", "", 0), ==, 0);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "empty", 0, &text, &len), ==, 0);
        g_assert_cmpstr(text, ==, "");
        g_assert_cmpuint(len, ==, 0);
        g_clear_pointer(&text, g_free);

        /* Not a regular file, or a symlink: refused. */
        g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "sub", 100, &text, NULL), ==, -EISDIR);
        g_assert_cmpint(symlink("f", link), ==, 0);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "link", 100, &text, NULL), ==, -ELOOP);
        g_assert_null(text);

        /* Binary data with NULs survives; a replaced file has the new contents. */
        g_assert_cmpint(fy_write_file_atomic_at(dirfd, "f", "a\0b", 3), ==, 0);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "f", 3, &text, &len), ==, 0);
        g_assert_cmpuint(len, ==, 3);
        g_assert_cmpmem(text, 3, "a\0b", 3);
        g_clear_pointer(&text, g_free);

        /* A name with a directory part: temp file and fsync in that directory. */
        g_assert_cmpint(fy_write_file_atomic_at(dirfd, "sub/g", "x", 1), ==, 0);
        g_assert_cmpint(fy_read_small_file_at(dirfd, "sub/g", 1, &text, NULL), ==, 0);
        g_assert_cmpstr(text, ==, "x");
        g_clear_pointer(&text, g_free);
        g_assert_cmpuint(count_entries(sub), ==, 1);
        g_assert_cmpint(fy_write_file_atomic_at(dirfd, "nodir/g", "x", 1), ==, -ENOENT);

        /* Renaming over a directory fails, and the temp file is cleaned up. */
        g_assert_cmpint(fy_write_file_atomic_at(dirfd, "sub", "x", 1), <, 0);
        g_assert_cmpuint(count_entries(dir), ==, 4);

        g_assert_cmpint(fy_fsync_dir(dirfd), ==, 0);
        g_assert_cmpint(fy_fsync_dir(AT_FDCWD), ==, 0);
        g_assert_cmpint(fy_fsync_dir(-1), ==, -EBADF);

        g_assert_cmpint(g_remove(link), ==, 0);
        g_autofree char *subg = g_build_filename(sub, "g", NULL);
        g_assert_cmpint(g_remove(subg), ==, 0);
        g_assert_cmpint(g_rmdir(sub), ==, 0);
        rm_tmpdir(dir, dirfd);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/volmeta/parse-valid", test_parse_valid);
        g_test_add_func("/volmeta/round-trip", test_round_trip);
        g_test_add_func("/volmeta/sorted-output", test_sorted_output);
        g_test_add_func("/volmeta/new-defaults", test_new_defaults);
        g_test_add_func("/volmeta/values-invalid", test_values_invalid);
        g_test_add_func("/volmeta/error-message-bounded", test_error_message_bounded);
        g_test_add_func("/volmeta/missing-keys", test_missing_keys);
        g_test_add_func("/volmeta/duplicate-key", test_duplicate_key);
        g_test_add_func("/volmeta/unknown-keys", test_unknown_keys);
        g_test_add_func("/volmeta/eof", test_eof_handling);
        g_test_add_func("/volmeta/too-large", test_too_large);
        g_test_add_func("/volmeta/enum-strings", test_enum_strings);
        g_test_add_func("/volmeta/write-read", test_write_read);
        g_test_add_func("/volmeta/write-read-errors", test_write_read_errors);
        g_test_add_func("/uuid/validate", test_uuid);
        g_test_add_func("/fileio/limits", test_fileio);

        return g_test_run();
}
