/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

/* Wall-clock seconds, as every row of the inventory stores time. */
gint64 engine_now(void);
