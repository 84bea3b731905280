/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * An image transfer (oVirt's /imagetransfers): a client uploads or
 * downloads the bytes of a single-volume disk straight from a host's
 * transfer endpoint, with a ticket the engine adds on a host the scheduler
 * picks. The transfer is a row in image_transfers; its phase is the state:
 *
 *   POST ─▶ initializing ── ticket added ──▶ transferring ── POST finalize ──▶ finalizing_success
 *           │ (recorded before            │ (ticket polled      │ upload: a finalize_upload leaf
 *           │  Host.add_image_ticket)     │  every POLL_S)      │   (flows/job.c) verifies and marks the
 *           │ refused ─▶ finished_failure │                     │   volume LEGAL at generation+1:
 *           │ no answer, engine restart   │ POST cancel, idle   │   done ─▶ finished_success
 *           ▼                             ▼ timeout, ticket     │   failed ─▶ finalizing_failure
 *        finalizing_failure ◀─────────────  gone, host silent   │ download: ticket removed ─▶ finished_success
 *           │
 *           └─ ticket removed (or its host silent past the timeout) ─▶ finished_failure | cancelled (user)
 *
 * Every decision is written before the call that acts on it, so after an
 * engine restart the tick resumes each transfer from its row. The upload's
 * finalize is a leaf on the one runtime for "a job on a host" (flows/job.c):
 * its host, agent job and the generation are recorded before the call; it is
 * followed through job events and Host.getJobs; when the host is lost or
 * forgets the job, the volume decides (LEGAL at recorded+1: done), the job
 * is fenced (recorded+3) after host_lost_timeout, and the lost time is kept
 * in the command's data, so it survives a restart (flows/recover.c). The
 * leaf is the only command of the transfer's job; this flow reads its end.
 *
 * Per phase (the table at the end): what a tick does, and whether a client
 * may cancel. The end of every path is transfer_end: disk, volume, job and
 * row in one transaction.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "error.h"
#include "events.h"
#include "flows/flow.h"
#include "flows/transfer.h"
#include "generation.h"
#include "hosts.h"
#include "inventory.h"
#include "log.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define fail engine_fail

#define AGENT_ERR_TICKET 482            /* the agent's ticket errors (transfer.h) */
#define POLL_S 2                        /* s between ticket polls of one transfer */
#define HOST_GRACE_S 30                 /* beyond the timeout, for an unreachable host's ticket to expire there */
#define ADD_TIMEOUT_MS 60000            /* add_image_ticket may wait for locks and the lease */

/* Pacing only (nothing is decided from these): a restart merely asks sooner. */
static GHashTable *busy;                /* transfer ids with a ticket call in flight */
static GHashTable *next_poll;           /* transfer id → monotonic µs of its next ticket call */

static json_t *transfer_row(struct engine *e, const char *id)
{
        return engine_store_transfer_get(e->db, id, NULL);
}

static bool is_upload(json_t *row)
{
        return strcmp(js(row, "direction"), "upload") == 0;
}

static int set_phase(struct engine *e, const char *id, const char *phase, const char *message, GError **error)
{
        return engine_store_transfer_set_phase(e->db, id, phase, message, engine_now(), error);
}

static void tables_init(void)
{
        if (busy)
                return;
        busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        next_poll = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

/* ---- the end ---- */

/* Ends a transfer: the disk, its volume, the job and the row, in one transaction. */
static void transfer_end(struct engine *e, json_t *row, const char *phase, const char *error)
{
        bool upload = is_upload(row);
        bool ok = strcmp(phase, "finished_success") == 0;
        bool cancelled = strcmp(phase, "cancelled") == 0;
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
            engine_store_job_end(e->db, js(row, "job_id"), engine_flow_job_status(ok, cancelled), engine_now(),
                                 &store_error) < 0) {
                engine_store_rollback(e->db);
                goto failed;
        }
        if (engine_store_commit(e->db, &store_error) < 0)
                goto failed;
        g_hash_table_remove(next_poll, js(row, "id"));
        engine_event(e, ok ? "normal" : "warning", NULL, "image %s of disk %s %s%s%s", js(row, "direction"),
                     js(row, "disk_id"), ok ? "finished" : cancelled ? "cancelled" : "failed",
                     error ? ": " : "", error ? error : "");
        if (upload && ok)
                engine_disk_size_refresh(e, js(row, "disk_id"));
        return;
failed:
        engine_not_recorded(&store_error, "its end", js(row, "id"));     /* not ended: the tick ends it again */
}

/* Starts the removal of the ticket; the tick finishes the transfer once the host confirms. */
static void transfer_fail(struct engine *e, json_t *row, const char *cancel, const char *error)
{
        g_autoptr(GError) store_error = NULL;

        if (engine_store_transfer_fail(e->db, js(row, "id"), cancel, error, engine_now(), &store_error) < 0)
                engine_not_recorded(&store_error, "its failure", js(row, "id"));
        g_hash_table_remove(next_poll, js(row, "id"));
        engine_kick(e);
}

/* ---- ticket calls tied to a transfer ---- */

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
        if (row && !engine_transfer_is_final(js(row, "phase")))
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

/* ---- initializing: the ticket is being added ---- */

struct started {
        engine_transfer_started_fn done;
        void *userdata;
};

static void on_ticket_added(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        g_autofree struct started *s = extra;
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) now = NULL;
        g_autofree char *why = NULL;

        if (error) {
                int status = error->code == FY_ERR_LEASE_ACQUIRE || error->code == FY_ERR_VOLUME_IN_USE ||
                             error->code == FY_ERR_GENERATION_MISMATCH ? 409 : 502;

                why = g_strdup_printf("host %s could not add the transfer ticket: %s", js(row, "host"), error->message);
                if (engine_is_transport_error(error)) {
                        /* Unknown whether it arrived: the tick removes it before the disk is released. */
                        transfer_fail(e, row, NULL, why);
                        s->done(e, 504, NULL, why, s->userdata);
                        return;
                }
                /* Refused: nothing was left on the host (the agent releases what it took). */
                if (engine_store_begin(e->db, &store_error) < 0 ||
                    engine_store_disk_unlock(e->db, js(row, "disk_id"), js(row, "job_id"), js(row, "prior_status"),
                                             &store_error) < 0 ||
                    (is_upload(row) && strcmp(js(row, "prior_status"), "ok") == 0 &&
                     engine_store_volume_set_legal(e->db, js(row, "vol_id"), js(row, "sd_id"), -1, &store_error) < 0) ||
                    engine_store_job_end(e->db, js(row, "job_id"), "failed", engine_now(), &store_error) < 0 ||
                    set_phase(e, js(row, "id"), "finished_failure", why, &store_error) < 0) {
                        engine_store_rollback(e->db);
                        /* Still "initializing" on record: the tick fails it (and removes any ticket). */
                        engine_not_recorded(&store_error, "its refusal", js(row, "id"));
                } else if (engine_store_commit(e->db, &store_error) < 0) {
                        engine_not_recorded(&store_error, "its refusal", js(row, "id"));
                }
                engine_event(e, "warning", NULL, "%s", why);
                s->done(e, status, NULL, why, s->userdata);
                return;
        }
        if (engine_store_transfer_started(e->db, js(row, "id"), ji(result, "generation"), engine_now(), &store_error) < 0) {
                /* Not recorded as started: the tick takes it for an interrupted start and fails it. */
                engine_not_recorded(&store_error, "its start", js(row, "id"));
                s->done(e, 500, NULL, "the transfer could not be recorded as started; it is being ended", s->userdata);
                return;
        }
        now = transfer_row(e, js(row, "id"));
        engine_event(e, "normal", NULL, "image %s of disk %s started on host %s", js(row, "direction"),
                     js(row, "disk_id"), js(row, "host"));
        s->done(e, 201, now ? now : row, NULL, s->userdata);
}

bool engine_transfer_start(struct engine *e, const struct engine_store_transfer *t, bool sparse, const char *file,
                           const char *description, engine_transfer_started_fn done, void *userdata, GError **error)
{
        bool upload = strcmp(t->direction, "upload") == 0;
        g_autoptr(json_t) row = NULL;
        struct started *s;

        tables_init();
        /* Recorded before the host is asked: a restart finds the ticket to remove. */
        if (engine_store_begin(e->db, error) < 0)
                return false;
        if (engine_store_job_insert(e->db, t->job, description, fy_log_correlation_id(), engine_now(), error) < 0 ||
            engine_store_disk_lock(e->db, t->disk, t->job, t->prior_status, error) < 0 ||
            (upload && engine_store_volume_set_illegal(e->db, t->vol, t->sd, error) < 0) ||
            engine_store_transfer_insert(e->db, t, engine_now(), error) < 0) {
                engine_store_rollback(e->db);
                if (error && !*error)
                        fail(error, 409, "disk %s changed meanwhile; try again", t->disk);
                return false;
        }
        if (engine_store_commit(e->db, error) < 0)
                return false;
        row = transfer_row(e, t->id);
        s = g_new0(struct started, 1);
        s->done = done;
        s->userdata = userdata;
        transfer_call(e, row, t->host, "Host.add_image_ticket",
                      json_pack("{s:{s:s, s:I, s:[s], s:I, s:s, s:b, s:s}}", "ticket", "uuid", t->ticket,
                                "timeout", (json_int_t) t->timeout, "ops", upload ? "write" : "read",
                                "size", upload ? (json_int_t) t->size : (json_int_t) 0, "url", file,
                                "sparse", sparse, "transfer_id", t->id),
                      ADD_TIMEOUT_MS, on_ticket_added, s);
        return true;
}

static void initializing_advance(struct engine *e, json_t *row)
{
        /* No call in flight: the engine restarted while the ticket was being added. */
        transfer_fail(e, row, "system", "the engine restarted while the transfer was starting");
}

/* ---- transferring: the ticket is polled ---- */

static void on_ticket_status(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        gint64 idle, transferred, size = ji(row, "size");
        g_autoptr(GError) store_error = NULL;
        g_autofree char *why = NULL;

        if (error) {
                if (!engine_is_transport_error(error) && error->code == AGENT_ERR_TICKET) {
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
                engine_not_recorded(&store_error, "its progress", js(row, "id"));
        if (size > 0 && engine_store_job_set_progress(e->db, js(row, "job_id"),
                                                      MIN(100.0, 100.0 * (double) transferred / (double) size),
                                                      &store_error) < 0)
                engine_not_recorded(&store_error, "its progress", js(row, "id"));
        if (idle >= ji(row, "timeout")) {
                why = g_strdup_printf("no data for %" G_GINT64_FORMAT " s (inactivity timeout %" G_GINT64_FORMAT " s)",
                                      idle, ji(row, "timeout"));
                transfer_fail(e, row, "system", why);
        }
}

static void transferring_advance(struct engine *e, json_t *row)
{
        if (due(js(row, "id"), POLL_S))
                transfer_call(e, row, js(row, "host"), "Host.get_image_ticket",
                              json_pack("{s:s}", "uuid", js(row, "ticket")), e->config.host_timeout,
                              on_ticket_status, NULL);
}

/* ---- finalizing: an upload's finalize leaf, or the ticket's removal ---- */

/*
 * The finalize leaf of an upload (the only command of its job), created in
 * the caller's transaction with the phase. agent_job: a finalize an older
 * engine sent itself (image_transfers.agent_job_id), adopted as already
 * sent, so the runtime follows that job instead of sending another.
 */
static int finalize_leaf_create(struct engine *e, json_t *row, const char *agent_job, GError **error)
{
        g_autoptr(json_t) p = json_pack("{s:s, s:{s:s, s:s, s:s}}", "transfer", js(row, "id"), "dst",
                                        "sd", js(row, "sd_id"), "img", js(row, "disk_id"), "vol", js(row, "vol_id"));
        g_autofree char *id = engine_cmd_create(e, ENGINE_KIND_FINALIZE_UPLOAD, NULL, js(row, "job_id"), NULL, p);
        g_autoptr(json_t) data = json_object();

        if (!agent_job)
                return 0;
        return engine_store_cmd_mark_sent(e->db, id, js(row, "host"), agent_job, ji(row, "generation"), data,
                                          engine_now(), error);
}

static void upload_finalizing_advance(struct engine *e, json_t *row)
{
        g_autoptr(GError) store_error = NULL;
        g_autoptr(json_t) cmd = engine_store_cmd_of_job(e->db, js(row, "job_id"), &store_error);

        if (store_error) {
                engine_not_recorded(&store_error, "reading its finalize", js(row, "id"));
                return;
        }
        if (!cmd) {
                /* Finalizing on record without its leaf: an older engine followed the finalize itself. */
                if (engine_store_begin(e->db, &store_error) < 0)
                        goto failed;
                if (finalize_leaf_create(e, row, js(row, "agent_job_id"), &store_error) < 0) {
                        engine_store_rollback(e->db);
                        goto failed;
                }
                if (engine_store_commit(e->db, &store_error) < 0)
                        goto failed;
                return;
        }
        if (strcmp(js(cmd, "state"), "succeeded") == 0)
                transfer_end(e, row, "finished_success", NULL);
        else if (strcmp(js(cmd, "state"), "failed") == 0)
                /* The ticket is removed first (gone already after a failed verification: removal is then a no-op). */
                transfer_fail(e, row, NULL, js(cmd, "error") ? js(cmd, "error") : "the finalize failed");
        return;
failed:
        engine_not_recorded(&store_error, "its finalize", js(row, "id"));
}

static void on_ticket_removed(struct engine *e, json_t *row, json_t *result, const GError *error, void *extra)
{
        bool lost;

        if (error && !engine_is_transport_error(error))
                return;        /* "being added" or "being finalized": later */
        lost = error && engine_now() - ji(row, "last_activity") > ji(row, "timeout") + HOST_GRACE_S;
        if (error && !lost)
                return;        /* the host may answer again; its ticket expires there by itself anyway */
        if (strcmp(js(row, "phase"), "finalizing_success") == 0)
                transfer_end(e, row, "finished_success", NULL);
        else
                transfer_end(e, row, js(row, "cancel") && strcmp(js(row, "cancel"), "user") == 0 ? "cancelled"
                                                                                             : "finished_failure", NULL);
}

static void ticket_remove_advance(struct engine *e, json_t *row)
{
        if (due(js(row, "id"), 1))
                transfer_call(e, row, js(row, "host"), "Host.remove_image_ticket",
                              json_pack("{s:s}", "uuid", js(row, "ticket")), e->config.host_timeout,
                              on_ticket_removed, NULL);
}

static void finalizing_success_advance(struct engine *e, json_t *row)
{
        if (is_upload(row))
                upload_finalizing_advance(e, row);
        else
                ticket_remove_advance(e, row);
}

/* ---- the phases ---- */

static const struct transfer_phase {
        const char *name;
        void (*advance)(struct engine *e, json_t *row);   /* each tick without a call in flight; NULL: final */
        bool cancellable;                                  /* POST cancel is accepted */
} phases[] = {
        { "initializing", initializing_advance, true },
        { "transferring", transferring_advance, true },
        { "finalizing_success", finalizing_success_advance, false },
        { "finalizing_failure", ticket_remove_advance, false },
        { "finished_success", NULL, false },
        { "finished_failure", NULL, false },
        { "cancelled", NULL, false },
};

static const struct transfer_phase *phase_of(json_t *row)
{
        for (size_t i = 0; i < G_N_ELEMENTS(phases); i++)
                if (g_strcmp0(phases[i].name, js(row, "phase")) == 0)
                        return &phases[i];
        return NULL;
}

bool engine_transfer_is_final(const char *phase)
{
        for (size_t i = 0; i < G_N_ELEMENTS(phases); i++)
                if (g_strcmp0(phases[i].name, phase) == 0)
                        return !phases[i].advance;
        return false;
}

void engine_transfers_tick(struct engine *e)
{
        g_autoptr(json_t) rows = NULL;
        size_t i;
        json_t *row;

        tables_init();
        rows = engine_store_transfer_open(e->db, NULL);
        json_array_foreach(rows, i, row) {
                const struct transfer_phase *ph = phase_of(row);

                if (!ph) {
                        /* Written by a newer engine, or damaged: never guessed at. */
                        g_warning("image transfer %s: unknown phase %s; left alone", js(row, "id"), js(row, "phase"));
                        continue;
                }
                if (ph->advance && !g_hash_table_contains(busy, js(row, "id")))
                        ph->advance(e, row);
        }
}

/* ---- what a client asks ---- */

json_t *engine_transfer_finalize(struct engine *e, const char *id, GError **error)
{
        g_autoptr(json_t) row = fy_uuid_is_valid(id) ? transfer_row(e, id) : NULL;

        tables_init();
        if (!row)
                return fail(error, 404, "no image transfer %.64s", id);
        if (strcmp(js(row, "phase"), "transferring") != 0)
                return fail(error, 409, "image transfer %s is %s; only a transferring one can be finalized", id,
                            js(row, "phase"));
        /* The phase and (upload) its leaf in one transaction: a restart finds both or neither. */
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        if (engine_store_transfer_finalizing(e->db, id, NULL, engine_now(), error) < 0 ||
            (is_upload(row) && finalize_leaf_create(e, row, NULL, error) < 0)) {
                engine_store_rollback(e->db);
                return (error && *error) ? NULL : fail(error, 500, "the finalize of %s could not be recorded", id);
        }
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_kick(e);
        return transfer_row(e, id);
}

json_t *engine_transfer_cancel(struct engine *e, const char *id, GError **error)
{
        g_autoptr(json_t) row = fy_uuid_is_valid(id) ? transfer_row(e, id) : NULL;
        const struct transfer_phase *ph;

        tables_init();
        if (!row)
                return fail(error, 404, "no image transfer %.64s", id);
        ph = phase_of(row);
        if (!ph || !ph->cancellable)
                return fail(error, 409, "image transfer %s is %s; it can no longer be cancelled", id, js(row, "phase"));
        transfer_fail(e, row, "user", "cancelled by the user");
        return transfer_row(e, id);
}
