/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Prometheus metrics of this host at /metrics on metrics_port (off when 0):
 * HTTPS with the agent's certificate unless insecure, plain HTTP otherwise;
 * no client certificate is asked (the figures are no secret; a scraper
 * verifies the agent with tls_ca). Every name is listed in ARCHITECTURE.md.
 * The storage domains' space is read in a worker thread, so a hung mount
 * delays only the scrape, never the agent's main loop.
 */

#include <glib.h>

struct agent;
struct fy_rpc_dispatcher;

/* Main thread. 0 when metrics_port is 0. */
int agent_metrics_start(struct agent *a, struct fy_rpc_dispatcher *dispatcher, GError **error);
void agent_metrics_stop(struct agent *a);
