/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "rest.h"

bool engine_rest_transfers(struct engine *e, SoupServerMessage *msg, char **seg, guint n)
{
        return false;
}
