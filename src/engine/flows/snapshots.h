/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers the snapshot removal and restore and the disk sparsify flows (before the first coordinator round). */
void engine_snapshot_flows_init(void);
