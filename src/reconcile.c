/* reconcile.c: the store against KSeF (see reconcile.h). */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "conf.h"
#include "ksef/ksef.h"
#include "log.h"
#include "map.h"
#include "reconcile.h"
#include "record.h"
#include "sched.h"
#include "store.h"
#include "util.h"

#define RECONCILE_RANGE_MS	(90LL * 86400 * 1000)	/* KSeF's cap is 3 months */
#define RECONCILE_EDGE_MS	(10LL * 60 * 1000)	/* windows overlap by this */
#define RECONCILE_PAGE		250
#define RECONCILE_META_LAST	"reconcile/last"

enum finding {
	F_STUCK, F_IN_DOUBT, F_NO_UPO, F_OVERDUE, F_ORPHAN, F_MISSING,
	F_MISMATCH, F_N
};

static const char *finding_names[F_N] = {
	"stuck", "in_doubt", "no_upo", "overdue", "orphan", "missing",
	"mismatch",
};

/* What a run needs of one local invoice. */
struct local_inv {
	unsigned char	 key[INV_KEY_LEN];
	char		 nip[INV_NIP_LEN + 1];
	enum inv_state	 state;
	char		*ksef_number;
	char		 hash[45];
	int64_t		 t_ms;		/* storage or acquisition date; 0 unknown */
	int64_t		 since_ms;	/* first attempt, else received */
	int		 hold;
	int		 seen;		/* listed by KSeF in this run */
};

struct reconcile {
	struct event_base *base;
	struct store	*store;
	struct sched	*sched;
	const struct conf *conf;
	struct event	*ev_timer;	/* the next run on the interval */
	struct event	*ev_step;	/* the next query (limiter, Retry-After) */
	reconcile_alert_cb alert;
	void		*alert_arg;
	int		 running;
	int64_t		 since_ms;
	int64_t		 start_ms, start_mono;
	uint64_t	 counts[F_N];
	struct local_inv *loc;
	size_t		 nloc, caploc;
	struct map	*bynum, *byhash;
	size_t		 ictx;		/* context being queried */
	char		 nip[INV_NIP_LEN + 1];	/* its NIP */
	int64_t		 first_ms;	/* its window: from ... */
	int64_t		 from_ms, to_ms, end_ms;	/* current chunk, run end */
	unsigned	 offset, pages;
	int		 truncated;
	json_t		*windows;
};

static void reconcile_ctx_begin(struct reconcile *);
static void reconcile_step(struct reconcile *);

/* A finding: counted, logged, an audit event and an alert. */
static void
reconcile_finding(struct reconcile *r, enum finding f, const char *nip,
    const unsigned char *key, enum inv_state state, const char *fmt, ...)
{
	static const unsigned char zero[INV_KEY_LEN];
	char *msg, *detail, ks[17] = "-";
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatal("reconcile: vasprintf");
	va_end(ap);
	r->counts[f]++;
	if (key != NULL)
		record_key_short(key, ks);
	log_warnx("reconcile: %s: %s %s: %s", finding_names[f], nip, ks,
	    log_escape(msg, strlen(msg), 400));
	detail = xasprintf("reconcile: %s: %s", finding_names[f], msg);
	/* An orphan has no key here; KSeF holds it as accepted. */
	if (store_audit_note(r->store, key != NULL ? key : zero,
	    key != NULL ? state : INV_ST_ACCEPTED, detail) == -1)
		log_warnx("reconcile: the audit event of a finding was not "
		    "written");
	free(detail);
	if (r->alert != NULL)
		r->alert(finding_names[f], nip, key, msg, r->alert_arg);
	free(msg);
}

static int
reconcile_load_cb(const struct record_invoice *inv, void *arg)
{
	struct reconcile *r = arg;
	struct local_inv *l;

	if (r->nloc == r->caploc) {
		r->caploc = r->caploc ? r->caploc * 2 : 256;
		r->loc = xrealloc(r->loc, r->caploc * sizeof(*r->loc));
	}
	l = &r->loc[r->nloc++];
	memset(l, 0, sizeof(*l));
	memcpy(l->key, inv->key, INV_KEY_LEN);
	memcpy(l->nip, inv->seller_nip, sizeof(l->nip));
	l->state = inv->state;
	l->hold = inv->hold;
	l->ksef_number = inv->ksef_number ? xstrdup(inv->ksef_number) : NULL;
	ksef_invoice_hash(inv->xml_sha256, l->hash);
	if (time_parse_iso(inv->storage_date, &l->t_ms) == -1 &&
	    time_parse_iso(inv->acquisition_date, &l->t_ms) == -1)
		l->t_ms = 0;
	l->since_ms = inv->first_attempt_ms ? inv->first_attempt_ms :
	    inv->received_ms;
	return 0;
}

static void
reconcile_local_clear(struct reconcile *r)
{
	size_t i;

	for (i = 0; i < r->nloc; i++)
		free(r->loc[i].ksef_number);
	free(r->loc);
	r->loc = NULL;
	r->nloc = r->caploc = 0;
	map_free(r->bynum);
	map_free(r->byhash);
	r->bynum = r->byhash = NULL;
}

/* Local checks: stuck, in doubt, no UPO, overdue; each back to the pipeline. */
static void
reconcile_local(struct reconcile *r, int64_t now)
{
	int64_t stuck = r->conf->reconcile_stuck_after;
	int64_t age;
	struct local_inv *l;
	enum finding f;
	size_t i;

	for (i = 0; i < r->nloc; i++) {
		l = &r->loc[i];
		age = now - l->since_ms;
		switch (l->state) {
		case INV_ST_SUBMITTED:
			if (age < stuck)
				continue;
			f = F_STUCK;
			break;
		case INV_ST_SENDING:
			if (age < stuck)
				continue;
			f = F_IN_DOUBT;
			break;
		case INV_ST_ACCEPTED:
			if (age < stuck)
				continue;
			f = F_NO_UPO;
			break;
		case INV_ST_QUEUED:
			if (l->hold || r->conf->max_age <= 0 ||
			    now - l->since_ms < r->conf->max_age)
				continue;
			f = F_OVERDUE;
			break;
		default:
			continue;
		}
		reconcile_finding(r, f, l->nip, l->key, l->state,
		    "%s for %lld s%s", record_state_name(l->state),
		    (long long)(age / 1000),
		    sched_invoice_recheck(r->sched, l->key) == 0 ?
		    "; looked at again" : "; not in the pipeline");
	}
}

/* Build the indexes of the run (after the array is complete). */
static void
reconcile_index(struct reconcile *r)
{
	size_t i;

	r->bynum = map_new();
	r->byhash = map_new();
	for (i = 0; i < r->nloc; i++) {
		if (r->loc[i].ksef_number != NULL)
			map_put(r->bynum, r->loc[i].ksef_number,
			    strlen(r->loc[i].ksef_number), &r->loc[i]);
		map_put(r->byhash, r->loc[i].hash, strlen(r->loc[i].hash),
		    &r->loc[i]);
	}
}

static void
reconcile_timer_arm(struct reconcile *r)
{
	struct timeval tv;

	event_del(r->ev_timer);
	if (r->conf->reconcile_interval <= 0)
		return;
	tv.tv_sec = r->conf->reconcile_interval / 1000;
	tv.tv_usec = (r->conf->reconcile_interval % 1000) * 1000;
	event_add(r->ev_timer, &tv);
}

/* The run is over: store its summary. */
static void
reconcile_finish(struct reconcile *r)
{
	json_t *o, *counts;
	char when[40];
	char *s;
	int i;

	counts = json_object();
	for (i = 0; i < F_N; i++)
		json_object_set_new(counts, finding_names[i],
		    json_integer((json_int_t)r->counts[i]));
	time_fmt_iso(r->start_ms, when, sizeof(when));
	o = json_pack("{s:s, s:I, s:I, s:o, s:o}", "started", when,
	    "started_ms", (json_int_t)r->start_ms, "duration_ms",
	    (json_int_t)(time_mono_ms() - r->start_mono), "counts", counts,
	    "windows", r->windows);
	r->windows = NULL;
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("reconcile: summary: out of memory");
	json_decref(o);
	if (store_meta_put(r->store, RECONCILE_META_LAST, s, strlen(s)) == -1)
		log_warnx("reconcile: the run's summary was not stored");
	log_info("reconcile: done: %s", s);
	free(s);
	reconcile_local_clear(r);
	r->running = 0;
	reconcile_timer_arm(r);
}

/* The window of this context is finished (ok) or abandoned (error). */
static void
reconcile_ctx_end(struct reconcile *r, const char *error)
{
	const char *nip = r->nip;
	char from[40], to[40], name[64], pt[24];
	int64_t lo;
	struct local_inv *l;
	size_t i;

	time_fmt_iso(r->first_ms, from, sizeof(from));
	time_fmt_iso(r->to_ms, to, sizeof(to));
	if (error == NULL) {
		/* Missing: ours, accepted in the window, not listed. */
		lo = r->since_ms > 0 ? r->first_ms : r->first_ms +
		    RECONCILE_EDGE_MS;
		for (i = 0; i < r->nloc; i++) {
			l = &r->loc[i];
			if (strcmp(l->nip, nip) != 0 || l->seen ||
			    (l->state != INV_ST_ACCEPTED &&
			    l->state != INV_ST_DONE) || l->ksef_number == NULL ||
			    l->t_ms == 0 || l->t_ms < lo || l->t_ms > r->to_ms)
				continue;
			reconcile_finding(r, F_MISSING, nip, l->key, l->state,
			    "KSeF number %s is not listed by KSeF",
			    l->ksef_number);
		}
		snprintf(name, sizeof(name), "reconcile/point/%s", nip);
		snprintf(pt, sizeof(pt), "%lld", (long long)r->to_ms);
		if (store_meta_put(r->store, name, pt, strlen(pt)) == -1)
			log_warnx("reconcile: %s: the reconciled point was "
			    "not stored", nip);
	} else
		log_warnx("reconcile: %s: query failed: %s", nip, error);
	json_array_append_new(r->windows, json_pack("{s:s, s:s, s:s, s:I, "
	    "s:b, s:s?}", "nip", nip, "from", from, "to", to, "pages",
	    (json_int_t)r->pages, "truncated", r->truncated, "error", error));
	r->ictx++;
	reconcile_ctx_begin(r);
}

/* An orphan: kept in meta with its metadata; reported when new. */
static void
reconcile_orphan(struct reconcile *r, const char *nip,
    const struct ksef_invoice *ki)
{
	unsigned char *old;
	size_t oldlen;
	char *name, *s;
	json_t *o;

	name = xasprintf("reconcile/orphan/%s/%s", nip, ki->ksef_number);
	if (store_meta_get(r->store, name, &old, &oldlen) == 0) {
		free(old);
		free(name);
		return;
	}
	o = json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:I}", "ksefNumber",
	    ki->ksef_number, "invoiceNumber", ki->invoice_number,
	    "invoiceHash", ki->invoice_hash, "acquisitionDate",
	    ki->acquisition_date, "permanentStorageDate", ki->storage_date,
	    "found_ms", (json_int_t)time_now_ms());
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx("reconcile: orphan: out of memory");
	json_decref(o);
	if (store_meta_put(r->store, name, s, strlen(s)) == -1)
		log_warnx("reconcile: %s: orphan %s not recorded", nip,
		    ki->ksef_number);
	free(s);
	free(name);
	reconcile_finding(r, F_ORPHAN, nip, NULL, INV_ST_NONE,
	    "KSeF number %s (invoice %s, hash %s) is not known here",
	    ki->ksef_number, ki->invoice_number ? ki->invoice_number : "?",
	    ki->invoice_hash ? ki->invoice_hash : "?");
}

/* One invoice KSeF lists, against ours. */
static void
reconcile_compare(struct reconcile *r, const char *nip,
    const struct ksef_invoice *ki)
{
	struct local_inv *l;

	l = map_get(r->bynum, ki->ksef_number, strlen(ki->ksef_number));
	if (l != NULL) {
		l->seen = 1;
		if (ki->invoice_hash != NULL &&
		    strcmp(ki->invoice_hash, l->hash) != 0)
			reconcile_finding(r, F_MISMATCH, nip, l->key, l->state,
			    "KSeF number %s: KSeF's hash %s, ours %s",
			    ki->ksef_number, ki->invoice_hash, l->hash);
		return;
	}
	if (ki->invoice_hash != NULL && (l = map_get(r->byhash,
	    ki->invoice_hash, strlen(ki->invoice_hash))) != NULL) {
		l->seen = 1;
		if (l->ksef_number != NULL)
			reconcile_finding(r, F_MISMATCH, nip, l->key, l->state,
			    "hash %s: KSeF number %s at KSeF, %s here",
			    l->hash, ki->ksef_number, l->ksef_number);
		return;		/* no number here yet: still in the pipeline */
	}
	reconcile_orphan(r, nip, ki);
}

static void
reconcile_meta_cb(struct ksef_result *res, void *arg)
{
	struct reconcile *r = arg;
	const char *nip = r->nip;
	struct timeval tv;
	int64_t d;
	size_t i;

	switch (res->outcome) {
	case KSEF_OK:
		r->pages++;
		for (i = 0; i < res->ninvoices; i++)
			if (res->invoices[i].ksef_number != NULL)
				reconcile_compare(r, nip, &res->invoices[i]);
		if (res->truncated) {
			r->truncated = 1;
			log_warnx("reconcile: %s: KSeF truncated the listing "
			    "of this window", nip);
		}
		if (res->has_more && res->ninvoices > 0 && !res->truncated) {
			r->offset += (unsigned)res->ninvoices;
			reconcile_step(r);
			return;
		}
		if (r->to_ms < r->end_ms) {
			/* The next chunk of at most three months. */
			r->from_ms = r->to_ms - RECONCILE_EDGE_MS;
			r->to_ms = r->from_ms + RECONCILE_RANGE_MS < r->end_ms ?
			    r->from_ms + RECONCILE_RANGE_MS : r->end_ms;
			r->offset = 0;
			reconcile_step(r);
			return;
		}
		reconcile_ctx_end(r, NULL);
		return;
	case KSEF_RETRY_AFTER:
	case KSEF_AUTH_EXPIRED:
		d = res->outcome == KSEF_RETRY_AFTER ? res->retry_at_ms -
		    time_now_ms() : 0;
		if (d < 0)
			d = 0;
		tv.tv_sec = d / 1000;
		tv.tv_usec = (d % 1000) * 1000;
		event_add(r->ev_step, &tv);
		return;
	default:
		reconcile_ctx_end(r, res->reason ? res->reason :
		    ksef_outcome_name(res->outcome));
		return;
	}
}

/* Ask for the next page, or wait for the limiter. */
static void
reconcile_step(struct reconcile *r)
{
	struct ksef_query q;
	struct timeval tv;
	int64_t at, d;
	int rc;

	memset(&q, 0, sizeof(q));
	q.from_ms = r->from_ms;
	q.to_ms = r->to_ms;
	q.page_offset = r->offset;
	q.page_size = RECONCILE_PAGE;
	rc = sched_metadata_query(r->sched, r->nip, &q, reconcile_meta_cb, r, &at);
	if (rc == 0)
		return;
	if (rc == -1) {
		reconcile_ctx_end(r, "the context is not running");
		return;
	}
	d = at - time_now_ms();
	if (d < 1)
		d = 1;
	tv.tv_sec = d / 1000;
	tv.tv_usec = (d % 1000) * 1000;
	event_add(r->ev_step, &tv);
}

static void
reconcile_step_cb(evutil_socket_t fd, short ev, void *arg)
{
	reconcile_step(arg);
}

/* Start the remote check of context r->ictx, or finish the run. */
static void
reconcile_ctx_begin(struct reconcile *r)
{
	const char *nip;
	unsigned char *v;
	size_t len;
	char name[64];
	long long pt;

	if (r->ictx >= r->conf->ncontexts) {
		reconcile_finish(r);
		return;
	}
	nip = r->conf->contexts[r->ictx].nip;
	snprintf(r->nip, sizeof(r->nip), "%s", nip);
	r->end_ms = time_now_ms();
	r->first_ms = r->end_ms - RECONCILE_RANGE_MS;
	if (r->since_ms > 0)
		r->first_ms = r->since_ms;
	else {
		snprintf(name, sizeof(name), "reconcile/point/%s", nip);
		if (store_meta_get(r->store, name, &v, &len) == 0) {
			if (sscanf((char *)v, "%lld", &pt) == 1 && pt > 0)
				r->first_ms = pt - RECONCILE_EDGE_MS;
			free(v);
		}
	}
	if (r->first_ms > r->end_ms)
		r->first_ms = r->end_ms;
	r->from_ms = r->first_ms;
	r->to_ms = r->from_ms + RECONCILE_RANGE_MS < r->end_ms ?
	    r->from_ms + RECONCILE_RANGE_MS : r->end_ms;
	r->offset = r->pages = 0;
	r->truncated = 0;
	reconcile_step(r);
}

int
reconcile_run(struct reconcile *r, int64_t since_ms)
{
	if (r->running)
		return 1;
	r->running = 1;
	event_del(r->ev_timer);
	r->since_ms = since_ms;
	r->start_ms = time_now_ms();
	r->start_mono = time_mono_ms();
	memset(r->counts, 0, sizeof(r->counts));
	r->windows = json_array();
	log_info("reconcile: started");
	if (store_invoice_foreach(r->store, reconcile_load_cb, r) == -1)
		log_warnx("reconcile: the store could not be read in full");
	reconcile_index(r);
	reconcile_local(r, r->start_ms);
	r->ictx = 0;
	reconcile_ctx_begin(r);
	return 0;
}

static void
reconcile_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	reconcile_run(arg, 0);
}

int
reconcile_running(const struct reconcile *r)
{
	return r->running;
}

char *
reconcile_last_json(struct reconcile *r)
{
	unsigned char *v;
	size_t len;

	if (store_meta_get(r->store, RECONCILE_META_LAST, &v, &len) != 0)
		return NULL;
	return (char *)v;
}

struct reconcile *
reconcile_new(struct event_base *base, struct store *store,
    struct sched *sched, const struct conf *conf)
{
	struct reconcile *r = xcalloc(1, sizeof(*r));

	r->base = base;
	r->store = store;
	r->sched = sched;
	r->conf = conf;
	r->ev_timer = evtimer_new(base, reconcile_timer_cb, r);
	r->ev_step = evtimer_new(base, reconcile_step_cb, r);
	if (r->ev_timer == NULL || r->ev_step == NULL)
		fatalx("reconcile: evtimer_new");
	reconcile_timer_arm(r);
	return r;
}

void
reconcile_update(struct reconcile *r, const struct conf *conf)
{
	r->conf = conf;
	if (r->ictx > conf->ncontexts)
		r->ictx = conf->ncontexts;
	if (!r->running)
		reconcile_timer_arm(r);
}

void
reconcile_alert_set(struct reconcile *r, reconcile_alert_cb cb, void *arg)
{
	r->alert = cb;
	r->alert_arg = arg;
}

void
reconcile_free(struct reconcile *r)
{
	if (r == NULL)
		return;
	event_free(r->ev_timer);
	event_free(r->ev_step);
	reconcile_local_clear(r);
	json_decref(r->windows);
	free(r);
}
