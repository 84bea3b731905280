/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* Serves the REST API (docs/rest-api.md) on listen_address:port. */
int engine_rest_start(struct engine *e, GError **error);
/* Closes the listener and every REST connection. */
void engine_rest_stop(struct engine *e);
