/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The Prometheus text writer: exact output for each metric type, escaping, values, histogram buckets. */
#include <math.h>
#include <glib.h>

#include "prom.h"

static void test_counter_gauge(void)
{
        g_autoptr(fy_prom) p = fy_prom_new();

        fy_prom_family(p, "ferry_agent_copy_bytes_total", FY_PROM_COUNTER, "Bytes copied.");
        fy_prom_sample(p, "ferry_agent_copy_bytes_total", NULL, 1073741824.0);
        fy_prom_family(p, "ferry_agent_jobs", FY_PROM_GAUGE, "Jobs by state.");
        fy_prom_sample(p, "ferry_agent_jobs", (const char *[]) { "state", "running", NULL }, 2);
        fy_prom_sample(p, "ferry_agent_jobs", (const char *[]) { "state", "pending", NULL }, 0);
        g_assert_cmpstr(fy_prom_text(p, NULL), ==,
                        "# HELP ferry_agent_copy_bytes_total Bytes copied.\n"
                        "# TYPE ferry_agent_copy_bytes_total counter\n"
                        "ferry_agent_copy_bytes_total 1073741824\n"
                        "# HELP ferry_agent_jobs Jobs by state.\n"
                        "# TYPE ferry_agent_jobs gauge\n"
                        "ferry_agent_jobs{state=\"running\"} 2\n"
                        "ferry_agent_jobs{state=\"pending\"} 0\n");
}

static void test_escaping(void)
{
        g_autoptr(fy_prom) p = fy_prom_new();

        /* A label value from outside (a domain name) cannot end the value, the sample or the line. */
        fy_prom_family(p, "m", FY_PROM_GAUGE, "a \\ help\nwith \"quotes\"");
        fy_prom_sample(p, "m", (const char *[]) { "sd", "x\"} 1\nevil 2", "b", "c\\d", NULL }, 1);
        g_assert_cmpstr(fy_prom_text(p, NULL), ==,
                        "# HELP m a \\\\ help\\nwith \"quotes\"\n"
                        "# TYPE m gauge\n"
                        "m{sd=\"x\\\"} 1\\nevil 2\",b=\"c\\\\d\"} 1\n");
}

static void test_values(void)
{
        g_autoptr(fy_prom) p = fy_prom_new();

        fy_prom_family(p, "v", FY_PROM_GAUGE, "values");
        fy_prom_sample(p, "v", (const char *[]) { "k", "a", NULL }, 0.5);
        fy_prom_sample(p, "v", (const char *[]) { "k", "b", NULL }, INFINITY);
        fy_prom_sample(p, "v", (const char *[]) { "k", "c", NULL }, -INFINITY);
        fy_prom_sample(p, "v", (const char *[]) { "k", "d", NULL }, NAN);
        fy_prom_sample(p, "v", (const char *[]) { "k", "e", NULL }, -3);
        fy_prom_sample(p, "v", (const char *[]) { "k", "f", NULL }, 1e20);
        g_assert_cmpstr(fy_prom_text(p, NULL), ==,
                        "# HELP v values\n# TYPE v gauge\n"
                        "v{k=\"a\"} 0.5\nv{k=\"b\"} +Inf\nv{k=\"c\"} -Inf\nv{k=\"d\"} NaN\n"
                        "v{k=\"e\"} -3\nv{k=\"f\"} 1e+20\n");
}

static void test_histogram(void)
{
        static const double bounds[] = { 0.5, 1, 10 };
        g_autoptr(fy_prom) p = fy_prom_new();
        struct fy_prom_histogram h;

        fy_prom_histogram_init(&h, bounds, G_N_ELEMENTS(bounds));
        fy_prom_histogram_observe(&h, 0.25);
        fy_prom_histogram_observe(&h, 1);       /* le is inclusive */
        fy_prom_histogram_observe(&h, 2);
        fy_prom_histogram_observe(&h, 100);
        fy_prom_histogram_observe(&h, NAN);     /* ignored */
        fy_prom_family(p, "d_seconds", FY_PROM_HISTOGRAM, "durations");
        fy_prom_histogram_write(p, "d_seconds", (const char *[]) { "method", "SDM.copy_data", NULL }, &h);
        g_assert_cmpstr(fy_prom_text(p, NULL), ==,
                        "# HELP d_seconds durations\n# TYPE d_seconds histogram\n"
                        "d_seconds_bucket{method=\"SDM.copy_data\",le=\"0.5\"} 1\n"
                        "d_seconds_bucket{method=\"SDM.copy_data\",le=\"1\"} 2\n"
                        "d_seconds_bucket{method=\"SDM.copy_data\",le=\"10\"} 3\n"
                        "d_seconds_bucket{method=\"SDM.copy_data\",le=\"+Inf\"} 4\n"
                        "d_seconds_sum{method=\"SDM.copy_data\"} 103.25\n"
                        "d_seconds_count{method=\"SDM.copy_data\"} 4\n");
        fy_prom_histogram_clear(&h);
}

static void test_names(void)
{
        g_assert_true(fy_prom_name_valid("ferry_agent:x_total"));
        g_assert_false(fy_prom_name_valid("9lives"));
        g_assert_false(fy_prom_name_valid("a-b"));
        g_assert_false(fy_prom_name_valid(""));
}

/* Misuse is a bug that must show: a family twice, a sample outside its family. */
static void test_misuse(void)
{
        if (g_test_subprocess()) {
                g_autoptr(fy_prom) p = fy_prom_new();

                fy_prom_family(p, "a", FY_PROM_GAUGE, "a");
                fy_prom_sample(p, "b", NULL, 1);
                return;
        }
        g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_failed();
        g_test_trap_assert_stderr("*CRITICAL*");
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/prom/counter-gauge", test_counter_gauge);
        g_test_add_func("/prom/escaping", test_escaping);
        g_test_add_func("/prom/values", test_values);
        g_test_add_func("/prom/histogram", test_histogram);
        g_test_add_func("/prom/names", test_names);
        g_test_add_func("/prom/misuse", test_misuse);
        return g_test_run();
}
