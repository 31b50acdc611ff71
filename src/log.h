/* log.h: logging to syslog or stderr, in the OpenBSD daemons' style. */
#ifndef KSEFD_LOG_H
#define KSEFD_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* Trace masks for log_trace(); switchable at runtime with log_trace_set(). */
#define TRACE_HTTP	0x0001u	/* transport: requests, responses */
#define TRACE_KSEF	0x0002u	/* KSeF layer: operations and outcomes */
#define TRACE_STORE	0x0004u	/* store: transactions, commits */
#define TRACE_SCHED	0x0008u	/* scheduler: due times, limits */
#define TRACE_API	0x0010u	/* intake API */
#define TRACE_CONF	0x0020u	/* configuration */
#define TRACE_ALL	0xffffu

/* Log levels, from quiet to chatty; verbosity adds to LOG_LVL_INFO. */
enum log_level {
	LOG_LVL_WARN = 0,
	LOG_LVL_INFO = 1,
	LOG_LVL_DEBUG = 2,
};

/* Start logging: to stderr when foreground, else to syslog as `ident`. */
void	log_init(const char *ident, int foreground, int level);
void	log_setlevel(int level);
int	log_getlevel(void);
void	log_trace_set(unsigned int mask);
unsigned int log_trace_get(void);
/* Parse "warn", "info", "debug"; -1 on anything else. */
int	log_level_parse(const char *s);
const char *log_level_name(int level);

void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_alert(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_trace(unsigned int mask, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
void	fatal(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * Escape untrusted bytes for a log line: printable ASCII stays, everything
 * else becomes \xNN, and the result is cut at `max` input bytes with "...".
 * Returns a pointer to one of a few rotating static buffers, so up to four
 * calls may appear in one log statement.
 */
const char *log_escape(const void *data, size_t len, size_t max);

#endif
