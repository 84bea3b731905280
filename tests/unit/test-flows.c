/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Every flow of the engine, in process, against the scripted agents of
 * hostdouble.c, on the real store (SQLite in a temporary directory).
 *
 * An engine "life" runs in a child process: its runtime (the command
 * runtime's in-memory tables, the leaves' poll times, the scheduler's
 * picks …) is exactly what a crash loses, and a fresh process rebuilds it
 * from the store as ferry-engine does at start. Each case:
 *
 *   setup life      hosts, two storage domains, what the flow needs (a disk,
 *                   a VM …); the store is closed, the double's model saved.
 *   reference life  the flow, from its action (as REST would call it) to the
 *                   end of every command; at each commit that changed more
 *                   than host and domain statistics it saves a crash image:
 *                   the committed database (VACUUM INTO from a second
 *                   connection) and the double's model at that instant.
 *   crash lives     one per image: the engine starts on it (the hosts kept
 *                   what they had done, replies in flight are lost) and runs
 *                   to the end; a crash before the action committed is a
 *                   client that never got its answer: it asks again.
 *
 * Every life checks "write before act": the double asks a second
 * connection whether each job it is sent (Volume.create, SDM.copy_data,
 * Image.delete, …) is already in a committed row, so a call the store did
 * not record first is found at the step that makes it. The end of every
 * crash life must equal the reference's (jobs, disks, VMs, templates,
 * snapshots, what storage holds, and the inventory agreeing with storage).
 *
 * FLOWS_VERBOSE=1 shows the engine's log; FLOWS_CRASH_STRIDE=n takes every
 * n-th crash point only (default 1: all of them); FLOWS_KNOWN_BUGS=1 runs
 * the cases that show a known bug (skipped otherwise, saying which).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <sqlite3.h>

#include "actions.h"
#include "clock.h"
#include "commands.h"
#include "flows/flows.h"
#include "hostdouble.h"
#include "hosts.h"
#include "snapshot_actions.h"
#include "vm_actions.h"
#include "uuid.h"

#define MAX_ROUNDS 20000
#define MIB (1024 * 1024)

struct life {
        struct engine e;
        struct hd *d;
        sqlite3 *ro;                   /* a second connection: what is committed */
        char *dir;
        char *name;                    /* <dir>/<name>.db, <name>.json */
        guint64 commits;               /* commits that changed more than statistics */
        guint64 images_taken;          /* crash images: commits that left a state not seen before */
        GHashTable *seen;              /* digests of the states imaged */
        bool dirty;                    /* this transaction changed more than statistics */
        char *last_state;              /* state_digest after the last round: time passes when it stays */
        bool images;                   /* a crash image at each such commit */
};

/* ---- the reader connection ---- */

static char *q_str(struct life *l, const char *sql, const char *arg)
{
        sqlite3_stmt *st = NULL;
        char *out = NULL;

        g_assert_cmpint(sqlite3_prepare_v2(l->ro, sql, -1, &st, NULL), ==, SQLITE_OK);
        if (arg)
                sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                out = g_strdup((const char *) sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return out;
}

static gint64 q_int(struct life *l, const char *sql, const char *arg)
{
        g_autofree char *s = q_str(l, sql, arg);

        return s ? g_ascii_strtoll(s, NULL, 10) : 0;
}

/* Each row's columns joined by spaces, in the query's order. */
static json_t *q_rows(struct life *l, const char *sql)
{
        sqlite3_stmt *st = NULL;
        json_t *out = json_array();

        g_assert_cmpint(sqlite3_prepare_v2(l->ro, sql, -1, &st, NULL), ==, SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
                GString *s = g_string_new(NULL);

                for (int i = 0; i < sqlite3_column_count(st); i++)
                        g_string_append_printf(s, "%s%s", i ? " " : "",
                                               sqlite3_column_text(st, i) ? (const char *) sqlite3_column_text(st, i) : "-");
                json_array_append_new(out, json_string(s->str));
                g_string_free(s, TRUE);
        }
        sqlite3_finalize(st);
        return out;
}

static bool job_recorded(void *data, const char *job)
{
        struct life *l = data;

        return q_int(l, "SELECT count(*) FROM commands WHERE agent_job_id = ?1 OR instr(data, ?1) > 0", job) > 0;
}

/* ---- a life ---- */

static char *path_of(const char *dir, const char *name, const char *ext)
{
        g_autofree char *file = g_strconcat(name, ext, NULL);

        return g_build_filename(dir, file, NULL);
}

static void on_change(void *data, const char *table)
{
        struct life *l = data;

        /* Statistics come every round: their commits are no crash points. */
        if (strcmp(table, "hosts") != 0 && strcmp(table, "storage_domains") != 0)
                l->dirty = true;

}

/*
 * What a restart resumes from: the commands (without their clocks), the
 * inventory, and what the hosts hold. A commit that only moved a step's
 * progress or a time leaves the same digest: crashing there again is the
 * same test.
 */
static char *state_digest(struct life *l)
{
        static const char *const queries[] = {
                "SELECT id, type, state, phase, data, host, agent_job_id, generation, attempts, cancel FROM commands ORDER BY id",
                "SELECT id, status, sd_id FROM disks ORDER BY id",
                "SELECT id, sd_id, parent, legality, generation FROM volumes ORDER BY id, sd_id",
                "SELECT id, status FROM vms ORDER BY id",
                "SELECT id, status FROM templates ORDER BY id",
                "SELECT id, status, disks FROM snapshots ORDER BY id",
                "SELECT disk_id, vm_id, template_id FROM disk_attachments ORDER BY disk_id",
                "SELECT id, status FROM jobs ORDER BY id",
        };
        g_autoptr(json_t) model = json_deep_copy(hd_model(l->d));
        g_autoptr(json_t) all = json_array();
        g_autofree char *text = NULL;

        for (size_t i = 0; i < G_N_ELEMENTS(queries); i++)
                json_array_append_new(all, q_rows(l, queries[i]));
        json_object_del(model, "calls");
        json_array_append(all, model);
        text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
        return g_compute_checksum_for_string(G_CHECKSUM_SHA256, text, -1);
}

static void on_commit(void *data)
{
        struct life *l = data;
        g_autofree char *db = NULL;
        g_autofree char *model = NULL;
        char *sql = NULL;
        char *err = NULL;

        if (!l->dirty)
                return;
        l->dirty = false;
        l->commits++;
        if (!l->images)
                return;
        {
                char *digest = state_digest(l);

                if (!g_hash_table_add(l->seen, digest))
                        return;        /* the same decisions and storage as an earlier crash point */
        }
        l->images_taken++;
        db = g_strdup_printf("%s/crash-%" G_GUINT64_FORMAT ".db", l->dir, l->images_taken);
        model = g_strdup_printf("%s/crash-%" G_GUINT64_FORMAT ".json", l->dir, l->images_taken);
        sql = sqlite3_mprintf("VACUUM INTO %Q", db);
        if (sqlite3_exec(l->ro, sql, NULL, NULL, &err) != SQLITE_OK)
                g_error("crash image %s: %s", db, err);
        sqlite3_free(sql);
        g_assert_cmpint(json_dump_file(hd_model(l->d), model, JSON_COMPACT), ==, 0);
}

static void ensure_datacenter(struct engine *e)
{
        g_autoptr(json_t) dc = engine_store_dc_first(e->db, NULL);
        g_autofree char *pool = fy_uuid_new();

        if (!dc) {
                e->dc_id = fy_uuid_new();
                g_assert_cmpint(engine_store_dc_insert(e->db, e->dc_id, "Default", pool, NULL), ==, 0);
        } else {
                e->dc_id = g_strdup(json_string_value(json_object_get(dc, "id")));
        }
}

/* Starts an engine on <dir>/<name>.db with the hosts of <name>.json (new ones when absent). */
static bool slicing;            /* this life's rounds advance one command per call (engine_commands_tick) */

static void life_open(struct life *l, const char *dir, const char *name)
{
        g_autofree char *db = path_of(dir, name, ".db");
        g_autofree char *model_path = path_of(dir, name, ".json");
        g_autoptr(GError) error = NULL;
        struct engine_config *c = &l->e.config;
        json_t *model = NULL;

        l->dir = g_strdup(dir);
        l->name = g_strdup(name);
        if (g_file_test(model_path, G_FILE_TEST_EXISTS))
                g_assert_nonnull((model = json_load_file(model_path, 0, NULL)));
        *c = (struct engine_config) {
                .db = g_strdup(db), .insecure = true, .agent_insecure = true, .poll_interval = 0,
                .host_timeout = 1000, .host_failures = 3, .data_operations_by_hsm = true,
                .host_selection_policy = g_strdup("least_loaded"), .copy_attempts = 3, .verify_copies = true,
                .max_parallel_copies = 4, .host_lost_timeout = 60, .fence_timeout = 900, .stall_timeout = 3600,
                .stall_action = g_strdup("none"), .sweep_interval = 0,
        };
        g_assert_cmpint(engine_store_open(db, &l->e.db, &error), ==, 0);
        l->e.active = true;    /* as engine_leader_init makes an engine on SQLite: the rounds stop when it is not */
        ensure_datacenter(&l->e);
        l->d = hd_new(model);
        l->e.transport = hd_transport(l->d);
        l->e.round_slice_max = slicing ? 1 : 0;
        hd_attach(l->d, &l->e, job_recorded, l);
        g_assert_cmpint(sqlite3_open_v2(db, &l->ro, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
        sqlite3_busy_timeout(l->ro, 5000);
        g_assert_cmpint(engine_hosts_init(&l->e, &error), ==, 0);
        g_assert_cmpint(engine_commands_init(&l->e, &error), ==, 0);
        engine_flows_init();
        engine_store_set_change_fn(l->e.db, on_change, l);
        engine_store_set_commit_fn(l->e.db, on_commit, l);
}

/* One coordinator round, as main.c's tick and the kicks run them; true if it recorded a decision. */
static bool life_round(struct life *l, unsigned round)
{
        g_autofree char *state = NULL;

        hd_tick(l->d);
        if (round % 4 == 0)
                engine_hosts_tick(&l->e);
        engine_commands_tick(&l->e);
        /* Bounded: a command that asks its host again at each answer would keep the loop busy for ever. */
        for (int i = 0; i < 64 && g_main_context_iteration(NULL, FALSE); i++)
                ;
        /* Composites write their row back every round: what counts is whether a decision changed. */
        state = state_digest(l);
        if (g_strcmp0(state, l->last_state) == 0)
                return false;
        g_free(l->last_state);
        l->last_state = g_steal_pointer(&state);
        return true;
}

/* Rounds until done; when nothing moves, time passes (backoffs, next_try) in 5 s steps. */
static void life_run(struct life *l, bool (*done)(struct life *), const char *what)
{
        unsigned idle = 0;
        gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;

        for (unsigned round = 0; round < MAX_ROUNDS && g_get_monotonic_time() < deadline; round++) {
                if (round % 4 == 1 && done(l))
                        return;
                if (life_round(l, round))
                        idle = 0;
                else if (++idle >= 8) {
                        engine_clock_step_for_test(5);
                        idle = 0;
                }
        }
        g_error("%s: not reached after %d rounds or 30 s (engine time %+" G_GINT64_FORMAT " s)", what, MAX_ROUNDS,
                engine_now() - g_get_real_time() / G_USEC_PER_SEC);
}

static bool hosts_ready(struct life *l)
{
        /* Every host the double has not killed. */
        gint64 alive = 3 - (gint64) json_object_size(json_object_get(hd_model(l->d), "down"));

        return q_int(l, "SELECT count(*) FROM hosts WHERE status = 'up' AND (pool_connected = 1 OR "
                        "(SELECT count(*) FROM storage_domains) = 0)", NULL) == alive &&
               q_int(l, "SELECT count(*) FROM datacenters WHERE spm_host IS NOT NULL", NULL) == 1;
}

static bool hosts_up(struct life *l)
{
        return q_int(l, "SELECT count(*) FROM hosts WHERE status = 'up'", NULL) == 3;
}

/* Every job ended and every command too (detached cleanups included). */
static bool all_ended(struct life *l)
{
        return hosts_ready(l) && q_int(l, "SELECT count(*) FROM jobs WHERE status = 'started'", NULL) == 0 &&
               q_int(l, "SELECT count(*) FROM commands WHERE state = 'active'", NULL) == 0 && hd_pending(l->d) == 0;
}

/* ---- what a flow ends with ---- */

static gint str_cmp(gconstpointer a, gconstpointer b)
{
        return g_strcmp0(*(char *const *) a, *(char *const *) b);
}

/* Storage as the double holds it, per domain name: images, and each volume's format, type and legality. */
static json_t *storage_summary(struct life *l)
{
        json_t *m = hd_model(l->d);
        json_t *out = json_object();
        const char *sd, *k;
        json_t *row, *v;

        json_object_foreach(json_object_get(m, "sds"), sd, row) {
                g_autoptr(GHashTable) imgs = g_hash_table_new(g_str_hash, g_str_equal);
                g_autoptr(GPtrArray) vols = g_ptr_array_new_with_free_func(g_free);
                json_t *list = json_array();

                json_object_foreach(json_object_get(m, "vols"), k, v) {
                        if (strcmp(json_string_value(json_object_get(v, "sd")), sd) != 0)
                                continue;
                        g_hash_table_add(imgs, (gpointer) json_string_value(json_object_get(v, "img")));
                        g_ptr_array_add(vols, g_strdup_printf("%s/%s/%s", json_string_value(json_object_get(v, "format")),
                                                              json_string_value(json_object_get(v, "voltype")),
                                                              json_string_value(json_object_get(v, "legality"))));
                }
                g_ptr_array_sort(vols, str_cmp);
                for (guint i = 0; i < vols->len; i++)
                        json_array_append_new(list, json_string(vols->pdata[i]));
                json_object_set_new(out, json_string_value(json_object_get(row, "name")),
                                    json_pack("{s:i, s:o}", "images", g_hash_table_size(imgs), "volumes", list));
        }
        return out;
}

/* Inventory volumes that storage does not hold as recorded (parent, legality, generation). */
static json_t *mismatches(struct life *l)
{
        g_autoptr(json_t) rows = q_rows(l, "SELECT sd_id, id, coalesce(parent, '" FY_ZERO_UUID "'), legality, generation "
                                           "FROM volumes ORDER BY id");
        json_t *out = json_array();
        size_t i;
        json_t *r;

        json_array_foreach(rows, i, r) {
                g_auto(GStrv) f = g_strsplit(json_string_value(r), " ", 5);
                g_autofree char *key = g_strdup_printf("%s/%s", f[0], f[1]);
                json_t *v = json_object_get(json_object_get(hd_model(l->d), "vols"), key);
                g_autofree char *have = v ? g_strdup_printf("%s %s %s %s %" JSON_INTEGER_FORMAT, f[0], f[1],
                                                            json_string_value(json_object_get(v, "parent")),
                                                            json_string_value(json_object_get(v, "legality")),
                                                            json_integer_value(json_object_get(v, "generation")))
                                          : NULL;

                if (g_strcmp0(have, json_string_value(r)) != 0)
                        json_array_append_new(out, json_sprintf("inventory %s, storage %s", json_string_value(r),
                                                                have ? have : "none"));
        }
        return out;
}

static json_t *summary(struct life *l)
{
        return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                         "jobs", q_rows(l, "SELECT status FROM jobs ORDER BY rowid"),
                         "disks", q_rows(l, "SELECT d.name, d.status, s.name, d.format, (SELECT count(*) FROM volumes v "
                                            "WHERE v.disk_id = d.id AND v.sd_id = d.sd_id) FROM disks d JOIN storage_domains s "
                                            "ON s.id = d.sd_id ORDER BY 1, 2, 3, 4, 5"),
                         "vms", q_rows(l, "SELECT name, status, (SELECT count(*) FROM disk_attachments a "
                                          "WHERE a.vm_id = vms.id) FROM vms ORDER BY name"),
                         "templates", q_rows(l, "SELECT name, status, (SELECT count(*) FROM disk_attachments a "
                                                "WHERE a.template_id = templates.id) FROM templates ORDER BY name"),
                         "snapshots", q_rows(l, "SELECT s.description, s.status FROM snapshots s ORDER BY s.description"),
                         "storage", storage_summary(l),
                         "mismatches", mismatches(l),
                         "active", q_rows(l, "SELECT type, phase FROM commands WHERE state = 'active' ORDER BY type"));
}

/* ---- actions, as REST calls them ---- */

static char *id_of(struct life *l, const char *table, const char *name)
{
        g_autofree char *sql = g_strdup_printf("SELECT id FROM %s WHERE name = ?1 ORDER BY created DESC", table);
        char *id = q_str(l, sql, name);

        g_assert_nonnull(id);
        return id;
}

static void ok(json_t *answer, GError **error)
{
        if (!answer)
                g_error("the action failed: %s", error && *error ? (*error)->message : "?");
        json_decref(answer);
}

static void disk_create(struct life *l, const char *name, const char *sd, int volumes)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = json_pack("{s:s, s:I, s:s, s:i, s:{s:s}}", "name", name,
                                           "provisioned_size", (json_int_t) MIB, "format", volumes > 1 ? "cow" : "raw",
                                           "volumes", volumes, "storage_domain", "name", sd);

        ok(engine_disk_create(&l->e, body, &error), &error);
}

/* Writes guest data into every volume of the disk, so copies and checksums compare something. */
static void disk_write(struct life *l, const char *name)
{
        g_autofree char *id = id_of(l, "disks", name);
        g_autoptr(json_t) rows = q_rows(l, "SELECT sd_id, id FROM volumes ORDER BY position");
        size_t i;
        json_t *r;

        json_array_foreach(rows, i, r) {
                g_auto(GStrv) f = g_strsplit(json_string_value(r), " ", 2);
                g_autofree char *token = g_strdup_printf("%s-%zu", name, i);
                g_autofree char *disk = q_str(l, "SELECT disk_id FROM volumes WHERE id = ?1", f[1]);

                if (g_strcmp0(disk, id) == 0)
                        hd_write(l->d, f[0], f[1], token);
        }
}

static void wait_all(struct life *l)
{
        life_run(l, all_ended, "every job ended");
}

static void vm_with_disk(struct life *l, const char *vm, const char *disk, int volumes)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = json_pack("{s:s}", "name", vm);
        g_autofree char *vm_id = NULL;
        g_autofree char *disk_id = NULL;
        int status = 0;

        disk_create(l, disk, "sd1", volumes);
        wait_all(l);
        disk_write(l, disk);
        ok(engine_vm_create(&l->e, body, &status, &error), &error);
        vm_id = id_of(l, "vms", vm);
        disk_id = id_of(l, "disks", disk);
        json_decref(body);
        body = json_pack("{s:{s:s}, s:b}", "disk", "id", disk_id, "bootable", 1);
        ok(engine_vm_disk_attach(&l->e, vm_id, body, &error), &error);
}

static void snapshot(struct life *l, const char *vm, const char *description)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *vm_id = id_of(l, "vms", vm);
        g_autoptr(json_t) body = json_pack("{s:s}", "description", description);

        ok(engine_snapshot_create(&l->e, vm_id, body, &error), &error);
}

static char *snapshot_id(struct life *l, const char *description)
{
        char *id = q_str(l, "SELECT id FROM snapshots WHERE description = ?1", description);

        g_assert_nonnull(id);
        return id;
}

/* ---- the flows ---- */

/* A fault of the double (hd_fault), on any host. */
struct fault {
        const char *verb;
        const char *mode;
        int code;
        int count;
};

struct flow_case {
        const char *name;
        void (*prepare)(struct life *l);       /* in the setup life */
        const struct fault *fault;             /* scripted before the flow starts */
        void (*start)(struct life *l);         /* the action (again, after a crash before it committed) */
        const char *end;                       /* the flow's job ends so */
        void (*check)(struct life *l);         /* more, at the end of the reference life */
        const char *known_bug;                 /* skipped (saying why) unless FLOWS_KNOWN_BUGS=1 */
        bool cancel_copying;                   /* the user cancels the job once a copy runs */
        const struct fault *fault2;            /* a second one, scripted with the first */
};

static void prep_disk(struct life *l)
{
        disk_create(l, "d1", "sd1", 3);
        wait_all(l);
        disk_write(l, "d1");
}

static void prep_vm(struct life *l)
{
        vm_with_disk(l, "vm1", "d1", 2);
}

static void prep_vm_snapshots(struct life *l)
{
        prep_vm(l);
        snapshot(l, "vm1", "s1");
        wait_all(l);
        disk_write(l, "d1");
        snapshot(l, "vm1", "s2");
        wait_all(l);
        disk_write(l, "d1");
}

static void prep_template(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = NULL;
        g_autofree char *vm_id = NULL;

        prep_vm(l);
        vm_id = id_of(l, "vms", "vm1");
        body = json_pack("{s:s, s:{s:s}}", "name", "t1", "vm", "id", vm_id);
        ok(engine_template_create(&l->e, body, &error), &error);
        wait_all(l);
}

static void start_disk_create(struct life *l)
{
        disk_create(l, "d1", "sd1", 3);
}

static void start_disk_remove(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *id = id_of(l, "disks", "d1");

        ok(engine_disk_remove(&l->e, id, &error), &error);
}

static void start_disk_move(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *id = id_of(l, "disks", "d1");
        g_autoptr(json_t) body = json_pack("{s:{s:s}}", "storage_domain", "name", "sd2");

        ok(engine_disk_move(&l->e, id, body, false, &error), &error);
}

/* One copy slot a host: the chain's three copies go to the two data hosts, the third when one is free. */
static void start_disk_move_one_slot(struct life *l)
{
        hd_set_job_limit(l->d, 1);
        start_disk_move(l);
}

static void start_disk_copy(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *id = id_of(l, "disks", "d1");
        g_autoptr(json_t) body = json_pack("{s:s, s:{s:s}}", "name", "d1copy", "storage_domain", "name", "sd2");

        ok(engine_disk_move(&l->e, id, body, true, &error), &error);
}

static void start_sparsify(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *id = id_of(l, "disks", "d1");

        ok(engine_disk_sparsify(&l->e, id, &error), &error);
}

static void start_checksum(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *id = id_of(l, "disks", "d1");

        ok(engine_disk_checksum(&l->e, id, &error), &error);
}

static void start_template_create(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *vm_id = id_of(l, "vms", "vm1");
        g_autoptr(json_t) body = json_pack("{s:s, s:{s:s}}", "name", "t1", "vm", "id", vm_id);

        ok(engine_template_create(&l->e, body, &error), &error);
}

static void start_vm_from_template(struct life *l, bool clone)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *t_id = id_of(l, "templates", "t1");
        g_autoptr(json_t) body = json_pack("{s:s, s:{s:s}, s:b}", "name", "vm2", "template", "id", t_id, "clone", clone);
        int status = 0;

        ok(engine_vm_create(&l->e, body, &status, &error), &error);
}

static void start_vm_clone(struct life *l)
{
        start_vm_from_template(l, true);
}

static void start_vm_thin(struct life *l)
{
        start_vm_from_template(l, false);
}

static void start_vm_remove(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *id = id_of(l, "vms", "vm1");
        int status = 0;

        ok(engine_vm_remove(&l->e, id, false, &status, &error), &error);
}

static void start_template_remove(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *id = id_of(l, "templates", "t1");
        int status = 0;

        ok(engine_template_remove(&l->e, id, &status, &error), &error);
}

static void start_snapshot_create(struct life *l)
{
        snapshot(l, "vm1", "s1");
}

static void start_snapshot_remove(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *vm_id = id_of(l, "vms", "vm1");
        g_autofree char *snap = snapshot_id(l, "s2");
        int status = 0;

        ok(engine_snapshot_remove(&l->e, vm_id, snap, &status, &error), &error);
}

static void start_snapshot_restore(struct life *l)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *vm_id = id_of(l, "vms", "vm1");
        g_autofree char *snap = snapshot_id(l, "s1");

        ok(engine_snapshot_restore(&l->e, vm_id, snap, &error), &error);
}

/* Failure paths. */

static const struct fault fault_copy_once = { "SDM.copy_data", "fail", 100, 1 };

static const struct fault fault_copy_refused_once = { "SDM.copy_data", "refuse", 309, 1 };      /* the host is not connected to the pool */

static const struct fault fault_copy_host_dies = { "SDM.copy_data", "down", 0, 1 };

static const struct fault fault_spm_dies = { "Volume.create", "down", 0, 1 };

static const struct fault fault_copy_hangs = { "SDM.copy_data", "hang", 0, 1000 };  /* until Job.abort */
static const struct fault fault_copy_always = { "SDM.copy_data", "fail", 100, 1000 };

static const struct fault fault_create_refused = { "Volume.create", "refuse", 352, 1000 };

static const struct fault fault_merge_once = { "SDM.merge", "fail", 100, 1 };

static const struct fault fault_prepare_refused = { "StoragePool.prepareMerge", "fail", 252, 1000 };

static const struct fault fault_checksum_once = { "Volume.checksum", "fail", 100, 1 };

static const struct fault fault_checksum_always = { "Volume.checksum", "fail", 100, 1000 };

static const struct fault fault_checksum_host_dies = { "Volume.checksum", "down", 0, 1 };

static const struct fault fault_copy_corrupt = { "SDM.copy_data", "corrupt", 0, 1 };

static const struct fault fault_marker_dies = { "SDM.update_volume", "down", 0, 1 };

static const struct fault fault_marker_hangs = { "SDM.update_volume", "hang_mark", 0, 1 }; /* the ILLEGAL mark, until Job.abort */

static const struct fault fault_copy_bigger = { "SDM.copy_data", "bigger", 0, 1000 };

static const struct fault fault_checksum_no_length = { "Volume.checksum", "no_length", 0, 1000 };

static const struct fault fault_copy_bigger_dirty = { "SDM.copy_data", "bigger_dirty", 0, 1 };

/*
 * Every copy's destination is bigger than its source (a zero tail): each is
 * verified over the source's size, nothing is copied twice, and each layer's
 * destination was hashed twice (whole, then the prefix).
 */
static void check_bigger_verified(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), ==, 3);
        g_assert_cmpint(hd_calls(l->d, "Volume.checksum"), >=, 9);
}

/*
 * The same with agents that ignore length: no host can verify the bottom
 * layer's destination, so its step fails as unverified after a prefix hash
 * on VERIFY_TRIES hosts, without copying anything again or marking it ILLEGAL
 * (the layers above end with it).
 */
static void check_bigger_never_verified(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), ==, 3);
        g_assert_cmpint(hd_calls(l->d, "SDM.update_volume"), ==, 0);
        g_assert_cmpint(hd_calls(l->d, "Volume.checksum"), <=, 6);
        g_assert_cmpint(q_int(l, "SELECT count(*) FROM commands WHERE state = 'failed' AND instr(error, "
                              "'could not be verified (the agent on host') > 0 AND instr(error, "
                              "'does not support Volume.checksum length') > 0", NULL), >=, 1);
}

/*
 * The first copy's destination is bigger and its tail is not zeros: the
 * prefix matches, tail_zero is false — a mismatch: marked ILLEGAL, copied
 * again (cleanly) and verified.
 */
static void check_bigger_dirty_recopied(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), ==, 4);
        g_assert_cmpint(hd_calls(l->d, "SDM.update_volume"), >=, 1);
}

static void check_retried(struct life *l)
{
        /* 3 layers + the one that failed once and went to another host */
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), ==, 4);
}

static void check_within_limit(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), ==, 3);
        g_assert_cmpint(hd_copies_over_limit(l->d), ==, 0);
}

static void check_fenced(struct life *l)
{
        /* Each copy the dead host took (one or two: the scheduler's pick) was fenced and sent elsewhere. */
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), >=, 4);
        g_assert_cmpint(hd_calls(l->d, "SDM.update_volume"), >=, 1);
}

static void check_verify_gave_up(struct life *l)
{
        /* Each layer copied once; the bottom one's checksums failed their 3 tries, and the layers above it,
         * waiting for it to become LEGAL, ended with it instead of waiting for ever. */
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), ==, 3);
        g_assert_cmpint(hd_calls(l->d, "Volume.checksum"), <=, 6);
}

static void check_copy_gave_up(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), >=, 3);
}

/* Cancelled while copying: the destination holds nothing of the disk, the source all of it. */
static void check_cancelled(struct life *l)
{
        g_autofree char *sd2 = id_of(l, "storage_domains", "sd2");
        json_t *vols = json_object_get(hd_model(l->d), "vols");
        const char *key;
        json_t *v;
        int src = 0;

        json_object_foreach(vols, key, v) {
                g_assert_cmpstr(json_string_value(json_object_get(v, "sd")), !=, sd2);
                src++;
        }
        g_assert_cmpint(src, ==, 3);
        g_assert_cmpint(hd_calls(l->d, "Job.abort"), >=, 1);
}

/*
 * A copy's checksum differed; the host that was to mark its destination
 * ILLEGAL died with the mark: the mark went through another host after
 * host_lost_timeout, then the copy was made again and verified.
 */
static void check_marker_died(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), >=, 4);
        g_assert_cmpint(hd_calls(l->d, "SDM.update_volume"), >=, 2);
        g_assert_cmpint(json_object_size(json_object_get(hd_model(l->d), "down")), ==, 1);
}

/*
 * A copy's checksum differed; the mark's job hung on a host that stayed up:
 * after host_lost_timeout it was aborted and the copy was made again (it
 * marks the destination itself) and verified.
 */
static void check_marker_hung(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.copy_data"), >=, 4);
        g_assert_cmpint(hd_calls(l->d, "SDM.update_volume"), >=, 1);
        g_assert_cmpint(hd_calls(l->d, "Job.abort"), >=, 1);
        g_assert_cmpint(json_object_size(json_object_get(hd_model(l->d), "down")), ==, 0);
}

static void check_merge_retried(struct life *l)
{
        g_assert_cmpint(hd_calls(l->d, "SDM.merge"), ==, 2);
}

static const struct flow_case cases[] = {
        { "disk-create", NULL, NULL, start_disk_create, "finished", NULL },
        { "disk-create-refused", NULL, &fault_create_refused, start_disk_create, "failed", NULL },
        { "disk-remove", prep_disk, NULL, start_disk_remove, "finished", NULL },
        { "disk-move", prep_disk, NULL, start_disk_move, "finished", NULL },
        { "disk-move-one-slot", prep_disk, NULL, start_disk_move_one_slot, "finished", check_within_limit },
        { "disk-move-copy-fails-once", prep_disk, &fault_copy_once, start_disk_move, "finished", check_retried },
        { "disk-move-copy-refused-once", prep_disk, &fault_copy_refused_once, start_disk_move, "finished", check_retried },
        { "disk-move-copy-host-dies", prep_disk, &fault_copy_host_dies, start_disk_move, "finished", check_fenced },
        { "disk-move-spm-dies", prep_disk, &fault_spm_dies, start_disk_move, "finished", NULL },
        { "disk-move-verify-fails", prep_disk, &fault_checksum_always, start_disk_move, "failed", check_verify_gave_up },
        { "disk-move-copy-fails", prep_disk, &fault_copy_always, start_disk_move, "failed", check_copy_gave_up },
        { "disk-move-cancelled", prep_disk, &fault_copy_hangs, start_disk_move, "aborted", check_cancelled, NULL, true },
        { "disk-move-mismatch-marker-dies", prep_disk, &fault_copy_corrupt, start_disk_move, "finished", check_marker_died,
          .fault2 = &fault_marker_dies },
        { "disk-move-mismatch-marker-hangs", prep_disk, &fault_copy_corrupt, start_disk_move, "finished", check_marker_hung,
          .fault2 = &fault_marker_hangs },
        { "disk-move-bigger-destination", prep_disk, &fault_copy_bigger, start_disk_move, "finished",
          check_bigger_verified },
        { "disk-move-bigger-destination-no-length", prep_disk, &fault_copy_bigger, start_disk_move, "failed",
          check_bigger_never_verified, .fault2 = &fault_checksum_no_length },
        { "disk-move-bigger-destination-dirty-tail", prep_disk, &fault_copy_bigger_dirty, start_disk_move, "finished",
          check_bigger_dirty_recopied },
        { "disk-copy", prep_disk, NULL, start_disk_copy, "finished", NULL },
        { "disk-sparsify", prep_disk, NULL, start_sparsify, "finished", NULL },
        { "disk-checksum", prep_disk, NULL, start_checksum, "finished", NULL },
        { "disk-checksum-fails-once", prep_disk, &fault_checksum_once, start_checksum, "finished", NULL },
        { "disk-checksum-host-dies", prep_disk, &fault_checksum_host_dies, start_checksum, "finished", NULL },
        { "template-create", prep_vm, NULL, start_template_create, "finished", NULL },
        { "vm-clone", prep_template, NULL, start_vm_clone, "finished", NULL },
        { "vm-thin", prep_template, NULL, start_vm_thin, "finished", NULL },
        { "vm-remove", prep_vm, NULL, start_vm_remove, "finished", NULL },
        { "template-remove", prep_template, NULL, start_template_remove, "finished", NULL },
        { "snapshot-create", prep_vm, NULL, start_snapshot_create, "finished", NULL },
        { "snapshot-remove", prep_vm_snapshots, NULL, start_snapshot_remove, "finished", NULL },
        { "snapshot-remove-merge-fails-once", prep_vm_snapshots, &fault_merge_once, start_snapshot_remove, "finished",
          check_merge_retried },
        { "snapshot-remove-refused", prep_vm_snapshots, &fault_prepare_refused, start_snapshot_remove, "failed", NULL },
        { "snapshot-restore", prep_vm_snapshots, NULL, start_snapshot_restore, "finished", NULL },
};

/* ---- lives in child processes ---- */

static gint64 setup_jobs;      /* jobs the setup life made: one more is the flow's */

static void out_write(struct life *l, const char *file, json_t *o)
{
        g_autofree char *path = g_build_filename(l->dir, file, NULL);

        g_assert_cmpint(json_dump_file(o, path, JSON_INDENT(1) | JSON_SORT_KEYS), ==, 0);
}

static json_t *out_read(const char *dir, const char *file)
{
        g_autofree char *path = g_build_filename(dir, file, NULL);
        json_error_t jerr;
        json_t *o = json_load_file(path, 0, &jerr);

        if (!o)
                g_error("%s: %s", path, jerr.text);
        return o;
}

/* What every life ends with: the summary, the double's findings, how many crash points it passed. */
static void life_report(struct life *l, const char *file)
{
        g_autoptr(json_t) o = json_pack("{s:o, s:O?, s:I, s:I, s:I}", "summary", summary(l),
                                        "violations", json_object_get(hd_model(l->d), "violations"),
                                        "commits", (json_int_t) l->commits, "images", (json_int_t) l->images_taken,
                                        "jobs", (json_int_t) q_int(l, "SELECT count(*) FROM jobs", NULL));

        out_write(l, file, o);
}

static void on_sd_added(json_t *result, const GError *error, void *userdata)
{
        if (!result)
                g_error("storage domain: %s", error->message);
        *(int *) userdata += 1;
}

static int sds_added;

static bool sds_ready(struct life *l)
{
        return sds_added == 2 && hosts_ready(l);
}

static void setup_life(const struct flow_case *c, const char *dir)
{
        static struct life l;      /* reachable at exit: LeakSanitizer reports only what a life lost */
        g_autofree char *model = g_build_filename(dir, "base.json", NULL);

        life_open(&l, dir, "base");
        for (int i = 1; i <= 3; i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *name = g_strdup_printf("h%d", i);

                ok(engine_host_add(&l.e, name, "127.0.0.1", (unsigned) (54320 + i), &error), &error);
        }
        life_run(&l, hosts_up, "hosts up");
        engine_sd_add(&l.e, "sd1", on_sd_added, &sds_added);
        engine_sd_add(&l.e, "sd2", on_sd_added, &sds_added);
        life_run(&l, sds_ready, "storage domains joined");
        if (c->prepare)
                c->prepare(&l);
        wait_all(&l);
        life_report(&l, "setup.json");
        g_assert_cmpint(json_dump_file(hd_model(l.d), model, JSON_COMPACT), ==, 0);
        sqlite3_close(l.ro);
        engine_store_close(l.e.db);
}

static bool flow_started(struct life *l)
{
        return q_int(l, "SELECT count(*) FROM jobs", NULL) > setup_jobs;
}

static bool copying_or_cancelled(struct life *l)
{
        return q_int(l, "SELECT count(*) FROM commands WHERE cancel = 1", NULL) > 0 ||
               q_int(l, "SELECT count(*) FROM commands WHERE type = 'copy_data' AND agent_job_id IS NOT NULL "
                        "AND state = 'active'", NULL) > 0;
}

static void flow_life(const struct flow_case *c, const char *dir, const char *name, bool reference)
{
        static struct life l;      /* reachable at exit: LeakSanitizer reports only what a life lost */
        g_autofree char *out = g_strconcat(name, ".out.json", NULL);

        life_open(&l, dir, name);
        if (reference && c->fault)
                hd_fault(l.d, c->fault->verb, NULL, c->fault->mode, c->fault->code, c->fault->count);
        if (reference && c->fault2)
                hd_fault(l.d, c->fault2->verb, NULL, c->fault2->mode, c->fault2->code, c->fault2->count);
        l.images = reference && !slicing;
        l.seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        if (!flow_started(&l))
                c->start(&l);
        if (c->cancel_copying) {
                /* In every life (a crash may come before or after it): the cancel once a copy runs, unless made. */
                life_run(&l, copying_or_cancelled, "a copy running");
                if (q_int(&l, "SELECT count(*) FROM commands WHERE cancel = 1", NULL) == 0) {
                        g_autoptr(GError) error = NULL;
                        g_autofree char *job = q_str(&l, "SELECT id FROM jobs WHERE status = 'started' ORDER BY start_time "
                                                         "DESC LIMIT 1", NULL);

                        ok(engine_job_cancel(&l.e, job, &error), &error);
                }
        }
        wait_all(&l);
        l.images = false;
        if (reference && c->check)
                c->check(&l);
        life_report(&l, out);
}

static void copy_file(const char *dir, const char *from, const char *to)
{
        g_autofree char *src = g_build_filename(dir, from, NULL);
        g_autofree char *dst = g_build_filename(dir, to, NULL);
        g_autofree char *text = NULL;
        gsize len = 0;

        g_assert_true(g_file_get_contents(src, &text, &len, NULL));
        g_assert_true(g_file_set_contents(dst, text, (gssize) len, NULL));
}

/* Runs fn in a child process (an engine life); fails the test if it did not exit 0. */
#define IN_CHILD(what, ...)                                                                    \
        do {                                                                                   \
                pid_t pid_ = fork();                                                           \
                int status_ = 0;                                                               \
                g_assert_cmpint(pid_, >=, 0);                                                  \
                if (pid_ == 0) {                                                               \
                        __VA_ARGS__;                                                           \
                        exit(0);       /* with LeakSanitizer's check, in an ASan build */      \
                }                                                                              \
                g_assert_cmpint(waitpid(pid_, &status_, 0), ==, pid_);                         \
                if (!WIFEXITED(status_) || WEXITSTATUS(status_) != 0)                          \
                        g_error("%s: the engine life failed (status %d)", what, status_);      \
        } while (0)

static void rm_rf(const char *dir)
{
        GDir *d = g_dir_open(dir, 0, NULL);
        const char *f;

        while (d && (f = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(dir, f, NULL);
                g_unlink(p);
        }
        if (d)
                g_dir_close(d);
        g_rmdir(dir);
}

static void assert_clean(json_t *out, const char *what)
{
        json_t *v = json_object_get(out, "violations");

        if (json_array_size(v) > 0) {
                g_autofree char *s = json_dumps(v, JSON_INDENT(1));
                g_error("%s: calls made before the store recorded them: %s", what, s);
        }
}

/* In memory when the machine has /dev/shm: a crash image per commit is many small files. */
static char *tmp_dir(void)
{
        g_autofree char *tmpl = NULL;

        if (!g_getenv("TMPDIR") && g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
                tmpl = g_strdup("/dev/shm/ferry-flows-XXXXXX");
                if (g_mkdtemp(tmpl))
                        return g_steal_pointer(&tmpl);
        }
        return g_dir_make_tmp("ferry-flows-XXXXXX", NULL);
}

static void run_case(gconstpointer data)
{
        const struct flow_case *c = data;
        g_autofree char *dir = tmp_dir();
        g_autoptr(json_t) setup = NULL;
        g_autoptr(json_t) ref = NULL;
        json_t *jobs, *rs;
        gint64 commits, images, stride = 1;
        const char *env = g_getenv("FLOWS_CRASH_STRIDE");

        if (c->known_bug && !g_getenv("FLOWS_KNOWN_BUGS")) {
                g_test_skip(c->known_bug);     /* said in the TAP output; FLOWS_KNOWN_BUGS=1 runs it */
                return;
        }
        if (env)
                stride = MAX(g_ascii_strtoll(env, NULL, 10), 1);
        g_assert_nonnull(dir);
        IN_CHILD("setup", setup_life(c, dir));
        setup = out_read(dir, "setup.json");
        assert_clean(setup, "setup");
        setup_jobs = json_integer_value(json_object_get(setup, "jobs"));
        copy_file(dir, "base.db", "ref.db");
        copy_file(dir, "base.json", "ref.json");
        IN_CHILD("reference", flow_life(c, dir, "ref", true));
        ref = out_read(dir, "ref.out.json");
        assert_clean(ref, "reference");
        rs = json_object_get(ref, "summary");
        jobs = json_object_get(rs, "jobs");
        g_assert_cmpint(json_array_size(jobs), ==, setup_jobs + 1);
        g_assert_cmpstr(json_string_value(json_array_get(jobs, json_array_size(jobs) - 1)), ==, c->end);
        g_assert_cmpint(json_array_size(json_object_get(rs, "mismatches")), ==, 0);
        g_assert_cmpint(json_array_size(json_object_get(rs, "active")), ==, 0);
        /* The same flow with every round cut into slices of one command, as a round that overruns its
         * time budget is (main loop work between them): the same end. */
        copy_file(dir, "base.db", "sliced.db");
        copy_file(dir, "base.json", "sliced.json");
        IN_CHILD("sliced", (slicing = true, flow_life(c, dir, "sliced", true)));
        {
                g_autoptr(json_t) sliced = out_read(dir, "sliced.out.json");

                assert_clean(sliced, "sliced");
                if (!json_equal(json_object_get(sliced, "summary"), rs)) {
                        g_autofree char *a = json_dumps(rs, JSON_INDENT(1) | JSON_SORT_KEYS);
                        g_autofree char *b = json_dumps(json_object_get(sliced, "summary"), JSON_INDENT(1) | JSON_SORT_KEYS);

                        g_error("%s: with rounds in slices of one command it ends otherwise:\nreference %s\nsliced %s\n"
                                "(kept in %s)", c->name, a, b, dir);
                }
        }
        commits = json_integer_value(json_object_get(ref, "commits"));
        images = json_integer_value(json_object_get(ref, "images"));
        g_assert_cmpint(images, >, 0);
        for (gint64 k = 1; k <= images; k += stride) {
                g_autofree char *name = g_strdup_printf("crash-%" G_GINT64_FORMAT, k);
                g_autofree char *out = g_strconcat(name, ".out.json", NULL);
                g_autoptr(json_t) got = NULL;

                IN_CHILD(name, flow_life(c, dir, name, false));
                got = out_read(dir, out);
                assert_clean(got, name);
                if (!json_equal(json_object_get(got, "summary"), rs)) {
                        g_autofree char *a = json_dumps(rs, JSON_INDENT(1) | JSON_SORT_KEYS);
                        g_autofree char *b = json_dumps(json_object_get(got, "summary"), JSON_INDENT(1) | JSON_SORT_KEYS);

                        g_error("%s: a crash at point %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " ends otherwise:\n"
                                "reference %s\ncrash %s\n(kept in %s)", c->name, k, images, a, b, dir);
                }
        }
        g_test_message("%s: %" G_GINT64_FORMAT " commits, %" G_GINT64_FORMAT " distinct crash points, each resumed "
                       "to the same end", c->name, commits, images);
        rm_rf(dir);
}

static void quiet_handler(const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
        if ((level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) || g_getenv("FLOWS_VERBOSE"))
                g_printerr("%s: %s\n", domain ? domain : "", message);
}

static void ignore_reply(json_t *result, const GError *error, void *userdata)
{
}

static void unrecorded_life(const char *dir)
{
        static struct life l;      /* reachable at exit: LeakSanitizer reports only what a life lost */
        g_autofree char *host = NULL;
        g_autofree char *job = fy_uuid_new();

        life_open(&l, dir, "base");
        ok(engine_host_add(&l.e, "h1", "127.0.0.1", 54321, NULL), NULL);
        host = id_of(&l, "hosts", "h1");
        /* A job no command recorded: what a flow calling before its write commits would send. */
        engine_host_call(&l.e, host, "SDM.sparsify_volume",
                         json_pack("{s:s, s:{s:s, s:s, s:s, s:i}}", "job_id", job, "vol_info", "sd_id", job,
                                   "img_id", job, "vol_id", job, "generation", 0),
                         1000, ignore_reply, NULL);
        while (g_main_context_iteration(NULL, FALSE))
                ;
        life_report(&l, "double.json");
}

/* The write-before-act check is not one that cannot fail. */
static void test_unrecorded_call(void)
{
        g_autofree char *dir = tmp_dir();
        g_autoptr(json_t) out = NULL;
        json_t *v;

        IN_CHILD("double", unrecorded_life(dir));
        out = out_read(dir, "double.json");
        v = json_object_get(out, "violations");
        g_assert_cmpint(json_array_size(v), ==, 1);
        g_assert_nonnull(strstr(json_string_value(json_array_get(v, 0)), "SDM.sparsify_volume job"));
        rm_rf(dir);
}

static bool copy_sent(struct life *l)
{
        return q_int(l, "SELECT count(*) FROM commands WHERE type = 'copy_data' AND state = 'active' AND "
                        "agent_job_id IS NOT NULL AND phase = 'sent'", NULL) > 0;
}

/*
 * The engine keeps each running job's last pushed event and judges stalls
 * on it between polls. An agent that pushed "running" while the copy still
 * prepared, and nothing after (its qemu-img frozen as it started: no
 * progress to announce), left that event at "preparing" while every poll
 * said "copying": each round counted a change of phase, a move, and the
 * frozen copy was never flagged (issue 16's stall tests failed under ASan
 * that way). A poll's answer now replaces the kept event: flagged within
 * stall_timeout plus a few rounds.
 */
static void stale_event_life(const struct flow_case *c, const char *dir)
{
        static struct life l;      /* reachable at exit: LeakSanitizer reports only what a life lost */
        g_autofree char *job = NULL, *host = NULL, *method = NULL, *like = NULL;
        g_autoptr(json_t) info = NULL;
        gint64 deadline;

        life_open(&l, dir, "ref");
        l.e.config.stall_timeout = 1;
        hd_fault(l.d, "SDM.copy_data", NULL, "hang", 0, 1000);
        c->start(&l);
        life_run(&l, copy_sent, "a copy sent");
        job = q_str(&l, "SELECT agent_job_id FROM commands WHERE type = 'copy_data' AND state = 'active' AND "
                        "agent_job_id IS NOT NULL LIMIT 1", NULL);
        host = q_str(&l, "SELECT host FROM commands WHERE agent_job_id = ?", job);
        method = g_strdup_printf("|jobs|status|%s", job);
        info = json_pack("{s:s, s:s, s:s, s:f, s:I, s:s}", "id", job, "status", "running", "job_type", "SDM.copy_data",
                         "progress", 0.0, "bytes_done", (json_int_t) 0, "phase", "preparing");
        engine_host_event(&l.e, host, method, info);
        deadline = g_get_monotonic_time() + 6 * G_USEC_PER_SEC;
        like = g_strdup_printf("%%job %s on host %% moved no bytes%%", job);
        for (unsigned round = 0; q_int(&l, "SELECT count(*) FROM events WHERE message LIKE ?", like) == 0; round++) {
                if (g_get_monotonic_time() > deadline)
                        g_error("the frozen copy was not flagged within 6 s (stall_timeout 1 s)");
                life_round(&l, round);
                g_usleep(20 * 1000);
        }
}

static void test_stale_event(void)
{
        static const struct flow_case c = { "stall-stale-event", prep_disk, NULL, start_disk_move, NULL, NULL };
        g_autofree char *dir = tmp_dir();

        IN_CHILD("setup", setup_life(&c, dir));
        copy_file(dir, "base.db", "ref.db");
        copy_file(dir, "base.json", "ref.json");
        IN_CHILD("stale event", stale_event_life(&c, dir));
        rm_rf(dir);
}

static GLogWriterOutput quiet_writer(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data)
{
        if ((level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) || g_getenv("FLOWS_VERBOSE"))
                return g_log_writer_standard_streams(level, fields, n, data);
        return G_LOG_WRITER_HANDLED;
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        /* The engine warns about what it recovers from (a host that refused, a retry): not a failure here. */
        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
        g_log_set_writer_func(quiet_writer, NULL, NULL);
        g_log_set_default_handler(quiet_handler, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                /* Grouped as meson runs them (tests/unit/meson.build): disks, moves and copies, moves with faults, moves
                 * whose host dies (the longest two, apart so they share the cores), VMs and
                 * templates, snapshots. */
                const char *group = g_str_has_prefix(cases[i].name, "disk-move-") &&
                                    g_str_has_suffix(cases[i].name, "-dies") ? "move-dies" :
                                    g_str_has_prefix(cases[i].name, "disk-move-") ? "move-faults" :
                                    g_str_has_prefix(cases[i].name, "disk-move") ||
                                    g_str_has_prefix(cases[i].name, "disk-copy") ? "move" :
                                    g_str_has_prefix(cases[i].name, "disk-") ? "disk" :
                                    g_str_has_prefix(cases[i].name, "snapshot-") ? "snapshot" : "vm";
                g_autofree char *path = g_strdup_printf("/flows/%s/%s", group, cases[i].name);

                g_test_add_data_func(path, &cases[i], run_case);
        }
        g_test_add_func("/double/unrecorded-call", test_unrecorded_call);
        g_test_add_func("/stall/stale-event", test_stale_event);
        return g_test_run();
}
