/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Leadership of several engines on one PostgreSQL database (the policy is
 * src/engine/leader.c). These statements run on a session of their own, the
 * "lock session": the session-level advisory lock below is held by it for
 * as long as the engine leads, and is gone the moment that session ends
 * (the engine died, or the server restarted). The leader row names the
 * current epoch, who holds it, where its REST API is, which session holds
 * the lock and when it last showed life.
 *
 * PostgreSQL only: on SQLite there is one engine and none of this runs.
 */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "internal.h"

/* The advisory lock's key ("fryL"), and the one that orders engines creating the leader row ("fryP"): a
 * transaction's lock would wait for the leader's session lock of the same key. Migrations use a third. */
#define LEADER_LOCK "1718774092"
#define LEADER_PREPARE_LOCK "1718774096"

bool engine_store_shared(struct engine_store *st)
{
        return strcmp(st->be->name, "postgresql") == 0;
}

/* The lock session never waits long: a renewal stuck behind a lock or a slow server would let the lease
 * expire unnoticed; failing fast makes the engine pause its coordinator and retake. The backend sets them
 * again on every new connection; a retake sets them once more, which also notices a lost session. */
static int session_limits(struct engine_store *lock, GError **error)
{
        return engine_store_set_limits(lock, 2000, 4000, error);
}

int engine_store_leader_prepare(struct engine_store *lock, GError **error)
{
        /* Outside the numbered migrations: the row only exists where several engines can. The transaction
         * lock orders engines that start together (CREATE ... IF NOT EXISTS races otherwise). */
        if (session_limits(lock, error) < 0 || engine_store_begin(lock, error) < 0)
                return -EIO;
        if (store_exec(lock, error, "SELECT pg_advisory_xact_lock(" LEADER_PREPARE_LOCK ")", "") < 0 ||
            store_exec(lock, error,
                       "CREATE TABLE IF NOT EXISTS engine_leader ("
                       "  id BIGINT PRIMARY KEY, epoch BIGINT NOT NULL, holder TEXT, url TEXT,"
                       "  lock_pid BIGINT, heartbeat TIMESTAMPTZ)", "") < 0 ||
            /* The epoch a key (a unique index): a takeover's epoch bump then conflicts with the FOR KEY SHARE
             * of the leader's open transactions (store.c fence_check) while the heartbeat update does not. */
            store_exec(lock, error, "CREATE UNIQUE INDEX IF NOT EXISTS engine_leader_epoch ON engine_leader (epoch)",
                       "") < 0 ||
            store_exec(lock, error, "INSERT INTO engine_leader (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
                       "") < 0) {
                engine_store_rollback(lock);
                return -EIO;
        }
        return engine_store_commit(lock, error);
}

/* Ends every session of an engine that holds the lock but stopped renewing it (SIGSTOP, a hung machine). */
static int end_stale_leader(struct engine_store *lock, gint64 lease_s, GError **error)
{
        g_autoptr(json_t) row = store_query_one(lock, error,
                                                "SELECT holder, CAST(EXTRACT(EPOCH FROM clock_timestamp() - heartbeat) AS DOUBLE PRECISION) AS age"
                                                " FROM engine_leader WHERE id = 1", "");
        g_autoptr(json_t) ended = NULL;
        const char *holder;

        if (!row)
                return error && *error ? -EIO : 0;
        holder = json_string_value(json_object_get(row, "holder"));
        if (!holder || json_number_value(json_object_get(row, "age")) <= (double) lease_s)
                return 0;
        ended = store_query(lock, error,
                            "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity"
                            " WHERE application_name = ? AND pid <> pg_backend_pid()", "s", holder);
        if (!ended)
                return -EIO;
        g_warning("leadership: the leader %s has not renewed its lease for %.1f s; ended its %zu database session(s)",
                  holder, json_number_value(json_object_get(row, "age")), json_array_size(ended));
        return 0;
}

/* The lock is ours: a new epoch, in one transaction with the row (only from epoch `from` when it is not 0).
 * Its UPDATE waits for the writes of the old epoch in flight (they hold the row FOR KEY SHARE), bounded in case
 * one belongs to a stopped process whose sessions a standby then ends. */
static int take(struct engine_store *lock, const char *engine_id, const char *url, gint64 from, gint64 *ret_epoch,
                GError **error)
{
        g_autoptr(json_t) row = NULL;
        int r = -EIO;

        if (engine_store_begin(lock, error) < 0)
                goto unlock;
        if (store_exec(lock, error, "SET LOCAL lock_timeout = 2000", "") < 0 ||
            store_exec(lock, error,
                       "UPDATE engine_leader SET epoch = epoch + 1, holder = ?, url = ?, lock_pid = pg_backend_pid(),"
                       " heartbeat = clock_timestamp() WHERE id = 1 AND (? = 0 OR epoch = ?)", "ssii", engine_id, url,
                       from, from) < 0 ||
            !(row = store_query_one(lock, error, "SELECT epoch FROM engine_leader WHERE id = 1", ""))) {
                engine_store_rollback(lock);
                goto unlock;
        }
        if (json_integer_value(json_object_get(row, "epoch")) != from + 1 && from != 0) {
                engine_store_rollback(lock);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "another engine led since epoch %" G_GINT64_FORMAT, from);
                r = -ESTALE;
                goto unlock;
        }
        if (engine_store_commit(lock, error) < 0)
                goto unlock;
        *ret_epoch = json_integer_value(json_object_get(row, "epoch"));
        return 1;
unlock:
        {
                g_autoptr(json_t) released = store_query_one(lock, NULL, "SELECT pg_advisory_unlock(" LEADER_LOCK ")", "");

                (void) released;
        }
        return r;
}

int engine_store_leader_try(struct engine_store *lock, const char *engine_id, const char *url, gint64 lease_s,
                            gint64 *ret_epoch, GError **error)
{
        g_autoptr(json_t) got = store_query_one(lock, error, "SELECT pg_try_advisory_lock(" LEADER_LOCK ") AS got", "");
        int r;

        if (!got)
                return -EIO;
        if (!json_is_true(json_object_get(got, "got")))
                return end_stale_leader(lock, lease_s, error);
        r = take(lock, engine_id, url, 0, ret_epoch, error);
        /*
         * The lock was free but the epoch update timed out: a session of an
         * old leader whose lock session is gone holds the row FOR KEY SHARE
         * (a transaction stuck on a lock, its give-up's epoch bump failed).
         * Stale, it is ended as a lock holder would be; the next try wins.
         */
        if (r == -EIO)
                (void) end_stale_leader(lock, lease_s, NULL);
        return r;
}

int engine_store_leader_retake(struct engine_store *lock, const char *engine_id, const char *url, gint64 epoch,
                               gint64 *ret_epoch, GError **error)
{
        g_autoptr(json_t) got = NULL;

        if (session_limits(lock, error) < 0)
                return -EIO;
        got = store_query_one(lock, error, "SELECT pg_try_advisory_lock(" LEADER_LOCK ") AS got", "");
        if (!got)
                return -EIO;
        if (!json_is_true(json_object_get(got, "got")))
                return 0;
        return take(lock, engine_id, url, epoch, ret_epoch, error);
}

int engine_store_leader_renew(struct engine_store *lock, gint64 epoch, GError **error)
{
        /* The lock_pid test: a session the backend reconnected behind our back no longer holds the lock. */
        if (store_exec(lock, error,
                       "UPDATE engine_leader SET heartbeat = clock_timestamp() WHERE id = 1 AND epoch = ?"
                       " AND lock_pid = pg_backend_pid()", "i", epoch) < 0)
                return -EIO;
        if (store_changes(lock) != 1) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "leadership lost: another engine took over, or this engine's lock session ended");
                return -ESTALE;
        }
        return 0;
}

int engine_store_leader_release(struct engine_store *lock, const char *engine_id, gint64 epoch, GError **error)
{
        g_autoptr(GError) fence_error = NULL;
        int r = 0;

        /* Its other sessions first: a transaction of the stuck main loop holds the leader row FOR KEY SHARE
         * (store.c fence_check), which the epoch bump below (and a takeover's) would wait for. */
        if (store_exec(lock, error, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                    " WHERE application_name = ? AND pid <> pg_backend_pid()", "s", engine_id) < 0)
                return -EIO;
        /*
         * The term ends here, not at the standby's takeover: the stuck main
         * loop carries on once its call returns, and its writes reconnect;
         * with the epoch bumped they fail fence_check and depose it. Bounded:
         * an ended backend that is slow to go keeps the row; the standby's
         * takeover bumps the epoch then.
         */
        if (engine_store_begin(lock, &fence_error) < 0 ||
            store_exec(lock, &fence_error, "SET LOCAL lock_timeout = 2000", "") < 0 ||
            store_exec(lock, &fence_error,
                       "UPDATE engine_leader SET epoch = epoch + 1, holder = NULL, url = NULL, lock_pid = NULL"
                       " WHERE id = 1 AND epoch = ?", "i", epoch) < 0 ||
            engine_store_commit(lock, &fence_error) < 0) {
                engine_store_rollback(lock);
                g_warning("leadership: epoch %" G_GINT64_FORMAT " not ended in the leader row (%s): its late writes"
                          " pass until a standby takes over", epoch, fence_error ? fence_error->message : "unknown");
        } else {
                r = 1;
        }
        if (store_exec(lock, error, "SELECT pg_advisory_unlock_all()", "") < 0)
                return -EIO;
        return r;
}

json_t *engine_store_leader_get(struct engine_store *st, GError **error)
{
        return store_query_one(st, error,
                               "SELECT epoch, holder, url,"
                               " CAST(EXTRACT(EPOCH FROM clock_timestamp() - heartbeat) AS DOUBLE PRECISION) AS age"
                               " FROM engine_leader WHERE id = 1", "");
}
