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
#include "api_vms.h"
#include "http.h"
#include "rest.h"
#include "resttls.h"
#include "transfers.h"

#define MAX_PATH 512
#define MAX_SEGMENTS 8

typedef const struct engine_route *(*route_table_fn)(size_t *ret_n);

static const route_table_fn tables[] = {
        engine_api_hosts_routes,
        engine_api_disks_routes,
        engine_api_jobs_routes,
        engine_api_vms_routes,
        engine_api_transfers_routes,
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

static void on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        struct engine *e = data;
        char buf[MAX_PATH + 1];
        char *args[ENGINE_ROUTE_MAX_ARGS] = { NULL };
        const struct engine_route *r;
        bool known;

        if (!g_str_has_prefix(path, "/api/") || strlen(path) > MAX_PATH) {
                engine_rest_reply_fault(msg, 404, "the API lives under /api/");
                return;
        }
        r = engine_rest_route_find(soup_server_message_get_method(msg), path, args, &known, buf, sizeof(buf));
        if (!r) {
                engine_rest_reply_fault(msg, known ? 405 : 404, known ? "this resource does not take that method"
                                                                      : "no such resource or action");
                return;
        }
        r->handler(e, msg, args);
}

/* Before the body is read: refuse what is too large, so it is never buffered. */
static void on_early(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        struct engine *e = data;
        SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
        goffset len = soup_message_headers_get_content_length(h);

        if (soup_message_headers_get_encoding(h) == SOUP_ENCODING_CHUNKED) {
                engine_rest_reply_fault(msg, 411, "send a Content-Length; chunked request bodies are not accepted");
                return;
        }
        if (len > (goffset) e->config.max_body) {
                g_autofree char *detail = g_strdup_printf("request body of %" G_GOFFSET_FORMAT " bytes exceeds the limit of %u",
                                                          len, e->config.max_body);
                engine_rest_reply_fault(msg, 413, detail);
        }
}

int engine_rest_start(struct engine *e, GError **error)
{
        g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(e->config.listen_address);
        g_autoptr(GSocketAddress) addr = NULL;
        GSList *uris;

        if (!inet) {
                g_set_error(error, ENGINE_ERROR, 400, "listen_address '%s' is not an IP address", e->config.listen_address);
                return -EINVAL;
        }
        e->http = engine_rest_server_new(e, error);
        if (!e->http)
                return -EINVAL;
        /* Same path for both: libsoup picks one handler entry per path, early and normal. */
        soup_server_add_early_handler(e->http, "/api", on_early, e, NULL);
        soup_server_add_handler(e->http, "/api", on_request, e, NULL);
        soup_server_add_handler(e->http, NULL, on_request, e, NULL);
        addr = g_inet_socket_address_new(inet, (guint16) e->config.port);
        if (!soup_server_listen(e->http, addr, e->config.insecure ? 0 : SOUP_SERVER_LISTEN_HTTPS, error))
                return -EADDRINUSE;
        uris = soup_server_get_uris(e->http);
        if (uris) {
                e->port = (guint16) g_uri_get_port(uris->data);
                g_slist_free_full(uris, (GDestroyNotify) g_uri_unref);
        }
        return 0;
}
