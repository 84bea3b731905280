/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
#include <stddef.h>

/* Reads a regular file relative to dirfd; fails with -EFBIG if larger than max. */
int fy_read_small_file_at(int dirfd, const char *name, size_t max, char **ret_text, size_t *ret_len);
/* Read an already-open fd: refuses anything but a regular file (fstat), at most max bytes. */
int fy_read_small_fd(int fd, size_t max, char **ret_text, size_t *ret_len);
/* Atomically replaces dirfd/name: temp file + fsync + renameat + fsync(dirfd). */
int fy_write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len);
/* Writes all of buf at off, retrying short writes and EINTR. Returns 0 or -errno. */
#include <stdint.h>
int fy_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* fsync the directory */
int fy_fsync_dir(int dirfd);
