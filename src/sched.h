/*
 * sched.h: the submission pipeline.  It takes every invoice that is not
 * finished through its life cycle (DESIGN.md) — QUEUED -> SENDING ->
 * SUBMITTED -> ACCEPTED -> DONE, or REJECTED / FAILED — talking to KSeF
 * only through src/ksef/ksef.h, within the rate limits (one exact limiter
 * per context and endpoint group), with backoff, a circuit breaker per
 * context and a cap on requests in flight.
 *
 * Invariants kept here:
 *  - a send leaves the process only after the SENDING record (with its
 *    session reference and attempt count) has committed;
 *  - a SENDING record found at start, or a send whose outcome is unknown,
 *    is "in doubt": it is looked up in its session's invoice list by
 *    invoice hash and sent again only when KSeF does not have it;
 *  - KSeF's duplicate answer is resolved by fetching the original and
 *    comparing SHA-256: equal means accepted with the original number;
 *  - a 429 pauses the group for that context until Retry-After and is not
 *    a failed attempt; every state change goes through the store's
 *    transition call, which writes the audit event with it.
 */
#ifndef KSEFD_SCHED_H
#define KSEFD_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "ratelimit.h"
#include "record.h"

struct conf;
struct event_base;
struct http;
struct sched;
struct store;

/* Counters for status output and metrics. */
struct sched_stats {
	uint64_t	 jobs;			/* invoices not finished */
	uint64_t	 per_state[INV_ST_COUNT];	/* of those */
	uint64_t	 in_flight;		/* KSeF requests under way */
	uint64_t	 sent;			/* invoice sends started */
	uint64_t	 retry_after;		/* 429s seen */
	uint64_t	 transient;		/* transient failures */
	uint64_t	 in_doubt;		/* sends whose outcome was unknown */
	uint64_t	 resent;		/* in-doubt sends found absent and sent again */
	uint64_t	 duplicates;		/* duplicate answers resolved */
};

/*
 * Load every unfinished invoice from the store and start working.  The
 * transport and store are borrowed.  Caller frees with sched_free().
 */
struct sched	*sched_new(struct event_base *, struct store *, struct http *,
		    const struct conf *);
/* Take new settings (reload): contexts added/removed/changed, limits, intervals. */
void		 sched_update(struct sched *, const struct conf *);
/* A new invoice was committed as QUEUED (intake calls this). */
void		 sched_invoice_new(struct sched *, const struct record_invoice *);
/* Re-queue a FAILED invoice (ksefctl retry); -1 when it cannot be. */
int		 sched_invoice_retry(struct sched *, const unsigned char key[INV_KEY_LEN]);
/*
 * Put an invoice on hold (on != 0: it is not sent; one already sent is
 * still followed) or release it (back into the send queue), with an audit
 * event and no state change.  0 (also when it already was so); 1 when there
 * is no such invoice; 2 when it is finished (DONE, REJECTED, FAILED); -1 on
 * a store error.
 */
int		 sched_invoice_hold(struct sched *, const unsigned char key[INV_KEY_LEN],
		    int on);
/*
 * KSeF's availability service says it is out (on) or back (0).  While out
 * no send starts (requests in flight finish) and every context's circuit
 * breaker is opened, so that after the end sending resumes through its
 * probe and ramp rather than all at once.
 */
void		 sched_outage_set(struct sched *, int on);
/*
 * Called when an invoice ends REJECTED or FAILED (after the transition is
 * in the group being committed): the alert sinks hang here.
 */
typedef void (*sched_alert_cb)(const unsigned char key[INV_KEY_LEN],
	    const char *nip, enum inv_state to, int32_t code, const char *reason,
	    void *arg);
void		 sched_alert_set(struct sched *, sched_alert_cb, void *);
/*
 * Called when authenticating a context fails (a 429 is not a failure),
 * with KSeF's outcome name and reason; and once with outcome NULL when it
 * succeeds again after failures.
 */
typedef void (*sched_auth_alert_cb)(const char *nip, const char *outcome,
	    const char *reason, void *arg);
void		 sched_auth_alert_set(struct sched *, sched_auth_alert_cb, void *);
/*
 * Reconciliation: look at this unfinished invoice again now (poll its
 * session, fetch its UPO, or send / expire it).  1 when it is not in the
 * pipeline.
 */
int		 sched_invoice_recheck(struct sched *, const unsigned char key[INV_KEY_LEN]);
/*
 * POST /invoices/query/metadata for context nip through its invoice_metadata
 * limiter and token: 0 started (cb gets the result; a 429 pauses the group),
 * 1 not now (try again at *at), -1 no such context.  A query in flight when
 * the context goes away is cancelled without its callback.
 */
struct ksef_query;
struct ksef_result;
typedef void (*sched_meta_cb)(struct ksef_result *, void *arg);
int		 sched_metadata_query(struct sched *, const char *nip,
		    const struct ksef_query *, sched_meta_cb, void *, int64_t *at);
/* Start no new requests; those in flight finish. */
void		 sched_stop(struct sched *);
/* Requests in flight. */
unsigned	 sched_in_flight(const struct sched *);
void		 sched_stats_get(const struct sched *, struct sched_stats *);
/*
 * Retry-After histogram of sched_ctx_info: bucket i counts pauses of at
 * most 1 s << i; the last bucket counts longer ones.
 */
#define SCHED_RA_BUCKETS	11
#define SCHED_OUTCOMES		12	/* enum ksef_outcome values */

/* One context as seen by status output and metrics (a snapshot). */
struct sched_ctx_info {
	const char	*nip;
	uint64_t	 count[INV_ST_COUNT];	/* unfinished invoices per state */
	int64_t		 oldest_ms[INV_ST_COUNT];	/* their earliest received_ms; 0: none */
	int64_t		 headroom[RL_NGROUPS][RL_NWIN];	/* -1: window not limited */
	int64_t		 paused_until[RL_NGROUPS];	/* 429 pause end, 0: none */
	int64_t		 token_expiry_ms;	/* access token; 0: none */
	unsigned	 sessions_open;
	int		 breaker;		/* enum breaker_state */
	unsigned	 sending;		/* sends in flight */
	uint64_t	 requests[RL_NGROUPS];	/* KSeF requests started per group */
	uint64_t	 outcomes[SCHED_OUTCOMES];	/* answers per enum ksef_outcome */
	uint64_t	 ra_count[RL_NGROUPS];	/* 429s per group */
	int64_t		 ra_ms_sum[RL_NGROUPS];	/* Retry-After waited, ms */
	uint64_t	 ra_bucket[SCHED_RA_BUCKETS];	/* not cumulative */
};
/* Call cb for every configured context, in config order. */
void		 sched_ctx_foreach(const struct sched *, int64_t now,
		    void (*cb)(const struct sched_ctx_info *, void *), void *arg);
/* Cancel what is in flight (the store keeps every state) and free. */
void		 sched_free(struct sched *);

#endif
