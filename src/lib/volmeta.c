/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "uuid.h"

/* volmeta.h's G_DEFINE_AUTOPTR_CLEANUP_FUNC needs this name; C11 allows repeating it. */
#include "volmeta.h"

#define META_KEY_MAX 32         /* longest key name we accept, known or not */
#define META_QUOTE_MAX 48       /* value bytes echoed back in an error message */

enum meta_key {
        KEY_CAP,
        KEY_CTIME,
        KEY_DESCRIPTION,
        KEY_DISKTYPE,
        KEY_DOMAIN,
        KEY_FORMAT,
        KEY_GEN,
        KEY_IMAGE,
        KEY_LEGALITY,
        KEY_PUUID,
        KEY_TYPE,
        KEY_VOLTYPE,
        _KEY_MAX,
};

/* Sorted: the canonical text lists keys in this order. */
static const char *const meta_key_names[_KEY_MAX] = {
        [KEY_CAP] = "CAP",
        [KEY_CTIME] = "CTIME",
        [KEY_DESCRIPTION] = "DESCRIPTION",
        [KEY_DISKTYPE] = "DISKTYPE",
        [KEY_DOMAIN] = "DOMAIN",
        [KEY_FORMAT] = "FORMAT",
        [KEY_GEN] = "GEN",
        [KEY_IMAGE] = "IMAGE",
        [KEY_LEGALITY] = "LEGALITY",
        [KEY_PUUID] = "PUUID",
        [KEY_TYPE] = "TYPE",
        [KEY_VOLTYPE] = "VOLTYPE",
};

static const char *const format_names[] = {
        [FY_FORMAT_RAW] = "RAW",
        [FY_FORMAT_COW] = "COW",
};
static const char *const legality_names[] = {
        [FY_LEGALITY_LEGAL] = "LEGAL",
        [FY_LEGALITY_ILLEGAL] = "ILLEGAL",
};
static const char *const type_names[] = {
        [FY_TYPE_SPARSE] = "SPARSE",
        [FY_TYPE_PREALLOCATED] = "PREALLOCATED",
};
static const char *const voltype_names[] = {
        [FY_VOLTYPE_LEAF] = "LEAF",
        [FY_VOLTYPE_INTERNAL] = "INTERNAL",
        [FY_VOLTYPE_SHARED] = "SHARED",
};

static const char *table_to_string(const char *const *table, size_t n, unsigned v)
{
        return v < n ? table[v] : NULL;
}

static int table_from_string(const char *const *table, size_t n, const char *s, unsigned *ret)
{
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (strcmp(table[i], s) == 0) {
                        *ret = (unsigned) i;
                        return 0;
                }
        return -EINVAL;
}

#define DEFINE_ENUM_STRING(name, type, table)                                   \
        const char *name##_to_string(type v)                                    \
        {                                                                       \
                return table_to_string(table, G_N_ELEMENTS(table), (unsigned) v); \
        }                                                                       \
        int name##_from_string(const char *s, type *ret)                        \
        {                                                                       \
                unsigned v;                                                     \
                int r;                                                          \
                                                                                \
                r = table_from_string(table, G_N_ELEMENTS(table), s, &v);       \
                if (r < 0)                                                      \
                        return r;                                               \
                *ret = (type) v;                                                \
                return 0;                                                       \
        }

DEFINE_ENUM_STRING(fy_vol_format, enum fy_vol_format, format_names)
DEFINE_ENUM_STRING(fy_vol_legality, enum fy_vol_legality, legality_names)
DEFINE_ENUM_STRING(fy_vol_type, enum fy_vol_type, type_names)
DEFINE_ENUM_STRING(fy_vol_voltype, enum fy_vol_voltype, voltype_names)

struct fy_volume_meta *fy_volume_meta_new(void)
{
        struct fy_volume_meta *m = g_new0(struct fy_volume_meta, 1);

        m->description = g_strdup("");
        m->disktype = g_strdup("DATA");
        memcpy(m->parent, FY_ZERO_UUID, sizeof(m->parent));
        return m;
}

void fy_volume_meta_free(struct fy_volume_meta *m)
{
        if (!m)
                return;
        g_free(m->description);
        g_free(m->disktype);
        g_free(m);
}

struct fy_volume_meta *fy_volume_meta_copy(const struct fy_volume_meta *m)
{
        struct fy_volume_meta *c;

        if (!m)
                return NULL;
        c = g_memdup2(m, sizeof(*m));
        c->description = g_strdup(m->description);
        c->disktype = g_strdup(m->disktype);
        return c;
}

/* A bounded, escaped copy of untrusted bytes, safe to put in an error message. */
static char *quote(const char *s, size_t len)
{
        g_autofree char *head = g_strndup(s, MIN(len, META_QUOTE_MAX));
        g_autofree char *esc = g_strescape(head, NULL);

        return len > META_QUOTE_MAX ? g_strconcat(esc, "...", NULL) : g_steal_pointer(&esc);
}

static int meta_error(GError **error, int r, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int meta_error(GError **error, int r, const char *fmt, ...)
{
        g_autofree char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_set_error(error, FY_ERROR, FY_ERR_METADATA, "volume metadata: %s", msg);
        return r;
}

static int value_error(GError **error, const char *key, const char *value, const char *problem)
{
        g_autofree char *q = quote(value, strlen(value));

        return meta_error(error, -EINVAL, "%s=%s %s", key, q, problem);
}

/* Plain decimal as VDSM writes it: digits only, no sign, no leading zeros. */
static int parse_u64(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                unsigned d;

                if (*p < '0' || *p > '9')
                        return -EINVAL;
                d = (unsigned) (*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}

static bool disktype_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n < 1 || n > 32)
                return false;
        for (const char *p = s; *p; p++)
                if (!g_ascii_isupper(*p) && !g_ascii_isdigit(*p) && *p != '_')
                        return false;
        return true;
}

static int check_description(const char *s, GError **error)
{
        size_t n = strlen(s);

        if (n > FY_META_DESCRIPTION_MAX)
                return meta_error(error, -EINVAL, "DESCRIPTION is %zu bytes, longer than the limit of %d",
                                  n, FY_META_DESCRIPTION_MAX);
        if (strchr(s, '\n'))
                return meta_error(error, -EINVAL, "DESCRIPTION must not contain a newline");
        return 0;
}

static int parse_value(struct fy_volume_meta *m, enum meta_key key, const char *value, GError **error)
{
        const char *name = meta_key_names[key];
        uint64_t u;
        unsigned e;
        int r;

        switch (key) {
        case KEY_CAP:
                r = parse_u64(value, &u);
                if (r == -ERANGE)
                        return value_error(error, name, value, "is out of range");
                if (r < 0)
                        return value_error(error, name, value, "is not a decimal number of bytes");
                if (u == 0)
                        return value_error(error, name, value, "must be greater than 0");
                m->capacity = u;
                return 0;

        case KEY_CTIME:
                r = parse_u64(value, &u);
                if (r == -ERANGE || (r == 0 && u > INT64_MAX))
                        return value_error(error, name, value, "is out of range");
                if (r < 0)
                        return value_error(error, name, value, "is not a non-negative decimal number of seconds");
                m->ctime = (int64_t) u;
                return 0;

        case KEY_DESCRIPTION:
                r = check_description(value, error);
                if (r < 0)
                        return r;
                g_free(m->description);
                m->description = g_strdup(value);
                return 0;

        case KEY_DISKTYPE:
                if (!disktype_is_valid(value))
                        return value_error(error, name, value, "is not 1-32 characters of A-Z, 0-9 and _");
                g_free(m->disktype);
                m->disktype = g_strdup(value);
                return 0;

        case KEY_DOMAIN:
        case KEY_IMAGE:
        case KEY_PUUID: {
                char *dst = key == KEY_DOMAIN ? m->domain : key == KEY_IMAGE ? m->image : m->parent;

                if (!fy_uuid_is_valid(value))
                        return value_error(error, name, value, "is not a UUID");
                memcpy(dst, value, FY_UUID_STR_LEN + 1);
                return 0;
        }

        case KEY_FORMAT:
                if (table_from_string(format_names, G_N_ELEMENTS(format_names), value, &e) < 0)
                        return value_error(error, name, value, "is not RAW or COW");
                m->format = e;
                return 0;

        case KEY_GEN:
                r = parse_u64(value, &u);
                if (r == -EINVAL)
                        return value_error(error, name, value, "is not a decimal number");
                if (r < 0 || u > FY_GEN_MAX)
                        return value_error(error, name, value, "is out of range 0-999");
                m->generation = (unsigned) u;
                return 0;

        case KEY_LEGALITY:
                if (strcmp(value, "FAKE") == 0)
                        return value_error(error, name, value,
                                           "marks a VDSM placeholder volume, which is not supported");
                if (table_from_string(legality_names, G_N_ELEMENTS(legality_names), value, &e) < 0)
                        return value_error(error, name, value, "is not LEGAL or ILLEGAL");
                m->legality = e;
                return 0;

        case KEY_TYPE:
                if (table_from_string(type_names, G_N_ELEMENTS(type_names), value, &e) < 0)
                        return value_error(error, name, value, "is not SPARSE or PREALLOCATED");
                m->type = e;
                return 0;

        case KEY_VOLTYPE:
                if (table_from_string(voltype_names, G_N_ELEMENTS(voltype_names), value, &e) < 0)
                        return value_error(error, name, value, "is not LEAF, INTERNAL or SHARED");
                m->voltype = e;
                return 0;

        default:
                g_assert_not_reached();
        }
}

/* Older VDSM versions write extra keys (MTIME, POOL_UUID, SIZE...): tolerated, not kept. */
static bool unknown_key_is_valid(const char *key, size_t len)
{
        if (len < 1 || len > META_KEY_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!g_ascii_isupper(key[i]) && key[i] != '_')
                        return false;
        return true;
}

static int lookup_key(const char *key, size_t len)
{
        for (int k = 0; k < _KEY_MAX; k++)
                if (strlen(meta_key_names[k]) == len && memcmp(meta_key_names[k], key, len) == 0)
                        return k;
        return -1;
}

int fy_volume_meta_parse(const char *text, size_t len, struct fy_volume_meta **ret_meta, GError **error)
{
        g_autoptr(fy_volume_meta) m = NULL;
        g_autoptr(GHashTable) unknown = NULL;
        bool seen[_KEY_MAX] = {};
        unsigned lineno = 0;
        bool eof = false;
        const char *p, *end;

        if ((!text && len > 0) || !ret_meta)
                return meta_error(error, -EINVAL, "no text or result pointer given");

        if (len > FY_META_MAX)
                return meta_error(error, -EFBIG, "%zu bytes is larger than the limit of %d",
                                  len, FY_META_MAX);

        m = fy_volume_meta_new();
        unknown = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        p = text;
        end = text + len;

        while (p < end) {
                const char *nl = memchr(p, '\n', end - p);
                const char *line_end = nl ? nl : end;
                size_t line_len = line_end - p;
                g_autofree char *key = NULL, *value = NULL;
                const char *eq;
                int k;

                lineno++;
                if (memchr(p, '\0', line_len))
                        return meta_error(error, -EINVAL, "line %u contains a NUL byte", lineno);

                if (line_len == 3 && memcmp(p, "EOF", 3) == 0) {
                        p = nl ? nl + 1 : end;
                        eof = true;
                        break;
                }

                eq = memchr(p, '=', line_len);
                if (!eq) {
                        g_autofree char *q = quote(p, line_len);

                        return meta_error(error, -EINVAL, "line %u \"%s\" is not KEY=VALUE", lineno, q);
                }
                key = g_strndup(p, eq - p);
                value = g_strndup(eq + 1, line_end - eq - 1);

                k = lookup_key(key, eq - p);
                if (k >= 0) {
                        int r;

                        if (seen[k])
                                return meta_error(error, -EINVAL, "%s appears more than once", key);
                        seen[k] = true;
                        r = parse_value(m, k, value, error);
                        if (r < 0)
                                return r;
                } else {
                        if (!unknown_key_is_valid(key, eq - p) || strcmp(key, "EOF") == 0) {
                                g_autofree char *q = quote(p, eq - p);

                                return meta_error(error, -EINVAL, "line %u has an invalid key \"%s\"", lineno, q);
                        }
                        if (!g_hash_table_add(unknown, g_steal_pointer(&key)))
                                return meta_error(error, -EINVAL, "line %u repeats an earlier key", lineno);
                }

                p = nl ? nl + 1 : end;
        }

        if (!eof)
                return meta_error(error, -EINVAL, "the final EOF line is missing");

        /* VDSM pads metadata blocks with NULs; anything else after EOF means a corrupt or mixed-up file. */
        for (; p < end; p++)
                if (*p != '\0' && *p != '\n')
                        return meta_error(error, -EINVAL, "unexpected data after the EOF line");

        for (int k = 0; k < _KEY_MAX; k++)
                if (!seen[k])
                        return meta_error(error, -EINVAL, "required key %s is missing", meta_key_names[k]);

        *ret_meta = g_steal_pointer(&m);
        return 0;
}

/* The checks parse applies to text, applied to a struct before it is written. */
static int meta_validate(const struct fy_volume_meta *m, GError **error)
{
        char buf[32];
        int r;

        if (m->capacity == 0)
                return meta_error(error, -EINVAL, "CAP=0 must be greater than 0");
        if (m->ctime < 0) {
                snprintf(buf, sizeof(buf), "%" PRId64, m->ctime);
                return value_error(error, "CTIME", buf, "is negative");
        }
        r = check_description(m->description ?: "", error);
        if (r < 0)
                return r;
        if (!m->disktype || !disktype_is_valid(m->disktype))
                return value_error(error, "DISKTYPE", m->disktype ?: "",
                                   "is not 1-32 characters of A-Z, 0-9 and _");
        if (!fy_uuid_is_valid(m->domain))
                return value_error(error, "DOMAIN", m->domain, "is not a UUID");
        if (!fy_vol_format_to_string(m->format))
                return meta_error(error, -EINVAL, "FORMAT has an invalid value %u", (unsigned) m->format);
        if (m->generation > FY_GEN_MAX)
                return meta_error(error, -EINVAL, "GEN=%u is out of range 0-999", m->generation);
        if (!fy_uuid_is_valid(m->image))
                return value_error(error, "IMAGE", m->image, "is not a UUID");
        if (!fy_vol_legality_to_string(m->legality))
                return meta_error(error, -EINVAL, "LEGALITY has an invalid value %u", (unsigned) m->legality);
        if (!fy_uuid_is_valid(m->parent))
                return value_error(error, "PUUID", m->parent, "is not a UUID");
        if (!fy_vol_type_to_string(m->type))
                return meta_error(error, -EINVAL, "TYPE has an invalid value %u", (unsigned) m->type);
        if (!fy_vol_voltype_to_string(m->voltype))
                return meta_error(error, -EINVAL, "VOLTYPE has an invalid value %u", (unsigned) m->voltype);
        return 0;
}

char *fy_volume_meta_format(const struct fy_volume_meta *m)
{
        GString *s = g_string_sized_new(512);

        g_string_append_printf(s, "CAP=%" PRIu64 "\n", m->capacity);
        g_string_append_printf(s, "CTIME=%" PRId64 "\n", m->ctime);
        g_string_append_printf(s, "DESCRIPTION=%s\n", m->description ?: "");
        g_string_append_printf(s, "DISKTYPE=%s\n", m->disktype ?: "");
        g_string_append_printf(s, "DOMAIN=%s\n", m->domain);
        g_string_append_printf(s, "FORMAT=%s\n", fy_vol_format_to_string(m->format) ?: "");
        g_string_append_printf(s, "GEN=%u\n", m->generation);
        g_string_append_printf(s, "IMAGE=%s\n", m->image);
        g_string_append_printf(s, "LEGALITY=%s\n", fy_vol_legality_to_string(m->legality) ?: "");
        g_string_append_printf(s, "PUUID=%s\n", m->parent);
        g_string_append_printf(s, "TYPE=%s\n", fy_vol_type_to_string(m->type) ?: "");
        g_string_append_printf(s, "VOLTYPE=%s\n", fy_vol_voltype_to_string(m->voltype) ?: "");
        g_string_append(s, "EOF\n");
        return g_string_free(s, FALSE);
}

static int check_vol_uuid(const char *vol_uuid, GError **error)
{
        if (fy_uuid_is_valid(vol_uuid))
                return 0;
        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                    "volume metadata: volume id is not a UUID");
        return -EINVAL;
}

int fy_volume_meta_read_at(int dirfd, const char *vol_uuid, struct fy_volume_meta **ret_meta, GError **error)
{
        g_autoptr(fy_volume_meta) m = NULL;
        g_autofree char *name = NULL, *text = NULL;
        size_t len;
        int r;

        if (!ret_meta)
                return meta_error(error, -EINVAL, "no result pointer given");

        r = check_vol_uuid(vol_uuid, error);
        if (r < 0)
                return r;
        name = g_strconcat(vol_uuid, ".meta", NULL);

        r = fy_read_small_file_at(dirfd, name, FY_META_MAX, &text, &len);
        if (r == -EFBIG)
                return meta_error(error, r, "%s is larger than the limit of %d bytes", name, FY_META_MAX);
        if (r < 0)
                return meta_error(error, r, "cannot read %s: %s", name, g_strerror(-r));

        r = fy_volume_meta_parse(text, len, &m, error);
        if (r < 0) {
                g_prefix_error(error, "%s: ", name);
                return r;
        }
        *ret_meta = g_steal_pointer(&m);
        return 0;
}

int fy_volume_meta_write_at(int dirfd, const char *vol_uuid, const struct fy_volume_meta *m, GError **error)
{
        g_autofree char *name = NULL, *text = NULL;
        int r;

        if (!m)
                return meta_error(error, -EINVAL, "no metadata given");

        r = check_vol_uuid(vol_uuid, error);
        if (r < 0)
                return r;
        r = meta_validate(m, error);
        if (r < 0)
                return r;

        name = g_strconcat(vol_uuid, ".meta", NULL);
        text = fy_volume_meta_format(m);
        r = fy_write_file_atomic_at(dirfd, name, text, strlen(text));
        if (r < 0)
                return meta_error(error, r, "cannot write %s: %s", name, g_strerror(-r));
        return 0;
}
