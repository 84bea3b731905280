/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* qemu-img wrappers. Run in the calling (job) thread; children die with the agent (PDEATHSIG). */

#include <stdint.h>
#include <gio/gio.h>
#include "copy.h"

/*
 * qemu-img convert -p -t none -T none -n -f SRC_FMT -O DST_FMT [-B BACKING -F BACKING_FMT] SRC DST
 * ("-t none"/"-T none" are dropped if the filesystem refuses O_DIRECT).
 * Progress parsed from "(NN.NN/100%)" on qemu-img's stdout. Cancel kills the
 * child (SIGKILL) and returns -ECANCELED. On failure *error holds
 * qemu-img's last stderr lines. formats are "raw" or "qcow2".
 */
int agent_qemu_img_convert(const char *src_path, const char *src_fmt,
                           const char *dst_path, const char *dst_fmt,
                           const char *backing, const char *backing_fmt,
                           uint64_t rate_limit,         /* bytes/s for -r, 0 = none */
                           GCancellable *cancel,
                           agent_copy_progress_fn progress, void *userdata,
                           GError **error);

/*
 * The same under the host's rate governor: -r is the host cap (fixed for
 * the child's life), and while other copies share the cap the child is held
 * to its fair share by charging what it wrote (/proc/PID/io) to flow and
 * pausing it (SIGSTOP/SIGCONT) while the flow is in debt.
 */
int agent_qemu_img_convert_shared(const char *src_path, const char *src_fmt,
                                  const char *dst_path, const char *dst_fmt,
                                  const char *backing, const char *backing_fmt,
                                  struct agent_rate_flow *flow,
                                  GCancellable *cancel,
                                  agent_copy_progress_fn progress, void *userdata,
                                  GError **error);

/* qemu-img create -f qcow2 -o compat=1.1[,preallocation=falloc] [-b BACKING -F FMT] PATH SIZE */
int agent_qemu_img_create_qcow2(const char *path, uint64_t size, gboolean preallocate,
                                const char *backing, const char *backing_fmt, GError **error);

/*
 * qemu-img info -U -f FORMAT --output json PATH; returns the parsed "actual-size" etc via out
 * params (any may be NULL). The format is required: guest data is never probed.
 */
int agent_qemu_img_info(const char *path, const char *format, char **ret_format, uint64_t *ret_virtual_size,
                        uint64_t *ret_actual_size, char **ret_backing, GError **error);
