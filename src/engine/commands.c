/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Persistent commands (DESIGN §7). Every command is a row: type, parent,
 * state (active | succeeded | failed), phase, immutable params, mutable
 * data, and for leaf commands the host and agent job it started and the
 * destination generation it recorded. The coordinator advances every active
 * command each round; a decision is written to the database before the call
 * to a host that acts on it, so after an engine restart every command
 * resumes exactly where it was. A command with a call in flight is "busy"
 * (in memory only) and skipped until the call completes.
 *
 * Leaf commands drive one agent job: create_volume_container and
 * remove_image on the SPM, copy_data on a host the scheduler picks.
 * Composite commands run children one after another:
 *   create_disk           → clone_image_group_volumes_structure
 *   move_disk / copy_disk → copy_image_group_with_data → (clone_image_group_volumes_structure,
 *                                                          copy_image_group_volumes_data → copy_data…)
 *                           then remove_image of the source (move) or of the destination on failure
 *   remove_disk           → remove_image
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "generation.h"
#include "hosts.h"
#include "inventory.h"
#include "scheduler.h"
#include "error.h"
#include "eta.h"
#include "stall.h"
#include "log.h"
#include "metrics.h"
#include "uuid.h"

#define SPM_CALL_TIMEOUT_MS 30000
#define COPY_CALL_TIMEOUT_MS 30000
#define JOB_EVENTS_MAX 10000           /* progress cache entries (running jobs of every host) */

/* ---- small helpers ---- */

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static bool busy(struct engine *e, const char *id)
{
        return g_hash_table_contains(e->busy, id);
}

static void busy_set(struct engine *e, const char *id, bool on)
{
        if (on)
                g_hash_table_add(e->busy, g_strdup(id));
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
        char *id = fy_uuid_new();

        engine_db_exec(e->db, NULL,
                       "INSERT INTO commands (id, type, parent_id, job_id, step_id, state, params, created, updated, cancel, "
                       "user_name) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, "
                       "COALESCE((SELECT cancel FROM commands WHERE id = ?), 0), "
                       "COALESCE(?, (SELECT user_name FROM commands WHERE id = ?)))",
                       "sssssjiisss", id, type, parent, job_id, step_id, params, engine_now(), engine_now(), parent,
                       e->acting_user, parent);
        g_debug("command %s (%s) created under %s", id, type, parent ? parent : "-");
        engine_kick(e);
        return id;
}

void engine_cmd_update(struct engine *e, const char *id, enum engine_phase phase, json_t *data)
{
        engine_db_exec(e->db, NULL, "UPDATE commands SET phase = ?, data = ?, updated = ? WHERE id = ?", "sjis",
                       engine_phase_name(phase), data, engine_now(), id);
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
        engine_db_exec(e->db, NULL,
                       "UPDATE steps SET status = ?, progress = MAX(progress, ?), detail = NULL, "
                       "execution_host = COALESCE(?, execution_host), "
                       "end_time = CASE WHEN ? IN ('finished', 'failed') THEN ? ELSE end_time END WHERE id = ?",
                       "sdssis", status, progress, host, status, engine_now(), step_id);
}

void engine_step_update(struct engine *e, const char *step_id, const char *status, double progress,
                        const char *host)
{
        if (!step_id)
                return;
        step_update(e, step_id, status, progress, host);
        engine_eta_track("step:", step_id, strcmp(status, "started") == 0, progress, 100);
}

/*
 * A running host job's progress. Its ETA is fed in bytes (the agent's
 * bytes_done) so its rate does not jump with qemu-img's 1 % steps; the
 * bytes left are what it moved so far scaled by the share left (progress
 * is exact to 1 %, so the estimate is within a percent or so once the copy
 * is a few percent in). Agents without bytes_done: percent.
 */
static void step_progress(struct engine *e, const char *step_id, double progress, json_t *job)
{
        json_t *bytes = json_object_get(job, "bytes_done");
        double done = (double) json_integer_value(bytes);

        if (!step_id)
                return;
        step_update(e, step_id, "started", progress, NULL);
        if (!json_is_integer(bytes))
                engine_eta_track("step:", step_id, true, progress, 100);
        else
                engine_eta_track("step:", step_id, true, done, progress >= 1.0 ? done * 100.0 / progress : -1);
}

/* A step that cannot start yet says why (its detail, until it starts). */
static void step_wait(struct engine *e, const char *step_id, const char *why)
{
        if (!step_id)
                return;
        engine_db_exec(e->db, NULL, "UPDATE steps SET status = 'waiting', detail = ? WHERE id = ? AND detail IS NOT ?",
                       "sss", why, step_id, why);
}

/* The job's progress is the weighted sum of its steps; a locked disk shows its job's. */
void engine_job_progress_refresh(struct engine *e, const char *job_id)
{
        g_autoptr(json_t) row = NULL;
        double p;

        if (!job_id)
                return;
        row = engine_db_query_one(e->db, NULL,
                                  "SELECT COALESCE(SUM(weight * progress) / 100.0, 0) AS p FROM steps WHERE job_id = ?",
                                  "s", job_id);
        if (!row)
                return;
        p = MIN(json_number_value(json_object_get(row, "p")), 100.0);
        engine_db_exec(e->db, NULL, "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'started'", "ds", p, job_id);
        engine_db_exec(e->db, NULL, "UPDATE disks SET progress = ? WHERE job_id = ? AND status = 'locked'", "ds", p, job_id);
        engine_eta_track("job:", job_id, p < 100.0, p, 100);
}

static GHashTable *job_events;

void engine_cmd_finish(struct engine *e, json_t *cmd, bool ok, const char *error)
{
        const char *id = js(cmd, "id");

        if (js(cmd, "agent_job_id"))
                g_hash_table_remove(job_events, js(cmd, "agent_job_id"));

        engine_db_exec(e->db, NULL, "UPDATE commands SET state = ?, error = ?, updated = ? WHERE id = ?", "ssis",
                       ok ? "succeeded" : "failed", error, engine_now(), id);
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

char *engine_step_create(struct engine *e, const char *job_id, const char *type, const char *description,
                         double weight)
{
        char *id = fy_uuid_new();

        engine_db_exec(e->db, NULL,
                       "INSERT INTO steps (id, job_id, description, type, status, weight, start_time) "
                       "VALUES (?, ?, ?, ?, 'pending', ?, ?)", "ssssdi", id, job_id, description, type, weight,
                       engine_now());
        return id;
}

/* Child state: "active", "succeeded", "failed", or NULL if it vanished. */
static char *child_state(struct engine *e, const char *child, char **ret_error)
{
        g_autoptr(json_t) row = engine_db_query_one(e->db, NULL, "SELECT state, error FROM commands WHERE id = ?", "s", child);

        if (!row)
                return NULL;
        if (ret_error)
                *ret_error = g_strdup(js(row, "error"));
        return g_strdup(js(row, "state"));
}

/* ---- calls to hosts, tied to a command ---- */

struct call_ctx {
        struct engine *e;
        char *cmd_id;
        void (*done)(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra);
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
        g_autoptr(json_t) cmd = engine_db_query_one(c->e->db, NULL, "SELECT * FROM commands WHERE id = ?", "s", c->cmd_id);

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

static void cmd_call(struct engine *e, json_t *cmd, const char *host, const char *method, json_t *params,
                     unsigned timeout_ms,
                     void (*done)(struct engine *, json_t *, json_t *, const GError *, void *),
                     void *extra, GDestroyNotify extra_free)
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

static bool is_transport_error(const GError *error)
{
        return error && error->domain != FY_ERROR;
}

/* Latest job status pushed by a host's events, by agent job id (declared above cmd_finish). */

static void on_host_event(struct engine *e, const char *host_id, const char *method, json_t *params, void *userdata)
{
        /* VDSM's shape: "|jobs|status|<id>" with the job's info itself (and notify_time) as params. */
        const char *key, *status;

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
                /* Only running jobs' progress is read from here; the end comes from Host.getJobs. */
                g_hash_table_remove(job_events, key);
                engine_kick(e);        /* learn the outcome now, not at the next round */
                return;
        }
        if (g_hash_table_size(job_events) >= JOB_EVENTS_MAX)
                g_hash_table_remove_all(job_events);   /* final events lost: progress only, start over */
        g_hash_table_replace(job_events, g_strdup(key), json_incref(params));
}

/* ---- leaf: an agent job (Volume.create / Image.delete / SDM.copy_data …) ---- */

/*
 * Jobs that change one volume's data in place on a host the scheduler
 * picks, under that volume's lease and generation (params.dst): a copy into
 * it, a merge into it (its base), a sparsify of it. They share the
 * recovery: a lost host is decided from the volume (LEGAL at recorded+1 is
 * done), fenced (recorded+3) and retried elsewhere.
 */
static bool host_job(enum engine_kind k)
{
        return k == ENGINE_KIND_COPY_DATA || k == ENGINE_KIND_MERGE || k == ENGINE_KIND_SPARSIFY_VOLUME;
}

/*
 * What another host would refuse too: the generation moved (someone else's
 * change), no space, and a merge or sparsify the volumes do not allow
 * (252, 2009, 920, 921, 219 a template's volume).
 */
static bool refused_everywhere(gint64 code)
{
        static const gint64 codes[] = { FY_ERR_GENERATION_MISMATCH, FY_ERR_NO_SPACE, FY_ERR_MERGE, FY_ERR_UNSUPPORTED,
                                        FY_ERR_NOT_IN_CHAIN, FY_ERR_WRONG_PARENT, FY_ERR_SHARED_VOLUME };

        for (size_t i = 0; i < G_N_ELEMENTS(codes); i++)
                if (codes[i] == code)
                        return true;
        return false;
}

static bool persistent(json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        return json_is_true(json_object_get(p, "persistent"));
}

/*
 * Another try from scratch (phase ''), or the end. A host that failed the
 * command is remembered in data.exclude so the next try goes elsewhere.
 */
static void leaf_retry_or_fail(struct engine *e, json_t *cmd, unsigned max_attempts, const char *why, bool exclude_host)
{
        g_autoptr(json_t) old = jparse(cmd, "data");
        g_autoptr(json_t) data = json_object();
        json_t *exclude = json_object_get(old, "exclude");

        if (persistent(cmd)) {
                /* A cleanup: retried until done, ever less often (the sweeper is the backstop). */
                g_autoptr(json_t) later = json_pack("{s:I}", "next_try",
                                                    (json_int_t) (engine_now() + MIN(30 << MIN(ji(cmd, "attempts"), 5), 600)));

                engine_event(e, "warning", js(cmd, "id"), "%s: %s; trying again later (attempt %" G_GINT64_FORMAT ")",
                             js(cmd, "type"), why, ji(cmd, "attempts"));
                engine_db_exec(e->db, NULL, "UPDATE commands SET phase = '', host = NULL, agent_job_id = NULL, data = ?, "
                                            "updated = ? WHERE id = ?", "jis", later, engine_now(), js(cmd, "id"));
                return;
        }
        if (ji(cmd, "attempts") >= (gint64) max_attempts) {
                engine_cmd_finish(e, cmd, false, why);
                return;
        }
        exclude = json_is_array(exclude) ? json_copy(exclude) : json_array();
        if (exclude_host && js(cmd, "host"))
                json_array_append_new(exclude, json_string(js(cmd, "host")));
        json_object_set_new(data, "exclude", exclude);
        engine_metrics_count_retry(js(cmd, "type"));
        engine_event(e, "warning", js(cmd, "id"), "%s: %s; retrying (attempt %" G_GINT64_FORMAT " of %u)%s",
                     js(cmd, "type"), why, ji(cmd, "attempts") + 1, max_attempts,
                     exclude_host ? " on another host" : "");
        engine_db_exec(e->db, NULL, "UPDATE commands SET phase = '', host = NULL, agent_job_id = NULL, data = ?, "
                                    "updated = ? WHERE id = ?", "jis", data, engine_now(), js(cmd, "id"));
        engine_kick(e);
}

/* What an event calls a leaf's agent job: "copy_data", "merge", "sparsify_volume" … */
static const char *job_noun(json_t *cmd)
{
        return engine_kind_name(engine_cmd_kind(cmd));
}

/* Marks the command sent before the call: a restart finds host and agent job recorded. */
static char *leaf_mark_sent(struct engine *e, json_t *cmd, const char *host, gint64 generation)
{
        char *job_id = fy_uuid_new();
        g_autoptr(json_t) old = jparse(cmd, "data");
        g_autoptr(json_t) data = json_object();

        /* Whatever the last try learned is stale now; only the hosts to avoid carry over. */
        if (json_object_get(old, "exclude"))
                json_object_set(data, "exclude", json_object_get(old, "exclude"));
        if (engine_db_exec(e->db, NULL,
                           "UPDATE commands SET phase = 'sent', host = ?, agent_job_id = ?, generation = ?, data = ?, "
                           "attempts = attempts + 1, updated = ? WHERE id = ?",
                           "ssijis", host, job_id, generation, data, engine_now(), js(cmd, "id")) < 0) {
                g_free(job_id);
                return NULL;   /* not recorded: do not call, try again next round */
        }
        return job_id;
}

static void leaf_save(struct engine *e, json_t *cmd, json_t *data)
{
        engine_cmd_update(e, js(cmd, "id"), engine_cmd_phase(cmd), data);
}

/* Nothing to do for this command before `seconds` from now (a backoff that survives restarts). */
static void leaf_later(struct engine *e, json_t *cmd, json_t *data, gint64 seconds)
{
        json_object_set_new(data, "next_try", json_integer(engine_now() + seconds));
        leaf_save(e, cmd, data);
}

static gint64 backoff(gint64 attempt)
{
        return MIN(5 << MIN(attempt, 3), 30);  /* 5, 10, 20, 30, 30 … s */
}

static void verify_volume_created(struct engine *e, json_t *cmd, const char *host);

static void on_leaf_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        enum engine_kind kind = engine_cmd_kind(cmd);

        if (!error) {
                engine_kick(e);        /* accepted: watch the job from now on */
                return;
        }
        if (is_transport_error(error))
                return;        /* unknown whether it arrived: the next round asks the host */
        if (error->code == FY_ERR_JOB_EXISTS)
                return;        /* it did arrive before (a resend after a restart): watch it */
        if (kind == ENGINE_KIND_CREATE_VOLUME_CONTAINER && error->code == FY_ERR_VOLUME_ALREADY_EXISTS) {
                /* A try before an SPM change or a restart got that far: finished, or half-made? */
                verify_volume_created(e, cmd, js(cmd, "host"));
                return;
        }
        if (kind == ENGINE_KIND_REMOVE_VOLUME && error->code == FY_ERR_VOLUME_DOES_NOT_EXIST) {
                engine_cmd_finish(e, cmd, true, NULL);        /* gone already (a resend): done */
                return;
        }
        if (host_job(kind) && kind != ENGINE_KIND_COPY_DATA && refused_everywhere(error->code)) {
                /* A merge or sparsify the volumes do not allow (copies keep their behaviour). */
                engine_cmd_finish(e, cmd, false, error->message);
                return;
        }
        if (host_job(kind)) {
                /* The host refused the copy (full, not connected, broken): another host may take it. */
                leaf_retry_or_fail(e, cmd, e->config.copy_attempts, error->message, true);
                return;
        }
        /* An SPM verb refused; "not the SPM (any more)" passes with the next election. */
        leaf_retry_or_fail(e, cmd, error->code == FY_ERR_SPM_REQUIRED ? 3 : 1, error->message, false);
}

static void leaf_job_finished(struct engine *e, json_t *cmd, json_t *job);
static void leaf_job_missing(struct engine *e, json_t *cmd);
static void copy_lost(struct engine *e, json_t *cmd, json_t *data, const char *why);
static void copy_probe(struct engine *e, json_t *cmd, json_t *data);
static void fence_watch(struct engine *e, json_t *cmd, json_t *data);

static bool host_status_is(struct engine *e, const char *host, const char *status)
{
        g_autoptr(json_t) row = host ? engine_db_query_one(e->db, NULL, "SELECT status FROM hosts WHERE id = ?", "s", host)
                                     : NULL;

        return row ? g_strcmp0(js(row, "status"), status) == 0 : strcmp(status, "gone") == 0;
}

static bool host_is_up(struct engine *e, const char *host)
{
        return host_status_is(e, host, "up");
}

static void on_leaf_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *job;

        if (error) {
                if (host_job(engine_cmd_kind(cmd)))
                        copy_lost(e, cmd, data, error->message);
                return;        /* an SPM verb: leaf_watch re-checks against the (new) SPM */
        }
        job = json_object_get(result, js(cmd, "agent_job_id"));
        if (json_object_get(data, "lost_since")) {
                engine_event(e, "normal", js(cmd, "id"), "%s: host %s answers again; the job is %s", js(cmd, "type"),
                             js(cmd, "host"), job ? "still known there" : "no longer known there");
                json_object_del(data, "lost_since");
                json_object_del(data, "next_try");
                json_object_del(data, "fence_started");      /* a later episode gets its own fence window */
                json_object_del(data, "fence_attempts");
                leaf_save(e, cmd, data);
        }
        if (!job) {
                leaf_job_missing(e, cmd);
                return;
        }
        leaf_job_finished(e, cmd, job);
}

static void on_abort_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (error)
                g_message("abort of %s on %s: %s", js(cmd, "agent_job_id"), js(cmd, "host"), error->message);
        engine_kick(e);
}

/*
 * A copy aborted for stalling that does not end (hung in D state, SIGKILL
 * waits for the I/O) is treated as a lost host job once the abort is
 * overdue (stall.h): read through other hosts and fenced by its generation,
 * which succeeds once its lease is free. True when the fence path has it.
 */
static bool stall_fence(struct engine *e, json_t *cmd, json_t *data)
{
        struct engine_stall s;

        if (json_object_get(data, "stall_fence")) {
                copy_probe(e, cmd, data);
                return true;
        }
        engine_stall_from_json(json_object_get(data, "stall"), &s);
        if (!engine_stall_abort_overdue(&s, engine_mono_now(), e->config.stall_timeout))
                return false;
        engine_event(e, "warning", js(cmd, "id"), "%s job %s on host %s did not end within %u s of its abort "
                     "(stalled, maybe hung in the kernel): fencing it as a lost job", job_noun(cmd),
                     js(cmd, "agent_job_id"), js(cmd, "host"), ENGINE_STALL_ABORT_FACTOR * e->config.stall_timeout);
        json_object_set_new(data, "stall_fence", json_true());
        /* Lost for host_lost_timeout already: the probe fences at once instead of waiting for the host. */
        json_object_set_new(data, "lost_since", json_integer(engine_now() - e->config.host_lost_timeout));
        leaf_save(e, cmd, data);
        copy_probe(e, cmd, data);
        return true;
}

static void leaf_watch(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *cached;

        if (ji(data, "next_try") > engine_now())
                return;
        if (host_job(engine_cmd_kind(cmd))) {
                if (js(data, "fence_job")) {
                        fence_watch(e, cmd, data);
                        return;
                }
                bool stall_abort = json_is_true(json_object_get(data, "stall_abort"));

                if (stall_abort && stall_fence(e, cmd, data))
                        return;
                if ((ji(cmd, "cancel") || stall_abort) && engine_now() - ji(data, "abort_sent") >= 30 &&
                    host_is_up(e, js(cmd, "host"))) {
                        /* Cancelled: the job ends "aborted" and the command with it; stalled (stall_action
                         * retry): it ends "aborted" and is tried elsewhere. Sent again every 30 s while it
                         * runs: an abort lost on the way must not let the copy go on. */
                        json_object_set_new(data, "abort_sent", json_integer(engine_now()));
                        leaf_save(e, cmd, data);
                        engine_event(e, "normal", js(cmd, "id"), "aborting %s job %s on host %s (%s)",
                                     job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"),
                                     ji(cmd, "cancel") ? "cancelled" : "stalled");
                        cmd_call(e, cmd, js(cmd, "host"), "Job.abort", json_pack("{s:s}", "job_id", js(cmd, "agent_job_id")),
                                 e->config.host_timeout, on_abort_sent, NULL, NULL);
                        return;
                }
                if (host_status_is(e, js(cmd, "host"), "connecting"))
                        return;        /* just (re)connected, e.g. after an engine restart: the monitor decides soon */
                if (host_status_is(e, js(cmd, "host"), "non_responsive") || host_status_is(e, js(cmd, "host"), "gone")) {
                        copy_lost(e, cmd, data, "the host is not responding");
                        return;
                }
        } else {
                g_autofree char *spm = engine_spm_host(e);

                if (spm && strcmp(spm, js(cmd, "host")) != 0) {
                        /* The SPM changed under this command: learn from storage through the new one. */
                        leaf_job_missing(e, cmd);
                        return;
                }
                if (!spm)
                        return;        /* wait for the election */
        }
        /* Events only bring progress early; the state always comes from Host.getJobs,
         * so a lost final event (reconnect, crash) cannot leave a command waiting. */
        cached = g_hash_table_lookup(job_events, js(cmd, "agent_job_id"));
        if (cached && g_strcmp0(js(cached, "status"), "running") == 0)
                leaf_job_finished(e, cmd, cached);
        cmd_call(e, cmd, js(cmd, "host"), "Host.getJobs",
                 json_pack("{s:[s]}", "job_ids", js(cmd, "agent_job_id")),
                 e->config.host_timeout, on_leaf_jobs, NULL, NULL);
}

/* ---- recovery of a copy whose host is lost or forgot the job (DESIGN §7) ---- */

/* Any usable host but `not` (which may be NULL); NULL if none. */
static char *other_usable_host(struct engine *e, const char *not)
{
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);

        for (guint i = 0; i < hosts->len; i++)
                if (!not || strcmp(hosts->pdata[i], not) != 0)
                        return g_strdup(hosts->pdata[i]);
        return NULL;
}

static json_t *dst_of(json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        return json_incref(json_object_get(p, "dst"));
}

static void copy_lost(struct engine *e, json_t *cmd, json_t *data, const char *why)
{
        if (!json_object_get(data, "lost_since")) {
                json_object_set_new(data, "lost_since", json_integer(engine_now()));
                leaf_save(e, cmd, data);
                engine_event(e, "warning", js(cmd, "id"),
                             "%s job %s: host %s unreachable (%s); reading the destination through other hosts, "
                             "fencing after %u s", job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"), why,
                             e->config.host_lost_timeout);
        }
        copy_probe(e, cmd, data);
}

static void on_fence_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = NULL;

        if (!error || is_transport_error(error))
                return;        /* watched (or found missing) in the next rounds */
        data = jparse(cmd, "data");
        json_object_del(data, "fence_job");
        json_object_del(data, "fence_host");
        leaf_later(e, cmd, data, backoff(ji(data, "fence_attempts")));
        g_message("fencing %s refused: %s", js(cmd, "id"), error->message);
}

/*
 * Fences the lost job: on another host, SDM.update_volume moves the
 * destination's generation from the recorded one to recorded+3. It needs the
 * volume lease, so it succeeds only once the old job cannot write any more
 * (its process exited, or its host's sanlock lease expired); from then on
 * the old job can never mark the volume done (DESIGN §6).
 */
static bool fence_expired(struct engine *e, json_t *cmd, json_t *data)
{
        g_autofree char *why = NULL;

        if (!json_object_get(data, "fence_started") ||
            engine_now() - ji(data, "fence_started") <= (gint64) e->config.fence_timeout)
                return false;
        why = g_strdup_printf("the copy on host %s could not be fenced within %u s (its lease is still held); "
                              "the destination stays ILLEGAL and is removed once the lease is free",
                              js(cmd, "host"), e->config.fence_timeout);
        engine_cmd_finish(e, cmd, false, why);
        return true;
}

static void copy_fence(struct engine *e, json_t *cmd, json_t *data, const char *probe_host)
{
        g_autoptr(json_t) dst = dst_of(cmd);
        g_autofree char *job_id = fy_uuid_new();
        gint64 rec = ji(cmd, "generation");

        if (!json_object_get(data, "fence_started")) {
                json_object_set_new(data, "fence_started", json_integer(engine_now()));
                engine_event(e, "warning", js(cmd, "id"),
                             "fencing %s job %s of host %s: destination %s generation %" G_GINT64_FORMAT " → %" G_GINT64_FORMAT
                             " through host %s", job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"),
                             js(dst, "vol"),
                             rec, engine_generation_fenced(rec), probe_host);
        } else if (fence_expired(e, cmd, data)) {
                return;
        }
        json_object_set_new(data, "fence_job", json_string(job_id));
        json_object_set_new(data, "fence_host", json_string(probe_host));
        json_object_set_new(data, "fence_attempts", json_integer(ji(data, "fence_attempts") + 1));
        leaf_save(e, cmd, data);        /* recorded before the call, like every decision */
        cmd_call(e, cmd, probe_host, "SDM.update_volume",
                 json_pack("{s:s, s:{s:s, s:s, s:s, s:I}, s:{s:I}}", "job_id", job_id,
                           "vol_info", "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "vol_id", js(dst, "vol"),
                           "generation", (json_int_t) rec,
                           "vol_attr", "generation", (json_int_t) engine_generation_fenced(rec)),
                 e->config.host_timeout, on_fence_sent, NULL, NULL);
}

struct probe_ctx {
        char *host;
};

static void probe_ctx_free(void *p)
{
        struct probe_ctx *c = p;

        g_free(c->host);
        g_free(c);
}

static void on_copy_probe(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        struct probe_ctx *c = extra;
        g_autoptr(json_t) data = jparse(cmd, "data");
        gint64 rec = ji(cmd, "generation"), gen;
        json_t *owners;
        bool lost_long, missing = json_is_true(json_object_get(data, "missing"));

        if (error && (error->code == FY_ERR_VOLUME_DOES_NOT_EXIST || error->code == FY_ERR_IMAGE_DOES_NOT_EXIST)) {
                engine_cmd_finish(e, cmd, false, "the destination volume is gone; the copy cannot complete");
                return;
        }
        if (fence_expired(e, cmd, data))
                return;
        if (error) {
                leaf_later(e, cmd, data, 5);
                return;
        }
        gen = ji(result, "generation");
        owners = json_object_get(json_object_get(result, "lease"), "owners");
        if (gen == engine_generation_done(rec) && g_strcmp0(js(result, "legality"), "LEGAL") == 0) {
                g_autoptr(json_t) done = json_pack("{s:s}", "status", "done");

                engine_event(e, "normal", js(cmd, "id"), "%s job %s of host %s finished: learned from storage "
                             "(destination LEGAL, generation %" G_GINT64_FORMAT ")", job_noun(cmd),
                             js(cmd, "agent_job_id"), js(cmd, "host"), gen);
                leaf_job_finished(e, cmd, done);
                return;
        }
        if (gen != rec) {
                /* recorded+3 is our fence; anything else is someone else's change: this try is over either way. */
                g_autofree char *why = g_strdup_printf("%s job %s of host %s was fenced (destination generation %" G_GINT64_FORMAT
                                                       ", recorded %" G_GINT64_FORMAT ")", job_noun(cmd),
                                                       js(cmd, "agent_job_id"),
                                                       js(cmd, "host"), gen, rec);
                leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
                return;
        }
        lost_long = engine_now() - ji(data, "lost_since") >= (gint64) e->config.host_lost_timeout;
        if (!missing && !lost_long) {
                leaf_later(e, cmd, data, 5);     /* the host may come back: keep waiting */
                return;
        }
        if (missing && owners && json_array_size(owners) > 0 && !lost_long) {
                leaf_later(e, cmd, data, 5);     /* someone still holds the lease: not over yet */
                return;
        }
        copy_fence(e, cmd, data, c->host);
}

static void copy_probe(struct engine *e, json_t *cmd, json_t *data)
{
        g_autoptr(json_t) dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);
        g_autoptr(json_t) dst = dst_of(cmd);
        g_autofree char *host = other_usable_host(e, js(cmd, "host"));
        struct probe_ctx *c;

        if (!host && json_is_true(json_object_get(data, "missing")) && host_is_up(e, js(cmd, "host")))
                host = g_strdup(js(cmd, "host"));     /* it answers, just without the job */
        if (!host) {
                leaf_later(e, cmd, data, 5);            /* nobody to read storage through yet */
                return;
        }
        c = g_new0(struct probe_ctx, 1);
        c->host = g_strdup(host);
        cmd_call(e, cmd, host, "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(dst, "sd"),
                           "imageID", js(dst, "img"), "volumeID", js(dst, "vol")),
                 e->config.host_timeout, on_copy_probe, c, probe_ctx_free);
}

static void on_fence_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *job = result ? json_object_get(result, js(data, "fence_job")) : NULL;
        const char *status = js(job, "status");
        gint64 code = ji(json_object_get(job, "error"), "code");

        if (job && (!status || strcmp(status, "running") == 0 || strcmp(status, "pending") == 0)) {
                fence_expired(e, cmd, data);
                return;        /* not decided yet */
        }
        json_object_del(data, "fence_job");
        json_object_del(data, "fence_host");
        if (job && strcmp(status, "done") == 0) {
                engine_metrics_count_fence();
                engine_event(e, "normal", js(cmd, "id"), "fenced %s job %s of host %s", engine_kind_name(engine_cmd_kind(cmd)),
                             js(cmd, "agent_job_id"), js(cmd, "host"));
                leaf_save(e, cmd, data);
                copy_probe(e, cmd, data);      /* reads recorded+3 and ends this try */
                return;
        }
        if (job && code == FY_ERR_GENERATION_MISMATCH) {
                leaf_save(e, cmd, data);       /* the generation moved: the job finished after all? read it */
                copy_probe(e, cmd, data);
                return;
        }
        /* Lease still held (651) or the fence host failed: later, with backoff. */
        if (job && code == FY_ERR_LEASE_ACQUIRE && ji(data, "fence_attempts") % 6 == 1)
                engine_event(e, "normal", js(cmd, "id"), "fencing %s job %s: its lease is still held; "
                             "retrying until the holder's sanlock lease expires", job_noun(cmd), js(cmd, "agent_job_id"));
        leaf_later(e, cmd, data, backoff(ji(data, "fence_attempts")));
}

static void fence_watch(struct engine *e, json_t *cmd, json_t *data)
{
        cmd_call(e, cmd, js(data, "fence_host"), "Host.getJobs", json_pack("{s:[s]}", "job_ids", js(data, "fence_job")),
                 e->config.host_timeout, on_fence_jobs, NULL, NULL);
}

/* create_volume_container */

static void volume_container_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *job_id = NULL;
        g_autofree char *size = NULL;
        g_autoptr(json_t) dc = NULL;

        if (!spm) {
                step_wait(e, js(cmd, "step_id"), "waiting for the SPM");
                return;        /* no SPM now: wait for the election */
        }
        dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);
        job_id = leaf_mark_sent(e, cmd, spm, -1);
        if (!job_id)
                return;
        engine_step_update(e, js(cmd, "step_id"), "started", 0, spm);
        size = g_strdup_printf("%" G_GINT64_FORMAT, ji(p, "size"));
        cmd_call(e, cmd, spm, "Volume.create",
                 json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
                           "job_id", job_id,
                           "storagepoolID", js(dc, "pool_id"),
                           "storagedomainID", js(p, "sd"),
                           "imageID", js(p, "img"),
                           "volumeID", js(p, "vol"),
                           "size", size,
                           "volFormat", strcmp(js(p, "format"), "cow") == 0 ? "COW" : "RAW",
                           "preallocate", json_is_true(json_object_get(p, "sparse")) ? "SPARSE" : "PREALLOCATED",
                           "diskType", "DATA",
                           "desc", "",
                           "srcImgUUID", js(p, "img"),
                           "srcVolUUID", js(p, "parent") ? js(p, "parent") : FY_ZERO_UUID),
                 SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
}

/*
 * An SPM leaf about to call: waits for an election (NULL), else records the
 * SPM and a new agent job id before the call (returned), with the pool row.
 */
static char *spm_mark_sent(struct engine *e, json_t *cmd, const char *spm, json_t **ret_dc)
{
        char *job_id;

        if (!spm) {
                step_wait(e, js(cmd, "step_id"), "waiting for the SPM");
                return NULL;
        }
        *ret_dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);
        job_id = leaf_mark_sent(e, cmd, spm, -1);
        if (job_id)
                engine_step_update(e, js(cmd, "step_id"), "started", 0, spm);
        return job_id;
}

/* remove_image */

static void remove_image_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *job_id = NULL;
        g_autoptr(json_t) dc = NULL;
        g_autoptr(json_t) data = jparse(cmd, "data");

        if (ji(data, "next_try") > engine_now())
                return;
        if (persistent(cmd) && engine_image_in_use(e, js(p, "sd"), js(p, "img"), js(cmd, "id"))) {
                /* A background removal runs late: the image may be a disk again (a retried move
                 * reuses the ids). Removing it now would destroy that disk. */
                engine_event(e, "normal", js(cmd, "id"), "image %s on storage domain %s is in use again; "
                             "not removing it", js(p, "img"), js(p, "sd"));
                engine_cmd_finish(e, cmd, true, NULL);
                return;
        }
        job_id = spm_mark_sent(e, cmd, spm, &dc);
        if (!job_id)
                return;
        cmd_call(e, cmd, spm, "Image.delete",
                 json_pack("{s:s, s:s, s:s, s:s}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "storagedomainID", js(p, "sd"), "imageID", js(p, "img")),
                 SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
}

/*
 * prepare_merge / finalize_merge {sd, img, top, base, generation?} and
 * remove_volume {sd, img, vol}: SPM jobs on one subchain or volume.
 */
static void spm_volume_job_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autofree char *job_id = NULL;
        g_autoptr(json_t) dc = NULL;
        g_autoptr(json_t) data = jparse(cmd, "data");
        enum engine_kind kind = engine_cmd_kind(cmd);
        json_t *params;

        if (ji(data, "next_try") > engine_now())
                return;
        job_id = spm_mark_sent(e, cmd, spm, &dc);
        if (!job_id)
                return;
        if (kind == ENGINE_KIND_REMOVE_VOLUME) {
                params = json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                                   "storagedomainID", js(p, "sd"), "imageID", js(p, "img"), "volumeID", js(p, "vol"));
                cmd_call(e, cmd, spm, "Volume.delete", params, SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
                return;
        }
        params = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "subchainInfo", "sd_id", js(p, "sd"), "img_id", js(p, "img"), "top_id", js(p, "top"),
                           "base_id", js(p, "base"));
        if (json_object_get(p, "generation"))
                json_object_set(json_object_get(params, "subchainInfo"), "base_generation", json_object_get(p, "generation"));
        cmd_call(e, cmd, spm, kind == ENGINE_KIND_PREPARE_MERGE ? "StoragePool.prepareMerge" : "StoragePool.finalizeMerge",
                 params, SPM_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
}

/* copy_data: pick a host, record the destination's generation, then start the copy. */

static json_t *endpoint(json_t *ep, gint64 generation)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "endpoint_type", "div", "sd_id", js(ep, "sd"),
                              "img_id", js(ep, "img"), "vol_id", js(ep, "vol"));

        if (generation >= 0)
                json_object_set_new(o, "generation", json_integer(generation));
        return o;
}

/* What a host job sends, with the generation read just before. */
static const char *host_job_method(struct engine *e, json_t *cmd, json_t *p, const char *host, gint64 gen)
{
        json_t *dst = json_object_get(p, "dst");

        switch (engine_cmd_kind(cmd)) {
        case ENGINE_KIND_MERGE:
                engine_event(e, "normal", js(cmd, "id"), "merging volume %s into its parent %s on host %s "
                             "(base generation %" G_GINT64_FORMAT ")", js(p, "top"), js(dst, "vol"), host, gen);
                return "SDM.merge";
        case ENGINE_KIND_SPARSIFY_VOLUME:
                engine_event(e, "normal", js(cmd, "id"), "sparsifying volume %s on host %s (generation %" G_GINT64_FORMAT ")",
                             js(dst, "vol"), host, gen);
                return "SDM.sparsify_volume";
        default:
                engine_event(e, "normal", js(cmd, "id"), "copying volume %s to %s on host %s (destination generation %"
                             G_GINT64_FORMAT ")", js(json_object_get(p, "src"), "vol"), js(dst, "sd"), host, gen);
                return "SDM.copy_data";
        }
}

static json_t *host_job_params(json_t *p, enum engine_kind kind, const char *job_id, gint64 gen)
{
        json_t *dst = json_object_get(p, "dst");

        if (kind == ENGINE_KIND_MERGE)
                return json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:I}}", "job_id", job_id, "subchain_info",
                                 "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "top_id", js(p, "top"),
                                 "base_id", js(dst, "vol"), "base_generation", (json_int_t) gen);
        if (kind == ENGINE_KIND_SPARSIFY_VOLUME)
                return json_pack("{s:s, s:{s:s, s:s, s:s, s:I}}", "job_id", job_id, "vol_info",
                                 "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "vol_id", js(dst, "vol"),
                                 "generation", (json_int_t) gen);
        return json_pack("{s:s, s:o, s:o}", "job_id", job_id, "source", endpoint(json_object_get(p, "src"), -1),
                         "destination", endpoint(dst, gen));
}

static void on_copy_generation(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *host = extra;
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autofree char *job_id = NULL;
        gint64 gen;

        if (error) {
                if (is_transport_error(error))
                        return;        /* try again next round, maybe on another host */
                engine_cmd_finish(e, cmd, false, error->message);
                return;
        }
        gen = json_integer_value(json_object_get(result, "generation"));
        job_id = leaf_mark_sent(e, cmd, host, gen);
        if (!job_id)
                return;
        engine_step_update(e, js(cmd, "step_id"), "started", 0, host);
        cmd_call(e, cmd, host, host_job_method(e, cmd, p, host, gen), host_job_params(p, engine_cmd_kind(cmd), job_id, gen),
                 COPY_CALL_TIMEOUT_MS, on_leaf_sent, NULL, NULL);
}

static void copy_data_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *host = NULL;
        g_autoptr(json_t) dc = NULL;
        json_t *dst = json_object_get(p, "dst");
        double bytes;

        if (ji(cmd, "cancel")) {
                engine_cmd_finish(e, cmd, false, "cancelled");
                return;
        }
        if (ji(data, "next_try") > engine_now())
                return;
        /* Hosts that failed this copy before come last: another one if any can take it. */
        bytes = json_number_value(json_object_get(p, "bytes"));
        host = engine_pick_copy_host_sized(e, json_object_get(data, "exclude"), bytes, ji(cmd, "created"));
        if (!host && json_array_size(json_object_get(data, "exclude")) > 0)
                host = engine_pick_copy_host_sized(e, NULL, bytes, ji(cmd, "created"));

        if (!host) {
                /* Every usable host is at its job limit (or none is up), or the copy waits for a busy
                 * fast host (hostsched.h): offered again each round until one takes it. */
                step_wait(e, js(cmd, "step_id"), "waiting for a host");
                return;
        }
        /* Counted against the host from now on, so this round's next pick sees it. */
        g_hash_table_replace(e->picking, g_strdup(js(cmd, "id")), engine_pick_new(host, bytes));
        dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);
        cmd_call(e, cmd, host, "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(dst, "sd"),
                           "imageID", js(dst, "img"), "volumeID", js(dst, "vol")),
                 e->config.host_timeout, on_copy_generation, g_strdup(host), g_free);
}

static void on_finalize_verify(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (is_transport_error(error))
                return;        /* the next round asks again */
        if (result && g_strcmp0(js(result, "legality"), "ILLEGAL") == 0) {
                engine_event(e, "normal", js(cmd, "id"), "finalize_merge: top volume already left the chain "
                             "(an earlier try finished)");
                engine_cmd_finish(e, cmd, true, NULL);
                return;
        }
        engine_cmd_finish(e, cmd, false, extra);
}

/* Top ILLEGAL after a finalize that answered 252 on a resend: the finalize had completed. */
static void finalize_verify(struct engine *e, json_t *cmd, const char *why)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s",
                                                   e->dc_id);

        cmd_call(e, cmd, js(cmd, "host"), "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(p, "sd"),
                           "imageID", js(p, "img"), "volumeID", js(p, "top")),
                 e->config.host_timeout, on_finalize_verify, g_strdup(why), g_free);
}

/*
 * A running host job that moves no bytes for stall_timeout (stall.c judges)
 * is flagged: its step's detail "stalled", an event, ferry_engine_stalls_total.
 * With stall_action = retry it is also aborted (leaf_watch sends Job.abort,
 * and fences it if the abort does not end it) and its "aborted" end retried
 * on another host. The judgement's state is kept in the command's data.
 * running: false while the agent is aborting the job.
 */
#define STALL_SAVE_S 5
#define STALL_STATES_MAX 10000

/* The exact stall state of each running host job, by agent job id (a retry is a new one). */
static GHashTable *stall_states;

static void stall_state_get(json_t *cmd, json_t *data, struct engine_stall *ret)
{
        struct engine_stall *s = stall_states ? g_hash_table_lookup(stall_states, js(cmd, "agent_job_id")) : NULL;

        if (s)
                *ret = *s;
        else
                engine_stall_from_json(json_object_get(data, "stall"), ret);      /* after a restart */
}

static void stall_state_put(json_t *cmd, const struct engine_stall *s)
{
        if (!stall_states)
                stall_states = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        /* Bounded: the states of jobs that ended are never removed one by one. */
        if (g_hash_table_size(stall_states) >= STALL_STATES_MAX)
                g_hash_table_remove_all(stall_states);
        g_hash_table_replace(stall_states, g_strdup(js(cmd, "agent_job_id")), g_memdup2(s, sizeof(*s)));
}

static void stall_check(struct engine *e, json_t *cmd, json_t *job, double progress, bool running)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        struct engine_stall s, before;
        gint64 still;
        bool retry;

        stall_state_get(cmd, data, &s);
        if (!running) {
                /* Aborting: not judged, but a stalled one stays flagged until it ended
                 * (engine_step_update cleared the detail with this poll). */
                if (s.stalled)
                        engine_db_exec(e->db, NULL, "UPDATE steps SET detail = 'stalled' WHERE id = ?", "s",
                                       js(cmd, "step_id"));
                return;
        }
        before = s;
        switch (engine_stall_feed(&s, js(job, "phase"), ji(job, "bytes_done"), progress, engine_mono_now(),
                                  e->config.stall_timeout, &still)) {
        case ENGINE_STALL_MOVING:
                /* Not a database write per poll of every moving copy: the exact state is kept in
                 * memory, the stored one may lag a few seconds (after a restart, a flag may come
                 * that much later). */
                stall_state_put(cmd, &s);
                if (before.seen && s.moved_at - engine_stall_json_moved_at(json_object_get(data, "stall")) < STALL_SAVE_S)
                        return;
                break;
        case ENGINE_STALL_STILL:
                stall_state_put(cmd, &s);
                return;        /* nothing new to keep */
        case ENGINE_STALL_MOVES_AGAIN:
                engine_event(e, "normal", js(cmd, "id"), "%s job %s on host %s moves again (%.0f %%)",
                             job_noun(cmd), js(cmd, "agent_job_id"), js(cmd, "host"), progress);
                break;
        case ENGINE_STALL_STALLED:
                /* engine_step_update cleared it with this poll: still stalled (or being aborted). */
                engine_db_exec(e->db, NULL, "UPDATE steps SET detail = 'stalled' WHERE id = ?", "s", js(cmd, "step_id"));
                break;
        case ENGINE_STALL_NEW:
                retry = strcmp(e->config.stall_action, "retry") == 0 && !ji(cmd, "cancel");
                if (retry) {
                        engine_stall_aborting(&s, engine_mono_now());
                        json_object_set_new(data, "stall_abort", json_true());
                }
                engine_db_exec(e->db, NULL, "UPDATE steps SET detail = 'stalled' WHERE id = ?", "s", js(cmd, "step_id"));
                engine_metrics_count_stall();
                engine_event(e, "warning", js(cmd, "id"), "%s job %s on host %s moved no bytes for %" G_GINT64_FORMAT
                             " s (at %.0f %%, %" G_GINT64_FORMAT " bytes): stalled%s", job_noun(cmd),
                             js(cmd, "agent_job_id"), js(cmd, "host"), still, progress, ji(job, "bytes_done"),
                             retry ? "; aborting it to try on another host" : "");
                if (retry)
                        engine_kick(e);        /* leaf_watch sends the abort */
                break;
        }
        stall_state_put(cmd, &s);
        json_object_set_new(data, "stall", engine_stall_to_json(&s));
        leaf_save(e, cmd, data);
}

/* The job is known to the host: running → progress, done/failed → finish. */
static void leaf_job_finished(struct engine *e, json_t *cmd, json_t *job)
{
        const char *status = js(job, "status") ? js(job, "status") : "unknown";
        enum engine_kind kind = engine_cmd_kind(cmd);

        if (strcmp(status, "done") == 0) {
                if (kind == ENGINE_KIND_CREATE_VOLUME_CONTAINER) {
                        g_autoptr(json_t) p = jparse(cmd, "params");

                        /* A copy's destination stays ILLEGAL in the inventory until its data is there. */
                        if (json_is_true(json_object_get(p, "legal_when_created")))
                                engine_db_exec(e->db, NULL, "UPDATE volumes SET legality = 'LEGAL' WHERE id = ? AND sd_id = ?",
                                               "ss", js(p, "vol"), js(p, "sd"));
                }
                if (host_job(kind)) {
                        g_autoptr(json_t) p = jparse(cmd, "params");
                        json_t *dst = json_object_get(p, "dst");

                        engine_db_exec(e->db, NULL, "UPDATE volumes SET legality = 'LEGAL', generation = ? "
                                                    "WHERE id = ? AND sd_id = ?", "iss",
                                       engine_generation_done(ji(cmd, "generation")), js(dst, "vol"), js(dst, "sd"));
                }
                engine_cmd_finish(e, cmd, true, NULL);
        } else if (strcmp(status, "failed") == 0 || strcmp(status, "aborted") == 0) {
                json_t *err = json_object_get(job, "error");
                gint64 code = ji(err, "code");
                g_autofree char *why = g_strdup_printf("%s on host %s: %s (code %" G_GINT64_FORMAT ")",
                                                       status, js(cmd, "host"),
                                                       js(err, "message") ? js(err, "message") : "no message", code);

                if ((kind == ENGINE_KIND_REMOVE_IMAGE && code == FY_ERR_IMAGE_DOES_NOT_EXIST) ||
                    (kind == ENGINE_KIND_REMOVE_VOLUME && code == FY_ERR_VOLUME_DOES_NOT_EXIST)) {
                        engine_cmd_finish(e, cmd, true, NULL);        /* already gone */
                        return;
                }
                if (kind == ENGINE_KIND_FINALIZE_MERGE && code == FY_ERR_MERGE && ji(cmd, "attempts") > 1) {
                        /* A resend after an SPM change: the first one may have finished (base then has
                         * two children, top and the re-pointed one): storage decides. */
                        finalize_verify(e, cmd, why);
                        return;
                }
                /* A copy that lost its generation race or was aborted is not retried blindly,
                 * unless the engine aborted it for stalling (stall_check) and nobody cancelled it. */
                /* Out of space stays out of space on any host. */
                g_autoptr(json_t) data = jparse(cmd, "data");
                bool stall_retry = json_is_true(json_object_get(data, "stall_abort")) && !ji(cmd, "cancel");

                if (host_job(kind) && !refused_everywhere(code) && (strcmp(status, "aborted") != 0 || stall_retry))
                        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
                else
                        engine_cmd_finish(e, cmd, false, why);
        } else {
                double progress = json_number_value(json_object_get(job, "progress"));

                step_progress(e, js(cmd, "step_id"), progress, job);
                engine_job_progress_refresh(e, js(cmd, "job_id"));
                if (host_job(kind) && (strcmp(status, "running") == 0 || strcmp(status, "aborting") == 0))
                        stall_check(e, cmd, job, progress, strcmp(status, "running") == 0);
        }
}

static void on_volume_deleted(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");

        /* Created again from scratch once the half-made one is gone (a retry sees 205 until then). */
        if (error)
                g_message("removing half-made volume of %s: %s", js(cmd, "id"), error->message);
        leaf_retry_or_fail(e, cmd, 5, "the volume was half-made when the SPM changed; made again", false);
}

/* The volume on storage is the one this command creates: same capacity, format and parent. */
static bool volume_matches(json_t *info, json_t *p)
{
        const char *parent = js(info, "parent");
        const char *want_parent = js(p, "parent") ? js(p, "parent") : FY_ZERO_UUID;

        return ji(info, "capacity") == ji(p, "size") && g_strcmp0(parent, want_parent) == 0 &&
               g_ascii_strcasecmp(js(info, "format") ? js(info, "format") : "",
                                  strcmp(js(p, "format"), "cow") == 0 ? "COW" : "RAW") == 0;
}

static void on_created_verify(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *spm = extra;
        g_autoptr(json_t) p = NULL;
        g_autoptr(json_t) dc = NULL;
        g_autofree char *job_id = NULL;

        if (is_transport_error(error))
                return;
        p = jparse(cmd, "params");
        if (result && g_strcmp0(js(result, "legality"), "LEGAL") == 0 && volume_matches(result, p)) {
                g_autoptr(json_t) done = json_pack("{s:s}", "status", "done");

                leaf_job_finished(e, cmd, done);
                return;
        }
        if (error) {
                /* Not there at all: the request never got far; create it again. */
                leaf_retry_or_fail(e, cmd, 5, error->message, false);
                return;
        }
        /* ILLEGAL (half-made by a job that is gone) or not the volume asked for (a leftover
         * with the same ids): remove it, then create it again. */
        dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);
        job_id = fy_uuid_new();
        engine_event(e, "warning", js(cmd, "id"), "volume %s was left half-made; removing it before creating it again",
                     js(p, "vol"));
        cmd_call(e, cmd, spm, "Volume.delete",
                 json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", job_id, "storagepoolID", js(dc, "pool_id"),
                           "storagedomainID", js(p, "sd"), "imageID", js(p, "img"), "volumeID", js(p, "vol")),
                 SPM_CALL_TIMEOUT_MS, on_volume_deleted, NULL, NULL);
}

static void verify_volume_created(struct engine *e, json_t *cmd, const char *host)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);

        cmd_call(e, cmd, host, "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(p, "sd"),
                           "imageID", js(p, "img"), "volumeID", js(p, "vol")),
                 e->config.host_timeout, on_created_verify, g_strdup(host), g_free);
}

static void on_removed_verify(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (is_transport_error(error))
                return;
        if (error && error->code == FY_ERR_IMAGE_DOES_NOT_EXIST)
                engine_cmd_finish(e, cmd, true, NULL);        /* gone is success */
        else
                leaf_retry_or_fail(e, cmd, 5, "image removal did not finish", false);
}

static bool spm_job_repeatable(enum engine_kind k)
{
        return k == ENGINE_KIND_PREPARE_MERGE || k == ENGINE_KIND_FINALIZE_MERGE || k == ENGINE_KIND_REMOVE_VOLUME;
}

/*
 * The host answered without the job (the agent restarted), or the SPM
 * changed under a metadata job: learn the outcome from storage.
 */
static void leaf_job_missing(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = NULL;
        g_autofree char *spm = NULL;
        enum engine_kind kind = engine_cmd_kind(cmd);

        if (host_job(kind)) {
                data = jparse(cmd, "data");
                if (!json_is_true(json_object_get(data, "missing"))) {
                        json_object_set_new(data, "missing", json_true());
                        leaf_save(e, cmd, data);
                        engine_event(e, "warning", js(cmd, "id"), "host %s no longer knows %s job %s; "
                                     "deciding from the destination volume", js(cmd, "host"),
                                     job_noun(cmd), js(cmd, "agent_job_id"));
                }
                copy_probe(e, cmd, data);
                return;
        }
        spm = engine_spm_host(e);
        if (!spm)
                return;        /* after the election */
        if (spm_job_repeatable(kind)) {
                /* Each runs again safely: prepare finds base ILLEGAL at the same generation,
                 * finalize finds top ILLEGAL, a second delete answers 201 (= done). */
                leaf_retry_or_fail(e, cmd, 5, "the SPM no longer knows the job; sending it again", false);
                return;
        }
        if (kind == ENGINE_KIND_REMOVE_IMAGE) {
                cmd_call(e, cmd, spm, "StorageDomain.getVolumes",
                         json_pack("{s:s, s:s}", "storagedomainID", js(p, "sd"), "imageID", js(p, "img")),
                         e->config.host_timeout, on_removed_verify, NULL, NULL);
                return;
        }
        verify_volume_created(e, cmd, spm);
}

static void leaf_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");

        if (engine_cmd_phase(cmd) == ENGINE_PHASE_SENT) {
                leaf_watch(e, cmd);
                return;
        }
        switch (engine_cmd_kind(cmd)) {
        case ENGINE_KIND_CREATE_VOLUME_CONTAINER:
                volume_container_start(e, cmd, p);
                break;
        case ENGINE_KIND_REMOVE_IMAGE:
                remove_image_start(e, cmd, p);
                break;
        case ENGINE_KIND_COPY_DATA:
        case ENGINE_KIND_MERGE:
        case ENGINE_KIND_SPARSIFY_VOLUME:
                copy_data_start(e, cmd, p);
                break;
        case ENGINE_KIND_PREPARE_MERGE:
        case ENGINE_KIND_FINALIZE_MERGE:
        case ENGINE_KIND_REMOVE_VOLUME:
                spm_volume_job_start(e, cmd, p);
                break;
        default:
                g_assert_not_reached();        /* registered for the kinds above only */
        }
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

char *engine_children_state(struct engine *e, json_t *data, size_t i, char **ret_error)
{
        g_autofree char *k = g_strdup_printf("%zu", i);
        const char *id = json_string_value(json_object_get(json_object_get(data, "children"), k));

        return id ? child_state(e, id, ret_error) : NULL;
}

static char *make_volume_container(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *v = json_array_get(json_object_get(p, "volumes"), i);
        json_t *cp = json_pack("{s:s, s:s, s:s, s:O, s:I, s:s, s:O, s:b}",
                               "sd", js(p, "sd"), "img", js(p, "img"), "vol", js(v, "id"),
                               "parent", json_object_get(v, "parent"), "size", ji(v, "capacity"),
                               "format", js(v, "format"), "sparse", json_object_get(v, "sparse"),
                               /* a new empty disk is complete once created; a copy's volumes are not */
                               "legal_when_created", !json_object_get(p, "src_sd"));
        g_autofree char *desc = g_strdup_printf("Creating volume %s on storage domain %s", js(v, "id"), js(p, "sd"));
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "create_volume", desc, json_number_value(json_object_get(v, "structure_weight")));
        char *id = engine_cmd_create(e, ENGINE_KIND_CREATE_VOLUME_CONTAINER, js(cmd, "id"), js(cmd, "job_id"), step, cp);

        json_decref(cp);
        return id;
}

static char *make_copy_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *src = json_array_get(json_object_get(p, "src_volumes"), i);
        json_t *dst = json_array_get(json_object_get(p, "volumes"), i);
        json_t *cp = json_pack("{s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s}, s:I}",
                               "src", "sd", js(p, "src_sd"), "img", js(p, "src_img"), "vol", js(src, "id"),
                               "dst", "sd", js(p, "sd"), "img", js(p, "img"), "vol", js(dst, "id"),
                               /* what the scheduler weighs: the estimate if the flow made one, else the capacity */
                               "bytes", json_object_get(dst, "bytes") ? ji(dst, "bytes") : ji(dst, "capacity"));
        g_autofree char *desc = g_strdup_printf("Copying volume %s to storage domain %s", js(src, "id"), js(p, "sd"));
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "copy_data", desc, json_number_value(json_object_get(dst, "data_weight")));
        char *id = engine_cmd_create(e, ENGINE_KIND_COPY_DATA, js(cmd, "id"), js(cmd, "job_id"), step, cp);

        json_decref(cp);
        return id;
}

static char *make_remove_image(struct engine *e, json_t *cmd, const char *sd, const char *img)
{
        g_autofree char *desc = g_strdup_printf("Removing image %s from storage domain %s", img, sd);
        g_autofree char *step = engine_step_create(e, js(cmd, "job_id"), "remove_image", desc, 0);
        json_t *cp = json_pack("{s:s, s:s}", "sd", sd, "img", img);
        char *id = engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, js(cmd, "id"), js(cmd, "job_id"), step, cp);

        json_decref(cp);
        return id;
}

static char *make_remove_dst(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return make_remove_image(e, cmd, js(p, "sd"), js(p, "img"));
}

static char *make_remove_src(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return make_remove_image(e, cmd, js(p, "src_sd"), js(p, "src_img"));
}

static char *make_structure(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_cmd_create(e, ENGINE_KIND_CLONE_STRUCTURE, js(cmd, "id"), js(cmd, "job_id"), NULL, p);
}

static char *make_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_cmd_create(e, ENGINE_KIND_COPY_VOLUMES_DATA, js(cmd, "id"), js(cmd, "job_id"), NULL, p);
}

static char *make_with_data(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        return engine_cmd_create(e, ENGINE_KIND_COPY_WITH_DATA, js(cmd, "id"), js(cmd, "job_id"), NULL, p);
}

/* Sums the allocated size of a disk's volumes into disks.actual_size (best effort, asynchronous). */
struct size_ctx {
        struct engine *e;
        char *disk;
        unsigned pending;
        gint64 total;
        bool failed;
};

static void on_volume_size(json_t *result, const GError *error, void *userdata)
{
        struct size_ctx *c = userdata;

        if (result)
                c->total += json_integer_value(json_object_get(result, "truesize"));
        else
                c->failed = true;
        if (--c->pending > 0)
                return;
        if (!c->failed)
                engine_db_exec(c->e->db, NULL, "UPDATE disks SET actual_size = ? WHERE id = ?", "is", c->total, c->disk);
        g_free(c->disk);
        g_free(c);
}

void engine_disk_size_refresh(struct engine *e, const char *disk_id)
{
        g_autoptr(json_t) vols = engine_db_query(e->db, NULL,
                "SELECT v.id AS id, v.sd_id AS sd FROM volumes v JOIN disks d ON d.id = v.disk_id AND d.sd_id = v.sd_id "
                "WHERE d.id = ?", "s", disk_id);
        g_autoptr(json_t) dc = engine_db_query_one(e->db, NULL, "SELECT pool_id FROM datacenters WHERE id = ?", "s", e->dc_id);
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);
        struct size_ctx *c;
        size_t i;
        json_t *v;

        if (!vols || !dc || hosts->len == 0 || json_array_size(vols) == 0)
                return;
        c = g_new0(struct size_ctx, 1);
        c->e = e;
        c->disk = g_strdup(disk_id);
        c->pending = (unsigned) json_array_size(vols);
        json_array_foreach(vols, i, v)
                engine_host_call(e, hosts->pdata[0], "Volume.getInfo",
                                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"),
                                           "storagedomainID", js(v, "sd"), "imageID", disk_id, "volumeID", js(v, "id")),
                                 e->config.host_timeout, on_volume_size, c);
}

/* Finishes a top-level command: disks, job, event. */
static void flow_end(struct engine *e, json_t *cmd, json_t *p, bool ok, const char *error)
{
        enum engine_kind kind = engine_cmd_kind(cmd);
        const char *type = engine_kind_name(kind);
        const char *disk = js(p, "disk");
        const char *new_disk = js(p, "new_disk");
        bool copies = kind == ENGINE_KIND_MOVE_DISK || kind == ENGINE_KIND_COPY_DISK;

        if (engine_db_begin(e->db, NULL) < 0)
                return;
        if (kind == ENGINE_KIND_MOVE_DISK && ok) {
                /* The disk lives on the destination now; its volume rows follow. */
                engine_db_exec(e->db, NULL, "DELETE FROM volumes WHERE disk_id = ? AND sd_id = ?", "ss", disk, js(p, "src_sd"));
                engine_db_exec(e->db, NULL, "UPDATE disks SET sd_id = ? WHERE id = ?", "ss", js(p, "sd"), disk);
        }
        if (!ok && copies)
                engine_db_exec(e->db, NULL, "DELETE FROM volumes WHERE disk_id = ? AND sd_id = ?", "ss",
                               new_disk ? new_disk : disk, js(p, "sd"));
        if (new_disk) {
                if (ok)
                        engine_db_exec(e->db, NULL, "UPDATE disks SET status = 'ok', progress = NULL, job_id = NULL "
                                                    "WHERE id = ?", "s", new_disk);
                else
                        engine_db_exec(e->db, NULL, "DELETE FROM disks WHERE id = ?", "s", new_disk);
        }
        if ((kind == ENGINE_KIND_CREATE_DISK && !ok) || (kind == ENGINE_KIND_REMOVE_DISK && ok)) {
                engine_db_exec(e->db, NULL, "DELETE FROM volumes WHERE disk_id = ?", "s", disk);
                engine_db_exec(e->db, NULL, "DELETE FROM disks WHERE id = ?", "s", disk);
        } else {
                /* Only while this job holds the disk: never unlock another operation's disk.
                 * A removal that failed half-way leaves volumes gone or ILLEGAL: say so. */
                engine_db_exec(e->db, NULL, "UPDATE disks SET status = ?, progress = NULL, job_id = NULL "
                                            "WHERE id = ? AND job_id = ?", "sss",
                               kind == ENGINE_KIND_REMOVE_DISK ? "illegal" : "ok", disk, js(cmd, "job_id"));
        }
        engine_db_exec(e->db, NULL, "UPDATE jobs SET status = ?, end_time = ?, progress = CASE WHEN ? THEN 100 ELSE progress END "
                                    "WHERE id = ?", "sibs", ok ? "finished" : ji(cmd, "cancel") ? "aborted" : "failed",
                       engine_now(), ok, js(cmd, "job_id"));
        /* The command ends in the same transaction: a crash can never replay its end. */
        engine_cmd_finish(e, cmd, ok, error);
        if (engine_db_commit(e->db, NULL) < 0)
                return;
        if (ok && kind != ENGINE_KIND_REMOVE_DISK)
                engine_disk_size_refresh(e, new_disk ? new_disk : disk);
        engine_event(e, ok ? "normal" : "warning", js(cmd, "id"), "%s of disk %s %s%s%s", type, disk,
                     ok ? "finished" : "failed", error ? ": " : "", error ? error : "");
}

/*
 * A removal that kept failing must not hold the operation's disk locked:
 * the flow ends and the removal goes on as a command of its own, retried
 * until it is done.
 */
static void cleanup_detach(struct engine *e, json_t *cmd, const char *sd, const char *img, const char *why)
{
        g_autoptr(json_t) params = json_pack("{s:s, s:s, s:b}", "sd", sd, "img", img, "persistent", true);
        g_autofree char *id = engine_cmd_create(e, ENGINE_KIND_REMOVE_IMAGE, NULL, NULL, NULL, params);

        engine_event(e, "warning", id, "image %s on storage domain %s is not removed yet (%s); "
                     "retrying in the background", img, sd, why ? why : "unknown error");
}

/* Ends a composite with its children's outcome, or records where they are. */
static void children_end(struct engine *e, json_t *cmd, enum engine_phase phase, json_t *data,
                         enum engine_children st, const char *error)
{
        engine_cmd_update(e, js(cmd, "id"), phase, data);
        if (st != ENGINE_CHILDREN_ACTIVE)
                engine_cmd_finish(e, cmd, st == ENGINE_CHILDREN_SUCCEEDED, error);
}

/* Records the next phase of a composite and starts it now, not at the next round. */
static void phase_next(struct engine *e, json_t *cmd, enum engine_phase phase, json_t *data)
{
        engine_cmd_update(e, js(cmd, "id"), phase, data);
        engine_kick(e);
}

static void composite_advance_tx(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        enum engine_kind kind = engine_cmd_kind(cmd);
        enum engine_phase phase = engine_cmd_phase(cmd);
        size_t nvol = json_array_size(json_object_get(p, "volumes"));
        enum engine_children st;

        switch (kind) {
        case ENGINE_KIND_CLONE_STRUCTURE:
                st = engine_run_children(e, cmd, data, nvol, make_volume_container, &error);
                children_end(e, cmd, phase, data, st, error);
                return;
        case ENGINE_KIND_COPY_VOLUMES_DATA:
                /* Every volume at once (each on the host the scheduler picks), at most
                 * max_parallel_copies per disk: a child's layer does not need its parent's data. */
                st = engine_run_children_parallel(e, cmd, data, nvol, e->config.max_parallel_copies,
                                                  make_copy_data, &error);
                children_end(e, cmd, phase, data, st, error);
                return;
        case ENGINE_KIND_COPY_WITH_DATA:
                if (phase == ENGINE_PHASE_NEW)
                        phase = ENGINE_PHASE_STRUCTURE;
                st = engine_run_children(e, cmd, data, 1, phase == ENGINE_PHASE_STRUCTURE ? make_structure : make_data,
                                         &error);
                if (st == ENGINE_CHILDREN_SUCCEEDED && phase == ENGINE_PHASE_STRUCTURE) {
                        json_object_clear(data);
                        phase_next(e, cmd, ENGINE_PHASE_DATA, data);
                        return;
                }
                children_end(e, cmd, phase, data, st, error);
                return;
        default:
                break;         /* a top-level disk flow */
        }

        if (phase == ENGINE_PHASE_NEW)
                phase = ENGINE_PHASE_MAIN;
        switch (phase) {
        case ENGINE_PHASE_MAIN: {
                engine_child_factory make = kind == ENGINE_KIND_CREATE_DISK ? make_structure :
                                            kind == ENGINE_KIND_REMOVE_DISK ? make_remove_dst : make_with_data;

                if (ji(cmd, "cancel") && !js(data, "child") && ji(data, "index") == 0) {
                        st = ENGINE_CHILDREN_FAILED;   /* cancelled before it started */
                        error = g_strdup("cancelled");
                } else {
                        st = engine_run_children(e, cmd, data, 1, make, &error);
                }
                if (st == ENGINE_CHILDREN_ACTIVE) {
                        engine_cmd_update(e, js(cmd, "id"), phase, data);
                        return;
                }
                json_object_clear(data);
                if (st == ENGINE_CHILDREN_SUCCEEDED) {
                        if (kind == ENGINE_KIND_MOVE_DISK) {
                                /* Switch first: the source is removed only once the disk points at the copy. */
                                engine_db_exec(e->db, NULL, "UPDATE disks SET sd_id = ? WHERE id = ?", "ss",
                                               js(p, "sd"), js(p, "disk"));
                                phase_next(e, cmd, ENGINE_PHASE_REMOVE_SOURCE, data);
                                return;
                        }
                        flow_end(e, cmd, p, true, NULL);
                        return;
                }
                if (kind == ENGINE_KIND_REMOVE_DISK) {
                        flow_end(e, cmd, p, false, error);
                        return;
                }
                /* Nothing half-made stays behind: remove the destination, keep the source. */
                json_object_set_new(data, "error", json_string(error ? error : "failed"));
                phase_next(e, cmd, ENGINE_PHASE_CLEANUP, data);
                return;
        }
        case ENGINE_PHASE_REMOVE_SOURCE:
                st = engine_run_children(e, cmd, data, 1, make_remove_src, &error);
                engine_cmd_update(e, js(cmd, "id"), phase, data);
                if (st == ENGINE_CHILDREN_ACTIVE)
                        return;
                if (st == ENGINE_CHILDREN_FAILED)
                        cleanup_detach(e, cmd, js(p, "src_sd"), js(p, "src_img"), error);
                flow_end(e, cmd, p, true, NULL);
                return;
        case ENGINE_PHASE_CLEANUP: {
                g_autofree char *why = g_strdup(js(data, "error"));

                st = engine_run_children(e, cmd, data, 1, make_remove_dst, &error);
                engine_cmd_update(e, js(cmd, "id"), phase, data);
                if (st == ENGINE_CHILDREN_ACTIVE)
                        return;
                if (st == ENGINE_CHILDREN_FAILED)
                        cleanup_detach(e, cmd, js(p, "sd"), js(p, "img"), error);
                flow_end(e, cmd, p, false, why);
                return;
        }
        default: {
                g_autofree char *why = g_strdup_printf("phase \"%s\" is not one of %s", js(cmd, "phase"),
                                                       engine_kind_name(kind));
                flow_end(e, cmd, p, false, why);
                return;
        }
        }
}

json_t *engine_job_cancel(struct engine *e, const char *job_id, GError **error)
{
        g_autoptr(json_t) job = fy_uuid_is_valid(job_id) ?
                engine_db_query_one(e->db, NULL, "SELECT * FROM jobs WHERE id = ?", "s", job_id) : NULL;
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
        top = engine_db_query_one(e->db, NULL, "SELECT * FROM commands WHERE job_id = ? AND parent_id IS NULL", "s", job_id);
        /* Only flows that copy data: stopping a create, removal or snapshot half-way helps nobody. */
        if (!top || strcmp(js(top, "state"), "active") != 0 || !engine_kind_cancellable(engine_cmd_kind(top))) {
                g_set_error(error, ENGINE_ERROR, 409, "job %s (%s) cannot be cancelled; moves, copies, clones and "
                            "template creations can", job_id, top ? js(top, "type") : "no command");
                return NULL;
        }
        if (engine_cmd_phase(top) == ENGINE_PHASE_CLEANUP || engine_cmd_phase(top) == ENGINE_PHASE_REMOVE_SOURCE) {
                g_set_error(error, ENGINE_ERROR, 409, "job %s is already %s", job_id,
                            engine_cmd_phase(top) == ENGINE_PHASE_CLEANUP ? "cleaning up"
                                                                          : "removing the source of a finished move");
                return NULL;
        }
        engine_db_exec(e->db, NULL, "UPDATE commands SET cancel = 1, updated = ? WHERE job_id = ? AND state = 'active'",
                       "is", engine_now(), job_id);
        engine_event(e, "normal", js(top, "id"), "cancel requested for job %s (%s)", job_id, js(job, "description"));
        engine_kick(e);
        return json_pack("{s:{s:s, s:s}}", "job", "id", job_id, "status", "cancelling");
}

/* How each kind advances: the built-in ones below, the VM flows from vms.c. */
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
        if (engine_db_begin(e->db, NULL) < 0)
                return;
        flows[kind].advance(e, cmd);
        engine_db_commit(e->db, NULL);
}

void engine_commands_tick(struct engine *e)
{
        g_autoptr(json_t) rows = engine_db_query(e->db, NULL,
                "SELECT * FROM commands WHERE state = 'active' ORDER BY created, rowid", "");
        size_t i;
        json_t *row;

        if (!rows)
                return;
        json_array_foreach(rows, i, row) {
                /* Re-read: an earlier command of this round may have changed it. */
                g_autoptr(json_t) cur = NULL;

                if (busy(e, js(row, "id")))
                        continue;
                cur = engine_db_query_one(e->db, NULL, "SELECT * FROM commands WHERE id = ?", "s", js(row, "id"));
                if (cur && strcmp(js(cur, "state"), "active") == 0) {
                        struct fy_log_context saved;

                        cmd_context_enter(e, cur, &saved);
                        cmd_advance(e, cur);
                        fy_log_context_restore(&saved);
                }
        }
}

static void on_host_state(struct engine *e, const char *host_id, const char *status, void *userdata)
{
        engine_kick(e);        /* a copy there may be lost, or a waiting one may start */
}

int engine_commands_init(struct engine *e, GError **error)
{
        static const struct engine_host_listener listener = { on_host_event, on_host_state, NULL };
        static const enum engine_kind leaves[] = { ENGINE_KIND_CREATE_VOLUME_CONTAINER, ENGINE_KIND_REMOVE_IMAGE,
                                                   ENGINE_KIND_COPY_DATA, ENGINE_KIND_MERGE, ENGINE_KIND_SPARSIFY_VOLUME,
                                                   ENGINE_KIND_PREPARE_MERGE, ENGINE_KIND_FINALIZE_MERGE,
                                                   ENGINE_KIND_REMOVE_VOLUME };
        static const enum engine_kind composites[] = { ENGINE_KIND_CLONE_STRUCTURE, ENGINE_KIND_COPY_VOLUMES_DATA,
                                                       ENGINE_KIND_COPY_WITH_DATA, ENGINE_KIND_CREATE_DISK,
                                                       ENGINE_KIND_MOVE_DISK, ENGINE_KIND_COPY_DISK,
                                                       ENGINE_KIND_REMOVE_DISK };

        for (size_t i = 0; i < G_N_ELEMENTS(leaves); i++)
                engine_flow_register(leaves[i], leaf_advance, false);
        for (size_t i = 0; i < G_N_ELEMENTS(composites); i++)
                engine_flow_register(composites[i], composite_advance_tx, true);
        engine_hosts_subscribe(e, &listener);
        e->busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        e->picking = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) engine_pick_free);
        job_events = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) json_decref);
        return 0;
}
