/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the VM and template actions start (the flows: flows/template.c,
 * flows/vm_create.c, flows/vm_remove.c; the snapshot actions are in
 * snapshot_actions.c). Each validates everything it can first, then in one
 * transaction locks what it reads or changes and records the job, the new
 * rows and the top-level command; the coordinator does the rest. Nothing is
 * called on a host from here.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "clock.h"
#include "commands.h"
#include "events.h"
#include "inventory.h"
#include "vm_actions.h"
#include "store/store.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define MAX_VM_DISKS 64
#define MAX_DESCRIPTION 256
#define STRUCTURE_WEIGHT 10.0
#define DATA_WEIGHT 90.0

/* ---- small helpers ---- */

#define fail engine_fail

/* An optional description: UTF-8, no control characters, at most MAX_DESCRIPTION bytes. */
bool engine_description_get(json_t *body, const char **ret, GError **error)
{
        json_t *v = json_object_get(body, "description");
        const char *s;

        *ret = "";
        if (!v || json_is_null(v))
                return true;
        s = json_string_value(v);
        if (!s || strlen(s) > MAX_DESCRIPTION) {
                fail(error, 400, "description must be a string of at most %d bytes", MAX_DESCRIPTION);
                return false;
        }
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p == 0x7f) {
                        fail(error, 400, "description must not contain control characters (newlines, tabs)");
                        return false;
                }
        *ret = s;
        return true;
}

/* body[key] = {"id": uuid}; returns the id or NULL after a 400. */
static const char *ref_id(json_t *body, const char *key, GError **error)
{
        json_t *o = json_object_get(body, key);
        const char *id = js(o, "id");

        if (!json_is_object(o) || !id) {
                fail(error, 400, "missing %s: {\"id\": \"<uuid>\"}", key);
                return NULL;
        }
        if (!fy_uuid_is_valid(id)) {
                fail(error, 400, "%s.id must be a UUID", key);
                return NULL;
        }
        return id;
}

typedef json_t *(*lookup_fn)(struct engine_store *st, const char *id, GError **error);

static json_t *row_by_id(struct engine *e, lookup_fn lookup, const char *what, const char *id, GError **error)
{
        json_t *row;

        if (!id || !fy_uuid_is_valid(id))
                return fail(error, 404, "no %s %.64s (ids are UUIDs)", what, id ? id : "");
        row = lookup(e->db, id, error);
        if (!row && (!error || !*error))
                return fail(error, 404, "no %s %s", what, id);
        return row;
}

json_t *engine_vm_get(struct engine *e, const char *id, GError **error)
{
        return row_by_id(e, engine_store_vm_get, "VM", id, error);
}

json_t *engine_template_get(struct engine *e, const char *id, GError **error)
{
        return row_by_id(e, engine_store_template_get, "template", id, error);
}

/* The disks attached to a VM (vm true) or a template, in attachment order. */
json_t *engine_owner_disks(struct engine *e, bool vm, const char *owner)
{
        json_t *rows = engine_store_owner_disks(e->db, vm, owner, NULL);

        return rows ? rows : json_array();
}

/* A disk that an operation may read or change now: ok, with a LEGAL chain. */
bool engine_disk_usable(struct engine *e, json_t *disk, GError **error)
{
        g_autoptr(json_t) vols = NULL;
        size_t i;
        json_t *v;

        if (strcmp(js(disk, "status"), "ok") != 0) {
                fail(error, 409, "disk %s (%s) is %s; wait until its current operation ends", js(disk, "name"),
                     js(disk, "id"), js(disk, "status"));
                return false;
        }
        vols = engine_disk_volumes(e, disk);
        if (json_array_size(vols) == 0) {
                fail(error, 409, "disk %s (%s) has no volumes", js(disk, "name"), js(disk, "id"));
                return false;
        }
        json_array_foreach(vols, i, v)
                if (strcmp(js(v, "legality"), "LEGAL") != 0) {
                        fail(error, 409, "disk %s (%s): volume %s is %s", js(disk, "name"), js(disk, "id"),
                             js(v, "id"), js(v, "legality"));
                        return false;
                }
        return true;
}

/* Sums what each domain must still hold (sd id → bytes) and refuses when a measured domain is short. */
static bool space_check(struct engine *e, GHashTable *needed, GError **error)
{
        GHashTableIter it;
        gpointer key, value;

        g_hash_table_iter_init(&it, needed);
        while (g_hash_table_iter_next(&it, &key, &value)) {
                g_autoptr(json_t) sd = engine_store_sd_get(e->db, (const char *) key, NULL);
                gint64 need = *(gint64 *) value;
                json_t *free_ = json_object_get(sd, "free");

                if (sd && json_is_integer(free_) && json_integer_value(free_) < need) {
                        fail(error, 507, "storage domain %s has %" JSON_INTEGER_FORMAT " bytes free, %" G_GINT64_FORMAT
                             " are needed", js(sd, "name"), json_integer_value(free_), need);
                        return false;
                }
        }
        return true;
}

static void space_add(GHashTable *needed, const char *sd, gint64 bytes)
{
        gint64 *v = g_hash_table_lookup(needed, sd);

        if (!v) {
                v = g_new0(gint64, 1);
                g_hash_table_insert(needed, g_strdup(sd), v);
        }
        *v += bytes;
}

/* ---- REST: per-disk options of a template or a cloned VM ---- */

struct disk_choice {
        const char *format;            /* NULL: not given */
        int sparse;                    /* -1: not given */
        char *sd;                      /* NULL: not given */
};

static void disk_choice_free(void *p)
{
        struct disk_choice *c = p;

        g_free(c->sd);
        g_free(c);
}

/*
 * body.disks: [{"id", "format"?, "sparse"?, "storage_domain"?}] naming disks of `disks`
 * (rows). Returns id → struct disk_choice for those listed; NULL after a 400/404.
 */
static GHashTable *disk_choices(struct engine *e, json_t *body, json_t *disks, const char *whose, GError **error)
{
        g_autoptr(GHashTable) out = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, disk_choice_free);
        json_t *list = json_object_get(body, "disks");
        size_t i, j;
        json_t *item, *row;

        if (!list || json_is_null(list))
                return g_steal_pointer(&out);
        if (!json_is_array(list) || json_array_size(list) > MAX_VM_DISKS) {
                fail(error, 400, "disks must be a list of at most %d {\"id\", \"format\", \"sparse\", \"storage_domain\"}",
                     MAX_VM_DISKS);
                return NULL;
        }
        json_array_foreach(list, i, item) {
                const char *id = js(item, "id");
                const char *format = js(item, "format");
                json_t *sparse = json_object_get(item, "sparse");
                json_t *sdref = json_object_get(item, "storage_domain");
                struct disk_choice *c;
                bool known = false;

                if (!json_is_object(item) || !id || !fy_uuid_is_valid(id)) {
                        fail(error, 400, "disks[%zu].id must be the UUID of a disk of the %s", i, whose);
                        return NULL;
                }
                json_array_foreach(disks, j, row)
                        known |= strcmp(js(row, "id"), id) == 0;
                if (!known) {
                        fail(error, 400, "disks[%zu]: disk %s is not a disk of the %s", i, id, whose);
                        return NULL;
                }
                if (g_hash_table_contains(out, id)) {
                        fail(error, 400, "disks[%zu]: disk %s is listed twice", i, id);
                        return NULL;
                }
                if (json_object_get(item, "format") && (!format || (strcmp(format, "raw") != 0 && strcmp(format, "cow") != 0))) {
                        fail(error, 400, "disks[%zu].format must be raw or cow", i);
                        return NULL;
                }
                if (sparse && !json_is_boolean(sparse)) {
                        fail(error, 400, "disks[%zu].sparse must be true or false", i);
                        return NULL;
                }
                c = g_new0(struct disk_choice, 1);
                c->format = format;
                c->sparse = sparse ? json_is_true(sparse) : -1;
                g_hash_table_insert(out, g_strdup(id), c);
                if (sdref) {
                        const char *sd = ref_id(item, "storage_domain", error);
                        g_autoptr(json_t) srow = NULL;

                        if (!sd) {
                                g_prefix_error(error, "disks[%zu]: ", i);
                                return NULL;
                        }
                        srow = engine_store_sd_get(e->db, sd, NULL);
                        if (!srow) {
                                fail(error, 404, "disks[%zu]: no storage domain %s", i, sd);
                                return NULL;
                        }
                        c->sd = g_strdup(sd);
                }
        }
        return g_steal_pointer(&out);
}

/* ---- REST: actions ---- */


static bool name_free(struct engine *e, bool vm, const char *name, GError **error)
{
        const char *what = vm ? "VM" : "template";
        g_autoptr(json_t) row = vm ? engine_store_vm_get_by_name(e->db, name, NULL)
                                   : engine_store_template_get_by_name(e->db, name, NULL);

        if (row) {
                fail(error, 409, "a %s named \"%s\" exists already (%s)", what, name, js(row, "id"));
                return false;
        }
        return true;
}

/* Locks a row of this transaction's job only if it is free now: false after a 409 (a race lost). */
bool engine_disk_lock(struct engine *e, json_t *disk, const char *job, GError **error)
{
        int r = engine_store_disk_lock(e->db, js(disk, "id"), job, js(disk, "status"), error);

        if (r == -EBUSY)
                fail(error, 409, "disk %s changed meanwhile; try again", js(disk, "name"));
        return r == 0;
}

bool engine_vm_lock(struct engine *e, json_t *vm, const char *job, GError **error)
{
        int r = engine_store_vm_lock(e->db, js(vm, "id"), job, error);

        if (r == -EBUSY)
                fail(error, 409, "VM %s changed meanwhile; try again", js(vm, "name"));
        return r == 0;
}

/* The new disk of a plan entry d, its one volume (on parent) and its attachment to vm or tmpl. */
static int insert_disk(struct engine *e, json_t *d, const char *job, const char *parent, const char *vm, const char *tmpl,
                       bool bootable, GError **error)
{
        bool sparse = json_is_true(json_object_get(d, "sparse"));

        if (engine_store_disk_insert(e->db, js(d, "img"), js(d, "name"), js(d, "sd"), js(d, "format"), sparse,
                                     ji(d, "capacity"), job, engine_now(), error) < 0 ||
            engine_store_volume_insert(e->db, js(d, "vol"), js(d, "img"), js(d, "sd"), parent, 0, js(d, "format"), sparse,
                                       ji(d, "capacity"), error) < 0)
                return -EIO;
        return engine_store_attachment_insert(e->db, js(d, "img"), vm, tmpl, bootable, "virtio_scsi", engine_now(), error);
}

/* The chain's leaf and its capacity (the largest of the chain). */
json_t *engine_disk_leaf(struct engine *e, json_t *disk)
{
        g_autoptr(json_t) vols = engine_disk_volumes(e, disk);
        size_t n = json_array_size(vols);

        return n ? json_incref(json_array_get(vols, n - 1)) : NULL;
}

json_t *engine_template_create(struct engine *e, json_t *body, GError **error)
{
        g_autoptr(json_t) vm = NULL;
        g_autoptr(json_t) disks = NULL;
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) params = NULL;
        g_autoptr(GHashTable) choices = NULL;
        g_autoptr(GHashTable) needed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *tmpl = fy_uuid_new();
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = NULL;
        const char *name = js(body, "name");
        const char *desc, *vm_id;
        gint64 total = 0;
        size_t i;
        json_t *disk, *d;

        if (!engine_name_valid(name))
                return fail(error, 400, "name must be 1-64 letters, digits, spaces or _-. characters");
        if (!engine_description_get(body, &desc, error) || !(vm_id = ref_id(body, "vm", error)))
                return NULL;
        if (!(vm = engine_vm_get(e, vm_id, error)) || !name_free(e, false, name, error))
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        disks = engine_owner_disks(e, true, vm_id);
        json_array_foreach(disks, i, disk)
                if (!engine_disk_usable(e, disk, error))
                        return NULL;
        if (!(choices = disk_choices(e, body, disks, "VM", error)))
                return NULL;
        json_array_foreach(disks, i, disk) {
                g_autoptr(json_t) leaf = engine_disk_leaf(e, disk);
                g_autoptr(json_t) vols = engine_disk_volumes(e, disk);
                struct disk_choice *c = g_hash_table_lookup(choices, js(disk, "id"));
                g_autofree char *img = fy_uuid_new();
                g_autofree char *vol = fy_uuid_new();
                gint64 cap = ji(leaf, "capacity");
                /* Collapsed: a chain or a qcow2 disk stays qcow2 unless asked otherwise. */
                const char *format = c && c->format ? c->format :
                                     (json_array_size(vols) > 1 || strcmp(js(leaf, "format"), "cow") == 0) ? "cow" : "raw";
                bool sparse = c && c->sparse >= 0 ? c->sparse : ji(disk, "sparse") != 0;
                const char *sd = c && c->sd ? c->sd : js(disk, "sd_id");

                total += cap;
                space_add(needed, sd, sparse ? ji(disk, "actual_size") : cap);
                json_array_append_new(plan, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b}",
                                                      "vm_disk", js(disk, "id"), "name", js(disk, "name"),
                                                      "src_sd", js(disk, "sd_id"), "src_img", js(disk, "id"),
                                                      "src_vol", js(leaf, "id"), "sd", sd, "img", img, "vol", vol,
                                                      "capacity", (json_int_t) cap, "format", format, "sparse", sparse));
        }
        if (!space_check(e, needed, error))
                return NULL;
        json_array_foreach(plan, i, d) {
                json_object_set_new(d, "structure_weight", json_real(STRUCTURE_WEIGHT / (double) json_array_size(plan)));
                json_object_set_new(d, "data_weight", json_real(DATA_WEIGHT * (double) ji(d, "capacity") / (double) MAX(total, 1)));
        }

        jdesc = g_strdup_printf("Creating template %s from VM %s", name, js(vm, "name"));
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        if (!(job = engine_job_insert(e, jdesc, error)))
                goto rollback;
        if (engine_store_template_insert(e->db, tmpl, name, desc, vm_id, job, engine_now(), error) < 0) {
                g_clear_error(error);
                fail(error, 409, "a template named \"%s\" exists already", name);
                goto rollback;
        }
        /* Read only while copied: the VM cannot get snapshots or other disks meanwhile. */
        if (!engine_vm_lock(e, vm, job, error))
                goto rollback;
        json_array_foreach(disks, i, disk)
                if (!engine_disk_lock(e, disk, job, error))
                        goto rollback;
        json_array_foreach(plan, i, d)
                if (insert_disk(e, d, job, NULL, NULL, tmpl, i == 0, error) < 0)
                        goto rollback;
        params = json_pack("{s:s, s:s, s:s, s:O}", "template", tmpl, "name", name, "vm", vm_id, "disks", plan);
        if (!(cmd = engine_job_command_start(e, ENGINE_KIND_CREATE_TEMPLATE_FROM_VM, job, params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        return json_pack("{s:{s:s, s:s}, s:{s:s}}", "template", "id", tmpl, "name", name, "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

/* POST /api/vms: an empty VM (201) or one made from a template (202 with the job). */
json_t *engine_vm_create(struct engine *e, json_t *body, int *ret_status, GError **error)
{
        g_autoptr(json_t) tmpl = NULL;
        g_autoptr(json_t) disks = NULL;
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) params = NULL;
        g_autoptr(GHashTable) choices = NULL;
        g_autoptr(GHashTable) needed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *vm = fy_uuid_new();
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = NULL;
        const char *name = js(body, "name");
        json_t *clone_v = json_object_get(body, "clone");
        const char *desc, *tmpl_id;
        bool clone;
        gint64 total = 0;
        size_t i;
        json_t *disk, *d;

        if (!engine_name_valid(name))
                return fail(error, 400, "name must be 1-64 letters, digits, spaces or _-. characters");
        if (!engine_description_get(body, &desc, error))
                return NULL;
        if (clone_v && !json_is_boolean(clone_v))
                return fail(error, 400, "clone must be true or false");
        clone = json_is_true(clone_v);
        if (!json_object_get(body, "template")) {
                if (clone_v || json_object_get(body, "disks"))
                        return fail(error, 400, "\"clone\" and \"disks\" need a \"template\": {\"id\"}");
                if (!name_free(e, true, name, error))
                        return NULL;
                if (engine_store_vm_insert(e->db, vm, name, desc, "ok", NULL, NULL, engine_now(), NULL) < 0)
                        return fail(error, 409, "a VM named \"%s\" exists already", name);
                *ret_status = 201;
                {
                        g_autoptr(json_t) row = engine_store_vm_get(e->db, vm, error);
                        return g_steal_pointer(&row);     /* the new VM itself: the caller shows it */
                }
        }
        if (!(tmpl_id = ref_id(body, "template", error)) || !(tmpl = engine_template_get(e, tmpl_id, error)) ||
            !name_free(e, true, name, error))
                return NULL;
        if (strcmp(js(tmpl, "status"), "ok") != 0)
                return fail(error, 409, "template %s is %s; a VM can be made from it once it is ok", js(tmpl, "name"),
                            js(tmpl, "status"));
        disks = engine_owner_disks(e, false, tmpl_id);
        json_array_foreach(disks, i, disk)
                if (!engine_disk_usable(e, disk, error))
                        return NULL;
        if (!(choices = disk_choices(e, body, disks, "template", error)))
                return NULL;
        json_array_foreach(disks, i, disk) {
                g_autoptr(json_t) leaf = engine_disk_leaf(e, disk);
                struct disk_choice *c = g_hash_table_lookup(choices, js(disk, "id"));
                g_autofree char *img = fy_uuid_new();
                g_autofree char *vol = fy_uuid_new();
                gint64 cap = ji(leaf, "capacity");
                const char *format = "cow", *sd = js(disk, "sd_id");
                bool sparse = true;

                if (!clone && c && ((c->format && strcmp(c->format, "cow") != 0) || c->sparse == 0 ||
                                    (c->sd && strcmp(c->sd, sd) != 0)))
                        return fail(error, 400, "disk %s: a thin VM's disk is a sparse qcow2 layer on the template's volume, "
                                    "on the template disk's storage domain; pass \"clone\": true to choose format, "
                                    "allocation or storage domain", js(disk, "id"));
                if (clone) {
                        format = c && c->format ? c->format : js(disk, "format");
                        sparse = c && c->sparse >= 0 ? c->sparse : ji(disk, "sparse") != 0;
                        sd = c && c->sd ? c->sd : sd;
                        space_add(needed, sd, sparse ? ji(disk, "actual_size") : cap);
                }
                total += cap;
                json_array_append_new(plan, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:b}",
                                                      "template_disk", js(disk, "id"), "name", js(disk, "name"),
                                                      "src_sd", js(disk, "sd_id"), "src_img", js(disk, "id"),
                                                      "src_vol", js(leaf, "id"), "sd", sd, "img", img, "vol", vol,
                                                      "capacity", (json_int_t) cap, "format", format, "sparse", sparse));
        }
        if (!space_check(e, needed, error))
                return NULL;
        json_array_foreach(plan, i, d) {
                json_object_set_new(d, "structure_weight", json_real(STRUCTURE_WEIGHT / (double) json_array_size(plan)));
                json_object_set_new(d, "data_weight", json_real(DATA_WEIGHT * (double) ji(d, "capacity") / (double) MAX(total, 1)));
        }

        jdesc = g_strdup_printf("Creating VM %s from template %s (%s)", name, js(tmpl, "name"), clone ? "clone" : "thin");
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        if (!(job = engine_job_insert(e, jdesc, error)))
                goto rollback;
        if (engine_store_vm_insert(e->db, vm, name, desc, "locked", tmpl_id, job, engine_now(), error) < 0) {
                g_clear_error(error);
                fail(error, 409, "a VM named \"%s\" exists already", name);
                goto rollback;
        }
        json_array_foreach(plan, i, d)
                if (insert_disk(e, d, job, clone ? NULL : js(d, "src_vol"), vm, NULL, i == 0, error) < 0)
                        goto rollback;
        params = json_pack("{s:s, s:s, s:s, s:b, s:O}", "vm", vm, "name", name, "template", tmpl_id, "clone", clone,
                           "disks", plan);
        if (!(cmd = engine_job_command_start(e, ENGINE_KIND_CREATE_VM_FROM_TEMPLATE, job, params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        *ret_status = 202;
        return json_pack("{s:{s:s, s:s}, s:{s:s}}", "vm", "id", vm, "name", name, "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

/* Starts the removal of an owner's disks through the SPM; the flow deletes the rows. */
static json_t *owner_remove(struct engine *e, json_t *owner, bool vm, json_t *disks, GError **error)
{
        g_autoptr(json_t) plan = json_array();
        g_autoptr(json_t) params = NULL;
        g_autofree char *job = NULL;
        g_autofree char *cmd = NULL;
        g_autofree char *jdesc = g_strdup_printf("Removing %s %s and its %zu disk(s)", vm ? "VM" : "template",
                                                  js(owner, "name"), json_array_size(disks));
        size_t i;
        json_t *disk;

        json_array_foreach(disks, i, disk) {
                if (strcmp(js(disk, "status"), "locked") == 0)
                        return fail(error, 409, "disk %s (%s) is locked by a running operation (job %s)", js(disk, "name"),
                                    js(disk, "id"), js(disk, "job_id"));
                json_array_append_new(plan, json_pack("{s:s, s:s}", "img", js(disk, "id"), "sd", js(disk, "sd_id")));
        }
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        if (!(job = engine_job_insert(e, jdesc, error)))
                goto rollback;
        if (vm) {
                if (!engine_vm_lock(e, owner, job, error))
                        goto rollback;
        } else {
                int r = engine_store_template_lock(e->db, js(owner, "id"), job, error);

                if (r == -EBUSY)
                        fail(error, 409, "template %s changed meanwhile; try again", js(owner, "name"));
                if (r < 0)
                        goto rollback;
        }
        json_array_foreach(disks, i, disk)
                if (!engine_disk_lock(e, disk, job, error))
                        goto rollback;
        params = json_pack("{s:s, s:s, s:O}", vm ? "vm" : "template", js(owner, "id"), "name", js(owner, "name"),
                           "disks", plan);
        if (!(cmd = engine_job_command_start(e, vm ? ENGINE_KIND_REMOVE_VM : ENGINE_KIND_REMOVE_TEMPLATE, job, params,
                                             error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", jdesc);
        return json_pack("{s:{s:s}}", "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

json_t *engine_vm_remove(struct engine *e, const char *vm_id, bool detach_only, int *ret_status, GError **error)
{
        g_autoptr(json_t) vm = engine_vm_get(e, vm_id, error);
        g_autoptr(json_t) disks = NULL;

        if (!vm)
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        disks = engine_owner_disks(e, true, vm_id);
        if (!detach_only && json_array_size(disks) > 0) {
                *ret_status = 202;
                return owner_remove(e, vm, true, disks, error);
        }
        /* Nothing on storage changes: the disks stay, unattached. */
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        if (engine_store_vm_delete(e->db, vm_id, true, error) < 0) {
                engine_store_rollback(e->db);
                return NULL;
        }
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", NULL, "VM %s removed; its %zu disk(s) stay, detached", js(vm, "name"), json_array_size(disks));
        *ret_status = 200;
        return json_pack("{s:{s:s}, s:I}", "vm", "id", vm_id, "detached_disks", (json_int_t) json_array_size(disks));
}

/* Names of what is layered on the template's volumes (thin VMs, or their disks once detached), up to 10. */
static char *template_dependents(struct engine *e, const char *tmpl)
{
        g_autoptr(json_t) rows = engine_store_template_dependents(e->db, tmpl, 11, NULL);
        g_autoptr(GString) s = g_string_new(NULL);
        size_t i;
        json_t *row;

        if (!rows || json_array_size(rows) == 0)
                return rows ? NULL : g_strdup("(the inventory could not be read)");
        json_array_foreach(rows, i, row) {
                if (i == 10) {
                        g_string_append(s, ", …");
                        break;
                }
                g_string_append_printf(s, "%s%s", i ? ", " : "", js(row, "who"));
        }
        return g_string_free(g_steal_pointer(&s), FALSE);
}

json_t *engine_template_remove(struct engine *e, const char *tmpl_id, int *ret_status, GError **error)
{
        g_autoptr(json_t) tmpl = engine_template_get(e, tmpl_id, error);
        g_autoptr(json_t) disks = NULL;
        g_autofree char *users = NULL;

        if (!tmpl)
                return NULL;
        if (strcmp(js(tmpl, "status"), "locked") == 0)
                return fail(error, 409, "template %s is locked by a running operation (job %s)", js(tmpl, "name"),
                            js(tmpl, "job_id"));
        users = template_dependents(e, tmpl_id);
        if (users)
                return fail(error, 409, "template %s cannot be removed: thin VMs read its volumes: %s; remove them "
                            "(or move/copy their disks, which makes them independent) first", js(tmpl, "name"), users);
        disks = engine_owner_disks(e, false, tmpl_id);
        if (json_array_size(disks) == 0) {
                if (engine_store_template_delete(e->db, tmpl_id, error) < 0)
                        return NULL;
                *ret_status = 200;
                return json_pack("{s:{s:s}}", "template", "id", tmpl_id);
        }
        *ret_status = 202;
        return owner_remove(e, tmpl, false, disks, error);
}

static const char *const interfaces[] = { "virtio", "virtio_scsi", "ide", "sata", "spapr_vscsi", NULL };

json_t *engine_vm_disk_attach(struct engine *e, const char *vm_id, json_t *body, GError **error)
{
        g_autoptr(json_t) vm = engine_vm_get(e, vm_id, error);
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) att = NULL;
        gint64 count;
        json_t *bootable = json_object_get(body, "bootable");
        json_t *iface_v = json_object_get(body, "interface");
        const char *iface = iface_v ? json_string_value(iface_v) : "virtio_scsi";
        const char *disk_id;

        if (!vm || !(disk_id = ref_id(body, "disk", error)))
                return NULL;
        if (bootable && !json_is_boolean(bootable))
                return fail(error, 400, "bootable must be true or false");
        if (!iface || !g_strv_contains(interfaces, iface))
                return fail(error, 400, "interface must be one of virtio, virtio_scsi, ide, sata, spapr_vscsi");
        if (!(disk = row_by_id(e, engine_store_disk_get, "disk", disk_id, error)))
                return NULL;
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        att = engine_store_attachment_get(e->db, disk_id, NULL, NULL);
        if (att && js(att, "template_id"))
                return fail(error, 409, "disk %s belongs to template %s and cannot be attached to a VM; "
                            "create a VM from the template instead", js(disk, "name"), js(att, "template_name"));
        if (att)
                return fail(error, 409, "disk %s is attached to VM %s already; a disk belongs to at most one VM "
                            "(detach it there first)", js(disk, "name"), js(att, "vm_name"));
        if (strcmp(js(disk, "status"), "ok") != 0)
                return fail(error, 409, "disk %s is %s; only a disk that is ok can be attached", js(disk, "name"),
                            js(disk, "status"));
        if (engine_store_attachment_count(e->db, vm_id, &count, error) < 0)
                return NULL;
        if (count >= MAX_VM_DISKS)
                return fail(error, 409, "VM %s has %d disks, the most it may have", js(vm, "name"), MAX_VM_DISKS);
        if (engine_store_attachment_insert(e->db, disk_id, vm_id, NULL, json_is_true(bootable), iface, engine_now(),
                                           NULL) < 0)
                return fail(error, 409, "disk %s was attached elsewhere meanwhile", js(disk, "name"));
        att = engine_store_attachment_get(e->db, disk_id, vm_id, error);
        return g_steal_pointer(&att);
}

json_t *engine_vm_disk_detach(struct engine *e, const char *vm_id, const char *disk_id, GError **error)
{
        g_autoptr(json_t) vm = engine_vm_get(e, vm_id, error);
        g_autoptr(json_t) att = NULL;
        g_autoptr(json_t) disk = NULL;

        if (!vm)
                return NULL;
        att = fy_uuid_is_valid(disk_id) ? engine_store_attachment_get(e->db, disk_id, vm_id, NULL) : NULL;
        if (!att)
                return fail(error, 404, "disk %.64s is not attached to VM %s", disk_id, js(vm, "name"));
        disk = engine_store_disk_get(e->db, disk_id, NULL);
        if (strcmp(js(vm, "status"), "ok") != 0)
                return fail(error, 409, "VM %s is locked by a running operation (job %s)", js(vm, "name"), js(vm, "job_id"));
        if (disk && strcmp(js(disk, "status"), "locked") == 0)
                return fail(error, 409, "disk %s is locked by a running operation (job %s)", js(disk, "name"), js(disk, "job_id"));
        if (engine_store_attachment_delete(e->db, disk_id, vm_id, error) < 0)
                return NULL;
        return g_steal_pointer(&att);
}

json_t *engine_vm_attachment(struct engine *e, const char *vm_id, const char *disk_id, GError **error)
{
        g_autoptr(json_t) vm = engine_vm_get(e, vm_id, error);
        json_t *att;

        if (!vm)
                return NULL;
        att = fy_uuid_is_valid(disk_id) ? engine_store_attachment_get(e->db, disk_id, vm_id, NULL) : NULL;
        if (!att)
                return fail(error, 404, "disk %.64s is not attached to VM %s", disk_id, js(vm, "name"));
        return att;
}

/*
 * Disk actions that would break a VM or a template: a template's disk is
 * removed with its template and never moved (thin VMs' layers are linked to
 * its volume on that domain; copying it is fine); an attached disk is
 * removed through its VM or after a detach, so no VM loses a disk by accident.
 */
int engine_disk_owner_check(struct engine *e, const char *disk_id, bool remove, GError **error)
{
        g_autoptr(json_t) att = NULL;

        if (!fy_uuid_is_valid(disk_id))
                return 0;
        att = engine_store_attachment_get(e->db, disk_id, NULL, NULL);
        if (!att)
                return 0;
        if (js(att, "template_id") && remove)
                fail(error, 409, "disk %s belongs to template %s; remove the template (DELETE /api/templates/%s)",
                     disk_id, js(att, "template_name"), js(att, "template_id"));
        else if (js(att, "template_id"))
                fail(error, 409, "disk %s belongs to template %s and stays on its storage domain (thin VMs "
                     "are layered on it there); copy it instead (POST /api/disks/%s/copy)",
                     disk_id, js(att, "template_name"), disk_id);
        else if (remove)
                fail(error, 409, "disk %s is attached to VM %s; detach it first (DELETE /api/vms/%s/diskattachments/%s) "
                     "or remove the VM with its disks (DELETE /api/vms/%s)", disk_id, js(att, "vm_name"),
                     js(att, "vm_id"), disk_id, js(att, "vm_id"));
        else
                return 0;      /* moving a VM's disk is fine */
        return -EBUSY;
}
