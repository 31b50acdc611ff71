/* sim_conf.c: the simulator's settings, set by option name from the command line or a config file. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sim.h"

#ifndef SIM_SCHEMA_DIR
#define SIM_SCHEMA_DIR	"schemas"
#endif

void
sim_conf_init(struct sim_conf *c)
{
	memset(c, 0, sizeof(*c));
	sim_map_init(&c->tokens);
	c->schema_dir = xstrdup(SIM_SCHEMA_DIR);
	c->env = SIM_ENV_TEST;
	c->xsd = 1;
	c->processing_delay = 200;
	c->auth_delay = 100;
	c->storage_delay = 0;
	c->challenge_ttl = 10 * 60000;
	c->auth_token_ttl = 45 * 60000;
	c->access_ttl = 15 * 60000;
	c->refresh_ttl = 7 * 86400000LL;
	c->session_ttl = 12 * 3600000LL;
	c->session_max_invoices = 10000;
	c->max_invoice_size = 1000000;
	c->upo_url_ttl = 3 * 86400000LL;
	c->upo_page_size = 10000;
	c->metadata_max = 10000;
	c->upo_subject = xstrdup("Ministerstwo Finans\xc3\xb3w - \xc5\x9brodowisko testowe (TE)");
	c->latarnia_path = xstrdup("/latarnia");
	sim_limits_default(&c->limits);
	c->outage_start = -1;
	c->snapshot_interval = 1000;
}

void
sim_conf_free(struct sim_conf *c)
{
	sim_map_free(&c->tokens, free);
	free(c->state_dir);
	free(c->schema_dir);
	free(c->origin);
	free(c->upo_subject);
	free(c->latarnia_path);
	free(c->faults);
	free(c->reject_pattern);
	memset(c, 0, sizeof(*c));
}

static int
set_dur(int64_t *dst, const char *name, const char *val, char *err, size_t errlen)
{
	int64_t v = val ? parse_duration_ms(val) : -1;

	if (v < 0) {
		snprintf(err, errlen, "--%s: bad duration \"%s\" (e.g. 250ms, 30s, 5m, 2h, 1d)",
		    name, val ? val : "");
		return -1;
	}
	*dst = v;
	return 0;
}

static int
set_num(long *dst, const char *name, const char *val, long min, long max, char *err,
    size_t errlen)
{
	char *end;
	long v;

	errno = 0;
	v = val ? strtol(val, &end, 10) : 0;
	if (val == NULL || *val == '\0' || *end != '\0' || errno || v < min || v > max) {
		snprintf(err, errlen, "--%s: expected an integer %ld..%ld, got \"%s\"", name,
		    min, max, val ? val : "");
		return -1;
	}
	*dst = v;
	return 0;
}

static int
set_str(char **dst, const char *val)
{
	free(*dst);
	*dst = xstrdup(val);
	return 0;
}

static int
set_token(struct sim_conf *c, const char *val, char *err, size_t errlen)
{
	const char *colon = strchr(val, ':');
	char nip[11];

	if (colon == NULL || colon - val != 10 || colon[1] == '\0') {
		snprintf(err, errlen, "--token: expected NIP:TOKEN, got \"%s\"",
		    log_escape(val, strlen(val), 12));
		return -1;
	}
	memcpy(nip, val, 10);
	nip[10] = '\0';
	if (!nip_valid(nip)) {
		snprintf(err, errlen, "--token: NIP %s fails the checksum", nip);
		return -1;
	}
	free(sim_map_put(&c->tokens, nip, xstrdup(colon + 1)));
	return 0;
}

static int
set_limits(struct sim_conf *c, const char *val, char *err, size_t errlen)
{
	unsigned char *text;
	size_t len;
	char e2[200];

	if (strcmp(val, "off") == 0) {
		c->limits.enabled = 0;
		return 0;
	}
	if (strcmp(val, "on") == 0 || strcmp(val, "official") == 0) {
		c->limits.enabled = 1;
		return 0;
	}
	if ((text = file_read(val, 1 << 20, &len)) == NULL) {
		snprintf(err, errlen, "--limits %s: %s", val, strerror(errno));
		return -1;
	}
	if (sim_limits_parse(&c->limits, (char *)text, e2, sizeof(e2)) == -1) {
		snprintf(err, errlen, "--limits %s: %s", val, e2);
		free(text);
		return -1;
	}
	free(text);
	c->limits.enabled = 1;
	return 0;
}

static int
set_windows(struct sim_conf *c, const char *val, char *err, size_t errlen)
{
	char *s = xstrdup(val), *p = s, *t;
	int64_t w[3];
	int i;

	for (i = 0; i < 3; i++) {
		if ((t = strsep(&p, ",")) == NULL || (w[i] = parse_duration_ms(t)) <= 0) {
			snprintf(err, errlen, "--limit-windows: expected three durations "
			    "like 1s,60s,60m, got \"%s\"", val);
			free(s);
			return -1;
		}
	}
	free(s);
	if (p != NULL) {
		snprintf(err, errlen, "--limit-windows: more than three durations in \"%s\"", val);
		return -1;
	}
	memcpy(c->limits.win_ms, w, sizeof(w));
	return 0;
}

static int
set_outage(struct sim_conf *c, const char *val, char *err, size_t errlen)
{
	const char *colon = strchr(val, ':');
	char *a;

	if (colon == NULL) {
		snprintf(err, errlen, "--outage: expected START:DURATION, got \"%s\"", val);
		return -1;
	}
	a = xstrndup(val, (size_t)(colon - val));
	c->outage_start = parse_duration_ms(a);
	c->outage_len = parse_duration_ms(colon + 1);
	free(a);
	if (c->outage_start < 0 || c->outage_len <= 0) {
		c->outage_start = -1;
		snprintf(err, errlen, "--outage: bad durations in \"%s\"", val);
		return -1;
	}
	return 0;
}

int
sim_conf_set(struct sim_conf *c, const char *name, const char *val, char *err, size_t errlen)
{
	struct sim_fault_rule r;
	regex_t re;
	long n;

	if (strcmp(name, "no-xsd") == 0) {
		c->xsd = 0;
		return 0;
	}
	if (val == NULL) {
		snprintf(err, errlen, "--%s needs a value", name);
		return -1;
	}
	if (strcmp(name, "state") == 0)
		return set_str(&c->state_dir, val);
	if (strcmp(name, "schemas") == 0)
		return set_str(&c->schema_dir, val);
	if (strcmp(name, "token") == 0)
		return set_token(c, val, err, errlen);
	if (strcmp(name, "environment") == 0) {
		if (strcmp(val, "test") == 0)
			c->env = SIM_ENV_TEST;
		else if (strcmp(val, "demo") == 0)
			c->env = SIM_ENV_DEMO;
		else if (strcmp(val, "prod") == 0)
			c->env = SIM_ENV_PROD;
		else {
			snprintf(err, errlen, "--environment: test, demo or prod, not \"%s\"", val);
			return -1;
		}
		return 0;
	}
	if (strcmp(name, "processing-delay") == 0)
		return set_dur(&c->processing_delay, name, val, err, errlen);
	if (strcmp(name, "auth-delay") == 0)
		return set_dur(&c->auth_delay, name, val, err, errlen);
	if (strcmp(name, "storage-delay") == 0)
		return set_dur(&c->storage_delay, name, val, err, errlen);
	if (strcmp(name, "challenge-ttl") == 0)
		return set_dur(&c->challenge_ttl, name, val, err, errlen);
	if (strcmp(name, "auth-token-ttl") == 0)
		return set_dur(&c->auth_token_ttl, name, val, err, errlen);
	if (strcmp(name, "access-ttl") == 0)
		return set_dur(&c->access_ttl, name, val, err, errlen);
	if (strcmp(name, "refresh-ttl") == 0)
		return set_dur(&c->refresh_ttl, name, val, err, errlen);
	if (strcmp(name, "session-ttl") == 0)
		return set_dur(&c->session_ttl, name, val, err, errlen);
	if (strcmp(name, "upo-url-ttl") == 0)
		return set_dur(&c->upo_url_ttl, name, val, err, errlen);
	if (strcmp(name, "snapshot-interval") == 0)
		return set_dur(&c->snapshot_interval, name, val, err, errlen);
	if (strcmp(name, "session-max-invoices") == 0)
		return set_num(&c->session_max_invoices, name, val, 1, 10000000, err, errlen);
	if (strcmp(name, "max-invoice-size") == 0)
		return set_num(&c->max_invoice_size, name, val, 1, 100000000, err, errlen);
	if (strcmp(name, "upo-page-size") == 0)
		return set_num(&c->upo_page_size, name, val, 1, 10000, err, errlen);
	if (strcmp(name, "metadata-max") == 0)
		return set_num(&c->metadata_max, name, val, 1, 10000000, err, errlen);
	if (strcmp(name, "seed") == 0) {
		if (set_num(&n, name, val, 0, 0x7fffffffL, err, errlen) == -1)
			return -1;
		c->seed = (uint64_t)n;
		return 0;
	}
	if (strcmp(name, "upo-subject") == 0)
		return set_str(&c->upo_subject, val);
	if (strcmp(name, "latarnia-path") == 0) {
		if (val[0] != '/' || strlen(val) < 2) {
			snprintf(err, errlen, "--latarnia-path: must start with / and name a path");
			return -1;
		}
		return set_str(&c->latarnia_path, val);
	}
	if (strcmp(name, "limits") == 0)
		return set_limits(c, val, err, errlen);
	if (strcmp(name, "limit-windows") == 0)
		return set_windows(c, val, err, errlen);
	if (strcmp(name, "outage") == 0)
		return set_outage(c, val, err, errlen);
	if (strcmp(name, "fault") == 0) {
		if (sim_fault_parse(val, &r, err, errlen) == -1)
			return -1;
		c->faults = xrealloc(c->faults, (c->nfaults + 1) * sizeof(r));
		c->faults[c->nfaults++] = r;
		return 0;
	}
	if (strcmp(name, "reject-pattern") == 0) {
		if (regcomp(&re, val, REG_EXTENDED | REG_NOSUB) != 0) {
			snprintf(err, errlen, "--reject-pattern: not a valid extended regex: %s", val);
			return -1;
		}
		regfree(&re);
		return set_str(&c->reject_pattern, val);
	}
	snprintf(err, errlen, "unknown option \"%s\"", name);
	return -1;
}

int
sim_conf_file(const char *path, int (*set)(void *, const char *, const char *, char *, size_t),
    void *arg, char *err, size_t errlen)
{
	unsigned char *text;
	char *line, *p, *eq, *k, *v, e2[300];
	size_t len;
	int lineno = 0, rc = 0;

	if ((text = file_read(path, 1 << 20, &len)) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	for (p = (char *)text; rc == 0 && (line = strsep(&p, "\n")) != NULL; ) {
		lineno++;
		while (isspace((unsigned char)*line))
			line++;
		if (*line == '\0' || *line == '#' || *line == ';')
			continue;
		k = line;
		if ((eq = strchr(line, '=')) != NULL) {
			*eq = '\0';
			v = eq + 1;
			while (isspace((unsigned char)*v))
				v++;
			len = strlen(v);
			while (len > 0 && isspace((unsigned char)v[len - 1]))
				v[--len] = '\0';
		} else
			v = NULL;
		len = strlen(k);
		while (len > 0 && isspace((unsigned char)k[len - 1]))
			k[--len] = '\0';
		if (set(arg, k, v, e2, sizeof(e2)) == -1) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, e2);
			rc = -1;
		}
	}
	free(text);
	return rc;
}
