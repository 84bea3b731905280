/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the engine checks of a REST request before a handler runs
 * (src/engine/restparse.c) and the framing check of src/lib/httpserve.c.
 * The first byte picks: 'P' the path splitter, 'B' the JSON body parser
 * (the next byte picks the content type), 'A' the host address
 * normalizer, anything else the framing check on "Name: value" lines.
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

static void fuzz_path(const char *text)
{
        char **parts = NULL;
        char *seg[ENGINE_REST_SEGMENTS_MAX];
        guint n = 0;

        if (engine_rest_path_split(text, &parts, seg, &n) < 0)
                return;
        if (n < 1 || n > ENGINE_REST_SEGMENTS_MAX || strlen(text) > ENGINE_REST_PATH_MAX)
                abort();
        for (guint i = 0; i < n; i++)
                if (!*seg[i] || (i + 1 < n && strchr(seg[i], '/')))
                        abort();
        g_strfreev(parts);
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
        default:
                fuzz_framing(text);
                break;
        }
        g_free(text);
        return 0;
}
