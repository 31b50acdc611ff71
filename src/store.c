/*
 * store.c: LMDB environment, group commit, invoices, indexes, audit, meta.
 *
 * Group commit.  The first write of a loop pass begins a write transaction
 * and activates the commit event; every later write of the pass joins that
 * transaction; the commit event commits it and then runs the callbacks.
 *
 * Why an activated event at the default priority, not a lower one: libevent
 * runs only the highest-priority non-empty queue in each pass, so under
 * steady I/O a low-priority commit could starve and hold every callback back.
 * event_active() appends the commit behind all callbacks already active in
 * this pass (every ready socket and expired timer is activated before any
 * runs), which is exactly "the end of the iteration".  A callback activated
 * later in the same pass simply starts the next group.
 *
 * Under load, groups may grow (store_commit_gap_set(), which ksefd uses): a
 * group that starts less than the gap after the previous commit ended is
 * committed by a timer at that distance instead.  Every fsync then carries more writes
 * (measured with scripts/bench intake: 50 KB invoices 1,336 -> 1,840/s,
 * 570 -> 465 µs CPU each); an idle daemon still commits at the end of the
 * pass.  Nobody is answered before the commit either way.
 *
 * Map growth.  The group keeps a log of its low-level writes (database, key,
 * value or delete).  When LMDB says MDB_MAP_FULL, on a write or at commit,
 * the transaction is aborted, the map doubled, and the log replayed into a
 * new transaction; callers never notice.  Replaying our own log rather than
 * re-running callers' code keeps it correct whatever the callers did with
 * their in-memory state meanwhile.  The price is a copy of each value until
 * the commit, which is bounded by what one loop pass writes.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <lmdb.h>

#include "log.h"
#include "record.h"
#include "store.h"
#include "util.h"

enum { DB_INV, DB_DOC, DB_UPO, DB_DUE, DB_IDENT, DB_AUDIT, DB_META, DB_IDS, DB_COUNT };

static const char *const db_names[DB_COUNT] = {
	"inv", "doc", "upo", "due", "ident", "audit", "meta", "ids",
};

#define META_SCHEMA	"schema_version"
#define GROW_TRIES	16	/* doublings of the map one group may need */
#define DUE_KEY_LEN	(8 + INV_KEY_LEN)
/*
 * inv, doc and upo are keyed by the invoice's arrival number (8 bytes, big
 * endian), ids maps its idempotency key to that number.  Invoices that
 * arrive together are written together and move through the pipeline
 * together: keyed by number they share B-tree pages, where keyed by a hash
 * every write dirtied a page of its own (doc/performance.md, session 3).
 */
#define SEQ_LEN		8

/*
 * One write of the group, kept so the group can be replayed after growing
 * the map.  The group's writes lie end to end in one buffer (s->oplog,
 * reused from group to group), each padded to OP_ALIGN: no allocation per
 * write.
 */
struct store_op {
	uint32_t	 db;
	uint32_t	 del;
	size_t		 klen, vlen;
	unsigned char	 data[];	/* key, then value */
};
#define OP_ALIGN	8
#define OP_SIZE(klen, vlen) \
	((sizeof(struct store_op) + (klen) + (vlen) + OP_ALIGN - 1) & ~(size_t)(OP_ALIGN - 1))
#define OPLOG_KEEP	(4u << 20)	/* a larger log is freed after its group */

struct store_cb {
	void		(*cb)(int, void *);
	void		*arg;
};

struct store {
	MDB_env		*env;
	MDB_dbi		 dbi[DB_COUNT];
	struct event	*commit_ev;	/* NULL without an event base: store_flush() only */
	char		*path;
	size_t		 map_size;

	MDB_txn		*wtxn;		/* the group's write transaction */
	int		 pending;	/* a group is waiting for its commit */
	uint64_t	 last_commit_us;	/* when the last commit ended */
	uint64_t	 commit_gap_us;		/* store_commit_gap_set() */
	int		 failed;	/* the group failed; its writes are gone */
	struct buf	 oplog;		/* the group's writes (struct store_op) */
	size_t		 nops;		/* how many */
	struct store_cb	*cbs;		/* the group's commit callbacks */
	size_t		 ncbs, cbs_cap;

	MDB_txn		*rtxn;		/* read transaction when no group is open */
	int		 rdepth;
	int		 iterating;	/* inside a foreach callback: no writes */

	uint64_t	 seq_next;	/* next audit sequence number */
	uint64_t	 seq_committed;	/* seq_next as of the last commit */
	uint64_t	 inv_next;	/* arrival number of the next new invoice */
	uint64_t	 inv_committed;	/* inv_next as of the last commit */
	int		 fail_commits;	/* test hook */
	struct store_stats st;
};

static void
put_be64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = v & 0xff;
}

static uint64_t
get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void
errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static size_t
round_page(size_t n)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t p = pg > 0 ? (size_t)pg : 4096;

	if (n < 16 * p)
		n = 16 * p;
	return (n + p - 1) / p * p;
}

/*
 * Begin a transaction.  If another process (a second ksefd tool on the same
 * database) grew the map, adopt its size and try again.
 */
static int
store_txn_begin(struct store *s, unsigned int flags, MDB_txn **txn)
{
	MDB_envinfo info;
	int rc;

	if ((rc = mdb_txn_begin(s->env, NULL, flags, txn)) != MDB_MAP_RESIZED)
		return rc;
	if ((rc = mdb_env_set_mapsize(s->env, 0)) != 0)
		return rc;
	if (mdb_env_info(s->env, &info) == 0)
		s->map_size = info.me_mapsize;
	return mdb_txn_begin(s->env, NULL, flags, txn);
}

/* ---- opening ---- */

/* Double the map (no transaction may be open): 0 or an LMDB code. */
static int
store_map_double(struct store *s)
{
	size_t old = s->map_size;
	int rc;

	if (old > SIZE_MAX / 2)
		return MDB_MAP_FULL;
	if ((rc = mdb_env_set_mapsize(s->env, old * 2)) != 0)
		return rc;
	s->map_size = old * 2;
	s->st.grows++;
	log_info("store: database map full, grown from %zu to %zu bytes", old,
	    s->map_size);
	return 0;
}

struct mig_inv {
	int64_t		 received_ms;
	unsigned char	 key[INV_KEY_LEN];
};

static int
mig_cmp(const void *a, const void *b)
{
	const struct mig_inv *x = a, *y = b;

	if (x->received_ms != y->received_ms)
		return x->received_ms < y->received_ms ? -1 : 1;
	return memcmp(x->key, y->key, INV_KEY_LEN);
}

/* Move one value of db from the idempotency key to the arrival number. */
static int
mig_move(struct store *s, MDB_txn *txn, int db, const unsigned char *key,
    const unsigned char *seq)
{
	MDB_val k, v, nk, nv;
	void *copy;
	int rc;

	k.mv_data = (void *)key;
	k.mv_size = INV_KEY_LEN;
	if ((rc = mdb_get(txn, s->dbi[db], &k, &v)) != 0)
		return rc == MDB_NOTFOUND ? 0 : rc;
	copy = xmalloc(v.mv_size ? v.mv_size : 1);	/* v points into the map */
	memcpy(copy, v.mv_data, v.mv_size);
	nk.mv_data = (void *)seq;
	nk.mv_size = SEQ_LEN;
	nv.mv_data = copy;
	nv.mv_size = v.mv_size;
	if ((rc = mdb_del(txn, s->dbi[db], &k, NULL)) == 0)
		rc = mdb_put(txn, s->dbi[db], &nk, &nv, 0);
	free(copy);
	return rc;
}

/*
 * Schema 1 -> 2: inv, doc and upo keyed by arrival number (in the order of
 * received_ms), ids from idempotency key to number.  All in the caller's
 * transaction: a crash leaves schema 1 untouched.  An LMDB error code (e.g.
 * MDB_MAP_FULL, for the caller to grow the map and start again) or 0.
 */
static int
store_migrate_v1(struct store *s, MDB_txn *txn, char *err, size_t errlen)
{
	struct record_invoice inv;
	struct record_err rerr;
	struct mig_inv *all = NULL;
	size_t n = 0, cap = 0, i;
	char hk[17];
	unsigned char seq[SEQ_LEN];
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	if ((rc = mdb_cursor_open(txn, s->dbi[DB_INV], &c)) != 0)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		snprintf(hk, sizeof(hk), "?");
		if (k.mv_size != INV_KEY_LEN)
			snprintf(rerr.msg, sizeof(rerr.msg), "key of %zu bytes, "
			    "not %d", k.mv_size, INV_KEY_LEN);
		else
			record_key_short(k.mv_data, hk);
		if (k.mv_size != INV_KEY_LEN ||
		    record_invoice_decode(v.mv_data, v.mv_size, &inv, &rerr) == -1) {
			errf(err, errlen, "store: %s: schema 1 invoice record %s is "
			    "unreadable (%s); refusing to upgrade the database",
			    s->path, hk, rerr.msg);
			mdb_cursor_close(c);
			free(all);
			return -1;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			all = xrealloc(all, cap * sizeof(*all));
		}
		all[n].received_ms = inv.received_ms;
		memcpy(all[n].key, k.mv_data, INV_KEY_LEN);
		n++;
		record_invoice_free(&inv);
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND) {
		free(all);
		return rc;
	}
	log_info("store: %s: upgrading the database from schema 1 to 2 "
	    "(%zu invoices keyed by arrival)", s->path, n);
	if (n > 0)
		qsort(all, n, sizeof(*all), mig_cmp);
	for (i = 0, rc = 0; i < n && rc == 0; i++) {
		put_be64(seq, (uint64_t)i + 1);
		k.mv_data = all[i].key;
		k.mv_size = INV_KEY_LEN;
		v.mv_data = seq;
		v.mv_size = SEQ_LEN;
		if ((rc = mig_move(s, txn, DB_INV, all[i].key, seq)) == 0 &&
		    (rc = mig_move(s, txn, DB_DOC, all[i].key, seq)) == 0 &&
		    (rc = mig_move(s, txn, DB_UPO, all[i].key, seq)) == 0)
			rc = mdb_put(txn, s->dbi[DB_IDS], &k, &v, 0);
	}
	free(all);
	return rc;
}

/* One past the last 8-byte key of db (audit seq, arrival number); 1 when empty. */
static int
store_next_number(struct store *s, MDB_txn *txn, int db, uint64_t *next, char *err,
    size_t errlen)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	*next = 1;
	if ((rc = mdb_cursor_open(txn, s->dbi[db], &c)) != 0) {
		errf(err, errlen, "store: %s: %s", s->path, mdb_strerror(rc));
		return -1;
	}
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	mdb_cursor_close(c);
	if (rc == 0 && k.mv_size != 8) {
		errf(err, errlen, "store: %s: %s key of %zu bytes, not 8", s->path,
		    db_names[db], k.mv_size);
		return -1;
	}
	if (rc == 0)
		*next = get_be64(k.mv_data) + 1;
	else if (rc != MDB_NOTFOUND) {
		errf(err, errlen, "store: %s: %s: %s", s->path, db_names[db],
		    mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/*
 * Open the databases and check (or write) the schema version, upgrading an
 * older one; read the last audit seq and arrival number.  0, -1 (err set),
 * or MDB_MAP_FULL when an upgrade needs a larger map.
 */
static int
store_init_schema(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	MDB_val k, v;
	MDB_stat ms;
	unsigned long ver = 0;
	char vbuf[16];
	int rc, i;

	if ((rc = store_txn_begin(s, 0, &txn)) != 0) {
		errf(err, errlen, "store: %s: %s", s->path, mdb_strerror(rc));
		return -1;
	}
	for (i = 0; i < DB_COUNT; i++)
		if ((rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i])) != 0) {
			errf(err, errlen, "store: %s: database %s: %s", s->path,
			    db_names[i], mdb_strerror(rc));
			goto fail;
		}
	k.mv_data = (void *)META_SCHEMA;
	k.mv_size = strlen(META_SCHEMA);
	rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
	if (rc == MDB_NOTFOUND) {
		if ((rc = mdb_stat(txn, s->dbi[DB_INV], &ms)) == 0 && ms.ms_entries > 0) {
			errf(err, errlen, "store: %s holds invoices but no schema version; "
			    "refusing to open it", s->path);
			goto fail;
		}
		snprintf(vbuf, sizeof(vbuf), "%d", STORE_SCHEMA_VERSION);
		v.mv_data = vbuf;
		v.mv_size = strlen(vbuf);
		if ((rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0)) != 0) {
			errf(err, errlen, "store: %s: %s", s->path, mdb_strerror(rc));
			goto fail;
		}
		log_info("store: initialised a new database in %s (schema version %d)",
		    s->path, STORE_SCHEMA_VERSION);
	} else if (rc != 0) {
		errf(err, errlen, "store: %s: %s", s->path, mdb_strerror(rc));
		goto fail;
	} else {
		for (i = 0; i < (int)v.mv_size && v.mv_size <= 9; i++) {
			if (((char *)v.mv_data)[i] < '0' || ((char *)v.mv_data)[i] > '9')
				break;
			ver = ver * 10 + (((char *)v.mv_data)[i] - '0');
		}
		if (v.mv_size == 0 || v.mv_size > 9 || i != (int)v.mv_size || ver == 0) {
			errf(err, errlen, "store: %s: schema version \"%s\" is not a "
			    "positive number; refusing to open it", s->path,
			    log_escape(v.mv_data, v.mv_size, 16));
			goto fail;
		}
		if (ver > STORE_SCHEMA_VERSION) {
			errf(err, errlen, "store: %s was written by a newer ksefd (schema "
			    "version %lu; this ksefd supports up to %d); refusing to open it",
			    s->path, ver, STORE_SCHEMA_VERSION);
			goto fail;
		}
		if (ver == 1) {
			if ((rc = store_migrate_v1(s, txn, err, errlen)) == MDB_MAP_FULL) {
				mdb_txn_abort(txn);
				return MDB_MAP_FULL;
			}
			if (rc == 0) {
				snprintf(vbuf, sizeof(vbuf), "%d", STORE_SCHEMA_VERSION);
				v.mv_data = vbuf;
				v.mv_size = strlen(vbuf);
				rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0);
			}
			if (rc != 0) {
				if (rc != -1)
					errf(err, errlen, "store: %s: upgrading from schema 1: %s",
					    s->path, mdb_strerror(rc));
				goto fail;
			}
		}
	}
	if (store_next_number(s, txn, DB_AUDIT, &s->seq_next, err, errlen) == -1 ||
	    store_next_number(s, txn, DB_INV, &s->inv_next, err, errlen) == -1)
		goto fail;
	s->seq_committed = s->seq_next;
	s->inv_committed = s->inv_next;
	if ((rc = mdb_txn_commit(txn)) != 0) {
		if (rc == MDB_MAP_FULL)
			return MDB_MAP_FULL;
		errf(err, errlen, "store: %s: %s", s->path, mdb_strerror(rc));
		return -1;
	}
	return 0;
fail:
	mdb_txn_abort(txn);
	return -1;
}

static void store_commit_cb(evutil_socket_t, short, void *);

struct store *
store_open(struct event_base *base, const char *path, size_t map_size, int flags,
    char *err, size_t errlen)
{
	struct store *s;
	MDB_envinfo info;
	int rc, dead = 0, tries;

	if (mkdir(path, 0700) == -1 && errno != EEXIST) {
		errf(err, errlen, "store: cannot create %s: %s", path, strerror(errno));
		return NULL;
	}
	s = xcalloc(1, sizeof(*s));
	s->path = xstrdup(path);
	buf_init(&s->oplog);
	s->map_size = round_page(map_size);
	if ((rc = mdb_env_create(&s->env)) != 0) {
		errf(err, errlen, "store: %s: %s", path, mdb_strerror(rc));
		free(s->path);
		free(s);
		return NULL;
	}
	if ((rc = mdb_env_set_maxdbs(s->env, DB_COUNT)) != 0 ||
	    (rc = mdb_env_set_mapsize(s->env, s->map_size)) != 0 ||
	    (rc = mdb_env_open(s->env, path,
	    (flags & STORE_F_NOSYNC) ? MDB_NOSYNC : 0, 0600)) != 0) {
		errf(err, errlen, "store: %s: %s", path, mdb_strerror(rc));
		goto fail;
	}
	if ((rc = mdb_reader_check(s->env, &dead)) != 0) {
		errf(err, errlen, "store: %s: checking readers: %s", path, mdb_strerror(rc));
		goto fail;
	}
	s->st.stale_readers = dead;
	if (dead > 0)
		log_info("store: cleared %d stale reader(s) in %s", dead, path);
	for (tries = 0; (rc = store_init_schema(s, err, errlen)) == MDB_MAP_FULL; tries++) {
		/* An upgrade writes every invoice again: give it room. */
		if (tries == GROW_TRIES || store_map_double(s) != 0) {
			errf(err, errlen, "store: %s: no room to upgrade the database "
			    "(map of %zu bytes)", path, s->map_size);
			goto fail;
		}
	}
	if (rc != 0)
		goto fail;
	if (mdb_env_info(s->env, &info) == 0 && info.me_mapsize > s->map_size)
		s->map_size = info.me_mapsize;
	if (base != NULL && (s->commit_ev = event_new(base, -1, 0, store_commit_cb, s)) == NULL)
		fatalx("store: event_new failed");
	if (flags & STORE_F_NOSYNC)
		log_warnx("store: %s opened without fsync: commits are not durable", path);
	log_debug("store: opened %s, map %zu bytes, next audit seq %llu", path,
	    s->map_size, (unsigned long long)s->seq_next);
	return s;
fail:
	mdb_env_close(s->env);
	free(s->path);
	free(s);
	return NULL;
}

/* ---- group commit ---- */

static void
store_ops_free(struct store *s)
{
	if (s->oplog.cap > OPLOG_KEEP)
		buf_free(&s->oplog);
	buf_reset(&s->oplog);
	s->nops = 0;
}

/* The group's next write in its log after *off, or NULL at the end. */
static const struct store_op *
store_op_next(const struct store *s, size_t *off)
{
	const struct store_op *op;

	if (*off >= s->oplog.len)
		return NULL;
	op = (const struct store_op *)(s->oplog.data + *off);
	*off += OP_SIZE(op->klen, op->vlen);
	return op;
}

static uint64_t store_clock_us(void);

/* Make sure the current group gets its commit at the end of this loop pass. */
static void
store_group_schedule(struct store *s)
{
	if (!s->pending && s->commit_ev != NULL) {
		uint64_t now = store_clock_us();

		if (now < s->last_commit_us + s->commit_gap_us) {
			struct timeval tv;
			uint64_t d = s->last_commit_us + s->commit_gap_us - now;

			tv.tv_sec = 0;
			tv.tv_usec = (suseconds_t)d;
			event_add(s->commit_ev, &tv);
		} else
			event_active(s->commit_ev, EV_TIMEOUT, 0);
	}
	s->pending = 1;
}

/* Throw the group's writes away; its callbacks will get STORE_FAILED. */
static void
store_group_fail(struct store *s, const char *what, const char *why)
{
	log_warnx("store: %s: %s; the writes of this loop pass are lost", what, why);
	if (s->wtxn != NULL)
		mdb_txn_abort(s->wtxn);
	s->wtxn = NULL;
	s->failed = 1;
	store_ops_free(s);
	s->seq_next = s->seq_committed;
	s->inv_next = s->inv_committed;
}

static int
store_op_apply(struct store *s, const struct store_op *op)
{
	MDB_val k, v;
	int rc;

	k.mv_data = (void *)op->data;
	k.mv_size = op->klen;
	v.mv_data = (void *)(op->data + op->klen);
	v.mv_size = op->vlen;
	if (op->del) {
		rc = mdb_del(s->wtxn, s->dbi[op->db], &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	return mdb_put(s->wtxn, s->dbi[op->db], &k, &v, 0);
}

/* The map is full: abort, double the map, replay the group into a new transaction. */
static int
store_group_regrow(struct store *s)
{
	const struct store_op *op;
	size_t off;
	int rc = MDB_MAP_FULL, tries;

	for (tries = 0; tries < GROW_TRIES && rc == MDB_MAP_FULL; tries++) {
		if (s->wtxn != NULL)
			mdb_txn_abort(s->wtxn);
		s->wtxn = NULL;
		if ((rc = store_map_double(s)) != 0)
			return rc;
		if ((rc = store_txn_begin(s, 0, &s->wtxn)) != 0) {
			s->wtxn = NULL;
			return rc;
		}
		off = 0;
		while (rc == 0 && (op = store_op_next(s, &off)) != NULL)
			rc = store_op_apply(s, op);
	}
	return rc;
}

/* Join the current group, beginning its transaction if needed. */
static int
store_group_join(struct store *s)
{
	int rc;

	if (s->iterating || s->rdepth > 0)
		fatalx("store: write inside a read or a foreach callback");
	store_group_schedule(s);
	if (s->failed)
		return -1;
	if (s->wtxn != NULL)
		return 0;
	if ((rc = store_txn_begin(s, 0, &s->wtxn)) != 0) {
		s->wtxn = NULL;
		store_group_fail(s, "begin", mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/* Put (or delete) one key in the group's transaction, logging it for replay. */
static int
store_write(struct store *s, int db, const void *key, size_t klen, const void *val,
    size_t vlen, int del)
{
	struct store_op *op;
	size_t size = OP_SIZE(klen, vlen);
	int rc;

	if (store_group_join(s) == -1)
		return -1;
	buf_reserve(&s->oplog, size);
	op = (struct store_op *)(s->oplog.data + s->oplog.len);
	s->oplog.len += size;
	s->nops++;
	op->db = (uint32_t)db;
	op->del = del != 0;
	op->klen = klen;
	op->vlen = vlen;
	memcpy(op->data, key, klen);
	if (vlen > 0)
		memcpy(op->data + klen, val, vlen);
	rc = store_op_apply(s, op);
	if (rc == MDB_MAP_FULL)
		rc = store_group_regrow(s);
	if (rc != 0) {
		store_group_fail(s, db_names[db], mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/* Monotonic clock in microseconds, for the commit latency histogram. */
static uint64_t
store_clock_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void
store_commit_timed(struct store *s, uint64_t us)
{
	int b = 0;

	while (b < STORE_HIST_N - 1 && us > (uint64_t)100 << (2 * b))
		b++;
	s->st.commit_hist[b]++;
	s->st.commit_us_sum += us;
}

/* Commit the group and run its callbacks with the outcome. */
static int
store_group_commit(struct store *s)
{
	struct store_cb *cbs;
	int status = STORE_COMMITTED, rc = 0, tries;
	uint64_t t0 = 0;
	size_t nops = s->nops, ncbs, i;

	if (s->iterating || s->rdepth > 0)
		fatalx("store: commit inside a read or a foreach callback");
	s->pending = 0;
	if (s->failed)
		status = STORE_FAILED;
	else if (s->wtxn != NULL && s->fail_commits > 0) {
		s->fail_commits--;
		store_group_fail(s, "commit", "failed by the test hook");
		status = STORE_FAILED;
	} else if (s->wtxn != NULL) {
		t0 = store_clock_us();
		for (tries = 0; tries < GROW_TRIES; tries++) {
			rc = mdb_txn_commit(s->wtxn);	/* frees the txn, even on failure */
			s->wtxn = NULL;
			if (rc != MDB_MAP_FULL)
				break;
			if ((rc = store_group_regrow(s)) != 0)
				break;
		}
		if (rc != 0) {
			store_group_fail(s, "commit", mdb_strerror(rc));
			status = STORE_FAILED;
		} else {
			s->st.commits++;
			s->last_commit_us = store_clock_us();
			store_commit_timed(s, s->last_commit_us - t0);
			s->seq_committed = s->seq_next;
			s->inv_committed = s->inv_next;
			log_trace(TRACE_STORE, "store: committed %zu writes", nops);
		}
	}
	if (status == STORE_FAILED)
		s->st.failed++;
	s->failed = 0;
	store_ops_free(s);
	/* Callbacks may join the next group: they get a list of their own. */
	cbs = s->cbs;
	ncbs = s->ncbs;
	s->cbs = NULL;
	s->ncbs = s->cbs_cap = 0;
	for (i = 0; i < ncbs; i++)
		cbs[i].cb(status, cbs[i].arg);
	free(cbs);
	return status;
}

static void
store_commit_cb(evutil_socket_t fd, short what, void *arg)
{
	store_group_commit(arg);
}

void
store_commit_gap_set(struct store *s, unsigned int us)
{
	s->commit_gap_us = us;
}

int
store_flush(struct store *s)
{
	if (s->commit_ev != NULL)
		event_del(s->commit_ev);
	return store_group_commit(s);
}

void
store_on_commit(struct store *s, void (*cb)(int, void *), void *arg)
{
	if (s->ncbs == s->cbs_cap) {
		s->cbs_cap = s->cbs_cap ? s->cbs_cap * 2 : 64;
		s->cbs = xrealloc(s->cbs, s->cbs_cap * sizeof(*s->cbs));
	}
	s->cbs[s->ncbs].cb = cb;
	s->cbs[s->ncbs].arg = arg;
	s->ncbs++;
	store_group_schedule(s);
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	if (s->pending)
		store_flush(s);
	if (s->commit_ev != NULL)
		event_free(s->commit_ev);
	mdb_env_close(s->env);
	buf_free(&s->oplog);
	free(s->cbs);
	free(s->path);
	free(s);
}

void
store_stats_get(struct store *s, struct store_stats *st)
{
	MDB_envinfo info;
	MDB_stat ms;

	*st = s->st;
	st->map_size = s->map_size;
	st->map_used = 0;
	if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &ms) == 0)
		st->map_used = (info.me_last_pgno + 1) * (size_t)ms.ms_psize;
}

void
store_test_fail_commits(struct store *s, int n)
{
	s->fail_commits = n;
}

/* ---- reads ---- */

/* The transaction reads go through: the group's, so they see its pending writes. */
static MDB_txn *
store_read_begin(struct store *s)
{
	int rc;

	if (s->wtxn != NULL)
		return s->wtxn;
	if (s->rdepth++ > 0)
		return s->rtxn;
	if ((rc = store_txn_begin(s, MDB_RDONLY, &s->rtxn)) != 0) {
		s->rdepth = 0;
		s->rtxn = NULL;
		log_warnx("store: read: %s", mdb_strerror(rc));
		return NULL;
	}
	return s->rtxn;
}

static void
store_read_end(struct store *s, MDB_txn *txn)
{
	if (txn == s->wtxn)
		return;
	if (--s->rdepth == 0) {
		mdb_txn_abort(s->rtxn);
		s->rtxn = NULL;
	}
}

/* Copy one value out: 0, 1 if absent, -1 on error.  *out: caller frees. */
static int
store_get(struct store *s, int db, const void *key, size_t klen,
    unsigned char **out, size_t *outlen)
{
	MDB_txn *txn;
	MDB_val k, v;
	int rc;

	if ((txn = store_read_begin(s)) == NULL)
		return -1;
	k.mv_data = (void *)key;
	k.mv_size = klen;
	if ((rc = mdb_get(txn, s->dbi[db], &k, &v)) == 0) {
		*out = xmalloc(v.mv_size + 1);
		memcpy(*out, v.mv_data, v.mv_size);
		(*out)[v.mv_size] = '\0';
		*outlen = v.mv_size;
	}
	store_read_end(s, txn);
	if (rc == MDB_NOTFOUND)
		return 1;
	if (rc != 0) {
		log_warnx("store: reading %s: %s", db_names[db], mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/*
 * Walk a database from `start` (or its first key) and call fn for each
 * entry until it returns non-zero.  Writes are refused meanwhile: the cursor
 * may run inside the group's transaction.
 */
static int
store_walk(struct store *s, int db, const void *start, size_t startlen,
    int (*fn)(MDB_val *, MDB_val *, void *), void *arg)
{
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	int rc, stop = 0;

	if ((txn = store_read_begin(s)) == NULL)
		return -1;
	if ((rc = mdb_cursor_open(txn, s->dbi[db], &c)) != 0) {
		store_read_end(s, txn);
		log_warnx("store: %s: %s", db_names[db], mdb_strerror(rc));
		return -1;
	}
	k.mv_data = (void *)start;
	k.mv_size = startlen;
	s->iterating++;
	rc = mdb_cursor_get(c, &k, &v, start != NULL ? MDB_SET_RANGE : MDB_FIRST);
	while (rc == 0 && !stop) {
		stop = fn(&k, &v, arg);
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	s->iterating--;
	mdb_cursor_close(c);
	store_read_end(s, txn);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		log_warnx("store: %s: %s", db_names[db], mdb_strerror(rc));
		return -1;
	}
	return 0;
}

/* ---- invoices ---- */

/* The arrival number of an invoice in txn: an LMDB code, MDB_NOTFOUND too. */
static int
store_seq_in(struct store *s, MDB_txn *txn, const unsigned char key[INV_KEY_LEN],
    unsigned char seq[SEQ_LEN])
{
	MDB_val k, v;
	int rc;

	k.mv_data = (void *)key;
	k.mv_size = INV_KEY_LEN;
	if ((rc = mdb_get(txn, s->dbi[DB_IDS], &k, &v)) == 0 && v.mv_size != SEQ_LEN)
		rc = MDB_CORRUPTED;
	if (rc == 0)
		memcpy(seq, v.mv_data, SEQ_LEN);
	return rc;
}

/* The arrival number of an invoice: 0, 1 when there is no such invoice, -1. */
static int
store_seq_get(struct store *s, const unsigned char key[INV_KEY_LEN],
    unsigned char seq[SEQ_LEN])
{
	MDB_txn *txn;
	int rc;

	if ((txn = store_read_begin(s)) == NULL)
		return -1;
	rc = store_seq_in(s, txn, key, seq);
	store_read_end(s, txn);
	if (rc == MDB_NOTFOUND)
		return 1;
	if (rc != 0) {
		log_warnx("store: reading ids: %s", mdb_strerror(rc));
		return -1;
	}
	return 0;
}

int
store_invoice_get(struct store *s, const unsigned char key[INV_KEY_LEN],
    struct record_invoice *out)
{
	struct record_err err;
	unsigned char *data, seq[SEQ_LEN];
	size_t len;
	char hk[17];
	int rc;

	if ((rc = store_seq_get(s, key, seq)) != 0 ||
	    (rc = store_get(s, DB_INV, seq, SEQ_LEN, &data, &len)) != 0)
		return rc;
	rc = record_invoice_decode(data, len, out, &err);
	free(data);
	if (rc == -1) {
		record_key_short(key, hk);
		log_warnx("store: invoice %s: %s", hk, err.msg);
	}
	return rc;
}

static int
store_due_write(struct store *s, int64_t due, const unsigned char *key, int del)
{
	unsigned char k[DUE_KEY_LEN];

	put_be64(k, (uint64_t)due);
	memcpy(k + 8, key, INV_KEY_LEN);
	return store_write(s, DB_DUE, k, sizeof(k), "", 0, del);
}

/* Write an invoice record (arrival number seq) and move its due index entry from old_due. */
static int
store_invoice_write(struct store *s, const unsigned char seq[SEQ_LEN],
    const struct record_invoice *inv, int64_t old_due)
{
	struct buf b;
	char hk[17];
	int rc;

	if (inv->next_due_ms < 0) {
		record_key_short(inv->key, hk);
		log_warnx("store: invoice %s: negative due time refused", hk);
		return -1;
	}
	buf_init(&b);
	record_invoice_encode(inv, &b);
	rc = store_write(s, DB_INV, seq, SEQ_LEN, b.data, b.len, 0);
	buf_free(&b);
	if (rc == 0 && old_due != inv->next_due_ms && old_due != 0)
		rc = store_due_write(s, old_due, inv->key, 1);
	if (rc == 0 && old_due != inv->next_due_ms && inv->next_due_ms != 0)
		rc = store_due_write(s, inv->next_due_ms, inv->key, 0);
	return rc;
}

/* Append the audit event of a state change to the group. */
static int
store_audit_append(struct store *s, const unsigned char *key, enum inv_state from,
    enum inv_state to, const char *detail)
{
	struct record_audit ev;
	unsigned char k[8];
	struct buf b;
	int rc;

	memset(&ev, 0, sizeof(ev));
	ev.seq = s->seq_next;
	ev.time_ms = time_now_ms();
	memcpy(ev.key, key, INV_KEY_LEN);
	ev.from = from;
	ev.to = to;
	ev.detail = (char *)detail;	/* not freed: ev is not decoded */
	buf_init(&b);
	record_audit_encode(&ev, &b);
	put_be64(k, ev.seq);
	if ((rc = store_write(s, DB_AUDIT, k, sizeof(k), b.data, b.len, 0)) == 0)
		s->seq_next++;
	buf_free(&b);
	return rc;
}

/*
 * An audit event that is not a state change (a reconciliation finding):
 * from and to are both `state`; key may be all zeros for no local invoice.
 */
int
store_audit_note(struct store *s, const unsigned char key[INV_KEY_LEN],
    enum inv_state state, const char *detail)
{
	return store_audit_append(s, key, state, state, detail);
}

/* The ident index key: NIP, NUL, RodzajFaktury, NUL, P_2.  -1 if too long.  Caller frees. */
static unsigned char *
store_ident_key(struct store *s, const char *nip, const char *kind, const char *number,
    size_t *len)
{
	size_t a = strlen(nip), b = strlen(kind), c = strlen(number);
	unsigned char *k;

	*len = a + 1 + b + 1 + c;
	if (*len > (size_t)mdb_env_get_maxkeysize(s->env)) {
		log_warnx("store: invoice number %s is too long for the ident index",
		    log_escape(number, c, 40));
		return NULL;
	}
	k = xmalloc(*len);
	memcpy(k, nip, a + 1);
	memcpy(k + a + 1, kind, b + 1);
	memcpy(k + a + 1 + b + 1, number, c);
	return k;
}

static void
check_state(enum inv_state st)
{
	if ((int)st < 0 || (int)st >= INV_ST_COUNT)
		fatalx("store: invalid invoice state %d", (int)st);
}

int
store_invoice_add(struct store *s, const struct record_invoice *inv, const void *xml,
    size_t xmllen, const char *detail)
{
	unsigned char *ik, seq[SEQ_LEN];
	size_t iklen;
	char hk[17];
	int rc;

	check_state(inv->state);
	if (inv->number == NULL)
		fatalx("store: invoice without a number");
	if ((rc = store_seq_get(s, inv->key, seq)) != 1)
		return rc == 0 ? 1 : -1;
	if ((ik = store_ident_key(s, inv->seller_nip, inv->kind, inv->number, &iklen)) == NULL)
		return -1;
	put_be64(seq, s->inv_next);
	rc = store_write(s, DB_IDS, inv->key, INV_KEY_LEN, seq, SEQ_LEN, 0);
	if (rc == 0) {
		s->inv_next++;	/* back to inv_committed if the group fails */
		rc = store_invoice_write(s, seq, inv, 0);
	}
	if (rc == 0)
		rc = store_write(s, DB_DOC, seq, SEQ_LEN, xml, xmllen, 0);
	if (rc == 0)
		rc = store_write(s, DB_IDENT, ik, iklen, inv->key, INV_KEY_LEN, 0);
	if (rc == 0)
		rc = store_audit_append(s, inv->key, INV_ST_NONE, inv->state, detail);
	free(ik);
	if (rc == 0) {
		record_key_short(inv->key, hk);
		log_debug("store: invoice %s added as %s", hk, record_state_name(inv->state));
	}
	return rc;
}

/*
 * The state and due time of the stored version of inv, which must exist
 * and be in inv->state: checked in place, nothing copied or allocated
 * (it runs before every write of a record).  Nothing in *old to free.
 * seq: its arrival number.
 */
static int
store_invoice_current(struct store *s, const struct record_invoice *inv,
    struct record_invoice *old, unsigned char seq[SEQ_LEN], const char *what)
{
	struct record_err err;
	MDB_txn *txn;
	MDB_val k, v;
	char hk[17];
	int rc;

	record_key_short(inv->key, hk);
	if ((txn = store_read_begin(s)) == NULL)
		return -1;
	k.mv_data = seq;
	k.mv_size = SEQ_LEN;
	if ((rc = store_seq_in(s, txn, inv->key, seq)) == 0 &&
	    (rc = mdb_get(txn, s->dbi[DB_INV], &k, &v)) == 0 &&
	    (rc = record_invoice_peek(v.mv_data, v.mv_size, old, &err)) == -1)
		log_warnx("store: invoice %s: %s", hk, err.msg);
	store_read_end(s, txn);
	if (rc == MDB_NOTFOUND)
		log_warnx("store: %s of invoice %s: no such invoice", what, hk);
	else if (rc != 0 && rc != -1)
		log_warnx("store: %s of invoice %s: %s", what, hk, mdb_strerror(rc));
	if (rc != 0)
		return -1;
	if (old->state != inv->state) {
		log_warnx("store: %s of invoice %s: it is %s, the caller's copy says %s",
		    what, hk, record_state_name(old->state), record_state_name(inv->state));
		return -1;
	}
	return 0;
}

/* The record written once in state `to`; the audit events through `via` if set. */
int
store_invoice_transition_via(struct store *s, struct record_invoice *inv,
    enum inv_state via, const char *via_detail, enum inv_state to, const char *detail)
{
	struct record_invoice old;
	enum inv_state from = inv->state, mid = via != INV_ST_NONE ? via : from;
	unsigned char seq[SEQ_LEN];
	int64_t old_due;
	char hk[17];

	check_state(to);
	if (via != INV_ST_NONE)
		check_state(via);
	if (store_invoice_current(s, inv, &old, seq, "transition") == -1)
		return -1;
	old_due = old.next_due_ms;
	inv->state = to;
	if (store_invoice_write(s, seq, inv, old_due) == -1 ||
	    (via != INV_ST_NONE &&
	    store_audit_append(s, inv->key, from, via, via_detail) == -1) ||
	    store_audit_append(s, inv->key, mid, to, detail) == -1) {
		inv->state = from;
		return -1;
	}
	record_key_short(inv->key, hk);
	log_debug("store: invoice %s %s -> %s%s%s", hk, record_state_name(from),
	    via != INV_ST_NONE ? record_state_name(via) : "",
	    via != INV_ST_NONE ? " -> " : "", record_state_name(to));
	return 0;
}

int
store_invoice_transition(struct store *s, struct record_invoice *inv, enum inv_state to,
    const char *detail)
{
	return store_invoice_transition_via(s, inv, INV_ST_NONE, NULL, to, detail);
}

int
store_invoice_update(struct store *s, const struct record_invoice *inv)
{
	struct record_invoice old;
	unsigned char seq[SEQ_LEN];
	int64_t old_due;

	if (store_invoice_current(s, inv, &old, seq, "update") == -1)
		return -1;
	old_due = old.next_due_ms;
	return store_invoice_write(s, seq, inv, old_due);
}

int
store_invoice_set_due(struct store *s, struct record_invoice *inv, int64_t due_ms)
{
	int64_t prev = inv->next_due_ms;

	inv->next_due_ms = due_ms;
	if (store_invoice_update(s, inv) == -1) {
		inv->next_due_ms = prev;
		return -1;
	}
	return 0;
}

struct invoice_walk {
	int	(*cb)(const struct record_invoice *, void *);
	void	*arg;
};

static int
invoice_walk_fn(MDB_val *k, MDB_val *v, void *arg)
{
	struct invoice_walk *w = arg;
	struct record_invoice inv;
	struct record_err err;
	int stop;

	if (record_invoice_decode(v->mv_data, v->mv_size, &inv, &err) == -1) {
		log_warnx("store: skipping invoice %s: %s",
		    log_escape(k->mv_data, k->mv_size < 8 ? k->mv_size : 8, 16), err.msg);
		return 0;
	}
	stop = w->cb(&inv, w->arg);
	record_invoice_free(&inv);
	return stop;
}

int
store_invoice_foreach(struct store *s, int (*cb)(const struct record_invoice *, void *),
    void *arg)
{
	return store_invoice_foreach_after(s, NULL, cb, arg);
}

int
store_invoice_foreach_after(struct store *s, const unsigned char *after,
    int (*cb)(const struct record_invoice *, void *), void *arg)
{
	struct invoice_walk w = { cb, arg };
	unsigned char seq[SEQ_LEN];
	int rc;

	if (after == NULL)
		return store_walk(s, DB_INV, NULL, 0, invoice_walk_fn, &w);
	if ((rc = store_seq_get(s, after, seq)) != 0)
		return rc;
	put_be64(seq, get_be64(seq) + 1);
	return store_walk(s, DB_INV, seq, SEQ_LEN, invoice_walk_fn, &w);
}

/* A value of db (doc or upo) of the invoice with this key. */
static int
store_blob_get(struct store *s, int db, const unsigned char key[INV_KEY_LEN],
    unsigned char **data, size_t *len)
{
	unsigned char seq[SEQ_LEN];
	int rc;

	if ((rc = store_seq_get(s, key, seq)) != 0)
		return rc;
	return store_get(s, db, seq, SEQ_LEN, data, len);
}

int
store_doc_get(struct store *s, const unsigned char key[INV_KEY_LEN], unsigned char **data,
    size_t *len)
{
	return store_blob_get(s, DB_DOC, key, data, len);
}

int
store_upo_put(struct store *s, const unsigned char key[INV_KEY_LEN], const void *data,
    size_t len)
{
	unsigned char seq[SEQ_LEN];
	char hk[17];
	int rc;

	if ((rc = store_seq_get(s, key, seq)) != 0) {
		if (rc == 1) {
			record_key_short(key, hk);
			log_warnx("store: UPO of invoice %s: no such invoice", hk);
		}
		return -1;
	}
	return store_write(s, DB_UPO, seq, SEQ_LEN, data, len, 0);
}

int
store_upo_get(struct store *s, const unsigned char key[INV_KEY_LEN], unsigned char **data,
    size_t *len)
{
	return store_blob_get(s, DB_UPO, key, data, len);
}

/* ---- due and ident indexes ---- */

struct due_walk {
	int64_t		 upto;
	struct store_due *out;
	int		 max, n;
};

static int
due_walk_fn(MDB_val *k, MDB_val *v, void *arg)
{
	struct due_walk *w = arg;
	int64_t due;

	if (w->n >= w->max)
		return 1;
	if (k->mv_size != DUE_KEY_LEN) {
		log_warnx("store: due index key of %zu bytes skipped", k->mv_size);
		return 0;
	}
	if ((due = (int64_t)get_be64(k->mv_data)) > w->upto)
		return 1;
	w->out[w->n].due_ms = due;
	memcpy(w->out[w->n].key, (unsigned char *)k->mv_data + 8, INV_KEY_LEN);
	w->n++;
	return 0;
}

int
store_due_list(struct store *s, int64_t upto_ms, struct store_due *out, int max)
{
	struct due_walk w = { upto_ms, out, max, 0 };

	if (max <= 0)
		return 0;
	if (store_walk(s, DB_DUE, NULL, 0, due_walk_fn, &w) == -1)
		return -1;
	return w.n;
}

int
store_ident_get(struct store *s, const char *nip, const char *kind, const char *number,
    unsigned char key[INV_KEY_LEN])
{
	unsigned char *ik, *v;
	size_t iklen, vlen;
	int rc;

	if ((ik = store_ident_key(s, nip, kind, number, &iklen)) == NULL)
		return 1;	/* too long to have been stored */
	rc = store_get(s, DB_IDENT, ik, iklen, &v, &vlen);
	free(ik);
	if (rc != 0)
		return rc;
	if (vlen != INV_KEY_LEN) {
		log_warnx("store: ident entry of %zu bytes, not %d", vlen, INV_KEY_LEN);
		rc = -1;
	} else
		memcpy(key, v, INV_KEY_LEN);
	free(v);
	return rc;
}

/* ---- audit ---- */

struct audit_walk {
	int	(*cb)(const struct record_audit *, void *);
	void	*arg;
	int	 bad;
};

static int
audit_walk_fn(MDB_val *k, MDB_val *v, void *arg)
{
	struct audit_walk *w = arg;
	struct record_audit ev;
	struct record_err err;
	int stop;

	if (record_audit_decode(v->mv_data, v->mv_size, &ev, &err) == -1) {
		log_warnx("store: audit event %llu: %s", k->mv_size == 8 ?
		    (unsigned long long)get_be64(k->mv_data) : 0ULL, err.msg);
		w->bad = 1;
		return 1;
	}
	stop = w->cb(&ev, w->arg);
	record_audit_free(&ev);
	return stop;
}

int
store_audit_foreach(struct store *s, uint64_t from_seq,
    int (*cb)(const struct record_audit *, void *), void *arg)
{
	struct audit_walk w = { cb, arg, 0 };
	unsigned char k[8];

	put_be64(k, from_seq);
	if (store_walk(s, DB_AUDIT, k, sizeof(k), audit_walk_fn, &w) == -1 || w.bad)
		return -1;
	return 0;
}

uint64_t
store_audit_next_seq(struct store *s)
{
	return s->seq_next;
}

/* ---- meta ---- */

static int
meta_name_ok(struct store *s, const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > (size_t)mdb_env_get_maxkeysize(s->env)) {
		log_warnx("store: meta name of %zu bytes refused", n);
		return 0;
	}
	return 1;
}

int
store_meta_get(struct store *s, const char *name, unsigned char **val, size_t *len)
{
	if (!meta_name_ok(s, name))
		return -1;
	return store_get(s, DB_META, name, strlen(name), val, len);
}

int
store_meta_put(struct store *s, const char *name, const void *val, size_t len)
{
	if (!meta_name_ok(s, name))
		return -1;
	return store_write(s, DB_META, name, strlen(name), val, len, 0);
}

int
store_meta_del(struct store *s, const char *name)
{
	if (!meta_name_ok(s, name))
		return -1;
	return store_write(s, DB_META, name, strlen(name), NULL, 0, 1);
}
