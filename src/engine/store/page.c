/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Pages of the collections the REST API lists (GET ...?max=N&page=TOKEN&search=name=NAME). */
#include "error.h"
#include "internal.h"

/*
 * One statement per case rather than "? IS NULL OR ...": each then uses its
 * index (the primary key, or name then id). The key of a page is the last
 * row's id; jobs are ordered by start time (jobs_start), so their "after"
 * looks the job up again.
 */
static const struct page_sql {
        const char *first;
        const char *after;              /* ?1 the id of the last row shown */
        const char *name;               /* NULL: no name to search */
        const char *name_after;
        /* The first rows in the order the collection was always listed in without paging (the store's
         * engine_store_*_list); NULL: that order is the pages' (jobs, events). */
        const char *unpaged;
} page_sql[] = {
#define BY_ID(table, order) { \
        "SELECT * FROM " table " ORDER BY id LIMIT ?", \
        "SELECT * FROM " table " WHERE id > ? ORDER BY id LIMIT ?", \
        "SELECT * FROM " table " WHERE name = ? ORDER BY id LIMIT ?", \
        "SELECT * FROM " table " WHERE name = ? AND id > ? ORDER BY id LIMIT ?", \
        "SELECT * FROM " table " ORDER BY " order " LIMIT ?" }
        [ENGINE_STORE_PAGE_DISKS] = BY_ID("disks", "created, name"),
        [ENGINE_STORE_PAGE_HOSTS] = BY_ID("hosts", "host_id"),
        [ENGINE_STORE_PAGE_VMS] = BY_ID("vms", "created, name"),
        [ENGINE_STORE_PAGE_TEMPLATES] = BY_ID("templates", "created, name"),
#undef BY_ID
        [ENGINE_STORE_PAGE_JOBS] = {
                "SELECT * FROM jobs ORDER BY start_time DESC, rowid DESC LIMIT ?",
                "SELECT * FROM jobs WHERE (start_time, rowid) < (SELECT start_time, rowid FROM jobs WHERE id = ?) "
                "ORDER BY start_time DESC, rowid DESC LIMIT ?",
                NULL, NULL, NULL },
        [ENGINE_STORE_PAGE_EVENTS] = {
                "SELECT id, time, severity, message, command_id, correlation_id, user_name "
                "FROM events ORDER BY id DESC LIMIT ?",
                "SELECT id, time, severity, message, command_id, correlation_id, user_name "
                "FROM events WHERE id < ? ORDER BY id DESC LIMIT ?",
                NULL, NULL, NULL },
};

bool engine_store_page_has_name(enum engine_store_page_kind kind)
{
        return (size_t) kind < G_N_ELEMENTS(page_sql) && page_sql[kind].name;
}

/* Jobs continue from the job a page ended with: when that job was swept meanwhile, an empty page would
 * read as the end of the list, so it is an error the client can act on. */
static json_t *jobs_after(struct engine_store *st, const struct page_sql *q, const char *after, gint64 limit,
                          GError **error)
{
        json_t *rows = store_query(st, error, q->after, "si", after, limit);
        g_autoptr(json_t) known = NULL;
        GError *local = NULL;

        if (!rows || json_array_size(rows) > 0)
                return rows;
        known = store_query_one(st, &local, "SELECT id FROM jobs WHERE id = ?", "s", after);
        if (known)
                return rows;
        json_decref(rows);
        if (local) {
                g_propagate_error(error, local);
                return NULL;
        }
        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER,
                    "the job this page continues from is gone (ended jobs are swept): list again from the first page");
        return NULL;
}

json_t *engine_store_page(struct engine_store *st, enum engine_store_page_kind kind, const char *after,
                          const char *name, gint64 limit, GError **error)
{
        const struct page_sql *q;
        gint64 after_id = 0;

        if ((size_t) kind >= G_N_ELEMENTS(page_sql) || (name && !page_sql[kind].name)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "no name to search in that collection");
                return NULL;
        }
        q = &page_sql[kind];
        if (kind == ENGINE_STORE_PAGE_EVENTS && after) {
                if (!g_ascii_string_to_signed(after, 10, 1, G_MAXINT64, &after_id, error))
                        return NULL;
                return store_query(st, error, q->after, "ii", after_id, limit);
        }
        if (after && name)
                return store_query(st, error, q->name_after, "ssi", name, after, limit);
        if (name)
                return store_query(st, error, q->name, "si", name, limit);
        if (after && kind == ENGINE_STORE_PAGE_JOBS)
                return jobs_after(st, q, after, limit, error);
        if (after)
                return store_query(st, error, q->after, "si", after, limit);
        return store_query(st, error, q->first, "i", limit);
}

json_t *engine_store_page_unpaged(struct engine_store *st, enum engine_store_page_kind kind, gint64 limit,
                                  bool *ret_page_order, GError **error)
{
        const struct page_sql *q;

        if ((size_t) kind >= G_N_ELEMENTS(page_sql)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMETER, "no such collection");
                return NULL;
        }
        q = &page_sql[kind];
        *ret_page_order = !q->unpaged;
        return store_query(st, error, q->unpaged ? q->unpaged : q->first, "i", limit);
}
