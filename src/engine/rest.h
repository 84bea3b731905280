/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "http.h"

/* Serves the REST API (docs/rest-api.md) on listen_address:port. */
int engine_rest_start(struct engine *e, GError **error);
/* Closes the listener and every REST connection. */
void engine_rest_stop(struct engine *e);

/* Row i of the route table (every resource's rows in turn), NULL past the end: for tests and docs. */
const struct engine_route *engine_rest_route_at(size_t i);
/*
 * The row whose pattern the path (starting "/api/") and method match, with
 * the {…} segments in args (pointers into buf, of at least 513 bytes);
 * NULL when none does, *ret_path_known then says whether another method would.
 */
const struct engine_route *engine_rest_route_find(const char *method, const char *path, char **args,
                                                  bool *ret_path_known, char *buf, size_t size);
