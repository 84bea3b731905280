/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * ferry-engine: one GLib main loop thread owns everything — the REST server
 * (libsoup), the SQLite inventory, one JSON-RPC client per host, the host
 * monitor, the SPM election and the command coordinator. Nothing blocks:
 * every call to a host is asynchronous and every decision is written to the
 * database before the call that acts on it.
 */

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>
#include <libsoup/soup.h>

#include "db.h"
#include "jsonrpc.h"      /* json_t autoptr */
#include "rpcclient.h"

/* GError domain whose codes are HTTP statuses, so the REST layer maps them 1:1. */
#define ENGINE_ERROR (engine_error_quark())
GQuark engine_error_quark(void);

struct engine_config {
        char *listen_address;
        unsigned port;
        char *db;
        bool agent_insecure;
        char *agent_tls_cert;
        char *agent_tls_key;
        char *agent_tls_ca;
        unsigned poll_interval;        /* ms between host polls and coordinator ticks */
        unsigned host_timeout;         /* ms for a host call before it counts as a failure */
        unsigned host_failures;        /* failed polls before a host is non_responsive */
        bool data_operations_by_hsm;   /* initial value of the DataOperationsByHSM option */
        char *host_selection_policy;   /* least_loaded | random */
        unsigned copy_attempts;        /* tries of one copy_data before it fails */
        unsigned max_parallel_copies;  /* copy_data children of one disk running at once */
        unsigned host_lost_timeout;    /* s an unreachable copy host is waited for before fencing */
        unsigned fence_timeout;        /* s fencing is retried before the copy is given up */
        unsigned sweep_interval;       /* s between orphan image sweeps, 0 = never */
        unsigned max_body;
        unsigned idle_timeout;         /* s a keep-alive REST connection may wait for a request */
        unsigned request_timeout;      /* s for a request's headers, and a body's longest pause */
        unsigned max_connections;      /* REST connections at once */
        unsigned max_connections_per_address;
        char *log_level;
};

struct engine_host {
        struct engine *engine;
        char *id;
        struct fy_rpc_client *rpc;
        bool polling;                  /* a Host.getStats is in flight */
        bool connecting;               /* a StoragePool.connect is in flight */
        gint64 connect_after;          /* monotonic µs: no pool connect retry before */
        unsigned failures;
        json_t *stats;                 /* last Host.getStats result */
        gint64 stats_sent;             /* monotonic µs when the poll behind stats was sent */
        gint64 poll_sent;
};

struct engine {
        struct engine_config config;
        struct engine_db *db;
        GMainLoop *loop;
        SoupServer *http;
        struct fy_http_server *httpd;  /* its connections (src/lib/httpserve.c) */
        guint16 port;
        char *dc_id;
        GHashTable *hosts;             /* host uuid → struct engine_host* */
        GHashTable *sd_max_file;       /* domain uuid → gint64 *: largest file its filesystem holds */
        GHashTable *busy;              /* command ids with a call in flight */
        GHashTable *picking;           /* copy_data command id → struct engine_pick, until the copy is sent */
        bool spm_busy;                 /* an SPM election call is in flight */
        gint64 spm_elected;            /* monotonic µs of the last successful spmStart */
        bool sd_stats_busy;
        unsigned pool_generation;      /* bumped when a domain is added: older pool connects are stale */
        guint tick_source;
        guint kick_source;             /* an extra coordinator round is queued */
};

int engine_config_load(int *argc, char ***argv, struct engine_config *ret, GError **error);
void engine_config_clear(struct engine_config *c);

/* ---- hosts.c ---- */
int engine_hosts_init(struct engine *e, GError **error);
void engine_hosts_free(struct engine *e);
void engine_hosts_tick(struct engine *e);
json_t *engine_host_add(struct engine *e, const char *name, const char *address, unsigned port, GError **error);
int engine_host_set_maintenance(struct engine *e, const char *host_id, bool maintenance, GError **error);
int engine_host_remove(struct engine *e, const char *host_id, GError **error);
/* The SPM host's id if it is up, else NULL (borrowed from a DB row copy: free with g_free). */
char *engine_spm_host(struct engine *e);
/* Calls method on a host; fails at once (in the callback) if the host is unknown. */
void engine_host_call(struct engine *e, const char *host_id, const char *method, json_t *params,
                      unsigned timeout_ms, fy_rpc_client_reply_fn cb, void *userdata);
/* Host ids that are up, pool-connected and not in maintenance. */
GPtrArray *engine_usable_hosts(struct engine *e);
typedef void (*engine_done_fn)(json_t *result, const GError *error, void *userdata);
void engine_sd_add(struct engine *e, const char *name, engine_done_fn done, void *userdata);

/* ---- scheduler.c ---- */
/* A copy on its way to a host: counted against it (a job and its bytes) before its row says so. */
struct engine_pick {
        char *host;
        double bytes;
};
struct engine_pick *engine_pick_new(const char *host, double bytes);
void engine_pick_free(struct engine_pick *p);
/* Picks the host for a data copy, never one listed in exclude (JSON array of host ids, may be NULL);
 * NULL when none is usable now. */
char *engine_pick_copy_host(struct engine *e, json_t *exclude);
/* The same for a copy of about `bytes` (0 = unknown): least_loaded then weighs where it finishes soonest. */
char *engine_pick_copy_host_sized(struct engine *e, json_t *exclude, double bytes);

/* ---- commands.c ---- */
int engine_commands_init(struct engine *e, GError **error);
void engine_commands_tick(struct engine *e);
/* Queues one more coordinator round soon: something changed that lets a command advance. */
void engine_kick(struct engine *e);
/* REST actions; each returns the JSON answer of a 202 or NULL with an ENGINE_ERROR. */
json_t *engine_disk_create(struct engine *e, json_t *body, GError **error);
json_t *engine_disk_move(struct engine *e, const char *disk_id, json_t *body, bool keep_source, GError **error);
json_t *engine_disk_remove(struct engine *e, const char *disk_id, GError **error);
/* Cancels a running move/copy/clone: no more work starts, running copies are aborted, the
 * destination is removed; the job ends "aborted". */
json_t *engine_job_cancel(struct engine *e, const char *job_id, GError **error);

/* ---- vms.c ---- */
/* Registers the VM, snapshot and template flows (before the first coordinator round). */
void engine_vms_init(void);

/* ---- sweeper.c ---- */
/* Starts a sweep for orphan images when sweep_interval has passed since the last. */
void engine_sweep_maybe(struct engine *e);
/* True when a disk or volume row names the image on that domain, or an active command other than
 * except_command names the image (or when the database cannot tell: never remove on doubt). */
bool engine_image_in_use(struct engine *e, const char *sd, const char *img, const char *except_command);

/* ---- options / events ---- */
bool engine_option_bool(struct engine *e, const char *name, bool def);
void engine_event(struct engine *e, const char *severity, const char *command_id, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
gint64 engine_now(void);

/* ---- rest.c ---- */
int engine_rest_start(struct engine *e, GError **error);
void engine_rest_stop(struct engine *e);
