/*
 * test_render.c: the invoice view written as text (render_invoice_text) is
 * the text jansson gives for the same view built as a tree, member for
 * member; JSON strings are escaped as jansson escapes them; what jansson
 * refuses (bytes that are not UTF-8) still gives valid JSON.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log.h"
#include "record.h"
#include "render.h"
#include "util.h"
#include "tap.h"

/* The string literal render_json_string() writes for s. */
static char *
lit(const char *s)
{
	struct buf b;

	buf_init(&b);
	render_json_string(&b, s);
	buf_add(&b, "", 1);
	return (char *)b.data;
}

/* The string literal jansson writes for s (NULL when it refuses s). */
static char *
jlit(const char *s)
{
	json_t *j = json_string(s);
	char *t;

	if (j == NULL)
		return NULL;
	t = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
	json_decref(j);
	return t;
}

/* Append the UTF-8 encoding of code point c. */
static size_t
utf8_put(char *p, uint32_t c)
{
	if (c < 0x80) {
		p[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		p[0] = (char)(0xc0 | c >> 6);
		p[1] = (char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		p[0] = (char)(0xe0 | c >> 12);
		p[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		p[2] = (char)(0x80 | (c & 0x3f));
		return 3;
	}
	p[0] = (char)(0xf0 | c >> 18);
	p[1] = (char)(0x80 | ((c >> 12) & 0x3f));
	p[2] = (char)(0x80 | ((c >> 6) & 0x3f));
	p[3] = (char)(0x80 | (c & 0x3f));
	return 4;
}

static void
test_strings(void)
{
	static const char *const fixed[] = {
		"", "FV/2026/11/0001", "quote \" backslash \\ slash /",
		"\b\f\n\r\t\x01\x1f\x7f", "Zażółć gęślą jaźń", "€ 100,00",
		"emoji \xf0\x9f\x98\x80 and U+10FFFF \xf4\x8f\xbf\xbf",
		"U+0800 \xe0\xa0\x80 U+FFFF \xef\xbf\xbf U+10000 \xf0\x90\x80\x80",
	};
	static const struct { const char *in, *want; } bad[] = {
		{ "\xff", "\"\\uFFFD\"" },
		{ "a\xc3", "\"a\\uFFFD\"" },			/* cut short */
		{ "\xc0\xaf", "\"\\uFFFD\\uFFFD\"" },		/* overlong */
		{ "\xe0\x80\xaf", "\"\\uFFFD\\uFFFD\\uFFFD\"" },	/* overlong */
		{ "\xed\xa0\x80", "\"\\uFFFD\\uFFFD\\uFFFD\"" },	/* a surrogate */
		{ "\xf4\x90\x80\x80", "\"\\uFFFD\\uFFFD\\uFFFD\\uFFFD\"" }, /* > U+10FFFF */
		{ "x\x80y", "\"x\\uFFFDy\"" },			/* lone continuation */
		{ "\xc3\xb3\xc3", "\"\\u00F3\\uFFFD\"" },
	};
	char s[400], *a, *b;
	uint32_t c, seed = 12345;
	size_t i, k, n, good = 0;
	json_t *j;

	for (i = 0; i < nitems(fixed); i++) {
		a = lit(fixed[i]);
		b = jlit(fixed[i]);
		is_str(a, b, "string %zu as jansson writes it", i);
		free(a);
		free(b);
	}
	/* Random strings over every plane (no surrogates, no NUL). */
	for (i = 0; i < 2000; i++) {
		for (n = 0, k = 0; k < 40; k++) {
			seed = seed * 1103515245u + 12345u;
			switch (seed >> 30) {
			case 0:
				c = 1 + (seed >> 8) % 0x7f;
				break;
			case 1:
				c = 0x80 + (seed >> 8) % 0x780;
				break;
			case 2:
				c = 0x800 + (seed >> 8) % 0xf800;
				break;
			default:
				c = 0x10000 + (seed >> 4) % 0x100000;
				break;
			}
			if (c >= 0xd800 && c <= 0xdfff)
				c = 0xe000;
			n += utf8_put(s + n, c);
		}
		s[n] = '\0';
		a = lit(s);
		b = jlit(s);
		good += b != NULL && strcmp(a, b) == 0;
		free(a);
		free(b);
	}
	is_int(good, 2000, "2000 random UTF-8 strings as jansson writes them");
	for (i = 0; i < nitems(bad); i++) {
		a = lit(bad[i].in);
		is_str(a, bad[i].want, "not UTF-8 (%zu): U+FFFD for each bad byte", i);
		ok((j = json_loads(a, JSON_DECODE_ANY, NULL)) != NULL &&
		    json_is_string(j), "and it parses as a JSON string");
		json_decref(j);
		free(a);
	}
}

/* The view as it was built before render_invoice_text(): the reference. */
static void
ref_str(json_t *o, const char *name, const char *v)
{
	if (v != NULL && *v != '\0')
		json_object_set_new(o, name, json_string(v));
}

static json_t *
ref_key(const unsigned char key[INV_KEY_LEN])
{
	char hex[2 * INV_KEY_LEN + 1];

	hex_encode(key, INV_KEY_LEN, hex);
	return json_string(hex);
}

static json_t *
ref_invoice(const struct record_invoice *inv)
{
	static const unsigned char zero[INV_KEY_LEN];
	json_t *o = json_object(), *e;
	char iso[40], sha[2 * INV_SHA_LEN + 1];

	json_object_set_new(o, "id", ref_key(inv->key));
	json_object_set_new(o, "state", json_string(record_state_name(inv->state)));
	json_object_set_new(o, "seller_nip", json_string(inv->seller_nip));
	json_object_set_new(o, "form", json_string(record_form_name(inv->form)));
	json_object_set_new(o, "kind", json_string(inv->kind));
	ref_str(o, "number", inv->number);
	json_object_set_new(o, "issue_date", json_string(inv->issue_date));
	hex_encode(inv->xml_sha256, INV_SHA_LEN, sha);
	json_object_set_new(o, "sha256", json_string(sha));
	json_object_set_new(o, "size", json_integer((json_int_t)inv->xml_size));
	time_fmt_iso(inv->received_ms, iso, sizeof(iso));
	json_object_set_new(o, "received", json_string(iso));
	json_object_set_new(o, "source", json_string(record_source_name(inv->source)));
	ref_str(o, "source_name", inv->source_name);
	json_object_set_new(o, "ksef_number", inv->ksef_number ?
	    json_string(inv->ksef_number) : json_null());
	ref_str(o, "session_ref", inv->session_ref);
	ref_str(o, "invoice_ref", inv->invoice_ref);
	ref_str(o, "acquisition_date", inv->acquisition_date);
	ref_str(o, "storage_date", inv->storage_date);
	json_object_set_new(o, "upo", json_boolean(inv->upo_present));
	json_object_set_new(o, "attempts", json_integer(inv->attempts));
	json_object_set_new(o, "hold", json_boolean(inv->hold));
	if (inv->error_code != 0 || inv->error_desc != NULL) {
		e = json_object();
		json_object_set_new(e, "code", json_integer(inv->error_code));
		ref_str(e, "description", inv->error_desc);
		ref_str(e, "details", inv->error_details);
		json_object_set_new(o, "error", e);
	}
	if (memcmp(inv->supersedes, zero, INV_KEY_LEN) != 0)
		json_object_set_new(o, "supersedes", ref_key(inv->supersedes));
	if (memcmp(inv->superseded_by, zero, INV_KEY_LEN) != 0)
		json_object_set_new(o, "superseded_by", ref_key(inv->superseded_by));
	return o;
}

/* render_invoice_text() against the reference, and render_invoice_json() too. */
static void
check_invoice(const struct record_invoice *inv, const char *what)
{
	json_t *r = ref_invoice(inv), *j = render_invoice_json(inv);
	char *want = json_dumps(r, JSON_COMPACT | JSON_ENSURE_ASCII);
	char *viajson = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
	struct buf b;

	buf_init(&b);
	render_invoice_text(&b, inv);
	buf_add(&b, "", 1);
	is_str((char *)b.data, want, "%s: the text jansson gives", what);
	is_str(viajson, want, "%s: render_invoice_json() is the same view", what);
	free(want);
	free(viajson);
	buf_free(&b);
	json_decref(r);
	json_decref(j);
}

static void
test_invoices(void)
{
	struct record_invoice inv;
	struct buf b;
	json_t *j;
	size_t i;

	memset(&inv, 0, sizeof(inv));
	for (i = 0; i < INV_KEY_LEN; i++)
		inv.key[i] = (unsigned char)(i * 7 + 1);
	inv.state = INV_ST_QUEUED;
	strcpy(inv.seller_nip, "5265877635");
	inv.form = INV_FORM_FA3;
	strcpy(inv.kind, "VAT");
	strcpy(inv.issue_date, "2026-11-25");
	memset(inv.xml_sha256, 0xab, INV_SHA_LEN);
	inv.xml_size = 4871;
	inv.received_ms = 1795651200123LL;
	inv.source = INV_SRC_API;
	check_invoice(&inv, "a new invoice with no number");

	inv.number = "FV/2026/11/Zażółć \"1\"\t";
	inv.source_name = "client 7";
	inv.state = INV_ST_DONE;
	inv.attempts = 3;
	inv.upo_present = 1;
	inv.ksef_number = "5265877635-20261125-0100001AF629-AF";
	inv.session_ref = "20261125-SO-0000000000-0000000000-00";
	inv.invoice_ref = "20261125-EE-0000000000-0000000000-01";
	inv.acquisition_date = "2026-11-25T10:00:00.123+00:00";
	inv.storage_date = "2026-11-25T10:00:01+00:00";
	inv.hold = 1;
	check_invoice(&inv, "a DONE invoice with every field");

	inv.state = INV_ST_REJECTED;
	inv.ksef_number = NULL;
	inv.error_code = 450;
	inv.error_desc = "Błąd weryfikacji semantyki dokumentu faktury";
	inv.error_details = "line 12: \x01 <P_1> \xf0\x9f\x98\x80";
	memset(inv.supersedes, 0x11, INV_KEY_LEN);
	memset(inv.superseded_by, 0x22, INV_KEY_LEN);
	check_invoice(&inv, "a rejected invoice, superseded, with an error");

	inv.error_code = 0;
	inv.error_desc = "";
	inv.error_details = NULL;
	inv.number = "";
	check_invoice(&inv, "an error with only an empty description");

	/* Not UTF-8 (a spool file name in Latin-2): valid JSON all the same. */
	inv.source = INV_SRC_SPOOL;
	inv.source_name = "faktura-\xb1\xea.xml";
	buf_init(&b);
	render_invoice_text(&b, &inv);
	ok((j = json_loadb((const char *)b.data, b.len, 0, NULL)) != NULL,
	    "a name that is not UTF-8: the text still parses");
	is_str(json_string_value(json_object_get(j, "source_name")),
	    "faktura-\xef\xbf\xbd\xef\xbf\xbd.xml", "and the bad bytes are U+FFFD");
	json_decref(j);
	buf_free(&b);
}

int
main(void)
{
	log_init("test_render", 1, LOG_LVL_WARN);
	test_strings();
	test_invoices();
	return tap_done();
}
