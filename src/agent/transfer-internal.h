/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * What the files of the image transfer endpoint share (see transfer.h for
 * the public side, ARCHITECTURE.md "Image transfers" for the design):
 *
 *   transfer.c          the endpoint's life: start, stop, free, describe
 *   transferticket.c    tickets: add (locks, lease, checks), get, remove,
 *                       release, expiry
 *   transferhttp.c      the HTTP handlers: the early check of every request,
 *                       OPTIONS, PUT, PATCH, the /extents GET
 *   transferget.c       a GET's body streamed in chunks, cut when its client
 *                       stalls or its ticket goes
 *   transferio.c        file I/O in the endpoint's thread pool: reads,
 *                       writes, zeroes, holes, flushes
 *   transferfinalize.c  the finalize job: drain, verify, LEGAL with the next
 *                       generation
 *
 * Threads: the ticket table, the SoupServer and every request live in the
 * main thread; file I/O runs in the endpoint's own bounded pool; adding and
 * releasing a ticket (locks, sanlock) run in GTask threads; finalize is a
 * job thread. Names shared between the files start with xfer_.
 */

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>
#include <libsoup/soup.h>

#include "agent.h"
#include "storage.h"
#include "transfer.h"
#include "uuid.h"
#include "volguard.h"

#define XFER_READ_CHUNK (1024 * 1024)   /* bytes read per step of a streamed GET, and of zeroing by hand */
#define XFER_LOG_ID_LEN 8               /* characters of a ticket uuid that logs show */

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
        char log_id[XFER_LOG_ID_LEN + 1];
        char *transfer_id;
        char *url;
        char *path;
        /* Its volume; for a write, the generation expected. The guard's target: its lease points into it. */
        struct agent_endpoint vol;
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

        /* Resources, released once (xfer_ticket_release), from whichever thread gets there first. */
        GMutex lock;
        GCond cond;
        bool drained;                  /* FINALIZING and no request in progress */
        unsigned writing;              /* writes running in a worker; released waits for 0 */
        struct agent_volume_guard guard;       /* locks, and for a write ticket the volume's lease */
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
        unsigned writers;              /* PUT/PATCH bodies admitted on all tickets (main thread) */
};

static inline gint64 now_us(void)
{
        return g_get_monotonic_time();
}

static inline struct agent_transfers *transfers_of(struct agent *a)
{
        return a->transfers;
}

/* ---- tickets (transferticket.c) ---- */

struct ticket *xfer_ticket_ref(struct ticket *t);
void xfer_ticket_unref(struct ticket *t);
typedef struct ticket ticket;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ticket, xfer_ticket_unref)

/*
 * Gives up the lease and the locks; writes are refused from its start and
 * those running are waited for. Idempotent, any thread, may block.
 */
void xfer_ticket_release(struct ticket *t);
/* At exit: the same, unless a write still runs (then the lease goes when the process exits). */
void xfer_ticket_release_at_exit(struct ticket *t);
/* Worker: counts a write about to start, or refuses it once the ticket is released. */
bool xfer_ticket_write_begin(struct ticket *t);
void xfer_ticket_write_end(struct ticket *t);
/* Stops serving t; call (may be NULL) is answered once its lease and locks are gone. */
void xfer_ticket_close(struct agent_transfers *tr, struct ticket *t, struct fy_rpc_call *call);
/* A request on t ended (main thread). */
void xfer_ticket_io_end(struct agent_transfers *tr, struct ticket *t);
/* The READY ticket uuid names, or NULL; one found idle past its timeout is closed on the way. */
struct ticket *xfer_ticket_lookup(struct agent_transfers *tr, const char *uuid);
/* The ticket params["uuid"] names (any state), or NULL; a bad uuid is answered on call. */
struct ticket *xfer_ticket_param(struct agent_transfers *tr, struct fy_rpc_call *call, json_t *params);
/* Once a second (main loop): stalled downloads cut, idle tickets removed. */
gboolean xfer_expiry_tick(gpointer data);

/* ---- HTTP (transferhttp.c, transferget.c) ---- */

void xfer_reply_text(SoupServerMessage *msg, guint status, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* The Content-Range of a 416, which names only the size. */
void xfer_set_unsatisfied_range(SoupServerMessage *msg, guint64 size);
/* SoupServer handlers of every path: before the body is read, and the request itself. */
void xfer_on_early(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data);
void xfer_on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data);
/* GET of the ticket's bytes (whole or one range), streamed. */
void xfer_handle_get(struct agent_transfers *tr, struct ticket *t, SoupServerMessage *msg, GHashTable *query);
/* Shuts down the connections of t's downloads (closing or finalizing: no client may hold it). */
void xfer_kill_streams(struct ticket *t, const char *why);
/* Cuts t's downloads whose client read nothing for a while. */
void xfer_cut_stalled_streams(struct ticket *t);

/* ---- file I/O in the pool (transferio.c) ---- */

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

struct io_req *xfer_io_new(struct ticket *t, SoupServerMessage *msg, enum io_kind kind);
/* Runs io in the pool; io->done runs in the main thread afterwards, then io is freed. */
void xfer_io_queue(struct agent_transfers *tr, struct io_req *io);
/* The pool's thread function (user: the struct agent_transfers). */
void xfer_io_pool_func(gpointer data, gpointer user);
/* Reads [off, off+len) of the file; past its end reads as zeros. */
int xfer_read_range(int fd, guint64 off, size_t len, GBytes **ret);
