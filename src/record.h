/*
 * record.h: the records ksefd stores, and the invoice states.
 *
 * Every record is a msgpack map with string keys, a record type ("t") and a
 * version ("v").  A newer ksefd reads older records (missing optional fields
 * take their zero value) and skips keys it does not know; a record of a newer
 * version than this ksefd understands is refused.  Decoding never trusts its
 * input: truncated, garbage, wrongly typed or out-of-range data gives an
 * error code and a message naming the field and the rule.
 */
#ifndef KSEFD_RECORD_H
#define KSEFD_RECORD_H

#include <stddef.h>
#include <stdint.h>

struct buf;

#define INV_KEY_LEN	32	/* idempotency key: SHA-256 */
#define INV_SHA_LEN	32	/* SHA-256 of the invoice XML */
#define INV_NIP_LEN	10
#define SESS_AES_KEY_LEN 32
#define SESS_AES_IV_LEN	16

/* Invoice life cycle (DESIGN.md).  Names are stored, numbers are not. */
enum inv_state {
	INV_ST_NONE = -1,	/* before the invoice existed: "from" of its first audit event */
	INV_ST_QUEUED = 0,
	INV_ST_SENDING,
	INV_ST_SUBMITTED,
	INV_ST_ACCEPTED,
	INV_ST_DONE,
	INV_ST_REJECTED,
	INV_ST_FAILED,
};
#define INV_ST_COUNT	7

enum inv_form {
	INV_FORM_FA3 = 0,
	INV_FORM_FA2,
};

enum inv_source {
	INV_SRC_API = 0,
	INV_SRC_SPOOL,
};

enum sess_kind {
	SESS_KIND_ONLINE = 0,
	SESS_KIND_BATCH,
};

enum sess_state {
	SESS_ST_OPENING = 0,
	SESS_ST_OPEN,
	SESS_ST_CLOSING,
	SESS_ST_CLOSED,
};

/* "QUEUED" ... "FAILED"; "NONE" for INV_ST_NONE; "?" for anything else. */
const char *record_state_name(int state);
/* Parse a state name (case-insensitive, not "NONE"); -1 if unknown. */
int	 record_state_parse(const char *, enum inv_state *);
/* "FA3"/"FA2", "api"/"spool", "online"/"batch", "OPENING"..."CLOSED". */
const char *record_form_name(int form);
int	 record_form_parse(const char *, enum inv_form *);
const char *record_source_name(int source);
const char *record_sess_kind_name(int kind);
const char *record_sess_state_name(int state);

/* How an invoice is printed everywhere: the first 16 hex digits of its key. */
void	 record_key_short(const unsigned char key[INV_KEY_LEN], char out[17]);

/*
 * An invoice (database "inv", keyed by `key`).  Strings held by pointer are
 * owned by the record (NULL = absent); record_invoice_free() frees them and
 * record_str_set() replaces one.  An all-zero supersedes/superseded_by means
 * none.  next_due_ms != 0 means the invoice has an entry in the due index;
 * the store keeps that index in step with this field.
 */
struct record_invoice {
	unsigned char	 key[INV_KEY_LEN];
	enum inv_state	 state;
	char		 seller_nip[INV_NIP_LEN + 1];
	enum inv_form	 form;
	char		 kind[16];		/* RodzajFaktury: VAT, KOR, ZAL, ... */
	char		*number;		/* P_2 */
	char		 issue_date[11];	/* P_1, YYYY-MM-DD */
	unsigned char	 xml_sha256[INV_SHA_LEN];
	uint64_t	 xml_size;
	int64_t		 received_ms;
	uint32_t	 attempts;
	int64_t		 first_attempt_ms;
	int64_t		 next_due_ms;
	char		*session_ref;
	char		*invoice_ref;		/* KSeF's reference number */
	char		*ksef_number;
	char		*acquisition_date;	/* as KSeF gave it */
	char		*storage_date;		/* permanent storage date, as KSeF gave it */
	int		 upo_present;
	int32_t		 error_code;		/* 0 = none */
	char		*error_desc;
	char		*error_details;
	unsigned char	 supersedes[INV_KEY_LEN];
	unsigned char	 superseded_by[INV_KEY_LEN];
	int		 hold;
	enum inv_source	 source;
	char		*source_name;		/* spool file name, API client */
};

/* One audit event (database "audit", keyed by seq). */
struct record_audit {
	uint64_t	 seq;
	int64_t		 time_ms;
	unsigned char	 key[INV_KEY_LEN];
	enum inv_state	 from;			/* INV_ST_NONE for a new invoice */
	enum inv_state	 to;
	char		*detail;
};

/* A context's tokens (kept in meta; secret: never log, wiped on free). */
struct record_token {
	char		*access_token;
	int64_t		 access_expiry_ms;
	char		*refresh_token;
	int64_t		 refresh_expiry_ms;
};

/* An open KSeF session (kept in meta; the AES key is secret, wiped on free). */
struct record_session {
	char		 context_nip[INV_NIP_LEN + 1];
	enum inv_form	 form;
	enum sess_kind	 kind;
	char		*session_ref;
	unsigned char	 aes_key[SESS_AES_KEY_LEN];
	unsigned char	 aes_iv[SESS_AES_IV_LEN];
	int64_t		 opened_ms;
	int64_t		 valid_until_ms;
	uint32_t	 invoice_count;
	enum sess_state	 state;
};

/* Rate-limiter state of one (context, endpoint group), kept in meta. */
#define RECORD_LIMITER_MAX	100000	/* most send times one record may hold */
struct record_limiter {
	int64_t		 paused_until_ms;
	size_t		 nsent;
	int64_t		*sent_ms;		/* send times, oldest first */
};

/* Why a decode failed. */
enum record_error {
	REC_E_TRUNCATED = 1,	/* input ends inside the record */
	REC_E_GARBAGE,		/* not msgpack, not a map, bytes after the record, too deep */
	REC_E_KIND,		/* a record of another type */
	REC_E_VERSION,		/* written by a newer ksefd */
	REC_E_TYPE,		/* a field of the wrong msgpack type */
	REC_E_VALUE,		/* a field out of range: length, enum name, duplicate */
	REC_E_MISSING,		/* a required field is absent */
};

struct record_err {
	enum record_error code;
	char		 msg[200];
};

/*
 * Encoders append one record to `out`; they cannot fail on valid records
 * (an invalid enum value is an internal bug and fatal).  Decoders fill `rec`
 * and return 0, or return -1 with `err` filled and `rec` left empty (nothing
 * to free).  After a successful decode, free with the matching _free().
 */
void	 record_invoice_encode(const struct record_invoice *, struct buf *out);
int	 record_invoice_decode(const void *, size_t, struct record_invoice *,
	    struct record_err *);
void	 record_invoice_free(struct record_invoice *);
/*
 * The whole input checked as by _decode(), but only `state` and
 * `next_due_ms` filled in (the rest zero; nothing to free): for the
 * store's check of the stored version before a write.
 */
int	 record_invoice_peek(const void *, size_t, struct record_invoice *,
	    struct record_err *);

void	 record_audit_encode(const struct record_audit *, struct buf *out);
int	 record_audit_decode(const void *, size_t, struct record_audit *,
	    struct record_err *);
void	 record_audit_free(struct record_audit *);

void	 record_token_encode(const struct record_token *, struct buf *out);
int	 record_token_decode(const void *, size_t, struct record_token *,
	    struct record_err *);
void	 record_token_free(struct record_token *);

void	 record_session_encode(const struct record_session *, struct buf *out);
int	 record_session_decode(const void *, size_t, struct record_session *,
	    struct record_err *);
void	 record_session_free(struct record_session *);

void	 record_limiter_encode(const struct record_limiter *, struct buf *out);
int	 record_limiter_decode(const void *, size_t, struct record_limiter *,
	    struct record_err *);
void	 record_limiter_free(struct record_limiter *);

/* Replace an owned string with a copy of `src` (NULL clears it). */
void	 record_str_set(char **dst, const char *src);
/* Deep copy of an invoice record.  Free `dst` with record_invoice_free(). */
void	 record_invoice_copy(struct record_invoice *dst, const struct record_invoice *src);

#endif
