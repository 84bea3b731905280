/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* JSON in and out of the REST API (http.c), for every resource file. */
#include "engine.h"

void engine_rest_reply_json(SoupServerMessage *msg, int status, json_t *body);
/* {"fault": {"reason", "detail"}}. */
json_t *engine_rest_fault(int status, const char *detail);
/* {"fault": {"reason", "detail"}} with the HTTP status. */
void engine_rest_reply_fault(SoupServerMessage *msg, int status, const char *detail);
/* An ENGINE_ERROR's code is the HTTP status; any other error is a 500. */
void engine_rest_reply_error(SoupServerMessage *msg, const GError *error);
/* The request body as a JSON object, or NULL after replying 400/415. */
json_t *engine_rest_body(struct engine *e, SoupServerMessage *msg);
bool engine_rest_method_is(SoupServerMessage *msg, const char *m);

/*
 * The route table. Each resource file exports its rows; rest.c only
 * matches a request against them and calls the handler. A pattern is the
 * path with "{name}" for a segment the handler gets in args[] (in order).
 * Every row names the least role that may call it, for the authentication
 * to enforce from this table.
 */
enum engine_role {
        ENGINE_ROLE_VIEWER,            /* reads the inventory */
        ENGINE_ROLE_OPERATOR,          /* starts and cancels operations on disks, VMs, templates, transfers */
        ENGINE_ROLE_ADMIN,             /* changes the installation: hosts, storage domains, options */
};

#define ENGINE_ROUTE_MAX_ARGS 4

typedef void (*engine_route_fn)(struct engine *e, SoupServerMessage *msg, char **args);

struct engine_route {
        const char *method;
        const char *pattern;
        engine_route_fn handler;
        enum engine_role role;
};

/* "viewer", "operator", "admin". */
const char *engine_role_name(enum engine_role role);

/* Answers with the formatted rows ({key: [...]}), or the error when rows is NULL. */
typedef json_t *(*engine_row_fmt)(struct engine *e, json_t *row);
void engine_rest_reply_rows(struct engine *e, SoupServerMessage *msg, const char *key, json_t *rows,
                            const GError *error, engine_row_fmt fmt);
/* Answers 404 for an id that is not a UUID (what: "disk", ...); true when it is one. */
bool engine_rest_id_valid(SoupServerMessage *msg, const char *what, const char *id);
/* Answers the formatted row; the error, or a 404 naming what and id, when row is NULL. */
void engine_rest_reply_row(struct engine *e, SoupServerMessage *msg, const char *what, const char *id, json_t *row,
                           const GError *error, engine_row_fmt fmt);
/* Answers a 2xx with out, or the error when out is NULL. */
void engine_rest_reply_result(SoupServerMessage *msg, int status, json_t *out, const GError *error);
/* {"id": id}, or null. */
json_t *engine_rest_ref(const char *id);
