/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The engine's store on its SQLite backend, in process: typed functions
 * round-trip, a transaction is all or nothing (a write that failed inside
 * makes the commit fail and roll back), conditional locks refuse what
 * moved on, and a database of an older schema upgrades in place.
 */
#include <errno.h>
#include <glib/gstdio.h>
#include <sqlite3.h>

#include "store/store.h"

struct fixture {
        char *dir;
        char *path;
        struct engine_store *st;
};

static void setup(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;

        f->dir = g_dir_make_tmp("ferry-store-XXXXXX", &error);
        g_assert_no_error(error);
        f->path = g_build_filename(f->dir, "engine.db", NULL);
        g_assert_cmpint(engine_store_open(f->path, &f->st, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(engine_store_dc_insert(f->st, "dc", "Default", "pool", &error), ==, 0);
        g_assert_cmpint(engine_store_sd_insert(f->st, "sd1", "one", "dc", 1, &error), ==, 0);
        g_assert_cmpint(engine_store_job_insert(f->st, "job1", "a job", NULL, 1, &error), ==, 0);
}

static void teardown(struct fixture *f, gconstpointer data)
{
        engine_store_close(f->st);
        g_unlink(f->path);
        g_autofree char *wal = g_strconcat(f->path, "-wal", NULL);
        g_autofree char *shm = g_strconcat(f->path, "-shm", NULL);
        g_unlink(wal);
        g_unlink(shm);
        g_rmdir(f->dir);
        g_free(f->path);
        g_free(f->dir);
}

static void test_round_trip(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) vols = NULL;
        g_autofree char *value = NULL;
        bool used = false;

        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 1 << 20, "job1", 2, &error), ==, 0);
        g_assert_cmpint(engine_store_volume_insert(f->st, "v1", "d1", "sd1", NULL, 0, "cow", true, 1 << 20, &error), ==, 0);
        g_assert_cmpint(engine_store_volume_insert(f->st, "v2", "d1", "sd1", "v1", 1, "cow", true, 1 << 20, &error), ==, 0);
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_no_error(error);
        g_assert_cmpstr(json_string_value(json_object_get(disk, "status")), ==, "locked");
        vols = engine_store_volume_list(f->st, "d1", "sd1", &error);
        g_assert_cmpuint(json_array_size(vols), ==, 2);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(vols, 1), "parent")), ==, "v1");
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(vols, 0), "legality")), ==, "ILLEGAL");
        g_assert_cmpint(engine_store_volume_set_legal(f->st, "v1", "sd1", 7, &error), ==, 0);
        json_decref(vols);
        vols = engine_store_volume_list(f->st, "d1", "sd1", &error);
        g_assert_cmpint(json_integer_value(json_object_get(json_array_get(vols, 0), "generation")), ==, 7);
        g_assert_cmpint(engine_store_image_in_use(f->st, "sd1", "d1", NULL, &used, &error), ==, 0);
        g_assert_true(used);
        g_assert_cmpint(engine_store_image_in_use(f->st, "sd1", "nothing", NULL, &used, &error), ==, 0);
        g_assert_false(used);
        /* Unknown lookups are NULL without an error. */
        g_assert_null(engine_store_disk_get(f->st, "nope", &error));
        g_assert_no_error(error);
        /* Options: absent, set, replaced. */
        g_assert_cmpint(engine_store_option_get(f->st, "X", &value, &error), ==, -ENOENT);
        g_assert_cmpint(engine_store_option_set(f->st, "X", "true", &error), ==, 0);
        g_assert_cmpint(engine_store_option_set(f->st, "X", "false", &error), ==, 0);
        g_assert_cmpint(engine_store_option_get(f->st, "X", &value, &error), ==, 0);
        g_assert_cmpstr(value, ==, "false");
}

/* A write that failed inside a transaction: the commit fails and nothing of it stays. */
static void test_all_or_nothing(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) disk = NULL;

        g_assert_cmpint(engine_store_begin(f->st, &error), ==, 0);
        g_assert_cmpint(engine_store_disk_insert(f->st, "d2", "two", "sd1", "raw", false, 512, "job1", 2, &error), ==, 0);
        /* Same id again: refused (a constraint), and the transaction with it. */
        g_assert_cmpint(engine_store_disk_insert(f->st, "d2", "two", "sd1", "raw", false, 512, "job1", 2, &error), ==, -EEXIST);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_commit(f->st, &error), <, 0);
        g_assert_nonnull(error);
        g_clear_error(&error);
        disk = engine_store_disk_get(f->st, "d2", &error);
        g_assert_null(disk);
        g_assert_no_error(error);
        /* The connection is usable again. */
        g_assert_cmpint(engine_store_disk_insert(f->st, "d2", "two", "sd1", "raw", false, 512, "job1", 2, &error), ==, 0);
}

static void test_conditional_locks(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;

        g_assert_cmpint(engine_store_disk_insert(f->st, "d3", "three", "sd1", "raw", false, 512, "job1", 2, &error), ==, 0);
        g_assert_cmpint(engine_store_disk_unlock(f->st, "d3", "job1", "ok", &error), ==, 0);
        g_assert_cmpint(engine_store_disk_lock(f->st, "d3", "job2", "ok", &error), ==, 0);
        /* Locked by job2 now: another lock that expects "ok" loses. */
        g_assert_cmpint(engine_store_disk_lock(f->st, "d3", "job3", "ok", &error), ==, -EBUSY);
        g_assert_no_error(error);
        /* Unlocking for another job changes nothing. */
        g_assert_cmpint(engine_store_disk_unlock(f->st, "d3", "job3", "ok", &error), ==, 0);
        {
                g_autoptr(json_t) d = engine_store_disk_get(f->st, "d3", &error);
                g_assert_cmpstr(json_string_value(json_object_get(d, "job_id")), ==, "job2");
        }
        g_assert_cmpint(engine_store_vm_insert(f->st, "vm", "vm", "", "ok", NULL, NULL, 1, &error), ==, 0);
        g_assert_cmpint(engine_store_vm_lock(f->st, "vm", "job2", &error), ==, 0);
        g_assert_cmpint(engine_store_vm_lock(f->st, "vm", "job3", &error), ==, -EBUSY);
        g_assert_cmpint(engine_store_host_set_maintenance(f->st, "no-such-host", true, &error), ==, -ENOENT);
}

static void test_commands(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) params = json_pack("{s:s, s:s, s:I}", "sd", "sd1", "img", "i1", "bytes", (json_int_t) 1000);
        g_autoptr(json_t) active = NULL;
        g_autoptr(json_t) child = NULL;
        g_autoptr(json_t) cmd_data = json_object();
        g_autoptr(json_t) loads = NULL;
        g_autofree char *user = NULL;
        bool pending = false;
        json_t *load;
        gint64 waiting = -1;

        g_assert_cmpint(engine_store_cmd_insert(f->st, "c1", "move_disk", NULL, "job1", NULL, params, "alice", 1, &error), ==, 0);
        g_assert_cmpint(engine_store_cmd_cancel_job(f->st, "job1", 2, &error), ==, 0);
        /* A child inherits its parent's cancel request. */
        g_assert_cmpint(engine_store_cmd_insert(f->st, "c2", "copy_data", "c1", "job1", NULL, params, NULL, 3, &error), ==, 0);
        child = engine_store_cmd_get(f->st, "c2", &error);
        g_assert_cmpint(json_integer_value(json_object_get(child, "cancel")), ==, 1);
        /* And its user, when none is given. */
        user = engine_store_command_user(f->st, "c2");
        g_assert_cmpstr(user, ==, "alice");
        g_assert_cmpint(engine_store_cmd_mark_sent(f->st, "c2", "h1", "job-a", 4, cmd_data, 4, &error), ==, 0);
        g_assert_cmpint(engine_store_copy_loads(f->st, &loads, &error), ==, 0);
        g_assert_cmpuint(json_array_size(loads), ==, 1);
        load = json_array_get(loads, 0);
        g_assert_cmpstr(json_string_value(json_object_get(load, "host")), ==, "h1");
        g_assert_cmpint(json_integer_value(json_object_get(load, "n")), ==, 1);
        g_assert_cmpfloat(json_number_value(json_object_get(load, "b")), ==, 1000);
        /* Sent: no longer waiting for a host. */
        g_assert_cmpint(engine_store_copies_waiting_before(f->st, 100, &waiting, &error), ==, 0);
        g_assert_cmpint(waiting, ==, 0);
        g_assert_cmpint(engine_store_cmd_insert(f->st, "c3", "remove_image", NULL, NULL, NULL, params, NULL, 5, &error), ==, 0);
        g_assert_cmpint(engine_store_cmd_removal_pending(f->st, "sd1", "i1", &pending, &error), ==, 0);
        g_assert_true(pending);
        g_assert_cmpint(engine_store_cmd_finish(f->st, "c3", true, NULL, 6, &error), ==, 0);
        g_assert_cmpint(engine_store_cmd_removal_pending(f->st, "sd1", "i1", &pending, &error), ==, 0);
        g_assert_false(pending);
        active = engine_store_cmd_active(f->st, &error);
        g_assert_cmpuint(json_array_size(active), ==, 2);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(active, 0), "id")), ==, "c1");
}

/* A database made by an engine of schema 1 is upgraded in place, its rows kept. */
static void test_upgrade_in_place(void)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *dir = g_dir_make_tmp("ferry-store-XXXXXX", &error);
        g_autofree char *path = g_build_filename(dir, "old.db", NULL);
        struct engine_store *st = NULL;
        g_autoptr(json_t) sd = NULL;
        sqlite3 *db;

        g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
        g_assert_cmpint(sqlite3_exec(db,
                "CREATE TABLE options (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE datacenters (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, pool_id TEXT NOT NULL,"
                "  master_sd TEXT, spm_host TEXT, spm_lver INTEGER NOT NULL DEFAULT 0);"
                "CREATE TABLE hosts (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, address TEXT NOT NULL, port INTEGER NOT NULL,"
                "  dc_id TEXT NOT NULL REFERENCES datacenters(id), host_id INTEGER NOT NULL, status TEXT NOT NULL,"
                "  maintenance INTEGER NOT NULL DEFAULT 0, pool_connected INTEGER NOT NULL DEFAULT 0, stats TEXT,"
                "  last_seen INTEGER, created INTEGER NOT NULL, UNIQUE (dc_id, host_id), UNIQUE (address, port));"
                "CREATE TABLE storage_domains (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                "  dc_id TEXT NOT NULL REFERENCES datacenters(id), status TEXT NOT NULL, total INTEGER, free INTEGER,"
                "  created INTEGER NOT NULL);"
                "CREATE TABLE disks (id TEXT PRIMARY KEY, name TEXT NOT NULL, sd_id TEXT NOT NULL REFERENCES storage_domains(id),"
                "  status TEXT NOT NULL, format TEXT NOT NULL, sparse INTEGER NOT NULL, provisioned_size INTEGER NOT NULL,"
                "  actual_size INTEGER NOT NULL DEFAULT 0, progress REAL, description TEXT NOT NULL DEFAULT '',"
                "  job_id TEXT, created INTEGER NOT NULL);"
                "CREATE TABLE volumes (id TEXT NOT NULL, disk_id TEXT NOT NULL, sd_id TEXT NOT NULL, parent TEXT,"
                "  position INTEGER NOT NULL, format TEXT NOT NULL, sparse INTEGER NOT NULL, capacity INTEGER NOT NULL,"
                "  legality TEXT NOT NULL DEFAULT 'LEGAL', generation INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (id, sd_id));"
                "CREATE TABLE jobs (id TEXT PRIMARY KEY, description TEXT NOT NULL, status TEXT NOT NULL,"
                "  progress REAL NOT NULL DEFAULT 0, start_time INTEGER NOT NULL, end_time INTEGER, command_id TEXT);"
                "CREATE TABLE steps (id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id), command_id TEXT,"
                "  description TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,"
                "  weight REAL NOT NULL DEFAULT 0, execution_host TEXT, start_time INTEGER NOT NULL, end_time INTEGER);"
                "CREATE TABLE commands (id TEXT PRIMARY KEY, type TEXT NOT NULL, parent_id TEXT, job_id TEXT, step_id TEXT,"
                "  state TEXT NOT NULL, phase TEXT NOT NULL DEFAULT '', params TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}',"
                "  host TEXT, agent_job_id TEXT, generation INTEGER, attempts INTEGER NOT NULL DEFAULT 0,"
                "  error TEXT, created INTEGER NOT NULL, updated INTEGER NOT NULL);"
                "CREATE INDEX commands_active ON commands(state);"
                "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, severity TEXT NOT NULL,"
                "  message TEXT NOT NULL, command_id TEXT);"
                "INSERT INTO datacenters (id, name, pool_id) VALUES ('dc', 'Default', 'pool');"
                "INSERT INTO storage_domains (id, name, dc_id, status, created) VALUES ('sd', 'kept', 'dc', 'active', 1);"
                "PRAGMA user_version = 1;", NULL, NULL, NULL), ==, SQLITE_OK);
        sqlite3_close(db);

        g_assert_cmpint(engine_store_open(path, &st, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(engine_store_schema_version(st), >, 1);
        sd = engine_store_sd_get(st, "sd", &error);
        g_assert_cmpstr(json_string_value(json_object_get(sd, "name")), ==, "kept");
        /* Tables of later migrations are there. */
        g_assert_cmpint(engine_store_vm_insert(st, "vm", "vm", "", "ok", NULL, NULL, 1, &error), ==, 0);
        engine_store_close(st);
        /* A database newer than this engine is refused, not touched. */
        g_assert_cmpint(sqlite3_open(path, &db), ==, SQLITE_OK);
        g_assert_cmpint(sqlite3_exec(db, "PRAGMA user_version = 999;", NULL, NULL, NULL), ==, SQLITE_OK);
        sqlite3_close(db);
        g_assert_cmpint(engine_store_open(path, &st, &error), <, 0);
        g_assert_nonnull(error);
        g_test_message("%s", error->message);
        g_clear_error(&error);
        /* Not a backend this engine has. */
        g_assert_cmpint(engine_store_open("postgresql://db/ferry", &st, &error), ==, -EPROTONOSUPPORT);
        g_clear_error(&error);
        {
                g_autofree char *wal = g_strconcat(path, "-wal", NULL);
                g_autofree char *shm = g_strconcat(path, "-shm", NULL);

                g_unlink(path);
                g_unlink(wal);
                g_unlink(shm);
                g_rmdir(dir);
        }
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add("/store/round-trip", struct fixture, NULL, setup, test_round_trip, teardown);
        g_test_add("/store/all-or-nothing", struct fixture, NULL, setup, test_all_or_nothing, teardown);
        g_test_add("/store/conditional-locks", struct fixture, NULL, setup, test_conditional_locks, teardown);
        g_test_add("/store/commands", struct fixture, NULL, setup, test_commands, teardown);
        g_test_add_func("/store/upgrade-in-place", test_upgrade_in_place);
        return g_test_run();
}
