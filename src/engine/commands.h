/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The command coordinator's building blocks (commands.c), for files that add
 * their own composite commands (flows). A flow is a row in `commands`; its
 * advance function runs inside a database transaction every round in which
 * the command is active and has no call in flight, and must be idempotent:
 * read its state from the row (phase, data), create children, finish.
 */
#include "engine.h"
#include "kinds.h"

int engine_commands_init(struct engine *e, GError **error);
void engine_commands_tick(struct engine *e);
/* Queues one more coordinator round soon: something changed that lets a command advance. */
void engine_kick(struct engine *e);
/* Cancels a running move/copy/clone: no more work starts, running copies are aborted, the
 * destination is removed; the job ends "aborted". Which kinds can be cancelled is declared
 * with the kind (kinds.c). */
json_t *engine_job_cancel(struct engine *e, const char *job_id, GError **error);

/* A new job ("started"): its id, or NULL with *error. */
char *engine_job_insert(struct engine *e, const char *description, GError **error);
/* The job's top-level command: created, recorded as the job's, a round queued; NULL with *error. */
char *engine_job_command_start(struct engine *e, enum engine_kind kind, const char *job_id, json_t *params,
                               GError **error);

/* A write the runtime could not do: said in the log (the error is cleared); the command goes on from what is recorded. */
void engine_not_recorded(GError **error, const char *what, const char *id);
/* A step that cannot start yet says why (its detail, until it starts). */
void engine_step_wait(struct engine *e, const char *step_id, const char *why);

/* A call to a host tied to a command: the command is busy (skipped by rounds) until the reply, which
 * runs done with the command's current row, if it is still active. */
typedef void (*engine_cmd_reply_fn)(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra);
void engine_cmd_call(struct engine *e, json_t *cmd, const char *host, const char *method, json_t *params,
                     unsigned timeout_ms, engine_cmd_reply_fn done, void *extra, GDestroyNotify extra_free);
/* No answer at all (timeout, connection): unknown whether the host got the call. */
bool engine_is_transport_error(const GError *error);
/* The last progress a host's events reported for a running agent job (borrowed), or NULL. */
json_t *engine_job_event(const char *agent_job_id);
/* The job's final info ({status, error, result …}, borrowed) if an event from host reported its end (done,
 * failed, aborted) and its command has not ended yet; else NULL. */
json_t *engine_job_end(const char *agent_job_id, const char *host);
/* That end is used up (a verification side decided from it). */
void engine_job_end_forget(const char *agent_job_id);
/* Asks host about an agent job in the round's one Host.getJobs to that host (sent when the round ends);
 * the command is busy until the reply, which runs done with the whole answer (job id → info) and extra,
 * if the command is still active. */
void engine_cmd_poll_job(struct engine *e, json_t *cmd, const char *host, const char *agent_job_id,
                         engine_cmd_reply_fn done, void *extra);

/* Creates an active command (returns its id) and queues a round. */
char *engine_cmd_create(struct engine *e, enum engine_kind kind, const char *parent, const char *job_id,
                        const char *step_id, json_t *params);
void engine_cmd_update(struct engine *e, const char *id, enum engine_phase phase, json_t *data);
/* Ends a command; a failed one is logged as an event. Marks its step finished/failed. */
void engine_cmd_finish(struct engine *e, json_t *cmd, bool ok, const char *error);

char *engine_step_create(struct engine *e, const char *job_id, const char *type, const char *description,
                         double weight);
void engine_step_update(struct engine *e, const char *step_id, const char *status, double progress,
                        const char *host);
/* A running host job's progress (job: its Host.getJobs entry; its bytes_done feeds the step's ETA). */
/* True when this report starts the step's ETA series (engine_eta_step_job): its job's is to start again. */
bool engine_step_progress(struct engine *e, const char *step_id, double progress, json_t *job);
/* Forgets a job's ETA series: its next progress starts a new one. */
void engine_job_eta_restart(const char *job_id);
void engine_job_progress_refresh(struct engine *e, const char *job_id);

enum engine_children {
        ENGINE_CHILDREN_ACTIVE,        /* some still run */
        ENGINE_CHILDREN_SUCCEEDED,     /* all did */
        ENGINE_CHILDREN_FAILED,        /* one failed (or the job was cancelled) */
};

/*
 * Runs `count` children of cmd one after another (data.child, data.index);
 * a failure comes with *ret_error. The caller writes data back with
 * engine_cmd_update.
 */
typedef char *(*engine_child_factory)(struct engine *e, json_t *cmd, json_t *p, size_t index);
enum engine_children engine_run_children(struct engine *e, json_t *cmd, json_t *data, size_t count,
                                         engine_child_factory make, char **ret_error);
/*
 * Runs `count` children at once, at most `parallel` active at a time
 * (data.children: index → id, data.next); same results as engine_run_children,
 * but waits for every started child before reporting a failure.
 */
enum engine_children engine_run_children_parallel(struct engine *e, json_t *cmd, json_t *data, size_t count,
                                                  size_t parallel, engine_child_factory make, char **ret_error);

/* Child i's state after engine_run_children_parallel ("active", "succeeded", "failed"), or NULL. */
char *engine_children_state(struct engine *e, json_t *data, size_t i, char **ret_error);

/*
 * Existing command types a flow can use as children (params as in commands.c):
 *   copy_image_group_with_data  {sd, img, volumes[], src_sd, src_img, src_volumes[]}
 *                               creates the volumes on the SPM, then copies src_volumes[i] → volumes[i];
 *                               one destination volume for a source leaf copies the chain collapsed.
 *   clone_image_group_volumes_structure {sd, img, volumes[]}
 *   remove_image {sd, img}
 *   create_volume_container {sd, img, vol, parent|null, size, format, sparse}  Volume.create on the SPM
 *   remove_volume {sd, img, vol}                 Volume.delete on the SPM (gone already = done)
 *   prepare_merge / finalize_merge {sd, img, top, base, generation?}  StoragePool.*Merge on the SPM
 *   merge {dst: {sd, img, vol = base}, top, bytes}  SDM.merge on a host the scheduler picks
 *   sparsify_volume {dst: {sd, img, vol}, bytes}    SDM.sparsify_volume on a host the scheduler picks
 *   (merge and sparsify_volume recover like copy_data: decided from the volume, fenced, retried elsewhere)
 * volumes[] entries: {id, parent|null, capacity, format raw|cow, sparse, structure_weight, data_weight}.
 */

typedef void (*engine_flow_fn)(struct engine *e, json_t *cmd);
/*
 * Registers how a command kind advances (at startup). A flow's advance runs
 * inside a transaction (its children are created and recorded in one); a
 * leaf's (in_transaction false) runs outside, since it calls hosts.
 */
void engine_flow_register(enum engine_kind kind, engine_flow_fn advance, bool in_transaction);
