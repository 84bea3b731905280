/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Log records: escaping (a forged newline never starts a record), the
 * key=value context on stderr, per-thread context, correlation id checks.
 */
#include <stdlib.h>
#include <glib.h>

#include "log.h"

static char *escaped(const char *s, gssize len)
{
        GString *out = g_string_new(NULL);

        fy_log_escape(out, s, len);
        return g_string_free(out, FALSE);
}

static void test_escape(void)
{
        static const struct {
                const char *in;
                gssize len;
                const char *out;
        } cases[] = {
                { "plain text é", -1, "plain text é" },
                { "a\nb", -1, "a\\nb" },
                { "a\r\nb\tc", -1, "a\\r\\nb\\tc" },
                { "back\\slash", -1, "back\\\\slash" },
                { "bell\a esc\x1b del\x7f", -1, "bell\\x07 esc\\x1b del\\x7f" },
                { "nul\0x", 5, "nul\\x00x" },
                { "bad \xff\xfe utf8", -1, "bad \\xff\\xfe utf8" },
                { "cut \xc3", -1, "cut \\xc3" },
                { "nel \xc2\x85 ls \xe2\x80\xa8 ps \xe2\x80\xa9", -1, "nel \\u0085 ls \\u2028 ps \\u2029" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *out = escaped(cases[i].in, cases[i].len);

                g_assert_cmpstr(out, ==, cases[i].out);
        }
}

/* A whole record through GLib's logging, as the daemons write it. */
static void test_record(void)
{
        if (g_test_subprocess()) {
                g_unsetenv("JOURNAL_STREAM");
                fy_log_setup("info", "ferry-test", "host1");
                fy_log_context_set("0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f1", "move-42", NULL);
                g_message("volume name 'x\n2026-01-01 00:00:00.000 INFO [ferry-agent] forged'");
                return;
        }
        g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("* INFO [ferry-test] volume name 'x\\n2026-01-01 00:00:00.000 INFO [ferry-agent] forged'"
                                  " job_id=0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f1 flow_id=move-42\n");
        g_test_trap_assert_stderr_unmatched("*\n*\n*");       /* one line only */
}

/* A $JOURNAL_STREAM that is not stderr's (inherited by a child of a unit) must not divert the log. */
static void test_foreign_journal_stream(void)
{
        if (g_test_subprocess()) {
                g_setenv("JOURNAL_STREAM", "1:1", TRUE);
                fy_log_setup("info", "ferry-test", NULL);
                g_message("to stderr");
                return;
        }
        g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("* INFO [ferry-test] to stderr\n");
}

static gpointer thread_context(gpointer data)
{
        /* A new thread starts without the creator's context. */
        g_assert_null(fy_log_correlation_id());
        fy_log_context_set(NULL, "other", NULL);
        return NULL;
}

static void test_context(void)
{
        struct fy_log_context saved;
        GThread *t;

        fy_log_context_set(NULL, "outer", NULL);
        fy_log_context_set("job", "inner", &saved);
        g_assert_cmpstr(fy_log_correlation_id(), ==, "inner");
        t = g_thread_new("ctx", thread_context, NULL);
        g_thread_join(t);
        g_assert_cmpstr(fy_log_correlation_id(), ==, "inner");
        fy_log_context_restore(&saved);
        g_assert_cmpstr(fy_log_correlation_id(), ==, "outer");
        fy_log_context_set(NULL, "", NULL);
        g_assert_null(fy_log_correlation_id());
}

static void test_correlation_id_valid(void)
{
        g_autofree char *longest = g_strnfill(FY_LOG_CORRELATION_ID_MAX, 'a');
        g_autofree char *too_long = g_strnfill(FY_LOG_CORRELATION_ID_MAX + 1, 'a');

        g_assert_true(fy_log_correlation_id_valid("3f2a-move.1:b_c"));
        g_assert_true(fy_log_correlation_id_valid(longest));
        g_assert_false(fy_log_correlation_id_valid(too_long));
        g_assert_false(fy_log_correlation_id_valid(""));
        g_assert_false(fy_log_correlation_id_valid("a b"));
        g_assert_false(fy_log_correlation_id_valid("a\nb"));
        g_assert_false(fy_log_correlation_id_valid("a=b"));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/log/escape", test_escape);
        g_test_add_func("/log/record", test_record);
        g_test_add_func("/log/foreign-journal-stream", test_foreign_journal_stream);
        g_test_add_func("/log/context", test_context);
        g_test_add_func("/log/correlation-id-valid", test_correlation_id_valid);
        return g_test_run();
}
