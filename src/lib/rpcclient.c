/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * JSON-RPC over STOMP client.
 *
 * A client has at most one connection (struct conn) at a time. Async GIO
 * operations hold a reference to the conn, never to the client: when the
 * connection fails or the client is freed the conn is detached (conn->client
 * = NULL) and cancelled, and whatever completes later only drops its
 * reference. User callbacks may call fy_rpc_client_call() or even
 * fy_rpc_client_free(); every main-loop entry point therefore holds an
 * internal reference to the client and stops once c->freed is set.
 *
 * States: IDLE → (first call) CONNECTING: TCP, TLS handshake, CONNECT →
 * (CONNECTED frame) CONNECTED: SUBSCRIBE, queued SENDs → (error, close, ERROR
 * frame) IDLE, with every pending call failed.
 */

#include <errno.h>
#include <string.h>

#include "error.h"
#include "jsonrpc.h"
#include "log.h"
#include "rpcclient.h"
#include "stomp.h"

#define READ_CHUNK (64 * 1024)

enum client_state {
        STATE_IDLE,
        STATE_CONNECTING,
        STATE_CONNECTED,
};

struct conn {
        gint ref;
        struct fy_rpc_client *client;  /* NULL once detached */
        GCancellable *cancel;
        GSocketConnection *socket;
        GIOStream *stream;             /* the socket or its TLS wrapper */
        GTlsCertificateFlags tls_errors;
        struct fy_stomp_parser *parser;
        GQueue outq;                   /* GBytes waiting to be written */
        GBytes *writing;               /* being written */
        guint8 buf[READ_CHUNK];
};

struct call {
        struct fy_rpc_client *client;
        char *id;
        char *method;
        char *body;                    /* serialized request until written */
        size_t body_len;
        char *flow_id;                 /* the caller's log correlation id when it called, or NULL */
        bool sent;
        bool urgent;                   /* queued ahead of the ordinary calls */
        GList link;                    /* in client->waiting while not sent */
        GSource *timer;
        unsigned timeout_ms;
        GError *error;                 /* rejected at once: delivered from an idle */
        fy_rpc_client_reply_fn cb;
        void *userdata;
};

struct fy_rpc_client {
        gint ref;                      /* internal; the caller's is dropped by fy_rpc_client_free() */
        bool freed;
        GMainContext *context;

        char *host;
        guint16 port;
        char *tls_cert, *tls_key, *tls_ca;
        GStrv tls_names;               /* identities the server's certificate may name: host first */
        unsigned connect_timeout_ms;
        unsigned heartbeat_ms;
        bool subscribe_events;
        fy_rpc_client_event_fn on_event;
        fy_rpc_client_disconnect_fn on_disconnect;
        void *userdata;

        enum client_state state;
        struct conn *conn;
        char *reply_queue;
        GSource *connect_timer;
        GSource *watchdog;             /* heart-beat receive check */
        gint64 last_rx_us;
        unsigned rx_timeout_ms;

        GHashTable *calls;             /* id → struct call: every accepted, uncompleted call */
        GQueue waiting;                /* calls not yet written: urgent ones, then the rest, each oldest first */
        unsigned urgent_waiting;       /* urgent calls at the head of waiting */
        size_t queued_bytes;           /* body bytes of the waiting calls */
        unsigned inflight;             /* written, no reply yet (timed-out ones included) */
        GHashTable *orphans;           /* ids of timed-out calls whose reply may still come */
        GQueue completing;             /* calls being completed outside the table */
        GQueue rejected;               /* calls refused at once, completed from an idle */
        GSource *rejected_idle;
};

static void client_ref(struct fy_rpc_client *c)
{
        c->ref++;
}

static void client_unref(struct fy_rpc_client *c)
{
        if (--c->ref > 0)
                return;
        g_hash_table_unref(c->calls);
        g_hash_table_unref(c->orphans);
        g_main_context_unref(c->context);
        g_free(c->host);
        g_free(c->tls_cert);
        g_free(c->tls_key);
        g_free(c->tls_ca);
        g_strfreev(c->tls_names);
        g_free(c);
}

static GSource *attach_timeout(struct fy_rpc_client *c, unsigned ms, GSourceFunc fn, gpointer data)
{
        GSource *source = g_timeout_source_new(ms);

        g_source_set_callback(source, fn, data, NULL);
        g_source_attach(source, c->context);
        return source;
}

static void source_clear(GSource **source)
{
        if (*source) {
                g_source_destroy(*source);
                g_source_unref(*source);
                *source = NULL;
        }
}

/* ---- connection objects ---- */

static struct conn *conn_ref(struct conn *conn)
{
        g_atomic_int_inc(&conn->ref);
        return conn;
}

static void conn_unref(struct conn *conn)
{
        if (!g_atomic_int_dec_and_test(&conn->ref))
                return;
        g_queue_clear_full(&conn->outq, (GDestroyNotify) g_bytes_unref);
        g_clear_pointer(&conn->writing, g_bytes_unref);
        g_clear_object(&conn->stream);
        g_clear_object(&conn->socket);
        g_clear_object(&conn->cancel);
        fy_stomp_parser_free(conn->parser);
        g_free(conn);
}

static struct conn *conn_new(struct fy_rpc_client *c)
{
        const struct fy_stomp_limits limits = { .max_frame = FY_RPC_CLIENT_MAX_FRAME };
        struct conn *conn = g_new0(struct conn, 1);

        conn->ref = 1;
        conn->client = c;
        conn->cancel = g_cancellable_new();
        conn->parser = fy_stomp_parser_new(&limits);
        g_queue_init(&conn->outq);
        return conn;
}

/* Returns the client if conn is still its connection, with a reference; else NULL. */
static struct fy_rpc_client *conn_client(struct conn *conn)
{
        struct fy_rpc_client *c = conn->client;

        if (!c || c->freed || c->conn != conn)
                return NULL;
        client_ref(c);
        return c;
}

static void conn_detach(struct conn *conn)
{
        conn->client = NULL;
        g_cancellable_cancel(conn->cancel);
        /* Tell the peer at once; the fd closes when the last pending operation lets go. */
        if (conn->socket)
                g_socket_shutdown(g_socket_connection_get_socket(conn->socket), TRUE, TRUE, NULL);
}

static void on_written(GObject *source, GAsyncResult *res, gpointer data);

static void conn_flush(struct conn *conn)
{
        if (conn->writing || g_queue_is_empty(&conn->outq) || !conn->stream)
                return;
        conn->writing = g_queue_pop_head(&conn->outq);
        g_output_stream_write_all_async(g_io_stream_get_output_stream(conn->stream),
                                        g_bytes_get_data(conn->writing, NULL),
                                        g_bytes_get_size(conn->writing),
                                        G_PRIORITY_DEFAULT, conn->cancel, on_written, conn_ref(conn));
}

static void conn_send(struct conn *conn, GBytes *frame)
{
        g_queue_push_tail(&conn->outq, frame);
        conn_flush(conn);
}

/* ---- calls ---- */

static void call_free(struct call *call)
{
        if (!call)
                return;
        if (call->timer) {
                g_source_destroy(call->timer);
                g_source_unref(call->timer);
        }
        g_clear_error(&call->error);
        g_free(call->id);
        g_free(call->method);
        g_free(call->flow_id);
        g_free(call->body);
        g_free(call);
}

/*
 * Runs the callback (exactly once per call) with the call's own error if it
 * has one, else error. The call is freed first: the callback may free the client.
 */
static void call_finish(struct call *call, json_t *result, const GError *error)
{
        g_autoptr(GError) own = g_steal_pointer(&call->error);
        fy_rpc_client_reply_fn cb = call->cb;
        void *userdata = call->userdata;

        call_free(call);
        if (cb)
                cb(own ? NULL : result, own ? own : error, userdata);
}

/* Takes a call out of the table and the waiting queue; it stays counted in flight if sent. */
static void call_detach(struct fy_rpc_client *c, struct call *call)
{
        if (!call->sent) {
                g_queue_unlink(&c->waiting, &call->link);
                c->queued_bytes -= call->body_len;
                if (call->urgent)
                        c->urgent_waiting--;
        }
        g_hash_table_steal(c->calls, call->id);
}

/* Completes every call in c->completing; a callback may free the client, which then drains the rest. */
static void complete_all(struct fy_rpc_client *c, const GError *error)
{
        struct call *call;

        while ((call = g_queue_pop_head(&c->completing)))
                call_finish(call, NULL, error);
}

static void fail_connection(struct fy_rpc_client *c, const GError *error);

/* Writes waiting calls while the agent's in-flight window has room. */
static void pump(struct fy_rpc_client *c)
{
        while (c->state == STATE_CONNECTED && c->inflight < FY_RPC_CLIENT_MAX_INFLIGHT &&
               !g_queue_is_empty(&c->waiting)) {
                GList *l = g_queue_pop_head_link(&c->waiting);
                struct call *call = l->data;
                /* VDSM's flow id travels in this header (yajsonrpc's Headers.FLOW_ID). */
                const char *headers[] = {
                        "destination", FY_RPC_CLIENT_REQUEST_DESTINATION,
                        "content-type", "application/json",
                        "reply-to", c->reply_queue,
                        call->flow_id ? "ovirtCorrelationId" : NULL, call->flow_id,
                        NULL,
                };

                c->queued_bytes -= call->body_len;
                if (call->urgent)
                        c->urgent_waiting--;
                call->sent = true;
                c->inflight++;
                g_queue_push_tail(&c->conn->outq,
                                  fy_stomp_frame_encode("SEND", headers, call->body, call->body_len));
                g_clear_pointer(&call->body, g_free);
        }
        if (c->conn)
                conn_flush(c->conn);
}

static gboolean on_call_timeout(gpointer data)
{
        struct call *call = data;
        struct fy_rpc_client *c = call->client;
        g_autoptr(GError) error = NULL;

        client_ref(c);
        call_detach(c, call);
        /* The agent still counts it against its window until it answers. */
        if (call->sent)
                g_hash_table_add(c->orphans, g_strdup(call->id));
        error = g_error_new(G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "%s: no reply from %s:%u within %u ms%s",
                            call->method, c->host, c->port, call->timeout_ms,
                            call->sent ? "" :
                            c->state == STATE_CONNECTING ? " (still connecting)" :
                            " (never sent: too many requests awaiting replies)");
        g_source_unref(call->timer);      /* the source is being dispatched: just drop our ref */
        call->timer = NULL;
        call_finish(call, NULL, error);
        client_unref(c);
        return G_SOURCE_REMOVE;
}

static gboolean on_rejected_idle(gpointer data)
{
        struct fy_rpc_client *c = data;

        client_ref(c);
        g_clear_pointer(&c->rejected_idle, g_source_unref);
        /* Calls rejected from these callbacks join the queue and are completed here too. */
        while (!c->freed && !g_queue_is_empty(&c->rejected))
                call_finish(g_queue_pop_head(&c->rejected), NULL, NULL);
        client_unref(c);
        return G_SOURCE_REMOVE;
}

G_GNUC_PRINTF(6, 7)
static void call_reject(struct fy_rpc_client *c, const char *method, fy_rpc_client_reply_fn cb, void *userdata,
                        int code, const char *fmt, ...)
{
        struct call *call = g_new0(struct call, 1);
        va_list ap;

        call->client = c;
        call->method = g_strdup(method);
        call->flow_id = g_strdup(fy_log_correlation_id());
        call->cb = cb;
        call->userdata = userdata;
        va_start(ap, fmt);
        call->error = g_error_new_valist(G_IO_ERROR, code, fmt, ap);
        va_end(ap);
        if (c->freed) {
                /* Called from a callback run by fy_rpc_client_free(), which drains this queue. */
                g_queue_push_tail(&c->completing, call);
                return;
        }
        g_queue_push_tail(&c->rejected, call);
        if (!c->rejected_idle) {
                c->rejected_idle = g_idle_source_new();
                g_source_set_callback(c->rejected_idle, on_rejected_idle, c, NULL);
                g_source_attach(c->rejected_idle, c->context);
        }
}

/* ---- connection state ---- */

/*
 * Drops the connection and fails every pending call with error. The next
 * call reconnects. Callers hold a client reference.
 */
static void fail_connection(struct fy_rpc_client *c, const GError *error)
{
        GHashTableIter it;
        gpointer value;

        if (c->state == STATE_IDLE)
                return;
        source_clear(&c->connect_timer);
        source_clear(&c->watchdog);
        conn_detach(c->conn);
        g_clear_pointer(&c->conn, conn_unref);
        g_clear_pointer(&c->reply_queue, g_free);
        c->state = STATE_IDLE;
        c->inflight = 0;
        g_hash_table_remove_all(c->orphans);

        /* Sent calls first (they are older than the waiting ones), then the queue in order. */
        g_hash_table_iter_init(&it, c->calls);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct call *call = value;

                if (call->sent) {
                        g_hash_table_iter_steal(&it);
                        g_queue_push_tail(&c->completing, call);
                }
        }
        while (!g_queue_is_empty(&c->waiting)) {
                struct call *call = g_queue_peek_head(&c->waiting);

                call_detach(c, call);
                g_queue_push_tail(&c->completing, call);
        }
        complete_all(c, error);
        if (!c->freed && c->on_disconnect)
                c->on_disconnect(error, c->userdata);
}

G_GNUC_PRINTF(3, 4)
static void fail_connection_printf(struct fy_rpc_client *c, int code, const char *fmt, ...)
{
        g_autoptr(GError) error = NULL;
        va_list ap;

        va_start(ap, fmt);
        error = g_error_new_valist(G_IO_ERROR, code, fmt, ap);
        va_end(ap);
        fail_connection(c, error);
}

static gboolean on_connect_timeout(gpointer data)
{
        struct fy_rpc_client *c = data;

        client_ref(c);
        g_clear_pointer(&c->connect_timer, g_source_unref);
        fail_connection_printf(c, G_IO_ERROR_TIMED_OUT, "connecting to %s:%u timed out after %u ms",
                               c->host, c->port, c->connect_timeout_ms);
        client_unref(c);
        return G_SOURCE_REMOVE;
}

static gboolean on_watchdog(gpointer data)
{
        struct fy_rpc_client *c = data;
        gint64 silent_ms = (g_get_monotonic_time() - c->last_rx_us) / 1000;

        if (silent_ms <= c->rx_timeout_ms)
                return G_SOURCE_CONTINUE;
        client_ref(c);
        g_clear_pointer(&c->watchdog, g_source_unref);
        fail_connection_printf(c, G_IO_ERROR_TIMED_OUT, "%s:%u sent nothing for %" G_GINT64_FORMAT
                               " ms, not even a heart-beat: connection presumed dead",
                               c->host, c->port, silent_ms);
        client_unref(c);
        return G_SOURCE_REMOVE;
}

static void send_subscribe(struct fy_rpc_client *c, const char *destination, const char *id)
{
        const char *headers[] = { "destination", destination, "ack", "auto", "id", id, NULL };

        g_queue_push_tail(&c->conn->outq, fy_stomp_frame_encode("SUBSCRIBE", headers, NULL, 0));
}

static void handle_connected(struct fy_rpc_client *c, struct fy_stomp_frame *f)
{
        const char *hb = fy_stomp_frame_get_header(f, "heart-beat");
        guint64 sx = 0;

        if (c->state != STATE_CONNECTING) {
                fail_connection_printf(c, G_IO_ERROR_INVALID_DATA, "%s:%u sent CONNECTED twice", c->host, c->port);
                return;
        }
        /* heart-beat:sx,sy — sx is how often the server will send; it sends max(sx, what we asked). */
        if (hb && c->heartbeat_ms > 0) {
                g_auto(GStrv) parts = g_strsplit(hb, ",", 3);

                if (g_strv_length(parts) != 2 ||
                    !g_ascii_string_to_unsigned(parts[0], 10, 0, 3600 * 1000, &sx, NULL)) {
                        fail_connection_printf(c, G_IO_ERROR_INVALID_DATA,
                                               "%s:%u sent a malformed heart-beat header '%.64s'",
                                               c->host, c->port, hb);
                        return;
                }
        }
        if (c->heartbeat_ms > 0 && sx > 0) {
                unsigned interval = MAX((unsigned) sx, c->heartbeat_ms);

                c->rx_timeout_ms = 2 * interval + 1000;
                c->last_rx_us = g_get_monotonic_time();
                c->watchdog = attach_timeout(c, interval, on_watchdog, c);
        }
        source_clear(&c->connect_timer);
        send_subscribe(c, c->reply_queue, "fy-replies");
        if (c->subscribe_events)
                send_subscribe(c, FY_RPC_CLIENT_EVENTS_DESTINATION, "fy-events");
        c->state = STATE_CONNECTED;
        pump(c);
}

static void handle_response(struct fy_rpc_client *c, json_t *msg)
{
        const char *id = json_string_value(json_object_get(msg, "id"));
        json_t *result = json_object_get(msg, "result");
        json_t *err = json_object_get(msg, "error");
        struct call *call;

        if (!id)
                return;         /* not ours: we only send string ids */
        call = g_hash_table_lookup(c->calls, id);
        if (!call || !call->sent) {
                if (g_hash_table_remove(c->orphans, id))
                        c->inflight--;
                return;
        }
        call_detach(c, call);
        c->inflight--;
        if (json_is_object(err)) {
                json_t *code = json_object_get(err, "code");
                const char *message = json_string_value(json_object_get(err, "message"));
                g_autoptr(GError) error = NULL;

                error = g_error_new_literal(FY_ERROR,
                                            json_is_integer(code) ? (int) json_integer_value(code) : FY_ERR_GENERAL,
                                            message ? message : "error reply without a message");
                call_finish(call, NULL, error);
        } else if (result) {
                call_finish(call, result, NULL);
        } else {
                g_autoptr(GError) error = g_error_new(G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                                      "%s: reply from %s:%u has neither result nor error",
                                                      call->method, c->host, c->port);
                call_finish(call, NULL, error);
        }
}

static void handle_json(struct fy_rpc_client *c, json_t *msg)
{
        json_t *method = json_object_get(msg, "method");

        if (json_is_string(method) && !json_object_get(msg, "id")) {
                json_t *params = json_object_get(msg, "params");
                g_autoptr(json_t) empty = NULL;

                if (!c->on_event)
                        return;
                if (!params)
                        params = empty = json_object();
                c->on_event(json_string_value(method), params, c->userdata);
                return;
        }
        handle_response(c, msg);
}

static void handle_message(struct fy_rpc_client *c, struct conn *conn, struct fy_stomp_frame *f)
{
        g_autoptr(json_t) msg = NULL;
        json_error_t jerr;

        msg = json_loadb(f->body, f->body_len, 0, &jerr);
        if (!msg) {
                fail_connection_printf(c, G_IO_ERROR_INVALID_DATA, "%s:%u sent malformed JSON: %s",
                                       c->host, c->port, jerr.text);
                return;
        }
        if (json_is_array(msg)) {
                /* We never send batches, but a reply array is still well-formed. */
                for (size_t i = 0; i < json_array_size(msg); i++) {
                        json_t *m = json_array_get(msg, i);

                        if (json_is_object(m))
                                handle_response(c, m);
                        if (c->freed || c->conn != conn)
                                return;
                }
        } else {
                handle_json(c, msg);
        }
        if (!c->freed && c->conn == conn)
                pump(c);
}

static void handle_frame(struct fy_rpc_client *c, struct conn *conn, struct fy_stomp_frame *f)
{
        if (strcmp(f->command, "CONNECTED") == 0) {
                handle_connected(c, f);
        } else if (strcmp(f->command, "ERROR") == 0) {
                const char *message = fy_stomp_frame_get_header(f, "message");

                if (!message)
                        message = f->body_len ? f->body : "no message";
                fail_connection_printf(c, G_IO_ERROR_FAILED, "%s:%u sent a STOMP ERROR: %.1024s",
                                       c->host, c->port, message);
        } else if (c->state != STATE_CONNECTED) {
                fail_connection_printf(c, G_IO_ERROR_INVALID_DATA, "%s:%u sent %.32s before CONNECTED",
                                       c->host, c->port, f->command);
        } else if (strcmp(f->command, "MESSAGE") == 0) {
                handle_message(c, conn, f);
        }
        /* RECEIPT and anything else: nothing to do, we ask for no receipts. */
}

static void conn_read(struct conn *conn);

static void on_read(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *conn = data;
        g_autoptr(GError) error = NULL;
        struct fy_rpc_client *c;
        gssize n;

        n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, &error);
        c = conn_client(conn);
        if (!c) {
                conn_unref(conn);
                return;
        }
        if (n < 0) {
                fail_connection_printf(c, error->domain == G_IO_ERROR ? error->code : G_IO_ERROR_FAILED,
                                       "reading from %s:%u: %s", c->host, c->port, error->message);
                goto out;
        }
        if (n == 0) {
                fail_connection_printf(c, G_IO_ERROR_CONNECTION_CLOSED, "%s:%u closed the connection",
                                       c->host, c->port);
                goto out;
        }
        c->last_rx_us = g_get_monotonic_time();
        /* A failed parser makes fy_stomp_parser_next() return the error below. */
        (void) fy_stomp_parser_feed(conn->parser, conn->buf, (size_t) n);
        for (;;) {
                g_autoptr(fy_stomp_frame) f = NULL;
                int r = fy_stomp_parser_next(conn->parser, &f);

                if (r < 0) {
                        fail_connection_printf(c, G_IO_ERROR_INVALID_DATA, "bad STOMP frame from %s:%u: %s",
                                               c->host, c->port, fy_stomp_parser_error(conn->parser));
                        goto out;
                }
                if (r == 0)
                        break;
                handle_frame(c, conn, f);
                if (c->freed || c->conn != conn)
                        goto out;
        }
        conn_read(conn);
out:
        client_unref(c);
        conn_unref(conn);
}

static void conn_read(struct conn *conn)
{
        g_input_stream_read_async(g_io_stream_get_input_stream(conn->stream), conn->buf, sizeof(conn->buf),
                                  G_PRIORITY_DEFAULT, conn->cancel, on_read, conn_ref(conn));
}

static void on_written(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *conn = data;
        g_autoptr(GError) error = NULL;
        struct fy_rpc_client *c;
        bool ok;

        ok = g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL, &error);
        g_clear_pointer(&conn->writing, g_bytes_unref);
        c = conn_client(conn);
        if (!c) {
                conn_unref(conn);
                return;
        }
        if (!ok)
                fail_connection_printf(c, error->domain == G_IO_ERROR ? error->code : G_IO_ERROR_FAILED,
                                       "writing to %s:%u: %s", c->host, c->port, error->message);
        else
                conn_flush(conn);
        client_unref(c);
        conn_unref(conn);
}

static void start_stomp(struct fy_rpc_client *c, struct conn *conn)
{
        char hb[32];
        const char *headers[] = { "accept-version", "1.2", "heart-beat", hb, NULL };

        g_snprintf(hb, sizeof(hb), "0,%u", c->heartbeat_ms);
        conn_read(conn);
        conn_send(conn, fy_stomp_frame_encode("CONNECT", headers, NULL, 0));
}

static const char tls_bad_identity_text[] = "the server's certificate is issued to another host: it names none of";

static const char *tls_errors_text(GTlsCertificateFlags flags)
{
        if (flags & G_TLS_CERTIFICATE_UNKNOWN_CA)
                return "the server's certificate is not issued by the CA in tls_ca";
        if (flags & G_TLS_CERTIFICATE_EXPIRED)
                return "the server's certificate has expired";
        if (flags & G_TLS_CERTIFICATE_NOT_ACTIVATED)
                return "the server's certificate is not valid yet";
        if (flags & G_TLS_CERTIFICATE_REVOKED)
                return "the server's certificate is revoked";
        if (flags & G_TLS_CERTIFICATE_INSECURE)
                return "the server's certificate uses an insecure algorithm";
        if (flags & G_TLS_CERTIFICATE_BAD_IDENTITY)
                return tls_bad_identity_text;   /* the caller appends the names tried */
        return "the server's certificate did not verify";
}

/*
 * glib-networking calls this only when verification against the address we
 * connected to reported a problem. The chain is verified again against
 * tls_ca for each accepted identity (the host's registered name, its
 * address), and accepted iff one verifies with no flag at all: since GLib
 * 2.72 the reported flags may be incomplete, so a lone BAD_IDENTITY cannot
 * be taken to mean "only the name is wrong".
 */
static gboolean on_accept_certificate(GTlsConnection *tls, GTlsCertificate *peer, GTlsCertificateFlags errors,
                                      gpointer data)
{
        struct conn *conn = data;
        struct fy_rpc_client *c = conn->client;
        GTlsDatabase *db = g_tls_connection_get_database(tls);
        GTlsCertificateFlags flags = G_TLS_CERTIFICATE_GENERIC_ERROR;

        if (!db || !c) {
                conn->tls_errors = G_TLS_CERTIFICATE_UNKNOWN_CA;
                return FALSE;
        }
        for (size_t i = 0; c->tls_names[i]; i++) {
                g_autoptr(GSocketConnectable) id = g_network_address_new(c->tls_names[i], c->port);
                GTlsCertificateFlags f = g_tls_database_verify_chain(db, peer, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER,
                                                                     id, g_tls_connection_get_interaction(tls),
                                                                     G_TLS_DATABASE_VERIFY_NONE, NULL, NULL);
                if (f == 0) {
                        conn->tls_errors = 0;
                        return TRUE;
                }
                /* Report the problem that is not about the name, if there is one. */
                if (i == 0 || (f & ~G_TLS_CERTIFICATE_BAD_IDENTITY))
                        flags = f;
        }
        conn->tls_errors = flags;
        return FALSE;
}

static void on_handshake(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *conn = data;
        g_autoptr(GError) error = NULL;
        struct fy_rpc_client *c;
        bool ok;

        ok = g_tls_connection_handshake_finish(G_TLS_CONNECTION(source), res, &error);
        c = conn_client(conn);
        if (!c) {
                conn_unref(conn);
                return;
        }
        if (!ok) {
                const char *why = conn->tls_errors ? tls_errors_text(conn->tls_errors) : NULL;
                g_autofree char *names = why == tls_bad_identity_text ? g_strjoinv(", ", c->tls_names) : NULL;

                fail_connection_printf(c, error->domain == G_IO_ERROR ? error->code : G_IO_ERROR_FAILED,
                                       "TLS handshake with %s:%u failed: %s%s%s%s%s", c->host, c->port, error->message,
                                       why ? ": " : "", why ? why : "", names ? " " : "", names ? names : "");
        } else {
                start_stomp(c, conn);
        }
        client_unref(c);
        conn_unref(conn);
}

static int start_tls(struct fy_rpc_client *c, struct conn *conn, GError **error)
{
        g_autoptr(GTlsCertificate) cert = NULL;
        g_autoptr(GTlsDatabase) db = NULL;
        g_autoptr(GIOStream) tls = NULL;
        g_autoptr(GSocketConnectable) identity = NULL;
        g_autoptr(GError) e = NULL;

        /* Read at every connect, so renewed certificates apply without a restart. */
        cert = g_tls_certificate_new_from_files(c->tls_cert, c->tls_key, &e);
        if (!cert) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot load tls_cert %s / tls_key %s: %s",
                            c->tls_cert, c->tls_key, e->message);
                return -EINVAL;
        }
        db = g_tls_file_database_new(c->tls_ca, &e);
        if (!db) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot load tls_ca %s: %s",
                            c->tls_ca, e->message);
                return -EINVAL;
        }
        identity = g_network_address_new(c->host, c->port);
        tls = g_tls_client_connection_new(G_IO_STREAM(conn->socket), identity, &e);
        if (!tls) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "TLS is unavailable (glib-networking): %s",
                            e->message);
                return -ENOTSUP;
        }
        g_tls_connection_set_certificate(G_TLS_CONNECTION(tls), cert);
        g_tls_connection_set_database(G_TLS_CONNECTION(tls), db);
        g_signal_connect(tls, "accept-certificate", G_CALLBACK(on_accept_certificate), conn);
        conn->stream = g_steal_pointer(&tls);
        g_tls_connection_handshake_async(G_TLS_CONNECTION(conn->stream), G_PRIORITY_DEFAULT, conn->cancel,
                                         on_handshake, conn_ref(conn));
        return 0;
}

static void on_tcp_connected(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *conn = data;
        g_autoptr(GSocketConnection) socket = NULL;
        g_autoptr(GError) error = NULL;
        struct fy_rpc_client *c;

        socket = g_socket_client_connect_finish(G_SOCKET_CLIENT(source), res, &error);
        c = conn_client(conn);
        if (!c) {
                conn_unref(conn);
                return;
        }
        if (!socket) {
                fail_connection_printf(c, error->domain == G_IO_ERROR ? error->code : G_IO_ERROR_FAILED,
                                       "%s:%u: %s", c->host, c->port, error->message);
                goto out;
        }
        conn->socket = g_steal_pointer(&socket);
        if (c->tls_cert) {
                if (start_tls(c, conn, &error) < 0)
                        fail_connection(c, error);
        } else {
                conn->stream = G_IO_STREAM(g_object_ref(conn->socket));
                start_stomp(c, conn);
        }
out:
        client_unref(c);
        conn_unref(conn);
}

static void start_connecting(struct fy_rpc_client *c)
{
        g_autoptr(GSocketClient) sc = g_socket_client_new();
        g_autoptr(GSocketConnectable) addr = g_network_address_new(c->host, c->port);
        g_autofree char *uuid = g_uuid_string_random();

        /* Agents are reached directly: a desktop proxy setting must not divert STOMP. */
        g_socket_client_set_enable_proxy(sc, FALSE);
        c->state = STATE_CONNECTING;
        c->conn = conn_new(c);
        c->reply_queue = g_strconcat("jms.queue.reply.", uuid, NULL);
        c->connect_timer = attach_timeout(c, c->connect_timeout_ms, on_connect_timeout, c);
        g_socket_client_connect_async(sc, addr, c->conn->cancel, on_tcp_connected, conn_ref(c->conn));
}

/* ---- public API ---- */

struct fy_rpc_client *fy_rpc_client_new(const struct fy_rpc_client_options *o,
                                        fy_rpc_client_event_fn on_event, void *userdata)
{
        struct fy_rpc_client *c = g_new0(struct fy_rpc_client, 1);

        c->ref = 1;
        c->context = g_main_context_ref_thread_default();
        c->host = g_strdup(o->host ? o->host : "localhost");
        c->port = o->port;
        c->tls_cert = g_strdup(o->tls_cert);
        c->tls_key = g_strdup(o->tls_key);
        c->tls_ca = g_strdup(o->tls_ca);
        {
                GStrvBuilder *b = g_strv_builder_new();

                g_strv_builder_add(b, c->host);
                for (size_t i = 0; o->tls_names && o->tls_names[i]; i++)
                        if (g_ascii_strcasecmp(o->tls_names[i], c->host) != 0)
                                g_strv_builder_add(b, o->tls_names[i]);
                c->tls_names = g_strv_builder_end(b);
                g_strv_builder_unref(b);
        }
        c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : FY_RPC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
        c->heartbeat_ms = o->heartbeat_ms;
        c->subscribe_events = o->subscribe_events;
        c->on_event = on_event;
        c->userdata = userdata;
        c->state = STATE_IDLE;
        c->calls = g_hash_table_new(g_str_hash, g_str_equal);
        c->orphans = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_queue_init(&c->waiting);
        g_queue_init(&c->completing);
        g_queue_init(&c->rejected);
        return c;
}

void fy_rpc_client_set_disconnect_fn(struct fy_rpc_client *c, fy_rpc_client_disconnect_fn on_disconnect)
{
        c->on_disconnect = on_disconnect;
}

void fy_rpc_client_free(struct fy_rpc_client *c)
{
        g_autoptr(GError) error = NULL;
        GHashTableIter it;
        gpointer value;

        if (!c || c->freed)
                return;
        c->freed = true;
        error = g_error_new(G_IO_ERROR, G_IO_ERROR_CANCELLED, "the client of %s:%u was shut down", c->host, c->port);
        source_clear(&c->connect_timer);
        source_clear(&c->watchdog);
        source_clear(&c->rejected_idle);
        if (c->conn) {
                conn_detach(c->conn);
                g_clear_pointer(&c->conn, conn_unref);
        }
        g_clear_pointer(&c->reply_queue, g_free);
        c->state = STATE_IDLE;

        /* completing may already hold calls a running fail_connection() had not reached. */
        g_hash_table_iter_init(&it, c->calls);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                g_hash_table_iter_steal(&it);
                g_queue_push_tail(&c->completing, value);
        }
        g_queue_init(&c->waiting);
        c->urgent_waiting = 0;
        c->queued_bytes = 0;
        while (!g_queue_is_empty(&c->rejected))
                g_queue_push_tail(&c->completing, g_queue_pop_head(&c->rejected));
        /* Each call keeps its own error if it has one (rejected), else CANCELLED. */
        complete_all(c, error);
        client_unref(c);
}

static void client_call(struct fy_rpc_client *c, const char *method, json_t *params, unsigned timeout_ms,
                        bool urgent, fy_rpc_client_reply_fn cb, void *userdata)
{
        g_autoptr(json_t) owned_params = params;
        g_autoptr(json_t) request = NULL;
        struct call *call;
        char *body;
        size_t len;

        if (c->freed) {
                call_reject(c, method, cb, userdata, G_IO_ERROR_CANCELLED, "the client of %s:%u was shut down",
                            c->host, c->port);
                return;
        }
        if (g_hash_table_size(c->calls) >= FY_RPC_CLIENT_MAX_PENDING + (urgent ? FY_RPC_CLIENT_URGENT_RESERVE : 0)) {
                call_reject(c, method, cb, userdata, G_IO_ERROR_BUSY,
                            "%s: too many calls pending on %s:%u (limit %u)",
                            method, c->host, c->port,
                            FY_RPC_CLIENT_MAX_PENDING + (urgent ? FY_RPC_CLIENT_URGENT_RESERVE : 0));
                return;
        }
        call = g_new0(struct call, 1);
        call->client = c;
        call->id = g_uuid_string_random();
        call->method = g_strdup(method);
        call->flow_id = g_strdup(fy_log_correlation_id());
        call->cb = cb;
        call->userdata = userdata;
        call->link.data = call;
        call->urgent = urgent;
        call->timeout_ms = timeout_ms ? timeout_ms : FY_RPC_CLIENT_DEFAULT_CALL_TIMEOUT_MS;

        request = json_pack("{s:s, s:s, s:s}", "jsonrpc", "2.0", "method", method, "id", call->id);
        if (owned_params)
                json_object_set(request, "params", owned_params);
        body = request ? json_dumps(request, JSON_COMPACT) : NULL;
        len = body ? strlen(body) : 0;
        /* An urgent call is let past the byte budget: the reserve above bounds how many there are. */
        if (!body || len > FY_RPC_CLIENT_MAX_REQUEST ||
            (!urgent && c->queued_bytes + len > FY_RPC_CLIENT_MAX_QUEUED_BYTES)) {
                if (!body)
                        call_reject(c, method, cb, userdata, G_IO_ERROR_INVALID_ARGUMENT,
                                    "%s: cannot serialize the request (invalid method name or params)", method);
                else if (len > FY_RPC_CLIENT_MAX_REQUEST)
                        call_reject(c, method, cb, userdata, G_IO_ERROR_MESSAGE_TOO_LARGE,
                                    "%s: request of %zu bytes exceeds the limit of %u bytes",
                                    method, len, FY_RPC_CLIENT_MAX_REQUEST);
                else
                        call_reject(c, method, cb, userdata, G_IO_ERROR_MESSAGE_TOO_LARGE,
                                    "%s: more than %u bytes of requests queued for %s:%u",
                                    method, FY_RPC_CLIENT_MAX_QUEUED_BYTES, c->host, c->port);
                free(body);
                call_free(call);
                return;
        }
        /* json_dumps allocates with malloc; keep g_free-able memory in the call. */
        call->body = g_strndup(body, len);
        call->body_len = len;
        free(body);

        call->timer = attach_timeout(c, call->timeout_ms, on_call_timeout, call);
        g_hash_table_insert(c->calls, call->id, call);
        if (urgent)
                g_queue_push_nth_link(&c->waiting, c->urgent_waiting++, &call->link);
        else
                g_queue_push_tail_link(&c->waiting, &call->link);
        c->queued_bytes += len;

        /* GIO starts async operations in the thread-default context: make it the client's. */
        g_main_context_push_thread_default(c->context);
        if (c->state == STATE_IDLE)
                start_connecting(c);
        else
                pump(c);
        g_main_context_pop_thread_default(c->context);
}

void fy_rpc_client_call(struct fy_rpc_client *c, const char *method, json_t *params,
                        unsigned timeout_ms, fy_rpc_client_reply_fn cb, void *userdata)
{
        client_call(c, method, params, timeout_ms, false, cb, userdata);
}

void fy_rpc_client_call_urgent(struct fy_rpc_client *c, const char *method, json_t *params,
                               unsigned timeout_ms, fy_rpc_client_reply_fn cb, void *userdata)
{
        client_call(c, method, params, timeout_ms, true, cb, userdata);
}

bool fy_rpc_client_is_connected(struct fy_rpc_client *c)
{
        return c->state == STATE_CONNECTED;
}
