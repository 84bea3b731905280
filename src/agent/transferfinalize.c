/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host.finalize_image_ticket: a job that waits for the ticket's requests
 * to end, verifies the uploaded bytes (qemu-img bounded as for any image a
 * client supplied, qemuimg.c) and, still under the lease the ticket took,
 * writes LEGAL with the next generation in one metadata write, as a
 * finished copy does (volguard.c). The engine learns the outcome like a
 * copy's.
 */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "jobs.h"
#include "qemuimg.h"
#include "transfer-internal.h"
#include "transferparse.h"

#define DRAIN_WAIT_S 120                /* finalize waits this long for requests in progress */

struct finalize_job {
        struct agent_transfers *tr;
        struct ticket *t;
};

static void finalize_job_free(void *data)
{
        struct finalize_job *fj = data;

        xfer_ticket_unref(fj->t);
        g_free(fj);
}

/*
 * The uploaded bytes must be what the volume's metadata says: a raw volume
 * no larger than its capacity; a qcow2 volume whose header passes
 * agent_qcow2_header_check (before any qemu-img sees it: no backing file,
 * no external data file, no encryption, no unknown feature), that qemu-img
 * (bounded in memory and CPU) reads as qcow2 (never probed) with the same
 * answers, a virtual size within the capacity, and no corruption (qemu-img
 * check; leaked clusters are fine).
 */
static int verify_upload(struct ticket *t, GCancellable *cancel, GError **error)
{
        g_autoptr(json_t) info = NULL;
        g_autoptr(GBytes) head = NULL;
        g_autoptr(GError) e = NULL;
        json_t *data;
        struct stat st;
        json_int_t vsize;
        guint64 hvsize = 0;
        size_t head_len;
        int r;

        if (fstat(t->fd, &st) < 0)
                return -errno;
        if (t->format == FY_FORMAT_RAW) {
                if ((guint64) st.st_size > t->capacity)
                        return agent_upload_refuse(error, "the volume file has %" G_GOFFSET_FORMAT " bytes, more than "
                                                   "its capacity %" G_GUINT64_FORMAT, (goffset) st.st_size, t->capacity);
                return 0;
        }
        /* Before qemu-img opens it: nothing in the header may make it follow another file. */
        head_len = (size_t) MIN((guint64) st.st_size, (guint64) AGENT_QCOW2_HEADER_READ);
        r = xfer_read_range(t->fd, 0, head_len, &head);
        if (r < 0)
                return r;
        r = agent_qcow2_header_check(g_bytes_get_data(head, NULL), head_len, &hvsize, error);
        if (r < 0)
                return r;
        if (hvsize == 0 || hvsize > t->capacity)
                return agent_upload_refuse(error, "the uploaded qcow2 image has a virtual size of %" G_GUINT64_FORMAT
                                           " bytes; the disk holds %" G_GUINT64_FORMAT, hvsize, t->capacity);
        r = agent_qemu_img_info_untrusted(t->path, "qcow2", cancel, &info, &e);
        /* It ran and failed, or answered what is not JSON: the data's fault, not this host's. */
        if (r == -EIO || r == -EBADMSG || r == -EFBIG)
                return agent_upload_refuse(error, "the uploaded data is not a qcow2 image: %s", e->message);
        if (r < 0) {
                g_propagate_error(error, g_steal_pointer(&e));
                return r;
        }
        if (g_strcmp0(json_string_value(json_object_get(info, "format")), "qcow2") != 0)
                return agent_upload_refuse(error, "the uploaded data is not a qcow2 image: qemu-img info answered nonsense");
        if (json_object_get(info, "backing-filename"))
                return agent_upload_refuse(error, "the uploaded qcow2 image has a backing file (%s); upload a "
                                           "self-contained image",
                                           json_string_value(json_object_get(info, "backing-filename")));
        data = json_object_get(json_object_get(info, "format-specific"), "data");
        if (json_object_get(data, "data-file"))
                return agent_upload_refuse(error, "the uploaded qcow2 image has an external data file; that is refused");
        vsize = json_integer_value(json_object_get(info, "virtual-size"));
        if (vsize <= 0 || (guint64) vsize > t->capacity)
                return agent_upload_refuse(error, "the uploaded qcow2 image has a virtual size of %" JSON_INTEGER_FORMAT
                                           " bytes; the disk holds %" G_GUINT64_FORMAT, vsize, t->capacity);
        r = agent_qemu_img_check_untrusted(t->path, "qcow2", cancel, &e);
        if (r == -EUCLEAN)
                return agent_upload_refuse(error, "qemu-img check found the uploaded qcow2 image damaged: %s", e->message);
        if (r < 0) {
                g_propagate_error(error, g_steal_pointer(&e));
                return r;
        }
        return 0;
}

static gboolean finalize_forget(gpointer data)
{
        struct finalize_job *fj = data;

        if (g_hash_table_lookup(fj->tr->tickets, fj->t->uuid) == fj->t)
                g_hash_table_remove(fj->tr->tickets, fj->t->uuid);
        finalize_job_free(fj);
        return G_SOURCE_REMOVE;
}

static int finalize_run(struct agent_job *job, void *data, GCancellable *cancel, GError **error)
{
        struct finalize_job *fj = data, *forget;
        struct ticket *t = fj->t;
        struct agent *a = t->agent;
        /* The generation the ticket found under its lease: nothing else may have moved it since. */
        struct agent_endpoint target = { .ref = t->vol.ref, .has_generation = true, .generation = t->generation };
        g_autoptr(fy_volume_meta) meta = NULL;
        gint64 deadline = now_us() + DRAIN_WAIT_S * G_USEC_PER_SEC;
        bool drained;
        int r;

        /* Requests that started before the finalize may still write: wait for them. */
        g_mutex_lock(&t->lock);
        while (!t->drained && !g_cancellable_is_cancelled(cancel) && now_us() < deadline)
                g_cond_wait_until(&t->cond, &t->lock, now_us() + G_USEC_PER_SEC);
        drained = t->drained;
        g_mutex_unlock(&t->lock);
        if (!drained) {
                r = g_cancellable_is_cancelled(cancel) ? -ECANCELED : -ETIMEDOUT;
                if (r == -ETIMEDOUT)
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL,
                                    "requests on ticket %s did not end within %d s", t->log_id, DRAIN_WAIT_S);
                goto out;
        }
        agent_job_set_progress(job, 10);
        if (fsync(t->fd) < 0) {
                r = -errno;
                g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot sync volume %s: %s", t->path, g_strerror(-r));
                goto out;
        }
        r = verify_upload(t, cancel, error);
        if (r < 0)
                goto out;
        agent_job_set_progress(job, 80);
        if (g_cancellable_is_cancelled(cancel)) {
                r = -ECANCELED;
                goto out;
        }
        /* Still under the lease taken when the ticket was added: the metadata is ours. */
        r = agent_volume_meta_read_expect(a, &target, &meta, error);
        if (r == -ESTALE)
                g_prefix_error(error, "the upload cannot be finalized: ");
        if (r < 0)
                goto out;
        r = agent_volume_end_write(a, &t->vol.ref, meta, t->generation, error);
        if (r == 0)
                g_message("ticket %s finalized: volume %s verified and LEGAL, generation %u", t->log_id, t->vol.ref.vol,
                          meta->generation);
out:
        xfer_ticket_release(t);
        forget = g_new0(struct finalize_job, 1);
        forget->tr = fj->tr;
        forget->t = xfer_ticket_ref(t);
        g_main_context_invoke(a->main_context, finalize_forget, forget);
        return r;
}

void agent_transfer_finalize_ticket(struct fy_rpc_call *call, json_t *params, void *userdata)
{
        struct agent *a = userdata;
        struct agent_transfers *tr = transfers_of(a);
        g_autoptr(GError) error = NULL;
        g_autofree char *desc = NULL;
        const char *job_id = NULL, *id = NULL;
        struct finalize_job *fj;
        struct ticket *t;

        if (fy_rpc_param_uuid(params, "job_id", true, &job_id, &error) < 0 ||
            fy_rpc_param_uuid(params, "uuid", true, &id, &error) < 0) {
                fy_rpc_call_gerror(call, error);
                return;
        }
        t = xfer_ticket_param(tr, call, params);
        if (!t || t->state != TICKET_READY) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "no ticket %s ready on this host (never added, removed, expired "
                                  "or already finalizing)", id);
                return;
        }
        if (!t->can_write) {
                fy_rpc_call_error(call, AGENT_ERR_TICKET, "ticket %s is read only: remove it instead", t->uuid);
                return;
        }
        fj = g_new0(struct finalize_job, 1);
        fj->tr = tr;
        fj->t = xfer_ticket_ref(t);
        desc = g_strdup_printf("finalize upload %s/%s/%s (ticket %s)", t->vol.ref.sd, t->vol.ref.img, t->vol.ref.vol, t->log_id);
        /* Its downloads end now: a client that stopped reading must not hold the finalize. */
        xfer_kill_streams(t, "the ticket is being finalized");
        t->state = TICKET_FINALIZING;
        t->drained = t->inflight == 0;
        if (agent_jobs_add(a->jobs, job_id, "storage", desc, finalize_run, fj, finalize_job_free, &error) < 0) {
                t->state = TICKET_READY;
                fy_rpc_call_gerror(call, error);
                return;
        }
        g_free(t->finalize_job);
        t->finalize_job = g_strdup(job_id);
        g_message("finalizing ticket %s as job %s", t->log_id, job_id);
        fy_rpc_call_return(call, json_true());
}

