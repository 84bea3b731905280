/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "error.h"

G_DEFINE_QUARK(fy-error-quark, fy_error)

const char *fy_error_code_name(int code)
{
        switch (code) {
        case FY_ERR_GENERAL: return "GeneralException";
        case FY_ERR_INVALID_PARAMETER: return "InvalidParameterException";
        case FY_ERR_NO_SUCH_JOB: return "NoSuchJob";
        case FY_ERR_JOB_NOT_ACTIVE: return "JobNotActive";
        case FY_ERR_JOB_EXISTS: return "JobExistsError";
        case FY_ERR_JOB_NOT_DONE: return "JobNotDone";
        case FY_ERR_METHOD_NOT_FOUND: return "MethodNotFound";
        case FY_ERR_INVALID_REQUEST: return "InvalidRequest";
        case FY_ERR_PARSE: return "ParseError";
        case FY_ERR_INVALID_PARAMS: return "InvalidParams";
        case FY_ERR_STORAGE_DOMAIN_DOES_NOT_EXIST: return "StorageDomainDoesNotExist";
        case FY_ERR_STORAGE_DOMAIN_ALREADY_EXISTS: return "StorageDomainAlreadyExists";
        case FY_ERR_IMAGE_DOES_NOT_EXIST: return "ImageDoesNotExistInSD";
        case FY_ERR_VOLUME_DOES_NOT_EXIST: return "VolumeDoesNotExist";
        case FY_ERR_VOLUME_ALREADY_EXISTS: return "VolumeAlreadyExists";
        case FY_ERR_VOLUME_HAS_CHILDREN: return "VolumeImageHasChildren";
        case FY_ERR_VOLUME_IN_USE: return "VolumeInUse";
        case FY_ERR_METADATA: return "MetaDataError";
        case FY_ERR_SPM_REQUIRED: return "SpmStatusError";
        case FY_ERR_SPM_ACQUIRE: return "AcquireSpmLockFailure";
        case FY_ERR_LEASE_ACQUIRE: return "AcquireLockFailure";
        case FY_ERR_LEASE_RELEASE: return "ReleaseLockFailure";
        case FY_ERR_NOT_CONNECTED: return "StoragePoolNotConnected";
        case FY_ERR_GENERATION_MISMATCH: return "GenerationMismatch";
        case FY_ERR_COPY: return "CopyImageError";
        case FY_ERR_ABORTED: return "ActionStopped";
        case FY_ERR_NO_SPACE: return "NoSpaceLeftOnDevice";
        case FY_ERR_MERGE: return "MergeSnapshotsError";
        case FY_ERR_ILLEGAL_VOLUME: return "prepareIllegalVolumeError";
        case FY_ERR_SHARED_VOLUME: return "SharedVolumeNonWritable";
        case FY_ERR_NOT_IN_CHAIN: return "VolumeIsNotInChain";
        case FY_ERR_WRONG_PARENT: return "WrongParentVolume";
        case FY_ERR_UNSUPPORTED: return "UnsupportedOperation";
        default: return "Error";
        }
}
