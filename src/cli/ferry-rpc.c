/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry-rpc: one JSON-RPC call to a ferry-agent, like vdsm-client.
 *
 *   ferry-rpc -p 54321 Host getCapabilities
 *   ferry-rpc -p 54321 Volume getInfo storagedomainID=… imageID=… volumeID=…
 *   ferry-rpc -p 54321 --events 10 SDM copy_data job_id=… source='{…}' destination='{…}'
 *
 * Exit status: 0 success, 1 the agent answered with an error, 2 anything
 * else (usage, connection, TLS, timeout).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jsonrpc.h"
#include "log.h"
#include "rpcclient.h"

#define EXIT_RPC_ERROR 1
#define EXIT_TRANSPORT 2
#define MAX_SECONDS (24 * 3600)

struct cli {
        GMainLoop *loop;
        int exit_code;
        int events_seconds;
        guint events_timer;
};

static void cli_quit(struct cli *cli, int code)
{
        cli->exit_code = code;
        g_main_loop_quit(cli->loop);
}

static gboolean on_events_done(gpointer data)
{
        struct cli *cli = data;

        cli->events_timer = 0;
        cli_quit(cli, EXIT_SUCCESS);
        return G_SOURCE_REMOVE;
}

static void on_reply(json_t *result, const GError *error, void *data)
{
        struct cli *cli = data;
        g_autofree char *text = NULL;

        if (error) {
                if (error->domain == FY_ERROR) {
                        fprintf(stderr, "ferry-rpc: %s (code %d)\n", error->message, error->code);
                        cli_quit(cli, EXIT_RPC_ERROR);
                } else {
                        fprintf(stderr, "ferry-rpc: %s\n", error->message);
                        cli_quit(cli, EXIT_TRANSPORT);
                }
                return;
        }
        text = json_dumps(result, JSON_INDENT(4) | JSON_ENCODE_ANY);
        printf("%s\n", text ? text : "null");
        fflush(stdout);
        if (cli->events_seconds > 0)
                cli->events_timer = g_timeout_add_seconds(cli->events_seconds, on_events_done, cli);
        else
                cli_quit(cli, EXIT_SUCCESS);
}

static void on_event(const char *method, json_t *params, void *data)
{
        g_autoptr(json_t) line = json_pack("{s:s, s:O}", "method", method, "params", params);
        g_autofree char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;

        if (text) {
                printf("%s\n", text);
                fflush(stdout);
        }
}

static void on_disconnect(const GError *error, void *data)
{
        struct cli *cli = data;

        /* Only while watching: before that, on_reply has reported the same failure. */
        if (!cli->events_timer)
                return;
        fprintf(stderr, "ferry-rpc: while watching events: %s\n", error->message);
        cli_quit(cli, EXIT_TRANSPORT);
}

/* name=value pairs; a value is JSON when it parses as JSON, else a string (as vdsm-client does). */
static int parse_params(char **args, json_t **ret_params, GError **error)
{
        g_autoptr(json_t) params = json_object();

        for (size_t i = 0; args[i]; i++) {
                const char *eq = strchr(args[i], '=');
                g_autofree char *name = NULL;
                json_t *value;

                if (!eq || eq == args[i]) {
                        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                                    "'%s': parameters are name=value", args[i]);
                        return -1;
                }
                name = g_strndup(args[i], eq - args[i]);
                if (json_object_get(params, name)) {
                        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                                    "parameter '%s' given twice", name);
                        return -1;
                }
                value = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
                if (!value)
                        value = json_string(eq + 1);
                if (!value) {
                        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                                    "parameter '%s' is neither JSON nor valid UTF-8 text", name);
                        return -1;
                }
                json_object_set_new(params, name, value);
        }
        *ret_params = g_steal_pointer(&params);
        return 0;
}

int main(int argc, char **argv)
{
        g_autofree char *address = NULL;
        g_autofree char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
        g_auto(GStrv) rest = NULL, tls_names = NULL;
        g_autofree char *flow_id = NULL;
        int port = 0, timeout = 60, events = 0;
        const GOptionEntry entries[] = {
                { "address", 'a', 0, G_OPTION_ARG_STRING, &address, "Agent host name or address (default localhost)", "HOST" },
                { "port", 'p', 0, G_OPTION_ARG_INT, &port, "Agent port (required)", "PORT" },
                { "tls-cert", 0, 0, G_OPTION_ARG_FILENAME, &tls_cert, "Client certificate (PEM); enables TLS", "FILE" },
                { "tls-key", 0, 0, G_OPTION_ARG_FILENAME, &tls_key, "Client private key (PEM)", "FILE" },
                { "tls-ca", 0, 0, G_OPTION_ARG_FILENAME, &tls_ca, "CA certificate(s) the agent's certificate must chain to", "FILE" },
                { "tls-name", 0, 0, G_OPTION_ARG_STRING_ARRAY, &tls_names,
                  "Another name the agent's certificate may carry instead of HOST (its registered name); repeatable", "NAME" },
                { "timeout", 't', 0, G_OPTION_ARG_INT, &timeout, "Give up after this many seconds, connecting included (default 60)", "SECONDS" },
                { "events", 'e', 0, G_OPTION_ARG_INT, &events, "After the reply, print events as JSON lines for this long", "SECONDS" },
                { "flow-id", 0, 0, G_OPTION_ARG_STRING, &flow_id, "VDSM flow id: the agent logs the call and its jobs with it", "ID" },
                { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_STRING_ARRAY, &rest, NULL, "Namespace verb [name=value …]" },
                { NULL },
        };
        g_autoptr(GOptionContext) ctx = g_option_context_new("Namespace verb [name=value …]");
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) params = NULL;
        g_autofree char *method = NULL;
        g_autoptr(GMainLoop) loop = NULL;
        struct fy_rpc_client_options o = { 0 };
        struct fy_rpc_client *client;
        struct cli cli = { 0 };
        int n_tls;

        g_option_context_set_summary(ctx, "Calls one JSON-RPC verb of a ferry-agent over STOMP and prints the\n"
                                     "result as JSON. Values are parsed as JSON when they parse, else taken\n"
                                     "as strings. Exit status: 0 ok, 1 the agent returned an error, 2 other failures.");
        g_option_context_add_main_entries(ctx, entries, NULL);
        if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
                fprintf(stderr, "ferry-rpc: %s\n", error->message);
                return EXIT_TRANSPORT;
        }
        if (port < 1 || port > 65535) {
                fprintf(stderr, "ferry-rpc: --port must be given, from 1 to 65535\n");
                return EXIT_TRANSPORT;
        }
        if (timeout < 1 || timeout > MAX_SECONDS || events < 0 || events > MAX_SECONDS) {
                fprintf(stderr, "ferry-rpc: --timeout must be 1 to %d seconds, --events 0 to %d\n",
                        MAX_SECONDS, MAX_SECONDS);
                return EXIT_TRANSPORT;
        }
        n_tls = !!tls_cert + !!tls_key + !!tls_ca;
        if (n_tls != 0 && n_tls != 3) {
                fprintf(stderr, "ferry-rpc: TLS needs all of --tls-cert, --tls-key and --tls-ca\n");
                return EXIT_TRANSPORT;
        }
        if (flow_id && !fy_log_correlation_id_valid(flow_id)) {
                fprintf(stderr, "ferry-rpc: --flow-id must be 1 to %d of A-Z a-z 0-9 . _ : -\n", FY_LOG_CORRELATION_ID_MAX);
                return EXIT_TRANSPORT;
        }
        if (!rest || g_strv_length(rest) < 2) {
                fprintf(stderr, "ferry-rpc: expected Namespace verb [name=value …] (see --help)\n");
                return EXIT_TRANSPORT;
        }
        if (parse_params(rest + 2, &params, &error) < 0) {
                fprintf(stderr, "ferry-rpc: %s\n", error->message);
                return EXIT_TRANSPORT;
        }
        method = g_strconcat(rest[0], ".", rest[1], NULL);

        o.host = address ? address : "localhost";
        o.port = (guint16) port;
        o.tls_cert = tls_cert;
        o.tls_key = tls_key;
        o.tls_ca = tls_ca;
        o.tls_names = (const char *const *) tls_names;
        o.connect_timeout_ms = (unsigned) timeout * 1000;
        o.subscribe_events = events > 0;
        /* While watching events, notice a silent dead agent. */
        o.heartbeat_ms = events > 0 ? 5000 : 0;

        loop = g_main_loop_new(NULL, FALSE);
        cli.loop = loop;
        cli.events_seconds = events;
        client = fy_rpc_client_new(&o, on_event, &cli);
        fy_rpc_client_set_disconnect_fn(client, on_disconnect);
        fy_log_context_set(NULL, flow_id, NULL);      /* the client sends it with the call */
        fy_rpc_client_call(client, method, g_steal_pointer(&params), (unsigned) timeout * 1000, on_reply, &cli);
        g_main_loop_run(loop);

        if (cli.events_timer)
                g_source_remove(cli.events_timer);
        fy_rpc_client_free(client);
        /* Let cancelled socket operations finish so that nothing is left behind. */
        while (g_main_context_iteration(NULL, FALSE))
                ;
        return cli.exit_code;
}
