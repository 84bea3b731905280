/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Host-local shared/exclusive locks on named resources ("sd:<uuid>",
 * "img:<sd>:<img>"), taken by job threads before a sanlock lease. A set is
 * always acquired in one global order (sorted by name) so two jobs can never
 * wait on each other.
 */

#include <stdbool.h>
#include <gio/gio.h>

struct agent_locks;

struct agent_lock_req {
        char *name;
        bool exclusive;
};

struct agent_locks *agent_locks_new(void);
void agent_locks_free(struct agent_locks *l);

/* Blocks until all are held or cancel triggers (-ECANCELED; nothing held then). reqs is sorted in place. */
int agent_locks_acquire(struct agent_locks *l, struct agent_lock_req *reqs, size_t n, GCancellable *cancel);
void agent_locks_release(struct agent_locks *l, const struct agent_lock_req *reqs, size_t n);
