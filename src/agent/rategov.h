/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The host's copy bandwidth governor: one cap in bytes/s on every copy of
 * the host together, shared fairly among the copies moving bytes now.
 *
 * Each running copy is a flow. The governor keeps a fair-share clock V: the
 * bytes one flow has been entitled to since the governor started, growing at
 * cap / active, where active is the number of flows at that moment (piecewise
 * constant, advanced at every join, leave and request). A flow's credit grows
 * with V and shrinks by what it moves; it may start a chunk while its credit
 * is not negative, and its credit never exceeds a small burst (50 ms of its
 * share), so a flow that was idle or slow cannot save up. Shares change the
 * moment a flow joins or leaves: waiting flows are woken to recompute.
 *
 * Two ways to use a flow:
 *  - a copier that moves bytes itself asks before each chunk
 *    (agent_rate_flow_acquire: sleeps until the chunk fits, cancellable);
 *  - a child process that moves bytes on its own (qemu-img) is charged
 *    afterwards for what it moved (agent_rate_flow_charge) and paused while
 *    agent_rate_flow_debt_us() says its flow is in debt.
 *
 * Thread-safe: flows of one governor may be used from any threads; one flow
 * belongs to one thread at a time. Never logs.
 */

#include <stdbool.h>
#include <stdint.h>
#include <gio/gio.h>

struct agent_rate_gov;
struct agent_rate_flow;

/* cap in bytes/s; 0 = unlimited (flows are counted, never wait). */
struct agent_rate_gov *agent_rate_gov_new(uint64_t cap);
/* Every flow must have left. NULL is fine. */
void agent_rate_gov_free(struct agent_rate_gov *gov);

uint64_t agent_rate_gov_cap(const struct agent_rate_gov *gov);
/* A new cap (SIGHUP reload), effective at once for every flow, waiting ones included. */
void agent_rate_gov_set_cap(struct agent_rate_gov *gov, uint64_t cap);
/* Flows joined now. */
unsigned agent_rate_gov_active(struct agent_rate_gov *gov);
/* Bytes every flow took or was charged, ever: the data the host's copies moved (holes excluded). */
uint64_t agent_rate_gov_moved(struct agent_rate_gov *gov);
/* Bytes/s each flow gets now: cap / active, or cap when there is none; 0 when unlimited. */
uint64_t agent_rate_gov_share(struct agent_rate_gov *gov);

struct agent_rate_flow *agent_rate_flow_join(struct agent_rate_gov *gov);
/* Leaves and frees the flow; the others' shares grow at once. NULL is fine. */
void agent_rate_flow_leave(struct agent_rate_flow *flow);

uint64_t agent_rate_flow_cap(const struct agent_rate_flow *flow);
uint64_t agent_rate_flow_share(struct agent_rate_flow *flow);
/* Bytes this flow took or was charged since it joined: what its copy moved (from any thread). */
uint64_t agent_rate_flow_moved(struct agent_rate_flow *flow);
/*
 * Whether the flow's copy is waiting in a rate limiter rather than moving
 * bytes (qemu-img's -r charges the holes of a sparse image against the cap
 * in chunks of up to an L2 table's reach, 512 MiB for 64 KiB clusters, and
 * sleeps through them writing nothing): the engine's stall judgement does not
 * count such a wait as a stall, so the setter bounds a wait it cannot prove
 * (agent_rate_wait_bound_us below). Any thread sets, any thread reads.
 */
void agent_rate_flow_set_waiting(struct agent_rate_flow *flow, bool waiting);
bool agent_rate_flow_waiting(struct agent_rate_flow *flow);
/* Flows of the host waiting so now (the metric ferry_agent_copy_rate_waiting). */
unsigned agent_rate_gov_waiting(struct agent_rate_gov *gov);

/*
 * How long a capped qemu-img may sleep, every thread in S, without writing a
 * byte or moving its progress, before the wait is no longer explained by its
 * limiter (a copy hung in an interruptible sleep: a network file system, a
 * pipe or socket no one answers) and is reported as copying again, so
 * the engine's stall judgement runs. qemu's limiter charges a request before
 * it sleeps it off; one request reaches at most AGENT_RATE_WAIT_REACH (the
 * block layer's BDRV_REQUEST_MAX_BYTES, just under 2 GiB; a qcow2 hole
 * request stops earlier, at an L2 table's reach, 512 MiB with 64 KiB
 * clusters), and its progress line moves every 1 % of the image. So between
 * two visible moves the limiter explains at most max(that, total / 100)
 * bytes at the whole cap (qemu-img's -r is the whole host cap). Twice that
 * covers coroutines charging ahead of each other and a loaded machine;
 * never under AGENT_RATE_WAIT_MIN_US. Not a multiple of stall_timeout: the
 * agent does not know the engine's, and the limiter's wait depends on the
 * cap alone. cap 0: unbounded (G_MAXINT64; an uncapped copy never waits).
 * A hang is thus flagged after this bound plus stall_timeout.
 */
#define AGENT_RATE_WAIT_REACH   (2ull * 1024 * 1024 * 1024)
#define AGENT_RATE_WAIT_SLACK   2
#define AGENT_RATE_WAIT_MIN_US  (2 * G_USEC_PER_SEC)
gint64 agent_rate_wait_bound_us(uint64_t cap, uint64_t total);
/* A flow's rate wait outlasted that bound: counted for the host (ferry_agent_copy_rate_wait_overruns_total). */
void agent_rate_flow_count_overrun(struct agent_rate_flow *flow);
unsigned agent_rate_gov_wait_overruns(struct agent_rate_gov *gov);

/*
 * Waits until the flow may move `bytes` more and charges them. Returns 0, or
 * -ECANCELED as soon as cancel (may be NULL) is triggered. No busy wait: it
 * sleeps on a condition that joins, leaves and cancel signal.
 */
int agent_rate_flow_acquire(struct agent_rate_flow *flow, uint64_t bytes, GCancellable *cancel);
/* Charges bytes already moved, without waiting. */
void agent_rate_flow_charge(struct agent_rate_flow *flow, uint64_t bytes);
/* Microseconds until the flow is out of debt at its current share; 0 if it is not in debt. */
gint64 agent_rate_flow_debt_us(struct agent_rate_flow *flow);
/* Bytes the flow has moved beyond its share; 0 if none (or unlimited). */
uint64_t agent_rate_flow_debt_bytes(struct agent_rate_flow *flow);

/*
 * The same with an explicit clock (µs of a monotonic clock, never going
 * back), so unit tests can replay exact schedules. agent_rate_flow_take_at
 * charges and returns 0 if the flow may move `bytes` at `now`; otherwise it
 * charges nothing and returns the µs to wait at the current share.
 */
struct agent_rate_flow *agent_rate_flow_join_at(struct agent_rate_gov *gov, gint64 now);
void agent_rate_flow_leave_at(struct agent_rate_flow *flow, gint64 now);
gint64 agent_rate_flow_take_at(struct agent_rate_flow *flow, uint64_t bytes, gint64 now);
void agent_rate_gov_set_cap_at(struct agent_rate_gov *gov, uint64_t cap, gint64 now);
void agent_rate_flow_charge_at(struct agent_rate_flow *flow, uint64_t bytes, gint64 now);
gint64 agent_rate_flow_debt_at(struct agent_rate_flow *flow, gint64 now);
uint64_t agent_rate_flow_debt_bytes_at(struct agent_rate_flow *flow, gint64 now);
