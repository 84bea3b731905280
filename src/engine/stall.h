/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Stall judgement of a running host job (issue 13), a pure policy: fed one
 * sample per poll of the job (its phase, the bytes it has moved, its
 * progress, the time), it says whether the job moves.
 *
 * A job moves when the bytes it moved (the agent's "bytes_done": what its
 * qemu-img wrote, or what Ferry's copy loop moved) or its progress grew
 * since the last sample. qemu-img's own progress moves in 1 % steps, so a
 * capped or very large copy that is still writing shows no progress for
 * minutes: bytes decide. Judged are the phases that move bytes (copying; a
 * sample without a phase, from an older agent, counts as copying) and
 * preparing, which moves none but ends soon unless it hangs (a blocked
 * source open, a lease acquisition that never returns). Entering another
 * phase counts as a move, so preparing's time does not count against
 * copying. A resume's prefix verification (verifying_prefix) moves no bytes
 * of the copy but reports its own progress (the sample's phase_progress):
 * judged on that, so a long verification that hashes on is no stall and
 * one that hangs is. In any other phase (verifying_prefix without a
 * phase_progress, from an agent that does not report one; preallocating,
 * finishing, rate_wait) the clock restarts, so a long fallocate or wait in
 * a rate limiter is no stall.
 *
 * Once the caller aborts a stalled job (engine_stall_aborting) the flag
 * stays until the job ends, whatever it reports meanwhile; an abort that
 * does not end the job within ENGINE_STALL_ABORT_FACTOR × stall_timeout
 * (a copy hung in D state ignores SIGKILL) is overdue: the caller fences.
 *
 * The state is small and plain so the caller can keep it with the job (the
 * engine keeps it in the command's data: a restart does not forget a stall
 * in the making). Times are whole seconds of the monotonic clock
 * (engine_mono_now): a wall-clock step neither fakes nor hides a stall. The
 * JSON form stores them as wall-clock seconds (another boot's monotonic
 * clock means nothing) and reads them back as monotonic ones.
 */

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

#define ENGINE_STALL_ABORT_FACTOR 2

struct engine_stall {
        gint64 bytes;          /* bytes_done at the last sample */
        double progress;       /* progress at the last sample */
        gint64 moved_at;       /* when the job last moved (or its clock restarted) */
        bool seen;             /* a sample came before */
        gint64 abort_at;       /* when the caller first aborted it for stalling; 0: not aborting */
        bool stalled;          /* flagged */
        int phase;             /* the phase of the last sample (stall.c's table; 0: none reported) */
        double phase_progress; /* that phase's own progress, the highest seen in it; < 0: none reported */
};

#define ENGINE_STALL_PHASE_OTHER 8   /* a phase stall.c does not know: not judged */

enum engine_stall_verdict {
        ENGINE_STALL_MOVING,           /* moved, or not judged in this phase */
        ENGINE_STALL_MOVES_AGAIN,      /* moved after it was flagged (the flag is cleared) */
        ENGINE_STALL_STILL,            /* no move yet, for less than the timeout */
        ENGINE_STALL_NEW,              /* no move for the timeout: flagged now */
        ENGINE_STALL_STALLED,          /* flagged before and still flagged */
};

/* True for the phases judged on bytes and progress: copying, preparing (NULL: an agent that reports none,
 * copying). verifying_prefix is judged only on its phase_progress (engine_stall_feed_phase). */
bool engine_stall_phase_judged(const char *phase);

/*
 * One sample of a running job. ret_still (may be NULL): seconds without a
 * move. A job not running has no sample: the caller forgets the state.
 * The state starts zeroed ({ 0 }).
 */
enum engine_stall_verdict engine_stall_feed(struct engine_stall *s, const char *phase, gint64 bytes_done,
                                            double progress, gint64 now, unsigned timeout, gint64 *ret_still);
/* The same with the phase's own progress (the job's "phase_progress"; < 0: not reported). */
enum engine_stall_verdict engine_stall_feed_phase(struct engine_stall *s, const char *phase, double phase_progress,
                                                  gint64 bytes_done, double progress, gint64 now, unsigned timeout,
                                                  gint64 *ret_still);

/* The caller aborts the flagged job (stall_action = retry): it stays flagged until it ends. */
void engine_stall_aborting(struct engine_stall *s, gint64 now);

/* Aborted for stalling at least ENGINE_STALL_ABORT_FACTOR × timeout ago and still not ended. */
bool engine_stall_abort_overdue(const struct engine_stall *s, gint64 now, unsigned timeout);

/* The state kept in JSON (unknown or bad members read as 0/false); the object is new. */
void engine_stall_from_json(json_t *o, struct engine_stall *ret);
json_t *engine_stall_to_json(const struct engine_stall *s);
/* The stored state's moved_at, monotonic (0: none). */
gint64 engine_stall_json_moved_at(json_t *o);
