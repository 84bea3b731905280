/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <math.h>
#include <string.h>

#include "prom.h"

struct fy_prom {
        GString *out;
        char *family;                  /* current family's name */
        enum fy_prom_type type;
        GHashTable *written;           /* family names written, each once */
};

struct fy_prom *fy_prom_new(void)
{
        struct fy_prom *p = g_new0(struct fy_prom, 1);

        p->out = g_string_sized_new(4096);
        p->written = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        return p;
}

void fy_prom_free(struct fy_prom *p)
{
        if (!p)
                return;
        g_string_free(p->out, TRUE);
        g_hash_table_unref(p->written);
        g_free(p->family);
        g_free(p);
}

static bool name_valid(const char *name, bool colon)
{
        if (!name || !*name || g_ascii_isdigit(*name))
                return false;
        for (const char *c = name; *c; c++)
                if (!g_ascii_isalnum(*c) && *c != '_' && !(colon && *c == ':'))
                        return false;
        return true;
}

bool fy_prom_name_valid(const char *name)
{
        return name_valid(name, true);
}

/* HELP text escapes \ and newline; label values also ". */
static void escape(GString *out, const char *s, bool quote)
{
        g_autofree char *valid = g_utf8_make_valid(s, -1);   /* the format is UTF-8 */

        for (const char *c = valid; *c; c++) {
                if (*c == '\\')
                        g_string_append(out, "\\\\");
                else if (*c == '\n')
                        g_string_append(out, "\\n");
                else if (quote && *c == '"')
                        g_string_append(out, "\\\"");
                else
                        g_string_append_c(out, *c);
        }
}

static void append_value(GString *out, double v)
{
        char buf[G_ASCII_DTOSTR_BUF_SIZE];

        if (isnan(v))
                g_string_append(out, "NaN");
        else if (isinf(v))
                g_string_append(out, v > 0 ? "+Inf" : "-Inf");
        else if (v == floor(v) && fabs(v) < 1e15)
                g_string_append_printf(out, "%" G_GINT64_FORMAT, (gint64) v);
        else
                g_string_append(out, g_ascii_dtostr(buf, sizeof(buf), v));
}

void fy_prom_family(struct fy_prom *p, const char *name, enum fy_prom_type type, const char *help)
{
        static const char *const types[] = {
                [FY_PROM_COUNTER] = "counter",
                [FY_PROM_GAUGE] = "gauge",
                [FY_PROM_HISTOGRAM] = "histogram",
        };

        g_return_if_fail(fy_prom_name_valid(name));
        g_return_if_fail(!g_hash_table_contains(p->written, name));
        g_hash_table_add(p->written, g_strdup(name));
        g_free(p->family);
        p->family = g_strdup(name);
        p->type = type;
        g_string_append_printf(p->out, "# HELP %s ", name);
        escape(p->out, help, false);
        g_string_append_printf(p->out, "\n# TYPE %s %s\n", name, types[type]);
}

static void sample_labels(GString *out, const char *const *labels, const char *le)
{
        bool any = false;

        if ((!labels || !labels[0]) && !le)
                return;
        g_string_append_c(out, '{');
        for (size_t i = 0; labels && labels[i]; i += 2) {
                g_return_if_fail(name_valid(labels[i], false) && labels[i + 1]);
                g_string_append_printf(out, "%s%s=\"", any ? "," : "", labels[i]);
                escape(out, labels[i + 1], true);
                g_string_append_c(out, '"');
                any = true;
        }
        if (le)
                g_string_append_printf(out, "%sle=\"%s\"", any ? "," : "", le);
        g_string_append_c(out, '}');
}

static void write_sample(struct fy_prom *p, const char *name, const char *const *labels, const char *le, double value)
{
        g_string_append(p->out, name);
        sample_labels(p->out, labels, le);
        g_string_append_c(p->out, ' ');
        append_value(p->out, value);
        g_string_append_c(p->out, '\n');
}

void fy_prom_sample(struct fy_prom *p, const char *name, const char *const *labels, double value)
{
        g_return_if_fail(p->family && strcmp(name, p->family) == 0 && p->type != FY_PROM_HISTOGRAM);
        write_sample(p, name, labels, NULL, value);
}

const char *fy_prom_text(struct fy_prom *p, size_t *ret_len)
{
        if (ret_len)
                *ret_len = p->out->len;
        return p->out->str;
}

void fy_prom_histogram_init(struct fy_prom_histogram *h, const double *bounds, size_t n_bounds)
{
        memset(h, 0, sizeof(*h));
        h->bounds = bounds;
        h->n_bounds = n_bounds;
        h->counts = g_new0(uint64_t, n_bounds + 1);
}

void fy_prom_histogram_clear(struct fy_prom_histogram *h)
{
        g_clear_pointer(&h->counts, g_free);
}

void fy_prom_histogram_observe(struct fy_prom_histogram *h, double value)
{
        size_t i = 0;

        if (isnan(value))
                return;
        while (i < h->n_bounds && value > h->bounds[i])
                i++;
        h->counts[i]++;
        h->sum += value;
        h->count++;
}

void fy_prom_histogram_write(struct fy_prom *p, const char *name, const char *const *labels,
                             const struct fy_prom_histogram *h)
{
        g_autofree char *bucket = g_strconcat(name, "_bucket", NULL);
        g_autofree char *sum = g_strconcat(name, "_sum", NULL);
        g_autofree char *count = g_strconcat(name, "_count", NULL);
        uint64_t cumulative = 0;

        g_return_if_fail(p->family && strcmp(name, p->family) == 0 && p->type == FY_PROM_HISTOGRAM);
        for (size_t i = 0; i <= h->n_bounds; i++) {
                char le[G_ASCII_DTOSTR_BUF_SIZE];

                cumulative += h->counts[i];
                if (i < h->n_bounds)
                        g_ascii_dtostr(le, sizeof(le), h->bounds[i]);
                else
                        g_strlcpy(le, "+Inf", sizeof(le));
                write_sample(p, bucket, labels, le, (double) cumulative);
        }
        write_sample(p, sum, labels, NULL, h->sum);
        write_sample(p, count, labels, NULL, (double) h->count);
}
