/* test_record.c: record round trips, every truncation, garbage, wrong types, versions. */
#include "config.h"

#include <stdint.h>

#include <msgpack.h>

#include "log.h"
#include "record.h"
#include "util.h"
#include "tap.h"

/* Every record type behind one face, so each test runs over all of them. */
struct rtest {
	const char	*name;
	void		 *sample;
	size_t		  size;
	void		(*encode)(const void *, struct buf *);
	int		(*decode)(const void *, size_t, void *, struct record_err *);
	void		(*free)(void *);
};

#define WRAP(n, st)							\
static void n##_enc(const void *r, struct buf *b) { record_##n##_encode(r, b); } \
static int n##_dec(const void *d, size_t l, void *r, struct record_err *e) \
{ return record_##n##_decode(d, l, r, e); }				\
static void n##_free(void *r) { record_##n##_free(r); }

WRAP(invoice, struct record_invoice)
WRAP(audit, struct record_audit)
WRAP(token, struct record_token)
WRAP(session, struct record_session)
WRAP(limiter, struct record_limiter)

static struct record_invoice inv_full, inv_min;
static struct record_audit ev_full, ev_first;
static struct record_token tok;
static struct record_session sess;
static struct record_limiter lim;
static int64_t lim_sent[] = { 1795514400000LL, 1795514400100LL, 1795514401000LL, 1 };

/* Samples with every field set (and a few with only the required ones). */
static void
samples_init(void)
{
	memset(&inv_full, 0, sizeof(inv_full));
	memset(inv_full.key, 0xab, INV_KEY_LEN);
	inv_full.state = INV_ST_ACCEPTED;
	strcpy(inv_full.seller_nip, "5265877635");
	inv_full.form = INV_FORM_FA2;
	strcpy(inv_full.kind, "KOR_ZAL");
	inv_full.number = xstrdup("FV/2026/11/0001");
	strcpy(inv_full.issue_date, "2026-11-24");
	memset(inv_full.xml_sha256, 0xcd, INV_SHA_LEN);
	inv_full.xml_size = 5000000000ULL;
	inv_full.received_ms = 1795514400123LL;
	inv_full.attempts = 70000;
	inv_full.first_attempt_ms = 1795514400200LL;
	inv_full.next_due_ms = 1795514500000LL;
	inv_full.session_ref = xstrdup("20250625-SO-2C3E6C8000-B675CF5D68-07");
	inv_full.invoice_ref = xstrdup("20250625-EE-319D7EE000-B67F415CDC-2C");
	inv_full.ksef_number = xstrdup("5265877635-20250626-010080DD2B5E-26");
	inv_full.acquisition_date = xstrdup("2025-07-11T12:23:56.0154302+00:00");
	inv_full.storage_date = xstrdup("2025-07-11T12:24:16.0154302+00:00");
	inv_full.upo_present = 1;
	inv_full.error_code = -21405;
	inv_full.error_desc = xstrdup("Błąd weryfikacji \"semantyki\"");
	inv_full.error_details = xstrdup("line 1\nline 2\ttab");
	memset(inv_full.supersedes, 0x01, INV_KEY_LEN);
	memset(inv_full.superseded_by, 0x02, INV_KEY_LEN);
	inv_full.hold = 1;
	inv_full.source = INV_SRC_SPOOL;
	inv_full.source_name = xstrdup("faktura-0001.xml");

	memset(&inv_min, 0, sizeof(inv_min));
	strcpy(inv_min.seller_nip, "1234563218");
	strcpy(inv_min.kind, "VAT");
	inv_min.number = xstrdup("1");
	strcpy(inv_min.issue_date, "2026-01-01");

	memset(&ev_full, 0, sizeof(ev_full));
	ev_full.seq = UINT64_MAX - 1;
	ev_full.time_ms = 1795514400999LL;
	memset(ev_full.key, 0x77, INV_KEY_LEN);
	ev_full.from = INV_ST_SENDING;
	ev_full.to = INV_ST_QUEUED;
	ev_full.detail = xstrdup("429: retry after 30 s");
	memset(&ev_first, 0, sizeof(ev_first));
	ev_first.seq = 1;
	ev_first.from = INV_ST_NONE;
	ev_first.to = INV_ST_QUEUED;

	memset(&tok, 0, sizeof(tok));
	tok.access_token = xstrdup("eyJhbGciOiJIUzI1NiJ9.access");
	tok.access_expiry_ms = 1795514460000LL;
	tok.refresh_token = xstrdup("eyJhbGciOiJIUzI1NiJ9.refresh");
	tok.refresh_expiry_ms = 1796119200000LL;

	memset(&sess, 0, sizeof(sess));
	strcpy(sess.context_nip, "5265877635");
	sess.form = INV_FORM_FA3;
	sess.kind = SESS_KIND_BATCH;
	sess.session_ref = xstrdup("20250625-SB-2C3E6C8000-B675CF5D68-07");
	memset(sess.aes_key, 0x42, SESS_AES_KEY_LEN);
	memset(sess.aes_iv, 0x24, SESS_AES_IV_LEN);
	sess.opened_ms = 1795514400000LL;
	sess.valid_until_ms = 1795557600000LL;
	sess.invoice_count = 9999;
	sess.state = SESS_ST_CLOSING;

	lim.paused_until_ms = 1795514430000LL;
	lim.nsent = nitems(lim_sent);
	lim.sent_ms = lim_sent;
}

static struct rtest rtests[] = {
	{ "invoice", &inv_full, sizeof(inv_full), invoice_enc, invoice_dec, invoice_free },
	{ "invoice (required fields only)", &inv_min, sizeof(inv_min), invoice_enc, invoice_dec, invoice_free },
	{ "audit", &ev_full, sizeof(ev_full), audit_enc, audit_dec, audit_free },
	{ "audit (creation)", &ev_first, sizeof(ev_first), audit_enc, audit_dec, audit_free },
	{ "token", &tok, sizeof(tok), token_enc, token_dec, token_free },
	{ "session", &sess, sizeof(sess), session_enc, session_dec, session_free },
	{ "limiter", &lim, sizeof(lim), limiter_enc, limiter_dec, limiter_free },
};

static int
all_zero(const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n > 0)
		if (c[--n] != 0)
			return 0;
	return 1;
}

/* decode(encode(x)) encodes to the same bytes: nothing lost, nothing added. */
static void
test_round_trips(void)
{
	struct record_err err;
	struct buf a, b;
	_Alignas(16) unsigned char rec[512];
	size_t i;

	for (i = 0; i < nitems(rtests); i++) {
		buf_init(&a);
		buf_init(&b);
		rtests[i].encode(rtests[i].sample, &a);
		if (!ok(rtests[i].decode(a.data, a.len, rec, &err) == 0,
		    "%s: decodes (%zu bytes)", rtests[i].name, a.len)) {
			diag("%s", err.msg);
			continue;
		}
		rtests[i].encode(rec, &b);
		ok(a.len == b.len && memcmp(a.data, b.data, a.len) == 0,
		    "%s: round trip gives the same encoding", rtests[i].name);
		rtests[i].free(rec);
		ok(all_zero(rec, rtests[i].size), "%s: free leaves it empty", rtests[i].name);
		buf_free(&a);
		buf_free(&b);
	}
}

/* Field by field on the two richest types, so the decoder is not just symmetric. */
static void
test_fields(void)
{
	struct record_invoice in;
	struct record_audit ev;
	struct record_limiter l;
	struct record_err err;
	struct buf b;

	buf_init(&b);
	record_invoice_encode(&inv_full, &b);
	ok(record_invoice_decode(b.data, b.len, &in, &err) == 0, "invoice decodes");
	is_int(in.state, INV_ST_ACCEPTED, "state");
	is_str(in.seller_nip, "5265877635", "nip");
	is_int(in.form, INV_FORM_FA2, "form");
	is_str(in.kind, "KOR_ZAL", "kind");
	is_str(in.number, "FV/2026/11/0001", "number");
	is_str(in.issue_date, "2026-11-24", "issue date");
	ok(memcmp(in.key, inv_full.key, INV_KEY_LEN) == 0, "key");
	ok(memcmp(in.xml_sha256, inv_full.xml_sha256, INV_SHA_LEN) == 0, "sha256");
	ok(in.xml_size == 5000000000ULL, "size above 32 bits");
	is_int(in.received_ms, 1795514400123LL, "received");
	is_int(in.attempts, 70000, "attempts");
	is_int(in.first_attempt_ms, 1795514400200LL, "first attempt");
	is_int(in.next_due_ms, 1795514500000LL, "next due");
	is_str(in.session_ref, inv_full.session_ref, "session ref");
	is_str(in.invoice_ref, inv_full.invoice_ref, "invoice ref");
	is_str(in.ksef_number, inv_full.ksef_number, "KSeF number");
	is_str(in.acquisition_date, inv_full.acquisition_date, "acquisition date");
	is_str(in.storage_date, inv_full.storage_date, "storage date");
	is_int(in.upo_present, 1, "upo flag");
	is_int(in.error_code, -21405, "negative error code");
	is_str(in.error_desc, inv_full.error_desc, "UTF-8 error description");
	is_str(in.error_details, inv_full.error_details, "error details");
	ok(memcmp(in.supersedes, inv_full.supersedes, INV_KEY_LEN) == 0, "supersedes");
	ok(memcmp(in.superseded_by, inv_full.superseded_by, INV_KEY_LEN) == 0, "superseded by");
	is_int(in.hold, 1, "hold");
	is_int(in.source, INV_SRC_SPOOL, "source");
	is_str(in.source_name, "faktura-0001.xml", "source name");
	record_invoice_free(&in);

	buf_reset(&b);
	record_audit_encode(&ev_first, &b);
	ok(record_audit_decode(b.data, b.len, &ev, &err) == 0, "creation event decodes");
	is_int(ev.from, INV_ST_NONE, "absent from-state is NONE");
	ok(ev.detail == NULL, "absent detail is NULL");
	record_audit_free(&ev);

	buf_reset(&b);
	record_limiter_encode(&lim, &b);
	ok(record_limiter_decode(b.data, b.len, &l, &err) == 0, "limiter decodes");
	ok(l.nsent == 4 && l.sent_ms[0] == lim_sent[0] && l.sent_ms[3] == 1,
	    "limiter send times");
	record_limiter_free(&l);
	buf_free(&b);
}

/* Every prefix of every encoding is refused as truncated, leaving nothing to free. */
static void
test_truncations(void)
{
	struct record_err err;
	_Alignas(16) unsigned char rec[512];
	struct buf a;
	size_t i, n, bad;

	for (i = 0; i < nitems(rtests); i++) {
		buf_init(&a);
		rtests[i].encode(rtests[i].sample, &a);
		for (bad = 0, n = 0; n < a.len; n++) {
			/* A copy of exactly n bytes, so ASan sees any read past it. */
			unsigned char *cut = xmalloc(n);

			memcpy(cut, a.data, n);
			memset(rec, 0x5a, sizeof(rec));
			if (rtests[i].decode(cut, n, rec, &err) != -1 ||
			    err.code != REC_E_TRUNCATED || !all_zero(rec, rtests[i].size)) {
				if (bad++ == 0)
					diag("at %zu: code %d: %s", n, err.code, err.msg);
			}
			free(cut);
		}
		ok(bad == 0, "%s: all %zu truncations refused as truncated", rtests[i].name, a.len);
		buf_free(&a);
	}
}

/* Replace the first occurrence of `from` in a copy of src with `to`. */
static void
patch(const struct buf *src, const char *from, size_t flen, const char *to, size_t tlen,
    struct buf *out)
{
	size_t i;

	buf_reset(out);
	for (i = 0; i + flen <= src->len; i++)
		if (memcmp(src->data + i, from, flen) == 0)
			break;
	if (i + flen > src->len)
		fatalx("patch: pattern not found");
	buf_add(out, src->data, i);
	buf_add(out, to, tlen);
	buf_add(out, src->data + i + flen, src->len - i - flen);
}

#define P(s)	s, sizeof(s) - 1

/* Hand-made bad inputs: each is refused with the right code. */
static void
test_bad_inputs(void)
{
	static const struct {
		const char	*what;
		const char	*from;
		size_t		 flen;
		const char	*to;
		size_t		 tlen;
		int		 code;
	} t[] = {
		{ "version 2", P("\xa1v\x01"), P("\xa1v\x02"), REC_E_VERSION },
		{ "version 0", P("\xa1v\x01"), P("\xa1v\x00"), REC_E_VALUE },
		{ "version as a string", P("\xa1v\x01"), P("\xa1v\xa1" "1"), REC_E_TYPE },
		{ "another record type", P("\xa7invoice"), P("\xa7session"), REC_E_KIND },
		{ "state as an integer", P("\xa8" "ACCEPTED"), P("\x03"), REC_E_TYPE },
		{ "unknown state", P("\xa8" "ACCEPTED"), P("\xa8" "ACCEPTEX"), REC_E_VALUE },
		{ "key of 33 bytes", P("\xa3key\xc4\x20"), P("\xa3key\xc4\x21\x00"), REC_E_VALUE },
		{ "key as a string", P("\xa3key\xc4\x20"), P("\xa3key\xd9\x20"), REC_E_TYPE },
		{ "missing nip", P("\xa3nip"), P("\xa3nop"), REC_E_MISSING },
		{ "nip as a prefix", P("\xa3nip"), P("\xa2ni"), REC_E_MISSING },
		{ "nip with a suffix", P("\xa3nip"), P("\xa4nipx"), REC_E_MISSING },
		{ "nip with a NUL", P("\xa3nip"), P("\xa3ni\0"), REC_E_MISSING },
		{ "nip and a NUL", P("\xa3nip"), P("\xa4nip\0"), REC_E_MISSING },
		{ "duplicate field", P("\xa4hold"), P("\xa4kind"), REC_E_VALUE },
		{ "NUL in a string", P("FV/2026"), P("FV\0" "2026"), REC_E_VALUE },
		{ "nip too long", P("\xaa" "5265877635"), P("\xab" "52658776350"), REC_E_VALUE },
		{ "attempts above 32 bits", P("\xa8" "attempts\xce\x00\x01\x11\x70"),
		    P("\xa8" "attempts\xcf\x00\x00\x00\x01\x00\x00\x00\x00"), REC_E_VALUE },
		{ "negative attempts", P("\xa8" "attempts\xce\x00\x01\x11\x70"), P("\xa8" "attempts\xff"), REC_E_VALUE },
		{ "hold as an integer", P("\xa4hold\xc3"), P("\xa4hold\x01"), REC_E_TYPE },
		{ "field name not a string", P("\xa4hold"), P("\x07"), REC_E_GARBAGE },
		{ "reserved byte 0xc1", P("\xa4hold\xc3"), P("\xa4hold\xc1"), REC_E_GARBAGE },
	};
	struct record_invoice in;
	struct record_err err;
	struct buf enc, bad;
	size_t i;

	buf_init(&enc);
	buf_init(&bad);
	record_invoice_encode(&inv_full, &enc);
	for (i = 0; i < nitems(t); i++) {
		patch(&enc, t[i].from, t[i].flen, t[i].to, t[i].tlen, &bad);
		if (!ok(record_invoice_decode(bad.data, bad.len, &in, &err) == -1 &&
		    (int)err.code == t[i].code, "%s refused (code %d)", t[i].what, t[i].code))
			diag("got code %d: %s", err.code, err.msg);
		else
			diag("%s", err.msg);
	}

	/* An unknown field (from a newer ksefd) is skipped. */
	patch(&enc, P("\xa4hold"), P("\xa4HOLD"), &bad);
	ok(record_invoice_decode(bad.data, bad.len, &in, &err) == 0 && in.hold == 0,
	    "unknown field skipped");
	record_invoice_free(&in);
	/* ... whatever its shape, nested maps and arrays included. */
	patch(&enc, P("\xa4hold\xc3"), P("\xa4HOLD\x82\xa1" "a\x92\x01\xc0\xa1" "b\xc7\x02\x05xy"), &bad);
	ok(record_invoice_decode(bad.data, bad.len, &in, &err) == 0, "nested unknown field skipped");
	record_invoice_free(&in);

	/* The fields in the reverse order: the same record. */
	{
		msgpack_unpacked u;
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_object_map *m;
		struct buf again;
		uint32_t j;

		msgpack_unpacked_init(&u);
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		ok(msgpack_unpack_next(&u, (const char *)enc.data, enc.len, NULL) ==
		    MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP,
		    "the encoding is one map");
		m = &u.data.via.map;
		msgpack_pack_map(&pk, m->size);
		for (j = m->size; j-- > 0; ) {
			msgpack_pack_object(&pk, m->ptr[j].key);
			msgpack_pack_object(&pk, m->ptr[j].val);
		}
		buf_init(&again);
		if (ok(record_invoice_decode(sb.data, sb.size, &in, &err) == 0,
		    "fields in the reverse order: decoded")) {
			record_invoice_encode(&in, &again);
			ok(again.len == enc.len && memcmp(again.data, enc.data, enc.len) == 0,
			    "to the same record");
			record_invoice_free(&in);
		}
		buf_free(&again);
		msgpack_sbuffer_destroy(&sb);
		msgpack_unpacked_destroy(&u);
	}

	buf_add(&enc, "\x00", 1);
	ok(record_invoice_decode(enc.data, enc.len, &in, &err) == -1 &&
	    err.code == REC_E_GARBAGE, "trailing byte refused: %s", err.msg);
	buf_free(&enc);
	buf_free(&bad);
}

/* Inputs that could make a careless decoder allocate or recurse without bound. */
static void
test_hostile(void)
{
	struct record_invoice in;
	struct record_limiter l;
	struct record_err err;
	struct buf b;
	int i;

	ok(record_invoice_decode("", 0, &in, &err) == -1 && err.code == REC_E_TRUNCATED,
	    "empty input");
	ok(record_invoice_decode(NULL, 0, &in, &err) == -1 && err.code == REC_E_TRUNCATED,
	    "NULL input");
	ok(record_invoice_decode("\x93\x01\x02\x03", 4, &in, &err) == -1 &&
	    err.code == REC_E_GARBAGE, "an array, not a map: %s", err.msg);
	ok(record_invoice_decode(P("\x83\xa1v\x01\xa1t\xa7invoice\xa1x\xdd\xff\xff\xff\xff"),
	    &in, &err) == -1 && err.code == REC_E_TRUNCATED, "array claiming 4G entries");
	ok(record_invoice_decode(P("\xdf\xff\xff\xff\xff\xa1v"), &in, &err) == -1 &&
	    err.code == REC_E_TRUNCATED, "map claiming 4G entries");
	ok(record_invoice_decode(P("\x81\xa1x\xdb\xff\xff\xff\xff"), &in, &err) == -1 &&
	    err.code == REC_E_TRUNCATED, "string claiming 4 GB");
	ok(record_limiter_decode(P("\x83\xa1v\x01\xa1t\xa7limiter\xa7sent_ms\xdd\x7f\xff\xff\xff"),
	    &l, &err) == -1 && err.code == REC_E_TRUNCATED,
	    "send-time list claiming 2G entries");
	buf_init(&b);
	buf_add(&b, P("\x83\xa1v\x01\xa1t\xa7invoice\xa1x"));
	for (i = 0; i < 1000; i++)
		buf_add(&b, "\x91", 1);
	buf_add(&b, "\x01", 1);
	ok(record_invoice_decode(b.data, b.len, &in, &err) == -1 && err.code == REC_E_GARBAGE,
	    "1000 nested arrays: %s", err.msg);
	buf_free(&b);
}

/* Mutated and random inputs never crash, and every outcome is clean. */
static void
test_mutations(void)
{
	struct record_invoice in;
	struct record_err err;
	struct buf enc, m;
	unsigned int seed = 20261124, decoded = 0, bad = 0;
	int i, j, n;

	buf_init(&enc);
	buf_init(&m);
	record_invoice_encode(&inv_full, &enc);
	for (i = 0; i < 20000; i++) {
		buf_reset(&m);
		if (i % 4 == 3) {
			n = rand_r(&seed) % 64;
			for (j = 0; j < n; j++) {
				unsigned char c = rand_r(&seed) & 0xff;
				buf_add(&m, &c, 1);
			}
		} else {
			buf_add(&m, enc.data, enc.len);
			n = 1 + rand_r(&seed) % 4;
			for (j = 0; j < n; j++)
				m.data[rand_r(&seed) % m.len] = rand_r(&seed) & 0xff;
		}
		if (record_invoice_decode(m.data, m.len, &in, &err) == 0) {
			decoded++;
			record_invoice_free(&in);
		} else if (err.code < REC_E_TRUNCATED || err.code > REC_E_MISSING ||
		    err.msg[0] == '\0')
			bad++;
	}
	ok(bad == 0, "20000 mutated inputs: each decoded or refused with a code and message");
	diag("%u of them still decoded", decoded);
	buf_free(&enc);
	buf_free(&m);
}

static void
test_names(void)
{
	enum inv_state st;
	enum inv_form form;
	char hk[17];
	int i;

	for (i = 0; i < INV_ST_COUNT; i++)
		ok(record_state_parse(record_state_name(i), &st) == 0 && (int)st == i,
		    "state %s parses back", record_state_name(i));
	ok(record_state_parse("submitted", &st) == 0 && st == INV_ST_SUBMITTED,
	    "state names are case-insensitive");
	ok(record_state_parse("NONE", &st) == -1, "NONE is not a state to parse");
	ok(record_state_parse("bogus", &st) == -1, "unknown state refused");
	ok(record_state_parse(NULL, &st) == -1, "NULL state refused");
	is_str(record_state_name(INV_ST_NONE), "NONE", "name of NONE");
	is_str(record_state_name(42), "?", "name of a bad state");
	ok(record_form_parse("fa2", &form) == 0 && form == INV_FORM_FA2, "form parse");
	is_str(record_form_name(INV_FORM_FA3), "FA3", "form name");
	is_str(record_source_name(INV_SRC_SPOOL), "spool", "source name");
	is_str(record_sess_kind_name(SESS_KIND_ONLINE), "online", "session kind name");
	is_str(record_sess_state_name(SESS_ST_CLOSED), "CLOSED", "session state name");
	record_key_short(inv_full.key, hk);
	is_str(hk, "abababababababab", "short key is 16 hex digits");
}

/* The store's check before a write: state and due time only, nothing allocated. */
static void
test_peek(void)
{
	struct record_invoice in;
	struct record_err err;
	struct buf b;
	size_t n;

	buf_init(&b);
	record_invoice_encode(&inv_full, &b);
	ok(record_invoice_peek(b.data, b.len, &in, &err) == 0 &&
	    in.state == INV_ST_ACCEPTED && in.next_due_ms == 1795514500000LL,
	    "peek: state and due time");
	ok(in.number == NULL && in.session_ref == NULL && in.seller_nip[0] == '\0' &&
	    in.attempts == 0 && in.hold == 0, "peek: nothing else filled in");
	buf_reset(&b);
	record_invoice_encode(&inv_min, &b);
	ok(record_invoice_peek(b.data, b.len, &in, &err) == 0 &&
	    in.state == inv_min.state && in.next_due_ms == inv_min.next_due_ms,
	    "peek: a minimal record");
	for (n = 0; n < b.len; n++)
		if (record_invoice_peek(b.data, n, &in, &err) != -1 ||
		    err.code != REC_E_TRUNCATED)
			break;
	is_int((int)n, (int)b.len, "peek: every prefix refused as truncated");
	buf_reset(&b);
	record_audit_encode(&ev_full, &b);
	ok(record_invoice_peek(b.data, b.len, &in, &err) == -1 &&
	    err.code == REC_E_KIND, "peek: another record type refused (%s)",
	    err.msg);
	buf_free(&b);
}

static void
test_copy(void)
{
	struct record_invoice c;

	record_invoice_copy(&c, &inv_full);
	ok(c.number != inv_full.number && strcmp(c.number, inv_full.number) == 0 &&
	    c.source_name != inv_full.source_name, "copy is deep");
	record_str_set(&c.ksef_number, NULL);
	ok(c.ksef_number == NULL, "record_str_set clears");
	record_str_set(&c.ksef_number, "X");
	is_str(c.ksef_number, "X", "record_str_set sets");
	record_invoice_free(&c);
}

int
main(void)
{
	log_init("test_record", 1, LOG_LVL_WARN);
	samples_init();
	test_round_trips();
	test_fields();
	test_truncations();
	test_bad_inputs();
	test_hostile();
	test_mutations();
	test_names();
	test_peek();
	test_copy();
	record_invoice_free(&inv_full);
	record_invoice_free(&inv_min);
	record_audit_free(&ev_full);
	record_token_free(&tok);
	record_session_free(&sess);
	return tap_done();
}
