/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * GET of a ticket's bytes: the whole volume or one range, streamed in
 * chunks read in the endpoint's pool, at most READ_QUEUE of them in memory.
 * Downloads do not hold a ticket open: closing, finalizing or expiring a
 * ticket shuts down the connections of its GET streams, and a stream whose
 * client reads nothing for STALL_S is cut.
 */
#include "httpserve.h"
#include "transfer-internal.h"
#include "transferparse.h"

#define READ_QUEUE 2                    /* chunks of one GET waiting to be sent, at most */
#define STALL_S 10                      /* a GET whose client reads nothing for this long is cut */

struct get_stream {
        gint refs;
        struct agent_transfers *tr;
        struct ticket *t;
        SoupServerMessage *msg;
        guint64 offset;                /* next byte to read */
        guint64 remaining;             /* bytes still to read */
        unsigned queued;               /* chunks appended, not yet written */
        gint64 progress;               /* monotonic µs of the last chunk written (or the start) */
        bool reading;
        bool completed;                /* soup_message_body_complete done */
        bool killed;                   /* its connection was shut down */
        bool finished;                 /* the message is over (sent or the client left) */
        bool ended;                    /* xfer_ticket_io_end done */
};

static void stream_unref(struct get_stream *st)
{
        if (--st->refs > 0)
                return;
        g_object_unref(st->msg);
        xfer_ticket_unref(st->t);
        g_free(st);
}

static void stream_end_io(struct get_stream *st)
{
        if (st->ended)
                return;
        st->ended = true;
        g_ptr_array_remove_fast(st->t->streams, st);
        xfer_ticket_io_end(st->tr, st->t);
}

static void stream_complete(struct get_stream *st)
{
        if (st->completed)
                return;
        st->completed = true;
        soup_message_body_complete(soup_server_message_get_response_body(st->msg));
}

/* Ends the response early: the client sees fewer bytes than announced and the connection closes. */
static void stream_abort(struct get_stream *st, const char *why)
{
        g_warning("ticket %s: download stopped at byte %" G_GUINT64_FORMAT ": %s", st->t->log_id, st->offset, why);
        soup_message_headers_replace(soup_server_message_get_response_headers(st->msg), "Connection", "close");
        st->remaining = 0;
        stream_complete(st);
        soup_server_message_unpause(st->msg);
}

/*
 * Shuts the stream's connection down and stops counting it on the ticket
 * at once, whatever its client does: one that never reads would otherwise
 * keep the response (and the ticket) open forever. libsoup then fails its
 * next write and finishes the message.
 */
static void stream_kill(struct get_stream *st, const char *why)
{
        GSocket *sock = st->tr->httpd ? fy_http_server_get_socket(st->tr->httpd, st->msg) : NULL;

        if (st->killed || st->finished)
                return;
        st->killed = true;
        if (sock)
                (void) g_socket_shutdown(sock, TRUE, TRUE, NULL);
        stream_abort(st, why);
        stream_end_io(st);
}

void xfer_kill_streams(struct ticket *t, const char *why)
{
        g_autoptr(GPtrArray) live = g_ptr_array_new();

        /* stream_kill removes each from t->streams: walk a copy. */
        for (guint i = 0; i < t->streams->len; i++)
                g_ptr_array_add(live, t->streams->pdata[i]);
        for (guint i = 0; i < live->len; i++)
                stream_kill(live->pdata[i], why);
}

void xfer_cut_stalled_streams(struct ticket *t)
{
        g_autoptr(GPtrArray) stalled = g_ptr_array_new();
        gint64 now = now_us();

        for (guint i = 0; i < t->streams->len; i++) {
                struct get_stream *st = t->streams->pdata[i];

                /* Waiting on the client (chunks queued, none written), not on storage. */
                if (!st->reading && st->queued > 0 && now - st->progress > (gint64) STALL_S * G_USEC_PER_SEC)
                        g_ptr_array_add(stalled, st);
        }
        for (guint i = 0; i < stalled->len; i++)
                stream_kill(stalled->pdata[i], "the client read nothing for " G_STRINGIFY(STALL_S) " s");
}

static void stream_read_done(struct io_req *io);

static void stream_next(struct get_stream *st)
{
        struct io_req *io;

        if (st->reading || st->finished || st->killed || st->remaining == 0 || st->queued >= READ_QUEUE)
                return;
        if (st->t->state != TICKET_READY) {
                stream_kill(st, "the ticket was removed");
                return;
        }
        io = xfer_io_new(st->t, NULL, IO_READ);
        io->tr = st->tr;
        io->offset = st->offset;
        io->length = MIN(st->remaining, (guint64) XFER_READ_CHUNK);
        io->stream = st;
        io->done = stream_read_done;
        st->refs++;
        st->reading = true;
        xfer_io_queue(st->tr, io);
}

static void stream_read_done(struct io_req *io)
{
        struct get_stream *st = io->stream;

        st->reading = false;
        st->t->last_activity = now_us();
        if (st->finished || st->killed) {
                stream_unref(st);
                return;
        }
        if (io->err < 0) {
                g_autofree char *why = g_strdup_printf("read failed: %s", g_strerror(-io->err));
                stream_abort(st, why);
                stream_unref(st);
                return;
        }
        soup_message_body_append_bytes(soup_server_message_get_response_body(st->msg), io->data);
        if (st->queued == 0)
                st->progress = now_us();       /* the stall clock runs only while chunks wait for the client */
        st->queued++;
        st->offset += io->length;
        st->remaining -= io->length;
        if (st->remaining == 0)
                stream_complete(st);
        soup_server_message_unpause(st->msg);
        stream_next(st);
        stream_unref(st);
}

static void on_wrote_chunk(SoupServerMessage *msg, gpointer data)
{
        struct get_stream *st = data;

        st->progress = now_us();
        if (st->queued > 0)
                st->queued--;
        stream_next(st);
}

static void on_stream_finished(SoupServerMessage *msg, gpointer data)
{
        struct get_stream *st = data;

        st->finished = true;
        g_signal_handlers_disconnect_by_data(msg, st);
        stream_end_io(st);
        stream_unref(st);
}

void xfer_handle_get(struct agent_transfers *tr, struct ticket *t, SoupServerMessage *msg, GHashTable *query)
{
        SoupMessageHeaders *req = soup_server_message_get_request_headers(msg);
        SoupMessageHeaders *resp = soup_server_message_get_response_headers(msg);
        /* Every Range header joined with ", ": a repeated header is several ranges, refused, not one picked. */
        const char *range = soup_message_headers_get_list(req, "Range");
        const char *filename = query ? g_hash_table_lookup(query, "filename") : NULL;
        g_autoptr(GError) error = NULL;
        guint64 start = 0, len = t->size;
        struct get_stream *st;
        int r;

        /* filename=NAME: a browser saves the bytes straight to a file (the web UI's download, no copy in the page). */
        if (filename && (r = agent_xfer_parse_filename(filename, &error)) < 0) {
                xfer_reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
                return;
        }
        if (range && (r = agent_xfer_parse_range(range, t->size, &start, &len, &error)) < 0) {
                if (agent_xfer_http_status(r) == SOUP_STATUS_REQUESTED_RANGE_NOT_SATISFIABLE)
                        xfer_set_unsatisfied_range(msg, t->size);
                xfer_reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
                return;
        }
        soup_server_message_set_status(msg, range ? SOUP_STATUS_PARTIAL_CONTENT : SOUP_STATUS_OK, NULL);
        soup_message_headers_set_content_type(resp, "application/octet-stream", NULL);
        if (filename) {
                g_autofree char *disposition = g_strdup_printf("attachment; filename=\"%s\"", filename);

                soup_message_headers_replace(resp, "Content-Disposition", disposition);
        }
        soup_message_headers_set_encoding(resp, SOUP_ENCODING_CONTENT_LENGTH);
        soup_message_headers_set_content_length(resp, (goffset) len);
        if (range)
                soup_message_headers_set_content_range(resp, (goffset) start, (goffset) (start + len - 1), (goffset) t->size);
        if (len == 0)
                return;
        soup_message_body_set_accumulate(soup_server_message_get_response_body(msg), FALSE);

        st = g_new0(struct get_stream, 1);
        st->refs = 1;                  /* dropped when the message finishes */
        st->tr = tr;
        st->t = xfer_ticket_ref(t);
        st->msg = g_object_ref(msg);
        st->offset = start;
        st->remaining = len;
        st->progress = now_us();
        t->inflight++;
        g_ptr_array_add(t->streams, st);
        g_signal_connect(msg, "wrote-chunk", G_CALLBACK(on_wrote_chunk), st);
        g_signal_connect(msg, "finished", G_CALLBACK(on_stream_finished), st);
        /* The server pauses itself until the first chunk is appended. */
        stream_next(st);
}

