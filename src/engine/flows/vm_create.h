/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers create_vm_from_template (before the first coordinator round). */
void engine_flow_vm_create_init(void);
