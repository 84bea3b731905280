/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The job table: state changes and their events, limits on running jobs,
 * abort/delete/autodelete, info filters, shutdown. Job run functions block
 * on a condition variable until the test lets them go; the test is the main
 * thread and owns the default main context like g_main_loop_run() does in
 * the agent.
 */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <glib.h>
#include <gio/gio.h>
#include <jansson.h>

#include "agent.h"
#include "error.h"
#include "jobs.h"
#include "jsonrpc.h"      /* g_autoptr(json_t) */
#include "log.h"
#include "prom.h"
#include "rategov.h"

#define ID_A "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f1"
#define ID_B "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f2"
#define ID_C "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f3"
#define ID_A_UPPER "0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F1"
#define ID_C_UPPER "0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F3"
#define NO_SUCH_ID "ffffffff-4e5f-4071-8293-a4b5c6d7e8f1"

#define TIMEOUT_USEC (5 * G_USEC_PER_SEC)

static struct agent agent;
static GThread *main_thread;

/* ---- events ---- */

struct event {
        char *method;
        json_t *params;
};

static GPtrArray *events;

static void event_free(gpointer p)
{
        struct event *e = p;

        g_free(e->method);
        json_decref(e->params);
        g_free(e);
}

void agent_emit_event(struct agent *a, const char *method, json_t *params)
{
        struct event *e = g_new0(struct event, 1);

        /* Events go out through the sockets: only ever from the main thread. */
        g_assert_true(a == &agent);
        g_assert_true(g_thread_self() == main_thread);
        e->method = g_strdup(method);
        e->params = json_deep_copy(params);
        g_ptr_array_add(events, e);
}

/* The info of job id in event i, after checking the event's shape. */
static json_t *event_info(guint i, const char *id)
{
        struct event *e;
        g_autofree char *method = g_strdup_printf("|jobs|status|%s", id);
        json_t *info;

        g_assert_cmpuint(i, <, events->len);
        e = g_ptr_array_index(events, i);
        g_assert_cmpstr(e->method, ==, method);
        /* VDSM's shape: the params are the job's info itself, plus notify_time. */
        info = e->params;
        g_assert_true(json_is_object(info));
        g_assert_true(json_is_integer(json_object_get(info, "notify_time")));
        g_assert_null(json_object_get(info, id));
        g_assert_cmpstr(json_string_value(json_object_get(info, "id")), ==, id);
        g_assert_true(json_is_string(json_object_get(info, "status")));
        g_assert_true(json_is_string(json_object_get(info, "description")));
        g_assert_true(json_is_string(json_object_get(info, "job_type")));
        g_assert_true(json_is_number(json_object_get(info, "progress")));
        return info;
}

/* "pending,running,done": the statuses announced for job id, in order. */
static char *event_statuses(const char *id)
{
        g_autofree char *method = g_strdup_printf("|jobs|status|%s", id);
        GString *s = g_string_new(NULL);

        for (guint i = 0; i < events->len; i++) {
                struct event *e = g_ptr_array_index(events, i);

                if (strcmp(e->method, method) != 0)
                        continue;
                g_string_append_printf(s, "%s%s", s->len ? "," : "",
                                       json_string_value(json_object_get(event_info(i, id), "status")));
        }
        return g_string_free(s, FALSE);
}

/* The info in the last event announced for job id. */
static json_t *last_event_info(const char *id)
{
        g_autofree char *method = g_strdup_printf("|jobs|status|%s", id);

        for (guint i = events->len; i > 0; i--) {
                struct event *e = g_ptr_array_index(events, i - 1);

                if (strcmp(e->method, method) == 0)
                        return event_info(i - 1, id);
        }
        g_error("no event for job %s", id);
}

/* ---- controllable run function ---- */

struct ctl {
        GMutex lock;
        GCond cond;
        int calls;
        int frees;
        bool started;
        bool release;          /* test → job: return now */
        bool wait_cancel;      /* return -ECANCELED once the cancellable fires */
        bool saw_cancel;
        bool returned;
        double progress;       /* set on start when >= 0 */
        int result;
        GQuark err_domain;
        int err_code;
        const char *err_msg;
        struct agent_job *job;
};

static void ctl_init(struct ctl *c)
{
        memset(c, 0, sizeof(*c));
        g_mutex_init(&c->lock);
        g_cond_init(&c->cond);
        c->progress = -1;
}

static void ctl_clear(struct ctl *c)
{
        g_mutex_clear(&c->lock);
        g_cond_clear(&c->cond);
}

static void ctl_free_data(gpointer data)
{
        struct ctl *c = data;

        g_assert_true(g_thread_self() == main_thread);
        g_mutex_lock(&c->lock);
        c->frees++;
        g_mutex_unlock(&c->lock);
}

static int run_job(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct ctl *c = data;
        int r;

        g_assert_true(g_thread_self() != main_thread);
        g_mutex_lock(&c->lock);
        c->calls++;
        c->job = job;
        if (c->progress >= 0)
                agent_job_set_progress(job, c->progress);
        c->started = true;
        g_cond_broadcast(&c->cond);
        while (!c->release) {
                if (c->wait_cancel && g_cancellable_is_cancelled(cancel)) {
                        c->saw_cancel = true;
                        break;
                }
                /* The cancellable does not signal our cond: poll it. */
                g_cond_wait_until(&c->cond, &c->lock, g_get_monotonic_time() + 5 * G_TIME_SPAN_MILLISECOND);
        }
        r = c->saw_cancel ? -ECANCELED : c->result;
        if (r < 0 && r != -ECANCELED && c->err_msg)
                g_set_error_literal(error, c->err_domain, c->err_code, c->err_msg);
        c->returned = true;
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
        return r;
}

static void ctl_release(struct ctl *c)
{
        g_mutex_lock(&c->lock);
        c->release = true;
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
}

static void ctl_wait_started(struct ctl *c)
{
        gint64 end = g_get_monotonic_time() + TIMEOUT_USEC;

        g_mutex_lock(&c->lock);
        while (!c->started)
                if (!g_cond_wait_until(&c->cond, &c->lock, end))
                        g_error("timed out waiting for a job to start");
        g_mutex_unlock(&c->lock);
}

static int ctl_calls(struct ctl *c)
{
        int n;

        g_mutex_lock(&c->lock);
        n = c->calls;
        g_mutex_unlock(&c->lock);
        return n;
}

/* Iterates the main context until cond holds; fails instead of hanging. */
#define PUMP_UNTIL(cond) do {                                                   \
                gint64 end_ = g_get_monotonic_time() + TIMEOUT_USEC;            \
                while (!(cond)) {                                               \
                        if (g_get_monotonic_time() > end_)                      \
                                g_error("timed out waiting for %s", #cond);     \
                        if (!g_main_context_iteration(NULL, FALSE))             \
                                g_usleep(1000);                                 \
                }                                                               \
        } while (0)

/* ---- helpers over the table ---- */

static int add_job(struct agent_jobs *jobs, const char *id, const char *type, struct ctl *c, GError **error)
{
        g_autofree char *desc = g_strdup_printf("%s job", type);

        return agent_jobs_add(jobs, id, type, desc, run_job, c, ctl_free_data, error);
}

static void add_ok(struct agent_jobs *jobs, const char *id, const char *type, struct ctl *c)
{
        g_autoptr(GError) error = NULL;

        g_assert_cmpint(add_job(jobs, id, type, c, &error), ==, 0);
        g_assert_no_error(error);
}

/* New reference to the job's info, NULL when it is not in the table. */
static json_t *job_info(struct agent_jobs *jobs, const char *id)
{
        g_autoptr(json_t) ids = json_pack("[s]", id);
        g_autoptr(json_t) all = agent_jobs_info(jobs, NULL, ids);
        json_t *info = json_object_get(all, id);

        g_assert_cmpuint(json_object_size(all), <=, 1);
        return info ? json_incref(info) : NULL;
}

static bool has_status(struct agent_jobs *jobs, const char *id, const char *status)
{
        g_autoptr(json_t) info = job_info(jobs, id);

        return info && g_strcmp0(json_string_value(json_object_get(info, "status")), status) == 0;
}

static bool is_gone(struct agent_jobs *jobs, const char *id)
{
        g_autoptr(json_t) info = job_info(jobs, id);

        return !info;
}

static void assert_status(struct agent_jobs *jobs, const char *id, const char *status)
{
        g_autoptr(json_t) info = job_info(jobs, id);

        g_assert_nonnull(info);
        g_assert_cmpstr(json_string_value(json_object_get(info, "status")), ==, status);
}

static void assert_counts(struct agent_jobs *jobs, unsigned running, unsigned pending)
{
        unsigned r = 99, p = 99;

        agent_jobs_counts(jobs, &r, &p);
        g_assert_cmpuint(r, ==, running);
        g_assert_cmpuint(p, ==, pending);
}

static void assert_error_info(json_t *info, int code, const char *message_part)
{
        json_t *err = json_object_get(info, "error");

        g_assert_true(json_is_object(err));
        g_assert_cmpint(json_integer_value(json_object_get(err, "code")), ==, code);
        g_assert_nonnull(strstr(json_string_value(json_object_get(err, "message")), message_part));
}

static void setup(void)
{
        if (events)
                g_ptr_array_set_size(events, 0);
        else
                events = g_ptr_array_new_with_free_func(event_free);
}

/* ---- tests ---- */

static void test_lifecycle(void)
{
        struct agent_jobs *jobs;
        g_autoptr(json_t) info = NULL;
        g_autofree char *seq = NULL;
        json_t *ev;
        struct ctl a;

        setup();
        ctl_init(&a);
        jobs = agent_jobs_new(&agent, 2, 0);

        add_ok(jobs, ID_A, "copy", &a);
        /* Both announced from agent_jobs_add(): scheduled, then started. */
        g_assert_cmpuint(events->len, ==, 2);
        ev = event_info(0, ID_A);
        g_assert_cmpstr(json_string_value(json_object_get(ev, "status")), ==, "pending");
        g_assert_cmpstr(json_string_value(json_object_get(ev, "job_type")), ==, "copy");
        g_assert_cmpstr(json_string_value(json_object_get(ev, "description")), ==, "copy job");
        g_assert_true(json_is_real(json_object_get(ev, "progress")));
        g_assert_cmpfloat(json_real_value(json_object_get(ev, "progress")), ==, 0.0);
        g_assert_true(json_is_integer(json_object_get(ev, "start_time")));
        g_assert_null(json_object_get(ev, "end_time"));
        g_assert_null(json_object_get(ev, "error"));
        ev = event_info(1, ID_A);
        g_assert_cmpstr(json_string_value(json_object_get(ev, "status")), ==, "running");

        ctl_wait_started(&a);
        assert_status(jobs, ID_A, "running");
        assert_counts(jobs, 1, 0);

        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        info = job_info(jobs, ID_A);
        g_assert_cmpfloat(json_real_value(json_object_get(info, "progress")), ==, 100.0);
        g_assert_true(json_is_integer(json_object_get(info, "end_time")));
        g_assert_cmpint(json_integer_value(json_object_get(info, "end_time")), >=,
                        json_integer_value(json_object_get(info, "start_time")));
        g_assert_null(json_object_get(info, "error"));
        assert_counts(jobs, 0, 0);

        seq = event_statuses(ID_A);
        g_assert_cmpstr(seq, ==, "pending,running,done");
        ev = event_info(2, ID_A);
        g_assert_cmpfloat(json_real_value(json_object_get(ev, "progress")), ==, 100.0);
        g_assert_nonnull(json_object_get(ev, "end_time"));

        g_assert_cmpint(a.calls, ==, 1);
        g_assert_cmpint(a.frees, ==, 0);
        agent_jobs_free(jobs);
        g_assert_cmpint(a.frees, ==, 1);
        ctl_clear(&a);
}

static bool has_progress_event(const char *id, double progress)
{
        for (guint i = 0; i < events->len; i++) {
                json_t *info = event_info(i, id);

                if (g_strcmp0(json_string_value(json_object_get(info, "status")), "running") == 0 &&
                    json_real_value(json_object_get(info, "progress")) == progress)
                        return true;
        }
        return false;
}

static void test_progress(void)
{
        struct agent_jobs *jobs;
        g_autoptr(json_t) info = NULL;
        struct ctl a;

        setup();
        ctl_init(&a);
        a.progress = 42.5;
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        ctl_wait_started(&a);

        info = job_info(jobs, ID_A);
        g_assert_cmpfloat(json_real_value(json_object_get(info, "progress")), ==, 42.5);
        /* The periodic tick announces the change. */
        PUMP_UNTIL(has_progress_event(ID_A, 42.5));

        /* Out-of-range values are clamped. */
        agent_job_set_progress(a.job, 250.0);
        json_decref(info);
        info = job_info(jobs, ID_A);
        g_assert_cmpfloat(json_real_value(json_object_get(info, "progress")), ==, 100.0);
        agent_job_set_progress(a.job, -3.0);
        json_decref(info);
        info = job_info(jobs, ID_A);
        g_assert_cmpfloat(json_real_value(json_object_get(info, "progress")), ==, 0.0);
        g_assert_cmpstr(agent_job_id(a.job), ==, ID_A);
        g_assert_true(agent_job_agent(a.job) == &agent);

        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        agent_jobs_free(jobs);
        g_assert_cmpint(a.frees, ==, 1);
        ctl_clear(&a);
}

/* A resumed copy: bytes_done counts the kept prefix (as its progress does), bytes_moved only what it moved. */
static void test_resumed_bytes(void)
{
        struct agent_rate_gov *gov = agent_rate_gov_new(0);
        struct agent_rate_flow *flow = agent_rate_flow_join(gov);
        struct agent_jobs *jobs;
        struct ctl a;

        setup();
        ctl_init(&a);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        ctl_wait_started(&a);

        /* As sdm.c's copy: the flow counts, then it copies from the verified prefix. */
        agent_job_count_flow(a.job, flow);
        agent_job_copy_from(a.job, 176 << 20, 320 << 20);
        agent_rate_flow_charge(flow, 8 << 20);
        for (int i = 0; i < 2; i++) {
                g_autoptr(json_t) info = job_info(jobs, ID_A);

                /* The base is the progress at once: 176 of 320 MiB. */
                g_assert_cmpfloat(json_real_value(json_object_get(info, "progress")), ==, 55.0);
                g_assert_cmpstr(json_string_value(json_object_get(info, "phase")), ==, AGENT_JOB_PHASE_COPYING);
                g_assert_cmpint(json_integer_value(json_object_get(info, "bytes_done")), ==, (176 + 8) << 20);
                g_assert_cmpint(json_integer_value(json_object_get(info, "bytes_moved")), ==, 8 << 20);
                /* The flow left: the counts it reached stay. */
                agent_job_count_flow(a.job, NULL);
        }
        agent_rate_flow_leave(flow);

        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        g_autoptr(json_t) info = job_info(jobs, ID_A);
        g_assert_cmpint(json_integer_value(json_object_get(info, "bytes_done")), ==, (176 + 8) << 20);
        g_assert_cmpint(json_integer_value(json_object_get(last_event_info(ID_A), "bytes_done")), ==, (176 + 8) << 20);
        agent_jobs_free(jobs);
        agent_rate_gov_free(gov);
        ctl_clear(&a);
}

/*
 * A resumed copy's order (sdm.c, copy.c): it verifies the kept prefix
 * (phase_progress 0..100, from the phase's start), starts copying from the
 * prefix, then counts each chunk in its flow before the chunk moves and
 * reports progress once it landed. The writer below does the same with no
 * I/O, as fast as it can, for SNAP_ROUNDS jobs.
 */
#define SNAP_CHUNK      ((guint64) 1 << 20)
#define SNAP_CHUNKS     10000
#define SNAP_KEPT       4000    /* chunks of the kept prefix */
#define SNAP_ROUNDS     20

struct snap_writer {
        struct agent_job *job;
        struct agent_rate_flow *flow;
        gint go;        /* the reader is ready: the writer starts */
        gint done;
};

static gpointer snap_write(gpointer data)
{
        struct snap_writer *w = data;

        while (!g_atomic_int_get(&w->go))
                g_thread_yield();
        agent_job_begin_phase(w->job, AGENT_JOB_PHASE_VERIFYING_PREFIX, 0);
        for (unsigned i = 1; i <= 1000; i++) {
                agent_job_set_phase_progress(w->job, i / 10.0);
                g_thread_yield();       /* hashing is slower than counting: let the reader see this phase */
        }
        agent_job_copy_from(w->job, SNAP_KEPT * SNAP_CHUNK, SNAP_CHUNKS * SNAP_CHUNK);
        for (unsigned i = SNAP_KEPT + 1; i <= SNAP_CHUNKS; i++) {
                agent_rate_flow_charge(w->flow, SNAP_CHUNK);
                agent_job_set_progress(w->job, 100.0 * (double) i / SNAP_CHUNKS);
        }
        g_atomic_int_set(&w->done, 1);
        return NULL;
}

/*
 * One info is one snapshot, however long the reader takes between its
 * parts. While the prefix is verified: progress 0, and a phase_progress
 * that only grows. Once copying: bytes_done counts the prefix, and it and
 * the progress differ by at most the data in flight (here one chunk) plus
 * progress's rounding (one basis point, one chunk here). Reading the parts
 * apart let the copy run on in between: a CI run under ASan saw 40 MiB
 * between them with 32 MiB in flight.
 */
static void test_info_snapshot(void)
{
        guint64 worst = 0;
        unsigned reads = 0, verifying = 0, copying = 0;

        setup();
        for (unsigned round = 0; round < SNAP_ROUNDS; round++) {
                struct agent_rate_gov *gov = agent_rate_gov_new(0);
                struct snap_writer w = { .flow = agent_rate_flow_join(gov) };
                struct agent_jobs *jobs = agent_jobs_new(&agent, 1, 0);
                double last_pp = 0;
                GThread *t;
                struct ctl a;

                ctl_init(&a);
                add_ok(jobs, ID_A, "copy", &a);
                ctl_wait_started(&a);
                w.job = a.job;
                agent_job_count_flow(a.job, w.flow);
                t = g_thread_new("snap-writer", snap_write, &w);
                g_atomic_int_set(&w.go, 1);
                while (!g_atomic_int_get(&w.done)) {
                        g_autoptr(json_t) info = job_info(jobs, ID_A);
                        const char *phase = json_string_value(json_object_get(info, "phase"));
                        double p = json_real_value(json_object_get(info, "progress"));
                        guint64 bytes = (guint64) json_integer_value(json_object_get(info, "bytes_done"));
                        json_t *pp = json_object_get(info, "phase_progress");
                        double have = p * SNAP_CHUNKS * (double) SNAP_CHUNK / 100.0;

                        reads++;
                        if (g_strcmp0(phase, AGENT_JOB_PHASE_VERIFYING_PREFIX) == 0) {
                                g_assert_cmpfloat(p, ==, 0);
                                g_assert_nonnull(pp);
                                g_assert_cmpfloat(json_real_value(pp), >=, last_pp);
                                last_pp = json_real_value(pp);
                                verifying++;
                        } else if (g_strcmp0(phase, AGENT_JOB_PHASE_COPYING) == 0) {
                                g_assert_null(pp);
                                g_assert_cmpuint(bytes, >=, SNAP_KEPT * SNAP_CHUNK);
                                worst = MAX(worst, (guint64) fabs(have - (double) bytes));
                                copying += p < 100;
                        } else {
                                g_assert_null(phase);
                                g_assert_cmpfloat(p, ==, 0);
                                g_assert_cmpuint(bytes, ==, 0);
                        }
                }
                g_thread_join(t);
                agent_job_count_flow(a.job, NULL);
                agent_rate_flow_leave(w.flow);
                agent_rate_gov_free(gov);
                ctl_release(&a);
                PUMP_UNTIL(has_status(jobs, ID_A, "done"));
                agent_jobs_free(jobs);
                ctl_clear(&a);
        }
        g_test_message("%u reads: %u while verifying, %u while copying; worst gap %" G_GUINT64_FORMAT " bytes",
                       reads, verifying, copying, worst);
        /* Reads that raced each phase, or the test tested nothing. */
        g_assert_cmpuint(verifying, >, 0);
        g_assert_cmpuint(copying, >, 0);
        g_assert_cmpuint(worst, <=, 2 * SNAP_CHUNK);
}

static void test_failed(void)
{
        struct agent_jobs *jobs;
        g_autoptr(json_t) ia = NULL, ib = NULL, ic = NULL;
        g_autofree char *seq = NULL;
        struct ctl a, b, c;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        ctl_init(&c);
        a.result = b.result = c.result = -EIO;
        a.err_domain = FY_ERROR;
        a.err_code = FY_ERR_COPY;
        a.err_msg = "copy failed: disk on fire";
        c.err_domain = G_FILE_ERROR;
        c.err_code = G_FILE_ERROR_IO;
        c.err_msg = "read failed";
        a.release = b.release = c.release = true;

        jobs = agent_jobs_new(&agent, 3, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        add_ok(jobs, ID_C, "copy", &c);
        PUMP_UNTIL(has_status(jobs, ID_A, "failed") && has_status(jobs, ID_B, "failed") &&
                   has_status(jobs, ID_C, "failed"));

        ia = job_info(jobs, ID_A);
        assert_error_info(ia, FY_ERR_COPY, "copy failed: disk on fire");
        g_assert_cmpstr(json_string_value(json_object_get(json_object_get(ia, "error"), "message")), ==,
                        "copy failed: disk on fire");
        g_assert_nonnull(json_object_get(ia, "end_time"));
        /* Without a GError: the errno, as GeneralException. */
        ib = job_info(jobs, ID_B);
        assert_error_info(ib, FY_ERR_GENERAL, g_strerror(EIO));
        /* Errors from other domains are GeneralException with their message. */
        ic = job_info(jobs, ID_C);
        assert_error_info(ic, FY_ERR_GENERAL, "read failed");

        seq = event_statuses(ID_A);
        g_assert_cmpstr(seq, ==, "pending,running,failed");
        /* The failure event carries the error too. */
        assert_error_info(last_event_info(ID_A), FY_ERR_COPY, "disk on fire");
        assert_counts(jobs, 0, 0);
        agent_jobs_free(jobs);
        g_assert_cmpint(a.frees + b.frees + c.frees, ==, 3);
        ctl_clear(&a);
        ctl_clear(&b);
        ctl_clear(&c);
}

static void test_queue(void)
{
        struct agent_jobs *jobs;
        g_autofree char *seq_a = NULL, *seq_b = NULL;
        struct ctl a, b;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        ctl_wait_started(&a);
        assert_status(jobs, ID_A, "running");
        assert_status(jobs, ID_B, "pending");
        assert_counts(jobs, 1, 1);
        g_assert_cmpint(ctl_calls(&b), ==, 0);

        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_B, "running"));
        assert_status(jobs, ID_A, "done");
        ctl_wait_started(&b);
        assert_counts(jobs, 1, 0);

        ctl_release(&b);
        PUMP_UNTIL(has_status(jobs, ID_B, "done"));
        assert_counts(jobs, 0, 0);
        seq_a = event_statuses(ID_A);
        seq_b = event_statuses(ID_B);
        g_assert_cmpstr(seq_a, ==, "pending,running,done");
        g_assert_cmpstr(seq_b, ==, "pending,running,done");
        agent_jobs_free(jobs);
        ctl_clear(&a);
        ctl_clear(&b);
}

/* A SIGHUP reload changes the slots: more start pending jobs at once, fewer let running ones finish. */
static void test_set_max_running(void)
{
        struct agent_jobs *jobs;
        struct ctl a, b, c;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        ctl_init(&c);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        add_ok(jobs, ID_C, "copy", &c);
        ctl_wait_started(&a);
        assert_counts(jobs, 1, 2);

        agent_jobs_set_max_running(jobs, 2);
        ctl_wait_started(&b);
        assert_status(jobs, ID_B, "running");
        assert_status(jobs, ID_C, "pending");
        assert_counts(jobs, 2, 1);

        /* Down to one: both keep running, C waits until only one is left and then one more ends. */
        agent_jobs_set_max_running(jobs, 1);
        assert_counts(jobs, 2, 1);
        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        assert_status(jobs, ID_C, "pending");
        g_assert_cmpint(ctl_calls(&c), ==, 0);
        ctl_release(&b);
        PUMP_UNTIL(has_status(jobs, ID_C, "running"));
        ctl_wait_started(&c);
        ctl_release(&c);
        PUMP_UNTIL(has_status(jobs, ID_C, "done"));
        assert_counts(jobs, 0, 0);
        agent_jobs_free(jobs);
        ctl_clear(&a);
        ctl_clear(&b);
        ctl_clear(&c);
}

static void test_abort_pending(void)
{
        struct agent_jobs *jobs;
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) info = NULL;
        g_autofree char *seq = NULL;
        struct ctl a, b;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        ctl_wait_started(&a);

        /* Ids are matched case-insensitively. */
        g_assert_cmpint(agent_jobs_abort(jobs, "0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F2", &error), ==, 0);
        g_assert_no_error(error);
        /* At once, without the main loop. */
        info = job_info(jobs, ID_B);
        g_assert_cmpstr(json_string_value(json_object_get(info, "status")), ==, "aborted");
        assert_error_info(info, FY_ERR_ABORTED, ID_B);
        g_assert_nonnull(json_object_get(info, "end_time"));
        assert_counts(jobs, 1, 0);
        seq = event_statuses(ID_B);
        g_assert_cmpstr(seq, ==, "pending,aborted");

        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        /* Give a wrongly queued B the chance to start. */
        for (int i = 0; i < 20; i++) {
                g_main_context_iteration(NULL, FALSE);
                g_usleep(1000);
        }
        assert_status(jobs, ID_B, "aborted");
        g_assert_cmpint(ctl_calls(&b), ==, 0);
        assert_counts(jobs, 0, 0);
        agent_jobs_free(jobs);
        g_assert_cmpint(b.frees, ==, 1);
        ctl_clear(&a);
        ctl_clear(&b);
}

static void test_abort_running(void)
{
        struct agent_jobs *jobs;
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) info = NULL;
        g_autofree char *seq = NULL;
        struct ctl a;

        setup();
        ctl_init(&a);
        a.wait_cancel = true;
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        ctl_wait_started(&a);

        g_assert_cmpint(agent_jobs_abort(jobs, ID_A, &error), ==, 0);
        g_assert_no_error(error);
        assert_status(jobs, ID_A, "aborting");
        /* A second abort while aborting is accepted and changes nothing. */
        g_assert_cmpint(agent_jobs_abort(jobs, ID_A, &error), ==, 0);
        g_assert_no_error(error);
        /* Deleting is refused until the thread has returned. */
        g_assert_cmpint(agent_jobs_delete(jobs, ID_A, &error), <, 0);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_NOT_DONE);
        g_clear_error(&error);

        PUMP_UNTIL(has_status(jobs, ID_A, "aborted"));
        g_assert_true(a.saw_cancel);
        info = job_info(jobs, ID_A);
        assert_error_info(info, FY_ERR_ABORTED, ID_A);
        seq = event_statuses(ID_A);
        g_assert_cmpstr(seq, ==, "pending,running,aborting,aborted");
        assert_counts(jobs, 0, 0);
        agent_jobs_free(jobs);
        ctl_clear(&a);
}

static void test_abort_not_active(void)
{
        struct agent_jobs *jobs;
        g_autoptr(GError) error = NULL;
        struct ctl a, b;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        a.release = true;
        b.release = true;
        b.result = -EIO;
        jobs = agent_jobs_new(&agent, 2, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        PUMP_UNTIL(has_status(jobs, ID_A, "done") && has_status(jobs, ID_B, "failed"));

        g_assert_cmpint(agent_jobs_abort(jobs, ID_A, &error), <, 0);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_NOT_ACTIVE);
        g_assert_cmpint(error->code, ==, 84);
        g_clear_error(&error);
        g_assert_cmpint(agent_jobs_abort(jobs, ID_B, &error), <, 0);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_NOT_ACTIVE);
        g_clear_error(&error);
        assert_status(jobs, ID_A, "done");

        g_assert_cmpint(agent_jobs_abort(jobs, NO_SUCH_ID, &error), ==, -ENOENT);
        g_assert_error(error, FY_ERROR, FY_ERR_NO_SUCH_JOB);
        g_clear_error(&error);
        agent_jobs_free(jobs);
        ctl_clear(&a);
        ctl_clear(&b);
}

static void test_duplicate(void)
{
        struct agent_jobs *jobs;
        g_autoptr(GError) error = NULL;
        struct ctl a, a2;

        setup();
        ctl_init(&a);
        ctl_init(&a2);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        ctl_wait_started(&a);
        g_assert_cmpuint(events->len, ==, 2);

        g_assert_cmpint(add_job(jobs, ID_A, "copy", &a2, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_EXISTS);
        g_clear_error(&error);
        /* The rejected job's data is released at once, nothing is announced. */
        g_assert_cmpint(a2.frees, ==, 1);
        g_assert_cmpint(ctl_calls(&a2), ==, 0);
        g_assert_cmpuint(events->len, ==, 2);
        assert_status(jobs, ID_A, "running");
        assert_counts(jobs, 1, 0);

        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        /* Still a duplicate once finished. */
        g_assert_cmpint(add_job(jobs, ID_A, "copy", &a2, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_EXISTS);
        g_clear_error(&error);
        g_assert_cmpint(a2.frees, ==, 2);
        agent_jobs_free(jobs);
        g_assert_cmpint(a.frees, ==, 1);
        ctl_clear(&a);
        ctl_clear(&a2);
}

/*
 * The same UUID in upper case is the same job (ids are stored lower-cased and
 * looked up case-insensitively). Run in a subprocess: with the bug the table
 * frees the existing job and keeps its freed id as the key.
 */
static void test_duplicate_case(void)
{
        struct agent_jobs *jobs;
        g_autoptr(GError) error = NULL;
        struct ctl a, a2;

        if (!g_test_subprocess()) {
                g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
                g_test_trap_assert_passed();
                return;
        }
        setup();
        ctl_init(&a);
        ctl_init(&a2);
        a.release = true;
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));

        g_assert_cmpint(add_job(jobs, ID_A_UPPER, "copy", &a2, &error), ==, -EINVAL);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_EXISTS);
        g_assert_cmpint(a.frees, ==, 0);
        agent_jobs_free(jobs);
}

static void test_bad_id(void)
{
        static const char *bad[] = {
                "../x",
                "",
                "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f1x",
                "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f",
                "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8fg",
                "0a1b2c3d_4e5f-4071-8293-a4b5c6d7e8f1",
                "../../../../../../../../../../etc/passwd",
                NULL,
        };
        struct agent_jobs *jobs;
        g_autoptr(json_t) all = NULL;
        struct ctl a;

        setup();
        ctl_init(&a);
        jobs = agent_jobs_new(&agent, 1, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autoptr(GError) error = NULL;

                g_assert_cmpint(add_job(jobs, bad[i], "copy", &a, &error), ==, -EINVAL);
                g_assert_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS);
                g_assert_cmpint(a.frees, ==, (int) i + 1);
        }
        g_assert_cmpint(ctl_calls(&a), ==, 0);
        g_assert_cmpuint(events->len, ==, 0);
        all = agent_jobs_info(jobs, NULL, NULL);
        g_assert_cmpuint(json_object_size(all), ==, 0);
        assert_counts(jobs, 0, 0);
        agent_jobs_free(jobs);
        ctl_clear(&a);
}

static void test_delete(void)
{
        struct agent_jobs *jobs;
        g_autoptr(GError) error = NULL;
        struct ctl a, b;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        ctl_wait_started(&a);

        g_assert_cmpint(agent_jobs_delete(jobs, ID_A, &error), ==, -EBUSY);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_NOT_DONE);
        g_clear_error(&error);
        g_assert_cmpint(agent_jobs_delete(jobs, ID_B, &error), ==, -EBUSY);
        g_assert_error(error, FY_ERROR, FY_ERR_JOB_NOT_DONE);
        g_clear_error(&error);
        assert_status(jobs, ID_A, "running");
        assert_status(jobs, ID_B, "pending");

        ctl_release(&a);
        ctl_release(&b);
        PUMP_UNTIL(has_status(jobs, ID_B, "done"));
        g_assert_cmpint(agent_jobs_delete(jobs, ID_A, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(a.frees, ==, 1);
        g_assert_true(is_gone(jobs, ID_A));
        g_assert_cmpint(agent_jobs_delete(jobs, ID_A, &error), ==, -ENOENT);
        g_assert_error(error, FY_ERROR, FY_ERR_NO_SUCH_JOB);
        g_assert_cmpint(error->code, ==, 66);
        g_clear_error(&error);
        g_assert_cmpint(agent_jobs_abort(jobs, ID_A, &error), ==, -ENOENT);
        g_assert_error(error, FY_ERROR, FY_ERR_NO_SUCH_JOB);
        g_clear_error(&error);
        /* Case-insensitive lookup. */
        g_assert_cmpint(agent_jobs_delete(jobs, "0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F2", &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(b.frees, ==, 1);
        g_assert_true(is_gone(jobs, ID_B));

        /* The id can be used again. */
        ctl_release(&a);
        a.started = false;
        add_ok(jobs, ID_A, "copy", &a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        agent_jobs_free(jobs);
        g_assert_cmpint(a.frees, ==, 2);
        ctl_clear(&a);
        ctl_clear(&b);
}

static void test_autodelete(void)
{
        struct agent_jobs *jobs;
        g_autoptr(GError) error = NULL;
        struct ctl a, b;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        jobs = agent_jobs_new(&agent, 1, 1);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        ctl_wait_started(&a);

        /* An aborted pending job goes too, while A still runs. */
        g_assert_cmpint(agent_jobs_abort(jobs, ID_B, &error), ==, 0);
        g_assert_no_error(error);
        assert_status(jobs, ID_B, "aborted");
        PUMP_UNTIL(is_gone(jobs, ID_B));
        g_assert_cmpint(b.frees, ==, 1);
        assert_status(jobs, ID_A, "running");

        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        PUMP_UNTIL(is_gone(jobs, ID_A));
        g_assert_cmpint(a.frees, ==, 1);
        agent_jobs_free(jobs);
        g_assert_cmpint(a.frees, ==, 1);
        ctl_clear(&a);
        ctl_clear(&b);
}

static int cmp_str_ptr(gconstpointer a, gconstpointer b)
{
        return g_strcmp0(*(const char *const *) a, *(const char *const *) b);
}

static void assert_info(struct agent_jobs *jobs, const char *type, const char *ids_json, const char *want)
{
        g_autoptr(json_t) ids = ids_json ? json_loads(ids_json, 0, NULL) : NULL;
        g_autoptr(json_t) all = NULL;
        g_autoptr(GPtrArray) keys = g_ptr_array_new();
        g_autofree char *got = NULL;
        const char *k;
        json_t *v;

        g_assert_true(!ids_json || ids);
        all = agent_jobs_info(jobs, type, ids);
        json_object_foreach(all, k, v) {
                g_assert_cmpstr(json_string_value(json_object_get(v, "id")), ==, k);
                g_ptr_array_add(keys, (gpointer) k);
        }
        g_ptr_array_sort(keys, cmp_str_ptr);
        g_ptr_array_add(keys, NULL);
        got = g_strjoinv(",", (char **) keys->pdata);
        g_assert_cmpstr(got, ==, want);
}

static void test_info_filter(void)
{
        struct agent_jobs *jobs;
        g_autoptr(json_t) info = NULL;
        struct ctl a, b, c;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        ctl_init(&c);
        a.release = b.release = c.release = true;
        jobs = agent_jobs_new(&agent, 3, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        add_ok(jobs, ID_C, "merge", &c);
        PUMP_UNTIL(has_status(jobs, ID_A, "done") && has_status(jobs, ID_B, "done") &&
                   has_status(jobs, ID_C, "done"));

        assert_info(jobs, NULL, NULL, ID_A "," ID_B "," ID_C);
        assert_info(jobs, "copy", NULL, ID_A "," ID_B);
        assert_info(jobs, "merge", NULL, ID_C);
        assert_info(jobs, "none", NULL, "");
        assert_info(jobs, NULL, "[\"" ID_A "\", \"" ID_C_UPPER "\"]", ID_A "," ID_C);
        assert_info(jobs, "copy", "[\"" ID_A "\", \"" ID_C "\"]", ID_A);
        assert_info(jobs, "merge", "[\"" ID_A "\"]", "");
        assert_info(jobs, NULL, "[]", "");
        assert_info(jobs, NULL, "[5, null, {}, \"" ID_B "\", \"" NO_SUCH_ID "\"]", ID_B);

        info = job_info(jobs, ID_C);
        g_assert_cmpstr(json_string_value(json_object_get(info, "job_type")), ==, "merge");
        g_assert_cmpstr(json_string_value(json_object_get(info, "description")), ==, "merge job");
        g_assert_cmpstr(json_string_value(json_object_get(info, "status")), ==, "done");
        g_assert_true(json_is_real(json_object_get(info, "progress")));
        g_assert_true(json_is_integer(json_object_get(info, "start_time")));
        g_assert_true(json_is_integer(json_object_get(info, "end_time")));
        /* Ferry's addition: bytes moved (none without a rate flow); no phase unless the job sets one. */
        g_assert_cmpint(json_integer_value(json_object_get(info, "bytes_done")), ==, 0);
        g_assert_cmpint(json_integer_value(json_object_get(info, "bytes_moved")), ==, 0);
        g_assert_cmpuint(json_object_size(info), ==, 9);
        agent_jobs_free(jobs);
        ctl_clear(&a);
        ctl_clear(&b);
        ctl_clear(&c);
}

/*
 * A resume's prefix verification reports its own progress (issue 16 review):
 * "phase_progress" while the phase that set it lasts, gone with the next phase.
 */
static void test_phase_progress(void)
{
        struct agent_jobs *jobs;
        struct ctl a;

        setup();
        ctl_init(&a);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        ctl_wait_started(&a);
        agent_job_set_phase(a.job, AGENT_JOB_PHASE_VERIFYING_PREFIX);
        {
                g_autoptr(json_t) info = job_info(jobs, ID_A);

                g_assert_cmpstr(json_string_value(json_object_get(info, "phase")), ==, "verifying_prefix");
                g_assert_null(json_object_get(info, "phase_progress"));
        }
        agent_job_set_phase_progress(a.job, 42.5);
        {
                g_autoptr(json_t) info = job_info(jobs, ID_A);

                g_assert_cmpfloat(json_number_value(json_object_get(info, "phase_progress")), ==, 42.5);
                g_assert_cmpfloat(json_number_value(json_object_get(info, "progress")), ==, 0);
        }
        agent_job_set_phase(a.job, AGENT_JOB_PHASE_COPYING);
        {
                g_autoptr(json_t) info = job_info(jobs, ID_A);

                g_assert_cmpstr(json_string_value(json_object_get(info, "phase")), ==, "copying");
                g_assert_null(json_object_get(info, "phase_progress"));
        }
        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        agent_jobs_free(jobs);
        ctl_clear(&a);
}

/* The phase in the last event announced for job id ("" when it carried none). */
static const char *last_event_phase(const char *id)
{
        const char *phase = json_string_value(json_object_get(last_event_info(id), "phase"));

        return phase ? phase : "";
}

/*
 * A change of phase alone is announced at the next tick: the engine keeps
 * the last event as the job's state between its polls and judges stalls on
 * the phase, so a copy whose progress stops as it enters copying (a frozen
 * qemu-img) must not leave "preparing" there for good. A tick with nothing
 * new announces nothing.
 */
static void test_phase_announced(void)
{
        struct agent_jobs *jobs;
        struct ctl a;
        guint n;

        setup();
        ctl_init(&a);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        ctl_wait_started(&a);
        PUMP_UNTIL(events->len > 0 && has_status(jobs, ID_A, "running"));
        agent_job_set_phase(a.job, AGENT_JOB_PHASE_PREPARING);
        PUMP_UNTIL(strcmp(last_event_phase(ID_A), "preparing") == 0);
        agent_job_set_phase(a.job, AGENT_JOB_PHASE_COPYING);
        PUMP_UNTIL(strcmp(last_event_phase(ID_A), "copying") == 0);
        g_assert_cmpfloat(json_real_value(json_object_get(last_event_info(ID_A), "progress")), ==, 0);
        n = events->len;
        {
                gint64 end = g_get_monotonic_time() + 2500 * 1000;     /* two ticks and a half */

                while (g_get_monotonic_time() < end)
                        if (!g_main_context_iteration(NULL, FALSE))
                                g_usleep(1000);
        }
        g_assert_cmpuint(events->len, ==, n);
        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        agent_jobs_free(jobs);
        ctl_clear(&a);
}

static void test_free_running(void)
{
        struct agent_jobs *jobs;
        struct ctl a, b;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        a.wait_cancel = true;
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        ctl_wait_started(&a);

        agent_jobs_free(jobs);
        /* Cancelled, and the thread has returned before agent_jobs_free() did. */
        g_assert_true(a.saw_cancel);
        g_assert_true(a.returned);
        g_assert_cmpint(a.frees, ==, 1);
        /* The queued job never ran. */
        g_assert_cmpint(b.calls, ==, 0);
        g_assert_cmpint(b.frees, ==, 1);
        ctl_clear(&a);
        ctl_clear(&b);
}

/*
 * A job that returns while the main thread is not inside the main loop (in
 * the agent: between g_main_loop_run() returning and agent_jobs_free(), or
 * between its iterations). job_thread() hands over with
 * g_main_context_invoke(); for the default context that runs
 * job_thread_done() right there in the job thread if it can acquire the
 * context, which then joins itself and touches the table off the main
 * thread. Run in a subprocess: with the bug GLib aborts.
 */
static void test_complete_while_main_busy(void)
{
        struct agent_jobs *jobs;
        struct ctl a;

        if (!g_test_subprocess()) {
                g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
                g_test_trap_assert_passed();
                return;
        }
        setup();
        ctl_init(&a);
        a.release = true;
        /* Not in the main loop now: give the context up. */
        g_main_context_release(NULL);
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        ctl_wait_started(&a);
        g_usleep(300 * G_TIME_SPAN_MILLISECOND);
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        agent_jobs_free(jobs);
}

/* What a job's thread saw as its log correlation id. */
static char *seen_flow;

static int flow_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        seen_flow = g_strdup(fy_log_correlation_id());
        return 0;
}

/* A job started while a request's flow id is the thread's log context keeps it in its own thread. */
static void test_flow_id(void)
{
        struct agent_jobs *jobs;
        struct fy_log_context saved;
        g_autoptr(GError) error = NULL;

        setup();
        jobs = agent_jobs_new(&agent, 1, 0);
        fy_log_context_set(NULL, "flow-42", &saved);
        g_assert_cmpint(agent_jobs_add(jobs, ID_A, "storage", "flow", flow_run, NULL, NULL, &error), ==, 0);
        fy_log_context_restore(&saved);
        g_assert_null(fy_log_correlation_id());
        PUMP_UNTIL(has_status(jobs, ID_A, "done"));
        g_assert_cmpstr(seen_flow, ==, "flow-42");
        g_clear_pointer(&seen_flow, g_free);
        agent_jobs_free(jobs);
}

/* Counts and durations as Prometheus reads them: jobs by state, the limit, one histogram per method and end. */
static void test_metrics(void)
{
        struct agent_jobs *jobs;
        g_autoptr(fy_prom) p = fy_prom_new();
        struct ctl a, b, c;
        const char *text;

        setup();
        ctl_init(&a);
        ctl_init(&b);
        ctl_init(&c);
        b.result = -EIO;
        b.release = true;
        jobs = agent_jobs_new(&agent, 1, 0);
        add_ok(jobs, ID_A, "copy", &a);
        add_ok(jobs, ID_B, "copy", &b);
        add_ok(jobs, ID_C, "copy", &c);
        ctl_wait_started(&a);
        ctl_release(&a);
        PUMP_UNTIL(has_status(jobs, ID_B, "failed"));
        ctl_wait_started(&c);
        agent_jobs_metrics(jobs, p);
        text = fy_prom_text(p, NULL);
        g_assert_nonnull(strstr(text, "ferry_agent_jobs{state=\"running\"} 1\n"));
        g_assert_nonnull(strstr(text, "ferry_agent_jobs{state=\"pending\"} 0\n"));
        g_assert_nonnull(strstr(text, "ferry_agent_jobs_limit 1\n"));
        /* Added outside an RPC handler: method "internal". */
        g_assert_nonnull(strstr(text, "ferry_agent_job_duration_seconds_count{method=\"internal\",status=\"done\"} 1\n"));
        g_assert_nonnull(strstr(text, "ferry_agent_job_duration_seconds_count{method=\"internal\",status=\"failed\"} 1\n"));
        g_assert_nonnull(strstr(text, "ferry_agent_job_duration_seconds_bucket{method=\"internal\",status=\"done\",le=\"+Inf\"} 1\n"));
        ctl_release(&c);
        PUMP_UNTIL(has_status(jobs, ID_C, "done"));
        agent_jobs_free(jobs);
        ctl_clear(&a);
        ctl_clear(&b);
        ctl_clear(&c);
}

int main(int argc, char **argv)
{
        int r;

        g_test_init(&argc, &argv, NULL);
        /* Failed and aborted jobs log warnings: expected here, not fatal. */
        g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);

        main_thread = g_thread_self();
        agent.main_context = g_main_context_default();
        /* Own the context for the whole run, as g_main_loop_run() does in the agent. */
        g_assert_true(g_main_context_acquire(agent.main_context));

        g_test_add_func("/jobs/lifecycle", test_lifecycle);
        g_test_add_func("/jobs/progress", test_progress);
        g_test_add_func("/jobs/resumed-bytes", test_resumed_bytes);
        g_test_add_func("/jobs/info-snapshot", test_info_snapshot);
        g_test_add_func("/jobs/failed", test_failed);
        g_test_add_func("/jobs/queue", test_queue);
        g_test_add_func("/jobs/set-max-running", test_set_max_running);
        g_test_add_func("/jobs/abort-pending", test_abort_pending);
        g_test_add_func("/jobs/abort-running", test_abort_running);
        g_test_add_func("/jobs/abort-not-active", test_abort_not_active);
        g_test_add_func("/jobs/duplicate", test_duplicate);
        g_test_add_func("/jobs/duplicate-case", test_duplicate_case);
        g_test_add_func("/jobs/bad-id", test_bad_id);
        g_test_add_func("/jobs/delete", test_delete);
        g_test_add_func("/jobs/autodelete", test_autodelete);
        g_test_add_func("/jobs/info-filter", test_info_filter);
        g_test_add_func("/jobs/phase-progress", test_phase_progress);
        g_test_add_func("/jobs/phase-announced", test_phase_announced);
        g_test_add_func("/jobs/free-running", test_free_running);
        g_test_add_func("/jobs/complete-while-main-busy", test_complete_while_main_busy);
        g_test_add_func("/jobs/flow-id", test_flow_id);
        g_test_add_func("/jobs/metrics", test_metrics);
        r = g_test_run();

        g_main_context_release(agent.main_context);
        if (events)
                g_ptr_array_unref(events);
        return r;
}
