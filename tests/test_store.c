/*
 * test_store.c: the LMDB store: round trips, indexes, group commit on a real
 * event loop, forced commit failure, map growth, schema versions, stale
 * readers, and a writer SIGKILLed at random points.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <lmdb.h>

#include "log.h"
#include "record.h"
#include "store.h"
#include "util.h"
#include "tap.h"
#include "store_fixture.h"

static const char xml[] = "<Faktura><P_2>FV/1</P_2></Faktura>";

static uint64_t
commits(struct store *s)
{
	struct store_stats st;

	store_stats_get(s, &st);
	return st.commits;
}

static int
exists(struct store *s, uint32_t g, uint32_t i)
{
	struct record_invoice inv, got;
	int rc;

	fixture_invoice(&inv, g, i);
	if ((rc = store_invoice_get(s, inv.key, &got)) == 0)
		record_invoice_free(&got);
	record_invoice_free(&inv);
	return rc == 0;
}

/* Add, read back (invoice, XML, ident), refuse a second add. */
static void
test_round_trip(const char *dir)
{
	struct store *s = fixture_open(NULL, dir, 1 << 20);
	struct record_invoice inv, got;
	unsigned char key[INV_KEY_LEN], *data;
	size_t len;

	fixture_invoice(&inv, 1, 1);
	record_str_set(&inv.source_name, "erp-1");
	is_int(store_invoice_add(s, &inv, xml, sizeof(xml) - 1, "received"), 0, "add");
	ok(store_invoice_get(s, inv.key, &got) == 0, "pending add visible to reads");
	record_invoice_free(&got);
	is_int(store_flush(s), STORE_COMMITTED, "flush commits");
	is_int(store_invoice_add(s, &inv, xml, sizeof(xml) - 1, "again"), 1,
	    "second add of the same key says it exists");
	store_close(s);

	s = fixture_open(NULL, dir, 1 << 20);
	ok(store_invoice_get(s, inv.key, &got) == 0, "invoice there after reopen");
	is_str(got.number, "FV/1/1", "number");
	is_str(got.source_name, "erp-1", "source name");
	is_int(got.state, INV_ST_QUEUED, "state");
	record_invoice_free(&got);
	ok(store_doc_get(s, inv.key, &data, &len) == 0 && len == sizeof(xml) - 1 &&
	    memcmp(data, xml, len) == 0, "XML as received");
	free(data);
	ok(store_ident_get(s, "5265877635", "VAT", "FV/1/1", key) == 0 &&
	    memcmp(key, inv.key, INV_KEY_LEN) == 0, "ident index points at the key");
	is_int(store_ident_get(s, "5265877635", "KOR", "FV/1/1", key), 1, "other kind: not found");
	is_int(store_upo_get(s, inv.key, &data, &len), 1, "no UPO yet");
	ok(store_upo_put(s, inv.key, "<UPO/>", 6) == 0 && store_flush(s) == STORE_COMMITTED,
	    "UPO stored");
	ok(store_upo_get(s, inv.key, &data, &len) == 0 && len == 6, "UPO read back");
	free(data);
	record_invoice_free(&inv);
	store_close(s);
}

/* The audit events of one invoice, in order. */
struct via_walk {
	int		 n;
	enum inv_state	 from[4], to[4];
	char		 detail[4][32];
};

static int
via_event_cb(const struct record_audit *ev, void *arg)
{
	struct via_walk *w = arg;

	if (w->n < 4) {
		w->from[w->n] = ev->from;
		w->to[w->n] = ev->to;
		snprintf(w->detail[w->n], sizeof(w->detail[0]), "%s",
		    ev->detail ? ev->detail : "");
	}
	w->n++;
	return 0;
}

/* Updates keep the state; transitions check the caller's state; the due index follows. */
static void
test_updates_and_due(const char *dir)
{
	struct store *s = fixture_open(NULL, dir, 1 << 20);
	struct record_invoice inv[5], got;
	struct store_due due[8];
	struct via_walk aw;
	uint64_t seq;
	int64_t times[5] = { 5000, 1000, 3000, 0, 1000 };
	int i, n;

	for (i = 0; i < 5; i++) {
		fixture_invoice(&inv[i], 2, i);
		inv[i].next_due_ms = times[i];
		store_invoice_add(s, &inv[i], xml, 4, NULL);
	}
	store_flush(s);
	n = store_due_list(s, 3000, due, 8);
	ok(n == 3 && due[0].due_ms == 1000 && due[1].due_ms == 1000 && due[2].due_ms == 3000,
	    "due list: up to 3000, earliest first (got %d)", n);
	ok(n == 3 && memcmp(due[2].key, inv[2].key, INV_KEY_LEN) == 0, "due entry names the invoice");
	is_int(store_due_list(s, 10000, due, 2), 2, "due list honours max");
	is_int(store_due_list(s, 999, due, 8), 0, "nothing due before 1000");

	ok(store_invoice_set_due(s, &inv[0], 500) == 0, "move a due time");
	n = store_due_list(s, 100000, due, 8);
	ok(n == 4 && due[0].due_ms == 500 && memcmp(due[0].key, inv[0].key, INV_KEY_LEN) == 0,
	    "old entry gone, new one first");
	inv[1].next_due_ms = 0;
	record_str_set(&inv[1].session_ref, "20250625-SO-2C3E6C8000-B675CF5D68-07");
	ok(store_invoice_transition(s, &inv[1], INV_ST_SENDING, "picked") == 0 &&
	    inv[1].state == INV_ST_SENDING, "transition QUEUED -> SENDING");
	is_int(store_due_list(s, 100000, due, 8), 3, "transition with no due time clears the entry");
	store_flush(s);
	ok(store_invoice_get(s, inv[1].key, &got) == 0 && got.state == INV_ST_SENDING &&
	    got.session_ref != NULL, "stored with its new state and fields");
	record_invoice_free(&got);

	/* A stale copy: the caller thinks inv[2] is SENDING. */
	inv[2].state = INV_ST_SENDING;
	is_int(store_invoice_transition(s, &inv[2], INV_ST_SUBMITTED, NULL), -1,
	    "transition from a state the invoice is not in is refused");
	is_int(inv[2].state, INV_ST_SENDING, "caller's state untouched on refusal");
	is_int(store_invoice_update(s, &inv[2]), -1, "update that would change the state refused");
	inv[2].state = INV_ST_QUEUED;
	inv[2].attempts = 3;
	is_int(store_invoice_update(s, &inv[2]), 0, "update without a state change");
	is_int(store_flush(s), STORE_COMMITTED, "the refusals did not fail the group");
	ok(store_invoice_get(s, inv[2].key, &got) == 0 && got.attempts == 3, "update stored");
	record_invoice_free(&got);
	fixture_invoice(&got, 2, 99);
	is_int(store_invoice_update(s, &got), -1, "update of an unknown invoice refused");
	record_invoice_free(&got);

	/* Two steps in one write: SENDING -> SUBMITTED -> ACCEPTED. */
	seq = store_audit_next_seq(s);
	record_str_set(&inv[1].ksef_number, "5265877635-20250626-010080DD2B5E-26");
	ok(store_invoice_transition_via(s, &inv[1], INV_ST_SUBMITTED, "sent",
	    INV_ST_ACCEPTED, "numbered") == 0 && inv[1].state == INV_ST_ACCEPTED,
	    "transition through SUBMITTED to ACCEPTED");
	is_int(store_flush(s), STORE_COMMITTED, "committed");
	ok(store_invoice_get(s, inv[1].key, &got) == 0 && got.state == INV_ST_ACCEPTED &&
	    got.ksef_number != NULL, "stored once, in the last state, with its fields");
	record_invoice_free(&got);
	memset(&aw, 0, sizeof(aw));
	store_audit_foreach(s, seq, via_event_cb, &aw);
	ok(aw.n == 2 && aw.from[0] == INV_ST_SENDING && aw.to[0] == INV_ST_SUBMITTED &&
	    aw.from[1] == INV_ST_SUBMITTED && aw.to[1] == INV_ST_ACCEPTED &&
	    strcmp(aw.detail[0], "sent") == 0 && strcmp(aw.detail[1], "numbered") == 0,
	    "two audit events in order, each with its detail (got %d)", aw.n);
	inv[4].state = INV_ST_SENDING;	/* stale: it is QUEUED */
	is_int(store_invoice_transition_via(s, &inv[4], INV_ST_SUBMITTED, NULL,
	    INV_ST_ACCEPTED, NULL), -1, "two steps from a state it is not in: refused");
	is_int(inv[4].state, INV_ST_SENDING, "caller's state untouched");
	inv[4].state = INV_ST_QUEUED;
	is_int(store_flush(s), STORE_COMMITTED, "nothing else written");
	is_int((int)(store_audit_next_seq(s) - seq), 2, "no audit event for the refusal");
	inv[3].next_due_ms = -5;
	is_int(store_invoice_update(s, &inv[3]), -1, "negative due time refused");
	for (i = 0; i < 5; i++)
		record_invoice_free(&inv[i]);
	store_close(s);
}

static int
count_cb(const struct record_invoice *inv, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

static void
test_meta(const char *dir)
{
	struct store *s = fixture_open(NULL, dir, 1 << 20);
	struct record_token tok, got;
	struct record_err err;
	unsigned char *v;
	struct buf b;
	size_t len;
	int n = 0;

	ok(store_meta_get(s, "schema_version", &v, &len) == 0 && strcmp((char *)v, "2") == 0,
	    "schema version 2 recorded");
	free(v);
	memset(&tok, 0, sizeof(tok));
	tok.access_token = xstrdup("secret-access");
	tok.access_expiry_ms = 42;
	buf_init(&b);
	record_token_encode(&tok, &b);
	ok(store_meta_put(s, "token/5265877635", b.data, b.len) == 0, "meta put");
	store_flush(s);
	ok(store_meta_get(s, "token/5265877635", &v, &len) == 0 &&
	    record_token_decode(v, len, &got, &err) == 0 &&
	    strcmp(got.access_token, "secret-access") == 0, "token record through meta");
	record_token_free(&got);
	free(v);
	ok(store_meta_del(s, "token/5265877635") == 0 && store_meta_del(s, "nothing") == 0,
	    "meta delete (absent name is fine)");
	is_int(store_meta_get(s, "token/5265877635", &v, &len), 1, "deleted");
	is_int(store_meta_get(s, "", &v, &len), -1, "empty name refused");
	store_invoice_foreach(s, count_cb, &n);
	is_int(n, 6, "foreach visits every invoice");
	explicit_wipe(b.data, b.len);
	buf_free(&b);
	record_token_free(&tok);
	store_close(s);
}

/* ---- group commit on a real loop ---- */

struct writer {
	struct store	*s;
	uint32_t	 g, i;
	int		 added, saw_own;
	int		 cb_calls, cb_status, visible_at_cb;
	uint64_t	 commits_at_cb;
};

static int callbacks_run;
static int callback_before_write;

static void
writer_done_cb(int status, void *arg)
{
	struct writer *w = arg;

	callbacks_run++;
	w->cb_calls++;
	w->cb_status = status;
	w->commits_at_cb = commits(w->s);
	w->visible_at_cb = exists(w->s, w->g, w->i);
}

/* One caller: write an invoice and ask to hear about its commit. */
static void
writer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct writer *w = arg;
	struct record_invoice inv;

	if (callbacks_run > 0)
		callback_before_write = 1;
	fixture_invoice(&inv, w->g, w->i);
	w->added = store_invoice_add(w->s, &inv, xml, sizeof(xml) - 1, "api") == 0;
	w->saw_own = exists(w->s, w->g, w->i);
	store_on_commit(w->s, writer_done_cb, w);
	record_invoice_free(&inv);
}

/* n callers in one loop pass; returns how many were fine by `want`. */
static int
run_writers(struct event_base *base, struct store *s, uint32_t g, int n, int want)
{
	struct writer *w = xcalloc(n, sizeof(*w));
	struct event **ev = xcalloc(n, sizeof(*ev));
	uint64_t before = commits(s);
	int i, good = 0;

	callbacks_run = callback_before_write = 0;
	for (i = 0; i < n; i++) {
		w[i].s = s;
		w[i].g = g;
		w[i].i = i;
		ev[i] = event_new(base, -1, 0, writer_cb, &w[i]);
		event_active(ev[i], EV_TIMEOUT, 0);
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	for (i = 0; i < n; i++) {
		good += w[i].added && w[i].saw_own && w[i].cb_calls == 1 &&
		    w[i].cb_status == want &&
		    w[i].commits_at_cb == before + (want == STORE_COMMITTED) &&
		    w[i].visible_at_cb == (want == STORE_COMMITTED) &&
		    exists(s, g, i) == (want == STORE_COMMITTED);
		event_free(ev[i]);
	}
	ok(!callback_before_write, "no callback ran before the last write of the pass");
	is_int(commits(s) - before, want == STORE_COMMITTED, "%d callers, %s transaction(s)",
	    n, want == STORE_COMMITTED ? "one" : "no");
	free(w);
	free(ev);
	return good;
}

static void
test_group_commit(const char *dir)
{
	struct event_base *base = event_base_new();
	struct store *s = fixture_open(base, dir, 1 << 20);
	struct store_stats st;
	uint64_t seq;

	is_int(run_writers(base, s, 3, 50, STORE_COMMITTED), 50,
	    "50 callers: each saw its write at once and heard of it only after the commit");
	seq = store_audit_next_seq(s);
	store_test_fail_commits(s, 1);
	is_int(run_writers(base, s, 4, 20, STORE_FAILED), 20,
	    "forced commit failure: every caller told, none of the writes stored");
	is_int(store_audit_next_seq(s), seq, "failed group gave back its audit numbers");
	store_stats_get(s, &st);
	is_int(st.failed, 1, "one failed group counted");
	is_int(run_writers(base, s, 4, 20, STORE_COMMITTED), 20, "the same writes succeed next time");
	is_int(store_audit_next_seq(s), seq + 20, "audit numbers continue without a gap");
	store_close(s);
	s = fixture_open(base, dir, 1 << 20);
	is_int(store_audit_next_seq(s), seq + 20, "next audit number derived at open");
	store_close(s);
	event_base_free(base);
}

/* ---- map growth ---- */

static void
test_map_growth(const char *dir)
{
	struct store *s = fixture_open(NULL, dir, 64 * 1024);
	struct record_invoice inv;
	struct store_stats st;
	unsigned char *doc = xmalloc(20000), *got;
	size_t len;
	int i, good = 0;

	store_stats_get(s, &st);
	ok(st.map_size == 64 * 1024, "tiny initial map (%zu bytes)", st.map_size);
	for (i = 0; i < 100; i++) {
		fixture_invoice(&inv, 5, i);
		memset(doc, 'a' + i % 26, 20000);
		good += store_invoice_add(s, &inv, doc, 20000, NULL) == 0;
		record_invoice_free(&inv);
	}
	is_int(good, 100, "2 MB written into a 64 KB map within one group");
	is_int(store_flush(s), STORE_COMMITTED, "and committed");
	store_stats_get(s, &st);
	ok(st.grows >= 5 && st.map_size >= 2000000 && st.commits == 1,
	    "map grew %llu times to %zu bytes, one commit", (unsigned long long)st.grows,
	    st.map_size);
	store_close(s);
	s = fixture_open(NULL, dir, 64 * 1024);
	for (good = 0, i = 0; i < 100; i++) {
		fixture_invoice(&inv, 5, i);
		if (store_doc_get(s, inv.key, &got, &len) == 0) {
			memset(doc, 'a' + i % 26, 20000);
			good += len == 20000 && memcmp(got, doc, len) == 0;
			free(got);
		}
		record_invoice_free(&inv);
	}
	is_int(good, 100, "all 100 documents intact after reopening with the small size");
	free(doc);
	store_close(s);
}

/* Another process grows the map under an open store: the store adopts the new size. */
static void
test_map_resized(const char *dir)
{
	struct store *s = fixture_open(NULL, dir, 64 * 1024), *c;
	struct record_invoice inv;
	unsigned char *doc;
	int status, i, good = 0;
	pid_t pid;

	if ((pid = fork()) == 0) {
		c = fixture_open(NULL, dir, 64 * 1024);
		doc = xcalloc(1, 30000);
		for (i = 0; i < 100; i++) {
			fixture_invoice(&inv, 6, i);
			store_invoice_add(c, &inv, doc, 30000, NULL);
			record_invoice_free(&inv);
		}
		_exit(store_flush(c) == STORE_COMMITTED ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "another process wrote 3 MB");
	for (i = 0; i < 100; i++)
		good += exists(s, 6, i);
	is_int(good, 100, "this process reads it all through its adopted map size");
	fixture_invoice(&inv, 6, 100);
	ok(store_invoice_add(s, &inv, "<x/>", 4, NULL) == 0 && store_flush(s) == STORE_COMMITTED,
	    "and writes on");
	record_invoice_free(&inv);
	store_close(s);
}

/* ---- arrival order ---- */

struct order_walk {
	int		 n;
	uint32_t	 i[16];
};

static int
order_cb(const struct record_invoice *inv, void *arg)
{
	struct order_walk *w = arg;

	if (w->n < 16)
		w->i[w->n] = (uint32_t)inv->key[5] << 24 | (uint32_t)inv->key[6] << 16 |
		    (uint32_t)inv->key[7] << 8 | inv->key[8];
	w->n++;
	return 0;
}

static int
order_is(const struct order_walk *w, const uint32_t *want, int n)
{
	int k;

	if (w->n != n)
		return 0;
	for (k = 0; k < n; k++)
		if (w->i[k] != want[k])
			return 0;
	return 1;
}

/* Invoices come back in the order they arrived, not in key order. */
static void
test_arrival_order(const char *dir)
{
	struct store *s = fixture_open(NULL, dir, 1 << 20);
	struct record_invoice inv[5], got;
	const uint32_t order[5] = { 4, 1, 3, 0, 2 }, tail[2] = { 0, 2 };
	const uint32_t after_fail[6] = { 4, 1, 3, 0, 2, 9 };
	struct order_walk w;
	unsigned char *x;
	size_t len;
	int k;

	for (k = 0; k < 5; k++) {
		fixture_invoice(&inv[k], 7, order[k]);
		store_invoice_add(s, &inv[k], "<a/>", 4, NULL);
	}
	memset(&w, 0, sizeof(w));
	store_invoice_foreach(s, order_cb, &w);
	ok(order_is(&w, order, 5), "before the commit: in arrival order");
	is_int(store_flush(s), STORE_COMMITTED, "committed");
	memset(&w, 0, sizeof(w));
	store_invoice_foreach(s, order_cb, &w);
	ok(order_is(&w, order, 5), "after it: in arrival order");
	memset(&w, 0, sizeof(w));
	is_int(store_invoice_foreach_after(s, inv[2].key, order_cb, &w), 0, "after a key");
	ok(order_is(&w, tail, 2), "the invoices that came after it");
	memset(&w, 0, sizeof(w));
	fixture_invoice(&got, 7, 99);
	is_int(store_invoice_foreach_after(s, got.key, order_cb, &w), 1,
	    "after an unknown key: 1");
	is_int(w.n, 0, "and nothing walked");
	record_invoice_free(&got);

	/* A failed group gives its arrival numbers back; nothing is skipped or reused. */
	fixture_invoice(&got, 7, 8);
	store_invoice_add(s, &got, "<b/>", 4, NULL);
	store_test_fail_commits(s, 1);
	is_int(store_flush(s), STORE_FAILED, "a group that fails");
	record_invoice_free(&got);
	ok(store_invoice_get(s, inv[0].key, &got) == 0, "the earlier ones are there");
	record_invoice_free(&got);
	fixture_invoice(&got, 7, 9);
	is_int(store_invoice_add(s, &got, "<c/>", 4, NULL), 0, "the next one");
	is_int(store_flush(s), STORE_COMMITTED, "committed");
	store_close(s);
	s = fixture_open(NULL, dir, 1 << 20);
	memset(&w, 0, sizeof(w));
	store_invoice_foreach(s, order_cb, &w);
	ok(order_is(&w, after_fail, 6), "after a reopen: the same order, the new one last");
	ok(store_doc_get(s, got.key, &x, &len) == 0 && len == 4 && memcmp(x, "<c/>", 4) == 0,
	    "its document is its own");
	free(x);
	record_invoice_free(&got);
	/* The arrival number carries on after a reopen. */
	fixture_invoice(&got, 7, 10);
	store_invoice_add(s, &got, "<d/>", 4, NULL);
	store_flush(s);
	memset(&w, 0, sizeof(w));
	store_invoice_foreach_after(s, inv[4].key, order_cb, &w);
	ok(w.n == 2 && w.i[0] == 9 && w.i[1] == 10, "and goes on from there after a reopen");
	record_invoice_free(&got);
	for (k = 0; k < 5; k++)
		record_invoice_free(&inv[k]);
	store_close(s);
}

/* ---- schema 1 -> 2 ---- */

/* Put key/value into the named database of a raw LMDB transaction. */
static void
raw_put(MDB_txn *txn, const char *db, const void *k, size_t klen, const void *v, size_t vlen)
{
	MDB_dbi dbi;
	MDB_val mk, mv;

	mk.mv_data = (void *)k;
	mk.mv_size = klen;
	mv.mv_data = (void *)v;
	mv.mv_size = vlen;
	if (mdb_dbi_open(txn, db, MDB_CREATE, &dbi) != 0 || mdb_put(txn, dbi, &mk, &mv, 0) != 0)
		fatalx("raw_put %s", db);
}

/*
 * A database as schema 1 wrote it (inv, doc and upo keyed by idempotency
 * key), made with LMDB directly; n invoices received in the reverse of
 * their key order; upo for the even ones.  A small map, so the upgrade must
 * grow it.
 */
static void
make_v1(const char *dir, int n)
{
	struct record_invoice inv;
	MDB_env *env;
	MDB_txn *txn;
	struct buf b;
	char doc[64];
	int i;

	if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
	    mdb_env_set_mapsize(env, 256 << 10) != 0 || mdb_env_open(env, dir, 0, 0600) != 0 ||
	    mdb_txn_begin(env, NULL, 0, &txn) != 0)
		fatalx("make_v1: lmdb");
	raw_put(txn, "meta", "schema_version", 14, "1", 1);
	for (i = 0; i < n; i++) {
		fixture_invoice(&inv, 3, (uint32_t)i);
		inv.received_ms = 1795514400000LL - i;	/* the last key came first */
		if (i % 2 == 0)
			inv.state = INV_ST_DONE;
		buf_init(&b);
		record_invoice_encode(&inv, &b);
		raw_put(txn, "inv", inv.key, INV_KEY_LEN, b.data, b.len);
		buf_free(&b);
		snprintf(doc, sizeof(doc), "<doc n=\"%d\"/>", i);
		raw_put(txn, "doc", inv.key, INV_KEY_LEN, doc, strlen(doc));
		if (i % 2 == 0) {
			snprintf(doc, sizeof(doc), "<upo n=\"%d\"/>", i);
			raw_put(txn, "upo", inv.key, INV_KEY_LEN, doc, strlen(doc));
		}
		record_invoice_free(&inv);
	}
	if (mdb_txn_commit(txn) != 0)
		fatalx("make_v1: commit");
	mdb_env_close(env);
}

static void reopen_expect(const char *dir, const char *want, const char *what);

static void
test_upgrade(void)
{
	char *dir = fixture_dir(), want[64];
	struct record_invoice inv, got;
	struct order_walk w;
	struct store *s;
	unsigned char *v;
	size_t len;
	int i, n = 400, good = 0, upos = 0, noupo = 0, bad = 0;
	struct store_stats st;
	uint32_t rev[16];

	make_v1(dir, n);
	s = fixture_open(NULL, dir, 256 << 10);
	ok(store_meta_get(s, "schema_version", &v, &len) == 0 && strcmp((char *)v, "2") == 0,
	    "schema 1 upgraded to 2");
	free(v);
	store_stats_get(s, &st);
	ok(st.grows > 0, "the upgrade grew the map it did not fit in (%zu bytes now)",
	    st.map_size);
	for (i = 0; i < n; i++) {
		fixture_invoice(&inv, 3, (uint32_t)i);
		if (store_invoice_get(s, inv.key, &got) == 0) {
			if (got.state != (i % 2 == 0 ? INV_ST_DONE : INV_ST_QUEUED))
				bad++;
			record_invoice_free(&got);
		} else
			bad++;
		snprintf(want, sizeof(want), "<doc n=\"%d\"/>", i);
		if (store_doc_get(s, inv.key, &v, &len) == 0) {
			if (len == strlen(want) && memcmp(v, want, len) == 0)
				good++;
			free(v);
		}
		snprintf(want, sizeof(want), "<upo n=\"%d\"/>", i);
		if (store_upo_get(s, inv.key, &v, &len) == 0) {
			if (i % 2 == 0 && len == strlen(want) && memcmp(v, want, len) == 0)
				upos++;
			else
				bad++;
			free(v);
		} else if (i % 2 == 1)
			noupo++;
		record_invoice_free(&inv);
	}
	is_int(bad, 0, "every record readable by its key, in its state; no stray UPO");
	is_int(good, n, "every invoice with its own document");
	is_int(upos, n / 2, "every UPO with its invoice");
	is_int(noupo, n / 2, "and none where there was none");
	memset(&w, 0, sizeof(w));
	store_invoice_foreach(s, order_cb, &w);
	for (i = 0; i < 16; i++)
		rev[i] = (uint32_t)(n - 1 - i);
	ok(w.n == n && memcmp(w.i, rev, sizeof(rev)) == 0,
	    "in the order they were received (%d)", w.n);
	fixture_invoice(&inv, 3, (uint32_t)n);
	is_int(store_invoice_add(s, &inv, "<new/>", 6, NULL), 0, "a new invoice after the upgrade");
	is_int(store_flush(s), STORE_COMMITTED, "committed");
	store_close(s);
	s = fixture_open(NULL, dir, 256 << 10);
	memset(&w, 0, sizeof(w));
	store_invoice_foreach_after(s, inv.key, order_cb, &w);
	is_int(w.n, 0, "after a reopen it is the last one");
	fixture_invoice(&got, 3, 0);
	memset(&w, 0, sizeof(w));
	store_invoice_foreach_after(s, got.key, order_cb, &w);
	ok(w.n == 1 && w.i[0] == (uint32_t)n, "right after the first received");
	record_invoice_free(&got);
	record_invoice_free(&inv);
	store_close(s);
	fixture_rmdir(dir);

	/* An unreadable record: no upgrade, the database left as it was. */
	dir = fixture_dir();
	make_v1(dir, 3);
	{
		MDB_env *env;
		MDB_txn *txn;

		fixture_invoice(&inv, 3, 1);
		if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
		    mdb_env_open(env, dir, 0, 0600) != 0 ||
		    mdb_txn_begin(env, NULL, 0, &txn) != 0)
			fatalx("test_upgrade: lmdb");
		raw_put(txn, "inv", inv.key, INV_KEY_LEN, "garbage", 7);
		if (mdb_txn_commit(txn) != 0)
			fatalx("test_upgrade: commit");
		mdb_env_close(env);
		record_invoice_free(&inv);
	}
	reopen_expect(dir, "schema 1 invoice record 5e00000003000000 is unreadable (",
	    "schema 1 with an unreadable record");
	reopen_expect(dir, "schema 1 invoice record 5e00000003000000 is unreadable (",
	    "and again: nothing was changed by the first attempt");
	fixture_rmdir(dir);
}

/* ---- schema versions ---- */

static void
reopen_expect(const char *dir, const char *want, const char *what)
{
	char err[512] = "";
	struct store *s = store_open(NULL, dir, 1 << 20, 0, err, sizeof(err));

	if (want == NULL) {
		ok(s != NULL, "%s: opens (%s)", what, err);
	} else {
		ok(s == NULL && strstr(err, want) != NULL, "%s: refused", what);
		diag("%s", err);
	}
	store_close(s);
}

static void
test_schema(void)
{
	char *d[4];
	struct store *s;
	struct record_invoice inv;
	int i;

	for (i = 0; i < 4; i++)
		d[i] = fixture_dir();
	s = fixture_open(NULL, d[0], 1 << 20);
	store_meta_put(s, "schema_version", "3", 1);
	store_close(s);
	reopen_expect(d[0], "written by a newer ksefd (schema version 3", "newer schema");

	s = fixture_open(NULL, d[1], 1 << 20);
	store_meta_put(s, "schema_version", "1x", 2);
	store_close(s);
	reopen_expect(d[1], "is not a positive number", "garbage schema version");

	s = fixture_open(NULL, d[2], 1 << 20);
	fixture_invoice(&inv, 9, 9);
	store_invoice_add(s, &inv, xml, 3, NULL);
	record_invoice_free(&inv);
	store_meta_del(s, "schema_version");
	store_close(s);
	reopen_expect(d[2], "holds invoices but no schema version", "data without a schema version");

	s = fixture_open(NULL, d[3], 1 << 20);
	store_meta_del(s, "schema_version");
	store_close(s);
	reopen_expect(d[3], NULL, "empty database without a version is initialised");
	for (i = 0; i < 4; i++)
		fixture_rmdir(d[i]);
}

/* ---- processes killed ---- */

static int
block_cb(const struct record_invoice *inv, void *arg)
{
	int fd = *(int *)arg;

	if (write(fd, "r", 1) != 1)
		_exit(1);
	for (;;)
		pause();
	return 0;
}

/*
 * A reader killed inside its read transaction leaves its slot behind.  LMDB
 * resets the reader table when one process has the environment to itself,
 * so a second child keeps it open meanwhile, as another ksefd tool might.
 */
static void
test_stale_reader(const char *dir)
{
	struct record_invoice inv;
	struct store_stats st;
	struct store *s;
	int p[2], q[2], status;
	pid_t reader, holder;
	char c;

	s = fixture_open(NULL, dir, 1 << 20);
	fixture_invoice(&inv, 8, 0);
	store_invoice_add(s, &inv, xml, 3, NULL);
	record_invoice_free(&inv);
	store_close(s);
	if (pipe(p) == -1 || pipe(q) == -1)
		fatal("pipe");
	if ((holder = fork()) == 0) {
		close(q[0]);
		s = fixture_open(NULL, dir, 1 << 20);
		if (write(q[1], "h", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(q[1]);
	ok(read(q[0], &c, 1) == 1, "another process holds the environment open");
	if ((reader = fork()) == 0) {
		close(p[0]);
		s = fixture_open(NULL, dir, 1 << 20);
		store_invoice_foreach(s, block_cb, &p[1]);
		_exit(1);
	}
	close(p[1]);
	ok(read(p[0], &c, 1) == 1, "a child is inside a read transaction");
	kill(reader, SIGKILL);
	waitpid(reader, &status, 0);
	close(p[0]);
	s = fixture_open(NULL, dir, 1 << 20);
	store_stats_get(s, &st);
	is_int(st.stale_readers, 1, "its stale reader slot is cleared at open");
	store_close(s);
	kill(holder, SIGKILL);
	waitpid(holder, &status, 0);
	close(q[0]);
}

#define CRASH_K		5	/* invoices per group */
#define CRASH_GROUPS	10000	/* group numbers per round */

/* The child: commit groups of CRASH_K invoices forever, reporting each committed group. */
static void __attribute__((noreturn))
crash_writer(const char *dir, uint32_t first, int fd)
{
	struct store *s = fixture_open(NULL, dir, 64 * 1024);
	struct record_invoice inv;
	char doc[3000];
	uint32_t g, i;
	char last[16];

	for (g = first; g < first + CRASH_GROUPS; g++) {
		for (i = 0; i < CRASH_K; i++) {
			fixture_invoice(&inv, g, i);
			memset(doc, 'A' + i, sizeof(doc));
			if (store_invoice_add(s, &inv, doc, sizeof(doc), "crash test") != 0)
				_exit(2);
			record_invoice_free(&inv);
		}
		snprintf(last, sizeof(last), "%u", g);
		store_meta_put(s, "crash/last", last, strlen(last));
		if (store_flush(s) != STORE_COMMITTED)
			_exit(3);
		if (write(fd, &g, sizeof(g)) != sizeof(g))
			_exit(4);
	}
	_exit(0);
}

struct crash_count {
	int	*per_group;
	int	 total;
};

static int
crash_count_cb(const struct record_invoice *inv, void *arg)
{
	struct crash_count *c = arg;
	uint32_t g = (uint32_t)inv->key[1] << 24 | inv->key[2] << 16 | inv->key[3] << 8 | inv->key[4];

	if (inv->key[0] == 0x5e && g < 4 * CRASH_GROUPS)
		c->per_group[g]++;
	c->total++;
	return 0;
}

static int
crash_event_cb(const struct record_audit *ev, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

/* Kill a committing writer at random points; committed groups survive whole, others vanish whole. */
static void
test_crash(const char *dir)
{
	struct crash_count cc;
	char *reported = xcalloc(4 * CRASH_GROUPS, 1);
	unsigned int seed = (unsigned int)time(NULL) ^ (unsigned int)getpid();
	struct store *s;
	unsigned char *v;
	size_t len;
	int round, p[2], status, target, nrep, events, lost, partial, i;
	uint32_t g, maxg;
	pid_t pid;

	if (getenv("KSEFD_TEST_SEED") != NULL)
		seed = (unsigned int)strtoul(getenv("KSEFD_TEST_SEED"), NULL, 10);
	diag("crash test seed %u (set KSEFD_TEST_SEED to repeat)", seed);
	for (round = 0; round < 4; round++) {
		target = 1 + rand_r(&seed) % 100;
		if (pipe(p) == -1)
			fatal("pipe");
		if ((pid = fork()) == 0) {
			close(p[0]);
			crash_writer(dir, round * CRASH_GROUPS, p[1]);
		}
		close(p[1]);
		for (nrep = 0, maxg = 0; nrep < target; nrep++) {
			if (read(p[0], &g, sizeof(g)) != sizeof(g))
				break;
			reported[g] = 1;
			maxg = g;
		}
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		if (!ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		    "round %d: writer killed after %d reported groups", round, nrep))
			diag("wait status 0x%x", status);
		while (read(p[0], &g, sizeof(g)) == sizeof(g)) {	/* committed before the kill */
			reported[g] = 1;
			maxg = g;
		}
		close(p[0]);

		s = fixture_open(NULL, dir, 64 * 1024);
		cc.per_group = xcalloc(4 * CRASH_GROUPS, sizeof(int));
		cc.total = 0;
		store_invoice_foreach(s, crash_count_cb, &cc);
		for (lost = partial = 0, i = 0; i < 4 * CRASH_GROUPS; i++) {
			lost += reported[i] && cc.per_group[i] != CRASH_K;
			partial += cc.per_group[i] != 0 && cc.per_group[i] != CRASH_K;
		}
		is_int(lost, 0, "round %d: every reported group is there", round);
		is_int(partial, 0, "round %d: no group is there in part", round);
		events = 0;
		store_audit_foreach(s, 0, crash_event_cb, &events);
		is_int(events, cc.total, "round %d: one audit event per invoice (%d)", round, events);
		ok(store_meta_get(s, "crash/last", &v, &len) == 0 &&
		    strtoul((char *)v, NULL, 10) >= maxg &&
		    cc.per_group[strtoul((char *)v, NULL, 10)] == CRASH_K,
		    "round %d: the meta write of the last group went with it", round);
		free(v);
		free(cc.per_group);
		store_close(s);
	}
	free(reported);
}

int
main(void)
{
	char *dir = fixture_dir();

	log_init("test_store", 1, LOG_LVL_WARN);
	alarm(300);	/* a hung child must not hang make check */
	test_round_trip(dir);
	test_updates_and_due(dir);
	test_meta(dir);
	test_group_commit(dir);
	fixture_rmdir(dir);

	dir = fixture_dir();
	test_map_growth(dir);
	fixture_rmdir(dir);

	dir = fixture_dir();
	test_map_resized(dir);
	fixture_rmdir(dir);

	test_schema();
	test_upgrade();
	dir = fixture_dir();
	test_arrival_order(dir);
	fixture_rmdir(dir);

	dir = fixture_dir();
	test_stale_reader(dir);
	fixture_rmdir(dir);

	dir = fixture_dir();
	test_crash(dir);
	fixture_rmdir(dir);
	return tap_done();
}
