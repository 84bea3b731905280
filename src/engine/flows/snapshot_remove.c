/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Snapshot removal: a cold merge per disk (DESIGN §14). The action
 * (snapshot_actions.c) locks the VM and its disks and starts the top-level
 * command; the leaves are flows/job.c's, so a lost merging host is handled
 * as a lost copy is: decided from the volume, fenced, retried elsewhere.
 *
 * remove_snapshot                      (job; VM, its disks locked; the snapshot "removing")
 *   main ──► merge_disk_snapshot per disk, all at once (ENGINE_FLOW_MAX_PARALLEL_DISKS)
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
 * Cancel (kinds.c): not accepted; a merge stopped half-way leaves a base
 * ILLEGAL, which only finishing the removal repairs.
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/flow.h"
#include "flows/snapshot_remove.h"
#include "hosts.h"
#include "inventory.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define MERGE_STEPS 4
#define STEP_FINALIZE 2                /* StoragePool.finalizeMerge on the SPM */
#define STEP_DELETE 3                  /* the last merge step: Volume.delete of top */
#define DELETE_TRIES 3

/* The step weights of one disk's merge (percent of the disk's share). */
static const double merge_weights[MERGE_STEPS] = { 4, 88, 4, 4 };

/* The generation the inventory records for a volume (the merge leaf wrote the one it left), or -1. */
static gint64 volume_generation(struct engine *e, const char *disk, const char *sd, const char *vol)
{
        g_autoptr(json_t) v = engine_flow_volume_find(e, disk, sd, vol);

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
                return engine_flow_leaf_create(e, cmd, ENGINE_KIND_PREPARE_MERGE, cp, desc, w);
        case 1:
                cp = json_pack("{s:{s:s, s:s, s:s}, s:s, s:I}", "dst", "sd", js(p, "sd"), "img", js(p, "img"),
                               "vol", js(p, "base"), "top", js(p, "top"), "bytes", ji(p, "bytes"));
                desc = g_strdup_printf("Merging volume %s into %s (disk %s)", js(p, "top"), js(p, "base"), js(p, "img"));
                return engine_flow_leaf_create(e, cmd, ENGINE_KIND_MERGE, cp, desc, w);
        case 2:
                cp = json_pack("{s:s, s:s, s:s, s:s}", "sd", js(p, "sd"), "img", js(p, "img"), "top", js(p, "top"),
                               "base", js(p, "base"));
                gen = volume_generation(e, js(p, "img"), js(p, "sd"), js(p, "base"));
                if (gen >= 0)
                        json_object_set_new(cp, "generation", json_integer(gen));
                desc = g_strdup_printf("Finalizing the merge of volume %s into %s (disk %s)", js(p, "top"), js(p, "base"),
                                       js(p, "img"));
                return engine_flow_leaf_create(e, cmd, ENGINE_KIND_FINALIZE_MERGE, cp, desc, w);
        default:
                cp = json_pack("{s:s, s:s, s:s}", "sd", js(p, "sd"), "img", js(p, "img"), "vol", js(p, "top"));
                desc = g_strdup_printf("Removing merged volume %s (disk %s)", js(p, "top"), js(p, "img"));
                return engine_flow_leaf_create(e, cmd, ENGINE_KIND_REMOVE_VOLUME, cp, desc, w);
        }
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

/* ---- remove_snapshot ---- */

static char *make_disk_composite(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        g_autoptr(json_t) cp = json_deep_copy(engine_flow_disk(p, i));

        json_object_set_new(cp, "share", json_real(engine_flow_disk_share(p)));
        json_object_set_new(cp, "vm", json_string(js(p, "vm")));
        return engine_cmd_create(e, ENGINE_KIND_MERGE_DISK_SNAPSHOT, js(cmd, "id"), js(cmd, "job_id"), NULL, cp);
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
        g_autoptr(json_t) top = engine_flow_volume_find(e, js(d, "disk"), js(d, "sd"), js(d, "top"));
        g_autoptr(json_t) cdata = engine_flow_child_data(e, data, i);
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
        g_autoptr(json_t) cdata = engine_flow_child_data(e, data, i);

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

        if (engine_flow_disks_running(e, cmd, p, data, make_disk_composite, n, &error))
                return;
        for (size_t i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);
                json_t *d = engine_flow_disk(p, i);

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
                engine_flow_vm_job_end(e, cmd, js(p, "vm"), true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "snapshot %s of VM %s removed: %zu disk(s) merged",
                             js(p, "snapshot"), js(p, "vm"), n);
                return;
        }
        if (merged == 0 && !changed && !json_is_true(json_object_get(p, "was_broken"))) {
                /* Every disk stopped before storage changed (prepare refused): the snapshot is as it was. */
                if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, NULL, NULL) < 0)
                        return;
                engine_flow_vm_job_end(e, cmd, js(p, "vm"), false, error);
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
        engine_flow_vm_job_end(e, cmd, js(p, "vm"), false, error);
        engine_event(e, "warning", js(cmd, "id"), "snapshot %s of VM %s: %u of %zu disk(s) merged (%s); the snapshot is "
                     "broken (a base may be ILLEGAL or half-merged on storage, a merged volume not deleted) and cannot be "
                     "restored: remove it again", js(p, "snapshot"), js(p, "vm"), merged, n,
                     error ? error : "unknown error");
}

void engine_flow_snapshot_remove_init(void)
{
        engine_flow_register(ENGINE_KIND_MERGE_DISK_SNAPSHOT, merge_disk_advance, true);
        engine_flow_register(ENGINE_KIND_REMOVE_SNAPSHOT, remove_snapshot_flow, true);
}
