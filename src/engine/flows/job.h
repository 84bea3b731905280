/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers the leaves that run one agent job (the kinds flows/job.c's opening comment lists). */
void engine_flow_job_init(void);
