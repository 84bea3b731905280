/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "jsonrpc.h"
#include "log.h"
#include "uuid.h"

#define OTHER_METHOD "other"   /* calls of methods not in the table, counted together */

struct method_stat {
        guint64 calls;
        guint64 errors;
};

struct fy_rpc_dispatcher {
        GHashTable *methods;           /* name → const struct fy_rpc_method* */
        GHashTable *stats;             /* name (the table's, or OTHER_METHOD) → struct method_stat* */
        void *userdata;
};

/* The call whose handler runs now on this thread, for fy_rpc_current_method(). */
static __thread const char *current_method;

/* One incoming message: a request or a batch. */
struct rpc_message {
        bool batch;
        char *flow_id;                 /* VDSM's flow id of the request, NULL if none */
        unsigned pending;              /* calls not yet completed (+1 while dispatching) */
        json_t *responses;             /* array */
        fy_rpc_reply_fn reply;
        void *ctx;
        GDestroyNotify ctx_free;
};

struct fy_rpc_call {
        struct fy_rpc_dispatcher *d;
        const char *stat_name;         /* key in d->stats */
        struct rpc_message *msg;
        json_t *id;                    /* NULL for a notification */
        char *method;
        size_t index;                  /* position in the batch, keeps replies in order */
};

struct fy_rpc_dispatcher *fy_rpc_dispatcher_new(const struct fy_rpc_method *methods, void *userdata)
{
        struct fy_rpc_dispatcher *d = g_new0(struct fy_rpc_dispatcher, 1);

        d->methods = g_hash_table_new(g_str_hash, g_str_equal);
        d->stats = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
        for (const struct fy_rpc_method *m = methods; m->name; m++) {
                g_hash_table_insert(d->methods, (gpointer) m->name, (gpointer) m);
                g_hash_table_insert(d->stats, (gpointer) m->name, g_new0(struct method_stat, 1));
        }
        g_hash_table_insert(d->stats, (gpointer) OTHER_METHOD, g_new0(struct method_stat, 1));
        d->userdata = userdata;
        return d;
}

void fy_rpc_dispatcher_free(struct fy_rpc_dispatcher *d)
{
        if (!d)
                return;
        g_hash_table_unref(d->methods);
        g_hash_table_unref(d->stats);
        g_free(d);
}

static void message_unref_pending(struct rpc_message *msg)
{
        g_autofree char *text = NULL;

        g_assert(msg->pending > 0);
        if (--msg->pending > 0)
                return;

        if (msg->batch) {
                /* Drop the notification slots (null) and keep order. */
                json_t *out = json_array();
                size_t i;
                json_t *v;

                json_array_foreach(msg->responses, i, v)
                        if (!json_is_null(v))
                                json_array_append(out, v);
                if (json_array_size(out) > 0)
                        text = json_dumps(out, JSON_COMPACT);
                json_decref(out);
        } else if (json_array_size(msg->responses) == 1 &&
                   !json_is_null(json_array_get(msg->responses, 0))) {
                text = json_dumps(json_array_get(msg->responses, 0), JSON_COMPACT);
        }

        msg->reply(text, msg->ctx);
        if (msg->ctx_free)
                msg->ctx_free(msg->ctx);
        json_decref(msg->responses);
        g_free(msg->flow_id);
        g_free(msg);
}

static json_t *make_error(json_t *id, int code, const char *message)
{
        /* Messages quote peer input, maybe cut inside a character: jansson
         * accepts only UTF-8, and a reply must never be lost to that. */
        g_autofree char *valid = g_utf8_make_valid(message, -1);

        return json_pack("{s:s, s:O, s:{s:i, s:s}}",
                         "jsonrpc", "2.0",
                         "id", id ? id : json_null(),
                         "error", "code", code, "message", valid);
}

static void call_complete(struct fy_rpc_call *call, json_t *response)
{
        struct rpc_message *msg = call->msg;
        struct method_stat *st = g_hash_table_lookup(call->d->stats, call->stat_name);

        st->calls++;
        if (json_object_get(response, "error"))
                st->errors++;
        if (msg->flow_id) {
                struct fy_log_context saved;

                fy_log_context_set(NULL, msg->flow_id, &saved);
                g_info("FINISH %s%s", call->method, json_object_get(response, "error") ? " (error)" : "");
                fy_log_context_restore(&saved);
        }

        if (call->id)
                json_array_set_new(msg->responses, call->index, response);
        else
                json_decref(response);        /* notification: no reply */
        json_decref(call->id);
        g_free(call->method);
        g_free(call);
        message_unref_pending(msg);
}

void fy_rpc_call_return(struct fy_rpc_call *call, json_t *result)
{
        json_t *resp = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0",
                                 "id", call->id ? call->id : json_null(),
                                 "result", result ? result : json_null());
        call_complete(call, resp);
}

void fy_rpc_call_error(struct fy_rpc_call *call, int code, const char *fmt, ...)
{
        g_autofree char *text = NULL;
        va_list ap;

        va_start(ap, fmt);
        text = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        call_complete(call, make_error(call->id, code, text));
}

void fy_rpc_call_gerror(struct fy_rpc_call *call, const GError *error)
{
        int code = error->domain == FY_ERROR ? error->code : FY_ERR_GENERAL;

        call_complete(call, make_error(call->id, code, error->message));
}

static void add_count(const char *method, guint64 calls, guint64 errors, void *userdata)
{
        if (calls > 0)
                json_object_set_new(userdata, method, json_integer((json_int_t) calls));
}

json_t *fy_rpc_call_counts(const struct fy_rpc_call *call)
{
        json_t *o = json_object();

        fy_rpc_dispatcher_foreach_stat(call->d, add_count, o);
        return o;
}

const char *fy_rpc_call_method(const struct fy_rpc_call *call)
{
        return call->method;
}

const char *fy_rpc_call_flow_id(const struct fy_rpc_call *call)
{
        return call->msg->flow_id;
}

const char *fy_rpc_current_method(void)
{
        return current_method;
}

void fy_rpc_dispatcher_foreach_stat(struct fy_rpc_dispatcher *d, fy_rpc_stat_fn fn, void *userdata)
{
        GHashTableIter it;
        gpointer k, v;

        g_hash_table_iter_init(&it, d->stats);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                const struct method_stat *st = v;

                fn(k, st->calls, st->errors, userdata);
        }
}

static void dispatch_one(struct fy_rpc_dispatcher *d, struct rpc_message *msg, size_t index, json_t *req)
{
        struct fy_rpc_call *call;
        const struct fy_rpc_method *m;
        json_t *id, *version, *method, *params;

        json_array_append_new(msg->responses, json_null());

        if (!json_is_object(req)) {
                json_array_set_new(msg->responses, index,
                                   make_error(NULL, FY_ERR_INVALID_REQUEST, "request must be a JSON object"));
                return;
        }
        id = json_object_get(req, "id");
        if (id && !json_is_string(id) && !json_is_integer(id) && !json_is_null(id)) {
                json_array_set_new(msg->responses, index,
                                   make_error(NULL, FY_ERR_INVALID_REQUEST, "request id must be a string, an integer or null"));
                return;
        }
        version = json_object_get(req, "jsonrpc");
        method = json_object_get(req, "method");
        params = json_object_get(req, "params");
        if (!json_is_string(version) || strcmp(json_string_value(version), "2.0") != 0) {
                json_array_set_new(msg->responses, index,
                                   make_error(id, FY_ERR_INVALID_REQUEST, "request must have \"jsonrpc\": \"2.0\""));
                return;
        }
        if (!json_is_string(method) || json_string_length(method) == 0 || json_string_length(method) > 128) {
                json_array_set_new(msg->responses, index,
                                   make_error(id, FY_ERR_INVALID_REQUEST, "request must name a \"method\" (1-128 characters)"));
                return;
        }
        if (params && !json_is_object(params) && !json_is_null(params)) {
                if (id)        /* a notification gets no reply, not even an error */
                        json_array_set_new(msg->responses, index,
                                           make_error(id, FY_ERR_INVALID_PARAMS, "\"params\" must be an object of named parameters"));
                return;
        }

        call = g_new0(struct fy_rpc_call, 1);
        call->d = d;
        call->msg = msg;
        call->id = id ? json_incref(id) : NULL;
        call->method = g_strdup(json_string_value(method));
        call->index = index;
        msg->pending++;

        m = g_hash_table_lookup(d->methods, call->method);
        call->stat_name = m ? m->name : OTHER_METHOD;
        if (!m) {
                fy_rpc_call_error(call, FY_ERR_METHOD_NOT_FOUND, "The method does not exist: %.128s", call->method);
                return;
        }

        g_autoptr(json_t) empty = NULL;
        struct fy_log_context saved;

        if (!params || json_is_null(params))
                params = empty = json_object();
        /* Whatever the handler logs, and the jobs it starts, carry the request's flow id. */
        fy_log_context_set(NULL, msg->flow_id, &saved);
        if (msg->flow_id)
                g_info("START %s", call->method);
        current_method = m->name;
        m->handler(call, params, d->userdata);
        current_method = NULL;
        fy_log_context_restore(&saved);
}

void fy_rpc_dispatch(struct fy_rpc_dispatcher *d, const char *body, size_t len,
                     fy_rpc_reply_fn reply, void *ctx, GDestroyNotify ctx_free)
{
        fy_rpc_dispatch_flow(d, body, len, NULL, reply, ctx, ctx_free);
}

void fy_rpc_dispatch_flow(struct fy_rpc_dispatcher *d, const char *body, size_t len, const char *flow_id,
                          fy_rpc_reply_fn reply, void *ctx, GDestroyNotify ctx_free)
{
        struct rpc_message *msg = g_new0(struct rpc_message, 1);
        json_error_t jerr;
        json_t *root;

        if (flow_id && *flow_id) {
                if (fy_log_correlation_id_valid(flow_id)) {
                        msg->flow_id = g_strdup(flow_id);
                } else {
                        g_autofree char *shown = g_utf8_make_valid(flow_id, MIN(strlen(flow_id), 64));

                        /* The log escapes its control characters. */
                        g_warning("ignoring the request's flow id '%s': it must be 1-%d of A-Z a-z 0-9 . _ : -",
                                  shown, FY_LOG_CORRELATION_ID_MAX);
                }
        }
        msg->responses = json_array();
        msg->reply = reply;
        msg->ctx = ctx;
        msg->ctx_free = ctx_free;
        msg->pending = 1;      /* held until every call is dispatched */

        /* DECODE_ANY: a bare scalar is valid JSON but an invalid request (-32600), not a parse error. */
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!root) {
                g_autofree char *text = g_strdup_printf("Parse error: %s (line %d, column %d)",
                                                        jerr.text, jerr.line, jerr.column);
                json_array_append_new(msg->responses, make_error(NULL, FY_ERR_PARSE, text));
        } else if (json_is_array(root)) {
                size_t i;
                json_t *req;

                if (json_array_size(root) == 0) {
                        json_array_append_new(msg->responses,
                                              make_error(NULL, FY_ERR_INVALID_REQUEST, "empty batch"));
                } else if (json_array_size(root) > FY_RPC_MAX_BATCH) {
                        g_autofree char *text = g_strdup_printf("batch of %zu requests exceeds the limit of %d",
                                                                json_array_size(root), FY_RPC_MAX_BATCH);
                        json_array_append_new(msg->responses, make_error(NULL, FY_ERR_INVALID_REQUEST, text));
                } else {
                        msg->batch = true;
                        json_array_foreach(root, i, req)
                                dispatch_one(d, msg, i, req);
                }
        } else {
                dispatch_one(d, msg, 0, root);
        }
        json_decref(root);
        message_unref_pending(msg);
}

static int param_fail(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int param_fail(GError **error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_propagate_error(error, g_error_new_valist(FY_ERROR, FY_ERR_INVALID_PARAMS, fmt, ap));
        va_end(ap);
        return -EINVAL;
}

/* A prefix of peer input for an error message: at most max bytes, never a cut character. */
static char *shown(const char *s, size_t max)
{
        return g_utf8_make_valid(s, (gssize) MIN(strlen(s), max));
}

static int param_get(json_t *params, const char *name, bool required, json_t **ret, GError **error)
{
        json_t *v = json_object_get(params, name);

        if (!v || json_is_null(v)) {
                if (required)
                        return param_fail(error, "missing required parameter '%s'", name);
                *ret = NULL;
                return 0;
        }
        *ret = v;
        return 0;
}

int fy_rpc_param_string(json_t *params, const char *name, bool required, size_t max_len,
                        const char **ret, GError **error)
{
        json_t *v = NULL;
        int r;

        r = param_get(params, name, required, &v, error);
        if (r < 0 || !v)
                return r;
        if (!json_is_string(v))
                return param_fail(error, "parameter '%s' must be a string", name);
        if (json_string_length(v) > max_len)
                return param_fail(error, "parameter '%s' is longer than %zu bytes", name, max_len);
        if (strlen(json_string_value(v)) != json_string_length(v))
                return param_fail(error, "parameter '%s' must not contain NUL characters", name);
        *ret = json_string_value(v);
        return 0;
}

int fy_rpc_param_uuid(json_t *params, const char *name, bool required, const char **ret, GError **error)
{
        const char *s = NULL;
        int r;

        r = fy_rpc_param_string(params, name, required, 64, &s, error);
        if (r < 0 || !s)
                return r;
        if (!fy_uuid_is_valid(s)) {
                g_autofree char *v = shown(s, 64);
                return param_fail(error, "parameter '%s' must be a UUID (8-4-4-4-12 hex digits), got '%s'", name, v);
        }
        *ret = s;
        return 0;
}

int fy_rpc_param_uint(json_t *params, const char *name, bool required, guint64 max,
                      guint64 *ret, GError **error)
{
        guint64 value;
        json_t *v = NULL;
        int r;

        r = param_get(params, name, required, &v, error);
        if (r < 0 || !v)
                return r;
        if (json_is_integer(v)) {
                if (json_integer_value(v) < 0)
                        return param_fail(error, "parameter '%s' must not be negative", name);
                value = (guint64) json_integer_value(v);
        } else if (json_is_string(v)) {
                const char *s = json_string_value(v);
                if (!g_ascii_string_to_unsigned(s, 10, 0, G_MAXUINT64, &value, NULL)) {
                        g_autofree char *what = shown(s, 32);
                        return param_fail(error, "parameter '%s' must be a non-negative integer, got '%s'", name, what);
                }
        } else {
                return param_fail(error, "parameter '%s' must be an integer", name);
        }
        if (value > max)
                return param_fail(error, "parameter '%s' is %" G_GUINT64_FORMAT ", more than the limit %" G_GUINT64_FORMAT,
                                  name, value, max);
        *ret = value;
        return 0;
}

int fy_rpc_param_bool(json_t *params, const char *name, bool required, bool *ret, GError **error)
{
        json_t *v = NULL;
        int r;

        r = param_get(params, name, required, &v, error);
        if (r < 0 || !v)
                return r;
        if (json_is_boolean(v)) {
                *ret = json_is_true(v);
                return 0;
        }
        /* vdsm-client passes booleans as strings. */
        if (json_is_string(v) && g_ascii_strcasecmp(json_string_value(v), "true") == 0) {
                *ret = true;
                return 0;
        }
        if (json_is_string(v) && g_ascii_strcasecmp(json_string_value(v), "false") == 0) {
                *ret = false;
                return 0;
        }
        return param_fail(error, "parameter '%s' must be a boolean", name);
}

int fy_rpc_param_object(json_t *params, const char *name, bool required, json_t **ret, GError **error)
{
        json_t *v = NULL;
        int r;

        r = param_get(params, name, required, &v, error);
        if (r < 0 || !v)
                return r;
        if (!json_is_object(v))
                return param_fail(error, "parameter '%s' must be an object", name);
        *ret = v;
        return 0;
}
