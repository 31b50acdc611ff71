/*
 * backoff.h: retry schedules and the per-context circuit breaker.  Pure
 * functions: time (ms) and randomness are passed in, nothing reads a clock,
 * so a restart reproduces every schedule from persisted facts.
 */
#ifndef KSEFD_BACKOFF_H
#define KSEFD_BACKOFF_H

#include <stddef.h>
#include <stdint.h>

/* retry.backoff_min, retry.backoff_max, retry.max_age (0 = never). */
struct backoff_policy {
	int64_t	min_ms;
	int64_t	max_ms;
	int64_t	max_age_ms;
};

/*
 * The random source for attempt `attempt` of an invoice: a hash of its
 * idempotency key and the attempt number, so the jitter needs no storage.
 */
uint64_t backoff_rand(const void *key, size_t keylen, uint32_t attempt);

/*
 * When the next attempt may start, after `attempts` failed ones (the first
 * of which started at first_ms): attempt n waits cap(n) = min(max, min*2^n)
 * nominally; the actual wait is uniform in [min, cap(n)] (full jitter,
 * chosen by rnd) counted from the end of the previous nominal slot, so the
 * schedule only moves forward.  Never earlier than not_before (Retry-After;
 * pass now + something to avoid catching up on a schedule that fell behind).
 * attempts == 0 gives max(first_ms, not_before).
 */
int64_t	 backoff_next(const struct backoff_policy *, int64_t first_ms,
	    uint32_t attempts, uint64_t rnd, int64_t not_before);
/* Whether an invoice first tried at first_ms is past max_age at t. */
int	 backoff_expired(const struct backoff_policy *, int64_t first_ms,
	    int64_t t);

/*
 * Circuit breaker, one per KSeF context.  CLOSED lets requests through
 * with a permitted factor (per mille of the normal concurrency and rate)
 * that ramps up by successes after an outage.  `threshold` consecutive
 * transient failures, or an outage signal, OPEN it for a penalty period
 * that doubles on each opening (capped at penalty_max) and steps back down
 * after `decay_successes` successes.  When the period ends it is HALF_OPEN:
 * exactly one probe request; its success closes the breaker at factor
 * ramp_start, its failure opens it again with a longer penalty.
 */
struct breaker_policy {
	uint32_t	threshold;
	int64_t		penalty_min_ms;
	int64_t		penalty_max_ms;
	uint32_t	decay_successes;
	uint32_t	ramp_start;	/* per mille, after the probe succeeds */
	uint32_t	ramp_step;	/* per mille added per success */
};

enum breaker_state {
	BREAKER_CLOSED,
	BREAKER_OPEN,
	BREAKER_HALF_OPEN
};

/* Embeddable; change it only through the functions below. */
struct breaker {
	enum breaker_state	 state;
	uint32_t		 failures;	/* consecutive transient ones */
	uint32_t		 level;		/* penalty = min << level */
	uint32_t		 successes;	/* toward the next decay step */
	uint32_t		 factor;	/* per mille permitted */
	int			 probing;	/* half-open probe in flight */
	int64_t			 open_until;
};

/* threshold 5, penalty 30 s .. 15 min, decay after 20, ramp 10% + 5%. */
void	 breaker_policy_default(struct breaker_policy *);
/* Closed, full factor, no history. */
void	 breaker_init(struct breaker *);
const char *breaker_state_name(enum breaker_state);
/*
 * May a request start now?  In HALF_OPEN a yes claims the single probe:
 * its outcome must be reported with breaker_success, breaker_failure or
 * breaker_release.
 */
int	 breaker_allow(struct breaker *, int64_t now);
/* Earliest time breaker_allow may say yes (INT64_MAX while a probe runs). */
int64_t	 breaker_next_allowed(const struct breaker *, int64_t now);
/* Per mille of the normal concurrency and rate permitted now (0 unless CLOSED). */
uint32_t breaker_factor(const struct breaker *);
void	 breaker_success(struct breaker *, const struct breaker_policy *);
/* A transient failure (5xx, timeout, reset); not a 429, not a rejection. */
void	 breaker_failure(struct breaker *, const struct breaker_policy *,
	    int64_t now);
/* Outage signal (e.g. Latarnia): open at once, until at least `until` (0: no end given). */
void	 breaker_outage(struct breaker *, const struct breaker_policy *,
	    int64_t now, int64_t until);
/* A probe ended with no verdict (429, cancelled): another may be sent. */
void	 breaker_release(struct breaker *);

#endif
