/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The host selection policy as a pure function (DESIGN §7): no database, no
 * I/O, so the engine, its unit test and simulations run the same code.
 */

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

enum engine_sched_policy {
        ENGINE_SCHED_LEAST_LOADED,
        ENGINE_SCHED_RANDOM,
};

struct engine_sched_host {
        bool usable;          /* up, pool-connected, not in maintenance, stats known */
        bool is_spm;
        long running;         /* data jobs running or queued there, as the engine counts them */
        long limit;           /* its job limit */
        double rate;          /* bytes/s it copies now */
        double load;          /* recent CPU load */
};

/*
 * Index of the host for the next copy, or -1 when none can take it.
 * Filter: usable and running < limit. Non-SPM hosts only; the SPM only
 * when no other host is usable at all (when they are merely full, the
 * copy waits for a free slot). least_loaded: fewest running, then lowest
 * rate, then lowest load, ties at random; random: uniform among those
 * that pass. rand supplies the randomness (seeded in tests).
 */
int engine_sched_pick(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy, GRand *rand);
