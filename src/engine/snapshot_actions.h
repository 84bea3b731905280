/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Snapshot actions (snapshot_actions.c). Each returns the JSON answer (or
 * the row asked for) or NULL with an ENGINE_ERROR whose code is the HTTP
 * status.
 */
#include "engine.h"

/* The snapshot row of the VM. */
json_t *engine_vm_snapshot(struct engine *e, const char *vm_id, const char *snap_id, GError **error);
/* A new qcow2 leaf on every disk of the VM (202 and {snapshot, job}). */
json_t *engine_snapshot_create(struct engine *e, const char *vm_id, json_t *body, GError **error);
/* Cold merge of each disk's subchain (202 and {job}); 200 when no disk of the snapshot is the VM's any more. */
json_t *engine_snapshot_remove(struct engine *e, const char *vm_id, const char *snap_id, int *ret_status, GError **error);
/* A new leaf on the snapshot's volume of every disk; the volumes above it removed (202 and {job}). */
json_t *engine_snapshot_restore(struct engine *e, const char *vm_id, const char *snap_id, GError **error);
