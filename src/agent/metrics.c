/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>

#include <libsoup/soup.h>

#include "agent.h"
#include "config.h"
#include "error.h"
#include "httpserve.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "lease.h"
#include "metrics.h"
#include "prom.h"
#include "rategov.h"
#include "storage.h"

#define MAX_SCRAPES 4          /* scrapes waiting for storage at once; more get 503 */
#define MAX_CONNECTIONS 64     /* a scraper or two; more are refused with 503 */
#define DOMAIN_WAIT_MS 1000     /* a scrape waits this long for fresh space figures, then answers with the last */

/*
 * Space of one storage domain, read by a thread of its own (statvfs on a
 * hung NFS mount blocks in the kernel): at most one read per domain at a
 * time, so a hung mount holds one thread and only its own series go stale
 * (last figures kept, ferry_agent_storage_domain_stat_stale 1); the other
 * domains and every other metric are answered as usual. Refcounted: a
 * reader still hung when the agent stops keeps its own reference.
 */
struct domain_stat {
        gint ref;
        char *sd;
        char *path;
        /* main thread only */
        bool reading;                  /* a reader thread has it */
        bool ok;                       /* the last read that ended succeeded */
        guint64 size, avail;           /* from the last successful read */
        gint64 ok_at;                  /* wall clock s of the last successful read; 0 never */
        /* the reader's result, handed over through the main context */
        int r;
        guint64 r_size, r_avail;
};

struct agent_metrics {
        struct agent *agent;
        struct fy_rpc_dispatcher *dispatcher;
        SoupServer *server;
        struct fy_http_server *httpd;  /* its connections: caps, timeouts, closed clients freed */
        unsigned inflight;
        bool stopped;
        GHashTable *domains;           /* sd → struct domain_stat* */
        GList *waiting;                /* struct scrape* waiting for readers */
};

static struct agent_metrics *metrics;  /* one per process, main thread */

/* One scrape: the main thread's figures written, then the domains' space once read (or the wait is over). */
struct scrape {
        struct agent_metrics *m;
        SoupServerMessage *msg;
        fy_prom *prom;
        GPtrArray *domains;            /* struct domain_stat* (refs) of the pool now */
        guint timer;
};

static struct domain_stat *domain_stat_ref(struct domain_stat *d)
{
        g_atomic_int_inc(&d->ref);
        return d;
}

static void domain_stat_unref(gpointer data)
{
        struct domain_stat *d = data;

        if (!g_atomic_int_dec_and_test(&d->ref))
                return;
        g_free(d->sd);
        g_free(d->path);
        g_free(d);
}

static void scrape_free(struct scrape *s)
{
        g_object_unref(s->msg);
        fy_prom_free(s->prom);
        g_ptr_array_unref(s->domains);
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
        fy_prom_family(p, "ferry_agent_copy_rate_waiting", FY_PROM_GAUGE,
                       "Copies waiting in a rate limiter now (job phase rate_wait: not judged for stalls).");
        fy_prom_sample(p, "ferry_agent_copy_rate_waiting", NULL, agent_rate_gov_waiting(a->copy_gov));
        fy_prom_family(p, "ferry_agent_copy_rate_wait_overruns_total", FY_PROM_COUNTER,
                       "Rate waits of capped copies that outlasted what their cap explains (hung asleep): "
                       "reported as copying again, so the engine judges them for stalls.");
        fy_prom_sample(p, "ferry_agent_copy_rate_wait_overruns_total", NULL, agent_rate_gov_wait_overruns(a->copy_gov));

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

static void scrape_answer(struct scrape *s)
{
        static const char *const families[][2] = {
                { "ferry_agent_storage_domain_size_bytes", "Size of the file system holding the storage domain (last read)." },
                { "ferry_agent_storage_domain_free_bytes", "Bytes free for new data on the storage domain (last read)." },
        };
        struct agent_metrics *m = s->m;
        size_t len;
        const char *text;

        if (s->timer)
                g_source_remove(s->timer);
        m->waiting = g_list_remove(m->waiting, s);
        for (guint f = 0; f < G_N_ELEMENTS(families); f++) {
                fy_prom_family(s->prom, families[f][0], FY_PROM_GAUGE, families[f][1]);
                for (guint i = 0; i < s->domains->len; i++) {
                        struct domain_stat *d = g_ptr_array_index(s->domains, i);

                        if (d->ok_at)       /* never read: an absent sample, not a false 0 */
                                fy_prom_sample(s->prom, families[f][0], (const char *[]) { "sd", d->sd, NULL },
                                               (double) (f == 0 ? d->size : d->avail));
                }
        }
        fy_prom_family(s->prom, "ferry_agent_storage_domain_stat_stale", FY_PROM_GAUGE,
                       "1 when the domain's space could not be read now (a read failed, or is still hung after "
                       G_STRINGIFY(DOMAIN_WAIT_MS) " ms): its figures are the last read.");
        for (guint i = 0; i < s->domains->len; i++) {
                struct domain_stat *d = g_ptr_array_index(s->domains, i);

                fy_prom_sample(s->prom, "ferry_agent_storage_domain_stat_stale", (const char *[]) { "sd", d->sd, NULL },
                               d->reading || !d->ok);
        }
        fy_prom_family(s->prom, "ferry_agent_storage_domain_stat_success_timestamp_seconds", FY_PROM_GAUGE,
                       "When the domain's space was last read successfully (Unix time).");
        for (guint i = 0; i < s->domains->len; i++) {
                struct domain_stat *d = g_ptr_array_index(s->domains, i);

                if (d->ok_at)
                        fy_prom_sample(s->prom, "ferry_agent_storage_domain_stat_success_timestamp_seconds",
                                       (const char *[]) { "sd", d->sd, NULL }, (double) d->ok_at);
        }
        text = fy_prom_text(s->prom, &len);
        m->inflight--;
        if (!m->stopped) {
                soup_server_message_set_status(s->msg, SOUP_STATUS_OK, NULL);
                soup_server_message_set_response(s->msg, FY_PROM_CONTENT_TYPE, SOUP_MEMORY_COPY, text, len);
                soup_server_message_unpause(s->msg);
        }
        scrape_free(s);
}

static bool scrape_ready(const struct scrape *s)
{
        for (guint i = 0; i < s->domains->len; i++)
                if (((struct domain_stat *) g_ptr_array_index(s->domains, i))->reading)
                        return false;
        return true;
}

static gboolean on_scrape_timeout(gpointer data)
{
        struct scrape *s = data;

        s->timer = 0;
        scrape_answer(s);      /* the hung domains answer stale */
        return G_SOURCE_REMOVE;
}

/* Main thread: a reader ended. */
static gboolean on_domain_read(gpointer data)
{
        struct domain_stat *d = data;
        struct agent_metrics *m = metrics;

        d->reading = false;
        d->ok = d->r == 0;
        if (d->ok) {
                d->size = d->r_size;
                d->avail = d->r_avail;
                d->ok_at = g_get_real_time() / G_USEC_PER_SEC;
        }
        if (m) {
                for (GList *l = m->waiting, *next; l; l = next) {
                        next = l->next;
                        if (scrape_ready(l->data))
                                scrape_answer(l->data);
                }
        }
        domain_stat_unref(d);
        return G_SOURCE_REMOVE;
}

static gpointer domain_reader(gpointer data)
{
        struct domain_stat *d = data;
        struct statvfs st;

        d->r = statvfs(d->path, &st) < 0 ? -errno : 0;
        if (d->r == 0) {
                d->r_size = (guint64) st.f_blocks * st.f_frsize;
                d->r_avail = (guint64) st.f_bavail * st.f_frsize;
        }
        g_main_context_invoke(NULL, on_domain_read, d);
        return NULL;
}

/* Starts a read of d unless one is under way (a hung one stays the only one). */
static void domain_read(struct domain_stat *d)
{
        GThread *t;

        if (d->reading)
                return;
        d->reading = true;
        t = g_thread_try_new("ferry-sd-stat", domain_reader, domain_stat_ref(d), NULL);
        if (!t) {
                d->reading = false;
                d->ok = false;
                domain_stat_unref(d);
                return;
        }
        g_thread_unref(t);
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
        s->domains = g_ptr_array_new_with_free_func(domain_stat_unref);
        write_main_thread(m, s->prom);
        g_mutex_lock(&a->pool_lock);
        for (guint i = 0; i < a->pool_domains->len; i++) {
                const char *sd = g_ptr_array_index(a->pool_domains, i);
                struct domain_stat *d = g_hash_table_lookup(m->domains, sd);

                if (!d) {
                        d = g_new0(struct domain_stat, 1);
                        d->ref = 1;
                        d->sd = g_strdup(sd);
                        d->path = agent_sd_path(a, sd);
                        g_hash_table_insert(m->domains, d->sd, d);
                }
                g_ptr_array_add(s->domains, domain_stat_ref(d));
        }
        g_mutex_unlock(&a->pool_lock);
        for (guint i = 0; i < s->domains->len; i++)
                domain_read(g_ptr_array_index(s->domains, i));

        m->inflight++;
        soup_server_message_pause(msg);
        m->waiting = g_list_prepend(m->waiting, s);
        if (scrape_ready(s))
                scrape_answer(s);
        else
                s->timer = g_timeout_add(DOMAIN_WAIT_MS, on_scrape_timeout, s);
}

/* A scrape has no body: one is refused from its headers, before it is read. */
static void on_early(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                     gpointer data)
{
        struct agent_metrics *m = data;
        SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
        g_autofree char *detail = NULL;
        SoupEncoding enc;

        if (fy_http_check_framing(h, &detail)) {
                g_autofree char *text = g_strconcat(detail, "\n", NULL);

                fy_http_server_refuse(m->httpd, msg, SOUP_STATUS_BAD_REQUEST, NULL, "text/plain", text);
                return;
        }
        if (strcmp(soup_server_message_get_method(msg), "GET") != 0 &&
            strcmp(soup_server_message_get_method(msg), "HEAD") != 0) {
                fy_http_server_refuse(m->httpd, msg, SOUP_STATUS_METHOD_NOT_ALLOWED, NULL, "text/plain",
                                      "use GET\n");
                return;
        }
        enc = soup_message_headers_get_encoding(h);
        if (enc == SOUP_ENCODING_CHUNKED ||
            (enc == SOUP_ENCODING_CONTENT_LENGTH && soup_message_headers_get_content_length(h) > 0))
                fy_http_server_refuse(m->httpd, msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, NULL, "text/plain",
                                      "a scrape has no body\n");
}

static void on_http_log(void *data, GLogLevelFlags level, const char *message)
{
        g_log(G_LOG_DOMAIN, level, "metrics endpoint: %s", message);
}

int agent_metrics_start(struct agent *a, struct fy_rpc_dispatcher *dispatcher, GError **error)
{
        struct fy_http_limits limits = {
                .max_connections = MAX_CONNECTIONS,
                .per_address = a->config.max_connections_per_address,
                .idle_timeout_s = a->config.idle_timeout,
                .header_timeout_s = a->config.request_timeout,
                .body_timeout_s = a->config.request_timeout,
                .write_timeout_s = a->config.write_timeout,
                .handshake_timeout_s = a->config.request_timeout,
        };
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
        m->domains = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, domain_stat_unref);
        /* Ferry's listener (listener.c, httpserve.c) does the TLS and hands libsoup the connections. */
        m->server = soup_server_new("server-header", "ferry-agent", NULL);
        soup_server_add_early_handler(m->server, NULL, on_early, m, NULL);
        soup_server_add_handler(m->server, NULL, on_request, m, NULL);
        addr = g_inet_socket_address_new(inet, (guint16) a->config.metrics_port);
        if (fy_http_server_new(m->server, addr, cert, &limits, on_http_log, m, &m->httpd, error) < 0) {
                g_object_unref(m->server);
                g_hash_table_unref(m->domains);
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
        while (m->waiting)
                scrape_answer(m->waiting->data);       /* stopped: freed, not answered */
        fy_http_server_free(m->httpd);
        soup_server_disconnect(m->server);
        g_clear_object(&m->server);
        /* Readers still hung hold their own domain_stat references. */
        g_hash_table_unref(m->domains);
        g_free(m);
}
