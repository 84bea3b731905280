/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * GET /api/events/stream: Server-Sent Events telling a browser which parts
 * of the inventory changed, so the web UI refetches only those and never
 * polls. The source is the store's own write notification (every INSERT,
 * UPDATE, DELETE names its table), so no flow has to remember to publish:
 * a disk's progress, a step's host, a job's end, an event all reach it.
 *
 * Writes come in bursts (a coordinator round updates a dozen rows): the
 * tables are gathered for COALESCE_MS and sent as one "change" event
 * naming them. Every stream first gets a "hello" with this engine run's
 * id; a client that reconnects (engine restart, network) resyncs from the
 * REST API, so nothing it missed is lost and Last-Event-ID needs no
 * replay buffer here.
 *
 * A stream does not outlive its credentials: when the tokens or users
 * change (a logout, the expiry sweep, a user removed) and at every
 * keepalive (an idle token expiring), each stream's token is checked
 * again and the stream ends if it is gone; the client's reconnect then
 * gets 401 and the page goes back to its login form.
 *
 * Bounds: at most STREAMS_MAX streams, STREAMS_PER_USER of one user (the
 * web UI needs one per browser; one user must not starve the others); a client that does not read (more
 * than QUEUE_MAX events waiting for its socket) is dropped, its connection
 * shut, instead of growing the engine's memory. A comment line every
 * KEEPALIVE_S keeps proxies from cutting an idle stream and finds clients
 * that left. The HTTP server's idle and request timeouts do not apply:
 * they run only before a request is read; its write timeout runs only
 * while a write is blocked, so it cuts a stalled stream, never a quiet one
 * (src/lib/httpserve.c).
 */
#include <string.h>

#include "api_stream.h"
#include "auth.h"
#include "clock.h"
#include "httpserve.h"
#include "store/store.h"
#include "uuid.h"

#define STREAMS_MAX 64
#define STREAMS_PER_USER 8
#define QUEUE_MAX 32
#define COALESCE_MS 250
#define KEEPALIVE_S 15
#define RETRY_MS 2000

/* The tables a browser shows; the rest (tokens, commands, options, users) never leave the engine. */
static const char *const topics[] = {
        "datacenters", "disk_attachments", "disks", "events", "hosts", "image_transfers", "jobs",
        "snapshots", "steps", "storage_domains", "templates", "vms", "volumes",
};

struct stream {
        struct engine *e;
        SoupServerMessage *msg;
        char *user;
        char *credential;              /* engine_auth_credential(): rechecked while the stream lasts */
        unsigned queued;               /* events appended, not yet written to the socket */
        bool closed;
};

static struct {
        GPtrArray *streams;            /* struct stream * */
        guint dirty;                   /* bit i: topics[i] changed since the last event */
        guint flush_source;
        bool recheck;                  /* tokens or users changed since the last flush */
        guint keepalive_source;
        guint64 seq;
        char *run;                     /* this engine run's id: a client seeing another one resyncs */
} S;

static void stream_free(struct stream *st)
{
        g_object_unref(st->msg);
        g_free(st->user);
        g_free(st->credential);
        g_free(st);
}

/* Takes st out of the list; the message's own end frees it. */
static void stream_forget(struct stream *st)
{
        if (S.streams)
                g_ptr_array_remove_fast(S.streams, st);
}

static void stream_drop(struct stream *st, const char *why)
{
        GSocket *sock = st->e->httpd ? fy_http_server_get_socket(st->e->httpd, st->msg) : NULL;

        if (st->closed)
                return;
        st->closed = true;
        g_message("event stream dropped: %s", why);
        stream_forget(st);
        /* The client gets no more; libsoup then fails the message and "finished" frees st. */
        if (sock)
                (void) g_socket_shutdown(sock, TRUE, TRUE, NULL);
        soup_message_body_complete(soup_server_message_get_response_body(st->msg));
        soup_server_message_unpause(st->msg);
}

static void stream_send(struct stream *st, const char *text)
{
        if (st->closed)
                return;
        if (st->queued >= QUEUE_MAX) {
                stream_drop(st, "the client does not read its events");
                return;
        }
        st->queued++;
        soup_message_body_append(soup_server_message_get_response_body(st->msg), SOUP_MEMORY_COPY, text, strlen(text));
        soup_server_message_unpause(st->msg);
}

static void broadcast(const char *text)
{
        g_autoptr(GPtrArray) live = g_ptr_array_new();

        /* stream_send may drop a stream, which edits the list: walk a copy. */
        for (guint i = 0; S.streams && i < S.streams->len; i++)
                g_ptr_array_add(live, S.streams->pdata[i]);
        for (guint i = 0; i < live->len; i++)
                stream_send(live->pdata[i], text);
}

/* Ends the streams whose token was revoked or expired, or whose user was removed. */
static void recheck_credentials(void)
{
        g_autoptr(GPtrArray) live = g_ptr_array_new();

        for (guint i = 0; S.streams && i < S.streams->len; i++)
                g_ptr_array_add(live, S.streams->pdata[i]);
        for (guint i = 0; i < live->len; i++) {
                struct stream *st = live->pdata[i];

                if (!engine_auth_still_valid(st->e, st->credential, st->user))
                        stream_drop(st, "its token or user is gone");
        }
}

static gboolean on_flush(gpointer data)
{
        g_autoptr(json_t) tables = json_array();
        g_autoptr(json_t) body = NULL;
        g_autofree char *json = NULL, *text = NULL;

        S.flush_source = 0;
        if (S.recheck) {
                S.recheck = false;
                recheck_credentials();
        }
        if (!S.dirty)
                return G_SOURCE_REMOVE;
        for (size_t i = 0; i < G_N_ELEMENTS(topics); i++)
                if (S.dirty & (1u << i))
                        json_array_append_new(tables, json_string(topics[i]));
        S.dirty = 0;
        S.seq++;
        body = json_pack("{s:O, s:I}", "tables", tables, "time", (json_int_t) engine_now());
        json = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        text = g_strdup_printf("id: %s-%" G_GUINT64_FORMAT "\nevent: change\ndata: %s\n\n", S.run, S.seq, json);
        broadcast(text);
        return G_SOURCE_REMOVE;
}

static void on_store_change(void *data, const char *table)
{
        if (strcmp(table, "tokens") == 0 || strcmp(table, "users") == 0) {
                S.recheck = true;
                if (!S.flush_source && S.streams && S.streams->len > 0)
                        S.flush_source = g_timeout_add(COALESCE_MS, on_flush, NULL);
                return;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(topics); i++) {
                if (strcmp(table, topics[i]) != 0)
                        continue;
                S.dirty |= 1u << i;
                /* Nobody listens: nothing to gather. */
                if (!S.flush_source && S.streams && S.streams->len > 0)
                        S.flush_source = g_timeout_add(COALESCE_MS, on_flush, NULL);
                return;
        }
}

static gboolean on_keepalive(gpointer data)
{
        recheck_credentials();
        broadcast(": keepalive\n\n");
        return G_SOURCE_CONTINUE;
}

static void on_wrote_chunk(SoupServerMessage *msg, gpointer data)
{
        struct stream *st = data;

        if (st->queued > 0)
                st->queued--;
}

static void on_finished(SoupServerMessage *msg, gpointer data)
{
        struct stream *st = data;

        g_signal_handlers_disconnect_by_data(msg, st);
        if (!st->closed) {
                st->closed = true;
                stream_forget(st);
        }
        stream_free(st);
}

static void stream_open(struct engine *e, SoupServerMessage *msg, char **args)
{
        SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
        g_autofree char *hello = NULL;
        struct stream *st;
        unsigned mine = 0;

        if (!S.streams) {
                engine_rest_reply_fault(msg, 503, "the event stream is not running");
                return;
        }
        for (guint i = 0; i < S.streams->len; i++)
                mine += g_strcmp0(((struct stream *) S.streams->pdata[i])->user, e->acting_user) == 0;
        if (mine >= STREAMS_PER_USER) {
                g_autofree char *detail = g_strdup_printf("user %s has %u event streams open, the most one user may; "
                                                          "close one (a browser needs only one for all its tabs)",
                                                          e->acting_user, STREAMS_PER_USER);

                soup_message_headers_replace(h, "Retry-After", "5");
                engine_rest_reply_fault(msg, 503, detail);
                return;
        }
        if (S.streams->len >= STREAMS_MAX) {
                soup_message_headers_replace(h, "Retry-After", "5");
                engine_rest_reply_fault(msg, 503, "too many event streams are open; try again later");
                return;
        }
        soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
        soup_message_headers_set_content_type(h, "text/event-stream", NULL);
        soup_message_headers_set_encoding(h, SOUP_ENCODING_CHUNKED);
        soup_message_body_set_accumulate(soup_server_message_get_response_body(msg), FALSE);
        st = g_new0(struct stream, 1);
        st->e = e;
        st->msg = g_object_ref(msg);
        st->user = g_strdup(e->acting_user);
        st->credential = engine_auth_credential(msg);
        g_ptr_array_add(S.streams, st);
        g_signal_connect(msg, "wrote-chunk", G_CALLBACK(on_wrote_chunk), st);
        g_signal_connect(msg, "finished", G_CALLBACK(on_finished), st);
        hello = g_strdup_printf("retry: %d\nid: %s-%" G_GUINT64_FORMAT "\nevent: hello\ndata: {\"run\":\"%s\"}\n\n",
                                RETRY_MS, S.run, S.seq, S.run);
        stream_send(st, hello);
}

static const struct engine_route routes[] = {
        { "GET", "/api/events/stream", stream_open, ENGINE_ROLE_VIEWER },
};

const struct engine_route *engine_api_stream_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}

void engine_stream_start(struct engine *e)
{
        G_STATIC_ASSERT(G_N_ELEMENTS(topics) <= 32);
        S.streams = g_ptr_array_new();
        S.run = fy_uuid_new();
        S.seq = 0;
        S.dirty = 0;
        S.keepalive_source = g_timeout_add_seconds(KEEPALIVE_S, on_keepalive, NULL);
        engine_store_set_change_fn(e->db, on_store_change, e);
}

void engine_stream_stop(struct engine *e)
{
        if (!S.streams)
                return;
        engine_store_set_change_fn(e->db, NULL, NULL);
        while (S.streams->len > 0)
                stream_drop(S.streams->pdata[0], "the engine stops");
        g_clear_handle_id(&S.flush_source, g_source_remove);
        g_clear_handle_id(&S.keepalive_source, g_source_remove);
        g_clear_pointer(&S.streams, g_ptr_array_unref);
        g_clear_pointer(&S.run, g_free);
}
