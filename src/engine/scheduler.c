/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host selection for data copies: gathers what the engine knows of each
 * host (its last Host.getStats and the copies assigned to it since) and
 * lets the pure policy in sched.c choose. With DataOperationsByHSM off
 * every copy goes to the SPM.
 */
#include <string.h>

#include "hostsched.h"
#include "hosts.h"
#include "engoptions.h"
#include "scheduler.h"

/*
 * What the engine itself has put on a host: the copies recorded as sent
 * there plus those picked but not sent yet, and the bytes they still have
 * to move (each copy's estimated size times what its step has left; a pick
 * not yet sent carries its whole size: without it, several copies placed
 * in one round all see the same idle host).
 */
static void assigned_load(struct engine *e, const char *host_id, gint64 *ret_copies, double *ret_bytes)
{
        GHashTableIter it;
        gpointer value;

        if (engine_store_copy_load(e->db, host_id, ret_copies, ret_bytes, NULL) < 0)
                g_message("host %s: its copies could not be counted; counting none", host_id);
        g_hash_table_iter_init(&it, e->picking);
        while (g_hash_table_iter_next(&it, NULL, &value))
                if (strcmp(((struct engine_pick *) value)->host, host_id) == 0) {
                        (*ret_copies)++;
                        *ret_bytes += ((struct engine_pick *) value)->bytes;
                }
}

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

char *engine_pick_copy_host(struct engine *e, json_t *exclude)
{
        return engine_pick_copy_host_sized(e, exclude, 0);
}

char *engine_pick_copy_host_sized(struct engine *e, json_t *exclude, double bytes)
{
        g_autoptr(GPtrArray) usable = NULL;
        g_autofree char *spm = engine_spm_host(e);
        g_autofree struct engine_sched_host *hosts = NULL;
        static GRand *rand;
        int pick;

        if (!engine_option_bool(e, "DataOperationsByHSM", e->config.data_operations_by_hsm))
                return g_steal_pointer(&spm);
        if (!rand)
                rand = g_rand_new();

        usable = engine_usable_hosts(e);
        hosts = g_new0(struct engine_sched_host, usable->len + 1);
        for (guint i = 0; i < usable->len; i++) {
                const char *id = usable->pdata[i];
                struct engine_host *h = g_hash_table_lookup(e->hosts, id);
                json_t *st = h ? h->stats : NULL;

                gint64 copies;
                double pending;

                if (!st || in_list(exclude, id))
                        continue;      /* usable stays false: nothing known of its load yet, or excluded */
                assigned_load(e, id, &copies, &pending);
                hosts[i] = (struct engine_sched_host) {
                        .usable = true,
                        .is_spm = spm && strcmp(spm, id) == 0,
                        .running = (long) MAX(json_integer_value(json_object_get(st, "jobs_running")) +
                                              json_integer_value(json_object_get(st, "jobs_pending")),
                                              copies),
                        .limit = (long) json_integer_value(json_object_get(st, "job_limit")),
                        .rate = json_number_value(json_object_get(st, "copy_rate")),
                        .load = json_number_value(json_object_get(st, "cpuLoad")),
                        /* 0 = unlimited: the policy then falls back to counting jobs */
                        .bandwidth = (double) json_integer_value(json_object_get(st, "copy_rate_limit")),
                        .bytes_pending = pending,
                };
        }
        pick = engine_sched_pick_copy(hosts, usable->len,
                                      strcmp(e->config.host_selection_policy, "random") == 0 ? ENGINE_SCHED_RANDOM
                                                                                             : ENGINE_SCHED_LEAST_LOADED,
                                      bytes, rand);
        return pick < 0 ? NULL : g_strdup(usable->pdata[pick]);
}
