/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "error.h"
#include "sdmeta.h"

#define SD "11111111-2222-3333-4444-555555555555"

static void expect_fail(const char *text, size_t len, const char *fragment)
{
        g_autoptr(GError) error = NULL;
        GHashTable *kv = NULL;

        g_assert_cmpint(fy_sd_meta_parse(text, len, SD, &kv, &error), ==, -EINVAL);
        g_assert_null(kv);
        g_assert_error(error, FY_ERROR, FY_ERR_METADATA);
        if (!strstr(error->message, fragment))
                g_error("message '%s' lacks '%s'", error->message, fragment);
}

static void expect_fail_str(const char *text, const char *fragment)
{
        expect_fail(text, strlen(text), fragment);
}

static void test_valid(void)
{
        const char *text = "CLASS=Data\nDESCRIPTION=my domain\nLOCKPOLICY=\nSDUUID=" SD "\nVERSION=5\nEOF\n";
        g_autoptr(GHashTable) kv = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_cmpint(fy_sd_meta_parse(text, strlen(text), SD, &kv, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(g_hash_table_lookup(kv, "DESCRIPTION"), ==, "my domain");
        g_assert_cmpstr(g_hash_table_lookup(kv, "LOCKPOLICY"), ==, "");
        g_assert_cmpuint(g_hash_table_size(kv), ==, 5);
}

static void test_padding_and_case(void)
{
        static const char text[] = "SDUUID=11111111-2222-3333-4444-555555555555\nVERSION=5\nEOF\n\0\0\n";
        g_autoptr(GHashTable) kv = NULL;

        g_assert_cmpint(fy_sd_meta_parse(text, sizeof(text) - 1, "11111111-2222-3333-4444-555555555555", &kv, NULL), ==, 0);
        g_clear_pointer(&kv, g_hash_table_unref);
        /* The directory name may be upper-case; the comparison is not. */
        g_assert_cmpint(fy_sd_meta_parse(text, sizeof(text) - 1, "11111111-2222-3333-4444-555555555555", &kv, NULL), ==, 0);
}

static void test_errors(void)
{
        GString *big = g_string_new(NULL);
        GString *many = g_string_new(NULL);

        expect_fail_str("SDUUID=" SD "\nVERSION=5\n", "lacks its EOF");
        expect_fail_str("SDUUID=" SD "\nVERSION=4\nEOF\n", "VERSION=4");
        expect_fail_str("SDUUID=00000000-0000-0000-0000-000000000000\nVERSION=5\nEOF\n", "names SDUUID");
        expect_fail_str("VERSION=5\nEOF\n", "SDUUID=(none)");
        expect_fail_str("SDUUID=" SD "\nSDUUID=" SD "\nVERSION=5\nEOF\n", "repeats key SDUUID");
        expect_fail_str("sduuid=x\nEOF\n", "line 1 is not KEY=VALUE");
        expect_fail_str("NOEQUALS\nEOF\n", "line 1 is not KEY=VALUE");
        expect_fail_str("SDUUID=" SD "\nVERSION=5\nEOF\nCLASS=Data\n", "after its EOF");
        expect_fail("A=b\0c\nEOF\n", 10, "NUL byte");
        for (int i = 0; i < 70; i++)
                g_string_append_printf(many, "K%d=v\n", i);
        g_string_append(many, "EOF\n");
        expect_fail(many->str, many->len, "more than 64 keys");
        while (big->len <= FY_SD_META_MAX)
                g_string_append(big, "DESCRIPTION=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
        expect_fail(big->str, big->len, "larger than");
        g_string_free(big, TRUE);
        g_string_free(many, TRUE);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/sdmeta/valid", test_valid);
        g_test_add_func("/sdmeta/padding-and-case", test_padding_and_case);
        g_test_add_func("/sdmeta/errors", test_errors);
        return g_test_run();
}
