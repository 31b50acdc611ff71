/*
 * fuzz_sim.c: libFuzzer target for ksef-sim's request handler (no socket).
 *
 * An input is an HTTP request in text form:
 *     METHOD URI\n  Header: value\n ... \n\n  body
 * Before it is handled, @ACCESS@, @REFRESH@, @AUTHTOKEN@, @AUTHREF@ and
 * @SESSION@ are replaced by live values of a context the harness logged in
 * with through the handler itself, and a body starting with "@INVOICE@\n" is
 * taken as plain invoice XML that the harness encrypts with the session key
 * and wraps in a correct send request — so the fuzzer reaches the XML and
 * duplicate processing, not only the hash checks.
 *
 * Build for fuzzing: tests/sim/fuzz.sh (clang -fsanitize=fuzzer,address).
 * In `make check`, sim_replay runs every file of tests/sim/corpus through it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "log.h"
#include "sim.h"

int	LLVMFuzzerTestOneInput(const unsigned char *, size_t);
void	fuzz_sim_cleanup(void);
int	fuzz_sim_last_status;
char	fuzz_sim_last_error[200];

#ifndef SIM_SCHEMA_DIR
#define SIM_SCHEMA_DIR	"schemas"
#endif

static struct sim *fs;
static int64_t fclock;
static char *f_access, *f_refresh, *f_authtok, *f_authref, *f_session;
static unsigned char f_key[32] = "ksef-sim fuzz harness aes key!!";
static unsigned char f_iv[16] = "fuzz harness iv";

/* Run one request; the response body (NUL-terminated) is returned in *resp. */
static int
fuzz_req(const char *method, const char *uri, const char *auth, const char *body,
    size_t len, struct sim_resp *resp)
{
	struct sim_hdr h[2] = { { "Authorization", auth }, { "Content-Type", "application/json" } };
	struct sim_req r = { method, uri, "127.0.0.1", auth ? h : h + 1, auth ? 2 : 1,
	    (const unsigned char *)body, len };

	sim_handle(fs, &r, resp, fclock++);
	sim_run_due(fs, fclock);
	buf_add(&resp->body, "", 0);
	return resp->status;
}

static char *
json_field(const char *text, const char *a, const char *b)
{
	json_t *j = json_loads(text, 0, NULL), *v = json_object_get(j, a);
	char *s;

	if (b != NULL)
		v = json_object_get(v, b);
	s = json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
	json_decref(j);
	return s;
}

static unsigned char *
oaep(EVP_PKEY *pk, const void *in, size_t inlen, size_t *outlen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);
	unsigned char *out;

	EVP_PKEY_encrypt_init(c);
	EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING);
	EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256());
	EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256());
	EVP_PKEY_encrypt(c, NULL, outlen, in, inlen);
	out = xmalloc(*outlen);
	if (EVP_PKEY_encrypt(c, out, outlen, in, inlen) <= 0)
		fatalx("fuzz: encrypt");
	EVP_PKEY_CTX_free(c);
	return out;
}

/* Log in through the handler: challenge, token, redeem, open a session. */
static void
fuzz_init(void)
{
	struct sim_conf c;
	struct sim_resp r;
	char err[300], *chal, *ts, *plain, *b64, *body, *h;
	unsigned char *enc;
	size_t elen;
	const char *dir = getenv("SIM_SCHEMA_DIR");

	log_init("fuzz_sim", 1, LOG_LVL_WARN);
	sim_conf_init(&c);
	sim_conf_set(&c, "token", "5265877635:fuzz-token|nip-5265877635|0123", err, sizeof(err));
	sim_conf_set(&c, "limits", "off", err, sizeof(err));
	sim_conf_set(&c, "processing-delay", "0", err, sizeof(err));
	sim_conf_set(&c, "auth-delay", "0", err, sizeof(err));
	sim_conf_set(&c, "session-max-invoices", "10000000", err, sizeof(err));
	sim_conf_set(&c, "schemas", dir ? dir : SIM_SCHEMA_DIR, err, sizeof(err));
	fclock = 1767225600000LL;	/* 2026-01-01 */
	if ((fs = sim_new(&c, fclock, err, sizeof(err))) == NULL)
		fatalx("fuzz: %s", err);
	sim_set_origin(fs, "https://127.0.0.1:1");

	fuzz_req("POST", "/v2/auth/challenge", NULL, "", 0, &r);
	chal = json_field((char *)r.body.data, "challenge", NULL);
	sim_resp_free(&r);
	/* timestampMs is the clock of the challenge request */
	ts = xasprintf("%lld", (long long)(fclock - 1));
	plain = xasprintf("fuzz-token|nip-5265877635|0123|%s", ts);
	enc = oaep(sim_public_key(fs, 1), plain, strlen(plain), &elen);
	b64 = sim_b64_encode(enc, elen);
	body = xasprintf("{\"challenge\":\"%s\",\"contextIdentifier\":{\"type\":\"Nip\","
	    "\"value\":\"5265877635\"},\"encryptedToken\":\"%s\"}", chal, b64);
	fuzz_req("POST", "/v2/auth/ksef-token", NULL, body, strlen(body), &r);
	f_authref = json_field((char *)r.body.data, "referenceNumber", NULL);
	f_authtok = json_field((char *)r.body.data, "authenticationToken", "token");
	sim_resp_free(&r);
	free(chal);
	free(ts);
	free(plain);
	free(enc);
	free(b64);
	free(body);
	h = xasprintf("Bearer %s", f_authtok ? f_authtok : "");
	fuzz_req("POST", "/v2/auth/token/redeem", h, "", 0, &r);
	f_access = json_field((char *)r.body.data, "accessToken", "token");
	f_refresh = json_field((char *)r.body.data, "refreshToken", "token");
	sim_resp_free(&r);
	free(h);
	if (f_access == NULL)
		fatalx("fuzz: login through the handler failed");
	enc = oaep(sim_public_key(fs, 0), f_key, 32, &elen);
	b64 = sim_b64_encode(enc, elen);
	h = sim_b64_encode(f_iv, 16);
	body = xasprintf("{\"formCode\":{\"systemCode\":\"FA (3)\",\"schemaVersion\":\"1-0E\","
	    "\"value\":\"FA\"},\"encryption\":{\"encryptedSymmetricKey\":\"%s\","
	    "\"initializationVector\":\"%s\"}}", b64, h);
	free(h);
	h = xasprintf("Bearer %s", f_access);
	fuzz_req("POST", "/v2/sessions/online", h, body, strlen(body), &r);
	f_session = json_field((char *)r.body.data, "referenceNumber", NULL);
	sim_resp_free(&r);
	free(h);
	free(enc);
	free(b64);
	free(body);
	if (f_session == NULL)
		fatalx("fuzz: session open through the handler failed");
}

/* Replace the placeholders. Caller frees. */
static char *
subst(const char *s, size_t n, size_t *outlen)
{
	static const char *const names[] = { "@ACCESS@", "@REFRESH@", "@AUTHTOKEN@",
	    "@AUTHREF@", "@SESSION@" };
	const char *vals[] = { f_access, f_refresh, f_authtok, f_authref, f_session };
	struct buf b;
	size_t i, k, l;

	buf_init(&b);
	for (i = 0; i < n; ) {
		for (k = 0; k < nitems(names); k++) {
			l = strlen(names[k]);
			if (n - i >= l && memcmp(s + i, names[k], l) == 0) {
				buf_addstr(&b, vals[k] ? vals[k] : "");
				i += l;
				break;
			}
		}
		if (k == nitems(names))
			buf_add(&b, s + i++, 1);
	}
	buf_add(&b, "", 0);
	return (char *)buf_release(&b, outlen);
}

/* Wrap plain XML into a correct send request for the harness session. Caller frees. */
static char *
invoice_body(const unsigned char *xml, size_t n, size_t *outlen)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	unsigned char *enc = xmalloc(n + 32);
	int l1 = 0, l2 = 0;
	char ph[48], eh[48], *b64, *body;

	EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), NULL, f_key, f_iv);
	EVP_EncryptUpdate(c, enc, &l1, xml, (int)n);
	EVP_EncryptFinal_ex(c, enc + l1, &l2);
	EVP_CIPHER_CTX_free(c);
	sim_sha256_b64(xml, n, ph);
	sim_sha256_b64(enc, (size_t)(l1 + l2), eh);
	b64 = sim_b64_encode(enc, (size_t)(l1 + l2));
	body = xasprintf("{\"invoiceHash\":\"%s\",\"invoiceSize\":%zu,\"encryptedInvoiceHash\":"
	    "\"%s\",\"encryptedInvoiceSize\":%d,\"encryptedInvoiceContent\":\"%s\"}", ph, n,
	    eh, l1 + l2, b64);
	free(b64);
	free(enc);
	*outlen = strlen(body);
	return body;
}

/* Checks every answer must pass, whatever the input. */
static void
fuzz_check(const struct sim_resp *r)
{
	json_t *j;

	fuzz_sim_last_error[0] = '\0';
	if (r->action == SIM_ACT_REPLY && (r->status < 200 || r->status > 599))
		snprintf(fuzz_sim_last_error, sizeof(fuzz_sim_last_error), "status %d", r->status);
	else if (r->ctype != NULL && strstr(r->ctype, "json") != NULL) {
		if ((j = json_loadb((const char *)r->body.data, r->body.len, 0, NULL)) == NULL)
			snprintf(fuzz_sim_last_error, sizeof(fuzz_sim_last_error),
			    "invalid JSON body");
		json_decref(j);
	}
	if (fuzz_sim_last_error[0] != '\0' && getenv("FUZZ_SIM_ABORT") != NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	char *text, *line, *p, *sp, *colon, *body, *wrapped = NULL;
	struct sim_hdr h[16];
	struct sim_req r;
	struct sim_resp resp;
	size_t tlen, blen, nh = 0;

	if (fs == NULL)
		fuzz_init();
	text = subst((const char *)data, size, &tlen);
	body = strstr(text, "\n\n");
	if (body != NULL) {
		*body = '\0';
		body += 2;
		blen = tlen - (size_t)(body - text);
	} else {
		body = text + tlen;
		blen = 0;
	}
	memset(&r, 0, sizeof(r));
	p = text;
	line = strsep(&p, "\n");
	if ((sp = strchr(line, ' ')) == NULL) {
		free(text);
		return 0;
	}
	*sp = '\0';
	r.method = line;
	r.uri = sp + 1;
	while (p != NULL && (line = strsep(&p, "\n")) != NULL && nh < nitems(h)) {
		if ((colon = strchr(line, ':')) == NULL)
			continue;
		*colon++ = '\0';
		while (*colon == ' ')
			colon++;
		h[nh].name = line;
		h[nh].value = colon;
		nh++;
	}
	if (blen >= 10 && memcmp(body, "@INVOICE@\n", 10) == 0) {
		wrapped = invoice_body((unsigned char *)body + 10, blen - 10, &blen);
		body = wrapped;
	}
	r.peer = "127.0.0.1";
	r.h = h;
	r.nh = nh;
	r.body = (unsigned char *)body;
	r.len = blen;
	sim_handle(fs, &r, &resp, fclock);
	fclock += 10;
	sim_run_due(fs, fclock);
	fuzz_check(&resp);
	fuzz_sim_last_status = resp.status;
	sim_resp_free(&resp);
	free(wrapped);
	free(text);
	return 0;
}

void
fuzz_sim_cleanup(void)
{
	sim_free(fs);
	fs = NULL;
	free(f_access);
	free(f_refresh);
	free(f_authtok);
	free(f_authref);
	free(f_session);
}
