/* test_conf.c: config parsing (every error kind with file:line), defaults, environments, diff, reload. */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "util.h"
#include "tap.h"

static char tmpdir[] = "/tmp/test_conf.XXXXXX";

/* Write a file in the temp dir with a mode. Returns its path. Caller frees. */
static char *
put(const char *name, const char *text, mode_t mode)
{
	char *path = xasprintf("%s/%s", tmpdir, name);

	if (file_write_atomic(path, text, strlen(text), mode) == -1 ||
	    chmod(path, mode) == -1) {
		printf("Bail out! cannot write %s\n", path);
		exit(1);
	}
	return path;
}

/* Load text as a config file named `name`; errors into errs. */
static struct conf *
load(const char *name, const char *text, struct conf_msgs *errs)
{
	char *path = put(name, text, 0644);
	struct conf *c = conf_load(path, errs);

	free(path);
	return c;
}

/* Load text that must be valid. */
static struct conf *
load_ok(const char *name, const char *text)
{
	struct conf_msgs errs = { NULL, 0 };
	struct conf *c = load(name, text, &errs);
	size_t i;

	if (!ok(c != NULL, "%s loads", name))
		for (i = 0; i < errs.n; i++)
			diag("%s", errs.v[i]);
	conf_msgs_free(&errs);
	return c;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Each tests/data/conf/NAME.conf has `# expect LINE: TEXT` lines: the load
 * must fail with exactly one error per distinct LINE, each "path:LINE: ..."
 * containing every TEXT given for that line.
 */
static void
check_bad_file(const char *srcdir, const char *name)
{
	struct conf_msgs errs = { NULL, 0 };
	char *src = xasprintf("%s/%s", srcdir, name), *path, *line, *save;
	char prefix[512], *text;
	unsigned char *data;
	size_t len, i, nlines = 0;
	int lines[32], l, n, found, j;

	if ((data = file_read(src, 1 << 20, &len)) == NULL) {
		ok(0, "%s: readable", name);
		free(src);
		return;
	}
	path = put(name, (char *)data, 0644);
	ok(conf_load(path, &errs) == NULL, "%s: refused", name);
	text = xstrdup((char *)data);
	for (line = strtok_r(text, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (sscanf(line, "# expect %d: %n", &l, &n) != 1)
			continue;
		snprintf(prefix, sizeof(prefix), "%s:%d: ", path, l);
		for (found = 0, i = 0; i < errs.n && !found; i++)
			found = strncmp(errs.v[i], prefix, strlen(prefix)) == 0 &&
			    strstr(errs.v[i], line + n) != NULL;
		ok(found, "%s: line %d: %s", name, l, line + n);
		for (j = 0; j < (int)nlines && lines[j] != l; j++)
			;
		if (j == (int)nlines && nlines < nitems(lines))
			lines[nlines++] = l;
	}
	ok(nlines > 0, "%s: has expectations", name);
	if (!ok(errs.n == nlines, "%s: %zu errors, one per expected line",
	    name, nlines))
		for (i = 0; i < errs.n; i++)
			diag("got: %s", errs.v[i]);
	conf_msgs_free(&errs);
	free(text);
	free(data);
	free(path);
	free(src);
}

static void
test_bad_files(void)
{
	const char *top = getenv("top_srcdir");
	char *dir = xasprintf("%s/tests/data/conf", top ? top : "..");
	char *names[256];
	struct dirent *de;
	size_t n = 0, i;
	DIR *d;

	if ((d = opendir(dir)) == NULL) {
		ok(0, "open %s", dir);
		free(dir);
		return;
	}
	while ((de = readdir(d)) != NULL && n < nitems(names)) {
		size_t l = strlen(de->d_name);

		if (l > 5 && strcmp(de->d_name + l - 5, ".conf") == 0)
			names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	ok(n >= 30, "%zu bad config files", n);
	qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; i < n; i++) {
		check_bad_file(dir, names[i]);
		free(names[i]);
	}
	free(dir);
}

static void
test_missing_file(void)
{
	struct conf_msgs errs = { NULL, 0 };
	char *path = xasprintf("%s/nonexistent.conf", tmpdir);

	ok(conf_load(path, &errs) == NULL && errs.n == 1 &&
	    strstr(errs.v[0], "nonexistent.conf: cannot open config file: "
	    "No such file") != NULL, "missing config file");
	conf_msgs_free(&errs);
	free(path);
}

static void
test_defaults(void)
{
	struct conf *c;
	char *tok = xasprintf("%s/tok", tmpdir);
	size_t i;

	if ((c = load_ok("min.conf", "[context 1234563218]\n"
	    "token_file = tok\n")) == NULL)
		return;
	is_str(c->pid_file, "/run/ksefd.pid", "daemon.pid_file");
	is_int(c->log_level, LOG_LVL_INFO, "log.level");
	is_int(c->log_trace, 0, "log.trace");
	is_int(c->env, CONF_ENV_TEST, "ksef.environment");
	is_str(c->environment, "test", "environment name");
	is_str(c->base_url, "https://api-test.ksef.mf.gov.pl/v2", "base URL");
	ok(c->fa2_allowed, "FA(2) allowed on test");
	ok(c->ca_file == NULL, "ksef.ca_file");
	is_str(c->latarnia_url, "https://api-latarnia-test.ksef.mf.gov.pl",
	    "ksef.latarnia_url");
	is_int(c->connect_timeout, 10000, "ksef.connect_timeout");
	is_int(c->request_timeout, 60000, "ksef.request_timeout");
	is_int(c->max_in_flight, 8, "ksef.max_in_flight");
	is_int(c->token_refresh_margin, 60000, "ksef.token_refresh_margin");
	is_str(c->database, "/var/lib/ksefd", "storage.database");
	is_int(c->map_size, 1024LL * 1024 * 1024, "storage.map_size");
	is_str(c->api_socket, "/run/ksefd/ksefd.sock", "api.socket");
	is_int(c->api_socket_mode, 0660, "api.socket_mode");
	ok(c->api_listen == NULL && c->api_token_file == NULL &&
	    c->api_token == NULL, "api.listen, api.token_file off");
	is_int(c->api_max_body, 1024 * 1024, "api.max_body");
	ok(c->spool_directory == NULL, "spool.directory off");
	is_int(c->spool_rescan_interval, 60000, "spool.rescan_interval");
	is_int(c->future_tolerance, 86400000, "intake.future_tolerance");
	is_int(c->backoff_min, 5000, "retry.backoff_min");
	is_int(c->backoff_max, 1800000, "retry.backoff_max");
	is_int(c->max_age, 7 * 86400000LL, "retry.max_age");
	is_int(c->poll_auth_interval, 1000, "poll.auth_interval");
	is_int(c->poll_status_interval, 10000, "poll.status_interval");
	is_int(c->poll_single_max, 10, "poll.single_max");
	is_int(c->session_idle_timeout, 600000, "session.idle_timeout");
	is_int(c->session_max_lifetime, 11 * 3600000LL, "session.max_lifetime");
	is_int(c->session_max_invoices, 10000, "session.max_invoices");
	is_int(c->reconcile_interval, 3600000, "reconcile.interval");
	is_int(c->reconcile_stuck_after, 7200000, "reconcile.stuck_after");
	ok(c->limits_enabled, "limits.enabled");
	for (i = 0; i < RL_NGROUPS; i++)
		if (c->limits[i].set)
			break;
	ok(i == RL_NGROUPS, "limits all official");
	ok(c->alert_syslog, "alert.syslog");
	ok(c->alert_command == NULL && c->alert_webhook == NULL,
	    "alert.command, alert.webhook off");
	is_int(c->alert_command_timeout, 30000, "alert.command_timeout");
	is_int(c->alert_reminder, 86400000, "alert.reminder");
	is_int(c->alert_outage_after, 900000, "alert.outage_after");
	is_int(c->alert_db_full_percent, 90, "alert.db_full_percent");
	is_int(c->ncontexts, 1, "one context");
	is_str(c->contexts[0].nip, "1234563218", "context NIP");
	is_str(c->contexts[0].token_file, tok, "relative token_file resolved");
	is_str(c->contexts[0].token, "token-one", "token read, newline cut");
	ok(c->contexts[0].name == NULL, "no name");
	ok(conf_context_find(c, "1234563218") == &c->contexts[0] &&
	    conf_context_find(c, "5265877635") == NULL, "conf_context_find");
	conf_free(c);
	free(tok);
}

static void
test_values(void)
{
	struct conf *c;

	c = load_ok("good-values.conf",
	    "[log]\nlevel = warn\ntrace = http, store,conf\n"
	    "[ksef]\nenvironment = http://127.0.0.1:8443/v2/\n"
	    "ca_file = ca.pem\nmax_in_flight = 1\n"
	    "[storage]\ndatabase = /srv/db\nmap_size = 64M\n"
	    "[api]\nlisten = [::1]:0\ntoken_file = tok2\nsocket_mode = 600\n"
	    "[limits]\nenabled = no\ninvoice_send = 1 2 3\npublic = official\n"
	    "other = 20 - -\n"
	    "[alert]\nsyslog = off\nwebhook = https://hooks.example.com/k\n"
	    "command = /usr/local/bin/page-me --urgent\n"
	    "[reconcile]\ninterval = 0\n"
	    "[context 1234563218]\ntoken_file = tok\nname = Firma A ; comment\n"
	    "[context 5265877635]\ntoken_file = tok2\n");
	if (c == NULL)
		return;
	is_int(c->log_level, LOG_LVL_WARN, "level warn");
	is_int(c->log_trace, TRACE_HTTP | TRACE_STORE | TRACE_CONF, "trace list");
	is_int(c->env, CONF_ENV_URL, "custom URL environment");
	is_str(c->base_url, "http://127.0.0.1:8443/v2", "trailing slash cut");
	ok(!c->fa2_allowed, "no FA(2) on a custom URL");
	ok(c->latarnia_url == NULL, "no Latarnia for a custom URL");
	ok(c->ca_file != NULL && c->ca_file[0] == '/' &&
	    strstr(c->ca_file, "/ca.pem") != NULL, "ca_file made absolute");
	is_int(c->map_size, 64 * 1024 * 1024, "map_size 64M");
	is_str(c->api_listen, "[::1]:0", "listen on ::1");
	is_str(c->api_token, "token-two", "API token read");
	is_int(c->api_socket_mode, 0600, "octal mode without a leading 0");
	ok(!c->limits_enabled, "limits off");
	ok(c->limits[RL_GROUP_INVOICE_SEND].set &&
	    c->limits[RL_GROUP_INVOICE_SEND].lim.max[RL_WIN_SEC] == 1 &&
	    c->limits[RL_GROUP_INVOICE_SEND].lim.max[RL_WIN_MIN] == 2 &&
	    c->limits[RL_GROUP_INVOICE_SEND].lim.max[RL_WIN_HOUR] == 3 &&
	    c->limits[RL_GROUP_INVOICE_SEND].lim.window_ms[RL_WIN_HOUR] ==
	    3600000, "limit override, with the real windows");
	ok(!c->limits[RL_GROUP_PUBLIC].set, "explicit official");
	ok(c->limits[RL_GROUP_OTHER].set &&
	    c->limits[RL_GROUP_OTHER].lim.max[RL_WIN_SEC] == 20 &&
	    c->limits[RL_GROUP_OTHER].lim.max[RL_WIN_MIN] == 0,
	    "`-` leaves a window unlimited");
	ok(!c->alert_syslog, "alert.syslog off");
	is_str(c->alert_command, "/usr/local/bin/page-me --urgent",
	    "command with arguments");
	is_int(c->reconcile_interval, 0, "reconcile.interval 0 allowed");
	is_str(c->contexts[0].name, "Firma A", "inline ; comment cut");
	is_int(c->ncontexts, 2, "two contexts");
	conf_free(c);
}

static void
test_envs(void)
{
	static const struct {
		const char *env, *url, *latarnia;
		int fa2;
	} t[] = {
		{ "test", "https://api-test.ksef.mf.gov.pl/v2",
		    "https://api-latarnia-test.ksef.mf.gov.pl", 1 },
		{ "demo", "https://api-demo.ksef.mf.gov.pl/v2", NULL, 0 },
		{ "prod", "https://api.ksef.mf.gov.pl/v2",
		    "https://api-latarnia.ksef.mf.gov.pl", 0 },
		{ "https://ksef.example.com/v2", "https://ksef.example.com/v2",
		    NULL, 0 },
		{ "http://localhost:8080/v2", "http://localhost:8080/v2", NULL,
		    0 },
		{ "http://127.1.2.3/v2", "http://127.1.2.3/v2", NULL, 0 },
		{ "http://[::1]:99/v2", "http://[::1]:99/v2", NULL, 0 },
	};
	struct conf *c;
	char *text;
	size_t i;

	for (i = 0; i < nitems(t); i++) {
		text = xasprintf("[ksef]\nenvironment = %s\n"
		    "[context 1234563218]\ntoken_file = tok\n", t[i].env);
		c = load_ok("env.conf", text);
		free(text);
		if (c == NULL)
			continue;
		is_str(c->base_url, t[i].url, "%s: base URL", t[i].env);
		is_str(c->latarnia_url, t[i].latarnia, "%s: Latarnia", t[i].env);
		is_int(c->fa2_allowed, t[i].fa2, "%s: FA(2)", t[i].env);
		conf_free(c);
	}
	c = load_ok("env.conf", "[ksef]\nenvironment = prod\nlatarnia_url = off\n"
	    "[context 1234563218]\ntoken_file = tok\n");
	ok(c != NULL && c->latarnia_url == NULL, "latarnia_url = off");
	conf_free(c);
}

static const char diff_a[] =
	"[log]\nlevel = info\n"
	"[retry]\nbackoff_max = 30m\n"
	"[storage]\ndatabase = /tmp/db1\n"
	"[limits]\ninvoice_send = 5 20 100\n"
	"[context 1234563218]\ntoken_file = tok\nname = A\n"
	"[context 5265877635]\ntoken_file = tok2\n";
static const char diff_b[] =
	"[log]\nlevel = debug\ntrace = ksef,http\n"
	"[retry]\nbackoff_max = 1h\n"
	"[storage]\ndatabase = /tmp/db2\n"
	"[limits]\ninvoice_send = official\nother = 1 - 3\n"
	"[context 1234563218]\ntoken_file = tok\nname = B\n"
	"[context 9876543210]\ntoken_file = tok2\n";

/* The diff lists must be exactly `want` (NULL-terminated). */
static void
is_msgs(const struct conf_msgs *m, const char *const *want, const char *what)
{
	size_t i, n;

	for (n = 0; want[n] != NULL; n++)
		;
	if (!ok(m->n == n, "%s: %zu lines", what, n))
		for (i = 0; i < m->n; i++)
			diag("got: %s", m->v[i]);
	for (i = 0; i < n && i < m->n; i++)
		is_str(m->v[i], want[i], "%s %zu", what, i);
}

static void
test_diff(void)
{
	static const char *const changed_want[] = {
		"log.level info -> debug",
		"log.trace none -> http,ksef",
		"retry.backoff_max 30m -> 1h",
		"limits.invoice_send 5 20 100 -> official",
		"limits.other official -> 1 - 3",
		"context 5265877635 removed",
		"context 1234563218 name changed",
		"context 9876543210 added",
		NULL
	};
	static const char *const restart_want[] = {
		"storage.database /tmp/db1 -> /tmp/db2",
		NULL
	};
	static const char *const none[] = { NULL };
	struct conf_msgs changed = { NULL, 0 }, restart = { NULL, 0 };
	struct conf *a, *b, *a2;

	a = load_ok("a.conf", diff_a);
	a2 = load_ok("a2.conf", diff_a);
	b = load_ok("b.conf", diff_b);
	if (a == NULL || b == NULL || a2 == NULL)
		goto out;
	conf_diff(a, a2, &changed, &restart);
	is_msgs(&changed, none, "same config: nothing changed");
	is_msgs(&restart, none, "same config: nothing needs restart");
	conf_msgs_free(&changed);
	conf_msgs_free(&restart);

	conf_diff(a, b, &changed, &restart);
	is_msgs(&changed, changed_want, "reload diff reports exactly the "
	    "changed settings");
	is_msgs(&restart, restart_want, "reload diff: needs restart");
	conf_msgs_free(&changed);
	conf_msgs_free(&restart);

	conf_restart_keep(b, a);
	is_str(b->database, "/tmp/db1", "restart setting keeps the old value");
	is_str(a->database, "/tmp/db2", "old config got the new value to free");
out:
	conf_free(a);
	conf_free(a2);
	conf_free(b);
}

static int hook_calls;
static int hook_old_level, hook_new_level;

static void
hook_cb(const struct conf *old, const struct conf *new, void *arg)
{
	hook_calls += *(int *)arg;
	hook_old_level = old->log_level;
	hook_new_level = new->log_level;
}

static void
test_reload(void)
{
	static const char *const token_changed[] = {
		"context 1234563218 token changed", NULL
	};
	struct conf_msgs changed = { NULL, 0 }, restart = { NULL, 0 };
	struct conf *cur, *before, *old;
	int one = 1;
	char *path;

	cur = load_ok("reload.conf", diff_a);
	if (cur == NULL)
		return;
	log_setlevel(LOG_LVL_INFO);
	conf_reload_hook_add(hook_cb, &one);

	path = put("reload.conf", diff_b, 0644);
	before = cur;
	ok(conf_reload(&cur, 0) == 0, "reload succeeds");
	ok(cur != before, "new config swapped in");
	is_int(hook_calls, 1, "hook ran once");
	ok(hook_old_level == LOG_LVL_INFO && hook_new_level == LOG_LVL_DEBUG,
	    "hook saw old and new");
	is_int(log_getlevel(), LOG_LVL_DEBUG, "log level applied live");
	is_int(log_trace_get(), TRACE_HTTP | TRACE_KSEF, "trace applied live");
	is_str(cur->database, "/tmp/db1", "storage.database kept (needs restart)");
	is_str(cur->contexts[1].nip, "9876543210", "context added");

	free(put("reload.conf", "[log]\nlevel = loud\n", 0644));
	before = cur;
	ok(conf_reload(&cur, 0) == -1, "broken file: reload refused");
	ok(cur == before && cur->log_level == LOG_LVL_DEBUG,
	    "old config stays");
	is_int(hook_calls, 1, "hook not run on failure");

	/* A token file whose contents change is reported, never printed. */
	free(put("reload.conf", diff_b, 0644));
	old = conf_load(path, &changed);
	free(put("tok", "token-rotated\n", 0600));
	before = conf_load(path, &changed);
	ok(old != NULL && before != NULL, "loads around a token rotation");
	if (old != NULL && before != NULL) {
		conf_diff(old, before, &changed, &restart);
		is_msgs(&changed, token_changed, "token rotation diff");
	}
	conf_msgs_free(&changed);
	conf_msgs_free(&restart);
	conf_free(old);
	conf_free(before);
	free(put("tok", "token-one\n", 0600));

	/* Verbosity raises the configured level; -vv traces everything. */
	conf_log_apply(cur, 2);
	ok(log_getlevel() == LOG_LVL_DEBUG && log_trace_get() == TRACE_ALL,
	    "-vv: debug and trace all");
	conf_reload_hook_remove(hook_cb, &one);
	free(put("reload.conf", diff_a, 0644));
	ok(conf_reload(&cur, 0) == 0 && hook_calls == 1, "removed hook not run");
	conf_reload_hooks_clear();
	conf_free(cur);
	free(path);
}

int
main(void)
{
	char *cmd;

	log_init("test_conf", 1, LOG_LVL_WARN);
	if (mkdtemp(tmpdir) == NULL) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	free(put("tok", "token-one\n", 0600));
	free(put("tok2", "token-two", 0600));
	free(put("tok-group", "secret", 0640));
	free(put("tok-world", "secret", 0604));
	free(put("tok-empty", "\n", 0600));

	test_missing_file();
	test_bad_files();
	test_defaults();
	test_values();
	test_envs();
	test_diff();
	test_reload();

	cmd = xasprintf("rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		diag("could not remove %s", tmpdir);
	free(cmd);
	return tap_done();
}
