/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The recovery of a leaf whose job is lost (flows/job.c draws where it
 * enters): a copy, merge or sparsify whose host stops answering or forgets
 * the job is decided from its destination volume, read through another
 * host (LEGAL at recorded+1: done), and fenced (recorded+3) before it is
 * tried elsewhere; a metadata job whose SPM changed or forgot it is decided
 * from storage through the new SPM (the volume as asked for, or the image
 * gone) or, where that is safe, sent again.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/leaf.h"
#include "generation.h"
#include "hosts.h"
#include "metrics.h"
#include "error.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

/* ---- recovery of a copy whose host is lost or forgot the job (DESIGN §7) ---- */

/* Any usable host but `not` (which may be NULL); NULL if none. */
char *leaf_other_usable_host(struct engine *e, const char *not)
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

void leaf_copy_lost(struct engine *e, json_t *cmd, json_t *data, const char *why)
{
        if (!json_object_get(data, "lost_since")) {
                json_object_set_new(data, "lost_since", json_integer(engine_now()));
                if (leaf_save(e, cmd, data) < 0)
                        return;        /* not recorded: no probe (nor fence) yet; next round */
                engine_event(e, "warning", js(cmd, "id"),
                             "%s job %s: host %s unreachable (%s); reading the destination through other hosts, "
                             "fencing after %u s", leaf_job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"), why,
                             e->config.host_lost_timeout);
        }
        leaf_copy_probe(e, cmd, data);
}

static void on_fence_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = NULL;

        if (!error || engine_is_transport_error(error))
                return;        /* watched (or found missing) in the next rounds */
        data = jparse(cmd, "data");
        json_object_del(data, "fence_job");
        json_object_del(data, "fence_host");
        leaf_later(e, cmd, data, leaf_backoff(ji(data, "fence_attempts")));
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
                             " through host %s", leaf_job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"),
                             js(dst, "vol"),
                             rec, engine_generation_fenced(rec), probe_host);
        } else if (fence_expired(e, cmd, data)) {
                return;
        }
        json_object_set_new(data, "fence_job", json_string(job_id));
        json_object_set_new(data, "fence_host", json_string(probe_host));
        json_object_set_new(data, "fence_attempts", json_integer(ji(data, "fence_attempts") + 1));
        if (leaf_save(e, cmd, data) < 0)
                return;        /* recorded before the call, like every decision: not recorded, not sent */
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
                             "(destination LEGAL, generation %" G_GINT64_FORMAT ")", leaf_job_noun(cmd),
                             js(cmd, "agent_job_id"), js(cmd, "host"), gen);
                leaf_job_finished(e, cmd, done);
                return;
        }
        if (gen != rec) {
                /* recorded+3 is our fence; anything else is someone else's change: this try is over either way. */
                g_autofree char *why = g_strdup_printf("%s job %s of host %s was fenced (destination generation %" G_GINT64_FORMAT
                                                       ", recorded %" G_GINT64_FORMAT ")", leaf_job_noun(cmd),
                                                       js(cmd, "agent_job_id"),
                                                       js(cmd, "host"), gen, rec);
                leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
                return;
        }
        /* A stall escalated to a fence (jobstall.c) is lost already, whatever any clock says. */
        lost_long = json_is_true(json_object_get(data, "stall_fence")) ||
                    engine_now() - ji(data, "lost_since") >= (gint64) e->config.host_lost_timeout;
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

void leaf_copy_probe(struct engine *e, json_t *cmd, json_t *data)
{
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        g_autoptr(json_t) dst = dst_of(cmd);
        g_autofree char *host = leaf_other_usable_host(e, js(cmd, "host"));
        struct probe_ctx *c;

        if (!host && json_is_true(json_object_get(data, "missing")) && leaf_host_is_up(e, js(cmd, "host")))
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
                engine_event(e, "normal", js(cmd, "id"), "fenced %s job %s of host %s", leaf_job_noun(cmd),
                             js(cmd, "agent_job_id"), js(cmd, "host"));
                if (leaf_save(e, cmd, data) < 0)
                        return;        /* logged; the fence job is asked about again next round */
                leaf_copy_probe(e, cmd, data);      /* reads recorded+3 and ends this try */
                return;
        }
        if (job && code == FY_ERR_GENERATION_MISMATCH) {
                /* The generation moved: the job finished after all? read it. */
                if (leaf_save(e, cmd, data) < 0)
                        return;
                leaf_copy_probe(e, cmd, data);
                return;
        }
        /* Lease still held (651) or the fence host failed: later, with backoff. */
        if (job && code == FY_ERR_LEASE_ACQUIRE && ji(data, "fence_attempts") % 6 == 1)
                engine_event(e, "normal", js(cmd, "id"), "fencing %s job %s: its lease is still held; "
                             "retrying until the holder's sanlock lease expires", leaf_job_noun(cmd), js(cmd, "agent_job_id"));
        leaf_later(e, cmd, data, leaf_backoff(ji(data, "fence_attempts")));
}

void leaf_fence_watch(struct engine *e, json_t *cmd, json_t *data)
{
        engine_cmd_call(e, cmd, js(data, "fence_host"), "Host.getJobs", json_pack("{s:[s]}", "job_ids", js(data, "fence_job")),
                 e->config.host_timeout, on_fence_jobs, NULL, NULL);
}

#define DELETE_TRIES 5
#define VERIFY_READS 12      /* reads of a created volume that failed for a reason other than "not there" */

static void on_volume_deleted(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = NULL;

        /* Accepted (or no answer): its job is followed (leaf_delete_watch) and the create waits for its end;
         * sent again at once it raced the still-running delete until its attempts were used up. */
        if (!error || engine_is_transport_error(error)) {
                engine_kick(e);
                return;
        }
        g_message("removing half-made volume of %s: %s", js(cmd, "id"), error->message);
        data = jparse(cmd, "data");
        json_object_del(data, "delete_job");   /* refused: decided again from storage, after a backoff */
        json_object_del(data, "delete_host");
        leaf_later(e, cmd, data, leaf_backoff(ji(data, "delete_tries")));
}

/* The volume on storage is the one this command creates: same capacity, format and parent. */
static bool volume_matches(json_t *info, json_t *p)
{
        const char *parent = js(info, "parent");
        const char *want_parent = js(p, "parent") ? js(p, "parent") : FY_ZERO_UUID;

        return ji(info, "capacity") == ji(p, "size") && g_strcmp0(parent, want_parent) == 0 &&
               g_ascii_strcasecmp(js(info, "format") ? js(info, "format") : "",
                                  g_strcmp0(js(p, "format"), "raw") == 0 ? "RAW" : "COW") == 0;
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
                /* Its generation as found: a copy into it starts from that, not from 0. */
                g_autoptr(json_t) done = json_pack("{s:s, s:I}", "status", "done", "generation",
                                                   (json_int_t) ji(result, "generation"));

                leaf_job_finished(e, cmd, done);
                return;
        }
        if (error && (error->code == FY_ERR_VOLUME_DOES_NOT_EXIST || error->code == FY_ERR_IMAGE_DOES_NOT_EXIST)) {
                /* Not there at all: the request never got far; create it again. (The first volume of a
                 * new image: the agent makes the image's folder inside the create job, so a create lost
                 * before its job ran leaves no image, and Volume.getInfo says so.) */
                leaf_retry_or_fail(e, cmd, 5, error->message, false);
                return;
        }
        if (error) {
                /* Any other refusal (storage not reachable from there, pool not connected …) says nothing
                 * about the volume: recreating over one that exists would fail or worse. Read it again
                 * later; no try is spent, only the backoff grows, up to VERIFY_READS reads (about 5
                 * minutes): then the command fails with the reason instead of waiting for ever. */
                g_autoptr(json_t) data = jparse(cmd, "data");
                gint64 n = ji(data, "verify_errors") + 1;

                if (n >= VERIFY_READS) {
                        engine_event(e, "warning", js(cmd, "id"), "the created volume %s could not be read after %d "
                                     "tries: %s", js(p, "volumeID") ? js(p, "volumeID") : "-", VERIFY_READS,
                                     error->message);
                        leaf_finish(e, cmd, false, error->message);
                        return;
                }
                g_message("reading the created volume of %s: %s", js(cmd, "id"), error->message);
                json_object_set_new(data, "verify_errors", json_integer(n));
                leaf_later(e, cmd, data, leaf_backoff(n));
                return;
        }
        /* ILLEGAL (half-made by a job that is gone) or not the volume asked for (a leftover
         * with the same ids): remove it, wait for the removal to end, then create it again. */
        dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        job_id = fy_uuid_new();
        {
                /* Recorded before the call, like every job (test-flows found this one sent unrecorded). */
                g_autoptr(json_t) data = jparse(cmd, "data");

                if (ji(data, "delete_tries") >= DELETE_TRIES) {
                        leaf_finish(e, cmd, false, "the half-made volume left when the SPM changed could not be removed");
                        return;
                }
                json_object_set_new(data, "delete_job", json_string(job_id));
                json_object_set_new(data, "delete_host", json_string(spm));
                json_object_set_new(data, "delete_tries", json_integer(ji(data, "delete_tries") + 1));
                if (leaf_save(e, cmd, data) < 0)
                        return;        /* not recorded: not sent; storage is read again next round */
        }
        {
                g_autofree char *key = g_strdup_printf("%s/delete", js(cmd, "id"));

                leaf_poll_start(key);  /* asked about at its end event, or after poll_interval */
        }
        engine_event(e, "warning", js(cmd, "id"), "volume %s was left half-made; removing it before creating it again",
                     js(p, "vol"));
        engine_cmd_call(e, cmd, spm, "Volume.delete",
                 json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "storagedomainID", js(p, "sd"), "imageID", js(p, "img"), "volumeID", js(p, "vol")),
                 SPM_CALL_TIMEOUT_MS, on_volume_deleted, NULL, NULL);
}

/* The removal's job ended (or its host does not know it, or the SPM changed): decide again from storage. */
static void delete_decided(struct engine *e, json_t *cmd, const char *how)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *spm = engine_spm_host(e);

        engine_event(e, "normal", js(cmd, "id"), "removal %s of the half-made volume %s; reading the volume again",
                     js(data, "delete_job"), how);
        g_autofree char *delete_job = g_strdup(js(data, "delete_job"));

        json_object_del(data, "delete_job");
        json_object_del(data, "delete_host");
        if (leaf_save(e, cmd, data) < 0)
                return;        /* logged; the removal's end event is kept and read again next round */
        engine_job_end_forget(delete_job);
        /* A restart from here reads storage again: same decision. */
        if (spm)
                leaf_verify_volume_created(e, cmd, spm);
}

static void on_delete_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *job;
        const char *status;

        if (error || !js(data, "delete_job"))
                return;        /* asked again next round (or a new SPM decides) */
        job = json_object_get(result, js(data, "delete_job"));
        status = js(job, "status");
        if (job && (!status || strcmp(status, "running") == 0 || strcmp(status, "pending") == 0))
                return;
        delete_decided(e, cmd, job ? status : "is unknown to the SPM");
}

/*
 * A create_volume_container removing a half-made volume (data.delete_job,
 * recorded before the call): followed like any recorded job — its end
 * event, else Host.getJobs once per poll_interval — and once it ended (done
 * or failed, or its SPM forgot it or is no longer the SPM) the volume is
 * read again: gone → created again, still there → removed again (at most
 * DELETE_TRIES removals).
 */
void leaf_delete_watch(struct engine *e, json_t *cmd, json_t *data)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *key = g_strdup_printf("%s/delete", js(cmd, "id"));
        json_t *ended;

        if (!spm)
                return;        /* wait for the election */
        if (strcmp(spm, js(data, "delete_host") ? js(data, "delete_host") : "") != 0) {
                delete_decided(e, cmd, "was sent to a host that is no longer the SPM");
                return;
        }
        ended = engine_job_end(js(data, "delete_job"), js(data, "delete_host"));
        if (ended) {
                g_autofree char *how = g_strdup(js(ended, "status"));

                delete_decided(e, cmd, how ? how : "ended");
                return;
        }
        if (!leaf_poll_due(e, key))
                return;
        engine_cmd_poll_job(e, cmd, js(data, "delete_host"), js(data, "delete_job"), on_delete_jobs, NULL);
}

void leaf_verify_volume_created(struct engine *e, json_t *cmd, const char *host)
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
void leaf_job_missing(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = NULL;
        g_autofree char *spm = NULL;
        enum engine_kind kind = engine_cmd_kind(cmd);

        if (leaf_host_job(kind)) {
                data = jparse(cmd, "data");
                if (!json_is_true(json_object_get(data, "missing"))) {
                        json_object_set_new(data, "missing", json_true());
                        if (leaf_save(e, cmd, data) < 0)
                                return;        /* logged; decided again next round */
                        engine_event(e, "warning", js(cmd, "id"), "host %s no longer knows %s job %s; "
                                     "deciding from the destination volume", js(cmd, "host"),
                                     leaf_job_noun(cmd), js(cmd, "agent_job_id"));
                }
                leaf_copy_probe(e, cmd, data);
                return;
        }
        if (kind == ENGINE_KIND_CHECKSUM_VOLUME) {
                /* Nothing was written: hash it again, on another host if one is up. */
                leaf_retry_or_fail(e, cmd, 3, "the host no longer knows the checksum job", true);
                return;
        }
        if (kind == ENGINE_KIND_SEAL_TEMPLATE_VOLUME) {
                leaf_sealed_verify(e, cmd);
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
        leaf_verify_volume_created(e, cmd, spm);
}

