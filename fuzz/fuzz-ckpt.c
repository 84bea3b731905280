/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The copy checkpoint sidecar: whatever parses must format to text that parses back to the same thing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct agent_copy_ckpt c, back;
        g_autofree char *text = NULL;

        if (agent_copy_ckpt_parse((const char *) data, size, &c) < 0)
                return 0;
        text = agent_copy_ckpt_format(&c);
        if (agent_copy_ckpt_parse(text, strlen(text), &back) < 0 || memcmp(&c, &back, sizeof(c)) != 0)
                abort();
        return 0;
}
