/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Routes of /api/vms and /api/templates. */
const struct engine_route *engine_api_vms_routes(size_t *ret_n);
