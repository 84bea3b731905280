/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A job on a host: the leaf commands create_volume_container,
 * create_thin_volume, remove_image, remove_volume, prepare_merge and
 * finalize_merge (on the SPM), copy_data, merge and sparsify_volume (on a
 * host the scheduler picks; "copy" below stands for any of these three: they
 * share the recovery), seal_template_volume (any usable host but the SPM),
 * checksum_volume (any up host), and finalize_upload (an image upload's
 * Host.finalize_image_ticket, on the host that holds the ticket; it
 * recovers like a copy but is never retried: the ticket lives there only).
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
 * A copy done with verify_copies on goes through data.verify first
 * (flows/verify.c): done → checksums of source and destination → equal:
 * LEGAL (+1), step verified | differ: ILLEGAL, retry. The probe, the fence
 * and the decisions from storage after a lost host or SPM are in
 * flows/recover.c; the "sent" state's round (events, Host.getJobs, abort)
 * is flows/jobwatch.c; what the files share is declared in flows/leaf.h.
 * checksum_volume (POST /api/disks/{id}/checksum) is the same leaf with
 * Volume.checksum on any up host. create_thin_volume is a
 * create_volume_container whose parent is a template's volume in another
 * image; seal_template_volume marks a template's volume SHARED
 * (SDM.update_volume, under its lease) and, when its host is lost or forgot
 * the job, is decided from the volume's type (SHARED: done; else sent again).
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
#include "flows/leaf.h"
#include "generation.h"
#include "hosts.h"
#include "inventory.h"
#include "metrics.h"
#include "scheduler.h"
#include "error.h"
#include "uuid.h"

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
bool leaf_host_job(enum engine_kind k)
{
        return k == ENGINE_KIND_COPY_DATA || k == ENGINE_KIND_MERGE || k == ENGINE_KIND_SPARSIFY_VOLUME ||
               k == ENGINE_KIND_FINALIZE_UPLOAD;
}

/*
 * What another host would refuse too: the generation moved (someone else's
 * change), no space, and a merge or sparsify the volumes do not allow
 * (252, 2009, 920, 921, 219 a template's volume).
 */
bool leaf_refused_everywhere(gint64 code)
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
void leaf_finish(struct engine *e, json_t *cmd, bool ok, const char *why)
{
        g_autoptr(GError) store_error = NULL;
        bool top = engine_cmd_kind(cmd) == ENGINE_KIND_CHECKSUM_VOLUME && !js(cmd, "parent_id") && js(cmd, "job_id");

        if (!top) {
                engine_cmd_finish(e, cmd, ok, why);
                return;
        }
        /* The command's end and its job's in one transaction: a restart between the two would find the
         * command ended and nothing left to end the job (test-flows, disk-checksum crash points). */
        if (engine_store_begin(e->db, &store_error) < 0) {
                engine_not_recorded(&store_error, "the end", js(cmd, "id"));
                return;        /* decided again next round */
        }
        engine_cmd_finish(e, cmd, ok, why);
        if (engine_store_job_end(e->db, js(cmd, "job_id"), ok ? "finished" : ji(cmd, "cancel") ? "aborted" : "failed",
                                 engine_now(), &store_error) < 0) {
                engine_store_rollback(e->db);
                engine_not_recorded(&store_error, "the job's end", js(cmd, "id"));
                return;
        }
        if (engine_store_commit(e->db, &store_error) < 0)
                engine_not_recorded(&store_error, "the end", js(cmd, "id"));
}

static bool persistent(json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        return json_is_true(json_object_get(p, "persistent"));
}

/*
 * Another try from scratch (phase ''), or the end. A host that failed the
 * command is remembered in data.exclude so the next try goes elsewhere.
 * Tries whose host was lost under them (data.hosts_lost, at most
 * LEAF_HOSTS_LOST) are not counted against max_attempts: the job did not
 * fail, its host did.
 */
#define LEAF_HOSTS_LOST 3

static void retry_or_fail(struct engine *e, json_t *cmd, unsigned max_attempts, const char *why, bool exclude_host,
                          bool host_lost)
{
        g_autoptr(json_t) old = jparse(cmd, "data");
        g_autoptr(json_t) data = json_object();
        g_autoptr(GError) store_error = NULL;
        json_t *exclude = json_object_get(old, "exclude");
        gint64 lost = ji(old, "hosts_lost");

        if (engine_cmd_kind(cmd) == ENGINE_KIND_FINALIZE_UPLOAD)
                max_attempts = 1;      /* its ticket (and the uploaded state) is on one host only: no try elsewhere */
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
        if (host_lost && lost < LEAF_HOSTS_LOST)
                lost++;
        else if (ji(cmd, "attempts") >= (gint64) max_attempts + lost) {
                leaf_finish(e, cmd, false, why);
                return;
        }
        if (lost > 0)
                json_object_set_new(data, "hosts_lost", json_integer(lost));
        exclude = json_is_array(exclude) ? json_copy(exclude) : json_array();
        if (exclude_host && js(cmd, "host"))
                json_array_append_new(exclude, json_string(js(cmd, "host")));
        json_object_set_new(data, "exclude", exclude);
        engine_metrics_count_retry(js(cmd, "type"));
        engine_event(e, "warning", js(cmd, "id"), "%s: %s; retrying (attempt %" G_GINT64_FORMAT " of %u)%s",
                     js(cmd, "type"), why, ji(cmd, "attempts") + 1 - lost, max_attempts,
                     exclude_host ? " on another host" : "");
        if (engine_store_cmd_restart(e->db, js(cmd, "id"), data, engine_now(), &store_error) < 0)
                engine_not_recorded(&store_error, "the retry", js(cmd, "id"));
        engine_kick(e);
}

/* What an event calls a leaf's agent job: "copy_data", "merge", "sparsify_volume" … */
const char *leaf_job_noun(json_t *cmd)
{
        return engine_kind_name(engine_cmd_kind(cmd));
}

/* Marks the command sent before the call (with what `with` adds to its data): a restart finds host and agent job recorded. */
static char *mark_sent_with(struct engine *e, json_t *cmd, const char *host, gint64 generation, json_t *with)
{
        char *job_id = fy_uuid_new();
        g_autoptr(json_t) old = jparse(cmd, "data");
        g_autoptr(json_t) data = with ? json_deep_copy(with) : json_object();

        /* Whatever the last try learned is stale now; only the hosts to avoid carry over. */
        if (json_object_get(old, "exclude"))
                json_object_set(data, "exclude", json_object_get(old, "exclude"));
        g_autoptr(GError) error = NULL;

        if (engine_store_cmd_mark_sent(e->db, js(cmd, "id"), host, job_id, generation, data, engine_now(), &error) < 0) {
                engine_not_recorded(&error, "the call", js(cmd, "id"));
                g_free(job_id);
                return NULL;   /* not recorded: do not call, try again next round */
        }
        leaf_poll_start(js(cmd, "id"));
        return job_id;
}

char *leaf_mark_sent(struct engine *e, json_t *cmd, const char *host, gint64 generation)
{
        return mark_sent_with(e, cmd, host, generation, NULL);
}

/* 0, or -errno (logged) when the store refused the write: the caller must not make the call it recorded. */
int leaf_save(struct engine *e, json_t *cmd, json_t *data)
{
        g_autoptr(GError) error = NULL;
        int r = engine_store_cmd_set_phase(e->db, js(cmd, "id"), engine_phase_name(engine_cmd_phase(cmd)), data,
                                           engine_now(), &error);

        if (r < 0)
                engine_not_recorded(&error, "the decision", js(cmd, "id"));
        return r;
}

/* Nothing to do for this command before `seconds` from now (a backoff that survives restarts). */
void leaf_later(struct engine *e, json_t *cmd, json_t *data, gint64 seconds)
{
        json_object_set_new(data, "next_try", json_integer(engine_now() + seconds));
        if (leaf_save(e, cmd, data) < 0)
                return;         /* logged; without the record the command is simply due again next round */
}

gint64 leaf_backoff(gint64 attempt)
{
        return MIN(5 << MIN(attempt, 3), 30);  /* 5, 10, 20, 30, 30 … s */
}

void leaf_on_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
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
        if (leaf_creates_volume(kind) && error->code == FY_ERR_VOLUME_ALREADY_EXISTS) {
                /* A try before an SPM change or a restart got that far: finished, or half-made? */
                leaf_verify_volume_created(e, cmd, js(cmd, "host"));
                return;
        }
        if (kind == ENGINE_KIND_REMOVE_VOLUME && error->code == FY_ERR_VOLUME_DOES_NOT_EXIST) {
                engine_cmd_finish(e, cmd, true, NULL);        /* gone already (a resend): done */
                return;
        }
        if (leaf_host_job(kind) && kind != ENGINE_KIND_COPY_DATA && leaf_refused_everywhere(error->code)) {
                /* A merge or sparsify the volumes do not allow (copies keep their behaviour). */
                engine_cmd_finish(e, cmd, false, error->message);
                return;
        }
        if (kind == ENGINE_KIND_SEAL_TEMPLATE_VOLUME &&
            (error->code == FY_ERR_LEASE_ACQUIRE || error->code == FY_ERR_NOT_CONNECTED)) {
                /* The lease is held a moment longer, or this host lost the pool: another host may take it. */
                leaf_retry_or_fail(e, cmd, SEAL_ATTEMPTS, error->message, true);
                return;
        }
        if (leaf_host_job(kind)) {
                /* The host refused the copy (full, not connected, broken): another host may take it. */
                leaf_retry_or_fail(e, cmd, e->config.copy_attempts, error->message, true);
                return;
        }
        /* An SPM verb refused; "not the SPM (any more)" passes with the next election. */
        leaf_retry_or_fail(e, cmd, error->code == FY_ERR_SPM_REQUIRED ? 3 : 1, error->message, false);
}

bool leaf_host_status_is(struct engine *e, const char *host, const char *status)
{
        g_autoptr(json_t) row = host ? engine_store_host_get(e->db, host, NULL) : NULL;

        return row ? g_strcmp0(js(row, "status"), status) == 0 : strcmp(status, "gone") == 0;
}

void leaf_retry_or_fail(struct engine *e, json_t *cmd, unsigned max_attempts, const char *why, bool exclude_host)
{
        retry_or_fail(e, cmd, max_attempts, why, exclude_host, false);
}

void leaf_retry_lost(struct engine *e, json_t *cmd, unsigned max_attempts, const char *why, bool exclude_host)
{
        retry_or_fail(e, cmd, max_attempts, why, exclude_host, true);
}

bool leaf_host_is_up(struct engine *e, const char *host)
{
        return leaf_host_status_is(e, host, "up");
}

/*
 * create_volume_container {sd, img, vol, parent|null, size, format, sparse, legal_when_created}
 * create_thin_volume {the same, parent_img}: its parent is a template's volume in image parent_img
 * (the agent links it in); rows an older engine wrote lack format and sparse: a sparse qcow2.
 */
bool leaf_creates_volume(enum engine_kind k)
{
        return k == ENGINE_KIND_CREATE_VOLUME_CONTAINER || k == ENGINE_KIND_CREATE_THIN_VOLUME;
}

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
                           "volFormat", g_strcmp0(js(p, "format"), "raw") == 0 ? "RAW" : "COW",
                           "preallocate", json_is_true(json_object_get(p, "sparse")) || !json_object_get(p, "sparse")
                                          ? "SPARSE" : "PREALLOCATED",
                           "diskType", "DATA",
                           "desc", "",
                           "srcImgUUID", js(p, "parent_img") ? js(p, "parent_img") : js(p, "img"),
                           "srcVolUUID", js(p, "parent") ? js(p, "parent") : FY_ZERO_UUID),
                 SPM_CALL_TIMEOUT_MS, leaf_on_sent, NULL, NULL);
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
                 SPM_CALL_TIMEOUT_MS, leaf_on_sent, NULL, NULL);
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
                engine_cmd_call(e, cmd, spm, "Volume.delete", params, SPM_CALL_TIMEOUT_MS, leaf_on_sent, NULL, NULL);
                return;
        }
        params = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "subchainInfo", "sd_id", js(p, "sd"), "img_id", js(p, "img"), "top_id", js(p, "top"),
                           "base_id", js(p, "base"));
        if (json_object_get(p, "generation"))
                json_object_set(json_object_get(params, "subchainInfo"), "base_generation", json_object_get(p, "generation"));
        engine_cmd_call(e, cmd, spm, kind == ENGINE_KIND_PREPARE_MERGE ? "StoragePool.prepareMerge"
                                                                       : "StoragePool.finalizeMerge",
                        params, SPM_CALL_TIMEOUT_MS, leaf_on_sent, NULL, NULL);
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

/* Records host, job and the destination's generation (assumed: known without a read), then starts the job. */
static void host_job_send(struct engine *e, json_t *cmd, const char *host, gint64 gen, bool assumed)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) with = assumed ? json_pack("{s:b}", "generation_assumed", true) : NULL;
        g_autofree char *job_id = mark_sent_with(e, cmd, host, gen, with);

        if (!job_id)
                return;
        switch (engine_cmd_kind(cmd)) {
        case ENGINE_KIND_COPY_DATA:
        case ENGINE_KIND_MERGE:
        case ENGINE_KIND_SPARSIFY_VOLUME:
                /* What engine_store_copy_loads counts: the next pick of this slice must see it too. */
                engine_pick_sent(e, host, json_number_value(json_object_get(p, "bytes")));
                break;
        default:
                break;
        }
        engine_step_update(e, js(cmd, "step_id"), "started", 0, host);
        engine_cmd_call(e, cmd, host, host_job_method(e, cmd, p, host, gen),
                        host_job_params(p, engine_cmd_kind(cmd), job_id, gen), COPY_CALL_TIMEOUT_MS, leaf_on_sent, NULL,
                        NULL);
}

static void on_copy_generation(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *host = extra;

        if (error) {
                if (engine_is_transport_error(error))
                        return;        /* try again next round, maybe on another host */
                leaf_finish(e, cmd, false, error->message);
                return;
        }
        host_job_send(e, cmd, host, json_integer_value(json_object_get(result, "generation")), false);
}

/*
 * The generation of a copy's destination without a read: on its first try,
 * into a volume this flow created (params.dst_created), whose generation
 * the create recorded in its row (0 when made, what storage said when it
 * existed already). Any retry reads it: a fence (+3), a failed or aborted
 * try, a verification that marked it ILLEGAL may have moved it.
 */
static gint64 copy_known_generation(struct engine *e, json_t *cmd, json_t *p)
{
        json_t *dst = json_object_get(p, "dst");
        gint64 gen = -1;

        if (engine_cmd_kind(cmd) != ENGINE_KIND_COPY_DATA || ji(cmd, "attempts") > 0 ||
            !json_is_true(json_object_get(p, "dst_created")))
                return -1;
        if (engine_store_volume_generation(e->db, js(dst, "vol"), js(dst, "sd"), &gen, NULL) < 0)
                return -1;
        return gen;
}

static void copy_data_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *host = NULL;
        g_autoptr(json_t) dc = NULL;
        json_t *dst = json_object_get(p, "dst");
        gint64 known;
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
        known = copy_known_generation(e, cmd, p);
        if (known >= 0) {
                host_job_send(e, cmd, host, known, true);    /* recorded as its host's job: the next pick sees it */
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

/*
 * finalize_upload {transfer, dst} (made by flows/transfer.c): sent to the
 * ticket's host with the generation the ticket recorded; the ticket (a
 * bearer secret) is read from the transfer, never kept in the command's
 * params.
 */
static void finalize_upload_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autoptr(json_t) row = engine_store_transfer_get(e->db, js(p, "transfer"), NULL);
        g_autofree char *job_id = NULL;

        if (!row || strcmp(js(row, "phase"), "finalizing_success") != 0) {
                leaf_finish(e, cmd, false, "its image transfer is no longer being finalized");
                return;
        }
        job_id = leaf_mark_sent(e, cmd, js(row, "host"), ji(row, "generation"));
        if (!job_id)
                return;
        engine_event(e, "normal", js(cmd, "id"), "verifying the upload into volume %s on host %s (generation %"
                     G_GINT64_FORMAT ")", js(row, "vol_id"), js(row, "host"), ji(row, "generation"));
        engine_cmd_call(e, cmd, js(row, "host"), "Host.finalize_image_ticket",
                        json_pack("{s:s, s:s}", "uuid", js(row, "ticket"), "job_id", job_id),
                        e->config.host_timeout, leaf_on_sent, NULL, NULL);
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

static bool generation_assumed(json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        return json_is_true(json_object_get(data, "generation_assumed"));
}

/* The job is known to the host: running → progress, done/failed → finish. */
void leaf_job_finished(struct engine *e, json_t *cmd, json_t *job)
{
        const char *status = js(job, "status") ? js(job, "status") : "unknown";
        enum engine_kind kind = engine_cmd_kind(cmd);
        g_autoptr(GError) store_error = NULL;

        if (strcmp(status, "done") == 0) {
                if (leaf_creates_volume(kind)) {
                        g_autoptr(json_t) p = jparse(cmd, "params");
                        /* Made by this job: generation 0; found made before: what storage said. A first
                         * copy into it needs no read of it then (copy_known_generation). */
                        gint64 gen = json_is_integer(json_object_get(job, "generation")) ? ji(job, "generation") : 0;

                        /* A copy's destination stays ILLEGAL in the inventory until its data is there. */
                        if (((json_is_true(json_object_get(p, "legal_when_created")) ||
                              kind == ENGINE_KIND_CREATE_THIN_VOLUME) &&
                             engine_store_volume_set_legal(e->db, js(p, "vol"), js(p, "sd"), -1, &store_error) < 0) ||
                            engine_store_volume_set_generation(e->db, js(p, "vol"), js(p, "sd"), gen, &store_error) < 0) {
                                engine_not_recorded(&store_error, "the volume's legality", js(cmd, "id"));
                                return;        /* decided again from the job next round */
                        }
                }
                if (leaf_host_job(kind)) {
                        g_autoptr(json_t) p = jparse(cmd, "params");
                        g_autoptr(json_t) data = jparse(cmd, "data");
                        json_t *dst = json_object_get(p, "dst");
                        json_t *size = json_object_get(json_object_get(job, "result"), "truesize");

                        /* Kept with the command: the flow's end records the disk's size from it (inventory.c). */
                        json_t *resumed = json_object_get(json_object_get(job, "result"), "resumed_from");

                        if (kind == ENGINE_KIND_COPY_DATA && json_is_integer(size) && json_integer_value(size) >= 0)
                                json_object_set(data, "truesize", size);
                        /* A retry that continued from the interrupted try's durable checkpoint says so (issue 16). */
                        if (kind == ENGINE_KIND_COPY_DATA && json_is_integer(resumed) && json_integer_value(resumed) > 0)
                                engine_event(e, "normal", js(cmd, "id"), "copy of volume %s on host %s resumed_from %"
                                             G_GINT64_FORMAT " bytes, moved %" G_GINT64_FORMAT " bytes",
                                             js(dst, "vol"), js(cmd, "host"), (gint64) json_integer_value(resumed),
                                             ji(job, "bytes_moved"));
                        if (leaf_verify_begin(e, cmd, data))
                                return;        /* declared done once both sides hash the same */
                        if (json_object_get(data, "truesize") && leaf_save(e, cmd, data) < 0)
                                return;        /* logged; decided again from the job next round */
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
                if (kind == ENGINE_KIND_COPY_DATA && code == FY_ERR_GENERATION_MISMATCH && generation_assumed(cmd)) {
                        /* The generation was not read (copy_known_generation) and is not what the inventory
                         * said: read it and copy again rather than fail the copy on the engine's mistake. */
                        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, false);
                        return;
                }
                if (kind == ENGINE_KIND_FINALIZE_MERGE && code == FY_ERR_MERGE && ji(cmd, "attempts") > 1) {
                        /* A resend after an SPM change: the first one may have finished (base then has
                         * two children, top and the re-pointed one): storage decides. */
                        finalize_verify(e, cmd, why);
                        return;
                }
                /* A copy that lost its generation race or was aborted is not retried blindly,
                 * unless the engine aborted it for stalling (jobstall.c) and nobody cancelled it. */
                /* Out of space stays out of space on any host. */
                if (kind == ENGINE_KIND_CHECKSUM_VOLUME && code != FY_ERR_GENERATION_MISMATCH && code != FY_ERR_COPY)
                        leaf_retry_or_fail(e, cmd, 3, why, true);        /* another host reads it */
                else if (kind == ENGINE_KIND_SEAL_TEMPLATE_VOLUME && code == FY_ERR_LEASE_ACQUIRE)
                        leaf_retry_or_fail(e, cmd, SEAL_ATTEMPTS, why, true);
                else if (leaf_host_job(kind) && !leaf_refused_everywhere(code) &&
                         (strcmp(status, "aborted") != 0 || leaf_stall_retry(cmd)))
                        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
                else
                        leaf_finish(e, cmd, false, why);
        } else {
                double progress = json_number_value(json_object_get(job, "progress"));

                if (!js(cmd, "step_id"))
                        return;        /* a finalize: its job shows the transfer's progress, not the check's */
                /* A step (re)sent starts its series at its first copying report; the job's, whose
                 * weighted percent jumps with a resumed step, starts again there too. */
                if (engine_step_progress(e, js(cmd, "step_id"), progress, job))
                        engine_job_eta_restart(js(cmd, "job_id"));
                engine_job_progress_refresh(e, js(cmd, "job_id"));
                if (leaf_host_job(kind) && (strcmp(status, "running") == 0 || strcmp(status, "aborting") == 0))
                        leaf_stall_check(e, cmd, job, progress, strcmp(status, "running") == 0);
        }
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
        case ENGINE_KIND_CREATE_THIN_VOLUME:
                volume_container_start(e, cmd, p);
                break;
        case ENGINE_KIND_SEAL_TEMPLATE_VOLUME:
                leaf_seal_start(e, cmd, p);
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
                leaf_checksum_start(e, cmd, p);
                break;
        case ENGINE_KIND_FINALIZE_UPLOAD:
                finalize_upload_start(e, cmd, p);
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
        engine_flow_register(ENGINE_KIND_CREATE_THIN_VOLUME, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_SEAL_TEMPLATE_VOLUME, leaf_advance, false);
        engine_flow_register(ENGINE_KIND_FINALIZE_UPLOAD, leaf_advance, false);
}
