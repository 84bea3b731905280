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
        gint64 last;                   /* last failure or attempt begun */
        gint64 good;                   /* last right password of this pair (pairs only) */
        gint64 event_last;             /* last failed-login event of this key (pairs only) */
        unsigned event_suppressed;     /* failures since event_last not shown */
        GList link;                    /* in t->lru, oldest first */
        bool in_table;
        unsigned refs;                 /* the table's one plus one per attempt in flight */
};

struct throttle {
        GHashTable *keys;              /* key → struct entry */
        GQueue lru;
        unsigned max_keys;
        gint64 event_window;           /* minute of the global event cap */
        unsigned event_count;
};

enum { PAIR, ADDRESS, USER, N_KEYS };

struct throttle_attempt {
        struct entry *e[N_KEYS];       /* USER is NULL for an invalid name */
};

static void entry_unref(struct entry *e)
{
        if (--e->refs == 0) {
                g_free(e->key);
                g_free(e);
        }
}

static void drop(struct throttle *t, struct entry *e)
{
        g_queue_unlink(&t->lru, &e->link);
        e->in_table = false;
        g_hash_table_steal(t->keys, e->key);
        entry_unref(e);
}

struct throttle *throttle_new(unsigned max_keys)
{
        struct throttle *t = g_new0(struct throttle, 1);

        t->keys = g_hash_table_new(g_str_hash, g_str_equal);
        t->max_keys = MAX(max_keys, N_KEYS);
        g_queue_init(&t->lru);
        return t;
}

void throttle_free(struct throttle *t)
{
        if (!t)
                return;
        while (t->lru.head)
                drop(t, t->lru.head->data);
        g_hash_table_unref(t->keys);
        g_free(t);
}

unsigned throttle_size(struct throttle *t)
{
        return g_hash_table_size(t->keys);
}

static void forget_if_old(struct entry *e, gint64 now)
{
        if (e->inflight == 0 && now - e->last > THROTTLE_FORGET_S)
                e->failures = 0;
}

unsigned throttle_failures(struct throttle *t, const char *key, gint64 now)
{
        struct entry *e = g_hash_table_lookup(t->keys, key);

        if (!e)
                return 0;
        forget_if_old(e, now);
        return e->failures;
}

/* The entry of key, made (evicting the least recently used) if new, moved to the young end. */
static struct entry *touch(struct throttle *t, char *key, gint64 now)
{
        struct entry *e = g_hash_table_lookup(t->keys, key);

        if (e) {
                g_free(key);
                g_queue_unlink(&t->lru, &e->link);
                forget_if_old(e, now);
        } else {
                /* Dropped keys still in flight stay alive through their attempts' references. */
                while (g_hash_table_size(t->keys) >= t->max_keys && t->lru.head)
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

/* The pair logged in with the right password lately: the user-wide count does not hold it back. */
static bool trusted(struct entry *pair, gint64 now)
{
        return pair->good && now - pair->good < THROTTLE_TRUST_S;
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
                if (a->e[k] && !(k == USER && trusted(a->e[PAIR], now)))
                        d = MAX(d, delay_for(a->e[k]->failures + a->e[k]->inflight, free[k]));
        return d;
}

int throttle_begin(struct throttle *t, const char *user, const char *address, gint64 now,
                   struct throttle_attempt **ret, unsigned *ret_delay_s)
{
        struct throttle_attempt a = { { NULL } };
        g_autofree char *where = address_key(address);

        *ret = NULL;
        /* An invalid name is one pair per address: guesses of names are still counted. */
        a.e[PAIR] = touch(t, g_strconcat("p:", user ? user : "", "\n", where, NULL), now);
        a.e[ADDRESS] = touch(t, g_strconcat("a:", where, NULL), now);
        if (user)
                a.e[USER] = touch(t, g_strconcat("u:", user, NULL), now);
        *ret_delay_s = delay_of(&a, now);
        if (a.e[PAIR]->inflight >= THROTTLE_INFLIGHT_PAIR || a.e[ADDRESS]->inflight >= THROTTLE_INFLIGHT_ADDRESS ||
            (a.e[USER] && a.e[USER]->inflight >= THROTTLE_INFLIGHT_USER && !trusted(a.e[PAIR], now))) {
                *ret_delay_s = MAX(*ret_delay_s, 1);
                return -EBUSY;
        }
        for (int k = 0; k < N_KEYS; k++)
                if (a.e[k]) {
                        a.e[k]->inflight++;
                        a.e[k]->refs++;
                }
        *ret = g_memdup2(&a, sizeof(a));
        return 0;
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
                a->e[PAIR]->good = now;
                a->e[ADDRESS]->failures = 0;
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
