/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* Paging and search on the REST collections (api_page.c). */
#include "http.h"
#include "store/store.h"

/* The most rows a page holds (max); list_max, the size of a page without max, is at most this too. */
#define ENGINE_PAGE_MAX 1000
/* The longest name search=name= takes (names are at most this long). */
#define ENGINE_PAGE_SEARCH_NAME_MAX 255

/*
 * GET of a collection with any of ?max=N (1-1000), ?search=name=NAME
 * (oVirt's simple search: one exact name; not for jobs and events, which
 * have none) or ?page=TOKEN (the "next" of the page before, same search;
 * without max, pages of list_max): answers one page, {key: [...], "next":
 * TOKEN when more follow}, or a 400 for a bad parameter. With none of the
 * three: the whole collection in its usual order when it holds at most
 * list_max rows (engine option, default 1000), else its first page of
 * list_max with "next". key: "disks", ...; fmt: NULL to show the rows as
 * stored.
 */
void engine_rest_page(struct engine *e, SoupServerMessage *msg, enum engine_store_page_kind kind, const char *key,
                      engine_row_fmt fmt);
