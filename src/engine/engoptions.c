/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Engine options an operator changes at run time (PUT /api/options/NAME). */
#include <string.h>

#include "engoptions.h"

bool engine_option_bool(struct engine *e, const char *name, bool def)
{
        g_autoptr(json_t) row = engine_db_query_one(e->db, NULL, "SELECT value FROM options WHERE name = ?", "s", name);

        if (!row)
                return def;
        return g_strcmp0(engine_js(row, "value"), "true") == 0;
}

int engine_option_set_bool(struct engine *e, const char *name, bool value, GError **error)
{
        return engine_db_exec(e->db, error, "INSERT OR REPLACE INTO options (name, value) VALUES (?, ?)", "ss", name,
                              value ? "true" : "false");
}
