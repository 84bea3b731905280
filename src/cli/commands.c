/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Inventory listings and disk actions over the REST API. */
#include <string.h>

#include "log.h"
#include "cli.h"
#include "uuid.h"

static int cli_setup(struct cli_ctx *ctx, int *argc, char ***argv, const GOptionEntry *entries,
                     const char *params, int nargs, const char *what, struct cli_engine **ret_engine,
                     GError **error)
{
        if (cli_parse_options(ctx, argc, argv, entries, params, NULL, error) < 0)
                return -1;
        if (cli_expect_args(*argc, nargs, what, error) < 0)
                return -1;
        return cli_ctx_engine(ctx, ret_engine, error);
}

static int cli_resolve_sd(struct cli_engine *e, const char *arg, char **ret_id, char **ret_name,
                          GError **error)
{
        json_t *sd = NULL;
        const char *id = NULL;

        if (cli_engine_resolve(e, "/api/storagedomains", "storagedomains", false, "storage domain", arg, &sd, error) < 0)
                return -1;
        if (json_unpack(sd, "{s:s}", "id", &id) < 0 || !fy_uuid_is_valid(id)) {
                json_decref(sd);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent a storage domain without an id");
                return -1;
        }
        *ret_id = g_strdup(id);
        if (ret_name)
                *ret_name = cli_json_text(sd, "name");
        json_decref(sd);
        return 0;
}

/* A disk by id (GET /api/disks/{id}) or by name (from the list). */
static int cli_resolve_disk(struct cli_engine *e, const char *arg, json_t **ret_disk, GError **error)
{
        json_t *disk = NULL;
        const char *id;

        if (fy_uuid_is_valid(arg)) {
                g_autofree char *path = g_strdup_printf("/api/disks/%s", arg);

                return cli_engine_get(e, path, ret_disk, error);
        }
        if (cli_engine_resolve(e, "/api/disks", "disks", true, "disk", arg, &disk, error) < 0)
                return -1;
        id = json_string_value(json_object_get(disk, "id"));
        if (!id || !fy_uuid_is_valid(id)) {
                json_decref(disk);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent a disk without an id");
                return -1;
        }
        {
                /* The list leaves out the volumes: read the disk itself. */
                g_autofree char *path = g_strdup_printf("/api/disks/%s", id);
                int r = cli_engine_get(e, path, ret_disk, error);

                json_decref(disk);
                return r;
        }
}

/* Storage domain id → name, for tables. */
static GHashTable *cli_sd_names(struct cli_engine *e)
{
        GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autoptr(GError) error = NULL;
        json_t *list = NULL, *sd;
        size_t i;

        if (cli_engine_get_list(e, "/api/storagedomains", "storagedomains", &list, &error) < 0)
                return names;
        json_array_foreach(list, i, sd) {
                const char *id = json_string_value(json_object_get(sd, "id"));

                if (id)
                        g_hash_table_replace(names, g_strdup(id), cli_json_text(sd, "name"));
        }
        json_decref(list);
        return names;
}

static char *cli_disk_domains(const json_t *disk, GHashTable *names)
{
        const json_t *sds = json_object_get(disk, "storage_domains");
        g_autoptr(GString) out = g_string_new(NULL);
        const json_t *sd;
        size_t i;

        json_array_foreach(sds, i, sd) {
                const char *id = json_string_value(json_object_get(sd, "id"));
                const char *name = id && names ? g_hash_table_lookup(names, id) : NULL;
                g_autofree char *text = name ? g_strdup(name) : cli_printable(id ? id : "?");

                if (out->len)
                        g_string_append_c(out, ',');
                g_string_append(out, text);
        }
        return out->len ? g_string_free(g_steal_pointer(&out), FALSE) : g_strdup("-");
}

static char *cli_progress_text(const json_t *obj)
{
        double p = cli_json_number(obj, "progress", -1);

        return p < 0 ? g_strdup("-") : g_strdup_printf("%.0f%%", p);
}

/* Polls the host until the engine reports it up; the TLS handshake (certificate checked) is part of that. */
static int host_wait_up(struct cli_engine *e, const char *id, int timeout, GError **error)
{
        g_autofree char *path = g_strdup_printf("/api/hosts/%s", id);
        gint64 deadline = g_get_monotonic_time() + (gint64) timeout * G_USEC_PER_SEC;
        g_autofree char *status = NULL;

        for (;;) {
                json_t *h = NULL;

                if (cli_engine_get(e, path, &h, error) < 0)
                        return -1;
                g_free(status);
                status = cli_json_text(h, "status");
                json_decref(h);
                if (strcmp(status, "up") == 0)
                        return 0;
                if (g_get_monotonic_time() > deadline)
                        break;
                g_usleep(200 * 1000);
        }
        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                    "host %s is still %s after %d s: is its agent running and reachable, and was its certificate "
                    "issued for the address it was added with ('ferry pki issue --host NAME --address ADDR')? "
                    "See the engine's log and 'ferry event list'", id, status, timeout);
        return -1;
}

int cli_host_add(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *name = NULL, *address = NULL;
        gint port = 54321, timeout = 60;
        gboolean wait = FALSE;
        const GOptionEntry entries[] = {
                { "name", 0, 0, G_OPTION_ARG_STRING, &name, "Host name (default: the address)", "N" },
                { "address", 0, 0, G_OPTION_ARG_STRING, &address,
                  "IP address or DNS name the engine reaches the agent by; its certificate must name it (required)",
                  "ADDR" },
                { "port", 0, 0, G_OPTION_ARG_INT, &port, "The agent's JSON-RPC port (default 54321)", "P" },
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait until the engine has connected to the agent (status up)", NULL },
                { "timeout", 0, 0, G_OPTION_ARG_INT, &timeout, "With --wait: seconds to wait (default 60)", "S" },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        json_t *body, *answer = NULL;
        g_autofree char *id = NULL;
        int r;

        if (cli_parse_options(ctx, &argc, &argv, entries, NULL,
                              "Registers a host whose agent runs at ADDR:P; the engine connects to it over TLS "
                              "(checking its certificate against ADDR), gives it a sanlock host id and connects "
                              "it to the storage pool.", error) < 0 ||
            cli_expect_args(argc, 0, NULL, error) < 0)
                return -1;
        if (!address) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--address is required");
                return -1;
        }
        if (port < 1 || port > 65535 || timeout < 1 || timeout > 3600) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--port must be 1-65535 and --timeout 1-3600");
                return -1;
        }
        if (cli_check_name("--address", address, error) < 0 ||
            cli_check_name("--name", name ? name : address, error) < 0 || cli_ctx_engine(ctx, &e, error) < 0)
                return -1;
        body = json_pack("{s:s, s:s, s:i}", "name", name ? name : address, "address", address, "port", port);
        r = cli_engine_request(e, "POST", "/api/hosts", body, &answer, error);
        json_decref(body);
        if (r < 0)
                return -1;
        id = g_strdup(json_string_value(json_object_get(answer, "id")));
        if (ctx->json && !wait)
                cli_print_json(answer);
        json_decref(answer);
        if (!id) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine's answer has no host id");
                return -1;
        }
        if (!ctx->json)
                printf("host %s added (%s), connecting to %s:%d\n", name ? name : address, id, address, port);
        if (!wait)
                return 0;
        if (host_wait_up(e, id, timeout, error) < 0)
                return -1;
        if (ctx->json) {
                g_autofree char *path = g_strdup_printf("/api/hosts/%s", id);

                if (cli_engine_get(e, path, &answer, error) < 0)
                        return -1;
                cli_print_json(answer);
                json_decref(answer);
        } else {
                printf("host %s is up\n", name ? name : address);
        }
        return 0;
}

int cli_host_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_auto(cli_page) page = { 0 };
        GOptionEntry entries[4];
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        json_t *json = NULL, *list, *h;
        size_t i;

        cli_page_entries(&page, "hosts", true, entries);
        if (cli_setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0 ||
            cli_engine_get_page(e, &page, "/api/hosts", "hosts", &json, error) < 0)
                return -1;
        if (ctx->json) {
                cli_print_json(json);
                json_decref(json);
                return 0;
        }
        list = json_object_get(json, "hosts");
        t = cli_table_new("NAME", "ID", "STATUS", "SPM", "POOL", "ADDRESS", "JOBS", "COPY RATE", NULL);
        json_array_foreach(list, i, h) {
                const json_t *stats = json_object_get(h, "stats");
                g_autofree char *addr = cli_json_text(h, "address"), *port = cli_json_text(h, "port");
                char *rate = g_strdup("-"), *jobs = g_strdup("-");

                if (json_is_object(stats)) {
                        g_autofree char *running = cli_json_text(stats, "jobs_running");
                        g_autofree char *limit = cli_json_text(stats, "job_limit");
                        json_t *r = json_object_get(stats, "copy_rate");

                        g_free(jobs);
                        jobs = g_strdup_printf("%s/%s", running, limit);
                        if (json_is_integer(r) && json_integer_value(r) >= 0) {
                                g_autofree char *size = g_format_size_full((guint64) json_integer_value(r),
                                                                           G_FORMAT_SIZE_IEC_UNITS);

                                g_free(rate);
                                rate = g_strdup_printf("%s/s", size);
                        }
                }
                cli_table_add_take(t, cli_json_text(h, "name"), cli_json_text(h, "id"),
                                   cli_json_text(h, "status"),
                                   g_strdup(json_is_true(json_object_get(h, "spm")) ? "SPM" : "-"),
                                   g_strdup(json_is_true(json_object_get(h, "pool_connected")) ?
                                            "connected" : "-"),
                                   g_strdup_printf("%s:%s", addr, port), jobs, rate);
        }
        cli_table_print(t, stdout);
        cli_page_tell_next(json, "hosts");
        json_decref(json);
        return 0;
}

int cli_host_remove(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL;
        json_t *host = NULL, *answer = NULL;
        const char *id;

        if (cli_setup(ctx, &argc, &argv, NULL, "HOST", 1, "HOST (an id or a name)", &e, error) < 0 ||
            cli_engine_resolve(e, "/api/hosts", "hosts", true, "host", argv[1], &host, error) < 0)
                return -1;
        id = json_string_value(json_object_get(host, "id"));
        path = g_strdup_printf("/api/hosts/%s", id);
        if (cli_engine_request(e, "DELETE", path, NULL, &answer, error) < 0) {
                json_decref(host);
                return -1;
        }
        if (!ctx->json)
                printf("removed host %s (%s)\n", json_string_value(json_object_get(host, "name")), id);
        json_decref(answer);
        json_decref(host);
        return 0;
}

int cli_sd_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        json_t *list = NULL, *sd;
        size_t i;

        if (cli_setup(ctx, &argc, &argv, NULL, NULL, 0, NULL, &e, error) < 0)
                return -1;
        if (ctx->json) {
                json_t *json = NULL;

                if (cli_engine_get(e, "/api/storagedomains", &json, error) < 0)
                        return -1;
                cli_print_json(json);
                json_decref(json);
                return 0;
        }
        if (cli_engine_get_list(e, "/api/storagedomains", "storagedomains", &list, error) < 0)
                return -1;
        t = cli_table_new("NAME", "ID", "STATUS", "MASTER", "AVAILABLE", "USED", "PATH", NULL);
        json_array_foreach(list, i, sd) {
                cli_table_add_take(t, cli_json_text(sd, "name"), cli_json_text(sd, "id"),
                                   cli_json_text(sd, "status"),
                                   g_strdup(json_is_true(json_object_get(sd, "master")) ? "master" : "-"),
                                   cli_format_bytes(sd, "available"), cli_format_bytes(sd, "used"),
                                   cli_json_text(sd, "path"));
        }
        json_decref(list);
        cli_table_print(t, stdout);
        return 0;
}

int cli_disk_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_auto(cli_page) page = { 0 };
        GOptionEntry entries[4];
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        g_autoptr(GHashTable) names = NULL;
        json_t *json = NULL, *list, *d;
        size_t i;

        cli_page_entries(&page, "disks", true, entries);
        if (cli_setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0 ||
            cli_engine_get_page(e, &page, "/api/disks", "disks", &json, error) < 0)
                return -1;
        if (ctx->json) {
                cli_print_json(json);
                json_decref(json);
                return 0;
        }
        list = json_object_get(json, "disks");
        names = cli_sd_names(e);
        t = cli_table_new("NAME", "ID", "STATUS", "PROGRESS", "FORMAT", "SPARSE", "SIZE", "ACTUAL",
                          "DOMAINS", NULL);
        json_array_foreach(list, i, d) {
                cli_table_add_take(t, cli_json_text(d, "name"), cli_json_text(d, "id"),
                                   cli_json_text(d, "status"), cli_progress_text(d),
                                   cli_json_text(d, "format"), cli_json_text(d, "sparse"),
                                   cli_format_bytes(d, "provisioned_size"), cli_format_bytes(d, "actual_size"),
                                   cli_disk_domains(d, names));
        }
        cli_table_print(t, stdout);
        cli_page_tell_next(json, "disks");
        json_decref(json);
        return 0;
}

static void cli_print_field(const char *label, char *value)
{
        printf("%-16s %s\n", label, value);
        g_free(value);
}

int cli_disk_show(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        g_autoptr(GHashTable) names = NULL;
        json_t *disk = NULL, *v;
        size_t i;

        if (cli_setup(ctx, &argc, &argv, NULL, "DISK", 1, "DISK (an id or a name)", &e, error) < 0)
                return -1;
        if (cli_resolve_disk(e, argv[1], &disk, error) < 0)
                return -1;
        if (ctx->json) {
                cli_print_json(disk);
                json_decref(disk);
                return 0;
        }
        names = cli_sd_names(e);
        cli_print_field("name:", cli_json_text(disk, "name"));
        cli_print_field("id:", cli_json_text(disk, "id"));
        cli_print_field("status:", cli_json_text(disk, "status"));
        if (json_object_get(disk, "progress"))
                cli_print_field("progress:", cli_progress_text(disk));
        if (json_object_get(disk, "job"))
                cli_print_field("job:", cli_json_text2(disk, "job", "id"));
        cli_print_field("format:", cli_json_text(disk, "format"));
        cli_print_field("sparse:", cli_json_text(disk, "sparse"));
        cli_print_field("size:", cli_format_bytes(disk, "provisioned_size"));
        cli_print_field("actual size:", cli_format_bytes(disk, "actual_size"));
        cli_print_field("storage domains:", cli_disk_domains(disk, names));

        if (json_array_size(json_object_get(disk, "volumes")) == 0) {
                json_decref(disk);
                return 0;
        }
        t = cli_table_new("VOLUME", "PARENT", "FORMAT", "LEGALITY", "GENERATION", "CAPACITY", NULL);
        json_array_foreach(json_object_get(disk, "volumes"), i, v) {
                cli_table_add_take(t, cli_json_text(v, "id"), cli_json_text(v, "parent"),
                                   cli_json_text(v, "format"), cli_json_text(v, "legality"),
                                   cli_json_text(v, "generation"), cli_format_bytes(v, "capacity"));
        }
        printf("\n");
        cli_table_print(t, stdout);
        json_decref(disk);
        return 0;
}

int cli_job_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_auto(cli_page) page = { 0 };
        GOptionEntry entries[4];
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        json_t *json = NULL, *list, *j;
        size_t i;

        cli_page_entries(&page, "jobs", false, entries);
        if (cli_setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0 ||
            cli_engine_get_page(e, &page, "/api/jobs", "jobs", &json, error) < 0)
                return -1;
        if (ctx->json) {
                cli_print_json(json);
                json_decref(json);
                return 0;
        }
        list = json_object_get(json, "jobs");
        t = cli_table_new("ID", "STATUS", "PROGRESS", "STARTED", "DESCRIPTION", NULL);
        json_array_foreach(list, i, j) {
                double start = cli_json_number(j, "start_time", -1);
                char *started = NULL;

                if (start >= 0) {
                        g_autoptr(GDateTime) dt = g_date_time_new_from_unix_local((gint64) start);

                        started = dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S") : NULL;
                }
                cli_table_add_take(t, cli_json_text(j, "id"), cli_json_text(j, "status"), cli_progress_text(j),
                                   started, cli_json_text(j, "description"));
        }
        cli_table_print(t, stdout);
        cli_page_tell_next(json, "jobs");
        json_decref(json);
        return 0;
}

static int cli_get_steps(struct cli_engine *e, const char *job_id, json_t **ret_steps, GError **error)
{
        g_autofree char *path = g_strdup_printf("/api/jobs/%s/steps", job_id);

        return cli_engine_get_list(e, path, "steps", ret_steps, error);
}

int cli_job_show(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        g_autofree char *path = NULL;
        json_t *job = NULL, *steps = NULL, *s;
        size_t i;

        if (cli_setup(ctx, &argc, &argv, NULL, "JOB", 1, "JOB (a job id)", &e, error) < 0)
                return -1;
        if (cli_check_uuid("job id", argv[1], error) < 0)
                return -1;
        path = g_strdup_printf("/api/jobs/%s", argv[1]);
        if (cli_engine_get(e, path, &job, error) < 0)
                return -1;
        if (cli_get_steps(e, argv[1], &steps, error) < 0) {
                json_decref(job);
                return -1;
        }
        if (ctx->json) {
                json_object_set_new(job, "steps", steps);
                cli_print_json(job);
                json_decref(job);
                return 0;
        }
        cli_print_field("id:", cli_json_text(job, "id"));
        cli_print_field("description:", cli_json_text(job, "description"));
        cli_print_field("status:", cli_json_text(job, "status"));
        cli_print_field("progress:", cli_progress_text(job));
        if (json_object_get(job, "correlation_id"))
                cli_print_field("correlation id:", cli_json_text(job, "correlation_id"));
        t = cli_table_new("TYPE", "STATUS", "PROGRESS", "HOST", "DESCRIPTION", NULL);
        json_array_foreach(steps, i, s) {
                cli_table_add_take(t, cli_json_text(s, "type"), cli_json_text(s, "status"), cli_progress_text(s),
                                   cli_json_text2(s, "execution_host", "name"), cli_json_text(s, "description"));
        }
        printf("\n");
        cli_table_print(t, stdout);
        json_decref(steps);
        json_decref(job);
        return 0;
}

/* The audit log, oldest first so the latest decisions end up at the bottom of the terminal. */
int cli_event_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *corr = NULL, *path = NULL;
        g_auto(cli_page) page = { 0 };
        GOptionEntry entries[5] = {
                { "correlation-id", 0, 0, G_OPTION_ARG_STRING, &corr,
                  "Only the events of one REST request (its Correlation-Id, shown by 'ferry job show')", "ID" },
        };
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        json_t *json = NULL, *list, *ev;
        size_t n;

        cli_page_entries(&page, "events", false, entries + 1);
        if (cli_setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0)
                return -1;
        if (corr && !fy_log_correlation_id_valid(corr)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE,
                            "--correlation-id takes 1-128 of the characters A-Z a-z 0-9 . _ : -");
                return -1;
        }
        /* The engine answers one request's events in one list (its newest 1000), never paged. */
        if (corr && (page.max || page.page)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE,
                            "--correlation-id lists one request's events at once: drop --max and --page");
                return -1;
        }
        /* Valid ids need no escaping in a query. */
        path = corr ? g_strconcat("/api/events?correlation_id=", corr, NULL) : g_strdup("/api/events");
        if (cli_engine_get_page(e, &page, path, "events", &json, error) < 0)
                return -1;
        list = json_object_get(json, "events");
        if (ctx->json) {
                cli_print_json(list);
                cli_page_tell_next(json, "events");
                json_decref(json);
                return 0;
        }
        t = cli_table_new("TIME", "SEVERITY", "MESSAGE", NULL);
        for (n = json_array_size(list); n > 0; n--) {
                g_autoptr(GDateTime) dt = NULL;

                ev = json_array_get(list, n - 1);
                dt = g_date_time_new_from_unix_local((gint64) cli_json_number(ev, "time", 0));
                cli_table_add_take(t, dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S") : g_strdup("-"),
                                   cli_json_text(ev, "severity"), cli_json_text(ev, "message"));
        }
        cli_table_print(t, stdout);
        cli_page_tell_next(json, "events");
        json_decref(json);
        return 0;
}

int cli_job_cancel(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL;
        json_t *answer = NULL;

        if (cli_setup(ctx, &argc, &argv, NULL, "JOB", 1, "JOB (a job id)", &e, error) < 0)
                return -1;
        if (cli_check_uuid("job id", argv[1], error) < 0)
                return -1;
        path = g_strdup_printf("/api/jobs/%s/cancel", argv[1]);
        if (cli_engine_request(e, "POST", path, NULL, &answer, error) < 0)
                return -1;
        if (ctx->json)
                cli_print_json(answer);
        else
                printf("job %s: cancel requested; its copies are aborted and the destination removed\n", argv[1]);
        json_decref(answer);
        return 0;
}

/* The job id of an action's 202 answer {"job": {"id"}}. */
static int cli_action_job(const json_t *answer, const char **ret_job, GError **error)
{
        const char *id = NULL;

        if (json_unpack((json_t *) answer, "{s:{s:s}}", "job", "id", &id) < 0 || !fy_uuid_is_valid(id)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine's answer has no job id");
                return -1;
        }
        *ret_job = id;
        return 0;
}

/* After an action: print what started, then wait if asked. */
static int cli_action_done(struct cli_ctx *ctx, struct cli_engine *e, json_t *answer, const char *what,
                           const char *disk_id, bool wait, bool show_hosts, GError **error)
{
        const char *job_id;

        if (cli_action_job(answer, &job_id, error) < 0)
                return -1;
        if (ctx->json && !wait)
                cli_print_json(answer);
        else if (!ctx->json)
                printf("%s: job %s\n", what, job_id);
        if (!wait)
                return 0;
        return cli_wait_job(ctx, e, job_id, disk_id, show_hosts, error);
}

int cli_disk_create(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *name = NULL, *size_text = NULL, *sd_arg = NULL, *format = NULL;
        g_autofree char *sd_id = NULL, *what = NULL, *safe_name = NULL;
        gboolean sparse = FALSE, prealloc = FALSE, wait = FALSE;
        gint volumes = 0;
        const GOptionEntry entries[] = {
                { "name", 0, 0, G_OPTION_ARG_STRING, &name, "Disk name (1-64 characters)", "N" },
                { "size", 0, 0, G_OPTION_ARG_STRING, &size_text, "Provisioned size, e.g. 1G, 512M", "SIZE" },
                { "sd", 0, 0, G_OPTION_ARG_STRING, &sd_arg, "Storage domain (name or id)", "SD" },
                { "format", 0, 0, G_OPTION_ARG_STRING, &format, "raw (default) or cow", "FORMAT" },
                { "sparse", 0, 0, G_OPTION_ARG_NONE, &sparse, "Thin provisioned (default)", NULL },
                { "preallocated", 0, 0, G_OPTION_ARG_NONE, &prealloc, "Allocate all space now", NULL },
                { "volumes", 0, 0, G_OPTION_ARG_INT, &volumes, "A chain of N qcow2 volumes (1-16)", "N" },
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the job, showing progress", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        json_t *body, *answer = NULL;
        const char *disk_id = NULL;
        uint64_t size;
        int r;

        if (cli_setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0)
                return -1;
        if (!name || !size_text || !sd_arg) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--name, --size and --sd are required");
                return -1;
        }
        if (cli_check_name("--name", name, error) < 0 || cli_parse_size(size_text, &size, error) < 0)
                return -1;
        if (sparse && prealloc) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--sparse and --preallocated exclude each other");
                return -1;
        }
        if (volumes && (volumes < 1 || volumes > 16)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--volumes must be between 1 and 16");
                return -1;
        }
        if (!format)
                format = g_strdup(volumes ? "cow" : "raw");
        if (strcmp(format, "raw") != 0 && strcmp(format, "cow") != 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--format must be raw or cow");
                return -1;
        }
        if (volumes && strcmp(format, "cow") != 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--volumes needs --format cow");
                return -1;
        }
        if (cli_resolve_sd(e, sd_arg, &sd_id, NULL, error) < 0)
                return -1;

        body = json_pack("{s:s, s:I, s:s, s:b, s:{s:s}}", "name", name, "provisioned_size", (json_int_t) size,
                         "format", format, "sparse", !prealloc, "storage_domain", "id", sd_id);
        if (volumes)
                json_object_set_new(body, "volumes", json_integer(volumes));
        r = cli_engine_request(e, "POST", "/api/disks", body, &answer, error);
        json_decref(body);
        if (r < 0)
                return -1;
        if (json_unpack(answer, "{s:{s:s}}", "disk", "id", &disk_id) < 0 || !fy_uuid_is_valid(disk_id))
                disk_id = NULL;
        safe_name = cli_printable(name);
        what = g_strdup_printf("creating disk %s (%s)", safe_name, disk_id ? disk_id : "?");
        r = cli_action_done(ctx, e, answer, what, disk_id, wait, false, error);
        json_decref(answer);
        return r;
}

static int cli_disk_move_or_copy(struct cli_ctx *ctx, int argc, char **argv, bool copy, GError **error)
{
        g_autofree char *sd_arg = NULL, *name = NULL, *sd_id = NULL, *sd_name = NULL;
        g_autofree char *path = NULL, *what = NULL, *disk_name = NULL;
        gboolean wait = FALSE;
        const GOptionEntry entries[] = {
                { "sd", 0, 0, G_OPTION_ARG_STRING, &sd_arg, "Destination storage domain (name or id)", "SD" },
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the job, showing progress", NULL },
                { "name", 0, 0, G_OPTION_ARG_STRING, &name, "Name of the copy", "N" },
                G_OPTION_ENTRY_NULL
        };
        GOptionEntry move_entries[3];
        g_autoptr(cli_engine) e = NULL;
        json_t *disk = NULL, *body, *answer = NULL;
        const char *disk_id, *result_id = NULL;
        int r;

        /* move has no --name */
        memcpy(move_entries, entries, sizeof(move_entries[0]) * 2);
        move_entries[2] = (GOptionEntry) G_OPTION_ENTRY_NULL;
        if (cli_setup(ctx, &argc, &argv, copy ? entries : move_entries, "DISK", 1, "DISK (an id or a name)",
                      &e, error) < 0)
                return -1;
        if (!sd_arg) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--sd is required");
                return -1;
        }
        if (name && cli_check_name("--name", name, error) < 0)
                return -1;
        if (cli_resolve_disk(e, argv[1], &disk, error) < 0)
                return -1;
        disk_id = json_string_value(json_object_get(disk, "id"));
        if (!disk_id || !fy_uuid_is_valid(disk_id)) {
                json_decref(disk);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent a disk without an id");
                return -1;
        }
        disk_name = cli_json_text(disk, "name");
        path = g_strdup_printf("/api/disks/%s/%s", disk_id, copy ? "copy" : "move");
        if (cli_resolve_sd(e, sd_arg, &sd_id, &sd_name, error) < 0) {
                json_decref(disk);
                return -1;
        }

        body = json_pack("{s:{s:s}}", "storage_domain", "id", sd_id);
        if (name)
                json_object_set_new(body, "name", json_string(name));
        r = cli_engine_request(e, "POST", path, body, &answer, error);
        json_decref(body);
        if (r < 0) {
                json_decref(disk);
                return -1;
        }
        if (copy) {
                if (json_unpack(answer, "{s:{s:s}}", "disk", "id", &result_id) < 0 || !fy_uuid_is_valid(result_id))
                        result_id = NULL;
                what = g_strdup_printf("copying disk %s to %s as %s", disk_name, sd_name,
                                       result_id ? result_id : "?");
        } else {
                result_id = disk_id;
                what = g_strdup_printf("moving disk %s to %s", disk_name, sd_name);
        }
        r = cli_action_done(ctx, e, answer, what, result_id, wait, true, error);
        json_decref(answer);
        json_decref(disk);
        return r;
}

/* Waits for the disk's checksum job and prints its digest (the step's checksum). */
int cli_disk_checksum(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL, *steps_path = NULL, *disk_name = NULL;
        json_t *disk = NULL, *answer = NULL, *steps = NULL, *step;
        const char *disk_id, *job_id, *digest = NULL;
        int r = -1;
        size_t i;

        if (cli_setup(ctx, &argc, &argv, NULL, "DISK", 1, "DISK (an id or a name)", &e, error) < 0)
                return -1;
        if (cli_resolve_disk(e, argv[1], &disk, error) < 0)
                return -1;
        disk_id = json_string_value(json_object_get(disk, "id"));
        if (!disk_id || !fy_uuid_is_valid(disk_id)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent a disk without an id");
                goto out;
        }
        disk_name = cli_json_text(disk, "name");
        path = g_strdup_printf("/api/disks/%s/checksum", disk_id);
        if (cli_engine_request(e, "POST", path, NULL, &answer, error) < 0 || cli_action_job(answer, &job_id, error) < 0)
                goto out;
        /* Progress while it runs (--json: the job with its steps, the digest in the step's checksum). */
        if (cli_wait_job(ctx, e, job_id, NULL, false, error) < 0)
                goto out;
        steps_path = g_strdup_printf("/api/jobs/%s/steps", job_id);
        if (cli_engine_request(e, "GET", steps_path, NULL, &steps, error) < 0)
                goto out;
        json_array_foreach(json_object_get(steps, "steps"), i, step) {
                json_t *ck = json_object_get(step, "checksum");

                if (json_is_string(json_object_get(ck, "value")))
                        digest = json_string_value(json_object_get(ck, "value"));
        }
        if (!digest || strlen(digest) > 256 || strspn(digest, "0123456789abcdef") != strlen(digest)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "job %s finished without a usable checksum", job_id);
                goto out;
        }
        if (!ctx->json)
                printf("blake2b:%s  %s\n", digest, disk_name);        /* the last line: the digest */
        r = 0;
out:
        json_decref(steps);
        json_decref(answer);
        json_decref(disk);
        return r;
}

int cli_disk_move(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        return cli_disk_move_or_copy(ctx, argc, argv, false, error);
}

int cli_disk_copy(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        return cli_disk_move_or_copy(ctx, argc, argv, true, error);
}

static int cli_check_option_name(const char *name, GError **error)
{
        size_t len = strlen(name);

        if (len < 1 || len > CLI_NAME_MAX) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "option names are 1 to %d characters", CLI_NAME_MAX);
                return -1;
        }
        for (const char *p = name; *p; p++) {
                if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-' && *p != '.') {
                        g_autofree char *safe = cli_printable(name);

                        g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "invalid option name '%s'", safe);
                        return -1;
                }
        }
        return 0;
}

static void cli_print_option(struct cli_ctx *ctx, json_t *option, const char *name)
{
        if (ctx->json) {
                cli_print_json(option);
                return;
        }
        g_autofree char *n = json_object_get(option, "name") ? cli_json_text(option, "name") : cli_printable(name);
        const json_t *v = json_object_get(option, "value");
        g_autofree char *value = NULL;

        if (json_is_boolean(v))
                value = g_strdup(json_is_true(v) ? "true" : "false");
        else
                value = cli_json_text(option, "value");
        printf("%s = %s\n", n, value);
}

int cli_config_get(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL;
        json_t *option = NULL;

        if (cli_setup(ctx, &argc, &argv, NULL, "NAME", 1, "NAME (e.g. DataOperationsByHSM)", &e, error) < 0)
                return -1;
        if (cli_check_option_name(argv[1], error) < 0)
                return -1;
        path = g_strdup_printf("/api/options/%s", argv[1]);
        if (cli_engine_get(e, path, &option, error) < 0)
                return -1;
        cli_print_option(ctx, option, argv[1]);
        json_decref(option);
        return 0;
}

/* "true"/"false" → boolean, an integer → number, anything else → string. */
static json_t *cli_option_value(const char *text)
{
        gint64 n;

        if (g_ascii_strcasecmp(text, "true") == 0)
                return json_true();
        if (g_ascii_strcasecmp(text, "false") == 0)
                return json_false();
        if (g_ascii_string_to_signed(text, 10, G_MININT64, G_MAXINT64, &n, NULL))
                return json_integer(n);
        return json_string(text);
}

int cli_config_set(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL;
        json_t *body, *option = NULL, *value;
        int r;

        if (cli_setup(ctx, &argc, &argv, NULL, "NAME VALUE", 2, "NAME and VALUE", &e, error) < 0)
                return -1;
        if (cli_check_option_name(argv[1], error) < 0)
                return -1;
        if (strlen(argv[2]) > 4096 || !g_utf8_validate(argv[2], -1, NULL)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "VALUE must be UTF-8 text of at most 4096 bytes");
                return -1;
        }
        value = cli_option_value(argv[2]);
        body = json_pack("{s:o}", "value", value);
        path = g_strdup_printf("/api/options/%s", argv[1]);
        r = cli_engine_request(e, "PUT", path, body, &option, error);
        json_decref(body);
        if (r < 0)
                return -1;
        if (option)
                cli_print_option(ctx, option, argv[1]);
        json_decref(option);
        return 0;
}

int cli_disk_sparsify(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        gboolean wait = FALSE;
        const GOptionEntry entries[] = {
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the job, showing progress", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *path = NULL, *what = NULL, *disk_name = NULL;
        json_t *disk = NULL, *answer = NULL, *body;
        const char *disk_id;
        int r;

        if (cli_setup(ctx, &argc, &argv, entries, "DISK", 1, "DISK (an id or a name)", &e, error) < 0 ||
            cli_resolve_disk(e, argv[1], &disk, error) < 0)
                return -1;
        disk_id = json_string_value(json_object_get(disk, "id"));
        if (!disk_id || !fy_uuid_is_valid(disk_id)) {
                json_decref(disk);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent a disk without an id");
                return -1;
        }
        disk_name = cli_json_text(disk, "name");
        path = g_strdup_printf("/api/disks/%s/sparsify", disk_id);
        body = json_object();
        r = cli_engine_request(e, "POST", path, body, &answer, error);
        json_decref(body);
        if (r == 0) {
                what = g_strdup_printf("sparsifying disk %s", disk_name);
                r = cli_action_done(ctx, e, answer, what, disk_id, wait, true, error);
        }
        json_decref(answer);
        json_decref(disk);
        return r;
}
