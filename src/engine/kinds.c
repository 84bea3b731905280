/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "kinds.h"

static const struct {
        const char *name;
        bool cancellable;
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
        [ENGINE_KIND_MOVE_DISK] = { "move_disk", true },
        [ENGINE_KIND_COPY_DISK] = { "copy_disk", true },
        [ENGINE_KIND_REMOVE_DISK] = { "remove_disk" },
        [ENGINE_KIND_CREATE_TEMPLATE_FROM_VM] = { "create_template_from_vm", true },
        [ENGINE_KIND_CREATE_VM_FROM_TEMPLATE] = { "create_vm_from_template", true },
        [ENGINE_KIND_CREATE_SNAPSHOT] = { "create_snapshot" },
        [ENGINE_KIND_REMOVE_VM] = { "remove_vm" },
        [ENGINE_KIND_REMOVE_TEMPLATE] = { "remove_template" },
        [ENGINE_KIND_REMOVE_SNAPSHOT] = { "remove_snapshot" },
        [ENGINE_KIND_RESTORE_SNAPSHOT] = { "restore_snapshot" },
        [ENGINE_KIND_SPARSIFY_DISK] = { "sparsify_disk" },
        [ENGINE_KIND_CHECKSUM_VOLUME] = { "checksum_volume" },
};

static const char *const phases[ENGINE_PHASE__COUNT] = {
        [ENGINE_PHASE_NEW] = "",
        [ENGINE_PHASE_SENT] = "sent",
        [ENGINE_PHASE_VERIFY] = "verify",
        [ENGINE_PHASE_STRUCTURE] = "structure",
        [ENGINE_PHASE_DATA] = "data",
        [ENGINE_PHASE_MAIN] = "main",
        [ENGINE_PHASE_SEAL] = "seal",
        [ENGINE_PHASE_REMOVE_SOURCE] = "remove_source",
        [ENGINE_PHASE_CLEANUP] = "cleanup",
};

const char *engine_kind_name(enum engine_kind k)
{
        return k >= 0 && k < ENGINE_KIND__COUNT ? kinds[k].name : NULL;
}

const char *engine_phase_name(enum engine_phase p)
{
        return p >= 0 && p < ENGINE_PHASE__COUNT ? phases[p] : NULL;
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
                if (strcmp(phases[p], name) == 0)
                        return (enum engine_phase) p;
        return ENGINE_PHASE_UNKNOWN;
}

bool engine_kind_cancellable(enum engine_kind k)
{
        return k >= 0 && k < ENGINE_KIND__COUNT && kinds[k].cancellable;
}

enum engine_kind engine_cmd_kind(json_t *cmd)
{
        return engine_kind_from_name(json_string_value(json_object_get(cmd, "type")));
}

enum engine_phase engine_cmd_phase(json_t *cmd)
{
        return engine_phase_from_name(json_string_value(json_object_get(cmd, "phase")));
}
