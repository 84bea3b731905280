/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The engine's store on each backend, in process: typed functions
 * round-trip, a transaction is all or nothing (a write that failed inside
 * makes the commit fail and roll back), conditional locks refuse what
 * moved on, and a database of an older schema upgrades in place. The
 * PostgreSQL cases run against a real PostgreSQL 15 cluster the test
 * starts in a temp folder (scripts/pg-test-cluster), one database per test.
 */
#include <errno.h>
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "engine.h"
#include "leader.h"
#include "store/internal.h"
#include "store/store.h"

#ifdef FERRY_HAVE_POSTGRESQL
#include <libpq-fe.h>

static char *pg_dir;          /* the cluster's folder */
static char *pg_admin;        /* connection string of its database "postgres" */
#endif

struct fixture {
        char *dir;
        char *path;           /* SQLite: the file; PostgreSQL: the connection string */
        char *pg_name;        /* PostgreSQL: the test's database */
        struct engine_store *st;
};

#ifdef FERRY_HAVE_POSTGRESQL
static char *cluster_script(void)
{
        return g_test_build_filename(G_TEST_DIST, "..", "..", "scripts", "pg-test-cluster", NULL);
}

static void pg_admin_exec(const char *sql)
{
        PGconn *c = PQconnectdb(pg_admin);
        PGresult *res;

        g_assert_cmpint(PQstatus(c), ==, CONNECTION_OK);
        res = PQexec(c, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
                g_error("%s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(c);
}

static void pg_exec_in(const char *conninfo, const char *sql)
{
        PGconn *c = PQconnectdb(conninfo);
        PGresult *res;

        g_assert_cmpint(PQstatus(c), ==, CONNECTION_OK);
        res = PQexec(c, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
                g_error("%s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(c);
}

/* A fresh database in the cluster; its connection string. */
static char *pg_new_database(char **ret_name)
{
        static unsigned n;
        g_autofree char *name = g_strdup_printf("store_%u", ++n);
        g_autofree char *create = g_strdup_printf("CREATE DATABASE %s", name);
        g_autofree char *base = g_strndup(pg_admin, strlen(pg_admin) - strlen("postgres"));

        pg_admin_exec(create);
        *ret_name = g_steal_pointer(&name);
        return g_strconcat(base, *ret_name, NULL);
}

static void pg_cluster(const char *cmd)
{
        g_autofree char *script = cluster_script();
        g_autofree char *pid = g_strdup_printf("%d", (int) getpid());
        /* start: with our pid, so the cluster goes away with this process even when an assertion aborts it */
        const char *argv[] = { script, cmd, pg_dir, g_str_equal(cmd, "start") ? pid : NULL, NULL };
        g_autofree char *out = NULL;
        g_autofree char *err = NULL;
        g_autoptr(GError) error = NULL;
        int status = 0;

        g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status, &error);
        g_assert_no_error(error);
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("pg-test-cluster %s: %s", cmd, err);
        if (g_str_equal(cmd, "start") && !pg_admin)
                pg_admin = g_strdup(g_strstrip(out));
}
#endif

static void setup(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;

        f->dir = g_dir_make_tmp("ferry-store-XXXXXX", &error);
        g_assert_no_error(error);
#ifdef FERRY_HAVE_POSTGRESQL
        if (data)
                f->path = pg_new_database(&f->pg_name);
        else
#endif
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
#ifdef FERRY_HAVE_POSTGRESQL
        if (f->pg_name) {
                g_autofree char *drop = g_strdup_printf("DROP DATABASE %s", f->pg_name);
                pg_admin_exec(drop);
                g_free(f->pg_name);
        }
#endif
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

/* A merge applied inside a round: top's child on base, top's row gone; applied again, nothing to do. */
static void test_merge_apply(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) vols = NULL;

        g_assert_cmpint(engine_store_disk_insert(f->st, "dm", "merged", "sd1", "cow", true, 1 << 20, "job1", 1, &error),
                        ==, 0);
        g_assert_cmpint(engine_store_volume_insert(f->st, "m0", "dm", "sd1", NULL, 0, "cow", true, 1 << 20, &error), ==, 0);
        g_assert_cmpint(engine_store_volume_insert(f->st, "m1", "dm", "sd1", "m0", 1, "cow", true, 2 << 20, &error), ==, 0);
        g_assert_cmpint(engine_store_volume_insert(f->st, "m2", "dm", "sd1", "m1", 2, "cow", true, 2 << 20, &error), ==, 0);
        for (int round = 0; round < 2; round++) {
                g_assert_cmpint(engine_store_begin(f->st, &error), ==, 0);
                g_assert_cmpint(engine_store_merge_apply(f->st, "vm-none", "dm", "sd1", "m1", "m0", &error), ==, 0);
                g_assert_cmpint(engine_store_commit(f->st, &error), ==, 0);
                g_assert_no_error(error);
        }
        vols = engine_store_volume_list(f->st, "dm", "sd1", &error);
        g_assert_no_error(error);
        g_assert_cmpuint(json_array_size(vols), ==, 2);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(vols, 0), "id")), ==, "m0");
        g_assert_cmpint(json_integer_value(json_object_get(json_array_get(vols, 0), "capacity")), ==, 2 << 20);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(vols, 1), "id")), ==, "m2");
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(vols, 1), "parent")), ==, "m0");
        g_assert_cmpint(json_integer_value(json_object_get(json_array_get(vols, 1), "position")), ==, 1);
}

/* Keyset pages of disks: by id, after a token, of one name; the same on every backend. Then jobs and events,
 * newest first (jobs by start time, ties in insertion order), which have no name. */
static void test_disk_page(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) all = NULL;
        g_autoptr(json_t) named = NULL;
        g_autoptr(json_t) rest = NULL;
        static const char *const ids[] = { "d5", "d1", "d4", "d2", "d3" };

        for (size_t i = 0; i < G_N_ELEMENTS(ids); i++)
                g_assert_cmpint(engine_store_disk_insert(f->st, ids[i], i % 2 ? "odd" : "even", "sd1", "raw", false, 1,
                                                         "job1", 1, &error), ==, 0);
        all = engine_store_page(f->st, ENGINE_STORE_PAGE_DISKS, NULL, NULL, 2, &error);
        g_assert_cmpuint(json_array_size(all), ==, 2);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(all, 0), "id")), ==, "d1");
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(all, 1), "id")), ==, "d2");
        rest = engine_store_page(f->st, ENGINE_STORE_PAGE_DISKS, "d2", NULL, 10, &error);
        g_assert_cmpuint(json_array_size(rest), ==, 3);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(rest, 0), "id")), ==, "d3");
        named = engine_store_page(f->st, ENGINE_STORE_PAGE_DISKS, NULL, "even", 10, &error);
        g_assert_cmpuint(json_array_size(named), ==, 3);          /* d5, d4, d3 */
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(named, 0), "id")), ==, "d3");
        json_decref(named);
        named = engine_store_page(f->st, ENGINE_STORE_PAGE_DISKS, "d3", "even", 1, &error);
        g_assert_cmpuint(json_array_size(named), ==, 1);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(named, 0), "id")), ==, "d4");
        g_assert_no_error(error);

        /* Jobs j1..j4 after the fixture's job1; j2 and j3 start in the same second. */
        g_assert_cmpint(engine_store_job_insert(f->st, "j1", "one", NULL, 10, &error), ==, 0);
        g_assert_cmpint(engine_store_job_insert(f->st, "j2", "two", NULL, 20, &error), ==, 0);
        g_assert_cmpint(engine_store_job_insert(f->st, "j3", "three", NULL, 20, &error), ==, 0);
        g_assert_cmpint(engine_store_job_insert(f->st, "j4", "four", NULL, 30, &error), ==, 0);
        json_decref(all);
        all = engine_store_page(f->st, ENGINE_STORE_PAGE_JOBS, NULL, NULL, 2, &error);
        g_assert_cmpuint(json_array_size(all), ==, 2);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(all, 1), "id")), ==, "j3");
        json_decref(rest);
        rest = engine_store_page(f->st, ENGINE_STORE_PAGE_JOBS, "j3", NULL, 10, &error);
        g_assert_cmpuint(json_array_size(rest), ==, 3);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(rest, 0), "id")), ==, "j2");
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(rest, 1), "id")), ==, "j1");
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(rest, 2), "id")), ==, "job1");
        g_assert_no_error(error);
        /* After the last job: an empty page. After a job that is gone (swept): an error, not the end. */
        json_decref(rest);
        rest = engine_store_page(f->st, ENGINE_STORE_PAGE_JOBS, "job1", NULL, 10, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(json_array_size(rest), ==, 0);
        g_assert_null(engine_store_page(f->st, ENGINE_STORE_PAGE_JOBS, "swept", NULL, 10, &error));
        g_assert_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER);
        g_clear_error(&error);
        g_assert_null(engine_store_page(f->st, ENGINE_STORE_PAGE_JOBS, NULL, "one", 10, &error));
        g_assert_nonnull(error);
        g_clear_error(&error);

        for (int i = 0; i < 5; i++)
                g_assert_cmpint(engine_store_event_add(f->st, i, "normal", "e", NULL, NULL, NULL, &error), ==, 0);
        json_decref(all);
        all = engine_store_page(f->st, ENGINE_STORE_PAGE_EVENTS, NULL, NULL, 2, &error);
        g_assert_cmpuint(json_array_size(all), ==, 2);
        {
                json_int_t second = json_integer_value(json_object_get(json_array_get(all, 1), "id"));
                g_autofree char *token = g_strdup_printf("%" JSON_INTEGER_FORMAT, second);

                g_assert_cmpint(json_integer_value(json_object_get(json_array_get(all, 0), "id")), >, second);
                json_decref(rest);
                rest = engine_store_page(f->st, ENGINE_STORE_PAGE_EVENTS, token, NULL, 10, &error);
                g_assert_cmpuint(json_array_size(rest), ==, 3);
                g_assert_cmpint(json_integer_value(json_object_get(json_array_get(rest, 0), "id")), <, second);
        }
        g_assert_no_error(error);
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
        g_autoptr(GArray) waiting = NULL;

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
        /* Sent: no longer waiting for a host; two new ones wait, listed oldest first. */
        g_assert_cmpint(engine_store_copies_waiting(f->st, &waiting, &error), ==, 0);
        g_assert_cmpuint(waiting->len, ==, 0);
        g_clear_pointer(&waiting, g_array_unref);
        g_assert_cmpint(engine_store_cmd_insert(f->st, "c5", "copy_data", NULL, "job1", NULL, params, NULL, 9, &error), ==, 0);
        g_assert_cmpint(engine_store_cmd_insert(f->st, "c4", "copy_data", NULL, "job1", NULL, params, NULL, 7, &error), ==, 0);
        g_assert_cmpint(engine_store_copies_waiting(f->st, &waiting, &error), ==, 0);
        g_assert_cmpuint(waiting->len, ==, 2);
        g_assert_cmpint(g_array_index(waiting, gint64, 0), ==, 7);
        g_assert_cmpint(g_array_index(waiting, gint64, 1), ==, 9);
        g_assert_cmpint(engine_store_cmd_finish(f->st, "c4", false, NULL, 10, &error), ==, 0);
        g_assert_cmpint(engine_store_cmd_finish(f->st, "c5", false, NULL, 10, &error), ==, 0);
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
#ifndef FERRY_HAVE_POSTGRESQL
        /* Not a backend this engine has. */
        g_assert_cmpint(engine_store_open("postgresql://db/ferry", &st, &error), ==, -EPROTONOSUPPORT);
        g_clear_error(&error);
#endif
        {
                g_autofree char *wal = g_strconcat(path, "-wal", NULL);
                g_autofree char *shm = g_strconcat(path, "-shm", NULL);

                g_unlink(path);
                g_unlink(wal);
                g_unlink(shm);
                g_rmdir(dir);
        }
}

#ifdef FERRY_HAVE_POSTGRESQL
/* A PostgreSQL database of schema 4 (before VMs) is upgraded in place, its rows kept; a newer one is refused. */
static void test_pg_upgrade_in_place(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) sd = NULL;
        int latest = engine_store_schema_version(f->st);

        g_assert_cmpint(latest, >=, 12);
        engine_store_close(f->st);
        f->st = NULL;
        /* Back to schema 4: what migrations 5-12 made, gone. */
        pg_exec_in(f->path, "DROP INDEX disks_name, volumes_disk, steps_job, commands_job, disks_job, jobs_start, "
                            "commands_type;"
                            "DROP TABLE vms, templates, disk_attachments, snapshots, users, tokens;"
                            "ALTER TABLE jobs DROP COLUMN correlation_id;"
                            "ALTER TABLE events DROP COLUMN correlation_id, DROP COLUMN user_name;"
                            "ALTER TABLE commands DROP COLUMN user_name;"
                            "ALTER TABLE steps DROP COLUMN verified, DROP COLUMN checksum;"
                            "UPDATE ferry_schema SET version = 4");
        g_assert_cmpint(engine_store_open(f->path, &f->st, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(engine_store_schema_version(f->st), ==, latest);
        sd = engine_store_sd_get(f->st, "sd1", &error);
        g_assert_cmpstr(json_string_value(json_object_get(sd, "name")), ==, "one");
        g_assert_cmpint(engine_store_vm_insert(f->st, "vm", "vm", "", "ok", NULL, NULL, 1, &error), ==, 0);
        engine_store_close(f->st);
        f->st = NULL;
        pg_exec_in(f->path, "UPDATE ferry_schema SET version = 999");
        g_assert_cmpint(engine_store_open(f->path, &f->st, &error), ==, -EPROTO);
        g_test_message("%s", error->message);
}

/* Rows come back typed as from SQLite; insertion order holds; '?N' placeholders bind. */
static void test_pg_types(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) steps = NULL;
        g_autoptr(json_t) deps = NULL;
        double p = 0;

        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, G_GINT64_CONSTANT(1) << 40, "job1", 2,
                                                 &error), ==, 0);
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_true(json_is_integer(json_object_get(disk, "provisioned_size")));
        g_assert_cmpint(json_integer_value(json_object_get(disk, "provisioned_size")), ==, G_GINT64_CONSTANT(1) << 40);
        g_assert_cmpint(json_integer_value(json_object_get(disk, "sparse")), ==, 1);
        g_assert_true(json_is_real(json_object_get(disk, "progress")));
        g_assert_null(json_object_get(disk, "rowid"));
        g_assert_cmpstr(json_string_value(json_object_get(disk, "description")), ==, "");
        /* Steps keep insertion order for equal start times (SQLite's rowid, a hidden column here). */
        g_assert_cmpint(engine_store_step_insert(f->st, "s-b", "job1", "b", "t", 50, 7, &error), ==, 0);
        g_assert_cmpint(engine_store_step_insert(f->st, "s-a", "job1", "a", "t", 50, 7, &error), ==, 0);
        g_assert_cmpint(engine_store_step_update(f->st, "s-b", "running", 40, "h1", 8, &error), ==, 0);
        /* Progress never goes back. */
        g_assert_cmpint(engine_store_step_update(f->st, "s-b", "running", 10, NULL, 9, &error), ==, 0);
        g_assert_cmpint(engine_store_step_update(f->st, "s-a", "finished", 100, NULL, 9, &error), ==, 0);
        steps = engine_store_step_list(f->st, "job1", &error);
        g_assert_cmpstr(json_string_value(json_object_get(json_array_get(steps, 0), "id")), ==, "s-b");
        g_assert_cmpfloat(json_number_value(json_object_get(json_array_get(steps, 0), "progress")), ==, 40);
        g_assert_cmpint(json_integer_value(json_object_get(json_array_get(steps, 1), "end_time")), ==, 9);
        g_assert_cmpint(engine_store_job_step_progress(f->st, "job1", &p, &error), ==, 0);
        g_assert_cmpfloat(p, ==, 70);
        g_assert_cmpint(engine_store_step_wait(f->st, "s-b", "waiting for a host", false, &error), ==, 0);
        g_assert_cmpint(engine_store_step_wait(f->st, "s-b", "waiting for a host", false, &error), ==, 0);
        /* Numbered placeholders, used twice. */
        g_assert_cmpint(engine_store_template_insert(f->st, "t1", "tpl", "", NULL, NULL, 1, &error), ==, 0);
        deps = engine_store_template_dependents(f->st, "t1", 10, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(json_array_size(deps), ==, 0);
        g_assert_cmpint(engine_store_event_add(f->st, 1, "normal", "one", NULL, NULL, NULL, &error), ==, 0);
        g_assert_cmpint(engine_store_event_add(f->st, 2, "normal", "two", NULL, NULL, NULL, &error), ==, 0);
        {
                g_autoptr(json_t) ev = engine_store_event_list(f->st, NULL, 1, &error);
                g_assert_cmpuint(json_array_size(ev), ==, 1);
                g_assert_cmpstr(json_string_value(json_object_get(json_array_get(ev, 0), "message")), ==, "two");
                g_assert_true(json_is_integer(json_object_get(json_array_get(ev, 0), "id")));
        }
}

/* A PostgreSQL restart under an open store: the store reconnects by itself; nothing is lost. */

/* Review repro (rv14b): the epoch fence refuses a deposed leader's late writes, in and outside a transaction. */
static void on_deposed_flag(void *data)
{
        *(bool *) data = true;
}

static void test_pg_fencing(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) disk = NULL;
        struct engine_store *data_a = NULL, *lock_a = NULL, *lock_b = NULL;
        gint64 ep_a = 0, ep_b = 0;
        bool deposed = false;

        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);   /* the takeover warns */
        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 512, "job1", 2, &error), ==, 0);
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine A", &data_a, &error), ==, 0);
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine A", &lock_a, &error), ==, 0);
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine B", &lock_b, &error), ==, 0);
        g_assert_cmpint(engine_store_leader_prepare(lock_a, &error), ==, 0);
        engine_store_set_fence(data_a, 0, on_deposed_flag, &deposed);
        /* A standby (epoch 0) writes nothing. */
        g_assert_cmpint(engine_store_disk_set_actual_size(data_a, "d1", 1, &error), ==, -ESTALE);
        g_clear_error(&error);
        g_assert_false(deposed);
        /* But it logs the logins it serves. */
        g_assert_cmpint(engine_store_event_add(data_a, 1, "normal", "standby login", NULL, NULL, NULL, &error), ==, 0);
        /* A query writes nothing: the fence looks at store_exec's statements only. */
        g_assert_null(store_query(data_a, &error, " UPDATE disks SET actual_size = 9", ""));
        g_assert_error(error, FY_ERROR, FY_ERR_GENERAL);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_leader_try(lock_a, "ferry-engine A", "urlA", 5, &ep_a, &error), ==, 1);
        engine_store_set_fence(data_a, ep_a, on_deposed_flag, &deposed);
        g_assert_cmpint(engine_store_disk_set_actual_size(data_a, "d1", 2, &error), ==, 0);
        /* B cannot take while A holds the lock and renews. */
        g_assert_cmpint(engine_store_leader_try(lock_b, "ferry-engine B", "urlB", 5, &ep_b, &error), ==, 0);
        /* A's transaction checked the epoch: B's takeover waits for it (lock_timeout) and fails. */
        g_assert_cmpint(engine_store_begin(data_a, &error), ==, 0);
        g_assert_cmpint(engine_store_disk_set_actual_size(data_a, "d1", 3, &error), ==, 0);
        /* ...but A's own lease renewal does not wait for it (lock_timeout 2 s would fail it). */
        {
                gint64 t0 = g_get_monotonic_time();

                g_assert_cmpint(engine_store_leader_renew(lock_a, ep_a, &error), ==, 0);
                g_assert_no_error(error);
                g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC);
        }
        /* A stale lease (0 s): B ends every session of A, the open transaction's too. */
        g_usleep(20 * G_TIME_SPAN_MILLISECOND);
        g_assert_cmpint(engine_store_leader_try(lock_b, "ferry-engine B", "urlB", 0, &ep_b, &error), ==, 0);
        g_assert_no_error(error);
        for (int i = 0; i < 50 && ep_b == 0; i++) {
                g_usleep(100 * G_TIME_SPAN_MILLISECOND);
                g_clear_error(&error);
                if (engine_store_leader_try(lock_b, "ferry-engine B", "urlB", 0, &ep_b, &error) < 0)
                        g_test_message("take-over try: %s", error ? error->message : "failed");
        }
        g_assert_cmpint(ep_b, ==, ep_a + 1);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_commit(data_a, &error), <, 0);
        g_clear_error(&error);
        /* A's late writes after the takeover: refused, in and outside a transaction; A learns it. */
        for (int i = 0; i < 20 && engine_store_disk_set_actual_size(data_a, "d1", 4, &error) == -EIO; i++) {
                g_clear_error(&error);
                g_usleep(200 * G_TIME_SPAN_MILLISECOND);   /* the reconnect backoff */
        }
        g_assert_true(deposed);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_begin(data_a, &error), ==, 0);
        g_assert_cmpint(engine_store_disk_set_actual_size(data_a, "d1", 5, &error), ==, -ESTALE);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_commit(data_a, &error), <, 0);
        g_clear_error(&error);
        /* Nor an event ("host down") of the deposed term: only a never-leading standby's pass. */
        g_assert_cmpint(engine_store_event_add(data_a, 2, "error", "late", NULL, NULL, NULL, &error), ==, -ESTALE);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_leader_renew(lock_a, ep_a, &error), <, 0);
        g_clear_error(&error);
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_cmpint(json_integer_value(json_object_get(disk, "actual_size")), ==, 2);
        engine_store_close(data_a);
        engine_store_close(lock_a);
        engine_store_close(lock_b);
        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL);
}

/* The leadership policy (leader.c) over a real session: hooks that only count. */
static int leader_elected(struct engine *e, GError **error)
{
        return 0;
}

static unsigned leader_deposed_calls;

static void leader_deposed(struct engine *e)
{
        leader_deposed_calls++;
}

static void leader_nop(struct engine *e)
{
}

static const struct engine_leader_hooks leader_hooks = { leader_elected, leader_deposed, leader_nop, leader_nop };

/* A leader that steps down no longer names itself the active engine: a write to it meanwhile is a 503
 * (rest.c redirect_to_leader: no URL), not a 307 to itself. */
static void test_pg_step_down_forgets_url(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        struct engine engine = { 0 };
        struct engine *e = &engine;

        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);   /* the step-down warns */
        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 512, "job1", 2, &error), ==, 0);
        e->config.db = f->path;
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine T", &e->db, &error), ==, 0);
        leader_deposed_calls = 0;
        g_assert_cmpint(engine_leader_init(e, "ferry-engine T", "https://t.example:1", &leader_hooks, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_true(engine_leader_active(e));
        g_assert_cmpstr(engine_leader_url(e), ==, "https://t.example:1");
        /* Another engine's term (its epoch) begins: our next write is refused and deposes us. */
        pg_exec_in(f->path, "UPDATE engine_leader SET epoch = epoch + 1, url = 'https://other.example:2'");
        g_assert_cmpint(engine_store_disk_set_actual_size(e->db, "d1", 1, &error), ==, -ESTALE);
        g_clear_error(&error);
        g_assert_cmpuint(leader_deposed_calls, ==, 1);
        g_assert_false(engine_leader_active(e));
        g_assert_null(engine_leader_url(e));
        engine_leader_free(e);
        engine_store_close(e->db);
        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL);
}

/* Advisory locks held on the server now (the leader's lock), as another session sees them. */
static gint64 pg_advisory_locks(struct engine_store *st)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = store_query_one(st, &error, "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'",
                                                "");

        g_assert_no_error(error);
        return json_integer_value(json_object_get(row, "n"));
}

/* A standby's try: it may fail (-EIO: lock_timeout while an ended backend exits) before it wins. */
static gint64 pg_take_over(struct engine_store *lock, const char *id, gint64 lease_s)
{
        g_autoptr(GError) error = NULL;
        gint64 epoch = 0;

        for (int i = 0; i < 20 && epoch == 0; i++) {
                int r;

                g_clear_error(&error);
                r = engine_store_leader_try(lock, id, "urlB", lease_s, &epoch, &error);
                if (r < 0)
                        g_test_message("take-over try: %s", error ? error->message : "failed");
                g_assert_cmpint(r, >=, -EIO);
                if (epoch == 0)
                        g_usleep(100 * G_TIME_SPAN_MILLISECOND);
        }
        return epoch;
}

/* A leader whose main loop stalls (here: never runs) gives the lead up after leader_stall_timeout, though its
 * renewal thread is well: its sessions end (a transaction holding the leader row FOR KEY SHARE too, which a
 * takeover would wait for), its term ends in the leader row (so its late writes are refused before any standby
 * took over), the lock goes, a standby takes over, and the engine steps down once its loop runs. */
static void test_pg_stalled_leader_gives_up(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        struct engine engine = { 0 };
        struct engine *e = &engine;
        struct engine_store *lock_b = NULL;
        int r;

        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);   /* the give-up warns */
        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 512, "job1", 2, &error), ==, 0);
        e->config.db = f->path;
        e->config.leader_stall_timeout = 1;
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine S", &e->db, &error), ==, 0);
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine B", &lock_b, &error), ==, 0);
        leader_deposed_calls = 0;
        g_assert_cmpint(engine_leader_init(e, "ferry-engine S", "https://s.example:1", &leader_hooks, &error), ==, 0);
        g_assert_true(engine_leader_active(e));
        g_assert_cmpint(engine_leader_epoch(e), ==, 1);
        /* The main loop's transaction checked the epoch (FOR KEY SHARE) and hangs there. */
        g_assert_cmpint(engine_store_begin(e->db, &error), ==, 0);
        g_assert_cmpint(engine_store_disk_set_actual_size(e->db, "d1", 1, &error), ==, 0);
        /* The give-up is done when the lock is gone (its last step). */
        for (int i = 0; i < 100 && pg_advisory_locks(f->st) > 0; i++)
                g_usleep(100 * G_TIME_SPAN_MILLISECOND);
        g_assert_cmpint(pg_advisory_locks(f->st), ==, 0);
        g_assert_false(engine_leader_fresh(e));
        g_assert_cmpint(engine_store_commit(e->db, &error), <, 0);     /* its session was ended */
        g_clear_error(&error);
        /* The term ended in the row: before any standby tried, the stuck loop's next write is refused. */
        row = engine_store_leader_get(f->st, &error);
        g_assert_cmpint(json_integer_value(json_object_get(row, "epoch")), ==, 2);
        g_assert_true(json_is_null(json_object_get(row, "holder")));
        g_assert_true(json_is_null(json_object_get(row, "url")));
        for (int i = 0; i < 20 && (r = engine_store_disk_set_actual_size(e->db, "d1", 2, &error)) == -EIO; i++) {
                g_clear_error(&error);
                g_usleep(200 * G_TIME_SPAN_MILLISECOND);   /* the reconnect backoff */
        }
        g_assert_cmpint(r, ==, -ESTALE);
        g_clear_error(&error);
        g_assert_cmpuint(leader_deposed_calls, ==, 1);
        g_assert_false(engine_leader_active(e));
        g_assert_null(engine_leader_url(e));
        /* A standby takes over. */
        g_assert_cmpint(pg_take_over(lock_b, "ferry-engine B", 30), ==, 3);
        /* The main loop runs again (the give-up's step-down): nothing more. */
        for (int i = 0; i < 20; i++)
                if (!g_main_context_iteration(NULL, FALSE))
                        g_usleep(10 * G_TIME_SPAN_MILLISECOND);
        g_assert_cmpuint(leader_deposed_calls, ==, 1);
        {
                g_autoptr(json_t) disk = engine_store_disk_get(f->st, "d1", &error);

                g_assert_cmpint(json_integer_value(json_object_get(disk, "actual_size")), ==, 0);
        }
        engine_leader_free(e);
        engine_store_close(e->db);
        engine_store_close(lock_b);
        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL);
}

/*
 * The old leader's lock session is gone (the lock is free) but a session of
 * its stuck main loop still holds the leader row FOR KEY SHARE: a standby's
 * epoch update times out. Once the heartbeat is older than the lease the
 * standby ends that session too, and its next try wins.
 */
static void test_pg_takeover_past_stuck_row(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        struct engine_store *data_a = NULL, *lock_a = NULL, *lock_b = NULL;
        gint64 ep_a = 0, ep_b = 0;
        bool deposed = false;

        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);   /* the takeover warns */
        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 512, "job1", 2, &error), ==, 0);
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine A", &data_a, &error), ==, 0);
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine A", &lock_a, &error), ==, 0);
        g_assert_cmpint(engine_store_open_as(f->path, "ferry-engine B", &lock_b, &error), ==, 0);
        g_assert_cmpint(engine_store_leader_prepare(lock_a, &error), ==, 0);
        g_assert_cmpint(engine_store_leader_try(lock_a, "ferry-engine A", "urlA", 5, &ep_a, &error), ==, 1);
        engine_store_set_fence(data_a, ep_a, on_deposed_flag, &deposed);
        g_assert_cmpint(engine_store_begin(data_a, &error), ==, 0);
        g_assert_cmpint(engine_store_disk_set_actual_size(data_a, "d1", 3, &error), ==, 0);
        engine_store_close(lock_a);                                    /* the lock goes with its session */
        g_usleep(20 * G_TIME_SPAN_MILLISECOND);
        /* The first try takes the lock, times out on the row, and ends A's sessions (lease 0: stale). */
        g_assert_cmpint(engine_store_leader_try(lock_b, "ferry-engine B", "urlB", 0, &ep_b, &error), ==, -EIO);
        g_clear_error(&error);
        g_assert_cmpint(pg_take_over(lock_b, "ferry-engine B", 0), ==, ep_a + 1);
        g_assert_cmpint(engine_store_commit(data_a, &error), <, 0);
        g_clear_error(&error);
        engine_store_close(data_a);
        engine_store_close(lock_b);
        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL);
}

/*
 * Another engine's migration changes a table under a prepared SELECT *
 * (0A000, "cached plan must not change result type"): outside a
 * transaction it is prepared again at once; inside one the transaction
 * fails, and the next transaction prepares it again.
 */
static void test_pg_stale_plan(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        json_t *disk;

        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 512, "job1", 2, &error), ==, 0);
        disk = engine_store_disk_get(f->st, "d1", &error);     /* prepared now */
        g_assert_nonnull(disk);
        json_decref(disk);
        pg_exec_in(f->path, "ALTER TABLE disks ADD COLUMN extra1 integer");
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_no_error(error);
        g_assert_nonnull(disk);
        json_decref(disk);
        pg_exec_in(f->path, "ALTER TABLE disks ADD COLUMN extra2 integer");
        g_assert_cmpint(engine_store_begin(f->st, &error), ==, 0);
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_null(disk);
        g_assert_nonnull(error);
        g_clear_error(&error);
        engine_store_rollback(f->st);
        for (int i = 0; i < 2; i++) {                          /* every later transaction works */
                g_assert_cmpint(engine_store_begin(f->st, &error), ==, 0);
                disk = engine_store_disk_get(f->st, "d1", &error);
                g_assert_no_error(error);
                g_assert_nonnull(json_object_get(disk, "extra2"));
                json_decref(disk);
                g_assert_cmpint(engine_store_commit(f->st, &error), ==, 0);
        }
}

/* The session's limits: {lock_timeout, statement_timeout, pid} as the server says. */
static json_t *pg_session(struct engine_store *st)
{
        g_autoptr(GError) error = NULL;
        json_t *row = store_query_one(st, &error,
                                      "SELECT current_setting('lock_timeout') AS lock_timeout,"
                                      " current_setting('statement_timeout') AS statement_timeout,"
                                      " pg_backend_pid() AS pid", "");

        g_assert_no_error(error);
        g_assert_nonnull(row);
        return row;
}

/*
 * engine_store_set_limits: set on the session at once, and again on the
 * session a reconnect makes (here the server ended the first one, as a
 * restart does), where they still bound a statement.
 */
static void test_pg_limits(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) before = NULL;
        g_autoptr(json_t) after = NULL;
        g_autoptr(json_t) slept = NULL;
        g_autofree char *end = NULL;

        g_assert_cmpint(engine_store_set_limits(f->st, 35000, 36000, &error), ==, 0);
        g_assert_no_error(error);
        before = pg_session(f->st);
        g_assert_cmpstr(json_string_value(json_object_get(before, "lock_timeout")), ==, "35s");
        g_assert_cmpstr(json_string_value(json_object_get(before, "statement_timeout")), ==, "36s");
        /* Waits (up to 5 s) until the session is gone. */
        end = g_strdup_printf("SELECT pg_terminate_backend(%" G_GINT64_FORMAT ", 5000)",
                              (gint64) json_integer_value(json_object_get(before, "pid")));
        pg_exec_in(f->path, end);
        after = pg_session(f->st);
        g_assert_cmpint(json_integer_value(json_object_get(after, "pid")), !=,
                        json_integer_value(json_object_get(before, "pid")));
        g_assert_cmpstr(json_string_value(json_object_get(after, "lock_timeout")), ==, "35s");
        g_assert_cmpstr(json_string_value(json_object_get(after, "statement_timeout")), ==, "36s");
        /* And they act: a statement longer than its limit is cancelled. */
        g_assert_cmpint(engine_store_set_limits(f->st, 100, 200, &error), ==, 0);
        slept = store_query_one(f->st, &error, "SELECT pg_sleep(5)", "");
        g_assert_null(slept);
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error->message, "statement timeout"));
}

/*
 * A statement the server refuses to prepare reports the server's own error,
 * in a transaction too: there the refused prepare aborted the transaction,
 * and running the statement again reported only "current transaction is
 * aborted".
 */
static void test_pg_prepare_error(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;

        g_assert_null(store_query(f->st, &error, "SELECT no_such_column FROM disks", ""));
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error->message, "column \"no_such_column\" does not exist"));
        g_clear_error(&error);
        g_assert_cmpint(engine_store_begin(f->st, &error), ==, 0);
        g_assert_cmpint(store_exec(f->st, &error, "UPDATE disks SET no_such_column = 1", ""), <, 0);
        g_assert_nonnull(error);
        g_test_message("%s", error->message);
        g_assert_nonnull(strstr(error->message, "column \"no_such_column\" of relation \"disks\" does not exist"));
        g_assert_null(strstr(error->message, "transaction is aborted"));
        g_clear_error(&error);
        g_assert_cmpint(engine_store_commit(f->st, &error), <, 0);
        g_clear_error(&error);
        /* The connection is fine afterwards. */
        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 512, "job1", 2, &error), ==, 0);
        g_assert_no_error(error);
}

static void test_pg_restart(struct fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) disk = NULL;

        g_assert_cmpint(engine_store_disk_insert(f->st, "d1", "disk", "sd1", "cow", true, 512, "job1", 2, &error), ==, 0);
        pg_cluster("restart");
        /* The server cut the idle connection off: a read is retried on a new one. */
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_no_error(error);
        g_assert_cmpstr(json_string_value(json_object_get(disk, "name")), ==, "disk");
        pg_cluster("restart");
        /* A write too: the server refused it as it shut down (57P01), so it never ran and is retried. */
        g_assert_cmpint(engine_store_disk_set_actual_size(f->st, "d1", 77, &error), ==, 0);
        g_assert_no_error(error);
        /* A transaction open across a restart fails as a whole; the next one works. */
        g_assert_cmpint(engine_store_begin(f->st, &error), ==, 0);
        g_assert_cmpint(engine_store_disk_set_actual_size(f->st, "d1", 88, &error), ==, 0);
        pg_cluster("restart");
        g_assert_cmpint(engine_store_disk_set_actual_size(f->st, "d1", 99, &error), <, 0);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_commit(f->st, &error), <, 0);
        g_clear_error(&error);
        json_decref(disk);
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_no_error(error);
        g_assert_cmpint(json_integer_value(json_object_get(disk, "actual_size")), ==, 77);
        /* Unreachable: statements fail (no hang, no crash) until the server is back. */
        pg_cluster("stop");
        json_decref(disk);
        disk = engine_store_disk_get(f->st, "d1", &error);
        g_assert_null(disk);
        g_assert_nonnull(error);
        g_test_message("%s", error->message);
        g_clear_error(&error);
        g_assert_cmpint(engine_store_disk_set_actual_size(f->st, "d1", 5, &error), <, 0);
        g_clear_error(&error);
        pg_cluster("start");
}
#endif

int main(int argc, char **argv)
{
        int r;

        g_test_init(&argc, &argv, NULL);
        g_test_add("/store/round-trip", struct fixture, NULL, setup, test_round_trip, teardown);
        g_test_add("/store/all-or-nothing", struct fixture, NULL, setup, test_all_or_nothing, teardown);
        g_test_add("/store/conditional-locks", struct fixture, NULL, setup, test_conditional_locks, teardown);
        g_test_add("/store/disk-page", struct fixture, NULL, setup, test_disk_page, teardown);
        g_test_add("/store/merge-apply", struct fixture, NULL, setup, test_merge_apply, teardown);
        g_test_add("/store/commands", struct fixture, NULL, setup, test_commands, teardown);
        g_test_add_func("/store/upgrade-in-place", test_upgrade_in_place);
#ifdef FERRY_HAVE_POSTGRESQL
        /* Built with PostgreSQL: its cases run, against a real server (install-deps installs postgresql-15). */
        {
                g_autoptr(GError) error = NULL;

                pg_dir = g_dir_make_tmp("ferry-store-pg-XXXXXX", &error);
                g_assert_no_error(error);
                pg_cluster("start");
        }
        g_test_add("/store/postgresql/round-trip", struct fixture, "pg", setup, test_round_trip, teardown);
        g_test_add("/store/postgresql/all-or-nothing", struct fixture, "pg", setup, test_all_or_nothing, teardown);
        g_test_add("/store/postgresql/conditional-locks", struct fixture, "pg", setup, test_conditional_locks, teardown);
        g_test_add("/store/postgresql/disk-page", struct fixture, "pg", setup, test_disk_page, teardown);
        g_test_add("/store/postgresql/merge-apply", struct fixture, "pg", setup, test_merge_apply, teardown);
        g_test_add("/store/postgresql/commands", struct fixture, "pg", setup, test_commands, teardown);
        g_test_add("/store/postgresql/types", struct fixture, "pg", setup, test_pg_types, teardown);
        g_test_add("/store/postgresql/upgrade-in-place", struct fixture, "pg", setup, test_pg_upgrade_in_place, teardown);
        g_test_add("/store/postgresql/fencing", struct fixture, "pg", setup, test_pg_fencing, teardown);
        g_test_add("/store/postgresql/restart", struct fixture, "pg", setup, test_pg_restart, teardown);
        g_test_add("/store/postgresql/stale-plan", struct fixture, "pg", setup, test_pg_stale_plan, teardown);
        g_test_add("/store/postgresql/step-down-forgets-url", struct fixture, "pg", setup, test_pg_step_down_forgets_url,
                   teardown);
        g_test_add("/store/postgresql/stalled-leader-gives-up", struct fixture, "pg", setup,
                   test_pg_stalled_leader_gives_up, teardown);
        g_test_add("/store/postgresql/takeover-past-stuck-row", struct fixture, "pg", setup,
                   test_pg_takeover_past_stuck_row, teardown);
        g_test_add("/store/postgresql/limits", struct fixture, "pg", setup, test_pg_limits, teardown);
        g_test_add("/store/postgresql/prepare-error", struct fixture, "pg", setup, test_pg_prepare_error, teardown);
#endif
        r = g_test_run();
#ifdef FERRY_HAVE_POSTGRESQL
        {
                const char *argv_rm[] = { "rm", "-rf", pg_dir, NULL };

                pg_cluster("stop");
                g_spawn_sync(NULL, (char **) argv_rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
        }
#endif
        return r;
}
