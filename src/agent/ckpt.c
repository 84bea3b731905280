/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include <glib.h>
#include <jansson.h>

#include "ckpt.h"
#include "uuid.h"

#define CKPT_VERSION 1

static int get_uuid(json_t *root, const char *key, char ret[FY_UUID_STR_LEN + 1])
{
        const char *s = json_string_value(json_object_get(root, key));

        if (!s || strlen(s) != FY_UUID_STR_LEN || !fy_uuid_is_valid(s))
                return -EBADMSG;
        for (size_t i = 0; i < FY_UUID_STR_LEN; i++)
                if (g_ascii_isupper(s[i]))
                        return -EBADMSG;
        memcpy(ret, s, FY_UUID_STR_LEN + 1);
        return 0;
}

static int get_u64(json_t *root, const char *key, uint64_t *ret)
{
        json_t *v = json_object_get(root, key);

        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return -EBADMSG;
        *ret = (uint64_t) json_integer_value(v);
        return 0;
}

int agent_copy_ckpt_parse(const char *text, size_t len, struct agent_copy_ckpt *ret)
{
        struct agent_copy_ckpt c = { 0 };
        json_t *root;
        uint64_t version = 0;
        int r = -EBADMSG;

        if (!text || len == 0 || len > AGENT_CKPT_MAX)
                return -EBADMSG;
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(root) || json_object_size(root) != 6)
                goto out;
        if (get_u64(root, "version", &version) < 0 || version != CKPT_VERSION ||
            get_uuid(root, "src_sd", c.src_sd) < 0 || get_uuid(root, "src_img", c.src_img) < 0 ||
            get_uuid(root, "src_vol", c.src_vol) < 0 || get_u64(root, "src_size", &c.src_size) < 0 ||
            get_u64(root, "offset", &c.offset) < 0 || c.offset > c.src_size)
                goto out;
        *ret = c;
        r = 0;
out:
        json_decref(root);
        return r;
}

char *agent_copy_ckpt_format(const struct agent_copy_ckpt *c)
{
        json_t *root = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I}", "version", CKPT_VERSION,
                                 "src_sd", c->src_sd, "src_img", c->src_img, "src_vol", c->src_vol,
                                 "src_size", (json_int_t) c->src_size, "offset", (json_int_t) c->offset);
        char *s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
        char *out = g_strconcat(s, "\n", NULL);

        free(s);
        json_decref(root);
        return out;
}
