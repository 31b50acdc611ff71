/*
 * bench_validate.c: microseconds per validate_invoice() call (parse, schema,
 * rules, hashing).  Not a test.  Usage: bench_validate [FILE [N]]; the
 * default file is the official FA(3) template of about 5 KB.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"
#include "validate.h"

static double
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int
main(int argc, char **argv)
{
	const char *top = getenv("top_srcdir");
	const char *nips[] = { "5265877635" };
	struct validate_params p;
	struct validate_result res;
	struct validator *v;
	unsigned char *body;
	char err[512], *file, *dir;
	size_t len;
	long i, n = argc > 2 ? atol(argv[2]) : 20000;
	double t0, t1;

	log_init("bench_validate", 1, LOG_LVL_WARN);
	if (top == NULL)
		top = TOP_SRCDIR;
	dir = xasprintf("%s/schemas", top);
	file = argc > 1 ? xstrdup(argv[1]) :
	    xasprintf("%s/tests/data/valid/fa3-java-invoice-template_v3.xml", top);
	memset(&p, 0, sizeof(p));
	p.schema_dir = dir;
	p.fa2_allowed = 1;
	p.nips = nips;
	p.nnips = 1;
	p.future_tolerance_ms = 86400000;
	if ((v = validator_new(&p, err, sizeof(err))) == NULL)
		fatalx("%s", err);
	if ((body = file_read(file, 64 << 20, &len)) == NULL)
		fatal("%s", file);
	if (validate_invoice(v, body, len, &res) != 0)
		fatalx("%s: refused (%s)", file, res.nproblems ?
		    res.problems[0].message : "?");
	validate_result_free(&res);
	for (i = 0; i < n / 10; i++) {		/* warm up */
		validate_invoice(v, body, len, &res);
		validate_result_free(&res);
	}
	t0 = now_us();
	for (i = 0; i < n; i++) {
		validate_invoice(v, body, len, &res);
		validate_result_free(&res);
	}
	t1 = now_us();
	printf("%s: %zu bytes, %ld runs, %.1f us per invoice\n", file, len, n,
	    (t1 - t0) / n);
	free(body);
	free(file);
	free(dir);
	validator_free(v);
	validate_shutdown();
	return 0;
}
