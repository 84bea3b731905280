/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The engine's inventory in SQLite (WAL). Used from the main thread only.
 * Statements are written inline by the callers; values are always bound,
 * never spliced into SQL. Bind types, one letter per '?':
 *   s  const char * (NULL binds NULL)     i  gint64
 *   d  double                             b  gboolean (as 0/1)
 *   j  json_t * (stored as JSON text; NULL binds NULL)
 * Rows come back as JSON objects (column → value).
 */

#include <glib.h>
#include <jansson.h>

#include "jsonrpc.h"      /* json_t autoptr */

struct engine_db;

int engine_db_open(const char *path, struct engine_db **ret, GError **error);
void engine_db_close(struct engine_db *db);
/* Version of the schema after migrations. */
int engine_db_schema_version(struct engine_db *db);

int engine_db_exec(struct engine_db *db, GError **error, const char *sql, const char *types, ...);
/* Array of row objects, or NULL with *error set. */
json_t *engine_db_query(struct engine_db *db, GError **error, const char *sql, const char *types, ...);
/* The first row, or NULL: with *error set on failure, without when there is no row. */
json_t *engine_db_query_one(struct engine_db *db, GError **error, const char *sql, const char *types, ...);
gint64 engine_db_changes(struct engine_db *db);

int engine_db_begin(struct engine_db *db, GError **error);
int engine_db_commit(struct engine_db *db, GError **error);
void engine_db_rollback(struct engine_db *db);
