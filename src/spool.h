/*
 * spool.h: the spool directory.  The ERP writes NAME.tmp into incoming/ and
 * renames it to NAME.xml; ksefd takes each *.xml through the same intake as
 * the API and, only after the record is committed, moves it to accepted/
 * (new or already known) or to refused/ with NAME.xml.err holding the JSON
 * problems (invalid, or a conflict).  Dotfiles and *.tmp are ignored.
 * incoming/ is watched with inotify, with a periodic rescan as a safety net.
 */
#ifndef KSEFD_SPOOL_H
#define KSEFD_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct intake;
struct spool;

/* Start: create the directories, scan incoming/, watch it.  NULL with err filled. */
struct spool *spool_start(struct event_base *, const char *dir,
	    int64_t rescan_ms, size_t max_body, struct intake *, char *err,
	    size_t errlen);
/* New rescan interval and body limit after a reload. */
void	 spool_update(struct spool *, int64_t rescan_ms, size_t max_body);
/* Files handed to intake and not yet moved. */
size_t	 spool_in_flight(const struct spool *);
/* Stop watching; files in flight finish through their commit callbacks. */
void	 spool_free(struct spool *);

#endif
