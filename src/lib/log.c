/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include <glib.h>
#include <systemd/sd-journal.h>

#include "log.h"

/* int for g_atomic: a SIGHUP reload changes it while other threads log. */
static int log_threshold = G_LOG_LEVEL_MESSAGE;
static const char *log_program = "ferry";
static char *log_host;
static bool log_journal;

static __thread struct fy_log_context log_ctx;

void fy_log_escape(GString *out, const char *s, gssize len)
{
        const char *end = s + (len < 0 ? (gssize) strlen(s) : len);

        while (s < end) {
                unsigned char c = (unsigned char) *s;
                gunichar u;

                if (c == '\\') {
                        g_string_append(out, "\\\\");
                        s++;
                } else if (c == '\n') {
                        g_string_append(out, "\\n");
                        s++;
                } else if (c == '\r') {
                        g_string_append(out, "\\r");
                        s++;
                } else if (c == '\t') {
                        g_string_append(out, "\\t");
                        s++;
                } else if (c < 0x20 || c == 0x7f) {
                        g_string_append_printf(out, "\\x%02x", c);
                        s++;
                } else if (c < 0x80) {
                        g_string_append_c(out, (char) c);
                        s++;
                } else if ((u = g_utf8_get_char_validated(s, end - s)) == (gunichar) -1 || u == (gunichar) -2) {
                        g_string_append_printf(out, "\\x%02x", c);   /* not UTF-8: one byte at a time */
                        s++;
                } else {
                        /* C1 controls (NEL) and the Unicode line/paragraph separators end lines in some viewers. */
                        if ((u >= 0x80 && u < 0xa0) || u == 0x2028 || u == 0x2029)
                                g_string_append_printf(out, "\\u%04x", u);
                        else
                                g_string_append_len(out, s, g_utf8_next_char(s) - s);
                        s = g_utf8_next_char(s);
                }
        }
}

static int level_priority(GLogLevelFlags level, const char **ret_name)
{
        switch (level & G_LOG_LEVEL_MASK) {
        case G_LOG_LEVEL_ERROR: *ret_name = "ERROR"; return LOG_ERR;
        case G_LOG_LEVEL_CRITICAL: *ret_name = "CRITICAL"; return LOG_CRIT;
        case G_LOG_LEVEL_WARNING: *ret_name = "WARNING"; return LOG_WARNING;
        case G_LOG_LEVEL_MESSAGE: *ret_name = "INFO"; return LOG_NOTICE;
        case G_LOG_LEVEL_INFO: *ret_name = "INFO"; return LOG_INFO;
        default: *ret_name = "DEBUG"; return LOG_DEBUG;
        }
}

static void log_handler(const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
        g_autoptr(GString) line = g_string_sized_new(256);
        const char *name;
        int priority;

        if ((int) (level & G_LOG_LEVEL_MASK) > g_atomic_int_get(&log_threshold))
                return;
        priority = level_priority(level, &name);
        if (log_journal) {
                g_autofree char *f_msg = NULL, *f_prio = NULL, *f_ident = NULL, *f_host = NULL;
                g_autofree char *f_job = NULL, *f_corr = NULL;
                struct iovec iov[6];
                int n = 0;

                fy_log_escape(line, message ? message : "", -1);
                f_msg = g_strconcat("MESSAGE=", line->str, NULL);
                f_prio = g_strdup_printf("PRIORITY=%d", priority);
                f_ident = g_strconcat("SYSLOG_IDENTIFIER=", domain ? domain : log_program, NULL);
                iov[n++] = (struct iovec) { f_msg, strlen(f_msg) };
                iov[n++] = (struct iovec) { f_prio, strlen(f_prio) };
                iov[n++] = (struct iovec) { f_ident, strlen(f_ident) };
                if (log_host) {
                        f_host = g_strconcat("FERRY_HOST=", log_host, NULL);
                        iov[n++] = (struct iovec) { f_host, strlen(f_host) };
                }
                if (*log_ctx.job_id) {
                        f_job = g_strconcat("FERRY_JOB_ID=", log_ctx.job_id, NULL);
                        iov[n++] = (struct iovec) { f_job, strlen(f_job) };
                }
                if (*log_ctx.correlation_id) {
                        f_corr = g_strconcat("FERRY_CORRELATION_ID=", log_ctx.correlation_id, NULL);
                        iov[n++] = (struct iovec) { f_corr, strlen(f_corr) };
                }
                if (sd_journal_sendv(iov, n) >= 0)
                        return;
                g_string_truncate(line, 0);    /* journal gone: fall back to stderr */
        }
        {
                g_autoptr(GDateTime) now = g_date_time_new_now_local();
                g_autofree char *ts = g_date_time_format(now, "%Y-%m-%d %H:%M:%S.%f");

                ts[23] = '\0';         /* milliseconds */
                g_string_append_printf(line, "%s %s [%s] ", ts, name, domain ? domain : log_program);
        }
        fy_log_escape(line, message ? message : "", -1);
        if (*log_ctx.job_id) {
                g_string_append(line, " job_id=");
                fy_log_escape(line, log_ctx.job_id, -1);
        }
        if (*log_ctx.correlation_id) {
                g_string_append(line, " flow_id=");
                fy_log_escape(line, log_ctx.correlation_id, -1);
        }
        g_string_append_c(line, '\n');
        fwrite(line->str, 1, line->len, stderr);
}

/* systemd sets $JOURNAL_STREAM to "device:inode" of the stream it connected; trust it only if stderr is that stream. */
static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        char extra;

        if (!e || sscanf(e, "%llu:%llu%c", &dev, &ino, &extra) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void fy_log_set_level(const char *level)
{
        if (strcmp(level, "debug") == 0)
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_DEBUG);
        else if (strcmp(level, "info") == 0)
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_INFO);
        else if (strcmp(level, "warning") == 0)
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_WARNING);
        else
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_CRITICAL);
}

void fy_log_setup(const char *level, const char *program, const char *host)
{
        fy_log_set_level(level);
        log_program = program;
        g_free(log_host);
        log_host = g_strdup(host);
        log_journal = stderr_is_journal();
        g_log_set_default_handler(log_handler, NULL);
}

bool fy_log_level_valid(const char *level)
{
        return strcmp(level, "debug") == 0 || strcmp(level, "info") == 0 ||
               strcmp(level, "warning") == 0 || strcmp(level, "error") == 0;
}

void fy_log_context_set(const char *job_id, const char *correlation_id, struct fy_log_context *ret_saved)
{
        if (ret_saved)
                *ret_saved = log_ctx;
        g_strlcpy(log_ctx.job_id, job_id ? job_id : "", sizeof(log_ctx.job_id));
        g_strlcpy(log_ctx.correlation_id, correlation_id ? correlation_id : "", sizeof(log_ctx.correlation_id));
}

void fy_log_context_restore(const struct fy_log_context *saved)
{
        log_ctx = *saved;
}

const char *fy_log_correlation_id(void)
{
        return *log_ctx.correlation_id ? log_ctx.correlation_id : NULL;
}

bool fy_log_correlation_id_valid(const char *id)
{
        size_t n = strlen(id);

        if (n == 0 || n > FY_LOG_CORRELATION_ID_MAX)
                return false;
        for (const char *p = id; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr("._:-", *p))
                        return false;
        return true;
}
