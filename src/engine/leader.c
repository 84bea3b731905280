/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Which of several engines is active: the policy over store/leader.c's statements. */
#include <errno.h>

#include "engine.h"
#include "leader.h"

/* A standby tries, the leader renews, this often. */
#define LEADER_ROUND_MS 1000
/* A leader that has not renewed for this long (stopped, hung, cut off) loses its sessions to a standby.
 * Death needs no lease: its lock session ends with it and the lock is free at once. */
#define LEADER_LEASE_S 5
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
};

static void step_down(struct engine *e, const char *why)
{
        struct engine_leader *l = e->leader;

        if (l->deposed)
                return;
        l->deposed = true;
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

        r = engine_store_leader_try(l->lock, l->client, l->url, LEADER_LEASE_S, &epoch, &error);
        if (r < 0) {
                g_message("leadership: cannot try for it now: %s", error->message);
                return 0;
        }
        if (r == 0) {
                row = engine_store_leader_get(l->lock, NULL);
                g_free(l->leader_url);
                l->leader_url = g_strdup(row ? engine_js(row, "url") : NULL);
                return 0;
        }
        l->epoch = epoch;
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
        int r = engine_store_leader_retake(l->lock, l->client, l->url, l->epoch, &epoch, &error);

        if (r == 1) {
                g_message("leadership: lock taken back, epoch %" G_GINT64_FORMAT " (was %" G_GINT64_FORMAT
                          "); resuming the coordinator", epoch, l->epoch);
                l->epoch = epoch;
                l->lost_at = 0;
                engine_store_set_fence(e->db, epoch, on_fenced, e);
                l->hooks.resumed(e);
        } else if (r == -ESTALE) {
                step_down(e, error->message);
        } else if (r == 0 && (row = engine_store_leader_get(l->lock, NULL)) && engine_ji(row, "epoch") != l->epoch) {
                step_down(e, "another engine took over");
        } else if (g_get_monotonic_time() - l->lost_at > LEADER_RETAKE_US) {
                step_down(e, error ? error->message : "another engine holds the lock");
        }
}

void engine_leader_round(struct engine *e)
{
        struct engine_leader *l = e->leader;
        g_autoptr(GError) error = NULL;

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
        /* Any failure counts: an error on the lock session may mean it ended, and the lock with it. */
        if (engine_store_leader_renew(l->lock, l->epoch, &error) < 0) {
                g_warning("leadership: epoch %" G_GINT64_FORMAT " not renewed (%s): coordinator paused",
                          l->epoch, error->message);
                l->lost_at = g_get_monotonic_time();
                l->hooks.paused(e);
                retake_round(e);
        }
}

static gboolean on_round(gpointer data)
{
        engine_leader_round(data);
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
        e->leader = l;
        /* No write passes until this engine leads. */
        engine_store_set_fence(e->db, 0, on_fenced, e);
        if (engine_store_open_as(e->config.db, client, &l->lock, error) < 0 ||
            engine_store_leader_prepare(l->lock, error) < 0)
                return -EIO;
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
        /* Closing the session releases the lock now, not when the server notices. */
        engine_store_close(l->lock);
        g_free(l->client);
        g_free(l->url);
        g_free(l->leader_url);
        g_free(l);
        e->leader = NULL;
}

bool engine_leader_active(struct engine *e)
{
        return e->active;
}

const char *engine_leader_url(struct engine *e)
{
        return e->leader ? e->leader->leader_url : NULL;
}

gint64 engine_leader_epoch(struct engine *e)
{
        return e->leader ? e->leader->epoch : 0;
}
