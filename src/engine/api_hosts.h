/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Routes of /api/datacenters, /api/hosts, /api/storagedomains. */
const struct engine_route *engine_api_hosts_routes(size_t *ret_n);
