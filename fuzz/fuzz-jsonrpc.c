/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Dispatches the input as one JSON-RPC message through a dispatcher whose
 * methods validate their parameters with the helpers, fail, or complete
 * later (out of order). Whatever the input, the reply must come exactly once
 * and be valid JSON-RPC 2.0: an object, or a non-empty array of objects, each
 * with "jsonrpc": "2.0", an "id" and exactly one of "result" / "error".
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include <jansson.h>

#include "error.h"
#include "jsonrpc.h"

struct fuzz_ctx {
        int replies;
        int frees;
        bool got_reply;
};

static GPtrArray *later;               /* calls completed after dispatch */

static void h_check(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        g_autoptr(GError) error = NULL;
        const char *name = NULL, *uuid = NULL;
        guint64 size = 0;
        bool force = false;
        json_t *opts = NULL;

        (void) userdata;
        if (fy_rpc_param_string(params, "name", false, 64, &name, &error) < 0 ||
            fy_rpc_param_uuid(params, "uuid", false, &uuid, &error) < 0 ||
            fy_rpc_param_uint(params, "size", false, G_MAXUINT64 / 2, &size, &error) < 0 ||
            fy_rpc_param_bool(params, "force", false, &force, &error) < 0 ||
            fy_rpc_param_object(params, "opts", false, &opts, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        fy_rpc_call_return(call, json_pack("{s:s?, s:s?, s:I, s:b, s:O?}",
                                           "name", name, "uuid", uuid, "size", (json_int_t) size,
                                           "force", force, "opts", opts));
}

static void h_fail(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        (void) params;
        (void) userdata;
        fy_rpc_call_error(call, FY_ERR_GENERAL, "failed on purpose");
}

static void h_later(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        (void) params;
        (void) userdata;
        g_ptr_array_add(later, call);
}

static const struct fy_rpc_method methods[] = {
        { "Test.check", h_check },
        { "Test.fail", h_fail },
        { "Test.later", h_later },
        { NULL, NULL },
};

static void check_response(json_t *r)
{
        json_t *id, *result, *error;

        if (!json_is_object(r))
                abort();
        if (!json_is_string(json_object_get(r, "jsonrpc")) ||
            strcmp(json_string_value(json_object_get(r, "jsonrpc")), "2.0") != 0)
                abort();
        id = json_object_get(r, "id");
        if (!id || !(json_is_string(id) || json_is_integer(id) || json_is_null(id)))
                abort();
        result = json_object_get(r, "result");
        error = json_object_get(r, "error");
        if (!result == !error)
                abort();
        if (json_object_size(r) != 3)
                abort();
        if (error && (!json_is_object(error) ||
                      !json_is_integer(json_object_get(error, "code")) ||
                      !json_is_string(json_object_get(error, "message"))))
                abort();
}

static void on_reply(const char *reply, void *ctx)
{
        struct fuzz_ctx *c = ctx;
        json_t *v;

        if (c->frees != 0)
                abort();
        c->replies++;
        c->got_reply = reply != NULL;
        if (!reply)
                return;
        v = json_loads(reply, 0, NULL);
        if (!v)
                abort();
        if (json_is_array(v)) {
                size_t i;
                json_t *r;

                if (json_array_size(v) == 0 || json_array_size(v) > FY_RPC_MAX_BATCH)
                        abort();
                json_array_foreach(v, i, r)
                        check_response(r);
        } else {
                check_response(v);
        }
        json_decref(v);
}

static void on_free(void *ctx)
{
        ((struct fuzz_ctx *) ctx)->frees++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autoptr(fy_rpc_dispatcher) d = fy_rpc_dispatcher_new(methods, NULL);
        struct fuzz_ctx c = { 0 };
        json_t *root;
        bool reply_due;

        if (!later)
                later = g_ptr_array_new();

        fy_rpc_dispatch(d, (const char *) data, size, on_reply, &c, on_free);
        /* Complete the deferred calls last first: replies keep request order regardless. */
        while (later->len > 0) {
                if (c.replies != 0)
                        abort();
                fy_rpc_call_return(g_ptr_array_steal_index(later, later->len - 1), json_true());
        }
        if (c.replies != 1 || c.frees != 1)
                abort();

        /*
         * Nothing is due only for notifications: anything that is not JSON,
         * and any single object carrying an "id", must be answered.
         */
        root = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES, NULL);
        reply_due = !root || (json_is_object(root) && json_object_get(root, "id")) ||
                    (json_is_array(root) && (json_array_size(root) == 0 ||
                                             json_array_size(root) > FY_RPC_MAX_BATCH));
        json_decref(root);
        if (reply_due && !c.got_reply)
                abort();
        return 0;
}
