/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The installation's CA on GnuTLS's x509 API: see pki.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "fileio.h"
#include "pki.h"

G_DEFINE_QUARK(ferry-pki-error-quark, fy_pki_error)

#define PKI_PEM_MAX (64 * 1024)
#define PKI_SERIAL_BYTES 16
/* Certificates start a little in the past: hosts' clocks differ by seconds to minutes. */
#define PKI_BACKDATE_S 300

G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_crt_t, gnutls_x509_crt_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_privkey_t, gnutls_x509_privkey_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_privkey_t, gnutls_privkey_deinit, NULL)

static void datum_clear(gnutls_datum_t *d)
{
        gnutls_free(d->data);
        d->data = NULL;
        d->size = 0;
}

static int crypto_fail(GError **error, int gr, const char *what)
{
        g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_CRYPTO, "%s: %s", what, gnutls_strerror(gr));
        return -EINVAL;
}

bool fy_pki_name_valid(const char *name)
{
        size_t len = name ? strlen(name) : 0;

        if (len == 0 || len > FY_PKI_NAME_MAX || name[0] == '.' || name[0] == '-' || name[len - 1] == '.')
                return false;
        for (const char *p = name; *p; p++)
                if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-')
                        return false;
        return true;
}

bool fy_pki_address_valid(const char *address)
{
        g_autoptr(GInetAddress) inet = NULL;
        size_t len = address ? strlen(address) : 0;

        if (len == 0 || len > FY_PKI_ADDRESS_MAX)
                return false;
        inet = g_inet_address_new_from_string(address);
        if (inet)
                return true;
        for (const char *p = address; *p; p++)
                if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-')
                        return false;
        return address[0] != '.' && address[0] != '-';
}

char *fy_pki_ca_path(const char *dir)
{
        return g_build_filename(dir, "ca.pem", NULL);
}

char *fy_pki_host_cert_path(const char *dir, const char *name)
{
        g_autofree char *file = g_strconcat(name, ".pem", NULL);

        return g_build_filename(dir, "hosts", file, NULL);
}

char *fy_pki_host_key_path(const char *dir, const char *name)
{
        g_autofree char *file = g_strconcat(name, ".key", NULL);

        return g_build_filename(dir, "hosts", file, NULL);
}

/* Writes path atomically (temp file + fsync + rename) with mode. */
static int write_file(const char *path, const void *data, size_t len, mode_t mode, GError **error)
{
        g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
        g_autofree char *dir = g_path_get_dirname(path);
        int fd, r = 0, dfd;

        unlink(tmp);
        /* Created with its final mode: a key is never readable by others, not even for a moment. */
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                r = -errno;
        else if (fchmod(fd, mode) < 0)       /* the umask may have taken bits away */
                r = -errno;
        else
                r = fy_pwrite_full(fd, data, len, 0);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (fd >= 0)
                close(fd);
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                unlink(tmp);
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_IO, "cannot write %s: %s", path, g_strerror(-r));
                return r;
        }
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
                fy_fsync_dir(dfd);
                close(dfd);
        }
        return 0;
}

static int read_pem(const char *path, const char *what, gnutls_datum_t *ret, char **ret_text, GError **error)
{
        char *text = NULL;
        size_t len = 0;
        int r;

        r = fy_read_small_file_at(AT_FDCWD, path, PKI_PEM_MAX, &text, &len);
        if (r < 0) {
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_IO, "cannot read the %s %s: %s", what, path,
                            g_strerror(-r));
                return r;
        }
        ret->data = (unsigned char *) text;
        ret->size = (unsigned) len;
        *ret_text = text;
        return 0;
}

static int new_key(gnutls_x509_privkey_t *ret, GError **error)
{
        g_auto(gnutls_x509_privkey_t) key = NULL;
        int gr;

        gr = gnutls_x509_privkey_init(&key);
        if (gr == 0)
                gr = gnutls_x509_privkey_generate2(key, GNUTLS_PK_ECDSA,
                                                   GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0, NULL, 0);
        if (gr < 0)
                return crypto_fail(error, gr, "generating a key");
        *ret = g_steal_pointer(&key);
        return 0;
}

static int add_san(gnutls_x509_crt_t crt, const char *name, GError **error)
{
        g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(name);
        int gr;

        if (inet)
                gr = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS,
                                                          g_inet_address_to_bytes(inet),
                                                          (unsigned) g_inet_address_get_native_size(inet),
                                                          GNUTLS_FSAN_APPEND);
        else
                gr = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, name, (unsigned) strlen(name),
                                                          GNUTLS_FSAN_APPEND);
        if (gr < 0) {
                g_autofree char *what = g_strdup_printf("adding %s to the certificate", name);
                return crypto_fail(error, gr, what);
        }
        return 0;
}

/*
 * A certificate for key named cn. CA: self-signed with keyCertSign. Leaf:
 * signed by ca_crt/ca_key, subjectAltName = sans.
 */
enum pki_role { PKI_ROLE_CA, PKI_ROLE_ENGINE, PKI_ROLE_HOST };

/* The organizational unit naming a leaf's role: an agent accepts only FY_PKI_ENGINE_UNIT as a client. */
static const char *const role_units[] = { [PKI_ROLE_ENGINE] = FY_PKI_ENGINE_UNIT, [PKI_ROLE_HOST] = "host" };

static int make_cert(gnutls_x509_privkey_t key, const char *cn, enum pki_role role, const char *const *sans,
                     unsigned days,
                     gnutls_x509_crt_t ca_crt, gnutls_x509_privkey_t ca_key, gnutls_x509_crt_t *ret,
                     GError **error)
{
        g_auto(gnutls_x509_crt_t) crt = NULL;
        g_auto(gnutls_privkey_t) signer = NULL;
        unsigned char serial[PKI_SERIAL_BYTES], kid[64];
        size_t kid_len = sizeof(kid);
        time_t now = time(NULL);
        bool is_ca = role == PKI_ROLE_CA;
        int gr;

        if ((gr = gnutls_x509_crt_init(&crt)) < 0 || (gr = gnutls_x509_crt_set_version(crt, 3)) < 0)
                return crypto_fail(error, gr, "creating a certificate");
        /* Random, positive, non-zero: unpredictable serials (CA/B forum practice). */
        if ((gr = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial))) < 0)
                return crypto_fail(error, gr, "drawing a serial number");
        serial[0] = (unsigned char) ((serial[0] & 0x7f) | 0x40);
        if ((gr = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial))) < 0 ||
            (gr = gnutls_x509_crt_set_activation_time(crt, now - PKI_BACKDATE_S)) < 0 ||
            (gr = gnutls_x509_crt_set_expiration_time(crt, now + (time_t) days * 86400)) < 0 ||
            (gr = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "Ferry", 5)) < 0 ||
            (gr = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, (unsigned) strlen(cn))) < 0 ||
            (gr = gnutls_x509_crt_set_key(crt, key)) < 0)
                return crypto_fail(error, gr, "filling the certificate");
        if (!is_ca && (gr = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 0,
                                                          role_units[role], (unsigned) strlen(role_units[role]))) < 0)
                return crypto_fail(error, gr, "naming the certificate's role");
        if (is_ca) {
                gr = gnutls_x509_crt_set_basic_constraints(crt, 1, 0);
                if (gr == 0)
                        gr = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN |
                                                                GNUTLS_KEY_DIGITAL_SIGNATURE);
        } else {
                gr = gnutls_x509_crt_set_basic_constraints(crt, 0, -1);
                /* ECDSA signs the handshake; there is no key to encipher. */
                if (gr == 0)
                        gr = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE);
                if (gr == 0)
                        gr = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0);
                /* Only the engine is a client (of the agents): a host's key cannot act as one toward another host. */
                if (gr == 0 && role == PKI_ROLE_ENGINE)
                        gr = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0);
        }
        if (gr < 0)
                return crypto_fail(error, gr, "setting the certificate's usage");
        for (size_t i = 0; sans && sans[i]; i++)
                if (add_san(crt, sans[i], error) < 0)
                        return -EINVAL;
        if ((gr = gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, kid, &kid_len)) < 0 ||
            (gr = gnutls_x509_crt_set_subject_key_id(crt, kid, kid_len)) < 0)
                return crypto_fail(error, gr, "setting the subject key id");
        if (!is_ca) {
                kid_len = sizeof(kid);
                if ((gr = gnutls_x509_crt_get_subject_key_id(ca_crt, kid, &kid_len, NULL)) < 0 ||
                    (gr = gnutls_x509_crt_set_authority_key_id(crt, kid, kid_len)) < 0)
                        return crypto_fail(error, gr, "setting the authority key id");
        }
        if ((gr = gnutls_privkey_init(&signer)) < 0 ||
            (gr = gnutls_privkey_import_x509(signer, is_ca ? key : ca_key, 0)) < 0 ||
            (gr = gnutls_x509_crt_privkey_sign(crt, is_ca ? crt : ca_crt, signer, GNUTLS_DIG_SHA256, 0)) < 0)
                return crypto_fail(error, gr, "signing the certificate");
        *ret = g_steal_pointer(&crt);
        return 0;
}

/* Writes cert (0644) and key (0600, PKCS#8 PEM): the key first, so a cert never points at a missing key. */
static int save_pair(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const char *cert_path, const char *key_path,
                     GError **error)
{
        gnutls_datum_t c = { 0 }, k = { 0 };
        int gr, r;

        gr = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &k);
        if (gr < 0)
                return crypto_fail(error, gr, "encoding the key");
        gr = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &c);
        if (gr < 0) {
                gnutls_memset(k.data, 0, k.size);
                datum_clear(&k);
                return crypto_fail(error, gr, "encoding the certificate");
        }
        r = write_file(key_path, k.data, k.size, 0600, error);
        if (r == 0)
                r = write_file(cert_path, c.data, c.size, 0644, error);
        gnutls_memset(k.data, 0, k.size);
        datum_clear(&k);
        datum_clear(&c);
        return r;
}

static int check_days(unsigned days, GError **error)
{
        if (days > FY_PKI_DAYS_MAX) {
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_INVALID, "validity must be 1 to %u days, got %u",
                            FY_PKI_DAYS_MAX, days);
                return -EINVAL;
        }
        return 0;
}

/* name, then each address not equal to it; validated, deduplicated. */
static int collect_sans(const char *name, const char *const *addresses, GPtrArray **ret, GError **error)
{
        g_autoptr(GPtrArray) sans = g_ptr_array_new();
        size_t n = addresses ? g_strv_length((char **) addresses) : 0;

        if (!fy_pki_name_valid(name)) {
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_INVALID,
                            "name '%.80s' must be 1-%d letters, digits, '.' or '-'", name ? name : "",
                            FY_PKI_NAME_MAX);
                return -EINVAL;
        }
        if (n > FY_PKI_MAX_ADDRESSES) {
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_INVALID, "at most %d addresses, got %zu",
                            FY_PKI_MAX_ADDRESSES, n);
                return -EINVAL;
        }
        g_ptr_array_add(sans, (char *) name);
        for (size_t i = 0; i < n; i++) {
                bool dup = false;

                if (!fy_pki_address_valid(addresses[i])) {
                        g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_INVALID,
                                    "address '%.80s' is neither an IP address nor a DNS name", addresses[i]);
                        return -EINVAL;
                }
                for (guint k = 0; k < sans->len; k++)
                        dup |= g_ascii_strcasecmp(sans->pdata[k], addresses[i]) == 0;
                if (!dup)
                        g_ptr_array_add(sans, (char *) addresses[i]);
        }
        g_ptr_array_add(sans, NULL);
        *ret = g_steal_pointer(&sans);
        return 0;
}

static int make_dir(const char *path, GError **error)
{
        if (g_mkdir_with_parents(path, 0700) < 0) {
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_IO, "cannot create %s: %s", path, g_strerror(errno));
                return -errno;
        }
        return 0;
}

int fy_pki_init(const char *dir, const char *engine_name, const char *const *addresses, unsigned ca_days,
                unsigned days, GError **error)
{
        g_autofree char *ca_cert = g_build_filename(dir, "ca.pem", NULL);
        g_autofree char *ca_keyp = g_build_filename(dir, "ca.key", NULL);
        g_autoptr(GPtrArray) sans = NULL;
        g_auto(gnutls_x509_privkey_t) key = NULL;
        g_auto(gnutls_x509_crt_t) crt = NULL;
        int r;

        ca_days = ca_days ? ca_days : FY_PKI_CA_DAYS_DEFAULT;
        if ((r = check_days(ca_days, error)) < 0 || (r = check_days(days, error)) < 0 ||
            (r = collect_sans(engine_name, addresses, &sans, error)) < 0)
                return r;
        if (g_file_test(ca_keyp, G_FILE_TEST_EXISTS) || g_file_test(ca_cert, G_FILE_TEST_EXISTS)) {
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_EXISTS,
                            "%s already holds a CA; issue certificates from it with 'ferry pki issue', "
                            "or choose another --dir", dir);
                return -EEXIST;
        }
        if ((r = make_dir(dir, error)) < 0)
                return r;
        if ((r = new_key(&key, error)) < 0 ||
            (r = make_cert(key, "Ferry CA", PKI_ROLE_CA, NULL, ca_days, NULL, NULL, &crt, error)) < 0 ||
            (r = save_pair(crt, key, ca_cert, ca_keyp, error)) < 0)
                return r;
        return fy_pki_issue(dir, engine_name, addresses, days, true, NULL, NULL, error);
}

/* dir's CA certificate and key. */
static int load_ca(const char *dir, gnutls_x509_crt_t *ret_crt, gnutls_x509_privkey_t *ret_key, GError **error)
{
        g_autofree char *cert_path = g_build_filename(dir, "ca.pem", NULL);
        g_autofree char *key_path = g_build_filename(dir, "ca.key", NULL);
        g_autofree char *cert_text = NULL, *key_text = NULL;
        g_auto(gnutls_x509_crt_t) crt = NULL;
        g_auto(gnutls_x509_privkey_t) key = NULL;
        gnutls_datum_t c, k;
        int r, gr;

        if ((r = read_pem(cert_path, "CA certificate", &c, &cert_text, error)) < 0)
                return r;
        if ((r = read_pem(key_path, "CA key", &k, &key_text, error)) < 0)
                return r;
        if ((gr = gnutls_x509_crt_init(&crt)) < 0 || (gr = gnutls_x509_crt_import(crt, &c, GNUTLS_X509_FMT_PEM)) < 0) {
                g_autofree char *what = g_strdup_printf("reading %s", cert_path);
                return crypto_fail(error, gr, what);
        }
        gr = gnutls_x509_privkey_init(&key);
        if (gr == 0)
                gr = gnutls_x509_privkey_import2(key, &k, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN);
        gnutls_memset(key_text, 0, k.size);
        if (gr < 0) {
                g_autofree char *what = g_strdup_printf("reading %s", key_path);
                return crypto_fail(error, gr, what);
        }
        *ret_crt = g_steal_pointer(&crt);
        *ret_key = g_steal_pointer(&key);
        return 0;
}

int fy_pki_issue(const char *dir, const char *name, const char *const *addresses, unsigned days, bool engine,
                 char **ret_cert, char **ret_key, GError **error)
{
        g_autoptr(GPtrArray) sans = NULL;
        g_auto(gnutls_x509_crt_t) ca_crt = NULL, crt = NULL;
        g_auto(gnutls_x509_privkey_t) ca_key = NULL, key = NULL;
        g_autofree char *cert_path = NULL, *key_path = NULL, *hosts = NULL;
        int r;

        days = days ? days : FY_PKI_LEAF_DAYS_DEFAULT;
        if ((r = check_days(days, error)) < 0 || (r = collect_sans(name, addresses, &sans, error)) < 0)
                return r;
        if ((r = load_ca(dir, &ca_crt, &ca_key, error)) < 0)
                return r;
        if (engine) {
                cert_path = g_build_filename(dir, "engine.pem", NULL);
                key_path = g_build_filename(dir, "engine.key", NULL);
        } else {
                hosts = g_build_filename(dir, "hosts", NULL);
                if ((r = make_dir(hosts, error)) < 0)
                        return r;
                cert_path = fy_pki_host_cert_path(dir, name);
                key_path = fy_pki_host_key_path(dir, name);
        }
        if ((r = new_key(&key, error)) < 0 ||
            (r = make_cert(key, name, engine ? PKI_ROLE_ENGINE : PKI_ROLE_HOST, (const char *const *) sans->pdata, days, ca_crt, ca_key, &crt,
                           error)) < 0 ||
            (r = save_pair(crt, key, cert_path, key_path, error)) < 0)
                return r;
        if (ret_cert)
                *ret_cert = g_steal_pointer(&cert_path);
        if (ret_key)
                *ret_key = g_steal_pointer(&key_path);
        return 0;
}

static char *verify_reason(unsigned status)
{
        gnutls_datum_t out = { 0 };
        char *text;

        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) < 0)
                return g_strdup_printf("verification status 0x%x", status);
        text = g_strndup((const char *) out.data, out.size);
        datum_clear(&out);
        return text;
}

int fy_pki_verify(const char *ca_file, const char *cert_file, const char *identity, GError **error)
{
        g_autofree char *ca_text = NULL, *cert_text = NULL;
        gnutls_x509_trust_list_t tl = NULL;
        gnutls_x509_crt_t *chain = NULL;
        unsigned n_chain = 0, status = 0;
        gnutls_datum_t ca, cert;
        gnutls_typed_vdata_st vdata[2] = {
                { .type = GNUTLS_DT_KEY_PURPOSE_OID, .data = (unsigned char *) GNUTLS_KP_TLS_WWW_SERVER },
                { .type = GNUTLS_DT_DNS_HOSTNAME },
        };
        unsigned n_vdata = 1;
        int r, gr;

        if ((r = read_pem(ca_file, "CA", &ca, &ca_text, error)) < 0 ||
            (r = read_pem(cert_file, "certificate", &cert, &cert_text, error)) < 0)
                return r;
        gr = gnutls_x509_trust_list_init(&tl, 0);
        if (gr == 0) {
                gr = gnutls_x509_trust_list_add_trust_mem(tl, &ca, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
                if (gr == 0) {
                        g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_CRYPTO, "%s holds no certificate", ca_file);
                        gnutls_x509_trust_list_deinit(tl, 1);
                        return -EINVAL;
                }
        }
        if (gr >= 0)
                gr = gnutls_x509_crt_list_import2(&chain, &n_chain, &cert, GNUTLS_X509_FMT_PEM, 0);
        if (gr < 0) {
                if (tl)
                        gnutls_x509_trust_list_deinit(tl, 1);
                return crypto_fail(error, gr, "reading the certificates");
        }
        /* GnuTLS checks an IP given as the hostname against the IP SANs. */
        if (identity) {
                vdata[1].data = (unsigned char *) identity;
                n_vdata = 2;
        }
        gr = gnutls_x509_trust_list_verify_crt2(tl, chain, n_chain, vdata, n_vdata, 0, &status, NULL);
        for (unsigned i = 0; i < n_chain; i++)
                gnutls_x509_crt_deinit(chain[i]);
        gnutls_free(chain);
        gnutls_x509_trust_list_deinit(tl, 1);
        if (gr < 0)
                return crypto_fail(error, gr, "verifying the certificate");
        if (status != 0) {
                g_autofree char *why = verify_reason(status);

                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_UNTRUSTED, "%s does not verify against %s%s%s: %s",
                            cert_file, ca_file, identity ? " for " : "", identity ? identity : "", why);
                return -EPERM;
        }
        return 0;
}

int fy_pki_check_engine_client(const char *pem, GError **error)
{
        g_auto(gnutls_x509_crt_t) crt = NULL;
        gnutls_datum_t d = { (unsigned char *) pem, pem ? (unsigned) strlen(pem) : 0 };
        char unit[FY_PKI_NAME_MAX + 1], oid[128];
        size_t len = sizeof(unit);
        bool client = false;
        int gr;

        if ((gr = gnutls_x509_crt_init(&crt)) < 0 || (gr = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM)) < 0)
                return crypto_fail(error, gr, "reading the client certificate");
        for (unsigned i = 0;; i++) {
                size_t olen = sizeof(oid);

                gr = gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &olen, NULL);
                if (gr < 0)
                        break;
                client |= strcmp(oid, GNUTLS_KP_TLS_WWW_CLIENT) == 0;
        }
        gr = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 0, 0, unit, &len);
        if (!client || gr < 0 || strcmp(unit, FY_PKI_ENGINE_UNIT) != 0) {
                g_set_error(error, FY_PKI_ERROR, FY_PKI_ERROR_UNTRUSTED,
                            "the client certificate is not the engine's (it needs clientAuth and OU=%s: a host's "
                            "certificate is for serving only; an engine certificate issued before this check: "
                            "reissue it with 'ferry pki issue --engine')", FY_PKI_ENGINE_UNIT);
                return -EPERM;
        }
        return 0;
}
