/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * A store backend, in the style of libvirt's storage backends: one table of
 * operations per database engine. The typed functions of the store
 * (store/<object>.c) write portable SQL with '?' placeholders and run it
 * through these operations; a backend owns its connection, its dialect
 * details and its schema migrations (append-only: an existing database
 * upgrades in place). SQLite (sqlite.c) is the embedded default; PostgreSQL
 * (postgresql.c) implements the same table.
 *
 * Bind types, one letter per '?':
 *   s  const char * (NULL binds NULL)     i  gint64
 *   d  double                             b  gboolean (as 0/1: the schema's booleans are integers)
 *   j  json_t * (stored as JSON text; NULL binds NULL)
 * Rows come back as JSON objects (column -> value).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

struct engine_store_backend {
        const char *name;
        /* Opens (creating if needed) and migrates the database at location. client: how the connection
         * names itself to the server (PostgreSQL's application_name; NULL: "ferry-engine"), so another
         * engine can find, and end, the sessions of a stopped leader (leader.c). */
        int (*open)(const char *location, const char *client, void **ret_handle, GError **error);
        void (*close)(void *handle);
        /* What the database is, for messages: a path, or database@host:port (never a password). */
        const char *(*describe)(void *handle);
        /* Schema version after migrations, -1 if unknown. */
        int (*schema_version)(void *handle);
        /* The outermost transaction only: store.c counts the nesting and rolls back a transaction an inner
         * level or a failed write spoiled. A backend whose transaction a failed statement aborts
         * (PostgreSQL) keeps SQLite's behaviour: later statements run, the commit fails. */
        int (*begin)(void *handle, GError **error);
        int (*commit)(void *handle, GError **error);
        void (*rollback)(void *handle);
        /* A statement without rows. A constraint violation fails with FY_ERR_INVALID_PARAMETER and -EEXIST. */
        int (*exec)(void *handle, GError **error, const char *sql, const char *types, va_list ap);
        /* The rows (an array; with one, at most the first), or NULL with *error set. */
        json_t *(*query)(void *handle, GError **error, bool one, const char *sql, const char *types, va_list ap);
        /* Rows the last statement changed. */
        gint64 (*changes)(void *handle);
        /* Optional: the longest a statement may wait for a lock, and run, in ms (0: no limit), on this
         * connection and every one that replaces it (a reconnect loses session settings). */
        int (*set_limits)(void *handle, unsigned lock_timeout_ms, unsigned statement_timeout_ms, GError **error);
};

extern const struct engine_store_backend engine_store_sqlite;
extern const struct engine_store_backend engine_store_postgresql;    /* when built with libpq */
