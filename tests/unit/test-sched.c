/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The host selection policy (src/engine/hostsched.c): filter and score. */
#include "hostsched.h"

#define H(u, s, n, l, r, c) \
        { .usable = (u), .is_spm = (s), .running = (n), .limit = (l), .rate = (r), .load = (c) }

static GRand *rnd(void)
{
        return g_rand_new_with_seed(42);
}

static void test_filter(void)
{
        g_autoptr(GRand) r = rnd();
        struct engine_sched_host down[] = { H(false, false, 0, 2, 0, 0) };
        struct engine_sched_host full[] = { H(true, false, 2, 2, 0, 0), H(true, false, 3, 2, 0, 0) };
        struct engine_sched_host one[] = { H(false, false, 0, 2, 0, 0), H(true, false, 2, 2, 0, 0),
                                           H(true, false, 1, 2, 0, 0) };

        g_assert_cmpint(engine_sched_pick(NULL, 0, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(down, 1, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(full, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(full, 2, ENGINE_SCHED_RANDOM, r), ==, -1);
        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(engine_sched_pick(one, 3, ENGINE_SCHED_LEAST_LOADED, r), ==, 2);
                g_assert_cmpint(engine_sched_pick(one, 3, ENGINE_SCHED_RANDOM, r), ==, 2);
        }
}

static void test_score_order(void)
{
        g_autoptr(GRand) r = rnd();
        /* Fewest running jobs wins over rate and load. */
        struct engine_sched_host a[] = { H(true, false, 1, 4, 0, 0), H(true, false, 0, 4, 9e9, 9) };
        /* Same jobs: lower copy rate wins over load. */
        struct engine_sched_host b[] = { H(true, false, 1, 4, 100e6, 0), H(true, false, 1, 4, 10e6, 5) };
        /* Same jobs and rate: lower load wins. */
        struct engine_sched_host c[] = { H(true, false, 1, 4, 0, 2.0), H(true, false, 1, 4, 0, 0.5) };

        g_assert_cmpint(engine_sched_pick(a, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
        g_assert_cmpint(engine_sched_pick(b, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
        g_assert_cmpint(engine_sched_pick(c, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
}

static void test_ties_random(void)
{
        g_autoptr(GRand) r = rnd();
        struct engine_sched_host t[] = { H(true, false, 1, 4, 0, 0), H(true, false, 0, 4, 0, 0),
                                         H(true, false, 0, 4, 0, 0), H(true, false, 0, 4, 0, 0) };
        unsigned count[4] = { 0 };

        for (int i = 0; i < 3000; i++)
                count[engine_sched_pick(t, 4, ENGINE_SCHED_LEAST_LOADED, r)]++;
        g_assert_cmpuint(count[0], ==, 0);
        /* Each of the three tied hosts gets about a third. */
        for (int i = 1; i < 4; i++)
                g_assert_cmpuint(count[i], >, 800);
}

static void test_spm_last(void)
{
        g_autoptr(GRand) r = rnd();
        /* The SPM is idle, the other host busy but not full: the other host. */
        struct engine_sched_host a[] = { H(true, true, 0, 4, 0, 0), H(true, false, 3, 4, 0, 0) };
        /* The other host is full: the copy waits rather than loading the SPM. */
        struct engine_sched_host b[] = { H(true, true, 0, 4, 0, 0), H(true, false, 4, 4, 0, 0) };
        /* The other host is down: the SPM is the only host left. */
        struct engine_sched_host d[] = { H(true, true, 0, 4, 0, 0), H(false, false, 0, 4, 0, 0) };
        /* The SPM is full too: nobody. */
        struct engine_sched_host c[] = { H(true, true, 4, 4, 0, 0), H(true, false, 4, 4, 0, 0) };

        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(engine_sched_pick(a, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
                g_assert_cmpint(engine_sched_pick(a, 2, ENGINE_SCHED_RANDOM, r), ==, 1);
        }
        g_assert_cmpint(engine_sched_pick(b, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(d, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 0);
        g_assert_cmpint(engine_sched_pick(c, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
}

static void test_random_uniform(void)
{
        g_autoptr(GRand) r = rnd();
        /* random ignores load: the busy host is as likely as the idle ones. */
        struct engine_sched_host t[] = { H(true, false, 3, 4, 9e9, 9), H(true, false, 0, 4, 0, 0),
                                         H(false, false, 0, 4, 0, 0), H(true, false, 0, 4, 0, 0) };
        unsigned count[4] = { 0 };

        for (int i = 0; i < 3000; i++)
                count[engine_sched_pick(t, 4, ENGINE_SCHED_RANDOM, r)]++;
        g_assert_cmpuint(count[2], ==, 0);
        g_assert_cmpuint(count[0], >, 800);
        g_assert_cmpuint(count[1], >, 800);
        g_assert_cmpuint(count[3], >, 800);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/sched/filter", test_filter);
        g_test_add_func("/sched/score-order", test_score_order);
        g_test_add_func("/sched/ties-random", test_ties_random);
        g_test_add_func("/sched/spm-last", test_spm_last);
        g_test_add_func("/sched/random-uniform", test_random_uniform);
        return g_test_run();
}
