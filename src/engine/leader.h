/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Several engines on one PostgreSQL database, one active (ARCHITECTURE.md,
 * "Several engines"). The active engine holds an advisory lock on a session
 * of its own and renews a heartbeat every second; every write it makes
 * carries its epoch (store.c's fence). A standby tries for the lock every
 * second, serves reads and sends writes to the active engine (307). On
 * SQLite the engine is always active and none of this runs.
 */
#include <stdbool.h>
#include <glib.h>

struct engine;

/* A leader that has not renewed its lease for this long (stopped, hung, cut off) has its sessions ended by a
 * standby, and with them the row locks its transactions held. */
#define ENGINE_LEADER_LEASE_S 5
/*
 * The longest a statement of the engine's main session may wait for a lock, or run, in ms. A lock held by
 * a stopped leader's transaction goes within the lease (its sessions are ended); 30 s more for the rest. A
 * statement blocked longer is stuck for a reason no takeover ends: it fails, like any store error, and the
 * main loop goes on. That is so on a standby, and on a leader only with leader_stall_timeout above 35 s:
 * with less (30 s by default) the leader gives the lead up first and the statement ends with its session.
 * So anything holding a table the leader's round needs longer than leader_stall_timeout (a migration's
 * ACCESS EXCLUSIVE lock) deposes the leader.
 */
#define ENGINE_LEADER_STATEMENT_LIMIT_MS ((ENGINE_LEADER_LEASE_S + 30) * 1000)

/* What the engine does when it becomes active, and when it must stop being so (it lost the lock or a
 * write found a newer epoch): the caller makes it a standby at once. */
struct engine_leader_hooks {
        int (*elected)(struct engine *e, GError **error);
        void (*deposed)(struct engine *e);
        /* The lock session was lost: stop acting now; resumed: the lock is ours again, same state. */
        void (*paused)(struct engine *e);
        void (*resumed)(struct engine *e);
};

/* Decides this engine's role: tries for leadership once (client: the name its database sessions carry,
 * url: where its REST API is reached), then keeps trying, or renewing, every second. */
int engine_leader_init(struct engine *e, const char *client, const char *url, const struct engine_leader_hooks *hooks,
                       GError **error);
/* One round now: a standby tries for the lock, the leader renews it. */
void engine_leader_round(struct engine *e);
void engine_leader_free(struct engine *e);
/* This engine runs the coordinator (always true on SQLite). */
bool engine_leader_active(struct engine *e);
/* Active, and its lease was renewed within the lease's length (a process stopped longer may have been
 * replaced: the coordinator skips its round until the leader's round has decided). Always true on SQLite. */
bool engine_leader_fresh(struct engine *e);
/* The active engine's REST URL as the leader row names it, NULL when unknown (from a step-down until a
 * standby round reads the next leader's); on the active engine, its own. */
const char *engine_leader_url(struct engine *e);
/* The epoch this engine leads (0: a standby, or SQLite). */
gint64 engine_leader_epoch(struct engine *e);
