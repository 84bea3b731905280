/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "engine.h"

G_DEFINE_QUARK(ferry-engine-error-quark, engine_error)
