/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ferry pki init/issue: the installation's CA and its certificates (src/lib/pki.c). */
#include <string.h>

#include "cli.h"
#include "pki.h"

static int cli_pki_days(gint days, const char *opt, GError **error)
{
        if (days < 0 || days > FY_PKI_DAYS_MAX) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "%s must be 1 to %d days", opt, FY_PKI_DAYS_MAX);
                return -1;
        }
        return 0;
}

static int cli_pki_fail(GError **error, GError *local)
{
        g_set_error(error, CLI_ERROR, local->code == FY_PKI_ERROR_INVALID ? CLI_ERROR_USAGE : CLI_ERROR_FAILED,
                    "%s", local->message);
        g_error_free(local);
        return -1;
}

int cli_pki_init(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *dir = NULL, *name = NULL;
        g_auto(GStrv) addresses = NULL;
        gint days = 0, ca_days = 0;
        const GOptionEntry entries[] = {
                { "dir", 0, 0, G_OPTION_ARG_FILENAME, &dir, "Folder of the PKI, created (required)", "DIR" },
                { "name", 0, 0, G_OPTION_ARG_STRING, &name, "The engine's host name (default: this host's name)", "NAME" },
                { "address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &addresses,
                  "An address clients reach the engine by, IP or DNS name; repeat for more", "ADDR" },
                { "days", 0, 0, G_OPTION_ARG_INT, &days, "Validity of the engine's certificate (default 825)", "N" },
                { "ca-days", 0, 0, G_OPTION_ARG_INT, &ca_days, "Validity of the CA (default 3650)", "N" },
                G_OPTION_ENTRY_NULL
        };
        GError *local = NULL;

        if (cli_parse_options(ctx, &argc, &argv, entries, NULL,
                              "Creates a CA and the engine's certificate in DIR: ca.pem, ca.key, engine.pem, "
                              "engine.key (keys 0600).", error) < 0 ||
            cli_expect_args(argc, 0, NULL, error) < 0)
                return -1;
        if (!dir) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--dir is required");
                return -1;
        }
        if (cli_pki_days(days, "--days", error) < 0 || cli_pki_days(ca_days, "--ca-days", error) < 0)
                return -1;
        if (!name)
                name = g_strdup(fy_pki_name_valid(g_get_host_name()) ? g_get_host_name() : "engine");
        if (fy_pki_init(dir, name, (const char *const *) addresses, (unsigned) ca_days, (unsigned) days, &local) < 0)
                return cli_pki_fail(error, local);
        printf("CA %s/ca.pem, engine certificate %s/engine.pem for %s", dir, dir, name);
        for (size_t i = 0; addresses && addresses[i]; i++)
                printf(", %s", addresses[i]);
        printf("\nkeep %s/ca.key secret: it signs every certificate of the installation\n", dir);
        return 0;
}

int cli_pki_issue(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *dir = NULL, *host = NULL, *cert = NULL, *key = NULL;
        g_auto(GStrv) addresses = NULL;
        gboolean engine = FALSE;
        gint days = 0;
        const GOptionEntry entries[] = {
                { "dir", 0, 0, G_OPTION_ARG_FILENAME, &dir, "Folder of the PKI (from 'ferry pki init')", "DIR" },
                { "host", 0, 0, G_OPTION_ARG_STRING, &host, "The host's name, as registered in the engine", "NAME" },
                { "address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &addresses,
                  "The host's address, as registered in the engine (IP or DNS name); repeat for more", "ADDR" },
                { "days", 0, 0, G_OPTION_ARG_INT, &days, "Validity (default 825)", "N" },
                { "engine", 0, 0, G_OPTION_ARG_NONE, &engine,
                  "Replace the engine's certificate (engine.pem) instead of issuing a host's", NULL },
                G_OPTION_ENTRY_NULL
        };
        GError *local = NULL;

        if (cli_parse_options(ctx, &argc, &argv, entries, NULL,
                              "Issues a certificate signed by DIR's CA: DIR/hosts/NAME.pem and NAME.key (0600) "
                              "for an agent, or DIR/engine.pem with --engine. Issuing again replaces them "
                              "(rotation).", error) < 0 ||
            cli_expect_args(argc, 0, NULL, error) < 0)
                return -1;
        if (!dir || !host || (!addresses && !engine)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--dir, --host and --address are required");
                return -1;
        }
        if (cli_pki_days(days, "--days", error) < 0)
                return -1;
        if (fy_pki_issue(dir, host, (const char *const *) addresses, (unsigned) days, engine, &cert, &key, &local) < 0)
                return cli_pki_fail(error, local);
        printf("certificate %s\nkey %s\n", cert, key);
        if (!engine)
                printf("start the agent with --tls-cert=%s --tls-key=%s --tls-ca=%s/ca.pem\n", cert, key, dir);
        return 0;
}
