/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * REST API (docs/rest-api.md) on libsoup 3. This file only serves and
 * dispatches: each resource file exports its rows of the route table
 * {method, pattern, handler, role}, and a request runs the handler of the
 * row its path and method match. Handlers validate, read the inventory,
 * start actions (which check the business rules, so every caller gets
 * them), and answer JSON; errors are {"fault": {"reason", "detail"}} with
 * the HTTP status of the ENGINE_ERROR.
 */
#include <errno.h>
#include <string.h>

#include "api_disks.h"
#include "api_hosts.h"
#include "api_jobs.h"
#include "api_stream.h"
#include "api_ui.h"
#include "api_users.h"
#include "api_vms.h"
#include "auth.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "leader.h"
#include "rest.h"
#include "httpserve.h"
#include "restparse.h"
#include "resttls.h"
#include "api_transfers.h"
#include "uuid.h"

#define MAX_PATH ENGINE_REST_PATH_MAX
#define MAX_SEGMENTS 8

typedef const struct engine_route *(*route_table_fn)(size_t *ret_n);

static const route_table_fn tables[] = {
        engine_api_hosts_routes,
        engine_api_disks_routes,
        engine_api_jobs_routes,
        engine_api_vms_routes,
        engine_api_transfers_routes,
        engine_metrics_routes,
        engine_api_users_routes,
        engine_api_stream_routes,
        engine_api_ui_routes,
};

const struct engine_route *engine_rest_route_at(size_t i)
{
        for (size_t t = 0; t < G_N_ELEMENTS(tables); t++) {
                size_t n;
                const struct engine_route *rows = tables[t](&n);

                if (i < n)
                        return &rows[i];
                i -= n;
        }
        return NULL;
}

/* Splits a path below /api/ into its non-empty segments; false when it has too many. */
static bool split(const char *path, char **seg, guint *ret_n, char *buf, size_t size)
{
        guint n = 0;

        g_strlcpy(buf, path, size);
        for (char *save = NULL, *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
                if (n == MAX_SEGMENTS)
                        return false;
                seg[n++] = s;
        }
        *ret_n = n;
        return true;
}

/* The path matches the pattern: literal segments equal, {name} segments captured into args. */
static bool match(const char *pattern, char **seg, guint n, char **args)
{
        char buf[MAX_PATH + 1];
        char *pseg[MAX_SEGMENTS];
        guint pn, a = 0;

        if (!split(pattern, pseg, &pn, buf, sizeof(buf)) || pn != n)
                return false;
        for (guint i = 0; i < n; i++) {
                if (pseg[i][0] == '{') {
                        if (a == ENGINE_ROUTE_MAX_ARGS)
                                return false;
                        args[a++] = seg[i];
                } else if (strcmp(pseg[i], seg[i]) != 0) {
                        return false;
                }
        }
        return true;
}

const struct engine_route *engine_rest_route_find(const char *method, const char *path, char **args,
                                                  bool *ret_path_known, char *buf, size_t size)
{
        char *seg[MAX_SEGMENTS];
        const struct engine_route *r;
        guint n;

        *ret_path_known = false;
        if (strlen(path) > MAX_PATH || size < MAX_PATH + 1 || !split(path, seg, &n, buf, size))
                return NULL;
        for (size_t i = 0; (r = engine_rest_route_at(i)); i++) {
                char *a[ENGINE_ROUTE_MAX_ARGS] = { NULL };

                if (!match(r->pattern, seg, n, a))
                        continue;
                *ret_path_known = true;
                if (strcmp(r->method, method) == 0) {
                        memcpy(args, a, sizeof(a));
                        return r;
                }
        }
        return NULL;
}

/* Authenticates and runs the request's route; answers every failure itself. resumed: after a Basic check. */
static void serve(struct engine *e, SoupServerMessage *msg, const char *path, bool resumed);

/* A request paused for its Basic password check, the password right: from the start again, with its user. */
static void on_resume(struct engine *e, SoupServerMessage *msg)
{
        g_autofree char *path = g_strdup(g_uri_get_path(soup_server_message_get_uri(msg)));

        serve(e, msg, path, true);
}

/*
 * A write sent to a standby: 307 to the same path and query on the active
 * engine, which the client repeats with its method and body (a redirect the
 * CLI follows only to an engine it knows, ferry(1)). 503 while no engine leads,
 * and on a leader whose lease is not known to be its own (engine_leader_fresh):
 * after a SIGCONT another engine may lead already, and the leader row still
 * names this one.
 */
static void redirect_to_leader(struct engine *e, SoupServerMessage *msg)
{
        const char *leader = engine_leader_url(e);
        GUri *uri = soup_server_message_get_uri(msg);
        g_autofree char *location = NULL;
        const char *query = g_uri_get_query(uri);

        if (engine_leader_active(e)) {
                soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", "2");
                engine_rest_reply_fault(msg, 503, "this engine's leadership is not confirmed (its lease was not "
                                                  "renewed in time); retry shortly");
                return;
        }
        if (!leader) {
                soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", "2");
                engine_rest_reply_fault(msg, 503, "this engine is a standby and no engine is active yet; retry shortly");
                return;
        }
        location = g_strconcat(leader, g_uri_get_path(uri), query ? "?" : "", query ? query : "", NULL);
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Location", location);
        engine_rest_reply_fault(msg, 307, "this engine is a standby: send writes to the active engine");
}

static void serve(struct engine *e, SoupServerMessage *msg, const char *path, bool resumed)
{
        char buf[MAX_PATH + 1];
        char *args[ENGINE_ROUTE_MAX_ARGS] = { NULL };
        const char *method = soup_server_message_get_method(msg);
        const char *corr = soup_message_headers_get_one(soup_server_message_get_request_headers(msg), "Correlation-Id");
        g_autofree char *made = NULL;
        g_autofree char *user = NULL;
        const struct engine_route *r = NULL;
        struct fy_log_context saved;
        bool known = false;

        if (g_str_has_prefix(path, "/sso/")) {
                engine_auth_sso(e, msg, path);
                return;
        }
        /* The web UI's files: public, the page then logs in like any client (api_ui.c). */
        if (!g_str_has_prefix(path, "/api/") && strcmp(path, "/api") != 0 && strcmp(path, "/metrics") != 0) {
                engine_metrics_request_start(msg, method, "/ (web UI)");
                engine_ui_serve(e, msg, path);
                return;
        }
        if ((g_str_has_prefix(path, "/api/") || strcmp(path, "/metrics") == 0) && strlen(path) <= MAX_PATH)
                r = engine_rest_route_find(method, path, args, &known, buf, sizeof(buf));
        if (resumed) {
                /* Timed and checked the first time through; the Correlation-Id is in the answer already. */
                corr = soup_message_headers_get_one(soup_server_message_get_response_headers(msg), "Correlation-Id");
        } else {
                /* Timed under the route's pattern, never the raw path: the metric's labels stay bounded. */
                engine_metrics_request_start(msg, method, r ? r->pattern : NULL);
                if (corr && !fy_log_correlation_id_valid(corr)) {
                        engine_rest_reply_fault(msg, 400,
                                                "Correlation-Id takes 1-128 of the characters A-Z a-z 0-9 . _ : -");
                        return;
                }
                if (!corr)
                        corr = made = fy_uuid_new();
                /* Returned, so a caller that sent none can still find the request's job, log lines and events. */
                soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Correlation-Id", corr);
        }
        if (!r) {
                engine_rest_reply_fault(msg, known ? 405 : 404, known ? "this resource does not take that method"
                                                                              : "no such resource or action");
                return;
        }
        /* A standby changes nothing: the active engine does (ARCHITECTURE.md, "Several engines"). Nor does a
         * leader whose lease is stale: it may have been stopped while another engine took over. */
        if (!engine_leader_fresh(e) && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                redirect_to_leader(e, msg);
                return;
        }
        /* Who asks, and may they: before the handler reads anything. */
        if (engine_auth_request(e, msg, r->role, on_resume, &user) < 0)
                return;
        /* The request's log context: a job it starts keeps the correlation id (jobs.correlation_id). */
        fy_log_context_set(NULL, corr, &saved);
        e->acting_user = user;
        r->handler(e, msg, args);
        e->acting_user = NULL;
        fy_log_context_restore(&saved);
}

static void on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        serve(data, msg, path, false);
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
                .body_deadline_s = e->config.body_deadline,
                .write_timeout_s = e->config.write_timeout,
                .handshake_timeout_s = e->config.request_timeout,
                .fault = rest_fault_text,
        };
        g_autoptr(GTlsCertificate) cert = NULL;
        int r;

        if (!inet) {
                g_set_error(error, ENGINE_ERROR, 400, "listen_address '%s' is not an IP address", e->config.listen_address);
                return -EINVAL;
        }
        engine_stream_start(e);        /* listens to the store before any request can write */
        e->http = engine_rest_server_new(e, error);
        if (!e->http)
                return -EINVAL;
        /* libsoup picks one handler entry per path, early and normal: every path gets both. */
        soup_server_add_early_handler(e->http, "/api", on_early, e, NULL);
        soup_server_add_early_handler(e->http, NULL, on_early, e, NULL);
        soup_server_add_handler(e->http, "/api", on_request, e, NULL);
        soup_server_add_handler(e->http, "/sso", on_request, e, NULL);
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
        engine_stream_stop(e);
        fy_http_server_free(e->httpd);
        e->httpd = NULL;
        g_clear_object(&e->http);
}
