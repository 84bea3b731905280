/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Command kinds and phases. The database stores their names (commands.type,
 * commands.phase); the engine works with the enums, converted here at the
 * edge. A stored name this engine does not know is ENGINE_KIND_UNKNOWN /
 * ENGINE_PHASE_UNKNOWN: the runtime fails such a command with an event, it
 * never runs it as something else.
 */
#include <stdbool.h>
#include <jansson.h>

enum engine_kind {
        ENGINE_KIND_UNKNOWN = -1,
        /* leaves: one agent job each */
        ENGINE_KIND_CREATE_VOLUME_CONTAINER,
        ENGINE_KIND_REMOVE_IMAGE,
        ENGINE_KIND_COPY_DATA,
        ENGINE_KIND_CREATE_THIN_VOLUME,
        ENGINE_KIND_SEAL_TEMPLATE_VOLUME,
        ENGINE_KIND_PREPARE_MERGE,
        ENGINE_KIND_MERGE,
        ENGINE_KIND_FINALIZE_MERGE,
        ENGINE_KIND_REMOVE_VOLUME,
        ENGINE_KIND_SPARSIFY_VOLUME,
        ENGINE_KIND_VERIFY_CHAIN,      /* read-only: Volume.getInfo of each volume (flows/verify_chain.c) */
        ENGINE_KIND_FINALIZE_UPLOAD,   /* an upload's Host.finalize_image_ticket on the ticket's host (flows/transfer.c) */
        /* composites under a flow */
        ENGINE_KIND_CLONE_STRUCTURE,
        ENGINE_KIND_COPY_VOLUMES_DATA,
        ENGINE_KIND_COPY_WITH_DATA,
        ENGINE_KIND_MERGE_DISK_SNAPSHOT,
        ENGINE_KIND_RESTORE_DISK_SNAPSHOT,
        /* top-level flows (a job each) */
        ENGINE_KIND_CREATE_DISK,
        ENGINE_KIND_MOVE_DISK,
        ENGINE_KIND_COPY_DISK,
        ENGINE_KIND_REMOVE_DISK,
        ENGINE_KIND_CREATE_TEMPLATE_FROM_VM,
        ENGINE_KIND_CREATE_VM_FROM_TEMPLATE,
        ENGINE_KIND_CREATE_SNAPSHOT,
        ENGINE_KIND_REMOVE_VM,
        ENGINE_KIND_REMOVE_TEMPLATE,
        ENGINE_KIND_REMOVE_SNAPSHOT,
        ENGINE_KIND_RESTORE_SNAPSHOT,
        ENGINE_KIND_SPARSIFY_DISK,
        ENGINE_KIND_CHECKSUM_VOLUME,
        ENGINE_KIND__COUNT,
};

enum engine_phase {
        ENGINE_PHASE_UNKNOWN = -1,
        ENGINE_PHASE_NEW,              /* "": nothing started yet (or a retry from scratch) */
        ENGINE_PHASE_SENT,             /* leaf: host and agent job recorded, the call made */
        ENGINE_PHASE_VERIFY,           /* leaf: the host forgot the job; storage decides */
        ENGINE_PHASE_STRUCTURE,        /* copy_image_group_with_data: volumes being created */
        ENGINE_PHASE_DATA,             /* copy_image_group_with_data: data being copied */
        ENGINE_PHASE_MAIN,             /* flow: its children run */
        ENGINE_PHASE_SEAL,             /* create_template_from_vm: volumes marked SHARED */
        ENGINE_PHASE_REMOVE_SOURCE,    /* move_disk: the source image is removed */
        ENGINE_PHASE_CLEANUP,          /* flow failed or cancelled: what it made is removed */
        ENGINE_PHASE__COUNT,
};

/* The stored name of a kind or phase ("" for ENGINE_PHASE_NEW); NULL for an unknown value. */
const char *engine_kind_name(enum engine_kind k);
const char *engine_phase_name(enum engine_phase p);
/* ENGINE_KIND_UNKNOWN / ENGINE_PHASE_UNKNOWN for NULL or a name not in the table. */
enum engine_kind engine_kind_from_name(const char *name);
enum engine_phase engine_phase_from_name(const char *name);

/* A job of this top-level kind can be cancelled (flows that copy data; stopping a create,
 * removal or snapshot half-way helps nobody): in some of its phases, declared with the kind. */
bool engine_kind_cancellable(enum engine_kind k);
bool engine_kind_cancellable_in(enum engine_kind k, enum engine_phase p);
/* What a command in phase p does ("already cleaning up" …), for messages. */
const char *engine_phase_doing(enum engine_phase p);

/* The kind and phase of a commands row. */
enum engine_kind engine_cmd_kind(json_t *cmd);
enum engine_phase engine_cmd_phase(json_t *cmd);
