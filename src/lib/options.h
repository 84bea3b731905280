/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * One declaration table per daemon drives the INI file parser (GKeyFile, one
 * section), the command-line overrides (--name=value), --help and
 * --show-config (redis-style). Values land in the fields of a config struct
 * at the offsets the table gives.
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
};

struct fy_options_spec {
        const char *program;          /* "ferry-agent" */
        const char *section;          /* INI section, "agent" */
        const char *summary;          /* --help text */
        const char *version;
        const struct fy_option *options;
        size_t n_options;
        /* Cross-option checks and derived defaults, run before --show-config; may be NULL. */
        int (*validate)(void *config, GError **error);
};

/*
 * Fills *config (zeroed first) from defaults, then --config FILE, then the
 * command line. Returns 0, 1 when the program should exit successfully
 * (--show-config, --version printed), or -EINVAL with *error set. On any
 * non-zero return the struct holds nothing to free.
 */
int fy_options_load(const struct fy_options_spec *spec, void *config, int *argc, char ***argv, GError **error);
/* Sets one option from text (e.g. "max_jobs", "4"); origin names the source in errors. */
int fy_options_set(const struct fy_options_spec *spec, void *config, const char *name, const char *value,
                   const char *origin, GError **error);
char *fy_options_dump(const struct fy_options_spec *spec, const void *config);
void fy_options_clear(const struct fy_options_spec *spec, void *config);
