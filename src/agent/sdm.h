/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* SDM verbs (DESIGN §6): data operations any host may run, as jobs. */

#include <glib.h>
#include <jansson.h>

struct agent;

/* Validate the request and schedule the job; errors are immediate, the copy itself reports through the job. */
int agent_sdm_copy_data(struct agent *a, json_t *params, GError **error);
int agent_sdm_update_volume(struct agent *a, json_t *params, GError **error);
