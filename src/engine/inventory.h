/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* True when a disk or volume row names the image on that domain, or an active command other than
 * except_command names the image (or when the database cannot tell: never remove on doubt). */
bool engine_image_in_use(struct engine *e, const char *sd, const char *img, const char *except_command);
