/* SPDX-License-Identifier: GPL-2.0-or-later */
/* REST resources /api/vms (with disk attachments and snapshots) and /api/templates; the actions are in vm_actions.c. */
#include <string.h>

#include "api_vms.h"
#include "api_page.h"
#include "snapshot_actions.h"
#include "vm_actions.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse
#define ref engine_rest_ref

/* ---- JSON shapes ---- */

static json_t *attachment_json(json_t *row)
{
        json_t *o = json_pack("{s:s, s:{s:s}, s:b, s:s, s:b}", "id", js(row, "disk_id"), "disk", "id", js(row, "disk_id"),
                              "bootable", ji(row, "bootable") != 0, "interface", js(row, "interface"), "active", true);

        if (js(row, "vm_id"))
                json_object_set_new(o, "vm", ref(js(row, "vm_id")));
        else
                json_object_set_new(o, "template", ref(js(row, "template_id")));
        return o;
}

static json_t *attachments_json(struct engine *e, bool vm, const char *owner)
{
        g_autoptr(json_t) rows = engine_store_attachment_list(e->db, vm, owner, NULL);
        json_t *out = json_array();
        size_t i;
        json_t *row;

        json_array_foreach(rows, i, row)
                json_array_append_new(out, attachment_json(row));
        return out;
}

static json_t *vm_json(struct engine *e, json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:o}", "id", js(row, "id"), "name", js(row, "name"),
                              "description", js(row, "description"), "status", js(row, "status"),
                              "template", ref(js(row, "template_id")), "creation_time", ji(row, "created"),
                              "disk_attachments", attachments_json(e, true, js(row, "id")));

        if (js(row, "job_id"))
                json_object_set_new(o, "job", ref(js(row, "job_id")));
        return o;
}

static json_t *template_json(struct engine *e, json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:o}", "id", js(row, "id"), "name", js(row, "name"),
                              "description", js(row, "description"), "status", js(row, "status"),
                              "vm", ref(js(row, "vm_id")), "creation_time", ji(row, "created"),
                              "disk_attachments", attachments_json(e, false, js(row, "id")));

        if (js(row, "job_id"))
                json_object_set_new(o, "job", ref(js(row, "job_id")));
        return o;
}

static json_t *snapshot_json(json_t *row)
{
        g_autoptr(json_t) disks = jparse(row, "disks");
        json_t *out = json_array();
        json_t *o;
        size_t i;
        json_t *d;

        json_array_foreach(disks, i, d)
                json_array_append_new(out, json_pack("{s:{s:s}, s:{s:s}, s:{s:s}}", "disk", "id", js(d, "disk"),
                                                     "volume", "id", js(d, "volume"), "active_volume", "id", js(d, "leaf")));
        o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:{s:s}, s:o}", "id", js(row, "id"), "description", js(row, "description"),
                      "snapshot_status", js(row, "status"), "snapshot_type", "regular", "date", ji(row, "created"),
                      "vm", "id", js(row, "vm_id"), "disks", out);
        if (js(row, "job_id"))
                json_object_set_new(o, "job", ref(js(row, "job_id")));
        return o;
}


/* ---- handlers ---- */

static json_t *attachment_fmt(struct engine *e, json_t *row)
{
        return attachment_json(row);
}

static json_t *snapshot_fmt(struct engine *e, json_t *row)
{
        return snapshot_json(row);
}

/* Answers fmt(row) for a lookup's row, or its error. */
static void reply_found(struct engine *e, SoupServerMessage *msg, int status, json_t *row, const GError *error,
                        engine_row_fmt fmt)
{
        g_autoptr(json_t) out = row ? fmt(e, row) : NULL;

        engine_rest_reply_result(msg, status, out, error);
}

static void vm_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        engine_rest_page(e, msg, ENGINE_STORE_PAGE_VMS, "vms", vm_json);
}

static void vm_create(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) out = NULL;
        int status = 200;

        if (!body)
                return;
        out = engine_vm_create(e, body, &status, &error);
        if (out && status == 201)
                reply_found(e, msg, status, out, error, vm_json);
        else
                engine_rest_reply_result(msg, status, out, error);
}

static void vm_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) vm = engine_vm_get(e, args[0], &error);

        reply_found(e, msg, 200, vm, error, vm_json);
}

/* ?detach_only=true|false; false after a 400. */
static bool query_detach_only(SoupServerMessage *msg, bool *ret)
{
        const char *q = g_uri_get_query(soup_server_message_get_uri(msg));
        g_autoptr(GHashTable) form = q ? soup_form_decode(q) : NULL;
        const char *v = form ? g_hash_table_lookup(form, "detach_only") : NULL;

        *ret = false;
        if (!v)
                return true;
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
                engine_rest_reply_fault(msg, 400, "detach_only takes true or false");
                return false;
        }
        *ret = strcmp(v, "true") == 0;
        return true;
}

static void vm_remove(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = NULL;
        bool detach_only;
        int status = 200;

        if (!query_detach_only(msg, &detach_only))
                return;
        out = engine_vm_remove(e, args[0], detach_only, &status, &error);
        engine_rest_reply_result(msg, status, out, error);
}

static void vm_attachments(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) vm = engine_vm_get(e, args[0], &error);
        g_autoptr(json_t) out = vm ? json_pack("{s:o}", "disk_attachments", attachments_json(e, true, args[0])) : NULL;

        engine_rest_reply_result(msg, 200, out, error);
}

static void vm_attach(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) att = NULL;

        if (!body)
                return;
        att = engine_vm_disk_attach(e, args[0], body, &error);
        reply_found(e, msg, 201, att, error, attachment_fmt);
}

static void vm_attachment(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) att = engine_vm_attachment(e, args[0], args[1], &error);

        reply_found(e, msg, 200, att, error, attachment_fmt);
}

static void vm_detach(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) att = engine_vm_disk_detach(e, args[0], args[1], &error);

        reply_found(e, msg, 200, att, error, attachment_fmt);
}

static void vm_snapshots(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) vm = engine_vm_get(e, args[0], &error);
        g_autoptr(json_t) rows = vm ? engine_store_snapshot_list(e->db, args[0], &error) : NULL;

        engine_rest_reply_rows(e, msg, "snapshots", rows, error, snapshot_fmt);
}

static void vm_snapshot_create(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) out = NULL;

        if (!body)
                return;
        out = engine_snapshot_create(e, args[0], body, &error);
        engine_rest_reply_result(msg, 202, out, error);
}

static void vm_snapshot(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) snap = engine_vm_snapshot(e, args[0], args[1], &error);

        reply_found(e, msg, 200, snap, error, snapshot_fmt);
}

static void vm_snapshot_remove(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        int status = 202;
        g_autoptr(json_t) out = engine_snapshot_remove(e, args[0], args[1], &status, &error);

        engine_rest_reply_result(msg, status, out, error);
}

static void vm_snapshot_restore(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = engine_snapshot_restore(e, args[0], args[1], &error);

        engine_rest_reply_result(msg, 202, out, error);
}

static void template_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        engine_rest_page(e, msg, ENGINE_STORE_PAGE_TEMPLATES, "templates", template_json);
}

static void template_create(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) out = NULL;

        if (!body)
                return;
        out = engine_template_create(e, body, &error);
        engine_rest_reply_result(msg, 202, out, error);
}

static void template_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) t = engine_template_get(e, args[0], &error);

        reply_found(e, msg, 200, t, error, template_json);
}

static void template_remove(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        int status = 200;
        g_autoptr(json_t) out = engine_template_remove(e, args[0], &status, &error);

        engine_rest_reply_result(msg, status, out, error);
}

static void template_attachments(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) t = engine_template_get(e, args[0], &error);
        g_autoptr(json_t) out = t ? json_pack("{s:o}", "disk_attachments", attachments_json(e, false, args[0]))
                                  : NULL;

        engine_rest_reply_result(msg, 200, out, error);
}

static const struct engine_route routes[] = {
        { "GET", "/api/vms", vm_list, ENGINE_ROLE_VIEWER },
        { "POST", "/api/vms", vm_create, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/vms/{id}", vm_get, ENGINE_ROLE_VIEWER },
        { "DELETE", "/api/vms/{id}", vm_remove, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/vms/{id}/diskattachments", vm_attachments, ENGINE_ROLE_VIEWER },
        { "POST", "/api/vms/{id}/diskattachments", vm_attach, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/vms/{id}/diskattachments/{disk}", vm_attachment, ENGINE_ROLE_VIEWER },
        { "DELETE", "/api/vms/{id}/diskattachments/{disk}", vm_detach, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/vms/{id}/snapshots", vm_snapshots, ENGINE_ROLE_VIEWER },
        { "POST", "/api/vms/{id}/snapshots", vm_snapshot_create, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/vms/{id}/snapshots/{snapshot}", vm_snapshot, ENGINE_ROLE_VIEWER },
        { "DELETE", "/api/vms/{id}/snapshots/{snapshot}", vm_snapshot_remove, ENGINE_ROLE_OPERATOR },
        { "POST", "/api/vms/{id}/snapshots/{snapshot}/restore", vm_snapshot_restore, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/templates", template_list, ENGINE_ROLE_VIEWER },
        { "POST", "/api/templates", template_create, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/templates/{id}", template_get, ENGINE_ROLE_VIEWER },
        { "DELETE", "/api/templates/{id}", template_remove, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/templates/{id}/diskattachments", template_attachments, ENGINE_ROLE_VIEWER },
};

const struct engine_route *engine_api_vms_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
