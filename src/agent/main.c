/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib-unix.h>

#include "listener.h"
#include "agent.h"
#include "api.h"
#include "config.h"
#include "error.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "lease.h"
#include "locks.h"
#include "log.h"
#include "metrics.h"
#include "rategov.h"
#include "server.h"
#include "service.h"
#include "transfer.h"

#define RATE_WINDOW 5          /* seconds of history behind Host.getStats copy_rate */

static struct {
        gint64 bytes[RATE_WINDOW + 1];
        unsigned pos;
        double rate;
} rate_sampler;

void agent_emit_event(struct agent *agent, const char *method, json_t *params)
{
        g_autofree char *text = NULL;
        json_t *n;

        if (!agent->server)
                return;
        n = json_pack("{s:s, s:s, s:O}", "jsonrpc", "2.0", "method", method, "params", params);
        text = json_dumps(n, JSON_COMPACT);
        json_decref(n);
        agent_server_broadcast(agent->server, AGENT_EVENTS_DESTINATION, text);
}

bool agent_is_spm(struct agent *agent)
{
        bool spm;

        g_mutex_lock(&agent->pool_lock);
        spm = agent->spm;
        g_mutex_unlock(&agent->pool_lock);
        return spm;
}

double agent_copy_rate(struct agent *agent)
{
        return rate_sampler.rate;
}

static gboolean rate_tick(gpointer data)
{
        struct agent *a = data;
        unsigned oldest;

        rate_sampler.pos = (rate_sampler.pos + 1) % (RATE_WINDOW + 1);
        rate_sampler.bytes[rate_sampler.pos] = (gint64) agent_rate_gov_moved(a->copy_gov);
        oldest = (rate_sampler.pos + 1) % (RATE_WINDOW + 1);
        rate_sampler.rate = (double) (rate_sampler.bytes[rate_sampler.pos] - rate_sampler.bytes[oldest]) / RATE_WINDOW;
        return G_SOURCE_CONTINUE;
}

static gboolean on_signal(gpointer data)
{
        struct agent *a = data;

        g_message("signal received, shutting down");
        fy_service_stopping();
        g_main_loop_quit(a->loop);
        return G_SOURCE_CONTINUE;
}

/* SIGHUP: reread the configuration and apply what can change live. */
static gboolean on_reload(gpointer data)
{
        struct agent *a = data;
        g_autoptr(GError) error = NULL;

        fy_service_reloading();
        if (agent_config_reload(&a->config, NULL, &error) < 0) {
                g_warning("reload failed, configuration unchanged: %s", error->message);
        } else {
                fy_log_set_level(a->config.log_level);
                agent_rate_gov_set_cap(a->copy_gov, a->config.copy_rate_limit);
                agent_jobs_set_max_running(a->jobs, a->config.max_jobs);
        }
        fy_service_ready("reloaded");
        return G_SOURCE_CONTINUE;
}

int main(int argc, char **argv)
{
        struct agent agent = { 0 };
        g_autoptr(GError) error = NULL;
        g_autoptr(fy_rpc_dispatcher) dispatcher = NULL;
        int r;

        setlocale(LC_ALL, "");
        r = agent_config_load(&argc, &argv, &agent.config, &error);
        if (r > 0)
                return EXIT_SUCCESS;
        if (r < 0) {
                fprintf(stderr, "ferry-agent: %s\n", error->message);
                return 2;
        }
        fy_log_setup(agent.config.log_level, "ferry-agent", agent.config.host_name);
        {
                g_autofree char *nofile = NULL;

                int nr = fy_nofile_raise(&nofile);

                g_log(G_LOG_DOMAIN, nr < 0 ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE, "%s", nofile);
        }

        agent.start_time = g_get_real_time();
        g_mutex_init(&agent.pool_lock);
        agent.host_id = agent.config.host_id;
        agent.pool_domains = g_ptr_array_new_with_free_func(g_free);
        agent.main_context = g_main_context_default();
        agent.loop = g_main_loop_new(agent.main_context, FALSE);

        if (agent_lease_init(agent.config.sanlock_run_dir, &error) < 0) {
                g_critical("%s", error->message);
                return EXIT_FAILURE;
        }
        agent.locks = agent_locks_new();
        agent.copy_gov = agent_rate_gov_new(agent.config.copy_rate_limit);
        agent.jobs = agent_jobs_new(&agent, agent.config.max_jobs, agent.config.job_autodelete);
        dispatcher = fy_rpc_dispatcher_new(agent_api_methods, &agent);
        agent.server = agent_server_new(&agent, dispatcher, &error);
        if (!agent.server) {
                g_critical("cannot listen on %s:%u: %s", agent.config.listen_address, agent.config.port, error->message);
                return EXIT_FAILURE;
        }
        g_message("ferry-agent %s listening on %s:%u (%s), storage %s, sanlock %s, %u job slots",
                  FERRY_VERSION, agent.config.listen_address, agent_server_port(agent.server),
                  agent.config.insecure ? "plain TCP, insecure" : "TLS", agent.config.storage_root,
                  agent.config.sanlock_run_dir, agent.config.max_jobs);
        if (agent.config.insecure)
                g_warning("insecure=true: the engine's connection and image transfers are plain TCP without "
                          "certificates; anyone on the network path can read and forge them. For development only: "
                          "give tls_cert, tls_key and tls_ca instead");

        if (agent_transfers_start(&agent, &error) < 0) {
                g_critical("cannot serve image transfers on %s:%u: %s", agent.config.listen_address,
                           agent.config.transfer_port, error->message);
                return EXIT_FAILURE;
        }

        if (agent_metrics_start(&agent, dispatcher, &error) < 0) {
                g_critical("cannot serve metrics on %s:%u: %s", agent.config.listen_address,
                           agent.config.metrics_port, error->message);
                return EXIT_FAILURE;
        }

        g_unix_signal_add(SIGTERM, on_signal, &agent);
        g_unix_signal_add(SIGINT, on_signal, &agent);
        g_unix_signal_add(SIGHUP, on_reload, &agent);
        g_timeout_add_seconds(1, rate_tick, &agent);
        fy_service_ready("serving");
        g_main_loop_run(agent.loop);

        /* Jobs first: their threads release leases and locks, their events need the server.
         * No transfer request may write once its ticket's lease can go. */
        agent_metrics_stop(&agent);
        agent_jobs_refuse_new(agent.jobs);     /* the transfer stop below serves requests too */
        agent_transfers_stop(&agent);
        agent_jobs_free(agent.jobs);
        agent_transfers_free(&agent);
        agent_server_free(agent.server);
        agent.server = NULL;
        agent_locks_free(agent.locks);
        agent_rate_gov_free(agent.copy_gov);   /* after the jobs: no copy holds a flow now */
        agent_lease_shutdown();
        g_main_loop_unref(agent.loop);
        g_ptr_array_unref(agent.pool_domains);
        g_free(agent.pool_id);
        g_free(agent.master_sd);
        agent_config_clear(&agent.config);
        g_message("ferry-agent stopped");
        return EXIT_SUCCESS;
}
