/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * VMs, snapshots and templates (DESIGN §7–§8). A VM or a template is an
 * inventory object (no guest runs): a name and the disks attached to it
 * (disk_attachments; a disk belongs to at most one VM or template). What
 * they do to storage are flows built from the coordinator's commands:
 *
 *   create_snapshot          → clone_image_group_volumes_structure per disk: the SPM adds a
 *                              qcow2 leaf on the current leaf
 *   create_template_from_vm  → copy_image_group_with_data per disk, one destination volume
 *                              without parent for the VM disk's leaf (the chain is copied
 *                              collapsed, on a host the scheduler picks), then
 *                              seal_template_volume per disk (SDM.update_volume type SHARED)
 *   create_vm_from_template  → clone: copy_image_group_with_data per disk (collapsed);
 *                              thin: create_thin_volume per disk (Volume.create on the SPM with
 *                              srcImgUUID = the template's image: a qcow2 layer on the template volume)
 *   remove_vm, remove_template → remove_image per disk
 *
 * seal_template_volume and create_thin_volume are leaves kept here: an agent
 * job recorded (host, job id) before the call, watched with Host.getJobs, and
 * decided from the volume's metadata when the host no longer knows the job.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "error.h"
#include "events.h"
#include "hosts.h"
#include "inventory.h"
#include "vms.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define MAX_PARALLEL_DISKS 8
#define LEAF_ATTEMPTS 5
#define SPM_CALL_TIMEOUT_MS 30000

/*
 * A write of a flow the store refused: said in the log. The flow runs in
 * the round's transaction, which the failed write makes roll back, so the
 * next round redoes the whole step from what is recorded.
 */
static void not_recorded(GError **error, const char *what, const char *id)
{
        g_warning("%s of %s is not recorded: %s", what, id ? id : "-", *error ? (*error)->message : "store error");
        g_clear_error(error);
}

static const char *pool_id(struct engine *e, json_t **holder)
{
        *holder = engine_store_dc_get(e->db, e->dc_id, NULL);
        return js(*holder, "pool_id");
}

static bool host_up(struct engine *e, const char *host)
{
        g_autoptr(json_t) row = host ? engine_store_host_get(e->db, host, NULL) : NULL;

        return row && g_strcmp0(js(row, "status"), "up") == 0;
}

/* ---- leaves kept here: one agent job each ---- */

/*
 * create_thin_volume {sd, img, vol, parent, parent_img, size}: Volume.create on the SPM, a qcow2
 *   layer whose parent is a template volume of another image (the agent links it in).
 * seal_template_volume {sd, img, vol}: SDM.update_volume vol_attr.type SHARED on any host.
 */
struct leaf_kind {
        enum engine_kind type;
        const char *method;
        bool spm;
};

static const struct leaf_kind thin_kind = { ENGINE_KIND_CREATE_THIN_VOLUME, "Volume.create", true };
static const struct leaf_kind seal_kind = { ENGINE_KIND_SEAL_TEMPLATE_VOLUME, "SDM.update_volume", false };

static GHashTable *inflight;   /* command ids with a call out (in memory: a restart asks again) */

struct leaf_call {
        struct engine *e;
        char *cmd_id;
        char *host;
        void (*done)(struct leaf_call *c, json_t *cmd, json_t *result, const GError *error);
};

static void on_leaf_reply(json_t *result, const GError *error, void *userdata)
{
        struct leaf_call *c = userdata;
        g_autoptr(json_t) cmd = engine_store_cmd_get(c->e->db, c->cmd_id, NULL);

        g_hash_table_remove(inflight, c->cmd_id);
        if (cmd && strcmp(js(cmd, "state"), "active") == 0)
                c->done(c, cmd, result, error);
        engine_kick(c->e);
        g_free(c->cmd_id);
        g_free(c->host);
        g_free(c);
}

static void leaf_call(struct engine *e, json_t *cmd, const char *host, const char *method, json_t *params,
                      unsigned timeout_ms, void (*done)(struct leaf_call *, json_t *, json_t *, const GError *))
{
        struct leaf_call *c = g_new0(struct leaf_call, 1);

        c->e = e;
        c->cmd_id = g_strdup(js(cmd, "id"));
        c->host = g_strdup(host);
        c->done = done;
        g_hash_table_add(inflight, g_strdup(c->cmd_id));
        engine_host_call(e, host, method, params, timeout_ms, on_leaf_reply, c);
}

static void leaf_set(struct engine *e, json_t *cmd, enum engine_phase phase, json_t *data)
{
        engine_cmd_update(e, js(cmd, "id"), phase, data);
}

static void leaf_finish(struct engine *e, json_t *cmd, bool ok, const char *error)
{
        if (ok && engine_cmd_kind(cmd) == thin_kind.type) {
                g_autoptr(json_t) p = jparse(cmd, "params");
                g_autoptr(GError) store_error = NULL;

                if (engine_store_volume_set_legal(e->db, js(p, "vol"), js(p, "sd"), -1, &store_error) < 0) {
                        not_recorded(&store_error, "the volume's legality", js(cmd, "id"));
                        return;        /* asked again next round */
                }
        }
        engine_cmd_finish(e, cmd, ok, error);
}

/* Another try from scratch after `delay` seconds, or the end after LEAF_ATTEMPTS. */
static void leaf_retry(struct engine *e, json_t *cmd, const char *why, gint64 delay)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        if (ji(data, "attempts") >= LEAF_ATTEMPTS) {
                g_autofree char *msg = g_strdup_printf("%s (after %d attempts)", why, LEAF_ATTEMPTS);
                leaf_finish(e, cmd, false, msg);
                return;
        }
        engine_event(e, "warning", js(cmd, "id"), "%s: %s; trying again", js(cmd, "type"), why);
        json_object_set_new(data, "next_try", json_integer(engine_now() + delay));
        json_object_set_new(data, "last_error", json_string(why));
        leaf_set(e, cmd, ENGINE_PHASE_NEW, data);
}

static void leaf_to_verify(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        leaf_set(e, cmd, ENGINE_PHASE_VERIFY, data);
}

static void on_leaf_sent(struct leaf_call *c, json_t *cmd, json_t *result, const GError *error)
{
        if (!error || error->code == FY_ERR_JOB_EXISTS)
                return;        /* accepted (or accepted before a resend): watched from now on */
        if (error->domain != FY_ERROR)
                return;        /* unknown whether it arrived: the watch asks the host, then storage */
        if (error->code == FY_ERR_VOLUME_ALREADY_EXISTS) {
                leaf_to_verify(c->e, cmd);     /* an earlier try got that far: finished or half-made? */
                return;
        }
        if (error->code == FY_ERR_SPM_REQUIRED || error->code == FY_ERR_LEASE_ACQUIRE ||
            error->code == FY_ERR_NOT_CONNECTED) {
                leaf_retry(c->e, cmd, error->message, 3);
                return;
        }
        leaf_finish(c->e, cmd, false, error->message);
}

static void on_leaf_jobs(struct leaf_call *c, json_t *cmd, json_t *result, const GError *error)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *job = result ? json_object_get(result, js(data, "job")) : NULL;
        const char *status = js(job, "status");

        if (error) {
                if (!host_up(c->e, js(data, "host")))
                        leaf_to_verify(c->e, cmd);
                return;        /* asked again next round */
        }
        if (!job) {
                leaf_to_verify(c->e, cmd);     /* the agent restarted or dropped the job: storage decides */
                return;
        }
        if (g_strcmp0(status, "done") == 0) {
                leaf_finish(c->e, cmd, true, NULL);
        } else if (g_strcmp0(status, "failed") == 0 || g_strcmp0(status, "aborted") == 0) {
                json_t *err = json_object_get(job, "error");
                gint64 code = ji(err, "code");
                g_autofree char *why = g_strdup_printf("%s on host %s: %s (code %" G_GINT64_FORMAT ")", status,
                                                       js(data, "host"), js(err, "message") ? js(err, "message") : "no message",
                                                       code);

                /* A lease held elsewhere or an SPM change pass; anything else is the answer. */
                if (code == FY_ERR_LEASE_ACQUIRE || code == FY_ERR_SPM_REQUIRED)
                        leaf_retry(c->e, cmd, why, 3);
                else if (code == FY_ERR_VOLUME_ALREADY_EXISTS)
                        leaf_to_verify(c->e, cmd);
                else
                        leaf_finish(c->e, cmd, false, why);
        } else {
                engine_step_update(c->e, js(cmd, "step_id"), "started", json_number_value(json_object_get(job, "progress")),
                                   NULL);
                engine_job_progress_refresh(c->e, js(cmd, "job_id"));
        }
}

/* What the volume's metadata says about a job whose outcome the host no longer knows. */
static void on_leaf_verify(struct leaf_call *c, json_t *cmd, json_t *result, const GError *error)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        bool thin = engine_cmd_kind(cmd) == thin_kind.type;

        if (error && error->domain != FY_ERROR)
                return;        /* no answer: ask again next round */
        if (error) {
                if (thin && (error->code == FY_ERR_VOLUME_DOES_NOT_EXIST || error->code == FY_ERR_IMAGE_DOES_NOT_EXIST))
                        leaf_retry(c->e, cmd, "the volume was never created", 1);
                else
                        leaf_finish(c->e, cmd, false, error->message);
                return;
        }
        if (!thin) {
                if (g_strcmp0(js(result, "voltype"), "SHARED") == 0)
                        leaf_finish(c->e, cmd, true, NULL);
                else
                        leaf_retry(c->e, cmd, "the volume is not SHARED yet", 1);
                return;
        }
        if (g_strcmp0(js(result, "legality"), "LEGAL") == 0 && g_strcmp0(js(result, "parent"), js(p, "parent")) == 0) {
                leaf_finish(c->e, cmd, true, NULL);
                return;
        }
        /* Half-made by a job that is gone: the flow's cleanup removes the whole image. */
        leaf_finish(c->e, cmd, false, "the volume was left half-made (ILLEGAL) by a create that did not finish");
}

static char *leaf_host(struct engine *e, const struct leaf_kind *k)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autoptr(GPtrArray) hosts = NULL;

        if (k->spm)
                return g_steal_pointer(&spm);
        /* A metadata change under the volume lease: any host; the SPM only when alone. */
        hosts = engine_usable_hosts(e);
        for (guint i = 0; i < hosts->len; i++)
                if (!spm || strcmp(hosts->pdata[i], spm) != 0)
                        return g_strdup(hosts->pdata[i]);
        return hosts->len ? g_strdup(hosts->pdata[0]) : NULL;
}

static void leaf_send(struct engine *e, json_t *cmd, const struct leaf_kind *k, json_t *p, json_t *data)
{
        g_autofree char *host = leaf_host(e, k);
        g_autofree char *job_id = NULL;
        g_autoptr(json_t) dc = NULL;
        g_autoptr(json_t) next = NULL;
        json_t *params;

        if (!host) {
                g_autoptr(GError) error = NULL;

                if (engine_store_step_wait(e->db, js(cmd, "step_id"), k->spm ? "waiting for the SPM" : "waiting for a host",
                                           true, &error) < 0)
                        not_recorded(&error, "why it waits", js(cmd, "step_id"));
                return;
        }
        job_id = fy_uuid_new();
        next = json_pack("{s:s, s:s, s:I}", "host", host, "job", job_id, "attempts", (json_int_t) (ji(data, "attempts") + 1));
        /* Recorded before the call: after a restart the watch finds host and job. */
        leaf_set(e, cmd, ENGINE_PHASE_SENT, next);
        engine_step_update(e, js(cmd, "step_id"), "started", 0, host);
        if (k == &thin_kind) {
                g_autofree char *size = g_strdup_printf("%" G_GINT64_FORMAT, ji(p, "size"));

                params = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
                                   "job_id", job_id, "storagepoolID", pool_id(e, &dc), "storagedomainID", js(p, "sd"),
                                   "imageID", js(p, "img"), "volumeID", js(p, "vol"), "size", size, "volFormat", "COW",
                                   "preallocate", "SPARSE", "diskType", "DATA", "desc", "",
                                   "srcImgUUID", js(p, "parent_img"), "srcVolUUID", js(p, "parent"));
        } else {
                params = json_pack("{s:s, s:{s:s, s:s, s:s}, s:{s:s}}", "job_id", job_id,
                                   "vol_info", "sd_id", js(p, "sd"), "img_id", js(p, "img"), "vol_id", js(p, "vol"),
                                   "vol_attr", "type", "SHARED");
        }
        leaf_call(e, cmd, host, k->method, params, SPM_CALL_TIMEOUT_MS, on_leaf_sent);
}

static void leaf_advance(struct engine *e, json_t *cmd, const struct leaf_kind *k)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        enum engine_phase phase = engine_cmd_phase(cmd);

        if (g_hash_table_contains(inflight, js(cmd, "id")) || ji(data, "next_try") > engine_now())
                return;
        if (phase == ENGINE_PHASE_NEW) {
                leaf_send(e, cmd, k, p, data);
        } else if (phase == ENGINE_PHASE_SENT) {
                g_autofree char *spm = k->spm ? engine_spm_host(e) : NULL;

                if (k->spm && spm && strcmp(spm, js(data, "host")) != 0) {
                        leaf_to_verify(e, cmd);        /* the SPM changed under the job */
                        return;
                }
                if (!host_up(e, js(data, "host"))) {
                        if (!k->spm)
                                leaf_to_verify(e, cmd);
                        return;        /* an SPM job waits for the election, then verifies */
                }
                leaf_call(e, cmd, js(data, "host"), "Host.getJobs", json_pack("{s:[s]}", "job_ids", js(data, "job")),
                          e->config.host_timeout, on_leaf_jobs);
        } else {
                g_autoptr(json_t) dc = NULL;
                g_autofree char *host = NULL;

                if (host_up(e, js(data, "host")))
                        host = g_strdup(js(data, "host"));
                else
                        host = leaf_host(e, &seal_kind);       /* any usable host can read metadata */
                if (!host)
                        return;
                leaf_call(e, cmd, host, "Volume.getInfo",
                          json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", pool_id(e, &dc), "storagedomainID", js(p, "sd"),
                                    "imageID", js(p, "img"), "volumeID", js(p, "vol")),
                          e->config.host_timeout, on_leaf_verify);
        }
}

static void thin_advance(struct engine *e, json_t *cmd)
{
        leaf_advance(e, cmd, &thin_kind);
}

static void seal_advance(struct engine *e, json_t *cmd)
{
        leaf_advance(e, cmd, &seal_kind);
}

/* ---- children of the flows ---- */

/* p.disks[i] describes one disk of the flow. */
static json_t *flow_disk(json_t *p, size_t i)
{
        return json_array_get(json_object_get(p, "disks"), i);
}

/* A collapsed copy: the leaf of the source chain into one new volume without parent. */
static char *make_collapsed_copy(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = flow_disk(p, i);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:[{s:s, s:n, s:I, s:s, s:O, s:f, s:f}], s:s, s:s, s:[{s:s}]}",
                                         "sd", js(d, "sd"), "img", js(d, "img"),
                                         "volumes", "id", js(d, "vol"), "parent", "capacity", ji(d, "capacity"),
                                         "format", js(d, "format"), "sparse", json_object_get(d, "sparse"),
                                         "structure_weight", json_number_value(json_object_get(d, "structure_weight")),
                                         "data_weight", json_number_value(json_object_get(d, "data_weight")),
                                         "src_sd", js(d, "src_sd"), "src_img", js(d, "src_img"),
                                         "src_volumes", "id", js(d, "src_vol"));

        return engine_cmd_create(e, ENGINE_KIND_COPY_WITH_DATA, js(cmd, "id"), js(cmd, "job_id"), NULL, cp);
}

static char *make_snapshot_leaf(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = flow_disk(p, i);
        double weight = 100.0 / (double) MAX(json_array_size(json_object_get(p, "disks")), 1);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:[{s:s, s:s, s:I, s:s, s:b, s:f, s:f}]}",
                                         "sd", js(d, "sd"), "img", js(d, "img"),
                                         "volumes", "id", js(d, "vol"), "parent", js(d, "parent"),
                                         "capacity", ji(d, "capacity"), "format", "cow", "sparse", true,
                                         "structure_weight", weight, "data_weight", 0.0);

        return engine_cmd_create(e, ENGINE_KIND_CLONE_STRUCTURE, js(cmd, "id"), js(cmd, "job_id"), NULL, cp);
}

static char *make_leaf(struct engine *e, json_t *cmd, const struct leaf_kind *k, json_t *cp, const char *desc,
                       double weight)
{
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), engine_kind_name(k->type), desc, weight);

        return engine_cmd_create(e, k->type, js(cmd, "id"), js(cmd, "job_id"), step, cp);
}

static char *make_seal(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = flow_disk(p, i);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:s}", "sd", js(d, "sd"), "img", js(d, "img"), "vol", js(d, "vol"));
        g_autofree char *desc = g_strdup_printf("Marking volume %s of template disk %s shared", js(d, "vol"), js(d, "img"));

        return make_leaf(e, cmd, &seal_kind, cp, desc, 0);
}

static char *make_thin(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = flow_disk(p, i);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "sd", js(d, "sd"), "img", js(d, "img"),
                                         "vol", js(d, "vol"), "parent", js(d, "src_vol"), "parent_img", js(d, "src_img"),
                                         "size", ji(d, "capacity"));
        g_autofree char *desc = g_strdup_printf("Creating thin volume %s on template volume %s", js(d, "vol"), js(d, "src_vol"));

        return make_leaf(e, cmd, &thin_kind, cp, desc,
                         100.0 / (double) MAX(json_array_size(json_object_get(p, "disks")), 1));
}

static char *make_remove(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = flow_disk(p, i);
        g_autofree char *desc = g_strdup_printf("Removing image %s from storage domain %s", js(d, "img"), js(d, "sd"));
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "remove_image", desc, 0);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s}", "sd", js(d, "sd"), "img", js(d, "img"));

        return engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, js(cmd, "id"), js(cmd, "job_id"), step, cp);
}

/* A removal that failed must not stay the flow's problem: it goes on as a command of its own. */
static void removal_detach(struct engine *e, const char *sd, const char *img, const char *why)
{
        g_autoptr(json_t) params = json_pack("{s:s, s:s, s:b}", "sd", sd, "img", img, "persistent", true);
        g_autofree char *id = engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, NULL, NULL, NULL, params);

        engine_event(e, "warning", id, "image %s on storage domain %s is not removed yet (%s); retrying in the background",
                     img, sd, why ? why : "unknown error");
}

/* Child i's state after engine_run_children_parallel ("succeeded", "failed", "active"), or NULL. */
static char *child_state(struct engine *e, json_t *data, size_t i, char **ret_error)
{
        g_autofree char *k = g_strdup_printf("%zu", i);
        const char *id = json_string_value(json_object_get(json_object_get(data, "children"), k));
        g_autoptr(json_t) row = id ? engine_store_cmd_get(e->db, id, NULL) : NULL;

        if (!row)
                return NULL;
        if (ret_error)
                *ret_error = g_strdup(js(row, "error"));
        return g_strdup(js(row, "state"));
}

/* Ends a top-level flow's job and command in the caller's transaction. */
static void job_end(struct engine *e, json_t *cmd, bool ok, const char *error)
{
        g_autoptr(GError) store_error = NULL;

        if (engine_store_job_end(e->db, js(cmd, "job_id"), ok ? "finished" : ji(cmd, "cancel") ? "aborted" : "failed",
                                 engine_now(), &store_error) < 0)
                not_recorded(&store_error, "the end", js(cmd, "job_id"));
        engine_cmd_finish(e, cmd, ok, error);
}

/* Unlocks what this job holds (never another operation's lock). */
static void unlock_disks(struct engine *e, json_t *cmd, const char *status)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_disks_unlock_job(e->db, js(cmd, "job_id"), status, &error) < 0)
                not_recorded(&error, "the disks' unlock", js(cmd, "job_id"));
}

static void unlock_vm(struct engine *e, json_t *cmd, const char *vm)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_vm_unlock(e->db, vm, js(cmd, "job_id"), &error) < 0)
                not_recorded(&error, "the unlock", vm);
}

static void delete_disk_rows(struct engine *e, const char *disk)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_disk_delete(e->db, disk, &error) < 0)
                not_recorded(&error, "the removal", disk);
}

/* What a flow's last step writes about its VM, template or snapshot; a refused write is logged (see not_recorded). */
static void store_check(int r, GError **error, const char *what, const char *id)
{
        if (r < 0)
                not_recorded(error, what, id);
}

/*
 * Shared shape of the flows that make new disks (template, VM from template):
 * phase "main" runs the per-disk children, then "seal" (templates), then the
 * end; a failure goes through "cleanup", which removes every new image.
 * Returns true when the flow ended (ok or not) in this round.
 */
static enum engine_children run_disks(struct engine *e, json_t *cmd, json_t *p, json_t *data, engine_child_factory make,
                             size_t parallel, char **ret_error)
{
        size_t n = json_array_size(json_object_get(p, "disks"));

        return engine_run_children_parallel(e, cmd, data, n, MAX(parallel, 1), make, ret_error);
}

static void go_cleanup(struct engine *e, json_t *cmd, json_t *data, const char *error)
{
        json_object_clear(data);
        json_object_set_new(data, "error", json_string(error ? error : "failed"));
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_CLEANUP, data);
        engine_kick(e);
}

/* "cleanup": every new image removed (one that was never made counts as removed). Returns true when done. */
static bool cleanup_images(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st = run_disks(e, cmd, p, data, make_remove, n, NULL);

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_CLEANUP, data);
                return false;
        }
        for (size_t i = 0; i < n; i++) {
                g_autofree char *error = NULL;
                g_autofree char *state = child_state(e, data, i, &error);

                if (g_strcmp0(state, "succeeded") != 0)
                        removal_detach(e, js(flow_disk(p, i), "sd"), js(flow_disk(p, i), "img"), error);
        }
        return true;
}

/* ---- flow: create_template_from_vm ---- */

static void template_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        enum engine_phase phase = engine_cmd_phase(cmd) == ENGINE_PHASE_NEW ? ENGINE_PHASE_MAIN : engine_cmd_phase(cmd);
        const char *tmpl = js(p, "template");
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st;

        if (phase == ENGINE_PHASE_MAIN) {
                if (ji(cmd, "cancel") && !json_object_get(data, "children")) {
                        go_cleanup(e, cmd, data, "cancelled");
                        return;
                }
                st = run_disks(e, cmd, p, data, make_collapsed_copy, MIN(n, MAX_PARALLEL_DISKS), &error);
                if (st == ENGINE_CHILDREN_ACTIVE) {
                        engine_cmd_update(e, js(cmd, "id"), phase, data);
                } else if (st == ENGINE_CHILDREN_FAILED) {
                        go_cleanup(e, cmd, data, error);
                } else {
                        json_object_clear(data);
                        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_SEAL, data);
                        engine_kick(e);
                }
                return;
        }
        if (phase == ENGINE_PHASE_SEAL) {
                st = run_disks(e, cmd, p, data, make_seal, n, &error);
                if (st == ENGINE_CHILDREN_ACTIVE) {
                        engine_cmd_update(e, js(cmd, "id"), phase, data);
                        return;
                }
                if (st == ENGINE_CHILDREN_FAILED) {
                        go_cleanup(e, cmd, data, error);
                        return;
                }
                store_check(engine_store_template_set_status(e->db, tmpl, "ok", &store_error), &store_error, "the status", tmpl);
                unlock_disks(e, cmd, "ok");
                unlock_vm(e, cmd, js(p, "vm"));
                job_end(e, cmd, true, NULL);
                for (size_t i = 0; i < n; i++)
                        engine_disk_size_refresh(e, js(flow_disk(p, i), "img"));
                engine_event(e, "normal", js(cmd, "id"), "template %s created from VM %s", js(p, "name"), js(p, "vm"));
                return;
        }
        /* cleanup */
        if (!cleanup_images(e, cmd, p, data))
                return;
        for (size_t i = 0; i < n; i++)
                delete_disk_rows(e, js(flow_disk(p, i), "img"));
        store_check(engine_store_template_delete(e->db, tmpl, &store_error), &store_error, "the removal", tmpl);
        unlock_disks(e, cmd, "ok");            /* the VM's disks, read only */
        unlock_vm(e, cmd, js(p, "vm"));
        {
                g_autofree char *why = g_strdup(js(data, "error"));

                job_end(e, cmd, false, why);
                engine_event(e, "warning", js(cmd, "id"), "template %s was not created: %s", js(p, "name"), why);
        }
}

/* ---- flow: create_vm_from_template ---- */

static void vm_from_template_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        enum engine_phase phase = engine_cmd_phase(cmd) == ENGINE_PHASE_NEW ? ENGINE_PHASE_MAIN : engine_cmd_phase(cmd);
        const char *vm = js(p, "vm");
        bool clone = json_is_true(json_object_get(p, "clone"));
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st;

        if (phase == ENGINE_PHASE_MAIN) {
                if (ji(cmd, "cancel") && !json_object_get(data, "children")) {
                        go_cleanup(e, cmd, data, "cancelled");
                        return;
                }
                st = clone ? run_disks(e, cmd, p, data, make_collapsed_copy, MIN(n, MAX_PARALLEL_DISKS), &error)
                           : run_disks(e, cmd, p, data, make_thin, n, &error);
                if (st == ENGINE_CHILDREN_ACTIVE) {
                        engine_cmd_update(e, js(cmd, "id"), phase, data);
                } else if (st == ENGINE_CHILDREN_FAILED) {
                        go_cleanup(e, cmd, data, error);
                } else {
                        unlock_disks(e, cmd, "ok");
                        unlock_vm(e, cmd, vm);
                        job_end(e, cmd, true, NULL);
                        for (size_t i = 0; i < n; i++)
                                engine_disk_size_refresh(e, js(flow_disk(p, i), "img"));
                        engine_event(e, "normal", js(cmd, "id"), "VM %s created from template %s (%s)", js(p, "name"),
                                     js(p, "template"), clone ? "cloned" : "thin");
                }
                return;
        }
        if (!cleanup_images(e, cmd, p, data))
                return;
        for (size_t i = 0; i < n; i++)
                delete_disk_rows(e, js(flow_disk(p, i), "img"));
        store_check(engine_store_vm_delete(e->db, vm, false, &store_error), &store_error, "the removal", vm);
        {
                g_autofree char *why = g_strdup(js(data, "error"));

                job_end(e, cmd, false, why);
                engine_event(e, "warning", js(cmd, "id"), "VM %s was not created: %s", js(p, "name"), why);
        }
}

/* ---- flow: create_snapshot ---- */

static void snapshot_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st = run_disks(e, cmd, p, data, make_snapshot_leaf, n, &error);
        unsigned made = 0;

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                g_autofree char *state = child_state(e, data, i, NULL);
                json_t *d = flow_disk(p, i);

                if (g_strcmp0(state, "succeeded") == 0) {
                        /* The new leaf is the disk's active layer: qcow2 from now on. */
                        store_check(engine_store_disk_set_format(e->db, js(d, "img"), "cow", &store_error), &store_error,
                                    "the format", js(d, "img"));
                        made++;
                } else {
                        store_check(engine_store_volume_delete(e->db, js(d, "vol"), js(d, "sd"), &store_error),
                                    &store_error, "the removal", js(d, "vol"));
                }
        }
        unlock_disks(e, cmd, "ok");
        unlock_vm(e, cmd, js(p, "vm"));
        if (st == ENGINE_CHILDREN_SUCCEEDED) {
                store_check(engine_store_snapshot_set_ok(e->db, js(p, "snapshot"), &store_error), &store_error,
                            "the status", js(p, "snapshot"));
                job_end(e, cmd, true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "snapshot %s of VM %s created", js(p, "snapshot"), js(p, "vm"));
                return;
        }
        /*
         * The leaves already made stay as the disks' active layers: empty
         * overlays, so the guest sees the same data; removing single volumes
         * is not an operation of this engine yet.
         */
        store_check(engine_store_snapshot_delete(e->db, js(p, "snapshot"), &store_error), &store_error, "the removal",
                    js(p, "snapshot"));
        job_end(e, cmd, false, error);
        engine_event(e, "warning", js(cmd, "id"), "snapshot of VM %s failed: %s; %u of %zu disks got an empty new leaf "
                     "volume, which stays their active layer", js(p, "vm"), error ? error : "unknown error", made, n);
}

/* ---- flows: remove_vm, remove_template ---- */

static void remove_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        size_t n = json_array_size(json_object_get(p, "disks"));
        bool vm = engine_cmd_kind(cmd) == ENGINE_KIND_REMOVE_VM;
        const char *owner = js(p, vm ? "vm" : "template");
        enum engine_children st = run_disks(e, cmd, p, data, make_remove, n, NULL);
        g_autofree char *first_error = NULL;
        unsigned failed = 0;

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                g_autofree char *error = NULL;
                g_autofree char *state = child_state(e, data, i, &error);
                const char *disk = js(flow_disk(p, i), "img");

                if (g_strcmp0(state, "succeeded") == 0) {
                        delete_disk_rows(e, disk);
                        continue;
                }
                /* Volumes may be gone or ILLEGAL now: the disk says so and stays attached. */
                store_check(engine_store_disk_unlock(e->db, disk, js(cmd, "job_id"), "illegal", &store_error), &store_error,
                            "the status", disk);
                if (!first_error)
                        first_error = g_strdup_printf("disk %s: %s", disk, error ? error : "not removed");
                failed++;
        }
        if (failed == 0) {
                if (vm) {
                        store_check(engine_store_vm_delete(e->db, owner, false, &store_error), &store_error, "the removal",
                                    owner);
                } else {
                        store_check(engine_store_template_delete(e->db, owner, &store_error), &store_error, "the removal",
                                    owner);
                }
                job_end(e, cmd, true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "%s %s removed with its %zu disk(s)", vm ? "VM" : "template",
                             js(p, "name"), n);
                return;
        }
        if (vm)
                unlock_vm(e, cmd, owner);
        else
                store_check(engine_store_template_set_status(e->db, owner, "illegal", &store_error), &store_error,
                            "the status", owner);
        job_end(e, cmd, false, first_error);
        engine_event(e, "warning", js(cmd, "id"), "%s %s: %u of %zu disk(s) not removed (%s); delete it again to retry",
                     vm ? "VM" : "template", js(p, "name"), failed, n, first_error);
}

void engine_vms_init(void)
{
        inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        /* Leaves call hosts: outside a transaction, so the job is committed before its call leaves. */
        engine_flow_register(thin_kind.type, thin_advance, false);
        engine_flow_register(seal_kind.type, seal_advance, false);
        engine_flow_register(ENGINE_KIND_CREATE_TEMPLATE_FROM_VM, template_flow, true);
        engine_flow_register(ENGINE_KIND_CREATE_VM_FROM_TEMPLATE, vm_from_template_flow, true);
        engine_flow_register(ENGINE_KIND_CREATE_SNAPSHOT, snapshot_flow, true);
        engine_flow_register(ENGINE_KIND_REMOVE_VM, remove_flow, true);
        engine_flow_register(ENGINE_KIND_REMOVE_TEMPLATE, remove_flow, true);
}
