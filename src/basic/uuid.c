/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>
#include <glib.h>

#include "uuid.h"

bool fy_uuid_is_valid(const char *s)
{
        if (!s)
                return false;

        /* Exactly 36 characters: never read past a shorter string's NUL. */
        for (size_t i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return false;
                } else if (!g_ascii_isxdigit(s[i])) {
                        return false;
                }
        }
        return s[36] == '\0';
}

char *fy_uuid_new(void)
{
        return g_uuid_string_random();
}
