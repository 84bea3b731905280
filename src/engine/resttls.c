/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The REST server's transport security: the HTTPS certificate, the security
 * headers every response carries, and a JSON fault for the requests libsoup
 * refuses itself before any handler runs (a path that decodes to "..", a URI
 * of the wrong scheme), which would otherwise get an empty 400.
 */
#include <string.h>

#include "http.h"
#include "resttls.h"

/* Browsers remember for a year that this origin is HTTPS only. */
#define HSTS_VALUE "max-age=31536000"

static void on_got_headers(SoupServerMessage *msg, gpointer data)
{
        guint status = soup_server_message_get_status(msg);
        SoupMessageBody *body = soup_server_message_get_response_body(msg);
        GUri *uri = soup_server_message_get_uri(msg);
        const char *path = uri ? g_uri_get_path(uri) : NULL;

        /* API answers carry inventory state: never stored by a cache or a browser. */
        if (path && (g_str_has_prefix(path, "/api") || g_str_has_prefix(path, "/sso")))
                soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Cache-Control",
                                             "no-store");
        /* libsoup refused it before routing (status set, no body): say why, as every fault does. */
        if (status >= 400 && body->length == 0)
                engine_rest_reply_fault(msg, (int) status,
                                        status == SOUP_STATUS_BAD_REQUEST ?
                                        "the request's path is not acceptable (it decodes to a '..' segment, "
                                        "or the scheme does not match the connection)" :
                                        "the request was refused before it reached the API");
}

static void on_request_started(SoupServer *server, SoupServerMessage *msg, gpointer data)
{
        bool tls = GPOINTER_TO_INT(data);
        SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);

        /* Set before anything answers, so refusals carry them too. */
        soup_message_headers_replace(h, "X-Content-Type-Options", "nosniff");
        soup_message_headers_replace(h, "X-Frame-Options", "DENY");
        soup_message_headers_replace(h, "Content-Security-Policy", "frame-ancestors 'none'");
        soup_message_headers_replace(h, "Referrer-Policy", "no-referrer");
        if (tls)
                soup_message_headers_replace(h, "Strict-Transport-Security", HSTS_VALUE);
        /* Connected after libsoup's own got-headers handler: runs once it has judged the request. */
        g_signal_connect(msg, "got-headers", G_CALLBACK(on_got_headers), NULL);
}

SoupServer *engine_rest_server_new(struct engine *e, GError **error)
{
        g_autoptr(GTlsCertificate) cert = NULL;
        SoupServer *server;

        if (!e->config.insecure) {
                /* Read once at start: a rotated certificate takes effect at the next restart. */
                cert = g_tls_certificate_new_from_files(e->config.tls_cert, e->config.tls_key, error);
                if (!cert) {
                        g_prefix_error(error, "tls_cert %s / tls_key %s: ", e->config.tls_cert, e->config.tls_key);
                        return NULL;
                }
        }
        server = soup_server_new("server-header", "ferry-engine", "tls-certificate", cert, NULL);
        g_signal_connect(server, "request-started", G_CALLBACK(on_request_started), GINT_TO_POINTER(cert != NULL));
        return server;
}
