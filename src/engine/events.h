/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* Logs msg and keeps it in the events table ("normal" or "warning"), tied to a command if given. */
void engine_event(struct engine *e, const char *severity, const char *command_id, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
