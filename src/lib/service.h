/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The systemd service protocol (sd_notify) for Type=notify units: readiness,
 * reloads, stopping, and watchdog keep-alives sent from the main loop, so a
 * daemon whose main loop hangs is restarted. Every call is a no-op when the
 * daemon does not run under systemd (no NOTIFY_SOCKET in the environment).
 */

/* READY=1 with a STATUS= line; the first call also starts the watchdog pings if WATCHDOG_USEC is set. */
void fy_service_ready(const char *status);
/* RELOADING=1: a SIGHUP reload is under way; call fy_service_ready() when done. */
void fy_service_reloading(void);
void fy_service_stopping(void);
