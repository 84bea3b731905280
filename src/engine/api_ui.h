/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* The web UI's files, embedded in the engine (scripts/embed-ui.py) and served at "/". */
#include <stdbool.h>
#include <stddef.h>

#include "http.h"

struct engine_ui_asset {
        const char *path;              /* "/" or "/assets/NAME-HASH.EXT" */
        const char *type;              /* Content-Type */
        const unsigned char *data;
        size_t size;
        const char *etag;              /* quoted */
        bool immutable;                /* its name changes with its bytes: cached for ever */
};

extern const struct engine_ui_asset engine_ui_assets[];
extern const size_t engine_ui_n_assets;

/* Answers a request for a path outside /api, /sso and /metrics: an asset, or 404/405. */
void engine_ui_serve(struct engine *e, SoupServerMessage *msg, const char *path);
/* GET /api/session: the caller's name and role. */
const struct engine_route *engine_api_ui_routes(size_t *ret_n);
