/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer harness for the storage domain metadata parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sdmeta.h"

#define SD "11111111-2222-3333-4444-555555555555"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        GHashTable *kv = NULL;
        GError *error = NULL;
        int r;

        r = fy_sd_meta_parse((const char *) data, size, SD, &kv, &error);
        if (r == 0) {
                const char *v = g_hash_table_lookup(kv, "SDUUID");
                if (error || !v || g_ascii_strcasecmp(v, SD) != 0 || g_hash_table_size(kv) > FY_SD_META_KEYS_MAX)
                        abort();
                g_hash_table_unref(kv);
        } else {
                if (!error || !error->message || kv)
                        abort();
                g_error_free(error);
        }
        return 0;
}
