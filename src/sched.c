/* sched.c: the submission pipeline: limits, sessions, sends, status, UPO, in-doubt and duplicates. */
#include "config.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "backoff.h"
#include "conf.h"
#include "failpoint.h"
#include "ksef/ksef.h"
#include "log.h"
#include "map.h"
#include "ratelimit.h"
#include "record.h"
#include "sched.h"
#include "store.h"
#include "util.h"

#define SCHED_NFORMS		2	/* INV_FORM_FA3, INV_FORM_FA2 */
#define SCHED_PAGE_SIZE		1000	/* session invoice list page */
#define SCHED_POLL_TOP_EVERY	8	/* every Nth listing round reads from the top */
/*
 * UPO downloads at once per context: as many as sends, or the UPOs fall
 * behind (scripts/bench pipeline: with 16 against 64 sends, thousands of
 * invoices waited in ACCEPTED and drained only after the last send).
 */
#define SCHED_UPO_INFLIGHT	64
#define SCHED_SEND_SLOTS	64	/* sends in flight per context (before the breaker) */
#define SCHED_LIMIT_SLACK_MS	100	/* added to every limiter window */
#define SCHED_LIMITS_REFRESH_MS	(3600 * 1000)	/* GET /rate-limits again */
#define SCHED_LIMITS_RETRY_MS	(60 * 1000)	/* after a failed one */

struct sctx;
struct strack;

/* Which session an open or close callback is about. */
struct sess_op {
	struct sctx	*c;
	int		 form;
};

/* Which per-context work list a job is on, besides the send queue. */
enum job_list {
	JL_NONE = 0,
	JL_UPO,		/* ACCEPTED: fetch and store the UPO */
	JL_DUP,		/* duplicate: fetch the original and compare */
};

/* An unfinished invoice, as much as the pipeline needs in memory. */
struct job {
	unsigned char	 key[INV_KEY_LEN];
	unsigned char	 sha[INV_SHA_LEN];
	struct sctx	*c;
	enum inv_state	 state;
	enum inv_form	 form;
	int64_t		 due;		/* next action */
	int64_t		 received_ms;
	uint32_t	 attempts;
	int		 busy;		/* a commit or request for it is under way */
	int		 hold;
	int		 in_doubt;	/* SENDING with an unknown outcome */
	uint64_t	 seen_round;	/* in-doubt: found in this listing round */
	uint64_t	 doubt_round;	/* in-doubt: only a later round can clear it */
	int		 heap_idx;	/* in its context's send queue, or -1 */
	enum job_list	 list;
	struct job	*lnext, *lprev;
	struct strack	*st;		/* SUBMITTED or in doubt: its session */
	struct job	*snext, *sprev;	/* in st's job list */
	char		*session_ref;
	char		*invoice_ref;
	char		*ksef_number;
	char		*upo_url;	/* presigned, from the status listing */
	char		*orig_session;	/* duplicate: where the original is */
	/*
	 * SUBMITTED in the store, but KSeF has numbered it: the acceptance is
	 * held here and written with the UPO in one transaction, or on its
	 * own when the first UPO attempt fails (see job_apply).
	 */
	int		 acc_held;
	char		*acq_date, *storage_date;
};

/*
 * A session whose invoices are being polled: in listing rounds (pages of
 * GET /sessions/{ref}/invoices), or, when few are pending, one
 * GET /sessions/{ref}/invoices/{invRef} each (see ctx_poll).
 */
struct strack {
	struct sctx	*c;
	char		*ref;
	struct job	*jobs;		/* SUBMITTED and in-doubt SENDING */
	size_t		 njobs;
	int64_t		 next_poll;
	unsigned	 busy;		/* requests under way: a page, or statuses */
	int		 soon;		/* statuses: poll again at once, not later */
	uint64_t	 round;		/* listing rounds started */
	int		 in_round;	/* a listing round is under way */
	int		 from_top;	/* ... and it started at the first page */
	char		*cont;		/* continuation token of the next page */
	char		*mark;		/* the round's first page with a pending job */
	int		 marked;	/* mark is set (NULL: the first page) */
	char		*resume;	/* where the next round starts (NULL: the top) */
	struct strack	*next;
};

/* The online session of one form in one context. */
struct sess {
	struct record_session *rs;	/* NULL: none open */
	int		 opening, closing;
	unsigned	 sending;	/* sends in flight into it */
	int64_t		 last_send;
	int64_t		 retry_at;	/* after a failed open */
	uint32_t	 failures;
};

/* One KSeF context (seller NIP). */
struct sctx {
	struct sched	*s;
	char		 nip[INV_NIP_LEN + 1];
	struct ksef_ctx	*k;
	struct ratelimit *rl[RL_NGROUPS];
	int		 rl_dirty[RL_NGROUPS];
	struct ratelimit_limits ksef_lim[RL_NGROUPS];	/* KSeF's (GET /rate-limits), counts */
	int		 ksef_have[RL_NGROUPS];	/* ... where it reported the group */
	int64_t		 limits_at;		/* next GET /rate-limits */
	int		 limits_busy;		/* one under way */
	int		 limits_known;		/* one has answered since start */
	struct breaker	 br;
	struct sess	 sess[SCHED_NFORMS];
	struct job	**heap[SCHED_NFORMS];	/* send queues by due time */
	size_t		 nheap[SCHED_NFORMS], capheap[SCHED_NFORMS];
	struct job	*upo, *dup;		/* work lists */
	unsigned	 upo_busy;
	struct strack	*tracks;
	int		 auth_busy;
	int64_t		 auth_retry_at;
	uint32_t	 auth_failures;
	unsigned	 sending;		/* sends in flight */
	struct sess_op	*ops[SCHED_NFORMS];	/* callback args of session open/close */
	int		 gone;			/* removed from the config */
	uint64_t	 m_requests[RL_NGROUPS];	/* metrics: see sched_ctx_info */
	uint64_t	 m_outcomes[SCHED_OUTCOMES];
	uint64_t	 m_ra_count[RL_NGROUPS];
	int64_t		 m_ra_ms_sum[RL_NGROUPS];
	uint64_t	 m_ra_bucket[SCHED_RA_BUCKETS];
	size_t		 m_idx;			/* sched_ctx_foreach scratch */
	struct sctx	*next;
};

struct sched {
	struct event_base *base;
	struct store	*store;
	struct http	*http;
	const struct conf *conf;
	struct sctx	*ctxs;
	struct map	*jobs;		/* key -> job */
	struct map	*refs;		/* invoice reference -> job (SUBMITTED) */
	struct event	*ev_run;	/* run at once (coalesced) */
	struct event	*ev_timer;	/* run at the next known due time */
	int64_t		 timer_at;
	struct breaker_policy bp;
	struct backoff_policy bo;
	unsigned	 in_flight;
	int		 stopping;
	int		 resync;	/* a commit failed: reload from the store */
	int		 outage;	/* KSeF says it is out (Latarnia): no sends */
	sched_alert_cb	 alert;		/* REJECTED and FAILED invoices */
	struct meta_op	*metas;		/* metadata queries in flight */
	void		*alert_arg;
	sched_auth_alert_cb auth_alert;	/* authentication failures */
	void		*auth_alert_arg;
	struct sched_stats st;
};

static void sched_kick(struct sched *);
static void sched_resync_maybe(struct sched *);
static void job_queue(struct job *, int64_t due);
static void job_track(struct job *, const char *session_ref);

/* --- jobs ------------------------------------------------------------- */

static void
job_short(const struct job *j, char out[17])
{
	record_key_short(j->key, out);
}

static struct job *
job_new(struct sched *s, struct sctx *c, const struct record_invoice *inv)
{
	struct job *j = xcalloc(1, sizeof(*j));

	memcpy(j->key, inv->key, INV_KEY_LEN);
	memcpy(j->sha, inv->xml_sha256, INV_SHA_LEN);
	j->c = c;
	j->state = inv->state;
	j->form = inv->form;
	j->received_ms = inv->received_ms;
	j->attempts = inv->attempts;
	j->hold = inv->hold;
	j->heap_idx = -1;
	record_str_set(&j->session_ref, inv->session_ref);
	record_str_set(&j->invoice_ref, inv->invoice_ref);
	record_str_set(&j->ksef_number, inv->ksef_number);
	map_put(s->jobs, j->key, INV_KEY_LEN, j);
	s->st.jobs++;
	s->st.per_state[j->state]++;
	return j;
}

/* --- the send queue: a binary min-heap on due time per context and form --- */

static void
heap_swap(struct job **h, size_t a, size_t b)
{
	struct job *t = h[a];

	h[a] = h[b];
	h[b] = t;
	h[a]->heap_idx = (int)a;
	h[b]->heap_idx = (int)b;
}

static void
heap_up(struct job **h, size_t i)
{
	while (i > 0 && h[(i - 1) / 2]->due > h[i]->due) {
		heap_swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
heap_down(struct job **h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < n && h[l]->due < h[m]->due)
			m = l;
		if (r < n && h[r]->due < h[m]->due)
			m = r;
		if (m == i)
			return;
		heap_swap(h, i, m);
		i = m;
	}
}

static void
heap_push(struct sctx *c, struct job *j)
{
	int f = j->form;

	if (c->nheap[f] == c->capheap[f]) {
		c->capheap[f] = c->capheap[f] ? c->capheap[f] * 2 : 64;
		c->heap[f] = xrealloc(c->heap[f], c->capheap[f] * sizeof(*c->heap[f]));
	}
	c->heap[f][c->nheap[f]] = j;
	j->heap_idx = (int)c->nheap[f]++;
	heap_up(c->heap[f], (size_t)j->heap_idx);
}

static void
heap_remove(struct sctx *c, struct job *j)
{
	int f = j->form;
	size_t i = (size_t)j->heap_idx, last = --c->nheap[f];

	if (i != last) {
		heap_swap(c->heap[f], i, last);
		heap_down(c->heap[f], c->nheap[f], i);
		heap_up(c->heap[f], i);
	}
	j->heap_idx = -1;
}

/* --- work lists -------------------------------------------------------- */

static struct job **
list_head(struct sctx *c, enum job_list l)
{
	return l == JL_UPO ? &c->upo : &c->dup;
}

static void
list_add(struct job *j, enum job_list l)
{
	struct job **head = list_head(j->c, l);

	j->list = l;
	j->lprev = NULL;
	j->lnext = *head;
	if (*head)
		(*head)->lprev = j;
	*head = j;
}

static void
list_remove(struct job *j)
{
	if (j->list == JL_NONE)
		return;
	if (j->lprev)
		j->lprev->lnext = j->lnext;
	else
		*list_head(j->c, j->list) = j->lnext;
	if (j->lnext)
		j->lnext->lprev = j->lprev;
	j->lnext = j->lprev = NULL;
	j->list = JL_NONE;
}

/* --- session tracks ---------------------------------------------------- */

static struct strack *
track_get(struct sctx *c, const char *ref)
{
	struct strack *t;

	for (t = c->tracks; t != NULL; t = t->next)
		if (strcmp(t->ref, ref) == 0) {
			if (t->njobs == 0 && !t->busy)	/* kept idle */
				t->next_poll = time_now_ms() +
				    c->s->conf->poll_status_interval;
			return t;
		}
	t = xcalloc(1, sizeof(*t));
	t->c = c;
	t->ref = xstrdup(ref);
	t->next_poll = time_now_ms() + c->s->conf->poll_status_interval;
	t->next = c->tracks;
	c->tracks = t;
	return t;
}

static void
track_free(struct strack *t)
{
	free(t->ref);
	free(t->cont);
	free(t->mark);
	free(t->resume);
	free(t);
}

/* Is t's session one its context sends into? */
static int
track_open(const struct strack *t)
{
	int f;

	for (f = 0; f < SCHED_NFORMS; f++)
		if (t->c->sess[f].rs != NULL &&
		    strcmp(t->c->sess[f].rs->session_ref, t->ref) == 0)
			return 1;
	return 0;
}

/*
 * Forget a track with nothing left to poll and nothing under way; one of an
 * open session keeps its resume point for the invoices still to come
 * (ctx_poll frees it once the session is closed).
 */
static void
track_free_maybe(struct strack *t)
{
	struct sctx *c = t->c;
	struct strack **pp;

	if (t->njobs > 0 || t->busy || (t->resume != NULL && track_open(t)))
		return;
	for (pp = &c->tracks; *pp != NULL; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	track_free(t);
}

static void
job_untrack(struct job *j)
{
	struct strack *t = j->st;

	if (t == NULL)
		return;
	if (j->sprev)
		j->sprev->snext = j->snext;
	else
		t->jobs = j->snext;
	if (j->snext)
		j->snext->sprev = j->sprev;
	j->snext = j->sprev = NULL;
	t->njobs--;
	j->st = NULL;
	if (j->invoice_ref && map_get(j->c->s->refs, j->invoice_ref,
	    strlen(j->invoice_ref)) == j)
		map_del(j->c->s->refs, j->invoice_ref, strlen(j->invoice_ref));
	track_free_maybe(t);
}

/* Poll this job's session for it (SUBMITTED, or in doubt). */
static void
job_track(struct job *j, const char *session_ref)
{
	struct strack *t = track_get(j->c, session_ref);

	j->st = t;
	/* A round already under way may have been listed before the send. */
	j->doubt_round = t->round;
	j->sprev = NULL;
	j->snext = t->jobs;
	if (t->jobs)
		t->jobs->sprev = j;
	t->jobs = j;
	t->njobs++;
	if (j->invoice_ref)
		map_put(j->c->s->refs, j->invoice_ref, strlen(j->invoice_ref), j);
}

/* Take a job off every queue and list. */
static void
job_detach(struct job *j)
{
	if (j->heap_idx >= 0)
		heap_remove(j->c, j);
	list_remove(j);
	job_untrack(j);
}

static void
job_free(struct sched *s, struct job *j)
{
	job_detach(j);
	map_del(s->jobs, j->key, INV_KEY_LEN);
	s->st.jobs--;
	s->st.per_state[j->state]--;
	free(j->session_ref);
	free(j->invoice_ref);
	free(j->ksef_number);
	free(j->upo_url);
	free(j->orig_session);
	free(j->acq_date);
	free(j->storage_date);
	free(j);
}

static void
job_queue(struct job *j, int64_t due)
{
	job_detach(j);
	j->due = due;
	heap_push(j->c, j);
}

/* --- store ------------------------------------------------------------- */

static void
sched_commit_cb(int status, void *arg)
{
	struct sched *s = arg;

	if (status != STORE_COMMITTED) {
		log_warnx("sched: a commit failed; reloading the pipeline state "
		    "from the store");
		s->resync = 1;
		sched_kick(s);
	}
}

/* Read a job's record; -1 (and a resync) when it is gone or differs. */
static int
job_load(struct sched *s, struct job *j, struct record_invoice *inv)
{
	char key[17];

	if (store_invoice_get(s->store, j->key, inv) != 0) {
		job_short(j, key);
		log_warnx("sched: %s: record unreadable", key);
		s->resync = 1;
		return -1;
	}
	if (inv->state != j->state) {
		job_short(j, key);
		log_warnx("sched: %s: stored state %s, expected %s", key,
		    record_state_name(inv->state), record_state_name(j->state));
		record_invoice_free(inv);
		s->resync = 1;
		return -1;
	}
	return 0;
}

/* Write the record with its new state and audit event; frees inv. */
static int
job_save(struct sched *s, struct job *j, struct record_invoice *inv,
    enum inv_state to, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* After a record write (r: its result): commit hook, job state, counts. */
static int
job_saved(struct sched *s, struct job *j, int r, enum inv_state to)
{
	if (r != 0) {
		s->resync = 1;
		return -1;
	}
	store_on_commit(s->store, sched_commit_cb, s);
	s->st.per_state[j->state]--;
	s->st.per_state[to]++;
	j->state = to;
	return 0;
}

static int
job_save(struct sched *s, struct job *j, struct record_invoice *inv,
    enum inv_state to, const char *fmt, ...)
{
	char detail[512], key[17];
	enum inv_state from = j->state;
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (to == inv->state)
		r = store_invoice_update(s->store, inv);
	else
		r = store_invoice_transition(s->store, inv, to, detail);
	record_invoice_free(inv);
	if (job_saved(s, j, r, to) == -1)
		return -1;
	job_short(j, key);
	if (to != from)
		log_info("sched: %s %s -> %s: %s", key, record_state_name(from),
		    record_state_name(to), detail);
	return 0;
}

/* Put a held acceptance (job_apply) into the record. */
static void
job_accept_fields(const struct job *j, struct record_invoice *inv)
{
	record_str_set(&inv->ksef_number, j->ksef_number);
	record_str_set(&inv->acquisition_date, j->acq_date);
	record_str_set(&inv->storage_date, j->storage_date);
}

/* The UPO did not come at the first try: write the held acceptance now. */
static int
job_accept(struct sched *s, struct job *j)
{
	struct record_invoice inv;

	if (job_load(s, j, &inv) == -1)
		return -1;
	job_accept_fields(j, &inv);
	inv.next_due_ms = time_now_ms();
	j->acc_held = 0;
	return job_save(s, j, &inv, INV_ST_ACCEPTED, "KSeF number %s",
	    j->ksef_number ? j->ksef_number : "?");
}

/* The UPO is stored: DONE, through ACCEPTED when that was held; frees inv. */
static int
job_done(struct sched *s, struct job *j, struct record_invoice *inv, size_t upolen)
{
	char acc[160], detail[64], key[17];
	enum inv_state from = j->state;
	int r;

	inv->upo_present = 1;
	inv->next_due_ms = 0;
	snprintf(detail, sizeof(detail), "UPO stored (%zu bytes)", upolen);
	if (!j->acc_held)
		return job_save(s, j, inv, INV_ST_DONE, "%s", detail);
	job_accept_fields(j, inv);
	snprintf(acc, sizeof(acc), "KSeF number %s",
	    j->ksef_number ? j->ksef_number : "?");
	r = store_invoice_transition_via(s->store, inv, INV_ST_ACCEPTED, acc,
	    INV_ST_DONE, detail);
	record_invoice_free(inv);
	if (job_saved(s, j, r, INV_ST_DONE) == -1)
		return -1;
	j->acc_held = 0;
	job_short(j, key);
	log_info("sched: %s %s -> ACCEPTED -> DONE: %s; %s", key,
	    record_state_name(from), acc, detail);
	return 0;
}

/* Persist a context's token pair when the KSeF layer gets a new one. */
static void
sched_token_cb(const char *nip, const struct record_token *t, void *arg)
{
	struct sched *s = arg;
	struct buf b;
	char name[64];

	buf_init(&b);
	record_token_encode(t, &b);
	snprintf(name, sizeof(name), "token/%s", nip);
	store_meta_put(s->store, name, b.data, b.len);
	explicit_wipe(b.data, b.len);
	buf_free(&b);
}

static void
sess_persist(struct sctx *c, int form)
{
	struct buf b;
	char name[64];

	snprintf(name, sizeof(name), "session/%s/%s", c->nip,
	    record_form_name(form));
	if (c->sess[form].rs == NULL) {
		store_meta_del(c->s->store, name);
		return;
	}
	buf_init(&b);
	record_session_encode(c->sess[form].rs, &b);
	store_meta_put(c->s->store, name, b.data, b.len);
	explicit_wipe(b.data, b.len);
	buf_free(&b);
}

static void
sess_drop(struct sctx *c, int form)
{
	struct sess *ss = &c->sess[form];

	if (ss->rs != NULL) {
		log_info("sched: context %s: session %s no longer used", c->nip,
		    ss->rs->session_ref);
		record_session_free(ss->rs);
		free(ss->rs);
		ss->rs = NULL;
	}
	sess_persist(c, form);
}

/* Save limiter states changed since the last pass. */
static void
ctx_limits_persist(struct sctx *c)
{
	struct buf b;
	char name[96];
	int g;

	for (g = 0; g < RL_NGROUPS; g++) {
		if (!c->rl_dirty[g])
			continue;
		c->rl_dirty[g] = 0;
		buf_init(&b);
		ratelimit_encode(c->rl[g], &b);
		snprintf(name, sizeof(name), "limiter/%s/%s", c->nip,
		    ratelimit_group_name(g));
		store_meta_put(c->s->store, name, b.data, b.len);
		buf_free(&b);
	}
}

/* --- limits, breaker, auth --------------------------------------------- */

/*
 * The one place a group's limits are built: the config's [limits] override,
 * else what KSeF reported (GET /rate-limits), else the official default;
 * with the configured windows plus slack.
 */
static void
ctx_group_limits(const struct sctx *c, const struct conf *conf, int g,
    struct ratelimit_limits *l)
{
	int w;

	if (conf->limits[g].set)
		*l = conf->limits[g].lim;
	else if (c->ksef_have[g])
		*l = c->ksef_lim[g];
	else
		ratelimit_limits_default(g, l);
	if (!conf->limits_enabled)
		for (w = 0; w < RL_NWIN; w++)
			l->max[w] = 0;
	/*
	 * KSeF counts arrivals; we count decisions, which leave after a
	 * commit and an encryption of varying length.  A little slack on
	 * every window keeps two sends from arriving closer than KSeF allows
	 * (measured: tests/pipeline_limits.sh).
	 */
	for (w = 0; w < RL_NWIN; w++)
		l->window_ms[w] = conf->limit_window_ms[w] + SCHED_LIMIT_SLACK_MS;
}

static void
ctx_limits_apply(struct sctx *c, const struct conf *conf)
{
	struct ratelimit_limits l;
	int g;

	for (g = 0; g < RL_NGROUPS; g++) {
		ctx_group_limits(c, conf, g, &l);
		if (c->rl[g] == NULL)
			c->rl[g] = ratelimit_new(&l);
		else
			ratelimit_limits_set(c->rl[g], &l);
	}
}

/* May a request of `group` start now?  Sets *next when not. */
static int
ctx_limit_ok(struct sctx *c, int group, int64_t now, int64_t *next)
{
	int64_t t;

	if (group < 0)
		return 1;
	t = ratelimit_next_allowed(c->rl[group], now);
	if (t <= now)
		return 1;
	if (t < *next)
		*next = t;
	return 0;
}

/* Is group free to start n requests at once (no pause, room in every window)? */
static int
ctx_limit_room(struct sctx *c, int group, long n, int64_t now)
{
	int64_t room[RL_NWIN];
	int w;

	if (ratelimit_next_allowed(c->rl[group], now) > now)
		return 0;
	ratelimit_headroom(c->rl[group], now, room);
	for (w = 0; w < RL_NWIN; w++)
		if (room[w] >= 0 && room[w] < n)
			return 0;
	return 1;
}

static void
ctx_limit_record(struct sctx *c, int group, int64_t now)
{
	if (group < 0)
		return;
	ratelimit_record(c->rl[group], now);
	c->rl_dirty[group] = 1;
	c->m_requests[group]++;
}

static void
ctx_limit_pause(struct sctx *c, int group, int64_t until)
{
	int64_t wait = until - time_now_ms();
	int b = 0;

	if (group < 0)
		return;
	ratelimit_pause_until(c->rl[group], until);
	c->rl_dirty[group] = 1;
	c->s->st.retry_after++;
	if (wait < 0)
		wait = 0;
	c->m_ra_count[group]++;
	c->m_ra_ms_sum[group] += wait;
	while (b < SCHED_RA_BUCKETS - 1 && wait > (int64_t)1000 << b)
		b++;
	c->m_ra_bucket[b]++;
	log_info("sched: context %s: %s paused for %lld ms (429)", c->nip,
	    ratelimit_group_name(group), (long long)(until - time_now_ms()));
}

static void
sched_auth_cb(struct ksef_result *r, void *arg)
{
	struct sctx *c = arg;
	struct sched *s = c->s;
	int64_t now = time_now_ms();

	c->auth_busy = 0;
	s->in_flight--;
	switch (r->outcome) {
	case KSEF_OK:
		if (c->auth_failures > 0) {
			log_info("sched: context %s: authenticated", c->nip);
			if (s->auth_alert != NULL)
				s->auth_alert(c->nip, NULL, NULL,
				    s->auth_alert_arg);
		}
		c->auth_failures = 0;
		break;
	case KSEF_RETRY_AFTER:
		c->auth_retry_at = r->retry_at_ms;
		break;
	default:
		c->auth_failures++;
		c->auth_retry_at = backoff_next(&s->bo, now, c->auth_failures,
		    backoff_rand(c->nip, strlen(c->nip), c->auth_failures), now);
		log_warnx("sched: context %s: authentication failed (%s): %s; "
		    "next try in %lld s", c->nip, ksef_outcome_name(r->outcome),
		    r->reason ? r->reason : "?",
		    (long long)(c->auth_retry_at - now) / 1000);
		if (r->outcome == KSEF_TRANSIENT)
			breaker_failure(&c->br, &s->bp, now);
		if (s->auth_alert != NULL)
			s->auth_alert(c->nip, ksef_outcome_name(r->outcome),
			    r->reason, s->auth_alert_arg);
		break;
	}
	sched_kick(s);
}

/*
 * Start the context's token renewal due at `due` (a refresh, or with `full`
 * an authentication from scratch) unless one runs or a backoff holds it;
 * else note when to look again.
 */
static void
ctx_auth_at(struct sctx *c, int64_t due, int full, int64_t now, int64_t *next)
{
	if (c->auth_busy || ksef_ctx_auth_busy(c->k))
		return;
	if (due < c->auth_retry_at)
		due = c->auth_retry_at;
	if (due > now) {
		if (due < *next)
			*next = due;
		return;
	}
	c->auth_busy = 1;
	c->s->in_flight++;
	if (full)
		ksef_authenticate(c->k, sched_auth_cb, c);
	else
		ksef_token_refresh(c->k, sched_auth_cb, c);
}

/* Is the context's access token good?  Starts a renewal when it is not. */
static int
ctx_authed(struct sctx *c, int64_t now, int64_t *next)
{
	enum ksef_token_state st = ksef_ctx_token_state(c->k, now);

	if (st == KSEF_TOKEN_VALID)
		return 1;
	ctx_auth_at(c, now, st == KSEF_TOKEN_NONE, now, next);
	return 0;
}

/*
 * Renew the tokens of a context that holds some when they fall due, work or
 * no work, so that an idle context keeps them fresh: the access token is
 * refreshed, and when the refresh token is about to expire the context
 * authenticates from scratch ahead of it.  Not during an outage
 * (sched_outage_set() kicks when it ends).
 */
static void
ctx_auth_keep(struct sctx *c, int64_t now, int64_t *next)
{
	int64_t due;

	if (c->s->outage || !ksef_ctx_token_due(c->k, &due))
		return;
	ctx_auth_at(c, due, ksef_ctx_token_state(c->k, now) !=
	    KSEF_TOKEN_REFRESH, now, next);
}

/* Keep KSeF's limits (GET /rate-limits) and apply them; log where they differ. */
static void
ctx_limits_take(struct sctx *c, const struct ksef_result *r)
{
	const struct conf *conf = c->s->conf;
	struct ratelimit_limits def;
	const uint32_t *m;
	int g;

	for (g = 0; g < RL_NGROUPS; g++) {
		m = r->limits[g].max;
		ratelimit_limits_default(g, &def);
		if (r->limits_have[g] && memcmp(m, def.max,
		    sizeof(def.max)) != 0 && (!c->ksef_have[g] ||
		    memcmp(m, c->ksef_lim[g].max, sizeof(def.max)) != 0))
			log_info("sched: context %s: KSeF limits %s to %u/s "
			    "%u/min %u/h (official %u/s %u/min %u/h)%s", c->nip,
			    ratelimit_group_name(g), m[RL_WIN_SEC],
			    m[RL_WIN_MIN], m[RL_WIN_HOUR], def.max[RL_WIN_SEC],
			    def.max[RL_WIN_MIN], def.max[RL_WIN_HOUR],
			    conf->limits[g].set ? "; the [limits] override "
			    "wins" : "");
		c->ksef_have[g] = r->limits_have[g];
		c->ksef_lim[g] = r->limits[g];
	}
	ctx_limits_apply(c, conf);
}

/* A transient failure (5xx, timeout, garbage) or a success: the breaker learns. */
static void
ctx_outcome(struct sctx *c, const struct ksef_result *r)
{
	int64_t now = time_now_ms();

	if ((unsigned)r->outcome < SCHED_OUTCOMES)
		c->m_outcomes[r->outcome]++;
	switch (r->outcome) {
	case KSEF_TRANSIENT:
		c->s->st.transient++;
		breaker_failure(&c->br, &c->s->bp, now);
		break;
	case KSEF_RETRY_AFTER:
	case KSEF_AUTH_EXPIRED:
		breaker_release(&c->br);
		break;
	default:
		breaker_success(&c->br, &c->s->bp);
		break;
	}
}

static void
sched_rate_limits_cb(struct ksef_result *r, void *arg)
{
	struct sctx *c = arg;
	struct sched *s = c->s;
	int64_t now = time_now_ms();

	s->in_flight--;
	c->limits_busy = 0;
	ctx_outcome(c, r);
	switch (r->outcome) {
	case KSEF_OK:
		log_debug("sched: context %s: rate limits fetched", c->nip);
		ctx_limits_take(c, r);
		c->limits_at = now + SCHED_LIMITS_REFRESH_MS;
		break;
	case KSEF_RETRY_AFTER:
		ctx_limit_pause(c, RL_GROUP_OTHER, r->retry_at_ms);
		c->limits_at = r->retry_at_ms;
		break;
	case KSEF_AUTH_EXPIRED:
		/* Again once authenticated; sends wait for that one too. */
		c->limits_at = now;
		sched_kick(s);
		return;
	default:
		log_warnx("sched: context %s: rate limits not fetched (%s): %s; "
		    "the limits in use stay", c->nip,
		    ksef_outcome_name(r->outcome), r->reason ? r->reason : "?");
		c->limits_at = now + SCHED_LIMITS_RETRY_MS;
		break;
	}
	c->limits_known = 1;
	sched_kick(s);
}

/*
 * GET /rate-limits when due: as soon as the context holds a valid access
 * token (never an authentication of its own), then hourly; through the
 * limiter of group "other".  Nothing with [limits] enabled = no.
 */
static void
ctx_limits_fetch(struct sctx *c, int64_t now, int64_t *next)
{
	struct sched *s = c->s;

	if (!s->conf->limits_enabled || c->limits_busy)
		return;
	if (c->limits_at > now) {
		if (c->limits_at < *next)
			*next = c->limits_at;
		return;
	}
	if (ksef_ctx_token_state(c->k, now) != KSEF_TOKEN_VALID ||
	    !ctx_limit_ok(c, RL_GROUP_OTHER, now, next))
		return;
	ctx_limit_record(c, RL_GROUP_OTHER, now);
	c->limits_busy = 1;
	s->in_flight++;
	ksef_rate_limits(c->k, sched_rate_limits_cb, c);
}

/* --- sessions ---------------------------------------------------------- */


static void
sess_open_cb(struct ksef_result *r, void *arg)
{
	struct sess_op *op = arg;
	struct sctx *c = op->c;
	struct sess *ss = &c->sess[op->form];
	int64_t now = time_now_ms();

	c->s->in_flight--;
	ss->opening = 0;
	ctx_outcome(c, r);
	switch (r->outcome) {
	case KSEF_OK:
		ss->rs = r->session;
		r->session = NULL;
		ss->failures = 0;
		ss->last_send = now;
		sess_persist(c, op->form);
		store_on_commit(c->s->store, sched_commit_cb, c->s);
		log_info("sched: context %s: session %s open (%s)", c->nip,
		    ss->rs->session_ref, record_form_name(op->form));
		break;
	case KSEF_RETRY_AFTER:
		if (r->retry_at_ms > now)
			ctx_limit_pause(c, RL_GROUP_ONLINE_SESSION, r->retry_at_ms);
		break;
	case KSEF_AUTH_EXPIRED:
		break;
	default:
		ss->failures++;
		ss->retry_at = backoff_next(&c->s->bo, now, ss->failures,
		    backoff_rand(c->nip, strlen(c->nip), ss->failures), now);
		log_warnx("sched: context %s: cannot open a session (%s): %s",
		    c->nip, ksef_outcome_name(r->outcome),
		    r->reason ? r->reason : "?");
		break;
	}
	sched_kick(c->s);
}

static void
sess_close_cb(struct ksef_result *r, void *arg)
{
	struct sess_op *op = arg;
	struct sctx *c = op->c;
	struct sess *ss = &c->sess[op->form];

	c->s->in_flight--;
	ss->closing = 0;
	ctx_outcome(c, r);
	switch (r->outcome) {
	case KSEF_OK:
	case KSEF_SESSION_GONE:
	case KSEF_NOT_FOUND:
		sess_drop(c, op->form);
		store_on_commit(c->s->store, sched_commit_cb, c->s);
		break;
	case KSEF_RETRY_AFTER:
		ctx_limit_pause(c, RL_GROUP_ONLINE_SESSION, r->retry_at_ms);
		break;
	default:
		break;
	}
	sched_kick(c->s);
}

/*
 * How long before KSeF's validUntil a session is closed: a minute, but never
 * more than a quarter of its lifetime (a shorter one would never be used).
 */
static int64_t
sess_close_lead(const struct record_session *rs)
{
	int64_t life = rs->valid_until_ms - rs->opened_ms;

	return life / 4 < 60000 ? (life > 0 ? life / 4 : 0) : 60000;
}

/*
 * Keep the session of `form` right: open one when there is work and none,
 * close one that is full, idle or old.  1 when an open session can take a send.
 */
static int
ctx_session(struct sctx *c, int form, int want, int64_t now, int64_t *next)
{
	struct sched *s = c->s;
	const struct conf *conf = s->conf;
	struct sess *ss = &c->sess[form];
	struct sess_op *op;
	int64_t t;

	if (ss->opening || ss->closing)
		return 0;
	if (ss->rs != NULL) {
		int full = ss->rs->invoice_count >= (uint32_t)conf->session_max_invoices;
		int old = now >= ss->rs->opened_ms + conf->session_max_lifetime ||
		    (ss->rs->valid_until_ms > 0 && now >= ss->rs->valid_until_ms -
		    sess_close_lead(ss->rs));
		int idle = !want && now >= ss->last_send + conf->session_idle_timeout;

		if (!full && !old && !idle) {
			t = ss->last_send + conf->session_idle_timeout;
			if (!want && t < *next)
				*next = t;
			/* A send needs a fresh token too: this starts its refresh. */
			return want && ctx_authed(c, now, next);
		}
		if (ss->sending > 0 || !ctx_authed(c, now, next) ||
		    !ctx_limit_ok(c, RL_GROUP_ONLINE_SESSION, now, next))
			return 0;
		log_info("sched: context %s: closing session %s (%s)", c->nip,
		    ss->rs->session_ref, full ? "full" : old ? "lifetime" :
		    "idle");
		ss->closing = 1;
		ctx_limit_record(c, RL_GROUP_ONLINE_SESSION, now);
		op = c->ops[form];
		s->in_flight++;
		ksef_session_close(c->k, ss->rs->session_ref, sess_close_cb, op);
		return 0;
	}
	if (!want)
		return 0;
	if (now < ss->retry_at) {
		if (ss->retry_at < *next)
			*next = ss->retry_at;
		return 0;
	}
	if (!ctx_authed(c, now, next) ||
	    !ctx_limit_ok(c, RL_GROUP_ONLINE_SESSION, now, next))
		return 0;
	ss->opening = 1;
	ctx_limit_record(c, RL_GROUP_ONLINE_SESSION, now);
	op = c->ops[form];
	s->in_flight++;
	ksef_session_open(c->k, form, sess_open_cb, op);
	return 0;
}

/* --- sending ----------------------------------------------------------- */

/* Put a job back in the send queue after a send that did not reach KSeF. */
static void
job_requeue(struct sched *s, struct job *j, int64_t due, int failed,
    const char *why)
{
	struct record_invoice inv;

	if (job_load(s, j, &inv) == -1)
		return;
	if (!failed && inv.attempts > 0)
		inv.attempts--;		/* a 429 or a lost session is no attempt */
	inv.next_due_ms = due;
	j->attempts = inv.attempts;
	j->in_doubt = 0;
	job_untrack(j);
	if (job_save(s, j, &inv, INV_ST_QUEUED, "%s", why) == 0)
		job_queue(j, due);
}

/* A job reached a final state: record the error and forget it. */
static void
job_finish(struct sched *s, struct job *j, enum inv_state to, int32_t code,
    const char *reason, const char *details)
{
	struct record_invoice inv;
	char key[17];

	if (job_load(s, j, &inv) == -1)
		return;
	inv.error_code = code;
	record_str_set(&inv.error_desc, reason);
	record_str_set(&inv.error_details, details);
	inv.next_due_ms = 0;
	if (job_save(s, j, &inv, to, "%s%s%s", reason ? reason : "",
	    details ? ": " : "", details ? details : "") == 0) {
		job_short(j, key);
		log_warnx("sched: %s %s: %s", key, record_state_name(to),
		    reason ? reason : "");
		if (s->alert != NULL)
			s->alert(j->key, j->c->nip, to, code, reason, s->alert_arg);
		if (!j->busy)
			job_free(s, j);
		else
			job_detach(j);
	}
}

/* The backoff due time of a job's next attempt. */
static int64_t
job_backoff(struct sched *s, struct job *j, int64_t not_before)
{
	int64_t now = time_now_ms();

	return backoff_next(&s->bo, j->received_ms, j->attempts,
	    backoff_rand(j->key, INV_KEY_LEN, j->attempts),
	    not_before > now ? not_before : now);
}

static void job_apply(struct sched *, struct job *, const struct ksef_invoice *);

static void
send_cb(struct ksef_result *r, void *arg)
{
	struct job *j = arg;
	struct sctx *c = j->c;
	struct sched *s = c->s;
	struct sess *ss = &c->sess[j->form];
	struct record_invoice inv;
	int64_t now = time_now_ms();
	char key[17];

	FAILPOINT("send-response");
	s->in_flight--;
	c->sending--;
	ss->sending--;
	j->busy = 0;
	ctx_outcome(c, r);
	job_short(j, key);
	switch (r->outcome) {
	case KSEF_ACCEPTED:
		if (job_load(s, j, &inv) == -1)
			break;
		record_str_set(&inv.invoice_ref, r->reference);
		record_str_set(&j->invoice_ref, r->reference);
		inv.next_due_ms = now + s->conf->poll_status_interval;
		if (job_save(s, j, &inv, INV_ST_SUBMITTED,
		    "KSeF took it as %s", r->reference) == 0)
			job_track(j, j->session_ref);
		break;
	case KSEF_RETRY_AFTER:
		ctx_limit_pause(c, RL_GROUP_INVOICE_SEND, r->retry_at_ms);
		job_requeue(s, j, r->retry_at_ms, 0, "429: retry after");
		break;
	case KSEF_SESSION_GONE:
		if (ss->rs != NULL && j->session_ref != NULL &&
		    strcmp(ss->rs->session_ref, j->session_ref) == 0)
			sess_drop(c, j->form);
		job_requeue(s, j, now, 0, "session gone; send again");
		break;
	case KSEF_AUTH_EXPIRED:
		job_requeue(s, j, now, 0, "access token expired; send again");
		break;
	case KSEF_TRANSIENT:
		if (r->in_doubt) {
			/* KSeF may have it: ask the session's list before any resend. */
			s->st.in_doubt++;
			j->in_doubt = 1;
			log_info("sched: %s send in doubt (%s); asking KSeF", key,
			    r->reason ? r->reason : "?");
			job_track(j, j->session_ref);
			break;
		}
		job_requeue(s, j, job_backoff(s, j, now), 1,
		    r->reason ? r->reason : "transient failure");
		break;
	case KSEF_REJECTED:
		job_finish(s, j, INV_ST_REJECTED, r->code, r->reason, r->details);
		break;
	case KSEF_DUPLICATE:
		if (r->ninvoices > 0)
			job_apply(s, j, &r->invoices[0]);
		break;
	default:
		job_finish(s, j, INV_ST_FAILED, r->code, r->reason, r->details);
		break;
	}
	/* j may be freed here (job_finish). */
	sched_kick(s);
}

static void
send_commit_cb(int status, void *arg)
{
	struct job *j = arg;
	struct sctx *c = j->c;
	struct sched *s = c->s;
	struct sess *ss = &c->sess[j->form];
	unsigned char *doc;
	size_t len;
	int64_t paused;

	if (status != STORE_COMMITTED) {
		s->in_flight--;
		c->sending--;
		ss->sending--;
		j->busy = 0;
		s->resync = 1;
		sched_kick(s);
		return;
	}
	if (ss->rs == NULL || strcmp(ss->rs->session_ref, j->session_ref) != 0) {
		/* Committed as SENDING but not sent: the in-doubt path finds it absent. */
		s->in_flight--;
		c->sending--;
		ss->sending--;
		j->busy = 0;
		j->in_doubt = 1;
		job_track(j, j->session_ref);
		sched_kick(s);
		return;
	}
	FAILPOINT("sending-committed");
	if ((paused = ratelimit_paused_until(c->rl[RL_GROUP_INVOICE_SEND])) >
	    time_now_ms()) {
		/* A 429 came in while this commit ran: we know it is not sent. */
		s->in_flight--;
		c->sending--;
		ss->sending--;
		j->busy = 0;
		job_requeue(s, j, paused, 0, "group paused by a 429; not sent");
		sched_kick(s);
		return;
	}
	if (store_doc_get(s->store, j->key, &doc, &len) != 0) {
		s->in_flight--;
		c->sending--;
		ss->sending--;
		j->busy = 0;
		job_finish(s, j, INV_ST_FAILED, 0, "invoice XML missing from the "
		    "store", NULL);
		return;
	}
	s->st.sent++;
	/* The hash taken at intake: KSeF refuses bytes changed since. */
	ksef_invoice_send(c->k, ss->rs, doc, len, j->sha, send_cb, j);
	free(doc);
}

/* Commit the job as SENDING in the open session; the send leaves after the commit. */
static void
job_send(struct sched *s, struct job *j, int64_t now)
{
	struct sctx *c = j->c;
	struct sess *ss = &c->sess[j->form];
	struct record_invoice inv;

	if (job_load(s, j, &inv) == -1)
		return;
	inv.attempts++;
	if (inv.first_attempt_ms == 0)
		inv.first_attempt_ms = now;
	record_str_set(&inv.session_ref, ss->rs->session_ref);
	record_str_set(&j->session_ref, ss->rs->session_ref);
	/* Due again if nothing is heard: then it is in doubt. */
	inv.next_due_ms = now + s->conf->request_timeout * 2;
	j->attempts = inv.attempts;
	if (job_save(s, j, &inv, INV_ST_SENDING, "attempt %u in session %s",
	    j->attempts, ss->rs->session_ref) == -1)
		return;
	ss->rs->invoice_count++;
	ss->sending++;
	ss->last_send = now;
	sess_persist(c, j->form);
	c->sending++;
	s->in_flight++;
	j->busy = 1;
	ctx_limit_record(c, RL_GROUP_INVOICE_SEND, time_now_ms());	/* not the pass's start */
	store_on_commit(s->store, send_commit_cb, j);
}

/*
 * Send what is due in one form of one context; 1 if one was started (or
 * held or expired).  With may_send 0 only the holds and retry.max_age are
 * applied: an invoice expires on time even while nothing may be sent.
 */
static int
ctx_send_one(struct sctx *c, int form, int may_send, int64_t now, int64_t *next)
{
	struct sched *s = c->s;
	struct job *j;
	unsigned cap;

	if (c->nheap[form] == 0)
		return 0;
	j = c->heap[form][0];
	if (j->due > now) {
		if (j->due < *next)
			*next = j->due;
		if (may_send)
			ctx_session(c, form, 0, now, next);
		return 0;
	}
	if (j->hold) {
		heap_remove(c, j);
		return 1;
	}
	if (j->received_ms + s->conf->max_age <= now) {
		heap_remove(c, j);
		job_finish(s, j, INV_ST_FAILED, 0, "expired: not sent within "
		    "retry.max_age", NULL);
		return 1;
	}
	/* Wake up for its expiry, whatever else keeps it waiting. */
	if (j->received_ms + s->conf->max_age < *next)
		*next = j->received_ms + s->conf->max_age;
	if (!may_send)
		return 0;
	if (s->outage)
		return 0;	/* sched_outage_set() kicks when it ends */
	cap = (unsigned)(SCHED_SEND_SLOTS * breaker_factor(&c->br) / 1000);
	if (cap < 1)
		cap = 1;
	if (c->sending >= cap || s->in_flight >= (unsigned)s->conf->max_in_flight)
		return 0;
	if (!ctx_session(c, form, 1, now, next))
		return 0;
	if (!ctx_limit_ok(c, RL_GROUP_INVOICE_SEND, now, next))
		return 0;
	if (!breaker_allow(&c->br, now)) {
		int64_t t = breaker_next_allowed(&c->br, now);

		if (t < *next)
			*next = t;
		return 0;
	}
	heap_remove(c, j);
	job_send(s, j, now);
	return 1;
}

/* --- status, duplicates, UPO -------------------------------------------- */

static void dup_start(struct sched *, struct job *, const struct ksef_invoice *);

/* Apply what KSeF says of an invoice we track. */
static void
job_apply(struct sched *s, struct job *j, const struct ksef_invoice *ki)
{
	int64_t now = time_now_ms();
	char key[17];

	switch (ki->outcome) {
	case KSEF_PROCESSED:
		/*
		 * Held, not written: the UPO is fetched at once and ACCEPTED
		 * goes to the store with DONE in one write (upo_cb), which
		 * spares a record write per invoice.  Until then the store
		 * says SUBMITTED, so a crash only means asking KSeF again.
		 */
		record_str_set(&j->ksef_number, ki->ksef_number);
		record_str_set(&j->acq_date, ki->acquisition_date);
		record_str_set(&j->storage_date, ki->storage_date);
		record_str_set(&j->upo_url, ki->upo_url);
		j->acc_held = 1;
		job_untrack(j);
		job_short(j, key);
		log_info("sched: %s numbered %s by KSeF; fetching its UPO", key,
		    ki->ksef_number ? ki->ksef_number : "?");
		j->due = now;
		list_add(j, JL_UPO);
		break;
	case KSEF_REJECTED:
		job_untrack(j);
		job_finish(s, j, INV_ST_REJECTED, ki->code, ki->reason,
		    ki->details);
		break;
	case KSEF_DUPLICATE:
		job_untrack(j);
		dup_start(s, j, ki);
		break;
	case KSEF_TRANSIENT:
		/* KSeF dropped it (e.g. its session was cancelled): send again. */
		job_requeue(s, j, now, 0, ki->reason ? ki->reason :
		    "KSeF cancelled it; send again");
		break;
	default:
		break;		/* still being processed */
	}
}

/* A SENDING job in doubt that KSeF lists: it got through. */
static void
job_resolved(struct sched *s, struct job *j, const struct ksef_invoice *ki)
{
	struct record_invoice inv;
	char key[17];

	if (job_load(s, j, &inv) == -1)
		return;
	record_str_set(&inv.invoice_ref, ki->reference);
	record_str_set(&j->invoice_ref, ki->reference);
	inv.next_due_ms = time_now_ms() + s->conf->poll_status_interval;
	job_short(j, key);
	j->in_doubt = 0;
	job_untrack(j);
	if (job_save(s, j, &inv, INV_ST_SUBMITTED, "in doubt; KSeF has it as %s",
	    ki->reference ? ki->reference : "?") == -1)
		return;
	job_track(j, j->session_ref);
	job_apply(s, j, ki);
}

/* A page failed: forget the round under way and where the next would start. */
static void
track_round_drop(struct strack *t, const struct ksef_result *r)
{
	log_trace(TRACE_SCHED, "sched: session %s: list page failed (%s): the "
	    "next round starts from the top", t->ref,
	    ksef_outcome_name(r->outcome));
	free(t->cont);
	free(t->mark);
	free(t->resume);
	t->cont = t->mark = t->resume = NULL;
	t->marked = 0;
	t->in_round = 0;
}

/* Does a page list an invoice of t that is still pending (after applying it)? */
static int
poll_page_pending(struct sched *s, const struct strack *t,
    const struct ksef_result *r)
{
	const struct job *j;
	size_t i;

	for (i = 0; i < r->ninvoices; i++) {
		if (r->invoices[i].reference == NULL)
			continue;
		j = map_get(s->refs, r->invoices[i].reference,
		    strlen(r->invoices[i].reference));
		if (j != NULL && j->st == t)
			return 1;
	}
	return 0;
}

/* A page of a session's invoice list; the last one ends the round. */
static void
poll_cb(struct ksef_result *r, void *arg)
{
	struct strack *t = arg;
	struct sctx *c = t->c;
	struct sched *s = c->s;
	struct job *j, *jn;
	struct ksef_invoice *ki;
	int64_t now = time_now_ms();
	char *tok;
	size_t i;

	FAILPOINT("status-response");
	s->in_flight--;
	ctx_outcome(c, r);	/* t stays busy (and alive) until the end */
	switch (r->outcome) {
	case KSEF_OK:
		for (i = 0; i < r->ninvoices; i++) {
			ki = &r->invoices[i];
			if (ki->reference == NULL)
				continue;
			j = map_get(s->refs, ki->reference, strlen(ki->reference));
			if (j != NULL && j->st == t && !j->busy &&
			    j->state == INV_ST_SUBMITTED)
				job_apply(s, j, ki);
		}
		/* In-doubt sends: found by hash in this page? */
		for (j = t->jobs; j != NULL; j = jn) {
			jn = j->snext;
			if (!j->in_doubt || j->busy)
				continue;
			if ((ki = ksef_invoice_find_hash(r, j->sha)) != NULL) {
				j->seen_round = t->round;
				job_resolved(s, j, ki);
			}
		}
		if (!t->marked && poll_page_pending(s, t, r)) {
			t->mark = t->cont != NULL ? xstrdup(t->cont) : NULL;
			t->marked = 1;
		}
		tok = t->cont;		/* the token that led to this page */
		t->cont = r->continuation;
		r->continuation = NULL;
		if (t->cont != NULL) {
			free(tok);
			t->next_poll = now;	/* next page at once */
			break;
		}
		/* The round is over: the next starts at its mark, else at this page. */
		free(t->resume);
		if (t->marked) {
			t->resume = t->mark;
			free(tok);
		} else
			t->resume = tok;
		t->mark = NULL;
		t->marked = 0;
		t->in_round = 0;
		/* A whole list read from the top: what is in doubt and absent was lost. */
		for (j = t->jobs; j != NULL && t->from_top; j = jn) {
			jn = j->snext;
			if (j->in_doubt && !j->busy && j->seen_round != t->round &&
			    t->round > j->doubt_round) {
				s->st.resent++;
				job_requeue(s, j, now, 0, "in doubt, and KSeF does "
				    "not have it: send again");
			}
		}
		t->next_poll = now + s->conf->poll_status_interval;
		break;
	case KSEF_RETRY_AFTER:
		/* Not an answer about the token: the same page, later. */
		ctx_limit_pause(c, RL_GROUP_SESSION_INVOICE_LIST, r->retry_at_ms);
		t->next_poll = r->retry_at_ms;
		break;
	case KSEF_NOT_FOUND:
		/* KSeF does not know the session: it cannot have its invoices. */
		for (j = t->jobs; j != NULL; j = jn) {
			jn = j->snext;
			if (j->in_doubt && !j->busy)
				job_requeue(s, j, now, 0, "in doubt, and KSeF does "
				    "not know its session: send again");
		}
		track_round_drop(t, r);
		t->next_poll = now + s->conf->poll_status_interval;
		break;
	default:
		track_round_drop(t, r);
		t->next_poll = now + s->conf->poll_status_interval;
		break;
	}
	t->busy--;
	track_free_maybe(t);
	sched_kick(s);
}

/* May this job's status be asked on its own (SUBMITTED, referenced, idle)? */
static int
job_single_ok(const struct job *j)
{
	return !j->in_doubt && !j->busy && j->state == INV_ST_SUBMITTED &&
	    j->invoice_ref != NULL;
}

/* How many of t's jobs may be asked on their own; -1 if one is in doubt. */
static long
track_singles(const struct strack *t)
{
	const struct job *j;
	long n = 0;

	for (j = t->jobs; j != NULL; j = j->snext) {
		if (j->in_doubt)
			return -1;
		n += job_single_ok(j);
	}
	return n;
}

/* Start a listing round: at the resume point, or at the top (see ctx_poll). */
static void
track_round_start(struct strack *t)
{
	t->round++;
	t->in_round = 1;
	t->from_top = t->resume == NULL || t->round % SCHED_POLL_TOP_EVERY == 0 ||
	    track_singles(t) < 0;
	free(t->cont);
	t->cont = t->from_top ? NULL : xstrdup(t->resume);
	free(t->mark);
	t->mark = NULL;
	t->marked = 0;
	log_trace(TRACE_SCHED, "sched: session %s: listing round %llu %s",
	    t->ref, (unsigned long long)t->round, t->from_top ? "from the top" :
	    "resumed");
}

/* One invoice's status (few pending): applied as a list entry would be. */
static void
status_cb(struct ksef_result *r, void *arg)
{
	struct job *j = arg;
	struct strack *t = j->st;	/* fixed while j is busy */
	struct sctx *c = j->c;
	struct sched *s = c->s;
	int64_t now = time_now_ms();

	FAILPOINT("status-response");
	s->in_flight--;
	j->busy = 0;
	if (r->ninvoices == 1 && r->outcome == KSEF_TRANSIENT)
		breaker_success(&c->br, &s->bp);	/* KSeF cancelled it */
	else
		ctx_outcome(c, r);
	if (r->ninvoices == 1)
		job_apply(s, j, &r->invoices[0]);	/* may free j */
	else if (r->outcome == KSEF_RETRY_AFTER) {
		ctx_limit_pause(c, RL_GROUP_INVOICE_STATUS, r->retry_at_ms);
		t->soon = 1;	/* the pause holds it back */
	} else if (r->outcome == KSEF_AUTH_EXPIRED)
		t->soon = 1;
	if (--t->busy == 0) {
		t->next_poll = t->soon ? now : now + s->conf->poll_status_interval;
		track_free_maybe(t);
	}
	sched_kick(s);
}

/* Ask for each pending invoice of t on its own; 0 when the limiter stopped it. */
static int
ctx_poll_singles(struct sctx *c, struct strack *t, int64_t now, int64_t *next)
{
	struct sched *s = c->s;
	struct job *j;

	t->soon = 0;
	for (j = t->jobs; j != NULL; j = j->snext) {
		if (!job_single_ok(j))
			continue;
		if (!ctx_limit_ok(c, RL_GROUP_INVOICE_STATUS, now, next)) {
			t->soon = 1;	/* the rest as soon as it allows */
			break;
		}
		ctx_limit_record(c, RL_GROUP_INVOICE_STATUS, now);
		j->busy = 1;
		t->busy++;
		s->in_flight++;
		ksef_invoice_status(c->k, t->ref, j->invoice_ref, status_cb, j);
	}
	if (t->busy > 0)
		log_trace(TRACE_SCHED, "sched: session %s: %u invoice statuses "
		    "asked one by one", t->ref, t->busy);
	return !t->soon;
}

/*
 * Poll the sessions of a context whose poll is due.
 *
 * With few pending (at most poll.single_max SUBMITTED invoices, none in
 * doubt) each is asked for on its own: a small answer each instead of
 * pages of up to 1000 entries.  Else, and when the invoice_status group
 * has no room for all of them (its limits are tight: 120/min, 1200/h), a
 * listing round reads the session's invoice list page by page.
 *
 * KSeF's list, like the simulator's, holds a session's invoices in the order
 * they were taken (ordinal number), and a continuation token is a position
 * in it (the simulator's is the offset).  So an invoice of ours still
 * pending is on or after the first page where the last round saw one
 * pending, or, when it saw none, on or after its last page (sent since):
 * the next round starts there, and a long session is not read from the top
 * every time.  Nothing promises that order (API.md names none), hence:
 *  - while a send is in doubt rounds start at the top: only a whole list
 *    read after the doubt arose shows that KSeF does not have it (poll_cb);
 *  - every SCHED_POLL_TOP_EVERY-th round starts at the top anyway, so an
 *    invoice listed where we did not expect it is late, never lost;
 *  - any answer but OK to a page forgets the resume point (KSeF may refuse
 *    a token it no longer likes), except a 429, which repeats the page later.
 */
static void
ctx_poll(struct sctx *c, int64_t now, int64_t *next)
{
	struct sched *s = c->s;
	struct strack *t, *tn;
	long n;

	for (t = c->tracks; t != NULL; t = tn) {
		tn = t->next;
		if (t->njobs == 0) {
			track_free_maybe(t);	/* t may be gone */
			continue;
		}
		if (t->busy)
			continue;
		if (t->next_poll > now) {
			if (t->next_poll < *next)
				*next = t->next_poll;
			continue;
		}
		if (!ctx_authed(c, now, next))
			return;
		if (!t->in_round && (n = track_singles(t)) > 0 &&
		    n <= s->conf->poll_single_max &&
		    ctx_limit_room(c, RL_GROUP_INVOICE_STATUS, n, now)) {
			if (!ctx_poll_singles(c, t, now, next))
				return;
			continue;
		}
		if (!ctx_limit_ok(c, RL_GROUP_SESSION_INVOICE_LIST, now, next))
			return;
		if (!t->in_round)
			track_round_start(t);
		t->busy++;
		ctx_limit_record(c, RL_GROUP_SESSION_INVOICE_LIST, now);
		s->in_flight++;
		ksef_session_invoices(c->k, t->ref, t->cont, SCHED_PAGE_SIZE, 0,
		    poll_cb, t);
	}
}

static void
upo_cb(struct ksef_result *r, void *arg)
{
	struct job *j = arg;
	struct sctx *c = j->c;
	struct sched *s = c->s;
	struct record_invoice inv;
	int64_t now = time_now_ms();

	s->in_flight--;
	c->upo_busy--;
	j->busy = 0;
	ctx_outcome(c, r);
	if (r->outcome != KSEF_OK && j->acc_held)
		job_accept(s, j);	/* on failure a resync reloads it */
	switch (r->outcome) {
	case KSEF_OK:
		if (store_upo_put(s->store, j->key, r->body.data, r->body.len) != 0 ||
		    job_load(s, j, &inv) == -1)
			break;
		if (job_done(s, j, &inv, r->body.len) == 0) {
			job_free(s, j);
			sched_kick(s);
			return;
		}
		break;
	case KSEF_RETRY_AFTER:
		ctx_limit_pause(c, RL_GROUP_SESSION_MISC, r->retry_at_ms);
		j->due = r->retry_at_ms;
		break;
	default:
		/* Not there yet, or the link expired: use the endpoint next time. */
		free(j->upo_url);
		j->upo_url = NULL;
		j->attempts++;
		j->due = job_backoff(s, j, now);
		break;
	}
	list_remove(j);
	list_add(j, JL_UPO);
	sched_kick(s);
}

static void
ctx_upo(struct sctx *c, int64_t now, int64_t *next)
{
	struct sched *s = c->s;
	struct job *j;
	int group;

	for (j = c->upo; j != NULL; j = j->lnext) {
		if (j->busy)
			continue;
		if (j->due > now) {
			if (j->due < *next)
				*next = j->due;
			continue;
		}
		if (c->upo_busy >= SCHED_UPO_INFLIGHT)
			return;
		group = j->upo_url ? -1 : RL_GROUP_SESSION_MISC;
		if (j->upo_url == NULL && !ctx_authed(c, now, next))
			return;
		if (!ctx_limit_ok(c, group, now, next))
			return;
		FAILPOINT("upo-start");
		ctx_limit_record(c, group, now);
		j->busy = 1;
		c->upo_busy++;
		s->in_flight++;
		ksef_invoice_upo(c->k, j->session_ref,
		    j->orig_session ? NULL : j->invoice_ref, j->ksef_number,
		    j->upo_url, upo_cb, j);
	}
}

static void
dup_cb(struct ksef_result *r, void *arg)
{
	struct job *j = arg;
	struct sctx *c = j->c;
	struct sched *s = c->s;
	struct record_invoice inv;
	int64_t now = time_now_ms();
	char msg[256];

	s->in_flight--;
	j->busy = 0;
	ctx_outcome(c, r);
	list_remove(j);
	switch (r->outcome) {
	case KSEF_OK:
		s->st.duplicates++;
		if (memcmp(r->body_sha256, j->sha, INV_SHA_LEN) == 0) {
			/* Our earlier send got through: its number is ours. */
			if (job_load(s, j, &inv) == -1)
				break;
			record_str_set(&inv.ksef_number, j->ksef_number);
			record_str_set(&inv.session_ref, j->orig_session);
			record_str_set(&inv.invoice_ref, NULL);
			inv.next_due_ms = now;
			record_str_set(&j->session_ref, j->orig_session);
			if (job_save(s, j, &inv, INV_ST_ACCEPTED, "duplicate of "
			    "our own earlier send: KSeF number %s",
			    j->ksef_number) == 0) {
				j->due = now;
				list_add(j, JL_UPO);
			}
		} else {
			snprintf(msg, sizeof(msg), "conflict: KSeF holds another "
			    "invoice with this seller, type and number (%s)",
			    j->ksef_number);
			job_finish(s, j, INV_ST_FAILED, 440, msg, NULL);
			sched_kick(s);	/* j is freed */
			return;
		}
		break;
	case KSEF_RETRY_AFTER:
		ctx_limit_pause(c, RL_GROUP_INVOICE_DOWNLOAD, r->retry_at_ms);
		j->due = r->retry_at_ms;
		list_add(j, JL_DUP);
		break;
	default:
		j->attempts++;
		j->due = job_backoff(s, j, now);
		list_add(j, JL_DUP);
		break;
	}
	sched_kick(s);
}

/* KSeF says duplicate: remember the original and fetch it to compare. */
static void
dup_start(struct sched *s, struct job *j, const struct ksef_invoice *ki)
{
	record_str_set(&j->ksef_number, ki->original_ksef_number);
	record_str_set(&j->orig_session, ki->original_session);
	j->due = time_now_ms();
	list_add(j, JL_DUP);
}

static void
ctx_dup(struct sctx *c, int64_t now, int64_t *next)
{
	struct sched *s = c->s;
	struct job *j;

	for (j = c->dup; j != NULL; j = j->lnext) {
		if (j->busy)
			continue;
		if (j->due > now) {
			if (j->due < *next)
				*next = j->due;
			continue;
		}
		if (!ctx_authed(c, now, next) ||
		    !ctx_limit_ok(c, RL_GROUP_INVOICE_DOWNLOAD, now, next))
			return;
		ctx_limit_record(c, RL_GROUP_INVOICE_DOWNLOAD, now);
		j->busy = 1;
		s->in_flight++;
		ksef_invoice_fetch(c->k, j->ksef_number, dup_cb, j);
	}
}

/* --- the run ----------------------------------------------------------- */

static void
sched_timer_set(struct sched *s, int64_t at, int64_t now)
{
	struct timeval tv;
	int64_t d;

	if (at == INT64_MAX)
		return;
	d = at > now ? at - now : 0;
	if (evtimer_pending(s->ev_timer, NULL) && s->timer_at <= at)
		return;
	tv.tv_sec = d / 1000;
	tv.tv_usec = (d % 1000) * 1000;
	s->timer_at = at;
	evtimer_add(s->ev_timer, &tv);
}

/* One pass: for each context in turn, auth, sessions, sends, polls, UPOs. */
static void
sched_run(struct sched *s)
{
	int64_t now = time_now_ms(), next = INT64_MAX;
	struct sctx *c;
	int progress, f;

	if (s->stopping)
		return;
	sched_resync_maybe(s);
	if (s->resync)
		return;
	for (c = s->ctxs; c != NULL; c = c->next)
		if (!c->gone)
			ctx_limits_fetch(c, now, &next);
	/*
	 * Sends interleave across contexts, one at a time each (fairness).
	 * A context's first sends wait for KSeF's limits while they are
	 * being fetched (one request), so they cannot burst past them; its
	 * invoices still expire meanwhile.
	 */
	do {
		progress = 0;
		for (c = s->ctxs; c != NULL; c = c->next) {
			if (c->gone)
				continue;
			for (f = 0; f < SCHED_NFORMS; f++)
				progress |= ctx_send_one(c, f,
				    !(c->limits_busy && !c->limits_known), now, &next);
		}
	} while (progress);
	for (c = s->ctxs; c != NULL; c = c->next) {
		if (c->gone)
			continue;
		for (f = 0; f < SCHED_NFORMS; f++)
			if (c->nheap[f] == 0)
				ctx_session(c, f, 0, now, &next);
		ctx_poll(c, now, &next);
		ctx_upo(c, now, &next);
		ctx_dup(c, now, &next);
		ctx_auth_keep(c, now, &next);
		ctx_limits_persist(c);
	}
	sched_timer_set(s, next, now);
}

static void
sched_run_cb(evutil_socket_t fd, short ev, void *arg)
{
	sched_run(arg);
}

static void
sched_kick(struct sched *s)
{
	event_active(s->ev_run, EV_TIMEOUT, 0);
}

/* --- set-up, loading, resync -------------------------------------------- */

static struct sctx *
sched_ctx_find(struct sched *s, const char *nip)
{
	struct sctx *c;

	for (c = s->ctxs; c != NULL; c = c->next)
		if (strcmp(c->nip, nip) == 0)
			return c;
	return NULL;
}

static void
ctx_options(struct sched *s, const struct conf_context *cc,
    struct ksef_ctx_options *o)
{
	memset(o, 0, sizeof(*o));
	o->base_url = s->conf->base_url;
	o->nip = cc->nip;
	o->token = cc->token;
	o->connect_timeout_ms = s->conf->connect_timeout;
	o->request_timeout_ms = s->conf->request_timeout;
	o->token_refresh_margin_ms = s->conf->token_refresh_margin;
	o->poll_auth_interval_ms = s->conf->poll_auth_interval;
	o->token_cb = sched_token_cb;
	o->token_arg = s;
}

/* Restore a context's tokens, sessions and limiter state from meta. */
static void
ctx_restore(struct sctx *c)
{
	struct sched *s = c->s;
	struct record_token tok;
	struct record_session *rs;
	struct record_err rerr;
	unsigned char *v;
	size_t len;
	char name[96], err[200];
	int f, g;

	snprintf(name, sizeof(name), "token/%s", c->nip);
	if (store_meta_get(s->store, name, &v, &len) == 0) {
		if (record_token_decode(v, len, &tok, &rerr) == 0) {
			ksef_ctx_token_set(c->k, &tok);
			record_token_free(&tok);
		}
		explicit_wipe(v, len);
		free(v);
	}
	for (f = 0; f < SCHED_NFORMS; f++) {
		snprintf(name, sizeof(name), "session/%s/%s", c->nip,
		    record_form_name(f));
		if (store_meta_get(s->store, name, &v, &len) != 0)
			continue;
		rs = xcalloc(1, sizeof(*rs));
		if (record_session_decode(v, len, rs, &rerr) == 0 &&
		    rs->valid_until_ms > time_now_ms() + 60000) {
			c->sess[f].rs = rs;
			c->sess[f].last_send = time_now_ms();
		} else {
			if (rerr.code == 0)
				record_session_free(rs);
			free(rs);
		}
		explicit_wipe(v, len);
		free(v);
	}
	for (g = 0; g < RL_NGROUPS; g++) {
		snprintf(name, sizeof(name), "limiter/%s/%s", c->nip,
		    ratelimit_group_name(g));
		if (store_meta_get(s->store, name, &v, &len) != 0)
			continue;
		if (ratelimit_decode(c->rl[g], v, len, err, sizeof(err)) == -1)
			log_warnx("sched: %s: %s", name, err);
		free(v);
	}
}

static struct sctx *
ctx_new(struct sched *s, const struct conf_context *cc)
{
	struct sctx *c = xcalloc(1, sizeof(*c));
	struct ksef_ctx_options o;
	int f;

	c->s = s;
	snprintf(c->nip, sizeof(c->nip), "%s", cc->nip);
	for (f = 0; f < SCHED_NFORMS; f++) {
		c->ops[f] = xcalloc(1, sizeof(*c->ops[f]));
		c->ops[f]->c = c;
		c->ops[f]->form = f;
	}
	ctx_options(s, cc, &o);
	c->k = ksef_ctx_new(s->base, s->http, &o);
	breaker_init(&c->br);
	ctx_limits_apply(c, s->conf);
	ctx_restore(c);
	c->next = s->ctxs;
	s->ctxs = c;
	return c;
}

/* Give a loaded job its place: queue, poll, UPO or duplicate list. */
static void
job_place(struct sched *s, struct job *j, const struct record_invoice *inv)
{
	int64_t now = time_now_ms();

	switch (j->state) {
	case INV_ST_QUEUED:
		job_queue(j, inv->next_due_ms ? inv->next_due_ms : now);
		break;
	case INV_ST_SENDING:
		/* After a crash: in doubt until KSeF's list says. */
		j->in_doubt = 1;
		s->st.in_doubt++;
		if (inv->session_ref != NULL)
			job_track(j, inv->session_ref);
		else
			job_queue(j, now);
		break;
	case INV_ST_SUBMITTED:
		if (inv->session_ref != NULL)
			job_track(j, inv->session_ref);
		break;
	case INV_ST_ACCEPTED:
		j->due = now;
		list_add(j, JL_UPO);
		break;
	default:
		break;
	}
}

static int
sched_load_cb(const struct record_invoice *inv, void *arg)
{
	struct sched *s = arg;
	struct sctx *c;
	struct job *j;
	char key[17];

	if (inv->state == INV_ST_DONE || inv->state == INV_ST_REJECTED ||
	    inv->state == INV_ST_FAILED)
		return 0;
	if ((c = sched_ctx_find(s, inv->seller_nip)) == NULL) {
		record_key_short(inv->key, key);
		log_warnx("sched: %s: seller %s is not a configured context; "
		    "left %s", key, inv->seller_nip, record_state_name(inv->state));
		return 0;
	}
	j = job_new(s, c, inv);
	job_place(s, j, inv);
	return 0;
}

static int
job_free_cb(const void *k, size_t len, void *val, void *arg)
{
	struct job *j = val;

	free(j->session_ref);
	free(j->invoice_ref);
	free(j->ksef_number);
	free(j->upo_url);
	free(j->orig_session);
	free(j);
	return 0;
}

/* Drop every in-memory job and track (nothing in flight). */
static void
sched_jobs_clear(struct sched *s)
{
	struct sctx *c;
	struct strack *t, *tn;
	int f;

	map_foreach(s->jobs, job_free_cb, NULL);
	map_free(s->jobs);
	map_free(s->refs);
	s->jobs = map_new();
	s->refs = map_new();
	memset(s->st.per_state, 0, sizeof(s->st.per_state));
	s->st.jobs = 0;
	for (c = s->ctxs; c != NULL; c = c->next) {
		for (f = 0; f < SCHED_NFORMS; f++)
			c->nheap[f] = 0;
		c->upo = c->dup = NULL;
		for (t = c->tracks; t != NULL; t = tn) {
			tn = t->next;
			track_free(t);
		}
		c->tracks = NULL;
	}
}

/* After a failed commit, once nothing is in flight: rebuild from the store. */
static void
sched_resync_maybe(struct sched *s)
{
	if (!s->resync || s->in_flight > 0)
		return;
	log_warnx("sched: reloading unfinished invoices from the store");
	sched_jobs_clear(s);
	s->resync = 0;
	store_invoice_foreach(s->store, sched_load_cb, s);
}

static void
sched_policies(struct sched *s, const struct conf *conf)
{
	breaker_policy_default(&s->bp);
	/* The breaker holds invoices back no longer than retry.backoff_max. */
	if (s->bp.penalty_max_ms > conf->backoff_max)
		s->bp.penalty_max_ms = conf->backoff_max;
	if (s->bp.penalty_min_ms > s->bp.penalty_max_ms)
		s->bp.penalty_min_ms = s->bp.penalty_max_ms;
	s->bo.min_ms = conf->backoff_min;
	s->bo.max_ms = conf->backoff_max;
	s->bo.max_age_ms = conf->max_age;
}

struct sched *
sched_new(struct event_base *base, struct store *store, struct http *http,
    const struct conf *conf)
{
	struct sched *s = xcalloc(1, sizeof(*s));
	size_t i;

	s->base = base;
	s->store = store;
	s->http = http;
	s->conf = conf;
	s->jobs = map_new();
	s->refs = map_new();
	sched_policies(s, conf);
	s->ev_run = event_new(base, -1, 0, sched_run_cb, s);
	s->ev_timer = evtimer_new(base, sched_run_cb, s);
	if (s->ev_run == NULL || s->ev_timer == NULL)
		fatalx("sched: cannot create events");
	for (i = 0; i < conf->ncontexts; i++)
		ctx_new(s, &conf->contexts[i]);
	store_invoice_foreach(store, sched_load_cb, s);
	log_info("sched: %llu unfinished invoices (%llu queued, %llu in doubt, "
	    "%llu submitted, %llu accepted)", (unsigned long long)s->st.jobs,
	    (unsigned long long)s->st.per_state[INV_ST_QUEUED],
	    (unsigned long long)s->st.per_state[INV_ST_SENDING],
	    (unsigned long long)s->st.per_state[INV_ST_SUBMITTED],
	    (unsigned long long)s->st.per_state[INV_ST_ACCEPTED]);
	sched_kick(s);
	return s;
}

void
sched_update(struct sched *s, const struct conf *conf)
{
	struct ksef_ctx_options o;
	struct sctx *c;
	size_t i;

	s->conf = conf;
	sched_policies(s, conf);
	for (c = s->ctxs; c != NULL; c = c->next)
		c->gone = 1;
	for (i = 0; i < conf->ncontexts; i++) {
		if ((c = sched_ctx_find(s, conf->contexts[i].nip)) == NULL) {
			ctx_new(s, &conf->contexts[i]);
			s->resync = 1;	/* pick up its invoices */
			continue;
		}
		c->gone = 0;
		ctx_options(s, &conf->contexts[i], &o);
		ksef_ctx_update(c->k, &o);
		ctx_limits_apply(c, conf);
	}
	sched_kick(s);
}

void
sched_invoice_new(struct sched *s, const struct record_invoice *inv)
{
	struct sctx *c;
	struct job *j;

	if (map_get(s->jobs, inv->key, INV_KEY_LEN) != NULL)
		return;
	if ((c = sched_ctx_find(s, inv->seller_nip)) == NULL || c->gone)
		return;
	j = job_new(s, c, inv);
	job_place(s, j, inv);
	sched_kick(s);
}

int
sched_invoice_retry(struct sched *s, const unsigned char key[INV_KEY_LEN])
{
	struct record_invoice inv;
	struct sctx *c;
	struct job *j;
	int64_t now = time_now_ms();
	char keyshort[17];

	if (map_get(s->jobs, key, INV_KEY_LEN) != NULL ||
	    store_invoice_get(s->store, key, &inv) != 0)
		return -1;
	if (inv.state != INV_ST_FAILED ||
	    (c = sched_ctx_find(s, inv.seller_nip)) == NULL) {
		record_invoice_free(&inv);
		return -1;
	}
	inv.attempts = 0;
	inv.first_attempt_ms = 0;
	inv.received_ms = now;		/* max_age counts from the retry */
	inv.next_due_ms = now;
	inv.error_code = 0;
	record_str_set(&inv.error_desc, NULL);
	record_str_set(&inv.error_details, NULL);
	if (store_invoice_transition(s->store, &inv, INV_ST_QUEUED,
	    "retry requested") != 0) {
		record_invoice_free(&inv);
		return -1;
	}
	store_on_commit(s->store, sched_commit_cb, s);
	j = job_new(s, c, &inv);
	job_short(j, keyshort);
	log_info("sched: %s FAILED -> QUEUED: retry requested", keyshort);
	job_place(s, j, &inv);
	record_invoice_free(&inv);
	sched_kick(s);
	return 0;
}

int
sched_invoice_hold(struct sched *s, const unsigned char key[INV_KEY_LEN], int on)
{
	struct record_invoice inv;
	struct job *j;
	int64_t now = time_now_ms();
	char keyshort[17];
	int r;

	if ((r = store_invoice_get(s->store, key, &inv)) != 0)
		return r == 1 ? 1 : -1;
	if (inv.state == INV_ST_DONE || inv.state == INV_ST_REJECTED ||
	    inv.state == INV_ST_FAILED) {
		record_invoice_free(&inv);
		return 2;
	}
	on = on != 0;
	if (inv.hold == on) {
		record_invoice_free(&inv);
		return 0;
	}
	inv.hold = on;
	/* Same state: the store writes the record and an audit event. */
	if (store_invoice_transition(s->store, &inv, inv.state,
	    on ? "hold requested" : "release requested") != 0) {
		record_invoice_free(&inv);
		return -1;
	}
	store_on_commit(s->store, sched_commit_cb, s);
	record_key_short(key, keyshort);
	log_info("sched: %s %s while %s", keyshort, on ? "held" : "released",
	    record_state_name(inv.state));
	if ((j = map_get(s->jobs, key, INV_KEY_LEN)) != NULL) {
		j->hold = on;
		/*
		 * A held job is dropped from the send queue when it comes up
		 * (ctx_send_one); a QUEUED one that is on no queue or list
		 * goes back now.
		 */
		if (!on && j->state == INV_ST_QUEUED && !j->busy &&
		    j->heap_idx < 0 && j->list == JL_NONE && j->st == NULL)
			job_queue(j, inv.next_due_ms > now ? inv.next_due_ms : now);
	}
	record_invoice_free(&inv);
	sched_kick(s);
	return 0;
}

void
sched_outage_set(struct sched *s, int on)
{
	struct sctx *c;
	int64_t now = time_now_ms();

	on = on != 0;
	if (on == s->outage)
		return;
	s->outage = on;
	if (on) {
		log_warnx("sched: KSeF is unavailable: sending paused");
		for (c = s->ctxs; c != NULL; c = c->next)
			breaker_outage(&c->br, &s->bp, now, 0);
	} else {
		log_info("sched: KSeF is available again: sending resumes "
		    "through the circuit breaker");
		sched_kick(s);
	}
}

/* Reconciliation: look at an unfinished invoice again now. */
int
sched_invoice_recheck(struct sched *s, const unsigned char key[INV_KEY_LEN])
{
	struct job *j;
	int64_t now = time_now_ms();

	if ((j = map_get(s->jobs, key, INV_KEY_LEN)) == NULL)
		return 1;
	if (j->busy)
		return 0;	/* being worked on already */
	if (j->st != NULL) {
		/* SUBMITTED or in doubt: list its session now. */
		if (!j->st->busy)
			j->st->next_poll = now;
	} else if (j->list != JL_NONE) {
		/* UPO to fetch or duplicate to compare: now, on the same list. */
		j->due = now;
	} else if (j->state == INV_ST_QUEUED && j->heap_idx >= 0 && !j->hold)
		job_queue(j, now);	/* past max_age: the send path fails it */
	sched_kick(s);
	return 0;
}

/* The callback argument of a metadata query made for someone else. */
struct meta_op {
	struct sctx	*c;
	sched_meta_cb	 cb;
	void		*arg;
	struct meta_op	*next, **prevp;	/* s->metas, freed by sched_free */
};

static void
sched_meta_done_cb(struct ksef_result *r, void *arg)
{
	struct meta_op *m = arg;
	struct sched *s = m->c->s;

	s->in_flight--;
	if ((*m->prevp = m->next) != NULL)
		m->next->prevp = m->prevp;
	ctx_outcome(m->c, r);
	if (r->outcome == KSEF_RETRY_AFTER)
		ctx_limit_pause(m->c, RL_GROUP_INVOICE_METADATA, r->retry_at_ms);
	m->cb(r, m->arg);
	free(m);
	sched_kick(s);
}

/* A metadata query of context nip within its invoice_metadata limits and token. */
int
sched_metadata_query(struct sched *s, const char *nip,
    const struct ksef_query *q, sched_meta_cb cb, void *arg, int64_t *at)
{
	struct sctx *c;
	struct meta_op *m;
	int64_t now = time_now_ms(), next = now + 1000;

	if ((c = sched_ctx_find(s, nip)) == NULL || c->gone)
		return -1;
	*at = next;
	if (s->stopping)
		return 1;
	if (!ctx_authed(c, now, &next) ||
	    !ctx_limit_ok(c, RL_GROUP_INVOICE_METADATA, now, &next)) {
		*at = next;
		return 1;
	}
	ctx_limit_record(c, RL_GROUP_INVOICE_METADATA, now);
	m = xcalloc(1, sizeof(*m));
	m->c = c;
	m->cb = cb;
	m->arg = arg;
	if ((m->next = s->metas) != NULL)
		m->next->prevp = &m->next;
	m->prevp = &s->metas;
	s->metas = m;
	s->in_flight++;
	ksef_metadata_query(c->k, q, sched_meta_done_cb, m);
	return 0;
}

void
sched_alert_set(struct sched *s, sched_alert_cb cb, void *arg)
{
	s->alert = cb;
	s->alert_arg = arg;
}

void
sched_auth_alert_set(struct sched *s, sched_auth_alert_cb cb, void *arg)
{
	s->auth_alert = cb;
	s->auth_alert_arg = arg;
}

void
sched_stop(struct sched *s)
{
	s->stopping = 1;
}

unsigned
sched_in_flight(const struct sched *s)
{
	return s->in_flight;
}

void
sched_stats_get(const struct sched *s, struct sched_stats *out)
{
	*out = s->st;
	out->in_flight = s->in_flight;
}

/* sched_ctx_foreach: fold one job into its context's counts and ages. */
static int
sched_info_job_cb(const void *key, size_t len, void *val, void *arg)
{
	const struct job *j = val;
	struct sched_ctx_info *info = arg, *ci;

	(void)key;
	(void)len;
	if (j->c->gone || (unsigned)j->state >= INV_ST_COUNT)
		return 0;
	ci = &info[j->c->m_idx];
	ci->count[j->state]++;
	if (ci->oldest_ms[j->state] == 0 || j->received_ms < ci->oldest_ms[j->state])
		ci->oldest_ms[j->state] = j->received_ms;
	return 0;
}

_Static_assert(KSEF_FATAL + 1 == SCHED_OUTCOMES, "SCHED_OUTCOMES");

void
sched_ctx_foreach(const struct sched *s, int64_t now,
    void (*cb)(const struct sched_ctx_info *, void *), void *arg)
{
	struct sched_ctx_info *info, *ci;
	struct sctx *c;
	size_t n = 0, i;
	int g, f;

	for (c = s->ctxs; c != NULL; c = c->next)
		if (!c->gone)
			c->m_idx = n++;
	if (n == 0)
		return;
	info = xcalloc(n, sizeof(*info));
	map_foreach(s->jobs, sched_info_job_cb, info);
	for (c = s->ctxs; c != NULL; c = c->next) {
		if (c->gone)
			continue;
		ci = &info[c->m_idx];
		ci->nip = c->nip;
		for (g = 0; g < RL_NGROUPS; g++) {
			ratelimit_headroom(c->rl[g], now, ci->headroom[g]);
			ci->paused_until[g] = ratelimit_paused_until(c->rl[g]);
			if (ci->paused_until[g] <= now)
				ci->paused_until[g] = 0;
		}
		ci->token_expiry_ms = ksef_ctx_token_expiry(c->k);
		for (f = 0; f < SCHED_NFORMS; f++)
			if (c->sess[f].rs != NULL)
				ci->sessions_open++;
		ci->breaker = (int)c->br.state;
		ci->sending = c->sending;
		memcpy(ci->requests, c->m_requests, sizeof(ci->requests));
		memcpy(ci->outcomes, c->m_outcomes, sizeof(ci->outcomes));
		memcpy(ci->ra_count, c->m_ra_count, sizeof(ci->ra_count));
		memcpy(ci->ra_ms_sum, c->m_ra_ms_sum, sizeof(ci->ra_ms_sum));
		memcpy(ci->ra_bucket, c->m_ra_bucket, sizeof(ci->ra_bucket));
	}
	for (i = 0; i < n; i++)
		cb(&info[i], arg);
	free(info);
}

void
sched_free(struct sched *s)
{
	struct sctx *c, *cn;
	int f, g;

	if (s == NULL)
		return;
	for (c = s->ctxs; c != NULL; c = c->next)
		ctx_limits_persist(c);
	/* Cancels what is in flight, without callbacks; the store keeps states. */
	for (c = s->ctxs; c != NULL; c = c->next)
		ksef_ctx_free(c->k);
	sched_jobs_clear(s);
	map_free(s->jobs);
	map_free(s->refs);
	while (s->metas != NULL) {
		struct meta_op *m = s->metas;

		s->metas = m->next;
		free(m);
	}
	for (c = s->ctxs; c != NULL; c = cn) {
		cn = c->next;
		for (f = 0; f < SCHED_NFORMS; f++) {
			if (c->sess[f].rs != NULL) {
				record_session_free(c->sess[f].rs);
				free(c->sess[f].rs);
			}
			free(c->heap[f]);
			free(c->ops[f]);
		}
		for (g = 0; g < RL_NGROUPS; g++)
			ratelimit_free(c->rl[g]);
		free(c);
	}
	event_free(s->ev_run);
	event_free(s->ev_timer);
	free(s);
}
