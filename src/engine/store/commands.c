/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Persistent commands in the store. */
#include <errno.h>

#include "internal.h"

int engine_store_copy_load(struct engine_store *st, const char *host, gint64 *ret_copies, double *ret_bytes,
                           GError **error)
{
        /* params.bytes (the copy's estimated size) is read here, not in SQL: JSON functions differ per backend.
         * A host runs a handful of copies at a time, so the rows are few. */
        g_autoptr(json_t) rows = store_query(st, error,
                "SELECT c.params AS params, COALESCE(s.progress, 0) AS progress "
                "FROM commands c LEFT JOIN steps s ON s.id = c.step_id "
                "WHERE c.type IN ('copy_data', 'merge', 'sparsify_volume') AND c.state = 'active' AND c.phase = 'sent' AND c.host = ?", "s", host);
        double bytes = 0;
        size_t i;
        json_t *row;

        *ret_copies = 0;
        *ret_bytes = 0;
        if (!rows)
                return -EIO;
        json_array_foreach(rows, i, row) {
                g_autoptr(json_t) params = json_loads(json_string_value(json_object_get(row, "params")), 0, NULL);
                double progress = MIN(json_number_value(json_object_get(row, "progress")), 100);

                bytes += json_number_value(json_object_get(params, "bytes")) * (1.0 - progress / 100.0);
        }
        *ret_copies = (gint64) json_array_size(rows);
        *ret_bytes = bytes;
        return 0;
}

int engine_store_cmd_insert(struct engine_store *st, const char *id, const char *type, const char *parent,
                            const char *job, const char *step, json_t *params, gint64 now, GError **error)
{
        return store_exec(st, error,
                          "INSERT INTO commands (id, type, parent_id, job_id, step_id, state, params, created, updated, cancel) "
                          "VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, COALESCE((SELECT cancel FROM commands WHERE id = ?), 0))",
                          "sssssjiis", id, type, parent, job, step, params, now, now, parent);
}

json_t *engine_store_cmd_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM commands WHERE id = ?", "s", id);
}

json_t *engine_store_cmd_active(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM commands WHERE state = 'active' ORDER BY created, rowid", "");
}

json_t *engine_store_cmd_of_job(struct engine_store *st, const char *job, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM commands WHERE job_id = ? AND parent_id IS NULL", "s", job);
}

int engine_store_cmd_set_phase(struct engine_store *st, const char *id, const char *phase, json_t *data, gint64 now,
                               GError **error)
{
        return store_exec(st, error, "UPDATE commands SET phase = ?, data = ?, updated = ? WHERE id = ?", "sjis", phase, data,
                          now, id);
}

int engine_store_cmd_restart(struct engine_store *st, const char *id, json_t *data, gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE commands SET phase = '', host = NULL, agent_job_id = NULL, data = ?, "
                                     "updated = ? WHERE id = ?", "jis", data, now, id);
}

int engine_store_cmd_mark_sent(struct engine_store *st, const char *id, const char *host, const char *agent_job,
                               gint64 generation, json_t *data, gint64 now, GError **error)
{
        return store_exec(st, error,
                          "UPDATE commands SET phase = 'sent', host = ?, agent_job_id = ?, generation = ?, data = ?, "
                          "attempts = attempts + 1, updated = ? WHERE id = ?",
                          "ssijis", host, agent_job, generation, data, now, id);
}

int engine_store_cmd_finish(struct engine_store *st, const char *id, bool ok, const char *message, gint64 now,
                            GError **error)
{
        return store_exec(st, error, "UPDATE commands SET state = ?, error = ?, updated = ? WHERE id = ?", "ssis",
                          ok ? "succeeded" : "failed", message, now, id);
}

int engine_store_cmd_cancel_job(struct engine_store *st, const char *job, gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE commands SET cancel = 1, updated = ? WHERE job_id = ? AND state = 'active'",
                          "is", now, job);
}

int engine_store_cmd_removal_pending(struct engine_store *st, const char *sd, const char *img, bool *ret, GError **error)
{
        /* The image is matched here, not in SQL: JSON functions differ per backend. Removals pending are few. */
        g_autoptr(json_t) rows = store_query(st, error, "SELECT params FROM commands WHERE type = 'remove_image' "
                                                         "AND state = 'active'", "");
        size_t i;
        json_t *row;

        *ret = true;
        if (!rows)
                return -EIO;
        *ret = false;
        json_array_foreach(rows, i, row) {
                g_autoptr(json_t) params = json_loads(json_string_value(json_object_get(row, "params")), 0, NULL);

                if (g_strcmp0(json_string_value(json_object_get(params, "sd")), sd) == 0 &&
                    g_strcmp0(json_string_value(json_object_get(params, "img")), img) == 0)
                        *ret = true;
        }
        return 0;
}
