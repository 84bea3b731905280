/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "jsonrpc.h"

/* The verb table of DESIGN §4, names and parameters as in VDSM's vdsm-api.yml. */
extern const struct fy_rpc_method agent_api_methods[];
