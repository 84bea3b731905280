/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers create_snapshot (before the first coordinator round). */
void engine_flow_snapshot_create_init(void);
