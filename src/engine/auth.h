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

/* Creates the configured first admin (create_admin, admin_password_file) unless that user exists. */
int engine_auth_init(struct engine *e, GError **error);
/* Serves POST /sso/oauth/token and /sso/oauth/revoke. */
void engine_auth_sso(struct engine *e, SoupServerMessage *msg, const char *path);
/*
 * Who sends msg (Authorization: Bearer or Basic), allowed role or more:
 * 0 and the user's name in *ret_user; otherwise -EACCES after answering
 * 401, 403 or 429 itself.
 */
int engine_auth_request(struct engine *e, SoupServerMessage *msg, enum engine_role role, char **ret_user);
/* A role from its name; -EINVAL for an unknown one. */
int engine_role_from_name(const char *name, enum engine_role *ret);
bool engine_user_name_valid(const char *name);
/* yescrypt hash of password, or NULL with *error set. */
char *engine_auth_hash(const char *password, GError **error);
/* A password's length within the limits; else an error naming them. */
int engine_auth_password_valid(const char *password, GError **error);
