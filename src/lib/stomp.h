/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * STOMP 1.2 frame codec (https://stomp.github.io/stomp-specification-1.2.html),
 * as VDSM speaks it. Pure byte handling: no I/O, no logging, no allocation
 * beyond the limits given. Every buffer that grows from peer input is capped.
 */

#include <stddef.h>
#include <stdbool.h>
#include <glib.h>

struct fy_stomp_limits {
        size_t max_frame;        /* command + headers + body, bytes */
        size_t max_headers;      /* header lines per frame */
        size_t max_header_line;  /* bytes of one header line (name:value) */
};

#define FY_STOMP_DEFAULT_MAX_FRAME (4u * 1024 * 1024)
#define FY_STOMP_DEFAULT_MAX_HEADERS 64
#define FY_STOMP_DEFAULT_MAX_HEADER_LINE 8192

struct fy_stomp_header {
        char *name;
        char *value;
};

struct fy_stomp_frame {
        char *command;                  /* e.g. "SEND" */
        struct fy_stomp_header *headers;
        size_t n_headers;
        char *body;                     /* NUL-terminated for convenience; may hold NULs if content-length says so */
        size_t body_len;
};

/* GLib autoptr glue needs a plain type name (the one typedef the style allows). */
typedef struct fy_stomp_frame fy_stomp_frame;
typedef struct fy_stomp_parser fy_stomp_parser;

void fy_stomp_frame_free(struct fy_stomp_frame *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(fy_stomp_frame, fy_stomp_frame_free)

/* First occurrence wins (STOMP 1.2 §"Repeated Header Entries"). NULL if absent. */
const char *fy_stomp_frame_get_header(const struct fy_stomp_frame *f, const char *name);

struct fy_stomp_parser;
/* limits may be NULL for the defaults. */
struct fy_stomp_parser *fy_stomp_parser_new(const struct fy_stomp_limits *limits);
void fy_stomp_parser_free(struct fy_stomp_parser *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(fy_stomp_parser, fy_stomp_parser_free)

/*
 * Feeds bytes received from the peer. Returns 0, or a negative errno once the
 * stream is unusable: -EMSGSIZE (a limit was exceeded), -EBADMSG (malformed
 * frame). After an error the parser stays failed; fy_stomp_parser_error()
 * gives a human readable reason ("header line exceeds 8192 bytes", …).
 */
int fy_stomp_parser_feed(struct fy_stomp_parser *p, const void *data, size_t len);

/*
 * Takes the next complete frame. Returns 1 and sets *ret_frame, 0 when no
 * complete frame is buffered, or the negative errno of a failed parser.
 * Heart-beat EOLs ("\n" or "\r\n") between frames are consumed silently and
 * counted (see fy_stomp_parser_heartbeats()).
 */
int fy_stomp_parser_next(struct fy_stomp_parser *p, struct fy_stomp_frame **ret_frame);
const char *fy_stomp_parser_error(const struct fy_stomp_parser *p);
guint64 fy_stomp_parser_heartbeats(const struct fy_stomp_parser *p);

/*
 * Encodes a frame. headers is a NULL-terminated list of name, value pairs.
 * Header names/values are escaped per STOMP 1.2 except for CONNECT and
 * CONNECTED frames. When body is non-NULL a content-length header is added
 * (callers must not pass one). Returns a newly allocated GBytes.
 */
GBytes *fy_stomp_frame_encode(const char *command, const char *const *headers,
                              const void *body, size_t body_len);
