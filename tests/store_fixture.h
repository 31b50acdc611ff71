/* store_fixture.h: shared set-up for the store and audit tests (header only). */
#ifndef KSEFD_STORE_FIXTURE_H
#define KSEFD_STORE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "record.h"
#include "store.h"
#include "util.h"

/* A fresh private directory for a database.  Caller frees. */
static inline char *
fixture_dir(void)
{
	char *d = xstrdup("/tmp/ksefd-store-test.XXXXXX");

	if (mkdtemp(d) == NULL)
		fatal("mkdtemp");
	return d;
}

/* Remove a database directory made by fixture_dir() and free its name. */
static inline void
fixture_rmdir(char *dir)
{
	char *p;

	p = xasprintf("%s/data.mdb", dir);
	unlink(p);
	free(p);
	p = xasprintf("%s/lock.mdb", dir);
	unlink(p);
	free(p);
	rmdir(dir);
	free(dir);
}

static inline struct store *
fixture_open(struct event_base *base, const char *dir, size_t map_size)
{
	char err[512];
	struct store *s;

	if ((s = store_open(base, dir, map_size, 0, err, sizeof(err))) == NULL)
		fatalx("fixture: %s", err);
	return s;
}

/* Invoice number i of group g: a distinct key and number, state QUEUED. */
static inline void
fixture_invoice(struct record_invoice *inv, uint32_t g, uint32_t i)
{
	char num[64];

	memset(inv, 0, sizeof(*inv));
	inv->key[0] = 0x5e;
	inv->key[1] = g >> 24; inv->key[2] = g >> 16; inv->key[3] = g >> 8; inv->key[4] = g;
	inv->key[5] = i >> 24; inv->key[6] = i >> 16; inv->key[7] = i >> 8; inv->key[8] = i;
	memset(inv->key + 9, 0xa5, INV_KEY_LEN - 9);
	inv->state = INV_ST_QUEUED;
	strcpy(inv->seller_nip, "5265877635");
	inv->form = INV_FORM_FA3;
	strcpy(inv->kind, "VAT");
	snprintf(num, sizeof(num), "FV/%u/%u", g, i);
	inv->number = xstrdup(num);
	strcpy(inv->issue_date, "2026-11-24");
	memset(inv->xml_sha256, 0x11, INV_SHA_LEN);
	inv->xml_size = 1234;
	inv->received_ms = 1795514400000LL + i;
	inv->source = INV_SRC_API;
}

#endif
