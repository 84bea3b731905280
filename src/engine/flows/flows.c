/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Every flow file registers its kinds here, so the runtime (commands.c)
 * depends on no flow and a test can build the same runtime in process.
 */
#include "flows/disk_create.h"
#include "flows/disk_move.h"
#include "flows/disk_remove.h"
#include "flows/flows.h"
#include "flows/image.h"
#include "flows/job.h"
#include "flows/snapshot_create.h"
#include "flows/snapshot_remove.h"
#include "flows/snapshot_restore.h"
#include "flows/sparsify.h"
#include "flows/template.h"
#include "flows/verify_chain.h"
#include "flows/vm_create.h"
#include "flows/vm_remove.h"

void engine_flows_init(void)
{
        engine_flow_job_init();
        engine_flow_verify_chain_init();
        engine_flow_image_init();
        engine_flow_disk_create_init();
        engine_flow_disk_remove_init();
        engine_flow_disk_move_init();
        engine_flow_template_init();
        engine_flow_vm_create_init();
        engine_flow_vm_remove_init();
        engine_flow_snapshot_create_init();
        engine_flow_snapshot_remove_init();
        engine_flow_snapshot_restore_init();
        engine_flow_sparsify_init();
}
