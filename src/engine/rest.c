/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * REST API (docs/rest-api.md) on libsoup 3. Handlers validate, read the
 * inventory, start actions, and answer JSON; errors are
 * {"fault": {"reason", "detail"}} with the HTTP status of the ENGINE_ERROR.
 */
#include <errno.h>
#include <string.h>

#include "actions.h"
#include "clock.h"
#include "commands.h"
#include "events.h"
#include "hosts.h"
#include "http.h"
#include "engoptions.h"
#include "rest.h"
#include "resttls.h"
#include "transfers.h"
#include "vms.h"
#include "error.h"
#include "httpserve.h"
#include "restparse.h"
#include "eta.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji

static json_t *ref(const char *id)
{
        return id ? json_pack("{s:s}", "id", id) : json_null();
}

static json_t *host_json(struct engine *e, json_t *row)
{
        g_autoptr(json_t) dc = engine_db_query_one(e->db, NULL, "SELECT spm_host FROM datacenters WHERE id = ?", "s", js(row, "dc_id"));
        json_t *stats = js(row, "stats") ? json_loads(js(row, "stats"), 0, NULL) : NULL;

        return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:s, s:b, s:b, s:o}",
                         "id", js(row, "id"), "name", js(row, "name"), "address", js(row, "address"),
                         "port", ji(row, "port"), "host_id", ji(row, "host_id"), "data_center", ref(js(row, "dc_id")),
                         "status", js(row, "status"), "spm", dc && g_strcmp0(js(dc, "spm_host"), js(row, "id")) == 0,
                         "pool_connected", ji(row, "pool_connected") != 0, "stats", stats ? stats : json_null());
}

static json_t *sd_json(struct engine *e, json_t *row)
{
        g_autoptr(json_t) dc = engine_db_query_one(e->db, NULL, "SELECT master_sd FROM datacenters WHERE id = ?", "s", js(row, "dc_id"));
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

/* A disk row as the API shows it (with its volumes when asked). */
static json_t *engine_rest_disk_json(struct engine *e, json_t *row, bool with_volumes)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:[{s:s}]}",
                              "id", js(row, "id"), "name", js(row, "name"), "status", js(row, "status"),
                              "format", js(row, "format"), "sparse", ji(row, "sparse") != 0,
                              "provisioned_size", ji(row, "provisioned_size"), "actual_size", ji(row, "actual_size"),
                              "storage_domains", "id", js(row, "sd_id"));

        if (strcmp(js(row, "status"), "locked") == 0) {
                json_object_set_new(o, "progress", json_integer((json_int_t) json_number_value(json_object_get(row, "progress"))));
                if (js(row, "job_id"))
                        json_object_set_new(o, "job", ref(js(row, "job_id")));
        }
        if (with_volumes) {
                g_autoptr(json_t) vols = engine_db_query(e->db, NULL,
                        "SELECT id, parent, format, legality, generation, capacity FROM volumes "
                        "WHERE disk_id = ? AND sd_id = ? ORDER BY position", "ss", js(row, "id"), js(row, "sd_id"));
                json_object_set(o, "volumes", vols ? vols : json_array());
        }
        return o;
}

/* eta_seconds of a running step or job: null until its progress rate is known (eta.h). */
static void add_eta(json_t *o, const char *prefix, json_t *row)
{
        g_autofree char *key = g_strconcat(prefix, js(row, "id"), NULL);
        gint64 eta;

        if (strcmp(js(row, "status"), "started") != 0)
                return;
        eta = engine_eta_seconds(engine_eta(), key, g_get_monotonic_time());
        json_object_set_new(o, "eta_seconds", eta >= 0 ? json_integer(eta) : json_null());
}

static json_t *job_json(json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:I}", "id", js(row, "id"), "description", js(row, "description"),
                              "status", js(row, "status"), "progress", json_number_value(json_object_get(row, "progress")),
                              "start_time", ji(row, "start_time"));

        if (json_is_integer(json_object_get(row, "end_time")))
                json_object_set_new(o, "end_time", json_integer(ji(row, "end_time")));
        add_eta(o, "job:", row);
        return o;
}

static json_t *step_json(struct engine *e, json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:I}", "id", js(row, "id"),
                              "description", js(row, "description"), "type", js(row, "type"),
                              "status", js(row, "status"), "progress", json_number_value(json_object_get(row, "progress")),
                              "weight", json_number_value(json_object_get(row, "weight")), "start_time", ji(row, "start_time"));
        const char *host = js(row, "execution_host");

        if (host) {
                g_autoptr(json_t) h = engine_db_query_one(e->db, NULL, "SELECT name FROM hosts WHERE id = ?", "s", host);
                json_object_set_new(o, "execution_host", json_pack("{s:s, s:s?}", "id", host, "name", h ? js(h, "name") : NULL));
        } else {
                json_object_set_new(o, "execution_host", json_null());
        }
        if (json_is_integer(json_object_get(row, "end_time")))
                json_object_set_new(o, "end_time", json_integer(ji(row, "end_time")));
        if (js(row, "detail"))
                json_object_set_new(o, "status_detail", json_string(js(row, "detail")));
        add_eta(o, "step:", row);
        return o;
}

typedef json_t *(*formatter)(struct engine *e, json_t *row);

static json_t *fmt_host(struct engine *e, json_t *row) { return host_json(e, row); }
static json_t *fmt_sd(struct engine *e, json_t *row) { return sd_json(e, row); }
static json_t *fmt_disk(struct engine *e, json_t *row) { return engine_rest_disk_json(e, row, false); }
static json_t *fmt_job(struct engine *e, json_t *row) { return job_json(row); }
static json_t *fmt_step(struct engine *e, json_t *row) { return step_json(e, row); }

static json_t *fmt_dc(struct engine *e, json_t *row)
{
        g_autoptr(json_t) spm = NULL;
        json_t *o = json_pack("{s:s, s:s, s:s}", "id", js(row, "id"), "name", js(row, "name"), "pool_id", js(row, "pool_id"));

        if (js(row, "spm_host"))
                spm = engine_db_query_one(e->db, NULL, "SELECT id, name, status FROM hosts WHERE id = ?", "s", js(row, "spm_host"));
        json_object_set_new(o, "spm", spm ? json_pack("{s:s, s:s}", "id", js(spm, "id"), "name", js(spm, "name")) : json_null());
        json_object_set_new(o, "status", json_string(spm && strcmp(js(spm, "status"), "up") == 0 ? "up" : "problematic"));
        return o;
}

static void reply_list(struct engine *e, SoupServerMessage *msg, const char *key, const char *sql,
                       const char *arg, formatter fmt)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) rows = arg ? engine_db_query(e->db, &error, sql, "s", arg) : engine_db_query(e->db, &error, sql, "");
        g_autoptr(json_t) out = json_array();
        g_autoptr(json_t) body = NULL;
        size_t i;
        json_t *row;

        if (!rows) {
                engine_rest_reply_error(msg, error);
                return;
        }
        json_array_foreach(rows, i, row)
                json_array_append_new(out, fmt(e, row));
        body = json_pack("{s:O}", key, out);
        engine_rest_reply_json(msg, 200, body);
}

static void reply_one(struct engine *e, SoupServerMessage *msg, const char *what, const char *sql, const char *id,
                      formatter fmt)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        g_autoptr(json_t) out = NULL;
        g_autofree char *detail = NULL;

        if (!fy_uuid_is_valid(id)) {
                detail = g_strdup_printf("no %s %.64s (ids are UUIDs)", what, id);
                engine_rest_reply_fault(msg, 404, detail);
                return;
        }
        row = engine_db_query_one(e->db, &error, sql, "s", id);
        if (!row) {
                if (error) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                detail = g_strdup_printf("no %s %s", what, id);
                engine_rest_reply_fault(msg, 404, detail);
                return;
        }
        out = fmt(e, row);
        engine_rest_reply_json(msg, 200, out);
}

struct pending_reply {
        struct engine *e;
        SoupServerMessage *msg;
};

static void on_sd_added(json_t *result, const GError *error, void *userdata)
{
        struct pending_reply *p = userdata;

        if (result) {
                g_autoptr(json_t) out = sd_json(p->e, result);
                engine_rest_reply_json(p->msg, 201, out);
        } else {
                engine_rest_reply_error(p->msg, error);
        }
        soup_server_message_unpause(p->msg);
        g_object_unref(p->msg);
        g_free(p);
}

static void handle(struct engine *e, SoupServerMessage *msg, char **seg, guint n)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = NULL;
        g_autoptr(json_t) out = NULL;
        bool get = engine_rest_method_is(msg, "GET"), post = engine_rest_method_is(msg, "POST");

        /* Resources kept in their own files answer first. */
        if (engine_rest_vms(e, msg, seg, n) || engine_rest_transfers(e, msg, seg, n))
                return;
        if (n == 1 && strcmp(seg[0], "datacenters") == 0 && get) {
                reply_list(e, msg, "datacenters", "SELECT * FROM datacenters ORDER BY name", NULL, fmt_dc);
        } else if (n == 2 && strcmp(seg[0], "datacenters") == 0 && get) {
                reply_one(e, msg, "data center", "SELECT * FROM datacenters WHERE id = ?", seg[1], fmt_dc);
        } else if (n == 1 && strcmp(seg[0], "hosts") == 0 && get) {
                reply_list(e, msg, "hosts", "SELECT * FROM hosts ORDER BY host_id", NULL, fmt_host);
        } else if (n == 1 && strcmp(seg[0], "hosts") == 0 && post) {
                json_t *port;

                if (!(body = engine_rest_body(e, msg)))
                        return;
                port = json_object_get(body, "port");
                if (!js(body, "name") || !js(body, "address") || !json_is_integer(port) ||
                    json_integer_value(port) < 1 || json_integer_value(port) > 65535) {
                        engine_rest_reply_fault(msg, 400, "a host needs \"name\", \"address\" and \"port\" (1-65535)");
                        return;
                }
                g_autoptr(json_t) row = engine_host_add(e, js(body, "name"), js(body, "address"),
                                                        (unsigned) json_integer_value(port), &error);
                if (!row) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                out = host_json(e, row);
                engine_rest_reply_json(msg, 201, out);
        } else if (n == 2 && strcmp(seg[0], "hosts") == 0 && get) {
                reply_one(e, msg, "host", "SELECT * FROM hosts WHERE id = ?", seg[1], fmt_host);
        } else if (n == 2 && strcmp(seg[0], "hosts") == 0 && engine_rest_method_is(msg, "DELETE")) {
                if (!fy_uuid_is_valid(seg[1]) || engine_host_remove(e, seg[1], &error) < 0) {
                        if (!error)
                                error = g_error_new(ENGINE_ERROR, 404, "no host %.64s", seg[1]);
                        engine_rest_reply_error(msg, error);
                        return;
                }
                soup_server_message_set_status(msg, 204, NULL);
        } else if (n == 3 && strcmp(seg[0], "hosts") == 0 && post &&
                   (strcmp(seg[2], "deactivate") == 0 || strcmp(seg[2], "activate") == 0)) {
                if (!fy_uuid_is_valid(seg[1]) ||
                    engine_host_set_maintenance(e, seg[1], strcmp(seg[2], "deactivate") == 0, &error) < 0) {
                        if (!error)
                                error = g_error_new(ENGINE_ERROR, 404, "no host %.64s", seg[1]);
                        engine_rest_reply_error(msg, error);
                        return;
                }
                reply_one(e, msg, "host", "SELECT * FROM hosts WHERE id = ?", seg[1], fmt_host);
        } else if (n == 1 && strcmp(seg[0], "storagedomains") == 0 && get) {
                reply_list(e, msg, "storagedomains", "SELECT * FROM storage_domains ORDER BY name", NULL, fmt_sd);
        } else if (n == 1 && strcmp(seg[0], "storagedomains") == 0 && post) {
                struct pending_reply *p;

                if (!(body = engine_rest_body(e, msg)))
                        return;
                if (!js(body, "name")) {
                        engine_rest_reply_fault(msg, 400, "a storage domain needs a \"name\"");
                        return;
                }
                p = g_new0(struct pending_reply, 1);
                p->e = e;
                p->msg = g_object_ref(msg);
                soup_server_message_pause(msg);
                engine_sd_add(e, js(body, "name"), on_sd_added, p);
        } else if (n == 2 && strcmp(seg[0], "storagedomains") == 0 && get) {
                reply_one(e, msg, "storage domain", "SELECT * FROM storage_domains WHERE id = ?", seg[1], fmt_sd);
        } else if (n == 1 && strcmp(seg[0], "disks") == 0 && get) {
                reply_list(e, msg, "disks", "SELECT * FROM disks ORDER BY created, name", NULL, fmt_disk);
        } else if (n == 1 && strcmp(seg[0], "disks") == 0 && post) {
                if (!(body = engine_rest_body(e, msg)))
                        return;
                out = engine_disk_create(e, body, &error);
                if (!out) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                engine_rest_reply_json(msg, 202, out);
        } else if (n == 2 && strcmp(seg[0], "disks") == 0 && get) {
                g_autoptr(json_t) row = fy_uuid_is_valid(seg[1]) ?
                        engine_db_query_one(e->db, NULL, "SELECT * FROM disks WHERE id = ?", "s", seg[1]) : NULL;
                if (!row) {
                        g_autofree char *detail = g_strdup_printf("no disk %.64s", seg[1]);
                        engine_rest_reply_fault(msg, 404, detail);
                        return;
                }
                out = engine_rest_disk_json(e, row, true);
                engine_rest_reply_json(msg, 200, out);
        } else if (n == 2 && strcmp(seg[0], "disks") == 0 && engine_rest_method_is(msg, "DELETE")) {
                out = engine_disk_remove(e, seg[1], &error);
                if (!out) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                engine_rest_reply_json(msg, 202, out);
        } else if (n == 3 && strcmp(seg[0], "disks") == 0 && post &&
                   (strcmp(seg[2], "move") == 0 || strcmp(seg[2], "copy") == 0)) {
                if (!(body = engine_rest_body(e, msg)))
                        return;
                out = engine_disk_move(e, seg[1], body, strcmp(seg[2], "copy") == 0, &error);
                if (!out) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                engine_rest_reply_json(msg, 202, out);
        } else if (n == 1 && strcmp(seg[0], "jobs") == 0 && get) {
                reply_list(e, msg, "jobs", "SELECT * FROM jobs ORDER BY start_time DESC, rowid DESC LIMIT 1000", NULL, fmt_job);
        } else if (n == 2 && strcmp(seg[0], "jobs") == 0 && get) {
                reply_one(e, msg, "job", "SELECT * FROM jobs WHERE id = ?", seg[1], fmt_job);
        } else if (n == 3 && strcmp(seg[0], "jobs") == 0 && strcmp(seg[2], "steps") == 0 && get) {
                g_autoptr(json_t) job = fy_uuid_is_valid(seg[1]) ?
                        engine_db_query_one(e->db, NULL, "SELECT id FROM jobs WHERE id = ?", "s", seg[1]) : NULL;
                if (!job) {
                        g_autofree char *detail = g_strdup_printf("no job %.64s", seg[1]);
                        engine_rest_reply_fault(msg, 404, detail);
                        return;
                }
                reply_list(e, msg, "steps", "SELECT * FROM steps WHERE job_id = ? ORDER BY start_time, rowid", seg[1], fmt_step);
        } else if (n == 3 && strcmp(seg[0], "jobs") == 0 && strcmp(seg[2], "cancel") == 0 && post) {
                out = engine_job_cancel(e, seg[1], &error);
                if (!out) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                engine_rest_reply_json(msg, 202, out);
        } else if (n == 1 && strcmp(seg[0], "events") == 0 && get) {
                g_autoptr(json_t) rows = engine_db_query(e->db, &error,
                        "SELECT id, time, severity, message, command_id FROM events ORDER BY id DESC LIMIT 1000", "");
                if (!rows) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                out = json_pack("{s:O}", "events", rows);
                engine_rest_reply_json(msg, 200, out);
        } else if (n == 2 && strcmp(seg[0], "options") == 0 && (get || engine_rest_method_is(msg, "PUT"))) {
                json_t *value;

                if (strcmp(seg[1], "DataOperationsByHSM") != 0) {
                        engine_rest_reply_fault(msg, 404, "unknown option; known: DataOperationsByHSM");
                        return;
                }
                if (!get) {
                        if (!(body = engine_rest_body(e, msg)))
                                return;
                        value = json_object_get(body, "value");
                        if (!json_is_boolean(value) && !(json_is_string(value) &&
                            (strcmp(json_string_value(value), "true") == 0 || strcmp(json_string_value(value), "false") == 0))) {
                                engine_rest_reply_fault(msg, 400, "DataOperationsByHSM takes true or false");
                                return;
                        }
                        if (engine_option_set_bool(e, seg[1], json_is_true(value) ||
                                                   (json_is_string(value) && strcmp(json_string_value(value), "true") == 0),
                                                   &error) < 0) {
                                engine_rest_reply_error(msg, error);
                                return;
                        }
                        engine_event(e, "normal", NULL, "option %s set", seg[1]);
                }
                out = json_pack("{s:s, s:b}", "name", seg[1],
                                "value", engine_option_bool(e, seg[1], e->config.data_operations_by_hsm));
                engine_rest_reply_json(msg, 200, out);
        } else {
                engine_rest_reply_fault(msg, get || post ? 404 : 405, "no such resource or action");
        }
}

static void on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        struct engine *e = data;
        g_auto(GStrv) parts = NULL;
        char *seg[ENGINE_REST_SEGMENTS_MAX];
        guint n = 0;

        if (engine_rest_path_split(path, &parts, seg, &n) < 0) {
                engine_rest_reply_fault(msg, 404, g_str_has_prefix(path, "/api/") ? "no such resource"
                                                                                  : "the API lives under /api/");
                return;
        }
        handle(e, msg, seg, n);
}

/* Answers msg at once with a fault and closes its connection, whatever of its body was not read yet. */
static void refuse(struct engine *e, SoupServerMessage *msg, int status, const char *detail)
{
        g_autoptr(json_t) body = engine_rest_fault(status, detail);
        g_autofree char *text = json_dumps(body, JSON_INDENT(2) | JSON_SORT_KEYS);

        fy_http_server_refuse(e->httpd, msg, (guint) status, NULL, "application/json", text);
}

#define BODY_BYTES_KEY "ferry-body-bytes"

/* A chunked body is counted as it arrives and cut the moment it passes the limit. */
static void on_body_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer data)
{
        struct engine *e = data;
        gsize n = GPOINTER_TO_SIZE(g_object_get_data(G_OBJECT(msg), BODY_BYTES_KEY)) + g_bytes_get_size(chunk);

        g_object_set_data(G_OBJECT(msg), BODY_BYTES_KEY, GSIZE_TO_POINTER(n));
        if (n > e->config.max_body) {
                g_autofree char *detail = g_strdup_printf("request body exceeds the limit of %u bytes", e->config.max_body);

                g_signal_handlers_disconnect_by_func(msg, on_body_chunk, data);
                refuse(e, msg, 413, detail);
        }
}

/*
 * Every request, before its body is read: framing that a proxy could read
 * differently (two Content-Lengths, "+5", Content-Length with chunked) is
 * refused, and so is a body over the limit, so it is never buffered.
 */
static void on_early(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        struct engine *e = data;
        SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
        g_autofree char *detail = NULL;
        goffset len;

        if (fy_http_check_framing(h, &detail) != 0) {
                refuse(e, msg, 400, detail);
                return;
        }
        if (soup_message_headers_get_encoding(h) == SOUP_ENCODING_CHUNKED) {
                g_signal_connect(msg, "got-chunk", G_CALLBACK(on_body_chunk), e);
                return;
        }
        len = soup_message_headers_get_content_length(h);
        if (len > (goffset) e->config.max_body) {
                detail = g_strdup_printf("request body of %" G_GOFFSET_FORMAT " bytes exceeds the limit of %u",
                                         len, e->config.max_body);
                refuse(e, msg, 413, detail);
        }
}

static void on_http_log(void *data, GLogLevelFlags level, const char *message)
{
        g_log(G_LOG_DOMAIN, level, "REST API: %s", message);
}

/* Refusals made below the handlers (timeouts, caps, unparsable requests) are faults like any other. */
static char *rest_fault_text(guint status, const char *detail, const char **ret_type)
{
        g_autoptr(json_t) body = engine_rest_fault((int) status, detail);

        *ret_type = "application/json";
        return json_dumps(body, JSON_INDENT(2) | JSON_SORT_KEYS);
}

int engine_rest_start(struct engine *e, GError **error)
{
        g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(e->config.listen_address);
        g_autoptr(GSocketAddress) addr = NULL;
        struct fy_http_limits limits = {
                .max_connections = e->config.max_connections,
                .per_address = e->config.max_connections_per_address,
                .idle_timeout_s = e->config.idle_timeout,
                .header_timeout_s = e->config.request_timeout,
                .body_timeout_s = e->config.request_timeout,
                .handshake_timeout_s = e->config.request_timeout,
                .fault = rest_fault_text,
        };
        g_autoptr(GTlsCertificate) cert = NULL;
        int r;

        if (!inet) {
                g_set_error(error, ENGINE_ERROR, 400, "listen_address '%s' is not an IP address", e->config.listen_address);
                return -EINVAL;
        }
        e->http = engine_rest_server_new(e, error);
        if (!e->http)
                return -EINVAL;
        /* libsoup picks one handler entry per path, early and normal: every path gets both. */
        soup_server_add_early_handler(e->http, "/api", on_early, e, NULL);
        soup_server_add_early_handler(e->http, NULL, on_early, e, NULL);
        soup_server_add_handler(e->http, "/api", on_request, e, NULL);
        soup_server_add_handler(e->http, NULL, on_request, e, NULL);
        addr = g_inet_socket_address_new(inet, (guint16) e->config.port);
        /* Connections are Ferry's (src/lib/httpserve.c), TLS too: the certificate goes there. */
        g_object_get(e->http, "tls-certificate", &cert, NULL);
        r = fy_http_server_new(e->http, addr, cert, &limits, on_http_log, e, &e->httpd, error);
        if (r < 0)
                return r;
        e->port = fy_http_server_port(e->httpd);
        return 0;
}

void engine_rest_stop(struct engine *e)
{
        fy_http_server_free(e->httpd);
        e->httpd = NULL;
        g_clear_object(&e->http);
}
