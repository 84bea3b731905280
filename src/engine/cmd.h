/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The command coordinator's building blocks (commands.c), for files that add
 * their own composite commands (flows). A flow is a row in `commands`; its
 * advance function runs inside a database transaction every round in which
 * the command is active and has no call in flight, and must be idempotent:
 * read its state from the row (phase, data), create children, finish.
 */
#include "engine.h"

static inline const char *engine_js(json_t *o, const char *key)
{
        return json_string_value(json_object_get(o, key));
}

static inline gint64 engine_ji(json_t *o, const char *key)
{
        return json_integer_value(json_object_get(o, key));
}

/* The params / data columns of a command row, parsed (never NULL). */
static inline json_t *engine_jparse(json_t *row, const char *key)
{
        const char *text = engine_js(row, key);
        json_t *v = text ? json_loads(text, 0, NULL) : NULL;

        return v ? v : json_object();
}

/* Creates an active command (returns its id) and queues a round. */
char *engine_cmd_create(struct engine *e, const char *type, const char *parent, const char *job_id,
                        const char *step_id, json_t *params);
void engine_cmd_update(struct engine *e, const char *id, const char *phase, json_t *data);
/* Ends a command; a failed one is logged as an event. Marks its step finished/failed. */
void engine_cmd_finish(struct engine *e, json_t *cmd, bool ok, const char *error);

char *engine_step_create(struct engine *e, const char *job_id, const char *type, const char *description,
                         double weight);
void engine_step_update(struct engine *e, const char *step_id, const char *status, double progress,
                        const char *host);
void engine_job_progress_refresh(struct engine *e, const char *job_id);

/*
 * Runs `count` children of cmd one after another (data.child, data.index);
 * returns "active", "succeeded" or "failed" (with *ret_error). The caller
 * writes data back with engine_cmd_update.
 */
typedef char *(*engine_child_factory)(struct engine *e, json_t *cmd, json_t *p, size_t index);
const char *engine_run_children(struct engine *e, json_t *cmd, json_t *data, size_t count,
                                engine_child_factory make, char **ret_error);
/*
 * Runs `count` children at once, at most `parallel` active at a time
 * (data.children: index → id, data.next); same results as engine_run_children,
 * but waits for every started child before reporting a failure.
 */
const char *engine_run_children_parallel(struct engine *e, json_t *cmd, json_t *data, size_t count,
                                         size_t parallel, engine_child_factory make, char **ret_error);

/*
 * Existing command types a flow can use as children (params as in commands.c):
 *   copy_image_group_with_data  {sd, img, volumes[], src_sd, src_img, src_volumes[]}
 *                               creates the volumes on the SPM, then copies src_volumes[i] → volumes[i];
 *                               one destination volume for a source leaf copies the chain collapsed.
 *   clone_image_group_volumes_structure {sd, img, volumes[]}
 *   remove_image {sd, img}
 * volumes[] entries: {id, parent|null, capacity, format raw|cow, sparse, structure_weight, data_weight}.
 */

typedef void (*engine_flow_fn)(struct engine *e, json_t *cmd);
/* Registers the advance function of a composite command type (at startup). */
void engine_flow_register(const char *type, engine_flow_fn advance);
