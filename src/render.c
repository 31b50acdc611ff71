/* render.c: the JSON views of records and validation problems, shared by the API and the spool. */
#include "config.h"

#include <string.h>

#include <jansson.h>

#include "record.h"
#include "render.h"
#include "util.h"
#include "validate.h"

json_t *
render_key_json(const unsigned char key[INV_KEY_LEN])
{
	char hex[2 * INV_KEY_LEN + 1];

	hex_encode(key, INV_KEY_LEN, hex);
	return json_string(hex);
}

static int
render_key_set(const unsigned char key[INV_KEY_LEN])
{
	static const unsigned char zero[INV_KEY_LEN];

	return memcmp(key, zero, INV_KEY_LEN) != 0;
}

/* Add a string member when the value is there. */
static void
render_json_str(json_t *o, const char *name, const char *v)
{
	if (v != NULL && *v != '\0')
		json_object_set_new(o, name, json_string(v));
}

/* The public view of an invoice record. */
json_t *
render_invoice_json(const struct record_invoice *inv)
{
	json_t *o = json_object();
	char iso[40], sha[2 * INV_SHA_LEN + 1];

	json_object_set_new(o, "id", render_key_json(inv->key));
	json_object_set_new(o, "state",
	    json_string(record_state_name(inv->state)));
	json_object_set_new(o, "seller_nip", json_string(inv->seller_nip));
	json_object_set_new(o, "form", json_string(record_form_name(inv->form)));
	json_object_set_new(o, "kind", json_string(inv->kind));
	render_json_str(o, "number", inv->number);
	json_object_set_new(o, "issue_date", json_string(inv->issue_date));
	hex_encode(inv->xml_sha256, INV_SHA_LEN, sha);
	json_object_set_new(o, "sha256", json_string(sha));
	json_object_set_new(o, "size", json_integer((json_int_t)inv->xml_size));
	time_fmt_iso(inv->received_ms, iso, sizeof(iso));
	json_object_set_new(o, "received", json_string(iso));
	json_object_set_new(o, "source",
	    json_string(record_source_name(inv->source)));
	render_json_str(o, "source_name", inv->source_name);
	json_object_set_new(o, "ksef_number", inv->ksef_number ?
	    json_string(inv->ksef_number) : json_null());
	render_json_str(o, "session_ref", inv->session_ref);
	render_json_str(o, "invoice_ref", inv->invoice_ref);
	render_json_str(o, "acquisition_date", inv->acquisition_date);
	render_json_str(o, "storage_date", inv->storage_date);
	json_object_set_new(o, "upo", json_boolean(inv->upo_present));
	json_object_set_new(o, "attempts", json_integer(inv->attempts));
	json_object_set_new(o, "hold", json_boolean(inv->hold));
	if (inv->error_code != 0 || inv->error_desc != NULL) {
		json_t *e = json_object();

		json_object_set_new(e, "code", json_integer(inv->error_code));
		render_json_str(e, "description", inv->error_desc);
		render_json_str(e, "details", inv->error_details);
		json_object_set_new(o, "error", e);
	}
	if (render_key_set(inv->supersedes))
		json_object_set_new(o, "supersedes", render_key_json(inv->supersedes));
	if (render_key_set(inv->superseded_by))
		json_object_set_new(o, "superseded_by",
		    render_key_json(inv->superseded_by));
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

