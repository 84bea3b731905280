/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * A scripted double of a data center's agents, for the engine's flow tests
 * (test-flows.c): the one double of the test suite (the functional tests
 * run real agents and sanlock). It answers the engine's host calls
 * (struct engine_host_transport, hosts.h) from an in-memory model of the
 * storage: volumes with parent, format, legality, generation and type, the
 * SPM, the agent jobs. The whole model is one JSON object, so a test can
 * save it with a crash image and load it into the next engine life: the
 * hosts outlive an engine crash.
 *
 * Semantics kept from the agent (ARCHITECTURE.md "ferry-agent"): replies
 * come later from the main loop, never from inside the call; a verb that
 * changes storage carries a job id, a second call with that id answers 85;
 * SPM verbs are refused (654) off the SPM; a job runs until the next
 * hd_tick, then ends and pushes its "|jobs|status|<id>" event; a copy or
 * merge needs the generation it was sent with (911) and leaves the volume
 * LEGAL at +1; SDM.update_volume fences (generation) and marks (legality,
 * type). Content is modelled so checksums mean something: each volume holds
 * a token of data, its guest view is the tokens of its chain.
 *
 * Write before act: each call that carries a job id asks `recorded` whether
 * the engine's store already holds that id (committed, read through another
 * connection); a call the store does not know is a violation, listed in the
 * model for the test to assert on.
 */
#include <stdbool.h>
#include <jansson.h>

#include "hosts.h"

struct hd;

/* Whether the engine's store holds agent job id `job` (committed). */
typedef bool (*hd_recorded_fn)(void *data, const char *job);

/* A double over model (a new one when NULL; the double owns it). */
struct hd *hd_new(json_t *model);
void hd_free(struct hd *d);
/* The transport to set as e->transport before engine_hosts_init. */
const struct engine_host_transport *hd_transport(struct hd *d);
void hd_attach(struct hd *d, struct engine *e, hd_recorded_fn recorded, void *data);
/* The model (borrowed): save it with json_dump_file, give it to hd_new in the next life. */
json_t *hd_model(struct hd *d);

/* Ends the running jobs (pushing their events). */
void hd_tick(struct hd *d);
/* Replies waiting to be delivered. */
unsigned hd_pending(struct hd *d);

/*
 * A fault, taken by the next `count` matching calls: a verb (host NULL: on
 * any host) answered with error `code` ("refuse"), its job ending failed
 * with `code` ("fail"), or the host taking the call and dying ("down": no
 * answer from it any more, its jobs never end, its SPM lease expires; its
 * volume leases are free, as sanlock frees a dead process's), its job
 * running until Job.abort ends it ("hang"), or a copy whose job ends done
 * but whose destination holds other data than the source ("corrupt": its
 * checksum differs). Faults add up: several can wait at once.
 */
void hd_fault(struct hd *d, const char *verb, const char *host, const char *mode, int code, int count);
/* Calls of verb so far, on every host (and every life that shared the model). */
gint64 hd_calls(struct hd *d, const char *verb);
/* Every host's job_limit in Host.getStats from now on (10 by default), kept in the model. */
void hd_set_job_limit(struct hd *d, int limit);
/* Copy jobs started on a host that already ran job_limit copies (should stay 0). */
gint64 hd_copies_over_limit(struct hd *d);
/* A guest write into the volume (its data changes). */
void hd_write(struct hd *d, const char *sd, const char *vol, const char *token);
