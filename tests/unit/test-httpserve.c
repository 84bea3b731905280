/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * fy_http_server's minimum body rate (the image transfer endpoint's rule for
 * uploads): a body trickled with short pauses, none as long as the pause
 * timeout, is cut with 408 once its average falls below the rate; a body
 * sent at once is served. A real libsoup server on a loopback socket, a
 * client thread with blocking sockets.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "httpserve.h"
#include "listener.h"

struct client {
        guint16 port;
        bool trickle;
        GMainLoop *loop;
        char answer[4096];
        double elapsed;
};

static void on_request(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                       gpointer data)
{
        soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
        soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC, "ok\n", 3);
}

static gboolean quit(gpointer data)
{
        g_main_loop_quit(data);
        return G_SOURCE_REMOVE;
}

static gpointer client_thread(gpointer data)
{
        struct client *cl = data;
        g_autoptr(GSocketClient) sc = g_socket_client_new();
        g_autoptr(GSocketConnection) conn = g_socket_client_connect_to_host(sc, "127.0.0.1", cl->port, NULL, NULL);
        GSocket *sock;
        static const char head[] = "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
        char body[1000];
        gint64 t0 = g_get_monotonic_time();
        gsize got = 0;

        g_assert_nonnull(conn);
        sock = g_socket_connection_get_socket(conn);
        g_socket_set_timeout(sock, 10);
        memset(body, 'x', sizeof(body));
        g_assert_cmpint(g_socket_send(sock, head, strlen(head), NULL, NULL), ==, (gssize) strlen(head));
        if (cl->trickle) {
                /* 5 bytes/s, a pause of 200 ms: never the 1 s pause timeout, always under 100 bytes/s. */
                for (int i = 0; i < 50; i++) {
                        if (g_socket_send(sock, body, 1, NULL, NULL) != 1)
                                break;
                        if (g_socket_condition_timed_wait(sock, G_IO_IN, 200000, NULL, NULL))
                                break;  /* answered */
                }
        } else {
                g_assert_cmpint(g_socket_send(sock, body, sizeof(body), NULL, NULL), ==, (gssize) sizeof(body));
        }
        for (;;) {
                gssize n = g_socket_receive(sock, cl->answer + got, sizeof(cl->answer) - 1 - got, NULL, NULL);

                if (n <= 0)
                        break;
                got += (gsize) n;
                if (strstr(cl->answer, "\r\n\r\n") && (strstr(cl->answer, "ok\n") || strstr(cl->answer, "bytes/s")))
                        break;
        }
        cl->answer[got] = '\0';
        cl->elapsed = (double) (g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
        g_idle_add(quit, cl->loop);
        return NULL;
}

static void run(bool trickle, struct client *cl)
{
        g_autoptr(SoupServer) soup = soup_server_new(NULL, NULL);
        g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
        g_autoptr(GSocketAddress) addr = g_inet_socket_address_new(lo, 0);
        g_autoptr(GError) error = NULL;
        struct fy_http_limits limits = {
                .idle_timeout_s = 10, .header_timeout_s = 10, .body_timeout_s = 1, .write_timeout_s = 10,
                .body_min_rate = 100,
        };
        struct fy_http_server *s = NULL;
        GThread *t;

        soup_server_add_handler(soup, NULL, on_request, NULL, NULL);
        g_assert_cmpint(fy_http_server_new(soup, addr, NULL, &limits, NULL, NULL, &s, &error), ==, 0);
        memset(cl, 0, sizeof(*cl));
        cl->port = fy_http_server_port(s);
        cl->trickle = trickle;
        cl->loop = g_main_loop_new(NULL, FALSE);
        t = g_thread_new("client", client_thread, cl);
        g_main_loop_run(cl->loop);
        g_thread_join(t);
        g_main_loop_unref(cl->loop);
        fy_http_server_free(s);
}

static void test_trickled_body_is_cut(void)
{
        struct client cl;

        run(true, &cl);
        g_test_message("%.1f s: %s", cl.elapsed, cl.answer);
        g_assert_true(g_str_has_prefix(cl.answer, "HTTP/1.1 408 "));
        g_assert_nonnull(strstr(cl.answer, "slower than 100 bytes/s"));
        g_assert_cmpfloat(cl.elapsed, >=, 0.9);
        g_assert_cmpfloat(cl.elapsed, <, 8);
}

static void test_body_sent_at_once_is_served(void)
{
        struct client cl;

        run(false, &cl);
        g_assert_true(g_str_has_prefix(cl.answer, "HTTP/1.1 200 "));
}

static void check_key(const char *ip, const char *want)
{
        g_autoptr(GInetAddress) addr = g_inet_address_new_from_string(ip);
        g_autofree char *key = NULL;

        g_assert_nonnull(addr);
        key = fy_peer_key(addr);
        g_assert_cmpstr(key, ==, want);
}

/* The per-address cap counts an IPv6 client by its /64, an IPv4-mapped one by its IPv4 address. */
static void test_peer_key(void)
{
        check_key("192.0.2.7", "192.0.2.7");
        check_key("::ffff:192.0.2.7", "192.0.2.7");
        check_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64");
        check_key("2001:db8:1:2::1", "2001:db8:1:2::/64");
        check_key("2001:db8:1:3::1", "2001:db8:1:3::/64");
        check_key("::1", "::/64");
        check_key("fe80::1", "fe80::/64");
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/listener/peer-key", test_peer_key);
        g_test_add_func("/httpserve/min-rate/trickle", test_trickled_body_is_cut);
        g_test_add_func("/httpserve/min-rate/at-once", test_body_sent_at_once_is_served);
        return g_test_run();
}
