/* intake.c: validation, idempotency, corrections, and durable storage of new invoices. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "intake.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "validate.h"

struct intake {
	struct store		*store;
	struct validator	*validator;
	void			(*notify)(const struct record_invoice *, void *);
	void			*notify_arg;
};

/* One submission waiting for its group to commit. */
struct intake_pending {
	struct intake		*in;
	enum intake_status	 status;
	int			 corrected;
	struct record_invoice	 inv;
	struct validate_result	 vr;
	intake_cb		 cb;
	void			*arg;
};

struct intake *
intake_new(struct store *store, struct validator *v)
{
	struct intake *in = xcalloc(1, sizeof(*in));

	in->store = store;
	in->validator = v;
	return in;
}

void
intake_free(struct intake *in)
{
	free(in);
}

void
intake_set_notify(struct intake *in,
    void (*cb)(const struct record_invoice *, void *), void *arg)
{
	in->notify = cb;
	in->notify_arg = arg;
}

void
intake_set_validator(struct intake *in, struct validator *v)
{
	in->validator = v;
}

const char *
intake_status_name(enum intake_status s)
{
	switch (s) {
	case INTAKE_CREATED:
		return "created";
	case INTAKE_EXISTS:
		return "exists";
	case INTAKE_CONFLICT:
		return "conflict";
	case INTAKE_REFUSED:
		return "refused";
	case INTAKE_UNAVAILABLE:
		return "unavailable";
	}
	return "?";
}

/* Report and release a pending submission. */
static void
intake_finish(struct intake_pending *p)
{
	struct intake_outcome o;

	memset(&o, 0, sizeof(o));
	o.status = p->status;
	o.inv = p->status == INTAKE_REFUSED ? NULL : &p->inv;
	o.vr = &p->vr;
	o.corrected = p->corrected;
	p->cb(&o, p->arg);
	record_invoice_free(&p->inv);
	validate_result_free(&p->vr);
	free(p);
}

/* The group holding (or possibly still writing) the record has ended. */
static void
intake_commit_cb(int status, void *arg)
{
	struct intake_pending *p = arg;

	if (status != STORE_COMMITTED)
		p->status = INTAKE_UNAVAILABLE;
	else if (p->status == INTAKE_CREATED && p->in->notify != NULL)
		p->in->notify(&p->inv, p->in->notify_arg);
	intake_finish(p);
}

/*
 * May an invoice in this state be replaced by one with the same identity?
 * Only a rejected one, or one that failed before KSeF took it.
 */
static int
intake_replaceable(const struct record_invoice *old)
{
	if (old->state == INV_ST_REJECTED)
		return 1;
	return old->state == INV_ST_FAILED && old->invoice_ref == NULL &&
	    old->ksef_number == NULL;
}

/* Fill a new record from the validation result. */
static void
intake_record_fill(struct record_invoice *inv, const struct validate_result *vr,
    size_t len, enum inv_source source, const char *source_name)
{
	memset(inv, 0, sizeof(*inv));
	memcpy(inv->key, vr->key, INV_KEY_LEN);
	inv->state = INV_ST_QUEUED;
	snprintf(inv->seller_nip, sizeof(inv->seller_nip), "%s", vr->seller_nip);
	inv->form = vr->form == VALIDATE_FORM_FA2 ? INV_FORM_FA2 : INV_FORM_FA3;
	snprintf(inv->kind, sizeof(inv->kind), "%s", vr->kind);
	record_str_set(&inv->number, vr->number);
	snprintf(inv->issue_date, sizeof(inv->issue_date), "%s", vr->issue_date);
	memcpy(inv->xml_sha256, vr->sha256, INV_SHA_LEN);
	inv->xml_size = len;
	inv->received_ms = time_now_ms();
	inv->next_due_ms = inv->received_ms;
	inv->source = source;
	record_str_set(&inv->source_name, source_name);
}

void
intake_submit(struct intake *in, const void *body, size_t len,
    enum inv_source source, const char *source_name, intake_cb cb, void *arg)
{
	struct intake_pending *p = xcalloc(1, sizeof(*p));
	struct record_invoice old;
	unsigned char oldkey[INV_KEY_LEN];
	char shortkey[17], detail[160];
	int r;

	p->in = in;
	p->cb = cb;
	p->arg = arg;
	if (validate_invoice(in->validator, body, len, &p->vr) == -1 ||
	    !p->vr.has_key) {
		p->status = INTAKE_REFUSED;
		intake_finish(p);
		return;
	}

	/* The same bytes again: answer with the record once it is durable. */
	r = store_invoice_get(in->store, p->vr.key, &p->inv);
	if (r == 0) {
		p->status = INTAKE_EXISTS;
		store_on_commit(in->store, intake_commit_cb, p);
		return;
	}
	if (r == -1)
		goto unavailable;

	/* Same identity, other bytes: a conflict or a correction. */
	r = store_ident_get(in->store, p->vr.seller_nip, p->vr.kind,
	    p->vr.number, oldkey);
	if (r == -1)
		goto unavailable;
	memset(&old, 0, sizeof(old));
	if (r == 0 && store_invoice_get(in->store, oldkey, &old) == 0) {
		if (!intake_replaceable(&old)) {
			p->status = INTAKE_CONFLICT;
			p->inv = old;
			store_on_commit(in->store, intake_commit_cb, p);
			return;
		}
		intake_record_fill(&p->inv, &p->vr, len, source, source_name);
		memcpy(p->inv.supersedes, old.key, INV_KEY_LEN);
		memcpy(old.superseded_by, p->inv.key, INV_KEY_LEN);
		if (store_invoice_update(in->store, &old) == -1) {
			record_invoice_free(&old);
			goto unavailable;
		}
		p->corrected = 1;
		record_key_short(old.key, shortkey);
		snprintf(detail, sizeof(detail), "received via %s; corrects %s (%s)",
		    record_source_name(source), shortkey,
		    record_state_name(old.state));
		record_invoice_free(&old);
	} else {
		record_invoice_free(&old);
		intake_record_fill(&p->inv, &p->vr, len, source, source_name);
		snprintf(detail, sizeof(detail), "received via %s",
		    record_source_name(source));
	}

	r = store_invoice_add(in->store, &p->inv, body, len, detail);
	if (r == 1) {
		/* Cannot happen after the lookup above; treat as the same bytes. */
		p->status = INTAKE_EXISTS;
	} else if (r == -1)
		goto unavailable;
	else
		p->status = INTAKE_CREATED;
	record_key_short(p->inv.key, shortkey);
	log_debug("intake: %s %s %s %s from %s%s%s", shortkey, p->inv.seller_nip,
	    p->inv.kind, log_escape(p->inv.number, strlen(p->inv.number), 64),
	    record_source_name(source), source_name ? " " : "",
	    source_name ? log_escape(source_name, strlen(source_name), 128) : "");
	store_on_commit(in->store, intake_commit_cb, p);
	return;

unavailable:
	/* The group is failing; answer once it has ended, like everyone in it. */
	p->status = INTAKE_UNAVAILABLE;
	store_on_commit(in->store, intake_commit_cb, p);
}
