/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers create_disk (before the first coordinator round). */
void engine_flow_disk_create_init(void);
