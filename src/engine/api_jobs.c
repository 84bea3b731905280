/* SPDX-License-Identifier: GPL-2.0-or-later */
/* REST resources of what the engine does: jobs and their steps, events, options. */
#include <string.h>

#include "api_jobs.h"
#include "api_page.h"
#include "commands.h"
#include "engoptions.h"
#include "eta.h"
#include "events.h"
#include "log.h"

#define js engine_js
#define ji engine_ji

/* Options an operator may change at run time. */
static const char *const known_options[] = { "DataOperationsByHSM", NULL };

/* eta_seconds of a running step or job: null until its progress rate is known (eta.h), and while it is stalled. */
static void add_eta(json_t *o, const char *prefix, json_t *row, bool stalled)
{
        g_autofree char *key = g_strconcat(prefix, js(row, "id"), NULL);
        gint64 eta;

        if (strcmp(js(row, "status"), "started") != 0)
                return;
        eta = stalled ? -1 : engine_eta_seconds(engine_eta(), key, g_get_monotonic_time());
        json_object_set_new(o, "eta_seconds", eta >= 0 ? json_integer(eta) : json_null());
}

static json_t *job_json(struct engine *e, json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:I}", "id", js(row, "id"), "description", js(row, "description"),
                              "status", js(row, "status"), "progress", json_number_value(json_object_get(row, "progress")),
                              "start_time", ji(row, "start_time"));

        if (json_is_integer(json_object_get(row, "end_time")))
                json_object_set_new(o, "end_time", json_integer(ji(row, "end_time")));
        if (js(row, "correlation_id"))
                json_object_set_new(o, "correlation_id", json_string(js(row, "correlation_id")));
        /* A job with a stalled step has no end in sight: no estimate. */
        if (strcmp(js(row, "status"), "started") == 0)
                add_eta(o, "job:", row, engine_store_job_stalled(e->db, js(row, "id")));
        return o;
}

static json_t *step_json(struct engine *e, json_t *row)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:I}", "id", js(row, "id"),
                              "description", js(row, "description"), "type", js(row, "type"),
                              "status", js(row, "status"), "progress", json_number_value(json_object_get(row, "progress")),
                              "weight", json_number_value(json_object_get(row, "weight")), "start_time", ji(row, "start_time"));
        const char *host = js(row, "execution_host");

        if (host) {
                g_autoptr(json_t) h = engine_store_host_get(e->db, host, NULL);
                json_object_set_new(o, "execution_host", json_pack("{s:s, s:s?}", "id", host, "name", h ? js(h, "name") : NULL));
        } else {
                json_object_set_new(o, "execution_host", json_null());
        }
        if (json_is_integer(json_object_get(row, "end_time")))
                json_object_set_new(o, "end_time", json_integer(ji(row, "end_time")));
        if (ji(row, "verified"))
                json_object_set_new(o, "verified", json_true());
        if (js(row, "checksum"))
                json_object_set_new(o, "checksum", json_pack("{s:s, s:s}", "algorithm", "blake2b", "value", js(row, "checksum")));
        if (js(row, "detail"))
                json_object_set_new(o, "status_detail", json_string(js(row, "detail")));
        add_eta(o, "step:", row, g_strcmp0(js(row, "detail"), "stalled") == 0);
        return o;
}

static void job_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        engine_rest_page(e, msg, ENGINE_STORE_PAGE_JOBS, "jobs", job_json);
}

static void job_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;

        if (!engine_rest_id_valid(msg, "job", args[0]))
                return;
        row = engine_store_job_get(e->db, args[0], &error);
        engine_rest_reply_row(e, msg, "job", args[0], row, error, job_json);
}

static void job_steps(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) job = NULL;
        g_autoptr(json_t) rows = NULL;

        if (!engine_rest_id_valid(msg, "job", args[0]))
                return;
        job = engine_store_job_get(e->db, args[0], &error);
        if (!job) {
                engine_rest_reply_row(e, msg, "job", args[0], NULL, error, job_json);
                return;
        }
        rows = engine_store_step_list(e->db, args[0], &error);
        engine_rest_reply_rows(e, msg, "steps", rows, error, step_json);
}

static void job_cancel(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = engine_job_cancel(e, args[0], &error);

        engine_rest_reply_result(msg, 202, out, error);
}

static void event_list(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        const char *q = g_uri_get_query(soup_server_message_get_uri(msg));
        g_autoptr(GHashTable) form = q ? soup_form_decode(q) : NULL;
        const char *corr = form ? g_hash_table_lookup(form, "correlation_id") : NULL;
        g_autoptr(json_t) rows = NULL;
        g_autoptr(json_t) out = NULL;

        if (corr && (g_hash_table_contains(form, "max") || g_hash_table_contains(form, "page") ||
                     g_hash_table_contains(form, "search"))) {
                engine_rest_reply_fault(msg, 400, "correlation_id lists one request's events: not with max, page or search");
                return;
        }
        if (!corr) {
                engine_rest_page(e, msg, ENGINE_STORE_PAGE_EVENTS, "events", NULL);
                return;
        }
        if (corr && !fy_log_correlation_id_valid(corr)) {
                engine_rest_reply_fault(msg, 400, "correlation_id takes 1-128 of the characters A-Z a-z 0-9 . _ : -");
                return;
        }
        rows = engine_store_event_list(e->db, corr, 1000, &error);
        out = rows ? json_pack("{s:O}", "events", rows) : NULL;
        engine_rest_reply_result(msg, 200, out, error);
}

static bool option_known(SoupServerMessage *msg, const char *name)
{
        if (g_strv_contains(known_options, name))
                return true;
        engine_rest_reply_fault(msg, 404, "unknown option; known: DataOperationsByHSM");
        return false;
}

static void option_reply(struct engine *e, SoupServerMessage *msg, const char *name)
{
        g_autoptr(json_t) out = json_pack("{s:s, s:b}", "name", name,
                                          "value", engine_option_bool(e, name, e->config.data_operations_by_hsm));

        engine_rest_reply_json(msg, 200, out);
}

static void option_get(struct engine *e, SoupServerMessage *msg, char **args)
{
        if (option_known(msg, args[0]))
                option_reply(e, msg, args[0]);
}

static void option_set(struct engine *e, SoupServerMessage *msg, char **args)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) body = NULL;
        json_t *value;
        const char *text;

        if (!option_known(msg, args[0]) || !(body = engine_rest_body(e, msg)))
                return;
        value = json_object_get(body, "value");
        text = json_string_value(value);
        if (!json_is_boolean(value) && !(text && (strcmp(text, "true") == 0 || strcmp(text, "false") == 0))) {
                engine_rest_reply_fault(msg, 400, "DataOperationsByHSM takes true or false");
                return;
        }
        if (engine_option_set_bool(e, args[0], json_is_true(value) || g_strcmp0(text, "true") == 0, &error) < 0) {
                engine_rest_reply_error(msg, error);
                return;
        }
        engine_event(e, "normal", NULL, "option %s set", args[0]);
        option_reply(e, msg, args[0]);
}

static const struct engine_route routes[] = {
        { "GET", "/api/jobs", job_list, ENGINE_ROLE_VIEWER },
        { "GET", "/api/jobs/{id}", job_get, ENGINE_ROLE_VIEWER },
        { "GET", "/api/jobs/{id}/steps", job_steps, ENGINE_ROLE_VIEWER },
        { "POST", "/api/jobs/{id}/cancel", job_cancel, ENGINE_ROLE_OPERATOR },
        { "GET", "/api/events", event_list, ENGINE_ROLE_VIEWER },
        { "GET", "/api/options/{name}", option_get, ENGINE_ROLE_VIEWER },
        { "PUT", "/api/options/{name}", option_set, ENGINE_ROLE_ADMIN },
};

const struct engine_route *engine_api_jobs_routes(size_t *ret_n)
{
        *ret_n = G_N_ELEMENTS(routes);
        return routes;
}
