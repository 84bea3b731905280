/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Persistent commands in the store. */
#include <errno.h>

#include "internal.h"

int engine_store_copy_loads(struct engine_store *st, json_t **ret_rows, GError **error)
{
        /* One query for all hosts: one per host made a pick cost hosts x active copies (bench/scale). */
        json_t *rows = store_query(st, error,
                "SELECT c.host AS host, COUNT(*) AS n, "
                "       COALESCE(SUM(COALESCE(json_extract(c.params, '$.bytes'), 0) * "
                "                    (1.0 - MIN(COALESCE(s.progress, 0), 100) / 100.0)), 0) AS b "
                "FROM commands c LEFT JOIN steps s ON s.id = c.step_id "
                "WHERE c.type IN ('copy_data', 'merge', 'sparsify_volume') AND c.state = 'active' AND c.phase = 'sent' "
                "GROUP BY c.host", "");

        if (!rows)
                return -EIO;
        *ret_rows = rows;
        return 0;
}

json_t *engine_store_command_counts(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT type, phase, COUNT(*) AS n FROM commands WHERE state = 'active' "
                                      "GROUP BY type, phase ORDER BY type, phase", "");
}

json_t *engine_store_jobs_running(struct engine_store *st, GError **error)
{
        /* Image transfers start jobs without a command: "other". */
        return store_query(st, error, "SELECT j.id AS id, COALESCE(c.type, 'other') AS kind, "
                                      "EXISTS (SELECT 1 FROM steps s WHERE s.job_id = j.id AND s.status = 'started' "
                                      "AND s.detail = 'stalled') AS stalled FROM jobs j "
                                      "LEFT JOIN commands c ON c.id = j.command_id WHERE j.status = 'started' "
                                      "ORDER BY kind", "");
}

char *engine_store_job_correlation_id(struct engine_store *st, const char *job)
{
        g_autoptr(json_t) row = job ? store_query_one(st, NULL, "SELECT correlation_id FROM jobs WHERE id = ?", "s", job)
                                    : NULL;

        return row ? g_strdup(json_string_value(json_object_get(row, "correlation_id"))) : NULL;
}

gint64 engine_store_steps_stalled(struct engine_store *st)
{
        g_autoptr(json_t) row = store_query_one(st, NULL, "SELECT COUNT(*) AS n FROM steps WHERE status = 'started' "
                                                          "AND detail = 'stalled'", "");

        return row ? json_integer_value(json_object_get(row, "n")) : 0;
}

json_t *engine_store_command_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM commands WHERE id = ?", "s", id);
}

char *engine_store_command_user(struct engine_store *st, const char *id)
{
        g_autoptr(json_t) row = store_query_one(st, NULL, "SELECT user_name FROM commands WHERE id = ?", "s", id);
        const char *user = row ? json_string_value(json_object_get(row, "user_name")) : NULL;

        return user ? g_strdup(user) : NULL;
}

int engine_store_copies_waiting_before(struct engine_store *st, gint64 created, gint64 *ret_n, GError **error)
{
        g_autoptr(json_t) row = store_query_one(st, error,
                "SELECT COUNT(*) AS n FROM commands WHERE type = 'copy_data' AND state = 'active' "
                "AND phase <> 'sent' AND created < ?", "i", created);

        if (!row)
                return -EIO;
        *ret_n = json_integer_value(json_object_get(row, "n"));
        return 0;
}

