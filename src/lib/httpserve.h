/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The connections of a libsoup 3 server, handled by Ferry rather than by
 * libsoup's own listener (fy_listener: backlog, caps, EMFILE backoff), with
 * what libsoup 3.2 lacks:
 *
 *  - a keep-alive connection whose client has gone is closed at once
 *    (libsoup 3.2 leaves it in CLOSE_WAIT forever: the message it makes
 *    for the next request has no completion callback, so an EOF before any
 *    byte of it is never turned into a disconnect; fixed upstream in 3.3);
 *  - idle keep-alive, request-header, request-body and TLS handshake timeouts;
 *  - refusing a request before its body is read, with the connection
 *    closed (libsoup answers an early status only after the whole body).
 *
 * How: each accepted connection (after our own TLS handshake) is given to
 * libsoup with soup_server_accept_iostream() through a stream whose input
 * side we can read ahead of libsoup. While a connection waits between
 * requests, a watch of higher priority than libsoup's reads what arrives
 * and keeps it for libsoup; end of stream or an error there closes the
 * connection through soup_server_message_steal_connection() before libsoup
 * ever sees it.
 */
#include <stdbool.h>

#include <libsoup/soup.h>

struct fy_http_server;

struct fy_http_limits {
        unsigned max_connections;       /* 0: no cap */
        unsigned per_address;           /* 0: no cap */
        unsigned idle_timeout_s;        /* keep-alive connection without a request */
        unsigned header_timeout_s;      /* from the first byte of a request to the end of its headers */
        unsigned body_timeout_s;        /* a request body without a byte for this long */
        unsigned handshake_timeout_s;   /* TLS */
        /*
         * The body of a refusal made here (408, 503, 400 for what libsoup
         * cannot parse), with its content type in *ret_type; NULL: the detail
         * as text/plain.
         */
        char *(*fault)(guint status, const char *detail, const char **ret_type);
};

typedef void (*fy_http_log_fn)(void *data, GLogLevelFlags level, const char *message);

/*
 * Serves soup (with its handlers already added) on addr; TLS when cert is
 * given. Returns 0 or -errno.
 */
int fy_http_server_new(SoupServer *soup, GSocketAddress *addr, GTlsCertificate *cert,
                       const struct fy_http_limits *limits, fy_http_log_fn log, void *log_data,
                       struct fy_http_server **ret, GError **error);
/* Closes the listener and every connection. */
void fy_http_server_free(struct fy_http_server *s);
guint16 fy_http_server_port(struct fy_http_server *s);
/* Connections open now (live ones: a closed client's connection is gone). */
unsigned fy_http_server_connections(struct fy_http_server *s);
/* The TCP socket of msg's connection, or NULL. */
GSocket *fy_http_server_get_socket(struct fy_http_server *s, SoupServerMessage *msg);

/*
 * Answers msg at once with status, content_type and body (and extra_headers,
 * "Name: value\r\n" lines, or NULL), whatever was read of it, and closes the
 * connection after reading and dropping what the client still sends, briefly.
 * Safe from an early handler, a got-chunk handler or a handler.
 */
void fy_http_server_refuse(struct fy_http_server *s, SoupServerMessage *msg, guint status,
                           const char *extra_headers, const char *content_type, const char *body);

/*
 * Message framing of a request (RFC 9112 §6): at most one Content-Length,
 * digits only; Transfer-Encoding only "chunked", never with a Content-Length.
 * Returns 0, or 400 with *ret_detail saying what is wrong (caller frees).
 */
int fy_http_check_framing(SoupMessageHeaders *h, char **ret_detail);
