/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Users of the REST API and their tokens in the store: only hashes are kept, never a password or a token. */
#include <errno.h>

#include "internal.h"

json_t *engine_store_user_get(struct engine_store *st, const char *name, GError **error)
{
        return store_query_one(st, error, "SELECT name, hash, role, created FROM users WHERE name = ?", "s", name);
}

json_t *engine_store_user_list(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT name, role, created FROM users ORDER BY name", "");
}

int engine_store_user_insert(struct engine_store *st, const char *name, const char *hash, const char *role,
                             gint64 created, GError **error)
{
        return store_exec(st, error, "INSERT INTO users (name, hash, role, created) VALUES (?, ?, ?, ?)", "sssi",
                          name, hash, role, created);
}

/*
 * Changes the password hash and/or the role (NULL: unchanged) of an existing
 * user and ends every token of theirs, all in one transaction: a token must
 * not outlive the password or the role it was issued under, and a change of
 * both is never half done. -ENOENT when there is no such user.
 */
int engine_store_user_update(struct engine_store *st, const char *name, const char *hash, const char *role,
                             GError **error)
{
        int r = -ENOENT;

        if (engine_store_begin(st, error) < 0)
                return -EIO;
        if (hash) {
                if (store_exec(st, error, "UPDATE users SET hash = ? WHERE name = ?", "ss", hash, name) < 0)
                        goto fail;
                r = store_changes(st) > 0 ? 0 : -ENOENT;
        }
        if (role) {
                if (store_exec(st, error, "UPDATE users SET role = ? WHERE name = ?", "ss", role, name) < 0)
                        goto fail;
                r = store_changes(st) > 0 ? 0 : -ENOENT;
        }
        if (store_exec(st, error, "DELETE FROM tokens WHERE user_name = ?", "s", name) < 0)
                goto fail;
        if (engine_store_commit(st, error) < 0)
                return -EIO;
        return r;
fail:
        engine_store_rollback(st);
        return -EIO;
}

int engine_store_user_delete(struct engine_store *st, const char *name, GError **error)
{
        int r;

        if (engine_store_begin(st, error) < 0)
                return -EIO;
        if (store_exec(st, error, "DELETE FROM tokens WHERE user_name = ?", "s", name) < 0 ||
            store_exec(st, error, "DELETE FROM users WHERE name = ?", "s", name) < 0) {
                engine_store_rollback(st);
                return -EIO;
        }
        r = store_changes(st) > 0 ? 0 : -ENOENT;
        if (engine_store_commit(st, error) < 0)
                return -EIO;
        return r;
}

gint64 engine_store_user_count(struct engine_store *st, GError **error)
{
        g_autoptr(json_t) row = store_query_one(st, error, "SELECT COUNT(*) AS n FROM users", "");

        return row ? json_integer_value(json_object_get(row, "n")) : -EIO;
}

int engine_store_token_insert(struct engine_store *st, const char *hash, const char *user, gint64 now,
                              unsigned *ret_ended, GError **error)
{
        unsigned ended;

        *ret_ended = 0;
        if (engine_store_begin(st, error) < 0)
                return -EIO;
        /* At most ENGINE_STORE_TOKENS_PER_USER each: a script logging in without end ends its oldest tokens. */
        if (store_exec(st, error, "INSERT INTO tokens (hash, user_name, created, last_used) VALUES (?, ?, ?, ?)",
                       "ssii", hash, user, now, now) < 0 ||
            store_exec(st, error, "DELETE FROM tokens WHERE user_name = ? AND hash NOT IN (SELECT hash FROM tokens "
                       "WHERE user_name = ? ORDER BY created DESC, rowid DESC LIMIT ?)", "ssi", user, user,
                       (gint64) ENGINE_STORE_TOKENS_PER_USER) < 0) {
                engine_store_rollback(st);
                return -EIO;
        }
        ended = store_changes(st);      /* the DELETE's, read before the commit */
        if (engine_store_commit(st, error) < 0)
                return -EIO;
        *ret_ended = ended;
        return 0;
}

json_t *engine_store_token_get(struct engine_store *st, const char *hash, GError **error)
{
        return store_query_one(st, error,
                               "SELECT t.user_name AS user_name, t.created AS created, t.last_used AS last_used, "
                               "u.role AS role FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.hash = ?",
                               "s", hash);
}

int engine_store_token_touch(struct engine_store *st, const char *hash, gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE tokens SET last_used = ? WHERE hash = ?", "is", now, hash);
}

int engine_store_token_delete(struct engine_store *st, const char *hash, GError **error)
{
        if (store_exec(st, error, "DELETE FROM tokens WHERE hash = ?", "s", hash) < 0)
                return -EIO;
        return store_changes(st) > 0 ? 0 : -ENOENT;
}

int engine_store_tokens_expire(struct engine_store *st, gint64 idle_before, gint64 created_before, GError **error)
{
        return store_exec(st, error, "DELETE FROM tokens WHERE last_used < ? OR created < ?", "ii", idle_before,
                          created_before);
}
