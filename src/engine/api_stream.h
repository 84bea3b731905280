/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* GET /api/events/stream: the inventory's changes pushed as Server-Sent Events (the web UI's live updates). */
#include "http.h"

const struct engine_route *engine_api_stream_routes(size_t *ret_n);
/* Listens to the store's writes; before the REST server starts. */
void engine_stream_start(struct engine *e);
/* Ends every stream (engine shutdown). */
void engine_stream_stop(struct engine *e);
