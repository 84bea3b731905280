/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The scripted agents of test-flows.c: see hostdouble.h. */
#include <string.h>

#include "hostdouble.h"
#include "error.h"
#include "uuid.h"

#define js(o, k) json_string_value(json_object_get((o), (k)))
#define ji(o, k) json_integer_value(json_object_get((o), (k)))

struct hd {
        json_t *m;                     /* the model: spm, lver, sds, vols, jobs, faults, calls, violations */
        struct engine *e;
        struct engine_host_transport transport;
        hd_recorded_fn recorded;
        void *recorded_data;
        unsigned pending;
};

struct reply {
        struct hd *d;
        fy_rpc_client_reply_fn cb;
        void *cb_data;
        json_t *result;
        GError *error;
};

static json_t *section(struct hd *d, const char *name, bool array)
{
        json_t *s = json_object_get(d->m, name);

        if (!s) {
                s = array ? json_array() : json_object();
                json_object_set_new(d->m, name, s);
        }
        return s;
}

struct hd *hd_new(json_t *model)
{
        struct hd *d = g_new0(struct hd, 1);

        d->m = model ? model : json_object();
        d->transport.userdata = d;
        return d;
}

void hd_free(struct hd *d)
{
        if (!d)
                return;
        json_decref(d->m);
        g_free(d);
}

json_t *hd_model(struct hd *d)
{
        return d->m;
}

unsigned hd_pending(struct hd *d)
{
        return d->pending;
}

static gboolean deliver(gpointer data)
{
        struct reply *r = data;

        r->d->pending--;
        r->cb(r->result, r->error, r->cb_data);
        json_decref(r->result);
        g_clear_error(&r->error);
        g_free(r);
        return G_SOURCE_REMOVE;
}

/* Replies later, from the main loop, as the RPC client does (result or error, owned). */
static void reply_later(struct hd *d, fy_rpc_client_reply_fn cb, void *cb_data, json_t *result, GError *error)
{
        struct reply *r = g_new0(struct reply, 1);

        r->d = d;
        r->cb = cb;
        r->cb_data = cb_data;
        r->result = result;
        r->error = error;
        d->pending++;
        g_idle_add(deliver, r);
}

/* The agent's answer: result, or (NULL) its error code. */
static void answer(struct hd *d, fy_rpc_client_reply_fn cb, void *cb_data, json_t *result, int code, const char *msg)
{
        reply_later(d, cb, cb_data, result, result ? NULL : g_error_new_literal(FY_ERROR, code, msg));
}

/* No answer from a dead host: what the RPC client says when the call times out. */
static void answer_lost(struct hd *d, fy_rpc_client_reply_fn cb, void *cb_data)
{
        reply_later(d, cb, cb_data, NULL, g_error_new_literal(G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "the host does not answer"));
}

static bool host_down(struct hd *d, const char *host)
{
        return json_is_true(json_object_get(section(d, "down", false), host));
}

void hd_fault(struct hd *d, const char *verb, const char *host, const char *mode, int code, int count)
{
        json_array_append_new(section(d, "faults", true),
                              json_pack("{s:s, s:s?, s:s, s:i, s:i}", "verb", verb, "host", host, "mode", mode,
                                        "code", code, "count", count));
}

gint64 hd_calls(struct hd *d, const char *verb)
{
        return ji(section(d, "calls", false), verb);
}

/* An SDM.update_volume that marks a volume ILLEGAL (not a fence, which moves the generation). */
static bool is_illegal_mark(json_t *p)
{
        json_t *a = json_object_get(p, "vol_attr");

        return g_strcmp0(js(a, "legality"), "ILLEGAL") == 0 && !json_object_get(a, "generation");
}

/* The fault this call takes ("refuse" or "fail"), its code in *ret_code; NULL: none. "hang_mark" takes only
 * an ILLEGAL mark. */
static const char *take_fault(struct hd *d, const char *verb, const char *host, json_t *p, int *ret_code)
{
        size_t i;
        json_t *f;

        json_array_foreach(section(d, "faults", true), i, f) {
                if (ji(f, "count") <= 0 || strcmp(js(f, "verb"), verb) != 0 || (js(f, "host") && strcmp(js(f, "host"), host) != 0))
                        continue;
                if (strcmp(js(f, "mode"), "hang_mark") == 0 && !is_illegal_mark(p))
                        continue;
                json_object_set_new(f, "count", json_integer(ji(f, "count") - 1));
                *ret_code = (int) ji(f, "code");
                return js(f, "mode");
        }
        return NULL;
}

/* ---- the storage model ---- */

static char *vol_key(const char *sd, const char *vol)
{
        return g_strdup_printf("%s/%s", sd ? sd : "", vol ? vol : "");
}

static json_t *vol_get(struct hd *d, const char *sd, const char *vol)
{
        g_autofree char *k = vol_key(sd, vol);

        return json_object_get(section(d, "vols", false), k);
}

/* The guest view of a volume: its data over its chain's. */
static char *vol_view(struct hd *d, json_t *v)
{
        GString *s = g_string_new(NULL);

        for (int depth = 0; v && depth < 130; depth++) {
                g_string_append_printf(s, "%s%s", depth ? "|" : "", js(v, "own"));
                v = strcmp(js(v, "parent"), FY_ZERO_UUID) == 0 ? NULL : vol_get(d, js(v, "sd"), js(v, "parent"));
        }
        return g_string_free(s, FALSE);
}

void hd_write(struct hd *d, const char *sd, const char *vol, const char *token)
{
        json_t *v = vol_get(d, sd, vol);

        g_assert_nonnull(v);
        json_object_set_new(v, "own", json_string(token));
}

static bool has_children(struct hd *d, const char *sd, const char *vol)
{
        const char *k;
        json_t *v;

        json_object_foreach(section(d, "vols", false), k, v)
                if (strcmp(js(v, "sd"), sd) == 0 && strcmp(js(v, "parent"), vol) == 0)
                        return true;
        return false;
}

static void vol_delete(struct hd *d, json_t *v)
{
        g_autofree char *k = vol_key(js(v, "sd"), js(v, "id"));
        g_autofree char *sd = g_strdup(js(v, "sd"));
        g_autofree char *img = g_strdup(js(v, "img"));
        g_autofree char *parent = g_strdup(js(v, "parent"));
        json_t *p;

        json_object_del(section(d, "vols", false), k);
        p = vol_get(d, sd, parent);
        if (p && strcmp(js(p, "img"), img) == 0 && !has_children(d, sd, parent))
                json_object_set_new(p, "voltype", json_string("LEAF"));
}

static json_t *vol_info(struct hd *d, json_t *v)
{
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:{s:[]}}",
                         "uuid", js(v, "id"), "domain", js(v, "sd"), "image", js(v, "img"), "parent", js(v, "parent"),
                         "format", js(v, "format"), "voltype", js(v, "voltype"), "legality", js(v, "legality"),
                         "status", strcmp(js(v, "legality"), "LEGAL") == 0 ? "OK" : "ILLEGAL",
                         "capacity", ji(v, "capacity"), "truesize", (json_int_t) 0, "generation", ji(v, "generation"),
                         "lease", "owners");
}

/* ---- jobs ---- */

/* What every host's Host.getStats says it runs at most (hd_set_job_limit; 10 unless set). */
static gint64 job_limit(struct hd *d)
{
        json_t *v = json_object_get(section(d, "settings", false), "job_limit");

        return v ? json_integer_value(v) : 10;
}

void hd_set_job_limit(struct hd *d, int limit)
{
        json_object_set_new(section(d, "settings", false), "job_limit", json_integer(limit));
}

gint64 hd_copies_over_limit(struct hd *d)
{
        return ji(d->m, "over_limit");
}

static json_t *job_new(struct hd *d, const char *host, const char *verb, const char *id, json_t *params,
                       const char *fault, int code)
{
        json_t *job = json_pack("{s:s, s:s, s:s, s:s, s:f, s:O}", "id", id, "host", host, "verb", verb,
                                "status", "running", "progress", 0.0, "params", params);

        if (fault && strcmp(fault, "fail") == 0)
                json_object_set_new(job, "fault", json_integer(code));
        if (fault && (strcmp(fault, "hang") == 0 || strcmp(fault, "hang_mark") == 0))
                json_object_set_new(job, "hang", json_true());  /* runs until Job.abort */
        if (fault && strcmp(fault, "corrupt") == 0)
                json_object_set_new(job, "corrupt", json_true());      /* a copy that writes other data */
        if (fault && strcmp(fault, "bigger") == 0)
                json_object_set_new(job, "bigger", json_true());       /* a copy into a destination with a zero tail */
        if (fault && strcmp(fault, "bigger_dirty") == 0)
                json_object_set_new(job, "bigger_dirty", json_true()); /* a copy that leaves a tail that is not zeros */
        if (fault && strcmp(fault, "no_length") == 0)
                json_object_set_new(job, "no_length", json_true());    /* a checksum of an agent without length */
        json_object_set_new(section(d, "jobs", false), id, job);
        if (strcmp(verb, "SDM.copy_data") == 0) {
                gint64 copies = 0;
                const char *jid;
                json_t *j;

                json_object_foreach(section(d, "jobs", false), jid, j)
                        copies += strcmp(js(j, "host"), host) == 0 && strcmp(js(j, "verb"), "SDM.copy_data") == 0 &&
                                  strcmp(js(j, "status"), "running") == 0;
                if (copies > job_limit(d))
                        json_object_set_new(d->m, "over_limit", json_integer(ji(d->m, "over_limit") + 1));
        }
        return job;
}

/* What Host.getJobs says of a job (the agent's job_info). */
static json_t *job_info(json_t *job)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:I}", "id", js(job, "id"), "status", js(job, "status"),
                              "job_type", js(job, "verb"),
                              "progress", strcmp(js(job, "status"), "done") == 0 ? 100.0 : 0.0, "bytes_done", (json_int_t) 0);

        /* The agent's phase of a copy once it runs (what the engine judges stalls on). */
        if (strcmp(js(job, "status"), "running") == 0 && strcmp(js(job, "verb"), "SDM.copy_data") == 0)
                json_object_set_new(o, "phase", json_string("copying"));
        if (json_object_get(job, "error"))
                json_object_set(o, "error", json_object_get(job, "error"));
        if (json_object_get(job, "result"))
                json_object_set(o, "result", json_object_get(job, "result"));
        return o;
}

static void job_fail(json_t *job, int code, const char *msg)
{
        json_object_set_new(job, "status", json_string(code == FY_ERR_ABORTED ? "aborted" : "failed"));
        json_object_set_new(job, "error", json_pack("{s:i, s:s}", "code", code, "message", msg));
}

/* Generation guard of the jobs that change a volume in place: the volume, at the generation sent. */
static json_t *guarded(struct hd *d, json_t *job, const char *sd, const char *vol, json_t *gen)
{
        json_t *v = vol_get(d, sd, vol);

        if (!v) {
                job_fail(job, FY_ERR_VOLUME_DOES_NOT_EXIST, "no such volume");
                return NULL;
        }
        if (gen && ji(v, "generation") != json_integer_value(gen)) {       /* without one: not checked */
                job_fail(job, FY_ERR_GENERATION_MISMATCH, "generation mismatch");
                return NULL;
        }
        return v;
}

static void set_done(json_t *v, gint64 gen)
{
        json_object_set_new(v, "legality", json_string("LEGAL"));
        json_object_set_new(v, "generation", json_integer((gen + 1) % 1000));
}

/* A job's effect on storage, at its end. */
static void job_run(struct hd *d, json_t *job)
{
        const char *verb = js(job, "verb");
        json_t *p = json_object_get(job, "params");
        json_t *v;

        if (json_object_get(job, "fault")) {
                job_fail(job, (int) ji(job, "fault"), "scripted failure");
                return;
        }
        if (strcmp(verb, "Volume.create") == 0) {
                v = vol_get(d, js(p, "storagedomainID"), js(p, "volumeID"));
                if (v)
                        json_object_set_new(v, "legality", json_string("LEGAL"));
        } else if (strcmp(verb, "Volume.delete") == 0) {
                v = vol_get(d, js(p, "storagedomainID"), js(p, "volumeID"));
                if (!v) {
                        job_fail(job, FY_ERR_VOLUME_DOES_NOT_EXIST, "no such volume");
                        return;
                }
                vol_delete(d, v);
        } else if (strcmp(verb, "Image.delete") == 0) {
                g_autoptr(GPtrArray) gone = g_ptr_array_new();
                const char *k;

                json_object_foreach(section(d, "vols", false), k, v)
                        if (strcmp(js(v, "sd"), js(p, "storagedomainID")) == 0 && strcmp(js(v, "img"), js(p, "imageID")) == 0)
                                g_ptr_array_add(gone, v);
                if (gone->len == 0) {
                        job_fail(job, FY_ERR_IMAGE_DOES_NOT_EXIST, "no such image");
                        return;
                }
                for (guint i = 0; i < gone->len; i++) {
                        g_autofree char *gk = vol_key(js(gone->pdata[i], "sd"), js(gone->pdata[i], "id"));

                        json_object_del(section(d, "vols", false), gk);
                }
        } else if (strcmp(verb, "SDM.copy_data") == 0) {
                json_t *src = json_object_get(p, "source"), *dst = json_object_get(p, "destination");
                json_t *sv = vol_get(d, js(src, "sd_id"), js(src, "vol_id"));
                g_autofree char *view = NULL;

                if (!sv || strcmp(js(sv, "legality"), "LEGAL") != 0) {
                        job_fail(job, FY_ERR_ILLEGAL_VOLUME, "source missing or ILLEGAL");
                        return;
                }
                if (!(v = guarded(d, job, js(dst, "sd_id"), js(dst, "vol_id"), json_object_get(dst, "generation"))))
                        return;
                /* A destination without parent takes the source's chain collapsed; a layer, the layer. */
                view = strcmp(js(v, "parent"), FY_ZERO_UUID) == 0 ? vol_view(d, sv) : g_strdup(js(sv, "own"));
                if (json_is_true(json_object_get(job, "corrupt"))) {
                        /* Done and LEGAL, but what it wrote differs from the source: only a checksum tells. */
                        char *bad = g_strconcat(view, "~corrupt", NULL);

                        g_free(view);
                        view = bad;
                }
                json_object_set_new(v, "own", json_string(view));
                /* A copy rewrites the destination: its tail is what this copy leaves. */
                json_object_del(v, "tail");
                json_object_del(v, "tail_dirty");
                if (json_is_true(json_object_get(job, "bigger")) || json_is_true(json_object_get(job, "bigger_dirty")))
                        json_object_set_new(v, "tail", json_true());   /* 4096 bytes past the source's size: zeros */
                if (json_is_true(json_object_get(job, "bigger_dirty")))
                        json_object_set_new(v, "tail_dirty", json_true());     /* … or not */
                set_done(v, ji(dst, "generation"));
        } else if (strcmp(verb, "SDM.merge") == 0) {
                json_t *s = json_object_get(p, "subchain_info");
                json_t *top = vol_get(d, js(s, "sd_id"), js(s, "top_id"));
                g_autofree char *own = NULL;

                if (!(v = guarded(d, job, js(s, "sd_id"), js(s, "base_id"), json_object_get(s, "base_generation"))))
                        return;
                if (!top) {
                        job_fail(job, FY_ERR_NOT_IN_CHAIN, "no top");
                        return;
                }
                own = g_strdup_printf("%s|%s", js(top, "own"), js(v, "own"));
                json_object_set_new(v, "own", json_string(own));
                set_done(v, ji(s, "base_generation"));
        } else if (strcmp(verb, "SDM.sparsify_volume") == 0) {
                json_t *s = json_object_get(p, "vol_info");

                if (!(v = guarded(d, job, js(s, "sd_id"), js(s, "vol_id"), json_object_get(s, "generation"))))
                        return;
                set_done(v, ji(s, "generation"));
        } else if (strcmp(verb, "SDM.update_volume") == 0) {
                json_t *s = json_object_get(p, "vol_info"), *a = json_object_get(p, "vol_attr");

                if (!(v = guarded(d, job, js(s, "sd_id"), js(s, "vol_id"), json_object_get(s, "generation"))))
                        return;
                if (json_object_get(a, "generation"))
                        json_object_set(v, "generation", json_object_get(a, "generation"));
                if (js(a, "legality"))
                        json_object_set(v, "legality", json_object_get(a, "legality"));
                if (js(a, "type"))
                        json_object_set(v, "voltype", json_object_get(a, "type"));
        } else if (strcmp(verb, "StoragePool.prepareMerge") == 0) {
                json_t *s = json_object_get(p, "subchainInfo");

                v = vol_get(d, js(s, "sd_id"), js(s, "base_id"));
                if (!v || !vol_get(d, js(s, "sd_id"), js(s, "top_id"))) {
                        job_fail(job, FY_ERR_NOT_IN_CHAIN, "not a subchain");
                        return;
                }
                json_object_set_new(v, "legality", json_string("ILLEGAL"));
        } else if (strcmp(verb, "StoragePool.finalizeMerge") == 0) {
                json_t *s = json_object_get(p, "subchainInfo");
                json_t *top = vol_get(d, js(s, "sd_id"), js(s, "top_id"));
                const char *k;
                json_t *c;

                v = vol_get(d, js(s, "sd_id"), js(s, "base_id"));
                if (!v || !top || strcmp(js(v, "legality"), "LEGAL") != 0 ||
                    ji(v, "generation") != ji(s, "base_generation")) {
                        job_fail(job, FY_ERR_MERGE, "base not merged");
                        return;
                }
                json_object_set_new(top, "legality", json_string("ILLEGAL"));
                json_object_foreach(section(d, "vols", false), k, c)
                        if (strcmp(js(c, "sd"), js(s, "sd_id")) == 0 && strcmp(js(c, "parent"), js(s, "top_id")) == 0)
                                json_object_set(c, "parent", json_object_get(s, "base_id"));
        } else if (strcmp(verb, "Volume.checksum") == 0) {
                g_autofree char *view = NULL;
                g_autofree char *sum = NULL;

                v = vol_get(d, js(p, "sd_id"), js(p, "vol_id"));
                if (!v) {
                        job_fail(job, FY_ERR_VOLUME_DOES_NOT_EXIST, "no such volume");
                        return;
                }
                if (json_object_get(p, "generation") && ji(p, "generation") != ji(v, "generation")) {
                        job_fail(job, FY_ERR_GENERATION_MISMATCH, "generation mismatch");
                        return;
                }
                view = vol_view(d, v);
                /* A volume with a zero tail is bigger than its view by 4096 bytes; a prefix of the view's size
                 * hashes as the view, and its tail reads as zeros. An agent without length hashes it all. */
                {
                        bool tail = json_is_true(json_object_get(v, "tail"));
                        bool dirty = json_is_true(json_object_get(v, "tail_dirty"));
                        gint64 vsize = ji(v, "capacity") + (tail ? 4096 : 0);
                        gint64 length = ji(p, "length");

                        if (length > 0 && !json_is_true(json_object_get(job, "no_length"))) {
                                g_autofree char *cut = length == ji(v, "capacity") ? g_strdup(view) :
                                                       g_strdup_printf("%s@%" G_GINT64_FORMAT, view, length);

                                if (length > vsize) {
                                        job_fail(job, FY_ERR_INVALID_PARAMS, "length beyond the virtual size");
                                        return;
                                }
                                sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, cut, -1);
                                json_object_set_new(job, "result", json_pack("{s:s, s:I, s:I, s:b, s:I}", "checksum", sum,
                                                                             "size", length, "virtual_size", vsize,
                                                                             "tail_zero", !dirty, "generation",
                                                                             ji(v, "generation")));
                        } else if (tail) {
                                g_autofree char *whole = g_strconcat(view, dirty ? "+dirt" : "+zeros", NULL);

                                sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, whole, -1);
                                json_object_set_new(job, "result", json_pack("{s:s, s:I, s:I}", "checksum", sum,
                                                                             "size", vsize, "generation", ji(v, "generation")));
                        } else {
                                sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, view, -1);
                                json_object_set_new(job, "result", json_pack("{s:s, s:I, s:I}", "checksum", sum,
                                                                             "size", ji(v, "capacity"),
                                                                             "generation", ji(v, "generation")));
                        }
                }
        }
        json_object_set_new(job, "status", json_string("done"));
}

void hd_tick(struct hd *d)
{
        g_autoptr(GPtrArray) ended = g_ptr_array_new();
        const char *id;
        json_t *job;

        json_object_foreach(section(d, "jobs", false), id, job)
                if (strcmp(js(job, "status"), "running") == 0 && !host_down(d, js(job, "host")) &&
                    !json_is_true(json_object_get(job, "hang"))) {
                        job_run(d, job);
                        g_ptr_array_add(ended, job);
                }
        for (guint i = 0; d->e && i < ended->len; i++) {
                g_autofree char *method = g_strdup_printf("|jobs|status|%s", js(ended->pdata[i], "id"));
                g_autoptr(json_t) info = job_info(ended->pdata[i]);

                engine_host_event(d->e, js(ended->pdata[i], "host"), method, info);
        }
}

/* ---- verbs ---- */

static bool is_spm(struct hd *d, const char *host)
{
        return g_strcmp0(js(d->m, "spm"), host) == 0;
}

/* Verbs that start a job (with a job_id), and whether only the SPM runs them. */
static const struct {
        const char *verb;
        bool spm;
} job_verbs[] = {
        { "Volume.create", true },
        { "Volume.delete", true },
        { "Image.delete", true },
        { "StoragePool.prepareMerge", true },
        { "StoragePool.finalizeMerge", true },
        { "SDM.copy_data", false },
        { "SDM.merge", false },
        { "SDM.sparsify_volume", false },
        { "SDM.update_volume", false },
        { "Volume.checksum", false },
};

/* A job verb: checks, creates the job (running); an error code, or 0. */
static int job_start(struct hd *d, const char *host, const char *verb, json_t *p, const char *fault, int code)
{
        const char *id = js(p, "job_id");
        bool spm_only = false;

        for (size_t i = 0; i < G_N_ELEMENTS(job_verbs); i++)
                if (strcmp(job_verbs[i].verb, verb) == 0)
                        spm_only = job_verbs[i].spm;
        if (!id)
                return FY_ERR_INVALID_PARAMS;
        if (json_object_get(section(d, "jobs", false), id))
                return FY_ERR_JOB_EXISTS;
        if (spm_only && !is_spm(d, host))
                return FY_ERR_SPM_REQUIRED;
        if (d->recorded && !d->recorded(d->recorded_data, id))
                json_array_append_new(section(d, "violations", true),
                                      json_sprintf("%s job %s sent to %s before the store recorded it", verb, id, host));
        if (strcmp(verb, "Volume.create") == 0) {
                const char *sd = js(p, "storagedomainID");
                const char *parent = js(p, "srcVolUUID");
                json_t *pv = NULL;
                g_autofree char *k = vol_key(sd, js(p, "volumeID"));

                if (vol_get(d, sd, js(p, "volumeID")))
                        return FY_ERR_VOLUME_ALREADY_EXISTS;
                if (strcmp(parent, FY_ZERO_UUID) != 0 && !(pv = vol_get(d, sd, parent)))
                        return FY_ERR_VOLUME_DOES_NOT_EXIST;
                if (pv && strcmp(js(pv, "img"), js(p, "imageID")) == 0)
                        json_object_set_new(pv, "voltype", json_string("INTERNAL"));
                json_object_set_new(section(d, "vols", false), k,
                                    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s}",
                                              "id", js(p, "volumeID"), "sd", sd, "img", js(p, "imageID"),
                                              "parent", parent, "format", js(p, "volFormat"), "voltype", "LEAF",
                                              "legality", "ILLEGAL", "capacity", (json_int_t) g_ascii_strtoll(js(p, "size"), NULL, 10),
                                              "generation", (json_int_t) 0, "own", pv ? "" : "zeros"));
        }
        job_new(d, host, verb, id, p, fault, code);
        return 0;
}

static json_t *host_stats(struct hd *d, const char *host)
{
        gint64 running = 0;
        const char *id;
        json_t *job;

        json_object_foreach(section(d, "jobs", false), id, job)
                running += strcmp(js(job, "host"), host) == 0 && strcmp(js(job, "status"), "running") == 0;
        return json_pack("{s:b, s:I, s:i, s:i, s:f, s:f, s:i}", "spm", is_spm(d, host), "jobs_running", (json_int_t) running,
                         "jobs_pending", 0, "job_limit", (int) job_limit(d), "cpuLoad", 0.0, "copy_rate", 0.0, "copy_rate_limit", 0);
}

static void hd_call(void *userdata, const char *host, const char *method, json_t *params,
                    fy_rpc_client_reply_fn cb, void *cb_data)
{
        struct hd *d = userdata;
        g_autoptr(json_t) p = params ? params : json_object();
        json_t *calls = section(d, "calls", false);
        const char *fault;
        int code = 0;
        json_t *v;

        json_object_set_new(calls, method, json_integer(ji(calls, method) + 1));
        if (host_down(d, host)) {
                answer_lost(d, cb, cb_data);
                return;
        }
        fault = take_fault(d, method, host, p, &code);
        if (fault && strcmp(fault, "down") == 0) {
                /* The host takes the call and dies: its job never ends, it answers nothing more. */
                json_object_set_new(section(d, "down", false), host, json_true());
                for (size_t i = 0; i < G_N_ELEMENTS(job_verbs); i++)
                        if (strcmp(job_verbs[i].verb, method) == 0)
                                (void) job_start(d, host, method, p, NULL, 0);
                answer_lost(d, cb, cb_data);
                return;
        }
        if (fault && strcmp(fault, "refuse") == 0) {
                answer(d, cb, cb_data, NULL, code, "scripted refusal");
                return;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(job_verbs); i++)
                if (strcmp(job_verbs[i].verb, method) == 0) {
                        int r = job_start(d, host, method, p, fault, code);

                        answer(d, cb, cb_data, r ? NULL : json_true(), r, "refused by the double");
                        return;
                }
        if (strcmp(method, "Host.getStats") == 0) {
                answer(d, cb, cb_data, host_stats(d, host), 0, NULL);
        } else if (strcmp(method, "StoragePool.connect") == 0) {
                answer(d, cb, cb_data, json_true(), 0, NULL);
        } else if (strcmp(method, "StoragePool.spmStart") == 0) {
                if (js(d->m, "spm") && !is_spm(d, host) && !host_down(d, js(d->m, "spm"))) {
                        answer(d, cb, cb_data, NULL, FY_ERR_SPM_ACQUIRE, "the SPM lease is held");
                        return;
                }
                json_object_set_new(d->m, "spm", json_string(host));
                json_object_set_new(d->m, "lver", json_integer(ji(d->m, "lver") + 1));
                answer(d, cb, cb_data, json_pack("{s:I}", "spmLver", ji(d->m, "lver")), 0, NULL);
        } else if (strcmp(method, "StorageDomain.create") == 0) {
                json_object_set_new(section(d, "sds", false), js(p, "storagedomainID"), json_pack("{s:s}", "name", js(p, "name")));
                answer(d, cb, cb_data, json_true(), 0, NULL);
        } else if (strcmp(method, "StorageDomain.getStats") == 0) {
                answer(d, cb, cb_data, json_pack("{s:I, s:I, s:I}", "disktotal", (json_int_t) 1 << 40,
                                                 "diskfree", (json_int_t) 1 << 40, "max_file_size", (json_int_t) 1 << 50), 0, NULL);
        } else if (strcmp(method, "StorageDomain.getVolumes") == 0) {
                json_t *r = json_object();
                const char *k;

                json_object_foreach(section(d, "vols", false), k, v) {
                        if (strcmp(js(v, "sd"), js(p, "storagedomainID")) != 0)
                                continue;
                        if (!json_object_get(r, js(v, "img")))
                                json_object_set_new(r, js(v, "img"), json_array());
                        json_array_append_new(json_object_get(r, js(v, "img")), json_string(js(v, "id")));
                }
                if (js(p, "imageID")) {
                        json_t *one = json_incref(json_object_get(r, js(p, "imageID")));

                        json_decref(r);
                        answer(d, cb, cb_data, one, FY_ERR_IMAGE_DOES_NOT_EXIST, "no such image");
                } else {
                        answer(d, cb, cb_data, r, 0, NULL);
                }
        } else if (strcmp(method, "Volume.getInfo") == 0) {
                bool image = false;
                const char *k;
                json_t *o;

                v = vol_get(d, js(p, "storagedomainID"), js(p, "volumeID"));
                /* As the agent: no image folder (no volume of the image there) is 268, not 201. */
                json_object_foreach(section(d, "vols", false), k, o)
                        image |= strcmp(js(o, "sd"), js(p, "storagedomainID")) == 0 &&
                                 g_strcmp0(js(o, "img"), js(p, "imageID")) == 0;
                if (v)
                        answer(d, cb, cb_data, vol_info(d, v), 0, NULL);
                else if (!image)
                        answer(d, cb, cb_data, NULL, FY_ERR_IMAGE_DOES_NOT_EXIST, "no such image");
                else
                        answer(d, cb, cb_data, NULL, FY_ERR_VOLUME_DOES_NOT_EXIST, "no such volume");
        } else if (strcmp(method, "Host.getJobs") == 0) {
                json_t *r = json_object();
                size_t i;
                json_t *id;

                json_array_foreach(json_object_get(p, "job_ids"), i, id) {
                        json_t *job = json_object_get(section(d, "jobs", false), json_string_value(id));

                        if (job && strcmp(js(job, "host"), host) == 0)
                                json_object_set_new(r, js(job, "id"), job_info(job));
                }
                answer(d, cb, cb_data, r, 0, NULL);
        } else if (strcmp(method, "Job.abort") == 0) {
                json_t *job = json_object_get(section(d, "jobs", false), js(p, "job_id"));

                if (!job || strcmp(js(job, "host"), host) != 0) {
                        answer(d, cb, cb_data, NULL, FY_ERR_NO_SUCH_JOB, "no such job");
                        return;
                }
                if (strcmp(js(job, "status"), "running") == 0)
                        job_fail(job, FY_ERR_ABORTED, "aborted");
                answer(d, cb, cb_data, json_true(), 0, NULL);
        } else {
                answer(d, cb, cb_data, NULL, FY_ERR_METHOD_NOT_FOUND, "the double does not know this verb");
        }
}

const struct engine_host_transport *hd_transport(struct hd *d)
{
        d->transport.call = hd_call;
        return &d->transport;
}

void hd_attach(struct hd *d, struct engine *e, hd_recorded_fn recorded, void *data)
{
        d->e = e;
        d->recorded = recorded;
        d->recorded_data = data;
}
