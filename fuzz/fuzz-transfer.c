/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Drives every parser of the image transfer endpoint (transferparse.c)
 * with arbitrary bytes. The first byte picks the parser ('Q': the qcow2
 * header check on the rest, else the byte modulo SEL_COUNT); for Range and
 * Content-Range the next 8 bytes (little endian) are the image size or
 * the body length; the rest is the input. Whatever the input, a parser
 * must return 0 with its outputs consistent, or an error with a message,
 * and never read or write out of bounds (run under ASan/UBSan too).
 */
#include <errno.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include <jansson.h>

#include "jsonrpc.h"
#include "transferparse.h"

enum { SEL_PATH, SEL_RANGE, SEL_CONTENT_RANGE, SEL_FLUSH, SEL_PATCH, SEL_TICKET, SEL_URL, SEL_VOLUME, SEL_COUNT };

static void check_error(int r, GError *error)
{
        guint status;

        if (r >= 0 || !error || !error->message[0])
                abort();
        status = agent_xfer_http_status(r);
        if (status != 400 && status != 413 && status != 416)
                abort();
        /* What the client reads is bounded whatever it sent. */
        if (strlen(error->message) > 1024)
                abort();
}

static guint64 take_u64(const uint8_t **data, size_t *size)
{
        guint64 v = 0;

        for (unsigned i = 0; i < 8 && *size > 0; i++) {
                v |= (guint64) **data << (8 * i);
                (*data)++;
                (*size)--;
        }
        return v;
}

static void fuzz_range(const char *s, guint64 size)
{
        g_autoptr(GError) error = NULL;
        guint64 start = 1, length = 1;
        int r = agent_xfer_parse_range(s, size, &start, &length, &error);

        if (r < 0) {
                check_error(r, error);
                return;
        }
        if (error || length == 0 || start >= size || length > size - start)
                abort();
}

static void fuzz_content_range(const char *s, guint64 length)
{
        g_autoptr(GError) error = NULL;
        guint64 start = 0;
        int r = agent_xfer_parse_content_range(s, length, &start, &error);

        if (r < 0) {
                check_error(r, error);
                return;
        }
        if (error || length == 0 || start > (guint64) AGENT_XFER_OFFSET_MAX ||
            length - 1 > (guint64) AGENT_XFER_OFFSET_MAX - start)
                abort();
}

static void fuzz_patch(const uint8_t *data, size_t size)
{
        g_autoptr(GError) error = NULL;
        struct agent_xfer_patch p;
        int r = agent_xfer_parse_patch(data, size, &p, &error);

        if (r < 0) {
                check_error(r, error);
                return;
        }
        if (error || size > AGENT_XFER_PATCH_MAX)
                abort();
        if (p.op == AGENT_XFER_OP_FLUSH && (p.offset || p.size || p.flush))
                abort();
        if (p.op != AGENT_XFER_OP_FLUSH && p.op != AGENT_XFER_OP_ZERO)
                abort();
        if (p.offset > (guint64) AGENT_XFER_OFFSET_MAX || p.size > (guint64) AGENT_XFER_OFFSET_MAX)
                abort();
        /* The ticket check that follows must hold for any size, without wrapping. */
        if (agent_xfer_range_fits(p.offset, p.offset, p.size) != (p.size == 0))
                abort();
}

static void fuzz_qcow2(const uint8_t *data, size_t size)
{
        g_autoptr(GError) error = NULL;
        guint64 vsize = 0;
        int r = agent_qcow2_header_check(data, size, &vsize, &error);

        if (r == 0 && (error || size < 72 || memcmp(data, "QFI\xfb", 4) != 0))
                abort();
        if (r < 0 && (r != -EINVAL || !error || strlen(error->message) > 1024))
                abort();
}

static void fuzz_ticket(const uint8_t *data, size_t size)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) tk = json_loadb((const char *) data, size, 0, NULL);
        struct agent_ticket_params p;
        int r;

        if (!tk)
                return;
        r = agent_ticket_params_parse(tk, &p, &error);
        if (r < 0) {
                if (r != -EINVAL || !error)
                        abort();
                return;
        }
        if (error || p.timeout == 0 || p.timeout > AGENT_TICKET_TIMEOUT_MAX || !p.url ||
            p.size > AGENT_XFER_TICKET_SIZE_MAX || (p.can_write && (!p.can_read || p.size == 0)) ||
            !p.can_read || p.generation > FY_GEN_MAX || strlen(p.uuid) != FY_UUID_STR_LEN)
                abort();
        for (size_t i = 0; i < FY_UUID_STR_LEN; i++)
                if (g_ascii_isupper(p.uuid[i]))
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autofree char *s = NULL;
        g_autofree char *path = NULL;
        g_autoptr(GError) error = NULL;
        char uuid[FY_UUID_STR_LEN + 1];
        struct agent_volref ref;
        unsigned sel;
        guint64 n = 0;
        bool b;
        int r;

        if (size == 0)
                return 0;
        if (data[0] == 'Q') {
                fuzz_qcow2(data + 1, size - 1);
                return 0;
        }
        sel = data[0] % SEL_COUNT;
        data++;
        size--;
        if (sel == SEL_RANGE || sel == SEL_CONTENT_RANGE)
                n = take_u64(&data, &size);
        /* Headers, queries and paths arrive as C strings: they end at the first NUL. */
        s = g_strndup((const char *) data, size);

        switch (sel) {
        case SEL_PATH:
                b = false;
                r = agent_xfer_parse_path(s, uuid, &b);
                if (r == 0 && (strlen(uuid) != FY_UUID_STR_LEN || strlen(s) != 8 + FY_UUID_STR_LEN + (b ? 8 : 0)))
                        abort();
                if (r != 0 && r != -ENOENT)
                        abort();
                break;
        case SEL_RANGE:
                fuzz_range(s, n);
                /* The same header against the sizes where the boundaries are. */
                fuzz_range(s, 0);
                fuzz_range(s, 1);
                fuzz_range(s, G_MAXINT64);
                fuzz_range(s, G_MAXUINT64);
                break;
        case SEL_CONTENT_RANGE:
                fuzz_content_range(s, n);
                fuzz_content_range(s, 0);
                fuzz_content_range(s, 1);
                break;
        case SEL_FLUSH:
                r = agent_xfer_parse_flush(s, true, &b, &error);
                if (r < 0)
                        check_error(r, error);
                g_clear_error(&error);
                r = agent_xfer_parse_filename(s, &error);
                if (r < 0)
                        check_error(r, error);
                break;
        case SEL_PATCH:
                fuzz_patch(data, size);
                break;
        case SEL_TICKET:
                fuzz_ticket(data, size);
                break;
        case SEL_URL:
                r = agent_ticket_url_path(s, &path, &error);
                if (r == 0 && (!path || path[0] != '/' || error))
                        abort();
                if (r < 0 && (r != -EINVAL || !error))
                        abort();
                break;
        case SEL_VOLUME: {
                /* "REAL\nROOT" */
                char *nl = strchr(s, '\n');

                if (!nl)
                        break;
                *nl = '\0';
                r = agent_ticket_volume_of(s, nl + 1, &ref);
                if (r == 0 && (!g_str_has_prefix(s, nl + 1) || strlen(ref.vol) != FY_UUID_STR_LEN))
                        abort();
                if (r != 0 && r != -EACCES)
                        abort();
                break;
        }
        }
        return 0;
}
