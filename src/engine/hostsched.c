/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <math.h>

#include "hostsched.h"

#define SHARE_TOLERANCE 0.01  /* shares or costs within 1 % are a tie: stats are not that exact */

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
 * What placing a copy of `bytes` here adds to the sum of all copies' completion
 * times, in seconds, if nothing else arrives (processor sharing): the new copy
 * ends after (bytes + sum of min(r_i, bytes)) / bandwidth, and delays each copy
 * already there by min(r_i, bytes) / bandwidth, where r_i are their remaining
 * bytes. The sum of min(r_i, bytes) is estimated as min(bytes_pending,
 * running * bytes), exact when the others are all larger or all smaller.
 */
static double copy_cost(const struct engine_sched_host *h, double bytes)
{
        double k = (double) jobs(h), pending = known(h->bytes_pending);

        if (pending == 0 && k > 0)
                pending = k * bytes;        /* copies running but no record of their bytes: assume the worst */
        return (bytes + 2 * fmin(pending, k * bytes)) / known(h->bandwidth);
}

/* <0 when a is the better choice, 0 for a tie. */
static int compare(const struct engine_sched_host *a, const struct engine_sched_host *b, double bytes)
{
        double ra = known(a->rate), rb = known(b->rate);
        double la = known(a->load), lb = known(b->load);

        if (bytes > 0 && known(a->bandwidth) > 0 && known(b->bandwidth) > 0) {
                double ca = copy_cost(a, bytes), cb = copy_cost(b, bytes);

                if (fabs(ca - cb) > SHARE_TOLERANCE * fmax(ca, cb))
                        return ca < cb ? -1 : 1;
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

int engine_sched_pick(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy, GRand *rand)
{
        return engine_sched_pick_copy(hosts, n, policy, 0, rand);
}

int engine_sched_pick_copy(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy,
                           double bytes, GRand *rand)
{
        bool other_usable = false;

        if (n > G_MAXINT32)
                n = G_MAXINT32;        /* the index is returned as an int */
        /* The SPM is a last resort for when it is the only host, not for when the others are busy:
         * then the copy waits for a slot, and the SPM stays free for metadata. */
        for (size_t i = 0; i < n; i++)
                if (hosts[i].usable && !hosts[i].is_spm)
                        other_usable = true;

        for (int pass = 0; pass < (other_usable ? 1 : 2); pass++) {
                int best = -1;
                unsigned seen = 0;

                for (size_t i = 0; i < n; i++) {
                        const struct engine_sched_host *h = &hosts[i];
                        int c;

                        /* First pass: every host but the SPM; second: the SPM alone. */
                        if (h->is_spm != (pass == 1) || !passes(h))
                                continue;
                        if (policy == ENGINE_SCHED_RANDOM) {
                                /* Reservoir sampling: uniform without a second array. */
                                if (g_rand_int_range(rand, 0, (gint32) ++seen) == 0)
                                        best = (int) i;
                                continue;
                        }
                        c = best < 0 ? -1 : compare(h, &hosts[best], known(bytes));
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
