/* test_ratelimit.c: window edges, pauses, reloads, persistence, and a randomised comparison with a naive limiter. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ratelimit.h"
#include "util.h"
#include "tap.h"

#define T0	1700000000000LL		/* some wall-clock ms */

static void
test_groups(void)
{
	struct ratelimit_limits l;
	int g;

	for (g = 0; g < RL_NGROUPS; g++)
		is_int(ratelimit_group_parse(ratelimit_group_name(g)), g,
		    "group %s round trip", ratelimit_group_name(g));
	is_int(ratelimit_group_parse("invoiceSend"), -1, "unknown group");
	ok(ratelimit_group_name(RL_NGROUPS) == NULL, "no name past the end");
	ratelimit_limits_default(RL_GROUP_INVOICE_SEND, &l);
	ok(l.max[0] == 10 && l.max[1] == 30 && l.max[2] == 180 &&
	    l.window_ms[0] == 1000 && l.window_ms[1] == 60000 &&
	    l.window_ms[2] == 3600000, "invoice_send defaults 10/30/180");
	ratelimit_limits_default(RL_GROUP_PUBLIC, &l);
	ok(l.max[0] == 60 && l.max[1] == 0 && l.max[2] == 0,
	    "public: 60/s only");
	ratelimit_limits_default(RL_GROUP_SESSION_INVOICE_LIST, &l);
	ok(l.max[0] == 10 && l.max[1] == 20 && l.max[2] == 200,
	    "session_invoice_list defaults 10/20/200");
}

static void
test_parse(void)
{
	static const struct {
		const char *in;
		int rc;
		uint32_t s, m, h;
		const char *err;
	} t[] = {
		{ "10 30 180", 0, 10, 30, 180, NULL },
		{ " 1\t2   3 ", 0, 1, 2, 3, NULL },
		{ "- 5 -", 0, 0, 5, 0, NULL },
		{ "0 0 0", 0, 0, 0, 0, NULL },
		{ "10 30", -1, 0, 0, 0, "expected 3 numbers" },
		{ "", -1, 0, 0, 0, "got 0" },
		{ "1 2 3 4", -1, 0, 0, 0, "got more: \"4\"" },
		{ "a 2 3", -1, 0, 0, 0, "per second limit: \"a\"" },
		{ "1 2x 3", -1, 0, 0, 0, "per minute limit: \"2x\"" },
		{ "1 2 -3", -1, 0, 0, 0, "per hour limit: \"-3\"" },
		{ "1 2 99999999999999999999", -1, 0, 0, 0, "at most" },
		{ "1 2000000 3", -1, 0, 0, 0, "per minute limit: must be" },
	};
	struct ratelimit_limits l;
	char err[256];
	size_t i;
	int rc;

	for (i = 0; i < nitems(t); i++) {
		memset(&l, 0, sizeof(l));
		l.window_ms[0] = 7;
		err[0] = '\0';
		rc = ratelimit_limits_parse(t[i].in, &l, err, sizeof(err));
		if (t[i].rc == 0)
			ok(rc == 0 && l.max[0] == t[i].s && l.max[1] == t[i].m &&
			    l.max[2] == t[i].h && l.window_ms[0] == 7,
			    "parse \"%s\"", t[i].in);
		else if (!ok(rc == -1 && strstr(err, t[i].err) != NULL,
		    "parse \"%s\" refused: %s", t[i].in, err))
			diag("want \"%s\"", t[i].err);
	}
}

static struct ratelimit *
rl_make(uint32_t s, uint32_t m, uint32_t h)
{
	struct ratelimit_limits l = {
		{ s, m, h }, { 1000, 60000, 3600000 }
	};

	return ratelimit_new(&l);
}

/* A greedy client: start a request whenever allowed; return the times. */
static int
greedy(struct ratelimit *rl, int64_t from, int64_t to, int64_t *out, int max)
{
	int64_t t = from;
	int n = 0;

	while (n < max) {
		t = ratelimit_next_allowed(rl, t);
		if (t >= to)
			break;
		ratelimit_record(rl, t);
		out[n++] = t;
	}
	return n;
}

static int
count_in(const int64_t *ts, int n, int64_t from, int64_t to)
{
	int i, c = 0;

	for (i = 0; i < n; i++)
		if (ts[i] >= from && ts[i] < to)
			c++;
	return c;
}

static void
test_edges(void)
{
	struct ratelimit *rl = rl_make(3, 0, 0);
	int64_t ts[400], room[RL_NWIN], worst = 0;
	int i, n;

	for (i = 0; i < 3; i++) {
		is_int(ratelimit_next_allowed(rl, T0), T0, "start %d at T0", i);
		ratelimit_record(rl, T0);
	}
	is_int(ratelimit_next_allowed(rl, T0), T0 + 1000,
	    "4th waits exactly one window");
	is_int(ratelimit_next_allowed(rl, T0 + 999), T0 + 1000,
	    "still closed 1 ms before the edge");
	is_int(ratelimit_next_allowed(rl, T0 + 1000), T0 + 1000,
	    "open at the edge");
	ratelimit_headroom(rl, T0 + 999, room);
	ok(room[0] == 0 && room[1] == -1 && room[2] == -1,
	    "headroom 0 at T0+999, other windows unlimited");
	ratelimit_headroom(rl, T0 + 1000, room);
	is_int(room[0], 3, "headroom 3 at the edge");
	ratelimit_free(rl);

	/* Greedy over 10 s: exactly 3 per second, never more in any window. */
	rl = rl_make(3, 0, 0);
	n = greedy(rl, T0, T0 + 10000, ts, 400);
	is_int(n, 30, "greedy gets exactly 3 per second over 10 s");
	for (i = 0; i + 3 < n; i++)
		if (ts[i + 3] - ts[i] < 1000)
			worst++;
	is_int(worst, 0, "no 4 starts within any 1 s window");
	ratelimit_free(rl);

	/* invoice_send: 10/s, 30/min, 180/h with synthetic time. */
	rl = rl_make(10, 30, 180);
	n = greedy(rl, T0, T0 + 2 * 3600000, ts, 400);
	is_int(n, 360, "360 starts in two hours");
	is_int(count_in(ts, n, T0, T0 + 3600000), 180, "180 in the first hour");
	is_int(ts[179], T0 + 5 * 60000 + 2000, "180th at 5 min 2 s");
	is_int(ts[180], T0 + 3600000, "181st exactly one hour after the 1st");
	is_int(count_in(ts, n, T0, T0 + 60000), 30, "30 in the first minute");
	is_int(ts[10], T0 + 1000, "11th one second after the 1st");
	is_int(ts[30], T0 + 60000, "31st one minute after the 1st");
	worst = 0;
	for (i = 0; i + 180 < n; i++)
		if (ts[i + 180] - ts[i] < 3600000)
			worst++;
	is_int(worst, 0, "no 181 starts within any hour");
	ratelimit_headroom(rl, T0 + 3600000 + 6 * 60000 + 3000, room);
	ok(room[0] == 10 && room[1] == 30 && room[2] == 0,
	    "headroom after the second burst: 10/30/0 (%lld/%lld/%lld)",
	    (long long)room[0], (long long)room[1], (long long)room[2]);
	ratelimit_free(rl);
}

static void
test_pause(void)
{
	struct ratelimit *rl = rl_make(10, 30, 180);

	ratelimit_pause_until(rl, T0 + 5000);
	is_int(ratelimit_next_allowed(rl, T0), T0 + 5000, "paused 5 s");
	ratelimit_pause_until(rl, T0 + 1000);
	is_int(ratelimit_next_allowed(rl, T0), T0 + 5000,
	    "a smaller Retry-After does not shorten the pause");
	ratelimit_pause_until(rl, T0 + 86400000LL * 30);
	is_int(ratelimit_next_allowed(rl, T0), T0 + 86400000LL * 30,
	    "a 30-day pause is not capped");
	is_int(ratelimit_paused_until(rl), T0 + 86400000LL * 30,
	    "paused_until reports it");
	is_int(ratelimit_next_allowed(rl, T0 + 86400000LL * 31),
	    T0 + 86400000LL * 31, "open after the pause");
	ratelimit_free(rl);
}

static void
test_reload(void)
{
	struct ratelimit *rl = rl_make(10, 0, 0);
	struct ratelimit_limits l;
	int64_t room[RL_NWIN];
	int i;

	for (i = 0; i < 5; i++)
		ratelimit_record(rl, T0 + i * 100);
	l = *ratelimit_limits_get(rl);
	l.max[0] = 2;
	ratelimit_limits_set(rl, &l);
	is_int(ratelimit_next_allowed(rl, T0 + 450), T0 + 300 + 1000,
	    "reduced to 2/s: wait until the 2nd newest leaves");
	ratelimit_headroom(rl, T0 + 450, room);
	is_int(room[0], 0, "no headroom after a reduction below use");
	ratelimit_free(rl);

	/* Raised hourly limit: starts beyond the old limit are remembered. */
	rl = rl_make(0, 0, 10);
	for (i = 0; i < 8; i++)
		ratelimit_record(rl, T0 + i * 1000);
	l = *ratelimit_limits_get(rl);
	l.max[2] = 5;
	ratelimit_limits_set(rl, &l);
	is_int(ratelimit_next_allowed(rl, T0 + 10000), T0 + 3000 + 3600000,
	    "reduced to 5/h: wait until the 5th newest leaves");
	l.max[2] = 10;
	ratelimit_limits_set(rl, &l);
	ratelimit_headroom(rl, T0 + 10000, room);
	is_int(room[2], 2, "raised back to 10/h: exactly 2 left");
	ratelimit_record(rl, T0 + 10000);
	ratelimit_record(rl, T0 + 10000);
	is_int(ratelimit_next_allowed(rl, T0 + 10000), T0 + 3600000,
	    "then closed until the 1st start is an hour old");
	ratelimit_free(rl);
}

/* The encoded state of rl. Caller frees. */
static struct buf
encoded(const struct ratelimit *rl)
{
	struct buf b;

	buf_init(&b);
	ratelimit_encode(rl, &b);
	return b;
}

static void
test_codec(void)
{
	struct ratelimit *a = rl_make(10, 30, 180), *b = rl_make(10, 30, 180);
	struct buf e1, e2, g;
	int64_t ts[400], ra[RL_NWIN], rb[RL_NWIN];
	unsigned char junk[64];
	char err[256];
	int i, j, n, same, unchanged;
	uint64_t x = 88172645463325252ULL;

	n = greedy(a, T0, T0 + 4000000, ts, 200);
	ratelimit_pause_until(a, T0 + 5000000);
	e1 = encoded(a);
	ok(ratelimit_decode(b, e1.data, e1.len, err, sizeof(err)) == 0,
	    "decode what was encoded (%d starts)", n);
	e2 = encoded(b);
	ok(e1.len == e2.len && memcmp(e1.data, e2.data, e1.len) == 0,
	    "re-encoding gives the same bytes");
	same = 1;
	for (i = 0; i < 100; i++) {
		int64_t t = T0 + 3500000 + i * 20000;

		ratelimit_headroom(a, t, ra);
		ratelimit_headroom(b, t, rb);
		if (ratelimit_next_allowed(a, t) != ratelimit_next_allowed(b, t) ||
		    memcmp(ra, rb, sizeof(ra)) != 0)
			same = 0;
	}
	ok(same, "restored limiter behaves the same (no burst after restart)");
	buf_free(&e2);

	/* cut: keep only that many bytes (-1: all); then patch one byte. */
	static const struct {
		int cut, patch;
		unsigned char v;
		const char *want;
	} bad[] = {
		{ 0, -1, 0, "0 bytes, shorter than" },
		{ 15, -1, 0, "shorter than" },
		{ -1, 0, 'X', "bad magic" },
		{ -1, 3, 9, "unsupported version 9" },
		{ -1, 4, 1, "more than" },
		{ -1, 7, 0, "entries need" },
		{ 100, -1, 0, "entries need" },
		{ -1, 16, 0x80, "is negative" },
		{ -1, 23, 0xff, "older than the one before" },
	};
	for (i = 0; i < (int)nitems(bad); i++) {
		buf_init(&g);
		buf_add(&g, e1.data, bad[i].cut < 0 ? e1.len : (size_t)bad[i].cut);
		if (bad[i].patch >= 0)
			g.data[bad[i].patch] = bad[i].v;
		e2 = encoded(b);
		err[0] = '\0';
		ok(ratelimit_decode(b, g.data, g.len, err, sizeof(err)) == -1 &&
		    strstr(err, bad[i].want) != NULL,
		    "garbage %d refused: %s", i, err);
		buf_reset(&g);
		ratelimit_encode(b, &g);
		ok(g.len == e2.len && memcmp(g.data, e2.data, g.len) == 0,
		    "garbage %d left the state alone", i);
		buf_free(&g);
		buf_free(&e2);
	}
	/* Random bytes, and random flips of a valid state: never a crash. */
	unchanged = 1;
	for (i = 0; i < 2000; i++) {
		buf_init(&g);
		if (i % 2) {
			buf_add(&g, e1.data, e1.len);
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			g.data[x % g.len] ^= (unsigned char)(1 + (x >> 40) % 255);
		} else {
			for (j = 0; j < (int)sizeof(junk); j++) {
				x ^= x << 13; x ^= x >> 7; x ^= x << 17;
				junk[j] = (unsigned char)x;
			}
			if (i % 4 == 0)
				memcpy(junk, "KRL\001", 4);
			buf_add(&g, junk, x % sizeof(junk));
		}
		e2 = encoded(b);
		if (ratelimit_decode(b, g.data, g.len, err, sizeof(err)) == -1) {
			buf_reset(&g);
			ratelimit_encode(b, &g);
			if (g.len != e2.len || memcmp(g.data, e2.data, g.len))
				unchanged = 0;
		}
		buf_free(&g);
		buf_free(&e2);
	}
	ok(unchanged, "2000 garbage inputs decoded or refused cleanly");
	buf_free(&e1);
	ratelimit_free(a);
	ratelimit_free(b);
}

/* The naive reference: every start kept, windows counted by brute force. */
struct naive {
	struct ratelimit_limits	 l;
	int64_t			 paused;
	int64_t			 ts[4096];
	int			 n;
};

static int
naive_allowed(const struct naive *r, int64_t u)
{
	int w, i, c;

	if (u < r->paused)
		return 0;
	for (w = 0; w < RL_NWIN; w++) {
		if (r->l.max[w] == 0)
			continue;
		for (c = 0, i = 0; i < r->n; i++)
			if (r->ts[i] > u - r->l.window_ms[w])
				c++;
		if (c >= (int)r->l.max[w])
			return 0;
	}
	return 1;
}

/* Smallest allowed time >= now: try every instant at which a start leaves a window. */
static int64_t
naive_next(const struct naive *r, int64_t now)
{
	int64_t best = now > r->paused ? now : r->paused, c;
	int64_t found = INT64_MAX;
	int w, i;

	if (naive_allowed(r, best))
		return best;
	for (w = 0; w < RL_NWIN; w++)
		for (i = 0; i < r->n; i++) {
			c = r->ts[i] + r->l.window_ms[w];
			if (c > best && c < found && naive_allowed(r, c))
				found = c;
		}
	return found;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t
rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static void
random_limits(struct ratelimit_limits *l)
{
	l->max[0] = rnd(4);		/* 0 = unlimited */
	l->max[1] = rnd(12);
	l->max[2] = 1 + rnd(40);	/* the hour stays limited */
	l->window_ms[0] = 1000;
	l->window_ms[1] = 60000;
	l->window_ms[2] = 3600000;
}

static void
test_property(void)
{
	static struct naive r;
	struct ratelimit *rl;
	int64_t now = T0, a, b, room[RL_NWIN];
	int step, w, c, i, mism = 0, recorded = 0, mism_room = 0;

	random_limits(&r.l);
	rl = ratelimit_new(&r.l);
	for (step = 0; step < 30000 && r.n < (int)nitems(r.ts); step++) {
		/* Starts an hour old can no longer matter to any window. */
		for (i = 0; i < r.n && r.ts[i] <= now - 3600000; i++)
			;
		memmove(r.ts, r.ts + i, (size_t)(r.n - i) * sizeof(r.ts[0]));
		r.n -= i;
		switch (rnd(10)) {
		case 0:
			now += rnd(4000000);
			break;
		case 1: case 2:
			now += rnd(60000);
			break;
		default:
			now += rnd(1500);
		}
		if (rnd(200) == 0) {
			random_limits(&r.l);
			ratelimit_limits_set(rl, &r.l);
		}
		if (rnd(100) == 0) {
			a = now + rnd(300000);
			ratelimit_pause_until(rl, a);
			if (a > r.paused)
				r.paused = a;
		}
		a = ratelimit_next_allowed(rl, now);
		b = naive_next(&r, now);
		if (a != b && mism++ < 5)
			diag("step %d: next_allowed %lld, reference %lld", step,
			    (long long)(a - T0), (long long)(b - T0));
		if (rnd(10) == 0) {
			ratelimit_headroom(rl, now, room);
			for (w = 0; w < RL_NWIN; w++) {
				for (c = 0, i = 0; i < r.n; i++)
					if (r.ts[i] > now - r.l.window_ms[w])
						c++;
				c = r.l.max[w] == 0 ? -1 :
				    c >= (int)r.l.max[w] ? 0 : (int)r.l.max[w] - c;
				if (room[w] != c)
					mism_room++;
			}
		}
		/* Start whenever allowed, sometimes late. */
		if (a <= now + rnd(3)) {
			if (a < now)
				a = now;
			now = a;
			ratelimit_record(rl, now);
			r.ts[r.n++] = now;
			recorded++;
		}
	}
	is_int(mism, 0, "next_allowed equals the naive reference (%d steps, "
	    "%d starts)", step, recorded);
	is_int(mism_room, 0, "headroom equals the naive reference");
	ok(recorded > 1000, "the run started many requests (%d)", recorded);
	ratelimit_free(rl);
}

int
main(void)
{
	log_init("test_ratelimit", 1, LOG_LVL_WARN);
	test_groups();
	test_parse();
	test_edges();
	test_pause();
	test_reload();
	test_codec();
	test_property();
	return tap_done();
}
