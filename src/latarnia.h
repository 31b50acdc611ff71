/*
 * latarnia.h: KSeF's availability service ("Latarnia", API.md 16), polled
 * on a timer through the transport.  GET {url}/status answers
 * {"status": AVAILABLE|MAINTENANCE|FAILURE|TOTAL_FAILURE, "messages": [...]}.
 * Every change of the status is handed to a callback; an unreachable or
 * garbled service is UNKNOWN (it says nothing about KSeF itself).  While
 * KSeF is out the service is polled more often, to see the end soon.
 */
#ifndef KSEFD_LATARNIA_H
#define KSEFD_LATARNIA_H

#include <stdint.h>

struct event_base;
struct http;
struct latarnia;

enum latarnia_status {
	LATARNIA_OFF = 0,	/* no URL configured */
	LATARNIA_UNKNOWN,	/* not asked yet, unreachable or garbled */
	LATARNIA_AVAILABLE,
	LATARNIA_MAINTENANCE,
	LATARNIA_FAILURE,
	LATARNIA_TOTAL_FAILURE,
};

/* What the status endpoint said last, for status output and metrics. */
struct latarnia_info {
	enum latarnia_status status;
	int64_t		 since_ms;	/* wall clock of the last change */
	uint64_t	 polls;		/* answers and failures so far */
	uint64_t	 errors;	/* of those, unreachable or garbled */
};

typedef void (*latarnia_cb)(enum latarnia_status now,
	    enum latarnia_status before, void *arg);

/* A poller on base using the transport (borrowed); off until configured.  Caller frees. */
struct latarnia	*latarnia_new(struct event_base *, struct http *, latarnia_cb,
		    void *arg);
/*
 * Poll url/status (NULL: off) every interval_ms, and every outage_ms while
 * the status is MAINTENANCE or worse.  Also on reload; a new URL starts
 * from UNKNOWN and polls at once.
 */
void		 latarnia_configure(struct latarnia *, const char *url,
		    int64_t interval_ms, int64_t outage_ms);
void		 latarnia_info_get(const struct latarnia *, struct latarnia_info *);
/* "AVAILABLE" ...; "off", "unknown". */
const char	*latarnia_status_name(enum latarnia_status);
/* MAINTENANCE, FAILURE or TOTAL_FAILURE: sending should pause. */
int		 latarnia_is_outage(enum latarnia_status);
/* Cancel a poll in flight and free; before the transport is freed. */
void		 latarnia_free(struct latarnia *);

#endif
