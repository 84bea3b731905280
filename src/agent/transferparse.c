/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Parsers of the image transfer endpoint's requests and tickets (see transferparse.h). */
#include <errno.h>
#include <string.h>

#include <libsoup/soup.h>

#include "error.h"
#include "jsonrpc.h"
#include "transferparse.h"
#include "uuid.h"

#define SHOWN_MAX 32                   /* bytes of client input echoed back in a message */

static int fail(GError **error, int r, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail(GError **error, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_propagate_error(error, g_error_new_valist(FY_ERROR, FY_ERR_INVALID_PARAMS, fmt, ap));
        va_end(ap);
        return r;
}

/* At most SHOWN_MAX bytes of s, escaped to printable ASCII, for an error message. */
static char *shown(const char *s, size_t len)
{
        g_autofree char *cut = g_strndup(s, MIN(len, (size_t) SHOWN_MAX));
        g_autofree char *esc = g_strescape(cut, NULL);

        return len <= SHOWN_MAX ? g_steal_pointer(&esc) : g_strconcat(esc, "...", NULL);
}

guint agent_xfer_http_status(int r)
{
        switch (r) {
        case -ERANGE:
        case -EOPNOTSUPP:
                return SOUP_STATUS_REQUESTED_RANGE_NOT_SATISFIABLE;
        case -E2BIG:
                return SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE;
        default:
                return SOUP_STATUS_BAD_REQUEST;
        }
}

/* [s, s+len) as a number of 1+ decimal digits ≤ AGENT_XFER_OFFSET_MAX; false for anything else. */
static bool parse_number(const char *s, size_t len, guint64 *ret)
{
        guint64 v = 0;

        if (len == 0)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned d;

                if (!g_ascii_isdigit(s[i]))
                        return false;
                d = (unsigned) (s[i] - '0');
                if (v > ((guint64) AGENT_XFER_OFFSET_MAX - d) / 10)
                        return false;
                v = v * 10 + d;
        }
        *ret = v;
        return true;
}

/* A header value's length, or -EINVAL past AGENT_XFER_HEADER_MAX. */
static int header_length(const char *name, const char *value, size_t *ret, GError **error)
{
        size_t len = strnlen(value, AGENT_XFER_HEADER_MAX + 1);

        if (len > AGENT_XFER_HEADER_MAX)
                return fail(error, -EINVAL, "the %s header is longer than %d bytes", name, AGENT_XFER_HEADER_MAX);
        *ret = len;
        return 0;
}

int agent_xfer_parse_path(const char *path, char ret_uuid[FY_UUID_STR_LEN + 1], bool *ret_extents)
{
        char uuid[FY_UUID_STR_LEN + 1];
        const char *rest;
        bool extents;

        if (!path || !g_str_has_prefix(path, "/images/"))
                return -ENOENT;
        rest = path + strlen("/images/");
        if (strnlen(rest, FY_UUID_STR_LEN) < FY_UUID_STR_LEN)
                return -ENOENT;
        memcpy(uuid, rest, FY_UUID_STR_LEN);
        uuid[FY_UUID_STR_LEN] = '\0';
        if (!fy_uuid_is_valid(uuid))
                return -ENOENT;
        rest += FY_UUID_STR_LEN;
        if (*rest == '\0')
                extents = false;
        else if (strcmp(rest, "/extents") == 0)
                extents = true;
        else
                return -ENOENT;
        for (size_t i = 0; i <= FY_UUID_STR_LEN; i++)
                ret_uuid[i] = g_ascii_tolower(uuid[i]);
        *ret_extents = extents;
        return 0;
}

int agent_xfer_parse_range(const char *value, guint64 size, guint64 *ret_start, guint64 *ret_length,
                           GError **error)
{
        const char *spec, *dash, *eq, *end;
        g_autofree char *what = NULL;
        guint64 a, b;
        size_t len = 0;
        int r;

        r = header_length("Range", value, &len, error);
        if (r < 0)
                return r;
        what = shown(value, len);
        end = value + len;
        eq = memchr(value, '=', len);
        if (!eq)
                return fail(error, -EINVAL, "Range \"%s\" is not \"bytes=START-END\"", what);
        /* Range units are case-insensitive tokens (RFC 9110 §14.1); another unit is well formed but not served. */
        if (eq - value != 5 || g_ascii_strncasecmp(value, "bytes", 5) != 0) {
                bool token = eq > value;

                for (const char *c = value; c < eq; c++)
                        token = token && (g_ascii_isalnum(*c) || *c == '-' || *c == '_');
                if (!token)
                        return fail(error, -EINVAL, "Range \"%s\" is not \"bytes=START-END\"", what);
                return fail(error, -EOPNOTSUPP, "Range \"%s\": only byte ranges are served", what);
        }
        spec = eq + 1;
        if (memchr(spec, ',', (size_t) (end - spec)))
                return fail(error, -EOPNOTSUPP, "Range \"%s\": send one range per request", what);
        dash = memchr(spec, '-', (size_t) (end - spec));
        if (!dash)
                return fail(error, -EINVAL, "Range \"%s\" is not \"bytes=START-END\"", what);

        if (dash == spec) {
                /* "bytes=-N": the last N bytes. */
                if (!parse_number(dash + 1, (size_t) (end - dash - 1), &b))
                        return fail(error, -EINVAL, "Range \"%s\": the suffix length must be a number of at most "
                                    "%" G_GINT64_FORMAT, what, AGENT_XFER_OFFSET_MAX);
                if (b == 0)
                        return fail(error, -ERANGE, "Range \"%s\" asks for no bytes", what);
                if (size == 0)
                        return fail(error, -ERANGE, "Range \"%s\": the image is empty", what);
                b = MIN(b, size);
                *ret_start = size - b;
                *ret_length = b;
                return 0;
        }
        if (!parse_number(spec, (size_t) (dash - spec), &a))
                return fail(error, -EINVAL, "Range \"%s\": the first byte must be a number of at most %" G_GINT64_FORMAT,
                            what, AGENT_XFER_OFFSET_MAX);
        if (dash + 1 == end) {
                b = G_MAXUINT64;       /* "bytes=A-": to the end */
        } else {
                if (!parse_number(dash + 1, (size_t) (end - dash - 1), &b))
                        return fail(error, -EINVAL, "Range \"%s\": the last byte must be a number of at most %"
                                    G_GINT64_FORMAT, what, AGENT_XFER_OFFSET_MAX);
                if (b < a)
                        return fail(error, -EINVAL, "Range \"%s\": the last byte comes before the first", what);
        }
        if (a >= size)
                return fail(error, -ERANGE, "Range \"%s\" starts at or past the end of the image (%" G_GUINT64_FORMAT
                            " bytes)", what, size);
        b = MIN(b, size - 1);
        *ret_start = a;
        *ret_length = b - a + 1;
        return 0;
}

int agent_xfer_parse_content_range(const char *value, guint64 length, guint64 *ret_start, GError **error)
{
        const char *spec, *dash, *slash, *end;
        g_autofree char *what = NULL;
        guint64 a, b, total;
        size_t len = 0;
        int r;

        r = header_length("Content-Range", value, &len, error);
        if (r < 0)
                return r;
        what = shown(value, len);
        end = value + len;
        if (len < 6 || g_ascii_strncasecmp(value, "bytes ", 6) != 0)
                return fail(error, -EINVAL, "Content-Range \"%s\" is not \"bytes START-END/*\" or \"bytes START-END/SIZE\"",
                            what);
        spec = value + 6;
        slash = memchr(spec, '/', (size_t) (end - spec));
        dash = slash ? memchr(spec, '-', (size_t) (slash - spec)) : NULL;
        if (!slash || !dash)
                return fail(error, -EINVAL, "Content-Range \"%s\" is not \"bytes START-END/*\" or \"bytes START-END/SIZE\"",
                            what);
        if (!parse_number(spec, (size_t) (dash - spec), &a) || !parse_number(dash + 1, (size_t) (slash - dash - 1), &b))
                return fail(error, -EINVAL, "Content-Range \"%s\": START and END must be numbers of at most %"
                            G_GINT64_FORMAT, what, AGENT_XFER_OFFSET_MAX);
        if (b < a)
                return fail(error, -EINVAL, "Content-Range \"%s\": END comes before START", what);
        if (!(slash + 2 == end && slash[1] == '*')) {
                if (!parse_number(slash + 1, (size_t) (end - slash - 1), &total))
                        return fail(error, -EINVAL, "Content-Range \"%s\": the size after / must be * or a number of at "
                                    "most %" G_GINT64_FORMAT, what, AGENT_XFER_OFFSET_MAX);
                if (b >= total)
                        return fail(error, -EINVAL, "Content-Range \"%s\": END is not below the size after /", what);
        }
        if (length == 0)
                return fail(error, -EINVAL, "Content-Range \"%s\" names bytes but the body is empty; send an empty "
                            "body without Content-Range", what);
        if (b - a + 1 != length)
                return fail(error, -EINVAL, "Content-Range \"%s\" names %" G_GUINT64_FORMAT " bytes but the body has %"
                            G_GUINT64_FORMAT, what, b - a + 1, length);
        *ret_start = a;
        return 0;
}

int agent_xfer_parse_filename(const char *value, GError **error)
{
        size_t n = strnlen(value, AGENT_XFER_FILENAME_MAX + 1);
        g_autofree char *what = NULL;

        if (n == 0 || n > AGENT_XFER_FILENAME_MAX || value[0] == '.')
                goto bad;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isalnum(value[i]) && !strchr("._-", value[i]))
                        goto bad;
        return 0;
bad:
        what = shown(value, MIN(n, 64));
        return fail(error, -EINVAL, "filename=\"%s\": use 1-%d letters, digits, '.', '_' or '-', not starting with '.'",
                    what, AGENT_XFER_FILENAME_MAX);
}

int agent_xfer_parse_flush(const char *value, bool dflt, bool *ret, GError **error)
{
        static const char *const yes[] = { "y", "yes", "true", "1" };
        static const char *const no[] = { "n", "no", "false", "0" };
        g_autofree char *what = NULL;

        if (!value) {
                *ret = dflt;
                return 0;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
                if (strcmp(value, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcmp(value, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        what = shown(value, strlen(value));
        return fail(error, -EINVAL, "flush=\"%s\": use flush=y or flush=n", what);
}

static int patch_offset(json_t *body, const char *key, guint64 *ret, GError **error)
{
        json_t *v = json_object_get(body, key);

        if (!v)
                return fail(error, -EINVAL, "op zero needs \"%s\"", key);
        /* jansson refuses integers beyond int64 while parsing; what remains is the sign. */
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return fail(error, -EINVAL, "\"%s\" must be an integer from 0 to %" G_GINT64_FORMAT, key,
                            AGENT_XFER_OFFSET_MAX);
        *ret = (guint64) json_integer_value(v);
        return 0;
}

int agent_xfer_parse_patch(const void *body, size_t len, struct agent_xfer_patch *ret, GError **error)
{
        static const char *const keys[] = { "op", "offset", "size", "flush" };
        g_autoptr(json_t) root = NULL;
        struct agent_xfer_patch p = { 0 };
        const char *key, *op;
        json_error_t jerr;
        json_t *v;
        int r;

        if (len > AGENT_XFER_PATCH_MAX)
                return fail(error, -E2BIG, "a PATCH body is at most %d bytes, this one has %zu", AGENT_XFER_PATCH_MAX, len);
        if (len == 0)
                return fail(error, -EINVAL, "the PATCH body is empty; send {\"op\": \"zero\", \"offset\": N, \"size\": N} "
                            "or {\"op\": \"flush\"}");
        root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return fail(error, -EINVAL, "the PATCH body is not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                            jerr.column);
        if (!json_is_object(root))
                return fail(error, -EINVAL, "the PATCH body must be a JSON object");
        json_object_foreach(root, key, v) {
                bool known = false;

                for (size_t i = 0; i < G_N_ELEMENTS(keys); i++)
                        known = known || strcmp(key, keys[i]) == 0;
                if (!known) {
                        g_autofree char *what = shown(key, strlen(key));
                        return fail(error, -EINVAL, "unknown key \"%s\" in the PATCH body; known: op, offset, size, flush",
                                    what);
                }
        }
        op = json_string_value(json_object_get(root, "op"));
        if (!op)
                return fail(error, -EINVAL, "the PATCH body needs \"op\": \"zero\" or \"flush\"");
        if (strcmp(op, "flush") == 0) {
                if (json_object_size(root) != 1)
                        return fail(error, -EINVAL, "op flush takes no other key");
                p.op = AGENT_XFER_OP_FLUSH;
                *ret = p;
                return 0;
        }
        if (strcmp(op, "zero") != 0) {
                g_autofree char *what = shown(op, json_string_length(json_object_get(root, "op")));
                return fail(error, -EINVAL, "unknown op \"%s\": use zero or flush", what);
        }
        p.op = AGENT_XFER_OP_ZERO;
        if ((r = patch_offset(root, "offset", &p.offset, error)) < 0 ||
            (r = patch_offset(root, "size", &p.size, error)) < 0)
                return r;
        v = json_object_get(root, "flush");
        if (v && !json_is_boolean(v))
                return fail(error, -EINVAL, "\"flush\" must be true or false");
        p.flush = json_is_true(v);
        *ret = p;
        return 0;
}

bool agent_xfer_range_fits(guint64 size, guint64 offset, guint64 length)
{
        return offset <= size && length <= size - offset;
}

int agent_ticket_url_path(const char *url, char **ret_path, GError **error)
{
        g_autofree char *host = NULL;
        g_autofree char *path = NULL;

        path = g_filename_from_uri(url, &host, NULL);
        if (!path || (host && *host) || !g_path_is_absolute(path) || strlen(path) >= AGENT_XFER_TICKET_URL_MAX) {
                g_autofree char *what = shown(url, strlen(url));
                return fail(error, -EINVAL, "ticket.url must be file:///<path of a volume>, got \"%s\"", what);
        }
        *ret_path = g_steal_pointer(&path);
        return 0;
}

int agent_ticket_volume_of(const char *real, const char *root, struct agent_volref *ret_ref)
{
        g_auto(GStrv) parts = NULL;
        size_t rl = strlen(root);

        /* "/" as the root would make every path start with root + '/'; storage never lives there. */
        if (rl < 2 || root[0] != '/' || root[rl - 1] == '/')
                return -EACCES;
        if (strncmp(real, root, rl) != 0 || real[rl] != '/')
                return -EACCES;
        parts = g_strsplit(real + rl + 1, "/", 0);
        if (g_strv_length(parts) != 4 || !fy_uuid_is_valid(parts[0]) || strcmp(parts[1], "images") != 0 ||
            !fy_uuid_is_valid(parts[2]) || !fy_uuid_is_valid(parts[3]))
                return -EACCES;
        for (size_t i = 0; i <= FY_UUID_STR_LEN; i++) {
                ret_ref->sd[i] = g_ascii_tolower(parts[0][i]);
                ret_ref->img[i] = g_ascii_tolower(parts[2][i]);
                ret_ref->vol[i] = g_ascii_tolower(parts[3][i]);
        }
        return 0;
}

int agent_ticket_params_parse(json_t *tk, struct agent_ticket_params *ret, GError **error)
{
        g_autoptr(GError) local = NULL;
        g_autofree char *path = NULL;
        struct agent_ticket_params p = { 0 };
        const char *uuid = NULL;
        guint64 timeout = 0, gen = 0;
        json_t *ops, *op;
        size_t i;

        if (!json_is_object(tk))
                return fail(error, -EINVAL, "ticket: must be an object");
        if (fy_rpc_param_uuid(tk, "uuid", true, &uuid, &local) < 0 ||
            fy_rpc_param_uint(tk, "timeout", true, AGENT_TICKET_TIMEOUT_MAX, &timeout, &local) < 0 ||
            fy_rpc_param_uint(tk, "size", false, AGENT_XFER_TICKET_SIZE_MAX, &p.size, &local) < 0 ||
            fy_rpc_param_string(tk, "url", true, AGENT_XFER_TICKET_URL_MAX, &p.url, &local) < 0 ||
            fy_rpc_param_bool(tk, "sparse", false, &p.sparse, &local) < 0 ||
            fy_rpc_param_uuid(tk, "transfer_id", false, &p.transfer_id, &local) < 0 ||
            fy_rpc_param_uint(tk, "generation", false, FY_GEN_MAX, &gen, &local) < 0)
                return fail(error, -EINVAL, "ticket: %s", local->message);
        if (timeout == 0)
                return fail(error, -EINVAL, "ticket.timeout must be 1-%d seconds", AGENT_TICKET_TIMEOUT_MAX);
        ops = json_object_get(tk, "ops");
        if (!json_is_array(ops) || json_array_size(ops) < 1 || json_array_size(ops) > 2)
                return fail(error, -EINVAL, "ticket.ops must be [\"read\"], [\"write\"] or both");
        json_array_foreach(ops, i, op) {
                const char *s = json_string_value(op);

                if (s && strcmp(s, "read") == 0) {
                        p.can_read = true;
                } else if (s && strcmp(s, "write") == 0) {
                        p.can_write = true;
                        p.can_read = true;     /* as in ovirt-imageio: a writer may read back */
                } else {
                        return fail(error, -EINVAL, "ticket.ops must be [\"read\"], [\"write\"] or both");
                }
        }
        if (p.can_write && p.size == 0)
                return fail(error, -EINVAL, "ticket.size is required for a write ticket: the bytes the client may write");
        if (agent_ticket_url_path(p.url, &path, error) < 0)
                return -EINVAL;
        for (i = 0; i <= FY_UUID_STR_LEN; i++)
                p.uuid[i] = g_ascii_tolower(uuid[i]);
        p.timeout = (unsigned) timeout;
        /* null counts as absent, as for every other optional parameter. */
        p.has_generation = !json_is_null(json_object_get(tk, "generation")) && json_object_get(tk, "generation");
        p.generation = (unsigned) gen;
        *ret = p;
        return 0;
}

/* ---- qcow2 header of an uploaded image ---- */

#define QCOW2_MAGIC 0x514649fbu                 /* "QFI\xfb" */
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 104
#define QCOW2_INCOMPAT_DIRTY (1u << 0)
#define QCOW2_INCOMPAT_CORRUPT (1u << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1u << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1u << 3)
#define QCOW2_INCOMPAT_EXTL2 (1u << 4)
#define QCOW2_EXT_END 0u
#define QCOW2_EXT_DATA_FILE 0x44415441u
#define QCOW2_EXT_CRYPTO 0x0537be77u

int agent_upload_refuse(GError **error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_propagate_error(error, g_error_new_valist(FY_ERROR, FY_ERR_COPY, fmt, ap));
        va_end(ap);
        return -EINVAL;
}

static guint32 be32_at(const guint8 *p, size_t off)
{
        return (guint32) p[off] << 24 | (guint32) p[off + 1] << 16 | (guint32) p[off + 2] << 8 | p[off + 3];
}

static guint64 be64_at(const guint8 *p, size_t off)
{
        return (guint64) be32_at(p, off) << 32 | be32_at(p, off + 4);
}

int agent_qcow2_header_check(const void *buf, size_t len, guint64 *ret_virtual_size, GError **error)
{
        const guint8 *p = buf;
        guint32 version, cluster_bits, header_len;
        guint64 incompat = 0, vsize, cluster;
        size_t off, end;

        if (len < QCOW2_V2_HEADER_LEN || be32_at(p, 0) != QCOW2_MAGIC)
                return agent_upload_refuse(error, "the uploaded data is not a qcow2 image (no qcow2 header)");
        version = be32_at(p, 4);
        if (version != 2 && version != 3)
                return agent_upload_refuse(error, "the uploaded qcow2 image has version %u; only versions 2 and 3 are "
                                           "accepted", version);
        if (be64_at(p, 8) != 0)
                return agent_upload_refuse(error, "the uploaded qcow2 image has a backing file; upload a self-contained image");
        cluster_bits = be32_at(p, 20);
        if (cluster_bits < AGENT_QCOW2_MIN_CLUSTER_BITS || cluster_bits > AGENT_QCOW2_MAX_CLUSTER_BITS)
                return agent_upload_refuse(error, "the uploaded qcow2 image has cluster_bits %u (%u-%u are valid)",
                                           cluster_bits, AGENT_QCOW2_MIN_CLUSTER_BITS, AGENT_QCOW2_MAX_CLUSTER_BITS);
        cluster = G_GUINT64_CONSTANT(1) << cluster_bits;
        vsize = be64_at(p, 24);
        if (be32_at(p, 32) != 0)
                return agent_upload_refuse(error, "the uploaded qcow2 image is encrypted (method %u); upload an "
                                           "unencrypted image", be32_at(p, 32));
        if (version == 2) {
                header_len = QCOW2_V2_HEADER_LEN;
        } else {
                if (len < QCOW2_V3_HEADER_LEN)
                        return agent_upload_refuse(error, "the uploaded qcow2 image's header is cut short");
                incompat = be64_at(p, 72);
                header_len = be32_at(p, 100);
                if (header_len < QCOW2_V3_HEADER_LEN || header_len % 8 != 0 || header_len > cluster)
                        return agent_upload_refuse(error, "the uploaded qcow2 image has a header length of %u bytes "
                                                   "(at least %u, a multiple of 8, within the first cluster)", header_len,
                                                   QCOW2_V3_HEADER_LEN);
        }
        if (incompat & QCOW2_INCOMPAT_DATA_FILE)
                return agent_upload_refuse(error, "the uploaded qcow2 image has an external data file; that is refused");
        if (incompat & QCOW2_INCOMPAT_CORRUPT)
                return agent_upload_refuse(error, "the uploaded qcow2 image is marked corrupt; repair it "
                                           "(qemu-img check -r all) first");
        if (incompat & ~(guint64) (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2))
                return agent_upload_refuse(error, "the uploaded qcow2 image needs unknown features (incompatible "
                                           "bits 0x%" G_GINT64_MODIFIER "x)", incompat & ~(guint64)
                                           (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2));

        /* Header extensions: from the end of the header to the end of the first cluster, each 8-aligned. */
        end = (size_t) MIN((guint64) len, cluster);
        off = header_len;
        for (unsigned n = 0;; n++) {
                guint32 type, elen;

                if (n >= AGENT_QCOW2_MAX_EXTENSIONS)
                        return agent_upload_refuse(error, "the uploaded qcow2 image has more than %u header extensions",
                                                   AGENT_QCOW2_MAX_EXTENSIONS);
                if (off > end || end - off < 8)
                        return agent_upload_refuse(error, "the uploaded qcow2 image's header extensions run past its "
                                                   "first cluster");
                type = be32_at(p, off);
                elen = be32_at(p, off + 4);
                if (type == QCOW2_EXT_END)
                        break;
                if (type == QCOW2_EXT_DATA_FILE)
                        return agent_upload_refuse(error, "the uploaded qcow2 image names an external data file; "
                                                   "that is refused");
                if (type == QCOW2_EXT_CRYPTO)
                        return agent_upload_refuse(error, "the uploaded qcow2 image carries an encryption header; "
                                                   "that is refused");
                off += 8;
                if (elen > end - off || ((guint64) elen + 7) / 8 * 8 > end - off)
                        return agent_upload_refuse(error, "the uploaded qcow2 image's header extension 0x%08x runs "
                                                   "past its first cluster", type);
                off += ((size_t) elen + 7) / 8 * 8;
        }
        *ret_virtual_size = vsize;
        return 0;
}
