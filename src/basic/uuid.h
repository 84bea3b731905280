/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
#include <stdbool.h>
#include <glib.h>

#define FY_ZERO_UUID "00000000-0000-0000-0000-000000000000"

/* True for the canonical 8-4-4-4-12 lower- or upper-case hex form and nothing else. */
bool fy_uuid_is_valid(const char *s);
/* Newly allocated random (v4) UUID string, from an unpredictable generator (ids). */
char *fy_uuid_new(void);
/* The same for a secret (an image-transfer ticket): GnuTLS's key-grade generator. */
char *fy_uuid_new_secret(void);
/* raw as a v4 UUID string: sets its version and variant bits (in raw too). */
char *fy_uuid_format_v4(guint8 raw[16]);
