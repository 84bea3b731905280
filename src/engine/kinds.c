/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "kinds.h"

#define CANCEL_IN(p) (1u << (p))
/* The flows that copy data accept a cancel until they clean up or, a move, remove its source. */
#define CANCEL_WHILE_COPYING (CANCEL_IN(ENGINE_PHASE_NEW) | CANCEL_IN(ENGINE_PHASE_MAIN))

static const struct {
        const char *name;
        unsigned cancel_phases;        /* the phases of a top-level command in which a cancel is accepted */
} kinds[ENGINE_KIND__COUNT] = {
        [ENGINE_KIND_CREATE_VOLUME_CONTAINER] = { "create_volume_container" },
        [ENGINE_KIND_REMOVE_IMAGE] = { "remove_image" },
        [ENGINE_KIND_COPY_DATA] = { "copy_data" },
        [ENGINE_KIND_CREATE_THIN_VOLUME] = { "create_thin_volume" },
        [ENGINE_KIND_SEAL_TEMPLATE_VOLUME] = { "seal_template_volume" },
        [ENGINE_KIND_PREPARE_MERGE] = { "prepare_merge" },
        [ENGINE_KIND_MERGE] = { "merge" },
        [ENGINE_KIND_FINALIZE_MERGE] = { "finalize_merge" },
        [ENGINE_KIND_REMOVE_VOLUME] = { "remove_volume" },
        [ENGINE_KIND_SPARSIFY_VOLUME] = { "sparsify_volume" },
        [ENGINE_KIND_VERIFY_CHAIN] = { "verify_chain" },
        [ENGINE_KIND_FINALIZE_UPLOAD] = { "finalize_upload" },
        [ENGINE_KIND_CLONE_STRUCTURE] = { "clone_image_group_volumes_structure" },
        [ENGINE_KIND_COPY_VOLUMES_DATA] = { "copy_image_group_volumes_data" },
        [ENGINE_KIND_COPY_WITH_DATA] = { "copy_image_group_with_data" },
        [ENGINE_KIND_MERGE_DISK_SNAPSHOT] = { "merge_disk_snapshot" },
        [ENGINE_KIND_RESTORE_DISK_SNAPSHOT] = { "restore_disk_snapshot" },
        [ENGINE_KIND_CREATE_DISK] = { "create_disk" },
        [ENGINE_KIND_MOVE_DISK] = { "move_disk", CANCEL_WHILE_COPYING },
        [ENGINE_KIND_COPY_DISK] = { "copy_disk", CANCEL_WHILE_COPYING },
        [ENGINE_KIND_REMOVE_DISK] = { "remove_disk" },
        [ENGINE_KIND_CREATE_TEMPLATE_FROM_VM] = { "create_template_from_vm", CANCEL_WHILE_COPYING },
        [ENGINE_KIND_CREATE_VM_FROM_TEMPLATE] = { "create_vm_from_template", CANCEL_WHILE_COPYING },
        [ENGINE_KIND_CREATE_SNAPSHOT] = { "create_snapshot" },
        [ENGINE_KIND_REMOVE_VM] = { "remove_vm" },
        [ENGINE_KIND_REMOVE_TEMPLATE] = { "remove_template" },
        [ENGINE_KIND_REMOVE_SNAPSHOT] = { "remove_snapshot" },
        [ENGINE_KIND_RESTORE_SNAPSHOT] = { "restore_snapshot" },
        [ENGINE_KIND_SPARSIFY_DISK] = { "sparsify_disk" },
        [ENGINE_KIND_CHECKSUM_VOLUME] = { "checksum_volume" },
};

static const struct {
        const char *name;
        const char *doing;             /* what a command in this phase does, for messages */
} phases[ENGINE_PHASE__COUNT] = {
        [ENGINE_PHASE_NEW] = { "", "starting" },
        [ENGINE_PHASE_SENT] = { "sent", "running a job on a host" },
        [ENGINE_PHASE_VERIFY] = { "verify", "reading the outcome from storage" },
        [ENGINE_PHASE_STRUCTURE] = { "structure", "creating volumes" },
        [ENGINE_PHASE_DATA] = { "data", "copying data" },
        [ENGINE_PHASE_MAIN] = { "main", "running" },
        [ENGINE_PHASE_SEAL] = { "seal", "marking the template's volumes shared" },
        [ENGINE_PHASE_REMOVE_SOURCE] = { "remove_source", "removing the source of a finished move" },
        [ENGINE_PHASE_CLEANUP] = { "cleanup", "already cleaning up" },
};

const char *engine_kind_name(enum engine_kind k)
{
        return k >= 0 && k < ENGINE_KIND__COUNT ? kinds[k].name : NULL;
}

const char *engine_phase_name(enum engine_phase p)
{
        return p >= 0 && p < ENGINE_PHASE__COUNT ? phases[p].name : NULL;
}

const char *engine_phase_doing(enum engine_phase p)
{
        return p >= 0 && p < ENGINE_PHASE__COUNT ? phases[p].doing : "in an unknown phase";
}

enum engine_kind engine_kind_from_name(const char *name)
{
        for (int k = 0; name && k < ENGINE_KIND__COUNT; k++)
                if (strcmp(kinds[k].name, name) == 0)
                        return (enum engine_kind) k;
        return ENGINE_KIND_UNKNOWN;
}

enum engine_phase engine_phase_from_name(const char *name)
{
        for (int p = 0; name && p < ENGINE_PHASE__COUNT; p++)
                if (strcmp(phases[p].name, name) == 0)
                        return (enum engine_phase) p;
        return ENGINE_PHASE_UNKNOWN;
}

bool engine_kind_cancellable(enum engine_kind k)
{
        return k >= 0 && k < ENGINE_KIND__COUNT && kinds[k].cancel_phases != 0;
}

bool engine_kind_cancellable_in(enum engine_kind k, enum engine_phase p)
{
        return engine_kind_cancellable(k) && p >= 0 && p < ENGINE_PHASE__COUNT && (kinds[k].cancel_phases & CANCEL_IN(p));
}

enum engine_kind engine_cmd_kind(json_t *cmd)
{
        return engine_kind_from_name(json_string_value(json_object_get(cmd, "type")));
}

enum engine_phase engine_cmd_phase(json_t *cmd)
{
        return engine_phase_from_name(json_string_value(json_object_get(cmd, "phase")));
}
