/*
 * ksef_int.h: shared by the files of src/ksef/ (and their tests and fuzz
 * target); nothing else includes it.  Crypto (ksef_crypto.c), the JSON
 * codec and reply classification (ksef_json.c), and the context internals
 * the operation files share (ksef.c, ksef_auth.c).
 */
#ifndef KSEFD_KSEF_INT_H
#define KSEFD_KSEF_INT_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "ksef.h"

struct event;
struct http_request;
struct http_response;

#define KSEF_SHA_LEN		32
#define KSEF_SHA_B64_LEN	44
#define KSEF_AES_KEY_LEN	32
#define KSEF_AES_IV_LEN		16
#define KSEF_REF_MAX		64	/* reference numbers are 36 */
#define KSEF_TOKEN_MAX		8192	/* JWTs */

/* ---- ksef_crypto.c ---- */
char	*ksef_b64_encode(const void *, size_t);
int	 ksef_b64_decode(const char *, size_t, unsigned char **, size_t *);
void	 ksef_sha256(const void *, size_t, unsigned char out[KSEF_SHA_LEN]);
void	 ksef_sha256_b64(const void *, size_t, char out[KSEF_SHA_B64_LEN + 1]);
void	 ksef_random(void *, size_t);
EVP_PKEY *ksef_cert_pubkey(const char *cert_b64,
	    char key_id[KSEF_SHA_B64_LEN + 1], char *err, size_t errlen);
char	*ksef_rsa_oaep_b64(EVP_PKEY *, const void *, size_t, char *err,
	    size_t errlen);
size_t	 ksef_aes_size(size_t plain);
void	 ksef_aes_encrypt(const unsigned char key[KSEF_AES_KEY_LEN],
	    const unsigned char iv[KSEF_AES_IV_LEN], const void *, size_t,
	    unsigned char **out, size_t *outlen);

/* ---- ksef_json.c: parsers ---- */
#define KSEF_USE_TOKEN		0x1u	/* KsefTokenEncryption */
#define KSEF_USE_SYMMETRIC	0x2u	/* SymmetricKeyEncryption */

struct ksef_cert {
	char		*cert;		/* Base64 DER */
	char		*key_id;	/* publicKeyId, when given */
	int64_t		 valid_from_ms;
	int64_t		 valid_to_ms;
	unsigned	 usage;		/* KSEF_USE_* */
};

struct ksef_challenge {
	char		 challenge[KSEF_REF_MAX];
	int64_t		 timestamp_ms;
};

/* A token with its expiry (authenticationToken, accessToken...). */
struct ksef_tok {
	char		*token;
	int64_t		 valid_until_ms;
};

/* An error body in either format. */
struct ksef_error {
	int32_t		 code;		/* exceptionCode / errors[].code; 0 none */
	char		*description;
	char		*details;
	char		*reason_code;	/* 403 problem reasonCode */
};

/*
 * Every parser takes a whole body, fills its output and returns 0, or
 * returns -1 with a message naming the field and the rule in err and
 * nothing to free.  Unknown fields are ignored.
 */
int	 ksef_json_keys(const void *, size_t, struct ksef_cert **, size_t *,
	    char *err, size_t);
void	 ksef_json_keys_free(struct ksef_cert *, size_t);
int	 ksef_json_challenge(const void *, size_t, struct ksef_challenge *,
	    char *err, size_t);
/* 202 of POST /auth/ksef-token: reference and authenticationToken. */
int	 ksef_json_auth_init(const void *, size_t, char **ref,
	    struct ksef_tok *, char *err, size_t);
/* GET /auth/{ref}: status code, description, details. */
int	 ksef_json_auth_status(const void *, size_t, int32_t *code,
	    char **desc, char **details, char *err, size_t);
/* Redeem (need_refresh) and refresh: the tokens into rt. */
int	 ksef_json_tokens(const void *, size_t, int need_refresh,
	    struct record_token *, char *err, size_t);
/* {referenceNumber[, validUntil]} of session open and send. */
int	 ksef_json_reference(const void *, size_t, char **ref,
	    int64_t *valid_until_ms, char *err, size_t);
int	 ksef_json_session_status(const void *, size_t,
	    struct ksef_session_info *, char *err, size_t);
int	 ksef_json_invoice_status(const void *, size_t, struct ksef_invoice *,
	    char *err, size_t);
int	 ksef_json_session_invoices(const void *, size_t,
	    struct ksef_invoice **, size_t *, char **continuation,
	    char *err, size_t);
int	 ksef_json_metadata(const void *, size_t, struct ksef_invoice **,
	    size_t *, int *has_more, int *truncated, char *err, size_t);
/*
 * GET /rate-limits (EffectiveApiRateLimits) into lim[] and have[], both
 * indexed by enum ratelimit_group; unknown groups are ignored, at least
 * one known group is required.
 */
int	 ksef_json_rate_limits(const void *, size_t,
	    struct ratelimit_limits lim[RL_NGROUPS], int have[RL_NGROUPS],
	    char *err, size_t);
/* Either error format; -1 when the body is neither. */
int	 ksef_json_error(const void *, size_t, struct ksef_error *);
void	 ksef_error_free(struct ksef_error *);

/* ---- ksef_json.c: request builders (caller frees) ---- */
char	*ksef_json_ksef_token_req(const char *challenge, const char *nip,
	    const char *encrypted_token, const char *key_id);
char	*ksef_json_session_open_req(enum inv_form, const char *wrapped_key,
	    const char *iv_b64, const char *key_id);
/* The send body into b; content is Base64 already. */
void	 ksef_json_send_req(struct buf *b, const char *hash, size_t size,
	    const char *enc_hash, size_t enc_size, const char *content_b64);
char	*ksef_json_metadata_req(const char *nip, const struct ksef_query *,
	    int64_t now_ms);

/* ---- ksef_json.c: replies ---- */
/*
 * Classify a reply.  0 for a 2xx: the caller parses the body.  Otherwise
 * -1 with res->outcome, reason, code, details, retry_at_ms and in_doubt
 * set from the transport outcome, the status and the error body.
 */
int	 ksef_reply_check(const struct http_response *, int64_t now_ms,
	    struct ksef_result *res);
/*
 * The reply was 2xx but its body did not parse: TRANSIENT, logged with
 * the body escaped, unless the body may hold a secret (tokens).
 */
void	 ksef_reply_garbage(struct ksef_result *, const char *what,
	    const struct http_response *, const char *err, int secret);
void	 ksef_result_set(struct ksef_result *, enum ksef_outcome,
	    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void	 ksef_result_free(struct ksef_result *);
void	 ksef_invoice_free(struct ksef_invoice *);

/* ---- ksef.c: the context and its operations, for ksef_auth.c ---- */
struct ksef_key {
	EVP_PKEY	*pk;
	char		 id[KSEF_SHA_B64_LEN + 1];
	int64_t		 valid_to_ms;
};

struct ksef_op;
TAILQ_HEAD(ksef_ops, ksef_op);

struct ksef_waiter {
	TAILQ_ENTRY(ksef_waiter) entry;
	ksef_cb		 cb;
	void		*arg;
};
TAILQ_HEAD(ksef_waiters, ksef_waiter);

struct ksef_ctx {
	struct event_base *base;
	struct http	*http;
	char		*base_url;
	char		 nip[INV_NIP_LEN + 1];
	char		*token;
	int64_t		 connect_ms, total_ms;
	int64_t		 refresh_margin_ms;
	int64_t		 poll_ms;
	int64_t		 auth_timeout_ms;
	int64_t		 keys_margin_ms;
	void		(*token_cb)(const char *, const struct record_token *,
			    void *);
	void		*token_arg;

	struct record_token tok;
	int64_t		 access_at_ms;	/* when tok's access token came; 0: restored */
	uint64_t	 access_gen;	/* bumped with every new access token */
	int64_t		 refresh_at_ms;	/* ... and its refresh token */
	struct ksef_key	 key_token;	/* KsefTokenEncryption */
	struct ksef_key	 key_sym;	/* SymmetricKeyEncryption */
	int64_t		 keys_fetched_ms;

	struct ksef_ops	 ops;		/* in flight */
	struct ksef_op	*auth;		/* the one authentication in flight */
	struct ksef_waiters waiters;	/* callers waiting for it */
};

/* One operation in flight. */
struct ksef_op {
	TAILQ_ENTRY(ksef_op) entry;
	struct ksef_ctx	*ctx;
	enum ksef_op_kind	 kind;
	struct http_request *req;	/* in flight, or NULL */
	struct event	*ev;		/* deferred completion, auth polls */
	ksef_cb		 done_cb;	/* the caller's callback */
	ksef_cb		 cb;		/* set when completing */
	void		*arg;
	struct ksef_result res;
	/* what the reply handler needs */
	void		(*reply)(struct ksef_op *, struct http_response *);
	struct record_session *session;	/* session open: the new session */
	void		(*next)(struct ksef_op *);	/* after a keys fetch */
	void		(*rotated)(struct ksef_op *);	/* after 21470 and new keys */
	int		 retried;	/* 21470 handled once */
	uint64_t	 bearer_gen;	/* ctx->access_gen of the token it carries */
	void		*data;		/* auth state */
	void		(*data_free)(void *);
};

/* Start an op: the caller fills it, then ksef_op_request() or ksef_op_done(). */
struct ksef_op *ksef_op_new(struct ksef_ctx *, enum ksef_op_kind, ksef_cb,
	    void *);
/*
 * Send one request for op to base_url + path (or to path itself when it
 * is an absolute URL); the reply goes to op->reply.  bearer may be NULL;
 * body (JSON, taken over) may be NULL.
 */
void	 ksef_op_request(struct ksef_op *, int method, const char *path,
	    const char *bearer, char *body, size_t max_response,
	    void (*reply)(struct ksef_op *, struct http_response *));
/*
 * Check the reply of op: 0 for a 2xx.  Otherwise op is finished (or
 * carried on through op->rotated after a 21470) and -1 returned.
 */
int	 ksef_op_reply(struct ksef_op *, struct http_response *);
/* Complete: run the callback from the loop (deferred), free the op. */
void	 ksef_op_done(struct ksef_op *);
/* Call next(op) after ms milliseconds. */
void	 ksef_op_later(struct ksef_op *, int64_t ms,
	    void (*next)(struct ksef_op *));
void	 ksef_op_free(struct ksef_op *);
/* The keys are good at now for another keys_margin. */
int	 ksef_keys_fresh(const struct ksef_ctx *, int64_t now_ms);
/* Fetch keys for op (an internal request), then call next(op) or fail op. */
void	 ksef_keys_then(struct ksef_op *, void (*next)(struct ksef_op *));
void	 ksef_keys_forget(struct ksef_ctx *);

/* ---- ksef_auth.c ---- */
/* Authenticate (full) or refresh, or join the one in flight. */
void	 ksef_auth_start(struct ksef_ctx *, int full, ksef_cb, void *);
/* Forget the waiters of the authentication in flight (context freed). */
void	 ksef_auth_waiters_free(struct ksef_ctx *);

#endif
