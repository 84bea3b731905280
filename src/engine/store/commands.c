/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Persistent commands in the store. */
#include <errno.h>

#include "internal.h"

int engine_store_copy_loads(struct engine_store *st, json_t **ret_rows, GError **error)
{
        /* One query for all hosts: one per host made a pick cost hosts x active copies (bench/scale). params.bytes
         * (the copy's estimated size) is read here, not in SQL: JSON functions differ per backend. */
        g_autoptr(json_t) rows = store_query(st, error,
                "SELECT c.host AS host, c.params AS params, COALESCE(s.progress, 0) AS progress "
                "FROM commands c LEFT JOIN steps s ON s.id = c.step_id "
                "WHERE c.type IN ('copy_data', 'merge', 'sparsify_volume') AND c.state = 'active' AND c.phase = 'sent'", "");
        g_autoptr(GHashTable) per_host = g_hash_table_new(g_str_hash, g_str_equal);   /* host -> its row in out */
        json_t *out, *row;
        size_t i;

        if (!rows)
                return -EIO;
        out = json_array();
        json_array_foreach(rows, i, row) {
                const char *host = json_string_value(json_object_get(row, "host"));
                g_autoptr(json_t) params = json_loads(json_string_value(json_object_get(row, "params")), 0, NULL);
                double progress = MIN(json_number_value(json_object_get(row, "progress")), 100);
                json_t *load = g_hash_table_lookup(per_host, host ? host : "");

                if (!load) {
                        load = json_pack("{s:o, s:I, s:f}", "host", host ? json_string(host) : json_null(), "n",
                                         (json_int_t) 0, "b", 0.0);
                        json_array_append_new(out, load);
                        g_hash_table_insert(per_host, (char *) (host ? host : ""), load);
                }
                json_object_set_new(load, "n", json_integer(json_integer_value(json_object_get(load, "n")) + 1));
                json_object_set_new(load, "b", json_real(json_real_value(json_object_get(load, "b")) +
                                                          json_number_value(json_object_get(params, "bytes")) *
                                                          (1.0 - progress / 100.0)));
        }
        *ret_rows = out;
        return 0;
}

int engine_store_cmd_insert(struct engine_store *st, const char *id, const char *type, const char *parent,
                            const char *job, const char *step, json_t *params, const char *user, gint64 now,
                            GError **error)
{
        return store_exec(st, error,
                          "INSERT INTO commands (id, type, parent_id, job_id, step_id, state, params, created, updated, cancel, "
                          "user_name) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, "
                          "COALESCE((SELECT cancel FROM commands WHERE id = ?), 0), "
                          "COALESCE(?, (SELECT user_name FROM commands WHERE id = ?)))",
                          "sssssjiisss", id, type, parent, job, step, params, now, now, parent, user, parent);
}

json_t *engine_store_cmd_get(struct engine_store *st, const char *id, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM commands WHERE id = ?", "s", id);
}

json_t *engine_store_cmd_active(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT * FROM commands WHERE state = 'active' ORDER BY created, rowid", "");
}

json_t *engine_store_cmd_of_job(struct engine_store *st, const char *job, GError **error)
{
        return store_query_one(st, error, "SELECT * FROM commands WHERE job_id = ? AND parent_id IS NULL", "s", job);
}

json_t *engine_store_cmd_list_of_job(struct engine_store *st, const char *job, const char *type, GError **error)
{
        return store_query(st, error, "SELECT * FROM commands WHERE job_id = ? AND type = ? ORDER BY created, rowid",
                           "ss", job, type);
}

int engine_store_cmd_set_phase(struct engine_store *st, const char *id, const char *phase, json_t *data, gint64 now,
                               GError **error)
{
        return store_exec(st, error, "UPDATE commands SET phase = ?, data = ?, updated = ? WHERE id = ?", "sjis", phase, data,
                          now, id);
}

int engine_store_cmd_restart(struct engine_store *st, const char *id, json_t *data, gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE commands SET phase = '', host = NULL, agent_job_id = NULL, data = ?, "
                                     "updated = ? WHERE id = ?", "jis", data, now, id);
}

int engine_store_cmd_mark_sent(struct engine_store *st, const char *id, const char *host, const char *agent_job,
                               gint64 generation, json_t *data, gint64 now, GError **error)
{
        return store_exec(st, error,
                          "UPDATE commands SET phase = 'sent', host = ?, agent_job_id = ?, generation = ?, data = ?, "
                          "attempts = attempts + 1, updated = ? WHERE id = ?",
                          "ssijis", host, agent_job, generation, data, now, id);
}

int engine_store_cmd_finish(struct engine_store *st, const char *id, bool ok, const char *message, gint64 now,
                            GError **error)
{
        return store_exec(st, error, "UPDATE commands SET state = ?, error = ?, updated = ? WHERE id = ?", "ssis",
                          ok ? "succeeded" : "failed", message, now, id);
}

int engine_store_cmd_cancel_job(struct engine_store *st, const char *job, gint64 now, GError **error)
{
        return store_exec(st, error, "UPDATE commands SET cancel = 1, updated = ? WHERE job_id = ? AND state = 'active'",
                          "is", now, job);
}

int engine_store_cmd_removal_pending(struct engine_store *st, const char *sd, const char *img, bool *ret, GError **error)
{
        /* The image is matched here, not in SQL: JSON functions differ per backend. Removals pending are few. */
        g_autoptr(json_t) rows = store_query(st, error, "SELECT params FROM commands WHERE type = 'remove_image' "
                                                         "AND state = 'active'", "");
        size_t i;
        json_t *row;

        *ret = true;
        if (!rows)
                return -EIO;
        *ret = false;
        json_array_foreach(rows, i, row) {
                g_autoptr(json_t) params = json_loads(json_string_value(json_object_get(row, "params")), 0, NULL);

                if (g_strcmp0(json_string_value(json_object_get(params, "sd")), sd) == 0 &&
                    g_strcmp0(json_string_value(json_object_get(params, "img")), img) == 0)
                        *ret = true;
        }
        return 0;
}

json_t *engine_store_command_counts(struct engine_store *st, GError **error)
{
        return store_query(st, error, "SELECT type, phase, COUNT(*) AS n FROM commands WHERE state = 'active' "
                                      "GROUP BY type, phase ORDER BY type, phase", "");
}

json_t *engine_store_jobs_running(struct engine_store *st, GError **error)
{
        /* Image transfers start jobs without a command: "other". */
        return store_query(st, error, "SELECT j.id AS id, COALESCE(c.type, 'other') AS kind, "
                                      "EXISTS (SELECT 1 FROM steps s WHERE s.job_id = j.id AND s.status = 'started' "
                                      "AND s.detail = 'stalled') AS stalled FROM jobs j "
                                      "LEFT JOIN commands c ON c.id = j.command_id WHERE j.status = 'started' "
                                      "ORDER BY kind", "");
}

char *engine_store_job_correlation_id(struct engine_store *st, const char *job)
{
        g_autoptr(json_t) row = job ? store_query_one(st, NULL, "SELECT correlation_id FROM jobs WHERE id = ?", "s", job)
                                    : NULL;

        return row ? g_strdup(json_string_value(json_object_get(row, "correlation_id"))) : NULL;
}

gint64 engine_store_steps_stalled(struct engine_store *st)
{
        g_autoptr(json_t) row = store_query_one(st, NULL, "SELECT COUNT(*) AS n FROM steps WHERE status = 'started' "
                                                          "AND detail = 'stalled'", "");

        return row ? json_integer_value(json_object_get(row, "n")) : 0;
}

bool engine_store_job_stalled(struct engine_store *st, const char *job)
{
        g_autoptr(json_t) row = store_query_one(st, NULL, "SELECT id FROM steps WHERE job_id = ? AND status = 'started' "
                                                          "AND detail = 'stalled' LIMIT 1", "s", job);

        return row != NULL;
}

char *engine_store_command_user(struct engine_store *st, const char *id)
{
        g_autoptr(json_t) row = store_query_one(st, NULL, "SELECT user_name FROM commands WHERE id = ?", "s", id);
        const char *user = row ? json_string_value(json_object_get(row, "user_name")) : NULL;

        return user ? g_strdup(user) : NULL;
}

int engine_store_copies_waiting(struct engine_store *st, GArray **ret_created, GError **error)
{
        g_autoptr(json_t) rows = store_query(st, error,
                "SELECT created FROM commands WHERE type = 'copy_data' AND state = 'active' AND phase <> 'sent' "
                "ORDER BY created", "");
        GArray *out;
        size_t i;
        json_t *row;

        if (!rows)
                return -EIO;
        out = g_array_sized_new(FALSE, FALSE, sizeof(gint64), json_array_size(rows));
        json_array_foreach(rows, i, row) {
                gint64 created = json_integer_value(json_object_get(row, "created"));

                g_array_append_val(out, created);
        }
        *ret_created = out;
        return 0;
}

