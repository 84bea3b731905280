/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Asynchronous JSON-RPC 2.0 over STOMP 1.2 client, the engine's side of the
 * agent API (DESIGN §4). One client = one agent = one connection, driven
 * from the GLib main context that is thread-default where the client was
 * created; every callback runs there, never from inside fy_rpc_client_call()
 * or another client function except fy_rpc_client_free(). Not thread-safe:
 * use a client from that context's thread only. No logging: failures reach
 * the caller as GErrors.
 *
 * The connection is opened lazily by the first call and reopened by the next
 * call after it failed or closed; there is no automatic retry or back-off,
 * that policy belongs to the caller.
 */

#include <stdbool.h>
#include <gio/gio.h>
#include <jansson.h>

/* Calls accepted and not yet completed (queued + awaiting a reply). */
#define FY_RPC_CLIENT_MAX_PENDING 1024
/* Urgent calls (fy_rpc_client_call_urgent) accepted beyond MAX_PENDING. */
#define FY_RPC_CLIENT_URGENT_RESERVE 16
/* Requests on the wire awaiting a reply: the agent's per-connection limit. */
#define FY_RPC_CLIENT_MAX_INFLIGHT 64
/* One serialized request; the agent's default max_frame is 4 MiB. */
#define FY_RPC_CLIENT_MAX_REQUEST (4u * 1024 * 1024)
/* Serialized requests waiting to be written, all calls together. */
#define FY_RPC_CLIENT_MAX_QUEUED_BYTES (64u * 1024 * 1024)
/* One incoming STOMP frame (a reply such as Host.getJobs can be large). */
#define FY_RPC_CLIENT_MAX_FRAME (64u * 1024 * 1024)
#define FY_RPC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define FY_RPC_CLIENT_DEFAULT_CALL_TIMEOUT_MS 60000

#define FY_RPC_CLIENT_REQUEST_DESTINATION "jms.topic.vdsm_requests"
#define FY_RPC_CLIENT_EVENTS_DESTINATION "jms.queue.events"

struct fy_rpc_client_options {
        const char *host;
        guint16 port;
        /*
         * All NULL: plain TCP. Otherwise all three: the client presents
         * tls_cert/tls_key and accepts a server whose certificate chains to
         * tls_ca AND names (subjectAltName, DNS or IP) the host connected to
         * or one of tls_names. The engine passes a host's registered name and
         * address: a certificate the CA issued to another host is refused.
         */
        const char *tls_cert;
        const char *tls_key;
        const char *tls_ca;
        const char *const *tls_names;  /* more accepted identities, NULL-terminated; may be NULL */
        unsigned connect_timeout_ms;   /* TCP + TLS + CONNECTED; 0 = FY_RPC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS */
        unsigned heartbeat_ms;         /* ask the server for heart-beats this often; 0 = none.
                                        * Silence for 2 intervals + 1 s closes the connection. */
        bool subscribe_events;         /* SUBSCRIBE jms.queue.events; notifications go to on_event */
};

struct fy_rpc_client;
typedef struct fy_rpc_client fy_rpc_client;

/*
 * Exactly one of result/error is non-NULL; result is borrowed (a JSON null
 * result is json_null(), not NULL). error is in FY_ERROR with the server's
 * code and message for a JSON-RPC error reply, else in G_IO_ERROR:
 * TIMED_OUT (call or connect timeout, dead heart-beat), CONNECTION_CLOSED,
 * CONNECTION_REFUSED and other socket/TLS errors, FAILED (a STOMP ERROR
 * frame, with the server's message), INVALID_DATA (malformed STOMP or reply),
 * MESSAGE_TOO_LARGE / BUSY (limits above, reported at once),
 * INVALID_ARGUMENT (params not serializable), CANCELLED
 * (fy_rpc_client_free()).
 */
typedef void (*fy_rpc_client_reply_fn)(json_t *result, const GError *error, void *userdata);
/* A notification (JSON-RPC request without id), e.g. "|jobs|status|<job_id>". params borrowed, never NULL. */
typedef void (*fy_rpc_client_event_fn)(const char *method, json_t *params, void *userdata);
/* The connection closed or failed to open; error says why. Pending calls have already failed. */
typedef void (*fy_rpc_client_disconnect_fn)(const GError *error, void *userdata);

/* on_event may be NULL. Copies the options' strings. Does not connect yet. */
struct fy_rpc_client *fy_rpc_client_new(const struct fy_rpc_client_options *o,
                                        fy_rpc_client_event_fn on_event, void *userdata);
/*
 * Completes every pending call with G_IO_ERROR_CANCELLED before it returns
 * and calls no callback afterwards. May be called from a callback.
 */
void fy_rpc_client_free(struct fy_rpc_client *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(fy_rpc_client, fy_rpc_client_free)

/*
 * Called with the same userdata as on_event, after the pending calls have
 * failed (a callback of theirs may already have started a new connection);
 * NULL to unset. Lets an event subscriber notice it may have missed events.
 */
void fy_rpc_client_set_disconnect_fn(struct fy_rpc_client *c, fy_rpc_client_disconnect_fn on_disconnect);

/*
 * Sends "method" with params (stolen; NULL = no params) and calls cb once
 * with the outcome, always later from the main context, errors included
 * (cb may be NULL to ignore it). A call refused at once (limits) is queued
 * for an idle callback: a caller that never returns to the main loop while
 * calling in a loop grows that queue.
 * The calling thread's log correlation id (fy_log_context_set), if any,
 * goes with the request as VDSM's flow id (STOMP header ovirtCorrelationId).
 * timeout_ms counts from now (connecting included); 0 =
 * FY_RPC_CLIENT_DEFAULT_CALL_TIMEOUT_MS. A reply arriving after the timeout
 * is dropped.
 */
void fy_rpc_client_call(struct fy_rpc_client *c, const char *method, json_t *params,
                        unsigned timeout_ms, fy_rpc_client_reply_fn cb, void *userdata);

/*
 * As fy_rpc_client_call(), but the request is written before every
 * ordinary call not yet written (urgent calls keep their order among
 * themselves), and FY_RPC_CLIENT_URGENT_RESERVE of them are accepted beyond
 * FY_RPC_CLIENT_MAX_PENDING and the queued-bytes limit. For monitoring
 * (a host's poll) that must not wait behind a burst of work calls for a
 * slot of the agent's in-flight window; it still waits for one slot.
 */
void fy_rpc_client_call_urgent(struct fy_rpc_client *c, const char *method, json_t *params,
                               unsigned timeout_ms, fy_rpc_client_reply_fn cb, void *userdata);

/* True once CONNECTED arrived and until the connection fails or closes. */
bool fy_rpc_client_is_connected(struct fy_rpc_client *c);
