/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Routes of /api/disks. */
const struct engine_route *engine_api_disks_routes(size_t *ret_n);
