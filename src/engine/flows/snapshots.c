/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Snapshot removal (a cold merge per disk), snapshot restore and disk
 * sparsify (DESIGN §7–§8). The actions (vm_actions.c, actions.c) lock the
 * VM and its disks and start the top-level command; the leaves are the
 * ones of flows/job.c (a job on a host), so a lost merging or sparsifying host is
 * handled as a lost copy is: decided from the volume, fenced, retried on
 * another host.
 *
 * remove_snapshot                      (job; VM, its disks, the snapshot locked)
 *   main ──► merge_disk_snapshot per disk, all at once (MAX_PARALLEL_DISKS)
 *   end  ──► per disk that merged: inventory (top gone, its child on base,
 *            snapshots that named top name base); the snapshot row deleted
 *            when every disk merged, else it keeps the disks left (remove again)
 *
 * merge_disk_snapshot {disk, sd, img, top, base, bytes}: children one after another
 *
 *   prepare_merge ──► merge ─────────────► finalize_merge ──► remove_volume(top)
 *   SPM: base          scheduler-picked      SPM, base_generation  SPM
 *   ILLEGAL, GEN G     host: base LEGAL      G+1 (read from the
 *                      at G+1                merge's record)
 *                        │ host lost / forgot the job
 *                        ▼
 *                      base read through another host:
 *                        LEGAL at G+1 → done
 *                        ILLEGAL at G, lease free (or lost too long)
 *                          → SDM.update_volume G → G+3 (fence)
 *                          → merge again on another host with G+3 → G+4
 *
 * restore_snapshot                      (job; VM and its disks locked)
 *   main ──► restore_disk_snapshot per disk, all at once
 *   end  ──► inventory: the discarded volumes gone, the new leaf on the
 *            snapshot's volume; the snapshots newer than this one deleted
 *
 * restore_disk_snapshot {disk, sd, img, base, vol, capacity, discard[]}:
 *   remove_volume discard[0] (the leaf) ──► … discard[n-1] ──► create_volume_container
 *   vol (qcow2, parent base), all on the SPM: a linear chain at every step
 *
 * sparsify_disk {disk, sd, img, volumes[]} (job; the disk locked)
 *   main ──► sparsify_volume per SPARSE volume of the chain, all at once
 *   end  ──► unlock, actual size read again
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "inventory.h"
#include "snapshots.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define MAX_PARALLEL_DISKS 8
#define MERGE_STEPS 4

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

/* The generation the inventory records for a volume (the merge leaf wrote the one it left), or -1. */
static gint64 volume_generation(struct engine *e, const char *disk, const char *sd, const char *vol)
{
        g_autoptr(json_t) vols = engine_store_volume_list(e->db, disk, sd, NULL);
        size_t i;
        json_t *v;

        json_array_foreach(vols, i, v)
                if (g_strcmp0(js(v, "id"), vol) == 0)
                        return ji(v, "generation");
        return -1;
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

static void merge_disk_advance(struct engine *e, json_t *cmd)
{
        run_sequence(e, cmd, MERGE_STEPS, make_merge_step);
}

/* ---- restore_disk_snapshot ---- */

static char *make_restore_step(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *discard = json_object_get(p, "discard");
        double w = json_number_value(json_object_get(p, "share")) / (double) (json_array_size(discard) + 1);
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

/* ---- the top-level flows ---- */

static char *make_disk_composite(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        g_autoptr(json_t) cp = json_deep_copy(flow_disk(p, i));
        enum engine_kind kind = engine_cmd_kind(cmd) == ENGINE_KIND_REMOVE_SNAPSHOT ? ENGINE_KIND_MERGE_DISK_SNAPSHOT
                                                                                  : ENGINE_KIND_RESTORE_DISK_SNAPSHOT;

        json_object_set_new(cp, "share", json_real(disk_share(p)));
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

static void remove_snapshot_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autoptr(json_t) left = json_array();
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "disks"));
        unsigned merged = 0;

        if (disks_running(e, cmd, p, data, make_disk_composite, n, &error))
                return;
        for (size_t i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);
                json_t *d = flow_disk(p, i);

                if (g_strcmp0(state, "succeeded") != 0) {
                        json_array_append_new(left, json_pack("{s:s, s:s}", "disk", js(d, "disk"), "volume", js(d, "base")));
                        continue;
                }
                if (engine_store_merge_apply(e->db, js(p, "vm"), js(d, "disk"), js(d, "sd"), js(d, "top"), js(d, "base"),
                                             NULL) < 0)
                        return;        /* the transaction rolls back; the next round tries again */
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
        /* What merged stays merged; the snapshot keeps the disks left, for another removal. */
        if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, left, NULL) < 0)
                return;
        flow_end(e, cmd, js(p, "vm"), false, error);
        engine_event(e, "warning", js(cmd, "id"), "snapshot %s of VM %s: %u of %zu disk(s) merged (%s); a base whose merge "
                     "did not complete may stay ILLEGAL on storage until the snapshot is removed again",
                     js(p, "snapshot"), js(p, "vm"), merged, n, error ? error : "unknown error");
}

static void restore_snapshot_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "disks"));
        size_t i;
        json_t *s;
        unsigned done = 0;

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

                /* Some of its discarded volumes may be gone: the chain is not what the inventory says. */
                if (g_strcmp0(state, "succeeded") != 0 &&
                    engine_store_disk_set_status(e->db, js(flow_disk(p, i), "disk"), "illegal", NULL) < 0)
                        g_warning("disk %s: could not be marked illegal", js(flow_disk(p, i), "disk"));
        }
        engine_event(e, "warning", js(cmd, "id"), "restoring VM %s to snapshot %s: %u of %zu disk(s) restored (%s); "
                     "check the other disks' chains on storage", js(p, "vm"), js(p, "snapshot"), done, n,
                     error ? error : "unknown error");
}

static void sparsify_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "volumes"));
        enum engine_children st = engine_run_children_parallel(e, cmd, data, n, n, make_sparsify, &error);

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
        engine_flow_register(ENGINE_KIND_MERGE_DISK_SNAPSHOT, merge_disk_advance, true);
        engine_flow_register(ENGINE_KIND_RESTORE_DISK_SNAPSHOT, restore_disk_advance, true);
        engine_flow_register(ENGINE_KIND_REMOVE_SNAPSHOT, remove_snapshot_flow, true);
        engine_flow_register(ENGINE_KIND_RESTORE_SNAPSHOT, restore_snapshot_flow, true);
        engine_flow_register(ENGINE_KIND_SPARSIFY_DISK, sparsify_flow, true);
}
