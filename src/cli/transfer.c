/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ferry disk upload / download: an image transfer through the engine
 * (POST /api/imagetransfers), the bytes straight from and to the host's
 * transfer endpoint. Only data is sent: holes of the local file become
 * PATCH zero on upload, and a download writes only the data extents into a
 * sparse local file, so holes stay holes both ways.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libsoup/soup.h>

#include "config.h"
#include "cli.h"
#include "jsonrpc.h"      /* json_t autoptr */
#include "uuid.h"

#define CLI_CHUNK (8u * 1024 * 1024)   /* bytes per PUT / GET; the agent's default request limit */
#define CLI_POLL_US (200 * 1000)
#define CLI_JOB_WAIT_S 600
#define CLI_BAR_WIDTH 30
#define CLI_QEMU_IMG_OUT_MAX (1024 * 1024)

struct cli_xfer {
        SoupSession *session;
        char *url;                      /* .../images/<ticket> */
        bool tty;
        gint64 start;
        int last_pct;
};

static void cli_xfer_progress(struct cli_xfer *x, guint64 done, guint64 total, const char *label)
{
        int pct = total ? (int) (100.0 * (double) done / (double) total) : 100;

        if (x->tty) {
                int filled = pct * CLI_BAR_WIDTH / 100;
                char bar[CLI_BAR_WIDTH + 1];

                memset(bar, '#', (size_t) filled);
                memset(bar + filled, '.', (size_t) (CLI_BAR_WIDTH - filled));
                bar[CLI_BAR_WIDTH] = '\0';
                printf("\r[%s] %3d%%  %s\033[K", bar, pct, label);
                fflush(stdout);
        } else if (pct / 10 != x->last_pct / 10 || x->last_pct < 0) {
                printf("%3d%%  %s\n", pct, label);
                fflush(stdout);
        }
        x->last_pct = pct;
}

static void cli_xfer_free(struct cli_xfer *x)
{
        if (!x)
                return;
        g_clear_object(&x->session);
        g_free(x->url);
        g_free(x);
}

typedef struct cli_xfer cli_xfer;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_xfer, cli_xfer_free)

static struct cli_xfer *cli_xfer_new(const char *url, const char *ca_file, bool quiet, GError **error)
{
        g_autoptr(cli_xfer) x = g_new0(struct cli_xfer, 1);
        g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
        g_autoptr(GInetAddress) addr = NULL;

        if (!uri || !g_uri_get_host(uri) || (strcmp(g_uri_get_scheme(uri), "http") != 0 &&
                                            strcmp(g_uri_get_scheme(uri), "https") != 0)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent an invalid transfer_url");
                return NULL;
        }
        x->session = soup_session_new_with_options("timeout", 120, "user-agent", "ferry/" FERRY_VERSION, NULL);
        addr = g_inet_address_new_from_string(g_uri_get_host(uri));
        if (g_ascii_strcasecmp(g_uri_get_host(uri), "localhost") == 0 || (addr && g_inet_address_get_is_loopback(addr)))
                soup_session_set_proxy_resolver(x->session, NULL);
        if (ca_file) {
                g_autoptr(GTlsDatabase) db = g_tls_file_database_new(ca_file, error);

                if (!db)
                        return NULL;
                soup_session_set_tls_database(x->session, db);
        }
        x->url = g_strdup(url);
        x->tty = !quiet && isatty(STDOUT_FILENO);
        x->start = g_get_monotonic_time();
        x->last_pct = -1;
        return g_steal_pointer(&x);
}

/*
 * The answer body, read up to max bytes: a larger answer is refused while
 * it is read, so a host cannot make the CLI hold more than max.
 */
static int cli_xfer_read_answer(GInputStream *in, gsize max, GBytes **ret, GError **error)
{
        g_autoptr(GByteArray) buf = g_byte_array_new();
        guint8 chunk[16384];

        for (;;) {
                gssize n = g_input_stream_read(in, chunk, sizeof(chunk), NULL, error);

                if (n < 0)
                        return -1;
                if (n == 0)
                        break;
                if (buf->len + (gsize) n > max) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the host's answer is larger than %zu bytes", max);
                        return -1;
                }
                g_byte_array_append(buf, chunk, (guint) n);
        }
        *ret = g_byte_array_free_to_bytes(g_steal_pointer(&buf));
        return 0;
}

/* One request to the host; the answer body (≤ max bytes) in *ret_body if asked. */
static int cli_xfer_request(struct cli_xfer *x, const char *method, const char *suffix, GHashTable *headers,
                            const char *ctype, GBytes *body, gsize max, GBytes **ret_body, GError **error)
{
        g_autofree char *uri = g_strconcat(x->url, suffix ? suffix : "", NULL);
        g_autoptr(SoupMessage) msg = soup_message_new(method, uri);
        g_autoptr(GInputStream) in = NULL;
        g_autoptr(GBytes) answer = NULL;
        g_autoptr(GError) local = NULL;
        GHashTableIter it;
        gpointer k, v;
        guint status;

        if (!msg) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "invalid transfer url %s", uri);
                return -1;
        }
        if (headers) {
                g_hash_table_iter_init(&it, headers);
                while (g_hash_table_iter_next(&it, &k, &v))
                        soup_message_headers_replace(soup_message_get_request_headers(msg), k, v);
        }
        if (body)
                soup_message_set_request_body_from_bytes(msg, ctype, body);
        in = soup_session_send(x->session, msg, NULL, &local);
        status = in ? soup_message_get_status(msg) : 0;
        /* An error's text is shown cut to 512 bytes: read no more of it than that. */
        if (!in || cli_xfer_read_answer(in, status >= 300 ? 512 : max, &answer, &local) < 0) {
                if (status >= 300 && g_error_matches(local, CLI_ERROR, CLI_ERROR_FAILED))
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the host refused %s: HTTP %u", method, status);
                else
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s %s: %s", method, uri, local->message);
                return -1;
        }
        if (status >= 300) {
                g_autofree char *text = g_strndup(g_bytes_get_data(answer, NULL), g_bytes_get_size(answer));
                g_autofree char *safe = cli_printable(g_strstrip(text));

                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the host refused %s: HTTP %u %s", method, status, safe);
                return -1;
        }
        if (ret_body)
                *ret_body = g_steal_pointer(&answer);
        return 0;
}

/* GET of [start, start+len) written at the same offset of fd. */
static int cli_xfer_get_range(struct cli_xfer *x, int fd, guint64 start, guint64 len, GError **error)
{
        g_autoptr(SoupMessage) msg = soup_message_new("GET", x->url);
        g_autoptr(GInputStream) in = NULL;
        g_autoptr(GError) local = NULL;
        g_autofree char *range = g_strdup_printf("bytes=%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT, start, start + len - 1);
        g_autofree guint8 *buf = g_malloc(1024 * 1024);
        guint64 got = 0;

        soup_message_headers_replace(soup_message_get_request_headers(msg), "Range", range);
        in = soup_session_send(x->session, msg, NULL, &local);
        if (!in) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "GET %s: %s", x->url, local->message);
                return -1;
        }
        if (soup_message_get_status(msg) != SOUP_STATUS_PARTIAL_CONTENT) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the host answered HTTP %u to a range request",
                            soup_message_get_status(msg));
                return -1;
        }
        while (got < len) {
                gssize n = g_input_stream_read(in, buf, (gsize) MIN(len - got, (guint64) 1024 * 1024), NULL, &local);

                if (n <= 0) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "download interrupted at byte %" G_GUINT64_FORMAT ": %s",
                                    start + got, n < 0 ? local->message : "the host closed the connection");
                        return -1;
                }
                for (gssize w = 0; w < n;) {
                        ssize_t r = pwrite(fd, buf + w, (size_t) (n - w), (off_t) (start + got + (guint64) w));

                        if (r < 0 && errno == EINTR)
                                continue;
                        if (r < 0) {
                                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot write the local file: %s",
                                            g_strerror(errno));
                                return -1;
                        }
                        w += r;
                }
                got += (guint64) n;
        }
        return 0;
}

/* ---- engine side ---- */

static int cli_wait_engine_job(struct cli_engine *e, const char *job_id, GError **error)
{
        g_autofree char *path = g_strdup_printf("/api/jobs/%s", job_id);
        gint64 deadline = g_get_monotonic_time() + (gint64) CLI_JOB_WAIT_S * G_USEC_PER_SEC;

        while (g_get_monotonic_time() < deadline) {
                json_t *job = NULL;
                const char *status;
                bool done;

                if (cli_engine_get(e, path, &job, error) < 0)
                        return -1;
                status = json_string_value(json_object_get(job, "status"));
                done = status && (strcmp(status, "finished") == 0 || strcmp(status, "failed") == 0);
                if (done && strcmp(status, "failed") == 0) {
                        json_decref(job);
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "job %s failed (ferry job show %s)", job_id, job_id);
                        return -1;
                }
                json_decref(job);
                if (done)
                        return 0;
                g_usleep(CLI_POLL_US);
        }
        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "job %s did not end within %d s", job_id, CLI_JOB_WAIT_S);
        return -1;
}

/* Waits for the transfer to reach a final phase; fails unless it is finished_success. */
static int cli_wait_transfer(struct cli_engine *e, const char *id, GError **error)
{
        g_autofree char *path = g_strdup_printf("/api/imagetransfers/%s", id);
        gint64 deadline = g_get_monotonic_time() + (gint64) CLI_JOB_WAIT_S * G_USEC_PER_SEC;

        while (g_get_monotonic_time() < deadline) {
                g_autoptr(json_t) t = NULL;
                const char *phase;

                if (cli_engine_get(e, path, &t, error) < 0)
                        return -1;
                phase = json_string_value(json_object_get(t, "phase"));
                if (phase && strcmp(phase, "finished_success") == 0)
                        return 0;
                if (phase && (strcmp(phase, "finished_failure") == 0 || strcmp(phase, "cancelled") == 0)) {
                        g_autofree char *why = cli_json_text(t, "error");

                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "transfer %s %s: %s", id,
                                    strcmp(phase, "cancelled") == 0 ? "was cancelled" : "failed", why);
                        return -1;
                }
                g_usleep(CLI_POLL_US);
        }
        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "transfer %s did not end within %d s", id, CLI_JOB_WAIT_S);
        return -1;
}

static void cli_transfer_cancel(struct cli_engine *e, const char *id)
{
        g_autofree char *path = g_strdup_printf("/api/imagetransfers/%s/cancel", id);
        g_autoptr(GError) ignored = NULL;
        g_autoptr(json_t) body = json_object();

        cli_engine_request(e, "POST", path, body, NULL, &ignored);
}

/* POST /api/imagetransfers; returns the transfer (id, transfer_url). */
static int cli_transfer_start(struct cli_engine *e, const char *disk_id, const char *direction, gint64 size,
                              gint64 vsize, json_t **ret, GError **error)
{
        g_autoptr(json_t) body = json_pack("{s:{s:s}, s:s}", "disk", "id", disk_id, "direction", direction);
        json_t *t = NULL;

        if (size > 0)
                json_object_set_new(body, "size", json_integer(size));
        if (vsize > 0)
                json_object_set_new(body, "virtual_size", json_integer(vsize));
        if (cli_engine_request(e, "POST", "/api/imagetransfers", body, &t, error) < 0)
                return -1;
        if (!fy_uuid_is_valid(json_string_value(json_object_get(t, "id"))) ||
            !json_string_value(json_object_get(t, "transfer_url"))) {
                json_decref(t);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine's transfer has no id or transfer_url");
                return -1;
        }
        *ret = t;
        return 0;
}

/* A disk by id or unique name, with its volumes. */
static int cli_find_disk(struct cli_engine *e, const char *arg, json_t **ret, GError **error)
{
        g_autoptr(json_t) disk = NULL;
        g_autofree char *path = NULL;
        const char *id = arg;

        if (!fy_uuid_is_valid(arg)) {
                if (cli_engine_resolve(e, "/api/disks", "disks", true, "disk", arg, &disk, error) < 0)
                        return -1;
                id = json_string_value(json_object_get(disk, "id"));
                if (!id || !fy_uuid_is_valid(id)) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine sent a disk without an id");
                        return -1;
                }
        }
        path = g_strdup_printf("/api/disks/%s", id);
        return cli_engine_get(e, path, ret, error);
}

/* ---- local image ---- */

struct cli_image {
        char *format;                  /* raw | qcow2 */
        guint64 virtual_size;
        guint64 file_size;
};

static int cli_image_inspect(const char *file, const char *force_format, struct cli_image *ret, GError **error)
{
        const char *argv_probe[] = { "qemu-img", "info", "--output", "json", file, NULL };
        const char *argv_fmt[] = { "qemu-img", "info", "-f", force_format, "--output", "json", file, NULL };
        g_autoptr(GSubprocess) p = NULL;
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(json_t) info = NULL;
        json_t *data;
        const char *fmt;
        struct stat st;

        if (stat(file, &st) < 0 || !S_ISREG(st.st_mode)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s: %s", file, errno ? g_strerror(errno) : "not a regular file");
                return -1;
        }
        p = g_subprocess_newv(force_format ? argv_fmt : argv_probe,
                              G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, error);
        if (!p || !g_subprocess_communicate_utf8(p, NULL, NULL, &out, &err, error))
                return -1;
        if (!g_subprocess_get_successful(p) || !out || strlen(out) > CLI_QEMU_IMG_OUT_MAX ||
            !(info = json_loads(out, 0, NULL))) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "qemu-img cannot read %s: %s", file,
                            err ? g_strstrip(err) : "no output");
                return -1;
        }
        fmt = json_string_value(json_object_get(info, "format"));
        if (!fmt || (strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "%s is a %s image; convert it to raw or qcow2 first (qemu-img convert -O qcow2)", file,
                            fmt ? fmt : "unknown");
                return -1;
        }
        if (json_object_get(info, "backing-filename")) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "%s has a backing file (%s); upload a self-contained image (qemu-img convert -O qcow2 %s NEW)",
                            file, json_string_value(json_object_get(info, "backing-filename")), file);
                return -1;
        }
        data = json_object_get(json_object_get(info, "format-specific"), "data");
        if (json_object_get(data, "data-file")) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s has an external data file; that is not supported", file);
                return -1;
        }
        ret->format = g_strdup(fmt);
        ret->virtual_size = (guint64) json_integer_value(json_object_get(info, "virtual-size"));
        ret->file_size = (guint64) st.st_size;
        return 0;
}

static int cli_upload_zero(struct cli_xfer *x, guint64 off, guint64 len, GError **error)
{
        g_autofree char *zero = g_strdup_printf("{\"op\": \"zero\", \"offset\": %" G_GUINT64_FORMAT
                                                ", \"size\": %" G_GUINT64_FORMAT "}", off, len);
        size_t n = strlen(zero);       /* before the steal: C leaves the order of a call's arguments open */
        g_autoptr(GBytes) b = g_bytes_new_take(g_steal_pointer(&zero), n);

        return cli_xfer_request(x, "PATCH", NULL, NULL, "application/json", b, 4096, NULL, error);
}

/*
 * Sends every data range of fd's first size bytes as PUTs and every hole
 * as PATCH zero, zeroes [size, total) (a raw disk larger than the file must
 * not keep old bytes past it), then flushes.
 */
static int cli_upload_data(struct cli_xfer *x, int fd, guint64 size, guint64 total, GError **error)
{
        g_autoptr(GHashTable) hdr = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
        g_autofree guint8 *buf = g_malloc(CLI_CHUNK);
        guint64 pos = 0, done = 0;

        while (pos < size) {
                off_t data = lseek(fd, (off_t) pos, SEEK_DATA), hole;

                if (data < 0 && errno != ENXIO) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot read the local file: %s", g_strerror(errno));
                        return -1;
                }
                if (data < 0 || (guint64) data > size)
                        data = (off_t) size;
                if ((guint64) data > pos) {
                        if (cli_upload_zero(x, pos, (guint64) data - pos, error) < 0)
                                return -1;
                        done += (guint64) data - pos;
                        cli_xfer_progress(x, done, total, "uploading");
                }
                if ((guint64) data >= size)
                        break;
                hole = lseek(fd, data, SEEK_HOLE);
                if (hole < 0 || (guint64) hole > size)
                        hole = (off_t) size;
                for (guint64 off = (guint64) data; off < (guint64) hole;) {
                        size_t n = (size_t) MIN((guint64) CLI_CHUNK, (guint64) hole - off);
                        ssize_t r = pread(fd, buf, n, (off_t) off);
                        g_autoptr(GBytes) b = NULL;

                        if (r <= 0) {
                                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot read the local file: %s",
                                            r < 0 ? g_strerror(errno) : "it shrank while uploading");
                                return -1;
                        }
                        b = g_bytes_new(buf, (gsize) r);
                        g_hash_table_replace(hdr, "Content-Range",
                                             g_strdup_printf("bytes %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT "/*",
                                                             off, off + (guint64) r - 1));
                        if (cli_xfer_request(x, "PUT", "?flush=n", hdr, "application/octet-stream", b, 4096, NULL, error) < 0)
                                return -1;
                        off += (guint64) r;
                        done += (guint64) r;
                        cli_xfer_progress(x, done, total, "uploading");
                }
                pos = (guint64) hole;
        }
        if (total > size) {
                if (cli_upload_zero(x, size, total - size, error) < 0)
                        return -1;
        }
        {
                g_autoptr(GBytes) b = g_bytes_new_static("{\"op\": \"flush\"}", strlen("{\"op\": \"flush\"}"));

                if (cli_xfer_request(x, "PATCH", NULL, NULL, "application/json", b, 4096, NULL, error) < 0)
                        return -1;
        }
        cli_xfer_progress(x, total, total, "uploaded");
        if (x->tty)
                printf("\n");
        return 0;
}

int cli_disk_upload(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        g_autofree char *sd = NULL, *name = NULL, *format = NULL, *disk_arg = NULL;
        GOptionEntry entries[] = {
                { "sd", 0, 0, G_OPTION_ARG_STRING, &sd, "Storage domain of the new disk (id or name)", "SD" },
                { "name", 0, 0, G_OPTION_ARG_STRING, &name, "Name of the new disk (default: the file's name)", "N" },
                { "format", 0, 0, G_OPTION_ARG_STRING, &format, "raw or cow (default: what qemu-img detects)", "FMT" },
                { "disk", 0, 0, G_OPTION_ARG_STRING, &disk_arg, "Upload into this existing disk instead", "DISK" },
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_xfer) x = NULL;
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) transfer = NULL;
        struct cli_image img = { 0 };
        guint64 total;
        g_autofree char *disk_id = NULL;
        g_autofree char *dname = NULL;
        const char *tid;
        bool created = false;
        int fd = -1, r = -1;

        if (cli_parse_options(ctx, &argc, &argv, entries, "FILE", "Uploads a raw or qcow2 image into a new disk.", error) < 0 ||
            cli_expect_args(argc, 1, "FILE", error) < 0)
                goto out;
        if (!sd == !disk_arg) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "give --sd SD for a new disk, or --disk DISK for an existing one");
                goto out;
        }
        if (format && strcmp(format, "raw") != 0 && strcmp(format, "cow") != 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "--format must be raw or cow");
                goto out;
        }
        if (cli_image_inspect(argv[1], format ? (strcmp(format, "cow") == 0 ? "qcow2" : "raw") : NULL, &img, error) < 0)
                goto out;
        /* Guessed from the first bytes: a raw guest disk that starts with a qcow2 header would be misread. */
        if (!format && strcmp(img.format, "qcow2") == 0)
                fprintf(stderr, "warning: %s starts with a qcow2 header, so it is uploaded as a qcow2 image (%" G_GUINT64_FORMAT
                        " bytes of guest disk); if it is a raw disk image, pass --format raw\n", argv[1], img.virtual_size);
        if (cli_ctx_engine(ctx, &e, error) < 0)
                goto out;

        if (disk_arg) {
                if (cli_find_disk(e, disk_arg, &disk, error) < 0)
                        goto out;
                if (g_strcmp0(json_string_value(json_object_get(disk, "format")),
                              strcmp(img.format, "qcow2") == 0 ? "cow" : "raw") != 0) {
                        g_autofree char *df = cli_json_text(disk, "format");

                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s is %s but the disk's format is %s", argv[1],
                                    img.format, df);
                        goto out;
                }
        } else {
                g_autofree char *base = g_path_get_basename(argv[1]);
                json_t *answer = NULL;
                const char *job;
                g_autoptr(json_t) body = NULL;

                if (!name)
                        name = g_strdup(base);
                if (cli_check_name("disk", name, error) < 0)
                        goto out;
                body = json_pack("{s:s, s:I, s:s, s:b, s:{s:s}}", "name", name,
                                 "provisioned_size", (json_int_t) ((img.virtual_size + 511) / 512 * 512),
                                 "format", strcmp(img.format, "qcow2") == 0 ? "cow" : "raw", "sparse", TRUE,
                                 "storage_domain", fy_uuid_is_valid(sd) ? "id" : "name", sd);
                if (cli_engine_request(e, "POST", "/api/disks", body, &answer, error) < 0)
                        goto out;
                disk_id = g_strdup(json_string_value(json_object_get(json_object_get(answer, "disk"), "id")));
                job = json_string_value(json_object_get(json_object_get(answer, "job"), "id"));
                if (!disk_id || !fy_uuid_is_valid(disk_id) || !job || !fy_uuid_is_valid(job)) {
                        json_decref(answer);
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine's answer has no disk or job id");
                        goto out;
                }
                created = true;
                r = cli_wait_engine_job(e, job, error);
                json_decref(answer);
                if (r < 0)
                        goto out;
                r = -1;
                if (cli_find_disk(e, disk_id, &disk, error) < 0)
                        goto out;
        }
        g_free(disk_id);
        disk_id = g_strdup(json_string_value(json_object_get(disk, "id")));
        dname = cli_json_text(disk, "name");

        /* A raw disk larger than the file is zeroed past it, so the ticket covers the whole disk. */
        total = img.file_size;
        if (strcmp(img.format, "raw") == 0 &&
            json_integer_value(json_object_get(disk, "provisioned_size")) > (json_int_t) img.file_size)
                total = (guint64) json_integer_value(json_object_get(disk, "provisioned_size"));
        if (cli_transfer_start(e, disk_id, "upload", (gint64) total, (gint64) img.virtual_size, &transfer,
                               error) < 0) {
                if (created) {
                        /* Nothing was written yet: do not leave an empty disk behind. */
                        g_autofree char *path = g_strdup_printf("/api/disks/%s", disk_id);
                        g_autoptr(GError) ignored = NULL;

                        cli_engine_request(e, "DELETE", path, NULL, NULL, &ignored);
                }
                goto out;
        }
        tid = json_string_value(json_object_get(transfer, "id"));
        if (!ctx->json)
                printf("uploading %s (%s, %" G_GUINT64_FORMAT " bytes) into disk %s through %s\n", argv[1], img.format,
                       img.file_size, dname, json_string_value(json_object_get(json_object_get(transfer, "host"), "name")));
        x = cli_xfer_new(json_string_value(json_object_get(transfer, "transfer_url")), ctx->ca_file, ctx->json, error);
        fd = x ? open(argv[1], O_RDONLY | O_CLOEXEC) : -1;
        if (x && fd < 0)
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot open %s: %s", argv[1], g_strerror(errno));
        if (fd < 0 || cli_upload_data(x, fd, img.file_size, total, error) < 0) {
                if (x && x->tty)
                        printf("\n");
                cli_transfer_cancel(e, tid);
                g_prefix_error(error, "upload failed, disk %s is left illegal (remove it, or upload again with --disk): ",
                               dname);
                goto out;
        }
        {
                g_autofree char *path = g_strdup_printf("/api/imagetransfers/%s/finalize", tid);
                g_autoptr(json_t) empty = json_object();

                if (cli_engine_request(e, "POST", path, empty, NULL, error) < 0 || cli_wait_transfer(e, tid, error) < 0)
                        goto out;
        }
        if (ctx->json) {
                g_autofree char *path = g_strdup_printf("/api/disks/%s", disk_id);
                json_t *d = NULL;

                if (cli_engine_get(e, path, &d, error) < 0)
                        goto out;
                cli_print_json(d);
                json_decref(d);
        } else {
                printf("disk %s (%s) uploaded in %.1f s and verified; it is ok\n", dname, disk_id,
                       (double) (g_get_monotonic_time() - x->start) / G_USEC_PER_SEC);
        }
        r = 0;
out:
        if (fd >= 0)
                close(fd);
        g_free(img.format);
        return r;
}

int cli_disk_download(struct cli_ctx *ctx, int argc, char **argv, GError **error)
{
        GOptionEntry entries[] = {
                G_OPTION_ENTRY_NULL
        };
        g_autoptr(cli_engine) e = NULL;
        g_autoptr(cli_xfer) x = NULL;
        g_autoptr(json_t) disk = NULL;
        g_autoptr(json_t) transfer = NULL;
        g_autoptr(json_t) extents = NULL;
        g_autoptr(GBytes) answer = NULL;
        const char *tid, *disk_id;
        guint64 size = 0, data = 0, done = 0;
        json_error_t jerr;
        json_t *ext;
        size_t i;
        int fd = -1, r = -1;

        if (cli_parse_options(ctx, &argc, &argv, entries, "DISK FILE", "Downloads a disk's volume into a sparse file.",
                              error) < 0 ||
            cli_expect_args(argc, 2, "DISK and FILE", error) < 0 ||
            cli_ctx_engine(ctx, &e, error) < 0 ||
            cli_find_disk(e, argv[1], &disk, error) < 0)
                return -1;
        disk_id = json_string_value(json_object_get(disk, "id"));
        fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot create %s: %s", argv[2], g_strerror(errno));
                return -1;
        }
        if (cli_transfer_start(e, disk_id, "download", 0, 0, &transfer, error) < 0)
                goto fail_file;
        tid = json_string_value(json_object_get(transfer, "id"));
        x = cli_xfer_new(json_string_value(json_object_get(transfer, "transfer_url")), ctx->ca_file, ctx->json, error);
        if (!x || cli_xfer_request(x, "GET", "/extents", NULL, NULL, NULL, 64u << 20, &answer, error) < 0)
                goto fail_transfer;
        extents = json_loadb(g_bytes_get_data(answer, NULL), g_bytes_get_size(answer), 0, &jerr);
        if (!json_is_array(extents)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the host's extents are not a JSON list");
                goto fail_transfer;
        }
        json_array_foreach(extents, i, ext) {
                json_int_t start = json_integer_value(json_object_get(ext, "start"));
                json_int_t len = json_integer_value(json_object_get(ext, "length"));

                if (start < 0 || len <= 0 || (guint64) start != size) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the host's extents are not contiguous");
                        goto fail_transfer;
                }
                size += (guint64) len;
                if (!json_is_true(json_object_get(ext, "zero")))
                        data += (guint64) len;
        }
        if (ftruncate(fd, (off_t) size) < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot size %s: %s", argv[2], g_strerror(errno));
                goto fail_transfer;
        }
        if (!ctx->json)
                printf("downloading disk %s (%" G_GUINT64_FORMAT " bytes, %" G_GUINT64_FORMAT " of data) through %s\n",
                       json_string_value(json_object_get(disk, "name")), size, data,
                       json_string_value(json_object_get(json_object_get(transfer, "host"), "name")));
        json_array_foreach(extents, i, ext) {
                guint64 start = (guint64) json_integer_value(json_object_get(ext, "start"));
                guint64 len = (guint64) json_integer_value(json_object_get(ext, "length"));

                if (json_is_true(json_object_get(ext, "zero")))
                        continue;      /* a hole of the sparse local file */
                for (guint64 off = start; off < start + len; off += CLI_CHUNK) {
                        guint64 n = MIN((guint64) CLI_CHUNK, start + len - off);

                        if (cli_xfer_get_range(x, fd, off, n, error) < 0)
                                goto fail_transfer;
                        done += n;
                        cli_xfer_progress(x, done, data, "downloading");
                }
        }
        if (fsync(fd) < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot sync %s: %s", argv[2], g_strerror(errno));
                goto fail_transfer;
        }
        if (x->tty)
                printf("\n");
        {
                g_autofree char *path = g_strdup_printf("/api/imagetransfers/%s/finalize", tid);
                g_autoptr(json_t) empty = json_object();

                if (cli_engine_request(e, "POST", path, empty, NULL, error) < 0 || cli_wait_transfer(e, tid, error) < 0)
                        goto fail_file;
        }
        if (!ctx->json)
                printf("downloaded disk %s into %s in %.1f s\n", json_string_value(json_object_get(disk, "name")),
                       argv[2], (double) (g_get_monotonic_time() - x->start) / G_USEC_PER_SEC);
        close(fd);
        return 0;

fail_transfer:
        if (x && x->tty)
                printf("\n");
        cli_transfer_cancel(e, tid);
fail_file:
        close(fd);
        unlink(argv[2]);
        return r;
}
