/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Engine options an operator changes at run time (PUT /api/options/NAME). */
#include <errno.h>
#include <string.h>

#include "engoptions.h"

bool engine_option_bool(struct engine *e, const char *name, bool def)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *value = NULL;
        int r = engine_store_option_get(e->db, name, &value, &error);

        if (r == -ENOENT)
                return def;
        if (r < 0) {
                g_warning("option %s: %s; using %s", name, error->message, def ? "true" : "false");
                return def;
        }
        return g_strcmp0(value, "true") == 0;
}

int engine_option_set_bool(struct engine *e, const char *name, bool value, GError **error)
{
        return engine_store_option_set(e->db, name, value ? "true" : "false", error);
}
