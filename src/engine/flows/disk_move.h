/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers move_disk and copy_disk (before the first coordinator round). */
void engine_flow_disk_move_init(void);
