/*
 * audit.h: the audit trail for auditors: events read back in order and
 * exported as JSON lines.  Events are appended by the store, in the same
 * transaction as the state change they describe (store_invoice_transition).
 *
 * One line per event:
 * {"seq":12,"time":"2026-11-24T10:00:00.000Z","time_ms":1795514400000,
 *  "invoice":"<64 hex digits>","from":"QUEUED","to":"SENDING","detail":"..."}
 * "from" is null for the event that created the invoice; "detail" may be "".
 */
#ifndef KSEFD_AUDIT_H
#define KSEFD_AUDIT_H

#include <stdint.h>
#include <stdio.h>

struct buf;
struct record_audit;
struct store;

/* Append one event as a JSON line (ending in "\n") to out. */
void	 audit_event_format(const struct record_audit *, struct buf *out);
/* Write the events with seq >= from_seq to fp; the number written, or -1. */
long	 audit_export_file(struct store *, uint64_t from_seq, FILE *fp);
/* The same, appended to out. */
long	 audit_export_buf(struct store *, uint64_t from_seq, struct buf *out);

#endif
