/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdio.h>
#include <string.h>

#include <glib.h>

#include "log.h"

/* int for g_atomic: a SIGHUP reload changes it while other threads log. */
static int log_threshold = G_LOG_LEVEL_MESSAGE;
static const char *log_program = "ferry";

static void log_handler(const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
        g_autoptr(GDateTime) now = NULL;
        g_autofree char *ts = NULL;
        const char *name;

        if ((int) (level & G_LOG_LEVEL_MASK) > g_atomic_int_get(&log_threshold))
                return;
        switch (level & G_LOG_LEVEL_MASK) {
        case G_LOG_LEVEL_ERROR: name = "ERROR"; break;
        case G_LOG_LEVEL_CRITICAL: name = "CRITICAL"; break;
        case G_LOG_LEVEL_WARNING: name = "WARNING"; break;
        case G_LOG_LEVEL_MESSAGE: name = "INFO"; break;
        case G_LOG_LEVEL_INFO: name = "INFO"; break;
        default: name = "DEBUG"; break;
        }
        now = g_date_time_new_now_local();
        ts = g_date_time_format(now, "%Y-%m-%d %H:%M:%S.%f");
        ts[23] = '\0';         /* milliseconds */
        fprintf(stderr, "%s %s [%s] %s\n", ts, name, domain ? domain : log_program, message);
}

void fy_log_setup(const char *level, const char *program)
{
        if (strcmp(level, "debug") == 0)
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_DEBUG);
        else if (strcmp(level, "info") == 0)
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_INFO);
        else if (strcmp(level, "warning") == 0)
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_WARNING);
        else
                g_atomic_int_set(&log_threshold, G_LOG_LEVEL_CRITICAL);
        log_program = program;
        g_log_set_default_handler(log_handler, NULL);
}

bool fy_log_level_valid(const char *level)
{
        return strcmp(level, "debug") == 0 || strcmp(level, "info") == 0 ||
               strcmp(level, "warning") == 0 || strcmp(level, "error") == 0;
}
