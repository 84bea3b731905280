/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* Registers the VM, snapshot and template flows (before the first coordinator round). */
void engine_vms_init(void);
