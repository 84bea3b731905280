/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Disk sparsify. The action (actions.c) locks the disk; the chain check is
 * a verify_chain leaf (flows/verify_chain.c), each sparsify_volume a leaf of
 * flows/job.c (recovered like a copy: decided from the volume, fenced,
 * retried elsewhere).
 *
 * sparsify_disk {disk, sd, img, volumes[]} (job; the disk locked)
 *   checks ──► verify_chain of the whole chain (LEGAL at the recorded generations)
 *   main ──► sparsify_volume per SPARSE volume of the chain, all at once
 *   end  ──► unlock, actual size read again
 *
 * Cancel (kinds.c): not accepted.
 */
#include <string.h>

#include "clock.h"
#include "commands.h"
#include "events.h"
#include "flows/flow.h"
#include "flows/sparsify.h"
#include "hosts.h"
#include "inventory.h"
#include "store/store.h"

#define js engine_js
#define ji engine_ji
#define jparse engine_jparse

static char *make_sparsify(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        json_t *v = json_array_get(json_object_get(p, "volumes"), i);
        double w = 100.0 / (double) MAX(json_array_size(json_object_get(p, "volumes")), 1);
        g_autoptr(json_t) cp = json_pack("{s:{s:s, s:s, s:s}, s:I}", "dst", "sd", js(p, "sd"), "img", js(p, "disk"),
                                         "vol", js(v, "id"), "bytes", ji(v, "capacity"));
        g_autofree char *desc = g_strdup_printf("Sparsifying volume %s (disk %s)", js(v, "id"), js(p, "disk"));

        return engine_flow_leaf_create(e, cmd, ENGINE_KIND_SPARSIFY_VOLUME, cp, desc, w);
}

/* The disk's whole chain, LEGAL on storage at the generations the inventory records, before any sparsify. */
static char *make_sparsify_check(struct engine *e, json_t *cmd, json_t *p, size_t i)
{
        g_autoptr(json_t) vols = engine_store_volume_list(e->db, js(p, "disk"), js(p, "sd"), NULL);
        g_autoptr(json_t) cp = json_pack("{s:s, s:s, s:[]}", "sd", js(p, "sd"), "img", js(p, "disk"), "volumes");
        g_autofree char *desc = g_strdup_printf("Checking on storage the chain of disk %s", js(p, "disk"));
        size_t k;
        json_t *v;

        json_array_foreach(vols, k, v)
                json_array_append_new(json_object_get(cp, "volumes"),
                                      json_pack("{s:s, s:I}", "id", js(v, "id"), "generation", ji(v, "generation")));
        return engine_flow_leaf_create(e, cmd, ENGINE_KIND_VERIFY_CHAIN, cp, desc, 0);
}

static void sparsify_flow(struct engine *e, json_t *cmd)
{
        g_autoptr(json_t) p = jparse(cmd, "params");
        g_autoptr(json_t) data = jparse(cmd, "data");
        g_autofree char *error = NULL;
        size_t n = json_array_size(json_object_get(p, "volumes"));
        enum engine_children st;

        /* An ILLEGAL volume's data may be incomplete: the agent refuses it too (227); nothing is sent then. */
        st = engine_flow_checks_run(e, cmd, data, 1, make_sparsify_check, &error);
        if (st == ENGINE_CHILDREN_SUCCEEDED)
                st = engine_run_children_parallel(e, cmd, data, n, n, make_sparsify, &error);
        if (st == ENGINE_CHILDREN_ACTIVE) {
                engine_cmd_update(e, js(cmd, "id"), ENGINE_PHASE_MAIN, data);
                return;
        }
        engine_flow_vm_job_end(e, cmd, NULL, st == ENGINE_CHILDREN_SUCCEEDED, error);
        engine_disk_size_refresh(e, js(p, "disk"));
        engine_event(e, st == ENGINE_CHILDREN_SUCCEEDED ? "normal" : "warning", js(cmd, "id"), "sparsify of disk %s %s%s%s",
                     js(p, "disk"), st == ENGINE_CHILDREN_SUCCEEDED ? "finished" : "failed", error ? ": " : "",
                     error ? error : "");
}

void engine_flow_sparsify_init(void)
{
        engine_flow_register(ENGINE_KIND_SPARSIFY_DISK, sparsify_flow, true);
}
