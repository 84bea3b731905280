/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <systemd/sd-daemon.h>

#include "service.h"

static bool watchdog_started;

static gboolean watchdog_ping(gpointer data)
{
        sd_notify(0, "WATCHDOG=1");
        return G_SOURCE_CONTINUE;
}

void fy_service_ready(const char *status)
{
        uint64_t usec = 0;

        sd_notifyf(0, "READY=1\nSTATUS=%s", status);
        if (watchdog_started)
                return;
        watchdog_started = true;
        /* > 0 only when systemd set WATCHDOG_USEC for this very process (WATCHDOG_PID). */
        if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
                /* Twice per period, as sd_watchdog_enabled(3) advises; at least every 10 ms. */
                guint interval_ms = (guint) MAX(usec / 2 / 1000, 10);

                g_timeout_add(interval_ms, watchdog_ping, NULL);
                sd_notify(0, "WATCHDOG=1");
                g_message("systemd watchdog: pinging every %u ms", interval_ms);
        }
}

void fy_service_reloading(void)
{
        sd_notify(0, "RELOADING=1");
}

void fy_service_stopping(void)
{
        sd_notify(0, "STOPPING=1");
}
