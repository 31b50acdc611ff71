/* test_backoff.c: backoff schedule, jitter, expiry and circuit-breaker transitions, table-driven. */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "backoff.h"
#include "log.h"
#include "util.h"
#include "tap.h"

#define T0	1700000000000LL
#define S	1000LL
#define MIN	(60 * S)

static const struct backoff_policy pol = { 5 * S, 30 * MIN, 7 * 24 * 60 * MIN };

static void
test_schedule(void)
{
	/* Lowest (rnd 0) and highest (rnd ~0) jitter, offsets from T0. */
	static const struct {
		uint32_t attempts;
		uint64_t rnd;
		int64_t not_before;
		int64_t want;
	} t[] = {
		{ 0, 0, 0, 0 },
		{ 0, 0, T0 + 9, 9 },
		{ 1, 0, 0, 5 * S },			/* [5 s, 10 s] */
		{ 1, UINT64_MAX, 0, 10 * S },
		{ 2, 0, 0, 10 * S + 5 * S },		/* slot 10 s + [5 s, 20 s] */
		{ 2, UINT64_MAX, 0, 30 * S },
		{ 3, 0, 0, 35 * S },
		{ 3, UINT64_MAX, 0, 70 * S },
		{ 3, UINT64_MAX / 2, 0, 30 * S + 5 * S + 17500 },
		/* caps 10,20,...,1280 s, then 1800 s: slot of attempt 10 = 2550 + 1800 s */
		{ 10, 0, 0, 4350 * S + 5 * S },
		{ 10, UINT64_MAX, 0, 4350 * S + 1800 * S },
		{ 11, 0, 0, 6150 * S + 5 * S },
		{ 2, 0, T0 + 3600 * S, 3600 * S },	/* Retry-After wins */
		{ 2, 0, T0 + 1 * S, 15 * S },		/* an earlier not-before does not */
	};
	size_t i;

	for (i = 0; i < nitems(t); i++)
		is_int(backoff_next(&pol, T0, t[i].attempts, t[i].rnd,
		    t[i].not_before) - T0, t[i].want,
		    "attempts %u rnd %016llx not_before %+lld", t[i].attempts,
		    (unsigned long long)t[i].rnd, (long long)(t[i].not_before ?
		    t[i].not_before - T0 : 0));
}

static void
test_properties(void)
{
	unsigned char key[32];
	uint32_t n, k;
	int64_t prev, next, cap, lo;
	double sum = 0;
	int mono = 1, inrange = 1, same = 1, differ = 0;
	struct backoff_policy odd = { 0, -5, 0 };

	for (k = 0; k < 500; k++) {
		memset(key, 0, sizeof(key));
		memcpy(key, &k, sizeof(k));
		prev = T0;
		for (n = 1; n < 40; n++) {
			next = backoff_next(&pol, T0, n,
			    backoff_rand(key, sizeof(key), n), 0);
			if (next <= prev)
				mono = 0;
			prev = next;
			if (n == 4) {
				/* slot 10+20+40 s, then [5 s, 80 s] */
				lo = T0 + 75 * S;
				cap = 80 * S;
				if (next < lo || next > T0 + 70 * S + cap)
					inrange = 0;
				sum += (double)(next - lo) / (double)(cap - 5 * S);
			}
			if (next != backoff_next(&pol, T0, n,
			    backoff_rand(key, sizeof(key), n), 0))
				same = 0;
		}
		if (backoff_rand(key, sizeof(key), 1) !=
		    backoff_rand(key, sizeof(key), 2))
			differ++;
	}
	ok(mono, "each attempt strictly later than the one before");
	ok(inrange, "jitter within [min, cap] of its slot");
	ok(sum / 500 > 0.45 && sum / 500 < 0.55,
	    "jitter spread evenly over the slot (mean %.3f)", sum / 500);
	ok(same, "same key and attempt: same schedule (restart reproduces it)");
	is_int(differ, 500, "attempts of one key get different jitter");
	ok(backoff_rand("a", 1, 1) != backoff_rand("b", 1, 1),
	    "different keys get different jitter");

	next = backoff_next(&pol, T0, UINT32_MAX, UINT64_MAX, 0);
	ok(next > T0 && next <= INT64_MAX / 4,
	    "4 billion attempts: no overflow (%lld)", (long long)next);
	is_int(backoff_next(&odd, T0, 3, 0, 0), T0 + 3,
	    "min 0 and max < min treated as 1 ms each");
}

static void
test_expiry(void)
{
	static const struct {
		int64_t max_age, at;
		int want;
	} t[] = {
		{ 7 * 24 * 3600 * S, 0, 0 },
		{ 7 * 24 * 3600 * S, 7 * 24 * 3600 * S - 1, 0 },
		{ 7 * 24 * 3600 * S, 7 * 24 * 3600 * S, 1 },
		{ 0, 100LL * 365 * 24 * 3600 * S, 0 },	/* 0 = never */
	};
	struct backoff_policy p = pol;
	size_t i;

	for (i = 0; i < nitems(t); i++) {
		p.max_age_ms = t[i].max_age;
		is_int(backoff_expired(&p, T0, T0 + t[i].at), t[i].want,
		    "expired(max_age %lld, age %lld)", (long long)t[i].max_age,
		    (long long)t[i].at);
	}
}

enum op { ALLOW, OK_, FAIL, OUTAGE, RELEASE };

/* One step of a breaker scenario: do op at t, then check the breaker. */
struct step {
	enum op		 op;
	int64_t		 t;		/* offset from T0, in s */
	int64_t		 until;		/* OUTAGE: offset in s, -1 = none */
	int		 ret;		/* ALLOW: expected answer */
	enum breaker_state st;
	uint32_t	 factor;
	int64_t		 next;		/* next_allowed offset in s, -1 = INT64_MAX */
};

static void
run_scenario(const char *name, const struct step *s, size_t n)
{
	struct breaker_policy p;
	struct breaker b;
	int64_t now, na;
	size_t i;
	int r, good = 1;

	breaker_policy_default(&p);
	p.threshold = 3;
	p.penalty_min_ms = 10 * S;
	p.penalty_max_ms = 40 * S;
	p.decay_successes = 2;
	p.ramp_start = 100;
	p.ramp_step = 300;
	breaker_init(&b);
	for (i = 0; i < n; i++) {
		now = T0 + s[i].t * S;
		r = -1;
		switch (s[i].op) {
		case ALLOW:
			r = breaker_allow(&b, now);
			break;
		case OK_:
			breaker_success(&b, &p);
			break;
		case FAIL:
			breaker_failure(&b, &p, now);
			break;
		case OUTAGE:
			breaker_outage(&b, &p, now,
			    s[i].until < 0 ? 0 : T0 + s[i].until * S);
			break;
		case RELEASE:
			breaker_release(&b);
			break;
		}
		na = breaker_next_allowed(&b, now);
		if ((s[i].op == ALLOW && r != s[i].ret) || b.state != s[i].st ||
		    breaker_factor(&b) != s[i].factor ||
		    na != (s[i].next < 0 ? INT64_MAX : T0 + s[i].next * S)) {
			diag("%s step %zu: ret %d state %s factor %u next %lld",
			    name, i, r, breaker_state_name(b.state),
			    breaker_factor(&b), na == INT64_MAX ? -1LL :
			    (long long)((na - T0) / S));
			good = 0;
			break;
		}
	}
	ok(good, "breaker: %s", name);
}

#define C	BREAKER_CLOSED
#define O	BREAKER_OPEN
#define H	BREAKER_HALF_OPEN

static void
test_breaker(void)
{
	/* Failures open it; the penalty doubles per opening up to the cap. */
	static const struct step grow[] = {
		{ ALLOW, 0, 0, 1, C, 1000, 0 },
		{ FAIL, 0, 0, 0, C, 500, 0 },
		{ FAIL, 1, 0, 0, C, 250, 1 },
		{ OK_, 1, 0, 0, C, 550, 1 },		/* success resets the count */
		{ FAIL, 2, 0, 0, C, 275, 2 },
		{ FAIL, 2, 0, 0, C, 137, 2 },
		{ FAIL, 2, 0, 0, O, 0, 12 },		/* 3rd in a row: open 10 s */
		{ ALLOW, 5, 0, 0, O, 0, 12 },
		{ FAIL, 6, 0, 0, O, 0, 12 },		/* late failures change nothing */
		{ ALLOW, 12, 0, 1, H, 0, -1 },		/* the probe */
		{ ALLOW, 12, 0, 0, H, 0, -1 },		/* only one */
		{ FAIL, 13, 0, 0, O, 0, 33 },		/* probe failed: 20 s */
		{ ALLOW, 33, 0, 1, H, 0, -1 },
		{ FAIL, 33, 0, 0, O, 0, 73 },		/* 40 s */
		{ ALLOW, 73, 0, 1, H, 0, -1 },
		{ FAIL, 73, 0, 0, O, 0, 113 },		/* capped at 40 s */
		{ ALLOW, 113, 0, 1, H, 0, -1 },
		{ RELEASE, 114, 0, 0, H, 0, 114 },	/* a 429: probe again */
		{ ALLOW, 114, 0, 1, H, 0, -1 },
		{ OK_, 115, 0, 0, C, 100, 115 },	/* closed, ramp 10% */
		{ OK_, 115, 0, 0, C, 400, 115 },
		{ OK_, 116, 0, 0, C, 700, 116 },	/* 2 successes: penalty 40 -> 20 s */
		{ FAIL, 116, 0, 0, C, 350, 116 },	/* ramp halves */
		{ OK_, 116, 0, 0, C, 650, 116 },
		{ OK_, 117, 0, 0, C, 950, 117 },	/* penalty 20 -> 10 s... */
		{ OK_, 117, 0, 0, C, 1000, 117 },
		{ OK_, 117, 0, 0, C, 1000, 117 },	/* ...-> 10 s is the floor */
		{ FAIL, 120, 0, 0, C, 500, 120 },
		{ FAIL, 120, 0, 0, C, 250, 120 },
		{ FAIL, 120, 0, 0, O, 0, 130 },		/* penalty back at 10 s */
	};
	/* An outage opens at once; repeated signals extend, never grow. */
	static const struct step outage[] = {
		{ OUTAGE, 0, -1, 0, O, 0, 10 },
		{ OUTAGE, 5, 300, 0, O, 0, 300 },	/* Latarnia: until 300 s */
		{ OUTAGE, 6, 100, 0, O, 0, 300 },	/* shorter: ignored */
		{ ALLOW, 299, 0, 0, O, 0, 300 },
		{ ALLOW, 300, 0, 1, H, 0, -1 },
		{ OUTAGE, 301, -1, 0, O, 0, 321 },	/* during the probe: 20 s */
		{ ALLOW, 321, 0, 1, H, 0, -1 },
		{ OK_, 322, 0, 0, C, 100, 322 },
		{ OK_, 380, 0, 0, C, 400, 380 },
	};

	run_scenario("failures, growing penalty, probe, ramp, decay", grow,
	    nitems(grow));
	run_scenario("outage signal", outage, nitems(outage));
	is_str(breaker_state_name(BREAKER_HALF_OPEN), "half-open", "state name");
}

int
main(void)
{
	log_init("test_backoff", 1, LOG_LVL_WARN);
	test_schedule();
	test_properties();
	test_expiry();
	test_breaker();
	return tap_done();
}
