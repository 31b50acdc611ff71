/* conf.h: ksefd.conf parsed into one immutable object; reload and its diff. */
#ifndef KSEFD_CONF_H
#define KSEFD_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "ratelimit.h"

/*
 * One [limits] override.  set == 0 means "official": the limiter's own
 * defaults.  Otherwise lim holds the counts (0 = window not limited) with
 * the real window lengths.
 */
struct conf_limit {
	int		 set;
	struct ratelimit_limits lim;
};

/* One [context NIP] section: a seller with its KSeF token (a secret). */
struct conf_context {
	char		 nip[11];
	char		*name;		/* NULL when not given */
	char		*token_file;
	char		*token;		/* file contents; wiped on free, never logged */
};

/* KSeF environments; CONF_ENV_URL is an explicit base URL. */
enum conf_env {
	CONF_ENV_TEST,
	CONF_ENV_DEMO,
	CONF_ENV_PROD,
	CONF_ENV_URL,
};

/*
 * The whole configuration.  Durations are in milliseconds, sizes in bytes.
 * Paths are absolute (relative ones are taken from the config file's
 * directory).  Optional strings are NULL when off.
 */
struct conf {
	char		*file;			/* absolute path it came from */

	/* [daemon] */
	char		*pid_file;
	/* [log] */
	int		 log_level;		/* LOG_LVL_* */
	unsigned int	 log_trace;		/* TRACE_* mask */
	/* [ksef] */
	char		*environment;		/* as written: test, demo, prod, URL */
	enum conf_env	 env;
	char		*base_url;		/* without a trailing slash, e.g. .../v2 */
	int		 fa2_allowed;		/* FA(2) accepted: TEST only */
	char		*ca_file;
	char		*latarnia_url;		/* NULL = off */
	int64_t		 connect_timeout;
	int64_t		 request_timeout;
	int64_t		 max_in_flight;
	int64_t		 token_refresh_margin;
	/* [storage] */
	char		*database;
	int64_t		 map_size;
	/* [api] */
	char		*api_socket;
	int		 api_socket_mode;
	char		*api_listen;		/* "127.0.0.1:8080", "[::1]:8080", NULL */
	char		*api_token_file;
	char		*api_token;		/* secret; NULL without token_file */
	int64_t		 api_max_body;
	/* [spool] */
	char		*spool_directory;
	int64_t		 spool_rescan_interval;
	/* [intake] */
	int64_t		 future_tolerance;
	char		*intake_fa2;		/* auto, yes, no */
	/* [retry] */
	int64_t		 backoff_min;
	int64_t		 backoff_max;
	int64_t		 max_age;
	/* [poll] */
	int64_t		 poll_auth_interval;
	int64_t		 poll_status_interval;
	int64_t		 poll_single_max;	/* per-invoice status up to this many pending */
	/* [session] */
	int64_t		 session_idle_timeout;
	int64_t		 session_max_lifetime;
	int64_t		 session_max_invoices;
	/* [reconcile] */
	int64_t		 reconcile_interval;	/* 0 = only on demand */
	int64_t		 reconcile_stuck_after;
	/* [limits] */
	int		 limits_enabled;
	char		*limit_windows;		/* as written */
	int64_t		 limit_window_ms[3];	/* second, minute, hour windows */
	struct conf_limit limits[RL_NGROUPS];	/* by enum ratelimit_group */
	/* [alert] */
	int		 alert_syslog;
	char		*alert_command;
	int64_t		 alert_command_timeout;
	char		*alert_webhook;
	int64_t		 alert_reminder;
	int64_t		 alert_outage_after;
	int64_t		 alert_db_full_percent;
	/* [context NIP] sections, in file order */
	struct conf_context *contexts;
	size_t		 ncontexts;
};

/* A list of message lines (errors, or changed settings). */
struct conf_msgs {
	char		**v;
	size_t		 n;
};

void	conf_msgs_free(struct conf_msgs *);

/*
 * Parse and validate the file at `path`.  Returns the new config, or NULL
 * with every problem appended to `errs` as "file:line: message".
 * Secret files are read here.  Caller frees with conf_free().
 */
struct conf *conf_load(const char *path, struct conf_msgs *errs);
/* Free a config and wipe its secrets; NULL is fine. */
void	conf_free(struct conf *);
/* The context of a seller NIP, or NULL. */
const struct conf_context *conf_context_find(const struct conf *,
	    const char *nip);

/*
 * What differs from `old` to `new`, one line per setting, e.g.
 * "log.level info -> debug", "context 1234563218 added",
 * "context 1234563218 token changed".  Settings that cannot change live
 * (storage.*, api.socket, api.listen, daemon.pid_file) go to `restart`
 * instead, e.g. "storage.database /a -> /b".  Secrets are never printed.
 */
void	conf_diff(const struct conf *old, const struct conf *new,
	    struct conf_msgs *changed, struct conf_msgs *restart);

/*
 * Give `new` the old values of the settings that need a restart (the
 * running daemon keeps what it opened); `old` gets the new ones.
 */
void	conf_restart_keep(struct conf *new, struct conf *old);

/*
 * Reload hooks: called after a successful reload with the old and the new
 * config, before the old one is freed.  A module must not keep pointers
 * into `old` after its hook returns.
 */
typedef void (*conf_reload_cb)(const struct conf *old,
	    const struct conf *new, void *arg);
void	conf_reload_hook_add(conf_reload_cb, void *arg);
void	conf_reload_hook_remove(conf_reload_cb, void *arg);
void	conf_reload_hooks_clear(void);

/*
 * SIGHUP: load `cur`'s file again.  On errors log them with
 * "config file F has errors, not reloading" and return -1, `*cur`
 * untouched.  On success keep the restart-only settings of the old config,
 * apply the log level (config level raised by `verbose`) and trace mask,
 * log "reloaded configuration: <changes>", run the hooks, free the old
 * config and store the new one in `*cur`; return 0.
 */
int	conf_reload(struct conf **cur, int verbose);
/*
 * The same, with the messages for the caller (POST /v1/reload): on -1 the
 * errors ("FILE:LINE: ...") in errs; on 0 the changed settings and those
 * kept until a restart.  The lists start empty; caller frees them with
 * conf_msgs_free().
 */
int	conf_reload_report(struct conf **cur, int verbose, struct conf_msgs *errs,
	    struct conf_msgs *changed, struct conf_msgs *restart);
/* Apply the log settings of `conf` plus -v count `verbose`. */
void	conf_log_apply(const struct conf *, int verbose);

#endif
