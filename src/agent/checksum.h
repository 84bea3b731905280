/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Block checksum of a volume's guest-visible content, the algorithm of
 * ovirt-imageio's checksum (and of blkhash): the image is cut into blocks
 * of block_size bytes (the last may be shorter), each block is hashed with
 * BLAKE2b-256, and the digest is BLAKE2b-256 over the block digests in
 * order. A block that reads as zeros has a digest computed once, so holes
 * and zero ranges cost no hashing; the result does not depend on how the
 * content is stored (raw or qcow2, sparse or allocated, which layer of a
 * chain holds a block). BLAKE2b comes from libsodium (crypto_generichash).
 *
 * Runs in the calling (job) thread plus a few hashing threads; never logs.
 */

#include <stdbool.h>
#include <stdint.h>
#include <gio/gio.h>

#include "copy.h"

#define AGENT_CHECKSUM_ALGORITHM        "blake2b"
#define AGENT_CHECKSUM_DIGEST_LEN       32
#define AGENT_CHECKSUM_HEX_LEN          (2 * AGENT_CHECKSUM_DIGEST_LEN)
#define AGENT_CHECKSUM_BLOCK_DEFAULT    (4u * 1024 * 1024)
#define AGENT_CHECKSUM_BLOCK_MIN        (4u * 1024)
/* A block is one buffer per hashing slot (a few per job): 16 MiB bounds a job's memory. */
#define AGENT_CHECKSUM_BLOCK_MAX        (16u * 1024 * 1024)

/* The hash of blocks, for callers that walk the image themselves (and for unit tests). */
struct agent_blkhash;
typedef struct agent_blkhash agent_blkhash;    /* GLib autoptr glue only */

/* 0 or -EINVAL (block_size not a power of two within the limits, or libsodium failed). */
int agent_blkhash_new(size_t block_size, struct agent_blkhash **ret);
void agent_blkhash_free(struct agent_blkhash *h);
size_t agent_blkhash_block_size(const struct agent_blkhash *h);
/* The digest of one block (len <= block_size, shorter only for the last). Thread-safe. */
void agent_blkhash_block_digest(const struct agent_blkhash *h, const void *buf, size_t len,
                                uint8_t ret_digest[AGENT_CHECKSUM_DIGEST_LEN]);
/* Appends the next block's digest. */
void agent_blkhash_add_digest(struct agent_blkhash *h, const uint8_t digest[AGENT_CHECKSUM_DIGEST_LEN]);
/* Appends the next block, known to read as len zero bytes. */
void agent_blkhash_add_zero(struct agent_blkhash *h, size_t len);
/* Appends data of any length, cut into blocks (a trailing partial block waits for more). */
void agent_blkhash_update(struct agent_blkhash *h, const void *buf, size_t len);
/* Ends the hash (a pending partial block is the last block); lower-case hex, NUL-terminated. */
void agent_blkhash_final(struct agent_blkhash *h, char ret_hex[AGENT_CHECKSUM_HEX_LEN + 1]);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(agent_blkhash, agent_blkhash_free)

struct agent_checksum_result {
        char checksum[AGENT_CHECKSUM_HEX_LEN + 1];
        uint64_t size;          /* bytes hashed */
        uint64_t virtual_size;  /* the image's guest-visible size */
        bool tail_checked;      /* tail_zero was computed: AGENT_CHECKSUM_CHECK_TAIL, or nothing past size */
        bool tail_zero;         /* [size, virtual_size) reads as zeros (true when empty); false when not checked */
};

enum agent_checksum_flags {
        /* With a prefix, also check that the rest of the image reads as zeros (ret->tail_zero). */
        AGENT_CHECKSUM_CHECK_TAIL = 1u << 0,
};

/*
 * Checksums the first `length` bytes (0 = all; more than the image is
 * clamped: ret->size says what was hashed) of the image at path, read
 * as format "raw" (the file, holes found with SEEK_DATA/SEEK_HOLE, O_DIRECT
 * when the filesystem allows it) or "qcow2" (its whole backing chain,
 * through a read-only, share-locking qemu-nbd child that libnbd starts,
 * cache.direct=on where the file takes O_DIRECT; zero ranges from NBD block
 * status). The format is never probed. With a prefix and
 * AGENT_CHECKSUM_CHECK_TAIL, the rest of the image is checked for zeros
 * (ret->tail_zero): zero extents are not read, a data extent is read until
 * its first non-zero byte, which can be the whole rest of the image; progress
 * then counts to the image's virtual size. Without the flag nothing past the
 * prefix is read (ret->tail_checked is false unless there is no tail).
 * Returns 0, -ECANCELED promptly after cancel, or -errno with *error set.
 */
int agent_checksum_image(const char *path, const char *format, uint64_t length, size_t block_size, unsigned flags,
                         GCancellable *cancel, agent_copy_progress_fn progress, void *userdata,
                         struct agent_checksum_result *ret, GError **error);

/* The qemu-nbd --image-opts string that reads path as qcow2 (read-only, share-locking; direct: cache.direct=on). */
char *agent_checksum_nbd_opts(const char *path, bool direct);
/* Whether path takes O_DIRECT reads (tmpfs refuses them at open, some filesystems at the first read). */
bool agent_checksum_direct_works(const char *path);
