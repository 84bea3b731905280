/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The verification of a finished copy (issue 16), part of the leaf
 * "a job on a host" (flows/job.c).
 *
 * A copy whose job ended done is not declared done yet: the source and the
 * destination are hashed (Volume.checksum, the guest-visible content), the
 * destination on another host than the copier where one is up, so the check
 * is an independent read. data.verify records both sides (host, agent job,
 * generation, digest once known) before any checksum is sent; a restart
 * finds it and the next round asks the hosts about those jobs (a job the
 * host does not know is sent, again with the same id: JOB_EXISTS means it
 * arrived). Equal digests: done, the step records verified and the digest.
 * Different: the destination is marked ILLEGAL and the copy is tried again
 * (copy_attempts). A checksum job that fails or whose host is lost is tried
 * again on another host, VERIFY_TRIES times per side; so is a destination
 * hash its host could not make as asked (an agent without Volume.checksum's
 * length), which is no difference: after VERIFY_TRIES the step fails
 * unverified and nothing is copied again.
 */
#include <errno.h>
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/leaf.h"
#include "generation.h"
#include "hosts.h"
#include "scheduler.h"
#include "error.h"
#include "uuid.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define VERIFY_TRIES 3

static const char *const verify_sides[] = { "src", "dst" };

static void verify_send(struct engine *e, json_t *cmd, json_t *data);
enum below { BELOW_WAIT, BELOW_READY, BELOW_FAILED };
static enum below verify_below_ready(struct engine *e, json_t *cmd);
static void on_checksum_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra);

static json_t *checksum_params(json_t *ep, const char *job_id, gint64 generation, gint64 length)
{
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", job_id, "sd_id", js(ep, "sd"),
                              "img_id", js(ep, "img"), "vol_id", js(ep, "vol"), "algorithm", "blake2b");

        if (generation >= 0)
                json_object_set_new(o, "generation", json_integer(generation));
        if (length > 0)
                json_object_set_new(o, "length", json_integer(length));
        return o;
}

static json_t *verify_side_new(const char *host, gint64 generation)
{
        g_autofree char *job = fy_uuid_new();
        json_t *s = json_pack("{s:s, s:s, s:i}", "host", host, "job", job, "tries", 1);

        if (generation >= 0)
                json_object_set_new(s, "generation", json_integer(generation));
        return s;
}

/* Starts verification of a copy whose job is done (data: the command's, as it is to be saved); false when
 * it is off for this copy. */
bool leaf_verify_begin(struct engine *e, json_t *cmd, json_t *data)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autofree char *dst_host = NULL;
        const char *copier = js(cmd, "host");

        /* Only a copy has a source to compare with: a merge or sparsify changes its volume in place
         * (its params have no "src"; a checksum of nothing failed every merge). */
        if (!e->config.verify_copies || engine_cmd_kind(cmd) != ENGINE_KIND_COPY_DATA ||
            json_is_false(json_object_get(p, "verify")))
                return false;
        dst_host = leaf_other_usable_host(e, copier);
        if (!dst_host)
                dst_host = g_strdup(copier);   /* the only host up: still catches a bad write, not a bad read */
        json_object_set_new(data, "verify", json_pack("{s:o, s:o}",
                                                      "src", verify_side_new(leaf_host_is_up(e, copier) ? copier : dst_host, -1),
                                                      "dst", verify_side_new(dst_host, engine_generation_done(ji(cmd, "generation")))));
        engine_event(e, "normal", js(cmd, "id"), "copy of volume %s done on host %s; verifying: source on host %s, "
                     "destination on host %s", js(json_object_get(p, "src"), "vol"), copier,
                     js(json_object_get(json_object_get(data, "verify"), "src"), "host"), dst_host);
        verify_send(e, cmd, data);     /* recorded before any checksum is sent */
        return true;
}

/*
 * The side's checksum failed or its host is gone: another host that is up,
 * a bounded number of times. Never a host that is not up (connecting after
 * an engine restart, or lost): with none up but the side's own, that one
 * again; with none up at all, the side waits without spending a try, at
 * most host_lost_timeout (test-flows: a dead host shown "connecting" after a
 * restart used up the three tries at once and failed a good copy).
 */
static void verify_side_retry(struct engine *e, json_t *cmd, json_t *data, const char *side, const char *why)
{
        json_t *v = json_object_get(data, "verify");
        json_t *s = json_object_get(v, side);
        g_autofree char *host = leaf_other_usable_host(e, js(s, "host"));
        g_autofree char *job = fy_uuid_new();
        const char *noun = strcmp(side, "src") == 0 ? "source" : "destination";

        if (ji(s, "tries") >= VERIFY_TRIES) {
                g_autofree char *msg = g_strdup_printf("the copy could not be verified: checksum of the %s failed %d times (%s)",
                                                       noun, VERIFY_TRIES, why);

                leaf_finish(e, cmd, false, msg);
                return;
        }
        if (!host && leaf_host_is_up(e, js(s, "host")))
                host = g_strdup(js(s, "host"));
        if (!host) {
                if (!json_object_get(s, "wait_since"))
                        json_object_set_new(s, "wait_since", json_integer(engine_now()));
                if (engine_now() - ji(s, "wait_since") > (gint64) e->config.host_lost_timeout) {
                        g_autofree char *msg = g_strdup_printf("the copy could not be verified: no host was up to read the "
                                                               "%s for %u s (%s)", noun, e->config.host_lost_timeout, why);

                        leaf_finish(e, cmd, false, msg);
                        return;
                }
                leaf_later(e, cmd, data, 5);   /* no try spent: nobody could make one */
                return;
        }
        engine_event(e, "warning", js(cmd, "id"), "checksum of the %s on host %s: %s; trying again on host %s",
                     side, js(s, "host"), why, host);
        json_object_set_new(s, "host", json_string(host));
        json_object_set_new(s, "job", json_string(job));
        json_object_set_new(s, "tries", json_integer(ji(s, "tries") + 1));
        json_object_del(s, "sent");
        json_object_del(s, "wait_since");
        leaf_later(e, cmd, data, 1);
}

/*
 * A mismatch: the destination is marked ILLEGAL on storage (nothing uses
 * it, and its checksum is refused, until a copy is done) before the copy
 * is tried again. The mark is an agent job (SDM.update_volume), sent
 * through another usable host than the copier where one is up (the copier
 * wrote what differs, and may be dying), like the destination's checksum.
 * data.mark_job {host, job, tries} is recorded before it is sent: a
 * restart asks that host about that job (Host.getJobs) and sends it again,
 * with the same id, only when the host does not know it (JOB_EXISTS: it
 * arrived). A marker host that is not up for host_lost_timeout is given up
 * for another one (the mark is idempotent and guarded by the generation,
 * so a late run of the first one does no harm). Its end, done or failed
 * (the retry's copy marks the destination ILLEGAL itself before it
 * writes), lets the copy be tried again. So does a mark that has not ended
 * host_lost_timeout after it was recorded (data.mark_job.sent_at, engine
 * clock) while its host is up: a metadata job that long is stuck, and it
 * must not hold the copy for ever; it gets Job.abort, and its aborted end
 * (or, failing that, host_lost_timeout more) lets the copy be tried again.
 *
 *   mismatch ── record mark_job ──> SDM.update_volume ── ended ──> retry the copy
 *                                      │ host not up for host_lost_timeout
 *                                      │   └──> record a new mark_job on another host, send it
 *                                      │ up, not ended host_lost_timeout after sent_at
 *                                      └──> record abort_since, Job.abort ── ended (or timeout) ──> retry the copy
 */
#define MARK_TRIES 3

static char *mismatch_why(json_t *data)
{
        json_t *v = json_object_get(data, "verify");
        json_t *d = json_object_get(v, "dst");

        if (g_strcmp0(js(json_object_get(v, "src"), "checksum"), js(d, "checksum")) == 0)
                return g_strdup_printf("checksum mismatch: the destination's first %" G_GINT64_FORMAT " bytes match the "
                                       "source (%s) but what follows them is not zeros", ji(d, "length"), js(d, "checksum"));
        return g_strdup_printf("checksum mismatch: source %s, destination %s", js(json_object_get(v, "src"), "checksum"),
                               js(d, "checksum"));
}

/* The mark's host: a usable host that is neither the copier nor `not` where there is one, else the copier if up. */
static char *mark_host_pick(struct engine *e, const char *copier, const char *not)
{
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);

        for (guint i = 0; i < hosts->len; i++)
                if (g_strcmp0(hosts->pdata[i], copier) != 0 && g_strcmp0(hosts->pdata[i], not) != 0)
                        return g_strdup(hosts->pdata[i]);
        if (g_strcmp0(copier, not) != 0 && leaf_host_is_up(e, copier))
                return g_strdup(copier);
        return NULL;
}

/* The mark's outcome is known (its job ended, or its host refused it): the copy is tried again. */
static void mark_ended(struct engine *e, json_t *cmd, json_t *data, const char *failure)
{
        g_autofree char *why = mismatch_why(data);

        if (failure)
                g_message("marking the destination of %s ILLEGAL: %s", js(cmd, "id"), failure);
        /* The retry rewrites the destination from scratch at the generation it finds. */
        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, true);
}

static void on_mark_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = NULL;

        if (!error || engine_is_transport_error(error) || error->code == FY_ERR_JOB_EXISTS) {
                engine_kick(e);
                return;        /* watched (or asked about) next round */
        }
        data = jparse(cmd, "data");
        if (!json_object_get(data, "mark_job"))
                return;        /* this answer came late */
        mark_ended(e, cmd, data, error->message);
}

static void mark_send(struct engine *e, json_t *cmd, json_t *m)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *dst = json_object_get(p, "dst");
        g_autofree char *key = g_strdup_printf("%s/mark", js(cmd, "id"));

        leaf_poll_start(key);          /* asked about at its end event, or after poll_interval */
        engine_cmd_call(e, cmd, js(m, "host"), "SDM.update_volume",
                 json_pack("{s:s, s:{s:s, s:s, s:s, s:I}, s:{s:s}}", "job_id", js(m, "job"),
                           "vol_info", "sd_id", js(dst, "sd"), "img_id", js(dst, "img"), "vol_id", js(dst, "vol"),
                           "generation", (json_int_t) ji(m, "generation"),
                           "vol_attr", "legality", "ILLEGAL"),
                 e->config.host_timeout, on_mark_sent, NULL, NULL);
}

/* Records a new mark on host (before it is sent), then sends it. */
static void mark_start(struct engine *e, json_t *cmd, json_t *data, const char *host, gint64 tries)
{
        json_t *d = json_object_get(json_object_get(data, "verify"), "dst");
        g_autofree char *job = fy_uuid_new();
        json_t *m = json_pack("{s:s, s:s, s:I, s:I, s:I}", "host", host, "job", job, "tries", (json_int_t) tries,
                              "generation", (json_int_t) ji(d, "generation"), "sent_at", (json_int_t) engine_now());

        json_object_set_new(data, "mark_job", m);
        if (leaf_save(e, cmd, data) < 0)
                return;        /* not recorded: not sent either; next round */
        mark_send(e, cmd, m);
}

static void on_mark_abort_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        if (error)
                g_message("abort of the ILLEGAL mark of %s: %s", js(cmd, "id"), error->message);
}

/*
 * The mark's host is up but its job has not ended within host_lost_timeout
 * of being sent: it gets Job.abort (recorded first as abort_since, sent
 * again every 30 s: an abort lost with an engine restart must not leave it
 * holding the volume), and its "aborted" end lets the copy be tried again
 * (on_mark_jobs). A job that does not end host_lost_timeout after that is
 * given up too: the retry's copy marks the destination itself. true when the
 * command went on or a record was refused: nothing more of it this round.
 */
#define MARK_ABORT_RESEND 30

static bool mark_overdue(struct engine *e, json_t *cmd, json_t *data, json_t *m)
{
        gint64 now = engine_now();
        g_autofree char *why = NULL;

        if (!json_is_integer(json_object_get(m, "sent_at"))) {
                /* Recorded before marks had a deadline: its clock starts now. */
                json_object_set_new(m, "sent_at", json_integer(now));
                return leaf_save(e, cmd, data) < 0;
        }
        if (now - ji(m, "sent_at") <= (gint64) e->config.host_lost_timeout)
                return false;
        why = g_strdup_printf("job %s on host %s did not end within %u s", js(m, "job"), js(m, "host"),
                              e->config.host_lost_timeout);
        if (!json_is_integer(json_object_get(m, "abort_since"))) {
                json_object_set_new(m, "abort_since", json_integer(now));
                json_object_set_new(m, "abort_at", json_integer(now));
                if (leaf_save(e, cmd, data) < 0)
                        return true;   /* not recorded: not sent either; next round */
                engine_event(e, "warning", js(cmd, "id"), "marking the destination ILLEGAL: %s; aborting it", why);
        } else if (now - ji(m, "abort_since") > (gint64) e->config.host_lost_timeout) {
                g_autofree char *gave_up = g_strdup_printf("%s, nor %u s after Job.abort", why, e->config.host_lost_timeout);

                mark_ended(e, cmd, data, gave_up);
                return true;
        } else if (now - ji(m, "abort_at") >= MARK_ABORT_RESEND) {
                json_object_set_new(m, "abort_at", json_integer(now));
                if (leaf_save(e, cmd, data) < 0)
                        return true;
        } else
                return false;  /* aborting: its end is polled for */
        engine_cmd_call(e, cmd, js(m, "host"), "Job.abort", json_pack("{s:s}", "job_id", js(m, "job")),
                        e->config.host_timeout, on_mark_abort_sent, NULL, NULL);
        return false;
}

static void on_mark_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *m = json_object_get(data, "mark_job");
        json_t *job;

        if (!m || error)
                return;        /* a late answer; or no answer: its host is watched next round */
        job = json_object_get(result, js(m, "job"));
        if (!job) {
                /* Recorded, then the engine restarted before (or while) sending it, or the agent restarted:
                 * the same job again (JOB_EXISTS if it did arrive meanwhile). */
                mark_send(e, cmd, m);
                return;
        }
        if (g_strcmp0(js(job, "status"), "done") == 0)
                mark_ended(e, cmd, data, NULL);
        else if (g_strcmp0(js(job, "status"), "failed") == 0 || g_strcmp0(js(job, "status"), "aborted") == 0)
                mark_ended(e, cmd, data, js(json_object_get(job, "error"), "message") ?
                                                 js(json_object_get(job, "error"), "message") : "the job failed");
}

static void verify_mismatch(struct engine *e, json_t *cmd, json_t *data)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *m = json_object_get(data, "mark_job");
        g_autofree char *key = g_strdup_printf("%s/mark", js(cmd, "id"));
        g_autoptr(json_t) ended = NULL;

        if (!json_is_true(json_object_get(data, "mismatch"))) {
                json_t *v = json_object_get(data, "verify");

                json_object_set_new(data, "mismatch", json_true());
                if (leaf_save(e, cmd, data) < 0)
                        return;        /* not recorded: the ILLEGAL mark is not sent either; next round */
                engine_event(e, "warning", js(cmd, "id"), "copy of volume %s: the destination's checksum %s differs from the "
                             "source's %s; marking it ILLEGAL and copying again", js(json_object_get(p, "src"), "vol"),
                             js(json_object_get(v, "dst"), "checksum"), js(json_object_get(v, "src"), "checksum"));
        }
        if (!m) {
                g_autofree char *host = mark_host_pick(e, js(cmd, "host"), NULL);

                if (!host)
                        return;        /* no host up: the retry could not copy either; each round looks again */
                mark_start(e, cmd, data, host, 1);
                return;
        }
        ended = json_incref(engine_job_end(js(m, "job"), js(m, "host")));
        if (ended) {
                g_autoptr(json_t) answer = json_pack("{s:O}", js(m, "job"), ended);

                engine_job_end_forget(js(m, "job"));
                on_mark_jobs(e, cmd, answer, NULL, NULL);
                return;
        }
        if (!leaf_host_is_up(e, js(m, "host"))) {
                /* Connecting after a restart, or lost: given up for another host after host_lost_timeout. */
                g_autofree char *host = NULL;

                if (!json_object_get(m, "lost_since")) {
                        json_object_set_new(m, "lost_since", json_integer(engine_now()));
                        if (leaf_save(e, cmd, data) < 0)
                                return;        /* logged; its clock starts next round */
                        return;
                }
                if (engine_now() - ji(m, "lost_since") <= (gint64) e->config.host_lost_timeout)
                        return;        /* it may come back with the mark done */
                host = mark_host_pick(e, js(cmd, "host"), js(m, "host"));
                if (!host)
                        return;        /* nobody to mark it through yet */
                if (ji(m, "tries") >= MARK_TRIES) {
                        /* Hosts keep dying under it: the retry's copy marks the destination itself. */
                        mark_ended(e, cmd, data, "its hosts were lost");
                        return;
                }
                engine_event(e, "warning", js(cmd, "id"), "marking the destination ILLEGAL: host %s is not up for %u s; "
                             "marking it through host %s", js(m, "host"), e->config.host_lost_timeout, host);
                mark_start(e, cmd, data, host, ji(m, "tries") + 1);
                return;
        }
        if (json_object_get(m, "lost_since")) {
                json_object_del(m, "lost_since");      /* back: its clock starts again if it goes */
                if (leaf_save(e, cmd, data) < 0)
                        return;
        }
        if (mark_overdue(e, cmd, data, m))
                return;
        if (!leaf_poll_due(e, key))
                return;
        engine_cmd_poll_job(e, cmd, js(m, "host"), js(m, "job"), on_mark_jobs, NULL);
}

/*
 * A destination bigger than its source (copy_data allows it) differs from
 * it as a whole even when the copy is right: its extra tail. It is hashed
 * again over the source's size (the source checksum's "size", recorded in
 * data.verify, so a restart keeps it) and is verified only when that prefix
 * matches and the agent says the rest reads as zeros. Redone once: a
 * destination with "length" whose prefix differs, or whose tail is not
 * zeros, is a mismatch; one whose agent did not honour length is unchecked
 * (verify_dst_verdict).
 */
static bool verify_dst_again_over_source_size(struct engine *e, json_t *cmd, json_t *data)
{
        json_t *v = json_object_get(data, "verify");
        json_t *s = json_object_get(v, "src"), *d = json_object_get(v, "dst");
        gint64 src_size = ji(s, "size");
        gint64 dst_size = json_is_integer(json_object_get(d, "virtual_size")) ? ji(d, "virtual_size") : ji(d, "size");
        g_autofree char *job = NULL;

        if (json_object_get(d, "length") || src_size <= 0 || dst_size <= src_size)
                return false;
        job = fy_uuid_new();
        json_object_set_new(d, "length", json_integer(src_size));
        json_object_set_new(d, "job", json_string(job));
        json_object_set_new(d, "tries", json_integer(1));     /* a new question: its own VERIFY_TRIES */
        json_object_del(d, "checksum");
        json_object_del(d, "sent");
        json_object_del(d, "size");
        json_object_del(d, "virtual_size");
        json_object_del(d, "tail_zero");
        json_object_del(d, "wait_since");
        if (leaf_save(e, cmd, data) < 0)
                return true;   /* logged; decided again from the first hash next round */
        engine_event(e, "normal", js(cmd, "id"), "the destination (%" G_GINT64_FORMAT " bytes) is bigger than the source "
                     "(%" G_GINT64_FORMAT " bytes): hashing its first %" G_GINT64_FORMAT " bytes on host %s",
                     dst_size, src_size, src_size, js(d, "host"));
        verify_send(e, cmd, data);     /* recorded (sent) before it is sent */
        return true;
}

/*
 * What the two digests say. A match: they agree over the same bytes, and a
 * destination hashed over a prefix is zeros beyond it. A mismatch: they
 * differ over the same bytes, or the agent says the tail is not zeros.
 * Unchecked: the destination's host could not answer the question asked —
 * an agent that ignored length hashed all of it (size tells), one without
 * tail_zero says nothing of the tail. That is no evidence against the copy:
 * another host is asked, and the copy is never made again for it.
 */
enum verdict { VERDICT_MATCH, VERDICT_MISMATCH, VERDICT_UNCHECKED };

static enum verdict verify_dst_verdict(json_t *v)
{
        json_t *d = json_object_get(v, "dst");
        bool same = g_strcmp0(js(json_object_get(v, "src"), "checksum"), js(d, "checksum")) == 0;

        if (!json_object_get(d, "length"))
                return same ? VERDICT_MATCH : VERDICT_MISMATCH;       /* whole against whole */
        if (ji(d, "size") != ji(d, "length"))
                return VERDICT_UNCHECKED;
        if (!same || json_is_false(json_object_get(d, "tail_zero")))
                return VERDICT_MISMATCH;
        return json_is_true(json_object_get(d, "tail_zero")) ? VERDICT_MATCH : VERDICT_UNCHECKED;
}

/* The destination's host cannot verify a prefix: another host, VERIFY_TRIES in all; then the copy step
 * fails as unverified (not copied again: every copy would end the same way). */
static void verify_dst_unchecked(struct engine *e, json_t *cmd, json_t *data)
{
        json_t *d = json_object_get(json_object_get(data, "verify"), "dst");
        g_autofree char *why = g_strdup_printf("the agent on host %s does not support Volume.checksum length: %s",
                                               js(d, "host"), ji(d, "size") != ji(d, "length") ?
                                               "it hashed another size than asked" : "its answer has no tail_zero");

        if (ji(d, "tries") >= VERIFY_TRIES) {
                g_autofree char *msg = g_strdup_printf("the copy could not be verified (%s; tried on %d hosts)", why,
                                                       VERIFY_TRIES);

                leaf_finish(e, cmd, false, msg);
                return;
        }
        json_object_del(d, "checksum");
        json_object_del(d, "size");
        json_object_del(d, "virtual_size");
        json_object_del(d, "tail_zero");
        verify_side_retry(e, cmd, data, "dst", why);   /* records the new side (no digest) before it is sent */
}

static void verify_decide(struct engine *e, json_t *cmd, json_t *data)
{
        json_t *v = json_object_get(data, "verify");
        const char *dst_sum = js(json_object_get(v, "dst"), "checksum");
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *dst = json_object_get(p, "dst");
        g_autoptr(GError) store_error = NULL;

        switch (verify_dst_verdict(v)) {
        case VERDICT_MISMATCH:
                if (verify_dst_again_over_source_size(e, cmd, data))
                        return;
                verify_mismatch(e, cmd, data);
                return;
        case VERDICT_UNCHECKED:
                verify_dst_unchecked(e, cmd, data);
                return;
        case VERDICT_MATCH:
                break;
        }
        if (engine_store_volume_set_legal(e->db, js(dst, "vol"), js(dst, "sd"),
                                          engine_generation_done(ji(cmd, "generation")), &store_error) < 0 ||
            engine_store_step_set_checksum(e->db, js(cmd, "step_id"), dst_sum, true, &store_error) < 0) {
                engine_not_recorded(&store_error, "the verified copy", js(cmd, "id"));
                return;        /* decided again next round */
        }
        engine_event(e, "normal", js(cmd, "id"), "copy of volume %s verified: blake2b %s", js(json_object_get(p, "src"), "vol"),
                     dst_sum);
        leaf_finish(e, cmd, true, NULL);
}

static void on_checksum_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *side = extra;
        g_autoptr(json_t) data = jparse(cmd, "data");

        if (!error || engine_is_transport_error(error) || error->code == FY_ERR_JOB_EXISTS) {
                engine_kick(e);
                return;        /* watched (or asked about) next round */
        }
        if (json_object_get(data, "verify"))
                verify_side_retry(e, cmd, data, side, error->message);
}

static void checksum_send(struct engine *e, json_t *cmd, json_t *p, json_t *s, const char *side)
{
        engine_cmd_call(e, cmd, js(s, "host"), "Volume.checksum",
                 checksum_params(json_object_get(p, side), js(s, "job"),
                                 json_is_integer(json_object_get(s, "generation")) ? ji(s, "generation") : -1,
                                 ji(s, "length")),
                 e->config.host_timeout, on_checksum_sent, (void *) side, NULL);
}

/*
 * A side's checksum job as its host reports it (its Host.getJobs entry or
 * its end event; NULL: the host does not know it). true when the command
 * went on (decided, retried, ended): nothing more of it this round.
 */
static bool verify_side_answer(struct engine *e, json_t *cmd, json_t *data, const char *side, json_t *job)
{
        json_t *v = json_object_get(data, "verify");
        json_t *s = json_object_get(v, side);

        if (!job) {
                /* Sent before a restart and lost with an agent restart (or never arrived): again. */
                g_autoptr(json_t) p = jparse(cmd, "params");

                checksum_send(e, cmd, p, s, side);
                return false;
        }
        if (g_strcmp0(js(job, "status"), "done") == 0) {
                json_t *res = json_object_get(job, "result");

                if (!js(res, "checksum") || strlen(js(res, "checksum")) > 256) {
                        verify_side_retry(e, cmd, data, side, "the host's checksum job has no usable result");
                        return true;
                }
                json_object_set_new(s, "checksum", json_string(js(res, "checksum")));
                /* What was hashed and what follows it: verify_decide compares sizes and a tail. */
                if (json_is_integer(json_object_get(res, "size")))
                        json_object_set_new(s, "size", json_integer(ji(res, "size")));
                if (json_is_integer(json_object_get(res, "virtual_size")))
                        json_object_set_new(s, "virtual_size", json_integer(ji(res, "virtual_size")));
                if (json_is_boolean(json_object_get(res, "tail_zero")))
                        json_object_set(s, "tail_zero", json_object_get(res, "tail_zero"));
                if (leaf_save(e, cmd, data) < 0)
                        return true;   /* logged; read from the job again next round */
                if (js(json_object_get(v, "src"), "checksum") && js(json_object_get(v, "dst"), "checksum")) {
                        verify_decide(e, cmd, data);
                        return true;
                }
        } else if (g_strcmp0(js(job, "status"), "failed") == 0 || g_strcmp0(js(job, "status"), "aborted") == 0) {
                json_t *err = json_object_get(job, "error");
                g_autofree char *why = g_strdup_printf("%s (code %" G_GINT64_FORMAT ")",
                                                       js(err, "message") ? js(err, "message") : "no message", ji(err, "code"));

                if (strcmp(side, "dst") == 0 && ji(err, "code") == FY_ERR_GENERATION_MISMATCH) {
                        /* Someone wrote the destination after this copy: what was copied is not there any more. */
                        leaf_retry_or_fail(e, cmd, e->config.copy_attempts, why, false);
                        return true;
                }
                verify_side_retry(e, cmd, data, side, why);
                return true;
        }
        return false;
}

static void on_verify_jobs(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *side = extra;
        g_autoptr(json_t) data = jparse(cmd, "data");
        json_t *s = json_object_get(json_object_get(data, "verify"), side);

        if (!s || json_is_true(json_object_get(data, "mismatch")) || js(s, "checksum"))
                return;        /* this round's answer came late */
        if (error) {
                /* A connecting host is decided by the monitor soon (leaf_verify_watch): not a failed try. */
                if (!leaf_host_is_up(e, js(s, "host")) && !leaf_host_status_is(e, js(s, "host"), "connecting"))
                        verify_side_retry(e, cmd, data, side, error->message);
                return;        /* asked again next round */
        }
        verify_side_answer(e, cmd, data, side, json_object_get(result, js(s, "job")));
}

/*
 * Sends the checksums not sent yet, once the layers below are verified:
 * "sent" is recorded first, so a side recorded as sent is asked about
 * (Host.getJobs) after a restart, and one that is not is simply sent.
 */
static void verify_send(struct engine *e, json_t *cmd, json_t *data)
{
        json_t *v = json_object_get(data, "verify");
        g_autoptr(json_t) p = NULL;
        bool send[G_N_ELEMENTS(verify_sides)] = { false };
        bool any = false;

        switch (verify_below_ready(e, cmd)) {
        case BELOW_FAILED:
                return;
        case BELOW_WAIT:
                /* The record (a new verification); sent when they are. Refused: logged, written next round. */
                if (leaf_save(e, cmd, data) < 0)
                        return;
                return;
        case BELOW_READY:
                break;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(verify_sides); i++) {
                json_t *s = json_object_get(v, verify_sides[i]);

                if (!js(s, "checksum") && !json_is_true(json_object_get(s, "sent"))) {
                        json_object_set_new(s, "sent", json_true());
                        send[i] = any = true;
                }
        }
        if (!any)
                return;
        if (leaf_save(e, cmd, data) < 0)
                return;        /* not recorded as sent: not sent; next round */
        p = jparse(cmd, "params");
        for (size_t i = 0; i < G_N_ELEMENTS(verify_sides); i++) {
                g_autofree char *key = g_strdup_printf("%s/%s", js(cmd, "id"), verify_sides[i]);

                if (!send[i])
                        continue;
                leaf_poll_start(key);  /* asked about at its end event, or after poll_interval */
                checksum_send(e, cmd, p, json_object_get(v, verify_sides[i]), verify_sides[i]);
        }
}

/* The copy of destination volume vol in this command's job failed (it is retried inside its command, so
 * a failed one is final). */
static bool below_copy_failed(json_t *copies, const char *vol)
{
        size_t i;
        json_t *row;

        json_array_foreach(copies, i, row) {
                g_autoptr(json_t) p = jparse(row, "params");

                if (g_strcmp0(js(json_object_get(p, "dst"), "vol"), vol) == 0 && g_strcmp0(js(row, "state"), "failed") == 0)
                        return true;
        }
        return false;
}

/*
 * A layer of a chain copied layer by layer: its checksum reads the chain
 * below it, so it is compared once the layers below are verified (LEGAL in
 * the inventory) — bottom up, each layer's guest view against the source's.
 * A layer below whose copy failed never becomes LEGAL: this one ends failed
 * too (BELOW_FAILED, the command finished), so the flow above ends and
 * cleans up instead of waiting for ever.
 */
static enum below verify_below_ready(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        json_t *below = json_object_get(p, "below");
        const char *sd = js(json_object_get(p, "dst"), "sd");
        g_autoptr(json_t) copies = NULL;

        for (size_t i = 0; i < json_array_size(below); i++) {
                const char *vol = json_string_value(json_array_get(below, i));
                g_autofree char *legality = engine_store_volume_legality(e->db, vol, sd, NULL);

                if (g_strcmp0(legality, "LEGAL") == 0)
                        continue;
                if (!copies && js(cmd, "job_id"))
                        copies = engine_store_cmd_list_of_job(e->db, js(cmd, "job_id"),
                                                              engine_kind_name(ENGINE_KIND_COPY_DATA), NULL);
                if (below_copy_failed(copies, vol)) {
                        g_autofree char *why = g_strdup_printf("the copy of volume %s below this layer failed; "
                                                               "this layer cannot be verified", vol);

                        leaf_finish(e, cmd, false, why);
                        return BELOW_FAILED;
                }
                engine_step_wait(e, js(cmd, "step_id"), "copied; verifying after the layers below it");
                return BELOW_WAIT;
        }
        return BELOW_READY;
}

void leaf_verify_watch(struct engine *e, json_t *cmd, json_t *data)
{
        json_t *v = json_object_get(data, "verify");

        if (ji(cmd, "cancel")) {
                leaf_finish(e, cmd, false, "cancelled");
                return;
        }
        if (json_is_true(json_object_get(data, "mismatch"))) {
                verify_mismatch(e, cmd, data);
                return;
        }
        if (verify_below_ready(e, cmd) != BELOW_READY)
                return;
        if (js(json_object_get(v, "src"), "checksum") && js(json_object_get(v, "dst"), "checksum")) {
                /* Both digests were recorded, the decision was not (a restart in between): decide now. */
                verify_decide(e, cmd, data);
                return;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(verify_sides); i++) {
                json_t *s = json_object_get(v, verify_sides[i]);

                if (js(s, "checksum"))
                        continue;
                if (!leaf_host_is_up(e, js(s, "host")) && !leaf_host_status_is(e, js(s, "host"), "connecting")) {
                        verify_side_retry(e, cmd, data, verify_sides[i], "the host is not up");
                        return;
                }
        }
        verify_send(e, cmd, data);     /* what is not sent yet (a retried side, upper layers now ready) */
        for (size_t i = 0; i < G_N_ELEMENTS(verify_sides); i++) {
                json_t *s = json_object_get(v, verify_sides[i]);
                g_autofree char *key = g_strdup_printf("%s/%s", js(cmd, "id"), verify_sides[i]);
                g_autoptr(json_t) ended = NULL;

                if (js(s, "checksum"))
                        continue;
                /* Like a copy's job: decided from its end event, else asked once per poll_interval. */
                ended = json_incref(engine_job_end(js(s, "job"), js(s, "host")));
                if (ended) {
                        engine_job_end_forget(js(s, "job"));
                        if (verify_side_answer(e, cmd, data, verify_sides[i], ended))
                                return;
                        continue;
                }
                if (!leaf_poll_due(e, key))
                        continue;
                engine_cmd_poll_job(e, cmd, js(s, "host"), js(s, "job"), on_verify_jobs, (void *) verify_sides[i]);
        }
}

/* checksum_volume (ferry disk checksum): Volume.checksum of the disk's active volume on any host up. */
void leaf_checksum_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *host = NULL;
        g_autofree char *job_id = NULL;

        if (ji(data, "next_try") > engine_now())
                return;
        host = engine_pick_copy_host(e, json_object_get(data, "exclude"));
        if (!host && json_array_size(json_object_get(data, "exclude")) > 0)
                host = engine_pick_copy_host(e, NULL);
        if (!host) {
                engine_step_wait(e, js(cmd, "step_id"), "waiting for a host");
                return;
        }
        job_id = leaf_mark_sent(e, cmd, host, ji(p, "generation"));
        if (!job_id)
                return;
        engine_step_update(e, js(cmd, "step_id"), "started", 0, host);
        engine_cmd_call(e, cmd, host, "Volume.checksum", checksum_params(p, job_id, ji(p, "generation"), 0),
                 e->config.host_timeout, leaf_on_sent, NULL, NULL);
}

