/* SPDX-License-Identifier: GPL-2.0-or-later */
/* --wait: follow a job to its end with a progress bar or progress lines. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define CLI_POLL_US (200 * 1000)
/* How long the engine may stay unreachable while we wait before giving up. */
#define CLI_WAIT_UNREACHABLE_S 30
#define CLI_BAR_WIDTH 30

struct cli_progress {
        bool tty;
        double last_pct;
        char *last_label;
        bool drawn;
};

/* The step running now: "copy_data on host2", else the first unfinished one. */
static char *cli_current_step(const json_t *steps)
{
        const json_t *s, *pick = NULL;
        size_t i;

        json_array_foreach(steps, i, s) {
                const char *status = json_string_value(json_object_get(s, "status"));

                if (status && strcmp(status, "started") == 0) {
                        pick = s;
                        break;
                }
                if (!pick && status && strcmp(status, "finished") != 0 && strcmp(status, "failed") != 0)
                        pick = s;
        }
        if (!pick)
                return g_strdup("");

        g_autofree char *type = cli_json_text(pick, "type");
        g_autofree char *host = cli_json_text2(pick, "execution_host", "name");
        g_autofree char *status = cli_json_text(pick, "status");

        if (strcmp(host, "-") != 0)
                return g_strdup_printf("%s on %s", type, host);
        return g_strdup_printf("%s (%s)", type, status);
}

/* ", ETA 1m05s" from the job's eta_seconds; ", stalled" while a running step is; "" when the engine does not know it yet. */
static char *cli_eta_text(const json_t *job, const json_t *steps)
{
        const json_t *v = json_object_get(job, "eta_seconds");
        const json_t *st;
        json_int_t s;
        size_t i;

        json_array_foreach(steps, i, st) {
                if (g_strcmp0(json_string_value(json_object_get(st, "status")), "started") == 0 &&
                    g_strcmp0(json_string_value(json_object_get(st, "status_detail")), "stalled") == 0)
                        return g_strdup(", stalled");
        }
        if (!json_is_integer(v) || (s = json_integer_value(v)) < 0 || s > 100LL * 24 * 3600)
                return g_strdup("");
        if (s >= 3600)
                return g_strdup_printf(", ETA %lldh%02lldm", (long long) (s / 3600), (long long) (s % 3600 / 60));
        if (s >= 60)
                return g_strdup_printf(", ETA %lldm%02llds", (long long) (s / 60), (long long) (s % 60));
        return g_strdup_printf(", ETA %llds", (long long) s);
}

/* eta: shown after the label, but no reason to print a new line by itself. */
static void cli_progress_show(struct cli_progress *p, double pct, const char *label, const char *eta)
{
        if (pct < 0)
                pct = 0;
        if (pct > 100)
                pct = 100;
        if (p->tty) {
                if (p->drawn && pct == p->last_pct && strcmp(label, p->last_label) == 0 && !*eta)
                        return;
                int filled = (int) lround(pct * CLI_BAR_WIDTH / 100.0);
                char bar[CLI_BAR_WIDTH + 1];

                memset(bar, '#', (size_t) filled);
                memset(bar + filled, '.', (size_t) (CLI_BAR_WIDTH - filled));
                bar[CLI_BAR_WIDTH] = '\0';
                /* \033[K clears what a longer previous label left on the line. */
                printf("\r[%s] %3.0f%%  %s%s\033[K", bar, pct, label, eta);
                fflush(stdout);
                p->drawn = true;
                p->last_pct = pct;
        } else if (!p->last_label || fabs(pct - p->last_pct) >= 5.0 || strcmp(label, p->last_label) != 0) {
                printf("%3.0f%%  %s%s\n", pct, label, eta);
                fflush(stdout);
                p->last_pct = pct;
        }
        g_free(p->last_label);
        p->last_label = g_strdup(label);
}

static void cli_print_errors(const json_t *job, const json_t *steps)
{
        static const char *const keys[] = { "fault", "error", "errors" };
        const json_t *s;
        size_t i;

        for (i = 0; i < G_N_ELEMENTS(keys); i++) {
                if (json_object_get(job, keys[i])) {
                        g_autofree char *text = cli_json_text(job, keys[i]);

                        fprintf(stderr, "ferry: job %s: %s\n", keys[i], text);
                }
        }
        json_array_foreach(steps, i, s) {
                const char *status = json_string_value(json_object_get(s, "status"));
                g_autofree char *type = NULL, *desc = NULL, *host = NULL;

                if (!status || strcmp(status, "failed") != 0)
                        continue;
                type = cli_json_text(s, "type");
                desc = cli_json_text(s, "description");
                host = cli_json_text2(s, "execution_host", "name");
                fprintf(stderr, "ferry: step %s failed on %s: %s\n", type, host, desc);
                for (size_t k = 0; k < G_N_ELEMENTS(keys); k++) {
                        if (json_object_get(s, keys[k])) {
                                g_autofree char *text = cli_json_text(s, keys[k]);

                                fprintf(stderr, "ferry:   %s: %s\n", keys[k], text);
                        }
                }
        }
}

static void cli_print_hosts(const json_t *steps)
{
        const json_t *s;
        size_t i;

        json_array_foreach(steps, i, s) {
                const char *type = json_string_value(json_object_get(s, "type"));
                g_autofree char *host = NULL, *desc = NULL, *status = NULL;

                if (!type || strcmp(type, "copy_data") != 0)
                        continue;
                host = cli_json_text2(s, "execution_host", "name");
                desc = cli_json_text(s, "description");
                status = cli_json_text(s, "status");
                printf("copy_data ran on %s (%s): %s\n", host, status, desc);
        }
}

/* One poll; returns 0, or -1 with the error for the caller to judge. */
static int cli_poll(struct cli_engine *e, const char *job_path, const char *steps_path, const char *disk_path,
                    json_t **ret_job, json_t **ret_steps, json_t **ret_disk, GError **error)
{
        if (cli_engine_get(e, job_path, ret_job, error) < 0)
                return -1;
        if (cli_engine_get_list(e, steps_path, "steps", ret_steps, error) < 0)
                return -1;
        if (disk_path && cli_engine_get(e, disk_path, ret_disk, NULL) < 0)
                *ret_disk = NULL;  /* a copy's new disk may not be listed yet */
        return 0;
}

int cli_wait_job(struct cli_ctx *ctx, struct cli_engine *e, const char *job_id, const char *disk_id,
                 bool show_hosts, GError **error)
{
        g_autofree char *job_path = g_strdup_printf("/api/jobs/%s", job_id);
        g_autofree char *steps_path = g_strdup_printf("/api/jobs/%s/steps", job_id);
        g_autofree char *disk_path = disk_id ? g_strdup_printf("/api/disks/%s", disk_id) : NULL;
        struct cli_progress p = { .tty = !ctx->json && isatty(STDOUT_FILENO), .last_pct = -100 };
        json_t *job = NULL, *steps = NULL, *disk = NULL;
        gint64 unreachable_since = 0, start = g_get_monotonic_time();
        const char *status = NULL;
        int r = -1;

        for (;;) {
                g_autoptr(GError) local = NULL;

                g_clear_pointer(&job, json_decref);
                g_clear_pointer(&steps, json_decref);
                g_clear_pointer(&disk, json_decref);
                if (cli_poll(e, job_path, steps_path, disk_path, &job, &steps, &disk, &local) < 0) {
                        /* Ride out an engine restart; anything else ends the wait. */
                        if (local->code != CLI_ERROR_UNREACHABLE) {
                                g_propagate_error(error, g_steal_pointer(&local));
                                goto out;
                        }
                        if (!unreachable_since)
                                unreachable_since = g_get_monotonic_time();
                        if (g_get_monotonic_time() - unreachable_since > CLI_WAIT_UNREACHABLE_S * G_USEC_PER_SEC) {
                                g_propagate_error(error, g_steal_pointer(&local));
                                goto out;
                        }
                        g_usleep(CLI_POLL_US);
                        continue;
                }
                unreachable_since = 0;

                status = json_string_value(json_object_get(job, "status"));
                if (!status) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent job %s without a status",
                                    job_id);
                        goto out;
                }
                if (!ctx->json) {
                        g_autofree char *label = cli_current_step(steps);
                        g_autofree char *eta = cli_eta_text(job, steps);
                        double pct = cli_json_number(job, "progress", -1);

                        if (pct < 0)
                                pct = cli_json_number(disk, "progress", 0);
                        if (strcmp(status, "finished") == 0)
                                pct = 100;
                        /* Between two steps keep showing the last one rather than a blank. */
                        if (strcmp(status, "started") != 0) {
                                g_free(label);
                                label = g_strdup(status);
                        } else if (!*label) {
                                g_free(label);
                                label = g_strdup(p.last_label ? p.last_label : "starting");
                        }
                        cli_progress_show(&p, pct, label, eta);
                }
                if (strcmp(status, "finished") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "aborted") == 0)
                        break;
                g_usleep(CLI_POLL_US);
        }

        if (p.drawn) {
                printf("\n");
                p.drawn = false;
        }
        if (ctx->json) {
                json_object_set(job, "steps", steps);
                if (disk)
                        json_object_set(job, "disk", disk);
                cli_print_json(job);
        }
        if (strcmp(status, "failed") == 0 || strcmp(status, "aborted") == 0) {
                cli_print_errors(job, steps);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "job %s %s", job_id,
                            strcmp(status, "aborted") == 0 ? "was cancelled" : "failed");
                goto out;
        }
        if (!ctx->json) {
                if (show_hosts)
                        cli_print_hosts(steps);
                printf("job %s finished in %.1f s", job_id,
                       (double) (g_get_monotonic_time() - start) / G_USEC_PER_SEC);
                if (disk) {
                        g_autofree char *name = cli_json_text(disk, "name");
                        g_autofree char *dstatus = cli_json_text(disk, "status");

                        printf("; disk %s is %s", name, dstatus);
                }
                printf("\n");
        }
        r = 0;
out:
        if (p.drawn)
                printf("\n");
        g_free(p.last_label);
        json_decref(job);
        json_decref(steps);
        json_decref(disk);
        return r;
}
