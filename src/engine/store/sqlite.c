/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The SQLite backend of the store (WAL, one connection, used from the main
 * thread only): schema migrations by PRAGMA user_version, values always
 * bound, rows back as JSON objects (column -> value). The only file of the
 * engine that calls sqlite3_*.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include <sqlite3.h>

#include "backend.h"
#include "error.h"

/*
 * Prepared statements are kept by their SQL text and reused (reset after
 * each run, so none holds a read transaction open): the store runs the same
 * few hundred statements again and again, and parsing one cost about as much
 * as running it (a REST page of 100 disks: bench/README.md "bench/scale").
 * Statements past this many are prepared and finalized per run, so SQL built
 * at run time cannot grow the cache without end.
 */
#define STMT_CACHE_MAX 512

struct sqlite_store {
        sqlite3 *sql;
        char *path;
        GHashTable *stmts;             /* SQL text -> sqlite3_stmt, kept prepared */
};

/*
 * Schema migrations, applied in order; PRAGMA user_version counts how many
 * ran. Never edit a shipped entry: add one.
 */
static const char *const migrations[] = {
        /* 1: inventory, persistent commands, jobs and steps, audit log */
        "CREATE TABLE options (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE datacenters ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, pool_id TEXT NOT NULL,"
        "  master_sd TEXT, spm_host TEXT, spm_lver INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE hosts ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, address TEXT NOT NULL, port INTEGER NOT NULL,"
        "  dc_id TEXT NOT NULL REFERENCES datacenters(id), host_id INTEGER NOT NULL,"
        "  status TEXT NOT NULL, maintenance INTEGER NOT NULL DEFAULT 0, pool_connected INTEGER NOT NULL DEFAULT 0,"
        "  stats TEXT, last_seen INTEGER, created INTEGER NOT NULL,"
        "  UNIQUE (dc_id, host_id), UNIQUE (address, port));"
        "CREATE TABLE storage_domains ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, dc_id TEXT NOT NULL REFERENCES datacenters(id),"
        "  status TEXT NOT NULL, total INTEGER, free INTEGER, created INTEGER NOT NULL);"
        "CREATE TABLE disks ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL, sd_id TEXT NOT NULL REFERENCES storage_domains(id),"
        "  status TEXT NOT NULL, format TEXT NOT NULL, sparse INTEGER NOT NULL, provisioned_size INTEGER NOT NULL,"
        "  actual_size INTEGER NOT NULL DEFAULT 0, progress REAL, description TEXT NOT NULL DEFAULT '',"
        "  job_id TEXT, created INTEGER NOT NULL);"
        "CREATE TABLE volumes ("
        "  id TEXT NOT NULL, disk_id TEXT NOT NULL, sd_id TEXT NOT NULL, parent TEXT, position INTEGER NOT NULL,"
        "  format TEXT NOT NULL, sparse INTEGER NOT NULL, capacity INTEGER NOT NULL,"
        "  legality TEXT NOT NULL DEFAULT 'LEGAL', generation INTEGER NOT NULL DEFAULT 0,"
        "  PRIMARY KEY (id, sd_id));"
        "CREATE TABLE jobs ("
        "  id TEXT PRIMARY KEY, description TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,"
        "  start_time INTEGER NOT NULL, end_time INTEGER, command_id TEXT);"
        "CREATE TABLE steps ("
        "  id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id), command_id TEXT, description TEXT NOT NULL,"
        "  type TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0, weight REAL NOT NULL DEFAULT 0,"
        "  execution_host TEXT, start_time INTEGER NOT NULL, end_time INTEGER);"
        "CREATE TABLE commands ("
        "  id TEXT PRIMARY KEY, type TEXT NOT NULL, parent_id TEXT, job_id TEXT, step_id TEXT,"
        "  state TEXT NOT NULL, phase TEXT NOT NULL DEFAULT '', params TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}',"
        "  host TEXT, agent_job_id TEXT, generation INTEGER, attempts INTEGER NOT NULL DEFAULT 0,"
        "  error TEXT, created INTEGER NOT NULL, updated INTEGER NOT NULL);"
        "CREATE INDEX commands_active ON commands(state);"
        "CREATE TABLE events ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, severity TEXT NOT NULL,"
        "  message TEXT NOT NULL, command_id TEXT);",
        /* 2: why a step waits ("waiting for a host") */
        "ALTER TABLE steps ADD COLUMN detail TEXT;",
        /* 3: cancellation requested for a command (inherited by the children it creates) */
        "ALTER TABLE commands ADD COLUMN cancel INTEGER NOT NULL DEFAULT 0;",
        /* 4: image transfers (upload/download through a host's ticket endpoint, transfers.c) */
        "CREATE TABLE image_transfers ("
        "  id TEXT PRIMARY KEY, disk_id TEXT NOT NULL, sd_id TEXT NOT NULL, vol_id TEXT NOT NULL,"
        "  direction TEXT NOT NULL, phase TEXT NOT NULL, host TEXT, ticket TEXT NOT NULL, transfer_url TEXT,"
        "  job_id TEXT, size INTEGER NOT NULL, timeout INTEGER NOT NULL, transferred INTEGER NOT NULL DEFAULT 0,"
        "  last_activity INTEGER NOT NULL, generation INTEGER, agent_job_id TEXT, prior_status TEXT NOT NULL,"
        "  cancel TEXT, error TEXT, created INTEGER NOT NULL, updated INTEGER NOT NULL);"
        "CREATE INDEX image_transfers_phase ON image_transfers(phase);",
        /* 5: VMs and templates (inventory only), the disks attached to each, snapshots (vms.c) */
        "CREATE TABLE vms ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',"
        "  status TEXT NOT NULL, template_id TEXT, job_id TEXT, created INTEGER NOT NULL);"
        "CREATE TABLE templates ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',"
        "  status TEXT NOT NULL, vm_id TEXT, job_id TEXT, created INTEGER NOT NULL);"
        "CREATE TABLE disk_attachments ("
        "  disk_id TEXT PRIMARY KEY, vm_id TEXT, template_id TEXT, bootable INTEGER NOT NULL DEFAULT 0,"
        "  interface TEXT NOT NULL DEFAULT 'virtio_scsi', created INTEGER NOT NULL,"
        "  CHECK ((vm_id IS NULL) <> (template_id IS NULL)));"
        "CREATE INDEX disk_attachments_vm ON disk_attachments(vm_id);"
        "CREATE INDEX disk_attachments_template ON disk_attachments(template_id);"
        "CREATE TABLE snapshots ("
        "  id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,"
        "  disks TEXT NOT NULL DEFAULT '[]', job_id TEXT, created INTEGER NOT NULL);"
        "CREATE INDEX snapshots_vm ON snapshots(vm_id);",
        /* 6: the REST request's correlation id, kept with the job it started and on its events */
        "ALTER TABLE jobs ADD COLUMN correlation_id TEXT;"
        "ALTER TABLE events ADD COLUMN correlation_id TEXT;"
        "CREATE INDEX events_correlation ON events(correlation_id);",
        /* 7: users of the REST API (password hashes, roles), their tokens (hashes only), who caused an event */
        "CREATE TABLE users ("
        "  name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, created INTEGER NOT NULL);"
        "CREATE TABLE tokens ("
        "  hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, created INTEGER NOT NULL, last_used INTEGER NOT NULL);"
        "CREATE INDEX tokens_user ON tokens(user_name);"
        "ALTER TABLE events ADD COLUMN user_name TEXT;",
        /* 8: who started a command (children inherit it): the events of its flow name them */
        "ALTER TABLE commands ADD COLUMN user_name TEXT;",
        /* 9: a copy step verified by checksum (issue 16) and its digest */
        "ALTER TABLE steps ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE steps ADD COLUMN checksum TEXT;",
        /* 10: GET /api/disks?search=name=...: the disks of a name, in id order for keyset paging */
        "CREATE INDEX disks_name ON disks(name, id);",
        /* 11: the lookups by disk, job and start time that read whole tables: a move's cost grew with the
         * inventory (bench/scale), and a copy's progress update scanned every disk */
        "CREATE INDEX volumes_disk ON volumes(disk_id, sd_id, position);"
        "CREATE INDEX steps_job ON steps(job_id);"
        "CREATE INDEX commands_job ON commands(job_id);"
        "CREATE INDEX disks_job ON disks(job_id);"
        "CREATE INDEX jobs_start ON jobs(start_time);",
        /* 12: a copy's placement counts the copies waiting before it and reads the running ones, each pick:
         * with ten thousand moves queued both scanned every active command (bench/scale, PostgreSQL) */
        "CREATE INDEX commands_type ON commands(type, state, created);",
};

static void sqlite_close(void *handle);
static int sqlite_schema_version(void *handle);

static void stmt_free(gpointer st)
{
        sqlite3_finalize(st);
}

static int fail(struct sqlite_store *db, GError **error, const char *what)
{
        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: %s: %s", db->path, what, sqlite3_errmsg(db->sql));
        return -EIO;
}

static int exec_plain(struct sqlite_store *db, const char *sql, GError **error)
{
        char *msg = NULL;

        if (sqlite3_exec(db->sql, sql, NULL, NULL, &msg) != SQLITE_OK) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: %s", db->path, msg ? msg : "error");
                sqlite3_free(msg);
                return -EIO;
        }
        return 0;
}

static int migrate(struct sqlite_store *db, GError **error)
{
        int version = sqlite_schema_version(db);

        if (version > (int) G_N_ELEMENTS(migrations)) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "database %s has schema version %d, newer than this engine knows (%d); "
                            "run a newer ferry-engine", db->path, version, (int) G_N_ELEMENTS(migrations));
                return -EPROTO;
        }
        for (int v = version; v < (int) G_N_ELEMENTS(migrations); v++) {
                g_autofree char *bump = g_strdup_printf("PRAGMA user_version = %d;", v + 1);

                if (exec_plain(db, "BEGIN IMMEDIATE;", error) < 0)
                        return -EIO;
                if (exec_plain(db, migrations[v], error) < 0 || exec_plain(db, bump, error) < 0) {
                        exec_plain(db, "ROLLBACK;", NULL);
                        g_prefix_error(error, "schema migration %d: ", v + 1);
                        return -EIO;
                }
                if (exec_plain(db, "COMMIT;", error) < 0)
                        return -EIO;
        }
        return 0;
}

static int sqlite_open(const char *path, const char *client, void **ret, GError **error)
{
        struct sqlite_store *db = g_new0(struct sqlite_store, 1);
        int r;

        db->path = g_strdup(path);
        db->stmts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, stmt_free);
        if (sqlite3_open_v2(path, &db->sql, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
                r = fail(db, error, "cannot open");
                sqlite_close(db);
                return r;
        }
        sqlite3_extended_result_codes(db->sql, 1);
        sqlite3_busy_timeout(db->sql, 5000);
        /* WAL: readers never block the writer; NORMAL sync is durable across engine crashes. */
        if ((r = exec_plain(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                            error)) < 0 ||
            (r = migrate(db, error)) < 0) {
                sqlite_close(db);
                return r;
        }
        *ret = db;
        return 0;
}

static void sqlite_close(void *handle)
{
        struct sqlite_store *db = handle;

        if (!db)
                return;
        /* Before the close, which refuses a connection with statements left. */
        g_hash_table_destroy(db->stmts);
        sqlite3_close(db->sql);
        g_free(db->path);
        g_free(db);
}

static const char *sqlite_describe(void *handle)
{
        struct sqlite_store *db = handle;

        return db->path;
}

static int sqlite_schema_version(void *handle)
{
        struct sqlite_store *db = handle;
        sqlite3_stmt *st;
        int v = -1;

        if (sqlite3_prepare_v2(db->sql, "PRAGMA user_version;", -1, &st, NULL) != SQLITE_OK)
                return -1;
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        return v;
}

static int bind_args(struct sqlite_store *db, sqlite3_stmt *st, const char *types, va_list ap, GError **error)
{
        int n = (int) strlen(types);

        if (sqlite3_bind_parameter_count(st) != n) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "internal error: %d bind values for %d parameters in %s",
                            n, sqlite3_bind_parameter_count(st), sqlite3_sql(st));
                return -EINVAL;
        }
        for (int i = 0; i < n; i++) {
                int rc;

                switch (types[i]) {
                case 's': {
                        const char *s = va_arg(ap, const char *);
                        rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i + 1);
                        break;
                }
                case 'i':
                        rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, gint64));
                        break;
                case 'd':
                        rc = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
                        break;
                case 'b':
                        rc = sqlite3_bind_int(st, i + 1, va_arg(ap, gboolean) ? 1 : 0);
                        break;
                case 'j': {
                        json_t *j = va_arg(ap, json_t *);
                        if (j) {
                                char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
                                rc = sqlite3_bind_text(st, i + 1, text, -1, SQLITE_TRANSIENT);
                                free(text);
                        } else {
                                rc = sqlite3_bind_null(st, i + 1);
                        }
                        break;
                }
                default:
                        g_assert_not_reached();
                }
                if (rc != SQLITE_OK)
                        return fail(db, error, "bind");
        }
        return 0;
}

/* After a run of a statement from prepare(): reset for the next run if kept, else finalized. */
static void release(struct sqlite_store *db, sqlite3_stmt *st)
{
        if (g_hash_table_lookup(db->stmts, sqlite3_sql(st)) == st) {
                sqlite3_reset(st);
                sqlite3_clear_bindings(st);
        } else {
                sqlite3_finalize(st);
        }
}

static sqlite3_stmt *prepare(struct sqlite_store *db, GError **error, const char *sql, const char *types, va_list ap)
{
        sqlite3_stmt *st = g_hash_table_lookup(db->stmts, sql);

        if (!st) {
                bool keep = g_hash_table_size(db->stmts) < STMT_CACHE_MAX;

                if (sqlite3_prepare_v3(db->sql, sql, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) != SQLITE_OK) {
                        fail(db, error, sql);
                        return NULL;
                }
                /* sqlite3_sql() is the text up to the first statement's end: keyed by it, release() finds it. */
                if (keep && strcmp(sqlite3_sql(st), sql) == 0)
                        g_hash_table_insert(db->stmts, g_strdup(sql), st);
        }
        if (bind_args(db, st, types, ap, error) < 0) {
                release(db, st);
                return NULL;
        }
        return st;
}

static int sqlite_exec(void *handle, GError **error, const char *sql, const char *types, va_list ap)
{
        struct sqlite_store *db = handle;
        sqlite3_stmt *st;
        int rc;

        st = prepare(db, error, sql, types, ap);
        if (!st)
                return -EIO;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                ;
        if (rc != SQLITE_DONE) {
                int r;

                if ((rc & 0xff) == SQLITE_CONSTRAINT) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "conflicts with existing data: %s",
                                    sqlite3_errmsg(db->sql));
                        r = -EEXIST;
                } else {
                        r = fail(db, error, sql);
                }
                release(db, st);
                return r;
        }
        release(db, st);
        return 0;
}

static json_t *column_value(sqlite3_stmt *st, int c)
{
        switch (sqlite3_column_type(st, c)) {
        case SQLITE_INTEGER:
                return json_integer(sqlite3_column_int64(st, c));
        case SQLITE_FLOAT:
                return json_real(sqlite3_column_double(st, c));
        case SQLITE_NULL:
                return json_null();
        default:
                return json_stringn((const char *) sqlite3_column_text(st, c), (size_t) sqlite3_column_bytes(st, c));
        }
}

static json_t *query_va(struct sqlite_store *db, GError **error, bool one, const char *sql, const char *types, va_list ap)
{
        sqlite3_stmt *st = prepare(db, error, sql, types, ap);
        json_t *rows;
        int rc;

        if (!st)
                return NULL;
        rows = json_array();
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                json_t *row = json_object();

                for (int c = 0; c < sqlite3_column_count(st); c++)
                        json_object_set_new(row, sqlite3_column_name(st, c), column_value(st, c));
                json_array_append_new(rows, row);
                if (one)
                        break;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                fail(db, error, sql);
                json_decref(rows);
                rows = NULL;
        }
        release(db, st);
        return rows;
}

static json_t *sqlite_query(void *handle, GError **error, bool one, const char *sql, const char *types, va_list ap)
{
        return query_va(handle, error, one, sql, types, ap);
}

static gint64 sqlite_changes(void *handle)
{
        struct sqlite_store *db = handle;

        return sqlite3_changes64(db->sql);
}

/* The outermost transaction only: store.c counts the nesting. */
static int sqlite_begin(void *handle, GError **error)
{
        return exec_plain(handle, "BEGIN IMMEDIATE;", error);
}

static int sqlite_commit(void *handle, GError **error)
{
        struct sqlite_store *db = handle;

        if (exec_plain(db, "COMMIT;", error) < 0) {
                /* Never leave the connection inside a half-done transaction. */
                exec_plain(db, "ROLLBACK;", NULL);
                return -EIO;
        }
        return 0;
}

static void sqlite_rollback(void *handle)
{
        exec_plain(handle, "ROLLBACK;", NULL);
}

const struct engine_store_backend engine_store_sqlite = {
        .name = "sqlite",
        .open = sqlite_open,
        .close = sqlite_close,
        .describe = sqlite_describe,
        .schema_version = sqlite_schema_version,
        .begin = sqlite_begin,
        .commit = sqlite_commit,
        .rollback = sqlite_rollback,
        .exec = sqlite_exec,
        .query = sqlite_query,
        .changes = sqlite_changes,
};
