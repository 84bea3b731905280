/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <math.h>
#include <string.h>

#include "hostsched.h"

#define SHARE_TOLERANCE 0.01  /* shares or costs within 1 % are a tie: stats are not that exact */
/*
 * Between hosts of different classes (bandwidths FIT_CLASS apart), costs of a
 * copy within 15 % are about as good: the slower host takes it (best fit), so
 * the fastest keep short queues. bench/sim --load 1.2: better on ten seeds of
 * ten (worst 1.123 -> 1.114 x the bound), default workload mean -5 %.
 */
#define FIT_SLACK 0.15
#define FIT_CLASS 2.0         /* hosts whose bandwidths differ by this factor are of different classes */
/*
 * The reserve: the leanest RESERVE_SHARE of the fastest class's hosts (least
 * bytes pending over bandwidth) take a copy shorter than the backlog it would
 * join elsewhere only while their own backlog stays under RESERVE_LEVEL of
 * that backlog, so a big copy arriving late finds a fast host with a short
 * queue, and the reserve still copies while others have a backlog. bench/sim
 * --load 1.2, worst of seeds 1-10 (x the lower bound): share 0.1 1.095, 0.2
 * 1.061 at level 0.5; level 0.25 1.052, 0.5 1.061, 0.75 1.076 at share 0.2:
 * monotone, no sweet spot.
 */
#define RESERVE_SHARE 0.2
#define RESERVE_LEVEL 0.5
/* Seconds of cost per second a copy adds to the longest drain (bench/sim: 3-30 alike, 1 too little). */
#define MAKESPAN_WEIGHT 10.0

/* Numbers come from agents: anything negative or not finite means "not known". */
static double known(double v)
{
        return isfinite(v) && v > 0 ? v : 0;
}

static long jobs(const struct engine_sched_host *h)
{
        return h->running > 0 ? h->running : 0;
}

static bool passes(const struct engine_sched_host *h)
{
        return h->usable && jobs(h) < h->limit;
}

/* Bytes/s a new copy would get there if its bandwidth is shared equally among the copies. */
static double share(const struct engine_sched_host *h)
{
        return known(h->bandwidth) / (double) (jobs(h) + 1);
}

/*
 * The sum over the copies already on h of min(r_i, bytes), their remaining
 * bytes r_i capped at the new copy's size: what the new copy waits for there
 * and delays by sharing the bandwidth. Estimated as min(bytes_pending, running
 * * bytes), exact when the others are all larger or all smaller.
 */
static double overlap(const struct engine_sched_host *h, double bytes)
{
        double k = (double) jobs(h), pending = known(h->bytes_pending);

        if (pending == 0 && k > 0)
                pending = k * bytes;        /* copies running but no record of their bytes: assume the worst */
        return fmin(pending, k * bytes);
}

/*
 * What placing a copy of `bytes` here adds to the sum of all copies' completion
 * times, in seconds, if nothing else arrives (processor sharing): the new copy
 * ends after (bytes + overlap) / bandwidth, and delays each copy already there
 * by min(r_i, bytes) / bandwidth.
 */
static double copy_cost(const struct engine_sched_host *h, double bytes)
{
        return (bytes + 2 * overlap(h, bytes)) / known(h->bandwidth);
}

/* Seconds until a copy of `bytes` placed on h now ends there, if nothing else arrives. */
static double copy_time(const struct engine_sched_host *h, double bytes)
{
        return (bytes + overlap(h, bytes)) / known(h->bandwidth);
}

/* <0 when a is the better choice, 0 for a tie. */
/*
 * Seconds until h has moved every byte it holds plus `bytes` more: when its last
 * copy ends, whatever the order (a host sharing its bandwidth never idles).
 */
static double drain(const struct engine_sched_host *h, double bytes)
{
        return (known(h->bytes_pending) + bytes) / known(h->bandwidth);
}

/*
 * <0 when a is the better choice, 0 for a tie. drain_max: the longest drain()
 * of any usable host with a known bandwidth now.
 */
static int compare(const struct engine_sched_host *a, const struct engine_sched_host *b, double bytes, double drain_max)
{
        double ra = known(a->rate), rb = known(b->rate);
        double la = known(a->load), lb = known(b->load);

        if (bytes > 0 && known(a->bandwidth) > 0 && known(b->bandwidth) > 0) {
                /* The cost counts a delay to any copy alike; a delay to the copy that ends last on
                 * the busiest host is also one to the makespan, so pushing a host's drain beyond
                 * every other's costs extra (small copies keep off a host running a big one). */
                double ca = copy_cost(a, bytes) + MAKESPAN_WEIGHT * fmax(0, drain(a, bytes) - drain_max);
                double cb = copy_cost(b, bytes) + MAKESPAN_WEIGHT * fmax(0, drain(b, bytes) - drain_max);

                /* Best fit between hosts of different classes (one at least twice as fast as the
                 * other): when the copy costs about the same on both, the slower one takes it, so
                 * the fastest hosts keep short queues for the big copy that may come next and would
                 * set the makespan sharing a fast host's backlog (bench/sim --load 1.2). */
                bool classes = fmax(known(a->bandwidth), known(b->bandwidth)) >=
                               FIT_CLASS * fmin(known(a->bandwidth), known(b->bandwidth));

                if (fabs(ca - cb) > (classes ? FIT_SLACK : SHARE_TOLERANCE) * fmax(ca, cb))
                        return ca < cb ? -1 : 1;
                if (classes)
                        return known(a->bandwidth) < known(b->bandwidth) ? -1 : 1;
        } else if (known(a->bandwidth) > 0 && known(b->bandwidth) > 0) {
                double sa = share(a), sb = share(b);

                if (fabs(sa - sb) > SHARE_TOLERANCE * fmax(sa, sb))
                        return sa > sb ? -1 : 1;
        } else if (jobs(a) != jobs(b)) {
                return jobs(a) < jobs(b) ? -1 : 1;
        }
        if (fabs(ra - rb) > 1.0)
                return ra < rb ? -1 : 1;
        if (fabs(la - lb) > 0.05)
                return la < lb ? -1 : 1;
        return 0;
}

/* A usable non-SPM host of the fastest class, with a known bandwidth: a candidate for the reserve. */
static bool in_class(const struct engine_sched_host *h, double fastest)
{
        return h->usable && !h->is_spm && known(h->bandwidth) > 0 && known(h->bandwidth) * FIT_CLASS > fastest;
}

static int cmp_drain(gconstpointer a, gconstpointer b, gpointer data)
{
        const struct engine_sched_host *hosts = data;
        int ia = *(const int *) a, ib = *(const int *) b;
        double da = drain(&hosts[ia], 0), db = drain(&hosts[ib], 0);

        if (da != db)
                return da < db ? -1 : 1;
        return ia < ib ? -1 : ia > ib;        /* a total order: the same hosts are reserved at every call */
}

/*
 * Sets reserved[i] for the hosts a copy of `bytes` may not take: of the
 * RESERVE_SHARE leanest hosts of the fastest class (bandwidths within
 * FIT_CLASS of the fastest), those whose backlog with the copy would exceed
 * RESERVE_LEVEL of the backlog of the leanest other host of that class -
 * unless the copy is longer alone there than that backlog. Such a copy would
 * end last on that host (a makespan: a big copy arriving late), while a
 * shorter one ends before that backlog drains and loses little by joining it.
 * When slots, not bandwidth, run short, every fast host's backlog grows alike
 * and the big copy that arrives late shares one as long as all the others; the
 * reserve keeps a few fast hosts at a shorter one for it (bench/sim --load
 * 1.2). Nothing is kept back from a copy no other host can take.
 */
static void reserve(const struct engine_sched_host *hosts, size_t n, double bytes, bool *reserved)
{
        g_autoptr(GArray) fast = g_array_new(FALSE, FALSE, sizeof(int));
        double fastest = 0;
        const struct engine_sched_host *lean;
        bool other = false;
        guint r;

        for (size_t i = 0; i < n; i++)
                if (hosts[i].usable && !hosts[i].is_spm)
                        fastest = fmax(fastest, known(hosts[i].bandwidth));
        for (size_t i = 0; i < n; i++)
                if (in_class(&hosts[i], fastest))
                        g_array_append_val(fast, (int) { (int) i });
        /* floor: a class of fewer than 1 / RESERVE_SHARE hosts keeps none back, and one host at least is not kept */
        r = (guint) (RESERVE_SHARE * fast->len);
        if (bytes == 0 || r == 0)
                return;
        g_array_sort_with_data(fast, cmp_drain, (gpointer) hosts);
        lean = &hosts[g_array_index(fast, int, r)];
        if (bytes / known(lean->bandwidth) > drain(lean, 0))
                return;
        for (guint k = 0; k < r; k++) {
                int i = g_array_index(fast, int, k);

                reserved[i] = drain(&hosts[i], bytes) > RESERVE_LEVEL * drain(lean, 0);
        }
        for (size_t i = 0; i < n; i++)
                if (!reserved[i] && !hosts[i].is_spm && passes(&hosts[i]))
                        other = true;
        if (!other)
                memset(reserved, 0, n * sizeof(*reserved));
}

int engine_sched_pick(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy, GRand *rand)
{
        return engine_sched_pick_copy(hosts, n, policy, 0, rand);
}

int engine_sched_pick_copy(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy,
                           double bytes, GRand *rand)
{
        bool other_usable = false;
        double drain_max = 0;
        g_autofree bool *reserved = NULL;

        if (n > G_MAXINT32)
                n = G_MAXINT32;        /* the index is returned as an int */
        reserved = g_new0(bool, n);
        if (policy == ENGINE_SCHED_LEAST_LOADED)
                reserve(hosts, n, known(bytes), reserved);
        /* The SPM is a last resort for when it is the only host, not for when the others are busy:
         * then the copy waits for a slot, and the SPM stays free for metadata. */
        for (size_t i = 0; i < n; i++) {
                if (hosts[i].usable && !hosts[i].is_spm)
                        other_usable = true;
                if (hosts[i].usable && known(hosts[i].bandwidth) > 0)
                        drain_max = fmax(drain_max, drain(&hosts[i], 0));
        }

        for (int pass = 0; pass < (other_usable ? 1 : 2); pass++) {
                int best = -1;
                unsigned seen = 0;

                for (size_t i = 0; i < n; i++) {
                        const struct engine_sched_host *h = &hosts[i];
                        int c;

                        /* First pass: every host but the SPM; second: the SPM alone. */
                        if (h->is_spm != (pass == 1) || !passes(h) || reserved[i])
                                continue;
                        if (policy == ENGINE_SCHED_RANDOM) {
                                /* Reservoir sampling: uniform without a second array. */
                                if (g_rand_int_range(rand, 0, (gint32) ++seen) == 0)
                                        best = (int) i;
                                continue;
                        }
                        c = best < 0 ? -1 : compare(h, &hosts[best], known(bytes), drain_max);
                        if (c < 0) {
                                best = (int) i;
                                seen = 1;
                        } else if (c == 0 && g_rand_int_range(rand, 0, (gint32) ++seen) == 0) {
                                best = (int) i;        /* a tie: each tied host equally likely */
                        }
                }
                if (best >= 0)
                        return best;
        }
        return -1;
}

int engine_sched_place_copy(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy,
                            const struct engine_sched_copy *copy, GRand *rand)
{
        double bytes = known(copy->bytes), on_best;
        int best = engine_sched_pick_copy(hosts, n, policy, bytes, rand);
        long beat = 0;

        if (best < 0 || policy != ENGINE_SCHED_LEAST_LOADED || bytes == 0 || known(hosts[best].bandwidth) == 0)
                return best;
        on_best = copy_time(&hosts[best], bytes);
        /* The starvation bound. NaN or a negative age (a clock stepped back) counts as no wait yet. */
        if (isfinite(copy->waited) && copy->waited >= fmin(on_best, ENGINE_SCHED_MAX_WAIT))
                return best;
        if (n > G_MAXINT32)
                n = G_MAXINT32;
        for (size_t i = 0; i < n; i++) {
                const struct engine_sched_host *h = &hosts[i];

                /* Only full hosts: one with a free slot was weighed by the pick. Not the SPM (kept for
                 * metadata), not a host whose bandwidth or bytes in flight are not known. */
                if (!h->usable || h->is_spm || passes(h) || known(h->bandwidth) == 0 || known(h->bytes_pending) == 0)
                        continue;
                if (drain(h, bytes) < ENGINE_SCHED_WAIT_GAIN * on_best)
                        beat++;
        }
        return beat > MAX(copy->ahead, 0) ? ENGINE_SCHED_WAIT : best;
}
