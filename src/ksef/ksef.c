/*
 * ksef.c: the KSeF context and its operations over the HTTP transport:
 * public keys, online sessions, send, status, invoice lists, UPO, invoice
 * download and the metadata query.  Authentication is in ksef_auth.c.
 *
 * Every operation is a struct ksef_op on its context's list.  It sends its
 * request (or fails at once), the reply handler turns the answer into a
 * domain outcome, and ksef_op_done() runs the caller's callback from a
 * zero timer, so a callback never runs inside the call that started it.
 */
#include "config.h"

#include <sys/queue.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "util.h"
#include "ksef_int.h"

#define JSON_MAX	(8u * 1024 * 1024)	/* cap on a JSON reply */
#define XML_MAX		(16u * 1024 * 1024)	/* cap on a UPO or invoice */
#define KEYS_MARGIN_MS	(3600 * 1000)
#define POLL_MS		1000
#define AUTH_TIMEOUT_MS	(120 * 1000)

static const struct {
	const char	*name;
	int		 group;
} ksef_ops[KSEF_NOPS] = {
	[KSEF_OP_KEYS] = { "keys fetch", RL_GROUP_PUBLIC },
	[KSEF_OP_AUTHENTICATE] = { "authenticate", RL_GROUP_PUBLIC },
	[KSEF_OP_REFRESH] = { "token refresh", RL_GROUP_PUBLIC },
	[KSEF_OP_SESSION_OPEN] = { "session open", RL_GROUP_ONLINE_SESSION },
	[KSEF_OP_INVOICE_SEND] = { "invoice send", RL_GROUP_INVOICE_SEND },
	[KSEF_OP_SESSION_CLOSE] = { "session close",
	    RL_GROUP_ONLINE_SESSION },
	[KSEF_OP_SESSION_STATUS] = { "session status",
	    RL_GROUP_SESSION_MISC },
	[KSEF_OP_SESSION_INVOICES] = { "session invoices",
	    RL_GROUP_SESSION_INVOICE_LIST },
	[KSEF_OP_INVOICE_STATUS] = { "invoice status",
	    RL_GROUP_INVOICE_STATUS },
	[KSEF_OP_UPO] = { "UPO", RL_GROUP_SESSION_MISC },
	[KSEF_OP_UPO_URL] = { "UPO download", -1 },
	[KSEF_OP_INVOICE_FETCH] = { "invoice fetch",
	    RL_GROUP_INVOICE_DOWNLOAD },
	[KSEF_OP_METADATA_QUERY] = { "metadata query",
	    RL_GROUP_INVOICE_METADATA },
	[KSEF_OP_RATE_LIMITS] = { "rate limits", RL_GROUP_OTHER },
};

int
ksef_op_group(enum ksef_op_kind op)
{
	return (unsigned)op < KSEF_NOPS ? ksef_ops[op].group : -1;
}

const char *
ksef_op_name(enum ksef_op_kind op)
{
	return (unsigned)op < KSEF_NOPS ? ksef_ops[op].name : "?";
}

const char *
ksef_outcome_name(enum ksef_outcome o)
{
	static const char *const names[] = {
		"ok", "accepted", "pending", "processed", "rejected",
		"duplicate", "not found", "session gone", "retry after",
		"transient", "auth expired", "fatal"
	};

	return (unsigned)o < nitems(names) ? names[o] : "?";
}

/* ---- the context ---- */

static void
str_wipe_free(char **s)
{
	if (*s != NULL) {
		explicit_wipe(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

static void
ksef_ctx_settings(struct ksef_ctx *ctx, const struct ksef_ctx_options *o)
{
	if (o->base_url == NULL || o->nip == NULL || o->token == NULL ||
	    strlen(o->nip) != INV_NIP_LEN)
		fatalx("ksef: context options incomplete");
	free(ctx->base_url);
	ctx->base_url = xstrdup(o->base_url);
	str_wipe_free(&ctx->token);
	ctx->token = xstrdup(o->token);
	snprintf(ctx->nip, sizeof(ctx->nip), "%s", o->nip);
	ctx->connect_ms = o->connect_timeout_ms;
	ctx->total_ms = o->request_timeout_ms;
	ctx->refresh_margin_ms = o->token_refresh_margin_ms;
	ctx->poll_ms = o->poll_auth_interval_ms > 0 ?
	    o->poll_auth_interval_ms : POLL_MS;
	ctx->auth_timeout_ms = o->auth_timeout_ms > 0 ? o->auth_timeout_ms :
	    AUTH_TIMEOUT_MS;
	ctx->keys_margin_ms = o->keys_margin_ms > 0 ? o->keys_margin_ms :
	    KEYS_MARGIN_MS;
	ctx->token_cb = o->token_cb;
	ctx->token_arg = o->token_arg;
}

struct ksef_ctx *
ksef_ctx_new(struct event_base *base, struct http *http,
    const struct ksef_ctx_options *o)
{
	struct ksef_ctx *ctx = xcalloc(1, sizeof(*ctx));

	ctx->base = base;
	ctx->http = http;
	TAILQ_INIT(&ctx->ops);
	TAILQ_INIT(&ctx->waiters);
	ksef_ctx_settings(ctx, o);
	return ctx;
}

static void
ksef_tokens_drop(struct ksef_ctx *ctx)
{
	record_token_free(&ctx->tok);
	memset(&ctx->tok, 0, sizeof(ctx->tok));
	ctx->access_at_ms = ctx->refresh_at_ms = 0;
}

void
ksef_ctx_free(struct ksef_ctx *ctx)
{
	struct ksef_op *op;

	if (ctx == NULL)
		return;
	ksef_auth_waiters_free(ctx);
	while ((op = TAILQ_FIRST(&ctx->ops)) != NULL)
		ksef_op_free(op);
	ksef_keys_forget(ctx);
	ksef_tokens_drop(ctx);
	str_wipe_free(&ctx->token);
	free(ctx->base_url);
	free(ctx);
}

void
ksef_ctx_update(struct ksef_ctx *ctx, const struct ksef_ctx_options *o)
{
	int changed;

	changed = o->token == NULL || o->base_url == NULL ||
	    strcmp(o->token, ctx->token) != 0 ||
	    strcmp(o->base_url, ctx->base_url) != 0;
	ksef_ctx_settings(ctx, o);
	if (changed) {
		log_info("ksef: %s: token or URL changed, authenticating "
		    "again", ctx->nip);
		ksef_tokens_drop(ctx);
		ksef_keys_forget(ctx);
	}
}

const char *
ksef_ctx_nip(const struct ksef_ctx *ctx)
{
	return ctx->nip;
}

void
ksef_ctx_token_set(struct ksef_ctx *ctx, const struct record_token *t)
{
	ksef_tokens_drop(ctx);
	if (t->access_token != NULL)
		ctx->tok.access_token = xstrdup(t->access_token);
	if (t->refresh_token != NULL)
		ctx->tok.refresh_token = xstrdup(t->refresh_token);
	ctx->tok.access_expiry_ms = t->access_expiry_ms;
	ctx->tok.refresh_expiry_ms = t->refresh_expiry_ms;
	ctx->access_gen++;
}

/*
 * When a token that came at `at` and expires at `exp` wants renewing: the
 * margin before its expiry, but not before half its life has passed (a
 * margin as long as the life would renew it at once, again and again).
 * `at` 0 (restored) or an expiry already past on arrival (or forced by a
 * 401): the margin alone.
 */
static int64_t
tok_due(const struct ksef_ctx *ctx, int64_t at, int64_t exp)
{
	int64_t due = exp - ctx->refresh_margin_ms;

	if (at > 0 && exp > at && due < at + (exp - at) / 2)
		due = at + (exp - at) / 2;
	return due;
}

enum ksef_token_state
ksef_ctx_token_state(const struct ksef_ctx *ctx, int64_t now)
{
	if (ctx->tok.access_token != NULL && now < tok_due(ctx,
	    ctx->access_at_ms, ctx->tok.access_expiry_ms))
		return KSEF_TOKEN_VALID;
	if (ctx->tok.refresh_token != NULL && now < tok_due(ctx,
	    ctx->refresh_at_ms, ctx->tok.refresh_expiry_ms))
		return KSEF_TOKEN_REFRESH;
	return KSEF_TOKEN_NONE;
}

int
ksef_ctx_token_due(const struct ksef_ctx *ctx, int64_t *due)
{
	int64_t r;

	if (ctx->tok.access_token == NULL)
		*due = 0;	/* none, or a refresh token alone: at once */
	else
		*due = tok_due(ctx, ctx->access_at_ms,
		    ctx->tok.access_expiry_ms);
	if (ctx->tok.refresh_token != NULL) {
		r = tok_due(ctx, ctx->refresh_at_ms,
		    ctx->tok.refresh_expiry_ms);
		if (r < *due)
			*due = r;
	}
	return ctx->tok.access_token != NULL || ctx->tok.refresh_token != NULL;
}

int64_t
ksef_ctx_token_expiry(const struct ksef_ctx *ctx)
{
	return ctx->tok.access_token != NULL ? ctx->tok.access_expiry_ms : 0;
}

int
ksef_ctx_auth_busy(const struct ksef_ctx *ctx)
{
	return ctx->auth != NULL;
}

/* ---- operations ---- */

static void
ksef_op_timer_cb(int fd, short events, void *arg)
{
	struct ksef_op *op = arg;
	struct ksef_result *r = &op->res;

	if (op->cb == NULL) {		/* a timer step, not completion */
		if (op->next != NULL)
			op->next(op);
		return;
	}
	log_trace(TRACE_KSEF, "ksef: %s: %s: %s%s%s", op->ctx->nip,
	    ksef_op_name(op->kind), ksef_outcome_name(r->outcome),
	    r->reason != NULL ? ": " : "", r->reason != NULL ? r->reason : "");
	/* Off the list first: the callback may free the context. */
	TAILQ_REMOVE(&op->ctx->ops, op, entry);
	op->ctx = NULL;
	op->cb(r, op->arg);
	ksef_op_free(op);
}

struct ksef_op *
ksef_op_new(struct ksef_ctx *ctx, enum ksef_op_kind kind, ksef_cb cb,
    void *arg)
{
	struct ksef_op *op = xcalloc(1, sizeof(*op));

	op->ctx = ctx;
	op->kind = kind;
	op->done_cb = cb;
	op->arg = arg;
	buf_init(&op->res.body);
	if ((op->ev = evtimer_new(ctx->base, ksef_op_timer_cb, op)) == NULL)
		fatalx("ksef: evtimer_new");
	TAILQ_INSERT_TAIL(&ctx->ops, op, entry);
	return op;
}

void
ksef_op_free(struct ksef_op *op)
{
	if (op->ctx != NULL) {
		TAILQ_REMOVE(&op->ctx->ops, op, entry);
		if (op->req != NULL)
			http_request_cancel(op->ctx->http, op->req);
		if (op->ctx->auth == op)
			op->ctx->auth = NULL;
	}
	event_free(op->ev);
	if (op->data_free != NULL)
		op->data_free(op->data);
	ksef_result_free(&op->res);
	free(op);
}

void
ksef_op_done(struct ksef_op *op)
{
	static const struct timeval now = { 0, 0 };

	op->cb = op->done_cb;
	evtimer_add(op->ev, &now);
}

/* Run op->next after ms milliseconds (auth polls). */
void
ksef_op_later(struct ksef_op *op, int64_t ms, void (*next)(struct ksef_op *))
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	op->next = next;
	evtimer_add(op->ev, &tv);
}

static void
ksef_op_http_cb(struct http_response *r, void *arg)
{
	struct ksef_op *op = arg;

	op->req = NULL;
	op->reply(op, r);
}

/* A request for op, not started yet (headers may be added). */
static struct http_request *
ksef_op_prepare(struct ksef_op *op, int method, const char *path,
    const char *bearer, void *body, size_t len, size_t max_response)
{
	struct ksef_ctx *ctx = op->ctx;
	struct http_request *req;
	char *url, *auth;

	url = path[0] == '/' ? xasprintf("%s%s", ctx->base_url, path) :
	    xstrdup(path);
	req = http_request_new(method, url);
	free(url);
	if (path[0] == '/')
		http_request_header_add(req, "X-Error-Format",
		    "problem-details");
	if (body != NULL) {
		http_request_header_add(req, "Content-Type",
		    "application/json");
		http_request_body_take(req, body, len);
	}
	if (bearer != NULL) {
		auth = xasprintf("Bearer %s", bearer);
		http_request_header_add(req, "Authorization", auth);
		str_wipe_free(&auth);
	}
	http_request_timeouts_set(req, ctx->connect_ms, ctx->total_ms);
	http_request_max_response_set(req, max_response);
	log_trace(TRACE_KSEF, "ksef: %s: %s: %s %s", ctx->nip,
	    ksef_op_name(op->kind), http_method_name(method),
	    path[0] == '/' ? path : "(presigned URL)");
	return req;
}

static void
ksef_op_start(struct ksef_op *op, struct http_request *req,
    void (*reply)(struct ksef_op *, struct http_response *))
{
	op->reply = reply;
	op->req = req;
	http_request_start(op->ctx->http, req, ksef_op_http_cb, op);
}

void
ksef_op_request(struct ksef_op *op, int method, const char *path,
    const char *bearer, char *body, size_t max_response,
    void (*reply)(struct ksef_op *, struct http_response *))
{
	ksef_op_start(op, ksef_op_prepare(op, method, path, bearer, body,
	    body != NULL ? strlen(body) : 0, max_response), reply);
}

/*
 * Check a reply for op.  0 for a 2xx.  Otherwise the op is finished (or,
 * for KSeF's 21470 when op->rotated is set, carried on after fetching the
 * keys again) and -1 is returned: the caller just returns.
 */
int
ksef_op_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_ctx *ctx = op->ctx;

	if (ksef_reply_check(r, time_now_ms(), &op->res) == 0)
		return 0;
	/*
	 * Refresh before the next request, not after its 401 -- unless the
	 * 401 is for a token already replaced (a request that left before
	 * the renewal): the new one is good.
	 */
	if (op->res.outcome == KSEF_AUTH_EXPIRED &&
	    ctx->tok.access_token != NULL && op->bearer_gen == ctx->access_gen)
		ctx->tok.access_expiry_ms = 0;
	if (op->res.code == 21470 && op->rotated != NULL && !op->retried) {
		log_info("ksef: %s: KSeF no longer accepts our public key; "
		    "fetching keys again", ctx->nip);
		op->retried = 1;
		ksef_result_free(&op->res);
		ksef_keys_forget(ctx);
		ksef_keys_then(op, op->rotated);
		return -1;
	}
	ksef_op_done(op);
	return -1;
}

/* The access token as a bearer, or finish op with AUTH_EXPIRED. */
static const char *
ksef_op_bearer(struct ksef_op *op)
{
	struct ksef_ctx *ctx = op->ctx;

	if (ctx->tok.access_token != NULL &&
	    time_now_ms() < ctx->tok.access_expiry_ms) {
		op->bearer_gen = ctx->access_gen;
		return ctx->tok.access_token;
	}
	ksef_result_set(&op->res, KSEF_AUTH_EXPIRED, "no valid access token");
	ksef_op_done(op);
	return NULL;
}

/* A reference or KSeF number safe in a URL path, or finish op with FATAL. */
static int
ksef_op_ref_ok(struct ksef_op *op, const char *what, const char *ref)
{
	size_t i;

	if (ref != NULL && *ref != '\0' && strlen(ref) < KSEF_REF_MAX) {
		for (i = 0; ref[i] != '\0'; i++)
			if (!isalnum((unsigned char)ref[i]) &&
			    strchr("-_.", ref[i]) == NULL)
				break;
		if (ref[i] == '\0')
			return 0;
	}
	ksef_result_set(&op->res, KSEF_FATAL, "bad %s \"%s\"", what,
	    ref != NULL ? log_escape(ref, strlen(ref), 64) : "(none)");
	ksef_op_done(op);
	return -1;
}

/* Send method path (taken over) with the access token, or fail op. */
static void
ksef_op_authed(struct ksef_op *op, int method, char *path, size_t max,
    void (*reply)(struct ksef_op *, struct http_response *))
{
	const char *bearer;

	if ((bearer = ksef_op_bearer(op)) != NULL)
		ksef_op_request(op, method, path, bearer, NULL, max, reply);
	free(path);
}

/* ---- public keys ---- */

void
ksef_keys_forget(struct ksef_ctx *ctx)
{
	EVP_PKEY_free(ctx->key_token.pk);
	EVP_PKEY_free(ctx->key_sym.pk);
	memset(&ctx->key_token, 0, sizeof(ctx->key_token));
	memset(&ctx->key_sym, 0, sizeof(ctx->key_sym));
}

int
ksef_keys_fresh(const struct ksef_ctx *ctx, int64_t now)
{
	return ctx->key_token.pk != NULL && ctx->key_sym.pk != NULL &&
	    now + ctx->keys_margin_ms < ctx->key_token.valid_to_ms &&
	    now + ctx->keys_margin_ms < ctx->key_sym.valid_to_ms;
}

/*
 * Pick the certificate for `usage` the way API.md section 3 says: valid
 * now, latest validFrom; load its key into k.  -1 with err.
 */
static int
ksef_key_pick(struct ksef_cert *c, size_t n, unsigned usage, int64_t now,
    struct ksef_key *k, char *err, size_t errlen)
{
	struct ksef_cert *best = NULL;
	char id[KSEF_SHA_B64_LEN + 1];
	EVP_PKEY *pk;
	size_t i;

	for (i = 0; i < n; i++)
		if ((c[i].usage & usage) && c[i].valid_from_ms <= now &&
		    now < c[i].valid_to_ms && (best == NULL ||
		    c[i].valid_from_ms > best->valid_from_ms))
			best = &c[i];
	if (best == NULL) {
		snprintf(err, errlen, "no certificate valid now for %s",
		    usage == KSEF_USE_TOKEN ? "KsefTokenEncryption" :
		    "SymmetricKeyEncryption");
		return -1;
	}
	if ((pk = ksef_cert_pubkey(best->cert, id, err, errlen)) == NULL)
		return -1;
	EVP_PKEY_free(k->pk);
	k->pk = pk;
	/* KSeF's own name for its key wins over ours. */
	snprintf(k->id, sizeof(k->id), "%s", best->key_id != NULL ?
	    best->key_id : id);
	k->valid_to_ms = best->valid_to_ms;
	return 0;
}

static void
ksef_keys_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_ctx *ctx = op->ctx;
	struct ksef_cert *c;
	size_t n;
	int64_t now = time_now_ms();
	char err[256];

	op->rotated = NULL;
	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_keys(r->body.data, r->body.len, &c, &n, err,
	    sizeof(err)) == -1) {
		ksef_reply_garbage(&op->res, "public keys", r, err, 0);
		ksef_op_done(op);
		return;
	}
	if (ksef_key_pick(c, n, KSEF_USE_TOKEN, now, &ctx->key_token, err,
	    sizeof(err)) == -1 ||
	    ksef_key_pick(c, n, KSEF_USE_SYMMETRIC, now, &ctx->key_sym, err,
	    sizeof(err)) == -1) {
		ksef_json_keys_free(c, n);
		ksef_keys_forget(ctx);
		ksef_reply_garbage(&op->res, "public keys", r, err, 0);
		ksef_op_done(op);
		return;
	}
	ksef_json_keys_free(c, n);
	ctx->keys_fetched_ms = now;
	log_debug("ksef: %s: public keys fetched (token key %s, session key "
	    "%s)", ctx->nip, ctx->key_token.id, ctx->key_sym.id);
	op->next(op);
}

void
ksef_keys_then(struct ksef_op *op, void (*next)(struct ksef_op *))
{
	op->next = next;
	ksef_op_request(op, HTTP_GET, "/security/public-key-certificates",
	    NULL, NULL, JSON_MAX, ksef_keys_reply);
}

static void
ksef_keys_fetched(struct ksef_op *op)
{
	op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

void
ksef_keys_fetch(struct ksef_ctx *ctx, ksef_cb cb, void *arg)
{
	ksef_keys_then(ksef_op_new(ctx, KSEF_OP_KEYS, cb, arg),
	    ksef_keys_fetched);
}

/* ---- online sessions ---- */

static void
ksef_session_rotated(struct ksef_op *op)
{
	ksef_result_set(&op->res, KSEF_RETRY_AFTER, "KSeF rotated its "
	    "public key; keys fetched again");
	op->res.retry_at_ms = time_now_ms();
	ksef_op_done(op);
}

static void
ksef_session_open_reply(struct ksef_op *op, struct http_response *r)
{
	struct record_session *s = op->data;
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_reference(r->body.data, r->body.len, &s->session_ref,
	    &s->valid_until_ms, err, sizeof(err)) == -1) {
		ksef_reply_garbage(&op->res, "session open", r, err, 0);
		ksef_op_done(op);
		return;
	}
	s->state = SESS_ST_OPEN;
	s->opened_ms = time_now_ms();
	op->res.session = s;
	op->data = NULL;
	op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

static void
ksef_session_open_send(struct ksef_op *op)
{
	struct ksef_ctx *ctx = op->ctx;
	struct record_session *s = op->data;
	const char *bearer;
	char *wrapped, *iv, *body, err[256];

	if ((bearer = ksef_op_bearer(op)) == NULL)
		return;
	if ((wrapped = ksef_rsa_oaep_b64(ctx->key_sym.pk, s->aes_key,
	    sizeof(s->aes_key), err, sizeof(err))) == NULL) {
		ksef_result_set(&op->res, KSEF_FATAL, "cannot wrap the "
		    "session key: %s", err);
		ksef_op_done(op);
		return;
	}
	iv = ksef_b64_encode(s->aes_iv, sizeof(s->aes_iv));
	body = ksef_json_session_open_req(s->form, wrapped, iv,
	    ctx->key_sym.id);
	free(wrapped);
	free(iv);
	op->rotated = ksef_session_rotated;
	ksef_op_request(op, HTTP_POST, "/sessions/online", bearer, body,
	    JSON_MAX, ksef_session_open_reply);
}

static void
ksef_session_data_free(void *p)
{
	struct record_session *s = p;

	if (s != NULL) {
		record_session_free(s);
		free(s);
	}
}

void
ksef_session_open(struct ksef_ctx *ctx, enum inv_form form, ksef_cb cb,
    void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_SESSION_OPEN, cb, arg);
	struct record_session *s = xcalloc(1, sizeof(*s));

	memcpy(s->context_nip, ctx->nip, sizeof(s->context_nip));
	s->form = form;
	s->kind = SESS_KIND_ONLINE;
	s->state = SESS_ST_OPENING;
	ksef_random(s->aes_key, sizeof(s->aes_key));
	ksef_random(s->aes_iv, sizeof(s->aes_iv));
	op->data = s;
	op->data_free = ksef_session_data_free;
	if (ksef_keys_fresh(ctx, time_now_ms()))
		ksef_session_open_send(op);
	else
		ksef_keys_then(op, ksef_session_open_send);
}

static void
ksef_send_reply(struct ksef_op *op, struct http_response *r)
{
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_reference(r->body.data, r->body.len,
	    &op->res.reference, NULL, err, sizeof(err)) == -1) {
		ksef_reply_garbage(&op->res, "invoice send", r, err, 0);
		ksef_op_done(op);
		return;
	}
	op->res.outcome = KSEF_ACCEPTED;
	ksef_op_done(op);
}

void
ksef_invoice_send(struct ksef_ctx *ctx, const struct record_session *s,
    const void *xml, size_t len, const unsigned char *sha256, ksef_cb cb,
    void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_INVOICE_SEND, cb, arg);
	char hash[KSEF_SHA_B64_LEN + 1], enc_hash[KSEF_SHA_B64_LEN + 1];
	char *content, *path;
	unsigned char *enc;
	const char *bearer;
	size_t enc_len;
	struct buf b;

	if (ksef_op_ref_ok(op, "session reference", s->session_ref) == -1 ||
	    (bearer = ksef_op_bearer(op)) == NULL)
		return;
	if (len == 0) {
		ksef_result_set(&op->res, KSEF_FATAL, "empty invoice");
		ksef_op_done(op);
		return;
	}
	if (sha256 != NULL)
		EVP_EncodeBlock((unsigned char *)hash, sha256, KSEF_SHA_LEN);
	else
		ksef_sha256_b64(xml, len, hash);
	ksef_aes_encrypt(s->aes_key, s->aes_iv, xml, len, &enc, &enc_len);
	ksef_sha256_b64(enc, enc_len, enc_hash);
	content = ksef_b64_encode(enc, enc_len);
	free(enc);
	buf_init(&b);
	ksef_json_send_req(&b, hash, len, enc_hash, enc_len, content);
	free(content);
	path = xasprintf("/sessions/online/%s/invoices", s->session_ref);
	enc_len = b.len;
	ksef_op_start(op, ksef_op_prepare(op, HTTP_POST, path, bearer,
	    buf_release(&b, NULL), enc_len, JSON_MAX), ksef_send_reply);
	free(path);
}

static void
ksef_ok_reply(struct ksef_op *op, struct http_response *r)
{
	if (ksef_op_reply(op, r) == -1)
		return;
	op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

void
ksef_session_close(struct ksef_ctx *ctx, const char *ref, ksef_cb cb,
    void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_SESSION_CLOSE, cb, arg);

	if (ksef_op_ref_ok(op, "session reference", ref) == 0)
		ksef_op_authed(op, HTTP_POST, xasprintf("/sessions/online/%s/"
		    "close", ref), JSON_MAX, ksef_ok_reply);
}

static void
ksef_session_status_reply(struct ksef_op *op, struct http_response *r)
{
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_session_status(r->body.data, r->body.len,
	    &op->res.sess, err, sizeof(err)) == -1)
		ksef_reply_garbage(&op->res, "session status", r, err, 0);
	else
		op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

void
ksef_session_status(struct ksef_ctx *ctx, const char *ref, ksef_cb cb,
    void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_SESSION_STATUS, cb, arg);

	if (ksef_op_ref_ok(op, "session reference", ref) == 0)
		ksef_op_authed(op, HTTP_GET, xasprintf("/sessions/%s", ref),
		    JSON_MAX, ksef_session_status_reply);
}

static void
ksef_session_invoices_reply(struct ksef_op *op, struct http_response *r)
{
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_session_invoices(r->body.data, r->body.len,
	    &op->res.invoices, &op->res.ninvoices, &op->res.continuation,
	    err, sizeof(err)) == -1)
		ksef_reply_garbage(&op->res, "session invoices", r, err, 0);
	else
		op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

void
ksef_session_invoices(struct ksef_ctx *ctx, const char *ref,
    const char *continuation, unsigned page_size, int failed_only,
    ksef_cb cb, void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_SESSION_INVOICES, cb,
	    arg);
	struct http_request *req;
	const char *bearer;
	char *path;

	if (ksef_op_ref_ok(op, "session reference", ref) == -1 ||
	    (bearer = ksef_op_bearer(op)) == NULL)
		return;
	if (page_size < 10)
		page_size = 10;
	if (page_size > 1000)
		page_size = 1000;
	path = xasprintf("/sessions/%s/invoices%s?pageSize=%u", ref,
	    failed_only ? "/failed" : "", page_size);
	req = ksef_op_prepare(op, HTTP_GET, path, bearer, NULL, 0, JSON_MAX);
	if (continuation != NULL && *continuation != '\0')
		http_request_header_add(req, "x-continuation-token",
		    continuation);
	ksef_op_start(op, req, ksef_session_invoices_reply);
	free(path);
}

static void
ksef_invoice_status_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_result *res = &op->res;
	struct ksef_invoice *inv;
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	inv = res->invoices = xcalloc(1, sizeof(*inv));
	if (ksef_json_invoice_status(r->body.data, r->body.len, inv, err,
	    sizeof(err)) == -1) {
		ksef_reply_garbage(res, "invoice status", r, err, 0);
		ksef_op_done(op);
		return;
	}
	res->ninvoices = 1;
	res->outcome = inv->outcome;
	if (inv->outcome != KSEF_PROCESSED && inv->outcome != KSEF_PENDING) {
		res->code = inv->code;
		ksef_result_set(res, inv->outcome, "KSeF status %d: %s",
		    inv->code, inv->reason != NULL ? inv->reason :
		    "(no description)");
		if (inv->details != NULL)
			res->details = xstrdup(inv->details);
	}
	ksef_op_done(op);
}

void
ksef_invoice_status(struct ksef_ctx *ctx, const char *ref,
    const char *invoice_ref, ksef_cb cb, void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_INVOICE_STATUS, cb, arg);

	if (ksef_op_ref_ok(op, "session reference", ref) == 0 &&
	    ksef_op_ref_ok(op, "invoice reference", invoice_ref) == 0)
		ksef_op_authed(op, HTTP_GET, xasprintf("/sessions/%s/invoices/"
		    "%s", ref, invoice_ref), JSON_MAX,
		    ksef_invoice_status_reply);
}

/* An XML document (UPO, invoice): keep it, check x-ms-meta-hash. */
static void
ksef_document_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_result *res = &op->res;
	char b64[KSEF_SHA_B64_LEN + 1];
	size_t len;

	if (op->kind == KSEF_OP_UPO_URL && r->outcome == HTTP_OUT_OK &&
	    r->status >= 400 && r->status < 500 && r->status != 429) {
		/* An expired or bad presigned link: use the endpoint. */
		ksef_result_set(res, KSEF_NOT_FOUND, "UPO link answered "
		    "HTTP %ld", r->status);
		ksef_op_done(op);
		return;
	}
	if (ksef_op_reply(op, r) == -1)
		return;
	ksef_sha256(r->body.data, r->body.len, res->body_sha256);
	EVP_EncodeBlock((unsigned char *)b64, res->body_sha256,
	    KSEF_SHA_LEN);
	if (r->body.len == 0 || (r->meta_hash != NULL &&
	    strcmp(r->meta_hash, b64) != 0)) {
		ksef_reply_garbage(res, ksef_op_name(op->kind), r,
		    r->body.len == 0 ? "empty document" :
		    "x-ms-meta-hash does not match the document", 0);
		ksef_op_done(op);
		return;
	}
	res->body.data = buf_release(&r->body, &len);
	res->body.len = len;
	res->body.cap = len + 1;
	res->outcome = KSEF_OK;
	ksef_op_done(op);
}

void
ksef_invoice_upo(struct ksef_ctx *ctx, const char *ref,
    const char *invoice_ref, const char *ksef_number, const char *upo_url,
    ksef_cb cb, void *arg)
{
	struct ksef_op *op;

	if (upo_url != NULL) {
		op = ksef_op_new(ctx, KSEF_OP_UPO_URL, cb, arg);
		if (strncmp(upo_url, "https://", 8) != 0 &&
		    strncmp(upo_url, "http://", 7) != 0) {
			ksef_result_set(&op->res, KSEF_NOT_FOUND, "UPO link "
			    "is not an absolute URL");
			ksef_op_done(op);
			return;
		}
		ksef_op_request(op, HTTP_GET, upo_url, NULL, NULL, XML_MAX,
		    ksef_document_reply);
		return;
	}
	op = ksef_op_new(ctx, KSEF_OP_UPO, cb, arg);
	if (ksef_op_ref_ok(op, "session reference", ref) == -1 ||
	    (invoice_ref != NULL ? ksef_op_ref_ok(op, "invoice reference",
	    invoice_ref) : ksef_op_ref_ok(op, "KSeF number",
	    ksef_number)) == -1)
		return;
	ksef_op_authed(op, HTTP_GET, invoice_ref != NULL ?
	    xasprintf("/sessions/%s/invoices/%s/upo", ref, invoice_ref) :
	    xasprintf("/sessions/%s/invoices/ksef/%s/upo", ref, ksef_number),
	    XML_MAX, ksef_document_reply);
}

void
ksef_invoice_fetch(struct ksef_ctx *ctx, const char *ksef_number,
    ksef_cb cb, void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_INVOICE_FETCH, cb, arg);

	if (ksef_op_ref_ok(op, "KSeF number", ksef_number) == 0)
		ksef_op_authed(op, HTTP_GET, xasprintf("/invoices/ksef/%s",
		    ksef_number), XML_MAX, ksef_document_reply);
}

static void
ksef_metadata_reply(struct ksef_op *op, struct http_response *r)
{
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_metadata(r->body.data, r->body.len, &op->res.invoices,
	    &op->res.ninvoices, &op->res.has_more, &op->res.truncated, err,
	    sizeof(err)) == -1)
		ksef_reply_garbage(&op->res, "metadata query", r, err, 0);
	else
		op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

void
ksef_metadata_query(struct ksef_ctx *ctx, const struct ksef_query *q,
    ksef_cb cb, void *arg)
{
	struct ksef_op *op = ksef_op_new(ctx, KSEF_OP_METADATA_QUERY, cb,
	    arg);
	const char *bearer;
	char *path;
	unsigned size = q->page_size < 10 ? 10 : q->page_size > 250 ? 250 :
	    q->page_size;

	if ((bearer = ksef_op_bearer(op)) == NULL)
		return;
	path = xasprintf("/invoices/query/metadata?pageOffset=%u&pageSize=%u"
	    "&sortOrder=Asc", q->page_offset, size);
	ksef_op_request(op, HTTP_POST, path, bearer,
	    ksef_json_metadata_req(ctx->nip, q, time_now_ms()), JSON_MAX,
	    ksef_metadata_reply);
	free(path);
}

static void
ksef_rate_limits_reply(struct ksef_op *op, struct http_response *r)
{
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_rate_limits(r->body.data, r->body.len, op->res.limits,
	    op->res.limits_have, err, sizeof(err)) == -1)
		ksef_reply_garbage(&op->res, "rate limits", r, err, 0);
	else
		op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

void
ksef_rate_limits(struct ksef_ctx *ctx, ksef_cb cb, void *arg)
{
	ksef_op_authed(ksef_op_new(ctx, KSEF_OP_RATE_LIMITS, cb, arg),
	    HTTP_GET, xstrdup("/rate-limits"), JSON_MAX,
	    ksef_rate_limits_reply);
}

/* ---- helpers for the caller ---- */

void
ksef_invoice_hash(const unsigned char sha[INV_SHA_LEN], char out[45])
{
	EVP_EncodeBlock((unsigned char *)out, sha, INV_SHA_LEN);
}

struct ksef_invoice *
ksef_invoice_find_hash(struct ksef_result *res,
    const unsigned char sha[INV_SHA_LEN])
{
	char b64[KSEF_SHA_B64_LEN + 1];
	size_t i;

	ksef_invoice_hash(sha, b64);
	for (i = 0; i < res->ninvoices; i++)
		if (res->invoices[i].invoice_hash != NULL &&
		    strcmp(res->invoices[i].invoice_hash, b64) == 0)
			return &res->invoices[i];
	return NULL;
}
