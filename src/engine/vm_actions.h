/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * VM, template and snapshot actions (vm_actions.c). Each returns the JSON
 * answer (or the row asked for) or NULL with an ENGINE_ERROR whose code is
 * the HTTP status.
 */
#include "engine.h"

json_t *engine_vm_get(struct engine *e, const char *id, GError **error);
json_t *engine_template_get(struct engine *e, const char *id, GError **error);
/* The attachment row of a disk of the VM; the snapshot row of the VM. */
json_t *engine_vm_attachment(struct engine *e, const char *vm_id, const char *disk_id, GError **error);
json_t *engine_vm_snapshot(struct engine *e, const char *vm_id, const char *snap_id, GError **error);

/* An empty VM: *ret_status 201 and the new VM's row; from a template: 202 and {vm, job}. */
json_t *engine_vm_create(struct engine *e, json_t *body, int *ret_status, GError **error);
json_t *engine_template_create(struct engine *e, json_t *body, GError **error);
json_t *engine_snapshot_create(struct engine *e, const char *vm_id, json_t *body, GError **error);
/* Cold merge of each disk's subchain (202 and {job}); 200 when no disk of the snapshot is the VM's any more. */
json_t *engine_snapshot_remove(struct engine *e, const char *vm_id, const char *snap_id, int *ret_status, GError **error);
/* A new leaf on the snapshot's volume of every disk; the volumes above it removed (202 and {job}). */
json_t *engine_snapshot_restore(struct engine *e, const char *vm_id, const char *snap_id, GError **error);
/* 202 when disks are removed on storage, 200 when only rows go (detach_only, or no disks). */
json_t *engine_vm_remove(struct engine *e, const char *vm_id, bool detach_only, int *ret_status, GError **error);
json_t *engine_template_remove(struct engine *e, const char *tmpl_id, int *ret_status, GError **error);
/* Both return the attachment row. */
json_t *engine_vm_disk_attach(struct engine *e, const char *vm_id, json_t *body, GError **error);
json_t *engine_vm_disk_detach(struct engine *e, const char *vm_id, const char *disk_id, GError **error);

/* The business rules of a disk's owner: 409 (-EBUSY) when removing (remove) or moving the disk
 * would break its VM or template; 0 when it may go ahead. */
int engine_disk_owner_check(struct engine *e, const char *disk_id, bool remove, GError **error);
