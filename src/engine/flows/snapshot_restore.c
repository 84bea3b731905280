/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Snapshot restore. The action (snapshot_actions.c) locks the VM and its
 * disks; the chain checks are verify_chain leaves (flows/verify_chain.c),
 * the removals and the new leaf flows/job.c's.
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
 * Cancel (kinds.c): not accepted.
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/flow.h"
#include "flows/snapshot_restore.h"
#include "hosts.h"
#include "inventory.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

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

/* The snapshot's volume and every one below it, with the generations the inventory records. */
static json_t *chain_to(struct engine *e, json_t *p)
{
        g_autoptr(json_t) vols = engine_store_volume_list(e->db, js(p, "disk"), js(p, "sd"), NULL);
        g_autoptr(json_t) base = engine_flow_volume_find(e, js(p, "disk"), js(p, "sd"), js(p, "base"));
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
                return engine_flow_leaf_create(e, cmd, ENGINE_KIND_REMOVE_VOLUME, cp, desc, w);
        }
        cp = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:b, s:b}", "sd", js(p, "sd"), "img", js(p, "img"),
                       "vol", js(p, "vol"), "parent", js(p, "base"), "size", ji(p, "capacity"), "format", "cow",
                       "sparse", true, "legal_when_created", false);
        desc = g_strdup_printf("Creating volume %s on snapshot volume %s (disk %s)", js(p, "vol"), js(p, "base"),
                               js(p, "img"));
        return engine_flow_leaf_create(e, cmd, ENGINE_KIND_CREATE_VOLUME_CONTAINER, cp, desc, w);
}

static void restore_disk_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        run_sequence(e, cmd, json_array_size(json_object_get(p, "discard")) + 1, make_restore_step);
}

/* Disk i's chain check, a child of the restore_snapshot flow itself (its weight: one step of the disk's share). */
static char *make_restore_check(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = engine_flow_disk(p, i);
        double w = engine_flow_disk_share(p) / (double) (json_array_size(json_object_get(d, "discard")) + 2);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:o}", "sd", js(d, "sd"), "img", js(d, "img"), "volumes",
                                         chain_to(e, d));
        g_autofree char *desc = g_strdup_printf("Checking on storage the chain up to snapshot volume %s (disk %s)",
                                                js(d, "base"), js(d, "img"));

        return engine_flow_leaf_create(e, cmd, ENGINE_KIND_VERIFY_CHAIN, cp, desc, w);
}

static char *make_disk_composite(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        g_autoptr(json_t) cp = json_deep_copy(engine_flow_disk(p, i));

        json_object_set_new(cp, "share", json_real(engine_flow_disk_share(p)));
        json_object_set_new(cp, "vm", json_string(js(p, "vm")));
        return engine_cmd_create(e, ENGINE_KIND_RESTORE_DISK_SNAPSHOT, js(cmd, "id"), js(cmd, "job_id"), NULL, cp);
}

/*
 * Whether disk i's restore started a removal: only then may its chain differ
 * from the inventory's. A disk whose composite never started (more disks
 * than ENGINE_FLOW_MAX_PARALLEL_DISKS, another failed) or never made a child did not.
 */
static bool restore_acted(struct engine *e, json_t *data, size_t i)
{
        g_autoptr(json_t) cdata = engine_flow_child_data(e, data, i);

        return cdata && (ji(cdata, "index") > 0 || json_object_get(cdata, "child"));
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
        st = engine_flow_checks_run(e, cmd, data, n, make_restore_check, &error);
        if (st == ENGINE_CHILDREN_ACTIVE)
                return;
        if (st == ENGINE_CHILDREN_FAILED) {
                if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, NULL, NULL) < 0)
                        return;
                engine_flow_vm_job_end(e, cmd, js(p, "vm"), false, error);
                engine_event(e, "warning", js(cmd, "id"), "restoring VM %s to snapshot %s: nothing was changed (%s)",
                             js(p, "vm"), js(p, "snapshot"), error ? error : "unknown error");
                return;
        }
        if (engine_flow_disks_running(e, cmd, p, data, make_disk_composite, n, &error))
                return;
        for (i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);
                json_t *d = engine_flow_disk(p, i);

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
                engine_flow_vm_job_end(e, cmd, js(p, "vm"), true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "VM %s restored to snapshot %s (%zu disk(s))", js(p, "vm"),
                             js(p, "snapshot"), n);
                return;
        }
        if (engine_store_snapshot_set(e->db, js(p, "snapshot"), "ok", NULL, NULL, NULL) < 0)
                return;
        engine_flow_vm_job_end(e, cmd, js(p, "vm"), false, error);
        for (i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);

                /* Some of its discarded volumes may be gone: the chain is not what the inventory says
                 * (unless it stopped at the check, which changes nothing). */
                if (g_strcmp0(state, "succeeded") != 0 && restore_acted(e, data, i) &&
                    engine_store_disk_set_status(e->db, js(engine_flow_disk(p, i), "disk"), "illegal", NULL) < 0)
                        g_warning("disk %s: could not be marked illegal", js(engine_flow_disk(p, i), "disk"));
        }
        engine_event(e, "warning", js(cmd, "id"), "restoring VM %s to snapshot %s: %u of %zu disk(s) restored (%s); "
                     "check the other disks' chains on storage", js(p, "vm"), js(p, "snapshot"), done, n,
                     error ? error : "unknown error");
}

void engine_flow_snapshot_restore_init(void)
{
        engine_flow_register(ENGINE_KIND_RESTORE_DISK_SNAPSHOT, restore_disk_advance, true);
        engine_flow_register(ENGINE_KIND_RESTORE_SNAPSHOT, restore_snapshot_flow, true);
}
