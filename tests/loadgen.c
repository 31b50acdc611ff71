/*
 * loadgen.c: POSTs generated invoices to ksefd's API over its Unix socket
 * with many concurrent keep-alive connections, and reports what came back.
 * Used by the intake tests (concurrency, exactly-once) and scripts/bench.
 *
 *   loadgen -s SOCKET -t TEMPLATE [-c CONNS] [-n TOTAL] [-d DISTINCT] [-p PREFIX]
 *
 * Invoice i carries P_2 = PREFIX/(i % DISTINCT), so TOTAL - DISTINCT of them
 * are repeats of earlier ones.  Prints one JSON line: counts per HTTP
 * status, seconds, rate, and latency percentiles in microseconds.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "util.h"

struct conn;

struct lg {
	struct event_base	*base;
	const char		*sock;
	const char		*tmpl;
	size_t			 tmpllen;
	const char		*p2a, *p2b;	/* where P_2's text starts and ends */
	const char		*prefix;
	long			 total, distinct, next, done;
	long			 status[600];
	long			 errors;
	int64_t			*lat;		/* microseconds per request */
	int64_t			 t0;
};

struct conn {
	struct lg		*lg;
	struct bufferevent	*bev;
	int64_t			 sent_us;
	long			 clen;		/* -1 while reading headers */
	int			 code;
};

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void conn_start(struct lg *);

/* Send the next request on this connection, or close it when all are sent. */
static void
conn_send(struct conn *c)
{
	struct lg *lg = c->lg;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char num[128];
	size_t blen;
	long i;

	if (lg->next >= lg->total) {
		bufferevent_free(c->bev);
		free(c);
		return;
	}
	i = lg->next++;
	snprintf(num, sizeof(num), "%s/%ld", lg->prefix, i % lg->distinct);
	blen = (size_t)(lg->p2a - lg->tmpl) + strlen(num) +
	    (lg->tmpllen - (size_t)(lg->p2b - lg->tmpl));
	evbuffer_add_printf(out, "POST /v1/invoices HTTP/1.1\r\nHost: ksefd\r\n"
	    "Content-Type: application/xml\r\nContent-Length: %zu\r\n\r\n", blen);
	evbuffer_add(out, lg->tmpl, (size_t)(lg->p2a - lg->tmpl));
	evbuffer_add(out, num, strlen(num));
	evbuffer_add(out, lg->p2b, lg->tmpllen - (size_t)(lg->p2b - lg->tmpl));
	c->sent_us = now_us();
	c->clen = -1;
	c->code = 0;
}

static void
conn_done_one(struct conn *c)
{
	struct lg *lg = c->lg;

	if (c->code > 0 && c->code < 600)
		lg->status[c->code]++;
	lg->lat[lg->done++] = now_us() - c->sent_us;
	if (lg->done == lg->total)
		event_base_loopbreak(lg->base);
	conn_send(c);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t n;

	for (;;) {
		if (c->clen < 0) {
			line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
			if (line == NULL)
				return;
			if (c->code == 0)
				sscanf(line, "HTTP/1.%*d %d", &c->code);
			else if (strncasecmp(line, "Content-Length:", 15) == 0)
				c->clen = -2 - atol(line + 15);	/* stash until headers end */
			else if (n == 0) {
				c->clen = c->clen <= -2 ? -2 - c->clen : 0;
			}
			free(line);
			continue;
		}
		if ((long)evbuffer_get_length(in) < c->clen)
			return;
		evbuffer_drain(in, (size_t)c->clen);
		conn_done_one(c);
		return;
	}
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct lg *lg = c->lg;

	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		/* Count the request lost with this connection, open another. */
		lg->errors++;
		lg->lat[lg->done++] = now_us() - c->sent_us;
		bufferevent_free(c->bev);
		free(c);
		if (lg->done == lg->total)
			event_base_loopbreak(lg->base);
		else if (lg->next < lg->total)
			conn_start(lg);
	}
}

static void
conn_start(struct lg *lg)
{
	struct sockaddr_un sun;
	struct conn *c = xcalloc(1, sizeof(*c));

	c->lg = lg;
	c->bev = bufferevent_socket_new(lg->base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", lg->sock);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sun,
	    sizeof(sun)) == -1) {
		fprintf(stderr, "loadgen: connect %s: %s\n", lg->sock,
		    strerror(errno));
		exit(3);
	}
	conn_send(c);
}

static int
cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char *argv[])
{
	struct lg lg;
	const char *tpath = NULL;
	long conns = 32, i;
	double secs;
	int ch, first = 1;

	memset(&lg, 0, sizeof(lg));
	lg.total = 1000;
	lg.prefix = "LG";
	while ((ch = getopt(argc, argv, "s:t:c:n:d:p:")) != -1) {
		switch (ch) {
		case 's': lg.sock = optarg; break;
		case 't': tpath = optarg; break;
		case 'c': conns = atol(optarg); break;
		case 'n': lg.total = atol(optarg); break;
		case 'd': lg.distinct = atol(optarg); break;
		case 'p': lg.prefix = optarg; break;
		default:
			fprintf(stderr, "usage: loadgen -s SOCKET -t TEMPLATE [-c CONNS] "
			    "[-n TOTAL] [-d DISTINCT] [-p PREFIX]\n");
			return 2;
		}
	}
	if (lg.sock == NULL || tpath == NULL || lg.total < 1 || conns < 1) {
		fprintf(stderr, "loadgen: -s and -t are required\n");
		return 2;
	}
	if (lg.distinct <= 0)
		lg.distinct = lg.total;
	if ((lg.tmpl = (char *)file_read(tpath, 64 << 20, &lg.tmpllen)) == NULL ||
	    (lg.p2a = strstr(lg.tmpl, "<P_2>")) == NULL ||
	    (lg.p2b = strstr(lg.tmpl, "</P_2>")) == NULL) {
		fprintf(stderr, "loadgen: %s: unreadable or without <P_2>\n", tpath);
		return 2;
	}
	lg.p2a += 5;
	lg.lat = xcalloc((size_t)lg.total, sizeof(int64_t));
	lg.base = event_base_new();
	lg.t0 = now_us();
	for (i = 0; i < conns && i < lg.total; i++)
		conn_start(&lg);
	event_base_dispatch(lg.base);
	secs = (double)(now_us() - lg.t0) / 1e6;
	qsort(lg.lat, (size_t)lg.done, sizeof(int64_t), cmp64);
	printf("{\"requests\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"rate\":%.1f,"
	    "\"p50_us\":%lld,\"p99_us\":%lld,\"status\":{", lg.done, lg.errors,
	    secs, (double)lg.done / secs,
	    (long long)(lg.done ? lg.lat[lg.done / 2] : 0),
	    (long long)(lg.done ? lg.lat[(lg.done * 99) / 100] : 0));
	for (i = 0; i < 600; i++)
		if (lg.status[i]) {
			printf("%s\"%ld\":%ld", first ? "" : ",", i, lg.status[i]);
			first = 0;
		}
	printf("}}\n");
	free(lg.lat);
	free((void *)lg.tmpl);
	event_base_free(lg.base);
	return lg.errors ? 1 : 0;
}
