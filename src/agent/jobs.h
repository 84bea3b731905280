/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Job framework (DESIGN §5). The table lives in the main thread; each
 * running job has its own thread executing its run function. States:
 * pending → running → done | failed | aborted, with aborting while an abort
 * is in progress. At most max_running jobs run, the rest wait as pending.
 */

#include <gio/gio.h>
#include <jansson.h>

#define AGENT_JOBS_MAX 10000   /* jobs kept in the table, finished ones included */

struct agent;
struct fy_prom;
struct agent_jobs;
struct agent_job;

enum agent_job_status {
        AGENT_JOB_PENDING,
        AGENT_JOB_RUNNING,
        AGENT_JOB_DONE,
        AGENT_JOB_FAILED,
        AGENT_JOB_ABORTING,
        AGENT_JOB_ABORTED,
};

/* Runs in the job's thread. Returns 0, -ECANCELED after an abort, or -errno with *error set. */
typedef int (*agent_job_run_fn)(struct agent_job *job, void *data, GCancellable *cancel, GError **error);

struct agent_jobs *agent_jobs_new(struct agent *agent, unsigned max_running, unsigned autodelete_seconds);
/* From now on agent_jobs_add() refuses ("shutting down"); running jobs go on. */
void agent_jobs_refuse_new(struct agent_jobs *jobs);
/* Main thread: a new number of job slots (SIGHUP reload). */
void agent_jobs_set_max_running(struct agent_jobs *jobs, unsigned max_running);
/* Aborts every job and waits for the threads. */
void agent_jobs_free(struct agent_jobs *jobs);

int agent_jobs_add(struct agent_jobs *jobs, const char *job_id, const char *job_type,
                   const char *description, agent_job_run_fn run, void *data,
                   GDestroyNotify data_free, GError **error);
int agent_jobs_abort(struct agent_jobs *jobs, const char *job_id, GError **error);
int agent_jobs_delete(struct agent_jobs *jobs, const char *job_id, GError **error);
/* {job_id: info}; job_type and job_ids (array of strings) filter when non-NULL. */
json_t *agent_jobs_info(struct agent_jobs *jobs, const char *job_type, json_t *job_ids);
void agent_jobs_counts(struct agent_jobs *jobs, unsigned *ret_running, unsigned *ret_pending);
/* ferry_agent_jobs{state}, ferry_agent_jobs_limit, ferry_agent_job_duration_seconds{method,status}. Main thread. */
void agent_jobs_metrics(struct agent_jobs *jobs, struct fy_prom *p);

/* From the job thread, before it returns: what a done job reports as "result" in its info (stolen). */
void agent_job_set_result(struct agent_job *job, json_t *result);
/*
 * Thread safe, from the job thread: 0..100. It and the setters below take
 * the jobs' flow lock: never call them with a rate governor's lock held.
 */
void agent_job_set_progress(struct agent_job *job, double progress);
/*
 * Thread safe, from the job thread: what the job does now (a static string:
 * AGENT_JOB_PHASE_*), reported as "phase" in its info; the engine judges
 * stalls only in a phase where a healthy job moves bytes (copying) or ends
 * soon (preparing); see src/engine/stall.c's table.
 */
#define AGENT_JOB_PHASE_PREPARING "preparing"                /* leases, metadata, checks */
#define AGENT_JOB_PHASE_WAITING_LOCK "waiting_lock"          /* host-local image locks another job holds */
#define AGENT_JOB_PHASE_VERIFYING_PREFIX "verifying_prefix"  /* resume: checksums of the kept prefix */
#define AGENT_JOB_PHASE_COPYING "copying"                    /* moves bytes */
#define AGENT_JOB_PHASE_PREALLOCATING "preallocating"        /* fallocate of the destination */
#define AGENT_JOB_PHASE_FINISHING "finishing"                /* checks and metadata after the data */
void agent_job_set_phase(struct agent_job *job, const char *phase);
/* As agent_job_set_phase, with the phase's own progress (below; negative: none) set in the same step. */
void agent_job_begin_phase(struct agent_job *job, const char *phase, double phase_progress);
/*
 * Thread safe, from the job thread: the current phase's own progress, 0..100,
 * reported as "phase_progress" until the phase changes (a resumed copy's
 * prefix verification, whose hashing moves no bytes of the copy: the engine
 * shows it and judges stalls on it).
 */
void agent_job_set_phase_progress(struct agent_job *job, double progress);
/*
 * From the job thread: the job's "bytes_done" is what flow (one per job)
 * moved; NULL before the flow leaves (the count it reached stays).
 */
struct agent_rate_flow;
void agent_job_count_flow(struct agent_job *job, struct agent_rate_flow *flow);
/*
 * From the job thread: a raw copy starts copying, with a kept prefix of base
 * bytes (0: not resumed) of a source of total bytes. In one step its phase
 * becomes copying and the prefix is counted in its "bytes_done" and, if
 * total is not 0, its progress (so the two agree: the engine's ETA scales
 * one by the other), not in "bytes_moved" (what this job moved).
 */
void agent_job_copy_from(struct agent_job *job, guint64 base, guint64 total);
struct agent *agent_job_agent(struct agent_job *job);
const char *agent_job_id(struct agent_job *job);

const char *agent_job_status_to_string(enum agent_job_status s);
