/* util.h: small helpers every module uses: memory, buffers, hex, time, files. */
#ifndef KSEFD_UTIL_H
#define KSEFD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

/* Allocation that never returns NULL: out of memory is fatal. */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
/* Caller frees. */
char	*xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte buffer; data is always NUL-terminated past len. */
struct buf {
	unsigned char	*data;
	size_t		 len;
	size_t		 cap;
};

void	 buf_init(struct buf *);
void	 buf_free(struct buf *);
void	 buf_reset(struct buf *);
void	 buf_reserve(struct buf *, size_t extra);
void	 buf_add(struct buf *, const void *, size_t);
void	 buf_addstr(struct buf *, const char *);
void	 buf_addf(struct buf *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* Hand the data over to the caller (who frees it) and reset the buffer. */
unsigned char *buf_release(struct buf *, size_t *lenp);

/* Lower-case hex of `len` bytes into `out` (2*len+1 bytes). */
void	 hex_encode(const void *, size_t len, char *out);
/* Decode exactly `len` bytes of hex; -1 on a bad digit or length. */
int	 hex_decode(const char *, void *out, size_t len);

/* Polish NIP: 10 digits with a mod-11 check digit (weights 6 5 7 2 3 4 5 6 7). */
int	 nip_valid(const char *);

/* Clocks in milliseconds. */
int64_t	 time_now_ms(void);	/* wall clock, Unix epoch */
int64_t	 time_mono_ms(void);	/* monotonic */
/* ISO-8601 UTC with milliseconds, e.g. 2026-11-24T10:00:00.000Z; out >= 32 bytes. */
void	 time_fmt_iso(int64_t ms, char *out, size_t outlen);
/*
 * ISO-8601 date-time as KSeF writes it, YYYY-MM-DDTHH:MM:SS[.f{1,7}] with Z
 * or a +HH:MM / +HHMM offset, into ms since the epoch; -1 if it is not one.
 */
int	 time_parse_iso(const char *s, int64_t *ms);

/*
 * Read a secret from a file that must be a regular file not readable or
 * writable by group or others.  Trailing newlines are stripped.  On failure
 * returns NULL with a message in err.  Caller frees (and should wipe) it.
 */
char	*file_read_secret(const char *path, char *err, size_t errlen);
/* Read a whole file, up to `max` bytes; NULL with errno set on failure. Caller frees. */
unsigned char *file_read(const char *path, size_t max, size_t *lenp);
/* Write a file atomically (tmp + fsync + rename); -1 with errno on failure. */
int	 file_write_atomic(const char *path, const void *, size_t, mode_t);

/* Wipe memory that held a secret. */
void	 explicit_wipe(void *, size_t);

/* Parse a duration like "30s", "5m", "2h", "1d", "250ms" (bare number = seconds) into ms; -1 on error. */
int64_t	 parse_duration_ms(const char *);
/* Parse a size like "1M", "64K", "10G", "512" into bytes; -1 on error. */
int64_t	 parse_size(const char *);

#endif
