/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include "engine.h"

/*
 * The REST server (resttls.c): HTTPS with tls_cert/tls_key unless insecure,
 * security headers on every response, a JSON fault for what libsoup refuses
 * before routing.
 */
SoupServer *engine_rest_server_new(struct engine *e, GError **error);
