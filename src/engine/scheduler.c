/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host selection for data copies (DESIGN §7). Filter: up, pool-connected,
 * not in maintenance, under its job limit — counting both what the host
 * reported and the copies the engine assigned it since. Score
 * (least_loaded): fewest running data jobs, then least bytes/s in flight,
 * then lowest load; ties at random. random: any host that passes the
 * filter (the original oVirt behaviour). With DataOperationsByHSM off every
 * copy goes to the SPM. The SPM is used for copies only when no other host
 * can take them: its job is metadata.
 */
#include <math.h>
#include <string.h>

#include "engine.h"

struct candidate {
        const char *id;
        gint64 running;
        double rate;
        double load;
        guint32 tie;
};

static gint64 assigned_copies(struct engine *e, const char *host_id)
{
        g_autoptr(json_t) row = engine_db_query_one(e->db, NULL,
                "SELECT COUNT(*) AS n FROM commands WHERE type = 'copy_data' AND state = 'active' "
                "AND phase = 'sent' AND host = ?", "s", host_id);

        return row ? json_integer_value(json_object_get(row, "n")) : 0;
}

static int candidate_cmp(const void *pa, const void *pb)
{
        const struct candidate *a = pa, *b = pb;

        if (a->running != b->running)
                return a->running < b->running ? -1 : 1;
        if (fabs(a->rate - b->rate) > 1.0)
                return a->rate < b->rate ? -1 : 1;
        if (fabs(a->load - b->load) > 0.05)
                return a->load < b->load ? -1 : 1;
        return a->tie < b->tie ? -1 : a->tie > b->tie;
}

char *engine_pick_copy_host(struct engine *e)
{
        g_autoptr(GPtrArray) usable = NULL;
        g_autofree char *spm = engine_spm_host(e);
        g_autofree struct candidate *cands = NULL;
        size_t n = 0;

        if (!engine_option_bool(e, "DataOperationsByHSM", e->config.data_operations_by_hsm))
                return g_steal_pointer(&spm);

        usable = engine_usable_hosts(e);
        cands = g_new0(struct candidate, usable->len + 1);
        for (guint pass = 0; pass < 2 && n == 0; pass++) {
                for (guint i = 0; i < usable->len; i++) {
                        const char *id = usable->pdata[i];
                        struct engine_host *h = g_hash_table_lookup(e->hosts, id);
                        gint64 limit, running, assigned;

                        /* First pass without the SPM; the second lets it in. */
                        if ((pass == 0) == (spm && strcmp(spm, id) == 0))
                                continue;
                        if (!h || !h->stats)
                                continue;
                        limit = json_integer_value(json_object_get(h->stats, "job_limit"));
                        running = json_integer_value(json_object_get(h->stats, "jobs_running")) +
                                  json_integer_value(json_object_get(h->stats, "jobs_pending"));
                        assigned = assigned_copies(e, id);
                        running = MAX(running, assigned);
                        if (running >= limit)
                                continue;
                        cands[n++] = (struct candidate) {
                                .id = id,
                                .running = running,
                                .rate = json_number_value(json_object_get(h->stats, "copy_rate")),
                                .load = json_number_value(json_object_get(h->stats, "cpuLoad")),
                                .tie = g_random_int(),
                        };
                }
        }
        if (n == 0)
                return NULL;
        if (strcmp(e->config.host_selection_policy, "random") == 0)
                return g_strdup(cands[g_random_int_range(0, (gint32) n)].id);
        qsort(cands, n, sizeof(*cands), candidate_cmp);
        return g_strdup(cands[0].id);
}
