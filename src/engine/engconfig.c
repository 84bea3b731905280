/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The engine's option table; src/lib/options.c turns it into INI, CLI, --help and --show-config. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "config.h"
#include "engine.h"
#include "error.h"
#include "log.h"
#include "options.h"

#define O(field) offsetof(struct engine_config, field)

static const struct fy_option options[] = {
        { "listen_address", FY_OPT_STRING, "127.0.0.1", 1, 255, O(listen_address), "address of the REST API" },
        { "port", FY_OPT_UINT, "8443", 0, 65535, O(port), "TCP port of the REST API (0 picks a free one)" },
        { "public_url", FY_OPT_STRING, "", 0, 1024, O(public_url), "URL clients reach this engine at, for standbys' redirects to it (default: http(s)://listen_address:port)" },
        { "db", FY_OPT_STRING, "/var/lib/ferry/engine/engine.db", 1, 4096, O(db), "the inventory: a SQLite file, or PostgreSQL (postgresql:// URI or libpq key=value string)" },
        { "insecure", FY_OPT_BOOL, "false", 0, 0, O(insecure), "serve the REST API over plain HTTP, for development only (anyone on the path reads and forges requests)" },
        { "tls_cert", FY_OPT_STRING, "", 0, 4096, O(tls_cert), "PEM certificate of the engine (HTTPS, and the client certificate to agents); 'ferry pki init' makes engine.pem" },
        { "tls_key", FY_OPT_STRING, "", 0, 4096, O(tls_key), "PEM private key of tls_cert" },
        { "tls_ca", FY_OPT_STRING, "", 0, 4096, O(tls_ca), "PEM CA of the installation (ca.pem): agents' certificates must chain to it" },
        { "agent_insecure", FY_OPT_BOOL, "false", 0, 0, O(agent_insecure), "talk to agents over plain TCP (development only)" },
        { "agent_tls_cert", FY_OPT_STRING, "", 0, 4096, O(agent_tls_cert), "PEM certificate the engine presents to agents (default: tls_cert)" },
        { "agent_tls_key", FY_OPT_STRING, "", 0, 4096, O(agent_tls_key), "PEM key of agent_tls_cert (default: tls_key)" },
        { "agent_tls_ca", FY_OPT_STRING, "", 0, 4096, O(agent_tls_ca), "PEM CA that signed the agents' certificates (default: tls_ca)" },
        { "poll_interval", FY_OPT_UINT, "1000", 100, 60000, O(poll_interval), "ms between host polls and command coordinator rounds" },
        { "host_timeout", FY_OPT_UINT, "5000", 100, 600000, O(host_timeout), "ms a host has to answer a poll" },
        { "host_failures", FY_OPT_UINT, "3", 1, 100, O(host_failures), "failed polls in a row before a host is non_responsive", true },
        { "data_operations_by_hsm", FY_OPT_BOOL, "true", 0, 0, O(data_operations_by_hsm), "initial DataOperationsByHSM: copies run on any host (false: on the SPM)" },
        { "host_selection_policy", FY_OPT_STRING, "least_loaded", 1, 32, O(host_selection_policy), "least_loaded or random", true },
        { "copy_attempts", FY_OPT_UINT, "3", 1, 20, O(copy_attempts), "times one volume copy is tried before the operation fails", true },
        { "verify_copies", FY_OPT_BOOL, "true", 0, 0, O(verify_copies), "checksum source and destination after every copy (the destination on another host); a mismatch fails that try", true },
        { "host_lost_timeout", FY_OPT_UINT, "60", 5, 86400, O(host_lost_timeout), "seconds a copy's unreachable host is waited for before its job is fenced", true },
        { "fence_timeout", FY_OPT_UINT, "900", 30, 86400, O(fence_timeout), "seconds fencing a lost copy is retried before the copy is given up as failed", true },
        { "stall_timeout", FY_OPT_UINT, "120", 2, 86400, O(stall_timeout), "seconds a running copy may move no bytes before it is flagged stalled", true },
        { "stall_action", FY_OPT_STRING, "none", 1, 16, O(stall_action), "what a stalled copy gets besides the flag: none, or retry (aborted and tried on another host)", true },
        { "leader_stall_timeout", FY_OPT_UINT, "30", 10, 3600, O(leader_stall_timeout), "seconds the active engine's main loop may stall (a statement stuck on a lock) before it gives up the lead to a standby (several engines on PostgreSQL)" },
        { "sweep_interval", FY_OPT_UINT, "300", 0, 86400, O(sweep_interval), "seconds between sweeps for orphan images on storage (0: never)" },
        { "max_parallel_copies", FY_OPT_UINT, "4", 1, 64, O(max_parallel_copies), "volumes of one disk copied at the same time", true },
        { "max_body", FY_OPT_UINT, "65536", 1024, 16 * 1024 * 1024, O(max_body), "largest REST request body, bytes" },
        { "create_admin", FY_OPT_STRING, "", 0, 64, O(create_admin), "user made admin at start unless it exists (with admin_password_file)" },
        { "admin_password_file", FY_OPT_STRING, "", 0, 4096, O(admin_password_file), "file whose one line is create_admin's password" },
        { "token_idle_timeout", FY_OPT_UINT, "28800", 1, 31536000, O(token_idle_timeout), "seconds a REST token stays valid unused", true },
        { "token_lifetime", FY_OPT_UINT, "86400", 1, 31536000, O(token_lifetime), "seconds a REST token stays valid at most", true },
        { "idle_timeout", FY_OPT_UINT, "60", 1, 86400, O(idle_timeout), "seconds a keep-alive REST connection may wait for its next request" },
        { "request_timeout", FY_OPT_UINT, "30", 1, 3600, O(request_timeout), "seconds a client has to send a request's headers, and the longest pause within its body" },
        { "body_deadline", FY_OPT_UINT, "60", 1, 3600, O(body_deadline), "seconds a REST request body may take in all, however steadily it trickles" },
        { "write_timeout", FY_OPT_UINT, "30", 1, 3600, O(write_timeout), "seconds a REST client may leave its response unread before its connection is closed" },
        { "max_connections", FY_OPT_UINT, "4096", 1, 1000000, O(max_connections), "REST connections open at once (more are answered 503)" },
        { "max_connections_per_address", FY_OPT_UINT, "256", 1, 1000000, O(max_connections_per_address), "REST connections open at once from one client address (IPv6: its /64)" },
        { "list_max", FY_OPT_UINT, "1000", 1, 1000, O(list_max), "rows a collection GET without max answers at most; a longer list answers its first page with \"next\"", true },
        { "log_level", FY_OPT_STRING, "info", 1, 16, O(log_level), "debug, info, warning or error", true },
};

static int validate(void *config, GError **error)
{
        struct engine_config *c = config;
        struct { char **field; char *dflt; } inherit[] = {
                { &c->agent_tls_cert, c->tls_cert }, { &c->agent_tls_key, c->tls_key }, { &c->agent_tls_ca, c->tls_ca },
        };

        if (!c->insecure && (!*c->tls_cert || !*c->tls_key)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "HTTPS needs tls_cert and tls_key ('ferry pki init' makes engine.pem and engine.key); "
                            "set them, or pass --insecure=true for development");
                return -EINVAL;
        }
        /* One certificate serves both sides unless the agent_ ones are given. */
        for (size_t i = 0; i < G_N_ELEMENTS(inherit); i++) {
                if (!**inherit[i].field && *inherit[i].dflt) {
                        g_free(*inherit[i].field);
                        *inherit[i].field = g_strdup(inherit[i].dflt);
                }
        }
        if (!c->agent_insecure && (!*c->agent_tls_cert || !*c->agent_tls_key || !*c->agent_tls_ca)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "talking TLS to agents needs tls_cert, tls_key and tls_ca (or their agent_ variants); "
                            "set them, or pass --agent-insecure=true for development");
                return -EINVAL;
        }
        if (strcmp(c->host_selection_policy, "least_loaded") && strcmp(c->host_selection_policy, "random")) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "host_selection_policy must be least_loaded or random, got '%s'", c->host_selection_policy);
                return -EINVAL;
        }
        if (strcmp(c->stall_action, "none") && strcmp(c->stall_action, "retry")) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "stall_action must be none or retry, got '%s'", c->stall_action);
                return -EINVAL;
        }
        /* Sent as a redirect's Location: an absolute http(s) URL without a path, query or credentials. */
        if (*c->public_url) {
                g_autoptr(GUri) uri = g_uri_parse(c->public_url, G_URI_FLAGS_NONE, NULL);
                const char *scheme = uri ? g_uri_get_scheme(uri) : NULL;

                if (!uri || (g_strcmp0(scheme, "http") && g_strcmp0(scheme, "https")) || !g_uri_get_host(uri) ||
                    g_uri_get_userinfo(uri) || g_uri_get_query(uri) || g_uri_get_fragment(uri) ||
                    (*g_uri_get_path(uri) && strcmp(g_uri_get_path(uri), "/"))) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "public_url must be http(s)://HOST[:PORT] (no path, query or user), got '%s'",
                                    c->public_url);
                        return -EINVAL;
                }
        }
        if (!fy_log_level_valid(c->log_level)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "log_level must be debug, info, warning or error, got '%s'", c->log_level);
                return -EINVAL;
        }
        return 0;
}

static const struct fy_options_spec spec = {
        .program = "ferry-engine",
        .section = "engine",
        .summary = "Ferry engine: inventory, REST API, SPM election, and data operations on any host.",
        .version = FERRY_VERSION,
        .default_config = FERRY_SYSCONFDIR "/ferry/engine.conf",
        .options = options,
        .n_options = G_N_ELEMENTS(options),
        .config_size = sizeof(struct engine_config),
        .validate = validate,
};

int engine_config_load(int *argc, char ***argv, struct engine_config *ret, GError **error)
{
        memset(ret, 0, sizeof(*ret));
        return fy_options_load(&spec, ret, argc, argv, &ret->sources, error);
}

void engine_config_clear(struct engine_config *c)
{
        fy_options_clear(&spec, c);
        g_clear_pointer(&c->sources, fy_options_sources_free);
}

int engine_config_reload(struct engine_config *c, GPtrArray **ret_changed, GError **error)
{
        return fy_options_reload(&spec, c->sources, c, ret_changed, error);
}
