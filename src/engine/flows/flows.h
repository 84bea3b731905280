/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers how every command kind advances: the leaves (flows/job.c, flows/verify_chain.c), the
 * composites and every flow file (before the first coordinator round). */
void engine_flows_init(void);
