/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Questions about the inventory that several modules ask. */
#include "inventory.h"

bool engine_image_in_use(struct engine *e, const char *sd, const char *img, const char *except_command)
{
        g_autofree char *pattern = g_strdup_printf("%%%s%%", img);
        g_autoptr(json_t) row = engine_db_query_one(e->db, NULL,
                "SELECT (SELECT COUNT(*) FROM disks WHERE id = ?1 AND sd_id = ?2) + "
                "       (SELECT COUNT(*) FROM volumes WHERE disk_id = ?1 AND sd_id = ?2) + "
                "       (SELECT COUNT(*) FROM commands WHERE state = 'active' AND id IS NOT ?4 "
                "                                      AND (params LIKE ?3 OR data LIKE ?3)) AS n",
                "ssss", img, sd, pattern, except_command);

        /* No answer from the database: in use, to be safe. */
        return !row || json_integer_value(json_object_get(row, "n")) > 0;
}
