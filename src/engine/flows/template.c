/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * create_template_from_vm {template, vm, name, disks[]}   (job; the VM and its disks locked, read only)
 *
 *   main ──► copy_image_group_with_data per disk, at most 8 at once: the VM disk's leaf
 *     │      copied collapsed (qemu-img follows the chain) into one volume without parent,
 *     │      on a host the scheduler picks
 *     ├─ all ok ──► seal ──► seal_template_volume per disk (SDM.update_volume type SHARED,
 *     │               │      a job on any host but the SPM: flows/job.c)
 *     │               ├─ all ok ──► end: template "ok", disks and VM unlocked
 *     │               └─ one failed ─┐
 *     └─ one failed, or cancelled ───┴──► cleanup ──► remove_image of every new image
 *                                           ──► end: the template's rows gone, the VM unlocked
 *
 * Cancel (kinds.c): accepted in main and seal; no copy starts after it and
 * the flow goes to cleanup once the started ones end.
 */
#include "clock.h"
#include "events.h"
#include "flows/flow.h"
#include "flows/template.h"
#include "inventory.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static char *make_seal(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = engine_flow_disk(p, i);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:s}", "sd", js(d, "sd"), "img", js(d, "img"), "vol", js(d, "vol"));
        g_autofree char *desc = g_strdup_printf("Marking volume %s of template disk %s shared", js(d, "vol"), js(d, "img"));

        return engine_flow_leaf_create(e, cmd, ENGINE_KIND_SEAL_TEMPLATE_VOLUME, cp, desc, 0);
}

static void copy_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st;

        if (ji(cmd, "cancel") && !json_object_get(data, "children")) {
                engine_flow_go_cleanup(e, cmd, data, "cancelled");
                return;
        }
        st = engine_flow_run_disks(e, cmd, p, data, engine_flow_collapsed_copy, MIN(n, ENGINE_FLOW_MAX_PARALLEL_DISKS),
                                   &error);
        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
        } else if (st == ENGINE_CHILDREN_FAILED) {
                engine_flow_go_cleanup(e, cmd, data, error);
        } else {
                json_object_clear(data);
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_SEAL, data);
                engine_kick(e);
        }
}

static void seal_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autoptr(GError) store_error = NULL;
        g_autofree char *error = NULL;
        const char *tmpl = js(p, "template");
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st = engine_flow_run_disks(e, cmd, p, data, make_seal, n, &error);

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_SEAL, data);
                return;
        }
        if (st == ENGINE_CHILDREN_FAILED) {
                engine_flow_go_cleanup(e, cmd, data, error);
                return;
        }
        engine_flow_checked(engine_store_template_set_status(e->db, tmpl, "ok", &store_error), &store_error, "the status",
                            tmpl);
        engine_flow_unlock_disks(e, cmd, "ok");
        engine_flow_unlock_vm(e, cmd, js(p, "vm"));
        engine_flow_job_end(e, cmd, true, NULL);
        for (size_t i = 0; i < n; i++)
                engine_disk_size_refresh(e, js(engine_flow_disk(p, i), "img"));
        engine_event(e, "normal", js(cmd, "id"), "template %s created from VM %s", js(p, "name"), js(p, "vm"));
}

static void cleanup_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autoptr(GError) store_error = NULL;
        g_autofree char *why = g_strdup(js(data, "error"));
        const char *tmpl = js(p, "template");

        if (!engine_flow_cleanup_disks(e, cmd, p, data))
                return;
        engine_flow_checked(engine_store_template_delete(e->db, tmpl, &store_error), &store_error, "the removal", tmpl);
        engine_flow_unlock_disks(e, cmd, "ok");        /* the VM's disks, read only */
        engine_flow_unlock_vm(e, cmd, js(p, "vm"));
        engine_flow_job_end(e, cmd, false, why);
        engine_event(e, "warning", js(cmd, "id"), "template %s was not created: %s", js(p, "name"), why);
}

static const struct engine_flow_step template_steps[] = {
        { ENGINE_PHASE_MAIN, copy_step },
        { ENGINE_PHASE_SEAL, seal_step },
        { ENGINE_PHASE_CLEANUP, cleanup_step },
};

static void template_advance(struct engine *e, json_t *cmd)
{
        engine_flow_steps_run(e, cmd, template_steps, G_N_ELEMENTS(template_steps));
}

void engine_flow_template_init(void)
{
        engine_flow_register(ENGINE_KIND_CREATE_TEMPLATE_FROM_VM, template_advance, true);
}
