/* test_intake.c: the idempotency matrix, corrections, durability and audit of intake. */
#include "config.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "intake.h"
#include "log.h"
#include "record.h"
#include "store.h"
#include "util.h"
#include "validate.h"
#include "tap.h"

static struct event_base *base;
static struct store *st;
static struct intake *in;

struct got {
	int			 calls;
	enum intake_status	 status;
	int			 corrected;
	unsigned char		 key[INV_KEY_LEN];
	unsigned char		 supersedes[INV_KEY_LEN];
	enum inv_state		 state;
	char			 rule[64];
};

static void
got_cb(const struct intake_outcome *o, void *arg)
{
	struct got *g = arg;

	g->calls++;
	g->status = o->status;
	g->corrected = o->corrected;
	if (o->inv != NULL) {
		memcpy(g->key, o->inv->key, INV_KEY_LEN);
		memcpy(g->supersedes, o->inv->supersedes, INV_KEY_LEN);
		g->state = o->inv->state;
	}
	if (o->vr->nproblems > 0)
		snprintf(g->rule, sizeof(g->rule), "%s", o->vr->problems[0].rule);
}

/* Run the loop until nothing is pending. */
static void
spin(void)
{
	int i;

	for (i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	store_flush(st);
}

/* The official template with P_2 replaced by `number` and an optional extra comment. */
static char *
invoice(const char *tmpl, const char *number, const char *extra, size_t *len)
{
	const char *a = strstr(tmpl, "<P_2>"), *b = strstr(tmpl, "</P_2>");
	struct buf out;

	buf_init(&out);
	buf_add(&out, tmpl, (size_t)(a - tmpl) + 5);
	buf_addstr(&out, number);
	buf_addstr(&out, b);
	if (extra)
		buf_addstr(&out, extra);
	return (char *)buf_release(&out, len);
}

struct count {
	size_t	 n;
	size_t	 per_state[INV_ST_COUNT];
};

static int
count_cb(const struct record_invoice *inv, void *arg)
{
	struct count *c = arg;

	c->n++;
	c->per_state[inv->state]++;
	return 0;
}

struct audit_seen {
	size_t	 n;
	size_t	 created;
	uint64_t last;
	int	 ordered;
};

static int
audit_cb(const struct record_audit *a, void *arg)
{
	struct audit_seen *s = arg;

	if (s->n > 0 && a->seq <= s->last)
		s->ordered = 0;
	s->last = a->seq;
	s->n++;
	if (a->from == INV_ST_NONE && a->to == INV_ST_QUEUED)
		s->created++;
	return 0;
}

int
main(void)
{
	const char *top = getenv("top_srcdir");
	const char *nips[] = { "5265877635" };
	struct validate_params vp;
	struct validator *v;
	struct record_invoice inv;
	struct store_stats ss0, ss1;
	struct count c;
	struct audit_seen as;
	struct got g1, g2, g3, g4, g5, g6, *many;
	char dir[] = "/tmp/ksefd-test-intakeXXXXXX", err[256], *path, *tmpl;
	char *x1, *x1b, *x2;
	size_t tlen, l1, l1b, l2, i;
	uint64_t seq0;

	if (top == NULL)
		top = ".";
	log_init("test_intake", 1, LOG_LVL_WARN);
	base = event_base_new();
	ok(mkdtemp(dir) != NULL, "temp dir");
	st = store_open(base, dir, 1 << 20, STORE_F_NOSYNC, err, sizeof(err));
	ok(st != NULL, "store opens: %s", st ? "" : err);
	memset(&vp, 0, sizeof(vp));
	path = xasprintf("%s/schemas", top);
	vp.schema_dir = path;
	vp.nips = nips;
	vp.nnips = 1;
	vp.future_tolerance_ms = 86400000;
	vp.today = "2025-09-01";
	v = validator_new(&vp, err, sizeof(err));
	ok(v != NULL, "validator compiles: %s", v ? "" : err);
	free(path);
	if (st == NULL || v == NULL)
		return tap_done();
	in = intake_new(st, v);

	path = xasprintf("%s/tests/data/valid/fa3-csharp-invoice-template-fa-3.xml", top);
	tmpl = (char *)file_read(path, 1 << 20, &tlen);
	free(path);
	ok(tmpl != NULL, "template read");
	x1 = invoice(tmpl, "T/1", NULL, &l1);
	x1b = invoice(tmpl, "T/1", "<!-- other bytes -->\n", &l1b);
	x2 = invoice(tmpl, "T/2", NULL, &l2);

	/* New: answered only after the commit. */
	memset(&g1, 0, sizeof(g1));
	seq0 = store_audit_next_seq(st);
	store_stats_get(st, &ss0);
	intake_submit(in, x1, l1, INV_SRC_API, NULL, got_cb, &g1);
	is_int(g1.calls, 0, "no answer before the commit");
	spin();
	store_stats_get(st, &ss1);
	is_int(g1.calls, 1, "answered once after the commit");
	is_int(g1.status, INTAKE_CREATED, "new invoice: created");
	is_int(ss1.commits - ss0.commits, 1, "one commit");
	ok(store_invoice_get(st, g1.key, &inv) == 0 && inv.state == INV_ST_QUEUED,
	    "stored as QUEUED");
	record_invoice_free(&inv);

	/* Same bytes: exists, no new record. */
	memset(&g2, 0, sizeof(g2));
	intake_submit(in, x1, l1, INV_SRC_SPOOL, "a.xml", got_cb, &g2);
	spin();
	is_int(g2.status, INTAKE_EXISTS, "same bytes: exists");
	ok(memcmp(g2.key, g1.key, INV_KEY_LEN) == 0, "same key");

	/* Same identity, other bytes: conflict naming the existing record. */
	memset(&g3, 0, sizeof(g3));
	intake_submit(in, x1b, l1b, INV_SRC_API, NULL, got_cb, &g3);
	spin();
	is_int(g3.status, INTAKE_CONFLICT, "other bytes, same number: conflict");
	ok(memcmp(g3.key, g1.key, INV_KEY_LEN) == 0, "conflict names the original");

	/* After the original is rejected, the new bytes are its correction. */
	ok(store_invoice_get(st, g1.key, &inv) == 0, "original read");
	ok(store_invoice_transition(st, &inv, INV_ST_REJECTED, "test: rejected") == 0,
	    "original rejected");
	record_invoice_free(&inv);
	spin();
	memset(&g4, 0, sizeof(g4));
	intake_submit(in, x1b, l1b, INV_SRC_API, NULL, got_cb, &g4);
	spin();
	is_int(g4.status, INTAKE_CREATED, "correction after rejection: created");
	ok(g4.corrected, "flagged as a correction");
	ok(memcmp(g4.supersedes, g1.key, INV_KEY_LEN) == 0, "new supersedes old");
	ok(store_invoice_get(st, g1.key, &inv) == 0 &&
	    memcmp(inv.superseded_by, g4.key, INV_KEY_LEN) == 0 &&
	    inv.state == INV_ST_REJECTED, "old is marked superseded by new");
	record_invoice_free(&inv);

	/* Invalid: refused at once with a rule, nothing stored. */
	memset(&g5, 0, sizeof(g5));
	intake_submit(in, "<Faktura>", 9, INV_SRC_API, NULL, got_cb, &g5);
	is_int(g5.calls, 1, "refusal is immediate");
	is_int(g5.status, INTAKE_REFUSED, "malformed: refused");
	ok(g5.rule[0] != '\0', "refusal names a rule (%s)", g5.rule);

	/* A failed commit: unavailable, nothing stored; a retry succeeds. */
	memset(&g6, 0, sizeof(g6));
	store_test_fail_commits(st, 1);
	intake_submit(in, x2, l2, INV_SRC_API, NULL, got_cb, &g6);
	spin();
	is_int(g6.status, INTAKE_UNAVAILABLE, "commit failure: unavailable");
	ok(store_invoice_get(st, g6.key, &inv) == 1, "nothing stored");
	memset(&g6, 0, sizeof(g6));
	intake_submit(in, x2, l2, INV_SRC_API, NULL, got_cb, &g6);
	spin();
	is_int(g6.status, INTAKE_CREATED, "retry after failure: created");

	/* 800 distinct and 200 repeats in one pass: 800 records, one commit. */
	many = xcalloc(1000, sizeof(*many));
	store_stats_get(st, &ss0);
	for (i = 0; i < 1000; i++) {
		char num[32], *x;
		size_t l;

		snprintf(num, sizeof(num), "M/%zu", i % 800);
		x = invoice(tmpl, num, NULL, &l);
		intake_submit(in, x, l, INV_SRC_API, NULL, got_cb, &many[i]);
		free(x);
	}
	spin();
	store_stats_get(st, &ss1);
	{
		size_t created = 0, exists = 0, calls = 0;

		for (i = 0; i < 1000; i++) {
			calls += (size_t)many[i].calls;
			created += many[i].status == INTAKE_CREATED;
			exists += many[i].status == INTAKE_EXISTS;
		}
		is_int(calls, 1000, "every submission answered once");
		is_int(created, 800, "800 created");
		is_int(exists, 200, "200 repeats found existing");
	}
	is_int(ss1.commits - ss0.commits, 1, "all in one group commit");
	memset(&c, 0, sizeof(c));
	store_invoice_foreach(st, count_cb, &c);
	is_int(c.n, 803, "803 records in all (T/1, its correction, T/2, 800)");

	/* Audit: one NONE -> QUEUED event per created record, in order. */
	memset(&as, 0, sizeof(as));
	as.ordered = 1;
	store_audit_foreach(st, seq0, audit_cb, &as);
	is_int(as.created, 803, "one creation event per record");
	ok(as.ordered, "events in sequence order");
	is_int(as.n, 804, "plus the rejection event");

	/* With a commit gap, a group right after a commit waits for the gap. */
	{
		struct got ga, gb;
		char *xa, *xb;
		size_t la, lb;
		int64_t t0;
		int i;

		xa = invoice(tmpl, "GAP/1", NULL, &la);
		xb = invoice(tmpl, "GAP/2", NULL, &lb);
		store_commit_gap_set(st, 200000);	/* 200 ms */
		memset(&ga, 0, sizeof(ga));
		memset(&gb, 0, sizeof(gb));
		intake_submit(in, xa, la, INV_SRC_API, NULL, got_cb, &ga);
		for (i = 0; i < 100 && ga.calls == 0; i++)
			event_base_loop(base, EVLOOP_ONCE);
		is_int(ga.status, INTAKE_CREATED, "gap: first group committed");
		store_stats_get(st, &ss0);
		t0 = time_mono_ms();
		intake_submit(in, xb, lb, INV_SRC_API, NULL, got_cb, &gb);
		event_base_loop(base, EVLOOP_NONBLOCK);
		ok(gb.calls == 0 || time_mono_ms() - t0 >= 150,
		    "gap: the next group is not committed at the end of its pass");
		for (i = 0; i < 100 && gb.calls == 0; i++)
			event_base_loop(base, EVLOOP_ONCE);
		store_stats_get(st, &ss1);
		is_int(gb.status, INTAKE_CREATED, "gap: second group committed by the timer");
		ok(time_mono_ms() - t0 >= 150, "gap: about 200 ms after the first commit");
		is_int(ss1.commits - ss0.commits, 1, "gap: one commit");
		store_commit_gap_set(st, 0);
		free(xa);
		free(xb);
	}

	free(many);
	free(x1);
	free(x1b);
	free(x2);
	free(tmpl);
	intake_free(in);
	validator_free(v);
	validate_shutdown();
	store_close(st);
	event_base_free(base);
	path = xasprintf("rm -rf %s", dir);
	if (system(path) != 0)
		diag("cannot remove %s", dir);
	free(path);
	return tap_done();
}
