/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Questions about the inventory that several modules ask. */
#include "hosts.h"
#include "inventory.h"

bool engine_image_in_use(struct engine *e, const char *sd, const char *img, const char *except_command)
{
        bool used = true;

        /* No answer from the store: in use, to be safe. */
        if (engine_store_image_in_use(e->db, sd, img, except_command, &used, NULL) < 0)
                return true;
        return used;
}

json_t *engine_disk_volumes(struct engine *e, json_t *disk)
{
        json_t *rows = engine_store_volume_list(e->db, engine_js(disk, "id"), engine_js(disk, "sd_id"), NULL);

        return rows ? rows : json_array();
}

/* Sums the allocated size of a disk's volumes into disks.actual_size (best effort, asynchronous). */
struct size_ctx {
        struct engine *e;
        char *disk;
        unsigned pending;
        gint64 total;
        bool failed;
};

static void on_volume_size(json_t *result, const GError *error, void *userdata)
{
        struct size_ctx *c = userdata;

        if (result)
                c->total += json_integer_value(json_object_get(result, "truesize"));
        else
                c->failed = true;
        if (--c->pending > 0)
                return;
        if (!c->failed && engine_store_disk_set_actual_size(c->e->db, c->disk, c->total, NULL) < 0)
                g_message("disk %s: its size is not recorded", c->disk);
        g_free(c->disk);
        g_free(c);
}

void engine_disk_size_refresh(struct engine *e, const char *disk_id)
{
        g_autoptr(json_t) disk = engine_store_disk_get(e->db, disk_id, NULL);
        g_autoptr(json_t) vols = disk ? engine_store_volume_list(e->db, disk_id, engine_js(disk, "sd_id"), NULL) : NULL;
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);
        struct size_ctx *c;
        size_t i;
        json_t *v;

        if (!vols || !dc || hosts->len == 0 || json_array_size(vols) == 0)
                return;
        c = g_new0(struct size_ctx, 1);
        c->e = e;
        c->disk = g_strdup(disk_id);
        c->pending = (unsigned) json_array_size(vols);
        json_array_foreach(vols, i, v)
                engine_host_call(e, hosts->pdata[0], "Volume.getInfo",
                                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", engine_js(dc, "pool_id"),
                                           "storagedomainID", engine_js(v, "sd_id"), "imageID", disk_id,
                                           "volumeID", engine_js(v, "id")),
                                 e->config.host_timeout, on_volume_size, c);
}
