/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A host job that runs but moves no further for stall_timeout is flagged:
 * its step's detail "stalled", an event, ferry_engine_stalls_total. With
 * stall_action = retry it is also aborted (the runtime sends Job.abort) and
 * its "aborted" end retried on another host. Progress is what the agent
 * reports; a job still pending for a slot does not run, so its clock starts
 * when it does. The time of the last progress is kept in the command's data,
 * so an engine restart does not forget a stall in the making.
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "metrics.h"
#include "stall.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static void save(struct engine *e, json_t *cmd, json_t *data)
{
        engine_cmd_update(e, js(cmd, "id"), engine_cmd_phase(cmd), data);
}

static void mark_step(struct engine *e, json_t *cmd)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_step_set_detail(e->db, js(cmd, "step_id"), "stalled", &error) < 0)
                engine_not_recorded(&error, "the stall", js(cmd, "id"));
}

bool engine_stall_abort(json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        return json_is_true(json_object_get(data, "stall_abort")) && !ji(cmd, "cancel");
}

void engine_stall_check(struct engine *e, json_t *cmd, const char *status, double progress)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        const char *noun = engine_kind_name(engine_cmd_kind(cmd));
        gint64 now = engine_now();
        gint64 still;
        bool retry;

        if (strcmp(status, "running") != 0) {
                if (json_object_get(data, "progress_at")) {
                        json_object_del(data, "progress_at");
                        save(e, cmd, data);
                }
                return;
        }
        if (!json_object_get(data, "progress_at") ||
            progress > json_number_value(json_object_get(data, "progress_seen"))) {
                if (json_is_true(json_object_get(data, "stalled")) && !json_object_get(data, "stall_abort"))
                        engine_event(e, "normal", js(cmd, "id"), "%s job %s on host %s progresses again (%.0f %%)",
                                     noun, js(cmd, "agent_job_id"), js(cmd, "host"), progress);
                if (!json_object_get(data, "stall_abort"))
                        json_object_del(data, "stalled");
                json_object_set_new(data, "progress_seen", json_real(progress));
                json_object_set_new(data, "progress_at", json_integer(now));
                save(e, cmd, data);
                return;
        }
        if (json_is_true(json_object_get(data, "stalled"))) {
                mark_step(e, cmd);        /* engine_step_update cleared it with this poll's progress: still stalled */
                return;
        }
        still = now - ji(data, "progress_at");
        if (still < (gint64) e->config.stall_timeout)
                return;
        retry = strcmp(e->config.stall_action, "retry") == 0 && !ji(cmd, "cancel");
        json_object_set_new(data, "stalled", json_true());
        if (retry)
                json_object_set_new(data, "stall_abort", json_true());
        save(e, cmd, data);
        mark_step(e, cmd);
        engine_metrics_count_stall();
        engine_event(e, "warning", js(cmd, "id"), "%s job %s on host %s made no progress for %" G_GINT64_FORMAT
                     " s (at %.0f %%): stalled%s", noun, js(cmd, "agent_job_id"), js(cmd, "host"), still,
                     progress, retry ? "; aborting it to try on another host" : "");
        if (retry)
                engine_kick(e);        /* the runtime's watch sends the abort */
}
