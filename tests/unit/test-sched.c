/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The host selection policy (src/engine/hostsched.c): filter and score. */
#include <math.h>

#include "hostsched.h"

#define H(u, s, n, l, r, c) \
        { .usable = (u), .is_spm = (s), .running = (n), .limit = (l), .rate = (r), .load = (c) }
/* A usable non-SPM host with n of l slots taken, bandwidth bw bytes/s, copying at rate r. */
#define B(n, l, bw, r) \
        { .usable = true, .running = (n), .limit = (l), .rate = (r), .bandwidth = (bw) }

#define MB 1e6
#define DRAWS 3000

/* True when count is within 5 standard deviations of DRAWS * p: fails by chance ~1 in 10^6. */
static bool about(unsigned count, double p)
{
        double mean = DRAWS * p, sd = sqrt(DRAWS * p * (1 - p));

        return fabs(count - mean) <= 5 * sd;
}

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

static void test_unusable_ignored(void)
{
        g_autoptr(GRand) r = rnd();
        /* The fastest, idlest host is down or in maintenance: never picked, whatever it offers. */
        struct engine_sched_host t[] = { B(0, 8, 3000 * MB, 0), B(3, 4, 100 * MB, 100 * MB) };

        t[0].usable = false;
        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(engine_sched_pick(t, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
                g_assert_cmpint(engine_sched_pick(t, 2, ENGINE_SCHED_RANDOM, r), ==, 1);
        }
        /* Only unusable hosts, the SPM among them: nobody. */
        t[1].usable = false;
        t[0].is_spm = true;
        g_assert_cmpint(engine_sched_pick(t, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(t, 2, ENGINE_SCHED_RANDOM, r), ==, -1);
}

static void test_full_slots(void)
{
        g_autoptr(GRand) r = rnd();
        /* The fast host would give a new copy the best share, but has no free slot. */
        struct engine_sched_host t[] = { B(4, 4, 3000 * MB, 3000 * MB), B(1, 2, 100 * MB, 100 * MB) };
        /* Everybody full, one beyond its limit (the engine counted copies the host has not reported yet). */
        struct engine_sched_host f[] = { B(4, 4, 3000 * MB, 0), B(5, 2, 100 * MB, 0) };
        /* A limit of 0 (a broken report) takes nothing. */
        struct engine_sched_host z[] = { B(0, 0, 3000 * MB, 0) };

        for (int i = 0; i < 50; i++)
                g_assert_cmpint(engine_sched_pick(t, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
        g_assert_cmpint(engine_sched_pick(f, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(f, 2, ENGINE_SCHED_RANDOM, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(z, 1, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
}

static void test_spm_bandwidth(void)
{
        g_autoptr(GRand) r = rnd();
        /* The SPM is the fastest and idle; the other host slow and busy: still the other host. */
        struct engine_sched_host a[] = { B(0, 8, 3000 * MB, 0), B(1, 2, 100 * MB, 100 * MB) };
        /* The others are full: wait, even though the SPM could give the best share. */
        struct engine_sched_host b[] = { B(0, 8, 3000 * MB, 0), B(2, 2, 100 * MB, 100 * MB),
                                         B(4, 4, 1000 * MB, 1000 * MB) };

        a[0].is_spm = b[0].is_spm = true;
        for (int i = 0; i < 50; i++)
                g_assert_cmpint(engine_sched_pick(a, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
        g_assert_cmpint(engine_sched_pick(b, 3, ENGINE_SCHED_LEAST_LOADED, r), ==, -1);
        g_assert_cmpint(engine_sched_pick(b, 3, ENGINE_SCHED_RANDOM, r), ==, -1);
        /* The others go down: the SPM is the only host left. */
        b[1].usable = b[2].usable = false;
        g_assert_cmpint(engine_sched_pick(b, 3, ENGINE_SCHED_LEAST_LOADED, r), ==, 0);
}

static void test_bandwidth_share(void)
{
        g_autoptr(GRand) r = rnd();
        /* 2.5 GB/s with 3 copies gives a new one 625 MB/s; an idle 100 MB/s host only 100 MB/s. */
        struct engine_sched_host a[] = { B(0, 8, 100 * MB, 0), B(3, 8, 2500 * MB, 2500 * MB) };
        /* 2.5 GB/s with 7 copies gives 312 MB/s; an idle 1 GB/s host, 1 GB/s. */
        struct engine_sched_host b[] = { B(7, 8, 2500 * MB, 2500 * MB), B(0, 4, 1000 * MB, 0) };
        /* Shares 1000 and 995 MB/s are within 1 %: equal, so the lower rate decides. */
        struct engine_sched_host c[] = { B(0, 4, 995 * MB, 0), B(1, 4, 2000 * MB, 2000 * MB) };
        /* Shares 1000 and 980 MB/s are not: the higher share wins despite the rate. */
        struct engine_sched_host d[] = { B(0, 4, 980 * MB, 0), B(1, 4, 2000 * MB, 2000 * MB) };
        /* Equal shares and rates: the lower CPU load. */
        struct engine_sched_host e[] = { B(1, 4, 2000 * MB, 0), B(0, 4, 1000 * MB, 0) };

        e[0].load = 0.1;
        e[1].load = 3.0;
        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(engine_sched_pick(a, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
                g_assert_cmpint(engine_sched_pick(b, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
                g_assert_cmpint(engine_sched_pick(c, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 0);
                g_assert_cmpint(engine_sched_pick(d, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
                g_assert_cmpint(engine_sched_pick(e, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 0);
        }
}

static void test_bandwidth_unknown(void)
{
        g_autoptr(GRand) r = rnd();
        /* One bandwidth unknown (0 = unlimited or not reported): fewest running copies decides. */
        struct engine_sched_host a[] = { B(1, 8, 2500 * MB, 0), B(0, 8, 0, 0) };
        /* Both unknown: the same. */
        struct engine_sched_host b[] = { B(2, 8, 0, 0), B(1, 8, 0, 0) };
        /* Garbage from an agent counts as unknown and never crashes or wins by itself. */
        struct engine_sched_host c[] = { B(1, 8, NAN, 0), B(0, 8, -5 * MB, 0), B(2, 8, INFINITY, 0) };
        /* A negative count is read as 0: no division by zero, no preference for it. */
        struct engine_sched_host d[] = { B(-1, 8, 1000 * MB, 0), B(0, 8, 1000 * MB, 0) };
        unsigned count[2] = { 0 };

        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(engine_sched_pick(a, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
                g_assert_cmpint(engine_sched_pick(b, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
                g_assert_cmpint(engine_sched_pick(c, 3, ENGINE_SCHED_LEAST_LOADED, r), ==, 1);
        }
        for (int i = 0; i < DRAWS; i++)
                count[engine_sched_pick(d, 2, ENGINE_SCHED_LEAST_LOADED, r)]++;
        g_assert_true(about(count[0], 0.5));
        g_assert_true(about(count[1], 0.5));
}

static void test_bandwidth_ties(void)
{
        g_autoptr(GRand) r = rnd();
        /* Three hosts would give a new copy 1 GB/s (one of them within 1 %), the fourth less. */
        struct engine_sched_host t[] = { B(0, 4, 1000 * MB, 0), B(1, 4, 2000 * MB, 0),
                                         B(0, 4, 700 * MB, 0), B(0, 4, 1005 * MB, 0) };
        unsigned count[4] = { 0 };

        for (int i = 0; i < DRAWS; i++)
                count[engine_sched_pick(t, 4, ENGINE_SCHED_LEAST_LOADED, r)]++;
        g_assert_cmpuint(count[2], ==, 0);
        g_assert_true(about(count[0], 1.0 / 3));
        g_assert_true(about(count[1], 1.0 / 3));
        g_assert_true(about(count[3], 1.0 / 3));
}

static void test_random_ignores_bandwidth(void)
{
        g_autoptr(GRand) r = rnd();
        /* random is oVirt's policy: a slow busy host is as likely as a fast idle one; full and down hosts never. */
        struct engine_sched_host t[] = { B(0, 8, 3000 * MB, 0), B(1, 2, 100 * MB, 100 * MB),
                                         B(4, 4, 3000 * MB, 0), B(0, 4, 1000 * MB, 0), B(0, 4, 1000 * MB, 0) };
        unsigned count[5] = { 0 };

        t[4].usable = false;
        for (int i = 0; i < DRAWS; i++)
                count[engine_sched_pick(t, 5, ENGINE_SCHED_RANDOM, r)]++;
        g_assert_cmpuint(count[2], ==, 0);
        g_assert_cmpuint(count[4], ==, 0);
        g_assert_true(about(count[0], 1.0 / 3));
        g_assert_true(about(count[1], 1.0 / 3));
        g_assert_true(about(count[3], 1.0 / 3));
}

/* A host like B() with `pending` bytes still to move by the engine's record. */
static struct engine_sched_host P(long n, long l, double bw, double pending)
{
        return (struct engine_sched_host) { .usable = true, .running = n, .limit = l, .bandwidth = bw,
                                            .rate = n > 0 ? bw : 0, .bytes_pending = pending };
}

#define GB 1e9
#define PICK(t, bytes) engine_sched_pick_copy(t, G_N_ELEMENTS(t), ENGINE_SCHED_LEAST_LOADED, bytes, r)

static void test_copy_cost(void)
{
        g_autoptr(GRand) r = rnd();
        /* Two equal fast hosts: one with 1 copy but 400 GB pending, one with 2 copies and 4 GB pending.
         * A 100 GB copy goes where little is pending; without its size, where fewer run. */
        struct engine_sched_host a[] = { P(1, 8, 2500 * MB, 400 * GB), P(2, 8, 2500 * MB, 4 * GB) };
        /* A 1 GB copy still prefers a fast host with 300 GB pending (its share) to an idle slow one. */
        struct engine_sched_host b[] = { P(0, 2, 100 * MB, 0), P(3, 8, 2500 * MB, 300 * GB) };
        /* A 100 GB copy: a 2.5 GB/s host with 10 GB pending (48 s) beats an idle 1 GB/s one (100 s).
         * A 1 GB copy would end sooner there (0.8 s against 1 s) but delay the copy running there by
         * 0.4 s: the idle host costs less in all. */
        struct engine_sched_host c[] = { P(0, 4, 1000 * MB, 0), P(1, 8, 2500 * MB, 10 * GB) };
        /* Copies running with no record of their bytes: assumed at least as big as the new one. */
        struct engine_sched_host d[] = { P(1, 4, 1000 * MB, 0), P(1, 4, 1000 * MB, 1 * GB) };

        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(PICK(a, 100 * GB), ==, 1);
                g_assert_cmpint(PICK(a, 0), ==, 0);
                g_assert_cmpint(engine_sched_pick(a, 2, ENGINE_SCHED_LEAST_LOADED, r), ==, 0);
                g_assert_cmpint(PICK(b, 1 * GB), ==, 1);
                g_assert_cmpint(PICK(c, 100 * GB), ==, 1);
                g_assert_cmpint(PICK(c, 1 * GB), ==, 0);
                g_assert_cmpint(PICK(d, 100 * GB), ==, 1);
        }
}

static void test_copy_cost_fallbacks(void)
{
        g_autoptr(GRand) r = rnd();
        /* The share key would pick host 0 (one copy), the cost key for a big copy host 1 (little pending). */
        struct engine_sched_host a[] = { P(1, 8, 2500 * MB, 400 * GB), P(2, 8, 2500 * MB, 4 * GB) };
        /* Bandwidth unknown on one host: fewest running, whatever the size. */
        struct engine_sched_host b[] = { P(2, 8, 2500 * MB, 1 * GB), P(1, 8, 0, 900 * GB) };
        /* The SPM stays last with a size too, and is not picked when the others are full. */
        struct engine_sched_host c[] = { P(0, 8, 2500 * MB, 0), P(1, 2, 100 * MB, 50 * GB) };
        struct engine_sched_host d[] = { P(0, 8, 2500 * MB, 0), P(2, 2, 100 * MB, 50 * GB) };
        const double garbage[] = { NAN, -1 * GB, INFINITY, -INFINITY };

        c[0].is_spm = d[0].is_spm = true;
        for (int i = 0; i < 50; i++) {
                /* A size that is not a positive finite number counts as unknown: the share key. */
                for (size_t g = 0; g < G_N_ELEMENTS(garbage); g++)
                        g_assert_cmpint(PICK(a, garbage[g]), ==, 0);
                g_assert_cmpint(PICK(b, 100 * GB), ==, 1);
                g_assert_cmpint(PICK(c, 100 * GB), ==, 1);
                g_assert_cmpint(PICK(d, 100 * GB), ==, -1);
                g_assert_cmpint(engine_sched_pick_copy(d, 2, ENGINE_SCHED_RANDOM, 100 * GB, r), ==, -1);
        }
}

static void test_copy_cost_ties(void)
{
        g_autoptr(GRand) r = rnd();
        /* Idle hosts of equal bandwidth cost the same for any copy: uniformly random among them,
         * never the slower one. */
        struct engine_sched_host t[] = { P(0, 4, 1000 * MB, 0), P(0, 4, 1000 * MB, 0), P(0, 4, 1000 * MB, 0),
                                         P(0, 4, 900 * MB, 0) };
        unsigned count[4] = { 0 };

        for (int i = 0; i < DRAWS; i++)
                count[PICK(t, 10 * GB)]++;
        g_assert_cmpuint(count[3], ==, 0);
        for (int i = 0; i < 3; i++)
                g_assert_true(about(count[i], 1.0 / 3));
}

static void test_best_fit(void)
{
        g_autoptr(GRand) r = rnd();
        /* Host 2 is full with a long drain (so the makespan term does not count). A 10 GB copy costs
         * 8.8 s on the 2.5 GB/s host with 6 GB pending and 10 s on the idle 1 GB/s one: within 15 %,
         * and the hosts are of different classes, so the slower one takes it and the fast one stays
         * free for a big copy. With 2 GB pending there (5.6 s) the fast host is clearly better. */
        struct engine_sched_host a[] = { P(1, 8, 2500 * MB, 6 * GB), P(0, 4, 1000 * MB, 0), P(8, 8, 2500 * MB, 500 * GB) };
        struct engine_sched_host b[] = { P(1, 8, 2500 * MB, 2 * GB), P(0, 4, 1000 * MB, 0), P(8, 8, 2500 * MB, 500 * GB) };
        /* Same class (2 GB/s with 4.5 GB pending, 9.5 s, against 8.8 s): the cheaper host, as before. */
        struct engine_sched_host c[] = { P(1, 8, 2500 * MB, 6 * GB), P(1, 8, 2000 * MB, 4.5 * GB),
                                         P(8, 8, 2500 * MB, 500 * GB) };

        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(PICK(a, 10 * GB), ==, 1);
                g_assert_cmpint(PICK(b, 10 * GB), ==, 0);
                g_assert_cmpint(PICK(c, 10 * GB), ==, 0);
        }
}

static void test_reserve(void)
{
        g_autoptr(GRand) r = rnd();
        /* Five 2.5 GB/s hosts: a fifth of them (host 0, the leanest: 48 GB, 19.2 s of backlog) is kept
         * under half the 40 s backlog of the leanest other one for copies shorter than that backlog.
         * A 5 GB copy would cost least on host 0 (6 s against 18 s) but would take it to 21.2 s: it
         * joins a busy host. A 200 GB copy (80 s alone) takes host 0. */
        struct engine_sched_host a[] = { P(1, 8, 2500 * MB, 48 * GB), P(4, 8, 2500 * MB, 100 * GB),
                                         P(4, 8, 2500 * MB, 100 * GB), P(4, 8, 2500 * MB, 100 * GB),
                                         P(4, 8, 2500 * MB, 100 * GB) };
        /* Host 0 with 10 GB (4 s): the 5 GB copy keeps it under half (6 s), so the reserve copies too. */
        struct engine_sched_host e[] = { P(1, 8, 2500 * MB, 10 * GB), P(4, 8, 2500 * MB, 100 * GB),
                                         P(4, 8, 2500 * MB, 100 * GB), P(4, 8, 2500 * MB, 100 * GB),
                                         P(4, 8, 2500 * MB, 100 * GB) };
        /* The others full: the reserve is not kept from a copy no other host can take. */
        struct engine_sched_host b[] = { P(1, 8, 2500 * MB, 48 * GB), P(8, 8, 2500 * MB, 100 * GB),
                                         P(8, 8, 2500 * MB, 100 * GB), P(8, 8, 2500 * MB, 100 * GB),
                                         P(8, 8, 2500 * MB, 100 * GB) };
        /* Four fast hosts: too few to keep one back. */
        struct engine_sched_host c[] = { P(1, 8, 2500 * MB, 48 * GB), P(4, 8, 2500 * MB, 100 * GB),
                                         P(4, 8, 2500 * MB, 100 * GB), P(4, 8, 2500 * MB, 100 * GB) };
        /* Every host idle: no backlog, nothing kept back. */
        struct engine_sched_host d[] = { P(0, 8, 2500 * MB, 0), P(0, 8, 2500 * MB, 0), P(0, 8, 2500 * MB, 0),
                                         P(0, 8, 2500 * MB, 0), P(0, 8, 2500 * MB, 0) };
        unsigned count[5] = { 0 };

        for (int i = 0; i < 50; i++) {
                int pick = PICK(a, 5 * GB);

                g_assert_cmpint(pick, >=, 1);
                g_assert_cmpint(pick, <=, 4);
                g_assert_cmpint(PICK(a, 200 * GB), ==, 0);
                g_assert_cmpint(PICK(e, 5 * GB), ==, 0);
                g_assert_cmpint(PICK(b, 5 * GB), ==, 0);
                g_assert_cmpint(PICK(c, 5 * GB), ==, 0);
                /* Without a size nothing is kept back: the share key picks host 0. */
                g_assert_cmpint(PICK(a, 0), ==, 0);
        }
        for (int i = 0; i < DRAWS; i++)
                count[PICK(d, 5 * GB)]++;
        for (int i = 0; i < 5; i++)
                g_assert_true(about(count[i], 1.0 / 5));
}

#define PLACE(t, bytes, waited, ahead) \
        engine_sched_place_copy(t, G_N_ELEMENTS(t), ENGINE_SCHED_LEAST_LOADED, \
                                &(struct engine_sched_copy) { (bytes), (waited), (ahead) }, r)

static void test_wait_for_fast_host(void)
{
        g_autoptr(GRand) r = rnd();
        /* A 1 GB/s host, full, 20 GB pending; a free idle 100 MB/s host. A 100 GB copy ends after
         * 120 s if it waits for the fast host, 1000 s on the slow one: it waits. A 1 GB copy
         * (21 s against 10 s) takes the slow host. */
        struct engine_sched_host a[] = { P(1, 1, 1000 * MB, 20 * GB), P(0, 1, 100 * MB, 0) };
        /* The same 100 GB copy, but the fast host holds 400 GB (500 s): not under half of 1000 s. */
        struct engine_sched_host b[] = { P(1, 1, 1000 * MB, 400 * GB), P(0, 1, 100 * MB, 0) };

        for (int i = 0; i < 50; i++) {
                g_assert_cmpint(PLACE(a, 100 * GB, 0, 0), ==, ENGINE_SCHED_WAIT);
                g_assert_cmpint(PLACE(a, 1 * GB, 0, 0), ==, 1);
                g_assert_cmpint(PLACE(b, 100 * GB, 0, 0), ==, 1);
                /* engine_sched_pick_copy never waits: it is the choice among free hosts. */
                g_assert_cmpint(PICK(a, 100 * GB), ==, 1);
        }
}

static void test_wait_queue(void)
{
        g_autoptr(GRand) r = rnd();
        /* Two full fast hosts beat the free slow one for a 100 GB copy: the first two copies in the
         * queue wait for them, the third would get no slot there before the two ahead: it goes now. */
        struct engine_sched_host t[] = { P(1, 1, 1000 * MB, 20 * GB), P(2, 2, 2500 * MB, 50 * GB),
                                         P(0, 2, 100 * MB, 0) };

        g_assert_cmpint(PLACE(t, 100 * GB, 0, 0), ==, ENGINE_SCHED_WAIT);
        g_assert_cmpint(PLACE(t, 100 * GB, 0, 1), ==, ENGINE_SCHED_WAIT);
        g_assert_cmpint(PLACE(t, 100 * GB, 0, 2), ==, 2);
        /* A negative count is read as none ahead. */
        g_assert_cmpint(PLACE(t, 100 * GB, 0, -7), ==, ENGINE_SCHED_WAIT);
}

static void test_wait_starvation_bound(void)
{
        g_autoptr(GRand) r = rnd();
        /* 100 GB: 120 s waiting for the fast host, 1000 s on the slow one. */
        struct engine_sched_host a[] = { P(1, 1, 1000 * MB, 20 * GB), P(0, 1, 100 * MB, 0) };
        /* 50 GB: 70 s waiting, 500 s on the slow one (under ENGINE_SCHED_MAX_WAIT). */
        struct engine_sched_host b[] = { P(1, 1, 1000 * MB, 20 * GB), P(0, 1, 100 * MB, 0) };

        /* Whatever the estimates say, no copy waits by choice ENGINE_SCHED_MAX_WAIT or longer... */
        g_assert_cmpint(PLACE(a, 100 * GB, ENGINE_SCHED_MAX_WAIT - 1, 0), ==, ENGINE_SCHED_WAIT);
        g_assert_cmpint(PLACE(a, 100 * GB, ENGINE_SCHED_MAX_WAIT, 0), ==, 1);
        g_assert_cmpint(PLACE(a, 100 * GB, 1e9, 0), ==, 1);
        /* ...nor longer than it would have taken on the free host: its estimates were wrong. */
        g_assert_cmpint(PLACE(b, 50 * GB, 499, 0), ==, ENGINE_SCHED_WAIT);
        g_assert_cmpint(PLACE(b, 50 * GB, 500, 0), ==, 1);
        /* A waited time that is not a number, or negative (a clock stepped back), is no wait yet. */
        g_assert_cmpint(PLACE(b, 50 * GB, NAN, 0), ==, ENGINE_SCHED_WAIT);
        g_assert_cmpint(PLACE(b, 50 * GB, -100, 0), ==, ENGINE_SCHED_WAIT);
}

static void test_wait_only_when_known(void)
{
        g_autoptr(GRand) r = rnd();
        /* The full fast host's bytes pending are unknown: nothing to base a wait on. */
        struct engine_sched_host a[] = { P(1, 1, 1000 * MB, 0), P(0, 1, 100 * MB, 0) };
        /* The full fast host is the SPM, or down: not waited for. */
        struct engine_sched_host b[] = { P(1, 1, 1000 * MB, 20 * GB), P(0, 1, 100 * MB, 0) };
        /* The free host's bandwidth is unknown: no time to compare with. */
        struct engine_sched_host c[] = { P(1, 1, 1000 * MB, 20 * GB), P(0, 1, 0, 0) };
        /* Nothing free at all: -1, not a choice to wait. */
        struct engine_sched_host d[] = { P(1, 1, 1000 * MB, 20 * GB), P(1, 1, 100 * MB, 1 * GB) };
        const double garbage[] = { 0, NAN, -1 * GB, INFINITY };

        g_assert_cmpint(PLACE(a, 100 * GB, 0, 0), ==, 1);
        b[0].is_spm = true;
        g_assert_cmpint(PLACE(b, 100 * GB, 0, 0), ==, 1);
        b[0].is_spm = false;
        b[0].usable = false;
        g_assert_cmpint(PLACE(b, 100 * GB, 0, 0), ==, 1);
        g_assert_cmpint(PLACE(c, 100 * GB, 0, 0), ==, 1);
        g_assert_cmpint(PLACE(d, 100 * GB, 0, 0), ==, -1);
        /* A size not known: the share key picks, and nothing waits. */
        b[0].usable = true;
        for (size_t g = 0; g < G_N_ELEMENTS(garbage); g++)
                g_assert_cmpint(PLACE(b, garbage[g], 0, 0), ==, 1);
        /* random never waits. */
        g_assert_cmpint(engine_sched_place_copy(b, 2, ENGINE_SCHED_RANDOM,
                                                &(struct engine_sched_copy) { 100 * GB, 0, 0 }, r), ==, 1);
}

static void test_makespan_guard(void)
{
        g_autoptr(GRand) r = rnd();
        /* Two 2.5 GB/s hosts: one runs a copy with 400 GB left (160 s to drain), the other three with
         * 30 GB left (12 s). By completion times alone a 5 GB copy is cheaper on the first (6 s: it delays
         * one copy by 2 s) than on the second (14 s: three copies), but on the first it pushes back
         * the copy that ends last in the cluster: it goes to the second. */
        struct engine_sched_host a[] = { P(1, 8, 2500 * MB, 400 * GB), P(3, 8, 2500 * MB, 30 * GB) };

        for (int i = 0; i < 50; i++)
                g_assert_cmpint(PICK(a, 5 * GB), ==, 1);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/sched/filter", test_filter);
        g_test_add_func("/sched/score-order", test_score_order);
        g_test_add_func("/sched/ties-random", test_ties_random);
        g_test_add_func("/sched/spm-last", test_spm_last);
        g_test_add_func("/sched/random-uniform", test_random_uniform);
        g_test_add_func("/sched/unusable-ignored", test_unusable_ignored);
        g_test_add_func("/sched/full-slots", test_full_slots);
        g_test_add_func("/sched/spm-bandwidth", test_spm_bandwidth);
        g_test_add_func("/sched/bandwidth-share", test_bandwidth_share);
        g_test_add_func("/sched/bandwidth-unknown", test_bandwidth_unknown);
        g_test_add_func("/sched/bandwidth-ties", test_bandwidth_ties);
        g_test_add_func("/sched/random-ignores-bandwidth", test_random_ignores_bandwidth);
        g_test_add_func("/sched/copy-cost", test_copy_cost);
        g_test_add_func("/sched/copy-cost-fallbacks", test_copy_cost_fallbacks);
        g_test_add_func("/sched/copy-cost-ties", test_copy_cost_ties);
        g_test_add_func("/sched/best-fit", test_best_fit);
        g_test_add_func("/sched/reserve", test_reserve);
        g_test_add_func("/sched/wait-for-fast-host", test_wait_for_fast_host);
        g_test_add_func("/sched/wait-queue", test_wait_queue);
        g_test_add_func("/sched/wait-starvation-bound", test_wait_starvation_bound);
        g_test_add_func("/sched/wait-only-when-known", test_wait_only_when_known);
        g_test_add_func("/sched/makespan-guard", test_makespan_guard);
        return g_test_run();
}
