/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* qemu-img wrappers. Run in the calling (job) thread; children die with the agent (PDEATHSIG). */

#include <stdbool.h>
#include <stdint.h>
#include <gio/gio.h>
#include <jansson.h>
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
 * pausing it (SIGSTOP/SIGCONT) while the flow is in debt. total scales
 * progress: the source's virtual size in bytes if the caller knows it (its
 * volume's capacity), 0 to have it found (qemu-img info; a raw file's size).
 */
int agent_qemu_img_convert_shared(const char *src_path, const char *src_fmt,
                                  const char *dst_path, const char *dst_fmt,
                                  const char *backing, const char *backing_fmt,
                                  uint64_t total, struct agent_rate_flow *flow,
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

/* Line by line stdout of a child; a negative return kills it and fails the call. */
typedef int (*agent_qemu_img_line_fn)(const char *line, void *data);

/*
 * qemu-img commit -p -t none -f qcow2 -b BASE [-r CAP] TOP: top's own data
 * into base, its immediate backing file. -b implies -d: top is left as it
 * was, so a merge cut short can simply run again. total scales progress
 * (bytes); flow as for agent_qemu_img_convert_shared() (NULL: no cap).
 * Fails with 252 (MergeSnapshotsError) only for what the images cause
 * (corrupt, chain or format not as expected), 352 without space, else 100:
 * a failure of this host (killed, I/O error), which another host may not have.
 */
int agent_qemu_img_commit(const char *top_path, const char *base_path, uint64_t total,
                          struct agent_rate_flow *flow, GCancellable *cancel,
                          agent_copy_progress_fn progress, void *userdata, GError **error);

/* qemu-img amend -p -t none -f qcow2 -o compat=COMPAT PATH ("0.10" or "1.1"). */
int agent_qemu_img_amend_compat(const char *path, const char *compat, GCancellable *cancel,
                                agent_copy_progress_fn progress, void *userdata, GError **error);

/*
 * qemu-img measure -U --output json -O OUT_FMT json:IMAGE_JSON. image_json
 * names every node's driver (formats are never probed) and where the chain
 * is cut ("backing": null).
 */
int agent_qemu_img_measure(const char *image_json, const char *out_fmt, uint64_t *ret_required,
                           uint64_t *ret_fully_allocated, GError **error);

/*
 * For an image a client supplied (an upload), the child bounded in memory
 * and CPU seconds besides dying with the agent and on cancel.
 * info: qemu-img info -U -f FORMAT --output json PATH, its whole answer
 * (an object) in *ret_info. check: qemu-img check -f FORMAT PATH; 0 when
 * it finds no corruption (leaked clusters are fine), -EUCLEAN when it does.
 */
int agent_qemu_img_info_untrusted(const char *path, const char *format, GCancellable *cancel, json_t **ret_info,
                                  GError **error);
int agent_qemu_img_check_untrusted(const char *path, const char *format, GCancellable *cancel, GError **error);

/* One extent of qemu-img map --output json. */
struct agent_qemu_img_extent {
        uint64_t start, length;
        unsigned depth;               /* 0: this image's own layer */
        bool data, zero, has_offset;
        uint64_t offset;              /* host offset in the image file, if has_offset */
};
typedef int (*agent_qemu_img_extent_fn)(const struct agent_qemu_img_extent *e, void *data);

/* One line of map's JSON output: 1 and *ret set, 0 for a line without an extent ("[", "]"), or -EBADMSG. */
int agent_qemu_img_map_parse_line(const char *line, struct agent_qemu_img_extent *ret);

/* qemu-img map -f FORMAT --output json PATH, streamed: fn is called per extent as qemu-img prints it. */
int agent_qemu_img_map(const char *path, const char *format, GCancellable *cancel,
                       agent_qemu_img_extent_fn fn, void *data, GError **error);

/* qemu-img rebase -u -f qcow2 -b BACKING -F BACKING_FMT PATH: the header only. */
int agent_qemu_img_rebase_unsafe(const char *path, const char *backing, const char *backing_fmt, GError **error);

/* qemu-img resize -q -f FORMAT PATH SIZE (growing only, by the caller's check). */
int agent_qemu_img_resize(const char *path, const char *format, uint64_t size, GError **error);
