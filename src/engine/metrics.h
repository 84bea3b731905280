/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The engine's Prometheus metrics (GET /metrics on the REST listener, in the
 * text format of src/lib/prom.c). Gauges are read from the inventory and the
 * hosts' last stats at each scrape; what happens between scrapes (fences,
 * retries, stalls, REST requests, main-loop lag) is counted here as it happens.
 * Every label value comes from a bounded set: host and domain names of the
 * inventory, command kinds and phases, route patterns (never raw paths).
 */
#include "http.h"

/* Starts the main-loop lag probe. */
void engine_metrics_init(struct engine *e);
void engine_metrics_free(struct engine *e);

/* A copy's host was fenced (its lease generation bumped). */
void engine_metrics_count_fence(void);
/* A leaf command (kind name) is tried again. */
void engine_metrics_count_retry(const char *kind);
/* A running step was found stalled. */
void engine_metrics_count_stall(void);

/* Times msg until it is answered, under its route's pattern ("unmatched" for none). */
void engine_metrics_request_start(SoupServerMessage *msg, const char *method, const char *pattern);

/* The /metrics row of the route table. */
const struct engine_route *engine_metrics_routes(size_t *ret_n);
