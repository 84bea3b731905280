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
/*
 * The largest file offset fd's filesystem allows (the kernel's s_maxbytes:
 * 16 TiB on ext4 with 4 KiB blocks, 8 EiB on XFS), found by seeking (lseek
 * refuses offsets beyond it with EINVAL); fd must be a regular file.
 * pathconf(_PC_FILESIZEBITS) cannot tell: glibc answers 64 for ext4.
 * Returns 0 or -errno.
 */
int fy_fd_max_file_size(int fd, uint64_t *ret_max);
