/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers remove_snapshot and merge_disk_snapshot (before the first coordinator round). */
void engine_flow_snapshot_remove_init(void);
