/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* For the files of src/engine/store/ only: the store object and its statement helpers. */
#include "backend.h"
#include "store.h"

struct engine_store {
        const struct engine_store_backend *be;
        void *handle;
        engine_store_change_fn on_change;      /* told the table a write changed (the UI's live updates) */
        void *on_change_data;
        engine_store_commit_fn on_commit;      /* told each durable change (tests' crash points) */
        void *on_commit_data;
        unsigned depth;         /* nested begin calls; only the outermost reaches the backend */
        bool failed;            /* an inner level rolled back or a write failed: the outermost commit rolls back */
        bool fenced;            /* writes must come from the leader of epoch (store.c, leader.c) */
        bool epoch_checked;     /* this transaction holds the leader row FOR KEY SHARE at our epoch */
        gint64 epoch;           /* 0: not the leader, no fenced write passes */
        engine_store_deposed_fn on_deposed;    /* told when a write found a newer epoch */
        void *on_deposed_data;
};

int store_exec(struct engine_store *st, GError **error, const char *sql, const char *types, ...);
json_t *store_query(struct engine_store *st, GError **error, const char *sql, const char *types, ...);
/* The first row, or NULL: with *error set on failure, without when there is no row. */
json_t *store_query_one(struct engine_store *st, GError **error, const char *sql, const char *types, ...);
gint64 store_changes(struct engine_store *st);
