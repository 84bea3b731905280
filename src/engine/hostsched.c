/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <math.h>

#include "hostsched.h"

static bool passes(const struct engine_sched_host *h)
{
        return h->usable && h->running < h->limit;
}

/* <0 when a is the better choice. */
static int compare(const struct engine_sched_host *a, const struct engine_sched_host *b)
{
        if (a->running != b->running)
                return a->running < b->running ? -1 : 1;
        if (fabs(a->rate - b->rate) > 1.0)
                return a->rate < b->rate ? -1 : 1;
        if (fabs(a->load - b->load) > 0.05)
                return a->load < b->load ? -1 : 1;
        return 0;
}

int engine_sched_pick(const struct engine_sched_host *hosts, size_t n, enum engine_sched_policy policy, GRand *rand)
{
        bool other_usable = false;

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
                        c = best < 0 ? -1 : compare(h, &hosts[best]);
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
