/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Input validation, printable text, tables. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fileio.h"
#include "uuid.h"

int cli_parse_size(const char *text, uint64_t *ret_size, GError **error)
{
        static const struct {
                const char *suffix;
                unsigned shift;
        } units[] = {
                { "", 0 }, { "b", 0 },
                { "k", 10 }, { "kb", 10 }, { "kib", 10 },
                { "m", 20 }, { "mb", 20 }, { "mib", 20 },
                { "g", 30 }, { "gb", 30 }, { "gib", 30 },
                { "t", 40 }, { "tb", 40 }, { "tib", 40 },
        };
        g_autofree char *digits = NULL;
        const char *p = text;
        guint64 n;
        size_t i;

        while (g_ascii_isdigit(*p))
                p++;
        if (p == text || p - text > 20)
                goto invalid;
        digits = g_strndup(text, (gsize) (p - text));
        if (!g_ascii_string_to_unsigned(digits, 10, 0, G_MAXUINT64, &n, NULL))
                goto invalid;
        for (i = 0; i < G_N_ELEMENTS(units); i++)
                if (g_ascii_strcasecmp(p, units[i].suffix) == 0)
                        break;
        if (i == G_N_ELEMENTS(units))
                goto invalid;
        if (n == 0 || n > (CLI_SIZE_MAX >> units[i].shift)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "size '%s' must be between 1 byte and 64 TiB", text);
                return -1;
        }
        n <<= units[i].shift;
        if (n % 512 != 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "size '%s' is not a multiple of 512 bytes", text);
                return -1;
        }
        *ret_size = n;
        return 0;

invalid:
        g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE,
                    "invalid size '%s': expected bytes or a number with K, M, G or T, e.g. 512M", text);
        return -1;
}

int cli_check_name(const char *what, const char *name, GError **error)
{
        glong len;

        if (!g_utf8_validate(name, -1, NULL)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "%s is not valid UTF-8", what);
                return -1;
        }
        len = g_utf8_strlen(name, -1);
        if (len < 1 || len > CLI_NAME_MAX) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "%s must be 1 to %d characters long", what,
                            CLI_NAME_MAX);
                return -1;
        }
        for (const char *p = name; *p; p = g_utf8_next_char(p)) {
                if (g_unichar_iscntrl(g_utf8_get_char(p))) {
                        g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "%s contains a control character", what);
                        return -1;
                }
        }
        return 0;
}

int cli_check_uuid(const char *what, const char *id, GError **error)
{
        if (fy_uuid_is_valid(id))
                return 0;
        g_autofree char *safe = cli_printable(id);
        g_set_error(error, CLI_ERROR, CLI_ERROR_USAGE, "%s '%s' is not a UUID", what, safe);
        return -1;
}

char *cli_printable(const char *text)
{
        g_autofree char *valid = g_utf8_make_valid(text ? text : "", -1);
        GString *out = g_string_sized_new(strlen(valid));

        /* Text from the engine must not be able to move the cursor or change colors. */
        for (const char *p = valid; *p; p = g_utf8_next_char(p)) {
                gunichar c = g_utf8_get_char(p);

                if (g_unichar_iscntrl(c) || c == 0x200e || c == 0x200f || (c >= 0x202a && c <= 0x202e))
                        g_string_append_c(out, '?');
                else
                        g_string_append_unichar(out, c);
        }
        return g_string_free(out, FALSE);
}

static char *cli_json_value_text(const json_t *v)
{
        if (!v || json_is_null(v))
                return g_strdup("-");
        if (json_is_string(v))
                return cli_printable(json_string_value(v));
        if (json_is_true(v))
                return g_strdup("yes");
        if (json_is_false(v))
                return g_strdup("no");
        if (json_is_integer(v))
                return g_strdup_printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
        if (json_is_real(v))
                return g_strdup_printf("%.1f", json_real_value(v));

        char *dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        char *text = cli_printable(dump);

        free(dump);
        return text;
}

char *cli_json_text(const json_t *obj, const char *key)
{
        return cli_json_value_text(json_is_object(obj) ? json_object_get(obj, key) : NULL);
}

char *cli_json_text2(const json_t *obj, const char *key, const char *sub)
{
        const json_t *inner = json_is_object(obj) ? json_object_get(obj, key) : NULL;

        return cli_json_value_text(json_is_object(inner) ? json_object_get(inner, sub) : NULL);
}

char *cli_format_bytes(const json_t *obj, const char *key)
{
        const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

        if (json_is_integer(v) && json_integer_value(v) >= 0)
                return g_format_size_full((guint64) json_integer_value(v), G_FORMAT_SIZE_IEC_UNITS);
        return cli_json_value_text(v);
}

double cli_json_number(const json_t *obj, const char *key, double dflt)
{
        const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

        return json_is_number(v) ? json_number_value(v) : dflt;
}

void cli_print_json(const json_t *json)
{
        char *text = json_dumps(json, JSON_INDENT(2) | JSON_ENCODE_ANY);

        if (text) {
                fputs(text, stdout);
                fputc('\n', stdout);
                free(text);
        }
}

int cli_read_json_file(const char *path, size_t max, json_t **ret_json, GError **error)
{
        g_autofree char *text = NULL;
        size_t len = 0;
        json_error_t jerr;
        json_t *json;
        int r;

        r = fy_read_small_file_at(AT_FDCWD, path, max, &text, &len);
        if (r < 0) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "cannot read %s: %s", path, g_strerror(-r));
                return -1;
        }
        json = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(json)) {
                g_set_error(error, CLI_ERROR, CLI_ERROR_FAILED, "%s is not a JSON object: %s", path,
                            json ? "wrong type" : jerr.text);
                json_decref(json);
                return -1;
        }
        *ret_json = json;
        return 0;
}

struct cli_table {
        guint ncols;
        GPtrArray *cells;       /* row-major, headers first */
};

struct cli_table *cli_table_new(const char *header, ...)
{
        struct cli_table *t = g_new0(struct cli_table, 1);
        va_list ap;

        t->cells = g_ptr_array_new_with_free_func(g_free);
        va_start(ap, header);
        for (const char *h = header; h; h = va_arg(ap, const char *)) {
                g_ptr_array_add(t->cells, g_strdup(h));
                t->ncols++;
        }
        va_end(ap);
        return t;
}

void cli_table_add(struct cli_table *t, ...)
{
        va_list ap;

        va_start(ap, t);
        for (guint i = 0; i < t->ncols; i++)
                g_ptr_array_add(t->cells, cli_printable(va_arg(ap, const char *)));
        va_end(ap);
}

void cli_table_add_take(struct cli_table *t, ...)
{
        va_list ap;

        va_start(ap, t);
        for (guint i = 0; i < t->ncols; i++) {
                char *cell = va_arg(ap, char *);

                g_ptr_array_add(t->cells, cell ? cell : g_strdup("-"));
        }
        va_end(ap);
}

void cli_table_print(const struct cli_table *t, FILE *out)
{
        g_autofree glong *width = g_new0(glong, t->ncols);

        for (guint i = 0; i < t->cells->len; i++) {
                glong w = g_utf8_strlen(t->cells->pdata[i], -1);

                width[i % t->ncols] = MAX(width[i % t->ncols], w);
        }
        for (guint i = 0; i < t->cells->len; i++) {
                guint col = i % t->ncols;
                const char *cell = t->cells->pdata[i];

                fputs(cell, out);
                if (col + 1 == t->ncols) {
                        fputc('\n', out);
                } else {
                        for (glong pad = g_utf8_strlen(cell, -1); pad < width[col] + 2; pad++)
                                fputc(' ', out);
                }
        }
}

void cli_table_free(struct cli_table *t)
{
        if (!t)
                return;
        g_ptr_array_unref(t->cells);
        g_free(t);
}
