/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Prometheus metrics of this host at /metrics on metrics_port (off when 0):
 * HTTPS with the agent's certificate unless insecure, plain HTTP otherwise;
 * no client certificate is asked (the figures are no secret; a scraper
 * verifies the agent with tls_ca). Every name is listed in ARCHITECTURE.md.
 * Each storage domain's space is read by a thread of its own, at most one
 * at a time per domain; a scrape waits up to a second for them and answers
 * with the last figures of a domain whose read hangs (its
 * ferry_agent_storage_domain_stat_stale is 1), so a hung mount affects only
 * its own series, never the other metrics or the agent's main loop.
 */

#include <glib.h>

struct agent;
struct fy_rpc_dispatcher;

/* Main thread. 0 when metrics_port is 0. */
int agent_metrics_start(struct agent *a, struct fy_rpc_dispatcher *dispatcher, GError **error);
void agent_metrics_stop(struct agent *a);
