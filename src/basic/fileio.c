/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>

#include "fileio.h"

static void close_fdp(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;

                close(*fd);
                errno = saved;
        }
}
#define _cleanup_fd_ __attribute__((cleanup(close_fdp)))

static int stat_verify_regular(const struct stat *st)
{
        if (S_ISDIR(st->st_mode))
                return -EISDIR;
        if (S_ISLNK(st->st_mode))
                return -ELOOP;
        if (!S_ISREG(st->st_mode))
                return -EBADFD;
        return 0;
}

int fy_read_small_file_at(int dirfd, const char *name, size_t max, char **ret_text, size_t *ret_len)
{
        _cleanup_fd_ int fd = -EBADF;

        if (!name || !ret_text)
                return -EINVAL;
        fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return -errno;
        return fy_read_small_fd(fd, max, ret_text, ret_len);
}

int fy_read_small_fd(int fd, size_t max, char **ret_text, size_t *ret_len)
{
        g_autofree char *buf = NULL;
        size_t size, cap;
        struct stat st;
        int r;

        if (fd < 0 || !ret_text)
                return -EINVAL;

        /* Keep max + 1 (the NUL, and the probe byte that detects growth) representable. */
        if (max > SSIZE_MAX - 1)
                max = SSIZE_MAX - 1;

        if (fstat(fd, &st) < 0)
                return -errno;
        r = stat_verify_regular(&st);
        if (r < 0)
                return r;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        /* st_size is a hint only: the file may change under us, so read until EOF. */
        cap = (size_t) st.st_size + 1;
        buf = g_malloc(cap);
        size = 0;
        for (;;) {
                ssize_t n;

                if (size == cap) {
                        if (cap > max)
                                return -EFBIG;
                        cap = MIN(max + 1, cap * 2);
                        buf = g_realloc(buf, cap);
                }
                n = read(fd, buf + size, cap - size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                size += (size_t) n;
                if (size > max)
                        return -EFBIG;
        }

        if (size == cap)
                buf = g_realloc(buf, cap + 1);
        buf[size] = '\0';

        *ret_text = g_steal_pointer(&buf);
        if (ret_len)
                *ret_len = size;
        return 0;
}

int fy_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
        size_t done = 0;

        while (done < len) {
                ssize_t n = pwrite(fd, (const char *) buf + done, len - done, (off_t) (off + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                done += (size_t) n;
        }
        return 0;
}

static int write_temp_and_rename(int dirfd, const char *name, const void *data, size_t len)
{
        g_autofree char *tmp = NULL;
        _cleanup_fd_ int fd = -EBADF;
        int r;

        for (unsigned attempt = 0;; attempt++) {
                g_free(tmp);
                tmp = g_strdup_printf("%s.tmp.%08x%08x", name, g_random_int(), g_random_int());
                /* 0660 like VDSM's volume files; the umask still applies. */
                fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0660);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt >= 16)
                        return -errno;
        }

        r = fy_pwrite_full(fd, data, len, 0);
        if (r < 0)
                goto fail;
        if (fsync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        /* close() can report a deferred write error (NFS): do not rename over good data then. */
        r = close(fd);
        fd = -EBADF;
        if (r < 0) {
                r = -errno;
                goto fail;
        }
        if (renameat(dirfd, tmp, dirfd, name) < 0) {
                r = -errno;
                goto fail;
        }
        return fy_fsync_dir(dirfd);

fail:
        (void) unlinkat(dirfd, tmp, 0);
        return r;
}

int fy_write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len)
{
        _cleanup_fd_ int parentfd = -EBADF;
        g_autofree char *parent = NULL;
        const char *slash;

        if (!name || (!data && len > 0))
                return -EINVAL;

        slash = strrchr(name, '/');
        if (!slash)
                return write_temp_and_rename(dirfd, name, data, len);

        /* The temp file, rename and directory fsync all happen in the file's own directory. */
        if (slash[1] == '\0')
                return -EISDIR;
        parent = slash == name ? g_strdup("/") : g_strndup(name, slash - name);
        parentfd = openat(dirfd, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parentfd < 0)
                return -errno;
        return write_temp_and_rename(parentfd, slash + 1, data, len);
}

int fy_fsync_dir(int dirfd)
{
        _cleanup_fd_ int fd = -EBADF;

        if (dirfd == AT_FDCWD) {
                fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
                dirfd = fd;
        }
        if (fsync(dirfd) < 0)
                return -errno;
        return 0;
}

int fy_fd_max_file_size(int fd, uint64_t *ret_max)
{
        off_t lo = 0, hi = INT64_MAX;
        off_t saved = lseek(fd, 0, SEEK_CUR);

        if (saved < 0)
                return -errno;
        while (lo < hi) {
                off_t mid = lo + (hi - lo) / 2 + 1;

                if (lseek(fd, mid, SEEK_SET) >= 0)
                        lo = mid;
                else if (errno == EINVAL)
                        hi = mid - 1;
                else
                        return -errno;
        }
        if (lseek(fd, saved, SEEK_SET) < 0)
                return -errno;
        *ret_max = (uint64_t) lo;
        return 0;
}
