/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* The daemons' log format: "YYYY-mm-dd HH:MM:SS.mmm LEVEL [domain] message" on stderr. */

/* level: debug, info, warning or error (validated by the daemon's config). */
void fy_log_setup(const char *level, const char *program);

/* True for the levels fy_log_setup() knows. */
#include <stdbool.h>
bool fy_log_level_valid(const char *level);
