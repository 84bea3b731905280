/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The store's front: picks the backend for a location, runs statements through it. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "internal.h"

/*
 * A PostgreSQL location: a URI (postgresql://, postgres://) or a libpq
 * keyword/value connection string ("host=... dbname=..."): its first word
 * is a keyword and '='. Anything else is a SQLite file path.
 */
static bool is_postgresql(const char *location)
{
        const char *p = location;

        if (g_str_has_prefix(location, "postgresql://") || g_str_has_prefix(location, "postgres://"))
                return true;
        while (g_ascii_isspace(*p))
                p++;
        if (!g_ascii_isalpha(*p))
                return false;
        while (g_ascii_isalnum(*p) || *p == '_')
                p++;
        while (g_ascii_isspace(*p))
                p++;
        return *p == '=';
}

int engine_store_open(const char *location, struct engine_store **ret, GError **error)
{
        return engine_store_open_as(location, NULL, ret, error);
}

int engine_store_open_as(const char *location, const char *client, struct engine_store **ret, GError **error)
{
        const struct engine_store_backend *be = &engine_store_sqlite;
        struct engine_store *st;
        void *handle = NULL;
        int r;

        if (is_postgresql(location)) {
#ifdef FERRY_HAVE_POSTGRESQL
                be = &engine_store_postgresql;
#else
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "database: this ferry-engine was built without PostgreSQL (meson -Dpostgresql=disabled); "
                            "give a SQLite file path or use a build with PostgreSQL");
                return -EPROTONOSUPPORT;
#endif
        }
        if ((r = be->open(location, client, &handle, error)) < 0)
                return r;
        st = g_new0(struct engine_store, 1);
        st->be = be;
        st->handle = handle;
        *ret = st;
        return 0;
}

int engine_store_lock_sole(const char *location, int *ret_fd, GError **error)
{
        g_autofree char *path = NULL;
        int fd, saved;

        *ret_fd = -1;
        if (is_postgresql(location) || !*location || strcmp(location, ":memory:") == 0)
                return 0;
        path = g_strconcat(location, ".lock", NULL);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0) {
                saved = errno;
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "database: cannot open the lock file %s: %s",
                            path, g_strerror(saved));
                return -saved;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                saved = errno;
                close(fd);
                if (saved == EWOULDBLOCK) {
                        /* Two engines on one SQLite file would both be active: double copies, double fences. */
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                                    "database: %s is locked: another ferry-engine uses the SQLite database %s "
                                    "(one engine per SQLite file; use PostgreSQL for several engines)",
                                    path, location);
                        return -EBUSY;
                }
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "database: cannot lock %s: %s", path,
                            g_strerror(saved));
                return -saved;
        }
        *ret_fd = fd;
        return 0;
}

void engine_store_close(struct engine_store *st)
{
        if (!st)
                return;
        st->be->close(st->handle);
        g_free(st);
}

const char *engine_store_backend_name(struct engine_store *st)
{
        return st->be->name;
}

const char *engine_store_describe(struct engine_store *st)
{
        return st->be->describe(st->handle);
}

int engine_store_schema_version(struct engine_store *st)
{
        return st->be->schema_version(st->handle);
}

int engine_store_set_limits(struct engine_store *st, unsigned lock_timeout_ms, unsigned statement_timeout_ms,
                            GError **error)
{
        g_return_val_if_fail(st->depth == 0, -EINVAL);
        if (!st->be->set_limits)
                return 0;
        return st->be->set_limits(st->handle, lock_timeout_ms, statement_timeout_ms, error);
}

/*
 * Transactions nest here, once for every backend: only the outermost
 * begin/commit/rollback reaches the backend. A transaction is all or
 * nothing: a write that failed inside it, or an inner level that rolled
 * back, makes the outermost commit roll back and fail.
 */
int engine_store_begin(struct engine_store *st, GError **error)
{
        if (st->depth > 0) {
                st->depth++;
                return 0;
        }
        if (st->be->begin(st->handle, error) < 0)
                return -EIO;
        st->depth = 1;
        st->failed = false;
        st->epoch_checked = false;
        return 0;
}

int engine_store_commit(struct engine_store *st, GError **error)
{
        if (st->depth == 0)
                return 0;
        if (--st->depth > 0)
                return 0;
        if (st->failed) {
                st->be->rollback(st->handle);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "database %s: transaction rolled back",
                            engine_store_describe(st));
                return -EIO;
        }
        if (st->be->commit(st->handle, error) < 0)
                return -EIO;
        if (st->on_commit)
                st->on_commit(st->on_commit_data);
        return 0;
}

void engine_store_rollback(struct engine_store *st)
{
        if (st->depth == 0)
                return;
        if (--st->depth > 0) {
                st->failed = true;
                return;
        }
        st->be->rollback(st->handle);
}

void engine_store_set_change_fn(struct engine_store *st, engine_store_change_fn fn, void *data)
{
        st->on_change = fn;
        st->on_change_data = data;
}

void engine_store_set_commit_fn(struct engine_store *st, engine_store_commit_fn fn, void *data)
{
        st->on_commit = fn;
        st->on_commit_data = data;
}

/*
 * The table an INSERT, UPDATE or DELETE (any dialect: "INSERT OR REPLACE
 * INTO t", "DELETE FROM t") writes: the first word after those.
 */
static bool sql_table(const char *sql, char *table, size_t size)
{
        static const char *const skip[] = { "INSERT", "UPDATE", "DELETE", "OR", "REPLACE", "IGNORE", "INTO", "FROM" };
        const char *p = sql;

        for (;;) {
                size_t n = 0;
                bool skipped = false;

                while (g_ascii_isspace(*p))
                        p++;
                while ((g_ascii_isalnum(p[n]) || p[n] == '_') && n < size - 1)
                        n++;
                if (n == 0)
                        return false;
                memcpy(table, p, n);
                table[n] = '\0';
                p += n;
                for (size_t i = 0; i < G_N_ELEMENTS(skip); i++)
                        skipped |= g_ascii_strcasecmp(table, skip[i]) == 0;
                if (!skipped)
                        return true;
        }
}

/*
 * Fencing (leadership on PostgreSQL, src/engine/leader.c): once the store has
 * a fence, every write must come from the leader of the current epoch. The
 * first write of a transaction reads the leader row FOR KEY SHARE and
 * compares its epoch with ours: a takeover increments the epoch (a key
 * column) with an UPDATE of that row, which waits for every transaction that
 * checked the old epoch (fence_check says why KEY SHARE), and any
 * transaction after it sees the new one. So no write of a deposed leader
 * commits after a takeover, however late it comes. A write outside a
 * transaction gets one of its own for the check.
 *
 * Tokens are the exception: any engine, standby included, checks a token
 * and records its use (a standby serves reads and logins). Users and events
 * (a login's record) pass only while this engine has never led (epoch 0, a
 * standby): a deposed leader keeps its epoch until it executes itself again,
 * so its late "host down" event or user change is refused like any write,
 * while a standby still logs the logins it serves.
 *
 * The test is the statement's first word: store_query runs SELECT only, so no
 * write goes around it.
 */
static bool write_fenced(struct engine_store *st, const char *sql)
{
        static const char *const standby_writes[] = { "events", "users" };
        char table[64];

        while (g_ascii_isspace(*sql))
                sql++;
        if (!st->fenced || !(g_ascii_strncasecmp(sql, "INSERT", 6) == 0 || g_ascii_strncasecmp(sql, "UPDATE", 6) == 0 ||
                             g_ascii_strncasecmp(sql, "DELETE", 6) == 0) || !sql_table(sql, table, sizeof(table)))
                return false;
        if (g_ascii_strcasecmp(table, "tokens") == 0)
                return false;
        for (size_t i = 0; i < G_N_ELEMENTS(standby_writes) && st->epoch == 0; i++)
                if (g_ascii_strcasecmp(table, standby_writes[i]) == 0)
                        return false;
        return true;
}

static int fence_check(struct engine_store *st, GError **error)
{
        g_autoptr(json_t) row = NULL;
        GError *local = NULL;
        gint64 current;

        if (st->epoch_checked)
                return 0;
        /*
         * FOR KEY SHARE: a takeover changes the epoch, a key column (unique
         * index), so it waits for this transaction to end, and no write of
         * an old term commits after a new term began. The leader's own
         * heartbeat (a non-key update) does not wait: a long transaction
         * of the leader must not make its lease renewal time out.
         */
        row = store_query_one(st, &local, "SELECT epoch FROM engine_leader WHERE id = 1 FOR KEY SHARE", "");
        if (local) {
                g_propagate_error(error, local);
                return -EIO;
        }
        current = row ? json_integer_value(json_object_get(row, "epoch")) : 0;
        if (st->epoch == 0 || current != st->epoch) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "database %s: write refused: this engine is not the leader (its epoch %" G_GINT64_FORMAT
                            ", the current %" G_GINT64_FORMAT ")", engine_store_describe(st), st->epoch, current);
                if (st->epoch != 0 && st->on_deposed)
                        st->on_deposed(st->on_deposed_data);
                return -ESTALE;
        }
        st->epoch_checked = true;
        return 0;
}

void engine_store_set_fence(struct engine_store *st, gint64 epoch, engine_store_deposed_fn fn, void *data)
{
        st->fenced = true;
        st->epoch = epoch;
        st->on_deposed = fn;
        st->on_deposed_data = data;
}

/* Tells the listener the table a write changed. Portable across backends: the statement's text, not a database hook. */
static void store_changed(struct engine_store *st, const char *sql)
{
        char table[64];

        if (!st->on_change || st->be->changes(st->handle) <= 0 || !sql_table(sql, table, sizeof(table)))
                return;
        st->on_change(st->on_change_data, table);
}

static int exec_va(struct engine_store *st, GError **error, const char *sql, const char *types, va_list ap)
{
        int r = st->be->exec(st->handle, error, sql, types, ap);

        if (r >= 0)
                store_changed(st, sql);
        st->failed |= r < 0 && st->depth > 0;
        if (r >= 0 && st->depth == 0 && st->on_commit)
                st->on_commit(st->on_commit_data);     /* a write outside a transaction is a commit */
        return r;
}

int store_exec(struct engine_store *st, GError **error, const char *sql, const char *types, ...)
{
        va_list ap;
        int r;

        va_start(ap, types);
        if (!write_fenced(st, sql)) {
                r = exec_va(st, error, sql, types, ap);
        } else if (st->depth > 0) {
                r = fence_check(st, error);
                if (r < 0)
                        st->failed = true;
                else
                        r = exec_va(st, error, sql, types, ap);
        } else {
                /* A transaction of its own, for the check's row lock to last until the write commits. */
                r = engine_store_begin(st, error);
                if (r >= 0 && (r = fence_check(st, error)) >= 0 && (r = exec_va(st, error, sql, types, ap)) >= 0)
                        r = engine_store_commit(st, error);
                else if (st->depth > 0)
                        engine_store_rollback(st);
        }
        va_end(ap);
        return r;
}

/* Queries read: a write through them would pass the fence (write_fenced looks at store_exec's statements). */
static bool query_refused(const char *sql, GError **error)
{
        while (g_ascii_isspace(*sql))
                sql++;
        if (g_ascii_strncasecmp(sql, "SELECT", 6) == 0 && !g_ascii_isalnum(sql[6]) && sql[6] != '_')
                return false;
        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "store: a query must be a SELECT (writes go through store_exec): %.40s",
                    sql);
        return true;
}

json_t *store_query(struct engine_store *st, GError **error, const char *sql, const char *types, ...)
{
        va_list ap;
        json_t *rows;

        if (query_refused(sql, error))
                return NULL;
        va_start(ap, types);
        rows = st->be->query(st->handle, error, false, sql, types, ap);
        va_end(ap);
        return rows;
}

json_t *store_query_one(struct engine_store *st, GError **error, const char *sql, const char *types, ...)
{
        va_list ap;
        json_t *rows, *row;

        if (query_refused(sql, error))
                return NULL;
        va_start(ap, types);
        rows = st->be->query(st->handle, error, true, sql, types, ap);
        va_end(ap);
        if (!rows)
                return NULL;
        row = json_incref(json_array_get(rows, 0));
        json_decref(rows);
        return row;
}

gint64 store_changes(struct engine_store *st)
{
        return st->be->changes(st->handle);
}
