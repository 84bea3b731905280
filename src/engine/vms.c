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
#include "http.h"
#include "vms.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define MAX_VM_DISKS 64
#define MAX_DESCRIPTION 256
#define STRUCTURE_WEIGHT 10.0
#define DATA_WEIGHT 90.0
#define MAX_PARALLEL_DISKS 8
#define LEAF_ATTEMPTS 5
#define SPM_CALL_TIMEOUT_MS 30000

/* ---- small helpers ---- */

static json_t *fail(GError **error, int status, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static json_t *fail(GError **error, int status, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_propagate_error(error, g_error_new_valist(ENGINE_ERROR, status, fmt, ap));
        va_end(ap);
        return NULL;
}

static bool name_valid(const char *s)
{
        size_t len = s ? strlen(s) : 0;

        if (len == 0 || len > 64)
                return false;
        for (const char *p = s; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr("_-. ", *p))
                        return false;
        return true;
}

/* An optional description: UTF-8, no control characters, at most MAX_DESCRIPTION bytes. */
static bool description_get(json_t *body, const char **ret, GError **error)
{
        json_t *v = json_object_get(body, "description");
        const char *s;

        *ret = "";
        if (!v || json_is_null(v))
                return true;
        s = json_string_value(v);
        if (!s || strlen(s) > MAX_DESCRIPTION) {
                fail(error, 400, "description must be a string of at most %d bytes", MAX_DESCRIPTION);
                return false;
        }
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p == 0x7f) {
                        fail(error, 400, "description must not contain control characters (newlines, tabs)");
                        return false;
                }
        *ret = s;
        return true;
}

static json_t *ref(const char *id)
{
        return id ? json_pack("{s:s}", "id", id) : json_null();
}

/* body[key] = {"id": uuid}; returns the id or NULL after a 400. */
static const char *ref_id(json_t *body, const char *key, GError **error)
{
        json_t *o = json_object_get(body, key);
        const char *id = js(o, "id");

        if (!json_is_object(o) || !id) {
                fail(error, 400, "missing %s: {\"id\": \"<uuid>\"}", key);
                return NULL;
        }
        if (!fy_uuid_is_valid(id)) {
                fail(error, 400, "%s.id must be a UUID", key);
                return NULL;
        }
        return id;
}

static json_t *row_by_id(struct engine *e, const char *table_sql, const char *what, const char *id, GError **error)
{
        json_t *row;

        if (!id || !fy_uuid_is_valid(id))
                return fail(error, 404, "no %s %.64s (ids are UUIDs)", what, id ? id : "");
        row = engine_db_query_one(e->db, error, table_sql, "s", id);
        if (!row && (!error || !*error))
                return fail(error, 404, "no %s %s", what, id);
        return row;
}

static json_t *vm_get(struct engine *e, const char *id, GError **error)
{
        return row_by_id(e, "SELECT * FROM vms WHERE id = ?", "VM", id, error);
}

static json_t *template_get(struct engine *e, const char *id, GError **error)
{
        return row_by_id(e, "SELECT * FROM templates WHERE id = ?", "template", id, error);
}

/* The disks attached to a VM (owner "vm_id") or a template ("template_id"), in attachment order. */
static json_t *owned_disks(struct engine *e, const char *owner_col, const char *owner)
{
        g_autofree char *sql = g_strdup_printf(
                "SELECT d.* FROM disks d JOIN disk_attachments a ON a.disk_id = d.id WHERE a.%s = ? "
                "ORDER BY a.created, a.rowid", owner_col);
        json_t *rows = engine_db_query(e->db, NULL, sql, "s", owner);

        return rows ? rows : json_array();
}

/* The volumes of a disk on its current domain, base first. */
static json_t *disk_volumes(struct engine *e, json_t *disk)
{
        json_t *rows = engine_db_query(e->db, NULL, "SELECT * FROM volumes WHERE disk_id = ? AND sd_id = ? ORDER BY position",
                                       "ss", js(disk, "id"), js(disk, "sd_id"));

        return rows ? rows : json_array();
}

/* A disk that an operation may read or change now: ok, with a LEGAL chain. */
static bool disk_usable(struct engine *e, json_t *disk, GError **error)
{
        g_autoptr(json_t) vols = NULL;
        size_t i;
        json_t *v;

        if (strcmp(js(disk, "status"), "ok") != 0) {
                fail(error, 409, "disk %s (%s) is %s; wait until its current operation ends", js(disk, "name"),
                     js(disk, "id"), js(disk, "status"));
                return false;
        }
        vols = disk_volumes(e, disk);
        if (json_array_size(vols) == 0) {
                fail(error, 409, "disk %s (%s) has no volumes", js(disk, "name"), js(disk, "id"));
                return false;
        }
        json_array_foreach(vols, i, v)
                if (strcmp(js(v, "legality"), "LEGAL") != 0) {
                        fail(error, 409, "disk %s (%s): volume %s is %s", js(disk, "name"), js(disk, "id"),
                             js(v, "id"), js(v, "legality"));
                        return false;
                }
        return true;
}

static char *job_insert(struct engine *e, const char *description, GError **error)
{
        char *id = fy_uuid_new();

        if (engine_db_exec(e->db, error, "INSERT INTO jobs (id, description, status, start_time) VALUES (?, ?, 'started', ?)",
                           "ssi", id, description, engine_now()) < 0) {
                g_free(id);
                return NULL;
        }
        return id;
}

static char *top_command_start(struct engine *e, enum engine_kind type, const char *job_id, json_t *params)
{
        char *id = engine_cmd_create(e, type, NULL, job_id, NULL, params);

        engine_db_exec(e->db, NULL, "UPDATE jobs SET command_id = ? WHERE id = ?", "ss", id, job_id);
        return id;
}

/* Sums what each domain must still hold (sd id → bytes) and refuses when a measured domain is short. */
static bool space_check(struct engine *e, GHashTable *needed, GError **error)
{
        GHashTableIter it;
        gpointer key, value;

        g_hash_table_iter_init(&it, needed);
        while (g_hash_table_iter_next(&it, &key, &value)) {
                g_autoptr(json_t) sd = engine_db_query_one(e->db, NULL, "SELECT name, free FROM storage_domains WHERE id = ?",
                                                           "s", (const char *) key);
                gint64 need = *(gint64 *) value;
                json_t *free_ = json_object_get(sd, "free");

                if (sd && json_is_integer(free_) && json_integer_value(free_) < need) {
                        fail(error, 507, "storage domain %s has %" JSON_INTEGER_FORMAT " bytes free, %" G_GINT64_FORMAT
                             " are needed", js(sd, "name"), json_integer_value(free_), need);
                        return false;
                }
        }
        return true;
}

static void space_add(GHashTable *needed, const char *sd, gint64 bytes)
{
        gint64 *v = g_hash_table_lookup(needed, sd);

        if (!v) {
                v = g_new0(gint64, 1);
                g_hash_table_insert(needed, g_strdup(sd), v);
        }
        *v += bytes;
}

static const char *pool_id(struct engine *e, json_t **holder)
{
        *holder = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);
        return js(*holder, "pool_id");
}

static bool host_up(struct engine *e, const char *host)
{
        g_autoptr(json_t) row = host ? engine_db_query_one(e->db, NULL, "SELECT status FROM hosts WHERE id = ?", "s", host)
                                     : NULL;

        return row && g_strcmp0(js(row, "status"), "up") == 0;
}

/* Sums the allocated bytes of each disk's volumes into disks.actual_size (best effort, asynchronous). */
struct size_ctx {
        struct engine *e;
        char *disk;
        unsigned pending;
        gint64 total;
        bool failed;
};

static void on_volume_size(json_t *result, const GError *error, void *userdata)
{
        struct size_ctx *c = userdata;

        if (result)
                c->total += json_integer_value(json_object_get(result, "truesize"));
        else
                c->failed = true;
        if (--c->pending > 0)
                return;
        if (!c->failed)
                engine_db_exec(c->e->db, NULL, "UPDATE disks SET actual_size = ? WHERE id = ?", "is", c->total, c->disk);
        g_free(c->disk);
        g_free(c);
}

static void disk_size_refresh(struct engine *e, const char *disk_id)
{
        g_autoptr(json_t) disk = engine_db_query_one(e->db, NULL, "SELECT * FROM disks WHERE id = ?", "s", disk_id);
        g_autoptr(json_t) vols = disk ? disk_volumes(e, disk) : NULL;
        g_autoptr(json_t) dc = NULL;
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);
        const char *pool = pool_id(e, &dc);
        struct size_ctx *c;
        size_t i;
        json_t *v;

        if (!vols || !pool || hosts->len == 0 || json_array_size(vols) == 0)
                return;
        c = g_new0(struct size_ctx, 1);
        c->e = e;
        c->disk = g_strdup(disk_id);
        c->pending = (unsigned) json_array_size(vols);
        json_array_foreach(vols, i, v)
                engine_host_call(e, hosts->pdata[0], "Volume.getInfo",
                                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", pool, "storagedomainID", js(v, "sd_id"),
                                           "imageID", js(v, "disk_id"), "volumeID", js(v, "id")),
                                 e->config.host_timeout, on_volume_size, c);
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
        g_autoptr(json_t) cmd = engine_db_query_one(c->e->db, NULL, "SELECT * FROM commands WHERE id = ?", "s", c->cmd_id);

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

                engine_db_exec(e->db, NULL, "UPDATE volumes SET legality = 'LEGAL' WHERE id = ? AND sd_id = ?", "ss",
                               js(p, "vol"), js(p, "sd"));
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
                engine_db_exec(e->db, NULL, "UPDATE steps SET status = 'waiting', detail = ? WHERE id = ? AND status = 'pending'",
                               "ss", k->spm ? "waiting for the SPM" : "waiting for a host", js(cmd, "step_id"));
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
        g_autoptr(json_t) row = id ? engine_db_query_one(e->db, NULL, "SELECT state, error FROM commands WHERE id = ?", "s", id)
                                   : NULL;

        if (!row)
                return NULL;
        if (ret_error)
                *ret_error = g_strdup(js(row, "error"));
        return g_strdup(js(row, "state"));
}

/* Ends a top-level flow's job and command in the caller's transaction. */
static void job_end(struct engine *e, json_t *cmd, bool ok, const char *error)
{
        engine_db_exec(e->db, NULL, "UPDATE jobs SET status = ?, end_time = ?, progress = CASE WHEN ? THEN 100 ELSE progress END "
                                    "WHERE id = ?", "sibs", ok ? "finished" : ji(cmd, "cancel") ? "aborted" : "failed",
                       engine_now(), ok, js(cmd, "job_id"));
        engine_cmd_finish(e, cmd, ok, error);
}

/* Unlocks what this job holds (never another operation's lock). */
static void unlock_disks(struct engine *e, json_t *cmd, const char *status)
{
        engine_db_exec(e->db, NULL, "UPDATE disks SET status = ?, progress = NULL, job_id = NULL WHERE job_id = ?", "ss",
                       status, js(cmd, "job_id"));
}

static void unlock_vm(struct engine *e, json_t *cmd, const char *vm)
{
        engine_db_exec(e->db, NULL, "UPDATE vms SET status = 'ok', job_id = NULL WHERE id = ? AND job_id = ?", "ss", vm,
                       js(cmd, "job_id"));
}

static void delete_disk_rows(struct engine *e, const char *disk)
{
        engine_db_exec(e->db, NULL, "DELETE FROM volumes WHERE disk_id = ?", "s", disk);
        engine_db_exec(e->db, NULL, "DELETE FROM disk_attachments WHERE disk_id = ?", "s", disk);
        engine_db_exec(e->db, NULL, "DELETE FROM disks WHERE id = ?", "s", disk);
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
                engine_db_exec(e->db, NULL, "UPDATE templates SET status = 'ok', job_id = NULL WHERE id = ?", "s", tmpl);
                unlock_disks(e, cmd, "ok");
                unlock_vm(e, cmd, js(p, "vm"));
                job_end(e, cmd, true, NULL);
                for (size_t i = 0; i < n; i++)
                        disk_size_refresh(e, js(flow_disk(p, i), "img"));
                engine_event(e, "normal", js(cmd, "id"), "template %s created from VM %s", js(p, "name"), js(p, "vm"));
                return;
        }
        /* cleanup */
        if (!cleanup_images(e, cmd, p, data))
                return;
        for (size_t i = 0; i < n; i++)
                delete_disk_rows(e, js(flow_disk(p, i), "img"));
        engine_db_exec(e->db, NULL, "DELETE FROM templates WHERE id = ?", "s", tmpl);
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
                                disk_size_refresh(e, js(flow_disk(p, i), "img"));
                        engine_event(e, "normal", js(cmd, "id"), "VM %s created from template %s (%s)", js(p, "name"),
                                     js(p, "template"), clone ? "cloned" : "thin");
                }
                return;
        }
        if (!cleanup_images(e, cmd, p, data))
                return;
        for (size_t i = 0; i < n; i++)
                delete_disk_rows(e, js(flow_disk(p, i), "img"));
        engine_db_exec(e->db, NULL, "DELETE FROM vms WHERE id = ?", "s", vm);
        {
                g_autofree char *why = g_strdup(js(data, "error"));

                job_end(e, cmd, false, why);
                engine_event(e, "warning", js(cmd, "id"), "VM %s was not created: %s", js(p, "name"), why);
        }
}

/* ---- flow: create_snapshot ---- */

static void snapshot_flow(struct engine *e, json_t *cmd)
{
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
                        engine_db_exec(e->db, NULL, "UPDATE disks SET format = 'cow' WHERE id = ?", "s", js(d, "img"));
                        made++;
                } else {
                        engine_db_exec(e->db, NULL, "DELETE FROM volumes WHERE id = ? AND sd_id = ?", "ss", js(d, "vol"),
                                       js(d, "sd"));
                }
        }
        unlock_disks(e, cmd, "ok");
        unlock_vm(e, cmd, js(p, "vm"));
        if (st == ENGINE_CHILDREN_SUCCEEDED) {
                engine_db_exec(e->db, NULL, "UPDATE snapshots SET status = 'ok', job_id = NULL WHERE id = ?", "s",
                               js(p, "snapshot"));
                job_end(e, cmd, true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "snapshot %s of VM %s created", js(p, "snapshot"), js(p, "vm"));
                return;
        }
        /*
         * The leaves already made stay as the disks' active layers: empty
         * overlays, so the guest sees the same data; removing single volumes
         * is not an operation of this engine yet.
         */
        engine_db_exec(e->db, NULL, "DELETE FROM snapshots WHERE id = ?", "s", js(p, "snapshot"));
        job_end(e, cmd, false, error);
        engine_event(e, "warning", js(cmd, "id"), "snapshot of VM %s failed: %s; %u of %zu disks got an empty new leaf "
                     "volume, which stays their active layer", js(p, "vm"), error ? error : "unknown error", made, n);
}

/* ---- flows: remove_vm, remove_template ---- */

static void remove_flow(struct engine *e, json_t *cmd)
{
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
                engine_db_exec(e->db, NULL, "UPDATE disks SET status = 'illegal', progress = NULL, job_id = NULL "
                                            "WHERE id = ? AND job_id = ?", "ss", disk, js(cmd, "job_id"));
                if (!first_error)
                        first_error = g_strdup_printf("disk %s: %s", disk, error ? error : "not removed");
                failed++;
        }
        if (failed == 0) {
                if (vm) {
                        engine_db_exec(e->db, NULL, "DELETE FROM snapshots WHERE vm_id = ?", "s", owner);
                        engine_db_exec(e->db, NULL, "DELETE FROM vms WHERE id = ?", "s", owner);
                } else {
                        engine_db_exec(e->db, NULL, "DELETE FROM templates WHERE id = ?", "s", owner);
                }
                job_end(e, cmd, true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "%s %s removed with its %zu disk(s)", vm ? "VM" : "template",
                             js(p, "name"), n);
                return;
        }
        if (vm)
                unlock_vm(e, cmd, owner);
        else
                engine_db_exec(e->db, NULL, "UPDATE templates SET status = 'illegal', job_id = NULL WHERE id = ?", "s", owner);
        job_end(e, cmd, false, first_error);
        engine_event(e, "warning", js(cmd, "id"), "%s %s: %u of %zu disk(s) not removed (%s); delete it again to retry",
                     vm ? "VM" : "template", js(p, "name"), failed, n, first_error);
}

void engine_vms_init(void)
{
        inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        engine_flow_register(thin_kind.type, thin_advance, true);
        engine_flow_register(seal_kind.type, seal_advance, true);
        engine_flow_register(ENGINE_KIND_CREATE_TEMPLATE_FROM_VM, template_flow, true);
        engine_flow_register(ENGINE_KIND_CREATE_VM_FROM_TEMPLATE, vm_from_template_flow, true);
        engine_flow_register(ENGINE_KIND_CREATE_SNAPSHOT, snapshot_flow, true);
        engine_flow_register(ENGINE_KIND_REMOVE_VM, remove_flow, true);
        engine_flow_register(ENGINE_KIND_REMOVE_TEMPLATE, remove_flow, true);
}

/* ---- REST: JSON shapes ---- */

static json_t *attachment_json(json_t *row)
{
        json_t *o = json_pack("{s:s, s:{s:s}, s:b, s:s, s:b}", "id", js(row, "disk_id"), "disk", "id", js(row, "disk_id"),
                              "bootable", ji(row, "bootable") != 0, "interface", js(row, "interface"), "active", true);

        if (js(row, "vm_id"))
                json_object_set_new(o, "vm", ref(js(row, "vm_id")));
        else
                json_object_set_new(o, "template", ref(js(row, "template_id")));
        return o;
}

static json_t *attachments_json(struct engine *e, const char *owner_col, const char *owner)
{
        g_autofree char *sql = g_strdup_printf("SELECT * FROM disk_attachments WHERE %s = ? ORDER BY created, rowid", owner_col);
        g_autoptr(json_t) rows = engine_db_query(e->db, NULL, sql, "s", owner);
        json_t *out = json_array();
        size_t i;
        json_t *row;

        json_array_foreach(rows, i, row)
                json_array_append_new(out, attachment_json(row));
        return out;
}

static json_t *vm_json(struct engine *e, json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:o}", "id", js(row, "id"), "name", js(row, "name"),
                              "description", js(row, "description"), "status", js(row, "status"),
                              "template", ref(js(row, "template_id")), "creation_time", ji(row, "created"),
                              "disk_attachments", attachments_json(e, "vm_id", js(row, "id")));

        if (js(row, "job_id"))
                json_object_set_new(o, "job", ref(js(row, "job_id")));
        return o;
}

static json_t *template_json(struct engine *e, json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:o}", "id", js(row, "id"), "name", js(row, "name"),
                              "description", js(row, "description"), "status", js(row, "status"),
                              "vm", ref(js(row, "vm_id")), "creation_time", ji(row, "created"),
                              "disk_attachments", attachments_json(e, "template_id", js(row, "id")));

        if (js(row, "job_id"))
                json_object_set_new(o, "job", ref(js(row, "job_id")));
        return o;
}

static json_t *snapshot_json(json_t *row)
{
        g_autoptr(json_t) disks = jparse(row, "disks");
        json_t *out = json_array();
        json_t *o;
        size_t i;
        json_t *d;

        json_array_foreach(disks, i, d)
                json_array_append_new(out, json_pack("{s:{s:s}, s:{s:s}, s:{s:s}}", "disk", "id", js(d, "disk"),
                                                     "volume", "id", js(d, "volume"), "active_volume", "id", js(d, "leaf")));
        o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:{s:s}, s:o}", "id", js(row, "id"), "description", js(row, "description"),
                      "snapshot_status", js(row, "status"), "snapshot_type", "regular", "date", ji(row, "created"),
                      "vm", "id", js(row, "vm_id"), "disks", out);
        if (js(row, "job_id"))
                json_object_set_new(o, "job", ref(js(row, "job_id")));
        return o;
}

/* ---- REST: per-disk options of a template or a cloned VM ---- */

struct disk_choice {
        const char *format;            /* NULL: not given */
        int sparse;                    /* -1: not given */
        char *sd;                      /* NULL: not given */
};

static void disk_choice_free(void *p)
{
        struct disk_choice *c = p;

        g_free(c->sd);
        g_free(c);
}

/*
 * body.disks: [{"id", "format"?, "sparse"?, "storage_domain"?}] naming disks of `disks`
 * (rows). Returns id → struct disk_choice for those listed; NULL after a 400/404.
 */
static GHashTable *disk_choices(struct engine *e, json_t *body, json_t *disks, const char *whose, GError **error)
{
        g_autoptr(GHashTable) out = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, disk_choice_free);
        json_t *list = json_object_get(body, "disks");
        size_t i, j;
        json_t *item, *row;

        if (!list || json_is_null(list))
                return g_steal_pointer(&out);
        if (!json_is_array(list) || json_array_size(list) > MAX_VM_DISKS) {
                fail(error, 400, "disks must be a list of at most %d {\"id\", \"format\", \"sparse\", \"storage_domain\"}",
                     MAX_VM_DISKS);
                return NULL;
        }
        json_array_foreach(list, i, item) {
                const char *id = js(item, "id");
                const char *format = js(item, "format");
                json_t *sparse = json_object_get(item, "sparse");
                json_t *sdref = json_object_get(item, "storage_domain");
                struct disk_choice *c;
                bool known = false;

                if (!json_is_object(item) || !id || !fy_uuid_is_valid(id)) {
                        fail(error, 400, "disks[%zu].id must be the UUID of a disk of the %s", i, whose);
                        return NULL;
                }
                json_array_foreach(disks, j, row)
                        known |= strcmp(js(row, "id"), id) == 0;
                if (!known) {
                        fail(error, 400, "disks[%zu]: disk %s is not a disk of the %s", i, id, whose);
                        return NULL;
                }
                if (g_hash_table_contains(out, id)) {
                        fail(error, 400, "disks[%zu]: disk %s is listed twice", i, id);
                        return NULL;
                }
                if (json_object_get(item, "format") && (!format || (strcmp(format, "raw") != 0 && strcmp(format, "cow") != 0))) {
                        fail(error, 400, "disks[%zu].format must be raw or cow", i);
                        return NULL;
                }
                if (sparse && !json_is_boolean(sparse)) {
                        fail(error, 400, "disks[%zu].sparse must be true or false", i);
                        return NULL;
                }
                c = g_new0(struct disk_choice, 1);
                c->format = format;
                c->sparse = sparse ? json_is_true(sparse) : -1;
                g_hash_table_insert(out, g_strdup(id), c);
                if (sdref) {
                        const char *sd = ref_id(item, "storage_domain", error);
                        g_autoptr(json_t) srow = NULL;

                        if (!sd) {
                                g_prefix_error(error, "disks[%zu]: ", i);
                                return NULL;
                        }
                        srow = engine_db_query_one(e->db, NULL, "SELECT id FROM storage_domains WHERE id = ?", "s", sd);
                        if (!srow) {
                                fail(error, 404, "disks[%zu]: no storage domain %s", i, sd);
                                return NULL;
                        }
                        c->sd = g_strdup(sd);
                }
        }
        return g_steal_pointer(&out);
}

/* ---- REST: actions ---- */

#define MAX_CHAIN 64   /* volumes per disk; the agent reads chains up to 128 deep */

static bool name_free(struct engine *e, const char *table, const char *name, const char *what, GError **error)
{
        g_autofree char *sql = g_strdup_printf("SELECT id FROM %s WHERE name = ?", table);
        g_autoptr(json_t) row = engine_db_query_one(e->db, NULL, sql, "s", name);

        if (row) {
                fail(error, 409, "a %s named \"%s\" exists already (%s)", what, name, js(row, "id"));
                return false;
        }
        return true;
}

/* Locks a row of this transaction's job only if it is free now: false after a 409 (a race lost). */
static bool lock_disk(struct engine *e, json_t *disk, const char *job, GError **error)
{
        engine_db_exec(e->db, NULL, "UPDATE disks SET status = 'locked', progress = 0, job_id = ? WHERE id = ? AND status = ?",
                       "sss", job, js(disk, "id"), js(disk, "status"));
        if (engine_db_changes(e->db) != 1) {
                fail(error, 409, "disk %s changed meanwhile; try again", js(disk, "name"));
                return false;
        }
        return true;
}

static bool lock_vm(struct engine *e, json_t *vm, const char *job, GError **error)
{
        engine_db_exec(e->db, NULL, "UPDATE vms SET status = 'locked', job_id = ? WHERE id = ? AND status = 'ok'", "ss",
                       job, js(vm, "id"));
        if (engine_db_changes(e->db) != 1) {
                fail(error, 409, "VM %s changed meanwhile; try again", js(vm, "name"));
                return false;
        }
        return true;
}

static void insert_disk(struct engine *e, json_t *d, const char *name, const char *job, const char *parent)
{
        engine_db_exec(e->db, NULL,
                       "INSERT INTO disks (id, name, sd_id, status, format, sparse, provisioned_size, progress, job_id, created) "
                       "VALUES (?, ?, ?, 'locked', ?, ?, ?, 0, ?, ?)", "ssssbisi", js(d, "img"), name, js(d, "sd"),
                       js(d, "format"), json_is_true(json_object_get(d, "sparse")), ji(d, "capacity"), job, engine_now());
        engine_db_exec(e->db, NULL,
                       "INSERT INTO volumes (id, disk_id, sd_id, parent, position, format, sparse, capacity, legality) "
                       "VALUES (?, ?, ?, ?, 0, ?, ?, ?, 'ILLEGAL')", "sssssbi", js(d, "vol"), js(d, "img"), js(d, "sd"),
                       parent, js(d, "format"), json_is_true(json_object_get(d, "sparse")), ji(d, "capacity"));
}

static void attach(struct engine *e, const char *disk, const char *vm, const char *tmpl, bool bootable, const char *iface)
{
        engine_db_exec(e->db, NULL, "INSERT INTO disk_attachments (disk_id, vm_id, template_id, bootable, interface, created) "
                                    "VALUES (?, ?, ?, ?, ?, ?)", "sssbsi", disk, vm, tmpl, bootable, iface, engine_now());
}

/* The chain's leaf and its capacity (the largest of the chain). */
static json_t *disk_leaf(struct engine *e, json_t *disk)
{
        g_autoptr(json_t) vols = disk_volumes(e, disk);
        size_t n = json_array_size(vols);

        return n ? json_incref(json_array_get(vols, n - 1)) : NULL;
}

static json_t *template_create(struct engine *e, json_t *body, GError **error)
{
        g_autoptr(json_t) vm = NULL;
        g_autoptr(json_t) disks = NULL;
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) params = NULL;
        g_autoptr(GHashTable) choices = NULL;
        g_autoptr(GHashTable) needed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *tmpl = fy_uuid_new();
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = NULL;
        const char *name = js(body, "name");
        const char *desc, *vm_id;
        gint64 total = 0;
        size_t i;
        json_t *disk, *d;

        if (!name_valid(name))
                return fail(error, 400, "name must be 1-64 letters, digits, spaces or _-. characters");
        if (!description_get(body, &desc, error) || !(vm_id = ref_id(body, "vm", error)))
                return NULL;
        if (!(vm = vm_get(e, vm_id, error)) || !name_free(e, "templates", name, "template", error))
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        disks = owned_disks(e, "vm_id", vm_id);
        json_array_foreach(disks, i, disk)
                if (!disk_usable(e, disk, error))
                        return NULL;
        if (!(choices = disk_choices(e, body, disks, "VM", error)))
                return NULL;
        json_array_foreach(disks, i, disk) {
                g_autoptr(json_t) leaf = disk_leaf(e, disk);
                g_autoptr(json_t) vols = disk_volumes(e, disk);
                struct disk_choice *c = g_hash_table_lookup(choices, js(disk, "id"));
                g_autofree char *img = fy_uuid_new();
                g_autofree char *vol = fy_uuid_new();
                gint64 cap = ji(leaf, "capacity");
                /* Collapsed: a chain or a qcow2 disk stays qcow2 unless asked otherwise. */
                const char *format = c && c->format ? c->format :
                                     (json_array_size(vols) > 1 || strcmp(js(leaf, "format"), "cow") == 0) ? "cow" : "raw";
                bool sparse = c && c->sparse >= 0 ? c->sparse : ji(disk, "sparse") != 0;
                const char *sd = c && c->sd ? c->sd : js(disk, "sd_id");

                total += cap;
                space_add(needed, sd, sparse ? ji(disk, "actual_size") : cap);
                json_array_append_new(plan, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b}",
                                                      "vm_disk", js(disk, "id"), "name", js(disk, "name"),
                                                      "src_sd", js(disk, "sd_id"), "src_img", js(disk, "id"),
                                                      "src_vol", js(leaf, "id"), "sd", sd, "img", img, "vol", vol,
                                                      "capacity", (json_int_t) cap, "format", format, "sparse", sparse));
        }
        if (!space_check(e, needed, error))
                return NULL;
        json_array_foreach(plan, i, d) {
                json_object_set_new(d, "structure_weight", json_real(STRUCTURE_WEIGHT / (double) json_array_size(plan)));
                json_object_set_new(d, "data_weight", json_real(DATA_WEIGHT * (double) ji(d, "capacity") / (double) MAX(total, 1)));
        }

        jdesc = g_strdup_printf("Creating template %s from VM %s", name, js(vm, "name"));
        if (engine_db_begin(e->db, error) < 0)
                return NULL;
        if (!(job = job_insert(e, jdesc, error)))
                goto rollback;
        if (engine_db_exec(e->db, error, "INSERT INTO templates (id, name, description, status, vm_id, job_id, created) "
                                         "VALUES (?, ?, ?, 'locked', ?, ?, ?)", "sssssi", tmpl, name, desc, vm_id, job,
                           engine_now()) < 0) {
                g_clear_error(error);
                fail(error, 409, "a template named \"%s\" exists already", name);
                goto rollback;
        }
        /* Read only while copied: the VM cannot get snapshots or other disks meanwhile. */
        if (!lock_vm(e, vm, job, error))
                goto rollback;
        json_array_foreach(disks, i, disk)
                if (!lock_disk(e, disk, job, error))
                        goto rollback;
        json_array_foreach(plan, i, d) {
                insert_disk(e, d, js(d, "name"), job, NULL);
                attach(e, js(d, "img"), NULL, tmpl, i == 0, "virtio_scsi");
        }
        params = json_pack("{s:s, s:s, s:s, s:O}", "template", tmpl, "name", name, "vm", vm_id, "disks", plan);
        cmd = top_command_start(e, ENGINE_KIND_CREATE_TEMPLATE_FROM_VM, job, params);
        if (engine_db_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        return json_pack("{s:{s:s, s:s}, s:{s:s}}", "template", "id", tmpl, "name", name, "job", "id", job);
rollback:
        engine_db_rollback(e->db);
        return NULL;
}

/* POST /api/vms: an empty VM (201) or one made from a template (202 with the job). */
static json_t *vm_create(struct engine *e, json_t *body, int *ret_status, GError **error)
{
        g_autoptr(json_t) tmpl = NULL;
        g_autoptr(json_t) disks = NULL;
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) params = NULL;
        g_autoptr(GHashTable) choices = NULL;
        g_autoptr(GHashTable) needed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *vm = fy_uuid_new();
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = NULL;
        const char *name = js(body, "name");
        json_t *clone_v = json_object_get(body, "clone");
        const char *desc, *tmpl_id;
        bool clone;
        gint64 total = 0;
        size_t i;
        json_t *disk, *d;

        if (!name_valid(name))
                return fail(error, 400, "name must be 1-64 letters, digits, spaces or _-. characters");
        if (!description_get(body, &desc, error))
                return NULL;
        if (clone_v && !json_is_boolean(clone_v))
                return fail(error, 400, "clone must be true or false");
        clone = json_is_true(clone_v);
        if (!json_object_get(body, "template")) {
                if (clone_v || json_object_get(body, "disks"))
                        return fail(error, 400, "\"clone\" and \"disks\" need a \"template\": {\"id\"}");
                if (!name_free(e, "vms", name, "VM", error))
                        return NULL;
                if (engine_db_exec(e->db, NULL, "INSERT INTO vms (id, name, description, status, created) "
                                                "VALUES (?, ?, ?, 'ok', ?)", "sssi", vm, name, desc, engine_now()) < 0)
                        return fail(error, 409, "a VM named \"%s\" exists already", name);
                *ret_status = 201;
                {
                        g_autoptr(json_t) row = engine_db_query_one(e->db, error, "SELECT * FROM vms WHERE id = ?", "s", vm);
                        return row ? vm_json(e, row) : NULL;
                }
        }
        if (!(tmpl_id = ref_id(body, "template", error)) || !(tmpl = template_get(e, tmpl_id, error)) ||
            !name_free(e, "vms", name, "VM", error))
                return NULL;
        if (strcmp(js(tmpl, "status"), "ok") != 0)
                return fail(error, 409, "template %s is %s; a VM can be made from it once it is ok", js(tmpl, "name"),
                            js(tmpl, "status"));
        disks = owned_disks(e, "template_id", tmpl_id);
        json_array_foreach(disks, i, disk)
                if (!disk_usable(e, disk, error))
                        return NULL;
        if (!(choices = disk_choices(e, body, disks, "template", error)))
                return NULL;
        json_array_foreach(disks, i, disk) {
                g_autoptr(json_t) leaf = disk_leaf(e, disk);
                struct disk_choice *c = g_hash_table_lookup(choices, js(disk, "id"));
                g_autofree char *img = fy_uuid_new();
                g_autofree char *vol = fy_uuid_new();
                gint64 cap = ji(leaf, "capacity");
                const char *format = "cow", *sd = js(disk, "sd_id");
                bool sparse = true;

                if (!clone && c && ((c->format && strcmp(c->format, "cow") != 0) || c->sparse == 0 ||
                                    (c->sd && strcmp(c->sd, sd) != 0)))
                        return fail(error, 400, "disk %s: a thin VM's disk is a sparse qcow2 layer on the template's volume, "
                                    "on the template disk's storage domain; pass \"clone\": true to choose format, "
                                    "allocation or storage domain", js(disk, "id"));
                if (clone) {
                        format = c && c->format ? c->format : js(disk, "format");
                        sparse = c && c->sparse >= 0 ? c->sparse : ji(disk, "sparse") != 0;
                        sd = c && c->sd ? c->sd : sd;
                        space_add(needed, sd, sparse ? ji(disk, "actual_size") : cap);
                }
                total += cap;
                json_array_append_new(plan, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b}",
                                                      "template_disk", js(disk, "id"), "name", js(disk, "name"),
                                                      "src_sd", js(disk, "sd_id"), "src_img", js(disk, "id"),
                                                      "src_vol", js(leaf, "id"), "sd", sd, "img", img, "vol", vol,
                                                      "capacity", (json_int_t) cap, "format", format, "sparse", sparse));
        }
        if (!space_check(e, needed, error))
                return NULL;
        json_array_foreach(plan, i, d) {
                json_object_set_new(d, "structure_weight", json_real(STRUCTURE_WEIGHT / (double) json_array_size(plan)));
                json_object_set_new(d, "data_weight", json_real(DATA_WEIGHT * (double) ji(d, "capacity") / (double) MAX(total, 1)));
        }

        jdesc = g_strdup_printf("Creating VM %s from template %s (%s)", name, js(tmpl, "name"), clone ? "clone" : "thin");
        if (engine_db_begin(e->db, error) < 0)
                return NULL;
        if (!(job = job_insert(e, jdesc, error)))
                goto rollback;
        if (engine_db_exec(e->db, error, "INSERT INTO vms (id, name, description, status, template_id, job_id, created) "
                                         "VALUES (?, ?, ?, 'locked', ?, ?, ?)", "sssssi", vm, name, desc, tmpl_id, job,
                           engine_now()) < 0) {
                g_clear_error(error);
                fail(error, 409, "a VM named \"%s\" exists already", name);
                goto rollback;
        }
        json_array_foreach(plan, i, d) {
                insert_disk(e, d, js(d, "name"), job, clone ? NULL : js(d, "src_vol"));
                attach(e, js(d, "img"), vm, NULL, i == 0, "virtio_scsi");
        }
        params = json_pack("{s:s, s:s, s:s, s:b, s:O}", "vm", vm, "name", name, "template", tmpl_id, "clone", clone,
                           "disks", plan);
        cmd = top_command_start(e, ENGINE_KIND_CREATE_VM_FROM_TEMPLATE, job, params);
        if (engine_db_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        *ret_status = 202;
        return json_pack("{s:{s:s, s:s}, s:{s:s}}", "vm", "id", vm, "name", name, "job", "id", job);
rollback:
        engine_db_rollback(e->db);
        return NULL;
}

static json_t *snapshot_create(struct engine *e, const char *vm_id, json_t *body, GError **error)
{
        g_autoptr(json_t) vm = NULL;
        g_autoptr(json_t) disks = NULL;
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) snapdisks = json_array();
        g_autoptr(json_t) params = NULL;
        g_autofree char *snap = fy_uuid_new();
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = NULL;
        const char *desc;
        size_t i;
        json_t *disk, *d;

        if (!(vm = vm_get(e, vm_id, error)) || !description_get(body, &desc, error))
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        disks = owned_disks(e, "vm_id", vm_id);
        if (json_array_size(disks) == 0)
                return fail(error, 409, "VM %s has no disks to snapshot", js(vm, "name"));
        json_array_foreach(disks, i, disk) {
                g_autoptr(json_t) vols = NULL;
                g_autoptr(json_t) leaf = NULL;
                g_autofree char *vol = fy_uuid_new();

                if (!disk_usable(e, disk, error))
                        return NULL;
                vols = disk_volumes(e, disk);
                leaf = disk_leaf(e, disk);
                if (json_array_size(vols) >= MAX_CHAIN)
                        return fail(error, 409, "disk %s has %zu volumes already, the most a chain may have; "
                                    "merging snapshots is not supported yet", js(disk, "name"), json_array_size(vols));
                json_array_append_new(plan, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "disk", js(disk, "id"),
                                                      "sd", js(disk, "sd_id"), "img", js(disk, "id"), "vol", vol,
                                                      "parent", js(leaf, "id"), "capacity", ji(leaf, "capacity"),
                                                      "position", (json_int_t) json_array_size(vols)));
                json_array_append_new(snapdisks, json_pack("{s:s, s:s, s:s}", "disk", js(disk, "id"), "volume", js(leaf, "id"),
                                                           "leaf", vol));
        }

        jdesc = g_strdup_printf("Creating snapshot of VM %s", js(vm, "name"));
        if (engine_db_begin(e->db, error) < 0)
                return NULL;
        if (!(job = job_insert(e, jdesc, error)) || !lock_vm(e, vm, job, error))
                goto rollback;
        json_array_foreach(disks, i, disk)
                if (!lock_disk(e, disk, job, error))
                        goto rollback;
        json_array_foreach(plan, i, d)
                engine_db_exec(e->db, NULL,
                               "INSERT INTO volumes (id, disk_id, sd_id, parent, position, format, sparse, capacity, legality) "
                               "VALUES (?, ?, ?, ?, ?, 'cow', 1, ?, 'ILLEGAL')", "ssssii", js(d, "vol"), js(d, "img"),
                               js(d, "sd"), js(d, "parent"), ji(d, "position"), ji(d, "capacity"));
        engine_db_exec(e->db, NULL, "INSERT INTO snapshots (id, vm_id, description, status, disks, job_id, created) "
                                    "VALUES (?, ?, ?, 'locked', ?, ?, ?)", "sssjsi", snap, vm_id, desc, snapdisks, job,
                       engine_now());
        params = json_pack("{s:s, s:s, s:O}", "vm", vm_id, "snapshot", snap, "disks", plan);
        cmd = top_command_start(e, ENGINE_KIND_CREATE_SNAPSHOT, job, params);
        if (engine_db_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        return json_pack("{s:{s:s}, s:{s:s}}", "snapshot", "id", snap, "job", "id", job);
rollback:
        engine_db_rollback(e->db);
        return NULL;
}

/* Starts the removal of an owner's disks through the SPM; the flow deletes the rows. */
static json_t *owner_remove(struct engine *e, json_t *owner, bool vm, json_t *disks, GError **error)
{
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) params = NULL;
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = g_strdup_printf("Removing %s %s and its %zu disk(s)", vm ? "VM" : "template",
                                                  js(owner, "name"), json_array_size(disks));
        size_t i;
        json_t *disk;

        json_array_foreach(disks, i, disk) {
                if (strcmp(js(disk, "status"), "locked") == 0)
                        return fail(error, 409, "disk %s (%s) is locked by a running operation (job %s)", js(disk, "name"),
                                    js(disk, "id"), js(disk, "job_id"));
                json_array_append_new(plan, json_pack("{s:s, s:s}", "img", js(disk, "id"), "sd", js(disk, "sd_id")));
        }
        if (engine_db_begin(e->db, error) < 0)
                return NULL;
        if (!(job = job_insert(e, jdesc, error)))
                goto rollback;
        if (vm) {
                if (!lock_vm(e, owner, job, error))
                        goto rollback;
        } else {
                engine_db_exec(e->db, NULL, "UPDATE templates SET status = 'locked', job_id = ? WHERE id = ? AND status != 'locked'",
                               "ss", job, js(owner, "id"));
                if (engine_db_changes(e->db) != 1) {
                        fail(error, 409, "template %s changed meanwhile; try again", js(owner, "name"));
                        goto rollback;
                }
        }
        json_array_foreach(disks, i, disk)
                if (!lock_disk(e, disk, job, error))
                        goto rollback;
        params = json_pack("{s:s, s:s, s:O}", vm ? "vm" : "template", js(owner, "id"), "name", js(owner, "name"),
                           "disks", plan);
        cmd = top_command_start(e, vm ? ENGINE_KIND_REMOVE_VM : ENGINE_KIND_REMOVE_TEMPLATE, job, params);
        if (engine_db_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        return json_pack("{s:{s:s}}", "job", "id", job);
rollback:
        engine_db_rollback(e->db);
        return NULL;
}

static json_t *vm_remove(struct engine *e, const char *vm_id, bool detach_only, int *ret_status, GError **error)
{
        g_autoptr(json_t) vm = vm_get(e, vm_id, error);
        g_autoptr(json_t) disks = NULL;

        if (!vm)
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        disks = owned_disks(e, "vm_id", vm_id);
        if (!detach_only && json_array_size(disks) > 0) {
                *ret_status = 202;
                return owner_remove(e, vm, true, disks, error);
        }
        /* Nothing on storage changes: the disks stay, unattached. */
        if (engine_db_begin(e->db, error) < 0)
                return NULL;
        engine_db_exec(e->db, NULL, "DELETE FROM disk_attachments WHERE vm_id = ?", "s", vm_id);
        engine_db_exec(e->db, NULL, "DELETE FROM snapshots WHERE vm_id = ?", "s", vm_id);
        engine_db_exec(e->db, NULL, "DELETE FROM vms WHERE id = ? AND status = 'ok'", "s", vm_id);
        if (engine_db_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", NULL, "VM %s removed; its %zu disk(s) stay, detached", js(vm, "name"), json_array_size(disks));
        *ret_status = 200;
        return json_pack("{s:{s:s}, s:I}", "vm", "id", vm_id, "detached_disks", (json_int_t) json_array_size(disks));
}

/* Names of what is layered on the template's volumes (thin VMs, or their disks once detached), up to 10. */
static char *template_dependents(struct engine *e, const char *tmpl)
{
        g_autoptr(json_t) rows = engine_db_query(e->db, NULL,
                "SELECT DISTINCT COALESCE('VM ' || vm.name, 'disk ' || d.name || ' (' || d.id || ')') AS who "
                "FROM volumes v JOIN disks d ON d.id = v.disk_id "
                "LEFT JOIN disk_attachments a ON a.disk_id = d.id LEFT JOIN vms vm ON vm.id = a.vm_id "
                "WHERE v.parent IN (SELECT tv.id FROM volumes tv JOIN disk_attachments ta ON ta.disk_id = tv.disk_id "
                "                   WHERE ta.template_id = ?1) "
                "UNION SELECT 'VM ' || name || ' (being created)' FROM vms WHERE template_id = ?1 AND status = 'locked' "
                "ORDER BY 1 LIMIT 11", "s", tmpl);
        g_autoptr(GString) s = g_string_new(NULL);
        size_t i;
        json_t *row;

        if (!rows || json_array_size(rows) == 0)
                return rows ? NULL : g_strdup("(the inventory could not be read)");
        json_array_foreach(rows, i, row) {
                if (i == 10) {
                        g_string_append(s, ", …");
                        break;
                }
                g_string_append_printf(s, "%s%s", i ? ", " : "", js(row, "who"));
        }
        return g_string_free(g_steal_pointer(&s), FALSE);
}

static json_t *template_remove(struct engine *e, const char *tmpl_id, int *ret_status, GError **error)
{
        g_autoptr(json_t) tmpl = template_get(e, tmpl_id, error);
        g_autoptr(json_t) disks = NULL;
        g_autofree char *users = NULL;

        if (!tmpl)
                return NULL;
        if (strcmp(js(tmpl, "status"), "locked") == 0)
                return fail(error, 409, "template %s is locked by a running operation (job %s)", js(tmpl, "name"),
                            js(tmpl, "job_id"));
        users = template_dependents(e, tmpl_id);
        if (users)
                return fail(error, 409, "template %s cannot be removed: thin VMs read its volumes: %s; remove them "
                            "(or move/copy their disks, which makes them independent) first", js(tmpl, "name"), users);
        disks = owned_disks(e, "template_id", tmpl_id);
        if (json_array_size(disks) == 0) {
                engine_db_exec(e->db, NULL, "DELETE FROM templates WHERE id = ?", "s", tmpl_id);
                *ret_status = 200;
                return json_pack("{s:{s:s}}", "template", "id", tmpl_id);
        }
        *ret_status = 202;
        return owner_remove(e, tmpl, false, disks, error);
}

static const char *const interfaces[] = { "virtio", "virtio_scsi", "ide", "sata", "spapr_vscsi", NULL };

static json_t *disk_attach(struct engine *e, const char *vm_id, json_t *body, GError **error)
{
        g_autoptr(json_t) vm = vm_get(e, vm_id, error);
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) att = NULL;
        g_autoptr(json_t) count = NULL;
        json_t *bootable = json_object_get(body, "bootable");
        json_t *iface_v = json_object_get(body, "interface");
        const char *iface = iface_v ? json_string_value(iface_v) : "virtio_scsi";
        const char *disk_id;

        if (!vm || !(disk_id = ref_id(body, "disk", error)))
                return NULL;
        if (bootable && !json_is_boolean(bootable))
                return fail(error, 400, "bootable must be true or false");
        if (!iface || !g_strv_contains(interfaces, iface))
                return fail(error, 400, "interface must be one of virtio, virtio_scsi, ide, sata, spapr_vscsi");
        if (!(disk = row_by_id(e, "SELECT * FROM disks WHERE id = ?", "disk", disk_id, error)))
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        att = engine_db_query_one(e->db, NULL, "SELECT a.*, v.name AS vm_name, t.name AS template_name FROM disk_attachments a "
                                              "LEFT JOIN vms v ON v.id = a.vm_id LEFT JOIN templates t ON t.id = a.template_id "
                                              "WHERE a.disk_id = ?", "s", disk_id);
        if (att && js(att, "template_id"))
                return fail(error, 409, "disk %s belongs to template %s and cannot be attached to a VM; "
                            "create a VM from the template instead", js(disk, "name"), js(att, "template_name"));
        if (att)
                return fail(error, 409, "disk %s is attached to VM %s already; a disk belongs to at most one VM "
                            "(detach it there first)", js(disk, "name"), js(att, "vm_name"));
        if (strcmp(js(disk, "status"), "ok") != 0)
                return fail(error, 409, "disk %s is %s; only a disk that is ok can be attached", js(disk, "name"),
                            js(disk, "status"));
        count = engine_db_query_one(e->db, NULL, "SELECT COUNT(*) AS n FROM disk_attachments WHERE vm_id = ?", "s", vm_id);
        if (ji(count, "n") >= MAX_VM_DISKS)
                return fail(error, 409, "VM %s has %d disks, the most it may have", js(vm, "name"), MAX_VM_DISKS);
        if (engine_db_exec(e->db, NULL, "INSERT INTO disk_attachments (disk_id, vm_id, bootable, interface, created) "
                                        "VALUES (?, ?, ?, ?, ?)", "ssbsi", disk_id, vm_id, json_is_true(bootable), iface,
                           engine_now()) < 0)
                return fail(error, 409, "disk %s was attached elsewhere meanwhile", js(disk, "name"));
        att = engine_db_query_one(e->db, error, "SELECT * FROM disk_attachments WHERE disk_id = ?", "s", disk_id);
        return att ? attachment_json(att) : NULL;
}

static json_t *disk_detach(struct engine *e, const char *vm_id, const char *disk_id, GError **error)
{
        g_autoptr(json_t) vm = vm_get(e, vm_id, error);
        g_autoptr(json_t) att = NULL;
        g_autoptr(json_t) disk = NULL;

        if (!vm)
                return NULL;
        att = fy_uuid_is_valid(disk_id) ? engine_db_query_one(e->db, NULL, "SELECT * FROM disk_attachments WHERE disk_id = ? "
                                                                           "AND vm_id = ?", "ss", disk_id, vm_id) : NULL;
        if (!att)
                return fail(error, 404, "disk %.64s is not attached to VM %s", disk_id, js(vm, "name"));
        disk = engine_db_query_one(e->db, NULL, "SELECT * FROM disks WHERE id = ?", "s", disk_id);
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        if (disk && strcmp(js(disk, "status"), "locked") == 0)
                return fail(error, 409, "disk %s is locked by a running operation (job %s)", js(disk, "name"), js(disk, "job_id"));
        engine_db_exec(e->db, NULL, "DELETE FROM disk_attachments WHERE disk_id = ? AND vm_id = ?", "ss", disk_id, vm_id);
        return attachment_json(att);
}

/* ---- REST: routing ---- */

static json_t *fmt_vm(struct engine *e, json_t *row) { return vm_json(e, row); }
static json_t *fmt_template(struct engine *e, json_t *row) { return template_json(e, row); }
static json_t *fmt_snapshot(struct engine *e, json_t *row) { return snapshot_json(row); }

/* {key: [fmt(row)…]} for the rows of sql (with one optional string argument). */
static json_t *list_json(struct engine *e, const char *key, const char *sql, const char *arg,
                         json_t *(*fmt)(struct engine *, json_t *), GError **error)
{
        g_autoptr(json_t) rows = arg ? engine_db_query(e->db, error, sql, "s", arg) : engine_db_query(e->db, error, sql, "");
        json_t *out;
        size_t i;
        json_t *row;

        if (!rows)
                return NULL;
        out = json_array();
        json_array_foreach(rows, i, row)
                json_array_append_new(out, fmt(e, row));
        return json_pack("{s:o}", key, out);
}

static json_t *vm_attachment(struct engine *e, const char *vm_id, const char *disk_id, GError **error)
{
        g_autoptr(json_t) vm = vm_get(e, vm_id, error);
        g_autoptr(json_t) att = NULL;

        if (!vm)
                return NULL;
        att = fy_uuid_is_valid(disk_id) ? engine_db_query_one(e->db, NULL, "SELECT * FROM disk_attachments "
                                                                           "WHERE disk_id = ? AND vm_id = ?", "ss", disk_id, vm_id)
                                        : NULL;
        if (!att)
                return fail(error, 404, "disk %.64s is not attached to VM %s", disk_id, js(vm, "name"));
        return attachment_json(att);
}

static json_t *vm_snapshot(struct engine *e, const char *vm_id, const char *snap_id, GError **error)
{
        g_autoptr(json_t) vm = vm_get(e, vm_id, error);
        g_autoptr(json_t) snap = NULL;

        if (!vm)
                return NULL;
        snap = fy_uuid_is_valid(snap_id) ? engine_db_query_one(e->db, NULL, "SELECT * FROM snapshots WHERE id = ? AND vm_id = ?",
                                                               "ss", snap_id, vm_id) : NULL;
        if (!snap)
                return fail(error, 404, "VM %s has no snapshot %.64s", js(vm, "name"), snap_id);
        return snapshot_json(snap);
}

/* The list of an owner's sub-resource, after checking the owner exists. */
static json_t *owner_list(struct engine *e, bool vm, const char *id, const char *what, GError **error)
{
        g_autoptr(json_t) owner = vm ? vm_get(e, id, error) : template_get(e, id, error);

        if (!owner)
                return NULL;
        if (strcmp(what, "snapshots") == 0)
                return list_json(e, "snapshots", "SELECT * FROM snapshots WHERE vm_id = ? ORDER BY created, rowid", id,
                                 fmt_snapshot, error);
        return json_pack("{s:o}", "disk_attachments", attachments_json(e, vm ? "vm_id" : "template_id", id));
}

/* ?detach_only=true|false; false after a 400. */
static bool query_detach_only(SoupServerMessage *msg, bool *ret)
{
        const char *q = g_uri_get_query(soup_server_message_get_uri(msg));
        g_autoptr(GHashTable) form = q ? soup_form_decode(q) : NULL;
        const char *v = form ? g_hash_table_lookup(form, "detach_only") : NULL;

        *ret = false;
        if (!v)
                return true;
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
                engine_rest_reply_fault(msg, 400, "detach_only takes true or false");
                return false;
        }
        *ret = strcmp(v, "true") == 0;
        return true;
}

static void route_vms(struct engine *e, SoupServerMessage *msg, char **seg, guint n)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = NULL;
        g_autoptr(json_t) out = NULL;
        bool get = engine_rest_method_is(msg, "GET"), post = engine_rest_method_is(msg, "POST");
        bool del = engine_rest_method_is(msg, "DELETE");
        const char *sub = n >= 3 ? seg[2] : "";
        bool atts = strcmp(sub, "diskattachments") == 0, snaps = strcmp(sub, "snapshots") == 0;
        bool detach_only;
        int status = 200;

        if ((post && (n == 1 || (n == 3 && (atts || snaps)))) && !(body = engine_rest_body(e, msg)))
                return;        /* answered */
        if (n == 1 && get) {
                out = list_json(e, "vms", "SELECT * FROM vms ORDER BY created, name", NULL, fmt_vm, &error);
        } else if (n == 1 && post) {
                out = vm_create(e, body, &status, &error);
        } else if (n == 2 && get) {
                g_autoptr(json_t) vm = vm_get(e, seg[1], &error);
                out = vm ? vm_json(e, vm) : NULL;
        } else if (n == 2 && del) {
                if (!query_detach_only(msg, &detach_only))
                        return;
                out = vm_remove(e, seg[1], detach_only, &status, &error);
        } else if (n == 3 && get && (atts || snaps)) {
                out = owner_list(e, true, seg[1], sub, &error);
        } else if (n == 3 && post && atts) {
                status = 201;
                out = disk_attach(e, seg[1], body, &error);
        } else if (n == 3 && post && snaps) {
                status = 202;
                out = snapshot_create(e, seg[1], body, &error);
        } else if (n == 4 && get && atts) {
                out = vm_attachment(e, seg[1], seg[3], &error);
        } else if (n == 4 && del && atts) {
                out = disk_detach(e, seg[1], seg[3], &error);
        } else if (n == 4 && get && snaps) {
                out = vm_snapshot(e, seg[1], seg[3], &error);
        } else if (n == 4 && (del || post) && snaps) {
                engine_rest_reply_fault(msg, 405, "removing (merging) or restoring snapshots is not supported yet; "
                                        "a snapshot stays part of its disks' volume chains");
                return;
        } else {
                engine_rest_reply_fault(msg, get || post || del ? 404 : 405, "no such VM resource or action");
                return;
        }
        if (out)
                engine_rest_reply_json(msg, status, out);
        else
                engine_rest_reply_error(msg, error);
}

static void route_templates(struct engine *e, SoupServerMessage *msg, char **seg, guint n)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = NULL;
        g_autoptr(json_t) out = NULL;
        bool get = engine_rest_method_is(msg, "GET"), post = engine_rest_method_is(msg, "POST");
        bool del = engine_rest_method_is(msg, "DELETE");
        int status = 200;

        if (n == 1 && get) {
                out = list_json(e, "templates", "SELECT * FROM templates ORDER BY created, name", NULL, fmt_template, &error);
        } else if (n == 1 && post) {
                if (!(body = engine_rest_body(e, msg)))
                        return;
                status = 202;
                out = template_create(e, body, &error);
        } else if (n == 2 && get) {
                g_autoptr(json_t) t = template_get(e, seg[1], &error);
                out = t ? template_json(e, t) : NULL;
        } else if (n == 2 && del) {
                out = template_remove(e, seg[1], &status, &error);
        } else if (n == 3 && get && strcmp(seg[2], "diskattachments") == 0) {
                out = owner_list(e, false, seg[1], seg[2], &error);
        } else {
                engine_rest_reply_fault(msg, get || post || del ? 404 : 405, "no such template resource or action");
                return;
        }
        if (out)
                engine_rest_reply_json(msg, status, out);
        else
                engine_rest_reply_error(msg, error);
}

/*
 * Disk actions that would break a VM or a template, refused before the
 * disk handlers see them: a template's disk is removed with its template
 * and never moved (thin VMs' layers are linked to its volume on that
 * domain; copying it is fine); an attached disk is removed through its VM
 * or after a detach, so no VM loses a disk by accident.
 */
static bool guard_disks(struct engine *e, SoupServerMessage *msg, char **seg, guint n)
{
        g_autoptr(json_t) att = NULL;
        g_autofree char *detail = NULL;
        bool del = n == 2 && engine_rest_method_is(msg, "DELETE");
        bool move = n == 3 && engine_rest_method_is(msg, "POST") && strcmp(seg[2], "move") == 0;

        if ((!del && !move) || !fy_uuid_is_valid(seg[1]))
                return false;
        att = engine_db_query_one(e->db, NULL, "SELECT a.*, v.name AS vm_name, t.name AS template_name FROM disk_attachments a "
                                              "LEFT JOIN vms v ON v.id = a.vm_id LEFT JOIN templates t ON t.id = a.template_id "
                                              "WHERE a.disk_id = ?", "s", seg[1]);
        if (!att)
                return false;
        if (js(att, "template_id"))
                detail = del ? g_strdup_printf("disk %s belongs to template %s; remove the template (DELETE /api/templates/%s)",
                                               seg[1], js(att, "template_name"), js(att, "template_id"))
                             : g_strdup_printf("disk %s belongs to template %s and stays on its storage domain (thin VMs "
                                               "are layered on it there); copy it instead (POST /api/disks/%s/copy)",
                                               seg[1], js(att, "template_name"), seg[1]);
        else if (del)
                detail = g_strdup_printf("disk %s is attached to VM %s; detach it first (DELETE /api/vms/%s/diskattachments/%s) "
                                         "or remove the VM with its disks (DELETE /api/vms/%s)", seg[1], js(att, "vm_name"),
                                         js(att, "vm_id"), seg[1], js(att, "vm_id"));
        else
                return false;  /* moving a VM's disk is fine */
        engine_rest_reply_fault(msg, 409, detail);
        return true;
}

bool engine_rest_vms(struct engine *e, SoupServerMessage *msg, char **seg, guint n)
{
        if (strcmp(seg[0], "vms") == 0)
                route_vms(e, msg, seg, n);
        else if (strcmp(seg[0], "templates") == 0)
                route_templates(e, msg, seg, n);
        else if (strcmp(seg[0], "disks") == 0)
                return guard_disks(e, msg, seg, n);
        else
                return false;
        return true;
}
