/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * The daemons' log records. Two sinks, chosen once by fy_log_setup():
 *
 *  - journald, when stderr is the journal stream systemd gave the unit
 *    ($JOURNAL_STREAM names stderr's device:inode): one entry per record
 *    with MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and the fields FERRY_HOST,
 *    FERRY_JOB_ID and FERRY_CORRELATION_ID (the last two when known);
 *  - otherwise one line on stderr:
 *    "YYYY-mm-dd HH:MM:SS.mmm LEVEL [domain] message job_id=… flow_id=…"
 *    (the key=value pairs only when known; flow_id is VDSM's name).
 *
 * Every record is one line: control characters, backslashes, invalid UTF-8
 * and Unicode line separators in the message are escaped (\n, \\, \xNN,
 * \u2028), so a newline forged into a peer's string can never start a record.
 *
 * The context (job id, correlation id) belongs to the calling thread: set
 * it around work for one request or job, restore it afterwards.
 */

#include <stdbool.h>
#include <glib.h>

#define FY_LOG_JOB_ID_MAX 64
#define FY_LOG_CORRELATION_ID_MAX 128

/* level: debug, info, warning or error (validated by the daemon's config). host: FERRY_HOST (may be NULL). */
void fy_log_setup(const char *level, const char *program, const char *host);
/* Only the threshold, safe while other threads log (a SIGHUP reload). */
void fy_log_set_level(const char *level);

/* True for the levels fy_log_setup() knows. */
bool fy_log_level_valid(const char *level);

struct fy_log_context {
        char job_id[FY_LOG_JOB_ID_MAX + 1];
        char correlation_id[FY_LOG_CORRELATION_ID_MAX + 1];
};

/*
 * Sets this thread's context; NULL or "" clears a field. Longer values are
 * cut (callers validate ids first). The previous context goes to
 * *ret_saved (may be NULL) for fy_log_context_restore().
 */
void fy_log_context_set(const char *job_id, const char *correlation_id, struct fy_log_context *ret_saved);
void fy_log_context_restore(const struct fy_log_context *saved);
/* This thread's correlation id, NULL when none. */
const char *fy_log_correlation_id(void);

/* s (len bytes, or up to NUL with len -1) with the escapes above appended to out. */
void fy_log_escape(GString *out, const char *s, gssize len);

/* A correlation id as accepted from outside: 1-128 of [A-Za-z0-9._:-]. */
bool fy_log_correlation_id_valid(const char *id);
