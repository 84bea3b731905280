/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sanlock.h>
#include <sanlock_admin.h>
#include <sanlock_resource.h>
#include <sanlock_rv.h>

#include "error.h"
#include "lease.h"

/* The registration socket: leases acquired through it belong to this process. */
static int sanlock_sock = -1;
static GMutex sock_lock;       /* one request at a time on the registration socket */

static const char *lease_strerror(int rv)
{
        switch (rv) {
        case SANLK_ACQUIRE_IDLIVE: return "held by another live host";
        case SANLK_ACQUIRE_OWNED: return "owned by another host";
        case SANLK_ACQUIRE_OWNED_RETRY: return "owned by another host (retry later)";
        case SANLK_ACQUIRE_OTHER: return "held by another host";
        case SANLK_ACQUIRE_LOCKSPACE: return "lockspace not joined on this host";
        case SANLK_ACQUIRE_IDDISK: return "cannot read the host id of the owner";
        case SANLK_ACQUIRE_LVER: return "lease version changed";
        case SANLK_LEADER_MAGIC: return "not a sanlock lease area (was it formatted?)";
        case SANLK_LEADER_LOCKSPACE: return "lease belongs to another lockspace";
        case SANLK_LEADER_RESOURCE: return "lease area holds another resource";
        case SANLK_ADDLS_INVALID_HOSTID: return "invalid host id";
        case SANLK_HOSTID_BUSY: return "host id already in use by another live host";
        case SANLK_AIO_TIMEOUT: return "storage I/O timed out";
        default:
                if (rv < 0 && rv > -200)
                        return g_strerror(-rv);
                return "sanlock error";
        }
}

/* Acquire outcomes since the agent started, for the metrics (g_atomic). */
static gint acquire_ok, acquire_busy, acquire_failed;

void agent_lease_counts(unsigned *ret_ok, unsigned *ret_busy, unsigned *ret_failed)
{
        *ret_ok = (unsigned) g_atomic_int_get(&acquire_ok);
        *ret_busy = (unsigned) g_atomic_int_get(&acquire_busy);
        *ret_failed = (unsigned) g_atomic_int_get(&acquire_failed);
}

static int lease_fail(GError **error, int code, int rv, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static int lease_fail(GError **error, int code, int rv, const char *fmt, ...)
{
        g_autofree char *what = NULL;
        va_list ap;

        va_start(ap, fmt);
        what = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_set_error(error, FY_ERROR, code, "%s: %s (sanlock %d)", what, lease_strerror(rv), rv);
        switch (rv) {
        case SANLK_ACQUIRE_IDLIVE:
        case SANLK_ACQUIRE_OWNED:
        case SANLK_ACQUIRE_OWNED_RETRY:
        case SANLK_ACQUIRE_OTHER:
                return -EBUSY;          /* another host holds it: callers tell "in use" apart */
        case SANLK_LEADER_MAGIC:
                return -ENODATA;        /* never formatted */
        }
        return rv < 0 && rv > -200 ? rv : -EIO;
}

int agent_lease_init(const char *run_dir, GError **error)
{
        int fd;

        /* libsanlock_client finds the daemon's socket through this variable. */
        g_setenv("SANLOCK_RUN_DIR", run_dir, TRUE);
        fd = sanlock_register();
        if (fd < 0)
                return lease_fail(error, FY_ERR_GENERAL, fd,
                                  "cannot register with the sanlock daemon in %s (is it running?)", run_dir);
        sanlock_sock = fd;
        return 0;
}

void agent_lease_shutdown(void)
{
        if (sanlock_sock >= 0)
                close(sanlock_sock);
        sanlock_sock = -1;
}

static int fill_lockspace(struct sanlk_lockspace *ls, const char *name, unsigned host_id, const char *path)
{
        memset(ls, 0, sizeof(*ls));
        if (strlen(name) >= SANLK_NAME_LEN || strlen(path) >= SANLK_PATH_LEN)
                return -ENAMETOOLONG;
        g_strlcpy(ls->name, name, sizeof(ls->name));
        g_strlcpy(ls->host_id_disk.path, path, sizeof(ls->host_id_disk.path));
        ls->host_id = host_id;
        ls->host_id_disk.offset = 0;
        return 0;
}

int agent_lockspace_write(const char *sd_uuid, const char *ids_path, unsigned io_timeout, GError **error)
{
        struct sanlk_lockspace ls;
        int rv;

        if (fill_lockspace(&ls, sd_uuid, 0, ids_path) < 0)
                return lease_fail(error, FY_ERR_GENERAL, -ENAMETOOLONG, "lockspace %s", sd_uuid);
        rv = sanlock_write_lockspace(&ls, 0, 0, io_timeout);
        if (rv < 0)
                return lease_fail(error, FY_ERR_GENERAL, rv, "cannot format lockspace %s at %s", sd_uuid, ids_path);
        return 0;
}

int agent_lockspace_add(const char *sd_uuid, unsigned host_id, const char *ids_path,
                        unsigned io_timeout, GError **error)
{
        struct sanlk_lockspace ls;
        int rv;

        if (fill_lockspace(&ls, sd_uuid, host_id, ids_path) < 0)
                return lease_fail(error, FY_ERR_GENERAL, -ENAMETOOLONG, "lockspace %s", sd_uuid);
        /* Async: joining takes seconds (delta lease), several domains join in parallel. */
        rv = sanlock_add_lockspace_timeout(&ls, SANLK_ADD_ASYNC, io_timeout);
        if (rv == -EEXIST || rv == -EINPROGRESS)
                return 0;
        if (rv < 0)
                return lease_fail(error, FY_ERR_GENERAL, rv, "cannot join lockspace %s with host id %u",
                                  sd_uuid, host_id);
        return 0;
}

int agent_lockspace_wait(const char *sd_uuid, unsigned host_id, const char *ids_path, GError **error)
{
        struct sanlk_lockspace ls;
        int rv;

        if (fill_lockspace(&ls, sd_uuid, host_id, ids_path) < 0)
                return lease_fail(error, FY_ERR_GENERAL, -ENAMETOOLONG, "lockspace %s", sd_uuid);
        rv = sanlock_inq_lockspace(&ls, SANLK_INQ_WAIT);
        if (rv < 0)
                return lease_fail(error, FY_ERR_GENERAL, rv, "cannot join lockspace %s with host id %u",
                                  sd_uuid, host_id);
        return 0;
}

int agent_lockspace_remove(const char *sd_uuid, unsigned host_id, const char *ids_path, GError **error)
{
        struct sanlk_lockspace ls;
        int rv;

        if (fill_lockspace(&ls, sd_uuid, host_id, ids_path) < 0)
                return lease_fail(error, FY_ERR_GENERAL, -ENAMETOOLONG, "lockspace %s", sd_uuid);
        /* UNUSED: never let sanlock kill this process to free its leases. */
        rv = sanlock_rem_lockspace(&ls, SANLK_REM_UNUSED);
        if (rv == -ENOENT)
                return 0;
        if (rv < 0)
                return lease_fail(error, FY_ERR_GENERAL, rv, "cannot leave lockspace %s (leases still held?)", sd_uuid);
        return 0;
}

int agent_lockspace_joined(const char *sd_uuid, unsigned host_id, const char *ids_path)
{
        struct sanlk_lockspace ls;
        int rv;

        if (fill_lockspace(&ls, sd_uuid, host_id, ids_path) < 0)
                return -ENAMETOOLONG;
        rv = sanlock_inq_lockspace(&ls, 0);
        if (rv == 0)
                return 1;
        if (rv == -ENOENT || rv == -EINPROGRESS)
                return 0;
        return rv;
}

/* struct sanlk_resource ends with a flexible array of disks: one here. */
struct resource_buf {
        struct sanlk_resource res;
        struct sanlk_disk disk;
};
G_STATIC_ASSERT(offsetof(struct resource_buf, disk) == offsetof(struct sanlk_resource, disks));

static int fill_resource(struct resource_buf *b, const struct agent_lease *l)
{
        memset(b, 0, sizeof(*b));
        if (strlen(l->lockspace) >= SANLK_NAME_LEN || strlen(l->name) >= SANLK_NAME_LEN ||
            strlen(l->path) >= SANLK_PATH_LEN)
                return -ENAMETOOLONG;
        g_strlcpy(b->res.lockspace_name, l->lockspace, SANLK_NAME_LEN);
        g_strlcpy(b->res.name, l->name, SANLK_NAME_LEN);
        b->res.num_disks = 1;
        g_strlcpy(b->disk.path, l->path, SANLK_PATH_LEN);
        b->disk.offset = l->offset;
        return 0;
}

int agent_lease_format(const struct agent_lease *l, GError **error)
{
        struct resource_buf b;
        int rv;

        if (fill_resource(&b, l) < 0)
                return lease_fail(error, FY_ERR_GENERAL, -ENAMETOOLONG, "lease %s", l->name);
        rv = sanlock_write_resource(&b.res, 0, 0, 0);
        if (rv < 0)
                return lease_fail(error, FY_ERR_GENERAL, rv, "cannot format lease %s at %s:%" G_GUINT64_FORMAT,
                                  l->name, l->path, (guint64) l->offset);
        return 0;
}

int agent_lease_acquire(const struct agent_lease *l, int error_code, uint64_t *ret_lver, GError **error)
{
        struct resource_buf b;
        struct sanlk_resource *resv[1] = { &b.res };
        int rv;

        if (fill_resource(&b, l) < 0)
                return lease_fail(error, error_code, -ENAMETOOLONG, "lease %s", l->name);
        if (sanlock_sock < 0)
                return lease_fail(error, error_code, -ENOTCONN, "lease %s: not registered with sanlock", l->name);

        /*
         * The call blocks as long as the daemon takes (a hung daemon: for
         * ever) and no cancel reaches it: a job's log shows what it waits
         * for. The shutdown test waits for this line too.
         */
        g_debug("acquiring lease %s in lockspace %s from the sanlock daemon", l->name, l->lockspace);
        g_mutex_lock(&sock_lock);
        rv = sanlock_acquire(sanlock_sock, -1, 0, 1, resv, NULL);
        g_mutex_unlock(&sock_lock);
        if (rv < 0) {
                int r = lease_fail(error, error_code, rv, "cannot acquire lease %s in lockspace %s",
                                   l->name, l->lockspace);

                g_atomic_int_inc(r == -EBUSY ? &acquire_busy : &acquire_failed);
                return r;
        }
        g_atomic_int_inc(&acquire_ok);
        if (ret_lver) {
                struct resource_buf rb;

                fill_resource(&rb, l);
                *ret_lver = sanlock_read_resource(&rb.res, 0) == 0 ? rb.res.lver : 0;
        }
        return 0;
}

int agent_lease_release(const struct agent_lease *l, GError **error)
{
        struct resource_buf b;
        struct sanlk_resource *resv[1] = { &b.res };
        int rv;

        if (fill_resource(&b, l) < 0)
                return lease_fail(error, FY_ERR_LEASE_RELEASE, -ENAMETOOLONG, "lease %s", l->name);
        g_mutex_lock(&sock_lock);
        rv = sanlock_release(sanlock_sock, -1, 0, 1, resv);
        g_mutex_unlock(&sock_lock);
        if (rv < 0)
                return lease_fail(error, FY_ERR_LEASE_RELEASE, rv, "cannot release lease %s", l->name);
        return 0;
}

int agent_lease_owners(const struct agent_lease *l, GArray **ret_owners, uint64_t *ret_version, GError **error)
{
        struct resource_buf b;
        struct sanlk_host *hosts = NULL;
        int count = 0, rv;
        GArray *owners;

        if (fill_resource(&b, l) < 0)
                return lease_fail(error, FY_ERR_GENERAL, -ENAMETOOLONG, "lease %s", l->name);
        rv = sanlock_read_resource_owners(&b.res, 0, &hosts, &count);
        if (rv < 0)
                return lease_fail(error, FY_ERR_GENERAL, rv, "cannot read lease %s at %s", l->name, l->path);
        owners = g_array_new(FALSE, FALSE, sizeof(guint64));
        for (int i = 0; i < count; i++) {
                guint64 id = hosts[i].host_id;
                g_array_append_val(owners, id);
        }
        free(hosts);
        *ret_owners = owners;
        if (ret_version)
                *ret_version = b.res.lver;
        return 0;
}
