/* render.h: JSON views of invoice records and validation problems. */
#ifndef KSEFD_RENDER_H
#define KSEFD_RENDER_H

#include <jansson.h>

#include "record.h"

struct buf;
struct validate_result;

/* The public view of an invoice record.  New reference. */
json_t	*render_invoice_json(const struct record_invoice *);
/*
 * The same view as JSON text appended to a buffer, written directly: the
 * text json_dumps(render_invoice_json(inv), JSON_COMPACT | JSON_ENSURE_ASCII)
 * gives (members in the same order), without a tree and its allocations.
 * render_invoice_json() is parsed from it, so there is one definition.
 */
void	 render_invoice_text(struct buf *, const struct record_invoice *);
/*
 * A JSON string literal of s appended to b, as jansson writes it with
 * JSON_ENSURE_ASCII (\" \\ \b \f \n \r \t, other controls and non-ASCII
 * as \uXXXX, UTF-16 pairs above U+FFFF).  A byte that is not part of valid
 * UTF-8 becomes U+FFFD (jansson refuses such a string altogether).
 */
void	 render_json_string(struct buf *, const char *s);
/* Problems of one severity (VALIDATE_ERROR, VALIDATE_WARNING) or all (-1).  New reference. */
json_t	*render_problems_json(const struct validate_result *, int severity);

#endif
