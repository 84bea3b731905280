/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Estimated time to completion of running steps and jobs, from their
 * progress over a recent window (ETA_WINDOW_S): the rate at which progress
 * grew there, and what is left. A step's progress is the share of the
 * volume's bytes its agent job has moved, so this is bytes left over the
 * recent byte rate, without the sizes. Unknown (-1) until the window spans
 * ETA_MIN_SPAN_S, and while progress does not grow in it (a stall).
 *
 * Kept in memory only (an engine that restarts learns the rate again) and
 * by key ("step:<id>", "job:<id>"); the table is bounded. Main thread.
 */

#include <glib.h>

#define ETA_WINDOW_S 30
#define ETA_MIN_SPAN_S 2
#define ETA_MAX_KEYS 10000

struct engine_eta;

struct engine_eta *engine_eta_new(void);
void engine_eta_free(struct engine_eta *t);

/* progress 0..100 at now_us (monotonic µs, never going back for a key). */
void engine_eta_observe(struct engine_eta *t, const char *key, gint64 now_us, double progress);
void engine_eta_forget(struct engine_eta *t, const char *key);
/* Whole seconds left, or -1 when unknown. */
gint64 engine_eta_seconds(struct engine_eta *t, const char *key, gint64 now_us);

/* The engine's table (created on first use) for steps and jobs. */
struct engine_eta *engine_eta(void);
