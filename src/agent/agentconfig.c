/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The agent's option table; src/lib/options.c turns it into INI, CLI, --help and --show-config. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "agentconfig.h"
#include "config.h"     /* generated: FERRY_VERSION */
#include "error.h"
#include "log.h"
#include "options.h"

#define O(field) offsetof(struct agent_config, field)

static const struct fy_option options[] = {
        { "listen_address", FY_OPT_STRING, "127.0.0.1", 0, 255, O(listen_address), "address to listen on for JSON-RPC/STOMP" },
        { "port", FY_OPT_UINT, "54321", 0, 65535, O(port), "TCP port (VDSM's default 54321; 0 picks a free one)" },
        { "insecure", FY_OPT_BOOL, "false", 0, 0, O(insecure), "plain TCP without TLS, for development only" },
        { "tls_cert", FY_OPT_STRING, "", 0, 4096, O(tls_cert), "PEM certificate of this host (TLS)" },
        { "tls_key", FY_OPT_STRING, "", 0, 4096, O(tls_key), "PEM private key of this host (TLS)" },
        { "tls_ca", FY_OPT_STRING, "", 0, 4096, O(tls_ca), "PEM CA bundle; clients must present a certificate it signed" },
        { "host_name", FY_OPT_STRING, "", 0, 255, O(host_name), "name reported by Host.getCapabilities (default: hostname)" },
        { "host_id", FY_OPT_UINT, "0", 0, 2000, O(host_id), "sanlock host id 1-2000 (0: taken from StoragePool.connect)" },
        { "storage_root", FY_OPT_STRING, "/var/lib/ferry/storage", 1, 4096, O(storage_root), "folder holding the file storage domains (shared storage)" },
        { "sanlock_run_dir", FY_OPT_STRING, "/run/sanlock", 1, 4096, O(sanlock_run_dir), "run directory of this host's sanlock daemon" },
        { "io_timeout", FY_OPT_UINT, "10", 1, 60, O(io_timeout), "sanlock I/O timeout in seconds for new lockspaces" },
        { "connect_timeout", FY_OPT_UINT, "30", 1, 3600, O(connect_timeout), "seconds a JSON-RPC client has to send its STOMP CONNECT before it is disconnected" },
        { "max_jobs", FY_OPT_UINT, "2", 1, 64, O(max_jobs), "concurrent running jobs; more wait as pending", true },
        { "copy_rate_limit", FY_OPT_SIZE, "0", 0, 1024 * 1024, O(copy_rate_limit), "bytes/s all copies of this host may move together, shared among running jobs; suffixes K, M, G (1024-based); 0 = unlimited", true },
        { "job_autodelete", FY_OPT_UINT, "3600", 0, 7 * 24 * 3600, O(job_autodelete), "seconds a finished job is kept before it is deleted" },
        { "max_frame", FY_OPT_UINT, "4194304", 4096, 64 * 1024 * 1024, O(max_frame), "largest STOMP frame accepted, bytes" },
        { "max_connections", FY_OPT_UINT, "128", 1, 4096, O(max_connections), "concurrent client connections" },
        { "max_connections_per_address", FY_OPT_UINT, "64", 1, 4096, O(max_connections_per_address), "connections from one client address at once, JSON-RPC and image transfer each" },
        { "idle_timeout", FY_OPT_UINT, "60", 1, 86400, O(idle_timeout), "seconds a keep-alive image transfer connection may wait for its next request" },
        { "request_timeout", FY_OPT_UINT, "30", 1, 3600, O(request_timeout), "seconds an image transfer client has to send a request's headers, the longest pause within a body, and the TLS handshake" },
        { "transfer_port", FY_OPT_UINT, "54323", 0, 65535, O(transfer_port), "TCP port of the image transfer endpoint (HTTPS, or HTTP with insecure; ovirt-imageio's 54323; 0 picks a free one, reported by Host.getStats)" },
        { "transfer_max_request", FY_OPT_UINT, "8388608", 65536, 64 * 1024 * 1024, O(transfer_max_request), "largest image transfer PUT body, bytes (held in memory while written)" },
        { "transfer_max_tickets", FY_OPT_UINT, "64", 1, 1024, O(transfer_max_tickets), "image transfer tickets this host serves at once" },
        { "metrics_port", FY_OPT_UINT, "0", 0, 65535, O(metrics_port), "TCP port serving Prometheus metrics at /metrics on listen_address (HTTPS with tls_cert unless insecure; no client certificate asked); 0 = off" },
        { "log_level", FY_OPT_STRING, "info", 1, 16, O(log_level), "debug, info, warning or error", true },
};

static int agent_config_validate(void *config, GError **error)
{
        struct agent_config *c = config;

        if (!c->insecure && (!*c->tls_cert || !*c->tls_key || !*c->tls_ca)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "TLS needs tls_cert, tls_key and tls_ca; set them, or pass --insecure=true for development");
                return -EINVAL;
        }
        /*
         * The files are read at start and again later (each image-transfer
         * listener, a reload), from a working directory that a service
         * manager chooses: a relative path would name different files.
         */
        if (!c->insecure) {
                const struct { const char *name, *value; } paths[] = {
                        { "tls_cert", c->tls_cert }, { "tls_key", c->tls_key }, { "tls_ca", c->tls_ca },
                };

                for (size_t i = 0; i < G_N_ELEMENTS(paths); i++)
                        if (!g_path_is_absolute(paths[i].value)) {
                                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                            "%s '%s' is a relative path; give an absolute one (the agent does not "
                                            "resolve it against its working directory or its configuration file)",
                                            paths[i].name, paths[i].value);
                                return -EINVAL;
                        }
        }
        if (!fy_log_level_valid(c->log_level)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "log_level must be debug, info, warning or error, got '%s'", c->log_level);
                return -EINVAL;
        }
        if (!*c->host_name) {
                g_free(c->host_name);
                c->host_name = g_strdup(g_get_host_name());
        }
        return 0;
}

static const struct fy_options_spec spec = {
        .program = "ferry-agent",
        .section = "agent",
        .summary = "Ferry host agent: serves VDSM-compatible JSON-RPC over STOMP for storage domains, "
                   "volumes, sanlock leases and data copy jobs on this host.",
        .version = FERRY_VERSION,
        .default_config = FERRY_SYSCONFDIR "/ferry/agent.conf",
        .options = options,
        .n_options = G_N_ELEMENTS(options),
        .config_size = sizeof(struct agent_config),
        .validate = agent_config_validate,
};

int agent_config_load(int *argc, char ***argv, struct agent_config *ret, GError **error)
{
        memset(ret, 0, sizeof(*ret));
        return fy_options_load(&spec, ret, argc, argv, &ret->sources, error);
}

char *agent_config_dump(const struct agent_config *c)
{
        return fy_options_dump(&spec, c);
}

void agent_config_clear(struct agent_config *c)
{
        fy_options_clear(&spec, c);
        g_clear_pointer(&c->sources, fy_options_sources_free);
}

int agent_config_reload(struct agent_config *c, GPtrArray **ret_changed, GError **error)
{
        return fy_options_reload(&spec, c->sources, c, ret_changed, error);
}
