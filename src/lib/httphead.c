/* SPDX-License-Identifier: GPL-2.0-or-later */
/* See httphead.h for why the request head is scanned apart from libsoup. */
#include <stdbool.h>

#include "httphead.h"

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(unsigned char ch)
{
        static const char extra[] = "!#$%&'*+-.^_`|~";

        if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
                return true;
        for (const char *e = extra; *e; e++)
                if (ch == (unsigned char) *e)
                        return true;
        return false;
}

void fy_http_head_reset(struct fy_http_head *h)
{
        h->state = FY_HTTP_HEAD_START;
        h->after_cr = FY_HTTP_HEAD_START;
        h->bad = NULL;
        h->status = 0;
        h->bytes = 0;
        h->fields = 0;
}

static enum fy_http_head_state bad(struct fy_http_head *h, const char *why)
{
        h->bad = why;
        h->status = 400;
        return FY_HTTP_HEAD_BAD;
}

static enum fy_http_head_state too_large(struct fy_http_head *h, const char *why)
{
        h->bad = why;
        h->status = 431;
        return FY_HTTP_HEAD_BAD;
}

/* Where an LF leads from a state: the line it ends is over. */
static enum fy_http_head_state line_end(struct fy_http_head *h, enum fy_http_head_state from)
{
        switch (from) {
        case FY_HTTP_HEAD_START:
                return FY_HTTP_HEAD_START;
        case FY_HTTP_HEAD_REQUEST_LINE:
        case FY_HTTP_HEAD_VALUE:
                return FY_HTTP_HEAD_LINE_START;
        case FY_HTTP_HEAD_LINE_START:
                return FY_HTTP_HEAD_END;
        default:
                return bad(h, "a header line has no ':' after its name");
        }
}

static enum fy_http_head_state step(struct fy_http_head *h, unsigned char ch)
{
        switch (h->state) {
        case FY_HTTP_HEAD_START:
                if (ch == '\r' || ch == '\n')
                        break;
                return FY_HTTP_HEAD_REQUEST_LINE;
        case FY_HTTP_HEAD_LINE_START:
                if (ch == ' ' || ch == '\t')
                        return bad(h, "a header line starts with whitespace (obsolete line folding is "
                                   "not accepted)");
                if (ch == ':')
                        return bad(h, "a header has an empty name");
                if (ch != '\r' && ch != '\n') {
                        if (!is_tchar(ch))
                                return bad(h, "a header name has a character a token cannot have");
                        if (++h->fields > FY_HTTP_HEAD_MAX_FIELDS)
                                return too_large(h, "the request has more than 100 header fields");
                        return FY_HTTP_HEAD_NAME;
                }
                break;
        case FY_HTTP_HEAD_NAME:
                if (ch == ':')
                        return FY_HTTP_HEAD_VALUE;
                if (ch == ' ' || ch == '\t')
                        return bad(h, "whitespace between a header name and its ':' (RFC 9112 section 5.1)");
                if (ch != '\r' && ch != '\n' && !is_tchar(ch))
                        return bad(h, "a header name has a character a token cannot have");
                break;
        case FY_HTTP_HEAD_CR:
                if (ch != '\n')
                        return bad(h, "a CR not followed by LF in the request head");
                return line_end(h, h->after_cr);
        case FY_HTTP_HEAD_REQUEST_LINE:
        case FY_HTTP_HEAD_VALUE:
                /* RFC 9110 §5.5: a field value has no control character but HTAB (a forged log line...). */
                if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 0x7f)
                        return bad(h, "a control character in the request head");
                break;
        default:
                break;
        }
        if (ch == '\r') {
                h->after_cr = h->state;
                return FY_HTTP_HEAD_CR;
        }
        if (ch == '\n') {
                /* Leading empty lines may be bare LFs (RFC 9112 §2.2); the head's lines end with CRLF. */
                if (h->state != FY_HTTP_HEAD_START)
                        return bad(h, "a line of the request head ends with a bare LF, not CRLF");
                return line_end(h, h->state);
        }
        return h->state;
}

size_t fy_http_head_scan(struct fy_http_head *h, const void *data, size_t len)
{
        const unsigned char *p = data;
        size_t i;

        for (i = 0; i < len; i++) {
                if (h->state == FY_HTTP_HEAD_END || h->state == FY_HTTP_HEAD_BAD)
                        break;
                if (++h->bytes > FY_HTTP_HEAD_MAX_BYTES) {
                        h->state = too_large(h, "the request head is larger than 64 KiB");
                        break;
                }
                h->state = step(h, p[i]);
                if (h->state == FY_HTTP_HEAD_BAD)
                        break;
        }
        return i;
}
