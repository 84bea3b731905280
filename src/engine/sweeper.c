/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The orphan sweeper: every sweep_interval seconds it lists the images on
 * each storage domain (StorageDomain.getVolumes through any usable host)
 * and removes, through the SPM, those that no disk owns and no active
 * command names. Cleanup after a failure is a command of its own and
 * normally finishes; the sweeper is the backstop for what a crash at the
 * wrong moment or a removal that kept failing left behind.
 *
 * An image is removed only when it is found orphaned by two sweeps in a
 * row, so nothing created between a listing and the inventory check can be
 * taken for an orphan.
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "hosts.h"
#include "inventory.h"
#include "sweeper.h"
#include "uuid.h"

#define js engine_js

static gint64 last_sweep;              /* engine_now() of the last sweep started */
static GHashTable *suspects;           /* "sd/img" seen orphaned by the last sweep */

struct sweep_ctx {
        struct engine *e;
        char *sd;
};

static void on_images(json_t *result, const GError *error, void *userdata)
{
        struct sweep_ctx *c = userdata;
        struct engine *e = c->e;
        const char *img;
        json_t *vols;

        if (!result) {
                g_message("sweep of storage domain %s: %s", c->sd, error ? error->message : "no answer");
                goto out;
        }
        json_object_foreach(result, img, vols) {
                g_autofree char *key = g_strdup_printf("%s/%s", c->sd, img);
                g_autoptr(json_t) params = NULL;
                g_autofree char *id = NULL;

                if (!fy_uuid_is_valid(img) || engine_image_in_use(e, c->sd, img, NULL)) {
                        g_hash_table_remove(suspects, key);
                        continue;
                }
                if (!g_hash_table_contains(suspects, key)) {
                        g_hash_table_add(suspects, g_steal_pointer(&key));
                        continue;      /* confirmed, or not, by the next sweep */
                }
                g_hash_table_remove(suspects, key);
                params = json_pack("{s:s, s:s, s:b}", "sd", c->sd, "img", img, "persistent", true);
                id = engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, NULL, NULL, NULL, params);
                engine_event(e, "warning", id, "sweeper: image %s on storage domain %s (%zu volumes) belongs to no disk "
                             "and no running operation; removing it", img, c->sd, json_is_array(vols) ? json_array_size(vols) : 0);
        }
out:
        g_free(c->sd);
        g_free(c);
}

void engine_sweep_maybe(struct engine *e)
{
        g_autoptr(json_t) sds = NULL;
        g_autoptr(GPtrArray) hosts = NULL;
        size_t i;
        json_t *sd;

        if (!e->config.sweep_interval || engine_now() - last_sweep < (gint64) e->config.sweep_interval)
                return;
        hosts = engine_usable_hosts(e);
        if (hosts->len == 0)
                return;
        last_sweep = engine_now();
        if (!suspects)
                suspects = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        sds = engine_store_sd_list(e->db, e->dc_id, NULL);
        json_array_foreach(sds, i, sd) {
                struct sweep_ctx *c = g_new0(struct sweep_ctx, 1);

                c->e = e;
                c->sd = g_strdup(js(sd, "id"));
                engine_host_call(e, hosts->pdata[i % hosts->len], "StorageDomain.getVolumes",
                                 json_pack("{s:s}", "storagedomainID", c->sd), e->config.host_timeout, on_images, c);
        }
}
