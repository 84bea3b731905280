/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The checkpoint of a resumable copy: a small JSON sidecar "<vol>.ckpt"
 * next to the destination volume, replaced atomically, naming the source
 * and the prefix of the destination that is durable. It is only a hint:
 * a copy resumes from it only after it holds the destination's lease (the
 * old writer is fenced) and the prefix's checksums of source and
 * destination agree.
 */

#include <stddef.h>
#include <stdint.h>

#include "volmeta.h"

#define AGENT_CKPT_SUFFIX   ".ckpt"
#define AGENT_CKPT_MAX      1024    /* bytes: a sidecar larger than this is not ours */

struct agent_copy_ckpt {
        char src_sd[FY_UUID_STR_LEN + 1];
        char src_img[FY_UUID_STR_LEN + 1];
        char src_vol[FY_UUID_STR_LEN + 1];
        uint64_t src_size;
        uint64_t offset;        /* [0, offset) of the destination holds the source's bytes */
};

/* 0, or -EBADMSG for anything that is not a well-formed checkpoint (offset <= src_size, UUIDs lower-case). */
int agent_copy_ckpt_parse(const char *text, size_t len, struct agent_copy_ckpt *ret);
/* One line of JSON, newline-terminated; g_free() it. */
char *agent_copy_ckpt_format(const struct agent_copy_ckpt *c);
