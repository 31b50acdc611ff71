/* audit.c: the audit trail read back in order and exported as JSON lines. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit.h"
#include "log.h"
#include "record.h"
#include "store.h"
#include "util.h"

/* A JSON string of detail; invalid UTF-8 (a caller's bug) has its non-ASCII bytes as '?'. */
static json_t *
detail_json(const char *detail)
{
	json_t *j;
	char *copy, *p;

	if (detail == NULL)
		detail = "";
	if ((j = json_string(detail)) != NULL)
		return j;
	copy = xstrdup(detail);
	for (p = copy; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

void
audit_event_format(const struct record_audit *ev, struct buf *out)
{
	char hex[2 * INV_KEY_LEN + 1], when[32];
	json_t *o;
	char *s;

	hex_encode(ev->key, INV_KEY_LEN, hex);
	time_fmt_iso(ev->time_ms, when, sizeof(when));
	o = json_object();
	json_object_set_new(o, "seq", json_integer((json_int_t)ev->seq));
	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "time_ms", json_integer(ev->time_ms));
	json_object_set_new(o, "invoice", json_string(hex));
	json_object_set_new(o, "from", ev->from == INV_ST_NONE ? json_null() :
	    json_string(record_state_name(ev->from)));
	json_object_set_new(o, "to", json_string(record_state_name(ev->to)));
	json_object_set_new(o, "detail", detail_json(ev->detail));
	if ((s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
		fatalx("audit: cannot format event %llu", (unsigned long long)ev->seq);
	buf_addstr(out, s);
	buf_add(out, "\n", 1);
	free(s);
	json_decref(o);
}

struct export {
	FILE		*fp;
	struct buf	*out;
	long		 n;
	int		 error;
};

/* Format one event into the buffer, or through it to the file. */
static int
export_cb(const struct record_audit *ev, void *arg)
{
	struct export *x = arg;
	struct buf line;

	x->n++;
	if (x->out != NULL) {
		audit_event_format(ev, x->out);
		return 0;
	}
	buf_init(&line);
	audit_event_format(ev, &line);
	if (fwrite(line.data, 1, line.len, x->fp) != line.len)
		x->error = 1;
	buf_free(&line);
	return x->error;
}

/* Export from from_seq into a file or a buffer; the count, or -1. */
static long
audit_export(struct store *s, uint64_t from_seq, FILE *fp, struct buf *out)
{
	struct export x = { fp, out, 0, 0 };

	if (store_audit_foreach(s, from_seq, export_cb, &x) == -1)
		return -1;
	if (x.error || (fp != NULL && fflush(fp) == EOF)) {
		log_warn("audit: export");
		return -1;
	}
	return x.n;
}

long
audit_export_file(struct store *s, uint64_t from_seq, FILE *fp)
{
	return audit_export(s, from_seq, fp, NULL);
}

long
audit_export_buf(struct store *s, uint64_t from_seq, struct buf *out)
{
	return audit_export(s, from_seq, NULL, out);
}
