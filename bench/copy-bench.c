/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * copy-bench MODE SRC DST [BUFFER_SIZE]
 *   raw           agent_copy_raw(SRC, DST): io_uring where the kernel allows it
 *   raw-threads   agent_copy_raw with AGENT_COPY_IO_THREADS (the synchronous thread pipeline)
 *   raw-buffered  agent_copy_raw with no_direct
 *   raw-nooffload agent_copy_raw with no_offload (never a reflink)
 *   qcow2         SRC qcow2 → DST qcow2 the way the agent runs it: agent_qemu_img_convert_shared
 *                 with a progress scale, a progress callback and a flow of an unlimited governor
 *   raw-qcow2     the same, SRC raw → DST qcow2
 *   checksum      agent_checksum_image(SRC, format DST: raw or qcow2); prints the digest too
 * Prints the wall-clock seconds of the copy on stdout.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "checksum.h"
#include "copy.h"
#include "qemuimg.h"

/* The agent_copy_raw modes. */
static const struct raw_mode {
        const char *name;
        enum agent_copy_io io;
        gboolean no_direct, no_offload;
} raw_modes[] = {
        { "raw",           AGENT_COPY_IO_AUTO,    FALSE, FALSE },
        { "raw-threads",   AGENT_COPY_IO_THREADS, FALSE, FALSE },
        { "raw-buffered",  AGENT_COPY_IO_AUTO,    TRUE,  FALSE },
        { "raw-nooffload", AGENT_COPY_IO_AUTO,    FALSE, TRUE },
};

static const struct raw_mode *raw_mode(const char *name)
{
        for (size_t i = 0; i < G_N_ELEMENTS(raw_modes); i++)
                if (strcmp(raw_modes[i].name, name) == 0)
                        return &raw_modes[i];
        return NULL;
}

static void no_progress(uint64_t done, uint64_t total, void *userdata)
{
        (void) done;
        (void) total;
        (void) userdata;
}

/* A qcow2 path as the agent's copy job runs it (sdm.c): the host's governor, progress parsed. */
static int agent_convert(const char *src, const char *src_fmt, const char *dst, GError **error)
{
        struct agent_rate_gov *gov = agent_rate_gov_new(0);
        struct agent_rate_flow *flow = agent_rate_flow_join(gov);
        int r;

        /* The agent passes the volume's capacity from its metadata (no qemu-img info); any scale times the same. */
        r = agent_qemu_img_convert_shared(src, src_fmt, dst, "qcow2", NULL, NULL, 1, flow, NULL,
                                          no_progress, NULL, error);
        agent_rate_flow_leave(flow);
        agent_rate_gov_free(gov);
        return r;
}

/*
 * The agent's raw copies always checkpoint (sdm.c): an fdatasync of the
 * destination about once a second, then its callback writes the sidecar.
 * The bench takes the same checkpoints so it times what the agent runs.
 */
static void no_checkpoint_record(uint64_t prefix, void *userdata)
{
        (void) prefix;
        (void) userdata;
}

int main(int argc, char **argv)
{
        struct agent_copy_options opts = { 0 };
        g_autoptr(GError) error = NULL;
        const char *mode;
        gint64 start;
        int r;

        if (argc < 4 || argc > 5) {
                fprintf(stderr, "usage: %s raw|raw-threads|raw-buffered|raw-nooffload|qcow2|raw-qcow2 SRC DST [BUFFER_SIZE]\n"
                                "       %s checksum IMAGE raw|qcow2\n", argv[0], argv[0]);
                return 2;
        }
        mode = argv[1];
        if (argc == 5)
                opts.buffer_size = (size_t) g_ascii_strtoull(argv[4], NULL, 10);
        /* For experiments: the copier's buffers in flight (default 4). */
        if (g_getenv("COPY_WORKERS"))
                opts.workers = (unsigned) g_ascii_strtoull(g_getenv("COPY_WORKERS"), NULL, 10);

        start = g_get_monotonic_time();
        if (raw_mode(mode)) {
                opts.io = raw_mode(mode)->io;
                opts.no_direct = raw_mode(mode)->no_direct;
                opts.no_offload = raw_mode(mode)->no_offload;
                opts.checkpoint = no_checkpoint_record;        /* default interval: 1 s, as the agent's */
                r = agent_copy_raw(argv[2], argv[3], &opts, NULL, NULL, NULL);
        } else if (strcmp(mode, "qcow2") == 0) {
                r = agent_convert(argv[2], "qcow2", argv[3], &error);
        } else if (strcmp(mode, "raw-qcow2") == 0) {
                r = agent_convert(argv[2], "raw", argv[3], &error);
        } else if (strcmp(mode, "checksum") == 0) {
                struct agent_checksum_result res;

                r = agent_checksum_image(argv[2], argv[3], 0, 0, 0, NULL, NULL, NULL, &res, &error);
                if (r == 0)
                        fprintf(stderr, "%s\n", res.checksum);
        } else {
                fprintf(stderr, "unknown mode %s\n", mode);
                return 2;
        }
        if (r < 0) {
                fprintf(stderr, "copy failed: %s\n", error ? error->message : strerror(-r));
                return 1;
        }
        printf("%.3f\n", (double) (g_get_monotonic_time() - start) / G_USEC_PER_SEC);
        return 0;
}
