/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The raw copier's io_uring pipeline (liburing).
 *
 * A job is one read of its chunk, then the writes of its non-zero runs,
 * all asynchronous: the dispatcher thread keeps every buffer's I/O in
 * flight and does the cheap parts itself between completions (the zero
 * scan, hole punching, a reflink). Unlike the thread pipeline, whose
 * synchronous O_DIRECT writes each hold the destination's inode lock until
 * the device answers (ext4 takes it exclusively to allocate), an
 * asynchronous write holds it only to submit, so writes into a sparse
 * destination overlap as well as reads.
 *
 * The rare cases stay synchronous and simple: a direct fd refusing I/O
 * (EINVAL, then the buffered fd for good), the unaligned tail of a file,
 * a full submission queue.
 */

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <liburing.h>

#include "copy.h"
#include "copyint.h"
#include "fileio.h"

/* Submission queue entries: one read per job, writes per data run; a full queue falls back to a synchronous write. */
#define RING_ENTRIES    128u

struct ring_op {
        GList link;             /* in copy_ring.ops: what copy_ring_free frees whatever happened */
        struct copy_job *job;
        char *buf;
        uint64_t off;
        size_t len;
        int fd;                 /* the fd it was queued on */
        bool write;
};

struct copy_ring {
        struct copy_ctx *ctx;
        struct io_uring ring;
        bool fixed;             /* the jobs' buffers are registered: READ_FIXED/WRITE_FIXED */
        unsigned in_flight;     /* ring ops submitted or queued, not completed */
        GQueue done;            /* finished jobs, not reaped yet */
        GQueue ops;             /* every ring_op allocated and not freed yet */
};

static struct ring_op *op_new(struct copy_ring *r, const struct ring_op *init)
{
        struct ring_op *op = g_new(struct ring_op, 1);

        *op = *init;
        op->link = (GList) { .data = op };
        g_queue_push_tail_link(&r->ops, &op->link);
        return op;
}

static void op_free(struct copy_ring *r, struct ring_op *op)
{
        g_queue_unlink(&r->ops, &op->link);
        g_free(op);
}

int agent_copy_uring_probe(void)
{
        struct io_uring ring;
        int r = io_uring_queue_init(1, &ring, 0);

        if (r == 0)
                io_uring_queue_exit(&ring);
        return r;
}

int copy_ring_new(struct copy_ctx *ctx, struct copy_job *jobs, unsigned n_jobs, struct copy_ring **ret_ring)
{
        g_autofree struct iovec *iov = g_new0(struct iovec, n_jobs);
        struct copy_ring *r = g_new0(struct copy_ring, 1);
        int e;

        e = io_uring_queue_init(RING_ENTRIES, &r->ring, 0);
        if (e < 0) {
                g_free(r);
                return e;
        }
        r->ctx = ctx;
        g_queue_init(&r->done);
        g_queue_init(&r->ops);
        /*
         * Registered buffers save pinning the pages on every request (half
         * the copy's system time in bench/copy); RLIMIT_MEMLOCK may refuse
         * them, which costs only that. A fork (another job spawning
         * qemu-img) would copy pinned pages into the child: they are
         * mappings of their own (copy.c), kept out of forks.
         */
        for (unsigned i = 0; i < n_jobs; i++) {
                (void) madvise(jobs[i].buf, ctx->buffer_size, MADV_DONTFORK);
                iov[i] = (struct iovec) { .iov_base = jobs[i].buf, .iov_len = ctx->buffer_size };
        }
        r->fixed = io_uring_register_buffers(&r->ring, iov, n_jobs) == 0;
        *ret_ring = r;
        return 0;
}

void copy_ring_free(struct copy_ring *r)
{
        if (!r)
                return;
        io_uring_queue_exit(&r->ring);
        g_queue_clear(&r->done);
        /* Left only after a ring that could not be settled: the kernel never dereferences them. */
        while (!g_queue_is_empty(&r->ops))
                op_free(r, g_queue_peek_head(&r->ops));
        g_free(r);
}

static void job_fail(struct copy_job *job, int err)
{
        if (err < 0 && job->result == 0)
                job->result = err;
}

static void job_maybe_done(struct copy_ring *r, struct copy_job *job)
{
        if (job->ring_ops == 0)
                g_queue_push_tail(&r->done, job);
}

/* The fd an op uses now: direct unless the filesystem refused direct I/O once. */
static int op_fd(const struct copy_ctx *ctx, bool write)
{
        if (write)
                return g_atomic_int_get(&ctx->dst_direct_broken) ? ctx->dst_buf_fd : ctx->dst_fd;
        return g_atomic_int_get(&ctx->src_direct_broken) ? ctx->src_buf_fd : ctx->src_fd;
}

/* The op synchronously, through copy_read/copy_write (they handle EINVAL). */
static int op_sync(struct copy_ctx *ctx, const struct ring_op *op)
{
        if (op->write)
                return copy_write(ctx, op->buf, op->len, op->off, NULL);
        return copy_read(ctx, op->buf, op->len, op->off);
}

static void job_store(struct copy_ring *r, struct copy_job *job);

/* Queues op (owned by the ring from here), or does it synchronously when the submission queue stays full. */
static void op_queue(struct copy_ring *r, struct ring_op *op)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        int fd = op_fd(r->ctx, op->write);

        if (!sqe) {
                (void) io_uring_submit(&r->ring);
                sqe = io_uring_get_sqe(&r->ring);
        }
        if (!sqe) {
                int e = op_sync(r->ctx, op);

                job_fail(op->job, e);
                if (e == 0 && !op->write)
                        job_store(r, op->job);
                op_free(r, op);
                return;
        }
        op->fd = fd;
        if (r->fixed && op->write)
                io_uring_prep_write_fixed(sqe, fd, op->buf, (unsigned) op->len, op->off, (int) op->job->index);
        else if (r->fixed)
                io_uring_prep_read_fixed(sqe, fd, op->buf, (unsigned) op->len, op->off, (int) op->job->index);
        else if (op->write)
                io_uring_prep_write(sqe, fd, op->buf, (unsigned) op->len, op->off);
        else
                io_uring_prep_read(sqe, fd, op->buf, (unsigned) op->len, op->off);
        io_uring_sqe_set_data(sqe, op);
        op->job->ring_ops++;
        r->in_flight++;
}

struct store_target {
        struct copy_ring *ring;
        struct copy_job *job;
};

/* copy_store's writer: queues the write of one data run. */
static int ring_write(struct copy_ctx *ctx, const char *buf, size_t len, uint64_t off, void *data)
{
        const struct store_target *t = data;

        (void) ctx;
        op_queue(t->ring, op_new(t->ring, &(struct ring_op) { .job = t->job, .buf = (char *) buf, .off = off,
                                                              .len = len, .write = true }));
        return 0;
}

/* The job's chunk is in its buffer: zero runs are cleared now, data runs queued for writing. */
static void job_store(struct copy_ring *r, struct copy_job *job)
{
        struct store_target t = { r, job };

        job_fail(job, copy_store(r->ctx, job->buf, job->offset, job->length, ring_write, &t));
}

void copy_ring_submit(struct copy_ring *r, struct copy_job *job)
{
        job->ring_ops = 0;
        job->lost = false;
        if (g_atomic_int_get(&r->ctx->reflink) || job->length % COPY_ALIGN != 0) {
                /* A clone, or the file's unaligned tail (once per copy): no read to overlap; its writes are queued. */
                struct store_target t = { r, job };

                job_fail(job, copy_chunk(r->ctx, job->buf, job->offset, job->length, ring_write, &t));
        } else {
                op_queue(r, op_new(r, &(struct ring_op) { .job = job, .buf = job->buf, .off = job->offset,
                                                          .len = job->length }));
        }
        /* Start it now: the device should see the request while the dispatcher waits for the cap. */
        (void) io_uring_submit(&r->ring);
        job_maybe_done(r, job);
}

static bool op_is_direct(const struct copy_ctx *ctx, const struct ring_op *op)
{
        return op->fd != (op->write ? ctx->dst_buf_fd : ctx->src_buf_fd);
}

/*
 * A direct op came back short at an unaligned point: queued again, the
 * remainder would be refused with EINVAL and switch the whole copy to
 * buffered I/O (see direct_full in copy.c, the thread pipeline's same
 * case). It is finished here on the buffered fd and the direct fd stays
 * in use. Returns op's full length, or -errno. (An aligned short
 * remainder is still queued again, direct.)
 */
static int op_finish_buffered(struct copy_ctx *ctx, struct ring_op *op, size_t done)
{
        int e = copy_finish_buffered(ctx, op->write, op->buf + done, op->len - done, op->off + done);

        return e < 0 ? e : (int) op->len;
}

/* One completion: a short transfer is continued, EINVAL on a direct fd is redone buffered, a read is stored. */
static void op_complete(struct copy_ring *r, struct ring_op *op, int res)
{
        struct copy_job *job = op->job;

        job->ring_ops--;
        r->in_flight--;
        if (res == -EINVAL && op_is_direct(r->ctx, op)) {
                g_atomic_int_set(op->write ? &r->ctx->dst_direct_broken : &r->ctx->src_direct_broken, 1);
                res = op_sync(r->ctx, op);
                if (res == 0)
                        res = (int) op->len;
        }
        if (res > 0 && (size_t) res < op->len && res % COPY_ALIGN != 0 && op_is_direct(r->ctx, op))
                res = op_finish_buffered(r->ctx, op, (size_t) res);
        if (res == 0)
                res = -EIO;     /* no progress: the source shrank under us, or the device wrote nothing */
        if (res == -EINTR || res == -EAGAIN || (res > 0 && (size_t) res < op->len)) {
                res = MAX(res, 0);
                op->buf += res;
                op->off += (uint64_t) res;
                op->len -= (size_t) res;
                op_queue(r, op);
        } else {
                job_fail(job, MIN(res, 0));
                if (!op->write && job->result == 0)
                        job_store(r, job);
                op_free(r, op);
        }
        job_maybe_done(r, job);
}

/* Consecutive EAGAIN/EBUSY answers with nothing to reap before the ring counts as failed. */
#define RING_BUSY_TRIES 64u

int copy_ring_reap(struct copy_ring *r, bool wait, struct copy_job **ret_job)
{
        unsigned busy = 0;

        /* Set on every path: the caller loops until it sees NULL. */
        *ret_job = NULL;
        while (g_queue_is_empty(&r->done) && r->in_flight > 0) {
                struct io_uring_cqe *cqe;
                int e;

                e = wait ? io_uring_submit_and_wait(&r->ring, 1) : io_uring_submit(&r->ring);
                if (e == -EINTR)
                        continue;
                /* EBUSY: the completion queue is full; reaping it below is the cure. */
                if (e < 0 && e != -EAGAIN && e != -EBUSY)
                        return e;
                if (e < 0 && io_uring_cq_ready(&r->ring) == 0) {
                        /* Nothing to reap would cure it: a ring that keeps refusing has failed, not a hang. */
                        if (++busy >= RING_BUSY_TRIES)
                                return e;
                        g_usleep(1000);
                        continue;
                }
                busy = 0;
                if (!wait && io_uring_cq_ready(&r->ring) == 0)
                        break;
                while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
                        struct ring_op *op = io_uring_cqe_get_data(cqe);
                        int res = cqe->res;

                        /* Free the slot first: handling the op may queue more. */
                        io_uring_cqe_seen(&r->ring, cqe);
                        op_complete(r, op, res);
                }
        }
        *ret_job = g_queue_pop_head(&r->done);
        return 0;
}

/* An op given up on while settling: its job must be done again from the start. */
static void op_drop(struct copy_ring *r, struct ring_op *op)
{
        op->job->ring_ops--;
        op->job->lost = true;
        r->in_flight--;
        op_free(r, op);
}

/*
 * io_uring_enter is refused for good: the entries the kernel has not
 * consumed (from its head to our tail) will never run. They are taken
 * back from the queue so that nothing counts on them any more.
 */
static void ring_withdraw(struct copy_ring *r)
{
        struct io_uring_sq *sq = &r->ring.sq;
        unsigned head = io_uring_smp_load_acquire(sq->khead);

        for (unsigned i = head; i != sq->sqe_tail; i++) {
                __u64 data = sq->sqes[i & sq->ring_mask].user_data;

                /* Not ours: the cancel (0) and, before Linux 5.11, liburing's own wait timeout. */
                if (data && data != LIBURING_UDATA_TIMEOUT)
                        op_drop(r, (struct ring_op *) (uintptr_t) data);
        }
        sq->sqe_head = sq->sqe_tail = head;
        io_uring_smp_store_release(sq->ktail, head);
}

int copy_ring_settle(struct copy_ring *r, gint64 timeout_us)
{
        gint64 deadline = g_get_monotonic_time() + timeout_us;
        struct io_uring_sqe *sqe;
        bool enter_works = true;

        /* What waits in the kernel's worker queue ends at once; a request the device holds ends by itself. */
        if (r->in_flight > 0 && (sqe = io_uring_get_sqe(&r->ring))) {
                io_uring_prep_cancel(sqe, NULL, IORING_ASYNC_CANCEL_ANY);
                io_uring_sqe_set_data(sqe, NULL);
        }
        while (r->in_flight > 0) {
                struct io_uring_cqe *cqe;
                int e;

                if (enter_works) {
                        e = io_uring_submit(&r->ring);

                        if (e < 0 && e != -EINTR && e != -EAGAIN && e != -EBUSY) {
                                enter_works = false;
                                ring_withdraw(r);
                        }
                }
                /* Completions are read from the shared ring itself: no system call needed. */
                while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
                        struct ring_op *op = io_uring_cqe_get_data(cqe);

                        io_uring_cqe_seen(&r->ring, cqe);
                        if (op)
                                op_drop(r, op);
                }
                if (r->in_flight == 0)
                        break;
                if (g_get_monotonic_time() >= deadline)
                        return -ETIMEDOUT;
                e = -EPERM;
                if (enter_works) {
                        struct __kernel_timespec ts = { .tv_nsec = 10 * 1000 * 1000 };

                        /* A completion or the timeout: the loop reads it either way. */
                        e = io_uring_wait_cqe_timeout(&r->ring, &cqe, &ts);
                }
                /* Cannot wait in the kernel: poll. Any return from it runs the task work that posts completions. */
                if (e < 0 && e != -ETIME && e != -EINTR)
                        g_usleep(1000);
        }
        return 0;
}
