/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "jsonrpc.h"
#include "listener.h"
#include "pki.h"
#include "server.h"
#include "stomp.h"

#define READ_CHUNK (64 * 1024)
#define MAX_SUBSCRIPTIONS 64
#define MAX_INFLIGHT 64                       /* RPC messages awaiting a reply per connection */
#define MAX_OUTPUT_BACKLOG (64u * 1024 * 1024) /* a client that does not read is dropped */
#define MIN_HEARTBEAT_MS 1000
#define HANDSHAKE_TIMEOUT_S 30
/* A peer that has not sent CONNECT by then is closed: idle sockets must not hold connection slots. */
/* After an ERROR frame the rest of the peer's input is read and dropped for a
 * while, so closing does not reset the connection before the peer has read
 * the ERROR (a close with unread input sends RST). */
#define DRAIN_TIMEOUT_S 2
#define DRAIN_MAX (1024 * 1024)

struct agent_server {
        struct agent *agent;
        struct fy_rpc_dispatcher *dispatcher;
        struct fy_listener *listener;
        GTlsCertificate *cert;
        GTlsDatabase *ca;
        guint16 port;
        GList *conns;
        unsigned n_conns;
        guint64 next_conn_id;
};

struct conn {
        int ref;
        struct agent_server *server;
        guint64 id;
        char *peer;
        GSocket *sock;                 /* its listener slot */
        GIOStream *stream;
        GCancellable *cancel;
        struct fy_stomp_parser *parser;
        guint8 *buf;
        GQueue outq;                   /* GBytes* */
        gsize out_bytes;
        bool writing;
        bool connected;                /* CONNECT accepted */
        bool closing;                  /* no more input handled; close once output drained */
        bool closed;
        bool draining;                 /* after an ERROR: discard input until the peer hangs up */
        gsize drained;
        guint drain_timeout;
        GHashTable *subs;              /* id → destination */
        unsigned inflight;
        guint heartbeat_source;
        guint handshake_timeout;
        guint connect_timeout;         /* until CONNECT is accepted */
};

static struct conn *conn_ref(struct conn *c)
{
        c->ref++;
        return c;
}

static void conn_unref(struct conn *c)
{
        if (--c->ref > 0)
                return;
        g_assert(c->closed);
        g_queue_clear_full(&c->outq, (GDestroyNotify) g_bytes_unref);
        fy_stomp_parser_free(c->parser);
        g_hash_table_unref(c->subs);
        g_clear_object(&c->stream);
        g_clear_object(&c->sock);
        g_clear_object(&c->cancel);
        g_free(c->buf);
        g_free(c->peer);
        g_free(c);
}

static void conn_close(struct conn *c, const char *why)
{
        if (c->closed)
                return;
        c->closed = true;
        g_message("connection %" G_GUINT64_FORMAT " from %s closed%s%s", c->id, c->peer,
                  why ? ": " : "", why ? why : "");
        g_cancellable_cancel(c->cancel);
        if (c->heartbeat_source)
                g_source_remove(c->heartbeat_source);
        c->heartbeat_source = 0;
        if (c->handshake_timeout)
                g_source_remove(c->handshake_timeout);
        c->handshake_timeout = 0;
        if (c->connect_timeout)
                g_source_remove(c->connect_timeout);
        c->connect_timeout = 0;
        if (c->drain_timeout)
                g_source_remove(c->drain_timeout);
        c->drain_timeout = 0;
        g_io_stream_close_async(c->stream, G_PRIORITY_DEFAULT, NULL, NULL, NULL);
        fy_listener_release(c->server->listener, c->sock);
        c->server->conns = g_list_remove(c->server->conns, c);
        c->server->n_conns--;
        conn_unref(c);         /* the server's reference */
}

static void conn_flush(struct conn *c);

static gboolean on_drain_timeout(gpointer data)
{
        struct conn *c = data;

        c->drain_timeout = 0;
        conn_close(c, "closed after an error");
        return G_SOURCE_REMOVE;
}

/* Output is flushed: half-close and let on_read drain the peer's input. */
static void conn_start_drain(struct conn *c)
{
        if (G_IS_SOCKET_CONNECTION(c->stream))
                g_socket_shutdown(g_socket_connection_get_socket(G_SOCKET_CONNECTION(c->stream)), FALSE, TRUE, NULL);
        if (!c->drain_timeout)
                c->drain_timeout = g_timeout_add_seconds(DRAIN_TIMEOUT_S, on_drain_timeout, c);
}

static void on_written(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *c = data;
        g_autoptr(GError) error = NULL;
        GBytes *b;

        c->writing = false;
        if (!g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL, &error)) {
                if (!c->closed)
                        conn_close(c, error->message);
                conn_unref(c);
                return;
        }
        b = g_queue_pop_head(&c->outq);
        c->out_bytes -= g_bytes_get_size(b);
        g_bytes_unref(b);
        conn_flush(c);
        conn_unref(c);
}

static void conn_flush(struct conn *c)
{
        GBytes *b;
        gsize size;
        const void *data;

        if (c->closed || c->writing)
                return;
        b = g_queue_peek_head(&c->outq);
        if (!b) {
                if (c->closing && c->draining)
                        conn_start_drain(c);
                else if (c->closing)
                        conn_close(c, NULL);
                return;
        }
        data = g_bytes_get_data(b, &size);
        c->writing = true;
        g_output_stream_write_all_async(g_io_stream_get_output_stream(c->stream), data, size,
                                        G_PRIORITY_DEFAULT, c->cancel, on_written, conn_ref(c));
}

static void conn_send(struct conn *c, GBytes *bytes)
{
        if (c->closed) {
                g_bytes_unref(bytes);
                return;
        }
        if (c->out_bytes + g_bytes_get_size(bytes) > MAX_OUTPUT_BACKLOG) {
                g_bytes_unref(bytes);
                conn_close(c, "client does not read its replies (output backlog over 64 MiB)");
                return;
        }
        c->out_bytes += g_bytes_get_size(bytes);
        g_queue_push_tail(&c->outq, bytes);
        conn_flush(c);
}

static void conn_send_frame(struct conn *c, const char *command, const char *const *headers,
                            const char *body)
{
        conn_send(c, fy_stomp_frame_encode(command, headers, body, body ? strlen(body) : 0));
}

/* Sends an ERROR frame and closes the connection once it is written. */
static void conn_fail(struct conn *c, const char *message)
{
        const char *headers[] = { "message", message, "content-type", "text/plain", NULL };

        g_warning("connection %" G_GUINT64_FORMAT " from %s: %s", c->id, c->peer, message);
        conn_send_frame(c, "ERROR", headers, message);
        c->closing = true;
        c->draining = true;
        conn_flush(c);
}

static gboolean on_heartbeat(gpointer data)
{
        struct conn *c = data;

        /* An EOL is a STOMP heart-beat. */
        if (g_queue_is_empty(&c->outq))
                conn_send(c, g_bytes_new_static("\n", 1));
        return G_SOURCE_CONTINUE;
}

static const char *conn_subscription_for(struct conn *c, const char *destination)
{
        GHashTableIter it;
        gpointer k, v;

        g_hash_table_iter_init(&it, c->subs);
        while (g_hash_table_iter_next(&it, &k, &v))
                if (strcmp(v, destination) == 0)
                        return k;
        return NULL;
}

static void conn_send_message(struct conn *c, const char *destination, const char *sub_id, const char *body)
{
        const char *headers[] = {
                "destination", destination,
                "content-type", "application/json",
                "subscription", sub_id,
                NULL,
        };
        conn_send_frame(c, "MESSAGE", headers, body);
}

struct reply_ctx {
        struct conn *conn;
        char *reply_to;
};

static void reply_ctx_free(void *data)
{
        struct reply_ctx *r = data;

        r->conn->inflight--;
        conn_unref(r->conn);
        g_free(r->reply_to);
        g_free(r);
}

static void on_rpc_reply(const char *reply, void *data)
{
        struct reply_ctx *r = data;
        const char *sub;

        if (!reply || r->conn->closed)
                return;
        sub = conn_subscription_for(r->conn, r->reply_to);
        if (!sub) {
                g_warning("connection %" G_GUINT64_FORMAT ": reply to %s dropped: no subscription to it",
                          r->conn->id, r->reply_to);
                return;
        }
        conn_send_message(r->conn, r->reply_to, sub, reply);
}

static void handle_connect(struct conn *c, struct fy_stomp_frame *f)
{
        const char *versions = fy_stomp_frame_get_header(f, "accept-version");
        const char *hb = fy_stomp_frame_get_header(f, "heart-beat");
        g_auto(GStrv) vlist = NULL;
        char hbuf[64];
        unsigned cx = 0, cy = 0, sx = 0;

        if (c->connected) {
                conn_fail(c, "already connected");
                return;
        }
        vlist = g_strsplit(versions ? versions : "1.0", ",", 16);
        if (!g_strv_contains((const char *const *) vlist, "1.2")) {
                conn_fail(c, "this server speaks STOMP 1.2 only (accept-version must include 1.2)");
                return;
        }
        if (hb) {
                char extra;
                if (sscanf(hb, "%u,%u%c", &cx, &cy, &extra) != 2 || cy > 3600 * 1000) {
                        conn_fail(c, "malformed heart-beat header (expected two numbers \"cx,cy\" in ms)");
                        return;
                }
        }
        if (cy > 0) {
                sx = MAX(cy, MIN_HEARTBEAT_MS);
                c->heartbeat_source = g_timeout_add(sx, on_heartbeat, c);
        }
        g_snprintf(hbuf, sizeof(hbuf), "%u,0", sx);
        c->connected = true;
        if (c->connect_timeout)
                g_source_remove(c->connect_timeout);
        c->connect_timeout = 0;
        {
                const char *headers[] = { "version", "1.2", "heart-beat", hbuf, "server", "ferry-agent", NULL };
                conn_send_frame(c, "CONNECTED", headers, NULL);
        }
}

static void send_receipt(struct conn *c, struct fy_stomp_frame *f)
{
        const char *receipt = fy_stomp_frame_get_header(f, "receipt");

        if (receipt) {
                const char *headers[] = { "receipt-id", receipt, NULL };
                conn_send_frame(c, "RECEIPT", headers, NULL);
        }
}

static void handle_frame(struct conn *c, struct fy_stomp_frame *f)
{
        const char *cmd = f->command;

        if (strcmp(cmd, "CONNECT") == 0 || strcmp(cmd, "STOMP") == 0) {
                handle_connect(c, f);
                return;
        }
        if (!c->connected) {
                conn_fail(c, "the first frame must be CONNECT");
                return;
        }
        if (strcmp(cmd, "SUBSCRIBE") == 0) {
                const char *dest = fy_stomp_frame_get_header(f, "destination");
                const char *id = fy_stomp_frame_get_header(f, "id");

                if (!dest || !id || !*dest || !*id) {
                        conn_fail(c, "SUBSCRIBE needs destination and id headers");
                        return;
                }
                if (g_hash_table_size(c->subs) >= MAX_SUBSCRIPTIONS && !g_hash_table_contains(c->subs, id)) {
                        conn_fail(c, "too many subscriptions on one connection (limit 64)");
                        return;
                }
                g_hash_table_replace(c->subs, g_strdup(id), g_strdup(dest));
                send_receipt(c, f);
        } else if (strcmp(cmd, "UNSUBSCRIBE") == 0) {
                const char *id = fy_stomp_frame_get_header(f, "id");

                if (!id) {
                        conn_fail(c, "UNSUBSCRIBE needs an id header");
                        return;
                }
                g_hash_table_remove(c->subs, id);
                send_receipt(c, f);
        } else if (strcmp(cmd, "SEND") == 0) {
                const char *dest = fy_stomp_frame_get_header(f, "destination");
                const char *reply_to = fy_stomp_frame_get_header(f, "reply-to");
                struct reply_ctx *r;

                if (!dest) {
                        conn_fail(c, "SEND needs a destination header");
                        return;
                }
                if (strcmp(dest, AGENT_REQUEST_DESTINATION) != 0) {
                        conn_fail(c, "SEND destination must be " AGENT_REQUEST_DESTINATION);
                        return;
                }
                if (c->inflight >= MAX_INFLIGHT) {
                        conn_fail(c, "too many requests awaiting replies on one connection (limit 64)");
                        return;
                }
                send_receipt(c, f);
                r = g_new0(struct reply_ctx, 1);
                r->conn = conn_ref(c);
                r->reply_to = g_strdup(reply_to && *reply_to ? reply_to : AGENT_DEFAULT_REPLY_DESTINATION);
                c->inflight++;
                /* VDSM's flow id travels in this header (yajsonrpc's Headers.FLOW_ID). */
                fy_rpc_dispatch_flow(c->server->dispatcher, f->body, f->body_len,
                                     fy_stomp_frame_get_header(f, "ovirtCorrelationId"),
                                     on_rpc_reply, r, reply_ctx_free);
        } else if (strcmp(cmd, "DISCONNECT") == 0) {
                send_receipt(c, f);
                c->closing = true;
                conn_flush(c);
        } else if (strcmp(cmd, "ACK") == 0 || strcmp(cmd, "NACK") == 0 ||
                   strcmp(cmd, "BEGIN") == 0 || strcmp(cmd, "COMMIT") == 0 || strcmp(cmd, "ABORT") == 0) {
                send_receipt(c, f);    /* ack:auto only; transactions are not used by VDSM clients */
        } else {
                g_autofree char *msg = g_strdup_printf("unknown STOMP command '%.32s'", cmd);
                conn_fail(c, msg);
        }
}

static void conn_read(struct conn *c);

static void on_read(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *c = data;
        g_autoptr(GError) error = NULL;
        gssize n;
        int r;

        n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, &error);
        if (!c->closed && c->draining && n > 0 && c->drained + (gsize) n <= DRAIN_MAX) {
                c->drained += (gsize) n;
                conn_read(c);
                conn_unref(c);
                return;
        }
        if (!c->closed && c->draining) {
                conn_close(c, n > 0 ? "peer kept sending after an error" : NULL);
                conn_unref(c);
                return;
        }
        if (c->closed || c->closing) {
                conn_unref(c);
                return;
        }
        if (n <= 0) {
                conn_close(c, n < 0 ? error->message : "peer closed the connection");
                conn_unref(c);
                return;
        }
        r = fy_stomp_parser_feed(c->parser, c->buf, (size_t) n);
        for (;;) {
                g_autoptr(fy_stomp_frame) f = NULL;

                if (c->closing || c->closed)
                        break;
                r = fy_stomp_parser_next(c->parser, &f);
                if (r < 0) {
                        g_autofree char *msg = g_strdup_printf("bad STOMP frame: %s", fy_stomp_parser_error(c->parser));
                        conn_fail(c, msg);
                        break;
                }
                if (r == 0)
                        break;
                handle_frame(c, f);
        }
        if (!c->closed && (!c->closing || c->draining))
                conn_read(c);
        conn_unref(c);
}

static void conn_read(struct conn *c)
{
        g_input_stream_read_async(g_io_stream_get_input_stream(c->stream), c->buf, READ_CHUNK,
                                  G_PRIORITY_DEFAULT, c->cancel, on_read, conn_ref(c));
}

static gboolean on_connect_timeout(gpointer data)
{
        struct conn *c = data;

        c->connect_timeout = 0;
        g_autofree char *why = g_strdup_printf("no CONNECT frame within %u s", c->server->agent->config.connect_timeout);

        conn_close(c, why);
        return G_SOURCE_REMOVE;
}

static gboolean on_handshake_timeout(gpointer data)
{
        struct conn *c = data;

        c->handshake_timeout = 0;
        conn_close(c, "TLS handshake timed out");
        return G_SOURCE_REMOVE;
}

/*
 * The CA signs the hosts' certificates too: a chain that verifies is not
 * enough, the client must present the engine's (clientAuth, OU=engine), so
 * one host's key cannot drive another host.
 */
static int engine_client_check(struct conn *c, GTlsConnection *tls)
{
        GTlsCertificate *peer = g_tls_connection_get_peer_certificate(tls);
        g_autofree char *pem = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *why = NULL;

        if (peer)
                g_object_get(peer, "certificate-pem", &pem, NULL);
        if (pem && fy_pki_check_engine_client(pem, &error) == 0)
                return 0;
        why = g_strdup_printf("client certificate refused: %s",
                              error ? error->message : "no client certificate");
        g_warning("connection %" G_GUINT64_FORMAT " from %s: %s", c->id, c->peer, why);
        conn_close(c, why);
        return -EPERM;
}

static void on_handshake(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *c = data;
        g_autoptr(GError) error = NULL;

        if (!g_tls_connection_handshake_finish(G_TLS_CONNECTION(source), res, &error)) {
                GTlsCertificateFlags flags = g_tls_connection_get_peer_certificate_errors(G_TLS_CONNECTION(source));
                g_autofree char *why = g_strdup_printf("TLS handshake failed: %s%s%s%s%s%s", error->message,
                        flags & G_TLS_CERTIFICATE_UNKNOWN_CA ? " (client certificate not signed by tls_ca)" : "",
                        flags & G_TLS_CERTIFICATE_EXPIRED ? " (client certificate expired)" : "",
                        flags & G_TLS_CERTIFICATE_NOT_ACTIVATED ? " (client certificate not yet valid)" : "",
                        flags & G_TLS_CERTIFICATE_BAD_IDENTITY ? " (client certificate identity mismatch)" : "",
                        flags & G_TLS_CERTIFICATE_INSECURE ? " (client certificate uses an insecure algorithm)" : "");
                if (!c->closed)
                        conn_close(c, why);
                conn_unref(c);
                return;
        }
        if (c->handshake_timeout)
                g_source_remove(c->handshake_timeout);
        c->handshake_timeout = 0;
        if (!c->closed && engine_client_check(c, G_TLS_CONNECTION(source)) < 0) {
                conn_unref(c);
                return;
        }
        if (!c->closed)
                conn_read(c);
        conn_unref(c);
}

/*
 * glib-networking asks here about every client certificate, also one that
 * verified cleanly against tls_ca (errors == 0): accept exactly those.
 */
static gboolean on_accept_certificate(GTlsConnection *tls, GTlsCertificate *cert,
                                      GTlsCertificateFlags errors, gpointer data)
{
        struct conn *c = data;

        if (errors == 0)
                return TRUE;
        g_warning("connection %" G_GUINT64_FORMAT " from %s: client certificate refused (flags 0x%x)%s%s%s%s",
                  c->id, c->peer, errors,
                  errors & G_TLS_CERTIFICATE_UNKNOWN_CA ? ", not signed by tls_ca" : "",
                  errors & G_TLS_CERTIFICATE_EXPIRED ? ", expired" : "",
                  errors & G_TLS_CERTIFICATE_NOT_ACTIVATED ? ", not yet valid" : "",
                  errors & G_TLS_CERTIFICATE_INSECURE ? ", insecure algorithm" : "");
        return FALSE;
}

static void on_accepted(void *data, GSocket *sock)
{
        struct agent_server *s = data;
        g_autoptr(GSocketConnection) connection = g_socket_connection_factory_create_connection(sock);
        g_autoptr(GSocketAddress) addr = g_socket_connection_get_remote_address(connection, NULL);
        g_autofree char *peer = NULL;
        struct fy_stomp_limits limits = {
                .max_frame = s->agent->config.max_frame,
                .max_headers = FY_STOMP_DEFAULT_MAX_HEADERS,
                .max_header_line = FY_STOMP_DEFAULT_MAX_HEADER_LINE,
        };
        struct conn *c;

        if (addr && G_IS_INET_SOCKET_ADDRESS(addr)) {
                g_autofree char *ip = g_inet_address_to_string(
                        g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(addr)));
                peer = g_strdup_printf("%s:%u", ip, g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(addr)));
        } else {
                peer = g_strdup("unknown");
        }

        c = g_new0(struct conn, 1);
        c->ref = 1;            /* the server's reference, dropped by conn_close */
        c->server = s;
        c->id = ++s->next_conn_id;
        c->peer = g_steal_pointer(&peer);
        c->sock = g_object_ref(sock);
        c->cancel = g_cancellable_new();
        c->parser = fy_stomp_parser_new(&limits);
        c->buf = g_malloc(READ_CHUNK);
        c->subs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_queue_init(&c->outq);
        s->conns = g_list_prepend(s->conns, c);
        s->n_conns++;
        g_socket_set_keepalive(g_socket_connection_get_socket(connection), TRUE);
        g_message("connection %" G_GUINT64_FORMAT " from %s", c->id, c->peer);
        /* Covers the TLS handshake too; removed by CONNECT or conn_close(). */
        c->connect_timeout = g_timeout_add_seconds(s->agent->config.connect_timeout, on_connect_timeout, c);

        if (s->cert) {
                g_autoptr(GError) error = NULL;
                /*
                 * The CA database and the client-certificate demand are given at
                 * construction: with g_tls_server_connection_new() the GnuTLS
                 * backend first loads the system trust store into the connection
                 * (MiBs and tens of ms per accepted connection), only for
                 * set_database() to replace it (as in src/lib/httpserve.c).
                 */
                GIOStream *tls = g_initable_new(g_tls_backend_get_server_connection_type(g_tls_backend_get_default()),
                                                NULL, &error, "base-io-stream", connection, "certificate", s->cert,
                                                "database", s->ca, "authentication-mode",
                                                G_TLS_AUTHENTICATION_REQUIRED, NULL);

                if (!tls) {
                        c->stream = G_IO_STREAM(g_steal_pointer(&connection));
                        conn_close(c, error->message);
                        return;
                }
                g_signal_connect(tls, "accept-certificate", G_CALLBACK(on_accept_certificate), c);
                c->stream = tls;
                c->handshake_timeout = g_timeout_add_seconds(HANDSHAKE_TIMEOUT_S, on_handshake_timeout, c);
                g_tls_connection_handshake_async(G_TLS_CONNECTION(tls), G_PRIORITY_DEFAULT, c->cancel,
                                                 on_handshake, conn_ref(c));
        } else {
                c->stream = g_object_ref(G_IO_STREAM(connection));
                conn_read(c);
        }
}

static void on_refused(void *data, GSocket *sock, const char *reason)
{
        struct agent_server *s = data;
        g_autofree char *ip = NULL;
        g_autoptr(GSocketAddress) addr = g_socket_get_remote_address(sock, NULL);

        if (addr && G_IS_INET_SOCKET_ADDRESS(addr))
                ip = g_inet_address_to_string(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(addr)));
        g_warning("refusing a connection from %s: %s (%u open; max_connections, max_connections_per_address)",
                  ip ? ip : "unknown", reason, s->n_conns);
}

static void on_listener_log(void *data, GLogLevelFlags level, const char *message)
{
        g_log(G_LOG_DOMAIN, level, "JSON-RPC listener: %s", message);
}

static const struct fy_listener_ops listener_ops = {
        .accepted = on_accepted,
        .refused = on_refused,
        .log = on_listener_log,
};



struct agent_server *agent_server_new(struct agent *agent, struct fy_rpc_dispatcher *dispatcher, GError **error)
{
        g_autoptr(GInetAddress) inet = NULL;
        g_autoptr(GSocketAddress) addr = NULL;
        struct fy_listener_limits limits = { 0 };
        struct agent_server *s;

        inet = g_inet_address_new_from_string(agent->config.listen_address);
        if (!inet) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "listen_address '%s' is not an IP address", agent->config.listen_address);
                return NULL;
        }
        s = g_new0(struct agent_server, 1);
        s->agent = agent;
        s->dispatcher = dispatcher;

        if (!agent->config.insecure) {
                if (!g_tls_backend_supports_tls(g_tls_backend_get_default())) {
                        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                                    "no TLS backend: install glib-networking, or run with --insecure=true");
                        goto fail;
                }
                s->cert = g_tls_certificate_new_from_files(agent->config.tls_cert, agent->config.tls_key, error);
                if (!s->cert)
                        goto fail;
                s->ca = g_tls_file_database_new(agent->config.tls_ca, error);
                if (!s->ca)
                        goto fail;
        }

        addr = g_inet_socket_address_new(inet, agent->config.port);
        limits.max_connections = agent->config.max_connections;
        limits.per_address = agent->config.max_connections_per_address;
        if (fy_listener_new(addr, &limits, &listener_ops, s, &s->listener, error) < 0)
                goto fail;
        s->port = fy_listener_port(s->listener);
        return s;
fail:
        agent_server_free(s);
        return NULL;
}

void agent_server_free(struct agent_server *s)
{
        if (!s)
                return;
        while (s->conns)
                conn_close(s->conns->data, "agent shutting down");
        fy_listener_free(s->listener);
        g_clear_object(&s->cert);
        g_clear_object(&s->ca);
        g_free(s);
}

guint16 agent_server_port(struct agent_server *s)
{
        return s->port;
}

void agent_server_broadcast(struct agent_server *s, const char *destination, const char *body)
{
        GList *next;

        for (GList *l = s->conns; l; l = next) {
                struct conn *c = l->data;
                GHashTableIter it;

                next = l->next;       /* a send may drop a slow connection from the list */
                gpointer k, v;

                if (!c->connected || c->closing)
                        continue;
                g_hash_table_iter_init(&it, c->subs);
                while (g_hash_table_iter_next(&it, &k, &v))
                        if (strcmp(v, destination) == 0)
                                conn_send_message(c, destination, k, body);
        }
}
