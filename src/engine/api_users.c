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

static void user_add(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = engine_rest_body(e, msg);
        g_autoptr(json_t) row = NULL;
        g_autofree char *hash = NULL;
        const char *name, *role, *password;
        int r;

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
        hash = engine_auth_hash(password, &error);
        if (!hash || (r = engine_store_user_insert(e->db, name, hash, role, engine_now(), &error)) < 0) {
                if (hash && r == -EEXIST)
                        engine_rest_reply_fault(msg, 409, "a user of that name exists");
                else
                        engine_rest_reply_error(msg, error);
                return;
        }
        engine_event(e, "normal", NULL, "user %s added with the role %s", name, role);
        row = engine_store_user_get(e->db, name, &error);
        engine_rest_reply_row(e, msg, "user", name, row, error, user_json);
}

static void user_update(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = NULL;
        g_autoptr(json_t) row = NULL;
        g_autofree char *hash = NULL;
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
        if (role && strcmp(role, "admin") != 0 && !other_admin(e, args[0])) {
                engine_rest_reply_fault(msg, 409, "this is the last admin; make another user admin first");
                return;
        }
        if (password && (!(hash = engine_auth_hash(password, &error)) ||
                         engine_store_user_set_hash(e->db, args[0], hash, &error) < 0)) {
                engine_rest_reply_error(msg, error);
                return;
        }
        if (role && engine_store_user_set_role(e->db, args[0], role, &error) < 0) {
                engine_rest_reply_error(msg, error);
                return;
        }
        if (password)
                engine_event(e, "normal", NULL, "password of user %s changed", args[0]);
        if (role)
                engine_event(e, "normal", NULL, "user %s now has the role %s", args[0], role);
        g_clear_pointer(&row, json_decref);
        row = engine_store_user_get(e->db, args[0], &error);
        engine_rest_reply_row(e, msg, "user", args[0], row, error, user_json);
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
