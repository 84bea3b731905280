/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Image transfers (see transfer.h, transfer-internal.h for the files and
 * ARCHITECTURE.md "Image transfers"): the endpoint's life. Start opens the
 * HTTP(S) listener with its limits and the I/O pool; stop closes every
 * connection and waits for I/O in progress; free releases the tickets
 * left.
 */
#include <errno.h>

#include "error.h"
#include "httpserve.h"
#include "transfer-internal.h"

#define MAX_CONNECTIONS 128             /* client connections open at once (live ones) */
#define IO_THREADS 4                    /* threads of the endpoint's I/O pool */

void agent_transfers_describe(struct agent *a, json_t *obj)
{
        struct agent_transfers *tr = transfers_of(a);

        if (!tr)
                return;
        json_object_set_new(obj, "transfer_port", json_integer(tr->port));
        json_object_set_new(obj, "transfer_scheme", json_string(tr->tls ? "https" : "http"));
        json_object_set_new(obj, "transfer_tickets", json_integer(g_hash_table_size(tr->tickets)));
        /* The engine builds ticket urls (file://<storage_root>/…) from it. */
        if (!json_object_get(obj, "storage_root"))
                json_object_set_new(obj, "storage_root", json_string(a->config.storage_root));
}

static void on_http_log(void *data, GLogLevelFlags level, const char *message)
{
        g_log(G_LOG_DOMAIN, level, "image transfer endpoint: %s", message);
}

int agent_transfers_start(struct agent *a, GError **error)
{
        struct agent_transfers *tr = g_new0(struct agent_transfers, 1);
        g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(a->config.listen_address);
        g_autoptr(GSocketAddress) addr = NULL;
        g_autoptr(GTlsCertificate) cert = NULL;
        struct fy_http_limits limits = { .max_connections = MAX_CONNECTIONS };

        tr->agent = a;
        tr->tls = !a->config.insecure;
        tr->tickets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) xfer_ticket_unref);
        tr->pool = g_thread_pool_new(xfer_io_pool_func, tr, IO_THREADS, FALSE, NULL);
        a->transfers = tr;
        if (!inet) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "listen_address '%s' is not an IP address",
                            a->config.listen_address);
                return -EINVAL;
        }
        if (tr->tls) {
                cert = g_tls_certificate_new_from_files(a->config.tls_cert, a->config.tls_key, error);
                if (!cert)
                        return -EINVAL;
        }
        tr->server = soup_server_new("server-header", "ferry-agent", NULL);
        /*
         * One entry for every path, early and normal: libsoup picks one handler entry per path,
         * so a second entry (say "/images") would leave the other paths without the early check.
         */
        soup_server_add_early_handler(tr->server, NULL, xfer_on_early, tr, NULL);
        soup_server_add_handler(tr->server, NULL, xfer_on_request, tr, NULL);
        addr = g_inet_socket_address_new(inet, (guint16) a->config.transfer_port);
        limits.idle_timeout_s = a->config.idle_timeout;
        limits.header_timeout_s = a->config.request_timeout;
        limits.body_timeout_s = a->config.request_timeout;
        limits.write_timeout_s = a->config.write_timeout;
        /* Uploads are long by nature: no deadline, a minimum rate. */
        limits.body_min_rate = a->config.transfer_min_rate;
        limits.handshake_timeout_s = a->config.request_timeout;
        limits.per_address = a->config.max_connections_per_address;
        if (fy_http_server_new(tr->server, addr, cert, &limits, on_http_log, tr, &tr->httpd, error) < 0)
                return -EADDRINUSE;
        tr->port = fy_http_server_port(tr->httpd);
        tr->timer = g_timeout_add_seconds(1, xfer_expiry_tick, tr);
        g_message("image transfers served on %s://%s:%u/images/", tr->tls ? "https" : "http",
                  a->config.listen_address, tr->port);
        return 0;
}

void agent_transfers_stop(struct agent *a)
{
        struct agent_transfers *tr = transfers_of(a);
        gint64 deadline = now_us() + 30 * G_USEC_PER_SEC;

        if (!tr)
                return;
        if (tr->timer)
                g_source_remove(tr->timer);
        tr->timer = 0;
        /* Closes the listener and every connection (a GET stream's message finishes). */
        fy_http_server_free(tr->httpd);
        tr->httpd = NULL;
        /* I/O in the pool ends (a write must end before its lease goes); its completions run here. */
        while (g_atomic_int_get(&tr->io_running) > 0 && now_us() < deadline) {
                if (!g_main_context_iteration(a->main_context, FALSE))
                        g_usleep(10000);
        }
        while (g_main_context_iteration(a->main_context, FALSE))
                ;
}

void agent_transfers_free(struct agent *a)
{
        struct agent_transfers *tr = transfers_of(a);
        GHashTableIter it;
        gpointer value;

        if (!tr)
                return;
        g_hash_table_iter_init(&it, tr->tickets);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct ticket *t = value;

                for (guint i = 0; i < t->waiters->len; i++)
                        fy_rpc_call_error(t->waiters->pdata[i], AGENT_ERR_TICKET, "the agent is shutting down");
                g_ptr_array_set_size(t->waiters, 0);
                xfer_ticket_release_at_exit(t);
        }
        if (g_atomic_int_get(&tr->io_running) > 0) {
                /* A write that never ended still uses the pool and the table: they stay until exit. */
                g_warning("image transfer I/O still running at exit; not waiting for it");
                return;
        }
        g_thread_pool_free(tr->pool, TRUE, TRUE);
        g_clear_object(&tr->server);
        g_hash_table_unref(tr->tickets);
        a->transfers = NULL;
        g_free(tr);
}
