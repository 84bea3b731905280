/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdbool.h>

#include <jansson.h>

struct engine;

/*
 * Stall detection of a host job (copy, merge, sparsify) at each poll of its
 * status (status as the agent reports it, progress in percent). Flags a job
 * that runs without progress for stall_timeout; with stall_action = retry it
 * also marks the command's data "stall_abort": the runtime then aborts it and
 * retries its "aborted" end elsewhere (engine_stall_retry).
 */
void engine_stall_check(struct engine *e, json_t *cmd, const char *status, double progress);
/* The engine aborted this command's job for stalling and nobody cancelled it: its end is retried. */
bool engine_stall_abort(json_t *cmd);
