/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Failed-login throttling: see throttle.h for the policy. */
#include <errno.h>
#include <string.h>

#include "listener.h"
#include "throttle.h"

struct entry {
        char *key;
        unsigned failures;
        unsigned inflight;
        gint64 last;                   /* last failure or attempt begun; in the trust table, last right password */
        gint64 event_last;             /* last failed-login event of this key (pairs only) */
        unsigned event_suppressed;     /* failures since event_last not shown */
        GList link;                    /* in t->lru, oldest first */
        bool in_table;
        unsigned refs;                 /* the table's one plus one per attempt in flight */
};

/* A bounded map of keys: past max, the least recently used key is dropped. */
struct table {
        GHashTable *keys;              /* key → struct entry */
        GQueue lru;
        unsigned max;
};

struct throttle {
        struct table live;             /* pairs, addresses and users with failures or attempts */
        /*
         * Pairs that gave the right password: apart from live so that a flood
         * of failures (which only live receives) cannot push them out.
         */
        struct table trust;
        gint64 event_window;           /* minute of the global event cap */
        unsigned event_count;
};

enum { PAIR, ADDRESS, USER, N_KEYS };

struct throttle_attempt {
        struct entry *e[N_KEYS];       /* USER is NULL for an invalid name */
        bool trusted;                  /* the pair gave the right password lately: the user count spares it */
};

static void entry_unref(struct entry *e)
{
        if (--e->refs == 0) {
                g_free(e->key);
                g_free(e);
        }
}

static void drop(struct table *t, struct entry *e)
{
        g_queue_unlink(&t->lru, &e->link);
        e->in_table = false;
        g_hash_table_steal(t->keys, e->key);
        entry_unref(e);
}

struct throttle *throttle_new(unsigned max_keys)
{
        struct throttle *t = g_new0(struct throttle, 1);
        struct table *tables[] = { &t->live, &t->trust };

        for (size_t i = 0; i < G_N_ELEMENTS(tables); i++) {
                tables[i]->keys = g_hash_table_new(g_str_hash, g_str_equal);
                tables[i]->max = MAX(max_keys, N_KEYS);
                g_queue_init(&tables[i]->lru);
        }
        return t;
}

static void table_clear(struct table *t)
{
        while (t->lru.head)
                drop(t, t->lru.head->data);
        g_hash_table_unref(t->keys);
}

void throttle_free(struct throttle *t)
{
        if (!t)
                return;
        table_clear(&t->live);
        table_clear(&t->trust);
        g_free(t);
}

unsigned throttle_size(struct throttle *t)
{
        return g_hash_table_size(t->live.keys);
}

unsigned throttle_trusted_size(struct throttle *t)
{
        return g_hash_table_size(t->trust.keys);
}

static void forget_if_old(struct entry *e, gint64 now)
{
        if (e->inflight == 0 && now - e->last > THROTTLE_FORGET_S)
                e->failures = 0;
}

unsigned throttle_failures(struct throttle *t, const char *key, gint64 now)
{
        struct entry *e = g_hash_table_lookup(t->live.keys, key);

        if (!e)
                return 0;
        forget_if_old(e, now);
        return e->failures;
}

/* The entry of key, made (evicting the least recently used) if new, moved to the young end. */
static struct entry *touch(struct table *t, char *key, gint64 now)
{
        struct entry *e = g_hash_table_lookup(t->keys, key);

        if (e) {
                g_free(key);
                g_queue_unlink(&t->lru, &e->link);
                forget_if_old(e, now);
        } else {
                /* Dropped keys still in flight stay alive through their attempts' references. */
                while (g_hash_table_size(t->keys) >= t->max && t->lru.head)
                        drop(t, t->lru.head->data);
                e = g_new0(struct entry, 1);
                e->key = key;
                e->link.data = e;
                e->refs = 1;
                e->in_table = true;
                g_hash_table_insert(t->keys, e->key, e);
        }
        g_queue_push_tail_link(&t->lru, &e->link);
        e->last = now;
        return e;
}

/* Counted as the connection caps count a client (fy_peer_key: an IPv6 source by its /64); else as given. */
static char *address_key(const char *address)
{
        g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(address);

        return inet ? fy_peer_key(inet) : g_strdup(address);
}

/* The pair (its key) logged in with the right password lately: the user-wide count does not hold it back. */
static bool trusted(struct throttle *t, const char *pair_key, gint64 now)
{
        struct entry *e = g_hash_table_lookup(t->trust.keys, pair_key);

        return e && now - e->last < THROTTLE_TRUST_S;
}

/* An entry of the live table without making it: NULL when absent. */
static struct entry *peek(struct throttle *t, const char *key, gint64 now)
{
        struct entry *e = g_hash_table_lookup(t->live.keys, key);

        if (e)
                forget_if_old(e, now);
        return e;
}

static unsigned delay_for(unsigned n, unsigned free)
{
        if (n < free)
                return 0;
        return n - free >= 5 ? THROTTLE_DELAY_MAX_S : MIN(1u << (n - free), THROTTLE_DELAY_MAX_S);
}

/* The wait of an attempt now: attempts in flight count as the failures they may turn out to be. */
static unsigned delay_of(struct throttle_attempt *a, gint64 now)
{
        static const unsigned free[N_KEYS] = { [PAIR] = THROTTLE_FREE, [ADDRESS] = THROTTLE_FREE,
                                               [USER] = THROTTLE_USER_FREE };
        unsigned d = 0;

        for (int k = 0; k < N_KEYS; k++)
                if (a->e[k] && !(k == USER && a->trusted))
                        d = MAX(d, delay_for(a->e[k]->failures + a->e[k]->inflight, free[k]));
        return d;
}

int throttle_begin(struct throttle *t, const char *user, const char *address, gint64 now,
                   struct throttle_attempt **ret, unsigned *ret_delay_s)
{
        struct throttle_attempt a = { { NULL } };
        g_autofree char *where = address_key(address);
        /* An invalid name is one pair per address: guesses of names are still counted. */
        g_autofree char *pair = g_strconcat("p:", user ? user : "", "\n", where, NULL);
        g_autofree char *addr = g_strconcat("a:", where, NULL);
        g_autofree char *who = user ? g_strconcat("u:", user, NULL) : NULL;

        *ret = NULL;
        a.trusted = user && trusted(t, pair, now);
        /*
         * Refused before anything is added: a refusal costs the table
         * nothing. Only the pair's and the address's attempts in flight are
         * capped (they are the sender's own); a user's never are, or anyone
         * could lock the user out by keeping guesses in flight: past its
         * count, the user's attempts wait (in flight counts as failed).
         */
        a.e[PAIR] = peek(t, pair, now);
        a.e[ADDRESS] = peek(t, addr, now);
        a.e[USER] = who ? peek(t, who, now) : NULL;
        if ((a.e[PAIR] && a.e[PAIR]->inflight >= THROTTLE_INFLIGHT_PAIR) ||
            (a.e[ADDRESS] && a.e[ADDRESS]->inflight >= THROTTLE_INFLIGHT_ADDRESS)) {
                *ret_delay_s = MAX(delay_of(&a, now), 1);
                return -EBUSY;
        }
        a.e[PAIR] = touch(&t->live, g_steal_pointer(&pair), now);
        a.e[ADDRESS] = touch(&t->live, g_steal_pointer(&addr), now);
        if (who)
                a.e[USER] = touch(&t->live, g_steal_pointer(&who), now);
        *ret_delay_s = delay_of(&a, now);
        for (int k = 0; k < N_KEYS; k++)
                if (a.e[k]) {
                        a.e[k]->inflight++;
                        a.e[k]->refs++;
                }
        *ret = g_memdup2(&a, sizeof(a));
        return 0;
}

bool throttle_trusted(struct throttle *t, const char *user, const char *address, gint64 now)
{
        g_autofree char *where = address_key(address);
        g_autofree char *pair = g_strconcat("p:", user, "\n", where, NULL);

        return trusted(t, pair, now);
}

/* The failed-login event of a pair: the first at once, then one a minute with the count between. */
static void event_due(struct throttle *t, struct entry *pair, gint64 now, struct throttle_outcome *out)
{
        if (pair->event_last && now - pair->event_last < THROTTLE_EVENT_INTERVAL_S) {
                pair->event_suppressed++;
                return;
        }
        if (now / 60 != t->event_window) {
                t->event_window = now / 60;
                t->event_count = 0;
        }
        if (t->event_count >= THROTTLE_EVENTS_PER_MINUTE) {
                pair->event_suppressed++;
                return;
        }
        t->event_count++;
        out->event = true;
        out->suppressed = pair->event_suppressed;
        pair->event_suppressed = 0;
        pair->event_last = now;
}

void throttle_end(struct throttle *t, struct throttle_attempt *a, int result, gint64 now,
                  struct throttle_outcome *ret_out)
{
        struct throttle_outcome out = { 0 };

        for (int k = 0; k < N_KEYS; k++)
                if (a->e[k])
                        a->e[k]->inflight--;
        if (result == THROTTLE_SUCCESS) {
                a->e[PAIR]->failures = 0;
                a->e[ADDRESS]->failures = 0;
                /* Only a right password enters the trust table: failures cannot evict it. */
                if (a->e[USER])
                        touch(&t->trust, g_strdup(a->e[PAIR]->key), now);
        } else if (result == THROTTLE_FAILURE) {
                unsigned before = delay_of(a, now);

                for (int k = 0; k < N_KEYS; k++)
                        if (a->e[k]) {
                                a->e[k]->failures++;
                                a->e[k]->last = now;
                        }
                event_due(t, a->e[PAIR], now, &out);
                out.next_delay_s = delay_of(a, now);
                out.first_delay = before == 0 && out.next_delay_s > 0;
        }
        for (int k = 0; k < N_KEYS; k++)
                if (a->e[k])
                        entry_unref(a->e[k]);
        g_free(a);
        if (ret_out)
                *ret_out = out;
}
