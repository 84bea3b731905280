/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>
#include <glib.h>
#include <gnutls/crypto.h>

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

char *fy_uuid_format_v4(guint8 raw[16])
{
        raw[6] = (guint8) ((raw[6] & 0x0f) | 0x40);     /* version 4 */
        raw[8] = (guint8) ((raw[8] & 0x3f) | 0x80);     /* variant RFC 4122 */
        return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                               raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7], raw[8], raw[9],
                               raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]);
}

/*
 * Every uuid comes from GnuTLS's cryptographic generator, never GLib's
 * (a Mersenne Twister: ids handed out, such as Correlation-Id on every
 * answer, would reveal its state and so every later ticket).
 */
static char *uuid_from(gnutls_rnd_level_t level)
{
        guint8 raw[16];
        char *s;

        /* gnutls_rnd fails only when the kernel's generator does: nothing sane can go on. */
        if (gnutls_rnd(level, raw, sizeof(raw)) != 0)
                g_error("the random generator failed");
        s = fy_uuid_format_v4(raw);
        memset(raw, 0, sizeof(raw));
        return s;
}

char *fy_uuid_new(void)
{
        return uuid_from(GNUTLS_RND_NONCE);
}

char *fy_uuid_new_secret(void)
{
        return uuid_from(GNUTLS_RND_KEY);
}
