/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Parsers of everything a client or the engine sends to the image transfer
 * endpoint (transfer.c): the request path, Range, Content-Range, the flush
 * query, PATCH bodies and Host.add_image_ticket's ticket. Pure functions, no
 * I/O and no logging, so the unit test and the fuzzer drive them alone.
 *
 * The HTTP parsers return 0 or -errno, and on failure set *error to the
 * sentence the client gets; agent_xfer_http_status() turns the -errno into
 * the status: -EINVAL 400 (malformed), -ERANGE 416 (well formed but not
 * satisfiable), -EOPNOTSUPP 416 (a form this server does not serve:
 * several ranges, a unit other than bytes), -E2BIG 413 (body too large).
 * Output parameters are set only on success.
 *
 * Numbers are decimal digits only (no sign, no blanks, no "0x"), at most
 * AGENT_XFER_OFFSET_MAX (2^63 - 1, the largest off_t): anything larger is
 * refused rather than clamped, so a value never wraps.
 */

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>
#include <jansson.h>

#include "storage.h"

#define AGENT_XFER_HEADER_MAX 256              /* bytes of a Range or Content-Range value */
#define AGENT_XFER_OFFSET_MAX G_MAXINT64       /* any offset, length or size on the wire */
#define AGENT_XFER_PATCH_MAX 4096              /* bytes of a PATCH body: a small JSON object */
#define AGENT_XFER_TICKET_URL_MAX 4096         /* bytes of ticket.url (PATH_MAX) */
#define AGENT_XFER_TICKET_SIZE_MAX (2 * AGENT_VOLUME_CAPACITY_MAX)
#define AGENT_TICKET_TIMEOUT_MAX (7 * 24 * 3600)   /* s of inactivity a ticket may allow */

enum agent_xfer_op {
        AGENT_XFER_OP_ZERO,
        AGENT_XFER_OP_FLUSH,
};

/* A PATCH request. offset and size are 0 for a flush. */
struct agent_xfer_patch {
        enum agent_xfer_op op;
        guint64 offset;
        guint64 size;
        bool flush;                    /* zero: fsync afterwards (default false, as ovirt-imageio) */
};

/* Host.add_image_ticket's "ticket", checked. Strings point into the JSON it came from. */
struct agent_ticket_params {
        char uuid[FY_UUID_STR_LEN + 1];        /* lower case */
        const char *url;
        const char *transfer_id;               /* NULL when not given */
        bool can_read;
        bool can_write;
        bool sparse;
        guint64 size;                          /* 0: a read ticket of the whole file */
        unsigned timeout;                      /* 1..AGENT_TICKET_TIMEOUT_MAX */
        bool has_generation;
        unsigned generation;
};

/* The HTTP status for a parser's -errno (400, 413 or 416). */
guint agent_xfer_http_status(int r);

/* "/images/<uuid>" or "/images/<uuid>/extents" → the ticket uuid, lower case. -ENOENT for anything else. */
int agent_xfer_parse_path(const char *path, char ret_uuid[FY_UUID_STR_LEN + 1], bool *ret_extents);

/*
 * A GET's Range against an image of size bytes: "bytes=A-B", "bytes=A-" or
 * the suffix form "bytes=-N" (the last N bytes), one range only. B past the
 * end and N over the size are cut to the image, as RFC 9110 says; A at or
 * past the end, "bytes=-0" and any range of an empty image are -ERANGE.
 */
int agent_xfer_parse_range(const char *value, guint64 size, guint64 *ret_start, guint64 *ret_length,
                           GError **error);

/*
 * A PUT's Content-Range: "bytes A-B/TOTAL" with B < TOTAL, or with "*" for
 * TOTAL, naming exactly the length bytes of the body (its Content-Length). An
 * empty body has no range to name: it must come without the header.
 */
int agent_xfer_parse_content_range(const char *value, guint64 length, guint64 *ret_start, GError **error);

/*
 * The "filename" query parameter of a GET: the browser saves the response as
 * that file (Content-Disposition: attachment). 1-255 of [A-Za-z0-9._-], not
 * starting with a dot, so it needs no quoting in the header; else -EINVAL.
 */
#define AGENT_XFER_FILENAME_MAX 255
int agent_xfer_parse_filename(const char *value, GError **error);

/* The "flush" query parameter: absent → dflt; y/yes/true/1 or n/no/false/0, else -EINVAL. */
int agent_xfer_parse_flush(const char *value, bool dflt, bool *ret, GError **error);

/*
 * A PATCH body: a JSON object of at most AGENT_XFER_PATCH_MAX bytes, either
 * {"op": "zero", "offset": N, "size": N, "flush"?: bool} or {"op": "flush"}.
 * Unknown keys are refused (a misspelt "size" must not turn a zero into a
 * no-op the client believes done), and so are duplicate keys.
 */
int agent_xfer_parse_patch(const void *body, size_t len, struct agent_xfer_patch *ret, GError **error);

/* Whether [offset, offset+length) lies inside [0, size); never overflows. */
bool agent_xfer_range_fits(guint64 size, guint64 offset, guint64 length);

/*
 * Host.add_image_ticket's "ticket" object. Errors are FY_ERR_INVALID_PARAMS
 * with the message for the engine, and -EINVAL. Keys this agent does not use
 * (VDSM's "dirty", "filename", …) are ignored: the caller is the engine on
 * an authenticated connection, and imageio tickets carry more than Ferry
 * needs.
 */
int agent_ticket_params_parse(json_t *ticket, struct agent_ticket_params *ret, GError **error);

/* The local path of a ticket url, which must be file:///<absolute path> with no host. */
int agent_ticket_url_path(const char *url, char **ret_path, GError **error);

/*
 * Which volume the real (symlink-free) path names: it must be
 * <root>/<sd>/images/<img>/<vol> with UUIDs. -EACCES for anything else.
 */
int agent_ticket_volume_of(const char *real, const char *root, struct agent_volref *ret_ref);

#define AGENT_QCOW2_MIN_CLUSTER_BITS 9
#define AGENT_QCOW2_MAX_CLUSTER_BITS 21
/* Bytes of an uploaded qcow2 file the header check reads: the largest first cluster. */
#define AGENT_QCOW2_HEADER_READ (1u << AGENT_QCOW2_MAX_CLUSTER_BITS)
#define AGENT_QCOW2_MAX_EXTENSIONS 64

/*
 * The header of an uploaded qcow2 image, checked before qemu-img opens it
 * (qemu-img would follow what the header names). buf holds the file's
 * first min(file size, AGENT_QCOW2_HEADER_READ) bytes. Refused: no qcow2
 * magic, a version other than 2 or 3, a backing file (offset != 0),
 * encryption (method != 0 or an encryption header extension), a header
 * length out of bounds, the external data file bit, the corrupt bit or any
 * incompatible feature bit this code does not know, header extensions
 * that leave the first cluster, and an external data file name extension.
 * Returns 0 with the virtual size, or -EINVAL with *error (FY_ERR_COPY)
 * saying why.
 */
int agent_qcow2_header_check(const void *buf, size_t len, guint64 *ret_virtual_size, GError **error);
/* Refuses an upload's content: *error FY_ERR_COPY (the data's fault, not the host's) with the sentence; -EINVAL. */
int agent_upload_refuse(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
