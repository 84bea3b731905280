/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * ferry-engine: one GLib main loop thread owns everything — the REST server
 * (libsoup), the SQLite inventory, one JSON-RPC client per host, the host
 * monitor, the SPM election and the command coordinator. Nothing blocks:
 * every call to a host is asynchronous and every decision is written to the
 * database before the call that acts on it.
 *
 * This header holds what every module shares (the engine's state, its
 * configuration, the error domain); each module declares its own functions
 * in its own header, and modules depend on each other one way only
 * (ARCHITECTURE.md "ferry-engine"; checked by scripts/check-engine-layers).
 */

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>
#include <libsoup/soup.h>

#include "store/store.h"
#include "jsonrpc.h"      /* json_t autoptr */
#include "rpcclient.h"

struct fy_options_sources;

/* GError domain whose codes are HTTP statuses, so the REST layer maps them 1:1. */
#define ENGINE_ERROR (engine_error_quark())
GQuark engine_error_quark(void);

struct engine_config {
        char *listen_address;
        unsigned port;
        char *public_url;              /* where clients reach this engine (a standby's 307 points to the leader's) */
        char *db;
        bool insecure;                 /* REST over plain HTTP: development only */
        char *tls_cert;                /* HTTPS certificate and key; also presented to agents */
        char *tls_key;
        char *tls_ca;                  /* the installation's CA: agents' certificates must chain to it */
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
        bool verify_copies;            /* a copy is done once source and destination hash the same */
        unsigned max_parallel_copies;  /* copy_data children of one disk running at once */
        unsigned host_lost_timeout;    /* s an unreachable copy host is waited for before fencing */
        unsigned fence_timeout;        /* s fencing is retried before the copy is given up */
        unsigned stall_timeout;        /* s a running copy may make no progress before it is flagged stalled */
        char *stall_action;            /* none | retry: a stalled copy is aborted and tried on another host */
        unsigned leader_stall_timeout; /* s the active engine's main loop may stall before it gives up the lead */
        unsigned sweep_interval;       /* s between orphan image sweeps, 0 = never */
        unsigned max_body;
        unsigned idle_timeout;         /* s a keep-alive REST connection may wait for a request */
        unsigned request_timeout;      /* s for a request's headers, and a body's longest pause */
        unsigned body_deadline;        /* s a request body may take in all */
        unsigned write_timeout;        /* s a response may wait for its client to read a byte */
        unsigned max_connections;      /* REST connections at once */
        unsigned max_connections_per_address;
        char *log_level;
        char *create_admin;            /* first admin made at start when no user of that name exists */
        char *admin_password_file;     /* its password, one line */
        unsigned token_idle_timeout;   /* s a token lives unused */
        unsigned token_lifetime;       /* s a token lives at most */
        unsigned list_max;             /* rows a collection GET answers without max (the rest: its "next" pages) */
        struct fy_options_sources *sources;     /* what a SIGHUP reload reads again */
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
        /* Stats reach the store once a round, all hosts in one transaction (hosts_flush_stats): on
         * PostgreSQL a commit per reply cost each host five round trips a second. */
        bool stats_dirty;
        gint64 seen;                   /* engine_now() of the reply behind stats */
        /* The host row's status and maintenance as the last round read them ("": not read yet). A
         * reply looks at the row again only when these say its status may change. */
        char status[24];
        bool maintenance;
};

struct engine {
        struct engine_config config;
        struct engine_store *db;
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
        guint kick_source;             /* an extra coordinator round (or the rest of one) is queued */
        GPtrArray *round_left;         /* ids of the commands of the round under way, NULL between rounds */
        guint round_pos;               /* the next of round_left to advance */
        unsigned round_budget_ms;      /* a round yields to the main loop after this long; 0: never (unit tests) */
        unsigned round_slice_max;      /* and after this many commands; 0: no limit (unit tests set 1) */
        guint64 round_serial;          /* bumped by every slice of a round (engine_commands_tick) */
        bool round_running;            /* inside a slice: what a pick reads may be shared (scheduler.c) */
        GArray *host_listeners;        /* struct engine_host_listener: who hears host events and state changes */
        const char *acting_user;       /* who sent the REST request being handled; NULL: the engine itself */
        struct engine_auth *auth;      /* login throttle, password-hashing pool, token sweep (auth.c) */
        bool active;                   /* runs the coordinator; false: a standby (leader.c) */
        struct engine_leader *leader;  /* several engines on PostgreSQL; NULL on SQLite */
        const struct engine_host_transport *transport;  /* NULL: agents over STOMP; unit tests: a double (hosts.h) */
};

/* Sets an ENGINE_ERROR with that HTTP status; returns NULL, for `return engine_fail(...)` in functions answering JSON. */
json_t *engine_fail(GError **error, int status, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* A name of a disk, VM or template: 1-64 letters, digits, spaces or _-. characters. */
bool engine_name_valid(const char *s);

int engine_config_load(int *argc, char ***argv, struct engine_config *ret, GError **error);
void engine_config_clear(struct engine_config *c);
/* Rereads the configuration (SIGHUP); applies and logs the live options that changed. */
int engine_config_reload(struct engine_config *c, GPtrArray **ret_changed, GError **error);

/* Reading the JSON rows and params every module passes around. */
static inline const char *engine_js(json_t *o, const char *key)
{
        return json_string_value(json_object_get(o, key));
}

static inline gint64 engine_ji(json_t *o, const char *key)
{
        return json_integer_value(json_object_get(o, key));
}

/* A JSON text column (params, data) of a row, parsed (never NULL). */
static inline json_t *engine_jparse(json_t *row, const char *key)
{
        const char *text = engine_js(row, key);
        json_t *v = text ? json_loads(text, 0, NULL) : NULL;

        return v ? v : json_object();
}
