/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host selection for data copies: gathers what the engine knows of each
 * host (its last Host.getStats and the copies assigned to it since) and
 * lets the pure policy in hostsched.c choose (or wait for a busy host). With DataOperationsByHSM off
 * every copy goes to the SPM.
 */
#include <string.h>

#include "clock.h"
#include "hostsched.h"
#include "hosts.h"
#include "engoptions.h"
#include "scheduler.h"

struct engine_pick *engine_pick_new(const char *host, double bytes)
{
        struct engine_pick *p = g_new0(struct engine_pick, 1);

        p->host = g_strdup(host);
        p->bytes = bytes;
        return p;
}

void engine_pick_free(struct engine_pick *p)
{
        if (!p)
                return;
        g_free(p->host);
        g_free(p);
}

static bool in_list(json_t *list, const char *id)
{
        size_t i;
        json_t *v;

        json_array_foreach(list, i, v)
                if (g_strcmp0(json_string_value(v), id) == 0)
                        return true;
        return false;
}

/* What the engine's own record says of one host's copies. */
struct assigned {
        gint64 copies;        /* sent to it, and picked for it but not yet sent */
        double bytes;         /* what they still have to move */
};

/*
 * The copies sent to each host by the engine's own record, with the bytes
 * they still have to move: each copy's estimated size (params.bytes) times
 * what its step has left; picks not yet sent count with their whole estimated
 * size (without them, several copies placed in one round all see the same idle
 * host). One query for all hosts: one per host made a pick cost hosts x active
 * copies (bench/scale).
 */
static GHashTable *assigned_by_host(struct engine *e)
{
        g_autoptr(json_t) rows = NULL;
        GHashTable *by = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        GHashTableIter it;
        gpointer value;
        size_t i;
        json_t *row;

        if (engine_store_copy_loads(e->db, &rows, NULL) < 0)
                g_message("the hosts' copies could not be counted; counting none");
        if (rows)
                json_array_foreach(rows, i, row) {
                        struct assigned *a;
                        const char *host = json_string_value(json_object_get(row, "host"));

                        if (!host)
                                continue;
                        a = g_new0(struct assigned, 1);
                        a->copies = json_integer_value(json_object_get(row, "n"));
                        a->bytes = json_number_value(json_object_get(row, "b"));
                        g_hash_table_replace(by, g_strdup(host), a);
                }
        g_hash_table_iter_init(&it, e->picking);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                const struct engine_pick *p = value;
                struct assigned *a = g_hash_table_lookup(by, p->host);

                if (!a) {
                        a = g_new0(struct assigned, 1);
                        g_hash_table_replace(by, g_strdup(p->host), a);
                }
                a->copies++;
                a->bytes += p->bytes;
        }
        return by;
}

char *engine_pick_copy_host(struct engine *e, json_t *exclude)
{
        return engine_pick_copy_host_sized(e, exclude, 0, 0);
}

/*
 * Copies older than `created` still looking for a host (not sent, not picked):
 * the rounds offer them hosts first. Picks in flight are subtracted whatever
 * their age, and copies created in the same second do not count: an estimate.
 */
static long copies_ahead(struct engine *e, gint64 created)
{
        gint64 n = 0;

        if (engine_store_copies_waiting_before(e->db, created, &n, NULL) < 0)
                n = 0;
        return (long) MAX(n - (gint64) g_hash_table_size(e->picking), 0);
}

char *engine_pick_copy_host_sized(struct engine *e, json_t *exclude, double bytes, gint64 created)
{
        g_autoptr(GPtrArray) usable = NULL;
        g_autofree char *spm = engine_spm_host(e);
        g_autofree struct engine_sched_host *hosts = NULL;
        g_autoptr(GHashTable) assigned = NULL;
        static GRand *rand;
        enum engine_sched_policy policy;
        int pick;

        if (!engine_option_bool(e, "DataOperationsByHSM", e->config.data_operations_by_hsm))
                return g_steal_pointer(&spm);
        if (!rand)
                rand = g_rand_new();

        usable = engine_usable_hosts(e);
        assigned = assigned_by_host(e);
        hosts = g_new0(struct engine_sched_host, usable->len + 1);
        for (guint i = 0; i < usable->len; i++) {
                const char *id = usable->pdata[i];
                struct engine_host *h = g_hash_table_lookup(e->hosts, id);
                json_t *st = h ? h->stats : NULL;
                const struct assigned *a = g_hash_table_lookup(assigned, id);

                if (!st || in_list(exclude, id))
                        continue;      /* usable stays false: nothing known of its load yet, or excluded */
                hosts[i] = (struct engine_sched_host) {
                        .usable = true,
                        .is_spm = spm && strcmp(spm, id) == 0,
                        .running = (long) MAX(json_integer_value(json_object_get(st, "jobs_running")) +
                                              json_integer_value(json_object_get(st, "jobs_pending")),
                                              a ? a->copies : 0),
                        .limit = (long) json_integer_value(json_object_get(st, "job_limit")),
                        .rate = json_number_value(json_object_get(st, "copy_rate")),
                        .load = json_number_value(json_object_get(st, "cpuLoad")),
                        /* 0 = unlimited: the policy then falls back to counting jobs */
                        .bandwidth = (double) json_integer_value(json_object_get(st, "copy_rate_limit")),
                        .bytes_pending = a ? a->bytes : 0,
                };
        }
        policy = strcmp(e->config.host_selection_policy, "random") == 0 ? ENGINE_SCHED_RANDOM
                                                                         : ENGINE_SCHED_LEAST_LOADED;
        if (created > 0)
                pick = engine_sched_place_copy(hosts, usable->len, policy,
                                               &(struct engine_sched_copy) { .bytes = bytes,
                                                                             .waited = (double) (engine_now() - created),
                                                                             .ahead = copies_ahead(e, created) },
                                               rand);
        else
                pick = engine_sched_pick_copy(hosts, usable->len, policy, bytes, rand);
        return pick < 0 ? NULL : g_strdup(usable->pdata[pick]);
}
