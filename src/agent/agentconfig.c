/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One declaration table drives the INI parser (GKeyFile, group [agent]),
 * the command-line overrides, --help and --show-config.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "agentconfig.h"
#include "config.h"     /* generated: FERRY_VERSION */
#include "error.h"

enum opt_type { OPT_STRING, OPT_UINT, OPT_BOOL, OPT_SIZE };

struct agent_option {
        const char *name;
        enum opt_type type;
        const char *def;
        unsigned min, max;            /* OPT_UINT bounds; OPT_STRING: length; OPT_SIZE: MiB */
        size_t offset;
        const char *help;
};

#define O(field) offsetof(struct agent_config, field)

static const struct agent_option options[] = {
        { "listen_address", OPT_STRING, "127.0.0.1", 0, 255, O(listen_address), "address to listen on for JSON-RPC/STOMP" },
        { "port", OPT_UINT, "54321", 0, 65535, O(port), "TCP port (VDSM's default 54321; 0 picks a free one)" },
        { "insecure", OPT_BOOL, "false", 0, 0, O(insecure), "plain TCP without TLS, for development only" },
        { "tls_cert", OPT_STRING, "", 0, 4096, O(tls_cert), "PEM certificate of this host (TLS)" },
        { "tls_key", OPT_STRING, "", 0, 4096, O(tls_key), "PEM private key of this host (TLS)" },
        { "tls_ca", OPT_STRING, "", 0, 4096, O(tls_ca), "PEM CA bundle; clients must present a certificate it signed" },
        { "host_name", OPT_STRING, "", 0, 255, O(host_name), "name reported by Host.getCapabilities (default: hostname)" },
        { "host_id", OPT_UINT, "0", 0, 2000, O(host_id), "sanlock host id 1-2000 (0: taken from StoragePool.connect)" },
        { "storage_root", OPT_STRING, "/var/lib/ferry/storage", 1, 4096, O(storage_root), "folder holding the file storage domains (shared storage)" },
        { "sanlock_run_dir", OPT_STRING, "/run/sanlock", 1, 4096, O(sanlock_run_dir), "run directory of this host's sanlock daemon" },
        { "io_timeout", OPT_UINT, "10", 1, 60, O(io_timeout), "sanlock I/O timeout in seconds for new lockspaces" },
        { "max_jobs", OPT_UINT, "2", 1, 64, O(max_jobs), "concurrent running jobs; more wait as pending" },
        { "copy_rate_limit", OPT_SIZE, "0", 0, 1024 * 1024, O(copy_rate_limit), "bytes/s all copies of this host may move together, shared among running jobs; suffixes K, M, G (1024-based); 0 = unlimited" },
        { "job_autodelete", OPT_UINT, "3600", 0, 7 * 24 * 3600, O(job_autodelete), "seconds a finished job is kept before it is deleted" },
        { "max_frame", OPT_UINT, "4194304", 4096, 64 * 1024 * 1024, O(max_frame), "largest STOMP frame accepted, bytes" },
        { "max_connections", OPT_UINT, "128", 1, 4096, O(max_connections), "concurrent client connections" },
        { "log_level", OPT_STRING, "info", 1, 16, O(log_level), "debug, info, warning or error" },
};

static int option_set(const struct agent_option *o, struct agent_config *c, const char *value,
                      const char *origin, GError **error)
{
        void *field = (char *) c + o->offset;

        switch (o->type) {
        case OPT_STRING:
                if (strlen(value) > o->max || strlen(value) < o->min) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be %u-%u characters long", origin, o->name, o->min, o->max);
                        return -EINVAL;
                }
                g_free(*(char **) field);
                *(char **) field = g_strdup(value);
                return 0;
        case OPT_UINT: {
                guint64 v;
                g_autoptr(GError) e = NULL;

                if (!g_ascii_string_to_unsigned(value, 10, o->min, o->max, &v, &e)) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be a whole number from %u to %u, got '%s'",
                                    origin, o->name, o->min, o->max, value);
                        return -EINVAL;
                }
                *(unsigned *) field = (unsigned) v;
                return 0;
        }
        case OPT_SIZE: {
                guint64 v, mult = 1;
                g_autofree char *num = g_strdup(value);
                size_t len = strlen(num);

                if (len > 0 && strchr("KkMmGg", num[len - 1])) {
                        char unit = g_ascii_toupper(num[len - 1]);
                        mult = unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1024 * 1024 * 1024;
                        num[len - 1] = '\0';
                }
                if (!g_ascii_string_to_unsigned(num, 10, 0, G_MAXUINT64 / mult, &v, NULL) ||
                    v * mult > (guint64) o->max * 1024 * 1024) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be a size in bytes (suffix K, M or G allowed) up to %uM, got '%s'",
                                    origin, o->name, o->max, value);
                        return -EINVAL;
                }
                *(guint64 *) field = v * mult;
                return 0;
        }
        case OPT_BOOL:
                if (g_ascii_strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0 ||
                    g_ascii_strcasecmp(value, "yes") == 0)
                        *(bool *) field = true;
                else if (g_ascii_strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0 ||
                         g_ascii_strcasecmp(value, "no") == 0)
                        *(bool *) field = false;
                else {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: %s must be true or false, got '%s'", origin, o->name, value);
                        return -EINVAL;
                }
                return 0;
        }
        g_assert_not_reached();
}

static const struct agent_option *option_find(const char *name)
{
        for (size_t i = 0; i < G_N_ELEMENTS(options); i++)
                if (strcmp(options[i].name, name) == 0)
                        return &options[i];
        return NULL;
}

static int config_load_file(struct agent_config *c, const char *path, GError **error)
{
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_auto(GStrv) groups = NULL;
        g_auto(GStrv) keys = NULL;
        GError *e = NULL;

        if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &e)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "cannot read config file %s: %s", path, e->message);
                g_error_free(e);
                return -EINVAL;
        }
        groups = g_key_file_get_groups(kf, NULL);
        for (size_t i = 0; groups[i]; i++)
                if (strcmp(groups[i], "agent") != 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: unknown section [%s]; the agent reads only [agent]", path, groups[i]);
                        return -EINVAL;
                }
        keys = g_key_file_get_keys(kf, "agent", NULL, NULL);
        for (size_t i = 0; keys && keys[i]; i++) {
                const struct agent_option *o = option_find(keys[i]);
                g_autofree char *value = NULL;

                if (!o) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                                    "%s: unknown option '%s' (see ferry-agent --help)", path, keys[i]);
                        return -EINVAL;
                }
                value = g_key_file_get_string(kf, "agent", keys[i], NULL);
                if (option_set(o, c, value ? value : "", path, error) < 0)
                        return -EINVAL;
        }
        return 0;
}

char *agent_config_dump(const struct agent_config *c)
{
        GString *s = g_string_new("[agent]\n");

        for (size_t i = 0; i < G_N_ELEMENTS(options); i++) {
                const struct agent_option *o = &options[i];
                const void *field = (const char *) c + o->offset;

                switch (o->type) {
                case OPT_STRING:
                        g_string_append_printf(s, "%s = %s\n", o->name, *(char *const *) field);
                        break;
                case OPT_UINT:
                        g_string_append_printf(s, "%s = %u\n", o->name, *(const unsigned *) field);
                        break;
                case OPT_BOOL:
                        g_string_append_printf(s, "%s = %s\n", o->name, *(const bool *) field ? "true" : "false");
                        break;
                case OPT_SIZE:
                        g_string_append_printf(s, "%s = %" G_GUINT64_FORMAT "\n", o->name, *(const guint64 *) field);
                        break;
                }
        }
        return g_string_free(s, FALSE);
}

void agent_config_clear(struct agent_config *c)
{
        for (size_t i = 0; i < G_N_ELEMENTS(options); i++)
                if (options[i].type == OPT_STRING)
                        g_clear_pointer((char **) ((char *) c + options[i].offset), g_free);
}

int agent_config_load(int *argc, char ***argv, struct agent_config *ret, GError **error)
{
        g_autofree char *config_file = NULL;
        gboolean show_config = FALSE, version = FALSE;
        char *values[G_N_ELEMENTS(options)] = { NULL };
        GOptionEntry entries[G_N_ELEMENTS(options) + 4];
        g_autoptr(GOptionContext) ctx = NULL;
        g_autofree char *summary = NULL;
        size_t n = 0;
        int r = -EINVAL;

        memset(ret, 0, sizeof(*ret));
        entries[n++] = (GOptionEntry) { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_file,
                                        "INI file with an [agent] section (command-line options override it)", "FILE" };
        entries[n++] = (GOptionEntry) { "show-config", 0, 0, G_OPTION_ARG_NONE, &show_config,
                                        "print the effective configuration and exit", NULL };
        entries[n++] = (GOptionEntry) { "version", 0, 0, G_OPTION_ARG_NONE, &version, "print the version and exit", NULL };
        for (size_t i = 0; i < G_N_ELEMENTS(options); i++) {
                g_autofree char *dashed = g_strdelimit(g_strdup(options[i].name), "_", '-');
                g_autofree char *help = g_strdup_printf("%s (default: %s)", options[i].help,
                                                        *options[i].def ? options[i].def : "unset");
                /* GOption keeps pointers to the names: intern them. */
                entries[n++] = (GOptionEntry) {
                        g_intern_string(dashed), 0, 0, G_OPTION_ARG_STRING, &values[i],
                        g_intern_string(help),
                        options[i].type == OPT_BOOL ? "BOOL" : options[i].type == OPT_STRING ? "VALUE" : "N",
                };
        }
        entries[n] = (GOptionEntry) { NULL };

        ctx = g_option_context_new("- Ferry host agent");
        summary = g_strdup("Serves VDSM-compatible JSON-RPC over STOMP: storage domains, volumes, "
                           "sanlock leases and data copy jobs on this host.\n"
                           "Every option may also be set as 'name = value' in the [agent] section of --config.");
        g_option_context_set_summary(ctx, summary);
        g_option_context_add_main_entries(ctx, entries, NULL);
        if (!g_option_context_parse(ctx, argc, argv, error)) {
                goto out;
        }
        if (version) {
                printf("ferry-agent %s\n", FERRY_VERSION);
                r = 1;
                goto out;
        }
        if (*argc > 1) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "unexpected argument '%s' (see --help)", (*argv)[1]);
                goto out;
        }

        for (size_t i = 0; i < G_N_ELEMENTS(options); i++)
                if (option_set(&options[i], ret, options[i].def, "default", error) < 0)
                        g_assert_not_reached();
        if (config_file && config_load_file(ret, config_file, error) < 0)
                goto out;
        for (size_t i = 0; i < G_N_ELEMENTS(options); i++)
                if (values[i] && option_set(&options[i], ret, values[i], "command line", error) < 0)
                        goto out;

        if (!ret->insecure && (!*ret->tls_cert || !*ret->tls_key || !*ret->tls_ca)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "TLS needs tls_cert, tls_key and tls_ca; set them, or pass --insecure=true for development");
                goto out;
        }
        if (strcmp(ret->log_level, "debug") && strcmp(ret->log_level, "info") &&
            strcmp(ret->log_level, "warning") && strcmp(ret->log_level, "error")) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "log_level must be debug, info, warning or error, got '%s'", ret->log_level);
                goto out;
        }
        if (!*ret->host_name)
                option_set(option_find("host_name"), ret, g_get_host_name(), "default", NULL);

        if (show_config) {
                g_autofree char *dump = agent_config_dump(ret);
                fputs(dump, stdout);
                r = 1;
                goto out;
        }
        r = 0;
out:
        for (size_t i = 0; i < G_N_ELEMENTS(options); i++)
                g_free(values[i]);
        if (r != 0)
                agent_config_clear(ret);   /* on exit requests too: nothing outlives the call but a loaded config */
        return r;
}
