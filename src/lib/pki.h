/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The installation's own certificate authority (GnuTLS, no command-line tool).
 *
 * A PKI folder holds:
 *   ca.pem, ca.key (0600)            the CA: signs every other certificate
 *   engine.pem, engine.key (0600)    the engine: HTTPS server, and TLS client of the agents
 *                                    (serverAuth + clientAuth, OU=engine)
 *   hosts/NAME.pem, NAME.key (0600)  one per agent: STOMP and image-transfer server
 *                                    (serverAuth only, OU=host)
 * Keys are ECDSA P-256, certificates are signed with SHA-256, serials are 128
 * random bits. Leaf certificates carry digitalSignature; their subjectAltName
 * holds the name (DNS) and every address (IP or DNS), which is what the engine
 * checks an agent against. Only the engine's is a client certificate: agents
 * accept no other client (fy_pki_check_engine_client).
 */

#include <stdbool.h>
#include <glib.h>

#define FY_PKI_CA_DAYS_DEFAULT 3650
#define FY_PKI_LEAF_DAYS_DEFAULT 825
#define FY_PKI_DAYS_MAX 36500
#define FY_PKI_MAX_ADDRESSES 16
/* A name: 1-64 of [A-Za-z0-9.-]; an address: an IP or a DNS name of up to 253. */
#define FY_PKI_NAME_MAX 64
#define FY_PKI_ADDRESS_MAX 253

/* GError codes in FY_PKI_ERROR. */
#define FY_PKI_ERROR (fy_pki_error_quark())
GQuark fy_pki_error_quark(void);
enum fy_pki_error_code {
        FY_PKI_ERROR_INVALID,   /* bad name, address or days */
        FY_PKI_ERROR_EXISTS,    /* init over an existing CA */
        FY_PKI_ERROR_IO,        /* a file could not be read or written */
        FY_PKI_ERROR_CRYPTO,    /* GnuTLS refused (bad PEM, wrong key) */
        FY_PKI_ERROR_UNTRUSTED, /* fy_pki_verify: chain or name does not verify */
};

/*
 * Creates dir (0700 when new) with a new CA and the engine's certificate for
 * engine_name and addresses (NULL-terminated, may be NULL). Refuses with
 * FY_PKI_ERROR_EXISTS when dir already has a CA. days: validity of the
 * engine's certificate, 0 for the default; the CA gets ca_days (0: default).
 */
int fy_pki_init(const char *dir, const char *engine_name, const char *const *addresses, unsigned ca_days,
                unsigned days, GError **error);

/*
 * Issues (or replaces, for rotation) a leaf certificate signed by dir's CA:
 * for an agent dir/hosts/NAME.pem + .key, or with engine=true dir/engine.pem
 * + .key. Files are replaced atomically. ret_cert/ret_key (may be NULL) get
 * the paths written.
 */
int fy_pki_issue(const char *dir, const char *name, const char *const *addresses, unsigned days, bool engine,
                 char **ret_cert, char **ret_key, GError **error);

/* Paths inside a PKI folder. */
char *fy_pki_ca_path(const char *dir);
char *fy_pki_host_cert_path(const char *dir, const char *name);
char *fy_pki_host_key_path(const char *dir, const char *name);

/*
 * Verifies cert_file against ca_file (the whole chain, validity, purpose
 * serverAuth) and, when identity is not NULL, that the certificate names it
 * (DNS name or IP address). 0, or -EPERM with FY_PKI_ERROR_UNTRUSTED and why.
 */
int fy_pki_verify(const char *ca_file, const char *cert_file, const char *identity, GError **error);

/* The organizational unit of the engine's certificate. */
#define FY_PKI_ENGINE_UNIT "engine"

/*
 * A client certificate (PEM) is the engine's: clientAuth and OU=engine.
 * 0, or -EPERM with FY_PKI_ERROR_UNTRUSTED saying what to do. The chain is
 * checked elsewhere (the TLS handshake, against tls_ca).
 */
int fy_pki_check_engine_client(const char *pem, GError **error);

bool fy_pki_name_valid(const char *name);
bool fy_pki_address_valid(const char *address);
