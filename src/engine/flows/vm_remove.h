/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers remove_vm and remove_template (before the first coordinator round). */
void engine_flow_vm_remove_init(void);
