/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The PostgreSQL backend of the store (libpq, one connection, used from the
 * main thread only, like sqlite.c). The store's statements are portable SQL
 * with '?' (or '?N') placeholders: they become $N here, and every value is
 * sent as text for the server to type from its context. Rows come back as
 * JSON objects typed by the column's type: integers as integers, floats and
 * numerics as numbers, booleans as booleans, json/jsonb as JSON.
 *
 * The schema mirrors SQLite's, type for type (INTEGER -> BIGINT, REAL ->
 * DOUBLE PRECISION, TEXT -> TEXT COLLATE "C" so names sort byte-wise as in
 * SQLite), so a row reads the same from either backend. SQLite's implicit
 * rowid, which the store orders by to keep insertion order, is an explicit
 * BIGSERIAL column "rowid" here, hidden from rows as SQLite hides its own.
 *
 * Connection loss (a PostgreSQL restart, a network cut): the statement that
 * found it fails, like any store error; the next statements reconnect, with
 * a backoff between attempts (0.1 s doubling to 5 s) so a dead server does
 * not cost a connect per statement. A statement outside a transaction is
 * retried once on a fresh connection when it cannot have run: a read, or a
 * write the server refused because it was shutting down (SQLSTATE 57P01-3).
 * Inside a transaction nothing is retried: the transaction fails.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backend.h"
#include "error.h"

/* Type OIDs of the results we convert (catalog/pg_type_d.h, stable since forever). */
enum {
        PG_BOOL = 16,
        PG_INT8 = 20,
        PG_INT2 = 21,
        PG_INT4 = 23,
        PG_OID = 26,
        PG_JSON = 114,
        PG_FLOAT4 = 700,
        PG_FLOAT8 = 701,
        PG_NUMERIC = 1700,
        PG_JSONB = 3802,
};

/* A statement has at most this many placeholders (the store's largest has 16). */
#define PG_MAX_PARAMS 64
#define PG_BACKOFF_MIN_US (100 * G_TIME_SPAN_MILLISECOND)
#define PG_BACKOFF_MAX_US (5 * G_TIME_SPAN_SECOND)
/*
 * Statements are prepared on the connection (named, parsed and planned once)
 * the first time they run on it, as SQLite's are kept (sqlite.c): a REST page
 * is then two round trips without a parse or a plan on the server. Past this
 * many per connection they run unnamed, so SQL built at run time cannot grow
 * the server's memory without end.
 */
#define PG_PREPARED_MAX 512
/* A key for pg_advisory_xact_lock: engines starting together migrate one after another. */
#define PG_MIGRATION_LOCK 0x66657272 /* "ferr" */

struct pg_store {
        PGconn *conn;
        char *name;                    /* for messages: database@host:port, never the password */
        GHashTable *sql;               /* store SQL -> its $N form (struct pg_sql) */
        bool in_tx;                    /* inside the (outermost: store.c counts the nesting) transaction */
        bool broken;                   /* a statement failed in it: PostgreSQL aborted it, its commit must fail */
        gint64 changes;
        gint64 next_connect;           /* monotonic time of the next reconnect attempt */
        gint64 backoff;
        guint64 conn_serial;           /* counts connections made: a statement prepared on an older one is not on this */
        unsigned prepared;             /* statements prepared on this connection */
        unsigned next_name;
        guint64 setup_on;              /* conn_serial whose session settings are set (session_setup) */
        bool limits;                   /* set_limits was called: the two below are set on every connection */
        unsigned lock_timeout_ms;
        unsigned statement_timeout_ms;
};

struct pg_sql {
        char *text;
        int nparams;
        char name[24];                 /* of its prepared statement */
        guint64 prepared_on;           /* conn_serial it is prepared on; 0: none */
        guint64 stale_on;              /* conn_serial holding a plan that went stale in a transaction */
};

/*
 * Schema migrations, one per SQLite migration of the same number (sqlite.c):
 * the version is the count applied, in table ferry_schema. Never edit a
 * shipped entry: add one, in both backends.
 */
#define T "TEXT COLLATE \"C\""
#define I "BIGINT"
#define R "DOUBLE PRECISION"
#define ROWID "rowid BIGSERIAL"
static const char *const migrations[] = {
        /* 1: inventory, persistent commands, jobs and steps, audit log */
        "CREATE TABLE options (name " T " PRIMARY KEY, value " T " NOT NULL, " ROWID ");"
        "CREATE TABLE datacenters ("
        "  id " T " PRIMARY KEY, name " T " NOT NULL UNIQUE, pool_id " T " NOT NULL,"
        "  master_sd " T ", spm_host " T ", spm_lver " I " NOT NULL DEFAULT 0, " ROWID ");"
        "CREATE TABLE hosts ("
        "  id " T " PRIMARY KEY, name " T " NOT NULL UNIQUE, address " T " NOT NULL, port " I " NOT NULL,"
        "  dc_id " T " NOT NULL REFERENCES datacenters(id), host_id " I " NOT NULL,"
        "  status " T " NOT NULL, maintenance " I " NOT NULL DEFAULT 0, pool_connected " I " NOT NULL DEFAULT 0,"
        "  stats " T ", last_seen " I ", created " I " NOT NULL, " ROWID ","
        "  UNIQUE (dc_id, host_id), UNIQUE (address, port));"
        "CREATE TABLE storage_domains ("
        "  id " T " PRIMARY KEY, name " T " NOT NULL UNIQUE, dc_id " T " NOT NULL REFERENCES datacenters(id),"
        "  status " T " NOT NULL, total " I ", free " I ", created " I " NOT NULL, " ROWID ");"
        "CREATE TABLE disks ("
        "  id " T " PRIMARY KEY, name " T " NOT NULL, sd_id " T " NOT NULL REFERENCES storage_domains(id),"
        "  status " T " NOT NULL, format " T " NOT NULL, sparse " I " NOT NULL, provisioned_size " I " NOT NULL,"
        "  actual_size " I " NOT NULL DEFAULT 0, progress " R ", description " T " NOT NULL DEFAULT '',"
        "  job_id " T ", created " I " NOT NULL, " ROWID ");"
        "CREATE TABLE volumes ("
        "  id " T " NOT NULL, disk_id " T " NOT NULL, sd_id " T " NOT NULL, parent " T ", position " I " NOT NULL,"
        "  format " T " NOT NULL, sparse " I " NOT NULL, capacity " I " NOT NULL,"
        "  legality " T " NOT NULL DEFAULT 'LEGAL', generation " I " NOT NULL DEFAULT 0, " ROWID ","
        "  PRIMARY KEY (id, sd_id));"
        "CREATE TABLE jobs ("
        "  id " T " PRIMARY KEY, description " T " NOT NULL, status " T " NOT NULL, progress " R " NOT NULL DEFAULT 0,"
        "  start_time " I " NOT NULL, end_time " I ", command_id " T ", " ROWID ");"
        "CREATE TABLE steps ("
        "  id " T " PRIMARY KEY, job_id " T " NOT NULL REFERENCES jobs(id), command_id " T ", description " T " NOT NULL,"
        "  type " T " NOT NULL, status " T " NOT NULL, progress " R " NOT NULL DEFAULT 0, weight " R " NOT NULL DEFAULT 0,"
        "  execution_host " T ", start_time " I " NOT NULL, end_time " I ", " ROWID ");"
        "CREATE TABLE commands ("
        "  id " T " PRIMARY KEY, type " T " NOT NULL, parent_id " T ", job_id " T ", step_id " T ","
        "  state " T " NOT NULL, phase " T " NOT NULL DEFAULT '', params " T " NOT NULL, data " T " NOT NULL DEFAULT '{}',"
        "  host " T ", agent_job_id " T ", generation " I ", attempts " I " NOT NULL DEFAULT 0,"
        "  error " T ", created " I " NOT NULL, updated " I " NOT NULL, " ROWID ");"
        "CREATE INDEX commands_active ON commands(state);"
        "CREATE TABLE events ("
        "  id BIGSERIAL PRIMARY KEY, time " I " NOT NULL, severity " T " NOT NULL,"
        "  message " T " NOT NULL, command_id " T ");",
        /* 2: why a step waits ("waiting for a host") */
        "ALTER TABLE steps ADD COLUMN detail " T ";",
        /* 3: cancellation requested for a command (inherited by the children it creates) */
        "ALTER TABLE commands ADD COLUMN cancel " I " NOT NULL DEFAULT 0;",
        /* 4: image transfers (upload/download through a host's ticket endpoint, transfers.c) */
        "CREATE TABLE image_transfers ("
        "  id " T " PRIMARY KEY, disk_id " T " NOT NULL, sd_id " T " NOT NULL, vol_id " T " NOT NULL,"
        "  direction " T " NOT NULL, phase " T " NOT NULL, host " T ", ticket " T " NOT NULL, transfer_url " T ","
        "  job_id " T ", size " I " NOT NULL, timeout " I " NOT NULL, transferred " I " NOT NULL DEFAULT 0,"
        "  last_activity " I " NOT NULL, generation " I ", agent_job_id " T ", prior_status " T " NOT NULL,"
        "  cancel " T ", error " T ", created " I " NOT NULL, updated " I " NOT NULL, " ROWID ");"
        "CREATE INDEX image_transfers_phase ON image_transfers(phase);",
        /* 5: VMs and templates (inventory only), the disks attached to each, snapshots (vms.c) */
        "CREATE TABLE vms ("
        "  id " T " PRIMARY KEY, name " T " NOT NULL UNIQUE, description " T " NOT NULL DEFAULT '',"
        "  status " T " NOT NULL, template_id " T ", job_id " T ", created " I " NOT NULL, " ROWID ");"
        "CREATE TABLE templates ("
        "  id " T " PRIMARY KEY, name " T " NOT NULL UNIQUE, description " T " NOT NULL DEFAULT '',"
        "  status " T " NOT NULL, vm_id " T ", job_id " T ", created " I " NOT NULL, " ROWID ");"
        "CREATE TABLE disk_attachments ("
        "  disk_id " T " PRIMARY KEY, vm_id " T ", template_id " T ", bootable " I " NOT NULL DEFAULT 0,"
        "  interface " T " NOT NULL DEFAULT 'virtio_scsi', created " I " NOT NULL, " ROWID ","
        "  CHECK ((vm_id IS NULL) <> (template_id IS NULL)));"
        "CREATE INDEX disk_attachments_vm ON disk_attachments(vm_id);"
        "CREATE INDEX disk_attachments_template ON disk_attachments(template_id);"
        "CREATE TABLE snapshots ("
        "  id " T " PRIMARY KEY, vm_id " T " NOT NULL, description " T " NOT NULL DEFAULT '', status " T " NOT NULL,"
        "  disks " T " NOT NULL DEFAULT '[]', job_id " T ", created " I " NOT NULL, " ROWID ");"
        "CREATE INDEX snapshots_vm ON snapshots(vm_id);",
        /* 6: the REST request's correlation id, kept with the job it started and on its events */
        "ALTER TABLE jobs ADD COLUMN correlation_id " T ";"
        "ALTER TABLE events ADD COLUMN correlation_id " T ";"
        "CREATE INDEX events_correlation ON events(correlation_id);",
        /* 7: users of the REST API (password hashes, roles), their tokens (hashes only), who caused an event */
        "CREATE TABLE users ("
        "  name " T " PRIMARY KEY, hash " T " NOT NULL, role " T " NOT NULL, created " I " NOT NULL, " ROWID ");"
        "CREATE TABLE tokens ("
        "  hash " T " PRIMARY KEY, user_name " T " NOT NULL, created " I " NOT NULL, last_used " I " NOT NULL, " ROWID ");"
        "CREATE INDEX tokens_user ON tokens(user_name);"
        "ALTER TABLE events ADD COLUMN user_name " T ";",
        /* 8: who started a command (children inherit it): the events of its flow name them */
        "ALTER TABLE commands ADD COLUMN user_name " T ";",
        /* 9: a copy step verified by checksum (issue 16) and its digest */
        "ALTER TABLE steps ADD COLUMN verified " I " NOT NULL DEFAULT 0;"
        "ALTER TABLE steps ADD COLUMN checksum " T ";",
        /* 10: GET /api/disks?search=name=...: the disks of a name, in id order for keyset paging */
        "CREATE INDEX disks_name ON disks(name, id);",
        /* 11: the lookups by disk, job and start time that read whole tables: a move's cost grew with the
         * inventory (bench/scale), and a copy's progress update scanned every disk */
        "CREATE INDEX volumes_disk ON volumes(disk_id, sd_id, position);"
        "CREATE INDEX steps_job ON steps(job_id);"
        "CREATE INDEX commands_job ON commands(job_id);"
        "CREATE INDEX disks_job ON disks(job_id);"
        "CREATE INDEX jobs_start ON jobs(start_time, rowid);",
        /* 12: a copy's placement counts the copies waiting before it and reads the running ones, each pick:
         * with ten thousand moves queued both scanned every active command (bench/scale, PostgreSQL) */
        "CREATE INDEX commands_type ON commands(type, state, created);",
};
#undef T
#undef I
#undef R
#undef ROWID

static void pg_close(void *handle);

/* Server notices and asynchronous errors into the log, not onto stderr. */
static void notice(void *arg, const char *message)
{
        struct pg_store *db = arg;
        g_autofree char *m = g_strdelimit(g_strchomp(g_strdup(message)), "\n\t", ' ');

        g_message("database %s: %s", db->name, m);
}

/* "dbname@host:port" from a connection string, for messages: the password never shows. */
static char *describe(const char *location)
{
        PQconninfoOption *opts = PQconninfoParse(location, NULL);
        const char *db = NULL, *host = NULL, *port = NULL;
        char *name;

        if (!opts)
                return g_strdup("(unparsable PostgreSQL connection string)");
        for (PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val)
                        continue;
                if (strcmp(o->keyword, "dbname") == 0)
                        db = o->val;
                else if (strcmp(o->keyword, "host") == 0)
                        host = o->val;
                else if (strcmp(o->keyword, "port") == 0)
                        port = o->val;
        }
        name = g_strdup_printf("postgresql %s@%s%s%s", db ? db : "(default)", host ? host : "(default host)",
                               port ? ":" : "", port ? port : "");
        PQconninfoFree(opts);
        return name;
}

static int fail_conn(struct pg_store *db, GError **error, const char *what)
{
        g_autofree char *msg = g_strdup(PQerrorMessage(db->conn));

        g_strdelimit(g_strchomp(msg), "\n\t", ' ');
        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: %s: %s", db->name, what, msg);
        return -EIO;
}

static int exec_plain(struct pg_store *db, const char *sql, GError **error);

/*
 * What every connection of the store sets for its session, the first and
 * each one a reconnect makes (a new session starts from the server's
 * defaults): quiet NOTICEs ("relation already exists, skipping": the store
 * logs what matters), and the limits of set_limits, if any.
 */
static int session_setup(struct pg_store *db, GError **error)
{
        g_autofree char *sql = NULL;

        if (db->limits)
                sql = g_strdup_printf("SET client_min_messages = warning; SET lock_timeout = %u;"
                                      " SET statement_timeout = %u", db->lock_timeout_ms, db->statement_timeout_ms);
        if (exec_plain(db, sql ? sql : "SET client_min_messages = warning", error) < 0)
                return -EIO;
        db->setup_on = db->conn_serial;
        return 0;
}

/*
 * The connection, reconnected when lost and the backoff allows, its session
 * set up (a connection whose set-up failed is made again). Inside a
 * transaction a lost connection stays lost: the transaction is gone with it,
 * and its outermost commit or rollback ends it.
 */
static int ensure_connected(struct pg_store *db, GError **error)
{
        gint64 now;

        if (PQstatus(db->conn) == CONNECTION_OK && db->setup_on == db->conn_serial)
                return 0;
        if (db->in_tx) {
                db->broken = true;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: connection lost inside a transaction",
                            db->name);
                return -EIO;
        }
        now = g_get_monotonic_time();
        if (now < db->next_connect) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: unavailable, reconnecting in %.1f s",
                            db->name, (double) (db->next_connect - now) / G_TIME_SPAN_SECOND);
                return -EIO;
        }
        PQreset(db->conn);
        if (PQstatus(db->conn) == CONNECTION_OK) {
                db->conn_serial++;
                db->prepared = 0;
        }
        if (PQstatus(db->conn) != CONNECTION_OK || session_setup(db, error) < 0) {
                db->backoff = db->backoff ? MIN(db->backoff * 2, PG_BACKOFF_MAX_US) : PG_BACKOFF_MIN_US;
                db->next_connect = g_get_monotonic_time() + db->backoff;
                if (PQstatus(db->conn) == CONNECTION_OK) {
                        g_prefix_error(error, "setting up the new connection: ");
                        return -EIO;
                }
                return fail_conn(db, error, "reconnect");
        }
        db->backoff = 0;
        db->next_connect = 0;
        g_message("database %s: reconnected%s", db->name, db->limits ? ", limits set again" : "");
        return 0;
}

/*
 * Whether an idle connection is still there. A server that shut down or
 * restarted sent its goodbye (and closed) while we were idle: the socket is
 * readable, and reading it marks the connection bad, so the statement goes to
 * a new connection instead of failing on the old one. Costs one poll().
 */
static void check_idle(struct pg_store *db)
{
        struct pollfd p = { .fd = PQsocket(db->conn), .events = POLLIN };

        if (db->in_tx || p.fd < 0 || PQstatus(db->conn) != CONNECTION_OK)
                return;
        /* A few rounds: the goodbye message, then the end of the stream. */
        for (int i = 0; i < 4 && poll(&p, 1, 0) == 1; i++)
                if (!PQconsumeInput(db->conn) || PQstatus(db->conn) != CONNECTION_OK) {
                        g_message("database %s: the server closed the connection; reconnecting", db->name);
                        return;
                }
}

/* The store's '?'/'?N' placeholders as $N, outside quoted strings and identifiers. */
static int translate(const char *sql, struct pg_sql **ret, GError **error)
{
        g_autoptr(GString) out = g_string_sized_new(strlen(sql) + 16);
        int next = 0, max = 0;
        char quote = 0;

        for (const char *p = sql; *p; p++) {
                if (quote) {
                        if (*p == quote)
                                quote = 0;       /* a doubled quote reopens at once: same result */
                        g_string_append_c(out, *p);
                } else if (*p == '\'' || *p == '"') {
                        quote = *p;
                        g_string_append_c(out, *p);
                } else if (*p == '?') {
                        int n;

                        if (g_ascii_isdigit(p[1])) {
                                char *end;
                                n = (int) g_ascii_strtoll(p + 1, &end, 10);
                                p = end - 1;
                        } else {
                                n = ++next;
                        }
                        if (n < 1 || n > PG_MAX_PARAMS) {
                                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "internal error: placeholder %d in %s", n, sql);
                                return -EINVAL;
                        }
                        max = MAX(max, n);
                        g_string_append_printf(out, "$%d", n);
                } else {
                        g_string_append_c(out, *p);
                }
        }
        *ret = g_new0(struct pg_sql, 1);
        (*ret)->nparams = max;
        (*ret)->text = g_string_free(g_steal_pointer(&out), FALSE);
        return 0;
}

static void pg_sql_free(gpointer p)
{
        struct pg_sql *s = p;

        g_free(s->text);
        g_free(s);
}

static struct pg_sql *lookup_sql(struct pg_store *db, const char *sql, GError **error)
{
        struct pg_sql *s = g_hash_table_lookup(db->sql, sql);

        if (s)
                return s;
        if (translate(sql, &s, error) < 0)
                return NULL;
        g_snprintf(s->name, sizeof(s->name), "ferry_%u", ++db->next_name);
        g_hash_table_insert(db->sql, g_strdup(sql), s);
        return s;
}

/* A run of a statement: its values as text (values[i] NULL for SQL NULL). */
struct pg_args {
        int n;
        char *values[PG_MAX_PARAMS];
};

static void pg_args_clear(struct pg_args *a)
{
        for (int i = 0; i < a->n; i++)
                free(a->values[i]);     /* from malloc (json_dumps) or g_malloc: both are malloc under GLib >= 2.46 */
}

static int collect_args(const char *sql, int nparams, const char *types, va_list ap, struct pg_args *a,
                        GError **error)
{
        int n = (int) strlen(types);

        if (n != nparams || n > PG_MAX_PARAMS) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "internal error: %d bind values for %d parameters in %s", n,
                            nparams, sql);
                return -EINVAL;
        }
        a->n = 0;
        for (int i = 0; i < n; i++) {
                char *v = NULL;

                switch (types[i]) {
                case 's': {
                        const char *s = va_arg(ap, const char *);
                        v = s ? g_strdup(s) : NULL;
                        break;
                }
                case 'i':
                        v = g_strdup_printf("%" G_GINT64_FORMAT, va_arg(ap, gint64));
                        break;
                case 'd': {
                        char buf[G_ASCII_DTOSTR_BUF_SIZE];
                        v = g_strdup(g_ascii_dtostr(buf, sizeof(buf), va_arg(ap, double)));
                        break;
                }
                case 'b':
                        /* 1/0: valid input for both the integer columns the schema uses and a boolean context. */
                        v = g_strdup(va_arg(ap, gboolean) ? "1" : "0");
                        break;
                case 'j': {
                        json_t *j = va_arg(ap, json_t *);
                        v = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
                        break;
                }
                default:
                        g_assert_not_reached();
                }
                a->values[a->n++] = v;
        }
        return 0;
}

/* Why res failed, one line: the result's message, else the connection's (libpq returns no result at all
 * when it cannot send a statement, and the connection holds the reason). */
static char *result_error(struct pg_store *db, const PGresult *res)
{
        const char *m = res ? PQresultErrorMessage(res) : "";
        char *msg = g_strdup(*m ? m : PQerrorMessage(db->conn));

        if (!*msg) {
                g_free(msg);
                msg = g_strdup("unknown error");
        }
        return g_strdelimit(g_strchomp(msg), "\n\t", ' ');
}

static bool sqlstate_is(const PGresult *res, const char *prefix)
{
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        return state && g_str_has_prefix(state, prefix);
}

/*
 * One run of s: prepared on this connection first if it is not yet (and the
 * connection has room). A statement the server refuses to prepare fails with
 * the prepare's result, the server's own error: run again, inside a
 * transaction (which the refused prepare aborted) it would only report
 * "current transaction is aborted". Only a name already taken on the server
 * (42P05: our count of the connection's statements is off) runs unnamed.
 */
static PGresult *exec_statement(struct pg_store *db, struct pg_sql *s, const struct pg_args *a)
{
        if (s->stale_on && s->stale_on == db->conn_serial) {
                /* Not in the failed transaction any more (it refuses everything): the name is freed first. */
                g_autofree char *dealloc = g_strdup_printf("DEALLOCATE %s", s->name);
                PGresult *d = PQexec(db->conn, dealloc);

                if (PQresultStatus(d) == PGRES_COMMAND_OK) {
                        s->stale_on = 0;
                        db->prepared--;
                }
                PQclear(d);
        }
        if (s->prepared_on != db->conn_serial && s->stale_on != db->conn_serial &&
            db->prepared < PG_PREPARED_MAX && !db->broken) {
                PGresult *p = PQprepare(db->conn, s->name, s->text, s->nparams, NULL);

                if (PQresultStatus(p) == PGRES_COMMAND_OK) {
                        s->prepared_on = db->conn_serial;
                        db->prepared++;
                } else if (!sqlstate_is(p, "42P05")) {
                        return p;
                }
                PQclear(p);
        }
        if (s->prepared_on == db->conn_serial)
                return PQexecPrepared(db->conn, s->name, a->n, (const char *const *) a->values, NULL, NULL, 0);
        return PQexecParams(db->conn, s->text, a->n, NULL, (const char *const *) a->values, NULL, NULL, 0);
}

/*
 * Runs sql with its values; the result, or NULL with *error set. A lost
 * connection outside a transaction is retried once on a new one when the
 * statement cannot have taken effect (see the top of the file).
 */
static PGresult *run(struct pg_store *db, GError **error, bool read_only, const char *sql, const char *types,
                     va_list ap, int *ret_errno)
{
        struct pg_args a = { 0 };
        struct pg_sql *s;
        PGresult *res = NULL;

        *ret_errno = -EIO;
        if (!(s = lookup_sql(db, sql, error)))
                return NULL;
        if (collect_args(sql, s->nparams, types, ap, &a, error) < 0) {
                *ret_errno = -EINVAL;
                return NULL;
        }
        for (int attempt = 0; attempt < 2; attempt++) {
                ExecStatusType status;

                check_idle(db);
                if (ensure_connected(db, error) < 0)
                        break;
                res = exec_statement(db, s, &a);
                status = PQresultStatus(res);
                if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
                        *ret_errno = 0;
                        break;
                }
                /* A prepared SELECT * whose table another engine's migration changed: prepared again. */
                if (sqlstate_is(res, "0A000") && s->prepared_on && attempt == 0 && !db->in_tx) {
                        g_autofree char *dealloc = g_strdup_printf("DEALLOCATE %s", s->name);

                        PQclear(res);
                        res = NULL;
                        PQclear(PQexec(db->conn, dealloc));
                        s->prepared_on = 0;
                        db->prepared--;
                        continue;
                }
                /*
                 * The same inside a transaction, which the error ended: the
                 * caller's retry of the transaction prepares it again (the
                 * stale name is deallocated first, see exec_statement()).
                 */
                if (sqlstate_is(res, "0A000") && s->prepared_on == db->conn_serial && db->in_tx) {
                        s->prepared_on = 0;
                        s->stale_on = db->conn_serial;
                }
                if (PQstatus(db->conn) == CONNECTION_BAD && attempt == 0 && !db->in_tx &&
                    (read_only || sqlstate_is(res, "57P"))) {
                        g_autofree char *msg = result_error(db, res);

                        g_message("database %s: connection lost (%s), reconnecting", db->name, msg);
                        PQclear(res);
                        res = NULL;
                        continue;
                }
                if (sqlstate_is(res, "23")) {
                        g_autofree char *msg = g_strdup(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "conflicts with existing data: %s",
                                    msg ? msg : "constraint violation");
                        *ret_errno = -EEXIST;
                } else {
                        g_autofree char *msg = result_error(db, res);
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: %s: %s", db->name, msg, sql);
                }
                PQclear(res);
                res = NULL;
                break;
        }
        pg_args_clear(&a);
        if (!res && db->in_tx) {
                /*
                 * A failed statement aborts a PostgreSQL transaction; SQLite's carries on, its commit to fail. Keep
                 * SQLite's behaviour: start the transaction over, so the caller's later statements run, and mark
                 * it broken, so its commit rolls back and fails all the same.
                 */
                db->broken = true;
                if (PQstatus(db->conn) == CONNECTION_OK && PQtransactionStatus(db->conn) == PQTRANS_INERROR) {
                        PQclear(PQexec(db->conn, "ROLLBACK"));
                        PQclear(PQexec(db->conn, "BEGIN"));
                }
        }
        return res;
}

/* A plain statement without values (transaction control, migrations). */
static int exec_plain(struct pg_store *db, const char *sql, GError **error)
{
        PGresult *res;
        int r = 0;

        res = PQexec(db->conn, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
                g_autofree char *msg = result_error(db, res);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: %s", db->name, msg);
                r = -EIO;
        }
        PQclear(res);
        return r;
}

static int read_version(struct pg_store *db, GError **error)
{
        PGresult *res = PQexec(db->conn, "SELECT version FROM ferry_schema");
        int v = -1;

        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
                v = (int) g_ascii_strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        else
                fail_conn(db, error, "reading the schema version");
        PQclear(res);
        return v;
}

static int migrate(struct pg_store *db, GError **error)
{
        g_autofree char *lock = g_strdup_printf("SELECT pg_advisory_xact_lock(%d)", PG_MIGRATION_LOCK);
        int version;

        /* One transaction: a migration that fails leaves the database as it was; a concurrent engine waits. */
        if (exec_plain(db, "BEGIN", error) < 0)
                return -EIO;
        if (exec_plain(db, lock, error) < 0 ||
            exec_plain(db, "CREATE TABLE IF NOT EXISTS ferry_schema (version INTEGER NOT NULL);"
                           "INSERT INTO ferry_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM ferry_schema)", error) < 0 ||
            (version = read_version(db, error)) < 0)
                goto fail;
        if (version > (int) G_N_ELEMENTS(migrations)) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "database %s has schema version %d, newer than this engine knows (%d); "
                            "run a newer ferry-engine", db->name, version, (int) G_N_ELEMENTS(migrations));
                exec_plain(db, "ROLLBACK", NULL);
                return -EPROTO;
        }
        for (int v = version; v < (int) G_N_ELEMENTS(migrations); v++) {
                g_autofree char *bump = g_strdup_printf("UPDATE ferry_schema SET version = %d", v + 1);

                if (exec_plain(db, migrations[v], error) < 0 || exec_plain(db, bump, error) < 0) {
                        g_prefix_error(error, "schema migration %d: ", v + 1);
                        goto fail;
                }
        }
        return exec_plain(db, "COMMIT", error);
fail:
        exec_plain(db, "ROLLBACK", NULL);
        return -EIO;
}

static int pg_open(const char *location, const char *client, void **ret, GError **error)
{
        /* Our defaults first: the location's own keywords override them (expand_dbname); a client
         * name given overrides the location's, since leadership finds an engine's sessions by it. */
        /* Network timeouts: without them a server (or a link) that vanishes without a reset blocks the engine
         * in a read for the kernel's 2 hours, the lock session's renewal included. ~10 s to notice; TCP only
         * (libpq ignores them on a Unix socket). */
        const char *const keys[] = { "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                                     "keepalives_count", "tcp_user_timeout", "application_name", "dbname",
                                     client ? "application_name" : NULL, NULL };
        const char *const values[] = { "10", "1", "5", "2", "3", "10000", "ferry-engine", location, client, NULL };
        struct pg_store *db = g_new0(struct pg_store, 1);
        int r;

        db->name = describe(location);
        db->sql = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, pg_sql_free);
        db->conn_serial = 1;
        db->conn = PQconnectdbParams(keys, values, 1);
        if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
                r = db->conn ? fail_conn(db, error, "cannot connect")
                             : (g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: out of memory", db->name), -ENOMEM);
                pg_close(db);
                return r;
        }
        PQsetNoticeProcessor(db->conn, notice, db);
        if ((r = session_setup(db, error)) < 0 || (r = migrate(db, error)) < 0) {
                pg_close(db);
                return r;
        }
        *ret = db;
        return 0;
}

static void pg_close(void *handle)
{
        struct pg_store *db = handle;

        if (!db)
                return;
        PQfinish(db->conn);
        g_hash_table_destroy(db->sql);
        g_free(db->name);
        g_free(db);
}

static const char *pg_describe(void *handle)
{
        struct pg_store *db = handle;

        return db->name;
}

static int pg_schema_version(void *handle)
{
        struct pg_store *db = handle;

        if (ensure_connected(db, NULL) < 0)
                return -1;
        return read_version(db, NULL);
}

static int pg_exec(void *handle, GError **error, const char *sql, const char *types, va_list ap)
{
        struct pg_store *db = handle;
        PGresult *res;
        int r;

        db->changes = 0;
        res = run(db, error, false, sql, types, ap, &r);
        if (!res)
                return r;
        db->changes = g_ascii_strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        return 0;
}

static json_t *column_value(const PGresult *res, int row, int c)
{
        const char *v = PQgetvalue(res, row, c);
        int len = PQgetlength(res, row, c);

        if (PQgetisnull(res, row, c))
                return json_null();
        switch (PQftype(res, c)) {
        case PG_INT2:
        case PG_INT4:
        case PG_INT8:
        case PG_OID:
                return json_integer(g_ascii_strtoll(v, NULL, 10));
        case PG_FLOAT4:
        case PG_FLOAT8:
                return json_real(g_ascii_strtod(v, NULL));
        case PG_NUMERIC:
                /* SUM() of integers is numeric: whole values stay integers, as SQLite returns them. */
                if (!strpbrk(v, ".eEN")) {
                        char *end;
                        gint64 i;
                        errno = 0;
                        i = g_ascii_strtoll(v, &end, 10);
                        if (errno == 0 && *end == '\0')
                                return json_integer(i);
                }
                return json_real(g_ascii_strtod(v, NULL));
        case PG_BOOL:
                return json_boolean(v[0] == 't');
        case PG_JSON:
        case PG_JSONB: {
                json_t *j = json_loadb(v, (size_t) len, JSON_DECODE_ANY, NULL);
                return j ? j : json_stringn(v, (size_t) len);
        }
        default:
                return json_stringn(v, (size_t) len);
        }
}

static json_t *pg_query(void *handle, GError **error, bool one, const char *sql, const char *types, va_list ap)
{
        struct pg_store *db = handle;
        PGresult *res;
        json_t *rows;
        int r, nrows, ncols;

        res = run(db, error, true, sql, types, ap, &r);
        if (!res)
                return NULL;
        rows = json_array();
        nrows = PQntuples(res);
        ncols = PQnfields(res);
        for (int i = 0; i < nrows && !(one && i > 0); i++) {
                json_t *row = json_object();

                for (int c = 0; c < ncols; c++) {
                        const char *name = PQfname(res, c);

                        /* SQLite's rowid stand-in (see the top of the file): hidden, as SQLite hides its own. */
                        if (strcmp(name, "rowid") == 0)
                                continue;
                        json_object_set_new(row, name, column_value(res, i, c));
                }
                json_array_append_new(rows, row);
        }
        PQclear(res);
        return rows;
}

static gint64 pg_changes(void *handle)
{
        struct pg_store *db = handle;

        return db->changes;
}

static int pg_set_limits(void *handle, unsigned lock_timeout_ms, unsigned statement_timeout_ms, GError **error)
{
        struct pg_store *db = handle;

        db->limits = true;
        db->lock_timeout_ms = lock_timeout_ms;
        db->statement_timeout_ms = statement_timeout_ms;
        /* A reconnect here sets them already; setting them twice does no harm. */
        check_idle(db);
        if (ensure_connected(db, error) < 0)
                return -EIO;
        return session_setup(db, error);
}

/* The outermost transaction only: store.c counts the nesting. */
static int pg_begin(void *handle, GError **error)
{
        struct pg_store *db = handle;

        if (ensure_connected(db, error) < 0 || exec_plain(db, "BEGIN", error) < 0)
                return -EIO;
        db->in_tx = true;
        db->broken = false;
        return 0;
}

static int pg_commit(void *handle, GError **error)
{
        struct pg_store *db = handle;

        db->in_tx = false;
        if (PQstatus(db->conn) != CONNECTION_OK) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: connection lost, transaction rolled back",
                            db->name);
                return -EIO;
        }
        if (db->broken) {
                exec_plain(db, "ROLLBACK", NULL);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: transaction rolled back", db->name);
                return -EIO;
        }
        if (exec_plain(db, "COMMIT", error) < 0) {
                /* Never leave the connection inside a half-done transaction. */
                exec_plain(db, "ROLLBACK", NULL);
                return -EIO;
        }
        return 0;
}

static void pg_rollback(void *handle)
{
        struct pg_store *db = handle;

        db->in_tx = false;
        if (PQstatus(db->conn) == CONNECTION_OK)
                exec_plain(db, "ROLLBACK", NULL);
}

const struct engine_store_backend engine_store_postgresql = {
        .name = "postgresql",
        .open = pg_open,
        .close = pg_close,
        .describe = pg_describe,
        .schema_version = pg_schema_version,
        .begin = pg_begin,
        .commit = pg_commit,
        .rollback = pg_rollback,
        .exec = pg_exec,
        .query = pg_query,
        .changes = pg_changes,
        .set_limits = pg_set_limits,
};
