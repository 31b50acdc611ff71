/* latarnia.c: poll KSeF's availability service on a timer and report changes. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "http.h"
#include "latarnia.h"
#include "log.h"
#include "util.h"

#define LATARNIA_TIMEOUT_MS	10000		/* one status request */
#define LATARNIA_MAX_BODY	(64 * 1024)	/* status answers are small */

struct latarnia {
	struct event_base	*base;
	struct http		*http;
	struct event		*ev;
	struct http_request	*req;		/* the poll in flight, or NULL */
	char			*url;		/* NULL: off */
	int64_t			 interval_ms, outage_ms;
	struct latarnia_info	 info;
	latarnia_cb		 cb;
	void			*arg;
};

static const char *const latarnia_names[] = {
	"off", "unknown", "AVAILABLE", "MAINTENANCE", "FAILURE", "TOTAL_FAILURE",
};

const char *
latarnia_status_name(enum latarnia_status st)
{
	if ((unsigned)st >= nitems(latarnia_names))
		return "?";
	return latarnia_names[st];
}

int
latarnia_is_outage(enum latarnia_status st)
{
	return st == LATARNIA_MAINTENANCE || st == LATARNIA_FAILURE ||
	    st == LATARNIA_TOTAL_FAILURE;
}

/* Record a status; tell the callback when it changed. */
static void
latarnia_set(struct latarnia *l, enum latarnia_status st)
{
	enum latarnia_status before = l->info.status;

	if (st == before)
		return;
	l->info.status = st;
	l->info.since_ms = time_now_ms();
	log_info("latarnia: KSeF status %s (was %s)", latarnia_status_name(st),
	    latarnia_status_name(before));
	if (l->cb != NULL)
		l->cb(st, before, l->arg);
}

static void
latarnia_schedule(struct latarnia *l)
{
	int64_t ms = latarnia_is_outage(l->info.status) ? l->outage_ms :
	    l->interval_ms;
	struct timeval tv;

	if (l->url == NULL)
		return;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(l->ev, &tv);
}

/* The status out of an answer; UNKNOWN (with why in err) when it has none. */
static enum latarnia_status
latarnia_parse(const struct http_response *r, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j;
	const char *s;
	enum latarnia_status st = LATARNIA_UNKNOWN;
	size_t i;

	if (r->outcome != HTTP_OUT_OK) {
		snprintf(err, errlen, "%s: %s", http_outcome_name(r->outcome),
		    r->error);
		return st;
	}
	if (r->status != 200) {
		snprintf(err, errlen, "HTTP status %ld", r->status);
		return st;
	}
	if ((j = json_loadb(r->body.data ? (const char *)r->body.data : "",
	    r->body.len, 0, &je)) == NULL) {
		snprintf(err, errlen, "not JSON: line %d: %s", je.line, je.text);
		return st;
	}
	if ((s = json_string_value(json_object_get(j, "status"))) == NULL)
		snprintf(err, errlen, "no \"status\" string");
	else {
		for (i = LATARNIA_AVAILABLE; i < nitems(latarnia_names); i++)
			if (strcmp(s, latarnia_names[i]) == 0)
				st = (enum latarnia_status)i;
		if (st == LATARNIA_UNKNOWN)
			snprintf(err, errlen, "unknown status \"%s\" (expected "
			    "AVAILABLE, MAINTENANCE, FAILURE or TOTAL_FAILURE)",
			    log_escape(s, strlen(s), 40));
	}
	json_decref(j);
	return st;
}

static void
latarnia_done_cb(struct http_response *r, void *arg)
{
	struct latarnia *l = arg;
	enum latarnia_status st;
	char err[300];

	l->req = NULL;
	if (r->outcome == HTTP_OUT_CANCELLED)
		return;
	l->info.polls++;
	err[0] = '\0';
	if ((st = latarnia_parse(r, err, sizeof(err))) == LATARNIA_UNKNOWN) {
		l->info.errors++;
		if (l->info.status != LATARNIA_UNKNOWN)
			log_warnx("latarnia: %s/status: %s", l->url, err);
		else
			log_debug("latarnia: %s/status: %s", l->url, err);
	}
	latarnia_set(l, st);
	latarnia_schedule(l);
}

/* Timer: ask once. */
static void
latarnia_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct latarnia *l = arg;
	struct http_request *req;
	char *url;

	if (l->url == NULL || l->req != NULL)
		return;
	url = xasprintf("%s/status", l->url);
	req = http_request_new(HTTP_GET, url);
	free(url);
	http_request_header_add(req, "Accept", "application/json");
	http_request_timeouts_set(req, 0, LATARNIA_TIMEOUT_MS);
	http_request_max_response_set(req, LATARNIA_MAX_BODY);
	l->req = req;
	http_request_start(l->http, req, latarnia_done_cb, l);
}

struct latarnia *
latarnia_new(struct event_base *base, struct http *http, latarnia_cb cb,
    void *arg)
{
	struct latarnia *l = xcalloc(1, sizeof(*l));

	l->base = base;
	l->http = http;
	l->cb = cb;
	l->arg = arg;
	if ((l->ev = evtimer_new(base, latarnia_poll_cb, l)) == NULL)
		fatalx("latarnia: cannot create a timer");
	return l;
}

void
latarnia_configure(struct latarnia *l, const char *url, int64_t interval_ms,
    int64_t outage_ms)
{
	struct timeval now = { 0, 0 };
	size_t n;

	l->interval_ms = interval_ms > 0 ? interval_ms : 1;
	l->outage_ms = outage_ms > 0 ? outage_ms : l->interval_ms;
	if (url != NULL && l->url != NULL && strcmp(url, l->url) == 0)
		return;		/* same service: the new intervals apply next time */
	if (l->req != NULL) {
		http_request_cancel(l->http, l->req);
		l->req = NULL;
	}
	evtimer_del(l->ev);
	free(l->url);
	l->url = NULL;
	if (url == NULL) {
		latarnia_set(l, LATARNIA_OFF);
		return;
	}
	l->url = xstrdup(url);
	n = strlen(l->url);
	while (n > 0 && l->url[n - 1] == '/')
		l->url[--n] = '\0';	/* "URL/" + "/status" */
	latarnia_set(l, LATARNIA_UNKNOWN);
	evtimer_add(l->ev, &now);
}

void
latarnia_info_get(const struct latarnia *l, struct latarnia_info *out)
{
	*out = l->info;
}

void
latarnia_free(struct latarnia *l)
{
	if (l == NULL)
		return;
	if (l->req != NULL)
		http_request_cancel(l->http, l->req);
	event_free(l->ev);
	free(l->url);
	free(l);
}
