/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * remove_disk {disk, sd, img}   (job; the disk locked)
 *
 *   main ──► remove_image (Image.delete on the SPM: flows/job.c)
 *     ├─ ok ─────► end: the disk's rows gone
 *     └─ failed ─► end: the disk "illegal" (its volumes may be gone or ILLEGAL)
 *
 * Cancel (kinds.c): not accepted; stopping a removal half-way helps nobody.
 */
#include "flows/disk_remove.h"
#include "flows/flow.h"
#include "store/store.h"

#define js engine_js

static char *make_remove(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_flow_remove_image(e, cmd, js(p, "sd"), js(p, "img"));
}

static int remove_end(struct engine *e, json_t *cmd, json_t *p, bool ok, GError **error)
{
        return ok ? engine_store_disk_delete(e->db, js(p, "disk"), error)
                  : engine_store_disk_unlock(e->db, js(p, "disk"), js(cmd, "job_id"), "illegal", error);
}

static void remove_advance(struct engine *e, json_t *cmd)
{
        engine_flow_disk_single(e, cmd, make_remove, remove_end, false);
}

void engine_flow_disk_remove_init(void)
{
        engine_flow_register(ENGINE_KIND_REMOVE_DISK, remove_advance, true);
}
