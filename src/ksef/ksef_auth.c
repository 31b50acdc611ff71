/*
 * ksef_auth.c: authentication with a KSeF token (API.md section 4) and the
 * access-token refresh.  One procedure at a time per context: it is a
 * single operation (ctx->auth) and every caller that asks meanwhile waits
 * for its outcome (ctx->waiters).  All its requests are in the public group.
 *
 *   keys (when stale) -> POST /auth/challenge -> POST /auth/ksef-token
 *   with RSA-OAEP("token|timestampMs") -> GET /auth/{ref} every poll
 *   interval until not 100 -> POST /auth/token/redeem
 *
 * A refresh is POST /auth/token/refresh with the refresh token; when KSeF
 * refuses it (401, 21301, unknown) the same operation authenticates from
 * scratch, once.
 */
#include "config.h"

#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "util.h"
#include "ksef_int.h"

#define AUTH_JSON_MAX	(1024 * 1024)

struct ksef_auth {
	char		*ref;		/* auth operation reference */
	struct ksef_tok	 at;		/* authenticationToken (secret) */
	int64_t		 deadline_ms;
	int		 fell_back;	/* refresh refused: authenticating */
};

static void	auth_full(struct ksef_op *);

static void
auth_state_free(void *p)
{
	struct ksef_auth *a = p;

	free(a->ref);
	if (a->at.token != NULL) {
		explicit_wipe(a->at.token, strlen(a->at.token));
		free(a->at.token);
	}
	free(a);
}

/* Give the outcome of the procedure to everyone who waited for it. */
static void
auth_fanout_cb(struct ksef_result *res, void *arg)
{
	struct ksef_ctx *ctx = arg;
	struct ksef_waiters list;
	struct ksef_waiter *w;

	ctx->auth = NULL;
	TAILQ_INIT(&list);
	TAILQ_CONCAT(&list, &ctx->waiters, entry);
	while ((w = TAILQ_FIRST(&list)) != NULL) {
		TAILQ_REMOVE(&list, w, entry);
		w->cb(res, w->arg);
		free(w);
	}
}

void
ksef_auth_waiters_free(struct ksef_ctx *ctx)
{
	struct ksef_waiter *w;

	while ((w = TAILQ_FIRST(&ctx->waiters)) != NULL) {
		TAILQ_REMOVE(&ctx->waiters, w, entry);
		free(w);
	}
}

/* The new tokens of a redeem or refresh reply into the context. */
static void
auth_tokens_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_ctx *ctx = op->ctx;
	struct record_token t;
	int full = op->kind == KSEF_OP_AUTHENTICATE;
	char err[256];

	memset(&t, 0, sizeof(t));
	if (ksef_json_tokens(r->body.data, r->body.len, full, &t, err,
	    sizeof(err)) == -1) {
		ksef_reply_garbage(&op->res, ksef_op_name(op->kind), r, err, 1);
		ksef_op_done(op);
		return;
	}
	if (full) {
		record_token_free(&ctx->tok);
		ctx->tok = t;
		ctx->refresh_at_ms = time_now_ms();
	} else {
		if (ctx->tok.access_token != NULL) {
			explicit_wipe(ctx->tok.access_token,
			    strlen(ctx->tok.access_token));
			free(ctx->tok.access_token);
		}
		ctx->tok.access_token = t.access_token;
		ctx->tok.access_expiry_ms = t.access_expiry_ms;
	}
	ctx->access_at_ms = time_now_ms();
	ctx->access_gen++;
	log_info("ksef: %s: %s: access token valid for %lld s", ctx->nip,
	    full ? "authenticated" : "access token refreshed",
	    (long long)((ctx->tok.access_expiry_ms - time_now_ms()) / 1000));
	if (ctx->token_cb != NULL)
		ctx->token_cb(ctx->nip, &ctx->tok, ctx->token_arg);
	op->res.outcome = KSEF_OK;
	ksef_op_done(op);
}

static void
auth_redeem_reply(struct ksef_op *op, struct http_response *r)
{
	if (ksef_op_reply(op, r) == -1)
		return;
	auth_tokens_reply(op, r);
}

static void auth_poll(struct ksef_op *);

static void
auth_status_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_auth *a = op->data;
	struct ksef_result *res = &op->res;
	char *desc, *details, err[256];
	int32_t code;

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_auth_status(r->body.data, r->body.len, &code, &desc,
	    &details, err, sizeof(err)) == -1) {
		ksef_reply_garbage(res, "authentication status", r, err, 0);
		ksef_op_done(op);
		return;
	}
	if (code < 200 && time_now_ms() < a->deadline_ms) {
		free(desc);
		free(details);
		ksef_op_later(op, op->ctx->poll_ms, auth_poll);
		return;
	}
	if (code == 200) {
		free(desc);
		free(details);
		ksef_op_request(op, HTTP_POST, "/auth/token/redeem",
		    a->at.token, NULL, AUTH_JSON_MAX, auth_redeem_reply);
		return;
	}
	if (code < 200)
		ksef_result_set(res, KSEF_TRANSIENT, "authentication still "
		    "in progress after %lld s",
		    (long long)op->ctx->auth_timeout_ms / 1000);
	else	/* 500 unknown, 550 cancelled by the system: try again */
		ksef_result_set(res, code == 500 || code == 550 ?
		    KSEF_TRANSIENT : KSEF_FATAL, "authentication failed "
		    "(status %d): %s", code, desc != NULL ? desc :
		    "(no description)");
	res->code = code;
	res->details = details;
	free(desc);
	if (res->outcome == KSEF_FATAL)
		log_warnx("ksef: %s: %s%s%s", op->ctx->nip, res->reason,
		    details != NULL ? ": " : "", details != NULL ?
		    log_escape(details, strlen(details), 300) : "");
	ksef_op_done(op);
}

static void
auth_poll(struct ksef_op *op)
{
	struct ksef_auth *a = op->data;
	char *path;

	path = xasprintf("/auth/%s", a->ref);
	ksef_op_request(op, HTTP_GET, path, a->at.token, NULL, AUTH_JSON_MAX,
	    auth_status_reply);
	free(path);
}

static void
auth_init_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_auth *a = op->data;
	char err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	free(a->ref);
	a->ref = NULL;
	if (a->at.token != NULL) {
		explicit_wipe(a->at.token, strlen(a->at.token));
		free(a->at.token);
		a->at.token = NULL;
	}
	if (ksef_json_auth_init(r->body.data, r->body.len, &a->ref, &a->at,
	    err, sizeof(err)) == -1) {
		ksef_reply_garbage(&op->res, "authentication", r, err, 1);
		ksef_op_done(op);
		return;
	}
	log_debug("ksef: %s: authentication %s started", op->ctx->nip,
	    a->ref);
	auth_poll(op);
}

static void auth_challenge(struct ksef_op *);

static void
auth_challenge_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_ctx *ctx = op->ctx;
	struct ksef_challenge ch;
	char *plain, *enc, err[256];

	if (ksef_op_reply(op, r) == -1)
		return;
	if (ksef_json_challenge(r->body.data, r->body.len, &ch, err,
	    sizeof(err)) == -1) {
		ksef_reply_garbage(&op->res, "challenge", r, err, 0);
		ksef_op_done(op);
		return;
	}
	plain = xasprintf("%s|%lld", ctx->token, (long long)ch.timestamp_ms);
	enc = ksef_rsa_oaep_b64(ctx->key_token.pk, plain, strlen(plain), err,
	    sizeof(err));
	explicit_wipe(plain, strlen(plain));
	free(plain);
	if (enc == NULL) {
		ksef_result_set(&op->res, KSEF_FATAL, "cannot encrypt the "
		    "KSeF token: %s", err);
		ksef_op_done(op);
		return;
	}
	op->rotated = auth_challenge;
	ksef_op_request(op, HTTP_POST, "/auth/ksef-token", NULL,
	    ksef_json_ksef_token_req(ch.challenge, ctx->nip, enc,
	    ctx->key_token.id), AUTH_JSON_MAX, auth_init_reply);
	free(enc);
}

static void
auth_challenge(struct ksef_op *op)
{
	op->rotated = NULL;
	ksef_op_request(op, HTTP_POST, "/auth/challenge", NULL, NULL,
	    AUTH_JSON_MAX, auth_challenge_reply);
}

static void
auth_full(struct ksef_op *op)
{
	struct ksef_auth *a = op->data;
	int64_t now = time_now_ms();

	op->kind = KSEF_OP_AUTHENTICATE;
	a->deadline_ms = now + op->ctx->auth_timeout_ms;
	if (ksef_keys_fresh(op->ctx, now))
		auth_challenge(op);
	else
		ksef_keys_then(op, auth_challenge);
}

static void
auth_refresh_reply(struct ksef_op *op, struct http_response *r)
{
	struct ksef_ctx *ctx = op->ctx;
	struct ksef_auth *a = op->data;
	enum ksef_outcome o;

	if (ksef_reply_check(r, time_now_ms(), &op->res) == 0) {
		auth_tokens_reply(op, r);
		return;
	}
	o = op->res.outcome;
	if ((o == KSEF_AUTH_EXPIRED || o == KSEF_FATAL ||
	    o == KSEF_NOT_FOUND) && !a->fell_back) {
		log_info("ksef: %s: refresh refused (%s); authenticating "
		    "again", ctx->nip, op->res.reason);
		a->fell_back = 1;
		ksef_result_free(&op->res);
		record_token_free(&ctx->tok);
		memset(&ctx->tok, 0, sizeof(ctx->tok));
		auth_full(op);
		return;
	}
	ksef_op_done(op);
}

void
ksef_auth_start(struct ksef_ctx *ctx, int full, ksef_cb cb, void *arg)
{
	struct ksef_waiter *w = xcalloc(1, sizeof(*w));
	struct ksef_op *op;
	struct ksef_auth *a;

	w->cb = cb;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&ctx->waiters, w, entry);
	if (ctx->auth != NULL)
		return;		/* one procedure per context: join it */
	op = ksef_op_new(ctx, full ? KSEF_OP_AUTHENTICATE : KSEF_OP_REFRESH,
	    auth_fanout_cb, ctx);
	ctx->auth = op;
	a = xcalloc(1, sizeof(*a));
	op->data = a;
	op->data_free = auth_state_free;
	if (!full && ctx->tok.refresh_token != NULL &&
	    time_now_ms() < ctx->tok.refresh_expiry_ms)
		ksef_op_request(op, HTTP_POST, "/auth/token/refresh",
		    ctx->tok.refresh_token, NULL, AUTH_JSON_MAX,
		    auth_refresh_reply);
	else
		auth_full(op);
}

void
ksef_authenticate(struct ksef_ctx *ctx, ksef_cb cb, void *arg)
{
	ksef_auth_start(ctx, 1, cb, arg);
}

void
ksef_token_refresh(struct ksef_ctx *ctx, ksef_cb cb, void *arg)
{
	ksef_auth_start(ctx, 0, cb, arg);
}
