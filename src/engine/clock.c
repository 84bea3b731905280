/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "clock.h"

static gint64 wall_step;        /* seconds; only tests step it */

gint64 engine_now(void)
{
        return g_get_real_time() / G_USEC_PER_SEC + wall_step;
}

gint64 engine_mono_now(void)
{
        return g_get_monotonic_time() / G_USEC_PER_SEC;
}

void engine_clock_step_for_test(gint64 seconds)
{
        wall_step += seconds;
}
