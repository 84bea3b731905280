/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>

#include <libsoup/soup.h>

#include "agent.h"
#include "config.h"
#include "error.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "lease.h"
#include "metrics.h"
#include "prom.h"
#include "rategov.h"
#include "storage.h"

#define MAX_SCRAPES 4          /* scrapes waiting for storage at once; more get 503 */

struct agent_metrics {
        struct agent *agent;
        struct fy_rpc_dispatcher *dispatcher;
        SoupServer *server;
        unsigned inflight;
        bool stopped;
};

static struct agent_metrics *metrics;  /* one per process, main thread */

/* One scrape: the main thread's figures written, the domains' space read in a thread. */
struct scrape {
        struct agent_metrics *m;
        SoupServerMessage *msg;
        fy_prom *prom;
        GPtrArray *domains;            /* sd uuids */
        GPtrArray *paths;              /* their folders */
};

static void scrape_free(struct scrape *s)
{
        g_object_unref(s->msg);
        fy_prom_free(s->prom);
        g_ptr_array_unref(s->domains);
        g_ptr_array_unref(s->paths);
        g_free(s);
}

static void rpc_stat(const char *method, guint64 calls, guint64 errors, void *data)
{
        fy_prom *p = data;

        fy_prom_sample(p, "ferry_agent_rpc_calls_total", (const char *[]) { "method", method, "outcome", "ok", NULL },
                       (double) (calls - errors));
        fy_prom_sample(p, "ferry_agent_rpc_calls_total", (const char *[]) { "method", method, "outcome", "error", NULL },
                       (double) errors);
}

static void write_main_thread(struct agent_metrics *m, fy_prom *p)
{
        struct agent *a = m->agent;
        unsigned ok, busy, failed;

        fy_prom_family(p, "ferry_agent_info", FY_PROM_GAUGE, "Always 1; the labels name this agent.");
        fy_prom_sample(p, "ferry_agent_info", (const char *[]) { "host", a->config.host_name, "version", FERRY_VERSION, NULL }, 1);
        fy_prom_family(p, "ferry_agent_spm", FY_PROM_GAUGE, "1 while this host holds the SPM lease.");
        fy_prom_sample(p, "ferry_agent_spm", NULL, agent_is_spm(a) ? 1 : 0);

        agent_jobs_metrics(a->jobs, p);

        fy_prom_family(p, "ferry_agent_copy_bytes_total", FY_PROM_COUNTER,
                       "Bytes the copies of this host moved (holes excluded).");
        fy_prom_sample(p, "ferry_agent_copy_bytes_total", NULL, (double) agent_rate_gov_moved(a->copy_gov));
        fy_prom_family(p, "ferry_agent_copy_rate_bytes_per_second", FY_PROM_GAUGE,
                       "Bytes per second the copies of this host moved over the last 5 seconds.");
        fy_prom_sample(p, "ferry_agent_copy_rate_bytes_per_second", NULL, agent_copy_rate(a));
        fy_prom_family(p, "ferry_agent_copy_rate_limit_bytes_per_second", FY_PROM_GAUGE,
                       "copy_rate_limit: the cap on all copies of this host together; 0 = unlimited.");
        fy_prom_sample(p, "ferry_agent_copy_rate_limit_bytes_per_second", NULL, (double) agent_rate_gov_cap(a->copy_gov));
        fy_prom_family(p, "ferry_agent_copy_flows", FY_PROM_GAUGE, "Copies sharing the bandwidth cap now.");
        fy_prom_sample(p, "ferry_agent_copy_flows", NULL, agent_rate_gov_active(a->copy_gov));

        agent_lease_counts(&ok, &busy, &failed);
        fy_prom_family(p, "ferry_agent_lease_acquisitions_total", FY_PROM_COUNTER, "sanlock leases this agent acquired.");
        fy_prom_sample(p, "ferry_agent_lease_acquisitions_total", NULL, ok);
        fy_prom_family(p, "ferry_agent_lease_acquire_failures_total", FY_PROM_COUNTER,
                       "Lease acquisitions refused: held by another host (busy), or failed otherwise (error).");
        fy_prom_sample(p, "ferry_agent_lease_acquire_failures_total", (const char *[]) { "reason", "busy", NULL }, busy);
        fy_prom_sample(p, "ferry_agent_lease_acquire_failures_total", (const char *[]) { "reason", "error", NULL }, failed);

        fy_prom_family(p, "ferry_agent_rpc_calls_total", FY_PROM_COUNTER,
                       "JSON-RPC calls answered, by method (\"other\": unknown methods) and outcome.");
        fy_rpc_dispatcher_foreach_stat(m->dispatcher, rpc_stat, p);
}

static void read_domains(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
        struct scrape *s = data;
        static const char *const families[][2] = {
                { "ferry_agent_storage_domain_size_bytes", "Size of the file system holding the storage domain." },
                { "ferry_agent_storage_domain_free_bytes", "Bytes free for new data on the storage domain." },
        };
        g_autofree guint64 *size = g_new0(guint64, s->domains->len + 1);
        g_autofree guint64 *avail = g_new0(guint64, s->domains->len + 1);
        g_autofree bool *ok = g_new0(bool, s->domains->len + 1);

        for (guint i = 0; i < s->domains->len; i++) {
                struct statvfs st;

                if (statvfs(g_ptr_array_index(s->paths, i), &st) < 0)
                        continue;      /* left out: an absent sample, not a false 0 */
                ok[i] = true;
                size[i] = (guint64) st.f_blocks * st.f_frsize;
                avail[i] = (guint64) st.f_bavail * st.f_frsize;
        }
        for (guint f = 0; f < G_N_ELEMENTS(families); f++) {
                fy_prom_family(s->prom, families[f][0], FY_PROM_GAUGE, families[f][1]);
                for (guint i = 0; i < s->domains->len; i++)
                        if (ok[i])
                                fy_prom_sample(s->prom, families[f][0],
                                               (const char *[]) { "sd", g_ptr_array_index(s->domains, i), NULL },
                                               (double) (f == 0 ? size[i] : avail[i]));
        }
        g_task_return_boolean(task, TRUE);
}

static void on_domains_read(GObject *source, GAsyncResult *res, gpointer data)
{
        struct scrape *s = data;
        size_t len;
        const char *text = fy_prom_text(s->prom, &len);

        s->m->inflight--;
        if (!s->m->stopped) {
                soup_server_message_set_status(s->msg, SOUP_STATUS_OK, NULL);
                soup_server_message_set_response(s->msg, FY_PROM_CONTENT_TYPE, SOUP_MEMORY_COPY, text, len);
                soup_server_message_unpause(s->msg);
        }
        scrape_free(s);
}

static void reply_text(SoupServerMessage *msg, guint status, const char *text)
{
        soup_server_message_set_status(msg, status, NULL);
        soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_COPY, text, strlen(text));
}

static void on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer data)
{
        struct agent_metrics *m = data;
        struct agent *a = m->agent;
        g_autoptr(GTask) task = NULL;
        struct scrape *s;

        if (strcmp(path, "/metrics") != 0) {
                reply_text(msg, SOUP_STATUS_NOT_FOUND, "only /metrics is served here\n");
                return;
        }
        if (strcmp(soup_server_message_get_method(msg), "GET") != 0 &&
            strcmp(soup_server_message_get_method(msg), "HEAD") != 0) {
                reply_text(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "use GET\n");
                return;
        }
        if (m->inflight >= MAX_SCRAPES) {
                reply_text(msg, SOUP_STATUS_SERVICE_UNAVAILABLE,
                           "earlier scrapes are still reading the storage domains; retry later\n");
                return;
        }
        s = g_new0(struct scrape, 1);
        s->m = m;
        s->msg = g_object_ref(msg);
        s->prom = fy_prom_new();
        s->domains = g_ptr_array_new_with_free_func(g_free);
        s->paths = g_ptr_array_new_with_free_func(g_free);
        write_main_thread(m, s->prom);
        g_mutex_lock(&a->pool_lock);
        for (guint i = 0; i < a->pool_domains->len; i++)
                g_ptr_array_add(s->domains, g_strdup(g_ptr_array_index(a->pool_domains, i)));
        g_mutex_unlock(&a->pool_lock);
        for (guint i = 0; i < s->domains->len; i++)
                g_ptr_array_add(s->paths, agent_sd_path(a, g_ptr_array_index(s->domains, i)));

        m->inflight++;
        soup_server_message_pause(msg);
        task = g_task_new(NULL, NULL, on_domains_read, s);
        g_task_set_task_data(task, s, NULL);
        g_task_run_in_thread(task, read_domains);
}

int agent_metrics_start(struct agent *a, struct fy_rpc_dispatcher *dispatcher, GError **error)
{
        g_autoptr(GInetAddress) inet = NULL;
        g_autoptr(GSocketAddress) addr = NULL;
        g_autoptr(GTlsCertificate) cert = NULL;
        struct agent_metrics *m;
        bool tls = !a->config.insecure;

        if (a->config.metrics_port == 0)
                return 0;
        inet = g_inet_address_new_from_string(a->config.listen_address);
        if (!inet) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "listen_address '%s' is not an IP address",
                            a->config.listen_address);
                return -EINVAL;
        }
        if (tls) {
                cert = g_tls_certificate_new_from_files(a->config.tls_cert, a->config.tls_key, error);
                if (!cert)
                        return -EINVAL;
        }
        m = g_new0(struct agent_metrics, 1);
        m->agent = a;
        m->dispatcher = dispatcher;
        m->server = tls ? soup_server_new("server-header", "ferry-agent", "tls-certificate", cert, NULL)
                        : soup_server_new("server-header", "ferry-agent", NULL);
        soup_server_add_handler(m->server, NULL, on_request, m, NULL);
        addr = g_inet_socket_address_new(inet, (guint16) a->config.metrics_port);
        if (!soup_server_listen(m->server, addr, tls ? SOUP_SERVER_LISTEN_HTTPS : 0, error)) {
                g_object_unref(m->server);
                g_free(m);
                return -EADDRINUSE;
        }
        metrics = m;
        g_message("metrics served on %s://%s:%u/metrics", tls ? "https" : "http",
                  a->config.listen_address, a->config.metrics_port);
        return 0;
}

void agent_metrics_stop(struct agent *a)
{
        struct agent_metrics *m = metrics;

        if (!m)
                return;
        metrics = NULL;
        m->stopped = true;
        soup_server_disconnect(m->server);
        g_clear_object(&m->server);
        /* A scrape still reading storage keeps m; the process is ending anyway. */
        if (m->inflight == 0)
                g_free(m);
}
