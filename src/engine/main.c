/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>

#include <glib-unix.h>

#include "config.h"
#include "auth.h"
#include "commands.h"
#include "flows/flows.h"
#include "hosts.h"
#include "metrics.h"
#include "rest.h"
#include "service.h"
#include "sweeper.h"
#include "flows/transfer.h"
#include "error.h"
#include "listener.h"
#include "log.h"
#include "uuid.h"

static gboolean on_tick(gpointer data)
{
        struct engine *e = data;

        engine_hosts_tick(e);
        engine_sweep_maybe(e);
        engine_commands_tick(e);
        engine_transfers_tick(e);
        return G_SOURCE_CONTINUE;
}

static gboolean on_signal(gpointer data)
{
        struct engine *e = data;

        g_message("signal received, shutting down");
        fy_service_stopping();
        g_main_loop_quit(e->loop);
        return G_SOURCE_CONTINUE;
}

/* SIGHUP: reread the configuration; the live options are read where they are used. */
static gboolean on_reload(gpointer data)
{
        struct engine *e = data;
        g_autoptr(GError) error = NULL;

        fy_service_reloading();
        if (engine_config_reload(&e->config, NULL, &error) < 0)
                g_warning("reload failed, configuration unchanged: %s", error->message);
        else
                fy_log_set_level(e->config.log_level);
        fy_service_ready("reloaded");
        return G_SOURCE_CONTINUE;
}

/* The one data center of this installation, made on first start. */
static int ensure_datacenter(struct engine *e, GError **error)
{
        g_autoptr(json_t) dc = engine_store_dc_first(e->db, error);
        g_autofree char *id = NULL;
        g_autofree char *pool = NULL;

        if (dc) {
                e->dc_id = g_strdup(json_string_value(json_object_get(dc, "id")));
                return 0;
        }
        if (error && *error)
                return -EIO;
        id = fy_uuid_new();
        pool = fy_uuid_new();
        if (engine_store_dc_insert(e->db, id, "Default", pool, error) < 0)
                return -EIO;
        e->dc_id = g_steal_pointer(&id);
        return 0;
}

int main(int argc, char **argv)
{
        struct engine engine = { 0 };
        struct engine *e = &engine;
        g_autoptr(GError) error = NULL;
        int r;

        setlocale(LC_ALL, "");
        r = engine_config_load(&argc, &argv, &e->config, &error);
        if (r > 0)
                return EXIT_SUCCESS;
        if (r < 0) {
                fprintf(stderr, "ferry-engine: %s\n", error->message);
                return 2;
        }
        fy_log_setup(e->config.log_level, "ferry-engine", g_get_host_name());
        {
                g_autofree char *nofile = NULL;

                int nr = fy_nofile_raise(&nofile);

                g_log(G_LOG_DOMAIN, nr < 0 ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE, "%s", nofile);
        }
        e->loop = g_main_loop_new(NULL, FALSE);

        if (engine_store_open(e->config.db, &e->db, &error) < 0 || ensure_datacenter(e, &error) < 0 ||
            engine_auth_init(e, &error) < 0 || engine_hosts_init(e, &error) < 0 ||
            engine_commands_init(e, &error) < 0) {
                g_critical("%s", error->message);
                return EXIT_FAILURE;
        }
        engine_flows_init();
        if (engine_rest_start(e, &error) < 0) {
                g_critical("cannot serve the REST API on %s:%u: %s", e->config.listen_address, e->config.port, error->message);
                return EXIT_FAILURE;
        }
        if (e->config.insecure)
                g_warning("insecure=true: the REST API is served over plain HTTP; anyone on the network path "
                          "can read and forge requests. For development only: give tls_cert and tls_key instead");
        if (e->config.agent_insecure)
                g_warning("agent_insecure=true: agents are reached over plain TCP without certificates. "
                          "For development only");
        g_message("ferry-engine %s listening on %s://%s:%u, database %s (schema %d), %u host(s)",
                  FERRY_VERSION, e->config.insecure ? "http" : "https", e->config.listen_address, e->port,
                  engine_store_describe(e->db), engine_store_schema_version(e->db), g_hash_table_size(e->hosts));

        g_unix_signal_add(SIGTERM, on_signal, e);
        g_unix_signal_add(SIGINT, on_signal, e);
        g_unix_signal_add(SIGHUP, on_reload, e);
        e->tick_source = g_timeout_add(e->config.poll_interval, on_tick, e);
        engine_metrics_init(e);
        on_tick(e);
        fy_service_ready("serving");
        g_main_loop_run(e->loop);

        /* First: no password check may finish (and write a token) while the rest closes. */
        engine_auth_stop(e);
        g_source_remove(e->tick_source);
        engine_metrics_free(e);
        if (e->kick_source)
                g_source_remove(e->kick_source);
        engine_rest_stop(e);
        engine_hosts_free(e);
        g_hash_table_unref(e->busy);
        if (e->host_listeners)
                g_array_unref(e->host_listeners);
        engine_auth_free(e);
        engine_store_close(e->db);
        g_free(e->dc_id);
        g_main_loop_unref(e->loop);
        engine_config_clear(&e->config);
        g_message("ferry-engine stopped");
        return EXIT_SUCCESS;
}
