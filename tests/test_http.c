/*
 * test_http.c: the transport against servers in the same process and loop:
 * an evhttp server (plain and TLS with a certificate made at test time) and
 * raw listeners for peers that hang, reset or talk nonsense.
 */
#include "config.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "http.h"
#include "log.h"
#include "util.h"
#include "tap.h"

static struct event_base *base;
static struct http *H;
static int pending, watchdog_fired;
static int64_t tick_last, tick_max_gap;

/* ---- servers ---- */

static unsigned short seen_ports[4096];
static int nseen;

static void
note_peer(struct evhttp_request *req)
{
	char *addr;
	ev_uint16_t port;
	int i;

	evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr,
	    &port);
	for (i = 0; i < nseen; i++)
		if (seen_ports[i] == port)
			return;
	if (nseen < (int)nitems(seen_ports))
		seen_ports[nseen++] = port;
}

static const char *
method_str(struct evhttp_request *req)
{
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	default: return "OTHER";
	}
}

/* /echo, /big/N, /chunked/N, /retry, /status/N. */
static void
server_cb(struct evhttp_request *req, void *arg)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evbuffer *body = evbuffer_new(), *inb;
	const char *uri = evhttp_request_get_uri(req), *v;
	char *chunk;
	long n;

	note_peer(req);
	if (strncmp(uri, "/echo", 5) == 0) {
		const char *xt = evhttp_find_header(in, "X-Test");
		const char *ct = evhttp_find_header(in, "Content-Type");
		const char *ex = evhttp_find_header(in, "Expect");

		inb = evhttp_request_get_input_buffer(req);
		evbuffer_add_printf(body, "METHOD %s\nURI %s\nX-Test: %s\n"
		    "CT: %s\nExpect: %s\nLEN %zu\n", method_str(req), uri,
		    xt ? xt : "(none)", ct ? ct : "(none)", ex ? ex : "(none)",
		    evbuffer_get_length(inb));
		evbuffer_add_buffer(body, inb);
		evhttp_add_header(out, "Content-Type", "application/test");
		evhttp_add_header(out, "x-ms-meta-hash", "q83v7w==");
		evhttp_send_reply(req, 200, "OK", body);
	} else if (sscanf(uri, "/big/%ld", &n) == 1) {
		chunk = xmalloc((size_t)n);
		memset(chunk, 'x', (size_t)n);
		evbuffer_add(body, chunk, (size_t)n);
		free(chunk);
		evhttp_send_reply(req, 200, "OK", body);
	} else if (sscanf(uri, "/chunked/%ld", &n) == 1) {
		evhttp_send_reply_start(req, 200, "OK");
		chunk = xmalloc(65536);
		memset(chunk, 'y', 65536);
		for (; n > 0; n -= 65536) {
			evbuffer_add(body, chunk, n < 65536 ? (size_t)n : 65536);
			evhttp_send_reply_chunk(req, body);
		}
		free(chunk);
		evhttp_send_reply_end(req);
	} else if (strcmp(uri, "/retry") == 0) {
		if ((v = evhttp_find_header(in, "X-Want")) != NULL)
			evhttp_add_header(out, "Retry-After", v);
		evbuffer_add_printf(body, "slow down");
		evhttp_send_reply(req, 429, "Too Many Requests", body);
	} else if (sscanf(uri, "/status/%ld", &n) == 1) {
		evbuffer_add_printf(body, "status %ld", n);
		evhttp_send_reply(req, (int)n, "Whatever", body);
	} else
		evhttp_send_reply(req, 404, "Not Found", NULL);
	evbuffer_free(body);
}

static int
bound_port(evutil_socket_t fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
		fatal("getsockname");
	return ntohs(sin.sin_port);
}

/* Raw peers: what a misbehaving server does once it has the request. */
enum raw_mode { RAW_HANG, RAW_RESET, RAW_GARBAGE };

static struct bufferevent *raw_bevs[256];
static int nraw;

static void
raw_write_cb(struct bufferevent *bev, void *arg)
{
	struct linger lg = { 1, 0 };
	evutil_socket_t fd = bufferevent_getfd(bev);
	int i;

	/* All written: close with RST (linger 0) in the middle of the body. */
	if ((enum raw_mode)(intptr_t)arg == RAW_RESET)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	for (i = 0; i < nraw; i++)
		if (raw_bevs[i] == bev)
			raw_bevs[i] = raw_bevs[--nraw];
	bufferevent_free(bev);
}

static void
raw_read_cb(struct bufferevent *bev, void *arg)
{
	enum raw_mode mode = (enum raw_mode)(intptr_t)arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end;
	char pad[1000];

	end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (mode == RAW_HANG || end.pos < 0) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_disable(bev, EV_READ);
	if (mode == RAW_RESET) {
		memset(pad, 'z', sizeof(pad));
		bufferevent_write(bev, "HTTP/1.1 200 OK\r\n"
		    "Content-Length: 100000\r\n\r\n", 44);
		bufferevent_write(bev, pad, sizeof(pad));
	} else
		bufferevent_write(bev, "garbage, not HTTP\r\n\r\n", 21);
	bufferevent_setcb(bev, NULL, raw_write_cb, NULL, arg);
}

static void
raw_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct bufferevent *bev;

	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, raw_read_cb, NULL, NULL, arg);
	bufferevent_enable(bev, EV_READ);
	if (nraw < (int)nitems(raw_bevs))
		raw_bevs[nraw++] = bev;
}

static struct evconnlistener *
raw_start(enum raw_mode mode, int *port)
{
	struct sockaddr_in sin;
	struct evconnlistener *l;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = evconnlistener_new_bind(base, raw_accept_cb, (void *)(intptr_t)mode,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
	    (struct sockaddr *)&sin, sizeof(sin));
	if (l == NULL)
		fatal("evconnlistener_new_bind");
	*port = bound_port(evconnlistener_get_fd(l));
	return l;
}

/* ---- TLS material made at test time ---- */

static EVP_PKEY *
key_new(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	if (k == NULL)
		fatalx("EVP_EC_gen");
	return k;
}

static void
cert_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	if ((e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
		fatalx("X509V3_EXT_conf_nid %d", nid);
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
}

/* A certificate for key, signed by ikey/issuer (self-signed when NULL). */
static X509 *
cert_new(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *ikey,
    const char *san)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name;

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	if (san == NULL) {
		cert_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		cert_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
		cert_ext(x, x, NID_subject_key_identifier, "hash");
	} else {
		cert_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
		cert_ext(x, issuer, NID_subject_alt_name, san);
		cert_ext(x, issuer, NID_ext_key_usage, "serverAuth");
		cert_ext(x, issuer, NID_authority_key_identifier, "keyid");
	}
	if (X509_sign(x, ikey ? ikey : key, EVP_sha256()) == 0)
		fatalx("X509_sign");
	return x;
}

static void
pem_write(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || PEM_write_X509(f, x) != 1 || fclose(f) != 0)
		fatal("%s", path);
}

static SSL_CTX *
tls_ctx(X509 *cert, EVP_PKEY *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL || SSL_CTX_use_certificate(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, key) != 1)
		fatalx("SSL_CTX setup");
	return ctx;
}

static SSL_CTX *tls_current;	/* what the TLS server presents now */

static struct bufferevent *
tls_bev_cb(struct event_base *b, void *arg)
{
	SSL *ssl = SSL_new(tls_current);

	return bufferevent_openssl_socket_new(b, -1, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

static struct evhttp *
server_start(int *port, SSL_CTX **ctxp)
{
	struct evhttp *srv = evhttp_new(base);
	struct evhttp_bound_socket *bs;

	evhttp_set_gencb(srv, server_cb, NULL);
	evhttp_set_allowed_methods(srv, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	if (ctxp != NULL)
		evhttp_set_bevcb(srv, tls_bev_cb, NULL);
	if ((bs = evhttp_bind_socket_with_handle(srv, "127.0.0.1", 0)) == NULL)
		fatal("evhttp_bind_socket_with_handle");
	*port = bound_port(evhttp_bound_socket_get_fd(bs));
	return srv;
}

/* ---- the client side ---- */

struct result {
	int			 done;
	enum http_outcome	 outcome;
	int			 sent;
	long			 status;
	char			 error[256];
	int64_t			 retry_after;
	char			 ctype[64];
	char			 hash[64];
	struct buf		 body;
	int64_t			 elapsed;
	int			 chain;		/* requests still to start from the callback */
	char			 url[128];
};

static void done_cb(struct http_response *, void *);

static void
start(struct result *res, enum http_method m, const char *url)
{
	struct http_request *req = http_request_new(m, url);

	pending++;
	http_request_start(H, req, done_cb, res);
}

static void
done_cb(struct http_response *r, void *arg)
{
	struct result *res = arg;

	res->done++;
	res->outcome = r->outcome;
	res->sent = r->sent;
	res->status = r->status;
	snprintf(res->error, sizeof(res->error), "%s", r->error);
	res->retry_after = r->retry_after_s;
	snprintf(res->ctype, sizeof(res->ctype), "%s",
	    r->content_type ? r->content_type : "(null)");
	snprintf(res->hash, sizeof(res->hash), "%s",
	    r->meta_hash ? r->meta_hash : "(null)");
	buf_free(&res->body);
	res->body.data = buf_release(&r->body, &res->body.len);
	res->body.cap = res->body.len + 1;
	res->elapsed = r->elapsed_ms;
	if (res->chain > 0) {
		res->chain--;
		start(res, HTTP_GET, res->url);
	}
	if (--pending == 0)
		event_base_loopbreak(base);
}

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	watchdog_fired = 1;
	event_base_loopbreak(base);
}

/* Measures the longest time the loop went without running a 10 ms tick. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	int64_t now = time_mono_ms();

	if (tick_last && now - tick_last > tick_max_gap)
		tick_max_gap = now - tick_last;
	tick_last = now;
}

/* Run the loop until every started request completed (10 s at most). */
static int
run(void)
{
	struct event *wd = evtimer_new(base, watchdog_cb, NULL);
	struct timeval tv = { 10, 0 };

	watchdog_fired = 0;
	evtimer_add(wd, &tv);
	if (pending > 0)
		event_base_loop(base, 0);
	event_free(wd);
	if (watchdog_fired)
		diag("watchdog: %d requests still pending", pending);
	return !watchdog_fired;
}

static void
result_reset(struct result *r)
{
	buf_free(&r->body);
	memset(r, 0, sizeof(*r));
}

static int
body_has(const struct result *r, const char *s)
{
	return r->body.data != NULL && strstr((char *)r->body.data, s) != NULL;
}

static void
test_url_check(void)
{
	static const struct { const char *url; int ok; const char *err; } t[] = {
		{ "https://api-test.ksef.mf.gov.pl/v2", 0, NULL },
		{ "https://192.0.2.1:8443/x?y=1", 0, NULL },
		{ "http://127.0.0.1:8080/v2", 0, NULL },
		{ "http://127.255.3.4/", 0, NULL },
		{ "http://localhost:1/", 0, NULL },
		{ "HTTP://LOCALHOST/", 0, NULL },
		{ "http://[::1]:9/", 0, NULL },
		{ "http://192.0.2.1/", -1, "not 192.0.2.1" },
		{ "http://128.0.0.1/", -1, "loopback" },
		{ "http://localhost.example.com/", -1, "loopback" },
		{ "http://127.0.0.1@evil.example/", -1, "not evil.example" },
		{ "http://[::2]/", -1, "loopback" },
		{ "http://[::ffff:127.0.0.1]/", -1, "loopback" },
		{ "ftp://127.0.0.1/", -1, "scheme ftp not allowed" },
		{ "file:///etc/passwd", -1, "" },
		{ "api.example.com/v2", -1, "URL" },
		{ "", -1, "URL" },
		{ "https://exa mple.com/", -1, "URL" },
		{ "https://a\r\nb/", -1, "URL" },
	};
	char err[256];
	size_t i;
	int rc;

	for (i = 0; i < nitems(t); i++) {
		err[0] = '\0';
		rc = http_url_check(t[i].url, err, sizeof(err));
		if (t[i].ok == 0)
			ok(rc == 0, "url allowed: %s %s", t[i].url, err);
		else
			ok(rc == -1 && strstr(err, t[i].err) != NULL,
			    "url refused: %s",
			    log_escape(t[i].url, strlen(t[i].url), 60));
		if (rc == -1)
			diag("%s", err);
	}
}

static void
test_retry_after_parse(void)
{
	/* now = Sun, 06 Nov 1994 08:49:37 GMT */
	const int64_t now = 784111777000LL;
	static const struct { const char *v; int64_t want; } t[] = {
		{ "7", 7 },
		{ "  120 ", 120 },
		{ "0", 0 },
		{ "999999999999999", 999999999999999LL },
		{ "9999999999999999", -1 },	/* 16 digits */
		{ "-5", -1 },
		{ "+5", -1 },
		{ "5s", -1 },
		{ "", -1 },
		{ "soon", -1 },
		{ "Sun, 06 Nov 1994 08:51:37 GMT", 120 },
		{ "Sun, 06 Nov 1994 08:49:37 GMT", 0 },
		{ "Sat, 05 Nov 1994 08:49:37 GMT", 0 },	/* past: now */
		{ "Sunday, 06-Nov-94 08:50:37 GMT", 60 },
		{ "Sun Nov  6 08:49:47 1994", 10 },
		{ "Sun, 06 Nov 1994 08:51:37 CET", -1 },
		{ "Sun, 06 Nov 1994 08:51:37 GMT trailing", -1 },
		{ "Sun, 06 Nov 1994", -1 },
	};
	size_t i;

	for (i = 0; i < nitems(t); i++)
		is_int(http_retry_after_parse(t[i].v, now), t[i].want,
		    "Retry-After \"%s\"", t[i].v);
	is_int(http_retry_after_parse("Sun, 06 Nov 1994 08:51:37 GMT",
	    now + 500), 120, "a partial second rounds up");
}

static void
test_roundtrip(int port)
{
	struct result r[4];
	struct http_request *req;
	char url[128], *big;
	size_t i;

	memset(r, 0, sizeof(r));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", port);
	req = http_request_new(HTTP_GET, url);
	http_request_header_add(req, "X-Test", "hello");
	pending++;
	http_request_start(H, req, done_cb, &r[0]);

	req = http_request_new(HTTP_POST, url);
	http_request_header_add(req, "Content-Type", "application/xml");
	http_request_body_set(req, "<a>body</a>", 11);
	pending++;
	http_request_start(H, req, done_cb, &r[1]);

	/* 2 MB owned body: curl would send "Expect: 100-continue". */
	big = xmalloc(2000000);
	memset(big, 'b', 2000000);
	req = http_request_new(HTTP_PUT, url);
	http_request_body_take(req, big, 2000000);
	pending++;
	http_request_start(H, req, done_cb, &r[2]);

	req = http_request_new(HTTP_DELETE, url);
	pending++;
	http_request_start(H, req, done_cb, &r[3]);
	is_int(http_in_flight(H), 4, "4 requests in flight");
	ok(run(), "round trips completed");

	ok(r[0].outcome == HTTP_OUT_OK && r[0].status == 200 && r[0].sent,
	    "GET: 200 (%s)", r[0].error);
	ok(body_has(&r[0], "METHOD GET\n") && body_has(&r[0], "X-Test: hello\n"),
	    "GET: method and header arrived");
	is_str(r[0].ctype, "application/test", "Content-Type reported");
	is_str(r[0].hash, "q83v7w==", "x-ms-meta-hash reported");
	is_int(r[0].retry_after, -1, "no Retry-After");
	ok(body_has(&r[1], "METHOD POST\n") &&
	    body_has(&r[1], "CT: application/xml\n") &&
	    body_has(&r[1], "LEN 11\n<a>body</a>"),
	    "POST: borrowed body and Content-Type arrived");
	ok(body_has(&r[2], "METHOD PUT\n") && body_has(&r[2], "LEN 2000000\n") &&
	    body_has(&r[2], "Expect: (none)\n") &&
	    body_has(&r[2], "CT: application/octet-stream\n") &&
	    r[2].body.len > 2000000,
	    "PUT: 2 MB owned body, no Expect, default Content-Type");
	ok(r[3].status == 200 && body_has(&r[3], "METHOD DELETE\n") &&
	    body_has(&r[3], "LEN 0\n"), "DELETE without a body");
	is_int(http_in_flight(H), 0, "nothing in flight after");
	for (i = 0; i < nitems(r); i++)
		result_reset(&r[i]);
}

/* With HTTP tracing on, the log shows the request but no secret. */
static void
test_trace(int port, const char *dir)
{
	struct result r;
	struct http_request *req;
	char url[128], path[256];
	unsigned char *log;
	size_t len;
	int fd, saved;

	memset(&r, 0, sizeof(r));
	snprintf(path, sizeof(path), "%s/trace.log", dir);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1)
		fatal("%s", path);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	close(fd);
	log_trace_set(TRACE_HTTP);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo?sig=QUERYSECRET",
	    port);
	req = http_request_new(HTTP_POST, url);
	http_request_header_add(req, "Authorization", "Bearer TOKENSECRET");
	http_request_body_set(req, "BODYSECRET", 10);
	pending++;
	http_request_start(H, req, done_cb, &r);
	ok(run() && r.status == 200 && body_has(&r, "BODYSECRET"),
	    "traced request completed");
	log_trace_set(0);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	log = file_read(path, 1 << 20, &len);
	ok(log != NULL && strstr((char *)log, "http: > POST "
	    "http://127.0.0.1:") != NULL &&
	    strstr((char *)log, "Authorization: (not logged)") != NULL &&
	    strstr((char *)log, "http: < 200 POST") != NULL,
	    "trace shows the request, the response and a hidden Authorization");
	ok(log != NULL && strstr((char *)log, "SECRET") == NULL,
	    "no token, body or query string in the trace");
	free(log);
	unlink(path);
	result_reset(&r);
}

static void
test_concurrency(int port)
{
	static struct result r[100];
	char url[128], want[64];
	int i, good = 0, nconn;

	nconn = nseen;
	for (i = 0; i < 100; i++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo?i=%d",
		    port, i);
		start(&r[i], HTTP_GET, url);
	}
	is_int(http_in_flight(H), 100, "100 in flight");
	ok(run(), "100 concurrent requests completed");
	for (i = 0; i < 100; i++) {
		snprintf(want, sizeof(want), "URI /echo?i=%d\n", i);
		if (r[i].done == 1 && r[i].status == 200 && body_has(&r[i], want))
			good++;
		result_reset(&r[i]);
	}
	is_int(good, 100, "each got its own answer, exactly once");
	nconn = nseen - nconn;
	ok(nconn >= 0 && nconn <= 8, "server saw %d new connections for 100 "
	    "requests (at most 8 per host)", nconn);

	/* Sequential: each started from the previous one's callback. */
	nconn = nseen;
	memset(&r[0], 0, sizeof(r[0]));
	snprintf(r[0].url, sizeof(r[0].url), "http://127.0.0.1:%d/echo", port);
	r[0].chain = 19;
	start(&r[0], HTTP_GET, r[0].url);
	ok(run() && r[0].done == 20 && r[0].status == 200,
	    "20 chained requests completed");
	is_int(nseen - nconn, 0, "all 20 reused cached connections");
	result_reset(&r[0]);
}

/*
 * Bursts with a lull between them keep their connections: curl's default
 * cache (4 per transfer added) shrank to 4 in the lull and the next burst
 * paid a new connection (a TLS handshake, against KSeF) per request.
 */
static void
test_connection_cache(int port)
{
	static struct result r[32];
	char url[128];
	int i, round, good = 0, nconn, first = 0;

	http_max_host_connections_set(H, 32);
	for (round = 0; round < 3; round++) {
		nconn = nseen;
		for (i = 0; i < 32; i++) {
			snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo?"
			    "c=%d", port, i);
			start(&r[i], HTTP_GET, url);
		}
		if (run())
			for (i = 0; i < 32; i++)
				good += r[i].done == 1 && r[i].status == 200;
		for (i = 0; i < 32; i++)
			result_reset(&r[i]);
		if (round == 0)
			first = nseen - nconn;
		else if (round == 2)
			is_int(nseen - nconn, 0, "a burst after a lull reuses "
			    "every cached connection (%d opened by the first)",
			    first);
		/* The lull: one transfer at a time. */
		snprintf(r[0].url, sizeof(r[0].url), "http://127.0.0.1:%d/echo",
		    port);
		r[0].chain = 4;
		start(&r[0], HTTP_GET, r[0].url);
		run();
		result_reset(&r[0]);
	}
	is_int(good, 96, "3 bursts of 32 concurrent requests answered");
	ok(first > 8 && first <= 32, "the first burst used up to 32 "
	    "connections (%d), not the default 8", first);
	http_max_host_connections_set(H, 0);
}

static long
cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000L +
	    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/*
 * A kept-alive connection that the server closes while it is idle.  Its
 * socket has stayed parked, with a read event, since its transfer: the
 * close must not make the loop spin (the event goes at the first sign),
 * and the next request gets a new connection.
 */
static void
test_idle_close(void)
{
	struct evhttp *srv;
	struct timeval idle = { 0, 50000 }, wait = { 0, 300000 };
	static struct result r;
	char url[128];
	int port, nconn;
	long c0, used;

	srv = server_start(&port, NULL);
	evhttp_set_timeout_tv(srv, &idle);	/* it closes idle connections */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", port);
	nconn = nseen;
	start(&r, HTTP_GET, url);
	ok(run() && r.done == 1 && r.status == 200, "idle close: first request answered");
	result_reset(&r);
	c0 = cpu_ms();
	event_base_loopexit(base, &wait);
	event_base_dispatch(base);
	used = cpu_ms() - c0;
	ok(used < 150, "the server's close of the idle connection did not spin "
	    "the loop (%ld ms of CPU in 300 ms)", used);
	start(&r, HTTP_GET, url);
	ok(run() && r.done == 1 && r.status == 200 && r.outcome == HTTP_OUT_OK,
	    "the next request is answered");
	is_int(nseen - nconn, 2, "on a new connection");
	result_reset(&r);
	evhttp_free(srv);
}

static void
test_failures(int port, int hang_port, int reset_port, int garbage_port)
{
	struct result r[8];
	struct http_request *req;
	char url[128];
	int closed_port, fd;
	struct sockaddr_in sin;
	size_t i;

	/* A port nobody listens on. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		fatal("bind");
	closed_port = bound_port(fd);
	close(fd);

	memset(r, 0, sizeof(r));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", hang_port);
	req = http_request_new(HTTP_POST, url);
	http_request_body_set(req, "x", 1);
	http_request_timeouts_set(req, 0, 200);
	pending++;
	http_request_start(H, req, done_cb, &r[0]);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", port);
	start(&r[1], HTTP_GET, url);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", closed_port);
	start(&r[2], HTTP_GET, url);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", reset_port);
	start(&r[3], HTTP_GET, url);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", garbage_port);
	start(&r[4], HTTP_GET, url);
	ok(run(), "failing requests completed");

	ok(r[0].outcome == HTTP_OUT_TIMEOUT && r[0].sent,
	    "silent server: timeout, request sent (%s: %s)",
	    http_outcome_name(r[0].outcome), r[0].error);
	ok(r[0].elapsed >= 190 && r[0].elapsed < 3000,
	    "timed out after ~200 ms (%lld ms)", (long long)r[0].elapsed);
	ok(r[1].status == 200 && r[1].elapsed < r[0].elapsed,
	    "another request completed meanwhile (%lld ms)",
	    (long long)r[1].elapsed);
	ok(r[2].outcome == HTTP_OUT_CONNECT && !r[2].sent && r[2].status == 0,
	    "closed port: connect failed, nothing sent (%s)", r[2].error);
	ok(r[3].outcome == HTTP_OUT_RECV && r[3].sent,
	    "reset mid-body: connection reset (%s: %s)",
	    http_outcome_name(r[3].outcome), r[3].error);
	ok(r[4].outcome == HTTP_OUT_RECV,
	    "garbage answer: receive error (%s: %s)",
	    http_outcome_name(r[4].outcome), r[4].error);
	for (i = 0; i < nitems(r); i++)
		result_reset(&r[i]);
}

static void
test_too_large(int port)
{
	struct result r[3];
	static const char *const path[] = { "big/2000000", "chunked/2000000",
	    "big/1000000" };
	struct http_request *req;
	char url[128];
	size_t i;

	memset(r, 0, sizeof(r));
	for (i = 0; i < nitems(path); i++) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/%s", port,
		    path[i]);
		req = http_request_new(HTTP_GET, url);
		http_request_max_response_set(req, 1000000);
		pending++;
		http_request_start(H, req, done_cb, &r[i]);
	}
	ok(run(), "capped requests completed");
	ok(r[0].outcome == HTTP_OUT_TOO_LARGE && r[0].body.len == 0,
	    "Content-Length over the cap: too large (%s)", r[0].error);
	ok(r[1].outcome == HTTP_OUT_TOO_LARGE && r[1].body.len <= 1000000,
	    "chunked body over the cap: too large, aborted (%s)", r[1].error);
	ok(r[2].outcome == HTTP_OUT_OK && r[2].body.len == 1000000,
	    "exactly at the cap: ok");
	for (i = 0; i < nitems(r); i++)
		result_reset(&r[i]);
}

static void
test_retry_after(int port)
{
	struct result r[4];
	struct http_request *req;
	char url[128], date[64];
	time_t t = time(NULL) + 120;
	struct tm tm;
	const char *want[4];
	size_t i;

	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	want[0] = "7";
	want[1] = date;
	want[2] = "tomorrow";
	want[3] = NULL;
	memset(r, 0, sizeof(r));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/retry", port);
	for (i = 0; i < nitems(r); i++) {
		req = http_request_new(HTTP_GET, url);
		if (want[i])
			http_request_header_add(req, "X-Want", want[i]);
		pending++;
		http_request_start(H, req, done_cb, &r[i]);
	}
	ok(run(), "429s completed");
	ok(r[0].status == 429 && r[0].retry_after == 7,
	    "Retry-After: 7 -> 7 s (%lld)", (long long)r[0].retry_after);
	ok(r[1].retry_after >= 118 && r[1].retry_after <= 121,
	    "Retry-After: %s -> ~120 s (%lld)", date,
	    (long long)r[1].retry_after);
	is_int(r[2].retry_after, -1, "Retry-After: tomorrow -> invalid");
	is_int(r[3].retry_after, -1, "no Retry-After -> -1");
	ok(body_has(&r[0], "slow down"), "the 429 body is there");
	for (i = 0; i < nitems(r); i++)
		result_reset(&r[i]);
}

static void
test_refused(int hang_port)
{
	struct result r[3];
	struct http_request *req, *c1, *c2;
	struct timeval tv = { 0, 0 };
	char url[128];
	int64_t t0 = time_mono_ms();
	size_t i;

	memset(r, 0, sizeof(r));
	start(&r[0], HTTP_GET, "http://192.0.2.1/");
	req = http_request_new(HTTP_GET, "https://127.0.0.1:1/");
	http_request_header_add(req, "Authorization", "Bearer a\r\nX-Evil: 1");
	pending++;
	http_request_start(H, req, done_cb, &r[1]);
	start(&r[2], HTTP_GET, "gopher://127.0.0.1/");
	ok(r[0].done == 0 && r[1].done == 0 && r[2].done == 0,
	    "refusals are not delivered from inside http_request_start");
	ok(run(), "refusals delivered");
	ok(r[0].outcome == HTTP_OUT_REFUSED && !r[0].sent &&
	    strstr(r[0].error, "loopback") != NULL,
	    "http://192.0.2.1/ refused: %s", r[0].error);
	ok(time_mono_ms() - t0 < 1000, "refused at once, no connect attempt");
	ok(r[1].outcome == HTTP_OUT_REFUSED &&
	    strstr(r[1].error, "Authorization: value contains a line break") &&
	    strstr(r[1].error, "Bearer") == NULL,
	    "header injection refused without echoing the value: %s",
	    r[1].error);
	ok(r[2].outcome == HTTP_OUT_REFUSED, "gopher:// refused: %s",
	    r[2].error);

	/* Cancelled requests: no callback, the transfer is gone. */
	for (i = 0; i < nitems(r); i++)
		result_reset(&r[i]);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", hang_port);
	c1 = http_request_new(HTTP_GET, url);
	http_request_start(H, c1, done_cb, &r[0]);
	event_base_loop(base, EVLOOP_NONBLOCK);	/* let c1 connect */
	c2 = http_request_new(HTTP_GET, "http://192.0.2.1/");
	http_request_start(H, c2, done_cb, &r[1]);
	is_int(http_in_flight(H), 2, "2 in flight before cancelling");
	http_request_cancel(H, c1);
	http_request_cancel(H, c2);
	is_int(http_in_flight(H), 0, "0 in flight after cancelling");
	/* Run the loop a little: neither callback may appear. */
	for (i = 0; i < 20; i++) {
		tv.tv_usec = 10000;
		event_base_loopexit(base, &tv);
		event_base_loop(base, 0);
	}
	ok(r[0].done == 0 && r[1].done == 0, "cancelled: callbacks never ran");
}

static void
test_tls(int *tls_port, const char *dir)
{
	EVP_PKEY *cakey = key_new(), *otherkey = key_new(), *srvkey = key_new();
	X509 *ca = cert_new(cakey, "ksefd test CA", NULL, NULL, NULL);
	X509 *other = cert_new(otherkey, "someone else's CA", NULL, NULL, NULL);
	X509 *srv = cert_new(srvkey, "127.0.0.1", ca, cakey,
	    "IP:127.0.0.1,DNS:localhost");
	X509 *wrongname = cert_new(srvkey, "elsewhere", ca, cakey,
	    "DNS:elsewhere.example");
	SSL_CTX *good = tls_ctx(srv, srvkey), *bad = tls_ctx(wrongname, srvkey);
	struct evhttp *srvh;
	struct http_options opt = { 0 };
	struct http *right, *wrong, *saved = H;
	struct result r[4];
	char ca_path[256], other_path[256], url[128];
	size_t i;

	snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", dir);
	snprintf(other_path, sizeof(other_path), "%s/other.pem", dir);
	pem_write(ca_path, ca);
	pem_write(other_path, other);
	tls_current = good;
	srvh = server_start(tls_port, &good);
	opt.ca_file = ca_path;
	right = http_new(base, &opt);
	opt.ca_file = other_path;
	wrong = http_new(base, &opt);

	memset(r, 0, sizeof(r));
	H = right;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo", *tls_port);
	start(&r[0], HTTP_GET, url);
	snprintf(url, sizeof(url), "https://localhost:%d/echo", *tls_port);
	start(&r[1], HTTP_GET, url);
	H = wrong;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo", *tls_port);
	start(&r[2], HTTP_GET, url);
	ok(run(), "TLS requests completed");
	ok(r[0].outcome == HTTP_OUT_OK && r[0].status == 200 &&
	    body_has(&r[0], "METHOD GET"), "https with the right CA: 200 (%s)",
	    r[0].error);
	ok(r[1].status == 200, "https://localhost with the right CA: 200 "
	    "(%s %ld %s)", http_outcome_name(r[1].outcome), r[1].status,
	    r[1].error);
	ok(r[2].outcome == HTTP_OUT_TLS && !r[2].sent && r[2].status == 0,
	    "https with the wrong CA: TLS error, nothing sent (%s)",
	    r[2].error);

	/* Right CA, but a certificate for another name (on a new connection). */
	tls_current = bad;
	http_free(right);
	opt.ca_file = ca_path;
	right = H = http_new(base, &opt);
	snprintf(url, sizeof(url), "https://localhost:%d/echo", *tls_port);
	start(&r[3], HTTP_GET, url);
	ok(run(), "name-mismatch request completed");
	ok(r[3].outcome == HTTP_OUT_TLS, "certificate for another host name: "
	    "TLS error (%s %ld %s)", http_outcome_name(r[3].outcome),
	    r[3].status, r[3].error);

	http_free(right);
	http_free(wrong);
	H = saved;
	evhttp_free(srvh);
	SSL_CTX_free(good);
	SSL_CTX_free(bad);
	X509_free(ca);
	X509_free(other);
	X509_free(srv);
	X509_free(wrongname);
	EVP_PKEY_free(cakey);
	EVP_PKEY_free(otherkey);
	EVP_PKEY_free(srvkey);
	unlink(ca_path);
	unlink(other_path);
	for (i = 0; i < nitems(r); i++)
		result_reset(&r[i]);
}

/* http_free with a request in flight: its callback runs with "cancelled". */
static void
test_shutdown(int hang_port)
{
	struct http *h = http_new(base, &(struct http_options){ 0 });
	struct http_request *req;
	struct result r;
	char url[128];

	memset(&r, 0, sizeof(r));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", hang_port);
	req = http_request_new(HTTP_GET, url);
	http_request_start(h, req, done_cb, &r);
	pending++;
	event_base_loop(base, EVLOOP_NONBLOCK);
	http_free(h);
	ok(r.done == 1 && r.outcome == HTTP_OUT_CANCELLED,
	    "http_free: the pending callback ran once with cancelled (%s)",
	    http_outcome_name(r.outcome));
	result_reset(&r);
}

int
main(void)
{
	struct evhttp *srv;
	struct evconnlistener *hang, *reset, *garbage;
	struct event *tick;
	struct timeval tv = { 0, 10000 };
	char dir[] = "/tmp/test_http.XXXXXX";
	int port, hang_port, reset_port, garbage_port, tls_port, i;

	signal(SIGPIPE, SIG_IGN);
	alarm(120);	/* a loop that spins or hangs fails the test, not CI */
	log_init("test_http", 1, LOG_LVL_WARN);
	if (getenv("TEST_HTTP_TRACE"))
		log_trace_set(TRACE_HTTP);
	if (mkdtemp(dir) == NULL)
		fatal("mkdtemp");
	base = event_base_new();
	srv = server_start(&port, NULL);
	hang = raw_start(RAW_HANG, &hang_port);
	reset = raw_start(RAW_RESET, &reset_port);
	garbage = raw_start(RAW_GARBAGE, &garbage_port);
	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	evtimer_add(tick, &tv);
	H = http_new(base, &(struct http_options){ 0 });

	test_url_check();
	test_retry_after_parse();
	test_roundtrip(port);
	test_trace(port, dir);
	test_concurrency(port);
	test_connection_cache(port);
	test_idle_close();
	test_failures(port, hang_port, reset_port, garbage_port);
	test_too_large(port);
	test_retry_after(port);
	test_refused(hang_port);
	test_tls(&tls_port, dir);
	test_shutdown(hang_port);
	ok(tick_max_gap < 1500, "the loop never stalled: longest gap between "
	    "10 ms ticks %lld ms", (long long)tick_max_gap);

	http_free(H);
	event_free(tick);
	for (i = 0; i < nraw; i++)
		bufferevent_free(raw_bevs[i]);
	evconnlistener_free(hang);
	evconnlistener_free(reset);
	evconnlistener_free(garbage);
	evhttp_free(srv);
	event_base_free(base);
	rmdir(dir);
	return tap_done();
}
