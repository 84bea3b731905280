/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The engine's REST route table, walked row by row: every row names a
 * method, an /api/ pattern and a role; no two rows answer the same request;
 * what only reads is open to viewers and what changes something is not;
 * and the dispatcher finds the row a request means, with its arguments.
 * The security work enforces roles from this same table.
 */
#include <string.h>

#include "rest.h"

static const char *const methods[] = { "GET", "POST", "PUT", "DELETE", NULL };

static void test_rows_are_complete(void)
{
        const struct engine_route *r;
        size_t i;

        for (i = 0; (r = engine_rest_route_at(i)); i++) {
                g_test_message("%-6s %-45s %s", r->method, r->pattern, engine_role_name(r->role));
                g_assert_true(g_strv_contains(methods, r->method));
                /* /metrics is where Prometheus looks, beside the API (metrics.c). */
                g_assert_true(g_str_has_prefix(r->pattern, "/api/") || strcmp(r->pattern, "/metrics") == 0);
                g_assert_nonnull(r->handler);
                g_assert_nonnull(engine_role_name(r->role));
        }
        g_assert_cmpuint(i, >=, 40);
}

static void test_no_two_rows_answer_one_request(void)
{
        const struct engine_route *a, *b;

        for (size_t i = 0; (a = engine_rest_route_at(i)); i++)
                for (size_t j = i + 1; (b = engine_rest_route_at(j)); j++)
                        if (strcmp(a->method, b->method) == 0 && strcmp(a->pattern, b->pattern) == 0)
                                g_error("%s %s is routed twice", a->method, a->pattern);
}

/* Reads are for viewers (but the users are the admin's); every change needs an operator or an admin. */
static void test_roles(void)
{
        const struct engine_route *r;

        for (size_t i = 0; (r = engine_rest_route_at(i)); i++) {
                if (g_str_has_prefix(r->pattern, "/api/users"))
                        g_assert_cmpint(r->role, ==, ENGINE_ROLE_ADMIN);
                else if (strcmp(r->method, "GET") == 0)
                        g_assert_cmpint(r->role, ==, ENGINE_ROLE_VIEWER);
                else
                        g_assert_cmpint(r->role, >=, ENGINE_ROLE_OPERATOR);
                /* The installation itself is the admin's. */
                if (strcmp(r->method, "GET") != 0 && (g_str_has_prefix(r->pattern, "/api/hosts") ||
                                                      g_str_has_prefix(r->pattern, "/api/storagedomains") ||
                                                      g_str_has_prefix(r->pattern, "/api/options")))
                        g_assert_cmpint(r->role, ==, ENGINE_ROLE_ADMIN);
        }
}

static void check(const char *method, const char *path, const char *want_pattern, const char *want_arg0,
                  const char *want_arg1, bool want_known)
{
        char buf[1024];
        char *args[ENGINE_ROUTE_MAX_ARGS] = { NULL };
        bool known;
        const struct engine_route *r = engine_rest_route_find(method, path, args, &known, buf, sizeof(buf));

        g_test_message("%s %s", method, path);
        g_assert_cmpint(known, ==, want_known);
        if (!want_pattern) {
                g_assert_null(r);
                return;
        }
        g_assert_nonnull(r);
        g_assert_cmpstr(r->pattern, ==, want_pattern);
        g_assert_cmpstr(r->method, ==, method);
        g_assert_cmpstr(args[0], ==, want_arg0);
        g_assert_cmpstr(args[1], ==, want_arg1);
}

static void test_dispatch(void)
{
        g_autofree char *deep = NULL;
        g_autofree char *longp = NULL;

        check("GET", "/api/disks", "/api/disks", NULL, NULL, true);
        check("GET", "/api/disks/", "/api/disks", NULL, NULL, true);
        check("GET", "/api//disks", "/api/disks", NULL, NULL, true);
        check("GET", "/api/disks/d1", "/api/disks/{id}", "d1", NULL, true);
        check("POST", "/api/disks/d1/move", "/api/disks/{id}/move", "d1", NULL, true);
        check("POST", "/api/disks/d1/copy", "/api/disks/{id}/copy", "d1", NULL, true);
        check("POST", "/api/disks/d1/sparsify", "/api/disks/{id}/sparsify", "d1", NULL, true);
        check("DELETE", "/api/vms/v1/snapshots/s1", "/api/vms/{id}/snapshots/{snapshot}", "v1", "s1", true);
        check("POST", "/api/vms/v1/snapshots/s1/restore", "/api/vms/{id}/snapshots/{snapshot}/restore", "v1", "s1", true);
        check("GET", "/api/vms/v1/snapshots/s1/restore", NULL, NULL, NULL, true);
        check("DELETE", "/api/vms/v1/diskattachments/d2", "/api/vms/{id}/diskattachments/{disk}", "v1", "d2", true);
        check("PUT", "/api/options/DataOperationsByHSM", "/api/options/{name}", "DataOperationsByHSM", NULL, true);
        /* A known path with another method: 405; an unknown path: 404. */
        check("PATCH", "/api/disks", NULL, NULL, NULL, true);
        check("PUT", "/api/disks/d1/move", NULL, NULL, NULL, true);
        check("GET", "/api/nothing", NULL, NULL, NULL, false);
        check("GET", "/metrics", "/metrics", NULL, NULL, true);
        check("POST", "/metrics", NULL, NULL, NULL, true);
        check("GET", "/api/disks/../../etc/passwd", NULL, NULL, NULL, false);
        check("POST", "/api/disks/d1/explode", NULL, NULL, NULL, false);
        deep = g_strdup("/api/a/b/c/d/e/f/g/h/i/j/k");
        check("GET", deep, NULL, NULL, NULL, false);
        longp = g_strnfill(600, 'x');
        check("GET", longp, NULL, NULL, NULL, false);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/routes/complete", test_rows_are_complete);
        g_test_add_func("/routes/unique", test_no_two_rows_answer_one_request);
        g_test_add_func("/routes/roles", test_roles);
        g_test_add_func("/routes/dispatch", test_dispatch);
        return g_test_run();
}
