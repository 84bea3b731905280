/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The RPC client's queue against a scripted STOMP server in a thread:
 * urgent calls (a host's poll) are written before every ordinary call that
 * waits for the agent's in-flight window, and are accepted past the
 * pending-call limit by a bounded reserve.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <glib.h>
#include <jansson.h>
#include "jsonrpc.h"
#include "rpcclient.h"
#include "stomp.h"

#define ORDINARY 100

static int listen_any(guint16 *port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &a, sizeof(a)), ==, 0);
        g_assert_cmpint(listen(fd, 4), ==, 0);
        g_assert_cmpint(getsockname(fd, (struct sockaddr *) &a, &len), ==, 0);
        *port = ntohs(a.sin_port);
        return fd;
}

static void write_all(int fd, GBytes *bytes)
{
        gsize len;
        const char *p = g_bytes_get_data(bytes, &len);

        while (len > 0) {
                ssize_t n = write(fd, p, len);

                g_assert_cmpint(n, >, 0);
                p += n;
                len -= (size_t) n;
        }
        g_bytes_unref(bytes);
}

/* The scripted agent: the frames it got, in order, as "method" strings. */
struct server {
        int listen_fd;
        int fd;
        struct fy_stomp_parser *parser;
        GPtrArray *methods;            /* of every SEND, in arrival order */
        GPtrArray *unanswered;         /* ids sent and not yet answered */
        GAsyncQueue *to_main;          /* "full": the window is full */
        GAsyncQueue *to_server;        /* "go": the urgent call is queued */
        char *reply_queue;
};

/* Reads until one SEND arrived (answering CONNECT, noting SUBSCRIBE); false at EOF. */
static bool next_send(struct server *s)
{
        for (;;) {
                g_autoptr(fy_stomp_frame) f = NULL;
                char buf[4096];
                ssize_t n;
                int r = fy_stomp_parser_next(s->parser, &f);

                g_assert_cmpint(r, >=, 0);
                if (r == 0) {
                        n = read(s->fd, buf, sizeof(buf));
                        if (n <= 0)
                                return false;
                        g_assert_cmpint(fy_stomp_parser_feed(s->parser, buf, (size_t) n), ==, 0);
                        continue;
                }
                if (strcmp(f->command, "CONNECT") == 0 || strcmp(f->command, "STOMP") == 0) {
                        const char *h[] = { "version", "1.2", NULL };

                        write_all(s->fd, fy_stomp_frame_encode("CONNECTED", h, NULL, 0));
                } else if (strcmp(f->command, "SUBSCRIBE") == 0) {
                        if (!s->reply_queue)
                                s->reply_queue = g_strdup(fy_stomp_frame_get_header(f, "destination"));
                } else if (strcmp(f->command, "SEND") == 0) {
                        g_autoptr(json_t) msg = json_loadb(f->body, f->body_len, 0, NULL);

                        g_assert_nonnull(msg);
                        g_ptr_array_add(s->methods, g_strdup(json_string_value(json_object_get(msg, "method"))));
                        g_ptr_array_add(s->unanswered, g_strdup(json_string_value(json_object_get(msg, "id"))));
                        return true;
                }
        }
}

static void answer_oldest(struct server *s)
{
        g_autofree char *id = g_ptr_array_steal_index(s->unanswered, 0);
        g_autoptr(json_t) reply = json_pack("{s:s, s:s, s:b}", "jsonrpc", "2.0", "id", id, "result", 1);
        g_autofree char *body = json_dumps(reply, JSON_COMPACT);
        const char *h[] = { "destination", s->reply_queue, "content-type", "application/json", NULL };

        write_all(s->fd, fy_stomp_frame_encode("MESSAGE", h, body, strlen(body)));
}

static gpointer server_main(gpointer data)
{
        struct server *s = data;

        s->fd = accept(s->listen_fd, NULL, NULL);
        g_assert_cmpint(s->fd, >=, 0);
        /* The window fills: nothing is answered yet. */
        while (s->methods->len < FY_RPC_CLIENT_MAX_INFLIGHT)
                g_assert_true(next_send(s));
        /* A little longer: nothing more may come while the window is full. */
        g_usleep(200 * 1000);
        g_async_queue_push(s->to_main, "full");
        g_assert_cmpstr(g_async_queue_pop(s->to_server), ==, "go");
        /* One slot frees: the urgent call queued behind 38 ordinary ones takes it. */
        answer_oldest(s);
        while (next_send(s)) {
                while (s->unanswered->len > 0)
                        answer_oldest(s);
        }
        close(s->fd);
        return NULL;
}

struct tally {
        unsigned ok, failed;
        GMainLoop *loop;
        unsigned expect;
};

static void on_reply(json_t *result, const GError *error, void *userdata)
{
        struct tally *t = userdata;

        if (error)
                t->failed++;
        else
                t->ok++;
        (void) result;
        if (t->ok + t->failed == t->expect)
                g_main_loop_quit(t->loop);
}

static gboolean poll_full(gpointer data)
{
        void **pair = data;
        struct server *s = pair[0];
        struct fy_rpc_client *c = pair[1];
        struct tally *t = pair[2];

        if (!g_async_queue_try_pop(s->to_main))
                return G_SOURCE_CONTINUE;
        fy_rpc_client_call_urgent(c, "Test.urgent3", NULL, 10000, on_reply, t);
        g_async_queue_push(s->to_server, "go");
        return G_SOURCE_REMOVE;
}

static void test_urgent_first(void)
{
        struct server s = { 0 };
        struct tally t = { 0 };
        struct fy_rpc_client_options o = { .host = "127.0.0.1" };
        g_autoptr(fy_rpc_client) c = NULL;
        GThread *thread;
        void *pair[3];
        unsigned i, ordinary = 0;

        s.listen_fd = listen_any(&o.port);
        s.parser = fy_stomp_parser_new(NULL);
        s.methods = g_ptr_array_new_with_free_func(g_free);
        s.unanswered = g_ptr_array_new_with_free_func(g_free);
        s.to_main = g_async_queue_new();
        s.to_server = g_async_queue_new();
        thread = g_thread_new("stomp-server", server_main, &s);

        t.loop = g_main_loop_new(NULL, FALSE);
        t.expect = ORDINARY + 3;
        c = fy_rpc_client_new(&o, NULL, NULL);
        /* Queued before the connection is up: the urgent two go first, in their order. */
        for (i = 0; i < ORDINARY; i++)
                fy_rpc_client_call(c, "Test.ordinary", json_pack("{s:i}", "n", i), 10000, on_reply, &t);
        fy_rpc_client_call_urgent(c, "Test.urgent1", NULL, 10000, on_reply, &t);
        fy_rpc_client_call_urgent(c, "Test.urgent2", NULL, 10000, on_reply, &t);
        pair[0] = &s;
        pair[1] = c;
        pair[2] = &t;
        g_timeout_add(10, poll_full, pair);
        g_main_loop_run(t.loop);
        g_assert_cmpuint(t.failed, ==, 0);
        g_assert_cmpuint(t.ok, ==, ORDINARY + 3);
        g_clear_pointer(&c, fy_rpc_client_free);
        g_thread_join(thread);

        g_assert_cmpuint(s.methods->len, ==, ORDINARY + 3);
        g_assert_cmpstr(s.methods->pdata[0], ==, "Test.urgent1");
        g_assert_cmpstr(s.methods->pdata[1], ==, "Test.urgent2");
        /* The window held 62 ordinary calls; the next one written was the urgent one. */
        g_assert_cmpstr(s.methods->pdata[FY_RPC_CLIENT_MAX_INFLIGHT], ==, "Test.urgent3");
        for (i = 0; i < s.methods->len; i++)
                if (strcmp(s.methods->pdata[i], "Test.ordinary") == 0)
                        ordinary++;
        g_assert_cmpuint(ordinary, ==, ORDINARY);

        close(s.listen_fd);
        fy_stomp_parser_free(s.parser);
        g_ptr_array_unref(s.methods);
        g_ptr_array_unref(s.unanswered);
        g_async_queue_unref(s.to_main);
        g_async_queue_unref(s.to_server);
        g_free(s.reply_queue);
        g_main_loop_unref(t.loop);
}

struct busy {
        unsigned busy, cancelled, other;
};

static void on_busy_reply(json_t *result, const GError *error, void *userdata)
{
        struct busy *b = userdata;

        (void) result;
        if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_BUSY))
                b->busy++;
        else if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
                b->cancelled++;
        else
                b->other++;
}

/* A server that never answers CONNECT: every call stays pending. */
static void test_urgent_reserve(void)
{
        struct fy_rpc_client_options o = { .host = "127.0.0.1", .connect_timeout_ms = 30000 };
        struct busy b = { 0 };
        struct fy_rpc_client *c;
        int listen_fd = listen_any(&o.port);
        unsigned i;

        c = fy_rpc_client_new(&o, NULL, NULL);
        for (i = 0; i < FY_RPC_CLIENT_MAX_PENDING + 1; i++)
                fy_rpc_client_call(c, "Test.ordinary", NULL, 30000, on_busy_reply, &b);
        for (i = 0; i < FY_RPC_CLIENT_URGENT_RESERVE + 1; i++)
                fy_rpc_client_call_urgent(c, "Test.urgent", NULL, 30000, on_busy_reply, &b);
        /* The refusals are delivered from an idle. */
        while (g_main_context_iteration(NULL, FALSE))
                ;
        g_assert_cmpuint(b.busy, ==, 2);     /* the ordinary one past the limit and the urgent past the reserve */
        g_assert_cmpuint(b.other, ==, 0);
        fy_rpc_client_free(c);
        g_assert_cmpuint(b.cancelled, ==, FY_RPC_CLIENT_MAX_PENDING + FY_RPC_CLIENT_URGENT_RESERVE);
        g_assert_cmpuint(b.other, ==, 0);
        close(listen_fd);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/rpcclient/urgent-first", test_urgent_first);
        g_test_add_func("/rpcclient/urgent-reserve", test_urgent_reserve);
        return g_test_run();
}
