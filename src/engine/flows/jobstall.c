/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The leaf's side of stall judgement (the policy itself is src/engine/stall.c):
 * a running host job (copy, merge, sparsify) that moves no bytes for
 * stall_timeout is flagged: its step's detail "stalled", an event,
 * ferry_engine_stalls_total. With stall_action = retry it is also aborted
 * (flows/job.c's watch sends Job.abort, and fences it here when the abort
 * does not end it) and its "aborted" end retried on another host.
 *
 *   running ── no bytes for stall_timeout ──► flagged ── retry ──► aborting (Job.abort every 30 s)
 *      ▲                                        │                     │ not ended within 2 × stall_timeout
 *      └──────────── bytes move again ──────────┘                     ▼
 *                                                       fenced as a lost job (flows/recover.c), retried
 *
 * The judgement's exact state is kept in memory by agent job id; the
 * command's data holds a copy written at most every STALL_SAVE_S while the
 * job moves. After a restart the stored copy may lag: a job that moved
 * since it was written shows more bytes than it holds, which counts as a
 * move at the first poll, so its flag may come later by up to the engine's
 * downtime (its clock restarts then), never early: a stored moved_at is
 * used only when the bytes are still those it was written with.
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/leaf.h"
#include "metrics.h"
#include "stall.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define STALL_SAVE_S 5
#define STALL_STATES_MAX 10000

/* The exact stall state of each running host job, by agent job id (a retry is a new one). */
static GHashTable *stall_states;

static void state_get(json_t *cmd, json_t *data, struct engine_stall *ret)
{
        struct engine_stall *s = stall_states ? g_hash_table_lookup(stall_states, js(cmd, "agent_job_id")) : NULL;

        if (s)
                *ret = *s;
        else
                engine_stall_from_json(json_object_get(data, "stall"), ret);      /* after a restart */
}

static void state_put(json_t *cmd, const struct engine_stall *s)
{
        if (!stall_states)
                stall_states = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        /* Bounded: the states of jobs that ended are never removed one by one. */
        if (g_hash_table_size(stall_states) >= STALL_STATES_MAX)
                g_hash_table_remove_all(stall_states);
        g_hash_table_replace(stall_states, g_strdup(js(cmd, "agent_job_id")), g_memdup2(s, sizeof(*s)));
}

/* engine_step_update cleared the step's detail with this poll: still stalled (or being aborted). */
static void mark_step(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_step_set_detail(e->db, js(cmd, "step_id"), "stalled", &error) < 0)
                engine_not_recorded(&error, "the stall", js(cmd, "id"));
}

bool leaf_stall_retry(json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        return json_is_true(json_object_get(data, "stall_abort")) && !ji(cmd, "cancel");
}

void leaf_stall_check(struct engine *e, json_t *cmd, json_t *job, double progress, bool running)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *pp = json_object_get(job, "phase_progress");
        struct engine_stall s, before;
        gint64 still;
        bool retry;

        state_get(cmd, data, &s);
        if (!running) {
                /* Aborting: not judged, but a stalled one stays flagged until it ended. */
                if (s.stalled)
                        mark_step(e, cmd);
                return;
        }
        before = s;
        switch (engine_stall_feed_phase(&s, js(job, "phase"), json_is_number(pp) ? json_number_value(pp) : -1,
                                        ji(job, "bytes_done"), progress, engine_mono_now(), e->config.stall_timeout,
                                        &still)) {
        case ENGINE_STALL_MOVING:
                /* Not a database write per poll of every moving copy: the stored state may lag. */
                state_put(cmd, &s);
                if (before.seen && s.moved_at - engine_stall_json_moved_at(json_object_get(data, "stall")) < STALL_SAVE_S)
                        return;
                break;
        case ENGINE_STALL_STILL:
                state_put(cmd, &s);
                return;        /* nothing new to keep */
        case ENGINE_STALL_MOVES_AGAIN:
                engine_event(e, "normal", js(cmd, "id"), "%s job %s on host %s moves again (%.0f %%)",
                             leaf_job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"), progress);
                break;
        case ENGINE_STALL_STALLED:
                mark_step(e, cmd);
                break;
        case ENGINE_STALL_NEW:
                retry = strcmp(e->config.stall_action, "retry") == 0 && !ji(cmd, "cancel");
                if (retry) {
                        engine_stall_aborting(&s, engine_mono_now());
                        json_object_set_new(data, "stall_abort", json_true());
                }
                mark_step(e, cmd);
                engine_metrics_count_stall();
                engine_event(e, "warning", js(cmd, "id"), "%s job %s on host %s %s for %" G_GINT64_FORMAT
                             " s (at %.0f %%, %" G_GINT64_FORMAT " bytes): stalled%s", leaf_job_noun(cmd),
                             js(cmd, "agent_job_id"), js(cmd, "host"),
                             g_strcmp0(js(job, "phase"), "verifying_prefix") == 0 ?
                                     "hashed no more of the copied prefix it verifies" : "moved no bytes",
                             still, progress, ji(job, "bytes_done"), retry ? "; aborting it to try on another host" : "");
                if (retry)
                        engine_kick(e);        /* the watch sends the abort */
                break;
        }
        state_put(cmd, &s);
        json_object_set_new(data, "stall", engine_stall_to_json(&s));
        if (leaf_save(e, cmd, data) < 0)
                return;        /* logged; the stall is measured again next round */
}

/*
 * A copy aborted for stalling that does not end (hung in D state, SIGKILL
 * waits for the I/O) is treated as a lost host job once the abort is
 * overdue (stall.h): read through other hosts and fenced by its generation,
 * which succeeds once its lease is free. True when the fence path has it.
 */
bool leaf_stall_fence(struct engine *e, json_t *cmd, json_t *data)
{
        struct engine_stall s;

        if (json_object_get(data, "stall_fence")) {
                leaf_copy_probe(e, cmd, data);
                return true;
        }
        engine_stall_from_json(json_object_get(data, "stall"), &s);
        if (!engine_stall_abort_overdue(&s, engine_mono_now(), e->config.stall_timeout))
                return false;
        engine_event(e, "warning", js(cmd, "id"), "%s job %s on host %s did not end within %u s of its abort "
                     "(stalled, maybe hung in the kernel): fencing it as a lost job", leaf_job_noun(cmd),
                     js(cmd, "agent_job_id"), js(cmd, "host"), ENGINE_STALL_ABORT_FACTOR * e->config.stall_timeout);
        /*
         * stall_fence makes copy_probe treat it as lost for host_lost_timeout
         * already (it fences at once instead of waiting for the host), so no
         * backdated time is compared: a wall-clock step cannot delay it.
         * lost_since (wall clock, as the command's data keeps times across
         * restarts) only records when.
         */
        json_object_set_new(data, "stall_fence", json_true());
        json_object_set_new(data, "lost_since", json_integer(engine_now()));
        if (leaf_save(e, cmd, data) < 0)
                return true;   /* not recorded: no fence yet; next round */
        leaf_copy_probe(e, cmd, data);
        return true;
}
