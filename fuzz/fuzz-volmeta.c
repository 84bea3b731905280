/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Parses arbitrary bytes; whatever parses must format to text that parses back to the same thing. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

/* volmeta.h's G_DEFINE_AUTOPTR_CLEANUP_FUNC needs this name; C11 allows repeating it. */
#include "volmeta.h"

static bool meta_equal(const struct fy_volume_meta *a, const struct fy_volume_meta *b)
{
        return a->capacity == b->capacity &&
                a->ctime == b->ctime &&
                strcmp(a->description, b->description) == 0 &&
                strcmp(a->disktype, b->disktype) == 0 &&
                strcmp(a->domain, b->domain) == 0 &&
                a->format == b->format &&
                a->generation == b->generation &&
                strcmp(a->image, b->image) == 0 &&
                a->legality == b->legality &&
                strcmp(a->parent, b->parent) == 0 &&
                a->type == b->type &&
                a->voltype == b->voltype;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autoptr(fy_volume_meta) m = NULL;
        g_autoptr(fy_volume_meta) again = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *text = NULL, *text2 = NULL;

        if (fy_volume_meta_parse((const char *) data, size, &m, &error) < 0) {
                /* A failure always explains itself. */
                if (!error || !error->message || m)
                        abort();
                return 0;
        }
        if (error)
                abort();

        text = fy_volume_meta_format(m);
        if (fy_volume_meta_parse(text, strlen(text), &again, NULL) < 0)
                abort();
        if (!meta_equal(m, again))
                abort();
        /* The canonical form is a fixed point. */
        text2 = fy_volume_meta_format(again);
        if (strcmp(text, text2) != 0)
                abort();
        return 0;
}
