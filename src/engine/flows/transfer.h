/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* The image-transfer flow (flows/transfer.c); its REST face is api_transfers.c. */
#include <stdbool.h>

#include <glib.h>
#include <jansson.h>

#include "engine.h"

/* finished_success, finished_failure or cancelled: nothing more happens to the transfer. */
bool engine_transfer_is_final(const char *phase);

/* The outcome of adding the ticket: 201 (started; row is the transfer as recorded) or an HTTP status and why. */
typedef void (*engine_transfer_started_fn)(struct engine *e, int status, json_t *row, const char *why, void *userdata);

/*
 * Records the transfer, its job, the disk locked (an upload's volume
 * ILLEGAL) in one transaction, then asks t->host to add the ticket for
 * file (a file:// URL of the volume); done runs with the outcome. false
 * with *error when nothing was recorded (done does not run).
 */
bool engine_transfer_start(struct engine *e, const struct engine_store_transfer *t, bool sparse, const char *file,
                           const char *description, engine_transfer_started_fn done, void *userdata, GError **error);
/* Finalize / cancel as a client asked: the transfer's row after the change, or NULL with *error (404, 409). */
json_t *engine_transfer_finalize(struct engine *e, const char *id, GError **error);
json_t *engine_transfer_cancel(struct engine *e, const char *id, GError **error);
/* Advances every open transfer (ticket polls, the finalize's end, ticket removals); every coordinator tick. */
void engine_transfers_tick(struct engine *e);
