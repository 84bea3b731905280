/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/* Starts a sweep for orphan images when sweep_interval has passed since the last. */
void engine_sweep_maybe(struct engine *e);
