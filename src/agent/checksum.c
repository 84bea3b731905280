/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Block checksums (see checksum.h for the algorithm).
 *
 * The calling thread walks the image's extents and reads the blocks that
 * are not known zeros into a small ring of aligned buffers; hashing
 * threads hash them (BLAKE2b is the expensive part: ~1 GB/s per core,
 * about the speed of the disk) and the calling thread appends the block
 * digests in order. A block inside a zero extent is never read: its
 * digest is the precomputed zero block digest, which is also what a block
 * read as zeros gets, so the digest does not depend on the extent map.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>
#include <sodium.h>

#include "checksum.h"
#include "config.h"
#include "error.h"

#define CK_ALIGN        4096u
#define CK_HASHERS_MAX  4
#define CK_NBD_READ_MAX (16u * 1024 * 1024)     /* below the NBD request limit (32 MiB) */
#define CK_NBD_STATUS_MAX (1024ull * 1024 * 1024)

struct agent_blkhash {
        size_t block_size;
        crypto_generichash_state outer;
        uint8_t zero_digest[AGENT_CHECKSUM_DIGEST_LEN];
        /* agent_blkhash_update(): the partial block waiting for more bytes */
        uint8_t *pending;
        size_t pending_len;
};

static void digest_of(const void *buf, size_t len, uint8_t out[AGENT_CHECKSUM_DIGEST_LEN])
{
        crypto_generichash(out, AGENT_CHECKSUM_DIGEST_LEN, buf, len, NULL, 0);
}

int agent_blkhash_new(size_t block_size, struct agent_blkhash **ret)
{
        g_autoptr(agent_blkhash) h = NULL;
        g_autofree void *zeros = NULL;

        if (block_size < AGENT_CHECKSUM_BLOCK_MIN || block_size > AGENT_CHECKSUM_BLOCK_MAX ||
            (block_size & (block_size - 1)) != 0)
                return -EINVAL;
        if (sodium_init() < 0)
                return -EINVAL;
        h = g_new0(struct agent_blkhash, 1);
        h->block_size = block_size;
        if (crypto_generichash_init(&h->outer, NULL, 0, AGENT_CHECKSUM_DIGEST_LEN) != 0)
                return -EINVAL;
        zeros = g_malloc0(block_size);
        digest_of(zeros, block_size, h->zero_digest);
        *ret = g_steal_pointer(&h);
        return 0;
}

void agent_blkhash_free(struct agent_blkhash *h)
{
        if (!h)
                return;
        g_free(h->pending);
        g_free(h);
}

size_t agent_blkhash_block_size(const struct agent_blkhash *h)
{
        return h->block_size;
}

void agent_blkhash_block_digest(const struct agent_blkhash *h, const void *buf, size_t len,
                                uint8_t ret_digest[AGENT_CHECKSUM_DIGEST_LEN])
{
        g_assert(len <= h->block_size);
        /* Checking for zeros runs at memory speed, hashing at a fraction of it. */
        if (len == h->block_size && agent_buf_is_zero(buf, len))
                memcpy(ret_digest, h->zero_digest, AGENT_CHECKSUM_DIGEST_LEN);
        else
                digest_of(buf, len, ret_digest);
}

void agent_blkhash_add_digest(struct agent_blkhash *h, const uint8_t digest[AGENT_CHECKSUM_DIGEST_LEN])
{
        crypto_generichash_update(&h->outer, digest, AGENT_CHECKSUM_DIGEST_LEN);
}

void agent_blkhash_add_zero(struct agent_blkhash *h, size_t len)
{
        uint8_t d[AGENT_CHECKSUM_DIGEST_LEN];

        g_assert(len <= h->block_size);
        if (len == h->block_size) {
                agent_blkhash_add_digest(h, h->zero_digest);
                return;
        }
        {
                g_autofree void *zeros = g_malloc0(len);        /* the short last block only */
                digest_of(zeros, len, d);
        }
        agent_blkhash_add_digest(h, d);
}

void agent_blkhash_update(struct agent_blkhash *h, const void *buf, size_t len)
{
        const uint8_t *p = buf;
        uint8_t d[AGENT_CHECKSUM_DIGEST_LEN];

        while (len > 0) {
                if (h->pending_len == 0 && len >= h->block_size) {
                        agent_blkhash_block_digest(h, p, h->block_size, d);
                        agent_blkhash_add_digest(h, d);
                        p += h->block_size;
                        len -= h->block_size;
                        continue;
                }
                if (!h->pending)
                        h->pending = g_malloc(h->block_size);
                {
                        size_t n = MIN(len, h->block_size - h->pending_len);
                        memcpy(h->pending + h->pending_len, p, n);
                        h->pending_len += n;
                        p += n;
                        len -= n;
                }
                if (h->pending_len == h->block_size) {
                        agent_blkhash_block_digest(h, h->pending, h->block_size, d);
                        agent_blkhash_add_digest(h, d);
                        h->pending_len = 0;
                }
        }
}

void agent_blkhash_final(struct agent_blkhash *h, char ret_hex[AGENT_CHECKSUM_HEX_LEN + 1])
{
        uint8_t out[AGENT_CHECKSUM_DIGEST_LEN];

        if (h->pending_len > 0) {
                uint8_t d[AGENT_CHECKSUM_DIGEST_LEN];
                agent_blkhash_block_digest(h, h->pending, h->pending_len, d);
                agent_blkhash_add_digest(h, d);
                h->pending_len = 0;
        }
        crypto_generichash_final(&h->outer, out, sizeof(out));
        sodium_bin2hex(ret_hex, AGENT_CHECKSUM_HEX_LEN + 1, out, sizeof(out));
}

/* ---- reading an image ---- */

struct ck_reader {
        int fd;                 /* raw: O_DIRECT when possible */
        int buf_fd;             /* raw: buffered (unaligned tail, EINVAL fallback) */
        bool direct_broken;
        struct nbd_handle *nbd; /* qcow2 */
        uint64_t size;
};

static void reader_close(struct ck_reader *r)
{
        if (r->fd >= 0 && r->fd != r->buf_fd)
                close(r->fd);
        if (r->buf_fd >= 0)
                close(r->buf_fd);
        if (r->nbd) {
                (void) nbd_shutdown(r->nbd, 0);
                nbd_close(r->nbd);      /* qemu-nbd exits once its only client is gone */
        }
}

static int nbd_fail(GError **error, const char *what, const char *path)
{
        int e = nbd_get_errno();

        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "%s %s through qemu-nbd: %s", what, path, nbd_get_error());
        return e > 0 ? -e : -EIO;
}

/*
 * The driver is named (guest data is never probed); read-only and
 * force-share (inherited by the backing chain): it reads beside a running
 * VM. qemu-nbd 7.2 has no -U, hence the options; cache.direct is inherited
 * by the backing chain too.
 */
char *agent_checksum_nbd_opts(const char *path, bool direct)
{
        GString *opts = g_string_new("driver=qcow2,read-only=on,force-share=on,");

        if (direct)
                g_string_append(opts, "cache.direct=on,");
        g_string_append(opts, "file.driver=file,file.filename=");
        for (const char *p = path; *p; p++) {
                if (*p == ',')
                        g_string_append_c(opts, ',');   /* qemu's option syntax doubles commas */
                g_string_append_c(opts, *p);
        }
        return g_string_free(opts, FALSE);
}

bool agent_checksum_direct_works(const char *path)
{
        void *buf = NULL;
        bool works;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);

        if (fd < 0)
                return false;
        if (posix_memalign(&buf, CK_ALIGN, CK_ALIGN) != 0) {
                close(fd);
                return false;
        }
        /* As the copier finds out: some filesystems take the flag at open and refuse the I/O. */
        works = pread(fd, buf, CK_ALIGN, 0) >= 0;
        free(buf);
        close(fd);
        return works;
}

static int reader_open(struct ck_reader *r, const char *path, const char *format, GError **error)
{
        *r = (struct ck_reader) { .fd = -1, .buf_fd = -1 };

        if (strcmp(format, "raw") == 0) {
                off_t end;

                r->buf_fd = open(path, O_RDONLY | O_CLOEXEC);
                if (r->buf_fd < 0)
                        goto fail_errno;
                r->fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
                if (r->fd < 0)
                        r->fd = r->buf_fd;      /* no O_DIRECT here: buffered it is */
                end = lseek(r->buf_fd, 0, SEEK_END);
                if (end < 0)
                        goto fail_errno;
                r->size = (uint64_t) end;
                if (r->fd == r->buf_fd)
                        (void) posix_fadvise(r->buf_fd, 0, 0, POSIX_FADV_SEQUENTIAL);
                return 0;
        }
        if (strcmp(format, "qcow2") == 0) {
                /* Reads storage, not this host's page cache (a copy just wrote it here), where the file allows. */
                bool direct = agent_checksum_direct_works(path);
                int64_t size;

                for (;;) {
                        g_autofree char *opts = agent_checksum_nbd_opts(path, direct);
                        char *argv[] = { (char *) FERRY_QEMU_NBD, (char *) "-r", (char *) "--image-opts", opts, NULL };

                        r->nbd = nbd_create();
                        if (!r->nbd)
                                return nbd_fail(error, "cannot read", path);
                        if (nbd_add_meta_context(r->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
                                return nbd_fail(error, "cannot open", path);
                        if (nbd_connect_systemd_socket_activation(r->nbd, argv) == 0)
                                break;
                        if (!direct)
                                return nbd_fail(error, "cannot open", path);
                        /* Accepted by the probe, refused by qemu (a backing file elsewhere): buffered it is. */
                        nbd_close(r->nbd);
                        r->nbd = NULL;
                        direct = false;
                }
                size = nbd_get_size(r->nbd);
                if (size < 0)
                        return nbd_fail(error, "cannot read the size of", path);
                r->size = (uint64_t) size;
                return 0;
        }
        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "format must be raw or qcow2, got %.16s", format);
        return -EINVAL;
fail_errno:
        {
                int e = errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot read %s: %s", path, g_strerror(e));
                return -e;
        }
}

struct nbd_extent {
        uint64_t end;
        bool zero;
        bool set;
};

static int extent_cb(void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
                     size_t nr_entries, int *error)
{
        struct nbd_extent *x = user_data;

        if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || nr_entries < 2 || x->set)
                return 0;
        x->end = offset + entries[0];
        x->zero = (entries[1] & LIBNBD_STATE_ZERO) != 0;
        x->set = true;
        return 0;
}

/* The extent at off: its end and whether it reads as zeros. */
static int reader_extent(struct ck_reader *r, uint64_t off, uint64_t *ret_end, bool *ret_zero)
{
        if (r->nbd) {
                struct nbd_extent x = { 0 };
                nbd_extent_callback cb = { .callback = extent_cb, .user_data = &x };

                if (nbd_can_meta_context(r->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
                        *ret_end = r->size;
                        *ret_zero = false;
                        return 0;
                }
                if (nbd_block_status(r->nbd, MIN(r->size - off, CK_NBD_STATUS_MAX), off, cb, 0) < 0) {
                        int e = nbd_get_errno();
                        return e > 0 ? -e : -EIO;
                }
                /* A server may answer with nothing or an empty extent: then read it. */
                *ret_end = x.set && x.end > off ? MIN(x.end, r->size) : r->size;
                *ret_zero = x.set && x.end > off && x.zero;
                return 0;
        } else {
                bool data = true;
                int e = agent_file_next_extent(r->buf_fd, off, r->size, ret_end, &data);

                *ret_zero = !data;
                return e;
        }
}

static int reader_read(struct ck_reader *r, void *buf, size_t len, uint64_t off)
{
        if (r->nbd) {
                for (size_t done = 0; done < len;) {
                        size_t n = MIN(len - done, CK_NBD_READ_MAX);
                        if (nbd_pread(r->nbd, (char *) buf + done, n, off + done, 0) < 0) {
                                int e = nbd_get_errno();
                                return e > 0 ? -e : -EIO;
                        }
                        done += n;
                }
                return 0;
        } else {
                size_t a = len / CK_ALIGN * CK_ALIGN;
                int e = 0;

                if (a > 0 && !r->direct_broken) {
                        e = agent_pread_full(r->fd, buf, a, off);
                        if (e == -EINVAL)
                                r->direct_broken = true;        /* accepted at open, refused for I/O */
                }
                if (a > 0 && r->direct_broken)
                        e = agent_pread_full(r->buf_fd, buf, a, off);
                if (e == 0 && a < len)
                        e = agent_pread_full(r->buf_fd, (char *) buf + a, len - a, off + a);
                return e;
        }
}

/*
 * Whether [from, end of image) reads as zeros, as cheaply as the hash
 * finds zero blocks: zero extents (holes, qcow2 zero clusters) are not
 * read; data extents are read, aligned, until the first non-zero byte.
 */
static int tail_is_zero(struct ck_reader *rd, uint64_t from, void *buf, size_t buf_len, GCancellable *cancel,
                        agent_copy_progress_fn progress, void *userdata, bool *ret)
{
        uint64_t off = from;

        while (off < rd->size) {
                uint64_t ext_end = 0;
                bool ext_zero = false;
                int r = reader_extent(rd, off, &ext_end, &ext_zero);

                if (r < 0)
                        return r;
                if (ext_end <= off)
                        ext_end = rd->size;     /* defensive: never loop without progress */
                if (ext_zero) {
                        off = ext_end;
                        if (progress)
                                progress(MIN(off, rd->size), rd->size, userdata);
                        continue;
                }
                while (off < ext_end) {
                        uint64_t start = off / CK_ALIGN * CK_ALIGN;
                        size_t len = (size_t) MIN(buf_len, ext_end - start);

                        if (g_cancellable_is_cancelled(cancel))
                                return -ECANCELED;
                        r = reader_read(rd, buf, len, start);
                        if (r < 0)
                                return r;
                        if (!agent_buf_is_zero((const char *) buf + (off - start), len - (size_t) (off - start))) {
                                *ret = false;
                                return 0;
                        }
                        off = start + len;
                        if (progress)
                                progress(MIN(off, rd->size), rd->size, userdata);
                }
        }
        *ret = true;
        return 0;
}

/* ---- the pipeline ---- */

struct ck_slot {
        const struct agent_blkhash *h;
        void *buf;
        size_t len;
        uint8_t digest[AGENT_CHECKSUM_DIGEST_LEN];
        bool busy;              /* read and queued, digest not appended yet */
        bool ready;             /* digest set */
        bool quit;
};

static gpointer hasher(gpointer data)
{
        GAsyncQueue **q = data;        /* [0] = to hash, [1] = hashed */

        for (;;) {
                struct ck_slot *s = g_async_queue_pop(q[0]);
                if (s->quit)
                        return NULL;
                agent_blkhash_block_digest(s->h, s->buf, s->len, s->digest);
                g_async_queue_push(q[1], s);
        }
}

int agent_checksum_image(const char *path, const char *format, uint64_t length, size_t block_size, unsigned flags,
                         GCancellable *cancel, agent_copy_progress_fn progress, void *userdata,
                         struct agent_checksum_result *ret, GError **error)
{
        g_autoptr(agent_blkhash) h = NULL;
        struct ck_reader rd;
        unsigned n_hashers = CLAMP(g_get_num_processors(), 1, CK_HASHERS_MAX);
        unsigned n_slots = n_hashers + 2;
        struct ck_slot slots[CK_HASHERS_MAX + 2] = { 0 };
        struct ck_slot quit = { .quit = true };
        GThread *threads[CK_HASHERS_MAX] = { 0 };
        GAsyncQueue *q[2] = { NULL, NULL };
        uint64_t total, n_blocks, next_feed = 0, ext_end = 0, progress_total;
        bool check_tail;
        bool ext_zero = false;
        unsigned started = 0;
        int r;

        if (block_size == 0)
                block_size = AGENT_CHECKSUM_BLOCK_DEFAULT;
        if (agent_blkhash_new(block_size, &h) < 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                            "block_size must be a power of two from %u to %u bytes, got %zu",
                            AGENT_CHECKSUM_BLOCK_MIN, AGENT_CHECKSUM_BLOCK_MAX, block_size);
                return -EINVAL;
        }
        r = reader_open(&rd, path, format, error);
        if (r < 0)
                goto out;
        total = length > 0 ? MIN(length, rd.size) : rd.size;
        n_blocks = (total + block_size - 1) / block_size;
        /* The tail scan can read as much as the prefix: it counts in the progress, not silently after it. */
        check_tail = (flags & AGENT_CHECKSUM_CHECK_TAIL) && total < rd.size;
        progress_total = check_tail ? rd.size : total;

        q[0] = g_async_queue_new();
        q[1] = g_async_queue_new();
        for (unsigned i = 0; i < n_slots; i++) {
                slots[i].h = h;
                if (posix_memalign(&slots[i].buf, CK_ALIGN, block_size) != 0) {
                        slots[i].buf = NULL;
                        r = -ENOMEM;
                        goto fail;
                }
        }
        for (unsigned i = 0; i < n_hashers; i++) {
                threads[i] = g_thread_try_new("ferry-hash", hasher, q, NULL);
                if (!threads[i]) {
                        r = -EAGAIN;
                        goto fail;
                }
                started++;
        }

        for (uint64_t b = 0; b <= n_blocks; b++) {
                /* Append every digest that is ready, in order; wait while the ring is full. */
                for (;;) {
                        struct ck_slot *s;

                        while (next_feed < b && slots[next_feed % n_slots].ready) {
                                struct ck_slot *f = &slots[next_feed % n_slots];
                                agent_blkhash_add_digest(h, f->digest);
                                f->ready = f->busy = false;
                                next_feed++;
                                if (progress)
                                        progress(MIN(next_feed * block_size, total), progress_total, userdata);
                        }
                        if (next_feed == b || (b < n_blocks && b - next_feed < n_slots))
                                break;
                        s = g_async_queue_pop(q[1]);
                        s->ready = true;
                }
                if (b == n_blocks)
                        break;
                if (g_cancellable_is_cancelled(cancel)) {
                        r = -ECANCELED;
                        goto fail;
                }

                uint64_t off = b * block_size;
                size_t len = (size_t) MIN(block_size, total - off);
                struct ck_slot *s = &slots[b % n_slots];

                while (ext_end <= off) {
                        r = reader_extent(&rd, ext_end, &ext_end, &ext_zero);
                        if (r < 0) {
                                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot map %s: %s", path,
                                            g_strerror(-r));
                                goto fail;
                        }
                }
                if (ext_zero && ext_end >= off + len) {
                        /* Reads as zeros: no I/O, no hashing. */
                        if (len == block_size)
                                memcpy(s->digest, h->zero_digest, sizeof(s->digest));
                        else
                                agent_blkhash_block_digest(h, memset(s->buf, 0, len), len, s->digest);
                        s->busy = s->ready = true;
                        continue;
                }
                r = reader_read(&rd, s->buf, len, off);
                if (r < 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot read %s at %" G_GUINT64_FORMAT ": %s",
                                    path, off, g_strerror(-r));
                        goto fail;
                }
                s->len = len;
                s->busy = true;
                g_async_queue_push(q[0], s);
        }
        /* Nothing past the prefix is read unless asked: resume's prefix check must not scan the rest. */
        ret->tail_checked = ret->tail_zero = total == rd.size;
        if (check_tail) {
                /* Every slot is back: the first buffer reads the tail. */
                r = tail_is_zero(&rd, total, slots[0].buf, block_size, cancel, progress, userdata, &ret->tail_zero);
                if (r == -ECANCELED)
                        goto fail;
                if (r < 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot read %s past %" G_GUINT64_FORMAT ": %s",
                                    path, total, g_strerror(-r));
                        goto fail;
                }
                ret->tail_checked = true;
                if (progress)
                        progress(rd.size, rd.size, userdata);
        }
        agent_blkhash_final(h, ret->checksum);
        ret->size = total;
        ret->virtual_size = rd.size;
        r = 0;
        goto out;
fail:
        /* Hashers may still hold slots: take back every one in flight before the buffers go. */
        for (unsigned i = 0; i < n_slots; i++)
                while (slots[i].busy && !slots[i].ready)
                        ((struct ck_slot *) g_async_queue_pop(q[1]))->ready = true;
        if (r == -ECANCELED)
                g_set_error(error, FY_ERROR, FY_ERR_ABORTED, "checksum was aborted");
out:
        for (unsigned i = 0; i < started; i++)
                g_async_queue_push(q[0], &quit);
        for (unsigned i = 0; i < started; i++)
                g_thread_join(threads[i]);
        for (unsigned i = 0; i < n_slots; i++)
                free(slots[i].buf);
        if (q[0])
                g_async_queue_unref(q[0]);
        if (q[1])
                g_async_queue_unref(q[1]);
        reader_close(&rd);
        return r;
}
