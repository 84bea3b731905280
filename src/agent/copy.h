/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Ferry's raw→raw copier: sparse aware (SEEK_DATA/SEEK_HOLE), large aligned
 * buffers, O_DIRECT when the filesystem allows it, overlapping reads and
 * writes, zero detection (zero blocks become holes in the destination).
 * Runs in the calling thread (a job thread); never logs.
 */

#include <stdbool.h>
#include <stdint.h>
#include <gio/gio.h>

#include "rategov.h"

/* Called from the copying thread; done and total in bytes of the source. */
typedef void (*agent_copy_progress_fn)(uint64_t done, uint64_t total, void *userdata);
/* Called from the copying thread once [0, prefix) of the destination is durable (fdatasync'ed). */
typedef void (*agent_copy_checkpoint_fn)(uint64_t prefix, void *userdata);

/* How a raw copy does its I/O. */
enum agent_copy_io {
        AGENT_COPY_IO_AUTO,     /* io_uring where the kernel allows it, else threads */
        AGENT_COPY_IO_THREADS,  /* synchronous I/O on `workers` threads */
        AGENT_COPY_IO_URING,    /* io_uring or fail with its -errno (tests, benchmarks) */
};

struct agent_copy_options {
        /*
         * The host's fair share of its copy cap (sdm.c): asked before every
         * chunk. When NULL, bandwidth_limit (bytes/s, 0 = unlimited) caps this
         * copy alone.
         */
        struct agent_rate_flow *rate_flow;
        uint64_t bandwidth_limit;
        size_t buffer_size;         /* 0 = default (8 MiB; smaller under a low cap) */
        unsigned workers;           /* buffers in flight (I/O threads without io_uring), 0 = default (4), at most 16 */
        enum agent_copy_io io;
        gboolean no_direct;         /* force buffered I/O */
        gboolean keep_allocation;   /* preallocated destination: write zeros, never punch holes; no reflink */
        gboolean no_offload;        /* never FICLONERANGE (the default tries it once and keeps it while it works) */
        /*
         * Resume: [0, start_offset) of the destination already holds the
         * source's bytes (the caller verified it); copying starts there.
         * A multiple of 4096, at most the source's size.
         */
        uint64_t start_offset;
        /* Durable progress, about once per checkpoint_interval_us (0 = 1 s); NULL = none. */
        agent_copy_checkpoint_fn checkpoint;
        void *checkpoint_data;
        gint64 checkpoint_interval_us;
};

/*
 * Copies the raw file src_path into the existing raw file dst_path. The
 * destination keeps its size, which must be >= the source's (-EFBIG
 * otherwise); the part past the source's size is cleared. Destination
 * ranges that are holes or zeros in the source become holes (punched) so
 * a re-copy over stale data is correct, or, with keep_allocation,
 * allocated zeros.
 * Returns 0, -ECANCELED when cancel was triggered (promptly, within one
 * buffer), or -errno. opts may be NULL.
 */
int agent_copy_raw(const char *src_path, const char *dst_path,
                   const struct agent_copy_options *opts, GCancellable *cancel,
                   agent_copy_progress_fn progress, void *userdata);

/* 0 if this process can set up an io_uring (AGENT_COPY_IO_URING would work), else its -errno. */
int agent_copy_uring_probe(void);

/* True if len bytes at p are all zero. */
bool agent_buf_is_zero(const void *p, size_t len);
/* pread of exactly len bytes (EINTR and short reads retried); -EIO at EOF. */
int agent_pread_full(int fd, void *buf, size_t len, uint64_t off);
/*
 * The extent of fd at off (SEEK_DATA/SEEK_HOLE, 4 KiB aligned): its end
 * (at most size) and whether it holds data. A filesystem without sparse
 * support reports one data extent up to size.
 */
int agent_file_next_extent(int fd, uint64_t off, uint64_t size, uint64_t *ret_end, bool *ret_data);
