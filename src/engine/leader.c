/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Which of several engines is active: the policy over store/leader.c's statements. */
#include <errno.h>

#include "engine.h"
#include "leader.h"

/* A standby tries, the leader renews, this often. */
#define LEADER_ROUND_MS 1000
/* ENGINE_LEADER_LEASE_S (leader.h). Death needs no lease: its lock session ends with it and the lock is free
 * at once. */
#define LEADER_LEASE_S ENGINE_LEADER_LEASE_S
/* A leader whose lock session ended tries to take the lock back this long before it steps down. */
#define LEADER_RETAKE_US (30 * G_USEC_PER_SEC)

struct engine_leader {
        struct engine_store *lock;     /* the lock session: a connection of its own */
        char *client;
        char *url;
        char *leader_url;              /* the active engine's, as last read */
        gint64 epoch;                  /* > 0: we lead */
        gint64 lost_at;                /* monotonic µs the lock session was lost (the coordinator paused); 0: not */
        bool deposed;
        guint source;
        struct engine_leader_hooks hooks;
        /*
         * The renewal thread: the lease is renewed off the main loop, so a
         * main loop busy for longer than the lease (a big unpaged list, a
         * statement waiting on a row lock) does not let a standby end this
         * engine's sessions. It alone uses the lock session while it renews;
         * `mutex` serialises that session with the main loop's rounds.
         */
        struct engine *e;
        GThread *renewer;
        GMutex mutex;
        GCond wake;
        bool stop;                     /* under mutex */
        gint64 renew_epoch;            /* atomic: the epoch the thread renews; 0: none (standby, lost) */
        gint64 renewed_at;             /* atomic: monotonic µs of the last successful renewal */
        gint renew_failed;             /* atomic: the thread's last renewal failed (the main loop reacts) */
        char *renew_error;             /* under mutex: why */
        /*
         * The main loop's heartbeat: renewing alone would keep the lead for
         * a main loop that is stuck (a statement waiting on a lock), and no
         * standby would take over. The main loop stamps loop_at each round;
         * past stall_us without a stamp the thread gives the lead up.
         */
        gint64 loop_at;                /* atomic: monotonic µs of the main loop's last leader round */
        gint64 stall_us;               /* leader_stall_timeout; 0: never (unit tests) */
        gint stalled;                  /* atomic: the thread gave the lead up (the main loop steps down) */
};

/* A failed renewal is acted on at once, not at the next round: a standby may be taking over. */
static gboolean on_renew_failed(gpointer data)
{
        struct engine_leader *l = data;

        engine_leader_round(l->e);
        return G_SOURCE_REMOVE;
}

static void step_down(struct engine *e, const char *why);

/* The main loop runs again after the thread gave the lead up for it. */
static gboolean on_stalled(gpointer data)
{
        struct engine_leader *l = data;

        step_down(l->e, "the main loop stalled longer than leader_stall_timeout; the lead was given up");
        return G_SOURCE_REMOVE;
}

/*
 * The main loop has not run a round for longer than leader_stall_timeout:
 * no more renewals; the engine's other sessions end (a statement stuck on a
 * lock, and the leader row its transaction holds, go with them), the term
 * ends in the leader row (epoch + 1) and the lock is released, so a standby
 * takes over at its next try. Whatever the main loop still writes once its
 * call returns fails on the epoch and deposes it; it steps down then anyway.
 */
static void give_up_stalled(struct engine_leader *l, gint64 epoch, gint64 stalled_us)
{
        g_autoptr(GError) error = NULL;

        __atomic_store_n(&l->renew_epoch, 0, __ATOMIC_SEQ_CST);
        g_atomic_int_set(&l->stalled, 1);
        g_warning("leadership: the main loop has not run for %.1f s (leader_stall_timeout %" G_GINT64_FORMAT
                  " s): giving up epoch %" G_GINT64_FORMAT " to a standby", (double) stalled_us / G_USEC_PER_SEC,
                  l->stall_us / G_USEC_PER_SEC, epoch);
        if (engine_store_leader_release(l->lock, l->client, epoch, &error) < 0)
                g_warning("leadership: cannot release the lock now (%s); no more renewals: once the heartbeat is"
                          " older than the lease a standby ends this engine's sessions, the lock's too, and takes over",
                          error->message);
        g_idle_add_full(G_PRIORITY_HIGH, on_stalled, l, NULL);
}

/* The thread renews, and stops renewing, only as the main loop says (renew_epoch); the main loop reads
 * what came of it (renewed_at, renew_failed) at its next round. */
static gpointer renew_thread(gpointer data)
{
        struct engine_leader *l = data;

        g_mutex_lock(&l->mutex);
        while (!l->stop) {
                gint64 epoch;

                g_cond_wait_until(&l->wake, &l->mutex, g_get_monotonic_time() + LEADER_ROUND_MS * 1000);
                epoch = g_atomic_int_get(&l->renew_failed) ? 0 : __atomic_load_n(&l->renew_epoch, __ATOMIC_SEQ_CST);
                if (!l->stop && epoch > 0) {
                        g_autoptr(GError) error = NULL;
                        gint64 stalled_us = g_get_monotonic_time() - __atomic_load_n(&l->loop_at, __ATOMIC_SEQ_CST);

                        if (l->stall_us > 0 && stalled_us > l->stall_us)
                                give_up_stalled(l, epoch, stalled_us);
                        else if (engine_store_leader_renew(l->lock, epoch, &error) == 0) {
                                __atomic_store_n(&l->renewed_at, g_get_monotonic_time(), __ATOMIC_SEQ_CST);
                        } else {
                                g_free(l->renew_error);
                                l->renew_error = g_strdup(error->message);
                                g_atomic_int_set(&l->renew_failed, 1);
                                g_idle_add(on_renew_failed, l);
                        }
                }
        }
        g_mutex_unlock(&l->mutex);
        return NULL;
}

/* The thread renews `epoch` from now on (0: stops renewing); the lease was just taken or renewed. */
static void renew_as(struct engine_leader *l, gint64 epoch)
{
        if (epoch > 0) {
                __atomic_store_n(&l->renewed_at, g_get_monotonic_time(), __ATOMIC_SEQ_CST);
                __atomic_store_n(&l->loop_at, g_get_monotonic_time(), __ATOMIC_SEQ_CST);
        }
        g_atomic_int_set(&l->renew_failed, 0);
        __atomic_store_n(&l->renew_epoch, epoch, __ATOMIC_SEQ_CST);
}

static void step_down(struct engine *e, const char *why)
{
        struct engine_leader *l = e->leader;

        if (l->deposed)
                return;
        l->deposed = true;
        renew_as(l, 0);
        /* Not ourselves any more, and the next leader is not known yet: a standby's write gets a 503 with
         * Retry-After until a round reads it, not a 307 back to this engine (a redirect loop). */
        g_clear_pointer(&l->leader_url, g_free);
        g_warning("leadership: epoch %" G_GINT64_FORMAT " lost (%s): stopping the coordinator, becoming a standby",
                  l->epoch, why);
        e->active = false;
        l->hooks.deposed(e);
}

/* The store found a newer epoch on a write: another engine leads. */
static void on_fenced(void *data)
{
        step_down(data, "a write found a newer epoch");
}

/* Returns the hook's failure when elected (only the first round's matters: a start fails as on SQLite). */
static int standby_round(struct engine *e, GError **ret_error)
{
        struct engine_leader *l = e->leader;
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        gint64 epoch = 0;
        int r;

        g_mutex_lock(&l->mutex);
        r = engine_store_leader_try(l->lock, l->client, l->url, LEADER_LEASE_S, &epoch, &error);
        if (r == 0)
                row = engine_store_leader_get(l->lock, NULL);
        g_mutex_unlock(&l->mutex);
        if (r < 0) {
                g_message("leadership: cannot try for it now: %s", error->message);
                return 0;
        }
        if (r == 0) {
                const char *url = row ? engine_js(row, "url") : NULL;

                g_free(l->leader_url);
                /* Our own URL in the row is a term of ours that ended (this engine executed itself again
                 * after stepping down) while the new leader has not written its own yet. */
                l->leader_url = g_strdup(g_strcmp0(url, l->url) != 0 ? url : NULL);
                return 0;
        }
        l->epoch = epoch;
        renew_as(l, epoch);
        g_free(l->leader_url);
        l->leader_url = g_strdup(l->url);
        engine_store_set_fence(e->db, epoch, on_fenced, e);
        e->active = true;
        g_message("leadership: this engine (%s) is active, epoch %" G_GINT64_FORMAT "; resuming the commands",
                  l->url, epoch);
        if (l->hooks.elected(e, &error) < 0) {
                g_critical("leadership: cannot start as the active engine: %s", error->message);
                step_down(e, "start failed");
                if (ret_error)
                        g_propagate_error(ret_error, g_steal_pointer(&error));
                return -EIO;
        }
        /* The start (recovering every command) ran on the main loop: its time is not a stall of the term. */
        __atomic_store_n(&l->loop_at, g_get_monotonic_time(), __ATOMIC_SEQ_CST);
        return 0;
}

/*
 * The lock session failed (a PostgreSQL restart ends every session): the
 * coordinator pauses at once, and the engine takes the lock back if no other
 * engine led meanwhile (the epoch is still ours: nothing changed behind our
 * back, the state in memory holds) — else, or after LEADER_RETAKE_US, it
 * steps down. Writes of the paused term stay fenced by the epoch either way.
 */
static void retake_round(struct engine *e)
{
        struct engine_leader *l = e->leader;
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        gint64 epoch = 0;
        int r;

        g_mutex_lock(&l->mutex);
        r = engine_store_leader_retake(l->lock, l->client, l->url, l->epoch, &epoch, &error);
        if (r == 0)
                row = engine_store_leader_get(l->lock, NULL);
        g_mutex_unlock(&l->mutex);
        if (r == 1) {
                g_message("leadership: lock taken back, epoch %" G_GINT64_FORMAT " (was %" G_GINT64_FORMAT
                          "); resuming the coordinator", epoch, l->epoch);
                l->epoch = epoch;
                l->lost_at = 0;
                renew_as(l, epoch);
                engine_store_set_fence(e->db, epoch, on_fenced, e);
                l->hooks.resumed(e);
        } else if (r == -ESTALE) {
                step_down(e, error->message);
        } else if (r == 0 && row && engine_ji(row, "epoch") != l->epoch) {
                step_down(e, "another engine took over");
        } else if (g_get_monotonic_time() - l->lost_at > LEADER_RETAKE_US) {
                step_down(e, error ? error->message : "another engine holds the lock");
        }
}

void engine_leader_round(struct engine *e)
{
        struct engine_leader *l = e->leader;

        if (!l || l->deposed)
                return;
        if (l->epoch == 0) {
                (void) standby_round(e, NULL);
                return;
        }
        if (l->lost_at) {
                retake_round(e);
                return;
        }
        /* Any failure of the renewal thread counts: an error on the lock session may mean it ended, and the
         * lock with it. */
        if (g_atomic_int_get(&l->renew_failed)) {
                g_autofree char *why = NULL;

                g_mutex_lock(&l->mutex);
                why = g_strdup(l->renew_error ? l->renew_error : "unknown");
                g_mutex_unlock(&l->mutex);
                renew_as(l, 0);
                g_warning("leadership: epoch %" G_GINT64_FORMAT " not renewed (%s): coordinator paused",
                          l->epoch, why);
                l->lost_at = g_get_monotonic_time();
                l->hooks.paused(e);
                retake_round(e);
        }
}

static gboolean on_round(gpointer data)
{
        struct engine *e = data;

        if (e->leader)
                __atomic_store_n(&e->leader->loop_at, g_get_monotonic_time(), __ATOMIC_SEQ_CST);
        engine_leader_round(e);
        return G_SOURCE_CONTINUE;
}

int engine_leader_init(struct engine *e, const char *client, const char *url, const struct engine_leader_hooks *hooks,
                       GError **error)
{
        struct engine_leader *l;

        if (!engine_store_shared(e->db)) {
                e->active = true;
                return hooks->elected(e, error);
        }
        l = g_new0(struct engine_leader, 1);
        l->client = g_strdup(client);
        l->url = g_strdup(url);
        l->hooks = *hooks;
        l->e = e;
        l->stall_us = (gint64) e->config.leader_stall_timeout * G_USEC_PER_SEC;
        e->leader = l;
        /* No write passes until this engine leads. */
        engine_store_set_fence(e->db, 0, on_fenced, e);
        if (engine_store_open_as(e->config.db, client, &l->lock, error) < 0 ||
            engine_store_leader_prepare(l->lock, error) < 0)
                return -EIO;
        g_mutex_init(&l->mutex);
        g_cond_init(&l->wake);
        l->renewer = g_thread_new("lease", renew_thread, l);
        if (standby_round(e, error) < 0)
                return -EIO;
        if (!e->active)
                g_message("leadership: standby; the active engine is %s", l->leader_url ? l->leader_url : "unknown yet");
        l->source = g_timeout_add(LEADER_ROUND_MS, on_round, e);
        return 0;
}

void engine_leader_free(struct engine *e)
{
        struct engine_leader *l = e->leader;

        if (!l)
                return;
        if (l->source)
                g_source_remove(l->source);
        if (l->renewer) {
                g_mutex_lock(&l->mutex);
                l->stop = true;
                g_cond_signal(&l->wake);
                g_mutex_unlock(&l->mutex);
                g_thread_join(l->renewer);
                while (g_source_remove_by_funcs_user_data(&g_idle_funcs, l))
                        ;
                g_mutex_clear(&l->mutex);
                g_cond_clear(&l->wake);
        }
        /* Closing the session releases the lock now, not when the server notices. */
        engine_store_close(l->lock);
        g_free(l->client);
        g_free(l->url);
        g_free(l->leader_url);
        g_free(l->renew_error);
        g_free(l);
        e->leader = NULL;
}

bool engine_leader_active(struct engine *e)
{
        return e->active;
}

bool engine_leader_fresh(struct engine *e)
{
        struct engine_leader *l = e->leader;
        gint64 at;

        if (!e->active)
                return false;
        if (!l)
                return true;
        at = __atomic_load_n(&l->renewed_at, __ATOMIC_SEQ_CST);
        return l->lost_at == 0 && !g_atomic_int_get(&l->renew_failed) && !g_atomic_int_get(&l->stalled) &&
               g_get_monotonic_time() - at < LEADER_LEASE_S * G_USEC_PER_SEC;
}

const char *engine_leader_url(struct engine *e)
{
        return e->leader ? e->leader->leader_url : NULL;
}

gint64 engine_leader_epoch(struct engine *e)
{
        return e->leader ? e->leader->epoch : 0;
}
