/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry login/logout and ferry user: the REST API's tokens and users.
 * A token is kept per engine URL in $XDG_CONFIG_HOME/ferry/tokens.json,
 * readable by its owner only; a password never touches a file of ours.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>

#include "cli.h"
#include "jsonrpc.h"      /* json_t autoptr */

#define CLI_PASSWORD_MAX 1024
#define CLI_TOKENS_MAX (1024 * 1024)

static char *cli_tokens_path(void)
{
        return g_build_filename(g_get_user_config_dir(), "ferry", "tokens.json", NULL);
}

static json_t *cli_tokens_read(void)
{
        g_autofree char *path = cli_tokens_path();
        g_autoptr(GError) error = NULL;
        json_t *json = NULL;

        if (!g_file_test(path, G_FILE_TEST_EXISTS))
                return json_object();
        if (cli_read_json_file(path, CLI_TOKENS_MAX, &json, &error) < 0 || !json_is_object(json)) {
                fprintf(stderr, "ferry: ignoring %s: %s\n", path, error ? error->message : "not a JSON object");
                json_decref(json);
                return json_object();
        }
        return json;
}

char *cli_token_load(const char *url)
{
        g_autoptr(json_t) tokens = cli_tokens_read();
        const char *t = json_string_value(json_object_get(tokens, url));

        return t ? g_strdup(t) : NULL;
}

int cli_token_store(const char *url, const char *token, GError **error)
{
        g_autofree char *path = cli_tokens_path();
        g_autofree char *dir = g_path_get_dirname(path);
        g_autoptr(json_t) tokens = cli_tokens_read();
        g_autoptr(GError) local = NULL;
        char *text;
        gboolean ok;

        if (token)
                json_object_set_new(tokens, url, json_string(token));
        else
                json_object_del(tokens, url);
        if (g_mkdir_with_parents(dir, 0700) < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot create %s: %s", dir, g_strerror(errno));
                return -1;
        }
        text = json_dumps(tokens, JSON_INDENT(2) | JSON_SORT_KEYS);
        /* Written whole and then renamed, with mode 0600 from the start: never readable by others. */
        ok = g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &local);
        memset(text, 0, strlen(text));
        free(text);
        if (!ok) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot store the token: %s", local->message);
                return -1;
        }
        return 0;
}

int cli_read_password_file(const char *path, char **ret, GError **error)
{
        g_autofree char *text = NULL;
        g_autoptr(GError) local = NULL;
        gsize len;

        *ret = NULL;
        if (!g_file_get_contents(path, &text, &len, &local)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "cannot read the password file: %s", local->message);
                return -1;
        }
        if (len > CLI_PASSWORD_MAX + 2 || memchr(text, '\0', len)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "%s is not a password file (one line, at most %d characters)",
                            path, CLI_PASSWORD_MAX);
                return -1;
        }
        text[strcspn(text, "\r\n")] = '\0';
        *ret = g_steal_pointer(&text);
        return 0;
}

/* A line from the terminal, without echo for a password. */
static char *cli_prompt(const char *what, bool secret, GError **error)
{
        char buf[CLI_PASSWORD_MAX + 2];
        struct termios old, quiet;
        bool tty = isatty(STDIN_FILENO);
        bool restored = true;
        char *line;

        fprintf(stderr, "%s: ", what);
        fflush(stderr);
        if (secret && tty && tcgetattr(STDIN_FILENO, &old) == 0) {
                quiet = old;
                quiet.c_lflag &= ~(tcflag_t) ECHO;
                restored = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) != 0;
        }
        line = fgets(buf, sizeof(buf), stdin);
        if (!restored) {
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
                fputc('\n', stderr);
        }
        if (!line) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "no %s given", what);
                return NULL;
        }
        buf[strcspn(buf, "\r\n")] = '\0';
        line = g_strdup(buf);
        memset(buf, 0, sizeof(buf));
        return line;
}

int cli_login_password(struct cli_engine *e, const char *user, const char *password, char **ret_token,
                       GError **error)
{
        g_autofree char *form = soup_form_encode("grant_type", "password", "username", user, "password", password,
                                                 "scope", "ovirt-app-api", NULL);
        json_t *answer = NULL;
        const char *token;

        cli_engine_set_token(e, NULL);
        if (cli_engine_send(e, "POST", "/sso/oauth/token", "application/x-www-form-urlencoded", form, &answer,
                            error) < 0) {
                memset(form, 0, strlen(form));
                return -1;
        }
        memset(form, 0, strlen(form));
        token = json_string_value(json_object_get(answer, "access_token"));
        if (!token) {
                json_decref(answer);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine's token answer has no access_token");
                return -1;
        }
        cli_engine_set_token(e, token);
        if (ret_token)
                *ret_token = g_strdup(token);
        json_decref(answer);
        return 0;
}

/* The password from --password-file, else asked on the terminal. */
static char *cli_password(const char *file, const char *what, GError **error)
{
        char *password = NULL;

        if (file)
                return cli_read_password_file(file, &password, error) < 0 ? NULL : password;
        return cli_prompt(what, true, error);
}

int cli_login(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *user = NULL, *file = NULL, *password = NULL, *token = NULL;
        const GOptionEntry entries[] = {
                { "user", 'u', 0, G_OPTION_ARG_STRING, &user, "User name (else asked)", "U" },
                { "password-file", 0, 0, G_OPTION_ARG_FILENAME, &file, "File whose one line is the password (else asked without echo)", "F" },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        int r;

        ctx->no_auto_login = true;
        if (cli_parse_options(ctx, &argc, &argv, entries, NULL,
                              "Gets a token from the engine and keeps it (mode 0600) in $XDG_CONFIG_HOME/ferry/ "
                              "for the commands that follow.", error) < 0 ||
            cli_expect_args(argc, 0, NULL, error) < 0 || cli_ctx_engine(ctx, &e, error) < 0)
                return -1;
        if (!user && !(user = cli_prompt("user", false, error)))
                return -1;
        if (!(password = cli_password(file, "password", error)))
                return -1;
        r = cli_login_password(e, user, password, &token, error);
        memset(password, 0, strlen(password));
        if (r < 0 || cli_token_store(cli_engine_url(e), token, error) < 0)
                return -1;
        printf("logged in to %s as %s\n", cli_engine_url(e), user);
        return 0;
}

int cli_logout(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *token = NULL, *form = NULL;

        ctx->no_auto_login = true;
        if (cli_parse_options(ctx, &argc, &argv, NULL, NULL, "Revokes the stored token and forgets it.", error) < 0 ||
            cli_expect_args(argc, 0, NULL, error) < 0 || cli_ctx_engine(ctx, &e, error) < 0)
                return -1;
        token = cli_token_load(cli_engine_url(e));
        if (!token) {
                printf("not logged in to %s\n", cli_engine_url(e));
                return 0;
        }
        form = soup_form_encode("token", token, NULL);
        if (cli_engine_send(e, "POST", "/sso/oauth/revoke", "application/x-www-form-urlencoded", form, NULL, error) < 0)
                return -1;
        if (cli_token_store(cli_engine_url(e), NULL, error) < 0)
                return -1;
        printf("logged out of %s\n", cli_engine_url(e));
        return 0;
}

/* ---- ferry user ---- */

static int cli_user_setup(struct cli_ctx *ctx, int *argc, char ***argv, const GOptionEntry *entries,
                          const char *params, int nargs, struct cli_engine **ret_engine, GError **error)
{
        if (cli_parse_options(ctx, argc, argv, entries, params, NULL, error) < 0 ||
            cli_expect_args(*argc, nargs, params, error) < 0)
                return -1;
        if (nargs > 0 && cli_check_name("user", (*argv)[1], error) < 0)
                return -1;
        return cli_ctx_engine(ctx, ret_engine, error);
}

static void cli_user_print(struct cli_ctx *ctx, json_t *user)
{
        if (ctx->json) {
                cli_print_json(user);
                return;
        }
        g_autofree char *name = cli_json_text(user, "name");
        g_autofree char *role = cli_json_text(user, "role");
        printf("%s %s\n", name, role);
}

int cli_user_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(json_t) users = NULL;
        g_autoptr(cli_table) t = NULL;
        size_t i;
        json_t *u;

        if (cli_user_setup(ctx, &argc, &argv, NULL, NULL, 0, &e, error) < 0 ||
            cli_engine_get_list(e, "/api/users", "users", &users, error) < 0)
                return -1;
        if (ctx->json) {
                cli_print_json(users);
                return 0;
        }
        t = cli_table_new("NAME", "ROLE", NULL);
        json_array_foreach(users, i, u)
                cli_table_add_take(t, cli_json_text(u, "name"), cli_json_text(u, "role"));
        cli_table_print(t, stdout);
        return 0;
}

static int cli_user_send(struct cli_ctx *ctx, struct cli_engine *e, const char *method, const char *path,
                         json_t *body, GError **error)
{
        json_t *answer = NULL;
        int r = cli_engine_request(e, method, path, body, &answer, error);

        json_decref(body);
        if (r < 0)
                return -1;
        if (answer)
                cli_user_print(ctx, answer);
        json_decref(answer);
        return 0;
}

int cli_user_add(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *role = NULL, *file = NULL, *password = NULL;
        const GOptionEntry entries[] = {
                { "role", 0, 0, G_OPTION_ARG_STRING, &role, "admin, operator or viewer (default viewer)", "R" },
                { "password-file", 0, 0, G_OPTION_ARG_FILENAME, &file, "File whose one line is the password (else asked)", "F" },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        int r;

        if (cli_user_setup(ctx, &argc, &argv, entries, "NAME", 1, &e, error) < 0 ||
            !(password = cli_password(file, "password of the new user", error)))
                return -1;
        r = cli_user_send(ctx, e, "POST", "/api/users",
                          json_pack("{s:s, s:s, s:s}", "name", argv[1], "role", role ? role : "viewer",
                                    "password", password), error);
        memset(password, 0, strlen(password));
        return r;
}

int cli_user_passwd(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *file = NULL, *password = NULL, *path = NULL;
        const GOptionEntry entries[] = {
                { "password-file", 0, 0, G_OPTION_ARG_FILENAME, &file, "File whose one line is the password (else asked)", "F" },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        int r;

        if (cli_user_setup(ctx, &argc, &argv, entries, "NAME", 1, &e, error) < 0 ||
            !(password = cli_password(file, "new password", error)))
                return -1;
        path = g_strdup_printf("/api/users/%s", argv[1]);
        r = cli_user_send(ctx, e, "PUT", path, json_pack("{s:s}", "password", password), error);
        memset(password, 0, strlen(password));
        return r;
}

int cli_user_role(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL;

        if (cli_parse_options(ctx, &argc, &argv, NULL, "NAME ROLE", NULL, error) < 0 ||
            cli_expect_args(argc, 2, "NAME ROLE", error) < 0 || cli_check_name("user", argv[1], error) < 0 ||
            cli_ctx_engine(ctx, &e, error) < 0)
                return -1;
        path = g_strdup_printf("/api/users/%s", argv[1]);
        return cli_user_send(ctx, e, "PUT", path, json_pack("{s:s}", "role", argv[2]), error);
}

int cli_user_remove(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL;

        if (cli_user_setup(ctx, &argc, &argv, NULL, "NAME", 1, &e, error) < 0)
                return -1;
        path = g_strdup_printf("/api/users/%s", argv[1]);
        if (cli_engine_request(e, "DELETE", path, NULL, NULL, error) < 0)
                return -1;
        printf("user %s removed\n", argv[1]);
        return 0;
}
