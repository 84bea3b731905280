/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Volume metadata, VDSM file-domain compatible: sorted KEY=VALUE lines ending
 * with "EOF", stored in <vol_uuid>.meta beside the volume.
 */

#include <stdint.h>
#include <glib.h>

#define FY_META_MAX 4096               /* a .meta file is never larger (VDSM: one 512 B block) */
#define FY_META_DESCRIPTION_MAX 210    /* VDSM's DESCRIPTION_SIZE */
#define FY_GEN_MAX 999                 /* GEN wraps at 1000 */
#define FY_UUID_STR_LEN 36

enum fy_vol_format { FY_FORMAT_RAW, FY_FORMAT_COW };
enum fy_vol_legality { FY_LEGALITY_LEGAL, FY_LEGALITY_ILLEGAL };
enum fy_vol_type { FY_TYPE_SPARSE, FY_TYPE_PREALLOCATED };
enum fy_vol_voltype { FY_VOLTYPE_LEAF, FY_VOLTYPE_INTERNAL, FY_VOLTYPE_SHARED };

struct fy_volume_meta {
        uint64_t capacity;               /* CAP, bytes */
        int64_t ctime;                   /* CTIME, seconds since epoch */
        char *description;               /* DESCRIPTION, may be "" */
        char *disktype;                  /* DISKTYPE, e.g. "DATA" */
        char domain[FY_UUID_STR_LEN + 1];/* DOMAIN */
        enum fy_vol_format format;       /* FORMAT */
        unsigned generation;             /* GEN 0..999 */
        char image[FY_UUID_STR_LEN + 1]; /* IMAGE */
        enum fy_vol_legality legality;   /* LEGALITY */
        char parent[FY_UUID_STR_LEN + 1];/* PUUID, zero UUID when none */
        enum fy_vol_type type;           /* TYPE */
        enum fy_vol_voltype voltype;     /* VOLTYPE */
};

typedef struct fy_volume_meta fy_volume_meta;

struct fy_volume_meta *fy_volume_meta_new(void);
void fy_volume_meta_free(struct fy_volume_meta *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(fy_volume_meta, fy_volume_meta_free)
struct fy_volume_meta *fy_volume_meta_copy(const struct fy_volume_meta *m);

/* Strict parse: every key once, known keys only (unknown keys are kept out), values validated. */
int fy_volume_meta_parse(const char *text, size_t len, struct fy_volume_meta **ret_meta, GError **error);
/* Returns the canonical text (sorted keys, "EOF\n" last). */
char *fy_volume_meta_format(const struct fy_volume_meta *m);

int fy_volume_meta_read_at(int dirfd, const char *vol_uuid, struct fy_volume_meta **ret_meta, GError **error);
/* Atomic: write temp + fsync + rename + fsync dir. */
int fy_volume_meta_write_at(int dirfd, const char *vol_uuid, const struct fy_volume_meta *m, GError **error);

const char *fy_vol_format_to_string(enum fy_vol_format f);          /* "RAW" | "COW" */
int fy_vol_format_from_string(const char *s, enum fy_vol_format *ret);
const char *fy_vol_legality_to_string(enum fy_vol_legality l);      /* "LEGAL" | "ILLEGAL" */
int fy_vol_legality_from_string(const char *s, enum fy_vol_legality *ret);
const char *fy_vol_type_to_string(enum fy_vol_type t);              /* "SPARSE" | "PREALLOCATED" */
int fy_vol_type_from_string(const char *s, enum fy_vol_type *ret);
const char *fy_vol_voltype_to_string(enum fy_vol_voltype t);        /* "LEAF" | "INTERNAL" | "SHARED" */
int fy_vol_voltype_from_string(const char *s, enum fy_vol_voltype *ret);
