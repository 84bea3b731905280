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
#include <sys/resource.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "auth.h"
#include "throttle.h"
#include "clock.h"
#include "events.h"
#include "error.h"

#define TOKEN_BYTES 32                 /* 256 random bits */
#define MAX_TOKEN_TEXT 128
/*
 * A token's last use is written at most once in this many seconds (and in a
 * sixteenth of token_idle_timeout, when that is less): a GET then reads the
 * store and writes nothing, which matters to list latency under load (a
 * commit per request, bench/README.md "bench/scale"). The price: an idle
 * token may end up to this much before token_idle_timeout, never after.
 */
#define TOKEN_TOUCH_S 60

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

/* ---- password checks, off the main loop ---- */

#define HASH_THREADS 2                 /* yescrypt is CPU-bound: more threads than cores only queue */
#define HASH_NICE 10                   /* the hashing threads' nice value */
#define HASH_QUEUE_MAX 32              /* checks waiting for a thread; beyond, 503 at once */
#define HASH_QUEUE_TRUSTED 8           /* of those, kept for trusted pairs: a flood from new addresses cannot starve them */
#define THROTTLE_KEYS 10000            /* bounds the table an attacker can grow (LRU beyond) */
#define TOKEN_SWEEP_S 300              /* expired tokens leave the store at least this often */
#define AUTH_DATA "ferry-auth"         /* on a resumed message: its checked Basic user */

struct engine_auth {
        struct throttle *throttle;
        GThreadPool *pool;
        char *dummy_hash;              /* an unknown user costs a hash too */
        unsigned queued;               /* checks pushed to the pool and not back yet */
        guint sweep_source;
        gint stopping;                 /* atomic: the engine is stopping; results are dropped */
        GMutex lock;                   /* guards outside (pool threads add to it) */
        GHashTable *outside;           /* checks waiting on a main-loop source: a delay or a result */
};

struct authed {
        char *user;
        enum engine_role role;
};

static void authed_free(gpointer p)
{
        struct authed *a = p;

        g_free(a->user);
        g_free(a);
}

/* One login attempt: a token request or a request with Basic credentials. */
struct check {
        struct engine *e;
        SoupServerMessage *msg;
        struct throttle_attempt *attempt;
        char *user;                    /* NULL when not a valid name */
        char *address;
        char *password;
        char *hash;                    /* the user's, or the dummy */
        json_t *row;                   /* the user's row, NULL when unknown */
        engine_auth_resume resume;     /* NULL: the token endpoint; else where a Basic request continues */
        engine_auth_hashed hashed;     /* not NULL: make a hash of password for a user change, check nothing */
        void *hashed_data;
        GSource *source;               /* while in outside: the delay or the result's idle source */
        bool trusted;                  /* may use the queue's places kept for trusted pairs */
        bool ok;
};

static void check_free(struct check *c)
{
        g_object_unref(c->msg);
        g_free(c->user);
        g_free(c->address);
        if (c->password) {
                memset(c->password, 0, strlen(c->password));
                g_free(c->password);
        }
        g_free(c->hash);
        json_decref(c->row);
        g_free(c);
}

static void reply_refused(SoupServerMessage *msg, int status, unsigned retry_after, const char *detail)
{
        g_autofree char *retry = g_strdup_printf("%u", MAX(retry_after, 1));

        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", retry);
        engine_rest_reply_fault(msg, status, detail);
}

static void reply_oauth_error(SoupServerMessage *msg, int status, const char *code, const char *detail);
static void reply_401(SoupServerMessage *msg, const char *detail);
static void token_grant(struct engine *e, SoupServerMessage *msg, const char *user, const char *address);

/* Main loop: the check is over; count it, record it, answer or resume the request. */
static void check_finish(struct check *c, int result)
{
        struct engine *e = c->e;
        /* A name no user has may be a password typed in the wrong field: never recorded. */
        const char *shown = c->row ? c->user : "(an unknown user)";
        g_autoptr(json_t) now_row = NULL;
        g_autoptr(GError) error = NULL;
        struct throttle_outcome out;
        enum engine_role role;

        /*
         * The check may have waited up to 30 s: the user may have gone, or
         * changed password or role meanwhile. Only the row as it is now counts.
         */
        if (result == THROTTLE_SUCCESS) {
                now_row = engine_store_user_get(e->db, c->user, &error);
                if (error)
                        g_warning("login of %s: %s", c->user, error->message);
                if (!now_row || g_strcmp0(engine_js(now_row, "hash"), c->hash) != 0) {
                        c->ok = false;
                        result = THROTTLE_FAILURE;
                } else {
                        json_decref(c->row);
                        c->row = json_incref(now_row);
                }
        }

        throttle_end(e->auth->throttle, c->attempt, result, engine_now(), &out);
        if (result == THROTTLE_FAILURE && out.event) {
                if (out.suppressed)
                        engine_event(e, "warning", NULL, "failed login for user %s from %s (and %u more since the "
                                     "last such event)", shown, c->address, out.suppressed);
                else
                        engine_event(e, "warning", NULL, "failed login for user %s from %s", shown, c->address);
        }
        if (result == THROTTLE_FAILURE && out.first_delay)
                g_warning("repeated failed logins for user %s or from %s: the next attempt waits %u s",
                          shown, c->address, out.next_delay_s);
        /* Unpaused first: a handler that pauses the message again keeps it paused. */
        soup_server_message_unpause(c->msg);
        if (result == THROTTLE_ABORTED) {
                reply_refused(c->msg, 503, 1, "too many password checks are waiting; retry in a moment");
        } else if (!c->resume) {
                if (c->ok)
                        token_grant(e, c->msg, c->user, c->address);
                else
                        reply_oauth_error(c->msg, 401, "invalid_grant", "wrong user name or password");
        } else if (!c->ok) {
                reply_401(c->msg, "wrong user name or password");
        } else if (engine_role_from_name(engine_js(c->row, "role"), &role) < 0) {
                engine_rest_reply_fault(c->msg, 500, "the user's role is unknown");
        } else {
                struct authed *a = g_new0(struct authed, 1);

                a->user = g_strdup(c->user);
                a->role = role;
                g_object_set_data_full(G_OBJECT(c->msg), AUTH_DATA, a, authed_free);
                c->resume(e, c->msg);
        }
        check_free(c);
}

/* The check is no longer waiting on c->source (main loop or stop). */
static void outside_remove(struct engine_auth *a, struct check *c)
{
        g_mutex_lock(&a->lock);
        g_hash_table_remove(a->outside, c);
        g_mutex_unlock(&a->lock);
        g_clear_pointer(&c->source, g_source_unref);
}

/* c waits for source on the main context: the stop can find and drop it. */
static void outside_attach(struct engine_auth *a, struct check *c, GSource *source, GSourceFunc fn)
{
        g_source_set_callback(source, fn, c, NULL);
        g_mutex_lock(&a->lock);
        c->source = source;
        g_hash_table_add(a->outside, c);
        g_source_attach(source, NULL);
        g_mutex_unlock(&a->lock);
}

/* The engine stops: the check ends unanswered (its message goes with the server). */
static void check_drop(struct engine *e, struct check *c)
{
        if (c->hashed)
                c->hashed(e, NULL, NULL, c->hashed_data);
        else if (c->attempt)
                throttle_end(e->auth->throttle, c->attempt, THROTTLE_ABORTED, engine_now(), NULL);
        check_free(c);
}

static gboolean on_checked(gpointer data)
{
        struct check *c = data;

        outside_remove(c->e->auth, c);
        c->e->auth->queued--;
        if (g_atomic_int_get(&c->e->auth->stopping)) {
                check_drop(c->e, c);
        } else if (c->hashed) {
                soup_server_message_unpause(c->msg);
                c->hashed(c->e, c->msg, c->hash, c->hashed_data);
                check_free(c);
        } else {
                check_finish(c, c->ok ? THROTTLE_SUCCESS : THROTTLE_FAILURE);
        }
        return G_SOURCE_REMOVE;
}

/* A pool thread: the yescrypt itself, then back to the main loop. */
static void check_run(gpointer data, gpointer pool_data)
{
        static __thread bool niced;
        struct check *c = data;

        /*
         * Below the main loop's priority: a flood of logins competes with
         * itself for the CPU, not with the API (on Linux, nice is per thread).
         */
        if (!niced) {
                niced = true;
                if (setpriority(PRIO_PROCESS, (id_t) gettid(), HASH_NICE) < 0)
                        g_debug("cannot lower the priority of a password thread: %s", g_strerror(errno));
        }

        /* Stopping: the queue drains without hashing (the stop waits for it). */
        if (g_atomic_int_get(&c->e->auth->stopping))
                ;
        else if (c->hashed)
                c->hash = engine_auth_hash(c->password, NULL);
        else
                c->ok = password_matches(c->hash, c->password) && c->row;
        memset(c->password, 0, strlen(c->password));
        /*
         * Always through an idle source of the main context, never inline:
         * g_main_context_invoke runs on_checked in this thread when the loop
         * has stopped, racing the engine's shutdown.
         */
        outside_attach(c->e->auth, c, g_idle_source_new(), on_checked);
}

/* Room in the pool's queue for a check: the last HASH_QUEUE_TRUSTED places only for trusted pairs. */
static bool queue_full(struct engine_auth *a, bool trusted)
{
        return a->queued >= HASH_QUEUE_MAX + HASH_THREADS - (trusted ? 0 : HASH_QUEUE_TRUSTED);
}

static void check_push(struct check *c)
{
        struct engine_auth *a = c->e->auth;

        if (g_atomic_int_get(&a->stopping)) {
                check_drop(c->e, c);
                return;
        }
        if (queue_full(a, c->trusted)) {
                check_finish(c, THROTTLE_ABORTED);
                return;
        }
        a->queued++;
        g_thread_pool_push(a->pool, c, NULL);
}

static gboolean on_delay_over(gpointer data)
{
        struct check *c = data;

        outside_remove(c->e->auth, c);
        check_push(c);
        return G_SOURCE_REMOVE;
}

static char *remote_address(SoupServerMessage *msg)
{
        const char *host = soup_server_message_get_remote_host(msg);

        return g_strdup(host ? host : "unknown");
}

/*
 * Starts checking user and password for msg (paused until the answer):
 * throttled per pair, address and user (throttle.h), hashed in the pool.
 * resume NULL: the token endpoint, answered here; else called with the
 * user attached once the password is right. Answers 429, 503 or 500 itself.
 */
static void check_start(struct engine *e, SoupServerMessage *msg, const char *user, const char *password,
                        engine_auth_resume resume)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *address = remote_address(msg);
        bool valid = engine_user_name_valid(user);
        struct throttle_attempt *attempt;
        struct check *c;
        unsigned delay;
        bool trusted = valid && throttle_trusted(e->auth->throttle, user, address, engine_now());

        if (queue_full(e->auth, trusted)) {
                reply_refused(msg, 503, 1, "too many password checks are waiting; retry in a moment");
                return;
        }
        if (throttle_begin(e->auth->throttle, valid ? user : NULL, address, engine_now(), &attempt, &delay) < 0) {
                reply_refused(msg, 429, delay, "too many login attempts in flight from this address; "
                                               "retry later");
                return;
        }
        c = g_new0(struct check, 1);
        c->e = e;
        c->msg = g_object_ref(msg);
        c->attempt = attempt;
        c->trusted = trusted;
        c->user = valid ? g_strdup(user) : NULL;
        c->address = g_steal_pointer(&address);
        c->password = g_strdup(password);
        c->resume = resume;
        if (valid)
                c->row = engine_store_user_get(e->db, user, &error);
        if (error) {
                g_warning("login of %s: %s", user, error->message);
                throttle_end(e->auth->throttle, c->attempt, THROTTLE_ABORTED, engine_now(), NULL);
                engine_rest_reply_fault(msg, 500, "cannot check the password");
                c->attempt = NULL;
                check_free(c);
                return;
        }
        c->hash = g_strdup(c->row ? engine_js(c->row, "hash") : e->auth->dummy_hash);
        soup_server_message_pause(msg);
        if (delay)      /* exact: _seconds may fire early */
                outside_attach(e->auth, c, g_timeout_source_new(delay * 1000), on_delay_over);
        else
                check_push(c);
}

void engine_auth_hash_async(struct engine *e, SoupServerMessage *msg, const char *password, engine_auth_hashed done,
                            void *data)
{
        struct check *c;

        /* An admin's change, already authenticated: it may use every place. */
        if (queue_full(e->auth, true)) {
                reply_refused(msg, 503, 1, "too many password hashes are waiting; retry in a moment");
                done(e, NULL, NULL, data);
                return;
        }
        c = g_new0(struct check, 1);
        c->e = e;
        c->msg = g_object_ref(msg);
        c->password = g_strdup(password);
        c->hashed = done;
        c->hashed_data = data;
        soup_server_message_pause(msg);
        e->auth->queued++;
        g_thread_pool_push(e->auth->pool, c, NULL);
}

static gboolean on_token_sweep(gpointer data)
{
        struct engine *e = data;
        g_autoptr(GError) error = NULL;
        gint64 now = engine_now();

        if (engine_store_tokens_expire(e->db, now - (gint64) e->config.token_idle_timeout,
                                       now - (gint64) e->config.token_lifetime, &error) < 0)
                g_warning("cannot drop the expired tokens: %s", error->message);
        return G_SOURCE_CONTINUE;
}

void engine_auth_stop(struct engine *e)
{
        struct engine_auth *a = e->auth;
        g_autoptr(GPtrArray) left = g_ptr_array_new();
        GHashTableIter it;
        gpointer c;

        if (!a || g_atomic_int_get(&a->stopping))
                return;
        g_atomic_int_set(&a->stopping, 1);
        /* Waits for the threads: none touches the engine after this. Queued checks drain without hashing. */
        if (a->pool)
                g_thread_pool_free(g_steal_pointer(&a->pool), FALSE, TRUE);
        /* The loop has stopped: checks waiting on a delay or with a result are dropped, not answered. */
        g_mutex_lock(&a->lock);
        g_hash_table_iter_init(&it, a->outside);
        while (g_hash_table_iter_next(&it, &c, NULL))
                g_ptr_array_add(left, c);
        g_hash_table_remove_all(a->outside);
        g_mutex_unlock(&a->lock);
        for (guint i = 0; i < left->len; i++) {
                struct check *k = left->pdata[i];

                g_source_destroy(k->source);
                g_clear_pointer(&k->source, g_source_unref);
                check_drop(e, k);
        }
}

void engine_auth_free(struct engine *e)
{
        struct engine_auth *a = e->auth;

        if (!a)
                return;
        engine_auth_stop(e);
        g_hash_table_unref(a->outside);
        g_mutex_clear(&a->lock);
        if (a->sweep_source)
                g_source_remove(a->sweep_source);
        throttle_free(a->throttle);
        g_free(a->dummy_hash);
        g_free(a);
        e->auth = NULL;
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

/* The password was right: a new token for user. */
static void token_grant(struct engine *e, SoupServerMessage *msg, const char *user, const char *address)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) out = NULL;
        g_autofree char *token = NULL;
        g_autofree char *hash = NULL;
        unsigned ended;

        token = token_new(&error);
        hash = token ? token_hash(token) : NULL;
        if (!token || engine_store_token_insert(e->db, hash, user, engine_now(), &ended, &error) < 0) {
                engine_rest_reply_error(msg, error);
                return;
        }
        e->acting_user = user;
        engine_event(e, "normal", NULL, "user %s logged in from %s", user, address);
        /* Said, not silent: a session whose token ended this way would otherwise not know why. */
        if (ended)
                engine_event(e, "normal", NULL, "%u oldest token(s) of user %s ended: more than %d tokens",
                             ended, user, ENGINE_STORE_TOKENS_PER_USER);
        e->acting_user = NULL;
        out = json_pack("{s:s, s:s, s:I, s:s}", "access_token", token, "token_type", "bearer", "expires_in",
                        (json_int_t) MIN(e->config.token_idle_timeout, e->config.token_lifetime),
                        "scope", "ovirt-app-api");
        engine_rest_reply_json(msg, 200, out);
        memset(token, 0, strlen(token));
}

/* OAuth's scope is a space-separated list: want must be one of its entries, exactly. */
static bool scope_has(const char *scope, const char *want)
{
        g_auto(GStrv) parts = g_strsplit(scope, " ", -1);

        return g_strv_contains((const char *const *) parts, want);
}

static void token_request(struct engine *e, SoupServerMessage *msg)
{
        g_autoptr(GHashTable) form = form_body(e, msg);
        const char *grant, *user, *scope;
        char *password;

        if (!form)
                return;
        grant = g_hash_table_lookup(form, "grant_type");
        user = g_hash_table_lookup(form, "username");
        password = g_hash_table_lookup(form, "password");
        scope = g_hash_table_lookup(form, "scope");
        if (g_strcmp0(grant, "password") != 0) {
                reply_oauth_error(msg, 400, "unsupported_grant_type", "grant_type must be password");
                return;
        }
        if (!user || !password) {
                reply_oauth_error(msg, 400, "invalid_request", "give username and password");
                return;
        }
        if (scope && !scope_has(scope, "ovirt-app-api")) {
                reply_oauth_error(msg, 400, "invalid_scope", "scope must be ovirt-app-api");
                return;
        }
        check_start(e, msg, user, password, NULL);
        memset(password, 0, strlen(password));
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
        if (now - engine_ji(row, "last_used") > MIN((gint64) TOKEN_TOUCH_S, (gint64) e->config.token_idle_timeout / 16) &&
            engine_store_token_touch(e->db, hash, now, &error) < 0)
                g_warning("cannot record a token's use: %s", error->message);
        if (engine_role_from_name(engine_js(row, "role"), ret_role) < 0) {
                engine_rest_reply_fault(msg, 500, "the user's role is unknown");
                return NULL;
        }
        return g_strdup(engine_js(row, "user_name"));
}

/*
 * HTTP Basic: the password is checked in the pool like a token request's,
 * the request paused meanwhile; resume runs it again once it is right.
 */
static void basic_start(struct engine *e, SoupServerMessage *msg, const char *b64, engine_auth_resume resume)
{
        g_autofree guchar *raw = NULL;
        g_autofree char *text = NULL;
        gsize len = 0;
        char *colon;

        if (strlen(b64) <= 4 * (ENGINE_USER_NAME_MAX + ENGINE_PASSWORD_MAX + 1) / 3 + 4)
                raw = g_base64_decode(b64, &len);
        if (!raw || memchr(raw, '\0', len) || !(text = g_strndup((const char *) raw, len)) ||
            !(colon = strchr(text, ':'))) {
                reply_401(msg, "malformed Basic credentials");
        } else {
                *colon = '\0';
                check_start(e, msg, text, colon + 1, resume);
                memset(colon + 1, 0, strlen(colon + 1));
        }
        if (raw)
                memset(raw, 0, len);
}

int engine_auth_request(struct engine *e, SoupServerMessage *msg, enum engine_role role, engine_auth_resume resume,
                        char **ret_user)
{
        const char *h = soup_message_headers_get_one(soup_server_message_get_request_headers(msg), "Authorization");
        struct authed *checked = g_object_get_data(G_OBJECT(msg), AUTH_DATA);
        enum engine_role have = ENGINE_ROLE_VIEWER;
        g_autofree char *user = NULL;

        *ret_user = NULL;
        if (checked) {
                user = g_strdup(checked->user);
                have = checked->role;
        } else if (!h) {
                reply_401(msg, "log in first: 'ferry login', or send Authorization: Bearer TOKEN from "
                               "POST /sso/oauth/token, or HTTP Basic");
                return -EACCES;
        } else if (g_ascii_strncasecmp(h, "Bearer ", 7) == 0) {
                user = bearer_user(e, msg, h + 7, &have);
        } else if (g_ascii_strncasecmp(h, "Basic ", 6) == 0) {
                basic_start(e, msg, h + 6, resume);
                return -EINPROGRESS;
        } else {
                reply_401(msg, "unsupported Authorization scheme; use Bearer or Basic");
        }
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

char *engine_auth_credential(SoupServerMessage *msg)
{
        const char *h = soup_message_headers_get_one(soup_server_message_get_request_headers(msg), "Authorization");

        if (!h || g_ascii_strncasecmp(h, "Bearer ", 7) != 0 || strlen(h + 7) > MAX_TOKEN_TEXT)
                return NULL;
        return token_hash(h + 7);
}

bool engine_auth_still_valid(struct engine *e, const char *credential, const char *user)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(json_t) row = NULL;
        gint64 now = engine_now();

        if (!credential) {
                row = engine_store_user_get(e->db, user, &error);
                /* A database error is no proof the user went: keep the stream. */
                return row || error;
        }
        row = engine_store_token_get(e->db, credential, &error);
        if (!row)
                return error != NULL;
        return now - engine_ji(row, "last_used") < (gint64) e->config.token_idle_timeout &&
               now - engine_ji(row, "created") < (gint64) e->config.token_lifetime;
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

        if (!e->auth) {
                e->auth = g_new0(struct engine_auth, 1);
                e->auth->throttle = throttle_new(THROTTLE_KEYS);
                g_mutex_init(&e->auth->lock);
                e->auth->outside = g_hash_table_new(NULL, NULL);
                /* Exclusive: its threads run at a lower priority and must not serve other pools. */
                e->auth->pool = g_thread_pool_new(check_run, NULL, HASH_THREADS, TRUE, error);
                if (!e->auth->pool)
                        return -EIO;
                e->auth->dummy_hash = engine_auth_hash("not a password", error);
                if (!e->auth->dummy_hash)
                        return -EIO;
                /* Every 5 minutes, or the idle timeout when shorter (tests set it to seconds). */
                e->auth->sweep_source = g_timeout_add_seconds(CLAMP(e->config.token_idle_timeout, 1, TOKEN_SWEEP_S),
                                                              on_token_sweep, e);
                on_token_sweep(e);
        }
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
