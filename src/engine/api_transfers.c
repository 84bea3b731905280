/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * /api/imagetransfers: the REST face of image transfers. What a request
 * must hold (direction, sizes, timeout, a single-volume disk that is not
 * locked), the host and its endpoint, the JSON shape, the route rows. The
 * transfer itself (its phases, the ticket calls, the finalize leaf, the
 * end) is the flow in flows/transfer.c.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "api_transfers.h"
#include "error.h"
#include "flows/transfer.h"
#include "hosts.h"
#include "inventory.h"
#include "scheduler.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define fail engine_fail

#define TIMEOUT_DEFAULT 60              /* s without requests before the engine cancels a transfer */
#define TIMEOUT_MIN 10
#define TIMEOUT_MAX (24 * 3600)
#define QCOW2_SLACK(cap) ((cap) + (G_GINT64_CONSTANT(1) << 30))
#define MAX_DISK_SIZE (G_GINT64_CONSTANT(64) << 40)

static json_t *transfer_row(struct engine *e, const char *id)
{
        return engine_store_transfer_get(e->db, id, NULL);
}

/*
 * The ticket in transfer_url is all a client needs to read or write the
 * disk, so only the answer that creates the transfer carries it (with_url);
 * listings and later GETs leave it out. Once users exist, their creator may
 * see it again (DESIGN §11).
 */
static json_t *transfer_json(struct engine *e, json_t *row, bool with_url)
{
        g_autoptr(json_t) host = js(row, "host") ?
                engine_store_host_get(e->db, js(row, "host"), NULL) : NULL;
        json_t *o = json_pack("{s:s, s:s, s:s, s:{s:s}, s:I, s:I, s:I, s:I, s:I}",
                              "id", js(row, "id"), "phase", js(row, "phase"), "direction", js(row, "direction"),
                              "disk", "id", js(row, "disk_id"), "size", ji(row, "size"),
                              "transferred", ji(row, "transferred"), "inactivity_timeout", ji(row, "timeout"),
                              "created", ji(row, "created"), "updated", ji(row, "updated"));

        json_object_set_new(o, "host", host ? json_pack("{s:s, s:s}", "id", js(host, "id"), "name", js(host, "name"))
                                            : json_null());
        if (with_url)
                json_object_set_new(o, "transfer_url", js(row, "transfer_url") && !engine_transfer_is_final(js(row, "phase")) ?
                                                       json_string(js(row, "transfer_url")) : json_null());
        if (!engine_transfer_is_final(js(row, "phase")))
                json_object_set_new(o, "expires", json_integer(ji(row, "last_activity") + ji(row, "timeout")));
        if (js(row, "job_id"))
                json_object_set_new(o, "job", json_pack("{s:s}", "id", js(row, "job_id")));
        if (js(row, "error"))
                json_object_set_new(o, "error", json_string(js(row, "error")));
        return o;
}

/* ---- POST /api/imagetransfers ---- */

struct pending {
        struct engine *e;
        SoupServerMessage *msg;
};

static void on_started(struct engine *e, int status, json_t *row, const char *why, void *userdata)
{
        struct pending *p = userdata;
        g_autoptr(json_t) out = row ? transfer_json(e, row, true) : NULL;

        if (out)
                engine_rest_reply_json(p->msg, status, out);
        else
                engine_rest_reply_fault(p->msg, status, why);
        soup_server_message_unpause(p->msg);
        g_object_unref(p->msg);
        g_free(p);
}

/* The host's transfer endpoint from its last stats; NULL if it has none. */
static char *host_transfer_base(struct engine *e, const char *host_id, char **ret_root)
{
        struct engine_host *h = g_hash_table_lookup(e->hosts, host_id);
        g_autoptr(json_t) row = engine_store_host_get(e->db, host_id, NULL);
        json_int_t port;
        const char *scheme, *root;

        if (!h || !h->stats || !row)
                return NULL;
        port = json_integer_value(json_object_get(h->stats, "transfer_port"));
        scheme = js(h->stats, "transfer_scheme");
        root = js(h->stats, "storage_root");
        if (port <= 0 || port > 65535 || !scheme || !root || *root != '/')
                return NULL;
        *ret_root = g_strdup(root);
        return strchr(js(row, "address"), ':') ? g_strdup_printf("%s://[%s]:%d", scheme, js(row, "address"), (int) port)
                                              : g_strdup_printf("%s://%s:%d", scheme, js(row, "address"), (int) port);
}

static json_t *transfer_start(struct engine *e, json_t *body, SoupServerMessage *msg, GError **error)
{
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) vols = NULL;
        g_autofree char *id = fy_uuid_new();
        g_autofree char *ticket = fy_uuid_new_secret();   /* the bearer secret of the transfer */
        g_autofree char *job = fy_uuid_new();
        g_autofree char *host = NULL;
        g_autofree char *base = NULL;
        g_autofree char *root = NULL;
        g_autofree char *url = NULL;
        g_autofree char *file = NULL;
        g_autofree char *desc = NULL;
        const char *disk_id = js(json_object_get(body, "disk"), "id");
        const char *direction = js(body, "direction");
        json_t *size_v = json_object_get(body, "size");
        json_t *vsize_v = json_object_get(body, "virtual_size");
        json_t *timeout_v = json_object_get(body, "inactivity_timeout");
        gint64 timeout = TIMEOUT_DEFAULT, capacity, size = 0;
        bool upload;
        json_t *vol;
        struct pending *p;

        if (!direction || (strcmp(direction, "upload") != 0 && strcmp(direction, "download") != 0))
                return fail(error, 400, "direction must be \"upload\" or \"download\"");
        upload = strcmp(direction, "upload") == 0;
        if (!disk_id)
                return fail(error, 400, "missing disk: {\"disk\": {\"id\": \"<uuid>\"}}");
        if (!fy_uuid_is_valid(disk_id))
                return fail(error, 404, "no disk %.64s (ids are UUIDs)", disk_id);
        if (timeout_v && (!json_is_integer(timeout_v) || json_integer_value(timeout_v) < TIMEOUT_MIN ||
                          json_integer_value(timeout_v) > TIMEOUT_MAX))
                return fail(error, 400, "inactivity_timeout must be %d-%d seconds", TIMEOUT_MIN, TIMEOUT_MAX);
        if (timeout_v)
                timeout = json_integer_value(timeout_v);
        if ((size_v && (!json_is_integer(size_v) || json_integer_value(size_v) <= 0 ||
                        json_integer_value(size_v) > 2 * MAX_DISK_SIZE)) ||
            (vsize_v && (!json_is_integer(vsize_v) || json_integer_value(vsize_v) <= 0)))
                return fail(error, 400, "size and virtual_size must be positive byte counts");
        if (size_v && !upload)
                return fail(error, 400, "size is the number of bytes an upload writes; a download gets the whole volume");

        disk = engine_store_disk_get(e->db, disk_id, error);
        if (!disk)
                return (error && *error) ? NULL : fail(error, 404, "no disk %s", disk_id);
        if (strcmp(js(disk, "status"), "locked") == 0)
                return fail(error, 409, "disk %s is locked by a running operation; wait until it ends", js(disk, "name"));
        if (!upload && strcmp(js(disk, "status"), "ok") != 0)
                return fail(error, 409, "disk %s is %s: its data is not complete, there is nothing to download",
                            js(disk, "name"), js(disk, "status"));
        vols = engine_store_volume_list(e->db, disk_id, js(disk, "sd_id"), error);
        if (!vols)
                return NULL;
        if (json_array_size(vols) != 1)
                return fail(error, 409, "disk %s has %zu volumes; image transfers handle single-volume disks only "
                            "(copy the disk to collapse its chain first)", js(disk, "name"), json_array_size(vols));
        vol = json_array_get(vols, 0);
        capacity = ji(vol, "capacity");
        if (upload) {
                bool cow = strcmp(js(vol, "format"), "cow") == 0;

                size = size_v ? json_integer_value(size_v) : cow ? QCOW2_SLACK(capacity) : capacity;
                if (vsize_v && json_integer_value(vsize_v) > capacity)
                        return fail(error, 409, "the image's virtual size (%" JSON_INTEGER_FORMAT " bytes) is larger than "
                                    "disk %s (%" G_GINT64_FORMAT " bytes)", json_integer_value(vsize_v),
                                    js(disk, "name"), capacity);
                if (size > (cow ? QCOW2_SLACK(capacity) : capacity))
                        return fail(error, 409, "an upload of %" G_GINT64_FORMAT " bytes does not fit disk %s (%s, %"
                                    G_GINT64_FORMAT " bytes)", size, js(disk, "name"), js(vol, "format"), capacity);
        }

        host = engine_pick_copy_host(e, NULL);
        if (!host)
                return fail(error, 503, "no host can serve a transfer now (none is up, connected and below its job limit)");
        base = host_transfer_base(e, host, &root);
        if (!base)
                return fail(error, 503, "host %s does not report an image transfer endpoint yet; try again", host);
        url = g_strdup_printf("%s/images/%s", base, ticket);
        file = g_strdup_printf("file://%s/%s/images/%s/%s", root, js(disk, "sd_id"), disk_id, js(vol, "id"));
        desc = g_strdup_printf("%s disk %s", upload ? "Uploading" : "Downloading", js(disk, "name"));
        p = g_new0(struct pending, 1);
        p->e = e;
        p->msg = g_object_ref(msg);

        {
                const struct engine_store_transfer t = {
                        .id = id, .disk = disk_id, .sd = js(disk, "sd_id"), .vol = js(vol, "id"), .direction = direction,
                        .host = host, .ticket = ticket, .url = url, .job = job, .prior_status = js(disk, "status"),
                        .size = size, .timeout = timeout,
                };

                if (!engine_transfer_start(e, &t, ji(disk, "sparse") != 0, file, desc, on_started, p, error)) {
                        g_object_unref(p->msg);        /* nothing recorded, no call made: on_started never runs */
                        g_free(p);
                        return NULL;
                }
        }
        soup_server_message_pause(msg);
        return json_true();
}

/* ---- REST ---- */

static json_t *transfer_fmt(struct engine *e, json_t *row)
{
        return transfer_json(e, row, false);
}

static void api_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) rows = engine_store_transfer_list(e->db, 1000, &error);

        engine_rest_reply_rows(e, msg, "imagetransfers", rows, error, transfer_fmt);
}

static void api_start(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);

        if (body && !transfer_start(e, body, msg, &error))
                engine_rest_reply_error(msg, error);
}

static void api_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(json_t) row = fy_uuid_is_valid(args[0]) ? transfer_row(e, args[0]) : NULL;

        engine_rest_reply_row(e, msg, "image transfer", args[0], row, NULL, transfer_fmt);
}

/* POST finalize / cancel: the flow changes the transfer, the answer shows it. */
static void api_act(SoupServerMessage *msg, struct engine *e, const char *id,
                    json_t *(*act)(struct engine *e, const char *id, GError **error))
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = act(e, id, &error);
        g_autoptr(json_t) out = row ? transfer_json(e, row, false) : NULL;

        engine_rest_reply_result(msg, 202, out, error);
}

static void api_finalize(struct engine *e, SoupServerMessage *msg, char **args)
{
        api_act(msg, e, args[0], engine_transfer_finalize);
}

static void api_cancel(struct engine *e, SoupServerMessage *msg, char **args)
{
        api_act(msg, e, args[0], engine_transfer_cancel);
}

static const struct engine_route routes[] = {
        { "GET", "/api/imagetransfers", api_list, ENGINE_ROLE_VIEWER },
        { "POST", "/api/imagetransfers", api_start, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/imagetransfers/{id}", api_get, ENGINE_ROLE_VIEWER },
        { "POST", "/api/imagetransfers/{id}/finalize", api_finalize, ENGINE_ROLE_OPERATOR },
        { "POST", "/api/imagetransfers/{id}/cancel", api_cancel, ENGINE_ROLE_OPERATOR },
};

const struct engine_route *engine_api_transfers_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
