/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Host selection for data copies (scheduler.c over the pure policy in hostsched.c). */
#include "engine.h"

/* A copy on its way to a host: counted against it (a job and its bytes) before its row says so. */
struct engine_pick {
        char *host;
        double bytes;
};
struct engine_pick *engine_pick_new(const char *host, double bytes);
void engine_pick_free(struct engine_pick *p);
/*
 * A host job (copy, merge, sparsify) was recorded as sent to host: the picks
 * that follow in the same slice of a round count it (they share what the
 * slice read of the record before it). Outside a round, nothing to do.
 */
void engine_pick_sent(struct engine *e, const char *host, double bytes);
/* Picks the host for a data copy, never one listed in exclude (JSON array of host ids, may be NULL);
 * NULL when none is usable now. */
char *engine_pick_copy_host(struct engine *e, json_t *exclude);
/* The same for a copy of about `bytes` (0 = unknown): least_loaded then weighs where it finishes soonest.
 * `created` (engine_now() seconds, 0 = none) is when the copy began to look for a host: with it, NULL
 * also when the copy should wait for a busy fast host rather than take a free slow one (hostsched.h). */
char *engine_pick_copy_host_sized(struct engine *e, json_t *exclude, double bytes, gint64 created);
