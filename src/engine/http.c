/* SPDX-License-Identifier: GPL-2.0-or-later */
/* JSON in and out of the REST API: answers, faults, request bodies. */
#include <string.h>

#include "http.h"
#include "uuid.h"
#include "restparse.h"

static const char *reason_for(int status)
{
        switch (status) {
        case 400: return "Bad request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not found";
        case 405: return "Method not allowed";
        case 408: return "Request timeout";
        case 409: return "Conflict";
        case 411: return "Length required";
        case 413: return "Request too large";
        case 414: return "URI too long";
        case 415: return "Unsupported media type";
        case 417: return "Expectation failed";
        case 429: return "Too many requests";
        case 503: return "Service unavailable";
        case 507: return "Insufficient storage";
        default: return "Internal error";
        }
}

void engine_rest_reply_json(SoupServerMessage *msg, int status, json_t *body)
{
        char *text = json_dumps(body, JSON_INDENT(2));

        soup_server_message_set_status(msg, (guint) status, NULL);
        /* Taken, not copied: a list of 100,000 disks is 32 MiB of text (jansson allocates with malloc, as g_free frees). */
        soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_TAKE, text, strlen(text));
}

json_t *engine_rest_fault(int status, const char *detail)
{
        return json_pack("{s:{s:s, s:s}}", "fault", "reason", reason_for(status), "detail", detail);
}

void engine_rest_reply_fault(SoupServerMessage *msg, int status, const char *detail)
{
        g_autoptr(json_t) body = engine_rest_fault(status, detail);

        engine_rest_reply_json(msg, status, body);
}

void engine_rest_reply_error(SoupServerMessage *msg, const GError *error)
{
        int status = error->domain == ENGINE_ERROR ? error->code : 500;

        if (status < 400 || status > 599)
                status = 500;
        engine_rest_reply_fault(msg, status, error->message);
}

/* Parses the request body as a JSON object; answers the fault itself on failure. */
json_t *engine_rest_body(struct engine *e, SoupServerMessage *msg)
{
        SoupMessageBody *req = soup_server_message_get_request_body(msg);
        g_autoptr(GBytes) bytes = soup_message_body_flatten(req);
        const char *ctype = soup_message_headers_get_content_type(soup_server_message_get_request_headers(msg), NULL);
        g_autofree char *detail = NULL;
        json_t *body = NULL;
        gsize len;
        const char *data = g_bytes_get_data(bytes, &len);
        int status = engine_rest_body_parse(data, len, ctype, e->config.max_body, &body, &detail);

        if (status) {
                engine_rest_reply_fault(msg, status, detail);
                return NULL;
        }
        return body;
}

bool engine_rest_method_is(SoupServerMessage *msg, const char *m)
{
        return strcmp(soup_server_message_get_method(msg), m) == 0;
}

const char *engine_role_name(enum engine_role role)
{
        static const char *const names[] = {
                [ENGINE_ROLE_VIEWER] = "viewer",
                [ENGINE_ROLE_OPERATOR] = "operator",
                [ENGINE_ROLE_ADMIN] = "admin",
        };

        return role < G_N_ELEMENTS(names) ? names[role] : NULL;
}

void engine_rest_reply_rows(struct engine *e, SoupServerMessage *msg, const char *key, json_t *rows,
                            const GError *error, engine_row_fmt fmt)
{
        g_autoptr(json_t) out = json_array();
        g_autoptr(json_t) body = NULL;
        size_t i;
        json_t *row;

        if (!rows) {
                engine_rest_reply_error(msg, error);
                return;
        }
        json_array_foreach(rows, i, row)
                json_array_append_new(out, fmt(e, row));
        body = json_pack("{s:O}", key, out);
        engine_rest_reply_json(msg, 200, body);
}

bool engine_rest_id_valid(SoupServerMessage *msg, const char *what, const char *id)
{
        g_autofree char *detail = NULL;

        if (fy_uuid_is_valid(id))
                return true;
        detail = g_strdup_printf("no %s %.64s (ids are UUIDs)", what, id);
        engine_rest_reply_fault(msg, 404, detail);
        return false;
}

void engine_rest_reply_row(struct engine *e, SoupServerMessage *msg, const char *what, const char *id, json_t *row,
                           const GError *error, engine_row_fmt fmt)
{
        g_autoptr(json_t) out = NULL;

        if (!row) {
                g_autofree char *detail = NULL;

                if (error) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                detail = g_strdup_printf("no %s %.64s", what, id);
                engine_rest_reply_fault(msg, 404, detail);
                return;
        }
        out = fmt(e, row);
        engine_rest_reply_json(msg, 200, out);
}

void engine_rest_reply_result(SoupServerMessage *msg, int status, json_t *out, const GError *error)
{
        if (out)
                engine_rest_reply_json(msg, status, out);
        else
                engine_rest_reply_error(msg, error);
}

json_t *engine_rest_ref(const char *id)
{
        return id ? json_pack("{s:s}", "id", id) : json_null();
}
