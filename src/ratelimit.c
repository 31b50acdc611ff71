/*
 * ratelimit.c: exact sliding windows over the start times of requests.
 *
 * The start times are kept, oldest first, in a ring whose length is a power
 * of two.  Every start younger than the longest limited window (the
 * horizon) is kept, so a window holds room exactly when its L-th newest start
 * has left it; that stays exact when limits are raised live.  An obeyed
 * limiter never holds more than the horizon window's limit; RL_KEEP_MAX
 * bounds a misbehaving caller.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ratelimit.h"
#include "util.h"

#define RL_KEEP_MAX	65536u
#define RL_COUNT_MAX	1000000u
#define RL_MAGIC	"KRL"
#define RL_VERSION	1
#define RL_HDR_LEN	16	/* magic, version, u32 count, i64 pause */

struct ratelimit {
	struct ratelimit_limits	 lim;
	int64_t			 horizon_ms;
	int64_t			 paused_until;
	int64_t			*ts;
	uint32_t		 cap;	/* power of two, or 0 */
	uint32_t		 head;	/* index of the oldest start */
	uint32_t		 n;
};

/* Official limits, ksef/API.md section 10; 0 = not limited. */
static const struct {
	const char	*name;
	uint32_t	 max[RL_NWIN];
} rl_groups[RL_NGROUPS] = {
	[RL_GROUP_ONLINE_SESSION] = { "online_session", { 10, 30, 120 } },
	[RL_GROUP_INVOICE_SEND] = { "invoice_send", { 10, 30, 180 } },
	[RL_GROUP_BATCH_SESSION] = { "batch_session", { 10, 20, 60 } },
	[RL_GROUP_INVOICE_STATUS] = { "invoice_status", { 30, 120, 1200 } },
	[RL_GROUP_SESSION_LIST] = { "session_list", { 5, 10, 60 } },
	[RL_GROUP_SESSION_INVOICE_LIST] =
	    { "session_invoice_list", { 10, 20, 200 } },
	[RL_GROUP_SESSION_MISC] = { "session_misc", { 10, 120, 1200 } },
	[RL_GROUP_INVOICE_METADATA] = { "invoice_metadata", { 8, 16, 20 } },
	[RL_GROUP_INVOICE_EXPORT] = { "invoice_export", { 8, 16, 20 } },
	[RL_GROUP_INVOICE_EXPORT_STATUS] =
	    { "invoice_export_status", { 10, 60, 600 } },
	[RL_GROUP_INVOICE_DOWNLOAD] = { "invoice_download", { 8, 16, 64 } },
	[RL_GROUP_OTHER] = { "other", { 10, 30, 120 } },
	[RL_GROUP_PUBLIC] = { "public", { 60, 0, 0 } },
};

static const int64_t rl_window_ms[RL_NWIN] = { 1000, 60000, 3600000 };
static const char *const rl_window_name[RL_NWIN] =
    { "per second", "per minute", "per hour" };

const char *
ratelimit_group_name(int group)
{
	if (group < 0 || group >= RL_NGROUPS)
		return NULL;
	return rl_groups[group].name;
}

int
ratelimit_group_parse(const char *name)
{
	int g;

	for (g = 0; g < RL_NGROUPS; g++)
		if (strcmp(rl_groups[g].name, name) == 0)
			return g;
	return -1;
}

void
ratelimit_limits_default(int group, struct ratelimit_limits *l)
{
	int w;

	if (group < 0 || group >= RL_NGROUPS)
		fatalx("ratelimit: no group %d", group);
	for (w = 0; w < RL_NWIN; w++) {
		l->max[w] = rl_groups[group].max[w];
		l->window_ms[w] = rl_window_ms[w];
	}
}

/* "PER_S PER_MIN PER_H" into out->max; errors name the field. */
int
ratelimit_limits_parse(const char *value, struct ratelimit_limits *out,
    char *err, size_t errlen)
{
	uint32_t v[RL_NWIN];
	const char *p = value;
	char *end;
	unsigned long long n;
	int w;

	for (w = 0; w < RL_NWIN; w++) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0') {
			snprintf(err, errlen, "expected 3 numbers "
			    "\"PER_S PER_MIN PER_H\", got %d", w);
			return -1;
		}
		if (*p == '-' && (p[1] == '\0' || p[1] == ' ' ||
		    p[1] == '\t')) {
			v[w] = 0;
			p++;
			continue;
		}
		if (*p < '0' || *p > '9') {
			snprintf(err, errlen, "%s limit: \"%s\" is not a "
			    "number or \"-\"", rl_window_name[w],
			    log_escape(p, strcspn(p, " \t"), 20));
			return -1;
		}
		errno = 0;
		n = strtoull(p, &end, 10);
		if (*end != '\0' && *end != ' ' && *end != '\t') {
			snprintf(err, errlen, "%s limit: \"%s\" is not a "
			    "number or \"-\"", rl_window_name[w],
			    log_escape(p, strcspn(p, " \t"), 20));
			return -1;
		}
		if (errno == ERANGE || n > RL_COUNT_MAX) {
			snprintf(err, errlen, "%s limit: must be at most %u",
			    rl_window_name[w], RL_COUNT_MAX);
			return -1;
		}
		v[w] = (uint32_t)n;
		p = end;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '\0') {
		snprintf(err, errlen, "expected 3 numbers \"PER_S PER_MIN "
		    "PER_H\", got more: \"%s\"", log_escape(p, strlen(p), 20));
		return -1;
	}
	for (w = 0; w < RL_NWIN; w++)
		out->max[w] = v[w];
	return 0;
}

/* The i-th oldest remembered start. */
static inline int64_t
rl_at(const struct ratelimit *rl, uint32_t i)
{
	return rl->ts[(rl->head + i) & (rl->cap - 1)];
}

/* Move the ring into a new array of ncap slots, oldest at index 0. */
static void
rl_resize(struct ratelimit *rl, uint32_t ncap)
{
	int64_t *nts = xcalloc(ncap, sizeof(*nts));
	uint32_t i;

	for (i = 0; i < rl->n; i++)
		nts[i] = rl_at(rl, i);
	free(rl->ts);
	rl->ts = nts;
	rl->cap = ncap;
	rl->head = 0;
}

void
ratelimit_limits_set(struct ratelimit *rl, const struct ratelimit_limits *l)
{
	int w;

	rl->horizon_ms = 0;
	for (w = 0; w < RL_NWIN; w++) {
		if (l->max[w] == 0)
			continue;
		if (l->window_ms[w] <= 0)
			fatalx("ratelimit: limited window %d has no length", w);
		if (l->window_ms[w] > rl->horizon_ms)
			rl->horizon_ms = l->window_ms[w];
	}
	rl->lim = *l;
}

const struct ratelimit_limits *
ratelimit_limits_get(const struct ratelimit *rl)
{
	return &rl->lim;
}

struct ratelimit *
ratelimit_new(const struct ratelimit_limits *l)
{
	struct ratelimit *rl = xcalloc(1, sizeof(*rl));

	ratelimit_limits_set(rl, l);
	return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	free(rl->ts);
	free(rl);
}

/* Latest of now, the pause, and the time each full window frees a slot. */
int64_t
ratelimit_next_allowed(const struct ratelimit *rl, int64_t now)
{
	int64_t t = now, free_at;
	uint32_t l;
	int w;

	if (rl->paused_until > t)
		t = rl->paused_until;
	for (w = 0; w < RL_NWIN; w++) {
		l = rl->lim.max[w];
		if (l == 0 || l > rl->n)
			continue;
		/* The window has room once its l-th newest start left it. */
		free_at = rl_at(rl, rl->n - l) + rl->lim.window_ms[w];
		if (free_at > t)
			t = free_at;
	}
	return t;
}

/* Remember a start; forget starts older than the horizon. */
void
ratelimit_record(struct ratelimit *rl, int64_t now)
{
	if (rl->horizon_ms == 0) {
		rl->n = rl->head = 0;
		return;
	}
	/* Keep the history sorted if the wall clock stepped back. */
	if (rl->n > 0 && now < rl_at(rl, rl->n - 1))
		now = rl_at(rl, rl->n - 1);
	while (rl->n > 0 && rl_at(rl, 0) <= now - rl->horizon_ms) {
		rl->head = (rl->head + 1) & (rl->cap - 1);
		rl->n--;
	}
	if (rl->n == RL_KEEP_MAX) {
		rl->head = (rl->head + 1) & (rl->cap - 1);
		rl->n--;
	}
	if (rl->n == rl->cap)
		rl_resize(rl, rl->cap ? rl->cap * 2 : 16);
	rl->ts[(rl->head + rl->n) & (rl->cap - 1)] = now;
	rl->n++;
}

void
ratelimit_pause_until(struct ratelimit *rl, int64_t t)
{
	if (t > rl->paused_until)
		rl->paused_until = t;
}

int64_t
ratelimit_paused_until(const struct ratelimit *rl)
{
	return rl->paused_until;
}

/* How many remembered starts are later than t. */
static uint32_t
rl_count_after(const struct ratelimit *rl, int64_t t)
{
	uint32_t lo = 0, hi = rl->n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (rl_at(rl, mid) > t)
			hi = mid;
		else
			lo = mid + 1;
	}
	return rl->n - lo;
}

/* Slots left per window, counted by binary search over the sorted ring. */
void
ratelimit_headroom(const struct ratelimit *rl, int64_t now,
    int64_t out[RL_NWIN])
{
	uint32_t used;
	int w;

	for (w = 0; w < RL_NWIN; w++) {
		if (rl->lim.max[w] == 0) {
			out[w] = -1;
			continue;
		}
		used = rl_count_after(rl, now - rl->lim.window_ms[w]);
		out[w] = used >= rl->lim.max[w] ? 0 :
		    (int64_t)(rl->lim.max[w] - used);
	}
}

static void
rl_put64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static uint64_t
rl_get64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* "KRL", version, u32 count, i64 pause, then the starts; big-endian. */
void
ratelimit_encode(const struct ratelimit *rl, struct buf *b)
{
	unsigned char hdr[RL_HDR_LEN], e[8];
	uint32_t i;

	memcpy(hdr, RL_MAGIC, 3);
	hdr[3] = RL_VERSION;
	hdr[4] = (unsigned char)(rl->n >> 24);
	hdr[5] = (unsigned char)(rl->n >> 16);
	hdr[6] = (unsigned char)(rl->n >> 8);
	hdr[7] = (unsigned char)rl->n;
	rl_put64(hdr + 8, (uint64_t)rl->paused_until);
	buf_reserve(b, RL_HDR_LEN + (size_t)rl->n * 8);
	buf_add(b, hdr, sizeof(hdr));
	for (i = 0; i < rl->n; i++) {
		rl_put64(e, (uint64_t)rl_at(rl, i));
		buf_add(b, e, sizeof(e));
	}
}

/* Validate everything before touching the limiter. */
int
ratelimit_decode(struct ratelimit *rl, const void *data, size_t len,
    char *err, size_t errlen)
{
	const unsigned char *p = data;
	uint32_t n, i, ncap;
	int64_t t, prev = INT64_MIN;

	if (len < RL_HDR_LEN) {
		snprintf(err, errlen, "rate-limit state: %zu bytes, shorter "
		    "than the %d-byte header", len, RL_HDR_LEN);
		return -1;
	}
	if (memcmp(p, RL_MAGIC, 3) != 0) {
		snprintf(err, errlen, "rate-limit state: bad magic \"%s\"",
		    log_escape(p, 3, 3));
		return -1;
	}
	if (p[3] != RL_VERSION) {
		snprintf(err, errlen, "rate-limit state: unsupported version "
		    "%u (this ksefd reads %d)", p[3], RL_VERSION);
		return -1;
	}
	n = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
	    (uint32_t)p[6] << 8 | p[7];
	if (n > RL_KEEP_MAX) {
		snprintf(err, errlen, "rate-limit state: %u entries, more "
		    "than the %u kept", n, RL_KEEP_MAX);
		return -1;
	}
	if (len != RL_HDR_LEN + (size_t)n * 8) {
		snprintf(err, errlen, "rate-limit state: %zu bytes, but %u "
		    "entries need %zu", len, n, RL_HDR_LEN + (size_t)n * 8);
		return -1;
	}
	for (i = 0; i < n; i++) {
		t = (int64_t)rl_get64(p + RL_HDR_LEN + (size_t)i * 8);
		if (t < 0 || t < prev) {
			snprintf(err, errlen, "rate-limit state: entry %u "
			    "(%lld) %s", i, (long long)t, t < 0 ?
			    "is negative" : "is older than the one before");
			return -1;
		}
		prev = t;
	}
	for (ncap = 16; ncap < n; ncap *= 2)
		;
	free(rl->ts);
	rl->ts = xcalloc(ncap, sizeof(*rl->ts));
	rl->cap = ncap;
	rl->head = 0;
	rl->n = n;
	for (i = 0; i < n; i++)
		rl->ts[i] = (int64_t)rl_get64(p + RL_HDR_LEN + (size_t)i * 8);
	rl->paused_until = (int64_t)rl_get64(p + 8);
	return 0;
}
