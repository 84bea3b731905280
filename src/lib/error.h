/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <glib.h>

/*
 * Errors that cross the wire carry a VDSM-compatible code (vdsm-api.yml /
 * vdsm/storage/exception.py) and a sentence an operator can act on. Code
 * inside a daemon reports them as GError in FY_ERROR; the RPC boundary turns
 * them into {"code", "message"}.
 */
#define FY_ERROR (fy_error_quark())
GQuark fy_error_quark(void);

enum fy_error_code {
        FY_ERR_GENERAL = 100,           /* GeneralException */
        FY_ERR_INVALID_PARAMETER = 1000,/* InvalidParameterException */
        FY_ERR_NO_SUCH_JOB = 66,        /* NoSuchJob */
        FY_ERR_JOB_NOT_ACTIVE = 84,     /* JobNotActive: job is not pending/running */
        FY_ERR_JOB_EXISTS = 85,         /* duplicate job id */
        FY_ERR_JOB_NOT_DONE = 86,       /* Job.delete of a job that has not ended */
        FY_ERR_METHOD_NOT_FOUND = -32601,
        FY_ERR_INVALID_REQUEST = -32600,
        FY_ERR_PARSE = -32700,
        FY_ERR_INVALID_PARAMS = -32602,
        FY_ERR_STORAGE_DOMAIN_DOES_NOT_EXIST = 358,
        FY_ERR_STORAGE_DOMAIN_ALREADY_EXISTS = 365,
        FY_ERR_IMAGE_DOES_NOT_EXIST = 268,
        FY_ERR_VOLUME_DOES_NOT_EXIST = 201,
        FY_ERR_VOLUME_ALREADY_EXISTS = 205,
        FY_ERR_VOLUME_HAS_CHILDREN = 212,   /* VolumeImageHasChildren */
        FY_ERR_VOLUME_IN_USE = 211,         /* lease held */
        FY_ERR_METADATA = 254,              /* MetaDataParamError / bad metadata */
        FY_ERR_SPM_REQUIRED = 654,          /* SpmStatusError / not SPM */
        FY_ERR_SPM_ACQUIRE = 661,           /* AcquireLockFailure of SDM */
        FY_ERR_LEASE_ACQUIRE = 651,         /* AcquireLockFailure */
        FY_ERR_LEASE_RELEASE = 652,
        FY_ERR_NOT_CONNECTED = 309,         /* StoragePoolNotConnected */
        FY_ERR_GENERATION_MISMATCH = 911,   /* GenerationMismatch */
        FY_ERR_COPY = 261,                  /* CopyImageError */
        FY_ERR_ABORTED = 87,                /* ActionStopped */
        FY_ERR_NO_SPACE = 352,              /* StorageDomainFS space */
        FY_ERR_MERGE = 252,                 /* MergeSnapshotsError */
        FY_ERR_ILLEGAL_VOLUME = 227,        /* prepareIllegalVolumeError */
        FY_ERR_SHARED_VOLUME = 219,         /* SharedVolumeNonWritable: a template's volume */
        FY_ERR_NOT_IN_CHAIN = 920,          /* VolumeIsNotInChain */
        FY_ERR_WRONG_PARENT = 921,          /* WrongParentVolume */
        FY_ERR_UNSUPPORTED = 2009,          /* UnsupportedOperation */
};

const char *fy_error_code_name(int code);
