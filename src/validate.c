/*
 * validate.c: safe parsing, form detection and XSD validation of invoices.
 *
 * The only file that includes libxml2's schema API.  Parsing is safe by
 * construction: no network, no DTD loading, no entity substitution, no
 * XInclude, and a DOCTYPE stops the parser before its internal subset is
 * read, so neither external entities nor entity bombs can be expressed.
 * Every libxml2 message goes to a structured handler; nothing reaches stderr.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/catalog.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/uri.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlschemas.h>
#include <openssl/evp.h>

#include "log.h"
#include "util.h"
#include "validate.h"
#include "validate_int.h"

#define NS_FA3		"http://crd.gov.pl/wzor/2025/06/25/13775/"
#define NS_FA2		"http://crd.gov.pl/wzor/2023/06/29/12648/"
#define XSD_FA3		"FA/schemat_FA(3)_v1-0E.xsd"
#define XSD_FA2		"FA/schemat_FA(2)_v1-0E.xsd"
#define CATALOG		"catalog.xml"
#define DEFAULT_MAX_BODY (1024 * 1024)
#define DAY_MS		86400000LL

/* One compiled form: the schema and a reusable validation context. */
struct validate_schema {
	xmlSchemaPtr		 schema;
	xmlSchemaValidCtxtPtr	 vctxt;
};

struct validator {
	char			*schema_dir;
	int			 fa2_allowed;
	char			**nips;
	size_t			 nnips;
	int			 any_seller;
	long			 future_days;
	long			 today;		/* -1: read the clock per call */
	size_t			 max_body;
	struct validate_schema	 fa3, fa2;
	struct validate_result	*cur;		/* result being filled */
};

/* Per-parse state reached from the parser context's _private. */
struct validate_parse {
	struct validate_result	*res;
	const unsigned char	*body;
	size_t			 len;
	int			 doctype;
	int			 doctype_line, doctype_col;
	int			 pi;
	int			 pi_line;
	int			 errors;
};

/* Schema compilation state: the catalog and the first error. */
static xmlCatalogPtr	 compile_catalog;
static char		*compile_error;

const char *
validate_form_name(enum validate_form f)
{
	switch (f) {
	case VALIDATE_FORM_FA3:
		return "FA (3)";
	case VALIDATE_FORM_FA2:
		return "FA (2)";
	default:
		return "unknown";
	}
}

const char *
validate_severity_name(enum validate_severity s)
{
	return s == VALIDATE_WARNING ? "warning" : "error";
}

static size_t	utf8_decode(const unsigned char *, size_t, unsigned long *);

/* Replace bytes that are not UTF-8 (libxml2 may cut a sequence) and controls. */
static void
utf8_sanitize(char *s, size_t len)
{
	unsigned char *p = (unsigned char *)s;
	unsigned long c;
	size_t i, n;

	for (i = 0; i < len; i += n) {
		if ((n = utf8_decode(p + i, len - i, &c)) == 0) {
			p[i] = '?';
			n = 1;
		} else if (c < 0x20)
			p[i] = ' ';
	}
}

/* Append a problem at an explicit place; takes ownership of path. */
static void
problem_vadd(struct validate_result *res, enum validate_severity sev,
    const char *rule, int line, int column, char *path, const char *fmt,
    va_list ap)
{
	struct validate_problem *p;
	char *msg;
	size_t n;

	if (sev == VALIDATE_ERROR) {
		res->nerrors++;
		res->ok = 0;
	} else
		res->nwarnings++;
	if (res->nproblems >= VALIDATE_MAX_PROBLEMS) {
		free(path);
		return;
	}
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("out of memory");
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	utf8_sanitize(msg, n);
	if (res->problems == NULL)
		res->problems = xcalloc(VALIDATE_MAX_PROBLEMS, sizeof(*p));
	p = &res->problems[res->nproblems++];
	p->severity = sev;
	p->rule = rule;
	p->line = line;
	p->column = column;
	p->path = path;
	p->message = msg;
}

static void
problem_add(struct validate_result *res, enum validate_severity sev,
    const char *rule, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void
problem_add_path(struct validate_result *res, enum validate_severity sev,
    const char *rule, int line, int column, char *path, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* Append a problem with a path; takes ownership of path. */
static void
problem_add_path(struct validate_result *res, enum validate_severity sev,
    const char *rule, int line, int column, char *path, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	problem_vadd(res, sev, rule, line, column, path, fmt, ap);
	va_end(ap);
}

static void
problem_add(struct validate_result *res, enum validate_severity sev,
    const char *rule, int line, int column, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	problem_vadd(res, sev, rule, line, column, NULL, fmt, ap);
	va_end(ap);
}

void
validate_problem_add(struct validate_result *res, enum validate_severity sev,
    const char *rule, const xmlNode *node, int column, const char *fmt, ...)
{
	va_list ap;
	int line = 0;
	char *path = NULL;

	if (node != NULL && res->nproblems < VALIDATE_MAX_PROBLEMS) {
		line = (int)xmlGetLineNo(node);
		if (line < 0)
			line = 0;
		path = validate_node_path(node);
	}
	va_start(ap, fmt);
	problem_vadd(res, sev, rule, line, column, path, fmt, ap);
	va_end(ap);
}

char *
validate_node_path(const xmlNode *node)
{
	const xmlNode *n, *s;
	const char *seg[64];
	int idx[64], depth = 0, i, k, same;
	struct buf b;

	for (n = node; n != NULL && n->type == XML_ELEMENT_NODE; n = n->parent) {
		if (depth == (int)nitems(seg))
			break;
		k = 1;
		same = 0;
		for (s = n->prev; s != NULL; s = s->prev)
			if (s->type == XML_ELEMENT_NODE &&
			    xmlStrEqual(s->name, n->name))
				k++, same = 1;
		for (s = n->next; s != NULL && !same; s = s->next)
			if (s->type == XML_ELEMENT_NODE &&
			    xmlStrEqual(s->name, n->name))
				same = 1;
		seg[depth] = (const char *)n->name;
		idx[depth++] = same ? k : 0;
	}
	buf_init(&b);
	for (i = depth - 1; i >= 0; i--) {
		buf_addf(&b, "/%s", seg[i]);
		if (idx[i])
			buf_addf(&b, "[%d]", idx[i]);
	}
	if (b.len == 0)
		buf_addstr(&b, "/");
	return (char *)buf_release(&b, NULL);
}

/* Days from 1970-01-01 to a calendar date (the schema guarantees a real one). */
static long
days_from_civil(long y, long m, long d)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = (int)(y - 1900);
	tm.tm_mon = (int)(m - 1);
	tm.tm_mday = (int)d;
	tm.tm_hour = 12;
	return (long)(timegm(&tm) / 86400);
}

long
validate_date_days(const char *s)
{
	int i;
	long y, m, d;

	for (i = 0; i < 10; i++)
		if (i == 4 || i == 7 ? s[i] != '-' : !isdigit((unsigned char)s[i]))
			return -1;
	y = strtol(s, NULL, 10);
	m = (s[5] - '0') * 10 + (s[6] - '0');
	d = (s[8] - '0') * 10 + (s[9] - '0');
	if (m < 1 || m > 12 || d < 1 || d > 31)
		return -1;
	return days_from_civil(y, m, d);
}

/* Today's local calendar date as days since the epoch. */
static long
today_local(void)
{
	time_t t = time(NULL);
	struct tm tm;

	localtime_r(&t, &tm);
	return days_from_civil(tm.tm_year + 1900L, tm.tm_mon + 1L, tm.tm_mday);
}

/* Line and column (in characters) of a byte offset. */
static void
offset_linecol(const unsigned char *p, size_t off, int *line, int *col)
{
	size_t i;
	int l = 1, c = 1;

	for (i = 0; i < off; i++) {
		if (p[i] == '\n')
			l++, c = 1;
		else if ((p[i] & 0xc0) != 0x80)
			c++;
	}
	*line = l;
	*col = c;
}

/* Length of the UTF-8 sequence at p (max n bytes) and its code point; 0 if invalid. */
static size_t
utf8_decode(const unsigned char *p, size_t n, unsigned long *cp)
{
	unsigned long c;
	size_t len, i;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2, c = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3, c = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4, c = p[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) ||
	    (len == 4 && (c < 0x10000 || c > 0x10ffff)))
		return 0;
	*cp = c;
	return len;
}

/* Code points XML forbids or W3C discourages (KSeF refuses both). */
static int
char_refused(unsigned long c)
{
	if (c < 0x20)
		return c != '\t' && c != '\n' && c != '\r';
	return (c >= 0x7f && c <= 0x84) || (c >= 0x86 && c <= 0x9f) ||
	    (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) == 0xfffe;
}

/* Are all eight bytes at p in 0x20..0x7e? */
static inline int
ascii8_printable(const unsigned char *p)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	uint64_t x;

	memcpy(&x, p, sizeof(x));
	/* A high bit, a byte below 0x20 (it borrows), or a 0x7f (x + 1 carries into the high bit). */
	return ((x | (x - 0x20 * ones) | (x + 0x01 * ones)) & highs) == 0;
}

/*
 * Checks on the raw bytes before libxml2 sees them: empty body, byte order
 * marks, UTF-8 validity, refused code points, a declared encoding other
 * than UTF-8.  Returns -1 after adding a problem.
 */
static int
body_scan(const unsigned char *p, size_t len, struct validate_result *res)
{
	size_t i, n, end, q;
	unsigned long c;
	int line, col;
	char enc[41];
	unsigned char quote;

	for (i = 0; i < len && (p[i] == ' ' || p[i] == '\t' ||
	    p[i] == '\n' || p[i] == '\r'); i++)
		;
	if (i == len) {
		problem_add(res, VALIDATE_ERROR, "body.empty", 0, 0,
		    len ? "body contains only whitespace" : "body is empty");
		return -1;
	}
	if (len >= 2 && ((p[0] == 0xfe && p[1] == 0xff) ||
	    (p[0] == 0xff && p[1] == 0xfe))) {
		problem_add(res, VALIDATE_ERROR, "encoding.utf8", 1, 1,
		    "UTF-16 byte order mark: FA documents must be UTF-8");
		return -1;
	}
	if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) {
		problem_add(res, VALIDATE_ERROR, "encoding.bom", 1, 1,
		    "UTF-8 byte order mark: KSeF requires UTF-8 without a BOM");
		return -1;
	}
	for (i = 0; i < len; i += n) {
		/* Eight printable ASCII bytes at a time (most of a body). */
		if (i + 8 <= len && ascii8_printable(p + i)) {
			n = 8;
			continue;
		}
		if ((p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\n' ||
		    p[i] == '\t' || p[i] == '\r') {
			n = 1;
			continue;
		}
		if ((n = utf8_decode(p + i, len - i, &c)) == 0) {
			offset_linecol(p, i, &line, &col);
			problem_add(res, VALIDATE_ERROR, "encoding.utf8", line,
			    col, "invalid UTF-8 byte 0x%02x: FA documents must "
			    "be UTF-8", p[i]);
			return -1;
		}
		if (char_refused(c)) {
			offset_linecol(p, i, &line, &col);
			problem_add(res, VALIDATE_ERROR, "xml.char", line, col,
			    "character U+%04lX is not allowed in an invoice", c);
			return -1;
		}
	}
	/* The XML declaration, if any, must not name another encoding. */
	if (len < 6 || memcmp(p, "<?xml", 5) != 0 || !isspace(p[5]))
		return 0;
	for (end = 5; end + 1 < len && end < 1024; end++)
		if (p[end] == '?' && p[end + 1] == '>')
			break;
	for (i = 5; i + 8 < end; i++) {
		if (memcmp(p + i, "encoding", 8) != 0)
			continue;
		for (q = i + 8; q < end && isspace(p[q]); q++)
			;
		if (q >= end || p[q] != '=')
			break;
		for (q++; q < end && isspace(p[q]); q++)
			;
		if (q >= end || (p[q] != '"' && p[q] != '\''))
			break;
		quote = p[q];
		for (n = 0, q++; q < end && p[q] != quote &&
		    n < sizeof(enc) - 1; q++)
			enc[n++] = p[q];
		enc[n] = '\0';
		if (strcasecmp(enc, "UTF-8") != 0 && strcasecmp(enc, "UTF8") != 0) {
			offset_linecol(p, i, &line, &col);
			problem_add(res, VALIDATE_ERROR, "encoding.declared", line,
			    col, "declared encoding \"%s\": FA documents must be "
			    "UTF-8", log_escape(enc, n, 40));
			return -1;
		}
		break;
	}
	return 0;
}

/* SAX hook: a DOCTYPE stops the parser before any declaration is read. */
static void
parse_doctype_cb(void *ud, const xmlChar *name, const xmlChar *eid,
    const xmlChar *sid)
{
	xmlParserCtxtPtr ctxt = ud;
	struct validate_parse *vp = ctxt->_private;

	vp->doctype = 1;
	vp->doctype_line = ctxt->input ? ctxt->input->line : 1;
	vp->doctype_col = ctxt->input ? ctxt->input->col : 0;
	xmlStopParser(ctxt);
}

/* SAX hook: remember the first processing instruction (KSeF refuses them). */
static void
parse_pi_cb(void *ud, const xmlChar *target, const xmlChar *data)
{
	xmlParserCtxtPtr ctxt = ud;
	struct validate_parse *vp = ctxt->_private;

	if (vp->pi++ == 0)
		vp->pi_line = ctxt->input ? ctxt->input->line : 0;
}

/* Structured error handler of the invoice parser. */
static void
parse_error_cb(void *ud, xmlErrorPtr e)
{
	xmlParserCtxtPtr ctxt = ud;
	struct validate_parse *vp = ctxt->_private;
	const char *rule = "xml.malformed";
	int atend;

	if (e->level < XML_ERR_ERROR || vp->doctype)
		return;
	vp->errors++;
	atend = ctxt->input != NULL && ctxt->input->cur >= ctxt->input->end;
	if (e->domain == XML_FROM_NAMESPACE)
		rule = "xml.namespace";
	else if (e->code == XML_ERR_TAG_NOT_FINISHED || atend)
		rule = "xml.truncated";
	problem_add(vp->res, VALIDATE_ERROR, rule, e->line, e->int2, "%s",
	    e->message ? e->message : "malformed XML");
}

/*
 * Parse the body into a tree: no network, no DTD, no entity substitution.
 * NULL after adding problems.  Caller frees the document.
 */
static xmlDocPtr
body_parse(const unsigned char *body, size_t len, struct validate_result *res)
{
	struct validate_parse vp;
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;

	memset(&vp, 0, sizeof(vp));
	vp.res = res;
	vp.body = body;
	vp.len = len;
	if ((ctxt = xmlCreateMemoryParserCtxt((const char *)body, (int)len)) == NULL)
		fatalx("validate: cannot create a parser context");
	ctxt->_private = &vp;
	ctxt->sax->initialized = XML_SAX2_MAGIC;
	ctxt->sax->serror = parse_error_cb;
	ctxt->sax->internalSubset = parse_doctype_cb;
	ctxt->sax->externalSubset = NULL;
	ctxt->sax->processingInstruction = parse_pi_cb;
	ctxt->vctxt.error = NULL;
	ctxt->vctxt.warning = NULL;
	/*
	 * NOBLANKS: whitespace between elements makes no nodes (the schema
	 * ignores it in element-only content, and FA has no mixed content);
	 * an element whose only content is whitespace keeps it.
	 */
	xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_COMPACT |
	    XML_PARSE_NOBLANKS | XML_PARSE_NOWARNING);
	xmlParseDocument(ctxt);
	doc = ctxt->myDoc;
	ctxt->myDoc = NULL;
	if (vp.doctype) {
		problem_add(res, VALIDATE_ERROR, "xml.doctype", vp.doctype_line,
		    vp.doctype_col, "a DOCTYPE is not allowed in an invoice "
		    "(no DTDs or entity declarations)");
	} else if (!ctxt->wellFormed || vp.errors) {
		if (vp.errors == 0)
			problem_add(res, VALIDATE_ERROR, "xml.malformed", 0, 0,
			    "malformed XML");
	} else if (vp.pi) {
		problem_add(res, VALIDATE_ERROR, "xml.pi", vp.pi_line, 0,
		    "processing instructions are not allowed in an invoice");
	} else if (doc == NULL || xmlDocGetRootElement(doc) == NULL) {
		problem_add(res, VALIDATE_ERROR, "xml.malformed", 0, 0,
		    "no root element");
	} else {
		xmlFreeParserCtxt(ctxt);
		return doc;
	}
	xmlFreeDoc(doc);
	xmlFreeParserCtxt(ctxt);
	return NULL;
}

/* Remove "{namespace}" from a libxml2 schema message. Caller frees. */
static char *
schema_message(const char *m)
{
	struct buf b;
	const char *close;

	buf_init(&b);
	while (*m) {
		if (*m == '{' && (close = strchr(m, '}')) != NULL &&
		    memchr(m, ' ', close - m) == NULL && memchr(m, ':', close - m)) {
			m = close + 1;
			continue;
		}
		buf_add(&b, m++, 1);
	}
	buf_addstr(&b, "");
	return (char *)buf_release(&b, NULL);
}

/* Structured error handler of schema validation: one problem per error. */
static void
schema_error_cb(void *ud, xmlErrorPtr e)
{
	struct validator *v = ud;
	xmlNodePtr node = e->node;
	char *msg;
	int line = e->line;

	if (v->cur == NULL)
		return;
	if (v->cur->nproblems >= VALIDATE_MAX_PROBLEMS) {	/* count only */
		problem_add(v->cur, e->level == XML_ERR_WARNING ?
		    VALIDATE_WARNING : VALIDATE_ERROR, "schema", 0, 0, "-");
		return;
	}
	msg = schema_message(e->message ? e->message : "schema error");
	if (node != NULL && node->type == XML_ELEMENT_NODE && line <= 0)
		line = (int)xmlGetLineNo(node);
	problem_add_path(v->cur, e->level == XML_ERR_WARNING ? VALIDATE_WARNING :
	    VALIDATE_ERROR, "schema", line, 0, node != NULL &&
	    node->type == XML_ELEMENT_NODE ? validate_node_path(node) : NULL,
	    "%s", msg);
	free(msg);
}

/* Errors while compiling schemas: keep the first one. */
static void
compile_error_cb(void *ud, xmlErrorPtr e)
{
	if (e->level < XML_ERR_ERROR || compile_error != NULL)
		return;
	compile_error = xasprintf("%s line %d: %s",
	    e->file ? e->file : "schema", e->line,
	    e->message ? e->message : "error");
	compile_error[strcspn(compile_error, "\n")] = '\0';
}

/*
 * libxml2 checks an enumeration facet by comparing the value with each
 * allowed value in turn, at some 30 ns a comparison.  Nearly every Polish
 * invoice says PL (TKodKraju: 254 values, PL the 180th) and PLN
 * (TKodWaluty: 182, PLN the 140th): about 5 us of the 50 us a 5 KB invoice
 * takes to validate (doc/performance.md).  These values are moved to the
 * front of every enumeration that has them; an enumeration is a set, so
 * the schema means the same.
 */
static const char *const hot_values[] = { "PL", "PLN" };

#define NS_XSD	"http://www.w3.org/2001/XMLSchema"

static int
xsd_is(const xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && n->ns != NULL &&
	    xmlStrEqual(n->ns->href, BAD_CAST NS_XSD) &&
	    xmlStrEqual(n->name, BAD_CAST name);
}

static int
xsd_hot(xmlNode *n)
{
	xmlChar *v;
	size_t i;
	int hot = 0;

	if (!xsd_is(n, "enumeration") ||
	    (v = xmlGetNoNsProp(n, BAD_CAST "value")) == NULL)
		return 0;
	for (i = 0; i < nitems(hot_values) && !hot; i++)
		hot = xmlStrEqual(v, BAD_CAST hot_values[i]);
	xmlFree(v);
	return hot;
}

/* Move the hot values to the front of each enumeration under n. */
static void
xsd_hot_first(xmlNode *n)
{
	xmlNode *c, *next, *first;

	for (; n != NULL; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (xsd_is(n, "restriction")) {
			for (first = n->children; first != NULL &&
			    !xsd_is(first, "enumeration"); first = first->next)
				;
			for (c = first; c != NULL; c = next) {
				next = c->next;
				if (c != first && xsd_hot(c)) {
					xmlUnlinkNode(c);
					xmlAddPrevSibling(first, c);
				}
			}
		}
		xsd_hot_first(n->children);
	}
}

/*
 * A schema document, read and given to the schema parser with its hot
 * enumeration values first; NULL if it cannot be read or parsed here (the
 * caller then lets libxml2 open it and report why).
 */
static xmlParserInputPtr
compile_input(const char *path, xmlParserCtxtPtr ctxt)
{
	xmlParserInputBufferPtr buf;
	xmlParserInputPtr in = NULL;
	unsigned char *body;
	xmlChar *mem = NULL;
	xmlDocPtr doc;
	size_t len;
	int size;

	if ((body = file_read(path, 16 << 20, &len)) == NULL)
		return NULL;
	doc = len <= INT32_MAX ? xmlReadMemory((const char *)body, (int)len,
	    path, NULL, XML_PARSE_NONET | XML_PARSE_NOWARNING |
	    XML_PARSE_NOERROR) : NULL;
	free(body);
	if (doc == NULL || xmlDocGetRootElement(doc) == NULL) {
		xmlFreeDoc(doc);
		return NULL;
	}
	xsd_hot_first(xmlDocGetRootElement(doc));
	xmlDocDumpMemory(doc, &mem, &size);
	xmlFreeDoc(doc);
	if (mem != NULL && (buf = xmlParserInputBufferCreateMem((const char *)mem,
	    size, XML_CHAR_ENCODING_NONE)) != NULL &&
	    (in = xmlNewIOInputStream(ctxt, buf, XML_CHAR_ENCODING_NONE)) == NULL)
		xmlFreeParserInputBuffer(buf);
	if (in != NULL) {
		/* Its imports and includes are relative to where it lies. */
		in->filename = (char *)xmlCanonicPath(BAD_CAST path);
		in->directory = xmlParserGetDirectory(path);
	}
	xmlFree(mem);
	return in;
}

/*
 * External entity loader used only while compiling schemas: every
 * resource is looked up in the local catalog and only local files are
 * opened, so an import can never reach the network.
 */
static xmlParserInputPtr
compile_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
	xmlChar *res = NULL;
	const char *path;
	xmlParserInputPtr in;

	if (url == NULL)
		return NULL;
	if (compile_catalog != NULL &&
	    (res = xmlACatalogResolveSystem(compile_catalog, BAD_CAST url)) == NULL)
		res = xmlACatalogResolveURI(compile_catalog, BAD_CAST url);
	path = res ? (const char *)res : url;
	if (strncmp(path, "file://", 7) == 0)
		path += 7;
	if (strstr(path, "://") != NULL) {
		if (compile_error == NULL)
			compile_error = xasprintf("%s is not in the schema "
			    "catalog (no network access)", url);
		xmlFree(res);
		return NULL;
	}
	if ((in = compile_input(path, ctxt)) == NULL)
		in = xmlNewInputFromFile(ctxt, path);
	xmlFree(res);
	return in;
}

/* Compile one form's schema (path relative to the schema dir). */
static int
schema_compile(struct validator *v, const char *rel, struct validate_schema *s,
    char *err, size_t errlen)
{
	xmlExternalEntityLoader oldloader;
	xmlStructuredErrorFunc olderr;
	void *olderrctx;
	xmlSchemaParserCtxtPtr pctxt;
	char *path;

	path = xasprintf("%s/%s", v->schema_dir, rel);
	oldloader = xmlGetExternalEntityLoader();
	olderr = xmlStructuredError;
	olderrctx = xmlStructuredErrorContext;
	xmlSetExternalEntityLoader(compile_loader);
	xmlSetStructuredErrorFunc(v, compile_error_cb);
	if ((pctxt = xmlSchemaNewParserCtxt(path)) != NULL) {
		xmlSchemaSetParserStructuredErrors(pctxt, compile_error_cb, v);
		s->schema = xmlSchemaParse(pctxt);
		xmlSchemaFreeParserCtxt(pctxt);
	}
	xmlSetExternalEntityLoader(oldloader);
	xmlSetStructuredErrorFunc(olderrctx, olderr);
	if (s->schema == NULL) {
		snprintf(err, errlen, "schema %s: %s", path,
		    compile_error ? compile_error : "cannot be compiled");
		free(path);
		return -1;
	}
	free(path);
	if ((s->vctxt = xmlSchemaNewValidCtxt(s->schema)) == NULL)
		fatalx("validate: cannot create a schema validation context");
	xmlSchemaSetValidStructuredErrors(s->vctxt, schema_error_cb, v);
	return 0;
}

struct validator *
validator_new(const struct validate_params *p, char *err, size_t errlen)
{
	struct validator *v;
	char *catpath;
	size_t i;
	int rc;

	xmlInitParser();
	v = xcalloc(1, sizeof(*v));
	v->schema_dir = xstrdup(p->schema_dir ? p->schema_dir : PKGDATADIR "/schemas");
	v->fa2_allowed = p->fa2_allowed;
	v->any_seller = p->any_seller;
	v->nnips = p->nnips;
	v->nips = xcalloc(p->nnips + 1, sizeof(char *));
	for (i = 0; i < p->nnips; i++)
		v->nips[i] = xstrdup(p->nips[i]);
	v->max_body = p->max_body ? p->max_body : DEFAULT_MAX_BODY;
	v->future_days = p->future_tolerance_ms <= 0 ? 0 :
	    (long)((p->future_tolerance_ms + DAY_MS - 1) / DAY_MS);
	v->today = -1;
	if (p->today != NULL &&
	    (strlen(p->today) != 10 || (v->today = validate_date_days(p->today)) < 0)) {
		snprintf(err, errlen, "today override \"%s\" is not YYYY-MM-DD",
		    log_escape(p->today, strlen(p->today), 20));
		validator_free(v);
		return NULL;
	}

	catpath = xasprintf("%s/%s", v->schema_dir, CATALOG);
	compile_error = NULL;
	{
		xmlStructuredErrorFunc olderr = xmlStructuredError;
		void *olderrctx = xmlStructuredErrorContext;

		xmlSetStructuredErrorFunc(v, compile_error_cb);
		compile_catalog = xmlLoadACatalog(catpath);
		xmlSetStructuredErrorFunc(olderrctx, olderr);
	}
	if (compile_catalog == NULL) {
		snprintf(err, errlen, "schema catalog %s: %s", catpath,
		    compile_error ? compile_error : "cannot be loaded");
		free(compile_error);
		compile_error = NULL;
		free(catpath);
		validator_free(v);
		return NULL;
	}
	free(catpath);
	rc = schema_compile(v, XSD_FA3, &v->fa3, err, errlen);
	if (rc == 0 && v->fa2_allowed)
		rc = schema_compile(v, XSD_FA2, &v->fa2, err, errlen);
	xmlFreeCatalog(compile_catalog);
	compile_catalog = NULL;
	free(compile_error);
	compile_error = NULL;
	if (rc == -1) {
		validator_free(v);
		return NULL;
	}
	log_debug("validate: schemas compiled from %s (FA(2) %s)", v->schema_dir,
	    v->fa2_allowed ? "allowed" : "refused");
	return v;
}

static void
schema_free(struct validate_schema *s)
{
	if (s->vctxt != NULL)
		xmlSchemaFreeValidCtxt(s->vctxt);
	if (s->schema != NULL)
		xmlSchemaFree(s->schema);
}

void
validator_free(struct validator *v)
{
	size_t i;

	if (v == NULL)
		return;
	schema_free(&v->fa3);
	schema_free(&v->fa2);
	for (i = 0; i < v->nnips; i++)
		free(v->nips[i]);
	free(v->nips);
	free(v->schema_dir);
	free(v);
}

void
validate_shutdown(void)
{
	xmlCleanupParser();
}

void
validate_result_free(struct validate_result *res)
{
	size_t i;

	for (i = 0; i < res->nproblems; i++) {
		free(res->problems[i].path);
		free(res->problems[i].message);
	}
	free(res->problems);
	for (i = 0; i < res->ncorrected; i++) {
		free(res->corrected[i].number);
		free(res->corrected[i].ksef_number);
	}
	free(res->corrected);
	free(res->number);
	memset(res, 0, sizeof(*res));
}

/* Add one length-prefixed field to a digest. */
static void
key_field(EVP_MD_CTX *md, const void *p, size_t len)
{
	unsigned char l[4];

	l[0] = (len >> 24) & 0xff;
	l[1] = (len >> 16) & 0xff;
	l[2] = (len >> 8) & 0xff;
	l[3] = len & 0xff;
	if (!EVP_DigestUpdate(md, l, 4) || !EVP_DigestUpdate(md, p, len))
		fatalx("validate: SHA-256 failed");
}

void
validate_key_compute(const char *nip, const char *number, const char *date,
    const unsigned char sha256[32], unsigned char key[VALIDATE_KEY_LEN])
{
	EVP_MD_CTX *md;
	unsigned int n;

	if ((md = EVP_MD_CTX_new()) == NULL ||
	    !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
		fatalx("validate: SHA-256 unavailable");
	key_field(md, "ksefd-key-v1", 12);
	key_field(md, nip, strlen(nip));
	key_field(md, number, strlen(number));
	key_field(md, date, strlen(date));
	key_field(md, sha256, 32);
	if (!EVP_DigestFinal_ex(md, key, &n) || n != VALIDATE_KEY_LEN)
		fatalx("validate: SHA-256 failed");
	EVP_MD_CTX_free(md);
}

/* Which form a root element belongs to, by its namespace. */
static enum validate_form
form_detect(xmlNode *root)
{
	if (root->ns == NULL || root->ns->href == NULL)
		return VALIDATE_FORM_NONE;
	if (xmlStrEqual(root->ns->href, BAD_CAST NS_FA3))
		return VALIDATE_FORM_FA3;
	if (xmlStrEqual(root->ns->href, BAD_CAST NS_FA2))
		return VALIDATE_FORM_FA2;
	return VALIDATE_FORM_NONE;
}

int
validate_invoice(struct validator *v, const void *body, size_t len,
    struct validate_result *res)
{
	struct validate_rules_env env;
	struct validate_schema *s;
	xmlDocPtr doc;
	xmlNode *root;
	const char *ns;

	memset(res, 0, sizeof(*res));
	res->ok = 1;
	if (len > v->max_body) {
		problem_add(res, VALIDATE_ERROR, "body.too_large", 0, 0,
		    "body of %zu bytes is larger than the limit of %zu bytes",
		    len, v->max_body);
		return -1;
	}
	if (!EVP_Digest(body, len, res->sha256, NULL, EVP_sha256(), NULL))
		fatalx("validate: SHA-256 failed");
	if (body_scan(body, len, res) == -1)
		return -1;
	if (len > INT32_MAX || (doc = body_parse(body, len, res)) == NULL) {
		res->ok = 0;
		return -1;
	}
	root = xmlDocGetRootElement(doc);
	res->form = form_detect(root);
	if (res->form == VALIDATE_FORM_NONE) {
		ns = root->ns && root->ns->href ? (const char *)root->ns->href : "";
		validate_problem_add(res, VALIDATE_ERROR, "form.unsupported",
		    root, 0, "root element <%s> in namespace \"%s\" is not an "
		    "FA (3) or FA (2) invoice", log_escape(root->name,
		    strlen((const char *)root->name), 64),
		    log_escape(ns, strlen(ns), 100));
	} else if (res->form == VALIDATE_FORM_FA2 && !v->fa2_allowed) {
		validate_problem_add(res, VALIDATE_ERROR, "form.not_allowed",
		    root, 0, "FA (2) invoices are accepted only in the KSeF "
		    "test environment; use FA (3)");
	} else {
		s = res->form == VALIDATE_FORM_FA3 ? &v->fa3 : &v->fa2;
		v->cur = res;
		if (xmlSchemaValidateDoc(s->vctxt, doc) != 0 && res->nerrors == 0)
			problem_add(res, VALIDATE_ERROR, "schema", 0, 0,
			    "the invoice does not match the %s schema",
			    validate_form_name(res->form));
		v->cur = NULL;
		if (res->nerrors == 0) {
			env.form = res->form;
			env.today = v->today >= 0 ? v->today : today_local();
			env.future_days = v->future_days;
			env.nips = (const char *const *)v->nips;
			env.nnips = v->nnips;
			env.any_seller = v->any_seller;
			validate_rules_check(&env, root, res);
		}
	}
	xmlFreeDoc(doc);
	if (res->nerrors == 0 && res->seller_nip[0] && res->number != NULL &&
	    res->issue_date[0]) {
		validate_key_compute(res->seller_nip, res->number,
		    res->issue_date, res->sha256, res->key);
		res->has_key = 1;
	}
	res->ok = res->nerrors == 0;
	return res->ok ? 0 : -1;
}
