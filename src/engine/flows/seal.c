/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * seal_template_volume, a leaf of flows/job.c's runtime (where its states
 * are drawn) with a host choice and a decision of its own: a template's
 * volume marked SHARED (SDM.update_volume, under the volume's lease) on any
 * usable host but the SPM; when its host is lost or forgot the job, the
 * volume's type decides.
 *
 *   "" ── pick a host, record host and agent job ──► "sent" ── Host.getJobs / events ──► done
 *    ▲                                                  │ host lost / job forgotten
 *    │                                                  ▼
 *    └── not SHARED yet: marked again ◄── Volume.getInfo through any usable host ──► SHARED: done
 *        (the lost host excluded; SEAL_ATTEMPTS)
 */
#include "clock.h"
#include "commands.h"
#include "flows/leaf.h"
#include "hosts.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

/*
 * seal_template_volume {sd, img, vol}: SDM.update_volume type SHARED under
 * the volume's lease, on any usable host but the SPM (the SPM only when
 * alone), hosts that failed it before last.
 */
static char *seal_host(struct engine *e, json_t *exclude)
{
        g_autofree char *spm = engine_spm_host(e);
        g_autoptr(GPtrArray) hosts = engine_usable_hosts(e);
        const char *best = NULL;
        int best_rank = 4;

        for (guint i = 0; i < hosts->len; i++) {
                const char *h = hosts->pdata[i];
                bool excluded = false;
                size_t j;
                json_t *x;
                int rank;

                json_array_foreach(exclude, j, x)
                        excluded = excluded || g_strcmp0(json_string_value(x), h) == 0;
                rank = (excluded ? 2 : 0) + (g_strcmp0(h, spm) == 0 ? 1 : 0);
                if (rank < best_rank) {
                        best = h;
                        best_rank = rank;
                }
        }
        return g_strdup(best);
}

void leaf_seal_start(struct engine *e, json_t *cmd, json_t *p)
{
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *host = NULL;
        g_autofree char *job_id = NULL;

        if (ji(data, "next_try") > engine_now())
                return;
        host = seal_host(e, json_object_get(data, "exclude"));
        if (!host) {
                engine_step_wait(e, js(cmd, "step_id"), "waiting for a host");
                return;
        }
        job_id = leaf_mark_sent(e, cmd, host, -1);
        if (!job_id)
                return;
        engine_step_update(e, js(cmd, "step_id"), "started", 0, host);
        engine_cmd_call(e, cmd, host, "SDM.update_volume",
                        json_pack("{s:s, s:{s:s, s:s, s:s}, s:{s:s}}", "job_id", job_id,
                                  "vol_info", "sd_id", js(p, "sd"), "img_id", js(p, "img"), "vol_id", js(p, "vol"),
                                  "vol_attr", "type", "SHARED"),
                        SPM_CALL_TIMEOUT_MS, leaf_on_sent, NULL, NULL);
}

static void on_sealed_verify(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        const char *host = extra;

        if (engine_is_transport_error(error))
                return;        /* the next round asks again */
        if (error) {
                leaf_finish(e, cmd, false, error->message);    /* the volume is gone or unreadable */
                return;
        }
        if (g_strcmp0(js(result, "voltype"), "SHARED") == 0) {
                g_autoptr(json_t) done = json_pack("{s:s}", "status", "done");

                leaf_job_finished(e, cmd, done);
                return;
        }
        /* Marking it SHARED again is harmless: a job still running elsewhere writes the same. */
        leaf_retry_or_fail(e, cmd, SEAL_ATTEMPTS, "the volume is not SHARED yet; marking it again",
                           g_strcmp0(host, js(cmd, "host")) != 0);
}

/* seal_template_volume whose host is lost or forgot the job: the volume's type, read through any usable host, decides. */
void leaf_sealed_verify(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) dc = NULL;
        g_autofree char *host = leaf_host_is_up(e, js(cmd, "host")) ? g_strdup(js(cmd, "host"))
                                                                      : leaf_other_usable_host(e, NULL);

        if (!host) {
                g_autoptr(json_t) data = jparse(cmd, "data");

                leaf_later(e, cmd, data, 5);   /* nobody to read storage through yet */
                return;
        }
        dc = engine_store_dc_get(e->db, e->dc_id, NULL);
        /* The reply's copy of the host name is its own: C leaves the order of a call's arguments
         * open, so a g_steal_pointer(&host) beside `host` may empty it before the call reads it. */
        engine_cmd_call(e, cmd, host, "Volume.getInfo",
                 json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID", js(p, "sd"),
                           "imageID", js(p, "img"), "volumeID", js(p, "vol")),
                 e->config.host_timeout, on_sealed_verify, g_strdup(host), g_free);
}
