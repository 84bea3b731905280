/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qemu-img wrappers. Each call runs one child in the calling thread and
 * multiplexes its stdout, stderr and the GCancellable with poll(), so
 * progress is parsed while the child runs and a cancel kills it at once.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gio/gunixinputstream.h>
#include <jansson.h>

#include "config.h"
#include "error.h"
#include "qemuimg.h"

#define QIMG_STDERR_TAIL        1024            /* bytes of stderr kept for errors */
#define QIMG_STDOUT_MAX         (1024 * 1024)   /* cap on captured stdout (info JSON) */
#define QIMG_LINE_MAX           4096            /* one line of streamed stdout (a map extent) */
#define QIMG_UNTRUSTED_AS_MAX   (G_GUINT64_CONSTANT(1) << 30)   /* address space of a child on a client's image */
#define QIMG_UNTRUSTED_CPU_S    60                              /* CPU seconds of one such child */
/*
 * A governed convert: how often its bytes are charged; how far it may run
 * ahead of its share without being paused (qemu's own -r lets it write one
 * 100 ms slice ahead, plus a request in flight); and how much further it
 * may go before it is paused (the pause/resume cycle is about twice this).
 */
#define QIMG_RATE_TICK_MS       50
#define QIMG_LEAD_MS            150
#define QIMG_LEAD_EXTRA         (2u * 1024 * 1024)
#define QIMG_PAUSE_MS           100

struct qimg_run {
        /* in */
        gboolean capture_stdout;
        GCancellable *cancel;
        agent_copy_progress_fn progress;
        void *userdata;
        uint64_t total;                 /* progress scale; bytes of the source */
        struct agent_rate_flow *flow;   /* host bandwidth share (convert only), or NULL */
        agent_qemu_img_line_fn line_fn; /* stdout line by line (qemu-img map), instead of progress */
        void *line_data;
        bool untrusted;                 /* reads an image a client supplied: memory and CPU bounded */
        /* out */
        GString *out;                   /* captured stdout, if capture_stdout */
        char err_tail[QIMG_STDERR_TAIL + 1];
        size_t err_len;
        int exit_status;                /* -1 if killed by a signal */
        /* progress parser state: the current \r/\n-delimited line */
        char line[64];
        size_t line_len;
        uint64_t last_done;
        /* rate governor state */
        GString *stdout_line;           /* the line being assembled for line_fn */
        int line_result;                /* first error line_fn returned: the child is killed */
        bool paused;                    /* SIGSTOPped while its flow is in debt */
        bool no_proc_io;                /* /proc/PID/io unreadable: charge progress instead */
        uint64_t charged;               /* bytes charged so far (read bytes, or progress) */
        uint64_t last_activity;         /* bytes at the previous rate tick */
        gint64 asleep_since;            /* µs (monotonic) since it sleeps without moving; 0: not asleep */
        uint64_t asleep_done;           /* its progress then */
        bool overrun;                   /* that sleep outlasted agent_rate_wait_bound_us: a hang, not a wait */
};

struct child_args {
        pid_t parent;
        bool untrusted;
};

static void child_setup(gpointer data)
{
        const struct child_args *c = data;      /* the forking thread's stack, copied by fork */

        /* Dies with the thread that forked it; that thread always reaps it
         * before returning, so this covers the agent dying. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != c->parent)
                _exit(127);     /* agent died before prctl took effect */
        if (c->untrusted) {
                /* A crafted image must not make it take the host's memory or a CPU for long. */
                struct rlimit as = { QIMG_UNTRUSTED_AS_MAX, QIMG_UNTRUSTED_AS_MAX };
                struct rlimit cpu = { QIMG_UNTRUSTED_CPU_S, QIMG_UNTRUSTED_CPU_S };

                (void) setrlimit(RLIMIT_AS, &as);
                (void) setrlimit(RLIMIT_CPU, &cpu);
        }
}

static void err_tail_append(struct qimg_run *run, const char *buf, size_t n)
{
        if (n >= QIMG_STDERR_TAIL) {
                memcpy(run->err_tail, buf + n - QIMG_STDERR_TAIL, QIMG_STDERR_TAIL);
                run->err_len = QIMG_STDERR_TAIL;
        } else {
                size_t keep = MIN(run->err_len, QIMG_STDERR_TAIL - n);
                memmove(run->err_tail, run->err_tail + run->err_len - keep, keep);
                memcpy(run->err_tail + keep, buf, n);
                run->err_len = keep + n;
        }
        run->err_tail[run->err_len] = '\0';
}

/* Parses one progress line like "    (12.34/100%)". */
static void progress_line(struct qimg_run *run)
{
        const char *p;
        char *end;
        double pct;
        uint64_t done;

        run->line[run->line_len] = '\0';
        p = strchr(run->line, '(');
        if (!p || !strstr(p, "/100%)"))
                return;
        pct = g_ascii_strtod(p + 1, &end);
        if (end == p + 1 || *end != '/' || !(pct >= 0.0) || pct > 100.0)
                return;
        done = (uint64_t) ((double) run->total * pct / 100.0);
        if (done < run->last_done)
                return;
        run->last_done = done;
        if (run->progress)
                run->progress(done, run->total, run->userdata);
}

static void stdout_lines(struct qimg_run *run, const char *buf, size_t n)
{
        for (size_t i = 0; i < n && run->line_result == 0; i++) {
                if (buf[i] != '\n') {
                        if (run->stdout_line->len >= QIMG_LINE_MAX) {
                                run->line_result = -EBADMSG;
                                break;
                        }
                        g_string_append_c(run->stdout_line, buf[i]);
                        continue;
                }
                run->line_result = run->line_fn(run->stdout_line->str, run->line_data);
                g_string_truncate(run->stdout_line, 0);
        }
}

static void stdout_feed(struct qimg_run *run, const char *buf, size_t n)
{
        if (run->line_fn) {
                stdout_lines(run, buf, n);
                return;
        }
        if (run->capture_stdout) {
                size_t room = QIMG_STDOUT_MAX - MIN(run->out->len, QIMG_STDOUT_MAX);
                g_string_append_len(run->out, buf, (gssize) MIN(n, room));
                return;
        }
        for (size_t i = 0; i < n; i++) {
                if (buf[i] == '\r' || buf[i] == '\n') {
                        progress_line(run);
                        run->line_len = 0;
                } else if (run->line_len < sizeof(run->line) - 1) {
                        run->line[run->line_len++] = buf[i];
                }
        }
}

static int errno_from_gerror(const GError *e)
{
        if (e->domain == G_SPAWN_ERROR) {
                switch (e->code) {
                case G_SPAWN_ERROR_NOENT: return -ENOENT;
                case G_SPAWN_ERROR_ACCES: return -EACCES;
                case G_SPAWN_ERROR_NOMEM: return -ENOMEM;
                default: return -EIO;
                }
        }
        return -EIO;
}

/* Bytes the child has written so far ("wchar" of /proc/PID/io): what it
 * really moved; zero ranges it punched or skipped are not counted. */
static int child_written_bytes(GSubprocess *proc, uint64_t *ret_bytes)
{
        const char *id = g_subprocess_get_identifier(proc);     /* NULL once it exited */
        char path[64], buf[512];
        const char *p;
        ssize_t n;
        int fd;

        if (!id)
                return -ESRCH;
        g_snprintf(path, sizeof(path), "/proc/%s/io", id);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return -EIO;
        buf[n] = '\0';
        p = strstr(buf, "wchar: ");
        if (!p)
                return -EBADMSG;
        *ret_bytes = g_ascii_strtoull(p + 7, NULL, 10);
        return 0;
}

#define QIMG_MAX_THREADS 1024   /* threads of a child looked at; qemu-img runs a few dozen at most */

/* One thread's state letter from /proc/PID/task/TID/stat ('?' if unreadable). */
static char thread_state(const char *id, const char *tid)
{
        char path[96], buf[512];
        const char *p;
        ssize_t n;
        int fd;

        g_snprintf(path, sizeof(path), "/proc/%s/task/%s/stat", id, tid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return '?';
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return '?';
        buf[n] = '\0';
        p = strrchr(buf, ')');         /* the name may hold anything, so the state follows its last ')' */
        return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

/*
 * True when every thread of the child sleeps interruptibly (S): a capped
 * qemu-img that waits out its own limiter over a sparse image's holes. A
 * copy stuck on its storage has a thread in D (uninterruptible I/O) and a
 * frozen one is stopped (T): neither is a rate wait, so both stay judged.
 */
static bool child_sleeping(GSubprocess *proc)
{
        const char *id = g_subprocess_get_identifier(proc);
        g_autoptr(GDir) dir = NULL;
        char path[64];
        const char *tid;
        unsigned n = 0;

        if (!id)
                return false;
        g_snprintf(path, sizeof(path), "/proc/%s/task", id);
        dir = g_dir_open(path, 0, NULL);
        if (!dir)
                return false;
        while ((tid = g_dir_read_name(dir))) {
                if (++n > QIMG_MAX_THREADS || thread_state(id, tid) != 'S')
                        return false;
        }
        return n > 0;
}

/*
 * qemu-img's -r is fixed for its life, so a convert is given the whole host
 * cap and held to its fair share from outside: what it wrote is charged to
 * its flow; once it is more than QIMG_PAUSE_MS of its share beyond the lead
 * its own limiter allows, the child is stopped (SIGSTOP) until it is back
 * within the lead (SIGCONT), or at once when the cap is lifted (a reload
 * to 0). SIGKILL (cancel, PDEATHSIG) ends a stopped child as well. It
 * also tells whether the child waits (the job's rate_wait): while stopped
 * by us, or asleep in its own limiter for no longer than
 * agent_rate_wait_bound_us explains. Returns the poll timeout in ms.
 */
static int rate_tick(struct qimg_run *run, GSubprocess *proc)
{
        uint64_t bytes = 0, debt, cap = agent_rate_flow_cap(run->flow);
        uint64_t share = MAX(agent_rate_flow_share(run->flow), 1);
        uint64_t lead = cap / 1000 * QIMG_LEAD_MS + QIMG_LEAD_EXTRA;
        gint64 now = g_get_monotonic_time();
        bool asleep;

        if (!run->no_proc_io && child_written_bytes(proc, &bytes) < 0) {
                if (g_subprocess_get_identifier(proc))
                        run->no_proc_io = true;
                bytes = run->charged;
        }
        if (run->no_proc_io)
                bytes = run->last_done;        /* coarser (1 % steps), but still the right average */
        if (bytes > run->charged) {
                agent_rate_flow_charge(run->flow, bytes - run->charged);
                run->charged = bytes;
        }
        if (cap == 0) {
                /*
                 * Unlimited (from the start, or since a reload): never paused,
                 * so a child stopped under the old cap goes on now, or never.
                 */
                if (run->paused) {
                        g_subprocess_send_signal(proc, SIGCONT);
                        run->paused = false;
                }
                agent_rate_flow_set_waiting(run->flow, false);
                run->asleep_since = 0;
                return QIMG_RATE_TICK_MS;
        }
        asleep = bytes == run->last_activity && child_sleeping(proc);
        run->last_activity = bytes;
        if (!asleep || !run->asleep_since || run->last_done != run->asleep_done) {
                /* Awake, just fallen asleep, or its progress moved: a new sleep starts (or none). */
                run->asleep_since = asleep ? now : 0;
                run->asleep_done = run->last_done;
                run->overrun = false;
        } else if (!run->overrun && now - run->asleep_since > agent_rate_wait_bound_us(cap, run->total)) {
                /* Longer than its limiter explains: hung in an interruptible sleep; judged from now on. */
                run->overrun = true;
                agent_rate_flow_count_overrun(run->flow);
                g_warning("qemu-img convert wrote nothing and moved no progress for %" G_GINT64_FORMAT
                          " s at a cap of %" PRIu64 " bytes/s, longer than its rate limiter explains: "
                          "reported as copying again (judged for stalls)", (now - run->asleep_since) / G_USEC_PER_SEC,
                          cap);
        }
        /* Held by us (paused, for a time our own debt bounds) or asleep in its own limiter: a wait, not a stall. */
        agent_rate_flow_set_waiting(run->flow, run->paused || (asleep && !run->overrun));
        debt = agent_rate_flow_debt_bytes(run->flow);
        if (!run->paused && debt > lead + share / 1000 * QIMG_PAUSE_MS) {
                g_subprocess_send_signal(proc, SIGSTOP);
                run->paused = true;
        } else if (run->paused && debt <= lead) {
                g_subprocess_send_signal(proc, SIGCONT);
                run->paused = false;
        }
        if (run->paused)
                return (int) CLAMP((debt - lead) * 1000 / share, 1, QIMG_RATE_TICK_MS);
        return QIMG_RATE_TICK_MS;
}

/*
 * Runs argv to completion. Returns 0 when the child ran (whatever its exit
 * status, see run->exit_status), -ECANCELED if cancelled (child killed and
 * reaped), or -errno if it could not be started.
 */
static int qimg_run(const char *const *argv, struct qimg_run *run, GError **error)
{
        g_autoptr(GSubprocessLauncher) launcher = NULL;
        g_autoptr(GSubprocess) proc = NULL;
        g_autoptr(GError) e = NULL;
        struct child_args child = { getpid(), run->untrusted };
        GPollFD cancel_pfd = { .fd = -1 };
        bool have_cancel_fd = false;
        int fds[2];
        bool open_[2] = { true, true };
        int r = 0;

        launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                             G_SUBPROCESS_FLAGS_STDERR_PIPE);
        g_subprocess_launcher_setenv(launcher, "LC_ALL", "C", TRUE);
        g_subprocess_launcher_set_child_setup(launcher, child_setup, &child, NULL);
        proc = g_subprocess_launcher_spawnv(launcher, argv, &e);
        if (!proc) {
                r = errno_from_gerror(e);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "Cannot run %s: %s",
                            argv[0], e->message);
                return r;
        }

        fds[0] = g_unix_input_stream_get_fd(G_UNIX_INPUT_STREAM(g_subprocess_get_stdout_pipe(proc)));
        fds[1] = g_unix_input_stream_get_fd(G_UNIX_INPUT_STREAM(g_subprocess_get_stderr_pipe(proc)));
        if (run->cancel)
                have_cancel_fd = g_cancellable_make_pollfd(run->cancel, &cancel_pfd);
        if (run->line_fn)
                run->stdout_line = g_string_new(NULL);

        while (open_[0] || open_[1]) {
                struct pollfd pfd[3];
                nfds_t n = 0;
                int idx[2] = { -1, -1 };
                int timeout = -1;

                if (g_cancellable_is_cancelled(run->cancel)) {
                        r = -ECANCELED;
                        break;
                }
                if (run->line_result < 0) {
                        r = run->line_result;
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "%s output refused: %s", argv[0],
                                    g_strerror(-r));
                        break;
                }
                for (int i = 0; i < 2; i++)
                        if (open_[i]) {
                                idx[i] = (int) n;
                                pfd[n++] = (struct pollfd) { .fd = fds[i], .events = POLLIN };
                        }
                if (have_cancel_fd)
                        pfd[n++] = (struct pollfd) { .fd = cancel_pfd.fd, .events = POLLIN };
                else if (run->cancel)
                        timeout = 100;  /* no fd to wait on: poll the flag */
                if (run->flow) {
                        int t = rate_tick(run, proc);
                        timeout = timeout < 0 ? t : MIN(timeout, t);
                }

                if (poll(pfd, n, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                for (int i = 0; i < 2; i++) {
                        char buf[4096];
                        ssize_t k;

                        if (idx[i] < 0 || !(pfd[idx[i]].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        k = read(fds[i], buf, sizeof(buf));
                        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (k <= 0) {
                                open_[i] = false;
                                continue;
                        }
                        if (i == 0)
                                stdout_feed(run, buf, (size_t) k);
                        else
                                err_tail_append(run, buf, (size_t) k);
                }
        }

        if (run->flow)
                agent_rate_flow_set_waiting(run->flow, false);
        if (run->stdout_line) {
                /* The last line may lack its newline. */
                if (r == 0 && run->line_result == 0 && run->stdout_line->len > 0)
                        run->line_result = run->line_fn(run->stdout_line->str, run->line_data);
                g_string_free(run->stdout_line, TRUE);
                run->stdout_line = NULL;
        }
        if (r < 0) {
                /* Cancelled or broken: never leave the child behind. */
                g_subprocess_force_exit(proc);
                (void) g_subprocess_wait(proc, NULL, NULL);
                if (have_cancel_fd)
                        g_cancellable_release_fd(run->cancel);
                return r;
        }
        if (have_cancel_fd)
                g_cancellable_release_fd(run->cancel);
        if (run->paused)
                g_subprocess_send_signal(proc, SIGCONT);       /* never wait for a stopped child */

        /* Both pipes hit EOF: the child is exiting; reaping it is quick. */
        if (!g_subprocess_wait(proc, NULL, &e)) {
                r = errno_from_gerror(e);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "Cannot wait for %s: %s",
                            argv[0], e->message);
                return r;
        }
        run->exit_status = g_subprocess_get_if_exited(proc) ? g_subprocess_get_exit_status(proc) : -1;
        return 0;
}

/* qimg_run(), with a cancel reported as FY_ERR_ABORTED. */
static int qimg_run_abortable(const char *what, const char *const *argv, struct qimg_run *run, GError **error)
{
        int r = qimg_run(argv, run, error);

        if (r == -ECANCELED)
                g_set_error(error, FY_ERROR, FY_ERR_ABORTED, "qemu-img %s was aborted", what);
        return r;
}

static void set_child_error(GError **error, int code, const char *what, const struct qimg_run *run)
{
        g_autofree char *tail = g_strstrip(g_strdup(run->err_tail));

        if (run->exit_status < 0)
                g_set_error(error, FY_ERROR, code, "qemu-img %s was killed by a signal: %s",
                            what, tail);
        else
                g_set_error(error, FY_ERROR, code, "qemu-img %s failed (exit status %d): %s",
                            what, run->exit_status, tail);
}

static bool looks_like_odirect_failure(const char *err)
{
        return strstr(err, "O_DIRECT") || strstr(err, "cache.direct") ||
               strstr(err, "Invalid argument");
}

static bool valid_format(const char *fmt)
{
        return fmt && (strcmp(fmt, "raw") == 0 || strcmp(fmt, "qcow2") == 0);
}

/* A file name inside qemu's key=value option syntax: commas are doubled. */
static void opts_append_path(GString *s, const char *path)
{
        for (const char *p = path; *p; p++) {
                if (*p == ',')
                        g_string_append_c(s, ',');
                g_string_append_c(s, *p);
        }
}

/*
 * The destination of a layer copy, with its backing file opened read-only
 * and shared. By name, qemu-img would open the destination's parent
 * asking that no one writes it, and fail while another host copies the
 * parent's own data at the same time (parallel chain copy). This layer's
 * copy never reads the parent: with -B it writes only what the source's
 * top layer holds.
 */
static char *target_opts(const char *dst_path, const char *dst_fmt, const char *backing, const char *backing_fmt)
{
        GString *s = g_string_new(NULL);
        g_autofree char *dir = g_path_get_dirname(dst_path);
        g_autofree char *backing_path = g_path_is_absolute(backing) ? g_strdup(backing)
                                                                    : g_build_filename(dir, backing, NULL);

        g_string_append_printf(s, "driver=%s,file.driver=file,file.filename=", dst_fmt);
        opts_append_path(s, dst_path);
        g_string_append_printf(s, ",backing.driver=%s,backing.file.driver=file,backing.file.filename=", backing_fmt);
        opts_append_path(s, backing_path);
        g_string_append(s, ",backing.read-only=on,backing.force-share=on");
        return g_string_free(s, FALSE);
}

/*
 * One long qemu-img operation that reports "(NN.NN/100%)": built by build()
 * with the cache options first ("-t none"), then again without them when the
 * filesystem refuses O_DIRECT. Out of space is its own error (the engine
 * does not retry it on another host), any other failure is fail_code.
 */
typedef void (*qimg_build_fn)(GPtrArray *argv, bool direct, void *data);

static int progress_cmd(const char *what, qimg_build_fn build, void *data, uint64_t total,
                        struct agent_rate_flow *flow, GCancellable *cancel,
                        agent_copy_progress_fn progress, void *userdata, int fail_code, GError **error)
{
        if (total == 0)
                total = 10000;
        for (int direct = 1; direct >= 0; direct--) {
                struct qimg_run run = { .cancel = cancel, .progress = progress,
                                        .userdata = userdata, .total = total, .flow = flow };
                g_autoptr(GPtrArray) argv = g_ptr_array_new();
                int r;

                g_ptr_array_add(argv, (char *) FERRY_QEMU_IMG);
                build(argv, direct, data);
                g_ptr_array_add(argv, NULL);
                r = qimg_run((const char *const *) argv->pdata, &run, error);
                if (r == -ECANCELED) {
                        g_set_error(error, FY_ERROR, FY_ERR_ABORTED, "qemu-img %s was aborted", what);
                        return r;
                }
                if (r < 0)
                        return r;
                if (run.exit_status == 0) {
                        if (progress && run.last_done < total)
                                progress(total, total, userdata);
                        return 0;
                }
                if (direct && looks_like_odirect_failure(run.err_tail))
                        continue;       /* the filesystem refuses O_DIRECT: retry buffered */
                if (strstr(run.err_tail, "No space left on device")) {
                        set_child_error(error, FY_ERR_NO_SPACE, what, &run);
                        return -ENOSPC;
                }
                set_child_error(error, fail_code, what, &run);
                return -EIO;
        }
        g_assert_not_reached();
}

struct convert_args {
        const char *src_path, *src_fmt, *dst_path, *dst_fmt, *backing, *backing_fmt;
        const char *rate, *target;
};

static void convert_build(GPtrArray *argv, bool direct, void *data)
{
        const struct convert_args *c = data;

        g_ptr_array_add(argv, (char *) "convert");
        g_ptr_array_add(argv, (char *) "-p");
        if (direct) {
                g_ptr_array_add(argv, (char *) "-t"); g_ptr_array_add(argv, (char *) "none");
                g_ptr_array_add(argv, (char *) "-T"); g_ptr_array_add(argv, (char *) "none");
        }
        g_ptr_array_add(argv, (char *) "-n");
        g_ptr_array_add(argv, (char *) "-f"); g_ptr_array_add(argv, (char *) c->src_fmt);
        if (!c->backing) {
                /* else the driver is in the options */
                g_ptr_array_add(argv, (char *) "-O"); g_ptr_array_add(argv, (char *) c->dst_fmt);
        } else {
                g_ptr_array_add(argv, (char *) "-B"); g_ptr_array_add(argv, (char *) c->backing);
                g_ptr_array_add(argv, (char *) "-F"); g_ptr_array_add(argv, (char *) c->backing_fmt);
                /* Opened by options, not by name: see target_opts(). */
                g_ptr_array_add(argv, (char *) "--target-image-opts");
        }
        if (c->rate) {
                g_ptr_array_add(argv, (char *) "-r"); g_ptr_array_add(argv, (char *) c->rate);
        }
        g_ptr_array_add(argv, (char *) c->src_path);
        g_ptr_array_add(argv, (char *) (c->backing ? c->target : c->dst_path));
}

/* True, with its size, when path is a regular file read as raw. */
static bool raw_file_size(const char *path, const char *fmt, uint64_t *ret_size)
{
        struct stat st;

        if (strcmp(fmt, "raw") != 0 || stat(path, &st) < 0 || !S_ISREG(st.st_mode))
                return false;
        *ret_size = (uint64_t) st.st_size;
        return true;
}

static int convert(const char *src_path, const char *src_fmt,
                   const char *dst_path, const char *dst_fmt,
                   const char *backing, const char *backing_fmt,
                   uint64_t total, uint64_t rate_limit, struct agent_rate_flow *flow,
                   GCancellable *cancel,
                   agent_copy_progress_fn progress, void *userdata,
                   GError **error)
{
        g_autofree char *rate = NULL;
        g_autofree char *target = NULL;
        struct convert_args c = { src_path, src_fmt, dst_path, dst_fmt, backing, backing_fmt, NULL, NULL };
        int r;

        if (!src_path || !dst_path || !valid_format(src_fmt) || !valid_format(dst_fmt) ||
            (backing && !valid_format(backing_fmt))) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "Invalid qemu-img convert parameters");
                return -EINVAL;
        }
        if (rate_limit > 0)
                c.rate = rate = g_strdup_printf("%" PRIu64, rate_limit);
        if (backing)
                c.target = target = target_opts(dst_path, dst_fmt, backing, backing_fmt);

        /*
         * Progress is reported in bytes of the source's virtual size (format
         * given, never probed): the caller's, else a raw file's size, else
         * qemu-img info's, which took 12-470 ms under load (bench/README.md).
         */
        if (progress && total == 0 && !raw_file_size(src_path, src_fmt, &total) &&
            agent_qemu_img_info(src_path, src_fmt, NULL, &total, NULL, NULL, NULL) < 0)
                total = 0;
        r = progress_cmd("convert", convert_build, &c, total, flow, cancel, progress, userdata, FY_ERR_COPY, error);
        if (r == -ECANCELED) {
                g_clear_error(error);
                g_set_error(error, FY_ERROR, FY_ERR_ABORTED, "Copy was aborted");
        }
        return r;
}

int agent_qemu_img_convert(const char *src_path, const char *src_fmt,
                           const char *dst_path, const char *dst_fmt,
                           const char *backing, const char *backing_fmt,
                           uint64_t rate_limit,
                           GCancellable *cancel,
                           agent_copy_progress_fn progress, void *userdata,
                           GError **error)
{
        return convert(src_path, src_fmt, dst_path, dst_fmt, backing, backing_fmt, 0, rate_limit, NULL,
                       cancel, progress, userdata, error);
}

int agent_qemu_img_convert_shared(const char *src_path, const char *src_fmt,
                                  const char *dst_path, const char *dst_fmt,
                                  const char *backing, const char *backing_fmt,
                                  uint64_t total, struct agent_rate_flow *flow,
                                  GCancellable *cancel,
                                  agent_copy_progress_fn progress, void *userdata,
                                  GError **error)
{
        /* Alone it may use the whole cap; rate_tick() holds it to its share while others run
         * (and counts what it wrote, capped or not). */
        return convert(src_path, src_fmt, dst_path, dst_fmt, backing, backing_fmt, total,
                       agent_rate_flow_cap(flow), flow, cancel, progress, userdata, error);
}

int agent_qemu_img_create_qcow2(const char *path, uint64_t size, gboolean preallocate,
                                const char *backing, const char *backing_fmt, GError **error)
{
        g_autofree char *size_s = g_strdup_printf("%" PRIu64, size);
        struct qimg_run run = { 0 };
        const char *argv[16];
        int n = 0, r;

        if (!path || (backing && !valid_format(backing_fmt))) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "Invalid qemu-img create parameters");
                return -EINVAL;
        }
        argv[n++] = FERRY_QEMU_IMG;
        argv[n++] = "create";
        argv[n++] = "-q";
        argv[n++] = "-f"; argv[n++] = "qcow2";
        /* qemu refuses preallocation with a backing file unless extended_l2=on,
         * which older qemu cannot read: a layer on a parent is never preallocated. */
        argv[n++] = "-o";
        argv[n++] = preallocate && !backing ? "compat=1.1,preallocation=falloc" : "compat=1.1";
        if (backing) {
                argv[n++] = "-b"; argv[n++] = backing;
                argv[n++] = "-F"; argv[n++] = backing_fmt;
        }
        argv[n++] = path;
        argv[n++] = size_s;
        argv[n] = NULL;

        r = qimg_run(argv, &run, error);
        if (r < 0)
                return r;
        if (run.exit_status != 0) {
                set_child_error(error, FY_ERR_GENERAL, "create", &run);
                return -EIO;
        }
        return 0;
}

static int json_get_u64(json_t *root, const char *key, bool required, uint64_t *ret)
{
        json_t *v = json_object_get(root, key);

        if (!v) {
                *ret = 0;
                return required ? -EBADMSG : 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return -EBADMSG;
        *ret = (uint64_t) json_integer_value(v);
        return 0;
}

int agent_qemu_img_info(const char *path, const char *format, char **ret_format, uint64_t *ret_virtual_size,
                        uint64_t *ret_actual_size, char **ret_backing, GError **error)
{
        g_autoptr(GString) out = g_string_new(NULL);
        struct qimg_run run = { .capture_stdout = TRUE, .out = out };
        /*
         * -f always: volume data is guest-controlled, and a probed raw image
         * that a guest filled with a qcow2 header would be parsed as qcow2,
         * opening the backing/data files it names. -U: a running VM may hold
         * the image's lock; info only reads.
         */
        const char *argv[] = { FERRY_QEMU_IMG, "info", "-U", "-f", format, "--output", "json", path, NULL };
        json_t *root, *fmt, *bk;
        json_error_t jerr;
        uint64_t vsize, asize;
        int r;

        if (!path || !valid_format(format)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "qemu-img info needs an image path and its format (raw or qcow2)");
                return -EINVAL;
        }
        r = qimg_run(argv, &run, error);
        if (r < 0)
                return r;
        if (run.exit_status != 0) {
                set_child_error(error, FY_ERR_GENERAL, "info", &run);
                return -EIO;
        }
        if (out->len >= QIMG_STDOUT_MAX) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "qemu-img info output for %s is too large", path);
                return -EFBIG;
        }

        root = json_loadb(out->str, out->len, 0, &jerr);
        if (!root || !json_is_object(root)) {
                json_decref(root);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "Cannot parse qemu-img info output for %s", path);
                return -EBADMSG;
        }
        fmt = json_object_get(root, "format");
        bk = json_object_get(root, "backing-filename");
        if (!json_is_string(fmt) || (bk && !json_is_string(bk)) ||
            json_get_u64(root, "virtual-size", true, &vsize) < 0 ||
            json_get_u64(root, "actual-size", false, &asize) < 0) {
                json_decref(root);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                            "Unexpected qemu-img info output for %s", path);
                return -EBADMSG;
        }

        if (ret_format)
                *ret_format = g_strdup(json_string_value(fmt));
        if (ret_virtual_size)
                *ret_virtual_size = vsize;
        if (ret_actual_size)
                *ret_actual_size = asize;
        if (ret_backing)
                *ret_backing = bk ? g_strdup(json_string_value(bk)) : NULL;
        json_decref(root);
        return 0;
}

/* ---- commit, amend, measure, map, rebase, resize ---- */

struct commit_args {
        const char *top_path, *base_path, *rate;
};

static void commit_build(GPtrArray *argv, bool direct, void *data)
{
        const struct commit_args *c = data;

        g_ptr_array_add(argv, (char *) "commit");
        g_ptr_array_add(argv, (char *) "-p");
        if (direct) {
                g_ptr_array_add(argv, (char *) "-t"); g_ptr_array_add(argv, (char *) "none");
        }
        /* The top's format is given; its backing chain is opened by the formats its headers record. */
        g_ptr_array_add(argv, (char *) "-f"); g_ptr_array_add(argv, (char *) "qcow2");
        /* -b also implies -d: top keeps its data, so a merge cut short can run again. */
        g_ptr_array_add(argv, (char *) "-b"); g_ptr_array_add(argv, (char *) c->base_path);
        if (c->rate) {
                g_ptr_array_add(argv, (char *) "-r"); g_ptr_array_add(argv, (char *) c->rate);
        }
        g_ptr_array_add(argv, (char *) c->top_path);
}

/*
 * What qemu-img says when the images themselves are wrong (corrupt, not the
 * format or chain their metadata says): every host would fail the same.
 */
static const char *const commit_data_errors[] = {
        "corrupt", "is not in qcow2 format", "in the backing chain", "Unknown driver", "Unsupported",
};

/*
 * A failed commit is the images' fault (252, MergeSnapshotsError: refused
 * everywhere) only when qemu-img says so; killed, an I/O error, a host's
 * mount or memory may pass on another host (100: the engine retries it
 * elsewhere). Out of space (352) stays as it is.
 */
static void commit_error_classify(GError **error)
{
        g_autofree char *msg = NULL;

        if (!error || !*error || (*error)->code != FY_ERR_MERGE)
                return;
        for (size_t i = 0; i < G_N_ELEMENTS(commit_data_errors); i++)
                if (strstr((*error)->message, commit_data_errors[i]))
                        return;
        msg = g_strdup((*error)->message);
        g_clear_error(error);
        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "%s (a failure of this host: another host may merge)", msg);
}

int agent_qemu_img_commit(const char *top_path, const char *base_path, uint64_t total,
                          struct agent_rate_flow *flow, GCancellable *cancel,
                          agent_copy_progress_fn progress, void *userdata, GError **error)
{
        g_autofree char *rate = NULL;
        struct commit_args c = { top_path, base_path, NULL };
        int r;

        if (!top_path || !base_path) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "Invalid qemu-img commit parameters");
                return -EINVAL;
        }
        /* Like a governed convert: the whole cap for the child, held to its share from outside. */
        if (flow && agent_rate_flow_cap(flow) > 0)
                c.rate = rate = g_strdup_printf("%" PRIu64, agent_rate_flow_cap(flow));
        r = progress_cmd("commit", commit_build, &c, total, flow, cancel, progress, userdata, FY_ERR_MERGE, error);
        if (r < 0)
                commit_error_classify(error);
        return r;
}

struct amend_args {
        const char *path, *options;
};

static void amend_build(GPtrArray *argv, bool direct, void *data)
{
        const struct amend_args *c = data;

        g_ptr_array_add(argv, (char *) "amend");
        g_ptr_array_add(argv, (char *) "-p");
        if (direct) {
                g_ptr_array_add(argv, (char *) "-t"); g_ptr_array_add(argv, (char *) "none");
        }
        g_ptr_array_add(argv, (char *) "-f"); g_ptr_array_add(argv, (char *) "qcow2");
        g_ptr_array_add(argv, (char *) "-o"); g_ptr_array_add(argv, (char *) c->options);
        g_ptr_array_add(argv, (char *) c->path);
}

int agent_qemu_img_amend_compat(const char *path, const char *compat, GCancellable *cancel,
                                agent_copy_progress_fn progress, void *userdata, GError **error)
{
        g_autofree char *options = NULL;
        struct amend_args c = { path, NULL };

        if (!path || !compat || (strcmp(compat, "0.10") != 0 && strcmp(compat, "1.1") != 0)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "Invalid qemu-img amend parameters");
                return -EINVAL;
        }
        c.options = options = g_strconcat("compat=", compat, NULL);
        return progress_cmd("amend", amend_build, &c, 0, NULL, cancel, progress, userdata, FY_ERR_GENERAL, error);
}

/* Runs argv capturing its JSON output; *ret_root is an object. */
static int run_json(const char *what, const char *const *argv, bool untrusted, GCancellable *cancel,
                    json_t **ret_root, GError **error)
{
        g_autoptr(GString) out = g_string_new(NULL);
        struct qimg_run run = { .capture_stdout = TRUE, .out = out, .untrusted = untrusted, .cancel = cancel };
        json_error_t jerr;
        json_t *root;
        int r;

        r = qimg_run_abortable(what, argv, &run, error);
        if (r < 0)
                return r;
        if (run.exit_status != 0) {
                set_child_error(error, FY_ERR_GENERAL, what, &run);
                return -EIO;
        }
        if (out->len >= QIMG_STDOUT_MAX) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "qemu-img %s output is too large", what);
                return -EFBIG;
        }
        root = json_loadb(out->str, out->len, 0, &jerr);
        if (!root || !json_is_object(root)) {
                json_decref(root);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "Cannot parse qemu-img %s output", what);
                return -EBADMSG;
        }
        *ret_root = root;
        return 0;
}

int agent_qemu_img_measure(const char *image_json, const char *out_fmt, uint64_t *ret_required,
                           uint64_t *ret_fully_allocated, GError **error)
{
        g_autofree char *spec = NULL;
        /* -U: measuring only reads, a running VM may hold the image's lock. */
        const char *argv[] = { FERRY_QEMU_IMG, "measure", "-U", "--output", "json", "-O", out_fmt, NULL, NULL };
        json_t *root = NULL;
        uint64_t required, full;
        int r;

        if (!image_json || !valid_format(out_fmt)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "Invalid qemu-img measure parameters");
                return -EINVAL;
        }
        argv[7] = spec = g_strconcat("json:", image_json, NULL);
        r = run_json("measure", argv, false, NULL, &root, error);
        if (r < 0)
                return r;
        if (json_get_u64(root, "required", true, &required) < 0 ||
            json_get_u64(root, "fully-allocated", true, &full) < 0) {
                json_decref(root);
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "Unexpected qemu-img measure output");
                return -EBADMSG;
        }
        json_decref(root);
        if (ret_required)
                *ret_required = required;
        if (ret_fully_allocated)
                *ret_fully_allocated = full;
        return 0;
}

int agent_qemu_img_info_untrusted(const char *path, const char *format, GCancellable *cancel, json_t **ret_info,
                                  GError **error)
{
        const char *argv[] = { FERRY_QEMU_IMG, "info", "-U", "-f", format, "--output", "json", path, NULL };

        if (!path || !valid_format(format)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "qemu-img info needs an image path and its format (raw or qcow2)");
                return -EINVAL;
        }
        return run_json("info", argv, true, cancel, ret_info, error);
}

int agent_qemu_img_check_untrusted(const char *path, const char *format, GCancellable *cancel, GError **error)
{
        const char *argv[] = { FERRY_QEMU_IMG, "check", "-f", format, path, NULL };
        g_autoptr(GString) out = g_string_new(NULL);
        struct qimg_run run = { .cancel = cancel, .untrusted = true, .capture_stdout = TRUE, .out = out };
        int r;

        if (!path || !valid_format(format)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "Invalid qemu-img check parameters");
                return -EINVAL;
        }
        r = qimg_run_abortable("check", argv, &run, error);
        if (r < 0)
                return r;
        /* 3: leaked clusters only, which waste space but lose nothing. */
        if (run.exit_status != 0 && run.exit_status != 3) {
                /* Its verdict ("N errors were found on the image.") is on stdout, each error on stderr. */
                g_strstrip(out->str);
                if (run.exit_status >= 0 && out->str[0])
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "qemu-img check failed (exit status %d): %.512s",
                                    run.exit_status, out->str);
                else
                        set_child_error(error, FY_ERR_GENERAL, "check", &run);
                return -EUCLEAN;
        }
        return 0;
}

int agent_qemu_img_map_parse_line(const char *line, struct agent_qemu_img_extent *ret)
{
        g_autofree char *text = NULL;
        struct agent_qemu_img_extent e = { 0 };
        json_error_t jerr;
        json_t *o, *off, *depth;
        size_t len;

        if (strlen(line) > QIMG_LINE_MAX)
                return -EBADMSG;
        /* '[{ … },' then '{ … },' … then '{ … }]': one extent a line. */
        text = g_strstrip(g_strdup(line));
        len = strlen(text);
        if (len > 0 && text[0] == '[')
                memmove(text, text + 1, len--);
        while (len > 0 && (text[len - 1] == ',' || text[len - 1] == ']'))
                text[--len] = '\0';
        if (len == 0)
                return 0;
        o = json_loadb(text, len, 0, &jerr);
        if (!o || !json_is_object(o)) {
                json_decref(o);
                return -EBADMSG;
        }
        depth = json_object_get(o, "depth");
        off = json_object_get(o, "offset");
        if (json_get_u64(o, "start", true, &e.start) < 0 || json_get_u64(o, "length", true, &e.length) < 0 ||
            !json_is_integer(depth) || json_integer_value(depth) < 0 ||
            !json_is_boolean(json_object_get(o, "data")) || !json_is_boolean(json_object_get(o, "zero")) ||
            (off && (!json_is_integer(off) || json_integer_value(off) < 0)) ||
            e.length > UINT64_MAX - e.start) {
                json_decref(o);
                return -EBADMSG;
        }
        e.depth = (unsigned) MIN(json_integer_value(depth), 1000);
        e.data = json_is_true(json_object_get(o, "data"));
        e.zero = json_is_true(json_object_get(o, "zero"));
        e.has_offset = off != NULL;
        e.offset = off ? (uint64_t) json_integer_value(off) : 0;
        json_decref(o);
        if (e.has_offset && e.length > UINT64_MAX - e.offset)
                return -EBADMSG;
        *ret = e;
        return 1;
}

struct map_ctx {
        agent_qemu_img_extent_fn fn;
        void *data;
};

static int map_line(const char *line, void *data)
{
        struct map_ctx *m = data;
        struct agent_qemu_img_extent e;
        int r = agent_qemu_img_map_parse_line(line, &e);

        if (r <= 0)
                return r;
        r = m->fn(&e, m->data);
        return r < 0 ? r : 0;
}

int agent_qemu_img_map(const char *path, const char *format, GCancellable *cancel,
                       agent_qemu_img_extent_fn fn, void *data, GError **error)
{
        struct map_ctx m = { fn, data };
        struct qimg_run run = { .cancel = cancel, .line_fn = map_line, .line_data = &m };
        const char *argv[] = { FERRY_QEMU_IMG, "map", "-f", format, "--output", "json", path, NULL };
        int r;

        if (!path || !valid_format(format) || !fn) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "Invalid qemu-img map parameters");
                return -EINVAL;
        }
        /* Streamed line by line: a large fragmented image maps to more JSON than is worth holding. */
        r = qimg_run(argv, &run, error);
        if (r == -ECANCELED) {
                g_set_error(error, FY_ERROR, FY_ERR_ABORTED, "qemu-img map was aborted");
                return r;
        }
        if (r < 0)
                return r;
        if (run.line_result < 0) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "qemu-img map of %s: %s", path,
                            run.line_result == -EBADMSG ? "unexpected output" : g_strerror(-run.line_result));
                return run.line_result;
        }
        if (run.exit_status != 0) {
                set_child_error(error, FY_ERR_GENERAL, "map", &run);
                return -EIO;
        }
        return 0;
}

int agent_qemu_img_rebase_unsafe(const char *path, const char *backing, const char *backing_fmt, GError **error)
{
        /* -u: only the header changes; the caller knows the new backing reads the same. */
        const char *argv[] = { FERRY_QEMU_IMG, "rebase", "-u", "-f", "qcow2", "-b", backing, "-F", backing_fmt,
                               path, NULL };
        struct qimg_run run = { 0 };
        int r;

        if (!path || !backing || !valid_format(backing_fmt)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "Invalid qemu-img rebase parameters");
                return -EINVAL;
        }
        r = qimg_run(argv, &run, error);
        if (r < 0)
                return r;
        if (run.exit_status != 0) {
                set_child_error(error, FY_ERR_GENERAL, "rebase", &run);
                return -EIO;
        }
        return 0;
}

int agent_qemu_img_resize(const char *path, const char *format, uint64_t size, GError **error)
{
        g_autofree char *size_s = g_strdup_printf("%" PRIu64, size);
        const char *argv[] = { FERRY_QEMU_IMG, "resize", "-q", "-f", format, path, size_s, NULL };
        struct qimg_run run = { 0 };
        int r;

        if (!path || !valid_format(format)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "Invalid qemu-img resize parameters");
                return -EINVAL;
        }
        r = qimg_run(argv, &run, error);
        if (r < 0)
                return r;
        if (run.exit_status != 0) {
                set_child_error(error, strstr(run.err_tail, "No space left") ? FY_ERR_NO_SPACE : FY_ERR_GENERAL,
                                "resize", &run);
                return -EIO;
        }
        return 0;
}
