/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/): a writer
 * for one scrape, and a histogram to observe into between scrapes.
 *
 * Write a family's header first, then its samples:
 *
 *      fy_prom_family(p, "ferry_agent_jobs", FY_PROM_GAUGE, "Jobs by state.");
 *      fy_prom_sample(p, "ferry_agent_jobs", (const char *[]) { "state", "running", NULL }, 2);
 *
 * Names are the program's own (checked: [a-zA-Z_:][a-zA-Z0-9_:]*, a bug
 * otherwise); label values may come from outside and are escaped. Values are
 * written locale-independent, with +Inf, -Inf and NaN spelled as Prometheus
 * reads them. Not thread safe: one writer per scrape.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#define FY_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum fy_prom_type {
        FY_PROM_COUNTER,
        FY_PROM_GAUGE,
        FY_PROM_HISTOGRAM,
};

struct fy_prom;

struct fy_prom *fy_prom_new(void);
void fy_prom_free(struct fy_prom *p);
typedef struct fy_prom fy_prom;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(fy_prom, fy_prom_free)

/* HELP and TYPE lines. A family may be written once per scrape (a bug otherwise). */
void fy_prom_family(struct fy_prom *p, const char *name, enum fy_prom_type type, const char *help);
/* labels: name, value, name, value, …, NULL (or NULL for none). name must be the current family's. */
void fy_prom_sample(struct fy_prom *p, const char *name, const char *const *labels, double value);
/* The text so far; the writer keeps it. */
const char *fy_prom_text(struct fy_prom *p, size_t *ret_len);

/* Cumulative histogram with fixed upper bounds (ascending; +Inf is implicit). */
struct fy_prom_histogram {
        const double *bounds;
        size_t n_bounds;
        uint64_t *counts;              /* n_bounds + 1 (the last is +Inf), not cumulative */
        double sum;
        uint64_t count;
};

void fy_prom_histogram_init(struct fy_prom_histogram *h, const double *bounds, size_t n_bounds);
void fy_prom_histogram_clear(struct fy_prom_histogram *h);
void fy_prom_histogram_observe(struct fy_prom_histogram *h, double value);
/* name_bucket{…,le="…"} cumulative, name_sum, name_count; the family header must be written first. */
void fy_prom_histogram_write(struct fy_prom *p, const char *name, const char *const *labels,
                             const struct fy_prom_histogram *h);

/* True for a valid metric name. */
bool fy_prom_name_valid(const char *name);
