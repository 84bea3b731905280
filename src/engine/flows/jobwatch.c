/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Following a sent leaf (flows/job.c's "sent" state): each round decides
 * from what is already known before it calls anyone.
 *
 *   "sent" ── next_try ahead ──────────────────────────────▶ nothing this round
 *     │ ── fence_job / verify / stall abort ──────────────────▶ recover.c / verify.c / jobstall.c
 *     │ ── cancelled or stalled ── Job.abort (again every 30 s) ▶ its "aborted" end
 *     │ ── host lost, SPM changed ───────────────────────────▶ recover.c (decided from storage)
 *     │ ── the host's end event cached ──────────────────────▶ leaf_job_finished (no call)
 *     └─ poll_interval passed ── the round's one Host.getJobs to its host ─▶ leaf_job_finished
 *                                                                           | job missing → recover.c
 *
 * The poll clock (last_poll) is in memory only: after a restart every sent
 * job is asked about at once, which is what a restart needs.
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/leaf.h"
#include "hosts.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static GHashTable *last_poll;          /* command id → monotonic µs of its last Host.getJobs (in memory) */

/* From now on the job is asked about no sooner than poll_interval, unless an event reports its end. */
void leaf_poll_start(const char *cmd_id)
{
        gint64 *now = g_new(gint64, 1);

        if (!last_poll)
                last_poll = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        if (g_hash_table_size(last_poll) >= 100000)
                g_hash_table_remove_all(last_poll);    /* forgotten ones are only asked sooner */
        *now = g_get_monotonic_time();
        g_hash_table_replace(last_poll, g_strdup(cmd_id), now);
}

/* The job was asked about at least poll_interval ago (or never since it was sent): true, and counts a poll now. */
bool leaf_poll_due(struct engine *e, const char *cmd_id)
{
        gint64 now = g_get_monotonic_time();
        /* No table yet: nothing was sent since the engine started (a restart resumes sent jobs). */
        gpointer last = last_poll ? g_hash_table_lookup(last_poll, cmd_id) : NULL;

        if (last && now - *(gint64 *) last < (gint64) e->config.poll_interval * 1000)
                return false;
        leaf_poll_start(cmd_id);
        return true;
}

/* What the host says of the job (its Host.getJobs entry or its end event; NULL: it does not know it). */
static void leaf_job_answer(struct engine *e, json_t *cmd, json_t *job)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        if (json_object_get(data, "lost_since")) {
                engine_event(e, "normal", js(cmd, "id"), "%s: host %s answers again; the job is %s", js(cmd, "type"),
                             js(cmd, "host"), job ? "still known there" : "no longer known there");
                json_object_del(data, "lost_since");
                json_object_del(data, "next_try");
                json_object_del(data, "fence_started");      /* a later episode gets its own fence window */
                json_object_del(data, "fence_attempts");
                if (leaf_save(e, cmd, data) < 0)
                        return;        /* logged; decided again from the job next round */
        }
        if (!job) {
                leaf_job_missing(e, cmd);
                return;
        }
        leaf_job_finished(e, cmd, job);
}

static void on_leaf_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (error) {
                g_autoptr(json_t) data = jparse(cmd, "data");

                if (leaf_host_job(engine_cmd_kind(cmd)))
                        leaf_copy_lost(e, cmd, data, error->message);
                return;        /* an SPM verb: leaf_watch re-checks against the (new) SPM */
        }
        leaf_job_answer(e, cmd, json_object_get(result, js(cmd, "agent_job_id")));
}

static void on_abort_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (error)
                g_message("abort of %s on %s: %s", js(cmd, "agent_job_id"), js(cmd, "host"), error->message);
        engine_kick(e);
}

void leaf_watch(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autoptr(json_t) ended = NULL;
        json_t *cached;

        if (ji(data, "next_try") > engine_now())
                return;
        if (leaf_host_job(engine_cmd_kind(cmd))) {
                if (js(data, "fence_job")) {
                        leaf_fence_watch(e, cmd, data);
                        return;
                }
                if (json_object_get(data, "verify")) {
                        leaf_verify_watch(e, cmd, data);
                        return;
                }
                bool stall_abort = json_is_true(json_object_get(data, "stall_abort"));

                if (stall_abort && leaf_stall_fence(e, cmd, data))
                        return;
                if ((ji(cmd, "cancel") || stall_abort) && engine_now() - ji(data, "abort_sent") >= 30 &&
                    leaf_host_is_up(e, js(cmd, "host"))) {
                        /* Cancelled: the job ends "aborted" and the command with it; stalled (stall_action
                         * retry): it ends "aborted" and is tried elsewhere. Sent again every 30 s while it
                         * runs: an abort lost on the way must not let the copy go on. */
                        json_object_set_new(data, "abort_sent", json_integer(engine_now()));
                        if (leaf_save(e, cmd, data) < 0)
                                return;        /* not recorded: not sent either; next round */
                        engine_event(e, "normal", js(cmd, "id"), "aborting %s job %s on host %s (%s)",
                                     leaf_job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"),
                                     ji(cmd, "cancel") ? "cancelled" : "stalled");
                        engine_cmd_call(e, cmd, js(cmd, "host"), "Job.abort", json_pack("{s:s}", "job_id", js(cmd, "agent_job_id")),
                                 e->config.host_timeout, on_abort_sent, NULL, NULL);
                        return;
                }
                if (leaf_host_status_is(e, js(cmd, "host"), "connecting"))
                        return;        /* just (re)connected, e.g. after an engine restart: the monitor decides soon */
                if (leaf_host_status_is(e, js(cmd, "host"), "non_responsive") || leaf_host_status_is(e, js(cmd, "host"), "gone")) {
                        leaf_copy_lost(e, cmd, data, "the host is not responding");
                        return;
                }
        } else if (engine_cmd_kind(cmd) == ENGINE_KIND_SEAL_TEMPLATE_VOLUME) {
                if (leaf_host_status_is(e, js(cmd, "host"), "connecting"))
                        return;
                if (!leaf_host_is_up(e, js(cmd, "host"))) {
                        leaf_job_missing(e, cmd);      /* the volume's type decides */
                        return;
                }
        } else if (engine_cmd_kind(cmd) == ENGINE_KIND_CHECKSUM_VOLUME) {
                if (leaf_host_status_is(e, js(cmd, "host"), "connecting"))
                        return;
                if (!leaf_host_is_up(e, js(cmd, "host"))) {
                        /* Lost, not failed: elsewhere, without spending one of its 3 tries (the pick takes
                         * only hosts that are up). */
                        leaf_retry_lost(e, cmd, 3, "the host is not up", true);
                        return;
                }
        } else {
                g_autofree char *spm = engine_spm_host(e);

                if (js(data, "delete_job")) {
                        leaf_delete_watch(e, cmd, data);       /* a half-made volume being removed (recover.c) */
                        return;
                }
                if (spm && strcmp(spm, js(cmd, "host")) != 0) {
                        /* The SPM changed under this command: learn from storage through the new one. */
                        leaf_job_missing(e, cmd);
                        return;
                }
                if (!spm)
                        return;        /* wait for the election */
        }
        /* The host's end event is its final answer: decided in this round, without a call. */
        ended = json_incref(engine_job_end(js(cmd, "agent_job_id"), js(cmd, "host")));   /* ours: the entry goes when the command ends */
        if (ended) {
                leaf_job_answer(e, cmd, ended);
                return;
        }
        cached = engine_job_event(js(cmd, "agent_job_id"));
        if (cached && g_strcmp0(js(cached, "status"), "running") == 0)
                leaf_job_finished(e, cmd, cached);
        /* No end event: asked once per poll_interval, in the round's one Host.getJobs to its host,
         * so a lost end event (reconnect, crash, engine restart) cannot leave a command waiting. */
        if (!leaf_poll_due(e, js(cmd, "id")))
                return;
        engine_cmd_poll_job(e, cmd, js(cmd, "host"), js(cmd, "agent_job_id"), on_leaf_jobs, NULL);
}
