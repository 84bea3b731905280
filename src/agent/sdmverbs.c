/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The SDM verbs that change one volume in place, as copy_data changes its
 * destination: SDM.merge (cold merge: top's data into base), its SPM steps
 * StoragePool.prepareMerge and StoragePool.finalizeMerge, SDM.sparsify_volume,
 * SDM.amend_volume, and the synchronous Volume.measure.
 *
 * In-place jobs share one contract (in_place_run): host-local locks, the
 * volume's lease, its metadata read again under the lease and the expected
 * generation checked (911); every refusal happens before anything is
 * written; then ILLEGAL, the work, the inputs checked again, and LEGAL with
 * GEN+1 in one metadata write. A job that dies leaves the volume ILLEGAL with
 * its old GEN, and its lease is freed by sanlock with the agent.
 */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "agent.h"
#include "copy.h"
#include "error.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "qemuimg.h"
#include "rategov.h"
#include "sdm.h"
#include "storage.h"
#include "uuid.h"
#include "volguard.h"

#define CHAIN_MAX 128                  /* deeper than any real chain; bounds a corrupt PUUID loop */
#define IMAGE_VOLUMES_MAX 1024         /* volumes of one image read to validate a subchain */
#define SCAN_BUFFER (1024 * 1024)      /* sparsify reads this much at a time */
#define SCAN_BLOCK 4096                /* and punches all-zero blocks of this size */

static const char *qemu_format(enum fy_vol_format f)
{
        return f == FY_FORMAT_COW ? "qcow2" : "raw";
}

static bool has_parent(const struct fy_volume_meta *m)
{
        return fy_uuid_is_valid(m->parent) && strcmp(m->parent, FY_ZERO_UUID) != 0;
}

/* ---- subchains ---- */

int agent_subchain_parse(json_t *params, const char *name, struct agent_subchain *sc, GError **error)
{
        const char *sd = NULL, *img = NULL, *top = NULL, *base = NULL;
        json_t *obj = NULL, *gen;
        guint64 g;
        int r;

        r = fy_rpc_param_object(params, name, true, &obj, error);
        if (r < 0)
                return r;
        if ((r = fy_rpc_param_uuid(obj, "sd_id", true, &sd, error)) < 0 ||
            (r = fy_rpc_param_uuid(obj, "img_id", true, &img, error)) < 0 ||
            (r = fy_rpc_param_uuid(obj, "top_id", true, &top, error)) < 0 ||
            (r = fy_rpc_param_uuid(obj, "base_id", true, &base, error)) < 0)
                goto prefix;
        gen = json_object_get(obj, "base_generation");
        sc->has_generation = gen && !json_is_null(gen);
        if (sc->has_generation) {
                if ((r = fy_rpc_param_uint(obj, "base_generation", true, FY_GEN_MAX, &g, error)) < 0)
                        goto prefix;
                sc->base_generation = (unsigned) g;
        }
        if (g_ascii_strcasecmp(top, base) == 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "%s: top_id and base_id are the same volume", name);
                return -EINVAL;
        }
        agent_volref_init(&sc->top, sd, img, top);
        agent_volref_init(&sc->base, sd, img, base);
        return 0;
prefix:
        g_prefix_error(error, "%s: ", name);
        return r;
}

static void subchain_base_endpoint(const struct agent_subchain *sc, struct agent_endpoint *ep)
{
        *ep = (struct agent_endpoint) { .ref = sc->base, .has_generation = sc->has_generation,
                                        .generation = sc->base_generation };
}

/* The image's volumes: uuid → metadata (template volumes linked in included). */
static int image_read(struct agent *a, const char *sd, const char *img, GHashTable **ret, GError **error)
{
        g_autoptr(GHashTable) vols = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                                           (GDestroyNotify) fy_volume_meta_free);
        json_t *list = agent_sd_volumes(a, sd, img, error);
        size_t i;
        json_t *v;
        int r = 0;

        if (!list)
                return -ENOENT;
        if (json_array_size(list) > IMAGE_VOLUMES_MAX) {
                g_set_error(error, FY_ERROR, FY_ERR_METADATA, "image %s has %zu volumes, more than the %d a chain may have",
                            img, json_array_size(list), IMAGE_VOLUMES_MAX);
                json_decref(list);
                return -E2BIG;
        }
        json_array_foreach(list, i, v) {
                struct agent_volref ref;
                fy_volume_meta *meta = NULL;

                agent_volref_init(&ref, sd, img, json_string_value(v));
                r = agent_volume_meta_read(a, &ref, &meta, error);
                if (r < 0)
                        break;
                g_hash_table_insert(vols, g_strdup(ref.vol), meta);
        }
        json_decref(list);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&vols);
        return 0;
}

enum subchain_step { STEP_PREPARE, STEP_MERGE, STEP_FINALIZE };

/* What a subchain check found: metadata owned by the table it came from. */
struct subchain_state {
        GHashTable *vols;
        const struct fy_volume_meta *base, *top;
        char *child;                   /* top's child (an internal merge), or NULL (top is the leaf) */
};

static void subchain_state_clear(struct subchain_state *st)
{
        g_clear_pointer(&st->vols, g_hash_table_unref);
        g_clear_pointer(&st->child, g_free);
        st->base = st->top = NULL;
}

/* Volumes of vols whose parent is vol; *ret_one is one of them. */
static unsigned children_of(GHashTable *vols, const char *vol, const char **ret_one)
{
        GHashTableIter it;
        gpointer key, value;
        unsigned n = 0;

        g_hash_table_iter_init(&it, vols);
        while (g_hash_table_iter_next(&it, &key, &value)) {
                const struct fy_volume_meta *m = value;

                if (g_ascii_strcasecmp(m->parent, vol) == 0) {
                        n++;
                        if (ret_one)
                                *ret_one = key;
                }
        }
        return n;
}

/*
 * Validates a subchain against the image as storage has it now, before
 * anything is written: top is a volume of the image (920), base is its
 * parent (921), neither is a template's volume (219), top is base's only
 * child and has at most one child itself (a Ferry image is a linear chain),
 * and every volume below base is LEGAL (they are read through). Top must be
 * LEGAL to be merged; after finalize it is ILLEGAL, and a finalize may run
 * again. Base must be LEGAL for finalize: the merge has completed.
 */
static int subchain_check(struct agent *a, const struct agent_subchain *sc, enum subchain_step step,
                          struct subchain_state *st, GError **error)
{
        const struct fy_volume_meta *m;
        const char *child = NULL;
        struct agent_volref ref;
        unsigned n, depth;
        int r;

        subchain_state_clear(st);
        r = image_read(a, sc->top.sd, sc->top.img, &st->vols, error);
        if (r < 0)
                return r;
        st->top = g_hash_table_lookup(st->vols, sc->top.vol);
        st->base = g_hash_table_lookup(st->vols, sc->base.vol);
        if (!st->top || agent_volume_is_foreign(&sc->top, st->top)) {
                g_set_error(error, FY_ERROR, FY_ERR_NOT_IN_CHAIN, "top volume %s is not part of the chain of image %s",
                            sc->top.vol, sc->top.img);
                return -ENOENT;
        }
        if (!st->base) {
                g_set_error(error, FY_ERROR, FY_ERR_NOT_IN_CHAIN, "base volume %s is not part of the chain of image %s",
                            sc->base.vol, sc->base.img);
                return -ENOENT;
        }
        if (g_ascii_strcasecmp(st->top->parent, sc->base.vol) != 0) {
                g_set_error(error, FY_ERROR, FY_ERR_WRONG_PARENT,
                            "volume %s is not the parent of top volume %s (its parent is %s); only a volume and its "
                            "parent can be merged", sc->base.vol, sc->top.vol, st->top->parent);
                return -EINVAL;
        }
        if (st->base->voltype == FY_VOLTYPE_SHARED || st->top->voltype == FY_VOLTYPE_SHARED) {
                g_set_error(error, FY_ERROR, FY_ERR_SHARED_VOLUME,
                            "volume %s is a template's volume (SHARED) and is never written",
                            st->base->voltype == FY_VOLTYPE_SHARED ? sc->base.vol : sc->top.vol);
                return -EPERM;
        }
        n = children_of(st->vols, sc->base.vol, NULL);
        /* A finalize that completed (top ILLEGAL, its child re-pointed at base) whose answer was lost: run again, it
         * finds nothing left to do; Volume.delete of top then leaves base one child again. */
        if (step == STEP_FINALIZE && n == 2 && st->top->legality == FY_LEGALITY_ILLEGAL &&
            children_of(st->vols, sc->top.vol, NULL) == 0)
                n = 1;
        if (n != 1) {
                g_set_error(error, FY_ERROR, FY_ERR_MERGE,
                            "base volume %s has %u child volumes; it can be merged with its only child", sc->base.vol, n);
                return -EINVAL;
        }
        n = children_of(st->vols, sc->top.vol, &child);
        if (n > 1) {
                g_set_error(error, FY_ERROR, FY_ERR_MERGE,
                            "top volume %s has %u child volumes; an image is a linear chain", sc->top.vol, n);
                return -EINVAL;
        }
        st->child = n == 1 ? g_strdup(child) : NULL;
        if (step != STEP_FINALIZE && st->top->legality != FY_LEGALITY_LEGAL) {
                g_set_error(error, FY_ERROR, FY_ERR_MERGE,
                            "top volume %s is ILLEGAL (a copy into it, or a finalized merge, left it so)", sc->top.vol);
                return -EINVAL;
        }
        if (step == STEP_FINALIZE && st->base->legality != FY_LEGALITY_LEGAL) {
                g_set_error(error, FY_ERROR, FY_ERR_MERGE,
                            "base volume %s is ILLEGAL: the merge into it has not completed; run SDM.merge again",
                            sc->base.vol);
                return -EINVAL;
        }
        if (step == STEP_FINALIZE && sc->has_generation && st->base->generation != sc->base_generation) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERATION_MISMATCH,
                            "volume %s has generation %u, the request expected %u; nothing was changed",
                            sc->base.vol, st->base->generation, sc->base_generation);
                return -ESTALE;
        }

        /* Below base: read through by the merge, so every one must be complete. */
        ref = sc->base;
        m = st->base;
        for (depth = 0; has_parent(m); depth++) {
                if (depth >= CHAIN_MAX) {
                        g_set_error(error, FY_ERROR, FY_ERR_METADATA,
                                    "image %s: backing chain deeper than %d volumes (or a loop)", ref.img, CHAIN_MAX);
                        return -ELOOP;
                }
                agent_volref_init(&ref, ref.sd, ref.img, m->parent);
                m = g_hash_table_lookup(st->vols, ref.vol);
                if (!m) {
                        g_set_error(error, FY_ERROR, FY_ERR_METADATA, "image %s: backing chain broken at volume %s",
                                    ref.img, ref.vol);
                        return -ENOENT;
                }
                if (m->legality != FY_LEGALITY_LEGAL) {
                        g_set_error(error, FY_ERROR, FY_ERR_MERGE,
                                    "volume %s below the base is ILLEGAL (an earlier copy into it did not finish)", ref.vol);
                        return -EINVAL;
                }
        }
        return 0;
}

/* ---- in-place jobs ---- */

struct verb_job;

struct in_place_ops {
        const char *name;
        /* Under the lease, before anything is written: refuse what cannot be done. */
        int (*check)(struct verb_job *vj, struct fy_volume_meta *meta, GError **error);
        int (*work)(struct verb_job *vj, struct fy_volume_meta *meta, GCancellable *cancel, GError **error);
        /* After the work, before LEGAL: what it read may have changed meanwhile (optional). */
        int (*recheck)(struct verb_job *vj, GError **error);
        /* The work never changes what a guest reads, even cut short: a failure leaves the volume LEGAL. */
        bool keeps_data;
        /* Only a LEGAL volume (a merge's base is ILLEGAL by design: prepare marked it). */
        bool needs_legal;
};

struct verb_job {
        struct agent *agent;
        struct agent_job *job;
        const struct in_place_ops *ops;
        struct agent_endpoint target;
        struct agent_subchain subchain;        /* merge */
        struct subchain_state st;              /* merge: what check found */
        char compat[8];                        /* amend */
        uint64_t total;                        /* sparsify: bytes to scan, for progress */
};

static void verb_job_free(void *data)
{
        struct verb_job *vj = data;

        subchain_state_clear(&vj->st);
        g_free(vj);
}

static void job_progress(uint64_t done, uint64_t total, void *userdata)
{
        struct verb_job *vj = userdata;

        if (total > 0)
                agent_job_set_progress(vj->job, 100.0 * (double) MIN(done, total) / (double) total);
}

/*
 * After a failed job whose work keeps the data: LEGAL at the old generation,
 * as before the job (the engine's retry expects that generation). If the
 * write fails, the volume stays ILLEGAL and is handled as any cut-short job.
 */
static void legal_again(struct agent *a, struct verb_job *vj, struct fy_volume_meta *meta)
{
        g_autoptr(GError) error = NULL;

        meta->legality = FY_LEGALITY_LEGAL;
        if (agent_volume_meta_write(a, &vj->target.ref, meta, &error) < 0)
                g_warning("%s: volume %s stays ILLEGAL: %s", vj->ops->name, vj->target.ref.vol, error->message);
        else
                g_message("%s of volume %s failed; its data is unchanged, so it is LEGAL again (generation %u)",
                          vj->ops->name, vj->target.ref.vol, meta->generation);
}

static int in_place_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct verb_job *vj = data;
        struct agent *a = vj->agent;
        struct agent_volume_guard guard = { 0 };
        g_autoptr(fy_volume_meta) meta = NULL;
        unsigned old_gen;
        int r;

        vj->job = job;
        agent_lockset_add_image(&guard.locks, &vj->target.ref, true);
        r = agent_guard_acquire(a, &guard, &vj->target, cancel, &meta, error);
        if (r < 0)
                goto out;
        if (meta->voltype == FY_VOLTYPE_SHARED) {
                /* Thin VMs read it as their base: a template's volume never changes. */
                g_set_error(error, FY_ERROR, FY_ERR_SHARED_VOLUME,
                            "volume %s is a template's volume (SHARED) and is never written", vj->target.ref.vol);
                r = -EPERM;
                goto out;
        }
        if (vj->ops->needs_legal && meta->legality != FY_LEGALITY_LEGAL) {
                /* Its data may be incomplete (a copy or merge cut short): marking it LEGAL at the end would hide that. */
                g_set_error(error, FY_ERROR, FY_ERR_ILLEGAL_VOLUME,
                            "volume %s is ILLEGAL (a copy or merge into it did not complete); nothing was changed",
                            vj->target.ref.vol);
                r = -EINVAL;
                goto out;
        }
        r = vj->ops->check(vj, meta, error);
        if (r < 0)
                goto out;

        old_gen = meta->generation;
        r = agent_volume_begin_write(a, &vj->target.ref, meta, error);
        if (r < 0)
                goto out;
        r = vj->ops->work(vj, meta, cancel, error);
        if (r == 0 && g_cancellable_is_cancelled(cancel))
                r = -ECANCELED;
        if (r == 0 && vj->ops->recheck)
                r = vj->ops->recheck(vj, error);
        if (r < 0 && vj->ops->keeps_data)
                legal_again(a, vj, meta);
        if (r < 0)
                goto out;

        r = agent_volume_end_write(a, &vj->target.ref, meta, old_gen, error);
out:
        agent_guard_release(a, &guard, job);
        return r;
}

static int schedule(struct agent *a, json_t *params, struct verb_job *vj, GError **error)
{
        g_autofree char *desc = NULL;
        const char *job_id = NULL;
        int r;

        vj->agent = a;
        if ((r = fy_rpc_param_uuid(params, "job_id", true, &job_id, error)) < 0 ||
            (r = agent_sd_check(a, vj->target.ref.sd, error)) < 0) {
                verb_job_free(vj);
                return r;
        }
        desc = g_strdup_printf("%s %s/%s/%s", vj->ops->name, vj->target.ref.sd, vj->target.ref.img,
                               vj->target.ref.vol);
        return agent_jobs_add(a->jobs, job_id, "storage", desc, in_place_run, vj, verb_job_free, error);
}

/* ---- SDM.merge ---- */

/* A JSON string for qemu-img: a volume of the image, opened as its metadata says, its backing chain cut. */
static json_t *volume_node(struct agent *a, const struct agent_volref *ref, enum fy_vol_format format)
{
        g_autofree char *path = agent_volume_path(a, ref);
        json_t *node = json_pack("{s:s, s:{s:s, s:s}}", "driver", qemu_format(format),
                                 "file", "driver", "file", "filename", path);

        if (format == FY_FORMAT_COW)
                json_object_set_new(node, "backing", json_null());
        return node;
}

static int volume_statvfs_free(struct agent *a, const char *sd, uint64_t *ret, GError **error)
{
        g_autofree char *path = agent_sd_path(a, sd);
        struct statvfs st;

        if (statvfs(path, &st) < 0) {
                int e = errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot stat %s: %s", path, g_strerror(e));
                return -e;
        }
        *ret = (uint64_t) st.f_bavail * st.f_frsize;
        return 0;
}

static int merge_check(struct verb_job *vj, struct fy_volume_meta *base, GError **error)
{
        struct agent *a = vj->agent;
        g_autoptr(json_t) node = NULL;
        g_autofree char *spec = NULL;
        uint64_t need = 0, avail = 0;
        int r;

        r = subchain_check(a, &vj->subchain, STEP_MERGE, &vj->st, error);
        if (r < 0)
                return r;
        if (base->capacity < vj->st.top->capacity) {
                /* qemu-img would grow the base by itself, behind the metadata's back. */
                g_set_error(error, FY_ERROR, FY_ERR_MERGE,
                            "base volume %s (%" G_GUINT64_FORMAT " bytes) is smaller than top volume %s (%" G_GUINT64_FORMAT
                            " bytes); StoragePool.prepareMerge on the SPM enlarges it first; nothing was changed",
                            vj->subchain.base.vol, base->capacity, vj->subchain.top.vol, vj->st.top->capacity);
                return -EFBIG;
        }
        /*
         * What the merge can add to the base is at most top's own layer:
         * measured as a qcow2 image of its own (data plus metadata), never
         * less than the raw data. Refused when the domain lacks it.
         */
        node = volume_node(a, &vj->subchain.top, vj->st.top->format);
        spec = json_dumps(node, JSON_COMPACT);
        r = agent_qemu_img_measure(spec, "qcow2", &need, NULL, error);
        if (r < 0) {
                g_prefix_error(error, "measuring top volume %s: ", vj->subchain.top.vol);
                return r;
        }
        r = volume_statvfs_free(a, vj->subchain.base.sd, &avail, error);
        if (r < 0)
                return r;
        if (need > avail) {
                g_set_error(error, FY_ERROR, FY_ERR_NO_SPACE,
                            "merging %s into %s needs up to %" G_GUINT64_FORMAT " bytes, storage domain %s has %"
                            G_GUINT64_FORMAT " free; nothing was changed",
                            vj->subchain.top.vol, vj->subchain.base.vol, need, vj->subchain.base.sd, avail);
                return -ENOSPC;
        }
        vj->total = vj->st.top->capacity;
        return 0;
}

static int merge_work(struct verb_job *vj, struct fy_volume_meta *base, GCancellable *cancel, GError **error)
{
        struct agent *a = vj->agent;
        g_autofree char *top_path = agent_volume_path(a, &vj->subchain.top);
        g_autofree char *base_path = agent_volume_path(a, &vj->subchain.base);
        struct agent_rate_flow *flow;
        int r;

        /* The host's copy cap covers merges too: they move bytes on the same storage. */
        flow = agent_rate_flow_join(a->copy_gov);
        r = agent_qemu_img_commit(top_path, base_path, vj->total, flow, cancel, job_progress, vj, error);
        agent_rate_flow_leave(flow);
        return r;
}

static int merge_recheck(struct verb_job *vj, GError **error)
{
        struct subchain_state st = { 0 };
        int r;

        /* A copy into top or below base on another host may have started meanwhile. */
        r = subchain_check(vj->agent, &vj->subchain, STEP_MERGE, &st, error);
        subchain_state_clear(&st);
        return r;
}

static const struct in_place_ops merge_ops = { "merge", merge_check, merge_work, merge_recheck };

int agent_sdm_merge(struct agent *a, json_t *params, GError **error)
{
        struct verb_job *vj = g_new0(struct verb_job, 1);
        bool merge_bitmaps = false;
        int r;

        vj->ops = &merge_ops;
        if ((r = agent_subchain_parse(params, "subchain_info", &vj->subchain, error)) < 0 ||
            (r = fy_rpc_param_bool(params, "merge_bitmaps", false, &merge_bitmaps, error)) < 0) {
                verb_job_free(vj);
                return r;
        }
        if (merge_bitmaps) {
                verb_job_free(vj);
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "merge_bitmaps is not supported by this agent; pass false");
                return -EOPNOTSUPP;
        }
        subchain_base_endpoint(&vj->subchain, &vj->target);
        return schedule(a, params, vj, error);
}

/* ---- StoragePool.prepareMerge / finalizeMerge (SPM; the caller holds the image's host-local locks) ---- */

static int grow_raw(const char *path, uint64_t size, bool allocate, GError **error)
{
        int fd, r = 0;

        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                r = errno;
        else if (ftruncate(fd, (off_t) size) < 0)
                r = errno;
        else if (allocate)
                r = posix_fallocate(fd, 0, (off_t) size);
        if (r == 0 && fd >= 0 && fsync(fd) < 0)
                r = errno;
        if (fd >= 0)
                close(fd);
        if (r != 0) {
                g_set_error(error, FY_ERROR, r == ENOSPC ? FY_ERR_NO_SPACE : FY_ERR_GENERAL,
                            "cannot grow %s to %" G_GUINT64_FORMAT " bytes: %s", path, size, g_strerror(r));
                return -r;
        }
        return 0;
}

int agent_merge_prepare(struct agent *a, const struct agent_subchain *sc, GError **error)
{
        g_autoptr(fy_volume_meta) base = NULL;
        struct agent_volume_guard guard = { 0 };      /* no locks: the SPM job holds the image's */
        struct agent_endpoint target;
        struct subchain_state st = { 0 };
        int r;

        subchain_base_endpoint(sc, &target);
        r = agent_guard_acquire(a, &guard, &target, NULL, &base, error);
        if (r < 0)
                goto out;
        r = subchain_check(a, sc, STEP_PREPARE, &st, error);
        if (r < 0)
                goto out;
        if (st.top->capacity > base->capacity) {
                /* The merged base holds what top shows: as large as top. */
                g_autofree char *path = agent_volume_path(a, &sc->base);

                if (base->format == FY_FORMAT_RAW)
                        r = grow_raw(path, st.top->capacity, base->type == FY_TYPE_PREALLOCATED, error);
                else
                        r = agent_qemu_img_resize(path, "qcow2", st.top->capacity, error);
                if (r < 0)
                        goto out;
                g_message("merge: base volume %s grown from %" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT " bytes",
                          sc->base.vol, base->capacity, st.top->capacity);
                base->capacity = st.top->capacity;
        }
        /* No VM may start on the subchain until the merge has completed (GEN stays: SDM.merge expects it). */
        r = agent_volume_begin_write(a, &sc->base, base, error);
out:
        subchain_state_clear(&st);
        agent_guard_release(a, &guard, NULL);
        return r;
}

/*
 * After SDM.merge: top's data is in base, so top leaves the chain. Top is
 * marked ILLEGAL first (nothing may use it from now on), then its child, if
 * any, is re-pointed at base (qcow2 header, then PUUID). Each step can run
 * again after a crash: the engine then deletes top with Volume.delete,
 * which makes base a LEAF again when top was the leaf.
 */
int agent_merge_finalize(struct agent *a, const struct agent_subchain *sc, GError **error)
{
        struct subchain_state st = { 0 };
        struct agent_volume_lease leases[3];
        struct agent_volref cref;
        g_autoptr(fy_volume_meta) top = NULL;
        g_autoptr(fy_volume_meta) child = NULL;
        int r;

        memset(leases, 0, sizeof(leases));

        r = subchain_check(a, sc, STEP_FINALIZE, &st, error);
        if (r < 0)
                goto out;
        /* Base must not change while its child is re-pointed; top and the child are written. */
        if ((r = agent_volume_lease_take(a, &sc->base, FY_ERR_LEASE_ACQUIRE, false, &leases[0], error)) < 0 ||
            (r = agent_volume_lease_take(a, &sc->top, FY_ERR_LEASE_ACQUIRE, false, &leases[1], error)) < 0)
                goto out;
        if (st.child) {
                agent_volref_init(&cref, sc->top.sd, sc->top.img, st.child);
                r = agent_volume_lease_take(a, &cref, FY_ERR_LEASE_ACQUIRE, false, &leases[2], error);
                if (r < 0)
                        goto out;
        }
        /* Read again under the leases. */
        r = subchain_check(a, sc, STEP_FINALIZE, &st, error);
        if (r < 0)
                goto out;
        if (st.child && strcmp(st.child, leases[2].ref.vol) != 0) {
                g_set_error(error, FY_ERROR, FY_ERR_MERGE, "top volume %s changed its child meanwhile; retry", sc->top.vol);
                r = -EAGAIN;
                goto out;
        }
        top = fy_volume_meta_copy(st.top);
        if (top->legality != FY_LEGALITY_ILLEGAL) {
                top->legality = FY_LEGALITY_ILLEGAL;
                r = agent_volume_meta_write(a, &sc->top, top, error);
                if (r < 0)
                        goto out;
        }
        if (st.child) {
                g_autofree char *path = agent_volume_path(a, &cref);

                r = agent_volume_meta_read(a, &cref, &child, error);
                if (r < 0)
                        goto out;
                /* Base now reads as top did: only the header changes (a bare name, as Volume.create writes). */
                r = agent_qemu_img_rebase_unsafe(path, sc->base.vol, qemu_format(st.base->format), error);
                if (r < 0)
                        goto out;
                g_strlcpy(child->parent, sc->base.vol, sizeof(child->parent));
                r = agent_volume_meta_write(a, &cref, child, error);
                if (r < 0)
                        goto out;
        }
        g_message("merge finalized: volume %s left the chain of image %s (%s)", sc->top.vol, sc->top.img,
                  st.child ? "its child now on the base" : "the base becomes the leaf once it is deleted");
out:
        for (size_t i = G_N_ELEMENTS(leases); i-- > 0;)
                agent_volume_lease_drop(&leases[i]);
        subchain_state_clear(&st);
        return r;
}

/* ---- SDM.sparsify_volume ---- */

static int punch(int fd, uint64_t off, uint64_t len, GError **error)
{
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) len) == 0)
                return 0;
        g_set_error(error, FY_ERROR, errno == EOPNOTSUPP ? FY_ERR_UNSUPPORTED : FY_ERR_GENERAL,
                    "cannot punch a hole at %" G_GUINT64_FORMAT ": %s", off, g_strerror(errno));
        return -errno;
}

struct scan {
        struct verb_job *vj;
        int fd;
        char *buf;
        GCancellable *cancel;
        GError **error;
};

/* Punches every all-zero SCAN_BLOCK of [off, off+len) of the file: the bytes read the same, as holes. */
static int scan_range(struct scan *s, uint64_t off, uint64_t len)
{
        uint64_t end = off + len;

        while (off < end) {
                size_t n = (size_t) MIN(end - off, (uint64_t) SCAN_BUFFER);
                ssize_t got;
                size_t pos = 0;

                if (g_cancellable_is_cancelled(s->cancel))
                        return -ECANCELED;
                got = pread(s->fd, s->buf, n, (off_t) off);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0) {
                        int e = got < 0 ? errno : EIO;
                        g_set_error(s->error, FY_ERROR, FY_ERR_GENERAL, "cannot read at %" G_GUINT64_FORMAT ": %s",
                                    off, g_strerror(e));
                        return -e;
                }
                while (pos < (size_t) got) {
                        size_t run = 0;

                        while (pos + run < (size_t) got) {
                                size_t blk = MIN((size_t) SCAN_BLOCK, (size_t) got - pos - run);
                                if (!agent_buf_is_zero(s->buf + pos + run, blk))
                                        break;
                                run += blk;
                        }
                        if (run > 0) {
                                int r = punch(s->fd, off + pos, run, s->error);
                                if (r < 0)
                                        return r;
                                pos += run;
                        } else {
                                pos += MIN((size_t) SCAN_BLOCK, (size_t) got - pos);
                        }
                }
                off += (uint64_t) got;
        }
        return 0;
}

static int sparsify_raw(struct scan *s, GError **error)
{
        off_t size = lseek(s->fd, 0, SEEK_END), off = 0;

        if (size < 0)
                return -errno;
        s->vj->total = (uint64_t) size;
        while (off < size) {
                off_t data = lseek(s->fd, off, SEEK_DATA), hole;
                int r;

                if (data < 0 && errno == ENXIO)
                        break;          /* only a hole up to the end */
                if (data < 0)
                        return -errno;
                hole = lseek(s->fd, data, SEEK_HOLE);
                if (hole < 0)
                        return -errno;
                r = scan_range(s, (uint64_t) data, (uint64_t) (hole - data));
                if (r < 0)
                        return r;
                off = hole;
                job_progress((uint64_t) off, (uint64_t) size, s->vj);
        }
        return 0;
}

/* A data extent of the qcow2's own layer: its clusters live at [offset, offset+length) of the file. */
static int sparsify_extent(const struct agent_qemu_img_extent *e, void *data)
{
        struct scan *s = data;
        int r = 0;

        if (e->depth == 0 && e->data && e->has_offset && !e->zero)
                r = scan_range(s, e->offset, e->length);
        job_progress(e->start + e->length, s->vj->total, s->vj);
        return r;
}

static int sparsify_check(struct verb_job *vj, struct fy_volume_meta *meta, GError **error)
{
        if (meta->type == FY_TYPE_PREALLOCATED) {
                g_set_error(error, FY_ERROR, FY_ERR_UNSUPPORTED,
                            "volume %s is PREALLOCATED: its space is allocated on purpose; only SPARSE volumes are sparsified",
                            vj->target.ref.vol);
                return -EOPNOTSUPP;
        }
        return 0;
}

static int sparsify_work(struct verb_job *vj, struct fy_volume_meta *meta, GCancellable *cancel, GError **error)
{
        g_autofree char *path = agent_volume_path(vj->agent, &vj->target.ref);
        g_autofree char *buf = g_malloc(SCAN_BUFFER);
        struct scan s = { vj, -1, buf, cancel, error };
        struct stat st;
        uint64_t before;
        int r;

        s.fd = open(path, O_RDWR | O_CLOEXEC);
        if (s.fd < 0 || fstat(s.fd, &st) < 0) {
                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot open %s: %s", path, g_strerror(-r));
                goto out;
        }
        before = (uint64_t) st.st_blocks * 512;
        if (meta->format == FY_FORMAT_RAW) {
                r = sparsify_raw(&s, error);
        } else {
                /* qcow2: zero clusters of its own layer keep their mapping (they still hide the backing)
                 * but give their space back; metadata clusters are never touched. */
                vj->total = meta->capacity;
                r = agent_qemu_img_map(path, "qcow2", cancel, sparsify_extent, &s, error);
        }
        if (r == 0 && fsync(s.fd) < 0)
                r = -errno;
        if (r < 0 && error && !*error)
                g_set_error(error, FY_ERROR, r == -ECANCELED ? FY_ERR_ABORTED : FY_ERR_GENERAL, "sparsifying %s: %s",
                            path, g_strerror(-r));
        if (r == 0 && fstat(s.fd, &st) == 0)
                g_message("sparsify: volume %s allocation %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT " bytes",
                          vj->target.ref.vol, before, (uint64_t) st.st_blocks * 512);
out:
        if (s.fd >= 0)
                close(s.fd);
        return r;
}

/* Only all-zero blocks become holes, which read as zeros: cut short anywhere, the guest reads the same. */
static const struct in_place_ops sparsify_ops = { "sparsify_volume", sparsify_check, sparsify_work, NULL, true, true };

int agent_sdm_sparsify_volume(struct agent *a, json_t *params, GError **error)
{
        struct verb_job *vj = g_new0(struct verb_job, 1);
        int r;

        vj->ops = &sparsify_ops;
        r = agent_vol_info_parse(params, "vol_info", &vj->target, error);
        if (r < 0) {
                verb_job_free(vj);
                return r;
        }
        return schedule(a, params, vj, error);
}

/* ---- SDM.amend_volume ---- */

static int amend_check(struct verb_job *vj, struct fy_volume_meta *meta, GError **error)
{
        if (meta->format != FY_FORMAT_COW) {
                g_set_error(error, FY_ERROR, FY_ERR_UNSUPPORTED,
                            "volume %s is RAW; only COW (qcow2) volumes have qcow2 attributes", vj->target.ref.vol);
                return -EOPNOTSUPP;
        }
        return 0;
}

static int amend_work(struct verb_job *vj, struct fy_volume_meta *meta, GCancellable *cancel, GError **error)
{
        g_autofree char *path = agent_volume_path(vj->agent, &vj->target.ref);

        return agent_qemu_img_amend_compat(path, vj->compat, cancel, job_progress, vj, error);
}

static const struct in_place_ops amend_ops = { "amend_volume", amend_check, amend_work, NULL, false, true };

int agent_sdm_amend_volume(struct agent *a, json_t *params, GError **error)
{
        struct verb_job *vj = g_new0(struct verb_job, 1);
        const char *compat = NULL;
        json_t *attr = NULL;
        int r;

        vj->ops = &amend_ops;
        if ((r = agent_vol_info_parse(params, "vol_info", &vj->target, error)) < 0 ||
            (r = fy_rpc_param_object(params, "qcow2_attr", true, &attr, error)) < 0 ||
            (r = fy_rpc_param_string(attr, "compat", true, 8, &compat, error)) < 0) {
                verb_job_free(vj);
                return r;
        }
        /* VDSM's Qcow2Compat. */
        if (strcmp(compat, "0.10") != 0 && strcmp(compat, "1.1") != 0) {
                verb_job_free(vj);
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "qcow2_attr.compat must be \"0.10\" or \"1.1\", got \"%.8s\"",
                            compat);
                return -EINVAL;
        }
        g_strlcpy(vj->compat, compat, sizeof(vj->compat));
        return schedule(a, params, vj, error);
}

/* ---- Volume.measure ---- */

int agent_measure_parse(json_t *params, struct agent_measure *m, GError **error)
{
        const char *sd = NULL, *img = NULL, *vol = NULL, *base = NULL;
        json_t *fmt = json_object_get(params, "dstVolFormat");
        int r;

        m->backing_chain = true;
        if ((r = fy_rpc_param_uuid(params, "storagedomainID", true, &sd, error)) < 0 ||
            (r = fy_rpc_param_uuid(params, "imageID", true, &img, error)) < 0 ||
            (r = fy_rpc_param_uuid(params, "volumeID", true, &vol, error)) < 0 ||
            (r = fy_rpc_param_bool(params, "backing_chain", false, &m->backing_chain, error)) < 0 ||
            (r = fy_rpc_param_uuid(params, "baseID", false, &base, error)) < 0)
                return r;
        /* VDSM accepts the names and the old numeric codes (4 COW, 5 RAW). */
        if (json_is_integer(fmt) && (json_integer_value(fmt) == 4 || json_integer_value(fmt) == 5))
                m->format = json_integer_value(fmt) == 4 ? FY_FORMAT_COW : FY_FORMAT_RAW;
        else if (!json_is_string(fmt) || fy_vol_format_from_string(json_string_value(fmt), &m->format) < 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS, "dstVolFormat must be \"RAW\" or \"COW\"");
                return -EINVAL;
        }
        agent_volref_init(&m->ref, sd, img, vol);
        m->has_base = base != NULL;
        if (base)
                agent_volref_init(&m->base, sd, img, base);
        return 0;
}

/*
 * The image as qemu-img is to read it, from the metadata: every node's
 * format given (never probed), the chain cut after the last node wanted.
 */
static json_t *chain_node(struct agent *a, const struct agent_measure *m, GError **error)
{
        struct agent_volref ref = m->ref;
        json_t *root = NULL, *tail = NULL;

        for (unsigned depth = 0; depth < CHAIN_MAX; depth++) {
                g_autoptr(fy_volume_meta) meta = NULL;
                json_t *node;

                if (agent_volume_meta_read(a, &ref, &meta, error) < 0)
                        goto fail;
                if (depth == 0 && m->has_base && m->backing_chain &&
                    (!has_parent(meta) || g_ascii_strcasecmp(meta->parent, m->base.vol) != 0)) {
                        g_set_error(error, FY_ERROR, FY_ERR_UNSUPPORTED,
                                    "baseID %s is not the parent of volume %s; only its parent can be the base",
                                    m->base.vol, m->ref.vol);
                        goto fail;
                }
                node = volume_node(a, &ref, meta->format);
                if (tail)
                        json_object_set_new(tail, "backing", node);    /* replaces the cut */
                else
                        root = node;
                tail = node;
                if (!has_parent(meta) || !m->backing_chain || (m->has_base && depth == 1))
                        return root;
                agent_volref_init(&ref, ref.sd, ref.img, meta->parent);
        }
        g_set_error(error, FY_ERROR, FY_ERR_METADATA, "volume %s: backing chain deeper than %d volumes", m->ref.vol,
                    CHAIN_MAX);
fail:
        json_decref(root);
        return NULL;
}

json_t *agent_volume_measure(struct agent *a, const struct agent_measure *m, GError **error)
{
        g_autoptr(json_t) node = NULL;
        g_autofree char *spec = NULL;
        uint64_t required = 0, full = 0;

        if (agent_sd_check(a, m->ref.sd, error) < 0)
                return NULL;
        node = chain_node(a, m, error);
        if (!node)
                return NULL;
        spec = json_dumps(node, JSON_COMPACT);
        if (agent_qemu_img_measure(spec, qemu_format(m->format), &required, &full, error) < 0)
                return NULL;
        return json_pack("{s:I, s:I}", "required", (json_int_t) required, "fully-allocated", (json_int_t) full);
}
