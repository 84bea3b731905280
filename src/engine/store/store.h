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
/* Told each time changes became durable: a write outside a transaction, an outermost commit. The
 * unit tests of flows (tests/unit/test-flows.c) take their crash points there. */
typedef void (*engine_store_commit_fn)(void *data);
void engine_store_set_commit_fn(struct engine_store *st, engine_store_commit_fn fn, void *data);

int engine_store_open(const char *location, struct engine_store **ret, GError **error) STORE_MUST;
/* client: the name the connection gives the server (PostgreSQL's application_name; NULL: the default). */
int engine_store_open_as(const char *location, const char *client, struct engine_store **ret,
                         GError **error) STORE_MUST;
/*
 * One engine per SQLite file: takes flock(LOCK_EX|LOCK_NB) on "<location>.lock"
 * and keeps *ret_fd open (close-on-exec) for the process's life. -EBUSY, with
 * an error naming the file, when another process holds it. A PostgreSQL
 * location, ":memory:" or "" (private databases) need none: *ret_fd = -1.
 */
int engine_store_lock_sole(const char *location, int *ret_fd, GError **error) STORE_MUST;
void engine_store_close(struct engine_store *st);
const char *engine_store_backend_name(struct engine_store *st);
/* For messages: the file, or "postgresql dbname@host:port" (never a password). */
const char *engine_store_describe(struct engine_store *st);
int engine_store_schema_version(struct engine_store *st);
/*
 * PostgreSQL: every statement of this store may wait for a lock at most lock_timeout_ms and run at most
 * statement_timeout_ms (0: no limit), from now on and on every connection a reconnect makes. Outside a
 * transaction. SQLite: nothing to do (its one writer never waits on another engine), 0.
 */
int engine_store_set_limits(struct engine_store *st, unsigned lock_timeout_ms, unsigned statement_timeout_ms,
                            GError **error) STORE_MUST;

/* Transactions nest; only the outermost commits. A write that failed inside a transaction makes its
 * commit roll back and fail: all or nothing. */
int engine_store_begin(struct engine_store *st, GError **error) STORE_MUST;
int engine_store_commit(struct engine_store *st, GError **error) STORE_MUST;
void engine_store_rollback(struct engine_store *st);

/* ---- leadership of several engines on one PostgreSQL database (leader.c) ---- */
/* Told (once per refused write) that a write found a newer leadership epoch: this engine was deposed. */
typedef void (*engine_store_deposed_fn)(void *data);
/* From now on every write but users' and tokens' must come from the leader of epoch (0: none passes):
 * a write of a deposed leader fails with -ESTALE and tells fn. */
void engine_store_set_fence(struct engine_store *st, gint64 epoch, engine_store_deposed_fn fn, void *data);
/* Several engines can share this database (PostgreSQL); false: one engine only (SQLite). */
bool engine_store_shared(struct engine_store *st);
/* On the leadership session (a store of its own): creates the leader row's table if needed. */
int engine_store_leader_prepare(struct engine_store *lock, GError **error) STORE_MUST;
/* Tries to become the leader: 1 and *ret_epoch (the new epoch) when this session took the lock and
 * incremented the epoch, 0 when another engine leads. A leader whose heartbeat is older than
 * lease_s seconds (stopped, or cut off) has its sessions ended, so the next try can win. */
int engine_store_leader_try(struct engine_store *lock, const char *engine_id, const char *url, gint64 lease_s,
                            gint64 *ret_epoch, GError **error) STORE_MUST;
/* A leader whose lock session ended (a PostgreSQL restart) takes the lock again: 1 and *ret_epoch (epoch + 1)
 * when no other engine led meanwhile, -ESTALE when one did, 0 while another session holds the lock. */
int engine_store_leader_retake(struct engine_store *lock, const char *engine_id, const char *url, gint64 epoch,
                               gint64 *ret_epoch, GError **error) STORE_MUST;
/* The leader's heartbeat: 0, or -ESTALE when this session lost the lock or another engine took over. */
int engine_store_leader_renew(struct engine_store *lock, gint64 epoch, GError **error) STORE_MUST;
/* Gives up the lead of epoch at once, from the lock session: ends the engine's other sessions (engine_id, as in
 * leader_try: a statement of theirs stuck on a lock ends with them), ends the term in the leader row (the
 * epoch bumped, no holder: the engine's later writes fail with -ESTALE) and releases the lock. 1: all done;
 * 0: the lock released but the row kept (busy beyond lock_timeout; warned); -EIO: the lock not released. */
int engine_store_leader_release(struct engine_store *lock, const char *engine_id, gint64 epoch,
                                GError **error) STORE_MUST;
/* {epoch, holder, url, age (s since the heartbeat)}, or NULL (with *error on failure). */
json_t *engine_store_leader_get(struct engine_store *st, GError **error) STORE_MUST;

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
/* What of the host's still runs: "command", "transfer", or NULL for nothing (free with g_free). */
int engine_store_host_running(struct engine_store *st, const char *id, char **ret_what, GError **error) STORE_MUST;
int engine_store_host_delete(struct engine_store *st, const char *id, GError **error) STORE_MUST;
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
/* A running step of the job is stalled (false on a read error: the ETA is then shown). */
bool engine_store_job_stalled(struct engine_store *st, const char *job);
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
/* Sets status and job (NULL clears it), and the disks list unless disks is NULL. */
int engine_store_snapshot_set(struct engine_store *st, const char *id, const char *status, const char *job,
                              json_t *disks, GError **error) STORE_MUST;
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

/* ---- what the scheduler counts (commands.c) ---- */
/* Who started the command (a user name), or NULL: the engine itself, or no such command. */
char *engine_store_command_user(struct engine_store *st, const char *id);
/* Copies, merges and sparsifies (host jobs) recorded as sent, per host: rows {host, n: how many, b: the bytes they
 * still have to move by their steps' progress}. */
int engine_store_copy_loads(struct engine_store *st, json_t **ret_rows, GError **error) STORE_MUST;
/* The creation times of the copies still without a host, ascending (engine clock seconds). */
int engine_store_copies_waiting(struct engine_store *st, GArray **ret_created, GError **error) STORE_MUST;

/* ---- pages of a collection (page.c) ---- */
enum engine_store_page_kind {
        ENGINE_STORE_PAGE_DISKS,
        ENGINE_STORE_PAGE_HOSTS,
        ENGINE_STORE_PAGE_VMS,
        ENGINE_STORE_PAGE_TEMPLATES,
        ENGINE_STORE_PAGE_JOBS,         /* newest first; no name */
        ENGINE_STORE_PAGE_EVENTS,       /* newest first, integer ids; no name */
};
/* A page of a collection (keyset paging: no OFFSET, so a page costs the same at any depth): the rows after the
 * one whose id is `after` (NULL: from the first; events: a decimal id), only those named `name` (NULL: any;
 * -EINVAL for jobs and events, which have no name), at most limit. Disks, hosts, VMs and templates come in id
 * order, jobs and events newest first. */
json_t *engine_store_page(struct engine_store *st, enum engine_store_page_kind kind, const char *after,
                          const char *name, gint64 limit, GError **error) STORE_MUST;
/* Whether that collection's rows have a name to search (engine_store_page's name). */
bool engine_store_page_has_name(enum engine_store_page_kind kind);
/* The first rows (at most limit) in the order the collection is listed in without paging: by creation for
 * disks, VMs and templates, host_id for hosts (*ret_page_order false), the pages' own order for jobs and
 * events (*ret_page_order true). */
json_t *engine_store_page_unpaged(struct engine_store *st, enum engine_store_page_kind kind, gint64 limit,
                                  bool *ret_page_order, GError **error) STORE_MUST;

/* ---- disks and volumes: rows, locks, legality (disks.c) ---- */
json_t *engine_store_disk_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
json_t *engine_store_disk_list(struct engine_store *st, GError **error) STORE_MUST;
/* A new disk, locked by job (progress 0). */
int engine_store_disk_insert(struct engine_store *st, const char *id, const char *name, const char *sd, const char *format,
                             bool sparse, gint64 size, const char *job, gint64 created, GError **error) STORE_MUST;
/* Locks the disk for job; with expect_status, only a disk in that status (-EBUSY otherwise). */
int engine_store_disk_lock(struct engine_store *st, const char *id, const char *job, const char *expect_status,
                           GError **error) STORE_MUST;
/* Sets the status and drops the lock; with job, only while that job holds it. */
int engine_store_disk_unlock(struct engine_store *st, const char *id, const char *job, const char *status,
                             GError **error) STORE_MUST;
/* Every disk job holds: status, lock dropped. */
int engine_store_disks_unlock_job(struct engine_store *st, const char *job, const char *status, GError **error) STORE_MUST;
int engine_store_disk_set_domain(struct engine_store *st, const char *id, const char *sd, GError **error) STORE_MUST;
int engine_store_disk_set_format(struct engine_store *st, const char *id, const char *format, GError **error) STORE_MUST;
int engine_store_disk_set_actual_size(struct engine_store *st, const char *id, gint64 size, GError **error) STORE_MUST;
/* The disk, its volumes (on every domain) and its attachment. */
int engine_store_disk_delete(struct engine_store *st, const char *id, GError **error) STORE_MUST;
/* A new volume, ILLEGAL until its data is there. */
int engine_store_volume_insert(struct engine_store *st, const char *id, const char *disk, const char *sd,
                               const char *parent, gint64 position, const char *format, bool sparse, gint64 capacity,
                               GError **error) STORE_MUST;
/* The volumes of a disk on a domain. */
int engine_store_volumes_delete(struct engine_store *st, const char *disk, const char *sd, GError **error) STORE_MUST;
int engine_store_volume_delete(struct engine_store *st, const char *id, const char *sd, GError **error) STORE_MUST;
/* LEGAL; with generation >= 0 also that generation. */
int engine_store_volume_set_legal(struct engine_store *st, const char *id, const char *sd, gint64 generation,
                                  GError **error) STORE_MUST;
/* The volume row's legality ("LEGAL", "ILLEGAL"), NULL if there is no such row. */
char *engine_store_volume_legality(struct engine_store *st, const char *id, const char *sd, GError **error) STORE_MUST;
int engine_store_volume_set_illegal(struct engine_store *st, const char *id, const char *sd, GError **error) STORE_MUST;
/* The generation the inventory records for a volume (*ret untouched when there is no such row: -ENOENT). */
int engine_store_volume_generation(struct engine_store *st, const char *id, const char *sd, gint64 *ret,
                                   GError **error) STORE_MUST;
/* Records a volume's generation as storage has it (its legality unchanged). */
int engine_store_volume_set_generation(struct engine_store *st, const char *id, const char *sd, gint64 generation,
                                       GError **error) STORE_MUST;

/* ---- jobs and steps (jobs.c) ---- */
/* correlation_id: the REST request's that started it (NULL: none). */
int engine_store_job_insert(struct engine_store *st, const char *id, const char *description, const char *correlation_id,
                            gint64 start, GError **error) STORE_MUST;
json_t *engine_store_job_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
/* The newest first, at most limit. */
json_t *engine_store_job_list(struct engine_store *st, gint64 limit, GError **error) STORE_MUST;
int engine_store_job_set_command(struct engine_store *st, const char *job, const char *command, GError **error) STORE_MUST;
/* status finished | failed | aborted; a finished job shows 100 %. */
int engine_store_job_end(struct engine_store *st, const char *job, const char *status, gint64 end, GError **error) STORE_MUST;
/* The job's progress (of a started job) and of the disks it locks. */
int engine_store_job_set_progress(struct engine_store *st, const char *job, double progress, GError **error) STORE_MUST;
/* The weighted sum of the job's steps (percent, at most 100). */
int engine_store_job_step_progress(struct engine_store *st, const char *job, double *ret, GError **error) STORE_MUST;
int engine_store_step_insert(struct engine_store *st, const char *id, const char *job, const char *description,
                             const char *type, double weight, gint64 start, GError **error) STORE_MUST;
json_t *engine_store_step_list(struct engine_store *st, const char *job, GError **error) STORE_MUST;
/* The status; the progress only grows; a host is kept once known; finished/failed set the end time. */
int engine_store_step_update(struct engine_store *st, const char *id, const char *status, double progress,
                             const char *host, gint64 now, GError **error) STORE_MUST;
/* What a started step is doing besides its progress ("stalled"), or NULL; its status stays. */
int engine_store_step_set_detail(struct engine_store *st, const char *id, const char *detail, GError **error) STORE_MUST;
/* A step's digest (a checksum job's, or a copy's whose source and destination hashed the same: verified). */
int engine_store_step_set_checksum(struct engine_store *st, const char *id, const char *checksum, bool verified,
                                   GError **error) STORE_MUST;
/* A step that cannot start says why ("waiting for a host"); only_pending: not one that started before. */
int engine_store_step_wait(struct engine_store *st, const char *id, const char *why, bool only_pending,
                           GError **error) STORE_MUST;

/* ---- commands (commands.c) ---- */
/* A new active command; it inherits its parent's cancel request, and its user (NULL: the engine's own) when user is NULL. */
int engine_store_cmd_insert(struct engine_store *st, const char *id, const char *type, const char *parent,
                            const char *job, const char *step, json_t *params, const char *user, gint64 now,
                            GError **error) STORE_MUST;
json_t *engine_store_cmd_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
/* Active commands, oldest first. */
json_t *engine_store_cmd_active(struct engine_store *st, GError **error) STORE_MUST;
/* The top-level command of a job. */
json_t *engine_store_cmd_of_job(struct engine_store *st, const char *job, GError **error) STORE_MUST;
/* The job's commands of one type (a kind's stored name), oldest first. */
json_t *engine_store_cmd_list_of_job(struct engine_store *st, const char *job, const char *type, GError **error) STORE_MUST;
int engine_store_cmd_set_phase(struct engine_store *st, const char *id, const char *phase, json_t *data, gint64 now,
                               GError **error) STORE_MUST;
/* Back to phase "" without host and agent job, with data. */
int engine_store_cmd_restart(struct engine_store *st, const char *id, json_t *data, gint64 now, GError **error) STORE_MUST;
/* Phase "sent" with host, agent job and the recorded generation; one more attempt. */
int engine_store_cmd_mark_sent(struct engine_store *st, const char *id, const char *host, const char *agent_job,
                               gint64 generation, json_t *data, gint64 now, GError **error) STORE_MUST;
int engine_store_cmd_finish(struct engine_store *st, const char *id, bool ok, const char *message, gint64 now,
                            GError **error) STORE_MUST;
/* Every active command of the job is asked to cancel. */
int engine_store_cmd_cancel_job(struct engine_store *st, const char *job, gint64 now, GError **error) STORE_MUST;
/* An active remove_image of that image on that domain exists. */
int engine_store_cmd_removal_pending(struct engine_store *st, const char *sd, const char *img, bool *ret,
                                     GError **error) STORE_MUST;

/* ---- VMs, templates, disk attachments, snapshots (store/vms.c) ---- */
json_t *engine_store_vm_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
json_t *engine_store_vm_get_by_name(struct engine_store *st, const char *name, GError **error) STORE_MUST;
json_t *engine_store_vm_list(struct engine_store *st, GError **error) STORE_MUST;
/* status ok (an empty VM, job NULL) or locked (made by job from template_id). */
int engine_store_vm_insert(struct engine_store *st, const char *id, const char *name, const char *description,
                           const char *status, const char *template_id, const char *job, gint64 created,
                           GError **error) STORE_MUST;
/* Locks an ok VM for job; -EBUSY when it is not ok any more. */
int engine_store_vm_lock(struct engine_store *st, const char *id, const char *job, GError **error) STORE_MUST;
/* ok again, while job holds it. */
int engine_store_vm_unlock(struct engine_store *st, const char *id, const char *job, GError **error) STORE_MUST;
/* The VM with its attachments and snapshots (its disks stay); only_unlocked: not while an operation holds it. */
int engine_store_vm_delete(struct engine_store *st, const char *id, bool only_unlocked, GError **error) STORE_MUST;

json_t *engine_store_template_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
json_t *engine_store_template_get_by_name(struct engine_store *st, const char *name, GError **error) STORE_MUST;
json_t *engine_store_template_list(struct engine_store *st, GError **error) STORE_MUST;
/* A template being made by job from vm (locked). */
int engine_store_template_insert(struct engine_store *st, const char *id, const char *name, const char *description,
                                 const char *vm, const char *job, gint64 created, GError **error) STORE_MUST;
/* Locks a template no operation holds for job; -EBUSY otherwise. */
int engine_store_template_lock(struct engine_store *st, const char *id, const char *job, GError **error) STORE_MUST;
/* ok or illegal; the lock is dropped. */
int engine_store_template_set_status(struct engine_store *st, const char *id, const char *status, GError **error) STORE_MUST;
int engine_store_template_delete(struct engine_store *st, const char *id, GError **error) STORE_MUST;
/* {who} rows naming what is layered on the template's volumes (thin VMs, their disks), at most limit. */
json_t *engine_store_template_dependents(struct engine_store *st, const char *id, gint64 limit, GError **error) STORE_MUST;

/* The disks attached to a VM (vm true) or a template, in attachment order. */
json_t *engine_store_owner_disks(struct engine_store *st, bool vm, const char *owner, GError **error) STORE_MUST;
/* The attachments of a VM (vm true) or a template, in attachment order. */
json_t *engine_store_attachment_list(struct engine_store *st, bool vm, const char *owner, GError **error) STORE_MUST;
/* A disk's attachment with vm_name and template_name; with vm, only to that VM. */
json_t *engine_store_attachment_get(struct engine_store *st, const char *disk, const char *vm, GError **error) STORE_MUST;
int engine_store_attachment_count(struct engine_store *st, const char *vm, gint64 *ret, GError **error) STORE_MUST;
/* To a VM or (vm NULL) a template; a disk already attached fails with -EEXIST. */
int engine_store_attachment_insert(struct engine_store *st, const char *disk, const char *vm, const char *template_id,
                                   bool bootable, const char *interface, gint64 created, GError **error) STORE_MUST;
int engine_store_attachment_delete(struct engine_store *st, const char *disk, const char *vm, GError **error) STORE_MUST;

json_t *engine_store_snapshot_get(struct engine_store *st, const char *id, const char *vm, GError **error) STORE_MUST;
json_t *engine_store_snapshot_list(struct engine_store *st, const char *vm, GError **error) STORE_MUST;
/* A snapshot being made by job (locked); disks: [{disk, volume, leaf}]. */
int engine_store_snapshot_insert(struct engine_store *st, const char *id, const char *vm, const char *description,
                                 json_t *disks, const char *job, gint64 created, GError **error) STORE_MUST;
int engine_store_snapshot_set_ok(struct engine_store *st, const char *id, GError **error) STORE_MUST;
int engine_store_snapshot_delete(struct engine_store *st, const char *id, GError **error) STORE_MUST;

/* ---- image transfers (transfers.c) ---- */
struct engine_store_transfer {
        const char *id, *disk, *sd, *vol, *direction, *host, *ticket, *url, *job, *prior_status;
        gint64 size, timeout;
};

/* A new transfer in phase "initializing". */
int engine_store_transfer_insert(struct engine_store *st, const struct engine_store_transfer *t, gint64 now,
                                 GError **error) STORE_MUST;
json_t *engine_store_transfer_get(struct engine_store *st, const char *id, GError **error) STORE_MUST;
/* The newest first, at most limit. */
json_t *engine_store_transfer_list(struct engine_store *st, gint64 limit, GError **error) STORE_MUST;
/* The transfers not finished yet, oldest first. */
json_t *engine_store_transfer_open(struct engine_store *st, GError **error) STORE_MUST;
/* A phase; message (if not NULL) becomes its error. */
int engine_store_transfer_set_phase(struct engine_store *st, const char *id, const char *phase, const char *message,
                                    gint64 now, GError **error) STORE_MUST;
/* "finalizing_failure": the ticket is removed next; cancel says who ended it ("user", "system"). */
int engine_store_transfer_fail(struct engine_store *st, const char *id, const char *cancel, const char *message,
                               gint64 now, GError **error) STORE_MUST;
/* "initializing" → "transferring" with the generation the ticket recorded. */
int engine_store_transfer_started(struct engine_store *st, const char *id, gint64 generation, gint64 now,
                                  GError **error) STORE_MUST;
/* "finalizing_success", watched through the agent job. */
int engine_store_transfer_finalizing(struct engine_store *st, const char *id, const char *agent_job, gint64 now,
                                     GError **error) STORE_MUST;
/* While "transferring": bytes moved and the time of the last request. */
int engine_store_transfer_activity(struct engine_store *st, const char *id, gint64 transferred, gint64 last_activity,
                                   gint64 now, GError **error) STORE_MUST;
