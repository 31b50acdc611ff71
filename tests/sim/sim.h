/*
 * sim.h: the KSeF 2.0 simulator (ksef-sim), shared between its modules,
 * the program (sim_main.c) and the fuzz/replay harness.
 *
 * The request handler is a pure function over (method, uri, headers, body)
 * returning (status, headers, body, action); the evhttp glue in sim_main.c
 * only carries bytes and carries out the action (reply, delay, hang, reset).
 * Asynchronous processing runs in sim_run_due(), which the glue calls from a
 * libevent timer at the time sim_next_due() names.
 *
 * Nothing here is shared with src/ksef/: the simulator has its own encoding
 * and crypto code on purpose, so a bug in one cannot hide in the other.
 */
#ifndef KSEF_SIM_H
#define KSEF_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <regex.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "util.h"

/* ---- small string map (sim_map.c) ---- */
struct sim_map_ent {
	struct sim_map_ent	*next;
	uint64_t		 hash;
	char			*key;
	void			*val;
};

struct sim_map {
	struct sim_map_ent	**b;
	size_t			  nb;
	size_t			  n;
};

void	 sim_map_init(struct sim_map *);
void	*sim_map_get(const struct sim_map *, const char *key);
/* Insert or replace; returns the old value (or NULL). */
void	*sim_map_put(struct sim_map *, const char *key, void *val);
/* Remove; returns the value (or NULL). */
void	*sim_map_del(struct sim_map *, const char *key);
/* Free the map, calling fn on every value when fn is not NULL. */
void	 sim_map_free(struct sim_map *, void (*fn)(void *));
void	 sim_map_foreach(const struct sim_map *,
	    void (*fn)(const char *, void *, void *), void *arg);

/* ---- crypto and encodings (sim_crypto.c) ---- */
/* Base64 with padding; caller frees. */
char	*sim_b64_encode(const void *, size_t);
/* Strict standard Base64 (padding required, no whitespace); -1 on error. Caller frees *out. */
int	 sim_b64_decode(const char *, size_t, unsigned char **out, size_t *outlen);
/* Base64url without padding; caller frees. */
char	*sim_b64url_encode(const void *, size_t);
void	 sim_sha256(const void *, size_t, unsigned char out[32]);
/* Base64 of SHA-256 into out (45 bytes). */
void	 sim_sha256_b64(const void *, size_t, char out[48]);
void	 sim_hmac(const void *key, size_t klen, const void *, size_t, unsigned char out[32]);
void	 sim_random(void *, size_t);
/* CRC-8, poly 0x07, init 0, no reflection, no final xor. */
uint8_t	 sim_crc8(const void *, size_t);

struct sim_key {
	EVP_PKEY	*pkey;
	char		*cert_b64;	/* DER, Base64 */
	char		 cert_id[48];	/* Base64 SHA-256 of the DER */
	char		 key_id[48];	/* Base64 SHA-256 of the SPKI DER */
	int64_t		 valid_from, valid_to;
};

/* Load key and certificate from dir/name.{key,crt}, or create them (dir may be NULL). */
int	 sim_key_load(struct sim_key *, const char *dir, const char *name, char *err, size_t);
/* Make a fresh key and certificate, saving them to dir when dir is not NULL. */
int	 sim_key_create(struct sim_key *, const char *dir, const char *name, char *err, size_t);
void	 sim_key_free(struct sim_key *);
/* RSA-OAEP-SHA256 (MGF1-SHA256) decrypt; -1 on failure. Caller frees *out. */
int	 sim_oaep_decrypt(EVP_PKEY *, const unsigned char *, size_t,
	    unsigned char **out, size_t *outlen);
/* AES-256-CBC/PKCS#7 decrypt; -1 on a bad length or padding. Caller frees *out. */
int	 sim_aes_decrypt(const unsigned char key[32], const unsigned char iv[16],
	    const unsigned char *, size_t, unsigned char **out, size_t *outlen);

/* ---- time formats (sim_time.c) ---- */
/* ISO-8601 UTC with milliseconds and +00:00; out >= 40 bytes. */
void	 sim_time_iso(int64_t ms, char *out, size_t);
/* The same in Europe/Warsaw local time with its offset (UPO style). */
void	 sim_time_iso_local(int64_t ms, char *out, size_t);
/* YYYYMMDD (UTC) into out (9 bytes). */
void	 sim_time_ymd(int64_t ms, char *out);
/* YYYY-MM-DD in Warsaw local time into out (11 bytes). */
void	 sim_time_date_local(int64_t ms, char *out);
/* Parse ISO-8601 date-time (offset optional: none = Warsaw local) or a date; -1 on error. */
int	 sim_time_parse(const char *, int64_t *ms);

/* ---- limits (sim_limit.c) ---- */
enum sim_group {
	G_ONLINE_SESSION, G_INVOICE_SEND, G_BATCH_SESSION, G_INVOICE_STATUS,
	G_SESSION_LIST, G_SESSION_INVOICE_LIST, G_SESSION_MISC,
	G_INVOICE_METADATA, G_INVOICE_EXPORT, G_INVOICE_EXPORT_STATUS,
	G_INVOICE_DOWNLOAD, G_OTHER, G_PUBLIC, G_NGROUPS,
	G_NONE = -1
};
/* Faults only (no limits): presigned downloads, GET /storage/... */
enum { G_STORAGE = G_NGROUPS };
extern const char *const sim_group_names[G_NGROUPS];
int	 sim_group_lookup(const char *);

struct sim_limits {
	int	 enabled;
	int	 v[G_NGROUPS][3];	/* per window: 1 s, 60 s, 60 min (0 = no limit) */
	int64_t	 win_ms[3];		/* window lengths (scalable) */
};

void	 sim_limits_default(struct sim_limits *);
/* Read a JSON file/text in the GET /rate-limits shape (plus "public"); -1 with err. */
int	 sim_limits_parse(struct sim_limits *, const char *json, char *err, size_t);
json_t	*sim_limits_json(const struct sim_limits *);

struct sim_limiter {
	struct sim_map	 buckets;
};
void	 sim_limiter_init(struct sim_limiter *);
void	 sim_limiter_free(struct sim_limiter *);
/* Count a request; 0 when allowed, else the Retry-After in seconds. */
int64_t	 sim_limiter_hit(struct sim_limiter *, const struct sim_limits *,
	    const char *key, int group, int64_t now);

/* ---- faults (sim_fault.c) ---- */
enum sim_fault_kind {
	F_503, F_500, F_HANG, F_RESET, F_RESET_AFTER, F_SLOW, F_429,
	/* garbage: the request is processed, then its answer is mangled */
	F_TRUNCATED, F_WRONG_TYPES, F_HTML, F_HUGE, F_NKINDS
};
extern const char *const sim_fault_names[F_NKINDS];

struct sim_fault_rule {
	int		 group;		/* G_NONE = every group */
	int		 kind;
	double		 p;		/* probability, when every == 0 */
	unsigned long	 every;		/* every Nth request of the group */
	long		 count;		/* fires left; -1 = unlimited */
	int64_t		 arg_ms;	/* slow: delay; 429: Retry-After */
	int64_t		 size;		/* huge: body size in bytes */
	unsigned long	 seen;
};

/* Parse "GROUP:KIND[=MS]:RULE[:count=N]" (see --help); -1 with err. */
int	 sim_fault_parse(const char *, struct sim_fault_rule *, char *err, size_t);
/* Parse one JSON rule object; -1 with err. */
int	 sim_fault_from_json(json_t *, struct sim_fault_rule *, char *err, size_t);
json_t	*sim_fault_to_json(const struct sim_fault_rule *);

/* ---- the simulator ---- */
enum sim_env { SIM_ENV_TEST, SIM_ENV_DEMO, SIM_ENV_PROD };

struct sim_conf {
	char		*state_dir;
	char		*schema_dir;
	char		*origin;		/* e.g. https://127.0.0.1:1234 */
	struct sim_map	 tokens;		/* NIP -> KSeF token */
	int		 env;
	int		 xsd;			/* validate against the XSDs */
	int64_t		 processing_delay;
	int64_t		 auth_delay;
	int64_t		 storage_delay;
	int64_t		 challenge_ttl;
	int64_t		 auth_token_ttl;
	int64_t		 access_ttl;
	int64_t		 refresh_ttl;
	int64_t		 session_ttl;
	long		 session_max_invoices;
	long		 max_invoice_size;
	int64_t		 upo_url_ttl;
	long		 upo_page_size;
	long		 metadata_max;		/* records per filter set */
	char		*upo_subject;
	char		*latarnia_path;
	struct sim_limits limits;
	struct sim_fault_rule *faults;
	size_t		 nfaults;
	char		*reject_pattern;
	int64_t		 outage_start;		/* relative to start; -1 = none */
	int64_t		 outage_len;
	uint64_t	 seed;
	int64_t		 snapshot_interval;
};

void	 sim_conf_init(struct sim_conf *);
void	 sim_conf_free(struct sim_conf *);
/* Apply one option by its long name; -1 with err. */
int	 sim_conf_set(struct sim_conf *, const char *name, const char *val,
	    char *err, size_t);
/* Read a config file of `option = value` lines, calling set for each; -1 with err naming the line. */
int	 sim_conf_file(const char *path,
	    int (*set)(void *, const char *, const char *, char *, size_t), void *arg,
	    char *err, size_t);

struct sim;

struct sim_hdr {
	const char	*name;
	const char	*value;
};

struct sim_req {
	const char		*method;
	const char		*uri;		/* path and query */
	const char		*peer;		/* client IP */
	const struct sim_hdr	*h;
	size_t			 nh;
	const unsigned char	*body;
	size_t			 len;
};

enum sim_action {
	SIM_ACT_REPLY,		/* send the response (after delay_ms) */
	SIM_ACT_HANG,		/* never answer */
	SIM_ACT_RESET,		/* reset the connection instead of answering */
};

#define SIM_RESP_MAXH	8
struct sim_resp {
	int		 status;
	char		*ctype;
	struct buf	 body;
	char		*hn[SIM_RESP_MAXH];
	char		*hv[SIM_RESP_MAXH];
	int		 nh;
	int		 action;
	int64_t		 delay_ms;
};

/* Build the simulator from a config (taken over). NULL with err on failure. */
struct sim *sim_new(struct sim_conf *, int64_t now, char *err, size_t);
void	 sim_free(struct sim *);
/* Handle one request at time `now`. */
void	 sim_handle(struct sim *, const struct sim_req *, struct sim_resp *, int64_t now);
void	 sim_resp_free(struct sim_resp *);
/* Run asynchronous work due at `now`. */
void	 sim_run_due(struct sim *, int64_t now);
/* Time of the next asynchronous work, or -1. */
int64_t	 sim_next_due(const struct sim *);
/* Save the state snapshot when anything changed; -1 with err. */
int	 sim_snapshot(struct sim *, int force, char *err, size_t);
int64_t	 sim_snapshot_interval(const struct sim *);
/* Set the origin (scheme://host:port) once the port is known. */
void	 sim_set_origin(struct sim *, const char *);
/* The public keys' Base64 SPKI DER and ids, for the harness. */
EVP_PKEY *sim_public_key(struct sim *, int token_usage);

/* ---- asynchronous processing (sim_proc.c) ---- */
struct sim_xsd;
struct sim_xsd *sim_xsd_load(const char *schema_dir, char *err, size_t);
void	 sim_xsd_free(struct sim_xsd *);

struct sim_facts {
	char	*nip, *number, *type, *issue, *seller_name;
	char	*buyer_nip, *buyer_name, *currency;
	double	 net, gross, vat;
	int	 form;			/* SIM_FORM_* */
};
enum { SIM_FORM_FA3, SIM_FORM_FA2, SIM_NFORMS };

/*
 * Check an invoice XML: encoding, well-formedness, the schema of `form`
 * (when xsd is not NULL); fill facts. Returns 0, or the invoice status
 * code (430) with messages appended to details.
 */
int	 sim_xml_check(struct sim_xsd *, int form, const unsigned char *, size_t,
	    struct sim_facts *, json_t *details);
void	 sim_facts_free(struct sim_facts *);

#endif
