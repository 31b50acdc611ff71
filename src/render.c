/* render.c: the JSON views of records and validation problems, shared by the API and the spool. */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "log.h"
#include "record.h"
#include "render.h"
#include "util.h"
#include "validate.h"

static int
render_key_set(const unsigned char key[INV_KEY_LEN])
{
	static const unsigned char zero[INV_KEY_LEN];

	return memcmp(key, zero, INV_KEY_LEN) != 0;
}

/* ---- JSON text ---- */

static const char hexdig[] = "0123456789ABCDEF";

/* "\uXXXX" for a UTF-16 unit. */
static void
render_u16(struct buf *b, unsigned int u)
{
	char seq[6] = { '\\', 'u', hexdig[(u >> 12) & 15], hexdig[(u >> 8) & 15],
	    hexdig[(u >> 4) & 15], hexdig[u & 15] };

	buf_add(b, seq, sizeof(seq));
}

/*
 * The code point of the UTF-8 sequence at p and its length, or 0 when it is
 * not valid UTF-8 (overlong, a surrogate, above U+10FFFF, cut short: the
 * terminating NUL is never a continuation byte).
 */
static size_t
render_utf8(const unsigned char *p, uint32_t *cp)
{
	size_t n, i;
	uint32_t c, lo;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2, c = p[0] & 0x1f, lo = 0x80;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3, c = p[0] & 0x0f, lo = 0x800;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4, c = p[0] & 0x07, lo = 0x10000;
	} else
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if (c < lo || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

void
render_json_string(struct buf *b, const char *s)
{
	/* The characters jansson escapes with a letter, and the letter. */
	static const unsigned char short_esc[][2] = {
		{ '"', '"' }, { '\\', '\\' }, { '\b', 'b' }, { '\f', 'f' },
		{ '\n', 'n' }, { '\r', 'r' }, { '\t', 't' },
	};
	const unsigned char *p = (const unsigned char *)s, *run;
	char esc[2] = { '\\', 0 };
	uint32_t cp;
	size_t n, i;

	buf_add(b, "\"", 1);
	for (;;) {
		for (run = p; *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\'; p++)
			;
		if (p > run)
			buf_add(b, run, (size_t)(p - run));
		if (*p == '\0')
			break;
		for (i = 0; i < nitems(short_esc) && short_esc[i][0] != *p; i++)
			;
		if (i < nitems(short_esc)) {
			esc[1] = short_esc[i][1];
			buf_add(b, esc, 2);
			p++;
			continue;
		}
		if (*p < 0x20) {
			render_u16(b, *p);
			p++;
			continue;
		}
		if ((n = render_utf8(p, &cp)) == 0) {
			render_u16(b, 0xfffd);
			p++;
			continue;
		}
		p += n;
		if (cp < 0x10000)
			render_u16(b, cp);
		else {
			cp -= 0x10000;
			render_u16(b, 0xd800 | (cp >> 10));
			render_u16(b, 0xdc00 | (cp & 0x3ff));
		}
	}
	buf_add(b, "\"", 1);
}

/* ,"name": */
static void
render_name(struct buf *b, const char *name)
{
	buf_add(b, ",\"", 2);
	buf_addstr(b, name);
	buf_add(b, "\":", 2);
}

static void
render_str(struct buf *b, const char *name, const char *v)
{
	render_name(b, name);
	render_json_string(b, v);
}

/* A string member when the value is there. */
static void
render_str_opt(struct buf *b, const char *name, const char *v)
{
	if (v != NULL && *v != '\0')
		render_str(b, name, v);
}

static void
render_key(struct buf *b, const char *name, const unsigned char key[INV_KEY_LEN])
{
	char hex[2 * INV_KEY_LEN + 1];

	hex_encode(key, INV_KEY_LEN, hex);
	render_str(b, name, hex);
}

/* The public view of an invoice record. */
void
render_invoice_text(struct buf *b, const struct record_invoice *inv)
{
	char iso[40], sha[2 * INV_SHA_LEN + 1], hex[2 * INV_KEY_LEN + 1];

	hex_encode(inv->key, INV_KEY_LEN, hex);
	buf_add(b, "{\"id\":", 6);
	render_json_string(b, hex);
	render_str(b, "state", record_state_name(inv->state));
	render_str(b, "seller_nip", inv->seller_nip);
	render_str(b, "form", record_form_name(inv->form));
	render_str(b, "kind", inv->kind);
	render_str_opt(b, "number", inv->number);
	render_str(b, "issue_date", inv->issue_date);
	hex_encode(inv->xml_sha256, INV_SHA_LEN, sha);
	render_str(b, "sha256", sha);
	buf_addf(b, ",\"size\":%llu", (unsigned long long)inv->xml_size);
	time_fmt_iso(inv->received_ms, iso, sizeof(iso));
	render_str(b, "received", iso);
	render_str(b, "source", record_source_name(inv->source));
	render_str_opt(b, "source_name", inv->source_name);
	if (inv->ksef_number != NULL)
		render_str(b, "ksef_number", inv->ksef_number);
	else
		buf_addstr(b, ",\"ksef_number\":null");
	render_str_opt(b, "session_ref", inv->session_ref);
	render_str_opt(b, "invoice_ref", inv->invoice_ref);
	render_str_opt(b, "acquisition_date", inv->acquisition_date);
	render_str_opt(b, "storage_date", inv->storage_date);
	buf_addf(b, ",\"upo\":%s,\"attempts\":%lu,\"hold\":%s",
	    inv->upo_present ? "true" : "false", (unsigned long)inv->attempts,
	    inv->hold ? "true" : "false");
	if (inv->error_code != 0 || inv->error_desc != NULL) {
		buf_addf(b, ",\"error\":{\"code\":%ld", (long)inv->error_code);
		render_str_opt(b, "description", inv->error_desc);
		render_str_opt(b, "details", inv->error_details);
		buf_add(b, "}", 1);
	}
	if (render_key_set(inv->supersedes))
		render_key(b, "supersedes", inv->supersedes);
	if (render_key_set(inv->superseded_by))
		render_key(b, "superseded_by", inv->superseded_by);
	buf_add(b, "}", 1);
}

json_t *
render_invoice_json(const struct record_invoice *inv)
{
	struct buf b;
	json_error_t je;
	json_t *o;

	buf_init(&b);
	render_invoice_text(&b, inv);
	if ((o = json_loadb((const char *)b.data, b.len, 0, &je)) == NULL)
		fatalx("render: invoice JSON does not parse: %s", je.text);
	buf_free(&b);
	return o;
}

/* Problems of one severity (or all with -1) as a JSON array. */
json_t *
render_problems_json(const struct validate_result *vr, int severity)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; i < vr->nproblems; i++) {
		const struct validate_problem *p = &vr->problems[i];
		json_t *o;

		if (severity != -1 && (int)p->severity != severity)
			continue;
		o = json_object();
		json_object_set_new(o, "severity",
		    json_string(validate_severity_name(p->severity)));
		json_object_set_new(o, "line", json_integer(p->line));
		json_object_set_new(o, "column", json_integer(p->column));
		json_object_set_new(o, "path", p->path ? json_string(p->path) :
		    json_null());
		json_object_set_new(o, "rule", json_string(p->rule));
		json_object_set_new(o, "message", json_string(p->message));
		json_array_append_new(a, o);
	}
	return a;
}

