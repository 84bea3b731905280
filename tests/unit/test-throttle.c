/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The failed-login throttle (src/engine/throttle.c): delays, attempts in flight, the bounded table. */
#include <errno.h>

#include "throttle.h"

static void fail(struct throttle *t, const char *user, const char *address, gint64 now)
{
        struct throttle_attempt *a;
        unsigned delay;

        g_assert_cmpint(throttle_begin(t, user, address, now, &a, &delay), ==, 0);
        throttle_end(t, a, THROTTLE_FAILURE, now, NULL);
}

static unsigned delay_now(struct throttle *t, const char *user, const char *address, gint64 now)
{
        struct throttle_attempt *a;
        unsigned delay;

        g_assert_cmpint(throttle_begin(t, user, address, now, &a, &delay), ==, 0);
        throttle_end(t, a, THROTTLE_ABORTED, now, NULL);
        return delay;
}

/* Sequential failures: free up to 5, then 1, 2, 4 ... 30 s; success clears; 15 min of quiet forgets. */
static void test_sequential(void)
{
        struct throttle *t = throttle_new(100);

        for (int i = 0; i < 5; i++) {
                g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 100), ==, 0);
                fail(t, "admin", "10.0.0.1", 100);
        }
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 100), ==, 1);
        fail(t, "admin", "10.0.0.1", 100);
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 100), ==, 2);
        for (int i = 0; i < 10; i++)
                fail(t, "admin", "10.0.0.1", 100);
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 100), ==, THROTTLE_DELAY_MAX_S);
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 100 + THROTTLE_FORGET_S + 1), ==, 0);
        throttle_free(t);
}

/* Attempts in flight count as failures: parallel guesses wait, and past the limit are refused. */
static void test_parallel(void)
{
        struct throttle *t = throttle_new(100);
        struct throttle_attempt *a[THROTTLE_INFLIGHT_PAIR], *refused;
        unsigned delay, max_delay = 0;

        for (int i = 0; i < 3; i++)
                fail(t, "admin", "10.0.0.1", 100);
        for (int i = 0; i < THROTTLE_INFLIGHT_PAIR; i++) {
                g_assert_cmpint(throttle_begin(t, "admin", "10.0.0.1", 100, &a[i], &delay), ==, 0);
                max_delay = MAX(max_delay, delay);
        }
        /* 3 failures and 3 more in flight: the 4th in flight waits like the 7th sequential one. */
        g_assert_cmpuint(max_delay, ==, 2);
        g_assert_cmpint(throttle_begin(t, "admin", "10.0.0.1", 100, &refused, &delay), ==, -EBUSY);
        g_assert_cmpuint(delay, >=, 1);
        g_assert_null(refused);
        for (int i = 0; i < THROTTLE_INFLIGHT_PAIR; i++)
                throttle_end(t, a[i], THROTTLE_FAILURE, 100, NULL);
        g_assert_cmpuint(throttle_failures(t, "p:admin\n10.0.0.1", 100), ==, 3 + THROTTLE_INFLIGHT_PAIR);
        throttle_free(t);
}

static void succeed(struct throttle *t, const char *user, const char *address, gint64 now)
{
        struct throttle_attempt *a;
        unsigned delay;

        g_assert_cmpint(throttle_begin(t, user, address, now, &a, &delay), ==, 0);
        throttle_end(t, a, THROTTLE_SUCCESS, now, NULL);
}

/*
 * 5 failures of a user from anywhere slow its next attempts (issue 11), except from a pair that gave
 * the right password lately: others cannot slow the real user from their usual address.
 */
static void test_pair(void)
{
        struct throttle *t = throttle_new(1000);
        succeed(t, "admin", "10.0.0.1", 50);
        for (int i = 0; i < 50; i++)
                fail(t, "admin", "10.6.6.6", 100);
        g_assert_cmpuint(delay_now(t, "admin", "10.6.6.6", 100), ==, THROTTLE_DELAY_MAX_S);
        for (int i = 0; i < 100; i++) {
                g_autofree char *addr = g_strdup_printf("10.7.%d.%d", i / 256, i % 256);

                fail(t, "admin", addr, 100);
        }
        /* The usual address is not held back; a new one is. */
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 100), ==, 0);
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.9", 100), ==, THROTTLE_DELAY_MAX_S);
        /* The trust ends. */
        for (int i = 0; i < THROTTLE_USER_FREE; i++)
                fail(t, "admin", "10.6.6.7", 50 + THROTTLE_TRUST_S);
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 50 + THROTTLE_TRUST_S), >, 0);
        throttle_free(t);

        /* A fresh user: the 6th failure from 6 addresses waits. */
        t = throttle_new(1000);
        for (int i = 0; i < THROTTLE_USER_FREE; i++) {
                g_autofree char *addr = g_strdup_printf("10.8.0.%d", i + 1);

                g_assert_cmpuint(delay_now(t, "bob", addr, 100), ==, 0);
                fail(t, "bob", addr, 100);
        }
        g_assert_cmpuint(delay_now(t, "bob", "10.8.1.1", 100), ==, 1);
        throttle_free(t);
}

/*
 * Guesses held in flight from a few addresses never refuse the user (that would be a lockout anyone
 * could cause): from a new address the real user waits at most THROTTLE_DELAY_MAX_S, from a trusted
 * pair not at all.
 */
static void test_user_never_refused(void)
{
        struct throttle *t = throttle_new(1000);
        struct throttle_attempt *a[2 * THROTTLE_INFLIGHT_PAIR], *b;
        unsigned delay;

        succeed(t, "bob", "10.9.0.1", 100);
        for (int i = 0; i < 20; i++)
                fail(t, "bob", i % 2 ? "10.6.6.6" : "10.6.6.7", 100);
        for (int i = 0; i < 2 * THROTTLE_INFLIGHT_PAIR; i++)
                g_assert_cmpint(throttle_begin(t, "bob", i % 2 ? "10.6.6.6" : "10.6.6.7", 100, &a[i], &delay), ==, 0);
        /* The attackers themselves are capped. */
        g_assert_cmpint(throttle_begin(t, "bob", "10.6.6.6", 100, &b, &delay), ==, -EBUSY);
        /* A new address of the real user waits, never refused. */
        g_assert_cmpint(throttle_begin(t, "bob", "10.8.3.1", 100, &b, &delay), ==, 0);
        g_assert_cmpuint(delay, ==, THROTTLE_DELAY_MAX_S);
        throttle_end(t, b, THROTTLE_SUCCESS, 100 + THROTTLE_DELAY_MAX_S, NULL);
        /* The trusted pair gets in at once. */
        g_assert_cmpint(throttle_begin(t, "bob", "10.9.0.1", 100, &b, &delay), ==, 0);
        g_assert_cmpuint(delay, ==, 0);
        throttle_end(t, b, THROTTLE_SUCCESS, 100, NULL);
        for (int i = 0; i < 2 * THROTTLE_INFLIGHT_PAIR; i++)
                throttle_end(t, a[i], THROTTLE_FAILURE, 100, NULL);
        throttle_free(t);
}

/* A refused attempt adds no key: refusals cannot churn the table. */
static void test_refusal_adds_nothing(void)
{
        struct throttle *t = throttle_new(1000);
        struct throttle_attempt *a[THROTTLE_INFLIGHT_ADDRESS], *b;
        unsigned delay, size;

        for (int i = 0; i < THROTTLE_INFLIGHT_ADDRESS; i++) {
                g_autofree char *user = g_strdup_printf("u%d", i);

                g_assert_cmpint(throttle_begin(t, user, "10.6.6.6", 100, &a[i], &delay), ==, 0);
        }
        size = throttle_size(t);
        for (int i = 0; i < 500; i++) {
                g_autofree char *user = g_strdup_printf("fresh%d", i);

                g_assert_cmpint(throttle_begin(t, user, "10.6.6.6", 100, &b, &delay), ==, -EBUSY);
                g_assert_cmpuint(delay, >=, 1);
        }
        g_assert_cmpuint(throttle_size(t), ==, size);
        for (int i = 0; i < THROTTLE_INFLIGHT_ADDRESS; i++)
                throttle_end(t, a[i], THROTTLE_FAILURE, 100, NULL);
        throttle_free(t);
}

/* Trusted pairs live apart: a flood of failures with fresh names and addresses cannot evict them. */
static void test_trust_not_evicted(void)
{
        struct throttle *t = throttle_new(300);

        succeed(t, "admin", "10.0.0.1", 100);
        for (int i = 0; i < 5000; i++) {
                g_autofree char *user = g_strdup_printf("fresh%d", i);
                g_autofree char *addr = g_strdup_printf("10.9.%d.%d", i / 256, i % 256);

                fail(t, user, addr, 101);
        }
        for (int i = 0; i < 20; i++)
                fail(t, "admin", "10.6.6.6", 101);
        g_assert_cmpuint(throttle_size(t), <=, 300);
        g_assert_cmpuint(throttle_trusted_size(t), ==, 1);
        /* What the engine asks to give trusted pairs their places in the hashing queue. */
        g_assert_true(throttle_trusted(t, "admin", "10.0.0.1", 102));
        g_assert_false(throttle_trusted(t, "admin", "10.6.6.6", 102));
        g_assert_false(throttle_trusted(t, "fresh1", "10.9.0.1", 102));
        g_assert_false(throttle_trusted(t, "admin", "10.0.0.1", 100 + THROTTLE_TRUST_S));
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 102), ==, 0);
        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.2", 102), ==, THROTTLE_DELAY_MAX_S);
        throttle_free(t);
}

/* IPv6 sources count by their /64: another address of the same /64 is the same source. */
static void test_ipv6(void)
{
        struct throttle *t = throttle_new(100);

        for (int i = 0; i < THROTTLE_FREE; i++) {
                g_autofree char *addr = g_strdup_printf("2001:db8:1:2::%x", i + 1);

                fail(t, NULL, addr, 100);
        }
        g_assert_cmpuint(throttle_failures(t, "a:2001:db8:1:2::/64", 100), ==, THROTTLE_FREE);
        g_assert_cmpuint(delay_now(t, NULL, "2001:db8:1:2:ffff:1:2:3", 100), ==, 1);
        g_assert_cmpuint(delay_now(t, NULL, "2001:db8:1:3::1", 100), ==, 0);
        g_assert_cmpuint(delay_now(t, NULL, "10.0.0.1", 100), ==, 0);
        throttle_free(t);
}

/* The table is bounded by evicting the oldest keys, never wiped: a key in use keeps its count. */
static void test_bounded(void)
{
        struct throttle *t = throttle_new(300);

        for (int i = 0; i < 6; i++)
                fail(t, "admin", "10.0.0.1", 100);
        for (int i = 0; i < 10000; i++) {
                g_autofree char *addr = g_strdup_printf("10.9.%d.%d", i / 256, i % 256);

                fail(t, NULL, addr, 101);
                if (i % 50 == 0)
                        g_assert_cmpuint(delay_now(t, "admin", "10.0.0.1", 101), >, 0);
                g_assert_cmpuint(throttle_size(t), <=, 300);
        }
        g_assert_cmpuint(throttle_failures(t, "p:admin\n10.0.0.1", 101), ==, 6);
        throttle_free(t);
}

/* One event per pair per minute, with the count of those not shown. */
static void test_events(void)
{
        struct throttle *t = throttle_new(100);
        struct throttle_outcome out;
        struct throttle_attempt *a;
        unsigned delay, events = 0;

        for (int i = 0; i < 20; i++) {
                g_assert_cmpint(throttle_begin(t, "admin", "10.0.0.1", 100 + i, &a, &delay), ==, 0);
                throttle_end(t, a, THROTTLE_FAILURE, 100 + i, &out);
                events += out.event;
                g_assert_true(out.first_delay == (i == 4));
        }
        g_assert_cmpuint(events, ==, 1);
        g_assert_cmpint(throttle_begin(t, "admin", "10.0.0.1", 200, &a, &delay), ==, 0);
        throttle_end(t, a, THROTTLE_FAILURE, 200, &out);
        g_assert_true(out.event);
        g_assert_cmpuint(out.suppressed, ==, 19);
        throttle_free(t);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/throttle/sequential", test_sequential);
        g_test_add_func("/throttle/parallel", test_parallel);
        g_test_add_func("/throttle/pair", test_pair);
        g_test_add_func("/throttle/user-never-refused", test_user_never_refused);
        g_test_add_func("/throttle/refusal-adds-nothing", test_refusal_adds_nothing);
        g_test_add_func("/throttle/trust-not-evicted", test_trust_not_evicted);
        g_test_add_func("/throttle/ipv6", test_ipv6);
        g_test_add_func("/throttle/bounded", test_bounded);
        g_test_add_func("/throttle/events", test_events);
        return g_test_run();
}
