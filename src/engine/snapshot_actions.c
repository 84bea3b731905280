/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the snapshot actions start (the flows: flows/snapshot_create.c,
 * flows/snapshot_remove.c, flows/snapshot_restore.c): create, remove (a
 * cold merge per disk) and restore.
 * Like the VM actions (vm_actions.c, whose checks and locks they share),
 * each validates first, then in one transaction locks the VM and its disks
 * and records the job, the new rows and the top-level command. Nothing is
 * called on a host from here.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "inventory.h"
#include "snapshot_actions.h"
#include "store/store.h"
#include "uuid.h"
#include "vm_actions.h"

#define js engine_js
#define ji engine_ji
#define fail engine_fail

#define MAX_CHAIN 64   /* volumes per disk; the agent reads chains up to 128 deep */

json_t *engine_snapshot_create(struct engine *e, const char *vm_id, json_t *body, GError **error)
{
        g_autoptr(json_t) vm = NULL;
        g_autoptr(json_t) disks = NULL;
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) snapdisks = json_array();
        g_autoptr(json_t) params = NULL;
        g_autofree char *snap = fy_uuid_new();
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = NULL;
        const char *desc;
        size_t i;
        json_t *disk, *d;

        if (!(vm = engine_vm_get(e, vm_id, error)) || !engine_description_get(body, &desc, error))
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        disks = engine_owner_disks(e, true, vm_id);
        if (json_array_size(disks) == 0)
                return fail(error, 409, "VM %s has no disks to snapshot", js(vm, "name"));
        json_array_foreach(disks, i, disk) {
                g_autoptr(json_t) vols = NULL;
                g_autoptr(json_t) leaf = NULL;
                g_autofree char *vol = fy_uuid_new();

                if (!engine_disk_usable(e, disk, error))
                        return NULL;
                vols = engine_disk_volumes(e, disk);
                leaf = engine_disk_leaf(e, disk);
                if (json_array_size(vols) >= MAX_CHAIN)
                        return fail(error, 409, "disk %s has %zu volumes already, the most a chain may have; "
                                    "merging snapshots is not supported yet", js(disk, "name"), json_array_size(vols));
                json_array_append_new(plan, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "disk", js(disk, "id"),
                                                      "sd", js(disk, "sd_id"), "img", js(disk, "id"), "vol", vol,
                                                      "parent", js(leaf, "id"), "capacity", ji(leaf, "capacity"),
                                                      "position", (json_int_t) json_array_size(vols)));
                json_array_append_new(snapdisks, json_pack("{s:s, s:s, s:s}", "disk", js(disk, "id"), "volume", js(leaf, "id"),
                                                           "leaf", vol));
        }

        jdesc = g_strdup_printf("Creating snapshot of VM %s", js(vm, "name"));
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        if (!(job = engine_job_insert(e, jdesc, error)) || !engine_vm_lock(e, vm, job, error))
                goto rollback;
        json_array_foreach(disks, i, disk)
                if (!engine_disk_lock(e, disk, job, error))
                        goto rollback;
        json_array_foreach(plan, i, d)
                if (engine_store_volume_insert(e->db, js(d, "vol"), js(d, "img"), js(d, "sd"), js(d, "parent"),
                                               ji(d, "position"), "cow", true, ji(d, "capacity"), error) < 0)
                        goto rollback;
        if (engine_store_snapshot_insert(e->db, snap, vm_id, desc, snapdisks, job, engine_now(), error) < 0)
                goto rollback;
        params = json_pack("{s:s, s:s, s:O}", "vm", vm_id, "snapshot", snap, "disks", plan);
        if (!(cmd = engine_job_command_start(e, ENGINE_KIND_CREATE_SNAPSHOT, job, params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        return json_pack("{s:{s:s}, s:{s:s}}", "snapshot", "id", snap, "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

json_t *engine_vm_snapshot(struct engine *e, const char *vm_id, const char *snap_id, GError **error)
{
        g_autoptr(json_t) vm = engine_vm_get(e, vm_id, error);
        json_t *snap;

        if (!vm)
                return NULL;
        snap = fy_uuid_is_valid(snap_id) ? engine_store_snapshot_get(e->db, snap_id, vm_id, NULL) : NULL;
        if (!snap)
                return fail(error, 404, "VM %s has no snapshot %.64s", js(vm, "name"), snap_id);
        return snap;
}

/*
 * The snapshot of the VM that a removal or restore may change now: both
 * unlocked. A "broken" snapshot (a removal of it failed part-way: a base
 * may be ILLEGAL or half-merged on storage) can only be removed again; it
 * and the snapshots taken after it are not restored meanwhile, since their
 * chains read through that base; an older snapshot is (broken_discarded).
 */
/*
 * Whether restoring snapshot `snap` discards everything broken snapshot `b`
 * (taken after it) left: each disk b left is one of snap's, so the restore
 * removes that disk's volumes above snap's (the half-merged base among
 * them) after verify_chain read the kept ones LEGAL; none is a finalized
 * top already out of the inventory's chain (nothing would delete it).
 */
static bool broken_discarded(json_t *b, json_t *snap)
{
        g_autoptr(json_t) left = engine_jparse(b, "disks");
        g_autoptr(json_t) kept = engine_jparse(snap, "disks");
        size_t i, j;
        json_t *l, *k;

        json_array_foreach(left, i, l) {
                bool found = false;

                if (js(l, "delete"))
                        return false;
                json_array_foreach(kept, j, k)
                        found = found || g_strcmp0(js(k, "disk"), js(l, "disk")) == 0;
                if (!found)
                        return false;
        }
        return true;
}

static json_t *snapshot_for_change(struct engine *e, const char *vm_id, const char *snap_id, bool removal,
                                   json_t **ret_vm, GError **error)
{
        g_autoptr(json_t) vm = engine_vm_get(e, vm_id, error);
        g_autoptr(json_t) snap = NULL;
        g_autoptr(json_t) all = NULL;
        bool newer = false;
        size_t i;
        json_t *s;

        if (!vm || !(snap = engine_vm_snapshot(e, vm_id, snap_id, error)))
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        if ((all = engine_store_snapshot_list(e->db, vm_id, NULL)))
                json_array_foreach(all, i, s) {
                        bool self = g_strcmp0(js(s, "id"), snap_id) == 0;

                        newer = newer || self;
                        if (g_strcmp0(js(s, "status"), "broken") != 0 || (removal && self))
                                continue;
                        /* A broken snapshot's half-finalized volumes are still in the chain (its top ILLEGAL, maybe
                         * still a parent): merging next to them would make one LEGAL again and a later finalize
                         * of the broken one would drop the guest data merged into it. */
                        if (removal)
                                return fail(error, 409, "snapshot %s of VM %s is broken: a removal of it failed part-way "
                                            "and storage may hold a half-merged volume; retry its removal first "
                                            "(DELETE /api/vms/%s/snapshots/%s), then remove this snapshot",
                                            js(s, "id"), js(vm, "name"), vm_id, js(s, "id"));
                        if (!(newer && broken_discarded(s, snap)))
                                return fail(error, 409, "snapshot %s of VM %s is broken: a removal of it failed part-way "
                                            "and storage may hold a half-merged volume; retry the removal "
                                            "(DELETE /api/vms/%s/snapshots/%s) before restoring this snapshot",
                                            js(s, "id"), js(vm, "name"), vm_id, js(s, "id"));
                }
        if (strcmp(js(snap, "status"), "ok") != 0 && !(removal && strcmp(js(snap, "status"), "broken") == 0))
                return fail(error, 409, "snapshot %s of VM %s is %s", snap_id, js(vm, "name"), js(snap, "status"));
        *ret_vm = g_steal_pointer(&vm);
        return g_steal_pointer(&snap);
}

/*
 * Each disk of the snapshot that is still the VM's, with its chain:
 * calls add(disk row, its volumes, index of the snapshot's volume) and
 * fails on a disk that cannot change now or whose chain lacks the volume.
 */
static bool snapshot_disks(struct engine *e, json_t *vm, json_t *snap, json_t *disks_out,
                           bool (*add)(json_t *out, json_t *ent, json_t *disk, json_t *vols, size_t at, GError **error),
                           GError **error)
{
        g_autoptr(json_t) entries = engine_jparse(snap, "disks");
        g_autoptr(json_t) owned = engine_owner_disks(e, true, js(vm, "id"));
        size_t i, j, k;
        json_t *ent, *disk, *v;

        json_array_foreach(entries, i, ent) {
                g_autoptr(json_t) vols = NULL;
                bool found = false;

                json_array_foreach(owned, j, disk) {
                        if (g_strcmp0(js(disk, "id"), js(ent, "disk")) != 0)
                                continue;
                        found = true;
                        if (!engine_disk_usable(e, disk, error))
                                return false;
                        vols = engine_disk_volumes(e, disk);
                        json_array_foreach(vols, k, v)
                                if (g_strcmp0(js(v, "id"), js(ent, "volume")) == 0)
                                        break;
                        if (k == json_array_size(vols)) {
                                fail(error, 409, "disk %s no longer has volume %s of snapshot %s in its chain",
                                     js(disk, "name"), js(ent, "volume"), js(snap, "id"));
                                return false;
                        }
                        if (!add(disks_out, ent, disk, vols, k, error))
                                return false;
                }
                (void) found;  /* a disk detached since the snapshot keeps its chain as it is */
        }
        return true;
}

static bool add_merge(json_t *out, json_t *ent, json_t *disk, json_t *vols, size_t at, GError **error)
{
        json_t *base = json_array_get(vols, at);
        json_t *top = json_array_get(vols, at + 1);

        if (js(ent, "delete")) {
                /* An earlier removal finalized this disk's merge (the inventory followed) but top was not deleted. */
                json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:b}", "disk", js(disk, "id"),
                                                     "sd", js(disk, "sd_id"), "img", js(disk, "id"), "top",
                                                     js(ent, "delete"), "base", js(base, "id"), "bytes", 0,
                                                     "finalized", true));
                return true;
        }

        if (!top || g_strcmp0(js(top, "parent"), js(base, "id")) != 0) {
                fail(error, 409, "disk %s: snapshot volume %s has no child volume to merge", js(disk, "name"), js(base, "id"));
                return false;
        }
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b}", "disk", js(disk, "id"),
                                             "sd", js(disk, "sd_id"), "img", js(disk, "id"), "top", js(top, "id"),
                                             "base", js(base, "id"), "bytes", ji(top, "capacity"),
                                             /* An earlier removal's merge committed, its finalize did not:
                                              * finalize again (it checks base on storage first). */
                                             "finalize_only", g_strcmp0(js(ent, "finalize"), js(top, "id")) == 0));
        return true;
}

static bool add_restore(json_t *out, json_t *ent, json_t *disk, json_t *vols, size_t at, GError **error)
{
        json_t *base = json_array_get(vols, at);
        g_autoptr(json_t) discard = json_array();
        g_autofree char *vol = fy_uuid_new();
        gint64 capacity = 0;

        /* The leaf first: each removal leaves a linear chain whose leaf is the next one. */
        for (size_t i = json_array_size(vols); i-- > at + 1;)
                json_array_append_new(discard, json_string(js(json_array_get(vols, i), "id")));
        for (size_t i = 0; i <= at; i++)
                capacity = MAX(capacity, ji(json_array_get(vols, i), "capacity"));
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:O}", "disk", js(disk, "id"),
                                             "sd", js(disk, "sd_id"), "img", js(disk, "id"), "base", js(base, "id"),
                                             "vol", vol, "capacity", (json_int_t) capacity, "discard", discard));
        return true;
}

/* Locks the VM, its disks in plan and the snapshot for a new job and starts its command. */
static json_t *snapshot_job_start(struct engine *e, json_t *vm, json_t *snap, enum engine_kind kind, const char *desc,
                                  json_t *params, GError **error)
{
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        size_t i;
        json_t *d;

        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        if (!(job = engine_job_insert(e, desc, error)) || !engine_vm_lock(e, vm, job, error))
                goto rollback;
        json_array_foreach(json_object_get(params, "disks"), i, d) {
                g_autoptr(json_t) disk = engine_store_disk_get(e->db, js(d, "disk"), error);

                if (!disk || !engine_disk_lock(e, disk, job, error))
                        goto rollback;
        }
        /* "removing" from before the first step acts: a removal that fails leaves it "broken" (flows/snapshot_remove.c). */
        if (engine_store_snapshot_set(e->db, js(snap, "id"), kind == ENGINE_KIND_REMOVE_SNAPSHOT ? "removing" : "locked",
                                      job, NULL, error) < 0)
                goto rollback;
        if (!(cmd = engine_job_command_start(e, kind, job, params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", desc);
        return json_pack("{s:{s:s}}", "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

json_t *engine_snapshot_remove(struct engine *e, const char *vm_id, const char *snap_id, int *ret_status, GError **error)
{
        g_autoptr(json_t) vm = NULL;
        g_autoptr(json_t) snap = snapshot_for_change(e, vm_id, snap_id, true, &vm, error);
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) params = NULL;
        g_autofree char *desc = NULL;

        if (!snap || !snapshot_disks(e, vm, snap, plan, add_merge, error))
                return NULL;
        if (json_array_size(plan) == 0) {
                /* None of its disks is the VM's any more: nothing on storage to merge. */
                if (engine_store_snapshot_delete(e->db, snap_id, error) < 0)
                        return NULL;
                *ret_status = 200;
                return json_pack("{s:{s:s}}", "snapshot", "id", snap_id);
        }
        desc = g_strdup_printf("Removing snapshot %s of VM %s (merging %zu disk(s))", snap_id, js(vm, "name"),
                               json_array_size(plan));
        /* A removal that changes nothing leaves the snapshot "ok" again, unless it was "broken" before. */
        params = json_pack("{s:s, s:s, s:O, s:b}", "vm", vm_id, "snapshot", snap_id, "disks", plan, "was_broken",
                           strcmp(js(snap, "status"), "broken") == 0);
        *ret_status = 202;
        return snapshot_job_start(e, vm, snap, ENGINE_KIND_REMOVE_SNAPSHOT, desc, params, error);
}

json_t *engine_snapshot_restore(struct engine *e, const char *vm_id, const char *snap_id, GError **error)
{
        g_autoptr(json_t) vm = NULL;
        g_autoptr(json_t) snap = snapshot_for_change(e, vm_id, snap_id, false, &vm, error);
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) newer = json_array();
        g_autoptr(json_t) all = NULL;
        g_autoptr(json_t) params = NULL;
        g_autofree char *desc = NULL;
        bool after = false;
        size_t i;
        json_t *s;

        if (!snap || !snapshot_disks(e, vm, snap, plan, add_restore, error))
                return NULL;
        if (json_array_size(plan) == 0)
                return fail(error, 409, "none of the disks of snapshot %s is attached to VM %s any more", snap_id,
                            js(vm, "name"));
        all = engine_store_snapshot_list(e->db, vm_id, error);
        if (!all)
                return NULL;
        /* The snapshots taken after this one name volumes the restore discards. */
        json_array_foreach(all, i, s) {
                if (after)
                        json_array_append_new(newer, json_string(js(s, "id")));
                if (g_strcmp0(js(s, "id"), snap_id) == 0)
                        after = true;
        }
        desc = g_strdup_printf("Restoring VM %s to snapshot %s (%zu disk(s))", js(vm, "name"), snap_id,
                               json_array_size(plan));
        params = json_pack("{s:s, s:s, s:O, s:O}", "vm", vm_id, "snapshot", snap_id, "disks", plan,
                           "discard_snapshots", newer);
        return snapshot_job_start(e, vm, snap, ENGINE_KIND_RESTORE_SNAPSHOT, desc, params, error);
}
