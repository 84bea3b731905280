/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * CORS for the image transfer endpoint: a browser page of the engine's
 * origin (the web UI) sends and reads image bytes here directly. Only that
 * one origin (the cors_origin option) is answered; the ticket in the URL
 * stays the credential, so no cookies are involved (no
 * Access-Control-Allow-Credentials).
 */
#include <stdbool.h>

#include <libsoup/soup.h>

/* An origin as the option takes it: "http(s)://host[:port]", nothing after; "" turns CORS off. */
bool agent_xfer_cors_origin_valid(const char *origin);

/*
 * Adds the CORS headers to msg's response when its Origin is allowed. A
 * preflight (OPTIONS with Access-Control-Request-Method) from that origin
 * is answered here (204): returns true, the caller does nothing more.
 */
bool agent_xfer_cors(const char *allowed, SoupServerMessage *msg);
