/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The agent process: one GLib main loop thread owns the sockets, the RPC
 * dispatcher and every piece of state below that is not marked otherwise.
 * Jobs run in their own threads (see jobs.h) and talk back to the main
 * thread through g_main_context_invoke().
 */

#include <stdbool.h>
#include <gio/gio.h>
#include <jansson.h>

#include "agentconfig.h"

struct agent_server;
struct agent_jobs;
struct agent_locks;
struct agent_rate_gov;
struct agent_transfers;

struct agent {
        struct agent_config config;
        GMainLoop *loop;
        GMainContext *main_context;
        struct agent_server *server;
        struct agent_jobs *jobs;
        struct agent_locks *locks;
        struct agent_transfers *transfers;     /* image transfer tickets and their HTTP endpoint */
        gint64 start_time;             /* g_get_real_time() when this agent started */

        /* Pool state; protected by pool_lock because job threads read it. */
        GMutex pool_lock;
        char *pool_id;                 /* NULL when not connected */
        unsigned host_id;              /* sanlock host id in use (config or connect) */
        char *master_sd;               /* domain holding the SPM lease */
        GPtrArray *pool_domains;       /* sd uuids whose lockspaces were joined */
        bool spm;                      /* SPM lease held */
        guint64 spm_lver;
        gint spm_jobs;                 /* SPM operations running now (pool_lock) */

        /* copy_rate_limit shared by running copies; counts the bytes they move (thread-safe). */
        struct agent_rate_gov *copy_gov;
};

/* Sends a JSON-RPC notification to every subscriber of jms.queue.events. Main thread. */
void agent_emit_event(struct agent *agent, const char *method, json_t *params);
bool agent_is_spm(struct agent *agent);
/* Bytes/s copied over the last few seconds. */
double agent_copy_rate(struct agent *agent);
