/*
 * sim_main.c: ksef-sim, the program: options, the evhttp server (TLS through
 * bufferevent_openssl), and the thin glue that hands each request to
 * sim_handle() and carries out its answer: reply now, reply later (slow),
 * never (hang) or reset the connection.  Timers drive the asynchronous
 * processing and the state snapshots.
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <libxml/catalog.h>
#include <libxml/parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "log.h"
#include "sim.h"

struct mainctx {
	struct event_base	*base;
	struct evhttp		*http;
	SSL_CTX			*ssl;
	struct sim		*sim;
	struct sim_conf		 conf;
	struct event		*due_ev;
	struct event		*snap_ev;
	struct event		*sig_int, *sig_term;
	char			*listen;
	char			*tls_cert, *tls_key;
	int64_t			 max_body;
	int			 verbose;
};

/* An answer held back: delayed (slow fault) or a reset to do outside the callback. */
struct pending {
	struct mainctx		*m;
	struct evhttp_request	*req;
	struct evhttp_connection *evcon;
	struct event		*ev;
	struct sim_resp		 resp;
};

static const char usage_text[] =
"usage: ksef-sim [options]\n"
"A KSeF 2.0 API simulator for tests: real crypto, asynchronous processing, UPOs,\n"
"sliding-window rate limits and fault injection. Prints url=... once it listens.\n"
"\n"
"Server:\n"
"  --listen HOST:PORT        address to listen on (default 127.0.0.1:0; port 0 = any free)\n"
"  --tls-cert FILE           server certificate chain (PEM); with --tls-key serves HTTPS\n"
"  --tls-key FILE            server private key (PEM)\n"
"  --max-body SIZE           largest request body (default 16M; larger gets 413)\n"
"  --config FILE             read `option = value` lines (any long option below)\n"
"  --state DIR               keep keys and a state snapshot (sessions, tokens, invoices)\n"
"                            in DIR; a restart with the same DIR continues from it\n"
"  --snapshot-interval DUR   how often a changed state is written (default 1s)\n"
"  --verbose, -v             log every request (twice: debug)\n"
"  --help, -h                this text\n"
"\n"
"KSeF behaviour:\n"
"  --token NIP:TOKEN         accept this KSeF token for context NIP (repeatable)\n"
"  --environment ENV         test (FA(2) and FA(3); default), demo or prod (FA(3) only;\n"
"                            prod also checks NIP checksums in invoices)\n"
"  --schemas DIR             XSDs with catalog.xml, loaded offline (default: the tree's)\n"
"  --no-xsd                  skip XSD validation (still checks XML and the rules)\n"
"  --processing-delay DUR    time from send to processing result (default 200ms)\n"
"  --auth-delay DUR          time GET /auth/{ref} stays at 100 (default 100ms)\n"
"  --storage-delay DUR       acquisitionDate to permanentStorageDate (default 0)\n"
"  --challenge-ttl DUR       challenge lifetime (default 10m)\n"
"  --auth-token-ttl DUR      authenticationToken lifetime (default 45m)\n"
"  --access-ttl DUR          accessToken lifetime (default 15m)\n"
"  --refresh-ttl DUR         refreshToken lifetime (default 7d)\n"
"  --session-ttl DUR         online session lifetime (default 12h)\n"
"  --session-max-invoices N  invoices per session (default 10000; then 21155)\n"
"  --max-invoice-size N      largest invoice in bytes (default 1000000)\n"
"  --upo-url-ttl DUR         lifetime of presigned UPO links (default 3d)\n"
"  --upo-page-size N         invoices per session UPO page (default 10000)\n"
"  --metadata-max N          records per metadata filter set (default 10000)\n"
"  --upo-subject TEXT        NazwaPodmiotuPrzyjmujacego in UPOs (default the TE text)\n"
"  --latarnia-path PATH      Latarnia status service at PATH/status and PATH/messages\n"
"                            (default /latarnia, outside /v2)\n"
"\n"
"Rate limits (API.md 10; windows of 1 s, 60 s, 60 min per context and group):\n"
"  --limits on|off|FILE      official limits (default), none, or a JSON file shaped like\n"
"                            GET /rate-limits (groups may be partial; \"public\" too)\n"
"  --limit-windows A,B,C     scale the three windows, e.g. 1s,1s,60s\n"
"  A violation answers 429 with Retry-After (seconds), doubling while violations repeat.\n"
"\n"
"Faults:\n"
"  --fault GROUP:KIND:RULE[:count=N]   (repeatable)\n"
"      GROUP  all, or onlineSession, invoiceSend, batchSession, invoiceStatus,\n"
"             sessionList, sessionInvoiceList, sessionMisc, invoiceMetadata,\n"
"             invoiceExport, invoiceExportStatus, invoiceDownload, other, public,\n"
"             storage (presigned UPO downloads; faults only, never limited)\n"
"      KIND   503          503 with an HTML body, as gateways send\n"
"             500          500 problem+json\n"
"             hang         never answer (the client times out)\n"
"             reset        reset the connection without processing\n"
"             reset-after  process the request (e.g. store the invoice), then reset\n"
"             slow=DUR     answer normally after DUR\n"
"             429[=DUR]    forced 429 with Retry-After (default 1s)\n"
"      garbage: the request is processed, then its answer (status kept) is\n"
"             truncated    cut in half\n"
"             wrong-types  JSON with every value of another type\n"
"             html         replaced by an HTML page\n"
"             huge[=SIZE]  padded with spaces to SIZE (default 20M)\n"
"      RULE   always, every=N (every Nth request of the group) or p=P (probability)\n"
"      count=N  stop after N firings\n"
"  --outage START:DUR        everything 503 and Latarnia FAILURE from START after\n"
"                            startup for DUR, e.g. 0s:30s\n"
"  --reject-pattern REGEX    reject invoices whose number (P_2) matches (status 450)\n"
"  --seed N                  seed for probabilistic faults\n"
"\n"
"Run-time control and inspection (no token; outside /v2, also under /v2):\n"
"  GET  /_sim/stats          requests per group, 429s, faults, invoice counts,\n"
"                            authentications, token refreshes and the invoice\n"
"                            list entries served (listedInvoices)\n"
"  GET  /_sim/invoices       every registered invoice: nip, type, number, hash,\n"
"                            ksefNumber, sessionReferenceNumber\n"
"  POST /_sim/invoices       body: invoice XML; registers it as sent in an earlier\n"
"                            session, answers its ksefNumber (409 if a duplicate)\n"
"  DELETE /_sim/invoices/KSEFNUMBER  KSeF no longer lists that invoice (as lost)\n"
"  GET  /_sim/faults         the current fault settings\n"
"  POST /_sim/faults         JSON: {\"clear\":true, \"rules\":[{\"group\":\"invoiceSend\",\n"
"                            \"kind\":\"503\", \"every\":2, \"p\":0.5, \"count\":1, \"ms\":2000,\n"
"                            \"size\":1000000 (huge)}],\n"
"                            \"outage\":\"30s\"|false, \"latarnia\":\"MAINTENANCE\"|null,\n"
"                            \"processingDelay\":\"2s\", \"rejectPattern\":\"^BAD\",\n"
"                            \"expireTokens\":true (every token now answers 401),\n"
"                            \"rotateKey\":true (new keys; the old publicKeyId gets 21470),\n"
"                            \"limits\":\"on\"|\"off\"|{...}, \"limitWindows\":\"1s,1s,60s\"}\n"
"  GET  /storage/...         presigned UPO links (upoDownloadUrl, session UPO pages)\n"
"\n"
"Durations: 250ms, 30s, 5m, 2h, 1d (bare number = seconds). Sizes: 512, 64K, 16M.\n";

static const struct option longopts[] = {
	{ "listen", required_argument, NULL, 0 },
	{ "tls-cert", required_argument, NULL, 0 },
	{ "tls-key", required_argument, NULL, 0 },
	{ "max-body", required_argument, NULL, 0 },
	{ "config", required_argument, NULL, 0 },
	{ "state", required_argument, NULL, 0 },
	{ "snapshot-interval", required_argument, NULL, 0 },
	{ "token", required_argument, NULL, 0 },
	{ "environment", required_argument, NULL, 0 },
	{ "schemas", required_argument, NULL, 0 },
	{ "no-xsd", no_argument, NULL, 0 },
	{ "processing-delay", required_argument, NULL, 0 },
	{ "auth-delay", required_argument, NULL, 0 },
	{ "storage-delay", required_argument, NULL, 0 },
	{ "challenge-ttl", required_argument, NULL, 0 },
	{ "auth-token-ttl", required_argument, NULL, 0 },
	{ "access-ttl", required_argument, NULL, 0 },
	{ "refresh-ttl", required_argument, NULL, 0 },
	{ "session-ttl", required_argument, NULL, 0 },
	{ "session-max-invoices", required_argument, NULL, 0 },
	{ "max-invoice-size", required_argument, NULL, 0 },
	{ "upo-url-ttl", required_argument, NULL, 0 },
	{ "upo-page-size", required_argument, NULL, 0 },
	{ "metadata-max", required_argument, NULL, 0 },
	{ "upo-subject", required_argument, NULL, 0 },
	{ "latarnia-path", required_argument, NULL, 0 },
	{ "limits", required_argument, NULL, 0 },
	{ "limit-windows", required_argument, NULL, 0 },
	{ "fault", required_argument, NULL, 0 },
	{ "outage", required_argument, NULL, 0 },
	{ "reject-pattern", required_argument, NULL, 0 },
	{ "seed", required_argument, NULL, 0 },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 }
};

static int main_set(void *, const char *, const char *, char *, size_t);

static void
set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

/* Apply one option by name (command line or config file). */
static int
main_set(void *arg, const char *name, const char *val, char *err, size_t errlen)
{
	struct mainctx *m = arg;

	if (strcmp(name, "verbose") == 0) {
		m->verbose++;
		return 0;
	}
	if ((strcmp(name, "config") == 0 || strcmp(name, "listen") == 0 || strcmp(name, "tls-cert") == 0 ||
	    strcmp(name, "tls-key") == 0 || strcmp(name, "max-body") == 0) && val == NULL) {
		snprintf(err, errlen, "--%s needs a value", name);
		return -1;
	}
	if (strcmp(name, "config") == 0)
		return sim_conf_file(val, main_set, m, err, errlen);
	if (strcmp(name, "listen") == 0)
		set_str(&m->listen, val);
	else if (strcmp(name, "tls-cert") == 0)
		set_str(&m->tls_cert, val);
	else if (strcmp(name, "tls-key") == 0)
		set_str(&m->tls_key, val);
	else if (strcmp(name, "max-body") == 0) {
		if ((m->max_body = parse_size(val)) <= 0) {
			snprintf(err, errlen, "--max-body: bad size \"%s\"", val);
			return -1;
		}
	} else
		return sim_conf_set(&m->conf, name, val, err, errlen);
	return 0;
}

static const char *
method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	}
	return "?";
}

static void
due_schedule(struct mainctx *m)
{
	int64_t at = sim_next_due(m->sim), d;
	struct timeval tv;

	if (at < 0) {
		event_del(m->due_ev);
		return;
	}
	d = at - time_now_ms();
	if (d < 0)
		d = 0;
	tv.tv_sec = (time_t)(d / 1000);
	tv.tv_usec = (suseconds_t)(d % 1000) * 1000;
	event_add(m->due_ev, &tv);
}

static void
due_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct mainctx *m = arg;

	sim_run_due(m->sim, time_now_ms());
	due_schedule(m);
}

static void
snap_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct mainctx *m = arg;
	char err[300];

	if (sim_snapshot(m->sim, 0, err, sizeof(err)) == -1)
		log_warnx("sim: snapshot: %s", err);
}

static void
send_resp(struct evhttp_request *req, struct sim_resp *r)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	struct evbuffer *b = NULL;
	int k;

	if (r->ctype != NULL)
		evhttp_add_header(oh, "Content-Type", r->ctype);
	for (k = 0; k < r->nh; k++)
		evhttp_add_header(oh, r->hn[k], r->hv[k]);
	if (r->status != 204 && r->status != 304) {
		b = evbuffer_new();
		evbuffer_add(b, r->body.data, r->body.len);
	}
	evhttp_send_reply(req, r->status, NULL, b);
	if (b != NULL)
		evbuffer_free(b);
}

static void
pending_free(struct pending *p)
{
	event_free(p->ev);
	sim_resp_free(&p->resp);
	free(p);
}

/* The connection went away before the held answer: drop it. */
static void
pending_close_cb(struct evhttp_connection *evcon, void *arg)
{
	pending_free(arg);
}

/* Time for the held answer: send it, or reset the connection. */
static void
pending_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct pending *p = arg;
	struct evhttp_connection *evcon = p->evcon;
	struct bufferevent *bev;
	struct linger l = { 1, 0 };
	evutil_socket_t s;

	evhttp_connection_set_closecb(evcon, NULL, NULL);
	if (p->resp.action == SIM_ACT_RESET) {
		bev = evhttp_connection_get_bufferevent(evcon);
		if (bev != NULL && (s = bufferevent_getfd(bev)) >= 0)
			setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		pending_free(p);
		evhttp_connection_free(evcon);
		return;
	}
	send_resp(p->req, &p->resp);
	pending_free(p);
}

static void
request_cb(struct evhttp_request *req, void *arg)
{
	struct mainctx *m = arg;
	struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct evkeyval *kv;
	struct sim_hdr *h;
	struct sim_req r;
	struct pending *p;
	struct timeval tv;
	char *peer = NULL;
	ev_uint16_t port;
	size_t nh = 0;

	/*
	 * Too large: answered here, after the whole body was read, so the
	 * client gets its 413 on a clean connection (evhttp's own cap, four
	 * times higher, closes at once and the client may only see a reset).
	 */
	if ((int64_t)evbuffer_get_length(in) > m->max_body) {
		struct evbuffer *out = evbuffer_new();

		evbuffer_add_printf(out, "{\"exception\":{\"exceptionDetailList\":"
		    "[{\"exceptionCode\":21405,\"exceptionDescription\":"
		    "\"Request body too large\"}]}}");
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Content-Type", "application/json");
		evhttp_send_reply(req, 413, "Payload Too Large", out);
		evbuffer_free(out);
		return;
	}
	TAILQ_FOREACH(kv, ih, next)
		nh++;
	h = xcalloc(nh + 1, sizeof(*h));
	nh = 0;
	TAILQ_FOREACH(kv, ih, next) {
		h[nh].name = kv->key;
		h[nh].value = kv->value;
		nh++;
	}
	evhttp_connection_get_peer(evcon, &peer, &port);
	memset(&r, 0, sizeof(r));
	r.method = method_name(evhttp_request_get_command(req));
	r.uri = evhttp_request_get_uri(req);
	r.peer = peer;
	r.h = h;
	r.nh = nh;
	r.len = evbuffer_get_length(in);
	r.body = r.len ? evbuffer_pullup(in, -1) : (const unsigned char *)"";
	p = xcalloc(1, sizeof(*p));
	sim_handle(m->sim, &r, &p->resp, time_now_ms());
	free(h);
	if (m->verbose)
		log_info("sim: %s %s -> %d%s", r.method, log_escape(r.uri, strlen(r.uri), 200),
		    p->resp.status, p->resp.action == SIM_ACT_HANG ? " (hang)" :
		    p->resp.action == SIM_ACT_RESET ? " (reset)" : "");
	due_schedule(m);
	if (p->resp.action == SIM_ACT_HANG) {
		/* never answered; libevent frees it with its connection */
		sim_resp_free(&p->resp);
		free(p);
		return;
	}
	if (p->resp.action == SIM_ACT_REPLY && p->resp.delay_ms <= 0) {
		send_resp(req, &p->resp);
		sim_resp_free(&p->resp);
		free(p);
		return;
	}
	p->m = m;
	p->req = req;
	p->evcon = evcon;
	p->ev = evtimer_new(m->base, pending_cb, p);
	evhttp_connection_set_closecb(evcon, pending_close_cb, p);
	tv.tv_sec = (time_t)(p->resp.delay_ms / 1000);
	tv.tv_usec = (suseconds_t)(p->resp.delay_ms % 1000) * 1000;
	evtimer_add(p->ev, &tv);
}

/*
 * One TLS record per answer, as a front end like KSeF's sends it (nginx,
 * say, fills a 16 KB buffer before each SSL_write).  bufferevent_openssl
 * writes every chain of its output buffer with an SSL_write of its own,
 * and evhttp adds an answer's head and body as separate chains: two
 * records, so two more reads for the client.  The chains are joined
 * whenever something is added; the write itself comes later, when the
 * socket is writable.  Large answers (the "huge" fault) are left alone.
 */
static void
out_join_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
	if (info->n_added > 0 && evbuffer_get_length(b) <= 65536)
		evbuffer_pullup(b, -1);
}

static struct bufferevent *
bev_cb(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new(arg);
	struct bufferevent *bev;

	if (ssl == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev != NULL) {
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
		evbuffer_add_cb(bufferevent_get_output(bev), out_join_cb, NULL);
	}
	return bev;
}

static SSL_CTX *
tls_setup(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	unsigned long e;

	if (ctx == NULL)
		fatalx("sim: SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		e = ERR_get_error();
		fatalx("sim: TLS certificate %s / key %s: %s", cert, key,
		    ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unusable");
	}
	return ctx;
}

static void
sig_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct mainctx *m = arg;

	log_info("sim: signal %d, exiting", (int)sig);
	event_base_loopexit(m->base, NULL);
}

/* Bind --listen (HOST:PORT or [V6]:PORT) and return the port actually bound. */
static int
listen_bind(struct mainctx *m, char *host, size_t hostlen)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const char *l = m->listen, *colon = strrchr(l, ':');
	char *end;
	long port;

	if (colon == NULL)
		fatalx("sim: --listen %s: expected HOST:PORT", l);
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 0 || port > 65535 || colon == l)
		fatalx("sim: --listen %s: bad port", l);
	if (l[0] == '[' && colon[-1] == ']')
		snprintf(host, hostlen, "%.*s", (int)(colon - l - 2), l + 1);
	else
		snprintf(host, hostlen, "%.*s", (int)(colon - l), l);
	if ((bs = evhttp_bind_socket_with_handle(m->http, host, (ev_uint16_t)port)) == NULL)
		fatal("sim: cannot listen on %s", l);
	/*
	 * Accepted sockets inherit TCP_NODELAY from the listener (Linux): a
	 * reply's headers and body go out as separate TLS records, and Nagle
	 * plus the client's delayed ACK would hold the second one for 40 ms.
	 */
	{
		int one = 1;

		(void)setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP,
		    TCP_NODELAY, &one, sizeof(one));
	}
	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == -1)
		fatal("sim: getsockname");
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int
main(int argc, char **argv)
{
	struct mainctx m;
	char err[400], host[256], *origin;
	struct timeval tv;
	int64_t iv;
	int c, idx, port, rc = 2;

	memset(&m, 0, sizeof(m));
	log_init("ksef-sim", 1, LOG_LVL_INFO);
	sim_conf_init(&m.conf);
	m.listen = xstrdup("127.0.0.1:0");
	m.max_body = 16 << 20;
	while ((c = getopt_long(argc, argv, "vh", longopts, &idx)) != -1) {
		if (c == 'h') {
			fputs(usage_text, stdout);
			rc = 0;
			goto out;
		}
		if (c == 'v') {
			m.verbose++;
			continue;
		}
		if (c != 0) {
			fputs(usage_text, stderr);
			goto out;
		}
		if (main_set(&m, longopts[idx].name, optarg, err, sizeof(err)) == -1) {
			fprintf(stderr, "ksef-sim: %s\n", err);
			goto out;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ksef-sim: unexpected argument \"%s\"\n", argv[optind]);
		goto out;
	}
	if ((m.tls_cert == NULL) != (m.tls_key == NULL)) {
		fprintf(stderr, "ksef-sim: --tls-cert and --tls-key go together\n");
		goto out;
	}
	if (m.verbose > 1)
		log_setlevel(LOG_LVL_DEBUG);
	signal(SIGPIPE, SIG_IGN);
	if ((m.sim = sim_new(&m.conf, time_now_ms(), err, sizeof(err))) == NULL) {
		fprintf(stderr, "ksef-sim: %s\n", err);
		rc = 1;
		goto out;
	}
	if ((m.base = event_base_new()) == NULL || (m.http = evhttp_new(m.base)) == NULL)
		fatalx("sim: libevent setup failed");
	evhttp_set_max_body_size(m.http, m.max_body * 4 + 65536);
	evhttp_set_allowed_methods(m.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
	    EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(m.http, request_cb, &m);
	if (m.tls_cert != NULL) {
		m.ssl = tls_setup(m.tls_cert, m.tls_key);
		evhttp_set_bevcb(m.http, bev_cb, m.ssl);
	}
	port = listen_bind(&m, host, sizeof(host));
	origin = xasprintf("%s://%s%s%s:%d", m.ssl ? "https" : "http",
	    strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
	sim_set_origin(m.sim, origin);
	m.due_ev = evtimer_new(m.base, due_cb, &m);
	due_schedule(&m);
	if ((iv = sim_snapshot_interval(m.sim)) > 0) {
		m.snap_ev = event_new(m.base, -1, EV_PERSIST, snap_cb, &m);
		tv.tv_sec = (time_t)(iv / 1000);
		tv.tv_usec = (suseconds_t)(iv % 1000) * 1000;
		event_add(m.snap_ev, &tv);
	}
	m.sig_int = evsignal_new(m.base, SIGINT, sig_cb, &m);
	m.sig_term = evsignal_new(m.base, SIGTERM, sig_cb, &m);
	evsignal_add(m.sig_int, NULL);
	evsignal_add(m.sig_term, NULL);
	printf("url=%s/v2\n", origin);
	fflush(stdout);
	log_info("sim: listening on %s/v2", origin);
	free(origin);

	event_base_dispatch(m.base);

	if (sim_snapshot(m.sim, 0, err, sizeof(err)) == -1)
		log_warnx("sim: snapshot: %s", err);
	evhttp_free(m.http);
	event_free(m.due_ev);
	if (m.snap_ev != NULL)
		event_free(m.snap_ev);
	event_free(m.sig_int);
	event_free(m.sig_term);
	sim_free(m.sim);
	if (m.ssl != NULL)
		SSL_CTX_free(m.ssl);
	event_base_free(m.base);
	rc = 0;
out:
	sim_conf_free(&m.conf);
	xmlCatalogCleanup();
	xmlCleanupParser();
	free(m.listen);
	free(m.tls_cert);
	free(m.tls_key);
	return rc;
}
