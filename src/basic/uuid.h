/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
#include <stdbool.h>

#define FY_ZERO_UUID "00000000-0000-0000-0000-000000000000"

/* True for the canonical 8-4-4-4-12 lower- or upper-case hex form and nothing else. */
bool fy_uuid_is_valid(const char *s);
/* Newly allocated random (v4) UUID string. */
char *fy_uuid_new(void);
