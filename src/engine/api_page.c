/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Pages of the REST collections: one contract for disks, hosts, VMs, templates, jobs and events. */
#include <string.h>

#include "api_page.h"
#include "error.h"
#include "uuid.h"

/* What a page token looks like: the last id shown, a UUID, or a decimal event id. */
static bool token_valid(enum engine_store_page_kind kind, const char *page)
{
        guint64 n;

        if (kind == ENGINE_STORE_PAGE_EVENTS)
                return g_ascii_string_to_unsigned(page, 10, 1, G_MAXINT64, &n, NULL);
        return fy_uuid_is_valid(page);
}

/* {key: [rows shown by fmt, at most limit]}, with "next" (the last id shown) when rows holds one more. */
static void reply_page(struct engine *e, SoupServerMessage *msg, const char *key, json_t *rows, guint64 limit,
                       engine_row_fmt fmt)
{
        g_autoptr(json_t) out = NULL;
        json_t *list = json_array(), *last;

        out = json_pack("{s:o}", key, list);
        for (size_t i = 0; i < json_array_size(rows) && i < limit; i++) {
                json_t *row = json_array_get(rows, i);

                json_array_append_new(list, fmt ? fmt(e, row) : json_incref(row));
        }
        if (json_array_size(rows) > limit) {
                /* A string for every collection (events' ids are numbers): the token is opaque. */
                last = json_object_get(json_array_get(rows, limit - 1), "id");
                json_object_set_new(out, "next", json_is_integer(last) ?
                                    json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(last)) :
                                    json_string(json_string_value(last)));
        }
        engine_rest_reply_json(msg, 200, out);
}

/*
 * Without max, search or page: the collection as it was always listed (by
 * creation for disks, VMs and templates), when it holds at most list_max
 * rows; else its first page of list_max, in page order, with "next". One
 * GET can then never build a whole large inventory into one answer (100,000
 * disks were 32 MiB and 8-13 s, bench/README.md "bench/scale"), while
 * every list that fits answers exactly as before.
 */
static void unpaged(struct engine *e, SoupServerMessage *msg, enum engine_store_page_kind kind, const char *key,
                    engine_row_fmt fmt)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) rows = NULL;
        guint64 cap = e->config.list_max;
        bool page_order;

        rows = engine_store_page_unpaged(e->db, kind, (gint64) cap + 1, &page_order, &error);
        if (rows && json_array_size(rows) > cap && !page_order) {
                json_decref(rows);
                rows = engine_store_page(e->db, kind, NULL, NULL, (gint64) cap + 1, &error);
        }
        if (!rows) {
                engine_rest_reply_error(msg, error);
                return;
        }
        reply_page(e, msg, key, rows, cap, fmt);
}

/*
 * The token is the last id shown: keyset paging, so a page costs the same
 * at any depth and a row added or removed meanwhile never shifts the pages.
 * One row more than asked is read to know whether a next page exists,
 * without a COUNT.
 */
void engine_rest_page(struct engine *e, SoupServerMessage *msg, enum engine_store_page_kind kind, const char *key,
                      engine_row_fmt fmt)
{
        g_autoptr(GError) error = NULL;
        const char *q = g_uri_get_query(soup_server_message_get_uri(msg));
        g_autoptr(GHashTable) form = q ? soup_form_decode(q) : NULL;
        const char *max = form ? g_hash_table_lookup(form, "max") : NULL;
        const char *search = form ? g_hash_table_lookup(form, "search") : NULL;
        const char *page = form ? g_hash_table_lookup(form, "page") : NULL;
        g_autofree char *name = NULL;
        g_autofree char *detail = NULL;
        g_autoptr(json_t) rows = NULL;
        guint64 limit = e->config.list_max;

        if (!max && !search && !page) {
                unpaged(e, msg, kind, key, fmt);
                return;
        }
        if (max && !g_ascii_string_to_unsigned(max, 10, 1, ENGINE_PAGE_MAX, &limit, NULL)) {
                detail = g_strdup_printf("max takes a number of %s from 1 to %d", key, ENGINE_PAGE_MAX);
                engine_rest_reply_fault(msg, 400, detail);
                return;
        }
        if (search && !engine_store_page_has_name(kind)) {
                detail = g_strdup_printf("%s have no name to search: list them with max and page only", key);
                engine_rest_reply_fault(msg, 400, detail);
                return;
        }
        if (search) {
                g_auto(GStrv) kv = g_strsplit(search, "=", 2);

                if (!kv[0] || !kv[1] || strcmp(g_strstrip(kv[0]), "name") != 0 || !*g_strstrip(kv[1]) ||
                    strlen(kv[1]) > ENGINE_PAGE_SEARCH_NAME_MAX) {
                        detail = g_strdup_printf("search takes name=NAME (1-%d characters): the %s of that exact name",
                                                 ENGINE_PAGE_SEARCH_NAME_MAX, key);
                        engine_rest_reply_fault(msg, 400, detail);
                        return;
                }
                name = g_strdup(kv[1]);
        }
        if (page && !token_valid(kind, page)) {
                engine_rest_reply_fault(msg, 400, "page takes the \"next\" token of the page before");
                return;
        }
        rows = engine_store_page(e->db, kind, page, name, (gint64) limit + 1, &error);
        if (!rows && g_error_matches(error, FY_ERROR, FY_ERR_INVALID_PARAMETER)) {
                engine_rest_reply_fault(msg, 400, error->message);     /* the page's token, not the store */
                return;
        }
        if (!rows) {
                engine_rest_reply_error(msg, error);
                return;
        }
        reply_page(e, msg, key, rows, limit, fmt);
}
