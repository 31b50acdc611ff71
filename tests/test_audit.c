/* test_audit.c: state changes and their events move together; order; JSON lines export. */
#include "config.h"

#include <jansson.h>

#include "audit.h"
#include "log.h"
#include "record.h"
#include "store.h"
#include "util.h"
#include "tap.h"
#include "store_fixture.h"

#define MAX_EVENTS	32

struct collected {
	int			 n, stop_after;
	struct record_audit	 ev[MAX_EVENTS];
};

static int
collect_cb(const struct record_audit *ev, void *arg)
{
	struct collected *c = arg;

	if (c->n < MAX_EVENTS) {
		c->ev[c->n] = *ev;
		c->ev[c->n].detail = ev->detail ? xstrdup(ev->detail) : NULL;
		c->n++;
	}
	return c->stop_after > 0 && c->n >= c->stop_after;
}

static void
collect(struct store *s, uint64_t from, int stop_after, struct collected *c)
{
	int i;

	for (i = 0; i < c->n; i++)
		free(c->ev[i].detail);
	memset(c, 0, sizeof(*c));
	c->stop_after = stop_after;
	if (store_audit_foreach(s, from, collect_cb, c) == -1)
		diag("store_audit_foreach failed");
}

static const struct {
	enum inv_state	 to;
	const char	*detail;
} life[] = {
	{ INV_ST_SENDING, "online session 20250625-SO-2C3E6C8000-B675CF5D68-07" },
	{ INV_ST_SUBMITTED, "reference 20250625-EE-319D7EE000-B67F415CDC-2C" },
	{ INV_ST_ACCEPTED, "KSeF number 5265877635-20250626-010080DD2B5E-26" },
	{ INV_ST_DONE, "UPO stored" },
};

/* A whole life cycle, then the events read back in order. */
static void
test_order(struct store *s, struct record_invoice *inv, struct collected *c)
{
	int64_t t0 = time_now_ms(), t1;
	enum inv_state from, to;
	size_t i;
	int good;

	fixture_invoice(inv, 1, 1);
	ok(store_invoice_add(s, inv, "<x/>", 4, "received via api") == 0, "invoice added");
	for (i = 0, good = 0; i < nitems(life); i++)
		good += store_invoice_transition(s, inv, life[i].to, life[i].detail) == 0;
	is_int(good, 4, "four transitions");
	is_int(store_flush(s), STORE_COMMITTED, "committed");
	t1 = time_now_ms();

	collect(s, 1, 0, c);
	is_int(c->n, 5, "five events: creation and four transitions");
	for (i = 0, good = 0; c->n == 5 && i < 5; i++) {
		from = i == 0 ? INV_ST_NONE : i == 1 ? INV_ST_QUEUED : life[i - 2].to;
		to = i == 0 ? INV_ST_QUEUED : life[i - 1].to;
		good += c->ev[i].seq == i + 1 && c->ev[i].time_ms >= t0 &&
		    c->ev[i].time_ms <= t1 && memcmp(c->ev[i].key, inv->key, INV_KEY_LEN) == 0 &&
		    c->ev[i].from == from && c->ev[i].to == to;
	}
	is_int(good, 5, "sequence 1..5, in order, each from the state the last one went to");
	ok(c->n == 5 && strcmp(c->ev[0].detail, "received via api") == 0 &&
	    strcmp(c->ev[4].detail, "UPO stored") == 0, "details kept");
	collect(s, 3, 0, c);
	ok(c->n == 3 && c->ev[0].seq == 3, "read from sequence 3");
	collect(s, 1, 2, c);
	is_int(c->n, 2, "callback can stop the walk");
	collect(s, 6, 0, c);
	is_int(c->n, 0, "nothing past the end");
}

/* Abort a group with a transition in it: neither the state nor the event stays. */
static void
test_atomic(struct store *s, struct collected *c)
{
	struct record_invoice inv, got;
	uint64_t seq;

	fixture_invoice(&inv, 2, 1);
	store_invoice_add(s, &inv, "<y/>", 4, NULL);
	store_flush(s);
	seq = store_audit_next_seq(s);

	store_test_fail_commits(s, 1);
	ok(store_invoice_transition(s, &inv, INV_ST_SENDING, "will be lost") == 0,
	    "transition in a group that will fail");
	ok(store_invoice_get(s, inv.key, &got) == 0 && got.state == INV_ST_SENDING,
	    "the group sees its own state change");
	record_invoice_free(&got);
	collect(s, seq, 0, c);
	ok(c->n == 1 && c->ev[0].to == INV_ST_SENDING, "and its own pending event");
	is_int(store_flush(s), STORE_FAILED, "the commit fails");
	ok(store_invoice_get(s, inv.key, &got) == 0 && got.state == INV_ST_QUEUED,
	    "state change gone");
	record_invoice_free(&got);
	collect(s, seq, 0, c);
	is_int(c->n, 0, "event gone");
	is_int(store_audit_next_seq(s), seq, "its sequence number is free again");

	inv.state = INV_ST_QUEUED;
	ok(store_invoice_transition(s, &inv, INV_ST_FAILED, "given up") == 0 &&
	    store_flush(s) == STORE_COMMITTED, "a later transition commits");
	collect(s, seq, 0, c);
	ok(c->n == 1 && c->ev[0].seq == seq && c->ev[0].from == INV_ST_QUEUED &&
	    c->ev[0].to == INV_ST_FAILED, "with the next sequence number and the right states");
	record_invoice_free(&inv);
}

/* Every line is one JSON object with the event's fields. */
static void
test_export(struct store *s, const struct record_invoice *inv)
{
	struct record_invoice odd;
	char hex[2 * INV_KEY_LEN + 1], *line, *nl, *filed;
	json_error_t jerr;
	struct buf b;
	json_t *o;
	FILE *fp;
	size_t flen;
	long n;
	int good = 0, lines = 0;

	fixture_invoice(&odd, 3, 1);
	store_invoice_add(s, &odd, "<z/>", 4, "quote \" backslash \\ newline \n tab \t zażółć");
	store_invoice_transition(s, &odd, INV_ST_REJECTED, "bad UTF-8 \xff\xfe here");
	store_flush(s);

	buf_init(&b);
	n = audit_export_buf(s, 1, &b);
	ok(n == 9, "nine events exported (%ld)", n);
	hex_encode(inv->key, INV_KEY_LEN, hex);
	for (line = (char *)b.data; line != NULL && *line != '\0'; line = nl + 1) {
		if ((nl = strchr(line, '\n')) == NULL)
			break;
		*nl = '\0';
		lines++;
		if ((o = json_loads(line, 0, &jerr)) == NULL) {
			diag("line %d does not parse: %s", lines, jerr.text);
			*nl = '\n';
			continue;
		}
		good += json_integer_value(json_object_get(o, "seq")) == lines &&
		    json_is_string(json_object_get(o, "time")) &&
		    json_is_integer(json_object_get(o, "time_ms")) &&
		    json_is_string(json_object_get(o, "to")) &&
		    json_is_string(json_object_get(o, "detail"));
		if (lines == 1) {
			ok(json_is_null(json_object_get(o, "from")), "creation: from is null");
			is_str(json_string_value(json_object_get(o, "invoice")), hex,
			    "invoice as 64 hex digits");
			is_str(json_string_value(json_object_get(o, "to")), "QUEUED", "to QUEUED");
		}
		if (lines == 8)
			is_str(json_string_value(json_object_get(o, "detail")),
			    "quote \" backslash \\ newline \n tab \t zażółć",
			    "quotes, control characters and UTF-8 survive");
		if (lines == 9)
			is_str(json_string_value(json_object_get(o, "detail")),
			    "bad UTF-8 ?? here", "invalid UTF-8 still gives valid JSON");
		json_decref(o);
		*nl = '\n';
	}
	is_int(lines, 9, "nine lines, each ending in a newline");
	is_int(good, 9, "each line parses with seq, time, time_ms, to, detail");

	fp = tmpfile();
	ok(audit_export_file(s, 1, fp) == 9, "file export");
	rewind(fp);
	filed = xmalloc(b.len + 16);
	flen = fread(filed, 1, b.len + 16, fp);
	ok(flen == b.len && memcmp(filed, b.data, b.len) == 0, "file export equals buffer export");
	fclose(fp);
	free(filed);
	buf_reset(&b);
	ok(audit_export_buf(s, 8, &b) == 2, "export from a sequence number");
	buf_free(&b);
	record_invoice_free(&odd);
}

int
main(void)
{
	char *dir = fixture_dir();
	struct record_invoice inv;
	struct collected c;
	struct store *s;
	uint64_t next;
	int i;

	log_init("test_audit", 1, LOG_LVL_WARN);
	memset(&c, 0, sizeof(c));
	s = fixture_open(NULL, dir, 1 << 20);
	test_order(s, &inv, &c);
	test_atomic(s, &c);
	test_export(s, &inv);
	next = store_audit_next_seq(s);
	store_close(s);

	s = fixture_open(NULL, dir, 1 << 20);
	is_int(store_audit_next_seq(s), next, "sequence continues after reopen");
	inv.state = INV_ST_DONE;
	ok(store_invoice_update(s, &inv) == 0 && store_flush(s) == STORE_COMMITTED,
	    "update without a state change");
	is_int(store_audit_next_seq(s), next, "writes no audit event");
	store_close(s);

	for (i = 0; i < c.n; i++)
		free(c.ev[i].detail);
	record_invoice_free(&inv);
	fixture_rmdir(dir);
	return tap_done();
}
