/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * File storage domains in the VDSM v5 layout (DESIGN §3). Every identifier
 * reaching a path here has been checked as a UUID by the caller; the
 * functions assert it again. Safe to call from job threads.
 */

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <jansson.h>

#include "lease.h"
#include "volmeta.h"

#define AGENT_SD_NAME_MAX 50
#define AGENT_VOLUME_CAPACITY_MAX (64ull << 40)   /* 64 TiB */

struct agent;

struct agent_volref {
        char sd[FY_UUID_STR_LEN + 1];
        char img[FY_UUID_STR_LEN + 1];
        char vol[FY_UUID_STR_LEN + 1];
};

/* Fills ref from validated UUID strings (lower-cased). */
void agent_volref_init(struct agent_volref *ref, const char *sd, const char *img, const char *vol);

char *agent_sd_path(struct agent *a, const char *sd);
char *agent_image_path(struct agent *a, const char *sd, const char *img);
char *agent_volume_path(struct agent *a, const struct agent_volref *ref);
char *agent_volume_lease_path(struct agent *a, const struct agent_volref *ref);
char *agent_sd_ids_path(struct agent *a, const char *sd);
char *agent_sd_leases_path(struct agent *a, const char *sd);

int agent_sd_create(struct agent *a, const char *sd, const char *name, GError **error);
/*
 * Removes the volume metadata temp files ("<vol>.meta.tmp.<random>") of the
 * domain last changed before `before` (g_get_real_time()), logging each: an
 * agent killed between a metadata write and its rename leaves one. Called
 * when the pool is connected after the agent started; a write on another
 * host takes milliseconds, so one that old is no write in progress.
 * Returns how many were removed.
 */
unsigned agent_sd_remove_stale_temps(struct agent *a, const char *sd, gint64 before);
/* Validates the domain's metadata; FY_ERR_STORAGE_DOMAIN_DOES_NOT_EXIST when absent. */
int agent_sd_check(struct agent *a, const char *sd, GError **error);
json_t *agent_sd_info(struct agent *a, const char *sd, GError **error);
json_t *agent_sd_stats(struct agent *a, const char *sd, GError **error);
/* Volume uuids of an image, or of all images of the domain when img is NULL ({img: [vol…]}). */
json_t *agent_sd_volumes(struct agent *a, const char *sd, const char *img, GError **error);

/*
 * Reads and validates a volume's metadata. Its IMAGE must be ref's image,
 * except for a SHARED (template) volume linked into another image.
 */
int agent_volume_meta_read(struct agent *a, const struct agent_volref *ref,
                           struct fy_volume_meta **ret, GError **error);
/* Whether meta (read through ref) is a template volume linked into ref's image, not one of its own. */
bool agent_volume_is_foreign(const struct agent_volref *ref, const struct fy_volume_meta *meta);
int agent_volume_meta_write(struct agent *a, const struct agent_volref *ref,
                            const struct fy_volume_meta *meta, GError **error);

struct agent_volume_create {
        uint64_t capacity;
        enum fy_vol_format format;
        enum fy_vol_type type;
        const char *disktype;
        const char *description;
        const char *parent;          /* parent vol uuid, or NULL */
        /*
         * The parent's image (VDSM's srcImgUUID) when it is not this image: the
         * parent must then be a template volume (VOLTYPE SHARED), which is
         * hard-linked into this image with its .meta and .lease so the bare
         * backing name resolves; NULL or this image for a parent in the image.
         */
        const char *parent_img;
        uint64_t initial_size;       /* unused for file domains, accepted for VDSM compatibility */
};
int agent_volume_create(struct agent *a, const struct agent_volref *ref,
                        const struct agent_volume_create *spec, GError **error);
int agent_volume_delete(struct agent *a, const struct agent_volref *ref, GError **error);
int agent_image_delete(struct agent *a, const char *sd, const char *img, GError **error);
json_t *agent_volume_info(struct agent *a, const struct agent_volref *ref, GError **error);

/*
 * The sanlock lease of a volume an operation changes but does not own
 * through a job's guard (the volume itself on delete, the parent on create
 * and delete). Taken without waiting: held by another host → busy_code.
 */
struct agent_volume_lease {
        struct agent_volref ref;       /* own copy: lease points into it, callers' refs may be gone */
        char *path;
        struct agent_lease lease;
        bool held;
};

/*
 * Acquires ref's lease. With allow_unformatted, a lease that was never
 * created or formatted (a volume whose creation did not finish) is no
 * error: *vl stays not held. Any other failure fails closed.
 */
int agent_volume_lease_take(struct agent *a, const struct agent_volref *ref, int busy_code,
                            bool allow_unformatted, struct agent_volume_lease *vl, GError **error);
void agent_volume_lease_drop(struct agent_volume_lease *vl);

/* Other volumes of ref's image whose parent is ref's volume (uuids). */
int agent_volume_children(struct agent *a, const struct agent_volref *ref, GPtrArray **ret);
