/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "transfercors.h"

#define ORIGIN_MAX 255

bool agent_xfer_cors_origin_valid(const char *origin)
{
        const char *host;
        size_t n = strlen(origin);

        if (n == 0)
                return true;
        if (n > ORIGIN_MAX)
                return false;
        if (g_str_has_prefix(origin, "https://"))
                host = origin + 8;
        else if (g_str_has_prefix(origin, "http://"))
                host = origin + 7;
        else
                return false;
        if (!*host)
                return false;
        /* A browser's Origin header: scheme, host, port; no path, no user, no trailing slash. */
        for (const char *p = host; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr(".-:[]", *p))
                        return false;
        return true;
}

bool agent_xfer_cors(const char *allowed, SoupServerMessage *msg)
{
        SoupMessageHeaders *req = soup_server_message_get_request_headers(msg);
        SoupMessageHeaders *resp = soup_server_message_get_response_headers(msg);
        const char *origin = soup_message_headers_get_one(req, "Origin");

        /* Caches must not give one origin's answer to another. */
        if (allowed && *allowed)
                soup_message_headers_append(resp, "Vary", "Origin");
        if (!allowed || !*allowed || !origin || strcmp(origin, allowed) != 0)
                return false;
        soup_message_headers_replace(resp, "Access-Control-Allow-Origin", allowed);
        if (strcmp(soup_server_message_get_method(msg), "OPTIONS") != 0 ||
            !soup_message_headers_get_one(req, "Access-Control-Request-Method")) {
                soup_message_headers_replace(resp, "Access-Control-Expose-Headers", "Content-Range, Content-Length");
                return false;
        }
        soup_message_headers_replace(resp, "Access-Control-Allow-Methods", "GET, PUT, PATCH, OPTIONS");
        soup_message_headers_replace(resp, "Access-Control-Allow-Headers", "Content-Range, Content-Type, Range");
        soup_message_headers_replace(resp, "Access-Control-Max-Age", "600");
        soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
        return true;
}
