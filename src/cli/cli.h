/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The `ferry` command-line tool: a client of the engine's REST API
 * (docs/rest-api.md) and the launcher of a local development cluster.
 *
 * Errors travel as GErrors in the CLI_ERROR domain; main() prints them once
 * as "ferry: MESSAGE" and turns the code into the exit status.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <glib.h>
#include <jansson.h>

/* Largest answer read from the engine. */
#define CLI_MAX_RESPONSE (16u * 1024 * 1024)
/* Names of disks, hosts, domains: characters. */
#define CLI_NAME_MAX 64
/* Largest disk the agent accepts (ARCHITECTURE.md limits). */
#define CLI_SIZE_MAX (UINT64_C(64) << 40)
#define CLI_DEFAULT_ENGINE_URL "https://127.0.0.1:8443"
#define CLI_DEFAULT_CLUSTER_DIR "ferry-cluster"

GQuark cli_error_quark(void);
#define CLI_ERROR cli_error_quark()

enum cli_error_code {
        CLI_ERROR_FAILED,       /* the operation failed: exit 1 */
        CLI_ERROR_FAULT,        /* the engine answered with a fault: exit 1 */
        CLI_ERROR_UNREACHABLE,  /* no answer from the engine: exit 2 */
        CLI_ERROR_USAGE,        /* bad command line: exit 2, with a hint */
};

/* Options every command accepts, before or after the command words. */
struct cli_ctx {
        char *engine_opt;       /* --engine */
        char *ca_file_opt;      /* --ca-file */
        char *ca_file;          /* the CA in use, set by cli_ctx_engine(); NULL: the system's CAs */
        gboolean json;          /* --json */
        const char *command;    /* "disk move", for hints */
        bool no_auto_login;     /* login, logout: never log in as a cluster's admin by themselves */
};

/* ---- engine.c: the REST client ---- */

struct cli_engine;
typedef struct cli_engine cli_engine;

/*
 * url: http(s)://host[:port], a trailing slash is dropped. ca_file: the CA
 * the engine's certificate must chain to (NULL: the system's CAs).
 */
struct cli_engine *cli_engine_new(const char *url, const char *ca_file, GError **error);
void cli_engine_free(struct cli_engine *e);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_engine, cli_engine_free)
const char *cli_engine_url(const struct cli_engine *e);
/* Another engine of the same installation (one active, the others standbys): tried when the first cannot be
 * connected to, and the only place a 307 is followed to. */
int cli_engine_add_peer(struct cli_engine *e, const char *url, GError **error);
/* HTTP status of the last request that got an answer, else 0. */
unsigned cli_engine_last_status(const struct cli_engine *e);
/* How long a request waits while no engine is active ($FERRY_ENGINE_WAIT; 0: fail at once), at most: */
#define CLI_TAKEOVER_WAIT_MAX_S 300
void cli_engine_set_takeover_wait(struct cli_engine *e, unsigned seconds);

/*
 * One request. body may be NULL. Returns 0 and the parsed answer (NULL when
 * empty) in *ret_json; -1 with CLI_ERROR_UNREACHABLE when the engine could
 * not be reached, CLI_ERROR_FAULT for an HTTP error (message "REASON: DETAIL"),
 * CLI_ERROR_FAILED for an answer that is too large or not JSON.
 */
int cli_engine_request(struct cli_engine *e, const char *method, const char *path, json_t *body,
                       json_t **ret_json, GError **error);
int cli_engine_get(struct cli_engine *e, const char *path, json_t **ret_json, GError **error);
/* Same with a body already encoded (content_type, text; both NULL: none). */
int cli_engine_send(struct cli_engine *e, const char *method, const char *path, const char *content_type,
                    const char *text, json_t **ret_json, GError **error);
/* Sends "Authorization: Bearer token" from now on (NULL: nothing). */
void cli_engine_set_token(struct cli_engine *e, const char *token);
bool cli_engine_has_token(const struct cli_engine *e);
/* GET path and return its member `key`, which must be an array: the rows of every page ("next") followed. */
int cli_engine_get_list(struct cli_engine *e, const char *path, const char *key, json_t **ret_array,
                        GError **error);
/*
 * The element of `key` at `path` whose id or name is `arg` (a name must be
 * unique), by ?search=name=NAME when `searchable` (a paged collection).
 */
int cli_engine_resolve(struct cli_engine *e, const char *path, const char *key, bool searchable, const char *what,
                       const char *arg, json_t **ret_item, GError **error);

/*
 * The paging options of a list command (GET ...?max=N&search=name=NAME&page=TOKEN,
 * docs/rest-api.md): --max N, --search name=NAME (named collections only) and
 * --page TOKEN, filled in by cli_parse_options from cli_page_entries().
 */
struct cli_page {
        gint max;
        char *search;
        char *page;
        char *max_help;
        char *search_help;
};
typedef struct cli_page cli_page;
void cli_page_clear(struct cli_page *p);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(cli_page, cli_page_clear)
/* The options' entries (what: "disks"; named: whether --search applies), terminated; valid while p is. */
void cli_page_entries(struct cli_page *p, const char *what, bool named, GOptionEntry ret_entries[4]);
/* GET base with p's options: the whole answer, whose member `key` is an array; without max or page, every
 * page followed (but jobs' and events' first, their newest list_max). */
int cli_engine_get_page(struct cli_engine *e, const struct cli_page *p, const char *base, const char *key,
                        json_t **ret_json, GError **error);
/* After the list: "more WHAT follow: --page TOKEN" on stderr when the answer has a next page. */
void cli_page_tell_next(json_t *answer, const char *what);

/*
 * The engine URL: --engine, $FERRY_ENGINE_URL, ./ferry-cluster/cluster.json,
 * default. Its CA (ctx->ca_file): --ca-file, $FERRY_CA_FILE, else
 * cluster.json's ca_file when the URL is that cluster's.
 */
int cli_ctx_engine(struct cli_ctx *ctx, struct cli_engine **ret_engine, GError **error);

/* ---- login.c: tokens of the REST API ---- */

/*
 * POST /sso/oauth/token with user and password; on success the engine
 * sends the token from now on and *ret_token (may be NULL) holds it.
 */
int cli_login_password(struct cli_engine *e, const char *user, const char *password, char **ret_token,
                       GError **error);
/* The token stored for url ($XDG_CONFIG_HOME/ferry/tokens.json), or NULL. */
char *cli_token_load(const char *url);
/* Stores (token NULL: forgets) url's token, in a file only the user reads (0600). */
int cli_token_store(const char *url, const char *token, GError **error);
/* A password file's one line, within the engine's limits. */
int cli_read_password_file(const char *path, char **ret, GError **error);
int cli_login(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_logout(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_user_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_user_add(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_user_remove(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_user_passwd(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_user_role(struct cli_ctx *ctx, int argc, char **argv, GError **error);

/* ---- util.c ---- */

int cli_parse_size(const char *text, uint64_t *ret_size, GError **error);
int cli_check_name(const char *what, const char *name, GError **error);
int cli_check_uuid(const char *what, const char *id, GError **error);
/* A copy safe to print on a terminal: valid UTF-8, control characters as '?'. */
char *cli_printable(const char *text);
/* Member `key` of obj as printable text ("-" when absent or null). */
char *cli_json_text(const json_t *obj, const char *key);
/* Nested member, e.g. ("execution_host", "name"). */
char *cli_json_text2(const json_t *obj, const char *key, const char *sub);
char *cli_format_bytes(const json_t *obj, const char *key);
double cli_json_number(const json_t *obj, const char *key, double dflt);
void cli_print_json(const json_t *json);
int cli_read_json_file(const char *path, size_t max, json_t **ret_json, GError **error);

struct cli_table;
typedef struct cli_table cli_table;
/* Headers, NULL-terminated. */
struct cli_table *cli_table_new(const char *header, ...) G_GNUC_NULL_TERMINATED;
/* Exactly as many cells as headers; each is made printable and copied. */
void cli_table_add(struct cli_table *t, ...);
/* Same, taking ownership of the (already printable) strings. */
void cli_table_add_take(struct cli_table *t, ...);
void cli_table_print(const struct cli_table *t, FILE *out);
void cli_table_free(struct cli_table *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_table, cli_table_free)

/* Parses argv with the command's entries plus the global ones; -1 on a usage error. */
int cli_parse_options(struct cli_ctx *ctx, int *argc, char ***argv, const GOptionEntry *entries,
                      const char *params, const char *summary, GError **error);
/* Usage error unless exactly n positional arguments remain (after argv[0]). */
int cli_expect_args(int argc, int n, const char *what, GError **error);

/* ---- commands.c: inventory and actions ---- */

int cli_host_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_host_add(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_host_remove(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_sd_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_show(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_create(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_checksum(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_move(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_copy(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_sparsify(struct cli_ctx *ctx, int argc, char **argv, GError **error);
/* transfer.c: image transfers */
int cli_disk_upload(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_disk_download(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_job_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_job_show(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_job_cancel(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_event_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_config_get(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_config_set(struct cli_ctx *ctx, int argc, char **argv, GError **error);

/* ---- vm.c: VMs, snapshots, templates ---- */

int cli_vm_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_vm_show(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_vm_create(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_vm_delete(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_vm_attach(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_vm_detach(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_vm_snapshot(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_template_list(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_template_create(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_template_delete(struct cli_ctx *ctx, int argc, char **argv, GError **error);

/* ---- wait.c ---- */

/*
 * Polls the job (and disk_id, may be NULL) every 200 ms until it finished
 * or failed, drawing progress. show_hosts: print where each copy_data ran.
 * Returns 0 when the job finished, -1 (CLI_ERROR_FAILED) when it failed.
 */
int cli_wait_job(struct cli_ctx *ctx, struct cli_engine *e, const char *job_id, const char *disk_id,
                 bool show_hosts, GError **error);

/* ---- pki.c ---- */

int cli_pki_init(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_pki_issue(struct cli_ctx *ctx, int argc, char **argv, GError **error);

/* ---- cluster.c ---- */

int cli_cluster_up(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_cluster_down(struct cli_ctx *ctx, int argc, char **argv, GError **error);
int cli_cluster_status(struct cli_ctx *ctx, int argc, char **argv, GError **error);
