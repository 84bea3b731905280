/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The engine's REST API over libsoup 3, synchronous: one request at a time. */
#include <string.h>
#include <libsoup/soup.h>

#include "config.h"
#include "cli.h"
#include "uuid.h"

/* A request that gets no answer in this time fails rather than hang the shell. */
#define CLI_HTTP_TIMEOUT_S 60

/* $FERRY_HTTP_TIMEOUT (1-3600 s) or CLI_HTTP_TIMEOUT_S: how long an engine may leave a request unanswered. */
static guint cli_http_timeout_s(void)
{
        const char *env = g_getenv("FERRY_HTTP_TIMEOUT");
        guint64 n;

        if (env && g_ascii_string_to_unsigned(env, 10, 1, 3600, &n, NULL))
                return (guint) n;
        return CLI_HTTP_TIMEOUT_S;
}

struct cli_engine {
        SoupSession *session;
        char *url;
        char *ca_file;
        char *authorization;           /* "Bearer TOKEN", sent with every request */
        unsigned last_status;
        GPtrArray *peers;              /* other engines of the same installation (same CA): see cli_engine_send */
        unsigned takeover_wait_s;      /* how long "no engine leads yet" is waited out: see cli_engine_send */
};

/* At most this many engines are known: a list from a file or the environment is bounded. */
#define CLI_MAX_PEERS 16
/* A takeover (the active engine died) takes a standby seconds (under 10, ARCHITECTURE.md): waited out this long. */
#define CLI_TAKEOVER_WAIT_S 15

static bool cli_host_is_loopback(const char *host)
{
        g_autoptr(GInetAddress) addr = NULL;

        if (g_ascii_strcasecmp(host, "localhost") == 0)
                return true;
        addr = g_inet_address_new_from_string(host);
        return addr && g_inet_address_get_is_loopback(addr);
}

struct cli_engine *cli_engine_new(const char *url, const char *ca_file, GError **error)
{
        g_autoptr(GUri) uri = NULL;
        g_autoptr(GError) local = NULL;
        struct cli_engine *e;
        const char *scheme;
        size_t len;

        uri = g_uri_parse(url, G_URI_FLAGS_NONE, &local);
        if (!uri) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "invalid engine URL '%s': %s", url,
                            local->message);
                return NULL;
        }
        scheme = g_uri_get_scheme(uri);
        if ((g_ascii_strcasecmp(scheme, "http") != 0 && g_ascii_strcasecmp(scheme, "https") != 0) ||
            !g_uri_get_host(uri) || !*g_uri_get_host(uri) || g_uri_get_query(uri) || g_uri_get_fragment(uri)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE,
                            "invalid engine URL '%s': expected http://HOST[:PORT] or https://HOST[:PORT]", url);
                return NULL;
        }

        e = g_new0(struct cli_engine, 1);
        e->peers = g_ptr_array_new_with_free_func(g_free);
        e->takeover_wait_s = CLI_TAKEOVER_WAIT_S;
        e->url = g_strdup(url);
        len = strlen(e->url);
        while (len > 0 && e->url[len - 1] == '/')
                e->url[--len] = '\0';
        e->session = soup_session_new_with_options("timeout", cli_http_timeout_s(),
                                                   "user-agent", "ferry/" FERRY_VERSION, NULL);
        /* A local engine (cluster up) is never behind the proxy $http_proxy names. */
        if (cli_host_is_loopback(g_uri_get_host(uri)))
                soup_session_set_proxy_resolver(e->session, NULL);
        if (ca_file) {
                g_autoptr(GTlsDatabase) db = g_tls_file_database_new(ca_file, &local);

                if (!db) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "cannot use the CA file: %s", local->message);
                        cli_engine_free(e);
                        return NULL;
                }
                soup_session_set_tls_database(e->session, db);
                e->ca_file = g_strdup(ca_file);
        }
        return e;
}

void cli_engine_free(struct cli_engine *e)
{
        if (!e)
                return;
        g_clear_object(&e->session);
        g_clear_pointer(&e->peers, g_ptr_array_unref);
        g_free(e->url);
        g_free(e->ca_file);
        if (e->authorization)
                memset(e->authorization, 0, strlen(e->authorization));
        g_free(e->authorization);
        g_free(e);
}

int cli_engine_add_peer(struct cli_engine *e, const char *url, GError **error)
{
        g_autoptr(cli_engine) check = NULL;
        char *u;

        /* The same rules as the first engine's URL. */
        if (!(check = cli_engine_new(url, NULL, error)))
                return -1;
        if (strcmp(check->url, e->url) == 0)
                return 0;
        for (guint i = 0; i < e->peers->len; i++)
                if (strcmp(e->peers->pdata[i], check->url) == 0)
                        return 0;
        if (e->peers->len >= CLI_MAX_PEERS) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "more than %d engines given", CLI_MAX_PEERS);
                return -1;
        }
        u = g_steal_pointer(&check->url);
        g_ptr_array_add(e->peers, u);
        return 0;
}

const char *cli_engine_url(const struct cli_engine *e)
{
        return e->url;
}

unsigned cli_engine_last_status(const struct cli_engine *e)
{
        return e->last_status;
}

void cli_engine_set_takeover_wait(struct cli_engine *e, unsigned seconds)
{
        e->takeover_wait_s = MIN(seconds, CLI_TAKEOVER_WAIT_MAX_S);
}

static int cli_read_body(GInputStream *in, GByteArray *body, GError **error)
{
        guint8 buf[16384];

        for (;;) {
                gssize n = g_input_stream_read(in, buf, sizeof(buf), NULL, error);

                if (n < 0)
                        return -1;
                if (n == 0)
                        return 0;
                if (body->len + (gsize) n > CLI_MAX_RESPONSE) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "the engine's answer is larger than %u MiB", CLI_MAX_RESPONSE >> 20);
                        return -1;
                }
                g_byte_array_append(body, buf, (guint) n);
        }
}

/* The engine's {"fault": {"reason", "detail"}} as "REASON: DETAIL". */
static char *cli_fault_message(const json_t *json, unsigned status, const char *phrase)
{
        const char *reason = NULL, *detail = NULL;
        g_autofree char *r = NULL, *d = NULL;

        if (json && json_unpack((json_t *) json, "{s:{s?s,s?s}}", "fault", "reason", &reason,
                                "detail", &detail) == 0 && (reason || detail)) {
                r = cli_printable(reason ? reason : "error");
                if (!detail || !*detail)
                        return g_steal_pointer(&r);
                d = cli_printable(detail);
                return g_strdup_printf("%s: %s", r, d);
        }
        return g_strdup_printf("HTTP %u %s", status, phrase ? phrase : "");
}

void cli_engine_set_token(struct cli_engine *e, const char *token)
{
        if (e->authorization)
                memset(e->authorization, 0, strlen(e->authorization));
        g_free(e->authorization);
        e->authorization = token ? g_strconcat("Bearer ", token, NULL) : NULL;
}

bool cli_engine_has_token(const struct cli_engine *e)
{
        return e->authorization != NULL;
}

int cli_engine_request(struct cli_engine *e, const char *method, const char *path, json_t *body,
                       json_t **ret_json, GError **error)
{
        g_autofree char *text = NULL;

        if (body) {
                char *t = json_dumps(body, JSON_COMPACT);

                if (!t) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "out of memory");
                        return -1;
                }
                text = g_strdup(t);
                free(t);
        }
        return cli_engine_send(e, method, path, text ? "application/json" : NULL, text, ret_json, error);
}

/* The request connected nowhere, so it cannot have reached an engine: another may take it. */
static bool cli_error_unreached(const GError *error)
{
        return g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED) ||
               g_error_matches(error, G_IO_ERROR, G_IO_ERROR_HOST_UNREACHABLE) ||
               g_error_matches(error, G_IO_ERROR, G_IO_ERROR_NETWORK_UNREACHABLE);
}

static void cli_note_sent(SoupMessage *msg, gpointer sent)
{
        *(bool *) sent = true;
}

/*
 * Whether a request that failed with `error` may go to another engine: one
 * that connected nowhere, or that timed out (a hung engine: SIGSTOPped, or
 * its machine gone) when it only reads, or when its headers were never all
 * written, so no engine can have a whole request to act on. A write whose
 * request went out and then timed out may have been done: its error says so
 * instead, and it is not sent again.
 */
static bool cli_error_try_next(const char *method, bool sent, GError **error)
{
        if (cli_error_unreached(*error))
                return true;
        if (!g_error_matches(*error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT))
                return false;
        if (!sent || strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
                return true;
        g_prefix_error(error, "no answer to %s after it was sent (it may or may not have been done: look "
                              "before sending it again): ", method);
        return false;
}

/* One try at base + path; the message and its body on success. */
static int cli_send_once(struct cli_engine *e, const char *base, const char *method, const char *path,
                         const char *content_type, const char *text, SoupMessage **ret_msg, GByteArray *data,
                         bool *ret_try_next, GError **error)
{
        bool sent = false;
        g_autofree char *uri = g_strconcat(base, path, NULL);
        g_autoptr(SoupMessage) msg = NULL;
        g_autoptr(GInputStream) in = NULL;

        g_byte_array_set_size(data, 0);
        msg = soup_message_new(method, uri);
        if (!msg) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "invalid engine URL '%s'", uri);
                return -1;
        }
        /* A redirect would carry the token (or a login's password) wherever the answer points: libsoup follows
         * none; cli_engine_send follows a 307 to a known engine only. */
        soup_message_add_flags(msg, SOUP_MESSAGE_NO_REDIRECT);
        soup_message_headers_append(soup_message_get_request_headers(msg), "Accept", "application/json");
        if (e->authorization)
                soup_message_headers_append(soup_message_get_request_headers(msg), "Authorization", e->authorization);
        if (text) {
                g_autoptr(GBytes) bytes = g_bytes_new(text, strlen(text));

                soup_message_set_request_body_from_bytes(msg, content_type, bytes);
        }
        g_signal_connect(msg, "wrote-headers", G_CALLBACK(cli_note_sent), &sent);
        *ret_try_next = false;
        in = soup_session_send(e->session, msg, NULL, error);
        if (!in || cli_read_body(in, data, error) < 0) {
                *ret_try_next = cli_error_try_next(method, sent, error);
                return -1;
        }
        *ret_msg = g_steal_pointer(&msg);
        return 0;
}

/* The known engine a standby's 307 points to (the same request there), or NULL. */
static const char *cli_redirect_target(struct cli_engine *e, const char *location, const char *path)
{
        for (guint i = 0; location && i <= e->peers->len; i++) {
                const char *peer = i < e->peers->len ? e->peers->pdata[i] : e->url;
                size_t n = strlen(peer);

                /* "https://a:1/" as listed matches a Location of "https://a:1/api/...". */
                while (n > 0 && peer[n - 1] == '/')
                        n--;
                if (strncmp(location, peer, n) == 0 && strcmp(location + n, path) == 0)
                        return peer;
        }
        return NULL;
}

/* Retry-After in whole seconds (1..CLI_TAKEOVER_WAIT_MAX_S), or 0 when absent or not a number of seconds. */
static unsigned cli_retry_after(SoupMessage *msg)
{
        const char *v = soup_message_headers_get_one(soup_message_get_response_headers(msg), "Retry-After");
        guint64 n;

        if (!v || g_ascii_string_to_unsigned(v, 10, 1, CLI_TAKEOVER_WAIT_MAX_S, &n, NULL) == FALSE)
                return 0;
        return (unsigned) n;
}

/*
 * One round over the engines known (one active, standbys that send writes
 * to it with a 307): an engine that cannot be connected to is skipped for
 * the next one, and a 307 is followed once, only to a known engine (the same
 * CA verifies it), with the same request; the next engine is also asked when
 * that one cannot be connected to. Any other redirect is an error.
 * *ret_not_now (NULL: none did): the last "not now" an engine said without
 * doing anything, in words — a 503 with Retry-After (a standby while no
 * engine leads), or a 307 to an engine that cannot be connected to (a standby
 * that still names the dead leader).
 */
static int cli_send_round(struct cli_engine *e, const char *method, const char *path, const char *content_type,
                          const char *text, SoupMessage **ret_msg, GByteArray *data, const char **ret_base,
                          char **ret_not_now, GError **error)
{
        g_autoptr(SoupMessage) msg = NULL;
        g_autoptr(GError) local = NULL;
        const char *base = e->url;
        bool followed = false, try_next = false;
        guint next_peer = 0;
        unsigned status;

        *ret_not_now = NULL;
        for (;;) {
                g_clear_error(&local);
                g_clear_object(&msg);
                if (cli_send_once(e, base, method, path, content_type, text, &msg, data, &try_next, &local) < 0) {
                        if (try_next && followed) {
                                g_free(*ret_not_now);
                                *ret_not_now = g_strdup_printf("a standby names %s as the active engine, which "
                                                               "cannot be reached", base);
                        }
                        if (try_next && next_peer < e->peers->len) {
                                base = e->peers->pdata[next_peer++];
                                followed = false;
                                continue;
                        }
                        break;
                }
                status = soup_message_get_status(msg);
                if (status == SOUP_STATUS_SERVICE_UNAVAILABLE && cli_retry_after(msg) > 0) {
                        json_t *fault = json_loadb((const char *) data->data, data->len, 0, NULL);

                        g_free(*ret_not_now);
                        *ret_not_now = cli_fault_message(fault, status, soup_message_get_reason_phrase(msg));
                        json_decref(fault);
                }
                /* 503 from a standby while no engine leads (a failover under way): the next engine known may
                 * be the new active one. */
                if (status == SOUP_STATUS_SERVICE_UNAVAILABLE && !followed && next_peer < e->peers->len) {
                        base = e->peers->pdata[next_peer++];
                        continue;
                }
                if (status == SOUP_STATUS_TEMPORARY_REDIRECT && !followed) {
                        const char *to = soup_message_headers_get_one(soup_message_get_response_headers(msg),
                                                                      "Location");
                        const char *target = cli_redirect_target(e, to, path);

                        if (target && strcmp(target, base) != 0) {
                                base = target;
                                followed = true;
                                continue;
                        }
                }
                break;
        }
        *ret_base = base;
        if (local) {
                g_propagate_error(error, g_steal_pointer(&local));
                return -1;
        }
        *ret_msg = g_steal_pointer(&msg);
        return 0;
}

/*
 * A round (cli_send_round) that ends without an answer that counts — no
 * engine reached, or a 503 with Retry-After — after some engine said "not
 * now" is a takeover under way (the active engine died, a standby is about
 * to lead: seconds, ARCHITECTURE.md): waited out with backoff for up to
 * takeover_wait_s, then the round is tried again. Nothing was done by then
 * (a 503 is answered before any work; a connection refused carried no
 * request), so a write is safe to send again.
 */
int cli_engine_send(struct cli_engine *e, const char *method, const char *path, const char *content_type,
                    const char *text, json_t **ret_json, GError **error)
{
        g_autoptr(SoupMessage) msg = NULL;
        g_autoptr(GByteArray) data = g_byte_array_new();
        g_autoptr(GError) local = NULL;
        const char *base = e->url;
        gint64 deadline = g_get_monotonic_time() + (gint64) e->takeover_wait_s * G_USEC_PER_SEC;
        gint64 delay_us = 250 * 1000;
        json_t *json = NULL;
        json_error_t jerr;
        unsigned status;
        bool told = false;

        e->last_status = 0;
        for (;;) {
                g_autofree char *not_now = NULL;
                gint64 left;
                bool retry;

                g_clear_error(&local);
                g_clear_object(&msg);
                cli_send_round(e, method, path, content_type, text, &msg, data, &base, &not_now, &local);
                retry = not_now && (local ? cli_error_unreached(local) :
                                    soup_message_get_status(msg) == SOUP_STATUS_SERVICE_UNAVAILABLE &&
                                    cli_retry_after(msg) > 0);
                left = deadline - g_get_monotonic_time();
                if (!retry || left <= 0)
                        break;
                if (!told) {
                        fprintf(stderr, "ferry: %s; trying again for up to %u s\n", not_now, e->takeover_wait_s);
                        told = true;
                }
                g_usleep((gulong) MIN(delay_us, left));
                delay_us = MIN(delay_us * 2, 2 * G_USEC_PER_SEC);
        }
        if (local) {
                if (local->domain == CLI_ERROR)
                        g_propagate_error(error, g_steal_pointer(&local));
                else if (local->domain == G_TLS_ERROR && local->code == G_TLS_ERROR_BAD_CERTIFICATE)
                        /* Not a network problem: the engine answered with a certificate we do not trust. */
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "the engine at %s presented a certificate that does not verify against %s: %s; "
                                    "give the installation's CA (ca.pem) with --ca-file or $FERRY_CA_FILE",
                                    base, e->ca_file ? e->ca_file : "the system's CAs", local->message);
                else
                        g_set_error(error, CLI_ERROR, CLI_ERROR_UNREACHABLE,
                                    "cannot reach the engine at %s: %s", base, local->message);
                return -1;
        }
        status = soup_message_get_status(msg);
        e->last_status = status;
        if (SOUP_STATUS_IS_REDIRECTION(status)) {
                const char *to = soup_message_headers_get_one(soup_message_get_response_headers(msg), "Location");

                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                            "the engine at %s answered %s %s with a redirect (%u) to %.200s; not followed, so the "
                            "token or password does not travel elsewhere: give the engine's own URL, or list every "
                            "engine of the installation (--engine URL,URL...)",
                            base, method, path, status, to ? to : "(no Location)");
                return -1;
        }

        if (data->len > 0) {
                json = json_loadb((const char *) data->data, data->len, JSON_REJECT_DUPLICATES, &jerr);
                if (!json && status < 400) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "the engine's answer to %s %s is not JSON: %s", method, path, jerr.text);
                        return -1;
                }
        }
        if (status >= 400) {
                g_autofree char *message = cli_fault_message(json, status, soup_message_get_reason_phrase(msg));

                if (status == 401)
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAULT,
                                    "%s\nlog in first: ferry login --user USER (the engine %s)", message, e->url);
                else
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAULT, "%s", message);
                json_decref(json);
                return -1;
        }
        if (ret_json)
                *ret_json = json;
        else
                json_decref(json);
        return 0;
}

int cli_engine_get(struct cli_engine *e, const char *path, json_t **ret_json, GError **error)
{
        json_t *json = NULL;

        if (cli_engine_request(e, "GET", path, NULL, &json, error) < 0)
                return -1;
        if (!json_is_object(json)) {
                json_decref(json);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine's answer to GET %s is not an object",
                            path);
                return -1;
        }
        *ret_json = json;
        return 0;
}

/* GET path; the answer must hold the array `key`. */
static int get_rows(struct cli_engine *e, const char *path, const char *key, json_t **ret_json, GError **error)
{
        json_t *json = NULL;

        if (cli_engine_get(e, path, &json, error) < 0)
                return -1;
        if (!json_is_array(json_object_get(json, key))) {
                json_decref(json);
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "the engine's answer to GET %s has no '%s' list",
                            path, key);
                return -1;
        }
        *ret_json = json;
        return 0;
}

/*
 * GET path and every page after it: the engine answers a list without max
 * in pages of list_max (1000 by default) past that many rows, the rest
 * behind "next" (docs/rest-api.md). The rows of every page end up in the
 * first answer's `key`, which then has no "next". At most CLI_LIST_PAGES
 * pages, so an engine that never ends its list cannot exhaust the memory.
 */
#define CLI_LIST_PAGES 1000

static int get_every_page(struct cli_engine *e, const char *path, const char *key, json_t **ret_json, GError **error)
{
        json_t *json = NULL, *next;

        if (get_rows(e, path, key, &json, error) < 0)
                return -1;
        for (unsigned n = 1; json_is_string(next = json_object_get(json, "next")); n++) {
                g_autofree char *q = g_uri_escape_string(json_string_value(next), NULL, FALSE);
                g_autofree char *more_path = g_strdup_printf("%s%cpage=%s", path, strchr(path, '?') ? '&' : '?', q);
                json_t *more = NULL;

                if (n >= CLI_LIST_PAGES) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED,
                                    "GET %s: more than %d pages; list them with --max and --page", path, CLI_LIST_PAGES);
                        json_decref(json);
                        return -1;
                }
                if (get_rows(e, more_path, key, &more, error) < 0) {
                        json_decref(json);
                        return -1;
                }
                json_array_extend(json_object_get(json, key), json_object_get(more, key));
                if (json_object_get(more, "next"))
                        json_object_set(json, "next", json_object_get(more, "next"));
                else
                        json_object_del(json, "next");
                json_decref(more);
        }
        *ret_json = json;
        return 0;
}

int cli_engine_get_list(struct cli_engine *e, const char *path, const char *key, json_t **ret_array,
                        GError **error)
{
        json_t *json = NULL;

        if (get_every_page(e, path, key, &json, error) < 0)
                return -1;
        *ret_array = json_incref(json_object_get(json, key));
        json_decref(json);
        return 0;
}

/*
 * Whether the engine's search=name= finds `name` exactly: it strips blanks
 * around the name and takes at most 255 bytes, so such names are found in
 * the whole list instead.
 */
static bool cli_name_searchable(const char *name)
{
        size_t len = strlen(name);

        return len > 0 && len <= 255 && !g_ascii_isspace(name[0]) && !g_ascii_isspace(name[len - 1]);
}

/*
 * Finds an element of `key` at `path` whose id or name is `arg`. With
 * `searchable` (a paged collection) a name is looked up by one
 * ?search=name=NAME, not by listing every element: at 100,000 disks that
 * is one page of the matches instead of the whole inventory. An id, a
 * collection without search and a name the search cannot express still
 * read the whole list. The matches are checked here again either way.
 */
int cli_engine_resolve(struct cli_engine *e, const char *path, const char *key, bool searchable,
                       const char *what, const char *arg, json_t **ret_item, GError **error)
{
        json_t *list = NULL, *item, *found = NULL;
        unsigned named = 0;
        size_t i;

        if (!fy_uuid_is_valid(arg) && cli_check_name(what, arg, error) < 0)
                return -1;
        if (searchable && !fy_uuid_is_valid(arg) && cli_name_searchable(arg)) {
                g_autofree char *q = g_uri_escape_string(arg, NULL, FALSE);
                g_autofree char *query = g_strdup_printf("%s?search=name%%3D%s", path, q);

                if (cli_engine_get_list(e, query, key, &list, error) < 0)
                        return -1;
        } else if (cli_engine_get_list(e, path, key, &list, error) < 0) {
                return -1;
        }
        json_array_foreach(list, i, item) {
                const char *id = json_string_value(json_object_get(item, "id"));
                const char *name = json_string_value(json_object_get(item, "name"));

                if (id && g_ascii_strcasecmp(id, arg) == 0) {
                        found = item;
                        named = 1;
                        break;
                }
                if (name && strcmp(name, arg) == 0) {
                        found = item;
                        named++;
                }
        }
        if (found && named == 1)
                *ret_item = json_incref(found);
        json_decref(list);
        if (named == 1)
                return 0;

        g_autofree char *safe = cli_printable(arg);
        if (named == 0)
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "no %s '%s'", what, safe);
        else
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%u %ss are named '%s': give the id", named,
                            what, safe);
        return -1;
}

void cli_page_clear(struct cli_page *p)
{
        g_clear_pointer(&p->search, g_free);
        g_clear_pointer(&p->page, g_free);
        g_clear_pointer(&p->max_help, g_free);
        g_clear_pointer(&p->search_help, g_free);
}

void cli_page_entries(struct cli_page *p, const char *what, bool named, GOptionEntry ret_entries[4])
{
        size_t n = 0;

        g_free(p->max_help);
        p->max_help = g_strdup_printf("At most N %s (1-1000); the next page's token is printed when more follow", what);
        ret_entries[n++] = (GOptionEntry) { "max", 0, 0, G_OPTION_ARG_INT, &p->max, p->max_help, "N" };
        if (named) {
                g_free(p->search_help);
                p->search_help = g_strdup_printf("Only the %s of that exact name (oVirt's search)", what);
                ret_entries[n++] = (GOptionEntry) { "search", 0, 0, G_OPTION_ARG_STRING, &p->search, p->search_help,
                                                    "name=NAME" };
        }
        ret_entries[n++] = (GOptionEntry) { "page", 0, 0, G_OPTION_ARG_STRING, &p->page,
                                            "The page after the one that printed TOKEN", "TOKEN" };
        ret_entries[n] = (GOptionEntry) G_OPTION_ENTRY_NULL;
}

int cli_engine_get_page(struct cli_engine *e, const struct cli_page *p, const char *base, const char *key,
                        json_t **ret_json, GError **error)
{
        g_autoptr(GString) path = g_string_new(base);
        json_t *json = NULL;
        char sep = strchr(base, '?') ? '&' : '?';

        if (p->max < 0 || p->max > 1000) {
                g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--max takes 1 to 1000");
                return -1;
        }
        /* The engine checks the values; here they are only escaped into the query. */
        if (p->max) {
                g_string_append_printf(path, "%cmax=%d", sep, p->max);
                sep = '&';
        }
        if (p->search) {
                g_autofree char *q = g_uri_escape_string(p->search, NULL, FALSE);

                g_string_append_printf(path, "%csearch=%s", sep, q);
                sep = '&';
        }
        if (p->page) {
                g_autofree char *q = g_uri_escape_string(p->page, NULL, FALSE);

                g_string_append_printf(path, "%cpage=%s", sep, q);
        }
        /* Without --max or --page a list shows every row, as it did before the engine capped its answers;
         * jobs and events, newest first, showed their newest 1000 and still do (the rest: --page). */
        if (!p->max && !p->page && strcmp(key, "jobs") != 0 && strcmp(key, "events") != 0)
                return get_every_page(e, path->str, key, ret_json, error);
        if (get_rows(e, path->str, key, &json, error) < 0)
                return -1;
        *ret_json = json;
        return 0;
}

void cli_page_tell_next(json_t *answer, const char *what)
{
        const char *next = json_string_value(json_object_get(answer, "next"));

        /* The engine's token is an id: printed as it came only when it is plain text. */
        if (next && strspn(next, "0123456789abcdefABCDEF-") == strlen(next))
                fprintf(stderr, "more %s follow: --page %s\n", what, next);
}
