/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Sparse-aware raw→raw copier.
 *
 * The calling thread walks the source's extents (SEEK_DATA/SEEK_HOLE), clears
 * destination ranges that are holes in the source, and hands data chunks of
 * one aligned buffer each to an I/O pipeline that does read → zero scan →
 * write/punch for each: io_uring (copyring.c) where the kernel allows it,
 * else a small pool of threads, one buffer each. Either way reads and writes
 * of different chunks overlap and the device sees a queue depth > 1 (which
 * is what makes O_DIRECT fast). Chunks complete out of order; that is fine
 * because they never overlap.
 *
 * Progress, cancellation and bandwidth throttling all happen in the calling
 * thread, between dispatches, so the callback runs in the caller's thread
 * and cancel takes effect within one buffer per worker. Throttling asks the
 * host's rate governor (rategov.h) before each data chunk is handed out, so
 * the workers of one copy share its one budget; holes cost nothing.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include <glib.h>

#include "copy.h"
#include "copyint.h"
#include "fileio.h"

#define COPY_DEFAULT_BUFFER     (8u * 1024 * 1024)
#define COPY_MAX_BUFFER         (256u * 1024 * 1024)
#define COPY_WORKERS            4
#define COPY_WORKERS_MAX        16
/* Zero detection granularity: a block that is all zeros becomes a hole. */
#define COPY_ZERO_BLOCK         4096u
/* Under a cap, chunks of about 1/16 s of it (at least 1 MiB): the rate stays
 * smooth and a share change shows within a fraction of a second. */
#define COPY_CAPPED_CHUNKS      16
#define COPY_MIN_CAPPED_BUFFER  (1024u * 1024)
/* How often a resumable copy makes its progress durable (one fdatasync each). */
#define COPY_CHECKPOINT_US      (1000 * 1000)

bool agent_buf_is_zero(const void *p, size_t len)
{
        const unsigned char *b = p;

        /* Random data fails the first compare; zeros go through SIMD memcmp. */
        if (len == 0)
                return true;
        if (b[0] != 0 || b[len - 1] != 0)
                return false;
        return memcmp(b, b + 1, len - 1) == 0;
}

int agent_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
        size_t done = 0;

        while (done < len) {
                ssize_t n = pread(fd, (char *) buf + done, len - done, (off_t) (off + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;    /* source shrank under us */
                done += (size_t) n;
        }
        return 0;
}


int copy_finish_buffered(struct copy_ctx *ctx, bool write, char *buf, size_t len, uint64_t off)
{
        return write ? fy_pwrite_full(ctx->dst_buf_fd, buf, len, off) : agent_pread_full(ctx->src_buf_fd, buf, len, off);
}

/*
 * All of an aligned range on a direct fd. A transfer that stops short at
 * an unaligned point (a device or filesystem may stop at any byte, e.g. a
 * write hitting ENOSPC) is finished through the page cache: asked again
 * on the direct fd, the remainder would be refused with EINVAL, which
 * copy_read/copy_write take for "this filesystem refuses O_DIRECT",
 * switching the whole copy to buffered I/O. An aligned short remainder
 * stays direct.
 */
static int direct_full(struct copy_ctx *ctx, bool write, char *buf, size_t len, uint64_t off)
{
        int fd = write ? ctx->dst_fd : ctx->src_fd;
        size_t done = 0;

        while (done < len) {
                ssize_t n = write ? pwrite(fd, buf + done, len - done, (off_t) (off + done))
                                  : pread(fd, buf + done, len - done, (off_t) (off + done));

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;    /* the source shrank under us, or the device wrote nothing */
                done += (size_t) n;
                if (done < len && done % COPY_ALIGN != 0)
                        return copy_finish_buffered(ctx, write, buf + done, len - done, off + done);
        }
        return 0;
}

/* The filesystem may accept O_DIRECT at open time but refuse it for I/O. */
int copy_read(struct copy_ctx *ctx, void *buf, size_t len, uint64_t off)
{
        int r;

        if (!g_atomic_int_get(&ctx->src_direct_broken)) {
                r = direct_full(ctx, false, buf, len, off);
                if (r != -EINVAL)
                        return r;
                g_atomic_int_set(&ctx->src_direct_broken, 1);
        }
        return copy_finish_buffered(ctx, false, buf, len, off);
}

int copy_write(struct copy_ctx *ctx, const char *buf, size_t len, uint64_t off, void *data)
{
        (void) data;
        int r;

        if (!g_atomic_int_get(&ctx->dst_direct_broken)) {
                r = direct_full(ctx, true, (char *) buf, len, off);
                if (r != -EINVAL)
                        return r;
                g_atomic_int_set(&ctx->dst_direct_broken, 1);
        }
        return copy_finish_buffered(ctx, true, (char *) buf, len, off);
}

/*
 * True if dst holds no data in [off, off+len): nothing to punch. The
 * answer comes from the destination as it was before the copy: ranges are
 * cleared in increasing order, each before anything is written at or past
 * it, except by the chunk that owns it, so our own writes never fall in a
 * range asked about.
 */
static bool dst_is_hole(struct copy_ctx *ctx, uint64_t off, uint64_t len)
{
        g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&ctx->dst_map_lock);
        off_t d;

        if (off >= ctx->dst_scan_from && off + len <= ctx->dst_next_data)
                return true;
        d = lseek(ctx->dst_buf_fd, (off_t) off, SEEK_DATA);
        if (d < 0 && errno != ENXIO)
                return false;           /* cannot tell: clear it */
        ctx->dst_scan_from = off;
        ctx->dst_next_data = d < 0 ? UINT64_MAX : (uint64_t) d;  /* ENXIO: no data after off at all */
        return ctx->dst_next_data >= off + len;
}

static int write_zeros(struct copy_ctx *ctx, uint64_t off, uint64_t len)
{
        static const char zeros[64 * 1024];

        while (len > 0) {
                size_t n = MIN(len, sizeof(zeros));
                int r;

                if (g_cancellable_is_cancelled(ctx->cancel))
                        return -ECANCELED;
                r = fy_pwrite_full(ctx->dst_buf_fd, zeros, n, off);
                if (r < 0)
                        return r;
                off += n;
                len -= n;
        }
        return 0;
}

/* Makes [off, off+len) read as zeros and stay allocated (a preallocated volume keeps its blocks). */
static int dst_zero_allocated(struct copy_ctx *ctx, uint64_t off, uint64_t len)
{
        if (!g_atomic_int_get(&ctx->zero_range_unsupported)) {
                if (fallocate(ctx->dst_buf_fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                              (off_t) off, (off_t) len) == 0)
                        return 0;
                if (errno != EOPNOTSUPP && errno != ENOSYS)
                        return -errno;
                g_atomic_int_set(&ctx->zero_range_unsupported, 1);
        }
        if (dst_is_hole(ctx, off, len)) {
                /* Reads as zeros already; allocate it again. */
                int r = posix_fallocate(ctx->dst_buf_fd, (off_t) off, (off_t) len);
                if (r != EOPNOTSUPP && r != EINVAL)
                        return -r;
        }
        return write_zeros(ctx, off, len);
}

/* Makes [off, off+len) of the destination read as zeros, as a hole if possible. */
static int dst_clear(struct copy_ctx *ctx, uint64_t off, uint64_t len)
{
        if (len == 0)
                return 0;
        if (ctx->keep_allocation)
                return dst_zero_allocated(ctx, off, len);
        if (dst_is_hole(ctx, off, len))
                return 0;
        if (!g_atomic_int_get(&ctx->punch_unsupported)) {
                if (fallocate(ctx->dst_buf_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              (off_t) off, (off_t) len) == 0)
                        return 0;
                if (errno != EOPNOTSUPP && errno != ENOSYS)
                        return -errno;
                g_atomic_int_set(&ctx->punch_unsupported, 1);
        }
        return write_zeros(ctx, off, len);
}

/* len is a multiple of COPY_ALIGN except for the file tail. */
int copy_store(struct copy_ctx *ctx, const char *buf, uint64_t off, size_t len, copy_write_fn write, void *data)
{
        size_t pos = 0;

        while (pos < len) {
                size_t blk = MIN(COPY_ZERO_BLOCK, len - pos);
                bool zero = agent_buf_is_zero(buf + pos, blk);
                size_t run = blk;
                int r;

                while (pos + run < len) {
                        size_t b = MIN(COPY_ZERO_BLOCK, len - pos - run);
                        if (agent_buf_is_zero(buf + pos + run, b) != zero)
                                break;
                        run += b;
                }

                if (zero)
                        r = dst_clear(ctx, off + pos, run);
                else if ((run % COPY_ALIGN) == 0)
                        r = write(ctx, buf + pos, run, off + pos, data);
                else {
                        /* Run ends at the unaligned EOF: direct I/O for the
                         * aligned part, the page cache for the rest. */
                        size_t a = ALIGN_DOWN(run, COPY_ALIGN);
                        r = a > 0 ? write(ctx, buf + pos, a, off + pos, data) : 0;
                        if (r >= 0)
                                r = fy_pwrite_full(ctx->dst_buf_fd, buf + pos + a, run - a,
                                                off + pos + a);
                }
                if (r < 0)
                        return r;
                pos += run;
        }
        return 0;
}

/*
 * Storage offload: when source and destination share a filesystem with
 * shared extents (XFS reflink=1, btrfs), the chunk becomes a reference to
 * the source's blocks, moving no data. len is block-aligned (the kernel
 * clones a partial block only at both files' EOF; copy_chunk copies it).
 * Returns 1 when cloned, 0 when the filesystem cannot (then never asked
 * again: the caller copies), -errno on a real failure.
 */
int copy_clone(struct copy_ctx *ctx, uint64_t off, size_t len)
{
        struct file_clone_range fcr = { .src_fd = ctx->src_buf_fd, .src_offset = off,
                                        .src_length = len, .dest_offset = off };

        /* A length of 0 would mean "to the source's end". */
        if (!g_atomic_int_get(&ctx->reflink) || len == 0 || len % COPY_ALIGN != 0)
                return 0;
        if (ioctl(ctx->dst_buf_fd, FICLONERANGE, &fcr) == 0)
                return 1;
        switch (errno) {
        case EOPNOTSUPP: case ENOTTY: case EXDEV: case EINVAL: case EBADF: case EPERM: case ETXTBSY:
                g_atomic_int_set(&ctx->reflink, 0);
                return 0;
        default:
                return -errno;
        }
}

int copy_chunk(struct copy_ctx *ctx, void *buf, uint64_t off, size_t len, copy_write_fn write, void *data)
{
        size_t a = ALIGN_DOWN(len, COPY_ALIGN), from = 0;
        int r;

        r = copy_clone(ctx, off, a);
        if (r < 0)
                return r;
        if (r > 0)
                from = a;               /* cloned: only the unaligned tail (if any) is left to copy */
        else if (a > 0)
                r = copy_read(ctx, buf, a, off);
        if (r >= 0 && a < len)
                r = agent_pread_full(ctx->src_buf_fd, (char *) buf + a, len - a, off + a);
        if (r < 0)
                return r;
        /* Cancelled while it read: a cancel waits for at most this one transfer. */
        if (g_cancellable_is_cancelled(ctx->cancel))
                return -ECANCELED;
        return copy_store(ctx, (const char *) buf + from, off + from, len - from, write, data);
}

/*
 * A copy's I/O pipeline: io_uring when the kernel lets us (copyring.c),
 * else a pool of threads doing synchronous I/O, one buffer each. Both take
 * jobs and give them back done, in any order. A ring that fails mid-copy
 * (io_uring_enter refused, a lost completion) is settled and, unless
 * io_uring was forced, its unfinished jobs go to the threads.
 */
struct copy_pipe {
        struct copy_ctx *ctx;
        struct copy_ring *ring;
        GAsyncQueue *todo, *done;       /* threads */
        GThread *threads[COPY_WORKERS_MAX];
        unsigned n_threads;
        struct copy_job *jobs;
        unsigned n_jobs;
        enum agent_copy_io io;
};

/* How often a failed ring still waiting for its requests (a slow or hung device) is logged. */
#define COPY_RING_SETTLE_US     (60 * G_USEC_PER_SEC)

static gpointer copy_worker(gpointer data)
{
        struct copy_pipe *p = data;

        for (;;) {
                struct copy_job *job = g_async_queue_pop(p->todo);

                if (job->quit)
                        return NULL;
                /* Cancelled while it waited (a chunk of a failed ring, queued for doing again): not started. */
                job->result = g_cancellable_is_cancelled(job->ctx->cancel)
                                      ? -ECANCELED
                                      : copy_chunk(job->ctx, job->buf, job->offset, job->length, copy_write, NULL);
                g_async_queue_push(p->done, job);
        }
}

static int threads_start(struct copy_pipe *p)
{
        p->todo = g_async_queue_new();
        p->done = g_async_queue_new();
        for (unsigned i = 0; i < p->n_jobs; i++) {
                p->threads[i] = g_thread_try_new("ferry-copy", copy_worker, p, NULL);
                if (!p->threads[i])
                        return -EAGAIN;
                p->n_threads++;
        }
        return 0;
}

static int pipe_start(struct copy_pipe *p, struct copy_ctx *ctx, struct copy_job *jobs, unsigned n_jobs,
                      enum agent_copy_io io)
{
        p->ctx = ctx;
        p->jobs = jobs;
        p->n_jobs = n_jobs;
        p->io = io;
        if (io != AGENT_COPY_IO_THREADS) {
                int r = copy_ring_new(ctx, jobs, n_jobs, &p->ring);

                /* No io_uring here (old kernel, a seccomp filter, io_uring_disabled): threads do the same. */
                if (r == 0 || io == AGENT_COPY_IO_URING)
                        return r;
        }
        return threads_start(p);
}

static void pipe_submit(struct copy_pipe *p, struct copy_job *job)
{
        if (p->ring)
                copy_ring_submit(p->ring, job);
        else
                g_async_queue_push(p->todo, job);
}

/*
 * The ring failed (ring_err): once none of its requests is in flight, the
 * jobs it finished are handed back as they are and the ones it lost are
 * done again, whole, by threads. A lost job's range may be partly written
 * already; writing it again writes the same source bytes, and nothing of
 * the ring can land after them. The job stays busy throughout, so the
 * checkpoint never passes it, and it is reaped (counted in progress) once.
 * Its bandwidth was charged when it was first handed out. A copy cancelled
 * by then does nothing again: once the ring is settled it ends, cancelled.
 */
static int pipe_fall_back(struct copy_pipe *p, int ring_err)
{
        struct copy_job *job;
        int r;

        /*
         * Never given up on: a copy that returned with writes still held
         * by the kernel would have its volume lease released by the
         * caller, and a write landing later would overwrite what the next
         * holder wrote. A thread blocked in pwrite() on hung storage holds
         * the job (and the lease) the same way; stall detection reports it.
         */
        for (gint64 waited = 0; copy_ring_settle(p->ring, COPY_RING_SETTLE_US) < 0;) {
                waited += COPY_RING_SETTLE_US / G_USEC_PER_SEC;
                g_warning("a copy's failed io_uring still has requests in the kernel after %" G_GINT64_FORMAT
                          " s; the copy and its volume lease wait for them (is the storage hung?)", waited);
        }
        /* No buffer is the kernel's any more: the copy may end. The jobs stay unreaped (the caller's `lost`). */
        if (g_cancellable_is_cancelled(p->ctx->cancel))
                return -ECANCELED;
        if (p->io == AGENT_COPY_IO_URING)
                return ring_err;
        r = threads_start(p);
        if (r < 0)
                return ring_err;
        while (copy_ring_reap(p->ring, false, &job) == 0 && job)
                g_async_queue_push(p->done, job);
        for (unsigned i = 0; i < p->n_jobs; i++) {
                job = &p->jobs[i];
                if (!job->busy || !job->lost)
                        continue;
                job->lost = false;
                job->result = 0;
                g_async_queue_push(p->todo, job);
        }
        copy_ring_free(p->ring);
        p->ring = NULL;
        return 0;
}

/* A finished job (NULL if none and !wait); -errno if the ring failed and its jobs cannot be finished. */
static int pipe_reap(struct copy_pipe *p, bool wait, struct copy_job **ret_job)
{
        if (p->ring) {
                int r = copy_ring_reap(p->ring, wait, ret_job);

                if (r == 0)
                        return 0;
                r = pipe_fall_back(p, r);
                if (r < 0)
                        return r;
        }
        *ret_job = wait ? g_async_queue_pop(p->done) : g_async_queue_try_pop(p->done);
        return 0;
}

static void pipe_stop(struct copy_pipe *p)
{
        struct copy_job quit = { .quit = true };

        for (unsigned i = 0; i < p->n_threads; i++)
                g_async_queue_push(p->todo, &quit);
        for (unsigned i = 0; i < p->n_threads; i++)
                g_thread_join(p->threads[i]);
        if (p->todo)
                g_async_queue_unref(p->todo);
        if (p->done)
                g_async_queue_unref(p->done);
        copy_ring_free(p->ring);
}

static int open_pair(const char *path, int flags, bool try_direct, int *ret_direct, int *ret_buffered)
{
        int fd_buf, fd_dir = -1;

        fd_buf = open(path, flags | O_CLOEXEC);
        if (fd_buf < 0)
                return -errno;
        if (try_direct) {
                fd_dir = open(path, flags | O_CLOEXEC | O_DIRECT);
                if (fd_dir < 0 && errno != EINVAL) {
                        int r = -errno;
                        close(fd_buf);
                        return r;
                }
        }
        *ret_buffered = fd_buf;
        *ret_direct = fd_dir >= 0 ? fd_dir : fd_buf;
        return 0;
}

static void close_pair(int fd_direct, int fd_buffered)
{
        if (fd_direct >= 0 && fd_direct != fd_buffered)
                close(fd_direct);
        if (fd_buffered >= 0)
                close(fd_buffered);
}

static int file_size(int fd, uint64_t *ret)
{
        /* lseek rather than fstat so block devices work too. */
        off_t end = lseek(fd, 0, SEEK_END);

        if (end < 0)
                return -errno;
        *ret = (uint64_t) end;
        return 0;
}

int agent_file_next_extent(int fd, uint64_t off, uint64_t size, uint64_t *ret_end, bool *ret_data)
{
        off_t d, h;

        d = lseek(fd, (off_t) off, SEEK_DATA);
        if (d < 0) {
                if (errno == ENXIO) {           /* only a hole up to EOF */
                        *ret_end = size;
                        *ret_data = false;
                        return 0;
                }
                if (errno == EINVAL || errno == EOPNOTSUPP) {   /* no sparse support */
                        *ret_end = size;
                        *ret_data = true;
                        return 0;
                }
                return -errno;
        }
        if ((uint64_t) d > off) {
                /* Holes are reported in filesystem blocks; keep data reads aligned. */
                uint64_t end = ALIGN_DOWN((uint64_t) d, COPY_ALIGN);
                if (end > off) {
                        *ret_end = MIN(end, size);
                        *ret_data = false;
                        return 0;
                }
        }
        h = lseek(fd, MAX(d, (off_t) off), SEEK_HOLE);
        if (h < 0)
                return -errno;
        *ret_end = MIN(ALIGN_UP((uint64_t) h, COPY_ALIGN), size);
        if (*ret_end <= off)
                *ret_end = size;        /* defensive: never loop without progress */
        *ret_data = true;
        return 0;
}

/* Everything below this offset is written: the lowest chunk still in flight, or the next to dispatch. */
static uint64_t copied_prefix(const struct copy_job *jobs, unsigned n_jobs, uint64_t next)
{
        uint64_t w = next;

        for (unsigned i = 0; i < n_jobs; i++)
                if (jobs[i].busy && jobs[i].offset < w)
                        w = jobs[i].offset;
        return w;
}

struct checkpointer {
        const struct agent_copy_options *opts;
        unsigned n_jobs;
        gint64 interval_us;
        gint64 last_us;
        uint64_t last_prefix;
};

/*
 * At most once per interval: makes the written prefix durable (fdatasync)
 * and only then reports it, so a checkpoint never names bytes a crash
 * could lose. A failing fdatasync fails the copy; the callback's own
 * failure (the sidecar) only costs a later resume its head start.
 */
static int maybe_checkpoint(struct copy_ctx *ctx, struct checkpointer *cp, const struct copy_job *jobs, uint64_t next)
{
        gint64 now;
        uint64_t prefix;

        if (!cp->opts->checkpoint)
                return 0;
        now = g_get_monotonic_time();
        if (now - cp->last_us < cp->interval_us)
                return 0;
        cp->last_us = now;
        prefix = copied_prefix(jobs, cp->n_jobs, next);
        if (prefix <= cp->last_prefix)
                return 0;
        if (fdatasync(ctx->dst_buf_fd) < 0)
                return -errno;
        cp->opts->checkpoint(prefix, cp->opts->checkpoint_data);
        cp->last_prefix = prefix;
        return 0;
}

int agent_copy_raw(const char *src_path, const char *dst_path,
                   const struct agent_copy_options *opts, GCancellable *cancel,
                   agent_copy_progress_fn progress, void *userdata)
{
        struct agent_copy_options defaults = { 0 };
        struct copy_ctx ctx = { .src_fd = -1, .dst_fd = -1, .src_buf_fd = -1, .dst_buf_fd = -1,
                                .cancel = cancel };
        struct copy_job jobs[COPY_WORKERS_MAX] = { 0 };
        struct copy_pipe pipe = { 0 };
        struct copy_job *free_jobs[COPY_WORKERS_MAX];
        unsigned n_workers = opts && opts->workers ? opts->workers : COPY_WORKERS;
        unsigned n_free = 0;
        bool lost = false;      /* the ring failed: its jobs never come back, do not wait for them */
        uint64_t dst_size = 0, off = 0, done = 0, cap;
        struct agent_rate_gov *own_gov = NULL;  /* bandwidth_limit without a host governor */
        struct agent_rate_flow *flow;
        struct checkpointer cp = { 0 };
        int r, err = 0;

        if (!src_path || !dst_path)
                return -EINVAL;
        if (!opts)
                opts = &defaults;

        ctx.keep_allocation = opts->keep_allocation;
        /* A PREALLOCATED destination must own its blocks: shared extents would be allocated again on write. */
        ctx.reflink = !opts->keep_allocation && !opts->no_offload;
        cap = opts->rate_flow ? agent_rate_flow_cap(opts->rate_flow) : opts->bandwidth_limit;
        ctx.buffer_size = opts->buffer_size;
        if (ctx.buffer_size == 0) {
                ctx.buffer_size = COPY_DEFAULT_BUFFER;
                if (cap > 0)
                        ctx.buffer_size = (size_t) CLAMP(cap / COPY_CAPPED_CHUNKS, COPY_MIN_CAPPED_BUFFER,
                                                         COPY_DEFAULT_BUFFER);
        }
        if (ctx.buffer_size < COPY_ALIGN || ctx.buffer_size > COPY_MAX_BUFFER || n_workers > COPY_WORKERS_MAX)
                return -EINVAL;
        ctx.buffer_size = ALIGN_DOWN(ctx.buffer_size, COPY_ALIGN);
        g_mutex_init(&ctx.dst_map_lock);
        ctx.dst_scan_from = UINT64_MAX;        /* nothing known yet */
        flow = opts->rate_flow;
        if (!flow && opts->bandwidth_limit > 0) {
                own_gov = agent_rate_gov_new(opts->bandwidth_limit);
                flow = agent_rate_flow_join(own_gov);
        }

        r = open_pair(src_path, O_RDONLY, !opts->no_direct, &ctx.src_fd, &ctx.src_buf_fd);
        if (r < 0)
                goto out;
        r = open_pair(dst_path, O_WRONLY, !opts->no_direct, &ctx.dst_fd, &ctx.dst_buf_fd);
        if (r < 0)
                goto out;
        r = file_size(ctx.src_buf_fd, &ctx.src_size);
        if (r < 0)
                goto out;
        r = file_size(ctx.dst_buf_fd, &dst_size);
        if (r < 0)
                goto out;
        if (dst_size < ctx.src_size) {
                r = -EFBIG;
                goto out;
        }
        /* Resume: the caller verified [0, start_offset) already holds the source's bytes. */
        if (opts->start_offset > ctx.src_size || opts->start_offset % COPY_ALIGN != 0) {
                r = -EINVAL;
                goto out;
        }
        off = done = opts->start_offset;
        /* A resumed copy's progress starts at the kept prefix at once, as its job's bytes_done does. */
        if (done > 0 && progress)
                progress(done, ctx.src_size, userdata);
        cp = (struct checkpointer) { .opts = opts, .n_jobs = n_workers, .last_prefix = off, .last_us = g_get_monotonic_time(),
                                     .interval_us = opts->checkpoint_interval_us > 0 ? opts->checkpoint_interval_us
                                                                                     : COPY_CHECKPOINT_US };
        if (ctx.src_fd == ctx.src_buf_fd)
                (void) posix_fadvise(ctx.src_buf_fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        for (unsigned i = 0; i < n_workers; i++) {
                jobs[i].ctx = &ctx;
                jobs[i].index = i;
                /* A mapping of its own: copyring.c may pin it and keep it out of forks. */
                jobs[i].buf = mmap(NULL, ctx.buffer_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (jobs[i].buf == MAP_FAILED) {
                        jobs[i].buf = NULL;
                        r = -ENOMEM;
                        goto out;
                }
                free_jobs[n_free++] = &jobs[i];
        }
        r = pipe_start(&pipe, &ctx, jobs, n_workers, opts->io);
        if (r < 0)
                goto out;

        while (off < ctx.src_size && err == 0) {
                uint64_t end = 0;
                bool data = false;

                if (g_cancellable_is_cancelled(cancel)) {
                        err = -ECANCELED;
                        break;
                }
                r = agent_file_next_extent(ctx.src_buf_fd, off, ctx.src_size, &end, &data);
                if (r < 0) {
                        err = r;
                        break;
                }
                if (!data) {
                        r = dst_clear(&ctx, off, end - off);
                        if (r < 0) {
                                err = r;
                                break;
                        }
                        done += end - off;
                        off = end;
                        if (progress)
                                progress(done, ctx.src_size, userdata);
                        if ((r = maybe_checkpoint(&ctx, &cp, jobs, off)) < 0) {
                                err = r;
                                break;
                        }
                        continue;
                }

                while (off < end && err == 0) {
                        struct copy_job *job;
                        size_t len = (size_t) MIN(end - off, (uint64_t) ctx.buffer_size);

                        /* Reap completions: block only when every buffer is in flight. */
                        for (;;) {
                                r = pipe_reap(&pipe, n_free == 0, &job);
                                if (r < 0) {
                                        /* The ring failed and was settled (or is stuck): its jobs never come back; the copy fails. */
                                        lost = true;
                                        err = err ? err : r;
                                        break;
                                }
                                if (!job)
                                        break;
                                if (job->result < 0 && err == 0)
                                        err = job->result;
                                done += job->length;
                                job->busy = false;
                                free_jobs[n_free++] = job;
                                if (progress)
                                        progress(done, ctx.src_size, userdata);
                        }
                        if (err == 0)
                                err = maybe_checkpoint(&ctx, &cp, jobs, off);
                        if (err < 0)
                                break;
                        if (g_cancellable_is_cancelled(cancel)) {
                                err = -ECANCELED;
                                break;
                        }
                        /* Data only: a hole costs the storage nothing worth capping. */
                        if (flow && (r = agent_rate_flow_acquire(flow, len, cancel)) < 0) {
                                err = r;
                                break;
                        }
                        job = free_jobs[--n_free];
                        job->offset = off;
                        job->length = len;
                        job->result = 0;
                        job->busy = true;
                        pipe_submit(&pipe, job);
                        off += len;
                }
        }

        /* Drain whatever is still in flight, even on error or cancel. */
        while (n_free < n_workers && !lost) {
                struct copy_job *job = NULL;

                r = pipe_reap(&pipe, true, &job);
                if (r < 0 || !job) {
                        lost = true;
                        err = err ? err : (r < 0 ? r : -EIO);
                        break;
                }
                if (job->result < 0 && err == 0)
                        err = job->result;
                done += job->length;
                job->busy = false;
                free_jobs[n_free++] = job;
                if (err == 0 && progress)
                        progress(done, ctx.src_size, userdata);
        }
        r = err;
        /* A larger destination must not keep stale bytes past the source: it reads as the source, then zeros. */
        if (r == 0)
                r = dst_clear(&ctx, ctx.src_size, dst_size - ctx.src_size);
        if (r == 0 && fdatasync(ctx.dst_buf_fd) < 0)
                r = -errno;

out:
        pipe_stop(&pipe);
        /* A failed ring was settled: no request of it can touch a buffer any more. */
        for (unsigned i = 0; i < COPY_WORKERS_MAX; i++)
                if (jobs[i].buf)
                        munmap(jobs[i].buf, ctx.buffer_size);
        close_pair(ctx.src_fd, ctx.src_buf_fd);
        close_pair(ctx.dst_fd, ctx.dst_buf_fd);
        g_mutex_clear(&ctx.dst_map_lock);
        if (own_gov) {
                agent_rate_flow_leave(flow);
                agent_rate_gov_free(own_gov);
        }
        return r;
}
