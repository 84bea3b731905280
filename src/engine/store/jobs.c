/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Jobs and their steps in the store. */
#include <errno.h>

#include "internal.h"

int engine_store_job_insert(struct engine_store *st, const char *id, const char *description, const char *correlation_id,
                            gint64 start, GError **error)
{
        return store_exec(st, error, "INSERT INTO jobs (id, description, status, start_time, correlation_id) "
                                     "VALUES (?, ?, 'started', ?, ?)", "ssis", id, description, start, correlation_id);
}

json_t *engine_store_job_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM jobs WHERE id = ?", "s", id);
}

json_t *engine_store_job_list(struct engine_store *st, gint64 limit, GError **error)
{
        return store_query(st, error, "SELECT * FROM jobs ORDER BY start_time DESC, rowid DESC LIMIT ?", "i", limit);
}

int engine_store_job_set_command(struct engine_store *st, const char *job, const char *command, GError **error)
{
        return store_exec(st, error, "UPDATE jobs SET command_id = ? WHERE id = ?", "ss", command, job);
}

int engine_store_job_end(struct engine_store *st, const char *job, const char *status, gint64 end, GError **error)
{
        gboolean finished = g_strcmp0(status, "finished") == 0;

        return store_exec(st, error, "UPDATE jobs SET status = ?, end_time = ?, "
                                     "progress = CASE WHEN ? THEN 100 ELSE progress END WHERE id = ?", "sibs",
                          status, end, finished, job);
}

int engine_store_job_set_progress(struct engine_store *st, const char *job, double progress, GError **error)
{
        if (store_exec(st, error, "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'started'", "ds", progress, job) < 0)
                return -EIO;
        return store_exec(st, error, "UPDATE disks SET progress = ? WHERE job_id = ? AND status = 'locked'", "ds",
                          progress, job);
}

int engine_store_job_step_progress(struct engine_store *st, const char *job, double *ret, GError **error)
{
        /* Summed here in a fixed order: a database's SUM adds rows in the order it meets them, which on
         * PostgreSQL changes as updates move rows, and a float sum of the same values in another order may
         * be smaller (a disk's progress was seen to go from 70 to 69). Each step's progress only grows, so
         * a sum in one order only grows too. */
        g_autoptr(json_t) rows = store_query(st, error, "SELECT weight, progress FROM steps WHERE job_id = ? ORDER BY id",
                                             "s", job);
        double sum = 0;
        size_t i;
        json_t *row;

        *ret = 0;
        if (!rows)
                return -EIO;
        json_array_foreach(rows, i, row)
                sum += json_number_value(json_object_get(row, "weight")) * json_number_value(json_object_get(row, "progress"));
        *ret = MIN(sum / 100.0, 100.0);
        return 0;
}

int engine_store_step_insert(struct engine_store *st, const char *id, const char *job, const char *description,
                             const char *type, double weight, gint64 start, GError **error)
{
        return store_exec(st, error, "INSERT INTO steps (id, job_id, description, type, status, weight, start_time) "
                                     "VALUES (?, ?, ?, ?, 'pending', ?, ?)", "ssssdi", id, job, description, type, weight,
                          start);
}

json_t *engine_store_step_list(struct engine_store *st, const char *job, GError **error)
{
        return store_query(st, error, "SELECT * FROM steps WHERE job_id = ? ORDER BY start_time, rowid", "s", job);
}

int engine_store_step_update(struct engine_store *st, const char *id, const char *status, double progress,
                             const char *host, gint64 now, GError **error)
{
        return store_exec(st, error,
                          "UPDATE steps SET status = ?, progress = CASE WHEN progress > ? THEN progress ELSE ? END, detail = NULL, "
                          "execution_host = COALESCE(?, execution_host), "
                          "end_time = CASE WHEN ? IN ('finished', 'failed') THEN ? ELSE end_time END WHERE id = ?",
                          "sddssis", status, progress, progress, host, status, now, id);
}

int engine_store_step_set_detail(struct engine_store *st, const char *id, const char *detail, GError **error)
{
        return store_exec(st, error, "UPDATE steps SET detail = ? WHERE id = ?", "ss", detail, id);
}

int engine_store_step_set_checksum(struct engine_store *st, const char *id, const char *checksum, bool verified,
                                   GError **error)
{
        return store_exec(st, error, "UPDATE steps SET verified = ?, checksum = ? WHERE id = ?", "iss", (gint64) verified,
                          checksum, id);
}

int engine_store_step_wait(struct engine_store *st, const char *id, const char *why, bool only_pending, GError **error)
{
        if (only_pending)
                return store_exec(st, error, "UPDATE steps SET status = 'waiting', detail = ? WHERE id = ? AND status = 'pending'",
                                  "ss", why, id);
        return store_exec(st, error, "UPDATE steps SET status = 'waiting', detail = ? WHERE id = ? AND detail IS DISTINCT FROM ?",
                          "sss", why, id, why);
}
