/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * One declaration table per daemon drives the INI file parser (GKeyFile, one
 * section), the command-line overrides (--name=value), --help,
 * --show-config (redis-style) and the SIGHUP reload. Values land in the
 * fields of a config struct at the offsets the table gives.
 *
 * Precedence, lowest first: the table's defaults < the config file (--config
 * FILE, or the spec's default_config when it exists) < the drop-ins FILE.d/
 * *.conf in lexical (byte) order < the command line.
 */

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

enum fy_option_type {
        FY_OPT_STRING,        /* char *, min..max is its length */
        FY_OPT_UINT,          /* unsigned, min..max */
        FY_OPT_BOOL,          /* bool */
        FY_OPT_SIZE,          /* guint64 bytes, K/M/G suffixes, max in MiB */
};

struct fy_option {
        const char *name;     /* snake_case; the command line uses dashes */
        enum fy_option_type type;
        const char *def;
        unsigned min, max;
        size_t offset;
        const char *help;
        bool live;            /* a reload applies it to the running daemon */
};

struct fy_options_spec {
        const char *program;          /* "ferry-agent" */
        const char *section;          /* INI section, "agent" */
        const char *summary;          /* --help text */
        const char *version;
        const char *default_config;   /* read when there is no --config and it exists */
        const struct fy_option *options;
        size_t n_options;
        size_t config_size;           /* sizeof the struct the offsets point into */
        /* Cross-option checks and derived defaults, run before --show-config; may be NULL. */
        int (*validate)(void *config, GError **error);
};

/* Where a configuration came from: what a reload reads again. */
struct fy_options_sources;

/* Limits on outside input: one file's size, drop-ins per directory. */
#define FY_OPTIONS_MAX_FILE   (1024 * 1024)
#define FY_OPTIONS_MAX_DROPINS 256

/*
 * Fills *config (zeroed first) from defaults, the config file, its drop-ins
 * and the command line (see above). Returns 0, 1 when the program should
 * exit successfully (--show-config, --version printed), or -EINVAL with
 * *error set. On any non-zero return the struct holds nothing to free. On 0,
 * *ret_sources (may be NULL) gets what fy_options_reload() reads again.
 */
int fy_options_load(const struct fy_options_spec *spec, void *config, int *argc, char ***argv,
                    struct fy_options_sources **ret_sources, GError **error);
void fy_options_sources_free(struct fy_options_sources *sources);

/*
 * Reads the same sources again into a fresh struct and validates it; on
 * success copies the live options that changed into *config and logs each
 * change ("max_jobs: 2 -> 4"), and logs a warning for every other changed
 * option (it takes effect at the next start). On error *config is untouched.
 * *ret_changed (may be NULL) gets the names of the live options applied.
 */
int fy_options_reload(const struct fy_options_spec *spec, const struct fy_options_sources *sources, void *config,
                      GPtrArray **ret_changed, GError **error);
/* Sets one option from text (e.g. "max_jobs", "4"); origin names the source in errors. */
int fy_options_set(const struct fy_options_spec *spec, void *config, const char *name, const char *value,
                   const char *origin, GError **error);
char *fy_options_dump(const struct fy_options_spec *spec, const void *config);
void fy_options_clear(const struct fy_options_spec *spec, void *config);
