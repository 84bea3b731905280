/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The JSON-RPC dispatcher: exact reply shapes for requests, notifications and
 * batches (with handlers completing synchronously, with an error, and later
 * from the main loop), the protocol errors, and the parameter helpers.
 */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include <jansson.h>

#include "error.h"
#include "jsonrpc.h"

/* What one fy_rpc_dispatch() call delivered to its reply callback. */
struct reply_ctx {
        int replies;
        int frees;
        bool freed_after_reply;
        bool got_null;
        char *text;
};

static void on_reply(const char *reply, void *ctx)
{
        struct reply_ctx *rc = ctx;

        g_assert_cmpint(rc->frees, ==, 0);
        rc->replies++;
        rc->got_null = !reply;
        g_free(rc->text);
        rc->text = g_strdup(reply);
}

static void on_free(void *ctx)
{
        struct reply_ctx *rc = ctx;

        rc->frees++;
        rc->freed_after_reply = rc->replies == 1;
}

static void reply_ctx_clear(struct reply_ctx *rc)
{
        g_free(rc->text);
        memset(rc, 0, sizeof(*rc));
}

/* Calls completed later by the test; params of the last Test.record call. */
static GPtrArray *later_calls;
static json_t *recorded_params;

static void h_echo(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        g_assert_cmpstr(userdata, ==, "userdata");
        g_assert_cmpstr(fy_rpc_call_method(call), ==, "Test.echo");
        fy_rpc_call_return(call, json_deep_copy(params));
}

static void h_null(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        (void) params;
        (void) userdata;
        fy_rpc_call_return(call, NULL);
}

static void h_fail(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        (void) params;
        (void) userdata;
        fy_rpc_call_error(call, FY_ERR_VOLUME_DOES_NOT_EXIST, "volume %s does not exist", "v1");
}

static void h_gerror(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        g_autoptr(GError) error = NULL;

        (void) userdata;
        if (json_is_true(json_object_get(params, "foreign")))
                error = g_error_new(G_FILE_ERROR, G_FILE_ERROR_NOENT, "no such file");
        else
                error = g_error_new(FY_ERROR, FY_ERR_STORAGE_DOMAIN_DOES_NOT_EXIST, "domain %s is gone", "d1");
        fy_rpc_call_gerror(call, error);
}

static void h_later(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        (void) userdata;
        /* Keep what the result will be: params is only borrowed. */
        g_ptr_array_add(later_calls, call);
        g_ptr_array_add(later_calls, json_incref(json_object_get(params, "n")));
}

static void h_record(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        (void) userdata;
        json_decref(recorded_params);
        recorded_params = json_deep_copy(params);
        fy_rpc_call_return(call, json_true());
}

/* Validates a parameter with the helpers and reports the error they give. */
static void h_uint(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        g_autoptr(GError) error = NULL;
        guint64 size = 0;

        (void) userdata;
        if (fy_rpc_param_uint(params, "size", true, 1000, &size, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        fy_rpc_call_return(call, json_integer((json_int_t) size));
}

static const struct fy_rpc_method methods[] = {
        { "Test.echo", h_echo },
        { "Test.null", h_null },
        { "Test.fail", h_fail },
        { "Test.gerror", h_gerror },
        { "Test.later", h_later },
        { "Test.record", h_record },
        { "Test.uint", h_uint },
        { NULL, NULL },
};

static struct fy_rpc_dispatcher *dispatcher_new(void)
{
        if (!later_calls)
                later_calls = g_ptr_array_new();
        g_assert_cmpuint(later_calls->len, ==, 0);
        return fy_rpc_dispatcher_new(methods, (void *) "userdata");
}

static void dispatch(struct fy_rpc_dispatcher *d, const char *body, struct reply_ctx *rc)
{
        reply_ctx_clear(rc);
        fy_rpc_dispatch(d, body, strlen(body), on_reply, rc, on_free);
}

/* The message has been answered exactly once; returns the parsed reply. */
static json_t *reply_json(struct reply_ctx *rc)
{
        json_error_t jerr;
        json_t *v;

        g_assert_cmpint(rc->replies, ==, 1);
        g_assert_cmpint(rc->frees, ==, 1);
        g_assert_true(rc->freed_after_reply);
        g_assert_nonnull(rc->text);
        v = json_loads(rc->text, 0, &jerr);
        if (!v)
                g_error("reply is not JSON (%s): %s", jerr.text, rc->text);
        return v;
}

static void assert_id(json_t *resp, const char *id_json)
{
        g_autoptr(json_t) want = json_loads(id_json, JSON_DECODE_ANY, NULL);

        g_assert_nonnull(want);
        g_assert_true(json_is_object(resp));
        g_assert_nonnull(json_object_get(resp, "id"));
        if (!json_equal(json_object_get(resp, "id"), want)) {
                g_autofree char *s = json_dumps(resp, JSON_COMPACT);
                g_error("expected id %s in %s", id_json, s);
        }
}

/* {"jsonrpc":"2.0","id":<id>,"result":<result>} and nothing else. */
static void assert_result(json_t *resp, const char *id_json, const char *result_json)
{
        g_autoptr(json_t) want = json_loads(result_json, JSON_DECODE_ANY, NULL);
        g_autofree char *s = json_dumps(resp, JSON_COMPACT | JSON_ENCODE_ANY);

        g_assert_nonnull(want);
        assert_id(resp, id_json);
        g_assert_cmpstr(json_string_value(json_object_get(resp, "jsonrpc")), ==, "2.0");
        if (!json_object_get(resp, "result") || !json_equal(json_object_get(resp, "result"), want))
                g_error("expected result %s in %s", result_json, s);
        g_assert_null(json_object_get(resp, "error"));
        g_assert_cmpuint(json_object_size(resp), ==, 3);
}

/* {"jsonrpc":"2.0","id":<id>,"error":{"code":<code>,"message":"..."}}; returns the message. */
static const char *assert_error(json_t *resp, const char *id_json, int code)
{
        g_autofree char *s = json_dumps(resp, JSON_COMPACT | JSON_ENCODE_ANY);
        json_t *err;

        assert_id(resp, id_json);
        g_assert_cmpstr(json_string_value(json_object_get(resp, "jsonrpc")), ==, "2.0");
        g_assert_null(json_object_get(resp, "result"));
        g_assert_cmpuint(json_object_size(resp), ==, 3);
        err = json_object_get(resp, "error");
        if (!json_is_object(err) || !json_is_integer(json_object_get(err, "code")))
                g_error("expected an error object in %s", s);
        if (json_integer_value(json_object_get(err, "code")) != code)
                g_error("expected error code %d in %s", code, s);
        g_assert_true(json_is_string(json_object_get(err, "message")));
        g_assert_cmpuint(json_string_length(json_object_get(err, "message")), >, 0);
        g_assert_cmpuint(json_object_size(err), ==, 2);
        return json_string_value(json_object_get(err, "message"));
}

/* Dispatches a single request and returns its one reply object. */
static json_t *call_one(struct fy_rpc_dispatcher *d, const char *body)
{
        struct reply_ctx rc = { 0 };
        json_t *v;

        dispatch(d, body, &rc);
        v = reply_json(&rc);
        reply_ctx_clear(&rc);
        g_assert_true(json_is_object(v));
        return v;
}

static void assert_no_reply(struct fy_rpc_dispatcher *d, const char *body)
{
        struct reply_ctx rc = { 0 };

        dispatch(d, body, &rc);
        g_assert_cmpint(rc.replies, ==, 1);
        g_assert_true(rc.got_null);
        g_assert_cmpint(rc.frees, ==, 1);
        g_assert_true(rc.freed_after_reply);
        reply_ctx_clear(&rc);
}

static void test_single(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(json_t) r1 = NULL, r2 = NULL, r3 = NULL, r4 = NULL;

        r1 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.echo\",\"params\":{\"a\":[1,\"x\"]}}");
        assert_result(r1, "1", "{\"a\":[1,\"x\"]}");
        r2 = call_one(d, "{\"method\":\"Test.echo\",\"id\":\"abc\",\"jsonrpc\":\"2.0\",\"params\":{}}");
        assert_result(r2, "\"abc\"", "{}");
        /* A NULL result is a JSON null, still present. */
        r3 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":-7,\"method\":\"Test.null\"}");
        assert_result(r3, "-7", "null");
        /* "id": null is a request, not a notification. */
        r4 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"Test.null\"}");
        assert_result(r4, "null", "null");
}

static void test_handler_errors(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(json_t) r1 = NULL, r2 = NULL, r3 = NULL;

        r1 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.fail\"}");
        g_assert_cmpstr(assert_error(r1, "1", FY_ERR_VOLUME_DOES_NOT_EXIST), ==, "volume v1 does not exist");
        r2 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"Test.gerror\"}");
        g_assert_cmpstr(assert_error(r2, "2", FY_ERR_STORAGE_DOMAIN_DOES_NOT_EXIST), ==, "domain d1 is gone");
        /* Errors outside FY_ERROR are GeneralException. */
        r3 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"Test.gerror\",\"params\":{\"foreign\":true}}");
        g_assert_cmpstr(assert_error(r3, "3", FY_ERR_GENERAL), ==, "no such file");
}

static void test_notification(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();

        assert_no_reply(d, "{\"jsonrpc\":\"2.0\",\"method\":\"Test.echo\",\"params\":{}}");
        /* Errors of notifications are not reported either. */
        assert_no_reply(d, "{\"jsonrpc\":\"2.0\",\"method\":\"Test.fail\"}");
        assert_no_reply(d, "{\"jsonrpc\":\"2.0\",\"method\":\"No.such\"}");
        assert_no_reply(d, "[{\"jsonrpc\":\"2.0\",\"method\":\"Test.echo\"},{\"jsonrpc\":\"2.0\",\"method\":\"Test.fail\"}]");
}

static void test_batch(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(json_t) v = NULL;
        struct reply_ctx rc = { 0 };

        dispatch(d, "[{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"Test.echo\",\"params\":{\"n\":1}},"
                    " {\"jsonrpc\":\"2.0\",\"method\":\"Test.echo\",\"params\":{\"n\":2}},"
                    " {\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"Test.fail\"},"
                    " 1,"
                    " {\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"No.such\"},"
                    " {\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"Test.null\"},"
                    " \"text\"]", &rc);
        v = reply_json(&rc);
        g_assert_true(json_is_array(v));
        g_assert_cmpuint(json_array_size(v), ==, 6);
        assert_result(json_array_get(v, 0), "\"a\"", "{\"n\":1}");
        assert_error(json_array_get(v, 1), "3", FY_ERR_VOLUME_DOES_NOT_EXIST);
        assert_error(json_array_get(v, 2), "null", FY_ERR_INVALID_REQUEST);
        assert_error(json_array_get(v, 3), "5", FY_ERR_METHOD_NOT_FOUND);
        assert_result(json_array_get(v, 4), "6", "null");
        assert_error(json_array_get(v, 5), "null", FY_ERR_INVALID_REQUEST);
        reply_ctx_clear(&rc);
}

/* A batch of one is still answered with an array. */
static void test_batch_of_one(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(json_t) v = NULL;
        struct reply_ctx rc = { 0 };

        dispatch(d, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.null\"}]", &rc);
        v = reply_json(&rc);
        g_assert_true(json_is_array(v));
        g_assert_cmpuint(json_array_size(v), ==, 1);
        assert_result(json_array_get(v, 0), "1", "null");
        reply_ctx_clear(&rc);
}

static void test_batch_limits(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(json_t) r0 = NULL, r1 = NULL, r2 = NULL, r3 = NULL;
        g_autoptr(GString) body = g_string_new("[");
        struct reply_ctx rc = { 0 };

        r0 = call_one(d, "[]");
        assert_error(r0, "null", FY_ERR_INVALID_REQUEST);
        r1 = call_one(d, " [ ] ");
        assert_error(r1, "null", FY_ERR_INVALID_REQUEST);

        /* Exactly the limit is fine... */
        for (int i = 0; i < FY_RPC_MAX_BATCH; i++)
                g_string_append_printf(body, "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"Test.null\"}",
                                       i ? "," : "", i);
        g_string_append(body, "]");
        dispatch(d, body->str, &rc);
        r2 = reply_json(&rc);
        g_assert_true(json_is_array(r2));
        g_assert_cmpuint(json_array_size(r2), ==, FY_RPC_MAX_BATCH);
        for (int i = 0; i < FY_RPC_MAX_BATCH; i++) {
                g_autofree char *id = g_strdup_printf("%d", i);
                assert_result(json_array_get(r2, i), id, "null");
        }
        reply_ctx_clear(&rc);

        /* ...one more is refused as a whole, without calling anything. */
        g_string_truncate(body, body->len - 1);
        g_string_append(body, ",{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"Test.later\"}]");
        r3 = call_one(d, body->str);
        assert_error(r3, "null", FY_ERR_INVALID_REQUEST);
        g_assert_cmpuint(later_calls->len, ==, 0);
}

static void test_parse_error(void)
{
        static const char *bodies[] = {
                "{",
                "",
                "   ",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.echo\"",
                "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.echo\"},",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.echo\"} trailing",
                /* Duplicate keys are rejected rather than resolved silently. */
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"Test.echo\"}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.echo\",\"params\":{\"a\":\"\\u0000\"}}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.\xff\"}",
                "{\"jsonrpc\":\"2.0\",\"id\":123456789012345678901234567890,\"method\":\"Test.echo\"}",
        };
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();

        for (size_t i = 0; i < G_N_ELEMENTS(bodies); i++) {
                g_autoptr(json_t) r = call_one(d, bodies[i]);
                const char *msg = assert_error(r, "null", FY_ERR_PARSE);

                g_assert_true(g_str_has_prefix(msg, "Parse error"));
        }
}

static void test_invalid_request(void)
{
        static const struct {
                const char *body;
                const char *id;
        } cases[] = {
                { "{\"id\":1,\"method\":\"Test.echo\"}", "1" },
                { "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"Test.echo\"}", "1" },
                { "{\"jsonrpc\":2.0,\"id\":1,\"method\":\"Test.echo\"}", "1" },
                { "{\"jsonrpc\":\"2.0 \",\"id\":1,\"method\":\"Test.echo\"}", "1" },
                { "{\"jsonrpc\":null,\"id\":\"q\",\"method\":\"Test.echo\"}", "\"q\"" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1}", "1" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", "1" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}", "1" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":[\"Test.echo\"]}", "1" },
                /* An id of the wrong type cannot be echoed back. */
                { "{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"Test.echo\"}", "null" },
                { "{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"Test.echo\"}", "null" },
                { "{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"Test.echo\"}", "null" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"Test.echo\"}", "null" },
                /* Missing version and no id: still answered, there is no valid notification. */
                { "{\"method\":\"Test.echo\"}", "null" },
        };
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(json_t) r = call_one(d, cases[i].body);

                assert_error(r, cases[i].id, FY_ERR_INVALID_REQUEST);
        }

        /* Inside a batch: one error per element, in an array. */
        for (size_t i = 0; i < 3; i++) {
                const char *body = i == 0 ? "[1]" : i == 1 ? "[[]]" : "[null]";
                struct reply_ctx rc = { 0 };
                g_autoptr(json_t) v = NULL;

                dispatch(d, body, &rc);
                v = reply_json(&rc);
                g_assert_true(json_is_array(v));
                g_assert_cmpuint(json_array_size(v), ==, 1);
                assert_error(json_array_get(v, 0), "null", FY_ERR_INVALID_REQUEST);
                reply_ctx_clear(&rc);
        }
        g_assert_cmpuint(later_calls->len, ==, 0);
}

static void test_method_name(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autofree char *name128 = g_strnfill(128, 'm');
        g_autofree char *name129 = g_strnfill(129, 'm');
        g_autofree char *body128 = g_strdup_printf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}", name128);
        g_autofree char *body129 = g_strdup_printf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}", name129);
        g_autoptr(json_t) r1 = NULL, r2 = NULL, r3 = NULL, r4 = NULL;

        r1 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":\"u\",\"method\":\"Host.nothing\"}");
        g_assert_nonnull(strstr(assert_error(r1, "\"u\"", FY_ERR_METHOD_NOT_FOUND), "Host.nothing"));
        /* Names are case sensitive. */
        r2 = call_one(d, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.echo\"}");
        assert_error(r2, "2", FY_ERR_METHOD_NOT_FOUND);
        r3 = call_one(d, body128);
        g_assert_nonnull(strstr(assert_error(r3, "1", FY_ERR_METHOD_NOT_FOUND), name128));
        r4 = call_one(d, body129);
        assert_error(r4, "1", FY_ERR_INVALID_REQUEST);
}

static void test_params_shape(void)
{
        static const char *bad[] = {
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\",\"params\":[1,2]}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\",\"params\":[]}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\",\"params\":\"x\"}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\",\"params\":5}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\",\"params\":false}",
        };
        static const char *empty[] = {
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\"}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\",\"params\":null}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.record\",\"params\":{}}",
        };
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autoptr(json_t) r = call_one(d, bad[i]);

                json_decref(g_steal_pointer(&recorded_params));
                assert_error(r, "1", FY_ERR_INVALID_PARAMS);
                g_assert_null(recorded_params);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(empty); i++) {
                g_autoptr(json_t) r = call_one(d, empty[i]);

                assert_result(r, "1", "true");
                g_assert_true(json_is_object(recorded_params));
                g_assert_cmpuint(json_object_size(recorded_params), ==, 0);
                json_decref(g_steal_pointer(&recorded_params));
        }
}

/* Completes the stored Test.later calls from idle sources, in the order given. */
static gboolean complete_later(gpointer data)
{
        guint idx = GPOINTER_TO_UINT(data);
        struct fy_rpc_call *call = g_ptr_array_index(later_calls, 2 * idx);
        json_t *n = g_ptr_array_index(later_calls, 2 * idx + 1);

        g_assert_nonnull(call);
        g_ptr_array_index(later_calls, 2 * idx) = NULL;
        if (json_integer_value(n) < 0)
                fy_rpc_call_error(call, FY_ERR_GENERAL, "negative %d", (int) json_integer_value(n));
        else
                fy_rpc_call_return(call, json_pack("{s:O}", "n", n));
        json_decref(n);
        return G_SOURCE_REMOVE;
}

static void run_later(const guint *order, size_t n, struct reply_ctx *rc)
{
        g_assert_cmpuint(later_calls->len, ==, 2 * n);
        for (size_t i = 0; i < n; i++) {
                g_assert_cmpint(rc->replies, ==, 0);
                g_idle_add(complete_later, GUINT_TO_POINTER(order[i]));
                while (g_main_context_iteration(NULL, FALSE))
                        ;
        }
        g_ptr_array_set_size(later_calls, 0);
}

static void test_async_single(void)
{
        static const guint order[] = { 0 };
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(json_t) v = NULL;
        struct reply_ctx rc = { 0 };

        dispatch(d, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"Test.later\",\"params\":{\"n\":42}}", &rc);
        g_assert_cmpint(rc.replies, ==, 0);
        g_assert_cmpint(rc.frees, ==, 0);
        run_later(order, 1, &rc);
        v = reply_json(&rc);
        assert_result(v, "9", "{\"n\":42}");
        reply_ctx_clear(&rc);

        /* An async notification: the NULL reply comes when it completes. */
        dispatch(d, "{\"jsonrpc\":\"2.0\",\"method\":\"Test.later\",\"params\":{\"n\":1}}", &rc);
        g_assert_cmpint(rc.replies, ==, 0);
        run_later(order, 1, &rc);
        g_assert_cmpint(rc.replies, ==, 1);
        g_assert_true(rc.got_null);
        g_assert_cmpint(rc.frees, ==, 1);
        reply_ctx_clear(&rc);
}

static void test_async_batch(void)
{
        /* Complete in reverse: the reply keeps request order anyway. */
        static const guint order[] = { 3, 2, 1, 0 };
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(json_t) v = NULL;
        struct reply_ctx rc = { 0 };

        dispatch(d, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.later\",\"params\":{\"n\":10}},"
                    " {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"Test.echo\",\"params\":{\"n\":20}},"
                    " {\"jsonrpc\":\"2.0\",\"method\":\"Test.later\",\"params\":{\"n\":30}},"
                    " {\"jsonrpc\":\"2.0\",\"id\":\"four\",\"method\":\"Test.later\",\"params\":{\"n\":-40}},"
                    " {\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"Test.fail\"},"
                    " {\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"Test.later\",\"params\":{\"n\":60}}]", &rc);
        g_assert_cmpint(rc.replies, ==, 0);
        run_later(order, 4, &rc);
        v = reply_json(&rc);
        g_assert_true(json_is_array(v));
        g_assert_cmpuint(json_array_size(v), ==, 5);
        assert_result(json_array_get(v, 0), "1", "{\"n\":10}");
        assert_result(json_array_get(v, 1), "2", "{\"n\":20}");
        g_assert_cmpstr(assert_error(json_array_get(v, 2), "\"four\"", FY_ERR_GENERAL), ==, "negative -40");
        assert_error(json_array_get(v, 3), "5", FY_ERR_VOLUME_DOES_NOT_EXIST);
        assert_result(json_array_get(v, 4), "6", "{\"n\":60}");
        reply_ctx_clear(&rc);
}

/*
 * A parameter error must reach the client. fy_rpc_param_uint() quotes the bad
 * value with "%.32s", which can cut a UTF-8 sequence in half; the message is
 * then not valid UTF-8, json_pack() in make_error() fails and the call is
 * answered with nothing at all (reply NULL, as for a notification).
 */
static void test_error_message_utf8(void)
{
        g_autoptr(fy_rpc_dispatcher) d = dispatcher_new();
        g_autoptr(GString) body = g_string_new("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"Test.uint\",\"params\":{\"size\":\"1");
        g_autoptr(json_t) v = NULL;
        struct reply_ctx rc = { 0 };

        /* "1" + 20 × "é" (2 bytes): byte 32 is the first half of a character. */
        for (int i = 0; i < 20; i++)
                g_string_append(body, "\xc3\xa9");
        g_string_append(body, "\"}}");
        dispatch(d, body->str, &rc);
        g_assert_cmpint(rc.replies, ==, 1);
        g_assert_cmpint(rc.frees, ==, 1);
        /* Used to get no reply at all (make_error() returned NULL on invalid UTF-8). */
        g_assert_false(rc.got_null);
        v = reply_json(&rc);
        g_assert_true(g_utf8_validate(assert_error(v, "1", FY_ERR_INVALID_PARAMS), -1, NULL));
        reply_ctx_clear(&rc);
}

/* ---- parameter helpers ---- */

static json_t *P(const char *text)
{
        json_error_t jerr;
        json_t *v = json_loads(text, 0, &jerr);

        if (!v)
                g_error("bad test JSON %s: %s", text, jerr.text);
        return v;
}

static void assert_param_error(GError **error, const char *name)
{
        g_assert_error(*error, FY_ERROR, FY_ERR_INVALID_PARAMS);
        g_assert_nonnull(strstr((*error)->message, name));
        g_assert_true(g_utf8_validate((*error)->message, -1, NULL));
        g_clear_error(error);
}

static void test_param_string(void)
{
        g_autoptr(json_t) p = P("{\"s\":\"abcd\",\"e\":\"\",\"n\":5,\"o\":{},\"z\":null}");
        g_autoptr(json_t) nul = json_pack("{s:o}", "s", json_stringn("a\0b", 3));
        g_autoptr(GError) error = NULL;
        const char *s = "untouched";

        g_assert_cmpint(fy_rpc_param_string(p, "s", true, 4, &s, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(s, ==, "abcd");
        g_assert_cmpint(fy_rpc_param_string(p, "e", true, 4, &s, &error), ==, 0);
        g_assert_cmpstr(s, ==, "");

        s = "untouched";
        g_assert_cmpint(fy_rpc_param_string(p, "s", true, 3, &s, &error), ==, -EINVAL);
        assert_param_error(&error, "'s'");
        g_assert_cmpint(fy_rpc_param_string(p, "n", true, 64, &s, &error), ==, -EINVAL);
        assert_param_error(&error, "'n'");
        g_assert_cmpint(fy_rpc_param_string(p, "o", false, 64, &s, &error), ==, -EINVAL);
        assert_param_error(&error, "'o'");
        g_assert_cmpint(fy_rpc_param_string(nul, "s", true, 64, &s, &error), ==, -EINVAL);
        assert_param_error(&error, "NUL");
        g_assert_cmpint(fy_rpc_param_string(p, "missing", true, 64, &s, &error), ==, -EINVAL);
        assert_param_error(&error, "'missing'");
        g_assert_cmpint(fy_rpc_param_string(p, "z", true, 64, &s, &error), ==, -EINVAL);
        assert_param_error(&error, "'z'");
        g_assert_cmpstr(s, ==, "untouched");

        /* Optional and absent (or null): success, *ret untouched. */
        g_assert_cmpint(fy_rpc_param_string(p, "missing", false, 64, &s, &error), ==, 0);
        g_assert_cmpint(fy_rpc_param_string(p, "z", false, 64, &s, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(s, ==, "untouched");
}

static void test_param_uuid(void)
{
        g_autoptr(json_t) p = P("{\"lower\":\"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9\","
                                " \"upper\":\"0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9\","
                                " \"dots\":\"../x\","
                                " \"slash\":\"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8/9\","
                                " \"g\":\"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8fg\","
                                " \"long\":\"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9a\","
                                " \"short\":\"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f\","
                                " \"nodash\":\"0a1b2c3d04e5f06071082930a4b5c6d7e8f9\","
                                " \"huge\":\"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f90a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9\","
                                " \"num\":1}");
        g_autoptr(json_t) nul = json_pack("{s:o}", "u", json_stringn("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9\0x", 38));
        static const char *bad[] = { "dots", "slash", "g", "long", "short", "nodash", "huge", "num" };
        g_autoptr(GError) error = NULL;
        const char *u = "untouched";

        g_assert_cmpint(fy_rpc_param_uuid(p, "lower", true, &u, &error), ==, 0);
        g_assert_cmpstr(u, ==, "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9");
        g_assert_cmpint(fy_rpc_param_uuid(p, "upper", true, &u, &error), ==, 0);
        g_assert_cmpstr(u, ==, "0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9");
        g_assert_no_error(error);

        u = "untouched";
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_assert_cmpint(fy_rpc_param_uuid(p, bad[i], true, &u, &error), ==, -EINVAL);
                assert_param_error(&error, bad[i]);
        }
        g_assert_cmpint(fy_rpc_param_uuid(nul, "u", true, &u, &error), ==, -EINVAL);
        assert_param_error(&error, "'u'");
        g_assert_cmpint(fy_rpc_param_uuid(p, "missing", true, &u, &error), ==, -EINVAL);
        assert_param_error(&error, "'missing'");
        g_assert_cmpint(fy_rpc_param_uuid(p, "missing", false, &u, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(u, ==, "untouched");
}

static void test_param_uint(void)
{
        g_autoptr(json_t) p = P("{\"int\":5, \"zero\":0, \"str\":\"123\", \"ten\":10, \"eleven\":\"11\","
                                " \"maxint\":9223372036854775807, \"maxstr\":\"18446744073709551615\","
                                " \"neg\":-1, \"negstr\":\"-1\", \"plus\":\"+1\", \"space\":\" 1\", \"trail\":\"1 \","
                                " \"over\":\"18446744073709551616\", \"hex\":\"0x10\", \"junk\":\"12abc\","
                                " \"empty\":\"\", \"real\":1.0, \"bool\":true, \"arr\":[1], \"null\":null}");
        static const char *bad[] = { "neg", "negstr", "plus", "space", "trail", "over", "hex", "junk",
                                     "empty", "real", "bool", "arr" };
        g_autoptr(GError) error = NULL;
        guint64 v = 4242;

        g_assert_cmpint(fy_rpc_param_uint(p, "int", true, 10, &v, &error), ==, 0);
        g_assert_cmpuint(v, ==, 5);
        g_assert_cmpint(fy_rpc_param_uint(p, "zero", true, 10, &v, &error), ==, 0);
        g_assert_cmpuint(v, ==, 0);
        g_assert_cmpint(fy_rpc_param_uint(p, "str", true, 1000, &v, &error), ==, 0);
        g_assert_cmpuint(v, ==, 123);
        g_assert_cmpint(fy_rpc_param_uint(p, "ten", true, 10, &v, &error), ==, 0);
        g_assert_cmpuint(v, ==, 10);
        g_assert_cmpint(fy_rpc_param_uint(p, "maxint", true, G_MAXUINT64, &v, &error), ==, 0);
        g_assert_cmpuint(v, ==, G_MAXINT64);
        g_assert_cmpint(fy_rpc_param_uint(p, "maxstr", true, G_MAXUINT64, &v, &error), ==, 0);
        g_assert_cmpuint(v, ==, G_MAXUINT64);
        g_assert_no_error(error);

        v = 4242;
        /* The limit applies to both spellings. */
        g_assert_cmpint(fy_rpc_param_uint(p, "ten", true, 9, &v, &error), ==, -EINVAL);
        assert_param_error(&error, "'ten'");
        g_assert_cmpint(fy_rpc_param_uint(p, "eleven", true, 10, &v, &error), ==, -EINVAL);
        assert_param_error(&error, "'eleven'");
        g_assert_cmpint(fy_rpc_param_uint(p, "maxstr", true, G_MAXUINT64 - 1, &v, &error), ==, -EINVAL);
        assert_param_error(&error, "'maxstr'");
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_assert_cmpint(fy_rpc_param_uint(p, bad[i], true, G_MAXUINT64, &v, &error), ==, -EINVAL);
                assert_param_error(&error, bad[i]);
        }
        g_assert_cmpint(fy_rpc_param_uint(p, "missing", true, 10, &v, &error), ==, -EINVAL);
        assert_param_error(&error, "'missing'");
        g_assert_cmpint(fy_rpc_param_uint(p, "null", true, 10, &v, &error), ==, -EINVAL);
        assert_param_error(&error, "'null'");
        g_assert_cmpint(fy_rpc_param_uint(p, "missing", false, 10, &v, &error), ==, 0);
        g_assert_cmpint(fy_rpc_param_uint(p, "null", false, 10, &v, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpuint(v, ==, 4242);
}

/* The message quoting a bad value stays valid UTF-8 (see test_error_message_utf8). */
static void test_param_uint_message_utf8(void)
{
        g_autoptr(GString) s = g_string_new("1");
        g_autoptr(json_t) p = NULL;
        g_autoptr(GError) error = NULL;
        guint64 v = 0;

        for (int i = 0; i < 20; i++)
                g_string_append(s, "\xc3\xa9");
        p = json_pack("{s:s}", "size", s->str);
        g_assert_cmpint(fy_rpc_param_uint(p, "size", true, 10, &v, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS);
        g_assert_true(g_utf8_validate(error->message, -1, NULL));
}

static void test_param_bool(void)
{
        g_autoptr(json_t) p = P("{\"t\":true, \"f\":false, \"ts\":\"true\", \"fs\":\"false\", \"TS\":\"TRUE\", \"FS\":\"False\","
                                " \"yes\":\"yes\", \"one\":1, \"zero\":0, \"empty\":\"\", \"obj\":{}, \"null\":null}");
        static const char *bad[] = { "yes", "one", "zero", "empty", "obj" };
        g_autoptr(GError) error = NULL;
        bool b;

        b = false;
        g_assert_cmpint(fy_rpc_param_bool(p, "t", true, &b, &error), ==, 0);
        g_assert_true(b);
        g_assert_cmpint(fy_rpc_param_bool(p, "f", true, &b, &error), ==, 0);
        g_assert_false(b);
        g_assert_cmpint(fy_rpc_param_bool(p, "ts", true, &b, &error), ==, 0);
        g_assert_true(b);
        g_assert_cmpint(fy_rpc_param_bool(p, "fs", true, &b, &error), ==, 0);
        g_assert_false(b);
        g_assert_cmpint(fy_rpc_param_bool(p, "TS", true, &b, &error), ==, 0);
        g_assert_true(b);
        g_assert_cmpint(fy_rpc_param_bool(p, "FS", true, &b, &error), ==, 0);
        g_assert_false(b);
        g_assert_no_error(error);

        b = true;
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_assert_cmpint(fy_rpc_param_bool(p, bad[i], true, &b, &error), ==, -EINVAL);
                assert_param_error(&error, bad[i]);
        }
        g_assert_cmpint(fy_rpc_param_bool(p, "missing", true, &b, &error), ==, -EINVAL);
        assert_param_error(&error, "'missing'");
        g_assert_cmpint(fy_rpc_param_bool(p, "missing", false, &b, &error), ==, 0);
        g_assert_cmpint(fy_rpc_param_bool(p, "null", false, &b, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_true(b);
}

static void test_param_object(void)
{
        g_autoptr(json_t) p = P("{\"o\":{\"a\":1}, \"e\":{}, \"arr\":[], \"s\":\"{}\", \"null\":null}");
        g_autoptr(GError) error = NULL;
        json_t *sentinel = json_object_get(p, "e");
        json_t *o = NULL;

        g_assert_cmpint(fy_rpc_param_object(p, "o", true, &o, &error), ==, 0);
        g_assert_true(o == json_object_get(p, "o"));
        g_assert_cmpint(fy_rpc_param_object(p, "e", true, &o, &error), ==, 0);
        g_assert_true(o == sentinel);
        g_assert_no_error(error);

        g_assert_cmpint(fy_rpc_param_object(p, "arr", true, &o, &error), ==, -EINVAL);
        assert_param_error(&error, "'arr'");
        g_assert_cmpint(fy_rpc_param_object(p, "s", false, &o, &error), ==, -EINVAL);
        assert_param_error(&error, "'s'");
        g_assert_cmpint(fy_rpc_param_object(p, "missing", true, &o, &error), ==, -EINVAL);
        assert_param_error(&error, "'missing'");
        g_assert_cmpint(fy_rpc_param_object(p, "missing", false, &o, &error), ==, 0);
        g_assert_cmpint(fy_rpc_param_object(p, "null", false, &o, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_true(o == sentinel);
}

int main(int argc, char **argv)
{
        int r;

        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/jsonrpc/single", test_single);
        g_test_add_func("/jsonrpc/handler-errors", test_handler_errors);
        g_test_add_func("/jsonrpc/notification", test_notification);
        g_test_add_func("/jsonrpc/batch", test_batch);
        g_test_add_func("/jsonrpc/batch-of-one", test_batch_of_one);
        g_test_add_func("/jsonrpc/batch-limits", test_batch_limits);
        g_test_add_func("/jsonrpc/parse-error", test_parse_error);
        g_test_add_func("/jsonrpc/invalid-request", test_invalid_request);
        g_test_add_func("/jsonrpc/method-name", test_method_name);
        g_test_add_func("/jsonrpc/params-shape", test_params_shape);
        g_test_add_func("/jsonrpc/async-single", test_async_single);
        g_test_add_func("/jsonrpc/async-batch", test_async_batch);
        g_test_add_func("/jsonrpc/error-message-utf8", test_error_message_utf8);
        g_test_add_func("/jsonrpc/param/string", test_param_string);
        g_test_add_func("/jsonrpc/param/uuid", test_param_uuid);
        g_test_add_func("/jsonrpc/param/uint", test_param_uint);
        g_test_add_func("/jsonrpc/param/uint-message-utf8", test_param_uint_message_utf8);
        g_test_add_func("/jsonrpc/param/bool", test_param_bool);
        g_test_add_func("/jsonrpc/param/object", test_param_object);
        r = g_test_run();
        if (later_calls)
                g_ptr_array_unref(later_calls);
        json_decref(recorded_params);
        return r;
}
