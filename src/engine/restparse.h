/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * What the REST API checks of a request before any handler runs, as pure
 * functions: the fuzzer fuzz/fuzz-rest.c drives them (with the framing
 * check of src/lib/httpserve.c) on arbitrary bytes.
 */
#include <stdbool.h>
#include <glib.h>
#include <jansson.h>

#define ENGINE_REST_PATH_MAX 512
#define ENGINE_REST_SEGMENTS_MAX 4

/*
 * Splits "/api/a/b/c" into its non-empty segments (at most
 * ENGINE_REST_SEGMENTS_MAX, pointing into *ret_parts, which the caller frees
 * with g_strfreev). Returns 0, or -ENOENT for anything outside /api/, too
 * long, without a segment or with too many.
 */
int engine_rest_path_split(const char *path, char ***ret_parts, char *seg[ENGINE_REST_SEGMENTS_MAX], guint *ret_n);

/*
 * A request body as a JSON object: at most max bytes, content type absent or
 * application/json, no duplicate keys. Returns 0 with *ret_body, or the HTTP
 * status (413, 415, 400) with *ret_detail (caller frees).
 */
int engine_rest_body_parse(const char *data, gsize len, const char *content_type, gsize max, json_t **ret_body,
                           char **ret_detail);

/*
 * A host address as stored: an IP address (canonical text) or, after IDNA
 * conversion, a lower-case DNS name. NULL for anything else (control,
 * format or space characters, bad labels, over 253 characters).
 */
char *engine_host_address_normalize(const char *address);
