/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the engine checks of a REST request before a handler runs
 * (src/engine/restparse.c) and the framing check of src/lib/httpserve.c.
 * The first byte picks: 'P' the route lookup of src/engine/rest.c, 'B' the JSON body parser
 * (the next byte picks the content type), 'A' the host address
 * normalizer, 'E' the If-None-Match matcher (header, a newline, the tag),
 * anything else the framing check on "Name: value" lines.
 * Whatever the input, each answers consistently and never reads or
 * writes out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <jansson.h>
#include <libsoup/soup.h>

#include "httpserve.h"
#include "restparse.h"
#include "rest.h"

/*
 * "METHOD\npath" (no newline: GET) through the engine's real route lookup
 * (src/engine/rest.c), as on_request() calls it: what it finds is a row of
 * the route table with that method, whose literal segments are the path's
 * and whose {...} segments are captured, non-empty and without a '/'.
 */
static void fuzz_path(char *text)
{
        char *nl = strchr(text, '\n');
        const char *method = nl ? text : "GET";
        const char *path = nl ? nl + 1 : text;
        char buf[ENGINE_REST_PATH_MAX + 1];
        char *args[ENGINE_ROUTE_MAX_ARGS] = { NULL };
        const struct engine_route *r;
        bool known;
        guint captures = 0, got = 0;

        if (nl)
                *nl = '\0';
        if (!g_str_has_prefix(path, "/api/") || strlen(path) > ENGINE_REST_PATH_MAX)
                return;         /* on_request answers 404 before any lookup */
        r = engine_rest_route_find(method, path, args, &known, buf, sizeof(buf));
        if (!r) {
                for (guint i = 0; i < ENGINE_ROUTE_MAX_ARGS; i++)
                        if (args[i])
                                abort();
                return;
        }
        if (!known || strcmp(r->method, method) != 0 || !r->handler || !g_str_has_prefix(r->pattern, "/api/"))
                abort();
        for (const char *p = r->pattern; (p = strchr(p, '{')); p++)
                captures++;
        for (guint i = 0; i < ENGINE_ROUTE_MAX_ARGS; i++) {
                if (!args[i])
                        continue;
                got++;
                if (!*args[i] || strchr(args[i], '/') || args[i] < buf || args[i] >= buf + sizeof(buf))
                        abort();
        }
        if (got != captures)
                abort();
}

static void fuzz_body(const uint8_t *data, size_t size)
{
        static const char *const types[] = { NULL, "application/json", "text/plain", "APPLICATION/JSON" };
        json_t *body = NULL;
        char *detail = NULL;
        int status;

        if (size < 1)
                return;
        status = engine_rest_body_parse((const char *) data + 1, size - 1, types[data[0] % 4], 4096, &body, &detail);
        if (status == 0) {
                if (!json_is_object(body) || detail)
                        abort();
                json_decref(body);
        } else {
                if ((status != 400 && status != 413 && status != 415) || !detail || body)
                        abort();
                g_free(detail);
        }
}

static void fuzz_address(const char *text)
{
        char *a = engine_host_address_normalize(text);
        char *again;

        if (!a)
                return;
        if (strlen(a) > 253)
                abort();
        for (const char *p = a; *p; p++)
                if (!g_ascii_isgraph(*p))
                        abort();
        /* What is stored is itself a valid address, unchanged. */
        again = engine_host_address_normalize(a);
        if (!again || strcmp(again, a) != 0)
                abort();
        g_free(again);
        g_free(a);
}

static void fuzz_etag(const char *text)
{
        const char *nl = strchr(text, '\n');
        char *inm = nl ? g_strndup(text, (gsize) (nl - text)) : g_strdup(text);
        const char *tag = nl ? nl + 1 : "\"x\"";

        /* "*" matches whatever the tag; a header over the limit never does. */
        if (strcmp(inm, "*") == 0 && !engine_rest_etag_matches(inm, tag))
                abort();
        if (strlen(inm) > 4096 && engine_rest_etag_matches(inm, tag))
                abort();
        g_free(inm);
}

static bool token(const char *s)
{
        if (!*s)
                return false;
        for (; *s; s++)
                if (!g_ascii_isalnum(*s) && !strchr("!#$%&'*+-.^_`|~", *s))
                        return false;
        return true;
}

static void fuzz_framing(const char *text)
{
        SoupMessageHeaders *h = soup_message_headers_new(SOUP_MESSAGE_HEADERS_REQUEST);
        char **lines = g_strsplit(text, "\n", 64);
        char *detail = NULL;
        int status;

        for (guint i = 0; lines[i]; i++) {
                char *colon = strchr(lines[i], ':');

                if (!colon)
                        continue;
                *colon = '\0';
                /* What libsoup's parser would let through: a token, then a value without CR or NUL. */
                if (!token(lines[i]) || strchr(colon + 1, '\r'))
                        continue;
                soup_message_headers_append(h, lines[i], g_strstrip(colon + 1));
        }
        status = fy_http_check_framing(h, &detail);
        if (status == 0) {
                if (detail)
                        abort();
        } else {
                if (status != 400 || !detail)
                        abort();
                g_free(detail);
        }
        g_strfreev(lines);
        soup_message_headers_unref(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *text;

        if (size < 1 || size > 64 * 1024)
                return 0;
        if (data[0] == 'B') {
                fuzz_body(data + 1, size - 1);
                return 0;
        }
        text = g_strndup((const char *) data + 1, size - 1);
        switch (data[0]) {
        case 'P':
                fuzz_path(text);
                break;
        case 'A':
                fuzz_address(text);
                break;
        case 'E':
                fuzz_etag(text);
                break;
        default:
                fuzz_framing(text);
                break;
        }
        g_free(text);
        return 0;
}
