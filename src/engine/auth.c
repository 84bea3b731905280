/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Authentication and roles of the REST API. A request carries either a
 * token from POST /sso/oauth/token (oVirt's SSO shape) as "Authorization:
 * Bearer", or a user and password as HTTP Basic (for scripts). Failed
 * logins are counted per user and per address: from the 5th on, the next
 * attempt of either waits a growing delay, so guessing is slow without a
 * lockout anyone could trigger for someone else. No password or token
 * ever reaches a log line or an event.
 */
#include <crypt.h>
#include <errno.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "auth.h"
#include "clock.h"
#include "events.h"
#include "error.h"

#define TOKEN_BYTES 32                 /* 256 random bits */
#define MAX_TOKEN_TEXT 128
#define FAILURES_FREE 5                /* failed logins before attempts are slowed down */
#define FAILURE_DELAY_MAX_S 30
#define FAILURE_FORGET_S 900           /* a key with no failure for this long starts over */
#define MAX_FAILURE_KEYS 10000         /* bounds the table an attacker can grow */

static const char *const role_names[] = { "viewer", "operator", "admin" };

int engine_role_from_name(const char *name, enum engine_role *ret)
{
        for (size_t i = 0; i < G_N_ELEMENTS(role_names); i++)
                if (name && strcmp(name, role_names[i]) == 0) {
                        *ret = (enum engine_role) i;
                        return 0;
                }
        return -EINVAL;
}

bool engine_user_name_valid(const char *name)
{
        size_t n = name ? strlen(name) : 0;

        if (n == 0 || n > ENGINE_USER_NAME_MAX || !g_ascii_isalnum(name[0]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isalnum(name[i]) && !strchr("._-@", name[i]))
                        return false;
        return true;
}

int engine_auth_password_valid(const char *password, GError **error)
{
        size_t n = password ? strlen(password) : 0;

        if (n < ENGINE_PASSWORD_MIN || n > ENGINE_PASSWORD_MAX) {
                g_set_error(error, ENGINE_ERROR, 400, "a password has %d to %d characters", ENGINE_PASSWORD_MIN,
                            ENGINE_PASSWORD_MAX);
                return -EINVAL;
        }
        return 0;
}

char *engine_auth_hash(const char *password, GError **error)
{
        g_autofree struct crypt_data *cd = g_new0(struct crypt_data, 1);
        char salt[CRYPT_GENSALT_OUTPUT_SIZE];
        const char *out;

        /* libxcrypt draws the salt from the kernel's random source itself (rbytes NULL). */
        if (!crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt))) {
                g_set_error(error, ENGINE_ERROR, 500, "cannot make a password salt: %s", g_strerror(errno));
                return NULL;
        }
        out = crypt_r(password, salt, cd);
        if (!out || out[0] == '*') {
                g_set_error(error, ENGINE_ERROR, 500, "cannot hash the password");
                return NULL;
        }
        return g_strdup(out);
}

static bool password_matches(const char *hash, const char *password)
{
        g_autofree struct crypt_data *cd = g_new0(struct crypt_data, 1);
        const char *out = crypt_r(password, hash, cd);
        size_t n = strlen(hash);

        /* Compare every byte: the time does not tell how much of the hash matched. */
        if (!out || strlen(out) != n)
                return false;
        unsigned diff = 0;
        for (size_t i = 0; i < n; i++)
                diff |= (unsigned char) (out[i] ^ hash[i]);
        return diff == 0;
}

static char *token_hash(const char *token)
{
        return g_compute_checksum_for_string(G_CHECKSUM_SHA256, token, -1);
}

/* A new token: 256 bits from GnuTLS's cryptographic generator (GLib's g_random is not one). */
static char *token_new(GError **error)
{
        guint8 raw[TOKEN_BYTES];
        g_autofree char *b64 = NULL;

        if (gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof(raw)) != 0) {
                g_set_error(error, ENGINE_ERROR, 500, "the random generator failed");
                return NULL;
        }
        b64 = g_base64_encode(raw, sizeof(raw));
        memset(raw, 0, sizeof(raw));
        /* URL-safe and without padding: the token travels in forms and headers. */
        g_strdelimit(b64, "+", '-');
        g_strdelimit(b64, "/", '_');
        g_strdelimit(b64, "=", '\0');
        return g_strdup(b64);
}

/* ---- failed logins ---- */

struct failures {
        unsigned count;
        gint64 last;                   /* engine_now() of the last failure */
};

static GHashTable *failure_table(struct engine *e)
{
        if (!e->login_failures)
                e->login_failures = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return e->login_failures;
}

static struct failures *failures_of(struct engine *e, const char *kind, const char *key)
{
        g_autofree char *k = g_strconcat(kind, ":", key, NULL);
        struct failures *f = g_hash_table_lookup(failure_table(e), k);

        if (f && engine_now() - f->last > FAILURE_FORGET_S)
                f->count = 0;
        return f;
}

/* Seconds the next attempt for user (may be NULL) from address waits: 0 below 5 failures, then 1, 2, 4 ... 30. */
static unsigned login_delay(struct engine *e, const char *user, const char *address)
{
        struct failures *fu = user ? failures_of(e, "u", user) : NULL;
        struct failures *fa = failures_of(e, "a", address);
        unsigned n = MAX(fu ? fu->count : 0, fa ? fa->count : 0);

        if (n < FAILURES_FREE)
                return 0;
        return n - FAILURES_FREE >= 5 ? FAILURE_DELAY_MAX_S : MIN(1u << (n - FAILURES_FREE), FAILURE_DELAY_MAX_S);
}

static void failure_count(struct engine *e, const char *kind, const char *key)
{
        GHashTable *t = failure_table(e);
        g_autofree char *k = g_strconcat(kind, ":", key, NULL);
        struct failures *f = failures_of(e, kind, key);

        if (!f) {
                if (g_hash_table_size(t) >= MAX_FAILURE_KEYS)
                        g_hash_table_remove_all(t);
                f = g_new0(struct failures, 1);
                g_hash_table_insert(t, g_steal_pointer(&k), f);
        }
        f->count++;
        f->last = engine_now();
}

static void failure_clear(struct engine *e, const char *kind, const char *key)
{
        g_autofree char *k = g_strconcat(kind, ":", key, NULL);

        g_hash_table_remove(failure_table(e), k);
}

static char *remote_address(SoupServerMessage *msg)
{
        const char *host = soup_server_message_get_remote_host(msg);

        return g_strdup(host ? host : "unknown");
}

/*
 * Checks user and password; records the outcome (an event, the failure
 * counters). Returns the user's row, or NULL with the HTTP status to answer.
 */
static json_t *login(struct engine *e, const char *user, const char *password, const char *address, int *ret_status)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        bool valid = engine_user_name_valid(user);
        const char *shown = valid ? user : "(an invalid name)";

        *ret_status = 401;
        if (valid)
                row = engine_store_user_get(e->db, user, &error);
        if (error) {
                g_warning("login of %s: %s", shown, error->message);
                *ret_status = 500;
                return NULL;
        }
        if (!row || !password || !password_matches(engine_js(row, "hash"), password)) {
                static char *dummy;
                unsigned delay;

                /* An unknown user costs a hash too: the time does not tell which names exist. */
                if (!row && password && (dummy || (dummy = engine_auth_hash("not a password", NULL))))
                        password_matches(dummy, password);

                if (valid)
                        failure_count(e, "u", user);
                failure_count(e, "a", address);
                engine_event(e, "warning", NULL, "failed login for user %s from %s", shown, address);
                delay = login_delay(e, valid ? user : NULL, address);
                if (delay)
                        g_warning("repeated failed logins for user %s or from %s: the next attempt waits %u s",
                                  shown, address, delay);
                return NULL;
        }
        failure_clear(e, "u", user);
        failure_clear(e, "a", address);
        return g_steal_pointer(&row);
}

/* ---- token endpoint ---- */

static void reply_oauth_error(SoupServerMessage *msg, int status, const char *code, const char *detail)
{
        g_autoptr(json_t) body = json_pack("{s:s, s:s, s:{s:s, s:s}}", "error", code, "error_description", detail,
                                           "fault", "reason", status == 401 ? "Unauthorized" : "Bad request",
                                           "detail", detail);

        engine_rest_reply_json(msg, status, body);
}

static GHashTable *form_body(struct engine *e, SoupServerMessage *msg)
{
        SoupMessageBody *req = soup_server_message_get_request_body(msg);
        g_autoptr(GBytes) bytes = soup_message_body_flatten(req);
        const char *ctype = soup_message_headers_get_content_type(soup_server_message_get_request_headers(msg), NULL);
        gsize len;
        const char *data = g_bytes_get_data(bytes, &len);
        g_autofree char *text = NULL;

        if (!ctype || g_ascii_strcasecmp(ctype, "application/x-www-form-urlencoded") != 0) {
                reply_oauth_error(msg, 400, "invalid_request", "send the body as application/x-www-form-urlencoded");
                return NULL;
        }
        if (len > e->config.max_body || (data && memchr(data, '\0', len))) {
                reply_oauth_error(msg, 400, "invalid_request", "malformed form body");
                return NULL;
        }
        text = g_strndup(data ? data : "", len);
        return soup_form_decode(text);
}

struct pending_login {
        struct engine *e;
        SoupServerMessage *msg;
        GHashTable *form;
        char *address;
};

static void token_grant(struct engine *e, SoupServerMessage *msg, GHashTable *form, const char *address)
{
        const char *user = g_hash_table_lookup(form, "username");
        const char *password = g_hash_table_lookup(form, "password");
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        g_autoptr(json_t) out = NULL;
        g_autofree char *token = NULL;
        g_autofree char *hash = NULL;
        int status;

        row = login(e, user, password, address, &status);
        if (!row) {
                reply_oauth_error(msg, status, "invalid_grant", "wrong user name or password");
                return;
        }
        token = token_new(&error);
        hash = token ? token_hash(token) : NULL;
        if (!token || engine_store_token_insert(e->db, hash, user, engine_now(), &error) < 0) {
                engine_rest_reply_error(msg, error);
                return;
        }
        e->acting_user = user;
        engine_event(e, "normal", NULL, "user %s logged in from %s", user, address);
        e->acting_user = NULL;
        out = json_pack("{s:s, s:s, s:I, s:s}", "access_token", token, "token_type", "bearer", "expires_in",
                        (json_int_t) MIN(e->config.token_idle_timeout, e->config.token_lifetime),
                        "scope", "ovirt-app-api");
        engine_rest_reply_json(msg, 200, out);
        memset(token, 0, strlen(token));
}

static void pending_free(struct pending_login *p)
{
        g_object_unref(p->msg);
        g_hash_table_unref(p->form);
        g_free(p->address);
        g_free(p);
}

static gboolean on_delayed_login(gpointer data)
{
        struct pending_login *p = data;

        token_grant(p->e, p->msg, p->form, p->address);
        soup_server_message_unpause(p->msg);
        pending_free(p);
        return G_SOURCE_REMOVE;
}

static void token_request(struct engine *e, SoupServerMessage *msg)
{
        g_autoptr(GHashTable) form = form_body(e, msg);
        g_autofree char *address = remote_address(msg);
        const char *grant, *user, *scope;
        unsigned delay;

        if (!form)
                return;
        grant = g_hash_table_lookup(form, "grant_type");
        user = g_hash_table_lookup(form, "username");
        scope = g_hash_table_lookup(form, "scope");
        if (g_strcmp0(grant, "password") != 0) {
                reply_oauth_error(msg, 400, "unsupported_grant_type", "grant_type must be password");
                return;
        }
        if (!user || !g_hash_table_lookup(form, "password")) {
                reply_oauth_error(msg, 400, "invalid_request", "give username and password");
                return;
        }
        if (scope && !strstr(scope, "ovirt-app-api")) {
                reply_oauth_error(msg, 400, "invalid_scope", "scope must be ovirt-app-api");
                return;
        }
        delay = login_delay(e, engine_user_name_valid(user) ? user : NULL, address);
        if (delay) {
                struct pending_login *p = g_new0(struct pending_login, 1);

                /* Slowed down, not refused: the answer comes after the delay, whatever it is. */
                p->e = e;
                p->msg = g_object_ref(msg);
                p->form = g_steal_pointer(&form);
                p->address = g_steal_pointer(&address);
                soup_server_message_pause(p->msg);
                g_timeout_add(delay * 1000, on_delayed_login, p);   /* exact: _seconds may fire early */
                return;
        }
        token_grant(e, msg, form, address);
}

static void revoke_request(struct engine *e, SoupServerMessage *msg)
{
        g_autoptr(GHashTable) form = form_body(e, msg);
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        g_autofree char *hash = NULL;
        const char *token;

        if (!form)
                return;
        token = g_hash_table_lookup(form, "token");
        if (!token || strlen(token) > MAX_TOKEN_TEXT) {
                reply_oauth_error(msg, 400, "invalid_request", "give the token to revoke as token=...");
                return;
        }
        hash = token_hash(token);
        row = engine_store_token_get(e->db, hash, &error);
        if (error) {
                engine_rest_reply_error(msg, error);
                return;
        }
        /* RFC 7009: an unknown token is not an error; the answer says nothing about which tokens exist. */
        if (row) {
                if (engine_store_token_delete(e->db, hash, &error) < 0 && error) {
                        engine_rest_reply_error(msg, error);
                        return;
                }
                e->acting_user = engine_js(row, "user_name");
                engine_event(e, "normal", NULL, "a token of user %s was revoked", engine_js(row, "user_name"));
                e->acting_user = NULL;
        }
        soup_server_message_set_status(msg, 200, NULL);
        soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_STATIC, "{}", 2);
}

void engine_auth_sso(struct engine *e, SoupServerMessage *msg, const char *path)
{
        static const struct {
                const char *path;
                void (*fn)(struct engine *e, SoupServerMessage *msg);
        } endpoints[] = {
                { "/sso/oauth/token", token_request },
                { "/sso/oauth/revoke", revoke_request },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(endpoints); i++) {
                if (strcmp(path, endpoints[i].path) != 0)
                        continue;
                if (!engine_rest_method_is(msg, "POST")) {
                        engine_rest_reply_fault(msg, 405, "use POST");
                        return;
                }
                endpoints[i].fn(e, msg);
                return;
        }
        engine_rest_reply_fault(msg, 404, "no such SSO endpoint; the token endpoint is /sso/oauth/token");
}

/* ---- every /api request ---- */

static void reply_401(SoupServerMessage *msg, const char *detail)
{
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "WWW-Authenticate",
                                     "Bearer realm=\"ferry\", Basic realm=\"ferry\"");
        engine_rest_reply_fault(msg, 401, detail);
}

/* The user of a bearer token, or NULL after answering 401. */
static char *bearer_user(struct engine *e, SoupServerMessage *msg, const char *token, enum engine_role *ret_role)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        g_autofree char *hash = NULL;
        gint64 now = engine_now();

        if (strlen(token) > MAX_TOKEN_TEXT) {
                reply_401(msg, "invalid token; log in again ('ferry login')");
                return NULL;
        }
        hash = token_hash(token);
        row = engine_store_token_get(e->db, hash, &error);
        if (!row) {
                if (error)
                        engine_rest_reply_error(msg, error);
                else
                        reply_401(msg, "unknown or revoked token; log in again ('ferry login')");
                return NULL;
        }
        if (now - engine_ji(row, "last_used") >= (gint64) e->config.token_idle_timeout ||
            now - engine_ji(row, "created") >= (gint64) e->config.token_lifetime) {
                if (engine_store_token_delete(e->db, hash, &error) < 0 && error)
                        g_warning("cannot drop an expired token: %s", error->message);
                reply_401(msg, "the token expired; log in again ('ferry login')");
                return NULL;
        }
        if (now != engine_ji(row, "last_used") && engine_store_token_touch(e->db, hash, now, &error) < 0)
                g_warning("cannot record a token's use: %s", error->message);
        if (engine_role_from_name(engine_js(row, "role"), ret_role) < 0) {
                engine_rest_reply_fault(msg, 500, "the user's role is unknown");
                return NULL;
        }
        return g_strdup(engine_js(row, "user_name"));
}

/* The user of HTTP Basic credentials, or NULL after answering 401 or 429. */
static char *basic_user(struct engine *e, SoupServerMessage *msg, const char *b64, enum engine_role *ret_role)
{
        g_autofree char *address = remote_address(msg);
        g_autofree guchar *raw = NULL;
        g_autofree char *text = NULL;
        g_autoptr(json_t) row = NULL;
        gsize len = 0;
        char *colon;
        unsigned delay;
        int status;

        if (strlen(b64) <= 4 * (ENGINE_USER_NAME_MAX + ENGINE_PASSWORD_MAX + 1) / 3 + 4)
                raw = g_base64_decode(b64, &len);
        if (!raw || memchr(raw, '\0', len) || !(text = g_strndup((const char *) raw, len)) ||
            !(colon = strchr(text, ':'))) {
                reply_401(msg, "malformed Basic credentials");
                return NULL;
        }
        *colon = '\0';
        delay = login_delay(e, engine_user_name_valid(text) ? text : NULL, address);
        if (delay) {
                g_autofree char *retry = g_strdup_printf("%u", delay);

                /* Basic runs inside the request: refuse for the delay rather than hold the request. */
                soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", retry);
                engine_rest_reply_fault(msg, 429, "too many failed logins for this user or address; retry later");
                memset(colon + 1, 0, strlen(colon + 1));
                return NULL;
        }
        row = login(e, text, colon + 1, address, &status);
        memset(colon + 1, 0, strlen(colon + 1));
        if (!row) {
                if (status == 401)
                        reply_401(msg, "wrong user name or password");
                else
                        engine_rest_reply_fault(msg, status, "cannot check the password");
                return NULL;
        }
        if (engine_role_from_name(engine_js(row, "role"), ret_role) < 0) {
                engine_rest_reply_fault(msg, 500, "the user's role is unknown");
                return NULL;
        }
        return g_strdup(text);
}

int engine_auth_request(struct engine *e, SoupServerMessage *msg, enum engine_role role, char **ret_user)
{
        const char *h = soup_message_headers_get_one(soup_server_message_get_request_headers(msg), "Authorization");
        enum engine_role have = ENGINE_ROLE_VIEWER;
        g_autofree char *user = NULL;

        *ret_user = NULL;
        if (!h) {
                reply_401(msg, "log in first: 'ferry login', or send Authorization: Bearer TOKEN from "
                               "POST /sso/oauth/token, or HTTP Basic");
                return -EACCES;
        }
        if (g_ascii_strncasecmp(h, "Bearer ", 7) == 0)
                user = bearer_user(e, msg, h + 7, &have);
        else if (g_ascii_strncasecmp(h, "Basic ", 6) == 0)
                user = basic_user(e, msg, h + 6, &have);
        else
                reply_401(msg, "unsupported Authorization scheme; use Bearer or Basic");
        if (!user)
                return -EACCES;
        if (have < role) {
                g_autofree char *detail = g_strdup_printf("user %s has the role %s; this needs %s", user,
                                                          engine_role_name(have), engine_role_name(role));

                engine_rest_reply_fault(msg, 403, detail);
                return -EACCES;
        }
        *ret_user = g_steal_pointer(&user);
        return 0;
}

/* ---- the first admin ---- */

int engine_auth_init(struct engine *e, GError **error)
{
        g_autoptr(GError) local = NULL;
        g_autoptr(json_t) row = NULL;
        g_autofree char *password = NULL;
        g_autofree char *hash = NULL;
        const char *name = e->config.create_admin;
        gsize len;

        if (!*name)
                return 0;
        if (!engine_user_name_valid(name) || !*e->config.admin_password_file) {
                g_set_error(error, ENGINE_ERROR, 400, "create_admin needs a valid user name (letters, digits, . _ - @; "
                            "at most %d) and admin_password_file", ENGINE_USER_NAME_MAX);
                return -EINVAL;
        }
        row = engine_store_user_get(e->db, name, &local);
        if (local) {
                g_propagate_error(error, g_steal_pointer(&local));
                return -EIO;
        }
        if (row)
                return 0;
        if (!g_file_get_contents(e->config.admin_password_file, &password, &len, &local)) {
                g_set_error(error, ENGINE_ERROR, 400, "admin_password_file: %s", local->message);
                return -EINVAL;
        }
        if (memchr(password, '\0', len)) {
                g_set_error(error, ENGINE_ERROR, 400, "admin_password_file holds a NUL byte");
                return -EINVAL;
        }
        /* The file's one line; its line end is not part of the password. */
        password[strcspn(password, "\r\n")] = '\0';
        if (engine_auth_password_valid(password, error) < 0)
                return -EINVAL;
        hash = engine_auth_hash(password, error);
        memset(password, 0, strlen(password));
        if (!hash || engine_store_user_insert(e->db, name, hash, "admin", engine_now(), error) < 0)
                return -EIO;
        engine_event(e, "normal", NULL, "user %s created as admin", name);
        return 0;
}
