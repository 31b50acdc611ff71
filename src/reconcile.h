/*
 * reconcile.h: reconciliation of the local store with KSeF, on
 * reconcile.interval and on demand.
 *
 * Local checks: SUBMITTED or SENDING longer than reconcile.stuck_after
 * (stuck / in doubt), ACCEPTED that long without a UPO, QUEUED past
 * retry.max_age; each is handed back to the pipeline
 * (sched_invoice_recheck) and reported.
 *
 * Remote checks per context: the metadata query as seller over the window
 * since the last reconciled point (meta "reconcile/point/NIP", ms; at most
 * 90 days a query), page by page, within the invoice_metadata limits, set
 * against the store: orphans (in KSeF, unknown locally; kept in meta as
 * "reconcile/orphan/NIP/KSEFNUMBER" with their metadata as JSON), missing
 * (local ACCEPTED/DONE that KSeF does not list), mismatches (KSeF number or
 * hash differ).
 *
 * Every finding is an audit event (no state change: from = to = the
 * invoice's state; an orphan's has an all-zero key and ACCEPTED, as KSeF
 * holds it) and an alert.  Each run's summary (counts per finding,
 * windows, duration) is kept in meta "reconcile/last" as JSON.
 */
#ifndef KSEFD_RECONCILE_H
#define KSEFD_RECONCILE_H

#include <stdint.h>

struct conf;
struct event_base;
struct sched;
struct store;
struct reconcile;

/*
 * One finding: kind is "stuck", "in_doubt", "no_upo", "overdue", "orphan",
 * "missing" or "mismatch"; key NULL for an orphan; detail says what.
 */
typedef void (*reconcile_alert_cb)(const char *kind, const char *nip,
	    const unsigned char *key, const char *detail, void *arg);

/* Borrowed store, pipeline and config.  Caller frees with reconcile_free(). */
struct reconcile *reconcile_new(struct event_base *, struct store *,
	    struct sched *, const struct conf *);
/* New settings (reload): interval and threshold. */
void	 reconcile_update(struct reconcile *, const struct conf *);
void	 reconcile_alert_set(struct reconcile *, reconcile_alert_cb, void *);
/*
 * Start a run now; since_ms > 0 queries KSeF from then instead of from the
 * last reconciled point.  0 started, 1 a run is under way already.
 */
int	 reconcile_run(struct reconcile *, int64_t since_ms);
/* A run is under way. */
int	 reconcile_running(const struct reconcile *);
/* The last finished run's summary as JSON text, NULL if none.  Caller frees. */
char	*reconcile_last_json(struct reconcile *);
/* Cancel the timers and free (after the pipeline: queries in flight are gone). */
void	 reconcile_free(struct reconcile *);

#endif
