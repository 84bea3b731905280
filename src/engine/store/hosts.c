/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Data centers, hosts and storage domains in the store. */
#include <errno.h>

#include "error.h"
#include "internal.h"

json_t *engine_store_dc_first(struct engine_store *st, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM datacenters ORDER BY name LIMIT 1", "");
}

json_t *engine_store_dc_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM datacenters WHERE id = ?", "s", id);
}

json_t *engine_store_dc_list(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM datacenters ORDER BY name", "");
}

int engine_store_dc_insert(struct engine_store *st, const char *id, const char *name, const char *pool_id, GError **error)
{
        return store_exec(st, error, "INSERT INTO datacenters (id, name, pool_id) VALUES (?, ?, ?)", "sss", id, name,
                          pool_id);
}

int engine_store_dc_set_spm(struct engine_store *st, const char *dc, const char *host, gint64 lver, GError **error)
{
        if (!host)
                return store_exec(st, error, "UPDATE datacenters SET spm_host = NULL WHERE id = ?", "s", dc);
        return store_exec(st, error, "UPDATE datacenters SET spm_host = ?, spm_lver = ? WHERE id = ?", "sis", host, lver, dc);
}

int engine_store_dc_set_master_if_none(struct engine_store *st, const char *dc, const char *sd, GError **error)
{
        return store_exec(st, error, "UPDATE datacenters SET master_sd = ? WHERE id = ? AND master_sd IS NULL", "ss", sd, dc);
}

json_t *engine_store_dc_spm(struct engine_store *st, const char *dc, GError **error)
{
        return store_query_one(st, error,
                "SELECT d.pool_id AS pool_id, d.spm_host AS spm_host, h.status AS status, h.stats AS stats "
                "FROM datacenters d LEFT JOIN hosts h ON h.id = d.spm_host WHERE d.id = ?", "s", dc);
}

json_t *engine_store_dc_spm_up(struct engine_store *st, const char *dc, GError **error)
{
        return store_query_one(st, error,
                "SELECT h.id AS id FROM datacenters d JOIN hosts h ON h.id = d.spm_host "
                "WHERE d.id = ? AND h.status = 'up' AND h.pool_connected = 1", "s", dc);
}

json_t *engine_store_host_list(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM hosts ORDER BY host_id", "");
}

json_t *engine_store_host_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM hosts WHERE id = ?", "s", id);
}

int engine_store_host_insert(struct engine_store *st, const char *id, const char *name, const char *address,
                             unsigned port, const char *dc, gint64 host_id, gint64 created, GError **error)
{
        return store_exec(st, error,
                          "INSERT INTO hosts (id, name, address, port, dc_id, host_id, status, created) "
                          "VALUES (?, ?, ?, ?, ?, ?, 'connecting', ?)",
                          "sssisii", id, name, address, (gint64) port, dc, host_id, created);
}

json_t *engine_store_host_ids(struct engine_store *st, const char *dc, GError **error)
{
        return store_query(st, error, "SELECT host_id FROM hosts WHERE dc_id = ? ORDER BY host_id", "s", dc);
}

int engine_store_hosts_reset(struct engine_store *st, GError **error)
{
        return store_exec(st, error, "UPDATE hosts SET status = 'connecting', pool_connected = 0 "
                                     "WHERE status != 'maintenance'", "");
}

int engine_store_host_set_maintenance(struct engine_store *st, const char *id, bool maintenance, GError **error)
{
        if (store_exec(st, error, "UPDATE hosts SET maintenance = ?, status = ? WHERE id = ?", "bss",
                       maintenance, maintenance ? "maintenance" : "connecting", id) < 0)
                return -EIO;
        if (store_changes(st) == 0) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "no host %s", id);
                return -ENOENT;
        }
        return 0;
}

int engine_store_host_running(struct engine_store *st, const char *id, char **ret_what, GError **error)
{
        g_autoptr(json_t) row = store_query_one(st, error,
                "SELECT 'command' AS what FROM commands WHERE host = ? AND state = 'active' UNION ALL "
                "SELECT 'transfer' FROM image_transfers WHERE host = ? AND phase NOT IN "
                "('finished_success', 'finished_failure', 'cancelled') LIMIT 1", "ss", id, id);

        *ret_what = NULL;
        if (!row && error && *error)
                return -EIO;
        if (row)
                *ret_what = g_strdup(json_string_value(json_object_get(row, "what")));
        return 0;
}

int engine_store_host_delete(struct engine_store *st, const char *id, GError **error)
{
        return store_exec(st, error, "DELETE FROM hosts WHERE id = ?", "s", id) < 0 ? -EIO : 0;
}

int engine_store_host_set_stats(struct engine_store *st, const char *id, json_t *stats, gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE hosts SET stats = ?, last_seen = ? WHERE id = ?", "jis", stats, now, id);
}

int engine_store_host_set_status(struct engine_store *st, const char *id, const char *status, GError **error)
{
        if (g_strcmp0(status, "non_responsive") == 0)
                return store_exec(st, error, "UPDATE hosts SET status = ?, pool_connected = 0 WHERE id = ?", "ss",
                                  status, id);
        return store_exec(st, error, "UPDATE hosts SET status = ? WHERE id = ?", "ss", status, id);
}

int engine_store_host_set_pool_connected(struct engine_store *st, const char *id, bool connected, GError **error)
{
        return store_exec(st, error, "UPDATE hosts SET pool_connected = ? WHERE id = ?", "bs", connected, id);
}

int engine_store_hosts_pool_reconnect(struct engine_store *st, const char *dc, GError **error)
{
        return store_exec(st, error, "UPDATE hosts SET pool_connected = 0 WHERE dc_id = ?", "s", dc);
}

json_t *engine_store_host_usable(struct engine_store *st, const char *dc, GError **error)
{
        return store_query(st, error, "SELECT id FROM hosts WHERE status = 'up' AND pool_connected = 1 AND maintenance = 0 "
                                      "AND dc_id = ? ORDER BY host_id", "s", dc);
}

json_t *engine_store_host_first_up(struct engine_store *st, GError **error)
{
        return store_query_one(st, error, "SELECT id FROM hosts WHERE status = 'up' AND maintenance = 0 ORDER BY host_id", "");
}

json_t *engine_store_sd_list(struct engine_store *st, const char *dc, GError **error)
{
        if (dc)
                return store_query(st, error, "SELECT * FROM storage_domains WHERE dc_id = ? ORDER BY name", "s", dc);
        return store_query(st, error, "SELECT * FROM storage_domains ORDER BY name", "");
}

json_t *engine_store_sd_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM storage_domains WHERE id = ?", "s", id);
}

json_t *engine_store_sd_get_by_name(struct engine_store *st, const char *name, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM storage_domains WHERE name = ?", "s", name);
}

int engine_store_sd_insert(struct engine_store *st, const char *id, const char *name, const char *dc, gint64 created,
                           GError **error)
{
        return store_exec(st, error, "INSERT INTO storage_domains (id, name, dc_id, status, created) "
                                     "VALUES (?, ?, ?, 'active', ?)", "sssi", id, name, dc, created);
}

int engine_store_sd_set_space(struct engine_store *st, const char *id, gint64 total, gint64 free_bytes, GError **error)
{
        return store_exec(st, error, "UPDATE storage_domains SET total = ?, free = ? WHERE id = ?", "iis", total,
                          free_bytes, id);
}
