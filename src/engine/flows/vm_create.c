/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * create_vm_from_template {vm, name, template, clone, disks[]}   (job; the new VM and disks locked)
 *
 *   main ──► clone: copy_image_group_with_data per disk, at most 8 at once (the template
 *     │              volume copied collapsed into one volume without parent, any host)
 *     │      thin:  create_thin_volume per disk, all at once (Volume.create on the SPM, a
 *     │              qcow2 layer whose parent is the template's volume: flows/job.c)
 *     ├─ all ok ──► end: disks and VM unlocked, their sizes read
 *     └─ one failed, or cancelled ──► cleanup ──► remove_image of every new image
 *                                       ──► end: the VM's and its disks' rows gone
 *
 * Cancel (kinds.c): accepted in main; nothing new starts and the flow goes
 * to cleanup once the started children end.
 */
#include "events.h"
#include "flows/flow.h"
#include "flows/vm_create.h"
#include "inventory.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static char *make_thin(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = engine_flow_disk(p, i);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b, s:b}", "sd", js(d, "sd"),
                                         "img", js(d, "img"), "vol", js(d, "vol"), "parent", js(d, "src_vol"),
                                         "parent_img", js(d, "src_img"), "size", ji(d, "capacity"), "format", "cow",
                                         "sparse", true, "legal_when_created", true);
        g_autofree char *desc = g_strdup_printf("Creating thin volume %s on template volume %s", js(d, "vol"),
                                                js(d, "src_vol"));

        return engine_flow_leaf_create(e, cmd, ENGINE_KIND_CREATE_THIN_VOLUME, cp, desc,
                                       100.0 / (double) MAX(json_array_size(json_object_get(p, "disks")), 1));
}

static void create_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autofree char *error = NULL;
        bool clone = json_is_true(json_object_get(p, "clone"));
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st;

        if (ji(cmd, "cancel") && !json_object_get(data, "children")) {
                engine_flow_go_cleanup(e, cmd, data, "cancelled");
                return;
        }
        st = clone ? engine_flow_run_disks(e, cmd, p, data, engine_flow_collapsed_copy,
                                           MIN(n, ENGINE_FLOW_MAX_PARALLEL_DISKS), &error)
                   : engine_flow_run_disks(e, cmd, p, data, make_thin, n, &error);
        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        if (st == ENGINE_CHILDREN_FAILED) {
                engine_flow_go_cleanup(e, cmd, data, error);
                return;
        }
        engine_flow_unlock_disks(e, cmd, "ok");
        engine_flow_unlock_vm(e, cmd, js(p, "vm"));
        engine_flow_job_end(e, cmd, true, NULL);
        for (size_t i = 0; i < n; i++)
                engine_disk_size_refresh(e, js(engine_flow_disk(p, i), "img"));
        engine_event(e, "normal", js(cmd, "id"), "VM %s created from template %s (%s)", js(p, "name"),
                     js(p, "template"), clone ? "cloned" : "thin");
}

static void cleanup_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autoptr(GError) store_error = NULL;
        g_autofree char *why = g_strdup(js(data, "error"));
        const char *vm = js(p, "vm");

        if (!engine_flow_cleanup_disks(e, cmd, p, data))
                return;
        engine_flow_checked(engine_store_vm_delete(e->db, vm, false, &store_error), &store_error, "the removal", vm);
        engine_flow_job_end(e, cmd, false, why);
        engine_event(e, "warning", js(cmd, "id"), "VM %s was not created: %s", js(p, "name"), why);
}

static const struct engine_flow_step vm_create_steps[] = {
        { ENGINE_PHASE_MAIN, create_step },
        { ENGINE_PHASE_CLEANUP, cleanup_step },
};

static void vm_create_advance(struct engine *e, json_t *cmd)
{
        engine_flow_steps_run(e, cmd, vm_create_steps, G_N_ELEMENTS(vm_create_steps));
}

void engine_flow_vm_create_init(void)
{
        engine_flow_register(ENGINE_KIND_CREATE_VM_FROM_TEMPLATE, vm_create_advance, true);
}
