/* SPDX-License-Identifier: GPL-2.0-or-later */
/* REST resource /api/disks: the inventory's disks and the operations on them (actions.c). */
#include <string.h>

#include "actions.h"
#include "api_disks.h"
#include "api_page.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji

/* A disk row as the API shows it (with its volumes when asked). */
static json_t *disk_json(struct engine *e, json_t *row, bool with_volumes)
{
        /* The row's own values, shared rather than copied, and no json_pack format to parse: a page of
         * 100 is built on every GET /api/disks?max=100 (bench/README.md "bench/scale"). */
        static const char *const same[] = { "id", "name", "status", "format" };
        json_t *o = json_object();

        for (size_t k = 0; k < G_N_ELEMENTS(same); k++)
                json_object_set(o, same[k], json_object_get(row, same[k]));
        json_object_set_new(o, "sparse", json_boolean(ji(row, "sparse") != 0));
        json_object_set_new(o, "provisioned_size", json_integer(ji(row, "provisioned_size")));
        json_object_set_new(o, "actual_size", json_integer(ji(row, "actual_size")));
        json_object_set_new(o, "storage_domains", json_pack("[{s:O}]", "id", json_object_get(row, "sd_id")));

        if (strcmp(js(row, "status"), "locked") == 0) {
                json_object_set_new(o, "progress", json_integer((json_int_t) json_number_value(json_object_get(row, "progress"))));
                if (js(row, "job_id"))
                        json_object_set_new(o, "job", engine_rest_ref(js(row, "job_id")));
        }
        if (with_volumes) {
                static const char *const shown[] = { "id", "parent", "format", "legality", "generation", "capacity" };
                g_autoptr(json_t) vols = engine_store_volume_list(e->db, js(row, "id"), js(row, "sd_id"), NULL);
                json_t *list = json_array();
                size_t i;
                json_t *v;

                json_array_foreach(vols, i, v) {
                        json_t *item = json_object();

                        for (size_t k = 0; k < G_N_ELEMENTS(shown); k++)
                                json_object_set(item, shown[k], json_object_get(v, shown[k]));
                        json_array_append_new(list, item);
                }
                json_object_set_new(o, "volumes", list);
        }
        return o;
}

static json_t *disk_brief(struct engine *e, json_t *row)
{
        return disk_json(e, row, false);
}

static json_t *disk_full(struct engine *e, json_t *row)
{
        return disk_json(e, row, true);
}

/*
 * GET /api/disks: every disk (by creation) up to list_max, or one page in id order with any
 * of max, search=name=, page (api_page.h).
 */
static void disk_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        engine_rest_page(e, msg, ENGINE_STORE_PAGE_DISKS, "disks", disk_brief);
}

static void disk_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;

        if (!engine_rest_id_valid(msg, "disk", args[0]))
                return;
        row = engine_store_disk_get(e->db, args[0], &error);
        engine_rest_reply_row(e, msg, "disk", args[0], row, error, disk_full);
}

static void disk_create(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) out = NULL;

        if (!body)
                return;
        out = engine_disk_create(e, body, &error);
        engine_rest_reply_result(msg, 202, out, error);
}

static void disk_remove(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = engine_disk_remove(e, args[0], &error);

        engine_rest_reply_result(msg, 202, out, error);
}

static void disk_move_or_copy(struct engine *e, SoupServerMessage *msg, const char *id, bool keep_source)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) out = NULL;

        if (!body)
                return;
        out = engine_disk_move(e, id, body, keep_source, &error);
        engine_rest_reply_result(msg, 202, out, error);
}

static void disk_checksum(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = engine_disk_checksum(e, args[0], &error);

        engine_rest_reply_result(msg, 202, out, error);
}

static void disk_move(struct engine *e, SoupServerMessage *msg, char **args)
{
        disk_move_or_copy(e, msg, args[0], false);
}

static void disk_copy(struct engine *e, SoupServerMessage *msg, char **args)
{
        disk_move_or_copy(e, msg, args[0], true);
}

static void disk_sparsify(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = engine_disk_sparsify(e, args[0], &error);

        engine_rest_reply_result(msg, 202, out, error);
}

static const struct engine_route routes[] = {
        { "GET", "/api/disks", disk_list, ENGINE_ROLE_VIEWER },
        { "POST", "/api/disks", disk_create, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/disks/{id}", disk_get, ENGINE_ROLE_VIEWER },
        { "DELETE", "/api/disks/{id}", disk_remove, ENGINE_ROLE_OPERATOR },
        { "POST", "/api/disks/{id}/move", disk_move, ENGINE_ROLE_OPERATOR },
        { "POST", "/api/disks/{id}/copy", disk_copy, ENGINE_ROLE_OPERATOR },
        { "POST", "/api/disks/{id}/sparsify", disk_sparsify, ENGINE_ROLE_OPERATOR },
        /* Reads only, but starts a job on a host: an operator's. */
        { "POST", "/api/disks/{id}/checksum", disk_checksum, ENGINE_ROLE_OPERATOR },
};

const struct engine_route *engine_api_disks_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
