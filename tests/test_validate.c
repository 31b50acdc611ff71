/*
 * test_validate.c: the validation module against its corpus: every valid
 * sample accepted, every invalid case refused with its rule, line and path
 * (tests/data/{valid,invalid}/EXPECT), FA(2) only when allowed, oversized
 * bodies, the idempotency key, and nothing printed to stderr by libxml2.
 */
#include "config.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "validate.h"
#include "tap.h"

#define TODAY		"2026-07-01"
#define SELLER		"5265877635"

static const char *top;

/* A validator for the corpus; FA(2) as asked. */
static struct validator *
mkvalidator(int fa2, size_t max_body)
{
	static const char *nips[] = { SELLER, "7352765225" };
	struct validate_params p;
	struct validator *v;
	char dir[1024], err[512];

	snprintf(dir, sizeof(dir), "%s/schemas", top);
	memset(&p, 0, sizeof(p));
	p.schema_dir = dir;
	p.fa2_allowed = fa2;
	p.nips = nips;
	p.nnips = 1;
	p.future_tolerance_ms = 86400000;
	p.today = TODAY;
	p.max_body = max_body;
	if ((v = validator_new(&p, err, sizeof(err))) == NULL)
		diag("validator_new: %s", err);
	return v;
}

static unsigned char *
load(const char *dir, const char *name, size_t *len)
{
	char path[1024];
	unsigned char *b;

	snprintf(path, sizeof(path), "%s/tests/data/%s/%s", top, dir, name);
	if ((b = file_read(path, 8 << 20, len)) == NULL)
		diag("cannot read %s", path);
	return b;
}

static void
show(const struct validate_result *r)
{
	size_t i;

	for (i = 0; i < r->nproblems; i++)
		diag("  %s %s %d:%d %s: %s",
		    validate_severity_name(r->problems[i].severity),
		    r->problems[i].rule, r->problems[i].line,
		    r->problems[i].column, r->problems[i].path ?
		    r->problems[i].path : "-", r->problems[i].message);
}

/* Next table row of an EXPECT file: up to 4 words; 0 at the end. */
static int
row(FILE *f, char w[4][256])
{
	char line[1024];
	int n;

	while (fgets(line, sizeof(line), f) != NULL) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		memset(w, 0, 4 * 256);
		n = sscanf(line, "%255s %255s %255s %255s", w[0], w[1], w[2], w[3]);
		if (n >= 2)
			return n;
	}
	return 0;
}

static FILE *
expect_open(const char *dir)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/tests/data/%s/EXPECT", top, dir);
	if ((f = fopen(path, "r")) == NULL)
		diag("cannot open %s", path);
	return f;
}

static void
test_valid(struct validator *v2, struct validator *v3)
{
	struct validate_result r;
	char w[4][256];
	unsigned char *b;
	size_t len, i;
	int fa2, n = 0, errs;
	FILE *f;

	if ((f = expect_open("valid")) == NULL) {
		ok(0, "valid/EXPECT");
		return;
	}
	while (row(f, w) >= 3) {
		n++;
		fa2 = strcmp(w[1], "FA2") == 0;
		if ((b = load("valid", w[0], &len)) == NULL) {
			ok(0, "read %s", w[0]);
			continue;
		}
		if (!ok(validate_invoice(v2, b, len, &r) == 0 && r.ok,
		    "accepted: %s", w[0]))
			show(&r);
		for (errs = 0, i = 0; i < r.nproblems; i++)
			errs += r.problems[i].severity == VALIDATE_ERROR;
		ok(errs == 0 && r.nerrors == 0, "%s: no errors", w[0]);
		is_int(r.form, fa2 ? VALIDATE_FORM_FA2 : VALIDATE_FORM_FA3,
		    "%s: form %s", w[0], w[1]);
		is_str(r.kind, w[2], "%s: RodzajFaktury", w[0]);
		is_str(r.seller_nip, SELLER, "%s: seller NIP", w[0]);
		ok(r.has_key && r.number != NULL && r.issue_date[0],
		    "%s: identity and key", w[0]);
		validate_result_free(&r);

		/* FA(3)-only validator: FA(2) refused with its own rule. */
		validate_invoice(v3, b, len, &r);
		if (fa2)
			ok(!r.ok && r.nproblems > 0 &&
			    strcmp(r.problems[0].rule, "form.not_allowed") == 0,
			    "%s: refused when FA (2) is not allowed", w[0]);
		else
			ok(r.ok, "%s: accepted by the FA (3)-only validator", w[0]);
		validate_result_free(&r);
		free(b);
	}
	fclose(f);
	ok(n >= 16, "valid corpus has %d invoices", n);
}

static void
test_invalid(struct validator *v)
{
	struct validate_result r;
	const struct validate_problem *p;
	char w[4][256];
	unsigned char *b;
	size_t len, i;
	int n = 0, found;
	FILE *f;

	if ((f = expect_open("invalid")) == NULL) {
		ok(0, "invalid/EXPECT");
		return;
	}
	while (row(f, w) == 4) {
		n++;
		if ((b = load("invalid", w[0], &len)) == NULL) {
			ok(0, "read %s", w[0]);
			continue;
		}
		ok(validate_invoice(v, b, len, &r) == -1 && !r.ok && r.nerrors > 0,
		    "refused: %s", w[0]);
		found = 0;
		for (i = 0; i < r.nproblems; i++) {
			p = &r.problems[i];
			if (p->severity == VALIDATE_ERROR &&
			    strcmp(p->rule, w[1]) == 0 && p->line == atoi(w[2]) &&
			    (strcmp(w[3], "-") == 0 ? p->path == NULL :
			    p->path != NULL && strcmp(p->path, w[3]) == 0) &&
			    p->message != NULL && p->message[0] != '\0')
				found = 1;
		}
		if (!ok(found, "%s: %s at line %s, %s", w[0], w[1], w[2], w[3]))
			show(&r);
		ok(!r.has_key, "%s: no key for a refused invoice", w[0]);
		validate_result_free(&r);
		free(b);
	}
	fclose(f);
	ok(n >= 35, "invalid corpus has %d cases", n);
}

static void
test_sizes(struct validator *v)
{
	struct validate_result r;
	struct validator *small;
	unsigned char *b, *big;
	size_t len;

	/* Larger than the default 1 MiB limit. */
	big = xmalloc((1 << 20) + 1);
	memset(big, ' ', (1 << 20) + 1);
	ok(validate_invoice(v, big, (1 << 20) + 1, &r) == -1 &&
	    r.nproblems == 1 && strcmp(r.problems[0].rule, "body.too_large") == 0,
	    "1 MiB + 1 byte refused as body.too_large");
	validate_result_free(&r);
	free(big);

	/* A configured smaller limit; exactly at the limit is fine. */
	if ((b = load("valid", "fa3-invoice-pdfgen.xml", &len)) == NULL)
		return;
	small = mkvalidator(0, len - 1);
	validate_invoice(small, b, len, &r);
	ok(!r.ok && strcmp(r.problems[0].rule, "body.too_large") == 0,
	    "body one byte over max_body refused");
	validate_result_free(&r);
	validator_free(small);
	small = mkvalidator(0, len);
	ok(validate_invoice(small, b, len, &r) == 0, "body exactly max_body accepted");
	validate_result_free(&r);
	validator_free(small);
	free(b);
}

static void
test_identity(struct validator *v)
{
	static const char want_sha[] =
	    "3a613953d723bc853aa5cdf22f76f15740fdea1b5e0d30b031d07481a2792a13";
	struct validate_result r, r2;
	unsigned char *b, *b2, k1[32], k2[32], sha[32];
	char hex[65];
	size_t len;

	/* Known-answer vector of the key framing (computed independently). */
	memset(sha, 0, sizeof(sha));
	hex_decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
	    sha, 32);	/* SHA-256("abc") */
	validate_key_compute("5265877635", "FA/1", "2026-06-05", sha, k1);
	hex_encode(k1, 32, hex);
	is_str(hex, "47ab4f4cc89ab93d723f098d2966398cb3de87ee00be31dcd5ead0dbdc829b2f",
	    "idempotency key known answer");
	/* Length prefixes keep field boundaries apart. */
	validate_key_compute("5265877635", "FA/12", "026-06-05", sha, k2);
	ok(memcmp(k1, k2, 32) != 0, "moving a byte between fields changes the key");

	if ((b = load("valid", "fa3-invoice-pdfgen.xml", &len)) == NULL)
		return;
	validate_invoice(v, b, len, &r);
	hex_encode(r.sha256, 32, hex);
	is_str(hex, want_sha, "sha256 of the exact bytes");
	is_str(r.buyer_nip, "6808208874", "buyer NIP");
	is_str(r.number, "FA/YUCFO-4342344706/03/2026", "P_2");
	is_str(r.issue_date, "2025-10-31", "P_1");
	ok(r.offline && r.nwarnings == 1 && r.nproblems == 1 &&
	    strcmp(r.problems[0].rule, "date.past") == 0 &&
	    r.problems[0].severity == VALIDATE_WARNING,
	    "P_1 before today: a date.past warning, offline flag");
	validate_key_compute(r.seller_nip, r.number, r.issue_date, r.sha256, k1);
	ok(memcmp(k1, r.key, 32) == 0, "result key = validate_key_compute()");
	validate_invoice(v, b, len, &r2);
	ok(memcmp(r.key, r2.key, 32) == 0, "same bytes, same key");
	validate_result_free(&r2);
	b2 = xmalloc(len + 1);
	memcpy(b2, b, len);
	b2[len] = '\n';
	validate_invoice(v, b2, len + 1, &r2);
	ok(r2.ok && memcmp(r.key, r2.key, 32) != 0,
	    "one more byte: accepted, another key");
	validate_result_free(&r2);
	validate_result_free(&r);
	free(b2);
	free(b);

	/* The correction's references are reported. */
	if ((b = load("valid", "extra-fa3-kor.xml", &len)) == NULL)
		return;
	validate_invoice(v, b, len, &r);
	ok(r.ncorrected == 1 && strcmp(r.corrected[0].number,
	    "FA/GRQMB-0001/05/2025") == 0 &&
	    strcmp(r.corrected[0].date, "2026-06-05") == 0 &&
	    r.corrected[0].ksef_number != NULL &&
	    strcmp(r.corrected[0].ksef_number,
	    "5265877635-20260605-0100001AF629-AF") == 0,
	    "KOR: corrected invoice number, date, KSeF number");
	validate_result_free(&r);
	free(b);
}

/* Tolerance and dates: P_1 = today is silent, today + 1 day is tolerated. */
static void
test_dates(struct validator *v)
{
	static const char *days[] = { "2026-07-01", "2026-07-02" };
	struct validate_result r;
	unsigned char *b;
	char *p;
	size_t len, i;

	if ((b = load("valid", "fa3-java-invoice-template_v3.xml", &len)) == NULL)
		return;
	p = strstr((char *)b, "<P_1>") + 5;
	for (i = 0; i < nitems(days); i++) {
		memcpy(p, days[i], 10);
		validate_invoice(v, b, len, &r);
		ok(r.ok && r.nproblems == 0 && !r.offline, "P_1 %s: no problem",
		    days[i]);
		validate_result_free(&r);
	}
	free(b);
}

/* Replace the first `from` in a file's text by `to`; NULL if absent. Caller frees. */
static char *
variant(const char *name, const char *from, const char *to, size_t *len)
{
	unsigned char *b;
	char *p, *out;
	size_t n;

	if ((b = load("valid", name, &n)) == NULL)
		return NULL;
	if ((p = strstr((char *)b, from)) == NULL) {
		free(b);
		return NULL;
	}
	out = xasprintf("%.*s%s%s", (int)(p - (char *)b), b, to, p + strlen(from));
	*len = strlen(out);
	free(b);
	return out;
}

/* Where readings differ by kind of invoice, rules warn instead of refusing. */
static void
test_severities(struct validator *v)
{
	static const struct {
		const char *file, *from, *to, *rule;
		int sev;
	} t[] = {
		{ "extra-fa3-kor.xml", "<P_11>100.00</P_11>", "<P_11>-100.00</P_11>",
		  "line.net", VALIDATE_WARNING },
		{ "extra-fa3-kor.xml", "<P_15>-123.00</P_15>", "<P_15>-120.00</P_15>",
		  "totals.gross", VALIDATE_WARNING },
		{ "extra-fa3-kor.xml", "<P_14_1>-23.00</P_14_1>",
		  "<P_14_1>5.00</P_14_1>", "totals.gross", VALIDATE_WARNING },
		{ "extra-fa3-zal.xml", "<P_14_1>186.99</P_14_1>",
		  "<P_14_1>150.00</P_14_1>", "totals.rate", VALIDATE_WARNING },
		{ "extra-fa3-gross.xml", "<P_13_2>92.59</P_13_2>",
		  "<P_13_2>92.00</P_13_2>", "totals.rate", VALIDATE_ERROR },
		{ "extra-fa3-eur-exempt.xml", "<P_13_7>100.00</P_13_7>",
		  "<P_13_7>10.00</P_13_7>", "totals.rate", VALIDATE_ERROR },
	};
	struct validate_result r;
	size_t i, k, len;
	char *b;
	int found;

	for (i = 0; i < nitems(t); i++) {
		if ((b = variant(t[i].file, t[i].from, t[i].to, &len)) == NULL) {
			ok(0, "variant of %s", t[i].file);
			continue;
		}
		validate_invoice(v, b, len, &r);
		for (found = 0, k = 0; k < r.nproblems; k++)
			if (strcmp(r.problems[k].rule, t[i].rule) == 0 &&
			    (int)r.problems[k].severity == t[i].sev)
				found = 1;
		if (!ok(found && r.ok == (t[i].sev == VALIDATE_WARNING),
		    "%s with %s: %s %s", t[i].file, t[i].to, t[i].rule,
		    validate_severity_name(t[i].sev)))
			show(&r);
		validate_result_free(&r);
		free(b);
	}
}

/* 500 bad lines: 100 problems listed, all counted; paths keep their index. */
static void
test_many_errors(struct validator *v)
{
	static const char line[] = "        <FaWiersz>\n"
	    "            <NrWierszaFa>1</NrWierszaFa>\n"
	    "            <P_12>24</P_12>\n        </FaWiersz>\n";
	struct validate_result r;
	struct buf b;
	unsigned char *t;
	char *p;
	size_t len;
	int i;

	if ((t = load("valid", "fa3-java-invoice-template_v3.xml", &len)) == NULL)
		return;
	p = strstr((char *)t, "        <FaWiersz>");
	buf_init(&b);
	buf_add(&b, t, p - (char *)t);
	for (i = 0; i < 500; i++)
		buf_addstr(&b, line);
	buf_addstr(&b, p);
	validate_invoice(v, b.data, b.len, &r);
	ok(!r.ok && r.nproblems == VALIDATE_MAX_PROBLEMS && r.nerrors == 500,
	    "500 schema errors: %zu listed, %zu counted", r.nproblems, r.nerrors);
	is_str(r.problems[99].path, "/Faktura/Fa/FaWiersz[100]/P_12",
	    "the 100th problem's path");
	validate_result_free(&r);
	buf_free(&b);
	free(t);
}

/* Bad parameters are refused with a message. */
/* Whitespace: between elements it makes no difference; inside a leaf it is content. */
/* Validate n bytes at x, expecting no error: "WHAT: valid". */
static void
expect_valid(struct validator *v, const char *x, size_t n, const char *what)
{
	struct validate_result r;

	validate_invoice(v, (const unsigned char *)x, n, &r);
	ok(r.ok && r.nerrors == 0, "%s: valid", what);
	if (r.nerrors)
		show(&r);
	validate_result_free(&r);
}

static void
test_whitespace(struct validator *v)
{
	struct validate_result r;
	unsigned char *b;
	char *x, *y, *p;
	size_t len, i, j;
	int line = 1;

	if ((b = load("valid", "fa3-csharp-invoice-template-fa-3.xml", &len)) == NULL)
		return;
	x = xmalloc(3 * len + 1);
	y = xmalloc(len + 64);
	/* Every run of whitespace between two tags dropped, then tripled. */
	for (i = j = 0; i < len; i++) {
		if (b[i] == '>') {
			size_t k = i + 1;

			while (k < len && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r'))
				k++;
			if (k < len && b[k] == '<') {
				x[j++] = '>';
				i = k - 1;
				continue;
			}
		}
		x[j++] = (char)b[i];
	}
	expect_valid(v, x, j, "no whitespace between elements");
	for (i = j = 0; i < len; i++) {
		x[j++] = (char)b[i];
		if (b[i] == '>' && i + 1 < len && b[i + 1] == '\n') {
			memcpy(x + j, "\n \t", 3);
			j += 3;
		}
	}
	expect_valid(v, x, j, "more whitespace between elements");
	/* <P_1M>  </P_1M>: its two spaces are its value (collapsed to empty). */
	if ((p = strstr((char *)b, "<P_1M>Warszawa</P_1M>")) == NULL) {
		ok(0, "the template has P_1M");
		goto out;
	}
	for (i = 0; i < (size_t)(p - (char *)b); i++)
		line += b[i] == '\n';
	j = (size_t)(p - (char *)b);
	memcpy(y, b, j);
	memcpy(y + j, "<P_1M>  </P_1M>", 15);
	strcpy(y + j + 15, p + strlen("<P_1M>Warszawa</P_1M>"));
	validate_invoice(v, (unsigned char *)y, strlen(y), &r);
	ok(!r.ok && r.nerrors == 1 && r.problems[0].line == line &&
	    strstr(r.problems[0].message, "minLength") != NULL,
	    "a leaf of only whitespace: the schema sees it (minLength, line %d)", line);
	if (r.nproblems != 1)
		show(&r);
	validate_result_free(&r);
out:
	free(x);
	free(y);
	free(b);
}

/*
 * The byte checks read eight bytes at a time: a refused byte is found at
 * every position of a word, with its line and column, and CR LF line ends
 * pass.
 */
static void
test_scan_words(struct validator *v)
{
	static const struct {
		const char	*bytes;
		const char	*rule;
	} bad[] = {
		{ "\x01", "xml.char" },		/* C0 control */
		{ "\x7f", "xml.char" },		/* DEL */
		{ "\xc2\x80", "xml.char" },	/* U+0080 */
		{ "\x80", "encoding.utf8" },	/* lone continuation byte */
		{ "\xff", "encoding.utf8" },
	};
	const char *from = "<P_1M>Warszawa</P_1M>";
	struct validate_result r;
	unsigned char *b;
	char *x, *p;
	size_t len, pre, blen, off, i, k, n, q;
	int line, col, good = 0, runs = 0;

	if ((b = load("valid", "fa3-csharp-invoice-template-fa-3.xml", &len)) == NULL)
		return;
	if ((p = strstr((char *)b, from)) == NULL) {
		ok(0, "the template has P_1M");
		free(b);
		return;
	}
	pre = (size_t)(p - (char *)b) + 6;	/* just after <P_1M> */
	x = xmalloc(2 * len + 64);
	for (i = 0; i < nitems(bad); i++) {
		blen = strlen(bad[i].bytes);
		for (k = 0; k < 16; k++) {
			/* <P_1M>Warszawa-ABCDEFGHIJKLMNOP</P_1M>, bad bytes after k letters */
			memcpy(x, b, pre);
			n = pre;
			memcpy(x + n, "Warszawa-", 9);
			n += 9;
			memcpy(x + n, "ABCDEFGHIJKLMNOP", k);
			n += k;
			off = n;
			memcpy(x + n, bad[i].bytes, blen);
			n += blen;
			memcpy(x + n, "ABCDEFGHIJKLMNOP" + k, 16 - k);
			n += 16 - k;
			strcpy(x + n, p + strlen(from) - 7);
			n += strlen(p + strlen(from) - 7);
			/* Where the bad bytes are, counted here from the start. */
			for (line = 1, col = 1, q = 0; q < off; q++) {
				if (x[q] == '\n')
					line++, col = 1;
				else if (((unsigned char)x[q] & 0xc0) != 0x80)
					col++;
			}
			validate_invoice(v, (unsigned char *)x, n, &r);
			runs++;
			if (!r.ok && r.nproblems == 1 &&
			    strcmp(r.problems[0].rule, bad[i].rule) == 0 &&
			    r.problems[0].line == line && r.problems[0].column == col)
				good++;
			else {
				diag("bad bytes %zu after %zu letters: want %s %d:%d",
				    i, k, bad[i].rule, line, col);
				show(&r);
			}
			validate_result_free(&r);
		}
	}
	is_int(good, runs, "a refused byte at each of 16 positions: its rule, line and column");
	/* The same 16 positions with nothing refused: valid. */
	for (k = 0, good = 0; k < 16; k++) {
		memcpy(x, b, pre);
		n = pre;
		memcpy(x + n, "Warszawa-ABCDEFGHIJKLMNOP", 9 + k);
		n += 9 + k;
		strcpy(x + n, p + strlen(from) - 7);
		n += strlen(p + strlen(from) - 7);
		good += validate_invoice(v, (unsigned char *)x, n, &r) == 0;
		validate_result_free(&r);
	}
	is_int(good, 16, "printable ASCII of every length up to a word and more: valid");
	/* CR LF line ends. */
	for (i = n = 0; i < len; i++) {
		if (b[i] == '\n')
			x[n++] = '\r';
		x[n++] = (char)b[i];
	}
	expect_valid(v, x, n, "CR LF line ends");
	free(x);
	free(b);
}

/*
 * The schemas are compiled with PL and PLN moved to the front of their
 * enumerations (validate.c, hot_values): every other value is still
 * allowed, an unknown one still refused.
 */
static void
test_enumerations(struct validator *v)
{
	static const struct {
		const char	*from, *to;
		int		 ok;
	} cases[] = {
		{ "<KodKraju>PL</KodKraju>", "<KodKraju>PL</KodKraju>", 1 },
		{ "<KodKraju>PL</KodKraju>", "<KodKraju>AF</KodKraju>", 1 },	/* the first */
		{ "<KodKraju>PL</KodKraju>", "<KodKraju>DE</KodKraju>", 1 },
		{ "<KodKraju>PL</KodKraju>", "<KodKraju>PT</KodKraju>", 1 },	/* after PL */
		{ "<KodKraju>PL</KodKraju>", "<KodKraju>XI</KodKraju>", 1 },	/* the last */
		{ "<KodKraju>PL</KodKraju>", "<KodKraju>XX</KodKraju>", 0 },
		{ "<KodKraju>PL</KodKraju>", "<KodKraju>pl</KodKraju>", 0 },
		{ "<KodWaluty>PLN</KodWaluty>", "<KodWaluty>EUR</KodWaluty>", 1 },
		{ "<KodWaluty>PLN</KodWaluty>", "<KodWaluty>PLZ</KodWaluty>", 0 },
	};
	struct validate_result r;
	char *x;
	size_t len, i;
	int good = 0;

	for (i = 0; i < nitems(cases); i++) {
		if ((x = variant("fa3-csharp-invoice-template-fa-3.xml",
		    cases[i].from, cases[i].to, &len)) == NULL) {
			diag("the template has no %s", cases[i].from);
			continue;
		}
		validate_invoice(v, (unsigned char *)x, len, &r);
		free(x);
		if (cases[i].ok ? r.ok && r.nerrors == 0 :
		    !r.ok && r.nerrors == 1 &&
		    strcmp(r.problems[0].rule, "schema") == 0 &&
		    strstr(r.problems[0].message, "enumeration") != NULL)
			good++;
		else {
			diag("%s: want %s", cases[i].to, cases[i].ok ? "valid" :
			    "one enumeration error");
			show(&r);
		}
		validate_result_free(&r);
	}
	is_int(good, (int)nitems(cases), "country and currency codes: the first, "
	    "the last, around PL, unknown ones refused");
}

static void
test_params(void)
{
	struct validate_params p;
	char err[512];

	memset(&p, 0, sizeof(p));
	p.schema_dir = "/nonexistent/schemas";
	ok(validator_new(&p, err, sizeof(err)) == NULL && strstr(err, "catalog"),
	    "missing schema dir: %s", err);
	memset(&p, 0, sizeof(p));
	p.schema_dir = top;	/* no catalog.xml there */
	ok(validator_new(&p, err, sizeof(err)) == NULL, "no catalog: %s", err);
}

/* Many validations in a row (leaks show under ASan). */
static void
test_repeat(struct validator *v)
{
	static const char *names[] = { "fa3-invoice-pdfgen.xml",
	    "extra-fa3-kor.xml" };
	static const char *bad[] = { "schema-order.xml", "truncated.xml",
	    "billion-laughs.xml", "totals-rate-net.xml" };
	struct validate_result r;
	unsigned char *b;
	size_t len, i;
	int k, good = 0;

	for (i = 0; i < nitems(names) + nitems(bad); i++) {
		b = i < nitems(names) ? load("valid", names[i], &len) :
		    load("invalid", bad[i - nitems(names)], &len);
		if (b == NULL)
			continue;
		for (k = 0; k < 200; k++) {
			good += validate_invoice(v, b, len, &r) == 0;
			validate_result_free(&r);
		}
		free(b);
	}
	is_int(good, 400, "1200 validations in a row, the 400 valid accepted");
}

int
main(void)
{
	struct validator *v2, *v3;
	char errpath[] = "/tmp/ksefd-test-validate-stderrXXXXXX";
	int errfd, saved;
	struct stat st;

	log_init("test_validate", 1, LOG_LVL_WARN);
	if ((top = getenv("top_srcdir")) == NULL)
		top = TOP_SRCDIR;

	/* Everything libxml2 might print to stderr lands in a file. */
	fflush(stderr);
	saved = dup(2);
	if ((errfd = mkstemp(errpath)) == -1 || dup2(errfd, 2) == -1)
		return 1;

	test_params();
	v2 = mkvalidator(1, 0);
	v3 = mkvalidator(0, 0);
	ok(v2 != NULL && v3 != NULL, "validators compiled");
	if (v2 == NULL || v3 == NULL)
		return tap_done();
	test_valid(v2, v3);
	test_invalid(v2);
	test_sizes(v2);
	test_identity(v2);
	test_dates(v2);
	test_severities(v2);
	test_many_errors(v2);
	test_whitespace(v2);
	test_scan_words(v2);
	test_enumerations(v2);
	test_repeat(v2);
	validator_free(v2);
	validator_free(v3);
	validate_shutdown();

	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	fstat(errfd, &st);
	if (!ok(st.st_size == 0, "nothing printed to stderr")) {
		char buf[512];
		ssize_t n = pread(errfd, buf, sizeof(buf) - 1, 0);

		buf[n > 0 ? n : 0] = '\0';
		diag("stderr: %s", buf);
	}
	close(errfd);
	unlink(errpath);
	return tap_done();
}
