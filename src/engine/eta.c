/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <math.h>
#include <string.h>

#include "eta.h"

#define MAX_SAMPLES 64         /* per key */
#define MIN_GAP_US (G_USEC_PER_SEC / 2)  /* closer samples replace the newest: 64 always span the window */

struct sample {
        gint64 t;
        double p;
};

struct series {
        struct sample s[MAX_SAMPLES];
        unsigned first, n;     /* ring */
};

struct engine_eta {
        GHashTable *keys;      /* key → struct series* */
};

struct engine_eta *engine_eta_new(void)
{
        struct engine_eta *t = g_new0(struct engine_eta, 1);

        t->keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return t;
}

void engine_eta_free(struct engine_eta *t)
{
        if (!t)
                return;
        g_hash_table_unref(t->keys);
        g_free(t);
}

static struct sample *at(struct series *s, unsigned i)
{
        return &s->s[(s->first + i) % MAX_SAMPLES];
}

/* Drops samples older than the window, but keeps the newest of those: the window's start. */
static void trim(struct series *s, gint64 now_us)
{
        while (s->n >= 2 && at(s, 1)->t <= now_us - ETA_WINDOW_S * G_USEC_PER_SEC) {
                s->first = (s->first + 1) % MAX_SAMPLES;
                s->n--;
        }
}

void engine_eta_observe(struct engine_eta *t, const char *key, gint64 now_us, double progress)
{
        struct series *s = g_hash_table_lookup(t->keys, key);

        if (isnan(progress))
                return;
        if (!s) {
                /* Bounded: ends that were never forgotten (crashes, lost events) cannot grow it forever. */
                if (g_hash_table_size(t->keys) >= ETA_MAX_KEYS)
                        g_hash_table_remove_all(t->keys);
                s = g_new0(struct series, 1);
                g_hash_table_insert(t->keys, g_strdup(key), s);
        }
        if (s->n > 0 && now_us < at(s, s->n - 1)->t)
                return;
        if (s->n >= 2 && now_us - at(s, s->n - 2)->t < MIN_GAP_US) {
                *at(s, s->n - 1) = (struct sample) { now_us, CLAMP(progress, 0.0, 100.0) };
                return;
        }
        if (s->n == MAX_SAMPLES) {
                s->first = (s->first + 1) % MAX_SAMPLES;
                s->n--;
        }
        *at(s, s->n) = (struct sample) { now_us, CLAMP(progress, 0.0, 100.0) };
        s->n++;
        trim(s, now_us);
}

void engine_eta_forget(struct engine_eta *t, const char *key)
{
        g_hash_table_remove(t->keys, key);
}

gint64 engine_eta_seconds(struct engine_eta *t, const char *key, gint64 now_us)
{
        struct series *s = g_hash_table_lookup(t->keys, key);
        const struct sample *a, *b;
        double rate, left;

        if (!s)
                return -1;
        trim(s, now_us);
        if (s->n < 2)
                return -1;
        a = at(s, 0);
        b = at(s, s->n - 1);
        if (b->t - a->t < ETA_MIN_SPAN_S * G_USEC_PER_SEC || b->p <= a->p)
                return -1;
        rate = (b->p - a->p) / ((double) (b->t - a->t) / G_USEC_PER_SEC);     /* % per second */
        left = (100.0 - b->p) / rate - (double) (now_us - b->t) / G_USEC_PER_SEC;
        return left > 0 ? (gint64) ceil(left) : 0;
}

struct engine_eta *engine_eta(void)
{
        static struct engine_eta *table;

        if (!table)
                table = engine_eta_new();
        return table;
}
