/* metrics.c: GET /metrics and GET /v1/status (see metrics.h). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "backoff.h"
#include "ksef/ksef.h"
#include "latarnia.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "record.h"
#include "sched.h"
#include "store.h"
#include "util.h"

/* Invoices of one seller NIP per state. */
struct mctx {
	char		 nip[INV_NIP_LEN + 1];
	uint64_t	 count[INV_ST_COUNT];
	struct mctx	*next;
};

/* One audit event read during a catch-up, applied after the read. */
struct mevent {
	unsigned char	 key[INV_KEY_LEN];
	int		 from, to;	/* INV_ST_NONE .. INV_ST_FAILED */
};

struct metrics {
	struct store	*store;
	struct sched	*sched;
	const struct latarnia *latarnia;	/* NULL: not shown */
	struct mctx	*ctxs;
	uint64_t	 next_seq;	/* first audit event not yet counted */
	/* transitions[from + 1][to]: from is INV_ST_NONE for a new invoice */
	uint64_t	 transitions[INV_ST_COUNT + 1][INV_ST_COUNT];
	struct mevent	*ev;		/* catch-up scratch */
	size_t		 nev, capev;
	int		 counting_init;	/* the first audit pass: transitions only */
};

static const char *const win_name[RL_NWIN] = { "second", "minute", "hour" };

static struct mctx *
metrics_ctx(struct metrics *m, const char *nip)
{
	struct mctx *c, **pp;

	for (pp = &m->ctxs; (c = *pp) != NULL; pp = &c->next)
		if (strcmp(c->nip, nip) == 0)
			return c;
	c = xcalloc(1, sizeof(*c));
	snprintf(c->nip, sizeof(c->nip), "%s", nip);
	*pp = c;
	return c;
}

static int
metrics_scan_cb(const struct record_invoice *inv, void *arg)
{
	struct metrics *m = arg;

	if ((unsigned)inv->state < INV_ST_COUNT)
		metrics_ctx(m, inv->seller_nip)->count[inv->state]++;
	return 0;
}

static int
metrics_audit_cb(const struct record_audit *a, void *arg)
{
	struct metrics *m = arg;
	struct mevent *e;

	if (a->from < INV_ST_NONE || a->from >= INV_ST_COUNT ||
	    a->to < 0 || a->to >= INV_ST_COUNT) {
		log_warnx("metrics: audit event %llu has an unknown state "
		    "(from %d, to %d); not counted", (unsigned long long)a->seq,
		    (int)a->from, (int)a->to);
		return 0;
	}
	if (a->from == a->to)	/* a note (hold, reconciliation), no change */
		return 0;
	if (m->counting_init) {
		m->transitions[a->from + 1][a->to]++;
		return 0;
	}
	if (m->nev == m->capev) {
		m->capev = m->capev ? 2 * m->capev : 256;
		m->ev = xrealloc(m->ev, m->capev * sizeof(*m->ev));
	}
	e = &m->ev[m->nev++];
	memcpy(e->key, a->key, INV_KEY_LEN);
	e->from = a->from;
	e->to = a->to;
	return 0;
}

/* Count the audit events appended since the last call. */
static void
metrics_catch_up(struct metrics *m)
{
	struct record_invoice inv;
	struct mctx *c;
	uint64_t next = store_audit_next_seq(m->store);
	size_t i;

	if (next <= m->next_seq)
		return;
	m->nev = 0;
	if (store_audit_foreach(m->store, m->next_seq, metrics_audit_cb, m) < 0)
		return;
	m->next_seq = next;
	for (i = 0; i < m->nev; i++) {
		m->transitions[m->ev[i].from + 1][m->ev[i].to]++;
		memset(&inv, 0, sizeof(inv));
		if (store_invoice_get(m->store, m->ev[i].key, &inv) != 0)
			continue;
		c = metrics_ctx(m, inv.seller_nip);
		if (m->ev[i].from != INV_ST_NONE && c->count[m->ev[i].from] > 0)
			c->count[m->ev[i].from]--;
		c->count[m->ev[i].to]++;
		record_invoice_free(&inv);
	}
}

struct metrics *
metrics_new(struct store *store, struct sched *sched)
{
	struct metrics *m = xcalloc(1, sizeof(*m));

	m->store = store;
	m->sched = sched;
	m->next_seq = store_audit_next_seq(store);
	store_invoice_foreach(store, metrics_scan_cb, m);
	m->counting_init = 1;
	if (m->next_seq > 0)
		store_audit_foreach(store, 0, metrics_audit_cb, m);
	m->counting_init = 0;
	/* Events of the scan's pending group may come after next_seq: none. */
	return m;
}

void
metrics_latarnia_set(struct metrics *m, const struct latarnia *l)
{
	m->latarnia = l;
}

void
metrics_free(struct metrics *m)
{
	struct mctx *c, *n;

	if (m == NULL)
		return;
	for (c = m->ctxs; c != NULL; c = n) {
		n = c->next;
		free(c);
	}
	free(m->ev);
	free(m);
}

/* --- exposition text ---------------------------------------------------- */

static void
metrics_head(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Seconds as a decimal with millisecond precision. */
static void
metrics_secs(struct buf *b, int64_t ms)
{
	const char *sign = ms < 0 ? "-" : "";

	if (ms < 0)
		ms = -ms;
	buf_addf(b, "%s%lld.%03lld", sign, (long long)(ms / 1000),
	    (long long)(ms % 1000));
}

/* A cumulative histogram from non-cumulative buckets; le bounds in ms. */
static void
metrics_hist(struct buf *b, const char *name, const char *labels,
    const uint64_t *bucket, const int64_t *le_us, int n, int64_t sum_us)
{
	uint64_t cum = 0;
	int i;

	for (i = 0; i < n; i++) {
		cum += bucket[i];
		buf_addf(b, "%s_bucket{%s%sle=\"", name, labels,
		    *labels ? "," : "");
		if (i == n - 1)
			buf_addstr(b, "+Inf");
		else
			buf_addf(b, "%lld.%06lld", (long long)(le_us[i] / 1000000),
			    (long long)(le_us[i] % 1000000));
		buf_addf(b, "\"} %llu\n", (unsigned long long)cum);
	}
	buf_addf(b, "%s_sum%s%s%s %lld.%06lld\n", name, *labels ? "{" : "",
	    labels, *labels ? "}" : "", (long long)(sum_us / 1000000),
	    (long long)(sum_us % 1000000));
	buf_addf(b, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels,
	    *labels ? "}" : "", (unsigned long long)cum);
}

/* KSeF's outcome name as a label value: "not found" -> "not_found". */
static const char *
metrics_outcome(int o, char *out, size_t len)
{
	char *p;

	snprintf(out, len, "%s", ksef_outcome_name((enum ksef_outcome)o));
	for (p = out; *p != '\0'; p++)
		if (*p == ' ')
			*p = '_';
	return out;
}

/* Snapshot of every context, collected from sched_ctx_foreach. */
struct msnap {
	struct sched_ctx_info *info;
	size_t		 n, cap;
};

static void
metrics_snap_cb(const struct sched_ctx_info *ci, void *arg)
{
	struct msnap *sn = arg;

	if (sn->n == sn->cap) {
		sn->cap = sn->cap ? 2 * sn->cap : 4;
		sn->info = xrealloc(sn->info, sn->cap * sizeof(*sn->info));
	}
	sn->info[sn->n++] = *ci;
}

static void
metrics_snap(struct metrics *m, int64_t now, struct msnap *sn)
{
	memset(sn, 0, sizeof(*sn));
	if (m->sched != NULL)
		sched_ctx_foreach(m->sched, now, metrics_snap_cb, sn);
}

/* A counter per context and group: the uint64_t[RL_NGROUPS] at off in each info. */
static void
metrics_per_group(struct buf *b, const struct msnap *sn, const char *name,
    const char *help, size_t off)
{
	const uint64_t *v;
	size_t i;
	int g;

	metrics_head(b, name, "counter", help);
	for (i = 0; i < sn->n; i++) {
		v = (const uint64_t *)(const void *)((const char *)&sn->info[i] + off);
		for (g = 0; g < RL_NGROUPS; g++)
			buf_addf(b, "%s{context=\"%s\",group=\"%s\"} %llu\n", name,
			    sn->info[i].nip, ratelimit_group_name(g),
			    (unsigned long long)v[g]);
	}
}

static void
metrics_render_ctx(struct buf *b, const struct msnap *sn, int64_t now)
{
	const struct sched_ctx_info *ci;
	char lab[64], word[32];
	int64_t le[SCHED_RA_BUCKETS];
	size_t i;
	int g, w, st;

	metrics_per_group(b, sn, "ksefd_ksef_requests_total",
	    "KSeF requests started, by context and endpoint group.",
	    offsetof(struct sched_ctx_info, requests));
	metrics_head(b, "ksefd_ksef_responses_total", "counter",
	    "KSeF answers seen by the pipeline, by context and outcome.");
	for (i = 0; i < sn->n; i++)
		for (g = 0; g < SCHED_OUTCOMES; g++)
			buf_addf(b, "ksefd_ksef_responses_total{context=\"%s\","
			    "outcome=\"%s\"} %llu\n", sn->info[i].nip,
			    metrics_outcome(g, word, sizeof(word)),
			    (unsigned long long)sn->info[i].outcomes[g]);
	metrics_per_group(b, sn, "ksefd_ksef_429_total",
	    "HTTP 429 answers (Retry-After pauses), by context and group.",
	    offsetof(struct sched_ctx_info, ra_count));
	metrics_head(b, "ksefd_retry_after_seconds", "histogram",
	    "Pauses asked for by KSeF's Retry-After, by context.");
	for (w = 0; w < SCHED_RA_BUCKETS; w++)
		le[w] = (int64_t)1000000 << w;
	for (i = 0; i < sn->n; i++) {
		int64_t sum = 0;

		ci = &sn->info[i];
		for (g = 0; g < RL_NGROUPS; g++)
			sum += ci->ra_ms_sum[g];
		snprintf(lab, sizeof(lab), "context=\"%s\"", ci->nip);
		metrics_hist(b, "ksefd_retry_after_seconds", lab, ci->ra_bucket,
		    le, SCHED_RA_BUCKETS, sum * 1000);
	}
	metrics_head(b, "ksefd_limiter_headroom", "gauge",
	    "Requests that may still start in the limiter window now "
	    "(limited windows only).");
	for (i = 0; i < sn->n; i++)
		for (g = 0; g < RL_NGROUPS; g++)
			for (w = 0; w < RL_NWIN; w++)
				if (sn->info[i].headroom[g][w] >= 0)
					buf_addf(b, "ksefd_limiter_headroom{context="
					    "\"%s\",group=\"%s\",window=\"%s\"} "
					    "%lld\n", sn->info[i].nip,
					    ratelimit_group_name(g), win_name[w],
					    (long long)sn->info[i].headroom[g][w]);
	metrics_head(b, "ksefd_limiter_pause_seconds", "gauge",
	    "Time left in a 429 pause, by context and group (0: none).");
	for (i = 0; i < sn->n; i++)
		for (g = 0; g < RL_NGROUPS; g++) {
			buf_addf(b, "ksefd_limiter_pause_seconds{context=\"%s\","
			    "group=\"%s\"} ", sn->info[i].nip,
			    ratelimit_group_name(g));
			metrics_secs(b, sn->info[i].paused_until[g] ?
			    sn->info[i].paused_until[g] - now : 0);
			buf_addstr(b, "\n");
		}
	metrics_head(b, "ksefd_sends_in_flight", "gauge",
	    "Invoice sends under way, by context.");
	for (i = 0; i < sn->n; i++)
		buf_addf(b, "ksefd_sends_in_flight{context=\"%s\"} %u\n",
		    sn->info[i].nip, sn->info[i].sending);
	metrics_head(b, "ksefd_token_expiry_seconds", "gauge",
	    "Seconds until the access token expires (negative: expired), "
	    "by context; absent without a token.");
	for (i = 0; i < sn->n; i++)
		if (sn->info[i].token_expiry_ms != 0) {
			buf_addf(b, "ksefd_token_expiry_seconds{context=\"%s\"} ",
			    sn->info[i].nip);
			metrics_secs(b, sn->info[i].token_expiry_ms - now);
			buf_addstr(b, "\n");
		}
	metrics_head(b, "ksefd_sessions_open", "gauge",
	    "Online KSeF sessions open, by context.");
	for (i = 0; i < sn->n; i++)
		buf_addf(b, "ksefd_sessions_open{context=\"%s\"} %u\n",
		    sn->info[i].nip, sn->info[i].sessions_open);
	metrics_head(b, "ksefd_breaker_state", "gauge",
	    "Circuit breaker of a context: 1 for its current state.");
	for (i = 0; i < sn->n; i++)
		for (st = BREAKER_CLOSED; st <= BREAKER_HALF_OPEN; st++)
			buf_addf(b, "ksefd_breaker_state{context=\"%s\",state=\"%s\"}"
			    " %d\n", sn->info[i].nip, breaker_state_name(st),
			    sn->info[i].breaker == st);
	metrics_head(b, "ksefd_queue_oldest_age_seconds", "gauge",
	    "Age of the oldest unfinished invoice, by context and state "
	    "(states with none are absent).");
	for (i = 0; i < sn->n; i++)
		for (st = 0; st < INV_ST_COUNT; st++)
			if (sn->info[i].oldest_ms[st] != 0) {
				buf_addf(b, "ksefd_queue_oldest_age_seconds{context"
				    "=\"%s\",state=\"%s\"} ", sn->info[i].nip,
				    record_state_name(st));
				metrics_secs(b, now - sn->info[i].oldest_ms[st]);
				buf_addstr(b, "\n");
			}
}

/* KSeF's availability as Latarnia said last, and whether sending pauses. */
static void
metrics_render_latarnia(struct metrics *m, struct buf *b)
{
	struct latarnia_info li;
	int st;

	if (m->latarnia == NULL)
		return;
	latarnia_info_get(m->latarnia, &li);
	metrics_head(b, "ksefd_ksef_availability", "gauge",
	    "KSeF's availability (Latarnia): 1 for the status it gave last.");
	for (st = LATARNIA_OFF; st <= LATARNIA_TOTAL_FAILURE; st++)
		buf_addf(b, "ksefd_ksef_availability{status=\"%s\"} %d\n",
		    latarnia_status_name((enum latarnia_status)st), li.status ==
		    (enum latarnia_status)st);
	metrics_head(b, "ksefd_ksef_outage", "gauge",
	    "1 while Latarnia reports an outage (sending paused).");
	buf_addf(b, "ksefd_ksef_outage %d\n", latarnia_is_outage(li.status));
	metrics_head(b, "ksefd_latarnia_polls_total", "counter",
	    "Latarnia status requests answered or failed.");
	buf_addf(b, "ksefd_latarnia_polls_total %llu\n",
	    (unsigned long long)li.polls);
	metrics_head(b, "ksefd_latarnia_errors_total", "counter",
	    "Latarnia status requests that failed or were garbled.");
	buf_addf(b, "ksefd_latarnia_errors_total %llu\n",
	    (unsigned long long)li.errors);
}

/*
 * The last reconciliation's summary (meta "reconcile/last", JSON written by
 * reconcile.c): findings per kind, start time, duration.  Nothing before
 * the first run; a summary that is not as expected is skipped with a log line.
 */
static void
metrics_render_reconcile(struct metrics *m, struct buf *b)
{
	unsigned char *val = NULL;
	size_t len;
	json_t *o, *counts, *v;
	const char *k;

	if (store_meta_get(m->store, "reconcile/last", &val, &len) != 0)
		return;
	o = json_loadb((const char *)val, len, 0, NULL);
	free(val);
	counts = json_object_get(o, "counts");
	if (!json_is_object(counts) ||
	    !json_is_integer(json_object_get(o, "started_ms")) ||
	    !json_is_integer(json_object_get(o, "duration_ms"))) {
		log_warnx("metrics: meta reconcile/last is not a summary with "
		    "counts, started_ms and duration_ms; not exported");
		json_decref(o);
		return;
	}
	metrics_head(b, "ksefd_reconcile_last_findings", "gauge",
	    "Findings of the last reconciliation, by kind.");
	json_object_foreach(counts, k, v)
		if (json_is_integer(v) && k[0] != '\0' &&
		    strspn(k, "abcdefghijklmnopqrstuvwxyz_") == strlen(k))
			buf_addf(b, "ksefd_reconcile_last_findings{finding=\"%s\"} "
			    "%lld\n", k, (long long)json_integer_value(v));
	metrics_head(b, "ksefd_reconcile_last_start_seconds", "gauge",
	    "When the last reconciliation started (Unix time).");
	buf_addstr(b, "ksefd_reconcile_last_start_seconds ");
	metrics_secs(b, json_integer_value(json_object_get(o, "started_ms")));
	buf_addstr(b, "\n");
	metrics_head(b, "ksefd_reconcile_last_duration_seconds", "gauge",
	    "How long the last reconciliation took.");
	buf_addstr(b, "ksefd_reconcile_last_duration_seconds ");
	metrics_secs(b, json_integer_value(json_object_get(o, "duration_ms")));
	buf_addstr(b, "\n");
	json_decref(o);
}

void
metrics_render(struct metrics *m, struct buf *b)
{
	struct store_stats ss;
	struct sched_stats ps;
	struct msnap sn;
	struct mctx *c;
	int64_t now = time_now_ms(), le[STORE_HIST_N];
	int f, t;

	metrics_catch_up(m);
	metrics_head(b, "ksefd_invoices", "gauge",
	    "Invoices in the store, by seller context and state.");
	for (c = m->ctxs; c != NULL; c = c->next)
		for (t = 0; t < INV_ST_COUNT; t++)
			buf_addf(b, "ksefd_invoices{context=\"%s\",state=\"%s\"} "
			    "%llu\n", c->nip, record_state_name(t),
			    (unsigned long long)c->count[t]);
	metrics_head(b, "ksefd_transitions_total", "counter",
	    "State transitions in the audit trail (from NONE: new invoices).");
	for (f = 0; f <= INV_ST_COUNT; f++)
		for (t = 0; t < INV_ST_COUNT; t++)
			if (m->transitions[f][t] != 0)
				buf_addf(b, "ksefd_transitions_total{from=\"%s\","
				    "to=\"%s\"} %llu\n", record_state_name(f - 1),
				    record_state_name(t),
				    (unsigned long long)m->transitions[f][t]);
	if (m->sched != NULL) {
		sched_stats_get(m->sched, &ps);
		metrics_head(b, "ksefd_requests_in_flight", "gauge",
		    "KSeF requests under way.");
		buf_addf(b, "ksefd_requests_in_flight %llu\n",
		    (unsigned long long)ps.in_flight);
		metrics_snap(m, now, &sn);
		metrics_render_ctx(b, &sn, now);
		free(sn.info);
	}
	store_stats_get(m->store, &ss);
	metrics_head(b, "ksefd_store_commit_seconds", "histogram",
	    "Store group commit latency (LMDB commit with fsync).");
	for (f = 0; f < STORE_HIST_N; f++)
		le[f] = (int64_t)100 << (2 * f);
	metrics_hist(b, "ksefd_store_commit_seconds", "", ss.commit_hist, le,
	    STORE_HIST_N, (int64_t)ss.commit_us_sum);
	metrics_head(b, "ksefd_store_commits_failed_total", "counter",
	    "Store groups that could not be committed.");
	buf_addf(b, "ksefd_store_commits_failed_total %llu\n",
	    (unsigned long long)ss.failed);
	metrics_head(b, "ksefd_store_map_used_bytes", "gauge",
	    "Bytes of the LMDB map in use.");
	buf_addf(b, "ksefd_store_map_used_bytes %zu\n", ss.map_used);
	metrics_head(b, "ksefd_store_map_size_bytes", "gauge",
	    "Size of the LMDB map.");
	buf_addf(b, "ksefd_store_map_size_bytes %zu\n", ss.map_size);
	metrics_render_reconcile(m, b);
	metrics_render_latarnia(m, b);
}

/* --- status JSON --------------------------------------------------------- */

static json_t *
metrics_status_ctx(const struct sched_ctx_info *ci, const struct mctx *mc,
    int64_t now)
{
	json_t *o = json_object(), *states = json_object(), *ages = json_object();
	json_t *lim = json_object(), *g1;
	int st, g, w;

	for (st = 0; st < INV_ST_COUNT; st++) {
		/* Finished states from the store count; unfinished from sched. */
		json_object_set_new(states, record_state_name(st), json_integer(
		    (json_int_t)(mc != NULL ? mc->count[st] : ci->count[st])));
		if (ci->oldest_ms[st] != 0)
			json_object_set_new(ages, record_state_name(st),
			    json_real((double)(now - ci->oldest_ms[st]) / 1000));
	}
	for (g = 0; g < RL_NGROUPS; g++) {
		g1 = json_object();
		for (w = 0; w < RL_NWIN; w++)
			json_object_set_new(g1, win_name[w],
			    ci->headroom[g][w] < 0 ? json_null() :
			    json_integer((json_int_t)ci->headroom[g][w]));
		if (ci->paused_until[g] != 0)
			json_object_set_new(g1, "paused_s", json_real(
			    (double)(ci->paused_until[g] - now) / 1000));
		json_object_set_new(lim, ratelimit_group_name(g), g1);
	}
	json_object_set_new(o, "context", json_string(ci->nip));
	json_object_set_new(o, "states", states);
	json_object_set_new(o, "oldest_age_s", ages);
	json_object_set_new(o, "headroom", lim);
	json_object_set_new(o, "token_expires_in_s", ci->token_expiry_ms == 0 ?
	    json_null() : json_real((double)(ci->token_expiry_ms - now) / 1000));
	json_object_set_new(o, "sessions_open",
	    json_integer((json_int_t)ci->sessions_open));
	json_object_set_new(o, "sends_in_flight",
	    json_integer((json_int_t)ci->sending));
	json_object_set_new(o, "breaker",
	    json_string(breaker_state_name((enum breaker_state)ci->breaker)));
	return o;
}

void *
metrics_status(struct metrics *m)
{
	json_t *o = json_object(), *arr = json_array();
	struct sched_stats ps;
	struct msnap sn;
	struct mctx *c;
	unsigned char *val = NULL;
	size_t i, len;
	json_t *last = NULL;
	int64_t now = time_now_ms();

	metrics_catch_up(m);
	metrics_snap(m, now, &sn);
	for (i = 0; i < sn.n; i++) {
		for (c = m->ctxs; c != NULL; c = c->next)
			if (strcmp(c->nip, sn.info[i].nip) == 0)
				break;
		json_array_append_new(arr, metrics_status_ctx(&sn.info[i], c, now));
	}
	free(sn.info);
	memset(&ps, 0, sizeof(ps));
	if (m->sched != NULL)
		sched_stats_get(m->sched, &ps);
	json_object_set_new(o, "time_ms", json_integer((json_int_t)now));
	json_object_set_new(o, "requests_in_flight",
	    json_integer((json_int_t)ps.in_flight));
	json_object_set_new(o, "contexts", arr);
	/* The reconciliation summary, when one has run (stored as JSON). */
	if (store_meta_get(m->store, "reconcile/last", &val, &len) == 0) {
		last = json_loadb((const char *)val, len, 0, NULL);
		free(val);
	}
	json_object_set_new(o, "last_reconcile", last ? last : json_null());
	if (m->latarnia != NULL) {
		struct latarnia_info li;

		latarnia_info_get(m->latarnia, &li);
		json_object_set_new(o, "availability", json_pack("{s:s, s:b, s:I}",
		    "latarnia", latarnia_status_name(li.status), "paused",
		    latarnia_is_outage(li.status), "since_ms",
		    (json_int_t)li.since_ms));
	}
	return o;
}
