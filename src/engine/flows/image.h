/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Registers the composites copy_image_group_with_data, clone_image_group_volumes_structure and
 * copy_image_group_volumes_data (before the first coordinator round). */
void engine_flow_image_init(void);
