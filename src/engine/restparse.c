/* SPDX-License-Identifier: GPL-2.0-or-later */
/* See restparse.h. */
#include <errno.h>
#include <string.h>
#include <arpa/inet.h>

#include <gio/gio.h>

#include "restparse.h"

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

/* Nothing a host name holds: IDNA would silently drop some (zero-width space), others hide or forge text. */
static bool unicode_acceptable(const char *s)
{
        for (const char *p = s; *p; p = g_utf8_next_char(p)) {
                switch (g_unichar_type(g_utf8_get_char(p))) {
                case G_UNICODE_CONTROL:
                case G_UNICODE_FORMAT:
                case G_UNICODE_UNASSIGNED:
                case G_UNICODE_PRIVATE_USE:
                case G_UNICODE_SURROGATE:
                case G_UNICODE_SPACE_SEPARATOR:
                case G_UNICODE_LINE_SEPARATOR:
                case G_UNICODE_PARAGRAPH_SEPARATOR:
                        return false;
                default:
                        break;
                }
        }
        return true;
}

/* One spelling per IP address: an IPv4-mapped IPv6 address is its IPv4 address. */
static char *ip_canonical(GInetAddress *inet)
{
        if (g_inet_address_get_family(inet) == G_SOCKET_FAMILY_IPV6) {
                const guint8 *b = g_inet_address_to_bytes(inet);
                static const guint8 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

                if (memcmp(b, mapped, sizeof(mapped)) == 0) {
                        g_autoptr(GInetAddress) v4 = g_inet_address_new_from_bytes(b + 12, G_SOCKET_FAMILY_IPV4);

                        return g_inet_address_to_string(v4);
                }
        }
        return g_inet_address_to_string(inet);
}

static bool has_ace_label(const char *name)
{
        for (const char *l = name; l; l = strchr(l, '.'), l = l ? l + 1 : NULL)
                if (g_ascii_strncasecmp(l, "xn--", 4) == 0)
                        return true;
        return false;
}

/*
 * An internationalized name is converted to its ASCII (IDNA) form first and
 * must then be a valid DNS name, so control characters, spaces or "..."
 * never reach the database, a log line or a resolver. Labels given in ACE
 * form ("xn--…") are decoded and held to the same rules as Unicode input,
 * and must encode back to themselves (no invalid or non-canonical
 * punycode). Every spelling of one IP address is stored as one string, so
 * the duplicate check sees it: a name the resolver reads as IPv4 (inet_aton:
 * 127.1, 2130706433, 0x7f.1) is stored as that address; any other name whose
 * last label is all digits is refused (no such top-level domain, RFC 3696
 * §2).
 */
char *engine_host_address_normalize(const char *address)
{
        g_autoptr(GInetAddress) inet = NULL;
        g_autofree char *ascii = NULL;
        g_autofree char *lower = NULL;
        const char *last;
        struct in_addr v4;

        if (!address || strlen(address) > 253 || !g_utf8_validate(address, -1, NULL) ||
            !unicode_acceptable(address))
                return NULL;
        inet = g_inet_address_new_from_string(address);
        if (inet)
                return ip_canonical(inet);
        ascii = g_hostname_to_ascii(address);
        if (!ascii || !dns_name_valid(ascii))
                return NULL;
        lower = g_ascii_strdown(ascii, -1);
        if (inet_aton(lower, &v4)) {
                char text[INET_ADDRSTRLEN];

                return g_strdup(inet_ntop(AF_INET, &v4, text, sizeof(text)));
        }
        last = strrchr(lower, '.');
        last = last ? last + 1 : lower;
        if (strspn(last, "0123456789") == strlen(last))
                return NULL;
        if (has_ace_label(lower)) {
                g_autofree char *unicode = g_hostname_to_unicode(lower);
                g_autofree char *back = NULL;

                if (!unicode || !g_utf8_validate(unicode, -1, NULL) || !unicode_acceptable(unicode))
                        return NULL;
                back = g_hostname_to_ascii(unicode);
                if (!back || g_ascii_strcasecmp(back, lower) != 0)
                        return NULL;
        }
        return g_steal_pointer(&lower);
}

bool engine_rest_etag_matches(const char *if_none_match, const char *etag)
{
        g_auto(GStrv) tags = NULL;

        if (!if_none_match || !etag || strlen(if_none_match) > 4096)
                return false;
        tags = g_strsplit(if_none_match, ",", 64);
        for (char **t = tags; *t; t++) {
                const char *s = g_strstrip(*t);

                if (g_str_has_prefix(s, "W/"))
                        s += 2;
                if (strcmp(s, "*") == 0 || strcmp(s, etag) == 0)
                        return true;
        }
        return false;
}
