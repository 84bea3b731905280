/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests for the raw copier (agent_copy_raw) and the qemu-img wrappers. */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "config.h"
#include "copy.h"
#include "error.h"
#include "qemuimg.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

static char *tmpdir;

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
        uint64_t calls, last_done, last_total;
        gboolean monotonic;
        GCancellable *cancel_after_first;
};

static void record_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct progress_rec *p = userdata;

        if (p->calls > 0 && done < p->last_done)
                p->monotonic = FALSE;
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
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);

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
        g_assert_cmpint(agent_copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, size);
        g_assert_cmpuint(file_size(dst), ==, size);

        /* A larger destination keeps its size; stale bytes past the source are cleared. */
        make_file(dst2, 2 * MiB);
        write_at(dst2, 0, 2 * MiB, 0xAA, 0);
        g_assert_cmpint(agent_copy_raw(src, dst2, NULL, NULL, NULL, NULL), ==, 0);
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
        g_assert_cmpint(agent_copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
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

        g_assert_cmpint(agent_copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
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

        g_assert_cmpint(agent_copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, 0);
        assert_same(src, dst, 64 * MiB);
        g_assert_true(is_hole(dst, 0, 1 * MiB));
        g_assert_true(is_hole(dst, 1 * MiB + 512 * KiB, 256 * KiB));
        g_assert_true(is_hole(dst, 21 * MiB, 42 * MiB));
        g_assert_cmpuint(allocated(dst), <=, 4 * MiB);
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

        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, 0);
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
        g_assert_cmpint(agent_copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, -EFBIG);
        g_assert_cmpuint(file_size(dst), ==, 4 * MiB - 4096);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
}

static void test_missing_files(void)
{
        g_autofree char *src = tmp_path("nope.raw"), *dst = tmp_path("dst.raw");

        make_file(dst, 4096);
        g_assert_cmpint(agent_copy_raw(src, dst, NULL, NULL, NULL, NULL), ==, -ENOENT);
        g_assert_cmpint(agent_copy_raw(dst, src, NULL, NULL, NULL, NULL), ==, -ENOENT);
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
        g_assert_cmpint(agent_copy_raw(src, dst, NULL, pre, NULL, NULL), ==, -ECANCELED);

        /* Cancelled after the first buffer: stops within a few buffers. */
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, mid, record_progress, &prog), ==, -ECANCELED);
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
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, record_progress, &prog), ==, 0);
        g_assert_cmpuint(prog.calls, >=, 6);
        g_assert_cmpuint(prog.last_done, ==, 10 * MiB + 4096 + 7);
        g_assert_cmpuint(prog.last_total, ==, 10 * MiB + 4096 + 7);
        g_assert_true(prog.monotonic);
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
        g_assert_cmpint(agent_copy_raw(src, dst, &opts, NULL, NULL, NULL), ==, 0);
        secs = (double) (g_get_monotonic_time() - start) / G_USEC_PER_SEC;
        g_assert_cmpfloat(secs, >=, 0.2);       /* 4 MiB at 16 MiB/s is 0.25 s */
        g_assert_cmpfloat(secs, <, 5.0);
        assert_same(src, dst, 64 * MiB);
        cleanup_files((const char *[]) { "src.raw", "dst.raw", NULL });
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
        g_test_add_func("/copy/raw/missing-files", test_missing_files);
        g_test_add_func("/copy/raw/cancel", test_cancel);
        g_test_add_func("/copy/raw/progress-total", test_progress_total);
        g_test_add_func("/copy/raw/bandwidth-limit", test_bandwidth_limit);
        g_test_add_func("/copy/qemu-img/chain", test_qemu_chain);
        g_test_add_func("/copy/qemu-img/errors", test_qemu_errors);
        g_test_add_func("/copy/qemu-img/raw-never-probed", test_qemu_raw_never_probed);
        g_test_add_func("/copy/qemu-img/cancel", test_qemu_cancel);

        r = g_test_run();
        (void) g_rmdir(tmpdir);
        g_free(tmpdir);
        return r;
}
