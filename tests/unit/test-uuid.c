/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The uuids Ferry makes: v4 format, and not from GLib's predictable generator. */
#include <string.h>

#include <glib.h>

#include "uuid.h"

static void assert_v4(const char *s)
{
        g_assert_true(fy_uuid_is_valid(s));
        g_assert_cmpint(s[14], ==, '4');
        g_assert_nonnull(strchr("89ab", s[19]));
        for (const char *p = s; *p; p++)
                g_assert_false(g_ascii_isupper(*p));
}

static void test_format(void)
{
        guint8 ones[16], zeros[16] = { 0 };
        g_autofree char *a = NULL;
        g_autofree char *b = NULL;

        memset(ones, 0xff, sizeof(ones));
        a = fy_uuid_format_v4(ones);
        b = fy_uuid_format_v4(zeros);
        g_assert_cmpstr(a, ==, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        g_assert_cmpstr(b, ==, "00000000-0000-4000-8000-000000000000");
        assert_v4(a);
        assert_v4(b);
}

static void test_new(void)
{
        g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

        for (int i = 0; i < 1000; i++) {
                char *id = i % 2 ? fy_uuid_new() : fy_uuid_new_secret();

                assert_v4(id);
                g_assert_true(g_hash_table_add(seen, id));
        }
}

/* GLib's global generator reseeded the same way must not give the same ids (it did: g_uuid_string_random). */
static void test_not_grand(void)
{
        g_autofree char *a = NULL;
        g_autofree char *b = NULL;
        g_autofree char *c = NULL;
        g_autofree char *d = NULL;

        g_random_set_seed(42);
        a = fy_uuid_new();
        c = fy_uuid_new_secret();
        g_random_set_seed(42);
        b = fy_uuid_new();
        d = fy_uuid_new_secret();
        g_assert_cmpstr(a, !=, b);
        g_assert_cmpstr(c, !=, d);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/uuid/format", test_format);
        g_test_add_func("/uuid/new", test_new);
        g_test_add_func("/uuid/not-grand", test_not_grand);
        return g_test_run();
}
