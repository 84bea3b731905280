/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/*
 * Failed-login throttling (docs/rest-api.md, "Failed logins"): a pure
 * policy, the time given by the caller, so the unit test drives it.
 *
 * Three counters per attempt: the pair (user, source address), the address,
 * and the user alone; each slows down from its 5th failure (issue 11: "5
 * failed logins for one user or one address"). An IPv6 source counts by
 * its /64. A pair that gave the right password in the last
 * THROTTLE_TRUST_S is not held back by the user-wide count: guesses from
 * elsewhere cannot slow the real user from their usual address; a right
 * password clears the pair's and the address's failures. Attempts in flight
 * count as failures until they end, so parallel guesses wait like
 * sequential ones. Past a few in flight per pair or per address the attempt
 * is refused at once (429): those limits bound what one sender holds. A
 * user's attempts in flight are never refused, only delayed (at most
 * THROTTLE_DELAY_MAX_S): a refusal per user would let anyone lock the user
 * out. A refused attempt adds no key. Two bounded tables, each of max_keys,
 * dropping the least recently used key past its size (never the whole
 * table): failures and attempts in one, trusted pairs in the other, which
 * only a right password enters, so a flood of failures cannot evict a
 * trusted pair. Everything is held in memory: a restart forgets it.
 */
#include <stdbool.h>

#include <glib.h>

#define THROTTLE_FREE 5                /* failures of a pair or an address before the delay starts */
#define THROTTLE_USER_FREE 5           /* failures of a user from anywhere before the delay starts */
#define THROTTLE_TRUST_S (7 * 86400)   /* a pair's right password exempts it from the user count this long */
#define THROTTLE_DELAY_MAX_S 30
#define THROTTLE_FORGET_S 900          /* a key with nothing for this long starts over */
#define THROTTLE_INFLIGHT_PAIR 4       /* attempts in flight per (user, address) before 429 */
#define THROTTLE_INFLIGHT_ADDRESS 8    /* attempts in flight per address before 429 */
#define THROTTLE_EVENT_INTERVAL_S 60   /* one failed-login event per pair per minute, with a count */
#define THROTTLE_EVENTS_PER_MINUTE 100 /* and at most this many from all pairs */

struct throttle;
struct throttle_attempt;

struct throttle *throttle_new(unsigned max_keys);
void throttle_free(struct throttle *t);
/* Keys held now in the failures table and in the trust table (for the tests). */
unsigned throttle_size(struct throttle *t);
unsigned throttle_trusted_size(struct throttle *t);
/* Failures counted for a key ("p:USER\nADDR", "a:ADDR", "u:USER"; ADDR of IPv6 "PREFIX::/64"); 0 when absent or forgotten. */
unsigned throttle_failures(struct throttle *t, const char *key, gint64 now);

/*
 * A login attempt of user (NULL: not a valid name) from address begins at
 * now (seconds). 0: *ret holds the attempt, which waits *ret_delay_s before
 * its password is checked. -EBUSY: too many attempts of this pair or
 * address are in flight (never for the user alone); refuse with 429 and
 * Retry-After *ret_delay_s; nothing was added.
 */
int throttle_begin(struct throttle *t, const char *user, const char *address, gint64 now,
                   struct throttle_attempt **ret, unsigned *ret_delay_s);

/* user (a valid name) gave the right password from address in the last THROTTLE_TRUST_S; adds nothing. */
bool throttle_trusted(struct throttle *t, const char *user, const char *address, gint64 now);

struct throttle_outcome {
        bool event;                    /* record a failed-login event now */
        unsigned suppressed;           /* failures of the pair not shown since its last event */
        unsigned next_delay_s;         /* what the next attempt of this pair or address waits */
        bool first_delay;              /* the delay starts with this failure: log it */
};

/*
 * The attempt ended: success clears the pair and the address and trusts the pair; a failure
 * counts on all three keys. aborted: neither (the check never ran). Frees
 * the attempt; *ret_out (may be NULL) says what to record.
 */
void throttle_end(struct throttle *t, struct throttle_attempt *a, int result, gint64 now,
                  struct throttle_outcome *ret_out);

enum { THROTTLE_SUCCESS, THROTTLE_FAILURE, THROTTLE_ABORTED };
