/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Storage domain metadata (dom_md/metadata): KEY=VALUE lines ending with EOF, VDSM v5. */

#include <stddef.h>
#include <glib.h>

#define FY_SD_META_MAX 4096
#define FY_SD_META_KEYS_MAX 64
#define FY_SD_VERSION "5"

/*
 * Parses the text of a domain's metadata file into KEY → VALUE (both owned by
 * the table). Keys are [A-Z0-9_]{1,32}, at most 64 of them, each once; after
 * the EOF line only blank lines or NUL padding may follow. SDUUID must equal
 * sd_uuid (case-insensitively) and VERSION must be 5. Returns 0 or -EINVAL
 * with an FY_ERR_METADATA error naming the problem.
 */
int fy_sd_meta_parse(const char *text, size_t len, const char *sd_uuid, GHashTable **ret, GError **error);
