/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests for the block checksum (checksum.c): the hash of blocks, and images read as raw and qcow2. */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "checksum.h"
#include "ckpt.h"
#include "config.h"
#include "error.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

static char *tmpdir;

/* 200000 bytes: byte i is (7i + 3) & 0xff, except [64K, 128K) which is zeros. */
static guint8 *pattern(size_t *ret_len)
{
        guint8 *p = g_malloc(200000);

        for (size_t i = 0; i < 200000; i++)
                p[i] = (guint8) ((i * 7 + 3) & 0xff);
        memset(p + 65536, 0, 65536);
        *ret_len = 200000;
        return p;
}

/* Python: blake2b(b"".join(blake2b(block, digest_size=32).digest() ...), digest_size=32) over 64 KiB blocks. */
#define PATTERN_DIGEST "aa675728040e52bc5b9d5aaf23942d851625359a5c053d12db65c382d90ebebb"
/* blake2b(b"", digest_size=32): an empty image has no blocks. */
#define EMPTY_DIGEST "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"

static void test_known_answer(void)
{
        g_autoptr(agent_blkhash) h = NULL;
        g_autofree guint8 *p = NULL;
        char hex[AGENT_CHECKSUM_HEX_LEN + 1];
        size_t len;

        p = pattern(&len);
        g_assert_cmpint(agent_blkhash_new(64 * KiB, &h), ==, 0);
        agent_blkhash_update(h, p, len);
        agent_blkhash_final(h, hex);
        g_assert_cmpstr(hex, ==, PATTERN_DIGEST);

        g_clear_pointer(&h, agent_blkhash_free);
        g_assert_cmpint(agent_blkhash_new(64 * KiB, &h), ==, 0);
        agent_blkhash_final(h, hex);
        g_assert_cmpstr(hex, ==, EMPTY_DIGEST);
}

/* Any cut of the input, zero blocks given as zeros or as add_zero(): one digest. */
static void test_split_and_zero_blocks(void)
{
        static const size_t cuts[] = { 1, 4095, 4096, 65535, 65536, 65537, 199999 };
        g_autofree guint8 *p = NULL;
        size_t len;

        p = pattern(&len);
        for (size_t c = 0; c < G_N_ELEMENTS(cuts); c++) {
                g_autoptr(agent_blkhash) h = NULL;
                char hex[AGENT_CHECKSUM_HEX_LEN + 1];

                g_assert_cmpint(agent_blkhash_new(64 * KiB, &h), ==, 0);
                for (size_t off = 0; off < len; off += cuts[c])
                        agent_blkhash_update(h, p + off, MIN(cuts[c], len - off));
                agent_blkhash_final(h, hex);
                g_assert_cmpstr(hex, ==, PATTERN_DIGEST);
        }
        {
                g_autoptr(agent_blkhash) h = NULL;
                uint8_t d[AGENT_CHECKSUM_DIGEST_LEN];
                char hex[AGENT_CHECKSUM_HEX_LEN + 1];

                g_assert_cmpint(agent_blkhash_new(64 * KiB, &h), ==, 0);
                agent_blkhash_block_digest(h, p, 64 * KiB, d);
                agent_blkhash_add_digest(h, d);
                agent_blkhash_add_zero(h, 64 * KiB);            /* the precomputed zero block */
                agent_blkhash_block_digest(h, p + 128 * KiB, 64 * KiB, d);
                agent_blkhash_add_digest(h, d);
                agent_blkhash_block_digest(h, p + 192 * KiB, len - 192 * KiB, d);
                agent_blkhash_add_digest(h, d);
                agent_blkhash_final(h, hex);
                g_assert_cmpstr(hex, ==, PATTERN_DIGEST);
        }
        {
                /* A short zero block is hashed as its own length of zeros. */
                g_autoptr(agent_blkhash) a = NULL, b = NULL;
                g_autofree guint8 *zeros = g_malloc0(1000);
                char ha[AGENT_CHECKSUM_HEX_LEN + 1], hb[AGENT_CHECKSUM_HEX_LEN + 1];

                g_assert_cmpint(agent_blkhash_new(64 * KiB, &a), ==, 0);
                g_assert_cmpint(agent_blkhash_new(64 * KiB, &b), ==, 0);
                agent_blkhash_add_zero(a, 1000);
                agent_blkhash_update(b, zeros, 1000);
                agent_blkhash_final(a, ha);
                agent_blkhash_final(b, hb);
                g_assert_cmpstr(ha, ==, hb);
        }
}

static void test_block_size_limits(void)
{
        struct agent_blkhash *h = NULL;
        static const size_t bad[] = { 0, 512, 4095, 5000, 3 * MiB, 32 * MiB, 64 * MiB, 128 * MiB };

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_cmpint(agent_blkhash_new(bad[i], &h), ==, -EINVAL);
        g_assert_null(h);
        g_assert_cmpint(agent_blkhash_new(4 * KiB, &h), ==, 0);
        agent_blkhash_free(h);
        /* The limit: a few buffers of a block per job. */
        g_assert_cmpuint(AGENT_CHECKSUM_BLOCK_MAX, ==, 16 * MiB);
        g_assert_cmpint(agent_blkhash_new(16 * MiB, &h), ==, 0);
        agent_blkhash_free(h);
}

static void write_at(const char *path, uint64_t off, const void *buf, size_t len)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, buf, len, (off_t) off), ==, (ssize_t) len);
        close(fd);
}

static void make_file(const char *path, uint64_t size)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, (off_t) size), ==, 0);
        close(fd);
}

static void run_ok(const char *cmd)
{
        int status = 0;
        g_autoptr(GError) e = NULL;
        g_autofree char *out = NULL, *err = NULL;

        /* Output captured: it would break the TAP stream. */
        g_assert_true(g_spawn_command_line_sync(cmd, &out, &err, &status, &e));
        g_assert_no_error(e);
        g_assert_true(g_spawn_check_wait_status(status, NULL));
}

static void checksum(const char *path, const char *fmt, uint64_t length, size_t bs, char ret[AGENT_CHECKSUM_HEX_LEN + 1],
                     uint64_t *ret_size)
{
        struct agent_checksum_result res = { 0 };
        g_autoptr(GError) e = NULL;

        g_assert_cmpint(agent_checksum_image(path, fmt, length, bs, 0, NULL, NULL, NULL, &res, &e), ==, 0);
        g_assert_no_error(e);
        memcpy(ret, res.checksum, sizeof(res.checksum));
        if (ret_size)
                *ret_size = res.size;
}

/* The same guest content gives the same digest: sparse raw, allocated raw, qcow2, and a qcow2 chain. */
static void test_image_formats_agree(void)
{
        g_autofree char *sparse = g_build_filename(tmpdir, "sparse.raw", NULL);
        g_autofree char *full = g_build_filename(tmpdir, "full.raw", NULL);
        g_autofree char *q = g_build_filename(tmpdir, "img.qcow2", NULL);
        g_autofree char *base = g_build_filename(tmpdir, "base.qcow2", NULL);
        g_autofree char *top = g_build_filename(tmpdir, "top.qcow2", NULL);
        g_autofree guint8 *p = NULL;
        g_autofree guint8 *zeros = g_malloc0(9 * MiB);
        g_autofree char *cmd = NULL;
        char a[AGENT_CHECKSUM_HEX_LEN + 1], b[AGENT_CHECKSUM_HEX_LEN + 1];
        uint64_t size = 0;
        size_t len;

        p = pattern(&len);
        /* 9 MiB + 1 KiB: data at 0, a 200000-byte run at 5 MiB, the rest holes or zeros. */
        make_file(sparse, 9 * MiB + KiB);
        write_at(sparse, 0, p, len);
        write_at(sparse, 5 * MiB, p, len);
        make_file(full, 9 * MiB + KiB);
        write_at(full, 0, zeros, 9 * MiB);     /* allocated zeros where sparse has holes */
        write_at(full, 0, p, len);
        write_at(full, 5 * MiB, p, len);

        checksum(sparse, "raw", 0, 0, a, &size);
        g_assert_cmpuint(size, ==, 9 * MiB + KiB);
        checksum(full, "raw", 0, 0, b, NULL);
        g_assert_cmpstr(a, ==, b);

        cmd = g_strdup_printf("%s convert -q -f raw -O qcow2 %s %s", FERRY_QEMU_IMG, sparse, q);
        run_ok(cmd);
        checksum(q, "qcow2", 0, 0, b, &size);
        g_assert_cmpuint(size, ==, 9 * MiB + KiB);
        g_assert_cmpstr(a, ==, b);

        /* A chain: the base has the first run, the top the second. */
        g_free(cmd);
        cmd = g_strdup_printf("%s create -q -f qcow2 %s %llu", FERRY_QEMU_IMG, base, 9 * MiB + KiB);
        run_ok(cmd);
        g_free(cmd);
        cmd = g_strdup_printf("qemu-io -f qcow2 -c 'write -P 7 0 64k' %s", base);
        run_ok(cmd);
        g_free(cmd);
        cmd = g_strdup_printf("%s create -q -f qcow2 -b %s -F qcow2 %s", FERRY_QEMU_IMG, base, top);
        run_ok(cmd);
        g_free(cmd);
        cmd = g_strdup_printf("qemu-io -f qcow2 -c 'write -P 9 5M 64k' %s", top);
        run_ok(cmd);
        {
                g_autofree guint8 *seven = g_malloc(64 * KiB), *nine = g_malloc(64 * KiB);
                memset(seven, 7, 64 * KiB);
                memset(nine, 9, 64 * KiB);
                make_file(sparse, 9 * MiB + KiB);
                write_at(sparse, 0, seven, 64 * KiB);
                write_at(sparse, 5 * MiB, nine, 64 * KiB);
        }
        checksum(sparse, "raw", 0, 0, a, NULL);
        checksum(top, "qcow2", 0, 0, b, NULL);
        g_assert_cmpstr(a, ==, b);
        /* Smaller blocks, another digest, the same agreement. */
        checksum(sparse, "raw", 0, 64 * KiB, a, NULL);
        checksum(top, "qcow2", 0, 64 * KiB, b, NULL);
        g_assert_cmpstr(a, ==, b);
        checksum(sparse, "raw", 0, 0, b, NULL);
        g_assert_cmpstr(a, !=, b);

        g_unlink(full);
        g_unlink(q);
        g_unlink(base);
        g_unlink(top);
        g_unlink(sparse);
}

/* A prefix's digest is the digest of a file holding only that prefix; one changed byte changes it. */
static void test_prefix_and_change(void)
{
        g_autofree char *a_path = g_build_filename(tmpdir, "a.raw", NULL);
        g_autofree char *b_path = g_build_filename(tmpdir, "b.raw", NULL);
        g_autofree guint8 *p = NULL;
        char a[AGENT_CHECKSUM_HEX_LEN + 1], b[AGENT_CHECKSUM_HEX_LEN + 1];
        uint64_t size = 0;
        size_t len;

        p = pattern(&len);
        make_file(a_path, 12 * MiB);
        for (uint64_t off = 0; off < 12 * MiB; off += MiB)
                write_at(a_path, off, p, len);
        make_file(b_path, 8 * MiB);
        for (uint64_t off = 0; off < 8 * MiB; off += MiB)
                write_at(b_path, off, p, len);
        checksum(a_path, "raw", 8 * MiB, 0, a, &size);
        g_assert_cmpuint(size, ==, 8 * MiB);
        checksum(b_path, "raw", 0, 0, b, NULL);
        g_assert_cmpstr(a, ==, b);
        write_at(b_path, 7 * MiB + 12345, "x", 1);
        checksum(b_path, "raw", 0, 0, b, NULL);
        g_assert_cmpstr(a, !=, b);
        g_unlink(a_path);
        g_unlink(b_path);
}

static void checksum_full(const char *path, const char *fmt, uint64_t length, struct agent_checksum_result *ret)
{
        g_autoptr(GError) e = NULL;

        memset(ret, 0, sizeof(*ret));
        g_assert_cmpint(agent_checksum_image(path, fmt, length, 64 * KiB, AGENT_CHECKSUM_CHECK_TAIL, NULL, NULL, NULL, ret, &e),
                        ==, 0);
        g_assert_no_error(e);
}

/*
 * A destination bigger than its source: hashed over the source's size it
 * gives the source's digest, and tail_zero says whether the rest reads as
 * zeros (holes, allocated zeros, qcow2 zero clusters: yes; one byte: no).
 */
static void test_length_and_tail(void)
{
        g_autofree char *src = g_build_filename(tmpdir, "lt-src.raw", NULL);
        g_autofree char *dst = g_build_filename(tmpdir, "lt-dst.raw", NULL);
        g_autofree char *q = g_build_filename(tmpdir, "lt-dst.qcow2", NULL);
        g_autofree guint8 *p = NULL;
        g_autofree guint8 *zeros = g_malloc0(MiB);
        g_autofree char *cmd = NULL;
        struct agent_checksum_result s, d;
        const uint64_t src_size = 8 * MiB + 1000;      /* unaligned: the tail starts mid-page */
        size_t len;

        p = pattern(&len);
        make_file(src, src_size);
        make_file(dst, 12 * MiB);
        for (uint64_t off = 0; off < 8 * MiB; off += MiB) {
                write_at(src, off, p, len);
                write_at(dst, off, p, len);
        }
        write_at(src, src_size - 1, "x", 1);           /* the prefix's last byte is not the tail's */
        write_at(dst, src_size - 1, "x", 1);

        checksum_full(src, "raw", 0, &s);
        g_assert_cmpuint(s.size, ==, src_size);
        g_assert_cmpuint(s.virtual_size, ==, src_size);
        g_assert_true(s.tail_zero);
        checksum_full(dst, "raw", 0, &d);
        g_assert_cmpuint(d.size, ==, 12 * MiB);
        g_assert_cmpstr(d.checksum, !=, s.checksum);   /* the review's finding: a whole bigger image differs */

        checksum_full(dst, "raw", src_size, &d);
        g_assert_cmpstr(d.checksum, ==, s.checksum);
        g_assert_cmpuint(d.size, ==, src_size);
        g_assert_cmpuint(d.virtual_size, ==, 12 * MiB);
        g_assert_true(d.tail_zero);                    /* holes */

        write_at(dst, 10 * MiB, zeros, MiB);           /* allocated zeros in the tail */
        checksum_full(dst, "raw", src_size, &d);
        g_assert_cmpstr(d.checksum, ==, s.checksum);
        g_assert_true(d.tail_zero);

        cmd = g_strdup_printf("%s convert -q -f raw -O qcow2 %s %s", FERRY_QEMU_IMG, dst, q);
        run_ok(cmd);
        checksum_full(q, "qcow2", src_size, &d);
        g_assert_cmpstr(d.checksum, ==, s.checksum);
        g_assert_cmpuint(d.virtual_size, ==, 12 * MiB);
        g_assert_true(d.tail_zero);

        /* One byte past the prefix, right after it and far in the tail. */
        write_at(dst, src_size, "y", 1);
        checksum_full(dst, "raw", src_size, &d);
        g_assert_cmpstr(d.checksum, ==, s.checksum);
        g_assert_false(d.tail_zero);
        write_at(dst, src_size, zeros, 1);
        write_at(dst, 12 * MiB - 1, "y", 1);
        checksum_full(dst, "raw", src_size, &d);
        g_assert_false(d.tail_zero);
        g_unlink(q);
        g_free(cmd);
        cmd = g_strdup_printf("%s convert -q -f raw -O qcow2 %s %s", FERRY_QEMU_IMG, dst, q);
        run_ok(cmd);
        checksum_full(q, "qcow2", src_size, &d);
        g_assert_cmpstr(d.checksum, ==, s.checksum);
        g_assert_false(d.tail_zero);

        /* No prefix, or all of it: no tail. */
        checksum_full(dst, "raw", 12 * MiB, &d);
        g_assert_true(d.tail_zero);
        g_assert_cmpuint(d.size, ==, 12 * MiB);

        g_unlink(src);
        g_unlink(dst);
        g_unlink(q);
}

/* Resident pages of path (mincore). */
static size_t cached_pages(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        size_t n = 0, pages;
        void *map;
        g_autofree unsigned char *vec = NULL;
        long pg = sysconf(_SC_PAGESIZE);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        pages = ((size_t) st.st_size + (size_t) pg - 1) / (size_t) pg;
        map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        g_assert_true(map != MAP_FAILED);
        vec = g_malloc0(pages);
        g_assert_cmpint(mincore(map, (size_t) st.st_size, vec), ==, 0);
        for (size_t i = 0; i < pages; i++)
                n += vec[i] & 1;
        munmap(map, (size_t) st.st_size);
        close(fd);
        return n;
}

static void drop_cache(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fdatasync(fd), ==, 0);
        g_assert_cmpint(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), ==, 0);
        close(fd);
}

struct progress_log {
        uint64_t last_done, last_total, max_done;
        bool total_changed;
        unsigned calls, past_prefix;    /* calls with done beyond the prefix: the tail scan's */
        uint64_t prefix;
};

static void log_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct progress_log *l = userdata;

        if (l->calls > 0 && total != l->last_total)
                l->total_changed = true;
        l->calls++;
        l->last_done = done;
        l->last_total = total;
        l->max_done = MAX(l->max_done, done);
        if (done > l->prefix)
                l->past_prefix++;
}

/*
 * The tail check is opt-in: a resumed copy's prefix check hashes both
 * sides with a length and must not scan the rest of the volumes (up to all
 * of them where everything is data) while its progress stays flat. With
 * the flag, tail_zero is right and the scan counts in the progress.
 */
static void test_tail_check_opt_in(void)
{
        g_autofree char *path = g_build_filename(tmpdir, "optin.raw", NULL);
        g_autofree guint8 *p = NULL;
        g_autofree guint8 *zeros = g_malloc0(MiB);
        struct agent_checksum_result res;
        struct progress_log l;
        g_autoptr(GError) e = NULL;
        const uint64_t prefix = 4 * MiB, size = 16 * MiB;
        size_t len;

        p = pattern(&len);
        make_file(path, size);
        write_at(path, 0, p, len);
        for (uint64_t off = prefix; off < 14 * MiB; off += MiB)
                write_at(path, off, zeros, MiB);        /* written zeros: data to SEEK_DATA, read by a scan */
        write_at(path, 15 * MiB, "z", 1);               /* non-zero far away */

        /* Without the flag: hashed to the prefix, progress over the prefix only, tail not computed. */
        memset(&res, 0, sizeof(res));
        l = (struct progress_log) { .prefix = prefix };
        g_assert_cmpint(agent_checksum_image(path, "raw", prefix, 64 * KiB, 0, NULL, log_progress, &l, &res, &e), ==, 0);
        g_assert_no_error(e);
        g_assert_cmpuint(res.size, ==, prefix);
        g_assert_cmpuint(res.virtual_size, ==, size);
        g_assert_false(res.tail_checked);
        g_assert_false(res.tail_zero);
        g_assert_cmpuint(l.calls, >, 0);
        g_assert_false(l.total_changed);
        g_assert_cmpuint(l.last_total, ==, prefix);
        g_assert_cmpuint(l.max_done, ==, prefix);
        g_assert_cmpuint(l.past_prefix, ==, 0);

        /* With it: the same digest, the tail found non-zero, the scan reported up to the virtual size. */
        {
                struct agent_checksum_result t = { 0 };

                l = (struct progress_log) { .prefix = prefix };
                g_assert_cmpint(agent_checksum_image(path, "raw", prefix, 64 * KiB, AGENT_CHECKSUM_CHECK_TAIL, NULL,
                                                     log_progress, &l, &t, &e), ==, 0);
                g_assert_no_error(e);
                g_assert_cmpstr(t.checksum, ==, res.checksum);
                g_assert_true(t.tail_checked);
                g_assert_false(t.tail_zero);
                g_assert_false(l.total_changed);
                g_assert_cmpuint(l.last_total, ==, size);
                g_assert_cmpuint(l.last_done, ==, size);
                g_assert_cmpuint(l.past_prefix, >, 1);  /* the 10 MiB of written zeros, while scanned */
        }

        /* The non-zero byte gone: the tail reads as zeros, with the flag only. */
        write_at(path, 15 * MiB, zeros, 1);
        memset(&res, 0, sizeof(res));
        g_assert_cmpint(agent_checksum_image(path, "raw", prefix, 64 * KiB, AGENT_CHECKSUM_CHECK_TAIL, NULL, NULL, NULL,
                                             &res, &e), ==, 0);
        g_assert_true(res.tail_checked);
        g_assert_true(res.tail_zero);
        memset(&res, 0, sizeof(res));
        g_assert_cmpint(agent_checksum_image(path, "raw", prefix, 64 * KiB, 0, NULL, NULL, NULL, &res, &e), ==, 0);
        g_assert_false(res.tail_checked);

        /* No tail at all: computed either way, true. */
        memset(&res, 0, sizeof(res));
        g_assert_cmpint(agent_checksum_image(path, "raw", 0, 64 * KiB, 0, NULL, NULL, NULL, &res, &e), ==, 0);
        g_assert_true(res.tail_checked);
        g_assert_true(res.tail_zero);
        g_unlink(path);
}


/*
 * qcow2 is read through qemu-nbd with cache.direct=on where the file takes
 * O_DIRECT: the check reads storage, and leaves nothing in this host's page
 * cache. On tmpfs (no O_DIRECT) it reads buffered, silently.
 */
static void test_qcow2_reads_direct(void)
{
        g_autofree char *q = g_build_filename(tmpdir, "direct.qcow2", NULL);
        g_autofree char *cmd = NULL;
        g_autofree char *opts = NULL;
        struct agent_checksum_result r1, r2;

        opts = agent_checksum_nbd_opts("/a,b/c.qcow2", true);
        g_assert_cmpstr(opts, ==, "driver=qcow2,read-only=on,force-share=on,cache.direct=on,"
                                  "file.driver=file,file.filename=/a,,b/c.qcow2");
        g_free(opts);
        opts = agent_checksum_nbd_opts("/x.qcow2", false);
        g_assert_null(strstr(opts, "cache.direct"));

        cmd = g_strdup_printf("%s create -q -f qcow2 %s 16M", FERRY_QEMU_IMG, q);
        run_ok(cmd);
        g_free(cmd);
        cmd = g_strdup_printf("qemu-io -f qcow2 -c 'write -P 5 0 8M' %s", q);
        run_ok(cmd);
        if (!agent_checksum_direct_works(q)) {
                g_test_skip("the test directory's filesystem refuses O_DIRECT");
        } else {
                drop_cache(q);
                g_assert_cmpuint(cached_pages(q), <, 16);
                checksum_full(q, "qcow2", 0, &r1);
                /* Buffered, qemu-nbd would leave the 8 MiB it read (2048 pages) cached. */
                g_assert_cmpuint(cached_pages(q), <, 64);
        }

        if (g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
                g_autofree char *shm = g_strdup_printf("/dev/shm/ferry-test-checksum-%d.qcow2", (int) getpid());

                g_free(cmd);
                cmd = g_strdup_printf("cp %s %s", q, shm);
                run_ok(cmd);
                if (!agent_checksum_direct_works(shm)) {
                        checksum_full(shm, "qcow2", 0, &r2);   /* tmpfs: buffered, no error */
                        checksum_full(q, "qcow2", 0, &r1);
                        g_assert_cmpstr(r1.checksum, ==, r2.checksum);
                }
                g_unlink(shm);
        }
        g_unlink(q);
}

static void test_errors_and_cancel(void)
{
        g_autofree char *path = g_build_filename(tmpdir, "c.raw", NULL);
        g_autofree char *missing = g_build_filename(tmpdir, "missing.qcow2", NULL);
        g_autoptr(GCancellable) cancel = g_cancellable_new();
        struct agent_checksum_result res;
        g_autoptr(GError) e = NULL;
        guint8 one = 1;

        make_file(path, 64 * MiB);
        for (uint64_t off = 0; off < 64 * MiB; off += 4 * MiB)
                write_at(path, off, &one, 1);
        g_cancellable_cancel(cancel);
        g_assert_cmpint(agent_checksum_image(path, "raw", 0, 0, 0, cancel, NULL, NULL, &res, &e), ==, -ECANCELED);
        g_clear_error(&e);
        g_assert_cmpint(agent_checksum_image(path, "vmdk", 0, 0, 0, NULL, NULL, NULL, &res, &e), ==, -EINVAL);
        g_clear_error(&e);
        g_assert_cmpint(agent_checksum_image(path, "raw", 0, 1000, 0, NULL, NULL, NULL, &res, &e), ==, -EINVAL);
        g_clear_error(&e);
        g_assert_cmpint(agent_checksum_image(missing, "qcow2", 0, 0, 0, NULL, NULL, NULL, &res, &e), <, 0);
        g_assert_nonnull(e);
        g_clear_error(&e);
        g_unlink(path);
}

static void test_ckpt_roundtrip(void)
{
        struct agent_copy_ckpt c = { .src_size = 1 << 30, .offset = 600 << 20 }, back;
        static const char *const bad[] = {
                "", "{}", "[1]", "{\"version\":1}",
                "{\"offset\":2,\"src_img\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\",\"src_sd\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\","
                "\"src_size\":1,\"src_vol\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\",\"version\":1}",
                "{\"offset\":1,\"src_img\":\"0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9\",\"src_sd\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\","
                "\"src_size\":1,\"src_vol\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\",\"version\":1}",
        };
        g_autofree char *text = NULL;

        g_strlcpy(c.src_sd, "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", sizeof(c.src_sd));
        g_strlcpy(c.src_img, "1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", sizeof(c.src_img));
        g_strlcpy(c.src_vol, "2f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", sizeof(c.src_vol));
        text = agent_copy_ckpt_format(&c);
        g_assert_cmpint(agent_copy_ckpt_parse(text, strlen(text), &back), ==, 0);
        g_assert_true(memcmp(&c, &back, sizeof(c)) == 0);
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_cmpint(agent_copy_ckpt_parse(bad[i], strlen(bad[i]), &back), ==, -EBADMSG);
}

int main(int argc, char **argv)
{
        int r;

        g_test_init(&argc, &argv, NULL);
        tmpdir = g_dir_make_tmp("ferry-test-checksum-XXXXXX", NULL);
        g_assert_nonnull(tmpdir);
        g_test_add_func("/checksum/blkhash/known-answer", test_known_answer);
        g_test_add_func("/checksum/blkhash/split-and-zero-blocks", test_split_and_zero_blocks);
        g_test_add_func("/checksum/blkhash/block-size-limits", test_block_size_limits);
        g_test_add_func("/checksum/image/formats-agree", test_image_formats_agree);
        g_test_add_func("/checksum/image/prefix-and-change", test_prefix_and_change);
        g_test_add_func("/checksum/image/length-and-tail", test_length_and_tail);
        g_test_add_func("/checksum/image/tail-check-opt-in", test_tail_check_opt_in);
        g_test_add_func("/checksum/image/qcow2-reads-direct", test_qcow2_reads_direct);
        g_test_add_func("/checksum/image/errors-and-cancel", test_errors_and_cancel);
        g_test_add_func("/checksum/ckpt/roundtrip", test_ckpt_roundtrip);
        r = g_test_run();
        g_rmdir(tmpdir);
        g_free(tmpdir);
        return r;
}
