/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The request head scan (httphead.h): fed in pieces of any size, it ends in
 * the same state after the same number of bytes as fed at once; a head that
 * ends, ends with an LF; a refusal says why.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httphead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct fy_http_head whole, parts;
        size_t n_whole, n_parts = 0, step;

        if (size < 1 || size > 64 * 1024)
                return 0;
        step = data[0] % 7 + 1;         /* the first byte picks the piece size */
        data++;
        size--;
        fy_http_head_reset(&whole);
        n_whole = fy_http_head_scan(&whole, data, size);
        fy_http_head_reset(&parts);
        for (size_t off = 0; off < size; off += step) {
                size_t len = size - off < step ? size - off : step;
                size_t n = fy_http_head_scan(&parts, data + off, len);

                n_parts += n;
                if (n < len)
                        break;
        }
        if (n_whole != n_parts || whole.state != parts.state || n_whole > size)
                abort();
        if (whole.state == FY_HTTP_HEAD_END && (n_whole == 0 || data[n_whole - 1] != '\n'))
                abort();
        if ((whole.state == FY_HTTP_HEAD_BAD) != (whole.bad != NULL))
                abort();
        if (whole.state != FY_HTTP_HEAD_END && whole.state != FY_HTTP_HEAD_BAD && n_whole != size)
                abort();
        return 0;
}
