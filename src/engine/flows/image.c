/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The composites under the disk, template and VM flows: one image's
 * volumes made and filled.
 *
 *   copy_image_group_with_data {sd, img, volumes[], src_sd, src_img, src_volumes[]}
 *     structure ── clone_image_group_volumes_structure ──ok──► data ── copy_image_group_volumes_data ──► end
 *         └─ failed ──► end (failed: the flow above removes the image)
 *
 *   clone_image_group_volumes_structure {sd, img, volumes[]}
 *     create_volume_container × N, one after another, base first (each names its parent)
 *
 *   copy_image_group_volumes_data {the same}
 *     copy_data × N at once, at most max_parallel_copies, each on the host the scheduler
 *     picks; after a failure none starts and the started ones are waited for
 *
 * Cancel: a composite of a cancelled job starts no more children and fails
 * (engine_run_children), so the flow above cleans up.
 */
#include "commands.h"
#include "flows/flow.h"
#include "flows/image.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static char *make_volume_container(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *v = json_array_get(json_object_get(p, "volumes"), i);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:s, s:O, s:I, s:s, s:O, s:b}",
                                         "sd", js(p, "sd"), "img", js(p, "img"), "vol", js(v, "id"),
                                         "parent", json_object_get(v, "parent"), "size", ji(v, "capacity"),
                                         "format", js(v, "format"), "sparse", json_object_get(v, "sparse"),
                                         /* a new empty disk is complete once created; a copy's volumes are not */
                                         "legal_when_created", !json_object_get(p, "src_sd"));
        g_autofree char *desc = g_strdup_printf("Creating volume %s on storage domain %s", js(v, "id"), js(p, "sd"));
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "create_volume", desc,
                                                   json_number_value(json_object_get(v, "structure_weight")));

        return engine_cmd_create(e, ENGINE_KIND_CREATE_VOLUME_CONTAINER, js(cmd, "id"), js(cmd, "job_id"), step, cp);
}

static char *make_copy_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *src = json_array_get(json_object_get(p, "src_volumes"), i);
        json_t *dst = json_array_get(json_object_get(p, "volumes"), i);
        g_autoptr(json_t) cp = json_pack("{s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s}, s:I, s:b}",
                                         "src", "sd", js(p, "src_sd"), "img", js(p, "src_img"), "vol", js(src, "id"),
                                         "dst", "sd", js(p, "sd"), "img", js(p, "img"), "vol", js(dst, "id"),
                                         /* what the scheduler weighs: the estimate if the flow made one, else the capacity */
                                         "bytes", json_object_get(dst, "bytes") ? ji(dst, "bytes") : ji(dst, "capacity"),
                                         /* made by this flow's structure step, its generation recorded: no read before the copy */
                                         "dst_created", true);
        json_t *below = json_array();

        /* A layer is verified by its guest view (its chain), so only once the layers below it are
         * verified: their ids on the destination (ARCHITECTURE.md, verified copies). */
        for (size_t j = 0; j < i; j++)
                json_array_append_new(below, json_string(js(json_array_get(json_object_get(p, "volumes"), j), "id")));
        json_object_set_new(cp, "below", below);
        g_autofree char *desc = g_strdup_printf("Copying volume %s to storage domain %s", js(src, "id"), js(p, "sd"));
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "copy_data", desc,
                                                   json_number_value(json_object_get(dst, "data_weight")));

        return engine_cmd_create(e, ENGINE_KIND_COPY_DATA, js(cmd, "id"), js(cmd, "job_id"), step, cp);
}

static char *make_structure(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_flow_child(e, cmd, ENGINE_KIND_CLONE_STRUCTURE, p);
}

static char *make_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_flow_child(e, cmd, ENGINE_KIND_COPY_VOLUMES_DATA, p);
}

/* Ends a composite with its children's outcome, or records where they are. */
static void children_end(struct engine *e, json_t *cmd, enum engine_phase phase, json_t *data,
                         enum engine_children st, const char *error)
{
        engine_cmd_update(e, js(cmd, "id"), phase, data);
        if (st != ENGINE_CHILDREN_ACTIVE)
                engine_cmd_finish(e, cmd, st == ENGINE_CHILDREN_SUCCEEDED, error);
}

static void structure_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "volumes"));
        enum engine_children st = engine_run_children(e, cmd, data, n, make_volume_container, &error);

        children_end(e, cmd, engine_cmd_phase(cmd), data, st, error);
}

static void volumes_data_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "volumes"));
        /* A child's layer does not need its parent's data: every volume at once. */
        enum engine_children st = engine_run_children_parallel(e, cmd, data, n, e->config.max_parallel_copies,
                                                               make_copy_data, &error);

        children_end(e, cmd, engine_cmd_phase(cmd), data, st, error);
}

static void with_data_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        enum engine_phase phase = engine_cmd_phase(cmd) == ENGINE_PHASE_NEW ? ENGINE_PHASE_STRUCTURE : engine_cmd_phase(cmd);
        enum engine_children st = engine_run_children(e, cmd, data, 1,
                                                      phase == ENGINE_PHASE_STRUCTURE ? make_structure : make_data, &error);

        if (st == ENGINE_CHILDREN_SUCCEEDED && phase == ENGINE_PHASE_STRUCTURE) {
                json_object_clear(data);
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_DATA, data);
                engine_kick(e);        /* the data now, not at the next round */
                return;
        }
        children_end(e, cmd, phase, data, st, error);
}

void engine_flow_image_init(void)
{
        engine_flow_register(ENGINE_KIND_CLONE_STRUCTURE, structure_advance, true);
        engine_flow_register(ENGINE_KIND_COPY_VOLUMES_DATA, volumes_data_advance, true);
        engine_flow_register(ENGINE_KIND_COPY_WITH_DATA, with_data_advance, true);
}
