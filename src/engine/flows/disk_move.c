/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * move_disk {disk, sd, img, volumes[], src_sd, src_img, src_volumes[]}   (job; the disk locked)
 * copy_disk {the same, new_disk}                                         (job; both disks locked)
 *
 *   main ──► copy_image_group_with_data: the destination's volumes on the SPM, base
 *     │      first, then their data, in parallel, each on a host the scheduler picks
 *     │      (flows/image.c; copy_data: flows/job.c)
 *     ├─ ok, move ──► the disk switched to the destination ──► remove_source ──►
 *     │                 remove_image of the source ──► end: the source's volume rows
 *     │                 gone, the disk "ok" on the destination
 *     ├─ ok, copy ──► end: both disks "ok"
 *     └─ failed, or cancelled ──► cleanup ──► remove_image of the destination ──►
 *                                   end: the destination's rows gone, the source kept
 *
 * A removal that keeps failing (5 tries within the flow) leaves the flow and
 * goes on as a background remove_image of its own (engine_flow_removal_detach).
 *
 * Cancel (kinds.c): accepted in main; no more children start, running copies
 * get Job.abort and the flow goes to cleanup; not in cleanup or remove_source.
 */
#include <errno.h>

#include "flows/disk_move.h"
#include "flows/flow.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static char *make_with_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_flow_child(e, cmd, ENGINE_KIND_COPY_WITH_DATA, p);
}

static char *make_remove_dst(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_flow_remove_image(e, cmd, js(p, "sd"), js(p, "img"));
}

static char *make_remove_src(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_flow_remove_image(e, cmd, js(p, "src_sd"), js(p, "src_img"));
}

/* What the end changes: the disk (a move) or the new disk (a copy) keeps what was made, or loses it. */
static int move_end(struct engine *e, json_t *cmd, json_t *p, bool ok, GError **error)
{
        const char *disk = js(p, "disk");
        const char *new_disk = js(p, "new_disk");

        /* A move that succeeded: the disk lives on the destination now; its volume rows follow. */
        if (ok && !new_disk && (engine_store_volumes_delete(e->db, disk, js(p, "src_sd"), error) < 0 ||
                                engine_store_disk_set_domain(e->db, disk, js(p, "sd"), error) < 0))
                return -EIO;
        /* A copy or move that failed: what it made is gone. */
        if (!ok && engine_store_volumes_delete(e->db, new_disk ? new_disk : disk, js(p, "sd"), error) < 0)
                return -EIO;
        if (new_disk && (ok ? engine_store_disk_unlock(e->db, new_disk, NULL, "ok", error)
                            : engine_store_disk_delete(e->db, new_disk, error)) < 0)
                return -EIO;
        /* Only while this job holds the disk: never unlock another operation's disk. */
        return engine_store_disk_unlock(e->db, disk, js(cmd, "job_id"), "ok", error);
}

static void end(struct engine *e, json_t *cmd, json_t *p, bool ok, const char *error)
{
        engine_flow_disk_end(e, cmd, p, ok, error, move_end, js(p, "new_disk") ? js(p, "new_disk") : js(p, "disk"));
}

static void copy_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autofree char *error = NULL;
        enum engine_children st;

        if (ji(cmd, "cancel") && !js(data, "child") && ji(data, "index") == 0) {
                st = ENGINE_CHILDREN_FAILED;   /* cancelled before it started */
                error = g_strdup("cancelled");
        } else {
                st = engine_run_children(e, cmd, data, 1, make_with_data, &error);
        }
        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        json_object_clear(data);
        if (st == ENGINE_CHILDREN_FAILED) {
                /* Nothing half-made stays behind: remove the destination, keep the source. */
                json_object_set_new(data, "error", json_string(error ? error : "failed"));
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_CLEANUP, data);
                engine_kick(e);
                return;
        }
        if (engine_cmd_kind(cmd) == ENGINE_KIND_COPY_DISK) {
                end(e, cmd, p, true, NULL);
                return;
        }
        /* Switch first: the source is removed only once the disk points at the copy. */
        if (engine_store_disk_set_domain(e->db, js(p, "disk"), js(p, "sd"), NULL) < 0)
                return;        /* not switched: the round's transaction decides again */
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_REMOVE_SOURCE, data);
        engine_kick(e);
}

static void remove_source_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autofree char *error = NULL;
        enum engine_children st = engine_run_children(e, cmd, data, 1, make_remove_src, &error);

        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_REMOVE_SOURCE, data);
        if (st == ENGINE_CHILDREN_ACTIVE)
                return;
        if (st == ENGINE_CHILDREN_FAILED)
                engine_flow_removal_detach(e, js(p, "src_sd"), js(p, "src_img"), error);
        end(e, cmd, p, true, NULL);
}

static void cleanup_step(struct engine *e, json_t *cmd, json_t *p, json_t *data)
{
        g_autofree char *why = g_strdup(js(data, "error"));
        g_autofree char *error = NULL;
        enum engine_children st = engine_run_children(e, cmd, data, 1, make_remove_dst, &error);

        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_CLEANUP, data);
        if (st == ENGINE_CHILDREN_ACTIVE)
                return;
        if (st == ENGINE_CHILDREN_FAILED)
                engine_flow_removal_detach(e, js(p, "sd"), js(p, "img"), error);
        end(e, cmd, p, false, why);
}

static const struct engine_flow_step move_steps[] = {
        { ENGINE_PHASE_MAIN, copy_step },
        { ENGINE_PHASE_REMOVE_SOURCE, remove_source_step },
        { ENGINE_PHASE_CLEANUP, cleanup_step },
};

static void move_advance(struct engine *e, json_t *cmd)
{
        engine_flow_steps_run(e, cmd, move_steps, G_N_ELEMENTS(move_steps));
}

void engine_flow_disk_move_init(void)
{
        engine_flow_register(ENGINE_KIND_MOVE_DISK, move_advance, true);
        engine_flow_register(ENGINE_KIND_COPY_DISK, move_advance, true);
}
