/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Questions about the inventory that several modules ask. */
#include "hosts.h"
#include "inventory.h"
#include "kinds.h"

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

/*
 * The disk's size from what the job's copies into it reported (a copy_data
 * job's result carries its destination's truesize): no call to any host.
 * false when a volume has no such report (an older agent, a volume the job
 * did not copy): then nothing is recorded.
 */
static bool size_from_copies(struct engine *e, const char *disk_id, const char *job_id)
{
        g_autoptr(json_t) disk = engine_store_disk_get(e->db, disk_id, NULL);
        g_autoptr(json_t) vols = disk ? engine_store_volume_list(e->db, disk_id, engine_js(disk, "sd_id"), NULL) : NULL;
        g_autoptr(json_t) copies = job_id ? engine_store_cmd_list_of_job(e->db, job_id,
                                                                         engine_kind_name(ENGINE_KIND_COPY_DATA), NULL) : NULL;
        g_autoptr(json_t) sizes = json_object();       /* destination volume id → truesize its copy reported */
        gint64 total = 0;
        size_t i;
        json_t *row, *v;

        if (!vols || !copies || json_array_size(vols) == 0)
                return false;
        json_array_foreach(copies, i, row) {
                g_autoptr(json_t) p = engine_jparse(row, "params");
                g_autoptr(json_t) data = engine_jparse(row, "data");
                json_t *dst = json_object_get(p, "dst");

                if (g_strcmp0(engine_js(row, "state"), "succeeded") == 0 && json_is_integer(json_object_get(data, "truesize")) &&
                    g_strcmp0(engine_js(dst, "sd"), engine_js(disk, "sd_id")) == 0 && engine_js(dst, "vol"))
                        json_object_set(sizes, engine_js(dst, "vol"), json_object_get(data, "truesize"));
        }
        json_array_foreach(vols, i, v) {
                json_t *size = json_object_get(sizes, engine_js(v, "id"));

                if (!size)
                        return false;
                total += json_integer_value(size);
        }
        if (engine_store_disk_set_actual_size(e->db, disk_id, total, NULL) < 0)
                g_message("disk %s: its size is not recorded", disk_id);
        return true;
}

void engine_disk_size_record(struct engine *e, const char *disk_id, const char *job_id)
{
        if (!size_from_copies(e, disk_id, job_id))
                engine_disk_size_refresh(e, disk_id);
}
