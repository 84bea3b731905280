/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Routes of /api/imagetransfers (the flow itself: flows/transfer.c). */
const struct engine_route *engine_api_transfers_routes(size_t *ret_n);
