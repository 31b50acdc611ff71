/*
 * sim_limit.c: KSeF's rate limits (API.md §10): sliding windows of 1 s, 60 s
 * and 60 min per (context or IP, endpoint group), all enforced at once; a
 * violation answers 429 with a Retry-After that doubles while the client
 * keeps violating.  Windows can be scaled so tests reach the hourly one fast.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

const char *const sim_group_names[G_NGROUPS] = {
	"onlineSession", "invoiceSend", "batchSession", "invoiceStatus",
	"sessionList", "sessionInvoiceList", "sessionMisc", "invoiceMetadata",
	"invoiceExport", "invoiceExportStatus", "invoiceDownload", "other",
	"public",
};

static const int official[G_NGROUPS][3] = {
	{ 10, 30, 120 }, { 10, 30, 180 }, { 10, 20, 60 }, { 30, 120, 1200 },
	{ 5, 10, 60 }, { 10, 20, 200 }, { 10, 120, 1200 }, { 8, 16, 20 },
	{ 8, 16, 20 }, { 10, 60, 600 }, { 8, 16, 64 }, { 10, 30, 120 },
	{ 60, 0, 0 },
};

int
sim_group_lookup(const char *s)
{
	int i;

	for (i = 0; i < G_NGROUPS; i++)
		if (strcmp(s, sim_group_names[i]) == 0)
			return i;
	return G_NONE;
}

void
sim_limits_default(struct sim_limits *l)
{
	l->enabled = 1;
	memcpy(l->v, official, sizeof(l->v));
	l->win_ms[0] = 1000;
	l->win_ms[1] = 60000;
	l->win_ms[2] = 3600000;
}

int
sim_limits_parse(struct sim_limits *l, const char *text, char *err, size_t errlen)
{
	static const char *const wk[3] = { "perSecond", "perMinute", "perHour" };
	json_error_t je;
	json_t *root, *g, *v;
	const char *name;
	int i, gi;

	if ((root = json_loads(text, 0, &je)) == NULL) {
		snprintf(err, errlen, "line %d: %s", je.line, je.text);
		return -1;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "limits: expected a JSON object");
		json_decref(root);
		return -1;
	}
	json_object_foreach(root, name, g) {
		if ((gi = sim_group_lookup(name)) == G_NONE || !json_is_object(g)) {
			snprintf(err, errlen, "limits: unknown group \"%s\" (or not an object)", name);
			json_decref(root);
			return -1;
		}
		for (i = 0; i < 3; i++) {
			if ((v = json_object_get(g, wk[i])) == NULL)
				continue;
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 10000000) {
				snprintf(err, errlen, "limits: %s.%s must be an integer 0..10000000",
				    name, wk[i]);
				json_decref(root);
				return -1;
			}
			l->v[gi][i] = (int)json_integer_value(v);
		}
	}
	json_decref(root);
	return 0;
}

json_t *
sim_limits_json(const struct sim_limits *l)
{
	json_t *o = json_object();
	int i;

	for (i = 0; i < G_PUBLIC; i++)
		json_object_set_new(o, sim_group_names[i], json_pack("{s:i,s:i,s:i}",
		    "perSecond", l->v[i][0], "perMinute", l->v[i][1], "perHour", l->v[i][2]));
	return o;
}

struct bucket {
	int64_t		*t;		/* ring of request times, oldest first */
	size_t		 cap, head, n;
	int64_t		 blocked_until;
	int64_t		 last_violation;
	int		 violations;
};

static void
bucket_free(void *p)
{
	struct bucket *b = p;

	free(b->t);
	free(b);
}

void
sim_limiter_init(struct sim_limiter *lim)
{
	sim_map_init(&lim->buckets);
}

void
sim_limiter_free(struct sim_limiter *lim)
{
	sim_map_free(&lim->buckets, bucket_free);
}

static int64_t
ring_at(const struct bucket *b, size_t i)
{
	return b->t[(b->head + i) % b->cap];
}

/* Index of the first entry newer than `since` (binary search; entries are sorted). */
static size_t
ring_first_after(const struct bucket *b, int64_t since)
{
	size_t lo = 0, hi = b->n, mid;

	while (lo < hi) {
		mid = (lo + hi) / 2;
		if (ring_at(b, mid) > since)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Grow the ring to hold `cap` entries, keeping the newest ones. */
static void
ring_resize(struct bucket *b, size_t cap)
{
	int64_t *t = xcalloc(cap, sizeof(*t));
	size_t i, skip = b->n > cap ? b->n - cap : 0;

	for (i = skip; i < b->n; i++)
		t[i - skip] = ring_at(b, i);
	free(b->t);
	b->t = t;
	b->n -= skip;
	b->head = 0;
	b->cap = cap;
}

int64_t
sim_limiter_hit(struct sim_limiter *lim, const struct sim_limits *l, const char *key,
    int group, int64_t now)
{
	struct bucket *b;
	size_t need = 0, first;
	int64_t wait = 0, w, ra;
	int i;

	if (!l->enabled || group < 0 || group >= G_NGROUPS)
		return 0;
	for (i = 0; i < 3; i++)
		if ((size_t)l->v[group][i] > need)
			need = (size_t)l->v[group][i];
	if (need == 0)
		return 0;
	if ((b = sim_map_get(&lim->buckets, key)) == NULL) {
		b = xcalloc(1, sizeof(*b));
		sim_map_put(&lim->buckets, key, b);
	}
	if (b->cap != need)
		ring_resize(b, need);
	if (b->violations && now - b->last_violation > l->win_ms[1])
		b->violations = 0;
	if (b->blocked_until > now)
		wait = b->blocked_until - now;
	else
		for (i = 0; i < 3; i++) {
			if (l->v[group][i] == 0)
				continue;
			first = ring_first_after(b, now - l->win_ms[i]);
			if (b->n - first >= (size_t)l->v[group][i]) {
				/* room again when the oldest counted request leaves the window */
				w = ring_at(b, b->n - (size_t)l->v[group][i]) + l->win_ms[i] - now;
				if (w > wait)
					wait = w;
			}
		}
	if (wait > 0) {
		/* each violation in a row adds a doubling penalty to what is left */
		b->violations++;
		b->last_violation = now;
		ra = (wait + 999) / 1000 + ((int64_t)1 << (b->violations > 17 ? 16 :
		    b->violations - 1)) - 1;
		if (now + ra * 1000 > b->blocked_until)
			b->blocked_until = now + ra * 1000;
		return ra;
	}
	if (b->n == b->cap) {
		b->head = (b->head + 1) % b->cap;
		b->n--;
	}
	b->t[(b->head + b->n) % b->cap] = now;
	b->n++;
	return 0;
}
