/* render.h: JSON views of invoice records and validation problems (jansson). */
#ifndef KSEFD_RENDER_H
#define KSEFD_RENDER_H

#include <jansson.h>

#include "record.h"

struct validate_result;

/* The 64-hex-digit id of a key.  New reference. */
json_t	*render_key_json(const unsigned char key[INV_KEY_LEN]);
/* The public view of an invoice record.  New reference. */
json_t	*render_invoice_json(const struct record_invoice *);
/* Problems of one severity (VALIDATE_ERROR, VALIDATE_WARNING) or all (-1).  New reference. */
json_t	*render_problems_json(const struct validate_result *, int severity);

#endif
