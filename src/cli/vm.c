/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ferry vm … / ferry template …: VMs, disk attachments, snapshots and templates over REST. */
#include <string.h>

#include "cli.h"
#include "uuid.h"

static int setup(struct cli_ctx *ctx, int *argc, char ***argv, const GOptionEntry *entries, const char *params,
                 int nargs, const char *what, struct cli_engine **ret_engine, GError **error)
{
        if (cli_parse_options(ctx, argc, argv, entries, params, NULL, error) < 0 ||
            cli_expect_args(*argc, nargs, what, error) < 0)
                return -1;
        return cli_ctx_engine(ctx, ret_engine, error);
}

/* The id of the element of `key` at `path` whose id or name is arg (a name must be unique). */
static int resolve(struct cli_engine *e, const char *path, const char *key, bool searchable, const char *what,
                   const char *arg, char **ret_id, GError **error)
{
        json_t *item = NULL;
        const char *id;

        if (cli_engine_resolve(e, path, key, searchable, what, arg, &item, error) < 0)
                return -1;
        id = json_string_value(json_object_get(item, "id"));
        if (!id || !fy_uuid_is_valid(id)) {
                json_decref(item);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent a %s without an id", what);
                return -1;
        }
        *ret_id = g_strdup(id);
        json_decref(item);
        return 0;
}

static int resolve_vm(struct cli_engine *e, const char *arg, char **ret_id, GError **error)
{
        return resolve(e, "/api/vms", "vms", true, "VM", arg, ret_id, error);
}

static int resolve_template(struct cli_engine *e, const char *arg, char **ret_id, GError **error)
{
        return resolve(e, "/api/templates", "templates", true, "template", arg, ret_id, error);
}

/* Prints the answer of an action that started a job; with wait, follows it to the end. */
static int job_started(struct cli_ctx *ctx, struct cli_engine *e, json_t *answer, const char *what, bool wait,
                       GError **error)
{
        const char *job_id = NULL;

        if (json_unpack(answer, "{s:{s:s}}", "job", "id", &job_id) < 0 || !fy_uuid_is_valid(job_id)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine did not answer with a job");
                return -1;
        }
        if (ctx->json && !wait)
                cli_print_json(answer);
        else if (!ctx->json)
                printf("%s: job %s\n", what, job_id);
        return wait ? cli_wait_job(ctx, e, job_id, NULL, true, error) : 0;
}

/* vm list / template list: key "vms" or "templates", with the paging options. */
static int print_list(struct cli_ctx *ctx, int argc, char **argv, const char *path, const char *key, GError **error)
{
        g_auto(cli_page) page = { 0 };
        GOptionEntry entries[4];
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_table) t = NULL;
        json_t *json = NULL, *item;
        size_t i;

        cli_page_entries(&page, key, true, entries);
        if (setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0 ||
            cli_engine_get_page(e, &page, path, key, &json, error) < 0)
                return -1;
        if (ctx->json) {
                cli_print_json(json);
                json_decref(json);
                return 0;
        }
        t = cli_table_new("NAME", "ID", "STATUS", "DISKS", strcmp(key, "vms") == 0 ? "TEMPLATE" : "FROM VM", NULL);
        json_array_foreach(json_object_get(json, key), i, item)
                cli_table_add_take(t, cli_json_text(item, "name"), cli_json_text(item, "id"), cli_json_text(item, "status"),
                                   g_strdup_printf("%zu", json_array_size(json_object_get(item, "disk_attachments"))),
                                   cli_json_text2(item, strcmp(key, "vms") == 0 ? "template" : "vm", "id"));
        cli_table_print(t, stdout);
        cli_page_tell_next(json, key);
        json_decref(json);
        return 0;
}

int cli_vm_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        return print_list(ctx, argc, argv, "/api/vms", "vms", error);
}

int cli_template_list(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        return print_list(ctx, argc, argv, "/api/templates", "templates", error);
}

static void print_disks(struct cli_engine *e, json_t *atts)
{
        g_autoptr(cli_table) t = cli_table_new("DISK", "ID", "STATUS", "FORMAT", "VOLUMES", "DOMAIN", NULL);
        size_t i;
        json_t *a;

        json_array_foreach(atts, i, a) {
                g_autoptr(GError) error = NULL;
                g_autofree char *path = NULL;
                json_t *d = NULL;
                const char *id = json_string_value(json_object_get(a, "id"));

                if (!id || !fy_uuid_is_valid(id))
                        continue;
                path = g_strdup_printf("/api/disks/%s", id);
                if (cli_engine_get(e, path, &d, &error) < 0) {
                        cli_table_add_take(t, g_strdup("?"), cli_printable(id), cli_printable(error->message),
                                           g_strdup("-"), g_strdup("-"), g_strdup("-"));
                        continue;
                }
                cli_table_add_take(t, cli_json_text(d, "name"), cli_json_text(d, "id"), cli_json_text(d, "status"),
                                   cli_json_text(d, "format"),
                                   g_strdup_printf("%zu", json_array_size(json_object_get(d, "volumes"))),
                                   cli_printable(json_string_value(json_object_get(
                                           json_array_get(json_object_get(d, "storage_domains"), 0), "id"))));
                json_decref(d);
        }
        cli_table_print(t, stdout);
}

int cli_vm_show(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *id = NULL, *path = NULL, *spath = NULL;
        json_t *vm = NULL, *snaps = NULL, *s;
        size_t i;

        if (setup(ctx, &argc, &argv, NULL, "VM", 1, "VM (an id or a name)", &e, error) < 0 ||
            resolve_vm(e, argv[1], &id, error) < 0)
                return -1;
        path = g_strdup_printf("/api/vms/%s", id);
        spath = g_strdup_printf("/api/vms/%s/snapshots", id);
        if (cli_engine_get(e, path, &vm, error) < 0)
                return -1;
        if (cli_engine_get_list(e, spath, "snapshots", &snaps, error) < 0) {
                json_decref(vm);
                return -1;
        }
        if (ctx->json) {
                json_object_set(vm, "snapshots", snaps);
                cli_print_json(vm);
        } else {
                g_autofree char *name = cli_json_text(vm, "name"), *vid = cli_json_text(vm, "id");
                g_autofree char *status = cli_json_text(vm, "status"), *tmpl = cli_json_text2(vm, "template", "id");

                printf("%-16s %s\n%-16s %s\n%-16s %s\n%-16s %s\n", "name", name, "id", vid, "status", status,
                       "template", tmpl);
                print_disks(e, json_object_get(vm, "disk_attachments"));
                json_array_foreach(snaps, i, s) {
                        g_autofree char *sid = cli_json_text(s, "id"), *desc = cli_json_text(s, "description");
                        g_autofree char *st = cli_json_text(s, "snapshot_status");

                        printf("snapshot %s  %s  %s\n", sid, st, desc);
                }
        }
        json_decref(snaps);
        json_decref(vm);
        return 0;
}

/* The same per-disk choice for every disk listed in `disks` (attachments), as the REST body wants. */
static json_t *disk_choices(json_t *atts, const char *sd_id, const char *format, bool prealloc)
{
        json_t *out = json_array();
        size_t i;
        json_t *a;

        json_array_foreach(atts, i, a) {
                json_t *c = json_pack("{s:O}", "id", json_object_get(a, "id"));

                if (sd_id)
                        json_object_set_new(c, "storage_domain", json_pack("{s:s}", "id", sd_id));
                if (format)
                        json_object_set_new(c, "format", json_string(format));
                if (prealloc)
                        json_object_set_new(c, "sparse", json_false());
                json_array_append_new(out, c);
        }
        return out;
}

static int check_format(const char *format, GError **error)
{
        if (format && strcmp(format, "raw") != 0 && strcmp(format, "cow") != 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--format must be raw or cow");
                return -1;
        }
        return 0;
}

/* GET path → its disk_attachments, for the per-disk choices. */
static int owner_disks(struct cli_engine *e, const char *path, json_t **ret, GError **error)
{
        json_t *o = NULL;

        if (cli_engine_get(e, path, &o, error) < 0)
                return -1;
        *ret = json_incref(json_object_get(o, "disk_attachments"));
        json_decref(o);
        if (!json_is_array(*ret)) {
                json_decref(*ret);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent no disk_attachments");
                return -1;
        }
        return 0;
}

int cli_vm_create(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *name = NULL, *tmpl_arg = NULL, *sd_arg = NULL, *format = NULL, *desc = NULL;
        g_autofree char *tmpl_id = NULL, *sd_id = NULL, *what = NULL, *safe = NULL;
        gboolean clone = FALSE, prealloc = FALSE, wait = FALSE;
        const GOptionEntry entries[] = {
                { "name", 0, 0, G_OPTION_ARG_STRING, &name, "VM name (1-64 characters)", "N" },
                { "description", 0, 0, G_OPTION_ARG_STRING, &desc, "Description", "TEXT" },
                { "template", 0, 0, G_OPTION_ARG_STRING, &tmpl_arg, "Make it from this template (name or id)", "T" },
                { "clone", 0, 0, G_OPTION_ARG_NONE, &clone, "Copy the template's disks (default: thin layers on them)", NULL },
                { "sd", 0, 0, G_OPTION_ARG_STRING, &sd_arg, "With --clone: storage domain of every disk", "SD" },
                { "format", 0, 0, G_OPTION_ARG_STRING, &format, "With --clone: raw or cow for every disk", "FORMAT" },
                { "preallocated", 0, 0, G_OPTION_ARG_NONE, &prealloc, "With --clone: allocate all space now", NULL },
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the job, showing progress", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        json_t *body, *answer = NULL;
        int r;

        if (setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0)
                return -1;
        if (!name) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--name is required");
                return -1;
        }
        if (cli_check_name("--name", name, error) < 0 || check_format(format, error) < 0)
                return -1;
        if (!tmpl_arg && (clone || sd_arg || format || prealloc)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--clone, --sd, --format and --preallocated need --template");
                return -1;
        }
        if (tmpl_arg && !clone && (sd_arg || format || prealloc)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE,
                            "a thin VM's disks stay qcow2 layers on the template's domain; add --clone to choose");
                return -1;
        }
        body = json_pack("{s:s}", "name", name);
        if (desc)
                json_object_set_new(body, "description", json_string(desc));
        if (tmpl_arg) {
                json_t *atts = NULL;
                g_autofree char *tpath = NULL;

                if (resolve_template(e, tmpl_arg, &tmpl_id, error) < 0 ||
                    (sd_arg && resolve(e, "/api/storagedomains", "storagedomains", false, "storage domain", sd_arg, &sd_id, error) < 0)) {
                        json_decref(body);
                        return -1;
                }
                tpath = g_strdup_printf("/api/templates/%s", tmpl_id);
                if ((sd_id || format || prealloc) && owner_disks(e, tpath, &atts, error) < 0) {
                        json_decref(body);
                        return -1;
                }
                json_object_set_new(body, "template", json_pack("{s:s}", "id", tmpl_id));
                json_object_set_new(body, "clone", json_boolean(clone));
                if (atts)
                        json_object_set_new(body, "disks", disk_choices(atts, sd_id, format, prealloc));
                json_decref(atts);
        }
        r = cli_engine_request(e, "POST", "/api/vms", body, &answer, error);
        json_decref(body);
        if (r < 0)
                return -1;
        safe = cli_printable(name);
        if (!tmpl_arg) {
                if (ctx->json)
                        cli_print_json(answer);
                else
                        printf("created VM %s (%s)\n", safe, json_string_value(json_object_get(answer, "id")) ?: "?");
                json_decref(answer);
                return 0;
        }
        what = g_strdup_printf("creating VM %s from template %s (%s)", safe, tmpl_id, clone ? "clone" : "thin");
        r = job_started(ctx, e, answer, what, wait, error);
        json_decref(answer);
        return r;
}

int cli_vm_delete(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        gboolean detach_only = FALSE, wait = FALSE;
        const GOptionEntry entries[] = {
                { "detach-only", 0, 0, G_OPTION_ARG_NONE, &detach_only, "Keep the disks (detached)", NULL },
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the removal of the disks", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *id = NULL, *path = NULL;
        json_t *answer = NULL;
        int r;

        if (setup(ctx, &argc, &argv, entries, "VM", 1, "VM (an id or a name)", &e, error) < 0 ||
            resolve_vm(e, argv[1], &id, error) < 0)
                return -1;
        path = g_strdup_printf("/api/vms/%s%s", id, detach_only ? "?detach_only=true" : "");
        if (cli_engine_request(e, "DELETE", path, NULL, &answer, error) < 0)
                return -1;
        if (cli_engine_last_status(e) == 202) {
                r = job_started(ctx, e, answer, "removing the VM and its disks", wait, error);
        } else {
                if (ctx->json)
                        cli_print_json(answer);
                else
                        printf("removed VM %s; its disks stay, detached\n", id);
                r = 0;
        }
        json_decref(answer);
        return r;
}

static int attach_or_detach(struct cli_ctx *ctx, int argc, char **argv, bool attach, GError **error)
{
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *vm = NULL, *disk = NULL, *path = NULL;
        json_t *answer = NULL, *body = NULL;
        int r;

        if (setup(ctx, &argc, &argv, NULL, "VM DISK", 2, "VM and DISK (ids or names)", &e, error) < 0 ||
            resolve_vm(e, argv[1], &vm, error) < 0 ||
            resolve(e, "/api/disks", "disks", true, "disk", argv[2], &disk, error) < 0)
                return -1;
        if (attach) {
                path = g_strdup_printf("/api/vms/%s/diskattachments", vm);
                body = json_pack("{s:{s:s}}", "disk", "id", disk);
                r = cli_engine_request(e, "POST", path, body, &answer, error);
                json_decref(body);
        } else {
                path = g_strdup_printf("/api/vms/%s/diskattachments/%s", vm, disk);
                r = cli_engine_request(e, "DELETE", path, NULL, &answer, error);
        }
        if (r < 0)
                return -1;
        if (ctx->json)
                cli_print_json(answer);
        else
                printf("%s disk %s %s VM %s\n", attach ? "attached" : "detached", disk, attach ? "to" : "from", vm);
        json_decref(answer);
        return 0;
}

int cli_vm_attach(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        return attach_or_detach(ctx, argc, argv, true, error);
}

int cli_vm_detach(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        return attach_or_detach(ctx, argc, argv, false, error);
}

/* ferry vm snapshot delete|restore VM SNAPSHOT: a cold merge of the snapshot's volumes, or a new leaf on them. */
static int snapshot_change(struct cli_ctx *ctx, int argc, char **argv, bool remove, GError **error)
{
        gboolean wait = FALSE;
        const GOptionEntry entries[] = {
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the job", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *id = NULL, *path = NULL, *what = NULL;
        json_t *answer = NULL;
        int r;

        if (setup(ctx, &argc, &argv, entries, "VM SNAPSHOT", 2, "VM (an id or a name) and SNAPSHOT (its id)", &e,
                  error) < 0 || resolve_vm(e, argv[1], &id, error) < 0)
                return -1;
        if (!fy_uuid_is_valid(argv[2])) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "SNAPSHOT must be a snapshot id (see 'ferry vm show %s')",
                            argv[1]);
                return -1;
        }
        path = remove ? g_strdup_printf("/api/vms/%s/snapshots/%s", id, argv[2])
                      : g_strdup_printf("/api/vms/%s/snapshots/%s/restore", id, argv[2]);
        r = cli_engine_request(e, remove ? "DELETE" : "POST", path, remove ? NULL : json_object(), &answer, error);
        if (r < 0)
                return -1;
        if (remove && !json_object_get(answer, "job")) {
                /* None of its disks is the VM's any more: removed at once. */
                if (ctx->json)
                        cli_print_json(answer);
                else
                        printf("removed snapshot %s\n", argv[2]);
                json_decref(answer);
                return 0;
        }
        what = g_strdup_printf("%s snapshot %s", remove ? "removing (merging)" : "restoring", argv[2]);
        r = job_started(ctx, e, answer, what, wait, error);
        json_decref(answer);
        return r;
}

int cli_vm_snapshot(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *desc = NULL;
        gboolean wait = FALSE;
        const GOptionEntry entries[] = {
                { "description", 0, 0, G_OPTION_ARG_STRING, &desc, "Description", "TEXT" },
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the job", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *id = NULL, *path = NULL;
        json_t *answer = NULL, *body;
        int r;

        /* "vm snapshot delete|restore VM SNAPSHOT"; a VM named delete or restore is given by id. */
        if (argc >= 2 && (strcmp(argv[1], "delete") == 0 || strcmp(argv[1], "restore") == 0))
                return snapshot_change(ctx, argc - 1, argv + 1, strcmp(argv[1], "delete") == 0, error);
        if (setup(ctx, &argc, &argv, entries, "VM", 1, "VM (an id or a name)", &e, error) < 0 ||
            resolve_vm(e, argv[1], &id, error) < 0)
                return -1;
        path = g_strdup_printf("/api/vms/%s/snapshots", id);
        body = json_pack("{s:s}", "description", desc ? desc : "");
        r = cli_engine_request(e, "POST", path, body, &answer, error);
        json_decref(body);
        if (r < 0)
                return -1;
        r = job_started(ctx, e, answer, "creating a snapshot", wait, error);
        json_decref(answer);
        return r;
}

int cli_template_create(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *name = NULL, *vm_arg = NULL, *sd_arg = NULL, *format = NULL, *desc = NULL;
        g_autofree char *vm_id = NULL, *sd_id = NULL, *what = NULL, *safe = NULL, *vpath = NULL;
        gboolean prealloc = FALSE, wait = FALSE;
        const GOptionEntry entries[] = {
                { "name", 0, 0, G_OPTION_ARG_STRING, &name, "Template name (1-64 characters)", "N" },
                { "vm", 0, 0, G_OPTION_ARG_STRING, &vm_arg, "The VM whose disks are copied (name or id)", "VM" },
                { "description", 0, 0, G_OPTION_ARG_STRING, &desc, "Description", "TEXT" },
                { "sd", 0, 0, G_OPTION_ARG_STRING, &sd_arg, "Storage domain of every template disk", "SD" },
                { "format", 0, 0, G_OPTION_ARG_STRING, &format, "raw or cow for every template disk", "FORMAT" },
                { "preallocated", 0, 0, G_OPTION_ARG_NONE, &prealloc, "Allocate all space now", NULL },
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the job, showing progress", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        json_t *body, *answer = NULL, *atts = NULL;
        int r;

        if (setup(ctx, &argc, &argv, entries, NULL, 0, NULL, &e, error) < 0)
                return -1;
        if (!name || !vm_arg) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--name and --vm are required");
                return -1;
        }
        if (cli_check_name("--name", name, error) < 0 || check_format(format, error) < 0 ||
            resolve_vm(e, vm_arg, &vm_id, error) < 0 || (sd_arg && resolve(e, "/api/storagedomains", "storagedomains", false, "storage domain", sd_arg, &sd_id, error) < 0))
                return -1;
        vpath = g_strdup_printf("/api/vms/%s", vm_id);
        if ((sd_id || format || prealloc) && owner_disks(e, vpath, &atts, error) < 0)
                return -1;
        body = json_pack("{s:s, s:{s:s}}", "name", name, "vm", "id", vm_id);
        if (desc)
                json_object_set_new(body, "description", json_string(desc));
        if (atts)
                json_object_set_new(body, "disks", disk_choices(atts, sd_id, format, prealloc));
        json_decref(atts);
        r = cli_engine_request(e, "POST", "/api/templates", body, &answer, error);
        json_decref(body);
        if (r < 0)
                return -1;
        safe = cli_printable(name);
        what = g_strdup_printf("creating template %s from VM %s", safe, vm_id);
        r = job_started(ctx, e, answer, what, wait, error);
        json_decref(answer);
        return r;
}

int cli_template_delete(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        gboolean wait = FALSE;
        const GOptionEntry entries[] = {
                { "wait", 0, 0, G_OPTION_ARG_NONE, &wait, "Wait for the removal of the disks", NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        g_autofree char *id = NULL, *path = NULL;
        json_t *answer = NULL;
        int r = 0;

        if (setup(ctx, &argc, &argv, entries, "TEMPLATE", 1, "TEMPLATE (an id or a name)", &e, error) < 0 ||
            resolve_template(e, argv[1], &id, error) < 0)
                return -1;
        path = g_strdup_printf("/api/templates/%s", id);
        if (cli_engine_request(e, "DELETE", path, NULL, &answer, error) < 0)
                return -1;
        if (cli_engine_last_status(e) == 202)
                r = job_started(ctx, e, answer, "removing the template and its disks", wait, error);
        else if (ctx->json)
                cli_print_json(answer);
        else
                printf("removed template %s\n", id);
        json_decref(answer);
        return r;
}
