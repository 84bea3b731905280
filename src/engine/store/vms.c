/* SPDX-License-Identifier: GPL-2.0-or-later */
/* VMs, templates, disk attachments and snapshots in the store. */
#include <errno.h>

#include "internal.h"

/* An UPDATE that must change exactly one row: -EBUSY when it changed none (the row moved on meanwhile). */
static int exec_one(struct engine_store *st, int r)
{
        if (r < 0)
                return r;
        return store_changes(st) == 1 ? 0 : -EBUSY;
}

json_t *engine_store_vm_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM vms WHERE id = ?", "s", id);
}

json_t *engine_store_vm_get_by_name(struct engine_store *st, const char *name, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM vms WHERE name = ?", "s", name);
}

json_t *engine_store_vm_list(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM vms ORDER BY created, name", "");
}

int engine_store_vm_insert(struct engine_store *st, const char *id, const char *name, const char *description,
                           const char *status, const char *template_id, const char *job, gint64 created, GError **error)
{
        return store_exec(st, error, "INSERT INTO vms (id, name, description, status, template_id, job_id, created) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?)", "ssssssi", id, name, description, status,
                          template_id, job, created);
}

int engine_store_vm_lock(struct engine_store *st, const char *id, const char *job, GError **error)
{
        return exec_one(st, store_exec(st, error, "UPDATE vms SET status = 'locked', job_id = ? WHERE id = ? AND status = 'ok'",
                                       "ss", job, id));
}

int engine_store_vm_unlock(struct engine_store *st, const char *id, const char *job, GError **error)
{
        return store_exec(st, error, "UPDATE vms SET status = 'ok', job_id = NULL WHERE id = ? AND job_id = ?", "ss", id, job);
}

int engine_store_vm_delete(struct engine_store *st, const char *id, bool only_unlocked, GError **error)
{
        if (store_exec(st, error, "DELETE FROM disk_attachments WHERE vm_id = ?", "s", id) < 0 ||
            store_exec(st, error, "DELETE FROM snapshots WHERE vm_id = ?", "s", id) < 0)
                return -EIO;
        if (only_unlocked)
                return store_exec(st, error, "DELETE FROM vms WHERE id = ? AND status = 'ok'", "s", id);
        return store_exec(st, error, "DELETE FROM vms WHERE id = ?", "s", id);
}

json_t *engine_store_template_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM templates WHERE id = ?", "s", id);
}

json_t *engine_store_template_get_by_name(struct engine_store *st, const char *name, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM templates WHERE name = ?", "s", name);
}

json_t *engine_store_template_list(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM templates ORDER BY created, name", "");
}

int engine_store_template_insert(struct engine_store *st, const char *id, const char *name, const char *description,
                                 const char *vm, const char *job, gint64 created, GError **error)
{
        return store_exec(st, error, "INSERT INTO templates (id, name, description, status, vm_id, job_id, created) "
                                     "VALUES (?, ?, ?, 'locked', ?, ?, ?)", "sssssi", id, name, description, vm, job,
                          created);
}

int engine_store_template_lock(struct engine_store *st, const char *id, const char *job, GError **error)
{
        return exec_one(st, store_exec(st, error, "UPDATE templates SET status = 'locked', job_id = ? "
                                                  "WHERE id = ? AND status != 'locked'", "ss", job, id));
}

int engine_store_template_set_status(struct engine_store *st, const char *id, const char *status, GError **error)
{
        return store_exec(st, error, "UPDATE templates SET status = ?, job_id = NULL WHERE id = ?", "ss", status, id);
}

int engine_store_template_delete(struct engine_store *st, const char *id, GError **error)
{
        return store_exec(st, error, "DELETE FROM templates WHERE id = ?", "s", id);
}

json_t *engine_store_template_dependents(struct engine_store *st, const char *id, gint64 limit, GError **error)
{
        return store_query(st, error,
                "SELECT DISTINCT COALESCE('VM ' || vm.name, 'disk ' || d.name || ' (' || d.id || ')') AS who "
                "FROM volumes v JOIN disks d ON d.id = v.disk_id "
                "LEFT JOIN disk_attachments a ON a.disk_id = d.id LEFT JOIN vms vm ON vm.id = a.vm_id "
                "WHERE v.parent IN (SELECT tv.id FROM volumes tv JOIN disk_attachments ta ON ta.disk_id = tv.disk_id "
                "                   WHERE ta.template_id = ?1) "
                "UNION SELECT 'VM ' || name || ' (being created)' FROM vms WHERE template_id = ?1 AND status = 'locked' "
                "ORDER BY 1 LIMIT ?2", "si", id, limit);
}

json_t *engine_store_owner_disks(struct engine_store *st, bool vm, const char *owner, GError **error)
{
        if (vm)
                return store_query(st, error, "SELECT d.* FROM disks d JOIN disk_attachments a ON a.disk_id = d.id "
                                              "WHERE a.vm_id = ? ORDER BY a.created, a.rowid", "s", owner);
        return store_query(st, error, "SELECT d.* FROM disks d JOIN disk_attachments a ON a.disk_id = d.id "
                                      "WHERE a.template_id = ? ORDER BY a.created, a.rowid", "s", owner);
}

json_t *engine_store_attachment_list(struct engine_store *st, bool vm, const char *owner, GError **error)
{
        if (vm)
                return store_query(st, error, "SELECT * FROM disk_attachments WHERE vm_id = ? ORDER BY created, rowid",
                                   "s", owner);
        return store_query(st, error, "SELECT * FROM disk_attachments WHERE template_id = ? ORDER BY created, rowid",
                           "s", owner);
}

json_t *engine_store_attachment_get(struct engine_store *st, const char *disk, const char *vm, GError **error)
{
        if (vm)
                return store_query_one(st, error, "SELECT * FROM disk_attachments WHERE disk_id = ? AND vm_id = ?", "ss",
                                       disk, vm);
        return store_query_one(st, error, "SELECT a.*, v.name AS vm_name, t.name AS template_name FROM disk_attachments a "
                                          "LEFT JOIN vms v ON v.id = a.vm_id LEFT JOIN templates t ON t.id = a.template_id "
                                          "WHERE a.disk_id = ?", "s", disk);
}

int engine_store_attachment_count(struct engine_store *st, const char *vm, gint64 *ret, GError **error)
{
        g_autoptr(json_t) row = store_query_one(st, error, "SELECT COUNT(*) AS n FROM disk_attachments WHERE vm_id = ?",
                                                "s", vm);

        *ret = 0;
        if (!row)
                return -EIO;
        *ret = json_integer_value(json_object_get(row, "n"));
        return 0;
}

int engine_store_attachment_insert(struct engine_store *st, const char *disk, const char *vm, const char *template_id,
                                   bool bootable, const char *interface, gint64 created, GError **error)
{
        return store_exec(st, error, "INSERT INTO disk_attachments (disk_id, vm_id, template_id, bootable, interface, created) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", "sssbsi", disk, vm, template_id, bootable, interface,
                          created);
}

int engine_store_attachment_delete(struct engine_store *st, const char *disk, const char *vm, GError **error)
{
        return store_exec(st, error, "DELETE FROM disk_attachments WHERE disk_id = ? AND vm_id = ?", "ss", disk, vm);
}

json_t *engine_store_snapshot_get(struct engine_store *st, const char *id, const char *vm, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM snapshots WHERE id = ? AND vm_id = ?", "ss", id, vm);
}

json_t *engine_store_snapshot_list(struct engine_store *st, const char *vm, GError **error)
{
        return store_query(st, error, "SELECT * FROM snapshots WHERE vm_id = ? ORDER BY created, rowid", "s", vm);
}

int engine_store_snapshot_insert(struct engine_store *st, const char *id, const char *vm, const char *description,
                                 json_t *disks, const char *job, gint64 created, GError **error)
{
        return store_exec(st, error, "INSERT INTO snapshots (id, vm_id, description, status, disks, job_id, created) "
                                     "VALUES (?, ?, ?, 'locked', ?, ?, ?)", "sssjsi", id, vm, description, disks, job,
                          created);
}

int engine_store_snapshot_set_ok(struct engine_store *st, const char *id, GError **error)
{
        return store_exec(st, error, "UPDATE snapshots SET status = 'ok', job_id = NULL WHERE id = ?", "s", id);
}

int engine_store_snapshot_delete(struct engine_store *st, const char *id, GError **error)
{
        return store_exec(st, error, "DELETE FROM snapshots WHERE id = ?", "s", id);
}
