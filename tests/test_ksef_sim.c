/*
 * test_ksef_sim.c: the KSeF layer end to end against a running ksef-sim
 * (started by tests/ksef_sim.sh over TLS with a throwaway CA).  Every
 * operation of ksef.h on the libevent loop through the real transport:
 * keys, authentication, session, the official FA(3) sample sent, polled
 * until processed, found in the session list by hash, its UPO (link and
 * endpoint) naming the hash, the invoice fetched back, a duplicate, close;
 * then the simulator's faults: expired tokens, key rotation, 503, 429,
 * hang, reset-after-processing, and a wrong KSeF token.
 *
 * usage: test_ksef_sim BASE_URL CA_FILE TOKEN SAMPLE_XML
 */
#include "config.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "util.h"
#include "ksef/ksef.h"
#include "ksef/ksef_int.h"
#include "tap.h"

#define NIP		"5265877635"
#define WAIT_MS		20000	/* the most any one operation may take */

static struct event_base *base;
static struct http *http;
static const char *base_url;
static int ntoken_saves;

struct wait {
	int			 done;
	int			 calls;
	struct ksef_result	 res;
};

static void
wait_cb(struct ksef_result *r, void *arg)
{
	struct wait *w = arg;

	w->calls++;
	if (w->done)
		return;
	w->done = 1;
	w->res = *r;			/* take everything */
	memset(r, 0, sizeof(*r));
}

static void
timeout_cb(int fd, short ev, void *arg)
{
	*(int *)arg = 1;
}

/* Run the loop until *flag is set or WAIT_MS pass; 0 when it was set. */
static int
loop_until(int *flag, int64_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	int expired = 0;
	struct event *t = evtimer_new(base, timeout_cb, &expired);

	evtimer_add(t, &tv);
	while (!*flag && !expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return *flag ? 0 : -1;
}

static void
loop_sleep(int64_t ms)
{
	int never = 0;

	(void)loop_until(&never, ms);
}

/* Wait for w; a timeout is a failed test of its own. */
static struct ksef_result *
wait_for(struct wait *w, const char *what)
{
	if (loop_until(&w->done, WAIT_MS) == -1) {
		ok(0, "%s: no callback within %d ms", what, WAIT_MS);
		w->res.outcome = KSEF_FATAL;
	}
	if (w->res.reason != NULL && w->res.outcome != KSEF_OK)
		diag("%s: %s: %s", what, ksef_outcome_name(w->res.outcome),
		    w->res.reason);
	return &w->res;
}

static void
wait_reset(struct wait *w)
{
	ksef_result_free(&w->res);
	memset(w, 0, sizeof(*w));
}

static void
ctl_cb(struct http_response *r, void *arg)
{
	int *st = arg;

	*st = r->outcome == HTTP_OUT_OK ? (int)r->status : -1;
}

/* POST /_sim/faults with a JSON body; the HTTP status. */
static int
sim_control(const char *json)
{
	struct http_request *req;
	char *url;
	int st = 0;

	url = xasprintf("%.*s/_sim/faults", (int)(strlen(base_url) - 3),
	    base_url);
	req = http_request_new(HTTP_POST, url);
	free(url);
	http_request_header_add(req, "Content-Type", "application/json");
	http_request_body_take(req, xstrdup(json), strlen(json));
	http_request_start(http, req, ctl_cb, &st);
	if (loop_until(&st, WAIT_MS) == -1)
		return -1;
	return st;
}

static void
token_cb(const char *nip, const struct record_token *t, void *arg)
{
	ntoken_saves++;
}

static struct ksef_ctx *
ctx_make(const char *token, int64_t timeout_ms)
{
	struct ksef_ctx_options o;

	memset(&o, 0, sizeof(o));
	o.base_url = base_url;
	o.nip = NIP;
	o.token = token;
	o.request_timeout_ms = timeout_ms;
	o.token_refresh_margin_ms = 1000;
	o.poll_auth_interval_ms = 50;
	o.auth_timeout_ms = 10000;
	o.token_cb = token_cb;
	return ksef_ctx_new(base, http, &o);
}

/* Poll the invoice's status until it is not PENDING (bounded). */
static enum ksef_outcome
status_until_final(struct ksef_ctx *ctx, const char *sref, const char *iref,
    struct wait *w)
{
	int i;

	for (i = 0; i < 200; i++) {
		wait_reset(w);
		ksef_invoice_status(ctx, sref, iref, wait_cb, w);
		if (wait_for(w, "invoice status")->outcome != KSEF_PENDING)
			break;
		loop_sleep(50);
	}
	return w->res.outcome;
}

/* Send xml into s; ACCEPTED expected.  The invoice reference.  Caller frees. */
static char *
send_ok(struct ksef_ctx *ctx, const struct record_session *s,
    const unsigned char *xml, size_t len, const char *what)
{
	struct wait w = { 0 };
	char *ref;

	ksef_invoice_send(ctx, s, xml, len, NULL, wait_cb, &w);
	ok(!w.done, "%s: no callback from inside the call", what);
	ok(wait_for(&w, what)->outcome == KSEF_ACCEPTED &&
	    w.res.reference != NULL, "%s: accepted with a reference", what);
	ref = w.res.reference;
	w.res.reference = NULL;
	wait_reset(&w);
	return ref;
}

static int
ksef_number_shape(const char *s)
{
	return s != NULL && strlen(s) == 35 && strncmp(s, NIP "-", 11) == 0 &&
	    s[19] == '-' && s[32] == '-';
}

int
main(int argc, char **argv)
{
	struct http_options ho;
	struct ksef_ctx *ctx, *bad;
	struct http *http2;
	size_t before;
	int64_t fetched, due;
	struct record_session *sess;
	struct ksef_invoice *inv;
	struct ksef_query q;
	struct wait w = { 0 }, w2 = { 0 };
	unsigned char *xml, sha[32];
	char hash[45], *iref, *iref2, *ksefno = NULL, *upo_url = NULL, *needle;
	char old_key[KSEF_SHA_B64_LEN + 1];
	size_t len;
	int saves;

	if (argc != 5) {
		fprintf(stderr, "usage: test_ksef_sim URL CA TOKEN SAMPLE\n");
		return 2;
	}
	base_url = argv[1];
	signal(SIGPIPE, SIG_IGN);
	log_init("test_ksef_sim", 1, LOG_LVL_WARN);
	if ((xml = file_read(argv[4], 1 << 20, &len)) == NULL)
		fatal("%s", argv[4]);
	ksef_sha256(xml, len, sha);
	ksef_invoice_hash(sha, hash);
	base = event_base_new();
	memset(&ho, 0, sizeof(ho));
	ho.ca_file = argv[2];
	http = http_new(base, &ho);
	ctx = ctx_make(argv[3], 5000);

	/* Groups the caller's limiter needs. */
	ok(ksef_op_group(KSEF_OP_INVOICE_SEND) == RL_GROUP_INVOICE_SEND &&
	    ksef_op_group(KSEF_OP_SESSION_INVOICES) ==
	    RL_GROUP_SESSION_INVOICE_LIST && ksef_op_group(KSEF_OP_UPO_URL) ==
	    -1, "operations name their limiter groups");

	/* Nothing without a token: auth-expired, no request. */
	ksef_session_status(ctx, "20250625-SO-2C3E6C8000-B675CF5D68-07",
	    wait_cb, &w);
	ok(wait_for(&w, "status without token")->outcome == KSEF_AUTH_EXPIRED,
	    "no access token: auth-expired without a request");
	wait_reset(&w);
	is_int(ksef_ctx_token_state(ctx, time_now_ms()), KSEF_TOKEN_NONE,
	    "token state: none");

	ksef_keys_fetch(ctx, wait_cb, &w);
	ok(wait_for(&w, "keys")->outcome == KSEF_OK && ctx->key_sym.pk &&
	    ctx->key_token.pk, "public keys fetched");
	wait_reset(&w);

	/* Two callers, one authentication. */
	ksef_authenticate(ctx, wait_cb, &w);
	ksef_token_refresh(ctx, wait_cb, &w2);
	ok(ksef_ctx_auth_busy(ctx), "authentication in flight");
	ok(wait_for(&w, "authenticate")->outcome == KSEF_OK &&
	    wait_for(&w2, "joined")->outcome == KSEF_OK,
	    "authenticated; the second caller joined it");
	is_int(ntoken_saves, 1, "one authentication, tokens saved once");
	is_int(ksef_ctx_token_state(ctx, time_now_ms()), KSEF_TOKEN_VALID,
	    "token state: valid");
	wait_reset(&w);
	wait_reset(&w2);

	ksef_token_refresh(ctx, wait_cb, &w);
	ok(wait_for(&w, "refresh")->outcome == KSEF_OK && ntoken_saves == 2,
	    "access token refreshed");
	wait_reset(&w);

	/*
	 * States from expiry times: the margin counts, but a token is not
	 * due before half its life (the margin here is 1 s).
	 */
	fetched = ctx->tok.access_expiry_ms;
	ctx->access_at_ms = time_now_ms() - 60 * 1000;
	ctx->tok.access_expiry_ms = time_now_ms() + 500;
	is_int(ksef_ctx_token_state(ctx, time_now_ms()), KSEF_TOKEN_REFRESH,
	    "access token inside the refresh margin: refresh due");
	ok(ksef_ctx_token_due(ctx, &due) && due <= time_now_ms(),
	    "... and due now");
	ctx->access_at_ms = time_now_ms();
	is_int(ksef_ctx_token_state(ctx, time_now_ms()), KSEF_TOKEN_VALID,
	    "a token living less than the margin: not due at once");
	ok(ksef_ctx_token_due(ctx, &due) && due > time_now_ms() &&
	    due <= ctx->tok.access_expiry_ms, "... but at half its life");
	ctx->access_at_ms = time_now_ms() - 300;
	ctx->tok.access_expiry_ms = time_now_ms() + 200;
	is_int(ksef_ctx_token_state(ctx, time_now_ms()), KSEF_TOKEN_REFRESH,
	    "past half its life: refresh due");
	ctx->tok.access_expiry_ms = fetched;
	ok(ksef_ctx_token_expiry(ctx) == fetched, "token expiry reported");

	/* Keys near validTo are fetched again before they are used. */
	ok(ksef_keys_fresh(ctx, time_now_ms()), "keys fresh");
	ctx->key_sym.valid_to_ms = time_now_ms() + 60 * 1000;
	ok(!ksef_keys_fresh(ctx, time_now_ms()), "keys within an hour of "
	    "validTo: stale");
	fetched = ctx->keys_fetched_ms;

	/* Session and the official FA(3) sample. */
	ksef_session_open(ctx, INV_FORM_FA3, wait_cb, &w);
	ok(wait_for(&w, "session open")->outcome == KSEF_OK &&
	    w.res.session != NULL, "online session opened");
	sess = w.res.session;
	w.res.session = NULL;
	wait_reset(&w);
	if (sess == NULL)
		fatalx("no session, cannot go on");
	ok(ctx->keys_fetched_ms > fetched && ksef_keys_fresh(ctx,
	    time_now_ms()), "stale keys fetched again by the session open");
	ok(sess->session_ref != NULL && strlen(sess->session_ref) == 36 &&
	    sess->state == SESS_ST_OPEN && sess->valid_until_ms >
	    time_now_ms(), "session: reference, open, valid until later");

	iref = send_ok(ctx, sess, xml, len, "send FA(3) sample");
	is_int(status_until_final(ctx, sess->session_ref, iref, &w),
	    KSEF_PROCESSED, "invoice processed");
	inv = w.res.invoices;
	if (inv != NULL) {
		ok(ksef_number_shape(inv->ksef_number), "KSeF number %s",
		    inv->ksef_number);
		ok(inv->acquisition_date != NULL && inv->storage_date != NULL,
		    "acquisition and storage dates");
		is_str(inv->invoice_hash, hash, "status names our hash");
		ksefno = inv->ksef_number ? xstrdup(inv->ksef_number) : NULL;
		upo_url = inv->upo_url ? xstrdup(inv->upo_url) : NULL;
	}
	wait_reset(&w);

	ksef_session_invoices(ctx, sess->session_ref, NULL, 10, 0, wait_cb,
	    &w);
	ok(wait_for(&w, "session invoices")->outcome == KSEF_OK &&
	    (inv = ksef_invoice_find_hash(&w.res, sha)) != NULL &&
	    inv->outcome == KSEF_PROCESSED && ksefno != NULL &&
	    strcmp(inv->ksef_number, ksefno) == 0,
	    "session invoice list: found by hash, processed");
	wait_reset(&w);

	needle = xasprintf("<SkrotDokumentu>%s</SkrotDokumentu>", hash);
	ksef_invoice_upo(ctx, sess->session_ref, iref, NULL, upo_url,
	    wait_cb, &w);
	ok(upo_url != NULL && wait_for(&w, "UPO link")->outcome == KSEF_OK &&
	    strstr((char *)w.res.body.data, needle) != NULL &&
	    strstr((char *)w.res.body.data, ksefno) != NULL,
	    "UPO through upoDownloadUrl names the hash and KSeF number");
	wait_reset(&w);
	ksef_invoice_upo(ctx, sess->session_ref, iref, NULL, NULL, wait_cb,
	    &w);
	ok(wait_for(&w, "UPO endpoint")->outcome == KSEF_OK &&
	    strstr((char *)w.res.body.data, needle) != NULL,
	    "UPO through the endpoint names the hash");
	wait_reset(&w);
	ksef_invoice_upo(ctx, sess->session_ref, NULL, ksefno, NULL, wait_cb,
	    &w);
	ok(wait_for(&w, "UPO by number")->outcome == KSEF_OK &&
	    strstr((char *)w.res.body.data, needle) != NULL,
	    "UPO by KSeF number names the hash");
	wait_reset(&w);
	free(needle);

	ksef_invoice_fetch(ctx, ksefno, wait_cb, &w);
	ok(wait_for(&w, "fetch")->outcome == KSEF_OK &&
	    memcmp(w.res.body_sha256, sha, 32) == 0,
	    "invoice fetched by KSeF number: same SHA-256");
	wait_reset(&w);

	memset(&q, 0, sizeof(q));
	q.from_ms = time_now_ms() - 3600 * 1000;
	q.page_size = 10;
	ksef_metadata_query(ctx, &q, wait_cb, &w);
	ok(wait_for(&w, "metadata")->outcome == KSEF_OK && w.res.ninvoices >= 1 &&
	    ksef_invoice_find_hash(&w.res, sha) != NULL,
	    "metadata query finds the invoice by hash");
	wait_reset(&w);

	/* The same invoice again: duplicate with the original number. */
	iref2 = send_ok(ctx, sess, xml, len, "send it again");
	is_int(status_until_final(ctx, sess->session_ref, iref2, &w),
	    KSEF_DUPLICATE, "second copy: duplicate");
	ok(w.res.ninvoices == 1 && ksefno != NULL &&
	    w.res.invoices[0].original_ksef_number != NULL &&
	    strcmp(w.res.invoices[0].original_ksef_number, ksefno) == 0 &&
	    strcmp(w.res.invoices[0].original_session, sess->session_ref) ==
	    0, "duplicate names the original KSeF number and session");
	wait_reset(&w);
	free(iref2);

	/* The hash taken when the invoice was received goes as invoiceHash. */
	{
		unsigned char other[32];

		ksef_invoice_send(ctx, sess, xml, len, sha, wait_cb, &w);
		ok(wait_for(&w, "stored hash")->outcome == KSEF_ACCEPTED,
		    "send with the stored hash: accepted");
		wait_reset(&w);
		memcpy(other, sha, sizeof(other));
		other[0] ^= 1;	/* the bytes have changed since */
		ksef_invoice_send(ctx, sess, xml, len, other, wait_cb, &w);
		wait_for(&w, "changed bytes");
		ok(w.res.outcome == KSEF_FATAL && w.res.code == 21403,
		    "bytes that no longer match their stored hash: refused "
		    "(21403, got %d)", w.res.code);
		wait_reset(&w);
	}

	/* Faults on the send: 503, 429, hang, reset after processing. */
	ok(sim_control("{\"rules\":[{\"group\":\"invoiceSend\",\"kind\":"
	    "\"503\",\"count\":1}]}") == 200, "fault: one 503");
	ksef_invoice_send(ctx, sess, xml, len, NULL, wait_cb, &w);
	ok(wait_for(&w, "503")->outcome == KSEF_TRANSIENT && w.res.in_doubt,
	    "503 HTML: transient, in doubt");
	wait_reset(&w);
	ok(sim_control("{\"rules\":[{\"group\":\"invoiceSend\",\"kind\":"
	    "\"429\",\"ms\":3000,\"count\":1}]}") == 200, "fault: one 429");
	ksef_invoice_send(ctx, sess, xml, len, NULL, wait_cb, &w);
	ok(wait_for(&w, "429")->outcome == KSEF_RETRY_AFTER &&
	    w.res.retry_at_ms >= time_now_ms() + 1500,
	    "429: retry after, not sooner than Retry-After");
	wait_reset(&w);
	ok(sim_control("{\"rules\":[{\"group\":\"invoiceSend\",\"kind\":"
	    "\"hang\",\"count\":1}]}") == 200, "fault: one hang");
	bad = ctx_make(argv[3], 500);
	ksef_ctx_token_set(bad, &ctx->tok);
	ksef_invoice_send(bad, sess, xml, len, NULL, wait_cb, &w);
	ok(wait_for(&w, "hang")->outcome == KSEF_TRANSIENT && w.res.in_doubt,
	    "no answer: timeout, transient, in doubt");
	wait_reset(&w);
	ksef_ctx_free(bad);

	/*
	 * In doubt for real: processed, then the connection reset.  On a
	 * fresh connection: libcurl resends a request on its own when a
	 * reused connection dies before any answer (see the report).
	 */
	ksef_session_invoices(ctx, sess->session_ref, NULL, 100, 0, wait_cb,
	    &w);
	wait_for(&w, "list before");
	before = w.res.ninvoices;
	wait_reset(&w);
	ok(sim_control("{\"rules\":[{\"group\":\"invoiceSend\",\"kind\":"
	    "\"reset-after\",\"count\":1}]}") == 200, "fault: reset after");
	http2 = http_new(base, &ho);
	bad = ksef_ctx_new(base, http2, &(struct ksef_ctx_options){
	    .base_url = base_url, .nip = NIP, .token = argv[3] });
	ksef_ctx_token_set(bad, &ctx->tok);
	ksef_invoice_send(bad, sess, xml, len, NULL, wait_cb, &w);
	wait_for(&w, "reset-after");
	ok(w.res.outcome == KSEF_TRANSIENT && w.res.in_doubt,
	    "reset after processing: transient, in doubt (%s)",
	    ksef_outcome_name(w.res.outcome));
	wait_reset(&w);
	ksef_ctx_free(bad);
	http_free(http2);
	ksef_session_invoices(ctx, sess->session_ref, NULL, 100, 0, wait_cb,
	    &w);
	wait_for(&w, "list");
	ok(w.res.outcome == KSEF_OK && w.res.ninvoices == before + 1 &&
	    w.res.invoices[before].invoice_hash != NULL &&
	    strcmp(w.res.invoices[before].invoice_hash, hash) == 0,
	    "in doubt: the session list shows KSeF has it, once (%zu -> %zu)",
	    before, w.res.ninvoices);
	wait_reset(&w);

	/* Expired tokens: auth-expired once, then a refresh works. */
	ok(sim_control("{\"expireTokens\":true}") == 200, "expire tokens");
	saves = ntoken_saves;
	ksef_session_status(ctx, sess->session_ref, wait_cb, &w);
	ok(wait_for(&w, "expired")->outcome == KSEF_AUTH_EXPIRED,
	    "expired access token: auth-expired");
	wait_reset(&w);
	ok(ksef_ctx_token_state(ctx, time_now_ms()) != KSEF_TOKEN_VALID,
	    "after a 401 the token is not taken as valid");
	ksef_session_status(ctx, sess->session_ref, wait_cb, &w);
	ok(wait_for(&w, "again")->outcome == KSEF_AUTH_EXPIRED,
	    "no second request with the dead token");
	wait_reset(&w);
	ksef_token_refresh(ctx, wait_cb, &w);
	ok(wait_for(&w, "refresh after expiry")->outcome == KSEF_OK &&
	    ntoken_saves > saves, "refresh (or re-authentication) works");
	wait_reset(&w);
	ksef_session_status(ctx, sess->session_ref, wait_cb, &w);
	ok(wait_for(&w, "status")->outcome == KSEF_OK &&
	    w.res.sess.state == KSEF_SESS_OPEN, "session status: open");
	wait_reset(&w);

	/*
	 * A late 401 for a token already replaced: the request left with the
	 * old token, the renewal came back first; the new token stays good.
	 */
	ok(sim_control("{\"expireTokens\":true,\"rules\":[{\"group\":"
	    "\"sessionMisc\",\"kind\":\"slow\",\"ms\":600,\"count\":1}]}") ==
	    200, "expire tokens; the next status answer comes late");
	ksef_session_status(ctx, sess->session_ref, wait_cb, &w);
	ksef_token_refresh(ctx, wait_cb, &w2);
	ok(wait_for(&w2, "renewal")->outcome == KSEF_OK && !w.done,
	    "renewed while the old token's request was out");
	wait_reset(&w2);
	ok(wait_for(&w, "late 401")->outcome == KSEF_AUTH_EXPIRED,
	    "the old token's request: auth-expired");
	wait_reset(&w);
	if (!ok(ksef_ctx_token_state(ctx, time_now_ms()) == KSEF_TOKEN_VALID,
	    "the late 401 did not spoil the new token")) {
		ksef_token_refresh(ctx, wait_cb, &w2);	/* for the rest */
		wait_for(&w2, "renewal after a spoilt token");
		wait_reset(&w2);
	}
	ksef_session_status(ctx, sess->session_ref, wait_cb, &w);
	ok(wait_for(&w, "status")->outcome == KSEF_OK,
	    "the new token works with no renewal in between");
	wait_reset(&w);

	/* Key rotation: 21470, keys fetched again, the retry works. */
	snprintf(old_key, sizeof(old_key), "%s", ctx->key_sym.id);
	ok(sim_control("{\"rotateKey\":true}") == 200, "rotate keys");
	ksef_session_open(ctx, INV_FORM_FA3, wait_cb, &w);
	ok(wait_for(&w, "open after rotation")->outcome == KSEF_RETRY_AFTER &&
	    w.res.retry_at_ms <= time_now_ms(),
	    "21470: retry now, not a failure");
	ok(strcmp(old_key, ctx->key_sym.id) != 0, "keys fetched again");
	wait_reset(&w);
	ksef_session_open(ctx, INV_FORM_FA3, wait_cb, &w);
	ok(wait_for(&w, "open again")->outcome == KSEF_OK && w.res.session,
	    "session opens with the new key");
	if (w.res.session != NULL) {
		iref2 = send_ok(ctx, w.res.session, xml, len,
		    "send under the new key");
		is_int(status_until_final(ctx, w.res.session->session_ref,
		    iref2, &w2), KSEF_DUPLICATE, "decrypted and processed "
		    "(a duplicate by then)");
		wait_reset(&w2);
		free(iref2);
	}
	wait_reset(&w);

	/* Close; sending afterwards: the session is gone. */
	ksef_session_close(ctx, sess->session_ref, wait_cb, &w);
	ok(wait_for(&w, "close")->outcome == KSEF_OK, "session closed");
	wait_reset(&w);
	ksef_invoice_send(ctx, sess, xml, len, NULL, wait_cb, &w);
	ok(wait_for(&w, "send after close")->outcome == KSEF_SESSION_GONE,
	    "send after close: session gone");
	wait_reset(&w);
	ksef_session_status(ctx, sess->session_ref, wait_cb, &w);
	ok(wait_for(&w, "status after close")->outcome == KSEF_OK &&
	    w.res.sess.state != KSEF_SESS_OPEN, "session status: not open");
	wait_reset(&w);

	/* A wrong KSeF token: fatal, named. */
	bad = ctx_make("20250101-EC-0000000000-0000000000-00|nip-" NIP
	    "|wrong", 5000);
	ksef_authenticate(bad, wait_cb, &w);
	wait_for(&w, "wrong token");
	ok(w.res.outcome == KSEF_FATAL && w.res.code == 450,
	    "wrong KSeF token: fatal, status 450");
	wait_reset(&w);

	/* Freed with an operation in flight: no callback, nothing leaks. */
	ksef_keys_fetch(bad, wait_cb, &w);
	ksef_ctx_free(bad);
	loop_sleep(100);
	is_int(w.calls, 0, "context freed in flight: no callback");

	record_session_free(sess);
	free(sess);
	free(iref);
	free(ksefno);
	free(upo_url);
	free(xml);
	ksef_ctx_free(ctx);
	http_free(http);
	event_base_free(base);
	return tap_done();
}
