/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "clock.h"
#include "stall.h"

bool engine_stall_phase_judged(const char *phase)
{
        return !phase || strcmp(phase, "copying") == 0;
}

enum engine_stall_verdict engine_stall_feed(struct engine_stall *s, const char *phase, gint64 bytes_done,
                                            double progress, gint64 now, unsigned timeout, gint64 *ret_still)
{
        bool moved = !s->seen || bytes_done > s->bytes || progress > s->progress ||
                     !engine_stall_phase_judged(phase);
        gint64 still;

        s->seen = true;
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
        };
}

gint64 engine_stall_json_moved_at(json_t *o)
{
        return to_mono(json_integer_value(json_object_get(o, "moved_at")));
}

json_t *engine_stall_to_json(const struct engine_stall *s)
{
        return json_pack("{s:b, s:I, s:f, s:I, s:I, s:b}", "seen", s->seen, "bytes", (json_int_t) s->bytes, "progress", s->progress,
                         "moved_at", (json_int_t) to_wall(s->moved_at), "abort_at", (json_int_t) to_wall(s->abort_at),
                         "stalled", s->stalled);
}
