/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Estimated time to completion of running steps and jobs: what is left over
 * a smoothed rate. Fed (done, total) samples in any one unit per key: bytes
 * for a host job's copy step (the bytes its agent moved, so qemu-img's 1 %
 * steps do not make the rate jump), percent for the rest.
 *
 * The rate is an exponentially weighted moving average over time (time
 * constant ETA_TAU_S) of the rate between samples at least ETA_MIN_GAP_US
 * apart: a burst or a pause moves it a little, a lasting change fully
 * within a few ETA_TAU_S. For its first ETA_TAU_S it is the plain average
 * since the first sample. Unknown (-1) until the samples span
 * ETA_MIN_SPAN_S, while nothing grew for ETA_WINDOW_S (a stall), when no
 * sample came for ETA_WINDOW_S (polls stopped), when total is unknown, or
 * when nothing is left of it (the caller asks only about running keys, so
 * that total is wrong: never 0). A sample whose done is below the last one
 * is stale (a poll reply and an event about the same job cross) and is
 * ignored; work that begins again (a step retried as a new host job, or
 * resumed on another host) is restarted by the caller when it is sent
 * (engine_eta_step_sent), and starts a new series at its first sample.
 *
 * Kept in memory only (an engine that restarts learns the rate again) and
 * by key ("step:<id>", "job:<id>"); the table is bounded. Main thread.
 */

#include <stdbool.h>

#include <glib.h>

#define ETA_TAU_S 20
#define ETA_WINDOW_S 30
#define ETA_MIN_SPAN_S 2
#define ETA_MIN_GAP_US (G_USEC_PER_SEC / 2)
#define ETA_MAX_KEYS 10000

struct engine_eta;

struct engine_eta *engine_eta_new(void);
void engine_eta_free(struct engine_eta *t);

/* done of total (total <= 0: unknown) at now_us (monotonic µs, never going back for a key). */
void engine_eta_observe(struct engine_eta *t, const char *key, gint64 now_us, double done, double total);
void engine_eta_forget(struct engine_eta *t, const char *key);
/* Whole seconds left, or -1 when unknown. */
gint64 engine_eta_seconds(struct engine_eta *t, const char *key, gint64 now_us);

/*
 * A step's host job was (re)sent: its series restarts, and starts at the
 * first sample its job reports while it copies, not at 0: a copy resumed
 * from a checkpoint (issue 16) starts at its kept prefix, and a 0 at the
 * send (or the last value of the try before, on another host) would read
 * the jump to the prefix as a burst of speed. Rates are measured from that
 * first sample; what is left is total minus done as ever.
 */
void engine_eta_step_sent(struct engine_eta *t, const char *key);
/*
 * A running step job's report: its phase (NULL: an agent that reports
 * none), progress (percent) and bytes_done (< 0: not reported). Fed in
 * bytes when it has them (total: bytes scaled by the share done), else
 * percent. Not fed before it copies (preparing, waiting_lock,
 * verifying_prefix: a resumed copy's bytes_done jumps to its prefix only
 * when it starts copying).
 * True when this report started the step's series: the first copying
 * report of a job (re)sent, so its job's series, a weighted sum that jumps
 * with it on a resume, is to start again there too (engine_eta_forget).
 */
bool engine_eta_step_job(struct engine_eta *t, const char *key, gint64 now_us, const char *phase, double progress,
                         gint64 bytes_done);

/* The engine's table (created on first use) for steps and jobs. */
struct engine_eta *engine_eta(void);
