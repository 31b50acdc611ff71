/*
 * sim.c: the KSeF 2.0 simulator's state and request handler.
 *
 * sim_handle() is a pure function of (request, time) over the in-memory
 * state: it routes, applies outages, fault rules, authentication and the
 * sliding-window limits, and answers as KSeF would (API.md, openapi.json).
 * Sent invoices go on a min-heap by due time; sim_run_due() processes them
 * (decrypt result, XML and XSD checks, duplicate rule, KSeF number) and
 * finishes closed sessions with their UPO pages.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "sim.h"

enum { TOK_AUTH, TOK_ACCESS, TOK_REFRESH };
enum { SS_OPEN, SS_CLOSED, SS_DONE };

struct authop {
	char		 ref[40];
	char		 nip[16];
	char		 token_ref[40];		/* the KSeF token's own reference (UPO) */
	int64_t		 start, ready;
	int		 code;			/* final status: 200 or 450 */
	char		*detail;
	int		 redeemed;
	int64_t		 last_refresh;
	int64_t		 refresh_until;
};

struct tok {
	char		*str;
	int		 kind;
	struct authop	*op;
	int64_t		 exp;
};

struct session;

struct inv {
	char		 ref[40];
	struct session	*sess;
	int		 ordinal;
	char		 hash[48];
	unsigned char	*xml;			/* plain XML; NULL when undecryptable */
	size_t		 xml_len;
	int		 offline;
	char		*corrected;
	int64_t		 invoicing, acquisition, storage;
	int		 code;			/* 100 until processed */
	json_t		*details;
	json_t		*ext;
	char		 ksef[40];
	struct sim_facts f;
};

struct session {
	char		 ref[40];
	char		 nip[16];
	char		 token_ref[40];
	int		 form;
	unsigned char	 key[32], iv[16];
	int64_t		 created, updated, valid_until;
	int		 state;
	int		 code;
	struct inv	**inv;
	size_t		 ninv, cap;
	struct inv	**failed;
	size_t		 nfailed, capf;
	int		 pending;
	int		 nok;
	char		(*upo)[40];
	size_t		 nupo;
};

struct due {
	int64_t		 at;
	uint64_t	 seq;
	struct inv	*inv;
};

struct sim {
	struct sim_conf	 c;
	struct sim_key	 keys[2];		/* 0: KsefTokenEncryption, 1: SymmetricKeyEncryption */
	struct sim_key	*retired;
	size_t		 nretired;
	struct sim_xsd	*xsd;
	struct sim_map	 challenges;		/* challenge -> int64_t* timestampMs */
	struct sim_map	 ops;			/* ref -> authop */
	struct sim_map	 toks;			/* token -> tok */
	struct sim_map	 sessions;		/* ref -> session */
	struct sim_map	 invs;			/* invoice ref -> inv */
	struct sim_map	 ksef;			/* KSeF number -> inv */
	struct sim_map	 dups;			/* NIP, type, number -> inv */
	struct inv	**reg;			/* accepted invoices, in order */
	size_t		 nreg, capreg;
	struct due	*heap;
	size_t		 nheap, capheap;
	uint64_t	 seq, kseq, dseq;
	unsigned char	 secret[32];
	struct sim_limiter lim;
	regex_t		 reject_re;
	int		 have_re;
	int64_t		 outage_from, outage_until;
	char		*latarnia;		/* forced Latarnia status, or NULL */
	int		 event_id;
	uint64_t	 rng;
	int		 dirty;
	int64_t		 snap_next;		/* monotonic: no periodic snapshot before */
	int64_t		 started;
	struct {
		unsigned long	 req[G_NGROUPS + 1];
		unsigned long	 r429, faults[F_NKINDS], outage503;
		unsigned long	 received, accepted, rejected, duplicate;
		unsigned long	 opened, closed, auths, refreshes;
		unsigned long	 listed;	/* entries served by invoice lists */
	} st;
};

/* One request being handled. */
struct rq {
	struct sim		*s;
	const struct sim_req	*req;
	struct sim_resp		*resp;
	int64_t			 now;
	char			*path;		/* without the query, without /v2 */
	const char		*query;
	char			*seg[10];
	int			 nseg;
	int			 problem;
	struct tok		*tok;
	int			 group;
};

static const char *const form_system[SIM_NFORMS] = { "FA (3)", "FA (2)" };
static const char *const form_struct[SIM_NFORMS] = {
	"Schemat_FA(3)_v1-0E.xsd", "Schemat_FA(2)_v1-0E.xsd"
};

/* ------------------------------------------------------------------ ids */

static uint64_t
mix40(uint64_t x)
{
	return (x * 0x9E3779B97FULL + 0x5bd1e995ULL) & 0xffffffffffULL;
}

/* A reference number YYYYMMDD-TT-XXXXXXXXXX-XXXXXXXXXX-CC with its CRC-8. */
static void
ref_new(struct sim *s, const char *type, int64_t now, char out[40])
{
	char ymd[9];

	sim_time_ymd(now, ymd);
	s->seq++;
	snprintf(out, 40, "%s-%s-%010" PRIX64 "-%010" PRIX64 "-", ymd, type,
	    (uint64_t)((uint64_t)now & 0xffffffffffULL), (uint64_t)mix40(s->seq));
	snprintf(out + 34, 6, "%02X", sim_crc8(out, 33));
}

/* A KSeF number NIP-YYYYMMDD-HHHHHHHHHHHH-CC with its CRC-8 (API.md §12). */
static void
ksef_new(struct sim *s, const char *nip, int64_t now, char out[40])
{
	char ymd[9];

	sim_time_ymd(now, ymd);
	s->kseq++;
	snprintf(out, 40, "%.10s-%s-01%010" PRIX64 "-", nip, ymd, mix40(s->kseq));
	snprintf(out + 33, 7, "%02X", sim_crc8(out, 32));
}

static uint64_t
rng_next(struct sim *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

/* A JWT-looking bearer token (HS256 over our secret); opaque to clients. */
static struct tok *
tok_new(struct sim *s, int kind, struct authop *op, int64_t exp)
{
	static const char *const kinds[] = { "auth", "access", "refresh" };
	struct tok *t = xcalloc(1, sizeof(*t));
	unsigned char jti[12], mac[32];
	char *h, *p, *body, *sig, jh[25];

	sim_random(jti, sizeof(jti));
	hex_encode(jti, sizeof(jti), jh);
	h = sim_b64url_encode("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27);
	body = xasprintf("{\"iss\":\"ksef-sim\",\"typ\":\"%s\",\"ctx\":\"Nip:%s\","
	    "\"ref\":\"%s\",\"exp\":%" PRId64 ",\"jti\":\"%s\"}", kinds[kind], op->nip,
	    op->ref, exp / 1000, jh);
	p = sim_b64url_encode(body, strlen(body));
	free(body);
	body = xasprintf("%s.%s", h, p);
	sim_hmac(s->secret, sizeof(s->secret), body, strlen(body), mac);
	sig = sim_b64url_encode(mac, sizeof(mac));
	t->str = xasprintf("%s.%s", body, sig);
	free(h);
	free(p);
	free(body);
	free(sig);
	t->kind = kind;
	t->op = op;
	t->exp = exp;
	sim_map_put(&s->toks, t->str, t);
	s->dirty = 1;
	return t;
}

static void
tok_free(void *p)
{
	struct tok *t = p;

	free(t->str);
	free(t);
}

static void
op_free(void *p)
{
	struct authop *op = p;

	free(op->detail);
	free(op);
}

static void
inv_free(struct inv *i)
{
	free(i->xml);
	free(i->corrected);
	json_decref(i->details);
	json_decref(i->ext);
	sim_facts_free(&i->f);
	free(i);
}

static void
session_free(void *p)
{
	struct session *ss = p;
	size_t i;

	for (i = 0; i < ss->ninv; i++)
		inv_free(ss->inv[i]);
	free(ss->inv);
	free(ss->failed);
	free(ss->upo);
	free(ss);
}

/* The reference a configured KSeF token would have had when it was generated. */
static void
token_ref_for(struct sim *s, const char *nip, char out[40])
{
	unsigned char md[32];
	char h[65];

	sim_hmac(s->secret, sizeof(s->secret), nip, strlen(nip), md);
	hex_encode(md, sizeof(md), h);
	snprintf(out, 40, "20250101-EC-%.10s-%.10s-", h, h + 10);
	for (char *c = out; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');
	snprintf(out + 34, 6, "%02X", sim_crc8(out, 33));
}

/* ------------------------------------------------------------ responses */

static void
resp_header(struct sim_resp *r, const char *n, const char *v)
{
	if (r->nh >= SIM_RESP_MAXH)
		fatalx("sim: too many response headers");
	r->hn[r->nh] = xstrdup(n);
	r->hv[r->nh] = xstrdup(v);
	r->nh++;
}

static void
resp_set(struct sim_resp *r, int status, const char *ctype)
{
	r->status = status;
	free(r->ctype);
	r->ctype = ctype ? xstrdup(ctype) : NULL;
	buf_reset(&r->body);
}

/* Reply with a JSON value (taken over); NULL (a packing bug) becomes a 500. */
static void
reply_json(struct rq *q, int status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	if (s == NULL) {
		log_warnx("sim: cannot encode the answer to %s",
		    log_escape(q->req->uri, strlen(q->req->uri), 100));
		status = 500;
		s = xstrdup("{\"title\":\"Internal Server Error\",\"status\":500}");
	}
	resp_set(q->resp, status, "application/json");
	buf_addstr(&q->resp->body, s);
	free(s);
	json_decref(j);
}

/* The request URI for "instance": as sent when it is valid UTF-8, else escaped. */
static const char *
instance(const struct rq *q)
{
	json_t *t = json_string(q->req->uri);

	if (t == NULL)
		return log_escape(q->req->uri, strlen(q->req->uri), 500);
	json_decref(t);
	return q->req->uri;
}

/* Reply with XML and its x-ms-meta-hash. */
static void
reply_xml(struct rq *q, const void *xml, size_t len)
{
	char h[48];

	resp_set(q->resp, 200, "application/xml");
	buf_add(&q->resp->body, xml, len);
	sim_sha256_b64(xml, len, h);
	resp_header(q->resp, "x-ms-meta-hash", h);
}

static void
trace_id(char out[33])
{
	unsigned char r[16];

	sim_random(r, sizeof(r));
	hex_encode(r, sizeof(r), out);
}

static const char *
err_desc(int code)
{
	switch (code) {
	case 21111: return "Nieprawid\xc5\x82owe wyzwanie autoryzacyjne.";
	case 21155: return "Przekroczono dozwolon\xc4\x85 liczb\xc4\x99 faktur w sesji.";
	case 21164: return "Faktura o podanym identyfikatorze nie istnieje.";
	case 21165: return "Faktura o podanym numerze KSeF nie jest jeszcze dost\xc4\x99pna.";
	case 21173: return "Brak sesji o wskazanym numerze referencyjnym.";
	case 21178: return "Nie znaleziono UPO dla podanych kryteri\xc3\xb3w.";
	case 21180: return "Status sesji nie pozwala na wykonanie operacji.";
	case 21183: return "Zakres filtrowania wykracza poza dost\xc4\x99pny zakres danych.";
	case 21301: return "Brak autoryzacji.";
	case 21304: return "Brak uwierzytelnienia.";
	case 21402: return "Nieprawid\xc5\x82owy rozmiar pliku.";
	case 21403: return "Nieprawid\xc5\x82owy skr\xc3\xb3t pliku.";
	case 21418: return "Przekazany token kontynuacji ma nieprawid\xc5\x82owy format.";
	case 21470: return "Przes\xc5\x82\x61ny identyfikator klucza jest nieznany lub wskazuje "
	    "na wycofany klucz.";
	default: return "B\xc5\x82\xc4\x85" "d walidacji danych wej\xc5\x9b" "ciowych.";
	}
}

/* 400 with a KSeF exception code, in the legacy or the problem+json format. */
static void
reply_400(struct rq *q, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
reply_400(struct rq *q, int code, const char *fmt, ...)
{
	char detail[600], ts[40], tid[33], svc[40];
	json_t *details, *j;
	va_list ap;

	detail[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(detail, sizeof(detail), fmt, ap);
		va_end(ap);
	}
	details = json_array();
	if (detail[0] != '\0') {
		j = json_string(detail);
		json_array_append_new(details, j ? j :
		    json_string(log_escape(detail, strlen(detail), 500)));
	}
	sim_time_iso(q->now, ts, sizeof(ts));
	trace_id(tid);
	if (q->problem) {
		j = json_pack("{s:s,s:i,s:s,s:s,s:[{s:i,s:s,s:o}],s:s,s:s}",
		    "title", "Bad Request", "status", 400, "instance", instance(q),
		    "detail", err_desc(code), "errors", "code", code, "description",
		    err_desc(code), "details", details, "timestamp", ts, "traceId", tid);
		reply_json(q, 400, j);
		free(q->resp->ctype);
		q->resp->ctype = xstrdup("application/problem+json");
		return;
	}
	ref_new(q->s, "EX", q->now, svc);
	j = json_pack("{s:{s:[{s:i,s:s,s:o}],s:n,s:s,s:s,s:s,s:s}}", "exception",
	    "exceptionDetailList", "exceptionCode", code, "exceptionDescription",
	    err_desc(code), "details", details, "referenceNumber", "serviceCode", svc,
	    "serviceCtx", "srvKSEFSIM", "serviceName", "ksef-sim", "timestamp", ts);
	reply_json(q, 400, j);
}

/* problem+json with the given status (401, 403, 404, 405, 410, 500). */
static void
reply_problem(struct rq *q, int status, const char *title, const char *detail)
{
	char ts[40], tid[33];
	json_t *j;

	sim_time_iso(q->now, ts, sizeof(ts));
	trace_id(tid);
	j = json_pack("{s:s,s:i,s:s,s:s,s:s,s:s}", "title", title, "status", status,
	    "detail", detail, "instance", instance(q), "timestamp", ts, "traceId", tid);
	reply_json(q, status, j);
	free(q->resp->ctype);
	q->resp->ctype = xstrdup("application/problem+json");
}

static void
reply_429(struct rq *q, int64_t ra)
{
	char ts[40], tid[33], det[200], num[24];
	json_t *j;

	q->s->st.r429++;
	snprintf(det, sizeof(det), "Przekroczono limit \xc5\xbc\xc4\x85" "da\xc5\x84 (%s). "
	    "Spr\xc3\xb3" "buj ponownie za %" PRId64 " sekund.",
	    q->group == G_STORAGE ? "storage" : q->group >= 0 ?
	    sim_group_names[q->group] : "-", ra);
	if (q->problem) {
		sim_time_iso(q->now, ts, sizeof(ts));
		trace_id(tid);
		j = json_pack("{s:s,s:i,s:s,s:s,s:s,s:s}", "title", "Too Many Requests",
		    "status", 429, "instance", instance(q), "detail", det, "timestamp", ts,
		    "traceId", tid);
		reply_json(q, 429, j);
		free(q->resp->ctype);
		q->resp->ctype = xstrdup("application/problem+json");
	} else
		reply_json(q, 429, json_pack("{s:{s:i,s:s,s:[s]}}", "status", "code", 429,
		    "description", "Too Many Requests", "details", det));
	snprintf(num, sizeof(num), "%" PRId64, ra);
	resp_header(q->resp, "Retry-After", num);
}

static void
reply_html(struct rq *q, int status, const char *title)
{
	resp_set(q->resp, status, "text/html");
	buf_addf(&q->resp->body, "<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n"
	    "<center><h1>%d %s</h1></center>\r\n<hr><center>ksef-sim gateway</center>\r\n"
	    "</body>\r\n</html>\r\n", status, title, status, title);
}

/* ------------------------------------------------------------- requests */

static const char *
hdr_get(const struct rq *q, const char *name)
{
	size_t i;

	for (i = 0; i < q->req->nh; i++)
		if (strcasecmp(q->req->h[i].name, name) == 0)
			return q->req->h[i].value;
	return NULL;
}

/* The decoded value of a query parameter, or NULL. Caller frees. */
static char *
query_get(const struct rq *q, const char *name)
{
	const char *p = q->query, *e, *v;
	size_t nl = strlen(name);
	unsigned char c;
	char h2[3] = "";
	struct buf b;

	while (p != NULL && *p != '\0') {
		e = strchr(p, '&');
		if (e == NULL)
			e = p + strlen(p);
		if ((size_t)(e - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			buf_init(&b);
			for (v = p + nl + 1; v < e; v++) {
				h2[0] = v[1];
				h2[1] = *v == '%' && v + 2 < e ? v[2] : '\0';
				if (*v == '%' && v + 2 < e && hex_decode(h2, &c, 1) == 0) {
					buf_add(&b, &c, 1);
					v += 2;
				} else if (*v == '+')
					buf_add(&b, " ", 1);
				else
					buf_add(&b, v, 1);
			}
			buf_add(&b, "", 0);
			return (char *)buf_release(&b, NULL);
		}
		p = *e ? e + 1 : e;
	}
	return NULL;
}

/* An integer query parameter within [min, max], else def; -1 on a bad value (replied). */
static int
query_int(struct rq *q, const char *name, long def, long min, long max, long *out)
{
	char *v = query_get(q, name), *end;
	long n;

	*out = def;
	if (v == NULL)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || errno || n < min || n > max) {
		reply_400(q, 21405, "Parametr %s musi by\xc4\x87 liczb\xc4\x85 z zakresu "
		    "%ld..%ld.", name, min, max);
		free(v);
		return -1;
	}
	free(v);
	*out = n;
	return 0;
}

/*
 * Long plain strings.  jansson reads a string a byte at a time, about 10 ns
 * a byte here: the base64 of a 5 KB invoice cost the simulator 45 us, a
 * fifth of its CPU per invoice in scripts/bench pipeline, where it shares a
 * core with the load generator and held the rate down.  So a string member
 * of the top-level object at least CUT_MIN bytes long that needs no
 * unescaping (printable ASCII, no backslash) is cut out of a copy of the
 * body, jansson parses the rest, and the string is put back as it is.  A
 * body this scan does not follow, and one whose copy jansson refuses, is
 * parsed whole, so every error is reported as before.
 */
#define CUT_MIN		1024
#define CUT_MAX		4
#define CUT_KEY		64

struct cut {
	const char	*val;		/* the value's bytes in the body */
	size_t		 len;
	char		 key[CUT_KEY];
};

/* End of the string that opens at p[i] (a quote): index after its closing quote, or 0. */
static size_t
cut_string(const char *p, size_t len, size_t i, int *plain)
{
	*plain = 1;
	for (i++; i < len; i++) {
		if (p[i] == '"')
			return i + 1;
		if (p[i] == '\\') {
			*plain = 0;
			i++;
		} else if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
			*plain = 0;
	}
	return 0;
}

/* The body with its long plain top-level strings emptied (cuts); NULL if none. */
static char *
cut_long_strings(const char *p, size_t len, struct cut *cuts, int *ncuts,
    size_t *outlen)
{
	size_t i = 0, e, ko = 0, kl = 0, o = 0, from = 0;
	int depth = 0, plain, colon = 0, n = 0;
	char *out;

	while (i < len) {
		switch (p[i]) {
		case '"':
			if ((e = cut_string(p, len, i, &plain)) == 0)
				return NULL;
			if (depth == 1 && !colon) {
				ko = i + 1;		/* a key */
				kl = plain ? e - i - 2 : CUT_KEY;
			} else if (depth == 1 && plain && e - i - 2 >= CUT_MIN &&
			    kl < CUT_KEY && n < CUT_MAX) {
				cuts[n].val = p + i + 1;
				cuts[n].len = e - i - 2;
				memcpy(cuts[n].key, p + ko, kl);
				cuts[n].key[kl] = '\0';
				n++;
			}
			colon = 0;
			i = e;
			continue;
		case ':':
			colon = 1;
			break;
		case '{':
		case '[':
			depth++;
			colon = 0;
			break;
		case '}':
		case ']':
			depth--;
			break;
		case ',':
			colon = 0;
			break;
		}
		i++;
	}
	if (n == 0)
		return NULL;
	out = xmalloc(len);
	for (*ncuts = 0; *ncuts < n; (*ncuts)++) {
		e = (size_t)(cuts[*ncuts].val - p);
		memcpy(out + o, p + from, e - from);
		o += e - from;
		from = e + cuts[*ncuts].len;
	}
	memcpy(out + o, p + from, len - from);
	*outlen = o + len - from;
	return out;
}

/* json_loadb of a body, its long plain strings spared jansson's lexer. */
static json_t *
json_load_body(const char *p, size_t len, json_error_t *je)
{
	struct cut cuts[CUT_MAX];
	json_t *j = NULL;
	size_t clen;
	char *c;
	int n, i;

	if ((c = cut_long_strings(p, len, cuts, &n, &clen)) != NULL) {
		j = json_loadb(c, clen, JSON_REJECT_DUPLICATES, je);
		free(c);
		for (i = 0; j != NULL && i < n; i++) {
			if (!json_is_object(j) || !json_is_string(json_object_get(j,
			    cuts[i].key)) || json_object_set_new(j, cuts[i].key,
			    json_stringn_nocheck(cuts[i].val, cuts[i].len)) != 0) {
				json_decref(j);
				j = NULL;
			}
		}
	}
	return j != NULL ? j : json_loadb(p, len, JSON_REJECT_DUPLICATES, je);
}

/* Parse the body as a JSON object; NULL (replied 21405) on failure. */
static json_t *
body_json(struct rq *q)
{
	json_error_t je;
	json_t *j;

	if (q->req->len == 0) {
		reply_400(q, 21405, "Brak tre\xc5\x9b" "ci \xc5\xbc\xc4\x85" "dania (oczekiwano JSON).");
		return NULL;
	}
	j = json_load_body((const char *)q->req->body, q->req->len, &je);
	if (j == NULL) {
		reply_400(q, 21405, "Nieprawid\xc5\x82owy JSON: linia %d, kolumna %d: %s",
		    je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		reply_400(q, 21405, "Oczekiwano obiektu JSON.");
		json_decref(j);
		return NULL;
	}
	return j;
}

/* A required (or optional) string member; NULL (replied) when missing or not a string. */
static const char *
jstr(struct rq *q, json_t *o, const char *path, const char *name, int required, int *bad)
{
	json_t *v = json_object_get(o, name);

	if (*bad)
		return NULL;
	if (v == NULL || json_is_null(v)) {
		if (required) {
			reply_400(q, 21405, "Pole '%s%s' jest wymagane.", path, name);
			*bad = 1;
		}
		return NULL;
	}
	if (!json_is_string(v)) {
		reply_400(q, 21405, "Pole '%s%s' musi by\xc4\x87 tekstem.", path, name);
		*bad = 1;
		return NULL;
	}
	return json_string_value(v);
}

/* A required object member; NULL (replied) when missing or not an object. */
static json_t *
jobj(struct rq *q, json_t *o, const char *name, int *bad)
{
	json_t *v = json_object_get(o, name);

	if (*bad)
		return NULL;
	if (!json_is_object(v)) {
		reply_400(q, 21405, v ? "Pole '%s' musi by\xc4\x87 obiektem." :
		    "Pole '%s' jest wymagane.", name);
		*bad = 1;
		return NULL;
	}
	return v;
}

/* Decode a Base64 field (replied 21405 on failure). */
static int
jb64(struct rq *q, const char *name, const char *v, unsigned char **out, size_t *len)
{
	if (sim_b64_decode(v, strlen(v), out, len) == -1) {
		reply_400(q, 21405, "Pole '%s' nie jest poprawnym ci\xc4\x85giem Base64.", name);
		return -1;
	}
	return 0;
}

/* The bearer token of the request if it is a live token of `kind`; else replies 401. */
static struct tok *
bearer(struct rq *q, int kind)
{
	const char *a = hdr_get(q, "Authorization");
	struct tok *t;

	if (a == NULL || strncasecmp(a, "Bearer ", 7) != 0) {
		reply_problem(q, 401, "Unauthorized", "Brak tokena dost\xc4\x99powego "
		    "(nag\xc5\x82\xc3\xb3wek Authorization: Bearer).");
		return NULL;
	}
	t = sim_map_get(&q->s->toks, a + 7);
	if (t == NULL || t->kind != kind) {
		reply_problem(q, 401, "Unauthorized", "Nieprawid\xc5\x82owy token.");
		return NULL;
	}
	if (t->exp <= q->now) {
		reply_problem(q, 401, "Unauthorized", "Token wygas\xc5\x82.");
		return NULL;
	}
	return t;
}

/* ----------------------------------------------------------------- auth */

static json_t *
key_json(const struct sim_key *k, const char *usage)
{
	char from[40], to[40];

	sim_time_iso(k->valid_from, from, sizeof(from));
	sim_time_iso(k->valid_to, to, sizeof(to));
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:[s]}", "certificate", k->cert_b64,
	    "certificateId", k->cert_id, "publicKeyId", k->key_id, "validFrom", from,
	    "validTo", to, "usage", usage);
}

static void
h_keys(struct rq *q)
{
	reply_json(q, 200, json_pack("[o,o]", key_json(&q->s->keys[0], "KsefTokenEncryption"),
	    key_json(&q->s->keys[1], "SymmetricKeyEncryption")));
}

static void
h_challenge(struct rq *q)
{
	struct sim *s = q->s;
	int64_t *ts = xmalloc(sizeof(*ts));
	char ref[40], iso[40];

	ref_new(s, "CR", q->now, ref);
	*ts = q->now;
	free(sim_map_put(&s->challenges, ref, ts));
	sim_time_iso(q->now, iso, sizeof(iso));
	reply_json(q, 200, json_pack("{s:s,s:s,s:I,s:s}", "challenge", ref, "timestamp", iso,
	    "timestampMs", (json_int_t)q->now, "clientIp", q->req->peer ? q->req->peer : ""));
}

/* Try the current key, then retired ones: 0 ok, 1 retired key (21470), -1 fails. */
static int
key_decrypt(struct sim *s, int usage, const unsigned char *in, size_t len,
    unsigned char **out, size_t *outlen)
{
	size_t i;

	if (sim_oaep_decrypt(s->keys[usage].pkey, in, len, out, outlen) == 0)
		return 0;
	for (i = 0; i < s->nretired; i++)
		if (i % 2 == (size_t)usage &&
		    sim_oaep_decrypt(s->retired[i].pkey, in, len, out, outlen) == 0) {
			free(*out);
			*out = NULL;
			return 1;
		}
	return -1;
}

static void
h_ksef_token(struct rq *q)
{
	struct sim *s = q->s;
	json_t *j = body_json(q), *ctx;
	const char *chal, *type, *val, *enc, *kid, *want;
	unsigned char *raw = NULL, *plain = NULL;
	size_t rawlen, plen;
	int64_t *cts;
	struct authop *op;
	struct tok *t;
	char *bar, iso[40], tsbuf[24];
	int bad = 0, r;

	if (j == NULL)
		return;
	chal = jstr(q, j, "", "challenge", 1, &bad);
	ctx = jobj(q, j, "contextIdentifier", &bad);
	type = jstr(q, ctx, "contextIdentifier.", "type", 1, &bad);
	val = jstr(q, ctx, "contextIdentifier.", "value", 1, &bad);
	enc = jstr(q, j, "", "encryptedToken", 1, &bad);
	kid = jstr(q, j, "", "publicKeyId", 0, &bad);
	if (bad)
		goto out;
	if (strcmp(type, "Nip") != 0 && strcmp(type, "InternalId") != 0 &&
	    strcmp(type, "NipVatUe") != 0 && strcmp(type, "PeppolId") != 0) {
		reply_400(q, 21405, "Pole 'contextIdentifier.type' ma nieznan\xc4\x85 warto\xc5\x9b\xc4\x87.");
		goto out;
	}
	if (strcmp(type, "Nip") == 0 && !nip_valid(val)) {
		reply_400(q, 21405, "Pole 'contextIdentifier.value' nie jest poprawnym NIP.");
		goto out;
	}
	if (kid != NULL && strcmp(kid, s->keys[0].key_id) != 0) {
		reply_400(q, 21470, "Klucz o identyfikatorze %s nie jest wspierany.",
		    log_escape(kid, strlen(kid), 60));
		goto out;
	}
	if (jb64(q, "encryptedToken", enc, &raw, &rawlen) == -1)
		goto out;
	cts = sim_map_get(&s->challenges, chal);
	if (cts == NULL || *cts + s->c.challenge_ttl < q->now) {
		reply_400(q, 21111, "Wyzwanie %s jest nieznane, wykorzystane lub wygas\xc5\x82o.",
		    log_escape(chal, strlen(chal), 40));
		goto out;
	}
	if ((r = key_decrypt(s, 0, raw, rawlen, &plain, &plen)) == 1) {
		reply_400(q, 21470, "Token zaszyfrowano wycofanym kluczem publicznym.");
		goto out;
	}
	op = xcalloc(1, sizeof(*op));
	ref_new(s, "AU", q->now, op->ref);
	snprintf(op->nip, sizeof(op->nip), "%.10s", strcmp(type, "Nip") == 0 ? val : "0000000000");
	token_ref_for(s, op->nip, op->token_ref);
	op->start = q->now;
	op->ready = q->now + s->c.auth_delay;
	op->code = 450;
	snprintf(tsbuf, sizeof(tsbuf), "%" PRId64, *cts);
	want = strcmp(type, "Nip") == 0 ? sim_map_get(&s->c.tokens, val) : NULL;
	if (r == -1 || memchr(plain, '\0', plen) != NULL || (bar = strrchr((char *)plain, '|')) == NULL)
		op->detail = xstrdup("Nieprawid\xc5\x82owy token");
	else {
		*bar = '\0';
		if (strcmp(bar + 1, tsbuf) != 0)
			op->detail = xstrdup("Nieprawid\xc5\x82owy czas tokena");
		else if (want == NULL || strcmp(want, (char *)plain) != 0)
			op->detail = xstrdup("Nieprawid\xc5\x82owy token");
		else
			op->code = 200;
	}
	free(sim_map_del(&s->challenges, chal));
	sim_map_put(&s->ops, op->ref, op);
	s->st.auths++;
	t = tok_new(s, TOK_AUTH, op, q->now + s->c.auth_token_ttl);
	sim_time_iso(t->exp, iso, sizeof(iso));
	reply_json(q, 202, json_pack("{s:s,s:{s:s,s:s}}", "referenceNumber", op->ref,
	    "authenticationToken", "token", t->str, "validUntil", iso));
out:
	if (plain != NULL)
		explicit_wipe(plain, plen);
	free(plain);
	free(raw);
	json_decref(j);
}

static void
h_auth_status(struct rq *q, const char *ref)
{
	struct tok *t = bearer(q, TOK_AUTH);
	struct authop *op;
	json_t *j, *st;
	char start[40], iso[40];
	int code;

	if (t == NULL)
		return;
	if ((op = sim_map_get(&q->s->ops, ref)) == NULL) {
		reply_400(q, 21304, "Operacja uwierzytelniania o numerze referencyjnym %s nie "
		    "zosta\xc5\x82\x61 znaleziona.", log_escape(ref, strlen(ref), 40));
		return;
	}
	if (op != t->op) {
		reply_problem(q, 401, "Unauthorized", "Token nie dotyczy tej operacji "
		    "uwierzytelniania.");
		return;
	}
	code = q->now < op->ready ? 100 : op->code;
	if (code == 100)
		st = json_pack("{s:i,s:s}", "code", 100, "description", "Uwierzytelnianie w toku");
	else if (code == 200)
		st = json_pack("{s:i,s:s}", "code", 200, "description",
		    "Uwierzytelnianie zako\xc5\x84\x63zone sukcesem");
	else
		st = json_pack("{s:i,s:s,s:[s]}", "code", code, "description",
		    "Uwierzytelnianie zako\xc5\x84\x63zone niepowodzeniem z powodu b\xc5\x82\xc4\x99" "dnego tokenu",
		    "details", op->detail ? op->detail : "");
	sim_time_iso(op->start, start, sizeof(start));
	j = json_pack("{s:s,s:s,s:{s:s,s:s,s:s},s:o,s:b}", "startDate", start,
	    "authenticationMethod", "Token", "authenticationMethodInfo", "category", "Token",
	    "code", "token.ksef", "displayName", "Token KSeF", "status", st,
	    "isTokenRedeemed", op->redeemed);
	if (op->last_refresh) {
		sim_time_iso(op->last_refresh, iso, sizeof(iso));
		json_object_set_new(j, "lastTokenRefreshDate", json_string(iso));
	}
	if (op->refresh_until) {
		sim_time_iso(op->refresh_until, iso, sizeof(iso));
		json_object_set_new(j, "refreshTokenValidUntil", json_string(iso));
	}
	reply_json(q, 200, j);
}

static json_t *
tokinfo(const struct tok *t)
{
	char iso[40];

	sim_time_iso(t->exp, iso, sizeof(iso));
	return json_pack("{s:s,s:s}", "token", t->str, "validUntil", iso);
}

static void
h_redeem(struct rq *q)
{
	struct tok *t = bearer(q, TOK_AUTH), *a, *r;
	struct authop *op;

	if (t == NULL)
		return;
	op = t->op;
	if (q->now < op->ready || op->code != 200) {
		reply_400(q, 21301, "Uwierzytelnianie %s nie zako\xc5\x84\x63zy\xc5\x82o si\xc4\x99 "
		    "sukcesem (status %d).", op->ref, q->now < op->ready ? 100 : op->code);
		return;
	}
	if (op->redeemed) {
		reply_400(q, 21301, "Tokeny dla operacji uwierzytelniania %s zosta\xc5\x82y ju\xc5\xbc "
		    "pobrane.", op->ref);
		return;
	}
	op->redeemed = 1;
	a = tok_new(q->s, TOK_ACCESS, op, q->now + q->s->c.access_ttl);
	r = tok_new(q->s, TOK_REFRESH, op, q->now + q->s->c.refresh_ttl);
	op->refresh_until = r->exp;
	reply_json(q, 200, json_pack("{s:o,s:o}", "accessToken", tokinfo(a),
	    "refreshToken", tokinfo(r)));
}

static void
h_refresh(struct rq *q)
{
	struct tok *t = bearer(q, TOK_REFRESH), *a;

	if (t == NULL)
		return;
	a = tok_new(q->s, TOK_ACCESS, t->op, q->now + q->s->c.access_ttl);
	t->op->last_refresh = q->now;
	q->s->st.refreshes++;
	reply_json(q, 200, json_pack("{s:o}", "accessToken", tokinfo(a)));
}

/* ------------------------------------------------------------- sessions */

static const char *
sess_desc(int code)
{
	switch (code) {
	case 100: return "Sesja interaktywna otwarta";
	case 170: return "Sesja interaktywna zamkni\xc4\x99ta";
	case 200: return "Sesja interaktywna przetworzona pomy\xc5\x9blnie";
	case 415: return "B\xc5\x82\xc4\x85" "d odszyfrowania dostarczonego klucza";
	case 440: return "Sesja anulowana";
	case 445: return "B\xc5\x82\xc4\x85" "d weryfikacji, brak poprawnych faktur";
	default: return "Nieznany b\xc5\x82\xc4\x85" "d";
	}
}

static const char *
inv_desc(int code)
{
	switch (code) {
	case 100: return "Faktura przyj\xc4\x99ta do dalszego przetwarzania";
	case 150: return "Trwa przetwarzanie";
	case 200: return "Sukces";
	case 410: return "Nieprawid\xc5\x82owy zakres uprawnie\xc5\x84";
	case 430: return "B\xc5\x82\xc4\x85" "d weryfikacji pliku faktury";
	case 435: return "B\xc5\x82\xc4\x85" "d odszyfrowania pliku";
	case 440: return "Duplikat faktury";
	case 450: return "B\xc5\x82\xc4\x85" "d weryfikacji semantyki dokumentu faktury";
	default: return "Nieznany b\xc5\x82\xc4\x85" "d";
	}
}

/* Close a session for good once nothing of it is being processed. */
static void
session_finish(struct sim *s, struct session *ss, int64_t now)
{
	size_t pages, i;

	if (ss->state != SS_CLOSED || ss->pending > 0)
		return;
	ss->state = SS_DONE;
	ss->updated = now;
	if (ss->ninv == 0)
		ss->code = 440;
	else if (ss->nok == 0)
		ss->code = 445;
	else {
		ss->code = 200;
		pages = ((size_t)ss->nok + (size_t)s->c.upo_page_size - 1) / (size_t)s->c.upo_page_size;
		ss->upo = xcalloc(pages, sizeof(*ss->upo));
		for (i = 0; i < pages; i++)
			ref_new(s, "EU", now, ss->upo[i]);
		ss->nupo = pages;
	}
	s->dirty = 1;
}

static void
session_close(struct sim *s, struct session *ss, int64_t now)
{
	if (ss->state != SS_OPEN)
		return;
	ss->state = SS_CLOSED;
	ss->code = 170;
	ss->updated = now;
	s->st.closed++;
	session_finish(s, ss, now);
	s->dirty = 1;
}

/* The caller's session `ref`, closing it when its lifetime is over; NULL (replied) if none. */
static struct session *
session_get(struct rq *q, const char *ref)
{
	struct session *ss = sim_map_get(&q->s->sessions, ref);

	if (ss == NULL || strcmp(ss->nip, q->tok->op->nip) != 0) {
		reply_400(q, 21173, "Sesja o numerze referencyjnym %s nie zosta\xc5\x82\x61 "
		    "znaleziona.", log_escape(ref, strlen(ref), 40));
		return NULL;
	}
	if (ss->state == SS_OPEN && q->now >= ss->valid_until)
		session_close(q->s, ss, q->now);
	return ss;
}

static struct session *
session_new(struct sim *s, const char *nip, const char *token_ref, int form, int64_t now)
{
	struct session *ss = xcalloc(1, sizeof(*ss));

	ref_new(s, "SO", now, ss->ref);
	snprintf(ss->nip, sizeof(ss->nip), "%s", nip);
	snprintf(ss->token_ref, sizeof(ss->token_ref), "%s", token_ref);
	ss->form = form;
	ss->created = ss->updated = now;
	ss->valid_until = now + s->c.session_ttl;
	ss->code = 100;
	sim_map_put(&s->sessions, ss->ref, ss);
	s->st.opened++;
	s->dirty = 1;
	return ss;
}

static void
h_session_open(struct rq *q)
{
	struct sim *s = q->s;
	json_t *j = body_json(q), *fc, *enc;
	const char *sc, *sv, *v, *ek, *ivs, *kid;
	unsigned char *key = NULL, *iv = NULL, *raw = NULL;
	size_t klen = 0, ivlen, rawlen;
	struct session *ss;
	char iso[40];
	int bad = 0, form = -1, r;

	if (j == NULL)
		return;
	fc = jobj(q, j, "formCode", &bad);
	sc = jstr(q, fc, "formCode.", "systemCode", 1, &bad);
	sv = jstr(q, fc, "formCode.", "schemaVersion", 1, &bad);
	v = jstr(q, fc, "formCode.", "value", 1, &bad);
	enc = jobj(q, j, "encryption", &bad);
	ek = jstr(q, enc, "encryption.", "encryptedSymmetricKey", 1, &bad);
	ivs = jstr(q, enc, "encryption.", "initializationVector", 1, &bad);
	kid = jstr(q, enc, "encryption.", "publicKeyId", 0, &bad);
	if (bad)
		goto out;
	if (strcmp(sc, "FA (3)") == 0 && strcmp(sv, "1-0E") == 0 && strcmp(v, "FA") == 0)
		form = SIM_FORM_FA3;
	else if (strcmp(sc, "FA (2)") == 0 && strcmp(sv, "1-0E") == 0 && strcmp(v, "FA") == 0 &&
	    s->c.env == SIM_ENV_TEST)
		form = SIM_FORM_FA2;
	if (form == -1) {
		reply_400(q, 21405, "Nieobs\xc5\x82ugiwany formCode {systemCode: %s, schemaVersion: "
		    "%s, value: %s}; dozwolone: FA (3)/1-0E/FA%s.",
		    log_escape(sc, strlen(sc), 30), log_escape(sv, strlen(sv), 30),
		    log_escape(v, strlen(v), 30), s->c.env == SIM_ENV_TEST ? ", FA (2)/1-0E/FA" : "");
		goto out;
	}
	if (kid != NULL && strcmp(kid, s->keys[1].key_id) != 0) {
		reply_400(q, 21470, "Klucz o identyfikatorze %s nie jest wspierany.",
		    log_escape(kid, strlen(kid), 60));
		goto out;
	}
	if (jb64(q, "encryption.initializationVector", ivs, &iv, &ivlen) == -1 ||
	    jb64(q, "encryption.encryptedSymmetricKey", ek, &raw, &rawlen) == -1)
		goto out;
	if (ivlen != 16) {
		reply_400(q, 21405, "Pole 'encryption.initializationVector' musi mie\xc4\x87 16 "
		    "bajt\xc3\xb3w (ma %zu).", ivlen);
		goto out;
	}
	if ((r = key_decrypt(s, 1, raw, rawlen, &key, &klen)) == 1) {
		reply_400(q, 21470, "Klucz symetryczny zaszyfrowano wycofanym kluczem publicznym.");
		goto out;
	}
	ss = session_new(s, q->tok->op->nip, q->tok->op->token_ref, form, q->now);
	if (r == -1 || klen != 32) {
		/* KSeF answers 201 and fails the session: status 415 */
		ss->state = SS_DONE;
		ss->code = 415;
	} else {
		memcpy(ss->key, key, 32);
		memcpy(ss->iv, iv, 16);
	}
	sim_time_iso(ss->valid_until, iso, sizeof(iso));
	reply_json(q, 201, json_pack("{s:s,s:s}", "referenceNumber", ss->ref, "validUntil", iso));
out:
	if (key != NULL)
		explicit_wipe(key, klen);
	free(key);
	free(iv);
	free(raw);
	json_decref(j);
}

/* Make room for one more element in a doubling array. */
static void *
grow(void *p, size_t n, size_t *cap, size_t sz)
{
	if (n < *cap)
		return p;
	*cap = *cap ? *cap * 2 : 16;
	return xrealloc(p, *cap * sz);
}

static void
reg_add(struct sim *s, struct inv *i)
{
	s->reg = grow(s->reg, s->nreg, &s->capreg, sizeof(*s->reg));
	s->reg[s->nreg++] = i;
	i->sess->nok++;
}

static void
failed_add(struct session *ss, struct inv *i)
{
	ss->failed = grow(ss->failed, ss->nfailed, &ss->capf, sizeof(*ss->failed));
	ss->failed[ss->nfailed++] = i;
}

static void
heap_push(struct sim *s, struct inv *i, int64_t at)
{
	size_t k, p;
	struct due d = { at, ++s->dseq, i }, t;

	s->heap = grow(s->heap, s->nheap, &s->capheap, sizeof(*s->heap));
	k = s->nheap++;
	s->heap[k] = d;
	while (k > 0) {
		p = (k - 1) / 2;
		if (s->heap[p].at < s->heap[k].at ||
		    (s->heap[p].at == s->heap[k].at && s->heap[p].seq < s->heap[k].seq))
			break;
		t = s->heap[p];
		s->heap[p] = s->heap[k];
		s->heap[k] = t;
		k = p;
	}
}

static struct inv *
heap_pop(struct sim *s)
{
	struct inv *top = s->heap[0].inv;
	size_t k = 0, l, m;
	struct due t;

	s->heap[0] = s->heap[--s->nheap];
	for (;;) {
		l = 2 * k + 1;
		m = k;
		if (l < s->nheap && (s->heap[l].at < s->heap[m].at ||
		    (s->heap[l].at == s->heap[m].at && s->heap[l].seq < s->heap[m].seq)))
			m = l;
		if (l + 1 < s->nheap && (s->heap[l + 1].at < s->heap[m].at ||
		    (s->heap[l + 1].at == s->heap[m].at && s->heap[l + 1].seq < s->heap[m].seq)))
			m = l + 1;
		if (m == k)
			break;
		t = s->heap[m];
		s->heap[m] = s->heap[k];
		s->heap[k] = t;
		k = m;
	}
	return top;
}

static void
inv_append(struct session *ss, struct inv *i)
{
	ss->inv = grow(ss->inv, ss->ninv, &ss->cap, sizeof(*ss->inv));
	ss->inv[ss->ninv++] = i;
	i->sess = ss;
	i->ordinal = (int)ss->ninv;
}

/* Check a declared Base64 SHA-256 (44 chars) against data. */
static int
hash_matches(const char *declared, const void *p, size_t n)
{
	char h[48];

	sim_sha256_b64(p, n, h);
	return strcmp(declared, h) == 0;
}

static int
json_int_field(struct rq *q, json_t *o, const char *name, json_int_t *out, int *bad)
{
	json_t *v = json_object_get(o, name);

	if (*bad)
		return -1;
	if (!json_is_integer(v) || json_integer_value(v) < 1) {
		reply_400(q, 21405, v ? "Pole '%s' musi by\xc4\x87 liczb\xc4\x85 ca\xc5\x82kowit\xc4\x85 "
		    ">= 1." : "Pole '%s' jest wymagane.", name);
		*bad = 1;
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

static void
h_invoice_send(struct rq *q, const char *ref)
{
	struct sim *s = q->s;
	struct session *ss;
	json_t *j = NULL, *off;
	const char *ih, *eh, *ec, *corr;
	json_int_t isz = 0, esz = 0;
	unsigned char *enc = NULL, *plain = NULL;
	size_t elen, plen = 0;
	struct inv *i;
	int bad = 0;

	if ((ss = session_get(q, ref)) == NULL || (j = body_json(q)) == NULL)
		goto out;
	if (ss->state != SS_OPEN) {
		reply_400(q, 21180, "Status sesji %d uniemo\xc5\xbcliwia wysy\xc5\x82k\xc4\x99 faktur.",
		    ss->code);
		goto out;
	}
	if (ss->ninv >= (size_t)s->c.session_max_invoices) {
		reply_400(q, 21155, "Sesja o numerze referencyjnym %s osi\xc4\x85gn\xc4\x99\xc5\x82\x61 "
		    "dozwolony limit liczby faktur (%ld).", ss->ref, s->c.session_max_invoices);
		goto out;
	}
	ih = jstr(q, j, "", "invoiceHash", 1, &bad);
	json_int_field(q, j, "invoiceSize", &isz, &bad);
	eh = jstr(q, j, "", "encryptedInvoiceHash", 1, &bad);
	json_int_field(q, j, "encryptedInvoiceSize", &esz, &bad);
	ec = jstr(q, j, "", "encryptedInvoiceContent", 1, &bad);
	corr = jstr(q, j, "", "hashOfCorrectedInvoice", 0, &bad);
	if (bad)
		goto out;
	off = json_object_get(j, "offlineMode");
	if (off != NULL && !json_is_boolean(off) && !json_is_null(off)) {
		reply_400(q, 21405, "Pole 'offlineMode' musi by\xc4\x87 warto\xc5\x9b" "ci\xc4\x85 logiczn\xc4\x85.");
		goto out;
	}
	if (strlen(ih) != 44 || strlen(eh) != 44 || (corr != NULL && strlen(corr) != 44)) {
		reply_400(q, 21405, "Skr\xc3\xb3ty SHA-256 musz\xc4\x85 mie\xc4\x87 44 znaki Base64.");
		goto out;
	}
	if (corr != NULL && !json_is_true(off)) {
		reply_400(q, 21405, "Pole 'hashOfCorrectedInvoice' wymaga 'offlineMode': true.");
		goto out;
	}
	if (isz > s->c.max_invoice_size) {
		reply_400(q, 21405, "Rozmiar faktury %lld przekracza limit %ld bajt\xc3\xb3w.",
		    (long long)isz, s->c.max_invoice_size);
		goto out;
	}
	if (jb64(q, "encryptedInvoiceContent", ec, &enc, &elen) == -1)
		goto out;
	if ((json_int_t)elen != esz) {
		reply_400(q, 21402, "D\xc5\x82ugo\xc5\x9b\xc4\x87 tre\xc5\x9b" "ci (%zu) nie zgadza si\xc4\x99 "
		    "z rozmiarem pliku encryptedInvoiceSize (%lld).", elen, (long long)esz);
		goto out;
	}
	if (!hash_matches(eh, enc, elen)) {
		reply_400(q, 21403, "Skr\xc3\xb3t tre\xc5\x9b" "ci nie zgadza si\xc4\x99 ze skr\xc3\xb3tem "
		    "pliku (encryptedInvoiceHash).");
		goto out;
	}
	if (sim_aes_decrypt(ss->key, ss->iv, enc, elen, &plain, &plen) == 0) {
		if ((json_int_t)plen != isz) {
			reply_400(q, 21402, "D\xc5\x82ugo\xc5\x9b\xc4\x87 tre\xc5\x9b" "ci (%zu) nie zgadza "
			    "si\xc4\x99 z rozmiarem pliku invoiceSize (%lld).", plen, (long long)isz);
			goto out;
		}
		if (!hash_matches(ih, plain, plen)) {
			reply_400(q, 21403, "Skr\xc3\xb3t tre\xc5\x9b" "ci nie zgadza si\xc4\x99 ze "
			    "skr\xc3\xb3tem pliku (invoiceHash).");
			goto out;
		}
	}
	i = xcalloc(1, sizeof(*i));
	ref_new(s, "EE", q->now, i->ref);
	snprintf(i->hash, sizeof(i->hash), "%s", ih);
	i->xml = plain;
	i->xml_len = plen;
	plain = NULL;
	i->offline = json_is_true(off);
	i->corrected = corr ? xstrdup(corr) : NULL;
	i->invoicing = q->now;
	i->code = 100;
	inv_append(ss, i);
	ss->pending++;
	ss->updated = q->now;
	sim_map_put(&s->invs, i->ref, i);
	heap_push(s, i, q->now + s->c.processing_delay);
	s->st.received++;
	s->dirty = 1;
	reply_json(q, 202, json_pack("{s:s}", "referenceNumber", i->ref));
out:
	free(plain);
	free(enc);
	json_decref(j);
}

static void
h_session_close(struct rq *q, const char *ref)
{
	struct session *ss = session_get(q, ref);

	if (ss == NULL)
		return;
	if (ss->state != SS_OPEN) {
		reply_400(q, 21180, "Status sesji %d uniemo\xc5\xbcliwia jej zamkni\xc4\x99" "cie.",
		    ss->code);
		return;
	}
	session_close(q->s, ss, q->now);
	resp_set(q->resp, 204, NULL);
}

/* A presigned download URL (no token) valid until `exp`. Caller frees. */
static char *
presign(struct sim *s, const char *what, int64_t exp)
{
	unsigned char mac[32];
	char *msg = xasprintf("%s|%" PRId64, what, exp), hx[65], *url;

	sim_hmac(s->secret, sizeof(s->secret), msg, strlen(msg), mac);
	hex_encode(mac, sizeof(mac), hx);
	url = xasprintf("%s/storage/%s?se=%" PRId64 "&sig=%s", s->c.origin ? s->c.origin : "",
	    what, exp, hx);
	free(msg);
	return url;
}

static json_t *
inv_json(struct sim *s, const struct inv *i, int64_t now)
{
	char iso[40], what[120], *url;
	json_t *j, *st;
	int code = i->code;

	sim_time_iso(i->invoicing, iso, sizeof(iso));
	st = json_pack("{s:i,s:s}", "code", code, "description", inv_desc(code));
	if (i->details != NULL && json_array_size(i->details) > 0)
		json_object_set(st, "details", i->details);
	if (i->ext != NULL)
		json_object_set(st, "extensions", i->ext);
	j = json_pack("{s:i,s:s,s:s,s:s,s:o}", "ordinalNumber", i->ordinal, "referenceNumber",
	    i->ref, "invoiceHash", i->hash, "invoicingDate", iso, "status", st);
	if (i->f.number != NULL)
		json_object_set_new(j, "invoiceNumber", json_string(i->f.number));
	if (code == 200) {
		json_object_set_new(j, "ksefNumber", json_string(i->ksef));
		sim_time_iso(i->acquisition, iso, sizeof(iso));
		json_object_set_new(j, "acquisitionDate", json_string(iso));
		if (now >= i->storage) {
			sim_time_iso(i->storage, iso, sizeof(iso));
			json_object_set_new(j, "permanentStorageDate", json_string(iso));
		}
		snprintf(what, sizeof(what), "upo/%s/%s.xml", i->sess->ref, i->ref);
		url = presign(s, what, now + s->c.upo_url_ttl);
		json_object_set_new(j, "upoDownloadUrl", json_string(url));
		free(url);
		sim_time_iso(now + s->c.upo_url_ttl, iso, sizeof(iso));
		json_object_set_new(j, "upoDownloadUrlExpirationDate", json_string(iso));
	}
	if (code == 200 || code == 440 || code == 450 || code == 410) {
		char d1[11], d2[11];

		sim_time_date_local(i->invoicing, d2);
		snprintf(d1, sizeof(d1), "%.10s", i->f.issue ? i->f.issue : d2);
		json_object_set_new(j, "invoicingMode", json_string(i->offline ||
		    strcmp(d1, d2) < 0 ? "Offline" : "Online"));
	}
	return j;
}

static void
h_session_status(struct rq *q, const char *ref)
{
	struct sim *s = q->s;
	struct session *ss = session_get(q, ref);
	char c[40], u[40], v[40], what[120], *url;
	json_t *j, *pages;
	size_t i;

	if (ss == NULL)
		return;
	sim_time_iso(ss->created, c, sizeof(c));
	sim_time_iso(ss->updated, u, sizeof(u));
	sim_time_iso(ss->valid_until, v, sizeof(v));
	j = json_pack("{s:{s:i,s:s},s:s,s:s,s:s,s:I,s:I,s:I}", "status", "code", ss->code,
	    "description", sess_desc(ss->code), "dateCreated", c, "dateUpdated", u,
	    "validUntil", v, "invoiceCount", (json_int_t)ss->ninv,
	    "successfulInvoiceCount", (json_int_t)ss->nok,
	    "failedInvoiceCount", (json_int_t)ss->nfailed);
	if (ss->code == 440)
		json_object_set_new(json_object_get(j, "status"), "details",
		    json_pack("[s]", "Sesja zamkni\xc4\x99ta bez faktur."));
	if (ss->nupo > 0) {
		pages = json_array();
		for (i = 0; i < ss->nupo; i++) {
			snprintf(what, sizeof(what), "session-upo/%s/%s.xml", ss->ref, ss->upo[i]);
			url = presign(s, what, q->now + s->c.upo_url_ttl);
			sim_time_iso(q->now + s->c.upo_url_ttl, v, sizeof(v));
			json_array_append_new(pages, json_pack("{s:s,s:s,s:s}", "referenceNumber",
			    ss->upo[i], "downloadUrl", url, "downloadUrlExpirationDate", v));
			free(url);
		}
		json_object_set_new(j, "upo", json_pack("{s:o}", "pages", pages));
	}
	reply_json(q, 200, j);
}

/* Continuation tokens are Base64 of {"o":offset}, like KSeF's opaque Base64 JSON. */
static int
cont_parse(const char *tok, size_t *off)
{
	unsigned char *raw;
	size_t len;
	json_t *j, *o;
	int rc = -1;

	if (sim_b64_decode(tok, strlen(tok), &raw, &len) == -1)
		return -1;
	if ((j = json_loadb((char *)raw, len, 0, NULL)) != NULL &&
	    json_is_integer(o = json_object_get(j, "o")) && json_integer_value(o) >= 0) {
		*off = (size_t)json_integer_value(o);
		rc = 0;
	}
	json_decref(j);
	free(raw);
	return rc;
}

static void
h_invoice_list(struct rq *q, const char *ref, int failed)
{
	struct session *ss = session_get(q, ref);
	const char *ct = hdr_get(q, "x-continuation-token");
	struct inv **list;
	size_t n, off = 0, k;
	long ps;
	json_t *arr, *j;
	char *c, *b;

	if (ss == NULL || query_int(q, "pageSize", 10, 10, 1000, &ps) == -1)
		return;
	if (ct != NULL && *ct != '\0' && cont_parse(ct, &off) == -1) {
		reply_400(q, 21418, NULL);
		return;
	}
	list = failed ? ss->failed : ss->inv;
	n = failed ? ss->nfailed : ss->ninv;
	arr = json_array();
	for (k = off; k < n && k < off + (size_t)ps; k++) {
		json_array_append_new(arr, inv_json(q->s, list[k], q->now));
		q->s->st.listed++;
	}
	j = json_pack("{s:o}", "invoices", arr);
	if (off + (size_t)ps < n) {
		c = xasprintf("{\"o\":%zu}", off + (size_t)ps);
		b = sim_b64_encode(c, strlen(c));
		json_object_set_new(j, "continuationToken", json_string(b));
		free(b);
		free(c);
	}
	reply_json(q, 200, j);
}

/* The invoice `iref` of the caller's session `ref`; NULL (replied) if none. */
static struct inv *
inv_get(struct rq *q, const char *ref, const char *iref, int upo)
{
	struct session *ss = session_get(q, ref);
	struct inv *i;

	if (ss == NULL)
		return NULL;
	i = sim_map_get(&q->s->invs, iref);
	if (i == NULL || i->sess != ss) {
		if (upo)
			reply_400(q, 21178, "UPO faktury %s w sesji %s nie zosta\xc5\x82o znalezione.",
			    log_escape(iref, strlen(iref), 40), ss->ref);
		else
			reply_400(q, 21405, "Faktura o numerze referencyjnym %s nie istnieje w sesji %s.",
			    log_escape(iref, strlen(iref), 40), ss->ref);
		return NULL;
	}
	return i;
}

static void
h_invoice_status(struct rq *q, const char *ref, const char *iref)
{
	struct inv *i = inv_get(q, ref, iref, 0);

	if (i != NULL)
		reply_json(q, 200, inv_json(q->s, i, q->now));
}

/* ------------------------------------------------------------------ UPO */

static void
xml_text(struct buf *b, const char *s)
{
	for (; s != NULL && *s; s++)
		switch (*s) {
		case '<': buf_addstr(b, "&lt;"); break;
		case '>': buf_addstr(b, "&gt;"); break;
		case '&': buf_addstr(b, "&amp;"); break;
		case '"': buf_addstr(b, "&quot;"); break;
		default: buf_add(b, s, 1);
		}
}

static void
upo_head(struct sim *s, struct buf *b, const struct session *ss)
{
	buf_addstr(b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	    "<Potwierdzenie xmlns=\"http://upo.schematy.mf.gov.pl/KSeF/v4-3\">\n"
	    "\t<NazwaPodmiotuPrzyjmujacego>");
	xml_text(b, s->c.upo_subject);
	buf_addf(b, "</NazwaPodmiotuPrzyjmujacego>\n"
	    "\t<NumerReferencyjnySesji>%s</NumerReferencyjnySesji>\n"
	    "\t<Uwierzytelnienie>\n\t\t<IdKontekstu>\n\t\t\t<Nip>%s</Nip>\n\t\t</IdKontekstu>\n"
	    "\t\t<NumerReferencyjnyTokenaKSeF>%s</NumerReferencyjnyTokenaKSeF>\n"
	    "\t</Uwierzytelnienie>\n", ss->ref, ss->nip, ss->token_ref);
}

static void
upo_tail_head(struct buf *b, const struct session *ss)
{
	buf_addf(b, "\t<NazwaStrukturyLogicznej>%s</NazwaStrukturyLogicznej>\n"
	    "\t<KodFormularza>%s</KodFormularza>\n", form_struct[ss->form],
	    form_system[ss->form]);
}

static void
upo_doc(struct buf *b, const struct inv *i)
{
	char sent[40], acq[40], d[11];

	sim_time_iso_local(i->invoicing, sent, sizeof(sent));
	sim_time_iso_local(i->acquisition, acq, sizeof(acq));
	snprintf(d, sizeof(d), "%.10s", i->f.issue ? i->f.issue : "");
	buf_addf(b, "\t<Dokument>\n\t\t<NipSprzedawcy>%s</NipSprzedawcy>\n"
	    "\t\t<NumerKSeFDokumentu>%s</NumerKSeFDokumentu>\n\t\t<NumerFaktury>",
	    i->f.nip, i->ksef);
	xml_text(b, i->f.number);
	buf_addf(b, "</NumerFaktury>\n\t\t<DataWystawieniaFaktury>%s</DataWystawieniaFaktury>\n"
	    "\t\t<DataPrzeslaniaDokumentu>%s</DataPrzeslaniaDokumentu>\n"
	    "\t\t<DataNadaniaNumeruKSeF>%s</DataNadaniaNumeruKSeF>\n"
	    "\t\t<SkrotDokumentu>%s</SkrotDokumentu>\n\t\t<TrybWysylki>%s</TrybWysylki>\n"
	    "\t</Dokument>\n", d, sent, acq, i->hash, i->offline ? "Offline" : "Online");
}

/* The UPO of one invoice. */
static void
upo_invoice(struct sim *s, struct buf *b, const struct inv *i)
{
	upo_head(s, b, i->sess);
	upo_tail_head(b, i->sess);
	upo_doc(b, i);
	buf_addstr(b, "</Potwierdzenie>");
}

/* Page `page` (0-based) of a session UPO; -1 if there is no such page. */
static int
upo_session(struct sim *s, struct buf *b, const struct session *ss, size_t page)
{
	size_t ps = (size_t)s->c.upo_page_size, from = page * ps, k, seen = 0;

	if (page >= ss->nupo)
		return -1;
	upo_head(s, b, ss);
	buf_addf(b, "\t<OpisPotwierdzenia>\n\t\t<Strona>%zu</Strona>\n"
	    "\t\t<LiczbaStron>%zu</LiczbaStron>\n\t\t<ZakresDokumentowOd>%zu</ZakresDokumentowOd>\n"
	    "\t\t<ZakresDokumentowDo>%zu</ZakresDokumentowDo>\n"
	    "\t\t<CalkowitaLiczbaDokumentow>%d</CalkowitaLiczbaDokumentow>\n"
	    "\t</OpisPotwierdzenia>\n", page + 1, ss->nupo, from + 1,
	    from + ps < (size_t)ss->nok ? from + ps : (size_t)ss->nok, ss->nok);
	upo_tail_head(b, ss);
	for (k = 0; k < ss->ninv && seen < from + ps; k++) {
		if (ss->inv[k]->code != 200)
			continue;
		if (seen++ >= from)
			upo_doc(b, ss->inv[k]);
	}
	buf_addstr(b, "</Potwierdzenie>");
	return 0;
}

static void
reply_upo_invoice(struct rq *q, const struct inv *i)
{
	struct buf b;

	if (i->code != 200) {
		reply_400(q, 21178, "UPO faktury %s nie jest dost\xc4\x99pne (status %d).", i->ref,
		    i->code);
		return;
	}
	buf_init(&b);
	upo_invoice(q->s, &b, i);
	reply_xml(q, b.data, b.len);
	buf_free(&b);
}

static void
h_upo_by_ref(struct rq *q, const char *ref, const char *iref)
{
	struct inv *i = inv_get(q, ref, iref, 1);

	if (i != NULL)
		reply_upo_invoice(q, i);
}

static void
h_upo_by_ksef(struct rq *q, const char *ref, const char *kn)
{
	struct session *ss = session_get(q, ref);
	struct inv *i;

	if (ss == NULL)
		return;
	i = sim_map_get(&q->s->ksef, kn);
	if (i == NULL || i->sess != ss) {
		reply_400(q, 21178, "UPO o numerze KSeF %s i numerze referencyjnym sesji %s nie "
		    "zosta\xc5\x82o znalezione.", log_escape(kn, strlen(kn), 40), ss->ref);
		return;
	}
	reply_upo_invoice(q, i);
}

static size_t
upo_page_index(const struct session *ss, const char *uref)
{
	size_t k;

	for (k = 0; k < ss->nupo; k++)
		if (strcmp(ss->upo[k], uref) == 0)
			return k;
	return (size_t)-1;
}

static void
h_upo_session(struct rq *q, const char *ref, const char *uref)
{
	struct session *ss = session_get(q, ref);
	struct buf b;

	if (ss == NULL)
		return;
	buf_init(&b);
	if (upo_session(q->s, &b, ss, upo_page_index(ss, uref)) == -1)
		reply_400(q, 21178, "UPO %s sesji %s nie zosta\xc5\x82o znalezione.",
		    log_escape(uref, strlen(uref), 40), ss->ref);
	else
		reply_xml(q, b.data, b.len);
	buf_free(&b);
}

/* GET /storage/{upo|session-upo}/SESSION/ID.xml?se=&sig=: presigned, no token. */
static void
h_storage(struct rq *q)
{
	struct sim *s = q->s;
	char *se = query_get(q, "se"), *sig = query_get(q, "sig"), *what, *url, *want, *id;
	struct session *ss;
	struct inv *i;
	struct buf b;
	int64_t exp;
	size_t n;

	buf_init(&b);
	/* /storage/KIND/SESSION/ID.xml: four segments, so the prefix is there */
	what = q->nseg == 4 ? q->path + strlen("/storage/") : "";
	exp = se ? strtoll(se, NULL, 10) : 0;
	url = presign(s, what, exp);
	want = strstr(url, "&sig=");
	if (sig == NULL || want == NULL || strcmp(want + 5, sig) != 0 || q->nseg != 4 ||
	    (n = strlen(q->seg[3])) < 5 || strcmp(q->seg[3] + n - 4, ".xml") != 0) {
		resp_set(q->resp, 403, "application/xml");
		buf_addstr(&q->resp->body, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>"
		    "AuthenticationFailed</Code><Message>Signature did not match.</Message></Error>");
		goto out;
	}
	if (exp < q->now) {
		resp_set(q->resp, 403, "application/xml");
		buf_addstr(&q->resp->body, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>"
		    "AuthenticationFailed</Code><Message>Signed expiry time has passed.</Message>"
		    "</Error>");
		goto out;
	}
	id = xstrndup(q->seg[3], n - 4);
	ss = sim_map_get(&s->sessions, q->seg[2]);
	i = sim_map_get(&s->invs, id);
	if (ss != NULL && strcmp(q->seg[1], "upo") == 0 && i != NULL && i->sess == ss &&
	    i->code == 200)
		upo_invoice(s, &b, i);
	else if (ss != NULL && strcmp(q->seg[1], "session-upo") == 0)
		upo_session(s, &b, ss, upo_page_index(ss, id));
	free(id);
	if (b.len == 0) {
		resp_set(q->resp, 404, "application/xml");
		buf_addstr(&q->resp->body, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>"
		    "BlobNotFound</Code><Message>The specified blob does not exist.</Message></Error>");
	} else
		reply_xml(q, b.data, b.len);
out:
	buf_free(&b);
	free(url);
	free(se);
	free(sig);
}

/* ----------------------------------------------------------- retrieval */

static const char *
inv_type_api(const char *t)
{
	static const char *const map[][2] = {
		{ "VAT", "Vat" }, { "KOR", "Kor" }, { "ZAL", "Zal" }, { "ROZ", "Roz" },
		{ "UPR", "Upr" }, { "KOR_ZAL", "KorZal" }, { "KOR_ROZ", "KorRoz" },
	};
	size_t k;

	for (k = 0; t != NULL && k < nitems(map); k++)
		if (strcmp(t, map[k][0]) == 0)
			return map[k][1];
	return "Vat";
}

static json_t *
meta_json(const struct inv *i)
{
	char a[40], b[40], c[40], d[11];
	json_t *j, *buyer;

	sim_time_iso(i->invoicing, a, sizeof(a));
	sim_time_iso(i->acquisition, b, sizeof(b));
	sim_time_iso(i->storage, c, sizeof(c));
	sim_time_date_local(i->invoicing, d);
	buyer = i->f.buyer_nip ? json_pack("{s:{s:s,s:s}}", "identifier", "type", "Nip",
	    "value", i->f.buyer_nip) : json_pack("{s:{s:s}}", "identifier", "type", "None");
	if (i->f.buyer_name != NULL)
		json_object_set_new(buyer, "name", json_string(i->f.buyer_name));
	j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:{s:s},s:o,s:f,s:f,s:f,s:s,s:s,s:s,"
	    "s:{s:s,s:s,s:s},s:b,s:b,s:s,s:[]}",
	    "ksefNumber", i->ksef, "invoiceNumber", i->f.number, "issueDate", i->f.issue,
	    "invoicingDate", a, "acquisitionDate", b, "permanentStorageDate", c,
	    "seller", "nip", i->f.nip, "buyer", buyer, "netAmount", i->f.net,
	    "grossAmount", i->f.gross, "vatAmount", i->f.vat,
	    "currency", i->f.currency ? i->f.currency : "PLN",
	    "invoicingMode", i->offline || strcmp(i->f.issue, d) < 0 ? "Offline" : "Online",
	    "invoiceType", inv_type_api(i->f.type),
	    "formCode", "systemCode", form_system[i->sess->form], "schemaVersion", "1-0E",
	    "value", "FA", "isSelfInvoicing", 0, "hasAttachment", 0,
	    "invoiceHash", i->hash, "thirdSubjects");
	if (i->f.seller_name != NULL)
		json_object_set_new(json_object_get(j, "seller"), "name",
		    json_string(i->f.seller_name));
	if (i->corrected != NULL)
		json_object_set_new(j, "hashOfCorrectedInvoice", json_string(i->corrected));
	return j;
}

static int meta_datetype;

static int64_t
meta_date(const struct inv *i)
{
	int64_t t = 0;

	switch (meta_datetype) {
	case 0:
		sim_time_parse(i->f.issue, &t);
		return t;
	case 1:
		return i->invoicing;
	default:
		return i->storage;
	}
}

static int
meta_cmp(const void *a, const void *b)
{
	const struct inv *x = *(struct inv *const *)a, *y = *(struct inv *const *)b;
	int64_t dx = meta_date(x), dy = meta_date(y);

	if (dx != dy)
		return dx < dy ? -1 : 1;
	return strcmp(x->ksef, y->ksef);
}

static void
h_metadata(struct rq *q)
{
	struct sim *s = q->s;
	const char *nip = q->tok->op->nip, *st, *dt, *from, *to, *kn, *num, *seller;
	json_t *j = NULL, *dr, *restrict_hwm, *types, *arr;
	int64_t tfrom, tto, d;
	long off, ps;
	char *order = NULL, hwm[40];
	struct inv **m = NULL, *i;
	size_t n = 0, k, total, lim;
	int bad = 0, subj, desc;

	if (query_int(q, "pageOffset", 0, 0, 1000000, &off) == -1 ||
	    query_int(q, "pageSize", 10, 10, 250, &ps) == -1)
		return;
	order = query_get(q, "sortOrder");
	if (order != NULL && strcmp(order, "Asc") != 0 && strcmp(order, "Desc") != 0) {
		reply_400(q, 21405, "Parametr sortOrder musi by\xc4\x87 Asc lub Desc.");
		goto out;
	}
	desc = order != NULL && strcmp(order, "Desc") == 0;
	if ((j = body_json(q)) == NULL)
		goto out;
	st = jstr(q, j, "", "subjectType", 1, &bad);
	dr = jobj(q, j, "dateRange", &bad);
	dt = jstr(q, dr, "dateRange.", "dateType", 1, &bad);
	from = jstr(q, dr, "dateRange.", "from", 1, &bad);
	to = jstr(q, dr, "dateRange.", "to", 0, &bad);
	kn = jstr(q, j, "", "ksefNumber", 0, &bad);
	num = jstr(q, j, "", "invoiceNumber", 0, &bad);
	seller = jstr(q, j, "", "sellerNip", 0, &bad);
	if (bad)
		goto out;
	if (strcmp(st, "Subject1") == 0)
		subj = 1;
	else if (strcmp(st, "Subject2") == 0)
		subj = 2;
	else if (strcmp(st, "Subject3") == 0 || strcmp(st, "SubjectAuthorized") == 0)
		subj = 3;
	else {
		reply_400(q, 21405, "Pole 'subjectType' ma nieznan\xc4\x85 warto\xc5\x9b\xc4\x87.");
		goto out;
	}
	if (strcmp(dt, "Issue") == 0)
		meta_datetype = 0;
	else if (strcmp(dt, "Invoicing") == 0)
		meta_datetype = 1;
	else if (strcmp(dt, "PermanentStorage") == 0)
		meta_datetype = 2;
	else {
		reply_400(q, 21405, "Pole 'dateRange.dateType' ma nieznan\xc4\x85 warto\xc5\x9b\xc4\x87.");
		goto out;
	}
	if (sim_time_parse(from, &tfrom) == -1 || (to != NULL && sim_time_parse(to, &tto) == -1)) {
		reply_400(q, 21405, "Pola 'dateRange.from'/'dateRange.to' musz\xc4\x85 by\xc4\x87 "
		    "datami ISO-8601.");
		goto out;
	}
	if (to == NULL)
		tto = q->now;
	/* three calendar months are at most 92 days, plus a DST hour */
	if (tto < tfrom || tto - tfrom > 92LL * 86400000 + 3600000) {
		reply_400(q, 21405, "Zakres dat musi by\xc4\x87 niepusty i nie d\xc5\x82u\xc5\xbcszy ni\xc5\xbc "
		    "3 miesi\xc4\x85" "ce.");
		goto out;
	}
	restrict_hwm = json_object_get(dr, "restrictToPermanentStorageHwmDate");
	if (json_is_true(restrict_hwm) && tfrom > q->now) {
		reply_400(q, 21183, "Parametr dateRange.from jest p\xc3\xb3\xc5\xbaniejszy ni\xc5\xbc "
		    "PermanentStorageHwmDate.");
		goto out;
	}
	types = json_object_get(j, "invoiceTypes");
	m = xcalloc(s->nreg + 1, sizeof(*m));
	for (k = 0; k < s->nreg && subj != 3; k++) {
		i = s->reg[k];
		if (i->storage > q->now)
			continue;
		if (subj == 1 ? strcmp(i->f.nip, nip) != 0 :
		    (i->f.buyer_nip == NULL || strcmp(i->f.buyer_nip, nip) != 0))
			continue;
		d = meta_date(i);
		if (d < tfrom || d > tto)
			continue;
		if ((kn && strcmp(kn, i->ksef) != 0) || (num && strcmp(num, i->f.number) != 0) ||
		    (seller && strcmp(seller, i->f.nip) != 0))
			continue;
		if (json_is_array(types) && json_array_size(types) > 0) {
			size_t t;
			json_t *tv;
			int hit = 0;

			json_array_foreach(types, t, tv)
				if (json_is_string(tv) &&
				    strcmp(json_string_value(tv), inv_type_api(i->f.type)) == 0)
					hit = 1;
			if (!hit)
				continue;
		}
		m[n++] = i;
	}
	qsort(m, n, sizeof(*m), meta_cmp);
	if (desc)
		for (k = 0; k < n / 2; k++) {
			i = m[k];
			m[k] = m[n - 1 - k];
			m[n - 1 - k] = i;
		}
	total = n;
	lim = total < (size_t)s->c.metadata_max ? total : (size_t)s->c.metadata_max;
	arr = json_array();
	for (k = (size_t)off; k < lim && k < (size_t)(off + ps); k++)
		json_array_append_new(arr, meta_json(m[k]));
	sim_time_iso(q->now, hwm, sizeof(hwm));
	reply_json(q, 200, json_pack("{s:b,s:b,s:s,s:o}",
	    "hasMore", (size_t)(off + ps) < total,
	    "isTruncated", total > (size_t)s->c.metadata_max && (size_t)(off + ps) >= lim,
	    "permanentStorageHwmDate", hwm, "invoices", arr));
out:
	free(m);
	free(order);
	json_decref(j);
}

static void
h_download(struct rq *q, const char *kn)
{
	struct inv *i = sim_map_get(&q->s->ksef, kn);
	const char *nip = q->tok->op->nip;

	if (i == NULL || (strcmp(i->f.nip, nip) != 0 &&
	    (i->f.buyer_nip == NULL || strcmp(i->f.buyer_nip, nip) != 0))) {
		reply_400(q, 21164, "Faktura o numerze KSeF %s nie zosta\xc5\x82\x61 znaleziona.",
		    log_escape(kn, strlen(kn), 40));
		return;
	}
	if (i->storage > q->now) {
		reply_400(q, 21165, "Faktura o numerze KSeF %s zosta\xc5\x82\x61 przetworzona, ale nie "
		    "jest jeszcze dost\xc4\x99pna.", i->ksef);
		return;
	}
	reply_xml(q, i->xml, i->xml_len);
}

/* ----------------------------------------------------------- processing */

static void
dup_key(const struct sim_facts *f, char *out, size_t len)
{
	snprintf(out, len, "%s\x1f%s\x1f%s", f->nip, f->type, f->number);
}

/* Give an invoice its KSeF number and enter it in the indexes. */
static void
inv_register(struct sim *s, struct inv *i, int64_t now)
{
	char key[400];

	i->code = 200;
	ksef_new(s, i->f.nip, now, i->ksef);
	i->acquisition = now;
	i->storage = now + s->c.storage_delay;
	sim_map_put(&s->ksef, i->ksef, i);
	dup_key(&i->f, key, sizeof(key));
	sim_map_put(&s->dups, key, i);
	reg_add(s, i);
	s->st.accepted++;
}

static void
inv_fail(struct sim *s, struct inv *i, int code)
{
	struct session *ss = i->sess;

	i->code = code;
	failed_add(ss, i);
	if (code == 440)
		s->st.duplicate++;
	else
		s->st.rejected++;
}

/* KSeF's rules after the schema: context, NIP (PRD), date, reject pattern, duplicate. */
static int
inv_rules(struct sim *s, struct inv *i, int64_t now)
{
	struct inv *orig;
	char key[400], today[11];

	if (strcmp(i->f.nip, i->sess->nip) != 0) {
		json_array_append_new(i->details, json_sprintf("Sprzedawca (Podmiot1 NIP %s) nie "
		    "odpowiada kontekstowi sesji (NIP %s).", i->f.nip, i->sess->nip));
		return 410;
	}
	if (s->c.env == SIM_ENV_PROD && !nip_valid(i->f.nip)) {
		json_array_append_new(i->details, json_string("Nieprawid\xc5\x82owa suma kontrolna "
		    "NIP sprzedawcy."));
		return 450;
	}
	sim_time_date_local(now, today);
	if (strncmp(i->f.issue, today, 10) > 0) {
		json_array_append_new(i->details, json_sprintf("Data wystawienia faktury (P_1 %s) "
		    "jest p\xc3\xb3\xc5\xbaniejsza ni\xc5\xbc data przyj\xc4\x99" "cia (%s).", i->f.issue, today));
		return 450;
	}
	if (s->have_re && regexec(&s->reject_re, i->f.number, 0, NULL, 0) == 0) {
		json_array_append_new(i->details, json_sprintf("Faktura %s odrzucona przez "
		    "symulator (reject-pattern).", i->f.number));
		return 450;
	}
	dup_key(&i->f, key, sizeof(key));
	if ((orig = sim_map_get(&s->dups, key)) != NULL) {
		json_array_append_new(i->details, json_sprintf("Duplikat faktury. Faktura o numerze "
		    "KSeF: %s zosta\xc5\x82\x61 ju\xc5\xbc prawid\xc5\x82owo przes\xc5\x82\x61na do systemu w sesji: %s",
		    orig->ksef, orig->sess->ref));
		i->ext = json_pack("{s:s,s:s}", "originalSessionReferenceNumber", orig->sess->ref,
		    "originalKsefNumber", orig->ksef);
		return 440;
	}
	return 0;
}

static void
inv_process(struct sim *s, struct inv *i, int64_t now)
{
	struct session *ss = i->sess;
	int code;

	if (i->details == NULL)
		i->details = json_array();
	if (i->xml == NULL) {
		json_array_append_new(i->details, json_string("Nie mo\xc5\xbcna odszyfrowa\xc4\x87 "
		    "pliku faktury kluczem sesji (AES-256-CBC/PKCS#7)."));
		code = 435;
	} else if ((code = sim_xml_check(s->xsd, ss->form, i->xml, i->xml_len, &i->f,
	    i->details)) == 0)
		code = inv_rules(s, i, now);
	if (code == 0)
		inv_register(s, i, now);
	else
		inv_fail(s, i, code);
	ss->pending--;
	ss->updated = now;
	session_finish(s, ss, now);
	s->dirty = 1;
}

void
sim_run_due(struct sim *s, int64_t now)
{
	while (s->nheap > 0 && s->heap[0].at <= now)
		inv_process(s, heap_pop(s), now);
}

int64_t
sim_next_due(const struct sim *s)
{
	return s->nheap > 0 ? s->heap[0].at : -1;
}

/* ------------------------------------------------------------- Latarnia */

static int
outage_on(const struct sim *s, int64_t now)
{
	return now >= s->outage_from && now < s->outage_until;
}

static const char *
latarnia_status(const struct sim *s, int64_t now)
{
	if (s->latarnia != NULL)
		return s->latarnia;
	return outage_on(s, now) ? "FAILURE" : "AVAILABLE";
}

static json_t *
latarnia_messages(const struct sim *s, int64_t now)
{
	const char *st = latarnia_status(s, now);
	char from[40], to[40];
	json_t *m;
	int maint = strcmp(st, "MAINTENANCE") == 0;

	if (strcmp(st, "AVAILABLE") == 0)
		return json_array();
	sim_time_iso(outage_on(s, now) ? s->outage_from : now, from, sizeof(from));
	m = json_pack("{s:s,s:i,s:s,s:s,s:s,s:s,s:s,s:i,s:s}", "id", "ksef-sim-1",
	    "eventId", s->event_id, "category", st, "type",
	    maint ? "MAINTENANCE_ANNOUNCEMENT" : "FAILURE_START",
	    "title", maint ? "Prace serwisowe" : "Niedost\xc4\x99pno\xc5\x9b\xc4\x87 systemu KSeF",
	    "text", "Komunikat symulatora ksef-sim.", "start", from, "version", 1,
	    "published", from);
	if (outage_on(s, now)) {
		sim_time_iso(s->outage_until, to, sizeof(to));
		json_object_set_new(m, "end", json_string(to));
	}
	return json_pack("[o]", m);
}

static void
h_latarnia(struct rq *q, const char *rest)
{
	if (strcmp(rest, "/status") == 0)
		reply_json(q, 200, json_pack("{s:s,s:o}", "status", latarnia_status(q->s, q->now),
		    "messages", latarnia_messages(q->s, q->now)));
	else if (strcmp(rest, "/messages") == 0)
		reply_json(q, 200, latarnia_messages(q->s, q->now));
	else
		reply_problem(q, 404, "Not Found", "Nieznany zas\xc3\xb3\x62 Latarni.");
}

/* ------------------------------------------------------- /_sim (tests) */

static json_t *
stats_json(const struct sim *s)
{
	json_t *req = json_object(), *f = json_object(), *j;
	int k;

	for (k = 0; k < G_NGROUPS; k++)
		json_object_set_new(req, sim_group_names[k], json_integer((json_int_t)s->st.req[k]));
	json_object_set_new(req, "unrouted", json_integer((json_int_t)s->st.req[G_NGROUPS]));
	for (k = 0; k < F_NKINDS; k++)
		json_object_set_new(f, sim_fault_names[k], json_integer((json_int_t)s->st.faults[k]));
	json_object_set_new(f, "outage503", json_integer((json_int_t)s->st.outage503));
	j = json_pack("{s:o,s:I,s:o,s:{s:I,s:I,s:I,s:I,s:I},s:{s:I,s:I},s:I,s:I}",
	    "requests", req, "responses429", (json_int_t)s->st.r429, "faults", f,
	    "invoices", "received", (json_int_t)s->st.received,
	    "accepted", (json_int_t)s->st.accepted, "rejected", (json_int_t)s->st.rejected,
	    "duplicate", (json_int_t)s->st.duplicate, "queued", (json_int_t)s->nheap,
	    "sessions", "opened", (json_int_t)s->st.opened, "closed", (json_int_t)s->st.closed,
	    "authentications", (json_int_t)s->st.auths,
	    "refreshes", (json_int_t)s->st.refreshes);
	json_object_set_new(j, "listedInvoices", json_integer((json_int_t)s->st.listed));
	return j;
}

static json_t *
faults_json(const struct sim *s, int64_t now)
{
	json_t *rules = json_array();
	char a[40], b[40];
	size_t k;

	for (k = 0; k < s->c.nfaults; k++)
		json_array_append_new(rules, sim_fault_to_json(&s->c.faults[k]));
	sim_time_iso(s->outage_from, a, sizeof(a));
	sim_time_iso(s->outage_until, b, sizeof(b));
	return json_pack("{s:o,s:{s:b,s:s,s:s},s:s,s:I,s:s?,s:{s:b,s:[I,I,I]}}",
	    "rules", rules, "outage", "active", outage_on(s, now), "from", a, "until", b,
	    "latarnia", latarnia_status(s, now), "processingDelay",
	    (json_int_t)s->c.processing_delay, "rejectPattern", s->c.reject_pattern,
	    "limits", "enabled", s->c.limits.enabled, "windows",
	    (json_int_t)s->c.limits.win_ms[0], (json_int_t)s->c.limits.win_ms[1],
	    (json_int_t)s->c.limits.win_ms[2]);
}

static void
keys_rotate(struct sim *s, char *err, size_t errlen)
{
	struct sim_key nk[2];
	int u;

	for (u = 0; u < 2; u++)
		if (sim_key_create(&nk[u], s->c.state_dir, u ? "sim-sym" : "sim-token", err,
		    errlen) == -1)
			fatalx("sim: key rotation: %s", err);
	s->retired = xrealloc(s->retired, (s->nretired + 2) * sizeof(*s->retired));
	s->retired[s->nretired++] = s->keys[0];
	s->retired[s->nretired++] = s->keys[1];
	s->keys[0] = nk[0];
	s->keys[1] = nk[1];
}

/* A duration given as a JSON string ("2s") or integer (ms); -1 if neither. */
static int64_t
json_dur(json_t *v)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return json_integer_value(v);
	if (json_is_string(v))
		return parse_duration_ms(json_string_value(v));
	return -1;
}

/* Apply POST /_sim/faults; -1 with err. Parses everything before changing anything. */
static int
faults_apply(struct sim *s, json_t *j, int64_t now, char *err, size_t errlen)
{
	json_t *rules = json_object_get(j, "rules"), *v, *lim = json_object_get(j, "limits");
	json_t *out = json_object_get(j, "outage"), *lat = json_object_get(j, "latarnia");
	json_t *pd = json_object_get(j, "processingDelay"), *rp = json_object_get(j, "rejectPattern");
	json_t *lw = json_object_get(j, "limitWindows");
	struct sim_fault_rule *nr = NULL;
	struct sim_limits nl = s->c.limits;
	struct sim_conf tmp;
	regex_t re;
	size_t k, n = 0;
	int64_t olen = 0, pdv = 0;
	char *text;

	if (rules != NULL && !json_is_array(rules)) {
		snprintf(err, errlen, "rules must be an array");
		return -1;
	}
	if (rules != NULL) {
		nr = xcalloc(json_array_size(rules) + 1, sizeof(*nr));
		json_array_foreach(rules, k, v)
			if (sim_fault_from_json(v, &nr[n++], err, errlen) == -1) {
				free(nr);
				return -1;
			}
	}
	if (out != NULL && !json_is_false(out) && !json_is_null(out) &&
	    (olen = json_dur(out)) <= 0) {
		snprintf(err, errlen, "outage must be a duration (\"30s\", ms) or false");
		goto bad;
	}
	if (lat != NULL && !json_is_null(lat) && (!json_is_string(lat) ||
	    (strcmp(json_string_value(lat), "AVAILABLE") != 0 &&
	    strcmp(json_string_value(lat), "MAINTENANCE") != 0 &&
	    strcmp(json_string_value(lat), "FAILURE") != 0 &&
	    strcmp(json_string_value(lat), "TOTAL_FAILURE") != 0))) {
		snprintf(err, errlen, "latarnia must be AVAILABLE, MAINTENANCE, FAILURE, "
		    "TOTAL_FAILURE or null");
		goto bad;
	}
	if (pd != NULL && (pdv = json_dur(pd)) < 0) {
		snprintf(err, errlen, "processingDelay must be a duration");
		goto bad;
	}
	if (rp != NULL && !json_is_null(rp) && (!json_is_string(rp) ||
	    regcomp(&re, json_string_value(rp), REG_EXTENDED | REG_NOSUB) != 0)) {
		snprintf(err, errlen, "rejectPattern must be an extended regular expression");
		goto bad;
	}
	if (rp != NULL && json_is_string(rp))
		regfree(&re);
	if (lim != NULL) {
		if (json_is_string(lim) && strcmp(json_string_value(lim), "off") == 0)
			nl.enabled = 0;
		else if (json_is_string(lim) && strcmp(json_string_value(lim), "on") == 0)
			nl.enabled = 1;
		else if (json_is_object(lim)) {
			text = json_dumps(lim, 0);
			if (sim_limits_parse(&nl, text, err, errlen) == -1) {
				free(text);
				goto bad;
			}
			free(text);
			nl.enabled = 1;
		} else {
			snprintf(err, errlen, "limits must be \"on\", \"off\" or an object");
			goto bad;
		}
	}
	if (lw != NULL) {
		memset(&tmp, 0, sizeof(tmp));
		tmp.limits = nl;
		if (!json_is_string(lw) ||
		    sim_conf_set(&tmp, "limit-windows", json_string_value(lw), err, errlen) == -1) {
			if (!json_is_string(lw))
				snprintf(err, errlen, "limitWindows must be a string like \"1s,1s,60s\"");
			goto bad;
		}
		nl = tmp.limits;
	}
	/* everything parsed: apply */
	if (json_is_true(json_object_get(j, "clear"))) {
		s->c.nfaults = 0;
		s->outage_from = s->outage_until = 0;
		free(s->latarnia);
		s->latarnia = NULL;
	}
	if (nr != NULL) {
		s->c.faults = xrealloc(s->c.faults, (s->c.nfaults + n + 1) * sizeof(*nr));
		memcpy(s->c.faults + s->c.nfaults, nr, n * sizeof(*nr));
		s->c.nfaults += n;
		free(nr);
	}
	if (out != NULL) {
		if (olen > 0) {
			s->outage_from = now;
			s->outage_until = now + olen;
			s->event_id++;
		} else
			s->outage_from = s->outage_until = 0;
	}
	if (lat != NULL) {
		free(s->latarnia);
		s->latarnia = json_is_string(lat) ? xstrdup(json_string_value(lat)) : NULL;
	}
	if (pd != NULL)
		s->c.processing_delay = pdv;
	if (rp != NULL) {
		if (s->have_re)
			regfree(&s->reject_re);
		s->have_re = 0;
		free(s->c.reject_pattern);
		s->c.reject_pattern = NULL;
		if (json_is_string(rp) && json_string_length(rp) > 0) {
			s->c.reject_pattern = xstrdup(json_string_value(rp));
			regcomp(&s->reject_re, s->c.reject_pattern, REG_EXTENDED | REG_NOSUB);
			s->have_re = 1;
		}
	}
	s->c.limits = nl;
	if (json_is_true(json_object_get(j, "expireTokens"))) {
		struct sim_map_ent *e;

		for (k = 0; k < s->toks.nb; k++)
			for (e = s->toks.b[k]; e != NULL; e = e->next)
				((struct tok *)e->val)->exp = now - 1;
		s->dirty = 1;
	}
	if (json_is_true(json_object_get(j, "rotateKey")))
		keys_rotate(s, err, errlen);
	return 0;
bad:
	free(nr);
	return -1;
}

/* POST /_sim/invoices: register an invoice as if sent in an earlier session. */
static void
h_sim_register(struct rq *q)
{
	struct sim *s = q->s;
	struct sim_facts f;
	json_t *details = json_array();
	struct session *ss;
	struct inv *i, *orig;
	char key[400], tref[40];
	int form = SIM_FORM_FA3, code;

	if (q->req->len > 0 && memmem(q->req->body, q->req->len,
	    "http://crd.gov.pl/wzor/2023/06/29/12648/", 40) != NULL)
		form = SIM_FORM_FA2;
	if ((code = sim_xml_check(s->xsd, form, q->req->body, q->req->len, &f, details)) != 0) {
		reply_json(q, 422, json_pack("{s:s,s:i,s:o}", "error", "invoice not valid",
		    "code", code, "details", details));
		sim_facts_free(&f);
		return;
	}
	json_decref(details);
	dup_key(&f, key, sizeof(key));
	if ((orig = sim_map_get(&s->dups, key)) != NULL) {
		reply_json(q, 409, json_pack("{s:s,s:s,s:s}", "error", "duplicate",
		    "ksefNumber", orig->ksef, "sessionReferenceNumber", orig->sess->ref));
		sim_facts_free(&f);
		return;
	}
	token_ref_for(s, f.nip, tref);
	ss = session_new(s, f.nip, tref, form, q->now);
	i = xcalloc(1, sizeof(*i));
	ref_new(s, "EE", q->now, i->ref);
	sim_sha256_b64(q->req->body, q->req->len, i->hash);
	i->xml = xmalloc(q->req->len + 1);
	memcpy(i->xml, q->req->body, q->req->len);
	i->xml_len = q->req->len;
	i->invoicing = q->now;
	i->f = f;
	inv_append(ss, i);
	sim_map_put(&s->invs, i->ref, i);
	s->st.received++;
	inv_register(s, i, q->now);
	session_close(s, ss, q->now);
	reply_json(q, 200, json_pack("{s:s,s:s,s:s,s:s}", "ksefNumber", i->ksef,
	    "referenceNumber", i->ref, "sessionReferenceNumber", ss->ref, "invoiceHash", i->hash));
}

/*
 * DELETE /_sim/invoices/{ksefNumber}: KSeF no longer lists the invoice
 * (metadata query, GET /_sim/invoices), as if it had lost it; its session
 * keeps it.  For reconciliation tests ("missing").
 */
static void
h_sim_unregister(struct rq *q)
{
	struct sim *s = q->s;
	size_t k;

	for (k = 0; k < s->nreg; k++)
		if (strcmp(s->reg[k]->ksef, q->seg[2]) == 0)
			break;
	if (k == s->nreg) {
		reply_json(q, 404, json_pack("{s:s}", "error",
		    "no registered invoice has this ksefNumber"));
		return;
	}
	memmove(&s->reg[k], &s->reg[k + 1], (s->nreg - k - 1) * sizeof(*s->reg));
	s->nreg--;
	reply_json(q, 200, json_pack("{s:s}", "removed", q->seg[2]));
}

static void
h_sim_invoices(struct rq *q)
{
	struct sim *s = q->s;
	json_t *arr = json_array();
	size_t k;
	struct inv *i;

	for (k = 0; k < s->nreg; k++) {
		i = s->reg[k];
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "nip",
		    i->f.nip, "type", i->f.type, "number", i->f.number, "hash", i->hash,
		    "ksefNumber", i->ksef, "sessionReferenceNumber", i->sess->ref,
		    "referenceNumber", i->ref));
	}
	reply_json(q, 200, json_pack("{s:I,s:o}", "count", (json_int_t)s->nreg, "invoices", arr));
}

static void
h_sim(struct rq *q)
{
	const char *m = q->req->method;
	const char *what = q->nseg > 1 ? q->seg[1] : "";
	json_t *j;
	char err[300];

	if (q->nseg == 2 && strcmp(what, "stats") == 0 && strcmp(m, "GET") == 0)
		reply_json(q, 200, stats_json(q->s));
	else if (q->nseg == 2 && strcmp(what, "invoices") == 0 && strcmp(m, "GET") == 0)
		h_sim_invoices(q);
	else if (q->nseg == 2 && strcmp(what, "invoices") == 0 && strcmp(m, "POST") == 0)
		h_sim_register(q);
	else if (q->nseg == 3 && strcmp(what, "invoices") == 0 && strcmp(m, "DELETE") == 0)
		h_sim_unregister(q);
	else if (q->nseg == 2 && strcmp(what, "faults") == 0 && strcmp(m, "GET") == 0)
		reply_json(q, 200, faults_json(q->s, q->now));
	else if (q->nseg == 2 && strcmp(what, "faults") == 0 && strcmp(m, "POST") == 0) {
		j = json_loadb((const char *)q->req->body, q->req->len, 0, NULL);
		if (!json_is_object(j))
			reply_json(q, 400, json_pack("{s:s}", "error", "body must be a JSON object"));
		else if (faults_apply(q->s, j, q->now, err, sizeof(err)) == -1)
			reply_json(q, 400, json_pack("{s:s}", "error", err));
		else
			reply_json(q, 200, faults_json(q->s, q->now));
		json_decref(j);
	} else
		reply_problem(q, 404, "Not Found", "Nieznany zas\xc3\xb3\x62 /_sim.");
}

/* ------------------------------------------------------------- routing */

enum ep {
	EP_NONE, EP_KEYS, EP_CHALLENGE, EP_KSEF_TOKEN, EP_AUTH_STATUS, EP_REDEEM,
	EP_REFRESH, EP_SESS_OPEN, EP_SEND, EP_CLOSE, EP_SESS_STATUS, EP_INV_LIST,
	EP_INV_FAILED, EP_INV_STATUS, EP_UPO_REF, EP_UPO_KSEF, EP_UPO_SESS, EP_METADATA,
	EP_DOWNLOAD, EP_RATE_LIMITS,
};

static int
seg_is(const struct rq *q, int i, const char *s)
{
	return i < q->nseg && strcmp(q->seg[i], s) == 0;
}

/* Map method and path to an endpoint and its limit group; *method is the one it needs. */
static enum ep
route(const struct rq *q, int *group, const char **method)
{
	int n = q->nseg;

	*method = "GET";
	*group = G_PUBLIC;
	if (n == 3 && seg_is(q, 0, "security") && seg_is(q, 1, "public-key-certificates"))
		return EP_NONE;
	if (n == 2 && seg_is(q, 0, "security") && seg_is(q, 1, "public-key-certificates"))
		return EP_KEYS;
	if (seg_is(q, 0, "auth")) {
		*method = "POST";
		if (n == 2 && seg_is(q, 1, "challenge"))
			return EP_CHALLENGE;
		if (n == 2 && seg_is(q, 1, "ksef-token"))
			return EP_KSEF_TOKEN;
		if (n == 3 && seg_is(q, 1, "token") && seg_is(q, 2, "redeem"))
			return EP_REDEEM;
		if (n == 3 && seg_is(q, 1, "token") && seg_is(q, 2, "refresh"))
			return EP_REFRESH;
		*method = "GET";
		if (n == 2 && !seg_is(q, 1, "sessions"))
			return EP_AUTH_STATUS;
		return EP_NONE;
	}
	if (n == 1 && seg_is(q, 0, "rate-limits")) {
		*group = G_OTHER;
		return EP_RATE_LIMITS;
	}
	if (seg_is(q, 0, "invoices")) {
		if (n == 3 && seg_is(q, 1, "query") && seg_is(q, 2, "metadata")) {
			*method = "POST";
			*group = G_INVOICE_METADATA;
			return EP_METADATA;
		}
		if (n == 3 && seg_is(q, 1, "ksef")) {
			*group = G_INVOICE_DOWNLOAD;
			return EP_DOWNLOAD;
		}
		return EP_NONE;
	}
	if (!seg_is(q, 0, "sessions"))
		return EP_NONE;
	if (seg_is(q, 1, "online")) {
		*method = "POST";
		*group = G_ONLINE_SESSION;
		if (n == 2)
			return EP_SESS_OPEN;
		if (n == 4 && seg_is(q, 3, "close"))
			return EP_CLOSE;
		*group = G_INVOICE_SEND;
		if (n == 4 && seg_is(q, 3, "invoices"))
			return EP_SEND;
		return EP_NONE;
	}
	*group = G_SESSION_MISC;
	if (n == 2)
		return EP_SESS_STATUS;
	if (n == 4 && seg_is(q, 2, "upo"))
		return EP_UPO_SESS;
	if (!seg_is(q, 2, "invoices"))
		return EP_NONE;
	*group = G_SESSION_INVOICE_LIST;
	if (n == 3)
		return EP_INV_LIST;
	if (n == 4 && seg_is(q, 3, "failed"))
		return EP_INV_FAILED;
	*group = G_INVOICE_STATUS;
	if (n == 4)
		return EP_INV_STATUS;
	*group = G_SESSION_MISC;
	if (n == 5 && seg_is(q, 4, "upo"))
		return EP_UPO_REF;
	if (n == 6 && seg_is(q, 3, "ksef") && seg_is(q, 5, "upo"))
		return EP_UPO_KSEF;
	return EP_NONE;
}

/* A copy of j with every scalar of another type (strings become numbers, ...). */
static json_t *
json_types_swap(json_t *j)
{
	json_t *o, *v;
	const char *k;
	size_t i;

	switch (json_typeof(j)) {
	case JSON_OBJECT:
		o = json_object();
		json_object_foreach(j, k, v)
			json_object_set_new(o, k, json_types_swap(v));
		return o;
	case JSON_ARRAY:
		o = json_array();
		json_array_foreach(j, i, v)
			json_array_append_new(o, json_types_swap(v));
		return o;
	case JSON_STRING:
		return json_integer((json_int_t)json_string_length(j));
	case JSON_INTEGER:
	case JSON_REAL:
		return json_string("42");
	case JSON_TRUE:
	case JSON_FALSE:
		return json_string("yes");
	default:
		return json_object();
	}
}

/* A garbage fault: the answer just made, mangled (status kept). */
static void
answer_mangle(struct rq *q, const struct sim_fault_rule *r)
{
	struct sim_resp *p = q->resp;
	json_t *j, *w;
	char *t;

	switch (r->kind) {
	case F_TRUNCATED:
		p->body.len /= 2;
		break;
	case F_WRONG_TYPES:
		if ((j = json_loadb((const char *)p->body.data, p->body.len, 0, NULL)) == NULL)
			break;		/* not JSON (a UPO): left as it is */
		w = json_types_swap(j);
		t = json_dumps(w, JSON_COMPACT);
		buf_reset(&p->body);
		if (t != NULL)
			buf_addstr(&p->body, t);
		free(t);
		json_decref(w);
		json_decref(j);
		break;
	case F_HTML:
		reply_html(q, p->status, "OK");
		break;
	case F_HUGE:
		if (p->body.len >= (size_t)r->size)
			break;
		buf_reserve(&p->body, (size_t)r->size - p->body.len);
		memset(p->body.data + p->body.len, ' ', (size_t)r->size - p->body.len);
		p->body.len = (size_t)r->size;
		break;
	}
}

/*
 * Evaluate fault rules for a group; returns the fault that replaces the
 * answer, or -1.  A garbage rule that fires is copied to *mangle (kind -1
 * when none): the request is processed, then its answer mangled.
 */
static int
faults_eval(struct rq *q, int *reset_after, struct sim_fault_rule *mangle)
{
	struct sim *s = q->s;
	struct sim_fault_rule *r;
	size_t k;
	int fire;

	for (k = 0; k < s->c.nfaults; k++) {
		r = &s->c.faults[k];
		if (r->count == 0 || (r->group != G_NONE && r->group != q->group))
			continue;
		r->seen++;
		fire = r->every ? r->seen % r->every == 0 :
		    (double)(rng_next(s) >> 11) / 9007199254740992.0 < r->p;
		if (!fire)
			continue;
		if (r->count > 0)
			r->count--;
		s->st.faults[r->kind]++;
		switch (r->kind) {
		case F_SLOW:
			q->resp->delay_ms += r->arg_ms;
			break;
		case F_RESET_AFTER:
			*reset_after = 1;
			break;
		case F_503:
			reply_html(q, 503, "Service Temporarily Unavailable");
			return r->kind;
		case F_500:
			reply_problem(q, 500, "Internal Server Error", "Wyst\xc4\x85pi\xc5\x82 "
			    "nieoczekiwany b\xc5\x82\xc4\x85" "d serwera (ksef-sim fault).");
			return r->kind;
		case F_HANG:
			q->resp->action = SIM_ACT_HANG;
			return r->kind;
		case F_RESET:
			q->resp->action = SIM_ACT_RESET;
			return r->kind;
		case F_429:
			q->s->st.r429--;	/* counted as a fault, not a limit */
			reply_429(q, (r->arg_ms + 999) / 1000);
			return r->kind;
		case F_TRUNCATED:
		case F_WRONG_TYPES:
		case F_HTML:
		case F_HUGE:
			*mangle = *r;
			break;
		}
	}
	return -1;
}

static void
dispatch(struct rq *q, enum ep ep)
{
	char **g = q->seg;

	switch (ep) {
	case EP_KEYS: h_keys(q); break;
	case EP_CHALLENGE: h_challenge(q); break;
	case EP_KSEF_TOKEN: h_ksef_token(q); break;
	case EP_AUTH_STATUS: h_auth_status(q, g[1]); break;
	case EP_REDEEM: h_redeem(q); break;
	case EP_REFRESH: h_refresh(q); break;
	case EP_SESS_OPEN: h_session_open(q); break;
	case EP_SEND: h_invoice_send(q, g[2]); break;
	case EP_CLOSE: h_session_close(q, g[2]); break;
	case EP_SESS_STATUS: h_session_status(q, g[1]); break;
	case EP_INV_LIST: h_invoice_list(q, g[1], 0); break;
	case EP_INV_FAILED: h_invoice_list(q, g[1], 1); break;
	case EP_INV_STATUS: h_invoice_status(q, g[1], g[3]); break;
	case EP_UPO_REF: h_upo_by_ref(q, g[1], g[3]); break;
	case EP_UPO_KSEF: h_upo_by_ksef(q, g[1], g[4]); break;
	case EP_UPO_SESS: h_upo_session(q, g[1], g[3]); break;
	case EP_METADATA: h_metadata(q); break;
	case EP_DOWNLOAD: h_download(q, g[2]); break;
	case EP_RATE_LIMITS: reply_json(q, 200, sim_limits_json(&q->s->c.limits)); break;
	case EP_NONE: break;
	}
}

/* Split q->path into segments in place; -1 when there are too many or empty ones. */
static int
split_path(struct rq *q, char *p)
{
	char *t;

	q->nseg = 0;
	if (*p == '/')
		p++;
	if (*p == '\0')
		return 0;
	while ((t = strsep(&p, "/")) != NULL) {
		if (*t == '\0' || q->nseg == (int)nitems(q->seg))
			return -1;
		q->seg[q->nseg++] = t;
	}
	return 0;
}

void
sim_handle(struct sim *s, const struct sim_req *req, struct sim_resp *resp, int64_t now)
{
	struct rq q;
	const char *need, *fmt, *lp = s->c.latarnia_path;
	char *segs = NULL, key[120];
	size_t lpl = strlen(lp), ql;
	int reset_after = 0, api = 0;
	struct sim_fault_rule mangle = { .kind = -1 };
	int64_t ra;
	enum ep ep;

	memset(resp, 0, sizeof(*resp));
	buf_init(&resp->body);
	memset(&q, 0, sizeof(q));
	q.s = s;
	q.req = req;
	q.resp = resp;
	q.now = now;
	q.group = G_NONE;
	fmt = hdr_get(&q, "X-Error-Format");
	q.problem = fmt != NULL && strcasecmp(fmt, "problem-details") == 0;
	ql = strcspn(req->uri, "?");
	q.path = xstrndup(req->uri, ql);
	q.query = req->uri[ql] == '?' ? req->uri + ql + 1 : NULL;
	if (strncmp(q.path, "/v2/", 4) == 0 || strcmp(q.path, "/v2") == 0) {
		api = 1;
		segs = xstrdup(q.path + 3);
	} else
		segs = xstrdup(q.path);
	if (split_path(&q, segs) == -1) {
		reply_problem(&q, 404, "Not Found", "Nieprawid\xc5\x82owa \xc5\x9b" "cie\xc5\xbcka.");
		goto done;
	}
	if (q.nseg > 0 && strcmp(q.seg[0], "_sim") == 0) {
		h_sim(&q);
		goto done;
	}
	if (!api && q.nseg > 0 && strcmp(q.seg[0], "storage") == 0 && strcmp(req->method, "GET") == 0) {
		q.group = G_STORAGE;
		if (faults_eval(&q, &reset_after, &mangle) != -1)
			goto done;
		h_storage(&q);
		if (mangle.kind != -1)
			answer_mangle(&q, &mangle);
		if (reset_after)
			resp->action = SIM_ACT_RESET;
		goto done;
	}
	if (!api && strncmp(q.path, lp, lpl) == 0 && q.path[lpl] == '/' &&
	    strcmp(req->method, "GET") == 0) {
		h_latarnia(&q, q.path + lpl);
		goto done;
	}
	ep = api ? route(&q, &q.group, &need) : EP_NONE;
	if (ep == EP_NONE) {
		s->st.req[G_NGROUPS]++;
		reply_problem(&q, 404, "Not Found", "Nieznany zas\xc3\xb3\x62.");
		goto done;
	}
	s->st.req[q.group]++;
	if (strcmp(req->method, need) != 0) {
		reply_problem(&q, 405, "Method Not Allowed", need);
		goto done;
	}
	if (outage_on(s, now)) {
		s->st.outage503++;
		reply_html(&q, 503, "Service Temporarily Unavailable");
		goto done;
	}
	if (faults_eval(&q, &reset_after, &mangle) != -1)
		goto done;
	if (q.group != G_PUBLIC && (q.tok = bearer(&q, TOK_ACCESS)) == NULL)
		goto done;
	if (q.group == G_PUBLIC)
		snprintf(key, sizeof(key), "ip:%s|%d", req->peer ? req->peer : "-", (int)ep);
	else
		snprintf(key, sizeof(key), "nip:%s|%d", q.tok->op->nip,
		    q.group == G_OTHER ? 1000 + (int)ep : q.group);
	if ((ra = sim_limiter_hit(&s->lim, &s->c.limits, key, q.group, now)) > 0) {
		reply_429(&q, ra);
		goto done;
	}
	dispatch(&q, ep);
	if (mangle.kind != -1)
		answer_mangle(&q, &mangle);
	if (reset_after)
		resp->action = SIM_ACT_RESET;
done:
	free(segs);
	free(q.path);
}

void
sim_resp_free(struct sim_resp *r)
{
	int k;

	buf_free(&r->body);
	free(r->ctype);
	for (k = 0; k < r->nh; k++) {
		free(r->hn[k]);
		free(r->hv[k]);
	}
	memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------- snapshot */

static json_t *
hexj(const void *p, size_t n)
{
	char *h = xmalloc(2 * n + 1);
	json_t *j;

	hex_encode(p, n, h);
	j = json_string(h);
	free(h);
	return j;
}

static json_t *
facts_json(const struct sim_facts *f)
{
	return json_pack("{s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:f,s:f,s:f}",
	    "nip", f->nip, "number", f->number, "type", f->type, "issue", f->issue,
	    "sellerName", f->seller_name, "buyerNip", f->buyer_nip, "buyerName", f->buyer_name,
	    "currency", f->currency, "net", f->net, "gross", f->gross, "vat", f->vat);
}

static json_t *
inv_snap(const struct inv *i)
{
	json_t *j;
	char *x = i->xml ? sim_b64_encode(i->xml, i->xml_len) : NULL;

	j = json_pack("{s:s,s:s,s:s?,s:b,s:s?,s:I,s:I,s:I,s:i,s:O?,s:O?,s:s,s:o}",
	    "ref", i->ref, "hash", i->hash, "xml", x, "offline", i->offline,
	    "corrected", i->corrected, "invoicing", (json_int_t)i->invoicing,
	    "acquisition", (json_int_t)i->acquisition, "storage", (json_int_t)i->storage,
	    "code", i->code, "details", i->details, "ext", i->ext, "ksef", i->ksef,
	    "f", facts_json(&i->f));
	free(x);
	return j;
}

static void
snap_session(const char *k, void *v, void *arg)
{
	struct session *ss = v;
	json_t *arr = json_array(), *upo = json_array();
	size_t i;

	for (i = 0; i < ss->ninv; i++)
		json_array_append_new(arr, inv_snap(ss->inv[i]));
	for (i = 0; i < ss->nupo; i++)
		json_array_append_new(upo, json_string(ss->upo[i]));
	json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:i,s:o,s:o,s:I,s:I,s:I,s:i,s:i,"
	    "s:o,s:o}", "ref", ss->ref, "nip", ss->nip, "tokenRef", ss->token_ref, "form",
	    ss->form, "key", hexj(ss->key, 32), "iv", hexj(ss->iv, 16),
	    "created", (json_int_t)ss->created, "updated", (json_int_t)ss->updated,
	    "validUntil", (json_int_t)ss->valid_until, "state", ss->state, "code", ss->code,
	    "upo", upo, "invoices", arr));
}

static void
snap_op(const char *k, void *v, void *arg)
{
	struct authop *op = v;

	json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:I,s:I,s:i,s:s?,s:b,s:I,s:I}",
	    "ref", op->ref, "nip", op->nip, "tokenRef", op->token_ref,
	    "start", (json_int_t)op->start, "ready", (json_int_t)op->ready, "code", op->code,
	    "detail", op->detail, "redeemed", op->redeemed,
	    "lastRefresh", (json_int_t)op->last_refresh,
	    "refreshUntil", (json_int_t)op->refresh_until));
}

static void
snap_tok(const char *k, void *v, void *arg)
{
	struct tok *t = v;

	json_array_append_new(arg, json_pack("{s:s,s:i,s:s,s:I}", "t", t->str, "kind", t->kind,
	    "op", t->op->ref, "exp", (json_int_t)t->exp));
}

int
sim_snapshot(struct sim *s, int force, char *err, size_t errlen)
{
	json_t *j, *ops = json_array(), *toks = json_array(), *sess = json_array();
	char *text, *path;
	int64_t t0;
	int rc;

	if (s->c.state_dir == NULL || (!s->dirty && !force) ||
	    (!force && time_mono_ms() < s->snap_next)) {
		json_decref(ops);
		json_decref(toks);
		json_decref(sess);
		return 0;
	}
	sim_map_foreach(&s->ops, snap_op, ops);
	sim_map_foreach(&s->toks, snap_tok, toks);
	sim_map_foreach(&s->sessions, snap_session, sess);
	j = json_pack("{s:i,s:I,s:I,s:o,s:o,s:o,s:o}", "version", 1, "seq", (json_int_t)s->seq,
	    "kseq", (json_int_t)s->kseq, "secret", hexj(s->secret, sizeof(s->secret)),
	    "ops", ops, "tokens", toks, "sessions", sess);
	t0 = time_mono_ms();
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	path = xasprintf("%s/state.json", s->c.state_dir);
	rc = file_write_atomic(path, text, strlen(text), 0600);
	/* a big state is saved less often: at most a tenth of the time goes here */
	s->snap_next = time_mono_ms() + 9 * (time_mono_ms() - t0);
	if (rc == -1)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	else
		s->dirty = 0;
	free(path);
	free(text);
	return rc;
}

static char *
jdup(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
}

static void
jcopy(json_t *o, const char *k, char *dst, size_t len)
{
	json_t *v = json_object_get(o, k);

	snprintf(dst, len, "%s", json_is_string(v) ? json_string_value(v) : "");
}

static int64_t
jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static int
reg_cmp(const void *a, const void *b)
{
	const struct inv *x = *(struct inv *const *)a, *y = *(struct inv *const *)b;

	if (x->acquisition != y->acquisition)
		return x->acquisition < y->acquisition ? -1 : 1;
	return strcmp(x->ksef, y->ksef);
}

static void
snap_load_inv(struct sim *s, struct session *ss, json_t *ji, int64_t now)
{
	struct inv *i = xcalloc(1, sizeof(*i));
	json_t *f = json_object_get(ji, "f");
	const char *x = json_string_value(json_object_get(ji, "xml"));
	char key[400];

	jcopy(ji, "ref", i->ref, sizeof(i->ref));
	jcopy(ji, "hash", i->hash, sizeof(i->hash));
	if (x != NULL && sim_b64_decode(x, strlen(x), &i->xml, &i->xml_len) == -1)
		i->xml = NULL;
	i->offline = json_is_true(json_object_get(ji, "offline"));
	i->corrected = jdup(ji, "corrected");
	i->invoicing = jint(ji, "invoicing");
	i->acquisition = jint(ji, "acquisition");
	i->storage = jint(ji, "storage");
	i->code = (int)jint(ji, "code");
	i->details = json_incref(json_object_get(ji, "details"));
	i->ext = json_incref(json_object_get(ji, "ext"));
	jcopy(ji, "ksef", i->ksef, sizeof(i->ksef));
	i->f.nip = jdup(f, "nip");
	i->f.number = jdup(f, "number");
	i->f.type = jdup(f, "type");
	i->f.issue = jdup(f, "issue");
	i->f.seller_name = jdup(f, "sellerName");
	i->f.buyer_nip = jdup(f, "buyerNip");
	i->f.buyer_name = jdup(f, "buyerName");
	i->f.currency = jdup(f, "currency");
	i->f.net = json_real_value(json_object_get(f, "net"));
	i->f.gross = json_real_value(json_object_get(f, "gross"));
	i->f.vat = json_real_value(json_object_get(f, "vat"));
	i->f.form = ss->form;
	inv_append(ss, i);
	sim_map_put(&s->invs, i->ref, i);
	if (i->code == 100) {
		ss->pending++;
		heap_push(s, i, now);
	} else if (i->code == 200 && i->f.nip && i->f.type && i->f.number) {
		sim_map_put(&s->ksef, i->ksef, i);
		dup_key(&i->f, key, sizeof(key));
		sim_map_put(&s->dups, key, i);
		reg_add(s, i);
	} else if (i->code != 200) {
		failed_add(ss, i);
	}
}

static int
snap_load(struct sim *s, int64_t now, char *err, size_t errlen)
{
	char *path = xasprintf("%s/state.json", s->c.state_dir);
	json_error_t je;
	json_t *j, *v, *iv, *u;
	struct authop *op;
	struct session *ss;
	struct tok *t;
	void *old;
	size_t k, m;

	if ((j = json_load_file(path, 0, &je)) == NULL) {
		if (access(path, F_OK) == 0) {
			snprintf(err, errlen, "%s:%d: %s", path, je.line, je.text);
			free(path);
			return -1;
		}
		free(path);
		return 0;
	}
	if (jint(j, "version") != 1 ||
	    hex_decode(json_string_value(json_object_get(j, "secret")) ?
	    json_string_value(json_object_get(j, "secret")) : "", s->secret,
	    sizeof(s->secret)) == -1) {
		snprintf(err, errlen, "%s: not a ksef-sim state snapshot (version 1)", path);
		json_decref(j);
		free(path);
		return -1;
	}
	s->seq = (uint64_t)jint(j, "seq");
	s->kseq = (uint64_t)jint(j, "kseq");
	json_array_foreach(json_object_get(j, "ops"), k, v) {
		op = xcalloc(1, sizeof(*op));
		jcopy(v, "ref", op->ref, sizeof(op->ref));
		jcopy(v, "nip", op->nip, sizeof(op->nip));
		jcopy(v, "tokenRef", op->token_ref, sizeof(op->token_ref));
		op->start = jint(v, "start");
		op->ready = jint(v, "ready");
		op->code = (int)jint(v, "code");
		op->detail = jdup(v, "detail");
		op->redeemed = json_is_true(json_object_get(v, "redeemed"));
		op->last_refresh = jint(v, "lastRefresh");
		op->refresh_until = jint(v, "refreshUntil");
		if ((old = sim_map_put(&s->ops, op->ref, op)) != NULL)
			op_free(old);
	}
	json_array_foreach(json_object_get(j, "tokens"), k, v) {
		op = sim_map_get(&s->ops, json_string_value(json_object_get(v, "op")) ?
		    json_string_value(json_object_get(v, "op")) : "");
		if (op == NULL || !json_is_string(json_object_get(v, "t")))
			continue;
		t = xcalloc(1, sizeof(*t));
		t->str = jdup(v, "t");
		t->kind = (int)jint(v, "kind");
		t->op = op;
		t->exp = jint(v, "exp");
		if ((old = sim_map_put(&s->toks, t->str, t)) != NULL)
			tok_free(old);
	}
	json_array_foreach(json_object_get(j, "sessions"), k, v) {
		ss = xcalloc(1, sizeof(*ss));
		jcopy(v, "ref", ss->ref, sizeof(ss->ref));
		jcopy(v, "nip", ss->nip, sizeof(ss->nip));
		jcopy(v, "tokenRef", ss->token_ref, sizeof(ss->token_ref));
		ss->form = jint(v, "form") == SIM_FORM_FA2 ? SIM_FORM_FA2 : SIM_FORM_FA3;
		hex_decode(json_string_value(json_object_get(v, "key")) ?
		    json_string_value(json_object_get(v, "key")) : "", ss->key, 32);
		hex_decode(json_string_value(json_object_get(v, "iv")) ?
		    json_string_value(json_object_get(v, "iv")) : "", ss->iv, 16);
		ss->created = jint(v, "created");
		ss->updated = jint(v, "updated");
		ss->valid_until = jint(v, "validUntil");
		ss->state = (int)jint(v, "state");
		ss->code = (int)jint(v, "code");
		u = json_object_get(v, "upo");
		ss->nupo = json_array_size(u);
		ss->upo = xcalloc(ss->nupo + 1, sizeof(*ss->upo));
		json_array_foreach(u, m, iv)
			snprintf(ss->upo[m], sizeof(ss->upo[m]), "%s",
			    json_is_string(iv) ? json_string_value(iv) : "");
		if ((old = sim_map_put(&s->sessions, ss->ref, ss)) != NULL)
			session_free(old);
		json_array_foreach(json_object_get(v, "invoices"), m, iv)
			snap_load_inv(s, ss, iv, now);
	}
	qsort(s->reg, s->nreg, sizeof(*s->reg), reg_cmp);
	json_decref(j);
	free(path);
	return 0;
}

/* ------------------------------------------------------------ lifetime */

struct sim *
sim_new(struct sim_conf *c, int64_t now, char *err, size_t errlen)
{
	struct sim *s = xcalloc(1, sizeof(*s));

	s->c = *c;
	memset(c, 0, sizeof(*c));
	s->started = now;
	sim_map_init(&s->challenges);
	sim_map_init(&s->ops);
	sim_map_init(&s->toks);
	sim_map_init(&s->sessions);
	sim_map_init(&s->invs);
	sim_map_init(&s->ksef);
	sim_map_init(&s->dups);
	sim_limiter_init(&s->lim);
	sim_random(s->secret, sizeof(s->secret));
	s->rng = s->c.seed ? s->c.seed * 0x9E3779B97F4A7C15ULL : (uint64_t)now | 1;
	if (s->c.state_dir != NULL && mkdir(s->c.state_dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "--state %s: %s", s->c.state_dir, strerror(errno));
		goto fail;
	}
	if (sim_key_load(&s->keys[0], s->c.state_dir, "sim-token", err, errlen) == -1 ||
	    sim_key_load(&s->keys[1], s->c.state_dir, "sim-sym", err, errlen) == -1)
		goto fail;
	if (s->c.xsd && (s->xsd = sim_xsd_load(s->c.schema_dir, err, errlen)) == NULL)
		goto fail;
	if (s->c.reject_pattern != NULL) {
		if (regcomp(&s->reject_re, s->c.reject_pattern, REG_EXTENDED | REG_NOSUB) != 0) {
			snprintf(err, errlen, "--reject-pattern: bad regex");
			goto fail;
		}
		s->have_re = 1;
	}
	if (s->c.outage_start >= 0) {
		s->outage_from = now + s->c.outage_start;
		s->outage_until = s->outage_from + s->c.outage_len;
		s->event_id = 1;
	}
	if (s->c.state_dir != NULL && snap_load(s, now, err, errlen) == -1)
		goto fail;
	return s;
fail:
	sim_free(s);
	return NULL;
}

void
sim_free(struct sim *s)
{
	size_t k;

	if (s == NULL)
		return;
	sim_map_free(&s->challenges, free);
	sim_map_free(&s->toks, tok_free);
	sim_map_free(&s->ops, op_free);
	sim_map_free(&s->invs, NULL);
	sim_map_free(&s->ksef, NULL);
	sim_map_free(&s->dups, NULL);
	sim_map_free(&s->sessions, session_free);
	sim_limiter_free(&s->lim);
	free(s->reg);
	free(s->heap);
	sim_key_free(&s->keys[0]);
	sim_key_free(&s->keys[1]);
	for (k = 0; k < s->nretired; k++)
		sim_key_free(&s->retired[k]);
	free(s->retired);
	sim_xsd_free(s->xsd);
	if (s->have_re)
		regfree(&s->reject_re);
	free(s->latarnia);
	sim_conf_free(&s->c);
	free(s);
}

void
sim_set_origin(struct sim *s, const char *origin)
{
	free(s->c.origin);
	s->c.origin = xstrdup(origin);
}

int64_t
sim_snapshot_interval(const struct sim *s)
{
	return s->c.state_dir != NULL ? s->c.snapshot_interval : -1;
}

EVP_PKEY *
sim_public_key(struct sim *s, int token_usage)
{
	return s->keys[token_usage ? 0 : 1].pkey;
}
