/* alert.c: alerts once per cause, to syslog, a command and a webhook, without blocking the loop. */
#include "config.h"

#include <sys/queue.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "alert.h"
#include "conf.h"
#include "http.h"
#include "log.h"
#include "map.h"
#include "store.h"
#include "util.h"

#define ALERT_CMD_MAX		16	/* commands running at once */
#define ALERT_REAP_MS		50	/* how often a running command is checked */
#define ALERT_HOOK_TRIES	6	/* webhook attempts per alert */
#define ALERT_HOOK_BACKOFF_MS	1000	/* first retry; doubles, capped */
#define ALERT_HOOK_BACKOFF_MAX	60000
#define ALERT_DB_CHECK_MS	60000
#define ALERT_PRUNE_AT		10000	/* remembered causes before pruning */
#define ALERT_META_NAME_MAX	400	/* longer subjects are not kept in meta */

/* What fired last for one (kind, subject). */
struct alert_seen {
	char		*cause;
	int64_t		 fired_ms;
};

/* A running alert command. */
struct alert_cmd {
	TAILQ_ENTRY(alert_cmd) entry;
	struct alert	*a;
	pid_t		 pid;
	int		 fd;		/* its stdin; -1 once written or closed */
	struct event	*ev_write;
	struct event	*ev_reap;
	unsigned char	*data;
	size_t		 len, off;
	int64_t		 deadline;	/* monotonic ms */
	int		 killed;
	uint64_t	 id;
};

/* A webhook delivery, in flight or waiting to retry. */
struct alert_hook {
	TAILQ_ENTRY(alert_hook) entry;
	struct alert	*a;
	char		*url;
	char		*body;
	size_t		 len;
	int		 attempt;
	struct http_request *req;	/* in flight */
	struct event	*ev_retry;
	uint64_t	 id;
};

/* An outage being timed for one subject. */
struct alert_outage {
	struct alert	*a;
	char		*subject;
	int64_t		 since_ms;	/* wall clock */
	int		 fired;
	struct event	*ev;
};

struct alert {
	struct event_base *base;
	struct http	*http;
	struct store	*store;
	int		 syslog;
	char		*command;
	int64_t		 command_timeout;
	char		*webhook;
	int64_t		 reminder;
	int64_t		 outage_after;
	int64_t		 db_full_percent;
	struct map	*seen;		/* kind byte + subject -> alert_seen */
	struct map	*outages;	/* subject -> alert_outage */
	struct event	*ev_db;
	uint64_t	 next_id;
	unsigned	 ncmds;
	TAILQ_HEAD(, alert_cmd) cmds;
	TAILQ_HEAD(, alert_hook) hooks;
	char		 host[256];
};

static const char *alert_kind_names[ALERT_KIND_COUNT] = {
	"rejected", "failed", "stuck", "reconcile", "auth", "outage", "db_full"
};

const char *
alert_kind_name(enum alert_kind kind)
{
	if ((unsigned)kind >= ALERT_KIND_COUNT)
		return "unknown";
	return alert_kind_names[kind];
}

/* The dedup key: one kind byte, then the subject. Caller frees. */
static char *
alert_key(enum alert_kind kind, const char *subject, size_t *lenp)
{
	size_t n = strlen(subject);
	char *k = xmalloc(n + 1);

	k[0] = (char)('a' + kind);
	memcpy(k + 1, subject, n);
	*lenp = n + 1;
	return k;
}

static void
alert_seen_free(struct alert_seen *s)
{
	free(s->cause);
	free(s);
}

static int
alert_seen_free_cb(const void *key, size_t len, void *val, void *arg)
{
	alert_seen_free(val);
	return 0;
}

struct alert_prune {
	int64_t		 before;
	char		**keys;
	size_t		*lens;
	size_t		 n;
};

static int
alert_prune_cb(const void *key, size_t len, void *val, void *arg)
{
	struct alert_prune *p = arg;
	struct alert_seen *s = val;

	if (s->fired_ms < p->before) {
		p->keys[p->n] = xmalloc(len);
		memcpy(p->keys[p->n], key, len);
		p->lens[p->n++] = len;
	}
	return 0;
}

/* Forget causes whose reminder has passed anyway: they would fire again. */
static void
alert_seen_prune(struct alert *a, int64_t now)
{
	struct alert_prune p;
	size_t i, n = map_count(a->seen);

	p.before = now - a->reminder;
	p.keys = xcalloc(n, sizeof(*p.keys));
	p.lens = xcalloc(n, sizeof(*p.lens));
	p.n = 0;
	map_foreach(a->seen, alert_prune_cb, &p);
	for (i = 0; i < p.n; i++) {
		alert_seen_free(map_del(a->seen, p.keys[i], p.lens[i]));
		free(p.keys[i]);
	}
	free(p.keys);
	free(p.lens);
}

/*
 * The store's meta name of a (kind, subject): "alert/KIND/SUBJECT"; NULL
 * without a store or when too long to keep.  Caller frees.
 */
static char *
alert_meta_name(struct alert *a, enum alert_kind kind, const char *subject)
{
	if (a->store == NULL || strlen(subject) > ALERT_META_NAME_MAX)
		return NULL;
	return xasprintf("alert/%s/%s", alert_kind_name(kind), subject);
}

/* What fired last for (kind, subject) before a restart: "MS CAUSE" in meta. */
static struct alert_seen *
alert_seen_load(struct alert *a, enum alert_kind kind, const char *subject)
{
	struct alert_seen *s = NULL;
	unsigned char *val;
	char *name, *end, *str;
	size_t len;
	long long ms;

	if ((name = alert_meta_name(a, kind, subject)) == NULL)
		return NULL;
	if (store_meta_get(a->store, name, &val, &len) == 0) {
		str = xstrndup((char *)val, len);
		errno = 0;
		ms = strtoll(str, &end, 10);
		if (errno == 0 && end != str && *end == ' ') {
			s = xcalloc(1, sizeof(*s));
			s->fired_ms = ms;
			s->cause = xstrdup(end + 1);
		} else
			log_warnx("alert: meta %s: not \"MS CAUSE\", ignored",
			    log_escape(name, strlen(name), 100));
		free(str);
		free(val);
	}
	free(name);
	return s;
}

/* Keep what fired, so a restart does not fire it again. */
static void
alert_seen_save(struct alert *a, enum alert_kind kind, const char *subject,
    const struct alert_seen *s)
{
	char *name, *val;

	if ((name = alert_meta_name(a, kind, subject)) == NULL)
		return;
	val = xasprintf("%lld %s", (long long)s->fired_ms, s->cause);
	if (store_meta_put(a->store, name, val, strlen(val)) == -1)
		log_warnx("alert: %s not kept in the database: it may fire "
		    "again after a restart", log_escape(name, strlen(name), 100));
	free(val);
	free(name);
}

/* --- command sink --------------------------------------------------------- */

static void
alert_cmd_free(struct alert_cmd *c)
{
	TAILQ_REMOVE(&c->a->cmds, c, entry);
	c->a->ncmds--;
	if (c->ev_write != NULL)
		event_free(c->ev_write);
	event_free(c->ev_reap);
	if (c->fd != -1)
		close(c->fd);
	free(c->data);
	free(c);
}

/* Stop feeding the command its stdin. */
static void
alert_cmd_close(struct alert_cmd *c)
{
	if (c->ev_write != NULL) {
		event_free(c->ev_write);
		c->ev_write = NULL;
	}
	if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
}

/* The command's stdin is writable: write more of the alert, close at the end. */
static void
alert_cmd_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct alert_cmd *c = arg;
	ssize_t n;

	n = write(c->fd, c->data + c->off, c->len - c->off);
	if (n == -1) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		/* EPIPE: it did not read its input; its exit status tells. */
		log_debug("alert: command pid %ld: writing the alert: %s",
		    (long)c->pid, strerror(errno));
		alert_cmd_close(c);
		return;
	}
	c->off += (size_t)n;
	if (c->off == c->len)
		alert_cmd_close(c);
}

/* Has the command ended?  Kill it at its deadline; log how it ended. */
static void
alert_cmd_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct alert_cmd *c = arg;
	int status;
	pid_t r;

	r = waitpid(c->pid, &status, WNOHANG);
	if (r == 0) {
		if (!c->killed && time_mono_ms() >= c->deadline) {
			log_warnx("alert: command pid %ld for alert %llu still "
			    "running after %lld ms (alert.command_timeout), "
			    "killing it", (long)c->pid,
			    (unsigned long long)c->id,
			    (long long)c->a->command_timeout);
			kill(-c->pid, SIGKILL);
			kill(c->pid, SIGKILL);
			c->killed = 1;
		}
		return;
	}
	if (r == -1) {
		if (errno == EINTR)
			return;
		log_warn("alert: command pid %ld: waitpid", (long)c->pid);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		log_info("alert: command pid %ld for alert %llu exited 0",
		    (long)c->pid, (unsigned long long)c->id);
	else if (WIFEXITED(status))
		log_warnx("alert: command pid %ld for alert %llu exited with "
		    "status %d", (long)c->pid, (unsigned long long)c->id,
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		log_warnx("alert: command pid %ld for alert %llu killed by "
		    "signal %d%s", (long)c->pid, (unsigned long long)c->id,
		    WTERMSIG(status), c->killed ? " (timeout)" : "");
	alert_cmd_free(c);
}

/*
 * Run alert.command through /bin/sh in its own process group with the
 * JSON on its stdin; the loop writes the input and reaps it later.
 */
static void
alert_cmd_spawn(struct alert *a, const char *json, size_t len, uint64_t id)
{
	struct alert_cmd *c;
	struct timeval tv = { 0, ALERT_REAP_MS * 1000 };
	int fds[2], devnull;
	pid_t pid;

	if (a->ncmds >= ALERT_CMD_MAX) {
		log_warnx("alert: %u alert commands still running, alert %llu "
		    "not given to alert.command", a->ncmds,
		    (unsigned long long)id);
		return;
	}
	if (pipe2(fds, O_CLOEXEC) == -1) {
		log_warn("alert: alert %llu: pipe for alert.command",
		    (unsigned long long)id);
		return;
	}
	if ((devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)) == -1) {
		log_warn("alert: /dev/null");
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if ((pid = fork()) == -1) {
		log_warn("alert: alert %llu: fork for alert.command",
		    (unsigned long long)id);
		close(fds[0]);
		close(fds[1]);
		close(devnull);
		return;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here. */
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		if (dup2(fds[0], STDIN_FILENO) == -1 ||
		    dup2(devnull, STDOUT_FILENO) == -1)
			_exit(127);
		/* Not the database, sockets or listeners of the daemon. */
		close_range(3, ~0U, 0);
		execl("/bin/sh", "sh", "-c", a->command, (char *)NULL);
		_exit(127);
	}
	/* Also here, so kill(-pid) works even before the child ran. */
	setpgid(pid, pid);
	close(fds[0]);
	close(devnull);
	if (fcntl(fds[1], F_SETFL, O_NONBLOCK) == -1)
		log_warn("alert: O_NONBLOCK on the command's stdin");
	c = xcalloc(1, sizeof(*c));
	c->a = a;
	c->pid = pid;
	c->fd = fds[1];
	c->id = id;
	c->data = xmalloc(len);
	memcpy(c->data, json, len);
	c->len = len;
	c->deadline = time_mono_ms() + a->command_timeout;
	TAILQ_INSERT_TAIL(&a->cmds, c, entry);
	a->ncmds++;
	if ((c->ev_write = event_new(a->base, c->fd, EV_WRITE | EV_PERSIST,
	    alert_cmd_write_cb, c)) == NULL ||
	    (c->ev_reap = event_new(a->base, -1, EV_PERSIST,
	    alert_cmd_reap_cb, c)) == NULL)
		fatalx("alert: cannot create events");
	event_add(c->ev_write, NULL);
	event_add(c->ev_reap, &tv);
	log_debug("alert: alert %llu given to command pid %ld",
	    (unsigned long long)id, (long)pid);
}

/* --- webhook sink --------------------------------------------------------- */

static void
alert_hook_free(struct alert_hook *h)
{
	TAILQ_REMOVE(&h->a->hooks, h, entry);
	if (h->req != NULL)
		http_request_cancel(h->a->http, h->req);
	if (h->ev_retry != NULL)
		event_free(h->ev_retry);
	free(h->url);
	free(h->body);
	free(h);
}

static void alert_hook_start(struct alert_hook *);

static void
alert_hook_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	alert_hook_start(arg);
}

/* The webhook answered (or not): done on 2xx, else retry with backoff. */
static void
alert_hook_done_cb(struct http_response *resp, void *arg)
{
	struct alert_hook *h = arg;
	struct timeval tv;
	int64_t delay;
	int final;

	h->req = NULL;
	if (resp->outcome == HTTP_OUT_OK && resp->status >= 200 &&
	    resp->status < 300) {
		log_debug("alert: alert %llu delivered to the webhook (%ld)",
		    (unsigned long long)h->id, resp->status);
		alert_hook_free(h);
		return;
	}
	final = resp->outcome == HTTP_OUT_REFUSED ||
	    resp->outcome == HTTP_OUT_CANCELLED ||
	    h->attempt >= ALERT_HOOK_TRIES;
	if (resp->outcome == HTTP_OUT_OK)
		log_warnx("alert: webhook answered %ld to alert %llu "
		    "(attempt %d)%s", resp->status, (unsigned long long)h->id,
		    h->attempt, final ? ", giving up" : "");
	else
		log_warnx("alert: webhook for alert %llu failed (attempt %d): "
		    "%s: %s%s", (unsigned long long)h->id, h->attempt,
		    http_outcome_name(resp->outcome),
		    log_escape(resp->error, strlen(resp->error), 200),
		    final ? ", giving up" : "");
	if (final) {
		alert_hook_free(h);
		return;
	}
	delay = ALERT_HOOK_BACKOFF_MS << (h->attempt - 1);
	if (delay > ALERT_HOOK_BACKOFF_MAX)
		delay = ALERT_HOOK_BACKOFF_MAX;
	tv.tv_sec = delay / 1000;
	tv.tv_usec = (delay % 1000) * 1000;
	evtimer_add(h->ev_retry, &tv);
}

/* POST the alert (again). */
static void
alert_hook_start(struct alert_hook *h)
{
	struct http_request *req;
	char *body;

	h->attempt++;
	req = http_request_new(HTTP_POST, h->url);
	http_request_header_add(req, "Content-Type", "application/json");
	body = xmalloc(h->len);
	memcpy(body, h->body, h->len);
	http_request_body_take(req, body, h->len);
	h->req = req;
	http_request_start(h->a->http, req, alert_hook_done_cb, h);
}

static void
alert_hook_send(struct alert *a, const char *json, size_t len, uint64_t id)
{
	struct alert_hook *h;

	if (a->http == NULL) {
		log_warnx("alert: no transport for alert.webhook");
		return;
	}
	h = xcalloc(1, sizeof(*h));
	h->a = a;
	h->url = xstrdup(a->webhook);
	h->body = xmalloc(len);
	memcpy(h->body, json, len);
	h->len = len;
	h->id = id;
	if ((h->ev_retry = evtimer_new(a->base, alert_hook_retry_cb, h)) == NULL)
		fatalx("alert: cannot create an event");
	TAILQ_INSERT_TAIL(&a->hooks, h, entry);
	alert_hook_start(h);
}

/* --- raising -------------------------------------------------------------- */

/* Send one alert to every sink. */
static void
alert_fire(struct alert *a, enum alert_kind kind, const char *subject,
    const char *cause, const char *message, int reminder, int64_t now)
{
	char when[32], *json;
	json_t *o;
	uint64_t id = ++a->next_id;
	size_t len;

	if (a->syslog)
		log_alert("alert: %s%s", message, reminder ? " (reminder)" : "");
	if (a->command == NULL && a->webhook == NULL)
		return;
	time_fmt_iso(now, when, sizeof(when));
	o = json_object();
	json_object_set_new(o, "id", json_integer((json_int_t)id));
	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "kind", json_string(alert_kind_name(kind)));
	json_object_set_new(o, "subject", json_string(subject));
	json_object_set_new(o, "cause", json_string(cause));
	json_object_set_new(o, "message", json_string(message));
	json_object_set_new(o, "reminder", json_boolean(reminder));
	json_object_set_new(o, "host", json_string(a->host));
	/* Invalid UTF-8 in a cause makes json_string() NULL: the key is left out. */
	json = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (json == NULL) {
		log_warnx("alert: alert %llu could not be put in JSON",
		    (unsigned long long)id);
		return;
	}
	len = strlen(json);
	json = xrealloc(json, len + 2);
	json[len++] = '\n';
	json[len] = '\0';
	if (a->command != NULL)
		alert_cmd_spawn(a, json, len, id);
	if (a->webhook != NULL)
		alert_hook_send(a, json, len, id);
	free(json);
}

int
alert_raise_at(struct alert *a, enum alert_kind kind, const char *subject,
    const char *cause, const char *message, int64_t now)
{
	struct alert_seen *s;
	char *key;
	size_t klen;
	int reminder = 0;

	if (cause == NULL)
		cause = "";
	key = alert_key(kind, subject, &klen);
	if ((s = map_get(a->seen, key, klen)) == NULL &&
	    (s = alert_seen_load(a, kind, subject)) != NULL)
		map_put(a->seen, key, klen, s);
	if (s != NULL) {
		if (strcmp(s->cause, cause) == 0) {
			if (now - s->fired_ms < a->reminder) {
				log_debug("alert: %s %s: unchanged, not "
				    "repeated", alert_kind_name(kind),
				    log_escape(subject, strlen(subject), 80));
				free(key);
				return 0;
			}
			reminder = 1;
		}
		free(s->cause);
	} else {
		if (map_count(a->seen) >= ALERT_PRUNE_AT)
			alert_seen_prune(a, now);
		s = xcalloc(1, sizeof(*s));
		map_put(a->seen, key, klen, s);
	}
	s->cause = xstrdup(cause);
	s->fired_ms = now;
	free(key);
	alert_seen_save(a, kind, subject, s);
	alert_fire(a, kind, subject, cause, message, reminder, now);
	return 1;
}

int
alert_raise(struct alert *a, enum alert_kind kind, const char *subject,
    const char *cause, const char *message)
{
	return alert_raise_at(a, kind, subject, cause, message, time_now_ms());
}

void
alert_clear(struct alert *a, enum alert_kind kind, const char *subject)
{
	struct alert_seen *s;
	unsigned char *val;
	char *key, *name;
	size_t klen, len;

	key = alert_key(kind, subject, &klen);
	if ((s = map_del(a->seen, key, klen)) != NULL)
		alert_seen_free(s);
	free(key);
	if ((name = alert_meta_name(a, kind, subject)) != NULL) {
		if (store_meta_get(a->store, name, &val, &len) == 0) {
			free(val);
			store_meta_del(a->store, name);
		}
		free(name);
	}
}

/* --- outages -------------------------------------------------------------- */

/* An outage lasted alert.outage_after: alert once for it. */
static void
alert_outage_cb(evutil_socket_t fd, short what, void *arg)
{
	struct alert_outage *o = arg;
	char since[32], *msg;

	o->fired = 1;
	time_fmt_iso(o->since_ms, since, sizeof(since));
	msg = xasprintf("KSeF unavailable for %s since %s (longer than "
	    "alert.outage_after)", o->subject, since);
	alert_raise(o->a, ALERT_OUTAGE, o->subject, since, msg);
	free(msg);
}

static void
alert_outage_free(struct alert_outage *o)
{
	event_free(o->ev);
	free(o->subject);
	free(o);
}

static int
alert_outage_free_cb(const void *key, size_t len, void *val, void *arg)
{
	alert_outage_free(val);
	return 0;
}

static void
alert_timer_add(struct event *ev, int64_t ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(ev, &tv);
}

void
alert_outage_set(struct alert *a, const char *subject, int down)
{
	struct alert_outage *o;
	size_t len = strlen(subject);

	o = map_get(a->outages, subject, len);
	if (down) {
		if (o != NULL)
			return;
		o = xcalloc(1, sizeof(*o));
		o->a = a;
		o->subject = xstrdup(subject);
		o->since_ms = time_now_ms();
		if ((o->ev = evtimer_new(a->base, alert_outage_cb, o)) == NULL)
			fatalx("alert: cannot create an event");
		map_put(a->outages, subject, len, o);
		alert_timer_add(o->ev, a->outage_after);
		return;
	}
	if (o == NULL)
		return;
	map_del(a->outages, subject, len);
	if (o->fired)
		log_info("alert: KSeF available again for %s",
		    log_escape(subject, len, 80));
	alert_clear(a, ALERT_OUTAGE, subject);
	alert_outage_free(o);
}

/* --- database fullness ---------------------------------------------------- */

void
alert_db_check(struct alert *a)
{
	struct store_stats st;
	char *msg, cause[32];
	int64_t pct;

	if (a->store == NULL)
		return;
	store_stats_get(a->store, &st);
	if (st.map_size == 0)
		return;
	pct = (int64_t)((double)st.map_used * 100.0 / (double)st.map_size);
	if (pct < a->db_full_percent) {
		alert_clear(a, ALERT_DB_FULL, "database");
		return;
	}
	/* One cause per size: a grown map is a new situation. */
	snprintf(cause, sizeof(cause), "%zu", st.map_size);
	msg = xasprintf("database %lld%% full (%zu of %zu bytes, "
	    "alert.db_full_percent %lld)", (long long)pct, st.map_used,
	    st.map_size, (long long)a->db_full_percent);
	alert_raise(a, ALERT_DB_FULL, "database", cause, msg);
	free(msg);
}

static void
alert_db_cb(evutil_socket_t fd, short what, void *arg)
{
	struct alert *a = arg;

	alert_db_check(a);
	alert_timer_add(a->ev_db, ALERT_DB_CHECK_MS);
}

/* --- life cycle ----------------------------------------------------------- */

void
alert_update(struct alert *a, const struct conf *conf)
{
	free(a->command);
	free(a->webhook);
	a->syslog = conf->alert_syslog;
	a->command = conf->alert_command != NULL ?
	    xstrdup(conf->alert_command) : NULL;
	a->command_timeout = conf->alert_command_timeout;
	a->webhook = conf->alert_webhook != NULL ?
	    xstrdup(conf->alert_webhook) : NULL;
	a->reminder = conf->alert_reminder;
	a->outage_after = conf->alert_outage_after;
	a->db_full_percent = conf->alert_db_full_percent;
}

struct alert *
alert_new(struct event_base *base, struct http *http, struct store *store,
    const struct conf *conf)
{
	struct alert *a;

	a = xcalloc(1, sizeof(*a));
	a->base = base;
	a->http = http;
	a->store = store;
	a->seen = map_new();
	a->outages = map_new();
	TAILQ_INIT(&a->cmds);
	TAILQ_INIT(&a->hooks);
	if (gethostname(a->host, sizeof(a->host) - 1) == -1)
		snprintf(a->host, sizeof(a->host), "unknown");
	alert_update(a, conf);
	if (store != NULL) {
		if ((a->ev_db = evtimer_new(base, alert_db_cb, a)) == NULL)
			fatalx("alert: cannot create an event");
		alert_timer_add(a->ev_db, 1000);
	}
	return a;
}

unsigned
alert_commands_running(const struct alert *a)
{
	return a->ncmds;
}

void
alert_free(struct alert *a)
{
	struct alert_cmd *c;
	int status;

	if (a == NULL)
		return;
	while ((c = TAILQ_FIRST(&a->cmds)) != NULL) {
		log_warnx("alert: command pid %ld for alert %llu still running "
		    "at shutdown, killing it", (long)c->pid,
		    (unsigned long long)c->id);
		kill(-c->pid, SIGKILL);
		kill(c->pid, SIGKILL);
		while (waitpid(c->pid, &status, 0) == -1 && errno == EINTR)
			;
		alert_cmd_free(c);
	}
	while (!TAILQ_EMPTY(&a->hooks))
		alert_hook_free(TAILQ_FIRST(&a->hooks));
	if (a->ev_db != NULL)
		event_free(a->ev_db);
	map_foreach(a->seen, alert_seen_free_cb, NULL);
	map_free(a->seen);
	map_foreach(a->outages, alert_outage_free_cb, NULL);
	map_free(a->outages);
	free(a->command);
	free(a->webhook);
	free(a);
}
