/*
 * ksef_json.c: KSeF's JSON, both ways, with jansson; and the classification
 * of a reply (transport outcome, HTTP status, either error format) into a
 * domain outcome.  Nothing a reply says is trusted: every field is checked
 * for its type, length and range, and a failure names the field and the
 * rule.  Unknown fields are ignored (API.md section 2).
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "util.h"
#include "ksef_int.h"

#define J_STR_MAX	4096	/* descriptions, URLs, most strings */
#define J_DETAILS_MAX	4096	/* joined details */
#define J_LIST_MAX	100000	/* array entries */
#define RETRY_DEFAULT_S	60	/* a 429 without a usable Retry-After */
#define J_RATE_MAX	1000000	/* a rate-limit count, as [limits] allows */

/* ---- field access ---- */

/* Parse a whole body as one JSON value; NULL with err. */
static json_t *
j_load(const void *data, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	json_t *v;

	if (len == 0) {
		snprintf(err, errlen, "empty body");
		return NULL;
	}
	v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (v == NULL)
		snprintf(err, errlen, "not JSON (line %d, column %d): %s",
		    je.line, je.column, je.text);
	return v;
}

/* Load a body that must be an object. */
static json_t *
j_load_object(const void *data, size_t len, char *err, size_t errlen)
{
	json_t *v;

	if ((v = j_load(data, len, err, errlen)) != NULL &&
	    !json_is_object(v)) {
		snprintf(err, errlen, "body: expected an object");
		json_decref(v);
		v = NULL;
	}
	return v;
}

/* The member `key` of o, or NULL when absent or null. */
static json_t *
j_member(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_null(v) ? NULL : v;
}

/*
 * A string member: present (when req), a string, 1..max bytes, no NUL or
 * control characters.  *out is NULL for an absent optional one.
 */
static int
j_str(json_t *o, const char *where, const char *key, size_t max, int req,
    char **out, char *err, size_t errlen)
{
	json_t *v = j_member(o, key);
	const char *s;
	size_t len, i;

	*out = NULL;
	if (v == NULL) {
		if (!req)
			return 0;
		snprintf(err, errlen, "%s.%s: missing", where, key);
		return -1;
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "%s.%s: expected a string", where, key);
		return -1;
	}
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0 || len > max) {
		snprintf(err, errlen, "%s.%s: length %zu not in 1..%zu",
		    where, key, len, max);
		return -1;
	}
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 && s[i] != '\n' &&
		    s[i] != '\t' && s[i] != '\r') {
			snprintf(err, errlen, "%s.%s: control character "
			    "at byte %zu", where, key, i);
			return -1;
		}
	*out = xstrndup(s, len);
	return 0;
}

/* An integer member in min..max; absent optional ones leave *out alone. */
static int
j_int(json_t *o, const char *where, const char *key, int64_t min,
    int64_t max, int req, int64_t *out, char *err, size_t errlen)
{
	json_t *v = j_member(o, key);
	json_int_t n;

	if (v == NULL) {
		if (!req)
			return 0;
		snprintf(err, errlen, "%s.%s: missing", where, key);
		return -1;
	}
	if (!json_is_integer(v)) {
		snprintf(err, errlen, "%s.%s: expected an integer", where, key);
		return -1;
	}
	n = json_integer_value(v);
	if (n < min || n > max) {
		snprintf(err, errlen, "%s.%s: %lld not in %lld..%lld", where,
		    key, (long long)n, (long long)min, (long long)max);
		return -1;
	}
	*out = n;
	return 0;
}

static int
j_bool(json_t *o, const char *where, const char *key, int *out, char *err,
    size_t errlen)
{
	json_t *v = j_member(o, key);

	*out = 0;
	if (v == NULL)
		return 0;
	if (!json_is_boolean(v)) {
		snprintf(err, errlen, "%s.%s: expected true or false", where,
		    key);
		return -1;
	}
	*out = json_is_true(v);
	return 0;
}

/* A date-time member, kept as given in *out (when out is not NULL). */
static int
j_time(json_t *o, const char *where, const char *key, int req, char **out,
    int64_t *ms, char *err, size_t errlen)
{
	char *s;
	int64_t t;

	if (j_str(o, where, key, 64, req, &s, err, errlen) == -1)
		return -1;
	if (s == NULL) {
		if (out != NULL)
			*out = NULL;
		return 0;
	}
	if (time_parse_iso(s, &t) == -1) {
		snprintf(err, errlen, "%s.%s: \"%s\" is not an ISO-8601 "
		    "date-time with an offset", where, key,
		    log_escape(s, strlen(s), 64));
		free(s);
		return -1;
	}
	if (ms != NULL)
		*ms = t;
	if (out != NULL)
		*out = s;
	else
		free(s);
	return 0;
}

/* An object (or array) member, or NULL when absent and not required. */
static int
j_sub(json_t *o, const char *where, const char *key, int req, int array,
    json_t **out, char *err, size_t errlen)
{
	json_t *v = j_member(o, key);

	*out = v;
	if (v == NULL && !req)
		return 0;
	if (v == NULL || (array ? !json_is_array(v) : !json_is_object(v))) {
		snprintf(err, errlen, "%s.%s: %s", where, key, v == NULL ?
		    "missing" : array ? "expected an array" :
		    "expected an object");
		return -1;
	}
	if (array && json_array_size(v) > J_LIST_MAX) {
		snprintf(err, errlen, "%s.%s: more than %d entries", where,
		    key, J_LIST_MAX);
		return -1;
	}
	return 0;
}

#define j_obj(o, w, k, req, out, err, len) j_sub(o, w, k, req, 0, out, err, len)
#define j_arr(o, w, k, req, out, err, len) j_sub(o, w, k, req, 1, out, err, len)

/* Append the strings of a details array to b, "; "-separated, capped. */
static int
j_details_add(json_t *arr, const char *where, struct buf *b, char *err,
    size_t errlen)
{
	size_t i;
	json_t *v;
	const char *s;

	json_array_foreach(arr, i, v) {
		if (!json_is_string(v)) {
			snprintf(err, errlen, "%s.details[%zu]: expected a "
			    "string", where, i);
			return -1;
		}
		s = json_string_value(v);
		if (b->len >= J_DETAILS_MAX)
			continue;
		if (b->len > 0)
			buf_addstr(b, "; ");
		buf_add(b, s, strnlen(s, J_DETAILS_MAX - b->len));
	}
	return 0;
}

/* details[] of o joined into *out (NULL when there are none). */
static int
j_details(json_t *o, const char *where, char **out, char *err, size_t errlen)
{
	struct buf b;
	json_t *arr;

	*out = NULL;
	if (j_arr(o, where, "details", 0, &arr, err, errlen) == -1)
		return -1;
	if (arr == NULL)
		return 0;
	buf_init(&b);
	if (j_details_add(arr, where, &b, err, errlen) == -1) {
		buf_free(&b);
		return -1;
	}
	if (b.len == 0)
		buf_free(&b);
	else
		*out = (char *)buf_release(&b, NULL);
	return 0;
}

/* {code, description, details[]} as KSeF's status objects carry it. */
static int
j_status(json_t *o, const char *where, int32_t *code, char **desc,
    char **details, char *err, size_t errlen)
{
	json_t *st;
	int64_t c = 0;
	char w[80];

	*desc = *details = NULL;
	if (j_obj(o, where, "status", 1, &st, err, errlen) == -1)
		return -1;
	snprintf(w, sizeof(w), "%s.status", where);
	if (j_int(st, w, "code", 0, 999999, 1, &c, err, errlen) == -1 ||
	    j_str(st, w, "description", J_STR_MAX, 0, desc, err,
	    errlen) == -1)
		return -1;
	if (j_details(st, w, details, err, errlen) == -1) {
		free(*desc);
		*desc = NULL;
		return -1;
	}
	*code = (int32_t)c;
	return 0;
}

/* ---- response parsers ---- */

void
ksef_json_keys_free(struct ksef_cert *c, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(c[i].cert);
		free(c[i].key_id);
	}
	free(c);
}

int
ksef_json_keys(const void *data, size_t len, struct ksef_cert **out,
    size_t *nout, char *err, size_t errlen)
{
	struct ksef_cert *c = NULL;
	json_t *arr, *e, *usage, *u;
	size_t i, j, n;
	char w[40];
	const char *s;

	if ((arr = j_load(data, len, err, errlen)) == NULL)
		return -1;
	if (!json_is_array(arr) || (n = json_array_size(arr)) == 0 ||
	    n > 100) {
		snprintf(err, errlen, "body: expected an array of 1..100 "
		    "certificates");
		goto fail;
	}
	c = xcalloc(n + 1, sizeof(*c));
	json_array_foreach(arr, i, e) {
		snprintf(w, sizeof(w), "[%zu]", i);
		if (!json_is_object(e)) {
			snprintf(err, errlen, "%s: expected an object", w);
			goto fail;
		}
		if (j_str(e, w, "certificate", 65536, 1, &c[i].cert, err,
		    errlen) == -1 ||
		    j_str(e, w, "publicKeyId", KSEF_SHA_B64_LEN, 0,
		    &c[i].key_id, err, errlen) == -1 ||
		    j_time(e, w, "validFrom", 1, NULL, &c[i].valid_from_ms,
		    err, errlen) == -1 ||
		    j_time(e, w, "validTo", 1, NULL, &c[i].valid_to_ms, err,
		    errlen) == -1 ||
		    j_arr(e, w, "usage", 1, &usage, err, errlen) == -1)
			goto fail;
		json_array_foreach(usage, j, u) {
			if ((s = json_string_value(u)) == NULL) {
				snprintf(err, errlen, "%s.usage[%zu]: expected "
				    "a string", w, j);
				goto fail;
			}
			if (strcmp(s, "KsefTokenEncryption") == 0)
				c[i].usage |= KSEF_USE_TOKEN;
			else if (strcmp(s, "SymmetricKeyEncryption") == 0)
				c[i].usage |= KSEF_USE_SYMMETRIC;
		}
	}
	json_decref(arr);
	*out = c;
	*nout = n;
	return 0;
fail:
	if (c != NULL)
		ksef_json_keys_free(c, n);
	json_decref(arr);
	return -1;
}

int
ksef_json_challenge(const void *data, size_t len, struct ksef_challenge *ch,
    char *err, size_t errlen)
{
	json_t *o;
	char *s = NULL;
	int rc = -1;

	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if (j_str(o, "body", "challenge", KSEF_REF_MAX - 1, 1, &s, err,
	    errlen) == -1 ||
	    j_int(o, "body", "timestampMs", 1, INT64_MAX, 1,
	    &ch->timestamp_ms, err, errlen) == -1)
		goto out;
	snprintf(ch->challenge, sizeof(ch->challenge), "%s", s);
	rc = 0;
out:
	free(s);
	json_decref(o);
	return rc;
}

/* {token, validUntil} under key; the token must be printable ASCII. */
static int
j_tok(json_t *o, const char *key, struct ksef_tok *t, char *err,
    size_t errlen)
{
	json_t *v;
	char w[64];
	size_t i;

	t->token = NULL;
	if (j_obj(o, "body", key, 1, &v, err, errlen) == -1)
		return -1;
	snprintf(w, sizeof(w), "body.%s", key);
	if (j_str(v, w, "token", KSEF_TOKEN_MAX, 1, &t->token, err,
	    errlen) == -1)
		return -1;
	for (i = 0; t->token[i] != '\0'; i++)
		if (!isgraph((unsigned char)t->token[i])) {
			snprintf(err, errlen, "%s.token: not printable ASCII",
			    w);
			goto fail;
		}
	if (j_time(v, w, "validUntil", 1, NULL, &t->valid_until_ms, err,
	    errlen) == -1)
		goto fail;
	return 0;
fail:
	explicit_wipe(t->token, strlen(t->token));
	free(t->token);
	t->token = NULL;
	return -1;
}

/* A reference number: 1..63 printable characters without '/', '?', '#'. */
static int
j_ref(json_t *o, const char *where, const char *key, int req, char **out,
    char *err, size_t errlen)
{
	size_t i;

	if (j_str(o, where, key, KSEF_REF_MAX - 1, req, out, err,
	    errlen) == -1)
		return -1;
	if (*out == NULL)
		return 0;
	for (i = 0; (*out)[i] != '\0'; i++)
		if (!isalnum((unsigned char)(*out)[i]) && (*out)[i] != '-' &&
		    (*out)[i] != '_' && (*out)[i] != '.') {
			snprintf(err, errlen, "%s.%s: character %zu is not "
			    "a letter, digit, '-', '_' or '.'", where, key, i);
			free(*out);
			*out = NULL;
			return -1;
		}
	return 0;
}

int
ksef_json_auth_init(const void *data, size_t len, char **ref,
    struct ksef_tok *t, char *err, size_t errlen)
{
	json_t *o;

	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if (j_ref(o, "body", "referenceNumber", 1, ref, err, errlen) == -1) {
		json_decref(o);
		return -1;
	}
	if (j_tok(o, "authenticationToken", t, err, errlen) == -1) {
		free(*ref);
		*ref = NULL;
		json_decref(o);
		return -1;
	}
	json_decref(o);
	return 0;
}

int
ksef_json_auth_status(const void *data, size_t len, int32_t *code,
    char **desc, char **details, char *err, size_t errlen)
{
	json_t *o;
	int rc;

	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	rc = j_status(o, "body", code, desc, details, err, errlen);
	json_decref(o);
	return rc;
}

int
ksef_json_tokens(const void *data, size_t len, int need_refresh,
    struct record_token *rt, char *err, size_t errlen)
{
	struct ksef_tok a = { NULL, 0 }, r = { NULL, 0 };
	json_t *o;

	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if (j_tok(o, "accessToken", &a, err, errlen) == -1 ||
	    (need_refresh && j_tok(o, "refreshToken", &r, err,
	    errlen) == -1)) {
		if (a.token != NULL) {
			explicit_wipe(a.token, strlen(a.token));
			free(a.token);
		}
		json_decref(o);
		return -1;
	}
	json_decref(o);
	rt->access_token = a.token;
	rt->access_expiry_ms = a.valid_until_ms;
	rt->refresh_token = r.token;
	rt->refresh_expiry_ms = r.valid_until_ms;
	return 0;
}

int
ksef_json_reference(const void *data, size_t len, char **ref,
    int64_t *valid_until_ms, char *err, size_t errlen)
{
	json_t *o;
	int rc = -1;

	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if (j_ref(o, "body", "referenceNumber", 1, ref, err, errlen) == 0) {
		rc = 0;
		if (valid_until_ms != NULL && j_time(o, "body", "validUntil",
		    1, NULL, valid_until_ms, err, errlen) == -1) {
			free(*ref);
			*ref = NULL;
			rc = -1;
		}
	}
	json_decref(o);
	return rc;
}

void
ksef_invoice_free(struct ksef_invoice *inv)
{
	free(inv->reference);
	free(inv->invoice_hash);
	free(inv->invoice_number);
	free(inv->ksef_number);
	free(inv->acquisition_date);
	free(inv->storage_date);
	free(inv->upo_url);
	free(inv->reason);
	free(inv->details);
	free(inv->original_ksef_number);
	free(inv->original_session);
	memset(inv, 0, sizeof(*inv));
}

static void
ksef_invoices_free(struct ksef_invoice *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ksef_invoice_free(&v[i]);
	free(v);
}

/* The domain outcome of an invoice status code (API.md section 7). */
static enum ksef_outcome
invoice_outcome(int32_t code)
{
	if (code < 200)
		return KSEF_PENDING;
	if (code < 300)
		return KSEF_PROCESSED;
	switch (code) {
	case 440:
		return KSEF_DUPLICATE;
	case 405:	/* cancelled because of a session error */
	case 500:	/* unknown error */
	case 550:	/* cancelled by the system, retry */
		return KSEF_TRANSIENT;
	default:
		return KSEF_REJECTED;
	}
}

/* The fields both invoice lists and metadata share. */
static int
j_invoice_common(json_t *e, const char *w, struct ksef_invoice *inv,
    char *err, size_t errlen)
{
	char *hash;

	if (j_str(e, w, "invoiceHash", KSEF_SHA_B64_LEN, 0, &hash, err,
	    errlen) == -1)
		return -1;
	inv->invoice_hash = hash;
	if (hash != NULL && strlen(hash) != KSEF_SHA_B64_LEN) {
		snprintf(err, errlen, "%s.invoiceHash: not 44 characters", w);
		return -1;
	}
	if (j_str(e, w, "invoiceNumber", 256 * 4, 0, &inv->invoice_number,
	    err, errlen) == -1 ||
	    j_ref(e, w, "ksefNumber", 0, &inv->ksef_number, err,
	    errlen) == -1 ||
	    j_time(e, w, "acquisitionDate", 0, &inv->acquisition_date, NULL,
	    err, errlen) == -1 ||
	    j_time(e, w, "permanentStorageDate", 0, &inv->storage_date, NULL,
	    err, errlen) == -1)
		return -1;
	return 0;
}

/* One SessionInvoiceStatusResponse; inv is freed by the caller on -1. */
static int
j_invoice(json_t *e, const char *w, struct ksef_invoice *inv, char *err,
    size_t errlen)
{
	json_t *st, *ext;
	int64_t ord = 0;
	char ww[80];

	if (!json_is_object(e)) {
		snprintf(err, errlen, "%s: expected an object", w);
		return -1;
	}
	if (j_int(e, w, "ordinalNumber", 0, UINT32_MAX, 0, &ord, err,
	    errlen) == -1 ||
	    j_ref(e, w, "referenceNumber", 1, &inv->reference, err,
	    errlen) == -1 ||
	    j_invoice_common(e, w, inv, err, errlen) == -1 ||
	    j_str(e, w, "upoDownloadUrl", J_STR_MAX, 0, &inv->upo_url, err,
	    errlen) == -1 ||
	    j_status(e, w, &inv->code, &inv->reason, &inv->details, err,
	    errlen) == -1)
		return -1;
	inv->ordinal = (uint32_t)ord;
	inv->outcome = invoice_outcome(inv->code);
	if (inv->outcome == KSEF_PROCESSED && inv->ksef_number == NULL) {
		snprintf(err, errlen, "%s: status %d without ksefNumber", w,
		    inv->code);
		return -1;
	}
	st = j_member(e, "status");
	snprintf(ww, sizeof(ww), "%s.status", w);
	if (j_obj(st, ww, "extensions", 0, &ext, err, errlen) == -1)
		return -1;
	if (ext != NULL) {
		snprintf(ww, sizeof(ww), "%s.status.extensions", w);
		if (j_ref(ext, ww, "originalKsefNumber", 0,
		    &inv->original_ksef_number, err, errlen) == -1 ||
		    j_ref(ext, ww, "originalSessionReferenceNumber", 0,
		    &inv->original_session, err, errlen) == -1)
			return -1;
	}
	return 0;
}

int
ksef_json_invoice_status(const void *data, size_t len,
    struct ksef_invoice *inv, char *err, size_t errlen)
{
	json_t *o;
	int rc;

	memset(inv, 0, sizeof(*inv));
	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if ((rc = j_invoice(o, "body", inv, err, errlen)) == -1)
		ksef_invoice_free(inv);
	json_decref(o);
	return rc;
}

/* One InvoiceMetadata entry. */
static int
j_meta_invoice(json_t *e, const char *w, struct ksef_invoice *inv,
    char *err, size_t errlen)
{
	if (!json_is_object(e)) {
		snprintf(err, errlen, "%s: expected an object", w);
		return -1;
	}
	if (j_invoice_common(e, w, inv, err, errlen) == -1)
		return -1;
	if (inv->ksef_number == NULL) {
		snprintf(err, errlen, "%s.ksefNumber: missing", w);
		return -1;
	}
	inv->outcome = KSEF_PROCESSED;
	inv->code = 200;
	return 0;
}

/* The invoices[] of o: session invoice statuses, or metadata when meta. */
static int
j_invoices(json_t *o, int meta, struct ksef_invoice **out, size_t *nout,
    char *err, size_t errlen)
{
	struct ksef_invoice *v;
	json_t *arr, *e;
	size_t i, n;
	char w[40];

	if (j_arr(o, "body", "invoices", 1, &arr, err, errlen) == -1)
		return -1;
	n = json_array_size(arr);
	v = xcalloc(n + 1, sizeof(*v));
	json_array_foreach(arr, i, e) {
		snprintf(w, sizeof(w), "invoices[%zu]", i);
		if ((meta ? j_meta_invoice(e, w, &v[i], err, errlen) :
		    j_invoice(e, w, &v[i], err, errlen)) == -1) {
			ksef_invoices_free(v, n);
			return -1;
		}
	}
	*out = v;
	*nout = n;
	return 0;
}

int
ksef_json_session_invoices(const void *data, size_t len,
    struct ksef_invoice **out, size_t *nout, char **cont, char *err,
    size_t errlen)
{
	json_t *o;
	int rc = -1;

	*cont = NULL;
	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if (j_invoices(o, 0, out, nout, err, errlen) == 0) {
		rc = j_str(o, "body", "continuationToken", 65536, 0, cont,
		    err, errlen);
		if (rc == -1)
			ksef_invoices_free(*out, *nout);
	}
	json_decref(o);
	return rc;
}

int
ksef_json_metadata(const void *data, size_t len, struct ksef_invoice **out,
    size_t *nout, int *has_more, int *truncated, char *err, size_t errlen)
{
	json_t *o;
	int rc = -1;

	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if (j_bool(o, "body", "hasMore", has_more, err, errlen) == 0 &&
	    j_bool(o, "body", "isTruncated", truncated, err, errlen) == 0)
		rc = j_invoices(o, 1, out, nout, err, errlen);
	json_decref(o);
	return rc;
}

/* The session state of a session status code (API.md section 7). */
static enum ksef_session_state
session_state(int32_t code)
{
	switch (code) {
	case 100:
		return KSEF_SESS_OPEN;
	case 150:
	case 170:
		return KSEF_SESS_CLOSING;
	case 200:
		return KSEF_SESS_DONE;
	case 440:
		return KSEF_SESS_CANCELLED;
	default:
		return KSEF_SESS_FAILED;
	}
}

static void
session_info_free(struct ksef_session_info *s)
{
	size_t i;

	for (i = 0; i < s->nupo; i++)
		free(s->upo_urls[i]);
	free(s->upo_urls);
	memset(s, 0, sizeof(*s));
}

int
ksef_json_session_status(const void *data, size_t len,
    struct ksef_session_info *s, char *err, size_t errlen)
{
	json_t *o, *upo, *pages, *p;
	int32_t code;
	char *desc, *details, w[40];
	int64_t n[3] = { 0, 0, 0 };
	size_t i;

	memset(s, 0, sizeof(*s));
	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	if (j_status(o, "body", &code, &desc, &details, err, errlen) == -1)
		goto fail;
	free(desc);
	free(details);
	s->state = session_state(code);
	if (j_int(o, "body", "invoiceCount", 0, UINT32_MAX, 0, &n[0], err,
	    errlen) == -1 ||
	    j_int(o, "body", "successfulInvoiceCount", 0, UINT32_MAX, 0,
	    &n[1], err, errlen) == -1 ||
	    j_int(o, "body", "failedInvoiceCount", 0, UINT32_MAX, 0, &n[2],
	    err, errlen) == -1 ||
	    j_obj(o, "body", "upo", 0, &upo, err, errlen) == -1)
		goto fail;
	s->invoices = (uint32_t)n[0];
	s->succeeded = (uint32_t)n[1];
	s->failed = (uint32_t)n[2];
	if (upo != NULL) {
		if (j_arr(upo, "body.upo", "pages", 0, &pages, err,
		    errlen) == -1)
			goto fail;
		s->upo_urls = xcalloc(json_array_size(pages) + 1,
		    sizeof(char *));
		json_array_foreach(pages, i, p) {
			snprintf(w, sizeof(w), "body.upo.pages[%zu]", i);
			if (!json_is_object(p)) {
				snprintf(err, errlen, "%s: expected an object",
				    w);
				goto fail;
			}
			if (j_str(p, w, "downloadUrl", J_STR_MAX, 1,
			    &s->upo_urls[s->nupo], err, errlen) == -1)
				goto fail;
			s->nupo++;
		}
	}
	json_decref(o);
	return 0;
fail:
	session_info_free(s);
	json_decref(o);
	return -1;
}

/* EffectiveApiRateLimits members by enum ratelimit_group. */
static const char *const rate_groups[RL_NGROUPS] = {
	[RL_GROUP_ONLINE_SESSION] = "onlineSession",
	[RL_GROUP_INVOICE_SEND] = "invoiceSend",
	[RL_GROUP_BATCH_SESSION] = "batchSession",
	[RL_GROUP_INVOICE_STATUS] = "invoiceStatus",
	[RL_GROUP_SESSION_LIST] = "sessionList",
	[RL_GROUP_SESSION_INVOICE_LIST] = "sessionInvoiceList",
	[RL_GROUP_SESSION_MISC] = "sessionMisc",
	[RL_GROUP_INVOICE_METADATA] = "invoiceMetadata",
	[RL_GROUP_INVOICE_EXPORT] = "invoiceExport",
	[RL_GROUP_INVOICE_EXPORT_STATUS] = "invoiceExportStatus",
	[RL_GROUP_INVOICE_DOWNLOAD] = "invoiceDownload",
	[RL_GROUP_OTHER] = "other",
	/* RL_GROUP_PUBLIC is per IP and not reported. */
};

int
ksef_json_rate_limits(const void *data, size_t len,
    struct ratelimit_limits lim[RL_NGROUPS], int have[RL_NGROUPS],
    char *err, size_t errlen)
{
	static const char *const keys[RL_NWIN] = { "perSecond", "perMinute",
	    "perHour" };
	struct ratelimit_limits l[RL_NGROUPS];
	json_t *o, *g;
	int64_t n;
	int gi, w, found = 0;
	char where[64];

	memset(l, 0, sizeof(l));
	memset(have, 0, RL_NGROUPS * sizeof(*have));
	if ((o = j_load_object(data, len, err, errlen)) == NULL)
		return -1;
	for (gi = 0; gi < RL_NGROUPS; gi++) {
		if (rate_groups[gi] == NULL)
			continue;
		if (j_obj(o, "body", rate_groups[gi], 0, &g, err,
		    errlen) == -1)
			goto fail;
		if (g == NULL)
			continue;
		snprintf(where, sizeof(where), "body.%s", rate_groups[gi]);
		for (w = 0; w < RL_NWIN; w++) {
			if (j_int(g, where, keys[w], 0, J_RATE_MAX, 1, &n, err,
			    errlen) == -1)
				goto fail;
			l[gi].max[w] = (uint32_t)n;
		}
		have[gi] = 1;
		found++;
	}
	if (found == 0) {
		snprintf(err, errlen, "body: none of the known limit groups "
		    "(onlineSession, invoiceSend, ... other)");
		goto fail;
	}
	json_decref(o);
	memcpy(lim, l, sizeof(l));
	return 0;
fail:
	memset(have, 0, RL_NGROUPS * sizeof(*have));
	json_decref(o);
	return -1;
}

void
ksef_error_free(struct ksef_error *e)
{
	free(e->description);
	free(e->details);
	free(e->reason_code);
	memset(e, 0, sizeof(*e));
}

/* The entries of a legacy exceptionDetailList or problem errors[]. */
static int
j_error_list(json_t *arr, const char *ckey, const char *dkey,
    struct ksef_error *e)
{
	struct buf b;
	json_t *x, *det;
	size_t i;
	int64_t code;
	char err[8], *s;

	buf_init(&b);
	json_array_foreach(arr, i, x) {
		code = 0;
		if (!json_is_object(x) || j_int(x, "", ckey, 0, 999999, 0,
		    &code, err, sizeof(err)) == -1) {
			buf_free(&b);
			return -1;
		}
		if (e->code == 0)
			e->code = (int32_t)code;
		if (j_str(x, "", dkey, J_STR_MAX, 0, &s, err,
		    sizeof(err)) == -1)
			s = NULL;
		if (s != NULL && e->description == NULL)
			e->description = s;
		else if (s != NULL) {
			if (b.len > 0)
				buf_addstr(&b, "; ");
			buf_addstr(&b, s);
			free(s);
		}
		if ((det = j_member(x, "details")) != NULL &&
		    json_is_array(det) && j_details_add(det, "", &b, err,
		    sizeof(err)) == -1) {
			buf_free(&b);
			return -1;
		}
	}
	if (b.len > 0)
		e->details = (char *)buf_release(&b, NULL);
	buf_free(&b);
	return 0;
}

int
ksef_json_error(const void *data, size_t len, struct ksef_error *e)
{
	json_t *o, *x, *arr;
	char err[8];
	int rc = -1;

	memset(e, 0, sizeof(*e));
	if ((o = j_load_object(data, len, err, sizeof(err))) == NULL)
		return -1;
	if ((x = j_member(o, "exception")) != NULL) {
		/* legacy: {"exception":{"exceptionDetailList":[...]}} */
		if (json_is_object(x) &&
		    (arr = j_member(x, "exceptionDetailList")) != NULL &&
		    json_is_array(arr))
			rc = j_error_list(arr, "exceptionCode",
			    "exceptionDescription", e);
	} else if ((x = j_member(o, "status")) != NULL && json_is_object(x)) {
		/* legacy 429: {"status":{"code":429,...}} */
		rc = j_status(o, "body", &e->code, &e->description,
		    &e->details, err, sizeof(err));
	} else if (json_is_integer(x) || j_member(o, "title") != NULL) {
		/* problem+json */
		rc = 0;
		if ((arr = j_member(o, "errors")) != NULL) {
			if (!json_is_array(arr))
				rc = -1;
			else
				rc = j_error_list(arr, "code", "description",
				    e);
		}
		if (rc == 0 && e->description == NULL &&
		    j_str(o, "", "detail", J_STR_MAX, 0, &e->description,
		    err, sizeof(err)) == -1)
			rc = -1;
		if (rc == 0 && e->description == NULL &&
		    j_str(o, "", "title", J_STR_MAX, 0, &e->description,
		    err, sizeof(err)) == -1)
			rc = -1;
		if (rc == 0 && j_str(o, "", "reasonCode", 200, 0,
		    &e->reason_code, err, sizeof(err)) == -1)
			rc = -1;
	}
	if (rc == -1)
		ksef_error_free(e);
	json_decref(o);
	return rc;
}

/* ---- request builders ---- */

/* Serialise and free v.  Caller frees. */
static char *
j_dump(json_t *v)
{
	char *s;

	if (v == NULL || (s = json_dumps(v, JSON_COMPACT)) == NULL)
		fatalx("ksef: cannot build a JSON request");
	json_decref(v);
	return s;
}

char *
ksef_json_ksef_token_req(const char *challenge, const char *nip,
    const char *encrypted_token, const char *key_id)
{
	json_t *v;

	v = json_pack("{s:s, s:{s:s, s:s}, s:s}", "challenge", challenge,
	    "contextIdentifier", "type", "Nip", "value", nip,
	    "encryptedToken", encrypted_token);
	if (v != NULL && key_id != NULL)
		json_object_set_new(v, "publicKeyId", json_string(key_id));
	return j_dump(v);
}

char *
ksef_json_session_open_req(enum inv_form form, const char *wrapped_key,
    const char *iv_b64, const char *key_id)
{
	json_t *v, *enc;

	v = json_pack("{s:{s:s, s:s, s:s}, s:{s:s, s:s}}", "formCode",
	    "systemCode", form == INV_FORM_FA2 ? "FA (2)" : "FA (3)",
	    "schemaVersion", "1-0E", "value", "FA", "encryption",
	    "encryptedSymmetricKey", wrapped_key, "initializationVector",
	    iv_b64);
	if (v != NULL && key_id != NULL &&
	    (enc = json_object_get(v, "encryption")) != NULL)
		json_object_set_new(enc, "publicKeyId", json_string(key_id));
	return j_dump(v);
}

/* Built by hand: every value is Base64 or a number, and the content is big. */
void
ksef_json_send_req(struct buf *b, const char *hash, size_t size,
    const char *enc_hash, size_t enc_size, const char *content_b64)
{
	buf_addf(b, "{\"invoiceHash\":\"%s\",\"invoiceSize\":%zu,"
	    "\"encryptedInvoiceHash\":\"%s\",\"encryptedInvoiceSize\":%zu,"
	    "\"encryptedInvoiceContent\":\"", hash, size, enc_hash, enc_size);
	buf_addstr(b, content_b64);
	buf_addstr(b, "\",\"offlineMode\":false}");
}

char *
ksef_json_metadata_req(const char *nip, const struct ksef_query *q,
    int64_t now_ms)
{
	char from[40], to[40];
	json_t *v;

	time_fmt_iso(q->from_ms, from, sizeof(from));
	time_fmt_iso(q->to_ms != 0 ? q->to_ms : now_ms, to, sizeof(to));
	v = json_pack("{s:s, s:s, s:{s:s, s:s, s:s}}", "subjectType",
	    "Subject1", "sellerNip", nip, "dateRange", "dateType", "Invoicing",
	    "from", from, "to", to);
	if (v != NULL && q->invoice_number != NULL)
		json_object_set_new(v, "invoiceNumber",
		    json_string(q->invoice_number));
	return j_dump(v);
}

/* ---- replies ---- */

void
ksef_result_set(struct ksef_result *res, enum ksef_outcome o,
    const char *fmt, ...)
{
	va_list ap;
	char *s;

	res->outcome = o;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		fatal("ksef: vasprintf");
	va_end(ap);
	free(res->reason);
	res->reason = s;
}

void
ksef_result_free(struct ksef_result *res)
{
	free(res->reason);
	free(res->details);
	free(res->reference);
	if (res->session != NULL) {
		record_session_free(res->session);
		free(res->session);
	}
	ksef_invoices_free(res->invoices, res->ninvoices);
	free(res->continuation);
	session_info_free(&res->sess);
	buf_free(&res->body);
	memset(res, 0, sizeof(*res));
}

/* A body is HTML (an outage page from a gateway), for reasons. */
static int
body_is_html(const struct http_response *r)
{
	const unsigned char *p = r->body.data;
	size_t n = r->body.len;

	if (r->content_type != NULL &&
	    strncasecmp(r->content_type, "text/html", 9) == 0)
		return 1;
	while (n > 0 && isspace(*p))
		p++, n--;
	return n > 0 && *p == '<';
}

void
ksef_reply_garbage(struct ksef_result *res, const char *what,
    const struct http_response *r, const char *err, int secret)
{
	log_warnx("ksef: %s: unusable reply (HTTP %ld, %s, %zu bytes): %s; "
	    "body: %s", what, r->status, r->content_type != NULL ?
	    log_escape(r->content_type, strlen(r->content_type), 60) :
	    "no content type", r->body.len, err, secret ? "(not shown: "
	    "may hold a token)" : log_escape(r->body.data, r->body.len, 200));
	ksef_result_set(res, KSEF_TRANSIENT, "unusable reply from KSeF "
	    "(HTTP %ld): %s", r->status, err);
	res->in_doubt = 1;
}

/* An error code of a 400, as a domain outcome. */
static enum ksef_outcome
error_outcome(int32_t code)
{
	switch (code) {
	case 21155:	/* session invoice limit */
	case 21173:	/* no such session */
	case 21180:	/* session status forbids it */
		return KSEF_SESSION_GONE;
	case 21164:	/* invoice does not exist */
	case 21175:	/* export result not found */
	case 21178:	/* UPO not found */
	case 21304:	/* auth operation not found */
		return KSEF_NOT_FOUND;
	case 21165:	/* not yet available */
		return KSEF_TRANSIENT;
	default:
		return KSEF_FATAL;
	}
}

int
ksef_reply_check(const struct http_response *r, int64_t now_ms,
    struct ksef_result *res)
{
	struct ksef_error e;
	long st = r->status;

	if (r->outcome != HTTP_OUT_OK) {
		if (r->outcome == HTTP_OUT_REFUSED) {
			ksef_result_set(res, KSEF_FATAL, "request refused: %s",
			    r->error);
			return -1;
		}
		if (r->outcome == HTTP_OUT_TOO_LARGE)
			log_warnx("ksef: reply over the size cap: %s",
			    r->error);
		ksef_result_set(res, KSEF_TRANSIENT, "%s%s%s",
		    http_outcome_name(r->outcome), *r->error ? ": " : "",
		    r->error);
		res->in_doubt = r->sent && r->outcome != HTTP_OUT_CONNECT;
		return -1;
	}
	if (st >= 200 && st <= 299)
		return 0;
	if (st == 429) {
		ksef_result_set(res, KSEF_RETRY_AFTER, "rate limited (429, "
		    "Retry-After %lld s)", (long long)(r->retry_after_s >= 0 ?
		    r->retry_after_s : RETRY_DEFAULT_S));
		res->retry_at_ms = now_ms + 1000 * (r->retry_after_s >= 0 ?
		    r->retry_after_s : RETRY_DEFAULT_S);
		return -1;
	}
	if (st >= 500 || st == 408 || st < 200 || (st >= 300 && st < 400)) {
		ksef_result_set(res, KSEF_TRANSIENT, "HTTP %ld%s", st,
		    body_is_html(r) ? " (HTML page)" : "");
		res->in_doubt = st != 408;
		return -1;
	}
	if (ksef_json_error(r->body.data, r->body.len, &e) == -1) {
		if (st == 400) {
			ksef_reply_garbage(res, "error", r, "not a KSeF error "
			    "body", 0);
			return -1;
		}
		memset(&e, 0, sizeof(e));
	}
	switch (st) {
	case 401:
		ksef_result_set(res, KSEF_AUTH_EXPIRED, "not authorized "
		    "(401)%s%s", e.description ? ": " : "",
		    e.description ? e.description : "");
		break;
	case 403:
		ksef_result_set(res, KSEF_FATAL, "forbidden (403 %s)%s%s",
		    e.reason_code ? e.reason_code : "",
		    e.description ? ": " : "",
		    e.description ? e.description : "");
		break;
	case 410:
		ksef_result_set(res, KSEF_NOT_FOUND, "gone (410)");
		break;
	case 400:
		ksef_result_set(res, error_outcome(e.code), "KSeF error %d: "
		    "%s", e.code, e.description ? e.description :
		    "(no description)");
		res->code = e.code;
		res->details = e.details;
		e.details = NULL;
		res->in_doubt = res->outcome == KSEF_TRANSIENT;
		break;
	default:
		ksef_result_set(res, KSEF_FATAL, "unexpected HTTP %ld", st);
		break;
	}
	ksef_error_free(&e);
	return -1;
}
