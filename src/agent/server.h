/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * STOMP 1.2 server carrying JSON-RPC, as VDSM serves it (DESIGN §4): plain
 * TCP for development or TLS with mutual certificates. Main thread only.
 */

#include <gio/gio.h>

#define AGENT_REQUEST_DESTINATION "jms.topic.vdsm_requests"
#define AGENT_DEFAULT_REPLY_DESTINATION "jms.topic.vdsm_responses"
#define AGENT_EVENTS_DESTINATION "jms.queue.events"

struct agent;
struct agent_server;
struct fy_rpc_dispatcher;

struct agent_server *agent_server_new(struct agent *agent, struct fy_rpc_dispatcher *dispatcher, GError **error);
void agent_server_free(struct agent_server *s);
guint16 agent_server_port(struct agent_server *s);
/* Sends body as a MESSAGE to every subscription of destination, on every connection. */
void agent_server_broadcast(struct agent_server *s, const char *destination, const char *body);
