/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "clock.h"
#include "stall.h"

/*
 * The phases an agent reports (src/agent/jobs.h's AGENT_JOB_PHASE_*, and
 * "rate_wait"): judged ones are those where a healthy job moves bytes
 * (copying) or ends soon (preparing: leases, metadata, checks; a source
 * open or a lease acquisition that hangs is a stall too, issue 13). Not
 * waiting_lock: a healthy copy queued behind another job of its host on the
 * same image waits as long as that job runs. Index 0 is a sample without a
 * phase (an older agent: copying); an unknown name is
 * ENGINE_STALL_PHASE_OTHER, not judged. verifying_prefix (a resume hashing
 * its kept prefix) is judged only when its sample carries the phase's own
 * progress (phase_progress): that is its movement. An agent that reports
 * the phase without it keeps the old rule: not judged.
 */
#define PHASE_VERIFYING_PREFIX 3

static const struct {
        const char *name;
        bool judged;
} phases[] = {
        [1] = { "copying", true },
        [2] = { "preparing", true },
        [PHASE_VERIFYING_PREFIX] = { "verifying_prefix", false },    /* judged with phase_progress only */
        [4] = { "preallocating", false },
        [5] = { "finishing", false },
        [6] = { "rate_wait", false },
        [7] = { "waiting_lock", false },
};
G_STATIC_ASSERT(G_N_ELEMENTS(phases) == ENGINE_STALL_PHASE_OTHER);

static int phase_index(const char *phase)
{
        if (!phase)
                return 0;
        for (size_t i = 1; i < G_N_ELEMENTS(phases); i++)
                if (strcmp(phase, phases[i].name) == 0)
                        return (int) i;
        return ENGINE_STALL_PHASE_OTHER;
}

static bool index_judged(int i)
{
        return i == 0 || (i > 0 && i < ENGINE_STALL_PHASE_OTHER && phases[i].judged);
}

bool engine_stall_phase_judged(const char *phase)
{
        return index_judged(phase_index(phase));
}

enum engine_stall_verdict engine_stall_feed(struct engine_stall *s, const char *phase, gint64 bytes_done,
                                            double progress, gint64 now, unsigned timeout, gint64 *ret_still)
{
        return engine_stall_feed_phase(s, phase, -1, bytes_done, progress, now, timeout, ret_still);
}

enum engine_stall_verdict engine_stall_feed_phase(struct engine_stall *s, const char *phase, double phase_progress,
                                                  gint64 bytes_done, double progress, gint64 now, unsigned timeout,
                                                  gint64 *ret_still)
{
        int idx = phase_index(phase);
        bool entered = idx != 0 && idx != s->phase;
        bool judged = index_judged(idx) || (idx == PHASE_VERIFYING_PREFIX && phase_progress >= 0);
        /*
         * Entering another phase is a step forward: preparing's time does not
         * count once it copies. A sample without a phase (an older agent, or a
         * job event that carries none between polls that do) changes nothing.
         * The phase's own progress growing is a move too (a prefix
         * verification hashes without moving bytes of the copy).
         */
        bool moved = !s->seen || bytes_done > s->bytes || progress > s->progress || entered || !judged ||
                     (phase_progress >= 0 && phase_progress > s->phase_progress);
        gint64 still;

        s->seen = true;
        if (idx != 0)
                s->phase = idx;
        if (entered)
                s->phase_progress = phase_progress;     /* the new phase's own, from its start */
        else if (phase_progress >= 0)
                s->phase_progress = MAX(s->phase_progress, phase_progress);
        s->bytes = MAX(s->bytes, bytes_done);
        s->progress = MAX(s->progress, progress);
        if (moved)
                s->moved_at = now;
        still = MAX(now - s->moved_at, 0);
        if (ret_still)
                *ret_still = still;
        if (s->abort_at)
                return ENGINE_STALL_STALLED;   /* being aborted: flagged until it ends */
        if (moved) {
                if (!s->stalled)
                        return ENGINE_STALL_MOVING;
                s->stalled = false;
                return ENGINE_STALL_MOVES_AGAIN;
        }
        if (s->stalled)
                return ENGINE_STALL_STALLED;
        if (still < (gint64) timeout)
                return ENGINE_STALL_STILL;
        s->stalled = true;
        return ENGINE_STALL_NEW;
}

void engine_stall_aborting(struct engine_stall *s, gint64 now)
{
        s->stalled = true;
        if (!s->abort_at)
                s->abort_at = now;
}

bool engine_stall_abort_overdue(const struct engine_stall *s, gint64 now, unsigned timeout)
{
        return s->abort_at > 0 && now - s->abort_at >= (gint64) ENGINE_STALL_ABORT_FACTOR * timeout;
}

/* Stored times are wall-clock (another boot's monotonic clock means nothing); 0 stays 0. */
static gint64 to_wall(gint64 mono)
{
        return mono ? engine_now() - (engine_mono_now() - mono) : 0;
}

static gint64 to_mono(gint64 wall)
{
        return wall ? MAX(engine_mono_now() - (engine_now() - wall), 1) : 0;
}

void engine_stall_from_json(json_t *o, struct engine_stall *ret)
{
        *ret = (struct engine_stall) {
                .bytes = json_integer_value(json_object_get(o, "bytes")),
                .progress = json_number_value(json_object_get(o, "progress")),
                .moved_at = to_mono(json_integer_value(json_object_get(o, "moved_at"))),
                .abort_at = to_mono(json_integer_value(json_object_get(o, "abort_at"))),
                .stalled = json_is_true(json_object_get(o, "stalled")),
                .seen = json_is_true(json_object_get(o, "seen")),
                .phase = phase_index(json_string_value(json_object_get(o, "phase"))),
                .phase_progress = json_is_number(json_object_get(o, "phase_progress")) ?
                                          json_number_value(json_object_get(o, "phase_progress")) : -1,
        };
}

gint64 engine_stall_json_moved_at(json_t *o)
{
        return to_mono(json_integer_value(json_object_get(o, "moved_at")));
}

json_t *engine_stall_to_json(const struct engine_stall *s)
{
        /* An unknown phase is kept as one no agent reports: still a change from any known one. */
        const char *phase = s->phase <= 0 ? NULL : s->phase < ENGINE_STALL_PHASE_OTHER ? phases[s->phase].name : "other";

        return json_pack("{s:b, s:I, s:f, s:I, s:I, s:b, s:s?, s:f}", "seen", s->seen, "bytes", (json_int_t) s->bytes,
                         "progress", s->progress, "moved_at", (json_int_t) to_wall(s->moved_at),
                         "abort_at", (json_int_t) to_wall(s->abort_at), "stalled", s->stalled, "phase", phase,
                         "phase_progress", s->phase_progress);
}
