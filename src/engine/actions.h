/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* What the disk REST actions start (actions.c); each returns the JSON answer of a 202 or NULL with an ENGINE_ERROR. */
#include "engine.h"

json_t *engine_disk_create(struct engine *e, json_t *body, GError **error);
json_t *engine_disk_move(struct engine *e, const char *disk_id, json_t *body, bool keep_source, GError **error);
/* A job hashing the disk's active volume (its guest view) on a host; the digest shows on its step. */
json_t *engine_disk_checksum(struct engine *e, const char *disk_id, GError **error);
json_t *engine_disk_remove(struct engine *e, const char *disk_id, GError **error);
/* SDM.sparsify_volume of every SPARSE volume of the disk's chain, each on a host the scheduler picks. */
json_t *engine_disk_sparsify(struct engine *e, const char *disk_id, GError **error);
