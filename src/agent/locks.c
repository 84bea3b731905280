/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "locks.h"

struct lock_state {
        unsigned shared;               /* holders in shared mode */
        bool exclusive;                /* one exclusive holder */
};

struct agent_locks {
        GMutex mutex;
        GCond cond;
        GHashTable *held;              /* name → struct lock_state */
};

struct agent_locks *agent_locks_new(void)
{
        struct agent_locks *l = g_new0(struct agent_locks, 1);

        g_mutex_init(&l->mutex);
        g_cond_init(&l->cond);
        l->held = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return l;
}

void agent_locks_free(struct agent_locks *l)
{
        if (!l)
                return;
        g_hash_table_unref(l->held);
        g_cond_clear(&l->cond);
        g_mutex_clear(&l->mutex);
        g_free(l);
}

static int req_cmp(const void *a, const void *b)
{
        return strcmp(((const struct agent_lock_req *) a)->name, ((const struct agent_lock_req *) b)->name);
}

static bool lock_free_for(struct agent_locks *l, const struct agent_lock_req *r)
{
        struct lock_state *s = g_hash_table_lookup(l->held, r->name);

        if (!s)
                return true;
        if (r->exclusive)
                return !s->exclusive && s->shared == 0;
        return !s->exclusive;
}

static void lock_take(struct agent_locks *l, const struct agent_lock_req *r)
{
        struct lock_state *s = g_hash_table_lookup(l->held, r->name);

        if (!s) {
                s = g_new0(struct lock_state, 1);
                g_hash_table_insert(l->held, g_strdup(r->name), s);
        }
        if (r->exclusive)
                s->exclusive = true;
        else
                s->shared++;
}

static void lock_drop(struct agent_locks *l, const struct agent_lock_req *r)
{
        struct lock_state *s = g_hash_table_lookup(l->held, r->name);

        g_return_if_fail(s);
        if (r->exclusive)
                s->exclusive = false;
        else
                s->shared--;
        if (!s->exclusive && s->shared == 0)
                g_hash_table_remove(l->held, r->name);
}

static void wake(GCancellable *cancel, gpointer data)
{
        struct agent_locks *l = data;

        g_mutex_lock(&l->mutex);
        g_cond_broadcast(&l->cond);
        g_mutex_unlock(&l->mutex);
}

int agent_locks_acquire(struct agent_locks *l, struct agent_lock_req *reqs, size_t n, GCancellable *cancel)
{
        gulong handler = 0;
        size_t taken = 0;
        int r = 0;

        qsort(reqs, n, sizeof(*reqs), req_cmp);
        if (cancel)
                handler = g_cancellable_connect(cancel, G_CALLBACK(wake), l, NULL);

        g_mutex_lock(&l->mutex);
        while (taken < n) {
                if (g_cancellable_is_cancelled(cancel)) {
                        r = -ECANCELED;
                        break;
                }
                if (lock_free_for(l, &reqs[taken])) {
                        lock_take(l, &reqs[taken]);
                        taken++;
                        continue;
                }
                /* Bounded wait so a missed wake-up can never hang a job. */
                g_cond_wait_until(&l->cond, &l->mutex, g_get_monotonic_time() + G_TIME_SPAN_SECOND);
        }
        if (r < 0) {
                while (taken > 0)
                        lock_drop(l, &reqs[--taken]);
                g_cond_broadcast(&l->cond);
        }
        g_mutex_unlock(&l->mutex);

        if (handler)
                g_cancellable_disconnect(cancel, handler);
        return r;
}

void agent_locks_release(struct agent_locks *l, const struct agent_lock_req *reqs, size_t n)
{
        g_mutex_lock(&l->mutex);
        for (size_t i = n; i > 0; i--)
                lock_drop(l, &reqs[i - 1]);
        g_cond_broadcast(&l->cond);
        g_mutex_unlock(&l->mutex);
}
