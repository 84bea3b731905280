/* SPDX-License-Identifier: GPL-2.0-or-later */
/* See listener.h. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"

#define ACCEPT_BATCH 64                 /* accepts per wake-up, so one listener cannot starve the loop */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define LINGER_MAX 256                  /* refused connections lingering at once; beyond, closed at once */

struct fy_listener {
        GSocket *sock;
        guint16 port;
        struct fy_listener_limits limits;
        const struct fy_listener_ops *ops;
        void *data;
        GSource *watch;
        guint retry;                    /* timeout source while accepting is paused */
        unsigned backoff_ms;
        gint64 paused_since;            /* monotonic µs, 0: not paused */
        unsigned count;
        GHashTable *per_peer;           /* fy_peer_key → count (GUINT_TO_POINTER) */
};

static GQuark peer_quark(void)
{
        return g_quark_from_static_string("fy-listener-peer");
}

static void log_msg(struct fy_listener *l, GLogLevelFlags level, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void log_msg(struct fy_listener *l, GLogLevelFlags level, const char *fmt, ...)
{
        g_autofree char *text = NULL;
        va_list ap;

        if (!l->ops->log)
                return;
        va_start(ap, fmt);
        text = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        l->ops->log(l->data, level, text);
}

char *fy_peer_key(GInetAddress *addr)
{
        const guint8 *b;
        guint8 net[16] = { 0 };
        g_autoptr(GInetAddress) prefix = NULL;
        g_autofree char *text = NULL;

        if (g_inet_address_get_family(addr) != G_SOCKET_FAMILY_IPV6)
                return g_inet_address_to_string(addr);
        b = g_inet_address_to_bytes(addr);
        /* ::ffff:a.b.c.d is the IPv4 client a.b.c.d on a dual-stack socket. */
        if (memcmp(b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0)
                return g_strdup_printf("%u.%u.%u.%u", b[12], b[13], b[14], b[15]);
        /* One IPv6 client usually holds a whole /64 and can pick any address in it. */
        memcpy(net, b, 8);
        prefix = g_inet_address_new_from_bytes(net, G_SOCKET_FAMILY_IPV6);
        text = g_inet_address_to_string(prefix);
        return g_strconcat(text, "/64", NULL);
}

static char *peer_ip(GSocket *sock)
{
        g_autoptr(GSocketAddress) addr = g_socket_get_remote_address(sock, NULL);

        if (!addr || !G_IS_INET_SOCKET_ADDRESS(addr))
                return g_strdup("unknown");
        return fy_peer_key(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(addr)));
}

static unsigned linger_count;

struct sock_linger {
        GSocket *sock;
        GObject *keep;
        gsize left;
        gint64 deadline;
        void (*done)(void *data);
        void *data;
};

static gboolean linger_ready(GSocket *sock, GIOCondition cond, gpointer data)
{
        struct sock_linger *lg = data;
        char buf[16384];
        g_autoptr(GError) error = NULL;
        gssize n;

        if (g_get_monotonic_time() >= lg->deadline)
                return G_SOURCE_REMOVE;
        n = g_socket_receive_with_blocking(sock, buf, sizeof(buf), FALSE, NULL, &error);
        if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                return G_SOURCE_CONTINUE;
        if (n <= 0 || (gsize) n >= lg->left)
                return G_SOURCE_REMOVE;
        lg->left -= (gsize) n;
        return G_SOURCE_CONTINUE;
}

static void linger_free(gpointer data)
{
        struct sock_linger *lg = data;

        (void) g_socket_close(lg->sock, NULL);
        g_object_unref(lg->sock);
        if (lg->keep)
                g_object_unref(lg->keep);
        linger_count--;
        if (lg->done)
                lg->done(lg->data);
        g_free(lg);
}

void fy_socket_linger_close(GSocket *sock, GObject *keep, gsize max, unsigned timeout_ms,
                            void (*done)(void *data), void *data)
{
        struct sock_linger *lg;
        GSource *src;

        (void) g_socket_shutdown(sock, FALSE, TRUE, NULL);
        if (linger_count >= LINGER_MAX) {
                (void) g_socket_close(sock, NULL);
                if (done)
                        done(data);
                return;
        }
        linger_count++;
        lg = g_new0(struct sock_linger, 1);
        lg->sock = g_object_ref(sock);
        lg->keep = keep ? g_object_ref(keep) : NULL;
        lg->left = max;
        lg->deadline = g_get_monotonic_time() + (gint64) timeout_ms * 1000;
        lg->done = done;
        lg->data = data;
        g_socket_set_blocking(sock, FALSE);
        /* The socket's own timeout (5 s without data, or the deadline) wakes the source if the peer sends nothing. */
        g_socket_set_timeout(sock, MIN(5u, (timeout_ms + 999) / 1000));
        src = g_socket_create_source(sock, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
        g_source_set_callback(src, (GSourceFunc) (void (*)(void)) linger_ready, lg, linger_free);
        g_source_attach(src, g_main_context_get_thread_default());
        g_source_unref(src);
}

static void refuse(struct fy_listener *l, GSocket *sock, const char *reason)
{
        if (l->ops->refused) {
                l->ops->refused(l->data, sock, reason);
                fy_socket_linger_close(sock, NULL, 64 * 1024, 2000, NULL, NULL);
        } else {
                (void) g_socket_close(sock, NULL);
        }
}

static void take(struct fy_listener *l, int fd)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GSocket) sock = g_socket_new_from_fd(fd, &error);
        g_autofree char *ip = NULL;
        g_autofree char *reason = NULL;
        unsigned n;

        if (!sock) {
                close(fd);
                return;
        }
        ip = peer_ip(sock);
        n = GPOINTER_TO_UINT(g_hash_table_lookup(l->per_peer, ip));
        if (l->limits.max_connections && l->count >= l->limits.max_connections)
                reason = g_strdup_printf("too many connections (at most %u); retry shortly", l->limits.max_connections);
        else if (l->limits.per_address && n >= l->limits.per_address)
                reason = g_strdup_printf("too many connections from %s (at most %u); retry shortly", ip,
                                         l->limits.per_address);
        if (reason) {
                refuse(l, sock, reason);
                return;
        }
        g_hash_table_insert(l->per_peer, g_strdup(ip), GUINT_TO_POINTER(n + 1));
        g_object_set_qdata_full(G_OBJECT(sock), peer_quark(), g_steal_pointer(&ip), g_free);
        l->count++;
        l->ops->accepted(l->data, sock);
}

void fy_listener_release(struct fy_listener *l, GSocket *sock)
{
        g_autofree char *ip = g_object_steal_qdata(G_OBJECT(sock), peer_quark());
        unsigned n;

        if (!ip)
                return;         /* released already */
        n = GPOINTER_TO_UINT(g_hash_table_lookup(l->per_peer, ip));
        if (n <= 1)
                g_hash_table_remove(l->per_peer, ip);
        else
                g_hash_table_insert(l->per_peer, g_strdup(ip), GUINT_TO_POINTER(n - 1));
        l->count--;
}

static void watch_start(struct fy_listener *l);

static gboolean on_retry(gpointer data)
{
        struct fy_listener *l = data;

        l->retry = 0;
        watch_start(l);
        return G_SOURCE_REMOVE;
}

/* Accepting failed for a reason of the whole process: wait, then try again; logged once per pause. */
static void pause_accepting(struct fy_listener *l, int err)
{
        if (!l->paused_since) {
                l->paused_since = g_get_monotonic_time();
                l->backoff_ms = BACKOFF_MIN_MS;
                log_msg(l, G_LOG_LEVEL_WARNING, "cannot accept connections on port %u: %s (%u open); "
                        "retrying until it works", l->port, g_strerror(err), l->count);
        } else {
                l->backoff_ms = MIN(l->backoff_ms * 2, BACKOFF_MAX_MS);
        }
        if (l->watch) {
                g_source_destroy(l->watch);
                g_clear_pointer(&l->watch, g_source_unref);
        }
        l->retry = g_timeout_add(l->backoff_ms, on_retry, l);
}

static gboolean on_incoming(GSocket *lsock, GIOCondition cond, gpointer data)
{
        struct fy_listener *l = data;

        for (int i = 0; i < ACCEPT_BATCH; i++) {
                int fd = accept4(g_socket_get_fd(lsock), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (fd < 0) {
                        switch (errno) {
                        case EAGAIN:
                                return G_SOURCE_CONTINUE;
                        case EMFILE:
                        case ENFILE:
                        case ENOBUFS:
                        case ENOMEM:
                                pause_accepting(l, errno);
                                return G_SOURCE_REMOVE;
                        case EBADF:
                        case EINVAL:
                        case ENOTSOCK:
                        case EOPNOTSUPP:
                        case EFAULT:
                                /* Not the client's doing: back off rather than spin. */
                                pause_accepting(l, errno);
                                return G_SOURCE_REMOVE;
                        default:
                                /* ECONNABORTED, EPROTO, EPERM, EINTR, network errors: that one connection. */
                                continue;
                        }
                }
                if (l->paused_since) {
                        log_msg(l, G_LOG_LEVEL_MESSAGE, "accepting connections on port %u again after %.1f s",
                                l->port, (double) (g_get_monotonic_time() - l->paused_since) / G_USEC_PER_SEC);
                        l->paused_since = 0;
                }
                take(l, fd);
        }
        return G_SOURCE_CONTINUE;
}

static void watch_start(struct fy_listener *l)
{
        l->watch = g_socket_create_source(l->sock, G_IO_IN, NULL);
        g_source_set_callback(l->watch, (GSourceFunc) (void (*)(void)) on_incoming, l, NULL);
        g_source_attach(l->watch, g_main_context_get_thread_default());
}

int fy_listener_new(GSocketAddress *addr, const struct fy_listener_limits *limits,
                    const struct fy_listener_ops *ops, void *data, struct fy_listener **ret, GError **error)
{
        struct fy_listener *l = g_new0(struct fy_listener, 1);
        g_autoptr(GSocketAddress) bound = NULL;

        l->limits = *limits;
        l->ops = ops;
        l->data = data;
        l->per_peer = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        l->sock = g_socket_new(g_socket_address_get_family(addr), G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, error);
        if (!l->sock)
                goto fail;
        g_socket_set_blocking(l->sock, FALSE);
        /* GLib's default backlog is 10: a burst of clients would be reset by the kernel. */
        g_socket_set_listen_backlog(l->sock, SOMAXCONN);
        if (!g_socket_bind(l->sock, addr, TRUE, error) || !g_socket_listen(l->sock, error))
                goto fail;
        bound = g_socket_get_local_address(l->sock, error);
        if (!bound)
                goto fail;
        l->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
        watch_start(l);
        *ret = l;
        return 0;
fail:
        fy_listener_free(l);
        return -EADDRNOTAVAIL;
}

void fy_listener_free(struct fy_listener *l)
{
        if (!l)
                return;
        if (l->watch) {
                g_source_destroy(l->watch);
                g_source_unref(l->watch);
        }
        if (l->retry)
                g_source_remove(l->retry);
        if (l->sock) {
                (void) g_socket_close(l->sock, NULL);
                g_object_unref(l->sock);
        }
        g_hash_table_unref(l->per_peer);
        g_free(l);
}

guint16 fy_listener_port(struct fy_listener *l)
{
        return l->port;
}

unsigned fy_listener_count(struct fy_listener *l)
{
        return l->count;
}

int fy_nofile_raise(char **ret_message)
{
        struct rlimit rl;
        int r;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
                r = -errno;
                *ret_message = g_strdup_printf("cannot read the open file limit: %s", g_strerror(-r));
                return r;
        }
        if (rl.rlim_cur < rl.rlim_max) {
                rlim_t old = rl.rlim_cur;

                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                        r = -errno;
                        *ret_message = g_strdup_printf("cannot raise the open file limit from %llu: %s",
                                                       (unsigned long long) old, g_strerror(-r));
                        return r;
                }
        }
        *ret_message = g_strdup_printf("open file limit: %llu", (unsigned long long) rl.rlim_cur);
        return 0;
}
