/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Image transfers (oVirt's /imagetransfers): a client uploads or downloads
 * the bytes of a single-volume disk straight from a host's transfer
 * endpoint, with a ticket the engine adds on a host the scheduler picks.
 *
 * A transfer is a row in image_transfers; its phase is the state machine:
 *
 *   initializing → transferring → finalizing_success → finished_success
 *                              ↘ finalizing_failure → finished_failure | cancelled
 *
 * Every decision is written before the call that acts on it, so after an
 * engine restart the tick resumes each transfer: it polls the ticket while
 * data flows, watches the host's finalize job (upload), and removes the
 * ticket of a cancelled or failed transfer. An upload's outcome is learned
 * like a copy's: the finalize job marks the volume LEGAL with generation+1;
 * when the host forgot the job, Volume.getInfo through any host tells.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "clock.h"
#include "commands.h"
#include "error.h"
#include "events.h"
#include "generation.h"
#include "hosts.h"
#include "http.h"
#include "inventory.h"
#include "scheduler.h"
#include "transfers.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji

#define AGENT_ERR_TICKET 482            /* the agent's ticket errors (transfer.h) */
#define TIMEOUT_DEFAULT 60              /* s without requests before the engine cancels a transfer */
#define TIMEOUT_MIN 10
#define TIMEOUT_MAX (24 * 3600)
#define POLL_S 2                        /* s between ticket polls of one transfer */
#define HOST_GRACE_S 30                 /* beyond the timeout, for an unreachable host's ticket to expire there */
#define ADD_TIMEOUT_MS 60000            /* add_image_ticket may wait for locks and the lease */
#define QCOW2_SLACK(cap) ((cap) + (G_GINT64_CONSTANT(1) << 30))
#define MAX_DISK_SIZE (G_GINT64_CONSTANT(64) << 40)

#define FENCE_RETRY_S 10                /* s between fence attempts of a lost finalize */

static GHashTable *busy;                /* transfer ids with a call in flight */
static GHashTable *next_poll;           /* transfer id → monotonic µs of its next poll */
static GHashTable *lost_since;          /* transfer id → engine_now() its lost finalize was first seen holding the lease */

#define fail engine_fail

static bool is_final(const char *phase)
{
        return strcmp(phase, "finished_success") == 0 || strcmp(phase, "finished_failure") == 0 ||
               strcmp(phase, "cancelled") == 0;
}

static bool is_transport_error(const GError *error)
{
        return error && error->domain != FY_ERROR;
}

static json_t *transfer_row(struct engine *e, const char *id)
{
        return engine_store_transfer_get(e->db, id, NULL);
}

/*
 * The ticket in transfer_url is all a client needs to read or write the
 * disk, so only the answer that creates the transfer carries it (with_url);
 * listings and later GETs leave it out. Once users exist, their creator may
 * see it again (DESIGN §11).
 */
static json_t *transfer_json(struct engine *e, json_t *row, bool with_url)
{
        g_autoptr(json_t) host = js(row, "host") ?
                engine_store_host_get(e->db, js(row, "host"), NULL) : NULL;
        json_t *o = json_pack("{s:s, s:s, s:s, s:{s:s}, s:I, s:I, s:I, s:I, s:I}",
                              "id", js(row, "id"), "phase", js(row, "phase"), "direction", js(row, "direction"),
                              "disk", "id", js(row, "disk_id"), "size", ji(row, "size"),
                              "transferred", ji(row, "transferred"), "inactivity_timeout", ji(row, "timeout"),
                              "created", ji(row, "created"), "updated", ji(row, "updated"));

        json_object_set_new(o, "host", host ? json_pack("{s:s, s:s}", "id", js(host, "id"), "name", js(host, "name"))
                                            : json_null());
        if (with_url)
                json_object_set_new(o, "transfer_url", js(row, "transfer_url") && !is_final(js(row, "phase")) ?
                                                       json_string(js(row, "transfer_url")) : json_null());
        if (!is_final(js(row, "phase")))
                json_object_set_new(o, "expires", json_integer(ji(row, "last_activity") + ji(row, "timeout")));
        if (js(row, "job_id"))
                json_object_set_new(o, "job", json_pack("{s:s}", "id", js(row, "job_id")));
        if (js(row, "error"))
                json_object_set_new(o, "error", json_string(js(row, "error")));
        return o;
}

/* A write the store refused: logged; the transfer goes on from what is recorded (the tick retries). */
static void not_recorded(GError **error, const char *what, const char *id)
{
        g_warning("image transfer %s: %s is not recorded: %s", id, what, *error ? (*error)->message : "store error");
        g_clear_error(error);
}

static int set_phase(struct engine *e, const char *id, const char *phase, const char *message, GError **error)
{
        return engine_store_transfer_set_phase(e->db, id, phase, message, engine_now(), error);
}

/* Ends a transfer: the disk, its volume, the job and the row, in one transaction. */
static void transfer_end(struct engine *e, json_t *row, const char *phase, const char *error)
{
        bool upload = strcmp(js(row, "direction"), "upload") == 0;
        bool ok = strcmp(phase, "finished_success") == 0;
        const char *disk_status = ok ? "ok" : upload ? "illegal" : js(row, "prior_status");
        g_autoptr(GError) store_error = NULL;

        if (engine_store_begin(e->db, &store_error) < 0)
                goto failed;
        /* Only while this transfer's job holds the disk: never unlock another operation's disk. */
        if (set_phase(e, js(row, "id"), phase, error, &store_error) < 0 ||
            engine_store_disk_unlock(e->db, js(row, "disk_id"), js(row, "job_id"), disk_status, &store_error) < 0 ||
            (upload && ok && engine_store_volume_set_legal(e->db, js(row, "vol_id"), js(row, "sd_id"),
                                                           engine_generation_done(ji(row, "generation")), &store_error) < 0) ||
            (upload && !ok && engine_store_volume_set_illegal(e->db, js(row, "vol_id"), js(row, "sd_id"), &store_error) < 0) ||
            engine_store_job_end(e->db, js(row, "job_id"), ok ? "finished" : "failed", engine_now(), &store_error) < 0) {
                engine_store_rollback(e->db);
                goto failed;
        }
        if (engine_store_commit(e->db, &store_error) < 0)
                goto failed;
        g_hash_table_remove(next_poll, js(row, "id"));
        g_hash_table_remove(lost_since, js(row, "id"));
        {
                g_autofree char *fence_key = g_strconcat("fence:", js(row, "id"), NULL);

                g_hash_table_remove(next_poll, fence_key);
        }
        engine_event(e, ok ? "normal" : "warning", NULL, "image %s of disk %s %s%s%s", js(row, "direction"),
                     js(row, "disk_id"), ok ? "finished" : strcmp(phase, "cancelled") == 0 ? "cancelled" : "failed",
                     error ? ": " : "", error ? error : "");
        return;
failed:
        not_recorded(&store_error, "its end", js(row, "id"));     /* not ended: the tick ends it again */
}

/* Starts the removal of the ticket; the tick finishes the transfer once the host confirms. */
static void transfer_fail(struct engine *e, json_t *row, const char *cancel, const char *error)
{
        g_autoptr(GError) store_error = NULL;

        if (engine_store_transfer_fail(e->db, js(row, "id"), cancel, error, engine_now(), &store_error) < 0)
                not_recorded(&store_error, "its failure", js(row, "id"));
        g_hash_table_remove(next_poll, js(row, "id"));
        engine_kick(e);
}

/* ---- calls tied to a transfer ---- */

typedef void (*transfer_reply_fn)(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra);

struct call_ctx {
        struct engine *e;
        char *id;
        transfer_reply_fn done;
        void *extra;
};

static void on_reply(json_t *result, const GError *error, void *userdata)
{
        struct call_ctx *c = userdata;
        g_autoptr(json_t) row = transfer_row(c->e, c->id);

        g_hash_table_remove(busy, c->id);
        if (row && !is_final(js(row, "phase")))
                c->done(c->e, row, result, error, c->extra);
        g_free(c->id);
        g_free(c);
}

static void transfer_call(struct engine *e, json_t *row, const char *host, const char *method, json_t *params,
                          unsigned timeout_ms, transfer_reply_fn done, void *extra)
{
        struct call_ctx *c = g_new0(struct call_ctx, 1);

        c->e = e;
        c->id = g_strdup(js(row, "id"));
        c->done = done;
        c->extra = extra;
        g_hash_table_add(busy, g_strdup(c->id));
        engine_host_call(e, host, method, params, timeout_ms, on_reply, c);
}

/* ---- POST /api/imagetransfers ---- */

struct pending {
        struct engine *e;
        SoupServerMessage *msg;
};

static void reply_pending(struct pending *p, int status, json_t *body, const char *fault)
{
        if (body)
                engine_rest_reply_json(p->msg, status, body);
        else
                engine_rest_reply_fault(p->msg, status, fault);
        soup_server_message_unpause(p->msg);
        g_object_unref(p->msg);
        g_free(p);
}

static void on_ticket_added(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        struct pending *p = extra;
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) now = NULL;
        g_autoptr(json_t) out = NULL;
        g_autofree char *why = NULL;

        if (error) {
                int status = error->code == FY_ERR_LEASE_ACQUIRE || error->code == FY_ERR_VOLUME_IN_USE ||
                             error->code == FY_ERR_GENERATION_MISMATCH ? 409 : 502;

                why = g_strdup_printf("host %s could not add the transfer ticket: %s", js(row, "host"), error->message);
                if (is_transport_error(error)) {
                        /* Unknown whether it arrived: the tick removes it before the disk is released. */
                        transfer_fail(e, row, NULL, why);
                        reply_pending(p, 504, NULL, why);
                        return;
                }
                /* Refused: nothing was left on the host (the agent releases what it took). */
                if (engine_store_begin(e->db, &store_error) < 0 ||
                    engine_store_disk_unlock(e->db, js(row, "disk_id"), js(row, "job_id"), js(row, "prior_status"),
                                             &store_error) < 0 ||
                    (strcmp(js(row, "direction"), "upload") == 0 && strcmp(js(row, "prior_status"), "ok") == 0 &&
                     engine_store_volume_set_legal(e->db, js(row, "vol_id"), js(row, "sd_id"), -1, &store_error) < 0) ||
                    engine_store_job_end(e->db, js(row, "job_id"), "failed", engine_now(), &store_error) < 0 ||
                    set_phase(e, js(row, "id"), "finished_failure", why, &store_error) < 0) {
                        engine_store_rollback(e->db);
                        /* Still "initializing" on record: the tick fails it (and removes any ticket). */
                        not_recorded(&store_error, "its refusal", js(row, "id"));
                } else if (engine_store_commit(e->db, &store_error) < 0) {
                        not_recorded(&store_error, "its refusal", js(row, "id"));
                }
                engine_event(e, "warning", NULL, "%s", why);
                reply_pending(p, status, NULL, why);
                return;
        }
        if (engine_store_transfer_started(e->db, js(row, "id"), ji(result, "generation"), engine_now(), &store_error) < 0) {
                /* Not recorded as started: the tick takes it for an interrupted start and fails it. */
                not_recorded(&store_error, "its start", js(row, "id"));
                reply_pending(p, 500, NULL, "the transfer could not be recorded as started; it is being ended");
                return;
        }
        now = transfer_row(e, js(row, "id"));
        engine_event(e, "normal", NULL, "image %s of disk %s started on host %s", js(row, "direction"),
                     js(row, "disk_id"), js(row, "host"));
        out = transfer_json(e, now ? now : row, true);
        reply_pending(p, 201, out, NULL);
}

/* The host's transfer endpoint from its last stats; NULL if it has none. */
static char *host_transfer_base(struct engine *e, const char *host_id, char **ret_root)
{
        struct engine_host *h = g_hash_table_lookup(e->hosts, host_id);
        g_autoptr(json_t) row = engine_store_host_get(e->db, host_id, NULL);
        json_int_t port;
        const char *scheme, *root;

        if (!h || !h->stats || !row)
                return NULL;
        port = json_integer_value(json_object_get(h->stats, "transfer_port"));
        scheme = js(h->stats, "transfer_scheme");
        root = js(h->stats, "storage_root");
        if (port <= 0 || port > 65535 || !scheme || !root || *root != '/')
                return NULL;
        *ret_root = g_strdup(root);
        return strchr(js(row, "address"), ':') ? g_strdup_printf("%s://[%s]:%d", scheme, js(row, "address"), (int) port)
                                              : g_strdup_printf("%s://%s:%d", scheme, js(row, "address"), (int) port);
}

static json_t *transfer_start(struct engine *e, json_t *body, SoupServerMessage *msg, GError **error)
{
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) vols = NULL;
        g_autoptr(json_t) row = NULL;
        g_autofree char *id = fy_uuid_new();
        g_autofree char *ticket = fy_uuid_new_secret();   /* the bearer secret of the transfer */
        g_autofree char *job = fy_uuid_new();
        g_autofree char *host = NULL;
        g_autofree char *base = NULL;
        g_autofree char *root = NULL;
        g_autofree char *url = NULL;
        g_autofree char *file = NULL;
        g_autofree char *desc = NULL;
        const char *disk_id = js(json_object_get(body, "disk"), "id");
        const char *direction = js(body, "direction");
        json_t *size_v = json_object_get(body, "size");
        json_t *vsize_v = json_object_get(body, "virtual_size");
        json_t *timeout_v = json_object_get(body, "inactivity_timeout");
        gint64 timeout = TIMEOUT_DEFAULT, capacity, size = 0;
        bool upload;
        json_t *vol;
        struct pending *p;

        if (!direction || (strcmp(direction, "upload") != 0 && strcmp(direction, "download") != 0))
                return fail(error, 400, "direction must be \"upload\" or \"download\"");
        upload = strcmp(direction, "upload") == 0;
        if (!disk_id)
                return fail(error, 400, "missing disk: {\"disk\": {\"id\": \"<uuid>\"}}");
        if (!fy_uuid_is_valid(disk_id))
                return fail(error, 404, "no disk %.64s (ids are UUIDs)", disk_id);
        if (timeout_v && (!json_is_integer(timeout_v) || json_integer_value(timeout_v) < TIMEOUT_MIN ||
                          json_integer_value(timeout_v) > TIMEOUT_MAX))
                return fail(error, 400, "inactivity_timeout must be %d-%d seconds", TIMEOUT_MIN, TIMEOUT_MAX);
        if (timeout_v)
                timeout = json_integer_value(timeout_v);
        if ((size_v && (!json_is_integer(size_v) || json_integer_value(size_v) <= 0 ||
                        json_integer_value(size_v) > 2 * MAX_DISK_SIZE)) ||
            (vsize_v && (!json_is_integer(vsize_v) || json_integer_value(vsize_v) <= 0)))
                return fail(error, 400, "size and virtual_size must be positive byte counts");
        if (size_v && !upload)
                return fail(error, 400, "size is the number of bytes an upload writes; a download gets the whole volume");

        disk = engine_store_disk_get(e->db, disk_id, error);
        if (!disk)
                return (error && *error) ? NULL : fail(error, 404, "no disk %s", disk_id);
        if (strcmp(js(disk, "status"), "locked") == 0)
                return fail(error, 409, "disk %s is locked by a running operation; wait until it ends", js(disk, "name"));
        if (!upload && strcmp(js(disk, "status"), "ok") != 0)
                return fail(error, 409, "disk %s is %s: its data is not complete, there is nothing to download",
                            js(disk, "name"), js(disk, "status"));
        vols = engine_store_volume_list(e->db, disk_id, js(disk, "sd_id"), error);
        if (!vols)
                return NULL;
        if (json_array_size(vols) != 1)
                return fail(error, 409, "disk %s has %zu volumes; image transfers handle single-volume disks only "
                            "(copy the disk to collapse its chain first)", js(disk, "name"), json_array_size(vols));
        vol = json_array_get(vols, 0);
        capacity = ji(vol, "capacity");
        if (upload) {
                bool cow = strcmp(js(vol, "format"), "cow") == 0;

                size = size_v ? json_integer_value(size_v) : cow ? QCOW2_SLACK(capacity) : capacity;
                if (vsize_v && json_integer_value(vsize_v) > capacity)
                        return fail(error, 409, "the image's virtual size (%" JSON_INTEGER_FORMAT " bytes) is larger than "
                                    "disk %s (%" G_GINT64_FORMAT " bytes)", json_integer_value(vsize_v),
                                    js(disk, "name"), capacity);
                if (size > (cow ? QCOW2_SLACK(capacity) : capacity))
                        return fail(error, 409, "an upload of %" G_GINT64_FORMAT " bytes does not fit disk %s (%s, %"
                                    G_GINT64_FORMAT " bytes)", size, js(disk, "name"), js(vol, "format"), capacity);
        }

        host = engine_pick_copy_host(e, NULL);
        if (!host)
                return fail(error, 503, "no host can serve a transfer now (none is up, connected and below its job limit)");
        base = host_transfer_base(e, host, &root);
        if (!base)
                return fail(error, 503, "host %s does not report an image transfer endpoint yet; try again", host);
        url = g_strdup_printf("%s/images/%s", base, ticket);
        file = g_strdup_printf("file://%s/%s/images/%s/%s", root, js(disk, "sd_id"), disk_id, js(vol, "id"));
        desc = g_strdup_printf("%s disk %s", upload ? "Uploading" : "Downloading", js(disk, "name"));

        /* Recorded before the host is asked: a restart finds the ticket to remove. */
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        {
                const struct engine_store_transfer t = {
                        .id = id, .disk = disk_id, .sd = js(disk, "sd_id"), .vol = js(vol, "id"), .direction = direction,
                        .host = host, .ticket = ticket, .url = url, .job = job, .prior_status = js(disk, "status"),
                        .size = size, .timeout = timeout,
                };

                if (engine_store_job_insert(e->db, job, desc, fy_log_correlation_id(), engine_now(), error) < 0 ||
                    engine_store_disk_lock(e->db, disk_id, job, js(disk, "status"), error) < 0 ||
                    (upload && engine_store_volume_set_illegal(e->db, js(vol, "id"), js(disk, "sd_id"), error) < 0) ||
                    engine_store_transfer_insert(e->db, &t, engine_now(), error) < 0) {
                        engine_store_rollback(e->db);
                        if (error && !*error)
                                fail(error, 409, "disk %s changed meanwhile; try again", js(disk, "name"));
                        return NULL;
                }
        }
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        row = transfer_row(e, id);
        p = g_new0(struct pending, 1);
        p->e = e;
        p->msg = g_object_ref(msg);
        soup_server_message_pause(msg);
        transfer_call(e, row, host, "Host.add_image_ticket",
                      json_pack("{s:{s:s, s:I, s:[s], s:I, s:s, s:b, s:s}}", "ticket", "uuid", ticket,
                                "timeout", (json_int_t) timeout, "ops", upload ? "write" : "read",
                                "size", upload ? (json_int_t) size : (json_int_t) 0, "url", file,
                                "sparse", ji(disk, "sparse") != 0, "transfer_id", id),
                      ADD_TIMEOUT_MS, on_ticket_added, p);
        return json_true();
}

/* ---- finalize / cancel ---- */

static void on_finalize_sent(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        if (!error || is_transport_error(error))
                return;        /* watched by the tick: the job, or the volume if the host forgot it */
        transfer_fail(e, row, NULL, error->message);
}

static json_t *transfer_finalize(struct engine *e, const char *id, GError **error)
{
        g_autoptr(json_t) row = fy_uuid_is_valid(id) ? transfer_row(e, id) : NULL;
        g_autoptr(json_t) out = NULL;
        g_autofree char *job = fy_uuid_new();

        if (!row)
                return fail(error, 404, "no image transfer %.64s", id);
        if (strcmp(js(row, "phase"), "transferring") != 0)
                return fail(error, 409, "image transfer %s is %s; only a transferring one can be finalized", id,
                            js(row, "phase"));
        if (strcmp(js(row, "direction"), "upload") == 0) {
                if (engine_store_transfer_finalizing(e->db, id, job, engine_now(), error) < 0)
                        return NULL;
                json_decref(row);
                row = transfer_row(e, id);
                transfer_call(e, row, js(row, "host"), "Host.finalize_image_ticket",
                              json_pack("{s:s, s:s}", "uuid", js(row, "ticket"), "job_id", job),
                              e->config.host_timeout, on_finalize_sent, NULL);
        } else {
                if (set_phase(e, id, "finalizing_success", NULL, error) < 0)
                        return NULL;
                engine_kick(e);
        }
        json_decref(row);
        row = transfer_row(e, id);
        return transfer_json(e, row, false);
}

static json_t *transfer_cancel(struct engine *e, const char *id, GError **error)
{
        g_autoptr(json_t) row = fy_uuid_is_valid(id) ? transfer_row(e, id) : NULL;

        if (!row)
                return fail(error, 404, "no image transfer %.64s", id);
        if (strcmp(js(row, "phase"), "transferring") != 0 && strcmp(js(row, "phase"), "initializing") != 0)
                return fail(error, 409, "image transfer %s is %s; it can no longer be cancelled", id, js(row, "phase"));
        transfer_fail(e, row, "user", "cancelled by the user");
        json_decref(row);
        row = transfer_row(e, id);
        return transfer_json(e, row, false);
}

/* ---- the tick ---- */

static void on_ticket_status(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        gint64 idle, transferred, size = ji(row, "size");
        g_autoptr(GError) store_error = NULL;
        g_autofree char *why = NULL;

        if (error) {
                if (!is_transport_error(error) && error->code == AGENT_ERR_TICKET) {
                        why = g_strdup_printf("the ticket is gone from host %s (it expired, or the agent restarted)",
                                              js(row, "host"));
                        transfer_fail(e, row, "system", why);
                } else if (engine_now() - ji(row, "last_activity") > ji(row, "timeout") + HOST_GRACE_S) {
                        why = g_strdup_printf("host %s has not answered for longer than the transfer's timeout: %s",
                                              js(row, "host"), error->message);
                        transfer_fail(e, row, "system", why);
                }
                return;
        }
        idle = ji(result, "idle_time");
        transferred = ji(result, "transferred");
        if (engine_store_transfer_activity(e->db, js(row, "id"), transferred, engine_now() - idle, engine_now(),
                                           &store_error) < 0)
                not_recorded(&store_error, "its progress", js(row, "id"));
        if (size > 0 && engine_store_job_set_progress(e->db, js(row, "job_id"),
                                                      MIN(100.0, 100.0 * (double) transferred / (double) size),
                                                      &store_error) < 0)
                not_recorded(&store_error, "its progress", js(row, "id"));
        if (idle >= ji(row, "timeout")) {
                why = g_strdup_printf("no data for %" G_GINT64_FORMAT " s (inactivity timeout %" G_GINT64_FORMAT " s)",
                                      idle, ji(row, "timeout"));
                transfer_fail(e, row, "system", why);
        }
}

static void on_ticket_removed(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        const char *phase = js(row, "phase");
        bool lost;

        if (error && !is_transport_error(error))
                return;        /* "being added" or "being finalized": later */
        lost = error && engine_now() - ji(row, "last_activity") > ji(row, "timeout") + HOST_GRACE_S;
        if (error && !lost)
                return;        /* the host may answer again; its ticket expires there by itself anyway */
        if (strcmp(phase, "finalizing_success") == 0)
                transfer_end(e, row, "finished_success", NULL);
        else
                transfer_end(e, row, js(row, "cancel") && strcmp(js(row, "cancel"), "user") == 0 ? "cancelled"
                                                                                             : "finished_failure", NULL);
}

static void upload_done(struct engine *e, json_t *row)
{
        transfer_end(e, row, "finished_success", NULL);
        engine_disk_size_refresh(e, js(row, "disk_id"));
}

static bool due(const char *id, unsigned seconds)
{
        gint64 *next = g_hash_table_lookup(next_poll, id);
        gint64 now = g_get_monotonic_time();

        if (next && *next > now)
                return false;
        next = g_new(gint64, 1);
        *next = now + (gint64) seconds * G_USEC_PER_SEC;
        g_hash_table_replace(next_poll, g_strdup(id), next);
        return true;
}

/* Another up host than the transfer's, or NULL. */
static const char *other_host(struct engine *e, json_t *row, GPtrArray *hosts)
{
        for (guint i = 0; i < hosts->len; i++)
                if (strcmp(hosts->pdata[i], js(row, "host")) != 0)
                        return hosts->pdata[i];
        return NULL;
}

static void on_fence_sent(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        if (error)
                g_message("transfer %s: fencing its finalize was refused: %s", js(row, "id"), error->message);
}

/*
 * The finalize job is lost and the lease still has an owner: the host may
 * still be verifying, or it died and its owner record stays until its
 * sanlock lease expires. After host_lost_timeout the job is fenced like a
 * lost copy (ARCHITECTURE.md "Recovery"): SDM.update_volume through
 * another host moves the generation from the recorded one to recorded+3,
 * which needs the volume lease, so it succeeds only once the old holder
 * can no longer write; the next probe then reads recorded+3. After
 * fence_timeout more the transfer fails anyway: the volume stays ILLEGAL
 * on storage, and its lease refuses any new writer while it is held.
 */
static void lost_finalize(struct engine *e, json_t *row)
{
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);
        g_autofree char *job = fy_uuid_new();
        g_autofree char *fence_key = g_strconcat("fence:", js(row, "id"), NULL);
        g_autofree char *why = NULL;
        gint64 *since = g_hash_table_lookup(lost_since, js(row, "id"));
        gint64 rec = ji(row, "generation"), lost;
        const char *via;

        if (!since) {
                since = g_new(gint64, 1);
                *since = engine_now();
                g_hash_table_replace(lost_since, g_strdup(js(row, "id")), since);
        }
        lost = engine_now() - *since;
        if (lost < (gint64) e->config.host_lost_timeout)
                return;
        if (lost > (gint64) e->config.host_lost_timeout + (gint64) e->config.fence_timeout) {
                why = g_strdup_printf("host %s lost the finalize job and it could not be fenced within %u s (the "
                                      "volume lease is still held); the disk stays illegal", js(row, "host"),
                                      e->config.fence_timeout);
                transfer_end(e, row, "finished_failure", why);
                return;
        }
        via = other_host(e, row, hosts);
        if (!via || !dc || !due(fence_key, FENCE_RETRY_S))
                return;
        engine_event(e, "warning", NULL, "image upload %s: fencing the finalize of host %s: volume %s generation %"
                     G_GINT64_FORMAT " → %" G_GINT64_FORMAT " through host %s", js(row, "id"), js(row, "host"),
                     js(row, "vol_id"), rec, engine_generation_fenced(rec), via);
        transfer_call(e, row, via, "SDM.update_volume",
                      json_pack("{s:s, s:{s:s, s:s, s:s, s:I}, s:{s:I}}", "job_id", job,
                                "vol_info", "sd_id", js(row, "sd_id"), "img_id", js(row, "disk_id"),
                                "vol_id", js(row, "vol_id"), "generation", (json_int_t) rec,
                                "vol_attr", "generation", (json_int_t) engine_generation_fenced(rec)),
                      e->config.host_timeout, on_fence_sent, NULL);
}

/* The host no longer knows the finalize job (or cannot be asked): storage tells. */
static void on_volume_probe(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        gint64 rec = ji(row, "generation");
        json_t *owners;

        if (error)
                return;        /* nobody could read it now: next round */
        if (ji(result, "generation") == engine_generation_done(rec) && g_strcmp0(js(result, "legality"), "LEGAL") == 0) {
                upload_done(e, row);
                return;
        }
        if (ji(result, "generation") == engine_generation_fenced(rec)) {
                transfer_end(e, row, "finished_failure", "the host lost the finalize job, which was fenced; "
                             "the disk is illegal: upload again or remove it");
                return;
        }
        owners = json_object_get(json_object_get(result, "lease"), "owners");
        if (owners && json_array_size(owners) > 0) {
                lost_finalize(e, row);  /* still running, or its host died holding the lease */
                return;
        }
        transfer_end(e, row, "finished_failure", "the host lost the finalize job and the volume was not completed");
}

static void volume_probe(struct engine *e, json_t *row)
{
        g_autoptr(json_t) dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);
        const char *via = other_host(e, row, hosts);

        if (!via)
                via = js(row, "host");
        if (!dc)
                return;
        transfer_call(e, row, via, "Volume.getInfo",
                      json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID",
                                js(row, "sd_id"), "imageID", js(row, "disk_id"), "volumeID", js(row, "vol_id")),
                      e->config.host_timeout, on_volume_probe, NULL);
}

static void on_finalize_job(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        json_t *job = result ? json_object_get(result, js(row, "agent_job_id")) : NULL;
        const char *status = js(job, "status");
        g_autofree char *why = NULL;

        if (!job) {
                volume_probe(e, row);
                return;
        }
        if (g_strcmp0(status, "done") == 0) {
                upload_done(e, row);
        } else if (g_strcmp0(status, "failed") == 0 || g_strcmp0(status, "aborted") == 0) {
                why = g_strdup_printf("verification on host %s failed: %s", js(row, "host"),
                                      js(json_object_get(job, "error"), "message") ?
                                      js(json_object_get(job, "error"), "message") : status);
                transfer_end(e, row, "finished_failure", why);
        }
}

static void transfer_advance(struct engine *e, json_t *row)
{
        const char *phase = js(row, "phase");
        bool upload = strcmp(js(row, "direction"), "upload") == 0;

        if (strcmp(phase, "initializing") == 0) {
                /* No call in flight: the engine restarted while the ticket was being added. */
                transfer_fail(e, row, "system", "the engine restarted while the transfer was starting");
        } else if (strcmp(phase, "transferring") == 0) {
                if (due(js(row, "id"), POLL_S))
                        transfer_call(e, row, js(row, "host"), "Host.get_image_ticket",
                                      json_pack("{s:s}", "uuid", js(row, "ticket")), e->config.host_timeout,
                                      on_ticket_status, NULL);
        } else if (strcmp(phase, "finalizing_success") == 0 && upload) {
                if (due(js(row, "id"), 1))
                        transfer_call(e, row, js(row, "host"), "Host.getJobs",
                                      json_pack("{s:[s]}", "job_ids", js(row, "agent_job_id")), e->config.host_timeout,
                                      on_finalize_job, NULL);
        } else if (strcmp(phase, "finalizing_success") == 0 || strcmp(phase, "finalizing_failure") == 0) {
                if (due(js(row, "id"), 1))
                        transfer_call(e, row, js(row, "host"), "Host.remove_image_ticket",
                                      json_pack("{s:s}", "uuid", js(row, "ticket")), e->config.host_timeout,
                                      on_ticket_removed, NULL);
        }
}

void engine_transfers_tick(struct engine *e)
{
        g_autoptr(json_t) rows = NULL;
        size_t i;
        json_t *row;

        if (!busy) {
                busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
                next_poll = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
                lost_since = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        }
        rows = engine_store_transfer_open(e->db, NULL);
        json_array_foreach(rows, i, row) {
                if (!g_hash_table_contains(busy, js(row, "id")))
                        transfer_advance(e, row);
        }
}

/* ---- REST ---- */

static void ensure_tables(struct engine *e)
{
        if (!busy)
                engine_transfers_tick(e);      /* creates the tables of calls in flight */
}

static json_t *transfer_fmt(struct engine *e, json_t *row)
{
        return transfer_json(e, row, false);
}

static void api_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) rows = engine_store_transfer_list(e->db, 1000, &error);

        engine_rest_reply_rows(e, msg, "imagetransfers", rows, error, transfer_fmt);
}

static void api_start(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);

        ensure_tables(e);
        if (body && !transfer_start(e, body, msg, &error))
                engine_rest_reply_error(msg, error);
}

static void api_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(json_t) row = fy_uuid_is_valid(args[0]) ? transfer_row(e, args[0]) : NULL;

        engine_rest_reply_row(e, msg, "image transfer", args[0], row, NULL, transfer_fmt);
}

static void api_finalize(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = NULL;

        ensure_tables(e);
        out = transfer_finalize(e, args[0], &error);
        engine_rest_reply_result(msg, 202, out, error);
}

static void api_cancel(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = NULL;

        ensure_tables(e);
        out = transfer_cancel(e, args[0], &error);
        engine_rest_reply_result(msg, 202, out, error);
}

static const struct engine_route routes[] = {
        { "GET", "/api/imagetransfers", api_list, ENGINE_ROLE_VIEWER },
        { "POST", "/api/imagetransfers", api_start, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/imagetransfers/{id}", api_get, ENGINE_ROLE_VIEWER },
        { "POST", "/api/imagetransfers/{id}/finalize", api_finalize, ENGINE_ROLE_OPERATOR },
        { "POST", "/api/imagetransfers/{id}/cancel", api_cancel, ENGINE_ROLE_OPERATOR },
};

const struct engine_route *engine_api_transfers_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
