/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * remove_vm {vm, name, disks[]}, remove_template {template, name, disks[]}
 *                                      (job; the VM or template and its disks locked)
 *
 *   main ──► remove_image per disk, all at once (SPM: flows/job.c)
 *     ├─ all ok ──► end: the disks' rows, then the VM's or template's, gone
 *     └─ some failed ──► end: the removed disks' rows gone; the others "illegal" and
 *                        still attached (their volumes may be gone or ILLEGAL); the VM
 *                        unlocked, a template "illegal"; removing it again retries
 *
 * Cancel (kinds.c): not accepted; stopping a removal half-way helps nobody.
 */
#include "events.h"
#include "flows/flow.h"
#include "flows/vm_remove.h"
#include "store/store.h"

#define js engine_js
#define jparse engine_jparse

/* The rows of what the removal did not get to: the owner stays, unlocked, and says so. */
static void end_failed(struct engine *e, json_t *cmd, json_t *p, bool vm, unsigned failed, const char *first_error)
{
        g_autoptr(GError) store_error = NULL;
        const char *owner = js(p, vm ? "vm" : "template");
        size_t n = json_array_size(json_object_get(p, "disks"));

        if (vm)
                engine_flow_unlock_vm(e, cmd, owner);
        else
                engine_flow_checked(engine_store_template_set_status(e->db, owner, "illegal", &store_error), &store_error,
                                    "the status", owner);
        engine_flow_job_end(e, cmd, false, first_error);
        engine_event(e, "warning", js(cmd, "id"), "%s %s: %u of %zu disk(s) not removed (%s); delete it again to retry",
                     vm ? "VM" : "template", js(p, "name"), failed, n, first_error);
}

static void remove_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        size_t n = json_array_size(json_object_get(p, "disks"));
        bool vm = engine_cmd_kind(cmd) == ENGINE_KIND_REMOVE_VM;
        const char *owner = js(p, vm ? "vm" : "template");
        enum engine_children st = engine_flow_run_disks(e, cmd, p, data, engine_flow_disk_remove, n, NULL);
        g_autofree char *first_error = NULL;
        unsigned failed = 0;

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                g_autofree char *error = NULL;
                g_autofree char *state = engine_children_state(e, data, i, &error);
                const char *disk = js(engine_flow_disk(p, i), "img");

                if (g_strcmp0(state, "succeeded") == 0) {
                        engine_flow_checked(engine_store_disk_delete(e->db, disk, &store_error), &store_error,
                                            "the removal", disk);
                        continue;
                }
                /* Volumes may be gone or ILLEGAL now: the disk says so and stays attached. */
                engine_flow_checked(engine_store_disk_unlock(e->db, disk, js(cmd, "job_id"), "illegal", &store_error),
                                    &store_error, "the status", disk);
                if (!first_error)
                        first_error = g_strdup_printf("disk %s: %s", disk, error ? error : "not removed");
                failed++;
        }
        if (failed) {
                end_failed(e, cmd, p, vm, failed, first_error);
                return;
        }
        engine_flow_checked(vm ? engine_store_vm_delete(e->db, owner, false, &store_error)
                               : engine_store_template_delete(e->db, owner, &store_error),
                            &store_error, "the removal", owner);
        engine_flow_job_end(e, cmd, true, NULL);
        engine_event(e, "normal", js(cmd, "id"), "%s %s removed with its %zu disk(s)", vm ? "VM" : "template",
                     js(p, "name"), n);
}

void engine_flow_vm_remove_init(void)
{
        engine_flow_register(ENGINE_KIND_REMOVE_VM, remove_advance, true);
        engine_flow_register(ENGINE_KIND_REMOVE_TEMPLATE, remove_advance, true);
}
