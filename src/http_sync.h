/*
 * http_sync.h: a small blocking HTTP client (libcurl easy) for ksefctl.
 * It speaks to ksefd's API over its Unix socket, or over loopback TCP with
 * a bearer token, and reuses one connection across requests.  Blocking is
 * fine in a command-line tool and never used inside the daemon.
 */
#ifndef KSEFD_HTTP_SYNC_H
#define KSEFD_HTTP_SYNC_H

#include <stddef.h>

#include "util.h"

struct http_sync;

/* One answer: HTTP status and body (NUL-terminated past len). */
struct http_sync_resp {
	long		 status;
	struct buf	 body;
};

/*
 * A client for the Unix socket `socket_path`, or, when `base_url` is not
 * NULL, for that http:// URL with `Authorization: Bearer token` (token is
 * copied and wiped on free).  Caller frees with http_sync_free().
 */
struct http_sync *http_sync_new(const char *socket_path, const char *base_url,
	    const char *token);
/*
 * Send one request and wait for the whole answer.  `path` starts with "/";
 * `body` (with its content type) may be NULL.  0 with resp filled (any
 * HTTP status), or -1 when the server could not be reached or the
 * exchange broke, with the reason in err.  Caller frees resp with
 * http_sync_resp_free().
 */
int	 http_sync_request(struct http_sync *, const char *method,
	    const char *path, const char *content_type, const void *body,
	    size_t len, struct http_sync_resp *resp, char *err, size_t errlen);
void	 http_sync_resp_free(struct http_sync_resp *);
void	 http_sync_free(struct http_sync *);

#endif
