/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Leases through this host's sanlock daemon (libsanlock_client). The agent
 * registers once; every paxos lease it acquires is owned by the agent's pid,
 * so sanlock frees them at once if the agent dies. Thread safe.
 */

#include <stdint.h>
#include <glib.h>

#define AGENT_SPM_LEASE_NAME "SDM"
#define AGENT_SPM_LEASE_OFFSET (1024 * 1024)
#define AGENT_LEASES_FILE_SIZE (2 * 1024 * 1024)
#define AGENT_IDS_FILE_SIZE (1024 * 1024)
#define AGENT_VOLUME_LEASE_SIZE (1024 * 1024)

struct agent_lease {
        const char *lockspace;         /* sd uuid */
        const char *name;              /* resource name */
        const char *path;
        uint64_t offset;
};

int agent_lease_init(const char *run_dir, GError **error);
void agent_lease_shutdown(void);

int agent_lockspace_write(const char *sd_uuid, const char *ids_path, unsigned io_timeout, GError **error);
/* Starts joining; already joined or joining is success. */
int agent_lockspace_add(const char *sd_uuid, unsigned host_id, const char *ids_path,
                        unsigned io_timeout, GError **error);
/* Waits until a lockspace started by agent_lockspace_add() is joined (seconds). */
int agent_lockspace_wait(const char *sd_uuid, unsigned host_id, const char *ids_path, GError **error);
int agent_lockspace_remove(const char *sd_uuid, unsigned host_id, const char *ids_path, GError **error);
/* 1 joined, 0 not, -errno */
int agent_lockspace_joined(const char *sd_uuid, unsigned host_id, const char *ids_path);

int agent_lease_format(const struct agent_lease *l, GError **error);
/*
 * Non-blocking acquire: held elsewhere → -EBUSY with error_code (e.g.
 * FY_ERR_LEASE_ACQUIRE, 651); a lease area that was never formatted →
 * -ENODATA; other failures -errno. All failures carry error_code.
 */
int agent_lease_acquire(const struct agent_lease *l, int error_code, uint64_t *ret_lver, GError **error);
/* Lease acquisitions since the agent started: acquired, refused because another host holds the lease, failed otherwise. */
void agent_lease_counts(unsigned *ret_ok, unsigned *ret_busy, unsigned *ret_failed);
int agent_lease_release(const struct agent_lease *l, GError **error);
/* Host ids currently owning the lease (as recorded on disk) and its version; -ENODATA if never formatted. */
int agent_lease_owners(const struct agent_lease *l, GArray **ret_owners, uint64_t *ret_version, GError **error);
