/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <glib.h>

#include "stomp.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static struct fy_stomp_frame *next_frame(struct fy_stomp_parser *p)
{
        struct fy_stomp_frame *f = NULL;

        g_assert_cmpint(fy_stomp_parser_next(p, &f), ==, 1);
        g_assert_nonnull(f);
        return f;
}

static void assert_no_frame(struct fy_stomp_parser *p)
{
        struct fy_stomp_frame *f = NULL;

        g_assert_cmpint(fy_stomp_parser_next(p, &f), ==, 0);
        g_assert_null(f);
}

/* Feeds data in one go and expects the parser to fail with error. */
static void assert_fails(const struct fy_stomp_limits *limits, const char *data, size_t len, int error)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(limits);
        struct fy_stomp_frame *f = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, data, len), ==, error);
        g_assert_nonnull(fy_stomp_parser_error(p));
        g_assert_cmpuint(strlen(fy_stomp_parser_error(p)), >, 0);
        g_assert_cmpint(fy_stomp_parser_next(p, &f), ==, error);
        /* The parser stays failed. */
        g_assert_cmpint(fy_stomp_parser_feed(p, S("\n")), ==, error);
}

static void test_single_frame(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\ndestination:/q\nreceipt:7\n\nhello\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpstr(f->command, ==, "SEND");
        g_assert_cmpuint(f->n_headers, ==, 2);
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "destination"), ==, "/q");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "receipt"), ==, "7");
        g_assert_null(fy_stomp_frame_get_header(f, "missing"));
        g_assert_cmpuint(f->body_len, ==, 5);
        g_assert_cmpstr(f->body, ==, "hello");
        assert_no_frame(p);
        g_assert_cmpuint(fy_stomp_parser_heartbeats(p), ==, 0);
}

static void test_byte_by_byte(void)
{
        static const char data[] =
                "SEND\r\ndestination:a\r\ncontent-length:4\r\n\r\na\0b\0\0"
                "\r\n"
                "MESSAGE\nx:y\n\nbody\0";
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f1 = NULL;
        g_autoptr(fy_stomp_frame) f2 = NULL;

        for (size_t i = 0; i < sizeof(data) - 1; i++) {
                g_assert_cmpint(fy_stomp_parser_feed(p, data + i, 1), ==, 0);
                if (i < sizeof(data) - 2 && !f1) {
                        struct fy_stomp_frame *f = NULL;

                        if (fy_stomp_parser_next(p, &f) == 1)
                                f1 = f;
                }
        }
        g_assert_nonnull(f1);
        g_assert_cmpstr(f1->command, ==, "SEND");
        g_assert_cmpuint(f1->body_len, ==, 4);
        g_assert_cmpmem(f1->body, 4, "a\0b\0", 4);
        f2 = next_frame(p);
        g_assert_cmpstr(f2->command, ==, "MESSAGE");
        g_assert_cmpstr(fy_stomp_frame_get_header(f2, "x"), ==, "y");
        g_assert_cmpstr(f2->body, ==, "body");
        assert_no_frame(p);
        g_assert_cmpuint(fy_stomp_parser_heartbeats(p), ==, 1);
}

static void test_partial_frame(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\ncontent-length:3\n\nab")), ==, 0);
        assert_no_frame(p);
        g_assert_cmpint(fy_stomp_parser_feed(p, S("c")), ==, 0);
        assert_no_frame(p);
        g_assert_cmpint(fy_stomp_parser_feed(p, S("\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpstr(f->body, ==, "abc");
}

static void test_multiple_frames(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        static const char *const commands[] = { "CONNECT", "SUBSCRIBE", "SEND", "DISCONNECT" };

        g_assert_cmpint(fy_stomp_parser_feed(p, S(
                "CONNECT\naccept-version:1.2\nheart-beat:0,24000\n\n\0"
                "SUBSCRIBE\ndestination:q\nack:auto\nid:1\n\n\0"
                "SEND\ndestination:jms.topic.vdsm_requests\ncontent-length:2\n\n{}\0"
                "DISCONNECT\n\n\0")), ==, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
                g_autoptr(fy_stomp_frame) f = next_frame(p);

                g_assert_cmpstr(f->command, ==, commands[i]);
        }
        assert_no_frame(p);
}

static void test_content_length_nuls(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;
        g_autoptr(fy_stomp_frame) e = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\ncontent-length:5\n\n\0\0x\0\0\0"
                                                  "SEND\ncontent-length:0\n\n\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpuint(f->body_len, ==, 5);
        g_assert_cmpmem(f->body, 5, "\0\0x\0\0", 5);
        g_assert_cmpint(f->body[5], ==, '\0');
        e = next_frame(p);
        g_assert_cmpuint(e->body_len, ==, 0);
        g_assert_cmpstr(e->body, ==, "");
}

static void test_body_without_content_length(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;
        g_autoptr(fy_stomp_frame) g = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\n\n{\"a\": 1}\0SEND\n\n\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpuint(f->body_len, ==, 8);
        g_assert_cmpstr(f->body, ==, "{\"a\": 1}");
        g_assert_cmpuint(f->n_headers, ==, 0);
        g = next_frame(p);
        g_assert_cmpuint(g->body_len, ==, 0);
}

static void test_heartbeats(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);

        g_assert_cmpint(fy_stomp_parser_feed(p, S("\n\r\n\n")), ==, 0);
        assert_no_frame(p);
        g_assert_cmpuint(fy_stomp_parser_heartbeats(p), ==, 3);
        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\n\n\0\n\nSEND\n\n\0\r")), ==, 0);
        g_assert_cmpint(fy_stomp_parser_feed(p, S("\n")), ==, 0);
        g_assert_cmpuint(fy_stomp_parser_heartbeats(p), ==, 6);
        for (int i = 0; i < 2; i++) {
                g_autoptr(fy_stomp_frame) f = next_frame(p);

                g_assert_cmpstr(f->command, ==, "SEND");
        }
        assert_no_frame(p);
}

static void test_crlf(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("MESSAGE\r\ndestination:q\r\nsubscription:1\r\n\r\nhi\r\n\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpstr(f->command, ==, "MESSAGE");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "destination"), ==, "q");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "subscription"), ==, "1");
        /* The body is not line-oriented: its CRLF is data. */
        g_assert_cmpstr(f->body, ==, "hi\r\n");
}

static void test_header_escapes(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\na\\cb:c\\\\d\\ne\\rf\nempty:\n\n\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpstr(f->headers[0].name, ==, "a:b");
        g_assert_cmpstr(f->headers[0].value, ==, "c\\d\ne\rf");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "a:b"), ==, "c\\d\ne\rf");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "empty"), ==, "");

        assert_fails(NULL, S("SEND\nx:a\\tb\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\nx:trailing\\\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\nx\\q:v\n\n\0"), -EBADMSG);
}

static void test_value_with_colon(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;

        /* Only the first ':' separates; later ones are taken literally. */
        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\nurl:http://x:1\n\n\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "url"), ==, "http://x:1");
}

static void test_connect_not_unescaped(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) c = NULL;
        g_autoptr(fy_stomp_frame) cd = NULL;
        g_autoptr(GBytes) enc = NULL;
        static const char *const hdrs[] = { "passcode", "a\\b:c", NULL };

        g_assert_cmpint(fy_stomp_parser_feed(p, S("CONNECT\nlogin:a\\tb\\c\npasscode:x:y\n\n\0"
                                                  "CONNECTED\nserver:s\\n\n\n\0")), ==, 0);
        c = next_frame(p);
        g_assert_cmpstr(fy_stomp_frame_get_header(c, "login"), ==, "a\\tb\\c");
        g_assert_cmpstr(fy_stomp_frame_get_header(c, "passcode"), ==, "x:y");
        cd = next_frame(p);
        g_assert_cmpstr(fy_stomp_frame_get_header(cd, "server"), ==, "s\\n");

        enc = fy_stomp_frame_encode("CONNECT", hdrs, NULL, 0);
        g_assert_cmpmem(g_bytes_get_data(enc, NULL), g_bytes_get_size(enc),
                        "CONNECT\npasscode:a\\b:c\n\n\0", sizeof("CONNECT\npasscode:a\\b:c\n\n\0") - 1);
}

static void test_repeated_header(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("MESSAGE\nfoo:World\nfoo:Hello\n"
                                                  "content-length:1\ncontent-length:999\n\nx\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpuint(f->n_headers, ==, 4);
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "foo"), ==, "World");
        g_assert_cmpuint(f->body_len, ==, 1);
}

static void test_limit_frame(void)
{
        const struct fy_stomp_limits l = { .max_frame = 32, .max_headers = 8, .max_header_line = 64 };
        g_autoptr(fy_stomp_parser) ok = fy_stomp_parser_new(&l);
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(&l);
        g_autoptr(fy_stomp_frame) f = NULL;
        g_autofree char *big = g_strnfill(1000, 'x');
        int r = 0;

        /* Exactly at the limit: "SEND\n" (5) + "\n" (1) + 26 body bytes. */
        g_assert_cmpint(fy_stomp_parser_feed(ok, S("SEND\n\nabcdefghijklmnopqrstuvwxyz\0")), ==, 0);
        f = next_frame(ok);
        g_assert_cmpuint(f->body_len, ==, 26);

        /* Body without content-length: fails while buffering, before any NUL. */
        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\n\n")), ==, 0);
        for (int i = 0; i < 100 && r == 0; i++)
                r = fy_stomp_parser_feed(p, big, 1);
        g_assert_cmpint(r, ==, -EMSGSIZE);
        g_assert_nonnull(strstr(fy_stomp_parser_error(p), "32"));

        assert_fails(&l, S("SEND\n\nabcdefghijklmnopqrstuvwxyz!\0"), -EMSGSIZE);
        /* Headers count towards the frame too. */
        assert_fails(&l, S("SEND\na:0123456789\nb:0123456789\nc:0\n\n\0"), -EMSGSIZE);
        /* content-length larger than the frame fails as soon as headers end. */
        assert_fails(&l, S("SEND\ncontent-length:27\n\n"), -EMSGSIZE);
}

static void test_limit_headers(void)
{
        const struct fy_stomp_limits l = { .max_frame = 4096, .max_headers = 3, .max_header_line = 64 };
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(&l);
        g_autoptr(fy_stomp_frame) f = NULL;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\na:1\nb:2\nc:3\n\n\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpuint(f->n_headers, ==, 3);
        /* Fails on the fourth header line, without waiting for the frame end. */
        assert_fails(&l, S("SEND\na:1\nb:2\nc:3\nd:4\n"), -EMSGSIZE);
}

static void test_limit_header_line(void)
{
        const struct fy_stomp_limits l = { .max_frame = 4096, .max_headers = 8, .max_header_line = 8 };
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(&l);
        g_autoptr(fy_stomp_frame) f = NULL;

        /* 8 bytes, with LF and with CRLF, are fine. */
        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\nabc:1234\nabc:5678\r\n\n\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "abc"), ==, "1234");
        /* The 9th byte fails even before the line ends. */
        assert_fails(&l, S("SEND\nabc:12345"), -EMSGSIZE);
        /* The command line is held to the same limit. */
        assert_fails(&l, S("ABCDEFGHI"), -EMSGSIZE);
}

static void test_limit_default(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autofree char *line = g_strnfill(FY_STOMP_DEFAULT_MAX_HEADER_LINE + 1, 'h');
        int r;

        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\n")), ==, 0);
        r = fy_stomp_parser_feed(p, line, strlen(line));
        g_assert_cmpint(r, ==, -EMSGSIZE);
        g_assert_nonnull(strstr(fy_stomp_parser_error(p), "8192"));
}

/*
 * A peer announcing a large body and sending nothing must not make the parser
 * allocate it: memory grows with the bytes that actually arrive.
 */
static void test_body_grows_as_it_arrives(void)
{
        const struct fy_stomp_limits l = { .max_frame = 256u << 20, .max_headers = 8, .max_header_line = 64 };
        struct fy_stomp_parser *parsers[8];
        g_autoptr(fy_stomp_parser) p = NULL;
        g_autoptr(fy_stomp_frame) f = NULL;
        size_t before, after;

        before = mallinfo2().uordblks + mallinfo2().hblkhd;
        for (size_t i = 0; i < G_N_ELEMENTS(parsers); i++) {
                parsers[i] = fy_stomp_parser_new(&l);
                g_assert_cmpint(fy_stomp_parser_feed(parsers[i], S("SEND\ncontent-length:200000000\n\nab")), ==, 0);
        }
        after = mallinfo2().uordblks + mallinfo2().hblkhd;
        /* 8 x 200 MB announced; a few KiB each is fine. */
        g_assert_cmpuint(after - before, <, 8u << 20);
        for (size_t i = 0; i < G_N_ELEMENTS(parsers); i++)
                fy_stomp_parser_free(parsers[i]);

        /* And the body still arrives whole, in pieces. */
        p = fy_stomp_parser_new(&l);
        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\ncontent-length:200000\n\n")), ==, 0);
        for (int i = 0; i < 200; i++) {
                char chunk[1000];
                memset(chunk, 'a' + i % 26, sizeof(chunk));
                g_assert_cmpint(fy_stomp_parser_feed(p, chunk, sizeof(chunk)), ==, 0);
        }
        g_assert_cmpint(fy_stomp_parser_feed(p, S("\0")), ==, 0);
        f = next_frame(p);
        g_assert_cmpuint(f->body_len, ==, 200000);
        g_assert_cmpint(f->body[199999], ==, 'a' + 199 % 26);
        g_assert_cmpint(f->body[200000], ==, 0);
}

static void test_huge_content_length(void)
{
        /* Fails immediately, without the body ever arriving. */
        assert_fails(NULL, S("SEND\ncontent-length:4294967296\n\n"), -EMSGSIZE);
        assert_fails(NULL, S("SEND\ncontent-length:4194305\n\n"), -EMSGSIZE);
        /* Beyond 64 bits it is not a valid number at all. */
        assert_fails(NULL, S("SEND\ncontent-length:99999999999999999999999\n\n"), -EBADMSG);
}

static void test_malformed(void)
{
        assert_fails(NULL, S("SEND\ncontent-length:abc\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\ncontent-length:-1\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\ncontent-length: 1\n\nx\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\ncontent-length:\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\ncontent-length:1\n\nxy\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\nnocolon\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\n:value\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("\0"), -EBADMSG);
        assert_fails(NULL, S("\n\nsend\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND1\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SE ND\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\r\r\n\n\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\0"), -EBADMSG);
        assert_fails(NULL, S("SEND\nx:y\0"), -EBADMSG);
        assert_fails(NULL, S("\rX"), -EBADMSG);
}

static void test_frames_before_error(void)
{
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        struct fy_stomp_frame *f = NULL;

        /* Once the stream is broken no frame is handed out any more. */
        g_assert_cmpint(fy_stomp_parser_feed(p, S("SEND\n\n\0bad\n\n\0")), ==, -EBADMSG);
        g_assert_cmpint(fy_stomp_parser_next(p, &f), ==, -EBADMSG);
        g_assert_null(f);
}

static void test_round_trip(void)
{
        static const char *const hdrs[] = {
                "destination", "jms.topic.vdsm_requests",
                "reply-to", "q:with\\odd\nchars\r",
                "we:ird", "",
                NULL,
        };
        static const char body[] = "{\"id\":\"1\"}\0tail";
        g_autoptr(GBytes) enc = fy_stomp_frame_encode("SEND", hdrs, body, sizeof(body) - 1);
        g_autoptr(GBytes) noenc = fy_stomp_frame_encode("DISCONNECT", NULL, NULL, 0);
        g_autoptr(fy_stomp_parser) p = fy_stomp_parser_new(NULL);
        g_autoptr(fy_stomp_frame) f = NULL;
        g_autoptr(fy_stomp_frame) d = NULL;
        gsize len;
        const char *data = g_bytes_get_data(enc, &len);

        g_assert_null(memchr(data, '\r', len - sizeof(body)));
        g_assert_cmpint(fy_stomp_parser_feed(p, data, len), ==, 0);
        data = g_bytes_get_data(noenc, &len);
        g_assert_cmpmem(data, len, "DISCONNECT\n\n\0", 13);
        g_assert_cmpint(fy_stomp_parser_feed(p, data, len), ==, 0);

        f = next_frame(p);
        g_assert_cmpstr(f->command, ==, "SEND");
        g_assert_cmpuint(f->n_headers, ==, 4);
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "destination"), ==, "jms.topic.vdsm_requests");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "reply-to"), ==, "q:with\\odd\nchars\r");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "we:ird"), ==, "");
        g_assert_cmpstr(fy_stomp_frame_get_header(f, "content-length"), ==, "15");
        g_assert_cmpmem(f->body, f->body_len, body, sizeof(body) - 1);
        d = next_frame(p);
        g_assert_cmpstr(d->command, ==, "DISCONNECT");
        g_assert_cmpuint(d->n_headers, ==, 0);
        assert_no_frame(p);
}

static void test_encode_empty_body(void)
{
        g_autoptr(GBytes) enc = fy_stomp_frame_encode("RECEIPT", NULL, "", 0);
        static const char expect[] = "RECEIPT\ncontent-length:0\n\n";

        g_assert_cmpmem(g_bytes_get_data(enc, NULL), g_bytes_get_size(enc), expect, sizeof(expect));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/stomp/single-frame", test_single_frame);
        g_test_add_func("/stomp/body-grows-as-it-arrives", test_body_grows_as_it_arrives);
        g_test_add_func("/stomp/byte-by-byte", test_byte_by_byte);
        g_test_add_func("/stomp/partial-frame", test_partial_frame);
        g_test_add_func("/stomp/multiple-frames", test_multiple_frames);
        g_test_add_func("/stomp/content-length-nuls", test_content_length_nuls);
        g_test_add_func("/stomp/body-without-content-length", test_body_without_content_length);
        g_test_add_func("/stomp/heartbeats", test_heartbeats);
        g_test_add_func("/stomp/crlf", test_crlf);
        g_test_add_func("/stomp/header-escapes", test_header_escapes);
        g_test_add_func("/stomp/value-with-colon", test_value_with_colon);
        g_test_add_func("/stomp/connect-not-unescaped", test_connect_not_unescaped);
        g_test_add_func("/stomp/repeated-header", test_repeated_header);
        g_test_add_func("/stomp/limit/frame", test_limit_frame);
        g_test_add_func("/stomp/limit/headers", test_limit_headers);
        g_test_add_func("/stomp/limit/header-line", test_limit_header_line);
        g_test_add_func("/stomp/limit/default", test_limit_default);
        g_test_add_func("/stomp/limit/huge-content-length", test_huge_content_length);
        g_test_add_func("/stomp/malformed", test_malformed);
        g_test_add_func("/stomp/frames-before-error", test_frames_before_error);
        g_test_add_func("/stomp/round-trip", test_round_trip);
        g_test_add_func("/stomp/encode-empty-body", test_encode_empty_body);

        return g_test_run();
}
