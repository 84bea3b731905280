/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers restore_snapshot and restore_disk_snapshot (before the first coordinator round). */
void engine_flow_snapshot_restore_init(void);
