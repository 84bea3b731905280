/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers create_template_from_vm (before the first coordinator round). */
void engine_flow_template_init(void);
