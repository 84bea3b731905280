/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* Advances image transfers (ticket polls, finalize jobs, removals); every coordinator tick. */
void engine_transfers_tick(struct engine *e);
/* Answers the requests for /api/imagetransfers (true), or leaves them to the next (false). */
bool engine_rest_transfers(struct engine *e, SoupServerMessage *msg, char **seg, guint n);
