/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>
#include <glib.h>

struct fy_options_sources;

struct agent_config {
        char *listen_address;
        unsigned port;
        bool insecure;
        char *tls_cert;
        char *tls_key;
        char *tls_ca;
        char *host_name;
        unsigned host_id;
        char *storage_root;
        char *sanlock_run_dir;
        unsigned io_timeout;
        unsigned max_jobs;
        unsigned connect_timeout;      /* s until a client's CONNECT frame */
        guint64 copy_rate_limit;
        unsigned job_autodelete;
        unsigned max_frame;
        unsigned max_connections;
        unsigned max_connections_per_address;
        unsigned idle_timeout;          /* s, image transfer keep-alive */
        unsigned request_timeout;       /* s, image transfer headers, body pauses, TLS handshake */
        unsigned transfer_port;
        unsigned metrics_port;         /* 0 = no /metrics */
        unsigned transfer_max_request;
        unsigned transfer_max_tickets;
        char *log_level;
        struct fy_options_sources *sources;     /* what a SIGHUP reload reads again */
};

/*
 * Parses argv (--config FILE, then --OPTION=VALUE overrides) into *ret.
 * Returns 0, 1 when the program should exit successfully (--help,
 * --show-config, --version printed), or -EINVAL with *error set.
 */
int agent_config_load(int *argc, char ***argv, struct agent_config *ret, GError **error);
void agent_config_clear(struct agent_config *c);
/*
 * Rereads the configuration (SIGHUP): on success the live options
 * (log_level, max_jobs, copy_rate_limit) that changed are in *c, their names
 * in *ret_changed; the caller applies them. On error *c is untouched.
 */
int agent_config_reload(struct agent_config *c, GPtrArray **ret_changed, GError **error);
/* "key = value" lines of the effective configuration, as --show-config prints. */
char *agent_config_dump(const struct agent_config *c);
