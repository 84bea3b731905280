/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* Registers the VM, snapshot and template flows (before the first coordinator round). */
void engine_vms_init(void);
/* Answers the requests for /api/vms and /api/templates (true), or leaves them to the next (false). */
bool engine_rest_vms(struct engine *e, SoupServerMessage *msg, char **seg, guint n);
