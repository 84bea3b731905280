/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What removing and restoring snapshots and sparsifying disks change in the
 * inventory (flows/snapshot_remove.c, flows/snapshot_restore.c,
 * flows/sparsify.c): volume rows of a chain, the snapshot rows that name
 * them, the locks of the flow's job. Called inside the flow's transaction.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

int engine_store_snapshot_set(struct engine_store *st, const char *id, const char *status, const char *job,
                              json_t *disks, GError **error)
{
        return store_exec(st, error, "UPDATE snapshots SET status = ?, job_id = ?, disks = COALESCE(?, disks) WHERE id = ?",
                          "ssjs", status, job, disks, id);
}

/* Every snapshot of the VM that names volume `from` of the disk names `to` instead. */
static int snapshots_repoint(struct engine_store *st, const char *vm, const char *disk, const char *from, const char *to,
                             GError **error)
{
        g_autoptr(json_t) snaps = engine_store_snapshot_list(st, vm, error);
        size_t i, j;
        json_t *s, *d;

        if (!snaps)
                return -EIO;
        json_array_foreach(snaps, i, s) {
                g_autoptr(json_t) disks = json_loads(json_string_value(json_object_get(s, "disks")), 0, NULL);
                bool changed = false;

                json_array_foreach(disks, j, d)
                        if (g_strcmp0(json_string_value(json_object_get(d, "disk")), disk) == 0 &&
                            g_strcmp0(json_string_value(json_object_get(d, "volume")), from) == 0) {
                                json_object_set_new(d, "volume", json_string(to));
                                changed = true;
                        }
                if (changed && store_exec(st, error, "UPDATE snapshots SET disks = ? WHERE id = ?", "js", disks,
                                          json_string_value(json_object_get(s, "id"))) < 0)
                        return -EIO;
        }
        return 0;
}

static int merge_apply_steps(struct engine_store *st, const char *vm, const char *disk, const char *sd, const char *top,
                             const char *base, GError **error)
{
        g_autoptr(GError) read_error = NULL;
        g_autoptr(json_t) t = store_query_one(st, &read_error, "SELECT * FROM volumes WHERE id = ? AND sd_id = ?", "ss",
                                              top, sd);
        g_autoptr(json_t) leaf = NULL;

        if (read_error) {
                /*
                 * Not "applied before": a read that failed says nothing about
                 * top's row. The round must roll back and be redone, or the
                 * merge would end without its chain being rewritten.
                 */
                st->failed |= st->depth > 0;
                g_propagate_error(error, g_steal_pointer(&read_error));
                return -EIO;
        }
        if (!t)
                return 0;      /* applied before (a replayed round) */
        if (store_exec(st, error, "UPDATE volumes SET parent = ? WHERE disk_id = ? AND sd_id = ? AND parent = ?", "ssss",
                       base, disk, sd, top) < 0 ||
            /* prepareMerge grew a base smaller than top; the merge left it LEGAL at the generation recorded */
            store_exec(st, error, "UPDATE volumes SET capacity = CASE WHEN capacity > ? THEN capacity ELSE ? END "
                                  "WHERE id = ? AND sd_id = ?", "iiss", json_integer_value(json_object_get(t, "capacity")),
                       json_integer_value(json_object_get(t, "capacity")), base, sd) < 0 ||
            store_exec(st, error, "DELETE FROM volumes WHERE id = ? AND sd_id = ?", "ss", top, sd) < 0 ||
            store_exec(st, error, "UPDATE volumes SET position = position - 1 WHERE disk_id = ? AND sd_id = ? AND position > ?",
                       "ssi", disk, sd, json_integer_value(json_object_get(t, "position"))) < 0)
                return -EIO;
        /* The leaf's format is the disk's (a raw base is the active layer again when top was the leaf). */
        leaf = store_query_one(st, error, "SELECT format FROM volumes WHERE disk_id = ? AND sd_id = ? ORDER BY position DESC "
                                          "LIMIT 1", "ss", disk, sd);
        if (leaf && store_exec(st, error, "UPDATE disks SET format = ? WHERE id = ?", "ss",
                               json_string_value(json_object_get(leaf, "format")), disk) < 0)
                return -EIO;
        return snapshots_repoint(st, vm, disk, top, base, error);
}

/*
 * All or nothing without a savepoint of its own: a write that fails inside
 * the caller's round marks the round failed and the whole round rolls back
 * (store.c), so top's child is never left on base with top's row still
 * there. (A savepoint would not survive PostgreSQL's recovery from an error,
 * which rolls the transaction back and begins a new one.)
 */
int engine_store_merge_apply(struct engine_store *st, const char *vm, const char *disk, const char *sd, const char *top,
                             const char *base, GError **error)
{
        return merge_apply_steps(st, vm, disk, sd, top, base, error);
}

int engine_store_restore_apply(struct engine_store *st, const char *disk, const char *sd, const char *base,
                               const char *leaf, gint64 capacity, GError **error)
{
        g_autoptr(json_t) b = store_query_one(st, error, "SELECT * FROM volumes WHERE id = ? AND sd_id = ?", "ss", base, sd);
        gint64 pos;

        if (!b)
                return -ENOENT;
        pos = json_integer_value(json_object_get(b, "position"));
        if (store_exec(st, error, "DELETE FROM volumes WHERE disk_id = ? AND sd_id = ? AND position > ?", "ssi", disk, sd,
                       pos) < 0)
                return -EIO;
        if (!leaf)
                return store_exec(st, error, "UPDATE disks SET format = ? WHERE id = ?", "ss",
                                  json_string_value(json_object_get(b, "format")), disk);
        if (store_exec(st, error, "INSERT INTO volumes (id, disk_id, sd_id, parent, position, format, sparse, capacity, "
                                  "legality) VALUES (?, ?, ?, ?, ?, 'cow', 1, ?, 'LEGAL')", "ssssii", leaf, disk, sd, base,
                       pos + 1, capacity) < 0)
                return -EIO;
        return store_exec(st, error, "UPDATE disks SET format = 'cow' WHERE id = ?", "s", disk);
}

int engine_store_disk_set_status(struct engine_store *st, const char *disk, const char *status, GError **error)
{
        return store_exec(st, error, "UPDATE disks SET status = ? WHERE id = ?", "ss", status, disk);
}

int engine_store_job_unlock(struct engine_store *st, const char *job, const char *vm, GError **error)
{
        if (store_exec(st, error, "UPDATE disks SET status = 'ok', progress = NULL, job_id = NULL WHERE job_id = ?", "s",
                       job) < 0)
                return -EIO;
        return vm ? store_exec(st, error, "UPDATE vms SET status = 'ok', job_id = NULL WHERE id = ? AND job_id = ?", "ss",
                               vm, job) : 0;
}

