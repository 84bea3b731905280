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
 * What a pick reads from the store: the usable hosts, the SPM, the copies
 * sent to each host and when the copies still without one were created.
 * Inside a slice of a commands round it is read once and shared by every
 * pick of the slice: with ten thousand copies waiting for a host, each of
 * them re-read the rows of the ~800 running copies at every round
 * (bench/scale: most of the engine's time, and 80 % of a core in
 * PostgreSQL). Picks made since are in e->picking and added at each pick;
 * a copy that ends within the slice still counts until the next one (at
 * most round_budget_ms later): a host may look busier than it is for that
 * long, never idler. Outside a round every pick reads afresh.
 */
struct pick_inputs {
        struct engine *e;
        guint64 serial;               /* e->round_serial when read */
        GPtrArray *usable;
        char *spm;
        GHashTable *sent;             /* host id → struct assigned: the store's record, picks not included */
        GArray *waiting;              /* gint64 creation times, ascending; NULL until a pick needs it */
};

static struct pick_inputs shared;

static void inputs_clear(struct pick_inputs *in)
{
        g_clear_pointer(&in->usable, g_ptr_array_unref);
        g_clear_pointer(&in->spm, g_free);
        g_clear_pointer(&in->sent, g_hash_table_unref);
        g_clear_pointer(&in->waiting, g_array_unref);
        in->e = NULL;
}

/*
 * The copies sent to each host by the engine's own record, with the bytes
 * they still have to move: each copy's estimated size (params.bytes) times
 * what its step has left. One query for all hosts: one per host made a pick
 * cost hosts x active copies (bench/scale).
 */
static GHashTable *sent_by_host(struct engine *e)
{
        g_autoptr(json_t) rows = NULL;
        GHashTable *by = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
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
        return by;
}

static const struct pick_inputs *inputs_get(struct engine *e, struct pick_inputs *fresh)
{
        struct pick_inputs *in = fresh;

        if (e->round_running) {
                if (shared.e == e && shared.serial == e->round_serial)
                        return &shared;
                inputs_clear(&shared);
                in = &shared;
        }
        in->e = e;
        in->serial = e->round_serial;
        in->usable = engine_usable_hosts(e);
        in->spm = engine_spm_host(e);
        in->sent = sent_by_host(e);
        return in;
}

/* A host's copies: the store's record plus the picks not yet sent, counted with their whole estimated size
 * (without them, several copies placed in one round all see the same idle host). */
static struct assigned assigned_to(struct engine *e, const struct pick_inputs *in, const char *host)
{
        const struct assigned *a = g_hash_table_lookup(in->sent, host);
        struct assigned out = a ? *a : (struct assigned) { 0 };
        GHashTableIter it;
        gpointer value;

        g_hash_table_iter_init(&it, e->picking);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                const struct engine_pick *p = value;

                if (strcmp(p->host, host) == 0) {
                        out.copies++;
                        out.bytes += p->bytes;
                }
        }
        return out;
}

/*
 * Copies older than `created` still looking for a host (not sent, not picked):
 * the rounds offer them hosts first. Picks in flight are subtracted whatever
 * their age, and copies created in the same second do not count: an estimate.
 */
static long copies_ahead(struct engine *e, struct pick_inputs *in, gint64 created)
{
        guint lo = 0, hi;

        if (!in->waiting && engine_store_copies_waiting(e->db, &in->waiting, NULL) < 0)
                in->waiting = g_array_new(FALSE, FALSE, sizeof(gint64));
        hi = in->waiting->len;
        while (lo < hi) {             /* the first not older than created */
                guint mid = lo + (hi - lo) / 2;

                if (g_array_index(in->waiting, gint64, mid) < created)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return (long) MAX((gint64) lo - (gint64) g_hash_table_size(e->picking), 0);
}

void engine_pick_sent(struct engine *e, const char *host, double bytes)
{
        struct assigned *a;

        if (!e->round_running || shared.e != e || shared.serial != e->round_serial || !host)
                return;
        a = g_hash_table_lookup(shared.sent, host);
        if (!a) {
                a = g_new0(struct assigned, 1);
                g_hash_table_replace(shared.sent, g_strdup(host), a);
        }
        a->copies++;
        a->bytes += bytes;
}

char *engine_pick_copy_host(struct engine *e, json_t *exclude)
{
        return engine_pick_copy_host_sized(e, exclude, 0, 0);
}

char *engine_pick_copy_host_sized(struct engine *e, json_t *exclude, double bytes, gint64 created)
{
        struct pick_inputs fresh = { 0 };
        struct pick_inputs *in;
        g_autofree struct engine_sched_host *hosts = NULL;
        static GRand *rand;
        enum engine_sched_policy policy;
        char *chosen = NULL;
        int pick;

        in = (struct pick_inputs *) inputs_get(e, &fresh);
        if (!engine_option_bool(e, "DataOperationsByHSM", e->config.data_operations_by_hsm)) {
                chosen = g_strdup(in->spm);
                goto out;
        }
        if (!rand)
                rand = g_rand_new();

        hosts = g_new0(struct engine_sched_host, in->usable->len + 1);
        for (guint i = 0; i < in->usable->len; i++) {
                const char *id = in->usable->pdata[i];
                struct engine_host *h = g_hash_table_lookup(e->hosts, id);
                json_t *st = h ? h->stats : NULL;
                struct assigned a;

                if (!st || in_list(exclude, id))
                        continue;      /* usable stays false: nothing known of its load yet, or excluded */
                a = assigned_to(e, in, id);
                hosts[i] = (struct engine_sched_host) {
                        .usable = true,
                        .is_spm = in->spm && strcmp(in->spm, id) == 0,
                        .running = (long) MAX(json_integer_value(json_object_get(st, "jobs_running")) +
                                              json_integer_value(json_object_get(st, "jobs_pending")),
                                              a.copies),
                        .limit = (long) json_integer_value(json_object_get(st, "job_limit")),
                        .rate = json_number_value(json_object_get(st, "copy_rate")),
                        .load = json_number_value(json_object_get(st, "cpuLoad")),
                        /* 0 = unlimited: the policy then falls back to counting jobs */
                        .bandwidth = (double) json_integer_value(json_object_get(st, "copy_rate_limit")),
                        .bytes_pending = a.bytes,
                };
        }
        policy = strcmp(e->config.host_selection_policy, "random") == 0 ? ENGINE_SCHED_RANDOM
                                                                         : ENGINE_SCHED_LEAST_LOADED;
        if (created > 0)
                pick = engine_sched_place_copy(hosts, in->usable->len, policy,
                                               &(struct engine_sched_copy) { .bytes = bytes,
                                                                             .waited = (double) (engine_now() - created),
                                                                             .ahead = copies_ahead(e, in, created) },
                                               rand);
        else
                pick = engine_sched_pick_copy(hosts, in->usable->len, policy, bytes, rand);
        if (pick >= 0)
                chosen = g_strdup(in->usable->pdata[pick]);
out:
        inputs_clear(&fresh);
        return chosen;
}
