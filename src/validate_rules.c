/*
 * validate_rules.c: business rules on a schema-valid FA(3)/FA(2) tree
 * (doc/rules.md), and extraction of the invoice's identity.
 *
 * Amounts are exact decimals (__int128 scaled by 10^8; the schemas allow at
 * most 8 fraction digits).  Where FA allows several readings of a field the
 * rules accept each of them, and checks whose meaning depends on the kind of
 * invoice (advances, corrections, settlements) are warnings or skipped.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/tree.h>

#include "util.h"
#include "validate.h"
#include "validate_int.h"

typedef __int128 dec_t;

#define SCALE		100000000LL		/* 10^8: one unit */
#define GROSZ		(SCALE / 100)		/* 0.01 */
#define TEXT_MAX	1100			/* 256 characters of UTF-8, collapsed */

/* Rows of the per-rate totals, in schema order. */
enum {
	T_1, T_2, T_3, T_4, T_5, T_6_1, T_6_2, T_6_3, T_7, T_8, T_9, T_10, T_11,
	T_N
};

static const struct {
	const char	*net;		/* P_13_x */
	const char	*vat;		/* P_14_x, NULL when the rate has no tax */
	const char	*rates[2];	/* P_12 values of this row */
} totals[T_N] = {
	{ "P_13_1", "P_14_1", { "23", "22" } },
	{ "P_13_2", "P_14_2", { "8", "7" } },
	{ "P_13_3", "P_14_3", { "5", NULL } },
	{ "P_13_4", "P_14_4", { "4", "3" } },
	{ "P_13_5", "P_14_5", { NULL, NULL } },	/* P_12_XII lines */
	{ "P_13_6_1", NULL, { "0 KR", NULL } },
	{ "P_13_6_2", NULL, { "0 WDT", NULL } },
	{ "P_13_6_3", NULL, { "0 EX", NULL } },
	{ "P_13_7", NULL, { "zw", NULL } },
	{ "P_13_8", NULL, { "np I", NULL } },
	{ "P_13_9", NULL, { "np II", NULL } },
	{ "P_13_10", NULL, { "oo", NULL } },
	{ "P_13_11", NULL, { NULL, NULL } },	/* margin schemes */
};

/* A decimal field as read from the tree. */
struct num {
	int		 set;
	dec_t		 v;
	int		 ndec;		/* fraction digits written */
	const xmlNode	*node;
};

/* Lines summed per totals row (FA(2) folds several rows into one bucket). */
struct bucket {
	int		 nlines, nnet, ngross;
	dec_t		 net, gross;
	char		 rate[8];	/* the P_12 of its lines; "" none yet */
	int		 mixed;		/* lines with different P_12 */
};

/* Everything gathered from <Fa> in one pass. */
struct fa {
	const struct validate_rules_env *env;
	struct validate_result *res;
	const xmlNode	*node, *kind_node;
	int		 correction, vat, margin;
	struct num	 net[T_N], vat_amt[T_N], p15;
	struct bucket	 b[T_N];
	int		 nlines, unassigned, before, incomplete;
};

/* First element child called name (NULL parent allowed). */
static xmlNode *
child(const xmlNode *parent, const char *name)
{
	xmlNode *c;

	if (parent == NULL)
		return NULL;
	for (c = parent->children; c != NULL; c = c->next)
		if (c->type == XML_ELEMENT_NODE &&
		    strcmp((const char *)c->name, name) == 0)
			return c;
	return NULL;
}

static int
is(const xmlNode *n, const char *name)
{
	return strcmp((const char *)n->name, name) == 0;
}

/* Text of an element with whitespace collapsed as for xsd:token. */
static const char *
text(const xmlNode *n, char *out, size_t size)
{
	const xmlChar *raw;
	xmlChar *alloc = NULL;
	size_t o = 0;
	int space = 0;

	if (n->children != NULL && n->children->next == NULL &&
	    n->children->type == XML_TEXT_NODE)
		raw = n->children->content;
	else
		raw = alloc = xmlNodeGetContent(n);
	for (; raw != NULL && *raw && o + 1 < size; raw++) {
		if (*raw == ' ' || *raw == '\t' || *raw == '\n' || *raw == '\r') {
			space = o > 0;
			continue;
		}
		if (space && o + 2 < size)
			out[o++] = ' ';
		space = 0;
		out[o++] = (char)*raw;
	}
	out[o] = '\0';
	xmlFree(alloc);
	return out;
}

/* Parse a schema-valid decimal into 10^-8 units; -1 if it does not fit. */
static int
dec_parse(const char *s, dec_t *v, int *ndec)
{
	dec_t x = 0;
	int neg = 0, frac = -1, digits = 0;

	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	for (; *s; s++) {
		if (*s == '.' && frac < 0) {
			frac = 0;
			continue;
		}
		if (*s < '0' || *s > '9' || ++digits > 30 || frac >= 8)
			return -1;
		x = x * 10 + (*s - '0');
		if (frac >= 0)
			frac++;
	}
	if (digits == 0)
		return -1;
	*ndec = frac < 0 ? 0 : frac;
	for (frac = *ndec; frac < 8; frac++)
		x *= 10;
	*v = neg ? -x : x;
	return 0;
}

static void
num_read(const xmlNode *n, struct num *out)
{
	char t[TEXT_MAX];

	memset(out, 0, sizeof(*out));
	if (n == NULL)
		return;
	out->node = n;
	out->set = dec_parse(text(n, t, sizeof(t)), &out->v, &out->ndec) == 0;
}

static dec_t
dabs(dec_t v)
{
	return v < 0 ? -v : v;
}

/* Format 10^-8 units with at least two and at most eight decimals. */
static const char *
dec_fmt(dec_t v, char *out, size_t size)
{
	unsigned long long ip, fp;
	dec_t a = dabs(v);
	int dec = 8;

	ip = (unsigned long long)(a / SCALE);
	fp = (unsigned long long)(a % SCALE);
	while (dec > 2 && fp % 10 == 0)
		fp /= 10, dec--;
	snprintf(out, size, "%s%llu.%0*llu", v < 0 ? "-" : "", ip, dec, fp);
	return out;
}

/* Round 10^-16 units to 10^-8 units, half away from zero. */
static dec_t
round16(dec_t v)
{
	return v < 0 ? -((-v + SCALE / 2) / SCALE) : (v + SCALE / 2) / SCALE;
}

static dec_t
pow10i(int n)
{
	dec_t p = 1;

	while (n-- > 0)
		p *= 10;
	return p;
}

static int
kind_is(const struct validate_result *res, const char *k)
{
	return strcmp(res->kind, k) == 0;
}

/* Seller, buyer and other parties' NIPs. */
static void
nip_check(const struct validate_rules_env *env, const xmlNode *root,
    struct validate_result *res)
{
	const xmlNode *c, *n;
	char t[TEXT_MAX];
	size_t i;

	for (c = root->children; c != NULL; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		n = child(child(c, "DaneIdentyfikacyjne"), "NIP");
		if (is(c, "Podmiot1") && n != NULL) {
			snprintf(res->seller_nip, sizeof(res->seller_nip), "%s",
			    text(n, t, sizeof(t)));
			if (!nip_valid(t)) {
				validate_problem_add(res, VALIDATE_ERROR,
				    "nip.seller.checksum", n, 0, "seller NIP %s "
				    "has a wrong check digit", t);
				continue;
			}
			for (i = 0; i < env->nnips; i++)
				if (strcmp(env->nips[i], t) == 0)
					break;
			if (!env->any_seller && i == env->nnips)
				validate_problem_add(res, VALIDATE_ERROR,
				    "context.unknown", n, 0, "seller NIP %s is "
				    "not a configured KSeF context", t);
		} else if (is(c, "Podmiot2") && n != NULL) {
			snprintf(res->buyer_nip, sizeof(res->buyer_nip), "%s",
			    text(n, t, sizeof(t)));
			if (!nip_valid(t))
				validate_problem_add(res, VALIDATE_ERROR,
				    "nip.buyer.checksum", n, 0, "buyer NIP %s "
				    "has a wrong check digit", t);
		} else if (is(c, "Podmiot3") || is(c, "PodmiotUpowazniony")) {
			if (n == NULL && (n = child(child(c,
			    "DaneIdentyfikacyjne"), "IDWew")) == NULL)
				continue;
			text(n, t, sizeof(t));
			t[strcspn(t, "-")] = '\0';
			if (!nip_valid(t))
				validate_problem_add(res, VALIDATE_ERROR,
				    "nip.other.checksum", n, 0, "NIP %s of %s "
				    "has a wrong check digit", t, c->name);
		}
	}
}

/* Which totals row a line belongs to; -1 when it cannot be told. */
static int
line_row(const struct fa *fa, const char *rate, int xii)
{
	int i, k;

	if (xii)
		return T_5;
	if (fa->env->form == VALIDATE_FORM_FA2) {
		if (strcmp(rate, "0") == 0)
			return T_6_1;
		if (strcmp(rate, "np") == 0)
			return T_8;
	}
	for (i = 0; i < T_N; i++)
		for (k = 0; k < 2; k++)
			if (totals[i].rates[k] && strcmp(totals[i].rates[k], rate) == 0)
				return i;
	return -1;
}

/* FA(2) has one rate "0" for P_13_6_1..3 and one "np" for P_13_8..9. */
static int
row_bucket(const struct fa *fa, int row)
{
	if (fa->env->form == VALIDATE_FORM_FA2) {
		if (row == T_6_2 || row == T_6_3)
			return T_6_1;
		if (row == T_9)
			return T_8;
	}
	return row;
}

/*
 * value = quantity x price, accepting a discount P_10 per unit or per line;
 * the tolerance is one grosz plus the quantity times half a unit of the
 * last decimal written in the price (the price may itself be rounded).
 */
static void
line_amount(struct fa *fa, const xmlNode *line, const struct num *q,
    const struct num *price, const struct num *disc, const struct num *value,
    const char *rule, const char *what)
{
	dec_t r[3], tol, v16, d;
	char a[64], b[64], c[64], e[64];
	int n = 0, i, best = -1;

	if (!q->set || !price->set || !value->set)
		return;
	if (__builtin_mul_overflow(q->v, price->v, &r[n]))
		return;
	n++;
	if (disc->set) {
		if (__builtin_mul_overflow(q->v, price->v - disc->v, &r[n]))
			return;
		n++;
		if (__builtin_mul_overflow(disc->v, (dec_t)SCALE, &d))
			return;
		r[n++] = r[0] - d;
	}
	if (__builtin_mul_overflow(value->v, (dec_t)SCALE, &v16) ||
	    __builtin_mul_overflow(dabs(q->v), 5 * pow10i(8 - price->ndec), &tol))
		return;
	tol = tol / 10 + (dec_t)GROSZ * SCALE;
	for (i = 0; i < n; i++) {
		if (dabs(v16 - r[i]) <= tol)
			return;
		if (best < 0 || dabs(v16 - r[i]) < dabs(v16 - r[best]))
			best = i;
	}
	validate_problem_add(fa->res, fa->correction ? VALIDATE_WARNING :
	    VALIDATE_ERROR, rule, value->node, 0,
	    "%s %s is not quantity %s x price %s%s (= %s)", what,
	    dec_fmt(value->v, a, sizeof(a)), dec_fmt(q->v, b, sizeof(b)),
	    dec_fmt(price->v, c, sizeof(c)),
	    disc->set ? " less the discount P_10" : "",
	    dec_fmt(round16(r[best]), e, sizeof(e)));
}

/* One FaWiersz: its own arithmetic, and its share of the per-rate sums. */
static void
line_check(struct fa *fa, const xmlNode *line)
{
	struct num q, p9a, p9b, p10, p11, p11a;
	const xmlNode *c, *rate = NULL, *xii = NULL;
	struct bucket *bk;
	char t[TEXT_MAX];
	int row;

	fa->nlines++;
	num_read(child(line, "P_8B"), &q);
	num_read(child(line, "P_9A"), &p9a);
	num_read(child(line, "P_9B"), &p9b);
	num_read(child(line, "P_10"), &p10);
	num_read(child(line, "P_11"), &p11);
	num_read(child(line, "P_11A"), &p11a);
	for (c = line->children; c != NULL; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is(c, "P_12"))
			rate = c;
		else if (is(c, "P_12_XII"))
			xii = c;
		else if (is(c, "StanPrzed"))
			fa->before = 1;
	}
	line_amount(fa, line, &q, &p9a, &p10, &p11, "line.net", "net value P_11");
	line_amount(fa, line, &q, &p9b, &p10, &p11a, "line.gross",
	    "gross value P_11A");

	if (rate == NULL && xii == NULL) {
		fa->unassigned = 1;
		return;
	}
	row = line_row(fa, rate ? text(rate, t, sizeof(t)) : "", xii != NULL);
	if (row < 0) {
		fa->unassigned = 1;
		return;
	}
	bk = &fa->b[row_bucket(fa, row)];
	bk->nlines++;
	if (p11.set)
		bk->nnet++, bk->net += p11.v;
	if (p11a.set)
		bk->ngross++, bk->gross += p11a.v;
	if (!p11.set && !p11a.set)
		fa->incomplete = 1;
	if (rate != NULL && xii == NULL) {
		if (bk->rate[0] == '\0')
			snprintf(bk->rate, sizeof(bk->rate), "%.7s", t);
		else if (strcmp(bk->rate, t) != 0)
			bk->mixed = 1;
	}
}

/* Severity for a totals check by kind of invoice; -1 = not checked. */
static int
totals_severity(const struct fa *fa, int vat_sev, int kor, int zal, int roz,
    int upr)
{
	const struct validate_result *res = fa->res;

	if (kind_is(res, "VAT"))
		return vat_sev;
	if (fa->correction)
		return kor;
	if (kind_is(res, "ZAL"))
		return zal;
	if (kind_is(res, "ROZ"))
		return roz;
	if (kind_is(res, "UPR"))
		return upr;
	return -1;
}

/* The lines' sums per rate against P_13_x (or P_13_x + P_14_x for gross lines). */
static void
totals_lines(struct fa *fa)
{
	struct bucket *bk;
	dec_t net, vat, got, want;
	const xmlNode *node;
	const char *name;
	char a[64], b[64];
	int sev, i, j;

	sev = totals_severity(fa, VALIDATE_ERROR, -1, -1, -1, VALIDATE_WARNING);
	if (sev < 0 || fa->nlines == 0 || fa->unassigned || fa->before ||
	    fa->incomplete || fa->margin)
		return;
	for (i = 0; i < T_N; i++) {
		if (row_bucket(fa, i) != i)
			continue;
		bk = &fa->b[i];
		net = vat = 0;
		node = NULL;
		name = totals[i].net;
		for (j = i; j < T_N; j++) {
			if (row_bucket(fa, j) != i)
				continue;
			if (fa->net[j].set) {
				net += fa->net[j].v;
				if (node == NULL)
					node = fa->net[j].node, name = totals[j].net;
			}
			if (fa->vat_amt[j].set)
				vat += fa->vat_amt[j].v;
		}
		if (bk->nlines > 0 && bk->ngross == bk->nlines) {
			got = net + vat;
			want = bk->gross;
		} else if (bk->nlines == bk->nnet) {
			got = net;
			want = bk->net;
		} else
			continue;
		if (dabs(got - want) <= GROSZ)
			continue;
		if (bk->nlines == 0)
			validate_problem_add(fa->res, sev, "totals.rate", node, 0,
			    "%s is %s but no line has its rate", name,
			    dec_fmt(got, a, sizeof(a)));
		else
			validate_problem_add(fa->res, sev, "totals.rate",
			    node ? node : fa->node, 0, "%s%s is %s but the "
			    "lines with rate %s sum to %s%s", name,
			    bk->ngross == bk->nlines ? " + VAT" : "",
			    node ? dec_fmt(got, a, sizeof(a)) : "missing",
			    bk->rate[0] ? bk->rate : "XII", dec_fmt(want, b,
			    sizeof(b)), bk->ngross == bk->nlines ?
			    " (gross, P_11A)" : " (net, P_11)");
	}
}

/* P_14_x against P_13_x times the rate, with per-line rounding allowed. */
static void
totals_vat(struct fa *fa)
{
	struct bucket *bk;
	dec_t want, tol;
	char a[64], b[64], c[64];
	const char *rates[2];
	int sev, i, k, n, nr;

	sev = totals_severity(fa, VALIDATE_ERROR, -1, VALIDATE_WARNING,
	    VALIDATE_WARNING, VALIDATE_WARNING);
	if (sev < 0)
		return;
	for (i = T_1; i <= T_4; i++) {
		if (!fa->net[i].set || !fa->vat_amt[i].set)
			continue;
		bk = &fa->b[i];
		if (bk->mixed)
			continue;
		nr = 0;
		if (bk->rate[0])
			rates[nr++] = bk->rate;
		else
			for (k = 0; k < 2; k++)
				if (totals[i].rates[k])
					rates[nr++] = totals[i].rates[k];
		n = bk->nlines > 0 ? bk->nlines : 1;
		tol = GROSZ + (dec_t)n * GROSZ / 2;
		want = 0;
		for (k = 0; k < nr; k++) {
			want = fa->net[i].v * atoi(rates[k]);	/* 10^-10 */
			want = (want < 0 ? -((-want + 50 * GROSZ) / (100 * GROSZ)) :
			    (want + 50 * GROSZ) / (100 * GROSZ)) * GROSZ;
			if (dabs(fa->vat_amt[i].v - want) <= tol)
				break;
		}
		if (k < nr)
			continue;
		validate_problem_add(fa->res, sev, "totals.rate",
		    fa->vat_amt[i].node, 0, "%s %s is not %s%% of %s %s (= %s)",
		    totals[i].vat, dec_fmt(fa->vat_amt[i].v, a, sizeof(a)),
		    rates[nr - 1], totals[i].net, dec_fmt(fa->net[i].v, b,
		    sizeof(b)), dec_fmt(want, c, sizeof(c)));
	}
}

/* P_15 against the sum of every P_13_x and P_14_x. */
static void
totals_gross(struct fa *fa)
{
	dec_t sum = 0;
	char a[64], b[64];
	int sev, i, any = 0;

	sev = totals_severity(fa, VALIDATE_ERROR, VALIDATE_WARNING,
	    VALIDATE_WARNING, -1, VALIDATE_WARNING);
	if (sev < 0 || !fa->p15.set)
		return;
	for (i = 0; i < T_N; i++) {
		if (fa->net[i].set)
			sum += fa->net[i].v, any = 1;
		if (fa->vat_amt[i].set)
			sum += fa->vat_amt[i].v;
	}
	if (!any || dabs(fa->p15.v - sum) <= GROSZ)
		return;
	validate_problem_add(fa->res, sev, "totals.gross", fa->p15.node, 0,
	    "P_15 %s is not the sum of the P_13_x and P_14_x amounts (%s)",
	    dec_fmt(fa->p15.v, a, sizeof(a)), dec_fmt(sum, b, sizeof(b)));
}

/* One DaneFaKorygowanej into the result. */
static void
corrected_add(struct validate_result *res, const xmlNode *n)
{
	struct validate_corrected *c;
	const xmlNode *e;
	char t[TEXT_MAX];

	res->corrected = xrealloc(res->corrected,
	    (res->ncorrected + 1) * sizeof(*res->corrected));
	c = &res->corrected[res->ncorrected++];
	memset(c, 0, sizeof(*c));
	c->number = xstrdup((e = child(n, "NrFaKorygowanej")) ?
	    text(e, t, sizeof(t)) : "");
	if ((e = child(n, "DataWystFaKorygowanej")) != NULL)
		snprintf(c->date, sizeof(c->date), "%.10s", text(e, t, sizeof(t)));
	if ((e = child(n, "NrKSeFFaKorygowanej")) != NULL)
		c->ksef_number = xstrdup(text(e, t, sizeof(t)));
}

/* The date rules on P_1. */
static void
date_check(struct fa *fa, const xmlNode *n)
{
	const struct validate_rules_env *env = fa->env;
	struct validate_result *res = fa->res;
	long d = validate_date_days(res->issue_date);

	if (d < 0)
		return;
	if (d > env->today + env->future_days)
		validate_problem_add(res, VALIDATE_ERROR, "date.future", n, 0,
		    "issue date P_1 %s is more than %ld day(s) in the future",
		    res->issue_date, env->future_days);
	else if (d < env->today) {
		res->offline = 1;
		validate_problem_add(res, VALIDATE_WARNING, "date.past", n, 0,
		    "issue date P_1 %s is before today: KSeF will mark the "
		    "invoice as issued offline", res->issue_date);
	}
}

/* Walk <Fa> once: identity, lines, totals, corrections, dates. */
static void
fa_check(const struct validate_rules_env *env, const xmlNode *fanode,
    struct validate_result *res)
{
	struct fa fa;
	const xmlNode *c, *p1 = NULL, *m;
	char t[TEXT_MAX];
	int i;

	memset(&fa, 0, sizeof(fa));
	fa.env = env;
	fa.res = res;
	fa.node = fanode;
	for (c = fanode->children; c != NULL; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is(c, "FaWiersz")) {
			line_check(&fa, c);
			continue;
		}
		if (is(c, "P_1")) {
			p1 = c;
			snprintf(res->issue_date, sizeof(res->issue_date), "%.10s",
			    text(c, t, sizeof(t)));
		} else if (is(c, "P_2")) {
			free(res->number);
			res->number = xstrdup(text(c, t, sizeof(t)));
		} else if (is(c, "RodzajFaktury")) {
			fa.kind_node = c;
			snprintf(res->kind, sizeof(res->kind), "%s",
			    text(c, t, sizeof(t)));
			fa.correction = strncmp(res->kind, "KOR", 3) == 0;
		} else if (is(c, "P_15"))
			num_read(c, &fa.p15);
		else if (is(c, "DaneFaKorygowanej"))
			corrected_add(res, c);
		else if (is(c, "Adnotacje")) {
			m = child(child(c, "PMarzy"), "P_PMarzy");
			fa.margin = m != NULL && strcmp(text(m, t, sizeof(t)), "1") == 0;
		} else if (strncmp((const char *)c->name, "P_1", 3) == 0) {
			for (i = 0; i < T_N; i++) {
				if (strcmp((const char *)c->name, totals[i].net) == 0)
					num_read(c, &fa.net[i]);
				else if (totals[i].vat != NULL &&
				    strcmp((const char *)c->name, totals[i].vat) == 0)
					num_read(c, &fa.vat_amt[i]);
			}
		}
	}
	if (p1 != NULL)
		date_check(&fa, p1);
	if (fa.correction && res->ncorrected == 0)
		validate_problem_add(res, VALIDATE_ERROR, "correction.reference",
		    fa.kind_node, 0, "a correcting invoice (%s) must identify "
		    "the invoice it corrects in DaneFaKorygowanej", res->kind);
	totals_lines(&fa);
	totals_vat(&fa);
	totals_gross(&fa);
}

void
validate_rules_check(const struct validate_rules_env *env, xmlNode *root,
    struct validate_result *res)
{
	const xmlNode *fa;

	nip_check(env, root, res);
	if ((fa = child(root, "Fa")) != NULL)
		fa_check(env, fa, res);
}
