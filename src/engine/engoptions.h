/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* An engine option's stored value, or def when it was never set (or cannot be read). */
bool engine_option_bool(struct engine *e, const char *name, bool def);
int engine_option_set_bool(struct engine *e, const char *name, bool value, GError **error);
