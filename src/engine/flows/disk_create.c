/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * create_disk {disk, sd, img, volumes[]}   (job; the new disk locked)
 *
 *   main ──► clone_image_group_volumes_structure (create_volume_container per
 *     │      volume on the SPM, base first: flows/image.c, flows/job.c)
 *     ├─ ok ─────► end: the disk unlocked "ok", its size read
 *     └─ failed ─► end: the disk's rows gone
 *
 * Cancel (kinds.c): not accepted.
 */
#include "flows/disk_create.h"
#include "flows/flow.h"
#include "store/store.h"

#define js engine_js

static char *make_structure(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_flow_child(e, cmd, ENGINE_KIND_CLONE_STRUCTURE, p);
}

static int create_end(struct engine *e, json_t *cmd, json_t *p, bool ok, GError **error)
{
        return ok ? engine_store_disk_unlock(e->db, js(p, "disk"), js(cmd, "job_id"), "ok", error)
                  : engine_store_disk_delete(e->db, js(p, "disk"), error);
}

static void create_advance(struct engine *e, json_t *cmd)
{
        engine_flow_disk_single(e, cmd, make_structure, create_end, true);
}

void engine_flow_disk_create_init(void)
{
        engine_flow_register(ENGINE_KIND_CREATE_DISK, create_advance, true);
}
