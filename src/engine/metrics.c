/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The engine's Prometheus metrics (metrics.h). */
#include <string.h>

#include "eta.h"
#include "metrics.h"
#include "prom.h"

#define js engine_js
#define ji engine_ji

#define LAG_PROBE_MS 250               /* how often the main loop measures its own lateness */
#define LAG_WINDOW_S 60                /* main_loop_lag_seconds: the worst of this window and the one before */
#define MAX_REQUEST_SERIES 512         /* method × route × status: bounded by the table, capped anyway */

static const double duration_bounds[] = { 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };

struct request_series {
        char *method;
        char *route;
        unsigned status;
        struct fy_prom_histogram h;
};

static struct {
        guint64 fences;
        guint64 stalls;
        GHashTable *retries;           /* kind → guint64* */
        GHashTable *requests;          /* "method route status" → struct request_series* */
        guint lag_source;
        gint64 lag_due;                /* monotonic µs the probe should fire */
        double lag_max;                /* worst lateness in the current window, s */
        double lag_prev_max;           /* worst lateness in the window before */
        gint64 lag_window;             /* monotonic µs the current window began */
        double lag_last;
} m;

static void series_free(void *p)
{
        struct request_series *s = p;

        g_free(s->method);
        g_free(s->route);
        fy_prom_histogram_clear(&s->h);
        g_free(s);
}

void engine_metrics_count_fence(void)
{
        m.fences++;
}

void engine_metrics_count_stall(void)
{
        m.stalls++;
}

void engine_metrics_count_retry(const char *kind)
{
        guint64 *n;

        if (!m.retries)
                m.retries = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        n = g_hash_table_lookup(m.retries, kind);
        if (!n) {
                n = g_new0(guint64, 1);
                g_hash_table_insert(m.retries, g_strdup(kind), n);
        }
        (*n)++;
}

/* ---- REST requests ---- */

struct request_timer {
        char *method;
        const char *route;             /* a pattern of the static route table, or a literal */
        gint64 start;
};

static void on_finished(SoupServerMessage *msg, gpointer data)
{
        struct request_timer *t = data;
        unsigned status = soup_server_message_get_status(msg);
        g_autofree char *key = g_strdup_printf("%s %s %u", t->method, t->route, status);
        struct request_series *s;

        if (!m.requests)
                m.requests = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, series_free);
        s = g_hash_table_lookup(m.requests, key);
        if (!s && g_hash_table_size(m.requests) < MAX_REQUEST_SERIES) {
                s = g_new0(struct request_series, 1);
                s->method = g_strdup(t->method);
                s->route = g_strdup(t->route);
                s->status = status;
                fy_prom_histogram_init(&s->h, duration_bounds, G_N_ELEMENTS(duration_bounds));
                g_hash_table_insert(m.requests, g_steal_pointer(&key), s);
        }
        if (s)
                fy_prom_histogram_observe(&s->h, (double) (g_get_monotonic_time() - t->start) / G_USEC_PER_SEC);
}

static void timer_free(gpointer data, GClosure *closure)
{
        struct request_timer *t = data;

        g_free(t->method);
        g_free(t);
}

void engine_metrics_request_start(SoupServerMessage *msg, const char *method, const char *pattern)
{
        static const char *const methods[] = { "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", NULL };
        struct request_timer *t = g_new0(struct request_timer, 1);

        /* The method comes from outside: anything unusual is one label value. */
        t->method = g_strdup(g_strv_contains(methods, method) ? method : "other");
        t->route = pattern ? pattern : "unmatched";
        t->start = g_get_monotonic_time();
        g_signal_connect_data(msg, "finished", G_CALLBACK(on_finished), t, timer_free, 0);
}

/* ---- main-loop lag ---- */

static gboolean on_lag_probe(gpointer data)
{
        gint64 now = g_get_monotonic_time();
        double late = MAX(0, (double) (now - m.lag_due) / G_USEC_PER_SEC);

        /* Fixed windows, not a reset per scrape: every scraper (two Prometheus servers, a
         * curl) sees the same worst lag, over the last LAG_WINDOW_S to 2 × LAG_WINDOW_S. */
        if (now - m.lag_window >= (gint64) LAG_WINDOW_S * G_USEC_PER_SEC) {
                m.lag_prev_max = m.lag_max;
                m.lag_max = 0;
                m.lag_window = now;
        }
        m.lag_last = late;
        m.lag_max = MAX(m.lag_max, late);
        m.lag_due = now + LAG_PROBE_MS * 1000;
        return G_SOURCE_CONTINUE;
}

void engine_metrics_init(struct engine *e)
{
        m.lag_due = g_get_monotonic_time() + LAG_PROBE_MS * 1000;
        m.lag_source = g_timeout_add(LAG_PROBE_MS, on_lag_probe, NULL);
}

void engine_metrics_free(struct engine *e)
{
        if (m.lag_source)
                g_source_remove(m.lag_source);
        m.lag_source = 0;
        g_clear_pointer(&m.retries, g_hash_table_unref);
        g_clear_pointer(&m.requests, g_hash_table_unref);
}

/* ---- the scrape ---- */

static double stat_of(struct engine *e, const char *host, const char *key)
{
        struct engine_host *h = e->hosts ? g_hash_table_lookup(e->hosts, host) : NULL;

        return h && h->stats ? json_number_value(json_object_get(h->stats, key)) : 0;
}

static void write_hosts(struct engine *e, struct fy_prom *p)
{
        static const struct {
                const char *name, *stat, *help;
        } per_host[] = {
                { "ferry_engine_host_jobs_limit", "job_limit", "Jobs the host runs at once (its max_jobs), from its last stats." },
                { "ferry_engine_host_copy_rate_bytes_per_second", "copy_rate", "The host's copy rate now, from its last stats." },
                { "ferry_engine_host_copy_rate_limit_bytes_per_second", "copy_rate_limit",
                  "The host's copy bandwidth cap (0: none), from its last stats." },
        };
        g_autoptr(json_t) hosts = engine_store_host_list(e->db, NULL);
        g_autoptr(json_t) dcs = engine_store_dc_list(e->db, NULL);
        g_autoptr(GHashTable) spm = g_hash_table_new(g_str_hash, g_str_equal);
        size_t i;
        json_t *h, *dc;

        if (!hosts)
                hosts = json_array();
        json_array_foreach(dcs, i, dc)
                if (js(dc, "spm_host"))
                        g_hash_table_add(spm, (char *) js(dc, "spm_host"));

        fy_prom_family(p, "ferry_engine_host_up", FY_PROM_GAUGE, "1 while the host is up (answers its polls).");
        json_array_foreach(hosts, i, h)
                fy_prom_sample(p, "ferry_engine_host_up", (const char *[]) { "host", js(h, "name"), NULL },
                               g_strcmp0(js(h, "status"), "up") == 0);
        fy_prom_family(p, "ferry_engine_host_spm", FY_PROM_GAUGE, "1 for the host the engine records as the SPM.");
        json_array_foreach(hosts, i, h)
                fy_prom_sample(p, "ferry_engine_host_spm", (const char *[]) { "host", js(h, "name"), NULL },
                               g_hash_table_contains(spm, js(h, "id")));
        /* The rest comes from a host's last stats: only while it is up, a dead host's would be stale. */
        fy_prom_family(p, "ferry_engine_host_jobs", FY_PROM_GAUGE,
                       "The host's jobs by state (running, or pending for a free slot), from its last stats; "
                       "hosts that are not up have none.");
        json_array_foreach(hosts, i, h) {
                if (g_strcmp0(js(h, "status"), "up") != 0)
                        continue;
                fy_prom_sample(p, "ferry_engine_host_jobs", (const char *[]) { "host", js(h, "name"), "state", "running", NULL },
                               stat_of(e, js(h, "id"), "jobs_running"));
                fy_prom_sample(p, "ferry_engine_host_jobs", (const char *[]) { "host", js(h, "name"), "state", "pending", NULL },
                               stat_of(e, js(h, "id"), "jobs_pending"));
        }
        for (size_t f = 0; f < G_N_ELEMENTS(per_host); f++) {
                fy_prom_family(p, per_host[f].name, FY_PROM_GAUGE, per_host[f].help);
                json_array_foreach(hosts, i, h)
                        if (g_strcmp0(js(h, "status"), "up") == 0)
                                fy_prom_sample(p, per_host[f].name, (const char *[]) { "host", js(h, "name"), NULL },
                                               stat_of(e, js(h, "id"), per_host[f].stat));
        }
}

static void write_domains(struct engine *e, struct fy_prom *p)
{
        static const struct {
                const char *name, *column, *help;
        } families[] = {
                { "ferry_engine_storage_domain_size_bytes", "total", "Size of the storage domain, as last reported by the SPM." },
                { "ferry_engine_storage_domain_free_bytes", "free", "Free space of the storage domain, as last reported by the SPM." },
        };
        g_autoptr(json_t) sds = engine_store_sd_list(e->db, NULL, NULL);
        size_t i;
        json_t *sd;

        for (size_t f = 0; f < G_N_ELEMENTS(families); f++) {
                fy_prom_family(p, families[f].name, FY_PROM_GAUGE, families[f].help);
                json_array_foreach(sds, i, sd)
                        if (json_is_integer(json_object_get(sd, families[f].column)))
                                fy_prom_sample(p, families[f].name,
                                               (const char *[]) { "sd", js(sd, "id"), "name", js(sd, "name"), NULL },
                                               (double) ji(sd, families[f].column));
        }
}

static void write_commands(struct engine *e, struct fy_prom *p)
{
        g_autoptr(json_t) rows = engine_store_command_counts(e->db, NULL);
        GHashTableIter it;
        gpointer k, v;
        size_t i;
        json_t *row;

        fy_prom_family(p, "ferry_engine_commands", FY_PROM_GAUGE, "Engine commands running, by kind and phase.");
        json_array_foreach(rows, i, row)
                fy_prom_sample(p, "ferry_engine_commands", (const char *[]) { "kind", js(row, "type"), "phase",
                                                                             *js(row, "phase") ? js(row, "phase") : "queued",
                                                                             NULL },
                               (double) ji(row, "n"));
        fy_prom_family(p, "ferry_engine_fences_total", FY_PROM_COUNTER,
                       "Fences of a lost copy host (the volume's generation bumped) since the engine started.");
        fy_prom_sample(p, "ferry_engine_fences_total", NULL, (double) m.fences);
        fy_prom_family(p, "ferry_engine_retries_total", FY_PROM_COUNTER,
                       "Commands tried again (another host, or later) since the engine started, by kind.");
        if (m.retries) {
                g_hash_table_iter_init(&it, m.retries);
                while (g_hash_table_iter_next(&it, &k, &v))
                        fy_prom_sample(p, "ferry_engine_retries_total", (const char *[]) { "kind", k, NULL },
                                       (double) *(guint64 *) v);
        }
        fy_prom_family(p, "ferry_engine_stalled_steps", FY_PROM_GAUGE, "Running copy steps without progress now.");
        fy_prom_sample(p, "ferry_engine_stalled_steps", NULL, (double) engine_store_steps_stalled(e->db));
        fy_prom_family(p, "ferry_engine_stalls_total", FY_PROM_COUNTER,
                       "Copy steps found without progress for stall_timeout since the engine started.");
        fy_prom_sample(p, "ferry_engine_stalls_total", NULL, (double) m.stalls);
}

static void eta_sample(struct fy_prom *p, const char *kind, gint64 longest)
{
        if (kind && longest >= 0)      /* -1: no job of the kind has a known rate yet */
                fy_prom_sample(p, "ferry_engine_job_eta_seconds", (const char *[]) { "kind", kind, NULL },
                               (double) longest);
}

/* Per kind, not per job: job ids would make a series for every job ever run. */
static void write_eta(struct engine *e, struct fy_prom *p)
{
        g_autoptr(json_t) rows = engine_store_jobs_running(e->db, NULL);
        gint64 now = g_get_monotonic_time(), longest = -1;
        const char *kind = NULL;
        size_t i;
        json_t *row;

        fy_prom_family(p, "ferry_engine_job_eta_seconds", FY_PROM_GAUGE,
                       "Longest estimated time left of the running jobs of a kind whose progress rate is known.");
        /* Rows come ordered by kind: a kind's maximum is complete when the next kind starts. */
        json_array_foreach(rows, i, row) {
                g_autofree char *key = g_strconcat("job:", js(row, "id"), NULL);

                if (kind && strcmp(kind, js(row, "kind")) != 0) {
                        eta_sample(p, kind, longest);
                        longest = -1;
                }
                kind = js(row, "kind");
                if (!ji(row, "stalled"))       /* a stalled job has no estimate (REST: null) */
                        longest = MAX(longest, engine_eta_seconds(engine_eta(), key, now));
        }
        eta_sample(p, kind, longest);
}

static void write_requests(struct fy_prom *p)
{
        GHashTableIter it;
        gpointer v;

        fy_prom_family(p, "ferry_engine_http_request_duration_seconds", FY_PROM_HISTOGRAM,
                       "REST requests answered, by method, route pattern and status, and how long each took.");
        if (!m.requests)
                return;
        g_hash_table_iter_init(&it, m.requests);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                struct request_series *s = v;
                char status[16];

                g_snprintf(status, sizeof(status), "%u", s->status);
                fy_prom_histogram_write(p, "ferry_engine_http_request_duration_seconds",
                                        (const char *[]) { "method", s->method, "route", s->route, "status", status, NULL },
                                        &s->h);
        }
}

static void metrics_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(fy_prom) p = fy_prom_new();
        const char *text;
        size_t len;

        write_hosts(e, p);
        write_domains(e, p);
        write_commands(e, p);
        write_eta(e, p);
        write_requests(p);
        fy_prom_family(p, "ferry_engine_main_loop_lag_seconds", FY_PROM_GAUGE,
                       "Worst lateness of a 250 ms timer of the engine's main loop over the last 60 to 120 s.");
        fy_prom_sample(p, "ferry_engine_main_loop_lag_seconds", NULL, MAX(MAX(m.lag_max, m.lag_prev_max), m.lag_last));
        text = fy_prom_text(p, &len);
        soup_server_message_set_status(msg, 200, NULL);
        soup_server_message_set_response(msg, FY_PROM_CONTENT_TYPE, SOUP_MEMORY_COPY, text, len);
}

static const struct engine_route routes[] = {
        /* Any authenticated role may read it: Prometheus sends a viewer's token. */
        { "GET", "/metrics", metrics_get, ENGINE_ROLE_VIEWER },
};

const struct engine_route *engine_metrics_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
