/*
 * ksef.h: the KSeF anti-corruption layer.  The rest of ksefd talks to KSeF
 * only through these domain operations and outcomes; JSON, HTTP status
 * codes, KSeF's exception and status codes, keys and tokens stay in
 * src/ksef/.
 *
 * One struct ksef_ctx per context (seller NIP) holds the KSeF token, the
 * access and refresh tokens and the cached public keys.  Every operation is
 * asynchronous on the libevent loop: it returns at once and completes
 * exactly once through its callback, from the loop and never from inside
 * the call, with a struct ksef_result.  The result belongs to this layer
 * and is freed when the callback returns; a caller that wants to keep a
 * string or the body takes it (sets the pointer to NULL / buf_release()).
 *
 * Rate limits are the caller's: every operation belongs to one endpoint
 * group (ksef_op_group()), and sends at most one request in that group;
 * the caller asks its limiter first and records the start.  Requests this
 * layer makes on its own (public keys, the authentication steps) are all in
 * the unlimited-by-context RL_GROUP_PUBLIC.
 *
 * Tokens are persisted by the caller: the token callback of the options
 * gets every new access/refresh token pair, and ksef_ctx_token_set() puts
 * a persisted pair back after a restart.  Online sessions are the caller's
 * too: ksef_session_open() hands back a struct record_session (with its
 * AES key) to persist, and the send takes it back.
 */
#ifndef KSEFD_KSEF_H
#define KSEFD_KSEF_H

#include <stddef.h>
#include <stdint.h>

#include "ratelimit.h"
#include "record.h"
#include "util.h"

struct event_base;
struct http;
struct ksef_ctx;

/* What happened, in the daemon's terms. */
enum ksef_outcome {
	KSEF_OK,		/* done (keys, auth, close, lists, UPO, fetch) */
	KSEF_ACCEPTED,		/* send: KSeF took it; `reference` */
	KSEF_PENDING,		/* invoice status: still being processed */
	KSEF_PROCESSED,		/* invoice status: KSeF number assigned */
	KSEF_REJECTED,		/* invoice refused: code, reason, details */
	KSEF_DUPLICATE,		/* invoice is a duplicate: original number, session */
	KSEF_NOT_FOUND,		/* no such invoice, UPO, session or reference */
	KSEF_SESSION_GONE,	/* session closed, expired, full or unknown: open another */
	KSEF_RETRY_AFTER,	/* not a failure: try again at retry_at_ms */
	KSEF_TRANSIENT,		/* failed this time (5xx, timeout, garbage) */
	KSEF_AUTH_EXPIRED,	/* 401: authorize again (ksef_token_refresh), then retry */
	KSEF_FATAL,		/* retrying will not help (bad request, bad token, 403) */
};

/* One invoice as KSeF reports it (status, session lists, metadata). */
struct ksef_invoice {
	enum ksef_outcome outcome;	/* PENDING, PROCESSED, REJECTED, DUPLICATE, TRANSIENT */
	uint32_t	 ordinal;
	char		*reference;		/* invoice reference (EE); NULL in metadata */
	char		*invoice_hash;		/* Base64 SHA-256 of the XML; may be NULL */
	char		*invoice_number;	/* P_2, when given */
	char		*ksef_number;
	char		*acquisition_date;	/* as KSeF gave it */
	char		*storage_date;		/* permanentStorageDate, as given */
	char		*upo_url;		/* presigned, no auth; may be NULL */
	int32_t		 code;			/* KSeF's status code */
	char		*reason;		/* its description */
	char		*details;		/* details joined with "; " */
	char		*original_ksef_number;	/* DUPLICATE */
	char		*original_session;	/* DUPLICATE */
};

/* A session's state as ksef_session_status() reports it. */
enum ksef_session_state {
	KSEF_SESS_OPEN,		/* 100: accepting invoices */
	KSEF_SESS_CLOSING,	/* 150/170: closed, being processed / UPO made */
	KSEF_SESS_DONE,		/* 200: processed (single invoices may be rejected) */
	KSEF_SESS_CANCELLED,	/* 440: no invoices, or batch upload too late */
	KSEF_SESS_FAILED,	/* any other code */
};

struct ksef_session_info {
	enum ksef_session_state state;
	uint32_t	 invoices, succeeded, failed;
	char		**upo_urls;		/* session UPO pages, presigned */
	size_t		 nupo;
};

struct ksef_result {
	enum ksef_outcome outcome;
	int		 in_doubt;	/* TRANSIENT: the request may have been acted on */
	int64_t		 retry_at_ms;	/* RETRY_AFTER: wall clock; never earlier than KSeF asked */
	int32_t		 code;		/* KSeF's code (REJECTED, NOT_FOUND, FATAL, ...), 0 if none */
	char		*reason;	/* every outcome but OK: what and why, for logs and records */
	char		*details;	/* REJECTED/FATAL: KSeF's details joined with "; " */
	char		*reference;	/* ACCEPTED: the invoice reference number */
	struct record_session *session;	/* ksef_session_open() OK: the new session */
	struct ksef_invoice *invoices;	/* invoice status (1), session list, metadata */
	size_t		 ninvoices;
	char		*continuation;	/* session list: the next page's token, NULL at the end */
	int		 has_more;	/* metadata: more pages */
	int		 truncated;	/* metadata: narrow the date range to see the rest */
	struct ksef_session_info sess;	/* ksef_session_status() */
	struct buf	 body;		/* UPO XML, invoice XML */
	unsigned char	 body_sha256[INV_SHA_LEN];	/* of body, when there is one */
	/*
	 * ksef_rate_limits() OK: KSeF's effective limits by enum
	 * ratelimit_group, counts only (window_ms 0: the caller's); a group
	 * is valid where limits_have[group] is set.
	 */
	struct ratelimit_limits limits[RL_NGROUPS];
	int		 limits_have[RL_NGROUPS];
};

typedef void (*ksef_cb)(struct ksef_result *, void *arg);

/* The operations, for ksef_op_group() and ksef_op_name(). */
enum ksef_op_kind {
	KSEF_OP_KEYS,
	KSEF_OP_AUTHENTICATE,
	KSEF_OP_REFRESH,
	KSEF_OP_SESSION_OPEN,
	KSEF_OP_INVOICE_SEND,
	KSEF_OP_SESSION_CLOSE,
	KSEF_OP_SESSION_STATUS,
	KSEF_OP_SESSION_INVOICES,
	KSEF_OP_INVOICE_STATUS,
	KSEF_OP_UPO,		/* the UPO endpoint (session_misc) */
	KSEF_OP_UPO_URL,	/* a presigned upoDownloadUrl: not limited */
	KSEF_OP_INVOICE_FETCH,
	KSEF_OP_METADATA_QUERY,
	KSEF_OP_RATE_LIMITS,	/* GET /rate-limits (other) */
	KSEF_NOPS
};

/* The limiter group (enum ratelimit_group) of an operation; -1: not limited. */
int		 ksef_op_group(enum ksef_op_kind);
const char	*ksef_op_name(enum ksef_op_kind);
const char	*ksef_outcome_name(enum ksef_outcome);

struct ksef_ctx_options {
	const char	*base_url;	/* https://host/v2, no trailing slash */
	const char	*nip;
	const char	*token;		/* the KSeF token (secret; copied, wiped on free) */
	int64_t		 connect_timeout_ms;	/* 0: the transport's */
	int64_t		 request_timeout_ms;	/* 0: the transport's */
	int64_t		 token_refresh_margin_ms;	/* refresh this long before expiry */
	int64_t		 poll_auth_interval_ms;	/* GET /auth/{ref}; 0: 1 s */
	int64_t		 auth_timeout_ms;	/* give up polling; 0: 2 min */
	int64_t		 keys_margin_ms;	/* refetch keys this long before validTo; 0: 1 h */
	/* New tokens, to persist (may be NULL).  Never log them. */
	void		(*token_cb)(const char *nip, const struct record_token *,
			    void *arg);
	void		*token_arg;
};

/* A context on transport h.  Caller frees with ksef_ctx_free(). */
struct ksef_ctx	*ksef_ctx_new(struct event_base *, struct http *,
		    const struct ksef_ctx_options *);
/* Cancel every operation in flight (no callbacks) and free the context. */
void		 ksef_ctx_free(struct ksef_ctx *);
/*
 * New settings (reload).  A changed KSeF token or base URL drops the
 * access and refresh tokens; operations in flight finish as they began.
 */
void		 ksef_ctx_update(struct ksef_ctx *, const struct ksef_ctx_options *);
const char	*ksef_ctx_nip(const struct ksef_ctx *);
/* Restore persisted tokens (copied). */
void		 ksef_ctx_token_set(struct ksef_ctx *, const struct record_token *);

/*
 * A token is due for renewal the margin before it expires, but never before
 * half its life has passed (so a margin longer than KSeF's TTL cannot make a
 * renewal follow a renewal).
 */
enum ksef_token_state {
	KSEF_TOKEN_VALID,	/* the access token is not due yet */
	KSEF_TOKEN_REFRESH,	/* access token due (or expired), refresh token not */
	KSEF_TOKEN_NONE,	/* authenticate from scratch */
};
enum ksef_token_state ksef_ctx_token_state(const struct ksef_ctx *, int64_t now_ms);
/*
 * When the context's tokens next fall due (wall clock ms): the earlier of the
 * access token's and the refresh token's due times.  Returns 0 when it holds
 * none.
 */
int		 ksef_ctx_token_due(const struct ksef_ctx *, int64_t *due_ms);
/* Access token expiry (wall clock ms), 0 when there is none. */
int64_t		 ksef_ctx_token_expiry(const struct ksef_ctx *);
/* An authentication or refresh is in flight. */
int		 ksef_ctx_auth_busy(const struct ksef_ctx *);

/* GET /security/public-key-certificates into the context's cache. */
void	 ksef_keys_fetch(struct ksef_ctx *, ksef_cb, void *);
/*
 * Full authentication with the KSeF token: keys if needed, challenge,
 * POST /auth/ksef-token, poll GET /auth/{ref}, redeem.  OK when the
 * context has fresh tokens (also given to the token callback).  At most one
 * authentication or refresh runs per context: a call while one runs waits
 * for it and gets its outcome (the same result for every waiter: do not
 * take its fields).
 */
void	 ksef_authenticate(struct ksef_ctx *, ksef_cb, void *);
/*
 * Make the access token fresh: refresh it with the refresh token, or
 * authenticate from scratch when there is none, it expired, or KSeF
 * refused it.  Joins one in flight like ksef_authenticate().
 */
void	 ksef_token_refresh(struct ksef_ctx *, ksef_cb, void *);

/*
 * Open an online session for `form` with a new AES-256 key and IV.  OK with
 * result->session (take it: set the pointer to NULL).  RETRY_AFTER with
 * retry_at_ms = now when KSeF had rotated its key: the keys are fetched
 * again already.
 */
void	 ksef_session_open(struct ksef_ctx *, enum inv_form, ksef_cb, void *);
/*
 * Send one invoice (exact bytes) into an open session: ACCEPTED with the
 * invoice reference, SESSION_GONE, FATAL (21402/21403/21405...), or the
 * generic outcomes; a TRANSIENT with in_doubt set must be resolved through
 * the session's invoice list (by invoice hash) before any resend.  The XML
 * is encrypted before this returns: the buffer need not outlive the call.
 * sha256: the SHA-256 of the invoice as it was received (NULL: computed
 * here), sent as its invoiceHash, so KSeF refuses (21403) bytes that have
 * changed since.
 */
void	 ksef_invoice_send(struct ksef_ctx *, const struct record_session *,
	    const void *xml, size_t len, const unsigned char *sha256, ksef_cb,
	    void *);
void	 ksef_session_close(struct ksef_ctx *, const char *session_ref,
	    ksef_cb, void *);
/* OK with result->sess. */
void	 ksef_session_status(struct ksef_ctx *, const char *session_ref,
	    ksef_cb, void *);
/*
 * One page of a session's invoices (page_size 10..1000; continuation NULL
 * for the first page; failed_only for .../invoices/failed).  OK with
 * result->invoices and result->continuation.
 */
void	 ksef_session_invoices(struct ksef_ctx *, const char *session_ref,
	    const char *continuation, unsigned page_size, int failed_only,
	    ksef_cb, void *);
/*
 * One invoice's status: the result's outcome is the invoice's (PENDING,
 * PROCESSED, REJECTED, DUPLICATE, or TRANSIENT when KSeF cancelled it and
 * it must be sent again) with result->invoices[0] filled.
 */
void	 ksef_invoice_status(struct ksef_ctx *, const char *session_ref,
	    const char *invoice_ref, ksef_cb, void *);
/*
 * An invoice's UPO: from upo_url (presigned, sent without a token) when it
 * is not NULL, else GET /sessions/{ref}/invoices/{invoiceRef}/upo, or by
 * KSeF number when invoice_ref is NULL.  OK with result->body (XML),
 * checked against x-ms-meta-hash when KSeF sends one.
 */
void	 ksef_invoice_upo(struct ksef_ctx *, const char *session_ref,
	    const char *invoice_ref, const char *ksef_number,
	    const char *upo_url, ksef_cb, void *);
/*
 * GET /invoices/ksef/{number}: OK with result->body and body_sha256, to
 * compare with ours when KSeF says duplicate.  NOT_FOUND; 21165 (stored
 * but not yet downloadable) is TRANSIENT.
 */
void	 ksef_invoice_fetch(struct ksef_ctx *, const char *ksef_number,
	    ksef_cb, void *);

/* POST /invoices/query/metadata: invoices this context sold (Subject1). */
struct ksef_query {
	int64_t		 from_ms;	/* invoicing date range, wall clock */
	int64_t		 to_ms;		/* 0: now */
	const char	*invoice_number;	/* NULL: any */
	unsigned	 page_offset;
	unsigned	 page_size;	/* 10..250 */
};
/* OK with result->invoices (outcome PROCESSED), has_more, truncated. */
void	 ksef_metadata_query(struct ksef_ctx *, const struct ksef_query *,
	    ksef_cb, void *);

/*
 * GET /rate-limits: the limits KSeF applies to this context now.  OK with
 * result->limits and limits_have (groups KSeF did not name are left unset;
 * a count of 0 means that window is not limited, as in the config).
 */
void	 ksef_rate_limits(struct ksef_ctx *, ksef_cb, void *);

/* Base64 SHA-256 of an invoice as KSeF names it (44 chars + NUL). */
void	 ksef_invoice_hash(const unsigned char sha256[INV_SHA_LEN], char out[45]);
/* The invoice of `list` whose hash equals ours, or NULL (in-doubt resolution). */
struct ksef_invoice *ksef_invoice_find_hash(struct ksef_result *,
	    const unsigned char sha256[INV_SHA_LEN]);

#endif
