/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The event log: what an operator reads in GET /api/events, also written to the daemon's log. */
#include <string.h>

#include "clock.h"
#include "events.h"
#include "log.h"

void engine_event(struct engine *e, const char *severity, const char *command_id, const char *fmt, ...)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *msg = NULL;
        g_autofree char *user = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (strcmp(severity, "normal") == 0)
                g_message("%s", msg);
        else
                g_warning("%s", msg);
        /* The log context is the request's or command's (rest.c, commands.c): the event carries its correlation id.
         * Outside a request, the command's flow acts for whoever started it. */
        if (!e->acting_user && command_id)
                user = engine_store_command_user(e->db, command_id);
        if (engine_store_event_add(e->db, engine_now(), severity, msg, command_id, fy_log_correlation_id(),
                                   e->acting_user ? e->acting_user : user, &error) < 0)
                g_warning("the event above is not kept: %s", error->message);
}
