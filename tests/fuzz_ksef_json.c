/*
 * fuzz_ksef_json.c: libFuzzer target for the KSeF reply parsers.  Every
 * input goes through every parser and through the reply classification
 * as a 200, a 400 and a 429 answer; none may crash, leak or read out of
 * bounds, and a parser that fails must leave nothing to free.
 *
 * Build for fuzzing (clang):
 *   clang -g -fsanitize=fuzzer,address,undefined -I. -Isrc \
 *     tests/fuzz_ksef_json.c libksefd.a $(pkg-config --libs jansson \
 *     libcrypto libcurl libevent) -o fuzz_ksef_json
 * make check replays tests/data/ksef/ through it (test_ksef_json).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "util.h"
#include "ksef/ksef_int.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* The classification of data as the body of an answer with `status`. */
static void
fuzz_reply(const uint8_t *data, size_t len, long status)
{
	struct http_response r;
	struct ksef_result res;

	memset(&r, 0, sizeof(r));
	memset(&res, 0, sizeof(res));
	r.outcome = HTTP_OUT_OK;
	r.status = status;
	r.error = "";
	r.retry_after_s = -1;
	r.body.data = (unsigned char *)(uintptr_t)data;
	r.body.len = len;
	(void)ksef_reply_check(&r, 0, &res);
	ksef_result_free(&res);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct ksef_cert *certs;
	struct ksef_challenge ch;
	struct ksef_tok tok;
	struct record_token rt;
	struct ksef_session_info si;
	struct ksef_invoice inv, *invs;
	struct ksef_error e;
	char err[256], *ref, *desc, *details, *cont, *s;
	size_t n;
	int32_t code;
	int64_t ms;
	int more, trunc, have[RL_NGROUPS];
	struct ratelimit_limits lim[RL_NGROUPS];

	if (ksef_json_keys(data, len, &certs, &n, err, sizeof(err)) == 0)
		ksef_json_keys_free(certs, n);
	(void)ksef_json_challenge(data, len, &ch, err, sizeof(err));
	if (ksef_json_auth_init(data, len, &ref, &tok, err, sizeof(err)) == 0) {
		free(ref);
		free(tok.token);
	}
	if (ksef_json_auth_status(data, len, &code, &desc, &details, err,
	    sizeof(err)) == 0) {
		free(desc);
		free(details);
	}
	memset(&rt, 0, sizeof(rt));
	if (ksef_json_tokens(data, len, 1, &rt, err, sizeof(err)) == 0)
		record_token_free(&rt);
	memset(&rt, 0, sizeof(rt));
	if (ksef_json_tokens(data, len, 0, &rt, err, sizeof(err)) == 0)
		record_token_free(&rt);
	if (ksef_json_reference(data, len, &ref, &ms, err, sizeof(err)) == 0)
		free(ref);
	if (ksef_json_session_status(data, len, &si, err, sizeof(err)) == 0) {
		for (n = 0; n < si.nupo; n++)
			free(si.upo_urls[n]);
		free(si.upo_urls);
	}
	if (ksef_json_invoice_status(data, len, &inv, err, sizeof(err)) == 0)
		ksef_invoice_free(&inv);
	if (ksef_json_session_invoices(data, len, &invs, &n, &cont, err,
	    sizeof(err)) == 0) {
		while (n > 0)
			ksef_invoice_free(&invs[--n]);
		free(invs);
		free(cont);
	}
	if (ksef_json_metadata(data, len, &invs, &n, &more, &trunc, err,
	    sizeof(err)) == 0) {
		while (n > 0)
			ksef_invoice_free(&invs[--n]);
		free(invs);
	}
	(void)ksef_json_rate_limits(data, len, lim, have, err, sizeof(err));
	if (ksef_json_error(data, len, &e) == 0)
		ksef_error_free(&e);
	if (len < 100) {
		s = xstrndup((const char *)data, len);
		(void)time_parse_iso(s, &ms);
		free(s);
	}
	fuzz_reply(data, len, 200);
	fuzz_reply(data, len, 400);
	fuzz_reply(data, len, 401);
	fuzz_reply(data, len, 503);
	return 0;
}
