/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Image transfers in the store. */
#include "internal.h"

int engine_store_transfer_insert(struct engine_store *st, const struct engine_store_transfer *t, gint64 now,
                                 GError **error)
{
        return store_exec(st, error,
                          "INSERT INTO image_transfers (id, disk_id, sd_id, vol_id, direction, phase, host, ticket, "
                          "transfer_url, job_id, size, timeout, last_activity, prior_status, created, updated) "
                          "VALUES (?, ?, ?, ?, ?, 'initializing', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          "sssssssssiiisii", t->id, t->disk, t->sd, t->vol, t->direction, t->host, t->ticket, t->url,
                          t->job, t->size, t->timeout, now, t->prior_status, now, now);
}

json_t *engine_store_transfer_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM image_transfers WHERE id = ?", "s", id);
}

json_t *engine_store_transfer_list(struct engine_store *st, gint64 limit, GError **error)
{
        return store_query(st, error, "SELECT * FROM image_transfers ORDER BY created DESC, rowid DESC LIMIT ?", "i", limit);
}

json_t *engine_store_transfer_open(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM image_transfers WHERE phase NOT IN "
                                      "('finished_success', 'finished_failure', 'cancelled') ORDER BY created", "");
}

int engine_store_transfer_set_phase(struct engine_store *st, const char *id, const char *phase, const char *message,
                                    gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE image_transfers SET phase = ?, error = COALESCE(?, error), updated = ? "
                                     "WHERE id = ?", "ssis", phase, message, now, id);
}

int engine_store_transfer_fail(struct engine_store *st, const char *id, const char *cancel, const char *message,
                               gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE image_transfers SET phase = 'finalizing_failure', cancel = COALESCE(?, cancel), "
                                     "error = COALESCE(?, error), updated = ? WHERE id = ?",
                          "ssis", cancel, message, now, id);
}

int engine_store_transfer_started(struct engine_store *st, const char *id, gint64 generation, gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE image_transfers SET phase = 'transferring', generation = ?, "
                                     "last_activity = ?, updated = ? WHERE id = ? AND phase = 'initializing'",
                          "iiis", generation, now, now, id);
}

int engine_store_transfer_finalizing(struct engine_store *st, const char *id, const char *agent_job, gint64 now,
                                     GError **error)
{
        return store_exec(st, error, "UPDATE image_transfers SET phase = 'finalizing_success', agent_job_id = ?, "
                                     "updated = ? WHERE id = ?", "sis", agent_job, now, id);
}

int engine_store_transfer_activity(struct engine_store *st, const char *id, gint64 transferred, gint64 last_activity,
                                   gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE image_transfers SET transferred = ?, last_activity = ?, updated = ? "
                                     "WHERE id = ? AND phase = 'transferring'", "iiis", transferred, last_activity, now, id);
}
