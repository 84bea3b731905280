/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * What the flow files share (flows/flow.c): the children they create (a
 * leaf with its step, a disk's removal, a collapsed copy), the end of a
 * top-level flow's job, unlocks, and the cleanup of the images a failed
 * flow made. A flow over "each disk of a VM or template" keeps its disks in
 * params.disks[]: {sd, img, vol, …} per disk.
 */
#include "commands.h"

#define ENGINE_FLOW_MAX_PARALLEL_DISKS 8

/* What a disk flow's end writes in its transaction (engine_flow_disk_end): 0 or -errno with *error. */
typedef int (*engine_flow_end_fn)(struct engine *e, json_t *cmd, json_t *p, bool ok, GError **error);

/*
 * A flow's steps, one per phase, in the order they run. ENGINE_PHASE_MAIN's
 * also runs a command that has not started (phase NEW). A step records the
 * next phase itself (engine_cmd_update) or ends the flow.
 */
typedef void (*engine_flow_step_fn)(struct engine *e, json_t *cmd, json_t *p, json_t *data);
struct engine_flow_step {
        enum engine_phase phase;
        engine_flow_step_fn run;
};
/*
 * Runs the step of the command's phase with its params and data. A phase
 * the flow does not have (a damaged row) goes to its ENGINE_PHASE_CLEANUP
 * step with data.error saying so, or, without one, fails the command.
 */
void engine_flow_steps_run(struct engine *e, json_t *cmd, const struct engine_flow_step *steps, size_t n);
/* A disk flow of one child (make): runs it, then ends with its outcome (engine_flow_disk_end). */
void engine_flow_disk_single(struct engine *e, json_t *cmd, engine_child_factory make, engine_flow_end_fn end,
                             bool refresh);

/* params.disks[i] of a flow over several disks (borrowed). */
json_t *engine_flow_disk(json_t *p, size_t i);
/* A leaf of kind under cmd with its own step (type: the kind's name); the new command's id. */
char *engine_flow_leaf_create(struct engine *e, json_t *cmd, enum engine_kind kind, json_t *params, const char *desc,
                              double weight);
/* A child of kind under cmd with the given params and no step of its own (a composite's). */
char *engine_flow_child(struct engine *e, json_t *cmd, enum engine_kind kind, json_t *params);
/* remove_image {sd, img} under cmd, with its step. */
char *engine_flow_remove_image(struct engine *e, json_t *cmd, const char *sd, const char *img);
/* A removal that kept failing leaves the flow: a background remove_image, retried until done. */
void engine_flow_removal_detach(struct engine *e, const char *sd, const char *img, const char *why);
/* A collapsed copy of disk i: the leaf of its source chain into one new volume without parent. */
char *engine_flow_collapsed_copy(struct engine *e, json_t *cmd, json_t *p, size_t i);
/* remove_image of disk i's image. */
char *engine_flow_disk_remove(struct engine *e, json_t *cmd, json_t *p, size_t i);

/* Runs a child per disk of params.disks, at most parallel at once (engine_run_children_parallel). */
enum engine_children engine_flow_run_disks(struct engine *e, json_t *cmd, json_t *p, json_t *data,
                                           engine_child_factory make, size_t parallel, char **ret_error);
/* Records phase "cleanup" with the error that sends the flow there, and runs it now. */
void engine_flow_go_cleanup(struct engine *e, json_t *cmd, json_t *data, const char *error);
/* Phase "cleanup": every disk's new image removed (one never made counts as removed, one that
 * keeps failing goes on in the background), then the new disks' rows deleted; true when done. */
bool engine_flow_cleanup_disks(struct engine *e, json_t *cmd, json_t *p, json_t *data);

/* Ends a top-level flow's job ("finished", "aborted" when cancelled, else "failed") and its command. */
void engine_flow_job_end(struct engine *e, json_t *cmd, bool ok, const char *error);
/* The status a job ends in: "finished" when ok, else "aborted" when the user cancelled it, else "failed". */
const char *engine_flow_job_status(bool ok, bool cancelled);
/* Unlocks what this flow's job holds (never another operation's lock): its disks (to status), the VM. */
void engine_flow_unlock_disks(struct engine *e, json_t *cmd, const char *status);
void engine_flow_unlock_vm(struct engine *e, json_t *cmd, const char *vm);
/*
 * Ends a top-level disk flow in one transaction: what `end` writes (the
 * flow's own rows), the job ("finished", "aborted", "failed") and the
 * command, so a crash can never replay half an end; then, when it went
 * well, the disk `refresh` (may be NULL) has its size read again, and an
 * event says it. Not recorded: the command stays active and ends again
 * next round.
 */
void engine_flow_disk_end(struct engine *e, json_t *cmd, json_t *p, bool ok, const char *error, engine_flow_end_fn end,
                          const char *refresh);
/* A write of a flow's last step: a refused one (r < 0) is said in the log; the round's transaction rolls back. */
void engine_flow_checked(int r, GError **error, const char *what, const char *id);

/* ---- the VM flows that change a disk's chain (snapshot removal and restore, sparsify) ---- */
/* Each disk's share of the job's progress (100 / the number of disks). */
double engine_flow_disk_share(json_t *p);
/* The inventory's row of volume vol of the disk's chain, or NULL. */
json_t *engine_flow_volume_find(struct engine *e, const char *disk, const char *sd, const char *vol);
/* The data of child i of a flow (engine_run_children_parallel), or NULL when it was never started. */
json_t *engine_flow_child_data(struct engine *e, json_t *data, size_t i);
/* A child per disk, at most ENGINE_FLOW_MAX_PARALLEL_DISKS at once: true while some run (the data recorded). */
bool engine_flow_disks_running(struct engine *e, json_t *cmd, json_t *p, json_t *data, engine_child_factory make,
                               size_t n, char **ret_error);
/*
 * The checks a flow runs before it acts (data.checks), every one ended
 * before anything else starts: ACTIVE (recorded), FAILED, or SUCCEEDED
 * (data.checked set, so they are not run again).
 */
enum engine_children engine_flow_checks_run(struct engine *e, json_t *cmd, json_t *data, size_t n,
                                            engine_child_factory make, char **ret_error);
/* Ends a top-level flow of a VM or disk: the job's locks back (the VM's too), job and command ended. */
void engine_flow_vm_job_end(struct engine *e, json_t *cmd, const char *vm, bool ok, const char *error);
