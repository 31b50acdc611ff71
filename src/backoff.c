/* backoff.c: exponential backoff with full jitter, expiry, and the circuit breaker. */
#include "config.h"

#include <stdint.h>

#include "backoff.h"

/* Far enough from INT64_MAX that adding a time to it cannot overflow. */
#define BACKOFF_FAR	(INT64_MAX / 4)

/* splitmix64's finaliser: spreads every input bit over the output. */
static uint64_t
backoff_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* FNV-1a over the key, mixed with the attempt number. */
uint64_t
backoff_rand(const void *key, size_t keylen, uint32_t attempt)
{
	const unsigned char *p = key;
	uint64_t h = 0xcbf29ce484222325ULL;	/* FNV-1a offset basis */
	size_t i;

	for (i = 0; i < keylen; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return backoff_mix(h ^ backoff_mix((uint64_t)attempt +
	    0x9e3779b97f4a7c15ULL));
}

/* The policy's bounds made sane: min >= 1 ms, max >= min. */
static void
backoff_bounds(const struct backoff_policy *p, int64_t *min, int64_t *max)
{
	*min = p->min_ms > 0 ? p->min_ms : 1;
	if (*min > BACKOFF_FAR)
		*min = BACKOFF_FAR;
	*max = p->max_ms > *min ? p->max_ms : *min;
	if (*max > BACKOFF_FAR)
		*max = BACKOFF_FAR;
}

/* a + b, saturating at BACKOFF_FAR (both non-negative). */
static int64_t
backoff_add(int64_t a, int64_t b)
{
	return a > BACKOFF_FAR - b ? BACKOFF_FAR : a + b;
}

/* The nominal cap of attempt n >= 1: min(max, min * 2^n). */
static int64_t
backoff_cap(int64_t min, int64_t max, uint32_t n)
{
	int64_t c = min;

	while (n-- > 0 && c < max)
		c = c > max / 2 ? max : c * 2;
	return c < max ? c : max;
}

/* Sum of the nominal caps of attempts 1..k, saturating. */
static int64_t
backoff_slots(int64_t min, int64_t max, uint32_t k)
{
	int64_t s = 0, c = min;
	uint32_t i;

	for (i = 1; i <= k; i++) {
		c = c > max / 2 ? max : c * 2;
		if (c >= max)
			break;
		s += c;
	}
	if (i > k)
		return s;
	/* Attempts i..k all wait max. */
	if ((int64_t)(k - i + 1) > (BACKOFF_FAR - s) / max)
		return BACKOFF_FAR;
	return s + (int64_t)(k - i + 1) * max;
}

/* first + nominal slots of the earlier attempts + jitter in [min, cap(n)]. */
int64_t
backoff_next(const struct backoff_policy *p, int64_t first_ms,
    uint32_t attempts, uint64_t rnd, int64_t not_before)
{
	int64_t min, max, cap, t;
	uint64_t range;

	if (attempts == 0)
		t = first_ms;
	else {
		backoff_bounds(p, &min, &max);
		cap = backoff_cap(min, max, attempts);
		range = (uint64_t)(cap - min) + 1;
		t = backoff_add(backoff_slots(min, max, attempts - 1),
		    min + (int64_t)(((unsigned __int128)rnd * range) >> 64));
		t = first_ms > BACKOFF_FAR - t ? BACKOFF_FAR : first_ms + t;
	}
	return t > not_before ? t : not_before;
}

int
backoff_expired(const struct backoff_policy *p, int64_t first_ms, int64_t t)
{
	return p->max_age_ms > 0 && t - first_ms >= p->max_age_ms;
}

void
breaker_policy_default(struct breaker_policy *p)
{
	p->threshold = 5;
	p->penalty_min_ms = 30 * 1000;
	p->penalty_max_ms = 15 * 60 * 1000;
	p->decay_successes = 20;
	p->ramp_start = 100;
	p->ramp_step = 50;
}

void
breaker_init(struct breaker *b)
{
	b->state = BREAKER_CLOSED;
	b->failures = b->level = b->successes = 0;
	b->factor = 1000;
	b->probing = 0;
	b->open_until = 0;
}

const char *
breaker_state_name(enum breaker_state s)
{
	switch (s) {
	case BREAKER_CLOSED:
		return "closed";
	case BREAKER_OPEN:
		return "open";
	case BREAKER_HALF_OPEN:
		return "half-open";
	}
	return "?";
}

/* Open for the current penalty (at least until `until`), then grow it. */
static void
breaker_open(struct breaker *b, const struct breaker_policy *p, int64_t now,
    int64_t until)
{
	struct backoff_policy bp = { p->penalty_min_ms, p->penalty_max_ms, 0 };
	int64_t min, max, period;

	backoff_bounds(&bp, &min, &max);
	period = backoff_cap(min, max, b->level);
	b->state = BREAKER_OPEN;
	b->open_until = backoff_add(now > 0 ? now : 0, period);
	if (until > b->open_until)
		b->open_until = until;
	if (period < max)
		b->level++;
	b->failures = b->successes = 0;
	b->factor = 0;
	b->probing = 0;
}

/* Open until open_until, then one probe at a time. */
int
breaker_allow(struct breaker *b, int64_t now)
{
	switch (b->state) {
	case BREAKER_CLOSED:
		return 1;
	case BREAKER_OPEN:
		if (now < b->open_until)
			return 0;
		b->state = BREAKER_HALF_OPEN;
		b->probing = 0;
		/* FALLTHROUGH */
	case BREAKER_HALF_OPEN:
		if (b->probing)
			return 0;
		b->probing = 1;
		return 1;
	}
	return 0;
}

int64_t
breaker_next_allowed(const struct breaker *b, int64_t now)
{
	switch (b->state) {
	case BREAKER_CLOSED:
		return now;
	case BREAKER_OPEN:
		return b->open_until > now ? b->open_until : now;
	case BREAKER_HALF_OPEN:
		return b->probing ? INT64_MAX : now;
	}
	return now;
}

uint32_t
breaker_factor(const struct breaker *b)
{
	return b->state == BREAKER_CLOSED ? b->factor : 0;
}

/* Close after a probe; otherwise ramp up and decay the penalty. */
void
breaker_success(struct breaker *b, const struct breaker_policy *p)
{
	switch (b->state) {
	case BREAKER_OPEN:
		/* A late answer to a request sent before opening: wait for the probe. */
		return;
	case BREAKER_HALF_OPEN:
		b->state = BREAKER_CLOSED;
		b->probing = 0;
		b->failures = b->successes = 0;
		b->factor = p->ramp_start < 1000 ? p->ramp_start : 1000;
		return;
	case BREAKER_CLOSED:
		b->failures = 0;
		b->factor = b->factor + p->ramp_step < 1000 ?
		    b->factor + p->ramp_step : 1000;
		if (b->level > 0 && ++b->successes >= p->decay_successes) {
			b->level--;
			b->successes = 0;
		}
		return;
	}
}

/* Count toward opening; a failed probe reopens with a longer penalty. */
void
breaker_failure(struct breaker *b, const struct breaker_policy *p, int64_t now)
{
	switch (b->state) {
	case BREAKER_OPEN:
		return;
	case BREAKER_HALF_OPEN:
		breaker_open(b, p, now, 0);
		return;
	case BREAKER_CLOSED:
		/* Back off the ramp multiplicatively, but keep some traffic. */
		b->factor /= 2;
		if (b->factor < p->ramp_start)
			b->factor = p->ramp_start < 1000 ? p->ramp_start : 1000;
		if (++b->failures >= p->threshold)
			breaker_open(b, p, now, 0);
		return;
	}
}

/* Open now; if already open, only extend to `until`. */
void
breaker_outage(struct breaker *b, const struct breaker_policy *p, int64_t now,
    int64_t until)
{
	if (b->state == BREAKER_OPEN) {
		if (until > b->open_until)
			b->open_until = until;
		return;
	}
	breaker_open(b, p, now, until);
}

void
breaker_release(struct breaker *b)
{
	b->probing = 0;
}
