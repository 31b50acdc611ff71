/* conf.c: parse and validate ksefd.conf (libinih) into a struct conf; diff two of them. */
#include "config.h"

#include <sys/types.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "conf.h"
#include "log.h"
#include "util.h"

#define CONF_MAX_ERRORS	100
#define MIN_1MS			1
#define DAY_MS			(86400LL * 1000)

/* How a value is parsed, stored and printed. */
enum key_type {
	K_STR,		/* char *, any text */
	K_PATH,		/* char *, made absolute */
	K_SECRET,	/* char * path; the file's contents go to api_token */
	K_URL,		/* char *, https, or http to loopback */
	K_URLOFF,	/* K_URL, or "off" (NULL) */
	K_LISTEN,	/* char *, loopback host:port */
	K_ENV,		/* char * environment, sets env */
	K_DUR,		/* int64_t ms */
	K_SIZE,		/* int64_t bytes */
	K_INT,		/* int64_t */
	K_BOOL,		/* int */
	K_MODE,		/* int, octal permission bits */
	K_LEVEL,	/* int, LOG_LVL_* */
	K_TRACE,	/* unsigned int, TRACE_* */
};

struct key {
	const char	*section;
	const char	*name;
	enum key_type	 type;
	size_t		 off;
	const char	*def;		/* parsed like a value; NULL = unset */
	int64_t		 min, max;	/* K_DUR, K_SIZE, K_INT */
	int		 restart;	/* cannot change without a restart */
};

#define OFF(f)	offsetof(struct conf, f)
#define NOMAX	INT64_MAX

static const struct key keys[] = {
	{ "daemon", "pid_file", K_PATH, OFF(pid_file), "/run/ksefd.pid", 0, 0, 1 },
	{ "log", "level", K_LEVEL, OFF(log_level), "info", 0, 0, 0 },
	{ "log", "trace", K_TRACE, OFF(log_trace), "none", 0, 0, 0 },
	{ "ksef", "environment", K_ENV, OFF(environment), "test", 0, 0, 0 },
	{ "ksef", "ca_file", K_PATH, OFF(ca_file), NULL, 0, 0, 0 },
	{ "ksef", "latarnia_url", K_URLOFF, OFF(latarnia_url), NULL, 0, 0, 0 },
	{ "ksef", "connect_timeout", K_DUR, OFF(connect_timeout), "10s", MIN_1MS, DAY_MS, 0 },
	{ "ksef", "request_timeout", K_DUR, OFF(request_timeout), "60s", MIN_1MS, DAY_MS, 0 },
	{ "ksef", "max_in_flight", K_INT, OFF(max_in_flight), "8", 1, 1000, 0 },
	{ "ksef", "token_refresh_margin", K_DUR, OFF(token_refresh_margin), "60s", 0, DAY_MS, 0 },
	{ "storage", "database", K_PATH, OFF(database), "/var/lib/ksefd", 0, 0, 1 },
	{ "storage", "map_size", K_SIZE, OFF(map_size), "1G", 1024 * 1024, NOMAX, 1 },
	{ "api", "socket", K_PATH, OFF(api_socket), "/run/ksefd/ksefd.sock", 0, 0, 1 },
	{ "api", "socket_mode", K_MODE, OFF(api_socket_mode), "0660", 0, 0, 0 },
	{ "api", "listen", K_LISTEN, OFF(api_listen), NULL, 0, 0, 1 },
	{ "api", "token_file", K_SECRET, OFF(api_token_file), NULL, 0, 0, 0 },
	{ "api", "max_body", K_SIZE, OFF(api_max_body), "1M", 1024, 1024LL * 1024 * 1024, 0 },
	{ "spool", "directory", K_PATH, OFF(spool_directory), NULL, 0, 0, 0 },
	{ "spool", "rescan_interval", K_DUR, OFF(spool_rescan_interval), "60s", MIN_1MS, NOMAX, 0 },
	{ "intake", "future_tolerance", K_DUR, OFF(future_tolerance), "1d", 0, NOMAX, 0 },
	{ "intake", "fa2", K_STR, OFF(intake_fa2), "auto", 0, 0, 0 },
	{ "retry", "backoff_min", K_DUR, OFF(backoff_min), "5s", MIN_1MS, NOMAX, 0 },
	{ "retry", "backoff_max", K_DUR, OFF(backoff_max), "30m", MIN_1MS, NOMAX, 0 },
	{ "retry", "max_age", K_DUR, OFF(max_age), "7d", MIN_1MS, NOMAX, 0 },
	{ "poll", "auth_interval", K_DUR, OFF(poll_auth_interval), "1s", MIN_1MS, NOMAX, 0 },
	{ "poll", "status_interval", K_DUR, OFF(poll_status_interval), "10s", MIN_1MS, NOMAX, 0 },
	{ "poll", "single_max", K_INT, OFF(poll_single_max), "10", 0, 1000, 0 },
	{ "session", "idle_timeout", K_DUR, OFF(session_idle_timeout), "10m", MIN_1MS, NOMAX, 0 },
	{ "session", "max_lifetime", K_DUR, OFF(session_max_lifetime), "11h", MIN_1MS, 12 * 3600 * 1000LL, 0 },
	{ "session", "max_invoices", K_INT, OFF(session_max_invoices), "10000", 1, 10000, 0 },
	{ "reconcile", "interval", K_DUR, OFF(reconcile_interval), "1h", 0, NOMAX, 0 },
	{ "reconcile", "stuck_after", K_DUR, OFF(reconcile_stuck_after), "2h", MIN_1MS, NOMAX, 0 },
	{ "limits", "enabled", K_BOOL, OFF(limits_enabled), "yes", 0, 0, 0 },
	{ "limits", "windows", K_STR, OFF(limit_windows), "1s 60s 1h", 0, 0, 0 },
	{ "alert", "syslog", K_BOOL, OFF(alert_syslog), "yes", 0, 0, 0 },
	{ "alert", "command", K_STR, OFF(alert_command), NULL, 0, 0, 0 },
	{ "alert", "command_timeout", K_DUR, OFF(alert_command_timeout), "30s", MIN_1MS, NOMAX, 0 },
	{ "alert", "webhook", K_URL, OFF(alert_webhook), NULL, 0, 0, 0 },
	{ "alert", "reminder", K_DUR, OFF(alert_reminder), "24h", MIN_1MS, NOMAX, 0 },
	{ "alert", "outage_after", K_DUR, OFF(alert_outage_after), "15m", MIN_1MS, NOMAX, 0 },
	{ "alert", "db_full_percent", K_INT, OFF(alert_db_full_percent), "90", 1, 100, 0 },
};

static const struct {
	const char	*name;
	unsigned int	 mask;
} trace_names[] = {
	{ "http", TRACE_HTTP }, { "ksef", TRACE_KSEF }, { "store", TRACE_STORE },
	{ "sched", TRACE_SCHED }, { "api", TRACE_API }, { "conf", TRACE_CONF },
};

/* Official base URLs and Latarnia services (API.md §1). */
static const struct {
	const char	*name;
	const char	*base_url;
	const char	*latarnia;
} envs[] = {
	[CONF_ENV_TEST] = { "test", "https://api-test.ksef.mf.gov.pl/v2",
	    "https://api-latarnia-test.ksef.mf.gov.pl" },
	[CONF_ENV_DEMO] = { "demo", "https://api-demo.ksef.mf.gov.pl/v2", NULL },
	[CONF_ENV_PROD] = { "prod", "https://api.ksef.mf.gov.pl/v2",
	    "https://api-latarnia.ksef.mf.gov.pl" },
};

/* What the section being parsed is. */
enum section_kind {
	SEC_NONE,	/* before the first section header */
	SEC_KEYS,	/* a section of keys[] (or [limits]) */
	SEC_CONTEXT,	/* a valid [context NIP] */
	SEC_SKIP,	/* reported as bad; its keys are ignored */
};

/* Lines where a context and its keys were seen. */
struct context_lines {
	int		 section, token_file, name;
};

struct parse {
	struct conf	*conf;
	struct conf_msgs *errs;
	const char	*file;		/* as given, for messages */
	char		*dir;		/* for relative paths */
	FILE		*fp;
	char		*line;		/* getline buffer */
	size_t		 linecap;
	int		 lineno;
	enum section_kind kind;
	char		 section[64];
	struct context_lines *ctxlines;	/* parallel to conf->contexts */
	int		 seen[nitems(keys)];
	int		 limit_seen[RL_NGROUPS];
	int		 global_seen;	/* a key outside any section */
};

static void	conf_msgs_add(struct conf_msgs *, char *);
static void	fmt_duration(int64_t, char *, size_t);
static void	fmt_size(int64_t, char *, size_t);

void
conf_msgs_free(struct conf_msgs *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		free(m->v[i]);
	free(m->v);
	m->v = NULL;
	m->n = 0;
}

/* Append an owned string. */
static void
conf_msgs_add(struct conf_msgs *m, char *s)
{
	m->v = xrealloc(m->v, (m->n + 1) * sizeof(*m->v));
	m->v[m->n++] = s;
}

/* Record "file:line: message"; stops collecting after CONF_MAX_ERRORS. */
static void __attribute__((format(printf, 3, 4)))
conf_error(struct parse *p, int line, const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	if (p->errs->n > CONF_MAX_ERRORS)
		return;
	if (p->errs->n == CONF_MAX_ERRORS) {
		conf_msgs_add(p->errs, xasprintf("%s:%d: too many errors, "
		    "not showing more", p->file, line));
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	conf_msgs_add(p->errs, xasprintf("%s:%d: %s", p->file, line, msg));
}

/* A value quoted and escaped for an error message (values are untrusted). */
static const char *
conf_quote(const char *s)
{
	return log_escape(s, strlen(s), 80);
}

/* Is the host (no brackets, no port) a loopback address? */
static int
host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcmp(host, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return 0;
}

/*
 * Split "host:port" or "[v6]:port" (the authority of a URL, or a listen
 * address) into host and port text.  -1 when the shape is wrong.
 */
static int
hostport_split(const char *s, size_t len, char *host, size_t hostlen,
    const char **port, size_t *portlen)
{
	const char *h = s, *end = s + len, *colon;
	size_t hl;

	if (len > 0 && *s == '[') {
		const char *rb = memchr(s, ']', len);

		if (rb == NULL)
			return -1;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1 < end ? rb + 1 : NULL;
		if (colon != NULL && *colon != ':')
			return -1;
	} else {
		colon = memchr(s, ':', len);
		hl = colon ? (size_t)(colon - s) : len;
	}
	if (hl == 0 || hl >= hostlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = colon ? colon + 1 : NULL;
	*portlen = colon ? (size_t)(end - colon - 1) : 0;
	return 0;
}

/* Parse a decimal port 1..65535 (0 allowed when zero_ok); -1 if bad. */
static int
port_parse(const char *s, size_t len, int zero_ok)
{
	long v = 0;
	size_t i;

	if (len == 0 || len > 5)
		return -1;
	for (i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 65535 || (v == 0 && !zero_ok))
		return -1;
	return (int)v;
}

/* Check a URL: https:// to any host, http:// only to a loopback host. */
static int
url_check(const char *url, char *err, size_t errlen)
{
	const char *auth, *p;
	char host[256];
	const char *port;
	size_t alen, portlen;
	int https;

	for (p = url; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) {
			snprintf(err, errlen, "URL contains a space or a "
			    "non-ASCII character");
			return -1;
		}
	if (strncmp(url, "https://", 8) == 0)
		https = 1, auth = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		https = 0, auth = url + 7;
	else {
		snprintf(err, errlen, "URL must start with https:// "
		    "(or http:// to a loopback host)");
		return -1;
	}
	alen = strcspn(auth, "/?#");
	if (memchr(auth, '@', alen) != NULL) {
		snprintf(err, errlen, "credentials in a URL are not allowed "
		    "(put secrets in files)");
		return -1;
	}
	if (hostport_split(auth, alen, host, sizeof(host), &port,
	    &portlen) == -1 || (port && port_parse(port, portlen, 0) == -1)) {
		snprintf(err, errlen, "URL has no valid host[:port]");
		return -1;
	}
	if (!https && !host_is_loopback(host)) {
		snprintf(err, errlen, "plain http:// is allowed only to a "
		    "loopback host (127.0.0.0/8, ::1, localhost); use https://");
		return -1;
	}
	return 0;
}

/* Check a listen address: 127.x.x.x:PORT or [::1]:PORT. */
static int
listen_check(const char *s, char *err, size_t errlen)
{
	char host[64];
	const char *port;
	size_t portlen;
	struct in_addr a4;

	if (hostport_split(s, strlen(s), host, sizeof(host), &port,
	    &portlen) == -1 || port == NULL ||
	    port_parse(port, portlen, 1) == -1) {
		snprintf(err, errlen, "expected 127.0.0.1:PORT or [::1]:PORT");
		return -1;
	}
	if (strcmp(host, "localhost") == 0 || (*s != '[' &&
	    inet_pton(AF_INET, host, &a4) != 1) || !host_is_loopback(host)) {
		snprintf(err, errlen, "%s is not a loopback address; the API "
		    "listens only on 127.0.0.0/8 or [::1] (put a TLS proxy in "
		    "front for remote access)", conf_quote(host));
		return -1;
	}
	return 0;
}

/* Parse "http,ksef" / "all" / "none" into a TRACE_* mask; -1 if a name is unknown. */
static int
trace_parse(const char *s, unsigned int *mask, char *err, size_t errlen)
{
	char *copy = xstrdup(s), *tok, *save = NULL;
	size_t i;
	int rc = 0;

	*mask = 0;
	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (strcmp(tok, "all") == 0) {
			*mask |= TRACE_ALL;
			continue;
		}
		if (strcmp(tok, "none") == 0)
			continue;
		for (i = 0; i < nitems(trace_names); i++)
			if (strcmp(tok, trace_names[i].name) == 0)
				break;
		if (i == nitems(trace_names)) {
			snprintf(err, errlen, "unknown trace %s (known: http, "
			    "ksef, store, sched, api, conf, all, none)",
			    conf_quote(tok));
			rc = -1;
			break;
		}
		*mask |= trace_names[i].mask;
	}
	free(copy);
	return rc;
}

/* Absolute path: relative ones are taken from the config file's directory. Caller frees. */
static char *
conf_path(const struct parse *p, const char *value)
{
	if (value[0] == '/')
		return xstrdup(value);
	return xasprintf("%s/%s", p->dir, value);
}

/* Read a secret file; on failure say why in err (never the contents). Caller frees. */
static char *
conf_secret_read(const char *path, char *err, size_t errlen)
{
	char why[512], *s;

	if ((s = file_read_secret(path, why, sizeof(why))) == NULL)
		snprintf(err, errlen, "%s", why);
	return s;
}

/* Free a secret string after wiping it. */
static void
secret_free(char *s)
{
	if (s == NULL)
		return;
	explicit_wipe(s, strlen(s));
	free(s);
}

/* Set the environment: name, enum, base URL, FA(2) permission. */
static int
conf_env_set(struct conf *conf, const char *value, char *err,
    size_t errlen)
{
	size_t i, len;

	for (i = 0; i < nitems(envs); i++)
		if (strcmp(value, envs[i].name) == 0)
			break;
	if (i == nitems(envs) && strstr(value, "://") == NULL) {
		snprintf(err, errlen, "%s is not test, demo, prod or a base URL "
		    "(https://HOST/v2)", conf_quote(value));
		return -1;
	}
	if (i == nitems(envs) && url_check(value, err, errlen) == -1)
		return -1;
	free(conf->environment);
	free(conf->base_url);
	conf->environment = xstrdup(value);
	if (i < nitems(envs)) {
		conf->env = (enum conf_env)i;
		conf->base_url = xstrdup(envs[i].base_url);
	} else {
		conf->env = CONF_ENV_URL;
		conf->base_url = xstrdup(value);
		len = strlen(conf->base_url);
		while (len > 0 && conf->base_url[len - 1] == '/')
			conf->base_url[--len] = '\0';
	}
	/* FA(2) is accepted only by the official TEST environment. */
	conf->fa2_allowed = conf->env == CONF_ENV_TEST;
	return 0;
}

/* Check a number against the key's range. */
static int
range_check(const struct key *k, int64_t v, const char *value, char *err,
    size_t errlen)
{
	char lim[32];

	if (v >= k->min && v <= k->max)
		return 0;
	if (k->type == K_DUR)
		fmt_duration(v < k->min ? k->min : k->max, lim, sizeof(lim));
	else if (k->type == K_SIZE)
		fmt_size(v < k->min ? k->min : k->max, lim, sizeof(lim));
	else
		snprintf(lim, sizeof(lim), "%" PRId64, v < k->min ? k->min :
		    k->max);
	snprintf(err, errlen, "%s is %s the %s %s", conf_quote(value),
	    v < k->min ? "below" : "above", v < k->min ? "minimum" : "maximum",
	    lim);
	return -1;
}

/* Parse `value` for key `k` into the config; -1 with the reason in err. */
static int
conf_value_set(const struct parse *p, const struct key *k,
    const char *value, char *err, size_t errlen)
{
	struct conf *conf = p->conf;
	void *field = (char *)conf + k->off;
	char **sp = field;
	int64_t v, *ip = field;
	int *bp = field;
	unsigned int mask;
	char *end, *secret;
	long l;

	if (*value == '\0') {
		snprintf(err, errlen, "missing value");
		return -1;
	}
	switch (k->type) {
	case K_STR:
		free(*sp);
		*sp = xstrdup(value);
		return 0;
	case K_PATH:
		free(*sp);
		*sp = conf_path(p, value);
		return 0;
	case K_SECRET:
		end = conf_path(p, value);
		if ((secret = conf_secret_read(end, err, errlen)) == NULL) {
			free(end);
			return -1;
		}
		free(*sp);
		secret_free(conf->api_token);
		*sp = end;
		conf->api_token = secret;
		return 0;
	case K_URLOFF:
		if (strcmp(value, "off") == 0) {
			free(*sp);
			*sp = NULL;
			return 0;
		}
		/* FALLTHROUGH */
	case K_URL:
		if (url_check(value, err, errlen) == -1)
			return -1;
		free(*sp);
		*sp = xstrdup(value);
		return 0;
	case K_LISTEN:
		if (strcmp(value, "off") == 0) {
			free(*sp);
			*sp = NULL;
			return 0;
		}
		if (listen_check(value, err, errlen) == -1)
			return -1;
		free(*sp);
		*sp = xstrdup(value);
		return 0;
	case K_ENV:
		return conf_env_set(conf, value, err, errlen);
	case K_DUR:
		if ((v = parse_duration_ms(value)) == -1) {
			snprintf(err, errlen, "%s %s", conf_quote(value),
			    value[0] == '-' ? "is negative; durations are 0 "
			    "or more" : "is not a duration (e.g. 250ms, 30s, "
			    "5m, 2h, 1d)");
			return -1;
		}
		if (range_check(k, v, value, err, errlen) == -1)
			return -1;
		*ip = v;
		return 0;
	case K_SIZE:
		if ((v = parse_size(value)) == -1) {
			snprintf(err, errlen, "%s is not a size (e.g. 512, "
			    "64K, 1M, 1G)", conf_quote(value));
			return -1;
		}
		if (range_check(k, v, value, err, errlen) == -1)
			return -1;
		*ip = v;
		return 0;
	case K_INT:
		errno = 0;
		v = strtoll(value, &end, 10);
		if (errno || *end != '\0' || !isdigit((unsigned char)
		    value[value[0] == '-'])) {
			snprintf(err, errlen, "%s is not a whole number",
			    conf_quote(value));
			return -1;
		}
		if (range_check(k, v, value, err, errlen) == -1)
			return -1;
		*ip = v;
		return 0;
	case K_BOOL:
		if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0 ||
		    strcmp(value, "on") == 0 || strcmp(value, "1") == 0)
			*bp = 1;
		else if (strcmp(value, "no") == 0 ||
		    strcmp(value, "false") == 0 || strcmp(value, "off") == 0 ||
		    strcmp(value, "0") == 0)
			*bp = 0;
		else {
			snprintf(err, errlen, "%s is not yes or no",
			    conf_quote(value));
			return -1;
		}
		return 0;
	case K_MODE:
		errno = 0;
		l = strtol(value, &end, 8);
		if (errno || *end != '\0' || !isdigit((unsigned char)*value) ||
		    l < 0 || l > 0777) {
			snprintf(err, errlen, "%s is not an octal mode "
			    "(e.g. 0660)", conf_quote(value));
			return -1;
		}
		*bp = (int)l;
		return 0;
	case K_LEVEL:
		if ((*bp = log_level_parse(value)) == -1) {
			snprintf(err, errlen, "%s is not one of warn, info, "
			    "debug", conf_quote(value));
			*bp = LOG_LVL_INFO;
			return -1;
		}
		return 0;
	case K_TRACE:
		if (trace_parse(value, &mask, err, errlen) == -1)
			return -1;
		*(unsigned int *)field = mask;
		return 0;
	}
	fatalx("conf: unknown key type %d", (int)k->type);
}

/* Parse "official", or "PER_S PER_MIN PER_H" (the limiter's syntax), into a limit. */
static int
limit_parse(int group, const char *value, struct conf_limit *l, char *err,
    size_t errlen)
{
	struct ratelimit_limits lim;

	if (strcmp(value, "official") == 0) {
		memset(l, 0, sizeof(*l));
		return 0;
	}
	ratelimit_limits_default(group, &lim);
	if (ratelimit_limits_parse(value, &lim, err, errlen) == -1) {
		size_t n = strlen(err);

		snprintf(err + n, errlen - n, " (or `official`)");
		return -1;
	}
	l->set = 1;
	l->lim = lim;
	return 0;
}

/* A key of [context NIP]. */
static void
conf_context_key(struct parse *p, const char *name, const char *value)
{
	struct conf_context *ctx = &p->conf->contexts[p->conf->ncontexts - 1];
	struct context_lines *cl = &p->ctxlines[p->conf->ncontexts - 1];
	char err[600], *path, *secret;
	int *seen;

	if (strcmp(name, "token_file") == 0)
		seen = &cl->token_file;
	else if (strcmp(name, "name") == 0)
		seen = &cl->name;
	else {
		conf_error(p, p->lineno, "unknown key %s in [context %s] "
		    "(known: token_file, name)", conf_quote(name), ctx->nip);
		return;
	}
	if (*seen) {
		conf_error(p, p->lineno, "duplicate key %s in [context %s] "
		    "(first at line %d)", name, ctx->nip, *seen);
		return;
	}
	*seen = p->lineno;
	if (*value == '\0') {
		conf_error(p, p->lineno, "context %s: %s: missing value",
		    ctx->nip, name);
		return;
	}
	if (seen == &cl->name) {
		ctx->name = xstrdup(value);
		return;
	}
	path = conf_path(p, value);
	if ((secret = conf_secret_read(path, err, sizeof(err))) == NULL) {
		conf_error(p, p->lineno, "context %s: token_file: %s",
		    ctx->nip, err);
		free(path);
		return;
	}
	ctx->token_file = path;
	ctx->token = secret;
}

/* A key of [limits]: enabled, or a group override. */
static int
conf_limits_key(struct parse *p, const char *name, const char *value)
{
	char err[512];
	int g;

	if ((g = ratelimit_group_parse(name)) == -1)
		return 0;
	if (p->limit_seen[g]) {
		conf_error(p, p->lineno, "duplicate key limits.%s (first at "
		    "line %d)", name, p->limit_seen[g]);
		return 1;
	}
	p->limit_seen[g] = p->lineno;
	if (limit_parse(g, value, &p->conf->limits[g], err, sizeof(err)) == -1)
		conf_error(p, p->lineno, "limits.%s: %s", name, err);
	return 1;
}

/* inih callback: one `name = value` line of the current section. */
static int
conf_line_cb(void *arg, const char *section, const char *name,
    const char *value)
{
	struct parse *p = arg;
	char err[600];
	size_t i;

	(void)section;	/* p->section is ours, with its line number */
	switch (p->kind) {
	case SEC_SKIP:
		return 1;
	case SEC_NONE:
		if (!p->global_seen)
			conf_error(p, p->lineno, "%s = ... is outside any "
			    "section; put [section] above it",
			    conf_quote(name));
		p->global_seen = 1;
		return 1;
	case SEC_CONTEXT:
		conf_context_key(p, name, value);
		return 1;
	case SEC_KEYS:
		break;
	}
	if (strcmp(p->section, "limits") == 0 &&
	    conf_limits_key(p, name, value))
		return 1;
	for (i = 0; i < nitems(keys); i++)
		if (strcmp(keys[i].section, p->section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			break;
	if (i == nitems(keys)) {
		conf_error(p, p->lineno, "unknown key %s in [%s]",
		    conf_quote(name), p->section);
		return 1;
	}
	if (p->seen[i]) {
		conf_error(p, p->lineno, "duplicate key %s.%s (first at "
		    "line %d)", p->section, name, p->seen[i]);
		return 1;
	}
	p->seen[i] = p->lineno;
	if (conf_value_set(p, &keys[i], value, err, sizeof(err)) == -1)
		conf_error(p, p->lineno, "%s.%s: %s", p->section, name, err);
	return 1;
}

/* A [section] header: decide what its keys are. */
static void
conf_section_begin(struct parse *p, const char *name)
{
	struct conf *conf = p->conf;
	const char *nip;
	size_t i;

	p->kind = SEC_SKIP;
	p->section[0] = '\0';
	if (strncmp(name, "context", 7) == 0 &&
	    (name[7] == '\0' || isspace((unsigned char)name[7]))) {
		nip = name + 7;
		while (isspace((unsigned char)*nip))
			nip++;
		if (strlen(nip) != 10 || strspn(nip, "0123456789") != 10) {
			conf_error(p, p->lineno, "[context %s]: a context is "
			    "a seller NIP of 10 digits, e.g. [context 1234563218]",
			    conf_quote(nip));
			return;
		}
		if (!nip_valid(nip)) {
			conf_error(p, p->lineno, "[context %s]: NIP has a "
			    "wrong check digit", nip);
			return;
		}
		for (i = 0; i < conf->ncontexts; i++)
			if (strcmp(conf->contexts[i].nip, nip) == 0) {
				conf_error(p, p->lineno, "duplicate [context "
				    "%s] (first at line %d)", nip,
				    p->ctxlines[i].section);
				return;
			}
		conf->contexts = xrealloc(conf->contexts,
		    (conf->ncontexts + 1) * sizeof(*conf->contexts));
		p->ctxlines = xrealloc(p->ctxlines,
		    (conf->ncontexts + 1) * sizeof(*p->ctxlines));
		memset(&conf->contexts[conf->ncontexts], 0,
		    sizeof(*conf->contexts));
		memset(&p->ctxlines[conf->ncontexts], 0, sizeof(*p->ctxlines));
		memcpy(conf->contexts[conf->ncontexts].nip, nip, 11);
		p->ctxlines[conf->ncontexts].section = p->lineno;
		conf->ncontexts++;
		p->kind = SEC_CONTEXT;
		return;
	}
	for (i = 0; i < nitems(keys); i++)
		if (strcmp(keys[i].section, name) == 0)
			break;
	if (i == nitems(keys)) {
		conf_error(p, p->lineno, "unknown section [%s] (known: "
		    "daemon, log, ksef, storage, api, spool, intake, retry, "
		    "poll, session, reconcile, limits, alert, context NIP)",
		    conf_quote(name));
		return;
	}
	snprintf(p->section, sizeof(p->section), "%s", name);
	p->kind = SEC_KEYS;
}

/*
 * inih reader: our own line source, so that we know the line number of
 * every callback, see section headers (even empty ones) and report every
 * malformed line rather than only inih's first.  Leading blanks are
 * removed, which also turns off inih's multi-line continuation values.
 */
static char *
conf_read_cb(char *str, int num, void *stream)
{
	struct parse *p = stream;
	ssize_t n;
	char *s, *rb;
	size_t len;

	if ((n = getline(&p->line, &p->linecap, p->fp)) == -1)
		return NULL;
	p->lineno++;
	str[0] = '\0';
	if (strlen(p->line) < (size_t)n) {
		conf_error(p, p->lineno, "line contains a NUL byte");
		return str;
	}
	s = p->line;
	if (p->lineno == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3;
	while (isspace((unsigned char)*s))
		s++;
	len = strlen(s);
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		s[--len] = '\0';
	if (len + 2 > (size_t)num) {
		conf_error(p, p->lineno, "line is too long (at most %d "
		    "characters)", num - 2);
		return str;
	}
	if (*s == '[') {
		if ((rb = strchr(s, ']')) == NULL || rb[1] != '\0') {
			conf_error(p, p->lineno, "section header must be "
			    "[name] alone on its line");
			p->kind = SEC_SKIP;
			return str;
		}
		*rb = '\0';
		s++;
		while (isspace((unsigned char)*s))
			s++;
		len = strlen(s);
		while (len > 0 && isspace((unsigned char)s[len - 1]))
			s[--len] = '\0';
		conf_section_begin(p, s);
		snprintf(str, (size_t)num, "[%s]\n", s);
		return str;
	}
	if (*s != '\0' && *s != '#' && *s != ';' && strcspn(s, "=:") == len) {
		conf_error(p, p->lineno, "expected `key = value`, got %s",
		    conf_quote(s));
		return str;
	}
	snprintf(str, (size_t)num, "%s\n", s);
	return str;
}

/* "1s 60s 1h": the three limiter windows, increasing; -1 when not. */
static int
conf_windows_parse(const char *v, int64_t out[3])
{
	char *copy = xstrdup(v), *tok, *save = NULL;
	int n = 0, r = 0;

	for (tok = strtok_r(copy, " \t", &save); tok != NULL;
	    tok = strtok_r(NULL, " \t", &save)) {
		if (n == 3 || (out[n] = parse_duration_ms(tok)) <= 0 ||
		    (n > 0 && out[n] < out[n - 1])) {
			r = -1;
			break;
		}
		n++;
	}
	free(copy);
	return n == 3 ? r : -1;
}

/* Checks that span keys, and values that follow from others. */
static void
conf_finish(struct parse *p)
{
	struct conf *conf = p->conf;
	size_t i, bmin = 0, bmax = 0, listen = 0, latarnia = 0, fa2 = 0, win = 0;

	for (i = 0; i < nitems(keys); i++) {
		if (keys[i].off == OFF(intake_fa2))
			fa2 = i;
		else if (keys[i].off == OFF(limit_windows))
			win = i;
		else if (keys[i].off == OFF(backoff_min))
			bmin = i;
		else if (keys[i].off == OFF(backoff_max))
			bmax = i;
		else if (keys[i].off == OFF(api_listen))
			listen = i;
		else if (keys[i].off == OFF(latarnia_url))
			latarnia = i;
	}
	if (!p->seen[latarnia] && conf->env != CONF_ENV_URL &&
	    envs[conf->env].latarnia != NULL)
		conf->latarnia_url = xstrdup(envs[conf->env].latarnia);
	/* FA(2): auto follows the environment (TEST only); yes/no override it. */
	if (strcmp(conf->intake_fa2, "yes") == 0)
		conf->fa2_allowed = 1;
	else if (strcmp(conf->intake_fa2, "no") == 0)
		conf->fa2_allowed = 0;
	else if (strcmp(conf->intake_fa2, "auto") == 0)
		conf->fa2_allowed = conf->env == CONF_ENV_TEST;
	else
		conf_error(p, p->seen[fa2], "intake.fa2: \"%s\" is not auto, "
		    "yes or no", conf->intake_fa2);
	if (conf_windows_parse(conf->limit_windows, conf->limit_window_ms) == -1)
		conf_error(p, p->seen[win], "limits.windows: \"%s\" is not three "
		    "increasing durations (second, minute, hour windows), e.g. "
		    "\"1s 60s 1h\"", conf->limit_windows);
	if (conf->backoff_min > conf->backoff_max)
		conf_error(p, p->seen[bmax] ? p->seen[bmax] : p->seen[bmin],
		    "retry.backoff_min (%" PRId64 " ms) is greater than "
		    "retry.backoff_max (%" PRId64 " ms)", conf->backoff_min,
		    conf->backoff_max);
	if (conf->api_listen != NULL && conf->api_token_file == NULL)
		conf_error(p, p->seen[listen], "api.listen needs "
		    "api.token_file (a bearer token for TCP clients)");
	for (i = 0; i < conf->ncontexts; i++)
		if (conf->contexts[i].token_file == NULL &&
		    !p->ctxlines[i].token_file)
			conf_error(p, p->ctxlines[i].section, "[context %s] "
			    "has no token_file (required)", conf->contexts[i].nip);
	if (conf->ncontexts == 0 && p->errs->n == 0)
		conf_error(p, p->lineno, "no [context NIP] section: at least "
		    "one seller is required");
}

/* Apply the defaults of every key. */
static void
conf_defaults(struct parse *p)
{
	char err[600];
	size_t i;

	for (i = 0; i < nitems(keys); i++)
		if (keys[i].def != NULL &&
		    conf_value_set(p, &keys[i], keys[i].def, err,
		    sizeof(err)) == -1)
			fatalx("conf: bad default for %s.%s: %s",
			    keys[i].section, keys[i].name, err);
}

struct conf *
conf_load(const char *path, struct conf_msgs *errs)
{
	struct parse p;
	struct conf *conf;
	char cwd[PATH_MAX], *slash;
	size_t nerr = errs->n;
	int rc;

	memset(&p, 0, sizeof(p));
	p.errs = errs;
	p.file = path;
	if ((p.fp = fopen(path, "re")) == NULL) {
		conf_msgs_add(errs, xasprintf("%s: cannot open config file: "
		    "%s", path, strerror(errno)));
		return NULL;
	}
	conf = p.conf = xcalloc(1, sizeof(*conf));
	if (path[0] == '/')
		conf->file = xstrdup(path);
	else if (getcwd(cwd, sizeof(cwd)) != NULL)
		conf->file = xasprintf("%s/%s", cwd, path);
	else
		fatal("conf: getcwd");
	p.dir = xstrdup(conf->file);
	slash = strrchr(p.dir, '/');
	slash[slash == p.dir ? 1 : 0] = '\0';
	conf_defaults(&p);

	rc = ini_parse_stream(conf_read_cb, &p, conf_line_cb, &p);
	if (ferror(p.fp))
		conf_error(&p, p.lineno, "read error: %s", strerror(errno));
	else if (rc > 0 && errs->n == nerr)
		conf_error(&p, rc, "syntax error");
	else if (rc < 0)
		fatalx("conf: ini_parse_stream failed (%d)", rc);
	conf_finish(&p);

	fclose(p.fp);
	free(p.line);
	free(p.dir);
	free(p.ctxlines);
	if (errs->n > nerr) {
		conf_free(conf);
		return NULL;
	}
	log_trace(TRACE_CONF, "conf: loaded %s: %zu contexts, environment %s",
	    conf->file, conf->ncontexts, conf->environment);
	return conf;
}

void
conf_free(struct conf *conf)
{
	size_t i;

	if (conf == NULL)
		return;
	for (i = 0; i < nitems(keys); i++)
		switch (keys[i].type) {
		case K_STR: case K_PATH: case K_SECRET: case K_URL:
		case K_URLOFF: case K_LISTEN: case K_ENV:
			free(*(char **)((char *)conf + keys[i].off));
			break;
		default:
			break;
		}
	free(conf->base_url);
	secret_free(conf->api_token);
	for (i = 0; i < conf->ncontexts; i++) {
		free(conf->contexts[i].name);
		free(conf->contexts[i].token_file);
		secret_free(conf->contexts[i].token);
	}
	free(conf->contexts);
	free(conf->file);
	explicit_wipe(conf, sizeof(*conf));
	free(conf);
}

const struct conf_context *
conf_context_find(const struct conf *conf, const char *nip)
{
	size_t i;

	for (i = 0; i < conf->ncontexts; i++)
		if (strcmp(conf->contexts[i].nip, nip) == 0)
			return &conf->contexts[i];
	return NULL;
}

/* Print a duration the way it would be written: 30s, 5m, 250ms. */
static void
fmt_duration(int64_t ms, char *out, size_t len)
{
	static const struct { int64_t ms; const char *unit; } u[] = {
		{ DAY_MS, "d" }, { 3600000, "h" }, { 60000, "m" }, { 1000, "s" },
	};
	size_t i;

	for (i = 0; i < nitems(u); i++)
		if (ms != 0 && ms % u[i].ms == 0) {
			snprintf(out, len, "%" PRId64 "%s", ms / u[i].ms,
			    u[i].unit);
			return;
		}
	if (ms == 0)
		snprintf(out, len, "0s");
	else
		snprintf(out, len, "%" PRId64 "ms", ms);
}

/* Print a size: 1G, 64K, 1000. */
static void
fmt_size(int64_t n, char *out, size_t len)
{
	if (n != 0 && n % (1024LL * 1024 * 1024) == 0)
		snprintf(out, len, "%" PRId64 "G", n / (int64_t)(1024 * 1024 * 1024));
	else if (n != 0 && n % (1024 * 1024) == 0)
		snprintf(out, len, "%" PRId64 "M", n / (1024 * 1024));
	else if (n != 0 && n % 1024 == 0)
		snprintf(out, len, "%" PRId64 "K", n / 1024);
	else
		snprintf(out, len, "%" PRId64, n);
}

/* Print a key's value for a diff line. */
static void
conf_value_fmt(const struct conf *conf, const struct key *k, char *out,
    size_t len)
{
	const void *field = (const char *)conf + k->off;
	const char *s;
	unsigned int mask;
	size_t t, o;

	switch (k->type) {
	case K_STR: case K_PATH: case K_SECRET: case K_URL: case K_LISTEN:
	case K_ENV: case K_URLOFF:
		s = *(char *const *)field;
		snprintf(out, len, "%s", s ? conf_quote(s) :
		    k->type == K_URLOFF ? "off" : "(none)");
		return;
	case K_DUR:
		fmt_duration(*(const int64_t *)field, out, len);
		return;
	case K_SIZE:
		fmt_size(*(const int64_t *)field, out, len);
		return;
	case K_INT:
		snprintf(out, len, "%" PRId64, *(const int64_t *)field);
		return;
	case K_BOOL:
		snprintf(out, len, "%s", *(const int *)field ? "yes" : "no");
		return;
	case K_MODE:
		snprintf(out, len, "%04o", (unsigned)*(const int *)field);
		return;
	case K_LEVEL:
		snprintf(out, len, "%s", log_level_name(*(const int *)field));
		return;
	case K_TRACE:
		mask = *(const unsigned int *)field;
		if (mask == TRACE_ALL || mask == 0) {
			snprintf(out, len, "%s", mask ? "all" : "none");
			return;
		}
		out[0] = '\0';
		for (t = 0, o = 0; t < nitems(trace_names); t++)
			if (mask & trace_names[t].mask)
				o += (size_t)snprintf(out + o, len - o, "%s%s",
				    o ? "," : "", trace_names[t].name);
		return;
	}
}

/* "official", or the counts as written: "10 30 180", "60 - -". */
static void
limit_fmt(const struct conf_limit *l, char *out, size_t len)
{
	size_t o = 0;
	int w;

	if (!l->set) {
		snprintf(out, len, "official");
		return;
	}
	for (w = 0; w < RL_NWIN && o < len; w++) {
		if (l->lim.max[w] == 0)
			o += (size_t)snprintf(out + o, len - o, "%s-",
			    w ? " " : "");
		else
			o += (size_t)snprintf(out + o, len - o, "%s%u",
			    w ? " " : "", (unsigned)l->lim.max[w]);
	}
}

/* NULL-safe string equality. */
static int
str_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Differences between the contexts of two configs. */
static void
conf_diff_contexts(const struct conf *old, const struct conf *new,
    struct conf_msgs *changed)
{
	const struct conf_context *o, *n;
	size_t i;

	for (i = 0; i < old->ncontexts; i++)
		if (conf_context_find(new, old->contexts[i].nip) == NULL)
			conf_msgs_add(changed, xasprintf("context %s removed",
			    old->contexts[i].nip));
	for (i = 0; i < new->ncontexts; i++) {
		n = &new->contexts[i];
		if ((o = conf_context_find(old, n->nip)) == NULL) {
			conf_msgs_add(changed, xasprintf("context %s added",
			    n->nip));
			continue;
		}
		if (!str_same(o->token_file, n->token_file))
			conf_msgs_add(changed, xasprintf("context %s "
			    "token_file %s -> %s", n->nip,
			    conf_quote(o->token_file),
			    conf_quote(n->token_file)));
		else if (!str_same(o->token, n->token))
			conf_msgs_add(changed, xasprintf("context %s token "
			    "changed", n->nip));
		if (!str_same(o->name, n->name))
			conf_msgs_add(changed, xasprintf("context %s name "
			    "changed", n->nip));
	}
}

void
conf_diff(const struct conf *old, const struct conf *new,
    struct conf_msgs *changed, struct conf_msgs *restart)
{
	char a[512], b[512];
	size_t i;

	for (i = 0; i < nitems(keys); i++) {
		conf_value_fmt(old, &keys[i], a, sizeof(a));
		conf_value_fmt(new, &keys[i], b, sizeof(b));
		if (strcmp(a, b) != 0)
			conf_msgs_add(keys[i].restart ? restart : changed,
			    xasprintf("%s.%s %s -> %s", keys[i].section,
			    keys[i].name, a, b));
		else if (keys[i].type == K_SECRET &&
		    !str_same(old->api_token, new->api_token))
			conf_msgs_add(changed, xasprintf("api token changed"));
	}
	for (i = 0; i < RL_NGROUPS; i++) {
		limit_fmt(&old->limits[i], a, sizeof(a));
		limit_fmt(&new->limits[i], b, sizeof(b));
		if (strcmp(a, b) != 0)
			conf_msgs_add(changed, xasprintf("limits.%s %s -> %s",
			    ratelimit_group_name((int)i), a, b));
	}
	conf_diff_contexts(old, new, changed);
}

/* Swap the field of key `k` between two configs. */
static void
conf_field_swap(struct conf *a, struct conf *b, const struct key *k)
{
	unsigned char tmp[sizeof(int64_t) > sizeof(char *) ?
	    sizeof(int64_t) : sizeof(char *)];
	size_t sz;

	switch (k->type) {
	case K_DUR: case K_SIZE: case K_INT:
		sz = sizeof(int64_t);
		break;
	case K_BOOL: case K_MODE: case K_LEVEL:
		sz = sizeof(int);
		break;
	case K_TRACE:
		sz = sizeof(unsigned int);
		break;
	default:
		sz = sizeof(char *);
		break;
	}
	memcpy(tmp, (char *)a + k->off, sz);
	memcpy((char *)a + k->off, (char *)b + k->off, sz);
	memcpy((char *)b + k->off, tmp, sz);
}

void
conf_restart_keep(struct conf *new, struct conf *old)
{
	size_t i;

	for (i = 0; i < nitems(keys); i++)
		if (keys[i].restart)
			conf_field_swap(new, old, &keys[i]);
}
