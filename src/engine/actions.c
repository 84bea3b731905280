/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the disk actions start. Each validates everything it can first
 * (ids, sizes, state, free space, what the disk's VM or template allows),
 * then in one transaction locks the disk, records the job, its first rows
 * and the top-level command; the coordinator does the rest. Nothing is
 * called on a host from here.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "actions.h"
#include "clock.h"
#include "commands.h"
#include "events.h"
#include "inventory.h"
#include "vm_actions.h"
#include "error.h"
#include "uuid.h"

#define MAX_VOLUMES 16
#define MAX_DISK_SIZE (64ull << 40)
#define STRUCTURE_WEIGHT 10.0
#define DATA_WEIGHT 90.0

#define js engine_js

#define fail engine_fail

/* {"id": …} in body[key] naming a known storage domain; returns its row. */
static json_t *body_sd(struct engine *e, json_t *body, const char *key, GError **error)
{
        json_t *ref = json_object_get(body, key);
        const char *id = js(ref, "id");
        const char *name = js(ref, "name");
        json_t *row;

        if (!json_is_object(ref) || (!id && !name))
                return fail(error, 400, "missing %s: {\"id\": \"<uuid>\"} or {\"name\": \"...\"}", key);
        if (id && !fy_uuid_is_valid(id))
                return fail(error, 400, "%s.id must be a UUID", key);
        row = id ? engine_store_sd_get(e->db, id, error) : engine_store_sd_get_by_name(e->db, name, error);
        if (!row && (!error || !*error))
                return fail(error, 404, "no storage domain %s", id ? id : name);
        return row;
}

static json_t *job_start(struct engine *e, const char *description, GError **error)
{
        g_autofree char *id = engine_job_insert(e, description, error);

        return id ? json_string(id) : NULL;
}

/* Space the copy needs on the destination: capacity when preallocated, else what the source uses. */
static int check_space(struct engine *e, json_t *sd, gint64 needed, GError **error)
{
        json_t *free_ = json_object_get(sd, "free");

        if (!json_is_integer(free_))
                return 0;      /* not measured yet: the hosts will report ENOSPC if it comes to that */
        if (json_integer_value(free_) < needed) {
                g_set_error(error, ENGINE_ERROR, 507,
                            "storage domain %s has %" JSON_INTEGER_FORMAT " bytes free, %" G_GINT64_FORMAT " are needed",
                            js(sd, "name"), json_integer_value(free_), needed);
                return -ENOSPC;
        }
        return 0;
}

/* A volume file of capacity bytes must fit the domain's filesystem (ext4: 16 TiB), or it fails on the host later. */
static int check_file_size(struct engine *e, json_t *sd, gint64 capacity, GError **error)
{
        const gint64 *max = g_hash_table_lookup(e->sd_max_file, js(sd, "id"));

        if (!max || capacity <= *max)
                return 0;      /* not measured yet: the host refuses if it comes to that */
        g_set_error(error, ENGINE_ERROR, 400,
                    "a disk of %" G_GINT64_FORMAT " bytes does not fit storage domain %s: its filesystem holds files "
                    "of at most %" G_GINT64_FORMAT " bytes", capacity, js(sd, "name"), *max);
        return -EFBIG;
}

/* An active removal of this image on that domain (a cleanup still retrying): a move there would reuse its ids. */
static bool pending_removal(struct engine *e, const char *sd, const char *img)
{
        bool pending = false;

        /* Cannot tell: not pending (the removal refuses an image in use anyway). */
        if (engine_store_cmd_removal_pending(e->db, sd, img, &pending, NULL) < 0)
                return false;
        return pending;
}

static json_t *volume_spec(const char *id, const char *parent, gint64 capacity, const char *format, bool sparse,
                           double structure_weight, double data_weight)
{
        return json_pack("{s:s, s:s?, s:I, s:s, s:b, s:f, s:f}", "id", id, "parent", parent, "capacity",
                         (json_int_t) capacity, "format", format, "sparse", sparse,
                         "structure_weight", structure_weight, "data_weight", data_weight);
}

/* The disk a request names, or NULL with 404 (or the store's error); with idle, 409 unless it is ok. */
static json_t *disk_by_id(struct engine *e, const char *disk_id, bool idle, GError **error)
{
        json_t *disk;

        if (!fy_uuid_is_valid(disk_id))
                return fail(error, 404, "no disk %.64s", disk_id);
        disk = engine_store_disk_get(e->db, disk_id, error);
        if (!disk)
                return (error && *error) ? NULL : fail(error, 404, "no disk %s", disk_id);
        if (idle && strcmp(js(disk, "status"), "ok") != 0) {
                fail(error, 409, "disk %s is %s; wait until its current operation ends", js(disk, "name"),
                     js(disk, "status"));
                json_decref(disk);
                return NULL;
        }
        return disk;
}

json_t *engine_disk_create(struct engine *e, json_t *body, GError **error)
{
        g_autoptr(json_t) sd = NULL;
        g_autoptr(json_t) job = NULL;
        g_autoptr(json_t) params = NULL;
        g_autoptr(json_t) vols = json_array();
        g_autofree char *disk = fy_uuid_new();
        g_autofree char *cmd = NULL;
        g_autofree char *desc = NULL;
        const char *name = js(body, "name");
        const char *format = js(body, "format") ? js(body, "format") : "raw";
        json_t *size = json_object_get(body, "provisioned_size");
        json_t *sparse_v = json_object_get(body, "sparse");
        json_t *nvol_v = json_object_get(body, "volumes");
        gint64 capacity, nvol = 1;
        bool sparse = true;
        const char *parent = NULL;

        if (!engine_name_valid(name))
                return fail(error, 400, "name must be 1-64 letters, digits, spaces or _-. characters");
        if (!json_is_integer(size) || json_integer_value(size) <= 0 || (guint64) json_integer_value(size) > MAX_DISK_SIZE ||
            json_integer_value(size) % 512 != 0)
                return fail(error, 400, "provisioned_size must be a positive multiple of 512 bytes up to 64 TiB");
        capacity = json_integer_value(size);
        if (strcmp(format, "raw") != 0 && strcmp(format, "cow") != 0)
                return fail(error, 400, "format must be raw or cow");
        if (sparse_v && !json_is_boolean(sparse_v))
                return fail(error, 400, "sparse must be true or false");
        if (sparse_v)
                sparse = json_is_true(sparse_v);
        if (nvol_v && (!json_is_integer(nvol_v) || json_integer_value(nvol_v) < 1 ||
                       json_integer_value(nvol_v) > MAX_VOLUMES))
                return fail(error, 400, "volumes must be 1-%d", MAX_VOLUMES);
        if (nvol_v)
                nvol = json_integer_value(nvol_v);
        if (nvol > 1 && strcmp(format, "cow") != 0)
                return fail(error, 400, "a chain of volumes needs format cow");
        sd = body_sd(e, body, "storage_domain", error);
        if (!sd)
                return NULL;
        if (check_file_size(e, sd, capacity, error) < 0 || check_space(e, sd, sparse ? 0 : capacity * nvol, error) < 0)
                return NULL;

        for (gint64 i = 0; i < nvol; i++) {
                g_autofree char *vid = fy_uuid_new();

                json_array_append_new(vols, volume_spec(vid, parent, capacity, format,
                                                        i == 0 ? sparse : true, 100.0 / (double) nvol, 0));
                parent = js(json_array_get(vols, (size_t) i), "id");
        }
        desc = g_strdup_printf("Creating disk %s on storage domain %s", name, js(sd, "name"));
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        job = job_start(e, desc, error);
        if (!job)
                goto rollback;
        if (engine_store_disk_insert(e->db, disk, name, js(sd, "id"), format, sparse, capacity, json_string_value(job),
                                     engine_now(), error) < 0)
                goto rollback;
        for (size_t i = 0; i < json_array_size(vols); i++) {
                json_t *v = json_array_get(vols, i);

                if (engine_store_volume_insert(e->db, js(v, "id"), disk, js(sd, "id"), js(v, "parent"), (gint64) i, format,
                                               json_is_true(json_object_get(v, "sparse")), capacity, error) < 0)
                        goto rollback;
        }
        params = json_pack("{s:s, s:s, s:s, s:O}", "disk", disk, "sd", js(sd, "id"), "img", disk, "volumes", vols);
        if (!(cmd = engine_job_command_start(e, ENGINE_KIND_CREATE_DISK, json_string_value(job), params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "creating disk %s (%s) on %s", name, disk, js(sd, "name"));
        return json_pack("{s:{s:s, s:s}, s:{s:O}}", "disk", "id", disk, "name", name, "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

json_t *engine_disk_move(struct engine *e, const char *disk_id, json_t *body, bool keep_source, GError **error)
{
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) sd = NULL;
        g_autoptr(json_t) src_vols = NULL;
        g_autoptr(json_t) job = NULL;
        g_autoptr(json_t) params = NULL;
        g_autoptr(json_t) dst_vols = json_array();
        g_autoptr(json_t) src_list = json_array();
        g_autoptr(GHashTable) id_map = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *new_disk = NULL;
        g_autofree char *desc = NULL;
        g_autofree char *cmd = NULL;
        const char *new_name = js(body, "name");
        gint64 total_cap = 0, needed = 0;
        size_t i;
        json_t *v;

        if (!fy_uuid_is_valid(disk_id))
                return fail(error, 404, "no disk %.64s", disk_id);
        if (!keep_source && engine_disk_owner_check(e, disk_id, false, error) < 0)
                return NULL;
        disk = disk_by_id(e, disk_id, false, error);
        if (!disk)
                return NULL;
        sd = body_sd(e, body, "storage_domain", error);
        if (!sd)
                return NULL;
        if (strcmp(js(disk, "status"), "ok") != 0)
                return fail(error, 409, "disk %s is %s; wait until its current operation ends", js(disk, "name"),
                            js(disk, "status"));
        if (!keep_source && strcmp(js(disk, "sd_id"), js(sd, "id")) == 0)
                return fail(error, 409, "disk %s is already on storage domain %s", js(disk, "name"), js(sd, "name"));
        if (new_name && !engine_name_valid(new_name))
                return fail(error, 400, "name must be 1-64 letters, digits, spaces or _-. characters");
        if (!keep_source && pending_removal(e, js(sd, "id"), disk_id))
                return fail(error, 409, "an earlier copy of disk %s on storage domain %s is still being removed; "
                            "try again when that removal has finished (see the events)", js(disk, "name"), js(sd, "name"));
        src_vols = engine_store_volume_list(e->db, disk_id, js(disk, "sd_id"), error);
        if (!src_vols)
                return NULL;
        if (json_array_size(src_vols) == 0)
                return fail(error, 409, "disk %s has no volumes", js(disk, "name"));
        json_array_foreach(src_vols, i, v) {
                total_cap += json_integer_value(json_object_get(v, "capacity"));
                if (check_file_size(e, sd, json_integer_value(json_object_get(v, "capacity")), error) < 0)
                        return NULL;
        }
        needed = json_integer_value(json_object_get(disk, "sparse")) ? json_integer_value(json_object_get(disk, "actual_size"))
                                                                      : total_cap;
        if (check_space(e, sd, needed, error) < 0)
                return NULL;

        /* A copy is a new disk: new image and volume ids; a move keeps them. */
        new_disk = keep_source ? fy_uuid_new() : NULL;
        json_array_foreach(src_vols, i, v) {
                const char *vid = js(v, "id");
                const char *parent = js(v, "parent");
                char *nid = keep_source ? fy_uuid_new() : g_strdup(vid);
                gint64 cap = json_integer_value(json_object_get(v, "capacity"));

                g_hash_table_insert(id_map, g_strdup(vid), nid);
                json_t *spec = volume_spec(nid, parent ? g_hash_table_lookup(id_map, parent) : NULL, cap,
                                           js(v, "format"), json_integer_value(json_object_get(v, "sparse")) != 0,
                                           STRUCTURE_WEIGHT / (double) json_array_size(src_vols),
                                           DATA_WEIGHT * (double) cap / (double) MAX(total_cap, 1));

                /* Bytes to move, for the scheduler: the disk's allocation split by capacity (sparse), else all. */
                json_object_set_new(spec, "bytes", json_integer((json_int_t) ((double) needed * (double) cap /
                                                                              (double) MAX(total_cap, 1))));
                json_array_append_new(dst_vols, spec);
                json_array_append_new(src_list, json_pack("{s:s}", "id", vid));
        }

        desc = g_strdup_printf("%s disk %s to storage domain %s", keep_source ? "Copying" : "Moving",
                               js(disk, "name"), js(sd, "name"));
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        job = job_start(e, desc, error);
        if (!job)
                goto rollback;
        /* The source is locked for both: its data must not change while it is read. The status it was
         * read in is the one it must still have: another operation may have locked it meanwhile. */
        if (engine_store_disk_lock(e->db, disk_id, json_string_value(job), "ok", error) < 0) {
                if (!error || !*error)
                        fail(error, 409, "disk %s changed meanwhile; try again", js(disk, "name"));
                goto rollback;
        }
        if (keep_source) {
                g_autofree char *name = g_strdup(new_name ? new_name : js(disk, "name"));

                if (engine_store_disk_insert(e->db, new_disk, name, js(sd, "id"), js(disk, "format"),
                                             json_integer_value(json_object_get(disk, "sparse")) != 0,
                                             (gint64) json_integer_value(json_object_get(disk, "provisioned_size")),
                                             json_string_value(job), engine_now(), error) < 0)
                        goto rollback;
        }
        json_array_foreach(dst_vols, i, v)
                if (engine_store_volume_insert(e->db, js(v, "id"), keep_source ? new_disk : disk_id, js(sd, "id"),
                                               js(v, "parent"), (gint64) i, js(v, "format"),
                                               json_is_true(json_object_get(v, "sparse")),
                                               (gint64) json_integer_value(json_object_get(v, "capacity")), error) < 0)
                        goto rollback;
        params = json_pack("{s:s, s:s?, s:s, s:s, s:s, s:s, s:O, s:O}",
                           "disk", disk_id, "new_disk", new_disk,
                           "src_sd", js(disk, "sd_id"), "src_img", disk_id,
                           "sd", js(sd, "id"), "img", keep_source ? new_disk : disk_id,
                           "src_volumes", src_list, "volumes", dst_vols);
        if (!(cmd = engine_job_command_start(e, keep_source ? ENGINE_KIND_COPY_DISK : ENGINE_KIND_MOVE_DISK, json_string_value(job),
                                  params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", desc);
        if (keep_source)
                return json_pack("{s:{s:O}, s:{s:s}}", "job", "id", job, "disk", "id", new_disk);
        return json_pack("{s:{s:O}}", "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

json_t *engine_disk_checksum(struct engine *e, const char *disk_id, GError **error)
{
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) vols = NULL;
        g_autoptr(json_t) job = NULL;
        g_autoptr(json_t) params = NULL;
        g_autofree char *desc = NULL;
        g_autofree char *step = NULL;
        g_autofree char *cmd = NULL;
        json_t *leaf;

        /* Not locked: a checksum writes nothing. The volume's generation is sent with it, so a
         * write that starts meanwhile (a move, an upload) fails the checksum instead of mixing. */
        disk = disk_by_id(e, disk_id, true, error);
        if (!disk)
                return NULL;
        vols = engine_store_volume_list(e->db, disk_id, js(disk, "sd_id"), error);
        if (!vols)
                return NULL;
        leaf = json_array_get(vols, json_array_size(vols) - 1);
        if (!leaf)
                return fail(error, 409, "disk %s has no volumes", js(disk, "name"));
        desc = g_strdup_printf("Checksum of disk %s", js(disk, "name"));
        params = json_pack("{s:s, s:s, s:s, s:I}", "sd", js(disk, "sd_id"), "img", disk_id, "vol", js(leaf, "id"),
                           "generation", (json_int_t) json_integer_value(json_object_get(leaf, "generation")));
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        job = job_start(e, desc, error);
        if (!job)
                goto rollback;
        step = engine_step_create(e, json_string_value(job), "checksum_volume",
                                  "Checksum of the active volume (blake2b of the guest view)", 100);
        cmd = engine_cmd_create(e, ENGINE_KIND_CHECKSUM_VOLUME, NULL, json_string_value(job), step, params);
        if (engine_store_job_set_command(e->db, json_string_value(job), cmd, error) < 0)
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        engine_event(e, "normal", cmd, "%s", desc);
        return json_pack("{s:{s:O}}", "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

json_t *engine_disk_remove(struct engine *e, const char *disk_id, GError **error)
{
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) job = NULL;
        g_autoptr(json_t) params = NULL;
        g_autofree char *desc = NULL;
        g_autofree char *cmd = NULL;

        if (!fy_uuid_is_valid(disk_id))
                return fail(error, 404, "no disk %.64s", disk_id);
        if (engine_disk_owner_check(e, disk_id, true, error) < 0)
                return NULL;
        disk = disk_by_id(e, disk_id, false, error);
        if (!disk)
                return NULL;
        if (strcmp(js(disk, "status"), "locked") == 0)
                return fail(error, 409, "disk %s is locked by a running operation", js(disk, "name"));
        desc = g_strdup_printf("Removing disk %s", js(disk, "name"));
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        job = job_start(e, desc, error);
        if (!job)
                goto rollback;
        if (engine_store_disk_lock(e->db, disk_id, json_string_value(job), js(disk, "status"), error) < 0) {
                if (!error || !*error)
                        fail(error, 409, "disk %s changed meanwhile; try again", js(disk, "name"));
                goto rollback;
        }
        params = json_pack("{s:s, s:s, s:s}", "disk", disk_id, "sd", js(disk, "sd_id"), "img", disk_id);
        if (!(cmd = engine_job_command_start(e, ENGINE_KIND_REMOVE_DISK, json_string_value(job), params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        return json_pack("{s:{s:O}}", "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}

json_t *engine_disk_sparsify(struct engine *e, const char *disk_id, GError **error)
{
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) vols = NULL;
        g_autoptr(json_t) sparse = json_array();
        g_autoptr(json_t) job = NULL;
        g_autoptr(json_t) params = NULL;
        g_autofree char *desc = NULL;
        g_autofree char *cmd = NULL;
        size_t i;
        json_t *v;

        disk = disk_by_id(e, disk_id, true, error);
        if (!disk)
                return NULL;
        vols = engine_disk_volumes(e, disk);
        json_array_foreach(vols, i, v) {
                if (strcmp(js(v, "legality"), "LEGAL") != 0)
                        return fail(error, 409, "disk %s: volume %s is %s", js(disk, "name"), js(v, "id"),
                                    js(v, "legality"));
                /* A PREALLOCATED volume keeps its blocks by definition: never sent. */
                if (json_is_true(json_object_get(v, "sparse")) || json_integer_value(json_object_get(v, "sparse")) == 1)
                        json_array_append_new(sparse, json_pack("{s:s, s:I}", "id", js(v, "id"), "capacity",
                                                                json_integer_value(json_object_get(v, "capacity"))));
        }
        if (json_array_size(sparse) == 0)
                return fail(error, 409, "disk %s is preallocated: it has no sparse volume to give space back from",
                            js(disk, "name"));
        desc = g_strdup_printf("Sparsifying disk %s (%zu volume(s))", js(disk, "name"), json_array_size(sparse));
        if (engine_store_begin(e->db, error) < 0)
                return NULL;
        job = job_start(e, desc, error);
        if (!job)
                goto rollback;
        if (engine_store_disk_lock(e->db, disk_id, json_string_value(job), "ok", error) < 0) {
                if (!error || !*error)
                        fail(error, 409, "disk %s changed meanwhile; try again", js(disk, "name"));
                goto rollback;
        }
        params = json_pack("{s:s, s:s, s:O}", "disk", disk_id, "sd", js(disk, "sd_id"), "volumes", sparse);
        if (!(cmd = engine_job_command_start(e, ENGINE_KIND_SPARSIFY_DISK, json_string_value(job), params, error)))
                goto rollback;
        if (engine_store_commit(e->db, error) < 0)
                return NULL;
        return json_pack("{s:{s:O}}", "job", "id", job);
rollback:
        engine_store_rollback(e->db);
        return NULL;
}
