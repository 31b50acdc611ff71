/*
 * metrics.h: GET /metrics (Prometheus text exposition format 0.0.4) and
 * GET /v1/status (the same state per context, as JSON for ksefctl status).
 *
 * Invoice counts per context and state come from one store scan at start,
 * then follow the audit trail: each scrape reads only the events appended
 * since the last one.  Everything else is read from the pipeline and the
 * store at scrape time (sched_ctx_foreach, store_stats_get).
 */
#ifndef KSEFD_METRICS_H
#define KSEFD_METRICS_H

struct buf;
struct latarnia;
struct metrics;
struct sched;
struct store;

/*
 * Count the stored invoices and the audit trail once.  Both are borrowed;
 * sched may be NULL (no pipeline).  Caller frees with metrics_free().
 */
struct metrics	*metrics_new(struct store *, struct sched *);
void		 metrics_free(struct metrics *);
/* Also show KSeF's availability (Latarnia) as polled by l (borrowed). */
void		 metrics_latarnia_set(struct metrics *, const struct latarnia *);
/* Append the exposition text to out. */
void		 metrics_render(struct metrics *, struct buf *out);
/* The status object (a jansson json_t *, new reference). */
void		*metrics_status(struct metrics *);

#endif
