/* ksefd.c: the daemon's main(): options, config, pid file, daemon, signals, the one event loop. */
#include "config.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#ifdef HAVE_TCMALLOC
#include <gperftools/tcmalloc.h>
#else
#include <malloc.h>		/* mallopt */
#endif

#include "alert.h"
#include "api.h"
#include "conf.h"
#include "failpoint.h"
#include "http.h"
#include "intake.h"
#include "latarnia.h"
#include "log.h"
#include "reconcile.h"
#include "metrics.h"
#include "sched.h"
#include "spool.h"
#include "store.h"
#include "util.h"
#include "validate.h"

#define KSEFD_CONF_DEFAULT	SYSCONFDIR "/ksefd/ksefd.conf"

struct ksefd {
	struct event_base *base;
	struct event	*ev_hup, *ev_term, *ev_int;
	struct conf	*conf;
	struct store	*store;
	struct validator *validator;
	struct intake	*intake;
	struct api	*api;
	struct spool	*spool;	/* NULL without spool.directory */
	struct http	*http;
	struct sched	*sched;
	struct reconcile *reconcile;
	struct metrics	*metrics;
	struct latarnia	*latarnia;	/* KSeF availability, polled */
	struct alert	*alert;
	char		*pid_file;	/* the one we hold; NULL in the foreground */
	int		 pid_fd;
	int		 verbose;
};

static void
usage(FILE *fp)
{
	fprintf(fp,
"usage: ksefd [-dnvV] [-f file]\n"
"\n"
"ksefd submits invoices to KSeF, Poland's national e-invoicing system\n"
"(API 2.0), exactly once each, and keeps the official receipt (UPO).\n"
"\n"
"Options:\n"
"  -d          Stay in the foreground and log to standard error.  Without\n"
"              -d, ksefd detaches, logs to syslog (facility daemon) and\n"
"              writes its pid file (daemon.pid_file).\n"
"  -f file     Read the configuration from file instead of\n"
"              " KSEFD_CONF_DEFAULT ".\n"
"  -n          Check the configuration and exit: print `configuration OK',\n"
"              or every problem as `file:line: message'.  Secret files are\n"
"              read and checked too.\n"
"  -v          More verbose: once for debug messages, twice also for every\n"
"              trace (log.trace = all).  Adds to log.level.\n"
"  -V          Print the version and which malloc serves ksefd (tcmalloc,\n"
"              or glibc when built without it), and exit.\n"
"  -h, --help  Print this help and exit.\n"
"\n"
"Files:\n"
"  " KSEFD_CONF_DEFAULT "\n"
"              The configuration; conf/ksefd.conf in the sources documents\n"
"              every setting.\n"
"  /run/ksefd.pid\n"
"              The default pid file; locked while ksefd runs, so a second\n"
"              ksefd refuses to start.\n"
"  /var/lib/ksefd\n"
"              The default database directory (LMDB).\n"
"  " PKGDATADIR "/schemas\n"
"              The invoice schemas (XSD) with their catalog.\n"
"\n"
"Environment:\n"
"  KSEFD_SCHEMA_DIR\n"
"              Read the schemas from this directory instead (an\n"
"              uninstalled build uses the source tree's schemas/).\n"
"\n"
"Signals:\n"
"  SIGHUP      Reload the configuration.  The whole file is parsed again;\n"
"              if it has errors they are logged with `config file F has\n"
"              errors, not reloading' and ksefd keeps its old settings.\n"
"              Otherwise the changes are applied and logged as `reloaded\n"
"              configuration: ...'.  storage.*, api.socket, api.listen and\n"
"              daemon.pid_file need a restart; changes to them are logged\n"
"              as `needs restart' and the old values stay in force.\n"
"  SIGTERM, SIGINT\n"
"              Stop taking work, finish or abandon what is in flight,\n"
"              commit the database and exit with status 0.\n"
"\n"
"Exit status:\n"
"  0  normal shutdown, `configuration OK', -V or -h\n"
"  1  bad configuration, another ksefd holds the pid file, the database\n"
"     cannot be opened, or another start-up error (the reason is printed)\n"
"  2  bad command line\n");
}

/*
 * Take the pid file: lock it so a second ksefd cannot start while this one
 * (or its daemon child, which inherits the lock) lives.  Exits on failure.
 */
static void
ksefd_pidfile_lock(struct ksefd *k, const char *path)
{
	char buf[32];
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) == -1)
		fatal("ksefd: cannot open pid file %s", path);
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno != EWOULDBLOCK)
			fatal("ksefd: cannot lock pid file %s", path);
		n = read(fd, buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		fatalx("ksefd: another ksefd (pid %s) is running: it holds the "
		    "pid file %s", n > 0 ? log_escape(buf, strlen(buf), 20) :
		    "unknown", path);
	}
	k->pid_fd = fd;
	k->pid_file = xstrdup(path);
}

/* Write our pid into the locked pid file. */
static void
ksefd_pidfile_write(struct ksefd *k)
{
	char buf[32];
	int n;

	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(k->pid_fd, 0) == -1 ||
	    pwrite(k->pid_fd, buf, (size_t)n, 0) != n)
		fatal("ksefd: cannot write pid file %s", k->pid_file);
}

/*
 * The one event loop.  epoll's changes are batched: a socket whose events
 * are switched off and on again in one loop pass (curl between requests
 * on a kept-alive connection, evhttp between a request and its answer)
 * costs no epoll_ctl at all, one in place of two otherwise (measured:
 * 4.1 -> 2.4 epoll_ctl calls per invoice, doc/performance.md).  libevent's
 * warning for it concerns descriptors copied by dup(), which ksefd makes
 * only in a child that is about to exec (alert.command).
 */
static struct event_base *
ksefd_base_new(void)
{
	struct event_config *cfg;
	struct event_base *base;

	if ((cfg = event_config_new()) == NULL)
		fatalx("ksefd: cannot create the event base");
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (base == NULL)
		fatalx("ksefd: cannot create the event base");
	return base;
}

/*
 * Detach: the parent waits until the child reports that it started (then
 * exits 0) or dies (then exits 1), so start-up errors still reach the
 * terminal and the exit status.  Returns the write end of the report pipe
 * in the child.
 */
static int
ksefd_daemonize(void)
{
	int fds[2], status;
	pid_t pid;
	ssize_t n;
	char c;

	if (pipe2(fds, O_CLOEXEC) == -1)
		fatal("ksefd: pipe");
	if ((pid = fork()) == -1)
		fatal("ksefd: fork");
	if (pid == 0) {
		close(fds[0]);
		if (setsid() == -1)
			fatal("ksefd: setsid");
		if (chdir("/") == -1)
			fatal("ksefd: chdir /");
		return fds[1];
	}
	close(fds[1]);
	do
		n = read(fds[0], &c, 1);
	while (n == -1 && errno == EINTR);
	if (n == 1)
		_exit(0);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	_exit(1);
}

/* Tell the waiting parent we are up, and leave the terminal. */
static void
ksefd_detach_done(int report_fd)
{
	int fd;

	if ((fd = open("/dev/null", O_RDWR)) == -1)
		fatal("ksefd: /dev/null");
	if (write(report_fd, "1", 1) != 1)
		fatal("ksefd: cannot report start-up to the parent");
	close(report_fd);
	if (dup2(fd, STDIN_FILENO) == -1 || dup2(fd, STDOUT_FILENO) == -1 ||
	    dup2(fd, STDERR_FILENO) == -1)
		fatal("ksefd: dup2");
	if (fd > STDERR_FILENO)
		close(fd);
}

static void
ksefd_sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	struct ksefd *k = arg;

	log_info("ksefd: SIGHUP received, reloading %s", k->conf->file);
	conf_reload(&k->conf, k->verbose);
}

/* SIGTERM/SIGINT: leave the loop; main() then winds down in order. */
static void
ksefd_sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct ksefd *k = arg;

	log_info("ksefd: %s received, shutting down",
	    sig == SIGINT ? "SIGINT" : "SIGTERM");
	event_base_loopexit(k->base, NULL);
}

/* Register a libevent signal handler. */
static struct event *
ksefd_signal_add(struct ksefd *k, int sig,
    void (*cb)(evutil_socket_t, short, void *))
{
	struct event *ev;

	if ((ev = evsignal_new(k->base, sig, cb, k)) == NULL ||
	    evsignal_add(ev, NULL) == -1)
		fatalx("ksefd: cannot handle signal %d", sig);
	return ev;
}

/* A validator for `conf`: its sellers, FA(2) rule, tolerance, body limit. Caller frees. */
static struct validator *
ksefd_validator_new(const struct conf *conf, char *err, size_t errlen)
{
	struct validate_params vp;
	struct validator *v;
	const char **nips, *dir = getenv("KSEFD_SCHEMA_DIR");
	size_t i;

	nips = xcalloc(conf->ncontexts, sizeof(*nips));
	for (i = 0; i < conf->ncontexts; i++)
		nips[i] = conf->contexts[i].nip;
	memset(&vp, 0, sizeof(vp));
	vp.schema_dir = dir != NULL && *dir != '\0' ? dir : PKGDATADIR "/schemas";
	vp.fa2_allowed = conf->fa2_allowed;
	vp.nips = nips;
	vp.nnips = conf->ncontexts;
	vp.future_tolerance_ms = conf->future_tolerance;
	vp.max_body = (size_t)conf->api_max_body;
	v = validator_new(&vp, err, errlen);
	free(nips);
	return v;
}

/* Start the spool when configured; a failure is logged, the rest runs on. */
static void
ksefd_spool_start(struct ksefd *k, const struct conf *conf)
{
	char err[512];

	if (conf->spool_directory == NULL)
		return;
	if ((k->spool = spool_start(k->base, conf->spool_directory,
	    conf->spool_rescan_interval, (size_t)conf->api_max_body, k->intake,
	    err, sizeof(err))) == NULL)
		log_warnx("ksefd: spool not started: %s", err);
}

/* Start taking invoices: validator, intake, API listeners, spool. Exits on failure. */
static void
ksefd_intake_start(struct ksefd *k)
{
	struct api_params ap;
	char err[512];

	if ((k->validator = ksefd_validator_new(k->conf, err,
	    sizeof(err))) == NULL)
		fatalx("ksefd: %s", err);
	k->intake = intake_new(k->store, k->validator);
	memset(&ap, 0, sizeof(ap));
	ap.socket_path = k->conf->api_socket;
	ap.socket_mode = k->conf->api_socket_mode;
	ap.listen = k->conf->api_listen;
	ap.token = k->conf->api_token;
	ap.max_body = (size_t)k->conf->api_max_body;
	if ((k->api = api_start(k->base, &ap, k->store, k->intake, err,
	    sizeof(err))) == NULL)
		fatalx("ksefd: %s", err);
	ksefd_spool_start(k, k->conf);
}

/* A new invoice is durable: hand it to the pipeline. */
static void
ksefd_invoice_new_cb(const struct record_invoice *inv, void *arg)
{
	struct ksefd *k = arg;

	if (k->sched != NULL)
		sched_invoice_new(k->sched, inv);
}

/* POST /v1/invoices/{id}/retry. */
static int
ksefd_retry_cb(const unsigned char key[32], void *arg)
{
	struct ksefd *k = arg;

	return sched_invoice_retry(k->sched, key);
}

/* Latarnia polls: every 6 status intervals; while KSeF is out, every one. */
#define KSEFD_LATARNIA_FACTOR	6

/* KSeF's availability changed: pause or resume sending; alert a long outage. */
static void
ksefd_latarnia_cb(enum latarnia_status now, enum latarnia_status before,
    void *arg)
{
	struct ksefd *k = arg;

	if (k->sched != NULL)
		sched_outage_set(k->sched, latarnia_is_outage(now));
	if (k->alert != NULL)
		alert_outage_set(k->alert, "ksef", latarnia_is_outage(now));
}

static void
ksefd_latarnia_configure(struct ksefd *k, const struct conf *conf)
{
	latarnia_configure(k->latarnia, conf->latarnia_url,
	    conf->poll_status_interval * KSEFD_LATARNIA_FACTOR,
	    conf->poll_status_interval);
}

/* The "outage" member of GET /v1/stats. */
static json_t *
ksefd_outage_json(struct ksefd *k)
{
	struct latarnia_info li;

	latarnia_info_get(k->latarnia, &li);
	return json_pack("{s:s, s:b, s:I, s:I, s:I}", "latarnia",
	    latarnia_status_name(li.status), "paused",
	    latarnia_is_outage(li.status), "since_ms", (json_int_t)li.since_ms,
	    "polls", (json_int_t)li.polls, "errors", (json_int_t)li.errors);
}

/* POST /v1/invoices/{id}/hold and /release. */
static int
ksefd_hold_cb(const unsigned char key[32], int on, void *arg)
{
	struct ksefd *k = arg;

	return sched_invoice_hold(k->sched, key, on);
}

/* The messages of a reload as a JSON array. */
static json_t *
ksefd_msgs_json(const struct conf_msgs *m)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; i < m->n; i++)
		json_array_append_new(a, json_string(m->v[i]));
	return a;
}

/* POST /v1/reload: exactly what SIGHUP does, with the result for the client. */
static void *
ksefd_reload_api_cb(void *arg)
{
	struct ksefd *k = arg;
	struct conf_msgs errs = { NULL, 0 }, changed = { NULL, 0 };
	struct conf_msgs restart = { NULL, 0 };
	json_t *o = json_object();

	log_info("ksefd: reload requested through the API, reloading %s",
	    k->conf->file);
	if (conf_reload_report(&k->conf, k->verbose, &errs, &changed,
	    &restart) == -1) {
		json_object_set_new(o, "ok", json_false());
		json_object_set_new(o, "errors", ksefd_msgs_json(&errs));
	} else {
		json_object_set_new(o, "ok", json_true());
		json_object_set_new(o, "changed", ksefd_msgs_json(&changed));
		json_object_set_new(o, "restart", ksefd_msgs_json(&restart));
	}
	conf_msgs_free(&errs);
	conf_msgs_free(&changed);
	conf_msgs_free(&restart);
	return o;
}

/* GET /v1/stats: unfinished invoices per state and the pipeline's counters. */
static void *
ksefd_stats_cb(void *arg)
{
	struct ksefd *k = arg;
	struct sched_stats st;
	json_t *o, *states;
	int i;

	sched_stats_get(k->sched, &st);
	states = json_object();
	for (i = INV_ST_QUEUED; i <= INV_ST_ACCEPTED; i++)
		json_object_set_new(states, record_state_name(i),
		    json_integer((json_int_t)st.per_state[i]));
	o = json_object();
	json_object_set_new(o, "unfinished", json_integer((json_int_t)st.jobs));
	json_object_set_new(o, "states", states);
	json_object_set_new(o, "in_flight", json_integer((json_int_t)st.in_flight));
	json_object_set_new(o, "sent", json_integer((json_int_t)st.sent));
	json_object_set_new(o, "retry_after", json_integer((json_int_t)st.retry_after));
	json_object_set_new(o, "transient", json_integer((json_int_t)st.transient));
	json_object_set_new(o, "in_doubt", json_integer((json_int_t)st.in_doubt));
	json_object_set_new(o, "resent", json_integer((json_int_t)st.resent));
	json_object_set_new(o, "duplicates", json_integer((json_int_t)st.duplicates));
	json_object_set_new(o, "outage", ksefd_outage_json(k));
	return o;
}

/*
 * An invoice ended REJECTED or FAILED: an alert.  The cause is the state
 * and code, not the reason text, so a retried invoice that fails the same
 * way again is not alerted again.
 */
static void
ksefd_alert_cb(const unsigned char key[INV_KEY_LEN], const char *nip,
    enum inv_state to, int32_t code, const char *reason, void *arg)
{
	struct ksefd *k = arg;
	char shortkey[17], hex[INV_KEY_LEN * 2 + 1], cause[64], *msg;

	record_key_short(key, shortkey);
	hex_encode(key, INV_KEY_LEN, hex);
	snprintf(cause, sizeof(cause), "%s code %d", record_state_name(to),
	    (int)code);
	msg = xasprintf("invoice %s of %s %s (code %d): %s", shortkey, nip,
	    record_state_name(to), (int)code,
	    reason ? log_escape(reason, strlen(reason), 300) : "");
	alert_raise(k->alert, to == INV_ST_REJECTED ? ALERT_REJECTED :
	    ALERT_FAILED, hex, cause, msg);
	free(msg);
}

/* Authentication of a context failed (outcome set) or works again (NULL). */
static void
ksefd_auth_alert_cb(const char *nip, const char *outcome, const char *reason,
    void *arg)
{
	struct ksefd *k = arg;
	char *msg;

	if (outcome == NULL) {
		alert_clear(k->alert, ALERT_AUTH, nip);
		return;
	}
	msg = xasprintf("context %s: authentication failed (%s): %s", nip,
	    outcome, reason ? log_escape(reason, strlen(reason), 300) : "?");
	alert_raise(k->alert, ALERT_AUTH, nip, outcome, msg);
	free(msg);
}

/* GET /metrics. */
static void
ksefd_metrics_cb(struct buf *out, void *arg)
{
	struct ksefd *k = arg;

	metrics_render(k->metrics, out);
}

/* GET /v1/status. */
static void *
ksefd_status_cb(void *arg)
{
	struct ksefd *k = arg;

	return metrics_status(k->metrics);
}

/*
 * A reconciliation finding: an alert.  For an invoice the cause is the kind
 * of finding (a stuck invoice found again by the next run stays quiet); an
 * orphan has the context as subject and its detail (KSeF number) as cause.
 */
static void
ksefd_reconcile_alert_cb(const char *kind, const char *nip,
    const unsigned char *key, const char *detail, void *arg)
{
	struct ksefd *k = arg;
	char subject[INV_KEY_LEN * 2 + 1], shortkey[17] = "-", *msg;
	int local = strcmp(kind, "orphan") != 0 && strcmp(kind, "missing") != 0 &&
	    strcmp(kind, "mismatch") != 0;

	if (key != NULL) {
		hex_encode(key, INV_KEY_LEN, subject);
		record_key_short(key, shortkey);
	} else
		snprintf(subject, sizeof(subject), "%s", nip);
	msg = xasprintf("reconcile %s: %s %s: %s", kind, nip, shortkey,
	    log_escape(detail, strlen(detail), 300));
	alert_raise(k->alert, local ? ALERT_STUCK : ALERT_RECONCILE, subject,
	    key != NULL ? kind : detail, msg);
	free(msg);
}

/* POST /v1/reconcile. */
static void *
ksefd_reconcile_cb(int64_t since_ms, void *arg)
{
	struct ksefd *k = arg;
	int rc = reconcile_run(k->reconcile, since_ms);

	return json_pack("{s:b, s:s}", "started", rc == 0, "message", rc == 0 ?
	    "reconciliation started" : "a reconciliation is under way");
}

/* GET /v1/reconcile/last. */
static void *
ksefd_reconcile_last_cb(void *arg)
{
	struct ksefd *k = arg;
	char *s = reconcile_last_json(k->reconcile);
	json_t *o;

	if (s == NULL)
		return NULL;
	o = json_loads(s, 0, NULL);
	free(s);
	return o;
}

/* Start the pipeline: the KSeF transport and the scheduler. */
static void
ksefd_sched_start(struct ksefd *k)
{
	struct http_options ho;
	struct api_ops ops = { .retry = ksefd_retry_cb, .stats = ksefd_stats_cb };

	memset(&ho, 0, sizeof(ho));
	ho.ca_file = k->conf->ca_file;
	ho.connect_timeout_ms = k->conf->connect_timeout;
	ho.timeout_ms = k->conf->request_timeout;
	/* Over HTTP/1.1 a request in flight needs a connection of its own. */
	ho.max_host_connections = (long)k->conf->max_in_flight;
	k->http = http_new(k->base, &ho);
	k->sched = sched_new(k->base, k->store, k->http, k->conf);
	k->latarnia = latarnia_new(k->base, k->http, ksefd_latarnia_cb, k);
	ksefd_latarnia_configure(k, k->conf);
	intake_set_notify(k->intake, ksefd_invoice_new_cb, k);
	ops.arg = k;
	k->reconcile = reconcile_new(k->base, k->store, k->sched, k->conf);
	reconcile_alert_set(k->reconcile, ksefd_reconcile_alert_cb, k);
	ops.reconcile = ksefd_reconcile_cb;
	ops.reconcile_last = ksefd_reconcile_last_cb;
	k->metrics = metrics_new(k->store, k->sched);
	metrics_latarnia_set(k->metrics, k->latarnia);
	ops.metrics = ksefd_metrics_cb;
	ops.status = ksefd_status_cb;
	ops.hold = ksefd_hold_cb;
	ops.reload = ksefd_reload_api_cb;
	api_set_ops(k->api, &ops);
	k->alert = alert_new(k->base, k->http, k->store, k->conf);
	sched_alert_set(k->sched, ksefd_alert_cb, k);
	sched_auth_alert_set(k->sched, ksefd_auth_alert_cb, k);
}

/* Reload hook: new validation rules, API token and limits, spool settings. */
static void
ksefd_reload_cb(const struct conf *old, const struct conf *new, void *arg)
{
	struct ksefd *k = arg;
	struct validator *v;
	char err[512];

	if ((v = ksefd_validator_new(new, err, sizeof(err))) == NULL)
		log_warnx("ksefd: %s; invoices are still checked by the old "
		    "rules", err);
	else {
		intake_set_validator(k->intake, v);
		validator_free(k->validator);
		k->validator = v;
	}
	api_update(k->api, new->api_token, (size_t)new->api_max_body);
	http_ca_file_set(k->http, new->ca_file);
	http_max_host_connections_set(k->http, (long)new->max_in_flight);
	sched_update(k->sched, new);
	reconcile_update(k->reconcile, new);
	ksefd_latarnia_configure(k, new);
	alert_update(k->alert, new);
	if ((old->spool_directory == NULL) != (new->spool_directory == NULL) ||
	    (old->spool_directory != NULL &&
	    strcmp(old->spool_directory, new->spool_directory) != 0)) {
		spool_free(k->spool);
		k->spool = NULL;
		ksefd_spool_start(k, new);
	} else if (k->spool != NULL)
		spool_update(k->spool, new->spool_rescan_interval,
		    (size_t)new->api_max_body);
}

/*
 * Shutdown: take no more work, commit what is pending (which sends the
 * answers that waited for it), give the loop one pass to write them out,
 * then free everything.
 */
static void
ksefd_shutdown(struct ksefd *k)
{
	api_stop(k->api);
	spool_free(k->spool);
	k->spool = NULL;
	/* Requests in flight are abandoned: their records say where they were. */
	sched_stop(k->sched);
	latarnia_free(k->latarnia);
	k->latarnia = NULL;
	metrics_free(k->metrics);
	k->metrics = NULL;
	sched_free(k->sched);
	k->sched = NULL;
	reconcile_free(k->reconcile);	/* after the queries it made are gone */
	k->reconcile = NULL;
	alert_free(k->alert);
	k->alert = NULL;
	http_free(k->http);
	k->http = NULL;
	if (store_flush(k->store) != STORE_COMMITTED)
		log_warnx("ksefd: the last changes could not be committed");
	event_base_loop(k->base, EVLOOP_NONBLOCK);
	api_free(k->api);
	intake_free(k->intake);
	validator_free(k->validator);
	validate_shutdown();
	store_close(k->store);
}

/* Load the config, or print every error and exit 1. */
static struct conf *
ksefd_conf_load(const char *path, int checkonly)
{
	struct conf_msgs errs = { NULL, 0 };
	struct conf *conf;
	size_t i;

	if ((conf = conf_load(path, &errs)) != NULL)
		return conf;
	for (i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.v[i]);
	if (!checkonly)
		fprintf(stderr, "ksefd: config file %s has errors, not "
		    "starting\n", path);
	conf_msgs_free(&errs);
	exit(1);
}

/*
 * The malloc that serves ksefd and its libraries: "tcmalloc 2.10" when
 * configure linked it (and malloc resolves to it, which it does when the
 * library comes before libc; a preloaded allocator would take it over),
 * otherwise "glibc".  For -V and the start line.
 */
static const char *
ksefd_malloc_name(char *buf, size_t len)
{
#ifdef HAVE_TCMALLOC
	int major = 0, minor = 0;

	(void)tc_version(&major, &minor, NULL);
	snprintf(buf, len, "tcmalloc %d.%d%s", major, minor,
	    (uintptr_t)malloc == (uintptr_t)tc_malloc ? "" :
	    " (linked, but malloc is not tcmalloc's)");
#else
	snprintf(buf, len, "glibc");
#endif
	return buf;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ksefd k;
	const char *conffile = KSEFD_CONF_DEFAULT;
	char err[512], mbuf[80];
	int ch, foreground = 0, checkonly = 0, report_fd = -1;

	memset(&k, 0, sizeof(k));
	k.pid_fd = -1;
	while ((ch = getopt_long(argc, argv, "df:hnvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			foreground = 1;
			break;
		case 'f':
			conffile = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'n':
			checkonly = 1;
			break;
		case 'v':
			k.verbose++;
			break;
		case 'V':
			printf("ksefd %s\n", PACKAGE_VERSION);
			printf("malloc: %s\n", ksefd_malloc_name(mbuf,
			    sizeof(mbuf)));
#ifdef KSEFD_FAILPOINTS
			printf("failpoints compiled in (KSEFD_FAILPOINTS)\n");
#endif
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	log_init("ksefd", 1, LOG_LVL_INFO + k.verbose);
	k.conf = ksefd_conf_load(conffile, checkonly);
	if (checkonly) {
		printf("configuration OK\n");
		conf_free(k.conf);
		return 0;
	}
	conf_log_apply(k.conf, k.verbose);

	if (!foreground) {
		ksefd_pidfile_lock(&k, k.conf->pid_file);
		report_fd = ksefd_daemonize();
		ksefd_pidfile_write(&k);
	}
	/* Writes to a closed socket must come back as EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);
#ifndef HAVE_TCMALLOC
	/*
	 * Invoice bodies and parse trees come and go at high rates; keep freed
	 * heap instead of returning it to the kernel and faulting it back in
	 * for every request (measured: scripts/bench intake, doc/performance.md).
	 * tcmalloc keeps freed memory by itself.
	 */
	mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
	mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
#endif
	failpoint_init();

	k.base = ksefd_base_new();
	k.ev_hup = ksefd_signal_add(&k, SIGHUP, ksefd_sighup_cb);
	k.ev_term = ksefd_signal_add(&k, SIGTERM, ksefd_sigterm_cb);
	k.ev_int = ksefd_signal_add(&k, SIGINT, ksefd_sigterm_cb);

	if ((k.store = store_open(k.base, k.conf->database,
	    (size_t)k.conf->map_size, 0, err, sizeof(err))) == NULL)
		fatalx("ksefd: %s", err);
	/* More writes per fsync under load (doc/performance.md). */
	store_commit_gap_set(k.store, 2000);

	ksefd_intake_start(&k);
	ksefd_sched_start(&k);
	conf_reload_hook_add(ksefd_reload_cb, &k);

	if (!foreground) {
		ksefd_detach_done(report_fd);
		log_init("ksefd", 0, log_getlevel());
	}
	log_info("ksefd: ksefd %s started: KSeF %s (%s), %zu context%s, "
	    "database %s, malloc %s", PACKAGE_VERSION, k.conf->environment,
	    k.conf->base_url, k.conf->ncontexts, k.conf->ncontexts == 1 ?
	    "" : "s", k.conf->database, ksefd_malloc_name(mbuf, sizeof(mbuf)));

	if (event_base_dispatch(k.base) == -1)
		log_warnx("ksefd: event loop failed");

	ksefd_shutdown(&k);
	event_free(k.ev_hup);
	event_free(k.ev_term);
	event_free(k.ev_int);
	event_base_free(k.base);
	conf_reload_hooks_clear();
	conf_free(k.conf);
	if (k.pid_file != NULL) {
		unlink(k.pid_file);
		close(k.pid_fd);
		free(k.pid_file);
	}
	log_info("ksefd: exiting");
	return 0;
}
