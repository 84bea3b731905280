/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The disk flows and the composites under them.
 *
 *   create_disk:  main ── clone_image_group_volumes_structure ──▶ end (disk ok | rows removed)
 *   remove_disk:  main ── remove_image ──▶ end (rows removed | disk illegal)
 *   move_disk:    main ── copy_image_group_with_data ──ok──▶ switch disk to the destination
 *                   │                                         ──▶ remove_source ── remove_image(src) ──▶ end
 *                   └─failed/cancelled──▶ cleanup ── remove_image(dst) ──▶ end (source kept)
 *   copy_disk:    like move_disk, a new disk, no remove_source
 *   A removal that keeps failing leaves the flow and goes on as a background
 *   remove_image of its own (cleanup_detach).
 *
 *   copy_image_group_with_data:  structure ── clone_image_group_volumes_structure ──▶ data ── copy_image_group_volumes_data ──▶ end
 *   clone_image_group_volumes_structure:  create_volume_container × N, base first
 *   copy_image_group_volumes_data:        copy_data × N, in parallel (max_parallel_copies)
 *
 * Cancel: a cancelled flow starts no more children and goes to cleanup; it
 * cannot be cancelled once in cleanup or remove_source (kinds.c).
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/disk.h"
#include "inventory.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static char *make_volume_container(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *v = json_array_get(json_object_get(p, "volumes"), i);
        json_t *cp = json_pack("{s:s, s:s, s:s, s:O, s:I, s:s, s:O, s:b}",
                               "sd", js(p, "sd"), "img", js(p, "img"), "vol", js(v, "id"),
                               "parent", json_object_get(v, "parent"), "size", ji(v, "capacity"),
                               "format", js(v, "format"), "sparse", json_object_get(v, "sparse"),
                               /* a new empty disk is complete once created; a copy's volumes are not */
                               "legal_when_created", !json_object_get(p, "src_sd"));
        g_autofree char *desc = g_strdup_printf("Creating volume %s on storage domain %s", js(v, "id"), js(p, "sd"));
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "create_volume", desc, json_number_value(json_object_get(v, "structure_weight")));
        char *id = engine_cmd_create(e, ENGINE_KIND_CREATE_VOLUME_CONTAINER, js(cmd, "id"), js(cmd, "job_id"), step, cp);

        json_decref(cp);
        return id;
}

static char *make_copy_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *src = json_array_get(json_object_get(p, "src_volumes"), i);
        json_t *dst = json_array_get(json_object_get(p, "volumes"), i);
        json_t *cp = json_pack("{s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s}, s:I, s:b}",
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
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "copy_data", desc, json_number_value(json_object_get(dst, "data_weight")));
        char *id = engine_cmd_create(e, ENGINE_KIND_COPY_DATA, js(cmd, "id"), js(cmd, "job_id"), step, cp);

        json_decref(cp);
        return id;
}

static char *make_remove_image(struct engine *e, json_t *cmd, const char *sd, const char *img)
{
        g_autofree char *desc = g_strdup_printf("Removing image %s from storage domain %s", img, sd);
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "remove_image", desc, 0);
        json_t *cp = json_pack("{s:s, s:s}", "sd", sd, "img", img);
        char *id = engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, js(cmd, "id"), js(cmd, "job_id"), step, cp);

        json_decref(cp);
        return id;
}

static char *make_remove_dst(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return make_remove_image(e, cmd, js(p, "sd"), js(p, "img"));
}

static char *make_remove_src(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return make_remove_image(e, cmd, js(p, "src_sd"), js(p, "src_img"));
}

static char *make_structure(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_cmd_create(e, ENGINE_KIND_CLONE_STRUCTURE, js(cmd, "id"), js(cmd, "job_id"), NULL, p);
}

static char *make_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_cmd_create(e, ENGINE_KIND_COPY_VOLUMES_DATA, js(cmd, "id"), js(cmd, "job_id"), NULL, p);
}

static char *make_with_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_cmd_create(e, ENGINE_KIND_COPY_WITH_DATA, js(cmd, "id"), js(cmd, "job_id"), NULL, p);
}

/* Finishes a top-level command: disks, job, event. */
static void flow_end(struct engine *e, json_t *cmd, json_t *p, bool ok, const char *error)
{
        enum engine_kind kind = engine_cmd_kind(cmd);
        const char *type = engine_kind_name(kind);
        const char *disk = js(p, "disk");
        const char *new_disk = js(p, "new_disk");
        bool copies = kind == ENGINE_KIND_MOVE_DISK || kind == ENGINE_KIND_COPY_DISK;
        g_autoptr(GError) store_error = NULL;
        const char *job_status = ok ? "finished" : ji(cmd, "cancel") ? "aborted" : "failed";
        bool delete_disk = (kind == ENGINE_KIND_CREATE_DISK && !ok) || (kind == ENGINE_KIND_REMOVE_DISK && ok);

        if (engine_store_begin(e->db, &store_error) < 0)
                goto failed;
        /* A move that succeeded: the disk lives on the destination now; its volume rows follow. */
        if (kind == ENGINE_KIND_MOVE_DISK && ok &&
            (engine_store_volumes_delete(e->db, disk, js(p, "src_sd"), &store_error) < 0 ||
             engine_store_disk_set_domain(e->db, disk, js(p, "sd"), &store_error) < 0))
                goto rollback;
        /* A copy or move that failed: what it made is gone. */
        if (!ok && copies && engine_store_volumes_delete(e->db, new_disk ? new_disk : disk, js(p, "sd"), &store_error) < 0)
                goto rollback;
        if (new_disk && (ok ? engine_store_disk_unlock(e->db, new_disk, NULL, "ok", &store_error)
                            : engine_store_disk_delete(e->db, new_disk, &store_error)) < 0)
                goto rollback;
        /* Otherwise only while this job holds the disk: never unlock another operation's disk.
         * A removal that failed half-way leaves volumes gone or ILLEGAL: say so. */
        if ((delete_disk ? engine_store_disk_delete(e->db, disk, &store_error)
                         : engine_store_disk_unlock(e->db, disk, js(cmd, "job_id"),
                                                    kind == ENGINE_KIND_REMOVE_DISK ? "illegal" : "ok", &store_error)) < 0)
                goto rollback;
        if (engine_store_job_end(e->db, js(cmd, "job_id"), job_status, engine_now(), &store_error) < 0)
                goto rollback;
        /* The command ends in the same transaction: a crash can never replay its end. */
        engine_cmd_finish(e, cmd, ok, error);
        if (engine_store_commit(e->db, &store_error) < 0)
                goto failed;
        if (ok && copies)
                engine_disk_size_record(e, new_disk ? new_disk : disk, js(cmd, "job_id"));
        else if (ok && kind != ENGINE_KIND_REMOVE_DISK)
                engine_disk_size_refresh(e, new_disk ? new_disk : disk);
        engine_event(e, ok ? "normal" : "warning", js(cmd, "id"), "%s of disk %s %s%s%s", type, disk,
                     ok ? "finished" : "failed", error ? ": " : "", error ? error : "");
        return;
rollback:
        engine_store_rollback(e->db);
failed:
        engine_not_recorded(&store_error, "the end", js(cmd, "id"));   /* still active: ends again next round */
        engine_kick(e);
}

/*
 * A removal that kept failing must not hold the operation's disk locked:
 * the flow ends and the removal goes on as a command of its own, retried
 * until it is done.
 */
static void cleanup_detach(struct engine *e, json_t *cmd, const char *sd, const char *img, const char *why)
{
        g_autoptr(json_t) params = json_pack("{s:s, s:s, s:b}", "sd", sd, "img", img, "persistent", true);
        g_autofree char *id = engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, NULL, NULL, NULL, params);

        engine_event(e, "warning", id, "image %s on storage domain %s is not removed yet (%s); "
                     "retrying in the background", img, sd, why ? why : "unknown error");
}

/* Ends a composite with its children's outcome, or records where they are. */
static void children_end(struct engine *e, json_t *cmd, enum engine_phase phase, json_t *data,
                         enum engine_children st, const char *error)
{
        engine_cmd_update(e, js(cmd, "id"), phase, data);
        if (st != ENGINE_CHILDREN_ACTIVE)
                engine_cmd_finish(e, cmd, st == ENGINE_CHILDREN_SUCCEEDED, error);
}

/* Records the next phase of a composite and starts it now, not at the next round. */
static void phase_next(struct engine *e, json_t *cmd, enum engine_phase phase, json_t *data)
{
        engine_cmd_update(e, js(cmd, "id"), phase, data);
        engine_kick(e);
}

static void composite_advance_tx(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        enum engine_kind kind = engine_cmd_kind(cmd);
        enum engine_phase phase = engine_cmd_phase(cmd);
        size_t nvol = json_array_size(json_object_get(p, "volumes"));
        enum engine_children st;

        switch (kind) {
        case ENGINE_KIND_CLONE_STRUCTURE:
                st = engine_run_children(e, cmd, data, nvol, make_volume_container, &error);
                children_end(e, cmd, phase, data, st, error);
                return;
        case ENGINE_KIND_COPY_VOLUMES_DATA:
                /* Every volume at once (each on the host the scheduler picks), at most
                 * max_parallel_copies per disk: a child's layer does not need its parent's data. */
                st = engine_run_children_parallel(e, cmd, data, nvol, e->config.max_parallel_copies,
                                                  make_copy_data, &error);
                children_end(e, cmd, phase, data, st, error);
                return;
        case ENGINE_KIND_COPY_WITH_DATA:
                if (phase == ENGINE_PHASE_NEW)
                        phase = ENGINE_PHASE_STRUCTURE;
                st = engine_run_children(e, cmd, data, 1, phase == ENGINE_PHASE_STRUCTURE ? make_structure : make_data,
                                         &error);
                if (st == ENGINE_CHILDREN_SUCCEEDED && phase == ENGINE_PHASE_STRUCTURE) {
                        json_object_clear(data);
                        phase_next(e, cmd, ENGINE_PHASE_DATA, data);
                        return;
                }
                children_end(e, cmd, phase, data, st, error);
                return;
        default:
                break;         /* a top-level disk flow */
        }

        if (phase == ENGINE_PHASE_NEW)
                phase = ENGINE_PHASE_MAIN;
        switch (phase) {
        case ENGINE_PHASE_MAIN: {
                engine_child_factory make = kind == ENGINE_KIND_CREATE_DISK ? make_structure :
                                            kind == ENGINE_KIND_REMOVE_DISK ? make_remove_dst : make_with_data;

                if (ji(cmd, "cancel") && !js(data, "child") && ji(data, "index") == 0) {
                        st = ENGINE_CHILDREN_FAILED;   /* cancelled before it started */
                        error = g_strdup("cancelled");
                } else {
                        st = engine_run_children(e, cmd, data, 1, make, &error);
                }
                if (st == ENGINE_CHILDREN_ACTIVE) {
                        engine_cmd_update(e, js(cmd, "id"), phase, data);
                        return;
                }
                json_object_clear(data);
                if (st == ENGINE_CHILDREN_SUCCEEDED) {
                        if (kind == ENGINE_KIND_MOVE_DISK) {
                                /* Switch first: the source is removed only once the disk points at the copy. */
                                if (engine_store_disk_set_domain(e->db, js(p, "disk"), js(p, "sd"), NULL) < 0)
                                        return;        /* not switched: the round's transaction decides again */
                                phase_next(e, cmd, ENGINE_PHASE_REMOVE_SOURCE, data);
                                return;
                        }
                        flow_end(e, cmd, p, true, NULL);
                        return;
                }
                if (kind == ENGINE_KIND_REMOVE_DISK) {
                        flow_end(e, cmd, p, false, error);
                        return;
                }
                /* Nothing half-made stays behind: remove the destination, keep the source. */
                json_object_set_new(data, "error", json_string(error ? error : "failed"));
                phase_next(e, cmd, ENGINE_PHASE_CLEANUP, data);
                return;
        }
        case ENGINE_PHASE_REMOVE_SOURCE:
                st = engine_run_children(e, cmd, data, 1, make_remove_src, &error);
                engine_cmd_update(e, js(cmd, "id"), phase, data);
                if (st == ENGINE_CHILDREN_ACTIVE)
                        return;
                if (st == ENGINE_CHILDREN_FAILED)
                        cleanup_detach(e, cmd, js(p, "src_sd"), js(p, "src_img"), error);
                flow_end(e, cmd, p, true, NULL);
                return;
        case ENGINE_PHASE_CLEANUP: {
                g_autofree char *why = g_strdup(js(data, "error"));

                st = engine_run_children(e, cmd, data, 1, make_remove_dst, &error);
                engine_cmd_update(e, js(cmd, "id"), phase, data);
                if (st == ENGINE_CHILDREN_ACTIVE)
                        return;
                if (st == ENGINE_CHILDREN_FAILED)
                        cleanup_detach(e, cmd, js(p, "sd"), js(p, "img"), error);
                flow_end(e, cmd, p, false, why);
                return;
        }
        default: {
                g_autofree char *why = g_strdup_printf("phase \"%s\" is not one of %s", js(cmd, "phase"),
                                                       engine_kind_name(kind));
                flow_end(e, cmd, p, false, why);
                return;
        }
        }
}

void engine_flow_disk_init(void)
{
        static const enum engine_kind kinds[] = { ENGINE_KIND_CLONE_STRUCTURE, ENGINE_KIND_COPY_VOLUMES_DATA,
                                                  ENGINE_KIND_COPY_WITH_DATA, ENGINE_KIND_CREATE_DISK,
                                                  ENGINE_KIND_MOVE_DISK, ENGINE_KIND_COPY_DISK, ENGINE_KIND_REMOVE_DISK };

        for (size_t i = 0; i < G_N_ELEMENTS(kinds); i++)
                engine_flow_register(kinds[i], composite_advance_tx, true);
}
