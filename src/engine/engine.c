/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "engine.h"

G_DEFINE_QUARK(ferry-engine-error-quark, engine_error)

json_t *engine_fail(GError **error, int status, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_propagate_error(error, g_error_new_valist(ENGINE_ERROR, status, fmt, ap));
        va_end(ap);
        return NULL;
}

bool engine_name_valid(const char *s)
{
        size_t len = s ? strlen(s) : 0;

        if (len == 0 || len > 64)
                return false;
        for (const char *p = s; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr("_-. ", *p))
                        return false;
        return true;
}
