/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ferry: command words, global options, exit codes. */
#include <errno.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "cli.h"

G_DEFINE_QUARK(ferry-cli-error-quark, cli_error)

struct cli_command {
        const char *group;
        const char *verb;
        int (*run)(struct cli_ctx *ctx, int argc, char **argv, GError **error);
        const char *usage;
};

static const struct cli_command cli_commands[] = {
        { "host", "list", cli_host_list, "host list [--max N] [--search name=NAME] [--page TOKEN]" },
        { "host", "add", cli_host_add, "host add --address ADDR [--port P] [--name N] [--wait]" },
        { "host", "remove", cli_host_remove, "host remove HOST (in maintenance, not the SPM, nothing running)" },
        { "sd", "list", cli_sd_list, "sd list" },
        { "disk", "list", cli_disk_list, "disk list [--max N] [--search name=NAME] [--page TOKEN]" },
        { "disk", "show", cli_disk_show, "disk show DISK" },
        { "disk", "create", cli_disk_create,
          "disk create --name N --size SIZE --sd SD [--format raw|cow] [--sparse|--preallocated] [--volumes N] [--wait]" },
        { "disk", "move", cli_disk_move, "disk move DISK --sd SD [--wait]" },
        { "disk", "checksum", cli_disk_checksum, "disk checksum DISK" },
        { "disk", "copy", cli_disk_copy, "disk copy DISK --sd SD [--name N] [--wait]" },
        { "disk", "sparsify", cli_disk_sparsify, "disk sparsify DISK [--wait]" },
        { "disk", "upload", cli_disk_upload, "disk upload FILE (--sd SD [--name N] | --disk DISK) [--format raw|cow]" },
        { "disk", "download", cli_disk_download, "disk download DISK FILE" },
        { "vm", "list", cli_vm_list, "vm list [--max N] [--search name=NAME] [--page TOKEN]" },
        { "vm", "show", cli_vm_show, "vm show VM" },
        { "vm", "create", cli_vm_create,
          "vm create --name N [--template T [--clone [--sd SD] [--format raw|cow] [--preallocated]]] [--wait]" },
        { "vm", "delete", cli_vm_delete, "vm delete VM [--detach-only] [--wait]" },
        { "vm", "attach", cli_vm_attach, "vm attach VM DISK" },
        { "vm", "detach", cli_vm_detach, "vm detach VM DISK" },
        { "vm", "snapshot", cli_vm_snapshot,
          "vm snapshot VM [--description TEXT] [--wait] | vm snapshot delete|restore VM SNAPSHOT [--wait]" },
        { "template", "list", cli_template_list, "template list [--max N] [--search name=NAME] [--page TOKEN]" },
        { "template", "create", cli_template_create,
          "template create --name N --vm VM [--sd SD] [--format raw|cow] [--preallocated] [--wait]" },
        { "template", "delete", cli_template_delete, "template delete TEMPLATE [--wait]" },
        { "job", "list", cli_job_list, "job list [--max N] [--page TOKEN]" },
        { "job", "show", cli_job_show, "job show JOB" },
        { "job", "cancel", cli_job_cancel, "job cancel JOB" },
        { "event", "list", cli_event_list, "event list [--correlation-id ID | [--max N] [--page TOKEN]]" },
        { "config", "get", cli_config_get, "config get NAME" },
        { "config", "set", cli_config_set, "config set NAME VALUE" },
        { "login", NULL, cli_login, "login [--user U] [--password-file F]" },
        { "logout", NULL, cli_logout, "logout" },
        { "user", "list", cli_user_list, "user list" },
        { "user", "add", cli_user_add, "user add NAME [--role admin|operator|viewer] [--password-file F]" },
        { "user", "remove", cli_user_remove, "user remove NAME" },
        { "user", "passwd", cli_user_passwd, "user passwd NAME [--password-file F]" },
        { "user", "role", cli_user_role, "user role NAME admin|operator|viewer" },
        { "pki", "init", cli_pki_init, "pki init --dir DIR [--name NAME] [--address ADDR...] [--days N]" },
        { "pki", "issue", cli_pki_issue, "pki issue --dir DIR --host NAME --address ADDR [--days N] [--engine]" },
        { "cluster", "up", cli_cluster_up, "cluster up [--dir DIR] [--hosts N] [--domains M]" },
        { "cluster", "down", cli_cluster_down, "cluster down [--dir DIR]" },
        { "cluster", "status", cli_cluster_status, "cluster status [--dir DIR]" },
};

static void cli_usage(FILE *out)
{
        fputs("Usage: ferry [--engine URL] [--ca-file FILE] [--json] COMMAND...\n"
              "\n"
              "Manages disks of a Ferry installation through the engine's REST API,\n"
              "and starts a local development cluster.\n"
              "\n"
              "Commands:\n", out);
        for (size_t i = 0; i < G_N_ELEMENTS(cli_commands); i++)
                fprintf(out, "  ferry %s\n", cli_commands[i].usage);
        fputs("\n"
              "DISK, SD, VM and TEMPLATE are an id or a name; SIZE is bytes or a number\n"
              "with K, M, G or T (powers of 1024), e.g. 512M.\n"
              "\n"
              "Global options:\n"
              "  --engine URL   the engine (else $FERRY_ENGINE_URL, else engine_url in\n"
              "                 ./" CLI_DEFAULT_CLUSTER_DIR "/cluster.json, else " CLI_DEFAULT_ENGINE_URL ")\n"
              "  --ca-file FILE the CA the engine's and the hosts' certificates must chain to\n"
              "                 (else $FERRY_CA_FILE, else ca_file in the cluster.json that gave\n"
              "                 the URL, else the system's CAs)\n"
              "  --json         print the engine's JSON instead of tables\n"
              "  --help         this text; COMMAND --help for a command's options\n"
              "  --version      print the version\n"
              "\n"
              "Exit status: 0 success, 1 the operation or the job failed, 2 usage error\n"
              "or the engine cannot be reached.\n", out);
}

static const GOptionEntry cli_global_entries_template[] = {
        { "engine", 0, 0, G_OPTION_ARG_STRING, NULL, "Engine URL", "URL" },
        { "json", 0, 0, G_OPTION_ARG_NONE, NULL, "Print JSON instead of tables", NULL },
        { "ca-file", 0, 0, G_OPTION_ARG_FILENAME, NULL, "CA of the engine's and hosts' certificates", "FILE" },
        G_OPTION_ENTRY_NULL
};
#define CLI_N_GLOBALS (G_N_ELEMENTS(cli_global_entries_template) - 1)

static void cli_global_entries(struct cli_ctx *ctx, GOptionEntry ret_entries[CLI_N_GLOBALS + 1])
{
        memcpy(ret_entries, cli_global_entries_template, sizeof(cli_global_entries_template));
        ret_entries[0].arg_data = &ctx->engine_opt;
        ret_entries[1].arg_data = &ctx->json;
        ret_entries[2].arg_data = &ctx->ca_file_opt;
}

int cli_parse_options(struct cli_ctx *ctx, int *argc, char ***argv, const GOptionEntry *entries,
                      const char *params, const char *summary, GError **error)
{
        g_autoptr(GOptionContext) oc = NULL;
        g_autofree char *param_string = g_strconcat(ctx->command, params ? " " : "", params, NULL);
        GOptionEntry globals[CLI_N_GLOBALS + 1];
        GError *local = NULL;

        cli_global_entries(ctx, globals);
        oc = g_option_context_new(param_string);
        if (summary)
                g_option_context_set_summary(oc, summary);
        if (entries)
                g_option_context_add_main_entries(oc, entries, NULL);
        g_option_context_add_main_entries(oc, globals, NULL);
        if (!g_option_context_parse(oc, argc, argv, &local)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "%s", local->message);
                g_error_free(local);
                return -1;
        }
        /* "--" is left in argv by GOption when it ends the options. */
        for (int i = 1; i < *argc; i++) {
                if (strcmp((*argv)[i], "--") == 0) {
                        memmove(&(*argv)[i], &(*argv)[i + 1], (size_t) (*argc - i) * sizeof(char *));
                        (*argc)--;
                        break;
                }
        }
        return 0;
}

int cli_expect_args(int argc, int n, const char *what, GError **error)
{
        if (argc - 1 < n) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "missing %s", what);
                return -1;
        }
        if (argc - 1 > n) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "unexpected argument");
                return -1;
        }
        return 0;
}

typedef struct cli_cluster_file {
        char *url;
        char *ca;
        char *admin_user;
        char *admin_password_file;
        GStrv engines;                 /* every engine's URL (engines: [{url, pid}]) */
} CliClusterFile;

static void cli_cluster_file_clear(struct cli_cluster_file *f)
{
        g_free(f->url);
        g_free(f->ca);
        g_free(f->admin_user);
        g_free(f->admin_password_file);
        g_strfreev(f->engines);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(CliClusterFile, cli_cluster_file_clear)

/* engine_url, ca_file and the admin's credentials of ./ferry-cluster/cluster.json, when there is one. */
static void cli_read_cluster_file(struct cli_cluster_file *f)
{
        g_autofree char *path = g_build_filename(CLI_DEFAULT_CLUSTER_DIR, "cluster.json", NULL);
        g_autoptr(GError) error = NULL;
        json_t *json = NULL;
        const char *url = NULL, *ca = NULL;
        int r;

        if (!g_file_test(path, G_FILE_TEST_EXISTS))
                return;
        r = cli_read_json_file(path, 1024 * 1024, &json, &error);
        if (r < 0) {
                fprintf(stderr, "ferry: ignoring %s: %s\n", path, error->message);
                return;
        }
        if (json_unpack(json, "{s:s}", "engine_url", &url) == 0)
                f->url = g_strdup(url);
        if (json_unpack(json, "{s:s}", "ca_file", &ca) == 0)
                f->ca = g_strdup(ca);
        {
                json_t *engines = json_object_get(json, "engines"), *one;
                g_autoptr(GStrvBuilder) b = g_strv_builder_new();
                size_t i;

                json_array_foreach(engines, i, one)
                        if (json_is_string(json_object_get(one, "url")))
                                g_strv_builder_add(b, json_string_value(json_object_get(one, "url")));
                f->engines = g_strv_builder_end(b);
        }
        if (json_unpack(json, "{s:s, s:s}", "admin_user", &url, "admin_password_file", &ca) == 0) {
                f->admin_user = g_strdup(url);
                f->admin_password_file = g_strdup(ca);
        }
        json_decref(json);
}

/* Equal but for trailing slashes. */
static bool cli_same_url(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);

        while (la > 0 && a[la - 1] == '/')
                la--;
        while (lb > 0 && b[lb - 1] == '/')
                lb--;
        return la == lb && strncmp(a, b, la) == 0;
}

int cli_ctx_engine(struct cli_ctx *ctx, struct cli_engine **ret_engine, GError **error)
{
        g_auto(CliClusterFile) cf = { 0 };
        g_autofree char *url = NULL, *token = NULL;
        const char *cluster_url, *cluster_ca;
        const char *env;

        cli_read_cluster_file(&cf);
        cluster_url = cf.url;
        cluster_ca = cf.ca;
        if (ctx->engine_opt)
                url = g_strdup(ctx->engine_opt);
        else if ((env = g_getenv("FERRY_ENGINE_URL")) && *env)
                url = g_strdup(env);
        else if (cluster_url)
                url = g_strdup(cluster_url);
        if (!url)
                url = g_strdup(CLI_DEFAULT_ENGINE_URL);

        g_clear_pointer(&ctx->ca_file, g_free);
        if (ctx->ca_file_opt)
                ctx->ca_file = g_strdup(ctx->ca_file_opt);
        else if ((env = g_getenv("FERRY_CA_FILE")) && *env)
                ctx->ca_file = g_strdup(env);
        else if (cluster_ca && cluster_url && cli_same_url(url, cluster_url))
                /* The local cluster's own CA, for its own engine only. */
                ctx->ca_file = g_strdup(cluster_ca);

        /* Several engines (one active): URL,URL... The first is the one tokens are kept for. */
        {
                g_auto(GStrv) urls = g_strsplit(url, ",", 17);

                *ret_engine = cli_engine_new(urls[0], ctx->ca_file, error);
                if (!*ret_engine)
                        return -1;
                for (size_t i = 1; urls[i]; i++)
                        if (*urls[i] && cli_engine_add_peer(*ret_engine, urls[i], error) < 0)
                                goto fail;
                /* The local cluster's engines: its own CA verifies each. */
                for (size_t i = 0; cf.engines && cluster_url && cli_same_url(urls[0], cluster_url) && cf.engines[i]; i++)
                        if (cli_engine_add_peer(*ret_engine, cf.engines[i], error) < 0)
                                goto fail;
        }
        if ((env = g_getenv("FERRY_ENGINE_WAIT")) && *env) {
                guint64 n;

                if (!g_ascii_string_to_unsigned(env, 10, 0, CLI_TAKEOVER_WAIT_MAX_S, &n, NULL)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "FERRY_ENGINE_WAIT=%.40s: give the seconds "
                                    "to wait for an active engine, 0 to %d", env, CLI_TAKEOVER_WAIT_MAX_S);
                        goto fail;
                }
                cli_engine_set_takeover_wait(*ret_engine, (unsigned) n);
        }
        token = cli_token_load(cli_engine_url(*ret_engine));
        if (token) {
                cli_engine_set_token(*ret_engine, token);
        } else if (!ctx->no_auto_login && cf.admin_user && cluster_url && cli_same_url(url, cluster_url)) {
                /* Inside a local cluster's folder: log in as its admin, as 'ferry login' would. */
                g_autofree char *password = NULL;
                g_autoptr(GError) local = NULL;

                if (cli_read_password_file(cf.admin_password_file, &password, &local) < 0 ||
                    cli_login_password(*ret_engine, cf.admin_user, password, &token, &local) < 0 ||
                    cli_token_store(cli_engine_url(*ret_engine), token, &local) < 0)
                        fprintf(stderr, "ferry: cannot log in as the cluster's admin: %s\n", local->message);
                if (password)
                        memset(password, 0, strlen(password));
        }
        return 0;
fail:
        g_clear_pointer(ret_engine, cli_engine_free);
        return -1;
}

static const struct cli_command *cli_find_command(const char *group, const char *verb, bool *ret_group_known)
{
        *ret_group_known = false;
        for (size_t i = 0; i < G_N_ELEMENTS(cli_commands); i++) {
                if (strcmp(cli_commands[i].group, group) != 0)
                        continue;
                *ret_group_known = true;
                /* A command of one word ("login") takes no verb. */
                if (!cli_commands[i].verb || (verb && strcmp(cli_commands[i].verb, verb) == 0))
                        return &cli_commands[i];
        }
        return NULL;
}

static void cli_group_hint(const char *group)
{
        fprintf(stderr, "Commands of '%s':\n", group);
        for (size_t i = 0; i < G_N_ELEMENTS(cli_commands); i++)
                if (strcmp(cli_commands[i].group, group) == 0)
                        fprintf(stderr, "  ferry %s\n", cli_commands[i].usage);
}

static int cli_exit_code(const GError *error)
{
        if (!error)
                return EXIT_SUCCESS;
        switch (error->code) {
        case CLI_ERROR_UNREACHABLE:
        case CLI_ERROR_USAGE:
                return 2;
        default:
                return EXIT_FAILURE;
        }
}

int main(int argc, char **argv)
{
        struct cli_ctx ctx = { 0 };
        g_autoptr(GOptionContext) oc = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *command = NULL;
        gboolean help = FALSE, version = FALSE;
        const struct cli_command *cmd;
        GOptionEntry entries[CLI_N_GLOBALS + 3];
        bool group_known;
        int r;

        setlocale(LC_ALL, "");
        g_set_prgname("ferry");

        /* The leading global options, up to the first command word. */
        cli_global_entries(&ctx, entries);
        entries[CLI_N_GLOBALS] = (GOptionEntry) { "help", 'h', 0, G_OPTION_ARG_NONE, &help, NULL, NULL };
        entries[CLI_N_GLOBALS + 1] = (GOptionEntry) { "version", 0, 0, G_OPTION_ARG_NONE, &version, NULL, NULL };
        entries[CLI_N_GLOBALS + 2] = (GOptionEntry) G_OPTION_ENTRY_NULL;
        oc = g_option_context_new(NULL);
        g_option_context_set_help_enabled(oc, FALSE);
        g_option_context_set_strict_posix(oc, TRUE);
        g_option_context_add_main_entries(oc, entries, NULL);
        if (!g_option_context_parse(oc, &argc, &argv, &error)) {
                fprintf(stderr, "ferry: %s\nTry 'ferry --help'.\n", error->message);
                return 2;
        }
        if (help) {
                cli_usage(stdout);
                return EXIT_SUCCESS;
        }
        if (version) {
                printf("ferry %s\n", FERRY_VERSION);
                return EXIT_SUCCESS;
        }
        if (argc < 2) {
                cli_usage(stderr);
                return 2;
        }

        cmd = cli_find_command(argv[1], argc > 2 ? argv[2] : NULL, &group_known);
        if (!cmd) {
                if (!group_known) {
                        fprintf(stderr, "ferry: unknown command '%s'\nTry 'ferry --help'.\n", argv[1]);
                } else {
                        if (argc > 2)
                                fprintf(stderr, "ferry: unknown command '%s %s'\n", argv[1], argv[2]);
                        else
                                fprintf(stderr, "ferry: '%s' needs a command\n", argv[1]);
                        cli_group_hint(argv[1]);
                }
                return 2;
        }

        /* argv[0] of the command is "ferry GROUP VERB"; options follow. */
        if (cmd->verb) {
                command = g_strdup_printf("%s %s", cmd->group, cmd->verb);
                argv[2] = argv[0];
                argv += 2;
                argc -= 2;
        } else {
                command = g_strdup(cmd->group);
                argv[1] = argv[0];
                argv += 1;
                argc -= 1;
        }
        ctx.command = command;
        r = cmd->run(&ctx, argc, argv, &error);
        g_free(ctx.engine_opt);
        g_free(ctx.ca_file_opt);
        g_free(ctx.ca_file);
        if (r >= 0 && !error)
                return EXIT_SUCCESS;
        if (!error) {
                fprintf(stderr, "ferry: %s failed\n", command);
                return EXIT_FAILURE;
        }
        fprintf(stderr, "ferry: %s\n", error->message);
        if (error->code == CLI_ERROR_USAGE)
                fprintf(stderr, "Try 'ferry %s --help'.\n", command);
        return cli_exit_code(error);
}
