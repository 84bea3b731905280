/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The engine's store: the inventory, the persistent commands, jobs and
 * events, behind typed functions per object. Nothing outside
 * src/engine/store/ writes SQL or calls a database library; a backend
 * (backend.h; SQLite first) plugs in under these functions.
 *
 * Conventions: a function that changes something returns 0 or -errno and
 * sets *error; its result must be used. A lookup returns a new reference
 * to the row (a JSON object, column -> value) or NULL: with *error set when
 * the store failed, without when there is no such row. A list returns an
 * array, or NULL with *error set.
 */
#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

#include "jsonrpc.h"      /* json_t autoptr */

#define STORE_MUST G_GNUC_WARN_UNUSED_RESULT

struct engine_store;

/* Told the table (as named in the SQL) each time a write changed rows of it; never does SQL itself. */
typedef void (*engine_store_change_fn)(void *data, const char *table);
void engine_store_set_change_fn(struct engine_store *st, engine_store_change_fn fn, void *data);

int engine_store_open(const char *location, struct engine_store **ret, GError **error) STORE_MUST;
void engine_store_close(struct engine_store *st);
const char *engine_store_backend_name(struct engine_store *st);
int engine_store_schema_version(struct engine_store *st);

/* Transactions nest; only the outermost commits. A failed commit rolls back. */
int engine_store_begin(struct engine_store *st, GError **error) STORE_MUST;
int engine_store_commit(struct engine_store *st, GError **error) STORE_MUST;
void engine_store_rollback(struct engine_store *st);

/* ---- data centers (hosts.c) ---- */
json_t *engine_store_dc_first(struct engine_store *st, GError **error) STORE_MUST;
json_t *engine_store_dc_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
json_t *engine_store_dc_list(struct engine_store *st, GError **error) STORE_MUST;
int engine_store_dc_insert(struct engine_store *st, const char *id, const char *name, const char *pool_id,
                           GError **error) STORE_MUST;
/* The SPM is host (with its lease version); host NULL: no SPM. */
int engine_store_dc_set_spm(struct engine_store *st, const char *dc, const char *host, gint64 lver,
                            GError **error) STORE_MUST;
/* The first storage domain becomes the master; later ones do not change it. */
int engine_store_dc_set_master_if_none(struct engine_store *st, const char *dc, const char *sd, GError **error) STORE_MUST;
/* {pool_id, spm_host, status, stats} of the data center and its recorded SPM host. */
json_t *engine_store_dc_spm(struct engine_store *st, const char *dc, GError **error) STORE_MUST;
/* {id} of the SPM host when it is up and pool-connected; NULL otherwise. */
json_t *engine_store_dc_spm_up(struct engine_store *st, const char *dc, GError **error) STORE_MUST;

/* ---- hosts (hosts.c) ---- */
json_t *engine_store_host_list(struct engine_store *st, GError **error) STORE_MUST;
json_t *engine_store_host_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
int engine_store_host_insert(struct engine_store *st, const char *id, const char *name, const char *address,
                             unsigned port, const char *dc, gint64 host_id, gint64 created, GError **error) STORE_MUST;
/* The sanlock host ids used in the data center, ascending ({host_id} rows). */
json_t *engine_store_host_ids(struct engine_store *st, const char *dc, GError **error) STORE_MUST;
/* After a start: every host not in maintenance is "connecting" and not pool-connected. */
int engine_store_hosts_reset(struct engine_store *st, GError **error) STORE_MUST;
/* -ENOENT when there is no such host. */
int engine_store_host_set_maintenance(struct engine_store *st, const char *id, bool maintenance, GError **error) STORE_MUST;
int engine_store_host_set_stats(struct engine_store *st, const char *id, json_t *stats, gint64 now, GError **error) STORE_MUST;
/* A status; "non_responsive" also drops the pool connection. */
int engine_store_host_set_status(struct engine_store *st, const char *id, const char *status, GError **error) STORE_MUST;
int engine_store_host_set_pool_connected(struct engine_store *st, const char *id, bool connected, GError **error) STORE_MUST;
/* Every host of the data center joins the pool again (a domain was added). */
int engine_store_hosts_pool_reconnect(struct engine_store *st, const char *dc, GError **error) STORE_MUST;
/* {id} rows of the hosts up, pool-connected and not in maintenance, by host id. */
json_t *engine_store_host_usable(struct engine_store *st, const char *dc, GError **error) STORE_MUST;
/* {id} of the first host that is up and not in maintenance. */
json_t *engine_store_host_first_up(struct engine_store *st, GError **error) STORE_MUST;

/* ---- storage domains (hosts.c) ---- */
/* All domains by name (of one data center when dc is not NULL). */
json_t *engine_store_sd_list(struct engine_store *st, const char *dc, GError **error) STORE_MUST;
json_t *engine_store_sd_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
json_t *engine_store_sd_get_by_name(struct engine_store *st, const char *name, GError **error) STORE_MUST;
int engine_store_sd_insert(struct engine_store *st, const char *id, const char *name, const char *dc, gint64 created,
                           GError **error) STORE_MUST;
int engine_store_sd_set_space(struct engine_store *st, const char *id, gint64 total, gint64 free_bytes,
                              GError **error) STORE_MUST;

/* ---- options, events (misc.c) ---- */
/* The stored value, or NULL (-ENOENT) when never set. */
int engine_store_option_get(struct engine_store *st, const char *name, char **ret, GError **error) STORE_MUST;
int engine_store_option_set(struct engine_store *st, const char *name, const char *value, GError **error) STORE_MUST;
/* command_id, correlation_id: what the event is about (each may be NULL); user: who caused it (NULL: the engine itself). */
int engine_store_event_add(struct engine_store *st, gint64 time, const char *severity, const char *message,
                           const char *command_id, const char *correlation_id, const char *user,
                           GError **error) STORE_MUST;
/* The newest events first, at most limit; only those of correlation_id unless it is NULL. */
json_t *engine_store_event_list(struct engine_store *st, const char *correlation_id, gint64 limit,
                                GError **error) STORE_MUST;
/* The correlation id of a job (NULL when it has none or is unknown; free with g_free). */
char *engine_store_job_correlation_id(struct engine_store *st, const char *job);
/* Running steps marked stalled (0 on an error). */
gint64 engine_store_steps_stalled(struct engine_store *st);
/* {type, phase, n}: the active commands counted by kind and phase. */
json_t *engine_store_command_counts(struct engine_store *st, GError **error) STORE_MUST;
/* {id, kind, stalled (0/1: a running step is)}: the running jobs, by the kind of the command that runs each ("other" for none), ordered by kind. */
json_t *engine_store_jobs_running(struct engine_store *st, GError **error) STORE_MUST;

/* ---- users and tokens (users.c): hashes only ---- */
/* {name, hash, role, created}, or NULL. */
json_t *engine_store_user_get(struct engine_store *st, const char *name, GError **error) STORE_MUST;
/* {name, role, created} rows by name (no hashes). */
json_t *engine_store_user_list(struct engine_store *st, GError **error) STORE_MUST;
/* -EEXIST when the name is taken. */
int engine_store_user_insert(struct engine_store *st, const char *name, const char *hash, const char *role,
                             gint64 created, GError **error) STORE_MUST;
/* New hash and/or role (NULL: unchanged) in one transaction that ends every token of the user; -ENOENT: no such user. */
int engine_store_user_update(struct engine_store *st, const char *name, const char *hash, const char *role,
                             GError **error) STORE_MUST;
/* The user and every token of theirs; -ENOENT when there is no such user. */
int engine_store_user_delete(struct engine_store *st, const char *name, GError **error) STORE_MUST;
/* Users in the store, or -EIO. */
gint64 engine_store_user_count(struct engine_store *st, GError **error) STORE_MUST;
#define ENGINE_STORE_TOKENS_PER_USER 100 /* beyond, a new token ends the user's oldest */
/* *ret_ended: how many of the user's oldest tokens the cap ended. */
int engine_store_token_insert(struct engine_store *st, const char *hash, const char *user, gint64 now,
                              unsigned *ret_ended, GError **error) STORE_MUST;
/* {user_name, created, last_used, role} of the token with that hash, or NULL. */
json_t *engine_store_token_get(struct engine_store *st, const char *hash, GError **error) STORE_MUST;
int engine_store_token_touch(struct engine_store *st, const char *hash, gint64 now, GError **error) STORE_MUST;
/* -ENOENT when there is no such token. */
int engine_store_token_delete(struct engine_store *st, const char *hash, GError **error) STORE_MUST;
/* Drops the tokens idle since before idle_before or created before created_before. */
int engine_store_tokens_expire(struct engine_store *st, gint64 idle_before, gint64 created_before,
                               GError **error) STORE_MUST;

/* ---- disks and volumes (disks.c) ---- */
/* The volume rows of a disk on a domain, base first. */
json_t *engine_store_volume_list(struct engine_store *st, const char *disk, const char *sd, GError **error) STORE_MUST;
/* Whether a disk or volume row names the image on that domain, or an active command other than except_command
 * names the image anywhere in its params or data. */
int engine_store_image_in_use(struct engine_store *st, const char *sd, const char *img, const char *except_command,
                              bool *ret, GError **error) STORE_MUST;

/* ---- snapshots: removal (merge), restore; the locks of a flow's job (snapshots.c) ---- */
/* The VM's snapshot rows, oldest first. */
json_t *engine_store_snapshot_list(struct engine_store *st, const char *vm, GError **error) STORE_MUST;
/* Sets status and job (NULL clears it), and the disks list unless disks is NULL. */
int engine_store_snapshot_set(struct engine_store *st, const char *id, const char *status, const char *job,
                              json_t *disks, GError **error) STORE_MUST;
int engine_store_snapshot_delete(struct engine_store *st, const char *id, GError **error) STORE_MUST;
/* After a disk's cold merge: top's row gone, its child on base, positions closed up, base as large as top
 * was, the disk's format the leaf's, the VM's snapshots that named top name base. Idempotent. */
int engine_store_merge_apply(struct engine_store *st, const char *vm, const char *disk, const char *sd, const char *top,
                             const char *base, GError **error) STORE_MUST;
/* After a disk's restore: every row above base gone; leaf (a qcow2 volume on base) added, or base the leaf
 * when leaf is NULL. */
int engine_store_restore_apply(struct engine_store *st, const char *disk, const char *sd, const char *base,
                               const char *leaf, gint64 capacity, GError **error) STORE_MUST;
int engine_store_disk_set_status(struct engine_store *st, const char *disk, const char *status,
                                 GError **error) STORE_MUST;
/* The disks the job locked back to ok; the VM too (vm may be NULL). */
int engine_store_job_unlock(struct engine_store *st, const char *job, const char *vm, GError **error) STORE_MUST;
/* status: finished, failed or aborted. */
int engine_store_job_end(struct engine_store *st, const char *job, const char *status, gint64 now,
                         GError **error) STORE_MUST;

/* ---- what the scheduler counts (commands.c) ---- */
/* The command's row, or NULL (no such command). */
json_t *engine_store_command_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
/* Who started the command (a user name), or NULL: the engine itself, or no such command. */
char *engine_store_command_user(struct engine_store *st, const char *id);
/* Copies, merges and sparsifies (host jobs) recorded as sent to host, and the bytes they still have to move by their steps' progress. */
/* Rows {host, n: copies, b: bytes left}, one per host. */
int engine_store_copy_loads(struct engine_store *st, json_t **ret_rows, GError **error) STORE_MUST;
/* Copies created before `created` (engine clock seconds) that are still without a host. */
int engine_store_copies_waiting_before(struct engine_store *st, gint64 created, gint64 *ret_n,
                                       GError **error) STORE_MUST;
