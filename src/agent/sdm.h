/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* SDM verbs (DESIGN §6): data operations any host may run, as jobs. */

#include <glib.h>
#include <jansson.h>

struct agent;

/* Validate the request and schedule the job; errors are immediate, the copy itself reports through the job. */
int agent_sdm_copy_data(struct agent *a, json_t *params, GError **error);
int agent_sdm_update_volume(struct agent *a, json_t *params, GError **error);
/*
 * Volume.checksum: a job hashing a volume's guest-visible content
 * (checksum.h); the digest is the job's "result" in Host.getJobs.
 */
int agent_volume_checksum(struct agent *a, json_t *params, GError **error);
