/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "error.h"
#include "sdmeta.h"

static int fail(GError **error, const char *sd, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail(GError **error, const char *sd, const char *fmt, ...)
{
        g_autofree char *what = NULL;
        va_list ap;

        va_start(ap, fmt);
        what = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_set_error(error, FY_ERROR, FY_ERR_METADATA, "storage domain %s: metadata %s", sd, what);
        return -EINVAL;
}

static bool key_valid(const char *k, size_t len)
{
        if (len == 0 || len > 32)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!g_ascii_isupper(k[i]) && !g_ascii_isdigit(k[i]) && k[i] != '_')
                        return false;
        return true;
}

int fy_sd_meta_parse(const char *text, size_t len, const char *sd_uuid, GHashTable **ret, GError **error)
{
        g_autoptr(GHashTable) kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        const char *p = text, *end = text + len;
        unsigned line = 0;
        bool eof = false;
        const char *v;

        if (len > FY_SD_META_MAX)
                return fail(error, sd_uuid, "is larger than %d bytes", FY_SD_META_MAX);
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *le = nl ? nl : end;
                const char *eq;

                line++;
                if (eof) {
                        for (const char *q = p; q < le; q++)
                                if (*q != '\0')
                                        return fail(error, sd_uuid, "has data after its EOF line");
                } else if ((size_t) (le - p) == 3 && memcmp(p, "EOF", 3) == 0) {
                        eof = true;
                } else {
                        eq = memchr(p, '=', (size_t) (le - p));
                        if (!eq || !key_valid(p, (size_t) (eq - p)))
                                return fail(error, sd_uuid, "line %u is not KEY=VALUE", line);
                        if (memchr(eq + 1, '\0', (size_t) (le - eq - 1)))
                                return fail(error, sd_uuid, "line %u contains a NUL byte", line);
                        if (g_hash_table_size(kv) >= FY_SD_META_KEYS_MAX)
                                return fail(error, sd_uuid, "has more than %d keys", FY_SD_META_KEYS_MAX);
                        {
                                g_autofree char *key = g_strndup(p, (gsize) (eq - p));
                                if (g_hash_table_contains(kv, key))
                                        return fail(error, sd_uuid, "repeats key %s", key);
                                g_hash_table_insert(kv, g_steal_pointer(&key),
                                                    g_strndup(eq + 1, (gsize) (le - eq - 1)));
                        }
                }
                p = nl ? nl + 1 : end;
        }
        if (!eof)
                return fail(error, sd_uuid, "lacks its EOF line");
        v = g_hash_table_lookup(kv, "SDUUID");
        if (!v || g_ascii_strcasecmp(v, sd_uuid) != 0)
                return fail(error, sd_uuid, "names SDUUID=%.40s", v ? v : "(none)");
        v = g_hash_table_lookup(kv, "VERSION");
        if (!v || strcmp(v, FY_SD_VERSION) != 0)
                return fail(error, sd_uuid, "has VERSION=%.16s; ferry reads version " FY_SD_VERSION " domains",
                            v ? v : "(none)");
        *ret = g_steal_pointer(&kv);
        return 0;
}
