/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Host monitor, pool membership, SPM election, storage domain creation
 * (hosts.c). Modules above it hear what happens on hosts through a
 * subscription, never through a call back into them: an agent event
 * (method, params) and a host's change of state ("up", "non_responsive").
 */
#include "engine.h"

int engine_hosts_init(struct engine *e, GError **error);
void engine_hosts_free(struct engine *e);
void engine_hosts_tick(struct engine *e);
json_t *engine_host_add(struct engine *e, const char *name, const char *address, unsigned port, GError **error);
int engine_host_set_maintenance(struct engine *e, const char *host_id, bool maintenance, GError **error);
/* Removes a host in maintenance that is not the SPM and runs nothing; 409 otherwise. */
int engine_host_remove(struct engine *e, const char *host_id, GError **error);
/* The SPM host's id if it is up, else NULL (free with g_free). */
char *engine_spm_host(struct engine *e);
/* Calls method on a host; fails at once (in the callback) if the host is unknown. */
void engine_host_call(struct engine *e, const char *host_id, const char *method, json_t *params,
                      unsigned timeout_ms, fy_rpc_client_reply_fn cb, void *userdata);
/*
 * The transport of every call to a host. NULL (the daemon): each host's agent over
 * JSON-RPC/STOMP (src/lib/rpcclient.c). Set before engine_hosts_init, the engine makes
 * no connection and hands each call to `call` instead, which must answer it later
 * (never from inside the call), once, like the RPC client; the only user is the unit
 * tests' host double (tests/unit/hostdouble.c), which also pushes agent events
 * through engine_host_event.
 */
struct engine_host_transport {
        void (*call)(void *userdata, const char *host_id, const char *method, json_t *params,
                     fy_rpc_client_reply_fn cb, void *cb_data);        /* params: owned by call */
        void *userdata;
};
/* An event the agent of host_id pushed, told to every listener (engine_hosts_subscribe). */
void engine_host_event(struct engine *e, const char *host_id, const char *method, json_t *params);
/* Host ids that are up, pool-connected and not in maintenance. */
GPtrArray *engine_usable_hosts(struct engine *e);
typedef void (*engine_done_fn)(json_t *result, const GError *error, void *userdata);
void engine_sd_add(struct engine *e, const char *name, engine_done_fn done, void *userdata);

/* An event the agent of host_id pushed (e.g. "|jobs|status|<id>"). */
typedef void (*engine_host_event_fn)(struct engine *e, const char *host_id, const char *method, json_t *params,
                                     void *userdata);
/* The host's status changed (hosts.status: up, non_responsive, ...). */
typedef void (*engine_host_state_fn)(struct engine *e, const char *host_id, const char *status, void *userdata);

struct engine_host_listener {
        engine_host_event_fn on_event;         /* may be NULL */
        engine_host_state_fn on_state;         /* may be NULL */
        void *userdata;
};

/* Adds a listener (before engine_hosts_init or any time after; never removed). */
void engine_hosts_subscribe(struct engine *e, const struct engine_host_listener *l);
