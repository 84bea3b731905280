/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * VM and template actions (vm_actions.c); snapshot_actions.c has the snapshots'. Each returns the JSON
 * answer (or the row asked for) or NULL with an ENGINE_ERROR whose code is
 * the HTTP status.
 */
#include "engine.h"

json_t *engine_vm_get(struct engine *e, const char *id, GError **error);
json_t *engine_template_get(struct engine *e, const char *id, GError **error);
/* The attachment row of a disk of the VM. */
json_t *engine_vm_attachment(struct engine *e, const char *vm_id, const char *disk_id, GError **error);

/* An empty VM: *ret_status 201 and the new VM's row; from a template: 202 and {vm, job}. */
json_t *engine_vm_create(struct engine *e, json_t *body, int *ret_status, GError **error);
json_t *engine_template_create(struct engine *e, json_t *body, GError **error);
/* 202 when disks are removed on storage, 200 when only rows go (detach_only, or no disks). */
json_t *engine_vm_remove(struct engine *e, const char *vm_id, bool detach_only, int *ret_status, GError **error);
json_t *engine_template_remove(struct engine *e, const char *tmpl_id, int *ret_status, GError **error);
/* Both return the attachment row. */
json_t *engine_vm_disk_attach(struct engine *e, const char *vm_id, json_t *body, GError **error);
json_t *engine_vm_disk_detach(struct engine *e, const char *vm_id, const char *disk_id, GError **error);

/* The business rules of a disk's owner: 409 (-EBUSY) when removing (remove) or moving the disk
 * would break its VM or template; 0 when it may go ahead. */
int engine_disk_owner_check(struct engine *e, const char *disk_id, bool remove, GError **error);

/* What the snapshot actions share with these. */
/* An optional body.description: at most 256 bytes, no control characters ("" when absent); false after a 400. */
bool engine_description_get(json_t *body, const char **ret, GError **error);
/* The disks attached to a VM (vm true) or a template, in attachment order (never NULL). */
json_t *engine_owner_disks(struct engine *e, bool vm, const char *owner);
/* A disk an operation may read or change now: ok, with a LEGAL chain; false after a 409. */
bool engine_disk_usable(struct engine *e, json_t *disk, GError **error);
/* The disk's chain's leaf volume row, or NULL. */
json_t *engine_disk_leaf(struct engine *e, json_t *disk);
/* Lock a row for this transaction's job only if it is free now: false after a 409 (a race lost). */
bool engine_disk_lock(struct engine *e, json_t *disk, const char *job, GError **error);
bool engine_vm_lock(struct engine *e, json_t *vm, const char *job, GError **error);
