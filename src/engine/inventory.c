/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Questions about the inventory that several modules ask. */
#include "inventory.h"

bool engine_image_in_use(struct engine *e, const char *sd, const char *img, const char *except_command)
{
        bool used = true;

        /* No answer from the store: in use, to be safe. */
        if (engine_store_image_in_use(e->db, sd, img, except_command, &used, NULL) < 0)
                return true;
        return used;
}

json_t *engine_disk_volumes(struct engine *e, json_t *disk)
{
        json_t *rows = engine_store_volume_list(e->db, engine_js(disk, "id"), engine_js(disk, "sd_id"), NULL);

        return rows ? rows : json_array();
}
