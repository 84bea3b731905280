/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Inside the leaf "a job on a host": what flows/job.c (record, send,
 * decide), flows/jobwatch.c (follow), flows/recover.c (a lost job) and flows/verify.c (a
 * finished copy's checksums) share. Not for flows above the leaf: they
 * create leaves with engine_cmd_create and read their end.
 */
#include <stdbool.h>

#include <glib.h>
#include <jansson.h>

#include "kinds.h"

struct engine;

#define SPM_CALL_TIMEOUT_MS 30000     /* an SPM verb: metadata only */
#define COPY_CALL_TIMEOUT_MS 30000    /* starting a host job */
#define SEAL_ATTEMPTS 5               /* seal_template_volume: a held lease or a host out of the pool passes */

/* copy_data, merge, sparsify_volume: one volume (params.dst) changed in place, under its lease and generation. */
bool leaf_host_job(enum engine_kind k);
/* create_volume_container, create_thin_volume: Volume.create on the SPM (params.vol). */
bool leaf_creates_volume(enum engine_kind k);
/* An agent error another host would answer too (the generation moved, no space, a chain the job does not allow). */
bool leaf_refused_everywhere(gint64 code);
/* The end of a leaf (and of its job when it is a job's top command). */
void leaf_finish(struct engine *e, json_t *cmd, bool ok, const char *why);
/* Another try from scratch (the host excluded when exclude_host), or the end after max_attempts. */
void leaf_retry_or_fail(struct engine *e, json_t *cmd, unsigned max_attempts, const char *why, bool exclude_host);
/* What an event calls the leaf's agent job: "copy_data", "merge" … */
const char *leaf_job_noun(json_t *cmd);
/* Records host, a new agent job id (returned) and the generation before the call; NULL: not recorded, do not call. */
char *leaf_mark_sent(struct engine *e, json_t *cmd, const char *host, gint64 generation);
/* The command's data, its phase unchanged. */
int leaf_save(struct engine *e, json_t *cmd, json_t *data) G_GNUC_WARN_UNUSED_RESULT;
/* Nothing to do for this command before `seconds` from now (a backoff that survives restarts). */
void leaf_later(struct engine *e, json_t *cmd, json_t *data, gint64 seconds);
/* 5, 10, 20, 30, 30 … s */
gint64 leaf_backoff(gint64 attempt);
/* The reply to the call that starts an agent job. */
void leaf_on_sent(struct engine *e, json_t *cmd, json_t *result, const GError *error, void *extra);
/* key (a command, or a command's side) is asked about no sooner than poll_interval from now, unless an event
 * reports its job's end. */
void leaf_poll_start(const char *key);
/* key was asked about at least poll_interval ago (or never): true, and counts a poll now. */
bool leaf_poll_due(struct engine *e, const char *key);
/* The host's recorded status is status (a host not in the inventory is "gone"). */
bool leaf_host_status_is(struct engine *e, const char *host, const char *status);
bool leaf_host_is_up(struct engine *e, const char *host);
/* The agent job as the host reports it ({status, progress, error}): progress, or the leaf's end. */
void leaf_job_finished(struct engine *e, json_t *cmd, json_t *job);

/* Like leaf_retry_or_fail, but a lost host's try is not counted (the pick takes only hosts that are up). */
void leaf_retry_lost(struct engine *e, json_t *cmd, unsigned max_attempts, const char *why, bool exclude_host);

/* ---- flows/jobwatch.c ---- */
/* A sent leaf's round: its end event, a cancel or stall abort, a lost host, else Host.getJobs once per
 * poll_interval. */
void leaf_watch(struct engine *e, json_t *cmd);

/* ---- flows/recover.c ---- */
/* Any usable host but `not` (which may be NULL); NULL if none. */
char *leaf_other_usable_host(struct engine *e, const char *not);
/* The copy's host stopped answering: decided from the destination through another host, fenced when long lost. */
void leaf_copy_lost(struct engine *e, json_t *cmd, json_t *data, const char *why);
/* Reads the destination through another host and decides: done, fenced, wait, or fence. */
void leaf_copy_probe(struct engine *e, json_t *cmd, json_t *data);
/* Follows the fencing job recorded in data. */
void leaf_fence_watch(struct engine *e, json_t *cmd, json_t *data);
/* The host answered without the job, or the SPM changed under a metadata job: learn the outcome from storage. */
void leaf_job_missing(struct engine *e, json_t *cmd);
/* create_volume_container answered "exists": finished before, or half-made (removed and made again)? */
void leaf_verify_volume_created(struct engine *e, json_t *cmd, const char *host);
/* Follows the removal of a half-made volume recorded in data; once it ended, reads the volume again. */
void leaf_delete_watch(struct engine *e, json_t *cmd, json_t *data);

/* ---- flows/jobstall.c (the policy: stall.c) ---- */
/* A running or aborting host job's poll: judged, flagged, aborted for a retry (stall_action = retry). */
void leaf_stall_check(struct engine *e, json_t *cmd, json_t *job, double progress, bool running);
/* The engine aborted this command's job for stalling and nobody cancelled it: its end is retried. */
bool leaf_stall_retry(json_t *cmd);
/* Its stall abort is overdue (or was): fenced as a lost job; true when that path has it. */
bool leaf_stall_fence(struct engine *e, json_t *cmd, json_t *data);

/* ---- flows/verify.c ---- */
/* A copy's job ended done: with verify_copies, records both checksums to take in data (saved; true) and
 * sends them, instead of ending now. */
bool leaf_verify_begin(struct engine *e, json_t *cmd, json_t *data);
/* A round of a copy being verified (data.verify). */
void leaf_verify_watch(struct engine *e, json_t *cmd, json_t *data);
/* checksum_volume: Volume.checksum on any up host. */
void leaf_checksum_start(struct engine *e, json_t *cmd, json_t *p);

/* ---- flows/seal.c ---- */
/* seal_template_volume: SDM.update_volume type SHARED on any usable host but the SPM. */
void leaf_seal_start(struct engine *e, json_t *cmd, json_t *p);
/* Its host lost or the job forgotten: the volume's type (read through any usable host) decides. */
void leaf_sealed_verify(struct engine *e, json_t *cmd);
