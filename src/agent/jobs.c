/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include "agent.h"
#include "error.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "log.h"
#include "prom.h"
#include "rategov.h"
#include "uuid.h"

/* Job durations, seconds: metadata jobs take well under a second, copies minutes to hours. */
static const double duration_bounds[] = { 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600 };

struct agent_job {
        struct agent_jobs *jobs;
        char *id;
        char *job_type;
        char *description;
        char *flow_id;                 /* the creating request's VDSM flow id, NULL if none */
        const char *method;            /* the RPC method that created it (static), "internal" otherwise */
        gint64 run_start;              /* monotonic µs when it started running, 0 before */
        enum agent_job_status status;
        gint progress_bp;              /* basis points 0..10000; the job thread writes under jobs->flow_lock */
        gint progress_sent;            /* last value announced in an event; main thread */
        const char *phase;             /* static string or NULL; the job thread writes under jobs->flow_lock */
        gint phase_progress_bp;        /* the phase's own progress, basis points; -1: none; as phase */
        gint phase_progress_sent;      /* last value announced in an event; main thread */
        const char *phase_sent;        /* the phase (as reported, rate_wait included) last announced; main thread */
        struct agent_rate_flow *flow;  /* whose bytes are the job's bytes_done; under jobs->flow_lock */
        guint64 bytes_done;            /* last read from flow; under jobs->flow_lock */
        guint64 bytes_base;            /* a resumed copy's kept prefix, counted as done; under jobs->flow_lock */
        GError *error;                 /* set when failed */
        GCancellable *cancel;
        GThread *thread;
        agent_job_run_fn run;
        void *data;
        GDestroyNotify data_free;
        gint64 start_time;             /* wall clock, seconds */
        gint64 end_time;
        guint autodelete_source;
        json_t *result_value;          /* what a done job produced (main thread) */
        /* Written by the thread before it hands over to the main thread. */
        int result;
        GError *thread_error;
        json_t *thread_result;
};

struct agent_jobs {
        struct agent *agent;
        GHashTable *table;             /* id → struct agent_job* (owned) */
        GQueue pending;                /* struct agent_job* in arrival order */
        unsigned running;
        unsigned max_running;
        unsigned autodelete;
        guint progress_timer;
        bool shutting_down;
        GHashTable *durations;         /* "method\nstatus" → struct fy_prom_histogram* */
        GMutex flow_lock;              /* a job's flow, bytes, kept prefix, progress and phase: job thread writes, main reads */
};

static void histogram_free(gpointer data)
{
        struct fy_prom_histogram *h = data;

        fy_prom_histogram_clear(h);
        g_free(h);
}

/* Sets the thread's log context to the job's; restore with fy_log_context_restore(saved). */
static void job_log_context(const struct agent_job *job, struct fy_log_context *saved)
{
        fy_log_context_set(job->id, job->flow_id, saved);
}

const char *agent_job_status_to_string(enum agent_job_status s)
{
        switch (s) {
        case AGENT_JOB_PENDING: return "pending";
        case AGENT_JOB_RUNNING: return "running";
        case AGENT_JOB_DONE: return "done";
        case AGENT_JOB_FAILED: return "failed";
        case AGENT_JOB_ABORTING: return "aborting";
        case AGENT_JOB_ABORTED: return "aborted";
        }
        return "unknown";
}

static bool job_finished(const struct agent_job *job)
{
        return job->status == AGENT_JOB_DONE || job->status == AGENT_JOB_FAILED ||
               job->status == AGENT_JOB_ABORTED;
}

static void job_free(struct agent_job *job)
{
        g_assert(!job->thread);
        if (job->autodelete_source)
                g_source_destroy(g_main_context_find_source_by_id(job->jobs->agent->main_context,
                                                                  job->autodelete_source));
        if (job->data_free)
                job->data_free(job->data);
        g_clear_error(&job->error);
        g_clear_error(&job->thread_error);
        json_decref(job->result_value);
        json_decref(job->thread_result);
        g_clear_object(&job->cancel);
        g_free(job->id);
        g_free(job->job_type);
        g_free(job->description);
        g_free(job->flow_id);
        g_free(job);
}

/*
 * What a job reports of its work, read as one snapshot (main thread): the
 * job thread writes its progress, phase and kept prefix under flow_lock,
 * which this holds while it reads them and the flow's count once. So a
 * sample never mixes two moments: a resumed copy's phase, kept prefix and progress change in
 * one step, and as the raw copier counts a chunk before it moves it and
 * reports progress after it landed, its bytes lead its progress by at most
 * the data in flight (and trail it by the holes passed, which progress
 * counts and bytes do not), however long the caller took to get here.
 */
struct job_snapshot {
        guint64 moved;          /* bytes this job moved (only grows) */
        guint64 base;           /* a resumed copy's kept prefix */
        int progress_bp;
        const char *phase;      /* as reported: a copy asleep in a rate limiter says rate_wait */
        int phase_progress_bp;  /* -1: none */
};

static void job_snapshot(struct agent_job *job, struct job_snapshot *ret)
{
        const char *phase;

        g_mutex_lock(&job->jobs->flow_lock);
        if (job->flow)
                job->bytes_done = MAX(job->bytes_done, agent_rate_flow_moved(job->flow));
        ret->moved = job->bytes_done;
        ret->base = job->bytes_base;
        ret->progress_bp = g_atomic_int_get(&job->progress_bp);
        ret->phase_progress_bp = g_atomic_int_get(&job->phase_progress_bp);
        phase = g_atomic_pointer_get(&job->phase);
        /* A copy the cap holds back: rate_wait is not judged for stalls, copying is. */
        if ((!phase || strcmp(phase, AGENT_JOB_PHASE_COPYING) == 0) && job->flow && agent_rate_flow_waiting(job->flow))
                phase = "rate_wait";
        ret->phase = phase;
        g_mutex_unlock(&job->jobs->flow_lock);
}

/* The job's info as of snap, its snapshot. */
static json_t *job_info_of(struct agent_job *job, const struct job_snapshot *snap)
{
        json_t *info;

        info = json_pack("{s:s, s:s, s:s, s:s, s:f, s:I}",
                         "id", job->id,
                         "status", agent_job_status_to_string(job->status),
                         "description", job->description,
                         "job_type", job->job_type,
                         "progress", snap->progress_bp / 100.0,
                         "start_time", (json_int_t) job->start_time);
        /*
         * Ferry's additions (VDSM clients ignore unknown keys): what the engine
         * judges stalls and estimates the ETA on. bytes_done counts a resumed
         * copy's kept prefix, as its progress does, so the two agree;
         * bytes_moved is only what this job moved.
         */
        json_object_set_new(info, "bytes_done", json_integer((json_int_t) (snap->base + snap->moved)));
        json_object_set_new(info, "bytes_moved", json_integer((json_int_t) snap->moved));
        if (snap->phase)
                json_object_set_new(info, "phase", json_string(snap->phase));
        /* A phase with a progress of its own (a resume's prefix verification): the engine shows it and
         * judges stalls on it. */
        if (snap->phase && snap->phase_progress_bp >= 0)
                json_object_set_new(info, "phase_progress", json_real(snap->phase_progress_bp / 100.0));
        if (job->end_time)
                json_object_set_new(info, "end_time", json_integer(job->end_time));
        if (job->result_value)
                json_object_set(info, "result", job->result_value);
        if (job->error)
                json_object_set_new(info, "error", json_pack("{s:i, s:s}",
                                                             "code", job->error->domain == FY_ERROR ? job->error->code : FY_ERR_GENERAL,
                                                             "message", job->error->message));
        return info;
}

static json_t *job_info(struct agent_job *job)
{
        struct job_snapshot snap;

        job_snapshot(job, &snap);
        return job_info_of(job, &snap);
}

/* VDSM's shape: notify('|jobs|status|<id>', params=job.info()), and its notifier adds notify_time (ms, monotonic). */
static void job_notify(struct agent_job *job)
{
        g_autofree char *method = g_strdup_printf("|jobs|status|%s", job->id);
        struct job_snapshot snap;
        json_t *params;

        /* What changes after the snapshot is announced at the next tick. */
        job_snapshot(job, &snap);
        job->phase_sent = snap.phase;
        job->progress_sent = snap.progress_bp;
        job->phase_progress_sent = snap.phase_progress_bp;
        params = job_info_of(job, &snap);
        json_object_set_new(params, "notify_time", json_integer(g_get_monotonic_time() / 1000));
        agent_emit_event(job->jobs->agent, method, params);
        json_decref(params);
}

static gboolean job_autodelete(gpointer data)
{
        struct agent_job *job = data;

        job->autodelete_source = 0;
        g_hash_table_remove(job->jobs->table, job->id);
        return G_SOURCE_REMOVE;
}

static void jobs_start_pending(struct agent_jobs *jobs);

/*
 * Always queued, never run in place: g_main_context_invoke() would run the
 * callback in the calling job thread whenever it can acquire the context
 * (e.g. while the main thread is between iterations at shutdown).
 */
static guint attach_idle(GMainContext *context, GSourceFunc fn, gpointer data)
{
        g_autoptr(GSource) source = g_idle_source_new();

        g_source_set_callback(source, fn, data, NULL);
        return g_source_attach(source, context);
}

static guint attach_timeout(GMainContext *context, guint ms, GSourceFunc fn, gpointer data)
{
        g_autoptr(GSource) source = g_timeout_source_new(ms);

        g_source_set_callback(source, fn, data, NULL);
        return g_source_attach(source, context);
}

/* Main thread: a job that ran has ended. */
static void job_observe_duration(struct agent_job *job)
{
        g_autofree char *key = NULL;
        struct fy_prom_histogram *h;

        if (!job->run_start)
                return;
        key = g_strdup_printf("%s\n%s", job->method, agent_job_status_to_string(job->status));
        h = g_hash_table_lookup(job->jobs->durations, key);
        if (!h) {
                h = g_new0(struct fy_prom_histogram, 1);
                fy_prom_histogram_init(h, duration_bounds, G_N_ELEMENTS(duration_bounds));
                g_hash_table_insert(job->jobs->durations, g_steal_pointer(&key), h);
        }
        fy_prom_histogram_observe(h, (double) (g_get_monotonic_time() - job->run_start) / G_USEC_PER_SEC);
}

/* Main thread: the job's thread has returned. */
static gboolean job_thread_done(gpointer data)
{
        struct agent_job *job = data;
        struct agent_jobs *jobs = job->jobs;
        struct fy_log_context saved;

        g_thread_join(job->thread);
        job->thread = NULL;
        jobs->running--;

        if (job->result == 0) {
                job->status = AGENT_JOB_DONE;
                g_atomic_int_set(&job->progress_bp, 10000);
                job->result_value = g_steal_pointer(&job->thread_result);
        } else if (job->result == -ECANCELED || g_cancellable_is_cancelled(job->cancel)) {
                job->status = AGENT_JOB_ABORTED;
                job->error = g_error_new(FY_ERROR, FY_ERR_ABORTED, "job %s was aborted", job->id);
                g_clear_error(&job->thread_error);
        } else {
                job->status = AGENT_JOB_FAILED;
                job->error = job->thread_error ? job->thread_error :
                             g_error_new(FY_ERROR, FY_ERR_GENERAL, "job failed: %s", g_strerror(-job->result));
                job->thread_error = NULL;
        }
        job->end_time = g_get_real_time() / G_USEC_PER_SEC;
        job_observe_duration(job);
        job_log_context(job, &saved);
        g_log("ferry-agent", job->status == AGENT_JOB_DONE ? G_LOG_LEVEL_MESSAGE : G_LOG_LEVEL_WARNING,
              "job %s (%s) %s%s%s", job->id, job->description, agent_job_status_to_string(job->status),
              job->error ? ": " : "", job->error ? job->error->message : "");
        fy_log_context_restore(&saved);
        job_notify(job);
        if (jobs->autodelete)
                job->autodelete_source = attach_timeout(jobs->agent->main_context, jobs->autodelete * 1000, job_autodelete, job);
        if (!jobs->shutting_down)
                jobs_start_pending(jobs);
        return G_SOURCE_REMOVE;
}

static gpointer job_thread(gpointer data)
{
        struct agent_job *job = data;

        /* Everything the job logs carries its id and its request's flow id. */
        job_log_context(job, NULL);
        job->result = job->run(job, job->data, job->cancel, &job->thread_error);
        if (job->result < 0 && !job->thread_error && job->result != -ECANCELED)
                job->thread_error = g_error_new(FY_ERROR, FY_ERR_GENERAL, "%s", g_strerror(-job->result));
        attach_idle(job->jobs->agent->main_context, job_thread_done, job);
        return NULL;
}

static void jobs_start_pending(struct agent_jobs *jobs)
{
        while (jobs->running < jobs->max_running && !g_queue_is_empty(&jobs->pending)) {
                struct agent_job *job = g_queue_pop_head(&jobs->pending);
                g_autofree char *name = g_strdup_printf("job-%.8s", job->id);
                struct fy_log_context saved;

                job->status = AGENT_JOB_RUNNING;
                job->start_time = g_get_real_time() / G_USEC_PER_SEC;
                job->run_start = g_get_monotonic_time();
                jobs->running++;
                job->thread = g_thread_new(name, job_thread, job);
                job_log_context(job, &saved);
                g_message("job %s (%s) running", job->id, job->description);
                fy_log_context_restore(&saved);
                job_notify(job);
        }
}

static gboolean progress_tick(gpointer data)
{
        struct agent_jobs *jobs = data;
        GHashTableIter it;
        gpointer value;

        g_hash_table_iter_init(&it, jobs->table);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct agent_job *job = value;
                struct job_snapshot snap;

                if (job->status != AGENT_JOB_RUNNING && job->status != AGENT_JOB_ABORTING)
                        continue;
                job_snapshot(job, &snap);
                /* A change of phase too: the engine judges stalls on the last event between polls. */
                if (snap.progress_bp != job->progress_sent || snap.phase_progress_bp != job->phase_progress_sent ||
                    g_strcmp0(snap.phase, job->phase_sent) != 0)
                        job_notify(job);
        }
        return G_SOURCE_CONTINUE;
}

struct agent_jobs *agent_jobs_new(struct agent *agent, unsigned max_running, unsigned autodelete_seconds)
{
        struct agent_jobs *jobs = g_new0(struct agent_jobs, 1);

        jobs->agent = agent;
        jobs->table = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) job_free);
        g_queue_init(&jobs->pending);
        jobs->max_running = max_running;
        jobs->autodelete = autodelete_seconds;
        jobs->progress_timer = attach_timeout(agent->main_context, 1000, progress_tick, jobs);
        jobs->durations = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, histogram_free);
        g_mutex_init(&jobs->flow_lock);
        return jobs;
}

void agent_jobs_set_max_running(struct agent_jobs *jobs, unsigned max_running)
{
        /* Fewer slots: running jobs finish, new ones wait. More: pending ones start now. */
        jobs->max_running = max_running;
        if (!jobs->shutting_down)
                jobs_start_pending(jobs);
}

void agent_jobs_refuse_new(struct agent_jobs *jobs)
{
        if (jobs)
                jobs->shutting_down = true;
}

void agent_jobs_free(struct agent_jobs *jobs)
{
        GHashTableIter it;
        gpointer value;

        if (!jobs)
                return;
        jobs->shutting_down = true;
        g_queue_clear(&jobs->pending);
        g_hash_table_iter_init(&it, jobs->table);
        while (g_hash_table_iter_next(&it, NULL, &value))
                g_cancellable_cancel(((struct agent_job *) value)->cancel);
        /* Let the threads hand over so their leases and locks are released first. */
        while (jobs->running > 0)
                g_main_context_iteration(jobs->agent->main_context, TRUE);
        g_source_destroy(g_main_context_find_source_by_id(jobs->agent->main_context, jobs->progress_timer));
        g_hash_table_unref(jobs->table);
        g_hash_table_unref(jobs->durations);
        g_mutex_clear(&jobs->flow_lock);
        g_free(jobs);
}

int agent_jobs_add(struct agent_jobs *jobs, const char *job_id, const char *job_type,
                   const char *description, agent_job_run_fn run, void *data,
                   GDestroyNotify data_free, GError **error)
{
        struct agent_job *job;
        struct fy_log_context saved;

        g_autofree char *id = NULL;

        /* agent_jobs_free() still serves connections while it waits for the threads: start nothing new. */
        if (jobs->shutting_down) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "the agent is shutting down; send the job to another host or retry later");
                goto fail;
        }
        if (!fy_uuid_is_valid(job_id)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "job_id must be a UUID, got '%.64s'", job_id);
                goto fail;
        }
        /* The table is keyed by the lower-case form: check the same form. */
        id = g_ascii_strdown(job_id, -1);
        if (g_hash_table_contains(jobs->table, id)) {
                g_set_error(error, FY_ERROR, FY_ERR_JOB_EXISTS, "a job with id %s already exists", job_id);
                goto fail;
        }
        if (g_hash_table_size(jobs->table) >= AGENT_JOBS_MAX) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "too many jobs (%d); delete finished jobs with Job.delete or wait for their autodelete",
                            AGENT_JOBS_MAX);
                goto fail;
        }

        job = g_new0(struct agent_job, 1);
        job->jobs = jobs;
        job->id = g_steal_pointer(&id);
        job->job_type = g_strdup(job_type ? job_type : "");
        job->description = g_strdup(description ? description : "");
        job->status = AGENT_JOB_PENDING;
        job->phase_progress_bp = job->phase_progress_sent = -1;
        job->cancel = g_cancellable_new();
        job->run = run;
        job->data = data;
        job->data_free = data_free;
        job->start_time = g_get_real_time() / G_USEC_PER_SEC;
        /* Called from an RPC handler: the request's flow id is the thread's log correlation id. */
        job->flow_id = g_strdup(fy_log_correlation_id());
        job->method = fy_rpc_current_method() ? fy_rpc_current_method() : "internal";
        g_hash_table_insert(jobs->table, job->id, job);
        g_queue_push_tail(&jobs->pending, job);
        job_log_context(job, &saved);
        g_message("job %s (%s) scheduled", job->id, job->description);
        fy_log_context_restore(&saved);
        job_notify(job);
        jobs_start_pending(jobs);
        return 0;
fail:
        if (data_free)
                data_free(data);
        return -EINVAL;
}

static struct agent_job *job_lookup(struct agent_jobs *jobs, const char *job_id, GError **error)
{
        g_autofree char *id = g_ascii_strdown(job_id, -1);
        struct agent_job *job = g_hash_table_lookup(jobs->table, id);

        if (!job)
                g_set_error(error, FY_ERROR, FY_ERR_NO_SUCH_JOB, "no job %.64s on this host", job_id);
        return job;
}

int agent_jobs_abort(struct agent_jobs *jobs, const char *job_id, GError **error)
{
        struct agent_job *job = job_lookup(jobs, job_id, error);
        struct fy_log_context saved;

        if (!job)
                return -ENOENT;
        switch (job->status) {
        case AGENT_JOB_PENDING:
                g_queue_remove(&jobs->pending, job);
                g_cancellable_cancel(job->cancel);
                job->status = AGENT_JOB_ABORTED;
                job->end_time = g_get_real_time() / G_USEC_PER_SEC;
                job->error = g_error_new(FY_ERROR, FY_ERR_ABORTED, "job %s was aborted before it started", job->id);
                if (jobs->autodelete)
                        job->autodelete_source = attach_timeout(jobs->agent->main_context, jobs->autodelete * 1000, job_autodelete, job);
                job_log_context(job, &saved);
                g_message("job %s aborted while pending", job->id);
                fy_log_context_restore(&saved);
                job_notify(job);
                return 0;
        case AGENT_JOB_RUNNING:
                job->status = AGENT_JOB_ABORTING;
                g_cancellable_cancel(job->cancel);
                job_log_context(job, &saved);
                g_message("job %s aborting", job->id);
                fy_log_context_restore(&saved);
                job_notify(job);
                return 0;
        case AGENT_JOB_ABORTING:
                return 0;
        default:
                g_set_error(error, FY_ERROR, FY_ERR_JOB_NOT_ACTIVE, "job %s is %s; only pending or running jobs can be aborted",
                            job->id, agent_job_status_to_string(job->status));
                return -EBUSY;
        }
}

int agent_jobs_delete(struct agent_jobs *jobs, const char *job_id, GError **error)
{
        struct agent_job *job = job_lookup(jobs, job_id, error);

        if (!job)
                return -ENOENT;
        if (!job_finished(job)) {
                g_set_error(error, FY_ERROR, FY_ERR_JOB_NOT_DONE, "job %s is %s; abort it first or wait until it ends",
                            job->id, agent_job_status_to_string(job->status));
                return -EBUSY;
        }
        g_hash_table_remove(jobs->table, job->id);
        return 0;
}

json_t *agent_jobs_info(struct agent_jobs *jobs, const char *job_type, json_t *job_ids)
{
        json_t *out = json_object();
        GHashTableIter it;
        gpointer value;

        g_hash_table_iter_init(&it, jobs->table);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                struct agent_job *job = value;

                if (job_type && strcmp(job_type, job->job_type) != 0)
                        continue;
                if (job_ids) {
                        bool wanted = false;
                        size_t i;
                        json_t *v;

                        json_array_foreach(job_ids, i, v)
                                if (json_is_string(v) && g_ascii_strcasecmp(json_string_value(v), job->id) == 0)
                                        wanted = true;
                        if (!wanted)
                                continue;
                }
                json_object_set_new(out, job->id, job_info(job));
        }
        return out;
}

void agent_jobs_counts(struct agent_jobs *jobs, unsigned *ret_running, unsigned *ret_pending)
{
        *ret_running = jobs->running;
        *ret_pending = g_queue_get_length(&jobs->pending);
}

void agent_job_set_result(struct agent_job *job, json_t *result)
{
        json_decref(job->thread_result);
        job->thread_result = result;
}

static int progress_to_bp(double progress)
{
        return (int) (CLAMP(progress, 0.0, 100.0) * 100.0);
}

/* The job thread's writes of what job_snapshot reads: under flow_lock, so a snapshot is of one moment. */
void agent_job_set_progress(struct agent_job *job, double progress)
{
        int bp = progress_to_bp(progress);

        g_mutex_lock(&job->jobs->flow_lock);
        g_atomic_int_set(&job->progress_bp, bp);
        g_mutex_unlock(&job->jobs->flow_lock);
}

void agent_job_begin_phase(struct agent_job *job, const char *phase, double phase_progress)
{
        int bp = phase_progress < 0 ? -1 : progress_to_bp(phase_progress);

        g_mutex_lock(&job->jobs->flow_lock);
        g_atomic_int_set(&job->phase_progress_bp, bp);
        g_atomic_pointer_set(&job->phase, phase);
        g_mutex_unlock(&job->jobs->flow_lock);
}

void agent_job_set_phase(struct agent_job *job, const char *phase)
{
        agent_job_begin_phase(job, phase, -1);  /* a new phase has no progress until it says */
}

void agent_job_set_phase_progress(struct agent_job *job, double progress)
{
        int bp = progress_to_bp(progress);

        g_mutex_lock(&job->jobs->flow_lock);
        g_atomic_int_set(&job->phase_progress_bp, bp);
        g_mutex_unlock(&job->jobs->flow_lock);
}

void agent_job_count_flow(struct agent_job *job, struct agent_rate_flow *flow)
{
        g_mutex_lock(&job->jobs->flow_lock);
        if (job->flow)
                job->bytes_done = MAX(job->bytes_done, agent_rate_flow_moved(job->flow));
        job->flow = flow;
        g_mutex_unlock(&job->jobs->flow_lock);
}

void agent_job_copy_from(struct agent_job *job, guint64 base, guint64 total)
{
        g_mutex_lock(&job->jobs->flow_lock);
        job->bytes_base = base;
        if (total > 0)
                g_atomic_int_set(&job->progress_bp, progress_to_bp(100.0 * (double) base / (double) total));
        g_atomic_int_set(&job->phase_progress_bp, -1);
        g_atomic_pointer_set(&job->phase, AGENT_JOB_PHASE_COPYING);
        g_mutex_unlock(&job->jobs->flow_lock);
}

struct agent *agent_job_agent(struct agent_job *job)
{
        return job->jobs->agent;
}

const char *agent_job_id(struct agent_job *job)
{
        return job->id;
}

void agent_jobs_metrics(struct agent_jobs *jobs, struct fy_prom *p)
{
        GList *keys;

        fy_prom_family(p, "ferry_agent_jobs", FY_PROM_GAUGE, "Jobs of this host by state: running, or pending for a free slot.");
        fy_prom_sample(p, "ferry_agent_jobs", (const char *[]) { "state", "running", NULL }, jobs->running);
        fy_prom_sample(p, "ferry_agent_jobs", (const char *[]) { "state", "pending", NULL },
                       g_queue_get_length(&jobs->pending));
        fy_prom_family(p, "ferry_agent_jobs_limit", FY_PROM_GAUGE, "Jobs this host runs at once (max_jobs).");
        fy_prom_sample(p, "ferry_agent_jobs_limit", NULL, jobs->max_running);

        fy_prom_family(p, "ferry_agent_job_duration_seconds", FY_PROM_HISTOGRAM,
                       "Run time of the jobs that ended, by the RPC method that created them and their end status.");
        keys = g_list_sort(g_hash_table_get_keys(jobs->durations), (GCompareFunc) g_strcmp0);   /* stable output */
        for (GList *l = keys; l; l = l->next) {
                const char *key = l->data;
                const char *nl = strchr(key, '\n');
                g_autofree char *method = g_strndup(key, nl - key);

                fy_prom_histogram_write(p, "ferry_agent_job_duration_seconds",
                                        (const char *[]) { "method", method, "status", nl + 1, NULL },
                                        g_hash_table_lookup(jobs->durations, key));
        }
        g_list_free(keys);
}
