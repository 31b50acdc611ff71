/*
 * test_ksef_json.c: the KSeF JSON codec and reply classification.  The
 * example responses of openapi.json (tests/data/ksef/) for every endpoint
 * ksefd uses; both error formats; status and transport outcomes as domain
 * outcomes; every proper prefix of every example and a table of garbage
 * bodies refused with a message, never a crash; the request builders; and
 * a replay of the fuzz target over the data directory.
 */
#include "config.h"

#include <dirent.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http.h"
#include "log.h"
#include "util.h"
#include "ksef/ksef_int.h"
#include "tap.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* A file of the data directory.  Caller frees. */
static char *
load(const char *name, size_t *len)
{
	char *path = xasprintf("%s/%s", KSEF_TEST_DATA, name);
	unsigned char *d = file_read(path, 1 << 20, len);

	if (d == NULL)
		fatal("%s", path);
	free(path);
	return (char *)d;
}

static void
test_time(void)
{
	static const struct { const char *s; int ok; int64_t ms; } t[] = {
		{ "1970-01-01T00:00:00Z", 1, 0 },
		{ "2025-07-11T12:23:56.0154302+00:00", 1, 1752236636015 },
		{ "2025-07-11T14:23:56.015+02:00", 1, 1752236636015 },
		{ "2025-07-11T12:23:56+00:00", 1, 1752236636000 },
		{ "2025-07-11T12:23:56.1Z", 1, 1752236636100 },
		{ "2024-02-29T00:00:00-0100", 1, 1709168400000 },
		{ "0001-01-01T00:00:00+00:00", 1, -62135596800000 },
		{ "2025-07-11T12:23:56", 0, 0 },	/* no offset */
		{ "2025-07-11T12:23:56.01543021Z", 0, 0 },	/* 8 digits */
		{ "2025-07-11T12:23:56.Z", 0, 0 },
		{ "2025-02-29T00:00:00Z", 0, 0 },
		{ "2025-13-01T00:00:00Z", 0, 0 },
		{ "2025-07-11 12:23:56Z", 0, 0 },
		{ "2025-07-11T24:00:00Z", 0, 0 },
		{ "2025-07-11T12:23:56+00:00x", 0, 0 },
		{ "", 0, 0 },
	};
	int64_t ms;
	size_t i;
	int rc;

	for (i = 0; i < nitems(t); i++) {
		ms = 0;
		rc = time_parse_iso(t[i].s, &ms);
		ok((rc == 0) == t[i].ok && (!t[i].ok || ms == t[i].ms),
		    "time \"%s\" %s", t[i].s, t[i].ok ? "parses" : "refused");
	}
}

static void
test_examples(void)
{
	struct ksef_cert *c;
	struct ksef_challenge ch;
	struct ksef_tok tok;
	struct record_token rt;
	struct ksef_session_info si;
	struct ksef_invoice inv, *v;
	struct ksef_result res;
	unsigned char sha[32];
	char err[256], *body, *ref, *desc, *details;
	size_t len, n;
	int32_t code;
	int64_t ms;
	int more, trunc;
	static const struct { const char *file; int code; } st[] = {
		{ "auth-status-100.json", 100 },
		{ "auth-status-200.json", 200 },
		{ "auth-status-400a.json", 400 },
		{ "auth-status-500.json", 500 },
	};

	body = load("keys.json", &len);
	ok(ksef_json_keys(body, len, &c, &n, err, sizeof(err)) == 0 &&
	    n == 2, "keys: two certificates");
	ok(c[0].usage == KSEF_USE_TOKEN && c[1].usage == KSEF_USE_SYMMETRIC,
	    "keys: usages");
	is_int(c[0].valid_to_ms, 1846931036015, "keys: validTo");
	is_str(c[0].key_id, "QIoAK/Yc3s27Z4t3SZY4Mhp8JNLH7Vl4N3lNlJAEig8=",
	    "keys: publicKeyId");
	ksef_json_keys_free(c, n);
	free(body);

	body = load("challenge.json", &len);
	ok(ksef_json_challenge(body, len, &ch, err, sizeof(err)) == 0,
	    "challenge parses");
	is_str(ch.challenge, "20250514-CR-226FB7B000-3ACF9BE4C0-10",
	    "challenge");
	is_int(ch.timestamp_ms, 1752236636015, "challenge timestampMs");
	free(body);

	body = load("auth-init.json", &len);
	ok(ksef_json_auth_init(body, len, &ref, &tok, err, sizeof(err)) == 0,
	    "ksef-token 202 parses");
	is_str(ref, "20250514-AU-2DFC46C000-3AC6D5877F-D4", "auth reference");
	ok(tok.token != NULL && strncmp(tok.token, "eyJ", 3) == 0 &&
	    tok.valid_until_ms == 1752236636015, "authenticationToken");
	free(ref);
	free(tok.token);
	free(body);

	for (n = 0; n < nitems(st); n++) {
		body = load(st[n].file, &len);
		ok(ksef_json_auth_status(body, len, &code, &desc, &details,
		    err, sizeof(err)) == 0 && code == st[n].code,
		    "auth status %s: code %d", st[n].file, st[n].code);
		if (st[n].code == 400)
			is_str(details, "Nieważny certyfikat.",
			    "auth status details");
		free(desc);
		free(details);
		free(body);
	}

	body = load("redeem.json", &len);
	memset(&rt, 0, sizeof(rt));
	ok(ksef_json_tokens(body, len, 1, &rt, err, sizeof(err)) == 0 &&
	    rt.access_token != NULL && rt.refresh_token != NULL &&
	    rt.refresh_expiry_ms == 1752236636015, "redeem: both tokens");
	record_token_free(&rt);
	free(body);
	body = load("refresh.json", &len);
	memset(&rt, 0, sizeof(rt));
	ok(ksef_json_tokens(body, len, 0, &rt, err, sizeof(err)) == 0 &&
	    rt.access_token != NULL && rt.refresh_token == NULL,
	    "refresh: access token");
	record_token_free(&rt);
	ok(ksef_json_tokens(body, len, 1, &rt, err, sizeof(err)) == -1 &&
	    strstr(err, "refreshToken: missing") != NULL,
	    "refresh reply is not a redeem reply: %s", err);
	free(body);

	body = load("session-open.json", &len);
	ok(ksef_json_reference(body, len, &ref, &ms, err, sizeof(err)) == 0 &&
	    strcmp(ref, "20250625-SO-2C3E6C8000-B675CF5D68-07") == 0 &&
	    ms == 1752236636015, "session open: reference, validUntil");
	free(ref);
	free(body);
	body = load("send.json", &len);
	ok(ksef_json_reference(body, len, &ref, NULL, err, sizeof(err)) == 0 &&
	    strcmp(ref, "20250625-EE-319D7EE000-B67F415CDC-2C") == 0,
	    "send: invoice reference");
	free(ref);
	ok(ksef_json_reference(body, len, &ref, &ms, err, sizeof(err)) == -1,
	    "send reply has no validUntil: %s", err);
	free(body);

	body = load("session-status.json", &len);
	ok(ksef_json_session_status(body, len, &si, err, sizeof(err)) == 0 &&
	    si.state == KSEF_SESS_DONE && si.invoices == 10 &&
	    si.succeeded == 8 && si.failed == 2 && si.nupo == 1 &&
	    strncmp(si.upo_urls[0], "https://", 8) == 0,
	    "session status: done, counts, one UPO page");
	for (n = 0; n < si.nupo; n++)
		free(si.upo_urls[n]);
	free(si.upo_urls);
	free(body);

	body = load("session-invoices.json", &len);
	memset(&res, 0, sizeof(res));
	ok(ksef_json_session_invoices(body, len, &res.invoices, &res.ninvoices,
	    &res.continuation, err, sizeof(err)) == 0 && res.ninvoices == 2 &&
	    res.continuation != NULL, "session invoices: two and a "
	    "continuation token");
	v = res.invoices;
	ok(v[0].outcome == KSEF_PROCESSED && strcmp(v[0].ksef_number,
	    "5265877635-20250626-010080DD2B5E-26") == 0 &&
	    v[0].upo_url != NULL && v[0].acquisition_date != NULL &&
	    v[0].storage_date != NULL, "first processed, with UPO link");
	ok(v[1].outcome == KSEF_DUPLICATE && v[1].code == 440 &&
	    strcmp(v[1].original_ksef_number,
	    "5265877635-20250626-010080DD2B5E-26") == 0 &&
	    strcmp(v[1].original_session,
	    "20250626-SO-2F14610000-242991F8C9-B4") == 0,
	    "second duplicate, with the original number and session");
	ksef_b64_decode("mkht+3m5trnfxlTYhq3QFn74LkEO69MFNlsMAkCDSPA=", 44,
	    (unsigned char **)&desc, &n);
	memcpy(sha, desc, 32);
	free(desc);
	ok(ksef_invoice_find_hash(&res, sha) == &v[0],
	    "find by invoice hash");
	sha[0] ^= 1;
	ok(ksef_invoice_find_hash(&res, sha) == NULL, "other hash not found");
	ksef_result_free(&res);
	free(body);

	body = load("invoice-status.json", &len);
	ok(ksef_json_invoice_status(body, len, &inv, err, sizeof(err)) == 0 &&
	    inv.outcome == KSEF_DUPLICATE && inv.invoice_hash == NULL &&
	    inv.details != NULL, "invoice status: duplicate");
	ksef_invoice_free(&inv);
	free(body);

	body = load("metadata.json", &len);
	ok(ksef_json_metadata(body, len, &v, &n, &more, &trunc, err,
	    sizeof(err)) == 0 && n == 2 && !more && !trunc &&
	    strcmp(v[0].ksef_number, "5555555555-20250828-010080615740-E4") ==
	    0 && v[0].invoice_hash != NULL, "metadata: two invoices");
	while (n > 0)
		ksef_invoice_free(&v[--n]);
	free(v);
	free(body);
}

/* GET /rate-limits: the openapi example, partial and unknown groups, garbage. */
static void
test_rate_limits(void)
{
	static const struct { const char *body, *why; } bad[] = {
		{ "{}", "none of the known" },
		{ "{\"future\":{\"perSecond\":1}}", "none of the known" },
		{ "[]", "expected an object" },
		{ "<html>503</html>", "not JSON" },
		{ "{\"invoiceSend\":5}", "body.invoiceSend: expected an object" },
		{ "{\"invoiceSend\":{\"perSecond\":3,\"perMinute\":9}}",
		    "body.invoiceSend.perHour: missing" },
		{ "{\"other\":{\"perSecond\":-1,\"perMinute\":9,"
		    "\"perHour\":9}}", "body.other.perSecond: -1 not in" },
		{ "{\"other\":{\"perSecond\":3,\"perMinute\":10000001,"
		    "\"perHour\":9}}", "body.other.perMinute: 10000001 not in" },
		{ "{\"other\":{\"perSecond\":\"3\",\"perMinute\":9,"
		    "\"perHour\":9}}", "perSecond: expected an integer" },
		{ "{\"other\":{\"perSecond\":1.5,\"perMinute\":9,"
		    "\"perHour\":9}}", "perSecond: expected an integer" },
		{ "{\"invoiceSend\":{\"perSecond\":3,\"perMinute\":9,"
		    "\"perHour\":9},\"invoiceSend\":{\"perSecond\":30,"
		    "\"perMinute\":90,\"perHour\":90}}", "duplicate" },
		{ "{\"invoiceSend\":{\"perSecond\":3,\"perMinute\":9,"
		    "\"perHour\":54},\"other\":[]}",
		    "body.other: expected an object" },
	};
	struct ratelimit_limits lim[RL_NGROUPS], want;
	int have[RL_NGROUPS], g, n, same;
	char err[256], *body;
	size_t i, len;
	const char *partial = "{\"invoiceSend\":{\"perSecond\":3,"
	    "\"perMinute\":9,\"perHour\":54,\"perDay\":1},\"sessionList\":"
	    "null,\"nightly\":{\"perSecond\":\"x\"},\"public\":"
	    "{\"perSecond\":1,\"perMinute\":1,\"perHour\":1}}";

	body = load("rate-limits.json", &len);
	memset(lim, 0xff, sizeof(lim));
	ok(ksef_json_rate_limits(body, len, lim, have, err, sizeof(err)) == 0,
	    "rate limits: the openapi example parses");
	for (g = n = same = 0; g < RL_NGROUPS; g++) {
		n += have[g];
		ratelimit_limits_default(g, &want);
		if (have[g] && memcmp(lim[g].max, want.max,
		    sizeof(want.max)) == 0 && lim[g].window_ms[0] == 0)
			same++;
	}
	is_int(n, RL_NGROUPS - 1, "rate limits: every group but public");
	is_int(same, RL_NGROUPS - 1, "rate limits: the example equals the "
	    "official defaults (API.md section 10), windows left to the "
	    "caller");
	ok(!have[RL_GROUP_PUBLIC], "rate limits: public is not reported");
	free(body);

	ok(ksef_json_rate_limits(partial, strlen(partial), lim, have, err,
	    sizeof(err)) == 0, "rate limits: partial, unknown groups and "
	    "members ignored");
	for (g = n = 0; g < RL_NGROUPS; g++)
		n += have[g];
	ok(n == 1 && have[RL_GROUP_INVOICE_SEND] &&
	    lim[RL_GROUP_INVOICE_SEND].max[RL_WIN_SEC] == 3 &&
	    lim[RL_GROUP_INVOICE_SEND].max[RL_WIN_MIN] == 9 &&
	    lim[RL_GROUP_INVOICE_SEND].max[RL_WIN_HOUR] == 54,
	    "rate limits: only invoiceSend set, 3/9/54");

	for (i = 0; i < nitems(bad); i++) {
		memset(lim, 0x5a, sizeof(lim));
		memset(have, 0x5a, sizeof(have));
		err[0] = '\0';
		n = ksef_json_rate_limits(bad[i].body, strlen(bad[i].body), lim,
		    have, err, sizeof(err));
		for (g = same = 0; g < RL_NGROUPS; g++)
			same += have[g] == 0 && lim[g].max[0] == 0x5a5a5a5a;
		ok(n == -1 && strstr(err, bad[i].why) != NULL &&
		    same == RL_NGROUPS, "rate limits garbage %zu refused, "
		    "nothing set: %s", i, err);
	}
}

/* A reply of status with the body of a data file (or literal text). */
static void
reply_init(struct http_response *r, long status, const char *body)
{
	memset(r, 0, sizeof(*r));
	r->outcome = HTTP_OUT_OK;
	r->status = status;
	r->error = "";
	r->retry_after_s = -1;
	buf_init(&r->body);
	if (body != NULL)
		buf_addstr(&r->body, body);
}

static void
test_replies(void)
{
	static const struct {
		long status;
		const char *file, *text;
		enum ksef_outcome o;
		int32_t code;
		int in_doubt;
	} t[] = {
		{ 200, NULL, "{}", (enum ksef_outcome)-1, 0, 0 },
		{ 202, NULL, "{}", (enum ksef_outcome)-1, 0, 0 },
		{ 204, NULL, "", (enum ksef_outcome)-1, 0, 0 },
		{ 400, "error-legacy.json", NULL, KSEF_FATAL, 21405, 0 },
		{ 400, "error-problem.json", NULL, KSEF_SESSION_GONE, 21173, 0 },
		{ 400, NULL, "{\"exception\":{\"exceptionDetailList\":[{"
		    "\"exceptionCode\":21470,\"exceptionDescription\":\"k\"}]}}",
		    KSEF_FATAL, 21470, 0 },
		{ 400, NULL, "{\"title\":\"Bad Request\",\"status\":400,"
		    "\"errors\":[{\"code\":21164,\"description\":\"none\"}]}",
		    KSEF_NOT_FOUND, 21164, 0 },
		{ 400, NULL, "{\"title\":\"Bad Request\",\"status\":400,"
		    "\"errors\":[{\"code\":21165,\"description\":\"later\"}]}",
		    KSEF_TRANSIENT, 21165, 1 },
		{ 400, NULL, "<html><body>Bad gateway</body></html>",
		    KSEF_TRANSIENT, 0, 1 },
		{ 400, NULL, "{\"exception\":", KSEF_TRANSIENT, 0, 1 },
		{ 401, "error-401.json", NULL, KSEF_AUTH_EXPIRED, 0, 0 },
		{ 401, NULL, "", KSEF_AUTH_EXPIRED, 0, 0 },
		{ 403, "error-403.json", NULL, KSEF_FATAL, 0, 0 },
		{ 410, "error-410.json", NULL, KSEF_NOT_FOUND, 0, 0 },
		{ 429, "error-429-legacy.json", NULL, KSEF_RETRY_AFTER, 0, 0 },
		{ 500, NULL, "{}", KSEF_TRANSIENT, 0, 1 },
		{ 503, NULL, "<html>Service Unavailable</html>",
		    KSEF_TRANSIENT, 0, 1 },
		{ 404, NULL, "", KSEF_FATAL, 0, 0 },
		{ 302, NULL, "", KSEF_TRANSIENT, 0, 1 },
	};
	struct http_response r;
	struct ksef_result res;
	size_t i, len;
	char *body, logbuf[4096];
	FILE *logf;
	int rc, saved;

	for (i = 0; i < nitems(t); i++) {
		body = t[i].file != NULL ? load(t[i].file, &len) : NULL;
		reply_init(&r, t[i].status, body != NULL ? body : t[i].text);
		free(body);
		memset(&res, 0, sizeof(res));
		rc = ksef_reply_check(&r, 1000, &res);
		if ((int)t[i].o == -1)
			ok(rc == 0, "HTTP %ld: success", t[i].status);
		else
			ok(rc == -1 && res.outcome == t[i].o &&
			    res.code == t[i].code &&
			    res.in_doubt == t[i].in_doubt && res.reason != NULL,
			    "HTTP %ld %s: %s (%s)", t[i].status, t[i].file ?
			    t[i].file : "", ksef_outcome_name(t[i].o),
			    res.reason ? res.reason : "");
		if (t[i].file != NULL && strcmp(t[i].file,
		    "error-legacy.json") == 0)
			is_str(res.details, "invoiceHash: pole wymagane",
			    "legacy error details");
		if (t[i].file != NULL && strcmp(t[i].file,
		    "error-problem.json") == 0)
			is_str(res.details, "20250626-SO-2F14610000-242991F8C9-B4",
			    "problem error details");
		if (t[i].file != NULL && strcmp(t[i].file,
		    "error-403.json") == 0)
			ok(strstr(res.reason, "missing-permissions") != NULL,
			    "403 reason code in the reason");
		ksef_result_free(&res);
		buf_free(&r.body);
	}

	/* Retry-After: taken as given, never shortened; 60 s when absent. */
	reply_init(&r, 429, "");
	r.retry_after_s = 3600;
	memset(&res, 0, sizeof(res));
	ksef_reply_check(&r, 5000, &res);
	ok(res.outcome == KSEF_RETRY_AFTER && res.retry_at_ms == 5000 +
	    3600 * 1000, "429 Retry-After 3600 s: retry at now + 3600 s");
	ksef_result_free(&res);
	r.retry_after_s = -1;
	ksef_reply_check(&r, 5000, &res);
	ok(res.retry_at_ms == 65000, "429 without Retry-After: 60 s");
	ksef_result_free(&res);

	/* Transport outcomes. */
	r.outcome = HTTP_OUT_TIMEOUT;
	r.sent = 1;
	r.error = "Operation timed out";
	ksef_reply_check(&r, 0, &res);
	ok(res.outcome == KSEF_TRANSIENT && res.in_doubt,
	    "timeout after sending: transient, in doubt");
	ksef_result_free(&res);
	r.outcome = HTTP_OUT_CONNECT;
	ksef_reply_check(&r, 0, &res);
	ok(res.outcome == KSEF_TRANSIENT && !res.in_doubt,
	    "no connection: transient, not in doubt");
	ksef_result_free(&res);
	r.outcome = HTTP_OUT_RECV;
	r.sent = 0;
	ksef_reply_check(&r, 0, &res);
	ok(res.outcome == KSEF_TRANSIENT && !res.in_doubt,
	    "reset before the request left: not in doubt");
	ksef_result_free(&res);
	r.outcome = HTTP_OUT_TOO_LARGE;
	ksef_reply_check(&r, 0, &res);
	ok(res.outcome == KSEF_TRANSIENT, "huge body: transient");
	ksef_result_free(&res);
	r.outcome = HTTP_OUT_REFUSED;
	ksef_reply_check(&r, 0, &res);
	ok(res.outcome == KSEF_FATAL, "refused URL: fatal");
	ksef_result_free(&res);
	buf_free(&r.body);

	/* A 2xx with garbage: transient, logged; a token body is not. */
	reply_init(&r, 200, "{\"accessToken\":{\"token\":\"SECRET-JWT\"}}");
	fflush(stderr);
	saved = dup(2);
	if ((logf = tmpfile()) == NULL || dup2(fileno(logf), 2) == -1)
		fatal("tmpfile");
	ksef_reply_garbage(&res, "redeem", &r, "validUntil missing", 1);
	ksef_result_free(&res);
	ksef_reply_garbage(&res, "test", &r, "not JSON", 0);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	ok(res.outcome == KSEF_TRANSIENT && strstr(res.reason, "not JSON"),
	    "2xx garbage: transient");
	rewind(logf);
	len = fread(logbuf, 1, sizeof(logbuf) - 1, logf);
	logbuf[len] = '\0';
	fclose(logf);
	ok(strstr(logbuf, "redeem: unusable reply") != NULL &&
	    strstr(logbuf, "not shown") != NULL, "garbage logged");
	/* The first mention of the token must be in the second line. */
	ok(strstr(logbuf, "SECRET-JWT") != NULL && strstr(logbuf,
	    "SECRET-JWT") > strstr(logbuf, "test: unusable"),
	    "a body that may hold a token is not logged; others are");
	ksef_result_free(&res);
	buf_free(&r.body);
}

/* Run every parser on data; 1 when none accepted it. */
static int
all_refuse(const char *data, size_t len, char *why, size_t whylen)
{
	struct ksef_cert *c;
	struct ksef_challenge ch;
	struct ksef_tok tok;
	struct record_token rt;
	struct ksef_session_info si;
	struct ksef_invoice inv, *v;
	char err[256], *ref, *desc, *det, *cont;
	size_t n;
	int32_t code;
	int64_t ms;
	int more, trunc, accepted = 0;
	struct ratelimit_limits lim[RL_NGROUPS];
	int have[RL_NGROUPS];

	memset(&rt, 0, sizeof(rt));
	err[0] = '\0';
	if (ksef_json_keys(data, len, &c, &n, err, sizeof(err)) == 0) {
		ksef_json_keys_free(c, n);
		accepted++;
	}
	snprintf(why, whylen, "%s", err);
	accepted += ksef_json_challenge(data, len, &ch, err, sizeof(err)) == 0;
	if (ksef_json_auth_init(data, len, &ref, &tok, err, sizeof(err)) == 0) {
		free(ref);
		free(tok.token);
		accepted++;
	}
	if (ksef_json_auth_status(data, len, &code, &desc, &det, err,
	    sizeof(err)) == 0) {
		free(desc);
		free(det);
		accepted++;
	}
	if (ksef_json_tokens(data, len, 0, &rt, err, sizeof(err)) == 0) {
		record_token_free(&rt);
		accepted++;
	}
	if (ksef_json_reference(data, len, &ref, &ms, err, sizeof(err)) == 0) {
		free(ref);
		accepted++;
	}
	if (ksef_json_session_status(data, len, &si, err, sizeof(err)) == 0) {
		for (n = 0; n < si.nupo; n++)
			free(si.upo_urls[n]);
		free(si.upo_urls);
		accepted++;
	}
	if (ksef_json_invoice_status(data, len, &inv, err, sizeof(err)) == 0) {
		ksef_invoice_free(&inv);
		accepted++;
	}
	if (ksef_json_session_invoices(data, len, &v, &n, &cont, err,
	    sizeof(err)) == 0) {
		while (n > 0)
			ksef_invoice_free(&v[--n]);
		free(v);
		free(cont);
		accepted++;
	}
	if (ksef_json_metadata(data, len, &v, &n, &more, &trunc, err,
	    sizeof(err)) == 0) {
		while (n > 0)
			ksef_invoice_free(&v[--n]);
		free(v);
		accepted++;
	}
	accepted += ksef_json_rate_limits(data, len, lim, have, err,
	    sizeof(err)) == 0;
	return accepted == 0;
}

static void
test_garbage(void)
{
	static const char *const files[] = { "keys.json", "challenge.json",
	    "auth-init.json", "auth-status-200.json", "redeem.json",
	    "session-open.json", "send.json", "session-status.json",
	    "session-invoices.json", "invoice-status.json", "metadata.json",
	    "rate-limits.json" };
	static const char *const bad[] = {
		"", " ", "{", "}", "[]", "null", "true", "0", "\"x\"",
		"<html><body>503 Service Unavailable</body></html>",
		"{\"referenceNumber\":5,\"validUntil\":\"2025-01-01T00:00:00Z\"}",
		"{\"referenceNumber\":\"a/b\",\"validUntil\":\"2025-01-01T00:00:00Z\"}",
		"{\"referenceNumber\":\"\",\"validUntil\":\"2025-01-01T00:00:00Z\"}",
		"{\"referenceNumber\":\"X\",\"validUntil\":\"yesterday\"}",
		"{\"referenceNumber\":\"X\",\"referenceNumber\":\"Y\","
		    "\"validUntil\":\"2025-01-01T00:00:00Z\"}",
		"{\"challenge\":\"x\",\"timestampMs\":-1}",
		"{\"challenge\":\"x\",\"timestampMs\":1e400}",
		"{\"challenge\":\"x\",\"timestampMs\":\"1\"}",
		"{\"status\":{\"code\":\"200\"}}",
		"{\"status\":{\"code\":200,\"details\":[1]}}",
		"{\"status\":{\"code\":99999999}}",
		"{\"invoices\":[{\"referenceNumber\":\"A\",\"status\":{\"code\":200}}]}",
		"{\"invoices\":[{\"referenceNumber\":\"A\",\"invoiceHash\":\"x\","
		    "\"status\":{\"code\":100}}]}",
		"{\"invoices\":{}}",
		"{\"accessToken\":{\"token\":\"a b\",\"validUntil\":"
		    "\"2025-01-01T00:00:00Z\"}}",
		"{\"accessToken\":{\"token\":\"a\\u0000b\",\"validUntil\":"
		    "\"2025-01-01T00:00:00Z\"}}",
		"{\"referenceNumber\":\"\xff\xfe\",\"validUntil\":"
		    "\"2025-01-01T00:00:00Z\"}",
		"[{\"certificate\":\"x\",\"validFrom\":\"2025-01-01T00:00:00Z\","
		    "\"validTo\":\"2025-01-01T00:00:00Z\",\"usage\":[7]}]",
	};
	char why[256], *body, *s;
	size_t i, len, cut, bad_cuts;
	struct buf b;

	for (i = 0; i < nitems(bad); i++)
		ok(all_refuse(bad[i], strlen(bad[i]), why, sizeof(why)),
		    "garbage %zu refused by every parser (%s)", i, why);

	/* Deep nesting and a huge string. */
	buf_init(&b);
	for (i = 0; i < 100000; i++)
		buf_addstr(&b, "[");
	ok(all_refuse((char *)b.data, b.len, why, sizeof(why)),
	    "100000 nested arrays refused");
	buf_reset(&b);
	buf_addstr(&b, "{\"referenceNumber\":\"");
	for (i = 0; i < 1000000; i++)
		buf_addstr(&b, "A");
	buf_addstr(&b, "\",\"validUntil\":\"2025-01-01T00:00:00Z\"}");
	ok(all_refuse((char *)b.data, b.len, why, sizeof(why)),
	    "a 1 MB reference refused: %s", why);
	buf_free(&b);

	/* Every proper prefix of every example: refused. */
	for (i = 0; i < nitems(files); i++) {
		body = load(files[i], &len);
		bad_cuts = 0;
		for (cut = 0; cut < len; cut++) {
			s = xstrndup(body, cut);
			if (!all_refuse(s, cut, why, sizeof(why)) &&
			    strspn(body + cut, " \r\n\t") != len - cut)
				bad_cuts++;
			free(s);
		}
		ok(bad_cuts == 0, "%s: all %zu truncations refused", files[i],
		    len);
		free(body);
	}
}

static void
test_builders(void)
{
	struct ksef_query q = { 0, 86400000, "FA/1", 0, 10 };
	json_t *v;
	struct buf b;
	char *s;

	s = ksef_json_ksef_token_req("20250514-CR-226FB7B000-3ACF9BE4C0-10",
	    "5265877635", "ENC==", "KEYID=");
	v = json_loads(s, 0, NULL);
	ok(v != NULL && strcmp(json_string_value(json_object_get(v,
	    "challenge")), "20250514-CR-226FB7B000-3ACF9BE4C0-10") == 0 &&
	    strcmp(json_string_value(json_object_get(json_object_get(v,
	    "contextIdentifier"), "type")), "Nip") == 0 &&
	    strcmp(json_string_value(json_object_get(json_object_get(v,
	    "contextIdentifier"), "value")), "5265877635") == 0 &&
	    strcmp(json_string_value(json_object_get(v, "encryptedToken")),
	    "ENC==") == 0 && strcmp(json_string_value(json_object_get(v,
	    "publicKeyId")), "KEYID=") == 0, "ksef-token request: %s", s);
	json_decref(v);
	free(s);

	s = ksef_json_session_open_req(INV_FORM_FA3, "W==", "IV==", NULL);
	is_str(s, "{\"formCode\":{\"systemCode\":\"FA (3)\",\"schemaVersion\":"
	    "\"1-0E\",\"value\":\"FA\"},\"encryption\":{\"encryptedSymmetricKey"
	    "\":\"W==\",\"initializationVector\":\"IV==\"}}",
	    "session open request, FA (3)");
	free(s);
	s = ksef_json_session_open_req(INV_FORM_FA2, "W==", "IV==", "K=");
	ok(strstr(s, "\"FA (2)\"") != NULL && strstr(s,
	    "\"publicKeyId\":\"K=\"") != NULL, "session open request, FA (2) "
	    "with key id");
	free(s);

	buf_init(&b);
	ksef_json_send_req(&b, "H=", 6480, "E=", 6496, "QUJD");
	v = json_loadb((char *)b.data, b.len, 0, NULL);
	ok(v != NULL && json_integer_value(json_object_get(v,
	    "invoiceSize")) == 6480 && json_integer_value(json_object_get(v,
	    "encryptedInvoiceSize")) == 6496 &&
	    strcmp(json_string_value(json_object_get(v,
	    "encryptedInvoiceContent")), "QUJD") == 0 &&
	    json_is_false(json_object_get(v, "offlineMode")),
	    "send request is JSON with the sizes");
	json_decref(v);
	buf_free(&b);

	s = ksef_json_metadata_req("5265877635", &q, 0);
	v = json_loads(s, 0, NULL);
	ok(v != NULL && strcmp(json_string_value(json_object_get(v,
	    "subjectType")), "Subject1") == 0 &&
	    strcmp(json_string_value(json_object_get(json_object_get(v,
	    "dateRange"), "to")), "1970-01-02T00:00:00.000Z") == 0 &&
	    strcmp(json_string_value(json_object_get(v, "invoiceNumber")),
	    "FA/1") == 0, "metadata request: %s", s);
	json_decref(v);
	free(s);
}

/* The fuzz target over every file of the data directory and its corpus. */
static void
test_replay(void)
{
	static const char *const dirs[] = { "", "corpus" };
	struct dirent *de;
	unsigned char *d;
	char *dir, *path;
	size_t i, len, n = 0;
	DIR *dp;

	for (i = 0; i < nitems(dirs); i++) {
		dir = xasprintf("%s/%s", KSEF_TEST_DATA, dirs[i]);
		if ((dp = opendir(dir)) == NULL)
			fatal("%s", dir);
		while ((de = readdir(dp)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			path = xasprintf("%s/%s", dir, de->d_name);
			if ((d = file_read(path, 1 << 20, &len)) != NULL) {
				LLVMFuzzerTestOneInput(d, len);
				free(d);
				n++;
			}
			free(path);
		}
		closedir(dp);
		free(dir);
	}
	ok(n >= 20, "fuzz target replayed over %zu files", n);
}

int
main(void)
{
	log_init("test_ksef_json", 1, LOG_LVL_WARN);
	test_time();
	test_examples();
	test_rate_limits();
	test_replies();
	test_garbage();
	test_builders();
	test_replay();
	return tap_done();
}
