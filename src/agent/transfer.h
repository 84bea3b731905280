/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Image transfers, the ovirt-imageio way: the engine adds a ticket that
 * binds a random uuid to one volume of this host's storage, and a client
 * reads or writes the volume file's bytes over HTTP(S) at
 * /images/<ticket-uuid> on the agent's transfer port. Tickets live in the
 * main thread; file I/O runs in GTask worker threads.
 *
 * A write ticket holds the volume's host-local locks and its sanlock lease
 * from Host.add_image_ticket until the ticket is removed or finalized, and
 * keeps the volume ILLEGAL meanwhile. Host.finalize_image_ticket is a job:
 * it verifies the content and then writes LEGAL with the next generation
 * in one metadata write, so the engine learns the outcome like a copy's.
 */

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

#include "jsonrpc.h"
#include "transferparse.h"

/* An uploaded qcow2 file may be larger than its virtual size (metadata); never more than this over it. */
#define AGENT_TICKET_QCOW2_SLACK(cap) ((cap) + (G_GUINT64_CONSTANT(1) << 30))
/* Error code of ticket failures (VDSM's ImageDaemonError). */
#define AGENT_ERR_TICKET 482

struct agent;
struct agent_transfers;

/* Starts the HTTP(S) endpoint on config.transfer_port (0 picks one). */
int agent_transfers_start(struct agent *a, GError **error);
/* Stops serving and waits for file I/O in progress (before the jobs stop). */
void agent_transfers_stop(struct agent *a);
/* Blocking: releases every remaining ticket's lease and locks (volumes stay ILLEGAL), frees the table. */
void agent_transfers_free(struct agent *a);
/* Adds transfer_port, transfer_scheme and transfer_tickets to a Host.getCapabilities/getStats answer. */
void agent_transfers_describe(struct agent *a, json_t *obj);

/* Verbs: Host.add_image_ticket, Host.get_image_ticket, Host.remove_image_ticket, Host.finalize_image_ticket. */
void agent_transfer_add_ticket(struct fy_rpc_call *call, json_t *params, void *userdata);
void agent_transfer_get_ticket(struct fy_rpc_call *call, json_t *params, void *userdata);
void agent_transfer_remove_ticket(struct fy_rpc_call *call, json_t *params, void *userdata);
void agent_transfer_finalize_ticket(struct fy_rpc_call *call, json_t *params, void *userdata);
