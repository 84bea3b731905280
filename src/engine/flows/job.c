/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A job on a host: the leaf commands create_volume_container,
 * remove_image, remove_volume, prepare_merge and finalize_merge (on the SPM)
 * and copy_data, merge and sparsify_volume (on a host the scheduler picks;
 * "copy" below stands for any of these three: they share the recovery),
 * and checksum_volume (any up host).
 *
 *     ""  ── pick host (SPM / scheduler), read the destination generation (copy) ──┐
 *      ▲          record host, agent job, generation ("sent") BEFORE the call   │
 *      │                                                                         ▼
 *      │ retry elsewhere                                                    "sent" ── Host.getJobs / job events ──▶ done → LEGAL (+1)
 *      │ (refused, failed,                                                    │                                     failed → retry | fail
 *      │  fenced: data.exclude)                                               │ host lost / job forgotten
 *      │                                                                      ▼
 *      └──────────────── fenced (+3), or generation moved ◀── probe the destination through another host
 *                                                              (LEGAL at +1: done; lease held: wait, then fence)
 *
 * A copy done with verify_copies on goes through data.verify first (see
 * "verification of a finished copy" below): done → checksums of source and
 * destination → equal: LEGAL (+1), step verified | differ: ILLEGAL, retry.
 * checksum_volume (POST /api/disks/{id}/checksum) is the same leaf with
 * Volume.checksum on any up host.
 *
 * Cancel: a sent copy gets Job.abort (again every 30 s); one not sent yet
 * ends "cancelled". Metadata jobs whose SPM changed are decided from
 * storage through the new SPM (the volume as asked for, or the image gone).
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/job.h"
#include "generation.h"
#include "hosts.h"
#include "inventory.h"
#include "metrics.h"
#include "scheduler.h"
#include "stall.h"
#include "error.h"
#include "uuid.h"

#define SPM_CALL_TIMEOUT_MS 30000
#define COPY_CALL_TIMEOUT_MS 30000

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

/*
 * Jobs that change one volume's data in place on a host the scheduler
 * picks, under that volume's lease and generation (params.dst): a copy into
 * it, a merge into it (its base), a sparsify of it. They share the
 * recovery: a lost host is decided from the volume (LEGAL at recorded+1 is
 * done), fenced (recorded+3) and retried elsewhere.
 */
static bool host_job(enum engine_kind k)
{
        return k == ENGINE_KIND_COPY_DATA || k == ENGINE_KIND_MERGE || k == ENGINE_KIND_SPARSIFY_VOLUME;
}

/*
 * What another host would refuse too: the generation moved (someone else's
 * change), no space, and a merge or sparsify the volumes do not allow
 * (252, 2009, 920, 921, 219 a template's volume).
 */
static bool refused_everywhere(gint64 code)
{
        static const gint64 codes[] = { FY_ERR_GENERATION_MISMATCH, FY_ERR_NO_SPACE, FY_ERR_MERGE, FY_ERR_UNSUPPORTED,
                                        FY_ERR_NOT_IN_CHAIN, FY_ERR_WRONG_PARENT, FY_ERR_SHARED_VOLUME };

        for (size_t i = 0; i < G_N_ELEMENTS(codes); i++)
                if (codes[i] == code)
                        return true;
        return false;
}

/*
 * The end of a leaf. A leaf that is a job's top command (checksum_volume,
 * started by POST /api/disks/{id}/checksum) ends its job too: no flow above
 * it would.
 */
static void leaf_finish(struct engine *e, json_t *cmd, bool ok, const char *why)
{
        g_autoptr(GError) store_error = NULL;

        engine_cmd_finish(e, cmd, ok, why);
        if (engine_cmd_kind(cmd) == ENGINE_KIND_CHECKSUM_VOLUME && !js(cmd, "parent_id") && js(cmd, "job_id") &&
            engine_store_job_end(e->db, js(cmd, "job_id"), ok ? "finished" : ji(cmd, "cancel") ? "aborted" : "failed",
                                 engine_now(), &store_error) < 0)
                engine_not_recorded(&store_error, "the job's end", js(cmd, "id"));
}

static bool persistent(json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        return json_is_true(json_object_get(p, "persistent"));
}

/*
 * Another try from scratch (phase ''), or the end. A host that failed the
 * command is remembered in data.exclude so the next try goes elsewhere.
 */
static void leaf_retry_or_fail(struct engine *e, json_t *cmd, unsigned max_attempts, const char *why, bool exclude_host)
{
        g_autoptr(json_t) old = jparse(cmd, "data");
        g_autoptr(json_t) data = json_object();
        g_autoptr(GError) store_error = NULL;
        json_t *exclude = json_object_get(old, "exclude");

        if (persistent(cmd)) {
                /* A cleanup: retried until done, ever less often (the sweeper is the backstop). */
                g_autoptr(json_t) later = json_pack("{s:I}", "next_try",
                                                    (json_int_t) (engine_now() + MIN(30 << MIN(ji(cmd, "attempts"), 5), 600)));

                engine_event(e, "warning", js(cmd, "id"), "%s: %s; trying again later (attempt %" G_GINT64_FORMAT ")",
                             js(cmd, "type"), why, ji(cmd, "attempts"));
                if (engine_store_cmd_restart(e->db, js(cmd, "id"), later, engine_now(), &store_error) < 0)
                        engine_not_recorded(&store_error, "the retry", js(cmd, "id"));
                return;
        }
        if (ji(cmd, "attempts") >= (gint64) max_attempts) {
                leaf_finish(e, cmd, false, why);
                return;
        }
        exclude = json_is_array(exclude) ? json_copy(exclude) : json_array();
        if (exclude_host && js(cmd, "host"))
                json_array_append_new(exclude, json_string(js(cmd, "host")));
        json_object_set_new(data, "exclude", exclude);
        engine_metrics_count_retry(js(cmd, "type"));
        engine_event(e, "warning", js(cmd, "id"), "%s: %s; retrying (attempt %" G_GINT64_FORMAT " of %u)%s",
                     js(cmd, "type"), why, ji(cmd, "attempts") + 1, max_attempts,
                     exclude_host ? " on another host" : "");
        if (engine_store_cmd_restart(e->db, js(cmd, "id"), data, engine_now(), &store_error) < 0)
                engine_not_recorded(&store_error, "the retry", js(cmd, "id"));
        engine_kick(e);
}

static GHashTable *last_poll;          /* command id → monotonic µs of its last Host.getJobs (in memory) */

/* From now on the job is asked about no sooner than poll_interval, unless an event reports its end. */
static void poll_start(const char *cmd_id)
{
        gint64 *now = g_new(gint64, 1);

        if (!last_poll)
                last_poll = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        if (g_hash_table_size(last_poll) >= 100000)
                g_hash_table_remove_all(last_poll);    /* forgotten ones are only asked sooner */
        *now = g_get_monotonic_time();
        g_hash_table_replace(last_poll, g_strdup(cmd_id), now);
}

/* What an event calls a leaf's agent job: "copy_data", "merge", "sparsify_volume" … */
static const char *job_noun(json_t *cmd)
{
        return engine_kind_name(engine_cmd_kind(cmd));
}

/* Marks the command sent before the call: a restart finds host and agent job recorded. */
static char *leaf_mark_sent(struct engine *e, json_t *cmd, const char *host, gint64 generation)
{
        char *job_id = fy_uuid_new();
        g_autoptr(json_t) old = jparse(cmd, "data");
        g_autoptr(json_t) data = json_object();

        /* Whatever the last try learned is stale now; only the hosts to avoid carry over. */
        if (json_object_get(old, "exclude"))
                json_object_set(data, "exclude", json_object_get(old, "exclude"));
        g_autoptr(GError) error = NULL;

        if (engine_store_cmd_mark_sent(e->db, js(cmd, "id"), host, job_id, generation, data, engine_now(), &error) < 0) {
                engine_not_recorded(&error, "the call", js(cmd, "id"));
                g_free(job_id);
                return NULL;   /* not recorded: do not call, try again next round */
        }
        poll_start(js(cmd, "id"));
        return job_id;
}

static void leaf_save(struct engine *e, json_t *cmd, json_t *data)
{
        engine_cmd_update(e, js(cmd, "id"), engine_cmd_phase(cmd), data);
}

/* Nothing to do for this command before `seconds` from now (a backoff that survives restarts). */
static void leaf_later(struct engine *e, json_t *cmd, json_t *data, gint64 seconds)
{
        json_object_set_new(data, "next_try", json_integer(engine_now() + seconds));
        leaf_save(e, cmd, data);
}

static gint64 backoff(gint64 attempt)
{
        return MIN(5 << MIN(attempt, 3), 30);  /* 5, 10, 20, 30, 30 … s */
}

static void verify_volume_created(struct engine *e, json_t *cmd, const char *host);

static void on_leaf_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        enum engine_kind kind = engine_cmd_kind(cmd);

        if (!error) {
                engine_kick(e);        /* accepted: watch the job from now on */
                return;
        }
        if (engine_is_transport_error(error))
                return;        /* unknown whether it arrived: the next round asks the host */
        if (error->code == FY_ERR_JOB_EXISTS)
                return;        /* it did arrive before (a resend after a restart): watch it */
        if (kind == ENGINE_KIND_CREATE_VOLUME_CONTAINER && error->code == FY_ERR_VOLUME_ALREADY_EXISTS) {
                /* A try before an SPM change or a restart got that far: finished, or half-made? */
                verify_volume_created(e, cmd, js(cmd, "host"));
                return;
        }
        if (kind == ENGINE_KIND_REMOVE_VOLUME && error->code == FY_ERR_VOLUME_DOES_NOT_EXIST) {
                engine_cmd_finish(e, cmd, true, NULL);        /* gone already (a resend): done */
                return;
        }
        if (host_job(kind) && kind != ENGINE_KIND_COPY_DATA && refused_everywhere(error->code)) {
                /* A merge or sparsify the volumes do not allow (copies keep their behaviour). */
                engine_cmd_finish(e, cmd, false, error->message);
                return;
        }
        if (host_job(kind)) {
                /* The host refused the copy (full, not connected, broken): another host may take it. */
                leaf_retry_or_fail(e, cmd, e->config.copy_attempts, error->message, true);
                return;
        }
        /* An SPM verb refused; "not the SPM (any more)" passes with the next election. */
        leaf_retry_or_fail(e, cmd, error->code == FY_ERR_SPM_REQUIRED ? 3 : 1, error->message, false);
}

static void leaf_job_finished(struct engine *e, json_t *cmd, json_t *job);

/* The job was asked about at least poll_interval ago (or never since it was sent): true, and counts a poll now. */
static bool poll_due(struct engine *e, const char *cmd_id)
{
        gint64 now = g_get_monotonic_time();
        gpointer last = g_hash_table_lookup(last_poll, cmd_id);

        if (last && now - *(gint64 *) last < (gint64) e->config.poll_interval * 1000)
                return false;
        poll_start(cmd_id);
        return true;
}
static void leaf_job_missing(struct engine *e, json_t *cmd);
static void copy_lost(struct engine *e, json_t *cmd, json_t *data, const char *why);
static void copy_probe(struct engine *e, json_t *cmd, json_t *data);
static void fence_watch(struct engine *e, json_t *cmd, json_t *data);
static void verify_watch(struct engine *e, json_t *cmd, json_t *data);
static bool verify_begin(struct engine *e, json_t *cmd);

static bool host_status_is(struct engine *e, const char *host, const char *status)
{
        g_autoptr(json_t) row = host ? engine_store_host_get(e->db, host, NULL) : NULL;

        return row ? g_strcmp0(js(row, "status"), status) == 0 : strcmp(status, "gone") == 0;
}

static bool host_is_up(struct engine *e, const char *host)
{
        return host_status_is(e, host, "up");
}

static void on_leaf_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *job;

        if (error) {
                if (host_job(engine_cmd_kind(cmd)))
                        copy_lost(e, cmd, data, error->message);
                return;        /* an SPM verb: leaf_watch re-checks against the (new) SPM */
        }
        job = json_object_get(result, js(cmd, "agent_job_id"));
        if (json_object_get(data, "lost_since")) {
                engine_event(e, "normal", js(cmd, "id"), "%s: host %s answers again; the job is %s", js(cmd, "type"),
                             js(cmd, "host"), job ? "still known there" : "no longer known there");
                json_object_del(data, "lost_since");
                json_object_del(data, "next_try");
                json_object_del(data, "fence_started");      /* a later episode gets its own fence window */
                json_object_del(data, "fence_attempts");
                leaf_save(e, cmd, data);
        }
        if (!job) {
                leaf_job_missing(e, cmd);
                return;
        }
        leaf_job_finished(e, cmd, job);
}

static void on_abort_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (error)
                g_message("abort of %s on %s: %s", js(cmd, "agent_job_id"), js(cmd, "host"), error->message);
        engine_kick(e);
}

static void leaf_watch(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *cached;

        if (ji(data, "next_try") > engine_now())
                return;
        if (host_job(engine_cmd_kind(cmd))) {
                if (js(data, "fence_job")) {
                        fence_watch(e, cmd, data);
                        return;
                }
                if (json_object_get(data, "verify")) {
                        verify_watch(e, cmd, data);
                        return;
                }
                bool stall_abort = json_is_true(json_object_get(data, "stall_abort"));

                if ((ji(cmd, "cancel") || stall_abort) && engine_now() - ji(data, "abort_sent") >= 30 &&
                    host_is_up(e, js(cmd, "host"))) {
                        /* Cancelled: the job ends "aborted" and the command with it; stalled (stall_action
                         * retry): it ends "aborted" and is tried elsewhere. Sent again every 30 s while it
                         * runs: an abort lost on the way must not let the copy go on. */
                        json_object_set_new(data, "abort_sent", json_integer(engine_now()));
                        leaf_save(e, cmd, data);
                        engine_event(e, "normal", js(cmd, "id"), "aborting %s job %s on host %s (%s)",
                                     job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"),
                                     ji(cmd, "cancel") ? "cancelled" : "stalled");
                        engine_cmd_call(e, cmd, js(cmd, "host"), "Job.abort", json_pack("{s:s}", "job_id", js(cmd, "agent_job_id")),
                                 e->config.host_timeout, on_abort_sent, NULL, NULL);
                        return;
                }
                if (host_status_is(e, js(cmd, "host"), "connecting"))
                        return;        /* just (re)connected, e.g. after an engine restart: the monitor decides soon */
                if (host_status_is(e, js(cmd, "host"), "non_responsive") || host_status_is(e, js(cmd, "host"), "gone")) {
                        copy_lost(e, cmd, data, "the host is not responding");
                        return;
                }
        } else if (engine_cmd_kind(cmd) == ENGINE_KIND_CHECKSUM_VOLUME) {
                if (host_status_is(e, js(cmd, "host"), "connecting"))
                        return;
                if (!host_is_up(e, js(cmd, "host"))) {
                        leaf_retry_or_fail(e, cmd, 3, "the host is not up", true);
                        return;
                }
        } else {
                g_autofree char *spm = engine_spm_host(e);

                if (spm && strcmp(spm, js(cmd, "host")) != 0) {
                        /* The SPM changed under this command: learn from storage through the new one. */
                        leaf_job_missing(e, cmd);
                        return;
                }
                if (!spm)
                        return;        /* wait for the election */
        }
        /* Events only bring progress early; the state always comes from Host.getJobs,
         * so a lost final event (reconnect, crash) cannot leave a command waiting. */
        cached = engine_job_event(js(cmd, "agent_job_id"));
        if (cached && g_strcmp0(js(cached, "status"), "running") == 0)
                leaf_job_finished(e, cmd, cached);
        /* Asked when an event reported the job's end, else once per poll_interval: every other
         * command's progress queues rounds, and a call per round per job was most of a move's calls. */
        if (!engine_job_ended(js(cmd, "agent_job_id")) && !poll_due(e, js(cmd, "id")))
                return;
        engine_cmd_call(e, cmd, js(cmd, "host"), "Host.getJobs",
                 json_pack("{s:[s]}", "job_ids", js(cmd, "agent_job_id")),
                 e->config.host_timeout, on_leaf_jobs, NULL, NULL);
}

/* ---- recovery of a copy whose host is lost or forgot the job (DESIGN §7) ---- */

/* Any usable host but `not` (which may be NULL); NULL if none. */
static char *other_usable_host(struct engine *e, const char *not)
{
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);

        for (guint i = 0; i < hosts->len; i++)
                if (!not || strcmp(hosts->pdata[i], not) != 0)
                        return g_strdup(hosts->pdata[i]);
        return NULL;
}

static json_t *dst_of(json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        return json_incref(json_object_get(p, "dst"));
}

static void copy_lost(struct engine *e, json_t *cmd, json_t *data, const char *why)
{
        if (!json_object_get(data, "lost_since")) {
                json_object_set_new(data, "lost_since", json_integer(engine_now()));
                leaf_save(e, cmd, data);
                engine_event(e, "warning", js(cmd, "id"),
                             "%s job %s: host %s unreachable (%s); reading the destination through other hosts, "
                             "fencing after %u s", job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"), why,
                             e->config.host_lost_timeout);
        }
        copy_probe(e, cmd, data);
}

static void on_fence_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = NULL;

        if (!error || engine_is_transport_error(error))
                return;        /* watched (or found missing) in the next rounds */
        data = jparse(cmd, "data");
        json_object_del(data, "fence_job");
        json_object_del(data, "fence_host");
        leaf_later(e, cmd, data, backoff(ji(data, "fence_attempts")));
        g_message("fencing %s refused: %s", js(cmd, "id"), error->message);
}

/*
 * Fences the lost job: on another host, SDM.update_volume moves the
 * destination's generation from the recorded one to recorded+3. It needs the
 * volume lease, so it succeeds only once the old job cannot write any more
 * (its process exited, or its host's sanlock lease expired); from then on
 * the old job can never mark the volume done (DESIGN §6).
 */
static bool fence_expired(struct engine *e, json_t *cmd, json_t *data)
{
        g_autofree char *why = NULL;

        if (!json_object_get(data, "fence_started") ||
            engine_now() - ji(data, "fence_started") <= (gint64) e->config.fence_timeout)
                return false;
        why = g_strdup_printf("the copy on host %s could not be fenced within %u s (its lease is still held); "
                              "the destination stays ILLEGAL and is removed once the lease is free",
                              js(cmd, "host"), e->config.fence_timeout);
        leaf_finish(e, cmd, false, why);
        return true;
}

static void copy_fence(struct engine *e, json_t *cmd, json_t *data, const char *probe_host)
{
        g_autoptr(json_t) dst = dst_of(cmd);
        g_autofree char *job_id = fy_uuid_new();
        gint64 rec = ji(cmd, "generation");

        if (!json_object_get(data, "fence_started")) {
                json_object_set_new(data, "fence_started", json_integer(engine_now()));
                engine_event(e, "warning", js(cmd, "id"),
                             "fencing %s job %s of host %s: destination %s generation %" G_GINT64_FORMAT " → %" G_GINT64_FORMAT
                             " through host %s", job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"),
                             js(dst, "vol"),
                             rec, engine_generation_fenced(rec), probe_host);
        } else if (fence_expired(e, cmd, data)) {
                return;
        }
        json_object_set_new(data, "fence_job", json_string(job_id));
        json_object_set_new(data, "fence_host", json_string(probe_host));
        json_object_set_new(data, "fence_attempts", json_integer(ji(data, "fence_attempts") + 1));
        leaf_save(e, cmd, data);        /* recorded before the call, like every decision */
        engine_cmd_call(e, cmd, probe_host, "SDM.update_volume",
                 json_pack("{s:s, s:{s:s, s:s, s:s, s:I}, s:{s:I}}", "job_id", job_id,
                           "vol_info", "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "vol_id", js(dst, "vol"),
                           "generation", (json_int_t) rec,
                           "vol_attr", "generation", (json_int_t) engine_generation_fenced(rec)),
                 e->config.host_timeout, on_fence_sent, NULL, NULL);
}

struct probe_ctx {
        char *host;
};

static void probe_ctx_free(void *p)
{
        struct probe_ctx *c = p;

        g_free(c->host);
        g_free(c);
}

static void on_copy_probe(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        struct probe_ctx *c = extra;
        g_autoptr(json_t) data = jparse(cmd, "data");
        gint64 rec = ji(cmd, "generation"), gen;
        json_t *owners;
        bool lost_long, missing = json_is_true(json_object_get(data, "missing"));

        if (error && (error->code == FY_ERR_VOLUME_DOES_NOT_EXIST || error->code == FY_ERR_IMAGE_DOES_NOT_EXIST)) {
                leaf_finish(e, cmd, false, "the destination volume is gone; the copy cannot complete");
                return;
        }
        if (fence_expired(e, cmd, data))
                return;
        if (error) {
                leaf_later(e, cmd, data, 5);
                return;
        }
        gen = ji(result, "generation");
        owners = json_object_get(json_object_get(result, "lease"), "owners");
        if (gen == engine_generation_done(rec) && g_strcmp0(js(result, "legality"), "LEGAL") == 0) {
                g_autoptr(json_t) done = json_pack("{s:s}", "status", "done");

                engine_event(e, "normal", js(cmd, "id"), "%s job %s of host %s finished: learned from storage "
                             "(destination LEGAL, generation %" G_GINT64_FORMAT ")", job_noun(cmd),
                             js(cmd, "agent_job_id"), js(cmd, "host"), gen);
                leaf_job_finished(e, cmd, done);
                return;
        }
        if (gen != rec) {
                /* recorded+3 is our fence; anything else is someone else's change: this try is over either way. */
                g_autofree char *why = g_strdup_printf("%s job %s of host %s was fenced (destination generation %" G_GINT64_FORMAT
                                                       ", recorded %" G_GINT64_FORMAT ")", job_noun(cmd),
                                                       js(cmd, "agent_job_id"),
                                                       js(cmd, "host"), gen, rec);
                leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
                return;
        }
        lost_long = engine_now() - ji(data, "lost_since") >= (gint64) e->config.host_lost_timeout;
        if (!missing && !lost_long) {
                leaf_later(e, cmd, data, 5);     /* the host may come back: keep waiting */
                return;
        }
        if (missing && owners && json_array_size(owners) > 0 && !lost_long) {
                leaf_later(e, cmd, data, 5);     /* someone still holds the lease: not over yet */
                return;
        }
        copy_fence(e, cmd, data, c->host);
}

static void copy_probe(struct engine *e, json_t *cmd, json_t *data)
{
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        g_autoptr(json_t) dst = dst_of(cmd);
        g_autofree char *host = other_usable_host(e, js(cmd, "host"));
        struct probe_ctx *c;

        if (!host && json_is_true(json_object_get(data, "missing")) && host_is_up(e, js(cmd, "host")))
                host = g_strdup(js(cmd, "host"));     /* it answers, just without the job */
        if (!host) {
                leaf_later(e, cmd, data, 5);            /* nobody to read storage through yet */
                return;
        }
        c = g_new0(struct probe_ctx, 1);
        c->host = g_strdup(host);
        engine_cmd_call(e, cmd, host, "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(dst, "sd"),
                           "imageID", js(dst, "img"), "volumeID", js(dst, "vol")),
                 e->config.host_timeout, on_copy_probe, c, probe_ctx_free);
}

static void on_fence_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *job = result ? json_object_get(result, js(data, "fence_job")) : NULL;
        const char *status = js(job, "status");
        gint64 code = ji(json_object_get(job, "error"), "code");

        if (job && (!status || strcmp(status, "running") == 0 || strcmp(status, "pending") == 0)) {
                fence_expired(e, cmd, data);
                return;        /* not decided yet */
        }
        json_object_del(data, "fence_job");
        json_object_del(data, "fence_host");
        if (job && strcmp(status, "done") == 0) {
                engine_metrics_count_fence();
                engine_event(e, "normal", js(cmd, "id"), "fenced %s job %s of host %s", job_noun(cmd),
                             js(cmd, "agent_job_id"), js(cmd, "host"));
                leaf_save(e, cmd, data);
                copy_probe(e, cmd, data);      /* reads recorded+3 and ends this try */
                return;
        }
        if (job && code == FY_ERR_GENERATION_MISMATCH) {
                leaf_save(e, cmd, data);       /* the generation moved: the job finished after all? read it */
                copy_probe(e, cmd, data);
                return;
        }
        /* Lease still held (651) or the fence host failed: later, with backoff. */
        if (job && code == FY_ERR_LEASE_ACQUIRE && ji(data, "fence_attempts") % 6 == 1)
                engine_event(e, "normal", js(cmd, "id"), "fencing %s job %s: its lease is still held; "
                             "retrying until the holder's sanlock lease expires", job_noun(cmd), js(cmd, "agent_job_id"));
        leaf_later(e, cmd, data, backoff(ji(data, "fence_attempts")));
}

static void fence_watch(struct engine *e, json_t *cmd, json_t *data)
{
        engine_cmd_call(e, cmd, js(data, "fence_host"), "Host.getJobs", json_pack("{s:[s]}", "job_ids", js(data, "fence_job")),
                 e->config.host_timeout, on_fence_jobs, NULL, NULL);
}

/* create_volume_container */

static void volume_container_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *job_id = NULL;
        g_autofree char *size = NULL;
        g_autoptr(json_t) dc = NULL;

        if (!spm) {
                engine_step_wait(e, js(cmd, "step_id"), "waiting for the SPM");
                return;        /* no SPM now: wait for the election */
        }
        dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        job_id = leaf_mark_sent(e, cmd, spm, -1);
        if (!job_id)
                return;
        engine_step_update(e, js(cmd, "step_id"), "started", 0, spm);
        size = g_strdup_printf("%" G_GINT64_FORMAT, ji(p, "size"));
        engine_cmd_call(e, cmd, spm, "Volume.create",
                 json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
                           "job_id", job_id,
                           "storagepoolID", js(dc, "pool_id"),
                           "storagedomainID", js(p, "sd"),
                           "imageID", js(p, "img"),
                           "volumeID", js(p, "vol"),
                           "size", size,
                           "volFormat", strcmp(js(p, "format"), "cow") == 0 ? "COW" : "RAW",
                           "preallocate", json_is_true(json_object_get(p, "sparse")) ? "SPARSE" : "PREALLOCATED",
                           "diskType", "DATA",
                           "desc", "",
                           "srcImgUUID", js(p, "img"),
                           "srcVolUUID", js(p, "parent") ? js(p, "parent") : FY_ZERO_UUID),
                 SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
}

/*
 * An SPM leaf about to call: waits for an election (NULL), else records the
 * SPM and a new agent job id before the call (returned), with the pool row.
 */
static char *spm_mark_sent(struct engine *e, json_t *cmd, const char *spm, json_t **ret_dc)
{
        char *job_id;

        if (!spm) {
                engine_step_wait(e, js(cmd, "step_id"), "waiting for the SPM");
                return NULL;
        }
        *ret_dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        job_id = leaf_mark_sent(e, cmd, spm, -1);
        if (job_id)
                engine_step_update(e, js(cmd, "step_id"), "started", 0, spm);
        return job_id;
}

/* remove_image */

static void remove_image_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *job_id = NULL;
        g_autoptr(json_t) dc = NULL;
        g_autoptr(json_t) data = jparse(cmd, "data");

        if (ji(data, "next_try") > engine_now())
                return;
        if (persistent(cmd) && engine_image_in_use(e, js(p, "sd"), js(p, "img"), js(cmd, "id"))) {
                /* A background removal runs late: the image may be a disk again (a retried move
                 * reuses the ids). Removing it now would destroy that disk. */
                engine_event(e, "normal", js(cmd, "id"), "image %s on storage domain %s is in use again; "
                             "not removing it", js(p, "img"), js(p, "sd"));
                leaf_finish(e, cmd, true, NULL);
                return;
        }
        job_id = spm_mark_sent(e, cmd, spm, &dc);
        if (!job_id)
                return;
        engine_cmd_call(e, cmd, spm, "Image.delete",
                 json_pack("{s:s, s:s, s:s, s:s}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "storagedomainID", js(p, "sd"), "imageID", js(p, "img")),
                 SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
}

/*
 * prepare_merge / finalize_merge {sd, img, top, base, generation?} and
 * remove_volume {sd, img, vol}: SPM jobs on one subchain or volume.
 */
static void spm_volume_job_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *job_id = NULL;
        g_autoptr(json_t) dc = NULL;
        g_autoptr(json_t) data = jparse(cmd, "data");
        enum engine_kind kind = engine_cmd_kind(cmd);
        json_t *params;

        if (ji(data, "next_try") > engine_now())
                return;
        job_id = spm_mark_sent(e, cmd, spm, &dc);
        if (!job_id)
                return;
        if (kind == ENGINE_KIND_REMOVE_VOLUME) {
                params = json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                                   "storagedomainID", js(p, "sd"), "imageID", js(p, "img"), "volumeID", js(p, "vol"));
                engine_cmd_call(e, cmd, spm, "Volume.delete", params, SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
                return;
        }
        params = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "subchainInfo", "sd_id", js(p, "sd"), "img_id", js(p, "img"), "top_id", js(p, "top"),
                           "base_id", js(p, "base"));
        if (json_object_get(p, "generation"))
                json_object_set(json_object_get(params, "subchainInfo"), "base_generation", json_object_get(p, "generation"));
        engine_cmd_call(e, cmd, spm, kind == ENGINE_KIND_PREPARE_MERGE ? "StoragePool.prepareMerge"
                                                                       : "StoragePool.finalizeMerge",
                        params, SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
}

/* copy_data: pick a host, record the destination's generation, then start the copy. */

static json_t *endpoint(json_t *ep, gint64 generation)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "endpoint_type", "div", "sd_id", js(ep, "sd"),
                              "img_id", js(ep, "img"), "vol_id", js(ep, "vol"));

        if (generation >= 0)
                json_object_set_new(o, "generation", json_integer(generation));
        return o;
}

/* What a host job sends, with the generation read just before. */
static const char *host_job_method(struct engine *e, json_t *cmd, json_t *p, const char *host, gint64 gen)
{
        json_t *dst = json_object_get(p, "dst");

        switch (engine_cmd_kind(cmd)) {
        case ENGINE_KIND_MERGE:
                engine_event(e, "normal", js(cmd, "id"), "merging volume %s into its parent %s on host %s "
                             "(base generation %" G_GINT64_FORMAT ")", js(p, "top"), js(dst, "vol"), host, gen);
                return "SDM.merge";
        case ENGINE_KIND_SPARSIFY_VOLUME:
                engine_event(e, "normal", js(cmd, "id"), "sparsifying volume %s on host %s (generation %" G_GINT64_FORMAT ")",
                             js(dst, "vol"), host, gen);
                return "SDM.sparsify_volume";
        default:
                engine_event(e, "normal", js(cmd, "id"), "copying volume %s to %s on host %s (destination generation %"
                             G_GINT64_FORMAT ")", js(json_object_get(p, "src"), "vol"), js(dst, "sd"), host, gen);
                return "SDM.copy_data";
        }
}

static json_t *host_job_params(json_t *p, enum engine_kind kind, const char *job_id, gint64 gen)
{
        json_t *dst = json_object_get(p, "dst");

        if (kind == ENGINE_KIND_MERGE)
                return json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:I}}", "job_id", job_id, "subchain_info",
                                 "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "top_id", js(p, "top"),
                                 "base_id", js(dst, "vol"), "base_generation", (json_int_t) gen);
        if (kind == ENGINE_KIND_SPARSIFY_VOLUME)
                return json_pack("{s:s, s:{s:s, s:s, s:s, s:I}}", "job_id", job_id, "vol_info",
                                 "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "vol_id", js(dst, "vol"),
                                 "generation", (json_int_t) gen);
        return json_pack("{s:s, s:o, s:o}", "job_id", job_id, "source", endpoint(json_object_get(p, "src"), -1),
                         "destination", endpoint(dst, gen));
}

static void on_copy_generation(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *host = extra;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autofree char *job_id = NULL;
        gint64 gen;

        if (error) {
                if (engine_is_transport_error(error))
                        return;        /* try again next round, maybe on another host */
                leaf_finish(e, cmd, false, error->message);
                return;
        }
        gen = json_integer_value(json_object_get(result, "generation"));
        job_id = leaf_mark_sent(e, cmd, host, gen);
        if (!job_id)
                return;
        engine_step_update(e, js(cmd, "step_id"), "started", 0, host);
        engine_cmd_call(e, cmd, host, host_job_method(e, cmd, p, host, gen),
                        host_job_params(p, engine_cmd_kind(cmd), job_id, gen), COPY_CALL_TIMEOUT_MS, on_leaf_sent, NULL,
                        NULL);
}

static void copy_data_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *host = NULL;
        g_autoptr(json_t) dc = NULL;
        json_t *dst = json_object_get(p, "dst");
        double bytes;

        if (ji(cmd, "cancel")) {
                leaf_finish(e, cmd, false, "cancelled");
                return;
        }
        if (ji(data, "next_try") > engine_now())
                return;
        /* Hosts that failed this copy before come last: another one if any can take it. */
        bytes = json_number_value(json_object_get(p, "bytes"));
        host = engine_pick_copy_host_sized(e, json_object_get(data, "exclude"), bytes, ji(cmd, "created"));
        if (!host && json_array_size(json_object_get(data, "exclude")) > 0)
                host = engine_pick_copy_host_sized(e, NULL, bytes, ji(cmd, "created"));

        if (!host) {
                /* Every usable host is at its job limit (or none is up), or the copy waits for a busy
                 * fast host (hostsched.h): offered again each round until one takes it. */
                engine_step_wait(e, js(cmd, "step_id"), "waiting for a host");
                return;
        }
        /* Counted against the host from now on, so this round's next pick sees it. */
        g_hash_table_replace(e->picking, g_strdup(js(cmd, "id")), engine_pick_new(host, bytes));
        dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        engine_cmd_call(e, cmd, host, "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(dst, "sd"),
                           "imageID", js(dst, "img"), "volumeID", js(dst, "vol")),
                 e->config.host_timeout, on_copy_generation, g_strdup(host), g_free);
}

static void on_finalize_verify(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (engine_is_transport_error(error))
                return;        /* the next round asks again */
        if (result && g_strcmp0(js(result, "legality"), "ILLEGAL") == 0) {
                engine_event(e, "normal", js(cmd, "id"), "finalize_merge: top volume already left the chain "
                             "(an earlier try finished)");
                engine_cmd_finish(e, cmd, true, NULL);
                return;
        }
        engine_cmd_finish(e, cmd, false, extra);
}

/* Top ILLEGAL after a finalize that answered 252 on a resend: the finalize had completed. */
static void finalize_verify(struct engine *e, json_t *cmd, const char *why)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);

        engine_cmd_call(e, cmd, js(cmd, "host"), "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(p, "sd"),
                           "imageID", js(p, "img"), "volumeID", js(p, "top")),
                 e->config.host_timeout, on_finalize_verify, g_strdup(why), g_free);
}

/* The job is known to the host: running → progress, done/failed → finish. */
static void leaf_job_finished(struct engine *e, json_t *cmd, json_t *job)
{
        const char *status = js(job, "status") ? js(job, "status") : "unknown";
        enum engine_kind kind = engine_cmd_kind(cmd);
        g_autoptr(GError) store_error = NULL;

        if (strcmp(status, "done") == 0) {
                if (kind == ENGINE_KIND_CREATE_VOLUME_CONTAINER) {
                        g_autoptr(json_t) p = jparse(cmd, "params");

                        /* A copy's destination stays ILLEGAL in the inventory until its data is there. */
                        if (json_is_true(json_object_get(p, "legal_when_created")) &&
                            engine_store_volume_set_legal(e->db, js(p, "vol"), js(p, "sd"), -1, &store_error) < 0) {
                                engine_not_recorded(&store_error, "the volume's legality", js(cmd, "id"));
                                return;        /* decided again from the job next round */
                        }
                }
                if (host_job(kind)) {
                        g_autoptr(json_t) p = jparse(cmd, "params");
                        json_t *dst = json_object_get(p, "dst");

                        if (verify_begin(e, cmd))
                                return;        /* declared done once both sides hash the same */
                        if (engine_store_volume_set_legal(e->db, js(dst, "vol"), js(dst, "sd"),
                                                          engine_generation_done(ji(cmd, "generation")), &store_error) < 0) {
                                engine_not_recorded(&store_error, "the volume's legality", js(cmd, "id"));
                                return;        /* decided again from the job next round */
                        }
                }
                if (kind == ENGINE_KIND_CHECKSUM_VOLUME) {
                        json_t *res = json_object_get(job, "result");
                        g_autoptr(json_t) p = jparse(cmd, "params");

                        if (!js(res, "checksum") || strlen(js(res, "checksum")) > 256) {
                                leaf_finish(e, cmd, false, "the host's checksum job has no usable result");
                                return;
                        }
                        if (engine_store_step_set_checksum(e->db, js(cmd, "step_id"), js(res, "checksum"), false,
                                                           &store_error) < 0) {
                                engine_not_recorded(&store_error, "the checksum", js(cmd, "id"));
                                return;
                        }
                        engine_event(e, "normal", js(cmd, "id"), "volume %s: blake2b %s (%" G_GINT64_FORMAT " bytes, generation %"
                                     G_GINT64_FORMAT ")", js(p, "vol"), js(res, "checksum"),
                                     ji(res, "size"), ji(res, "generation"));
                }
                leaf_finish(e, cmd, true, NULL);
        } else if (strcmp(status, "failed") == 0 || strcmp(status, "aborted") == 0) {
                json_t *err = json_object_get(job, "error");
                gint64 code = ji(err, "code");
                g_autofree char *why = g_strdup_printf("%s on host %s: %s (code %" G_GINT64_FORMAT ")",
                                                       status, js(cmd, "host"),
                                                       js(err, "message") ? js(err, "message") : "no message", code);

                if ((kind == ENGINE_KIND_REMOVE_IMAGE && code == FY_ERR_IMAGE_DOES_NOT_EXIST) ||
                    (kind == ENGINE_KIND_REMOVE_VOLUME && code == FY_ERR_VOLUME_DOES_NOT_EXIST)) {
                        engine_cmd_finish(e, cmd, true, NULL);        /* already gone */
                        return;
                }
                if (kind == ENGINE_KIND_FINALIZE_MERGE && code == FY_ERR_MERGE && ji(cmd, "attempts") > 1) {
                        /* A resend after an SPM change: the first one may have finished (base then has
                         * two children, top and the re-pointed one): storage decides. */
                        finalize_verify(e, cmd, why);
                        return;
                }
                /* A copy that lost its generation race or was aborted is not retried blindly,
                 * unless the engine aborted it for stalling (stall.c) and nobody cancelled it. */
                /* Out of space stays out of space on any host. */
                if (kind == ENGINE_KIND_CHECKSUM_VOLUME && code != FY_ERR_GENERATION_MISMATCH && code != FY_ERR_COPY)
                        leaf_retry_or_fail(e, cmd, 3, why, true);        /* another host reads it */
                else if (host_job(kind) && !refused_everywhere(code) &&
                         (strcmp(status, "aborted") != 0 || engine_stall_abort(cmd)))
                        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
                else
                        leaf_finish(e, cmd, false, why);
        } else {
                double progress = json_number_value(json_object_get(job, "progress"));

                engine_step_update(e, js(cmd, "step_id"), "started", progress, NULL);
                engine_job_progress_refresh(e, js(cmd, "job_id"));
                if (host_job(kind))
                        engine_stall_check(e, cmd, status, progress);
        }
}

static void on_volume_deleted(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        /* Created again from scratch once the half-made one is gone (a retry sees 205 until then). */
        if (error)
                g_message("removing half-made volume of %s: %s", js(cmd, "id"), error->message);
        leaf_retry_or_fail(e, cmd, 5, "the volume was half-made when the SPM changed; made again", false);
}

/* The volume on storage is the one this command creates: same capacity, format and parent. */
static bool volume_matches(json_t *info, json_t *p)
{
        const char *parent = js(info, "parent");
        const char *want_parent = js(p, "parent") ? js(p, "parent") : FY_ZERO_UUID;

        return ji(info, "capacity") == ji(p, "size") && g_strcmp0(parent, want_parent) == 0 &&
               g_ascii_strcasecmp(js(info, "format") ? js(info, "format") : "",
                                  strcmp(js(p, "format"), "cow") == 0 ? "COW" : "RAW") == 0;
}

static void on_created_verify(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *spm = extra;
        g_autoptr(json_t) p = NULL;
        g_autoptr(json_t) dc = NULL;
        g_autofree char *job_id = NULL;

        if (engine_is_transport_error(error))
                return;
        p = jparse(cmd, "params");
        if (result && g_strcmp0(js(result, "legality"), "LEGAL") == 0 && volume_matches(result, p)) {
                g_autoptr(json_t) done = json_pack("{s:s}", "status", "done");

                leaf_job_finished(e, cmd, done);
                return;
        }
        if (error) {
                /* Not there at all: the request never got far; create it again. */
                leaf_retry_or_fail(e, cmd, 5, error->message, false);
                return;
        }
        /* ILLEGAL (half-made by a job that is gone) or not the volume asked for (a leftover
         * with the same ids): remove it, then create it again. */
        dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        job_id = fy_uuid_new();
        engine_event(e, "warning", js(cmd, "id"), "volume %s was left half-made; removing it before creating it again",
                     js(p, "vol"));
        engine_cmd_call(e, cmd, spm, "Volume.delete",
                 json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "storagedomainID", js(p, "sd"), "imageID", js(p, "img"), "volumeID", js(p, "vol")),
                 SPM_CALL_TIMEOUT_MS, on_volume_deleted, NULL, NULL);
}

static void verify_volume_created(struct engine *e, json_t *cmd, const char *host)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);

        engine_cmd_call(e, cmd, host, "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(p, "sd"),
                           "imageID", js(p, "img"), "volumeID", js(p, "vol")),
                 e->config.host_timeout, on_created_verify, g_strdup(host), g_free);
}

static void on_removed_verify(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (engine_is_transport_error(error))
                return;
        if (error && error->code == FY_ERR_IMAGE_DOES_NOT_EXIST)
                leaf_finish(e, cmd, true, NULL);        /* gone is success */
        else
                leaf_retry_or_fail(e, cmd, 5, "image removal did not finish", false);
}

static bool spm_job_repeatable(enum engine_kind k)
{
        return k == ENGINE_KIND_PREPARE_MERGE || k == ENGINE_KIND_FINALIZE_MERGE || k == ENGINE_KIND_REMOVE_VOLUME;
}

/*
 * The host answered without the job (the agent restarted), or the SPM
 * changed under a metadata job: learn the outcome from storage.
 */
static void leaf_job_missing(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = NULL;
        g_autofree char *spm = NULL;
        enum engine_kind kind = engine_cmd_kind(cmd);

        if (host_job(kind)) {
                data = jparse(cmd, "data");
                if (!json_is_true(json_object_get(data, "missing"))) {
                        json_object_set_new(data, "missing", json_true());
                        leaf_save(e, cmd, data);
                        engine_event(e, "warning", js(cmd, "id"), "host %s no longer knows %s job %s; "
                                     "deciding from the destination volume", js(cmd, "host"),
                                     job_noun(cmd), js(cmd, "agent_job_id"));
                }
                copy_probe(e, cmd, data);
                return;
        }
        if (kind == ENGINE_KIND_CHECKSUM_VOLUME) {
                /* Nothing was written: hash it again, on another host if one is up. */
                leaf_retry_or_fail(e, cmd, 3, "the host no longer knows the checksum job", true);
                return;
        }
        spm = engine_spm_host(e);
        if (!spm)
                return;        /* after the election */
        if (spm_job_repeatable(kind)) {
                /* Each runs again safely: prepare finds base ILLEGAL at the same generation,
                 * finalize finds top ILLEGAL, a second delete answers 201 (= done). */
                leaf_retry_or_fail(e, cmd, 5, "the SPM no longer knows the job; sending it again", false);
                return;
        }
        if (kind == ENGINE_KIND_REMOVE_IMAGE) {
                engine_cmd_call(e, cmd, spm, "StorageDomain.getVolumes",
                         json_pack("{s:s, s:s}", "storagedomainID", js(p, "sd"), "imageID", js(p, "img")),
                         e->config.host_timeout, on_removed_verify, NULL, NULL);
                return;
        }
        verify_volume_created(e, cmd, spm);
}

/*
 * ---- verification of a finished copy (issue 16) ----
 *
 * A copy whose job ended done is not declared done yet: the source and the
 * destination are hashed (Volume.checksum, the guest-visible content), the
 * destination on another host than the copier where one is up, so the check
 * is an independent read. data.verify records both sides (host, agent job,
 * generation, digest once known) before any checksum is sent; a restart
 * finds it and the next round asks the hosts about those jobs (a job the
 * host does not know is sent, again with the same id: JOB_EXISTS means it
 * arrived). Equal digests: done, the step records verified and the digest.
 * Different: the destination is marked ILLEGAL and the copy is tried again
 * (copy_attempts). A checksum job that fails or whose host is lost is tried
 * again on another host, VERIFY_TRIES times per side.
 */
#define VERIFY_TRIES 3

static const char *const verify_sides[] = { "src", "dst" };

static json_t *checksum_params(json_t *ep, const char *job_id, gint64 generation)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", job_id, "sd_id", js(ep, "sd"),
                              "img_id", js(ep, "img"), "vol_id", js(ep, "vol"), "algorithm", "blake2b");

        if (generation >= 0)
                json_object_set_new(o, "generation", json_integer(generation));
        return o;
}

static json_t *verify_side_new(const char *host, gint64 generation)
{
        g_autofree char *job = fy_uuid_new();
        json_t *s = json_pack("{s:s, s:s, s:i}", "host", host, "job", job, "tries", 1);

        if (generation >= 0)
                json_object_set_new(s, "generation", json_integer(generation));
        return s;
}

/* Starts verification of a copy whose job is done; false when it is off for this copy. */
static bool verify_begin(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *dst_host = NULL;
        const char *copier = js(cmd, "host");

        if (!e->config.verify_copies || json_is_false(json_object_get(p, "verify")))
                return false;
        dst_host = other_usable_host(e, copier);
        if (!dst_host)
                dst_host = g_strdup(copier);   /* the only host up: still catches a bad write, not a bad read */
        json_object_set_new(data, "verify", json_pack("{s:o, s:o}",
                                                      "src", verify_side_new(host_is_up(e, copier) ? copier : dst_host, -1),
                                                      "dst", verify_side_new(dst_host, engine_generation_done(ji(cmd, "generation")))));
        engine_event(e, "normal", js(cmd, "id"), "copy of volume %s done on host %s; verifying: source on host %s, "
                     "destination on host %s", js(json_object_get(p, "src"), "vol"), copier,
                     js(json_object_get(json_object_get(data, "verify"), "src"), "host"), dst_host);
        leaf_save(e, cmd, data);       /* recorded before any checksum is sent; the next round sends them */
        engine_kick(e);
        return true;
}

/* The side's checksum failed or its host is gone: another host, a bounded number of times. */
static void verify_side_retry(struct engine *e, json_t *cmd, json_t *data, const char *side, const char *why)
{
        json_t *v = json_object_get(data, "verify");
        json_t *s = json_object_get(v, side);
        g_autofree char *host = other_usable_host(e, js(s, "host"));
        g_autofree char *job = fy_uuid_new();

        if (ji(s, "tries") >= VERIFY_TRIES) {
                g_autofree char *msg = g_strdup_printf("the copy could not be verified: checksum of the %s failed %d times (%s)",
                                                       strcmp(side, "src") == 0 ? "source" : "destination", VERIFY_TRIES, why);

                leaf_finish(e, cmd, false, msg);
                return;
        }
        if (!host)
                host = g_strdup(js(s, "host"));
        engine_event(e, "warning", js(cmd, "id"), "checksum of the %s on host %s: %s; trying again on host %s",
                     side, js(s, "host"), why, host);
        json_object_set_new(s, "host", json_string(host));
        json_object_set_new(s, "job", json_string(job));
        json_object_set_new(s, "tries", json_integer(ji(s, "tries") + 1));
        leaf_later(e, cmd, data, 1);
}

static void on_marked_illegal(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *v = json_object_get(data, "verify");
        g_autofree char *why = g_strdup_printf("checksum mismatch: source %s, destination %s",
                                               js(json_object_get(v, "src"), "checksum"),
                                               js(json_object_get(v, "dst"), "checksum"));

        if (engine_is_transport_error(error))
                return;        /* sent again next round (still recorded as a mismatch) */
        if (error)
                g_message("marking the destination of %s ILLEGAL: %s", js(cmd, "id"), error->message);
        /* The retry rewrites the destination from scratch at the generation it finds. */
        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
}

static void verify_mismatch(struct engine *e, json_t *cmd, json_t *data)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *dst = json_object_get(p, "dst");
        json_t *d = json_object_get(json_object_get(data, "verify"), "dst");
        g_autofree char *job = fy_uuid_new();

        if (!json_is_true(json_object_get(data, "mismatch"))) {
                json_object_set_new(data, "mismatch", json_true());
                leaf_save(e, cmd, data);
                engine_event(e, "warning", js(cmd, "id"), "copy of volume %s: the destination's checksum %s differs from the "
                             "source's %s; marking it ILLEGAL and copying again", js(json_object_get(p, "src"), "vol"),
                             js(d, "checksum"), js(json_object_get(json_object_get(data, "verify"), "src"), "checksum"));
        }
        /* ILLEGAL on storage too, so nothing uses it (and its checksum is refused) until a copy is done. */
        engine_cmd_call(e, cmd, js(d, "host"), "SDM.update_volume",
                 json_pack("{s:s, s:{s:s, s:s, s:s, s:I}, s:{s:s}}", "job_id", job,
                           "vol_info", "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "vol_id", js(dst, "vol"),
                           "generation", (json_int_t) ji(d, "generation"),
                           "vol_attr", "legality", "ILLEGAL"),
                 e->config.host_timeout, on_marked_illegal, NULL, NULL);
}

static void verify_decide(struct engine *e, json_t *cmd, json_t *data)
{
        json_t *v = json_object_get(data, "verify");
        const char *src_sum = js(json_object_get(v, "src"), "checksum");
        const char *dst_sum = js(json_object_get(v, "dst"), "checksum");
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *dst = json_object_get(p, "dst");
        g_autoptr(GError) store_error = NULL;

        if (strcmp(src_sum, dst_sum) != 0) {
                verify_mismatch(e, cmd, data);
                return;
        }
        if (engine_store_volume_set_legal(e->db, js(dst, "vol"), js(dst, "sd"),
                                          engine_generation_done(ji(cmd, "generation")), &store_error) < 0 ||
            engine_store_step_set_checksum(e->db, js(cmd, "step_id"), dst_sum, true, &store_error) < 0) {
                engine_not_recorded(&store_error, "the verified copy", js(cmd, "id"));
                return;        /* decided again next round */
        }
        engine_event(e, "normal", js(cmd, "id"), "copy of volume %s verified: blake2b %s", js(json_object_get(p, "src"), "vol"),
                     dst_sum);
        leaf_finish(e, cmd, true, NULL);
}

static void on_checksum_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *side = extra;
        g_autoptr(json_t) data = jparse(cmd, "data");

        if (!error || engine_is_transport_error(error) || error->code == FY_ERR_JOB_EXISTS) {
                engine_kick(e);
                return;        /* watched (or asked about) next round */
        }
        if (json_object_get(data, "verify"))
                verify_side_retry(e, cmd, data, side, error->message);
}

static void on_verify_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *side = extra;
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autoptr(json_t) p = NULL;
        json_t *v = json_object_get(data, "verify");
        json_t *s = json_object_get(v, side);
        json_t *job;

        if (!s || json_is_true(json_object_get(data, "mismatch")) || js(s, "checksum"))
                return;        /* this round's answer came late */
        if (error) {
                if (!host_is_up(e, js(s, "host")))
                        verify_side_retry(e, cmd, data, side, error->message);
                return;        /* asked again next round */
        }
        job = json_object_get(result, js(s, "job"));
        if (!job) {
                /* Not sent yet (recorded first), or sent before a restart and lost with an agent restart. */
                p = jparse(cmd, "params");
                engine_cmd_call(e, cmd, js(s, "host"), "Volume.checksum",
                         checksum_params(json_object_get(p, side), js(s, "job"),
                                         json_is_integer(json_object_get(s, "generation")) ? ji(s, "generation") : -1),
                         e->config.host_timeout, on_checksum_sent, (void *) side, NULL);
                return;
        }
        if (g_strcmp0(js(job, "status"), "done") == 0) {
                json_t *res = json_object_get(job, "result");

                if (!js(res, "checksum") || strlen(js(res, "checksum")) > 256) {
                        verify_side_retry(e, cmd, data, side, "the host's checksum job has no usable result");
                        return;
                }
                json_object_set_new(s, "checksum", json_string(js(res, "checksum")));
                leaf_save(e, cmd, data);
                if (js(json_object_get(v, "src"), "checksum") && js(json_object_get(v, "dst"), "checksum"))
                        verify_decide(e, cmd, data);
        } else if (g_strcmp0(js(job, "status"), "failed") == 0 || g_strcmp0(js(job, "status"), "aborted") == 0) {
                json_t *err = json_object_get(job, "error");
                g_autofree char *why = g_strdup_printf("%s (code %" G_GINT64_FORMAT ")",
                                                       js(err, "message") ? js(err, "message") : "no message", ji(err, "code"));

                if (strcmp(side, "dst") == 0 && ji(err, "code") == FY_ERR_GENERATION_MISMATCH) {
                        /* Someone wrote the destination after this copy: what was copied is not there any more. */
                        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, false);
                        return;
                }
                verify_side_retry(e, cmd, data, side, why);
        }
}

/*
 * A layer of a chain copied layer by layer: its checksum reads the chain
 * below it, so it is compared once the layers below are verified (LEGAL in
 * the inventory) — bottom up, each layer's guest view against the source's.
 */
static bool verify_below_ready(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *below = json_object_get(p, "below");
        const char *sd = js(json_object_get(p, "dst"), "sd");

        for (size_t i = 0; i < json_array_size(below); i++) {
                g_autofree char *legality = engine_store_volume_legality(e->db, json_string_value(json_array_get(below, i)),
                                                                         sd, NULL);

                if (g_strcmp0(legality, "LEGAL") != 0) {
                        engine_step_wait(e, js(cmd, "step_id"), "copied; verifying after the layers below it");
                        return false;
                }
        }
        return true;
}

static void verify_watch(struct engine *e, json_t *cmd, json_t *data)
{
        json_t *v = json_object_get(data, "verify");

        if (ji(cmd, "cancel")) {
                leaf_finish(e, cmd, false, "cancelled");
                return;
        }
        if (json_is_true(json_object_get(data, "mismatch"))) {
                verify_mismatch(e, cmd, data);
                return;
        }
        if (!verify_below_ready(e, cmd))
                return;
        for (size_t i = 0; i < G_N_ELEMENTS(verify_sides); i++) {
                json_t *s = json_object_get(v, verify_sides[i]);

                if (js(s, "checksum"))
                        continue;
                if (!host_is_up(e, js(s, "host")) && !host_status_is(e, js(s, "host"), "connecting")) {
                        verify_side_retry(e, cmd, data, verify_sides[i], "the host is not up");
                        return;
                }
                /* Like a copy's job: asked when an event reports its end, else once per poll_interval. */
                g_autofree char *key = g_strdup_printf("%s/%s", js(cmd, "id"), verify_sides[i]);

                if (!engine_job_ended(js(s, "job")) && !poll_due(e, key))
                        continue;
                engine_cmd_call(e, cmd, js(s, "host"), "Host.getJobs", json_pack("{s:[s]}", "job_ids", js(s, "job")),
                         e->config.host_timeout, on_verify_jobs, (void *) verify_sides[i], NULL);
        }
}

/* checksum_volume (ferry disk checksum): Volume.checksum of the disk's active volume on any host up. */
static void checksum_volume_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *host = NULL;
        g_autofree char *job_id = NULL;

        if (ji(data, "next_try") > engine_now())
                return;
        host = engine_pick_copy_host(e, json_object_get(data, "exclude"));
        if (!host && json_array_size(json_object_get(data, "exclude")) > 0)
                host = engine_pick_copy_host(e, NULL);
        if (!host) {
                engine_step_wait(e, js(cmd, "step_id"), "waiting for a host");
                return;
        }
        job_id = leaf_mark_sent(e, cmd, host, ji(p, "generation"));
        if (!job_id)
                return;
        engine_step_update(e, js(cmd, "step_id"), "started", 0, host);
        engine_cmd_call(e, cmd, host, "Volume.checksum", checksum_params(p, job_id, ji(p, "generation")),
                 e->config.host_timeout, on_leaf_sent, NULL, NULL);
}

static void leaf_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        if (engine_cmd_phase(cmd) == ENGINE_PHASE_SENT) {
                leaf_watch(e, cmd);
                return;
        }
        switch (engine_cmd_kind(cmd)) {
        case ENGINE_KIND_CREATE_VOLUME_CONTAINER:
                volume_container_start(e, cmd, p);
                break;
        case ENGINE_KIND_REMOVE_IMAGE:
                remove_image_start(e, cmd, p);
                break;
        case ENGINE_KIND_COPY_DATA:
        case ENGINE_KIND_MERGE:
        case ENGINE_KIND_SPARSIFY_VOLUME:
                copy_data_start(e, cmd, p);
                break;
        case ENGINE_KIND_CHECKSUM_VOLUME:
                checksum_volume_start(e, cmd, p);
                break;
        case ENGINE_KIND_PREPARE_MERGE:
        case ENGINE_KIND_FINALIZE_MERGE:
        case ENGINE_KIND_REMOVE_VOLUME:
                spm_volume_job_start(e, cmd, p);
                break;
        default:
                g_assert_not_reached();        /* registered for the kinds above only */
        }
}

void engine_flow_job_init(void)
{
        engine_flow_register(ENGINE_KIND_CREATE_VOLUME_CONTAINER, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_REMOVE_IMAGE, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_COPY_DATA, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_MERGE, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_SPARSIFY_VOLUME, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_PREPARE_MERGE, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_FINALIZE_MERGE, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_REMOVE_VOLUME, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_CHECKSUM_VOLUME, leaf_advance, false);
}
