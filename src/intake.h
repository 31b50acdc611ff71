/*
 * intake.h: the one way an invoice enters ksefd, shared by the API and the
 * spool directory: validate, derive the idempotency key, apply the
 * idempotency and correction rules of DESIGN.md, store the record, its XML
 * and its audit event in the current group, and report the outcome only
 * once that group has committed (durable before acknowledged).
 */
#ifndef KSEFD_INTAKE_H
#define KSEFD_INTAKE_H

#include <stddef.h>

#include "record.h"

struct intake;
struct store;
struct validator;
struct validate_result;

enum intake_status {
	INTAKE_CREATED = 0,	/* new record, committed (maybe a correction) */
	INTAKE_EXISTS,		/* the same bytes were already received */
	INTAKE_CONFLICT,	/* same seller, type and number, other bytes */
	INTAKE_REFUSED,		/* validation errors: nothing stored */
	INTAKE_UNAVAILABLE,	/* the commit failed: nothing stored, try again */
};

/*
 * What happened.  `inv` is valid for CREATED, EXISTS and CONFLICT (for a
 * conflict: the existing record); `vr` always (problems and warnings).
 * Both are owned by intake and valid only during the callback.
 */
struct intake_outcome {
	enum intake_status	 status;
	const struct record_invoice *inv;
	const struct validate_result *vr;
	int			 corrected;	/* CREATED as a correction of inv->supersedes */
};

typedef void (*intake_cb)(const struct intake_outcome *, void *arg);

/* Caller frees with intake_free(); the store and validator are borrowed. */
struct intake *intake_new(struct store *, struct validator *);
void	 intake_free(struct intake *);
/* Call cb with every record created, once its group has committed. */
void	 intake_set_notify(struct intake *,
	    void (*cb)(const struct record_invoice *, void *), void *arg);
/* Use another validator from now on (after a reload). */
void	 intake_set_validator(struct intake *, struct validator *);

/*
 * Submit one body.  `cb` runs exactly once: at once for a refusal, else
 * after the group holding the change (or, for an existing record, the group
 * that may still be writing it) committed or failed.
 */
void	 intake_submit(struct intake *, const void *body, size_t len,
	    enum inv_source source, const char *source_name, intake_cb cb,
	    void *arg);

/* "created", "exists", "conflict", "refused", "unavailable". */
const char *intake_status_name(enum intake_status);

#endif
