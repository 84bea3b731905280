/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The PKI: a CA and certificates issued from it, read back and verified with
 * GnuTLS itself (trust list, names, usages, modes of the key files) and with
 * GIO (the path the daemons take); a certificate of another CA is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "fileio.h"
#include "pki.h"

static char *tmpdir_new(void)
{
        g_autoptr(GError) error = NULL;
        char *d = g_dir_make_tmp("ferry-test-pki-XXXXXX", &error);

        g_assert_no_error(error);
        return d;
}

static void rm_rf(const char *path)
{
        g_autoptr(GFile) f = g_file_new_for_path(path);
        g_autoptr(GFileEnumerator) en = g_file_enumerate_children(f, G_FILE_ATTRIBUTE_STANDARD_NAME,
                                                                  G_FILE_QUERY_INFO_NOFOLLOW_SYMLINKS, NULL, NULL);
        GFileInfo *info;

        while (en && (info = g_file_enumerator_next_file(en, NULL, NULL))) {
                g_autofree char *child = g_build_filename(path, g_file_info_get_name(info), NULL);

                if (g_file_info_get_file_type(info) == G_FILE_TYPE_DIRECTORY)
                        rm_rf(child);
                else
                        unlink(child);
                g_object_unref(info);
        }
        rmdir(path);
}

static unsigned file_mode(const char *path)
{
        struct stat st;

        g_assert_cmpint(stat(path, &st), ==, 0);
        return st.st_mode & 07777;
}

static gnutls_x509_crt_t load_crt(const char *path)
{
        g_autofree char *text = NULL;
        gnutls_x509_crt_t crt;
        gnutls_datum_t d;
        size_t len = 0;

        g_assert_cmpint(fy_read_small_file_at(AT_FDCWD, path, 65536, &text, &len), ==, 0);
        d.data = (unsigned char *) text;
        d.size = (unsigned) len;
        g_assert_cmpint(gnutls_x509_crt_init(&crt), ==, 0);
        g_assert_cmpint(gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM), ==, 0);
        return crt;
}

/* GnuTLS's own verdict: chain to ca_path, purpose serverAuth, and the name when given. */
static unsigned gnutls_verify(const char *ca_path, const char *cert_path, const char *name)
{
        gnutls_x509_crt_t ca = load_crt(ca_path), crt = load_crt(cert_path);
        gnutls_x509_trust_list_t tl;
        gnutls_typed_vdata_st vdata[2] = {
                { .type = GNUTLS_DT_KEY_PURPOSE_OID, .data = (unsigned char *) GNUTLS_KP_TLS_WWW_SERVER },
                { .type = GNUTLS_DT_DNS_HOSTNAME, .data = (unsigned char *) name },
        };
        unsigned status = 0;

        g_assert_cmpint(gnutls_x509_trust_list_init(&tl, 0), ==, 0);
        g_assert_cmpint(gnutls_x509_trust_list_add_cas(tl, &ca, 1, 0), ==, 1);
        g_assert_cmpint(gnutls_x509_trust_list_verify_crt2(tl, &crt, 1, vdata, name ? 2 : 1, 0, &status, NULL), ==, 0);
        gnutls_x509_trust_list_deinit(tl, 1);       /* frees ca too */
        gnutls_x509_crt_deinit(crt);
        return status;
}

static bool has_purpose(gnutls_x509_crt_t crt, const char *oid)
{
        for (unsigned i = 0;; i++) {
                char buf[128];
                size_t len = sizeof(buf);
                int r = gnutls_x509_crt_get_key_purpose_oid(crt, i, buf, &len, NULL);

                if (r < 0)
                        return false;
                if (strcmp(buf, oid) == 0)
                        return true;
        }
}

static char *serial_hex(gnutls_x509_crt_t crt)
{
        unsigned char serial[64];
        size_t len = sizeof(serial);

        g_assert_cmpint(gnutls_x509_crt_get_serial(crt, serial, &len), ==, 0);
        g_assert_cmpuint(len, ==, 16);
        g_assert_cmpuint(serial[0] & 0x80, ==, 0);     /* positive */
        return g_compute_checksum_for_data(G_CHECKSUM_SHA256, serial, len);
}

static void test_init_and_issue(void)
{
        g_autofree char *tmp = tmpdir_new();
        g_autofree char *dir = g_build_filename(tmp, "pki", NULL);
        g_autofree char *ca = NULL, *ca_key = NULL, *eng = NULL, *eng_key = NULL;
        g_autofree char *cert = NULL, *key = NULL, *cert2 = NULL;
        g_autofree char *s1 = NULL, *s2 = NULL, *s3 = NULL;
        g_autoptr(GError) error = NULL;
        const char *eng_addrs[] = { "127.0.0.1", "::1", "engine.example.com", NULL };
        const char *host_addrs[] = { "10.1.2.3", NULL };
        gnutls_x509_crt_t crt;
        unsigned int critical = 0, usage = 0, ca_flag = 0;
        time_t now = time(NULL);
        int pathlen = 0;

        g_assert_cmpint(fy_pki_init(dir, "engine1", eng_addrs, 0, 30, &error), ==, 0);
        g_assert_no_error(error);
        ca = g_build_filename(dir, "ca.pem", NULL);
        ca_key = g_build_filename(dir, "ca.key", NULL);
        eng = g_build_filename(dir, "engine.pem", NULL);
        eng_key = g_build_filename(dir, "engine.key", NULL);
        g_assert_cmphex(file_mode(dir), ==, 0700);
        g_assert_cmphex(file_mode(ca_key), ==, 0600);
        g_assert_cmphex(file_mode(eng_key), ==, 0600);
        g_assert_cmphex(file_mode(ca), ==, 0644);

        /* The CA: a CA that signs certificates, for ten years. */
        crt = load_crt(ca);
        g_assert_cmpint(gnutls_x509_crt_get_basic_constraints(crt, &critical, &ca_flag, &pathlen), ==, 1);
        g_assert_cmpuint(ca_flag, ==, 1);
        g_assert_cmpint(gnutls_x509_crt_get_key_usage(crt, &usage, &critical), >=, 0);
        g_assert_true(usage & GNUTLS_KEY_KEY_CERT_SIGN);
        g_assert_cmpint(gnutls_x509_crt_get_expiration_time(crt), >, now + 3649L * 86400);
        s1 = serial_hex(crt);
        gnutls_x509_crt_deinit(crt);

        /* The engine: names and addresses; verifies for each, not for others. */
        g_assert_cmphex(gnutls_verify(ca, eng, "engine1"), ==, 0);
        g_assert_cmphex(gnutls_verify(ca, eng, "127.0.0.1"), ==, 0);
        g_assert_cmphex(gnutls_verify(ca, eng, "::1"), ==, 0);
        g_assert_cmphex(gnutls_verify(ca, eng, "engine.example.com"), ==, 0);
        g_assert_true(gnutls_verify(ca, eng, "10.0.0.1") & GNUTLS_CERT_UNEXPECTED_OWNER);
        crt = load_crt(eng);
        g_assert_true(gnutls_x509_crt_get_expiration_time(crt) <= now + 30L * 86400 + 5);
        g_assert_true(gnutls_x509_crt_get_activation_time(crt) <= now);
        /* The engine alone is a client (of the agents), and says so for them to check. */
        g_assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_SERVER));
        g_assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_CLIENT));
        gnutls_x509_crt_deinit(crt);
        {
                g_autofree char *pem = NULL;

                g_assert_true(g_file_get_contents(eng, &pem, NULL, NULL));
                g_assert_cmpint(fy_pki_check_engine_client(pem, &error), ==, 0);
                g_assert_no_error(error);
        }

        /* A second init over the CA is refused and changes nothing. */
        g_assert_cmpint(fy_pki_init(dir, "engine1", NULL, 0, 0, &error), ==, -EEXIST);
        g_assert_error(error, FY_PKI_ERROR, FY_PKI_ERROR_EXISTS);
        g_clear_error(&error);
        crt = load_crt(ca);
        s2 = serial_hex(crt);
        gnutls_x509_crt_deinit(crt);
        g_assert_cmpstr(s1, ==, s2);
        g_clear_pointer(&s2, g_free);

        /* An agent: SAN = name and address; a server only (no clientAuth: not a client of other agents); not a CA. */
        g_assert_cmpint(fy_pki_issue(dir, "host1", host_addrs, 0, false, &cert, &key, &error), ==, 0);
        g_assert_no_error(error);
        g_assert_true(g_str_has_suffix(cert, "/hosts/host1.pem"));
        g_assert_cmphex(file_mode(key), ==, 0600);
        crt = load_crt(cert);
        g_assert_cmpint(gnutls_x509_crt_get_basic_constraints(crt, &critical, &ca_flag, &pathlen), ==, 0);
        g_assert_cmpint(gnutls_x509_crt_get_key_usage(crt, &usage, &critical), >=, 0);
        g_assert_cmphex(usage, ==, GNUTLS_KEY_DIGITAL_SIGNATURE);
        g_assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_SERVER));
        g_assert_false(has_purpose(crt, GNUTLS_KP_TLS_WWW_CLIENT));
        g_assert_cmpint(gnutls_x509_crt_get_expiration_time(crt), >, now + 824L * 86400);
        s2 = serial_hex(crt);
        gnutls_x509_crt_deinit(crt);
        g_assert_cmphex(gnutls_verify(ca, cert, "host1"), ==, 0);
        g_assert_cmphex(gnutls_verify(ca, cert, "10.1.2.3"), ==, 0);
        g_assert_true(gnutls_verify(ca, cert, "host2") & GNUTLS_CERT_UNEXPECTED_OWNER);
        g_assert_true(gnutls_verify(ca, cert, "10.1.2.4") & GNUTLS_CERT_UNEXPECTED_OWNER);
        g_assert_cmpint(fy_pki_verify(ca, cert, "10.1.2.3", &error), ==, 0);
        g_assert_no_error(error);
        g_assert_cmpint(fy_pki_verify(ca, cert, "host2", &error), ==, -EPERM);
        g_assert_error(error, FY_PKI_ERROR, FY_PKI_ERROR_UNTRUSTED);
        g_clear_error(&error);
        {
                g_autofree char *pem = NULL;

                g_assert_true(g_file_get_contents(cert, &pem, NULL, NULL));
                g_assert_cmpint(fy_pki_check_engine_client(pem, &error), ==, -EPERM);
                g_assert_error(error, FY_PKI_ERROR, FY_PKI_ERROR_UNTRUSTED);
                g_clear_error(&error);
        }

        /* Reissue (rotation): a new key and serial in the same files. */
        g_assert_cmpint(fy_pki_issue(dir, "host1", host_addrs, 10, false, &cert2, NULL, &error), ==, 0);
        g_assert_cmpstr(cert, ==, cert2);
        crt = load_crt(cert);
        s3 = serial_hex(crt);
        gnutls_x509_crt_deinit(crt);
        g_assert_cmpstr(s2, !=, s3);
        g_assert_cmpstr(s1, !=, s3);

        /* GIO (glib-networking): the pair loads, and the chain checks with the identity. */
        {
                g_autoptr(GTlsCertificate) gc = g_tls_certificate_new_from_files(cert, key, &error);
                g_autoptr(GTlsDatabase) db = NULL;
                g_autoptr(GSocketConnectable) ok_id = g_network_address_new("10.1.2.3", 1);
                g_autoptr(GSocketConnectable) bad_id = g_network_address_new("10.9.9.9", 1);

                g_assert_no_error(error);
                db = g_tls_file_database_new(ca, &error);
                g_assert_no_error(error);
                g_assert_cmphex(g_tls_database_verify_chain(db, gc, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER, ok_id,
                                                            NULL, 0, NULL, NULL), ==, 0);
                g_assert_true(g_tls_database_verify_chain(db, gc, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER, bad_id,
                                                          NULL, 0, NULL, NULL) & G_TLS_CERTIFICATE_BAD_IDENTITY);
        }
        rm_rf(tmp);
}

static void test_rogue_ca_refused(void)
{
        g_autofree char *tmp = tmpdir_new();
        g_autofree char *good = g_build_filename(tmp, "good", NULL), *rogue = g_build_filename(tmp, "rogue", NULL);
        g_autofree char *good_ca = NULL, *rogue_cert = NULL, *rogue_key = NULL;
        g_autoptr(GError) error = NULL;
        const char *addrs[] = { "127.0.0.1", NULL };

        g_assert_cmpint(fy_pki_init(good, "engine", addrs, 0, 0, &error), ==, 0);
        g_assert_cmpint(fy_pki_init(rogue, "engine", addrs, 0, 0, &error), ==, 0);
        /* Same name, same address, same subject: only the signer differs. */
        g_assert_cmpint(fy_pki_issue(rogue, "host1", addrs, 0, false, &rogue_cert, &rogue_key, &error), ==, 0);
        good_ca = g_build_filename(good, "ca.pem", NULL);
        g_assert_true(gnutls_verify(good_ca, rogue_cert, "host1") & GNUTLS_CERT_SIGNER_NOT_FOUND);
        g_assert_true(gnutls_verify(good_ca, rogue_cert, NULL) & GNUTLS_CERT_INVALID);
        g_assert_cmpint(fy_pki_verify(good_ca, rogue_cert, NULL, &error), ==, -EPERM);
        g_assert_error(error, FY_PKI_ERROR, FY_PKI_ERROR_UNTRUSTED);
        g_clear_error(&error);
        {
                g_autoptr(GTlsCertificate) gc = g_tls_certificate_new_from_files(rogue_cert, rogue_key, &error);
                g_autoptr(GTlsDatabase) db = g_tls_file_database_new(good_ca, &error);

                g_assert_no_error(error);
                g_assert_true(g_tls_database_verify_chain(db, gc, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER, NULL,
                                                          NULL, 0, NULL, NULL) & G_TLS_CERTIFICATE_UNKNOWN_CA);
        }
        rm_rf(tmp);
}

static void test_bad_input(void)
{
        g_autofree char *tmp = tmpdir_new();
        g_autofree char *dir = g_build_filename(tmp, "pki", NULL);
        g_autoptr(GError) error = NULL;
        const char *bad_addr[] = { "10.0.0.1/8", NULL };
        const char *many[FY_PKI_MAX_ADDRESSES + 2];
        const char *bad_names[] = { "", "a b", "host_1", "-x", "x.", "a/b", "\xc3\xa9" };

        for (size_t i = 0; i < G_N_ELEMENTS(bad_names); i++) {
                g_assert_cmpint(fy_pki_init(dir, bad_names[i], NULL, 0, 0, &error), ==, -EINVAL);
                g_assert_error(error, FY_PKI_ERROR, FY_PKI_ERROR_INVALID);
                g_clear_error(&error);
        }
        g_assert_cmpint(fy_pki_init(dir, "e", bad_addr, 0, 0, &error), ==, -EINVAL);
        g_assert_error(error, FY_PKI_ERROR, FY_PKI_ERROR_INVALID);
        g_clear_error(&error);
        for (size_t i = 0; i < FY_PKI_MAX_ADDRESSES + 1; i++)
                many[i] = "10.0.0.1";
        many[FY_PKI_MAX_ADDRESSES + 1] = NULL;
        g_assert_cmpint(fy_pki_init(dir, "e", many, 0, 0, &error), ==, -EINVAL);
        g_clear_error(&error);
        g_assert_cmpint(fy_pki_init(dir, "e", NULL, 0, FY_PKI_DAYS_MAX + 1, &error), ==, -EINVAL);
        g_clear_error(&error);
        /* Nothing was created by the refusals. */
        g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
        /* No CA: issue says which file is missing. */
        g_assert_cmpint(fy_pki_issue(dir, "host1", NULL, 0, false, NULL, NULL, &error), ==, -ENOENT);
        g_assert_error(error, FY_PKI_ERROR, FY_PKI_ERROR_IO);
        g_assert_nonnull(strstr(error->message, "ca.pem"));
        rm_rf(tmp);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/pki/init-and-issue", test_init_and_issue);
        g_test_add_func("/pki/rogue-ca-refused", test_rogue_ca_refused);
        g_test_add_func("/pki/bad-input", test_bad_input);
        return g_test_run();
}
