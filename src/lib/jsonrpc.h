/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * JSON-RPC 2.0 dispatcher (https://www.jsonrpc.org/specification) with the
 * VDSM error shape {"code", "message"}. A message is one request or a batch
 * (array); the reply goes out once every call of the message has completed,
 * as an array for a batch. Handlers may complete their call later (after
 * work in a thread), but always from the dispatcher's thread.
 */

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

#define FY_RPC_MAX_BATCH 100

struct fy_rpc_call;
struct fy_rpc_dispatcher;
typedef struct fy_rpc_dispatcher fy_rpc_dispatcher;

G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_t, json_decref)

/* params is borrowed for the duration of the handler (never NULL: {} when absent). */
typedef void (*fy_rpc_handler_fn)(struct fy_rpc_call *call, json_t *params, void *userdata);

struct fy_rpc_method {
        const char *name;              /* "Namespace.verb" */
        fy_rpc_handler_fn handler;
};

/* Called once per message with the serialized reply, or NULL when nothing is due (notifications only). */
typedef void (*fy_rpc_reply_fn)(const char *reply, void *ctx);

/* methods: array ending with {NULL, NULL}; must outlive the dispatcher. */
struct fy_rpc_dispatcher *fy_rpc_dispatcher_new(const struct fy_rpc_method *methods, void *userdata);
void fy_rpc_dispatcher_free(struct fy_rpc_dispatcher *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(fy_rpc_dispatcher, fy_rpc_dispatcher_free)

/* ctx_free (may be NULL) is called after reply. */
void fy_rpc_dispatch(struct fy_rpc_dispatcher *d, const char *body, size_t len,
                     fy_rpc_reply_fn reply, void *ctx, GDestroyNotify ctx_free);

/*
 * The same for a request that carries VDSM's flow id (the STOMP header
 * ovirtCorrelationId, vdsm-client's --flow-id). A valid id (see
 * fy_log_correlation_id_valid) is this thread's log correlation id while
 * each handler runs, and START/FINISH of each call are logged with it; an
 * invalid one is dropped with a warning.
 */
void fy_rpc_dispatch_flow(struct fy_rpc_dispatcher *d, const char *body, size_t len, const char *flow_id,
                          fy_rpc_reply_fn reply, void *ctx, GDestroyNotify ctx_free);

/* Calls completed per method ("other" for unknown methods) and how many of them were errors. */
typedef void (*fy_rpc_stat_fn)(const char *method, guint64 calls, guint64 errors, void *userdata);
void fy_rpc_dispatcher_foreach_stat(struct fy_rpc_dispatcher *d, fy_rpc_stat_fn fn, void *userdata);

/* Completes a call; exactly one of these per call. result is stolen (NULL → JSON null). */
void fy_rpc_call_return(struct fy_rpc_call *call, json_t *result);
void fy_rpc_call_error(struct fy_rpc_call *call, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
void fy_rpc_call_gerror(struct fy_rpc_call *call, const GError *error);
/* {method: calls} of every method the call's dispatcher has run so far (this call included), from
 * the same counters as fy_rpc_dispatcher_foreach_stat. */
json_t *fy_rpc_call_counts(const struct fy_rpc_call *call);
const char *fy_rpc_call_method(const struct fy_rpc_call *call);
/* The request's flow id, NULL if none. */
const char *fy_rpc_call_flow_id(const struct fy_rpc_call *call);
/* The method whose handler runs now on this thread (the table's string), NULL outside handlers. */
const char *fy_rpc_current_method(void);

/*
 * Parameter helpers for handlers. Each returns 0 or -EINVAL with *error set
 * to an InvalidParams error naming the parameter. A missing optional
 * parameter leaves *ret untouched and returns 0.
 */
int fy_rpc_param_string(json_t *params, const char *name, bool required, size_t max_len,
                        const char **ret, GError **error);
int fy_rpc_param_uuid(json_t *params, const char *name, bool required, const char **ret, GError **error);
/* Accepts a JSON integer or a decimal string (VDSM sends sizes as strings). */
int fy_rpc_param_uint(json_t *params, const char *name, bool required, guint64 max,
                      guint64 *ret, GError **error);
int fy_rpc_param_bool(json_t *params, const char *name, bool required, bool *ret, GError **error);
int fy_rpc_param_object(json_t *params, const char *name, bool required, json_t **ret, GError **error);
