/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * STOMP 1.2 frame codec.
 *
 * The parser is a byte-driven state machine: fy_stomp_parser_feed() consumes
 * every byte it is given, so limits are enforced the moment they are crossed
 * and nothing beyond the current header line and the current body is ever
 * buffered. Completed frames wait in a queue for fy_stomp_parser_next().
 */

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "stomp.h"

/* Body bytes reserved when a content-length header arrives; the rest grows with the data. */
#define FY_STOMP_BODY_PREALLOC (64 * 1024)

enum parser_state {
        STATE_IDLE,             /* between frames: heart-beat EOLs or a command */
        STATE_IDLE_CR,          /* saw '\r' between frames, need '\n' */
        STATE_COMMAND,          /* reading the command line */
        STATE_HEADER,           /* reading a header line (or the blank line) */
        STATE_BODY_LENGTH,      /* reading content-length body bytes */
        STATE_BODY_END,         /* need the NUL after a content-length body */
        STATE_BODY_NUL,         /* body without content-length: up to the NUL */
        STATE_FAILED,
};

struct fy_stomp_parser {
        struct fy_stomp_limits limits;
        enum parser_state state;

        GByteArray *line;       /* current command or header line, without EOL */
        bool line_cr;           /* a '\r' is pending: EOL if '\n' follows */
        size_t frame_bytes;     /* bytes of the current frame consumed so far */

        char *command;
        GArray *headers;        /* of struct fy_stomp_header */
        bool escapes;           /* header escapes apply (not CONNECT/CONNECTED) */
        GByteArray *body;
        size_t body_remaining;  /* STATE_BODY_LENGTH only */

        GQueue frames;          /* complete struct fy_stomp_frame * */
        guint64 heartbeats;

        int error;
        char *error_text;
};

void fy_stomp_frame_free(struct fy_stomp_frame *f)
{
        if (!f)
                return;
        for (size_t i = 0; i < f->n_headers; i++) {
                g_free(f->headers[i].name);
                g_free(f->headers[i].value);
        }
        g_free(f->headers);
        g_free(f->command);
        g_free(f->body);
        g_free(f);
}

const char *fy_stomp_frame_get_header(const struct fy_stomp_frame *f, const char *name)
{
        for (size_t i = 0; i < f->n_headers; i++)
                if (strcmp(f->headers[i].name, name) == 0)
                        return f->headers[i].value;
        return NULL;
}

static void header_clear(gpointer data)
{
        struct fy_stomp_header *h = data;

        g_clear_pointer(&h->name, g_free);
        g_clear_pointer(&h->value, g_free);
}

static GArray *headers_new(void)
{
        GArray *a = g_array_new(FALSE, TRUE, sizeof(struct fy_stomp_header));

        g_array_set_clear_func(a, header_clear);
        return a;
}

struct fy_stomp_parser *fy_stomp_parser_new(const struct fy_stomp_limits *limits)
{
        struct fy_stomp_parser *p = g_new0(struct fy_stomp_parser, 1);

        p->limits = (struct fy_stomp_limits) {
                .max_frame = FY_STOMP_DEFAULT_MAX_FRAME,
                .max_headers = FY_STOMP_DEFAULT_MAX_HEADERS,
                .max_header_line = FY_STOMP_DEFAULT_MAX_HEADER_LINE,
        };
        /* A zero field keeps its default, so callers can override just one. */
        if (limits) {
                if (limits->max_frame)
                        p->limits.max_frame = limits->max_frame;
                if (limits->max_headers)
                        p->limits.max_headers = limits->max_headers;
                if (limits->max_header_line)
                        p->limits.max_header_line = limits->max_header_line;
        }
        /* GByteArray lengths are guint; the body plus its NUL must fit. */
        p->limits.max_frame = MIN(p->limits.max_frame, (size_t) G_MAXUINT - 1);
        p->state = STATE_IDLE;
        p->line = g_byte_array_new();
        p->headers = headers_new();
        g_queue_init(&p->frames);
        return p;
}

static void parser_reset_frame(struct fy_stomp_parser *p)
{
        g_byte_array_set_size(p->line, 0);
        p->line_cr = false;
        p->frame_bytes = 0;
        g_clear_pointer(&p->command, g_free);
        g_array_set_size(p->headers, 0);
        p->escapes = false;
        g_clear_pointer(&p->body, g_byte_array_unref);
        p->body_remaining = 0;
}

void fy_stomp_parser_free(struct fy_stomp_parser *p)
{
        if (!p)
                return;
        parser_reset_frame(p);
        g_byte_array_unref(p->line);
        g_array_unref(p->headers);
        g_queue_clear_full(&p->frames, (GDestroyNotify) fy_stomp_frame_free);
        g_free(p->error_text);
        g_free(p);
}

G_GNUC_PRINTF(3, 4)
static int parser_fail(struct fy_stomp_parser *p, int error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        p->error_text = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        p->error = error;
        p->state = STATE_FAILED;
        parser_reset_frame(p);
        return error;
}

static int parser_count(struct fy_stomp_parser *p, size_t n)
{
        if (n > p->limits.max_frame - p->frame_bytes)
                return parser_fail(p, -EMSGSIZE, "frame exceeds %zu bytes", p->limits.max_frame);
        p->frame_bytes += n;
        return 0;
}

/* Decodes STOMP 1.2 header escapes; returns NULL on an undefined escape. */
static char *header_unescape(const char *s, size_t len)
{
        g_autofree char *out = g_malloc(len + 1);
        size_t o = 0;

        for (size_t i = 0; i < len; i++) {
                if (s[i] != '\\') {
                        out[o++] = s[i];
                        continue;
                }
                if (++i >= len)
                        return NULL;
                switch (s[i]) {
                case '\\':
                        out[o++] = '\\';
                        break;
                case 'c':
                        out[o++] = ':';
                        break;
                case 'n':
                        out[o++] = '\n';
                        break;
                case 'r':
                        out[o++] = '\r';
                        break;
                default:
                        return NULL;
                }
        }
        out[o] = '\0';
        return g_steal_pointer(&out);
}

static int parser_end_command(struct fy_stomp_parser *p)
{
        const guint8 *s = p->line->data;
        size_t len = p->line->len;

        if (len == 0)
                return parser_fail(p, -EBADMSG, "frame has an empty command");
        for (size_t i = 0; i < len; i++)
                if (s[i] < 'A' || s[i] > 'Z')
                        return parser_fail(p, -EBADMSG, "frame command is not all uppercase letters");

        p->command = g_strndup((const char *) s, len);
        p->escapes = !g_str_equal(p->command, "CONNECT") && !g_str_equal(p->command, "CONNECTED");
        g_byte_array_set_size(p->line, 0);
        p->state = STATE_HEADER;
        return 0;
}

static int parser_add_header(struct fy_stomp_parser *p)
{
        const char *s = (const char *) p->line->data;
        size_t len = p->line->len;
        struct fy_stomp_header h;
        const char *colon;

        if (p->headers->len >= p->limits.max_headers)
                return parser_fail(p, -EMSGSIZE, "frame has more than %zu headers", p->limits.max_headers);
        colon = memchr(s, ':', len);
        if (!colon)
                return parser_fail(p, -EBADMSG, "header line has no ':'");
        if (colon == s)
                return parser_fail(p, -EBADMSG, "header line has an empty name");

        if (p->escapes) {
                h.name = header_unescape(s, colon - s);
                h.value = header_unescape(colon + 1, len - (colon - s) - 1);
                if (!h.name || !h.value) {
                        g_free(h.name);
                        g_free(h.value);
                        return parser_fail(p, -EBADMSG, "header has an undefined escape sequence");
                }
        } else {
                h.name = g_strndup(s, colon - s);
                h.value = g_strndup(colon + 1, len - (colon - s) - 1);
        }
        g_array_append_val(p->headers, h);
        g_byte_array_set_size(p->line, 0);
        return 0;
}

static const char *parser_header(struct fy_stomp_parser *p, const char *name)
{
        for (guint i = 0; i < p->headers->len; i++) {
                const struct fy_stomp_header *h = &g_array_index(p->headers, struct fy_stomp_header, i);

                if (strcmp(h->name, name) == 0)
                        return h->value;
        }
        return NULL;
}

static int parser_end_headers(struct fy_stomp_parser *p)
{
        const char *cl = parser_header(p, "content-length");
        guint64 n = 0;

        if (!cl) {
                p->body = g_byte_array_new();
                p->state = STATE_BODY_NUL;
                return 0;
        }

        if (*cl == '\0')
                return parser_fail(p, -EBADMSG, "content-length is empty");
        for (const char *c = cl; *c; c++) {
                if (*c < '0' || *c > '9')
                        return parser_fail(p, -EBADMSG, "content-length '%.32s' is not a number", cl);
                if (n > (G_MAXUINT64 - (guint64) (*c - '0')) / 10)
                        return parser_fail(p, -EBADMSG, "content-length '%.32s' is out of range", cl);
                n = n * 10 + (guint64) (*c - '0');
        }
        /* Refuse an oversized body up front rather than after buffering it. */
        if (n > p->limits.max_frame - p->frame_bytes)
                return parser_fail(p, -EMSGSIZE, "frame exceeds %zu bytes", p->limits.max_frame);

        p->body_remaining = (size_t) n;
        /* Grows as bytes arrive: a header alone must not make us allocate max_frame. */
        p->body = g_byte_array_sized_new((guint) MIN(n + 1, (guint64) FY_STOMP_BODY_PREALLOC));
        p->state = p->body_remaining ? STATE_BODY_LENGTH : STATE_BODY_END;
        return 0;
}

static int parser_end_line(struct fy_stomp_parser *p)
{
        if (p->state == STATE_COMMAND)
                return parser_end_command(p);
        if (p->line->len == 0)
                return parser_end_headers(p);
        return parser_add_header(p);
}

static void parser_end_frame(struct fy_stomp_parser *p)
{
        struct fy_stomp_frame *f = g_new0(struct fy_stomp_frame, 1);

        f->command = g_steal_pointer(&p->command);
        f->n_headers = p->headers->len;
        /* Ownership of the strings moves to the frame; drop the clear func first. */
        g_array_set_clear_func(p->headers, NULL);
        f->headers = (struct fy_stomp_header *) (void *) g_array_free(g_steal_pointer(&p->headers), FALSE);
        p->headers = headers_new();
        f->body_len = p->body->len;
        g_byte_array_append(p->body, (const guint8 *) "", 1);
        f->body = (char *) g_byte_array_free(g_steal_pointer(&p->body), FALSE);

        g_queue_push_tail(&p->frames, f);
        parser_reset_frame(p);
        p->state = STATE_IDLE;
}

/* Consumes one byte of a command or header line. */
static int parser_line_byte(struct fy_stomp_parser *p, guint8 c)
{
        int r;

        if (c == '\0')
                return parser_fail(p, -EBADMSG, "frame ends inside its %s",
                                   p->state == STATE_COMMAND ? "command" : "headers");
        if (c == '\n') {
                p->line_cr = false;
                return parser_end_line(p);
        }
        /* A '\r' is only part of the EOL if '\n' follows; hold it until then. */
        if (p->line_cr) {
                p->line_cr = false;
                r = parser_line_byte(p, '\r');
                if (r < 0)
                        return r;
        }
        if (c == '\r' && !p->line_cr) {
                p->line_cr = true;
                return 0;
        }
        if (p->line->len >= p->limits.max_header_line)
                return parser_fail(p, -EMSGSIZE, "%s line exceeds %zu bytes",
                                   p->state == STATE_COMMAND ? "command" : "header",
                                   p->limits.max_header_line);
        g_byte_array_append(p->line, &c, 1);
        return 0;
}

int fy_stomp_parser_feed(struct fy_stomp_parser *p, const void *data, size_t len)
{
        const guint8 *d = data;
        size_t i = 0;
        int r;

        if (p->state == STATE_FAILED)
                return p->error;

        while (i < len) {
                guint8 c = d[i];

                switch (p->state) {
                case STATE_IDLE:
                        if (c == '\n') {
                                p->heartbeats++;
                                i++;
                                break;
                        }
                        if (c == '\r') {
                                p->state = STATE_IDLE_CR;
                                i++;
                                break;
                        }
                        if (c == '\0')
                                return parser_fail(p, -EBADMSG, "frame has an empty command");
                        p->state = STATE_COMMAND;
                        break;

                case STATE_IDLE_CR:
                        if (c != '\n')
                                return parser_fail(p, -EBADMSG, "stray carriage return between frames");
                        p->heartbeats++;
                        p->state = STATE_IDLE;
                        i++;
                        break;

                case STATE_COMMAND:
                case STATE_HEADER:
                        r = parser_count(p, 1);
                        if (r < 0)
                                return r;
                        r = parser_line_byte(p, c);
                        if (r < 0)
                                return r;
                        i++;
                        break;

                case STATE_BODY_LENGTH: {
                        size_t n = MIN(len - i, p->body_remaining);

                        /* Already checked against max_frame by parser_end_headers(). */
                        p->frame_bytes += n;
                        g_byte_array_append(p->body, d + i, (guint) n);
                        p->body_remaining -= n;
                        i += n;
                        if (p->body_remaining == 0)
                                p->state = STATE_BODY_END;
                        break;
                }

                case STATE_BODY_END:
                        if (c != '\0')
                                return parser_fail(p, -EBADMSG, "frame body is not followed by NUL as content-length says");
                        i++;
                        parser_end_frame(p);
                        break;

                case STATE_BODY_NUL: {
                        const guint8 *nul = memchr(d + i, '\0', len - i);
                        size_t n = nul ? (size_t) (nul - (d + i)) : len - i;

                        r = parser_count(p, n);
                        if (r < 0)
                                return r;
                        g_byte_array_append(p->body, d + i, (guint) n);
                        i += n;
                        if (nul) {
                                i++;
                                parser_end_frame(p);
                        }
                        break;
                }

                case STATE_FAILED:
                default:
                        return p->error;
                }
        }
        return 0;
}

int fy_stomp_parser_next(struct fy_stomp_parser *p, struct fy_stomp_frame **ret_frame)
{
        struct fy_stomp_frame *f;

        if (p->state == STATE_FAILED)
                return p->error;
        f = g_queue_pop_head(&p->frames);
        if (!f)
                return 0;
        *ret_frame = f;
        return 1;
}

const char *fy_stomp_parser_error(const struct fy_stomp_parser *p)
{
        return p->error_text;
}

guint64 fy_stomp_parser_heartbeats(const struct fy_stomp_parser *p)
{
        return p->heartbeats;
}

static void append_escaped(GByteArray *out, const char *s, bool escape)
{
        if (!escape) {
                g_byte_array_append(out, (const guint8 *) s, strlen(s));
                return;
        }
        for (; *s; s++) {
                const char *e;

                switch (*s) {
                case '\\':
                        e = "\\\\";
                        break;
                case ':':
                        e = "\\c";
                        break;
                case '\n':
                        e = "\\n";
                        break;
                case '\r':
                        e = "\\r";
                        break;
                default:
                        g_byte_array_append(out, (const guint8 *) s, 1);
                        continue;
                }
                g_byte_array_append(out, (const guint8 *) e, 2);
        }
}

GBytes *fy_stomp_frame_encode(const char *command, const char *const *headers,
                              const void *body, size_t body_len)
{
        GByteArray *out = g_byte_array_sized_new(64 + (body ? body_len : 0));
        bool escape = !g_str_equal(command, "CONNECT") && !g_str_equal(command, "CONNECTED");

        g_byte_array_append(out, (const guint8 *) command, strlen(command));
        g_byte_array_append(out, (const guint8 *) "\n", 1);
        for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2) {
                append_escaped(out, headers[i], escape);
                g_byte_array_append(out, (const guint8 *) ":", 1);
                append_escaped(out, headers[i + 1], escape);
                g_byte_array_append(out, (const guint8 *) "\n", 1);
        }
        if (body) {
                char cl[48];
                int n = g_snprintf(cl, sizeof(cl), "content-length:%zu\n", body_len);

                g_byte_array_append(out, (const guint8 *) cl, n);
        }
        g_byte_array_append(out, (const guint8 *) "\n", 1);
        if (body && body_len)
                g_byte_array_append(out, body, (guint) body_len);
        g_byte_array_append(out, (const guint8 *) "", 1);
        return g_byte_array_free_to_bytes(out);
}
