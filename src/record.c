/*
 * record.c: msgpack encoding and decoding of the stored records.
 *
 * Each record type is a table of fields; one encoder and one decoder walk
 * the tables, so every type gets the same rules.  Encoding uses msgpack-c's
 * packer.  Decoding uses a small bounded reader of our own instead of
 * msgpack_unpack(): msgpack-c allocates a container's declared size before
 * reading it, so five bytes of garbage could ask for tens of gigabytes.
 * The reader allocates nothing until the whole input has been walked and
 * found well formed, and then only what the input really holds.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <msgpack.h>

#include "log.h"
#include "record.h"
#include "util.h"

_Static_assert(sizeof(enum inv_state) == sizeof(int), "enum size");
_Static_assert(sizeof(enum inv_form) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sess_state) == sizeof(int), "enum size");

#define STR_MAX_DEFAULT	(1024 * 1024)	/* longest string field unless the table says */
#define DEPTH_MAX	32		/* nesting allowed in unknown fields */

static const char *const state_names[] = {
	"QUEUED", "SENDING", "SUBMITTED", "ACCEPTED", "DONE", "REJECTED", "FAILED",
};
static const char *const form_names[] = { "FA3", "FA2" };
static const char *const source_names[] = { "api", "spool" };
static const char *const sess_kind_names[] = { "online", "batch" };
static const char *const sess_state_names[] = { "OPENING", "OPEN", "CLOSING", "CLOSED" };

_Static_assert(nitems(state_names) == INV_ST_COUNT, "state names");

enum ftype {
	FT_BIN,		/* exactly `size` bytes (msgpack bin) */
	FT_FSTR,	/* char[size], NUL-terminated */
	FT_STR,		/* char *, at most `size` bytes (0: STR_MAX_DEFAULT) */
	FT_I64,
	FT_U64,
	FT_U32,
	FT_I32,
	FT_BOOL,	/* int */
	FT_ENUM,	/* enum stored as its name */
	FT_I64LIST,	/* int64_t *, count in the size_t at offset `size` */
};

#define F_REQ		0x01	/* always encoded, must be present */
#define F_SECRET	0x02	/* wiped when freed */

struct field {
	const char		*name;
	enum ftype		 type;
	int			 flags;
	size_t			 off;
	size_t			 size;
	const char *const	*names;
	int			 nnames;
};

struct rtype {
	const char		*tag;
	uint64_t		 version;
	size_t			 recsize;
	const struct field	*fields;
	size_t			 nfields;
};

#define FLD(st, n, t, fl, m, sz) { n, t, fl, offsetof(st, m), sz, NULL, 0 }
#define FENUM(st, n, fl, m, tbl) { n, FT_ENUM, fl, offsetof(st, m), 0, tbl, (int)nitems(tbl) }

#define RI struct record_invoice
static const struct field invoice_fields[] = {
	FLD(RI, "key", FT_BIN, F_REQ, key, INV_KEY_LEN),
	FENUM(RI, "state", F_REQ, state, state_names),
	FLD(RI, "nip", FT_FSTR, F_REQ, seller_nip, INV_NIP_LEN + 1),
	FENUM(RI, "form", F_REQ, form, form_names),
	FLD(RI, "kind", FT_FSTR, F_REQ, kind, sizeof(((RI *)0)->kind)),
	FLD(RI, "number", FT_STR, F_REQ, number, 1024),
	FLD(RI, "issue_date", FT_FSTR, F_REQ, issue_date, sizeof(((RI *)0)->issue_date)),
	FLD(RI, "xml_sha256", FT_BIN, F_REQ, xml_sha256, INV_SHA_LEN),
	FLD(RI, "xml_size", FT_U64, F_REQ, xml_size, 0),
	FLD(RI, "received_ms", FT_I64, F_REQ, received_ms, 0),
	FLD(RI, "attempts", FT_U32, 0, attempts, 0),
	FLD(RI, "first_attempt_ms", FT_I64, 0, first_attempt_ms, 0),
	FLD(RI, "next_due_ms", FT_I64, 0, next_due_ms, 0),
	FLD(RI, "session_ref", FT_STR, 0, session_ref, 256),
	FLD(RI, "invoice_ref", FT_STR, 0, invoice_ref, 256),
	FLD(RI, "ksef_number", FT_STR, 0, ksef_number, 256),
	FLD(RI, "acquisition_date", FT_STR, 0, acquisition_date, 64),
	FLD(RI, "storage_date", FT_STR, 0, storage_date, 64),
	FLD(RI, "upo", FT_BOOL, 0, upo_present, 0),
	FLD(RI, "error_code", FT_I32, 0, error_code, 0),
	FLD(RI, "error_desc", FT_STR, 0, error_desc, 0),
	FLD(RI, "error_details", FT_STR, 0, error_details, 0),
	FLD(RI, "supersedes", FT_BIN, 0, supersedes, INV_KEY_LEN),
	FLD(RI, "superseded_by", FT_BIN, 0, superseded_by, INV_KEY_LEN),
	FLD(RI, "hold", FT_BOOL, 0, hold, 0),
	FENUM(RI, "source", F_REQ, source, source_names),
	FLD(RI, "source_name", FT_STR, 0, source_name, 4096),
};
#undef RI

#define RA struct record_audit
static const struct field audit_fields[] = {
	FLD(RA, "seq", FT_U64, F_REQ, seq, 0),
	FLD(RA, "time_ms", FT_I64, F_REQ, time_ms, 0),
	FLD(RA, "key", FT_BIN, F_REQ, key, INV_KEY_LEN),
	FENUM(RA, "from", 0, from, state_names),
	FENUM(RA, "to", F_REQ, to, state_names),
	FLD(RA, "detail", FT_STR, 0, detail, 0),
};
#undef RA

#define RT struct record_token
static const struct field token_fields[] = {
	FLD(RT, "access_token", FT_STR, F_REQ | F_SECRET, access_token, 0),
	FLD(RT, "access_expiry_ms", FT_I64, F_REQ, access_expiry_ms, 0),
	FLD(RT, "refresh_token", FT_STR, F_SECRET, refresh_token, 0),
	FLD(RT, "refresh_expiry_ms", FT_I64, 0, refresh_expiry_ms, 0),
};
#undef RT

#define RS struct record_session
static const struct field session_fields[] = {
	FLD(RS, "context_nip", FT_FSTR, F_REQ, context_nip, INV_NIP_LEN + 1),
	FENUM(RS, "form", F_REQ, form, form_names),
	FENUM(RS, "kind", F_REQ, kind, sess_kind_names),
	FLD(RS, "session_ref", FT_STR, F_REQ, session_ref, 256),
	FLD(RS, "aes_key", FT_BIN, F_REQ | F_SECRET, aes_key, SESS_AES_KEY_LEN),
	FLD(RS, "aes_iv", FT_BIN, F_REQ | F_SECRET, aes_iv, SESS_AES_IV_LEN),
	FLD(RS, "opened_ms", FT_I64, F_REQ, opened_ms, 0),
	FLD(RS, "valid_until_ms", FT_I64, 0, valid_until_ms, 0),
	FLD(RS, "invoice_count", FT_U32, 0, invoice_count, 0),
	FENUM(RS, "state", F_REQ, state, sess_state_names),
};
#undef RS

#define RL struct record_limiter
static const struct field limiter_fields[] = {
	FLD(RL, "paused_until_ms", FT_I64, 0, paused_until_ms, 0),
	FLD(RL, "sent_ms", FT_I64LIST, 0, sent_ms, offsetof(RL, nsent)),
};
#undef RL

#define RTYPE(tag, v, st, f) { tag, v, sizeof(st), f, nitems(f) }
static const struct rtype rt_invoice = RTYPE("invoice", 1, struct record_invoice, invoice_fields);
static const struct rtype rt_audit = RTYPE("audit", 1, struct record_audit, audit_fields);
static const struct rtype rt_token = RTYPE("token", 1, struct record_token, token_fields);
static const struct rtype rt_session = RTYPE("session", 1, struct record_session, session_fields);
static const struct rtype rt_limiter = RTYPE("limiter", 1, struct record_limiter, limiter_fields);

/* Look a value up in a name table; "?" when out of range. */
static const char *
name_of(const char *const *names, int n, int v)
{
	return (v >= 0 && v < n) ? names[v] : "?";
}

const char *
record_state_name(int state)
{
	if (state == INV_ST_NONE)
		return "NONE";
	return name_of(state_names, INV_ST_COUNT, state);
}

/* Index of s in names (case-insensitive), or -1. */
static int
name_find(const char *const *names, int n, const char *s)
{
	int i;

	for (i = 0; s != NULL && i < n; i++)
		if (strcasecmp(names[i], s) == 0)
			return i;
	return -1;
}

int
record_state_parse(const char *s, enum inv_state *out)
{
	int i = name_find(state_names, INV_ST_COUNT, s);

	if (i < 0)
		return -1;
	*out = (enum inv_state)i;
	return 0;
}

const char *
record_form_name(int form)
{
	return name_of(form_names, nitems(form_names), form);
}

int
record_form_parse(const char *s, enum inv_form *out)
{
	int i = name_find(form_names, nitems(form_names), s);

	if (i < 0)
		return -1;
	*out = (enum inv_form)i;
	return 0;
}

const char *
record_source_name(int source)
{
	return name_of(source_names, nitems(source_names), source);
}

const char *
record_sess_kind_name(int kind)
{
	return name_of(sess_kind_names, nitems(sess_kind_names), kind);
}

const char *
record_sess_state_name(int state)
{
	return name_of(sess_state_names, nitems(sess_state_names), state);
}

void
record_key_short(const unsigned char key[INV_KEY_LEN], char out[17])
{
	hex_encode(key, 8, out);
}

void
record_str_set(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
}

/* ---- encoding ---- */

static int
pack_write_cb(void *data, const char *p, size_t len)
{
	buf_add(data, p, len);
	return 0;
}

static void
pack_cstr(msgpack_packer *pk, const char *s, size_t len)
{
	msgpack_pack_str(pk, len);
	msgpack_pack_str_body(pk, s, len);
}

static int
all_zero(const unsigned char *p, size_t n)
{
	while (n > 0)
		if (p[--n] != 0)
			return 0;
	return 1;
}

/* Whether an optional field holds a value worth writing. */
static int
field_present(const struct field *f, const void *rec)
{
	const char *p = (const char *)rec + f->off;

	if (f->flags & F_REQ)
		return 1;
	switch (f->type) {
	case FT_BIN:
		return !all_zero((const unsigned char *)p, f->size);
	case FT_FSTR:
		return p[0] != '\0';
	case FT_STR:
		return *(char *const *)p != NULL;
	case FT_I64:
		return *(const int64_t *)p != 0;
	case FT_U64:
		return *(const uint64_t *)p != 0;
	case FT_U32:
		return *(const uint32_t *)p != 0;
	case FT_I32:
		return *(const int32_t *)p != 0;
	case FT_BOOL:
		return *(const int *)p != 0;
	case FT_ENUM:
		return *(const int *)p >= 0;
	case FT_I64LIST:
		return *(const size_t *)((const char *)rec + f->size) > 0;
	}
	return 0;
}

/* Write one field's value; invalid values are bugs of the caller. */
static void
field_pack(msgpack_packer *pk, const struct rtype *rt, const struct field *f,
    const void *rec)
{
	const char *p = (const char *)rec + f->off;
	const char *s;
	size_t i, n;
	int v;

	switch (f->type) {
	case FT_BIN:
		msgpack_pack_bin(pk, f->size);
		msgpack_pack_bin_body(pk, p, f->size);
		break;
	case FT_FSTR:
		if ((n = strnlen(p, f->size)) == f->size)
			fatalx("record: %s.%s not terminated", rt->tag, f->name);
		pack_cstr(pk, p, n);
		break;
	case FT_STR:
		if ((s = *(char *const *)p) == NULL)
			fatalx("record: %s.%s is required", rt->tag, f->name);
		pack_cstr(pk, s, strlen(s));
		break;
	case FT_I64:
		msgpack_pack_int64(pk, *(const int64_t *)p);
		break;
	case FT_U64:
		msgpack_pack_uint64(pk, *(const uint64_t *)p);
		break;
	case FT_U32:
		msgpack_pack_uint32(pk, *(const uint32_t *)p);
		break;
	case FT_I32:
		msgpack_pack_int32(pk, *(const int32_t *)p);
		break;
	case FT_BOOL:
		if (*(const int *)p)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		break;
	case FT_ENUM:
		v = *(const int *)p;
		if (v < 0 || v >= f->nnames)
			fatalx("record: %s.%s has invalid value %d", rt->tag, f->name, v);
		pack_cstr(pk, f->names[v], strlen(f->names[v]));
		break;
	case FT_I64LIST:
		n = *(const size_t *)((const char *)rec + f->size);
		msgpack_pack_array(pk, n);
		for (i = 0; i < n; i++)
			msgpack_pack_int64(pk, (*(int64_t *const *)p)[i]);
		break;
	}
}

/* Append the record as a msgpack map: "v", "t", then the present fields. */
static void
codec_encode(const struct rtype *rt, const void *rec, struct buf *out)
{
	msgpack_packer pk;
	size_t i, n = 2;

	for (i = 0; i < rt->nfields; i++)
		n += field_present(&rt->fields[i], rec);
	msgpack_packer_init(&pk, out, pack_write_cb);
	msgpack_pack_map(&pk, n);
	pack_cstr(&pk, "v", 1);
	msgpack_pack_uint64(&pk, rt->version);
	pack_cstr(&pk, "t", 1);
	pack_cstr(&pk, rt->tag, strlen(rt->tag));
	for (i = 0; i < rt->nfields; i++) {
		if (!field_present(&rt->fields[i], rec))
			continue;
		pack_cstr(&pk, rt->fields[i].name, strlen(rt->fields[i].name));
		field_pack(&pk, rt, &rt->fields[i], rec);
	}
}

/* ---- decoding ---- */

enum mp_kind { MP_NIL, MP_BOOL, MP_UINT, MP_INT, MP_FLOAT, MP_STR, MP_BIN,
	MP_ARRAY, MP_MAP, MP_EXT };

static const char *const mp_kind_names[] = { "nil", "a boolean", "an integer",
	"an integer", "a float", "a string", "binary data", "an array", "a map",
	"an extension" };

/* One msgpack object header: the value of scalars, the length of the rest. */
struct mp_head {
	enum mp_kind	 kind;
	uint64_t	 u;		/* MP_UINT, MP_BOOL; length of STR/BIN/EXT; count of ARRAY/MAP */
	int64_t		 i;		/* MP_INT (negative) */
};

struct rd {
	const unsigned char	*start, *p, *end;
	const struct rtype	*rt;
	struct record_err	*err;
	uint64_t		 only;	/* fields to read (bit per field); 0: all */
};

static int
rd_fail(struct rd *r, enum record_error code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the error (prefixed with the record type) and return -1. */
static int
rd_fail(struct rd *r, enum record_error code, const char *fmt, ...)
{
	va_list ap;
	int n;

	r->err->code = code;
	n = snprintf(r->err->msg, sizeof(r->err->msg), "%s record: ", r->rt->tag);
	va_start(ap, fmt);
	vsnprintf(r->err->msg + n, sizeof(r->err->msg) - n, fmt, ap);
	va_end(ap);
	return -1;
}

static int
rd_take(struct rd *r, size_t n, const unsigned char **out)
{
	if ((size_t)(r->end - r->p) < n)
		return rd_fail(r, REC_E_TRUNCATED, "input ends at byte %zu, inside the record",
		    (size_t)(r->end - r->start));
	*out = r->p;
	r->p += n;
	return 0;
}

/* Read an n-byte big-endian unsigned integer. */
static int
rd_be(struct rd *r, size_t n, uint64_t *v)
{
	const unsigned char *p = NULL;
	size_t i;

	if (rd_take(r, n, &p) == -1)
		return -1;
	for (*v = 0, i = 0; i < n; i++)
		*v = (*v << 8) | p[i];
	return 0;
}

/* Read one object header (payloads of str/bin/ext and containers are not consumed). */
static int
rd_head(struct rd *r, struct mp_head *h)
{
	const unsigned char *p = NULL;
	uint64_t v;
	unsigned int c;
	size_t n;

	if (rd_take(r, 1, &p) == -1)
		return -1;
	c = *p;
	h->u = 0;
	h->i = 0;
	if (c <= 0x7f || c >= 0xe0) {
		h->kind = c <= 0x7f ? MP_UINT : MP_INT;
		h->u = c;
		h->i = (int8_t)c;
		return 0;
	}
	if ((c & 0xf0) == 0x80 || (c & 0xf0) == 0x90) {
		h->kind = (c & 0xf0) == 0x80 ? MP_MAP : MP_ARRAY;
		h->u = c & 0x0f;
		return 0;
	}
	if ((c & 0xe0) == 0xa0) {
		h->kind = MP_STR;
		h->u = c & 0x1f;
		return 0;
	}
	switch (c) {
	case 0xc0: h->kind = MP_NIL; return 0;
	case 0xc2: case 0xc3: h->kind = MP_BOOL; h->u = c == 0xc3; return 0;
	case 0xc4: case 0xc5: case 0xc6:
		h->kind = MP_BIN;
		return rd_be(r, (size_t)1 << (c - 0xc4), &h->u);
	case 0xc7: case 0xc8: case 0xc9:
		h->kind = MP_EXT;
		if (rd_be(r, (size_t)1 << (c - 0xc7), &h->u) == -1)
			return -1;
		h->u += 1;	/* the type byte */
		return 0;
	case 0xca: case 0xcb:
		h->kind = MP_FLOAT;
		return rd_take(r, c == 0xca ? 4 : 8, &p);
	case 0xcc: case 0xcd: case 0xce: case 0xcf:
		h->kind = MP_UINT;
		return rd_be(r, (size_t)1 << (c - 0xcc), &h->u);
	case 0xd0: case 0xd1: case 0xd2: case 0xd3:
		n = (size_t)1 << (c - 0xd0);
		if (rd_be(r, n, &v) == -1)
			return -1;
		if (n < 8 && (v & ((uint64_t)1 << (n * 8 - 1))))
			v |= ~(uint64_t)0 << (n * 8);	/* sign-extend */
		h->i = (int64_t)v;
		h->kind = h->i < 0 ? MP_INT : MP_UINT;
		h->u = v;
		return 0;
	case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
		h->kind = MP_EXT;
		h->u = 1 + ((size_t)1 << (c - 0xd4));
		return 0;
	case 0xd9: case 0xda: case 0xdb:
		h->kind = MP_STR;
		return rd_be(r, (size_t)1 << (c - 0xd9), &h->u);
	case 0xdc: case 0xdd:
		h->kind = MP_ARRAY;
		return rd_be(r, c == 0xdc ? 2 : 4, &h->u);
	case 0xde: case 0xdf:
		h->kind = MP_MAP;
		return rd_be(r, c == 0xde ? 2 : 4, &h->u);
	}
	r->p--;
	return rd_fail(r, REC_E_GARBAGE, "byte 0x%02x at offset %zu is not msgpack",
	    c, (size_t)(r->p - r->start));
}

/* Skip one whole object, bounded in depth; containers cannot outrun the input. */
static int
rd_skip(struct rd *r, int depth)
{
	struct mp_head h;
	const unsigned char *p = NULL;
	uint64_t i, n;

	if (depth > DEPTH_MAX)
		return rd_fail(r, REC_E_GARBAGE, "nested deeper than %d at byte %zu",
		    DEPTH_MAX, (size_t)(r->p - r->start));
	if (rd_head(r, &h) == -1)
		return -1;
	switch (h.kind) {
	case MP_STR: case MP_BIN: case MP_EXT:
		return rd_take(r, h.u, &p);
	case MP_ARRAY: case MP_MAP:
		n = h.kind == MP_MAP ? 2 * h.u : h.u;
		for (i = 0; i < n; i++)
			if (rd_skip(r, depth + 1) == -1)
				return -1;
		return 0;
	default:
		return 0;
	}
}

/* Read a map key, which must be a string. */
static int
rd_key(struct rd *r, const char **k, size_t *klen)
{
	struct mp_head h;
	size_t at = r->p - r->start;

	if (rd_head(r, &h) == -1)
		return -1;
	if (h.kind != MP_STR)
		return rd_fail(r, REC_E_GARBAGE, "map key at byte %zu is %s, not a string",
		    at, mp_kind_names[h.kind]);
	if (rd_take(r, h.u, (const unsigned char **)k) == -1)
		return -1;
	*klen = h.u;
	return 0;
}

/* Is the key (klen bytes, any bytes) name?  Reads name no further than its end. */
static int
key_is(const char *k, size_t klen, const char *name)
{
	size_t i;

	for (i = 0; i < klen; i++)
		if (name[i] == '\0' || name[i] != k[i])
			return 0;
	return name[klen] == '\0';
}

/* Read the top-level map header. */
static int
rd_map(struct rd *r, uint64_t *n)
{
	struct mp_head h;

	if (r->p == r->end)
		return rd_fail(r, REC_E_TRUNCATED, "empty input");
	if (rd_head(r, &h) == -1)
		return -1;
	if (h.kind != MP_MAP)
		return rd_fail(r, REC_E_GARBAGE, "%s, not a map", mp_kind_names[h.kind]);
	*n = h.u;
	return 0;
}

/*
 * Pass one: walk the whole input to prove it well formed, and find the
 * version and type, so truncation and garbage are reported before anything
 * else and a newer version before any field it might have changed.
 */
static int
codec_check(struct rd *r)
{
	const unsigned char *vpos = NULL, *tpos = NULL, **pos;
	struct mp_head h;
	const char *k;
	size_t klen;
	uint64_t i, n;

	if (rd_map(r, &n) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		if (rd_key(r, &k, &klen) == -1)
			return -1;
		pos = key_is(k, klen, "v") ? &vpos : key_is(k, klen, "t") ? &tpos : NULL;
		if (pos != NULL && *pos != NULL)
			return rd_fail(r, REC_E_VALUE, "field \"%c\" appears twice", k[0]);
		if (pos != NULL)
			*pos = r->p;
		if (rd_skip(r, 1) == -1)
			return -1;
	}
	if (r->p != r->end)
		return rd_fail(r, REC_E_GARBAGE, "%zu bytes after the record",
		    (size_t)(r->end - r->p));
	if (tpos == NULL)
		return rd_fail(r, REC_E_MISSING, "no record type (\"t\")");
	r->p = tpos;
	if (rd_head(r, &h) == -1)
		return -1;
	if (h.kind != MP_STR)
		return rd_fail(r, REC_E_TYPE, "field \"t\": %s, not a string", mp_kind_names[h.kind]);
	if (!key_is((const char *)r->p, h.u, r->rt->tag))
		return rd_fail(r, REC_E_KIND, "this is a \"%s\" record",
		    log_escape(r->p, h.u, 32));
	if (vpos == NULL)
		return rd_fail(r, REC_E_MISSING, "no version (\"v\")");
	r->p = vpos;
	if (rd_head(r, &h) == -1)
		return -1;
	if (h.kind != MP_UINT)
		return rd_fail(r, REC_E_TYPE, "field \"v\": %s, not an unsigned integer",
		    mp_kind_names[h.kind]);
	if (h.u == 0)
		return rd_fail(r, REC_E_VALUE, "version 0 is not valid");
	if (h.u > r->rt->version)
		return rd_fail(r, REC_E_VERSION, "version %llu was written by a newer ksefd "
		    "(this one reads up to version %llu)", (unsigned long long)h.u,
		    (unsigned long long)r->rt->version);
	return 0;
}

/* Read an integer field into [min, max] (as int64) or [0, umax] (unsigned). */
static int
rd_int(struct rd *r, const struct field *f, int64_t min, uint64_t max, uint64_t *out)
{
	struct mp_head h;

	if (rd_head(r, &h) == -1)
		return -1;
	if (h.kind != MP_UINT && h.kind != MP_INT)
		return rd_fail(r, REC_E_TYPE, "field \"%s\": %s, not an integer",
		    f->name, mp_kind_names[h.kind]);
	if (h.kind == MP_INT ? h.i < min : h.u > max)
		return rd_fail(r, REC_E_VALUE, "field \"%s\": integer out of range", f->name);
	*out = h.kind == MP_INT ? (uint64_t)h.i : h.u;
	return 0;
}

/* Read a string field's bytes: no NUL inside, at most max bytes. */
static int
rd_str(struct rd *r, const struct field *f, size_t max, const char **s, size_t *len)
{
	struct mp_head h;

	if (rd_head(r, &h) == -1)
		return -1;
	if (h.kind != MP_STR)
		return rd_fail(r, REC_E_TYPE, "field \"%s\": %s, not a string",
		    f->name, mp_kind_names[h.kind]);
	if (h.u > max)
		return rd_fail(r, REC_E_VALUE, "field \"%s\": %llu bytes, longer than %zu",
		    f->name, (unsigned long long)h.u, max);
	if (rd_take(r, h.u, (const unsigned char **)s) == -1)
		return -1;
	if (memchr(*s, '\0', h.u) != NULL)
		return rd_fail(r, REC_E_VALUE, "field \"%s\": contains a NUL byte", f->name);
	*len = h.u;
	return 0;
}

/* Decode one field's value into the record. */
static int
field_read(struct rd *r, const struct field *f, void *rec)
{
	char *p = (char *)rec + f->off;
	struct mp_head h;
	const char *s;
	const unsigned char *b = NULL;
	uint64_t u, i;
	size_t len;
	int v;

	switch (f->type) {
	case FT_BIN:
		if (rd_head(r, &h) == -1)
			return -1;
		if (h.kind != MP_BIN)
			return rd_fail(r, REC_E_TYPE, "field \"%s\": %s, not binary data",
			    f->name, mp_kind_names[h.kind]);
		if (h.u != f->size)
			return rd_fail(r, REC_E_VALUE, "field \"%s\": %llu bytes, not %zu",
			    f->name, (unsigned long long)h.u, f->size);
		if (rd_take(r, h.u, &b) == -1)
			return -1;
		memcpy(p, b, f->size);
		return 0;
	case FT_FSTR:
		if (rd_str(r, f, f->size - 1, &s, &len) == -1)
			return -1;
		memcpy(p, s, len);
		p[len] = '\0';
		return 0;
	case FT_STR:
		if (rd_str(r, f, f->size ? f->size : STR_MAX_DEFAULT, &s, &len) == -1)
			return -1;
		*(char **)p = xstrndup(s, len);
		return 0;
	case FT_I64:
		if (rd_int(r, f, INT64_MIN, INT64_MAX, &u) == -1)
			return -1;
		*(int64_t *)p = (int64_t)u;
		return 0;
	case FT_U64:
		if (rd_int(r, f, 0, UINT64_MAX, &u) == -1)
			return -1;
		*(uint64_t *)p = u;
		return 0;
	case FT_U32:
		if (rd_int(r, f, 0, UINT32_MAX, &u) == -1)
			return -1;
		*(uint32_t *)p = (uint32_t)u;
		return 0;
	case FT_I32:
		if (rd_int(r, f, INT32_MIN, INT32_MAX, &u) == -1)
			return -1;
		*(int32_t *)p = (int32_t)u;
		return 0;
	case FT_BOOL:
		if (rd_head(r, &h) == -1)
			return -1;
		if (h.kind != MP_BOOL)
			return rd_fail(r, REC_E_TYPE, "field \"%s\": %s, not a boolean",
			    f->name, mp_kind_names[h.kind]);
		*(int *)p = (int)h.u;
		return 0;
	case FT_ENUM:
		if (rd_str(r, f, 64, &s, &len) == -1)
			return -1;
		for (v = 0; v < f->nnames; v++)
			if (key_is(s, len, f->names[v])) {
				*(int *)p = v;
				return 0;
			}
		return rd_fail(r, REC_E_VALUE, "field \"%s\": unknown value \"%s\"",
		    f->name, log_escape(s, len, 32));
	case FT_I64LIST:
		if (rd_head(r, &h) == -1)
			return -1;
		if (h.kind != MP_ARRAY)
			return rd_fail(r, REC_E_TYPE, "field \"%s\": %s, not an array",
			    f->name, mp_kind_names[h.kind]);
		if (h.u > RECORD_LIMITER_MAX)
			return rd_fail(r, REC_E_VALUE, "field \"%s\": %llu entries, more than %d",
			    f->name, (unsigned long long)h.u, RECORD_LIMITER_MAX);
		/* Pass one saw h.u objects follow, so the input bounds this allocation. */
		*(int64_t **)p = xcalloc(h.u, sizeof(int64_t));
		*(size_t *)((char *)rec + f->size) = h.u;
		for (i = 0; i < h.u; i++) {
			if (rd_int(r, f, INT64_MIN, INT64_MAX, &u) == -1)
				return -1;
			(*(int64_t **)p)[i] = (int64_t)u;
		}
		return 0;
	}
	return rd_fail(r, REC_E_GARBAGE, "internal: unknown field type");
}

/* Free what a record owns (wiping secrets) and zero it. */
static void
codec_free(const struct rtype *rt, void *rec)
{
	const struct field *f;
	char **sp;
	size_t i;

	for (i = 0; i < rt->nfields; i++) {
		f = &rt->fields[i];
		sp = (char **)((char *)rec + f->off);
		if (f->type == FT_STR && *sp != NULL && (f->flags & F_SECRET))
			explicit_wipe(*sp, strlen(*sp));
		if (f->type == FT_STR || f->type == FT_I64LIST)
			free(*sp);
	}
	explicit_wipe(rec, rt->recsize);
}

/* Zero a record and give optional enums their "absent" value. */
static void
codec_init(const struct rtype *rt, void *rec)
{
	size_t i;

	memset(rec, 0, rt->recsize);
	for (i = 0; i < rt->nfields; i++)
		if (rt->fields[i].type == FT_ENUM && !(rt->fields[i].flags & F_REQ))
			*(int *)((char *)rec + rt->fields[i].off) = -1;
}

/* Pass two: fill the record from a map that codec_check() accepted. */
static int
codec_fill(struct rd *r, void *rec)
{
	const struct rtype *rt = r->rt;
	uint64_t seen = 0, i, n;
	const char *k;
	size_t klen, j, c, next = 0;

	if (rd_map(r, &n) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		if (rd_key(r, &k, &klen) == -1)
			return -1;
		/*
		 * Records are written in table order: look for the field
		 * after the last one found first, so a record costs one
		 * name compare per field, not one per field pair.
		 */
		for (c = 0, j = next; c < rt->nfields; c++, j = (j + 1) % rt->nfields)
			if (key_is(k, klen, rt->fields[j].name))
				break;
		if (c == rt->nfields)
			j = rt->nfields;
		else
			next = (j + 1) % rt->nfields;
		if (j == rt->nfields ||
		    (r->only != 0 && !(r->only & ((uint64_t)1 << j)))) {
			if (rd_skip(r, 1) == -1)	/* "v", "t", from a newer ksefd, or not asked for */
				return -1;
			continue;
		}
		if (seen & ((uint64_t)1 << j))
			return rd_fail(r, REC_E_VALUE, "field \"%s\" appears twice",
			    rt->fields[j].name);
		seen |= (uint64_t)1 << j;
		if (field_read(r, &rt->fields[j], rec) == -1)
			return -1;
	}
	for (j = 0; j < rt->nfields; j++)
		if ((rt->fields[j].flags & F_REQ) && !(seen & ((uint64_t)1 << j)) &&
		    (r->only == 0 || (r->only & ((uint64_t)1 << j))))
			return rd_fail(r, REC_E_MISSING, "required field \"%s\" is missing",
			    rt->fields[j].name);
	return 0;
}

/*
 * Decode into rec (only the fields in the mask `only`, or all when it is 0);
 * on failure rec is left all zero and err says why.
 */
static int
codec_decode_only(const struct rtype *rt, const void *data, size_t len,
    void *rec, uint64_t only, struct record_err *err)
{
	struct rd r;
	int rc = -1;

	_Static_assert(nitems(invoice_fields) <= 64, "seen mask");
	codec_init(rt, rec);
	err->code = 0;
	err->msg[0] = '\0';
	r.start = r.p = data;
	r.end = r.start + len;
	r.rt = rt;
	r.err = err;
	r.only = only;
	if (data == NULL && len > 0)
		rd_fail(&r, REC_E_GARBAGE, "no data");
	else if (codec_check(&r) == 0) {
		r.p = r.start;
		rc = codec_fill(&r, rec);
	}
	if (rc == -1)
		codec_free(rt, rec);	/* leaves it all zero */
	return rc;
}

static int
codec_decode(const struct rtype *rt, const void *data, size_t len, void *rec,
    struct record_err *err)
{
	return codec_decode_only(rt, data, len, rec, 0, err);
}

/* The bit of field `name` of rt for codec_decode_only(). */
static uint64_t
field_bit(const struct rtype *rt, const char *name)
{
	size_t j;

	for (j = 0; j < rt->nfields; j++)
		if (strcmp(rt->fields[j].name, name) == 0)
			return (uint64_t)1 << j;
	fatalx("record: %s has no field %s", rt->tag, name);
}

int
record_invoice_peek(const void *data, size_t len, struct record_invoice *rec,
    struct record_err *err)
{
	static uint64_t only;

	if (only == 0)
		only = field_bit(&rt_invoice, "state") |
		    field_bit(&rt_invoice, "next_due_ms");
	return codec_decode_only(&rt_invoice, data, len, rec, only, err);
}

/* The public quartets, one per record type. */
#define RECORD_FUNCS(name, st, rt)					\
void									\
record_##name##_encode(const st *rec, struct buf *out)			\
{									\
	codec_encode(&rt, rec, out);					\
}									\
int									\
record_##name##_decode(const void *data, size_t len, st *rec,		\
    struct record_err *err)						\
{									\
	return codec_decode(&rt, data, len, rec, err);			\
}									\
void									\
record_##name##_free(st *rec)						\
{									\
	codec_free(&rt, rec);						\
}

RECORD_FUNCS(invoice, struct record_invoice, rt_invoice)
RECORD_FUNCS(audit, struct record_audit, rt_audit)
RECORD_FUNCS(token, struct record_token, rt_token)
RECORD_FUNCS(session, struct record_session, rt_session)
RECORD_FUNCS(limiter, struct record_limiter, rt_limiter)

void
record_invoice_copy(struct record_invoice *dst, const struct record_invoice *src)
{
	const struct field *f;
	char **sp;
	size_t i;

	memcpy(dst, src, sizeof(*dst));
	for (i = 0; i < rt_invoice.nfields; i++) {
		f = &rt_invoice.fields[i];
		sp = (char **)((char *)dst + f->off);
		if (f->type == FT_STR && *sp != NULL)
			*sp = xstrdup(*sp);
	}
}
