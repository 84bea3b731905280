/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* JSON in and out of the REST API (http.c), for every resource file. */
#include "engine.h"

void engine_rest_reply_json(SoupServerMessage *msg, int status, json_t *body);
/* {"fault": {"reason", "detail"}}. */
json_t *engine_rest_fault(int status, const char *detail);
/* {"fault": {"reason", "detail"}} with the HTTP status. */
void engine_rest_reply_fault(SoupServerMessage *msg, int status, const char *detail);
/* An ENGINE_ERROR's code is the HTTP status; any other error is a 500. */
void engine_rest_reply_error(SoupServerMessage *msg, const GError *error);
/* The request body as a JSON object, or NULL after replying 400/415. */
json_t *engine_rest_body(struct engine *e, SoupServerMessage *msg);
bool engine_rest_method_is(SoupServerMessage *msg, const char *m);
