/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The persistent command runtime (DESIGN §7). Every command is a row: kind,
 * parent, state (active | succeeded | failed), phase, immutable params,
 * mutable data, and for leaf commands the host and agent job it started and
 * the destination generation it recorded. Each round advances every active
 * command through the function its kind registered (flows/); a
 * decision is written to the store before the call to a host that acts on
 * it, so after an engine restart every command resumes exactly where it
 * was. A command with a call in flight is "busy" (in memory only) and
 * skipped until the call completes. This file also keeps what every flow
 * uses: creating and finishing commands and steps, calls tied to a command,
 * running children one by one or in parallel, the job events cache, cancel.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "hosts.h"
#include "scheduler.h"
#include "error.h"
#include "eta.h"
#include "log.h"
#include "metrics.h"
#include "uuid.h"

#define JOB_EVENTS_MAX 10000           /* progress cache entries (running jobs of every host) */

/* ---- small helpers ---- */

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

/* A write the runtime cannot do: said in the log; the command goes on from what is recorded. */
void engine_not_recorded(GError **error, const char *what, const char *id)
{
        g_warning("%s of %s is not recorded: %s", what, id ? id : "-", *error ? (*error)->message : "store error");
        g_clear_error(error);
}

static bool busy(struct engine *e, const char *id)
{
        return g_hash_table_contains(e->busy, id);
}

/* Counted: a command may have several calls in flight (a verification's two checksum polls). */
static void busy_set(struct engine *e, const char *id, bool on)
{
        guint n = GPOINTER_TO_UINT(g_hash_table_lookup(e->busy, id));

        if (on)
                g_hash_table_replace(e->busy, g_strdup(id), GUINT_TO_POINTER(n + 1));
        else if (n > 1)
                g_hash_table_replace(e->busy, g_strdup(id), GUINT_TO_POINTER(n - 1));
        else
                g_hash_table_remove(e->busy, id);
}

static gboolean on_kick(gpointer data)
{
        struct engine *e = data;

        e->kick_source = 0;
        engine_commands_tick(e);
        return G_SOURCE_REMOVE;
}

void engine_kick(struct engine *e)
{
        if (!e->kick_source)
                e->kick_source = g_idle_add(on_kick, e);
}

char *engine_cmd_create(struct engine *e, enum engine_kind kind, const char *parent, const char *job_id,
                        const char *step_id, json_t *params)
{
        const char *type = engine_kind_name(kind);
        g_autoptr(GError) error = NULL;
        char *id = fy_uuid_new();

        /* Not recorded: its parent finds no such child and fails (in the parent's transaction, rolled back). */
        if (engine_store_cmd_insert(e->db, id, type, parent, job_id, step_id, params, e->acting_user, engine_now(),
                                    &error) < 0)
                engine_not_recorded(&error, type, id);
        g_debug("command %s (%s) created under %s", id, type, parent ? parent : "-");
        engine_kick(e);
        return id;
}

void engine_cmd_update(struct engine *e, const char *id, enum engine_phase phase, json_t *data)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_cmd_set_phase(e->db, id, engine_phase_name(phase), data, engine_now(), &error) < 0)
                engine_not_recorded(&error, "the phase", id);
}

/* Feeds the ETA of a running step or job (done of total); forgets it once it is not running. */
static void engine_eta_track(const char *prefix, const char *id, bool running, double done, double total)
{
        g_autofree char *key = g_strconcat(prefix, id, NULL);

        if (running)
                engine_eta_observe(engine_eta(), key, g_get_monotonic_time(), done, total);
        else
                engine_eta_forget(engine_eta(), key);
}

/* The step row only (its ETA is fed by the callers). */
static void step_update(struct engine *e, const char *step_id, const char *status, double progress,
                        const char *host)
{
        g_autoptr(GError) error = NULL;

        if (engine_store_step_update(e->db, step_id, status, progress, host, engine_now(), &error) < 0)
                engine_not_recorded(&error, "the status", step_id);
}

void engine_step_update(struct engine *e, const char *step_id, const char *status, double progress,
                        const char *host)
{
        if (!step_id)
                return;
        step_update(e, step_id, status, progress, host);
        /* Started at 0: a host job sent (again, on a retry, maybe resuming a copy on another host): its series
         * starts at the job's first report, not at this 0 (eta.h). */
        if (strcmp(status, "started") == 0 && progress == 0) {
                g_autofree char *key = g_strconcat("step:", step_id, NULL);

                engine_eta_step_sent(engine_eta(), key);
        } else {
                engine_eta_track("step:", step_id, strcmp(status, "started") == 0, progress, 100);
        }
}

/*
 * A running host job's progress. Its ETA is fed in bytes (the agent's
 * bytes_done) so its rate does not jump with qemu-img's 1 % steps; the
 * bytes left are what it moved so far scaled by the share left (progress
 * is exact to 1 %, so the estimate is within a percent or so once the copy
 * is a few percent in). Agents without bytes_done: percent. What is fed
 * and when (not before it copies: a resumed copy's bytes_done starts at its
 * kept prefix) is eta.c's engine_eta_step_job.
 */
bool engine_step_progress(struct engine *e, const char *step_id, double progress, json_t *job)
{
        json_t *bytes = json_object_get(job, "bytes_done");
        g_autofree char *key = NULL;

        if (!step_id)
                return false;
        step_update(e, step_id, "started", progress, NULL);
        if (g_strcmp0(json_string_value(json_object_get(job, "phase")), "verifying_prefix") == 0) {
                /* A resume hashing the prefix the try before kept: no copy progress yet, but its own. */
                json_t *pp = json_object_get(job, "phase_progress");
                g_autofree char *detail = json_is_number(pp) ?
                        g_strdup_printf("verifying the copied prefix (%.0f %%)", json_number_value(pp)) :
                        g_strdup("verifying the copied prefix");
                g_autoptr(GError) error = NULL;

                if (engine_store_step_set_detail(e->db, step_id, detail, &error) < 0)
                        engine_not_recorded(&error, "the status", step_id);
        }
        key = g_strconcat("step:", step_id, NULL);
        return engine_eta_step_job(engine_eta(), key, g_get_monotonic_time(), json_string_value(json_object_get(job, "phase")),
                                   progress, json_is_integer(bytes) ? json_integer_value(bytes) : -1);
}

void engine_job_eta_restart(const char *job_id)
{
        g_autofree char *key = NULL;

        if (!job_id)
                return;
        key = g_strconcat("job:", job_id, NULL);
        engine_eta_forget(engine_eta(), key);
}

/* A step that cannot start yet says why (its detail, until it starts). */
void engine_step_wait(struct engine *e, const char *step_id, const char *why)
{
        if (!step_id)
                return;
        g_autoptr(GError) error = NULL;

        if (engine_store_step_wait(e->db, step_id, why, false, &error) < 0)
                engine_not_recorded(&error, "why it waits", step_id);
}

/* The job's progress is the weighted sum of its steps; a locked disk shows its job's. */
void engine_job_progress_refresh(struct engine *e, const char *job_id)
{
        g_autoptr(GError) error = NULL;
        double p;

        if (!job_id)
                return;
        if (engine_store_job_step_progress(e->db, job_id, &p, &error) < 0 ||
            engine_store_job_set_progress(e->db, job_id, p, &error) < 0)
                engine_not_recorded(&error, "the progress", job_id);
        else
                engine_eta_track("job:", job_id, p < 100.0, p, 100);
}

static GHashTable *job_events;
static GHashTable *job_ended;          /* agent job id → {host, job}: the end an event reported, until its command ends */

void engine_cmd_finish(struct engine *e, json_t *cmd, bool ok, const char *error)
{
        const char *id = js(cmd, "id");
        g_autoptr(GError) store_error = NULL;

        if (js(cmd, "agent_job_id")) {
                g_hash_table_remove(job_events, js(cmd, "agent_job_id"));
                g_hash_table_remove(job_ended, js(cmd, "agent_job_id"));
        }

        if (engine_store_cmd_finish(e->db, id, ok, error, engine_now(), &store_error) < 0)
                engine_not_recorded(&store_error, "the end", id);
        if (js(cmd, "step_id")) {
                engine_step_update(e, js(cmd, "step_id"), ok ? "finished" : "failed", ok ? 100.0 : 0.0, NULL);
                engine_job_progress_refresh(e, js(cmd, "job_id"));
        }
        engine_kick(e);        /* the parent may advance now */
        if (ok)
                g_message("command %s (%s) succeeded", id, js(cmd, "type"));
        else
                engine_event(e, "warning", id, "%s failed: %s", js(cmd, "type"), error ? error : "unknown error");
}

char *engine_job_insert(struct engine *e, const char *description, GError **error)
{
        char *id = fy_uuid_new();

        if (engine_store_job_insert(e->db, id, description, fy_log_correlation_id(), engine_now(), error) < 0)
                g_clear_pointer(&id, g_free);
        return id;
}

char *engine_job_command_start(struct engine *e, enum engine_kind kind, const char *job_id, json_t *params,
                               GError **error)
{
        char *id = engine_cmd_create(e, kind, NULL, job_id, NULL, params);

        if (engine_store_job_set_command(e->db, job_id, id, error) < 0)
                g_clear_pointer(&id, g_free);
        return id;
}

char *engine_step_create(struct engine *e, const char *job_id, const char *type, const char *description,
                         double weight)
{
        g_autoptr(GError) error = NULL;
        char *id = fy_uuid_new();

        if (engine_store_step_insert(e->db, id, job_id, description, type, weight, engine_now(), &error) < 0)
                engine_not_recorded(&error, "step", id);
        return id;
}

/* Child state: "active", "succeeded", "failed", or NULL if it vanished. */
static char *child_state(struct engine *e, const char *child, char **ret_error)
{
        g_autoptr(json_t) row = engine_store_cmd_get(e->db, child, NULL);

        if (!row)
                return NULL;
        if (ret_error)
                *ret_error = g_strdup(js(row, "error"));
        return g_strdup(js(row, "state"));
}

char *engine_children_state(struct engine *e, json_t *data, size_t i, char **ret_error)
{
        g_autofree char *k = g_strdup_printf("%zu", i);
        const char *id = json_string_value(json_object_get(json_object_get(data, "children"), k));

        return id ? child_state(e, id, ret_error) : NULL;
}

/* ---- calls to hosts, tied to a command ---- */

struct call_ctx {
        struct engine *e;
        char *cmd_id;
        engine_cmd_reply_fn done;
        void *extra;
        GDestroyNotify extra_free;
};

/*
 * Work for a command runs under its job's log context: every log line, every
 * event and every agent call (rpcclient sends the correlation id as VDSM's
 * flow_id) made meanwhile carries the job id and the REST request's correlation id.
 */
static void cmd_context_enter(struct engine *e, json_t *cmd, struct fy_log_context *ret_saved)
{
        g_autofree char *corr = engine_store_job_correlation_id(e->db, js(cmd, "job_id"));

        fy_log_context_set(js(cmd, "job_id"), corr, ret_saved);
}

static void on_cmd_reply(json_t *result, const GError *error, void *userdata)
{
        struct call_ctx *c = userdata;
        g_autoptr(json_t) cmd = engine_store_cmd_get(c->e->db, c->cmd_id, NULL);

        busy_set(c->e, c->cmd_id, false);
        if (cmd && strcmp(js(cmd, "state"), "active") == 0) {
                struct fy_log_context saved;

                cmd_context_enter(c->e, cmd, &saved);
                c->done(c->e, cmd, result, error, c->extra);
                fy_log_context_restore(&saved);
        }
        /* Sent (now counted from its row) or not sent at all: no longer a pending pick. */
        g_hash_table_remove(c->e->picking, c->cmd_id);
        if (c->extra_free)
                c->extra_free(c->extra);
        g_free(c->cmd_id);
        g_free(c);
}

void engine_cmd_call(struct engine *e, json_t *cmd, const char *host, const char *method, json_t *params,
                     unsigned timeout_ms, engine_cmd_reply_fn done, void *extra, GDestroyNotify extra_free)
{
        struct call_ctx *c = g_new0(struct call_ctx, 1);

        c->e = e;
        c->cmd_id = g_strdup(js(cmd, "id"));
        c->done = done;
        c->extra = extra;
        c->extra_free = extra_free;
        busy_set(e, c->cmd_id, true);
        engine_host_call(e, host, method, params, timeout_ms, on_cmd_reply, c);
}

bool engine_is_transport_error(const GError *error)
{
        return error && error->domain != FY_ERROR;
}

/*
 * Job polls: every command that asks a host about its agent job in a round
 * is answered by one Host.getJobs per host, sent when the round ends (a
 * call per job per round was most of a move's calls).
 */
#define POLL_IDS_MAX 500               /* job ids per Host.getJobs (the agent takes 1000) */

struct job_poll {
        char *cmd_id;
        engine_cmd_reply_fn done;
        void *extra;
};

struct poll_call {
        struct engine *e;
        GPtrArray *polls;              /* struct job_poll */
        json_t *ids;                   /* the agent job ids asked */
};

static GHashTable *poll_batches;       /* host id → GPtrArray of struct job_poll, this round's */
static GHashTable *poll_ids;           /* host id → json array of the job ids asked */
static bool in_round;

static void job_poll_free(struct job_poll *jp)
{
        g_free(jp->cmd_id);
        g_free(jp);
}

/* A poll's answer is newer than the events before it on its connection: it replaces each asked
 * job's kept event, or drops it when the job no longer runs (stall judgement reads it each round). */
static void refresh_job_events(json_t *asked, json_t *result)
{
        size_t i;
        json_t *v;

        json_array_foreach(asked, i, v) {
                const char *id = json_string_value(v);
                json_t *job = json_object_get(result, id);
                const char *status = json_is_object(job) ? js(job, "status") : NULL;

                if (!g_hash_table_contains(job_events, id))
                        continue;
                if (status && (strcmp(status, "running") == 0 || strcmp(status, "aborting") == 0))
                        g_hash_table_replace(job_events, g_strdup(id), json_incref(job));
                else
                        g_hash_table_remove(job_events, id);
        }
}

static void on_polls_reply(json_t *result, const GError *error, void *userdata)
{
        struct poll_call *pc = userdata;
        struct engine *e = pc->e;

        if (!error && json_is_object(result))
                refresh_job_events(pc->ids, result);
        for (guint i = 0; i < pc->polls->len; i++) {
                struct job_poll *jp = pc->polls->pdata[i];
                g_autoptr(json_t) cmd = NULL;

                busy_set(e, jp->cmd_id, false);
                cmd = engine_store_cmd_get(e->db, jp->cmd_id, NULL);
                if (cmd && strcmp(js(cmd, "state"), "active") == 0) {
                        struct fy_log_context saved;

                        cmd_context_enter(e, cmd, &saved);
                        jp->done(e, cmd, result, error, jp->extra);
                        fy_log_context_restore(&saved);
                }
        }
        g_ptr_array_unref(pc->polls);
        json_decref(pc->ids);
        g_free(pc);
}

static void polls_flush(struct engine *e)
{
        /* Taken whole first: nothing a call does can touch the tables being sent. */
        g_autoptr(GHashTable) batches = g_steal_pointer(&poll_batches);
        g_autoptr(GHashTable) ids = g_steal_pointer(&poll_ids);
        GHashTableIter it;
        gpointer host, polls;

        poll_batches = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_ptr_array_unref);
        poll_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) json_decref);
        g_hash_table_iter_init(&it, batches);
        while (g_hash_table_iter_next(&it, &host, &polls)) {
                struct poll_call *pc = g_new0(struct poll_call, 1);

                pc->e = e;
                pc->polls = g_ptr_array_ref(polls);
                pc->ids = json_incref(g_hash_table_lookup(ids, host));
                engine_host_call(e, host, "Host.getJobs", json_pack("{s:O}", "job_ids", pc->ids),
                                 e->config.host_timeout, on_polls_reply, pc);
        }
}

void engine_cmd_poll_job(struct engine *e, json_t *cmd, const char *host, const char *agent_job_id,
                         engine_cmd_reply_fn done, void *extra)
{
        GPtrArray *polls = g_hash_table_lookup(poll_batches, host);
        json_t *ids = g_hash_table_lookup(poll_ids, host);
        struct job_poll *jp = g_new0(struct job_poll, 1);

        if (polls && json_array_size(ids) >= POLL_IDS_MAX)
                polls_flush(e);        /* a full batch goes now; this one starts the next */
        polls = g_hash_table_lookup(poll_batches, host);
        if (!polls) {
                polls = g_ptr_array_new_with_free_func((GDestroyNotify) job_poll_free);
                ids = json_array();
                g_hash_table_insert(poll_batches, g_strdup(host), polls);
                g_hash_table_insert(poll_ids, g_strdup(host), ids);
        }
        jp->cmd_id = g_strdup(js(cmd, "id"));
        jp->done = done;
        jp->extra = extra;
        g_ptr_array_add(polls, jp);
        json_array_append_new(ids, json_string(agent_job_id));
        busy_set(e, jp->cmd_id, true);
        if (!in_round)
                polls_flush(e);        /* asked outside a round: nothing to share the call with */
}

/* Latest job status pushed by a host's events, by agent job id (declared above cmd_finish). */

json_t *engine_job_event(const char *agent_job_id)
{
        return agent_job_id ? g_hash_table_lookup(job_events, agent_job_id) : NULL;
}

json_t *engine_job_end(const char *agent_job_id, const char *host)
{
        json_t *end = agent_job_id ? g_hash_table_lookup(job_ended, agent_job_id) : NULL;

        /* Only the host the job was sent to speaks for it. */
        if (!end || !host || g_strcmp0(json_string_value(json_object_get(end, "host")), host) != 0)
                return NULL;
        return json_object_get(end, "job");
}

void engine_job_end_forget(const char *agent_job_id)
{
        if (agent_job_id)
                g_hash_table_remove(job_ended, agent_job_id);
}

static void on_host_event(struct engine *e, const char *host_id, const char *method, json_t *params, void *userdata)
{
        /* VDSM's shape: "|jobs|status|<id>" with the job's info itself (and notify_time) as params. */
        const char *key;
        const char *status;

        /* The prefix first: a shorter method has no key past it to point at. */
        if (!g_str_has_prefix(method, "|jobs|status|"))
                return;
        key = method + strlen("|jobs|status|");
        if (!fy_uuid_is_valid(key) || !json_is_object(params))
                return;
        if (!js(params, "id") || g_ascii_strcasecmp(js(params, "id"), key) != 0)
                return;        /* not the job the method names: trust neither */
        status = js(params, "status");
        if (status && (strcmp(status, "done") == 0 || strcmp(status, "failed") == 0 ||
                       strcmp(status, "aborted") == 0)) {
                /* The event is the job's final info (what Host.getJobs would answer, from the same
                 * agent): the command decides from it in the round this kick queues, without a call.
                 * A lost end event only makes the job wait for its poll (engine_cmd_poll_job). */
                g_hash_table_remove(job_events, key);
                if (g_hash_table_size(job_ended) >= JOB_EVENTS_MAX)
                        g_hash_table_remove_all(job_ended);    /* only makes those jobs wait for their poll */
                g_hash_table_replace(job_ended, g_strdup(key), json_pack("{s:s, s:O}", "host", host_id, "job", params));
                engine_kick(e);        /* decide now, not at the next round */
                return;
        }
        if (g_hash_table_size(job_events) >= JOB_EVENTS_MAX)
                g_hash_table_remove_all(job_events);   /* final events lost: progress only, start over */
        g_hash_table_replace(job_events, g_strdup(key), json_incref(params));
}

/* ---- composites ---- */

/*
 * Runs the children a composite needs one after another. data.child is the
 * child running now, data.index how many are done. Returns "active" while
 * children run, "succeeded" when all did, "failed" (with *ret_error) if one failed.
 */

/*
 * A cancelled job stops creating work: composites start no more children.
 * Top-level flows still run their cleanup, and metadata leaves finish.
 */
static bool cancelled(json_t *cmd)
{
        return ji(cmd, "cancel") && js(cmd, "parent_id");
}

enum engine_children engine_run_children(struct engine *e, json_t *cmd, json_t *data, size_t count,
                                         engine_child_factory make, char **ret_error)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        const char *child = js(data, "child");
        size_t index = (size_t) ji(data, "index");

        if (child) {
                g_autofree char *state = child_state(e, child, ret_error);

                if (!state || strcmp(state, "failed") == 0)
                        return ENGINE_CHILDREN_FAILED;
                if (strcmp(state, "active") == 0)
                        return ENGINE_CHILDREN_ACTIVE;
                index++;
                json_object_set_new(data, "index", json_integer((json_int_t) index));
                json_object_del(data, "child");
        }
        /* Cancelled: fail even when all is done, so the flow's cleanup removes what was made. */
        if (cancelled(cmd)) {
                if (ret_error && !*ret_error)
                        *ret_error = g_strdup("cancelled");
                return ENGINE_CHILDREN_FAILED;
        }
        if (index >= count)
                return ENGINE_CHILDREN_SUCCEEDED;
        {
                g_autofree char *id = make(e, cmd, p, index);
                json_object_set_new(data, "child", json_string(id));
        }
        return ENGINE_CHILDREN_ACTIVE;
}

enum engine_children engine_run_children_parallel(struct engine *e, json_t *cmd, json_t *data, size_t count,
                                                  size_t parallel, engine_child_factory make, char **ret_error)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *children = json_object_get(data, "children");
        size_t next = (size_t) ji(data, "next");
        size_t active = 0;
        bool failed = false;
        const char *key;
        json_t *idv;

        if (!json_is_object(children)) {
                children = json_object();
                json_object_set_new(data, "children", children);
        }
        json_object_foreach(children, key, idv) {
                g_autofree char *error = NULL;
                g_autofree char *state = child_state(e, json_string_value(idv), &error);

                if (state && strcmp(state, "active") == 0) {
                        active++;
                } else if (!state || strcmp(state, "failed") == 0) {
                        if (!failed && ret_error)
                                *ret_error = g_steal_pointer(&error);
                        failed = true;
                }
        }
        if (!failed && cancelled(cmd)) {
                if (ret_error)
                        *ret_error = g_strdup("cancelled");
                failed = true;
        }
        if (failed)
                return active ? ENGINE_CHILDREN_ACTIVE : ENGINE_CHILDREN_FAILED;   /* start no more; let the started ones end */
        for (; next < count && active < MAX(parallel, 1); next++, active++) {
                g_autofree char *id = make(e, cmd, p, next);
                g_autofree char *k = g_strdup_printf("%zu", next);

                json_object_set_new(children, k, json_string(id));
        }
        json_object_set_new(data, "next", json_integer((json_int_t) next));
        return active ? ENGINE_CHILDREN_ACTIVE : ENGINE_CHILDREN_SUCCEEDED;
}

json_t *engine_job_cancel(struct engine *e, const char *job_id, GError **error)
{
        g_autoptr(json_t) job = fy_uuid_is_valid(job_id) ?
                engine_store_job_get(e->db, job_id, NULL) : NULL;
        g_autoptr(json_t) top = NULL;

        if (!job) {
                g_set_error(error, ENGINE_ERROR, 404, "no job %.64s", job_id);
                return NULL;
        }
        if (strcmp(js(job, "status"), "started") != 0) {
                g_set_error(error, ENGINE_ERROR, 409, "job %s is %s; only a running job can be cancelled", job_id,
                            js(job, "status"));
                return NULL;
        }
        top = engine_store_cmd_of_job(e->db, job_id, NULL);
        /* Only flows that copy data: stopping a create, removal or snapshot half-way helps nobody. */
        if (!top || strcmp(js(top, "state"), "active") != 0 || !engine_kind_cancellable(engine_cmd_kind(top))) {
                g_set_error(error, ENGINE_ERROR, 409, "job %s (%s) cannot be cancelled; moves, copies, clones and "
                            "template creations can", job_id, top ? js(top, "type") : "no command");
                return NULL;
        }
        if (!engine_kind_cancellable_in(engine_cmd_kind(top), engine_cmd_phase(top))) {
                g_set_error(error, ENGINE_ERROR, 409, "job %s is %s; it can no longer be cancelled", job_id,
                            engine_phase_doing(engine_cmd_phase(top)));
                return NULL;
        }
        if (engine_store_cmd_cancel_job(e->db, job_id, engine_now(), error) < 0)
                return NULL;
        engine_event(e, "normal", js(top, "id"), "cancel requested for job %s (%s)", job_id, js(job, "description"));
        engine_kick(e);
        return json_pack("{s:{s:s, s:s}}", "job", "id", job_id, "status", "cancelling");
}

/* How each kind advances: registered by the files of flows/ at start-up. */
static struct {
        engine_flow_fn advance;
        bool in_transaction;
} flows[ENGINE_KIND__COUNT];

void engine_flow_register(enum engine_kind kind, engine_flow_fn advance, bool in_transaction)
{
        g_return_if_fail(kind >= 0 && kind < ENGINE_KIND__COUNT);
        flows[kind].advance = advance;
        flows[kind].in_transaction = in_transaction;
}

static void cmd_advance(struct engine *e, json_t *cmd)
{
        enum engine_kind kind = engine_cmd_kind(cmd);
        g_autoptr(GError) error = NULL;

        if (kind == ENGINE_KIND_UNKNOWN || !flows[kind].advance || engine_cmd_phase(cmd) == ENGINE_PHASE_UNKNOWN) {
                /* Written by a newer engine, or damaged: never run it as something else. */
                g_autofree char *why = g_strdup_printf("this engine does not know how to run a \"%.64s\" command in "
                                                       "phase \"%.64s\"", js(cmd, "type"), js(cmd, "phase"));

                engine_cmd_finish(e, cmd, false, why);
                return;
        }
        if (!flows[kind].in_transaction) {
                flows[kind].advance(e, cmd);
                return;
        }
        /* A child is created and recorded in its parent in one transaction: no orphans after a crash. */
        if (engine_store_begin(e->db, &error) < 0) {
                engine_not_recorded(&error, "a round", js(cmd, "id"));
                return;
        }
        flows[kind].advance(e, cmd);
        if (engine_store_commit(e->db, &error) < 0)
                engine_not_recorded(&error, "a round", js(cmd, "id"));        /* rolled back: the next round redoes it */
}

/*
 * One coordinator round advances every active command once. At scale (ten
 * thousand commands on PostgreSQL, each a few round trips to the server) a
 * round takes seconds: done in one go it would hold the main loop, leave
 * hosts' poll replies unread past their timeout and have busy hosts taken
 * for dead. So a round yields after round_budget_ms and goes on from where
 * it stopped at the next kick or tick; a kick while a round is under way
 * continues it rather than starting again, so kicks (one per command
 * created) coalesce instead of each costing a whole round. Below the budget
 * a round is one call, as before.
 */
void engine_commands_tick(struct engine *e)
{
        gint64 deadline = e->round_budget_ms ? g_get_monotonic_time() + e->round_budget_ms * G_GINT64_CONSTANT(1000)
                                             : 0;

        if (!e->round_left) {
                g_autoptr(json_t) rows = engine_store_cmd_active(e->db, NULL);
                size_t i;
                json_t *row;

                if (!rows)
                        return;
                e->round_left = g_ptr_array_new_full(json_array_size(rows), g_free);
                e->round_pos = 0;
                json_array_foreach(rows, i, row)
                        g_ptr_array_add(e->round_left, g_strdup(js(row, "id")));
        }
        in_round = true;
        e->round_serial++;
        e->round_running = true;
        for (unsigned n = 1; e->round_pos < e->round_left->len; n++) {
                const char *id = e->round_left->pdata[e->round_pos++];
                /* Re-read: an earlier command of this round, or the main loop between two slices, may have changed it. */
                g_autoptr(json_t) cur = NULL;

                if (busy(e, id))
                        continue;
                cur = engine_store_cmd_get(e->db, id, NULL);
                if (cur && strcmp(js(cur, "state"), "active") == 0) {
                        struct fy_log_context saved;

                        cmd_context_enter(e, cur, &saved);
                        cmd_advance(e, cur);
                        fy_log_context_restore(&saved);
                }
                if ((deadline && g_get_monotonic_time() >= deadline) || (e->round_slice_max && n >= e->round_slice_max))
                        break;
        }
        in_round = false;
        e->round_running = false;
        polls_flush(e);        /* the round's job polls: one call per host */
        if (e->round_pos >= e->round_left->len)
                g_clear_pointer(&e->round_left, g_ptr_array_unref);
        else
                engine_kick(e);        /* the rest after what the main loop has waiting */
}

static void on_host_state(struct engine *e, const char *host_id, const char *status, void *userdata)
{
        engine_kick(e);        /* a copy there may be lost, or a waiting one may start */
}

int engine_commands_init(struct engine *e, GError **error)
{
        static const struct engine_host_listener listener = { on_host_event, on_host_state, NULL };

        engine_hosts_subscribe(e, &listener);
        e->busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        e->picking = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) engine_pick_free);
        job_events = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) json_decref);
        job_ended = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) json_decref);
        poll_batches = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_ptr_array_unref);
        poll_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) json_decref);
        return 0;
}
