/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The store's front: picks the backend for a location, runs statements through it. */
#include <errno.h>
#include <string.h>

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
        if ((r = be->open(location, &handle, error)) < 0)
                return r;
        st = g_new0(struct engine_store, 1);
        st->be = be;
        st->handle = handle;
        *ret = st;
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
 * INTO t", "DELETE FROM t") wrote, told to the listener when it changed rows.
 * Portable across backends: the statement's text, not a database hook.
 */
static void store_changed(struct engine_store *st, const char *sql)
{
        static const char *const skip[] = { "INSERT", "UPDATE", "DELETE", "OR", "REPLACE", "IGNORE", "INTO", "FROM" };
        char table[64];
        const char *p = sql;

        if (!st->on_change || st->be->changes(st->handle) <= 0)
                return;
        for (;;) {
                size_t n = 0;
                bool skipped = false;

                while (g_ascii_isspace(*p))
                        p++;
                while ((g_ascii_isalnum(p[n]) || p[n] == '_') && n < sizeof(table) - 1)
                        n++;
                if (n == 0)
                        return;
                memcpy(table, p, n);
                table[n] = '\0';
                p += n;
                for (size_t i = 0; i < G_N_ELEMENTS(skip); i++)
                        skipped |= g_ascii_strcasecmp(table, skip[i]) == 0;
                if (!skipped)
                        break;
        }
        st->on_change(st->on_change_data, table);
}

int store_exec(struct engine_store *st, GError **error, const char *sql, const char *types, ...)
{
        va_list ap;
        int r;

        va_start(ap, types);
        r = st->be->exec(st->handle, error, sql, types, ap);
        va_end(ap);
        if (r >= 0)
                store_changed(st, sql);
        st->failed |= r < 0 && st->depth > 0;
        if (r >= 0 && st->depth == 0 && st->on_commit)
                st->on_commit(st->on_commit_data);
        return r;
}

json_t *store_query(struct engine_store *st, GError **error, const char *sql, const char *types, ...)
{
        va_list ap;
        json_t *rows;

        va_start(ap, types);
        rows = st->be->query(st->handle, error, false, sql, types, ap);
        va_end(ap);
        return rows;
}

json_t *store_query_one(struct engine_store *st, GError **error, const char *sql, const char *types, ...)
{
        va_list ap;
        json_t *rows, *row;

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
