/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The store's front: picks the backend for a location, runs statements through it. */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "internal.h"

int engine_store_open(const char *location, struct engine_store **ret, GError **error)
{
        const struct engine_store_backend *be = &engine_store_sqlite;
        struct engine_store *st;
        void *handle = NULL;
        int r;

        if (g_str_has_prefix(location, "postgresql:") || g_str_has_prefix(location, "postgres:")) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "database %s: this engine has no PostgreSQL backend yet; give a SQLite file path", location);
                return -EPROTONOSUPPORT;
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

int engine_store_schema_version(struct engine_store *st)
{
        return st->be->schema_version(st->handle);
}

int engine_store_begin(struct engine_store *st, GError **error)
{
        return st->be->begin(st->handle, error);
}

int engine_store_commit(struct engine_store *st, GError **error)
{
        return st->be->commit(st->handle, error);
}

void engine_store_rollback(struct engine_store *st)
{
        st->be->rollback(st->handle);
}

void engine_store_set_change_fn(struct engine_store *st, engine_store_change_fn fn, void *data)
{
        st->on_change = fn;
        st->on_change_data = data;
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
