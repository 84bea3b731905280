/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry cluster up/down/status: a local development cluster from the build
 * tree — per host one sanlock daemon and one ferry-agent, one ferry-engine,
 * file storage domains under DIR/storage, a CA and certificates under
 * DIR/pki (every connection is TLS). Every daemon runs in its own
 * session so it outlives `ferry`; DIR/cluster.json records the pids, and
 * `down` signals only those pids, after checking that each still is the
 * process we started (pids are reused).
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>

#include "cli.h"
#include "fileio.h"
#include "pki.h"
#include "uuid.h"

#define CLI_MAX_HOSTS 32
#define CLI_MAX_DOMAINS 16
#define CLI_CLUSTER_JSON_MAX (1024 * 1024)
#define CLI_SANLOCK_READY_S 15
#define CLI_LISTEN_S 30
#define CLI_CLUSTER_READY_S 120
#define CLI_TERM_WAIT_S 15
#define CLI_KILL_WAIT_S 5
#define CLI_POLL_MS 50
#define CLI_MAX_ENGINES 8
#define CLI_PG_BINDIR "/usr/lib/postgresql/15/bin"   /* Debian's postgresql-15; $FERRY_PG_BINDIR overrides */

struct cli_host {
        char *name;
        char *id;
        int port;
        GPid pid;
        GPid sanlock_pid;
        char *run_dir;
        char *log;
        char *sanlock_log;
        char *metrics_url;             /* the agent's Prometheus endpoint */
};

struct cli_sd {
        char *name;
        char *id;
        char *path;
};

/* A standby engine (--engines N): the first engine is cli_cluster's engine_*. */
struct cli_standby {
        char *url;
        GPid pid;
        char *log;
};

struct cli_cluster {
        char *dir;
        char *db;                      /* the engines' --db on PostgreSQL; NULL: DIR/engine.db (SQLite) */
        char *pg_dir;                  /* --postgresql: the server's folder (socket, data/, server.log) */
        char *pg_owner;                /* the user the server runs as when we are root (it refuses root) */
        GPtrArray *standbys;           /* struct cli_standby */
        char *engine_url;
        char *ca_file;                 /* DIR/pki/ca.pem */
        char *admin_user;              /* the first admin, made by the engine at its first start */
        char *admin_password_file;     /* DIR/admin.password, 0600 */
        GPid engine_pid;
        char *engine_log;
        GPtrArray *hosts;
        GPtrArray *sds;
};

static void cli_host_free(struct cli_host *h)
{
        g_free(h->name);
        g_free(h->id);
        g_free(h->run_dir);
        g_free(h->log);
        g_free(h->sanlock_log);
        g_free(h->metrics_url);
        g_free(h);
}

static void cli_standby_free(struct cli_standby *s)
{
        g_free(s->url);
        g_free(s->log);
        g_free(s);
}

static void cli_sd_free(struct cli_sd *sd)
{
        g_free(sd->name);
        g_free(sd->id);
        g_free(sd->path);
        g_free(sd);
}

static struct cli_cluster *cli_cluster_new(const char *dir)
{
        struct cli_cluster *c = g_new0(struct cli_cluster, 1);

        c->dir = g_strdup(dir);
        c->hosts = g_ptr_array_new_with_free_func((GDestroyNotify) cli_host_free);
        c->sds = g_ptr_array_new_with_free_func((GDestroyNotify) cli_sd_free);
        c->standbys = g_ptr_array_new_with_free_func((GDestroyNotify) cli_standby_free);
        return c;
}

static void cli_cluster_free(struct cli_cluster *c)
{
        if (!c)
                return;
        g_free(c->dir);
        g_free(c->db);
        g_free(c->pg_dir);
        g_free(c->pg_owner);
        g_ptr_array_unref(c->standbys);
        g_free(c->engine_url);
        g_free(c->ca_file);
        g_free(c->admin_user);
        g_free(c->admin_password_file);
        g_free(c->engine_log);
        g_ptr_array_unref(c->hosts);
        g_ptr_array_unref(c->sds);
        g_free(c);
}

typedef struct cli_cluster cli_cluster;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_cluster, cli_cluster_free)

static char *cli_cluster_file(const char *dir)
{
        return g_build_filename(dir, "cluster.json", NULL);
}

/* ---- processes ---- */

/*
 * True while pid runs. Reaps it first when it is our child (cluster up),
 * and counts a zombie as dead (a child of someone else not reaped yet).
 */
static bool cli_proc_alive(GPid pid)
{
        g_autofree char *path = NULL, *stat = NULL;
        const char *p;
        int status;

        if (pid <= 0)
                return false;
        if (waitpid(pid, &status, WNOHANG) == pid)
                return false;
        path = g_strdup_printf("/proc/%d/stat", (int) pid);
        if (fy_read_small_file_at(AT_FDCWD, path, 4096, &stat, NULL) < 0)
                return false;
        p = strrchr(stat, ')');
        if (!p || p[1] != ' ')
                return false;
        return p[2] != 'Z' && p[2] != 'X';
}

/* True when /proc/pid/<file> (cmdline or environ) holds `needle` in one of its entries. */
static bool cli_proc_has(GPid pid, const char *file, const char *needle)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/%s", (int) pid, file);
        g_autofree char *text = NULL;
        size_t len = 0;

        if (fy_read_small_file_at(AT_FDCWD, path, 256 * 1024, &text, &len) < 0)
                return false;
        for (size_t off = 0; off < len; off += strlen(text + off) + 1)
                if (strstr(text + off, needle))
                        return true;
        return false;
}

/* Alive and still the process cluster.json describes, not a reused pid. */
static bool cli_proc_ours(GPid pid, const char *file, const char *needle)
{
        return cli_proc_alive(pid) && cli_proc_has(pid, file, needle);
}

static void cli_child_setup(gpointer data)
{
        /* Its own session: the daemon outlives ferry and a Ctrl-C in its terminal. */
        setsid();
}

static int cli_spawn(char **argv, char **envp, const char *log, GPid *ret_pid, goffset *ret_log_offset,
                     GError **error)
{
        g_autoptr(GError) local = NULL;
        GPid pid;
        int fd;
        off_t off;

        fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot open %s: %s", log, g_strerror(errno));
                return -1;
        }
        off = lseek(fd, 0, SEEK_END);
        if (!g_spawn_async_with_pipes_and_fds(NULL, (const char *const *) argv, (const char *const *) envp,
                                              G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL,
                                              cli_child_setup, NULL, -1, fd, fd, NULL, NULL, 0, &pid,
                                              NULL, NULL, NULL, &local)) {
                close(fd);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot start %s: %s", argv[0], local->message);
                return -1;
        }
        close(fd);
        *ret_pid = pid;
        if (ret_log_offset)
                *ret_log_offset = off < 0 ? 0 : off;
        return 0;
}

/* Polls `log` from `offset` until `pattern`'s group 1 appears; fails if pid dies. */
/*
 * Ctrl-C, SIGTERM or SIGHUP during `up`: the daemons run in their own
 * sessions and would outlive us. The handler only records the signal; every
 * wait loop checks it and fails, and the failure path stops what was started
 * (each pid is recorded in cluster.json as soon as it is spawned).
 */
static volatile sig_atomic_t cli_up_signal;

static void cli_on_up_signal(int sig)
{
        cli_up_signal = sig;
}

static int cli_check_interrupt(GError **error)
{
        if (!cli_up_signal)
                return 0;
        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "interrupted by signal %d", (int) cli_up_signal);
        return -1;
}

static char *cli_wait_log(GPid pid, const char *what, const char *log, goffset offset, const char *pattern,
                          int timeout_s, GError **error)
{
        g_autoptr(GRegex) re = g_regex_new(pattern, G_REGEX_OPTIMIZE, 0, NULL);
        gint64 deadline = g_get_monotonic_time() + (gint64) timeout_s * G_USEC_PER_SEC;

        for (;;) {
                char buf[65536];
                ssize_t n = 0;
                int fd = open(log, O_RDONLY | O_CLOEXEC | O_NOCTTY);

                if (fd >= 0) {
                        n = pread(fd, buf, sizeof(buf) - 1, offset);
                        close(fd);
                }
                if (n > 0) {
                        g_autoptr(GMatchInfo) mi = NULL;

                        buf[n] = '\0';
                        if (g_regex_match_full(re, buf, n, 0, 0, &mi, NULL))
                                return g_match_info_fetch(mi, 1);
                }
                if (!cli_proc_alive(pid)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s exited at start-up; see %s", what, log);
                        return NULL;
                }
                if (cli_check_interrupt(error) < 0)
                        return NULL;
                if (g_get_monotonic_time() > deadline) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "%s did not report its port within %d s; see %s", what, timeout_s, log);
                        return NULL;
                }
                g_usleep(CLI_POLL_MS * 1000);
        }
}

static char **cli_sanlock_env(const char *run_dir)
{
        char **env = g_get_environ();

        env = g_environ_setenv(env, "SANLOCK_PRIVILEGED", "0", TRUE);
        env = g_environ_setenv(env, "SANLOCK_RUN_DIR", run_dir, TRUE);
        return env;
}

static char *cli_sanlock_bin(void)
{
        const char *env = g_getenv("FERRY_SANLOCK_BIN");
        char *path;

        if (env && *env)
                return g_strdup(env);
        path = g_find_program_in_path("sanlock");
        if (path)
                return path;
        /* /usr/sbin is not in every user's PATH. */
        if (g_file_test("/usr/sbin/sanlock", G_FILE_TEST_IS_EXECUTABLE))
                return g_strdup("/usr/sbin/sanlock");
        return g_strdup("sanlock");
}

/* Runs `sanlock client ARGS` for run_dir; true if it exited 0. */
static bool cli_sanlock_client(const char *run_dir, const char *a1, const char *a2, const char *a3)
{
        g_autofree char *bin = cli_sanlock_bin();
        g_auto(GStrv) env = cli_sanlock_env(run_dir);
        const char *argv[] = { bin, "client", a1, a2, a3, NULL };
        int wait_status;

        if (!g_spawn_sync(NULL, (char **) argv, env,
                          G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL | G_SPAWN_STDIN_FROM_DEV_NULL,
                          NULL, NULL, NULL, NULL, &wait_status, NULL))
                return false;
        return g_spawn_check_wait_status(wait_status, NULL);
}

/* <builddir>/src/cli/ferry → <builddir>/src/<sub>/<name>, unless $env_name says otherwise. */
static int cli_find_binary(const char *env_name, const char *sub, const char *name, char **ret_path,
                           GError **error)
{
        const char *env = g_getenv(env_name);
        g_autofree char *self = NULL, *cli_dir = NULL, *src_dir = NULL, *path = NULL;

        if (env && *env) {
                path = g_strdup(env);
        } else {
                self = g_file_read_link("/proc/self/exe", NULL);
                if (!self) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot find %s: set %s", name, env_name);
                        return -1;
                }
                cli_dir = g_path_get_dirname(self);
                src_dir = g_path_get_dirname(cli_dir);
                path = g_build_filename(src_dir, sub, name, NULL);
        }
        if (!g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "%s not found at %s: build it, or set %s", name, path, env_name);
                return -1;
        }
        *ret_path = g_steal_pointer(&path);
        return 0;
}

/* ---- cluster.json ---- */

static json_t *cli_cluster_to_json(const struct cli_cluster *c)
{
        json_t *hosts = json_array(), *sds = json_array(), *engines;

        for (guint i = 0; i < c->hosts->len; i++) {
                const struct cli_host *h = c->hosts->pdata[i];

                json_array_append_new(hosts, json_pack("{s:s, s:s?, s:s, s:i, s:I, s:I, s:s, s:s, s:s, s:s?}",
                                                       "name", h->name, "id", h->id, "address", "127.0.0.1",
                                                       "port", h->port, "pid", (json_int_t) h->pid,
                                                       "sanlock_pid", (json_int_t) h->sanlock_pid,
                                                       "sanlock_run_dir", h->run_dir, "log", h->log,
                                                       "sanlock_log", h->sanlock_log, "metrics_url", h->metrics_url));
        }
        for (guint i = 0; i < c->sds->len; i++) {
                const struct cli_sd *sd = c->sds->pdata[i];

                json_array_append_new(sds, json_pack("{s:s, s:s, s:s}", "name", sd->name, "id", sd->id,
                                                     "path", sd->path));
        }
        /* Every engine, the first (active at start) included: the CLI tries them in turn and follows a
         * standby's 307 only to one of them. */
        engines = json_array();
        if (c->engine_url)
                json_array_append_new(engines, json_pack("{s:s, s:I, s:s?}", "url", c->engine_url, "pid",
                                                         (json_int_t) c->engine_pid, "log", c->engine_log));
        for (guint i = 0; i < c->standbys->len; i++) {
                const struct cli_standby *sb = c->standbys->pdata[i];

                json_array_append_new(engines, json_pack("{s:s?, s:I, s:s?}", "url", sb->url, "pid",
                                                         (json_int_t) sb->pid, "log", sb->log));
        }
        return json_pack("{s:s?, s:s?, s:s?, s:s?, s:I, s:s?, s:s, s:o, s:o, s:o, s:s?, s:s?, s:s?}", "engine_url",
                         c->engine_url, "ca_file", c->ca_file, "admin_user", c->admin_user, "admin_password_file",
                         c->admin_password_file, "engine_pid", (json_int_t) c->engine_pid, "engine_log", c->engine_log,
                         "dir", c->dir, "hosts", hosts, "storage_domains", sds, "engines", engines,
                         "engine_db", c->db, "postgresql_dir", c->pg_dir, "postgresql_owner", c->pg_owner);
}

/* Written after every process started, so `down` finds them even if `up` dies midway. */
static int cli_cluster_save(const struct cli_cluster *c, GError **error)
{
        json_t *json = cli_cluster_to_json(c);
        char *text = json ? json_dumps(json, JSON_INDENT(2)) : NULL;
        int dirfd, r = -ENOMEM;

        json_decref(json);
        dirfd = open(c->dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (dirfd < 0)
                r = -errno;
        else if (text)
                r = fy_write_file_atomic_at(dirfd, "cluster.json", text, strlen(text));
        if (dirfd >= 0)
                close(dirfd);
        free(text);
        if (r < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot write %s/cluster.json: %s", c->dir,
                            g_strerror(-r));
                return -1;
        }
        return 0;
}

static bool cli_pid_ok(json_int_t pid)
{
        return pid >= 0 && pid <= G_MAXINT32;
}

static int cli_cluster_load(const char *dir, struct cli_cluster **ret_cluster, GError **error)
{
        g_autofree char *path = cli_cluster_file(dir);
        g_autoptr(cli_cluster) c = cli_cluster_new(dir);
        json_t *json = NULL, *hosts = NULL, *sds = NULL, *item, *engines;
        const char *url = NULL, *engine_log = NULL, *jdir = NULL, *ca = NULL, *admin = NULL, *admin_pw = NULL;
        const char *db = NULL, *pg_dir = NULL, *pg_owner = NULL;
        json_int_t engine_pid = 0;
        json_error_t jerr;
        size_t i;

        if (cli_read_json_file(path, CLI_CLUSTER_JSON_MAX, &json, error) < 0)
                return -1;
        if (json_unpack_ex(json, &jerr, 0, "{s?s, s?s, s?s, s?s, s:I, s?s, s:s, s:o, s:o}", "engine_url", &url,
                           "ca_file", &ca, "admin_user", &admin, "admin_password_file", &admin_pw, "engine_pid",
                           &engine_pid, "engine_log", &engine_log, "dir", &jdir, "hosts", &hosts,
                           "storage_domains", &sds) < 0 || !cli_pid_ok(engine_pid) ||
            !json_is_array(hosts) || json_array_size(hosts) > CLI_MAX_HOSTS || !json_is_array(sds)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s is not a cluster description: %s", path,
                            jerr.text[0] ? jerr.text : "bad pid or list");
                json_decref(json);
                return -1;
        }
        /* The dir recorded at `up` is absolute; the processes' arguments name it. */
        g_free(c->dir);
        c->dir = g_strdup(jdir);
        c->engine_url = g_strdup(url);
        c->ca_file = g_strdup(ca);
        c->admin_user = g_strdup(admin);
        c->admin_password_file = g_strdup(admin_pw);
        c->engine_pid = (GPid) engine_pid;
        c->engine_log = g_strdup(engine_log);
        if (json_unpack(json, "{s?s, s?s, s?s}", "engine_db", &db, "postgresql_dir", &pg_dir, "postgresql_owner",
                        &pg_owner) == 0) {
                c->db = g_strdup(db);
                c->pg_dir = g_strdup(pg_dir);
                c->pg_owner = g_strdup(pg_owner);
        }
        engines = json_object_get(json, "engines");
        json_array_foreach(engines, i, item) {
                const char *surl = NULL, *slog = NULL;
                json_int_t pid = 0;
                struct cli_standby *sb;

                if (i >= CLI_MAX_ENGINES)
                        break;
                if (json_unpack(item, "{s?s, s:I, s?s}", "url", &surl, "pid", &pid, "log", &slog) < 0 ||
                    !cli_pid_ok(pid) || (GPid) pid == c->engine_pid)
                        continue;
                sb = g_new0(struct cli_standby, 1);
                sb->url = g_strdup(surl);
                sb->pid = (GPid) pid;
                sb->log = g_strdup(slog);
                g_ptr_array_add(c->standbys, sb);
        }
        json_array_foreach(hosts, i, item) {
                const char *name = NULL, *id = NULL, *run_dir = NULL, *log = NULL, *slog = NULL, *murl = NULL;
                json_int_t pid = 0, spid = 0;
                int port = 0;
                struct cli_host *h;

                if (json_unpack_ex(item, &jerr, 0, "{s:s, s?s, s?i, s:I, s:I, s:s, s?s, s?s, s?s}", "name", &name,
                                   "id", &id, "port", &port, "pid", &pid, "sanlock_pid", &spid,
                                   "sanlock_run_dir", &run_dir, "log", &log, "sanlock_log", &slog,
                                   "metrics_url", &murl) < 0 ||
                    !cli_pid_ok(pid) || !cli_pid_ok(spid)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s: bad host entry: %s", path, jerr.text);
                        json_decref(json);
                        return -1;
                }
                h = g_new0(struct cli_host, 1);
                h->name = g_strdup(name);
                h->id = g_strdup(id);
                h->port = port;
                h->pid = (GPid) pid;
                h->sanlock_pid = (GPid) spid;
                h->run_dir = g_strdup(run_dir);
                h->log = g_strdup(log);
                h->sanlock_log = g_strdup(slog);
                h->metrics_url = g_strdup(murl);
                g_ptr_array_add(c->hosts, h);
        }
        json_array_foreach(sds, i, item) {
                const char *name = NULL, *id = NULL, *sdpath = NULL;
                struct cli_sd *sd;

                if (json_unpack(item, "{s:s, s:s, s?s}", "name", &name, "id", &id, "path", &sdpath) < 0)
                        continue;
                sd = g_new0(struct cli_sd, 1);
                sd->name = g_strdup(name);
                sd->id = g_strdup(id);
                sd->path = g_strdup(sdpath);
                g_ptr_array_add(c->sds, sd);
        }
        json_decref(json);
        *ret_cluster = g_steal_pointer(&c);
        return 0;
}

/* What identifies each process in /proc: a path under the cluster dir. */
static char *cli_engine_needle(const struct cli_cluster *c)
{
        return c->db ? g_strdup_printf("--db=%s", c->db) : g_strdup_printf("--db=%s/engine.db", c->dir);
}

static bool cli_standby_ours(const struct cli_cluster *c, const struct cli_standby *sb)
{
        g_autofree char *needle = cli_engine_needle(c);

        return cli_proc_ours(sb->pid, "cmdline", needle);
}

/* The PostgreSQL server of --postgresql runs (its pid file is there). */
static bool cli_postgresql_running(const struct cli_cluster *c)
{
        g_autofree char *pidfile = c->pg_dir ? g_build_filename(c->pg_dir, "data", "postmaster.pid", NULL) : NULL;

        return pidfile && g_file_test(pidfile, G_FILE_TEST_EXISTS);
}

static bool cli_engine_ours(const struct cli_cluster *c)
{
        g_autofree char *needle = cli_engine_needle(c);

        return cli_proc_ours(c->engine_pid, "cmdline", needle);
}

static bool cli_agent_ours(const struct cli_host *h)
{
        g_autofree char *needle = g_strdup_printf("--sanlock-run-dir=%s", h->run_dir);

        return cli_proc_ours(h->pid, "cmdline", needle);
}

static bool cli_sanlock_ours(const struct cli_host *h)
{
        g_autofree char *needle = g_strdup_printf("SANLOCK_RUN_DIR=%s", h->run_dir);

        return cli_proc_ours(h->sanlock_pid, "environ", needle);
}

static bool cli_cluster_any_alive(const struct cli_cluster *c)
{
        if (cli_engine_ours(c) || cli_postgresql_running(c))
                return true;
        for (guint i = 0; i < c->standbys->len; i++)
                if (cli_standby_ours(c, c->standbys->pdata[i]))
                        return true;
        for (guint i = 0; i < c->hosts->len; i++) {
                const struct cli_host *h = c->hosts->pdata[i];

                if (cli_agent_ours(h) || cli_sanlock_ours(h))
                        return true;
        }
        return false;
}

/* ---- stopping ---- */

struct cli_victim {
        const char *what;
        const char *name;
        GPid pid;
        bool stopped;
};

/* Waits until every victim is gone or the time is up; true if all are gone. */
static bool cli_wait_gone(struct cli_victim *v, guint n, int timeout_s)
{
        gint64 deadline = g_get_monotonic_time() + (gint64) timeout_s * G_USEC_PER_SEC;

        for (;;) {
                bool all = true;

                for (guint i = 0; i < n; i++)
                        if (v[i].pid > 0 && cli_proc_alive(v[i].pid))
                                all = false;
                if (all || g_get_monotonic_time() > deadline)
                        return all;
                g_usleep(CLI_POLL_MS * 1000);
        }
}

/* SIGTERM, bounded wait, SIGKILL, bounded wait. */
static void cli_stop_victims(struct cli_victim *v, guint n, bool verbose)
{
        for (guint i = 0; i < n; i++)
                if (v[i].pid > 0)
                        kill(v[i].pid, SIGTERM);
        if (!cli_wait_gone(v, n, CLI_TERM_WAIT_S)) {
                for (guint i = 0; i < n; i++) {
                        if (v[i].pid > 0 && cli_proc_alive(v[i].pid)) {
                                if (verbose)
                                        printf("%s %s (pid %d) ignored SIGTERM: killing it\n", v[i].what,
                                               v[i].name, (int) v[i].pid);
                                kill(v[i].pid, SIGKILL);
                        }
                }
                cli_wait_gone(v, n, CLI_KILL_WAIT_S);
        }
        for (guint i = 0; i < n; i++)
                v[i].stopped = v[i].pid > 0 && !cli_proc_alive(v[i].pid);
}

static unsigned cli_free_port(GError **error);

/* Runs a PostgreSQL program as the server's owner (the server refuses to run as root). */
static int cli_pg_run(const struct cli_cluster *c, const char *tool, const char *const *args, GError **error)
{
        const char *bindir = g_getenv("FERRY_PG_BINDIR");
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) local = NULL;
        int status = 0;

        if (c->pg_owner) {
                g_ptr_array_add(argv, g_strdup("runuser"));
                g_ptr_array_add(argv, g_strdup("-u"));
                g_ptr_array_add(argv, g_strdup(c->pg_owner));
                g_ptr_array_add(argv, g_strdup("--"));
        }
        g_ptr_array_add(argv, g_build_filename(bindir && *bindir ? bindir : CLI_PG_BINDIR, tool, NULL));
        for (; *args; args++)
                g_ptr_array_add(argv, g_strdup(*args));
        g_ptr_array_add(argv, NULL);
        /* From /: the owner may not enter our working folder. */
        if (!g_spawn_sync("/", (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status,
                          &local) || !g_spawn_check_wait_status(status, &local)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "%s failed: %s%s%s (PostgreSQL 15 is the package postgresql-15; $FERRY_PG_BINDIR names "
                            "another folder of its programs)", tool, local->message, err && *err ? ": " : "",
                            err ? g_strchomp(err) : "");
                return -1;
        }
        return 0;
}

/*
 * --postgresql: the engines' database, a server of the cluster's own
 * (initdb, pg_ctl) listening on a unix socket only. As root the server runs
 * as "postgres" (Debian's package user) or "nobody", in a folder under the
 * temp dir that user can reach, linked from DIR/postgresql; otherwise it is
 * DIR/postgresql itself. A development cluster: fsync is off.
 */
static int cli_start_postgresql(struct cli_cluster *c, GError **error)
{
        g_autofree char *link = g_build_filename(c->dir, "postgresql", NULL);
        g_autofree char *data = NULL, *log = NULL, *server_opts = NULL;
        struct stat st;
        unsigned port;

        if (lstat(link, &st) == 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "%s holds an earlier cluster's PostgreSQL; remove it or choose another --dir", link);
                return -1;
        }
        if (getuid() == 0) {
                struct passwd *pw = getpwnam("postgres");

                if (!pw)
                        pw = getpwnam("nobody");
                if (!pw) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "--postgresql as root needs a user 'postgres' or 'nobody' to run the server");
                        return -1;
                }
                c->pg_owner = g_strdup(pw->pw_name);
                c->pg_dir = g_dir_make_tmp("ferry-pg-XXXXXX", NULL);
                if (!c->pg_dir || chown(c->pg_dir, pw->pw_uid, pw->pw_gid) < 0 ||
                    (unlink(link) < 0 && errno != ENOENT) || symlink(c->pg_dir, link) < 0) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot prepare the PostgreSQL folder: %s",
                                    g_strerror(errno));
                        return -1;
                }
        } else {
                c->pg_dir = g_steal_pointer(&link);
                if (g_mkdir_with_parents(c->pg_dir, 0700) < 0) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot create %s: %s", c->pg_dir,
                                    g_strerror(errno));
                        return -1;
                }
        }
        if (!(port = cli_free_port(error)))
                return -1;
        data = g_build_filename(c->pg_dir, "data", NULL);
        log = g_build_filename(c->pg_dir, "server.log", NULL);
        /* The port only names the socket: nothing listens on TCP. */
        server_opts = g_strdup_printf("-k %s -p %u -c listen_addresses= -c fsync=off -c max_connections=100",
                                      c->pg_dir, port);
        {
                const char *initdb[] = { "-D", data, "-U", "ferry", "-A", "trust", "-E", "UTF8", "--locale=C",
                                         "--no-sync", NULL };
                const char *start[] = { "start", "-w", "-t", "60", "-D", data, "-l", log, "-s", "-o", server_opts,
                                        NULL };

                if (cli_pg_run(c, "initdb", initdb, error) < 0 || cli_pg_run(c, "pg_ctl", start, error) < 0)
                        return -1;
        }
        c->db = g_strdup_printf("host=%s port=%u user=ferry dbname=postgres", c->pg_dir, port);
        return cli_cluster_save(c, error);
}

/* The server's temp folder (as root), and the link to it: the next `up` starts afresh. */
static void cli_remove_postgresql(const struct cli_cluster *c)
{
        g_autofree char *link = g_build_filename(c->dir, "postgresql", NULL);
        const char *argv[] = { "rm", "-rf", "--", c->pg_dir, NULL };

        if (!c->pg_owner || !c->pg_dir || !g_str_has_prefix(c->pg_dir, g_get_tmp_dir()))
                return;
        g_spawn_sync("/", (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL |
                     G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        unlink(link);
}

static void cli_stop_postgresql(const struct cli_cluster *c, bool verbose)
{
        g_autofree char *data = NULL;
        g_autoptr(GError) local = NULL;

        if (!cli_postgresql_running(c)) {
                cli_remove_postgresql(c);
                return;
        }
        data = g_build_filename(c->pg_dir, "data", NULL);
        {
                const char *stop[] = { "stop", "-w", "-D", data, "-m", "fast", "-s", NULL };

                if (cli_pg_run(c, "pg_ctl", stop, &local) < 0)
                        fprintf(stderr, "ferry: PostgreSQL in %s: %s\n", c->pg_dir, local->message);
                else if (verbose)
                        printf("postgresql (%s): stopped\n", c->pg_dir);
        }
        if (!cli_postgresql_running(c))
                cli_remove_postgresql(c);
}

/*
 * Stops the engine and the agents, then each sanlock daemon (shutdown -f 1,
 * then SIGKILL if it lingers). Only processes that are still ours.
 */
static void cli_cluster_stop(const struct cli_cluster *c, bool verbose)
{
        guint n = c->hosts->len, ne = 1 + c->standbys->len;
        g_autofree struct cli_victim *v = g_new0(struct cli_victim, n + ne);
        g_autofree struct cli_victim *s = g_new0(struct cli_victim, MAX(n, 1));
        g_auto(GStrv) names = g_new0(char *, ne + 1);

        names[0] = g_strdup("");
        v[0] = (struct cli_victim) { "engine", names[0], cli_engine_ours(c) ? c->engine_pid : 0, false };
        for (guint i = 1; i < ne; i++) {
                const struct cli_standby *sb = c->standbys->pdata[i - 1];

                names[i] = g_strdup_printf("%u", i + 1);
                v[i] = (struct cli_victim) { "engine", names[i], cli_standby_ours(c, sb) ? sb->pid : 0, false };
        }
        for (guint i = 0; i < n; i++) {
                const struct cli_host *h = c->hosts->pdata[i];

                v[i + ne] = (struct cli_victim) { "agent", h->name, cli_agent_ours(h) ? h->pid : 0, false };
        }
        cli_stop_victims(v, n + ne, verbose);
        /* The database last but for sanlock: the engines are gone. */
        cli_stop_postgresql(c, verbose);

        /* sanlock after the agents: their leases and registrations go first. */
        for (guint i = 0; i < n; i++) {
                const struct cli_host *h = c->hosts->pdata[i];

                s[i] = (struct cli_victim) { "sanlock", h->name, cli_sanlock_ours(h) ? h->sanlock_pid : 0, false };
                if (s[i].pid > 0)
                        cli_sanlock_client(h->run_dir, "shutdown", "-f", "1");
        }
        if (!cli_wait_gone(s, n, CLI_TERM_WAIT_S)) {
                for (guint i = 0; i < n; i++) {
                        if (s[i].pid > 0 && cli_proc_alive(s[i].pid)) {
                                if (verbose)
                                        printf("sanlock %s (pid %d) did not shut down: killing it\n", s[i].name,
                                               (int) s[i].pid);
                                kill(s[i].pid, SIGKILL);
                        }
                }
                cli_wait_gone(s, n, CLI_KILL_WAIT_S);
        }
        for (guint i = 0; i < n; i++)
                s[i].stopped = s[i].pid > 0 && !cli_proc_alive(s[i].pid);

        if (!verbose)
                return;
        for (guint i = 0; i < n + ne; i++) {
                const char *sep = *v[i].name ? " " : "";

                if (v[i].pid <= 0)
                        printf("%s%s%s: not running\n", v[i].what, sep, v[i].name);
                else
                        printf("%s%s%s (pid %d): %s\n", v[i].what, sep, v[i].name, (int) v[i].pid,
                               v[i].stopped ? "stopped" : "STILL RUNNING");
        }
        for (guint i = 0; i < n; i++) {
                if (s[i].pid <= 0)
                        printf("sanlock %s: not running\n", s[i].name);
                else
                        printf("sanlock %s (pid %d): %s\n", s[i].name, (int) s[i].pid,
                               s[i].stopped ? "stopped" : "STILL RUNNING");
        }
}

/* ---- up ---- */

/*
 * A local port free now, for an agent's metrics_port (0 there means off, so the agent
 * cannot pick one itself). Another process may take it before the agent binds it:
 * the agent then exits and cli_start_host() says so.
 */
static unsigned cli_free_port(GError **error)
{
        g_autoptr(GSocket) sock = g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, error);
        g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
        g_autoptr(GSocketAddress) addr = g_inet_socket_address_new(lo, 0);
        g_autoptr(GSocketAddress) bound = NULL;

        if (!sock || !g_socket_bind(sock, addr, FALSE, error) ||
            !(bound = g_socket_get_local_address(sock, error)))
                return 0;
        return g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
}

/*
 * DIR/pki: a CA, and the engine's certificate for 127.0.0.1, ::1 and
 * localhost. An existing CA (a cluster brought up in this folder before) is
 * kept; the certificates are issued afresh at every `up`.
 */
static int cli_cluster_pki(struct cli_cluster *c, GError **error)
{
        g_autofree char *pki = g_build_filename(c->dir, "pki", NULL);
        const char *addresses[] = { "127.0.0.1", "::1", "localhost", NULL };
        GError *local = NULL;
        int r;

        c->ca_file = fy_pki_ca_path(pki);
        if (g_file_test(c->ca_file, G_FILE_TEST_EXISTS))
                r = fy_pki_issue(pki, "engine", addresses, 0, true, NULL, NULL, &local);
        else
                r = fy_pki_init(pki, "engine", addresses, 0, 0, &local);
        if (r < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot make the cluster's PKI in %s: %s", pki,
                            local->message);
                g_error_free(local);
                return -1;
        }
        return 0;
}

/* agent_opts: more agent options (NULL-terminated, may be NULL), the same for every host. */
static int cli_start_host(struct cli_cluster *c, struct cli_host *h, const char *agent_bin,
                          const char *const *agent_opts, GError **error)
{
        g_autofree char *sanlock = cli_sanlock_bin();
        g_auto(GStrv) env = cli_sanlock_env(h->run_dir);
        g_autofree char *port = NULL, *a_root = NULL, *a_run = NULL, *a_name = NULL, *a_metrics = NULL;
        g_autofree char *pki = g_build_filename(c->dir, "pki", NULL), *cert = NULL, *key = NULL;
        g_autofree char *a_cert = NULL, *a_key = NULL, *a_ca = NULL;
        const char *addresses[] = { "127.0.0.1", NULL };
        GError *local = NULL;
        unsigned metrics_port;
        gint64 deadline;
        goffset off = 0;
        guint64 p;

        char *sargv[] = { sanlock, "daemon", "-D", "-w", "0", "-l", "0", "-h", "0", "-U", "root", "-G", "root",
                          "-e", h->name, NULL };
        if (g_mkdir_with_parents(h->run_dir, 0755) < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot create %s: %s", h->run_dir, g_strerror(errno));
                return -1;
        }
        if (cli_spawn(sargv, env, h->sanlock_log, &h->sanlock_pid, NULL, error) < 0)
                return -1;
        if (cli_cluster_save(c, error) < 0)
                return -1;
        deadline = g_get_monotonic_time() + CLI_SANLOCK_READY_S * G_USEC_PER_SEC;
        while (!cli_sanlock_client(h->run_dir, "status", NULL, NULL)) {
                if (cli_check_interrupt(error) < 0)
                        return -1;
                if (!cli_proc_alive(h->sanlock_pid)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the sanlock daemon of %s exited; see %s",
                                    h->name, h->sanlock_log);
                        return -1;
                }
                if (g_get_monotonic_time() > deadline) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "the sanlock daemon of %s did not answer within %d s; see %s", h->name,
                                    CLI_SANLOCK_READY_S, h->sanlock_log);
                        return -1;
                }
                g_usleep(CLI_POLL_MS * 1000);
        }

        a_root = g_strdup_printf("--storage-root=%s/storage", c->dir);
        a_run = g_strdup_printf("--sanlock-run-dir=%s", h->run_dir);
        a_name = g_strdup_printf("--host-name=%s", h->name);
        /* The host's certificate names it as the engine registers it: hostN at 127.0.0.1. */
        if (fy_pki_issue(pki, h->name, addresses, 0, false, &cert, &key, &local) < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "certificate of %s: %s", h->name, local->message);
                g_error_free(local);
                return -1;
        }
        a_cert = g_strdup_printf("--tls-cert=%s", cert);
        a_key = g_strdup_printf("--tls-key=%s", key);
        a_ca = g_strdup_printf("--tls-ca=%s", c->ca_file);
        if ((metrics_port = cli_free_port(error)) == 0)
                return -1;
        a_metrics = g_strdup_printf("--metrics-port=%u", metrics_port);
        char *aargv[16] = { (char *) agent_bin, a_cert, a_key, a_ca, "--port=0", "--transfer-port=0", a_root, a_run,
                            "--io-timeout=2", a_name, a_metrics, NULL };
        for (size_t i = 11, k = 0; agent_opts && agent_opts[k]; i++, k++) {
                g_assert(i < G_N_ELEMENTS(aargv) - 1);
                aargv[i] = (char *) agent_opts[k];
        }
        if (cli_spawn(aargv, NULL, h->log, &h->pid, &off, error) < 0)
                return -1;
        if (cli_cluster_save(c, error) < 0)
                return -1;
        port = cli_wait_log(h->pid, "the agent", h->log, off, "listening on 127\\.0\\.0\\.1:([0-9]{1,5})",
                            CLI_LISTEN_S, error);
        if (!port)
                return -1;
        if (!g_ascii_string_to_unsigned(port, 10, 1, 65535, &p, NULL)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the agent of %s logged a bad port; see %s",
                            h->name, h->log);
                return -1;
        }
        h->port = (int) p;
        g_free(port);
        /* Started after the RPC listener: wait for it, so a port taken meanwhile fails here. */
        port = cli_wait_log(h->pid, "the agent", h->log, off, "metrics served on (https?://127\\.0\\.0\\.1:[0-9]{1,5}/metrics)",
                            CLI_LISTEN_S, error);
        if (!port)
                return -1;
        h->metrics_url = g_steal_pointer(&port);
        return cli_cluster_save(c, error);
}

/* A random password for the cluster's admin in DIR/admin.password (0600), unless there is one. */
static int cli_admin_password(struct cli_cluster *c, GError **error)
{
        guint8 raw[18];
        g_autofree char *text = NULL;
        g_autoptr(GError) local = NULL;

        c->admin_user = g_strdup("admin");
        c->admin_password_file = g_build_filename(c->dir, "admin.password", NULL);
        if (g_file_test(c->admin_password_file, G_FILE_TEST_EXISTS))
                return 0;
        /* getrandom: the kernel's cryptographic generator (GLib's g_random is not one). */
        if (getrandom(raw, sizeof(raw), 0) != (ssize_t) sizeof(raw)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot make a password: %s", g_strerror(errno));
                return -1;
        }
        text = g_base64_encode(raw, sizeof(raw));
        memset(raw, 0, sizeof(raw));
        g_strdelimit(text, "+/", '-');
        if (!g_file_set_contents_full(c->admin_password_file, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &local)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot write the admin's password: %s", local->message);
                return -1;
        }
        memset(text, 0, strlen(text));
        return 0;
}

/* Logs the CLI in as the cluster's admin, for the commands that follow (and cluster up's own requests). */
static int cli_cluster_login(struct cli_cluster *c, struct cli_engine *e, GError **error)
{
        g_autofree char *password = NULL, *token = NULL;
        int r;

        if (cli_read_password_file(c->admin_password_file, &password, error) < 0)
                return -1;
        r = cli_login_password(e, c->admin_user, password, &token, error);
        memset(password, 0, strlen(password));
        if (r < 0)
                return -1;
        return cli_token_store(cli_engine_url(e), token, error);
}

/* index 0: the first engine (active at start); more are standbys on the same PostgreSQL database. */
static int cli_start_engine(struct cli_cluster *c, const char *engine_bin, guint index, GError **error)
{
        g_autofree char *db = cli_engine_needle(c);
        g_autofree char *cert = g_strdup_printf("--tls-cert=%s/pki/engine.pem", c->dir);
        g_autofree char *key = g_strdup_printf("--tls-key=%s/pki/engine.key", c->dir);
        g_autofree char *ca = g_strdup_printf("--tls-ca=%s", c->ca_file);
        g_autofree char *admin = NULL, *admin_pw = NULL;
        goffset off = 0;

        if (cli_admin_password(c, error) < 0)
                return -1;
        admin = g_strdup_printf("--create-admin=%s", c->admin_user);
        admin_pw = g_strdup_printf("--admin-password-file=%s", c->admin_password_file);
        char *argv[] = { (char *) engine_bin, "--port=0", db, cert, key, ca, admin, admin_pw, NULL };

        if (index > 0) {
                struct cli_standby *sb = g_new0(struct cli_standby, 1);
                g_autofree char *name = g_strdup_printf("engine%u.log", index + 1);

                sb->log = g_build_filename(c->dir, "logs", name, NULL);
                g_ptr_array_add(c->standbys, sb);
                if (cli_spawn(argv, NULL, sb->log, &sb->pid, &off, error) < 0 || cli_cluster_save(c, error) < 0)
                        return -1;
                sb->url = cli_wait_log(sb->pid, "a standby engine", sb->log, off,
                                       "listening on (https://127\\.0\\.0\\.1:[0-9]{1,5})", CLI_LISTEN_S, error);
                return sb->url ? cli_cluster_save(c, error) : -1;
        }
        c->engine_log = g_build_filename(c->dir, "logs", "engine.log", NULL);
        if (cli_spawn(argv, NULL, c->engine_log, &c->engine_pid, &off, error) < 0)
                return -1;
        if (cli_cluster_save(c, error) < 0)
                return -1;
        c->engine_url = cli_wait_log(c->engine_pid, "the engine", c->engine_log, off,
                                     "listening on (https://127\\.0\\.0\\.1:[0-9]{1,5})", CLI_LISTEN_S, error);
        if (!c->engine_url)
                return -1;
        return cli_cluster_save(c, error);
}

/* Fails when a process died while we wait for the cluster; names its log. */
static int cli_check_alive(const struct cli_cluster *c, GError **error)
{
        if (!cli_proc_alive(c->engine_pid)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine exited; see %s", c->engine_log);
                return -1;
        }
        for (guint i = 0; i < c->hosts->len; i++) {
                const struct cli_host *h = c->hosts->pdata[i];

                if (!cli_proc_alive(h->pid)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the agent of %s exited; see %s", h->name,
                                    h->log);
                        return -1;
                }
                if (!cli_proc_alive(h->sanlock_pid)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the sanlock daemon of %s exited; see %s",
                                    h->name, h->sanlock_log);
                        return -1;
                }
        }
        return 0;
}

static int cli_register_hosts(struct cli_cluster *c, struct cli_engine *e, GError **error)
{
        for (guint i = 0; i < c->hosts->len; i++) {
                struct cli_host *h = c->hosts->pdata[i];
                json_t *body = json_pack("{s:s, s:s, s:i}", "name", h->name, "address", "127.0.0.1", "port", h->port);
                json_t *answer = NULL;
                const char *id = NULL;
                int r;

                r = cli_engine_request(e, "POST", "/api/hosts", body, &answer, error);
                json_decref(body);
                if (r < 0) {
                        g_prefix_error(error, "adding %s: ", h->name);
                        return -1;
                }
                if (json_unpack(answer, "{s:s}", "id", &id) < 0 || !fy_uuid_is_valid(id)) {
                        json_decref(answer);
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "adding %s: the engine sent no host id",
                                    h->name);
                        return -1;
                }
                h->id = g_strdup(id);
                json_decref(answer);
        }
        return cli_cluster_save(c, error);
}

/* The engine needs an up host to create a domain: retry on 503 until the deadline. */
static int cli_create_domains(struct cli_cluster *c, struct cli_engine *e, int count, gint64 deadline,
                              GError **error)
{
        for (int i = 1; i <= count; i++) {
                g_autofree char *name = g_strdup_printf("sd%d", i);
                json_t *body = json_pack("{s:s}", "name", name);
                json_t *answer = NULL;
                const char *id = NULL;
                struct cli_sd *sd;

                for (;;) {
                        g_autoptr(GError) local = NULL;

                        if (cli_engine_request(e, "POST", "/api/storagedomains", body, &answer, &local) == 0)
                                break;
                        if (cli_engine_last_status(e) != 503 || g_get_monotonic_time() > deadline ||
                            cli_check_alive(c, NULL) < 0 || cli_up_signal) {
                                json_decref(body);
                                g_propagate_prefixed_error(error, g_steal_pointer(&local), "creating %s: ", name);
                                return -1;
                        }
                        g_usleep(200 * 1000);
                }
                json_decref(body);
                if (json_unpack(answer, "{s:s}", "id", &id) < 0 || !fy_uuid_is_valid(id)) {
                        json_decref(answer);
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "creating %s: the engine sent no id", name);
                        return -1;
                }
                sd = g_new0(struct cli_sd, 1);
                sd->name = g_steal_pointer(&name);
                sd->id = g_strdup(id);
                sd->path = g_build_filename(c->dir, "storage", id, NULL);
                g_ptr_array_add(c->sds, sd);
                json_decref(answer);
                if (cli_cluster_save(c, error) < 0)
                        return -1;
        }
        return 0;
}

/* True when every host is up and connected to the pool and the data center has an SPM. */
static bool cli_cluster_ready(struct cli_engine *e, guint nhosts, char **ret_state)
{
        json_t *hosts = NULL, *dcs = NULL, *item;
        g_autoptr(GString) state = g_string_new(NULL);
        guint ready = 0;
        bool spm = false;
        size_t i;

        if (cli_engine_get_list(e, "/api/hosts", "hosts", &hosts, NULL) < 0 ||
            cli_engine_get_list(e, "/api/datacenters", "datacenters", &dcs, NULL) < 0) {
                json_decref(hosts);
                *ret_state = g_strdup("engine not answering");
                return false;
        }
        json_array_foreach(hosts, i, item) {
                g_autofree char *name = cli_json_text(item, "name"), *status = cli_json_text(item, "status");
                bool pool = json_is_true(json_object_get(item, "pool_connected"));

                if (strcmp(status, "up") == 0 && pool)
                        ready++;
                g_string_append_printf(state, "%s%s %s%s", state->len ? ", " : "", name, status,
                                       pool ? "+pool" : "");
        }
        json_array_foreach(dcs, i, item) {
                if (json_is_object(json_object_get(item, "spm")))
                        spm = true;
        }
        g_string_append(state, spm ? "; SPM elected" : "; no SPM yet");
        json_decref(hosts);
        json_decref(dcs);
        *ret_state = g_string_free(g_steal_pointer(&state), FALSE);
        return ready >= nhosts && spm;
}

static int cli_wait_ready(struct cli_cluster *c, struct cli_engine *e, gint64 deadline, GError **error)
{
        g_autofree char *last = NULL;

        for (;;) {
                g_autofree char *state = NULL;
                bool ready = cli_cluster_ready(e, c->hosts->len, &state);

                if (!last || strcmp(last, state) != 0) {
                        printf("  %s\n", state);
                        fflush(stdout);
                        g_free(last);
                        last = g_strdup(state);
                }
                if (ready)
                        return 0;
                if (cli_check_alive(c, error) < 0 || cli_check_interrupt(error) < 0)
                        return -1;
                if (g_get_monotonic_time() > deadline) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "the cluster was not ready within %d s (%s); see %s and the agents' logs in %s/logs",
                                    CLI_CLUSTER_READY_S, state, c->engine_log, c->dir);
                        return -1;
                }
                g_usleep(200 * 1000);
        }
}

static void cli_print_summary(const struct cli_cluster *c, struct cli_engine *e)
{
        g_autoptr(cli_table) t = cli_table_new("HOST", "ID", "AGENT", "STATUS", "SPM", "PID", "SANLOCK PID", NULL);
        json_t *hosts = NULL;

        if (cli_engine_get_list(e, "/api/hosts", "hosts", &hosts, NULL) < 0)
                hosts = json_array();
        printf("cluster up in %s\n", c->dir);
        printf("engine %s (pid %d), log %s\n", c->engine_url, (int) c->engine_pid, c->engine_log);
        for (guint i = 0; i < c->standbys->len; i++) {
                const struct cli_standby *sb = c->standbys->pdata[i];

                printf("standby engine %s (pid %d), log %s\n", sb->url, (int) sb->pid, sb->log);
        }
        if (c->pg_dir)
                printf("PostgreSQL in %s (%s)\n", c->pg_dir, c->db);
        printf("\n");
        for (guint i = 0; i < c->hosts->len; i++) {
                const struct cli_host *h = c->hosts->pdata[i];
                const json_t *match = NULL, *item;
                size_t k;

                json_array_foreach(hosts, k, item) {
                        const char *id = json_string_value(json_object_get(item, "id"));

                        if (id && h->id && strcmp(id, h->id) == 0)
                                match = item;
                }
                cli_table_add_take(t, g_strdup(h->name), g_strdup(h->id ? h->id : "-"),
                                   g_strdup_printf("127.0.0.1:%d", h->port), cli_json_text(match, "status"),
                                   g_strdup(json_is_true(json_object_get(match, "spm")) ? "SPM" : "-"),
                                   g_strdup_printf("%d", (int) h->pid), g_strdup_printf("%d", (int) h->sanlock_pid));
        }
        cli_table_print(t, stdout);
        printf("\n");
        for (guint i = 0; i < c->sds->len; i++) {
                const struct cli_sd *sd = c->sds->pdata[i];

                printf("%s  %s  %s\n", sd->name, sd->id, sd->path);
        }
        printf("\nexport FERRY_ENGINE_URL=%s FERRY_CA_FILE=%s\n", c->engine_url, c->ca_file);
        printf("logged in as %s (password in %s; ferry login --user %s --password-file %s)\n", c->admin_user,
               c->admin_password_file, c->admin_user, c->admin_password_file);
        printf("stop it with: ferry cluster down --dir %s\n", c->dir);
        json_decref(hosts);
}

static const GOptionEntry *cli_dir_entry(char **dir)
{
        static GOptionEntry entries[2];

        entries[0] = (GOptionEntry) { "dir", 0, 0, G_OPTION_ARG_FILENAME, dir,
                                      "Cluster directory (default ./" CLI_DEFAULT_CLUSTER_DIR ")", "DIR" };
        entries[1] = (GOptionEntry) G_OPTION_ENTRY_NULL;
        return entries;
}

/* DIR made absolute: the daemons get paths under it. */
static int cli_cluster_dir(const char *opt, char **ret_dir, GError **error)
{
        const char *dir = opt ? opt : CLI_DEFAULT_CLUSTER_DIR;

        if (!*dir || strlen(dir) > 512) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--dir must be 1 to 512 bytes");
                return -1;
        }
        *ret_dir = g_canonicalize_filename(dir, NULL);
        return 0;
}

int cli_cluster_up(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *dir_opt = NULL, *dir = NULL, *file = NULL, *db = NULL;
        g_autofree char *agent_bin = NULL, *engine_bin = NULL, *logs = NULL, *storage = NULL;
        g_autofree char *rate_opt = NULL, *rate_arg = NULL, *jobs_arg = NULL;
        gint hosts = 3, domains = 2, max_jobs = 0, engines = 1;
        gboolean postgresql = FALSE;
        const char *agent_opts[4] = { NULL };
        g_autofree char *cors_arg = NULL;
        size_t n_agent_opts = 0;
        uint64_t rate = 0;
        const GOptionEntry entries[] = {
                { "dir", 0, 0, G_OPTION_ARG_FILENAME, &dir_opt,
                  "Cluster directory (default ./" CLI_DEFAULT_CLUSTER_DIR ")", "DIR" },
                { "hosts", 0, 0, G_OPTION_ARG_INT, &hosts, "Number of hosts (default 3)", "N" },
                { "domains", 0, 0, G_OPTION_ARG_INT, &domains, "Number of storage domains (default 2)", "M" },
                { "copy-rate-limit", 0, 0, G_OPTION_ARG_STRING, &rate_opt,
                  "Every host's copy bandwidth cap in bytes/s, shared by its running copies, e.g. 50M "
                  "(default: the agent's, unlimited)", "SIZE" },
                { "max-jobs", 0, 0, G_OPTION_ARG_INT, &max_jobs,
                  "Jobs each host runs at once, 1 to 64; more wait as pending (default: the agent's, 2)", "N" },
                { "engines", 0, 0, G_OPTION_ARG_INT, &engines,
                  "Engines, one active and the others standbys (default 1; more need --postgresql)", "N" },
                { "postgresql", 0, 0, G_OPTION_ARG_NONE, &postgresql,
                  "Keep the inventory in a PostgreSQL server of the cluster's own (DIR/postgresql) instead of SQLite",
                  NULL },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_cluster) c = NULL;
        g_autoptr(cli_engine) e = NULL;
        gint64 deadline;
        bool db_existed;

        if (cli_parse_options(ctx, &argc, &argv, entries, NULL, "Starts a local cluster from the build tree.",
                              error) < 0 || cli_expect_args(argc, 0, NULL, error) < 0)
                return -1;
        if (hosts < 1 || hosts > CLI_MAX_HOSTS || domains < 1 || domains > CLI_MAX_DOMAINS) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--hosts must be 1 to %d and --domains 1 to %d",
                            CLI_MAX_HOSTS, CLI_MAX_DOMAINS);
                return -1;
        }
        if (engines < 1 || engines > CLI_MAX_ENGINES || (engines > 1 && !postgresql)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE,
                            "--engines must be 1 to %d, and more than 1 share a PostgreSQL database: add --postgresql",
                            CLI_MAX_ENGINES);
                return -1;
        }
        if (rate_opt) {
                if (cli_parse_size(rate_opt, &rate, error) < 0) {
                        g_prefix_error(error, "--copy-rate-limit: ");
                        return -1;
                }
                rate_arg = g_strdup_printf("--copy-rate-limit=%" G_GUINT64_FORMAT, rate);
                agent_opts[n_agent_opts++] = rate_arg;
        }
        if (max_jobs != 0) {
                if (max_jobs < 1 || max_jobs > 64) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--max-jobs must be 1 to 64, got %d", max_jobs);
                        return -1;
                }
                jobs_arg = g_strdup_printf("--max-jobs=%d", max_jobs);
                agent_opts[n_agent_opts++] = jobs_arg;
        }
        if (cli_cluster_dir(dir_opt, &dir, error) < 0)
                return -1;
        if (cli_find_binary("FERRY_AGENT_BIN", "agent", "ferry-agent", &agent_bin, error) < 0 ||
            cli_find_binary("FERRY_ENGINE_BIN", "engine", "ferry-engine", &engine_bin, error) < 0)
                return -1;

        file = cli_cluster_file(dir);
        if (g_file_test(file, G_FILE_TEST_EXISTS)) {
                g_autoptr(cli_cluster) old = NULL;

                if (cli_cluster_load(dir, &old, error) < 0)
                        return -1;
                if (cli_cluster_any_alive(old)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "a cluster is already running in %s; run 'ferry cluster down --dir %s' first",
                                    dir, dir);
                        return -1;
                }
                unlink(file);
        }
        db = g_build_filename(dir, "engine.db", NULL);
        db_existed = g_file_test(db, G_FILE_TEST_EXISTS);
        if (db_existed) {
                /* Its hosts and domains point at agents and storage that are gone. */
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "%s holds an earlier cluster's engine database; remove %s or choose another --dir",
                            dir, dir);
                return -1;
        }

        logs = g_build_filename(dir, "logs", NULL);
        storage = g_build_filename(dir, "storage", NULL);
        if (g_mkdir_with_parents(logs, 0755) < 0 || g_mkdir_with_parents(storage, 0755) < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot create %s: %s", dir, g_strerror(errno));
                return -1;
        }

        c = cli_cluster_new(dir);
        if (cli_cluster_pki(c, error) < 0)
                return -1;
        for (int i = 1; i <= hosts; i++) {
                struct cli_host *h = g_new0(struct cli_host, 1);

                h->name = g_strdup_printf("host%d", i);
                h->run_dir = g_strdup_printf("%s/run/%s", dir, h->name);
                h->log = g_strdup_printf("%s/agent-%s.log", logs, h->name);
                h->sanlock_log = g_strdup_printf("%s/sanlock-%s.log", logs, h->name);
                g_ptr_array_add(c->hosts, h);
        }

        {
                struct sigaction sa = { .sa_handler = cli_on_up_signal };   /* no SA_RESTART: waits wake up */

                sigemptyset(&sa.sa_mask);
                sigaction(SIGINT, &sa, NULL);
                sigaction(SIGTERM, &sa, NULL);
                sigaction(SIGHUP, &sa, NULL);
        }
        printf("starting %d hosts in %s\n", hosts, dir);
        fflush(stdout);
        /* The engine first: the agents answer CORS for its origin, the web UI's (cors_origin). */
        if (postgresql) {
                printf("starting PostgreSQL\n");
                fflush(stdout);
                if (cli_start_postgresql(c, error) < 0 || cli_check_interrupt(error) < 0)
                        goto fail;
        }
        printf(engines > 1 ? "starting %d engines\n" : "starting the engine\n", engines);
        fflush(stdout);
        /* The first one first: it becomes the active engine and makes the data center and the admin. */
        for (guint i = 0; i < (guint) engines; i++)
                if (cli_start_engine(c, engine_bin, i, error) < 0 || cli_check_interrupt(error) < 0)
                        goto fail;
        cors_arg = g_strdup_printf("--cors-origin=%s", c->engine_url);
        agent_opts[n_agent_opts++] = cors_arg;
        for (guint i = 0; i < c->hosts->len; i++)
                if (cli_start_host(c, c->hosts->pdata[i], agent_bin, agent_opts, error) < 0 ||
                    cli_check_interrupt(error) < 0)
                        goto fail;
        e = cli_engine_new(c->engine_url, c->ca_file, error);
        if (!e)
                goto fail;
        for (guint i = 0; i < c->standbys->len; i++)
                if (cli_engine_add_peer(e, ((struct cli_standby *) c->standbys->pdata[i])->url, error) < 0)
                        goto fail;
        if (cli_cluster_login(c, e, error) < 0)
                goto fail;

        deadline = g_get_monotonic_time() + CLI_CLUSTER_READY_S * G_USEC_PER_SEC;
        printf("adding hosts and storage domains to the engine at %s\n", c->engine_url);
        fflush(stdout);
        if (cli_register_hosts(c, e, error) < 0 || cli_create_domains(c, e, domains, deadline, error) < 0 ||
            cli_check_interrupt(error) < 0)
                goto fail;
        printf("waiting for the hosts to connect and an SPM to be elected\n");
        fflush(stdout);
        if (cli_wait_ready(c, e, deadline, error) < 0)
                goto fail;

        printf("\n");
        cli_print_summary(c, e);
        return 0;

fail:
        /* Leave nothing running and no state that would block the next `up`. */
        g_prefix_error(error, "cluster up failed: ");
        fprintf(stderr, "ferry: %s\nferry: stopping what was started\n", (*error)->message);
        cli_cluster_stop(c, false);
        unlink(file);
        if (!db_existed) {
                g_autofree char *wal = g_strconcat(db, "-wal", NULL), *shm = g_strconcat(db, "-shm", NULL);

                unlink(db);
                unlink(wal);
                unlink(shm);
        }
        return -1;
}

int cli_cluster_down(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *dir_opt = NULL, *dir = NULL, *file = NULL;
        g_autoptr(cli_cluster) c = NULL;

        if (cli_parse_options(ctx, &argc, &argv, cli_dir_entry(&dir_opt), NULL,
                              "Stops the processes of a cluster started by 'ferry cluster up'.", error) < 0 ||
            cli_expect_args(argc, 0, NULL, error) < 0)
                return -1;
        if (cli_cluster_dir(dir_opt, &dir, error) < 0)
                return -1;
        file = cli_cluster_file(dir);
        if (!g_file_test(file, G_FILE_TEST_EXISTS)) {
                printf("no cluster in %s (no cluster.json): nothing to stop\n", dir);
                return 0;
        }
        if (cli_cluster_load(dir, &c, error) < 0)
                return -1;
        cli_cluster_stop(c, true);
        if (cli_cluster_any_alive(c)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "some processes survived SIGKILL; %s is kept", file);
                return -1;
        }
        if (unlink(file) < 0 && errno != ENOENT) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot remove %s: %s", file, g_strerror(errno));
                return -1;
        }
        printf("cluster in %s is down (logs in %s/logs)\n", dir, c->dir);
        return 0;
}

/*
 * One engine of the cluster as `cluster status` shows it: its process, and its
 * role as it answers GET /api/engine. *ret_e: that engine, logged in, when it
 * answered; NULL otherwise. Returns whether it runs and answers.
 */
static bool cli_status_engine(struct cli_cluster *c, struct cli_table *t, guint index, const char *url, GPid pid,
                              bool alive, struct cli_engine **ret_e, bool *ret_active)
{
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(GError) local = NULL;
        g_autofree char *state = NULL;
        json_t *role = NULL;

        *ret_e = NULL;
        *ret_active = false;
        if (url && (e = cli_engine_new(url, c->ca_file, &local))) {
                cli_engine_set_takeover_wait(e, 0);     /* a status says what is, it does not wait for a leader */
                if ((c->admin_password_file && cli_cluster_login(c, e, &local) < 0) ||
                    cli_engine_get(e, "/api/engine", &role, &local) < 0)
                        g_clear_pointer(&e, cli_engine_free);
        }
        if (e) {
                const char *r = json_string_value(json_object_get(role, "role"));

                *ret_active = g_strcmp0(r, "active") == 0;
                state = *ret_active ? g_strdup_printf("active (epoch %" JSON_INTEGER_FORMAT ")",
                                                      json_integer_value(json_object_get(role, "epoch"))) :
                        cli_json_text(role, "role");
        } else {
                state = cli_printable(url ? (local ? local->message : "?") : "no URL recorded");
        }
        cli_table_add_take(t, g_strdup_printf("%u", index + 1), cli_printable(url ? url : "-"),
                           g_strdup_printf("%d %s", (int) pid, alive ? "running" : "NOT RUNNING"),
                           g_steal_pointer(&state));
        json_decref(role);
        *ret_e = g_steal_pointer(&e);
        return alive && *ret_e;
}

int cli_cluster_status(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *dir_opt = NULL, *dir = NULL, *file = NULL;
        g_autoptr(cli_cluster) c = NULL;
        g_autoptr(cli_engine) reader = NULL;
        g_autoptr(cli_table) t = NULL;
        g_autoptr(GError) local = NULL;
        json_t *hosts = NULL, *dcs = NULL;
        bool healthy = true;
        guint active = 0;

        if (cli_parse_options(ctx, &argc, &argv, cli_dir_entry(&dir_opt), NULL,
                              "Shows the processes and hosts of a local cluster.", error) < 0 ||
            cli_expect_args(argc, 0, NULL, error) < 0)
                return -1;
        if (cli_cluster_dir(dir_opt, &dir, error) < 0)
                return -1;
        file = cli_cluster_file(dir);
        if (!g_file_test(file, G_FILE_TEST_EXISTS)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "no cluster in %s (no cluster.json)", dir);
                return -1;
        }
        if (cli_cluster_load(dir, &c, error) < 0)
                return -1;

        printf("cluster in %s\n", c->dir);
        /* Every engine (--engines N: one active, standbys): each asked itself, so a dead or stuck one shows. */
        t = cli_table_new("ENGINE", "URL", "PROCESS", "ROLE", NULL);
        for (guint i = 0; i <= c->standbys->len; i++) {
                const struct cli_standby *sb = i > 0 ? c->standbys->pdata[i - 1] : NULL;
                g_autoptr(cli_engine) e = NULL;
                bool is_active;

                if (!cli_status_engine(c, t, i, sb ? sb->url : c->engine_url, sb ? sb->pid : c->engine_pid,
                                       sb ? cli_standby_ours(c, sb) : cli_engine_ours(c), &e, &is_active))
                        healthy = false;
                active += is_active;
                /* Hosts and data centers from the active engine, else from any that answers (reads). */
                if (e && (!reader || is_active)) {
                        g_clear_pointer(&reader, cli_engine_free);
                        reader = g_steal_pointer(&e);
                }
        }
        cli_table_print(t, stdout);
        g_clear_pointer(&t, cli_table_free);
        if (active != 1) {
                printf("%u engines are active: one should be\n", active);
                healthy = false;
        }
        if (reader && (cli_engine_get_list(reader, "/api/hosts", "hosts", &hosts, &local) < 0 ||
                       cli_engine_get_list(reader, "/api/datacenters", "datacenters", &dcs, &local) < 0)) {
                g_autofree char *msg = cli_printable(local->message);

                printf("%s: %s\n", cli_engine_url(reader), msg);
                healthy = false;
        }
        if (dcs) {
                const json_t *dc;
                size_t i;

                json_array_foreach(dcs, i, dc) {
                        g_autofree char *name = cli_json_text(dc, "name"), *status = cli_json_text(dc, "status");
                        g_autofree char *spm = cli_json_text2(dc, "spm", "name");

                        printf("data center %s: %s, SPM %s\n", name, status, spm);
                }
        }
        printf("\n");

        t = cli_table_new("HOST", "AGENT", "SANLOCK", "PORT", "STATUS", "SPM", "POOL", NULL);
        for (guint i = 0; i < c->hosts->len; i++) {
                const struct cli_host *h = c->hosts->pdata[i];
                bool agent = cli_agent_ours(h), sanlock = cli_sanlock_ours(h);
                const json_t *match = NULL, *item;
                size_t k;

                json_array_foreach(hosts, k, item) {
                        const char *id = json_string_value(json_object_get(item, "id"));

                        if (id && h->id && strcmp(id, h->id) == 0)
                                match = item;
                }
                if (!agent || !sanlock || !match ||
                    g_strcmp0(json_string_value(json_object_get(match, "status")), "up") != 0)
                        healthy = false;
                cli_table_add_take(t, cli_printable(h->name),
                                   g_strdup_printf("%d %s", (int) h->pid, agent ? "running" : "DEAD"),
                                   g_strdup_printf("%d %s", (int) h->sanlock_pid, sanlock ? "running" : "DEAD"),
                                   g_strdup_printf("%d", h->port), cli_json_text(match, "status"),
                                   g_strdup(json_is_true(json_object_get(match, "spm")) ? "SPM" : "-"),
                                   g_strdup(json_is_true(json_object_get(match, "pool_connected")) ?
                                            "connected" : "-"));
        }
        cli_table_print(t, stdout);
        if (c->sds->len)
                printf("\n");
        for (guint i = 0; i < c->sds->len; i++) {
                const struct cli_sd *sd = c->sds->pdata[i];
                g_autofree char *name = cli_printable(sd->name), *id = cli_printable(sd->id);

                printf("%s  %s\n", name, id);
        }
        json_decref(hosts);
        json_decref(dcs);
        if (!healthy) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the cluster is not healthy");
                return -1;
        }
        return 0;
}
