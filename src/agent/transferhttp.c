/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The HTTP side of image transfers: the early handler that refuses, before
 * a body is read, every request that cannot succeed, and the handlers of
 * OPTIONS, PUT, PATCH and the /extents GET (a GET of the bytes is
 * transferget.c). Every request lives in the main thread; its file I/O is
 * queued to the endpoint's pool (transferio.c) with the message paused.
 *
 * Nothing is buffered for a request that cannot succeed: one early handler
 * for every path refuses, before the body is read, any body that is not a
 * PUT/PATCH within the limit on a ticket that allows writing.
 */
#include <errno.h>
#include <string.h>

#include "httpserve.h"
#include "transfer-internal.h"
#include "transfercors.h"
#include "transferparse.h"

#define MAX_READERS 8                   /* GET requests per ticket at once (advertised by OPTIONS) */
#define MAX_WRITERS 8                   /* PUT/PATCH requests per ticket at once (advertised by OPTIONS) */
#define MAX_WRITERS_TOTAL 32            /* PUT/PATCH bodies in memory on the host at once */
#define RETRY_AFTER "1"

void xfer_reply_text(SoupServerMessage *msg, guint status, const char *fmt, ...)
{
        g_autofree char *text = NULL;
        va_list ap;

        va_start(ap, fmt);
        text = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        soup_server_message_set_status(msg, status, NULL);
        soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_COPY, text, strlen(text));
}

static void reply_json(SoupServerMessage *msg, guint status, json_t *body)
{
        g_autofree char *text = json_dumps(body, JSON_COMPACT);

        soup_server_message_set_status(msg, status, NULL);
        soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, text, strlen(text));
}

/* The READY ticket a request names, or NULL after answering 403/404. Never tells why a ticket is refused. */
static struct ticket *request_ticket(struct agent_transfers *tr, SoupServerMessage *msg, const char *path,
                                     bool *ret_extents)
{
        char uuid[FY_UUID_STR_LEN + 1];
        struct ticket *t;

        if (agent_xfer_parse_path(path, uuid, ret_extents) < 0) {
                xfer_reply_text(msg, SOUP_STATUS_NOT_FOUND, "no such resource: use /images/<ticket-uuid>[/extents]\n");
                return NULL;
        }
        t = xfer_ticket_lookup(tr, uuid);
        if (!t) {
                xfer_reply_text(msg, SOUP_STATUS_FORBIDDEN, "no such ticket, or it expired or was removed\n");
                return NULL;
        }
        return t;
}

/*
 * The Content-Range of a 416 names only the size: "bytes *" then "/SIZE"
 * (RFC 9110 §14.4). libsoup's setter has no such form (given -1 it writes
 * "bytes -1--1/SIZE").
 */
void xfer_set_unsatisfied_range(SoupServerMessage *msg, guint64 size)
{
        g_autofree char *value = g_strdup_printf("bytes */%" G_GUINT64_FORMAT, size);

        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Content-Range", value);
}

static bool method_is(SoupServerMessage *msg, const char *m)
{
        return strcmp(soup_server_message_get_method(msg), m) == 0;
}

/* A request admitted on a ticket, counted until its message finishes. */
struct admit {
        struct agent_transfers *tr;    /* its writers count all tickets' bodies: their memory is bounded */
        struct ticket *t;
        bool write;
        bool done;
};

static void admit_end(struct admit *ad)
{
        if (ad->done)
                return;
        ad->done = true;
        if (ad->write) {
                ad->t->writers--;
                ad->tr->writers--;
        } else {
                ad->t->readers--;
        }
}

static void on_admit_finished(SoupServerMessage *msg, gpointer data)
{
        admit_end(data);
}

/* Also when the message goes without "finished" (its connection taken over, the server disposed). */
static void admit_free(gpointer data, GClosure *closure)
{
        struct admit *ad = data;

        admit_end(ad);
        xfer_ticket_unref(ad->t);
        g_free(ad);
}

static void admit(struct agent_transfers *tr, struct ticket *t, SoupServerMessage *msg, bool write)
{
        struct admit *ad = g_new0(struct admit, 1);

        ad->tr = tr;
        ad->t = xfer_ticket_ref(t);
        ad->write = write;
        if (write) {
                t->writers++;
                tr->writers++;
        } else {
                t->readers++;
        }
        g_signal_connect_data(msg, "finished", G_CALLBACK(on_admit_finished), ad, admit_free, 0);
}

/*
 * Answers a request that announced a body, before the body is read, and
 * closes the connection (libsoup 3.2 would answer only after reading the
 * whole body): see fy_http_server_refuse().
 */
static void refuse_unread(struct agent_transfers *tr, SoupServerMessage *msg, guint status, const char *retry_after, const char *text)
{
        const char *origin = soup_message_headers_get_one(soup_server_message_get_response_headers(msg),
                                                          "Access-Control-Allow-Origin");
        g_autoptr(GString) headers = g_string_new(NULL);

        if (retry_after)
                g_string_append_printf(headers, "Retry-After: %s\r\n", retry_after);
        /* Written raw, past libsoup: the CORS answer goes along, so a browser can read why. */
        if (origin)
                g_string_append_printf(headers, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", origin);
        fy_http_server_refuse(tr->httpd, msg, status, headers->len ? headers->str : NULL, "text/plain", text);
}

/*
 * An early answer. A request that announced a body is answered at once
 * and its connection closed (refuse_unread); one without a body is
 * answered the ordinary way and its connection may stay.
 */
static void early_reply(struct agent_transfers *tr, SoupServerMessage *msg, bool body, guint status, const char *retry_after, const char *fmt, ...)
        G_GNUC_PRINTF(6, 7);
static void early_reply(struct agent_transfers *tr, SoupServerMessage *msg, bool body, guint status, const char *retry_after, const char *fmt, ...)
{
        g_autofree char *text = NULL;
        va_list ap;

        va_start(ap, fmt);
        text = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (body) {
                refuse_unread(tr, msg, status, retry_after, text);
                return;
        }
        if (retry_after)
                soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", retry_after);
        xfer_reply_text(msg, status, "%s", text);
}

/*
 * Every request, on every path, before its body is read: refuse what cannot
 * succeed so that no body is ever buffered for it. Only a PUT or PATCH
 * within its limit, on a ticket that allows writing, may send a body; any
 * other request that announces one gets 413 (411 when chunked) and the
 * connection is closed. Admitted requests count against the ticket's
 * max_readers / max_writers.
 */
void xfer_on_early(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        struct agent_transfers *tr = data;
        SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
        SoupEncoding enc = soup_message_headers_get_encoding(h);
        goffset len = enc == SOUP_ENCODING_CONTENT_LENGTH ? soup_message_headers_get_content_length(h) : 0;
        bool body = enc != SOUP_ENCODING_NONE && !(enc == SOUP_ENCODING_CONTENT_LENGTH && len == 0);
        bool write = method_is(msg, "PUT") || method_is(msg, "PATCH");
        guint64 limit = method_is(msg, "PUT") ? tr->agent->config.transfer_max_request : AGENT_XFER_PATCH_MAX;
        char uuid[FY_UUID_STR_LEN + 1];
        bool extents = false;
        struct ticket *t;
        g_autofree char *framing = NULL;

        /* A browser's preflight from the engine's origin (the web UI's upload) is answered here. */
        if (agent_xfer_cors(tr->agent->config.cors_origin, msg))
                return;
        if (fy_http_check_framing(h, &framing) != 0) {
                early_reply(tr, msg, true, SOUP_STATUS_BAD_REQUEST, NULL, "%s\n", framing);
                return;
        }
        if (enc != SOUP_ENCODING_NONE && enc != SOUP_ENCODING_CONTENT_LENGTH) {
                early_reply(tr, msg, true, SOUP_STATUS_LENGTH_REQUIRED, NULL,
                            "send a Content-Length; chunked request bodies are not accepted\n");
                return;
        }
        if (body && !write) {
                early_reply(tr, msg, true, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, NULL, "a %s request takes no body\n",
                            soup_server_message_get_method(msg));
                return;
        }
        if (write && (len < 0 || (guint64) len > limit)) {
                early_reply(tr, msg, true, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, NULL,
                            "request body of %" G_GOFFSET_FORMAT " bytes exceeds the limit of %" G_GUINT64_FORMAT
                            " bytes; send the data in smaller requests\n", len, limit);
                return;
        }
        if (agent_xfer_parse_path(path, uuid, &extents) < 0) {
                early_reply(tr, msg, body, SOUP_STATUS_NOT_FOUND, NULL,
                            "no such resource: use /images/<ticket-uuid>[/extents]\n");
                return;
        }
        t = xfer_ticket_lookup(tr, uuid);
        if (!t) {
                early_reply(tr, msg, body, SOUP_STATUS_FORBIDDEN, NULL, "no such ticket, or it expired or was removed\n");
                return;
        }
        if (write) {
                if (extents) {
                        early_reply(tr, msg, body, SOUP_STATUS_METHOD_NOT_ALLOWED, NULL, "extents are only read\n");
                } else if (!t->can_write) {
                        early_reply(tr, msg, body, SOUP_STATUS_FORBIDDEN, NULL, "this ticket does not allow writing\n");
                } else if (t->writers >= MAX_WRITERS) {
                        early_reply(tr, msg, body, SOUP_STATUS_SERVICE_UNAVAILABLE, RETRY_AFTER,
                                    "too many writes on this ticket (at most %u at once); retry shortly\n", MAX_WRITERS);
                } else if (tr->writers >= MAX_WRITERS_TOTAL) {
                        early_reply(tr, msg, body, SOUP_STATUS_SERVICE_UNAVAILABLE, RETRY_AFTER,
                                    "too many writes on this host (at most %u at once); retry shortly\n",
                                    MAX_WRITERS_TOTAL);
                } else {
                        admit(tr, t, msg, true);
                }
        } else if (method_is(msg, "GET")) {
                if (t->readers >= MAX_READERS)
                        early_reply(tr, msg, false, SOUP_STATUS_SERVICE_UNAVAILABLE, RETRY_AFTER,
                                    "too many reads on this ticket (at most %u at once); retry shortly\n", MAX_READERS);
                else
                        admit(tr, t, msg, false);
        }
}

static guint io_status(int err)
{
        return err == -ENOSPC || err == -EDQUOT ? SOUP_STATUS_INSUFFICIENT_STORAGE : SOUP_STATUS_INTERNAL_SERVER_ERROR;
}

static void io_done(struct io_req *io)
{
        if (io->err == -ESTALE) {
                xfer_reply_text(io->msg, SOUP_STATUS_FORBIDDEN, "the ticket was removed; nothing was written\n");
        } else if (io->err < 0) {
                g_warning("ticket %s: %s of %" G_GUINT64_FORMAT " bytes at %" G_GUINT64_FORMAT " failed: %s",
                          io->t->log_id, io->kind == IO_WRITE ? "write" : io->kind == IO_ZERO ? "zero" :
                          io->kind == IO_FLUSH ? "flush" : "extents", io->length, io->offset, g_strerror(-io->err));
                xfer_reply_text(io->msg, io_status(io->err), "%s\n", g_strerror(-io->err));
        } else if (io->kind == IO_EXTENTS) {
                reply_json(io->msg, SOUP_STATUS_OK, io->result);
        } else {
                soup_server_message_set_status(io->msg, SOUP_STATUS_OK, NULL);
        }
        soup_server_message_unpause(io->msg);
        xfer_ticket_io_end(io->tr, io->t);
}

/* Runs io in the pool; msg stays paused until it is done. */
static void io_start(struct agent_transfers *tr, struct io_req *io)
{
        io->tr = tr;
        io->done = io_done;
        io->t->inflight++;
        soup_server_message_pause(io->msg);
        xfer_io_queue(tr, io);
}

static bool range_outside(struct ticket *t, SoupServerMessage *msg, guint64 offset, guint64 len)
{
        if (agent_xfer_range_fits(t->size, offset, len))
                return false;
        xfer_set_unsatisfied_range(msg, t->size);
        xfer_reply_text(msg, SOUP_STATUS_REQUESTED_RANGE_NOT_SATISFIABLE,
                        "%" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT " do not fit in the ticket's %"
                        G_GUINT64_FORMAT " bytes; nothing was written\n", len, offset, t->size);
        return true;
}

static void handle_put(struct agent_transfers *tr, struct ticket *t, SoupServerMessage *msg, GHashTable *query)
{
        SoupMessageHeaders *req = soup_server_message_get_request_headers(msg);
        const char *cr = soup_message_headers_get_list(req, "Content-Range");      /* repeated: refused */
        g_autoptr(GBytes) body = soup_message_body_flatten(soup_server_message_get_request_body(msg));
        g_autoptr(GError) error = NULL;
        guint64 offset = 0, len = g_bytes_get_size(body);
        struct io_req *io;
        bool flush;
        int r;

        /* ovirt-imageio flushes every PUT unless told flush=n. */
        if ((cr && (r = agent_xfer_parse_content_range(cr, len, &offset, &error)) < 0) ||
            (r = agent_xfer_parse_flush(query ? g_hash_table_lookup(query, "flush") : NULL, true, &flush, &error)) < 0) {
                xfer_reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
                return;
        }
        if (range_outside(t, msg, offset, len))
                return;
        if (len == 0) {
                soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
                return;
        }
        io = xfer_io_new(t, msg, IO_WRITE);
        io->offset = offset;
        io->length = len;
        io->data = g_steal_pointer(&body);
        io->flush = flush;
        io_start(tr, io);
}

static void handle_patch(struct agent_transfers *tr, struct ticket *t, SoupServerMessage *msg)
{
        g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(msg));
        g_autoptr(GError) error = NULL;
        struct agent_xfer_patch p;
        struct io_req *io;
        gsize len;
        const void *text = g_bytes_get_data(bytes, &len);
        int r;

        r = agent_xfer_parse_patch(text, len, &p, &error);
        if (r < 0) {
                xfer_reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
                return;
        }
        if (p.op == AGENT_XFER_OP_FLUSH) {
                io = xfer_io_new(t, msg, IO_FLUSH);
                io_start(tr, io);
                return;
        }
        if (range_outside(t, msg, p.offset, p.size))
                return;
        if (p.size == 0) {
                soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
                return;
        }
        io = xfer_io_new(t, msg, IO_ZERO);
        io->offset = p.offset;
        io->length = p.size;
        io->flush = p.flush;
        io_start(tr, io);
}

static void handle_options(struct ticket *t, SoupServerMessage *msg)
{
        g_autoptr(json_t) body = json_pack("{s:[s,s,s], s:i, s:i}", "features", "extents", "zero", "flush",
                                           "max_readers", MAX_READERS, "max_writers", MAX_WRITERS);

        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                     t->can_write ? "OPTIONS,GET,PUT,PATCH" : "OPTIONS,GET");
        reply_json(msg, SOUP_STATUS_OK, body);
}

void xfer_on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        struct agent_transfers *tr = data;
        bool extents = false;
        struct ticket *t;

        if (soup_server_message_get_status(msg) != 0)
                return;        /* answered by the early handler */
        t = request_ticket(tr, msg, path, &extents);
        if (!t)
                return;
        t->last_activity = now_us();
        if (method_is(msg, "OPTIONS") && !extents) {
                handle_options(t, msg);
        } else if (method_is(msg, "GET")) {
                if (!t->can_read) {
                        xfer_reply_text(msg, SOUP_STATUS_FORBIDDEN, "this ticket does not allow reading\n");
                } else if (extents) {
                        const char *ctx = query ? g_hash_table_lookup(query, "context") : NULL;

                        if (ctx && strcmp(ctx, "zero") != 0)
                                xfer_reply_text(msg, SOUP_STATUS_NOT_FOUND, "only context=zero extents are known\n");
                        else
                                io_start(tr, xfer_io_new(t, msg, IO_EXTENTS));
                } else {
                        xfer_handle_get(tr, t, msg, query);
                }
        } else if ((method_is(msg, "PUT") || method_is(msg, "PATCH")) && !extents) {
                if (!t->can_write)
                        xfer_reply_text(msg, SOUP_STATUS_FORBIDDEN, "this ticket does not allow writing\n");
                else if (method_is(msg, "PUT"))
                        handle_put(tr, t, msg, query);
                else
                        handle_patch(tr, t, msg);
        } else {
                xfer_reply_text(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "use OPTIONS, GET, PUT or PATCH\n");
        }
}

