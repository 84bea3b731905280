/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fair sharing of the host's copy bandwidth cap; see rategov.h for the model.
 *
 * All state sits under one mutex: requests come once per chunk (megabytes),
 * so contention is a few hundred lock operations per second at most.
 */

#include <errno.h>

#include "rategov.h"

/* Credit a flow may hold beyond what it used: absorbs sleep overshoot, no more. */
#define RATE_BURST_US   (50 * 1000)

struct agent_rate_gov {
        GMutex lock;
        GCond changed;          /* a flow joined or left, or a waiter's cancellable fired */
        uint64_t cap;
        unsigned active;
        double vclock;          /* bytes one flow was entitled to since the start */
        gint64 vclock_at;       /* µs when vclock was last advanced */
        uint64_t moved;         /* bytes taken or charged by all flows, ever (also when unlimited) */
        gint waiting;           /* flows whose copy waits in a rate limiter now (atomic) */
        gint overruns;          /* rate waits that outlasted their bound, ever (atomic) */
};

struct agent_rate_flow {
        struct agent_rate_gov *gov;
        double credit;          /* bytes; negative = debt */
        double vseen;           /* vclock when credit was last brought up to date */
        uint64_t moved;         /* bytes this flow took or was charged (under gov->lock) */
        gint waiting;           /* its copy sleeps in a rate limiter (atomic) */
};

struct agent_rate_gov *agent_rate_gov_new(uint64_t cap)
{
        struct agent_rate_gov *gov = g_new0(struct agent_rate_gov, 1);

        g_mutex_init(&gov->lock);
        g_cond_init(&gov->changed);
        gov->cap = cap;
        return gov;
}

void agent_rate_gov_free(struct agent_rate_gov *gov)
{
        if (!gov)
                return;
        g_assert(gov->active == 0);
        g_mutex_clear(&gov->lock);
        g_cond_clear(&gov->changed);
        g_free(gov);
}

static void advance_locked(struct agent_rate_gov *gov, gint64 now);

/* cap changes on reload (under the lock); the fast paths read it unlocked. */
static uint64_t cap_of(const struct agent_rate_gov *gov)
{
        return __atomic_load_n(&gov->cap, __ATOMIC_RELAXED);
}

uint64_t agent_rate_gov_cap(const struct agent_rate_gov *gov)
{
        return cap_of(gov);
}

void agent_rate_gov_set_cap_at(struct agent_rate_gov *gov, uint64_t cap, gint64 now)
{
        g_mutex_lock(&gov->lock);
        /* Entitlements so far accrue at the old share; from now on at the new one. */
        advance_locked(gov, now);
        __atomic_store_n(&gov->cap, cap, __ATOMIC_RELAXED);
        g_cond_broadcast(&gov->changed);       /* waiters recompute their wait */
        g_mutex_unlock(&gov->lock);
}

void agent_rate_gov_set_cap(struct agent_rate_gov *gov, uint64_t cap)
{
        agent_rate_gov_set_cap_at(gov, cap, g_get_monotonic_time());
}

static double share_locked(const struct agent_rate_gov *gov)
{
        return (double) gov->cap / (double) MAX(gov->active, 1u);
}

unsigned agent_rate_gov_active(struct agent_rate_gov *gov)
{
        unsigned n;

        g_mutex_lock(&gov->lock);
        n = gov->active;
        g_mutex_unlock(&gov->lock);
        return n;
}

uint64_t agent_rate_gov_moved(struct agent_rate_gov *gov)
{
        uint64_t n;

        g_mutex_lock(&gov->lock);
        n = gov->moved;
        g_mutex_unlock(&gov->lock);
        return n;
}

uint64_t agent_rate_gov_share(struct agent_rate_gov *gov)
{
        uint64_t s;

        g_mutex_lock(&gov->lock);
        s = (uint64_t) share_locked(gov);
        g_mutex_unlock(&gov->lock);
        return s;
}

/* Brings vclock to now with the share that held since the last advance. */
static void advance_locked(struct agent_rate_gov *gov, gint64 now)
{
        if (gov->active == 0) {
                gov->vclock_at = now;   /* no flow to be entitled to anything */
                return;
        }
        if (now <= gov->vclock_at)
                return;         /* a caller's clock reading that lost a race: nothing elapsed */
        gov->vclock += share_locked(gov) * (double) (now - gov->vclock_at) / G_USEC_PER_SEC;
        gov->vclock_at = now;
}

static void update_locked(struct agent_rate_flow *flow, gint64 now)
{
        struct agent_rate_gov *gov = flow->gov;
        double burst = share_locked(gov) * RATE_BURST_US / G_USEC_PER_SEC;

        advance_locked(gov, now);
        flow->credit = MIN(flow->credit + (gov->vclock - flow->vseen), burst);
        flow->vseen = gov->vclock;
}

static gint64 debt_locked(const struct agent_rate_flow *flow)
{
        if (flow->gov->cap == 0 || flow->credit >= 0)
                return 0;
        /* Rounded up: waking a microsecond early would only mean waiting again. */
        return (gint64) (-flow->credit * G_USEC_PER_SEC / share_locked(flow->gov)) + 1;
}

struct agent_rate_flow *agent_rate_flow_join_at(struct agent_rate_gov *gov, gint64 now)
{
        struct agent_rate_flow *flow = g_new0(struct agent_rate_flow, 1);

        flow->gov = gov;
        g_mutex_lock(&gov->lock);
        advance_locked(gov, now);
        gov->active++;
        flow->vseen = gov->vclock;
        /* The others' shares just shrank: let waiters recompute. */
        g_cond_broadcast(&gov->changed);
        g_mutex_unlock(&gov->lock);
        return flow;
}

struct agent_rate_flow *agent_rate_flow_join(struct agent_rate_gov *gov)
{
        return agent_rate_flow_join_at(gov, g_get_monotonic_time());
}

void agent_rate_flow_leave_at(struct agent_rate_flow *flow, gint64 now)
{
        struct agent_rate_gov *gov;

        if (!flow)
                return;
        gov = flow->gov;
        agent_rate_flow_set_waiting(flow, false);      /* no longer counted as waiting */
        g_mutex_lock(&gov->lock);
        advance_locked(gov, now);
        g_assert(gov->active > 0);
        gov->active--;
        g_cond_broadcast(&gov->changed);
        g_mutex_unlock(&gov->lock);
        g_free(flow);
}

void agent_rate_flow_leave(struct agent_rate_flow *flow)
{
        agent_rate_flow_leave_at(flow, g_get_monotonic_time());
}

uint64_t agent_rate_flow_cap(const struct agent_rate_flow *flow)
{
        return cap_of(flow->gov);
}

uint64_t agent_rate_flow_moved(struct agent_rate_flow *flow)
{
        uint64_t n;

        g_mutex_lock(&flow->gov->lock);
        n = flow->moved;
        g_mutex_unlock(&flow->gov->lock);
        return n;
}

void agent_rate_flow_set_waiting(struct agent_rate_flow *flow, bool waiting)
{
        /* Only a transition moves the host's count, so setting the same state again is harmless. */
        if (waiting && g_atomic_int_compare_and_exchange(&flow->waiting, 0, 1))
                g_atomic_int_inc(&flow->gov->waiting);
        else if (!waiting && g_atomic_int_compare_and_exchange(&flow->waiting, 1, 0))
                (void) g_atomic_int_dec_and_test(&flow->gov->waiting);
}

unsigned agent_rate_gov_waiting(struct agent_rate_gov *gov)
{
        return (unsigned) MAX(g_atomic_int_get(&gov->waiting), 0);
}

void agent_rate_flow_count_overrun(struct agent_rate_flow *flow)
{
        g_atomic_int_inc(&flow->gov->overruns);
}

unsigned agent_rate_gov_wait_overruns(struct agent_rate_gov *gov)
{
        return (unsigned) g_atomic_int_get(&gov->overruns);
}

gint64 agent_rate_wait_bound_us(uint64_t cap, uint64_t total)
{
        uint64_t reach = MAX(AGENT_RATE_WAIT_REACH, total / 100);
        double us;

        if (cap == 0)
                return G_MAXINT64;     /* unlimited: a limiter never waits, so no wait is explained */
        us = (double) AGENT_RATE_WAIT_SLACK * (double) reach / (double) cap * G_USEC_PER_SEC;
        return (gint64) MIN(MAX(us, (double) AGENT_RATE_WAIT_MIN_US), (double) (G_MAXINT64 / 2));
}

bool agent_rate_flow_waiting(struct agent_rate_flow *flow)
{
        return g_atomic_int_get(&flow->waiting) != 0;
}

uint64_t agent_rate_flow_share(struct agent_rate_flow *flow)
{
        return agent_rate_gov_share(flow->gov);
}

static gint64 take_locked(struct agent_rate_flow *flow, uint64_t bytes, gint64 now)
{
        gint64 wait = 0;

        if (flow->gov->cap > 0) {
                update_locked(flow, now);
                wait = debt_locked(flow);
        }
        if (wait == 0) {
                if (flow->gov->cap > 0)
                        flow->credit -= (double) bytes;
                flow->gov->moved += bytes;
                flow->moved += bytes;
        }
        return wait;
}

gint64 agent_rate_flow_take_at(struct agent_rate_flow *flow, uint64_t bytes, gint64 now)
{
        gint64 wait;

        g_mutex_lock(&flow->gov->lock);
        wait = take_locked(flow, bytes, now);
        g_mutex_unlock(&flow->gov->lock);
        return wait;
}

void agent_rate_flow_charge_at(struct agent_rate_flow *flow, uint64_t bytes, gint64 now)
{
        g_mutex_lock(&flow->gov->lock);
        if (flow->gov->cap > 0) {
                update_locked(flow, now);
                flow->credit -= (double) bytes;
        }
        flow->gov->moved += bytes;
        flow->moved += bytes;
        g_mutex_unlock(&flow->gov->lock);
}

void agent_rate_flow_charge(struct agent_rate_flow *flow, uint64_t bytes)
{
        agent_rate_flow_charge_at(flow, bytes, g_get_monotonic_time());
}

gint64 agent_rate_flow_debt_at(struct agent_rate_flow *flow, gint64 now)
{
        gint64 wait;

        if (cap_of(flow->gov) == 0)
                return 0;
        g_mutex_lock(&flow->gov->lock);
        update_locked(flow, now);
        wait = debt_locked(flow);
        g_mutex_unlock(&flow->gov->lock);
        return wait;
}

gint64 agent_rate_flow_debt_us(struct agent_rate_flow *flow)
{
        return agent_rate_flow_debt_at(flow, g_get_monotonic_time());
}

uint64_t agent_rate_flow_debt_bytes_at(struct agent_rate_flow *flow, gint64 now)
{
        double debt;

        if (cap_of(flow->gov) == 0)
                return 0;
        g_mutex_lock(&flow->gov->lock);
        update_locked(flow, now);
        debt = -flow->credit;
        g_mutex_unlock(&flow->gov->lock);
        return debt > 0 ? (uint64_t) debt : 0;
}

uint64_t agent_rate_flow_debt_bytes(struct agent_rate_flow *flow)
{
        return agent_rate_flow_debt_bytes_at(flow, g_get_monotonic_time());
}

static void on_cancelled(GCancellable *cancel, gpointer data)
{
        struct agent_rate_gov *gov = data;

        /* Under the lock, so a waiter between its check and its sleep cannot miss it. */
        g_mutex_lock(&gov->lock);
        g_cond_broadcast(&gov->changed);
        g_mutex_unlock(&gov->lock);
}

int agent_rate_flow_acquire(struct agent_rate_flow *flow, uint64_t bytes, GCancellable *cancel)
{
        struct agent_rate_gov *gov = flow->gov;
        gulong handler = 0;
        int r = 0;

        if (cap_of(gov) == 0) {
                if (g_cancellable_is_cancelled(cancel))
                        return -ECANCELED;
                agent_rate_flow_take_at(flow, bytes, 0);       /* counts it; never waits */
                return 0;
        }
        /* Connected outside the lock: it runs the callback at once if already cancelled. */
        if (cancel)
                handler = g_cancellable_connect(cancel, G_CALLBACK(on_cancelled), gov, NULL);
        g_mutex_lock(&gov->lock);
        for (;;) {
                gint64 now, wait;

                if (g_cancellable_is_cancelled(cancel)) {
                        r = -ECANCELED;
                        break;
                }
                now = g_get_monotonic_time();
                wait = take_locked(flow, bytes, now);
                if (wait == 0)
                        break;
                /*
                 * Asleep for the cap, not stuck: the gauge counts it and the job
                 * reports rate_wait, so the engine does not flag a capped copy.
                 */
                agent_rate_flow_set_waiting(flow, true);
                /* Woken early by a join or leave (share changed) or cancel: recompute. */
                g_cond_wait_until(&gov->changed, &gov->lock, now + wait);
        }
        g_mutex_unlock(&gov->lock);
        agent_rate_flow_set_waiting(flow, false);
        if (handler)
                g_cancellable_disconnect(cancel, handler);
        return r;
}
