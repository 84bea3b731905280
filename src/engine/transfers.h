/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Advances image transfers (ticket polls, finalize jobs, removals); every coordinator tick. */
void engine_transfers_tick(struct engine *e);
/* Routes of /api/imagetransfers. */
const struct engine_route *engine_api_transfers_routes(size_t *ret_n);
