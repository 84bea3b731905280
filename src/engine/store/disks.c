/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Disks and their volumes in the store. */
#include <errno.h>

#include "internal.h"

json_t *engine_store_volume_list(struct engine_store *st, const char *disk, const char *sd, GError **error)
{
        return store_query(st, error, "SELECT * FROM volumes WHERE disk_id = ? AND sd_id = ? ORDER BY position", "ss",
                           disk, sd);
}

int engine_store_image_in_use(struct engine_store *st, const char *sd, const char *img, const char *except_command,
                              bool *ret, GError **error)
{
        /* LOWER(): SQLite's LIKE ignores ASCII case, PostgreSQL's does not. */
        g_autofree char *lower = g_ascii_strdown(img, -1);
        g_autofree char *pattern = g_strdup_printf("%%%s%%", lower);
        g_autoptr(json_t) row = store_query_one(st, error,
                "SELECT (SELECT COUNT(*) FROM disks WHERE id = ?1 AND sd_id = ?2) + "
                "       (SELECT COUNT(*) FROM volumes WHERE disk_id = ?1 AND sd_id = ?2) + "
                "       (SELECT COUNT(*) FROM commands WHERE state = 'active' AND id IS DISTINCT FROM ?4 "
                "                                      AND (LOWER(params) LIKE ?3 OR LOWER(data) LIKE ?3)) AS n",
                "ssss", img, sd, pattern, except_command);

        *ret = true;
        if (!row)
                return -EIO;
        *ret = json_integer_value(json_object_get(row, "n")) > 0;
        return 0;
}

json_t *engine_store_disk_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM disks WHERE id = ?", "s", id);
}

json_t *engine_store_disk_list(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM disks ORDER BY created, name", "");
}

int engine_store_disk_insert(struct engine_store *st, const char *id, const char *name, const char *sd, const char *format,
                             bool sparse, gint64 size, const char *job, gint64 created, GError **error)
{
        return store_exec(st, error,
                          "INSERT INTO disks (id, name, sd_id, status, format, sparse, provisioned_size, progress, job_id, created) "
                          "VALUES (?, ?, ?, 'locked', ?, ?, ?, 0, ?, ?)", "ssssbisi", id, name, sd, format, sparse, size, job,
                          created);
}

int engine_store_disk_lock(struct engine_store *st, const char *id, const char *job, const char *expect_status,
                           GError **error)
{
        if (!expect_status)
                return store_exec(st, error, "UPDATE disks SET status = 'locked', progress = 0, job_id = ? WHERE id = ?",
                                  "ss", job, id);
        if (store_exec(st, error, "UPDATE disks SET status = 'locked', progress = 0, job_id = ? WHERE id = ? AND status = ?",
                       "sss", job, id, expect_status) < 0)
                return -EIO;
        return store_changes(st) == 1 ? 0 : -EBUSY;
}

int engine_store_disk_unlock(struct engine_store *st, const char *id, const char *job, const char *status, GError **error)
{
        if (!job)
                return store_exec(st, error, "UPDATE disks SET status = ?, progress = NULL, job_id = NULL WHERE id = ?",
                                  "ss", status, id);
        return store_exec(st, error, "UPDATE disks SET status = ?, progress = NULL, job_id = NULL WHERE id = ? AND job_id = ?",
                          "sss", status, id, job);
}

int engine_store_disks_unlock_job(struct engine_store *st, const char *job, const char *status, GError **error)
{
        return store_exec(st, error, "UPDATE disks SET status = ?, progress = NULL, job_id = NULL WHERE job_id = ?", "ss",
                          status, job);
}

int engine_store_disk_set_domain(struct engine_store *st, const char *id, const char *sd, GError **error)
{
        return store_exec(st, error, "UPDATE disks SET sd_id = ? WHERE id = ?", "ss", sd, id);
}

int engine_store_disk_set_format(struct engine_store *st, const char *id, const char *format, GError **error)
{
        return store_exec(st, error, "UPDATE disks SET format = ? WHERE id = ?", "ss", format, id);
}

int engine_store_disk_set_actual_size(struct engine_store *st, const char *id, gint64 size, GError **error)
{
        return store_exec(st, error, "UPDATE disks SET actual_size = ? WHERE id = ?", "is", size, id);
}

int engine_store_disk_delete(struct engine_store *st, const char *id, GError **error)
{
        if (store_exec(st, error, "DELETE FROM volumes WHERE disk_id = ?", "s", id) < 0 ||
            store_exec(st, error, "DELETE FROM disk_attachments WHERE disk_id = ?", "s", id) < 0)
                return -EIO;
        return store_exec(st, error, "DELETE FROM disks WHERE id = ?", "s", id);
}

int engine_store_volume_insert(struct engine_store *st, const char *id, const char *disk, const char *sd,
                               const char *parent, gint64 position, const char *format, bool sparse, gint64 capacity,
                               GError **error)
{
        return store_exec(st, error,
                          "INSERT INTO volumes (id, disk_id, sd_id, parent, position, format, sparse, capacity, legality) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ILLEGAL')", "ssssisbi", id, disk, sd, parent, position, format,
                          sparse, capacity);
}

int engine_store_volumes_delete(struct engine_store *st, const char *disk, const char *sd, GError **error)
{
        return store_exec(st, error, "DELETE FROM volumes WHERE disk_id = ? AND sd_id = ?", "ss", disk, sd);
}

int engine_store_volume_delete(struct engine_store *st, const char *id, const char *sd, GError **error)
{
        return store_exec(st, error, "DELETE FROM volumes WHERE id = ? AND sd_id = ?", "ss", id, sd);
}

char *engine_store_volume_legality(struct engine_store *st, const char *id, const char *sd, GError **error)
{
        g_autoptr(json_t) row = store_query_one(st, error, "SELECT legality FROM volumes WHERE id = ? AND sd_id = ?",
                                                "ss", id, sd);

        return row && json_string_value(json_object_get(row, "legality")) ?
               g_strdup(json_string_value(json_object_get(row, "legality"))) : NULL;
}

int engine_store_volume_set_legal(struct engine_store *st, const char *id, const char *sd, gint64 generation,
                                  GError **error)
{
        if (generation < 0)
                return store_exec(st, error, "UPDATE volumes SET legality = 'LEGAL' WHERE id = ? AND sd_id = ?", "ss", id, sd);
        return store_exec(st, error, "UPDATE volumes SET legality = 'LEGAL', generation = ? WHERE id = ? AND sd_id = ?",
                          "iss", generation, id, sd);
}

int engine_store_volume_set_illegal(struct engine_store *st, const char *id, const char *sd, GError **error)
{
        return store_exec(st, error, "UPDATE volumes SET legality = 'ILLEGAL' WHERE id = ? AND sd_id = ?", "ss", id, sd);
}

int engine_store_volume_generation(struct engine_store *st, const char *id, const char *sd, gint64 *ret, GError **error)
{
        g_autoptr(GError) local = NULL;
        g_autoptr(json_t) row = store_query_one(st, &local, "SELECT generation FROM volumes WHERE id = ? AND sd_id = ?",
                                                "ss", id, sd);

        if (local) {
                g_propagate_error(error, g_steal_pointer(&local));
                return -EIO;
        }
        if (!row || !json_is_integer(json_object_get(row, "generation")))
                return -ENOENT;
        *ret = json_integer_value(json_object_get(row, "generation"));
        return 0;
}

int engine_store_volume_set_generation(struct engine_store *st, const char *id, const char *sd, gint64 generation,
                                       GError **error)
{
        return store_exec(st, error, "UPDATE volumes SET generation = ? WHERE id = ? AND sd_id = ?", "iss",
                          generation, id, sd);
}
