/*
 * alert.h: telling a person.  An alert has a kind, a subject (an invoice's
 * key in hex, a context's NIP, "database", ...) and a cause (what exactly
 * is wrong: a code and reason, a finding, an outage start).  It goes to
 * every configured sink: syslog at LOG_ALERT (alert.syslog), a command
 * that gets it as one JSON object on its standard input (alert.command,
 * killed after alert.command_timeout) and a webhook POST (alert.webhook,
 * retried with backoff).  Nothing here blocks the loop.
 *
 * Each (kind, subject) fires once per cause: the same cause again is
 * suppressed until alert.reminder has passed since it last fired; a
 * different cause fires at once.  The state is kept in memory and, with a
 * store, in its meta ("alert/KIND/SUBJECT" = "MS CAUSE"), so a restart
 * does not fire everything again.
 *
 * The JSON object: {"id": N, "time": ISO-8601, "kind": K, "subject": S,
 * "cause": C, "message": M, "reminder": bool, "host": H}.
 */
#ifndef KSEFD_ALERT_H
#define KSEFD_ALERT_H

#include <stdint.h>

struct alert;
struct conf;
struct event_base;
struct http;
struct store;

enum alert_kind {
	ALERT_REJECTED,		/* an invoice ended REJECTED */
	ALERT_FAILED,		/* an invoice ended FAILED */
	ALERT_STUCK,		/* an invoice is stuck in a state */
	ALERT_RECONCILE,	/* a reconciliation finding */
	ALERT_AUTH,		/* authentication of a context failed */
	ALERT_OUTAGE,		/* KSeF unavailable longer than alert.outage_after */
	ALERT_DB_FULL,		/* the database map is fuller than alert.db_full_percent */
	ALERT_KIND_COUNT
};

/*
 * Alerts for `base`, sending webhooks through `http` (borrowed; may be NULL
 * when there is no webhook).  With a store, its fullness is checked a
 * second after the start and then every minute.  Caller frees with
 * alert_free() before the transport.
 */
struct alert	*alert_new(struct event_base *, struct http *, struct store *,
		    const struct conf *);
/* Take new sinks, timeout and intervals (reload). */
void		 alert_update(struct alert *, const struct conf *);
/*
 * Raise an alert.  `message` is the human-readable line (untrusted parts
 * already fit for a log).  Returns 1 when it fired, 0 when suppressed as a
 * repeat of an unchanged cause.
 */
int		 alert_raise(struct alert *, enum alert_kind, const char *subject,
		    const char *cause, const char *message);
/* The same with the current time given (tests). */
int		 alert_raise_at(struct alert *, enum alert_kind,
		    const char *subject, const char *cause, const char *message,
		    int64_t now_ms);
/* The cause is gone (an outage ended, the database shrank): forget it. */
void		 alert_clear(struct alert *, enum alert_kind, const char *subject);
/*
 * KSeF availability for a subject (a context NIP, or "ksef"): while it is
 * down longer than alert.outage_after, one ALERT_OUTAGE per outage.
 */
void		 alert_outage_set(struct alert *, const char *subject, int down);
/* Check the database fullness now (the timer does it periodically). */
void		 alert_db_check(struct alert *);
/* Alert commands still running (tests, shutdown). */
unsigned	 alert_commands_running(const struct alert *);
const char	*alert_kind_name(enum alert_kind);
/* Kill running commands, cancel webhooks, free. */
void		 alert_free(struct alert *);

#endif
