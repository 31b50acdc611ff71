/*
 * sim_fault.c: fault rules (503 HTML, 500, hang, reset, reset-after, slow,
 * 429, and garbage answers: truncated, wrong-types, html, huge) per
 * endpoint group.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

const char *const sim_fault_names[F_NKINDS] = {
	"503", "500", "hang", "reset", "reset-after", "slow", "429",
	"truncated", "wrong-types", "html", "huge",
};

#define HUGE_DEFAULT	(20 * 1024 * 1024)	/* above any sane client cap */

static int
kind_lookup(const char *s, size_t n)
{
	int i;

	for (i = 0; i < F_NKINDS; i++)
		if (strlen(sim_fault_names[i]) == n && strncmp(s, sim_fault_names[i], n) == 0)
			return i;
	return -1;
}

static int
rule_check(struct sim_fault_rule *r, char *err, size_t errlen)
{
	if (r->every == 0 && (r->p <= 0 || r->p > 1)) {
		snprintf(err, errlen, "fault: need every=N (N >= 1) or p=P (0 < P <= 1)");
		return -1;
	}
	if (r->kind == F_SLOW && r->arg_ms <= 0) {
		snprintf(err, errlen, "fault: slow needs a delay, e.g. slow=2s");
		return -1;
	}
	if (r->kind == F_429 && r->arg_ms <= 0)
		r->arg_ms = 1000;
	if (r->kind == F_HUGE && r->size <= 0)
		r->size = HUGE_DEFAULT;
	return 0;
}

int
sim_fault_parse(const char *spec, struct sim_fault_rule *r, char *err, size_t errlen)
{
	char *s = xstrdup(spec), *f[4], *p, *eq, *end;
	int n = 0, rc = -1;

	memset(r, 0, sizeof(*r));
	r->count = -1;
	for (p = s; n < 4; ) {
		f[n++] = p;
		if ((p = strchr(p, ':')) == NULL)
			break;
		*p++ = '\0';
	}
	if (n < 3 || p != NULL) {
		snprintf(err, errlen, "fault \"%s\": expected GROUP:KIND:RULE[:count=N]", spec);
		goto out;
	}
	if (strcmp(f[0], "all") == 0)
		r->group = G_NONE;
	else if (strcmp(f[0], "storage") == 0)
		r->group = G_STORAGE;
	else if ((r->group = sim_group_lookup(f[0])) == G_NONE) {
		snprintf(err, errlen, "fault \"%s\": unknown group \"%s\"", spec, f[0]);
		goto out;
	}
	eq = strchr(f[1], '=');
	if ((r->kind = kind_lookup(f[1], eq ? (size_t)(eq - f[1]) : strlen(f[1]))) == -1) {
		snprintf(err, errlen, "fault \"%s\": unknown kind \"%s\"", spec, f[1]);
		goto out;
	}
	if (eq != NULL && r->kind == F_HUGE) {
		if ((r->size = parse_size(eq + 1)) <= 0) {
			snprintf(err, errlen, "fault \"%s\": bad size \"%s\"", spec, eq + 1);
			goto out;
		}
	} else if (eq != NULL && (r->arg_ms = parse_duration_ms(eq + 1)) < 0) {
		snprintf(err, errlen, "fault \"%s\": bad duration \"%s\"", spec, eq + 1);
		goto out;
	}
	errno = 0;
	if (strcmp(f[2], "always") == 0)
		r->every = 1;
	else if (strncmp(f[2], "every=", 6) == 0) {
		r->every = strtoul(f[2] + 6, &end, 10);
		if (*end != '\0' || errno || f[2][6] == '\0' || f[2][6] == '-')
			r->every = 0;
	} else if (strncmp(f[2], "p=", 2) == 0) {
		r->p = strtod(f[2] + 2, &end);
		if (*end != '\0' || f[2][2] == '\0')
			r->p = -1;
	} else {
		snprintf(err, errlen, "fault \"%s\": rule must be always, every=N or p=P", spec);
		goto out;
	}
	if (n == 4) {
		if (strncmp(f[3], "count=", 6) != 0 ||
		    (r->count = strtol(f[3] + 6, &end, 10)) < 1 || *end != '\0') {
			snprintf(err, errlen, "fault \"%s\": expected count=N (N >= 1)", spec);
			goto out;
		}
	}
	rc = rule_check(r, err, errlen);
out:
	free(s);
	return rc;
}

int
sim_fault_from_json(json_t *o, struct sim_fault_rule *r, char *err, size_t errlen)
{
	json_t *g = json_object_get(o, "group"), *k = json_object_get(o, "kind");
	json_t *ev = json_object_get(o, "every"), *p = json_object_get(o, "p");
	json_t *c = json_object_get(o, "count"), *ms = json_object_get(o, "ms");
	json_t *sz = json_object_get(o, "size");

	memset(r, 0, sizeof(*r));
	r->count = -1;
	if (!json_is_object(o)) {
		snprintf(err, errlen, "fault rule must be an object");
		return -1;
	}
	if (g == NULL || (json_is_string(g) && strcmp(json_string_value(g), "all") == 0))
		r->group = G_NONE;
	else if (json_is_string(g) && strcmp(json_string_value(g), "storage") == 0)
		r->group = G_STORAGE;
	else if (!json_is_string(g) ||
	    (r->group = sim_group_lookup(json_string_value(g))) == G_NONE) {
		snprintf(err, errlen, "fault rule: unknown group");
		return -1;
	}
	if (!json_is_string(k) ||
	    (r->kind = kind_lookup(json_string_value(k), strlen(json_string_value(k)))) == -1) {
		snprintf(err, errlen, "fault rule: kind must be one of 503, 500, hang, reset, "
		    "reset-after, slow, 429, truncated, wrong-types, html, huge");
		return -1;
	}
	if (ev != NULL && (!json_is_integer(ev) || json_integer_value(ev) < 1)) {
		snprintf(err, errlen, "fault rule: every must be an integer >= 1");
		return -1;
	}
	if (ev != NULL)
		r->every = (unsigned long)json_integer_value(ev);
	if (p != NULL && !json_is_number(p)) {
		snprintf(err, errlen, "fault rule: p must be a number");
		return -1;
	}
	if (p != NULL)
		r->p = json_number_value(p);
	if (ev == NULL && p == NULL)
		r->every = 1;
	if (c != NULL && (!json_is_integer(c) || json_integer_value(c) < 1)) {
		snprintf(err, errlen, "fault rule: count must be an integer >= 1");
		return -1;
	}
	if (c != NULL)
		r->count = (long)json_integer_value(c);
	if (ms != NULL && (!json_is_integer(ms) || json_integer_value(ms) < 0)) {
		snprintf(err, errlen, "fault rule: ms must be an integer >= 0");
		return -1;
	}
	if (ms != NULL)
		r->arg_ms = json_integer_value(ms);
	if (sz != NULL && (!json_is_integer(sz) || json_integer_value(sz) < 1)) {
		snprintf(err, errlen, "fault rule: size must be an integer >= 1");
		return -1;
	}
	if (sz != NULL)
		r->size = json_integer_value(sz);
	return rule_check(r, err, errlen);
}

json_t *
sim_fault_to_json(const struct sim_fault_rule *r)
{
	json_t *o = json_pack("{s:s,s:s,s:I,s:I}",
	    "group", r->group == G_NONE ? "all" : r->group == G_STORAGE ? "storage" :
	    sim_group_names[r->group],
	    "kind", sim_fault_names[r->kind], "count", (json_int_t)r->count,
	    "seen", (json_int_t)r->seen);

	if (r->every)
		json_object_set_new(o, "every", json_integer((json_int_t)r->every));
	else
		json_object_set_new(o, "p", json_real(r->p));
	if (r->arg_ms)
		json_object_set_new(o, "ms", json_integer(r->arg_ms));
	if (r->size)
		json_object_set_new(o, "size", json_integer(r->size));
	return o;
}
