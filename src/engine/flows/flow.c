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
#include "inventory.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

void engine_flow_steps_run(struct engine *e, json_t *cmd, const struct engine_flow_step *steps, size_t n)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        enum engine_phase phase = engine_cmd_phase(cmd) == ENGINE_PHASE_NEW ? ENGINE_PHASE_MAIN : engine_cmd_phase(cmd);
        g_autofree char *why = NULL;

        for (size_t i = 0; i < n; i++)
                if (steps[i].phase == phase) {
                        steps[i].run(e, cmd, p, data);
                        return;
                }
        why = g_strdup_printf("phase \"%s\" is not one of %s", js(cmd, "phase"), js(cmd, "type"));
        for (size_t i = 0; i < n; i++)
                if (steps[i].phase == ENGINE_PHASE_CLEANUP) {
                        json_object_clear(data);
                        json_object_set_new(data, "error", json_string(why));
                        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_CLEANUP, data);
                        steps[i].run(e, cmd, p, data);
                        return;
                }
        engine_flow_job_end(e, cmd, false, why);
}

void engine_flow_disk_single(struct engine *e, json_t *cmd, engine_child_factory make, engine_flow_end_fn end,
                             bool refresh)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        enum engine_children st = engine_run_children(e, cmd, data, 1, make, &error);

        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        engine_flow_disk_end(e, cmd, p, st == ENGINE_CHILDREN_SUCCEEDED, error, end, refresh ? js(p, "disk") : NULL);
}

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

char *engine_flow_child(struct engine *e, json_t *cmd, enum engine_kind kind, json_t *params)
{
        return engine_cmd_create(e, kind, js(cmd, "id"), js(cmd, "job_id"), NULL, params);
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

bool engine_flow_cleanup_disks(struct engine *e, json_t *cmd, json_t *p, json_t *data)
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
        for (size_t i = 0; i < n; i++) {
                g_autoptr(GError) store_error = NULL;
                const char *disk = js(engine_flow_disk(p, i), "img");

                engine_flow_checked(engine_store_disk_delete(e->db, disk, &store_error), &store_error, "the removal", disk);
        }
        return true;
}

const char *engine_flow_job_status(bool ok, bool cancelled)
{
        return ok ? "finished" : cancelled ? "aborted" : "failed";
}

void engine_flow_job_end(struct engine *e, json_t *cmd, bool ok, const char *error)
{
        g_autoptr(GError) store_error = NULL;

        if (engine_store_job_end(e->db, js(cmd, "job_id"), engine_flow_job_status(ok, ji(cmd, "cancel")),
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

void engine_flow_disk_end(struct engine *e, json_t *cmd, json_t *p, bool ok, const char *error, engine_flow_end_fn end,
                          const char *refresh)
{
        g_autoptr(GError) store_error = NULL;
        const char *job_status = engine_flow_job_status(ok, ji(cmd, "cancel"));

        if (engine_store_begin(e->db, &store_error) < 0)
                goto failed;
        if (end(e, cmd, p, ok, &store_error) < 0 ||
            engine_store_job_end(e->db, js(cmd, "job_id"), job_status, engine_now(), &store_error) < 0)
                goto rollback;
        engine_cmd_finish(e, cmd, ok, error);
        if (engine_store_commit(e->db, &store_error) < 0)
                goto failed;
        /* A copy's size from what its copies reported (no call), else read from the hosts. */
        if (ok && refresh)
                engine_disk_size_record(e, refresh, js(cmd, "job_id"));
        engine_event(e, ok ? "normal" : "warning", js(cmd, "id"), "%s of disk %s %s%s%s", js(cmd, "type"), js(p, "disk"),
                     ok ? "finished" : ji(cmd, "cancel") ? "cancelled" : "failed", error ? ": " : "", error ? error : "");
        return;
rollback:
        engine_store_rollback(e->db);
failed:
        engine_not_recorded(&store_error, "the end", js(cmd, "id"));
        engine_kick(e);
}

void engine_flow_checked(int r, GError **error, const char *what, const char *id)
{
        if (r < 0)
                engine_not_recorded(error, what, id);
}

double engine_flow_disk_share(json_t *p)
{
        return 100.0 / (double) MAX(json_array_size(json_object_get(p, "disks")), 1);
}

/* The inventory's row of volume vol of the disk's chain, or NULL. */
json_t *engine_flow_volume_find(struct engine *e, const char *disk, const char *sd, const char *vol)
{
        g_autoptr(json_t) vols = engine_store_volume_list(e->db, disk, sd, NULL);
        size_t i;
        json_t *v;

        json_array_foreach(vols, i, v)
                if (g_strcmp0(js(v, "id"), vol) == 0)
                        return json_incref(v);
        return NULL;
}

/* The data of child i of a flow (engine_run_children*), or NULL when it was never started. */
json_t *engine_flow_child_data(struct engine *e, json_t *data, size_t i)
{
        g_autofree char *k = g_strdup_printf("%zu", i);
        const char *id = json_string_value(json_object_get(json_object_get(data, "children"), k));
        g_autoptr(json_t) child = id ? engine_store_cmd_get(e->db, id, NULL) : NULL;

        return child ? jparse(child, "data") : NULL;
}

/* Children in flight: true (the data recorded); otherwise the caller ends the flow. */
bool engine_flow_disks_running(struct engine *e, json_t *cmd, json_t *p, json_t *data, engine_child_factory make, size_t n,
                          char **ret_error)
{
        enum engine_children st = engine_run_children_parallel(e, cmd, data, n, ENGINE_FLOW_MAX_PARALLEL_DISKS, make, ret_error);

        if (st != ENGINE_CHILDREN_ACTIVE)
                return false;
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
        return true;
}

/*
 * The checks a flow runs before it acts (data.checks), every one ended
 * before anything else starts: ACTIVE (recorded), FAILED, or SUCCEEDED
 * (data.checked set, so they are not run again).
 */
enum engine_children engine_flow_checks_run(struct engine *e, json_t *cmd, json_t *data, size_t n, engine_child_factory make,
                                       char **ret_error)
{
        json_t *checks = json_object_get(data, "checks");
        enum engine_children st;

        if (json_is_true(json_object_get(data, "checked")))
                return ENGINE_CHILDREN_SUCCEEDED;
        if (!json_is_object(checks))
                json_object_set_new(data, "checks", checks = json_object());
        st = engine_run_children_parallel(e, cmd, checks, n, ENGINE_FLOW_MAX_PARALLEL_DISKS, make, ret_error);
        if (st == ENGINE_CHILDREN_ACTIVE)
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
        else if (st == ENGINE_CHILDREN_SUCCEEDED)
                json_object_set_new(data, "checked", json_true());
        return st;
}

/* Ends a top-level flow: locks back, job and command ended (in the round's transaction). */
void engine_flow_vm_job_end(struct engine *e, json_t *cmd, const char *vm, bool ok, const char *error)
{
        if (engine_store_job_unlock(e->db, js(cmd, "job_id"), vm, NULL) < 0 ||
            engine_store_job_end(e->db, js(cmd, "job_id"), engine_flow_job_status(ok, ji(cmd, "cancel")), engine_now(),
                                 NULL) < 0)
                g_warning("job %s: the inventory could not be updated at its end", js(cmd, "job_id"));
        engine_cmd_finish(e, cmd, ok, error);
}
