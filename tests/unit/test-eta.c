/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ETA over a smoothed (EWMA) rate: steady, changing speed, a bursty big copy, stalls, too little history. */
#include <math.h>
#include <glib.h>

#include "eta.h"

#define S(x) ((gint64) ((x) * G_USEC_PER_SEC))
#define MiB (1024.0 * 1024.0)

static void test_steady(void)
{
        struct engine_eta *t = engine_eta_new();

        /* 2 % per second: at 40 % there are 30 s left. */
        for (int i = 0; i <= 20; i++)
                engine_eta_observe(t, "step:a", S(i), 2.0 * i, 100);
        g_assert_cmpint(engine_eta_seconds(t, "step:a", S(20)), ==, 30);
        /* Time passes without a new sample: the estimate counts down. */
        g_assert_cmpint(engine_eta_seconds(t, "step:a", S(25)), ==, 25);
        g_assert_cmpint(engine_eta_seconds(t, "step:none", S(20)), ==, -1);
        engine_eta_free(t);
}

static void test_changing_speed(void)
{
        struct engine_eta *t = engine_eta_new();
        double done = 0;

        /* Slow for a minute (0.5/s), then fast (2/s) for a minute: the rate follows within
         * a few time constants (2 - 1.5 e^-3 = 1.93/s), not at once. */
        for (int i = 1; i <= 60; i++)
                engine_eta_observe(t, "k", S(i), done += 0.5, 200);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(60)), ==, 340);    /* 170 left at 0.5/s */
        for (int i = 61; i <= 120; i++)
                engine_eta_observe(t, "k", S(i), done += 2, 200);
        /* 50 left: 25 s at the true rate. */
        g_assert_cmpint(engine_eta_seconds(t, "k", S(120)), >=, 25);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(120)), <=, 27);
        engine_eta_free(t);
}

/*
 * A 2 TiB copy polled every 200 ms, moving 100 MiB/s on average in bursts (a
 * capped copy: 400 ms at 200 MiB/s, 400 ms paused). Fed bytes, the estimate stays
 * within 5 % of the truth and moves by under 2 % from poll to poll; the old
 * window over qemu-img's 1 % steps (one every ~6 min here) had no rate at all.
 */
static void test_big_bursty_copy(void)
{
        struct engine_eta *t = engine_eta_new();
        const double total = 2.0 * 1024 * 1024 * MiB, avg = 100 * MiB;
        double done = 0;
        gint64 prev = -1;

        for (int tick = 1; tick <= 5 * 60 * 10; tick++) {      /* 10 minutes */
                double sec = tick / 5.0;
                gint64 eta;

                if (tick % 4 < 2)
                        done += 2 * avg / 5;
                engine_eta_observe(t, "step:big", S(sec), done, total);
                eta = engine_eta_seconds(t, "step:big", S(sec));
                if (sec < 60)
                        continue;      /* a minute to learn the rate */
                g_assert_cmpfloat(fabs((double) eta - (total - done) / avg), <=, 0.05 * (total - done) / avg);
                if (prev >= 0)
                        g_assert_cmpint(ABS(eta - prev), <=, 0.02 * prev);     /* no jumps */
                prev = eta;
        }
        engine_eta_free(t);
}

static void test_unknown(void)
{
        struct engine_eta *t = engine_eta_new();

        engine_eta_observe(t, "k", S(0), 10, 100);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(0)), ==, -1);      /* one sample */
        engine_eta_observe(t, "k", S(1), 11, 100);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(1)), ==, -1);      /* span under 2 s */
        engine_eta_observe(t, "k", S(3), 13, 100);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(3)), ==, 87);      /* 87 left at 1/s */
        /* Stalled: no growth for the window → unknown, not a false estimate. */
        for (int i = 4; i <= 40; i++)
                engine_eta_observe(t, "k", S(i), 13, 100);
        g_assert_cmpint(engine_eta_seconds(t, "k", S(40)), ==, -1);
        /* Polls that stop (no samples) leave only stale ones: unknown. */
        engine_eta_observe(t, "j", S(0), 0, 100);
        engine_eta_observe(t, "j", S(10), 50, 100);
        g_assert_cmpint(engine_eta_seconds(t, "j", S(10)), ==, 10);
        g_assert_cmpint(engine_eta_seconds(t, "j", S(100)), ==, -1);
        engine_eta_forget(t, "k");
        g_assert_cmpint(engine_eta_seconds(t, "k", S(40)), ==, -1);
        /* Time going back for a key is ignored. */
        engine_eta_observe(t, "m", S(10), 10, 100);
        engine_eta_observe(t, "m", S(5), 90, 100);
        engine_eta_observe(t, "m", S(14), 30, 100);
        g_assert_cmpint(engine_eta_seconds(t, "m", S(14)), ==, 14);
        /* No total: no estimate, whatever the rate. */
        engine_eta_observe(t, "n", S(0), 0, -1);
        engine_eta_observe(t, "n", S(5), 5 * MiB, -1);
        g_assert_cmpint(engine_eta_seconds(t, "n", S(5)), ==, -1);
        engine_eta_free(t);
}

/* Review 13b: a step retried as a new host job (sent again from 0) gets a fresh series. */
static void test_retry(void)
{
        struct engine_eta *t = engine_eta_new();

        engine_eta_observe(t, "step:x", S(0), 0, 100);         /* first send: percent */
        for (int i = 1; i <= 60; i++)                           /* 10 MiB/s, 60 % */
                engine_eta_observe(t, "step:x", S(i), i * 10 * MiB, 1000 * MiB);
        g_assert_cmpint(engine_eta_seconds(t, "step:x", S(60)), ==, 40);
        engine_eta_forget(t, "step:x");                        /* retry: sent again (engine_step_update at 0) */
        engine_eta_observe(t, "step:x", S(61), 0, 100);
        g_assert_cmpint(engine_eta_seconds(t, "step:x", S(61)), ==, -1);     /* not 0 */
        for (int i = 1; i <= 40; i++)                           /* the new job, 10 MiB/s from 0 */
                engine_eta_observe(t, "step:x", S(61 + i), i * 10 * MiB, 1000 * MiB);
        g_assert_cmpint(engine_eta_seconds(t, "step:x", S(81)), ==, 80);
        g_assert_cmpint(engine_eta_seconds(t, "step:x", S(101)), ==, 60);
        engine_eta_free(t);
}

/*
 * Issue 16 review: a copy whose host died at 60 % is sent again to another
 * host, which prepares, verifies the kept prefix by checksum (20 s without
 * copy progress) and copies on from 600 MiB at 10 MiB/s. The series starts
 * at the resumed job's first copying report: a 0 at the send (or the dead
 * host's 60 %) made the jump to the prefix read as a burst of 20+ MiB/s.
 */
static void test_resumed_copy(void)
{
        struct engine_eta *t = engine_eta_new();

        engine_eta_step_sent(t, "step:r");
        for (int i = 0; i <= 60; i++)                           /* the first try: 10 MiB/s of 1000 MiB */
                engine_eta_step_job(t, "step:r", S(i), "copying", i, (gint64) (i * 10 * MiB));
        g_assert_cmpint(engine_eta_seconds(t, "step:r", S(60)), ==, 40);
        /* Its host dies; the step is sent again at 100 s. */
        engine_eta_step_sent(t, "step:r");
        g_assert_cmpint(engine_eta_seconds(t, "step:r", S(100)), ==, -1);
        engine_eta_step_job(t, "step:r", S(100), "preparing", 0, 0);
        for (int i = 101; i <= 120; i++)
                engine_eta_step_job(t, "step:r", S(i), "verifying_prefix", 0, 0);
        g_assert_cmpint(engine_eta_seconds(t, "step:r", S(120)), ==, -1);    /* no rate yet, not a guess */
        for (int i = 0; i <= 10; i++)                           /* resumed at 600 MiB, 10 MiB/s */
                engine_eta_step_job(t, "step:r", S(121 + i), "copying", 60 + i, (gint64) ((600 + 10 * i) * MiB));
        g_assert_cmpint(engine_eta_seconds(t, "step:r", S(131)), ==, 30);   /* 300 MiB left at 10 MiB/s */
        /* Sent once more; this time the prefix does not verify and it copies from 0: a series of its own. */
        engine_eta_step_sent(t, "step:r");
        for (int i = 0; i <= 10; i++)
                engine_eta_step_job(t, "step:r", S(200 + i), "copying", i, (gint64) (i * 10 * MiB));
        g_assert_cmpint(engine_eta_seconds(t, "step:r", S(210)), ==, 90);
        /* An agent without bytes_done or phase: percent, from its first report. */
        engine_eta_step_sent(t, "step:p");
        for (int i = 0; i <= 10; i++)
                engine_eta_step_job(t, "step:p", S(i), NULL, 50 + i, -1);
        g_assert_cmpint(engine_eta_seconds(t, "step:p", S(10)), ==, 40);
        engine_eta_free(t);
}

/*
 * The job's series of a one-volume move whose copy resumes (issue 16 review):
 * its weighted percent jumps from the dead try's last report to the resume
 * point like the step's, so the caller (flows/job.c) starts it again at the
 * report engine_eta_step_job says started the step's series, and only there.
 */
static void test_resumed_copy_job(void)
{
        struct engine_eta *t = engine_eta_new();

        engine_eta_step_sent(t, "step:s");
        for (int i = 0; i <= 40; i++) {                         /* 10 MiB/s of 1000 MiB, then its host dies */
                bool first = engine_eta_step_job(t, "step:s", S(i), "copying", i, (gint64) (i * 10 * MiB));

                g_assert_true(first == (i == 0));
                if (first)
                        engine_eta_forget(t, "job:j");
                engine_eta_observe(t, "job:j", S(i), i, 100);
        }
        engine_eta_step_sent(t, "step:s");                     /* sent again at 100 s; it verifies until 120 s */
        g_assert_false(engine_eta_step_job(t, "step:s", S(100), "preparing", 0, 0));
        for (int i = 101; i <= 120; i++) {
                g_assert_false(engine_eta_step_job(t, "step:s", S(i), "verifying_prefix", 0, 0));
                engine_eta_observe(t, "job:j", S(i), 0, 100); /* the step at 0: older than the job knew, ignored */
        }
        for (int i = 0; i <= 10; i++) {                         /* resumed at 60 %, 10 MiB/s */
                bool first = engine_eta_step_job(t, "step:s", S(121 + i), "copying", 60 + i, (gint64) ((600 + 10 * i) * MiB));

                g_assert_true(first == (i == 0));
                if (first)
                        engine_eta_forget(t, "job:j");
                engine_eta_observe(t, "job:j", S(121 + i), 60 + i, 100);
        }
        /* 30 % left at 1 % a second. Without the restart the job's series read 55 s here: its rate still
         * held the 81 s from the dead try's 40 % to the resume's 60 %, verification and the wait included. */
        g_assert_cmpint(engine_eta_seconds(t, "job:j", S(131)), ==, 30);
        g_assert_cmpint(engine_eta_seconds(t, "step:s", S(131)), ==, 30);
        engine_eta_free(t);
}

/* A stale sample (a poll reply crossing a newer event about the same job) changes nothing. */
static void test_stale_sample_ignored(void)
{
        struct engine_eta *t = engine_eta_new();

        for (int i = 0; i <= 10; i++) {
                engine_eta_observe(t, "step:y", S(i), i * 10 * MiB, 1000 * MiB);
                engine_eta_observe(t, "step:y", S(i), 0, 1000 * MiB);           /* stale */
        }
        g_assert_cmpint(engine_eta_seconds(t, "step:y", S(10)), ==, 90);
        engine_eta_free(t);
}

/* A running sparse copy whose percent (allocated data only) says 100: unknown, never 0. */
static void test_nothing_left_of_a_running_job(void)
{
        struct engine_eta *t = engine_eta_new();

        for (int i = 0; i <= 10; i++)
                engine_eta_observe(t, "step:s", S(i), MIN(i, 4) * 4 * MiB, MIN(i, 4) * 4 * MiB);
        g_assert_cmpint(engine_eta_seconds(t, "step:s", S(10)), ==, -1);
        for (int i = 11; i <= 20; i++)
                engine_eta_observe(t, "step:s", S(i), 16 * MiB, 16 * MiB);
        g_assert_cmpint(engine_eta_seconds(t, "step:s", S(20)), ==, -1);
        engine_eta_free(t);
}

static void test_bounded(void)
{
        struct engine_eta *t = engine_eta_new();

        for (int i = 0; i < ETA_MAX_KEYS + 10; i++) {
                g_autofree char *key = g_strdup_printf("step:%d", i);

                engine_eta_observe(t, key, S(0), 0, 100);
                engine_eta_observe(t, key, S(5), 50, 100);
        }
        /* The newest keys survive the reset. */
        g_assert_cmpint(engine_eta_seconds(t, "step:10009", S(5)), ==, 5);
        /* Samples closer than the minimum gap add up in the next rate. */
        for (int i = 0; i < 1000; i++)
                engine_eta_observe(t, "close", i * 10000, i / 100.0, 100);
        g_assert_cmpint(engine_eta_seconds(t, "close", 999 * 10000), >, 0);
        engine_eta_free(t);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/eta/steady", test_steady);
        g_test_add_func("/eta/changing-speed", test_changing_speed);
        g_test_add_func("/eta/big-bursty-copy", test_big_bursty_copy);
        g_test_add_func("/eta/unknown", test_unknown);
        g_test_add_func("/eta/bounded", test_bounded);
        g_test_add_func("/eta/retry", test_retry);
        g_test_add_func("/eta/resumed-copy", test_resumed_copy);
        g_test_add_func("/eta/resumed-copy-job", test_resumed_copy_job);
        g_test_add_func("/eta/stale-sample-ignored", test_stale_sample_ignored);
        g_test_add_func("/eta/nothing-left-of-a-running-job", test_nothing_left_of_a_running_job);
        return g_test_run();
}
