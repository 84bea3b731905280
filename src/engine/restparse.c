/* SPDX-License-Identifier: GPL-2.0-or-later */
/* See restparse.h. */
#include <errno.h>
#include <string.h>

#include <gio/gio.h>

#include "restparse.h"

int engine_rest_path_split(const char *path, char ***ret_parts, char *seg[ENGINE_REST_SEGMENTS_MAX], guint *ret_n)
{
        g_auto(GStrv) parts = NULL;
        guint n = 0;

        if (!path || !g_str_has_prefix(path, "/api/") || strlen(path) > ENGINE_REST_PATH_MAX)
                return -ENOENT;
        parts = g_strsplit(path + 5, "/", ENGINE_REST_SEGMENTS_MAX * 2);
        for (guint i = 0; parts[i]; i++) {
                if (!*parts[i])
                        continue;
                if (n == ENGINE_REST_SEGMENTS_MAX)
                        return -ENOENT;
                seg[n++] = parts[i];
        }
        if (n == 0)
                return -ENOENT;
        *ret_parts = g_steal_pointer(&parts);
        *ret_n = n;
        return 0;
}

int engine_rest_body_parse(const char *data, gsize len, const char *content_type, gsize max, json_t **ret_body,
                           char **ret_detail)
{
        json_error_t jerr;
        json_t *body;

        if (len > max) {
                *ret_detail = g_strdup_printf("request body of %" G_GSIZE_FORMAT " bytes exceeds the limit of %"
                                              G_GSIZE_FORMAT, len, max);
                return 413;
        }
        if (content_type && g_ascii_strcasecmp(content_type, "application/json") != 0) {
                *ret_detail = g_strdup("send the body as application/json");
                return 415;
        }
        body = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
        if (!body || !json_is_object(body)) {
                *ret_detail = body ? g_strdup("the body must be a JSON object")
                                   : g_strdup_printf("malformed JSON: %s (line %d, column %d)",
                                                     jerr.text, jerr.line, jerr.column);
                json_decref(body);
                return 400;
        }
        *ret_body = body;
        return 0;
}

/* A DNS host name (RFC 1123): dot-separated labels of 1-63 letters, digits and inner hyphens, 253 in all. */
static bool dns_name_valid(const char *s)
{
        size_t len = strlen(s), label = 0;

        if (len == 0 || len > 253)
                return false;
        for (size_t i = 0; i <= len; i++) {
                char ch = s[i];

                if (ch == '.' || ch == '\0') {
                        if (label == 0 || label > 63 || s[i - 1] == '-')
                                return false;
                        label = 0;
                } else if (g_ascii_isalnum(ch) || (ch == '-' && label > 0)) {
                        label++;
                } else {
                        return false;
                }
        }
        return true;
}

/*
 * An internationalized name is converted to its ASCII (IDNA) form first and
 * must then be a valid DNS name, so control characters, spaces or "..."
 * never reach the database, a log line or a resolver.
 */
char *engine_host_address_normalize(const char *address)
{
        g_autoptr(GInetAddress) inet = NULL;
        g_autofree char *ascii = NULL;

        if (!address || strlen(address) > 253 || !g_utf8_validate(address, -1, NULL))
                return NULL;
        /* IDNA would silently drop some (zero-width space): refuse what no host name holds instead. */
        for (const char *p = address; *p; p = g_utf8_next_char(p)) {
                switch (g_unichar_type(g_utf8_get_char(p))) {
                case G_UNICODE_CONTROL:
                case G_UNICODE_FORMAT:
                case G_UNICODE_UNASSIGNED:
                case G_UNICODE_PRIVATE_USE:
                case G_UNICODE_SURROGATE:
                case G_UNICODE_SPACE_SEPARATOR:
                case G_UNICODE_LINE_SEPARATOR:
                case G_UNICODE_PARAGRAPH_SEPARATOR:
                        return NULL;
                default:
                        break;
                }
        }
        inet = g_inet_address_new_from_string(address);
        if (inet)
                return g_inet_address_to_string(inet);
        ascii = g_hostname_to_ascii(address);
        if (!ascii || !dns_name_valid(ascii))
                return NULL;
        return g_ascii_strdown(ascii, -1);
}
