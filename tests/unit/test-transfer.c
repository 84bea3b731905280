/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The image transfer endpoint's parsers (src/agent/transferparse.c): every
 * accepted form, every boundary, and every refused form with the status and
 * the sentence the client gets.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <jansson.h>

#include "error.h"
#include "jsonrpc.h"
#include "transfercors.h"
#include "transferparse.h"

#define MAX63 "9223372036854775807"    /* 2^63 - 1: the largest accepted number */
#define P63 "9223372036854775808"      /* 2^63 */
#define U64 "18446744073709551615"     /* 2^64 - 1 */
#define U64P1 "18446744073709551616"   /* 2^64: wraps to 0 in a careless parser */
#define GiB (G_GUINT64_CONSTANT(1) << 30)

/* ---- path ---- */

static void test_path(void)
{
        static const struct {
                const char *path;
                int r;
                const char *uuid;
                bool extents;
        } cases[] = {
                { "/images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70", 0, "0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70", false },
                { "/images/0B9F2A54-1C8E-4F5E-9D1A-2B3C4D5E6F70", 0, "0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70", false },
                { "/images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/extents", 0, "0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70", true },
                { "/images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/", -ENOENT },
                { "/images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/extents/", -ENOENT },
                { "/images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/../x", -ENOENT },
                { "/images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f7", -ENOENT },
                { "/images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f700", -ENOENT },
                { "/images/0b9f2a54x1c8e-4f5e-9d1a-2b3c4d5e6f70", -ENOENT },
                { "/images/../../../etc/passwd/0b9f2a54-1c8e-4f5e", -ENOENT },
                { "/images/", -ENOENT },
                { "/images", -ENOENT },
                { "/", -ENOENT },
                { "", -ENOENT },
                { "/IMAGES/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70", -ENOENT },
                { "images/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70", -ENOENT },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                char uuid[FY_UUID_STR_LEN + 1] = "untouched";
                bool extents = false;
                int r = agent_xfer_parse_path(cases[i].path, uuid, &extents);

                g_test_message("path \"%s\"", cases[i].path);
                g_assert_cmpint(r, ==, cases[i].r);
                if (r == 0) {
                        g_assert_cmpstr(uuid, ==, cases[i].uuid);
                        g_assert_cmpint(extents, ==, cases[i].extents);
                } else {
                        g_assert_cmpstr(uuid, ==, "untouched");
                }
        }
        g_assert_cmpint(agent_xfer_parse_path(NULL, (char[FY_UUID_STR_LEN + 1]) { 0 }, &(bool) { false }), ==, -ENOENT);
}

/* ---- Range ---- */

struct range_case {
        const char *value;
        guint64 size;
        int r;
        guint64 start;
        guint64 length;
        const char *message;           /* a part of the error the client reads */
};

static const struct range_case range_cases[] = {
        /* Accepted forms. */
        { "bytes=0-0", 100, 0, 0, 1 },
        { "bytes=0-99", 100, 0, 0, 100 },
        { "bytes=10-19", 100, 0, 10, 10 },
        { "bytes=99-99", 100, 0, 99, 1 },
        { "bytes=0-", 100, 0, 0, 100 },
        { "bytes=99-", 100, 0, 99, 1 },
        { "BYTES=1-2", 100, 0, 1, 2 },
        { "Bytes=1-2", 100, 0, 1, 2 },
        { "bytes=007-008", 100, 0, 7, 2 },
        /* An end past the image is cut to it (RFC 9110 §14.1.2). */
        { "bytes=0-100", 100, 0, 0, 100 },
        { "bytes=50-" MAX63, 100, 0, 50, 50 },
        { "bytes=0-" MAX63, G_MAXINT64, 0, 0, G_MAXINT64 },
        { "bytes=" "9223372036854775806" "-", G_MAXINT64, 0, G_MAXINT64 - 1, 1 },
        /* Suffix ranges: the last N bytes, N over the size is the whole image. */
        { "bytes=-1", 100, 0, 99, 1 },
        { "bytes=-100", 100, 0, 0, 100 },
        { "bytes=-101", 100, 0, 0, 100 },
        { "bytes=-" MAX63, 100, 0, 0, 100 },
        { "bytes=-10", 4 * GiB, 0, 4 * GiB - 10, 10 },

        /* Not satisfiable: 416. */
        { "bytes=100-", 100, -ERANGE, 0, 0, "starts at or past the end of the image (100 bytes)" },
        { "bytes=100-200", 100, -ERANGE, 0, 0, "starts at or past the end" },
        { "bytes=" MAX63 "-", 100, -ERANGE, 0, 0, "starts at or past the end" },
        { "bytes=0-0", 0, -ERANGE, 0, 0, "starts at or past the end of the image (0 bytes)" },
        { "bytes=-0", 100, -ERANGE, 0, 0, "asks for no bytes" },
        { "bytes=-5", 0, -ERANGE, 0, 0, "the image is empty" },
        /* Well formed but not served: 416. */
        { "bytes=0-1,2-3", 100, -EOPNOTSUPP, 0, 0, "send one range per request" },
        { "bytes=0-1,", 100, -EOPNOTSUPP, 0, 0, "one range per request" },
        { "bytes=,0-1", 100, -EOPNOTSUPP, 0, 0, "one range per request" },
        { "items=0-1", 100, -EOPNOTSUPP, 0, 0, "only byte ranges are served" },
        { "bytesx=0-1", 100, -EOPNOTSUPP, 0, 0, "only byte ranges" },

        /* Malformed: 400. */
        { "", 100, -EINVAL, 0, 0, "is not \"bytes=START-END\"" },
        { "bytes", 100, -EINVAL, 0, 0, "is not \"bytes=START-END\"" },
        { "=0-1", 100, -EINVAL, 0, 0, "is not \"bytes=START-END\"" },
        { " bytes=0-1", 100, -EINVAL, 0, 0, "is not \"bytes=START-END\"" },
        { "bytes =0-1", 100, -EINVAL, 0, 0, "is not \"bytes=START-END\"" },
        { "bytes=", 100, -EINVAL, 0, 0, "is not \"bytes=START-END\"" },
        { "bytes=5", 100, -EINVAL, 0, 0, "is not \"bytes=START-END\"" },
        { "bytes=-", 100, -EINVAL, 0, 0, "the suffix length must be a number" },
        { "bytes=--5", 100, -EINVAL, 0, 0, "the suffix length must be a number" },
        { "bytes=-5-", 100, -EINVAL, 0, 0, "the suffix length" },
        { "bytes=-" P63, 100, -EINVAL, 0, 0, "at most 9223372036854775807" },
        { "bytes=-1x", 100, -EINVAL, 0, 0, "the suffix length" },
        { "bytes=1-2-3", 100, -EINVAL, 0, 0, "the last byte must be a number" },
        { "bytes=5-4", 100, -EINVAL, 0, 0, "the last byte comes before the first" },
        { "bytes=0-" P63, 100, -EINVAL, 0, 0, "the last byte must be a number of at most 9223372036854775807" },
        { "bytes=" P63 "-", 100, -EINVAL, 0, 0, "the first byte must be a number of at most 9223372036854775807" },
        { "bytes=" U64 "-", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes=" U64P1 "-", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes=0-" U64P1, 100, -EINVAL, 0, 0, "the last byte must be a number" },
        { "bytes=99999999999999999999999999-", 100, -EINVAL, 0, 0, "the first byte" },
        { "bytes=+1-2", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes= 1-2", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes=1 -2", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes=1- 2", 100, -EINVAL, 0, 0, "the last byte must be a number" },
        { "bytes=1-2 ", 100, -EINVAL, 0, 0, "the last byte must be a number" },
        { "bytes=1-2x", 100, -EINVAL, 0, 0, "the last byte must be a number" },
        { "bytes=0x10-0x20", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes=1e3-", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes=1.0-2", 100, -EINVAL, 0, 0, "the first byte must be a number" },
        { "bytes=\xff-1", 100, -EINVAL, 0, 0, "\\377" },
        { "bytes=\n0-1", 100, -EINVAL, 0, 0, "\\n0-1" },
};

static void test_range(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(range_cases); i++) {
                const struct range_case *c = &range_cases[i];
                g_autoptr(GError) error = NULL;
                guint64 start = 4242, length = 4242;
                int r = agent_xfer_parse_range(c->value, c->size, &start, &length, &error);

                {
                        g_autofree char *v = g_strescape(c->value, NULL);   /* TAP output must be valid UTF-8 */

                        g_test_message("Range \"%s\" of %" G_GUINT64_FORMAT " bytes", v, c->size);
                }
                g_assert_cmpint(r, ==, c->r);
                if (r == 0) {
                        g_assert_no_error(error);
                        g_assert_cmpuint(start, ==, c->start);
                        g_assert_cmpuint(length, ==, c->length);
                        g_assert_cmpuint(length, >=, 1);
                        g_assert_cmpuint(start + length, <=, c->size);
                } else {
                        g_assert_nonnull(error);
                        g_assert_cmpuint(start, ==, 4242);
                        g_assert_cmpuint(length, ==, 4242);
                        g_assert_nonnull(strstr(error->message, c->message));
                        g_assert_cmpuint(agent_xfer_http_status(r), ==, r == -EINVAL ? 400 : 416);
                }
        }
}

/* The header length limit: 256 bytes pass, 257 do not, whatever they hold. */
static void test_range_length_limit(void)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *fits = NULL;
        g_autofree char *over = NULL;
        g_autofree char *zeros = g_strnfill(AGENT_XFER_HEADER_MAX - strlen("bytes=-1"), '0');
        guint64 start, length;

        fits = g_strconcat("bytes=", zeros, "-1", NULL);
        g_assert_cmpuint(strlen(fits), ==, AGENT_XFER_HEADER_MAX);
        g_assert_cmpint(agent_xfer_parse_range(fits, 100, &start, &length, &error), ==, 0);
        g_assert_cmpuint(start, ==, 0);
        g_assert_cmpuint(length, ==, 2);

        over = g_strconcat(fits, "0", NULL);
        g_assert_cmpint(agent_xfer_parse_range(over, 100, &start, &length, &error), ==, -EINVAL);
        g_assert_cmpstr(error->message, ==, "the Range header is longer than 256 bytes");
        g_assert_cmpuint(agent_xfer_http_status(-EINVAL), ==, 400);
}

/* What the client reads echoes at most 32 bytes of what it sent, escaped. */
static void test_range_message_is_bounded(void)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *junk = g_strnfill(200, 'x');
        g_autofree char *value = g_strconcat("bytes=", junk, NULL);
        guint64 start, length;

        g_assert_cmpint(agent_xfer_parse_range(value, 100, &start, &length, &error), ==, -EINVAL);
        g_assert_cmpuint(strlen(error->message), <, 160);
        g_assert_nonnull(strstr(error->message, "\"bytes=xxxxxxxxxxxxxxxxxxxxxxxxxx...\""));
}

/* ---- Content-Range ---- */

struct content_range_case {
        const char *value;
        guint64 length;
        int r;
        guint64 start;
        const char *message;
};

static const struct content_range_case content_range_cases[] = {
        { "bytes 0-4095/*", 4096, 0, 0 },
        { "bytes 0-0/*", 1, 0, 0 },
        { "bytes 4096-8191/*", 4096, 0, 4096 },
        { "bytes 4096-8191/8192", 4096, 0, 4096 },
        { "bytes 4096-8191/100000", 4096, 0, 4096 },
        { "Bytes 1-1/*", 1, 0, 1 },
        { "BYTES 1-1/2", 1, 0, 1 },
        { "bytes 9223372036854775806-9223372036854775806/*", 1, 0, G_MAXINT64 - 1 },
        { "bytes 9223372036854775806-9223372036854775806/" MAX63, 1, 0, G_MAXINT64 - 1 },
        { "bytes " MAX63 "-" MAX63 "/*", 1, 0, G_MAXINT64 },
        { "bytes 0-" "9223372036854775806" "/*", G_MAXINT64, 0, 0 },

        /* Not consistent with the body. */
        { "bytes 0-4095/*", 4095, -EINVAL, 0, "names 4096 bytes but the body has 4095" },
        { "bytes 0-4095/*", 4097, -EINVAL, 0, "names 4096 bytes but the body has 4097" },
        { "bytes 0-0/*", 0, -EINVAL, 0, "the body is empty; send an empty body without Content-Range" },
        { "bytes 0-" MAX63 "/*", 1, -EINVAL, 0, "names 9223372036854775808 bytes but the body has 1" },
        /* Not consistent with itself. */
        { "bytes 4096-8191/8191", 4096, -EINVAL, 0, "END is not below the size after /" },
        { "bytes 0-0/0", 1, -EINVAL, 0, "END is not below the size" },
        { "bytes 5-4/*", 0, -EINVAL, 0, "END comes before START" },
        /* Overflow. */
        { "bytes " P63 "-" P63 "/*", 1, -EINVAL, 0, "START and END must be numbers of at most 9223372036854775807" },
        { "bytes 0-" P63 "/*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0-" U64 "/*", 0, -EINVAL, 0, "START and END must be numbers" },
        { "bytes " U64P1 "-" U64P1 "/*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0-0/" P63, 1, -EINVAL, 0, "the size after / must be * or a number of at most" },
        /* Malformed. */
        { "", 1, -EINVAL, 0, "is not \"bytes START-END/*\" or \"bytes START-END/SIZE\"" },
        { "bytes", 1, -EINVAL, 0, "is not \"bytes START-END/*\"" },
        { "bytes ", 1, -EINVAL, 0, "is not \"bytes START-END/*\"" },
        { "bytes=0-0/*", 1, -EINVAL, 0, "is not \"bytes START-END/*\"" },
        { "bytes  0-0/*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0-0", 1, -EINVAL, 0, "is not \"bytes START-END/*\"" },
        { "bytes 0/*", 1, -EINVAL, 0, "is not \"bytes START-END/*\"" },
        { "bytes */100", 1, -EINVAL, 0, "is not \"bytes START-END/*\"" },
        { "bytes -0/*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0--0/*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0-1-2/*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes +0-0/*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0-0 /*", 1, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0-0/", 1, -EINVAL, 0, "the size after / must be *" },
        { "bytes 0-0/ *", 1, -EINVAL, 0, "the size after / must be *" },
        { "bytes 0-0/**", 1, -EINVAL, 0, "the size after / must be *" },
        { "bytes 0-0/*x", 1, -EINVAL, 0, "the size after / must be *" },
        { "bytes 0-0/10x", 1, -EINVAL, 0, "the size after / must be *" },
        { "bytes 0-0/1/2", 1, -EINVAL, 0, "the size after / must be *" },
        { "bytes 0-0/-1", 1, -EINVAL, 0, "the size after / must be *" },
        { "bytes 0x0-0x1/*", 2, -EINVAL, 0, "START and END must be numbers" },
        { "bytes 0-1,2-3/*", 4, -EINVAL, 0, "START and END must be numbers" },
};

static void test_content_range(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(content_range_cases); i++) {
                const struct content_range_case *c = &content_range_cases[i];
                g_autoptr(GError) error = NULL;
                guint64 start = 4242;
                int r = agent_xfer_parse_content_range(c->value, c->length, &start, &error);

                {
                        g_autofree char *v = g_strescape(c->value, NULL);   /* TAP output must be valid UTF-8 */

                        g_test_message("Content-Range \"%s\" with %" G_GUINT64_FORMAT " bytes", v, c->length);
                }
                g_assert_cmpint(r, ==, c->r);
                if (r == 0) {
                        g_assert_no_error(error);
                        g_assert_cmpuint(start, ==, c->start);
                } else {
                        g_assert_nonnull(error);
                        g_assert_cmpuint(start, ==, 4242);
                        g_assert_nonnull(strstr(error->message, c->message));
                        g_assert_cmpuint(agent_xfer_http_status(r), ==, 400);
                }
        }
}

static void test_content_range_length_limit(void)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *zeros = g_strnfill(AGENT_XFER_HEADER_MAX - strlen("bytes -0/*"), '0');
        g_autofree char *fits = g_strconcat("bytes ", zeros, "-0/*", NULL);
        g_autofree char *over = g_strconcat("bytes 0", zeros, "-0/*", NULL);
        guint64 start = 1;

        g_assert_cmpuint(strlen(fits), ==, AGENT_XFER_HEADER_MAX);
        g_assert_cmpint(agent_xfer_parse_content_range(fits, 1, &start, &error), ==, 0);
        g_assert_cmpuint(start, ==, 0);
        g_assert_cmpint(agent_xfer_parse_content_range(over, 1, &start, &error), ==, -EINVAL);
        g_assert_cmpstr(error->message, ==, "the Content-Range header is longer than 256 bytes");
}

/* ---- flush ---- */

static void test_filename(void)
{
        static const char *const good[] = { "a", "disk.qcow2", "my_disk-1.raw", "A.b.C" };
        static const char *const bad[] = { "", ".hidden", "a b", "a/b", "a\"b", "a;b", "..", "\xc3\xa9", "a\r\nX: y" };
        char big[AGENT_XFER_FILENAME_MAX + 2];

        for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
                g_assert_cmpint(agent_xfer_parse_filename(good[i], NULL), ==, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autoptr(GError) error = NULL;

                g_assert_cmpint(agent_xfer_parse_filename(bad[i], &error), ==, -EINVAL);
                g_assert_nonnull(strstr(error->message, "filename="));
        }
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        g_assert_cmpint(agent_xfer_parse_filename(big, NULL), ==, -EINVAL);
        big[sizeof(big) - 2] = '\0';
        g_assert_cmpint(agent_xfer_parse_filename(big, NULL), ==, 0);
}

static void test_flush(void)
{
        static const char *const yes[] = { "y", "yes", "true", "1" };
        static const char *const no[] = { "n", "no", "false", "0" };
        static const char *const bad[] = { "", "Y", "N", "True", "2", "yes please", " n", "n " };
        bool f;

        for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
                f = false;
                g_assert_cmpint(agent_xfer_parse_flush(yes[i], false, &f, NULL), ==, 0);
                g_assert_true(f);
                f = true;
                g_assert_cmpint(agent_xfer_parse_flush(no[i], true, &f, NULL), ==, 0);
                g_assert_false(f);
        }
        g_assert_cmpint(agent_xfer_parse_flush(NULL, true, &f, NULL), ==, 0);
        g_assert_true(f);
        g_assert_cmpint(agent_xfer_parse_flush(NULL, false, &f, NULL), ==, 0);
        g_assert_false(f);
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autoptr(GError) error = NULL;

                f = true;
                g_assert_cmpint(agent_xfer_parse_flush(bad[i], false, &f, &error), ==, -EINVAL);
                g_assert_true(f);
                g_assert_nonnull(strstr(error->message, "use flush=y or flush=n"));
        }
}

/* ---- PATCH ---- */

struct patch_case {
        const char *body;
        int r;
        enum agent_xfer_op op;
        guint64 offset;
        guint64 size;
        bool flush;
        const char *message;
};

static const struct patch_case patch_cases[] = {
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 4096}", 0, AGENT_XFER_OP_ZERO, 0, 4096, false },
        { "{\"op\":\"zero\",\"offset\":1,\"size\":0}", 0, AGENT_XFER_OP_ZERO, 1, 0, false },
        { "{\"size\": 2, \"offset\": 1, \"op\": \"zero\", \"flush\": true}", 0, AGENT_XFER_OP_ZERO, 1, 2, true },
        { "{\"op\": \"zero\", \"offset\": 1, \"size\": 2, \"flush\": false}", 0, AGENT_XFER_OP_ZERO, 1, 2, false },
        { "{\"op\": \"zero\", \"offset\": " MAX63 ", \"size\": " MAX63 "}", 0, AGENT_XFER_OP_ZERO, G_MAXINT64, G_MAXINT64, false },
        { " \n{\"op\": \"flush\"}\n ", 0, AGENT_XFER_OP_FLUSH, 0, 0, false },
        { "{\"op\": \"flush\"}", 0, AGENT_XFER_OP_FLUSH, 0, 0, false },

        /* Numbers. */
        { "{\"op\": \"zero\", \"offset\": " P63 ", \"size\": 1}", -EINVAL, 0, 0, 0, false, "not JSON: too big integer" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": " U64P1 "}", -EINVAL, 0, 0, 0, false, "not JSON: too big integer" },
        { "{\"op\": \"zero\", \"offset\": -1, \"size\": 1}", -EINVAL, 0, 0, 0, false,
          "\"offset\" must be an integer from 0 to 9223372036854775807" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": -4096}", -EINVAL, 0, 0, 0, false, "\"size\" must be an integer" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 1.0}", -EINVAL, 0, 0, 0, false, "\"size\" must be an integer" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 1e3}", -EINVAL, 0, 0, 0, false, "\"size\" must be an integer" },
        { "{\"op\": \"zero\", \"offset\": \"0\", \"size\": 1}", -EINVAL, 0, 0, 0, false, "\"offset\" must be an integer" },
        { "{\"op\": \"zero\", \"offset\": null, \"size\": 1}", -EINVAL, 0, 0, 0, false, "\"offset\" must be an integer" },
        { "{\"op\": \"zero\", \"offset\": true, \"size\": 1}", -EINVAL, 0, 0, 0, false, "\"offset\" must be an integer" },
        { "{\"op\": \"zero\", \"size\": 1}", -EINVAL, 0, 0, 0, false, "op zero needs \"offset\"" },
        { "{\"op\": \"zero\", \"offset\": 1}", -EINVAL, 0, 0, 0, false, "op zero needs \"size\"" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 1, \"flush\": 1}", -EINVAL, 0, 0, 0, false,
          "\"flush\" must be true or false" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 1, \"flush\": \"y\"}", -EINVAL, 0, 0, 0, false,
          "\"flush\" must be true or false" },
        /* Keys. */
        { "{\"op\": \"zero\", \"offset\": 0, \"length\": 1}", -EINVAL, 0, 0, 0, false,
          "unknown key \"length\" in the PATCH body; known: op, offset, size, flush" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 1, \"Size\": 2}", -EINVAL, 0, 0, 0, false, "unknown key \"Size\"" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 1, \"size\": 2}", -EINVAL, 0, 0, 0, false,
          "not JSON: duplicate object key" },
        { "{\"op\": \"flush\", \"op\": \"zero\"}", -EINVAL, 0, 0, 0, false, "duplicate object key" },
        { "{\"op\": \"flush\", \"flush\": true}", -EINVAL, 0, 0, 0, false, "op flush takes no other key" },
        { "{\"op\": \"flush\", \"offset\": 0, \"size\": 1}", -EINVAL, 0, 0, 0, false, "op flush takes no other key" },
        { "{\"op\": \"zero\", \"offset\": 0, \"size\": 1, \"a\\nb\": 1}", -EINVAL, 0, 0, 0, false, "unknown key \"a\\nb\"" },
        /* op. */
        { "{}", -EINVAL, 0, 0, 0, false, "needs \"op\": \"zero\" or \"flush\"" },
        { "{\"offset\": 0, \"size\": 1}", -EINVAL, 0, 0, 0, false, "needs \"op\"" },
        { "{\"op\": 1}", -EINVAL, 0, 0, 0, false, "needs \"op\"" },
        { "{\"op\": null}", -EINVAL, 0, 0, 0, false, "needs \"op\"" },
        { "{\"op\": \"Zero\", \"offset\": 0, \"size\": 1}", -EINVAL, 0, 0, 0, false, "unknown op \"Zero\": use zero or flush" },
        { "{\"op\": \"trim\"}", -EINVAL, 0, 0, 0, false, "unknown op \"trim\"" },
        { "{\"op\": \"\"}", -EINVAL, 0, 0, 0, false, "unknown op \"\"" },
        { "{\"op\": \"zero\\u0000\"}", -EINVAL, 0, 0, 0, false, "not JSON: \\u0000 is not allowed" },
        /* Not an object, not JSON. */
        { "[]", -EINVAL, 0, 0, 0, false, "must be a JSON object" },
        { "[{\"op\": \"flush\"}]", -EINVAL, 0, 0, 0, false, "must be a JSON object" },
        { "\"flush\"", -EINVAL, 0, 0, 0, false, "not JSON" },
        { "null", -EINVAL, 0, 0, 0, false, "not JSON" },
        { "{", -EINVAL, 0, 0, 0, false, "not JSON" },
        { "{\"op\": \"flush\"} x", -EINVAL, 0, 0, 0, false, "not JSON: end of file expected" },
        { "{\"op\": \"flush\"}{}", -EINVAL, 0, 0, 0, false, "not JSON: end of file expected" },
        { "{'op': 'flush'}", -EINVAL, 0, 0, 0, false, "not JSON" },
        { "{\"op\": \"fl\xffush\"}", -EINVAL, 0, 0, 0, false, "not JSON: unable to decode byte 0xff" },
};

static void test_patch(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(patch_cases); i++) {
                const struct patch_case *c = &patch_cases[i];
                g_autoptr(GError) error = NULL;
                struct agent_xfer_patch p = { .offset = 4242 };
                int r = agent_xfer_parse_patch(c->body, strlen(c->body), &p, &error);

                {
                        g_autofree char *v = g_strescape(c->body, NULL);   /* TAP output must be valid UTF-8 */

                        g_test_message("PATCH %s", v);
                }
                g_assert_cmpint(r, ==, c->r);
                if (r == 0) {
                        g_assert_no_error(error);
                        g_assert_cmpint(p.op, ==, c->op);
                        g_assert_cmpuint(p.offset, ==, c->offset);
                        g_assert_cmpuint(p.size, ==, c->size);
                        g_assert_cmpint(p.flush, ==, c->flush);
                } else {
                        g_assert_nonnull(error);
                        g_test_message("  → %s", error->message);
                        g_assert_cmpuint(p.offset, ==, 4242);
                        g_assert_nonnull(strstr(error->message, c->message));
                        g_assert_cmpuint(agent_xfer_http_status(r), ==, 400);
                }
        }
}

/* Bodies with NUL bytes, empty bodies and the size limit. */
static void test_patch_limits(void)
{
        static const char nul_inside[] = "{\"op\": \"flush\"}\0";
        g_autoptr(GError) error = NULL;
        g_autofree char *big = NULL;
        struct agent_xfer_patch p;
        GString *s;

        g_assert_cmpint(agent_xfer_parse_patch("", 0, &p, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "the PATCH body is empty"));
        g_clear_error(&error);
        g_assert_cmpint(agent_xfer_parse_patch(nul_inside, sizeof(nul_inside) - 1, &p, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "not JSON"));
        g_clear_error(&error);

        /* Padded with blanks to exactly the limit: accepted; one more byte: 413. */
        s = g_string_new("{\"op\": \"zero\", \"offset\": 7, \"size\": 9}");
        while (s->len < AGENT_XFER_PATCH_MAX)
                g_string_append_c(s, ' ');
        big = g_string_free(s, FALSE);
        g_assert_cmpint(agent_xfer_parse_patch(big, AGENT_XFER_PATCH_MAX, &p, &error), ==, 0);
        g_assert_cmpuint(p.offset, ==, 7);
        g_assert_cmpuint(p.size, ==, 9);
        big = g_realloc(big, AGENT_XFER_PATCH_MAX + 1);
        big[AGENT_XFER_PATCH_MAX] = ' ';
        g_assert_cmpint(agent_xfer_parse_patch(big, AGENT_XFER_PATCH_MAX + 1, &p, &error), ==, -E2BIG);
        g_assert_cmpstr(error->message, ==, "a PATCH body is at most 4096 bytes, this one has 4097");
        g_assert_cmpuint(agent_xfer_http_status(-E2BIG), ==, 413);
}

/* ---- ranges inside a ticket ---- */

static void test_range_fits(void)
{
        g_assert_true(agent_xfer_range_fits(100, 0, 100));
        g_assert_true(agent_xfer_range_fits(100, 100, 0));
        g_assert_true(agent_xfer_range_fits(100, 99, 1));
        g_assert_true(agent_xfer_range_fits(0, 0, 0));
        g_assert_false(agent_xfer_range_fits(100, 0, 101));
        g_assert_false(agent_xfer_range_fits(100, 99, 2));
        g_assert_false(agent_xfer_range_fits(100, 101, 0));
        g_assert_false(agent_xfer_range_fits(0, 0, 1));
        /* offset + length would wrap past 2^64 in a naive check. */
        g_assert_false(agent_xfer_range_fits(100, 50, G_MAXUINT64));
        g_assert_false(agent_xfer_range_fits(100, G_MAXUINT64, 2));
        g_assert_false(agent_xfer_range_fits(G_MAXINT64, G_MAXINT64, G_MAXINT64));
        g_assert_true(agent_xfer_range_fits(G_MAXINT64, G_MAXINT64, 0));
        g_assert_true(agent_xfer_range_fits(G_MAXUINT64, G_MAXINT64, (guint64) G_MAXINT64 + 1));
}

static void test_status(void)
{
        g_assert_cmpuint(agent_xfer_http_status(-EINVAL), ==, 400);
        g_assert_cmpuint(agent_xfer_http_status(-ERANGE), ==, 416);
        g_assert_cmpuint(agent_xfer_http_status(-EOPNOTSUPP), ==, 416);
        g_assert_cmpuint(agent_xfer_http_status(-E2BIG), ==, 413);
}

/* ---- tickets ---- */

#define TICKET_UUID "6F9619FF-8B86-D011-B42D-00CF4FC964FF"
#define TICKET_URL "file:///srv/storage/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/"

static void test_ticket_valid(void)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) read = json_pack("{s:s, s:i, s:[s], s:s}", "uuid", TICKET_UUID, "timeout", 60, "ops", "read",
                                           "url", TICKET_URL "x");
        g_autoptr(json_t) write = json_pack("{s:s, s:s, s:[s,s], s:s, s:I, s:b, s:s, s:i, s:s}", "uuid", TICKET_UUID,
                                            "timeout", "604800", "ops", "write", "read", "url", TICKET_URL "y",
                                            "size", (json_int_t) AGENT_XFER_TICKET_SIZE_MAX, "sparse", 1,
                                            "transfer_id", "0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70", "generation", 999,
                                            "dirty", "ignored");
        g_autoptr(json_t) nullgen = json_pack("{s:s, s:i, s:[s], s:s, s:n}", "uuid", TICKET_UUID, "timeout", 1,
                                              "ops", "read", "url", TICKET_URL "x", "generation");
        struct agent_ticket_params p;

        g_assert_cmpint(agent_ticket_params_parse(read, &p, &error), ==, 0);
        g_assert_cmpstr(p.uuid, ==, "6f9619ff-8b86-d011-b42d-00cf4fc964ff");
        g_assert_cmpstr(p.url, ==, TICKET_URL "x");
        g_assert_null(p.transfer_id);
        g_assert_true(p.can_read);
        g_assert_false(p.can_write);
        g_assert_false(p.sparse);
        g_assert_cmpuint(p.size, ==, 0);
        g_assert_cmpuint(p.timeout, ==, 60);
        g_assert_false(p.has_generation);

        g_assert_cmpint(agent_ticket_params_parse(write, &p, &error), ==, 0);
        g_assert_true(p.can_read);
        g_assert_true(p.can_write);
        g_assert_true(p.sparse);
        g_assert_cmpuint(p.size, ==, AGENT_XFER_TICKET_SIZE_MAX);
        g_assert_cmpuint(p.timeout, ==, AGENT_TICKET_TIMEOUT_MAX);
        g_assert_cmpstr(p.transfer_id, ==, "0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70");
        g_assert_true(p.has_generation);
        g_assert_cmpuint(p.generation, ==, 999);

        /* A null generation is no generation (it used to be read as "generation 0"). */
        g_assert_cmpint(agent_ticket_params_parse(nullgen, &p, &error), ==, 0);
        g_assert_false(p.has_generation);
        g_assert_cmpuint(p.timeout, ==, 1);
}

struct ticket_case {
        const char *json;
        const char *message;
};

#define T_UUID "\"uuid\": \"6f9619ff-8b86-d011-b42d-00cf4fc964ff\""
#define T_URL "\"url\": \"file:///s/x\""

static const struct ticket_case ticket_cases[] = {
        { "[]", "ticket: must be an object" },
        { "{\"timeout\": 60, \"ops\": [\"read\"], " T_URL "}", "ticket: missing required parameter 'uuid'" },
        { "{\"uuid\": \"nope\", \"timeout\": 60, \"ops\": [\"read\"], " T_URL "}", "ticket: parameter 'uuid'" },
        { "{" T_UUID ", \"ops\": [\"read\"], " T_URL "}", "ticket: missing required parameter 'timeout'" },
        { "{" T_UUID ", \"timeout\": 0, \"ops\": [\"read\"], " T_URL "}", "ticket.timeout must be 1-604800 seconds" },
        { "{" T_UUID ", \"timeout\": 604801, \"ops\": [\"read\"], " T_URL "}",
          "ticket: parameter 'timeout' is 604801, more than the limit 604800" },
        { "{" T_UUID ", \"timeout\": -1, \"ops\": [\"read\"], " T_URL "}", "parameter 'timeout' must not be negative" },
        { "{" T_UUID ", \"timeout\": 1.5, \"ops\": [\"read\"], " T_URL "}", "parameter 'timeout' must be an integer" },
        { "{" T_UUID ", \"timeout\": \"60s\", \"ops\": [\"read\"], " T_URL "}", "parameter 'timeout' must be a non-negative" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"]}", "ticket: missing required parameter 'url'" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"url\": 5}", "parameter 'url' must be a string" },
        { "{" T_UUID ", \"timeout\": 60, " T_URL "}", "ticket.ops must be [\"read\"], [\"write\"] or both" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [], " T_URL "}", "ticket.ops must be" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": \"read\", " T_URL "}", "ticket.ops must be" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\", \"write\", \"read\"], " T_URL "}", "ticket.ops must be" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"delete\"], " T_URL "}", "ticket.ops must be" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [1], " T_URL "}", "ticket.ops must be" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"write\"], " T_URL "}",
          "ticket.size is required for a write ticket" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"write\"], \"size\": 0, " T_URL "}", "ticket.size is required" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"write\"], \"size\": 140737488355329, " T_URL "}",
          "parameter 'size' is 140737488355329, more than the limit 140737488355328" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"sparse\": \"yes\", " T_URL "}", "parameter 'sparse'" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"transfer_id\": \"x\", " T_URL "}",
          "parameter 'transfer_id'" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"generation\": 1000, " T_URL "}",
          "parameter 'generation' is 1000, more than the limit 999" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"url\": \"http://h/s/x\"}",
          "ticket.url must be file:///<path of a volume>, got \"http://h/s/x\"" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"url\": \"file://host/s/x\"}", "ticket.url must be file:///" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"url\": \"/s/x\"}", "ticket.url must be file:///" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"url\": \"file:s/x\"}", "ticket.url must be file:///" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"url\": \"file:///s/%00x\"}", "ticket.url must be file:///" },
        { "{" T_UUID ", \"timeout\": 60, \"ops\": [\"read\"], \"url\": \"\"}", "ticket.url must be file:///" },
};

static void test_ticket_invalid(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(ticket_cases); i++) {
                const struct ticket_case *c = &ticket_cases[i];
                g_autoptr(GError) error = NULL;
                g_autoptr(json_t) tk = json_loads(c->json, 0, NULL);
                struct agent_ticket_params p = { .size = 4242 };

                {
                        g_autofree char *v = g_strescape(c->json, NULL);   /* TAP output must be valid UTF-8 */

                        g_test_message("ticket %s", v);
                }
                g_assert_nonnull(tk);
                g_assert_cmpint(agent_ticket_params_parse(tk, &p, &error), ==, -EINVAL);
                g_assert_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS);
                g_test_message("  → %s", error->message);
                g_assert_nonnull(strstr(error->message, c->message));
                g_assert_cmpuint(p.size, ==, 4242);
        }
}

static void test_ticket_url_limit(void)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *name = g_strnfill(AGENT_XFER_TICKET_URL_MAX, 'a');
        g_autofree char *url = g_strconcat("file:///", name, NULL);
        g_autofree char *path = NULL;
        g_autoptr(json_t) tk = json_pack("{s:s, s:i, s:[s], s:s}", "uuid", TICKET_UUID, "timeout", 60, "ops", "read",
                                         "url", url);
        struct agent_ticket_params p;

        g_assert_cmpint(agent_ticket_params_parse(tk, &p, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error->message, "longer than 4096 bytes"));
        g_clear_error(&error);
        g_assert_cmpint(agent_ticket_url_path("file:///srv/a%20b", &path, &error), ==, 0);
        g_assert_cmpstr(path, ==, "/srv/a b");
}

static void test_ticket_volume_of(void)
{
        static const struct {
                const char *real;
                const char *root;
                int r;
        } cases[] = {
                { "/srv/st/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555/"
                  "AAAAAAAA-2222-3333-4444-555555555555", "/srv/st", 0 },
                /* A sibling folder whose name starts like the root. */
                { "/srv/st2/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555/"
                  "aaaaaaaa-2222-3333-4444-555555555555", "/srv/st", -EACCES },
                { "/srv/st/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555/"
                  "aaaaaaaa-2222-3333-4444-555555555555.meta", "/srv/st", -EACCES },
                { "/srv/st/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/dom_md/11111111-2222-3333-4444-555555555555/"
                  "aaaaaaaa-2222-3333-4444-555555555555", "/srv/st", -EACCES },
                { "/srv/st/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/dom_md/leases", "/srv/st", -EACCES },
                { "/srv/st/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555",
                  "/srv/st", -EACCES },
                { "/srv/st/x/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555/"
                  "aaaaaaaa-2222-3333-4444-555555555555", "/srv/st", -EACCES },
                { "/srv/st", "/srv/st", -EACCES },
                { "/srv/st/", "/srv/st", -EACCES },
                { "/etc/passwd", "/srv/st", -EACCES },
                { "/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555/"
                  "aaaaaaaa-2222-3333-4444-555555555555", "/", -EACCES },
                { "/srv/st/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555/"
                  "aaaaaaaa-2222-3333-4444-555555555555", "/srv/st/", -EACCES },
                { "/srv/st/0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70/images/11111111-2222-3333-4444-555555555555/"
                  "aaaaaaaa-2222-3333-4444-555555555555", "srv/st", -EACCES },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                struct agent_volref ref = { "untouched" };

                g_test_message("%s under %s", cases[i].real, cases[i].root);
                g_assert_cmpint(agent_ticket_volume_of(cases[i].real, cases[i].root, &ref), ==, cases[i].r);
                if (cases[i].r == 0) {
                        g_assert_cmpstr(ref.sd, ==, "0b9f2a54-1c8e-4f5e-9d1a-2b3c4d5e6f70");
                        g_assert_cmpstr(ref.img, ==, "11111111-2222-3333-4444-555555555555");
                        g_assert_cmpstr(ref.vol, ==, "aaaaaaaa-2222-3333-4444-555555555555");
                } else {
                        g_assert_cmpstr(ref.sd, ==, "untouched");
                }
        }
}

/* ---- qcow2 header of an uploaded image ---- */

static void put_be32(guint8 *p, size_t off, guint32 v)
{
        p[off] = (guint8) (v >> 24);
        p[off + 1] = (guint8) (v >> 16);
        p[off + 2] = (guint8) (v >> 8);
        p[off + 3] = (guint8) v;
}

static void put_be64(guint8 *p, size_t off, guint64 v)
{
        put_be32(p, off, (guint32) (v >> 32));
        put_be32(p, off + 4, (guint32) v);
}

/* A valid v3 header of a 1 GiB image with 64 KiB clusters and one end-of-extensions marker. */
static guint8 *qcow2_header(size_t len)
{
        guint8 *p = g_malloc0(len);

        put_be32(p, 0, 0x514649fb);
        put_be32(p, 4, 3);
        put_be32(p, 20, 16);
        put_be64(p, 24, GiB);
        put_be32(p, 96, 4);             /* refcount_order */
        put_be32(p, 100, 104);          /* header_length */
        return p;                       /* extension at 104: type 0 (end) */
}

static void check_qcow2(const guint8 *p, size_t len, int want, const char *text)
{
        g_autoptr(GError) error = NULL;
        guint64 vsize = 7;
        int r = agent_qcow2_header_check(p, len, &vsize, &error);

        g_assert_cmpint(r, ==, want);
        if (want == 0) {
                g_assert_no_error(error);
                g_assert_cmpuint(vsize, ==, GiB);
        } else {
                g_assert_nonnull(error);
                g_assert_cmpuint(vsize, ==, 7);        /* untouched on failure */
                if (!strstr(error->message, text))
                        g_error("'%s' does not say '%s'", error->message, text);
        }
}

static void test_qcow2_header(void)
{
        size_t len = 65536;
        g_autofree guint8 *p = qcow2_header(len);

        check_qcow2(p, len, 0, NULL);
        check_qcow2(p, 112, 0, NULL);                           /* a file shorter than its cluster */
        check_qcow2(p, 104, -EINVAL, "run past");               /* no room for the end marker */
        check_qcow2(p, 71, -EINVAL, "not a qcow2 image");
        check_qcow2(p, 0, -EINVAL, "not a qcow2 image");

        /* Version 2: a 72-byte header, extensions right after it. */
        put_be32(p, 4, 2);
        check_qcow2(p, len, 0, NULL);
        put_be32(p, 4, 4);
        check_qcow2(p, len, -EINVAL, "version 4");
        put_be32(p, 4, 1);
        check_qcow2(p, len, -EINVAL, "version 1");
        put_be32(p, 4, 3);

        p[0] = 'X';
        check_qcow2(p, len, -EINVAL, "not a qcow2 image");
        p[0] = 'Q';

        put_be64(p, 8, 4096);
        check_qcow2(p, len, -EINVAL, "backing file");
        put_be64(p, 8, G_GUINT64_CONSTANT(1) << 63);
        check_qcow2(p, len, -EINVAL, "backing file");
        put_be64(p, 8, 0);

        put_be32(p, 32, 1);
        check_qcow2(p, len, -EINVAL, "encrypted");
        put_be32(p, 32, 2);
        check_qcow2(p, len, -EINVAL, "encrypted");
        put_be32(p, 32, 0);

        for (guint32 bits = 0; bits < 64; bits++) {
                put_be32(p, 20, bits);
                check_qcow2(p, len, bits >= 9 && bits <= 21 ? 0 : -EINVAL, "cluster_bits");
        }
        put_be32(p, 20, 16);

        /* Incompatible features: dirty, compression type and extended L2 are known; the rest is refused. */
        put_be64(p, 72, 1 | 8 | 16);
        check_qcow2(p, len, 0, NULL);
        put_be64(p, 72, 4);
        check_qcow2(p, len, -EINVAL, "external data file");
        put_be64(p, 72, 2);
        check_qcow2(p, len, -EINVAL, "marked corrupt");
        for (unsigned bit = 5; bit < 64; bit++) {
                put_be64(p, 72, G_GUINT64_CONSTANT(1) << bit);
                check_qcow2(p, len, -EINVAL, "unknown features");
        }
        put_be64(p, 72, 0);

        /* Header length: ≥ 104, a multiple of 8, within the cluster. */
        for (guint32 hl = 0; hl < 104; hl += 4) {
                put_be32(p, 100, hl);
                check_qcow2(p, len, -EINVAL, "header length");
        }
        put_be32(p, 100, 108);
        check_qcow2(p, len, -EINVAL, "header length");
        put_be32(p, 100, 65536 + 8);
        check_qcow2(p, len, -EINVAL, "header length");
        put_be32(p, 100, G_MAXUINT32 - 7);
        check_qcow2(p, len, -EINVAL, "header length");
        put_be32(p, 100, 65536);
        check_qcow2(p, len, -EINVAL, "run past");              /* no room left for the end marker */
        put_be32(p, 100, 112);
        check_qcow2(p, len, 0, NULL);

        /* Extensions: a backing format (harmless) then the end; a data file name; lengths past the cluster. */
        put_be32(p, 112, 0xe2792aca);
        put_be32(p, 116, 5);
        memcpy(p + 120, "qcow2", 5);
        check_qcow2(p, len, 0, NULL);                           /* 5 bytes padded to 8: end marker at 128 */
        put_be32(p, 116, 65536);
        check_qcow2(p, len, -EINVAL, "runs past");
        put_be32(p, 116, G_MAXUINT32);
        check_qcow2(p, len, -EINVAL, "runs past");
        put_be32(p, 116, 65410);                                /* in a 65533-byte file: fits, padded it does not */
        check_qcow2(p, 65533, -EINVAL, "runs past");
        check_qcow2(p, len, -EINVAL, "run past");               /* padded it fits a cluster; no end marker after */
        put_be32(p, 116, 65536 - 120 - 8);                      /* fits, and so does an end marker after it */
        check_qcow2(p, len, 0, NULL);
        put_be32(p, 65528, 0x12345678);                         /* an extension there, whose data would not */
        put_be32(p, 65532, 1);
        check_qcow2(p, len, -EINVAL, "runs past");
        put_be32(p, 65528, 0);
        put_be32(p, 65532, 0);
        put_be32(p, 116, 5);
        put_be32(p, 112, 0x44415441);
        check_qcow2(p, len, -EINVAL, "external data file");
        put_be32(p, 112, 0x0537be77);
        check_qcow2(p, len, -EINVAL, "encryption header");

        /* Many empty unknown extensions: bounded. */
        for (unsigned i = 0; i < 100; i++) {
                put_be32(p, 112 + 8 * i, 0x12345678);
                put_be32(p, 116 + 8 * i, 0);
        }
        check_qcow2(p, len, -EINVAL, "more than 64 header extensions");
}

/* Images qemu-img makes: what it writes is accepted, a backing file and an external data file are not. */
static void test_qcow2_header_of_qemu_img(void)
{
        g_autofree char *dir = g_dir_make_tmp("test-transfer-XXXXXX", NULL);
        static const struct {
                const char *opts;
                int r;
        } cases[] = {
                { "compat=0.10", 0 },
                { "compat=1.1", 0 },
                { "compat=1.1,lazy_refcounts=on,cluster_size=2M", 0 },
                { "compat=1.1,cluster_size=512", 0 },
                { "compat=1.1,extended_l2=on", 0 },
                { "compat=1.1,compression_type=zstd", 0 },
                { "compat=1.1,data_file=DATA", -EINVAL },
                { "compat=1.1,backing_file=BASE,backing_fmt=raw", -EINVAL },
        };

        g_assert_nonnull(dir);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *img = g_build_filename(dir, "img.qcow2", NULL);
                g_autofree char *data = g_build_filename(dir, "data", NULL);
                g_autofree char *base = g_build_filename(dir, "base", NULL);
                g_autofree char *o1 = NULL, *opts = NULL, *contents = NULL;
                g_autoptr(GError) error = NULL;
                g_autoptr(GString) s = g_string_new(cases[i].opts);
                gsize len = 0;
                guint64 vsize = 0;
                int status = -1;

                g_string_replace(s, "DATA", data, 0);
                g_string_replace(s, "BASE", base, 0);
                if (strstr(cases[i].opts, "BASE"))
                        g_assert_true(g_file_set_contents(base, "", 0, NULL));
                opts = g_string_free(g_steal_pointer(&s), FALSE);
                {
                        const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, "1G", NULL };

                        if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                                          &status, &error) || !g_spawn_check_wait_status(status, NULL)) {
                                /* An option this qemu-img does not know (older versions): nothing to compare. */
                                g_test_message("qemu-img create -o %s failed", opts);
                                g_assert_cmpint(cases[i].r, ==, 0);
                                g_assert_true(strstr(opts, "zstd") || strstr(opts, "extended_l2"));
                                continue;
                        }
                }
                g_assert_true(g_file_get_contents(img, &contents, &len, NULL));
                o1 = g_strdup_printf("%s: ", opts);
                {
                        g_autoptr(GError) cerr = NULL;
                        int r = agent_qcow2_header_check(contents, MIN(len, (gsize) AGENT_QCOW2_HEADER_READ), &vsize,
                                                         &cerr);

                        if (r != cases[i].r)
                                g_error("%s%d (%s)", o1, r, cerr ? cerr->message : "accepted");
                        if (r == 0)
                                g_assert_cmpuint(vsize, ==, GiB);
                }
                unlink(img);
                unlink(data);
                unlink(base);
        }
        g_assert_cmpint(rmdir(dir), ==, 0);
}

/* The agent's cors_origin: an origin as a browser sends it, or empty. */
static void test_cors_origin(void)
{
        g_autofree char *host = g_strnfill(260, 'a');
        g_autofree char *longer = g_strconcat("https://", host, NULL);

        g_assert_true(agent_xfer_cors_origin_valid(""));
        g_assert_true(agent_xfer_cors_origin_valid("https://127.0.0.1:8443"));
        g_assert_true(agent_xfer_cors_origin_valid("http://engine.example"));
        g_assert_true(agent_xfer_cors_origin_valid("https://[::1]:8443"));
        g_assert_false(agent_xfer_cors_origin_valid("https://engine.example/"));
        g_assert_false(agent_xfer_cors_origin_valid("https://engine.example/ui"));
        g_assert_false(agent_xfer_cors_origin_valid("https://user@engine.example"));
        g_assert_false(agent_xfer_cors_origin_valid("*"));
        g_assert_false(agent_xfer_cors_origin_valid("null"));
        g_assert_false(agent_xfer_cors_origin_valid("ftp://engine.example"));
        g_assert_false(agent_xfer_cors_origin_valid("https://"));
        g_assert_false(agent_xfer_cors_origin_valid("https://a b"));
        g_assert_false(agent_xfer_cors_origin_valid(longer));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/transfer/path", test_path);
        g_test_add_func("/transfer/range", test_range);
        g_test_add_func("/transfer/range-length-limit", test_range_length_limit);
        g_test_add_func("/transfer/range-message-bounded", test_range_message_is_bounded);
        g_test_add_func("/transfer/content-range", test_content_range);
        g_test_add_func("/transfer/content-range-length-limit", test_content_range_length_limit);
        g_test_add_func("/transfer/flush", test_flush);
        g_test_add_func("/transfer/filename", test_filename);
        g_test_add_func("/transfer/patch", test_patch);
        g_test_add_func("/transfer/patch-limits", test_patch_limits);
        g_test_add_func("/transfer/range-fits", test_range_fits);
        g_test_add_func("/transfer/status", test_status);
        g_test_add_func("/transfer/ticket-valid", test_ticket_valid);
        g_test_add_func("/transfer/ticket-invalid", test_ticket_invalid);
        g_test_add_func("/transfer/ticket-url-limit", test_ticket_url_limit);
        g_test_add_func("/transfer/ticket-volume-of", test_ticket_volume_of);
        g_test_add_func("/transfer/qcow2-header", test_qcow2_header);
        g_test_add_func("/transfer/qcow2-header-of-qemu-img", test_qcow2_header_of_qemu_img);
        g_test_add_func("/transfer/cors-origin", test_cors_origin);
        return g_test_run();
}
