/* SPDX-License-Identifier: GPL-2.0-or-later */
/* REST resources of the users (admin only): list, add, change password or role, remove. */
#include <errno.h>
#include <string.h>

#include "api_users.h"
#include "auth.h"
#include "clock.h"
#include "events.h"

static json_t *user_json(struct engine *e, json_t *row)
{
        return json_pack("{s:s, s:s, s:I}", "name", engine_js(row, "name"), "role", engine_js(row, "role"),
                         "created", (json_int_t) engine_ji(row, "created"));
}

static void user_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) rows = engine_store_user_list(e->db, &error);

        engine_rest_reply_rows(e, msg, "users", rows, error, user_json);
}

/* Other admins than name: removing or demoting the last one would lock everyone out. */
static bool other_admin(struct engine *e, const char *name)
{
        g_autoptr(json_t) rows = engine_store_user_list(e->db, NULL);
        size_t i;
        json_t *row;

        json_array_foreach(rows, i, row)
                if (strcmp(engine_js(row, "role"), "admin") == 0 && strcmp(engine_js(row, "name"), name) != 0)
                        return true;
        return false;
}

/* role and password members of body, each optional unless required; false after answering 400. */
static bool user_fields(SoupServerMessage *msg, json_t *body, bool required, const char **ret_role,
                        const char **ret_password)
{
        g_autoptr(GError) error = NULL;
        json_t *role = json_object_get(body, "role");
        json_t *password = json_object_get(body, "password");
        enum engine_role r;

        *ret_role = json_string_value(role);
        *ret_password = json_string_value(password);
        if ((role || required) && engine_role_from_name(*ret_role, &r) < 0) {
                engine_rest_reply_fault(msg, 400, "role must be admin, operator or viewer");
                return false;
        }
        if ((password || required) && engine_auth_password_valid(*ret_password, &error) < 0) {
                engine_rest_reply_error(msg, error);
                return false;
        }
        return true;
}

/* A user change waiting for its password's hash (auth.c's pool), off the main loop. */
struct user_change {
        char *name;
        char *role;                    /* NULL: unchanged */
        char *actor;                   /* who asked: the events name them */
        bool password;                 /* a new password comes as the hash */
};

static struct user_change *change_new(struct engine *e, const char *name, const char *role, bool password)
{
        struct user_change *u = g_new0(struct user_change, 1);

        u->name = g_strdup(name);
        u->role = g_strdup(role);
        u->actor = g_strdup(e->acting_user);
        u->password = password;
        return u;
}

static void change_free(struct user_change *u)
{
        g_free(u->name);
        g_free(u->role);
        g_free(u->actor);
        g_free(u);
}
typedef struct user_change user_change;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(user_change, change_free)

static void on_add_hashed(struct engine *e, SoupServerMessage *msg, const char *hash, void *data)
{
        g_autoptr(user_change) u = data;
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        int r;

        if (!msg)
                return;
        if (!hash) {
                engine_rest_reply_fault(msg, 500, "cannot hash the password");
                return;
        }
        r = engine_store_user_insert(e->db, u->name, hash, u->role, engine_now(), &error);
        if (r == -EEXIST) {
                engine_rest_reply_fault(msg, 409, "a user of that name exists");
                return;
        }
        if (r < 0) {
                engine_rest_reply_error(msg, error);
                return;
        }
        e->acting_user = u->actor;
        engine_event(e, "normal", NULL, "user %s added with the role %s", u->name, u->role);
        e->acting_user = NULL;
        row = engine_store_user_get(e->db, u->name, &error);
        engine_rest_reply_row(e, msg, "user", u->name, row, error, user_json);
}

static void user_add(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        const char *name, *role, *password;

        if (!body)
                return;
        name = json_string_value(json_object_get(body, "name"));
        if (!engine_user_name_valid(name)) {
                engine_rest_reply_fault(msg, 400, "name: 1 to 64 letters, digits, '.', '_', '-' or '@', "
                                                  "starting with a letter or digit");
                return;
        }
        if (!user_fields(msg, body, true, &role, &password))
                return;
        engine_auth_hash_async(e, msg, password, on_add_hashed, change_new(e, name, role, true));
}

/* Applies a change (hash: the new password's, or NULL) after checking it again: the user may have gone meanwhile. */
static void update_apply(struct engine *e, SoupServerMessage *msg, struct user_change *u, const char *hash)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = engine_store_user_get(e->db, u->name, &error);
        int r;

        if (!row) {
                engine_rest_reply_row(e, msg, "user", u->name, NULL, error, user_json);
                return;
        }
        if (u->role && strcmp(u->role, "admin") != 0 && !other_admin(e, u->name)) {
                engine_rest_reply_fault(msg, 409, "this is the last admin; make another user admin first");
                return;
        }
        /* Nothing to change: the user's tokens stay. */
        r = hash || u->role ? engine_store_user_update(e->db, u->name, hash, u->role, &error) : 0;
        if (r < 0) {
                if (error)
                        engine_rest_reply_error(msg, error);
                else
                        engine_rest_reply_fault(msg, 404, "no such user");
                return;
        }
        e->acting_user = u->actor;
        if (hash)
                engine_event(e, "normal", NULL, "password of user %s changed, and their tokens revoked", u->name);
        if (u->role)
                engine_event(e, "normal", NULL, "user %s now has the role %s, and their tokens revoked", u->name,
                             u->role);
        e->acting_user = NULL;
        g_clear_pointer(&row, json_decref);
        row = engine_store_user_get(e->db, u->name, &error);
        engine_rest_reply_row(e, msg, "user", u->name, row, error, user_json);
}

static void on_update_hashed(struct engine *e, SoupServerMessage *msg, const char *hash, void *data)
{
        g_autoptr(user_change) u = data;

        if (!msg)
                return;
        if (!hash)
                engine_rest_reply_fault(msg, 500, "cannot hash the password");
        else
                update_apply(e, msg, u, hash);
}

static void user_update(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = NULL;
        g_autoptr(json_t) row = NULL;
        g_autoptr(user_change) u = NULL;
        const char *role, *password;

        if (!engine_user_name_valid(args[0])) {
                engine_rest_reply_fault(msg, 404, "no such user");
                return;
        }
        if (!(body = engine_rest_body(e, msg)) || !user_fields(msg, body, false, &role, &password))
                return;
        row = engine_store_user_get(e->db, args[0], &error);
        if (!row) {
                engine_rest_reply_row(e, msg, "user", args[0], NULL, error, user_json);
                return;
        }
        u = change_new(e, args[0], role, password != NULL);
        if (password)
                engine_auth_hash_async(e, msg, password, on_update_hashed, g_steal_pointer(&u));
        else
                update_apply(e, msg, u, NULL);
}

static void user_remove(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = engine_user_name_valid(args[0]) ? engine_store_user_get(e->db, args[0], &error) : NULL;

        if (!row) {
                engine_rest_reply_row(e, msg, "user", args[0], NULL, error, user_json);
                return;
        }
        if (strcmp(engine_js(row, "role"), "admin") == 0 && !other_admin(e, args[0])) {
                engine_rest_reply_fault(msg, 409, "this is the last admin; make another user admin first");
                return;
        }
        if (engine_store_user_delete(e->db, args[0], &error) < 0) {
                engine_rest_reply_error(msg, error);
                return;
        }
        engine_event(e, "normal", NULL, "user %s removed, and their tokens revoked", args[0]);
        soup_server_message_set_status(msg, 204, NULL);
}

static const struct engine_route routes[] = {
        { "GET", "/api/users", user_list, ENGINE_ROLE_ADMIN },
        { "POST", "/api/users", user_add, ENGINE_ROLE_ADMIN },
        { "PUT", "/api/users/{name}", user_update, ENGINE_ROLE_ADMIN },
        { "DELETE", "/api/users/{name}", user_remove, ENGINE_ROLE_ADMIN },
};

const struct engine_route *engine_api_users_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
