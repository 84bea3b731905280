/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers the leaves that run one agent job: create_volume_container, remove_image, copy_data. */
void engine_flow_job_init(void);
