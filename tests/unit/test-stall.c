/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Stall judgement (stall.c): bytes decide, not qemu-img's 1 % steps; phases; the flag while aborting. */
#include <glib.h>

#include "clock.h"
#include "stall.h"

#define TIMEOUT 3

/* A capped copy: bytes grow every second, progress stays at 0 % for a minute: never stalled. */
static void test_bytes_decide(void)
{
        struct engine_stall s = { 0 };

        for (gint64 t = 100; t <= 160; t++)
                g_assert_cmpint(engine_stall_feed(&s, "copying", (t - 100) * 1024 * 1024, 0.0, t, TIMEOUT, NULL),
                                ==, ENGINE_STALL_MOVING);
        g_assert_false(s.stalled);
}

/* Nothing moves (SIGSTOPped qemu-img): flagged once at the timeout, then stays flagged until it moves. */
static void test_still_then_moves(void)
{
        struct engine_stall s = { 0 };
        gint64 still = -1;

        g_assert_cmpint(engine_stall_feed(&s, "copying", 5000, 12, 10, TIMEOUT, &still), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 5000, 12, 12, TIMEOUT, &still), ==, ENGINE_STALL_STILL);
        g_assert_cmpint(still, ==, 2);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 5000, 12, 13, TIMEOUT, &still), ==, ENGINE_STALL_NEW);
        g_assert_cmpint(still, ==, 3);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 5000, 12, 20, TIMEOUT, NULL), ==, ENGINE_STALL_STALLED);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 5001, 12, 21, TIMEOUT, NULL), ==, ENGINE_STALL_MOVES_AGAIN);
        g_assert_false(s.stalled);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 5001, 12, 22, TIMEOUT, NULL), ==, ENGINE_STALL_STILL);
        /* Progress alone (an agent without bytes_done, or the copy loop over holes) is movement too. */
        g_assert_cmpint(engine_stall_feed(&s, NULL, 0, 13, 30, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
}

/* Phases that move no bytes are not judged, and their time does not count once copying starts. */
static void test_phases(void)
{
        struct engine_stall s = { 0 };

        g_assert_false(engine_stall_phase_judged("verifying_prefix"));
        g_assert_false(engine_stall_phase_judged("preallocating"));
        g_assert_true(engine_stall_phase_judged("copying"));
        g_assert_true(engine_stall_phase_judged(NULL));
        for (gint64 t = 0; t <= 60; t++)
                g_assert_cmpint(engine_stall_feed(&s, "verifying_prefix", 0, 0, t, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        /* Entering copying is a move: the clock starts there. */
        g_assert_cmpint(engine_stall_feed(&s, "copying", 0, 0, 62, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 0, 0, 64, TIMEOUT, NULL), ==, ENGINE_STALL_STILL);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 0, 0, 65, TIMEOUT, NULL), ==, ENGINE_STALL_NEW);
        for (gint64 t = 66; t <= 200; t++)
                g_assert_cmpint(engine_stall_feed(&s, "preallocating", 1000, 100, t, TIMEOUT, NULL), !=, ENGINE_STALL_NEW);
        g_assert_false(s.stalled);
}

/*
 * Preparing moves no bytes but is judged: a source open or a lease
 * acquisition that hangs is flagged at the timeout. Leaving it is a move, so
 * a copy that prepared for almost the timeout gets the whole timeout to copy.
 */
static void test_preparing(void)
{
        struct engine_stall s = { 0 };
        json_t *j;
        gint64 still = -1;

        g_assert_true(engine_stall_phase_judged("preparing"));
        g_assert_false(engine_stall_phase_judged("rate_wait"));
        g_assert_false(engine_stall_phase_judged("waiting_lock"));
        g_assert_false(engine_stall_phase_judged("some_future_phase"));
        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 10, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 12, TIMEOUT, NULL), ==, ENGINE_STALL_STILL);
        /* Into copying one second before the timeout: the clock restarts. */
        g_assert_cmpint(engine_stall_feed(&s, "copying", 0, 0, 12, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 0, 0, 14, TIMEOUT, NULL), ==, ENGINE_STALL_STILL);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 0, 0, 15, TIMEOUT, &still), ==, ENGINE_STALL_NEW);
        g_assert_cmpint(still, ==, 3);

        /* A preparing phase that never ends (the agent reports it, 0 bytes, every poll). */
        s = (struct engine_stall) { 0 };
        for (gint64 t = 100; t < 100 + TIMEOUT; t++)
                g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, t, TIMEOUT, NULL), !=, ENGINE_STALL_NEW);
        /* The phase survives the command's data (an engine restart): it is no change then. */
        j = engine_stall_to_json(&s);
        engine_stall_from_json(j, &s);
        json_decref(j);
        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 100 + TIMEOUT, TIMEOUT, &still), ==, ENGINE_STALL_NEW);
        g_assert_true(s.stalled);
        /* A sample without a phase (an event between polls) is no change of phase. */
        g_assert_cmpint(engine_stall_feed(&s, NULL, 0, 0, 101 + TIMEOUT, TIMEOUT, NULL), ==, ENGINE_STALL_STALLED);
        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 102 + TIMEOUT, TIMEOUT, NULL), ==, ENGINE_STALL_STALLED);
        /* It goes on to copy: it moves again. */
        g_assert_cmpint(engine_stall_feed(&s, "copying", 0, 0, 200, TIMEOUT, NULL), ==, ENGINE_STALL_MOVES_AGAIN);
}

/*
 * Waiting for the host's image locks is not judged, however long another
 * job holds them; the preparing that follows gets the whole timeout.
 */
static void test_waiting_lock(void)
{
        struct engine_stall s = { 0 };

        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 10, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        for (gint64 t = 11; t < 11 + 10 * TIMEOUT; t++)
                g_assert_cmpint(engine_stall_feed(&s, "waiting_lock", 0, 0, t, TIMEOUT, NULL), !=, ENGINE_STALL_NEW);
        g_assert_false(s.stalled);
        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 100, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 100 + TIMEOUT - 1, TIMEOUT, NULL), ==,
                        ENGINE_STALL_STILL);
        g_assert_cmpint(engine_stall_feed(&s, "preparing", 0, 0, 100 + TIMEOUT, TIMEOUT, NULL), ==, ENGINE_STALL_NEW);
}

/*
 * Issue 16 review: a resume hashes the kept prefix before it copies
 * (verifying_prefix), moving no bytes of the copy. Its own progress
 * (phase_progress) is its movement: a long verification that hashes on is
 * never stalled, one that stops hashing is flagged at the timeout, and
 * copying afterwards gets the whole timeout. An agent that reports the
 * phase without its progress keeps the old rule (not judged), and one that
 * reports no phase at all is judged as copying, as before.
 */
static void test_verifying_prefix(void)
{
        struct engine_stall s = { 0 };
        gint64 still = -1;
        json_t *j;

        /* Ten minutes of hashing a big prefix, 0.1 % a second: never stalled. */
        g_assert_cmpint(engine_stall_feed_phase(&s, "preparing", -1, 0, 0, 0, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        for (gint64 t = 1; t <= 600; t++)
                g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", (t - 1) * 0.1, 0, 0, t, TIMEOUT, NULL),
                                ==, ENGINE_STALL_MOVING);
        /* The hashing stops (a hung read of the destination): flagged at the timeout. */
        g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", 59.9, 0, 0, 600 + TIMEOUT - 1, TIMEOUT, NULL), ==,
                        ENGINE_STALL_STILL);
        g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", 59.9, 0, 0, 600 + TIMEOUT, TIMEOUT, NULL), ==,
                        ENGINE_STALL_NEW);

        /* After a restart, from the stored state. */
        s = (struct engine_stall) { 0 };
        g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", 0, 0, 0, 10, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", 40, 0, 0, 11, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", 40, 0, 0, 13, TIMEOUT, &still), ==, ENGINE_STALL_STILL);
        g_assert_cmpint(still, ==, 2);
        /* The state (with the phase's progress) survives the command's data: 40 % again is no move. */
        j = engine_stall_to_json(&s);
        engine_stall_from_json(j, &s);
        json_decref(j);
        g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", 40, 0, 0, 14, TIMEOUT, &still), ==, ENGINE_STALL_NEW);
        g_assert_cmpint(still, ==, TIMEOUT);
        g_assert_true(s.stalled);
        /* It hashes on: moves again; then it copies from its prefix: the clock restarts there. */
        g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", 41, 0, 0, 20, TIMEOUT, NULL), ==,
                        ENGINE_STALL_MOVES_AGAIN);
        g_assert_cmpint(engine_stall_feed_phase(&s, "copying", -1, 600, 60, 21, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed_phase(&s, "copying", -1, 600, 60, 23, TIMEOUT, NULL), ==, ENGINE_STALL_STILL);
        g_assert_cmpint(engine_stall_feed_phase(&s, "copying", -1, 600, 60, 24, TIMEOUT, NULL), ==, ENGINE_STALL_NEW);

        /* An agent that reports the phase but not its progress: not judged, however long. */
        s = (struct engine_stall) { 0 };
        for (gint64 t = 0; t <= 10 * TIMEOUT; t++)
                g_assert_cmpint(engine_stall_feed_phase(&s, "verifying_prefix", -1, 0, 0, t, TIMEOUT, NULL), ==,
                                ENGINE_STALL_MOVING);
        /* One that reports no phase (before issue 13): judged as copying, unchanged. */
        s = (struct engine_stall) { 0 };
        g_assert_cmpint(engine_stall_feed_phase(&s, NULL, -1, 100, 1, 0, TIMEOUT, NULL), ==, ENGINE_STALL_MOVING);
        g_assert_cmpint(engine_stall_feed_phase(&s, NULL, -1, 100, 1, TIMEOUT, TIMEOUT, NULL), ==, ENGINE_STALL_NEW);
}

/* Once aborted for stalling it stays flagged, whatever it reports, and the abort falls overdue. */
static void test_aborting(void)
{
        struct engine_stall s = { 0 }, back;
        json_t *o;

        engine_stall_feed(&s, "copying", 10, 1, 0, TIMEOUT, NULL);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 10, 1, 3, TIMEOUT, NULL), ==, ENGINE_STALL_NEW);
        engine_stall_aborting(&s, 3);
        g_assert_cmpint(engine_stall_feed(&s, "copying", 20, 2, 4, TIMEOUT, NULL), ==, ENGINE_STALL_STALLED);
        g_assert_true(s.stalled);
        g_assert_false(engine_stall_abort_overdue(&s, 3 + 2 * TIMEOUT - 1, TIMEOUT));
        g_assert_true(engine_stall_abort_overdue(&s, 3 + 2 * TIMEOUT, TIMEOUT));
        /* The state survives its JSON form (the command's data, across an engine restart). */
        o = engine_stall_to_json(&s);
        engine_stall_from_json(o, &back);
        g_assert_cmpint(back.bytes, ==, 20);
        g_assert_cmpint(back.moved_at, ==, 4);
        g_assert_cmpint(back.abort_at, ==, 3);
        g_assert_true(back.stalled);
        json_decref(o);
        g_assert_true(back.seen);
        engine_stall_from_json(NULL, &back);
        g_assert_false(back.seen);
        g_assert_false(engine_stall_abort_overdue(&back, 1000, TIMEOUT));
}

/* Judged on the monotonic clock; stored on the wall clock, through which a step does not leak. */
static void test_wall_clock_step(void)
{
        struct engine_stall s = { 0 }, back;
        gint64 t0 = engine_mono_now(), still = 0;
        json_t *saved, *saved2;

        g_assert_cmpint(engine_stall_feed(&s, "copying", 100, 1, t0 - 2, 3, NULL), ==, ENGINE_STALL_MOVING);
        /* The wall clock jumps an hour ahead (and back): the stored moved_at follows the wall
         * clock, and read back it is the same monotonic time, so the quiet time stays 2 s. */
        saved = engine_stall_to_json(&s);
        engine_clock_step_for_test(3600);
        saved2 = engine_stall_to_json(&s);
        g_assert_cmpint(json_integer_value(json_object_get(saved2, "moved_at")) -
                        json_integer_value(json_object_get(saved, "moved_at")), >=, 3599);
        engine_stall_from_json(saved2, &back);
        g_assert_cmpint(back.moved_at, >=, t0 - 3);
        g_assert_cmpint(back.moved_at, <=, t0 - 1);
        g_assert_cmpint(engine_stall_json_moved_at(saved2), ==, back.moved_at);
        g_assert_cmpint(engine_stall_feed(&back, "copying", 100, 1, engine_mono_now(), 3, &still), ==, ENGINE_STALL_STILL);
        g_assert_cmpint(still, <=, 3);
        engine_clock_step_for_test(-3600);
        /* Not aborting stays 0 through the conversion. */
        json_decref(saved);
        saved = engine_stall_to_json(&back);
        g_assert_cmpint(json_integer_value(json_object_get(saved, "abort_at")), ==, 0);
        engine_stall_from_json(saved, &back);
        g_assert_cmpint(back.abort_at, ==, 0);
        json_decref(saved);
        json_decref(saved2);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/stall/bytes-decide", test_bytes_decide);
        g_test_add_func("/stall/still-then-moves", test_still_then_moves);
        g_test_add_func("/stall/phases", test_phases);
        g_test_add_func("/stall/preparing", test_preparing);
        g_test_add_func("/stall/waiting-lock", test_waiting_lock);
        g_test_add_func("/stall/verifying-prefix", test_verifying_prefix);
        g_test_add_func("/stall/aborting", test_aborting);
        g_test_add_func("/stall/wall-clock-step", test_wall_clock_step);
        return g_test_run();
}
