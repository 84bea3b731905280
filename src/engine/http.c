/* SPDX-License-Identifier: GPL-2.0-or-later */
/* JSON in and out of the REST API: answers, faults, request bodies. */
#include <string.h>

#include "http.h"
#include "uuid.h"

static const char *reason_for(int status)
{
        switch (status) {
        case 400: return "Bad request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not found";
        case 405: return "Method not allowed";
        case 409: return "Conflict";
        case 411: return "Length required";
        case 413: return "Request too large";
        case 414: return "URI too long";
        case 415: return "Unsupported media type";
        case 417: return "Expectation failed";
        case 503: return "Service unavailable";
        case 507: return "Insufficient storage";
        default: return "Internal error";
        }
}

void engine_rest_reply_json(SoupServerMessage *msg, int status, json_t *body)
{
        g_autofree char *text = json_dumps(body, JSON_INDENT(2) | JSON_SORT_KEYS);

        soup_server_message_set_status(msg, (guint) status, NULL);
        soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, text, strlen(text));
}

void engine_rest_reply_fault(SoupServerMessage *msg, int status, const char *detail)
{
        g_autoptr(json_t) body = json_pack("{s:{s:s, s:s}}", "fault", "reason", reason_for(status), "detail", detail);

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
        json_error_t jerr;
        json_t *body;
        gsize len;
        const char *data = g_bytes_get_data(bytes, &len);

        if (len > e->config.max_body) {
                engine_rest_reply_fault(msg, 413, "request body too large");
                return NULL;
        }
        if (ctype && g_ascii_strcasecmp(ctype, "application/json") != 0) {
                engine_rest_reply_fault(msg, 415, "send the body as application/json");
                return NULL;
        }
        body = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
        if (!body || !json_is_object(body)) {
                g_autofree char *detail = body ? g_strdup("the body must be a JSON object")
                                               : g_strdup_printf("malformed JSON: %s (line %d, column %d)",
                                                                 jerr.text, jerr.line, jerr.column);
                json_decref(body);
                engine_rest_reply_fault(msg, 400, detail);
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
