/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Host monitor, pool membership, SPM election, storage domain creation. */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "events.h"
#include "hosts.h"
#include "leader.h"
#include "restparse.h"
#include "error.h"
#include "uuid.h"

#define POOL_CONNECT_TIMEOUT_MS 120000
#define SPM_START_TIMEOUT_MS 60000
#define SD_CREATE_TIMEOUT_MS 60000
#define SD_STATS_INTERVAL_US (5 * G_USEC_PER_SEC)

static struct engine_host *host_lookup(struct engine *e, const char *id)
{
        return id ? g_hash_table_lookup(e->hosts, id) : NULL;
}

static void host_free(struct engine_host *h)
{
        fy_rpc_client_free(h->rpc);
        json_decref(h->stats);
        g_free(h->id);
        g_free(h);
}

void engine_hosts_subscribe(struct engine *e, const struct engine_host_listener *l)
{
        if (!e->host_listeners)
                e->host_listeners = g_array_new(FALSE, FALSE, sizeof(struct engine_host_listener));
        g_array_append_val(e->host_listeners, *l);
}

void engine_host_event(struct engine *e, const char *host_id, const char *method, json_t *params)
{
        for (guint i = 0; e->host_listeners && i < e->host_listeners->len; i++) {
                struct engine_host_listener *l = &g_array_index(e->host_listeners, struct engine_host_listener, i);

                if (l->on_event)
                        l->on_event(e, host_id, method, params, l->userdata);
        }
}

static void on_host_event(const char *method, json_t *params, void *userdata)
{
        struct engine_host *h = userdata;

        engine_host_event(h->engine, h->id, method, params);
}

static void publish_state(struct engine *e, const char *host_id, const char *status)
{
        for (guint i = 0; e->host_listeners && i < e->host_listeners->len; i++) {
                struct engine_host_listener *l = &g_array_index(e->host_listeners, struct engine_host_listener, i);

                if (l->on_state)
                        l->on_state(e, host_id, status, l->userdata);
        }
}

static struct engine_host *host_attach(struct engine *e, const char *id, const char *name, const char *address,
                                       unsigned port)
{
        struct engine_host *h = g_new0(struct engine_host, 1);
        /* The agent's certificate must name the host as registered: by its address (the one
         * connected to) or its name. A certificate issued to another host is refused. */
        const char *names[] = { name, NULL };
        struct fy_rpc_client_options o = {
                .host = address,
                .port = (guint16) port,
                .connect_timeout_ms = e->config.host_timeout,
                .subscribe_events = true,
        };

        if (!e->config.agent_insecure) {
                o.tls_cert = e->config.agent_tls_cert;
                o.tls_key = e->config.agent_tls_key;
                o.tls_ca = e->config.agent_tls_ca;
                o.tls_names = names;
        }
        h->engine = e;
        h->id = g_strdup(id);
        if (!e->transport)     /* a test's host double answers instead (hosts.h) */
                h->rpc = fy_rpc_client_new(&o, on_host_event, h);
        g_hash_table_insert(e->hosts, h->id, h);
        return h;
}

int engine_hosts_init(struct engine *e, GError **error)
{
        g_autoptr(json_t) rows = NULL;
        size_t i;
        json_t *row;

        e->hosts = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) host_free);
        e->sd_max_file = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        rows = engine_store_host_list(e->db, error);
        if (!rows)
                return -EIO;
        json_array_foreach(rows, i, row)
                host_attach(e, json_string_value(json_object_get(row, "id")),
                            json_string_value(json_object_get(row, "name")),
                            json_string_value(json_object_get(row, "address")),
                            (unsigned) json_integer_value(json_object_get(row, "port")));
        /* Nothing is known about them until they answer again. */
        return engine_store_hosts_reset(e->db, error);
}

void engine_hosts_free(struct engine *e)
{
        GHashTableIter it;
        gpointer value;

        /* Freeing a client fails its pending calls now: their callbacks still find the table. */
        g_hash_table_iter_init(&it, e->hosts);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct engine_host *h = value;
                g_clear_pointer(&h->rpc, fy_rpc_client_free);
        }
        g_clear_pointer(&e->hosts, g_hash_table_unref);
        g_clear_pointer(&e->sd_max_file, g_hash_table_unref);
}

static bool name_valid(const char *s, size_t max)
{
        size_t len = strlen(s);

        if (len == 0 || len > max)
                return false;
        for (const char *p = s; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr("_-.", *p))
                        return false;
        return true;
}

json_t *engine_host_add(struct engine *e, const char *name, const char *address_in, unsigned port, GError **error)
{
        g_autofree char *address = engine_host_address_normalize(address_in);
        g_autoptr(json_t) used = NULL;
        g_autofree char *id = NULL;
        gint64 host_id = 0;
        size_t i;
        json_t *row;

        if (!name_valid(name, 64)) {
                g_set_error(error, ENGINE_ERROR, 400, "host name must be 1-64 letters, digits or _-. characters");
                return NULL;
        }
        if (!address) {
                g_set_error(error, ENGINE_ERROR, 400, "address must be an IP address or a host name "
                            "(labels of letters, digits and hyphens, at most 253 characters)");
                return NULL;
        }
        if (port < 1 || port > 65535) {
                g_set_error(error, ENGINE_ERROR, 400, "port must be 1-65535");
                return NULL;
        }
        /* The lowest free sanlock host id of the data center. */
        used = engine_store_host_ids(e->db, e->dc_id, error);
        if (!used)
                return NULL;
        host_id = 1;
        json_array_foreach(used, i, row) {
                if (json_integer_value(json_object_get(row, "host_id")) == host_id)
                        host_id++;
                else
                        break;
        }
        if (host_id > 2000) {
                g_set_error(error, ENGINE_ERROR, 409, "the data center has 2000 hosts, sanlock's limit");
                return NULL;
        }
        id = fy_uuid_new();
        if (engine_store_host_insert(e->db, id, name, address, port, e->dc_id, host_id, engine_now(), error) < 0) {
                if (g_error_matches(*error, FY_ERROR, FY_ERR_INVALID_PARAMETER)) {
                        g_clear_error(error);
                        g_set_error(error, ENGINE_ERROR, 409, "a host named %s or at %s:%u exists already",
                                    name, address, port);
                }
                return NULL;
        }
        host_attach(e, id, name, address, port);
        engine_event(e, "normal", NULL, "host %s (%s:%u) added with sanlock host id %" G_GINT64_FORMAT,
                     name, address, port, host_id);
        return engine_store_host_get(e->db, id, error);
}

int engine_host_set_maintenance(struct engine *e, const char *host_id, bool maintenance, GError **error)
{
        g_autofree char *spm = engine_spm_host(e);

        if (maintenance && spm && strcmp(spm, host_id) == 0) {
                /* It would keep the SPM lease and block every election. */
                g_set_error(error, ENGINE_ERROR, 409, "host %s is the SPM; it cannot enter maintenance while it holds the role",
                            host_id);
                return -EBUSY;
        }
        int r = engine_store_host_set_maintenance(e->db, host_id, maintenance, error);

        if (r == -ENOENT) {
                g_clear_error(error);
                g_set_error(error, ENGINE_ERROR, 404, "no host %s", host_id);
        }
        return r;
}

/* A host leaves the inventory: in maintenance, not the SPM, nothing of it running. */
int engine_host_remove(struct engine *e, const char *host_id, GError **error)
{
        g_autoptr(json_t) row = engine_store_host_get(e->db, host_id, error);
        g_autofree char *busy = NULL;
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *name = NULL;
        struct engine_host *h;

        if (!row) {
                if (!*error)
                        g_set_error(error, ENGINE_ERROR, 404, "no host %s", host_id);
                return -ENOENT;
        }
        name = g_strdup(json_string_value(json_object_get(row, "name")));
        if (!json_integer_value(json_object_get(row, "maintenance"))) {
                g_set_error(error, ENGINE_ERROR, 409, "host %s is not in maintenance; deactivate it first "
                            "(POST /api/hosts/%s/deactivate)", name, host_id);
                return -EBUSY;
        }
        if (spm && strcmp(spm, host_id) == 0) {
                g_set_error(error, ENGINE_ERROR, 409, "host %s is the SPM", name);
                return -EBUSY;
        }
        if (engine_store_host_running(e->db, host_id, &busy, error) < 0)
                return -EIO;
        if (busy) {
                g_set_error(error, ENGINE_ERROR, 409, "host %s still has a %s running; wait for it or cancel it",
                            name, busy);
                return -EBUSY;
        }
        if (engine_store_host_delete(e->db, host_id, error) < 0)
                return -EIO;
        /* Its client goes too: pending calls complete with CANCELLED (finding the host still), as at shutdown. */
        h = host_lookup(e, host_id);
        if (h)
                g_clear_pointer(&h->rpc, fy_rpc_client_free);
        g_hash_table_remove(e->hosts, host_id);
        engine_event(e, "normal", NULL, "host %s (%s) removed", name, host_id);
        return 0;
}

struct failed_call {
        fy_rpc_client_reply_fn cb;
        void *userdata;
        char *host_id;
};

static gboolean fail_later(gpointer data)
{
        struct failed_call *f = data;
        g_autoptr(GError) error = g_error_new(G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no host %s", f->host_id);

        f->cb(NULL, error, f->userdata);
        g_free(f->host_id);
        g_free(f);
        return G_SOURCE_REMOVE;
}

static void host_call(struct engine *e, const char *host_id, const char *method, json_t *params,
                      unsigned timeout_ms, bool urgent, fy_rpc_client_reply_fn cb, void *userdata)
{
        struct engine_host *h = host_lookup(e, host_id);

        if (!h) {
                struct failed_call *f = g_new0(struct failed_call, 1);

                json_decref(params);
                f->cb = cb;
                f->userdata = userdata;
                f->host_id = g_strdup(host_id ? host_id : "(none)");
                g_idle_add(fail_later, f);
                return;
        }
        if (e->transport) {
                e->transport->call(e->transport->userdata, host_id, method, params, cb, userdata);
                return;
        }
        if (urgent)
                fy_rpc_client_call_urgent(h->rpc, method, params, timeout_ms, cb, userdata);
        else
                fy_rpc_client_call(h->rpc, method, params, timeout_ms, cb, userdata);
}

void engine_host_call(struct engine *e, const char *host_id, const char *method, json_t *params,
                      unsigned timeout_ms, fy_rpc_client_reply_fn cb, void *userdata)
{
        host_call(e, host_id, method, params, timeout_ms, false, cb, userdata);
}

GPtrArray *engine_usable_hosts(struct engine *e)
{
        g_autoptr(json_t) rows = engine_store_host_usable(e->db, e->dc_id, NULL);
        GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);
        size_t i;
        json_t *row;

        if (rows)
                json_array_foreach(rows, i, row)
                        g_ptr_array_add(ids, g_strdup(json_string_value(json_object_get(row, "id"))));
        return ids;
}

char *engine_spm_host(struct engine *e)
{
        g_autoptr(json_t) row = engine_store_dc_spm_up(e->db, e->dc_id, NULL);

        return row ? g_strdup(json_string_value(json_object_get(row, "id"))) : NULL;
}

/* ---- polling ---- */

struct host_ctx {
        struct engine *e;
        char *host_id;
        unsigned pool_generation;      /* StoragePool.connect: the domain list it was sent with */
};

static struct host_ctx *host_ctx_new(struct engine *e, const char *host_id)
{
        struct host_ctx *c = g_new0(struct host_ctx, 1);

        c->e = e;
        c->host_id = g_strdup(host_id);
        return c;
}

static void host_ctx_free(struct host_ctx *c)
{
        g_free(c->host_id);
        g_free(c);
}

/* Whether this answer (result or failure) may change the host's status, judged on the status the last
 * round read: when it says no, the row is not read again (a stale "no" waits one round at most). */
static bool status_may_change(struct engine *e, struct engine_host *h, bool answered)
{
        if (!h->status[0])
                return true;
        if (answered)
                return !h->maintenance && strcmp(h->status, "up") != 0;
        return h->failures >= e->config.host_failures && strcmp(h->status, "non_responsive") != 0 &&
               strcmp(h->status, "maintenance") != 0;
}

static void host_status_changed(struct engine_host *h, const char *status)
{
        g_strlcpy(h->status, status ? status : "", sizeof(h->status));
}

static void on_stats(json_t *result, const GError *error, void *userdata)
{
        struct host_ctx *c = userdata;
        struct engine *e = c->e;
        struct engine_host *h = host_lookup(e, c->host_id);
        g_autoptr(GError) err = NULL;
        g_autoptr(json_t) row = NULL;
        const char *status;

        if (!h)
                goto out;
        h->polling = false;
        if (result) {
                h->failures = 0;
                json_decref(h->stats);
                h->stats = json_incref(result);
                h->stats_sent = h->poll_sent;
                h->stats_dirty = true;
                h->seen = engine_now();
        } else {
                h->failures++;
        }
        if (!status_may_change(e, h, result != NULL))
                goto out;
        row = engine_store_host_get(e->db, h->id, NULL);
        if (!row)
                goto out;
        status = json_string_value(json_object_get(row, "status"));
        host_status_changed(h, status);
        h->maintenance = json_integer_value(json_object_get(row, "maintenance")) != 0;
        if (result) {
                if (!h->maintenance && strcmp(status, "up") != 0) {
                        if (engine_store_host_set_status(e->db, h->id, "up", &err) < 0)
                                goto store_failed;
                        host_status_changed(h, "up");
                        engine_event(e, "normal", NULL, "host %s is up", json_string_value(json_object_get(row, "name")));
                        publish_state(e, h->id, "up");
                }
        } else {
                if (h->failures >= e->config.host_failures && strcmp(status, "non_responsive") != 0 &&
                    strcmp(status, "maintenance") != 0) {
                        if (engine_store_host_set_status(e->db, h->id, "non_responsive", &err) < 0)
                                goto store_failed;
                        host_status_changed(h, "non_responsive");
                        engine_event(e, "warning", NULL, "host %s is not responding: %s",
                                     json_string_value(json_object_get(row, "name")), error->message);
                        publish_state(e, h->id, "non_responsive");
                }
        }
        goto out;
store_failed:
        /* Nothing changed: the next answer (or the next failure) decides again. */
        h->status[0] = '\0';
        g_warning("host %s: its state is not recorded: %s", c->host_id, err->message);
out:
        host_ctx_free(c);
}

/* Every host's stats that came since the last round, in one transaction. A failure keeps them for the
 * next round; the scheduler reads the copies in memory meanwhile. */
static void hosts_flush_stats(struct engine *e, json_t *rows)
{
        g_autoptr(GError) err = NULL;
        g_autoptr(GPtrArray) flushed = g_ptr_array_new();
        size_t i;
        json_t *row;
        int r;

        json_array_foreach(rows, i, row) {
                struct engine_host *h = host_lookup(e, json_string_value(json_object_get(row, "id")));

                if (h && h->stats_dirty)
                        g_ptr_array_add(flushed, h);
        }
        if (flushed->len == 0)
                return;
        r = engine_store_begin(e->db, &err);
        for (guint k = 0; r >= 0 && k < flushed->len; k++) {
                struct engine_host *h = flushed->pdata[k];

                r = engine_store_host_set_stats(e->db, h->id, h->stats, h->seen, &err);
        }
        if (r >= 0)
                r = engine_store_commit(e->db, &err);
        else
                engine_store_rollback(e->db);
        if (r < 0) {
                g_warning("the stats of %u hosts are not kept (next round tries again): %s", flushed->len,
                          err ? err->message : "unknown error");
                return;
        }
        for (guint k = 0; k < flushed->len; k++)
                ((struct engine_host *) flushed->pdata[k])->stats_dirty = false;
}

static json_t *pool_domain_dict(struct engine *e, char **ret_master)
{
        g_autoptr(json_t) rows = engine_store_sd_list(e->db, e->dc_id, NULL);
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        json_t *dict = json_object();
        size_t i;
        json_t *row;

        if (rows)
                json_array_foreach(rows, i, row)
                        json_object_set_new(dict, json_string_value(json_object_get(row, "id")), json_string("active"));
        *ret_master = dc && json_is_string(json_object_get(dc, "master_sd")) ?
                      g_strdup(json_string_value(json_object_get(dc, "master_sd"))) : NULL;
        return dict;
}

static void on_pool_connected(json_t *result, const GError *error, void *userdata)
{
        struct host_ctx *c = userdata;
        struct engine *e = c->e;
        struct engine_host *h = host_lookup(e, c->host_id);
        g_autoptr(GError) err = NULL;

        if (h) {
                h->connecting = false;
                if (result && c->pool_generation != e->pool_generation) {
                        /* A domain was added while this connect was on its way: it did not
                         * join that one; connect again (next round) with the full list. */
                        g_message("host %s: pool connect answered for an older domain list; connecting again", h->id);
                } else if (result) {
                        if (engine_store_host_set_pool_connected(e->db, h->id, true, &err) < 0)
                                g_warning("host %s: pool connection not recorded (connecting again): %s", h->id,
                                          err->message);
                        else
                                engine_event(e, "normal", NULL, "host %s connected to the storage pool", h->id);
                } else {
                        /* Back off: a host that cannot join must not be asked every round. */
                        h->connect_after = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
                        engine_event(e, "warning", NULL, "host %s could not connect to the storage pool: %s",
                                     h->id, error->message);
                }
        }
        host_ctx_free(c);
}

static void host_connect_pool(struct engine *e, struct engine_host *h, json_t *row)
{
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        g_autofree char *master = NULL;
        json_t *dict = pool_domain_dict(e, &master);
        struct host_ctx *ctx;

        if (!dc || !master || json_object_size(dict) == 0) {
                json_decref(dict);
                return;        /* nothing to connect to before the first storage domain */
        }
        h->connecting = true;
        ctx = host_ctx_new(e, h->id);
        ctx->pool_generation = e->pool_generation;
        engine_host_call(e, h->id, "StoragePool.connect",
                         json_pack("{s:s, s:I, s:s, s:o}",
                                   "storagepoolID", json_string_value(json_object_get(dc, "pool_id")),
                                   "hostID", json_integer_value(json_object_get(row, "host_id")),
                                   "masterSdUUID", master, "domainDict", dict),
                         POOL_CONNECT_TIMEOUT_MS, on_pool_connected, ctx);
}

/* ---- SPM election ---- */

static void on_spm_started(json_t *result, const GError *error, void *userdata)
{
        struct host_ctx *c = userdata;
        struct engine *e = c->e;
        g_autoptr(GError) err = NULL;

        e->spm_busy = false;
        if (result) {
                e->spm_elected = g_get_monotonic_time();
                if (engine_store_dc_set_spm(e->db, e->dc_id, c->host_id, json_integer_value(json_object_get(result, "spmLver")),
                                            &err) < 0)
                        g_warning("the SPM is not recorded (elected again): %s", err->message);
                engine_event(e, "normal", NULL, "host %s is the SPM (lease version %" JSON_INTEGER_FORMAT ")",
                             c->host_id, json_integer_value(json_object_get(result, "spmLver")));
        } else {
                engine_event(e, "warning", NULL, "host %s could not become the SPM: %s", c->host_id, error->message);
        }
        host_ctx_free(c);
}

static void spm_elect(struct engine *e)
{
        g_autoptr(json_t) dc = engine_store_dc_spm(e->db, e->dc_id, NULL);
        g_autoptr(GPtrArray) usable = NULL;
        struct engine_host *cur;
        const char *spm;
        const char *candidate = NULL;

        if (!dc || e->spm_busy)
                return;
        spm = json_string_value(json_object_get(dc, "spm_host"));
        cur = host_lookup(e, spm);
        if (spm && cur && cur->stats && json_string_value(json_object_get(dc, "status")) &&
            strcmp(json_string_value(json_object_get(dc, "status")), "up") == 0) {
                if (json_is_true(json_object_get(cur->stats, "spm")))
                        return;        /* healthy */
                if (cur->stats_sent <= e->spm_elected)
                        return;        /* these stats predate the election: wait for fresh ones */
                /* Up but not holding the lease any more (agent restarted): elect again. */
                if (engine_store_dc_set_spm(e->db, e->dc_id, NULL, 0, NULL) < 0)
                        return;        /* not recorded: decided again next round */
                engine_event(e, "warning", NULL, "host %s no longer holds the SPM lease", spm);
                spm = NULL;
        }
        usable = engine_usable_hosts(e);
        for (guint i = 0; i < usable->len && !candidate; i++) {
                struct engine_host *h = host_lookup(e, usable->pdata[i]);

                /* A host that already holds the lease (engine restart) is adopted by spmStart at once. */
                if (h && h->stats && json_is_true(json_object_get(h->stats, "spm")))
                        candidate = usable->pdata[i];
        }
        if (!candidate && usable->len > 0) {
                /* The old SPM may still hold the lease: sanlock refuses (661) until it expires. */
                candidate = usable->pdata[g_random_int_range(0, (gint32) usable->len)];
        }
        if (!candidate || (spm && g_strcmp0(spm, candidate) == 0))
                return;
        e->spm_busy = true;
        engine_host_call(e, candidate, "StoragePool.spmStart",
                         json_pack("{s:s}", "storagepoolID", json_string_value(json_object_get(dc, "pool_id"))),
                         SPM_START_TIMEOUT_MS, on_spm_started, host_ctx_new(e, candidate));
}

/* ---- storage domain space ---- */

static void on_sd_stats(json_t *result, const GError *error, void *userdata)
{
        struct host_ctx *c = userdata;   /* host_id holds the domain id here */

        if (result) {
                json_t *max_file = json_object_get(result, "max_file_size");

                if (engine_store_sd_set_space(c->e->db, c->host_id, json_integer_value(json_object_get(result, "disktotal")),
                                              json_integer_value(json_object_get(result, "diskfree")), NULL) < 0)
                        g_message("storage domain %s: its space is not recorded", c->host_id);
                /* Kept in memory: known again within one stats round after a restart. */
                if (json_is_integer(max_file) && json_integer_value(max_file) > 0)
                        g_hash_table_insert(c->e->sd_max_file, g_strdup(c->host_id),
                                            g_memdup2(&(gint64) { json_integer_value(max_file) }, sizeof(gint64)));
        }
        host_ctx_free(c);
}

static void sd_stats_refresh(struct engine *e)
{
        static gint64 last;
        g_autoptr(GPtrArray) usable = engine_usable_hosts(e);
        g_autoptr(json_t) sds = NULL;
        size_t i;
        json_t *row;

        if (usable->len == 0 || g_get_monotonic_time() - last < SD_STATS_INTERVAL_US)
                return;
        last = g_get_monotonic_time();
        sds = engine_store_sd_list(e->db, NULL, NULL);
        if (sds)
                json_array_foreach(sds, i, row) {
                        const char *id = json_string_value(json_object_get(row, "id"));
                        engine_host_call(e, usable->pdata[0], "StorageDomain.getStats",
                                         json_pack("{s:s}", "storagedomainID", id), e->config.host_timeout,
                                         on_sd_stats, host_ctx_new(e, id));
                }
}

void engine_hosts_tick(struct engine *e)
{
        g_autoptr(json_t) rows = engine_store_host_list(e->db, NULL);
        size_t i;
        json_t *row;

        if (!rows)
                return;
        hosts_flush_stats(e, rows);
        json_array_foreach(rows, i, row) {
                struct engine_host *h = host_lookup(e, json_string_value(json_object_get(row, "id")));

                if (!h)
                        continue;
                host_status_changed(h, json_string_value(json_object_get(row, "status")));
                h->maintenance = json_integer_value(json_object_get(row, "maintenance")) != 0;
                if (!h->polling) {
                        h->polling = true;
                        h->poll_sent = g_get_monotonic_time();
                        /*
                         * Ahead of the host's queued flow calls: a burst of
                         * them (thousands of copies placed at once, most on
                         * the SPM) must not delay the poll past its timeout
                         * and have a busy host taken for a dead one.
                         */
                        host_call(e, h->id, "Host.getStats", NULL, e->config.host_timeout, true, on_stats,
                                  host_ctx_new(e, h->id));
                }
                if (!h->connecting && g_get_monotonic_time() >= h->connect_after &&
                    strcmp(json_string_value(json_object_get(row, "status")), "up") == 0 &&
                    json_integer_value(json_object_get(row, "pool_connected")) == 0)
                        host_connect_pool(e, h, row);
        }
        /* A statement above stuck past leader_stall_timeout: the lead was given up meanwhile. */
        if (!engine_leader_fresh(e))
                return;
        spm_elect(e);
        sd_stats_refresh(e);
}

/* ---- storage domains ---- */

struct sd_add_ctx {
        struct engine *e;
        char *id;
        char *name;
        engine_done_fn done;
        void *userdata;
};

static void on_sd_created(json_t *result, const GError *error, void *userdata)
{
        struct sd_add_ctx *c = userdata;
        struct engine *e = c->e;
        g_autoptr(GError) err = NULL;
        g_autoptr(json_t) row = NULL;

        if (!result) {
                err = g_error_new(ENGINE_ERROR, error->domain == FY_ERROR ? 400 : 503,
                                  "the host could not create storage domain %s: %s", c->name, error->message);
                c->done(NULL, err, c->userdata);
                goto out;
        }
        if (engine_store_begin(e->db, &err) < 0)
                goto failed;
        if (engine_store_sd_insert(e->db, c->id, c->name, e->dc_id, engine_now(), &err) < 0 ||
            engine_store_dc_set_master_if_none(e->db, e->dc_id, c->id, &err) < 0 ||
            engine_store_hosts_pool_reconnect(e->db, e->dc_id, &err) < 0) {
                engine_store_rollback(e->db);
                goto failed;
        }
        if (engine_store_commit(e->db, &err) < 0)
                goto failed;
        /* Every host joins the new domain's lockspace (connect is idempotent); a connect
         * already on its way carries the old list and does not count (pool_generation). */
        e->pool_generation++;
        engine_event(e, "normal", NULL, "storage domain %s (%s) created", c->name, c->id);
        row = engine_store_sd_get(e->db, c->id, &err);
        c->done(row, err, c->userdata);
        goto out;
failed:
        c->done(NULL, err, c->userdata);
out:
        g_free(c->id);
        g_free(c->name);
        g_free(c);
}

void engine_sd_add(struct engine *e, const char *name, engine_done_fn done, void *userdata)
{
        g_autoptr(json_t) up = NULL;
        g_autoptr(json_t) exists = NULL;
        g_autoptr(GError) error = NULL;
        struct sd_add_ctx *c;

        if (!name_valid(name, 50)) {
                error = g_error_new(ENGINE_ERROR, 400, "storage domain name must be 1-50 letters, digits or _-. characters");
                done(NULL, error, userdata);
                return;
        }
        exists = engine_store_sd_get_by_name(e->db, name, NULL);
        if (exists) {
                error = g_error_new(ENGINE_ERROR, 409, "a storage domain named %s exists already", name);
                done(NULL, error, userdata);
                return;
        }
        up = engine_store_host_first_up(e->db, NULL);
        if (!up) {
                error = g_error_new(ENGINE_ERROR, 503, "no host is up to create the storage domain; add a host first");
                done(NULL, error, userdata);
                return;
        }
        c = g_new0(struct sd_add_ctx, 1);
        c->e = e;
        c->id = fy_uuid_new();
        c->name = g_strdup(name);
        c->done = done;
        c->userdata = userdata;
        engine_host_call(e, json_string_value(json_object_get(up, "id")), "StorageDomain.create",
                         json_pack("{s:s, s:s, s:s}", "storagedomainID", c->id, "name", name, "domainType", "localfs"),
                         SD_CREATE_TIMEOUT_MS, on_sd_created, c);
}
