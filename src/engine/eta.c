/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <math.h>
#include <string.h>

#include "eta.h"

struct series {
        gint64 first_t;        /* first sample */
        double first_done;
        gint64 base_t;         /* last point the rate was updated at */
        double base_done;
        gint64 last_t;         /* newest sample */
        double last_done, last_total;
        gint64 grew_t;         /* when done last grew */
        double rate;           /* smoothed, units per second; < 0: none yet */
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

void engine_eta_observe(struct engine_eta *t, const char *key, gint64 now_us, double done, double total)
{
        struct series *s = g_hash_table_lookup(t->keys, key);
        double dt, inst;

        if (!isfinite(done) || !isfinite(total) || done < 0)
                return;
        if (s && done < s->last_done)
                /* Older than what we know: a poll reply or an event that crossed a newer one (both
                 * report the same job). A new job for the key (a retry) starts its own series
                 * through engine_eta_forget when it is sent, not by going back here. */
                return;
        if (!s) {
                /* Bounded: ends that were never forgotten (crashes, lost events) cannot grow it forever. */
                if (g_hash_table_size(t->keys) >= ETA_MAX_KEYS)
                        g_hash_table_remove_all(t->keys);
                s = g_new0(struct series, 1);
                *s = (struct series) { .first_t = now_us, .first_done = done, .base_t = now_us, .base_done = done, .last_t = now_us,
                                       .last_done = done, .last_total = total, .grew_t = now_us, .rate = -1 };
                g_hash_table_insert(t->keys, g_strdup(key), s);
                return;
        }
        if (now_us < s->last_t)
                return;
        if (done > s->last_done)
                s->grew_t = now_us;
        s->last_t = now_us;
        s->last_done = done;
        s->last_total = total;
        if (now_us - s->base_t < ETA_MIN_GAP_US)
                return;        /* too close for a rate of its own: counted in the next one */
        dt = (double) (now_us - s->base_t) / G_USEC_PER_SEC;
        inst = (done - s->base_done) / dt;
        if (now_us - s->first_t < (gint64) ETA_TAU_S * G_USEC_PER_SEC)
                /* Young: the plain average so far, so the first interval (a burst, a pause) does not linger. */
                s->rate = (done - s->first_done) / ((double) (now_us - s->first_t) / G_USEC_PER_SEC);
        else
                s->rate += (1.0 - exp(-dt / ETA_TAU_S)) * (inst - s->rate);
        s->base_t = now_us;
        s->base_done = done;
}

void engine_eta_forget(struct engine_eta *t, const char *key)
{
        g_hash_table_remove(t->keys, key);
}

gint64 engine_eta_seconds(struct engine_eta *t, const char *key, gint64 now_us)
{
        struct series *s = g_hash_table_lookup(t->keys, key);
        const gint64 window = (gint64) ETA_WINDOW_S * G_USEC_PER_SEC;
        double left;

        if (!s || s->rate <= 0 || s->last_total <= 0)
                return -1;
        if (s->last_t - s->first_t < (gint64) ETA_MIN_SPAN_S * G_USEC_PER_SEC)
                return -1;
        if (now_us - s->grew_t > window || now_us - s->last_t > window)
                return -1;     /* stalled, or nobody feeds it any more */
        left = MAX(s->last_total - s->last_done, 0.0) / s->rate - (double) (now_us - s->last_t) / G_USEC_PER_SEC;
        /* Nothing left of a total that a running job has not finished is a wrong total (qemu-img's
         * percent counts allocated data only, so a sparse copy reads 100 % while it walks holes):
         * unknown, never 0. */
        return left > 0 ? (gint64) ceil(left) : -1;
}

void engine_eta_step_sent(struct engine_eta *t, const char *key)
{
        /* No sample of its own: the new job's first report (its resume point) is the series' start. */
        engine_eta_forget(t, key);
}

bool engine_eta_step_job(struct engine_eta *t, const char *key, gint64 now_us, const char *phase, double progress,
                         gint64 bytes_done)
{
        static const char *const not_copying[] = { "preparing", "waiting_lock", "verifying_prefix" };
        bool had = g_hash_table_contains(t->keys, key);

        for (size_t i = 0; phase && i < G_N_ELEMENTS(not_copying); i++)
                if (strcmp(phase, not_copying[i]) == 0)
                        return false;
        if (bytes_done < 0)
                engine_eta_observe(t, key, now_us, progress, 100);
        else
                engine_eta_observe(t, key, now_us, (double) bytes_done,
                                   progress >= 1.0 ? (double) bytes_done * 100.0 / progress : -1);
        return !had && g_hash_table_contains(t->keys, key);
}

struct engine_eta *engine_eta(void)
{
        static struct engine_eta *table;

        if (!table)
                table = engine_eta_new();
        return table;
}
