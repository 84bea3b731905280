/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Image transfer tickets: Host.add_image_ticket (locks, lease, checks,
 * ILLEGAL), get_image_ticket, remove_image_ticket, their release and their
 * expiry. A ticket's resources are taken by the guard every job that
 * changes a volume in place uses (volguard.c): a read ticket shares the
 * image and takes no lease, a write ticket owns it and holds the volume's
 * lease with the generation it expects checked.
 *
 * No write after the lease: a write checks, under the ticket's mutex, that
 * the ticket is not released and counts itself; xfer_ticket_release waits
 * for that count to reach zero before it gives up the lease, and from then
 * on every write is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "transfer-internal.h"
#include "transferparse.h"

#define LOCK_WAIT_S 10                  /* Host.add_image_ticket waits this long for a busy image */

struct ticket *xfer_ticket_ref(struct ticket *t)
{
        g_atomic_int_inc(&t->refs);
        return t;
}

void xfer_ticket_unref(struct ticket *t)
{
        if (!t || !g_atomic_int_dec_and_test(&t->refs))
                return;
        if (t->fd >= 0)
                close(t->fd);
        agent_lockset_clear(&t->guard.locks);        /* left by an add that never got to release */
        if (t->waiters)
                g_ptr_array_unref(t->waiters);
        if (t->streams)
                g_ptr_array_unref(t->streams);
        g_mutex_clear(&t->lock);
        g_cond_clear(&t->cond);
        g_free(t->guard.lease_path);
        g_free(t->transfer_id);
        g_free(t->url);
        g_free(t->path);
        g_free(t->finalize_job);
        g_free(t);
}

/*
 * Gives up the lease and the locks; the volume stays as it is (ILLEGAL for
 * a write ticket that was not finalized). Writes are refused from the
 * moment it starts, and those already running are waited for: the lease
 * never goes while a write of this ticket may still land. Idempotent, any
 * thread, may block on storage and sanlock.
 */
void xfer_ticket_release(struct ticket *t)
{
        g_mutex_lock(&t->lock);
        if (t->released) {
                g_mutex_unlock(&t->lock);
                return;
        }
        t->released = true;
        while (t->writing > 0)
                g_cond_wait(&t->cond, &t->lock);
        agent_guard_release(t->agent, &t->guard, NULL);
        g_mutex_unlock(&t->lock);
}

/*
 * At exit: refuses writes from now on, and releases the lease only if no
 * write is running. One still running (storage that hangs) keeps the lease
 * until the process exits, when sanlock frees it: never while it may land.
 */
void xfer_ticket_release_at_exit(struct ticket *t)
{
        unsigned writing;

        g_mutex_lock(&t->lock);
        writing = t->writing;
        if (writing > 0)
                t->released = true;
        g_mutex_unlock(&t->lock);
        if (writing == 0)
                xfer_ticket_release(t);
        else
                g_warning("ticket %s: %u writes still running at exit; the lease goes when the process exits",
                          t->log_id, writing);
}

/* Worker: counts a write about to start, or refuses it once the ticket is released. */
bool xfer_ticket_write_begin(struct ticket *t)
{
        bool ok;

        g_mutex_lock(&t->lock);
        ok = !t->released;
        if (ok)
                t->writing++;
        g_mutex_unlock(&t->lock);
        return ok;
}

void xfer_ticket_write_end(struct ticket *t)
{
        g_mutex_lock(&t->lock);
        if (--t->writing == 0)
                g_cond_broadcast(&t->cond);
        g_mutex_unlock(&t->lock);
}

/* ---- JSON view of a ticket ---- */

static json_t *ticket_status(struct ticket *t)
{
        gint64 idle = t->inflight > 0 ? 0 : (now_us() - t->last_activity) / G_USEC_PER_SEC;
        gint64 expires = g_get_real_time() / G_USEC_PER_SEC + (gint64) t->timeout - idle;
        static const char *const states[] = { "adding", "ready", "closing", "finalizing" };
        json_t *ops = json_array();

        if (t->can_read)
                json_array_append_new(ops, json_string("read"));
        if (t->can_write)
                json_array_append_new(ops, json_string("write"));
        return json_pack("{s:s, s:s?, s:o, s:I, s:s, s:b, s:i, s:b, s:I, s:I, s:I, s:i, s:s, s:i}",
                         "uuid", t->uuid, "transfer_id", t->transfer_id, "ops", ops,
                         "size", (json_int_t) t->size, "url", t->url, "sparse", t->sparse,
                         "timeout", (int) t->timeout, "active", t->inflight > 0,
                         "transferred", (json_int_t) __atomic_load_n(&t->transferred, __ATOMIC_RELAXED),
                         "expires", (json_int_t) expires, "idle_time", (json_int_t) idle,
                         "connections", (int) t->inflight, "phase", states[t->state],
                         "generation", (int) t->generation);
}

struct release_task {
        struct agent_transfers *tr;
        struct ticket *t;
};

static void release_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
        struct release_task *rt = data;

        xfer_ticket_release(rt->t);
        g_task_return_boolean(task, TRUE);
}

static void release_task_free(gpointer data)
{
        struct release_task *rt = data;

        xfer_ticket_unref(rt->t);
        g_free(rt);
}

static void release_done(GObject *source, GAsyncResult *res, gpointer data)
{
        struct release_task *rt = g_task_get_task_data(G_TASK(res));
        struct ticket *t = rt->t;

        if (g_hash_table_lookup(rt->tr->tickets, t->uuid) == t)
                g_hash_table_remove(rt->tr->tickets, t->uuid);
        for (guint i = 0; i < t->waiters->len; i++)
                fy_rpc_call_return(t->waiters->pdata[i], json_true());
        g_ptr_array_set_size(t->waiters, 0);
        g_message("ticket %s removed (%s); %" G_GINT64_FORMAT " bytes transferred", t->log_id,
                  t->can_write ? "volume left ILLEGAL" : "read only",
                  __atomic_load_n(&t->transferred, __ATOMIC_RELAXED));
}

static void ticket_release_async(struct agent_transfers *tr, struct ticket *t)
{
        struct release_task *rt = g_new0(struct release_task, 1);
        g_autoptr(GTask) task = g_task_new(NULL, NULL, release_done, NULL);

        rt->tr = tr;
        rt->t = xfer_ticket_ref(t);
        g_task_set_task_data(task, rt, release_task_free);
        g_task_run_in_thread(task, release_thread);
}


void xfer_ticket_close(struct agent_transfers *tr, struct ticket *t, struct fy_rpc_call *call)
{
        if (call)
                g_ptr_array_add(t->waiters, call);
        if (t->state == TICKET_CLOSING)
                return;        /* already on its way: the waiter is answered with the others */
        g_assert(t->state == TICKET_READY);
        /* A download never holds the lease: its client may never read again. */
        xfer_kill_streams(t, "the ticket was removed");
        t->state = TICKET_CLOSING;
        if (t->inflight == 0)
                ticket_release_async(tr, t);
}

void xfer_ticket_io_end(struct agent_transfers *tr, struct ticket *t)
{
        g_assert(t->inflight > 0);
        t->inflight--;
        t->last_activity = now_us();
        if (t->inflight > 0)
                return;
        if (t->state == TICKET_CLOSING) {
                ticket_release_async(tr, t);
        } else if (t->state == TICKET_FINALIZING) {
                g_mutex_lock(&t->lock);
                t->drained = true;
                g_cond_broadcast(&t->cond);
                g_mutex_unlock(&t->lock);
        }
}

static bool ticket_expired(struct ticket *t)
{
        return t->state == TICKET_READY && t->inflight == 0 &&
               now_us() - t->last_activity > (gint64) t->timeout * G_USEC_PER_SEC;
}

/*
 * Once a second: downloads whose client stopped reading are cut, and a
 * ticket idle for its whole timeout is removed, as if the engine had
 * removed it.
 */
gboolean xfer_expiry_tick(gpointer data)
{
        struct agent_transfers *tr = data;
        g_autoptr(GPtrArray) expired = g_ptr_array_new();
        GHashTableIter it;
        gpointer value;

        g_hash_table_iter_init(&it, tr->tickets);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct ticket *t = value;

                if (t->state == TICKET_READY)
                        xfer_cut_stalled_streams(t);
                if (t->state == TICKET_READY && t->inflight > 0)
                        t->last_activity = now_us();       /* data flows: the ticket stays alive */
                else if (ticket_expired(t))
                        g_ptr_array_add(expired, t);
        }
        for (guint i = 0; i < expired->len; i++) {
                struct ticket *t = expired->pdata[i];

                g_message("ticket %s expired after %u s without requests; removing it", t->log_id, t->timeout);
                xfer_ticket_close(tr, t, NULL);
        }
        return G_SOURCE_CONTINUE;
}

struct ticket *xfer_ticket_lookup(struct agent_transfers *tr, const char *uuid)
{
        struct ticket *t = g_hash_table_lookup(tr->tickets, uuid);

        /* The tick may not have come yet: a ticket past its timeout serves nothing more. */
        if (t && ticket_expired(t)) {
                g_message("ticket %s expired after %u s without requests; removing it", t->log_id, t->timeout);
                xfer_ticket_close(tr, t, NULL);
        }
        return t && t->state == TICKET_READY ? t : NULL;
}

/* ---- the verbs ---- */

struct add_args {
        struct agent_transfers *tr;
        struct fy_rpc_call *call;
        struct ticket *t;
        GError *error;
};

static void add_args_free(gpointer data)
{
        struct add_args *aa = data;

        xfer_ticket_unref(aa->t);
        g_clear_error(&aa->error);
        g_free(aa);
}

/*
 * The volume a "file:///…" url names: its real path must be
 * <storage_root>/<sd>/images/<img>/<vol> with UUIDs, a regular file with
 * metadata. Symlinks are resolved first, so nothing outside the storage
 * root (or another volume under a volume's name) can be reached.
 */
static int resolve_url(struct agent *a, const char *url, struct agent_volref *ret_ref, char **ret_path,
                       GError **error)
{
        g_autofree char *path = NULL;
        g_autofree char *real = NULL;
        g_autofree char *root = NULL;
        struct agent_volref ref;
        struct stat st;
        int r;

        r = agent_ticket_url_path(url, &path, error);
        if (r < 0)
                return r;
        real = realpath(path, NULL);
        root = realpath(a->config.storage_root, NULL);
        if (!real || !root) {
                g_set_error(error, FY_ERROR, FY_ERR_VOLUME_DOES_NOT_EXIST, "no volume at %s: %s", path, g_strerror(errno));
                return -ENOENT;
        }
        if (agent_ticket_volume_of(real, root, &ref) < 0 || stat(real, &st) < 0 || !S_ISREG(st.st_mode)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "ticket.url %.256s is not a volume of this host's storage (%s/<sd>/images/<img>/<vol>)",
                            url, a->config.storage_root);
                return -EACCES;
        }
        *ret_ref = ref;
        *ret_path = agent_volume_path(a, &ref);
        return 0;
}

static gboolean cancel_later(gpointer data)
{
        g_cancellable_cancel(data);
        return G_SOURCE_REMOVE;
}

/*
 * Worker: the guard (locks; for a write also the lease, the metadata
 * re-read under it and the generation the ticket expects), metadata
 * checks, ILLEGAL (write), open.
 */
static int ticket_prepare(struct add_args *aa, GError **error)
{
        struct ticket *t = aa->t;
        struct agent *a = t->agent;
        g_autoptr(fy_volume_meta) meta = NULL;
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        enum fy_vol_legality prior;
        struct stat st;
        guint source;
        int r;

        r = resolve_url(a, t->url, &t->vol.ref, &t->path, error);
        if (r < 0)
                return r;
        r = agent_sd_check(a, t->vol.ref.sd, error);
        if (r < 0)
                return r;

        /* The same host-local locks as a copy: reading shares the image, writing owns it. */
        agent_lockset_add_image(&t->guard.locks, &t->vol.ref, t->can_write);
        t->guard.no_lease = !t->can_write;
        source = g_timeout_add_seconds_full(G_PRIORITY_DEFAULT, LOCK_WAIT_S, cancel_later, g_object_ref(cancel),
                                            g_object_unref);
        r = agent_guard_acquire(a, &t->guard, &t->vol, cancel, &meta, error);
        g_source_remove(source);
        if (r < 0 && !t->guard.locked) {
                g_clear_error(error);
                g_set_error(error, FY_ERROR, FY_ERR_VOLUME_IN_USE,
                            "image %s is busy with another job on this host; try again when it ends", t->vol.ref.img);
                return r;
        }
        if (r < 0)
                return r;
        if (t->can_write && (meta->voltype != FY_VOLTYPE_LEAF || strcmp(meta->parent, FY_ZERO_UUID) != 0)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "volume %s is part of a chain; uploads replace a whole single-volume image", t->vol.ref.vol);
                return -EINVAL;
        }

        t->fd = open(t->path, (t->can_write ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
        if (t->fd < 0 || fstat(t->fd, &st) < 0) {
                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot open volume %s: %s", t->path, g_strerror(-r));
                return r;
        }
        t->format = meta->format;
        t->capacity = meta->capacity;
        t->generation = meta->generation;
        t->punch = t->sparse && meta->type == FY_TYPE_SPARSE;

        if (!t->can_write) {
                if (t->size == 0)
                        t->size = (guint64) st.st_size;
                if (t->size > (guint64) st.st_size) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "ticket.size %" G_GUINT64_FORMAT " is larger than volume %s (%" G_GOFFSET_FORMAT " bytes)",
                                    t->size, t->vol.ref.vol, (goffset) st.st_size);
                        return -EINVAL;
                }
                return 0;
        }
        if (t->size == 0 ||
            (meta->format == FY_FORMAT_RAW && t->size > meta->capacity) ||
            (meta->format == FY_FORMAT_COW && t->size > AGENT_TICKET_QCOW2_SLACK(meta->capacity))) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "ticket.size %" G_GUINT64_FORMAT " does not fit volume %s (%s, capacity %" G_GUINT64_FORMAT
                            " bytes)", t->size, t->vol.ref.vol, fy_vol_format_to_string(meta->format), meta->capacity);
                return -EFBIG;
        }
        prior = meta->legality;
        if ((r = agent_volume_begin_write(a, &t->vol.ref, meta, error)) < 0)
                return r;
        /* A qcow2 upload is the whole file: start from nothing so no old byte survives past the new end. */
        if (meta->format == FY_FORMAT_COW && ftruncate(t->fd, 0) < 0) {
                g_autoptr(GError) restore = NULL;

                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot empty volume %s: %s", t->path, g_strerror(-r));
                /* Nothing was written: put the legality back while the lease is still ours, so storage
                 * agrees with the engine, which restores its own record when the ticket is refused. */
                meta->legality = prior;
                if (agent_volume_meta_write(a, &t->vol.ref, meta, &restore) < 0)
                        g_warning("ticket %s: volume %s stays ILLEGAL: %s", t->log_id, t->vol.ref.vol, restore->message);
                return r;
        }
        return 0;
}

static void add_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
        struct add_args *aa = data;

        if (ticket_prepare(aa, &aa->error) < 0) {
                if (!aa->error)
                        aa->error = g_error_new(FY_ERROR, FY_ERR_GENERAL, "ticket %s: internal error", aa->t->log_id);
                xfer_ticket_release(aa->t);
        }
        g_task_return_boolean(task, TRUE);
}

static void add_done(GObject *source, GAsyncResult *res, gpointer data)
{
        struct add_args *aa = g_task_get_task_data(G_TASK(res));
        struct ticket *t = aa->t;

        if (aa->error) {
                g_hash_table_remove(aa->tr->tickets, t->uuid);
                fy_rpc_call_gerror(aa->call, aa->error);
                return;
        }
        t->state = TICKET_READY;
        t->last_activity = now_us();
        g_message("ticket %s added: %s%s of volume %s/%s/%s, %" G_GUINT64_FORMAT " bytes, %u s timeout%s",
                  t->log_id, t->can_read ? "read" : "", t->can_write ? "write" : "", t->vol.ref.sd, t->vol.ref.img,
                  t->vol.ref.vol, t->size, t->timeout, t->can_write ? "; volume ILLEGAL until finalized" : "");
        fy_rpc_call_return(aa->call, ticket_status(t));
}

void agent_transfer_add_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        struct agent_transfers *tr = transfers_of(a);
        g_autoptr(GError) error = NULL;
        g_autoptr(ticket) t = NULL;
        struct agent_ticket_params p;
        json_t *tk = NULL;
        struct add_args *aa;
        g_autoptr(GTask) task = NULL;

        if (fy_rpc_param_object(params, "ticket", true, &tk, &error) < 0 ||
            agent_ticket_params_parse(tk, &p, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        t = g_new0(struct ticket, 1);
        t->refs = 1;
        t->agent = a;
        t->fd = -1;
        g_mutex_init(&t->lock);
        g_cond_init(&t->cond);
        t->waiters = g_ptr_array_new();
        t->streams = g_ptr_array_new();
        memcpy(t->uuid, p.uuid, sizeof(t->uuid));
        g_strlcpy(t->log_id, t->uuid, sizeof(t->log_id));
        t->can_read = p.can_read;
        t->can_write = p.can_write;
        t->url = g_strdup(p.url);
        t->transfer_id = g_strdup(p.transfer_id);
        t->size = p.size;
        t->timeout = p.timeout;
        t->sparse = p.sparse;
        /* What a reader finds is not checked: only a write replaces what the engine knows. */
        t->vol.has_generation = p.can_write && p.has_generation;
        t->vol.generation = p.generation;
        t->state = TICKET_ADDING;

        if (g_hash_table_contains(tr->tickets, t->uuid)) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s exists already", t->log_id);
                return;
        }
        if (g_hash_table_size(tr->tickets) >= a->config.transfer_max_tickets) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET,
                                  "this host serves %u tickets already (transfer_max_tickets); remove finished ones",
                                  g_hash_table_size(tr->tickets));
                return;
        }
        {
                /* A quick look for the same volume by its url; the worker checks the resolved path. */
                GHashTableIter it;
                gpointer value;

                g_hash_table_iter_init(&it, tr->tickets);
                while (g_hash_table_iter_next(&it, NULL, &value)) {
                        struct ticket *o = value;

                        if (strcmp(o->url, t->url) == 0 && (o->can_write || t->can_write)) {
                                fy_rpc_call_error(call, FY_ERR_VOLUME_IN_USE,
                                                  "ticket %s is already transferring this volume", o->uuid);
                                return;
                        }
                }
        }
        g_hash_table_insert(tr->tickets, g_strdup(t->uuid), xfer_ticket_ref(t));

        aa = g_new0(struct add_args, 1);
        aa->tr = tr;
        aa->call = call;
        aa->t = xfer_ticket_ref(t);
        task = g_task_new(NULL, NULL, add_done, NULL);
        g_task_set_task_data(task, aa, add_args_free);
        g_task_run_in_thread(task, add_thread);
}

struct ticket *xfer_ticket_param(struct agent_transfers *tr, struct fy_rpc_call *call, json_t *params)
{
        g_autoptr(GError) error = NULL;
        char uuid[FY_UUID_STR_LEN + 1];
        const char *id = NULL;

        if (fy_rpc_param_uuid(params, "uuid", true, &id, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return NULL;
        }
        for (size_t i = 0; i <= FY_UUID_STR_LEN; i++)
                uuid[i] = g_ascii_tolower(id[i]);
        return g_hash_table_lookup(tr->tickets, uuid);
}

void agent_transfer_get_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent_transfers *tr = transfers_of(userdata);
        g_autoptr(GError) error = NULL;
        const char *id = NULL;
        struct ticket *t;

        if (fy_rpc_param_uuid(params, "uuid", true, &id, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        t = xfer_ticket_param(tr, call, params);
        if (!t) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "no ticket %s on this host (never added, removed or expired)", id);
                return;
        }
        fy_rpc_call_return(call, ticket_status(t));
}

/* Removing a ticket this host does not have succeeds: the engine may repeat a removal after a restart. */
void agent_transfer_remove_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent_transfers *tr = transfers_of(userdata);
        struct ticket *t;

        if (!fy_uuid_is_valid(json_string_value(json_object_get(params, "uuid")))) {
                fy_rpc_call_error(call, FY_ERR_INVALID_PARAMS, "uuid: required, a ticket UUID");
                return;
        }
        t = xfer_ticket_param(tr, call, params);
        if (!t) {
                fy_rpc_call_return(call, json_true());
                return;
        }
        switch (t->state) {
        case TICKET_ADDING:
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s is still being added; try again", t->log_id);
                return;
        case TICKET_FINALIZING:
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s is being finalized by job %s; it goes away when the job ends",
                                  t->log_id, t->finalize_job);
                return;
        case TICKET_READY:
        case TICKET_CLOSING:
                g_message("removing ticket %s", t->log_id);
                xfer_ticket_close(tr, t, call);
                return;
        }
}

