/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Snapshot removal (a cold merge per disk), snapshot restore and disk
 * sparsify (DESIGN §7–§8). The actions (vm_actions.c, actions.c) lock the
 * VM and its disks and start the top-level command; the leaves, but the
 * read-only verify_chain, are the ones of flows/job.c (a job on a host), so
 * a lost merging or sparsifying host is handled as a lost copy is: decided
 * from the volume, fenced, retried on another host.
 *
 * remove_snapshot                      (job; VM, its disks locked; the snapshot "removing")
 *   main ──► merge_disk_snapshot per disk, all at once (MAX_PARALLEL_DISKS)
 *   end  ──► the snapshot row deleted when every disk merged; "ok" again when
 *            every disk stopped before storage changed (prepare refused);
 *            else "broken" (no restore of it or a newer one) with the disks
 *            left, {disk, volume}, {disk, volume, finalize} (merged, not
 *            finalized) or {disk, volume, delete} (finalized, top not deleted)
 *
 * merge_disk_snapshot {vm, disk, sd, img, top, base, bytes, finalized?}: children one after another
 *
 *   prepare_merge ──► merge ─────────────► finalize_merge ──► remove_volume(top)
 *   SPM: base          scheduler-picked      SPM, base_generation  SPM, tried DELETE_TRIES
 *   ILLEGAL, GEN G     host: base LEGAL      G+1 (read from the    times; only this step
 *                      at G+1                merge's record); then  when p.finalized
 *                                            the inventory: top gone,
 *                                            its child on base, snapshots
 *                                            that named top name base
 *                        │ host lost / forgot the job
 *                        ▼
 *                      base read through another host:
 *                        LEGAL at G+1 → done
 *                        ILLEGAL at G, lease free (or lost too long)
 *                          → SDM.update_volume G → G+3 (fence)
 *                          → merge again on another host with G+3 → G+4
 *
 * restore_snapshot                      (job; VM and its disks locked)
 *   checks ──► verify_chain per disk, all at once (base and below LEGAL at their
 *              recorded generations, read through the SPM); one fails → the job
 *              fails with nothing changed on any disk (a barrier: no disk
 *              removes anything before every disk's chain is checked)
 *   main   ──► restore_disk_snapshot per disk, all at once
 *   end    ──► inventory: the discarded volumes gone, the new leaf on the
 *              snapshot's volume; the snapshots newer than this one deleted
 *
 * restore_disk_snapshot {disk, sd, img, base, vol, capacity, discard[]}:
 *   remove_volume discard[0] (the leaf) ──► … discard[n-1] ──► create_volume_container
 *   vol (qcow2, parent base), all on the SPM: a linear chain at every step
 *
 * sparsify_disk {disk, sd, img, volumes[]} (job; the disk locked)
 *   checks ──► verify_chain of the whole chain (LEGAL at the recorded generations)
 *   main ──► sparsify_volume per SPARSE volume of the chain, all at once
 *   end  ──► unlock, actual size read again
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "hosts.h"
#include "inventory.h"
#include "snapshots.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define MAX_PARALLEL_DISKS 8
#define MERGE_STEPS 4
#define STEP_FINALIZE 2                /* StoragePool.finalizeMerge on the SPM */
#define STEP_DELETE 3                  /* the last merge step: Volume.delete of top */
#define DELETE_TRIES 3

/* The step weights of one disk's merge (percent of the disk's share). */
static const double merge_weights[MERGE_STEPS] = { 4, 88, 4, 4 };

static json_t *flow_disk(json_t *p, size_t i)
{
        return json_array_get(json_object_get(p, "disks"), i);
}

static double disk_share(json_t *p)
{
        return 100.0 / (double) MAX(json_array_size(json_object_get(p, "disks")), 1);
}

static char *make_step_leaf(struct engine *e, json_t *cmd, enum engine_kind kind, json_t *cp, const char *desc,
                            double weight)
{
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), engine_kind_name(kind), desc, weight);

        return engine_cmd_create(e, kind, js(cmd, "id"), js(cmd, "job_id"), step, cp);
}

/* The inventory's row of volume vol of the disk's chain, or NULL. */
static json_t *volume_find(struct engine *e, const char *disk, const char *sd, const char *vol)
{
        g_autoptr(json_t) vols = engine_store_volume_list(e->db, disk, sd, NULL);
        size_t i;
        json_t *v;

        json_array_foreach(vols, i, v)
                if (g_strcmp0(js(v, "id"), vol) == 0)
                        return json_incref(v);
        return NULL;
}

/* The generation the inventory records for a volume (the merge leaf wrote the one it left), or -1. */
static gint64 volume_generation(struct engine *e, const char *disk, const char *sd, const char *vol)
{
        g_autoptr(json_t) v = volume_find(e, disk, sd, vol);

        return v ? ji(v, "generation") : -1;
}

/* ---- merge_disk_snapshot ---- */

static char *make_merge_step(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        double w = merge_weights[i] * json_number_value(json_object_get(p, "share")) / 100.0;
        g_autoptr(json_t) cp = NULL;
        g_autofree char *desc = NULL;
        gint64 gen;

        switch (i) {
        case 0:
                cp = json_pack("{s:s, s:s, s:s, s:s}", "sd", js(p, "sd"), "img", js(p, "img"), "top", js(p, "top"),
                               "base", js(p, "base"));
                desc = g_strdup_printf("Preparing the merge of volume %s into %s (disk %s)", js(p, "top"), js(p, "base"),
                                       js(p, "img"));
                return make_step_leaf(e, cmd, ENGINE_KIND_PREPARE_MERGE, cp, desc, w);
        case 1:
                cp = json_pack("{s:{s:s, s:s, s:s}, s:s, s:I}", "dst", "sd", js(p, "sd"), "img", js(p, "img"),
                               "vol", js(p, "base"), "top", js(p, "top"), "bytes", ji(p, "bytes"));
                desc = g_strdup_printf("Merging volume %s into %s (disk %s)", js(p, "top"), js(p, "base"), js(p, "img"));
                return make_step_leaf(e, cmd, ENGINE_KIND_MERGE, cp, desc, w);
        case 2:
                cp = json_pack("{s:s, s:s, s:s, s:s}", "sd", js(p, "sd"), "img", js(p, "img"), "top", js(p, "top"),
                               "base", js(p, "base"));
                gen = volume_generation(e, js(p, "img"), js(p, "sd"), js(p, "base"));
                if (gen >= 0)
                        json_object_set_new(cp, "generation", json_integer(gen));
                desc = g_strdup_printf("Finalizing the merge of volume %s into %s (disk %s)", js(p, "top"), js(p, "base"),
                                       js(p, "img"));
                return make_step_leaf(e, cmd, ENGINE_KIND_FINALIZE_MERGE, cp, desc, w);
        default:
                cp = json_pack("{s:s, s:s, s:s}", "sd", js(p, "sd"), "img", js(p, "img"), "vol", js(p, "top"));
                desc = g_strdup_printf("Removing merged volume %s (disk %s)", js(p, "top"), js(p, "img"));
                return make_step_leaf(e, cmd, ENGINE_KIND_REMOVE_VOLUME, cp, desc, w);
        }
}

/* A composite of children one after another: ends with their outcome. */
static void run_sequence(struct engine *e, json_t *cmd, size_t count, engine_child_factory make)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        enum engine_children st = engine_run_children(e, cmd, data, count, make, &error);

        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
        if (st != ENGINE_CHILDREN_ACTIVE)
                engine_cmd_finish(e, cmd, st == ENGINE_CHILDREN_SUCCEEDED, error);
}

/* A disk whose merge was finalized by an earlier removal: only top's deletion is left (p.finalized). */
static char *make_delete_step(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return make_merge_step(e, cmd, p, STEP_DELETE);
}

/*
 * A disk whose merge committed (base LEGAL at G+1) but whose finalize did not
 * go through (p.finalize_only): finalize and delete are left. Prepare would
 * refuse a top that finalize already marked ILLEGAL, and is not needed: the
 * finalize verb checks base LEGAL at the generation the merge left, under
 * the leases, before it writes anything, and runs again from any point.
 */
static char *make_finalize_step(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return make_merge_step(e, cmd, p, STEP_FINALIZE + i);
}

/*
 * Once finalize succeeded, top is out of the chain on storage: the inventory
 * follows at once (in this round's transaction), so a delete of top that
 * fails leaves an inventory that is true and a removal that can be run again
 * (it then only deletes top). The delete is idempotent (gone = done) and
 * tried DELETE_TRIES times before the disk's merge fails.
 */
static void merge_disk_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        bool finalized = json_is_true(json_object_get(p, "finalized"));
        bool finalize_only = json_is_true(json_object_get(p, "finalize_only"));
        engine_child_factory make = finalized ? make_delete_step : finalize_only ? make_finalize_step : make_merge_step;
        size_t first = finalized ? STEP_DELETE : finalize_only ? STEP_FINALIZE : 0;
        size_t count = MERGE_STEPS - first;
        size_t delete_index = STEP_DELETE - first;
        enum engine_children st = engine_run_children(e, cmd, data, count, make, &error);

        if ((size_t) ji(data, "index") >= delete_index && !json_is_true(json_object_get(data, "applied"))) {
                /* Idempotent: a write that failed rolls this round back, and the next round tries it again. */
                if (engine_store_merge_apply(e->db, js(p, "vm"), js(p, "disk"), js(p, "sd"), js(p, "top"), js(p, "base"),
                                             NULL) < 0)
                        g_warning("disk %s: the inventory could not follow the merge of %s yet", js(p, "disk"),
                                  js(p, "top"));
                else
                        json_object_set_new(data, "applied", json_true());
        }
        if (st == ENGINE_CHILDREN_FAILED && (size_t) ji(data, "index") == delete_index && json_object_get(data, "child") &&
            ji(data, "delete_tries") + 1 < DELETE_TRIES) {
                json_object_set_new(data, "delete_tries", json_integer(ji(data, "delete_tries") + 1));
                json_object_del(data, "child");
                engine_event(e, "warning", js(cmd, "id"), "deleting merged volume %s (disk %s) failed (%s); trying again",
                             js(p, "top"), js(p, "disk"), error ? error : "unknown error");
                g_clear_pointer(&error, g_free);
                st = engine_run_children(e, cmd, data, count, make, &error);
        }
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
        if (st != ENGINE_CHILDREN_ACTIVE)
                engine_cmd_finish(e, cmd, st == ENGINE_CHILDREN_SUCCEEDED, error);
}

/* ---- verify_chain {sd, img, volumes: [{id, generation}]}: read-only, through the SPM ---- */

#define VERIFY_ERRORS_MAX 3            /* unanswered reads before the check fails */

static GHashTable *verifying;          /* command ids with a Volume.getInfo out (a restart asks again) */

struct verify_call {
        struct engine *e;
        char *cmd_id;
};

/* One volume's answer: LEGAL at the generation the inventory records, else the restore must not act. */
static void verify_answer(struct engine *e, json_t *cmd, json_t *result, const GError *error)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        size_t i = (size_t) ji(data, "index");
        json_t *v = json_array_get(json_object_get(p, "volumes"), i);
        g_autofree char *why = NULL;

        if (error || !json_is_object(result)) {
                gint64 errors = ji(data, "errors") + 1;

                if (errors >= VERIFY_ERRORS_MAX) {
                        why = g_strdup_printf("cannot read volume %s of disk %s on storage: %s", js(v, "id"), js(p, "img"),
                                              error ? error->message : "no answer");
                        engine_cmd_finish(e, cmd, false, why);
                        return;
                }
                json_object_set_new(data, "errors", json_integer(errors));
                json_object_set_new(data, "next_try", json_integer(engine_now() + 2));
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_NEW, data);
                return;
        }
        if (g_strcmp0(js(result, "legality"), "LEGAL") != 0)
                why = g_strdup_printf("volume %s of disk %s is %s on storage (a snapshot removal that failed part-way "
                                      "leaves its base so): nothing was changed; retry the removal of that snapshot",
                                      js(v, "id"), js(p, "img"), js(result, "legality") ? js(result, "legality") : "unknown");
        else if (json_is_integer(json_object_get(v, "generation")) &&
                 ji(result, "generation") != ji(v, "generation"))
                why = g_strdup_printf("volume %s of disk %s has generation %" G_GINT64_FORMAT " on storage, the inventory "
                                      "records %" G_GINT64_FORMAT " (changed behind the engine's back?): nothing was "
                                      "changed", js(v, "id"), js(p, "img"), ji(result, "generation"), ji(v, "generation"));
        if (why) {
                engine_cmd_finish(e, cmd, false, why);
                return;
        }
        if (i + 1 >= json_array_size(json_object_get(p, "volumes"))) {
                engine_cmd_finish(e, cmd, true, NULL);
                return;
        }
        json_object_set_new(data, "index", json_integer((json_int_t) i + 1));
        json_object_del(data, "errors");
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_NEW, data);
}

static void on_volume_info(json_t *result, const GError *error, void *userdata)
{
        struct verify_call *c = userdata;
        g_autoptr(json_t) cmd = engine_store_cmd_get(c->e->db, c->cmd_id, NULL);

        g_hash_table_remove(verifying, c->cmd_id);
        if (cmd && g_strcmp0(js(cmd, "state"), "active") == 0)
                verify_answer(c->e, cmd, result, error);
        engine_kick(c->e);
        g_free(c->cmd_id);
        g_free(c);
}

static void verify_chain_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autoptr(json_t) dc = NULL;
        g_autofree char *spm = NULL;
        json_t *v = json_array_get(json_object_get(p, "volumes"), (size_t) ji(data, "index"));
        struct verify_call *c;

        if (g_hash_table_contains(verifying, js(cmd, "id")) || ji(data, "next_try") > engine_now())
                return;
        if (!v) {
                engine_cmd_finish(e, cmd, true, NULL);        /* nothing to read */
                return;
        }
        spm = engine_spm_host(e);
        dc = engine_store_dc_spm(e->db, e->dc_id, NULL);
        if (!spm || !dc)
                return;        /* after the election */
        engine_step_update(e, js(cmd, "step_id"), "started", 0, spm);
        c = g_new0(struct verify_call, 1);
        c->e = e;
        c->cmd_id = g_strdup(js(cmd, "id"));
        g_hash_table_add(verifying, g_strdup(c->cmd_id));
        engine_host_call(e, spm, "Volume.getInfo",
                         json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID",
                                   js(p, "sd"), "imageID", js(p, "img"), "volumeID", js(v, "id")),
                         e->config.host_timeout, on_volume_info, c);
}

/* ---- restore_disk_snapshot ---- */

/* The snapshot's volume and every one below it, with the generations the inventory records. */
static json_t *chain_to(struct engine *e, json_t *p)
{
        g_autoptr(json_t) vols = engine_store_volume_list(e->db, js(p, "disk"), js(p, "sd"), NULL);
        g_autoptr(json_t) base = volume_find(e, js(p, "disk"), js(p, "sd"), js(p, "base"));
        json_t *out = json_array();
        size_t i;
        json_t *v;

        json_array_foreach(vols, i, v)
                if (base && ji(v, "position") <= ji(base, "position"))
                        json_array_append_new(out, json_pack("{s:s, s:I}", "id", js(v, "id"), "generation",
                                                             ji(v, "generation")));
        return out;
}

/*
 * The restore_snapshot flow has checked every disk's chain (verify_chain)
 * before any disk's composite starts: the discarded volumes, then the new
 * leaf.
 */
static char *make_restore_step(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *discard = json_object_get(p, "discard");
        double w = json_number_value(json_object_get(p, "share")) / (double) (json_array_size(discard) + 2);
        g_autoptr(json_t) cp = NULL;
        g_autofree char *desc = NULL;

        if (i < json_array_size(discard)) {
                const char *vol = json_string_value(json_array_get(discard, i));

                cp = json_pack("{s:s, s:s, s:s}", "sd", js(p, "sd"), "img", js(p, "img"), "vol", vol);
                desc = g_strdup_printf("Removing discarded volume %s (disk %s)", vol, js(p, "img"));
                return make_step_leaf(e, cmd, ENGINE_KIND_REMOVE_VOLUME, cp, desc, w);
        }
        cp = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:b, s:b}", "sd", js(p, "sd"), "img", js(p, "img"),
                       "vol", js(p, "vol"), "parent", js(p, "base"), "size", ji(p, "capacity"), "format", "cow",
                       "sparse", true, "legal_when_created", false);
        desc = g_strdup_printf("Creating volume %s on snapshot volume %s (disk %s)", js(p, "vol"), js(p, "base"),
                               js(p, "img"));
        return make_step_leaf(e, cmd, ENGINE_KIND_CREATE_VOLUME_CONTAINER, cp, desc, w);
}

static void restore_disk_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        run_sequence(e, cmd, json_array_size(json_object_get(p, "discard")) + 1, make_restore_step);
}

/* Disk i's chain check, a child of the restore_snapshot flow itself (its weight: one step of the disk's share). */
static char *make_restore_check(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = flow_disk(p, i);
        double w = disk_share(p) / (double) (json_array_size(json_object_get(d, "discard")) + 2);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:o}", "sd", js(d, "sd"), "img", js(d, "img"), "volumes",
                                         chain_to(e, d));
        g_autofree char *desc = g_strdup_printf("Checking on storage the chain up to snapshot volume %s (disk %s)",
                                                js(d, "base"), js(d, "img"));

        return make_step_leaf(e, cmd, ENGINE_KIND_VERIFY_CHAIN, cp, desc, w);
}

/* ---- the top-level flows ---- */

static char *make_disk_composite(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        g_autoptr(json_t) cp = json_deep_copy(flow_disk(p, i));
        enum engine_kind kind = engine_cmd_kind(cmd) == ENGINE_KIND_REMOVE_SNAPSHOT ? ENGINE_KIND_MERGE_DISK_SNAPSHOT
                                                                                  : ENGINE_KIND_RESTORE_DISK_SNAPSHOT;

        json_object_set_new(cp, "share", json_real(disk_share(p)));
        json_object_set_new(cp, "vm", json_string(js(p, "vm")));
        return engine_cmd_create(e, kind, js(cmd, "id"), js(cmd, "job_id"), NULL, cp);
}

static char *make_sparsify(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *v = json_array_get(json_object_get(p, "volumes"), i);
        double w = 100.0 / (double) MAX(json_array_size(json_object_get(p, "volumes")), 1);
        g_autoptr(json_t) cp = json_pack("{s:{s:s, s:s, s:s}, s:I}", "dst", "sd", js(p, "sd"), "img", js(p, "disk"),
                                         "vol", js(v, "id"), "bytes", ji(v, "capacity"));
        g_autofree char *desc = g_strdup_printf("Sparsifying volume %s (disk %s)", js(v, "id"), js(p, "disk"));

        return make_step_leaf(e, cmd, ENGINE_KIND_SPARSIFY_VOLUME, cp, desc, w);
}

/* Ends a top-level flow: locks back, job and command ended (in the round's transaction). */
static void flow_end(struct engine *e, json_t *cmd, const char *vm, bool ok, const char *error)
{
        if (engine_store_job_unlock(e->db, js(cmd, "job_id"), vm, NULL) < 0 ||
            engine_store_job_end(e->db, js(cmd, "job_id"), ok ? "finished" : "failed", engine_now(), NULL) < 0)
                g_warning("job %s: the inventory could not be updated at its end", js(cmd, "job_id"));
        engine_cmd_finish(e, cmd, ok, error);
}

/* Children in flight: true (the data recorded); otherwise the caller ends the flow. */
static bool disks_running(struct engine *e, json_t *cmd, json_t *p, json_t *data, engine_child_factory make, size_t n,
                          char **ret_error)
{
        enum engine_children st = engine_run_children_parallel(e, cmd, data, n, MAX_PARALLEL_DISKS, make, ret_error);

        if (st != ENGINE_CHILDREN_ACTIVE)
                return false;
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
        return true;
}

/* The data of child i of a flow (engine_run_children*), or NULL when it was never started. */
static json_t *child_data(struct engine *e, json_t *data, size_t i)
{
        g_autofree char *k = g_strdup_printf("%zu", i);
        const char *id = json_string_value(json_object_get(json_object_get(data, "children"), k));
        g_autoptr(json_t) child = id ? engine_store_cmd_get(e->db, id, NULL) : NULL;

        return child ? jparse(child, "data") : NULL;
}

/*
 * What a removal again has to do for a disk whose merge did not succeed: the
 * whole merge; when finalize went through (top no longer in the inventory's
 * chain), only deleting top; when the merge committed (its step succeeded,
 * so the inventory holds the generation it left) but finalize did not, only
 * finalize and delete (a finalize cut short may have marked top ILLEGAL,
 * which prepare would refuse for good).
 */
static json_t *disk_left(struct engine *e, json_t *data, size_t i, json_t *d)
{
        g_autoptr(json_t) top = volume_find(e, js(d, "disk"), js(d, "sd"), js(d, "top"));
        g_autoptr(json_t) cdata = child_data(e, data, i);
        json_t *ent = json_pack("{s:s, s:s}", "disk", js(d, "disk"), "volume", js(d, "base"));
        bool finalize_only = json_is_true(json_object_get(d, "finalize_only"));

        if (!top)
                json_object_set_new(ent, "delete", json_string(js(d, "top")));
        else if (finalize_only || (cdata && !json_is_true(json_object_get(d, "finalized")) &&
                                   ji(cdata, "index") >= STEP_FINALIZE))
                json_object_set_new(ent, "finalize", json_string(js(d, "top")));
        return ent;
}

/*
 * Whether disk i's merge may have changed storage: prepare succeeded (base
 * marked ILLEGAL), or an earlier removal already did (finalize or delete
 * left). A merge refused at prepare changed nothing.
 */
static bool disk_changed(struct engine *e, json_t *data, size_t i, json_t *d)
{
        g_autoptr(json_t) cdata = child_data(e, data, i);

        if (json_is_true(json_object_get(d, "finalized")) || json_is_true(json_object_get(d, "finalize_only")))
                return true;
        return cdata && ji(cdata, "index") > 0;
}

static void remove_snapshot_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autoptr(json_t) left = json_array();
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "disks"));
        unsigned merged = 0;
        bool changed = false;

        if (disks_running(e, cmd, p, data, make_disk_composite, n, &error))
                return;
        for (size_t i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);
                json_t *d = flow_disk(p, i);

                if (g_strcmp0(state, "succeeded") != 0) {
                        json_array_append_new(left, disk_left(e, data, i, d));
                        changed = changed || disk_changed(e, data, i, d);
                        continue;
                }
                /* Applied when finalize succeeded (merge_disk_advance); idempotent. */
                if (engine_store_merge_apply(e->db, js(p, "vm"), js(d, "disk"), js(d, "sd"), js(d, "top"), js(d, "base"),
                                             NULL) < 0)
                        return;        /* the round rolls back (all or nothing); the next round tries again */
                merged++;
        }
        if (merged == n) {
                if (engine_store_snapshot_delete(e->db, js(p, "snapshot"), NULL) < 0)
                        return;
                flow_end(e, cmd, js(p, "vm"), true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "snapshot %s of VM %s removed: %zu disk(s) merged",
                             js(p, "snapshot"), js(p, "vm"), n);
                return;
        }
        if (merged == 0 && !changed && !json_is_true(json_object_get(p, "was_broken"))) {
                /* Every disk stopped before storage changed (prepare refused): the snapshot is as it was. */
                if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, NULL, NULL) < 0)
                        return;
                flow_end(e, cmd, js(p, "vm"), false, error);
                engine_event(e, "warning", js(cmd, "id"), "snapshot %s of VM %s was not removed and nothing was changed "
                             "(%s)", js(p, "snapshot"), js(p, "vm"), error ? error : "unknown error");
                return;
        }
        /*
         * What merged stays merged; the snapshot keeps the disks left. A base
         * may be ILLEGAL or half-merged on storage: the snapshot is "broken",
         * which no restore of it or of a newer snapshot accepts; the only
         * way on is to remove it again (or to restore an older snapshot).
         */
        if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "broken", NULL, left, NULL) < 0)
                return;
        flow_end(e, cmd, js(p, "vm"), false, error);
        engine_event(e, "warning", js(cmd, "id"), "snapshot %s of VM %s: %u of %zu disk(s) merged (%s); the snapshot is "
                     "broken (a base may be ILLEGAL or half-merged on storage, a merged volume not deleted) and cannot be "
                     "restored: remove it again", js(p, "snapshot"), js(p, "vm"), merged, n,
                     error ? error : "unknown error");
}

/*
 * Whether disk i's restore started a removal: only then may its chain differ
 * from the inventory's. A disk whose composite never started (more disks
 * than MAX_PARALLEL_DISKS, another failed) or never made a child did not.
 */
static bool restore_acted(struct engine *e, json_t *data, size_t i)
{
        g_autoptr(json_t) cdata = child_data(e, data, i);

        return cdata && (ji(cdata, "index") > 0 || json_object_get(cdata, "child"));
}

/*
 * The checks a flow runs before it acts (data.checks), every one ended
 * before anything else starts: ACTIVE (recorded), FAILED, or SUCCEEDED
 * (data.checked set, so they are not run again).
 */
static enum engine_children checks_run(struct engine *e, json_t *cmd, json_t *data, size_t n, engine_child_factory make,
                                       char **ret_error)
{
        json_t *checks = json_object_get(data, "checks");
        enum engine_children st;

        if (json_is_true(json_object_get(data, "checked")))
                return ENGINE_CHILDREN_SUCCEEDED;
        if (!json_is_object(checks))
                json_object_set_new(data, "checks", checks = json_object());
        st = engine_run_children_parallel(e, cmd, checks, n, MAX_PARALLEL_DISKS, make, ret_error);
        if (st == ENGINE_CHILDREN_ACTIVE)
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
        else if (st == ENGINE_CHILDREN_SUCCEEDED)
                json_object_set_new(data, "checked", json_true());
        return st;
}

static void restore_snapshot_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st;
        size_t i;
        json_t *s;
        unsigned done = 0;

        /*
         * Every disk's chain is checked before any disk removes anything: a
         * check that fails on one disk leaves every disk as it was (the
         * checks' bookkeeping under data.checks, the disks' under data).
         */
        st = checks_run(e, cmd, data, n, make_restore_check, &error);
        if (st == ENGINE_CHILDREN_ACTIVE)
                return;
        if (st == ENGINE_CHILDREN_FAILED) {
                if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, NULL, NULL) < 0)
                        return;
                flow_end(e, cmd, js(p, "vm"), false, error);
                engine_event(e, "warning", js(cmd, "id"), "restoring VM %s to snapshot %s: nothing was changed (%s)",
                             js(p, "vm"), js(p, "snapshot"), error ? error : "unknown error");
                return;
        }
        if (disks_running(e, cmd, p, data, make_disk_composite, n, &error))
                return;
        for (i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);
                json_t *d = flow_disk(p, i);

                if (g_strcmp0(state, "succeeded") != 0)
                        continue;
                if (engine_store_restore_apply(e->db, js(d, "disk"), js(d, "sd"), js(d, "base"), js(d, "vol"),
                                               ji(d, "capacity"), NULL) < 0)
                        return;
                done++;
        }
        if (done == n) {
                /* The snapshots newer than this one named volumes that are gone now. */
                json_array_foreach(json_object_get(p, "discard_snapshots"), i, s)
                        if (engine_store_snapshot_delete(e->db, json_string_value(s), NULL) < 0)
                                return;
                if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, NULL, NULL) < 0)
                        return;
                flow_end(e, cmd, js(p, "vm"), true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "VM %s restored to snapshot %s (%zu disk(s))", js(p, "vm"),
                             js(p, "snapshot"), n);
                return;
        }
        if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, NULL, NULL) < 0)
                return;
        flow_end(e, cmd, js(p, "vm"), false, error);
        for (i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);

                /* Some of its discarded volumes may be gone: the chain is not what the inventory says
                 * (unless it stopped at the check, which changes nothing). */
                if (g_strcmp0(state, "succeeded") != 0 && restore_acted(e, data, i) &&
                    engine_store_disk_set_status(e->db, js(flow_disk(p, i), "disk"), "illegal", NULL) < 0)
                        g_warning("disk %s: could not be marked illegal", js(flow_disk(p, i), "disk"));
        }
        engine_event(e, "warning", js(cmd, "id"), "restoring VM %s to snapshot %s: %u of %zu disk(s) restored (%s); "
                     "check the other disks' chains on storage", js(p, "vm"), js(p, "snapshot"), done, n,
                     error ? error : "unknown error");
}

/* The disk's whole chain, LEGAL on storage at the generations the inventory records, before any sparsify. */
static char *make_sparsify_check(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        g_autoptr(json_t) vols = engine_store_volume_list(e->db, js(p, "disk"), js(p, "sd"), NULL);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:[]}", "sd", js(p, "sd"), "img", js(p, "disk"), "volumes");
        g_autofree char *desc = g_strdup_printf("Checking on storage the chain of disk %s", js(p, "disk"));
        size_t k;
        json_t *v;

        json_array_foreach(vols, k, v)
                json_array_append_new(json_object_get(cp, "volumes"),
                                      json_pack("{s:s, s:I}", "id", js(v, "id"), "generation", ji(v, "generation")));
        return make_step_leaf(e, cmd, ENGINE_KIND_VERIFY_CHAIN, cp, desc, 0);
}

static void sparsify_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "volumes"));
        enum engine_children st;

        /* An ILLEGAL volume's data may be incomplete: the agent refuses it too (227); nothing is sent then. */
        st = checks_run(e, cmd, data, 1, make_sparsify_check, &error);
        if (st == ENGINE_CHILDREN_SUCCEEDED)
                st = engine_run_children_parallel(e, cmd, data, n, n, make_sparsify, &error);
        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        flow_end(e, cmd, NULL, st == ENGINE_CHILDREN_SUCCEEDED, error);
        engine_disk_size_refresh(e, js(p, "disk"));
        engine_event(e, st == ENGINE_CHILDREN_SUCCEEDED ? "normal" : "warning", js(cmd, "id"), "sparsify of disk %s %s%s%s",
                     js(p, "disk"), st == ENGINE_CHILDREN_SUCCEEDED ? "finished" : "failed", error ? ": " : "",
                     error ? error : "");
}

void engine_snapshot_flows_init(void)
{
        verifying = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        engine_flow_register(ENGINE_KIND_VERIFY_CHAIN, verify_chain_advance, false);
        engine_flow_register(ENGINE_KIND_MERGE_DISK_SNAPSHOT, merge_disk_advance, true);
        engine_flow_register(ENGINE_KIND_RESTORE_DISK_SNAPSHOT, restore_disk_advance, true);
        engine_flow_register(ENGINE_KIND_REMOVE_SNAPSHOT, remove_snapshot_flow, true);
        engine_flow_register(ENGINE_KIND_RESTORE_SNAPSHOT, restore_snapshot_flow, true);
        engine_flow_register(ENGINE_KIND_SPARSIFY_DISK, sparsify_flow, true);
}
