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

/* params.disks[i] of a flow over several disks (borrowed). */
json_t *engine_flow_disk(json_t *p, size_t i);
/* A leaf of kind under cmd with its own step (type: the kind's name); the new command's id. */
char *engine_flow_leaf_create(struct engine *e, json_t *cmd, enum engine_kind kind, json_t *params, const char *desc,
                              double weight);
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
/* Phase "cleanup": every disk's new image removed (one never made counts as removed); true when done. */
bool engine_flow_cleanup_images(struct engine *e, json_t *cmd, json_t *p, json_t *data);

/* Ends a top-level flow's job ("finished", "aborted" when cancelled, else "failed") and its command. */
void engine_flow_job_end(struct engine *e, json_t *cmd, bool ok, const char *error);
/* Unlocks what this flow's job holds (never another operation's lock): its disks (to status), the VM. */
void engine_flow_unlock_disks(struct engine *e, json_t *cmd, const char *status);
void engine_flow_unlock_vm(struct engine *e, json_t *cmd, const char *vm);
/* A write of a flow's last step: a refused one (r < 0) is said in the log; the round's transaction rolls back. */
void engine_flow_checked(int r, GError **error, const char *what, const char *id);
