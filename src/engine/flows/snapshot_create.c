/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * create_snapshot {vm, snapshot, disks[]}   (job; the VM and its disks locked; the snapshot row
 *                                            and each new leaf's volume row recorded by the action)
 *
 *   main ──► clone_image_group_volumes_structure per disk, all at once: the SPM adds a
 *     │      qcow2 leaf on the disk's current leaf (create_volume_container: flows/job.c)
 *     ├─ all ok ──► end: each disk's format "cow" (its active layer is the new leaf),
 *     │              disks and VM unlocked, the snapshot "ok"
 *     └─ some failed ──► end: the disks whose leaf was made keep it (an empty overlay:
 *                        the guest sees the same data), the others' volume rows gone;
 *                        the snapshot row gone
 *
 * Cancel (kinds.c): not accepted; the leaves are metadata only.
 * Removal and restore of a snapshot: flows/snapshot_remove.c, flows/snapshot_restore.c.
 */
#include "events.h"
#include "flows/flow.h"
#include "flows/snapshot_create.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static char *make_snapshot_leaf(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = engine_flow_disk(p, i);
        double weight = 100.0 / (double) MAX(json_array_size(json_object_get(p, "disks")), 1);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:[{s:s, s:s, s:I, s:s, s:b, s:f, s:f}]}",
                                         "sd", js(d, "sd"), "img", js(d, "img"),
                                         "volumes", "id", js(d, "vol"), "parent", js(d, "parent"),
                                         "capacity", ji(d, "capacity"), "format", "cow", "sparse", true,
                                         "structure_weight", weight, "data_weight", 0.0);

        return engine_cmd_create(e, ENGINE_KIND_CLONE_STRUCTURE, js(cmd, "id"), js(cmd, "job_id"), NULL, cp);
}

static void snapshot_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st = engine_flow_run_disks(e, cmd, p, data, make_snapshot_leaf, n, &error);
        unsigned made = 0;

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                g_autofree char *state = engine_children_state(e, data, i, NULL);
                json_t *d = engine_flow_disk(p, i);

                if (g_strcmp0(state, "succeeded") == 0) {
                        /* The new leaf is the disk's active layer: qcow2 from now on. */
                        engine_flow_checked(engine_store_disk_set_format(e->db, js(d, "img"), "cow", &store_error),
                                            &store_error, "the format", js(d, "img"));
                        made++;
                } else {
                        engine_flow_checked(engine_store_volume_delete(e->db, js(d, "vol"), js(d, "sd"), &store_error),
                                            &store_error, "the removal", js(d, "vol"));
                }
        }
        engine_flow_unlock_disks(e, cmd, "ok");
        engine_flow_unlock_vm(e, cmd, js(p, "vm"));
        if (st == ENGINE_CHILDREN_SUCCEEDED) {
                engine_flow_checked(engine_store_snapshot_set_ok(e->db, js(p, "snapshot"), &store_error), &store_error,
                                    "the status", js(p, "snapshot"));
                engine_flow_job_end(e, cmd, true, NULL);
                engine_event(e, "normal", js(cmd, "id"), "snapshot %s of VM %s created", js(p, "snapshot"), js(p, "vm"));
                return;
        }
        /* Removing single volumes is not an operation of this engine yet: the made leaves stay. */
        engine_flow_checked(engine_store_snapshot_delete(e->db, js(p, "snapshot"), &store_error), &store_error,
                            "the removal", js(p, "snapshot"));
        engine_flow_job_end(e, cmd, false, error);
        engine_event(e, "warning", js(cmd, "id"), "snapshot of VM %s failed: %s; %u of %zu disks got an empty new leaf "
                     "volume, which stays their active layer", js(p, "vm"), error ? error : "unknown error", made, n);
}

void engine_flow_snapshot_create_init(void)
{
        engine_flow_register(ENGINE_KIND_CREATE_SNAPSHOT, snapshot_advance, true);
}
