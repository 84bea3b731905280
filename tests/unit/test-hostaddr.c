/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host addresses as the engine stores them (engine_host_address_normalize):
 * one spelling per address, so the duplicate check sees every way of writing
 * the same agent; a name is checked label by label in both its ASCII (IDNA)
 * and its Unicode form.
 */
#include <string.h>

#include "restparse.h"

static const struct {
        const char *in;
        const char *out;                /* NULL: refused */
} cases[] = {
        { "127.0.0.1", "127.0.0.1" },
        /* Numeric spellings the resolver (inet_aton) reads as IPv4: stored as the address they mean. */
        { "127.1", "127.0.0.1" },
        { "2130706433", "127.0.0.1" },
        { "0x7f.1", "127.0.0.1" },
        { "0x7F.0.0.1", "127.0.0.1" },
        { "0177.0.0.1", "127.0.0.1" },
        { "127.0.1", "127.0.0.1" },
        /* IPv4-mapped IPv6 is the IPv4 address. */
        { "::ffff:127.0.0.1", "127.0.0.1" },
        { "::FFFF:7f00:1", "127.0.0.1" },
        { "0:0:0:0:0:0:0:1", "::1" },
        { "::1", "::1" },
        /* All-numeric last labels that are no IPv4 address: no host has such a name (RFC 3696 §2). */
        { "1.2.3.4.5", NULL },
        { "999.1", NULL },
        { "host.123", NULL },
        { "Host.Example", "host.example" },
        { "3com.example", "3com.example" },
        { "Bücher.Example", "xn--bcher-kva.example" },
        /* ACE labels are decoded and checked like Unicode input: valid punycode, nothing invisible. */
        { "xn--bcher-kva.example", "xn--bcher-kva.example" },
        { "XN--BCHER-KVA.example", "xn--bcher-kva.example" },
        { "xn--.example", NULL },
        { "xn--a-9999999.example", NULL },             /* not punycode */
        { "xn--ls8h.example", "xn--ls8h.example" },
        { "xn--zero-y76a.example", NULL },              /* "zero" with a zero-width space, encoded */
        { "xn--bell-3a.example", NULL },                /* a C1 control character (U+0085), encoded */
        { "xn--ab-g4t.example", NULL },                 /* a right-to-left override, encoded */
        { "...", NULL },
        { "", NULL },
};

static void test_spellings(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *got = engine_host_address_normalize(cases[i].in);

                g_test_message("%s -> %s", cases[i].in, got ? got : "(refused)");
                if (!cases[i].out)
                        g_assert_null(got);
                else
                        g_assert_cmpstr(got, ==, cases[i].out);
        }
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/hostaddr/spellings", test_spellings);
        return g_test_run();
}
