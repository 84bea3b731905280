/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the flow files share. A flow runs inside its round's transaction: a
 * write the store refuses is said in the log (engine_not_recorded) and the
 * failed write makes the transaction roll back, so the next round redoes
 * the whole step from what is recorded.
 */
#include "clock.h"
#include "events.h"
#include "flows/flow.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji

json_t *engine_flow_disk(json_t *p, size_t i)
{
        return json_array_get(json_object_get(p, "disks"), i);
}

char *engine_flow_leaf_create(struct engine *e, json_t *cmd, enum engine_kind kind, json_t *params, const char *desc,
                              double weight)
{
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), engine_kind_name(kind), desc, weight);

        return engine_cmd_create(e, kind, js(cmd, "id"), js(cmd, "job_id"), step, params);
}

char *engine_flow_remove_image(struct engine *e, json_t *cmd, const char *sd, const char *img)
{
        g_autofree char *desc = g_strdup_printf("Removing image %s from storage domain %s", img, sd);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s}", "sd", sd, "img", img);

        return engine_flow_leaf_create(e, cmd, ENGINE_KIND_REMOVE_IMAGE, cp, desc, 0);
}

void engine_flow_removal_detach(struct engine *e, const char *sd, const char *img, const char *why)
{
        g_autoptr(json_t) params = json_pack("{s:s, s:s, s:b}", "sd", sd, "img", img, "persistent", true);
        g_autofree char *id = engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, NULL, NULL, NULL, params);

        engine_event(e, "warning", id, "image %s on storage domain %s is not removed yet (%s); retrying in the background",
                     img, sd, why ? why : "unknown error");
}

char *engine_flow_collapsed_copy(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = engine_flow_disk(p, i);
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

char *engine_flow_disk_remove(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *d = engine_flow_disk(p, i);

        return engine_flow_remove_image(e, cmd, js(d, "sd"), js(d, "img"));
}

enum engine_children engine_flow_run_disks(struct engine *e, json_t *cmd, json_t *p, json_t *data,
                                           engine_child_factory make, size_t parallel, char **ret_error)
{
        size_t n = json_array_size(json_object_get(p, "disks"));

        return engine_run_children_parallel(e, cmd, data, n, MAX(parallel, 1), make, ret_error);
}

void engine_flow_go_cleanup(struct engine *e, json_t *cmd, json_t *data, const char *error)
{
        json_object_clear(data);
        json_object_set_new(data, "error", json_string(error ? error : "failed"));
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_CLEANUP, data);
        engine_kick(e);
}

bool engine_flow_cleanup_images(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        size_t n = json_array_size(json_object_get(p, "disks"));
        enum engine_children st = engine_flow_run_disks(e, cmd, p, data, engine_flow_disk_remove, n, NULL);

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_CLEANUP, data);
                return false;
        }
        for (size_t i = 0; i < n; i++) {
                g_autofree char *error = NULL;
                g_autofree char *state = engine_children_state(e, data, i, &error);

                if (g_strcmp0(state, "succeeded") != 0)
                        engine_flow_removal_detach(e, js(engine_flow_disk(p, i), "sd"), js(engine_flow_disk(p, i), "img"),
                                                   error);
        }
        return true;
}

void engine_flow_job_end(struct engine *e, json_t *cmd, bool ok, const char *error)
{
        g_autoptr(GError) store_error = NULL;

        if (engine_store_job_end(e->db, js(cmd, "job_id"), ok ? "finished" : ji(cmd, "cancel") ? "aborted" : "failed",
                                 engine_now(), &store_error) < 0)
                engine_not_recorded(&store_error, "the end", js(cmd, "job_id"));
        engine_cmd_finish(e, cmd, ok, error);
}

void engine_flow_unlock_disks(struct engine *e, json_t *cmd, const char *status)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_disks_unlock_job(e->db, js(cmd, "job_id"), status, &error) < 0)
                engine_not_recorded(&error, "the disks' unlock", js(cmd, "job_id"));
}

void engine_flow_unlock_vm(struct engine *e, json_t *cmd, const char *vm)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_vm_unlock(e->db, vm, js(cmd, "job_id"), &error) < 0)
                engine_not_recorded(&error, "the unlock", vm);
}

void engine_flow_checked(int r, GError **error, const char *what, const char *id)
{
        if (r < 0)
                engine_not_recorded(error, what, id);
}
