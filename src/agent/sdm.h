/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* SDM verbs (DESIGN §6): data operations any host may run, as jobs. */

#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

#include "storage.h"

struct agent;

/* Validate the request and schedule the job; errors are immediate, the copy itself reports through the job. */
int agent_sdm_copy_data(struct agent *a, json_t *params, GError **error);
int agent_sdm_update_volume(struct agent *a, json_t *params, GError **error);
/*
 * Volume.checksum: a job hashing a volume's guest-visible content
 * (checksum.h); the digest is the job's "result" in Host.getJobs.
 */
int agent_volume_checksum(struct agent *a, json_t *params, GError **error);

/* A cold merge's subchain (VDSM's SubchainInfo): top's data goes into base, top's parent. */
struct agent_subchain {
        struct agent_volref top;
        struct agent_volref base;
        bool has_generation;
        unsigned base_generation;
};

int agent_subchain_parse(json_t *params, const char *name, struct agent_subchain *sc, GError **error);

/* SDM.merge(job_id, subchain_info, merge_bitmaps?): a job on any host. */
int agent_sdm_merge(struct agent *a, json_t *params, GError **error);
/* SDM.sparsify_volume(job_id, vol_info) and SDM.amend_volume(job_id, vol_info, qcow2_attr): jobs on any host. */
int agent_sdm_sparsify_volume(struct agent *a, json_t *params, GError **error);
int agent_sdm_amend_volume(struct agent *a, json_t *params, GError **error);

/*
 * The SPM's steps around SDM.merge, run in an SPM job that holds the
 * image's host-local locks. prepare: validates the subchain, grows base to
 * top's size if it is smaller, marks base ILLEGAL (GEN kept). finalize:
 * after the merge, marks top ILLEGAL and re-points top's child at base;
 * the engine then deletes top with Volume.delete.
 */
int agent_merge_prepare(struct agent *a, const struct agent_subchain *sc, GError **error);
int agent_merge_finalize(struct agent *a, const struct agent_subchain *sc, GError **error);

/* Volume.measure(storagedomainID, imageID, volumeID, dstVolFormat, backing_chain?, baseID?). */
struct agent_measure {
        struct agent_volref ref;
        enum fy_vol_format format;
        bool backing_chain;
        bool has_base;
        struct agent_volref base;
};
int agent_measure_parse(json_t *params, struct agent_measure *m, GError **error);
/* {required, fully-allocated} in bytes, from qemu-img measure. Blocking. */
json_t *agent_volume_measure(struct agent *a, const struct agent_measure *m, GError **error);
