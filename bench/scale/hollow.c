/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry-hollow: many hollow hosts in one process, for bench/scale only (never
 * a double in correctness tests). Each host listens on its own TCP port
 * (--base-port + index, plain TCP: run the engine with agent_insecure) and
 * speaks the agent protocol, STOMP 1.2 carrying JSON-RPC (src/lib's codec and
 * dispatcher), well enough for the engine to monitor it, connect it to the
 * pool, elect an SPM and run disk create / move / remove on it:
 * Host.getStats, Host.getJobs, StoragePool.connect/spmStart, StorageDomain.*,
 * Volume.create/getInfo/delete, Image.delete, SDM.copy_data/update_volume.
 * Storage is a table in memory shared by all hosts (one storage, seen from
 * every host, as a real shared domain is). A copy moves --bandwidth bytes/s
 * per host, shared equally among the copies a host runs (as the agent's
 * copy_rate_limit does), at most --slots at a time; the rest wait. No events
 * are sent: the engine reads every job's state from Host.getJobs.
 *
 * SIGUSR1 writes the measurements to --stats-file (JSON) and starts a new
 * period: requests by method, intervals between two Host.getStats of the
 * same host (p50/p99/max) and copies finished.
 */
#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <gio/gio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jsonrpc.h"
#include "stomp.h"

#define MAX_HOSTS 5000
#define TICK_MS 100
#define READ_CHUNK 65536

struct hjob {
        char *id;
        const char *type;       /* "copy_data" or "storage" (done at once) */
        char *dst_key;          /* copy_data: the destination volume, "sd/vol" */
        double total, left;     /* bytes */
        bool running, done;
        gint64 start_time;
};

struct hhost {
        int index;
        guint16 port;
        GSocketService *service;
        fy_rpc_dispatcher *rpc;
        GHashTable *jobs;       /* id → struct hjob */
        GQueue waiting;         /* copy jobs beyond the slots, oldest first */
        int running;
        bool spm;
        gint64 last_stats;      /* monotonic µs of the last Host.getStats, 0 = none yet */
};

struct hvol {
        char *img, *parent, *format;
        gint64 capacity, generation;
        bool legal;
};

struct conn {
        struct hhost *host;
        GSocketConnection *sc;
        GOutputStream *out;
        fy_stomp_parser *parser;
        char *reply_sub;        /* subscription id of the reply destination */
        char buf[READ_CHUNK];
        int refs;
        bool closed;
};

static struct {
        struct hhost *hosts;
        int n_hosts;
        double bandwidth;
        int slots;
        GHashTable *volumes;    /* "sd/vol" → struct hvol */
        const char *stats_file;
        /* measurements of the current period */
        GHashTable *calls;      /* method → count */
        GArray *intervals;      /* ms between two Host.getStats of one host */
        gint64 period_start;
        long copies_done;
        double bytes_done;
} g;

static void job_free(struct hjob *j)
{
        g_free(j->id);
        g_free(j->dst_key);
        g_free(j);
}

static void vol_free(struct hvol *v)
{
        g_free(v->img);
        g_free(v->parent);
        g_free(v->format);
        g_free(v);
}

/* ---- RPC handlers; userdata is the host the call arrived on (one dispatcher per host) ---- */

static const char *pstr(json_t *params, const char *name)
{
        const char *s = json_string_value(json_object_get(params, name));

        return s && strlen(s) <= 64 ? s : NULL;
}

static char *vkey(const char *sd, const char *vol)
{
        return g_strdup_printf("%s/%s", sd, vol);
}

static gint64 pint(json_t *params, const char *name)
{
        json_t *v = json_object_get(params, name);

        if (json_is_integer(v))
                return json_integer_value(v);
        if (json_is_string(v))
                return g_ascii_strtoll(json_string_value(v), NULL, 10);
        return 0;
}

static void job_add(struct hhost *h, const char *id, const char *type, const char *dst_key, double bytes)
{
        struct hjob *j = g_new0(struct hjob, 1);

        j->id = g_strdup(id);
        j->type = type;
        j->dst_key = g_strdup(dst_key);
        j->total = j->left = bytes;
        j->start_time = g_get_real_time() / G_USEC_PER_SEC;
        j->done = strcmp(type, "copy_data") != 0;
        g_hash_table_replace(h->jobs, j->id, j);
        if (!j->done) {
                if (h->running < g.slots) {
                        j->running = true;
                        h->running++;
                } else {
                        g_queue_push_tail(&h->waiting, j);
                }
        }
}

static void get_stats(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct hhost *h = userdata;
        gint64 now = g_get_monotonic_time();
        double ms;

        if (h->last_stats) {
                ms = (double) (now - h->last_stats) / 1000.0;
                g_array_append_val(g.intervals, ms);
        }
        h->last_stats = now;
        fy_rpc_call_return(call, json_pack("{s:i, s:i, s:i, s:i, s:f, s:I, s:f, s:b}",
                                           "jobs_running", h->running,
                                           "jobs_pending", (int) h->waiting.length,
                                           "job_limit", g.slots,
                                           "free_slots", MAX(g.slots - h->running, 0),
                                           "copy_rate", h->running ? g.bandwidth : 0.0,
                                           "copy_rate_limit", (json_int_t) g.bandwidth,
                                           "cpuLoad", 0.0,
                                           "spm", h->spm));
}

static void get_jobs(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct hhost *h = userdata;
        json_t *ids = json_object_get(params, "job_ids"), *out = json_object(), *v;
        size_t i;

        json_array_foreach(ids, i, v) {
                struct hjob *j = json_is_string(v) ? g_hash_table_lookup(h->jobs, json_string_value(v)) : NULL;

                if (!j)
                        continue;
                json_object_set_new(out, j->id, json_pack("{s:s, s:s, s:s, s:s, s:f, s:I}", "id", j->id,
                                                         "status", j->done ? "done" : "running", "description", j->type,
                                                         "job_type", "storage",
                                                         "progress", j->total > 0 ? 100.0 * (1 - j->left / j->total) : 100.0,
                                                         "start_time", (json_int_t) j->start_time));
        }
        fy_rpc_call_return(call, out);
}

static void ok_true(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        fy_rpc_call_return(call, json_true());
}

static void spm_start(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        for (int i = 0; i < g.n_hosts; i++)
                g.hosts[i].spm = false;
        ((struct hhost *) userdata)->spm = true;
        fy_rpc_call_return(call, json_pack("{s:I, s:I}", "spmLver", (json_int_t) 1,
                                           "spmId", (json_int_t) ((struct hhost *) userdata)->index + 1));
}

static void sd_stats(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        fy_rpc_call_return(call, json_pack("{s:I, s:I}", "disktotal", (json_int_t) 1 << 60, "diskfree", (json_int_t) 1 << 59));
}

static void sd_volumes(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        fy_rpc_call_return(call, json_array());        /* the sweeper finds no orphans */
}

static void volume_create(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        const char *sd = pstr(params, "storagedomainID"), *vol = pstr(params, "volumeID"), *job = pstr(params, "job_id");
        struct hvol *v;

        if (!sd || !vol || !job) {
                fy_rpc_call_error(call, 1, "hollow host: Volume.create needs storagedomainID, volumeID, job_id");
                return;
        }
        v = g_new0(struct hvol, 1);
        v->img = g_strdup(pstr(params, "imageID"));
        v->parent = g_strdup(pstr(params, "srcVolUUID"));
        v->format = g_strdup(pstr(params, "volFormat"));
        v->capacity = pint(params, "size");
        v->legal = true;
        g_hash_table_replace(g.volumes, vkey(sd, vol), v);
        job_add(userdata, job, "storage", NULL, 0);
        fy_rpc_call_return(call, json_true());
}

static void volume_info(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        g_autofree char *k = vkey(pstr(params, "storagedomainID"), pstr(params, "volumeID"));
        struct hvol *v = g_hash_table_lookup(g.volumes, k);

        if (!v) {
                fy_rpc_call_error(call, 201, "Volume does not exist: %s", k);
                return;
        }
        fy_rpc_call_return(call, json_pack("{s:I, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:{s:[]}}",
                                           "generation", (json_int_t) v->generation,
                                           "legality", v->legal ? "LEGAL" : "ILLEGAL",
                                           "capacity", (json_int_t) v->capacity,
                                           "truesize", (json_int_t) v->capacity,
                                           "apparentsize", (json_int_t) v->capacity,
                                           "format", v->format ? v->format : "RAW",
                                           "parent", v->parent ? v->parent : "00000000-0000-0000-0000-000000000000",
                                           "voltype", "LEAF", "lease", "owners"));
}

static void volume_delete(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        g_autofree char *k = vkey(pstr(params, "storagedomainID"), pstr(params, "volumeID"));

        g_hash_table_remove(g.volumes, k);
        if (pstr(params, "job_id"))
                job_add(userdata, pstr(params, "job_id"), "storage", NULL, 0);
        fy_rpc_call_return(call, json_true());
}

static void image_delete(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        const char *sd = pstr(params, "storagedomainID"), *img = pstr(params, "imageID");
        GHashTableIter it;
        gpointer key, value;

        g_hash_table_iter_init(&it, g.volumes);
        while (g_hash_table_iter_next(&it, &key, &value))
                if (sd && img && g_str_has_prefix(key, sd) && g_strcmp0(((struct hvol *) value)->img, img) == 0)
                        g_hash_table_iter_remove(&it);
        if (pstr(params, "job_id"))
                job_add(userdata, pstr(params, "job_id"), "storage", NULL, 0);
        fy_rpc_call_return(call, json_true());
}

static void copy_data(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        json_t *src = json_object_get(params, "source"), *dst = json_object_get(params, "destination");
        g_autofree char *sk = vkey(pstr(src, "sd_id"), pstr(src, "vol_id"));
        g_autofree char *dk = vkey(pstr(dst, "sd_id"), pstr(dst, "vol_id"));
        struct hvol *sv = g_hash_table_lookup(g.volumes, sk), *dv = g_hash_table_lookup(g.volumes, dk);

        if (!sv || !dv || !pstr(params, "job_id")) {
                fy_rpc_call_error(call, 201, "hollow host: no volume %s or %s, or no job_id", sk, dk);
                return;
        }
        dv->legal = false;
        job_add(userdata, pstr(params, "job_id"), "copy_data", dk, (double) sv->capacity);
        fy_rpc_call_return(call, json_true());
}

static void update_volume(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        json_t *info = json_object_get(params, "vol_info");
        g_autofree char *k = vkey(pstr(info, "sd_id"), pstr(info, "vol_id"));
        struct hvol *v = g_hash_table_lookup(g.volumes, k);

        if (v && json_is_integer(json_object_get(json_object_get(params, "vol_attr"), "generation")))
                v->generation = json_integer_value(json_object_get(json_object_get(params, "vol_attr"), "generation"));
        if (pstr(params, "job_id"))
                job_add(userdata, pstr(params, "job_id"), "storage", NULL, 0);
        fy_rpc_call_return(call, json_true());
}

static const struct fy_rpc_method methods[] = {
        { "Host.getStats", get_stats },
        { "Host.getJobs", get_jobs },
        { "Host.ping2", ok_true },
        { "StoragePool.connect", ok_true },
        { "StoragePool.disconnect", ok_true },
        { "StoragePool.spmStart", spm_start },
        { "StorageDomain.create", ok_true },
        { "StorageDomain.getStats", sd_stats },
        { "StorageDomain.getVolumes", sd_volumes },
        { "Volume.create", volume_create },
        { "Volume.getInfo", volume_info },
        { "Volume.delete", volume_delete },
        { "Image.delete", image_delete },
        { "SDM.copy_data", copy_data },
        { "SDM.update_volume", update_volume },
        { NULL, NULL },
};

/* ---- copy progress: processor sharing per host ---- */

static gboolean on_tick(gpointer data)
{
        static gint64 last;
        gint64 now = g_get_monotonic_time();
        double dt = last ? (double) (now - last) / G_USEC_PER_SEC : 0;

        last = now;
        for (int i = 0; i < g.n_hosts; i++) {
                struct hhost *h = &g.hosts[i];
                GHashTableIter it;
                gpointer value;
                double each;

                if (h->running == 0)
                        continue;
                each = dt * g.bandwidth / h->running;
                g_hash_table_iter_init(&it, h->jobs);
                while (g_hash_table_iter_next(&it, NULL, &value)) {
                        struct hjob *j = value;
                        struct hvol *v;

                        if (!j->running)
                                continue;
                        j->left -= each;
                        if (j->left > 0)
                                continue;
                        j->left = 0;
                        j->running = false;
                        j->done = true;
                        h->running--;
                        g.copies_done++;
                        g.bytes_done += j->total;
                        v = g_hash_table_lookup(g.volumes, j->dst_key);
                        if (v) {
                                v->legal = true;
                                v->generation = (v->generation + 1) % 1000;
                        }
                }
                while (h->running < g.slots && h->waiting.length > 0) {
                        struct hjob *j = g_queue_pop_head(&h->waiting);

                        j->running = true;
                        h->running++;
                }
        }
        return G_SOURCE_CONTINUE;
}

/* ---- STOMP connections ---- */

static void conn_unref(struct conn *c)
{
        if (--c->refs > 0)
                return;
        fy_stomp_parser_free(c->parser);
        g_object_unref(c->sc);
        g_free(c->reply_sub);
        g_free(c);
}

static void conn_close(struct conn *c)
{
        if (c->closed)
                return;
        c->closed = true;
        g_io_stream_close(G_IO_STREAM(c->sc), NULL, NULL);
}

static void conn_send(struct conn *c, const char *command, const char *const *headers, const char *body)
{
        g_autoptr(GBytes) b = fy_stomp_frame_encode(command, headers, body, body ? strlen(body) : 0);
        gsize len;
        const void *data = g_bytes_get_data(b, &len);

        /* Loopback, small frames: a blocking write is fine for a benchmark load generator. */
        if (!c->closed && !g_output_stream_write_all(c->out, data, len, NULL, NULL, NULL))
                conn_close(c);
}

static void on_reply(const char *reply, void *ctx)
{
        struct conn *c = ctx;
        const char *headers[] = { "destination", "jms.topic.vdsm_responses", "content-type", "application/json",
                                  "subscription", c->reply_sub ? c->reply_sub : "", NULL };

        if (reply && c->reply_sub)
                conn_send(c, "MESSAGE", headers, reply);
}

static void frame(struct conn *c, struct fy_stomp_frame *f)
{
        const char *receipt = fy_stomp_frame_get_header(f, "receipt");

        if (strcmp(f->command, "CONNECT") == 0 || strcmp(f->command, "STOMP") == 0) {
                const char *headers[] = { "version", "1.2", "heart-beat", "0,0", "server", "ferry-hollow", NULL };

                conn_send(c, "CONNECTED", headers, NULL);
                return;
        }
        if (strcmp(f->command, "SUBSCRIBE") == 0) {
                const char *dest = fy_stomp_frame_get_header(f, "destination");

                if (dest && strcmp(dest, "jms.queue.events") != 0) {
                        g_free(c->reply_sub);
                        c->reply_sub = g_strdup(fy_stomp_frame_get_header(f, "id"));
                }
        } else if (strcmp(f->command, "SEND") == 0) {
                c->refs++;
                fy_rpc_dispatch(c->host->rpc, f->body, f->body_len, on_reply, c, (GDestroyNotify) conn_unref);
        } else if (strcmp(f->command, "DISCONNECT") == 0) {
                conn_close(c);
                return;
        }
        if (receipt) {
                const char *headers[] = { "receipt-id", receipt, NULL };

                conn_send(c, "RECEIPT", headers, NULL);
        }
}

static void on_read(GObject *src, GAsyncResult *res, gpointer data)
{
        struct conn *c = data;
        gssize n = g_input_stream_read_finish(G_INPUT_STREAM(src), res, NULL);
        struct fy_stomp_frame *f;

        if (n <= 0 || c->closed || fy_stomp_parser_feed(c->parser, c->buf, (size_t) n) < 0) {
                conn_close(c);
                conn_unref(c);
                return;
        }
        while (!c->closed && fy_stomp_parser_next(c->parser, &f) == 1) {
                g_autoptr(fy_stomp_frame) frame_owned = f;

                frame(c, f);
        }
        if (c->closed) {
                conn_unref(c);
                return;
        }
        g_input_stream_read_async(g_io_stream_get_input_stream(G_IO_STREAM(c->sc)), c->buf, sizeof(c->buf),
                                  G_PRIORITY_DEFAULT, NULL, on_read, c);
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *sc, GObject *source, gpointer data)
{
        struct conn *c = g_new0(struct conn, 1);

        c->host = data;
        c->sc = g_object_ref(sc);
        c->out = g_io_stream_get_output_stream(G_IO_STREAM(sc));
        c->parser = fy_stomp_parser_new(NULL);
        c->refs = 1;
        g_input_stream_read_async(g_io_stream_get_input_stream(G_IO_STREAM(sc)), c->buf, sizeof(c->buf),
                                  G_PRIORITY_DEFAULT, NULL, on_read, c);
        return TRUE;
}

/* ---- measurements ---- */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static double pct(GArray *a, double p)
{
        if (a->len == 0)
                return NAN;
        return g_array_index(a, double, (guint) floor(p * (a->len - 1)));
}

static gboolean on_usr1(gpointer data)
{
        g_autoptr(json_t) out = json_object();
        json_t *calls = json_object();
        GHashTableIter it;
        gpointer k, v;
        g_autofree char *tmp = g_strdup_printf("%s.tmp", g.stats_file);
        int spm = -1, busy = 0;

        g_array_sort(g.intervals, cmp_double);
        g_hash_table_iter_init(&it, g.calls);
        while (g_hash_table_iter_next(&it, &k, &v))
                json_object_set_new(calls, k, json_integer(GPOINTER_TO_INT(v)));
        for (int i = 0; i < g.n_hosts; i++) {
                if (g.hosts[i].spm)
                        spm = i;
                busy += g.hosts[i].running > 0;
        }
        json_object_set_new(out, "seconds", json_real((double) (g_get_monotonic_time() - g.period_start) / G_USEC_PER_SEC));
        json_object_set_new(out, "calls", calls);
        json_object_set_new(out, "stats_polls", json_integer(g.intervals->len));
        json_object_set_new(out, "poll_interval_ms", json_pack("{s:f, s:f, s:f}", "p50", pct(g.intervals, 0.5),
                                                                 "p99", pct(g.intervals, 0.99),
                                                                 "max", pct(g.intervals, 1.0)));
        json_object_set_new(out, "copies_done", json_integer(g.copies_done));
        json_object_set_new(out, "bytes_done", json_real(g.bytes_done));
        json_object_set_new(out, "hosts_copying", json_integer(busy));
        json_object_set_new(out, "volumes", json_integer(g_hash_table_size(g.volumes)));
        json_object_set_new(out, "spm", json_integer(spm));
        if (json_dump_file(out, tmp, JSON_COMPACT) == 0)
                g_rename(tmp, g.stats_file);
        g_array_set_size(g.intervals, 0);
        g_hash_table_remove_all(g.calls);
        g.period_start = g_get_monotonic_time();
        return G_SOURCE_CONTINUE;
}

/* Counts every call by method: wraps the dispatch of each method. */
static void count_call(const char *method)
{
        gpointer n = g_hash_table_lookup(g.calls, method);

        g_hash_table_replace(g.calls, g_strdup(method), GINT_TO_POINTER(GPOINTER_TO_INT(n) + 1));
}

#define COUNTED(fn) \
        static void counted_##fn(struct fy_rpc_call *call, json_t *params, void *userdata) \
        { \
                count_call(fy_rpc_call_method(call)); \
                fn(call, params, userdata); \
        }
COUNTED(get_stats)
COUNTED(get_jobs)
COUNTED(ok_true)
COUNTED(spm_start)
COUNTED(sd_stats)
COUNTED(sd_volumes)
COUNTED(volume_create)
COUNTED(volume_info)
COUNTED(volume_delete)
COUNTED(image_delete)
COUNTED(copy_data)
COUNTED(update_volume)

static struct fy_rpc_method counted[G_N_ELEMENTS(methods)];

static void count_methods(void)
{
        static const struct { fy_rpc_handler_fn plain, counted; } wrap[] = {
                { get_stats, counted_get_stats }, { get_jobs, counted_get_jobs }, { ok_true, counted_ok_true },
                { spm_start, counted_spm_start }, { sd_stats, counted_sd_stats }, { sd_volumes, counted_sd_volumes },
                { volume_create, counted_volume_create }, { volume_info, counted_volume_info },
                { volume_delete, counted_volume_delete }, { image_delete, counted_image_delete },
                { copy_data, counted_copy_data }, { update_volume, counted_update_volume },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(methods); i++) {
                counted[i] = methods[i];
                for (size_t k = 0; k < G_N_ELEMENTS(wrap); k++)
                        if (methods[i].handler == wrap[k].plain)
                                counted[i].handler = wrap[k].counted;
        }
}

static gboolean on_term(gpointer loop)
{
        g_main_loop_quit(loop);
        return G_SOURCE_REMOVE;
}

int main(int argc, char **argv)
{
        gint hosts = 100, base_port = 0, slots = 4;
        gdouble bandwidth = 1024.0 * 1024 * 1024;
        gchar *stats_file = NULL, *ports_file = NULL;
        const GOptionEntry entries[] = {
                { "hosts", 0, 0, G_OPTION_ARG_INT, &hosts, "hollow hosts, 1-5000 (default 100)", "N" },
                { "base-port", 0, 0, G_OPTION_ARG_INT, &base_port,
                  "host i listens on base-port + i (default 0: each on a free port, listed in --ports-file)", "P" },
                { "bandwidth", 0, 0, G_OPTION_ARG_DOUBLE, &bandwidth, "copy bytes/s of each host (default 1 GiB/s)", "B" },
                { "slots", 0, 0, G_OPTION_ARG_INT, &slots, "copies a host runs at once, 1-64 (default 4)", "N" },
                { "stats-file", 0, 0, G_OPTION_ARG_FILENAME, &stats_file, "where SIGUSR1 writes the measurements", "FILE" },
                { "ports-file", 0, 0, G_OPTION_ARG_FILENAME, &ports_file,
                  "written once every host listens: one port a line", "FILE" },
                { NULL },
        };
        g_autoptr(GOptionContext) ctx = g_option_context_new("- hollow hosts for bench/scale");
        g_autoptr(GError) error = NULL;
        g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
        g_autoptr(GString) ports = g_string_new(NULL);

        g_option_context_add_main_entries(ctx, entries, NULL);
        if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
                fprintf(stderr, "ferry-hollow: %s\n", error->message);
                return 2;
        }
        if (argc > 1 || hosts < 1 || hosts > MAX_HOSTS || base_port < 0 || base_port + hosts > 65535 || slots < 1 ||
            slots > 64 || !(bandwidth >= 1 && bandwidth <= 1e12) || !stats_file || !ports_file) {
                fprintf(stderr, "ferry-hollow: --hosts 1-%d, --base-port 0-%d, --slots 1-64, --bandwidth 1-1e12, "
                        "--stats-file and --ports-file are needed (see --help)\n", MAX_HOSTS, 65535 - hosts);
                return 2;
        }
        g.n_hosts = hosts;
        g.bandwidth = bandwidth;
        g.slots = slots;
        g.stats_file = stats_file;
        g.hosts = g_new0(struct hhost, hosts);
        g.volumes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) vol_free);
        g.calls = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g.intervals = g_array_new(FALSE, FALSE, sizeof(double));
        g.period_start = g_get_monotonic_time();
        count_methods();

        for (int i = 0; i < hosts; i++) {
                struct hhost *h = &g.hosts[i];
                g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
                g_autoptr(GSocketAddress) addr = g_inet_socket_address_new(lo, base_port ? (guint16) (base_port + i) : 0);
                g_autoptr(GSocketAddress) bound = NULL;

                h->index = i;
                h->rpc = fy_rpc_dispatcher_new(counted, h);
                h->jobs = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) job_free);
                h->service = g_socket_service_new();
                if (!g_socket_listener_add_address(G_SOCKET_LISTENER(h->service), addr, G_SOCKET_TYPE_STREAM,
                                                   G_SOCKET_PROTOCOL_TCP, NULL, &bound, &error)) {
                        fprintf(stderr, "ferry-hollow: host %d: %s\n", i, error->message);
                        return 1;
                }
                h->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
                g_signal_connect(h->service, "incoming", G_CALLBACK(on_incoming), h);
                g_socket_service_start(h->service);
                g_string_append_printf(ports, "%u\n", h->port);
        }
        if (!g_file_set_contents(ports_file, ports->str, (gssize) ports->len, &error)) {
                fprintf(stderr, "ferry-hollow: %s\n", error->message);
                return 1;
        }
        g_timeout_add(TICK_MS, on_tick, NULL);
        g_unix_signal_add(SIGUSR1, on_usr1, NULL);
        g_unix_signal_add(SIGTERM, on_term, loop);
        g_unix_signal_add(SIGINT, on_term, loop);
        g_main_loop_run(loop);
        return 0;
}
