/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * A listening TCP socket that keeps accepting: backlog SOMAXCONN, a cap on
 * connections in all and per client address, and after an accept error
 * that is about the process (EMFILE, ENFILE, ENOBUFS, ENOMEM) a pause with
 * backoff instead of GLib's behaviour (GSocketService spins and warns on
 * every try; libsoup's listener stops accepting for good).
 *
 * Library code does not log: what the daemon should log (accepting paused,
 * resumed, a refused connection) goes to ops->log, once per pause.
 */
#include <stdbool.h>
#include <sys/resource.h>

#include <gio/gio.h>

struct fy_listener;

struct fy_listener_limits {
        unsigned max_connections;       /* live connections, 0: no cap */
        unsigned per_address;           /* live connections from one client (fy_peer_key), 0: no cap */
};

struct fy_listener_ops {
        /* A connection within the limits; the owner calls fy_listener_release() when it closes. */
        void (*accepted)(void *data, GSocket *sock);
        /*
         * A connection over a limit (reason says which). The owner may write a
         * short answer (the socket is non-blocking); the listener then closes it
         * after reading and dropping what the client sent, briefly. NULL: closed at once.
         */
        void (*refused)(void *data, GSocket *sock, const char *reason);
        /* Something the daemon should log (never more than once per accept pause). */
        void (*log)(void *data, GLogLevelFlags level, const char *message);
};

/* Binds (SO_REUSEADDR) and listens on addr. Returns 0 or -errno. */
int fy_listener_new(GSocketAddress *addr, const struct fy_listener_limits *limits,
                    const struct fy_listener_ops *ops, void *data, struct fy_listener **ret, GError **error);
void fy_listener_free(struct fy_listener *l);
guint16 fy_listener_port(struct fy_listener *l);
/*
 * The client a per-address cap counts: an IPv4 address as text; an IPv6
 * address by its /64 ("2001:db8::/64"), since one client holds a whole /64;
 * an IPv4-mapped IPv6 address as its IPv4 address. Caller frees.
 */
char *fy_peer_key(GInetAddress *addr);
/* Connections accepted and not yet released. */
unsigned fy_listener_count(struct fy_listener *l);
/* The connection sock (as passed to accepted) has closed: frees its slot. */
void fy_listener_release(struct fy_listener *l, GSocket *sock);

/*
 * Shuts the write side of sock, then reads and drops what the peer still
 * sends (at most max bytes, for at most timeout_ms) before closing it, so a
 * peer that sent a request before reading gets the answer already written
 * instead of a reset. Takes a reference on sock (and on keep, if given:
 * the stream sock belongs to). done (may be NULL) runs after the close.
 */
void fy_socket_linger_close(GSocket *sock, GObject *keep, gsize max, unsigned timeout_ms,
                            void (*done)(void *data), void *data);

/*
 * Raises RLIMIT_NOFILE's soft limit to the hard limit (every client is a
 * descriptor; systemd's default soft limit is 1024). Returns 0 or -errno;
 * *ret_message says what happened, for the daemon's log (caller frees).
 */
int fy_nofile_raise(char **ret_message);
