/* api.c: the intake and control API over evhttp, on a Unix socket and optional loopback TCP. */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "api.h"
#include "audit.h"
#include "intake.h"
#include "log.h"
#include "record.h"
#include "render.h"
#include "store.h"
#include "util.h"
#include "validate.h"

#define API_LIST_DEFAULT	100
#define API_LIST_MAX		1000
#define API_AUDIT_DEFAULT	1000	/* events per page */
#define API_AUDIT_MAX		10000
#define API_AUDIT_WAIT_MAX	300	/* seconds a follow request may wait */
#define API_AUDIT_TICK_MS	100	/* a waiting follow request looks this often */

struct api_req;
struct api_audit;

struct api {
	struct event_base	*base;
	struct store		*store;
	struct intake		*intake;
	struct evhttp		*unix_http;
	struct evhttp		*tcp_http;
	int			 tcp_port;
	char			*socket_path;
	unsigned char		 token_hash[SHA256_DIGEST_LENGTH];
	int			 have_token;
	size_t			 max_body;
	struct api_req		*pending;	/* answers waiting for a commit */
	struct api_ops		 ops;
	struct api_audit	*audit_waits;	/* follow requests waiting */
};

/* A request whose answer waits for a group commit. */
struct api_req {
	struct api		*api;
	struct evhttp_request	*req;		/* NULL once the client went away */
	struct api_req		*next, *prev;
};

static int api_id(struct evhttp_request *, const char *, unsigned char [INV_KEY_LEN]);
static void api_reply_text(struct evhttp_request *, int, const char *,
    const void *, size_t);

/* Send a JSON answer; takes the reference to `body`. */
static void
api_reply_json(struct evhttp_request *req, int code, const char *reason,
    json_t *body)
{
	char *s;

	s = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
	if (s == NULL)
		fatalx("api: cannot encode JSON");
	json_decref(body);
	api_reply_text(req, code, reason, s, strlen(s));
	free(s);
}

/* Send JSON text (one line; the newline is added). */
static void
api_reply_text(struct evhttp_request *req, int code, const char *reason,
    const void *text, size_t len)
{
	struct evbuffer *out = evbuffer_new();

	if (out == NULL)
		fatalx("api: out of memory");
	evbuffer_add(out, text, len);
	evbuffer_add(out, "\n", 1);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/json");
	evhttp_send_reply(req, code, reason, out);
	evbuffer_free(out);
}

/* 200 with the view of one invoice, written as text (render_invoice_text). */
static void
api_reply_invoice(struct evhttp_request *req, const struct record_invoice *inv)
{
	struct buf b;

	buf_init(&b);
	render_invoice_text(&b, inv);
	api_reply_text(req, 200, "OK", b.data, b.len);
	buf_free(&b);
}

/* A JSON error answer: {"error": code-word, "message": text}. */
static void
api_reply_error(struct evhttp_request *req, int code, const char *reason,
    const char *word, const char *message)
{
	api_reply_json(req, code, reason, json_pack("{s:s, s:s}", "error", word,
	    "message", message));
}

static void
api_set_location(struct evhttp_request *req, const struct record_invoice *inv)
{
	char hex[2 * INV_KEY_LEN + 1], loc[2 * INV_KEY_LEN + 32];

	hex_encode(inv->key, INV_KEY_LEN, hex);
	snprintf(loc, sizeof(loc), "/v1/invoices/%s", hex);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Location",
	    loc);
}

static void
api_pending_unlink(struct api_req *ar)
{
	struct api *api = ar->api;

	if (ar->prev)
		ar->prev->next = ar->next;
	else if (api != NULL)
		api->pending = ar->next;
	if (ar->next)
		ar->next->prev = ar->prev;
	ar->next = ar->prev = NULL;
}

/* The client's connection closed before its answer was ready. */
static void
api_conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct api_req *ar = arg;

	ar->req = NULL;
}

/* The outcome of a POST /v1/invoices: render and send it. */
static void
api_intake_cb(const struct intake_outcome *o, void *arg)
{
	struct api_req *ar = arg;
	struct evhttp_request *req = ar->req;
	const char *reason, *word = NULL, *message = NULL;
	json_t *body;
	char msg[300], *text;
	struct buf b;
	int code;

	if (ar->api != NULL)
		api_pending_unlink(ar);
	if (req == NULL) {
		free(ar);
		return;
	}
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL,
	    NULL);
	free(ar);

	switch (o->status) {
	case INTAKE_REFUSED:
		body = json_object();
		json_object_set_new(body, "error", json_string("invalid"));
		snprintf(msg, sizeof(msg), "invoice refused: %zu error%s",
		    o->vr->nerrors, o->vr->nerrors == 1 ? "" : "s");
		json_object_set_new(body, "message", json_string(msg));
		json_object_set_new(body, "problems", render_problems_json(o->vr, -1));
		api_reply_json(req, 422, "Unprocessable Entity", body);
		return;
	case INTAKE_UNAVAILABLE:
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Retry-After", "1");
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the invoice could not be stored durably; nothing was "
		    "stored, send it again");
		return;
	default:
		break;
	}
	/*
	 * Written as text, not built with jansson and dumped: this answer
	 * goes to every invoice taken, and the tree and json_dumps() cost
	 * 2.5% of ksefd's CPU in the pipeline benchmark.
	 */
	buf_init(&b);
	buf_addstr(&b, "{\"result\":");
	render_json_string(&b, intake_status_name(o->status));
	buf_addstr(&b, ",\"invoice\":");
	render_invoice_text(&b, o->inv);
	buf_addstr(&b, ",\"warnings\":");
	body = render_problems_json(o->vr, VALIDATE_WARNING);
	if (json_array_size(body) == 0)
		buf_addstr(&b, "[]");
	else if ((text = json_dumps(body, JSON_COMPACT |
	    JSON_ENSURE_ASCII)) != NULL) {
		buf_addstr(&b, text);
		free(text);
	} else
		fatalx("api: cannot encode JSON");
	json_decref(body);
	api_set_location(req, o->inv);
	switch (o->status) {
	case INTAKE_CREATED:
		code = 201, reason = "Created";
		if (o->corrected)
			message = "stored as the correction of a rejected "
			    "invoice";
		break;
	case INTAKE_EXISTS:
		code = 200, reason = "OK";
		message = "the same invoice was already received";
		break;
	default:
		code = 409, reason = "Conflict";
		snprintf(msg, sizeof(msg), "an invoice with seller NIP %s, type "
		    "%s and this number already exists (state %s) with other "
		    "content; KSeF refuses duplicates: an accepted invoice is "
		    "changed only by a correcting invoice with its own number",
		    o->inv->seller_nip, o->inv->kind,
		    record_state_name(o->inv->state));
		word = "conflict", message = msg;
		break;
	}
	if (word != NULL) {
		buf_addstr(&b, ",\"error\":");
		render_json_string(&b, word);
	}
	if (message != NULL) {
		buf_addstr(&b, ",\"message\":");
		render_json_string(&b, message);
	}
	buf_add(&b, "}", 1);
	api_reply_text(req, code, reason, b.data, b.len);
	buf_free(&b);
}

/* Is this XML, by Content-Type?  A missing type is taken as XML. */
static int
api_content_type_xml(struct evhttp_request *req)
{
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Content-Type");
	size_t n;

	if (ct == NULL)
		return 1;
	n = strcspn(ct, "; \t");
	return (n == 15 && strncasecmp(ct, "application/xml", 15) == 0) ||
	    (n == 8 && strncasecmp(ct, "text/xml", 8) == 0) ||
	    (n == 24 && strncasecmp(ct, "application/octet-stream", 24) == 0);
}

static void
api_invoice_post(struct api *api, struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	struct api_req *ar;
	unsigned char *body;
	char msg[160];

	if (!api_content_type_xml(req)) {
		api_reply_error(req, 415, "Unsupported Media Type",
		    "content_type", "send the invoice XML as application/xml");
		return;
	}
	if (len > api->max_body) {
		snprintf(msg, sizeof(msg), "body of %zu bytes is over the limit "
		    "of %zu bytes (api.max_body)", len, api->max_body);
		api_reply_error(req, 413, "Payload Too Large", "too_large", msg);
		return;
	}
	body = evbuffer_pullup(in, -1);
	ar = xcalloc(1, sizeof(*ar));
	ar->api = api;
	ar->req = req;
	ar->next = api->pending;
	if (api->pending)
		api->pending->prev = ar;
	api->pending = ar;
	evhttp_connection_set_closecb(evhttp_request_get_connection(req),
	    api_conn_close_cb, ar);
	intake_submit(api->intake, body ? body : (unsigned char *)"", len,
	    INV_SRC_API, NULL, api_intake_cb, ar);
}

static void
api_invoice_get(struct api *api, struct evhttp_request *req, const char *id)
{
	unsigned char key[INV_KEY_LEN];
	struct record_invoice inv;
	int r;

	if (api_id(req, id, key) == -1)
		return;
	r = store_invoice_get(api->store, key, &inv);
	if (r == 1) {
		api_reply_error(req, 404, "Not Found", "not_found",
		    "no invoice with this id");
		return;
	}
	if (r == -1) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the store could not be read");
		return;
	}
	api_reply_invoice(req, &inv);
	record_invoice_free(&inv);
}

/* Decode an id or answer 400; 0 on success. */
static int
api_id(struct evhttp_request *req, const char *id, unsigned char key[INV_KEY_LEN])
{
	if (hex_decode(id, key, INV_KEY_LEN) == 0)
		return 0;
	api_reply_error(req, 400, "Bad Request", "bad_id",
	    "an invoice id is 64 hex digits");
	return -1;
}

/* GET /v1/invoices/{id}/upo: the UPO XML as KSeF issued it. */
static void
api_invoice_upo(struct api *api, struct evhttp_request *req, const char *id)
{
	unsigned char key[INV_KEY_LEN], *upo;
	struct record_invoice inv;
	struct evbuffer *out;
	char msg[200];
	size_t len;
	int r;

	if (api_id(req, id, key) == -1)
		return;
	if ((r = store_invoice_get(api->store, key, &inv)) != 0) {
		if (r == 1)
			api_reply_error(req, 404, "Not Found", "not_found",
			    "no invoice with this id");
		else
			api_reply_error(req, 503, "Service Unavailable",
			    "unavailable", "the store could not be read");
		return;
	}
	r = store_upo_get(api->store, key, &upo, &len);
	if (r != 0) {
		snprintf(msg, sizeof(msg), "no UPO yet: the invoice is %s",
		    record_state_name(inv.state));
		record_invoice_free(&inv);
		api_reply_error(req, r == 1 ? 404 : 503, r == 1 ? "Not Found" :
		    "Service Unavailable", r == 1 ? "no_upo" : "unavailable", msg);
		return;
	}
	record_invoice_free(&inv);
	if ((out = evbuffer_new()) == NULL)
		fatalx("api: out of memory");
	evbuffer_add(out, upo, len);
	free(upo);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/xml");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

/* POST /v1/invoices/{id}/retry: a FAILED invoice goes back to the queue. */
static void
api_invoice_retry(struct api *api, struct evhttp_request *req, const char *id)
{
	unsigned char key[INV_KEY_LEN];
	struct record_invoice inv;
	char msg[200];
	int r;

	if (api_id(req, id, key) == -1)
		return;
	if ((r = store_invoice_get(api->store, key, &inv)) != 0) {
		api_reply_error(req, r == 1 ? 404 : 503, r == 1 ? "Not Found" :
		    "Service Unavailable", r == 1 ? "not_found" : "unavailable",
		    r == 1 ? "no invoice with this id" :
		    "the store could not be read");
		return;
	}
	if (inv.state != INV_ST_FAILED || api->ops.retry == NULL ||
	    api->ops.retry(key, api->ops.arg) == -1) {
		snprintf(msg, sizeof(msg), "only a FAILED invoice can be retried; "
		    "this one is %s%s", record_state_name(inv.state),
		    inv.state == INV_ST_REJECTED ? " (send a corrected invoice)" :
		    "");
		record_invoice_free(&inv);
		api_reply_error(req, 409, "Conflict", "not_failed", msg);
		return;
	}
	record_invoice_free(&inv);
	if (store_invoice_get(api->store, key, &inv) != 0) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the store could not be read");
		return;
	}
	api_reply_invoice(req, &inv);
	record_invoice_free(&inv);
}

struct api_list {
	int		 state;		/* -1: any */
	const char	*nip;		/* NULL: any */
	unsigned char	 after[INV_KEY_LEN];
	int		 have_after;
	size_t		 limit;
	size_t		 nitems;
	struct buf	 items;		/* the answer, written as the list is read */
	int		 more;
	unsigned char	 last[INV_KEY_LEN];
};

static int
api_list_cb(const struct record_invoice *inv, void *arg)
{
	struct api_list *l = arg;

	if (l->state != -1 && (int)inv->state != l->state)
		return 0;
	if (l->nip != NULL && strcmp(inv->seller_nip, l->nip) != 0)
		return 0;
	if (l->nitems == l->limit) {
		l->more = 1;
		return 1;
	}
	if (l->nitems++ > 0)
		buf_add(&l->items, ",", 1);
	render_invoice_text(&l->items, inv);
	memcpy(l->last, inv->key, INV_KEY_LEN);
	return 0;
}

static void
api_invoice_list(struct api *api, struct evhttp_request *req)
{
	struct evkeyvalq q;
	struct api_list l;
	const char *v;
	enum inv_state st;
	char *end, hex[2 * INV_KEY_LEN + 1];
	long n;
	int rc;

	memset(&l, 0, sizeof(l));
	l.state = -1;
	l.limit = API_LIST_DEFAULT;
	if (evhttp_parse_query_str(evhttp_uri_get_query(
	    evhttp_request_get_evhttp_uri(req)) ?
	    evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req)) : "",
	    &q) == -1) {
		api_reply_error(req, 400, "Bad Request", "bad_query",
		    "the query string does not parse");
		return;
	}
	if ((v = evhttp_find_header(&q, "state")) != NULL && *v != '\0') {
		if (record_state_parse(v, &st) == -1) {
			api_reply_error(req, 400, "Bad Request", "bad_state",
			    "state must be one of QUEUED, SENDING, SUBMITTED, "
			    "ACCEPTED, DONE, REJECTED, FAILED");
			goto out;
		}
		l.state = st;
	}
	if ((v = evhttp_find_header(&q, "nip")) != NULL && *v != '\0') {
		if (!nip_valid(v)) {
			api_reply_error(req, 400, "Bad Request", "bad_nip",
			    "nip must be 10 digits with a valid check digit");
			goto out;
		}
		l.nip = v;
	}
	if ((v = evhttp_find_header(&q, "limit")) != NULL && *v != '\0') {
		n = strtol(v, &end, 10);
		if (*end != '\0' || n < 1 || n > API_LIST_MAX) {
			api_reply_error(req, 400, "Bad Request", "bad_limit",
			    "limit must be a number from 1 to 1000");
			goto out;
		}
		l.limit = (size_t)n;
	}
	if ((v = evhttp_find_header(&q, "after")) != NULL && *v != '\0') {
		if (hex_decode(v, l.after, INV_KEY_LEN) == -1) {
			api_reply_error(req, 400, "Bad Request", "bad_after",
			    "after must be an invoice id (64 hex digits)");
			goto out;
		}
		l.have_after = 1;
	}
	buf_init(&l.items);
	buf_addstr(&l.items, "{\"invoices\":[");
	/* In the order the invoices arrived; after: the one after that invoice. */
	rc = store_invoice_foreach_after(api->store, l.have_after ? l.after : NULL,
	    api_list_cb, &l);
	if (rc == 1) {
		api_reply_error(req, 400, "Bad Request", "bad_after",
		    "after: there is no invoice with that id");
		goto out;
	}
	if (rc == -1) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the store could not be read");
		goto out;
	}
	buf_addstr(&l.items, "],\"next\":");
	if (l.more) {
		hex_encode(l.last, INV_KEY_LEN, hex);
		render_json_string(&l.items, hex);
	} else
		buf_addstr(&l.items, "null");
	buf_add(&l.items, "}", 1);
	api_reply_text(req, 200, "OK", l.items.data, l.items.len);
out:
	buf_free(&l.items);
	evhttp_clear_headers(&q);
}

/* --- hold/release, reload, audit (ops) ---------------------------------- */

/* POST /v1/invoices/{id}/hold and /release: through ops.hold. */
static void
api_invoice_hold(struct api *api, struct evhttp_request *req, const char *id,
    int on)
{
	unsigned char key[INV_KEY_LEN];
	struct record_invoice inv;
	int r;

	if (api_id(req, id, key) == -1)
		return;
	if (api->ops.hold == NULL) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the pipeline is not running");
		return;
	}
	r = api->ops.hold(key, on, api->ops.arg);
	if (r == 1) {
		api_reply_error(req, 404, "Not Found", "not_found",
		    "no invoice with this id");
		return;
	}
	if (r == -1 || store_invoice_get(api->store, key, &inv) != 0) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the store could not be read or written");
		return;
	}
	if (r == 2) {
		char msg[200];

		snprintf(msg, sizeof(msg), "the invoice is %s: a finished "
		    "invoice cannot be %s", record_state_name(inv.state),
		    on ? "held" : "released");
		record_invoice_free(&inv);
		api_reply_error(req, 409, "Conflict", "finished", msg);
		return;
	}
	api_reply_invoice(req, &inv);
	record_invoice_free(&inv);
}

/* POST /v1/reload: like SIGHUP, answered with the parse result. */
static void
api_reload(struct api *api, struct evhttp_request *req)
{
	json_t *res;

	if (api->ops.reload == NULL) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "reload is not available");
		return;
	}
	res = api->ops.reload(api->ops.arg);
	if (json_is_true(json_object_get(res, "ok")))
		api_reply_json(req, 200, "OK", res);
	else
		api_reply_json(req, 422, "Unprocessable Entity", res);
}

/* A GET /v1/audit: its filter, and while it waits for events, its timer. */
struct api_audit {
	struct api		*api;
	struct evhttp_request	*req;
	struct event		*ev;
	uint64_t		 since;		/* first seq to look at */
	int64_t			 since_ms;	/* events at or after; 0: any */
	unsigned char		 key[INV_KEY_LEN];
	int			 have_key;
	size_t			 limit;
	int64_t			 deadline;	/* monotonic ms; waiting until */
	/* one scan */
	struct buf		 out;
	size_t			 n;
	uint64_t		 next;		/* seq after the last one looked at */
	int			 more;
	struct api_audit	*next_w, *prev_w;	/* api->audit_waits */
};

static int
api_audit_cb(const struct record_audit *ev, void *arg)
{
	struct api_audit *a = arg;

	if (a->n == a->limit) {
		a->more = 1;
		return 1;
	}
	a->next = ev->seq + 1;
	if (ev->time_ms < a->since_ms || (a->have_key &&
	    memcmp(ev->key, a->key, INV_KEY_LEN) != 0))
		return 0;
	audit_event_format(ev, &a->out);
	a->n++;
	return 0;
}

/* Scan from a->since; -1 when the store could not be read. */
static int
api_audit_scan(struct api_audit *a)
{
	a->n = 0;
	a->more = 0;
	a->next = a->since;
	buf_free(&a->out);
	buf_init(&a->out);
	if (store_audit_foreach(a->api->store, a->since, api_audit_cb, a) == -1)
		return -1;
	if (!a->more && a->next < store_audit_next_seq(a->api->store))
		a->next = store_audit_next_seq(a->api->store);
	return 0;
}

/* Send the events found (JSON lines) with the paging headers; frees a. */
static void
api_audit_reply(struct api_audit *a)
{
	struct evhttp_request *req = a->req;
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evbuffer_new();
	char num[32];

	if (out == NULL)
		fatalx("api: out of memory");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)a->next);
	evhttp_add_header(h, "Content-Type", "application/x-ndjson");
	evhttp_add_header(h, "X-Audit-Next", num);
	evhttp_add_header(h, "X-Audit-More", a->more ? "1" : "0");
	evbuffer_add(out, a->out.data ? (const char *)a->out.data : "",
	    a->out.len);
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
	buf_free(&a->out);
	free(a);
}

static void
api_audit_unlink(struct api_audit *a)
{
	if (a->prev_w)
		a->prev_w->next_w = a->next_w;
	else
		a->api->audit_waits = a->next_w;
	if (a->next_w)
		a->next_w->prev_w = a->prev_w;
	event_free(a->ev);
}

/* A waiting client went away. */
static void
api_audit_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct api_audit *a = arg;

	api_audit_unlink(a);
	buf_free(&a->out);
	free(a);
}

/* Follow mode: look for new events; answer when there are some or time is up. */
static void
api_audit_tick(evutil_socket_t fd, short what, void *arg)
{
	struct api_audit *a = arg;
	struct timeval tv = { 0, API_AUDIT_TICK_MS * 1000 };
	int r = 0;

	if (store_audit_next_seq(a->api->store) > a->since &&
	    (r = api_audit_scan(a)) == 0 && a->n == 0)
		a->since = a->next;	/* only others' events: skip them */
	if (r == -1 || a->n > 0 || time_mono_ms() >= a->deadline) {
		api_audit_unlink(a);
		evhttp_connection_set_closecb(evhttp_request_get_connection(
		    a->req), NULL, NULL);
		if (r == -1) {
			api_reply_error(a->req, 503, "Service Unavailable",
			    "unavailable", "the store could not be read");
			buf_free(&a->out);
			free(a);
		} else
			api_audit_reply(a);
		return;
	}
	evtimer_add(a->ev, &tv);
}

/* Parse "since": a sequence number, or a time (YYYY-MM-DD[THH:MM:SS[.mmm]Z]). */
static int
api_audit_since(const char *v, struct api_audit *a)
{
	struct tm tm;
	const char *p;
	char *end;
	unsigned long long n;
	int ms = 0;

	if (*v >= '0' && *v <= '9' && strspn(v, "0123456789") == strlen(v)) {
		errno = 0;
		n = strtoull(v, &end, 10);
		if (errno != 0)
			return -1;
		a->since = n;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	if ((p = strptime(v, "%Y-%m-%d", &tm)) == NULL)
		return -1;
	if (*p == 'T') {
		if ((p = strptime(p + 1, "%H:%M:%S", &tm)) == NULL)
			return -1;
		if (*p == '.') {
			if (strspn(p + 1, "0123456789") != 3)
				return -1;
			ms = atoi(p + 1);
			p += 4;
		}
		if (*p++ != 'Z')
			return -1;
	}
	if (*p != '\0')
		return -1;
	a->since_ms = (int64_t)timegm(&tm) * 1000 + ms;
	if (a->since_ms <= 0)
		return -1;
	return 0;
}

/*
 * GET /v1/audit?since=SEQ|TIME&id=ID&limit=N&wait=SECS: events as JSON
 * lines; X-Audit-Next is the "since" of the next page, X-Audit-More says
 * whether the page was cut by the limit.  With wait and nothing to send the
 * answer waits up to SECS for new events (follow mode).
 */
static void
api_audit(struct api *api, struct evhttp_request *req)
{
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	struct api_audit *a;
	struct evkeyvalq q;
	struct timeval tv = { 0, API_AUDIT_TICK_MS * 1000 };
	const char *v;
	char *end;
	long n, wait = 0;

	if (evhttp_parse_query_str(query ? query : "", &q) == -1) {
		api_reply_error(req, 400, "Bad Request", "bad_query",
		    "the query string does not parse");
		return;
	}
	a = xcalloc(1, sizeof(*a));
	a->api = api;
	a->req = req;
	a->limit = API_AUDIT_DEFAULT;
	buf_init(&a->out);
	if ((v = evhttp_find_header(&q, "since")) != NULL && *v != '\0' &&
	    api_audit_since(v, a) == -1) {
		api_reply_error(req, 400, "Bad Request", "bad_since",
		    "since must be a sequence number or a UTC time "
		    "YYYY-MM-DD[THH:MM:SS[.mmm]Z]");
		goto fail;
	}
	if ((v = evhttp_find_header(&q, "id")) != NULL && *v != '\0') {
		if (hex_decode(v, a->key, INV_KEY_LEN) == -1) {
			api_reply_error(req, 400, "Bad Request", "bad_id",
			    "id must be an invoice id (64 hex digits)");
			goto fail;
		}
		a->have_key = 1;
	}
	if ((v = evhttp_find_header(&q, "limit")) != NULL && *v != '\0') {
		n = strtol(v, &end, 10);
		if (*end != '\0' || n < 1 || n > API_AUDIT_MAX) {
			api_reply_error(req, 400, "Bad Request", "bad_limit",
			    "limit must be a number from 1 to 10000");
			goto fail;
		}
		a->limit = (size_t)n;
	}
	if ((v = evhttp_find_header(&q, "wait")) != NULL && *v != '\0') {
		wait = strtol(v, &end, 10);
		if (*end != '\0' || wait < 0 || wait > API_AUDIT_WAIT_MAX) {
			api_reply_error(req, 400, "Bad Request", "bad_wait",
			    "wait must be a number of seconds from 0 to 300");
			goto fail;
		}
	}
	evhttp_clear_headers(&q);
	if (api_audit_scan(a) == -1) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the store could not be read");
		buf_free(&a->out);
		free(a);
		return;
	}
	if (a->n > 0 || a->more || wait == 0) {
		api_audit_reply(a);
		return;
	}
	/* Follow: nothing yet; wait for new events. */
	a->since = a->next;
	a->deadline = time_mono_ms() + wait * 1000;
	a->ev = evtimer_new(api->base, api_audit_tick, a);
	a->next_w = api->audit_waits;
	if (api->audit_waits)
		api->audit_waits->prev_w = a;
	api->audit_waits = a;
	evhttp_connection_set_closecb(evhttp_request_get_connection(req),
	    api_audit_close_cb, a);
	evtimer_add(a->ev, &tv);
	return;
fail:
	evhttp_clear_headers(&q);
	buf_free(&a->out);
	free(a);
}

/* --- end of hold/release, reload, audit --- */

/* Does the request carry the right bearer token?  Constant time. */
static int
api_authorized(struct api *api, struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization");
	unsigned char got[SHA256_DIGEST_LENGTH];

	if (!api->have_token || h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return 0;
	h += 7;
	SHA256((const unsigned char *)h, strlen(h), got);
	return CRYPTO_memcmp(got, api->token_hash, sizeof(got)) == 0;
}

/* GET /metrics (text/plain; version=0.0.4) and GET /v1/status (JSON). */
static void
api_observe(struct api *api, struct evhttp_request *req,
    enum evhttp_cmd_type cmd, const char *path)
{
	struct evbuffer *out;
	struct buf b;
	int metrics = strcmp(path, "/metrics") == 0;

	if (cmd != EVHTTP_REQ_GET) {
		api_reply_error(req, 405, "Method Not Allowed", "method",
		    "only GET is allowed here");
		return;
	}
	if ((metrics && api->ops.metrics == NULL) ||
	    (!metrics && api->ops.status == NULL)) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "the pipeline is not running");
		return;
	}
	if (!metrics) {
		api_reply_json(req, 200, "OK", api->ops.status(api->ops.arg));
		return;
	}
	if ((out = evbuffer_new()) == NULL)
		fatalx("api: out of memory");
	buf_init(&b);
	api->ops.metrics(&b, api->ops.arg);
	evbuffer_add(out, b.data, b.len);
	buf_free(&b);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

/*
 * POST /v1/reconcile[?since=MS]: start a run (202), or 409 while one runs.
 * GET /v1/reconcile/last: the last run's summary, 404 before the first.
 */
static void
api_reconcile(struct api *api, struct evhttp_request *req, int last)
{
	struct evkeyvalq q;
	const char *v, *query;
	long long since = 0;
	char *end;
	json_t *res;

	if (api->ops.reconcile == NULL || api->ops.reconcile_last == NULL) {
		api_reply_error(req, 503, "Service Unavailable", "unavailable",
		    "reconciliation is not running");
		return;
	}
	if (last) {
		if ((res = api->ops.reconcile_last(api->ops.arg)) == NULL)
			api_reply_error(req, 404, "Not Found", "not_found",
			    "no reconciliation has finished yet");
		else
			api_reply_json(req, 200, "OK", res);
		return;
	}
	query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	if (evhttp_parse_query_str(query ? query : "", &q) == -1) {
		api_reply_error(req, 400, "Bad Request", "bad_query",
		    "the query string does not parse");
		return;
	}
	if ((v = evhttp_find_header(&q, "since")) != NULL) {
		since = strtoll(v, &end, 10);
		if (*v == '\0' || *end != '\0' || since <= 0) {
			evhttp_clear_headers(&q);
			api_reply_error(req, 400, "Bad Request", "bad_since",
			    "since: milliseconds since the epoch, above 0");
			return;
		}
	}
	evhttp_clear_headers(&q);
	res = api->ops.reconcile((int64_t)since, api->ops.arg);
	if (json_is_true(json_object_get(res, "started")))
		api_reply_json(req, 202, "Accepted", res);
	else
		api_reply_json(req, 409, "Conflict", res);
}

/* Route one request. */
static void
api_dispatch(struct api *api, struct evhttp_request *req)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	const char *id;

	if (path == NULL)
		path = "/";
	log_trace(TRACE_API, "api: %s %s", cmd == EVHTTP_REQ_GET ? "GET" :
	    cmd == EVHTTP_REQ_POST ? "POST" : "other",
	    log_escape(path, strlen(path), 200));
	if (strcmp(path, "/healthz") == 0) {
		if (cmd != EVHTTP_REQ_GET)
			goto method;
		api_reply_json(req, 200, "OK", json_pack("{s:s, s:s}", "status",
		    "ok", "version", PACKAGE_VERSION));
		return;
	}
	if (strcmp(path, "/v1/reconcile") == 0 ||
	    strcmp(path, "/v1/reconcile/last") == 0) {
		int last = path[13] != '\0';

		if (cmd != (last ? EVHTTP_REQ_GET : EVHTTP_REQ_POST))
			goto method;
		api_reconcile(api, req, last);
		return;
	}
	if (strcmp(path, "/v1/stats") == 0) {
		if (cmd != EVHTTP_REQ_GET)
			goto method;
		if (api->ops.stats == NULL) {
			api_reply_error(req, 503, "Service Unavailable",
			    "unavailable", "the pipeline is not running");
			return;
		}
		api_reply_json(req, 200, "OK", api->ops.stats(api->ops.arg));
		return;
	}
	if (strcmp(path, "/v1/reload") == 0) {
		if (cmd != EVHTTP_REQ_POST)
			goto method;
		api_reload(api, req);
		return;
	}
	if (strcmp(path, "/v1/audit") == 0) {
		if (cmd != EVHTTP_REQ_GET)
			goto method;
		api_audit(api, req);
		return;
	}
	if (strcmp(path, "/metrics") == 0 || strcmp(path, "/v1/status") == 0) {
		api_observe(api, req, cmd, path);
		return;
	}
	if (strcmp(path, "/v1/invoices") == 0) {
		if (cmd == EVHTTP_REQ_POST)
			api_invoice_post(api, req);
		else if (cmd == EVHTTP_REQ_GET)
			api_invoice_list(api, req);
		else
			goto method;
		return;
	}
	if (strncmp(path, "/v1/invoices/", 13) == 0) {
		const char *slash = strchr(path + 13, '/');
		char idbuf[2 * INV_KEY_LEN + 1];
		size_t n;

		id = path + 13;
		if (slash == NULL) {
			if (cmd != EVHTTP_REQ_GET)
				goto method;
			api_invoice_get(api, req, id);
			return;
		}
		n = (size_t)(slash - id);
		if (n >= sizeof(idbuf))
			n = sizeof(idbuf) - 1;	/* too long: refused as a bad id */
		memcpy(idbuf, id, n);
		idbuf[n] = '\0';
		if (strcmp(slash, "/upo") == 0) {
			if (cmd != EVHTTP_REQ_GET)
				goto method;
			api_invoice_upo(api, req, idbuf);
			return;
		}
		if (strcmp(slash, "/retry") == 0) {
			if (cmd != EVHTTP_REQ_POST)
				goto method;
			api_invoice_retry(api, req, idbuf);
			return;
		}
		if (strcmp(slash, "/hold") == 0 || strcmp(slash, "/release") == 0) {
			if (cmd != EVHTTP_REQ_POST)
				goto method;
			api_invoice_hold(api, req, idbuf, slash[1] == 'h');
			return;
		}
	}
	api_reply_error(req, 404, "Not Found", "not_found", "no such endpoint");
	return;
method:
	api_reply_error(req, 405, "Method Not Allowed", "method",
	    "method not allowed for this endpoint");
}

static void
api_unix_cb(struct evhttp_request *req, void *arg)
{
	api_dispatch(arg, req);
}

static void
api_tcp_cb(struct evhttp_request *req, void *arg)
{
	struct api *api = arg;

	if (!api_authorized(api, req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "WWW-Authenticate", "Bearer");
		api_reply_error(req, 401, "Unauthorized", "unauthorized",
		    "a valid Authorization: Bearer token is required");
		return;
	}
	api_dispatch(api, req);
}

/*
 * Bind the Unix socket: refuse when a live server answers on it, remove a
 * stale one, create it with `mode`.  The fd, or -1 with err filled.
 */
static int
api_unix_listen(const char *path, int mode, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	mode_t old;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "api.socket %s: path too long", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		snprintf(err, errlen, "api.socket %s: another process is "
		    "listening on it (is ksefd already running?)", path);
		close(fd);
		return -1;
	}
	close(fd);
	if (unlink(path) == -1 && errno != ENOENT) {
		snprintf(err, errlen, "api.socket %s: cannot remove stale "
		    "socket: %s", path, strerror(errno));
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
	    0)) == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* Created without group/other access; widened to `mode` below. */
	old = umask(0077);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		snprintf(err, errlen, "api.socket %s: bind: %s", path,
		    strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if (chmod(path, (mode_t)mode) == -1 || listen(fd, 512) == -1) {
		snprintf(err, errlen, "api.socket %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

/* Split "127.0.0.1:8080" or "[::1]:8080"; -1 on a malformed address. */
static int
api_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	char *end;
	long p;
	size_t n;

	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return -1;
		n = (size_t)(rb - s - 1);
		if (n >= hostlen)
			return -1;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		colon = rb + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return -1;
		n = (size_t)(colon - s);
		if (n >= hostlen)
			return -1;
		memcpy(host, s, n);
		host[n] = '\0';
	}
	p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || colon[1] == '\0' || p < 0 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}

void
api_update(struct api *api, const char *token, size_t max_body)
{
	api->have_token = token != NULL;
	if (token != NULL)
		SHA256((const unsigned char *)token, strlen(token),
		    api->token_hash);
	api->max_body = max_body;
	/*
	 * evhttp's own cap is four times higher: a body up to that is read
	 * whole and refused by us with a JSON 413 on a clean connection; past
	 * it evhttp closes at once, and the client may see only a reset.
	 */
	if (api->unix_http)
		evhttp_set_max_body_size(api->unix_http,
		    (ev_ssize_t)max_body * 4 + 65536);
	if (api->tcp_http)
		evhttp_set_max_body_size(api->tcp_http,
		    (ev_ssize_t)max_body * 4 + 65536);
}

/* A new evhttp with our defaults. */
static struct evhttp *
api_http_new(struct api *api, void (*cb)(struct evhttp_request *, void *))
{
	struct evhttp *h = evhttp_new(api->base);

	if (h == NULL)
		fatalx("api: evhttp_new failed");
	evhttp_set_allowed_methods(h, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(h, 60);
	evhttp_set_max_headers_size(h, 64 * 1024);
	evhttp_set_gencb(h, cb, api);
	return h;
}

struct api *
api_start(struct event_base *base, const struct api_params *p,
    struct store *store, struct intake *intake, char *err, size_t errlen)
{
	struct api *api = xcalloc(1, sizeof(*api));
	struct evhttp_bound_socket *bs;
	char host[256];
	int fd, port;

	api->base = base;
	api->store = store;
	api->intake = intake;
	if ((fd = api_unix_listen(p->socket_path, p->socket_mode, err,
	    errlen)) == -1) {
		free(api);
		return NULL;
	}
	api->socket_path = xstrdup(p->socket_path);
	api->unix_http = api_http_new(api, api_unix_cb);
	if (evhttp_accept_socket(api->unix_http, fd) == -1) {
		snprintf(err, errlen, "api.socket %s: cannot accept", p->socket_path);
		close(fd);
		api_free(api);
		return NULL;
	}
	if (p->listen != NULL) {
		if (p->token == NULL) {
			snprintf(err, errlen, "api.listen needs api.token_file");
			api_free(api);
			return NULL;
		}
		if (api_parse_listen(p->listen, host, sizeof(host), &port) == -1) {
			snprintf(err, errlen, "api.listen %s: not ADDRESS:PORT",
			    p->listen);
			api_free(api);
			return NULL;
		}
		api->tcp_http = api_http_new(api, api_tcp_cb);
		bs = evhttp_bind_socket_with_handle(api->tcp_http, host,
		    (ev_uint16_t)port);
		if (bs == NULL) {
			snprintf(err, errlen, "api.listen %s: cannot bind: %s",
			    p->listen, strerror(errno));
			api_free(api);
			return NULL;
		}
		if (port == 0) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);

			if (getsockname(evhttp_bound_socket_get_fd(bs),
			    (struct sockaddr *)&ss, &sl) == 0)
				port = ntohs(ss.ss_family == AF_INET6 ?
				    ((struct sockaddr_in6 *)&ss)->sin6_port :
				    ((struct sockaddr_in *)&ss)->sin_port);
		}
		api->tcp_port = port;
	}
	api_update(api, p->token, p->max_body);
	if (p->listen != NULL)
		log_info("api: listening on %s and %s%s%s:%d", p->socket_path,
		    strchr(host, ':') ? "[" : "", host,
		    strchr(host, ':') ? "]" : "", api->tcp_port);
	else
		log_info("api: listening on %s", p->socket_path);
	return api;
}

void
api_set_ops(struct api *api, const struct api_ops *ops)
{
	api->ops = *ops;
}

int
api_tcp_port(const struct api *api)
{
	return api->tcp_port;
}

void
api_stop(struct api *api)
{
	/*
	 * evhttp cannot close its listeners alone; a request that arrives
	 * during shutdown is refused by the intake being gone anyway, and the
	 * socket file goes away here so no new client finds it.
	 */
	if (api->socket_path != NULL)
		unlink(api->socket_path);
}

void
api_free(struct api *api)
{
	struct api_req *ar;

	if (api == NULL)
		return;
	/* Answers still waiting for a commit are dropped with their connections. */
	while ((ar = api->pending) != NULL) {
		api_pending_unlink(ar);
		if (ar->req != NULL)
			evhttp_connection_set_closecb(
			    evhttp_request_get_connection(ar->req), NULL, NULL);
		ar->req = NULL;
		ar->api = NULL;
	}
	/* Follow requests still waiting go with their connections. */
	while (api->audit_waits != NULL) {
		struct api_audit *a = api->audit_waits;

		evhttp_connection_set_closecb(evhttp_request_get_connection(
		    a->req), NULL, NULL);
		api_audit_unlink(a);
		buf_free(&a->out);
		free(a);
	}
	if (api->unix_http)
		evhttp_free(api->unix_http);
	if (api->tcp_http)
		evhttp_free(api->tcp_http);
	if (api->socket_path) {
		unlink(api->socket_path);
		free(api->socket_path);
	}
	explicit_wipe(api->token_hash, sizeof(api->token_hash));
	free(api);
}
