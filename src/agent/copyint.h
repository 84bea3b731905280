/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Inside the raw copier: what copy.c (the dispatcher and its thread
 * pipeline) shares with copyring.c (the io_uring pipeline). Not for other
 * callers; they use copy.h.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <glib.h>
#include <gio/gio.h>

#define COPY_ALIGN              4096u

#define ALIGN_DOWN(x, a)        ((x) / (a) * (a))
#define ALIGN_UP(x, a)          ALIGN_DOWN((x) + (a) - 1, (a))

struct copy_ctx {
        int src_fd;             /* O_DIRECT when possible */
        int dst_fd;
        int src_buf_fd;         /* buffered: unaligned tail, EINVAL fallback */
        int dst_buf_fd;
        uint64_t src_size;
        size_t buffer_size;
        gint src_direct_broken; /* set when an O_DIRECT op failed with EINVAL */
        gint dst_direct_broken;
        gint punch_unsupported;
        gint zero_range_unsupported;
        gint reflink;           /* 1 while FICLONERANGE works between src and dst */
        /*
         * What the destination held before we wrote it: no data in
         * [dst_scan_from, dst_next_data). Asking the filesystem (SEEK_DATA)
         * waits for the inode lock our own O_DIRECT writes hold while they
         * allocate, which stalled every hole behind the writes in flight.
         */
        GMutex dst_map_lock;
        uint64_t dst_scan_from;
        uint64_t dst_next_data;
        bool keep_allocation;   /* preallocated destination: zero in place, never punch */
        GCancellable *cancel;
};

/* One chunk of source data: read it, then write it (or clone it); owns one aligned buffer. */
struct copy_job {
        struct copy_ctx *ctx;
        void *buf;
        unsigned index;         /* of buf among the copy's buffers (a registered buffer's index) */
        uint64_t offset;
        size_t length;
        int result;             /* 0 or -errno, set by the pipeline */
        bool busy;              /* handed to the pipeline, not reaped yet (dispatcher's view) */
        bool quit;
        unsigned ring_ops;      /* io_uring: reads or writes of this job in flight */
        bool lost;              /* io_uring: an op of it was dropped when the ring failed; do it again */
};

/* Writes len bytes of buf (COPY_ALIGN multiple) at off of the destination; 0 or -errno. */
typedef int (*copy_write_fn)(struct copy_ctx *ctx, const char *buf, size_t len, uint64_t off, void *data);

/* Storage offload of a block-aligned range: 1 when cloned, 0 when it must be copied, -errno. */
int copy_clone(struct copy_ctx *ctx, uint64_t off, size_t len);
/*
 * One chunk done synchronously: its block-aligned part cloned where the
 * filesystem can, else read (direct); the unaligned tail of the file read
 * through the page cache; what was not cloned stored through write.
 */
int copy_chunk(struct copy_ctx *ctx, void *buf, uint64_t off, size_t len, copy_write_fn write, void *data);
/*
 * Stores buf (the source bytes at off) in the destination: zero blocks
 * become holes (or allocated zeros), the aligned data runs go to write(),
 * an unaligned tail is written at once through the page cache.
 */
int copy_store(struct copy_ctx *ctx, const char *buf, uint64_t off, size_t len, copy_write_fn write, void *data);
/*
 * The rest of a direct transfer that stopped short at an unaligned point,
 * through the page cache (the buffered fds): both pipelines' way, so the
 * direct fds stay in use. 0 or -errno.
 */
int copy_finish_buffered(struct copy_ctx *ctx, bool write, char *buf, size_t len, uint64_t off);
/* Direct I/O of an aligned range, switching to the buffered fd for good on EINVAL. */
int copy_read(struct copy_ctx *ctx, void *buf, size_t len, uint64_t off);
int copy_write(struct copy_ctx *ctx, const char *buf, size_t len, uint64_t off, void *data);

/*
 * The io_uring pipeline: reads and writes of up to n_jobs chunks in
 * flight at once from the calling thread, with no thread of ours per
 * request. Jobs come back through copy_ring_reap() in any order.
 */
struct copy_ring;

/* -errno when io_uring cannot be used here (old kernel, seccomp, no memory): use the threads. */
int copy_ring_new(struct copy_ctx *ctx, struct copy_job *jobs, unsigned n_jobs, struct copy_ring **ret_ring);
/* Starts job (offset, length set); its outcome is in job->result once reaped. */
void copy_ring_submit(struct copy_ring *ring, struct copy_job *job);
/*
 * A finished job, or NULL when none is finished and !wait (or nothing is
 * in flight). -errno when the ring itself failed: what is in flight is
 * unknown then, and the buffers must not be reused until copy_ring_settle().
 */
int copy_ring_reap(struct copy_ring *ring, bool wait, struct copy_job **ret_job);
/*
 * After copy_ring_reap() failed: waits until the kernel holds none of the
 * ring's requests (cancelling what it can, taking back what it never
 * consumed, reading completions straight from the shared ring when
 * io_uring_enter is refused), at most timeout_us. The jobs finished
 * before stay for copy_ring_reap(); the others are marked lost: none of
 * their I/O is in flight, some of it may have been done, and they must be
 * done again from the start. 0, or -ETIMEDOUT when requests are still in
 * flight: their buffers must then be neither reused nor unmapped.
 */
int copy_ring_settle(struct copy_ring *ring, gint64 timeout_us);
void copy_ring_free(struct copy_ring *ring);
