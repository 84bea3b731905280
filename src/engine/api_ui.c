/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The web UI's static files (ui/, embedded at build time by
 * scripts/embed-ui.py). They are public: the page logs in through
 * /sso/oauth/token like any client, and every datum it shows comes from
 * /api under the user's token and role. Served with their type, an ETag,
 * and a Content-Security-Policy that allows no inline script or style.
 */
#include <string.h>

#include "api_ui.h"
#include "http.h"
#include "restparse.h"
#include "store/store.h"

/*
 * connect-src: the API here, and the hosts' transfer endpoints (another
 * origin: the browser sends image bytes straight to an agent, which
 * answers CORS for this origin only).
 */
#define CSP_BASE "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " \
                 "form-action 'self'; base-uri 'none'; frame-ancestors 'none'; connect-src 'self' https:"

static const struct engine_ui_asset *find(const char *path)
{
        if (strcmp(path, "/index.html") == 0)
                path = "/";
        for (size_t i = 0; i < engine_ui_n_assets; i++)
                if (strcmp(engine_ui_assets[i].path, path) == 0)
                        return &engine_ui_assets[i];
        return NULL;
}

void engine_ui_serve(struct engine *e, SoupServerMessage *msg, const char *path)
{
        const char *method = soup_server_message_get_method(msg);
        SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
        const struct engine_ui_asset *a = find(path);
        g_autofree char *csp = NULL;

        if (!a) {
                engine_rest_reply_fault(msg, 404, "no such page: the web UI is at /, the API under /api/");
                return;
        }
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                soup_message_headers_replace(h, "Allow", "GET, HEAD");
                engine_rest_reply_fault(msg, 405, "the web UI's files take GET or HEAD");
                return;
        }
        /* Plain-HTTP engines (insecure=true, development) talk to plain-HTTP agents. */
        csp = g_strconcat(CSP_BASE, e->config.insecure ? " http:" : "", NULL);
        soup_message_headers_replace(h, "Content-Security-Policy", csp);
        soup_message_headers_replace(h, "ETag", a->etag);
        soup_message_headers_replace(h, "Cache-Control", a->immutable ? "public, max-age=31536000, immutable" : "no-cache");
        if (engine_rest_etag_matches(soup_message_headers_get_list(soup_server_message_get_request_headers(msg),
                                                                   "If-None-Match"), a->etag)) {
                soup_server_message_set_status(msg, SOUP_STATUS_NOT_MODIFIED, NULL);
                return;
        }
        soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
        soup_server_message_set_response(msg, a->type, SOUP_MEMORY_STATIC, (const char *) a->data, a->size);
}

/* GET /api/session: who the token is and its role, so the UI offers only the actions the role may take. */
static void session_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) user = e->acting_user ? engine_store_user_get(e->db, e->acting_user, &error) : NULL;
        g_autoptr(json_t) out = NULL;

        if (!user) {
                engine_rest_reply_fault(msg, error ? 500 : 404, error ? error->message : "the caller is no user");
                return;
        }
        out = json_pack("{s:O?, s:O?}", "user", json_object_get(user, "name"), "role", json_object_get(user, "role"));
        engine_rest_reply_json(msg, 200, out);
}

static const struct engine_route routes[] = {
        { "GET", "/api/session", session_get, ENGINE_ROLE_VIEWER },
};

const struct engine_route *engine_api_ui_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
