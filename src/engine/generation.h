/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * A volume's generation (DESIGN §6), the one place its arithmetic lives.
 * A writer records the generation it found before it starts; finishing
 * moves it to +1, fencing a lost writer through another host moves it to
 * +3, so a recorded generation tells "done", "fenced" and "someone else's
 * change" apart. The agent stores it modulo 1000.
 */
#include <glib.h>

#define ENGINE_GENERATION_WRAP 1000

static inline gint64 engine_generation_done(gint64 recorded)
{
        return (recorded + 1) % ENGINE_GENERATION_WRAP;
}

static inline gint64 engine_generation_fenced(gint64 recorded)
{
        return (recorded + 3) % ENGINE_GENERATION_WRAP;
}
