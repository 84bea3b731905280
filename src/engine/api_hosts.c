/* SPDX-License-Identifier: GPL-2.0-or-later */
/* REST resources of the installation: data centers, hosts, storage domains. */
#include <string.h>

#include "api_hosts.h"
#include "api_page.h"
#include "hosts.h"
#include "leader.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define ref engine_rest_ref

static json_t *host_json(struct engine *e, json_t *row)
{
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, js(row, "dc_id"), NULL);
        json_t *stats = js(row, "stats") ? json_loads(js(row, "stats"), 0, NULL) : NULL;

        return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:s, s:b, s:b, s:o}",
                         "id", js(row, "id"), "name", js(row, "name"), "address", js(row, "address"),
                         "port", ji(row, "port"), "host_id", ji(row, "host_id"), "data_center", ref(js(row, "dc_id")),
                         "status", js(row, "status"), "spm", dc && g_strcmp0(js(dc, "spm_host"), js(row, "id")) == 0,
                         "pool_connected", ji(row, "pool_connected") != 0, "stats", stats ? stats : json_null());
}

static json_t *sd_json(struct engine *e, json_t *row)
{
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, js(row, "dc_id"), NULL);
        json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:b}", "id", js(row, "id"), "name", js(row, "name"),
                              "status", js(row, "status"), "data_center", ref(js(row, "dc_id")),
                              "master", dc && g_strcmp0(js(dc, "master_sd"), js(row, "id")) == 0);
        const gint64 *max_file = g_hash_table_lookup(e->sd_max_file, js(row, "id"));

        if (json_is_integer(json_object_get(row, "free"))) {
                json_object_set_new(o, "available", json_integer(ji(row, "free")));
                json_object_set_new(o, "used", json_integer(ji(row, "total") - ji(row, "free")));
        }
        if (max_file)
                json_object_set_new(o, "max_file_size", json_integer(*max_file));
        return o;
}

static json_t *dc_json(struct engine *e, json_t *row)
{
        g_autoptr(json_t) spm = NULL;
        json_t *o = json_pack("{s:s, s:s, s:s}", "id", js(row, "id"), "name", js(row, "name"), "pool_id", js(row, "pool_id"));

        if (js(row, "spm_host"))
                spm = engine_store_host_get(e->db, js(row, "spm_host"), NULL);
        json_object_set_new(o, "spm", spm ? json_pack("{s:s, s:s}", "id", js(spm, "id"), "name", js(spm, "name")) : json_null());
        json_object_set_new(o, "status", json_string(spm && strcmp(js(spm, "status"), "up") == 0 ? "up" : "problematic"));
        return o;
}

/* ---- data centers ---- */

static void dc_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) rows = engine_store_dc_list(e->db, &error);

        engine_rest_reply_rows(e, msg, "datacenters", rows, error, dc_json);
}

static void dc_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;

        if (!engine_rest_id_valid(msg, "data center", args[0]))
                return;
        row = engine_store_dc_get(e->db, args[0], &error);
        engine_rest_reply_row(e, msg, "data center", args[0], row, error, dc_json);
}

/* ---- hosts ---- */

static void host_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        engine_rest_page(e, msg, ENGINE_STORE_PAGE_HOSTS, "hosts", host_json);
}

static void host_reply(struct engine *e, SoupServerMessage *msg, const char *id)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;

        if (!engine_rest_id_valid(msg, "host", id))
                return;
        row = engine_store_host_get(e->db, id, &error);
        engine_rest_reply_row(e, msg, "host", id, row, error, host_json);
}

static void host_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        host_reply(e, msg, args[0]);
}

static void host_add(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) row = NULL;
        g_autoptr(json_t) out = NULL;
        json_t *port;

        if (!body)
                return;
        port = json_object_get(body, "port");
        if (!js(body, "name") || !js(body, "address") || !json_is_integer(port) ||
            json_integer_value(port) < 1 || json_integer_value(port) > 65535) {
                engine_rest_reply_fault(msg, 400, "a host needs \"name\", \"address\" and \"port\" (1-65535)");
                return;
        }
        row = engine_host_add(e, js(body, "name"), js(body, "address"), (unsigned) json_integer_value(port), &error);
        out = row ? host_json(e, row) : NULL;
        engine_rest_reply_result(msg, 201, out, error);
}

static void host_maintenance(struct engine *e, SoupServerMessage *msg, const char *id, bool maintenance)
{
        g_autoptr(GError) error = NULL;

        if (!fy_uuid_is_valid(id) || engine_host_set_maintenance(e, id, maintenance, &error) < 0) {
                if (!error)
                        error = g_error_new(ENGINE_ERROR, 404, "no host %.64s", id);
                engine_rest_reply_error(msg, error);
                return;
        }
        host_reply(e, msg, id);
}

static void host_deactivate(struct engine *e, SoupServerMessage *msg, char **args)
{
        host_maintenance(e, msg, args[0], true);
}

static void host_activate(struct engine *e, SoupServerMessage *msg, char **args)
{
        host_maintenance(e, msg, args[0], false);
}

static void host_remove(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;

        if (!fy_uuid_is_valid(args[0]) || engine_host_remove(e, args[0], &error) < 0) {
                if (!error)
                        error = g_error_new(ENGINE_ERROR, 404, "no host %.64s", args[0]);
                engine_rest_reply_error(msg, error);
                return;
        }
        soup_server_message_set_status(msg, 204, NULL);
}

/* ---- storage domains ---- */

static void sd_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) rows = engine_store_sd_list(e->db, NULL, &error);

        engine_rest_reply_rows(e, msg, "storagedomains", rows, error, sd_json);
}

static void sd_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;

        if (!engine_rest_id_valid(msg, "storage domain", args[0]))
                return;
        row = engine_store_sd_get(e->db, args[0], &error);
        engine_rest_reply_row(e, msg, "storage domain", args[0], row, error, sd_json);
}

struct pending_reply {
        struct engine *e;
        SoupServerMessage *msg;
};

static void on_sd_added(json_t *result, const GError *error, void *userdata)
{
        struct pending_reply *p = userdata;
        g_autoptr(json_t) out = result ? sd_json(p->e, result) : NULL;

        engine_rest_reply_result(p->msg, 201, out, error);
        soup_server_message_unpause(p->msg);
        g_object_unref(p->msg);
        g_free(p);
}

static void sd_add(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        struct pending_reply *p;

        if (!body)
                return;
        if (!js(body, "name")) {
                engine_rest_reply_fault(msg, 400, "a storage domain needs a \"name\"");
                return;
        }
        /* Kept open until the host has created it. */
        p = g_new0(struct pending_reply, 1);
        p->e = e;
        p->msg = g_object_ref(msg);
        soup_server_message_pause(msg);
        engine_sd_add(e, js(body, "name"), on_sd_added, p);
}

/* GET /api/engine: this engine's role among several on one PostgreSQL database (leader.c). */
static void engine_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        const char *active = engine_leader_url(e);
        g_autoptr(json_t) body = json_pack("{s:s, s:I, s:o}", "role", engine_leader_active(e) ? "active" : "standby",
                                           "epoch", (json_int_t) engine_leader_epoch(e),
                                           "active_url", active ? json_string(active) : json_null());

        engine_rest_reply_json(msg, 200, body);
}

static const struct engine_route routes[] = {
        { "GET", "/api/engine", engine_get, ENGINE_ROLE_VIEWER },
        { "GET", "/api/datacenters", dc_list, ENGINE_ROLE_VIEWER },
        { "GET", "/api/datacenters/{id}", dc_get, ENGINE_ROLE_VIEWER },
        { "GET", "/api/hosts", host_list, ENGINE_ROLE_VIEWER },
        { "POST", "/api/hosts", host_add, ENGINE_ROLE_ADMIN },
        { "GET", "/api/hosts/{id}", host_get, ENGINE_ROLE_VIEWER },
        { "DELETE", "/api/hosts/{id}", host_remove, ENGINE_ROLE_ADMIN },
        { "POST", "/api/hosts/{id}/deactivate", host_deactivate, ENGINE_ROLE_ADMIN },
        { "POST", "/api/hosts/{id}/activate", host_activate, ENGINE_ROLE_ADMIN },
        { "GET", "/api/storagedomains", sd_list, ENGINE_ROLE_VIEWER },
        { "POST", "/api/storagedomains", sd_add, ENGINE_ROLE_ADMIN },
        { "GET", "/api/storagedomains/{id}", sd_get, ENGINE_ROLE_VIEWER },
};

const struct engine_route *engine_api_hosts_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
