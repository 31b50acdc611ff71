/*
 * validate.h: checks an invoice body before it is stored: safe XML parsing,
 * form detection (FA(3), FA(2)), XSD validation against the local schemas
 * and the business rules of doc/rules.md.  Also the idempotency key.
 *
 * A validator is compiled once per config generation (schema compilation
 * takes milliseconds) and then validates any number of invoices; it is not
 * thread-safe (one per thread, which in ksefd means one).
 */
#ifndef KSEFD_VALIDATE_H
#define KSEFD_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#define VALIDATE_KEY_LEN	32	/* idempotency key: SHA-256 */
#define VALIDATE_MAX_PROBLEMS	100	/* more are counted, not listed */

struct validator;

/* Everything a validator depends on; copied by validator_new(). */
struct validate_params {
	const char	 *schema_dir;	/* has catalog.xml and FA/; e.g. PKGDATADIR "/schemas" */
	int		  fa2_allowed;	/* FA(2) accepted (KSeF environment "test") */
	const char *const *nips;	/* configured context NIPs (sellers) */
	size_t		  nnips;
	int		  any_seller;	/* 1: skip context.unknown (offline checks, tools) */
	int64_t		  future_tolerance_ms; /* P_1 may be this far ahead; rounded up to days */
	const char	 *today;	/* "YYYY-MM-DD" instead of the local date (tests); NULL = clock */
	size_t		  max_body;	/* larger bodies: body.too_large; 0 = 1 MiB */
};

enum validate_form {
	VALIDATE_FORM_NONE = 0,		/* not detected */
	VALIDATE_FORM_FA3,
	VALIDATE_FORM_FA2,
};

enum validate_severity {
	VALIDATE_ERROR = 0,		/* refuses the invoice */
	VALIDATE_WARNING,		/* reported, accepted */
};

/* One finding.  Rule ids are stable and listed in doc/rules.md. */
struct validate_problem {
	enum validate_severity severity;
	const char	*rule;		/* static string, e.g. "schema", "line.net" */
	int		 line;		/* 1-based; 0 = whole body */
	int		 column;	/* 1-based; 0 = unknown */
	char		*path;		/* e.g. "/Faktura/Fa/FaWiersz[2]/P_11"; NULL = none */
	char		*message;	/* English, one line, no trailing newline */
};

/* The invoice a correcting invoice (KOR, KOR_ZAL, KOR_ROZ) corrects. */
struct validate_corrected {
	char		*number;	/* NrFaKorygowanej */
	char		 date[11];	/* DataWystFaKorygowanej, YYYY-MM-DD */
	char		*ksef_number;	/* NrKSeFFaKorygowanej; NULL when issued outside KSeF */
};

/*
 * The outcome.  Identity fields are filled when the document passed the
 * schema (they are empty strings / NULL otherwise); sha256 always is
 * unless the body was too large.
 */
struct validate_result {
	int		 ok;		/* 1 accepted (maybe with warnings), 0 refused */
	enum validate_form form;
	unsigned char	 sha256[32];	/* of the exact bytes */
	int		 has_key;	/* key below is valid */
	unsigned char	 key[VALIDATE_KEY_LEN];	/* validate_key_compute() of this invoice */
	char		 seller_nip[11];	/* Podmiot1 NIP */
	char		 buyer_nip[11];		/* Podmiot2 NIP; "" when the buyer has none */
	char		 kind[8];		/* RodzajFaktury: VAT, KOR, ZAL, ROZ, UPR, KOR_ZAL, KOR_ROZ */
	char		 issue_date[11];	/* P_1, YYYY-MM-DD */
	char		*number;		/* P_2, whitespace collapsed as xsd:token */
	int		 offline;		/* P_1 earlier than today: KSeF marks it offline */
	struct validate_corrected *corrected;	/* KOR*: DaneFaKorygowanej, in order */
	size_t		 ncorrected;
	struct validate_problem *problems;	/* errors and warnings, in document order per stage */
	size_t		 nproblems;	/* listed (at most VALIDATE_MAX_PROBLEMS) */
	size_t		 nerrors;	/* counted, including unlisted ones */
	size_t		 nwarnings;
};

/* Compile the schemas; NULL with a message in err on failure.  Caller frees. */
struct validator *validator_new(const struct validate_params *, char *err,
	    size_t errlen);
void	validator_free(struct validator *);

/*
 * Validate one body.  Always fills *res (which the caller releases with
 * validate_result_free()); returns 0 when accepted, -1 when refused.
 */
int	validate_invoice(struct validator *, const void *body, size_t len,
	    struct validate_result *res);
void	validate_result_free(struct validate_result *);

/*
 * The idempotency key: SHA-256 over length-prefixed (u32 big-endian) fields:
 * "ksefd-key-v1", seller NIP, P_2, P_1, SHA-256 of the exact bytes.
 */
void	validate_key_compute(const char *seller_nip, const char *number,
	    const char *issue_date, const unsigned char sha256[32],
	    unsigned char key[VALIDATE_KEY_LEN]);

/* "FA (3)", "FA (2)" (KSeF's systemCode spelling) or "unknown". */
const char *validate_form_name(enum validate_form);
/* "error" or "warning". */
const char *validate_severity_name(enum validate_severity);

/* Release libxml2's global state; call once at exit after the last validator_free(). */
void	validate_shutdown(void);

#endif
