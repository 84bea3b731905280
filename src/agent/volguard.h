/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The guard of every job that changes a volume in place (copy_data's
 * destination, merge's base, sparsify, amend, update_volume): host-local
 * locks, then the volume's sanlock lease (never waiting: 651), then its
 * metadata read again under the lease and the generation the request
 * expects checked (911) before anything is written.
 */

#include <stdbool.h>
#include <gio/gio.h>
#include <jansson.h>

#include "lease.h"
#include "locks.h"
#include "storage.h"

struct agent;
struct agent_job;

/* A volume named by a request (VDSM's CopyDataDIVEndpoint), with the generation it expects. */
struct agent_endpoint {
        struct agent_volref ref;
        bool has_generation;
        unsigned generation;
};

/* Parses params[name] ({endpoint_type: "div", sd_id, img_id, vol_id, generation?}); ids must be UUIDs. */
int agent_endpoint_parse(json_t *params, const char *name, struct agent_endpoint *ep, GError **error);
/* The same for a vol_info without endpoint_type (SDM.update_volume, sparsify_volume, amend_volume). */
int agent_vol_info_parse(json_t *params, const char *name, struct agent_endpoint *ep, GError **error);

/* Locks of one volume operation in their global order: domains shared, images as asked. */
struct agent_lockset {
        struct agent_lock_req reqs[4];
        size_t n;
};

/* Adds name (taken) to the set; a name already there becomes exclusive if either asks. */
void agent_lockset_add(struct agent_lockset *ls, char *name, bool exclusive);
void agent_lockset_clear(struct agent_lockset *ls);
/* Domain shared, image exclusive: what a job changing one volume of img takes. */
void agent_lockset_add_image(struct agent_lockset *ls, const struct agent_volref *ref, bool exclusive);

/* What a job holds while it changes a volume: host-local locks, then the volume's lease. */
struct agent_volume_guard {
        struct agent_lockset locks;          /* filled by the caller before agent_guard_acquire() */
        bool no_lease;                       /* set by the caller: a reader, locks and metadata only */
        struct agent_job *job;               /* set by a caller in phase preparing: reports waiting_lock */
        char *lease_path;
        struct agent_lease lease;
        bool locked;
        bool leased;
};

/*
 * Takes the locks, then the lease of target (never waiting for another
 * host: 651), then reads target's metadata under the lease and checks the
 * generation the request expects (911). *ret_meta is set only on success;
 * on failure the caller still calls agent_guard_release(), and g->locked
 * tells whether the locks were had. With no_lease: the locks, then the
 * metadata and its generation check. The lease points into target, which
 * must outlive the guard. With g->job, the job reports phase waiting_lock
 * while it waits for the locks (another job of this host may hold them as
 * long as it copies: no stall), then preparing again.
 */
int agent_guard_acquire(struct agent *a, struct agent_volume_guard *g, const struct agent_endpoint *target,
                        GCancellable *cancel, struct fy_volume_meta **ret_meta, GError **error);
/* Reads ep's metadata and checks the generation it expects (911); *ret_meta is set only on success. */
int agent_volume_meta_read_expect(struct agent *a, const struct agent_endpoint *ep, struct fy_volume_meta **ret_meta,
                                  GError **error);
/* job (may be NULL) names the job in a warning when the lease cannot be released. */
void agent_guard_release(struct agent *a, struct agent_volume_guard *g, struct agent_job *job);

/* The volume is about to be written: ILLEGAL, GEN kept, so a job cut short leaves it unusable. */
int agent_volume_begin_write(struct agent *a, const struct agent_volref *ref, struct fy_volume_meta *meta,
                             GError **error);
/* Written: LEGAL and GEN old_gen+1 (wrapping at 1000) in one atomic metadata write. */
int agent_volume_end_write(struct agent *a, const struct agent_volref *ref, struct fy_volume_meta *meta,
                           unsigned old_gen, GError **error);
