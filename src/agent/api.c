/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "api.h"
#include "config.h"
#include "error.h"
#include "jobs.h"
#include "lease.h"
#include "locks.h"
#include "rategov.h"
#include "sdm.h"
#include "storage.h"
#include "transfer.h"
#include "uuid.h"

#define MAX_POOL_DOMAINS 64
#define MAX_JOB_IDS 1000

/* ---- running blocking work off the main thread ---- */

typedef json_t *(*blocking_fn)(struct agent *a, void *data, GError **error);

struct blocking {
        struct agent *agent;
        struct fy_rpc_call *call;
        blocking_fn fn;
        void *data;
        GDestroyNotify data_free;
        json_t *result;
        GError *error;
};

static void blocking_thread(GTask *task, gpointer source, gpointer task_data, GCancellable *cancel)
{
        struct blocking *b = task_data;

        b->result = b->fn(b->agent, b->data, &b->error);
        if (!b->result && !b->error)
                b->error = g_error_new(FY_ERROR, FY_ERR_GENERAL, "internal error: no result");
        g_task_return_boolean(task, TRUE);
}

static void blocking_done(GObject *source, GAsyncResult *res, gpointer data)
{
        struct blocking *b = g_task_get_task_data(G_TASK(res));

        if (b->error)
                fy_rpc_call_gerror(b->call, b->error);
        else
                fy_rpc_call_return(b->call, g_steal_pointer(&b->result));
}

static void blocking_free(gpointer data)
{
        struct blocking *b = data;

        if (b->data_free)
                b->data_free(b->data);
        json_decref(b->result);
        g_clear_error(&b->error);
        g_free(b);
}

/* Runs fn in a worker thread; the call completes in the main thread. */
static void run_blocking(struct agent *a, struct fy_rpc_call *call, blocking_fn fn,
                         void *data, GDestroyNotify data_free)
{
        struct blocking *b = g_new0(struct blocking, 1);
        g_autoptr(GTask) task = g_task_new(NULL, NULL, blocking_done, NULL);

        b->agent = a;
        b->call = call;
        b->fn = fn;
        b->data = data;
        b->data_free = data_free;
        g_task_set_task_data(task, b, blocking_free);
        g_task_run_in_thread(task, blocking_thread);
}

#define FAIL(call, error) do { fy_rpc_call_gerror((call), (error)); return; } while (0)

/* ---- Host ---- */

static void host_ping2(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        fy_rpc_call_return(call, json_true());
}

static void host_get_capabilities(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        unsigned host_id;

        g_mutex_lock(&a->pool_lock);
        host_id = a->host_id;
        g_mutex_unlock(&a->pool_lock);
        json_t *caps = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:[s,s,s,s,s,s,s,s,s,s,s,s]}",
                                           "hostname", a->config.host_name,
                                           "software_name", "ferry-agent",
                                           "software_version", FERRY_VERSION,
                                           "host_id", (int) host_id,
                                           "max_jobs", (int) a->config.max_jobs,
                                           "cpu_count", (int) g_get_num_processors(),
                                           "storage_root", a->config.storage_root,
                                           "features", "copy_data", "update_volume", "job_abort",
                                           "job_delete", "job_events", "image_transfer",
                                           "merge", "sparsify_volume", "amend_volume", "measure",
                                           "volume_checksum", "resumable_copy");

        agent_transfers_describe(a, caps);
        fy_rpc_call_return(call, caps);
}


static void host_get_stats(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        unsigned running, pending;
        double load[3] = { 0, 0, 0 };

        agent_jobs_counts(a->jobs, &running, &pending);
        if (getloadavg(load, 3) < 0)
                load[0] = load[1] = load[2] = 0;
        json_t *stats = json_pack("{s:i, s:i, s:i, s:i, s:I, s:f, s:I, s:I, s:i, s:f, s:f, s:f, s:b}",
                                           "jobs_running", (int) running,
                                           "jobs_pending", (int) pending,
                                           "job_limit", (int) a->config.max_jobs,
                                           "free_slots", (int) (running >= a->config.max_jobs ? 0 : a->config.max_jobs - running),
                                           "bytes_copied", (json_int_t) agent_rate_gov_moved(a->copy_gov),
                                           "copy_rate", agent_copy_rate(a),
                                           "copy_rate_limit", (json_int_t) a->config.copy_rate_limit,
                                           /* what each running copy gets now: the cap over the copies */
                                           "copy_rate_share", (json_int_t) agent_rate_gov_share(a->copy_gov),
                                           "copies_active", (int) agent_rate_gov_active(a->copy_gov),
                                           "cpuLoad", load[0],
                                           "loadavg5", load[1],
                                           "loadavg15", load[2],
                                           "spm", agent_is_spm(a));

        agent_transfers_describe(a, stats);
        /* Calls per method since the agent started: what an engine flow costs in round trips (bench/calls). */
        json_object_set_new(stats, "rpc_calls", fy_rpc_call_counts(call));
        fy_rpc_call_return(call, stats);
}

static void host_get_jobs(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *job_type = NULL;
        json_t *ids = json_object_get(params, "job_ids");

        if (fy_rpc_param_string(params, "job_type", false, 32, &job_type, &error) < 0)
                FAIL(call, error);
        if (ids && json_is_null(ids))
                ids = NULL;
        if (ids && (!json_is_array(ids) || json_array_size(ids) > MAX_JOB_IDS)) {
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "job_ids must be a list of at most %d job ids", MAX_JOB_IDS);
                return;
        }
        fy_rpc_call_return(call, agent_jobs_info(a->jobs, job_type, ids));
}

/* ---- Job (ferry extensions) ---- */

static void job_abort(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *id = NULL;

        if (fy_rpc_param_uuid(params, "job_id", true, &id, &error) < 0 ||
            agent_jobs_abort(a->jobs, id, &error) < 0)
                FAIL(call, error);
        fy_rpc_call_return(call, json_true());
}

static void job_delete(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *id = NULL;

        if (fy_rpc_param_uuid(params, "job_id", true, &id, &error) < 0 ||
            agent_jobs_delete(a->jobs, id, &error) < 0)
                FAIL(call, error);
        fy_rpc_call_return(call, json_true());
}

/* ---- StorageDomain ---- */

struct sd_create_args {
        char *sd;
        char *name;
};

static void sd_create_args_free(void *data)
{
        struct sd_create_args *c = data;

        g_free(c->sd);
        g_free(c->name);
        g_free(c);
}

static json_t *sd_create_blocking(struct agent *a, void *data, GError **error)
{
        struct sd_create_args *c = data;

        if (agent_sd_create(a, c->sd, c->name, error) < 0)
                return NULL;
        g_message("created storage domain %s (%s)", c->sd, c->name);
        return json_true();
}

static void sd_create(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *sd = NULL, *name = NULL;
        guint64 version = 5;
        struct sd_create_args *c;

        if (fy_rpc_param_uuid(params, "storagedomainID", true, &sd, &error) < 0 ||
            fy_rpc_param_string(params, "name", true, 256, &name, &error) < 0 ||
            fy_rpc_param_uint(params, "version", false, 100, &version, &error) < 0)
                FAIL(call, error);
        if (version != 5) {
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "only storage domain version 5 is supported, got %" G_GUINT64_FORMAT, version);
                return;
        }
        c = g_new0(struct sd_create_args, 1);
        c->sd = g_ascii_strdown(sd, -1);
        c->name = g_strdup(name);
        run_blocking(a, call, sd_create_blocking, c, sd_create_args_free);
}

typedef json_t *(*sd_query_fn)(struct agent *a, const char *sd, GError **error);

/* A read of storage for a verb; runs in a worker thread (storage and sanlock I/O can block for io_timeout). */
struct query_args {
        sd_query_fn sd_fn;             /* one domain: fn(sd) */
        char *sd;
        char *img;                     /* StorageDomain.getVolumes: optional image */
        struct agent_volref ref;       /* Volume.getInfo */
};

static void query_args_free(void *data)
{
        struct query_args *q = data;

        g_free(q->sd);
        g_free(q->img);
        g_free(q);
}

static json_t *sd_query_blocking(struct agent *a, void *data, GError **error)
{
        struct query_args *q = data;

        return q->sd_fn(a, q->sd, error);
}

/* Verbs that read one storage domain: validate the id, answer with fn's result. */
static void sd_query(struct agent *a, struct fy_rpc_call *call, json_t *params, sd_query_fn fn)
{
        g_autoptr(GError) error = NULL;
        const char *sd = NULL;
        struct query_args *q;

        if (fy_rpc_param_uuid(params, "storagedomainID", true, &sd, &error) < 0)
                FAIL(call, error);
        q = g_new0(struct query_args, 1);
        q->sd_fn = fn;
        q->sd = g_ascii_strdown(sd, -1);
        run_blocking(a, call, sd_query_blocking, q, query_args_free);
}

static void sd_get_info(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sd_query(userdata, call, params, agent_sd_info);
}

static void sd_get_stats(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sd_query(userdata, call, params, agent_sd_stats);
}

static json_t *sd_volumes_blocking(struct agent *a, void *data, GError **error)
{
        struct query_args *q = data;

        return agent_sd_volumes(a, q->sd, q->img, error);
}

static void sd_get_volumes(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *sd = NULL, *img = NULL;
        struct query_args *q;

        if (fy_rpc_param_uuid(params, "storagedomainID", true, &sd, &error) < 0 ||
            fy_rpc_param_uuid(params, "imageID", false, &img, &error) < 0)
                FAIL(call, error);
        q = g_new0(struct query_args, 1);
        q->sd = g_ascii_strdown(sd, -1);
        q->img = img ? g_ascii_strdown(img, -1) : NULL;
        run_blocking(a, call, sd_volumes_blocking, q, query_args_free);
}

/* ---- StoragePool ---- */

struct pool_connect_args {
        char *pool;
        unsigned host_id;
        char *master;
        GPtrArray *domains;
};

static void pool_connect_args_free(void *data)
{
        struct pool_connect_args *p = data;

        g_free(p->pool);
        g_free(p->master);
        g_ptr_array_unref(p->domains);
        g_free(p);
}

static json_t *pool_connect_blocking(struct agent *a, void *data, GError **error)
{
        struct pool_connect_args *p = data;
        g_autoptr(GPtrArray) fresh = g_ptr_array_new_with_free_func(g_free);

        for (guint i = 0; i < p->domains->len; i++) {
                const char *sd = p->domains->pdata[i];
                g_autofree char *ids = NULL;

                if (agent_sd_check(a, sd, error) < 0)
                        return NULL;
                ids = agent_sd_ids_path(a, sd);
                g_message("joining lockspace %s as host id %u", sd, p->host_id);
                if (agent_lockspace_add(sd, p->host_id, ids, a->config.io_timeout, error) < 0)
                        return NULL;
        }
        for (guint i = 0; i < p->domains->len; i++) {
                const char *sd = p->domains->pdata[i];
                g_autofree char *ids = agent_sd_ids_path(a, sd);

                if (agent_lockspace_wait(sd, p->host_id, ids, error) < 0)
                        return NULL;
        }
        g_mutex_lock(&a->pool_lock);
        g_free(a->pool_id);
        a->pool_id = g_strdup(p->pool);
        a->host_id = p->host_id;
        g_free(a->master_sd);
        a->master_sd = g_strdup(p->master);
        for (guint i = 0; i < p->domains->len; i++) {
                bool known = false;
                for (guint j = 0; j < a->pool_domains->len; j++)
                        known |= strcmp(a->pool_domains->pdata[j], p->domains->pdata[i]) == 0;
                if (!known) {
                        g_ptr_array_add(a->pool_domains, g_strdup(p->domains->pdata[i]));
                        g_ptr_array_add(fresh, g_strdup(p->domains->pdata[i]));
                }
        }
        g_mutex_unlock(&a->pool_lock);
        /* What an agent killed mid-write (this one before its restart, or another) left behind. */
        for (guint i = 0; i < fresh->len; i++)
                agent_sd_remove_stale_temps(a, fresh->pdata[i], a->start_time);
        g_message("connected to storage pool %s as host id %u (%u domains)", p->pool, p->host_id, p->domains->len);
        return json_true();
}

static void pool_connect(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *pool = NULL, *master = NULL;
        guint64 host_id = 0;
        json_t *dict = NULL;
        struct pool_connect_args *p;
        const char *key;
        json_t *value;
        bool master_listed = false;

        if (fy_rpc_param_uuid(params, "storagepoolID", true, &pool, &error) < 0 ||
            fy_rpc_param_uint(params, "hostID", a->config.host_id == 0, 2000, &host_id, &error) < 0 ||
            fy_rpc_param_uuid(params, "masterSdUUID", true, &master, &error) < 0 ||
            fy_rpc_param_object(params, "domainDict", true, &dict, &error) < 0)
                FAIL(call, error);
        if (host_id == 0)
                host_id = a->config.host_id;
        if (host_id < 1 || host_id > 2000) {
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "hostID must be 1-2000 (the sanlock host id)");
                return;
        }
        if (a->config.host_id && host_id != a->config.host_id) {
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS,
                                  "hostID %" G_GUINT64_FORMAT " differs from host_id %u in this agent's configuration",
                                  host_id, a->config.host_id);
                return;
        }
        if (json_object_size(dict) == 0 || json_object_size(dict) > MAX_POOL_DOMAINS) {
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "domainDict must name 1-%d storage domains", MAX_POOL_DOMAINS);
                return;
        }
        g_mutex_lock(&a->pool_lock);
        if (a->pool_id && g_ascii_strcasecmp(a->pool_id, pool) != 0) {
                g_autofree char *cur = g_strdup(a->pool_id);
                g_mutex_unlock(&a->pool_lock);
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS,
                                  "this host is connected to storage pool %s; disconnect it first", cur);
                return;
        }
        if (a->pool_id && a->host_id != host_id) {
                g_mutex_unlock(&a->pool_lock);
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "already connected with host id %u", a->host_id);
                return;
        }
        g_mutex_unlock(&a->pool_lock);

        p = g_new0(struct pool_connect_args, 1);
        p->pool = g_ascii_strdown(pool, -1);
        p->host_id = (unsigned) host_id;
        p->master = g_ascii_strdown(master, -1);
        p->domains = g_ptr_array_new_with_free_func(g_free);
        json_object_foreach(dict, key, value) {
                if (!fy_uuid_is_valid(key) || !json_is_string(value)) {
                        pool_connect_args_free(p);
                        fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS,
                                          "domainDict maps storage domain UUIDs to a status string; bad entry '%.64s'", key);
                        return;
                }
                g_ptr_array_add(p->domains, g_ascii_strdown(key, -1));
                master_listed |= g_ascii_strcasecmp(key, master) == 0;
        }
        if (!master_listed) {
                pool_connect_args_free(p);
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "masterSdUUID must be one of the domains in domainDict");
                return;
        }
        run_blocking(a, call, pool_connect_blocking, p, pool_connect_args_free);
}

static json_t *pool_disconnect_blocking(struct agent *a, void *data, GError **error)
{
        g_autoptr(GPtrArray) domains = NULL;
        unsigned host_id;

        g_mutex_lock(&a->pool_lock);
        if (a->spm) {
                g_mutex_unlock(&a->pool_lock);
                g_set_error(error, FY_ERROR, FY_ERR_SPM_REQUIRED, "this host is the SPM; run StoragePool.spmStop first");
                return NULL;
        }
        /* A copy: a concurrent connect may add to (and reallocate) the pool's list. */
        domains = g_ptr_array_new_with_free_func(g_free);
        for (guint i = 0; i < a->pool_domains->len; i++)
                g_ptr_array_add(domains, g_strdup(a->pool_domains->pdata[i]));
        host_id = a->host_id;
        g_mutex_unlock(&a->pool_lock);

        for (guint i = 0; i < domains->len; i++) {
                g_autofree char *ids = agent_sd_ids_path(a, domains->pdata[i]);
                if (agent_lockspace_remove(domains->pdata[i], host_id, ids, error) < 0)
                        return NULL;
        }
        g_mutex_lock(&a->pool_lock);
        g_clear_pointer(&a->pool_id, g_free);
        g_clear_pointer(&a->master_sd, g_free);
        g_ptr_array_set_size(a->pool_domains, 0);
        if (!a->config.host_id)
                a->host_id = 0;
        g_mutex_unlock(&a->pool_lock);
        g_message("disconnected from the storage pool");
        return json_true();
}

static bool pool_check(struct agent *a, struct fy_rpc_call *call, json_t *params)
{
        g_autoptr(GError) error = NULL;
        const char *pool = NULL;
        bool ok;

        if (fy_rpc_param_uuid(params, "storagepoolID", true, &pool, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return false;
        }
        g_mutex_lock(&a->pool_lock);
        ok = a->pool_id && g_ascii_strcasecmp(a->pool_id, pool) == 0;
        g_mutex_unlock(&a->pool_lock);
        if (!ok)
                fy_rpc_call_error(call, FY_ERR_NOT_CONNECTED,
                                  "this host is not connected to storage pool %s (StoragePool.connect)", pool);
        return ok;
}

/* Pool verbs: the named pool must be this host's, then the work runs off the main thread. */
static void pool_verb(struct agent *a, struct fy_rpc_call *call, json_t *params, blocking_fn fn)
{
        if (!pool_check(a, call, params))
                return;
        run_blocking(a, call, fn, NULL, NULL);
}

static void pool_disconnect(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        pool_verb(userdata, call, params, pool_disconnect_blocking);
}

static json_t *spm_start_blocking(struct agent *a, void *data, GError **error)
{
        g_autofree char *master = NULL;
        g_autofree char *leases = NULL;
        struct agent_lease lease;
        guint64 lver = 0;
        unsigned host_id;

        g_mutex_lock(&a->pool_lock);
        if (a->spm) {
                json_t *r = json_pack("{s:s, s:I, s:i}", "spmStatus", "SPM", "spmLver", (json_int_t) a->spm_lver,
                                      "spmId", (int) a->host_id);
                g_mutex_unlock(&a->pool_lock);
                return r;
        }
        master = g_strdup(a->master_sd);
        host_id = a->host_id;
        g_mutex_unlock(&a->pool_lock);
        if (!master) {
                /* A disconnect finished between the pool check and now. */
                g_set_error(error, FY_ERROR, FY_ERR_NOT_CONNECTED,
                            "this host is not connected to a storage pool (StoragePool.connect)");
                return NULL;
        }

        leases = agent_sd_leases_path(a, master);
        lease = (struct agent_lease) { master, AGENT_SPM_LEASE_NAME, leases, AGENT_SPM_LEASE_OFFSET };
        if (agent_lease_acquire(&lease, FY_ERR_SPM_ACQUIRE, &lver, error) < 0)
                return NULL;
        g_mutex_lock(&a->pool_lock);
        a->spm = true;
        a->spm_lver = lver;
        g_mutex_unlock(&a->pool_lock);
        g_message("became SPM (lease version %" G_GUINT64_FORMAT ")", lver);
        return json_pack("{s:s, s:I, s:i}", "spmStatus", "SPM", "spmLver", (json_int_t) lver, "spmId", (int) host_id);
}

static void spm_start(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        pool_verb(userdata, call, params, spm_start_blocking);
}

static json_t *spm_stop_blocking(struct agent *a, void *data, GError **error)
{
        g_autofree char *master = NULL;
        g_autofree char *leases = NULL;
        struct agent_lease lease;

        g_mutex_lock(&a->pool_lock);
        if (!a->spm) {
                g_mutex_unlock(&a->pool_lock);
                return json_true();
        }
        /* Checked with spm under one lock: spm_job_run counts itself in under the same lock. */
        if (a->spm_jobs > 0) {
                int n = a->spm_jobs;
                g_mutex_unlock(&a->pool_lock);
                g_set_error(error, FY_ERROR, FY_ERR_SPM_REQUIRED,
                            "SPM operations are still running (%d); wait for them before spmStop", n);
                return NULL;
        }
        master = g_strdup(a->master_sd);
        /* New SPM operations are refused from now on. */
        a->spm = false;
        g_mutex_unlock(&a->pool_lock);

        leases = agent_sd_leases_path(a, master);
        lease = (struct agent_lease) { master, AGENT_SPM_LEASE_NAME, leases, AGENT_SPM_LEASE_OFFSET };
        if (agent_lease_release(&lease, error) < 0) {
                g_mutex_lock(&a->pool_lock);
                a->spm = true;
                g_mutex_unlock(&a->pool_lock);
                return NULL;
        }
        g_message("stopped being SPM");
        return json_true();
}

static void spm_stop(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        pool_verb(userdata, call, params, spm_stop_blocking);
}

static json_t *spm_status_blocking(struct agent *a, void *data, GError **error)
{
        g_autofree char *master = NULL;
        g_autofree char *leases = NULL;
        g_autoptr(GArray) owners = NULL;
        struct agent_lease lease;
        guint64 version = 0;
        int spm_id = -1;

        g_mutex_lock(&a->pool_lock);
        if (a->spm) {
                json_t *r = json_pack("{s:s, s:I, s:i}", "spmStatus", "SPM", "spmLver", (json_int_t) a->spm_lver,
                                      "spmId", (int) a->host_id);
                g_mutex_unlock(&a->pool_lock);
                return r;
        }
        master = g_strdup(a->master_sd);
        g_mutex_unlock(&a->pool_lock);
        if (!master) {
                g_set_error(error, FY_ERROR, FY_ERR_NOT_CONNECTED,
                            "this host is not connected to a storage pool (StoragePool.connect)");
                return NULL;
        }

        leases = agent_sd_leases_path(a, master);
        lease = (struct agent_lease) { master, AGENT_SPM_LEASE_NAME, leases, AGENT_SPM_LEASE_OFFSET };
        if (agent_lease_owners(&lease, &owners, &version, error) < 0)
                return NULL;
        if (owners->len > 0)
                spm_id = (int) g_array_index(owners, guint64, 0);
        return json_pack("{s:s, s:I, s:i}", "spmStatus", "Free", "spmLver", (json_int_t) version, "spmId", spm_id);
}

static void spm_status(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        pool_verb(userdata, call, params, spm_status_blocking);
}

/* ---- Volume / Image: metadata operations, SPM only, run as jobs ---- */

struct spm_job {
        struct agent *agent;
        struct agent_volref ref;       /* vol unused for Image.delete */
        enum { SPM_VOLUME_CREATE, SPM_VOLUME_DELETE, SPM_IMAGE_DELETE, SPM_PREPARE_MERGE, SPM_FINALIZE_MERGE } op;
        struct agent_volume_create spec;
        struct agent_subchain subchain;        /* prepareMerge, finalizeMerge */
        char *disktype;
        char *description;
        char parent[FY_UUID_STR_LEN + 1];
        char parent_img[FY_UUID_STR_LEN + 1];
};

static void spm_job_free(void *data)
{
        struct spm_job *s = data;

        g_free(s->disktype);
        g_free(s->description);
        g_free(s);
}

static int spm_job_do(struct spm_job *s, GError **error)
{
        switch (s->op) {
        case SPM_VOLUME_CREATE:
                return agent_volume_create(s->agent, &s->ref, &s->spec, error);
        case SPM_VOLUME_DELETE:
                return agent_volume_delete(s->agent, &s->ref, error);
        case SPM_IMAGE_DELETE:
                return agent_image_delete(s->agent, s->ref.sd, s->ref.img, error);
        case SPM_PREPARE_MERGE:
                return agent_merge_prepare(s->agent, &s->subchain, error);
        case SPM_FINALIZE_MERGE:
                return agent_merge_finalize(s->agent, &s->subchain, error);
        }
        g_assert_not_reached();
}

static int spm_job_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct spm_job *s = data;
        struct agent *a = s->agent;
        struct agent_lock_req locks[2];
        bool spm;
        int r;

        /* Counted while it runs, checked together with spm: spmStop waits for none or refuses. */
        g_mutex_lock(&a->pool_lock);
        spm = a->spm;
        if (spm)
                a->spm_jobs++;
        g_mutex_unlock(&a->pool_lock);
        if (!spm) {
                g_set_error(error, FY_ERROR, FY_ERR_SPM_REQUIRED, "this host stopped being the SPM before the job ran");
                return -EPERM;
        }

        /* The same host-local locks as a copy into the image: no job of this host changes it meanwhile. */
        locks[0] = (struct agent_lock_req) { g_strconcat("sd:", s->ref.sd, NULL), false };
        locks[1] = (struct agent_lock_req) { g_strconcat("img:", s->ref.sd, ":", s->ref.img, NULL), true };
        r = agent_locks_acquire(a->locks, locks, G_N_ELEMENTS(locks), cancel);
        if (r == 0) {
                r = g_cancellable_is_cancelled(cancel) ? -ECANCELED : spm_job_do(s, error);
                agent_locks_release(a->locks, locks, G_N_ELEMENTS(locks));
        }
        g_free(locks[0].name);
        g_free(locks[1].name);

        g_mutex_lock(&a->pool_lock);
        a->spm_jobs--;
        g_mutex_unlock(&a->pool_lock);
        return r;
}

static bool spm_check(struct agent *a, struct fy_rpc_call *call)
{
        if (agent_is_spm(a))
                return true;
        fy_rpc_call_error(call, FY_ERR_SPM_REQUIRED,
                          "%s changes storage metadata and runs only on the SPM; this host is not the SPM",
                          fy_rpc_call_method(call));
        return false;
}

static void spm_job_schedule(struct agent *a, struct fy_rpc_call *call, json_t *params,
                             struct spm_job *s, const char *what)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *generated = NULL;
        g_autofree char *desc = NULL;
        const char *job_id = NULL;

        if (fy_rpc_param_uuid(params, "job_id", false, &job_id, &error) < 0) {
                g_free(s->disktype);
                g_free(s->description);
                g_free(s);
                FAIL(call, error);
        }
        if (!job_id)
                job_id = generated = fy_uuid_new();
        desc = g_strdup_printf("%s %s", fy_rpc_call_method(call), what);
        if (agent_jobs_add(a->jobs, job_id, "storage", desc, spm_job_run, s, spm_job_free, &error) < 0)
                FAIL(call, error);
        fy_rpc_call_return(call, json_string(job_id));
}

static int parse_format(json_t *params, enum fy_vol_format *ret, GError **error)
{
        json_t *v = json_object_get(params, "volFormat");

        /* VDSM accepts the names and the old numeric codes (4 COW, 5 RAW). */
        if (json_is_integer(v) && (json_integer_value(v) == 4 || json_integer_value(v) == 5)) {
                *ret = json_integer_value(v) == 4 ? FY_FORMAT_COW : FY_FORMAT_RAW;
                return 0;
        }
        if (json_is_string(v) && fy_vol_format_from_string(json_string_value(v), ret) == 0)
                return 0;
        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "volFormat must be \"RAW\" or \"COW\"");
        return -EINVAL;
}

static int parse_allocation(json_t *params, enum fy_vol_type *ret, GError **error)
{
        json_t *v = json_object_get(params, "preallocate");

        if (!v || json_is_null(v)) {
                *ret = FY_TYPE_SPARSE;
                return 0;
        }
        if (json_is_integer(v) && (json_integer_value(v) == 1 || json_integer_value(v) == 2)) {
                *ret = json_integer_value(v) == 1 ? FY_TYPE_PREALLOCATED : FY_TYPE_SPARSE;
                return 0;
        }
        if (json_is_string(v) && fy_vol_type_from_string(json_string_value(v), ret) == 0)
                return 0;
        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "preallocate must be \"SPARSE\" or \"PREALLOCATED\"");
        return -EINVAL;
}

static void volume_create(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *sd = NULL, *img = NULL, *vol = NULL, *src_img = NULL, *src_vol = NULL;
        const char *disktype = "DATA", *desc = "";
        guint64 size = 0, initial = 0;
        struct spm_job *s;
        g_autofree char *what = NULL;

        if (!spm_check(a, call))
                return;
        s = g_new0(struct spm_job, 1);
        s->agent = a;
        s->op = SPM_VOLUME_CREATE;
        if (fy_rpc_param_uuid(params, "storagedomainID", true, &sd, &error) < 0 ||
            fy_rpc_param_uuid(params, "imageID", true, &img, &error) < 0 ||
            fy_rpc_param_uuid(params, "volumeID", true, &vol, &error) < 0 ||
            fy_rpc_param_uint(params, "size", true, AGENT_VOLUME_CAPACITY_MAX, &size, &error) < 0 ||
            parse_format(params, &s->spec.format, &error) < 0 ||
            parse_allocation(params, &s->spec.type, &error) < 0 ||
            fy_rpc_param_string(params, "diskType", false, 32, &disktype, &error) < 0 ||
            fy_rpc_param_string(params, "desc", false, FY_META_DESCRIPTION_MAX, &desc, &error) < 0 ||
            fy_rpc_param_uuid(params, "srcImgUUID", false, &src_img, &error) < 0 ||
            fy_rpc_param_uuid(params, "srcVolUUID", false, &src_vol, &error) < 0 ||
            fy_rpc_param_uint(params, "initialSize", false, AGENT_VOLUME_CAPACITY_MAX, &initial, &error) < 0) {
                g_free(s);
                FAIL(call, error);
        }
        for (const char *p = disktype; *p; p++)
                if (!g_ascii_isupper(*p) && !g_ascii_isdigit(*p) && *p != '_') {
                        g_free(s);
                        fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "diskType must be upper-case letters, digits or _ (e.g. DATA)");
                        return;
                }
        if (strpbrk(desc, "\n\r=")) {
                g_free(s);
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "desc must not contain newlines or '='");
                return;
        }
        if (src_vol && strcmp(src_vol, FY_ZERO_UUID) != 0) {
                for (size_t i = 0; i <= FY_UUID_STR_LEN; i++)
                        s->parent[i] = g_ascii_tolower(src_vol[i]);
                s->spec.parent = s->parent;
                /* Another image: a thin layer on a template volume, shared into this image (VDSM). */
                if (src_img && strcmp(src_img, FY_ZERO_UUID) != 0 && g_ascii_strcasecmp(src_img, img) != 0) {
                        for (size_t i = 0; i <= FY_UUID_STR_LEN; i++)
                                s->parent_img[i] = g_ascii_tolower(src_img[i]);
                        s->spec.parent_img = s->parent_img;
                }
        }
        agent_volref_init(&s->ref, sd, img, vol);
        s->spec.capacity = size;
        s->spec.initial_size = initial;
        s->disktype = g_strdup(disktype);
        s->description = g_strdup(desc);
        s->spec.disktype = s->disktype;
        s->spec.description = s->description;
        what = g_strdup_printf("%s/%s/%s", s->ref.sd, s->ref.img, s->ref.vol);
        spm_job_schedule(a, call, params, s, what);
}

static void volume_delete(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *sd = NULL, *img = NULL, *vol = NULL;
        g_autofree char *what = NULL;
        struct spm_job *s;

        if (!spm_check(a, call))
                return;
        if (fy_rpc_param_uuid(params, "storagedomainID", true, &sd, &error) < 0 ||
            fy_rpc_param_uuid(params, "imageID", true, &img, &error) < 0 ||
            fy_rpc_param_uuid(params, "volumeID", true, &vol, &error) < 0)
                FAIL(call, error);
        s = g_new0(struct spm_job, 1);
        s->agent = a;
        s->op = SPM_VOLUME_DELETE;
        agent_volref_init(&s->ref, sd, img, vol);
        what = g_strdup_printf("%s/%s/%s", s->ref.sd, s->ref.img, s->ref.vol);
        spm_job_schedule(a, call, params, s, what);
}

static void image_delete(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *sd = NULL, *img = NULL;
        g_autofree char *what = NULL;
        struct spm_job *s;

        if (!spm_check(a, call))
                return;
        if (fy_rpc_param_uuid(params, "storagedomainID", true, &sd, &error) < 0 ||
            fy_rpc_param_uuid(params, "imageID", true, &img, &error) < 0)
                FAIL(call, error);
        s = g_new0(struct spm_job, 1);
        s->agent = a;
        s->op = SPM_IMAGE_DELETE;
        agent_volref_init(&s->ref, sd, img, FY_ZERO_UUID);
        what = g_strdup_printf("%s/%s", s->ref.sd, s->ref.img);
        spm_job_schedule(a, call, params, s, what);
}

/* StoragePool.prepareMerge / finalizeMerge(storagepoolID, subchainInfo): the SPM's steps around SDM.merge. */
static void pool_merge_step(struct agent *a, struct fy_rpc_call *call, json_t *params, int op)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *what = NULL;
        const char *pool = NULL;
        struct spm_job *s;

        if (!spm_check(a, call))
                return;
        s = g_new0(struct spm_job, 1);
        s->agent = a;
        s->op = op;
        if (fy_rpc_param_uuid(params, "storagepoolID", false, &pool, &error) < 0 ||
            agent_subchain_parse(params, "subchainInfo", &s->subchain, &error) < 0 ||
            agent_sd_check(a, s->subchain.base.sd, &error) < 0) {
                g_free(s);
                FAIL(call, error);
        }
        if (op == SPM_FINALIZE_MERGE && !s->subchain.has_generation) {
                /* The only proof that the merge ran: the generation SDM.merge left on base. */
                g_free(s);
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS,
                                  "subchainInfo.base_generation is required: the generation SDM.merge left on the base "
                                  "(the one it was given + 1)");
                return;
        }
        /* The job takes the image's host-local locks through ref. */
        s->ref = s->subchain.base;
        what = g_strdup_printf("%s/%s top %s base %s", s->ref.sd, s->ref.img, s->subchain.top.vol,
                               s->subchain.base.vol);
        spm_job_schedule(a, call, params, s, what);
}

static void pool_prepare_merge(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        pool_merge_step(userdata, call, params, SPM_PREPARE_MERGE);
}

static void pool_finalize_merge(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        pool_merge_step(userdata, call, params, SPM_FINALIZE_MERGE);
}

static json_t *volume_measure_blocking(struct agent *a, void *data, GError **error)
{
        return agent_volume_measure(a, data, error);
}

static void volume_measure(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        g_autoptr(GError) error = NULL;
        struct agent_measure *m = g_new0(struct agent_measure, 1);

        if (agent_measure_parse(params, m, &error) < 0) {
                g_free(m);
                FAIL(call, error);
        }
        run_blocking(userdata, call, volume_measure_blocking, m, g_free);
}

static json_t *volume_info_blocking(struct agent *a, void *data, GError **error)
{
        struct query_args *q = data;

        return agent_volume_info(a, &q->ref, error);
}

static void volume_get_info(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        g_autoptr(GError) error = NULL;
        const char *sd = NULL, *img = NULL, *vol = NULL;
        struct query_args *q;

        if (fy_rpc_param_uuid(params, "storagedomainID", true, &sd, &error) < 0 ||
            fy_rpc_param_uuid(params, "imageID", true, &img, &error) < 0 ||
            fy_rpc_param_uuid(params, "volumeID", true, &vol, &error) < 0)
                FAIL(call, error);
        q = g_new0(struct query_args, 1);
        agent_volref_init(&q->ref, sd, img, vol);
        run_blocking(a, call, volume_info_blocking, q, query_args_free);
}

/* ---- SDM ---- */


/* SDM verbs: validated at once, then a job; the call answers true. */
typedef int (*sdm_verb_fn)(struct agent *a, json_t *params, GError **error);

static void sdm_call(struct fy_rpc_call *call, json_t *params, void *userdata, sdm_verb_fn fn)
{
        g_autoptr(GError) error = NULL;

        if (fn(userdata, params, &error) < 0)
                FAIL(call, error);
        fy_rpc_call_return(call, json_true());
}

static void volume_checksum(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sdm_call(call, params, userdata, agent_volume_checksum);
}

static void sdm_copy_data(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sdm_call(call, params, userdata, agent_sdm_copy_data);
}

static void sdm_update_volume(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sdm_call(call, params, userdata, agent_sdm_update_volume);
}

static void sdm_merge(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sdm_call(call, params, userdata, agent_sdm_merge);
}

static void sdm_sparsify_volume(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sdm_call(call, params, userdata, agent_sdm_sparsify_volume);
}

static void sdm_amend_volume(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        sdm_call(call, params, userdata, agent_sdm_amend_volume);
}

const struct fy_rpc_method agent_api_methods[] = {
        { "Host.ping2", host_ping2 },
        { "Host.getCapabilities", host_get_capabilities },
        { "Host.getStats", host_get_stats },
        { "Host.getJobs", host_get_jobs },
        { "Job.abort", job_abort },
        { "Job.delete", job_delete },
        { "StorageDomain.create", sd_create },
        { "StorageDomain.getInfo", sd_get_info },
        { "StorageDomain.getStats", sd_get_stats },
        { "StorageDomain.getVolumes", sd_get_volumes },
        { "StoragePool.connect", pool_connect },
        { "StoragePool.disconnect", pool_disconnect },
        { "StoragePool.spmStart", spm_start },
        { "StoragePool.spmStop", spm_stop },
        { "StoragePool.getSpmStatus", spm_status },
        { "StoragePool.prepareMerge", pool_prepare_merge },
        { "StoragePool.finalizeMerge", pool_finalize_merge },
        { "Volume.create", volume_create },
        { "Volume.delete", volume_delete },
        { "Volume.getInfo", volume_get_info },
        { "Volume.measure", volume_measure },
        { "Image.delete", image_delete },
        { "SDM.copy_data", sdm_copy_data },
        { "SDM.update_volume", sdm_update_volume },
        { "SDM.merge", sdm_merge },
        { "SDM.sparsify_volume", sdm_sparsify_volume },
        { "SDM.amend_volume", sdm_amend_volume },
        { "Volume.checksum", volume_checksum },
        { "Host.add_image_ticket", agent_transfer_add_ticket },
        { "Host.get_image_ticket", agent_transfer_get_ticket },
        { "Host.remove_image_ticket", agent_transfer_remove_ticket },
        { "Host.finalize_image_ticket", agent_transfer_finalize_ticket },
        { NULL, NULL },
};
