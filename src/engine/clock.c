/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "clock.h"

gint64 engine_now(void)
{
        return g_get_real_time() / G_USEC_PER_SEC;
}
