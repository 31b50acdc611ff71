/* sim_time.c: date-time formats of KSeF (UTC with +00:00, Warsaw local time for UPOs) and parsing. */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* Unix seconds of the last Sunday of month m in year y, 01:00 UTC. */
static int64_t
last_sunday_0100(int y, int m)
{
	int64_t d = days_from_civil(y, m + 1, 1) - 1;	/* last day of m */
	int wd = (int)((d % 7 + 11) % 7);		/* 0 = Sunday; 1970-01-01 was Thursday */

	return (d - wd) * 86400 + 3600;
}

/* Offset of Europe/Warsaw from UTC at Unix ms t, in seconds (CET/CEST). */
static int
warsaw_offset(int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	int64_t s = ms / 1000;

	gmtime_r(&t, &tm);
	if (s >= last_sunday_0100(tm.tm_year + 1900, 3) &&
	    s < last_sunday_0100(tm.tm_year + 1900, 10))
		return 7200;
	return 3600;
}

static void
fmt(int64_t ms, int off, char *out, size_t len)
{
	time_t t;
	struct tm tm;
	int64_t v = ms + (int64_t)off * 1000;
	int aoff = off < 0 ? -off : off;

	if (v < 0)
		v = 0;
	t = (time_t)(v / 1000);
	gmtime_r(&t, &tm);
	snprintf(out, len, "%04u-%02u-%02uT%02u:%02u:%02u.%03u%c%02u:%02u",
	    (unsigned)(tm.tm_year + 1900) % 10000, (unsigned)(tm.tm_mon + 1) % 100,
	    (unsigned)tm.tm_mday % 100, (unsigned)tm.tm_hour % 100, (unsigned)tm.tm_min % 100,
	    (unsigned)tm.tm_sec % 100, (unsigned)(v % 1000), off < 0 ? '-' : '+',
	    (unsigned)aoff / 3600 % 100, (unsigned)aoff % 3600 / 60 % 100);
}

void
sim_time_iso(int64_t ms, char *out, size_t len)
{
	fmt(ms, 0, out, len);
}

void
sim_time_iso_local(int64_t ms, char *out, size_t len)
{
	fmt(ms, warsaw_offset(ms), out, len);
}

void
sim_time_ymd(int64_t ms, char *out)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, 9, "%04u%02u%02u", (unsigned)(tm.tm_year + 1900) % 10000,
	    (unsigned)(tm.tm_mon + 1) % 100, (unsigned)tm.tm_mday % 100);
}

void
sim_time_date_local(int64_t ms, char *out)
{
	char b[40];

	sim_time_iso_local(ms, b, sizeof(b));
	memcpy(out, b, 10);
	out[10] = '\0';
}

/* Read exactly n digits. */
static int
digits(const char **sp, int n, int *v)
{
	const char *s = *sp;
	int i;

	*v = 0;
	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	*sp = s + n;
	return 0;
}

int
sim_time_parse(const char *s, int64_t *out)
{
	int y, mo, d, h = 0, mi = 0, se = 0, oh, om, ms = 0, scale = 100, sign;
	int64_t v;

	if (s == NULL || digits(&s, 4, &y) == -1 || *s++ != '-' ||
	    digits(&s, 2, &mo) == -1 || *s++ != '-' || digits(&s, 2, &d) == -1)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31)
		return -1;
	if (*s == '\0') {
		v = days_from_civil(y, mo, d) * 86400000;
		*out = v - (int64_t)warsaw_offset(v) * 1000;
		return 0;
	}
	if (*s != 'T' && *s != 't')
		return -1;
	s++;
	if (digits(&s, 2, &h) == -1 || *s++ != ':' || digits(&s, 2, &mi) == -1 ||
	    *s++ != ':' || digits(&s, 2, &se) == -1 || h > 23 || mi > 59 || se > 60)
		return -1;
	if (*s == '.') {
		s++;
		if (!isdigit((unsigned char)*s))
			return -1;
		for (; isdigit((unsigned char)*s); s++) {
			ms += (*s - '0') * scale;
			scale /= 10;
		}
	}
	v = days_from_civil(y, mo, d) * 86400000 + ((int64_t)h * 3600 + mi * 60 + se) * 1000 + ms;
	if (*s == '\0') {
		*out = v - (int64_t)warsaw_offset(v - 3600000) * 1000;
		return 0;
	}
	if (*s == 'Z' || *s == 'z') {
		if (s[1] != '\0')
			return -1;
		*out = v;
		return 0;
	}
	if (*s != '+' && *s != '-')
		return -1;
	sign = *s++ == '-' ? -1 : 1;
	if (digits(&s, 2, &oh) == -1 || *s++ != ':' || digits(&s, 2, &om) == -1 ||
	    *s != '\0' || oh > 14 || om > 59)
		return -1;
	*out = v - sign * ((int64_t)oh * 3600 + om * 60) * 1000;
	return 0;
}
