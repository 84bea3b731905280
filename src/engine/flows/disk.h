/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers the disk flows (create, remove, move, copy) and the composites under them. */
void engine_flow_disk_init(void);
