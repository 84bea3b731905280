/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Log escaping: whatever bytes a peer sends, the escaped text is valid UTF-8
 * with no control character, no line or paragraph separator, and it never
 * grows beyond 6 bytes per input byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autoptr(GString) out = g_string_new(NULL);
        const char *p;

        if (size > 64 * 1024)
                return 0;
        fy_log_escape(out, (const char *) data, (gssize) size);
        if (!g_utf8_validate(out->str, (gssize) out->len, NULL) || out->len > size * 6)
                abort();
        for (p = out->str; *p; p = g_utf8_next_char(p)) {
                gunichar u = g_utf8_get_char(p);

                if (u < 0x20 || (u >= 0x7f && u < 0xa0) || u == 0x2028 || u == 0x2029)
                        abort();
        }
        if ((size_t) (p - out->str) != out->len)      /* no NUL inside */
                abort();
        return 0;
}
