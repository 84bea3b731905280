/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Rows of /api/users (admin only). */
const struct engine_route *engine_api_users_routes(size_t *ret_n);
