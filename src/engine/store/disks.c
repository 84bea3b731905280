/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Disks and their volumes in the store. */
#include <errno.h>

#include "internal.h"

json_t *engine_store_volume_list(struct engine_store *st, const char *disk, const char *sd, GError **error)
{
        return store_query(st, error, "SELECT * FROM volumes WHERE disk_id = ? AND sd_id = ? ORDER BY position", "ss",
                           disk, sd);
}

int engine_store_image_in_use(struct engine_store *st, const char *sd, const char *img, const char *except_command,
                              bool *ret, GError **error)
{
        g_autofree char *pattern = g_strdup_printf("%%%s%%", img);
        g_autoptr(json_t) row = store_query_one(st, error,
                "SELECT (SELECT COUNT(*) FROM disks WHERE id = ?1 AND sd_id = ?2) + "
                "       (SELECT COUNT(*) FROM volumes WHERE disk_id = ?1 AND sd_id = ?2) + "
                "       (SELECT COUNT(*) FROM commands WHERE state = 'active' AND id IS NOT ?4 "
                "                                      AND (params LIKE ?3 OR data LIKE ?3)) AS n",
                "ssss", img, sd, pattern, except_command);

        *ret = true;
        if (!row)
                return -EIO;
        *ret = json_integer_value(json_object_get(row, "n")) > 0;
        return 0;
}
