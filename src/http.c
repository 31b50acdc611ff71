/*
 * http.c: libcurl multi on libevent, in the way of curl's multi-socket
 * examples.  One one-shot timer follows CURLMOPT_TIMERFUNCTION; each socket
 * curl cares about gets an event, attached with curl_multi_assign().  After
 * every curl_multi_socket_action() the message queue is drained: that is
 * where a transfer finishes and its easy handle leaves the multi handle
 * (a cancel, or freeing the transport, are the only other places).
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "http.h"
#include "log.h"
#include "util.h"

#define HTTP_CONNECT_TIMEOUT_MS	10000
#define HTTP_TIMEOUT_MS		60000
#define HTTP_MAX_RESPONSE	(16u * 1024 * 1024)
#define HTTP_MAX_HOST_CONNS	8
#define HTTP_HOSTS		4	/* KSeF, its UPO storage, Latarnia, a webhook */
#define HTTP_POOL_MAX		32	/* idle easy handles kept for reuse */
#define HTTP_USER_AGENT		"ksefd/" PACKAGE_VERSION

enum http_req_state {
	HTTP_REQ_NEW,
	HTTP_REQ_DEFERRED,	/* refused; callback on the next loop pass */
	HTTP_REQ_ACTIVE,	/* in the multi handle */
	HTTP_REQ_DONE		/* its callback is running */
};

struct http_request {
	TAILQ_ENTRY(http_request) entry;
	enum http_req_state	 state;
	enum http_method	 method;
	char			*url;
	struct curl_slist	*headers;
	int			 has_ctype;
	int			 bad;		/* refuse with errbuf */
	const void		*body;
	size_t			 body_len;
	size_t			 body_pos;	/* handed to curl so far */
	int			 rewind_refused;
	void			*body_owned;
	int64_t			 connect_ms;
	int64_t			 total_ms;
	size_t			 max_response;
	CURL			*easy;
	void			(*cb)(struct http_response *, void *);
	void			*arg;
	int64_t			 start_mono;
	int			 too_large;
	char			*content_type;
	char			*meta_hash;
	struct http_response	 resp;
	char			 errbuf[CURL_ERROR_SIZE];
};

TAILQ_HEAD(http_reqs, http_request);

/*
 * A socket of curl's; freed only when no callback of ours runs.  Between
 * two transfers on a kept-alive connection curl stops watching it
 * (CURL_POLL_REMOVE): the socket is parked, its read event left in place,
 * so the next transfer costs no epoll_ctl pair.  A parked socket that
 * becomes readable (the server closed it) is no longer watched; curl finds
 * that out when it next uses the connection.  It goes when curl closes it
 * (CURLOPT_CLOSESOCKETFUNCTION).
 *
 * Only connection sockets, which curl opens through http_open_cb() and
 * closes through http_close_cb(), are parked.  curl also asks us to watch
 * sockets it closes by itself, without the callback: the socketpair of its
 * resolver thread, for every host name that is not an address.  Such a
 * socket's event goes at CURL_POLL_REMOVE; left in place, it would outlive
 * its descriptor, and libevent, which counts interest per descriptor
 * number, would never watch the next file to get that number (an API
 * client, a KSeF connection): it would hang.
 */
struct http_sock {
	LIST_ENTRY(http_sock)	 entry;
	struct http		*h;
	curl_socket_t		 fd;
	int			 dead;
	int			 parked;
	struct event		*ev;
};

struct http {
	struct event_base	*base;
	CURLM			*multi;
	struct event		*timer;
	struct event		*defer;
	struct http_reqs	 active;
	struct http_reqs	 deferred;
	unsigned		 n_active, n_deferred;
	LIST_HEAD(, http_sock)	 socks;
	struct http_sock	**byfd;		/* live sockets by descriptor */
	unsigned char		*conn;		/* by descriptor: opened by http_open_cb() */
	size_t			 nbyfd;		/* the room in both */
	int			 depth;		/* nesting of our entry points */
	unsigned		 ndead;		/* sockets http_leave() has to free */
	int			 closing;
	char			*ca_file;
	int64_t			 connect_ms;
	int64_t			 total_ms;
	size_t			 max_response;
	CURL			*pool[HTTP_POOL_MAX];
	int			 npool;
};

static int http_global_refs;

static void	http_request_finish(struct http *, struct http_request *,
		    enum http_outcome);

const char *
http_outcome_name(enum http_outcome o)
{
	static const char *const names[] = {
		"ok", "timeout", "connect failed", "receive failed",
		"TLS error", "response too large", "cancelled", "refused",
		"error"
	};

	return (unsigned)o < nitems(names) ? names[o] : "?";
}

const char *
http_method_name(enum http_method m)
{
	static const char *const names[] = { "GET", "POST", "PUT", "DELETE" };

	return (unsigned)m < nitems(names) ? names[m] : "?";
}

/* Free the sockets curl has let go of, once no callback of ours runs. */
static void
http_leave(struct http *h)
{
	struct http_sock *s, *next;

	if (--h->depth > 0 || h->ndead == 0)
		return;
	h->ndead = 0;
	for (s = LIST_FIRST(&h->socks); s != NULL; s = next) {
		next = LIST_NEXT(s, entry);
		if (s->dead) {
			LIST_REMOVE(s, entry);
			event_free(s->ev);
			free(s);
		}
	}
}

/* Drain the message queue: the place transfers finish. */
static void
http_drain(struct http *h)
{
	struct http_request *req;
	CURLMsg *msg;
	CURLcode code;
	CURL *easy;
	char *priv;
	int left;
	enum http_outcome o;

	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		easy = msg->easy_handle;
		code = msg->data.result;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		req = (struct http_request *)priv;
		curl_multi_remove_handle(h->multi, easy);
		switch (code) {
		case CURLE_OK:
			o = HTTP_OUT_OK;
			break;
		case CURLE_OPERATION_TIMEDOUT:
			o = HTTP_OUT_TIMEOUT;
			break;
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_CONNECT:
			o = HTTP_OUT_CONNECT;
			break;
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_USE_SSL_FAILED:
			o = HTTP_OUT_TLS;
			break;
		case CURLE_FILESIZE_EXCEEDED:
			o = HTTP_OUT_TOO_LARGE;
			break;
		case CURLE_WRITE_ERROR:
			o = req->too_large ? HTTP_OUT_TOO_LARGE : HTTP_OUT_ERROR;
			break;
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_SEND_FAIL_REWIND:	/* http_seek_cb */
		case CURLE_GOT_NOTHING:
		case CURLE_PARTIAL_FILE:
		case CURLE_WEIRD_SERVER_REPLY:
		case CURLE_HTTP2:
		case CURLE_HTTP2_STREAM:
		case CURLE_BAD_CONTENT_ENCODING:
		case CURLE_UNSUPPORTED_PROTOCOL:	/* "HTTP/0.9" */
			o = HTTP_OUT_RECV;
			break;
		default:
			o = HTTP_OUT_ERROR;
		}
		if (o == HTTP_OUT_TOO_LARGE)
			snprintf(req->errbuf, sizeof(req->errbuf),
			    "response body over %zu bytes", req->max_response);
		else if (req->rewind_refused)
			snprintf(req->errbuf, sizeof(req->errbuf), "connection "
			    "lost after the request was sent (not resent)");
		else if (o != HTTP_OUT_OK && req->errbuf[0] == '\0')
			snprintf(req->errbuf, sizeof(req->errbuf), "%s",
			    curl_easy_strerror(code));
		http_request_finish(h, req, o);
	}
}

/* libevent: curl's timeout expired. */
static void
http_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	int running;

	h->depth++;
	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	http_drain(h);
	http_leave(h);
}

/* libevent: a socket curl watches is ready. */
static void
http_socket_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_sock *s = arg;
	struct http *h = s->h;
	int running, flags = 0;

	if (s->parked) {
		event_del(s->ev);	/* closed by the server, or junk */
		return;
	}
	if (what & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	h->depth++;
	curl_multi_socket_action(h->multi, fd, flags, &running);
	http_drain(h);
	http_leave(h);
}

/* CURLMOPT_TIMERFUNCTION: (re)arm or delete the one timer; never drive curl here. */
static int
http_curl_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct http *h = arg;
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(h->timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(h->timer, &tv);
	return 0;
}

/* Room for descriptor fd in byfd and conn. */
static void
http_fd_room(struct http *h, int fd)
{
	size_t n = h->nbyfd ? h->nbyfd : 64;

	if ((size_t)fd < h->nbyfd)
		return;
	while (n <= (size_t)fd)
		n *= 2;
	h->byfd = xrealloc(h->byfd, n * sizeof(*h->byfd));
	h->conn = xrealloc(h->conn, n);
	memset(h->byfd + h->nbyfd, 0, (n - h->nbyfd) * sizeof(*h->byfd));
	memset(h->conn + h->nbyfd, 0, n - h->nbyfd);
	h->nbyfd = n;
}

/* Stop watching a socket for good; freed by http_leave(). */
static void
http_sock_drop(struct http *h, struct http_sock *s)
{
	event_del(s->ev);
	if (s->fd >= 0 && (size_t)s->fd < h->nbyfd && h->byfd[s->fd] == s)
		h->byfd[s->fd] = NULL;
	s->dead = 1;
	h->ndead++;
}

/* CURLMOPT_SOCKETFUNCTION: watch, re-watch or forget a socket. */
static int
http_curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *arg,
    void *sockp)
{
	struct http *h = arg;
	struct http_sock *s = sockp;
	short ev = EV_PERSIST;

	if (what == CURL_POLL_REMOVE) {
		if (s == NULL)
			return 0;	/* a socket we never watched */
		curl_multi_assign(h->multi, fd, NULL);
		if (fd < 0 || (size_t)fd >= h->nbyfd || !h->conn[fd]) {
			/* Not a connection: curl closes it by itself. */
			http_sock_drop(h, s);
			return 0;
		}
		/* Parked: only a read event may stay (see struct http_sock). */
		s->parked = 1;
		if (event_get_events(s->ev) & EV_WRITE)
			event_del(s->ev);
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev |= EV_READ;
	if (what & CURL_POLL_OUT)
		ev |= EV_WRITE;
	if (s == NULL && fd >= 0 && (size_t)fd < h->nbyfd && h->byfd[fd] != NULL) {
		s = h->byfd[fd];	/* parked since its last transfer */
		s->parked = 0;
		curl_multi_assign(h->multi, fd, s);
	}
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->h = h;
		s->fd = fd;
		s->ev = event_new(h->base, fd, ev, http_socket_cb, s);
		if (s->ev == NULL)
			fatalx("http: event_new failed");
		LIST_INSERT_HEAD(&h->socks, s, entry);
		curl_multi_assign(h->multi, fd, s);
		if (fd >= 0) {
			http_fd_room(h, fd);
			h->byfd[fd] = s;
		}
	} else if (event_get_events(s->ev) == ev &&
	    event_pending(s->ev, EV_READ | EV_WRITE, NULL))
		return 0;	/* already watched for that: no epoll_ctl pair */
	else {
		event_del(s->ev);
		event_assign(s->ev, h->base, fd, ev, http_socket_cb, s);
	}
	if (event_add(s->ev, NULL) == -1)
		fatalx("http: cannot watch socket %d", (int)fd);
	return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: a connection's socket, parked between transfers. */
static curl_socket_t
http_open_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct http *h = arg;
	int fd;

	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKET_BAD;
	/* Close-on-exec: the alert command does not inherit KSeF connections. */
	if ((fd = socket(a->family, a->socktype | SOCK_CLOEXEC,
	    a->protocol)) == -1)
		return CURL_SOCKET_BAD;
	http_fd_room(h, fd);
	h->conn[fd] = 1;
	return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the socket goes, and its event with it. */
static int
http_close_cb(void *arg, curl_socket_t fd)
{
	struct http *h = arg;
	struct http_sock *s;

	if (fd >= 0 && (size_t)fd < h->nbyfd) {
		h->conn[fd] = 0;
		if ((s = h->byfd[fd]) != NULL)
			http_sock_drop(h, s);
	}
	return close(fd);
}

/* libevent: deliver the refusals of the last loop pass. */
static void
http_defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	struct http_request *req;

	h->depth++;
	while ((req = TAILQ_FIRST(&h->deferred)) != NULL)
		http_request_finish(h, req, HTTP_OUT_REFUSED);
	http_leave(h);
}

/* Multi handle with our socket and timer callbacks; curl initialised once. */
struct http *
http_new(struct event_base *base, const struct http_options *opt)
{
	struct http *h = xcalloc(1, sizeof(*h));

	if (http_global_refs++ == 0 &&
	    curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatalx("http: curl_global_init failed");
	h->base = base;
	TAILQ_INIT(&h->active);
	TAILQ_INIT(&h->deferred);
	LIST_INIT(&h->socks);
	h->ca_file = opt->ca_file ? xstrdup(opt->ca_file) : NULL;
	h->connect_ms = opt->connect_timeout_ms > 0 ?
	    opt->connect_timeout_ms : HTTP_CONNECT_TIMEOUT_MS;
	h->total_ms = opt->timeout_ms > 0 ? opt->timeout_ms : HTTP_TIMEOUT_MS;
	h->max_response = opt->max_response > 0 ?
	    opt->max_response : HTTP_MAX_RESPONSE;
	if ((h->timer = evtimer_new(base, http_timer_cb, h)) == NULL ||
	    (h->defer = evtimer_new(base, http_defer_cb, h)) == NULL)
		fatalx("http: cannot create timers");
	if ((h->multi = curl_multi_init()) == NULL)
		fatalx("http: curl_multi_init failed");
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION,
	    http_curl_socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_curl_timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	http_max_host_connections_set(h, opt->max_host_connections);
	return h;
}

/* Finish every request with a callback, then clean up while base exists. */
void
http_free(struct http *h)
{
	struct http_request *req;
	struct http_sock *s;

	if (h == NULL)
		return;
	h->closing = 1;
	h->depth++;
	while ((req = TAILQ_FIRST(&h->deferred)) != NULL)
		http_request_finish(h, req, HTTP_OUT_REFUSED);
	while ((req = TAILQ_FIRST(&h->active)) != NULL) {
		curl_multi_remove_handle(h->multi, req->easy);
		snprintf(req->errbuf, sizeof(req->errbuf),
		    "transport shut down");
		http_request_finish(h, req, HTTP_OUT_CANCELLED);
	}
	while (h->npool > 0)
		curl_easy_cleanup(h->pool[--h->npool]);
	curl_multi_cleanup(h->multi);
	/* Sockets curl closed without telling us, if any. */
	while ((s = LIST_FIRST(&h->socks)) != NULL) {
		LIST_REMOVE(s, entry);
		event_free(s->ev);
		free(s);
	}
	free(h->byfd);
	free(h->conn);
	event_free(h->timer);
	event_free(h->defer);
	free(h->ca_file);
	free(h);
	if (--http_global_refs == 0)
		curl_global_cleanup();
}

void
http_ca_file_set(struct http *h, const char *path)
{
	free(h->ca_file);
	h->ca_file = path ? xstrdup(path) : NULL;
}

/*
 * The cache must hold them all: by default curl keeps 4 connections per
 * transfer added, and ours are added and removed one request at a time, so
 * after a burst it closed most of them and the next burst paid a TLS
 * handshake per request (hundreds a second against the simulator).
 */
void
http_max_host_connections_set(struct http *h, long n)
{
	if (n <= 0)
		n = HTTP_MAX_HOST_CONNS;
	curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS,
	    n * HTTP_HOSTS + HTTP_HOSTS);
}

unsigned
http_in_flight(const struct http *h)
{
	return h->n_active + h->n_deferred;
}

struct http_request *
http_request_new(enum http_method m, const char *url)
{
	struct http_request *req = xcalloc(1, sizeof(*req));

	req->method = m;
	req->url = xstrdup(url);
	req->resp.retry_after_s = -1;
	buf_init(&req->resp.body);
	/* An empty Expect: stops curl from waiting for "100 Continue". */
	req->headers = curl_slist_append(NULL, "Expect:");
	if (req->headers == NULL)
		fatalx("http: out of memory");
	return req;
}

void
http_request_free(struct http_request *req)
{
	if (req == NULL)
		return;
	if (req->easy != NULL)
		curl_easy_cleanup(req->easy);
	curl_slist_free_all(req->headers);
	free(req->url);
	free(req->body_owned);
	free(req->content_type);
	free(req->meta_hash);
	buf_free(&req->resp.body);
	free(req);
}

/* A header name is an RFC 9110 token. */
static int
http_token_valid(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s)
		    == NULL)
			return 0;
	return 1;
}

/* Append "name: value"; refuse what could split the header block. */
void
http_request_header_add(struct http_request *req, const char *name,
    const char *value)
{
	struct curl_slist *l;
	char *line;

	if (!http_token_valid(name)) {
		snprintf(req->errbuf, sizeof(req->errbuf), "header name "
		    "\"%s\" is not a token", log_escape(name, strlen(name), 40));
		req->bad = 1;
		return;
	}
	if (strpbrk(value, "\r\n") != NULL) {
		snprintf(req->errbuf, sizeof(req->errbuf), "header %s: value "
		    "contains a line break", name);
		req->bad = 1;
		return;
	}
	if (strcasecmp(name, "Content-Type") == 0)
		req->has_ctype = 1;
	line = xasprintf("%s: %s", name, value);
	if ((l = curl_slist_append(req->headers, line)) == NULL)
		fatalx("http: out of memory");
	req->headers = l;
	explicit_wipe(line, strlen(line));
	free(line);
}

void
http_request_body_set(struct http_request *req, const void *p, size_t len)
{
	free(req->body_owned);
	req->body_owned = NULL;
	req->body = p;
	req->body_len = len;
}

void
http_request_body_take(struct http_request *req, void *p, size_t len)
{
	http_request_body_set(req, p, len);
	req->body_owned = p;
}

void
http_request_timeouts_set(struct http_request *req, int64_t connect_ms,
    int64_t total_ms)
{
	req->connect_ms = connect_ms;
	req->total_ms = total_ms;
}

void
http_request_max_response_set(struct http_request *req, size_t max)
{
	req->max_response = max;
}

/* Whether a URL's host is a loopback address. */
static int
http_host_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	char buf[INET6_ADDRSTRLEN];
	size_t n = strlen(host);

	if (strcasecmp(host, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (n > 2 && n - 2 < sizeof(buf) && host[0] == '[' &&
	    host[n - 1] == ']') {
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
		host = buf;
	}
	return inet_pton(AF_INET6, host, &a6) == 1 &&
	    memcmp(&a6, &in6addr_loopback, sizeof(a6)) == 0;
}

/* https anywhere; http only to 127/8, ::1 or localhost. */
int
http_url_check(const char *url, char *err, size_t errlen)
{
	CURLU *u;
	CURLUcode uc;
	char *scheme = NULL, *host = NULL;
	int rc = -1;

	if ((u = curl_url()) == NULL)
		fatalx("http: out of memory");
	if ((uc = curl_url_set(u, CURLUPART_URL, url, 0)) != CURLUE_OK) {
		snprintf(err, errlen, "URL \"%s\": %s",
		    log_escape(url, strlen(url), 80), curl_url_strerror(uc));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		snprintf(err, errlen, "URL \"%s\": no scheme or host",
		    log_escape(url, strlen(url), 80));
		goto out;
	}
	if (strcasecmp(scheme, "https") == 0)
		rc = 0;
	else if (strcasecmp(scheme, "http") != 0)
		snprintf(err, errlen, "URL \"%s\": scheme %s not allowed "
		    "(https, or http to a loopback host)",
		    log_escape(url, strcspn(url, "?#"), 80), scheme);
	else if (!http_host_loopback(host))
		snprintf(err, errlen, "URL \"%s\": plain http only to a "
		    "loopback host (127.0.0.0/8, ::1, localhost), not %s",
		    log_escape(url, strcspn(url, "?#"), 80),
		    log_escape(host, strlen(host), 64));
	else
		rc = 0;
 out:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return rc;
}

/* Delta-seconds, or one of the three HTTP-date forms relative to now_ms. */
int64_t
http_retry_after_parse(const char *v, int64_t now_ms)
{
	static const char *const fmts[] = {
		"%a, %d %b %Y %H:%M:%S GMT",	/* IMF-fixdate */
		"%A, %d-%b-%y %H:%M:%S GMT",	/* RFC 850 */
		"%a %b %d %H:%M:%S %Y",		/* asctime */
	};
	const char *p, *end;
	struct tm tm;
	int64_t n = 0, t;
	size_t i;

	while (*v == ' ' || *v == '\t')
		v++;
	for (end = v + strlen(v); end > v && (end[-1] == ' ' ||
	    end[-1] == '\t'); end--)
		;
	if (end == v)
		return -1;
	for (p = v; p < end && isdigit((unsigned char)*p); p++) {
		if (p - v >= 15)
			return -1;	/* more than 30 million years */
		n = n * 10 + (*p - '0');
	}
	if (p == end)
		return n;
	for (i = 0; i < nitems(fmts); i++) {
		memset(&tm, 0, sizeof(tm));
		p = strptime(v, fmts[i], &tm);
		if (p == NULL || p != end)
			continue;
		t = (int64_t)timegm(&tm) * 1000 - now_ms;
		return t <= 0 ? 0 : (t + 999) / 1000;
	}
	return -1;
}

/* Keep the response headers the callers need; a new status line resets them. */
static size_t
http_header_cb(char *data, size_t size, size_t n, void *arg)
{
	struct http_request *req = arg;
	size_t len = size * n, nlen;
	const char *colon, *v, *end = data + len;
	char *value;

	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		free(req->content_type);
		free(req->meta_hash);
		req->content_type = req->meta_hash = NULL;
		req->resp.retry_after_s = -1;
		return len;
	}
	if ((colon = memchr(data, ':', len)) == NULL)
		return len;
	nlen = (size_t)(colon - data);
	for (v = colon + 1; v < end && (*v == ' ' || *v == '\t'); v++)
		;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
	    end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (nlen == 11 && strncasecmp(data, "Retry-After", 11) == 0) {
		value = xstrndup(v, (size_t)(end - v));
		req->resp.retry_after_s = http_retry_after_parse(value,
		    time_now_ms());
		if (req->resp.retry_after_s < 0)
			log_debug("http: ignoring bad Retry-After \"%s\"",
			    log_escape(value, strlen(value), 64));
		free(value);
	} else if (nlen == 12 && strncasecmp(data, "Content-Type", 12) == 0) {
		free(req->content_type);
		req->content_type = xstrndup(v, (size_t)(end - v));
	} else if (nlen == 14 && strncasecmp(data, "x-ms-meta-hash", 14) == 0) {
		free(req->meta_hash);
		req->meta_hash = xstrndup(v, (size_t)(end - v));
	}
	return len;
}

/* Collect the body up to the cap; past it, abort the transfer. */
static size_t
http_write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct http_request *req = arg;
	size_t len = size * n;

	if (len > req->max_response - req->resp.body.len) {
		req->too_large = 1;
		return 0;
	}
	buf_add(&req->resp.body, data, len);
	return len;
}

/* Hand the request body to curl. */
static size_t
http_read_cb(char *dst, size_t size, size_t n, void *arg)
{
	struct http_request *req = arg;
	size_t len = size * n, left = req->body_len - req->body_pos;

	if (len > left)
		len = left;
	if (len > 0)
		memcpy(dst, (const char *)req->body + req->body_pos, len);
	req->body_pos += len;
	return len;
}

/*
 * Refuse to rewind a body of which anything went out.  curl would resend
 * the request by itself on a fresh connection when a reused one dies
 * before the answer; for a POST the peer may already have acted on (an
 * invoice send), that is a blind second send (DESIGN.md invariant 2).
 * The transfer fails instead, as sent: the caller resolves it.
 */
static int
http_seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct http_request *req = arg;

	if (origin == SEEK_SET && offset == 0 && req->body_pos == 0)
		return CURL_SEEKFUNC_OK;
	req->rewind_refused = 1;
	return CURL_SEEKFUNC_FAIL;
}

/*
 * A new TLS connection's OpenSSL context.  curl asks OpenSSL to free a
 * connection's read and write buffers whenever they run empty and to
 * allocate them again for the next record: a 17 KB malloc and free per
 * record, several per request, which also makes glibc consolidate its
 * small free chunks each time (measured: doc/performance.md).  The buffers
 * are kept instead: about 34 KB per connection, ksef.max_in_flight
 * connections at most.
 */
static CURLcode
http_sslctx_cb(CURL *e, void *sslctx, void *arg)
{
	(void)e;
	(void)arg;
	SSL_CTX_clear_mode((SSL_CTX *)sslctx, SSL_MODE_RELEASE_BUFFERS);
	return CURLE_OK;
}

/* Set every option of a transfer; -1 with errbuf filled when curl refuses one. */
static int
http_easy_setup(struct http *h, struct http_request *req)
{
	CURL *e = req->easy;
	CURLcode c = CURLE_OK;

#define SET(opt, val)	do { if (c == CURLE_OK) c = curl_easy_setopt(e, opt, val); } while (0)
	SET(CURLOPT_URL, req->url);
	SET(CURLOPT_PRIVATE, (char *)req);
	SET(CURLOPT_OPENSOCKETFUNCTION, http_open_cb);
	SET(CURLOPT_OPENSOCKETDATA, h);
	SET(CURLOPT_CLOSESOCKETFUNCTION, http_close_cb);
	SET(CURLOPT_CLOSESOCKETDATA, h);
	SET(CURLOPT_ERRORBUFFER, req->errbuf);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->ca_file != NULL)
		SET(CURLOPT_CAINFO, h->ca_file);
	SET(CURLOPT_USERAGENT, HTTP_USER_AGENT);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_PIPEWAIT, 1L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_ms);
	SET(CURLOPT_TIMEOUT_MS, (long)req->total_ms);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_response);
	SET(CURLOPT_WRITEFUNCTION, http_write_cb);
	SET(CURLOPT_WRITEDATA, req);
	SET(CURLOPT_HEADERFUNCTION, http_header_cb);
	SET(CURLOPT_HEADERDATA, req);
	if (req->body != NULL || req->method == HTTP_POST ||
	    req->method == HTTP_PUT) {
		req->body_pos = 0;
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		SET(CURLOPT_READFUNCTION, http_read_cb);
		SET(CURLOPT_READDATA, req);
		SET(CURLOPT_SEEKFUNCTION, http_seek_cb);
		SET(CURLOPT_SEEKDATA, req);
	} else
		SET(CURLOPT_HTTPGET, 1L);
	if (req->method == HTTP_PUT || req->method == HTTP_DELETE)
		SET(CURLOPT_CUSTOMREQUEST, http_method_name(req->method));
	SET(CURLOPT_HTTPHEADER, req->headers);
#undef SET
	/* Only where curl uses OpenSSL; elsewhere nothing to change. */
	(void)curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, http_sslctx_cb);
	if (c != CURLE_OK) {
		snprintf(req->errbuf, sizeof(req->errbuf), "curl option: %s",
		    curl_easy_strerror(c));
		return -1;
	}
	return 0;
}

/* Trace a request: URL without its query, header names, Authorization hidden. */
static void
http_trace_request(const struct http_request *req)
{
	const struct curl_slist *l;
	const char *colon;

	if (!(log_trace_get() & TRACE_HTTP))
		return;
	log_trace(TRACE_HTTP, "http: > %s %s (%zu bytes)",
	    http_method_name(req->method),
	    log_escape(req->url, strcspn(req->url, "?#"), 200), req->body_len);
	for (l = req->headers; l != NULL; l = l->next) {
		colon = strchr(l->data, ':');
		if (colon == NULL || strncasecmp(l->data, "Authorization:",
		    14) == 0)
			log_trace(TRACE_HTTP, "http: >   %.*s: (not logged)",
			    colon ? (int)(colon - l->data) : 0, l->data);
		else
			log_trace(TRACE_HTTP, "http: >   %s",
			    log_escape(l->data, strlen(l->data), 120));
	}
}

/* Check, set up and add to the multi handle; refusals go through the defer timer. */
void
http_request_start(struct http *h, struct http_request *req,
    void (*cb)(struct http_response *, void *), void *arg)
{
	struct timeval tv = { 0, 0 };
	CURLMcode mc;

	if (req->state != HTTP_REQ_NEW)
		fatalx("http: request started twice");
	req->cb = cb;
	req->arg = arg;
	req->start_mono = time_mono_ms();
	if (req->connect_ms <= 0)
		req->connect_ms = h->connect_ms;
	if (req->total_ms <= 0)
		req->total_ms = h->total_ms;
	if (req->max_response == 0)
		req->max_response = h->max_response;
	if (h->closing) {
		snprintf(req->errbuf, sizeof(req->errbuf),
		    "transport shut down");
		req->state = HTTP_REQ_DEFERRED;
		TAILQ_INSERT_TAIL(&h->deferred, req, entry);
		h->n_deferred++;
		http_request_finish(h, req, HTTP_OUT_CANCELLED);
		return;
	}
	h->depth++;
	http_trace_request(req);
	if (!req->bad && http_url_check(req->url, req->errbuf,
	    sizeof(req->errbuf)) == -1)
		req->bad = 1;
	if (!req->bad && req->body != NULL && !req->has_ctype)
		http_request_header_add(req, "Content-Type",
		    "application/octet-stream");
	if (!req->bad) {
		req->easy = h->npool > 0 ? h->pool[--h->npool] :
		    curl_easy_init();
		if (req->easy == NULL)
			fatalx("http: curl_easy_init failed");
		if (http_easy_setup(h, req) == -1)
			req->bad = 1;
		else if ((mc = curl_multi_add_handle(h->multi, req->easy)) !=
		    CURLM_OK) {
			snprintf(req->errbuf, sizeof(req->errbuf),
			    "curl_multi_add_handle: %s", curl_multi_strerror(mc));
			req->bad = 1;
		}
	}
	if (req->bad) {
		log_debug("http: %s %s refused: %s",
		    http_method_name(req->method),
		    log_escape(req->url, strcspn(req->url, "?#"), 200),
		    req->errbuf);
		req->state = HTTP_REQ_DEFERRED;
		TAILQ_INSERT_TAIL(&h->deferred, req, entry);
		h->n_deferred++;
		evtimer_add(h->defer, &tv);
	} else {
		req->state = HTTP_REQ_ACTIVE;
		TAILQ_INSERT_TAIL(&h->active, req, entry);
		h->n_active++;
	}
	http_leave(h);
}

/* Take a request off its list; hand its easy handle back to the pool. */
static void
http_request_detach(struct http *h, struct http_request *req)
{
	if (req->state == HTTP_REQ_ACTIVE) {
		TAILQ_REMOVE(&h->active, req, entry);
		h->n_active--;
	} else if (req->state == HTTP_REQ_DEFERRED) {
		TAILQ_REMOVE(&h->deferred, req, entry);
		h->n_deferred--;
	}
	req->state = HTTP_REQ_DONE;
	if (req->easy != NULL && h->npool < HTTP_POOL_MAX && !h->closing) {
		curl_easy_reset(req->easy);
		h->pool[h->npool++] = req->easy;
		req->easy = NULL;
	}
}

/* Remove the transfer now and free the request without a callback. */
void
http_request_cancel(struct http *h, struct http_request *req)
{
	if (req->state == HTTP_REQ_DONE || req->state == HTTP_REQ_NEW)
		return;
	h->depth++;
	if (req->state == HTTP_REQ_ACTIVE)
		curl_multi_remove_handle(h->multi, req->easy);
	log_trace(TRACE_HTTP, "http: cancelled %s %s",
	    http_method_name(req->method),
	    log_escape(req->url, strcspn(req->url, "?#"), 200));
	http_request_detach(h, req);
	http_request_free(req);
	http_leave(h);
}

/* Fill in the response, run the callback once, free the request. */
static void
http_request_finish(struct http *h, struct http_request *req,
    enum http_outcome o)
{
	struct http_response *r = &req->resp;
	long status = 0, reqsize = 0;

	if (req->easy != NULL && req->state == HTTP_REQ_ACTIVE) {
		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(req->easy, CURLINFO_REQUEST_SIZE, &reqsize);
	}
	http_request_detach(h, req);
	r->outcome = o;
	r->status = o == HTTP_OUT_OK ? status : 0;
	r->sent = reqsize > 0 || req->body_pos > 0;
	r->error = o == HTTP_OUT_OK ? "" : req->errbuf;
	r->content_type = req->content_type;
	r->meta_hash = req->meta_hash;
	r->elapsed_ms = time_mono_ms() - req->start_mono;
	if (o == HTTP_OUT_OK)
		log_trace(TRACE_HTTP, "http: < %ld %s %s (%zu bytes, %lld ms)",
		    r->status, http_method_name(req->method),
		    log_escape(req->url, strcspn(req->url, "?#"), 200),
		    r->body.len, (long long)r->elapsed_ms);
	else
		log_debug("http: %s %s: %s: %s (%lld ms%s)",
		    http_method_name(req->method),
		    log_escape(req->url, strcspn(req->url, "?#"), 200),
		    http_outcome_name(o), req->errbuf,
		    (long long)r->elapsed_ms, r->sent ? ", request sent" : "");
	req->cb(r, req->arg);
	http_request_free(req);
}
