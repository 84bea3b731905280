/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* The REST layer's helpers (rest.c) for resources kept in their own files. */
#include "engine.h"

void engine_rest_reply_json(SoupServerMessage *msg, int status, json_t *body);
/* {"fault": {"reason", "detail"}} with the HTTP status. */
void engine_rest_reply_fault(SoupServerMessage *msg, int status, const char *detail);
/* An ENGINE_ERROR's code is the HTTP status; any other error is a 500. */
void engine_rest_reply_error(SoupServerMessage *msg, const GError *error);
/* The request body as a JSON object, or NULL after replying 400/415. */
json_t *engine_rest_body(struct engine *e, SoupServerMessage *msg);
bool engine_rest_method_is(SoupServerMessage *msg, const char *m);
/*
 * The REST server (resttls.c): HTTPS with tls_cert/tls_key unless insecure,
 * security headers on every response, a JSON fault for what libsoup refuses
 * before routing.
 */
SoupServer *engine_rest_server_new(struct engine *e, GError **error);
/* A disk row as the API shows it (with its volumes when asked). */
json_t *engine_rest_disk_json(struct engine *e, json_t *row, bool with_volumes);

/*
 * Route hooks: each answers the requests for its resources and returns
 * true, or returns false to let the next one try. seg are the path
 * segments after /api/ (n ≤ 4).
 */
bool engine_rest_vms(struct engine *e, SoupServerMessage *msg, char **seg, guint n);       /* vms.c */
bool engine_rest_transfers(struct engine *e, SoupServerMessage *msg, char **seg, guint n); /* transfers.c */
/* Advances image transfers (ticket polls, finalize jobs, removals); every coordinator tick. */
void engine_transfers_tick(struct engine *e);
