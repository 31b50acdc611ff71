/* test_alert.c: once per cause, reminders (injected time), the command sink and its timeout. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "alert.h"
#include "conf.h"
#include "log.h"
#include "util.h"
#include "tap.h"
#include "store_fixture.h"

#define HOUR	(3600 * 1000LL)

static void
conf_init(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	c->alert_syslog = 0;
	c->alert_command_timeout = 30000;
	c->alert_reminder = 24 * HOUR;
	c->alert_outage_after = 15 * 60 * 1000;
	c->alert_db_full_percent = 90;
}

/* A table of raises at given times and whether each fires. */
static void
test_dedup(struct event_base *base)
{
	static const struct {
		int64_t		 t;	/* hours */
		enum alert_kind	 kind;
		const char	*subject;
		const char	*cause;
		int		 fires;
		const char	*why;
	} t[] = {
		{ 0, ALERT_FAILED, "inv1", "code 0: max age", 1, "first time" },
		{ 0, ALERT_FAILED, "inv1", "code 0: max age", 0, "same cause again" },
		{ 1, ALERT_FAILED, "inv1", "code 0: max age", 0, "an hour later" },
		{ 23, ALERT_FAILED, "inv1", "code 0: max age", 0, "just inside the reminder" },
		{ 1, ALERT_REJECTED, "inv1", "code 0: max age", 1, "other kind, same subject" },
		{ 1, ALERT_FAILED, "inv2", "code 0: max age", 1, "other subject" },
		{ 2, ALERT_FAILED, "inv2", "code 440: conflict", 1, "changed cause" },
		{ 3, ALERT_FAILED, "inv2", "code 440: conflict", 0, "changed cause, repeated" },
		{ 3, ALERT_FAILED, "inv2", "code 0: max age", 1, "back to the old cause" },
		{ 24, ALERT_FAILED, "inv1", "code 0: max age", 1, "reminder passed" },
		{ 25, ALERT_FAILED, "inv1", "code 0: max age", 0, "after the reminder, quiet again" },
		{ 48, ALERT_FAILED, "inv1", "code 0: max age", 1, "second reminder" },
		{ 48, ALERT_AUTH, "5265877635", "401", 1, "auth failure" },
		{ 48, ALERT_AUTH, "5265877635", "401", 0, "auth failure retried" },
		{ 48, ALERT_AUTH, "1234563218", "401", 1, "auth failure, other context" },
	};
	struct conf c;
	struct alert *a;
	size_t i;
	int64_t t0 = 1700000000000LL;

	conf_init(&c);
	a = alert_new(base, NULL, NULL, &c);
	for (i = 0; i < nitems(t); i++)
		is_int(alert_raise_at(a, t[i].kind, t[i].subject, t[i].cause,
		    "msg", t0 + t[i].t * HOUR), t[i].fires, "%s", t[i].why);

	alert_clear(a, ALERT_FAILED, "inv1");
	is_int(alert_raise_at(a, ALERT_FAILED, "inv1", "code 0: max age", "m",
	    t0 + 48 * HOUR), 1, "cleared cause fires again");
	ok(alert_raise_at(a, ALERT_FAILED, "inv3", NULL, "m", t0) == 1 &&
	    alert_raise_at(a, ALERT_FAILED, "inv3", NULL, "m", t0) == 0,
	    "a NULL cause is one cause");

	/* A shorter reminder after a reload applies to what fired before. */
	c.alert_reminder = 1000;
	alert_update(a, &c);
	is_int(alert_raise_at(a, ALERT_AUTH, "5265877635", "401", "m",
	    t0 + 48 * HOUR + 999), 0, "reloaded reminder: not yet");
	is_int(alert_raise_at(a, ALERT_AUTH, "5265877635", "401", "m",
	    t0 + 48 * HOUR + 1000), 1, "reloaded reminder: passed");
	alert_free(a);

	/* Many causes: pruning keeps those within the reminder. */
	c.alert_reminder = HOUR;
	a = alert_new(base, NULL, NULL, &c);
	is_int(alert_raise_at(a, ALERT_STUCK, "keep", "x", "m", t0 + 2 * HOUR),
	    1, "recent cause");
	for (i = 0; i < 10050; i++) {
		char subj[32];

		snprintf(subj, sizeof(subj), "old%zu", i);
		alert_raise_at(a, ALERT_STUCK, subj, "x", "m", t0);
	}
	is_int(alert_raise_at(a, ALERT_STUCK, "keep", "x", "m", t0 + 2 * HOUR),
	    0, "recent cause survives pruning");
	alert_free(a);
}

/* What fired is kept in the store: a restart does not fire it again. */
static void
test_persist(struct event_base *base)
{
	struct conf c;
	struct store *st;
	struct alert *a;
	char *dir = fixture_dir();
	int64_t t0 = time_now_ms();

	conf_init(&c);
	st = fixture_open(base, dir, 1 << 22);
	a = alert_new(base, NULL, st, &c);
	ok(alert_raise_at(a, ALERT_AUTH, "5265877635", "PERMANENT", "m", t0) &&
	    alert_raise_at(a, ALERT_FAILED, "inv1", "FAILED code 0", "m", t0) &&
	    alert_raise_at(a, ALERT_FAILED, "inv2", "FAILED code 0", "m", t0),
	    "three alerts fired");
	alert_clear(a, ALERT_FAILED, "inv2");
	alert_free(a);
	is_int(store_flush(st), STORE_COMMITTED, "committed");
	store_close(st);

	st = fixture_open(base, dir, 1 << 22);
	a = alert_new(base, NULL, st, &c);
	is_int(alert_raise_at(a, ALERT_AUTH, "5265877635", "PERMANENT", "m",
	    t0 + HOUR), 0, "after a restart: unchanged cause quiet");
	is_int(alert_raise_at(a, ALERT_FAILED, "inv1", "REJECTED code 450", "m",
	    t0 + HOUR), 1, "after a restart: changed cause fires");
	is_int(alert_raise_at(a, ALERT_FAILED, "inv2", "FAILED code 0", "m",
	    t0 + HOUR), 1, "after a restart: a cleared cause fires");
	is_int(alert_raise_at(a, ALERT_AUTH, "5265877635", "PERMANENT", "m",
	    t0 + 25 * HOUR), 1, "after a restart: the reminder still counts "
	    "from the first");
	alert_free(a);
	store_flush(st);
	store_close(st);
	fixture_rmdir(dir);
}

/* Run the loop for `ms`. */
static void
loop_for(struct event_base *base, int64_t ms)
{
	int64_t end = time_mono_ms() + ms;

	while (time_mono_ms() < end)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* Alerts counted through a command that appends a line per alert. */
static int
lines_in(const char *path)
{
	unsigned char *data;
	size_t len, i;
	int n = 0;

	if ((data = file_read(path, 1 << 20, &len)) == NULL)
		return 0;
	for (i = 0; i < len; i++)
		n += data[i] == '\n';
	free(data);
	return n;
}

static void loop_until_reaped(struct event_base *, struct alert *, int64_t);

/* An outage alerts once after alert.outage_after; a short one never. */
static void
test_outage_db(struct event_base *base, const char *dir)
{
	struct conf c;
	struct alert *a;
	struct store *st;
	char *path, *cmd, *dbdir = fixture_dir();

	path = xasprintf("%s/outage.jsonl", dir);
	cmd = xasprintf("cat >> %s", path);
	conf_init(&c);
	c.alert_command = cmd;
	c.alert_outage_after = 200;
	a = alert_new(base, NULL, NULL, &c);
	alert_outage_set(a, "ksef", 1);
	alert_outage_set(a, "ksef", 0);
	loop_for(base, 300);
	loop_until_reaped(base, a, 5000);
	is_int(lines_in(path), 0, "an outage shorter than outage_after: no alert");
	alert_outage_set(a, "ksef", 1);
	loop_for(base, 100);
	alert_outage_set(a, "ksef", 1);	/* still down: not a new outage */
	loop_for(base, 400);
	loop_until_reaped(base, a, 5000);
	is_int(lines_in(path), 1, "a long outage: one alert");
	loop_for(base, 300);
	is_int(lines_in(path), 1, "still one while it lasts");
	alert_outage_set(a, "ksef", 0);
	alert_outage_set(a, "ksef", 1);
	loop_for(base, 400);
	loop_until_reaped(base, a, 5000);
	is_int(lines_in(path), 2, "the next outage: another alert");
	alert_free(a);	/* with an outage still timed */

	/* A database fuller than db_full_percent: one alert per map size. */
	unlink(path);
	c.alert_db_full_percent = 1;
	st = fixture_open(base, dbdir, 1 << 20);
	a = alert_new(base, NULL, st, &c);
	alert_db_check(a);
	alert_db_check(a);
	loop_until_reaped(base, a, 5000);
	is_int(lines_in(path), 1, "database full: one alert for two checks");
	c.alert_db_full_percent = 100;
	alert_update(a, &c);
	alert_db_check(a);
	c.alert_db_full_percent = 1;
	alert_update(a, &c);
	alert_db_check(a);
	loop_until_reaped(base, a, 5000);
	is_int(lines_in(path), 2, "full again after it was not: another alert");
	alert_free(a);
	store_flush(st);
	store_close(st);
	fixture_rmdir(dbdir);
	unlink(path);
	free(path);
	free(cmd);
}

/* Run the loop until no command runs, at most `ms`. */
static void
loop_until_reaped(struct event_base *base, struct alert *a, int64_t ms)
{
	int64_t end = time_mono_ms() + ms;

	while (alert_commands_running(a) > 0 && time_mono_ms() < end)
		event_base_loop(base, EVLOOP_ONCE);
}

static void
test_command(struct event_base *base, const char *dir)
{
	struct conf c;
	struct alert *a;
	json_t *o;
	json_error_t jerr;
	char *path, *cmd;
	unsigned char *data;
	size_t len;
	int64_t t;

	path = xasprintf("%s/alerts.jsonl", dir);
	cmd = xasprintf("cat >> %s", path);
	conf_init(&c);
	c.alert_command = cmd;
	a = alert_new(base, NULL, NULL, &c);
	ok(alert_raise(a, ALERT_REJECTED, "abc", "code 450: bad \"NIP\"\n",
	    "invoice abc REJECTED") == 1, "raised");
	ok(alert_raise(a, ALERT_REJECTED, "abc", "code 450: bad \"NIP\"\n",
	    "invoice abc REJECTED") == 0, "repeat suppressed");
	is_int((int)alert_commands_running(a), 1, "one command running");
	loop_until_reaped(base, a, 10000);
	is_int((int)alert_commands_running(a), 0, "command reaped");
	data = file_read(path, 1 << 20, &len);
	ok(data != NULL, "the command wrote its input");
	o = data ? json_loadb((char *)data, len, 0, &jerr) : NULL;
	ok(o != NULL, "one JSON object");
	if (o != NULL) {
		is_str(json_string_value(json_object_get(o, "kind")), "rejected",
		    "kind");
		is_str(json_string_value(json_object_get(o, "subject")), "abc",
		    "subject");
		is_str(json_string_value(json_object_get(o, "cause")),
		    "code 450: bad \"NIP\"\n", "cause, escaped and back");
		ok(json_is_false(json_object_get(o, "reminder")), "not a reminder");
		ok(json_is_integer(json_object_get(o, "id")), "id");
		json_decref(o);
	}
	free(data);
	alert_free(a);

	/* A command that hangs and never reads its input is killed in time. */
	c.alert_command = "sleep 30";
	c.alert_command_timeout = 300;
	a = alert_new(base, NULL, NULL, &c);
	t = time_mono_ms();
	alert_raise(a, ALERT_FAILED, "x", "y", "hang");
	loop_until_reaped(base, a, 10000);
	t = time_mono_ms() - t;
	is_int((int)alert_commands_running(a), 0, "hanging command reaped");
	ok(t >= 300 && t < 5000, "killed at its timeout (%lld ms)", (long long)t);
	alert_free(a);

	/* One still running at free is killed and reaped. */
	a = alert_new(base, NULL, NULL, &c);
	alert_raise(a, ALERT_FAILED, "x", "y", "hang");
	is_int((int)alert_commands_running(a), 1, "running at free");
	alert_free(a);
	ok(1, "freed with a running command");

	unlink(path);
	free(path);
	free(cmd);
}

int
main(void)
{
	struct event_base *base;
	char dir[] = "/tmp/test_alert.XXXXXX";

	log_init("test_alert", 1, LOG_LVL_INFO);
	if (mkdtemp(dir) == NULL)
		return 1;
	base = event_base_new();
	test_dedup(base);
	test_persist(base);
	test_command(base, dir);
	test_outage_db(base, dir);
	event_base_free(base);
	rmdir(dir);
	return tap_done();
}
