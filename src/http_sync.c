/* http_sync.c: the blocking libcurl easy client ksefctl uses to talk to ksefd's API. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "http_sync.h"
#include "log.h"
#include "util.h"

#define HTTP_SYNC_MAX_BODY	(64u * 1024 * 1024)	/* larger answers are an error */
#define HTTP_SYNC_CONNECT_S	10L
#define HTTP_SYNC_TIMEOUT_S	300L

struct http_sync {
	CURL		*curl;
	char		*socket_path;	/* NULL with base_url */
	char		*base_url;	/* NULL: http://localhost over the socket */
	char		*auth;		/* "Authorization: Bearer ..." or NULL */
	char		 errbuf[CURL_ERROR_SIZE];
	int		 overflow;	/* the answer hit HTTP_SYNC_MAX_BODY */
};

static int http_sync_users;

static size_t
http_sync_write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct http_sync_resp *resp = arg;
	size_t len = size * n;

	if (resp->body.len + len > HTTP_SYNC_MAX_BODY)
		return 0;
	buf_add(&resp->body, data, len);
	return len;
}

/* Options that stay the same for every request of this client. */
static void
http_sync_setup(struct http_sync *hs)
{
	CURL *c = hs->curl;

	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, hs->errbuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, HTTP_SYNC_CONNECT_S);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, HTTP_SYNC_TIMEOUT_S);
	/* The API is local: an http_proxy in the environment must not divert it. */
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
#else
	curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
	if (hs->socket_path != NULL)
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, hs->socket_path);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_sync_write_cb);
}

/* A client for a socket or a base URL.  Caller frees with http_sync_free(). */
struct http_sync *
http_sync_new(const char *socket_path, const char *base_url, const char *token)
{
	struct http_sync *hs;
	size_t n;

	if (http_sync_users++ == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		fatalx("http_sync: curl_global_init failed");
	hs = xcalloc(1, sizeof(*hs));
	if ((hs->curl = curl_easy_init()) == NULL)
		fatalx("http_sync: curl_easy_init failed");
	if (base_url != NULL) {
		hs->base_url = xstrdup(base_url);
		n = strlen(hs->base_url);
		while (n > 0 && hs->base_url[n - 1] == '/')
			hs->base_url[--n] = '\0';
	} else
		hs->socket_path = xstrdup(socket_path);
	if (token != NULL)
		hs->auth = xasprintf("Authorization: Bearer %s", token);
	http_sync_setup(hs);
	return hs;
}

/* The reason a request failed, in words a user can act on. */
static void
http_sync_error(struct http_sync *hs, CURLcode rc, char *err, size_t errlen)
{
	long oserr = 0;

	if (hs->overflow) {
		snprintf(err, errlen, "the answer is larger than %u bytes",
		    HTTP_SYNC_MAX_BODY);
		return;
	}
	curl_easy_getinfo(hs->curl, CURLINFO_OS_ERRNO, &oserr);
	if (rc == CURLE_COULDNT_CONNECT && oserr != 0)
		snprintf(err, errlen, "%s", strerror((int)oserr));
	else if (hs->errbuf[0] != '\0')
		snprintf(err, errlen, "%s", hs->errbuf);
	else
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
}

/* Free a header list that may hold the bearer token, wiping it first. */
static void
http_sync_headers_free(struct curl_slist *h)
{
	struct curl_slist *p;

	for (p = h; p != NULL; p = p->next)
		explicit_wipe(p->data, strlen(p->data));
	curl_slist_free_all(h);
}

/* Send one request and wait for its answer.  Caller frees resp. */
int
http_sync_request(struct http_sync *hs, const char *method, const char *path,
    const char *content_type, const void *body, size_t len,
    struct http_sync_resp *resp, char *err, size_t errlen)
{
	CURL *c = hs->curl;
	struct curl_slist *h = NULL;
	char *url, *ct = NULL;
	CURLcode rc;
	int ret = 0;

	memset(resp, 0, sizeof(*resp));
	buf_init(&resp->body);
	hs->errbuf[0] = '\0';
	hs->overflow = 0;
	url = xasprintf("%s%s", hs->base_url ? hs->base_url : "http://localhost",
	    path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	/* evhttp answers at once; waiting for "100 Continue" only adds delay. */
	h = curl_slist_append(h, "Expect:");
	h = curl_slist_append(h, "Accept: application/json");
	if (content_type != NULL) {
		ct = xasprintf("Content-Type: %s", content_type);
		h = curl_slist_append(h, ct);
	}
	if (hs->auth != NULL)
		h = curl_slist_append(h, hs->auth);
	if (h == NULL)
		fatalx("http_sync: out of memory");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
	if (strcmp(method, "GET") == 0)
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	else {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)(body ? len : 0));
		if (strcmp(method, "POST") != 0)
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
	curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
	rc = curl_easy_perform(c);
	/* The write callback refuses only an oversized answer. */
	if (rc == CURLE_WRITE_ERROR)
		hs->overflow = 1;
	if (rc != CURLE_OK) {
		http_sync_error(hs, rc, err, errlen);
		buf_free(&resp->body);
		ret = -1;
	} else
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	http_sync_headers_free(h);
	free(ct);
	free(url);
	return ret;
}

void
http_sync_resp_free(struct http_sync_resp *resp)
{
	buf_free(&resp->body);
}

void
http_sync_free(struct http_sync *hs)
{
	if (hs == NULL)
		return;
	curl_easy_cleanup(hs->curl);
	if (hs->auth != NULL) {
		explicit_wipe(hs->auth, strlen(hs->auth));
		free(hs->auth);
	}
	free(hs->socket_path);
	free(hs->base_url);
	free(hs);
	if (--http_sync_users == 0)
		curl_global_cleanup();
}
