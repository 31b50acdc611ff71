/*
 * api.h: the intake and control API (libevent evhttp) on a Unix socket and,
 * optionally, a loopback TCP address that requires a bearer token.
 *
 *   POST /v1/invoices            XML body -> 201 / 200 / 409 / 422 / 413 / 503
 *   GET  /v1/invoices/{id}       one record
 *   GET  /v1/invoices/{id}/upo   the stored UPO (application/xml)
 *   POST /v1/invoices/{id}/retry re-queue a FAILED invoice
 *   POST /v1/invoices/{id}/hold  keep an invoice from being sent
 *   POST /v1/invoices/{id}/release  ... and let it go again
 *   POST /v1/reload              reload the config (as SIGHUP): 200 / 422
 *   GET  /v1/audit?since=SEQ|TIME&id=&limit=&wait=SECS  audit events as
 *                                JSON lines, paged (X-Audit-Next,
 *                                X-Audit-More); wait: long-poll (follow)
 *   GET  /v1/invoices?state=&nip=&limit=&after=   records in key order, paged
 *   GET  /v1/stats               the pipeline's counters
 *   POST /v1/reconcile[?since=MS] start a reconciliation run: 202 / 409
 *   GET  /v1/reconcile/last      the last run's summary (404 before one)
 *   GET  /v1/status              per context: states, ages, limits, breaker
 *   GET  /metrics                Prometheus text exposition format
 *   GET  /healthz                liveness
 *
 * Answers are JSON.  An answer that depends on a write is sent only after
 * the group holding that write committed.
 */
#ifndef KSEFD_API_H
#define KSEFD_API_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct event_base;
struct api;
struct store;
struct intake;

struct api_params {
	const char	*socket_path;	/* required */
	int		 socket_mode;	/* e.g. 0660 */
	const char	*listen;	/* "127.0.0.1:PORT", "[::1]:PORT" or NULL */
	const char	*token;		/* bearer token for TCP; required with listen */
	size_t		 max_body;	/* larger bodies get 413 */
};

/*
 * Start listening.  NULL with a message in err on failure (socket in use by
 * a live ksefd, bad address, no permission).  Caller frees with api_free().
 */
struct api *api_start(struct event_base *, const struct api_params *,
	    struct store *, struct intake *, char *err, size_t errlen);
/* Operations the API hands to other modules; any may be NULL. */
struct api_ops {
	/* Re-queue a FAILED invoice: 0, or -1 when it is not FAILED. */
	int	(*retry)(const unsigned char key[32], void *arg);
	/* GET /v1/stats: the pipeline's counters as a JSON object (new reference). */
	void	*(*stats)(void *arg);
	void	*arg;
	/* GET /metrics: append the exposition text to out. */
	void	(*metrics)(struct buf *out, void *arg);
	/* GET /v1/status: a JSON object (new reference). */
	void	*(*status)(void *arg);
	/* (Below arg: positional initialisers of the fields above stay valid.) */
	/* Hold (on) or release: 0; 1 no such invoice; 2 finished; -1 error. */
	int	(*hold)(const unsigned char key[32], int on, void *arg);
	/*
	 * POST /v1/reload: {"ok":true,"changed":[...],"restart":[...]} or
	 * {"ok":false,"errors":["FILE:LINE: ..."]} (new reference).
	 */
	void	*(*reload)(void *arg);
	/*
	 * POST /v1/reconcile: start a run (since_ms 0: from the last
	 * reconciled point): {"started":bool} (new reference).
	 */
	void	*(*reconcile)(int64_t since_ms, void *arg);
	/* GET /v1/reconcile/last: the summary (new reference), NULL if none. */
	void	*(*reconcile_last)(void *arg);
};
void	 api_set_ops(struct api *, const struct api_ops *);
/* Take a new bearer token and body limit (after a reload); listeners stay. */
void	 api_update(struct api *, const char *token, size_t max_body);
/* Stop accepting connections (shutdown); answers in progress still go out. */
void	 api_stop(struct api *);
/* The TCP port actually bound (listen with port 0), or 0. */
int	 api_tcp_port(const struct api *);
/* Stop, drop pending answers, remove the socket file, free. */
void	 api_free(struct api *);

#endif
