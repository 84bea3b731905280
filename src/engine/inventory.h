/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* True when a disk or volume row names the image on that domain, or an active command other than
 * except_command names the image (or when the database cannot tell: never remove on doubt). */
bool engine_image_in_use(struct engine *e, const char *sd, const char *img, const char *except_command);

/* The volume rows of a disk (a disks row) on its current domain, base first; an empty array when none or unreadable. */
json_t *engine_disk_volumes(struct engine *e, json_t *disk);
/* Sums the allocated size of the disk's volumes into its actual_size, through a usable host (asynchronous,
 * best effort). */
void engine_disk_size_refresh(struct engine *e, const char *disk_id);
/* The same after a job that copied the disk: from the truesize each of its copies reported (no call), else
 * as engine_disk_size_refresh. */
void engine_disk_size_record(struct engine *e, const char *disk_id, const char *job_id);
