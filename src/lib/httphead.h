/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * A strict scan of an HTTP/1.1 request head (request line and header
 * fields, up to the empty line), fed in pieces as the bytes reach libsoup.
 * libsoup 3.2 silently drops a field line it cannot split ("Content-Length :
 * 5", "Content Length: 5", a line without a colon) and joins a line that
 * starts with whitespace to the one before (obsolete folding): a proxy in
 * front may read such a line as a length, and the body then as a second
 * request (smuggling). RFC 9112 §5.1 says a server must reject whitespace
 * between a field name and its colon with 400; §5.2 lets it reject folding.
 * The scan refuses: a field name that is not a token or not followed by ':'
 * at once, a line that starts with whitespace, a field line without a
 * colon, a bare CR, a bare LF, a control character other than HTAB in the
 * request line or a field value. Leading empty lines before the request
 * line are skipped (§2.2).
 */
#include <stddef.h>

/*
 * A head larger than this, or with more header fields, is refused with 431
 * as soon as the limit is crossed, before libsoup buffers it (libsoup resets
 * such a connection without an answer). 100 fields and 64 KiB are far above
 * what Ferry's CLI, agents or a browser send.
 */
#define FY_HTTP_HEAD_MAX_BYTES (64 * 1024)
#define FY_HTTP_HEAD_MAX_FIELDS 100

enum fy_http_head_state {
        FY_HTTP_HEAD_START,             /* before the request line (empty lines skipped) */
        FY_HTTP_HEAD_REQUEST_LINE,
        FY_HTTP_HEAD_LINE_START,        /* at the start of a field line (or the empty line) */
        FY_HTTP_HEAD_NAME,
        FY_HTTP_HEAD_VALUE,
        FY_HTTP_HEAD_CR,                /* a CR, wanting its LF */
        FY_HTTP_HEAD_END,               /* the head ended: the body (if any) follows */
        FY_HTTP_HEAD_BAD,
};

struct fy_http_head {
        enum fy_http_head_state state;
        enum fy_http_head_state after_cr;       /* where an LF after a CR leads */
        const char *bad;                        /* why, once FY_HTTP_HEAD_BAD (a static string) */
        unsigned status;                        /* once BAD: 400, or 431 (a limit above) */
        size_t bytes;                           /* of the head so far */
        unsigned fields;                        /* header field lines so far */
};

void fy_http_head_reset(struct fy_http_head *h);
/*
 * Scans len more bytes of the head. Returns how many belong to it: all of
 * them, or up to and including the head's last LF (state END), or up to the
 * byte that is wrong (state BAD, excluded). Once END or BAD it scans no more.
 */
size_t fy_http_head_scan(struct fy_http_head *h, const void *data, size_t len);
