/* SPDX-License-Identifier: GPL-2.0-or-later */
/* One line of "qemu-img map --output json", as sparsify reads it: never crashes, extents stay in range. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "qemuimg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autofree char *line = g_strndup((const char *) data, size);
        struct agent_qemu_img_extent e;
        int r = agent_qemu_img_map_parse_line(line, &e);

        if (r == 1) {
                /* Sparsify adds these: they must never wrap. */
                if (e.start + e.length < e.start || (e.has_offset && e.offset + e.length < e.offset))
                        abort();
        } else if (r != 0 && r != -EBADMSG) {
                abort();
        }
        return 0;
}
