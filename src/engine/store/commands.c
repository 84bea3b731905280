/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Persistent commands in the store. */
#include <errno.h>

#include "internal.h"

int engine_store_copy_load(struct engine_store *st, const char *host, gint64 *ret_copies, double *ret_bytes,
                           GError **error)
{
        /* params.bytes: the copy's estimated size (json_extract: SQLite's; a backend maps it to its JSON operator). */
        g_autoptr(json_t) row = store_query_one(st, error,
                "SELECT COUNT(*) AS n, "
                "       COALESCE(SUM(COALESCE(json_extract(c.params, '$.bytes'), 0) * "
                "                    (1.0 - MIN(COALESCE(s.progress, 0), 100) / 100.0)), 0) AS b "
                "FROM commands c LEFT JOIN steps s ON s.id = c.step_id "
                "WHERE c.type IN ('copy_data', 'merge', 'sparsify_volume') AND c.state = 'active' AND c.phase = 'sent' AND c.host = ?", "s", host);

        *ret_copies = 0;
        *ret_bytes = 0;
        if (!row)
                return -EIO;
        *ret_copies = json_integer_value(json_object_get(row, "n"));
        *ret_bytes = json_number_value(json_object_get(row, "b"));
        return 0;
}

char *engine_store_command_user(struct engine_store *st, const char *id)
{
        g_autoptr(json_t) row = store_query_one(st, NULL, "SELECT user_name FROM commands WHERE id = ?", "s", id);
        const char *user = row ? json_string_value(json_object_get(row, "user_name")) : NULL;

        return user ? g_strdup(user) : NULL;
}
