/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Routes of /api/jobs, /api/events, /api/options. */
const struct engine_route *engine_api_jobs_routes(size_t *ret_n);
