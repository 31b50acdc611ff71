/*
 * failpoint.h: crash-test failpoints.  Compiled in only with
 * ./configure --enable-failpoints (KSEFD_FAILPOINTS); a release build has
 * none.  KSEFD_FAILPOINTS in the environment arms them:
 *
 *   KSEFD_FAILPOINTS="NAME=N,NAME=pP,..."
 *
 * NAME=N SIGKILLs the process at the Nth time the point is reached;
 * NAME=pP at each pass with probability P (0..1), seeded by
 * KSEFD_FAILPOINT_SEED.  Names used: sending-committed (after a SENDING
 * commit, before the send), send-response (after KSeF answered a send,
 * before that answer is committed), upo-start (after ACCEPTED committed,
 * before the UPO is fetched), status-response (after a status page or one
 * invoice's status arrived).
 */
#ifndef KSEFD_FAILPOINT_H
#define KSEFD_FAILPOINT_H

/* Read KSEFD_FAILPOINTS; a no-op without failpoints compiled in. */
void	failpoint_init(void);
#ifdef KSEFD_FAILPOINTS
void	failpoint_hit(const char *name);
#define FAILPOINT(name)	failpoint_hit(name)
#else
#define FAILPOINT(name)	do { } while (0)
#endif

#endif
