/*
 * sim_proc.c: what KSeF checks when it processes an invoice: UTF-8 without a
 * BOM, well-formed XML without DOCTYPE or processing instructions, no W3C
 * "discouraged" code points, the namespace and XSD of the session's form
 * (schemas loaded offline through the catalog), and the facts the duplicate
 * rule, the UPO and the metadata query need.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/catalog.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlschemas.h>

#include "log.h"
#include "sim.h"

static const char *const form_ns[SIM_NFORMS] = {
	"http://crd.gov.pl/wzor/2025/06/25/13775/",
	"http://crd.gov.pl/wzor/2023/06/29/12648/",
};
static const char *const form_xsd[SIM_NFORMS] = {
	"FA/schemat_FA(3)_v1-0E.xsd",
	"FA/schemat_FA(2)_v1-0E.xsd",
};

#define MAX_DETAILS	20

struct sim_xsd {
	xmlSchemaPtr	 schema[SIM_NFORMS];
};

static xmlExternalEntityLoader default_loader;

/* Resolve through the catalog; never touch the network. */
static xmlParserInputPtr
offline_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
	xmlChar *r = NULL;
	xmlParserInputPtr in;

	if (url != NULL)
		r = xmlCatalogResolveURI((const xmlChar *)url);
	if (r == NULL && (url != NULL || id != NULL))
		r = xmlCatalogResolve((const xmlChar *)id, (const xmlChar *)url);
	if (r != NULL) {
		in = default_loader((const char *)r, id, ctxt);
		xmlFree(r);
		return in;
	}
	if (url != NULL && (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0 ||
	    strncmp(url, "ftp://", 6) == 0))
		return NULL;
	return default_loader(url, id, ctxt);
}

static void
silent_cb(void *ctx, xmlErrorPtr e)
{
}

struct sim_xsd *
sim_xsd_load(const char *dir, char *err, size_t errlen)
{
	struct sim_xsd *x = xcalloc(1, sizeof(*x));
	xmlSchemaParserCtxtPtr pc;
	char *path;
	int i;

	xmlInitParser();
	xmlSetStructuredErrorFunc(NULL, silent_cb);
	if (default_loader == NULL) {
		default_loader = xmlGetExternalEntityLoader();
		xmlSetExternalEntityLoader(offline_loader);
		xmlInitializeCatalog();
		path = xasprintf("%s/catalog.xml", dir);
		if (xmlLoadCatalog(path) != 0) {
			snprintf(err, errlen, "cannot load the XML catalog %s", path);
			free(path);
			free(x);
			return NULL;
		}
		free(path);
	}
	for (i = 0; i < SIM_NFORMS; i++) {
		path = xasprintf("%s/%s", dir, form_xsd[i]);
		pc = xmlSchemaNewParserCtxt(path);
		x->schema[i] = pc ? xmlSchemaParse(pc) : NULL;
		xmlSchemaFreeParserCtxt(pc);
		if (x->schema[i] == NULL) {
			snprintf(err, errlen, "cannot load the schema %s (offline, via catalog.xml)",
			    path);
			free(path);
			sim_xsd_free(x);
			return NULL;
		}
		free(path);
	}
	return x;
}

void
sim_xsd_free(struct sim_xsd *x)
{
	int i;

	if (x == NULL)
		return;
	for (i = 0; i < SIM_NFORMS; i++)
		if (x->schema[i] != NULL)
			xmlSchemaFree(x->schema[i]);
	free(x);
}

static void
detail_add(json_t *details, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
detail_add(json_t *details, const char *fmt, ...)
{
	va_list ap;
	char buf[512];
	json_t *j;

	if (details == NULL || json_array_size(details) >= MAX_DETAILS)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* jansson wants valid UTF-8; libxml2 messages quote input bytes */
	j = json_string(buf);
	if (j == NULL)
		j = json_string(log_escape(buf, strlen(buf), 400));
	json_array_append_new(details, j);
}

/* Append one schema error as "line N: message". */
static void
schema_err_cb(void *ctx, xmlErrorPtr e)
{
	json_t *details = ctx;
	size_t n;
	char msg[400];

	snprintf(msg, sizeof(msg), "%s", e->message ? e->message : "error");
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	detail_add(details, "line %d: %s", e->line, msg);
}

/* Offset of a W3C discouraged code point in UTF-8 text, or -1. */
static long
discouraged_at(const unsigned char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] == 0x7f)
			return (long)i;
		if (s[i] == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f &&
		    s[i + 1] != 0x85)
			return (long)i;
		if (s[i] == 0xef && i + 2 < n &&
		    ((s[i + 1] == 0xb7 && s[i + 2] >= 0x90 && s[i + 2] <= 0xaf) ||
		    (s[i + 1] == 0xbf && (s[i + 2] == 0xbe || s[i + 2] == 0xbf))))
			return (long)i;
		if (s[i] >= 0xf0 && i + 3 < n && (s[i + 1] & 0x0f) == 0x0f &&
		    s[i + 2] == 0xbf && (s[i + 3] == 0xbe || s[i + 3] == 0xbf))
			return (long)i;
	}
	return -1;
}

static xmlNodePtr
child(xmlNodePtr n, const char *name)
{
	xmlNodePtr c;

	for (c = n ? n->children : NULL; c != NULL; c = c->next)
		if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0)
			return c;
	return NULL;
}

/* Text of a child element, or NULL. Caller frees. */
static char *
child_text(xmlNodePtr n, const char *name)
{
	xmlNodePtr c = child(n, name);
	xmlChar *t;
	char *s;

	if (c == NULL || (t = xmlNodeGetContent(c)) == NULL)
		return NULL;
	s = xstrdup((const char *)t);
	xmlFree(t);
	return s;
}

static double
child_num(xmlNodePtr n, const char *name)
{
	char *s = child_text(n, name);
	double v = s ? strtod(s, NULL) : 0;

	free(s);
	return v;
}

/* Processing instructions anywhere in the tree. */
static int
has_pi(xmlNodePtr n)
{
	for (; n != NULL; n = n->next) {
		if (n->type == XML_PI_NODE)
			return 1;
		if (n->children != NULL && n->type == XML_ELEMENT_NODE && has_pi(n->children))
			return 1;
	}
	return 0;
}

static int
facts_extract(xmlNodePtr root, struct sim_facts *f, json_t *details)
{
	xmlNodePtr p1 = child(root, "Podmiot1"), p2 = child(root, "Podmiot2");
	xmlNodePtr fa = child(root, "Fa"), id1 = child(p1, "DaneIdentyfikacyjne");
	xmlNodePtr id2 = child(p2, "DaneIdentyfikacyjne");
	char name[16];
	int i;

	f->nip = child_text(id1, "NIP");
	f->seller_name = child_text(id1, "Nazwa");
	f->buyer_nip = child_text(id2, "NIP");
	f->buyer_name = child_text(id2, "Nazwa");
	f->number = child_text(fa, "P_2");
	f->type = child_text(fa, "RodzajFaktury");
	f->issue = child_text(fa, "P_1");
	f->currency = child_text(fa, "KodWaluty");
	f->gross = child_num(fa, "P_15");
	for (i = 1; i <= 11; i++) {
		snprintf(name, sizeof(name), "P_13_%d", i);
		f->net += child_num(fa, name);
	}
	for (i = 1; i <= 5; i++) {
		snprintf(name, sizeof(name), "P_14_%d", i);
		f->vat += child_num(fa, name);
	}
	if (f->nip == NULL || f->number == NULL || f->type == NULL || f->issue == NULL) {
		detail_add(details, "brak wymaganego elementu: %s",
		    f->nip == NULL ? "Podmiot1/DaneIdentyfikacyjne/NIP" :
		    f->number == NULL ? "Fa/P_2" : f->type == NULL ? "Fa/RodzajFaktury" : "Fa/P_1");
		return 430;
	}
	return 0;
}

int
sim_xml_check(struct sim_xsd *x, int form, const unsigned char *xml, size_t len,
    struct sim_facts *f, json_t *details)
{
	xmlParserCtxtPtr pc;
	xmlSchemaValidCtxtPtr vc;
	xmlDocPtr doc;
	xmlNodePtr root;
	xmlErrorPtr e;
	long at;
	int rc = 430;

	memset(f, 0, sizeof(*f));
	f->form = form;
	if (len >= 3 && xml[0] == 0xef && xml[1] == 0xbb && xml[2] == 0xbf) {
		detail_add(details, "plik zawiera znacznik BOM; wymagane UTF-8 bez BOM");
		return 430;
	}
	if (len > INT32_MAX) {
		detail_add(details, "plik za du\xc5\xbcy");
		return 430;
	}
	if ((pc = xmlNewParserCtxt()) == NULL)
		fatalx("sim: xmlNewParserCtxt");
	doc = xmlCtxtReadMemory(pc, (const char *)xml, (int)len, "invoice.xml", NULL,
	    XML_PARSE_NONET);
	if (doc == NULL) {
		e = xmlCtxtGetLastError(pc);
		detail_add(details, "line %d: XML niepoprawny sk\xc5\x82" "adniowo: %s",
		    e ? e->line : 0, e && e->message ? e->message : "parse error");
		xmlFreeParserCtxt(pc);
		return 430;
	}
	xmlFreeParserCtxt(pc);
	root = xmlDocGetRootElement(doc);
	if (doc->encoding != NULL && strcasecmp((const char *)doc->encoding, "UTF-8") != 0) {
		detail_add(details, "deklaracja kodowania %s; dozwolone tylko UTF-8",
		    log_escape(doc->encoding, strlen((const char *)doc->encoding), 40));
	} else if (doc->intSubset != NULL) {
		detail_add(details, "deklaracja DOCTYPE jest niedozwolona");
	} else if (has_pi(doc->children)) {
		detail_add(details, "instrukcje przetwarzania (processing instructions) "
		    "s\xc4\x85 niedozwolone");
	} else if ((at = discouraged_at(xml, len)) >= 0) {
		detail_add(details, "niedozwolony znak (W3C discouraged) na pozycji %ld", at);
	} else if (root == NULL || strcmp((const char *)root->name, "Faktura") != 0 ||
	    root->ns == NULL || strcmp((const char *)root->ns->href, form_ns[form]) != 0) {
		detail_add(details, "dokument nie jest zgodny z formCode sesji "
		    "(oczekiwano Faktura w przestrzeni nazw %s)", form_ns[form]);
	} else if (x != NULL) {
		vc = xmlSchemaNewValidCtxt(x->schema[form]);
		xmlSchemaSetValidStructuredErrors(vc, schema_err_cb, details);
		rc = xmlSchemaValidateDoc(vc, doc) == 0 ? 0 : 430;
		xmlSchemaFreeValidCtxt(vc);
		if (rc == 0)
			rc = facts_extract(root, f, details);
	} else
		rc = facts_extract(root, f, details);
	xmlFreeDoc(doc);
	return rc;
}

void
sim_facts_free(struct sim_facts *f)
{
	free(f->nip);
	free(f->number);
	free(f->type);
	free(f->issue);
	free(f->seller_name);
	free(f->buyer_nip);
	free(f->buyer_name);
	free(f->currency);
	memset(f, 0, sizeof(*f));
}
