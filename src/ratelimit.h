/*
 * ratelimit.h: the exact sliding-window limiter, one object per
 * (context, endpoint group).  KSeF counts the last 1 s, 60 s and 60 min at
 * once; a request may start only when every window has room.  Time is always
 * passed in by the caller (milliseconds, wall clock so that persisted state
 * survives a restart); nothing here reads a clock.
 */
#ifndef KSEFD_RATELIMIT_H
#define KSEFD_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct buf;

enum ratelimit_window {
	RL_WIN_SEC,
	RL_WIN_MIN,
	RL_WIN_HOUR,
	RL_NWIN
};

/* Endpoint groups, named as the `[limits]` keys of doc/config-keys.md. */
enum ratelimit_group {
	RL_GROUP_ONLINE_SESSION,
	RL_GROUP_INVOICE_SEND,
	RL_GROUP_BATCH_SESSION,
	RL_GROUP_INVOICE_STATUS,
	RL_GROUP_SESSION_LIST,
	RL_GROUP_SESSION_INVOICE_LIST,
	RL_GROUP_SESSION_MISC,
	RL_GROUP_INVOICE_METADATA,
	RL_GROUP_INVOICE_EXPORT,
	RL_GROUP_INVOICE_EXPORT_STATUS,
	RL_GROUP_INVOICE_DOWNLOAD,
	RL_GROUP_OTHER,
	RL_GROUP_PUBLIC,
	RL_NGROUPS
};

/*
 * Limits of one group: at most max[w] request starts in any window of
 * window_ms[w].  max[w] == 0 means that window is not limited.  The window
 * lengths are 1 s, 60 s and 3600 s in production; tests scale them down.
 */
struct ratelimit_limits {
	uint32_t	max[RL_NWIN];
	int64_t		window_ms[RL_NWIN];
};

/* Group name ("invoice_send") or NULL for an out-of-range value. */
const char	*ratelimit_group_name(int group);
/* Group by its config name; -1 when unknown. */
int		 ratelimit_group_parse(const char *name);
/* The official limits of a group (ksef/API.md section 10), real windows. */
void		 ratelimit_limits_default(int group, struct ratelimit_limits *);
/*
 * Parse a config value "PER_S PER_MIN PER_H" ("-" or 0 = not limited) into
 * the counts of `out`, leaving its window lengths alone.  -1 with a message
 * naming the field and the rule in err.
 */
int		 ratelimit_limits_parse(const char *value,
		    struct ratelimit_limits *out, char *err, size_t errlen);

struct ratelimit;

/* A limiter with no history. Caller frees with ratelimit_free(). */
struct ratelimit *ratelimit_new(const struct ratelimit_limits *);
void		 ratelimit_free(struct ratelimit *);
/* Change the limits live (reload, GET /rate-limits); history is kept. */
void		 ratelimit_limits_set(struct ratelimit *,
		    const struct ratelimit_limits *);
const struct ratelimit_limits *ratelimit_limits_get(const struct ratelimit *);

/* Earliest time >= now at which a request may start. */
int64_t		 ratelimit_next_allowed(const struct ratelimit *, int64_t now);
/* A request starts now (call only when next_allowed(now) <= now). */
void		 ratelimit_record(struct ratelimit *, int64_t now);
/*
 * Pause the group until t (a 429's Retry-After).  A later, smaller t never
 * shortens a pause; nothing caps it.
 */
void		 ratelimit_pause_until(struct ratelimit *, int64_t t);
int64_t		 ratelimit_paused_until(const struct ratelimit *);
/*
 * Room left in each window at `now`, for metrics: out[w] requests may still
 * start; -1 for a window that is not limited.
 */
void		 ratelimit_headroom(const struct ratelimit *, int64_t now,
		    int64_t out[RL_NWIN]);

/* Append the state (history and pause) to b, for the store to persist. */
void		 ratelimit_encode(const struct ratelimit *, struct buf *b);
/*
 * Replace the state with one from ratelimit_encode().  On bad input returns
 * -1 with a message in err and leaves the limiter unchanged.
 */
int		 ratelimit_decode(struct ratelimit *, const void *, size_t,
		    char *err, size_t errlen);

#endif
