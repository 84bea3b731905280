/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests for the raw copier (agent_copy_raw) and the qemu-img wrappers. */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/stat.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/io_uring.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <liburing.h>

#include "config.h"
#include "copy.h"
#include "copyint.h"
#include "error.h"
#include "qemuimg.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

static char *tmpdir;
/* The I/O pipeline the raw tests ask for (run_io_case); AUTO is what the agent uses. */
static enum agent_copy_io test_io = AGENT_COPY_IO_AUTO;

static int copy_raw(const char *src, const char *dst, const struct agent_copy_options *opts,
                    GCancellable *cancel, agent_copy_progress_fn progress, void *userdata)
{
        struct agent_copy_options o = { 0 };

        if (opts)
                o = *opts;
        o.io = test_io;
        return agent_copy_raw(src, dst, &o, cancel, progress, userdata);
}

static char *tmp_path(const char *name)
{
        return g_build_filename(tmpdir, name, NULL);
}

static void make_file(const char *path, uint64_t size)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, (off_t) size), ==, 0);
        close(fd);
}

/* Writes len bytes at off: random when fill < 0, else memset(fill). */
static void write_at(const char *path, uint64_t off, size_t len, int fill, guint32 seed)
{
        g_autofree guint8 *buf = g_malloc(len);
        g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
        int fd;

        if (fill < 0)
                for (size_t i = 0; i < len; i++)
                        buf[i] = (guint8) g_rand_int(rand);
        else
                memset(buf, fill, len);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                g_error("open %s: %s", path, g_strerror(errno));
        g_assert_cmpint(pwrite(fd, buf, len, (off_t) off), ==, (ssize_t) len);
        g_assert_cmpint(fsync(fd), ==, 0);
        close(fd);
}

/* Asserts the first len bytes of a and b are identical. */
static void assert_same(const char *a, const char *b, uint64_t len)
{
        g_autofree char *da = NULL, *db = NULL;
        gsize la, lb;

        g_assert_true(g_file_get_contents(a, &da, &la, NULL));
        g_assert_true(g_file_get_contents(b, &db, &lb, NULL));
        g_assert_cmpuint(la, >=, len);
        g_assert_cmpuint(lb, >=, len);
        g_assert_true(memcmp(da, db, len) == 0);
}

/* True if path has no data extent overlapping [off, off+len). */
static gboolean is_hole(const char *path, uint64_t off, uint64_t len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t d;

        g_assert_cmpint(fd, >=, 0);
        d = lseek(fd, (off_t) off, SEEK_DATA);
        close(fd);
        if (d < 0)
                return errno == ENXIO;
        return (uint64_t) d >= off + len;
}

static uint64_t allocated(const char *path)
{
        struct stat st;

        g_assert_cmpint(stat(path, &st), ==, 0);
        return (uint64_t) st.st_blocks * 512;
}

static uint64_t file_size(const char *path)
{
        struct stat st;

        g_assert_cmpint(stat(path, &st), ==, 0);
        return (uint64_t) st.st_size;
}

struct progress_rec {
        uint64_t calls, first_done, last_done, last_total;
        gboolean monotonic;
        GCancellable *cancel_after_first;
};

static void record_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct progress_rec *p = userdata;

        if (p->calls > 0 && done < p->last_done)
                p->monotonic = FALSE;
        if (p->calls == 0)
                p->first_done = done;
        p->calls++;
        p->last_done = done;
        p->last_total = total;
        if (p->cancel_after_first)
                g_cancellable_cancel(p->cancel_after_first);
}

static void cleanup_files(const char *const *names)
{
        for (; *names; names++) {
                g_autofree char *p = tmp_path(*names);
                (void) g_unlink(p);
        }
}

/* A 64 MiB sparse source: data at [1M,3M), [20M,20M+12K) and [63M,64M). */
static void make_sparse_source(const char *path)
{
        make_file(path, 64 * MiB);
        write_at(path, 1 * MiB, 2 * MiB, -1, 1);
        write_at(path, 20 * MiB, 12 * KiB, -1, 2);
        write_at(path, 63 * MiB, 1 * MiB, -1, 3);
}

static void check_sparse_copy(gboolean no_direct, size_t buffer_size)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct agent_copy_options opts = { .no_direct = no_direct, .buffer_size = buffer_size };
        struct progress_rec prog = { .monotonic = TRUE };

        make_sparse_source(src);
        make_file(dst, 64 * MiB);
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);

        assert_same(src, dst, 64 * MiB);
        g_assert_cmpuint(file_size(dst), ==, 64 * MiB);
        g_assert_true(is_hole(dst, 0, 1 * MiB));
        g_assert_true(is_hole(dst, 3 * MiB, 17 * MiB));
        g_assert_true(is_hole(dst, 21 * MiB, 42 * MiB));
        g_assert_false(is_hole(dst, 1 * MiB, 2 * MiB));
        g_assert_cmpuint(allocated(dst), <=, 4 * MiB);
        g_assert_cmpuint(prog.last_done, ==, 64 * MiB);
        g_assert_cmpuint(prog.last_total, ==, 64 * MiB);
        g_assert_true(prog.monotonic);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void test_holes_preserved(void)
{
        check_sparse_copy(FALSE, 0);
}

static void test_buffered_fallback(void)
{
        /* Small buffers so every extent spans several chunks. */
        check_sparse_copy(TRUE, 64 * KiB);
}

static void test_small_buffers_direct(void)
{
        check_sparse_copy(FALSE, 4 * KiB);
}

static void test_unaligned_tail(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        g_autofree char *dst2 = tmp_path("dst2.raw");
        const uint64_t size = 1 * MiB + 123;
        g_autofree char *tail = NULL;
        gsize tail_len;

        make_file(src, size);
        write_at(src, 0, size, -1, 4);
        make_file(dst, size);
        g_assert_cmpint(copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, size);
        g_assert_cmpuint(file_size(dst), ==, size);

        /* A larger destination keeps its size; stale bytes past the source are cleared. */
        make_file(dst2, 2 * MiB);
        write_at(dst2, 0, 2 * MiB, 0xAA, 0);
        g_assert_cmpint(copy_raw(src, dst2, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst2, size);
        g_assert_cmpuint(file_size(dst2), ==, 2 * MiB);
        g_assert_true(g_file_get_contents(dst2, &tail, &tail_len, NULL));
        g_assert_cmpuint(tail_len, ==, 2 * MiB);
        for (gsize i = size; i < tail_len; i++)
                g_assert_cmpint((guint8) tail[i], ==, 0);

        /* Unaligned tail that is zeros in the source over stale destination data. */
        make_file(src, size);
        write_at(src, 0, 4096, -1, 5);
        write_at(src, 1 * MiB, 123, 0, 0);
        write_at(dst, 0, size, 0x55, 0);
        g_assert_cmpint(copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, size);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", "dst2.raw", NULL });
}

static void test_zero_blocks_become_holes(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");

        make_file(src, 8 * MiB);
        write_at(src, 0, 8 * MiB, -1, 6);
        write_at(src, 2 * MiB, 1 * MiB, 0, 0);          /* allocated zeros */
        write_at(src, 5 * MiB + 4096, 4096, 0, 0);      /* one zero block */
        g_assert_false(is_hole(src, 2 * MiB, 1 * MiB));
        make_file(dst, 8 * MiB);

        g_assert_cmpint(copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, 8 * MiB);
        g_assert_true(is_hole(dst, 2 * MiB, 1 * MiB));
        g_assert_true(is_hole(dst, 5 * MiB + 4096, 4096));
        g_assert_false(is_hole(dst, 5 * MiB, 4096));
        g_assert_cmpuint(allocated(dst), <=, 7 * MiB - 4096);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void test_stale_destination(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");

        make_sparse_source(src);
        write_at(src, 1 * MiB + 512 * KiB, 256 * KiB, 0, 0);   /* zeros inside data */
        make_file(dst, 64 * MiB);
        write_at(dst, 0, 64 * MiB, 0xFF, 0);                    /* a failed earlier copy */

        g_assert_cmpint(copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, 64 * MiB);
        g_assert_true(is_hole(dst, 0, 1 * MiB));
        g_assert_true(is_hole(dst, 1 * MiB + 512 * KiB, 256 * KiB));
        g_assert_true(is_hole(dst, 21 * MiB, 42 * MiB));
        g_assert_cmpuint(allocated(dst), <=, 4 * MiB);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void run_ok(const char *cmd)
{
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) e = NULL;
        int status = 0;

        g_assert_true(g_spawn_command_line_sync(cmd, &out, &err, &status, &e));
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("%s failed: %s", cmd, err);
}

/* True if the extent of path holding off is shared with another file (a reflink). */
static gboolean extent_shared(const char *path, uint64_t off)
{
        struct {
                struct fiemap fm;
                struct fiemap_extent ext[1];
        } q = { .fm = { .fm_start = off, .fm_length = 4096, .fm_flags = FIEMAP_FLAG_SYNC, .fm_extent_count = 1 } };
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ioctl(fd, FS_IOC_FIEMAP, &q), ==, 0);
        close(fd);
        return q.fm.fm_mapped_extents == 1 && (q.fm.fm_extents[0].fe_flags & FIEMAP_EXTENT_SHARED);
}

/* A loop-mounted XFS with reflink=1 in tmpdir; FALSE (the test skipped, saying why) where there cannot be one. */
static gboolean xfs_mount(char **ret_mnt)
{
        g_autofree char *img = tmp_path("xfs.img"), *mnt = tmp_path("xfs");
        g_autofree char *cmd = NULL, *mkfs = g_find_program_in_path("mkfs.xfs"), *err = NULL;
        int status = 0;

        if (geteuid() != 0 || !mkfs) {
                g_test_skip("needs root and mkfs.xfs (xfsprogs) for a loop-mounted XFS with reflink=1");
                return FALSE;
        }
        make_file(img, 320 * MiB);     /* XFS's minimum size is 300 MiB */
        cmd = g_strdup_printf("%s -q -m reflink=1 %s", mkfs, img);
        run_ok(cmd);
        g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
        g_free(cmd);
        cmd = g_strdup_printf("mount -o loop %s %s", img, mnt);
        g_assert_true(g_spawn_command_line_sync(cmd, NULL, &err, &status, NULL));
        if (!g_spawn_check_wait_status(status, NULL)) {
                g_autofree char *why = NULL;

                /* A container without loop devices: root, but no loop-control. */
                if (access("/dev/loop-control", W_OK) == 0)
                        g_error("%s failed: %s", cmd, err);
                why = g_strdup_printf("no loop devices here to mount an XFS (%s)", g_strstrip(err));
                g_test_skip(why);
                g_rmdir(mnt);
                g_unlink(img);
                return FALSE;
        }
        *ret_mnt = g_steal_pointer(&mnt);
        return TRUE;
}

static void xfs_umount(const char *mnt)
{
        g_autofree char *img = tmp_path("xfs.img"), *cmd = g_strdup_printf("umount %s", mnt);

        run_ok(cmd);
        g_rmdir(mnt);
        g_unlink(img);
}

/*
 * Source and destination on one XFS with reflink=1: data extents are
 * cloned (shared, no data moved), holes stay holes, progress reaches the
 * end and the cap still applies.
 */
static void test_reflink(void)
{
        g_autofree char *mnt = NULL, *src = NULL, *dst = NULL;
        struct agent_copy_options opts = { .bandwidth_limit = 16 * MiB };
        struct progress_rec prog = { .monotonic = TRUE };
        gint64 t0;

        if (!xfs_mount(&mnt))
                return;
        src = g_build_filename(mnt, "src.raw", NULL);
        dst = g_build_filename(mnt, "dst.raw", NULL);
        make_sparse_source(src);
        write_at(src, 30 * MiB, 12 * MiB, -1, 4);
        make_file(dst, 64 * MiB);
        t0 = g_get_monotonic_time();
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        /* 16 MiB of data at 16 MiB/s: the cap holds for cloned bytes too (less the last chunk and a burst). */
        g_assert_cmpint(g_get_monotonic_time() - t0, >=, 800 * 1000);
        assert_same(src, dst, 64 * MiB);
        g_assert_true(extent_shared(dst, 1 * MiB));
        g_assert_true(extent_shared(dst, 40 * MiB));
        g_assert_true(extent_shared(dst, 63 * MiB));
        g_assert_true(is_hole(dst, 3 * MiB, 17 * MiB));
        g_assert_true(prog.monotonic);
        g_assert_cmpuint(prog.last_done, ==, 64 * MiB);

        /* no_offload copies the bytes. */
        make_file(dst, 64 * MiB);
        opts = (struct agent_copy_options) { .no_offload = TRUE };
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, 64 * MiB);
        g_assert_false(extent_shared(dst, 1 * MiB));
        xfs_umount(mnt);
}

/*
 * A source whose size is not block-aligned, on a reflink XFS: the last
 * chunk's aligned part is cloned like the others and only its partial
 * block is copied, into a destination of the same size or a larger one
 * (where the kernel refuses to clone a partial block); a last chunk that
 * is nothing but the partial block is copied. Bytes identical, the
 * destination past the source zero, progress at the source's size.
 */
static void test_reflink_unaligned_tail(void)
{
        static const struct {
                uint64_t src_size, dst_size, shared_at;
        } cases[] = {
                { 20 * MiB + 3000, 20 * MiB + 3000, 20 * MiB - 4 * KiB },    /* last chunk: 4 MiB + 3000 */
                { 20 * MiB + 3000, 21 * MiB, 16 * MiB },                     /* the same, a larger destination */
                { 16 * MiB + 3000, 16 * MiB + 3000, 16 * MiB - 4 * KiB },    /* last chunk: 3000 bytes */
        };
        g_autofree char *mnt = NULL, *src = NULL, *dst = NULL;

        if (!xfs_mount(&mnt))
                return;
        src = g_build_filename(mnt, "src.raw", NULL);
        dst = g_build_filename(mnt, "dst.raw", NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                struct agent_copy_options opts = { .buffer_size = 8 * MiB };
                struct progress_rec prog = { .monotonic = TRUE };
                g_autofree char *contents = NULL;
                gsize len;

                make_file(src, cases[i].src_size);
                write_at(src, 0, cases[i].src_size, -1, 50 + (guint32) i);
                make_file(dst, cases[i].dst_size);
                write_at(dst, 0, cases[i].dst_size, 0x5a, 0);  /* stale bytes, tail block included */
                g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
                assert_same(src, dst, cases[i].src_size);
                g_assert_true(g_file_get_contents(dst, &contents, &len, NULL));
                g_assert_cmpuint(len, ==, cases[i].dst_size);
                for (gsize k = cases[i].src_size; k < len; k++)
                        g_assert_cmpint(contents[k], ==, 0);
                g_assert_true(extent_shared(dst, 0));
                g_assert_true(extent_shared(dst, cases[i].shared_at));
                g_assert_false(extent_shared(dst, ALIGN_DOWN(cases[i].src_size, 4 * KiB)));
                g_assert_cmpuint(prog.last_done, ==, cases[i].src_size);
                g_assert_true(prog.monotonic);
        }
        xfs_umount(mnt);
}

/*
 * The counters of an offloaded copy, on a reflink XFS. Cloned chunks
 * count as moved like copied ones (a job's bytes_done and the host's
 * copy rate come from the flow; the engine's ETA runs on bytes_done) and
 * progress reaches the source's size. Resumed, progress starts at the
 * kept prefix and only the rest is moved. Cancelled, it stops within a
 * few chunks: nothing past them is cloned.
 */
static void test_reflink_counters(void)
{
        g_autofree char *mnt = NULL, *src = NULL, *dst = NULL;
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        struct agent_rate_gov *gov = agent_rate_gov_new(0);
        struct agent_copy_options opts = { .buffer_size = 1 * MiB };
        struct progress_rec prog = { .monotonic = TRUE };
        uint64_t offloaded, copied, resumed;

        if (!xfs_mount(&mnt)) {
                agent_rate_gov_free(gov);
                return;
        }
        src = g_build_filename(mnt, "src.raw", NULL);
        dst = g_build_filename(mnt, "dst.raw", NULL);
        make_sparse_source(src);
        write_at(src, 30 * MiB, 12 * MiB, -1, 4);     /* data: [1M,3M) [20M,+12K) [30M,42M) [63M,64M) */

        /* Offloaded, then the same copied: the same bytes moved. */
        make_file(dst, 64 * MiB);
        opts.rate_flow = agent_rate_flow_join(gov);
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        offloaded = agent_rate_flow_moved(opts.rate_flow);
        agent_rate_flow_leave(opts.rate_flow);
        g_assert_true(extent_shared(dst, 40 * MiB));
        g_assert_cmpuint(prog.last_done, ==, 64 * MiB);
        g_assert_cmpuint(prog.last_total, ==, 64 * MiB);
        g_assert_true(prog.monotonic);
        g_assert_cmpint(g_unlink(dst), ==, 0);
        make_file(dst, 64 * MiB);
        opts.no_offload = TRUE;
        opts.rate_flow = agent_rate_flow_join(gov);
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, 0);
        copied = agent_rate_flow_moved(opts.rate_flow);
        agent_rate_flow_leave(opts.rate_flow);
        g_assert_false(extent_shared(dst, 40 * MiB));
        g_assert_cmpuint(offloaded, ==, copied);
        g_assert_cmpuint(offloaded, >=, 15 * MiB + 12 * KiB);

        /* Resumed at 32 MiB (the copy above left the prefix in place), offloaded: [32M,42M) and [63M,64M) move. */
        opts = (struct agent_copy_options) { .buffer_size = 1 * MiB, .start_offset = 32 * MiB,
                                             .rate_flow = agent_rate_flow_join(gov) };
        prog = (struct progress_rec) { .monotonic = TRUE };
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        resumed = agent_rate_flow_moved(opts.rate_flow);
        agent_rate_flow_leave(opts.rate_flow);
        g_assert_cmpuint(resumed, ==, 11 * MiB);
        g_assert_true(extent_shared(dst, 40 * MiB));
        g_assert_false(extent_shared(dst, 1 * MiB));
        g_assert_cmpuint(prog.first_done, ==, 32 * MiB);
        g_assert_cmpuint(prog.last_done, ==, 64 * MiB);
        g_assert_true(prog.monotonic);
        assert_same(src, dst, 64 * MiB);

        /* Cancelled after the first chunk of a source that is all data: within a few chunks, the rest never cloned. */
        write_at(src, 0, 64 * MiB, 0x33, 0);
        g_assert_cmpint(g_unlink(dst), ==, 0);
        make_file(dst, 64 * MiB);
        opts = (struct agent_copy_options) { .buffer_size = 1 * MiB };
        prog = (struct progress_rec) { .monotonic = TRUE, .cancel_after_first = cancel };
        g_assert_cmpint(copy_raw(src, dst, &opts, cancel, record_progress, &prog), ==, -ECANCELED);
        g_assert_true(extent_shared(dst, 0));
        g_assert_cmpuint(prog.last_done, <=, 8 * MiB);
        g_assert_true(is_hole(dst, 8 * MiB, 56 * MiB));
        agent_rate_gov_free(gov);
        xfs_umount(mnt);
}

/*
 * Short direct transfers on demand. The copier's thread pipeline calls
 * pread64/pwrite64 (the copy's code is linked into this binary, so these
 * definitions are the ones it gets): while armed, a direct transfer of
 * more than 8 KiB is done whole but reported 1000 bytes short, an
 * unaligned point, as a device or filesystem may stop. Counts the direct
 * transfers made after the last shortened one.
 */
static struct {
        gint reads, writes;                     /* still to shorten */
        gint reads_after, writes_after;         /* direct ones after all were shortened */
} shorten;
/*
 * Data transfers (> 8 KiB) made by threads other than the process's
 * first, the thread pipeline's; while cancel_offmain is set, such a read
 * cancels it first (a cancel arriving while the threads work).
 */
static gint offmain_reads, offmain_writes;
static GCancellable *cancel_offmain;

static gboolean fd_is_direct(int fd)
{
        int fl = fcntl(fd, F_GETFL);

        return fl >= 0 && (fl & O_DIRECT);
}

static void count_offmain(size_t n, gint *count)
{
        if (n <= 8192 || gettid() == getpid())
                return;
        g_atomic_int_inc(count);
        if (count == &offmain_reads && cancel_offmain)
                g_cancellable_cancel(cancel_offmain);
}

static ssize_t maybe_shorten(int fd, ssize_t n, gint *left, gint *after)
{
        if (n <= 8192 || !fd_is_direct(fd))
                return n;
        if (g_atomic_int_get(left) > 0 && g_atomic_int_add(left, -1) > 0)
                return n - 1000;
        g_atomic_int_inc(after);
        return n;
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
        static ssize_t (*real)(int, void *, size_t, off_t);

        if (!real)
                real = (ssize_t (*)(int, void *, size_t, off_t)) dlsym(RTLD_NEXT, "pread64");
        count_offmain(n, &offmain_reads);
        return maybe_shorten(fd, real(fd, buf, n, off), &shorten.reads, &shorten.reads_after);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
        static ssize_t (*real)(int, const void *, size_t, off_t);

        if (!real)
                real = (ssize_t (*)(int, const void *, size_t, off_t)) dlsym(RTLD_NEXT, "pwrite64");
        count_offmain(n, &offmain_writes);
        return maybe_shorten(fd, real(fd, buf, n, off), &shorten.writes, &shorten.writes_after);
}

/*
 * The thread pipeline given direct reads and writes that stop short at an
 * unaligned point: the remainders are finished through the page cache
 * (copy_finish_buffered, the ring pipeline's way too) and the copy keeps
 * its direct fds: identical data, progress exact, and direct transfers
 * still made after the short ones (a copy switched to buffered I/O for
 * good makes none).
 */
static void test_short_direct(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct agent_copy_options opts = { .io = AGENT_COPY_IO_THREADS, .buffer_size = 1 * MiB };
        struct progress_rec prog = { .monotonic = TRUE };

        make_file(src, 24 * MiB + 3000);
        write_at(src, 0, 24 * MiB + 3000, -1, 60);
        make_file(dst, 24 * MiB + 3000);
        write_at(dst, 0, 24 * MiB + 3000, 0x5a, 0);
        shorten.reads = shorten.writes = 3;
        shorten.reads_after = shorten.writes_after = 0;
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        if (g_atomic_int_get(&shorten.reads) == 3 && g_atomic_int_get(&shorten.writes) == 3) {
                shorten.reads = shorten.writes = 0;
                g_test_skip("no O_DIRECT in the test directory: no direct transfer to shorten");
                return;
        }
        g_assert_cmpint(g_atomic_int_get(&shorten.reads), <=, 0);
        g_assert_cmpint(g_atomic_int_get(&shorten.writes), <=, 0);
        shorten.reads = shorten.writes = 0;
        g_assert_cmpint(shorten.reads_after, >, 0);
        g_assert_cmpint(shorten.writes_after, >, 0);
        assert_same(src, dst, 24 * MiB + 3000);
        g_assert_cmpuint(prog.last_done, ==, 24 * MiB + 3000);
        g_assert_true(prog.monotonic);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

/*
 * The io_uring pipeline's completions on demand. copyring.c sets up its
 * ring with io_uring_queue_init and submits through io_uring_submit and
 * io_uring_submit_and_wait, liburing's, reached through these definitions
 * in this binary. Each submitting call notes the direct reads and writes
 * it submits; after it:
 * - while armed, a completed direct read or write of more than 8 KiB is
 *   reported 1000 bytes short (it was done whole), an unaligned point as
 *   a device may stop at; counts the direct ones submitted after the last
 *   shortened one. An armed ring defers the kernel's completion work to
 *   the calls that wait (IORING_SETUP_DEFER_TASKRUN), so every completion
 *   shows first right after one of these calls, where it can be
 *   shortened, rather than at any system call;
 * - a call that fails (the ring failing, see refuse_uring_enter) cancels
 *   fail_cancel when set.
 */
static struct {
        gboolean armed;
        gboolean no_defer;                      /* the kernel refused DEFER_TASKRUN (before Linux 6.1) */
        gint reads, writes;                     /* still to shorten */
        gint reads_after, writes_after;         /* direct ones submitted after all were shortened */
        GHashTable *direct;                     /* user_data → opcode of a direct read or write submitted */
        GCancellable *fail_cancel;
} ringhook;

static gboolean op_is_write(guint8 opcode)
{
        return opcode == IORING_OP_WRITE || opcode == IORING_OP_WRITE_FIXED;
}

static void ringhook_note_sqes(struct io_uring *ring)
{
        struct io_uring_sq *sq = &ring->sq;

        if (!ringhook.armed)
                return;
        for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
                const struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];

                if (sqe->opcode != IORING_OP_READ && sqe->opcode != IORING_OP_READ_FIXED &&
                    !op_is_write(sqe->opcode))
                        continue;
                if (!fd_is_direct(sqe->fd))
                        continue;
                g_hash_table_insert(ringhook.direct, GSIZE_TO_POINTER(sqe->user_data), GUINT_TO_POINTER(sqe->opcode));
                if (op_is_write(sqe->opcode) ? ringhook.writes <= 0 : ringhook.reads <= 0)
                        (void) (op_is_write(sqe->opcode) ? ringhook.writes_after++ : ringhook.reads_after++);
        }
}

static void ringhook_shorten_cqes(struct io_uring *ring)
{
        struct io_uring_cq *cq = &ring->cq;
        unsigned tail = io_uring_smp_load_acquire(cq->ktail);

        if (!ringhook.armed)
                return;
        for (unsigned i = *cq->khead; i != tail; i++) {
                struct io_uring_cqe *cqe = &cq->cqes[i & cq->ring_mask];
                gpointer opcode;
                gint *left;

                /* Each completion once: its op leaves the table (a resubmitted op comes back in). */
                if (!g_hash_table_steal_extended(ringhook.direct, GSIZE_TO_POINTER(cqe->user_data), NULL, &opcode))
                        continue;
                left = op_is_write((guint8) GPOINTER_TO_UINT(opcode)) ? &ringhook.writes : &ringhook.reads;
                if (cqe->res > 8192 && cqe->res % 4096 == 0 && *left > 0) {
                        cqe->res -= 1000;
                        --*left;
                }
        }
}

static int ringhook_after(struct io_uring *ring, int r)
{
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && ringhook.fail_cancel)
                g_cancellable_cancel(ringhook.fail_cancel);
        ringhook_shorten_cqes(ring);
        return r;
}

int io_uring_queue_init(unsigned entries, struct io_uring *ring, unsigned flags)
{
        static int (*real)(unsigned, struct io_uring *, unsigned);
        int r;

        if (!real)
                real = (int (*)(unsigned, struct io_uring *, unsigned)) dlsym(RTLD_NEXT, "io_uring_queue_init");
        if (!ringhook.armed)
                return real(entries, ring, flags);
        r = real(entries, ring, flags | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
        if (r == -EINVAL) {
                ringhook.no_defer = TRUE;
                r = real(entries, ring, flags);
        }
        return r;
}

int io_uring_submit(struct io_uring *ring)
{
        static int (*real)(struct io_uring *);

        if (!real)
                real = (int (*)(struct io_uring *)) dlsym(RTLD_NEXT, "io_uring_submit");
        ringhook_note_sqes(ring);
        return ringhook_after(ring, real(ring));
}

int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr)
{
        static int (*real)(struct io_uring *, unsigned);

        if (!real)
                real = (int (*)(struct io_uring *, unsigned)) dlsym(RTLD_NEXT, "io_uring_submit_and_wait");
        ringhook_note_sqes(ring);
        return ringhook_after(ring, real(ring, wait_nr));
}

/*
 * The io_uring pipeline given direct reads and writes that complete short
 * at an unaligned point, on a source whose size is not a multiple of the
 * alignment either: the remainders are finished through the page cache
 * (op_finish_buffered) and the copy keeps its direct fds (queued again,
 * direct, they would be refused with EINVAL and switch it to buffered I/O
 * for good): identical data, the destination's size kept, progress exact.
 */
static void test_ring_short_direct(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        const uint64_t size = 8 * MiB + 1000;
        struct agent_copy_options opts = { .io = AGENT_COPY_IO_URING, .buffer_size = 1 * MiB };
        struct progress_rec prog = { .monotonic = TRUE };
        int fd, r;

        if ((r = agent_copy_uring_probe()) < 0) {
                g_autofree char *why = g_strdup_printf("io_uring refused here: %s", g_strerror(-r));
                g_test_skip(why);
                return;
        }
        make_file(src, size);
        write_at(src, 0, size, -1, 61);
        make_file(dst, size);
        write_at(dst, 0, size, 0x5a, 0);
        fd = open(src, O_RDONLY | O_CLOEXEC | O_DIRECT);
        if (fd < 0) {
                g_test_skip("no O_DIRECT in the test directory: no direct transfer to shorten");
                return;
        }
        close(fd);
        ringhook.direct = g_hash_table_new(g_direct_hash, g_direct_equal);
        ringhook.reads = ringhook.writes = 3;
        ringhook.reads_after = ringhook.writes_after = 0;
        ringhook.no_defer = FALSE;
        ringhook.armed = TRUE;
        r = agent_copy_raw(src, dst, &opts, NULL, record_progress, &prog);
        ringhook.armed = FALSE;
        g_clear_pointer(&ringhook.direct, g_hash_table_unref);
        if (ringhook.no_defer) {
                /* Completions would show at any system call, most never seen by the hook. */
                g_test_skip("the kernel refuses IORING_SETUP_DEFER_TASKRUN (Linux < 6.1): cannot shorten completions");
                return;
        }
        g_assert_cmpint(r, ==, 0);
        /* The ring's own completions were shortened (the threads' would not be): the ring did the copy. */
        g_assert_cmpint(ringhook.reads, ==, 0);
        g_assert_cmpint(ringhook.writes, ==, 0);
        g_assert_cmpint(ringhook.reads_after, >, 0);
        g_assert_cmpint(ringhook.writes_after, >, 0);
        assert_same(src, dst, size);
        g_assert_cmpuint(file_size(dst), ==, size);
        g_assert_cmpuint(prog.last_done, ==, size);
        g_assert_cmpuint(prog.last_total, ==, size);
        g_assert_true(prog.monotonic);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

/* A preallocated destination stays allocated: source holes and zeros become allocated zeros. */
static void test_keep_allocation(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        g_autofree char *contents = NULL;
        struct agent_copy_options opts = { .keep_allocation = TRUE };
        gsize len;
        int fd;

        make_sparse_source(src);
        write_at(src, 1 * MiB + 512 * KiB, 256 * KiB, 0, 0);   /* zeros inside data */
        make_file(dst, 72 * MiB);                               /* larger than the source */
        fd = open(dst, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(posix_fallocate(fd, 0, 72 * MiB), ==, 0);
        close(fd);
        write_at(dst, 0, 72 * MiB, 0xFF, 0);                    /* stale data everywhere */

        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, 64 * MiB);
        g_assert_true(g_file_get_contents(dst, &contents, &len, NULL));
        g_assert_cmpuint(len, ==, 72 * MiB);
        for (gsize i = 64 * MiB; i < len; i++)
                g_assert_cmpint((guint8) contents[i], ==, 0);
        g_assert_cmpuint(allocated(dst), >=, 72 * MiB);
        g_assert_false(is_hole(dst, 0, 1 * MiB));
        g_assert_false(is_hole(dst, 1 * MiB + 512 * KiB, 256 * KiB));
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void test_destination_too_small(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");

        make_file(src, 4 * MiB);
        make_file(dst, 4 * MiB - 4096);
        g_assert_cmpint(copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, -EFBIG);
        g_assert_cmpuint(file_size(dst), ==, 4 * MiB - 4096);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void test_missing_files(void)
{
        g_autofree char *src = tmp_path("nope.raw"), *dst = tmp_path("dst.raw");

        make_file(dst, 4096);
        g_assert_cmpint(copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, -ENOENT);
        g_assert_cmpint(copy_raw(dst, src, NULL, NULL, NULL, NULL), ==, -ENOENT);
        cleanup_files((const char *[]) { "dst.raw", NULL });
}

static void test_cancel(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        g_autoptr(GCancellable) pre = g_cancellable_new();
        g_autoptr(GCancellable) mid = g_cancellable_new();
        struct agent_copy_options opts = { .buffer_size = 64 * KiB };
        struct progress_rec prog = { .monotonic = TRUE, .cancel_after_first = mid };

        make_file(src, 16 * MiB);
        write_at(src, 0, 16 * MiB, -1, 7);
        make_file(dst, 16 * MiB);

        g_cancellable_cancel(pre);
        g_assert_cmpint(copy_raw(src, dst, NULL, pre, NULL, NULL), ==, -ECANCELED);

        /* Cancelled after the first buffer: stops within a few buffers. */
        g_assert_cmpint(copy_raw(src, dst, &opts, mid, record_progress, &prog), ==, -ECANCELED);
        g_assert_cmpuint(prog.last_done, <, 16 * MiB);
        g_assert_cmpuint(prog.last_done, <=, 8 * 64 * KiB);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void test_progress_total(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct agent_copy_options opts = { .buffer_size = 1 * MiB };
        struct progress_rec prog = { .monotonic = TRUE };

        make_file(src, 10 * MiB + 4096 + 7);
        write_at(src, 0, 6 * MiB, -1, 8);
        make_file(dst, 11 * MiB);
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        g_assert_cmpuint(prog.calls, >=, 6);
        g_assert_cmpuint(prog.last_done, ==, 10 * MiB + 4096 + 7);
        g_assert_cmpuint(prog.last_total, ==, 10 * MiB + 4096 + 7);
        g_assert_true(prog.monotonic);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

/* A resume reports the kept prefix as done before it moves anything, and moves only the rest. */
static void test_resume_progress(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct agent_rate_gov *gov = agent_rate_gov_new(0);
        struct agent_copy_options opts = { .buffer_size = 1 * MiB, .start_offset = 4 * MiB,
                                           .rate_flow = agent_rate_flow_join(gov) };
        struct progress_rec prog = { .monotonic = TRUE };

        make_file(src, 10 * MiB);
        write_at(src, 0, 10 * MiB, -1, 9);
        make_file(dst, 10 * MiB);
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        g_assert_cmpuint(prog.first_done, ==, 4 * MiB);
        g_assert_cmpuint(prog.last_done, ==, 10 * MiB);
        g_assert_true(prog.monotonic);
        g_assert_cmpuint(agent_rate_flow_moved(opts.rate_flow), ==, 6 * MiB);
        agent_rate_flow_leave(opts.rate_flow);
        agent_rate_gov_free(gov);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void test_bandwidth_limit(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct agent_copy_options opts = { .buffer_size = 256 * KiB, .bandwidth_limit = 16 * MiB };
        gint64 start;
        double secs;

        make_file(src, 64 * MiB);
        write_at(src, 0, 4 * MiB, -1, 9);       /* only data counts against the limit */
        make_file(dst, 64 * MiB);
        start = g_get_monotonic_time();
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, 0);
        secs = (double) (g_get_monotonic_time() - start) / G_USEC_PER_SEC;
        g_assert_cmpfloat(secs, >=, 0.2);       /* 4 MiB at 16 MiB/s is 0.25 s */
        g_assert_cmpfloat(secs, <, 5.0);
        assert_same(src, dst, 64 * MiB);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

/*
 * A capped resumed copy: the cap holds for the bytes it moves, and the
 * kept prefix is neither charged to the flow (a job's bytes_moved) nor
 * waited for; progress starts at the prefix and ends at the source's size.
 */
static void test_resume_capped(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct agent_rate_gov *gov = agent_rate_gov_new(8 * MiB);
        struct agent_copy_options opts = { .buffer_size = 512 * KiB, .start_offset = 60 * MiB,
                                           .rate_flow = agent_rate_flow_join(gov) };
        struct progress_rec prog = { .monotonic = TRUE };
        gint64 start;
        double secs;

        make_file(src, 64 * MiB);
        write_at(src, 0, 60 * MiB, 0x11, 0);
        write_at(src, 60 * MiB, 4 * MiB, -1, 10);
        make_file(dst, 64 * MiB);
        write_at(dst, 0, 60 * MiB, 0x11, 0);   /* the prefix a resume trusts */
        start = g_get_monotonic_time();
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        secs = (double) (g_get_monotonic_time() - start) / G_USEC_PER_SEC;
        /* 4 MiB at 8 MiB/s is 0.5 s (less a 50 ms burst and the last chunk); the 60 MiB prefix charged would be 7.5 s more. */
        g_assert_cmpfloat(secs, >=, 0.35);
        g_assert_cmpfloat(secs, <, 4.0);
        g_assert_cmpuint(agent_rate_flow_moved(opts.rate_flow), ==, 4 * MiB);
        g_assert_cmpuint(prog.first_done, ==, 60 * MiB);
        g_assert_cmpuint(prog.last_done, ==, 64 * MiB);
        g_assert_true(prog.monotonic);
        assert_same(src, dst, 64 * MiB);
        agent_rate_flow_leave(opts.rate_flow);
        agent_rate_gov_free(gov);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

/* Review repro (rv16b): every checkpoint names a prefix the destination already holds, monotonic. */
struct ckpt_rec {
        const char *src, *dst;
        uint64_t last, calls;
        gboolean bad;
};

static void check_ckpt(uint64_t prefix, void *userdata)
{
        struct ckpt_rec *c = userdata;
        g_autofree char *a = g_malloc(prefix + 1), *b = g_malloc(prefix + 1);
        int fa = open(c->src, O_RDONLY | O_CLOEXEC), fb = open(c->dst, O_RDONLY | O_CLOEXEC);

        if (prefix <= c->last || pread(fa, a, prefix, 0) != (ssize_t) prefix ||
            pread(fb, b, prefix, 0) != (ssize_t) prefix || memcmp(a, b, prefix) != 0)
                c->bad = TRUE;
        c->last = prefix;
        c->calls++;
        close(fa);
        close(fb);
}

static void test_checkpoint_prefix(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct ckpt_rec c = { src, dst, 0, 0, FALSE };
        struct agent_copy_options opts = { .buffer_size = 256 * KiB, .checkpoint = check_ckpt,
                                           .checkpoint_data = &c, .checkpoint_interval_us = 1 };

        make_file(src, 24 * MiB);
        write_at(src, 0, 8 * MiB, -1, 21);
        write_at(src, 12 * MiB, 12 * MiB, -1, 22);
        make_file(dst, 24 * MiB);
        write_at(dst, 0, 24 * MiB, 0x5a, 0);     /* stale bytes: a prefix not yet written shows */
        g_assert_cmpint(copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, 0);
        g_assert_cmpuint(c.calls, >, 2);
        g_assert_false(c.bad);
        assert_same(src, dst, 24 * MiB);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

/* ---- rate governor (rategov.c) ---- */

#define SEC G_USEC_PER_SEC

/*
 * Replays saturated flows on an explicit clock: each flow takes `chunk`
 * whenever the governor lets it, from `from` to `to`; adds what each got.
 */
static void saturate(struct agent_rate_flow **flows, unsigned n, uint64_t chunk, gint64 from, gint64 to,
                     uint64_t *bytes)
{
        gint64 next[8];

        g_assert(n <= G_N_ELEMENTS(next));
        for (unsigned i = 0; i < n; i++)
                next[i] = from;
        for (;;) {
                unsigned i = 0;
                gint64 w;

                for (unsigned k = 1; k < n; k++)
                        if (next[k] < next[i])
                                i = k;
                if (next[i] >= to)
                        return;
                w = agent_rate_flow_take_at(flows[i], chunk, next[i]);
                if (w == 0)
                        bytes[i] += chunk;
                else
                        next[i] += w;
        }
}

static void assert_near(double got, double want, double tolerance)
{
        if (got < want - tolerance || got > want + tolerance)
                g_error("got %.0f, want %.0f ± %.0f", got, want, tolerance);
}

static void test_gov_fair_shares(void)
{
        const uint64_t cap = 100 * MiB, chunk = 1 * MiB;
        struct agent_rate_gov *gov = agent_rate_gov_new(cap);
        struct agent_rate_flow *f[3];
        uint64_t got[3] = { 0 };

        /* Alone: the whole cap. */
        f[0] = agent_rate_flow_join_at(gov, 0);
        g_assert_cmpuint(agent_rate_gov_share(gov), ==, cap);
        saturate(f, 1, chunk, 0, 1 * SEC, got);
        assert_near((double) got[0], (double) cap, 2.0 * chunk);

        /* Three flows for 2 s: a third each, the sum is the cap. */
        f[1] = agent_rate_flow_join_at(gov, 1 * SEC);
        f[2] = agent_rate_flow_join_at(gov, 1 * SEC);
        g_assert_cmpuint(agent_rate_gov_active(gov), ==, 3);
        g_assert_cmpuint(agent_rate_gov_share(gov), ==, cap / 3);
        memset(got, 0, sizeof(got));
        saturate(f, 3, chunk, 1 * SEC, 3 * SEC, got);
        for (unsigned i = 0; i < 3; i++)
                assert_near((double) got[i], 2.0 * cap / 3, 2.0 * chunk);
        assert_near((double) (got[0] + got[1] + got[2]), 2.0 * cap, 4.0 * chunk);

        /* One leaves: the other two get half each at once. */
        agent_rate_flow_leave_at(f[2], 3 * SEC);
        memset(got, 0, sizeof(got));
        saturate(f, 2, chunk, 3 * SEC, 4 * SEC, got);
        assert_near((double) got[0], cap / 2.0, 2.0 * chunk);
        assert_near((double) got[1], cap / 2.0, 2.0 * chunk);

        agent_rate_flow_leave_at(f[0], 4 * SEC);
        agent_rate_flow_leave_at(f[1], 4 * SEC);
        /* Everything taken is counted as moved, holes never reach the governor. */
        g_assert_cmpuint(agent_rate_gov_moved(gov) % chunk, ==, 0);
        assert_near((double) agent_rate_gov_moved(gov), 4.0 * cap, 8.0 * chunk);
        g_assert_cmpuint(agent_rate_gov_active(gov), ==, 0);
        agent_rate_gov_free(gov);
}

/* A flow that is slow or idle cannot save up more than a small burst. */
static void test_gov_no_saving(void)
{
        const uint64_t cap = 100 * MiB, chunk = 1 * MiB;
        struct agent_rate_gov *gov = agent_rate_gov_new(cap);
        struct agent_rate_flow *f = agent_rate_flow_join_at(gov, 0);
        unsigned immediate = 0;

        while (agent_rate_flow_take_at(f, chunk, 10 * SEC) == 0)
                immediate++;
        /* 50 ms of burst = 5 MiB, plus the chunk taken at zero credit. */
        g_assert_cmpuint(immediate, <=, 6);
        g_assert_cmpuint(immediate, >=, 1);
        agent_rate_flow_leave_at(f, 10 * SEC);
        agent_rate_gov_free(gov);
}

/* Bytes moved by a child (qemu-img) are charged afterwards; its debt follows the share. */
static void test_gov_charge_debt(void)
{
        const uint64_t cap = 100 * MiB;
        struct agent_rate_gov *gov = agent_rate_gov_new(cap);
        struct agent_rate_flow *f = agent_rate_flow_join_at(gov, 0), *g;

        g_assert_cmpint(agent_rate_flow_debt_at(f, 0), ==, 0);
        agent_rate_flow_charge_at(f, 50 * MiB, 0);
        assert_near((double) agent_rate_flow_debt_at(f, 0), 0.5 * SEC, 10);
        assert_near((double) agent_rate_flow_debt_at(f, SEC / 4), 0.25 * SEC, 10);
        /* A second flow halves the share: the 25 MiB left now take twice as long. */
        g = agent_rate_flow_join_at(gov, SEC / 4);
        assert_near((double) agent_rate_flow_debt_at(f, SEC / 4), 0.5 * SEC, 10);
        assert_near((double) agent_rate_flow_debt_at(f, SEC / 2), 0.25 * SEC, 10);
        agent_rate_flow_leave_at(g, SEC / 2);
        assert_near((double) agent_rate_flow_debt_at(f, SEC / 2), 0.125 * SEC, 10);
        g_assert_cmpint(agent_rate_flow_debt_at(f, SEC), ==, 0);
        agent_rate_flow_leave_at(f, SEC);
        agent_rate_gov_free(gov);
}

/* A reload changes the cap: a debt is paid at the new share from that moment on. */
static void test_gov_set_cap(void)
{
        struct agent_rate_gov *gov = agent_rate_gov_new(100 * MiB);
        struct agent_rate_flow *f = agent_rate_flow_join_at(gov, 0);

        agent_rate_flow_charge_at(f, 50 * MiB, 0);
        assert_near((double) agent_rate_flow_debt_at(f, 0), 0.5 * SEC, 10);
        /* After 0.25 s at 100 MiB/s, 25 MiB are left: at 50 MiB/s they take 0.5 s. */
        agent_rate_gov_set_cap_at(gov, 50 * MiB, SEC / 4);
        g_assert_cmpuint(agent_rate_gov_cap(gov), ==, 50 * MiB);
        g_assert_cmpuint(agent_rate_gov_share(gov), ==, 50 * MiB);
        assert_near((double) agent_rate_flow_debt_at(f, SEC / 4), 0.5 * SEC, 10);
        assert_near((double) agent_rate_flow_debt_at(f, SEC / 2), 0.25 * SEC, 10);
        /* Unlimited: no debt counts any more, everything is taken at once. */
        agent_rate_gov_set_cap_at(gov, 0, SEC / 2);
        g_assert_cmpint(agent_rate_flow_debt_at(f, SEC / 2), ==, 0);
        g_assert_cmpint(agent_rate_flow_take_at(f, 1024 * MiB, SEC / 2), ==, 0);
        agent_rate_flow_leave_at(f, SEC);
        agent_rate_gov_free(gov);
}

/* The rate-wait bound: what the cap needs for the larger of a request's reach and 1 % of the image, twice. */
static void test_gov_wait_bound(void)
{
        const uint64_t GiB = 1024 * MiB;

        assert_near((double) agent_rate_wait_bound_us(64 * MiB, 10 * GiB), 2.0 * 2 * GiB / (64 * MiB) * SEC, 10);
        /* A large image: its progress moves every 1 %, which bounds the wait instead. */
        assert_near((double) agent_rate_wait_bound_us(64 * MiB, 1000 * GiB), 2.0 * 10 * GiB / (64 * MiB) * SEC, 10);
        /* A high cap: never under the floor, whatever the image. */
        g_assert_cmpint(agent_rate_wait_bound_us(1024 * GiB, GiB), ==, AGENT_RATE_WAIT_MIN_US);
        assert_near((double) agent_rate_wait_bound_us(GiB, GiB), 4.0 * SEC, 10);
        /* Uncapped: a limiter never waits, nothing to bound; a tiny cap: long, but no overflow. */
        g_assert_cmpint(agent_rate_wait_bound_us(0, GiB), ==, G_MAXINT64);
        g_assert_cmpint(agent_rate_wait_bound_us(1, UINT64_MAX), >, 0);
}

/* The host's count of waiting flows moves on transitions only, and a flow that leaves waiting is uncounted. */
static void test_gov_waiting_count(void)
{
        struct agent_rate_gov *gov = agent_rate_gov_new(MiB);
        struct agent_rate_flow *f = agent_rate_flow_join(gov), *g = agent_rate_flow_join(gov);

        g_assert_cmpuint(agent_rate_gov_waiting(gov), ==, 0);
        agent_rate_flow_set_waiting(f, true);
        agent_rate_flow_set_waiting(f, true);
        agent_rate_flow_set_waiting(g, true);
        g_assert_cmpuint(agent_rate_gov_waiting(gov), ==, 2);
        agent_rate_flow_set_waiting(g, false);
        agent_rate_flow_set_waiting(g, false);
        g_assert_cmpuint(agent_rate_gov_waiting(gov), ==, 1);
        g_assert_true(agent_rate_flow_waiting(f));
        agent_rate_flow_leave(f);
        g_assert_cmpuint(agent_rate_gov_waiting(gov), ==, 0);
        g_assert_cmpuint(agent_rate_gov_wait_overruns(gov), ==, 0);
        agent_rate_flow_count_overrun(g);
        g_assert_cmpuint(agent_rate_gov_wait_overruns(gov), ==, 1);
        agent_rate_flow_leave(g);
        agent_rate_gov_free(gov);
}

static gpointer set_cap_later(gpointer data)
{
        g_usleep(100 * 1000);
        agent_rate_gov_set_cap(data, 0);
        return NULL;
}

/* A copy waiting at the old cap goes on at once when the cap is lifted. */
static void test_gov_set_cap_wakes(void)
{
        struct agent_rate_gov *gov = agent_rate_gov_new(1 * MiB);
        struct agent_rate_flow *f = agent_rate_flow_join(gov);
        gint64 start = g_get_monotonic_time();
        GThread *t;

        agent_rate_flow_charge(f, 100 * MiB);   /* 100 s of debt */
        t = g_thread_new("reload", set_cap_later, gov);
        g_assert_cmpint(agent_rate_flow_acquire(f, MiB, NULL), ==, 0);
        g_thread_join(t);
        g_assert_cmpint(g_get_monotonic_time() - start, <, 5 * SEC);
        agent_rate_flow_leave(f);
        agent_rate_gov_free(gov);
}

static void test_gov_unlimited(void)
{
        struct agent_rate_gov *gov = agent_rate_gov_new(0);
        struct agent_rate_flow *f = agent_rate_flow_join(gov);

        g_assert_cmpuint(agent_rate_gov_active(gov), ==, 1);
        g_assert_cmpuint(agent_rate_gov_share(gov), ==, 0);
        for (int i = 0; i < 100; i++)
                g_assert_cmpint(agent_rate_flow_take_at(f, 1024 * MiB, 0), ==, 0);
        agent_rate_flow_charge(f, 1024 * MiB);
        g_assert_cmpint(agent_rate_flow_debt_us(f), ==, 0);
        g_assert_cmpint(agent_rate_flow_acquire(f, 1024 * MiB, NULL), ==, 0);
        /* Still counted: copy_rate and bytes_copied of an uncapped host come from here. */
        g_assert_cmpuint(agent_rate_gov_moved(gov), ==, 102 * 1024 * MiB);
        agent_rate_flow_leave(f);
        agent_rate_gov_free(gov);
}

struct later {
        gint64 delay_us;
        GCancellable *cancel;
        struct agent_rate_flow *leave;
        struct agent_rate_flow *watch;  /* whether it waits, seen just before the cancel */
        struct agent_rate_gov *watch_gov;
        bool saw_waiting;
        unsigned saw_gov_waiting;
};

static gpointer do_later(gpointer data)
{
        struct later *l = data;

        g_usleep((gulong) l->delay_us);
        if (l->watch) {
                l->saw_waiting = agent_rate_flow_waiting(l->watch);
                l->saw_gov_waiting = agent_rate_gov_waiting(l->watch_gov);
        }
        if (l->cancel)
                g_cancellable_cancel(l->cancel);
        if (l->leave)
                agent_rate_flow_leave(l->leave);
        return NULL;
}

/*
 * A copy waiting for a long debt stops as soon as it is cancelled; while it
 * waits it is counted as waiting (rate_wait, not a stall), and no longer after.
 */
static void test_gov_cancel_prompt(void)
{
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        struct agent_rate_gov *gov = agent_rate_gov_new(1 * MiB);
        struct agent_rate_flow *f = agent_rate_flow_join(gov);
        struct later l = { .delay_us = 100 * 1000, .cancel = cancel, .watch = f, .watch_gov = gov };
        gint64 start = g_get_monotonic_time();
        GThread *t;

        agent_rate_flow_charge(f, 100 * MiB);   /* 100 s of debt */
        t = g_thread_new("cancel", do_later, &l);
        g_assert_cmpint(agent_rate_flow_acquire(f, MiB, cancel), ==, -ECANCELED);
        g_thread_join(t);
        g_assert_cmpint(g_get_monotonic_time() - start, <, 1 * SEC);
        g_assert_true(l.saw_waiting);
        g_assert_cmpuint(l.saw_gov_waiting, ==, 1);
        g_assert_false(agent_rate_flow_waiting(f));
        g_assert_cmpuint(agent_rate_gov_waiting(gov), ==, 0);
        /* Already cancelled: refused at once. */
        g_assert_cmpint(agent_rate_flow_acquire(f, MiB, cancel), ==, -ECANCELED);
        agent_rate_flow_leave(f);
        agent_rate_gov_free(gov);
}

/* When a copy ends, one that waits gets the larger share at once, not after its old wait. */
static void test_gov_wake_on_leave(void)
{
        struct agent_rate_gov *gov = agent_rate_gov_new(10 * MiB);
        struct agent_rate_flow *f = agent_rate_flow_join(gov), *g = agent_rate_flow_join(gov);
        struct later l = { .delay_us = 200 * 1000, .leave = g };
        gint64 start = g_get_monotonic_time();
        double secs;
        GThread *t;

        /* 5 MiB of debt at 5 MiB/s: 1 s; after 0.2 s the share doubles, 4 MiB left take 0.4 s. */
        agent_rate_flow_charge(f, 5 * MiB);
        t = g_thread_new("leave", do_later, &l);
        g_assert_cmpint(agent_rate_flow_acquire(f, MiB, NULL), ==, 0);
        secs = (double) (g_get_monotonic_time() - start) / SEC;
        g_thread_join(t);
        g_assert_cmpfloat(secs, >, 0.5);
        g_assert_cmpfloat(secs, <, 0.85);
        agent_rate_flow_leave(f);
        agent_rate_gov_free(gov);
}

struct shared_copy {
        const char *src, *dst;
        struct agent_rate_flow *flow;
        gint64 start, end;
        int r;
};

static gpointer shared_copy_run(gpointer data)
{
        struct shared_copy *c = data;
        struct agent_copy_options opts = { .rate_flow = c->flow };

        c->r = copy_raw(c->src, c->dst, &opts, NULL, NULL, NULL);
        c->end = g_get_monotonic_time();
        return NULL;
}

/* Two real copies on one governor: the cap holds in sum and they finish together. */
static void test_gov_two_copies(void)
{
        const char *names[] = { "s0.raw", "d0.raw", "s1.raw", "d1.raw", NULL };
        g_autofree char *s0 = tmp_path(names[0]), *d0 = tmp_path(names[1]);
        g_autofree char *s1 = tmp_path(names[2]), *d1 = tmp_path(names[3]);
        struct agent_rate_gov *gov = agent_rate_gov_new(32 * MiB);
        struct shared_copy c[2] = { { s0, d0 }, { s1, d1 } };
        GThread *t[2];
        gint64 start;
        double total, spread;

        for (int i = 0; i < 2; i++) {
                make_file(c[i].src, 24 * MiB);
                write_at(c[i].src, 0, 16 * MiB, -1, 20 + i);   /* 16 MiB of data, a hole after it */
                make_file(c[i].dst, 24 * MiB);
        }
        start = g_get_monotonic_time();
        for (int i = 0; i < 2; i++) {
                c[i].flow = agent_rate_flow_join(gov);
                t[i] = g_thread_new("copy", shared_copy_run, &c[i]);
        }
        for (int i = 0; i < 2; i++) {
                g_thread_join(t[i]);
                g_assert_cmpint(c[i].r, ==, 0);
                agent_rate_flow_leave(c[i].flow);
                assert_same(c[i].src, c[i].dst, 24 * MiB);
        }
        /* 32 MiB of data at 32 MiB/s in sum: 1 s, minus the chunks started on credit. */
        total = (double) (MAX(c[0].end, c[1].end) - start) / SEC;
        spread = (double) ABS(c[0].end - c[1].end) / SEC;
        g_assert_cmpfloat(total, >, 0.8);
        g_assert_cmpfloat(total, <, 1.3);
        g_assert_cmpfloat(spread, <, 0.25);     /* equal shares: neither finished long before the other */
        agent_rate_gov_free(gov);
        cleanup_files(names);
}

/* ---- qemu-img ---- */

static gboolean have_qemu_img(void)
{
        g_autofree char *p = g_find_program_in_path(FERRY_QEMU_IMG);

        if (!p)
                g_test_skip(FERRY_QEMU_IMG " not found");
        return p != NULL;
}

/* qemu-img compare exits 0 when the guest-visible contents are identical. */
static void assert_images_equal(const char *a, const char *a_fmt, const char *b, const char *b_fmt)
{
        const char *argv[] = { FERRY_QEMU_IMG, "compare", "-q", "-f", a_fmt, "-F", b_fmt, a, b, NULL };
        int status = -1;

        g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                                   NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));
}

static void test_qemu_chain(void)
{
        g_autofree char *raw = tmp_path("data.raw"), *base = tmp_path("base.qcow2");
        g_autofree char *child = tmp_path("child.qcow2"), *target = tmp_path("target.qcow2");
        g_autofree char *fmt = NULL, *backing = NULL;
        g_autoptr(GError) error = NULL;
        struct progress_rec prog = { .monotonic = TRUE };
        uint64_t vsize = 0, asize = 0;

        if (!have_qemu_img())
                return;
        make_file(raw, 32 * MiB);
        write_at(raw, 0, 2 * MiB, -1, 10);
        write_at(raw, 16 * MiB, 1 * MiB, -1, 11);

        /* base: raw → qcow2 into a pre-created image */
        g_assert_cmpint(agent_qemu_img_create_qcow2(base, 32 * MiB, FALSE, NULL, NULL, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(agent_qemu_img_convert(raw, "raw", base, "qcow2", NULL, NULL, 0, NULL,
                                               record_progress, &prog, &error), ==, 0);
        g_assert_no_error(error);
        assert_images_equal(raw, "raw", base, "qcow2");
        g_assert_cmpuint(prog.calls, >=, 1);
        g_assert_cmpuint(prog.last_done, ==, 32 * MiB);
        g_assert_cmpuint(prog.last_total, ==, 32 * MiB);
        g_assert_true(prog.monotonic);

        /* child on top of base, then info */
        g_assert_cmpint(agent_qemu_img_create_qcow2(child, 32 * MiB, FALSE, base, "qcow2", &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(agent_qemu_img_info(child, "qcow2", &fmt, &vsize, &asize, &backing, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(fmt, ==, "qcow2");
        g_assert_cmpuint(vsize, ==, 32 * MiB);
        g_assert_cmpuint(asize, >, 0);
        g_assert_cmpstr(backing, ==, base);
        g_clear_pointer(&fmt, g_free);
        g_clear_pointer(&backing, g_free);
        g_assert_cmpint(agent_qemu_img_info(base, "qcow2", &fmt, NULL, NULL, &backing, &error), ==, 0);
        g_assert_cmpstr(fmt, ==, "qcow2");
        g_assert_null(backing);

        /* qcow2 → qcow2 with -B into a pre-created target sharing the base;
         * preallocation is dropped for an image with a backing file. */
        g_assert_cmpint(agent_qemu_img_create_qcow2(target, 32 * MiB, TRUE, base, "qcow2", &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(agent_qemu_img_convert(child, "qcow2", target, "qcow2", base, "qcow2", 0,
                                               NULL, NULL, NULL, &error), ==, 0);
        g_assert_no_error(error);
        assert_images_equal(child, "qcow2", target, "qcow2");
        assert_images_equal(raw, "raw", target, "qcow2");
        cleanup_files((const char *[]) { "data.raw", "base.qcow2", "child.qcow2", "target.qcow2", NULL });
}

static void test_qemu_errors(void)
{
        g_autofree char *missing = tmp_path("missing.qcow2"), *dst = tmp_path("dst.qcow2");
        g_autoptr(GError) error = NULL;

        if (!have_qemu_img())
                return;
        /* preallocated qcow2 */
        g_assert_cmpint(agent_qemu_img_create_qcow2(dst, 1 * MiB, TRUE, NULL, NULL, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(agent_qemu_img_convert(missing, "qcow2", dst, "qcow2", NULL, NULL, 0, NULL,
                                               NULL, NULL, &error), <, 0);
        g_assert_error(error, FY_ERROR, FY_ERR_COPY);
        g_assert_nonnull(strstr(error->message, "missing.qcow2"));
        g_assert_cmpuint(strlen(error->message), <, 1200);
        g_clear_error(&error);

        g_assert_cmpint(agent_qemu_img_info(missing, "qcow2", NULL, NULL, NULL, NULL, &error), <, 0);
        g_assert_nonnull(error);
        g_clear_error(&error);

        g_assert_cmpint(agent_qemu_img_convert(dst, "vmdk", dst, "qcow2", NULL, NULL, 0, NULL,
                                               NULL, NULL, &error), ==, -EINVAL);
        g_clear_error(&error);
        cleanup_files((const char *[]) { "dst.qcow2", NULL });
}

/*
 * A raw volume's content is the guest's: a guest can write a qcow2 header
 * into it. Its format must never be probed (CVE-2024-4467 class): the
 * progress scale is the raw file's size, not the virtual size the forged
 * header claims.
 */
static void test_qemu_raw_never_probed(void)
{
        g_autofree char *forged = tmp_path("forged.qcow2"), *dst = tmp_path("dst.qcow2");
        g_autoptr(GError) error = NULL;
        g_autofree char *fmt = NULL;
        struct progress_rec prog = { .monotonic = TRUE };
        uint64_t vsize = 0;

        if (!have_qemu_img())
                return;
        /* A "raw" disk whose first bytes are a qcow2 header claiming 1 GiB. */
        g_assert_cmpint(agent_qemu_img_create_qcow2(forged, 1024 * MiB, FALSE, NULL, NULL, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(truncate(forged, 4 * MiB), ==, 0);

        g_assert_cmpint(agent_qemu_img_info(forged, "raw", &fmt, &vsize, NULL, NULL, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpstr(fmt, ==, "raw");
        g_assert_cmpuint(vsize, ==, 4 * MiB);

        g_assert_cmpint(agent_qemu_img_create_qcow2(dst, 4 * MiB, FALSE, NULL, NULL, &error), ==, 0);
        g_assert_cmpint(agent_qemu_img_convert(forged, "raw", dst, "qcow2", NULL, NULL, 0, NULL,
                                               record_progress, &prog, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpuint(prog.last_total, ==, 4 * MiB);
        assert_images_equal(forged, "raw", dst, "qcow2");

        /* No format, no probe: refused. */
        g_assert_cmpint(agent_qemu_img_info(forged, NULL, NULL, NULL, NULL, NULL, &error), ==, -EINVAL);
        g_clear_error(&error);
        cleanup_files((const char *[]) { "forged.qcow2", "dst.qcow2", NULL });
}

static gpointer cancel_later(gpointer data)
{
        g_usleep(300 * 1000);
        g_cancellable_cancel(data);
        return NULL;
}

static void test_qemu_cancel(void)
{
        g_autofree char *src = tmp_path("big.raw"), *dst = tmp_path("big.qcow2");
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        g_autoptr(GError) error = NULL;
        struct progress_rec prog = { .monotonic = TRUE };
        GThread *t;
        gint64 start;
        double secs;

        if (!have_qemu_img())
                return;
        /* 256 MiB of incompressible data (a 4 MiB random block repeated). */
        make_file(src, 256 * MiB);
        for (int i = 0; i < 64; i++)
                write_at(src, (uint64_t) i * 4 * MiB, 4 * MiB, -1, 12);
        g_assert_cmpint(agent_qemu_img_create_qcow2(dst, 256 * MiB, FALSE, NULL, NULL, &error), ==, 0);

        /* Rate-limited to make sure the copy is still running when cancelled. */
        start = g_get_monotonic_time();
        t = g_thread_new("cancel", cancel_later, cancel);
        g_assert_cmpint(agent_qemu_img_convert(src, "raw", dst, "qcow2", NULL, NULL, 64 * MiB, cancel,
                                               record_progress, &prog, &error), ==, -ECANCELED);
        g_thread_join(t);
        secs = (double) (g_get_monotonic_time() - start) / G_USEC_PER_SEC;
        g_assert_error(error, FY_ERROR, FY_ERR_ABORTED);
        g_assert_cmpfloat(secs, <, 1.5);
        g_assert_cmpuint(prog.last_done, <, 256 * MiB);
        cleanup_files((const char *[]) { "big.raw", "big.qcow2", NULL });
}

/* Stops the convert under a debt of 10 s, then lifts the cap (a reload to 0); cancels it if it does not end. */
struct uncap {
        struct agent_rate_gov *gov;
        struct agent_rate_flow *flow;
        GCancellable *cancel;
        gint done;
        bool was_paused;
};

static gpointer uncap_later(gpointer data)
{
        struct uncap *u = data;
        gint64 deadline = g_get_monotonic_time() + 10 * SEC;

        while (agent_rate_flow_moved(u->flow) < 4 * MiB && g_get_monotonic_time() < deadline)
                g_usleep(5 * 1000);
        agent_rate_flow_charge(u->flow, 320 * MiB);    /* 10 s of the 32 MiB/s cap */
        while (!agent_rate_flow_waiting(u->flow) && g_get_monotonic_time() < deadline)
                g_usleep(5 * 1000);
        g_usleep(200 * 1000);          /* several ticks: stopped for good, not between two */
        u->was_paused = agent_rate_flow_waiting(u->flow);
        agent_rate_gov_set_cap(u->gov, 0);
        deadline = g_get_monotonic_time() + 10 * SEC;
        while (!g_atomic_int_get(&u->done) && g_get_monotonic_time() < deadline)
                g_usleep(10 * 1000);
        if (!g_atomic_int_get(&u->done))
                g_cancellable_cancel(u->cancel);       /* still stopped: fail the test, not hang it */
        return NULL;
}

/* A child the governor stopped goes on when the cap is lifted while it is stopped (SIGHUP to 0). */
static void test_qemu_uncapped_while_paused(void)
{
        g_autofree char *src = tmp_path("uncap.raw"), *dst = tmp_path("uncap.qcow2");
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        g_autoptr(GError) error = NULL;
        struct agent_rate_gov *gov = agent_rate_gov_new(32 * MiB);
        struct uncap u = { .gov = gov, .flow = agent_rate_flow_join(gov), .cancel = cancel };
        GThread *t;
        int r;

        if (!have_qemu_img()) {
                agent_rate_flow_leave(u.flow);
                agent_rate_gov_free(gov);
                return;
        }
        make_file(src, 48 * MiB);
        for (int i = 0; i < 12; i++)
                write_at(src, (uint64_t) i * 4 * MiB, 4 * MiB, -1, 50 + i);
        g_assert_cmpint(agent_qemu_img_create_qcow2(dst, 48 * MiB, FALSE, NULL, NULL, &error), ==, 0);
        t = g_thread_new("uncap", uncap_later, &u);
        r = agent_qemu_img_convert_shared(src, "raw", dst, "qcow2", NULL, NULL, 0, u.flow, cancel, NULL, NULL, &error);
        g_atomic_int_set(&u.done, 1);
        g_thread_join(t);
        g_assert_true(u.was_paused);
        g_assert_no_error(error);
        g_assert_cmpint(r, ==, 0);
        g_assert_false(agent_rate_flow_waiting(u.flow));
        assert_images_equal(src, "raw", dst, "qcow2");
        agent_rate_flow_leave(u.flow);
        agent_rate_gov_free(gov);
        cleanup_files((const char *[]) { "uncap.raw", "uncap.qcow2", NULL });
}

/* Watches a convert's flow: when it first waits, when it stops waiting; then cancels the convert. */
struct hang_watch {
        struct agent_rate_flow *flow;
        GCancellable *cancel;
        gint64 start, waiting_at, judged_at;
};

static gpointer watch_hang(gpointer data)
{
        struct hang_watch *w = data;
        gint64 deadline = w->start + 10 * SEC;

        while (!agent_rate_flow_waiting(w->flow) && g_get_monotonic_time() < deadline)
                g_usleep(10 * 1000);
        w->waiting_at = g_get_monotonic_time();
        while (agent_rate_flow_waiting(w->flow) && g_get_monotonic_time() < deadline)
                g_usleep(10 * 1000);
        w->judged_at = g_get_monotonic_time();
        g_cancellable_cancel(w->cancel);
        return NULL;
}

/*
 * A capped qemu-img hung in an interruptible sleep (its source a FIFO that
 * no one writes: open() sleeps in S, as a read from a network file system
 * that stopped answering does) looks like a wait in its limiter. It is
 * reported waiting only for agent_rate_wait_bound_us (2 s here: the floor,
 * at a huge cap), then counted as an overrun and no longer waiting, so the
 * engine judges it; a cancel still kills it.
 */
static void test_qemu_hung_asleep(void)
{
        g_autofree char *src = tmp_path("hang.fifo"), *dst = tmp_path("hang.qcow2");
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        g_autoptr(GError) error = NULL;
        struct agent_rate_gov *gov = agent_rate_gov_new(1024 * 1024 * MiB);
        struct hang_watch w = { .flow = agent_rate_flow_join(gov), .cancel = cancel };
        GThread *t;

        if (!have_qemu_img()) {
                agent_rate_flow_leave(w.flow);
                agent_rate_gov_free(gov);
                return;
        }
        (void) unlink(src);
        g_assert_cmpint(mkfifo(src, 0600), ==, 0);
        g_assert_cmpint(agent_qemu_img_create_qcow2(dst, 16 * MiB, FALSE, NULL, NULL, &error), ==, 0);
        g_test_expect_message(NULL, G_LOG_LEVEL_WARNING, "*longer than its rate limiter explains*");
        w.start = g_get_monotonic_time();
        t = g_thread_new("watch", watch_hang, &w);
        g_assert_cmpint(agent_qemu_img_convert_shared(src, "raw", dst, "qcow2", NULL, NULL, 0, w.flow, cancel,
                                                      NULL, NULL, &error), ==, -ECANCELED);
        g_thread_join(t);
        g_test_assert_expected_messages();
        /* Waiting within a few ticks of its start; no longer once the 2 s bound passed (with a loaded machine's slack). */
        g_assert_cmpint(w.waiting_at - w.start, <, 1 * SEC);
        g_assert_cmpint(w.judged_at - w.waiting_at, >=, AGENT_RATE_WAIT_MIN_US - SEC / 10);
        g_assert_cmpint(w.judged_at - w.waiting_at, <, AGENT_RATE_WAIT_MIN_US + 2 * SEC);
        g_assert_cmpuint(agent_rate_gov_wait_overruns(gov), ==, 1);
        g_assert_cmpuint(agent_rate_gov_waiting(gov), ==, 0);
        agent_rate_flow_leave(w.flow);
        agent_rate_gov_free(gov);
        cleanup_files((const char *[]) { "hang.fifo", "hang.qcow2", NULL });
}

/*
 * qemu-img under the governor: another flow holds half the cap, so the
 * child (-r at the whole cap) is paused to its half; and a cancel while it
 * is paused still ends it at once.
 */
static void test_qemu_shared(void)
{
        g_autofree char *src = tmp_path("shared.raw"), *dst = tmp_path("shared.qcow2");
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        g_autoptr(GError) error = NULL;
        struct agent_rate_gov *gov = agent_rate_gov_new(32 * MiB);
        struct agent_rate_flow *mine = agent_rate_flow_join(gov), *other = agent_rate_flow_join(gov);
        struct later l = { .delay_us = 1500 * 1000, .cancel = cancel };
        gint64 start;
        double secs;
        GThread *t;

        if (!have_qemu_img()) {
                agent_rate_flow_leave(mine);
                agent_rate_flow_leave(other);
                agent_rate_gov_free(gov);
                return;
        }
        make_file(src, 48 * MiB);
        for (int i = 0; i < 12; i++)
                write_at(src, (uint64_t) i * 4 * MiB, 4 * MiB, -1, 30 + i);
        g_assert_cmpint(agent_qemu_img_create_qcow2(dst, 48 * MiB, FALSE, NULL, NULL, &error), ==, 0);

        /* 48 MiB at 16 MiB/s, less the lead qemu's own limiter may run ahead
         * (150 ms of the cap + 2 MiB = 6.8 MiB): ~2.6 s. Alone at -r 32M it would take 1.5 s. */
        start = g_get_monotonic_time();
        g_assert_cmpint(agent_qemu_img_convert_shared(src, "raw", dst, "qcow2", NULL, NULL, 0, mine, NULL,
                                                      NULL, NULL, &error), ==, 0);
        secs = (double) (g_get_monotonic_time() - start) / SEC;
        /*
         * The lower bound is the point (paused to its share); the upper one
         * only catches a pause never lifted, so it is wide: the unit tests
         * share 2 cores with each other and the flow tests (7.1 s was seen
         * under a load average of 30).
         */
        g_assert_cmpfloat(secs, >, 2.1);
        g_assert_cmpfloat(secs, <, 10.0);
        assert_images_equal(src, "raw", dst, "qcow2");

        /*
         * Cancelled after 1.5 s, by then paused more than once: ends promptly.
         * At an 8 MiB/s cap (4 MiB/s its share) the copy alone would need 10 s
         * more, so "promptly" (under 3 s from the start of the cancel's wait)
         * tells a cancel that works from one that waits for the copy, whatever
         * the machine's load.
         */
        agent_rate_flow_leave(mine);
        agent_rate_flow_leave(other);
        agent_rate_gov_free(gov);
        gov = agent_rate_gov_new(8 * MiB);
        mine = agent_rate_flow_join(gov);
        other = agent_rate_flow_join(gov);
        start = g_get_monotonic_time();
        t = g_thread_new("cancel", do_later, &l);
        g_assert_cmpint(agent_qemu_img_convert_shared(src, "raw", dst, "qcow2", NULL, NULL, 0, mine, cancel,
                                                      NULL, NULL, &error), ==, -ECANCELED);
        g_thread_join(t);
        g_assert_cmpfloat((double) (g_get_monotonic_time() - start) / SEC, <, 1.5 + 3.0);
        agent_rate_flow_leave(mine);
        agent_rate_flow_leave(other);
        agent_rate_gov_free(gov);
        cleanup_files((const char *[]) { "shared.raw", "shared.qcow2", NULL });
}

/* The caller's progress scale (the volume's capacity) is used as given; without one, qemu-img info's. */
static void test_qemu_progress_scale(void)
{
        g_autofree char *raw = tmp_path("scale.raw"), *src = tmp_path("scale.qcow2"), *dst = tmp_path("scale-dst.qcow2");
        g_autoptr(GError) error = NULL;
        struct progress_rec given = { .monotonic = TRUE }, found = { .monotonic = TRUE };
        struct agent_rate_gov *gov = agent_rate_gov_new(0);
        struct agent_rate_flow *flow = agent_rate_flow_join(gov);

        if (!have_qemu_img()) {
                agent_rate_flow_leave(flow);
                agent_rate_gov_free(gov);
                return;
        }
        make_file(raw, 4 * MiB);
        write_at(raw, 0, 1 * MiB, -1, 40);
        g_assert_cmpint(agent_qemu_img_create_qcow2(src, 4 * MiB, FALSE, NULL, NULL, &error), ==, 0);
        g_assert_cmpint(agent_qemu_img_convert(raw, "raw", src, "qcow2", NULL, NULL, 0, NULL, NULL, NULL, &error), ==, 0);
        g_assert_cmpint(agent_qemu_img_create_qcow2(dst, 4 * MiB, FALSE, NULL, NULL, &error), ==, 0);
        g_assert_no_error(error);

        g_assert_cmpint(agent_qemu_img_convert_shared(src, "qcow2", dst, "qcow2", NULL, NULL, 8 * MiB, flow, NULL,
                                                      record_progress, &given, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpuint(given.last_total, ==, 8 * MiB);
        g_assert_cmpuint(given.last_done, ==, 8 * MiB);
        g_assert_cmpint(agent_qemu_img_convert_shared(src, "qcow2", dst, "qcow2", NULL, NULL, 0, flow, NULL,
                                                      record_progress, &found, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpuint(found.last_total, ==, 4 * MiB);
        assert_images_equal(raw, "raw", dst, "qcow2");
        agent_rate_flow_leave(flow);
        agent_rate_gov_free(gov);
        cleanup_files((const char *[]) { "scale.raw", "scale.qcow2", "scale-dst.qcow2", NULL });
}

/*
 * Where the kernel refuses io_uring (here: a seccomp filter, as a
 * container's may be), the copy runs on threads; forcing io_uring fails
 * with the kernel's error instead.
 */
static void test_uring_refused(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct sock_filter filter[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = G_N_ELEMENTS(filter), .filter = filter };
        struct agent_copy_options opts = { .io = AGENT_COPY_IO_URING };

        if (!g_test_subprocess()) {
                /* The filter lasts for the process: only a child may have it. */
                g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
                g_test_trap_assert_passed();
                return;
        }
        g_assert_cmpint(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), ==, 0);
        g_assert_cmpint(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), ==, 0);
        g_assert_cmpint(agent_copy_uring_probe(), ==, -ENOSYS);

        make_sparse_source(src);
        make_file(dst, 64 * MiB);
        g_assert_cmpint(agent_copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, 64 * MiB);
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, -ENOSYS);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

/*
 * Makes io_uring_enter fail with EPERM in the calling thread from now on:
 * every call, or (waiting_only) the calls that wait for completions
 * (IORING_ENTER_GETEVENTS), so submitting and cancelling still work.
 */
static void refuse_uring_enter(gboolean waiting_only)
{
        struct sock_filter all[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_filter waiting[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 0, 3),
                /* flags, the 4th argument (its low word: x86-64 is little endian) */
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[3])),
                BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, IORING_ENTER_GETEVENTS, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = waiting_only ? (struct sock_fprog) { .len = G_N_ELEMENTS(waiting), .filter = waiting }
                                              : (struct sock_fprog) { .len = G_N_ELEMENTS(all), .filter = all };

        g_assert_cmpint(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), ==, 0);
        g_assert_cmpint(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), ==, 0);
}

/*
 * A test that refuses io_uring_enter runs its body in a child (a seccomp
 * filter lasts for the process): TRUE there; in the parent, runs the
 * child and checks it passed, or skips where there is no io_uring to fail.
 */
static gboolean uring_child(void)
{
        if (g_test_subprocess())
                return TRUE;
        if (agent_copy_uring_probe() < 0) {
                g_test_skip("io_uring refused here: no ring to fail");
                return FALSE;
        }
        g_test_trap_subprocess(NULL, 30 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        return FALSE;
}

/* Review repro (rv16b): io_uring_enter refused from the start fails a forced-io_uring copy, not hang or crash; AUTO goes on on threads. */
static void test_uring_enter_fails(void)
{
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        struct agent_copy_options opts = { .io = AGENT_COPY_IO_URING, .buffer_size = 1 * MiB };
        struct progress_rec prog = { .monotonic = TRUE };

        if (!uring_child())
                return;
        make_file(src, 16 * MiB);
        write_at(src, 0, 16 * MiB, -1, 5);
        make_file(dst, 16 * MiB);
        refuse_uring_enter(FALSE);
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, -EPERM);
        opts.io = AGENT_COPY_IO_AUTO;
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        assert_same(src, dst, 16 * MiB);
        g_assert_true(prog.monotonic);
        g_assert_cmpuint(prog.last_done, ==, 16 * MiB);
}

/*
 * The ring fails in the middle of a copy, with reads and writes in
 * flight: the progress callback (the copying thread) refuses
 * io_uring_enter after a few chunks. Forced io_uring, the copy fails;
 * AUTO, the ring's requests are settled and its unfinished chunks done
 * again on threads: identical data, progress counted once and monotonic,
 * every checkpoint a prefix the destination holds. ASan/LSan builds
 * check that no request, buffer or registration is leaked. A copy
 * cancelled as the ring fails settles the ring and ends, cancelled,
 * doing nothing again on threads; one cancelled while the threads redo
 * its chunks writes none of them.
 */
struct midcopy {
        struct progress_rec prog;
        struct ckpt_rec ckpt;
        unsigned fail_at;
        gboolean waiting_only;
};

static void midcopy_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct midcopy *m = userdata;

        record_progress(done, total, &m->prog);
        if (m->prog.calls == m->fail_at)
                refuse_uring_enter(m->waiting_only);
}

enum midcopy_cancel {
        NO_CANCEL,
        CANCEL_AT_FAILURE,      /* by the io_uring_enter that fails (ringhook), before the ring is settled */
        CANCEL_DURING_REDO,     /* by the first read of a thread doing a lost chunk again */
};

struct midcopy_case {
        gboolean waiting_only;  /* only the waiting io_uring_enter fails: submitting and cancelling work */
        gboolean forced;        /* AGENT_COPY_IO_URING: the copy fails instead of going on on threads */
        enum midcopy_cancel cancel;
};

static void test_uring_fails_midcopy(gconstpointer data)
{
        const struct midcopy_case *c = data;
        g_autofree char *src = tmp_path("src.raw"), *dst = tmp_path("dst.raw");
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        struct midcopy m = { .prog = { .monotonic = TRUE }, .ckpt = { src, dst, 0, 0, FALSE }, .fail_at = 4,
                             .waiting_only = c->waiting_only };
        struct agent_copy_options opts = { .io = c->forced ? AGENT_COPY_IO_URING : AGENT_COPY_IO_AUTO,
                                           .buffer_size = 512 * KiB, .workers = 8, .checkpoint = check_ckpt,
                                           .checkpoint_data = &m.ckpt, .checkpoint_interval_us = 1 };

        if (!uring_child())
                return;
        make_file(src, 16 * MiB);
        write_at(src, 0, 8 * MiB, -1, 6);
        write_at(src, 8 * MiB, 2 * MiB, 0, 0);          /* zeros inside data: holes punched */
        write_at(src, 10 * MiB, 6 * MiB - 1000, -1, 7);
        make_file(dst, 16 * MiB);
        write_at(dst, 0, 16 * MiB, 0x5a, 0);     /* stale bytes: a range skipped shows */
        if (c->cancel != NO_CANCEL) {
                ringhook.fail_cancel = c->cancel == CANCEL_AT_FAILURE ? cancel : NULL;
                cancel_offmain = c->cancel == CANCEL_DURING_REDO ? cancel : NULL;
                g_assert_cmpint(agent_copy_raw(src, dst, &opts, cancel, midcopy_progress, &m), ==, -ECANCELED);
                ringhook.fail_cancel = cancel_offmain = NULL;
                if (c->cancel == CANCEL_AT_FAILURE)
                        /* Settled, then the cancel wins: no thread pipeline, no chunk read or written again. */
                        g_assert_cmpint(g_atomic_int_get(&offmain_reads), ==, 0);
                else
                        /* A ring that fails always loses a chunk in flight: the threads did start on one. */
                        g_assert_cmpint(g_atomic_int_get(&offmain_reads), >, 0);
                g_assert_cmpint(g_atomic_int_get(&offmain_writes), ==, 0);
                g_assert_cmpuint(m.prog.last_done, <, 16 * MiB);
                g_assert_true(m.prog.monotonic);
                g_assert_false(m.ckpt.bad);
                return;
        }
        if (c->forced) {
                g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, midcopy_progress, &m), ==, -EPERM);
                g_assert_false(m.ckpt.bad);
                return;
        }
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, midcopy_progress, &m), ==, 0);
        g_assert_cmpuint(m.prog.calls, >, m.fail_at);
        assert_same(src, dst, 16 * MiB);
        g_assert_true(m.prog.monotonic);
        g_assert_cmpuint(m.prog.last_done, ==, 16 * MiB);
        g_assert_cmpuint(m.ckpt.calls, >, 1);
        g_assert_false(m.ckpt.bad);
}

static const struct midcopy_case midcopy_refused = { FALSE, FALSE, NO_CANCEL },
                                 midcopy_refused_forced = { FALSE, TRUE, NO_CANCEL },
                                 midcopy_wait_refused = { TRUE, FALSE, NO_CANCEL },
                                 midcopy_wait_refused_forced = { TRUE, TRUE, NO_CANCEL },
                                 midcopy_refused_cancelled = { FALSE, FALSE, CANCEL_AT_FAILURE },
                                 midcopy_wait_refused_cancelled = { TRUE, FALSE, CANCEL_AT_FAILURE },
                                 midcopy_refused_forced_cancelled = { FALSE, TRUE, CANCEL_AT_FAILURE },
                                 midcopy_refused_cancel_redo = { FALSE, FALSE, CANCEL_DURING_REDO },
                                 midcopy_wait_refused_cancel_redo = { TRUE, FALSE, CANCEL_DURING_REDO };

/*
 * copy_ring_settle() itself: reads the kernel consumed before
 * io_uring_enter was refused are waited out through the shared
 * completion ring (their data arrives), the ones queued after are taken
 * back unrun; every job comes out lost, none in flight.
 */
static void ring_settle(gboolean waiting_only)
{
        g_autofree char *src = tmp_path("src.raw");
        g_autofree char *want = NULL;
        struct copy_ctx ctx = { .buffer_size = 1 * MiB };
        struct copy_job jobs[6] = { 0 };
        struct copy_ring *ring = NULL;
        struct copy_job *job;
        gsize len;

        if (!uring_child())
                return;
        make_file(src, 6 * MiB);
        write_at(src, 0, 6 * MiB, -1, 8);
        g_assert_true(g_file_get_contents(src, &want, &len, NULL));
        ctx.src_fd = ctx.src_buf_fd = open(src, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(ctx.src_fd, >=, 0);
        ctx.dst_fd = ctx.dst_buf_fd = -1;       /* reads only: nothing is stored */
        for (unsigned i = 0; i < G_N_ELEMENTS(jobs); i++) {
                jobs[i] = (struct copy_job) { .ctx = &ctx, .index = i, .offset = i * MiB, .length = 1 * MiB, .busy = true };
                jobs[i].buf = mmap(NULL, ctx.buffer_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                g_assert_true(jobs[i].buf != MAP_FAILED);
        }
        g_assert_cmpint(copy_ring_new(&ctx, jobs, G_N_ELEMENTS(jobs), &ring), ==, 0);
        for (unsigned i = 0; i < 4; i++)
                copy_ring_submit(ring, &jobs[i]);      /* submitted: the kernel has them */
        refuse_uring_enter(waiting_only);
        for (unsigned i = 4; i < G_N_ELEMENTS(jobs); i++)
                copy_ring_submit(ring, &jobs[i]);      /* queued; submitted only when waiting_only */
        g_assert_cmpint(copy_ring_reap(ring, TRUE, &job), ==, -EPERM);
        g_assert_cmpint(copy_ring_settle(ring, 10 * G_USEC_PER_SEC), ==, 0);
        g_assert_cmpint(copy_ring_reap(ring, FALSE, &job), ==, 0);
        g_assert_null(job);
        for (unsigned i = 0; i < G_N_ELEMENTS(jobs); i++) {
                g_assert_true(jobs[i].lost);
                g_assert_cmpuint(jobs[i].ring_ops, ==, 0);
        }
        /* The reads the kernel had did complete (the device cannot cancel them): their data is there. */
        if (!waiting_only)
                for (unsigned i = 0; i < 4; i++)
                        g_assert_true(memcmp(jobs[i].buf, want + i * MiB, MiB) == 0);
        copy_ring_free(ring);
        for (unsigned i = 0; i < G_N_ELEMENTS(jobs); i++)
                munmap(jobs[i].buf, ctx.buffer_size);
        close(ctx.src_fd);
}

static void test_ring_settle(void)
{
        ring_settle(FALSE);
}

static void test_ring_settle_cancel(void)
{
        ring_settle(TRUE);
}

/*
 * Raw tests again with each pipeline forced: io_uring (skipped, visibly,
 * where the kernel refuses it) and threads. The tests above run AUTO.
 */
struct io_case {
        const char *path;
        void (*fn)(void);
        enum agent_copy_io io;
};

static const struct io_case io_cases[] = {
        { "/copy/raw/uring/small-buffers-direct",     test_small_buffers_direct,     AGENT_COPY_IO_URING },
        { "/copy/raw/uring/unaligned-tail",           test_unaligned_tail,           AGENT_COPY_IO_URING },
        { "/copy/raw/uring/zero-blocks-become-holes", test_zero_blocks_become_holes, AGENT_COPY_IO_URING },
        { "/copy/raw/uring/cancel",                   test_cancel,                   AGENT_COPY_IO_URING },
        { "/copy/raw/threads/small-buffers-direct",   test_small_buffers_direct,     AGENT_COPY_IO_THREADS },
        { "/copy/raw/threads/unaligned-tail",         test_unaligned_tail,           AGENT_COPY_IO_THREADS },
        { "/copy/raw/threads/zero-blocks-become-holes", test_zero_blocks_become_holes, AGENT_COPY_IO_THREADS },
        { "/copy/raw/threads/cancel",                 test_cancel,                   AGENT_COPY_IO_THREADS },
        { "/copy/raw/threads/resume-progress",        test_resume_progress,          AGENT_COPY_IO_THREADS },
        { "/copy/raw/threads/bandwidth-limit",        test_bandwidth_limit,          AGENT_COPY_IO_THREADS },
        { "/copy/raw/uring/checkpoint-prefix",        test_checkpoint_prefix,        AGENT_COPY_IO_URING },
        { "/copy/raw/uring/reflink-unaligned-tail",   test_reflink_unaligned_tail,   AGENT_COPY_IO_URING },
        { "/copy/raw/threads/reflink-unaligned-tail", test_reflink_unaligned_tail,   AGENT_COPY_IO_THREADS },
        { "/copy/raw/threads/checkpoint-prefix",      test_checkpoint_prefix,        AGENT_COPY_IO_THREADS },
        { "/copy/raw/uring/bandwidth-limit",          test_bandwidth_limit,          AGENT_COPY_IO_URING },
        { "/copy/raw/uring/resume-progress",          test_resume_progress,          AGENT_COPY_IO_URING },
        { "/copy/raw/uring/resume-capped",            test_resume_capped,            AGENT_COPY_IO_URING },
        { "/copy/raw/threads/resume-capped",          test_resume_capped,            AGENT_COPY_IO_THREADS },
        { "/copy/raw/uring/reflink-counters",         test_reflink_counters,         AGENT_COPY_IO_URING },
        { "/copy/raw/threads/reflink-counters",       test_reflink_counters,         AGENT_COPY_IO_THREADS },
};

static void run_io_case(gconstpointer data)
{
        const struct io_case *c = data;
        int r;

        if (c->io == AGENT_COPY_IO_URING && (r = agent_copy_uring_probe()) < 0) {
                g_autofree char *why = g_strdup_printf("io_uring refused here: %s", g_strerror(-r));
                g_test_skip(why);
                return;
        }
        test_io = c->io;
        c->fn();
        test_io = AGENT_COPY_IO_AUTO;
}

int main(int argc, char **argv)
{
        int r;

        g_test_init(&argc, &argv, NULL);
        tmpdir = g_dir_make_tmp("ferry-test-copy-XXXXXX", NULL);
        g_assert_nonnull(tmpdir);

        g_test_add_func("/copy/raw/holes-preserved", test_holes_preserved);
        g_test_add_func("/copy/raw/buffered-fallback", test_buffered_fallback);
        g_test_add_func("/copy/raw/small-buffers-direct", test_small_buffers_direct);
        g_test_add_func("/copy/raw/unaligned-tail", test_unaligned_tail);
        g_test_add_func("/copy/raw/zero-blocks-become-holes", test_zero_blocks_become_holes);
        g_test_add_func("/copy/raw/stale-destination", test_stale_destination);
        g_test_add_func("/copy/raw/destination-too-small", test_destination_too_small);
        g_test_add_func("/copy/raw/keep-allocation", test_keep_allocation);
        g_test_add_func("/copy/raw/reflink", test_reflink);
        g_test_add_func("/copy/raw/missing-files", test_missing_files);
        g_test_add_func("/copy/raw/cancel", test_cancel);
        g_test_add_func("/copy/raw/progress-total", test_progress_total);
        g_test_add_func("/copy/raw/resume-progress", test_resume_progress);
        g_test_add_func("/copy/raw/bandwidth-limit", test_bandwidth_limit);
        g_test_add_func("/copy/raw/threads/short-direct", test_short_direct);
        g_test_add_func("/copy/raw/uring/short-direct", test_ring_short_direct);
        g_test_add_func("/copy/raw/uring-refused", test_uring_refused);
        g_test_add_func("/copy/raw/uring-enter-fails", test_uring_enter_fails);
        g_test_add_data_func("/copy/raw/uring-fails-midcopy/fallback", &midcopy_refused, test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-fails-midcopy/forced", &midcopy_refused_forced, test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-wait-fails-midcopy/fallback", &midcopy_wait_refused,
                             test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-wait-fails-midcopy/forced", &midcopy_wait_refused_forced,
                             test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-fails-midcopy/cancelled", &midcopy_refused_cancelled,
                             test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-wait-fails-midcopy/cancelled", &midcopy_wait_refused_cancelled,
                             test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-fails-midcopy/forced-cancelled", &midcopy_refused_forced_cancelled,
                             test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-fails-midcopy/cancel-during-redo", &midcopy_refused_cancel_redo,
                             test_uring_fails_midcopy);
        g_test_add_data_func("/copy/raw/uring-wait-fails-midcopy/cancel-during-redo",
                             &midcopy_wait_refused_cancel_redo, test_uring_fails_midcopy);
        g_test_add_func("/copy/ring/settle", test_ring_settle);
        g_test_add_func("/copy/ring/settle-cancel", test_ring_settle_cancel);
        for (size_t i = 0; i < G_N_ELEMENTS(io_cases); i++)
                g_test_add_data_func(io_cases[i].path, &io_cases[i], run_io_case);
        g_test_add_func("/copy/governor/fair-shares", test_gov_fair_shares);
        g_test_add_func("/copy/governor/no-saving", test_gov_no_saving);
        g_test_add_func("/copy/governor/charge-debt", test_gov_charge_debt);
        g_test_add_func("/copy/governor/unlimited", test_gov_unlimited);
        g_test_add_func("/copy/governor/set-cap", test_gov_set_cap);
        g_test_add_func("/copy/governor/set-cap-wakes", test_gov_set_cap_wakes);
        g_test_add_func("/copy/governor/wait-bound", test_gov_wait_bound);
        g_test_add_func("/copy/governor/waiting-count", test_gov_waiting_count);
        g_test_add_func("/copy/governor/cancel-prompt", test_gov_cancel_prompt);
        g_test_add_func("/copy/governor/wake-on-leave", test_gov_wake_on_leave);
        g_test_add_func("/copy/governor/two-copies", test_gov_two_copies);
        g_test_add_func("/copy/qemu-img/chain", test_qemu_chain);
        g_test_add_func("/copy/qemu-img/errors", test_qemu_errors);
        g_test_add_func("/copy/qemu-img/raw-never-probed", test_qemu_raw_never_probed);
        g_test_add_func("/copy/qemu-img/cancel", test_qemu_cancel);
        g_test_add_func("/copy/qemu-img/shared", test_qemu_shared);
        g_test_add_func("/copy/qemu-img/progress-scale", test_qemu_progress_scale);
        g_test_add_func("/copy/qemu-img/uncapped-while-paused", test_qemu_uncapped_while_paused);
        g_test_add_func("/copy/qemu-img/hung-asleep", test_qemu_hung_asleep);

        r = g_test_run();
        (void) g_rmdir(tmpdir);
        g_free(tmpdir);
        return r;
}
