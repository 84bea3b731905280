/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include "agent.h"
#include "error.h"
#include "jobs.h"
#include "jsonrpc.h"
#include "volguard.h"

int agent_endpoint_parse(json_t *params, const char *name, struct agent_endpoint *ep, GError **error)
{
        const char *type = NULL, *sd = NULL, *img = NULL, *vol = NULL;
        json_t *obj = NULL;
        guint64 gen;
        int r;

        r = fy_rpc_param_object(params, name, true, &obj, error);
        if (r < 0)
                return r;
        if ((r = fy_rpc_param_string(obj, "endpoint_type", true, 16, &type, error)) < 0)
                goto prefix;
        if (strcmp(type, "div") != 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "%s: endpoint_type must be \"div\" (a volume on a storage domain), got \"%.16s\"", name, type);
                return -EINVAL;
        }
        if ((r = fy_rpc_param_uuid(obj, "sd_id", true, &sd, error)) < 0 ||
            (r = fy_rpc_param_uuid(obj, "img_id", true, &img, error)) < 0 ||
            (r = fy_rpc_param_uuid(obj, "vol_id", true, &vol, error)) < 0)
                goto prefix;
        ep->has_generation = json_object_get(obj, "generation") && !json_is_null(json_object_get(obj, "generation"));
        if (ep->has_generation) {
                if ((r = fy_rpc_param_uint(obj, "generation", true, FY_GEN_MAX, &gen, error)) < 0)
                        goto prefix;
                ep->generation = (unsigned) gen;
        }
        agent_volref_init(&ep->ref, sd, img, vol);
        return 0;
prefix:
        g_prefix_error(error, "%s: ", name);
        return r;
}


void agent_lockset_add(struct agent_lockset *ls, char *name, bool exclusive)
{
        for (size_t i = 0; i < ls->n; i++)
                if (strcmp(ls->reqs[i].name, name) == 0) {
                        ls->reqs[i].exclusive |= exclusive;
                        g_free(name);
                        return;
                }
        g_assert(ls->n < G_N_ELEMENTS(ls->reqs));
        ls->reqs[ls->n++] = (struct agent_lock_req) { name, exclusive };
}

void agent_lockset_clear(struct agent_lockset *ls)
{
        for (size_t i = 0; i < ls->n; i++)
                g_free(ls->reqs[i].name);
        ls->n = 0;
}


int agent_guard_acquire(struct agent *a, struct agent_volume_guard *g, const struct agent_endpoint *target,
                         GCancellable *cancel, struct fy_volume_meta **ret_meta, GError **error)
{
        g_autoptr(fy_volume_meta) meta = NULL;
        int r;

        if (g->job)
                agent_job_set_phase(g->job, AGENT_JOB_PHASE_WAITING_LOCK);
        r = agent_locks_acquire(a->locks, g->locks.reqs, g->locks.n, cancel);
        if (g->job)
                agent_job_set_phase(g->job, AGENT_JOB_PHASE_PREPARING);
        if (r < 0)
                return r;
        g->locked = true;
        if (g->no_lease)
                return agent_volume_meta_read_expect(a, target, ret_meta, error);
        /* A missing volume is a clearer error than sanlock failing on its lease file. */
        r = agent_volume_meta_read(a, &target->ref, &meta, error);
        if (r < 0)
                return r;
        g->lease_path = agent_volume_lease_path(a, &target->ref);
        g->lease = (struct agent_lease) { target->ref.sd, target->ref.vol, g->lease_path, 0 };
        r = agent_lease_acquire(&g->lease, FY_ERR_LEASE_ACQUIRE, NULL, error);
        if (r < 0)
                return r;
        g->leased = true;

        /* Re-read under the lease: only now is the metadata ours. */
        return agent_volume_meta_read_expect(a, target, ret_meta, error);
}

int agent_volume_meta_read_expect(struct agent *a, const struct agent_endpoint *ep, struct fy_volume_meta **ret_meta,
                                  GError **error)
{
        g_autoptr(fy_volume_meta) meta = NULL;
        int r;

        r = agent_volume_meta_read(a, &ep->ref, &meta, error);
        if (r < 0)
                return r;
        if (ep->has_generation && ep->generation != meta->generation) {
                g_set_error(error, FY_ERROR, FY_ERR_GENERATION_MISMATCH,
                            "volume %s has generation %u, the request expected %u; nothing was changed",
                            ep->ref.vol, meta->generation, ep->generation);
                return -ESTALE;
        }
        *ret_meta = g_steal_pointer(&meta);
        return 0;
}

void agent_guard_release(struct agent *a, struct agent_volume_guard *g, struct agent_job *job)
{
        if (g->leased) {
                g_autoptr(GError) error = NULL;
                if (agent_lease_release(&g->lease, &error) < 0)
                        g_warning("%s%s%s", job ? agent_job_id(job) : "", job ? ": " : "", error->message);
        }
        if (g->locked)
                agent_locks_release(a->locks, g->locks.reqs, g->locks.n);
        agent_lockset_clear(&g->locks);
        g_clear_pointer(&g->lease_path, g_free);
}

int agent_volume_begin_write(struct agent *a, const struct agent_volref *ref, struct fy_volume_meta *meta,
                             GError **error)
{
        meta->legality = FY_LEGALITY_ILLEGAL;
        return agent_volume_meta_write(a, ref, meta, error);
}

int agent_volume_end_write(struct agent *a, const struct agent_volref *ref, struct fy_volume_meta *meta,
                           unsigned old_gen, GError **error)
{
        /* One atomic write: LEGAL and the next generation together. */
        meta->legality = FY_LEGALITY_LEGAL;
        meta->generation = (old_gen + 1) % (FY_GEN_MAX + 1);
        return agent_volume_meta_write(a, ref, meta, error);
}


void agent_lockset_add_image(struct agent_lockset *ls, const struct agent_volref *ref, bool exclusive)
{
        agent_lockset_add(ls, g_strconcat("sd:", ref->sd, NULL), false);
        agent_lockset_add(ls, g_strconcat("img:", ref->sd, ":", ref->img, NULL), exclusive);
}

int agent_vol_info_parse(json_t *params, const char *name, struct agent_endpoint *ep, GError **error)
{
        g_autoptr(json_t) wrapped = NULL;
        json_t *info = NULL;
        int r;

        r = fy_rpc_param_object(params, name, true, &info, error);
        if (r < 0)
                return r;
        /* VDSM's vol_info is the endpoint's fields without endpoint_type. */
        wrapped = json_pack("{s:O}", name, info);
        if (!json_object_get(info, "endpoint_type"))
                json_object_set_new(json_object_get(wrapped, name), "endpoint_type", json_string("div"));
        return agent_endpoint_parse(wrapped, name, ep, error);
}
