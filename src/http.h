/*
 * http.h: the HTTP transport.  libcurl's multi interface driven by the
 * daemon's libevent loop: nothing here blocks, every request completes
 * through its callback from the loop.  Only http.c includes <curl/curl.h>.
 *
 * TLS always verifies the peer certificate and the host name (CA file
 * configurable, else the system store).  Plain http:// is refused unless the
 * host is a loopback address (127.0.0.0/8, ::1, localhost); a refused request
 * causes no network traffic at all.  Connections are kept and reused.
 *
 * libcurl is used with CURLOPT_NOSIGNAL, but writes to a socket the peer has
 * closed (inside OpenSSL) can still raise SIGPIPE: the daemon must ignore
 * SIGPIPE (signal(SIGPIPE, SIG_IGN)) before it creates the transport.
 *
 * Logging: failures at debug level; with TRACE_HTTP each request and
 * response line (URL without its query string, which may hold a presigned
 * signature), the header names, sizes and times.  Header values of
 * Authorization and bodies are never logged.
 */
#ifndef KSEFD_HTTP_H
#define KSEFD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct event_base;
struct http;
struct http_request;

enum http_method {
	HTTP_GET,
	HTTP_POST,
	HTTP_PUT,
	HTTP_DELETE
};

/* How a transfer ended; only HTTP_OUT_OK has an HTTP status. */
enum http_outcome {
	HTTP_OUT_OK,		/* a whole response arrived (any status) */
	HTTP_OUT_TIMEOUT,	/* connect or total timeout */
	HTTP_OUT_CONNECT,	/* no connection: DNS, refused, unreachable */
	HTTP_OUT_RECV,		/* reset, closed early, garbled response */
	HTTP_OUT_TLS,		/* handshake or certificate verification */
	HTTP_OUT_TOO_LARGE,	/* body over the cap; transfer aborted */
	HTTP_OUT_CANCELLED,	/* the transport was freed while in flight */
	HTTP_OUT_REFUSED,	/* refused locally (URL policy, bad header) */
	HTTP_OUT_ERROR		/* anything else */
};

/*
 * What the completion callback gets.  The strings are valid only during
 * the callback; the body may be taken with buf_release(&resp->body).
 */
struct http_response {
	enum http_outcome	 outcome;
	int			 sent;	/* request bytes left: the peer may have acted */
	long			 status;	/* 0 without a response */
	const char		*error;	/* "" when outcome is HTTP_OUT_OK */
	int64_t			 retry_after_s;	/* from now; -1 absent/invalid */
	const char		*content_type;	/* NULL when absent */
	const char		*meta_hash;	/* x-ms-meta-hash, NULL when absent */
	struct buf		 body;
	int64_t			 elapsed_ms;
};

struct http_options {
	const char	*ca_file;		/* NULL: the system store */
	int64_t		 connect_timeout_ms;	/* default per request; 0: 10 s */
	int64_t		 timeout_ms;		/* default total; 0: 60 s */
	size_t		 max_response;		/* default body cap; 0: 16 MiB */
	long		 max_host_connections;	/* 0: 8 */
};

/* A transport on `base`. Caller frees with http_free() while base exists. */
struct http	*http_new(struct event_base *base, const struct http_options *);
/*
 * Stop: every request still pending gets its callback once, with
 * HTTP_OUT_CANCELLED (a request started from such a callback gets it at
 * once), then the multi handle is cleaned up.  Not from inside a callback.
 */
void		 http_free(struct http *);
/* CA file for requests started from now on (reload); NULL: system store. */
void		 http_ca_file_set(struct http *, const char *);
/*
 * Connections to one host at most (reload); <= 0: the default, 8.  Over
 * HTTP/1.1 a request waits for a free connection, so this bounds the
 * requests really in flight to KSeF.
 */
void		 http_max_host_connections_set(struct http *, long);
/* Requests started and not yet completed. */
unsigned	 http_in_flight(const struct http *);

/* A request to start with http_request_start(); or free it unstarted. */
struct http_request *http_request_new(enum http_method, const char *url);
void		 http_request_free(struct http_request *);
/*
 * Add a header.  A name or value that could split the header (CR, LF, NUL,
 * or a bad name) makes the request fail with HTTP_OUT_REFUSED; the value
 * is never logged.  "Expect:" is always sent empty.
 */
void		 http_request_header_add(struct http_request *,
		    const char *name, const char *value);
/* Body that stays the caller's and must live until completion/cancel. */
void		 http_request_body_set(struct http_request *, const void *,
		    size_t);
/* Body the request owns and free()s. */
void		 http_request_body_take(struct http_request *, void *, size_t);
/* Per-request timeouts in ms; 0 keeps the transport's default. */
void		 http_request_timeouts_set(struct http_request *,
		    int64_t connect_ms, int64_t total_ms);
void		 http_request_max_response_set(struct http_request *, size_t);
/*
 * Start; the transport owns the request from now on.  The callback runs
 * exactly once, from the event loop and never from inside this call
 * (except while the transport is being freed), unless the request is
 * cancelled.  The request is freed after the callback returns.
 */
void		 http_request_start(struct http *, struct http_request *,
		    void (*cb)(struct http_response *, void *), void *arg);
/*
 * Cancel a started request: its transfer stops at once, its callback
 * never runs, the request is freed.  A no-op from its own callback.
 */
void		 http_request_cancel(struct http *, struct http_request *);

/*
 * Check a URL against the transport's policy: https, or http to a loopback
 * host.  -1 with a message in err otherwise.
 */
int		 http_url_check(const char *url, char *err, size_t errlen);
/*
 * Retry-After (delta-seconds, or an HTTP-date in any of RFC 9110's three
 * forms) as seconds from now_ms, at least 0; -1 when invalid.
 */
int64_t		 http_retry_after_parse(const char *value, int64_t now_ms);
const char	*http_outcome_name(enum http_outcome);
const char	*http_method_name(enum http_method);

#endif
