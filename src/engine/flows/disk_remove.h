/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers remove_disk (before the first coordinator round). */
void engine_flow_disk_remove_init(void);
