/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "checksum.h"
#include "ckpt.h"
#include "copy.h"
#include "fileio.h"
#include "error.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "lease.h"
#include "locks.h"
#include "qemuimg.h"
#include "sdm.h"
#include "storage.h"
#include "uuid.h"
#include "volguard.h"

struct copy_job {
        struct agent *agent;
        struct agent_job *job;
        struct agent_endpoint src;
        struct agent_endpoint dst;
        bool dst_was_illegal;          /* before this job marked it: an earlier copy did not finish */
        char *ckpt_path;               /* the destination's checkpoint sidecar */
        uint64_t src_size;
        uint64_t resumed_from;         /* bytes of the destination verified and kept */
        bool ckpt_warned;
};

static void copy_job_free(void *data)
{
        struct copy_job *cj = data;

        g_free(cj->ckpt_path);
        g_free(cj);
}

/* For any job whose userdata is the agent_job itself. */
static void job_progress(uint64_t done, uint64_t total, void *userdata)
{
        if (total > 0)
                agent_job_set_progress(userdata, 100.0 * (double) done / (double) total);
}

static void copy_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct copy_job *cj = userdata;

        /* Bytes moved are counted by the rate governor (Host.getStats copy_rate): data only, holes are free. */
        job_progress(done, total, cj->job);
}

/* The copier made [0, prefix) durable: record it so a copy after a crash or a fence can resume there. */
static void copy_checkpoint(uint64_t prefix, void *userdata)
{
        struct copy_job *cj = userdata;
        struct agent_copy_ckpt c = { .src_size = cj->src_size, .offset = prefix };
        g_autofree char *text = NULL;
        int r;

        memcpy(c.src_sd, cj->src.ref.sd, sizeof(c.src_sd));
        memcpy(c.src_img, cj->src.ref.img, sizeof(c.src_img));
        memcpy(c.src_vol, cj->src.ref.vol, sizeof(c.src_vol));
        text = agent_copy_ckpt_format(&c);
        r = fy_write_file_atomic_at(AT_FDCWD, cj->ckpt_path, text, strlen(text));
        if (r < 0 && !cj->ckpt_warned) {
                /* Only a later resume loses its head start: the copy goes on. */
                g_warning("job %s: cannot write checkpoint %s: %s", agent_job_id(cj->job), cj->ckpt_path, g_strerror(-r));
                cj->ckpt_warned = true;
        }
}

/* The prefix verification's progress: the source's hash is its first half, the destination's the second. */
static void prefix_src_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct copy_job *cj = userdata;

        if (total > 0)
                agent_job_set_phase_progress(cj->job, 50.0 * (double) done / (double) total);
}

static void prefix_dst_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct copy_job *cj = userdata;

        if (total > 0)
                agent_job_set_phase_progress(cj->job, 50.0 + 50.0 * (double) done / (double) total);
}

/*
 * Where a raw copy into a destination an earlier copy left unfinished can
 * start. We hold the destination's lease, so the earlier writer is fenced;
 * its checkpoint names the source and a durable prefix, which is trusted
 * only when the checksums of that prefix agree on both sides. 0 = from
 * the start (no checkpoint, another source, or a mismatch).
 */
static uint64_t resume_offset(struct copy_job *cj, const char *src_path, const char *dst_path, GCancellable *cancel)
{
        g_autofree char *text = NULL;
        struct agent_copy_ckpt c;
        struct agent_checksum_result s = { 0 }, d = { 0 };
        g_autoptr(GError) e = NULL;
        uint64_t offset;
        size_t len = 0;

        if (!cj->dst_was_illegal ||
            fy_read_small_file_at(AT_FDCWD, cj->ckpt_path, AGENT_CKPT_MAX, &text, &len) < 0 ||
            agent_copy_ckpt_parse(text, len, &c) < 0)
                return 0;
        if (strcmp(c.src_sd, cj->src.ref.sd) != 0 || strcmp(c.src_img, cj->src.ref.img) != 0 ||
            strcmp(c.src_vol, cj->src.ref.vol) != 0 || c.src_size != cj->src_size) {
                g_message("job %s: checkpoint %s is of another source; copying from the start",
                          agent_job_id(cj->job), cj->ckpt_path);
                return 0;
        }
        offset = c.offset / 4096 * 4096;
        if (offset == 0)
                return 0;
        /* Hashing a long prefix takes a while: its phase reports its progress (phase_progress, from 0
         * as it begins), which is what the engine shows and judges stalls on in this phase. */
        agent_job_begin_phase(cj->job, AGENT_JOB_PHASE_VERIFYING_PREFIX, 0);
        if (agent_checksum_image(src_path, "raw", offset, 0, 0, cancel, prefix_src_progress, cj, &s, &e) < 0 ||
            agent_checksum_image(dst_path, "raw", offset, 0, 0, cancel, prefix_dst_progress, cj, &d, &e) < 0) {
                g_message("job %s: cannot verify the copied prefix (%s); copying from the start",
                          agent_job_id(cj->job), e ? e->message : "aborted");
                return 0;
        }
        if (s.size != offset || d.size != offset || strcmp(s.checksum, d.checksum) != 0) {
                g_warning("job %s: the first %" G_GUINT64_FORMAT " bytes of the destination differ from the source "
                          "(checkpoint %s); copying from the start", agent_job_id(cj->job), offset, cj->ckpt_path);
                return 0;
        }
        g_message("job %s: resuming at %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " bytes: the prefix's checksums agree (%s)",
                  agent_job_id(cj->job), offset, cj->src_size, s.checksum);
        return offset;
}

static const char *qemu_format(enum fy_vol_format f)
{
        return f == FY_FORMAT_COW ? "qcow2" : "raw";
}

static int copy_volume_with(struct copy_job *cj, const struct fy_volume_meta *src_meta,
                            const struct fy_volume_meta *dst_meta, const char *src_path, const char *dst_path,
                            const struct agent_copy_options *opts, GCancellable *cancel, GError **error);

static int copy_volume(struct copy_job *cj, const struct fy_volume_meta *src_meta,
                       const struct fy_volume_meta *dst_meta, GCancellable *cancel, GError **error)
{
        struct agent *a = cj->agent;
        g_autofree char *src_path = agent_volume_path(a, &cj->src.ref);
        g_autofree char *dst_path = agent_volume_path(a, &cj->dst.ref);
        struct agent_copy_options opts = { 0 };
        int r;

        /* The host's cap is shared by the copies running now, re-balanced as they start and end. */
        opts.rate_flow = agent_rate_flow_join(a->copy_gov);
        /* Zeros of the source must not undo a PREALLOCATED destination's allocation. */
        opts.keep_allocation = dst_meta->type == FY_TYPE_PREALLOCATED;
        /* What the flow moves is what the engine judges stalls on (bytes, not qemu-img's 1 % steps). */
        agent_job_count_flow(cj->job, opts.rate_flow);
        r = copy_volume_with(cj, src_meta, dst_meta, src_path, dst_path, &opts, cancel, error);
        agent_job_count_flow(cj->job, NULL);
        agent_rate_flow_leave(opts.rate_flow);
        return r;
}

/*
 * qemu-img convert punches holes for the source's zero ranges even with -n,
 * so a PREALLOCATED raw destination would end up sparse: allocate it again
 * (fallocate mode 0 only fills holes, data stays).
 */
static int reallocate(const char *path, uint64_t size, GError **error)
{
        int fd, r;

        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                r = errno;
        else
                r = posix_fallocate(fd, 0, (off_t) size);
        if (fd >= 0)
                close(fd);
        if (r != 0) {
                g_set_error(error, FY_ERROR, r == ENOSPC ? FY_ERR_NO_SPACE : FY_ERR_COPY,
                            "copied, but cannot preallocate %s again: %s", path, g_strerror(r));
                return -r;
        }
        return 0;
}

static int copy_volume_with(struct copy_job *cj, const struct fy_volume_meta *src_meta,
                            const struct fy_volume_meta *dst_meta, const char *src_path, const char *dst_path,
                            const struct agent_copy_options *opts, GCancellable *cancel, GError **error)
{
        struct agent *a = cj->agent;
        g_autoptr(fy_volume_meta) parent = NULL;
        const char *backing = NULL;
        int r;

        if (src_meta->format == FY_FORMAT_RAW && dst_meta->format == FY_FORMAT_RAW) {
                struct agent_copy_options o = *opts;
                struct stat st;

                if (stat(src_path, &st) == 0) {
                        cj->src_size = (uint64_t) st.st_size;
                        cj->resumed_from = resume_offset(cj, src_path, dst_path, cancel);
                        if (g_cancellable_is_cancelled(cancel))
                                return -ECANCELED;
                        o.start_offset = cj->resumed_from;
                        o.checkpoint = copy_checkpoint;
                        o.checkpoint_data = cj;
                }
                agent_job_copy_from(cj->job, cj->resumed_from, cj->src_size);
                r = agent_copy_raw(src_path, dst_path, &o, cancel, copy_progress, cj);
                if (r == -ECANCELED)
                        return r;
                if (r < 0) {
                        g_set_error(error, FY_ERROR, r == -ENOSPC ? FY_ERR_NO_SPACE : FY_ERR_COPY,
                                    "copying %s to %s failed: %s", src_path, dst_path, g_strerror(-r));
                        return r;
                }
                return 0;
        }

        if (strcmp(dst_meta->parent, FY_ZERO_UUID) != 0) {
                /* Copy only this layer: the destination's parent holds the rest (qemu-img -B). */
                struct agent_volref pref;

                agent_volref_init(&pref, cj->dst.ref.sd, cj->dst.ref.img, dst_meta->parent);
                r = agent_volume_meta_read(a, &pref, &parent, error);
                if (r < 0) {
                        g_prefix_error(error, "destination parent: ");
                        return r;
                }
                backing = dst_meta->parent;
        }
        /* Not resumable: a checkpoint of an earlier raw copy no longer describes this destination. */
        (void) unlink(cj->ckpt_path);
        agent_job_set_phase(cj->job, AGENT_JOB_PHASE_COPYING);
        r = agent_qemu_img_convert_shared(src_path, qemu_format(src_meta->format),
                                          dst_path, qemu_format(dst_meta->format),
                                          backing, parent ? qemu_format(parent->format) : NULL,
                                          src_meta->capacity, opts->rate_flow, cancel, copy_progress, cj, error);
        if (r == 0 && opts->keep_allocation && dst_meta->format == FY_FORMAT_RAW) {
                agent_job_set_phase(cj->job, AGENT_JOB_PHASE_PREALLOCATING);
                r = reallocate(dst_path, dst_meta->capacity, error);
        }
        return r;
}

#define SOURCE_CHAIN_MAX 128   /* deeper than any real chain; bounds a corrupt PUUID loop */

/*
 * The source as qemu-img reads it is the whole backing chain: every volume
 * in it must exist and be LEGAL, or the copy would flatten a half-written
 * ancestor into a destination marked LEGAL. The destination must not be in
 * the chain it is copied from. Called before the copy and again before the
 * destination is marked LEGAL.
 */
static int source_chain_check(struct copy_job *cj, GError **error)
{
        struct agent *a = cj->agent;
        g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        struct agent_volref ref = cj->src.ref;
        unsigned depth;
        int r;

        for (depth = 0; depth < SOURCE_CHAIN_MAX; depth++) {
                g_autoptr(fy_volume_meta) meta = NULL;

                if (strcmp(ref.sd, cj->dst.ref.sd) == 0 && strcmp(ref.img, cj->dst.ref.img) == 0 &&
                    strcmp(ref.vol, cj->dst.ref.vol) == 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "destination volume %s is part of the source's backing chain", ref.vol);
                        return -EINVAL;
                }
                if (!g_hash_table_add(seen, g_strdup(ref.vol))) {
                        g_set_error(error, FY_ERROR, FY_ERR_METADATA,
                                    "source volume %s: its backing chain loops at volume %s", cj->src.ref.vol, ref.vol);
                        return -ELOOP;
                }
                r = agent_volume_meta_read(a, &ref, &meta, error);
                if (r < 0) {
                        if (depth > 0)
                                g_prefix_error(error, "source volume %s: backing chain broken: ", cj->src.ref.vol);
                        return r;
                }
                if (meta->legality != FY_LEGALITY_LEGAL) {
                        if (depth == 0)
                                g_set_error(error, FY_ERROR, FY_ERR_COPY,
                                            "source volume %s is ILLEGAL (an earlier copy into it did not finish)",
                                            ref.vol);
                        else
                                g_set_error(error, FY_ERROR, FY_ERR_COPY,
                                            "source volume %s has an ILLEGAL ancestor %s (an earlier copy into it did not finish)",
                                            cj->src.ref.vol, ref.vol);
                        return -EINVAL;
                }
                if (!fy_uuid_is_valid(meta->parent) || strcmp(meta->parent, FY_ZERO_UUID) == 0)
                        return 0;
                agent_volref_init(&ref, ref.sd, ref.img, meta->parent);
        }
        g_set_error(error, FY_ERROR, FY_ERR_METADATA,
                    "source volume %s: backing chain deeper than %d volumes", cj->src.ref.vol, SOURCE_CHAIN_MAX);
        return -ELOOP;
}

static int copy_data_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct copy_job *cj = data;
        struct agent *a = cj->agent;
        struct agent_volume_guard guard = { 0 };
        g_autoptr(fy_volume_meta) src_meta = NULL;
        g_autoptr(fy_volume_meta) dst_meta = NULL;
        unsigned old_gen;
        int r;

        cj->job = job;
        agent_job_set_phase(job, AGENT_JOB_PHASE_PREPARING);
        guard.job = job;
        agent_lockset_add_image(&guard.locks, &cj->src.ref, false);
        agent_lockset_add_image(&guard.locks, &cj->dst.ref, true);
        r = agent_guard_acquire(a, &guard, &cj->dst, cancel, &dst_meta, error);
        if (r < 0) {
                if (error && *error)
                        g_prefix_error(error, "destination: ");
                goto out;
        }
        if (dst_meta->voltype == FY_VOLTYPE_SHARED) {
                /* Thin VMs read it as their base: a template's volume never changes. */
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "destination volume %s is a template volume (SHARED) and is never written", cj->dst.ref.vol);
                r = -EPERM;
                goto out;
        }
        r = agent_volume_meta_read(a, &cj->src.ref, &src_meta, error);
        if (r < 0) {
                g_prefix_error(error, "source: ");
                goto out;
        }
        if (cj->src.has_generation && cj->src.generation != src_meta->generation) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERATION_MISMATCH,
                            "source volume %s has generation %u, the request expected %u",
                            cj->src.ref.vol, src_meta->generation, cj->src.generation);
                r = -ESTALE;
                goto out;
        }
        r = source_chain_check(cj, error);
        if (r < 0)
                goto out;
        if (dst_meta->capacity < src_meta->capacity) {
                g_set_error(error, FY_ERROR, FY_ERR_COPY,
                            "destination volume %s (%" G_GUINT64_FORMAT " bytes) is smaller than the source (%" G_GUINT64_FORMAT " bytes)",
                            cj->dst.ref.vol, dst_meta->capacity, src_meta->capacity);
                r = -EFBIG;
                goto out;
        }

        old_gen = dst_meta->generation;
        cj->dst_was_illegal = dst_meta->legality == FY_LEGALITY_ILLEGAL;
        r = agent_volume_begin_write(a, &cj->dst.ref, dst_meta, error);
        if (r < 0)
                goto out;

        r = copy_volume(cj, src_meta, dst_meta, cancel, error);
        if (r < 0)
                goto out;
        agent_job_set_phase(job, AGENT_JOB_PHASE_FINISHING);
        if (g_cancellable_is_cancelled(cancel)) {
                r = -ECANCELED;
                goto out;
        }

        /* A copy into an ancestor on another host may have started meanwhile: what we read may be half-written. */
        r = source_chain_check(cj, error);
        if (r < 0)
                goto out;

        /* Before LEGAL: a crash in between leaves an ILLEGAL volume that copies again, never a stale hint. */
        if (unlink(cj->ckpt_path) < 0 && errno != ENOENT) {
                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_COPY, "cannot remove checkpoint %s: %s", cj->ckpt_path, g_strerror(errno));
                goto out;
        }
        r = agent_volume_end_write(a, &cj->dst.ref, dst_meta, old_gen, error);
        if (r == 0) {
                /* What the destination allocates now (Volume.getInfo's truesize): the engine records the
                 * disk's size from it instead of reading every volume after the move. */
                g_autofree char *path = agent_volume_path(a, &cj->dst.ref);
                struct stat st;
                json_t *result = json_pack("{s:I}", "resumed_from", (json_int_t) cj->resumed_from);

                if (stat(path, &st) == 0)
                        json_object_set_new(result, "truesize", json_integer((json_int_t) st.st_blocks * 512));
                agent_job_set_result(job, result);
        }
out:
        agent_guard_release(a, &guard, job);
        return r;
}

int agent_sdm_copy_data(struct agent *a, json_t *params, GError **error)
{
        struct copy_job *cj;
        const char *job_id = NULL;
        g_autofree char *desc = NULL;
        bool copy_bitmaps = false;
        int r;

        cj = g_new0(struct copy_job, 1);
        cj->agent = a;
        if ((r = fy_rpc_param_uuid(params, "job_id", true, &job_id, error)) < 0 ||
            (r = agent_endpoint_parse(params, "source", &cj->src, error)) < 0 ||
            (r = agent_endpoint_parse(params, "destination", &cj->dst, error)) < 0 ||
            (r = fy_rpc_param_bool(params, "copy_bitmaps", false, &copy_bitmaps, error)) < 0)
                goto fail;
        if (copy_bitmaps) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "copy_bitmaps is not supported by this agent; pass false");
                r = -EOPNOTSUPP;
                goto fail;
        }
        if (strcmp(cj->src.ref.sd, cj->dst.ref.sd) == 0 && strcmp(cj->src.ref.vol, cj->dst.ref.vol) == 0 &&
            strcmp(cj->src.ref.img, cj->dst.ref.img) == 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "source and destination are the same volume");
                r = -EINVAL;
                goto fail;
        }
        /* Fail fast on what can be checked now; the job checks again under the lease. */
        if ((r = agent_sd_check(a, cj->src.ref.sd, error)) < 0 ||
            (r = agent_sd_check(a, cj->dst.ref.sd, error)) < 0)
                goto fail;

        desc = g_strdup_printf("copy_data %s/%s/%s -> %s/%s/%s",
                               cj->src.ref.sd, cj->src.ref.img, cj->src.ref.vol,
                               cj->dst.ref.sd, cj->dst.ref.img, cj->dst.ref.vol);
        {
                g_autofree char *dst_path = agent_volume_path(a, &cj->dst.ref);
                cj->ckpt_path = g_strconcat(dst_path, AGENT_CKPT_SUFFIX, NULL);
        }
        return agent_jobs_add(a->jobs, job_id, "storage", desc, copy_data_run, cj, copy_job_free, error);
fail:
        copy_job_free(cj);
        return r;
}

struct update_job {
        struct agent *agent;
        struct agent_endpoint vol;
        bool set_legality;
        enum fy_vol_legality legality;
        char *description;
        bool set_generation;
        unsigned generation;
        bool set_shared;               /* vol_attr.type "SHARED": LEAF → SHARED, a template's volume */
};

static void update_job_free(void *data)
{
        struct update_job *uj = data;

        g_free(uj->description);
        g_free(uj);
}

static int update_volume_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct update_job *uj = data;
        struct agent *a = uj->agent;
        struct agent_volume_guard guard = { 0 };
        g_autoptr(fy_volume_meta) meta = NULL;
        int r;

        agent_lockset_add_image(&guard.locks, &uj->vol.ref, true);
        r = agent_guard_acquire(a, &guard, &uj->vol, cancel, &meta, error);
        if (r < 0)
                goto out;
        if (uj->set_shared && meta->voltype != FY_VOLTYPE_SHARED) {
                /* Only a complete volume nothing is layered on may become a template's (VDSM: LEAF → SHARED). */
                if (meta->voltype != FY_VOLTYPE_LEAF || meta->legality != FY_LEGALITY_LEGAL ||
                    (uj->set_legality && uj->legality != FY_LEGALITY_LEGAL)) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "volume %s is %s and %s; only a LEGAL LEAF volume can become SHARED",
                                    uj->vol.ref.vol, fy_vol_voltype_to_string(meta->voltype),
                                    fy_vol_legality_to_string(meta->legality));
                        r = -EINVAL;
                        goto out;
                }
                meta->voltype = FY_VOLTYPE_SHARED;
        }
        if (uj->set_legality)
                meta->legality = uj->legality;
        if (uj->description) {
                g_free(meta->description);
                meta->description = g_strdup(uj->description);
        }
        if (uj->set_generation)
                meta->generation = uj->generation;
        r = agent_volume_meta_write(a, &uj->vol.ref, meta, error);
out:
        agent_guard_release(a, &guard, job);
        return r;
}

int agent_sdm_update_volume(struct agent *a, json_t *params, GError **error)
{
        struct update_job *uj = g_new0(struct update_job, 1);
        const char *job_id = NULL, *legality = NULL, *description = NULL, *type = NULL;
        json_t *attr = NULL;
        g_autofree char *desc = NULL;
        guint64 gen;
        int r;

        uj->agent = a;
        if ((r = fy_rpc_param_uuid(params, "job_id", true, &job_id, error)) < 0 ||
            (r = agent_vol_info_parse(params, "vol_info", &uj->vol, error)) < 0 ||
            (r = fy_rpc_param_object(params, "vol_attr", true, &attr, error)) < 0)
                goto fail;
        if ((r = fy_rpc_param_string(attr, "legality", false, 16, &legality, error)) < 0 ||
            (r = fy_rpc_param_string(attr, "description", false, FY_META_DESCRIPTION_MAX, &description, error)) < 0 ||
            (r = fy_rpc_param_string(attr, "type", false, 16, &type, error)) < 0)
                goto fail;
        if (type) {
                if (strcmp(type, "SHARED") != 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "vol_attr.type can only be SHARED (a LEAF volume becomes a template's), got '%.16s'",
                                    type);
                        r = -EINVAL;
                        goto fail;
                }
                uj->set_shared = true;
        }
        if (legality) {
                if (fy_vol_legality_from_string(legality, &uj->legality) < 0) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "vol_attr.legality must be LEGAL or ILLEGAL, got '%.16s'", legality);
                        r = -EINVAL;
                        goto fail;
                }
                uj->set_legality = true;
        }
        if (description) {
                if (strpbrk(description, "\n\r=")) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "vol_attr.description must not contain newlines or '='");
                        r = -EINVAL;
                        goto fail;
                }
                uj->description = g_strdup(description);
        }
        if (json_object_get(attr, "generation")) {
                if ((r = fy_rpc_param_uint(attr, "generation", true, FY_GEN_MAX, &gen, error)) < 0)
                        goto fail;
                uj->generation = (unsigned) gen;
                uj->set_generation = true;
        }
        if (!uj->set_legality && !uj->description && !uj->set_generation && !uj->set_shared) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "vol_attr must set at least one of legality, description, generation, type");
                r = -EINVAL;
                goto fail;
        }
        if ((r = agent_sd_check(a, uj->vol.ref.sd, error)) < 0)
                goto fail;
        desc = g_strdup_printf("update_volume %s/%s/%s", uj->vol.ref.sd, uj->vol.ref.img, uj->vol.ref.vol);
        return agent_jobs_add(a->jobs, job_id, "storage", desc, update_volume_run, uj, update_job_free, error);
fail:
        update_job_free(uj);
        return r;
}

/* ---- Volume.checksum ---- */

struct checksum_job {
        struct agent *agent;
        struct agent_endpoint vol;
        size_t block_size;
        uint64_t length;        /* the prefix to hash; 0 = all */
};

static int checksum_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct checksum_job *ck = data;
        struct agent *a = ck->agent;
        struct agent_volume_guard guard = { .no_lease = true };        /* a reader */
        g_autoptr(fy_volume_meta) meta = NULL;
        g_autoptr(fy_volume_meta) after = NULL;
        g_autofree char *path = NULL;
        struct agent_checksum_result res = { 0 };
        json_t *result;
        int r;

        /* Shared with other readers, exclusive of this host's copies into the image. */
        agent_lockset_add_image(&guard.locks, &ck->vol.ref, false);
        r = agent_guard_acquire(a, &guard, &ck->vol, cancel, &meta, error);
        if (r < 0)
                goto out;
        if (meta->legality != FY_LEGALITY_LEGAL) {
                g_set_error(error, FY_ERROR, FY_ERR_COPY,
                            "volume %s is ILLEGAL (a copy into it did not finish): its content means nothing", ck->vol.ref.vol);
                r = -EINVAL;
                goto out;
        }
        if (ck->length > meta->capacity) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "length %" G_GUINT64_FORMAT " is beyond volume %s's virtual size (%" G_GUINT64_FORMAT
                            " bytes); ask for at most that", ck->length, ck->vol.ref.vol, meta->capacity);
                r = -EINVAL;
                goto out;
        }
        path = agent_volume_path(a, &ck->vol.ref);
        /* Only this verb checks the tail (the engine's verify needs tail_zero with a length); it counts in the progress. */
        r = agent_checksum_image(path, qemu_format(meta->format), ck->length, ck->block_size,
                                 ck->length > 0 ? AGENT_CHECKSUM_CHECK_TAIL : 0, cancel, job_progress, job, &res, error);
        if (r < 0)
                goto out;
        if (ck->length > 0 && res.size != ck->length) {
                /* The image is shorter than its metadata says: a digest of less than asked would mislead. */
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "length %" G_GUINT64_FORMAT " is beyond volume %s's image (%" G_GUINT64_FORMAT " bytes)",
                            ck->length, ck->vol.ref.vol, res.virtual_size);
                r = -EINVAL;
                goto out;
        }
        /* A copy into it from another host (it does not take our local locks) would show here. */
        r = agent_volume_meta_read(a, &ck->vol.ref, &after, error);
        if (r < 0)
                goto out;
        if (after->generation != meta->generation || after->legality != FY_LEGALITY_LEGAL) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERATION_MISMATCH,
                            "volume %s changed while it was hashed (generation %u → %u, %s); hash it again",
                            ck->vol.ref.vol, meta->generation, after->generation,
                            fy_vol_legality_to_string(after->legality));
                r = -ESTALE;
                goto out;
        }
        result = json_pack("{s:s, s:s, s:I, s:I, s:I, s:i}",
                           "algorithm", AGENT_CHECKSUM_ALGORITHM,
                           "checksum", res.checksum,
                           "block_size", (json_int_t) (ck->block_size ? ck->block_size : AGENT_CHECKSUM_BLOCK_DEFAULT),
                           "size", (json_int_t) res.size,
                           "virtual_size", (json_int_t) res.virtual_size,
                           "generation", (int) meta->generation);
        /* Always computed here (with length: checked; without: nothing lies past size); never made up. */
        if (res.tail_checked)
                json_object_set_new(result, "tail_zero", json_boolean(res.tail_zero));
        agent_job_set_result(job, result);
out:
        agent_guard_release(a, &guard, job);
        return r;
}

int agent_volume_checksum(struct agent *a, json_t *params, GError **error)
{
        g_autofree struct checksum_job *ck = g_new0(struct checksum_job, 1);
        g_autoptr(json_t) wrapped = NULL;
        g_autofree char *desc = NULL;
        const char *job_id = NULL, *algorithm = AGENT_CHECKSUM_ALGORITHM;
        guint64 block_size = AGENT_CHECKSUM_BLOCK_DEFAULT, length = 0;
        int r;

        ck->agent = a;
        /* block_size's limit is checked below, with the sentence that says what is allowed. */
        if ((r = fy_rpc_param_uuid(params, "job_id", true, &job_id, error)) < 0 ||
            (r = fy_rpc_param_string(params, "algorithm", false, 16, &algorithm, error)) < 0 ||
            (r = fy_rpc_param_uint(params, "block_size", false, G_MAXUINT32, &block_size, error)) < 0 ||
            (r = fy_rpc_param_uint(params, "length", false, G_MAXINT64, &length, error)) < 0)
                return r;
        if (json_object_get(params, "length") && length == 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "length must be a positive number of bytes (leave it out to hash the whole volume)");
                return -EINVAL;
        }
        if (strcmp(algorithm, AGENT_CHECKSUM_ALGORITHM) != 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "algorithm must be \"" AGENT_CHECKSUM_ALGORITHM "\", got \"%.16s\"", algorithm);
                return -EINVAL;
        }
        if (block_size < AGENT_CHECKSUM_BLOCK_MIN || block_size > AGENT_CHECKSUM_BLOCK_MAX ||
            (block_size & (block_size - 1)) != 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "block_size must be a power of two from %u to %u bytes (16 MiB: the job holds a few "
                            "buffers of it), got %" G_GUINT64_FORMAT,
                            AGENT_CHECKSUM_BLOCK_MIN, AGENT_CHECKSUM_BLOCK_MAX, block_size);
                return -EINVAL;
        }
        ck->block_size = (size_t) block_size;
        ck->length = length;
        /* The volume's identity (and optional generation) is a vol_info at the top level. */
        wrapped = json_pack("{s:{}}", "volume");
        {
                json_t *v = json_object_get(wrapped, "volume");
                static const char *const keys[] = { "sd_id", "img_id", "vol_id", "generation" };

                for (size_t i = 0; i < G_N_ELEMENTS(keys); i++)
                        if (json_object_get(params, keys[i]))
                                json_object_set(v, keys[i], json_object_get(params, keys[i]));
        }
        if ((r = agent_vol_info_parse(wrapped, "volume", &ck->vol, error)) < 0 ||
            (r = agent_sd_check(a, ck->vol.ref.sd, error)) < 0)
                return r;
        desc = g_strdup_printf("checksum %s/%s/%s", ck->vol.ref.sd, ck->vol.ref.img, ck->vol.ref.vol);
        return agent_jobs_add(a->jobs, job_id, "storage", desc, checksum_run, g_steal_pointer(&ck), g_free, error);
}
