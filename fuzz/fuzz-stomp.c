/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Feeds the input to the STOMP parser in several chunk sizes (the peer decides
 * how bytes are split), pulls every frame, re-encodes it and checks that the
 * encoding parses back to the same frame.
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "stomp.h"

static const struct fy_stomp_limits limits = {
        .max_frame = 4096,
        .max_headers = 16,
        .max_header_line = 256,
};

static void check_round_trip(const struct fy_stomp_frame *f)
{
        g_autofree const char **hdrs = g_new0(const char *, 2 * f->n_headers + 1);
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) g = NULL;
        g_autoptr(GBytes) enc = NULL;
        const void *data;
        size_t n = 0;
        gsize len;
        bool verbatim;

        /* content-length is added by the encoder; drop the received ones. */
        for (size_t i = 0; i < f->n_headers; i++) {
                if (strcmp(f->headers[i].name, "content-length") == 0)
                        continue;
                hdrs[n++] = f->headers[i].name;
                hdrs[n++] = f->headers[i].value;
        }
        enc = fy_stomp_frame_encode(f->command, hdrs, f->body, f->body_len);
        data = g_bytes_get_data(enc, &len);
        if (fy_stomp_parser_feed(p, data, len) < 0 || fy_stomp_parser_next(p, &g) != 1)
                abort();
        if (strcmp(g->command, f->command) != 0 || g->body_len != f->body_len ||
            memcmp(g->body, f->body, f->body_len) != 0 || g->body[g->body_len] != '\0')
                abort();

        /* CONNECT headers are not escaped, so a value holding "\n" cannot survive. */
        verbatim = strcmp(f->command, "CONNECT") == 0 || strcmp(f->command, "CONNECTED") == 0;
        if (verbatim)
                return;
        for (size_t i = 0, j = 0; i < n; i += 2, j++) {
                if (strcmp(g->headers[j].name, hdrs[i]) != 0 ||
                    strcmp(g->headers[j].value, hdrs[i + 1]) != 0)
                        abort();
        }
}

static void run(const uint8_t *data, size_t size, size_t chunk)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(&limits);
        struct fy_stomp_frame *f;
        int r = 0;

        for (size_t off = 0; off < size && r == 0; off += chunk) {
                r = fy_stomp_parser_feed(p, data + off, MIN(chunk, size - off));
                if (r < 0 && !fy_stomp_parser_error(p))
                        abort();
                while (fy_stomp_parser_next(p, &f) == 1) {
                        g_autoptr(fy_stomp_frame) frame = f;

                        if (frame->body_len > limits.max_frame || frame->n_headers > limits.max_headers)
                                abort();
                        (void) fy_stomp_frame_get_header(frame, "content-length");
                        check_round_trip(frame);
                }
        }
        (void) fy_stomp_parser_heartbeats(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const size_t chunks[] = { 1, 3, 64, SIZE_MAX };

        for (size_t i = 0; i < G_N_ELEMENTS(chunks); i++)
                run(data, size, chunks[i]);
        return 0;
}
