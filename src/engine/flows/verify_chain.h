/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers the read-only verify_chain leaf (before the first coordinator round). */
void engine_flow_verify_chain_init(void);
