/*
 * store.h: the LMDB store, with group commit and the audit trail.
 *
 * One environment, named databases inv, doc, upo, due, ident, audit, meta,
 * ids.  inv, doc and upo are keyed by arrival number; ids maps the
 * idempotency key to it.  Callers only ever see idempotency keys.
 *
 * Writes: every write made during one pass of the event loop joins one
 * write transaction (the "group"), begun on the first write and committed
 * (fsync'd) once at the end of the pass.  A caller that must not act before
 * its writes are durable -- answer 201, move a spool file, send to KSeF --
 * registers a callback with store_on_commit(); it runs after the group's
 * commit with STORE_COMMITTED, or with STORE_FAILED if the group could not
 * be committed, in which case none of the group's writes happened.
 *
 * Reads see the current group's pending writes.  A pending write may still
 * fail: act on it only from a commit callback.
 *
 * Return values: 0 success; 1 "not found" (gets) or "already there" (add);
 * -1 error, already logged.  A write error fails the whole group.
 */
#ifndef KSEFD_STORE_H
#define KSEFD_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "record.h"

struct event_base;
struct store;

#define STORE_SCHEMA_VERSION	2	/* 1: inv, doc, upo keyed by idempotency key */

/* Status passed to commit callbacks. */
#define STORE_COMMITTED		0
#define STORE_FAILED		(-1)

/* store_open() flags. */
#define STORE_F_NOSYNC		0x01	/* no fsync at commit: benchmarks only, not durable */

#define STORE_HIST_N		9

struct store_stats {
	uint64_t	 commits;	/* LMDB write transactions committed by groups */
	uint64_t	 failed;	/* groups that failed */
	uint64_t	 grows;		/* map size increases */
	size_t		 map_size;	/* bytes */
	size_t		 map_used;	/* bytes in use (last page) */
	int		 stale_readers;	/* readers of dead processes cleared at open */
	/* Group commit latency: bucket i counts commits of at most 100 us << 2i. */
	uint64_t	 commit_hist[STORE_HIST_N];	/* not cumulative; last: longer */
	uint64_t	 commit_us_sum;
};

/* One entry of the due index. */
struct store_due {
	int64_t		 due_ms;
	unsigned char	 key[INV_KEY_LEN];
};

/*
 * Open (creating if needed) the environment in directory `path` with an
 * initial map size (grown when full).  Clears stale readers, checks or
 * initialises the schema version.  NULL with a message in err on failure
 * (including a database written by a newer ksefd).
 */
struct store *store_open(struct event_base *, const char *path, size_t map_size,
	    int flags, char *err, size_t errlen);
/* Commit a pending group (running its callbacks) and close; before freeing the event base. */
void	 store_close(struct store *);
/*
 * Let groups grow under load: a group that begins less than `us` after the
 * previous commit ended is committed `us` after it, not at the end of its
 * loop pass (0, the default: always at the end of the pass).
 */
void	 store_commit_gap_set(struct store *, unsigned int us);
/* Commit the pending group now and run its callbacks; STORE_COMMITTED or STORE_FAILED. */
int	 store_flush(struct store *);
/* Run cb(status, arg) once the current group is committed (or has failed). */
void	 store_on_commit(struct store *, void (*cb)(int status, void *arg), void *arg);
void	 store_stats_get(struct store *, struct store_stats *);
/* Tests: make the next n group commits fail (abort instead of commit). */
void	 store_test_fail_commits(struct store *, int n);

/*
 * Invoices.  The state changes only through store_invoice_add() and
 * store_invoice_transition(), each of which appends the audit event in the
 * same transaction; store_invoice_update() refuses a state change.
 * Each write keeps the due index (next_due_ms) and the ident index in step.
 */
int	 store_invoice_get(struct store *, const unsigned char key[INV_KEY_LEN],
	    struct record_invoice *out);
/* A new invoice with its XML: audit event NONE -> inv->state.  1 if the key exists. */
int	 store_invoice_add(struct store *, const struct record_invoice *inv,
	    const void *xml, size_t xmllen, const char *detail);
/*
 * Move inv from inv->state (which must be the stored state) to `to`, writing
 * the whole record (callers change other fields along with the state) and
 * the audit event.  On success inv->state is `to`.
 */
int	 store_invoice_transition(struct store *, struct record_invoice *inv,
	    enum inv_state to, const char *detail);
/*
 * Two steps in one write: from inv->state through `via` to `to`.  The record
 * is written once, in state `to`; the audit trail gets both events, as if
 * the two transitions had been made one after the other.
 */
int	 store_invoice_transition_via(struct store *, struct record_invoice *inv,
	    enum inv_state via, const char *via_detail, enum inv_state to,
	    const char *detail);
/* Rewrite a stored invoice whose state does not change. */
int	 store_invoice_update(struct store *, const struct record_invoice *inv);
/* Set (0 clears) the invoice's due time and its due index entry. */
int	 store_invoice_set_due(struct store *, struct record_invoice *inv, int64_t due_ms);
/* Call cb for every invoice (in arrival order) until it returns non-zero.  cb must not write. */
int	 store_invoice_foreach(struct store *,
	    int (*cb)(const struct record_invoice *, void *), void *arg);
/* The same, from the invoice after `after` (NULL: the first); 1 if there is no such invoice. */
int	 store_invoice_foreach_after(struct store *, const unsigned char *after,
	    int (*cb)(const struct record_invoice *, void *), void *arg);

/* The invoice XML as received, and the UPO.  *data: caller frees (NUL-terminated). */
int	 store_doc_get(struct store *, const unsigned char key[INV_KEY_LEN],
	    unsigned char **data, size_t *len);
int	 store_upo_put(struct store *, const unsigned char key[INV_KEY_LEN],
	    const void *data, size_t len);
int	 store_upo_get(struct store *, const unsigned char key[INV_KEY_LEN],
	    unsigned char **data, size_t *len);

/* Due entries with due_ms <= upto_ms, earliest first, at most max; count or -1. */
int	 store_due_list(struct store *, int64_t upto_ms, struct store_due *out, int max);

/* The latest version's key for (seller NIP, RodzajFaktury, P_2). */
int	 store_ident_get(struct store *, const char *nip, const char *kind,
	    const char *number, unsigned char key[INV_KEY_LEN]);

/* Audit events with seq >= from_seq, in order, until cb returns non-zero.  cb must not write. */
int	 store_audit_foreach(struct store *, uint64_t from_seq,
	    int (*cb)(const struct record_audit *, void *), void *arg);
/*
 * Append an audit event without a state change (from = to = state), e.g. a
 * reconciliation finding; key all zeros when no local invoice is concerned.
 */
int	 store_audit_note(struct store *, const unsigned char key[INV_KEY_LEN],
	    enum inv_state state, const char *detail);
/* The sequence number the next event will get. */
uint64_t store_audit_next_seq(struct store *);

/*
 * Named meta values (tokens, sessions, limiter state, last reconcile ...).
 * Names in use: "schema_version" (the store's), "token/NIP",
 * "session/NIP/KIND", "limiter/NIP/GROUP".  *val: caller frees (NUL-terminated).
 */
int	 store_meta_get(struct store *, const char *name, unsigned char **val, size_t *len);
int	 store_meta_put(struct store *, const char *name, const void *val, size_t len);
int	 store_meta_del(struct store *, const char *name);

#endif
