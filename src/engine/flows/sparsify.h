/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers sparsify_disk (before the first coordinator round). */
void engine_flow_sparsify_init(void);
