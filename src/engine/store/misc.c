/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Options and events in the store. */
#include <errno.h>

#include "internal.h"

int engine_store_option_get(struct engine_store *st, const char *name, char **ret, GError **error)
{
        g_autoptr(json_t) row = store_query_one(st, error, "SELECT value FROM options WHERE name = ?", "s", name);

        *ret = NULL;
        if (!row)
                return error && *error ? -EIO : -ENOENT;
        *ret = g_strdup(json_string_value(json_object_get(row, "value")));
        return 0;
}

int engine_store_option_set(struct engine_store *st, const char *name, const char *value, GError **error)
{
        /* A portable upsert: the same two statements run on every backend. */
        if (engine_store_begin(st, error) < 0)
                return -EIO;
        if (store_exec(st, error, "DELETE FROM options WHERE name = ?", "s", name) < 0 ||
            store_exec(st, error, "INSERT INTO options (name, value) VALUES (?, ?)", "ss", name, value) < 0) {
                engine_store_rollback(st);
                return -EIO;
        }
        return engine_store_commit(st, error);
}

int engine_store_event_add(struct engine_store *st, gint64 time, const char *severity, const char *message,
                           const char *command_id, const char *correlation_id, const char *user, GError **error)
{
        return store_exec(st, error,
                          "INSERT INTO events (time, severity, message, command_id, correlation_id, user_name) "
                          "VALUES (?, ?, ?, ?, ?, ?)", "isssss", time, severity, message, command_id, correlation_id, user);
}

json_t *engine_store_event_list(struct engine_store *st, const char *correlation_id, gint64 limit, GError **error)
{
        if (correlation_id)
                return store_query(st, error, "SELECT id, time, severity, message, command_id, correlation_id, user_name "
                                              "FROM events WHERE correlation_id = ? ORDER BY id DESC LIMIT ?", "si",
                                   correlation_id, limit);
        return store_query(st, error, "SELECT id, time, severity, message, command_id, correlation_id, user_name "
                                      "FROM events ORDER BY id DESC LIMIT ?", "i", limit);
}
