/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Image transfer tickets and their HTTP(S) endpoint (see transfer.h and
 * ARCHITECTURE.md "Image transfers").
 *
 * Threads: the ticket table, the SoupServer and every request live in the
 * main thread. File I/O (pread/pwrite/fallocate/fsync/lseek) runs in the
 * endpoint's own bounded thread pool (not GLib's shared GTask pool, which
 * the blocking RPC verbs use: slow storage must not starve Host.getStats),
 * one bounded piece at a time (a PUT body of at most transfer_max_request
 * bytes, a GET chunk of 1 MiB).
 *
 * No write after the lease: a write checks, under the ticket's mutex, that
 * the ticket is not released and counts itself; ticket_release waits for
 * that count to reach zero before it gives up the lease, and from then on
 * every write is refused. Downloads do not hold a ticket open: closing,
 * finalizing or expiring a ticket shuts down the connections of its GET
 * streams, and a stream whose client reads nothing for STALL_S is cut.
 *
 * Nothing is buffered for a request that cannot succeed: one early handler
 * for every path refuses, before the body is read, any body that is not a
 * PUT/PATCH within the limit on a ticket that allows writing.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libsoup/soup.h>

#include "agent.h"
#include "config.h"
#include "error.h"
#include "fileio.h"
#include "httpserve.h"
#include "jobs.h"
#include "lease.h"
#include "locks.h"
#include "storage.h"
#include "transfer.h"
#include "transfercors.h"
#include "transferparse.h"
#include "uuid.h"

#define READ_CHUNK (1024 * 1024)        /* bytes read per step of a streamed GET */
#define READ_QUEUE 2                    /* chunks of one GET waiting to be sent, at most */
#define EXTENTS_MAX 100000              /* beyond this the rest is reported as one data extent */
#define LOCK_WAIT_S 10                  /* Host.add_image_ticket waits this long for a busy image */
#define DRAIN_WAIT_S 120                /* finalize waits this long for requests in progress */
#define TICKET_LOG_ID_LEN 8             /* characters of a ticket uuid that logs show */
#define QIMG_OUTPUT_MAX (1024 * 1024)
#define QIMG_AS_MAX (G_GUINT64_CONSTANT(1) << 30)     /* address space of qemu-img on an uploaded image */
#define QIMG_CPU_MAX_S 60                               /* CPU seconds of one qemu-img info/check */
#define MAX_READERS 8                   /* GET requests per ticket at once (advertised by OPTIONS) */
#define MAX_WRITERS 8                   /* PUT/PATCH requests per ticket at once (advertised by OPTIONS) */
#define MAX_WRITERS_TOTAL 32            /* PUT/PATCH bodies in memory on the host at once */
#define MAX_CONNECTIONS 128             /* client connections open at once (live ones) */
#define IO_THREADS 4                    /* threads of the endpoint's I/O pool */
#define STALL_S 10                      /* a GET whose client reads nothing for this long is cut */
#define RETRY_AFTER "1"

enum ticket_state {
        TICKET_ADDING,          /* add in progress: locks, lease, metadata */
        TICKET_READY,           /* serving requests */
        TICKET_CLOSING,         /* removed or expired: waiting for requests, then releasing */
        TICKET_FINALIZING,      /* a finalize job owns it */
};

struct ticket {
        gint refs;
        struct agent *agent;
        char uuid[FY_UUID_STR_LEN + 1];
        /*
         * What logs and errors name it by: its first 8 characters. The whole
         * uuid is the ticket's secret (with it anyone may read or write the
         * volume), and logs are read by more people than the API is.
         */
        char log_id[TICKET_LOG_ID_LEN + 1];
        char *transfer_id;
        char *url;
        char *path;
        struct agent_volref ref;
        bool can_read;
        bool can_write;
        bool sparse;
        guint64 size;
        unsigned timeout;

        /* Set by the add worker before the ticket is READY; read-only afterwards. */
        int fd;
        enum fy_vol_format format;
        guint64 capacity;
        unsigned generation;
        bool punch;                    /* zero may punch holes (sparse ticket and SPARSE volume) */

        /* Resources, released once (ticket_release), from whichever thread gets there first. */
        GMutex lock;
        GCond cond;
        bool drained;                  /* FINALIZING and no request in progress */
        unsigned writing;              /* writes running in a worker; released waits for 0 */
        struct agent_lock_req locks[2];
        bool locked;
        char *lease_path;
        struct agent_lease lease;
        bool leased;
        bool released;

        /* Main thread only. */
        enum ticket_state state;
        unsigned inflight;
        gint64 last_activity;          /* monotonic µs */
        GPtrArray *waiters;            /* fy_rpc_call * answered when a removal completes */
        GPtrArray *streams;            /* struct get_stream * of the GETs being sent */
        unsigned readers;              /* GET requests admitted by the early handler, not finished */
        unsigned writers;              /* PUT/PATCH requests admitted, not finished */
        char *finalize_job;

        gint64 transferred;            /* bytes read or written, atomics */
};

struct agent_transfers {
        struct agent *agent;
        SoupServer *server;
        struct fy_http_server *httpd;  /* its connections: caps, timeouts, closed clients freed */
        guint16 port;
        bool tls;
        GHashTable *tickets;           /* uuid → struct ticket * */
        guint timer;
        gint io_running;               /* I/O requests queued or running in the pool (atomic) */
        GThreadPool *pool;             /* the endpoint's I/O threads */
        unsigned writers;              /* PUT/PATCH admitted on all tickets */
};

static struct ticket *ticket_ref(struct ticket *t)
{
        g_atomic_int_inc(&t->refs);
        return t;
}

static void ticket_unref(struct ticket *t)
{
        if (!t || !g_atomic_int_dec_and_test(&t->refs))
                return;
        if (t->fd >= 0)
                close(t->fd);
        for (size_t i = 0; i < G_N_ELEMENTS(t->locks); i++)
                g_free(t->locks[i].name);
        if (t->waiters)
                g_ptr_array_unref(t->waiters);
        if (t->streams)
                g_ptr_array_unref(t->streams);
        g_mutex_clear(&t->lock);
        g_cond_clear(&t->cond);
        g_free(t->lease_path);
        g_free(t->transfer_id);
        g_free(t->url);
        g_free(t->path);
        g_free(t->finalize_job);
        g_free(t);
}

typedef struct ticket ticket;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ticket, ticket_unref)

static gint64 now_us(void)
{
        return g_get_monotonic_time();
}

/*
 * Gives up the lease and the locks; the volume stays as it is (ILLEGAL for
 * a write ticket that was not finalized). Writes are refused from the
 * moment it starts, and those already running are waited for: the lease
 * never goes while a write of this ticket may still land. Idempotent, any
 * thread, may block on storage and sanlock.
 */
static void ticket_release(struct ticket *t)
{
        g_autoptr(GError) error = NULL;

        g_mutex_lock(&t->lock);
        if (t->released) {
                g_mutex_unlock(&t->lock);
                return;
        }
        t->released = true;
        while (t->writing > 0)
                g_cond_wait(&t->cond, &t->lock);
        if (t->leased && agent_lease_release(&t->lease, &error) < 0)
                g_warning("ticket %s: %s", t->log_id, error->message);
        t->leased = false;
        if (t->locked)
                agent_locks_release(t->agent->locks, t->locks, 2);
        t->locked = false;
        g_mutex_unlock(&t->lock);
}

/*
 * At exit: refuses writes from now on, and releases the lease only if no
 * write is running. One still running (storage that hangs) keeps the lease
 * until the process exits, when sanlock frees it: never while it may land.
 */
static void ticket_release_at_exit(struct ticket *t)
{
        unsigned writing;

        g_mutex_lock(&t->lock);
        writing = t->writing;
        if (writing > 0)
                t->released = true;
        g_mutex_unlock(&t->lock);
        if (writing == 0)
                ticket_release(t);
        else
                g_warning("ticket %s: %u writes still running at exit; the lease goes when the process exits",
                          t->log_id, writing);
}

/* Worker: counts a write about to start, or refuses it once the ticket is released. */
static bool ticket_write_begin(struct ticket *t)
{
        bool ok;

        g_mutex_lock(&t->lock);
        ok = !t->released;
        if (ok)
                t->writing++;
        g_mutex_unlock(&t->lock);
        return ok;
}

static void ticket_write_end(struct ticket *t)
{
        g_mutex_lock(&t->lock);
        if (--t->writing == 0)
                g_cond_broadcast(&t->cond);
        g_mutex_unlock(&t->lock);
}

/* ---- JSON view of a ticket ---- */

static json_t *ticket_status(struct ticket *t)
{
        gint64 idle = t->inflight > 0 ? 0 : (now_us() - t->last_activity) / G_USEC_PER_SEC;
        gint64 expires = g_get_real_time() / G_USEC_PER_SEC + (gint64) t->timeout - idle;
        static const char *const states[] = { "adding", "ready", "closing", "finalizing" };
        json_t *ops = json_array();

        if (t->can_read)
                json_array_append_new(ops, json_string("read"));
        if (t->can_write)
                json_array_append_new(ops, json_string("write"));
        return json_pack("{s:s, s:s?, s:o, s:I, s:s, s:b, s:i, s:b, s:I, s:I, s:I, s:i, s:s, s:i}",
                         "uuid", t->uuid, "transfer_id", t->transfer_id, "ops", ops,
                         "size", (json_int_t) t->size, "url", t->url, "sparse", t->sparse,
                         "timeout", (int) t->timeout, "active", t->inflight > 0,
                         "transferred", (json_int_t) __atomic_load_n(&t->transferred, __ATOMIC_RELAXED),
                         "expires", (json_int_t) expires, "idle_time", (json_int_t) idle,
                         "connections", (int) t->inflight, "phase", states[t->state],
                         "generation", (int) t->generation);
}

/* ---- ticket lifetime in the main thread ---- */

static struct agent_transfers *transfers_of(struct agent *a)
{
        return a->transfers;
}

struct release_task {
        struct agent_transfers *tr;
        struct ticket *t;
};

static void release_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
        struct release_task *rt = data;

        ticket_release(rt->t);
        g_task_return_boolean(task, TRUE);
}

static void release_task_free(gpointer data)
{
        struct release_task *rt = data;

        ticket_unref(rt->t);
        g_free(rt);
}

static void release_done(GObject *source, GAsyncResult *res, gpointer data)
{
        struct release_task *rt = g_task_get_task_data(G_TASK(res));
        struct ticket *t = rt->t;

        if (g_hash_table_lookup(rt->tr->tickets, t->uuid) == t)
                g_hash_table_remove(rt->tr->tickets, t->uuid);
        for (guint i = 0; i < t->waiters->len; i++)
                fy_rpc_call_return(t->waiters->pdata[i], json_true());
        g_ptr_array_set_size(t->waiters, 0);
        g_message("ticket %s removed (%s); %" G_GINT64_FORMAT " bytes transferred", t->log_id,
                  t->can_write ? "volume left ILLEGAL" : "read only",
                  __atomic_load_n(&t->transferred, __ATOMIC_RELAXED));
}

static void ticket_release_async(struct agent_transfers *tr, struct ticket *t)
{
        struct release_task *rt = g_new0(struct release_task, 1);
        g_autoptr(GTask) task = g_task_new(NULL, NULL, release_done, NULL);

        rt->tr = tr;
        rt->t = ticket_ref(t);
        g_task_set_task_data(task, rt, release_task_free);
        g_task_run_in_thread(task, release_thread);
}

static void ticket_kill_streams(struct ticket *t, const char *why);
static void ticket_cut_stalled_streams(struct ticket *t);

/* Stops serving t; call (may be NULL) is answered once its lease and locks are gone. */
static void ticket_close(struct agent_transfers *tr, struct ticket *t, struct fy_rpc_call *call)
{
        if (call)
                g_ptr_array_add(t->waiters, call);
        if (t->state == TICKET_CLOSING)
                return;        /* already on its way: the waiter is answered with the others */
        g_assert(t->state == TICKET_READY);
        /* A download never holds the lease: its client may never read again. */
        ticket_kill_streams(t, "the ticket was removed");
        t->state = TICKET_CLOSING;
        if (t->inflight == 0)
                ticket_release_async(tr, t);
}

/* A request on t ended (main thread). */
static void ticket_io_end(struct agent_transfers *tr, struct ticket *t)
{
        g_assert(t->inflight > 0);
        t->inflight--;
        t->last_activity = now_us();
        if (t->inflight > 0)
                return;
        if (t->state == TICKET_CLOSING) {
                ticket_release_async(tr, t);
        } else if (t->state == TICKET_FINALIZING) {
                g_mutex_lock(&t->lock);
                t->drained = true;
                g_cond_broadcast(&t->cond);
                g_mutex_unlock(&t->lock);
        }
}

static bool ticket_expired(struct ticket *t)
{
        return t->state == TICKET_READY && t->inflight == 0 &&
               now_us() - t->last_activity > (gint64) t->timeout * G_USEC_PER_SEC;
}

/*
 * Once a second: downloads whose client stopped reading are cut, and a
 * ticket idle for its whole timeout is removed, as if the engine had
 * removed it.
 */
static gboolean expiry_tick(gpointer data)
{
        struct agent_transfers *tr = data;
        g_autoptr(GPtrArray) expired = g_ptr_array_new();
        GHashTableIter it;
        gpointer value;

        g_hash_table_iter_init(&it, tr->tickets);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct ticket *t = value;

                if (t->state == TICKET_READY)
                        ticket_cut_stalled_streams(t);
                if (t->state == TICKET_READY && t->inflight > 0)
                        t->last_activity = now_us();       /* data flows: the ticket stays alive */
                else if (ticket_expired(t))
                        g_ptr_array_add(expired, t);
        }
        for (guint i = 0; i < expired->len; i++) {
                struct ticket *t = expired->pdata[i];

                g_message("ticket %s expired after %u s without requests; removing it", t->log_id, t->timeout);
                ticket_close(tr, t, NULL);
        }
        return G_SOURCE_CONTINUE;
}

/* ---- HTTP ---- */

static void reply_text(SoupServerMessage *msg, guint status, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void reply_text(SoupServerMessage *msg, guint status, const char *fmt, ...)
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
                reply_text(msg, SOUP_STATUS_NOT_FOUND, "no such resource: use /images/<ticket-uuid>[/extents]\n");
                return NULL;
        }
        t = g_hash_table_lookup(tr->tickets, uuid);
        if (t && ticket_expired(t)) {
                g_message("ticket %s expired after %u s without requests; removing it", t->log_id, t->timeout);
                ticket_close(tr, t, NULL);
        }
        if (!t || t->state != TICKET_READY) {
                reply_text(msg, SOUP_STATUS_FORBIDDEN, "no such ticket, or it expired or was removed\n");
                return NULL;
        }
        return t;
}

/*
 * The Content-Range of a 416 names only the size: "bytes *" then "/SIZE"
 * (RFC 9110 §14.4). libsoup's setter has no such form (given -1 it writes
 * "bytes -1--1/SIZE").
 */
static void set_unsatisfied_range(SoupServerMessage *msg, guint64 size)
{
        g_autofree char *value = g_strdup_printf("bytes */%" G_GUINT64_FORMAT, size);

        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Content-Range", value);
}

static bool method_is(SoupServerMessage *msg, const char *m)
{
        return strcmp(soup_server_message_get_method(msg), m) == 0;
}

/* PUT/PATCH bodies admitted on every ticket of this process (main thread): their memory is bounded. */
static unsigned writers_total;

/* A request admitted on a ticket, counted until its message finishes. */
struct admit {
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
                writers_total--;
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
        ticket_unref(ad->t);
        g_free(ad);
}

static void admit(struct ticket *t, SoupServerMessage *msg, bool write)
{
        struct admit *ad = g_new0(struct admit, 1);

        ad->t = ticket_ref(t);
        ad->write = write;
        if (write) {
                t->writers++;
                writers_total++;
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
        reply_text(msg, status, "%s", text);
}

/*
 * Every request, on every path, before its body is read: refuse what cannot
 * succeed so that no body is ever buffered for it. Only a PUT or PATCH
 * within its limit, on a ticket that allows writing, may send a body; any
 * other request that announces one gets 413 (411 when chunked) and the
 * connection is closed. Admitted requests count against the ticket's
 * max_readers / max_writers.
 */
static void on_early(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
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
        t = g_hash_table_lookup(tr->tickets, uuid);
        if (t && ticket_expired(t)) {
                g_message("ticket %s expired after %u s without requests; removing it", t->log_id, t->timeout);
                ticket_close(tr, t, NULL);
        }
        if (!t || t->state != TICKET_READY) {
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
                } else if (writers_total >= MAX_WRITERS_TOTAL) {
                        early_reply(tr, msg, body, SOUP_STATUS_SERVICE_UNAVAILABLE, RETRY_AFTER,
                                    "too many writes on this host (at most %u at once); retry shortly\n",
                                    MAX_WRITERS_TOTAL);
                } else {
                        admit(t, msg, true);
                }
        } else if (method_is(msg, "GET")) {
                if (t->readers >= MAX_READERS)
                        early_reply(tr, msg, false, SOUP_STATUS_SERVICE_UNAVAILABLE, RETRY_AFTER,
                                    "too many reads on this ticket (at most %u at once); retry shortly\n", MAX_READERS);
                else
                        admit(t, msg, false);
        }
}

/* ---- requests done in a worker thread ---- */

enum io_kind { IO_WRITE, IO_ZERO, IO_FLUSH, IO_EXTENTS, IO_READ };

struct io_req {
        struct agent_transfers *tr;
        struct ticket *t;
        SoupServerMessage *msg;        /* NULL for the reads of a streamed GET */
        enum io_kind kind;
        guint64 offset;
        guint64 length;
        GBytes *data;                  /* IO_WRITE: the body; IO_READ: what was read */
        bool flush;
        int err;                       /* -errno of the I/O */
        json_t *result;                /* IO_EXTENTS */
        struct get_stream *stream;     /* IO_READ */
        void (*done)(struct io_req *io);        /* main thread, once the I/O is over */
};

static void io_req_free(struct io_req *io)
{

        if (io->msg)
                g_object_unref(io->msg);
        if (io->data)
                g_bytes_unref(io->data);
        json_decref(io->result);
        ticket_unref(io->t);
        g_free(io);
}

static int zero_fill(int fd, guint64 off, guint64 len)
{
        g_autofree guint8 *zeros = g_malloc0(READ_CHUNK);

        while (len > 0) {
                size_t n = (size_t) MIN(len, (guint64) READ_CHUNK);
                int r = fy_pwrite_full(fd, zeros, n, off);

                if (r < 0)
                        return r;
                off += n;
                len -= n;
        }
        return 0;
}

/* Zeroes [off, off+len): punches holes when allowed, else zeroes in place; grows the file (as a hole) if needed. */
static int zero_range(int fd, guint64 off, guint64 len, bool punch)
{
        struct stat st;
        guint64 end = off + len;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (end > (guint64) st.st_size) {
                if (ftruncate(fd, (off_t) end) < 0)
                        return -errno;
                if (off >= (guint64) st.st_size) {
                        /* Past the old end it already reads as zeros; allocate only when asked not to be sparse. */
                        if (!punch && fallocate(fd, 0, (off_t) off, (off_t) len) < 0 && errno != EOPNOTSUPP)
                                return -errno;
                        return 0;
                }
                len = (guint64) st.st_size - off;
        }
        if (len == 0)
                return 0;
        if (punch) {
                if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) len) == 0)
                        return 0;
                if (errno != EOPNOTSUPP)
                        return -errno;
        }
        if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) len) == 0)
                return 0;
        if (errno != EOPNOTSUPP)
                return -errno;
        return zero_fill(fd, off, len);
}

static void extent_add(json_t *list, guint64 start, guint64 length, bool zero)
{
        json_t *last = json_array_size(list) ? json_array_get(list, json_array_size(list) - 1) : NULL;

        if (length == 0)
                return;
        if (last && json_is_true(json_object_get(last, "zero")) == zero) {
                json_object_set_new(last, "length",
                                    json_integer(json_integer_value(json_object_get(last, "length")) + (json_int_t) length));
                return;
        }
        json_array_append_new(list, json_pack("{s:I, s:I, s:b, s:b}", "start", (json_int_t) start,
                                              "length", (json_int_t) length, "zero", zero, "hole", zero));
}

/* Data and holes of the file over [0, size), from SEEK_DATA/SEEK_HOLE; past the file's end is a hole. */
static int extents_of(int fd, guint64 size, json_t **ret)
{
        g_autoptr(json_t) list = json_array();
        struct stat st;
        guint64 end, pos = 0;

        if (fstat(fd, &st) < 0)
                return -errno;
        end = MIN(size, (guint64) st.st_size);
        while (pos < end) {
                off_t data, hole;

                if (json_array_size(list) >= EXTENTS_MAX - 1) {
                        extent_add(list, pos, end - pos, false);      /* reading it is always correct */
                        pos = end;
                        break;
                }
                data = lseek(fd, (off_t) pos, SEEK_DATA);
                if (data < 0 && errno != ENXIO)
                        return -errno;
                if (data < 0 || (guint64) data > end)
                        data = (off_t) end;
                extent_add(list, pos, (guint64) data - pos, true);
                if ((guint64) data >= end) {
                        pos = end;
                        break;
                }
                hole = lseek(fd, data, SEEK_HOLE);
                if (hole < 0)
                        return -errno;
                if ((guint64) hole > end)
                        hole = (off_t) end;
                extent_add(list, (guint64) data, (guint64) (hole - data), false);
                pos = (guint64) hole;
        }
        extent_add(list, pos, size - pos, true);
        *ret = g_steal_pointer(&list);
        return 0;
}

/* Reads [off, off+len) of the file; past its end reads as zeros. */
static int read_range(int fd, guint64 off, size_t len, GBytes **ret)
{
        guint8 *buf = g_malloc(len);
        size_t done = 0;

        while (done < len) {
                ssize_t n = pread(fd, buf + done, len - done, (off_t) (off + done));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;
                        g_free(buf);
                        return r;
                }
                if (n == 0) {
                        memset(buf + done, 0, len - done);
                        break;
                }
                done += (size_t) n;
        }
        *ret = g_bytes_new_take(buf, len);
        return 0;
}

/* Pool thread: the I/O itself. Writes run only while the ticket holds its lease (ticket_write_begin). */
static void io_run(struct io_req *io)
{
        struct ticket *t = io->t;
        bool write = io->kind == IO_WRITE || io->kind == IO_ZERO || io->kind == IO_FLUSH || io->flush;
        gsize len;
        const void *buf;
        int r = 0;

        if (write && !ticket_write_begin(t)) {
                io->err = -ESTALE;
                return;
        }
        switch (io->kind) {
        case IO_WRITE:
                buf = g_bytes_get_data(io->data, &len);
                r = fy_pwrite_full(t->fd, buf, len, io->offset);
                if (r == 0)
                        __atomic_fetch_add(&t->transferred, (gint64) len, __ATOMIC_RELAXED);
                break;
        case IO_ZERO:
                r = zero_range(t->fd, io->offset, io->length, t->punch);
                break;
        case IO_FLUSH:
                break;
        case IO_EXTENTS:
                r = extents_of(t->fd, t->size, &io->result);
                break;
        case IO_READ:
                r = read_range(t->fd, io->offset, (size_t) io->length, &io->data);
                if (r == 0)
                        __atomic_fetch_add(&t->transferred, (gint64) io->length, __ATOMIC_RELAXED);
                break;
        }
        if (r == 0 && (io->flush || io->kind == IO_FLUSH) && fsync(t->fd) < 0)
                r = -errno;
        if (write)
                ticket_write_end(t);
        io->err = r;
}

static gboolean io_complete(gpointer data)
{
        struct io_req *io = data;

        io->done(io);
        io_req_free(io);
        return G_SOURCE_REMOVE;
}

static void io_pool_func(gpointer data, gpointer user)
{
        struct io_req *io = data;
        struct agent_transfers *tr = user;

        io_run(io);
        g_atomic_int_add(&tr->io_running, -1);
        g_main_context_invoke(tr->agent->main_context, io_complete, io);
}

static void io_queue(struct agent_transfers *tr, struct io_req *io)
{
        g_atomic_int_inc(&tr->io_running);
        g_thread_pool_push(tr->pool, io, NULL);
}

static guint io_status(int err)
{
        return err == -ENOSPC || err == -EDQUOT ? SOUP_STATUS_INSUFFICIENT_STORAGE : SOUP_STATUS_INTERNAL_SERVER_ERROR;
}

static void io_done(struct io_req *io)
{
        if (io->err == -ESTALE) {
                reply_text(io->msg, SOUP_STATUS_FORBIDDEN, "the ticket was removed; nothing was written\n");
        } else if (io->err < 0) {
                g_warning("ticket %s: %s of %" G_GUINT64_FORMAT " bytes at %" G_GUINT64_FORMAT " failed: %s",
                          io->t->log_id, io->kind == IO_WRITE ? "write" : io->kind == IO_ZERO ? "zero" :
                          io->kind == IO_FLUSH ? "flush" : "extents", io->length, io->offset, g_strerror(-io->err));
                reply_text(io->msg, io_status(io->err), "%s\n", g_strerror(-io->err));
        } else if (io->kind == IO_EXTENTS) {
                reply_json(io->msg, SOUP_STATUS_OK, io->result);
        } else {
                soup_server_message_set_status(io->msg, SOUP_STATUS_OK, NULL);
        }
        soup_server_message_unpause(io->msg);
        ticket_io_end(io->tr, io->t);
}

/* Runs io in the pool; msg stays paused until it is done. */
static void io_start(struct agent_transfers *tr, struct io_req *io)
{
        io->tr = tr;
        io->done = io_done;
        io->t->inflight++;
        soup_server_message_pause(io->msg);
        io_queue(tr, io);
}

static struct io_req *io_new(struct ticket *t, SoupServerMessage *msg, enum io_kind kind)
{
        struct io_req *io = g_new0(struct io_req, 1);

        io->t = ticket_ref(t);
        io->msg = msg ? g_object_ref(msg) : NULL;
        io->kind = kind;
        return io;
}

/* ---- GET: streamed in chunks, at most READ_QUEUE of them in memory ---- */

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
        bool ended;                    /* ticket_io_end done */
};

static void stream_unref(struct get_stream *st)
{
        if (--st->refs > 0)
                return;
        g_object_unref(st->msg);
        ticket_unref(st->t);
        g_free(st);
}

static void stream_end_io(struct get_stream *st)
{
        if (st->ended)
                return;
        st->ended = true;
        g_ptr_array_remove_fast(st->t->streams, st);
        ticket_io_end(st->tr, st->t);
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

static void ticket_kill_streams(struct ticket *t, const char *why)
{
        g_autoptr(GPtrArray) live = g_ptr_array_new();

        /* stream_kill removes each from t->streams: walk a copy. */
        for (guint i = 0; i < t->streams->len; i++)
                g_ptr_array_add(live, t->streams->pdata[i]);
        for (guint i = 0; i < live->len; i++)
                stream_kill(live->pdata[i], why);
}

static void ticket_cut_stalled_streams(struct ticket *t)
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
        io = io_new(st->t, NULL, IO_READ);
        io->tr = st->tr;
        io->offset = st->offset;
        io->length = MIN(st->remaining, (guint64) READ_CHUNK);
        io->stream = st;
        io->done = stream_read_done;
        st->refs++;
        st->reading = true;
        io_queue(st->tr, io);
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

static void handle_get(struct agent_transfers *tr, struct ticket *t, SoupServerMessage *msg, GHashTable *query)
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
                reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
                return;
        }
        if (range && (r = agent_xfer_parse_range(range, t->size, &start, &len, &error)) < 0) {
                if (agent_xfer_http_status(r) == SOUP_STATUS_REQUESTED_RANGE_NOT_SATISFIABLE)
                        set_unsatisfied_range(msg, t->size);
                reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
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
        st->t = ticket_ref(t);
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

static bool range_outside(struct ticket *t, SoupServerMessage *msg, guint64 offset, guint64 len)
{
        if (agent_xfer_range_fits(t->size, offset, len))
                return false;
        set_unsatisfied_range(msg, t->size);
        reply_text(msg, SOUP_STATUS_REQUESTED_RANGE_NOT_SATISFIABLE,
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
                reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
                return;
        }
        if (range_outside(t, msg, offset, len))
                return;
        if (len == 0) {
                soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
                return;
        }
        io = io_new(t, msg, IO_WRITE);
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
                reply_text(msg, agent_xfer_http_status(r), "%s\n", error->message);
                return;
        }
        if (p.op == AGENT_XFER_OP_FLUSH) {
                io = io_new(t, msg, IO_FLUSH);
                io_start(tr, io);
                return;
        }
        if (range_outside(t, msg, p.offset, p.size))
                return;
        if (p.size == 0) {
                soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
                return;
        }
        io = io_new(t, msg, IO_ZERO);
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

static void on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
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
                        reply_text(msg, SOUP_STATUS_FORBIDDEN, "this ticket does not allow reading\n");
                } else if (extents) {
                        const char *ctx = query ? g_hash_table_lookup(query, "context") : NULL;

                        if (ctx && strcmp(ctx, "zero") != 0)
                                reply_text(msg, SOUP_STATUS_NOT_FOUND, "only context=zero extents are known\n");
                        else
                                io_start(tr, io_new(t, msg, IO_EXTENTS));
                } else {
                        handle_get(tr, t, msg, query);
                }
        } else if ((method_is(msg, "PUT") || method_is(msg, "PATCH")) && !extents) {
                if (!t->can_write)
                        reply_text(msg, SOUP_STATUS_FORBIDDEN, "this ticket does not allow writing\n");
                else if (method_is(msg, "PUT"))
                        handle_put(tr, t, msg, query);
                else
                        handle_patch(tr, t, msg);
        } else {
                reply_text(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "use OPTIONS, GET, PUT or PATCH\n");
        }
}

/* ---- the verbs ---- */

struct add_args {
        struct agent_transfers *tr;
        struct fy_rpc_call *call;
        struct ticket *t;
        bool has_generation;
        unsigned generation;
        GError *error;
};

static void add_args_free(gpointer data)
{
        struct add_args *aa = data;

        ticket_unref(aa->t);
        g_clear_error(&aa->error);
        g_free(aa);
}

/*
 * The volume a "file:///…" url names: its real path must be
 * <storage_root>/<sd>/images/<img>/<vol> with UUIDs, a regular file with
 * metadata. Symlinks are resolved first, so nothing outside the storage
 * root (or another volume under a volume's name) can be reached.
 */
static int resolve_url(struct agent *a, const char *url, struct agent_volref *ret_ref, char **ret_path,
                       GError **error)
{
        g_autofree char *path = NULL;
        g_autofree char *real = NULL;
        g_autofree char *root = NULL;
        struct agent_volref ref;
        struct stat st;
        int r;

        r = agent_ticket_url_path(url, &path, error);
        if (r < 0)
                return r;
        real = realpath(path, NULL);
        root = realpath(a->config.storage_root, NULL);
        if (!real || !root) {
                g_set_error(error, FY_ERROR, FY_ERR_VOLUME_DOES_NOT_EXIST, "no volume at %s: %s", path, g_strerror(errno));
                return -ENOENT;
        }
        if (agent_ticket_volume_of(real, root, &ref) < 0 || stat(real, &st) < 0 || !S_ISREG(st.st_mode)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "ticket.url %.256s is not a volume of this host's storage (%s/<sd>/images/<img>/<vol>)",
                            url, a->config.storage_root);
                return -EACCES;
        }
        *ret_ref = ref;
        *ret_path = agent_volume_path(a, &ref);
        return 0;
}

static gboolean cancel_later(gpointer data)
{
        g_cancellable_cancel(data);
        return G_SOURCE_REMOVE;
}

/* Worker: locks, lease (write), metadata checks, ILLEGAL (write), open. */
static int ticket_prepare(struct add_args *aa, GError **error)
{
        struct ticket *t = aa->t;
        struct agent *a = t->agent;
        g_autoptr(fy_volume_meta) meta = NULL;
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        enum fy_vol_legality prior;
        struct stat st;
        guint source;
        int r;

        r = resolve_url(a, t->url, &t->ref, &t->path, error);
        if (r < 0)
                return r;
        if ((r = agent_sd_check(a, t->ref.sd, error)) < 0 ||
            (r = agent_volume_meta_read(a, &t->ref, &meta, error)) < 0)
                return r;

        /* The same host-local locks as a copy: reading shares the image, writing owns it. */
        t->locks[0] = (struct agent_lock_req) { g_strconcat("img:", t->ref.sd, ":", t->ref.img, NULL), t->can_write };
        t->locks[1] = (struct agent_lock_req) { g_strconcat("sd:", t->ref.sd, NULL), false };
        source = g_timeout_add_seconds_full(G_PRIORITY_DEFAULT, LOCK_WAIT_S, cancel_later, g_object_ref(cancel),
                                            g_object_unref);
        r = agent_locks_acquire(a->locks, t->locks, 2, cancel);
        g_source_remove(source);
        if (r < 0) {
                g_set_error(error, FY_ERROR, FY_ERR_VOLUME_IN_USE,
                            "image %s is busy with another job on this host; try again when it ends", t->ref.img);
                return r;
        }
        t->locked = true;

        if (t->can_write) {
                if (meta->voltype != FY_VOLTYPE_LEAF || strcmp(meta->parent, FY_ZERO_UUID) != 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "volume %s is part of a chain; uploads replace a whole single-volume image",
                                    t->ref.vol);
                        return -EINVAL;
                }
                t->lease_path = agent_volume_lease_path(a, &t->ref);
                t->lease = (struct agent_lease) { t->ref.sd, t->ref.vol, t->lease_path, 0 };
                r = agent_lease_acquire(&t->lease, FY_ERR_LEASE_ACQUIRE, NULL, error);
                if (r < 0)
                        return r;
                t->leased = true;
                /* Re-read under the lease: only now is the metadata ours. */
                g_clear_pointer(&meta, fy_volume_meta_free);
                if ((r = agent_volume_meta_read(a, &t->ref, &meta, error)) < 0)
                        return r;
                if (aa->has_generation && aa->generation != meta->generation) {
                        g_set_error(error, FY_ERROR, FY_ERR_GENERATION_MISMATCH,
                                    "volume %s has generation %u, the ticket expected %u; nothing was changed",
                                    t->ref.vol, meta->generation, aa->generation);
                        return -ESTALE;
                }
        }

        t->fd = open(t->path, (t->can_write ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
        if (t->fd < 0 || fstat(t->fd, &st) < 0) {
                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot open volume %s: %s", t->path, g_strerror(-r));
                return r;
        }
        t->format = meta->format;
        t->capacity = meta->capacity;
        t->generation = meta->generation;
        t->punch = t->sparse && meta->type == FY_TYPE_SPARSE;

        if (!t->can_write) {
                if (t->size == 0)
                        t->size = (guint64) st.st_size;
                if (t->size > (guint64) st.st_size) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "ticket.size %" G_GUINT64_FORMAT " is larger than volume %s (%" G_GOFFSET_FORMAT " bytes)",
                                    t->size, t->ref.vol, (goffset) st.st_size);
                        return -EINVAL;
                }
                return 0;
        }
        if (t->size == 0 ||
            (meta->format == FY_FORMAT_RAW && t->size > meta->capacity) ||
            (meta->format == FY_FORMAT_COW && t->size > AGENT_TICKET_QCOW2_SLACK(meta->capacity))) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "ticket.size %" G_GUINT64_FORMAT " does not fit volume %s (%s, capacity %" G_GUINT64_FORMAT
                            " bytes)", t->size, t->ref.vol, fy_vol_format_to_string(meta->format), meta->capacity);
                return -EFBIG;
        }
        prior = meta->legality;
        meta->legality = FY_LEGALITY_ILLEGAL;
        if ((r = agent_volume_meta_write(a, &t->ref, meta, error)) < 0)
                return r;
        /* A qcow2 upload is the whole file: start from nothing so no old byte survives past the new end. */
        if (meta->format == FY_FORMAT_COW && ftruncate(t->fd, 0) < 0) {
                g_autoptr(GError) restore = NULL;

                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot empty volume %s: %s", t->path, g_strerror(-r));
                /* Nothing was written: put the legality back while the lease is still ours, so storage
                 * agrees with the engine, which restores its own record when the ticket is refused. */
                meta->legality = prior;
                if (agent_volume_meta_write(a, &t->ref, meta, &restore) < 0)
                        g_warning("ticket %s: volume %s stays ILLEGAL: %s", t->log_id, t->ref.vol, restore->message);
                return r;
        }
        return 0;
}

static void add_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
        struct add_args *aa = data;

        if (ticket_prepare(aa, &aa->error) < 0) {
                if (!aa->error)
                        aa->error = g_error_new(FY_ERROR, FY_ERR_GENERAL, "ticket %s: internal error", aa->t->log_id);
                ticket_release(aa->t);
        }
        g_task_return_boolean(task, TRUE);
}

static void add_done(GObject *source, GAsyncResult *res, gpointer data)
{
        struct add_args *aa = g_task_get_task_data(G_TASK(res));
        struct ticket *t = aa->t;

        if (aa->error) {
                g_hash_table_remove(aa->tr->tickets, t->uuid);
                fy_rpc_call_gerror(aa->call, aa->error);
                return;
        }
        t->state = TICKET_READY;
        t->last_activity = now_us();
        g_message("ticket %s added: %s%s of volume %s/%s/%s, %" G_GUINT64_FORMAT " bytes, %u s timeout%s",
                  t->log_id, t->can_read ? "read" : "", t->can_write ? "write" : "", t->ref.sd, t->ref.img,
                  t->ref.vol, t->size, t->timeout, t->can_write ? "; volume ILLEGAL until finalized" : "");
        fy_rpc_call_return(aa->call, ticket_status(t));
}

void agent_transfer_add_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        struct agent_transfers *tr = transfers_of(a);
        g_autoptr(GError) error = NULL;
        g_autoptr(ticket) t = NULL;
        struct agent_ticket_params p;
        json_t *tk = NULL;
        struct add_args *aa;
        g_autoptr(GTask) task = NULL;

        if (fy_rpc_param_object(params, "ticket", true, &tk, &error) < 0 ||
            agent_ticket_params_parse(tk, &p, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        t = g_new0(struct ticket, 1);
        t->refs = 1;
        t->agent = a;
        t->fd = -1;
        g_mutex_init(&t->lock);
        g_cond_init(&t->cond);
        t->waiters = g_ptr_array_new();
        t->streams = g_ptr_array_new();
        memcpy(t->uuid, p.uuid, sizeof(t->uuid));
        g_strlcpy(t->log_id, t->uuid, sizeof(t->log_id));
        t->can_read = p.can_read;
        t->can_write = p.can_write;
        t->url = g_strdup(p.url);
        t->transfer_id = g_strdup(p.transfer_id);
        t->size = p.size;
        t->timeout = p.timeout;
        t->sparse = p.sparse;
        t->state = TICKET_ADDING;

        if (g_hash_table_contains(tr->tickets, t->uuid)) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s exists already", t->log_id);
                return;
        }
        if (g_hash_table_size(tr->tickets) >= a->config.transfer_max_tickets) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET,
                                  "this host serves %u tickets already (transfer_max_tickets); remove finished ones",
                                  g_hash_table_size(tr->tickets));
                return;
        }
        {
                /* A quick look for the same volume by its url; the worker checks the resolved path. */
                GHashTableIter it;
                gpointer value;

                g_hash_table_iter_init(&it, tr->tickets);
                while (g_hash_table_iter_next(&it, NULL, &value)) {
                        struct ticket *o = value;

                        if (strcmp(o->url, t->url) == 0 && (o->can_write || t->can_write)) {
                                fy_rpc_call_error(call, FY_ERR_VOLUME_IN_USE,
                                                  "ticket %s is already transferring this volume", o->uuid);
                                return;
                        }
                }
        }
        g_hash_table_insert(tr->tickets, g_strdup(t->uuid), ticket_ref(t));

        aa = g_new0(struct add_args, 1);
        aa->tr = tr;
        aa->call = call;
        aa->t = ticket_ref(t);
        aa->has_generation = p.has_generation;
        aa->generation = p.generation;
        task = g_task_new(NULL, NULL, add_done, NULL);
        g_task_set_task_data(task, aa, add_args_free);
        g_task_run_in_thread(task, add_thread);
}

static struct ticket *ticket_param(struct agent_transfers *tr, struct fy_rpc_call *call, json_t *params)
{
        g_autoptr(GError) error = NULL;
        char uuid[FY_UUID_STR_LEN + 1];
        const char *id = NULL;

        if (fy_rpc_param_uuid(params, "uuid", true, &id, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return NULL;
        }
        for (size_t i = 0; i <= FY_UUID_STR_LEN; i++)
                uuid[i] = g_ascii_tolower(id[i]);
        return g_hash_table_lookup(tr->tickets, uuid);
}

void agent_transfer_get_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent_transfers *tr = transfers_of(userdata);
        g_autoptr(GError) error = NULL;
        const char *id = NULL;
        struct ticket *t;

        if (fy_rpc_param_uuid(params, "uuid", true, &id, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        t = ticket_param(tr, call, params);
        if (!t) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "no ticket %s on this host (never added, removed or expired)", id);
                return;
        }
        fy_rpc_call_return(call, ticket_status(t));
}

/* Removing a ticket this host does not have succeeds: the engine may repeat a removal after a restart. */
void agent_transfer_remove_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent_transfers *tr = transfers_of(userdata);
        struct ticket *t;

        if (!fy_uuid_is_valid(json_string_value(json_object_get(params, "uuid")))) {
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "uuid: required, a ticket UUID");
                return;
        }
        t = ticket_param(tr, call, params);
        if (!t) {
                fy_rpc_call_return(call, json_true());
                return;
        }
        switch (t->state) {
        case TICKET_ADDING:
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s is still being added; try again", t->log_id);
                return;
        case TICKET_FINALIZING:
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s is being finalized by job %s; it goes away when the job ends",
                                  t->log_id, t->finalize_job);
                return;
        case TICKET_READY:
        case TICKET_CLOSING:
                g_message("removing ticket %s", t->log_id);
                ticket_close(tr, t, call);
                return;
        }
}

/* ---- finalize: a job that verifies the upload and marks the volume LEGAL ---- */

struct finalize_job {
        struct agent_transfers *tr;
        struct ticket *t;
};

static void finalize_job_free(void *data)
{
        struct finalize_job *fj = data;

        ticket_unref(fj->t);
        g_free(fj);
}

/*
 * The child dies with the agent, and is bounded: it reads an image a
 * client uploaded, so a crafted one must not make it take the host's
 * memory or a CPU for long (the job's abort kills it sooner).
 */
static void qimg_child_setup(gpointer data)
{
        struct rlimit as = { QIMG_AS_MAX, QIMG_AS_MAX };
        struct rlimit cpu = { QIMG_CPU_MAX_S, QIMG_CPU_MAX_S };

        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        (void) setrlimit(RLIMIT_AS, &as);
        (void) setrlimit(RLIMIT_CPU, &cpu);
}

/* Runs qemu-img with argv; returns its exit status (≥ 0) with stdout in *ret_out, or -errno. */
static int qimg(const char *const *argv, GCancellable *cancel, char **ret_out, GError **error)
{
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                                                     G_SUBPROCESS_FLAGS_STDERR_MERGE);
        g_autoptr(GSubprocess) p = NULL;
        g_autofree char *out = NULL;

        g_subprocess_launcher_set_child_setup(l, qimg_child_setup, NULL, NULL);
        p = g_subprocess_launcher_spawnv(l, argv, error);
        if (!p)
                return -ENOEXEC;
        if (!g_subprocess_communicate_utf8(p, NULL, cancel, &out, NULL, error)) {
                g_subprocess_force_exit(p);
                g_subprocess_wait(p, NULL, NULL);
                return g_cancellable_is_cancelled(cancel) ? -ECANCELED : -EIO;
        }
        if (out && strlen(out) > QIMG_OUTPUT_MAX)
                out[QIMG_OUTPUT_MAX] = '\0';
        *ret_out = g_steal_pointer(&out);
        return g_subprocess_get_if_exited(p) ? g_subprocess_get_exit_status(p) : 128;
}

static int verify_fail(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int verify_fail(GError **error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_propagate_error(error, g_error_new_valist(FY_ERROR, FY_ERR_COPY, fmt, ap));
        va_end(ap);
        return -EINVAL;
}

/*
 * The uploaded bytes must be what the volume's metadata says: a raw volume
 * no larger than its capacity; a qcow2 volume whose header passes
 * agent_qcow2_header_check (before any qemu-img sees it: no backing file,
 * no external data file, no encryption, no unknown feature), that qemu-img
 * (bounded by qimg_child_setup) reads as qcow2 (never probed) with the same
 * answers, a virtual size within the capacity, and no corruption (qemu-img
 * check; leaked clusters are fine).
 */
static int verify_upload(struct ticket *t, GCancellable *cancel, GError **error)
{
        g_autofree char *out = NULL;
        g_autofree char *check = NULL;
        g_autoptr(json_t) info = NULL;
        const char *info_argv[] = { FERRY_QEMU_IMG, "info", "-f", "qcow2", "--output", "json", t->path, NULL };
        const char *check_argv[] = { FERRY_QEMU_IMG, "check", "-f", "qcow2", t->path, NULL };
        g_autoptr(GBytes) head = NULL;
        json_t *data;
        struct stat st;
        json_int_t vsize;
        guint64 hvsize = 0;
        size_t head_len;
        int status, r;

        if (fstat(t->fd, &st) < 0)
                return -errno;
        if (t->format == FY_FORMAT_RAW) {
                if ((guint64) st.st_size > t->capacity)
                        return verify_fail(error, "the volume file has %" G_GOFFSET_FORMAT " bytes, more than its capacity %"
                                           G_GUINT64_FORMAT, (goffset) st.st_size, t->capacity);
                return 0;
        }
        /* Before qemu-img opens it: nothing in the header may make it follow another file. */
        head_len = (size_t) MIN((guint64) st.st_size, (guint64) AGENT_QCOW2_HEADER_READ);
        r = read_range(t->fd, 0, head_len, &head);
        if (r < 0)
                return r;
        r = agent_qcow2_header_check(g_bytes_get_data(head, NULL), head_len, &hvsize, error);
        if (r < 0)
                return r;
        if (hvsize == 0 || hvsize > t->capacity)
                return verify_fail(error, "the uploaded qcow2 image has a virtual size of %" G_GUINT64_FORMAT
                                   " bytes; the disk holds %" G_GUINT64_FORMAT, hvsize, t->capacity);
        status = qimg(info_argv, cancel, &out, error);
        if (status < 0)
                return status;
        info = status == 0 ? json_loads(out, 0, NULL) : NULL;
        if (!json_is_object(info) || g_strcmp0(json_string_value(json_object_get(info, "format")), "qcow2") != 0)
                return verify_fail(error, "the uploaded data is not a qcow2 image: %s",
                                   status == 0 ? "qemu-img info answered nonsense" : g_strstrip(out));
        if (json_object_get(info, "backing-filename"))
                return verify_fail(error, "the uploaded qcow2 image has a backing file (%s); upload a self-contained image",
                                   json_string_value(json_object_get(info, "backing-filename")));
        data = json_object_get(json_object_get(info, "format-specific"), "data");
        if (json_object_get(data, "data-file"))
                return verify_fail(error, "the uploaded qcow2 image has an external data file; that is refused");
        vsize = json_integer_value(json_object_get(info, "virtual-size"));
        if (vsize <= 0 || (guint64) vsize > t->capacity)
                return verify_fail(error, "the uploaded qcow2 image has a virtual size of %" JSON_INTEGER_FORMAT
                                   " bytes; the disk holds %" G_GUINT64_FORMAT, vsize, t->capacity);
        status = qimg(check_argv, cancel, &check, error);
        if (status < 0)
                return status;
        if (status != 0 && status != 3)
                return verify_fail(error, "qemu-img check found the uploaded qcow2 image damaged: %s", g_strstrip(check));
        return 0;
}

static gboolean finalize_forget(gpointer data)
{
        struct finalize_job *fj = data;

        if (g_hash_table_lookup(fj->tr->tickets, fj->t->uuid) == fj->t)
                g_hash_table_remove(fj->tr->tickets, fj->t->uuid);
        finalize_job_free(fj);
        return G_SOURCE_REMOVE;
}

static int finalize_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct finalize_job *fj = data, *forget;
        struct ticket *t = fj->t;
        struct agent *a = t->agent;
        g_autoptr(fy_volume_meta) meta = NULL;
        gint64 deadline = now_us() + DRAIN_WAIT_S * G_USEC_PER_SEC;
        bool drained;
        int r;

        /* Requests that started before the finalize may still write: wait for them. */
        g_mutex_lock(&t->lock);
        while (!t->drained && !g_cancellable_is_cancelled(cancel) && now_us() < deadline)
                g_cond_wait_until(&t->cond, &t->lock, now_us() + G_USEC_PER_SEC);
        drained = t->drained;
        g_mutex_unlock(&t->lock);
        if (!drained) {
                r = g_cancellable_is_cancelled(cancel) ? -ECANCELED : -ETIMEDOUT;
                if (r == -ETIMEDOUT)
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                                    "requests on ticket %s did not end within %d s", t->log_id, DRAIN_WAIT_S);
                goto out;
        }
        agent_job_set_progress(job, 10);
        if (fsync(t->fd) < 0) {
                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot sync volume %s: %s", t->path, g_strerror(-r));
                goto out;
        }
        r = verify_upload(t, cancel, error);
        if (r < 0)
                goto out;
        agent_job_set_progress(job, 80);
        if (g_cancellable_is_cancelled(cancel)) {
                r = -ECANCELED;
                goto out;
        }
        /* Still under the lease taken when the ticket was added: the metadata is ours. */
        r = agent_volume_meta_read(a, &t->ref, &meta, error);
        if (r < 0)
                goto out;
        if (meta->generation != t->generation) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERATION_MISMATCH,
                            "volume %s changed generation during the upload (%u, was %u)", t->ref.vol,
                            meta->generation, t->generation);
                r = -ESTALE;
                goto out;
        }
        /* One atomic write: LEGAL and the next generation together, as a finished copy. */
        meta->legality = FY_LEGALITY_LEGAL;
        meta->generation = (t->generation + 1) % (FY_GEN_MAX + 1);
        r = agent_volume_meta_write(a, &t->ref, meta, error);
        if (r == 0)
                g_message("ticket %s finalized: volume %s verified and LEGAL, generation %u", t->log_id, t->ref.vol,
                          meta->generation);
out:
        ticket_release(t);
        forget = g_new0(struct finalize_job, 1);
        forget->tr = fj->tr;
        forget->t = ticket_ref(t);
        g_main_context_invoke(a->main_context, finalize_forget, forget);
        return r;
}

void agent_transfer_finalize_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        struct agent_transfers *tr = transfers_of(a);
        g_autoptr(GError) error = NULL;
        g_autofree char *desc = NULL;
        const char *job_id = NULL, *id = NULL;
        struct finalize_job *fj;
        struct ticket *t;

        if (fy_rpc_param_uuid(params, "job_id", true, &job_id, &error) < 0 ||
            fy_rpc_param_uuid(params, "uuid", true, &id, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        t = ticket_param(tr, call, params);
        if (!t || t->state != TICKET_READY) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "no ticket %s ready on this host (never added, removed, expired "
                                  "or already finalizing)", id);
                return;
        }
        if (!t->can_write) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s is read only: remove it instead", t->uuid);
                return;
        }
        fj = g_new0(struct finalize_job, 1);
        fj->tr = tr;
        fj->t = ticket_ref(t);
        desc = g_strdup_printf("finalize upload %s/%s/%s (ticket %s)", t->ref.sd, t->ref.img, t->ref.vol, t->log_id);
        /* Its downloads end now: a client that stopped reading must not hold the finalize. */
        ticket_kill_streams(t, "the ticket is being finalized");
        t->state = TICKET_FINALIZING;
        t->drained = t->inflight == 0;
        if (agent_jobs_add(a->jobs, job_id, "storage", desc, finalize_run, fj, finalize_job_free, &error) < 0) {
                t->state = TICKET_READY;
                fy_rpc_call_gerror(call, error);
                return;
        }
        g_free(t->finalize_job);
        t->finalize_job = g_strdup(job_id);
        g_message("finalizing ticket %s as job %s", t->log_id, job_id);
        fy_rpc_call_return(call, json_true());
}

/* ---- the server ---- */

void agent_transfers_describe(struct agent *a, json_t *obj)
{
        struct agent_transfers *tr = transfers_of(a);

        if (!tr)
                return;
        json_object_set_new(obj, "transfer_port", json_integer(tr->port));
        json_object_set_new(obj, "transfer_scheme", json_string(tr->tls ? "https" : "http"));
        json_object_set_new(obj, "transfer_tickets", json_integer(g_hash_table_size(tr->tickets)));
        /* The engine builds ticket urls (file://<storage_root>/…) from it. */
        if (!json_object_get(obj, "storage_root"))
                json_object_set_new(obj, "storage_root", json_string(a->config.storage_root));
}

static void on_http_log(void *data, GLogLevelFlags level, const char *message)
{
        g_log(G_LOG_DOMAIN, level, "image transfer endpoint: %s", message);
}

int agent_transfers_start(struct agent *a, GError **error)
{
        struct agent_transfers *tr = g_new0(struct agent_transfers, 1);
        g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(a->config.listen_address);
        g_autoptr(GSocketAddress) addr = NULL;
        g_autoptr(GTlsCertificate) cert = NULL;
        struct fy_http_limits limits = { .max_connections = MAX_CONNECTIONS };

        tr->agent = a;
        tr->tls = !a->config.insecure;
        tr->tickets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) ticket_unref);
        tr->pool = g_thread_pool_new(io_pool_func, tr, IO_THREADS, FALSE, NULL);
        a->transfers = tr;
        if (!inet) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "listen_address '%s' is not an IP address",
                            a->config.listen_address);
                return -EINVAL;
        }
        if (tr->tls) {
                cert = g_tls_certificate_new_from_files(a->config.tls_cert, a->config.tls_key, error);
                if (!cert)
                        return -EINVAL;
        }
        tr->server = soup_server_new("server-header", "ferry-agent", NULL);
        /*
         * One entry for every path, early and normal: libsoup picks one handler entry per path,
         * so a second entry (say "/images") would leave the other paths without the early check.
         */
        soup_server_add_early_handler(tr->server, NULL, on_early, tr, NULL);
        soup_server_add_handler(tr->server, NULL, on_request, tr, NULL);
        addr = g_inet_socket_address_new(inet, (guint16) a->config.transfer_port);
        limits.idle_timeout_s = a->config.idle_timeout;
        limits.header_timeout_s = a->config.request_timeout;
        limits.body_timeout_s = a->config.request_timeout;
        limits.write_timeout_s = a->config.write_timeout;
        /* Uploads are long by nature: no deadline, a minimum rate. */
        limits.body_min_rate = a->config.transfer_min_rate;
        limits.handshake_timeout_s = a->config.request_timeout;
        limits.per_address = a->config.max_connections_per_address;
        if (fy_http_server_new(tr->server, addr, cert, &limits, on_http_log, tr, &tr->httpd, error) < 0)
                return -EADDRINUSE;
        tr->port = fy_http_server_port(tr->httpd);
        tr->timer = g_timeout_add_seconds(1, expiry_tick, tr);
        g_message("image transfers served on %s://%s:%u/images/", tr->tls ? "https" : "http",
                  a->config.listen_address, tr->port);
        return 0;
}

void agent_transfers_stop(struct agent *a)
{
        struct agent_transfers *tr = transfers_of(a);
        gint64 deadline = now_us() + 30 * G_USEC_PER_SEC;

        if (!tr)
                return;
        if (tr->timer)
                g_source_remove(tr->timer);
        tr->timer = 0;
        /* Closes the listener and every connection (a GET stream's message finishes). */
        fy_http_server_free(tr->httpd);
        tr->httpd = NULL;
        /* I/O in the pool ends (a write must end before its lease goes); its completions run here. */
        while (g_atomic_int_get(&tr->io_running) > 0 && now_us() < deadline) {
                if (!g_main_context_iteration(a->main_context, FALSE))
                        g_usleep(10000);
        }
        while (g_main_context_iteration(a->main_context, FALSE))
                ;
}

void agent_transfers_free(struct agent *a)
{
        struct agent_transfers *tr = transfers_of(a);
        GHashTableIter it;
        gpointer value;

        if (!tr)
                return;
        g_hash_table_iter_init(&it, tr->tickets);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct ticket *t = value;

                for (guint i = 0; i < t->waiters->len; i++)
                        fy_rpc_call_error(t->waiters->pdata[i], AGENT_ERR_TICKET, "the agent is shutting down");
                g_ptr_array_set_size(t->waiters, 0);
                ticket_release_at_exit(t);
        }
        if (g_atomic_int_get(&tr->io_running) > 0) {
                /* A write that never ended still uses the pool and the table: they stay until exit. */
                g_warning("image transfer I/O still running at exit; not waiting for it");
                return;
        }
        g_thread_pool_free(tr->pool, TRUE, TRUE);
        g_clear_object(&tr->server);
        g_hash_table_unref(tr->tickets);
        a->transfers = NULL;
        g_free(tr);
}
