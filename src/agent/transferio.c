/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * File I/O of image transfers (pread/pwrite/fallocate/fsync/lseek), run in
 * the endpoint's own bounded thread pool, not GLib's shared GTask pool
 * (which the blocking RPC verbs use: slow storage must not starve
 * Host.getStats), one bounded piece at a time (a PUT body of at most
 * transfer_max_request bytes, a GET chunk of 1 MiB). A write runs only
 * while its ticket holds its lease (xfer_ticket_write_begin).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "transfer-internal.h"

#define EXTENTS_MAX 100000              /* beyond this the rest is reported as one data extent */

static void io_req_free(struct io_req *io)
{
        if (io->msg)
                g_object_unref(io->msg);
        if (io->data)
                g_bytes_unref(io->data);
        json_decref(io->result);
        xfer_ticket_unref(io->t);
        g_free(io);
}

static int zero_fill(int fd, guint64 off, guint64 len)
{
        g_autofree guint8 *zeros = g_malloc0(XFER_READ_CHUNK);

        while (len > 0) {
                size_t n = (size_t) MIN(len, (guint64) XFER_READ_CHUNK);
                int r = fy_pwrite_full(fd, zeros, n, off);

                if (r < 0)
                        return r;
                off += n;
                len -= n;
        }
        return 0;
}

/* Zeroes [off, off+len): punches holes when allowed, else zeroes in place; grows the file (as a hole) if needed. */
static int zero_range(int fd, guint64 off, guint64 len, bool punch)
{
        struct stat st;
        guint64 end = off + len;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (end > (guint64) st.st_size) {
                if (ftruncate(fd, (off_t) end) < 0)
                        return -errno;
                if (off >= (guint64) st.st_size) {
                        /* Past the old end it already reads as zeros; allocate only when asked not to be sparse. */
                        if (!punch && fallocate(fd, 0, (off_t) off, (off_t) len) < 0 && errno != EOPNOTSUPP)
                                return -errno;
                        return 0;
                }
                len = (guint64) st.st_size - off;
        }
        if (len == 0)
                return 0;
        if (punch) {
                if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) len) == 0)
                        return 0;
                if (errno != EOPNOTSUPP)
                        return -errno;
        }
        if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) len) == 0)
                return 0;
        if (errno != EOPNOTSUPP)
                return -errno;
        return zero_fill(fd, off, len);
}

static void extent_add(json_t *list, guint64 start, guint64 length, bool zero)
{
        json_t *last = json_array_size(list) ? json_array_get(list, json_array_size(list) - 1) : NULL;

        if (length == 0)
                return;
        if (last && json_is_true(json_object_get(last, "zero")) == zero) {
                json_object_set_new(last, "length",
                                    json_integer(json_integer_value(json_object_get(last, "length")) + (json_int_t) length));
                return;
        }
        json_array_append_new(list, json_pack("{s:I, s:I, s:b, s:b}", "start", (json_int_t) start,
                                              "length", (json_int_t) length, "zero", zero, "hole", zero));
}

/* Data and holes of the file over [0, size), from SEEK_DATA/SEEK_HOLE; past the file's end is a hole. */
static int extents_of(int fd, guint64 size, json_t **ret)
{
        g_autoptr(json_t) list = json_array();
        struct stat st;
        guint64 end, pos = 0;

        if (fstat(fd, &st) < 0)
                return -errno;
        end = MIN(size, (guint64) st.st_size);
        while (pos < end) {
                off_t data, hole;

                if (json_array_size(list) >= EXTENTS_MAX - 1) {
                        extent_add(list, pos, end - pos, false);      /* reading it is always correct */
                        pos = end;
                        break;
                }
                data = lseek(fd, (off_t) pos, SEEK_DATA);
                if (data < 0 && errno != ENXIO)
                        return -errno;
                if (data < 0 || (guint64) data > end)
                        data = (off_t) end;
                extent_add(list, pos, (guint64) data - pos, true);
                if ((guint64) data >= end) {
                        pos = end;
                        break;
                }
                hole = lseek(fd, data, SEEK_HOLE);
                if (hole < 0)
                        return -errno;
                if ((guint64) hole > end)
                        hole = (off_t) end;
                extent_add(list, (guint64) data, (guint64) (hole - data), false);
                pos = (guint64) hole;
        }
        extent_add(list, pos, size - pos, true);
        *ret = g_steal_pointer(&list);
        return 0;
}

int xfer_read_range(int fd, guint64 off, size_t len, GBytes **ret)
{
        guint8 *buf = g_malloc(len);
        size_t done = 0;

        while (done < len) {
                ssize_t n = pread(fd, buf + done, len - done, (off_t) (off + done));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;
                        g_free(buf);
                        return r;
                }
                if (n == 0) {
                        memset(buf + done, 0, len - done);
                        break;
                }
                done += (size_t) n;
        }
        *ret = g_bytes_new_take(buf, len);
        return 0;
}

/* Pool thread: the I/O itself. Writes run only while the ticket holds its lease (xfer_ticket_write_begin). */
static void io_run(struct io_req *io)
{
        struct ticket *t = io->t;
        bool write = io->kind == IO_WRITE || io->kind == IO_ZERO || io->kind == IO_FLUSH || io->flush;
        gsize len;
        const void *buf;
        int r = 0;

        if (write && !xfer_ticket_write_begin(t)) {
                io->err = -ESTALE;
                return;
        }
        switch (io->kind) {
        case IO_WRITE:
                buf = g_bytes_get_data(io->data, &len);
                r = fy_pwrite_full(t->fd, buf, len, io->offset);
                if (r == 0)
                        __atomic_fetch_add(&t->transferred, (gint64) len, __ATOMIC_RELAXED);
                break;
        case IO_ZERO:
                r = zero_range(t->fd, io->offset, io->length, t->punch);
                break;
        case IO_FLUSH:
                break;
        case IO_EXTENTS:
                r = extents_of(t->fd, t->size, &io->result);
                break;
        case IO_READ:
                r = xfer_read_range(t->fd, io->offset, (size_t) io->length, &io->data);
                if (r == 0)
                        __atomic_fetch_add(&t->transferred, (gint64) io->length, __ATOMIC_RELAXED);
                break;
        }
        if (r == 0 && (io->flush || io->kind == IO_FLUSH) && fsync(t->fd) < 0)
                r = -errno;
        if (write)
                xfer_ticket_write_end(t);
        io->err = r;
}

static gboolean io_complete(gpointer data)
{
        struct io_req *io = data;

        io->done(io);
        io_req_free(io);
        return G_SOURCE_REMOVE;
}

void xfer_io_pool_func(gpointer data, gpointer user)
{
        struct io_req *io = data;
        struct agent_transfers *tr = user;

        io_run(io);
        g_atomic_int_add(&tr->io_running, -1);
        g_main_context_invoke(tr->agent->main_context, io_complete, io);
}

void xfer_io_queue(struct agent_transfers *tr, struct io_req *io)
{
        g_atomic_int_inc(&tr->io_running);
        g_thread_pool_push(tr->pool, io, NULL);
}

struct io_req *xfer_io_new(struct ticket *t, SoupServerMessage *msg, enum io_kind kind)
{
        struct io_req *io = g_new0(struct io_req, 1);

        io->t = xfer_ticket_ref(t);
        io->msg = msg ? g_object_ref(msg) : NULL;
        io->kind = kind;
        return io;
}

