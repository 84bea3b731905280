/* SPDX-License-Identifier: GPL-2.0-or-later */
/* See httpserve.h for what this adds to libsoup and why. */
#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httphead.h"
#include "httpserve.h"
#include "listener.h"

#define READ_AHEAD_MAX (64 * 1024)      /* bytes read for libsoup while a connection waits */
#define LINGER_MAX_BYTES (16 * 1024 * 1024)
#define LINGER_MS 30000
#define TRIM_DELAY_S 2                  /* quiet this long with no connection: give freed heap back */

/*
 * An input stream that hands out, first, bytes read ahead of it (by the
 * idle watch), then its base stream's. Closing it leaves the base open:
 * the connection's owner closes the socket.
 */
#define FY_TYPE_PEEK_STREAM (fy_peek_stream_get_type())
G_DECLARE_FINAL_TYPE(FyPeekStream, fy_peek_stream, FY, PEEK_STREAM, GInputStream)

struct _FyPeekStream {
        GInputStream parent;
        GInputStream *base;
        GByteArray *buf;
        bool eof;                       /* the base ended after buf was read ahead */
        /*
         * While libsoup reads a request head: the head is scanned (httphead.h)
         * and libsoup gets no byte past its end, so the next request's head
         * always starts with the next byte read here.
         */
        bool scanning;
        struct fy_http_head head;
        void (*bad_head)(void *data);   /* the head is refused: libsoup gets nothing more */
        void *bad_head_data;            /* cleared when the connection is freed */
};

static void fy_peek_stream_pollable_init(GPollableInputStreamInterface *iface);
G_DEFINE_TYPE_WITH_CODE(FyPeekStream, fy_peek_stream, G_TYPE_INPUT_STREAM,
                        G_IMPLEMENT_INTERFACE(G_TYPE_POLLABLE_INPUT_STREAM, fy_peek_stream_pollable_init))

static gssize take_buffered(FyPeekStream *p, void *buffer, gsize count)
{
        gsize n = MIN(count, p->buf->len);

        memcpy(buffer, p->buf->data, n);
        g_byte_array_remove_range(p->buf, 0, (guint) n);
        return (gssize) n;
}

/* Reading a head: what is read goes through buf and is scanned; libsoup gets at most up to the head's end. */
static gssize scan_read(FyPeekStream *p, void *buffer, gsize count, bool blocking, GCancellable *cancellable,
                        GError **error)
{
        gsize n;

        if (p->head.state == FY_HTTP_HEAD_BAD) {
                /* Refused: the connection's owner answers and closes it; libsoup must not read on. */
                if (blocking)
                        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, p->head.bad);
                else
                        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "refused");
                return -1;
        }
        if (!p->buf->len) {
                guint8 tmp[16384];
                gssize r;

                if (p->eof)
                        return 0;
                r = blocking ? g_input_stream_read(p->base, tmp, MIN(count, sizeof(tmp)), cancellable, error)
                             : g_pollable_input_stream_read_nonblocking(G_POLLABLE_INPUT_STREAM(p->base), tmp,
                                                                        MIN(count, sizeof(tmp)), NULL, error);
                if (r <= 0)
                        return r;
                g_byte_array_append(p->buf, tmp, (guint) r);
        }
        n = fy_http_head_scan(&p->head, p->buf->data, MIN(count, p->buf->len));
        if (p->head.state == FY_HTTP_HEAD_END)
                p->scanning = false;
        if (p->head.state == FY_HTTP_HEAD_BAD) {
                if (p->bad_head)
                        p->bad_head(p->bad_head_data);
                if (n == 0)
                        return scan_read(p, buffer, count, blocking, cancellable, error);
        }
        return take_buffered(p, buffer, n);
}

static gssize peek_read(GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable, GError **error)
{
        FyPeekStream *p = FY_PEEK_STREAM(stream);

        if (p->scanning)
                return scan_read(p, buffer, count, true, cancellable, error);
        if (p->buf->len)
                return take_buffered(p, buffer, count);
        if (p->eof)
                return 0;
        return g_input_stream_read(p->base, buffer, count, cancellable, error);
}

static gboolean peek_close(GInputStream *stream, GCancellable *cancellable, GError **error)
{
        return TRUE;
}

static gboolean peek_can_poll(GPollableInputStream *stream)
{
        return TRUE;
}

static gboolean peek_is_readable(GPollableInputStream *stream)
{
        FyPeekStream *p = FY_PEEK_STREAM(stream);

        if (p->scanning && p->head.state == FY_HTTP_HEAD_BAD)
                return FALSE;
        return p->buf->len || p->eof || g_pollable_input_stream_is_readable(G_POLLABLE_INPUT_STREAM(p->base));
}

static gssize peek_read_nonblocking(GPollableInputStream *stream, void *buffer, gsize count, GError **error)
{
        FyPeekStream *p = FY_PEEK_STREAM(stream);

        if (p->scanning)
                return scan_read(p, buffer, count, false, NULL, error);
        if (p->buf->len)
                return take_buffered(p, buffer, count);
        if (p->eof)
                return 0;
        return g_pollable_input_stream_read_nonblocking(G_POLLABLE_INPUT_STREAM(p->base), buffer, count, NULL, error);
}

/* Ready while bytes read ahead wait: the base socket may have nothing more to say. */
struct buffered_source {
        GSource source;
        FyPeekStream *stream;
};

static gboolean buffered_ready(FyPeekStream *p)
{
        if (p->scanning && p->head.state == FY_HTTP_HEAD_BAD)
                return FALSE;   /* refused: being closed */
        return p->buf->len > 0 || p->eof;
}

static gboolean buffered_prepare(GSource *source, gint *timeout)
{
        *timeout = -1;
        return buffered_ready(((struct buffered_source *) source)->stream);
}

static gboolean buffered_check(GSource *source)
{
        return buffered_ready(((struct buffered_source *) source)->stream);
}

static gboolean buffered_dispatch(GSource *source, GSourceFunc callback, gpointer data)
{
        return callback ? callback(data) : G_SOURCE_CONTINUE;
}

static void buffered_finalize(GSource *source)
{
        g_object_unref(((struct buffered_source *) source)->stream);
}

static GSourceFuncs buffered_funcs = {
        .prepare = buffered_prepare,
        .check = buffered_check,
        .dispatch = buffered_dispatch,
        .finalize = buffered_finalize,
};

static GSource *peek_create_source(GPollableInputStream *stream, GCancellable *cancellable)
{
        FyPeekStream *p = FY_PEEK_STREAM(stream);
        GSource *base = g_pollable_input_stream_create_source(G_POLLABLE_INPUT_STREAM(p->base), NULL);
        GSource *src = g_pollable_source_new_full(stream, base, cancellable);
        GSource *buffered = g_source_new(&buffered_funcs, sizeof(struct buffered_source));

        ((struct buffered_source *) buffered)->stream = g_object_ref(p);
        g_source_add_child_source(src, buffered);
        g_source_unref(buffered);
        g_source_unref(base);
        return src;
}

static void fy_peek_stream_pollable_init(GPollableInputStreamInterface *iface)
{
        iface->can_poll = peek_can_poll;
        iface->is_readable = peek_is_readable;
        iface->create_source = peek_create_source;
        iface->read_nonblocking = peek_read_nonblocking;
}

static void fy_peek_stream_finalize(GObject *object)
{
        FyPeekStream *p = FY_PEEK_STREAM(object);

        g_object_unref(p->base);
        g_byte_array_unref(p->buf);
        G_OBJECT_CLASS(fy_peek_stream_parent_class)->finalize(object);
}

static void fy_peek_stream_class_init(FyPeekStreamClass *klass)
{
        G_OBJECT_CLASS(klass)->finalize = fy_peek_stream_finalize;
        G_INPUT_STREAM_CLASS(klass)->read_fn = peek_read;
        G_INPUT_STREAM_CLASS(klass)->close_fn = peek_close;
}

static void fy_peek_stream_init(FyPeekStream *p)
{
        p->buf = g_byte_array_new();
}

static FyPeekStream *fy_peek_stream_new(GInputStream *base)
{
        FyPeekStream *p = g_object_new(FY_TYPE_PEEK_STREAM, NULL);

        p->base = g_object_ref(base);
        return p;
}

/*
 * An output stream that tells its connection when a write would block (the
 * client takes nothing: the write timer starts) and when one goes through
 * (it takes something: the timer stops). libsoup writes with non-blocking
 * writes and waits on this stream's source, so every stall is seen here,
 * whatever part of a response (status line, headers, body) is being written.
 */
#define FY_TYPE_WATCH_OUT (fy_watch_out_get_type())
G_DECLARE_FINAL_TYPE(FyWatchOut, fy_watch_out, FY, WATCH_OUT, GOutputStream)

struct conn;
static void conn_write_stalled(struct conn *c, bool stalled);

struct _FyWatchOut {
        GOutputStream parent;
        GOutputStream *base;
        struct conn *conn;              /* cleared when the connection is freed */
};

static void fy_watch_out_pollable_init(GPollableOutputStreamInterface *iface);
G_DEFINE_TYPE_WITH_CODE(FyWatchOut, fy_watch_out, G_TYPE_OUTPUT_STREAM,
                        G_IMPLEMENT_INTERFACE(G_TYPE_POLLABLE_OUTPUT_STREAM, fy_watch_out_pollable_init))

static void watch_out_note(FyWatchOut *w, gssize n, GError *error)
{
        if (!w->conn)
                return;
        if (n > 0)
                conn_write_stalled(w->conn, false);
        else if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                conn_write_stalled(w->conn, true);
}

static gssize watch_out_write(GOutputStream *stream, const void *buffer, gsize count, GCancellable *cancellable,
                              GError **error)
{
        FyWatchOut *w = FY_WATCH_OUT(stream);
        gssize n = g_output_stream_write(w->base, buffer, count, cancellable, error);

        if (n > 0 && w->conn)
                conn_write_stalled(w->conn, false);
        return n;
}

static gboolean watch_out_flush(GOutputStream *stream, GCancellable *cancellable, GError **error)
{
        return g_output_stream_flush(FY_WATCH_OUT(stream)->base, cancellable, error);
}

static gboolean watch_out_close(GOutputStream *stream, GCancellable *cancellable, GError **error)
{
        return g_output_stream_close(FY_WATCH_OUT(stream)->base, cancellable, error);
}

static gboolean watch_out_can_poll(GPollableOutputStream *stream)
{
        return TRUE;
}

static gboolean watch_out_is_writable(GPollableOutputStream *stream)
{
        return g_pollable_output_stream_is_writable(G_POLLABLE_OUTPUT_STREAM(FY_WATCH_OUT(stream)->base));
}

static gssize watch_out_write_nonblocking(GPollableOutputStream *stream, const void *buffer, gsize count,
                                          GError **error)
{
        FyWatchOut *w = FY_WATCH_OUT(stream);
        g_autoptr(GError) local = NULL;
        gssize n = g_pollable_output_stream_write_nonblocking(G_POLLABLE_OUTPUT_STREAM(w->base), buffer, count,
                                                              NULL, &local);

        watch_out_note(w, n, local);
        if (n < 0)
                g_propagate_error(error, g_steal_pointer(&local));
        return n;
}

static GSource *watch_out_create_source(GPollableOutputStream *stream, GCancellable *cancellable)
{
        FyWatchOut *w = FY_WATCH_OUT(stream);
        g_autoptr(GSource) base = g_pollable_output_stream_create_source(G_POLLABLE_OUTPUT_STREAM(w->base), NULL);

        return g_pollable_source_new_full(stream, base, cancellable);
}

static void fy_watch_out_pollable_init(GPollableOutputStreamInterface *iface)
{
        iface->can_poll = watch_out_can_poll;
        iface->is_writable = watch_out_is_writable;
        iface->create_source = watch_out_create_source;
        iface->write_nonblocking = watch_out_write_nonblocking;
}

static void fy_watch_out_finalize(GObject *object)
{
        g_object_unref(FY_WATCH_OUT(object)->base);
        G_OBJECT_CLASS(fy_watch_out_parent_class)->finalize(object);
}

static void fy_watch_out_class_init(FyWatchOutClass *klass)
{
        G_OBJECT_CLASS(klass)->finalize = fy_watch_out_finalize;
        G_OUTPUT_STREAM_CLASS(klass)->write_fn = watch_out_write;
        G_OUTPUT_STREAM_CLASS(klass)->flush = watch_out_flush;
        G_OUTPUT_STREAM_CLASS(klass)->close_fn = watch_out_close;
}

static void fy_watch_out_init(FyWatchOut *w)
{
}

static FyWatchOut *fy_watch_out_new(GOutputStream *base, struct conn *c)
{
        FyWatchOut *w = g_object_new(FY_TYPE_WATCH_OUT, NULL);

        w->base = g_object_ref(base);
        w->conn = c;
        return w;
}

/* ---- connections ---- */

enum conn_state {
        CONN_HANDSHAKE,                 /* TLS handshake, before libsoup has it */
        CONN_HEADERS,                   /* reading a request's headers */
        CONN_BODY,                      /* reading a request's body */
        CONN_HANDLING,                  /* handler and response */
        CONN_IDLE,                      /* keep-alive, between requests */
};

struct conn {
        struct fy_http_server *s;
        GSocket *sock;
        GIOStream *base;                /* GSocketConnection */
        GIOStream *tls;                 /* or NULL */
        FyPeekStream *in;
        FyWatchOut *out;
        GIOStream *wrapper;             /* what libsoup reads and writes */
        GSocketAddress *remote;         /* the key: libsoup hands this very object back */
        GCancellable *cancel;
        SoupServerMessage *msg;         /* the request in progress, or the last one */
        enum conn_state state;
        guint timer;
        guint write_timer;              /* a write of the response has been blocked since it was armed */
        guint body_timer;               /* the body's deadline, or its rate check */
        gint64 body_start;              /* monotonic µs: the headers were read */
        guint64 body_bytes;
        GSource *watch;                 /* idle: reads ahead at a priority above libsoup's */
        bool stealing;                  /* taking it from libsoup: its "disconnected" is ours */
        bool handshaking;               /* a handshake callback is due: it frees c */
        bool orphan;                    /* closed during the handshake; the callback only frees */
};

struct fy_http_server {
        SoupServer *soup;
        struct fy_listener *listener;
        GTlsCertificate *cert;
        struct fy_http_limits limits;
        fy_http_log_fn log;
        void *log_data;
        GHashTable *conns;              /* remote GSocketAddress * → struct conn *, once libsoup has it */
        GHashTable *all;                /* every struct conn * */
        GSocket *dummy, *dummy_peer;
        gulong sig_started, sig_finished, sig_aborted;
        guint trim;                     /* a malloc_trim() due once quiet */
        GHashTable *refusals;           /* reason key (GUINT_TO_POINTER) → struct refusal_log * */
};

/* Refusals are logged at most once per reason per REFUSAL_LOG_US, with how many were not. */
#define REFUSAL_LOG_US (10 * G_USEC_PER_SEC)

struct refusal_log {
        gint64 last;                    /* monotonic µs of the last line logged */
        unsigned suppressed;            /* refused since, not logged */
};

/* Reasons that share a status: the connection caps before any request. */
enum { REFUSED_CAP = 1000, REFUSED_HANDSHAKE };

static char *sock_peer(GSocket *sock)
{
        g_autoptr(GSocketAddress) addr = sock ? g_socket_get_remote_address(sock, NULL) : NULL;
        g_autofree char *ip = NULL;

        if (!addr || !G_IS_INET_SOCKET_ADDRESS(addr))
                return g_strdup("a client");
        ip = g_inet_address_to_string(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(addr)));
        return g_strdup_printf("%s:%u", ip, g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(addr)));
}

/*
 * One log line for a refusal (key: its reason, a status or REFUSED_*), unless
 * one for that reason went out less than 10 s ago: a hostile client must not
 * be able to flood the log, nor refusals go unseen.
 */
static void log_refusal(struct fy_http_server *s, guint key, GSocket *sock, const char *what, const char *detail)
{
        struct refusal_log *r;
        gint64 now = g_get_monotonic_time();
        g_autofree char *peer = NULL;
        g_autofree char *more = NULL;
        g_autofree char *message = NULL;

        if (!s->log)
                return;
        r = g_hash_table_lookup(s->refusals, GUINT_TO_POINTER(key));
        if (!r) {
                r = g_new0(struct refusal_log, 1);
                g_hash_table_insert(s->refusals, GUINT_TO_POINTER(key), r);
        } else if (now - r->last < REFUSAL_LOG_US) {
                r->suppressed++;
                return;
        }
        peer = sock_peer(sock);
        if (r->suppressed)
                more = g_strdup_printf(" (and %u more for this reason since the last such line, not logged)",
                                       r->suppressed);
        message = g_strdup_printf("refused %s: %s: %s%s", peer, what, detail, more ? more : "");
        s->log(s->log_data, key == REFUSED_CAP ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE, message);
        r->last = now;
        r->suppressed = 0;
}

static GIOStream *conn_stream(struct conn *c)
{
        return c->tls ? c->tls : c->base;
}

static void conn_stop_timers(struct conn *c)
{
        if (c->timer) {
                g_source_remove(c->timer);
                c->timer = 0;
        }
        if (c->write_timer) {
                g_source_remove(c->write_timer);
                c->write_timer = 0;
        }
        if (c->body_timer) {
                g_source_remove(c->body_timer);
                c->body_timer = 0;
        }
        if (c->watch) {
                g_source_destroy(c->watch);
                g_clear_pointer(&c->watch, g_source_unref);
        }
}

static void conn_forget_msg(struct conn *c)
{
        if (!c->msg)
                return;
        g_signal_handlers_disconnect_by_data(c->msg, c);
        g_clear_object(&c->msg);
}

/*
 * A burst of connections (500 clients at once) leaves the heap's high-water
 * mark behind: glibc keeps the freed memory of each connection's buffers and
 * libsoup objects in its free lists, scattered between live blocks, so RSS
 * stayed ~30 % above the baseline for good (bench/load). Once no connection
 * is left for TRIM_DELAY_S, malloc_trim() returns those free pages to the
 * kernel (it madvises free whole pages of every arena, not only the top).
 */
static gboolean on_quiet(gpointer data)
{
        struct fy_http_server *s = data;

        s->trim = 0;
        if (g_hash_table_size(s->all) == 0)
                (void) malloc_trim(0);
        return G_SOURCE_REMOVE;
}

/* Frees c; libsoup no longer has the connection. linger: close after reading what the peer still sends. */
static void conn_free(struct conn *c, bool linger)
{
        struct fy_http_server *s = c->s;

        conn_stop_timers(c);
        conn_forget_msg(c);
        g_hash_table_remove(s->all, c);
        if (g_hash_table_size(s->all) == 0 && !s->trim)
                s->trim = g_timeout_add_seconds(TRIM_DELAY_S, on_quiet, s);
        if (c->remote)
                g_hash_table_remove(s->conns, c->remote);
        fy_listener_release(s->listener, c->sock);
        if (c->handshaking) {
                /* The handshake's callback still has c: it frees it (the server may be gone by then). */
                (void) g_socket_close(c->sock, NULL);
                c->orphan = true;
                g_cancellable_cancel(c->cancel);
                return;
        }
        if (linger) {
                fy_socket_linger_close(c->sock, G_OBJECT(conn_stream(c)), LINGER_MAX_BYTES, LINGER_MS, NULL, NULL);
        } else {
                /* The socket itself: closing a TLS stream would write close_notify and could block. */
                (void) g_socket_close(c->sock, NULL);
        }
        if (c->out)
                c->out->conn = NULL;    /* libsoup may still hold the streams */
        if (c->in)
                c->in->bad_head = NULL;
        g_clear_object(&c->wrapper);
        g_clear_object(&c->out);
        g_clear_object(&c->in);
        g_clear_object(&c->tls);
        g_clear_object(&c->base);
        g_clear_object(&c->remote);
        g_clear_object(&c->cancel);
        g_object_unref(c->sock);
        g_free(c);
}

/* Takes the connection back from libsoup (it forgets it at once). */
static void conn_steal(struct conn *c)
{
        SoupServerMessage *msg = c->msg ? g_object_ref(c->msg) : NULL;
        GIOStream *stream;

        conn_stop_timers(c);
        if (!msg)
                return;
        c->stealing = true;
        conn_forget_msg(c);
        stream = soup_server_message_steal_connection(msg);
        if (stream)
                g_object_unref(stream);
        g_object_unref(msg);
}

static char *answer_text(struct fy_http_server *s, guint status, const char *extra_headers,
                         const char *content_type, const char *body)
{
        return g_strdup_printf("HTTP/1.1 %u %s\r\nConnection: close\r\n%s"
                               "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n%s",
                               status, soup_status_get_phrase(status), extra_headers ? extra_headers : "",
                               content_type, strlen(body), body);
}

static char *fault_body(struct fy_http_server *s, guint status, const char *detail, const char **ret_type)
{
        if (s->limits.fault)
                return s->limits.fault(status, detail, ret_type);
        *ret_type = "text/plain";
        return g_strconcat(detail, "\n", NULL);
}

/* Writes a short answer without blocking (it fits in the socket buffer of a fresh or idle connection). */
static void write_answer(GIOStream *stream, const char *answer)
{
        GOutputStream *out = g_io_stream_get_output_stream(stream);

        if (G_IS_POLLABLE_OUTPUT_STREAM(out))
                (void) g_pollable_output_stream_write_nonblocking(G_POLLABLE_OUTPUT_STREAM(out), answer,
                                                                   strlen(answer), NULL, NULL);
}

static void conn_refuse(struct conn *c, guint status, const char *extra_headers, const char *content_type,
                        const char *body)
{
        g_autofree char *answer = answer_text(c->s, status, extra_headers, content_type, body);

        conn_steal(c);
        write_answer(conn_stream(c), answer);
        conn_free(c, true);
}

static void conn_refuse_fault(struct conn *c, guint status, const char *detail)
{
        const char *type;
        g_autofree char *body = fault_body(c->s, status, detail, &type);
        g_autofree char *what = g_strdup_printf("%u %s", status, soup_status_get_phrase(status));

        /* Refused below the handlers (they log their own): timeouts, unparsable or oversized heads. */
        log_refusal(c->s, status, c->sock, what, detail);
        conn_refuse(c, status, NULL, type, body);
}

static gboolean on_timer(gpointer data)
{
        struct conn *c = data;

        c->timer = 0;
        switch (c->state) {
        case CONN_HANDSHAKE:
                g_cancellable_cancel(c->cancel);        /* the handshake's callback frees it */
                break;
        case CONN_HEADERS:
                conn_refuse_fault(c, SOUP_STATUS_REQUEST_TIMEOUT, "the request's headers took too long; "
                                  "send them at once");
                break;
        case CONN_BODY:
                conn_refuse_fault(c, SOUP_STATUS_REQUEST_TIMEOUT, "the request body stalled; "
                                  "send it without pauses");
                break;
        case CONN_IDLE:
                conn_steal(c);
                conn_free(c, false);
                break;
        case CONN_HANDLING:
                break;
        }
        return G_SOURCE_REMOVE;
}

/*
 * A response the client has taken nothing of for the write timeout. Shut the
 * socket down rather than steal it mid-write: libsoup's pending write fails,
 * it disconnects the message and on_msg_disconnected frees c. Only a blocked
 * write arms this timer, so no other timeout (idle, headers, body) can be the
 * one running while libsoup waits to write: libsoup reads nothing then.
 */
static gboolean on_write_timer(gpointer data)
{
        struct conn *c = data;

        c->write_timer = 0;
        if (c->s->log) {
                g_autofree char *peer = sock_peer(c->sock);
                g_autofree char *message = NULL;

                message = g_strdup_printf("closed the connection of %s: its client read nothing of its "
                                          "response for the write timeout (%u s)", peer,
                                          c->s->limits.write_timeout_s);
                c->s->log(c->s->log_data, G_LOG_LEVEL_INFO, message);
        }
        (void) g_socket_shutdown(c->sock, TRUE, TRUE, NULL);
        return G_SOURCE_REMOVE;
}

static void conn_write_stalled(struct conn *c, bool stalled)
{
        if (!stalled) {
                if (c->write_timer) {
                        g_source_remove(c->write_timer);
                        c->write_timer = 0;
                }
                return;
        }
        if (!c->write_timer && c->s->limits.write_timeout_s)
                c->write_timer = g_timeout_add_seconds(c->s->limits.write_timeout_s, on_write_timer, c);
}

static void conn_set_timer(struct conn *c, unsigned seconds)
{
        if (c->timer)
                g_source_remove(c->timer);
        c->timer = seconds ? g_timeout_add_seconds(seconds, on_timer, c) : 0;
}

static struct conn *conn_of(struct fy_http_server *s, SoupServerMessage *msg)
{
        return g_hash_table_lookup(s->conns, soup_server_message_get_remote_address(msg));
}

/* Idle: what arrives is read here first, so an end of stream is seen here and not by libsoup. */
static gboolean on_idle_readable(GSocket *sock, GIOCondition cond, gpointer data)
{
        struct conn *c = data;
        GInputStream *in = g_io_stream_get_input_stream(conn_stream(c));
        g_autoptr(GError) error = NULL;
        guint8 buf[16384];
        gsize room = READ_AHEAD_MAX - MIN(c->in->buf->len, READ_AHEAD_MAX);
        gssize n;

        if (room == 0) {
                /* Never beyond READ_AHEAD_MAX: libsoup has a request (or garbage) to read first. */
                g_clear_pointer(&c->watch, g_source_unref);
                return G_SOURCE_REMOVE;
        }
        n = g_pollable_input_stream_read_nonblocking(G_POLLABLE_INPUT_STREAM(in), buf, MIN(sizeof(buf), room),
                                                     NULL, &error);
        if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                return G_SOURCE_CONTINUE;
        if (n > 0) {
                g_byte_array_append(c->in->buf, buf, (guint) n);
                if (c->in->buf->len < READ_AHEAD_MAX)
                        return G_SOURCE_CONTINUE;
                /* libsoup has plenty to read now; it will start the request. */
                g_clear_pointer(&c->watch, g_source_unref);
                return G_SOURCE_REMOVE;
        }
        if (n == 0 && c->in->buf->len) {
                /* A request, then the end: libsoup serves it, then sees the end itself (not idle then). */
                c->in->eof = true;
                g_clear_pointer(&c->watch, g_source_unref);
                return G_SOURCE_REMOVE;
        }
        /* The client closed (or broke) the connection between requests. */
        g_clear_pointer(&c->watch, g_source_unref);
        conn_steal(c);
        conn_free(c, false);
        return G_SOURCE_REMOVE;
}

static void on_msg_disconnected(SoupServerMessage *msg, gpointer data)
{
        struct conn *c = data;

        if (c->stealing)
                return;
        conn_free(c, false);            /* libsoup closed it (Connection: close, error, shutdown) */
}

static void conn_start_body(struct conn *c);

static void on_got_headers(SoupServerMessage *msg, gpointer data)
{
        struct conn *c = data;
        SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
        SoupEncoding enc = soup_message_headers_get_encoding(h);

        /* Parsed: the fault set in on_request_started is not this request's answer... */
        soup_message_body_truncate(soup_server_message_get_response_body(msg));
        soup_message_headers_remove(soup_server_message_get_response_headers(msg), "Content-Type");
        if (soup_server_message_get_status(msg) >= 400) {
                /* ...unless libsoup refused it after parsing (a path with "..", a scheme that does not match). */
                const char *type;
                g_autofree char *body = fault_body(c->s, soup_server_message_get_status(msg),
                                                   "the request's path is not acceptable (it decodes to a "
                                                   "'..' segment, or the scheme does not match the connection)",
                                                   &type);

                soup_server_message_set_response(msg, type, SOUP_MEMORY_COPY, body, strlen(body));
        }

        c->in->scanning = false;
        /*
         * libsoup reads a chunked body by lines, in blocks that may take in the
         * start of a pipelined request, which would then escape the head scan:
         * the connection ends after a chunked request.
         */
        if (enc == SOUP_ENCODING_CHUNKED)
                soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection", "close");
        if (enc == SOUP_ENCODING_CHUNKED ||
            (enc == SOUP_ENCODING_CONTENT_LENGTH && soup_message_headers_get_content_length(h) > 0)) {
                conn_start_body(c);
        } else {
                c->state = CONN_HANDLING;
                conn_set_timer(c, 0);
        }
}

static void on_got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer data)
{
        struct conn *c = data;

        c->body_bytes += g_bytes_get_size(chunk);
        if (c->state == CONN_BODY)
                conn_set_timer(c, c->s->limits.body_timeout_s);
}

/* A body that trickles (a byte every few seconds, never a long pause): its total time is bounded too. */
static gboolean on_body_deadline(gpointer data)
{
        struct conn *c = data;
        g_autofree char *detail = g_strdup_printf("the request body did not arrive within %u s in all; "
                                                  "send it at once", c->s->limits.body_deadline_s);

        c->body_timer = 0;
        conn_refuse_fault(c, SOUP_STATUS_REQUEST_TIMEOUT, detail);
        return G_SOURCE_REMOVE;
}

/* Long bodies (image uploads): no deadline, but a minimum average rate once the first pause allowance passed. */
static gboolean on_body_rate(gpointer data)
{
        struct conn *c = data;
        gint64 elapsed = (g_get_monotonic_time() - c->body_start) / G_USEC_PER_SEC;
        g_autofree char *detail = NULL;

        if (elapsed < (gint64) c->s->limits.body_timeout_s ||
            c->body_bytes >= (guint64) c->s->limits.body_min_rate * (guint64) elapsed)
                return G_SOURCE_CONTINUE;
        detail = g_strdup_printf("the request body arrives slower than %u bytes/s (%" G_GUINT64_FORMAT
                                 " bytes in %" G_GINT64_FORMAT " s)", c->s->limits.body_min_rate,
                                 c->body_bytes, elapsed);
        c->body_timer = 0;
        conn_refuse_fault(c, SOUP_STATUS_REQUEST_TIMEOUT, detail);
        return G_SOURCE_REMOVE;
}

static void conn_start_body(struct conn *c)
{
        c->state = CONN_BODY;
        conn_set_timer(c, c->s->limits.body_timeout_s);
        c->body_start = g_get_monotonic_time();
        c->body_bytes = 0;
        if (c->body_timer)
                g_source_remove(c->body_timer);
        c->body_timer = 0;
        if (c->s->limits.body_deadline_s)
                c->body_timer = g_timeout_add_seconds(c->s->limits.body_deadline_s, on_body_deadline, c);
        else if (c->s->limits.body_min_rate)
                c->body_timer = g_timeout_add_seconds(1, on_body_rate, c);
}

static void on_got_body(SoupServerMessage *msg, gpointer data)
{
        struct conn *c = data;

        c->state = CONN_HANDLING;
        conn_set_timer(c, 0);
        if (c->body_timer) {
                g_source_remove(c->body_timer);
                c->body_timer = 0;
        }
}

static gboolean on_bad_head(gpointer data)
{
        struct conn *c = data;

        c->timer = 0;
        conn_refuse_fault(c, c->in->head.status, c->in->head.bad);
        return G_SOURCE_REMOVE;
}

/* From the stream, while libsoup reads: refuse from the main loop, above libsoup's priority. */
static void conn_bad_head(void *data)
{
        struct conn *c = data;

        if (c->timer)
                g_source_remove(c->timer);
        c->timer = g_idle_add_full(G_PRIORITY_HIGH, on_bad_head, c, NULL);
}

static void on_request_started(SoupServer *soup, SoupServerMessage *msg, gpointer data)
{
        struct conn *c = conn_of(data, msg);

        if (!c)
                return;
        conn_stop_timers(c);
        conn_forget_msg(c);
        fy_http_head_reset(&c->in->head);
        c->in->scanning = true;
        c->msg = g_object_ref(msg);
        g_signal_connect(msg, "disconnected", G_CALLBACK(on_msg_disconnected), c);
        g_signal_connect_after(msg, "got-headers", G_CALLBACK(on_got_headers), c);
        g_signal_connect(msg, "got-chunk", G_CALLBACK(on_got_chunk), c);
        g_signal_connect(msg, "got-body", G_CALLBACK(on_got_body), c);
        c->state = CONN_HEADERS;
        conn_set_timer(c, c->s->limits.header_timeout_s);
        /*
         * If libsoup cannot parse the request (request line, header syntax, a
         * Content-Length it cannot read, HTTP version) it answers by itself,
         * with an empty body; this body is sent then. Once the headers are
         * parsed it goes (on_got_headers).
         */
        {
                const char *type;
                g_autofree char *body = fault_body(c->s, SOUP_STATUS_BAD_REQUEST,
                                                   "the request could not be parsed: check its request line "
                                                   "and headers", &type);

                soup_server_message_set_response(msg, type, SOUP_MEMORY_COPY, body, strlen(body));
        }
}

static gboolean on_drop_now(gpointer data)
{
        struct conn *c = data;

        c->timer = 0;
        conn_steal(c);
        conn_free(c, false);
        return G_SOURCE_REMOVE;
}

/*
 * A response was sent. If libsoup keeps the connection it waits for the next
 * request from now on (if not, it disconnects right after this signal and
 * on_msg_disconnected frees c).
 */
static void on_request_done(SoupServer *soup, SoupServerMessage *msg, gpointer data)
{
        struct conn *c = conn_of(data, msg);

        if (!c || c->msg != msg)
                return;
        conn_stop_timers(c);
        c->state = CONN_IDLE;
        if (c->in->eof) {
                /* The client ended its side after its request: nothing more will come. */
                c->timer = g_timeout_add_full(G_PRIORITY_HIGH, 0, on_drop_now, c, NULL);
                return;
        }
        conn_set_timer(c, c->s->limits.idle_timeout_s);
        if (c->in->buf->len >= READ_AHEAD_MAX) {
                /*
                 * A pipelining client: libsoup reads the next request from what is
                 * buffered (its source is ready while it is), and an end of stream
                 * after it reaches libsoup within a request, where it is handled.
                 * Reading more here would buffer without bound for a client that
                 * never reads its responses: left unread, its bytes stay in the
                 * kernel and its sends stall (back-pressure), while libsoup's
                 * blocked writes start the write timer.
                 */
                return;
        }
        c->watch = g_socket_create_source(c->sock, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
        /* Above libsoup's own source: it must never read the end of an idle connection (see httpserve.h). */
        g_source_set_priority(c->watch, G_PRIORITY_HIGH);
        g_source_set_callback(c->watch, (GSourceFunc) (void (*)(void)) on_idle_readable, c, NULL);
        g_source_attach(c->watch, g_main_context_get_thread_default());
}

static void hand_to_soup(struct conn *c)
{
        struct fy_http_server *s = c->s;
        g_autoptr(GSocketAddress) local = g_socket_get_local_address(c->sock, NULL);
        g_autoptr(GError) error = NULL;

        c->remote = g_socket_get_remote_address(c->sock, NULL);
        if (!local || !c->remote) {
                conn_free(c, false);
                return;
        }
        c->in = fy_peek_stream_new(g_io_stream_get_input_stream(conn_stream(c)));
        c->in->bad_head = conn_bad_head;
        c->in->bad_head_data = c;
        c->out = fy_watch_out_new(g_io_stream_get_output_stream(conn_stream(c)), c);
        c->wrapper = g_simple_io_stream_new(G_INPUT_STREAM(c->in), G_OUTPUT_STREAM(c->out));
        g_hash_table_insert(s->conns, c->remote, c);
        c->state = CONN_HEADERS;
        /* libsoup emits request-started for the first request right here (on_request_started). */
        if (!soup_server_accept_iostream(s->soup, c->wrapper, local, c->remote, &error))
                conn_free(c, false);
}

static void on_handshake(GObject *source, GAsyncResult *res, gpointer data)
{
        struct conn *c = data;
        g_autoptr(GError) error = NULL;
        gboolean ok = g_tls_connection_handshake_finish(G_TLS_CONNECTION(source), res, &error);

        c->handshaking = false;
        if (c->orphan) {
                g_clear_object(&c->tls);
                g_clear_object(&c->base);
                g_clear_object(&c->cancel);
                g_object_unref(c->sock);
                g_free(c);
                return;
        }
        if (!ok) {
                g_autofree char *why = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED) ?
                        g_strdup_printf("not done within %u s", c->s->limits.handshake_timeout_s) :
                        g_strdup(error->message);

                log_refusal(c->s, REFUSED_HANDSHAKE, c->sock, "TLS handshake", why);
                conn_free(c, false);    /* a failed or timed-out handshake; the client sees the close */
                return;
        }
        conn_set_timer(c, 0);
        hand_to_soup(c);
}

static void on_accepted(void *data, GSocket *sock)
{
        struct fy_http_server *s = data;
        struct conn *c = g_new0(struct conn, 1);
        g_autoptr(GError) error = NULL;

        c->s = s;
        c->sock = g_object_ref(sock);
        g_hash_table_add(s->all, c);
        c->base = G_IO_STREAM(g_socket_connection_factory_create_connection(sock));
        g_socket_set_option(sock, IPPROTO_TCP, TCP_NODELAY, TRUE, NULL);
        if (!s->cert) {
                hand_to_soup(c);
                return;
        }
        /*
         * No trust database: these endpoints ask for no client certificate (they authenticate by token or
         * ticket; the agent's mutual-TLS STOMP server is src/agent/server.c). With the default one, the
         * GnuTLS backend loads the system trust store into every connection's credentials at construction:
         * 3.7 MiB and ~40 ms of CPU per accepted connection (41 KiB without). Hence NULL from the start,
         * not set afterwards (that frees the memory but the loading is already paid).
         */
        c->tls = g_initable_new(g_tls_backend_get_server_connection_type(g_tls_backend_get_default()), NULL, &error,
                                "base-io-stream", c->base, "certificate", s->cert, "database", NULL, NULL);
        if (!c->tls) {
                conn_free(c, false);
                return;
        }
        g_object_set(c->tls, "require-close-notify", FALSE, NULL);
        c->state = CONN_HANDSHAKE;
        c->cancel = g_cancellable_new();
        conn_set_timer(c, s->limits.handshake_timeout_s);
        c->handshaking = true;
        g_tls_connection_handshake_async(G_TLS_CONNECTION(c->tls), G_PRIORITY_DEFAULT, c->cancel, on_handshake, c);
}

static void on_refused(void *data, GSocket *sock, const char *reason)
{
        struct fy_http_server *s = data;
        const char *type;
        g_autofree char *body = NULL;
        g_autofree char *answer = NULL;

        log_refusal(s, REFUSED_CAP, sock, "503 Service Unavailable", reason);
        if (s->cert)
                return;         /* nothing can be said before a handshake */
        body = fault_body(s, SOUP_STATUS_SERVICE_UNAVAILABLE, reason, &type);
        answer = answer_text(s, SOUP_STATUS_SERVICE_UNAVAILABLE, "Retry-After: 1\r\n", type, body);
        (void) g_socket_send(sock, answer, strlen(answer), NULL, NULL);
}

static void on_listener_log(void *data, GLogLevelFlags level, const char *message)
{
        struct fy_http_server *s = data;

        if (s->log)
                s->log(s->log_data, level, message);
}

static const struct fy_listener_ops listener_ops = {
        .accepted = on_accepted,
        .refused = on_refused,
        .log = on_listener_log,
};

int fy_http_server_new(SoupServer *soup, GSocketAddress *addr, GTlsCertificate *cert,
                       const struct fy_http_limits *limits, fy_http_log_fn log, void *log_data,
                       struct fy_http_server **ret, GError **error)
{
        struct fy_http_server *s = g_new0(struct fy_http_server, 1);
        struct fy_listener_limits ll = { limits->max_connections, limits->per_address };
        int fds[2];
        int r;

        s->soup = g_object_ref(soup);
        s->cert = cert ? g_object_ref(cert) : NULL;
        s->limits = *limits;
        s->log = log;
        s->log_data = log_data;
        s->conns = g_hash_table_new(g_direct_hash, g_direct_equal);
        s->all = g_hash_table_new(g_direct_hash, g_direct_equal);
        s->refusals = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
        /*
         * libsoup keeps a connection alive only while the server has a listener
         * (soup-server.c request_finished); ours is not libsoup's, so it gets one
         * that never has anything to accept: one end of a datagram socket pair
         * nobody writes to (libsoup takes listening or connected sockets only).
         */
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0) {
                r = -errno;
                g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-r), "socketpair: %s", g_strerror(-r));
                fy_http_server_free(s);
                return r;
        }
        s->dummy = g_socket_new_from_fd(fds[0], error);
        s->dummy_peer = g_socket_new_from_fd(fds[1], NULL);
        if (!s->dummy || !s->dummy_peer) {
                if (!s->dummy)
                        close(fds[0]);
                if (!s->dummy_peer)
                        close(fds[1]);
                if (error && !*error)
                        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot wrap a socket pair");
                fy_http_server_free(s);
                return -EIO;
        }
        if (!soup_server_listen_socket(soup, s->dummy, 0, error)) {
                fy_http_server_free(s);
                return -EIO;
        }
        s->sig_started = g_signal_connect(soup, "request-started", G_CALLBACK(on_request_started), s);
        s->sig_finished = g_signal_connect(soup, "request-finished", G_CALLBACK(on_request_done), s);
        s->sig_aborted = g_signal_connect(soup, "request-aborted", G_CALLBACK(on_request_done), s);
        r = fy_listener_new(addr, &ll, &listener_ops, s, &s->listener, error);
        if (r < 0) {
                fy_http_server_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

void fy_http_server_free(struct fy_http_server *s)
{
        GList *left;

        if (!s)
                return;
        /* libsoup closes what it has (each frees its conn through on_msg_disconnected)... */
        soup_server_disconnect(s->soup);
        /* ...what is left was never its. */
        left = g_hash_table_get_keys(s->all);
        for (GList *l = left; l; l = l->next)
                conn_free(l->data, false);
        g_list_free(left);
        fy_listener_free(s->listener);
        if (s->trim)
                g_source_remove(s->trim);
        if (s->sig_started) {
                g_signal_handler_disconnect(s->soup, s->sig_started);
                g_signal_handler_disconnect(s->soup, s->sig_finished);
                g_signal_handler_disconnect(s->soup, s->sig_aborted);
        }
        g_clear_object(&s->dummy);
        g_clear_object(&s->dummy_peer);
        g_clear_object(&s->cert);
        g_clear_object(&s->soup);
        g_hash_table_unref(s->conns);
        g_hash_table_unref(s->all);
        g_hash_table_unref(s->refusals);
        g_free(s);
}

guint16 fy_http_server_port(struct fy_http_server *s)
{
        return fy_listener_port(s->listener);
}

unsigned fy_http_server_connections(struct fy_http_server *s)
{
        return fy_listener_count(s->listener);
}

GSocket *fy_http_server_get_socket(struct fy_http_server *s, SoupServerMessage *msg)
{
        struct conn *c = conn_of(s, msg);

        return c ? c->sock : NULL;
}

void fy_http_server_refuse(struct fy_http_server *s, SoupServerMessage *msg, guint status,
                           const char *extra_headers, const char *content_type, const char *body)
{
        struct conn *c = conn_of(s, msg);

        if (!c || c->msg != msg) {
                /* Not ours (cannot happen with fy_http_server): answer the ordinary way. */
                soup_server_message_set_status(msg, status, NULL);
                soup_server_message_set_response(msg, content_type, SOUP_MEMORY_COPY, body, strlen(body));
                return;
        }
        conn_refuse(c, status, extra_headers, content_type, body);
}

static bool all_digits(const char *v, size_t max)
{
        size_t n = strlen(v);

        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isdigit(v[i]))
                        return false;
        return true;
}

int fy_http_check_framing(SoupMessageHeaders *h, char **ret_detail)
{
        SoupMessageHeadersIter it;
        const char *name, *value;
        unsigned lengths = 0, encodings = 0;
        const char *te = NULL;

        soup_message_headers_iter_init(&it, h);
        while (soup_message_headers_iter_next(&it, &name, &value)) {
                if (g_ascii_strcasecmp(name, "Content-Length") == 0) {
                        lengths++;
                        /* 15 digits: far beyond any limit, and no overflow when parsed. */
                        if (!all_digits(value, 15)) {
                                *ret_detail = g_strdup("Content-Length must be a decimal number of bytes");
                                return 400;
                        }
                } else if (g_ascii_strcasecmp(name, "Transfer-Encoding") == 0) {
                        encodings++;
                        te = value;
                }
        }
        if (lengths > 1) {
                *ret_detail = g_strdup("send one Content-Length header, not several");
                return 400;
        }
        if (encodings > 1 || (te && g_ascii_strcasecmp(te, "chunked") != 0)) {
                *ret_detail = g_strdup("the only Transfer-Encoding accepted is a single \"chunked\"");
                return 400;
        }
        if (lengths && encodings) {
                *ret_detail = g_strdup("send either Content-Length or Transfer-Encoding, not both");
                return 400;
        }
        return 0;
}
