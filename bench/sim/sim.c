/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry-sim: a discrete-event simulation of data copies on a large cluster,
 * placed by the engine's real host selection policy (src/engine/hostsched.c,
 * linked, not copied). Hosts share their copy bandwidth equally among the
 * copies they run (processor sharing, as the agent splits copy_rate_limit);
 * copies no host can take wait in one queue, offered again oldest first
 * whenever a slot frees; a copy that chooses to wait for a busy host
 * (engine_sched_place_copy) lets the ones behind it go. See bench/README.md.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostsched.h"

#define MiB (1024.0 * 1024.0)
#define GiB (1024.0 * MiB)

#define MAX_HOSTS 100000
#define MAX_JOBS 10000000
#define MAX_SLOTS 64          /* the agent's max_jobs limit */
#define SPM 0                 /* host 0 is the SPM, always in the middle tier */

/* Copy bandwidth tiers (copy_rate_limit an operator would set for the link), with job limits. */
struct tier {
        const char *name;
        double bandwidth;     /* bytes/s */
        long slots;           /* max_jobs */
        double fraction;      /* of the hosts */
};

static const struct tier tiers[] = {
        { "1G", 100 * MiB, 2, 0.25 },
        { "10G", 1000 * MiB, 4, 0.50 },
        { "25G", 2500 * MiB, 8, 0.25 },
};
#define N_TIERS G_N_ELEMENTS(tiers)
#define SPM_TIER 1

/* Copy sizes: log-normal around a median, clamped to the range. */
#define SIZE_MEDIAN (20 * GiB)
#define SIZE_SIGMA 1.0
#define SIZE_MIN (1 * GiB)
#define SIZE_MAX (500 * GiB)

struct sim_job {
        double arrival, size;
        double estimate;      /* the size as the engine knows it (--size-error) */
        double remaining;     /* bytes still to copy */
        double start, finish;
        double deferred;      /* the last time it chose to wait although a slot was free, NAN if never */
        double found;         /* bytes its host still had to move when it started */
        int host;
};

struct sim_host {
        double bandwidth;
        long slots;
        int tier;
        int *run;             /* indices of the jobs it runs, slots of them at most */
        long n;
        double last;          /* time the remaining bytes of its jobs were last brought up to date */
        double next_done;     /* when its next job finishes, INFINITY when idle */
        double busy;          /* seconds it spent copying */
        double busy_arriving; /* of which while copies were still arriving */
        double moved;         /* bytes it was given to copy */
        long copies;
};

enum sim_mode {
        SIM_LEAST_LOADED,       /* the engine's default, knowing bandwidths, copy sizes and bytes pending */
        SIM_LEAST_LOADED_NOWAIT, /* the same, never waiting for a busy host (before issue 14) */
        SIM_LEAST_LOADED_SHARE, /* the same without copy sizes: bandwidth share */
        SIM_LEAST_LOADED_BLIND, /* without copy_rate_limit either: fewest running first */
        SIM_RANDOM,             /* oVirt's choice */
        SIM_SPM_ONLY,           /* DataOperationsByHSM=false: every copy on the SPM */
};

static const char *const mode_names[] = {
        [SIM_LEAST_LOADED] = "least_loaded",
        [SIM_LEAST_LOADED_NOWAIT] = "least_loaded, never waits",
        [SIM_LEAST_LOADED_SHARE] = "least_loaded, size unknown",
        [SIM_LEAST_LOADED_BLIND] = "least_loaded, bandwidth unknown",
        [SIM_RANDOM] = "random",
        [SIM_SPM_ONLY] = "SPM only (a 10G host)",
};

struct sim {
        struct sim_host *hosts;
        struct engine_sched_host *view;   /* what the engine knows, updated as jobs come and go */
        struct sim_job *jobs;
        int *queue;           /* jobs arrived and not started, oldest first */
        int queued;
        int n_hosts, n_jobs;
        enum sim_mode mode;
        GRand *rand;
        int failures;
};

struct result {
        double makespan, mean, p95, mean_wait;
        long deferred;        /* copies that chose to wait for a busy host at least once */
        double longest_defer; /* the longest any copy had waited when it last chose to wait */
        double busy;          /* fraction of the hosts copying, averaged over the arrival period */
        long spm_copies;
        /* The copy that ended last: */
        double last_size, last_arrival, last_wait, last_found, last_joined, last_bandwidth;
};

static void fail(struct sim *s, const char *what, double a, double b)
{
        if (s->failures++ < 10)
                fprintf(stderr, "ferry-sim: invariant broken (%s): %.9g vs %.9g\n", what, a, b);
}

static void view_update(struct sim *s, int i)
{
        struct sim_host *h = &s->hosts[i];

        s->view[i] = (struct engine_sched_host) {
                .usable = true,
                .is_spm = i == SPM,
                .running = h->n,
                .limit = h->slots,
                /* Processor sharing: a host with a copy moves at its full bandwidth. */
                .rate = h->n > 0 ? h->bandwidth : 0,
                .load = 0,
                .bandwidth = s->mode == SIM_LEAST_LOADED_BLIND ? 0 : h->bandwidth,
        };
}

/* Brings the remaining bytes of a host's jobs up to time t. */
static void host_advance(struct sim_host *h, struct sim_job *jobs, double t, double arrivals_end)
{
        if (h->n > 0 && t > h->last) {
                double each = (t - h->last) * h->bandwidth / (double) h->n;

                for (long k = 0; k < h->n; k++)
                        jobs[h->run[k]].remaining -= each;
                h->busy += t - h->last;
                h->busy_arriving += fmin(t, arrivals_end) - fmin(h->last, arrivals_end);
        }
        h->last = t;
}

static void host_schedule(struct sim_host *h, struct sim_job *jobs)
{
        double least = INFINITY;

        for (long k = 0; k < h->n; k++)
                least = fmin(least, jobs[h->run[k]].remaining);
        h->next_done = h->n > 0 ? h->last + fmax(least, 0) * (double) h->n / h->bandwidth : INFINITY;
}

static bool sized(enum sim_mode mode)
{
        return mode == SIM_LEAST_LOADED || mode == SIM_LEAST_LOADED_NOWAIT;
}

/* The engine's record for host i: each assigned copy's size as it knows it, times the fraction left. */
static void view_pending(struct sim *s, int i, double t)
{
        struct sim_host *h = &s->hosts[i];
        double pending = 0;

        for (long k = 0; k < h->n; k++) {
                const struct sim_job *o = &s->jobs[h->run[k]];
                double left = o->remaining - (t - h->last) * h->bandwidth / (double) h->n;

                pending += o->estimate * fmax(left, 0) / o->size;
        }
        s->view[i].bytes_pending = pending;
}

/* A host index, -1 when none can take the copy, ENGINE_SCHED_WAIT when it chooses to wait. */
static int choose(struct sim *s, const struct sim_job *j, double t, long ahead)
{
        if (s->mode == SIM_SPM_ONLY)
                return s->hosts[SPM].n < s->hosts[SPM].slots ? SPM : -1;
        if (s->mode == SIM_LEAST_LOADED_NOWAIT)
                return engine_sched_pick_copy(s->view, (size_t) s->n_hosts, ENGINE_SCHED_LEAST_LOADED, j->estimate, s->rand);
        if (s->mode == SIM_LEAST_LOADED)
                return engine_sched_place_copy(s->view, (size_t) s->n_hosts, ENGINE_SCHED_LEAST_LOADED,
                                               &(struct engine_sched_copy) { .bytes = j->estimate, .waited = t - j->arrival,
                                                                             .ahead = ahead }, s->rand);
        return engine_sched_pick(s->view, (size_t) s->n_hosts,
                                 s->mode == SIM_RANDOM ? ENGINE_SCHED_RANDOM : ENGINE_SCHED_LEAST_LOADED, s->rand);
}

/*
 * Offers the queued jobs a host, oldest first. One that chooses to wait stays
 * queued and the next is offered; when no host can take a job, none behind it
 * is offered either (no slot is free).
 */
static void dispatch(struct sim *s, double t)
{
        int kept = 0, k;

        if (s->queued == 0)
                return;
        if (sized(s->mode))
                for (int i = 0; i < s->n_hosts; i++)
                        view_pending(s, i, t);
        for (k = 0; k < s->queued; k++) {
                int jk = s->queue[k];
                struct sim_job *j = &s->jobs[jk];
                int i = choose(s, j, t, kept);
                struct sim_host *h;

                if (i == ENGINE_SCHED_WAIT) {
                        j->deferred = t;
                        s->queue[kept++] = jk;
                        continue;
                }
                if (i < 0)
                        break;
                h = &s->hosts[i];
                if (h->n >= h->slots) {
                        fail(s, "host over its job limit", (double) h->n, (double) h->slots);
                        break;
                }
                host_advance(h, s->jobs, t, s->jobs[s->n_jobs - 1].arrival);
                j->found = 0;
                for (long r = 0; r < h->n; r++)
                        j->found += s->jobs[h->run[r]].remaining;
                j->start = t;
                j->host = i;
                h->run[h->n++] = jk;
                h->moved += j->size;
                h->copies++;
                host_schedule(h, s->jobs);
                view_update(s, i);
                if (sized(s->mode))
                        view_pending(s, i, t);
        }
        for (; k < s->queued; k++)
                s->queue[kept++] = s->queue[k];
        s->queued = kept;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static struct result run(struct sim *s, enum sim_mode mode, guint32 seed)
{
        struct result res = { 0 };
        g_autofree double *completion = g_new(double, s->n_jobs);
        int arrived = 0, done = 0;
        double t = 0, fifo = -INFINITY;

        s->mode = mode;
        s->queued = 0;
        s->rand = g_rand_new_with_seed(seed);
        for (int i = 0; i < s->n_hosts; i++) {
                struct sim_host *h = &s->hosts[i];

                h->n = 0;
                h->last = 0;
                h->next_done = INFINITY;
                h->busy = h->busy_arriving = h->moved = 0;
                h->copies = 0;
                view_update(s, i);
        }
        for (int k = 0; k < s->n_jobs; k++) {
                s->jobs[k].remaining = s->jobs[k].size;
                s->jobs[k].host = -1;
                s->jobs[k].start = s->jobs[k].finish = s->jobs[k].deferred = NAN;
        }

        while (done < s->n_jobs) {
                double next_arrival = arrived < s->n_jobs ? s->jobs[arrived].arrival : INFINITY;
                double next_done = INFINITY;
                int first = -1;

                for (int i = 0; i < s->n_hosts; i++)
                        if (s->hosts[i].next_done < next_done) {
                                next_done = s->hosts[i].next_done;
                                first = i;
                        }
                if (first < 0 && next_arrival == INFINITY) {
                        fail(s, "jobs wait but nothing runs", (double) done, (double) s->n_jobs);
                        break;
                }
                if (next_arrival <= next_done) {
                        t = next_arrival;
                        s->queue[s->queued++] = arrived++;
                } else {
                        struct sim_host *h = &s->hosts[first];
                        long kept = 0;

                        t = next_done;
                        host_advance(h, s->jobs, t, s->jobs[s->n_jobs - 1].arrival);
                        /* The job that set next_done is done by construction; others may end at the same instant. */
                        for (long k = 0; k < h->n; k++) {
                                struct sim_job *j = &s->jobs[h->run[k]];

                                if (j->remaining <= fmax(1.0, 1e-9 * j->size)) {
                                        j->finish = t;
                                        j->remaining = 0;
                                        done++;
                                } else {
                                        h->run[kept++] = h->run[k];
                                }
                        }
                        if (kept == h->n) {
                                fail(s, "a completion event finished nothing", t, (double) first);
                                break;
                        }
                        h->n = kept;
                        host_schedule(h, s->jobs);
                        view_update(s, first);
                }
                dispatch(s, t);
        }

        for (int k = 0; k < s->n_jobs; k++) {
                struct sim_job *j = &s->jobs[k];

                if (j->finish > res.makespan) {
                        res.last_size = j->size;
                        res.last_arrival = j->arrival;
                        res.last_wait = j->start - j->arrival;
                        res.last_found = j->found;
                        res.last_bandwidth = s->hosts[j->host].bandwidth;
                        res.last_joined = 0;
                        for (int o = 0; o < s->n_jobs; o++)
                                if (s->jobs[o].host == j->host && s->jobs[o].start > j->start &&
                                    s->jobs[o].start < j->finish)
                                        res.last_joined += s->jobs[o].size;
                }
                res.makespan = fmax(res.makespan, j->finish);
                completion[k] = j->finish - j->arrival;
                res.mean += completion[k] / s->n_jobs;
                res.mean_wait += (j->start - j->arrival) / s->n_jobs;
                /* Only a copy that chose to wait may start after one that arrived later. */
                if (isnan(j->deferred)) {
                        if (!(j->start >= fifo))
                                fail(s, "the queue is not first in, first out", fifo, j->start);
                        fifo = j->start;
                } else {
                        res.deferred++;
                        res.longest_defer = fmax(res.longest_defer, j->deferred - j->arrival);
                        if (j->deferred - j->arrival > ENGINE_SCHED_MAX_WAIT)
                                fail(s, "a copy waited by choice beyond the bound", j->deferred - j->arrival,
                                     ENGINE_SCHED_MAX_WAIT);
                }
                if (!(j->start >= j->arrival && j->finish >= j->start))
                        fail(s, "job times out of order", j->start, j->finish);
                else if (j->finish - j->start < j->size / s->hosts[j->host].bandwidth * (1 - 1e-9))
                        fail(s, "job faster than its host", j->finish - j->start, j->size / s->hosts[j->host].bandwidth);
        }
        for (int i = 0; i < s->n_hosts; i++) {
                struct sim_host *h = &s->hosts[i];

                res.busy += h->busy_arriving / s->jobs[s->n_jobs - 1].arrival / s->n_hosts;
                /* Work conservation: a busy host moves exactly its bandwidth. */
                if (fabs(h->busy * h->bandwidth - h->moved) > 1e-6 * fmax(h->moved, GiB))
                        fail(s, "bytes moved by a host", h->busy * h->bandwidth, h->moved);
                if (h->n != 0)
                        fail(s, "host still running jobs", (double) h->n, 0);
        }
        res.spm_copies = s->hosts[SPM].copies;
        qsort(completion, (size_t) s->n_jobs, sizeof(double), cmp_double);
        res.p95 = completion[(size_t) ((s->n_jobs - 1) * 0.95)];
        g_rand_free(s->rand);
        s->rand = NULL;
        return res;
}

static double normal(GRand *r)
{
        /* Box-Muller; 1 - u keeps the logarithm finite. */
        double u = 1.0 - g_rand_double(r), v = g_rand_double(r);

        return sqrt(-2.0 * log(u)) * cos(2.0 * G_PI * v);
}

static void make_cluster(struct sim *s, GRand *r)
{
        for (int i = 0; i < s->n_hosts; i++) {
                struct sim_host *h = &s->hosts[i];
                double u = g_rand_double(r), acc = 0;
                int t = N_TIERS - 1;

                for (int k = 0; k < (int) N_TIERS; k++) {
                        acc += tiers[k].fraction;
                        if (u < acc) {
                                t = k;
                                break;
                        }
                }
                if (i == SPM)
                        t = SPM_TIER;
                h->tier = t;
                h->bandwidth = tiers[t].bandwidth;
                h->slots = tiers[t].slots;
                h->run = g_new(int, MAX_SLOTS);
        }
}

/* Sizes first, then Poisson arrivals at the rate that offers `load` of the cluster's bandwidth. */
static double make_jobs(struct sim *s, GRand *r, double load, double total_bandwidth, double size_error)
{
        double total = 0, rate, t = 0;

        for (int k = 0; k < s->n_jobs; k++) {
                double size = SIZE_MEDIAN * exp(SIZE_SIGMA * normal(r));

                s->jobs[k].size = fmin(fmax(size, SIZE_MIN), SIZE_MAX);
                total += s->jobs[k].size;
        }
        rate = load * total_bandwidth / (total / s->n_jobs);
        for (int k = 0; k < s->n_jobs; k++) {
                t += -log(1.0 - g_rand_double(r)) / rate;
                s->jobs[k].arrival = t;
        }
        for (int k = 0; k < s->n_jobs; k++)
                s->jobs[k].estimate = s->jobs[k].size * exp(size_error * normal(r));
        return rate;
}

int main(int argc, char **argv)
{
        gint64 seed = 1;
        gint hosts = 1000, n_jobs = 10000, slots = 0;
        gdouble load = 0.8, size_error = 0;
        gboolean quick = FALSE;
        const GOptionEntry entries[] = {
                { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "seed of the workload and of the policies (default 1)", "N" },
                { "hosts", 0, 0, G_OPTION_ARG_INT, &hosts, "hosts in the cluster, 2-100000 (default 1000)", "N" },
                { "jobs", 0, 0, G_OPTION_ARG_INT, &n_jobs, "copies to run, 1-10000000 (default 10000)", "N" },
                { "load", 0, 0, G_OPTION_ARG_DOUBLE, &load,
                  "offered load: arriving bytes/s over the cluster's total bandwidth, 0.05-5 (default 0.8)", "X" },
                { "slots", 0, 0, G_OPTION_ARG_INT, &slots,
                  "job limit of every host, 1-64 (default 0: 2, 4, 8 by tier)", "N" },
                { "size-error", 0, 0, G_OPTION_ARG_DOUBLE, &size_error,
                  "the engine knows each copy's size only within a log-normal factor of this sigma, 0-3 (default 0)", "S" },
                { "engine-only", 0, 0, G_OPTION_ARG_NONE, &quick,
                  "run only the engine's policy (least_loaded): no comparison with random", NULL },
                { NULL },
        };
        g_autoptr(GOptionContext) ctx = g_option_context_new("- simulate host selection policies on a large cluster");
        g_autoptr(GError) error = NULL;
        g_autoptr(GRand) r = NULL;
        struct sim s = { 0 };
        double total_bandwidth = 0, fastest = 0, total_bytes = 0, largest = 0, arrival_bound = 0, bound;
        double mean_bound = 0, rate;
        long per_tier[N_TIERS] = { 0 };
        const enum sim_mode modes[] = { SIM_LEAST_LOADED, SIM_LEAST_LOADED_NOWAIT, SIM_LEAST_LOADED_SHARE,
                                        SIM_LEAST_LOADED_BLIND, SIM_RANDOM, SIM_SPM_ONLY };
        struct result res[G_N_ELEMENTS(modes)];
        size_t n_modes = G_N_ELEMENTS(modes);
        double random_mean = NAN;

        g_option_context_add_main_entries(ctx, entries, NULL);
        if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
                fprintf(stderr, "ferry-sim: %s\n", error->message);
                return 2;
        }
        if (argc > 1 || hosts < 2 || hosts > MAX_HOSTS || n_jobs < 1 || n_jobs > MAX_JOBS ||
            !(load >= 0.05 && load <= 5) || !(size_error >= 0 && size_error <= 3) || slots < 0 || slots > MAX_SLOTS || seed < 0 || seed > G_MAXUINT32) {
                fprintf(stderr, "ferry-sim: --hosts must be 2-%d, --jobs 1-%d, --load 0.05-5, --size-error 0-3, --slots 0-%d, "
                        "--seed 0-%u, and nothing else on the command line (see --help)\n",
                        MAX_HOSTS, MAX_JOBS, MAX_SLOTS, G_MAXUINT32);
                return 2;
        }

        s.n_hosts = hosts;
        s.n_jobs = n_jobs;
        s.hosts = g_new0(struct sim_host, hosts);
        s.view = g_new0(struct engine_sched_host, hosts);
        s.jobs = g_new0(struct sim_job, n_jobs);
        s.queue = g_new(int, n_jobs);
        r = g_rand_new_with_seed((guint32) seed);
        make_cluster(&s, r);
        for (int i = 0; i < hosts; i++) {
                if (slots)
                        s.hosts[i].slots = slots;
                total_bandwidth += s.hosts[i].bandwidth;
                fastest = fmax(fastest, s.hosts[i].bandwidth);
                per_tier[s.hosts[i].tier]++;
        }
        rate = make_jobs(&s, r, load, total_bandwidth, size_error);
        for (int k = 0; k < n_jobs; k++) {
                total_bytes += s.jobs[k].size;
                largest = fmax(largest, s.jobs[k].size);
                arrival_bound = fmax(arrival_bound, s.jobs[k].arrival + s.jobs[k].size / fastest);
                mean_bound += s.jobs[k].size / fastest / n_jobs;
        }
        bound = fmax(fmax(total_bytes / total_bandwidth, largest / fastest), arrival_bound);

        printf("cluster: %d hosts:", hosts);
        for (size_t k = 0; k < N_TIERS; k++)
                printf(" %ld x %s (%.0f MiB/s, %ld slots)", per_tier[k], tiers[k].name, tiers[k].bandwidth / MiB,
                       slots ? (long) slots : tiers[k].slots);
        printf("; %.1f GiB/s in all; SPM: host 0 (%s)\n", total_bandwidth / GiB, tiers[SPM_TIER].name);
        printf("copies: %d, log-normal sizes (median %.0f GiB, sigma %.1f, %.0f-%.0f GiB): mean %.1f GiB, "
               "largest %.1f GiB, %.1f TiB in all\n",
               n_jobs, SIZE_MEDIAN / GiB, SIZE_SIGMA, SIZE_MIN / GiB, SIZE_MAX / GiB, total_bytes / n_jobs / GiB,
               largest / GiB, total_bytes / GiB / 1024);
        printf("arrivals: Poisson, %.2f copies/s over %.0f s: offered load %.2f of the cluster's bandwidth; "
               "sizes known to the engine within sigma %.2f; seed %" G_GINT64_FORMAT "\n",
               rate, s.jobs[n_jobs - 1].arrival, load, size_error, seed);
        printf("lower bound: %.1f s = max(bytes / bandwidth %.1f s, largest / fastest %.1f s, "
               "arrival + size / fastest %.1f s); mean completion bound %.1f s\n\n",
               bound, total_bytes / total_bandwidth, largest / fastest, arrival_bound, mean_bound);

        if (quick)
                n_modes = 1;        /* modes[0] is the engine's */
        for (size_t m = 0; m < n_modes; m++)
                res[m] = run(&s, modes[m], (guint32) seed);

        for (size_t m = 0; m < n_modes; m++)
                if (modes[m] == SIM_RANDOM)
                        random_mean = res[m].mean;
        printf("%-32s %11s %8s %14s %10s %9s %10s %6s %5s %8s\n", "policy", "makespan s", "/ bound", "mean compl. s",
               "random / it", "p95 s", "mean wait", "busy", "SPM", "waited");
        for (size_t m = 0; m < n_modes; m++) {
                printf("%-32s %11.1f %8.3f %14.1f %10.3gx %9.1f %10.1f %5.0f%% %5ld %8ld\n", mode_names[modes[m]],
                       res[m].makespan, res[m].makespan / bound, res[m].mean, random_mean / res[m].mean, res[m].p95,
                       res[m].mean_wait, 100 * res[m].busy, res[m].spm_copies, res[m].deferred);
                if (res[m].makespan < bound * (1 - 1e-9))
                        fail(&s, "makespan under the lower bound", res[m].makespan, bound);
                if (modes[m] != SIM_SPM_ONLY && res[m].spm_copies)
                        fail(&s, "the SPM copied while other hosts were usable", (double) res[m].spm_copies, 0);
        }
        printf("\ntargets: least_loaded makespan within 10%% of the bound: %s (%.1f%%); "
               "mean completion at least 2x better than random: %s (%.2fx)\n",
               res[0].makespan <= 1.1 * bound ? "met" : "NOT met", 100 * (res[0].makespan / bound - 1),
               isnan(random_mean) ? "not run" : random_mean >= 2 * res[0].mean ? "met" : "NOT met",
               random_mean / res[0].mean);
        printf("the copy that ended last: %.1f GiB, arrived at %.1f s, waited %.1f s, then shared a %.0f MiB/s host "
               "with %.1f GiB already there and %.1f GiB that joined it\n",
               res[0].last_size / GiB, res[0].last_arrival, res[0].last_wait, res[0].last_bandwidth / MiB,
               res[0].last_found / GiB, res[0].last_joined / GiB);

        for (int i = 0; i < hosts; i++)
                g_free(s.hosts[i].run);
        g_free(s.hosts);
        g_free(s.view);
        g_free(s.jobs);
        g_free(s.queue);
        if (s.failures) {
                fprintf(stderr, "ferry-sim: %d invariant(s) broken\n", s.failures);
                return 1;
        }
        return 0;
}
