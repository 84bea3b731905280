/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The untyped statement interface the engine used before the typed store
 * (store.h): SQL text written by the caller. Only files not yet moved to
 * the typed functions include this; it goes away with the last of them.
 */
#include <glib.h>
#include <jansson.h>

struct engine_store;

int engine_db_exec(struct engine_store *st, GError **error, const char *sql, const char *types, ...);
json_t *engine_db_query(struct engine_store *st, GError **error, const char *sql, const char *types, ...);
json_t *engine_db_query_one(struct engine_store *st, GError **error, const char *sql, const char *types, ...);
gint64 engine_db_changes(struct engine_store *st);
int engine_db_begin(struct engine_store *st, GError **error);
int engine_db_commit(struct engine_store *st, GError **error);
void engine_db_rollback(struct engine_store *st);
