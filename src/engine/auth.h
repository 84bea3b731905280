/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Users, passwords, tokens and roles of the REST API (docs/rest-api.md,
 * "Authentication"). Passwords are hashed with libxcrypt's yescrypt;
 * tokens are 256 random bits from GnuTLS's generator, kept in the store
 * only as their SHA-256.
 */
#include "http.h"

#define ENGINE_USER_NAME_MAX 64
#define ENGINE_PASSWORD_MIN 8
#define ENGINE_PASSWORD_MAX 1024

/*
 * Starts the password-hashing pool and the expired-token sweep; creates the
 * configured first admin (create_admin, admin_password_file) unless that user exists.
 */
int engine_auth_init(struct engine *e, GError **error);
/* Serves POST /sso/oauth/token and /sso/oauth/revoke. */
void engine_auth_sso(struct engine *e, SoupServerMessage *msg, const char *path);
/* Where a request paused for a Basic password check continues: runs it again from the start. */
typedef void (*engine_auth_resume)(struct engine *e, SoupServerMessage *msg);
/*
 * Who sends msg (Authorization: Bearer or Basic), allowed role or more:
 * 0 and the user's name in *ret_user; -EACCES after answering 401, 403,
 * 429 or 503 itself; -EINPROGRESS: msg is paused while a Basic password is
 * checked off the main loop, and resume(e, msg) runs once it is right
 * (this call then answers 0 for it) — or it is answered, when it is not.
 */
int engine_auth_request(struct engine *e, SoupServerMessage *msg, enum engine_role role, engine_auth_resume resume,
                        char **ret_user);
/*
 * For a request that lasts (the event stream): what to recheck later, from
 * msg's Authorization header — the bearer token's hash, or NULL for Basic.
 */
char *engine_auth_credential(SoupServerMessage *msg);
/*
 * Whether credential (from engine_auth_credential) of user is still good:
 * the token neither revoked nor expired, the user not removed. Does not
 * count as a use of the token (a stream is no activity of its user).
 */
bool engine_auth_still_valid(struct engine *e, const char *credential, const char *user);
/* Ends the hashing pool, the token sweep and the login throttle. */
/*
 * The engine stops (its loop has returned): waits for the password threads
 * and drops every check still pending, unanswered. Before the REST server
 * and the store close; engine_auth_free calls it too.
 */
void engine_auth_stop(struct engine *e);
void engine_auth_free(struct engine *e);
/* A role from its name; -EINVAL for an unknown one. */
int engine_role_from_name(const char *name, enum engine_role *ret);
bool engine_user_name_valid(const char *name);
/* yescrypt hash of password, or NULL with *error set. */
char *engine_auth_hash(const char *password, GError **error);
/*
 * Hashes password off the main loop for a user change, msg paused meanwhile:
 * done(e, msg, hash, data) on the main loop, hash NULL when hashing failed;
 * when the pool is full, answers msg 503 and calls done(e, NULL, NULL, data)
 * at once (only to free data).
 */
typedef void (*engine_auth_hashed)(struct engine *e, SoupServerMessage *msg, const char *hash, void *data);
void engine_auth_hash_async(struct engine *e, SoupServerMessage *msg, const char *password, engine_auth_hashed done,
                            void *data);
/* A password's length within the limits; else an error naming them. */
int engine_auth_password_valid(const char *password, GError **error);
