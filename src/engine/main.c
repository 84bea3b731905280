/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib-unix.h>

#include "config.h"
#include "auth.h"
#include "commands.h"
#include "flows/flows.h"
#include "hosts.h"
#include "leader.h"
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

        /* After a stop (SIGSTOP, a hung machine) longer than the lease this timer may fire before the leader
         * round learns that another engine took over: no round until the lease is known to be ours. Each
         * step checks again: a write fenced inside one deposes the engine at once, and a step stuck past
         * leader_stall_timeout returns after the renewal thread gave the lead up. */
        if (!engine_leader_fresh(e))
                return G_SOURCE_CONTINUE;
        engine_hosts_tick(e);
        if (engine_leader_fresh(e))
                engine_sweep_maybe(e);
        if (engine_leader_fresh(e))
                engine_commands_tick(e);
        if (engine_leader_fresh(e))
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
                g_free(e->dc_id);      /* a standby read it already */
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

/* The command line as started: a deposed leader executes it again (see on_deposed). */
static char **start_argv;

/*
 * Elected (or alone, on SQLite): the same path as a start. The hosts are
 * attached and reset, and the coordinator's first round resumes every
 * command from the table, as after a restart.
 */
static int on_elected(struct engine *e, GError **error)
{
        if (ensure_datacenter(e, error) < 0 || engine_auth_init(e, error) < 0)
                return -EIO;
        if (e->hosts)
                engine_hosts_free(e);
        if (engine_hosts_init(e, error) < 0)
                return -EIO;
        e->tick_source = g_timeout_add(e->config.poll_interval, on_tick, e);
        on_tick(e);
        return 0;
}

/*
 * Deposed: nothing of the old term may act again, and host calls, picks and
 * timers of the coordinator are in flight everywhere. Rather than unwind each,
 * the process becomes a fresh standby: it closes its sessions (the lock goes
 * at once) and executes itself again, on the same port.
 */
static gboolean restart_as_standby(gpointer data)
{
        struct engine *e = data;
        g_autoptr(GPtrArray) args = g_ptr_array_new_with_free_func(g_free);
        g_auto(GStrv) envp = NULL;

        for (char **a = start_argv; *a; a++)
                g_ptr_array_add(args, g_strdup(*a));
        g_ptr_array_add(args, g_strdup_printf("--port=%u", e->port));
        g_ptr_array_add(args, NULL);
        engine_leader_free(e);
        engine_store_close(e->db);
        fflush(NULL);
        /* In execve's environment, not setenv: other threads (GLib's, libsoup's) may read the environment. */
        envp = g_environ_setenv(g_get_environ(), "FERRY_ENGINE_REEXEC", "1", TRUE);
        execve("/proc/self/exe", (char **) args->pdata, envp);
        g_critical("cannot restart as a standby (%s): exiting", g_strerror(errno));
        _exit(EXIT_FAILURE);
}

static void on_deposed(struct engine *e)
{
        if (e->tick_source) {
                g_source_remove(e->tick_source);
                e->tick_source = 0;
        }
        g_idle_add_full(G_PRIORITY_HIGH, restart_as_standby, e, NULL);
}

static void on_paused(struct engine *e)
{
        if (e->tick_source) {
                g_source_remove(e->tick_source);
                e->tick_source = 0;
        }
}

static void on_resumed(struct engine *e)
{
        if (!e->tick_source)
                e->tick_source = g_timeout_add(e->config.poll_interval, on_tick, e);
}

/* A standby serves reads: the data center must exist (the first leader makes it). */
static int standby_wait(struct engine *e, GError **error)
{
        for (;;) {
                g_autoptr(json_t) dc = engine_store_dc_first(e->db, error);

                if (dc) {
                        e->dc_id = g_strdup(engine_js(dc, "id"));
                        return 0;
                }
                if (error && *error)
                        return -EIO;
                g_usleep(200 * G_TIME_SPAN_MILLISECOND);
                engine_leader_round(e);
                if (e->active)
                        return 0;
        }
}

int main(int argc, char **argv)
{
        static const struct engine_leader_hooks hooks = { on_elected, on_deposed, on_paused, on_resumed };
        struct engine engine = { 0 };
        struct engine *e = &engine;
        g_autoptr(GError) error = NULL;
        g_autofree char *engine_id = NULL;
        g_autofree char *client = NULL;
        g_autofree char *url = NULL;
        int db_lock = -1;               /* the SQLite file's lock (engine_store_lock_sole), or -1 */
        int r;

        setlocale(LC_ALL, "");
        start_argv = g_strdupv(argv);
        /* Long enough for a round of a few hundred commands in one go, short beside a host's poll timeout. */
        e->round_budget_ms = 50;
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
        /* Its database sessions carry its name: a standby ends those of a stopped leader (leader.c). */
        engine_id = fy_uuid_new();
        client = g_strdup_printf("ferry-engine %s", engine_id);

        /* Held until the process ends: a second engine on this SQLite file would be active too. */
        if (engine_store_lock_sole(e->config.db, &db_lock, &error) < 0) {
                g_critical("%s", error->message);
                return EXIT_FAILURE;
        }
        /* A deposed leader executed again (restart_as_standby): the server may be restarting, which is why it
         * was deposed; wait for it as long as a standby's takeover would. */
        for (int tries = g_getenv("FERRY_ENGINE_REEXEC") ? 60 : 1;; tries--) {
                if (engine_store_open_as(e->config.db, client, &e->db, &error) >= 0 || tries <= 1)
                        break;
                g_message("%s; retrying", error->message);
                g_clear_error(&error);
                g_usleep(500 * G_TIME_SPAN_MILLISECOND);
        }
        /* No statement blocks the main loop without end (a reconnect sets the limits again). */
        if (!e->db || engine_store_set_limits(e->db, ENGINE_LEADER_STATEMENT_LIMIT_MS, ENGINE_LEADER_STATEMENT_LIMIT_MS,
                                              &error) < 0 || engine_commands_init(e, &error) < 0) {
                g_critical("%s", error->message);
                return EXIT_FAILURE;
        }
        engine_flows_init();
        if (engine_rest_start(e, &error) < 0) {
                g_critical("cannot serve the REST API on %s:%u: %s", e->config.listen_address, e->config.port, error->message);
                return EXIT_FAILURE;
        }
        /* A wildcard address in the leader row would send a standby's 307 to the client's own machine. */
        if (!*e->config.public_url && engine_store_shared(e->db) &&
            (!*e->config.listen_address || strcmp(e->config.listen_address, "0.0.0.0") == 0 ||
             strcmp(e->config.listen_address, "::") == 0)) {
                g_critical("listen_address %s is a wildcard: with several engines on PostgreSQL set public_url "
                           "to this engine's address as clients reach it (standbys redirect writes to it)",
                           *e->config.listen_address ? e->config.listen_address : "(any)");
                return EXIT_FAILURE;
        }
        url = *e->config.public_url ? g_strdup(e->config.public_url)
                                    : g_strdup_printf("%s://%s:%u", e->config.insecure ? "http" : "https",
                                                      e->config.listen_address, e->port);
        engine_metrics_init(e);
        if (engine_leader_init(e, client, url, &hooks, &error) < 0) {
                g_critical("%s", error->message);
                return EXIT_FAILURE;
        }
        if (!e->active) {
                /* A standby: hosts are neither polled nor reset, and only the active engine makes the first admin. */
                g_autofree char *admin = g_steal_pointer(&e->config.create_admin);

                e->config.create_admin = g_strdup("");
                e->hosts = g_hash_table_new(g_str_hash, g_str_equal);
                e->sd_max_file = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
                r = standby_wait(e, &error);
                if (r >= 0 && !e->active)
                        r = engine_auth_init(e, &error);
                g_free(e->config.create_admin);
                e->config.create_admin = g_steal_pointer(&admin);
                if (r < 0) {
                        g_critical("%s", error->message);
                        return EXIT_FAILURE;
                }
        }
        if (e->config.insecure)
                g_warning("insecure=true: the REST API is served over plain HTTP; anyone on the network path "
                          "can read and forge requests. For development only: give tls_cert and tls_key instead");
        if (e->config.agent_insecure)
                g_warning("agent_insecure=true: agents are reached over plain TCP without certificates. "
                          "For development only");
        g_message("ferry-engine %s listening on %s://%s:%u, database %s (schema %d), %u host(s), %s",
                  FERRY_VERSION, e->config.insecure ? "http" : "https", e->config.listen_address, e->port,
                  engine_store_describe(e->db), engine_store_schema_version(e->db), g_hash_table_size(e->hosts),
                  e->active ? "active" : "standby");

        g_unix_signal_add(SIGTERM, on_signal, e);
        g_unix_signal_add(SIGINT, on_signal, e);
        g_unix_signal_add(SIGHUP, on_reload, e);
        fy_service_ready("serving");
        g_main_loop_run(e->loop);

        /* First: no password check may finish (and write a token) while the rest closes. */
        engine_auth_stop(e);
        if (e->tick_source)
                g_source_remove(e->tick_source);
        engine_metrics_free(e);
        if (e->kick_source)
                g_source_remove(e->kick_source);
        g_clear_pointer(&e->round_left, g_ptr_array_unref);
        engine_rest_stop(e);
        engine_leader_free(e);
        engine_hosts_free(e);
        g_hash_table_unref(e->busy);
        if (e->host_listeners)
                g_array_unref(e->host_listeners);
        engine_auth_free(e);
        engine_store_close(e->db);
        /* Only after the last write: the next engine on this file may start now. */
        if (db_lock >= 0)
                close(db_lock);
        g_free(e->dc_id);
        g_main_loop_unref(e->loop);
        engine_config_clear(&e->config);
        g_strfreev(start_argv);
        g_message("ferry-engine stopped");
        return EXIT_SUCCESS;
}
