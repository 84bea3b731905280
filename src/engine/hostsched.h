/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The host selection policy as a pure function (DESIGN §7): no database, no
 * I/O, so the engine, its unit test and the simulation in bench/sim run the
 * same code.
 */

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

enum engine_sched_policy {
        ENGINE_SCHED_LEAST_LOADED,
        ENGINE_SCHED_RANDOM,
};

/*
 * What the engine knows of one host. Nothing here may need more than the
 * host's last Host.getStats and the engine's own record of the copies it
 * assigned: the policy is only as good as what the engine can really see.
 * Values from outside are not trusted: a negative, NaN or infinite number
 * counts as unknown (0), a negative count as 0.
 */
struct engine_sched_host {
        bool usable;          /* up, pool-connected, not in maintenance, stats known */
        bool is_spm;
        long running;         /* data jobs running or queued there, as the engine counts them */
        long limit;           /* its job limit */
        double rate;          /* bytes/s it copies now */
        double load;          /* recent CPU load */
        double bandwidth;     /* bytes/s all its copies may move together (copy_rate_limit); 0 = unknown/unlimited */
        double bytes_pending; /* bytes the copies the engine assigned there still have to move: each
                               * one's size x (1 - its last reported progress); 0 while copies
                               * run = not known */
};

/*
 * Index of the host for the next copy, of `bytes` bytes (0 = size unknown),
 * or -1 when none can take it.
 *
 * Filter: usable and running < limit. Non-SPM hosts only; the SPM only when
 * no other host is usable at all (when they are merely full, the copy waits
 * for a free slot, and the SPM stays free for metadata).
 *
 * least_loaded with a known size first keeps back a reserve: the leanest fifth
 * (RESERVE_SHARE, rounded down) of the hosts of the fastest class (bandwidths
 * within a factor 2 of the fastest), by backlog (bytes_pending / bandwidth),
 * take a copy that would end alone on the leanest other host of that class
 * sooner than that host's backlog drains - a copy that would not be that
 * host's last - only while their own backlog with it stays under half
 * (RESERVE_LEVEL) of that host's; any copy when no other host has a free slot.
 * Under a backlog (slots, not bandwidth, short) the big copy that arrives late
 * then finds a fast host with a short queue instead of one as loaded as all
 * the others.
 *
 * least_loaded orders the hosts that pass by, in turn:
 *   1. when both hosts have a known bandwidth (hosts differ: 1, 10, 25 Gb/s
 *      links), and
 *      - the copy's size is known: the least cost, what the copy adds to the
 *        sum of all copies' completion times if the host shares its bandwidth
 *        equally (its own time plus the delay it causes the copies already
 *        there), from bandwidth, running and bytes_pending. A big copy goes
 *        where little is pending, a small one where it gets a large share;
 *      - the size is not known: the largest share of the bandwidth a new copy
 *        would get, bandwidth / (running + 1), so a fast host with a copy
 *        running beats a slow idle one;
 *      values within 1 % of each other count as equal; with a known size,
 *      between hosts of different classes (one at least twice as fast),
 *      costs within 15 % are equal and the slower host goes first (best fit:
 *      the fastest hosts keep short queues for big copies, bench/sim).
 *      Otherwise (some bandwidth unknown): fewest running copies;
 *   2. lowest rate (bytes/s in flight now), differences under 1 byte/s equal;
 *   3. lowest CPU load, differences under 0.05 equal;
 *   4. ties at random, each tied host equally likely.
 * With some bandwidths known and some not, key 1 depends on the pair being
 * compared; give every host its bandwidth, or none, for a total order.
 * bench/sim measures these keys on a simulated 1,000-host cluster.
 *
 * random: uniform among the hosts that pass (oVirt's behaviour, kept for
 * comparison). rand supplies the randomness (seeded in tests).
 */
int engine_sched_pick_copy(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy,
                           double bytes, GRand *rand);

/* engine_sched_place_copy() returns this when the copy should wait for a busy host rather than take a free one. */
#define ENGINE_SCHED_WAIT (-2)

/*
 * The longest a copy waits by choice, in seconds: after that it takes the
 * best free slot whatever the estimates say. The bound against starvation
 * when the engine's view is wrong (stale progress, sizes off, other copies
 * taking the slot it waits for).
 */
#define ENGINE_SCHED_MAX_WAIT 600.0

/*
 * Fraction of its time on the best free host that a copy must save before
 * it waits for a busy one: the estimate of the busy host is optimistic (it
 * ignores the copies that will join it), so a small gain is not worth it.
 */
#define ENGINE_SCHED_WAIT_GAIN 0.5

/* A copy looking for a host. */
struct engine_sched_copy {
        double bytes;         /* its size as the engine knows it, 0 = unknown */
        double waited;        /* seconds it has waited for a host so far */
        long ahead;           /* older copies waiting for a host too: they are offered the slots first */
};

/*
 * The decision for a copy: engine_sched_pick_copy()'s host, -1 when no host
 * can take it, or ENGINE_SCHED_WAIT when it should stay queued although a slot
 * is free, because slots, not bandwidth, are short: a big copy would run on a
 * slow host while fast ones, full now, end it far sooner once a slot frees.
 *
 * With least_loaded, a known size and the picked host's bandwidth known, a
 * usable non-SPM host at its job limit, with a known bandwidth and bytes
 * pending, "beats" the picked host when it would end the copy,
 * (bytes_pending + bytes) / bandwidth from now - all its bytes moved, the
 * copy's last: an upper bound when nothing else joins -, in under
 * ENGINE_SCHED_WAIT_GAIN of the time the copy needs on the picked host,
 * (bytes + min(bytes_pending, running * bytes)) / bandwidth there. The copy
 * waits when more hosts beat the picked one than `ahead` copies wait before
 * it (each of those takes a slot first). Never once `waited` reaches its time
 * on the picked host (it would have ended there by now: the estimates were
 * wrong) or ENGINE_SCHED_MAX_WAIT.
 *
 * A copy that waits is meant to be offered again, oldest first, whenever a
 * slot frees (the engine's next round): it must not hold up the copies
 * behind it, which go on being placed.
 */
int engine_sched_place_copy(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy,
                            const struct engine_sched_copy *copy, GRand *rand);

/* engine_sched_pick_copy() for a copy of unknown size. */
int engine_sched_pick(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy, GRand *rand);
