/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

/* Wall-clock seconds, as every row of the inventory stores time. */
gint64 engine_now(void);

/*
 * Monotonic seconds (since boot: an engine restart keeps counting), for
 * judging durations in memory: a wall-clock step (NTP, an operator's date)
 * neither fakes nor hides a stall.
 */
gint64 engine_mono_now(void);

/* Steps engine_now() by seconds: unit tests of a wall-clock step only. */
void engine_clock_step_for_test(gint64 seconds);
