/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * verify_chain {sd, img, volumes: [{id, generation}]}: a read-only leaf
 * that a restore or a sparsify runs before it acts (flows/snapshot_restore.c,
 * flows/sparsify.c): Volume.getInfo of each volume through the SPM, one
 * after another.
 *
 *   volume i ── Volume.getInfo (SPM) ──► LEGAL at the recorded generation ──► volume i+1 … ──► done
 *       │                                 └─ ILLEGAL, or another generation ──► failed (nothing changed)
 *       └─ no answer: again in 2 s; VERIFY_ERRORS_MAX times ──► failed
 *
 * Nothing is written, so there is nothing to recover: a restart reads the
 * current volume again. The call is tied to the command (engine_cmd_call),
 * so the runtime skips the command while it is out.
 */
#include "clock.h"
#include "commands.h"
#include "flows/verify_chain.h"
#include "hosts.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

#define VERIFY_ERRORS_MAX 3            /* unanswered reads before the check fails */

/* One volume's answer: LEGAL at the generation the inventory records, else the restore must not act. */
static void verify_answer(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        size_t i = (size_t) ji(data, "index");
        json_t *v = json_array_get(json_object_get(p, "volumes"), i);
        g_autofree char *why = NULL;

        if (error || !json_is_object(result)) {
                gint64 errors = ji(data, "errors") + 1;

                if (errors >= VERIFY_ERRORS_MAX) {
                        why = g_strdup_printf("cannot read volume %s of disk %s on storage: %s", js(v, "id"), js(p, "img"),
                                              error ? error->message : "no answer");
                        engine_cmd_finish(e, cmd, false, why);
                        return;
                }
                json_object_set_new(data, "errors", json_integer(errors));
                json_object_set_new(data, "next_try", json_integer(engine_now() + 2));
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_NEW, data);
                engine_kick(e);
                return;
        }
        if (g_strcmp0(js(result, "legality"), "LEGAL") != 0)
                why = g_strdup_printf("volume %s of disk %s is %s on storage (a snapshot removal that failed part-way "
                                      "leaves its base so): nothing was changed; retry the removal of that snapshot",
                                      js(v, "id"), js(p, "img"), js(result, "legality") ? js(result, "legality") : "unknown");
        else if (json_is_integer(json_object_get(v, "generation")) &&
                 ji(result, "generation") != ji(v, "generation"))
                why = g_strdup_printf("volume %s of disk %s has generation %" G_GINT64_FORMAT " on storage, the inventory "
                                      "records %" G_GINT64_FORMAT " (changed behind the engine's back?): nothing was "
                                      "changed", js(v, "id"), js(p, "img"), ji(result, "generation"), ji(v, "generation"));
        if (why) {
                engine_cmd_finish(e, cmd, false, why);
                return;
        }
        if (i + 1 >= json_array_size(json_object_get(p, "volumes"))) {
                engine_cmd_finish(e, cmd, true, NULL);
                return;
        }
        json_object_set_new(data, "index", json_integer((json_int_t) i + 1));
        json_object_del(data, "errors");
        engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_NEW, data);
        engine_kick(e);        /* the next volume now, not at the next round */
}

static void verify_chain_advance(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autoptr(json_t) dc = NULL;
        g_autofree char *spm = NULL;
        json_t *v = json_array_get(json_object_get(p, "volumes"), (size_t) ji(data, "index"));

        if (ji(data, "next_try") > engine_now())
                return;
        if (!v) {
                engine_cmd_finish(e, cmd, true, NULL);        /* nothing to read */
                return;
        }
        spm = engine_spm_host(e);
        dc = engine_store_dc_spm(e->db, e->dc_id, NULL);
        if (!spm || !dc)
                return;        /* after the election */
        engine_step_update(e, js(cmd, "step_id"), "started", 0, spm);
        engine_cmd_call(e, cmd, spm, "Volume.getInfo",
                        json_pack("{s:s, s:s, s:s, s:s}", "storagepoolID", js(dc, "pool_id"), "storagedomainID",
                                  js(p, "sd"), "imageID", js(p, "img"), "volumeID", js(v, "id")),
                        e->config.host_timeout, verify_answer, NULL, NULL);
}

void engine_flow_verify_chain_init(void)
{
        engine_flow_register(ENGINE_KIND_VERIFY_CHAIN, verify_chain_advance, false);
}
