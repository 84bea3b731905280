/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ETA from progress over the recent window: steady, changing speed, stalls, too little history. */
#include <glib.h>

#include "eta.h"

#define S(x) ((gint64) ((x) * G_USEC_PER_SEC))

static void test_steady(void)
{
        struct engine_eta *t = engine_eta_new();

        /* 2 % per second: at 40 % there are 30 s left. */
        for (int i = 0; i <= 20; i++)
                engine_eta_observe(t, "step:a", S(i), 2.0 * i);
        g_assert_cmpint(engine_eta_seconds(t, "step:a", S(20)), ==, 30);
        /* Time passes without a new sample: the estimate counts down. */
        g_assert_cmpint(engine_eta_seconds(t, "step:a", S(25)), ==, 25);
        g_assert_cmpint(engine_eta_seconds(t, "step:none", S(20)), ==, -1);
        engine_eta_free(t);
}

static void test_recent_window(void)
{
        struct engine_eta *t = engine_eta_new();

        /* Slow for a minute (0.5 %/s), then fast (2 %/s): only the last 30 s count. */
        for (int i = 0; i <= 60; i++)
                engine_eta_observe(t, "k", S(i), 0.5 * i);
        for (int i = 1; i <= 30; i++)
                engine_eta_observe(t, "k", S(60 + i), 30 + 2.0 * i);
        /* At 90 %, 10 % left at 2 %/s. */
        g_assert_cmpint(engine_eta_seconds(t, "k", S(90)), ==, 5);
        engine_eta_free(t);
}

static void test_unknown(void)
{
        struct engine_eta *t = engine_eta_new();

        engine_eta_observe(t, "k", S(0), 10);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(0)), ==, -1);      /* one sample */
        engine_eta_observe(t, "k", S(1), 11);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(1)), ==, -1);      /* span under 2 s */
        engine_eta_observe(t, "k", S(3), 13);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(3)), ==, 87);      /* 87 % left at 1 %/s */
        /* Stalled: no growth over the window → unknown, not a false estimate. */
        for (int i = 4; i <= 40; i++)
                engine_eta_observe(t, "k", S(i), 13);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(40)), ==, -1);
        /* Polls that stop (no samples) leave only stale ones: unknown. */
        engine_eta_observe(t, "j", S(0), 0);
        engine_eta_observe(t, "j", S(10), 50);
        g_assert_cmpint(engine_eta_seconds(t, "j", S(10)), ==, 10);
        g_assert_cmpint(engine_eta_seconds(t, "j", S(100)), ==, -1);
        engine_eta_forget(t, "k");
        g_assert_cmpint(engine_eta_seconds(t, "k", S(40)), ==, -1);
        /* Time going back for a key is ignored. */
        engine_eta_observe(t, "m", S(10), 10);
        engine_eta_observe(t, "m", S(5), 90);
        engine_eta_observe(t, "m", S(14), 30);
        g_assert_cmpint(engine_eta_seconds(t, "m", S(14)), ==, 14);
        engine_eta_free(t);
}

static void test_bounded(void)
{
        struct engine_eta *t = engine_eta_new();

        for (int i = 0; i < ETA_MAX_KEYS + 10; i++) {
                g_autofree char *key = g_strdup_printf("step:%d", i);

                engine_eta_observe(t, key, S(0), 0);
                engine_eta_observe(t, key, S(5), 50);
        }
        /* The newest keys survive the reset. */
        g_assert_cmpint(engine_eta_seconds(t, "step:10009", S(5)), ==, 5);
        /* Many samples of one key stay within the ring. */
        for (int i = 0; i < 1000; i++)
                engine_eta_observe(t, "ring", i * 10000, i / 100.0);
        g_assert_cmpint(engine_eta_seconds(t, "ring", 999 * 10000), >, 0);
        engine_eta_free(t);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/eta/steady", test_steady);
        g_test_add_func("/eta/recent-window", test_recent_window);
        g_test_add_func("/eta/unknown", test_unknown);
        g_test_add_func("/eta/bounded", test_bounded);
        return g_test_run();
}
