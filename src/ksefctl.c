/* ksefctl.c: the command-line client of ksefd: one table of commands over its HTTP API. */
#include "config.h"

#include <sys/ioctl.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <ini.h>
#include <jansson.h>

#include "http_sync.h"
#include "log.h"
#include "record.h"
#include "util.h"

#define CTL_CONF_DEFAULT	SYSCONFDIR "/ksefd/ksefd.conf"
#define CTL_SOCKET_DEFAULT	"/run/ksefd/ksefd.sock"
#define CTL_MAX_FILE		(64 * 1024 * 1024)	/* larger files are not sent */
#define CTL_BAR_INTERVAL_MS	100	/* progress bar: at most ~10 redraws a second */
#define CTL_SHOW_PROBLEMS	5	/* problems listed per refused file */
#define CTL_ID_LEN		64	/* an invoice id: 64 hex digits */
#define CTL_ID_SHORT		16	/* as printed in tables and logs */
#define CTL_AUDIT_PAGE		1000	/* audit events per request */
#define CTL_AUDIT_WAIT		"25"	/* seconds a follow request waits */

/* Exit statuses, documented in the help text. */
enum {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAIL = 1,
	CTL_EXIT_USAGE = 2,
	CTL_EXIT_UNREACHABLE = 3,
};

struct ctl {
	int		 json;		/* -j: JSON output */
	const char	*socket_path;	/* where ksefd listens ... */
	const char	*url;		/* ... or its loopback TCP URL */
	const char	*target;	/* either, for messages */
	struct http_sync *hs;
};

#define CTL_API		0x1	/* the command talks to ksefd */

struct ctl_cmd {
	const char	*name;
	const char	*args;		/* synopsis after the name */
	const char	*summary;	/* one line for the command list */
	const char	*help;		/* the full description */
	int		 flags;
	/* argv[0] is the command word, as for main() */
	int		(*exec)(struct ctl *, const struct ctl_cmd *, int, char **);
};

static int	ctl_cmd_help(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_list(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_show(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_submit(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_upo(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_retry(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_status(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_hold(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_reload(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_reconcile(struct ctl *, const struct ctl_cmd *, int, char **);
static int	ctl_cmd_audit(struct ctl *, const struct ctl_cmd *, int, char **);

/* Every command; a new one is one more entry here and its function. */
static const struct ctl_cmd ctl_cmds[] = {
	{ "submit", "FILE|DIR...",
	  "submit invoices and report what ksefd did with each",
"Send each FILE, and every *.xml file directly inside each DIR (not\n"
"recursive, hidden files skipped, in name order), to ksefd, one after\n"
"the other.  Each file gets one outcome:\n"
"  created    stored as a new invoice; it will be sent to KSeF\n"
"  exists     exactly these bytes were received before (nothing changes)\n"
"  conflict   an invoice with the same seller NIP, type and number but\n"
"             other content exists; change an accepted invoice only by a\n"
"             correcting invoice with its own number\n"
"  refused    the invoice is invalid; the first problems are shown as\n"
"             `RULE LINE:COLUMN MESSAGE' (rules are listed in doc/rules.md)\n"
"  error      the file could not be read or ksefd could not store it\n"
"When standard error is a terminal a progress bar shows the count, the\n"
"rate and the time left, and only problems are printed; otherwise there\n"
"is one line per file, `NAME: created ID', `NAME: exists ID',\n"
"`NAME: conflict ID: ...', `NAME: refused: RULE LINE:COL MESSAGE' or\n"
"`NAME: error: ...', plus `NAME: warning: ...' lines for accepted\n"
"invoices with warnings.  The last line sums up: `N created, N existing,\n"
"N conflicts, N refused' (and `, N errors').  With -j each file gives one\n"
"JSON object (ksefd's answer with \"file\", \"http_status\" and \"result\"\n"
"added), followed by {\"summary\": {...}}.\n"
"Exit status 0 when every file was created or already existed, 1 when\n"
"any was refused, conflicted or failed, 3 when ksefd could not be\n"
"reached (the files after that one are not sent).",
	  CTL_API, ctl_cmd_submit },
	{ "show", "ID",
	  "show one invoice",
"Show the invoice with this id (64 hex digits, as printed by submit and\n"
"in ksefd's log) as `key: value' lines: state, seller NIP, form, type,\n"
"number, issue date, SHA-256 and size of the XML, when and how it was\n"
"received, the KSeF number and UPO once known, attempts, hold, the last\n"
"error and the invoices it supersedes or is superseded by.  With -j the\n"
"JSON answer is printed as it came.  An unknown id exits with status 1.",
	  CTL_API, ctl_cmd_show },
	{ "list", "[--state STATE] [--nip NIP] [--limit N] [--after ID] [--all]",
	  "list invoices",
"List invoices in the order ksefd received them, as a table: ID (the first\n"
"16 hex digits), STATE, NIP (seller), KIND, NUMBER, ISSUED, KSEF NUMBER.\n"
"  --state STATE  only invoices in this state: QUEUED, SENDING, SUBMITTED,\n"
"                 ACCEPTED, DONE, REJECTED or FAILED (any case)\n"
"  --nip NIP      only invoices of this seller NIP\n"
"  --limit N      invoices per page, 1 to 1000 (ksefd's default: 100)\n"
"  --after ID     start after this invoice (its id: 64 hex digits)\n"
"  --all          follow the pages to the end; without it only the first\n"
"                 page is shown and a note on standard error says so\n"
"                 when more invoices follow\n"
"With -j every invoice is one JSON object on its own line.",
	  CTL_API, ctl_cmd_list },
	{ "upo", "ID [-o FILE]",
	  "print or save the UPO of an invoice",
"Write the UPO (KSeF's official receipt, XML) of the invoice with this id\n"
"to standard output, or to FILE with -o (written whole, then renamed into\n"
"place).  An invoice without a UPO yet (not DONE) exits with status 1 and\n"
"says which state it is in.",
	  CTL_API, ctl_cmd_upo },
	{ "retry", "ID | --state FAILED",
	  "send a FAILED invoice (or every FAILED one) again",
"Put the FAILED invoice with this id back into the queue: its attempts\n"
"start again from zero and its retry.max_age counts from now.  A REJECTED\n"
"invoice cannot be retried: KSeF refused its content, so submit a\n"
"corrected invoice instead.  Exit status 1 when the invoice is not FAILED.\n"
"With --state FAILED every FAILED invoice is retried, one line each, and\n"
"a last line `N retried, N not retried'; exit status 1 if any was not.",
	  CTL_API, ctl_cmd_retry },
	{ "hold", "ID",
	  "keep an invoice from being sent",
"Put the invoice with this id on hold: while held it is not sent to KSeF\n"
"(an invoice already sent is still followed to its end).  The hold is\n"
"stored and written to the audit trail.  Prints `ID: STATE held'.\n"
"Exit status 1 when the invoice is unknown or already finished (DONE,\n"
"REJECTED, FAILED).",
	  CTL_API, ctl_cmd_hold },
	{ "release", "ID",
	  "let a held invoice be sent",
"Release the invoice with this id from its hold: it goes back into the\n"
"send queue.  Prints `ID: STATE released'.  Exit status 1 when the\n"
"invoice is unknown or already finished.",
	  CTL_API, ctl_cmd_hold },
	{ "reload", "",
	  "reload ksefd's configuration",
"Make ksefd read its configuration file again, exactly as on SIGHUP, and\n"
"print the result: the settings that changed (`changed: ...'), those that\n"
"keep their old value until a restart (`needs restart: ...'), or, when\n"
"the file has errors, each error as `FILE:LINE: message' on standard\n"
"error; ksefd then keeps its old settings.  With -j the JSON answer is\n"
"printed.  Exit status 1 when the file has errors.",
	  CTL_API, ctl_cmd_reload },
	{ "reconcile", "[--since DATE] | --last",
	  "check the store against KSeF, or show the last check",
"Start a reconciliation run in ksefd: invoices stuck in SUBMITTED, SENDING\n"
"or ACCEPTED longer than reconcile.stuck_after and QUEUED ones past\n"
"retry.max_age are looked at again; KSeF's list of the invoices each\n"
"context sold is compared with the store (orphans: in KSeF only; missing:\n"
"accepted here, not listed by KSeF; mismatches: other KSeF number or\n"
"hash).  Findings go to the log, the audit trail and the alerts.\n"
"  --since DATE  query KSeF from DATE (YYYY-MM-DD or\n"
"                YYYY-MM-DDTHH:MM:SSZ, UTC) instead of the last\n"
"                reconciled point\n"
"  --last        print the summary of the last finished run: when, how\n"
"                long, the count of each finding and the windows queried\n"
"With -j the JSON answer is printed.  Exit status 1 when a run is under\n"
"way already, or (--last) when none has finished yet.",
	  CTL_API, ctl_cmd_reconcile },
	{ "audit", "[--since SEQ|TIME] [--id ID] [--follow]",
	  "print the audit trail as JSON lines",
"Print audit events, one JSON object per line: seq, time, time_ms,\n"
"invoice, from, to, detail.\n"
"  --since SEQ|TIME  start at this sequence number, or at this UTC time\n"
"                    (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[.mmm]Z)\n"
"  --id ID           only the events of this invoice (64 hex digits)\n"
"  --follow          after the existing events keep waiting for new ones\n"
"                    and print them as they happen, until interrupted\n",
	  CTL_API, ctl_cmd_audit },
	{ "status", "",
	  "show the pipeline's state per context",
"First the KSeF requests in flight and KSeF's availability as Latarnia\n"
"reports it (`, sending paused' during an outage).  Then for each KSeF\n"
"context (seller NIP): the circuit breaker (closed, open,\n"
"half-open), open sessions, sends in flight and the seconds until the\n"
"access token expires; the invoices per state with the age of the oldest\n"
"unfinished one in each state (h:mm:ss); and for each endpoint group the\n"
"requests that may still start in the current second, minute and hour\n"
"window of the limiter (`-' when not limited), with the time left of a\n"
"429 pause.  Then the last reconciliation, when one has run.  With -j\n"
"the JSON answer of GET /v1/status is printed as it came.",
	  CTL_API, ctl_cmd_status },
	{ "help", "[COMMAND]",
	  "describe all commands, or one",
"Without COMMAND print the full help; with one, describe that command.",
	  0, ctl_cmd_help },
};

/* The full help: options, every command of the table, environment, exit statuses. */
static void
ctl_usage_print(FILE *fp)
{
	size_t i;

	fprintf(fp,
"usage: ksefctl [-j] [-s SOCKET | -u URL -t TOKENFILE] [-f CONFIG] COMMAND [ARGS]\n"
"\n"
"ksefctl is the command-line client of ksefd, the daemon that submits\n"
"invoices to KSeF exactly once and keeps their UPO.  It speaks only\n"
"ksefd's HTTP API, over its Unix socket or its loopback TCP address.\n"
"\n"
"Options (before COMMAND):\n"
"  -j            JSON output: one object per line, for programs\n"
"  -s SOCKET     ksefd's API socket.  Without -s: $KSEFD_SOCKET, else\n"
"                [api] socket of the configuration file, else\n"
"                " CTL_SOCKET_DEFAULT "\n"
"  -u URL        talk to ksefd's TCP listener (api.listen) instead, e.g.\n"
"                http://127.0.0.1:8450; only loopback addresses\n"
"  -t TOKENFILE  the bearer token for -u (api.token_file); the file must\n"
"                not be readable by group or others.  Default:\n"
"                $KSEFD_TOKEN_FILE\n"
"  -f CONFIG     the configuration file to take [api] socket from\n"
"                (default " CTL_CONF_DEFAULT "); no other\n"
"                setting and no secret is read from it\n"
"  -V            print the version and exit\n"
"  -h, --help    print this help and exit\n"
"\n"
"Commands (any unambiguous prefix works; `ksefctl help COMMAND' or\n"
"`ksefctl COMMAND --help' describes one):\n");
	for (i = 0; i < nitems(ctl_cmds); i++)
		fprintf(fp, "  %-7s %s\n          %s\n", ctl_cmds[i].name,
		    ctl_cmds[i].args, ctl_cmds[i].summary);
	fprintf(fp, "\n");
	for (i = 0; i < nitems(ctl_cmds); i++) {
		fprintf(fp, "ksefctl %s %s\n", ctl_cmds[i].name, ctl_cmds[i].args);
		fprintf(fp, "%s\n\n", ctl_cmds[i].help);
	}
	fprintf(fp,
"Environment:\n"
"  KSEFD_SOCKET      the API socket, when -s is not given\n"
"  KSEFD_TOKEN_FILE  the bearer token file, when -u is given without -t\n"
"\n"
"Files:\n"
"  " CTL_CONF_DEFAULT "\n"
"                    ksefd's configuration ([api] socket only)\n"
"  " CTL_SOCKET_DEFAULT "\n"
"                    the default API socket\n"
"\n"
"Exit status:\n"
"  0  success (submit: every file created or already there)\n"
"  1  the command failed: an invoice refused or in conflict, an unknown\n"
"     id, an error answer from ksefd (its message is printed)\n"
"  2  bad command line, configuration or token file\n"
"  3  ksefd could not be reached (`cannot reach ksefd at ...')\n"
"\n"
"Examples:\n"
"  ksefctl submit /srv/erp/out/                 every *.xml there\n"
"  ksefctl list --state REJECTED --all\n"
"  ksefctl -j show 3f1c...e9 | jq .ksef_number\n");
}

/* The help of one command, on stdout. */
static void
ctl_cmd_describe(const struct ctl_cmd *cmd)
{
	printf("usage: ksefctl %s %s\n\n%s\n", cmd->name, cmd->args, cmd->help);
}

/* Print "usage: ..." for one command to stderr and return the usage status. */
static int
ctl_usage_cmd(const struct ctl_cmd *cmd)
{
	fprintf(stderr, "usage: ksefctl %s %s\n", cmd->name, cmd->args);
	return CTL_EXIT_USAGE;
}

/* Write untrusted text to a terminal or file with control bytes made visible. */
static void
ctl_put_safe(FILE *fp, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f)
			fputc('?', fp);
		else
			fputc(c, fp);
	}
}

/* Columns a UTF-8 string takes (one per code point). */
static size_t
ctl_width(const char *s)
{
	size_t w = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* A string member, or NULL when missing or not a string. */
static const char *
ctl_jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* Does s hold exactly CTL_ID_LEN hex digits? */
static int
ctl_id_valid(const char *s)
{
	return strlen(s) == CTL_ID_LEN &&
	    strspn(s, "0123456789abcdefABCDEF") == CTL_ID_LEN;
}

/* Send one request.  -1 (with the message printed) when ksefd cannot be reached. */
static int
ctl_request(struct ctl *ctl, const char *method, const char *path,
    const char *ctype, const void *body, size_t len, struct http_sync_resp *resp)
{
	char err[512];

	if (http_sync_request(ctl->hs, method, path, ctype, body, len, resp,
	    err, sizeof(err)) == 0)
		return 0;
	fprintf(stderr, "ksefctl: cannot reach ksefd at %s: %s\n", ctl->target,
	    err);
	return -1;
}

/* The answer's JSON, or NULL when it is not JSON.  New reference. */
static json_t *
ctl_resp_json(const struct http_sync_resp *resp)
{
	const char *data = resp->body.data ? (const char *)resp->body.data : "";

	return json_loadb(data, resp->body.len, 0, NULL);
}

/* Print an error answer of ksefd: its message, else what there is. */
static void
ctl_server_error(const struct http_sync_resp *resp, const json_t *j)
{
	const char *msg = ctl_jstr(j, "message");

	if (msg == NULL)
		msg = ctl_jstr(j, "error");
	fprintf(stderr, "ksefctl: ksefd answered HTTP %ld: ", resp->status);
	if (msg != NULL)
		ctl_put_safe(stderr, msg);
	else if (resp->body.len > 0)
		fputs(log_escape(resp->body.data, resp->body.len, 200), stderr);
	else
		fputs("(no message)", stderr);
	fputc('\n', stderr);
}

/* ksefd's JSON answer as it is, ending in a newline (--json). */
static void
ctl_put_body(const struct http_sync_resp *resp)
{
	fwrite(resp->body.data, 1, resp->body.len, stdout);
	if (resp->body.len == 0 || resp->body.data[resp->body.len - 1] != '\n')
		putchar('\n');
}

/*
 * METHOD /v1/invoices/ID[/SUFFIX] for cmd, the id checked first (an empty
 * JSON body for a POST).  CTL_EXIT_OK with *resp to free, or the exit
 * status.
 */
static int
ctl_invoice_request(struct ctl *ctl, const struct ctl_cmd *cmd,
    const char *id, const char *method, const char *suffix,
    struct http_sync_resp *resp)
{
	char *path;
	int post = strcmp(method, "POST") == 0, rc;

	if (!ctl_id_valid(id)) {
		fprintf(stderr, "ksefctl: %s: `%s' is not an invoice id (64 hex "
		    "digits)\n", cmd->name, log_escape(id, strlen(id), 80));
		return CTL_EXIT_USAGE;
	}
	path = xasprintf("/v1/invoices/%s%s%s", id, suffix ? "/" : "",
	    suffix ? suffix : "");
	rc = ctl_request(ctl, method, path, post ? "application/json" : NULL,
	    post ? "" : NULL, 0, resp);
	free(path);
	return rc == -1 ? CTL_EXIT_UNREACHABLE : CTL_EXIT_OK;
}

/* One file named for submit; err is set when it could not even be looked at. */
struct ctl_file {
	char		*path;
	int		 err;
};

struct ctl_files {
	struct ctl_file	*v;
	size_t		 n, cap;
};

static void
ctl_files_add(struct ctl_files *f, char *path, int err)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 16;
		f->v = xrealloc(f->v, f->cap * sizeof(*f->v));
	}
	f->v[f->n].path = path;
	f->v[f->n].err = err;
	f->n++;
}

static void
ctl_files_free(struct ctl_files *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		free(f->v[i].path);
	free(f->v);
}

static int
ctl_file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ctl_file *)a)->path,
	    ((const struct ctl_file *)b)->path);
}

/* Add the *.xml regular files directly inside dir, in name order; -1 with errno. */
static int
ctl_files_add_dir(struct ctl_files *f, const char *dir)
{
	struct dirent *de;
	struct stat st;
	size_t first = f->n, len, dlen = strlen(dir);
	DIR *d;
	char *path;

	if ((d = opendir(dir)) == NULL)
		return -1;
	while (dlen > 1 && dir[dlen - 1] == '/')
		dlen--;
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len < 5 ||
		    strcmp(de->d_name + len - 4, ".xml") != 0)
			continue;
		path = xasprintf("%.*s%s%s", (int)dlen, dir,
		    dir[dlen - 1] == '/' ? "" : "/", de->d_name);
		if (stat(path, &st) == -1 || !S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		ctl_files_add(f, path, 0);
	}
	closedir(d);
	qsort(f->v + first, f->n - first, sizeof(*f->v), ctl_file_cmp);
	return 0;
}

/* The one-line progress bar of submit on a terminal. */
struct ctl_bar {
	int		 on;
	int		 shown;		/* the bar is on the terminal line now */
	size_t		 total, done;
	int64_t		 start_ms, drawn_ms;
};

/* "m:ss" or "h:mm:ss" of a number of seconds. */
static void
ctl_fmt_secs(double secs, char *out, size_t len)
{
	long s = secs < 0 ? 0 : (long)(secs + 0.5);

	if (s >= 3600)
		snprintf(out, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60,
		    s % 60);
	else
		snprintf(out, len, "%ld:%02ld", s / 60, s % 60);
}

/* Redraw the bar, unless it was drawn less than CTL_BAR_INTERVAL_MS ago. */
static void
ctl_bar_draw(struct ctl_bar *b, int force)
{
	struct winsize ws;
	int64_t now = time_mono_ms(), el;
	double rate;
	char text[128], t[32];
	int cols = 80, width, fill, i;

	if (!b->on || (!force && b->shown &&
	    now - b->drawn_ms < CTL_BAR_INTERVAL_MS))
		return;
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		cols = ws.ws_col;
	el = now - b->start_ms;
	rate = el > 0 ? (double)b->done * 1000.0 / (double)el : 0.0;
	if (b->done == b->total)
		ctl_fmt_secs((double)el / 1000.0, t, sizeof(t));
	else if (rate > 0)
		ctl_fmt_secs((double)(b->total - b->done) / rate, t, sizeof(t));
	else
		snprintf(t, sizeof(t), "-:--");
	snprintf(text, sizeof(text), " %zu/%zu %.1f/s %s %s", b->done, b->total,
	    rate, b->done == b->total ? "in" : "ETA", t);
	width = cols - 3 - (int)strlen(text);
	fputc('\r', stderr);
	if (width >= 10) {
		fill = b->total ? (int)((double)width * (double)b->done /
		    (double)b->total) : width;
		fputc('[', stderr);
		for (i = 0; i < width; i++)
			fputc(i < fill ? '#' : '.', stderr);
		fputc(']', stderr);
	}
	fputs(text, stderr);
	fputs("\033[K", stderr);
	fflush(stderr);
	b->shown = 1;
	b->drawn_ms = now;
}

/* Take the bar off the line so that other output can be written there. */
static void
ctl_bar_clear(struct ctl_bar *b)
{
	if (b->shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		b->shown = 0;
	}
}

enum ctl_outcome {
	CTL_CREATED = 0,
	CTL_EXISTS,
	CTL_CONFLICT,
	CTL_REFUSED,
	CTL_ERROR,
	CTL_NOUTCOMES,
};

static const char *const ctl_outcome_names[CTL_NOUTCOMES] = {
	"created", "exists", "conflict", "refused", "error",
};

struct ctl_submit {
	struct ctl	*ctl;
	struct ctl_bar	 bar;
	int		 clear;		/* stdout shares the bar's terminal */
	int		 quiet_ok;	/* created/exists lines and warnings are left out */
	size_t		 count[CTL_NOUTCOMES];
	size_t		 warned;	/* accepted with warnings */
};

/* Start a line of submit output on stdout: "NAME: ". */
static void
ctl_submit_line(struct ctl_submit *s, const char *name)
{
	if (s->clear)
		ctl_bar_clear(&s->bar);
	ctl_put_safe(stdout, name);
	fputs(": ", stdout);
}

/* One problem as "LABEL: RULE LINE:COL MESSAGE (PATH)". */
static void
ctl_problem_print(struct ctl_submit *s, const char *name, const char *label,
    const json_t *p)
{
	json_int_t line = json_integer_value(json_object_get(p, "line"));
	json_int_t col = json_integer_value(json_object_get(p, "column"));
	const char *rule = ctl_jstr(p, "rule"), *msg = ctl_jstr(p, "message");
	const char *path = ctl_jstr(p, "path");

	ctl_submit_line(s, name);
	printf("%s: ", label);
	ctl_put_safe(stdout, rule ? rule : "?");
	if (line > 0 && col > 0)
		printf(" %lld:%lld ", (long long)line, (long long)col);
	else if (line > 0)
		printf(" %lld ", (long long)line);
	else
		fputs(" - ", stdout);
	ctl_put_safe(stdout, msg ? msg : "");
	if (path != NULL) {
		fputs(" (", stdout);
		ctl_put_safe(stdout, path);
		fputc(')', stdout);
	}
	fputc('\n', stdout);
}

/* Print the problems of one severity, at most `max` of them (0: all). */
static void
ctl_problems_print(struct ctl_submit *s, const char *name, const char *label,
    const json_t *problems, const char *severity, size_t max)
{
	const json_t *p;
	size_t i, shown = 0, more = 0;
	const char *sev;

	json_array_foreach(problems, i, p) {
		sev = ctl_jstr(p, "severity");
		if (sev != NULL && strcmp(sev, severity) != 0)
			continue;
		if (max != 0 && shown == max) {
			more++;
			continue;
		}
		ctl_problem_print(s, name, label, p);
		shown++;
	}
	if (more > 0) {
		ctl_submit_line(s, name);
		printf("%s: ... and %zu more (ksefctl -j submit lists all)\n",
		    label, more);
	}
}

/* The text report of one file. */
static void
ctl_submit_text(struct ctl_submit *s, const char *name, enum ctl_outcome o,
    long status, const json_t *j, const char *errmsg)
{
	const json_t *inv = json_object_get(j, "invoice");
	const char *id = ctl_jstr(inv, "id"), *msg = ctl_jstr(j, "message");

	switch (o) {
	case CTL_CREATED:
	case CTL_EXISTS:
		if (json_array_size(json_object_get(j, "warnings")) > 0)
			s->warned++;
		if (s->quiet_ok)
			break;
		ctl_submit_line(s, name);
		printf("%s %s\n", ctl_outcome_names[o], id ? id : "?");
		ctl_problems_print(s, name, "warning",
		    json_object_get(j, "warnings"), "warning", 0);
		break;
	case CTL_CONFLICT:
		ctl_submit_line(s, name);
		printf("conflict %s", id ? id : "?");
		if (msg != NULL) {
			fputs(": ", stdout);
			ctl_put_safe(stdout, msg);
		}
		fputc('\n', stdout);
		break;
	case CTL_REFUSED:
		if (json_array_size(json_object_get(j, "problems")) > 0) {
			ctl_problems_print(s, name, "refused",
			    json_object_get(j, "problems"), "error",
			    CTL_SHOW_PROBLEMS);
			break;
		}
		/* FALLTHROUGH */
	default:
		ctl_submit_line(s, name);
		printf("%s: ", ctl_outcome_names[o]);
		if (status != 0)
			printf("HTTP %ld: ", status);
		ctl_put_safe(stdout, errmsg ? errmsg : msg ? msg :
		    "(no message)");
		fputc('\n', stdout);
		break;
	}
	fflush(stdout);
}

/* The JSON line of one file: ksefd's answer with file, http_status, result. */
static void
ctl_submit_json(struct ctl_submit *s, const char *name, enum ctl_outcome o,
    long status, json_t *j, const char *errmsg)
{
	json_t *out = json_is_object(j) ? json_incref(j) : json_object();
	char *line;

	json_object_set_new(out, "file", json_string(name));
	json_object_set_new(out, "http_status", json_integer(status));
	json_object_set_new(out, "result", json_string(ctl_outcome_names[o]));
	if (errmsg != NULL)
		json_object_set_new(out, "message", json_string(errmsg));
	line = json_dumps(out, JSON_COMPACT);
	if (s->clear)
		ctl_bar_clear(&s->bar);
	puts(line ? line : "{}");
	fflush(stdout);
	free(line);
	json_decref(out);
}

/* What an HTTP status of POST /v1/invoices means for the file. */
static enum ctl_outcome
ctl_submit_outcome(long status)
{
	switch (status) {
	case 201:
		return CTL_CREATED;
	case 200:
		return CTL_EXISTS;
	case 409:
		return CTL_CONFLICT;
	case 422:
		return CTL_REFUSED;
	default:
		return CTL_ERROR;
	}
}

/*
 * Submit one file and report it.  0 to go on, -1 when ksefd could not be
 * reached, 1 when the rest is pointless (the token was refused).
 */
static int
ctl_submit_one(struct ctl_submit *s, const struct ctl_file *f)
{
	struct http_sync_resp resp;
	enum ctl_outcome o;
	unsigned char *data;
	const char *errmsg = NULL;
	json_t *j = NULL;
	size_t len;
	long status = 0;
	int err = f->err, stop = 0;

	if (err == 0) {
		if ((data = file_read(f->path, CTL_MAX_FILE, &len)) == NULL)
			err = errno;
		else {
			if (ctl_request(s->ctl, "POST", "/v1/invoices",
			    "application/xml", data, len, &resp) == -1) {
				free(data);
				return -1;
			}
			free(data);
			status = resp.status;
			j = ctl_resp_json(&resp);
			if (!json_is_object(j))
				errmsg = "ksefd's answer is not a JSON object";
			http_sync_resp_free(&resp);
		}
	}
	if (err == EFBIG)
		errmsg = "larger than 64 MiB, not sent";
	else if (err != 0)
		errmsg = strerror(err);
	o = errmsg != NULL ? CTL_ERROR : ctl_submit_outcome(status);
	if (status == 401) {
		errmsg = "ksefd refused the bearer token (-t, KSEFD_TOKEN_FILE); "
		    "the remaining files are not sent";
		stop = 1;
	}
	s->count[o]++;
	s->bar.done++;
	if (s->ctl->json)
		ctl_submit_json(s, f->path, o, status, j, errmsg);
	else
		ctl_submit_text(s, f->path, o, status, j, errmsg);
	json_decref(j);
	ctl_bar_draw(&s->bar, 0);
	return stop;
}

/* The closing line (or object) of submit. */
static void
ctl_submit_summary(struct ctl_submit *s, size_t nfiles)
{
	json_t *o;
	char *line;

	if (s->bar.on) {
		ctl_bar_draw(&s->bar, 1);
		fputc('\n', stderr);
		s->bar.shown = 0;
	}
	if (s->ctl->json) {
		o = json_pack("{s:{s:I, s:I, s:I, s:I, s:I, s:I}}", "summary",
		    "files", (json_int_t)nfiles,
		    "created", (json_int_t)s->count[CTL_CREATED],
		    "existing", (json_int_t)s->count[CTL_EXISTS],
		    "conflicts", (json_int_t)s->count[CTL_CONFLICT],
		    "refused", (json_int_t)s->count[CTL_REFUSED],
		    "errors", (json_int_t)s->count[CTL_ERROR]);
		line = json_dumps(o, JSON_COMPACT);
		puts(line ? line : "{}");
		free(line);
		json_decref(o);
		return;
	}
	printf("%zu created, %zu existing, %zu conflict%s, %zu refused",
	    s->count[CTL_CREATED], s->count[CTL_EXISTS],
	    s->count[CTL_CONFLICT], s->count[CTL_CONFLICT] == 1 ? "" : "s",
	    s->count[CTL_REFUSED]);
	if (s->count[CTL_ERROR] > 0)
		printf(", %zu error%s", s->count[CTL_ERROR],
		    s->count[CTL_ERROR] == 1 ? "" : "s");
	putchar('\n');
	if (s->quiet_ok && s->warned > 0)
		fprintf(stderr, "ksefctl: %zu invoice%s accepted with warnings; "
		    "`ksefctl submit ... | cat' or -j lists them\n", s->warned,
		    s->warned == 1 ? " was" : "s were");
}

/* submit FILE|DIR...: POST each invoice, report each outcome and a summary. */
static int
ctl_cmd_submit(struct ctl *ctl, const struct ctl_cmd *cmd, int argc,
    char **argv)
{
	struct ctl_files files;
	struct ctl_submit s;
	struct stat st;
	size_t i;
	int r = 0, rc;

	if (argc < 2)
		return ctl_usage_cmd(cmd);
	memset(&files, 0, sizeof(files));
	for (i = 1; i < (size_t)argc; i++) {
		if (stat(argv[i], &st) == -1)
			ctl_files_add(&files, xstrdup(argv[i]), errno);
		else if (S_ISDIR(st.st_mode)) {
			if (ctl_files_add_dir(&files, argv[i]) == -1)
				ctl_files_add(&files, xstrdup(argv[i]), errno);
		} else
			ctl_files_add(&files, xstrdup(argv[i]), 0);
	}
	memset(&s, 0, sizeof(s));
	s.ctl = ctl;
	s.bar.on = isatty(STDERR_FILENO) && files.n > 0;
	s.bar.total = files.n;
	s.bar.start_ms = time_mono_ms();
	s.clear = s.bar.on && isatty(STDOUT_FILENO);
	s.quiet_ok = s.clear && !ctl->json;
	ctl_bar_draw(&s.bar, 1);
	for (i = 0; i < files.n; i++)
		if ((r = ctl_submit_one(&s, &files.v[i])) != 0)
			break;
	ctl_submit_summary(&s, files.n);
	if (r == -1)
		rc = CTL_EXIT_UNREACHABLE;
	else if (r != 0 || s.count[CTL_CONFLICT] || s.count[CTL_REFUSED] ||
	    s.count[CTL_ERROR])
		rc = CTL_EXIT_FAIL;
	else
		rc = CTL_EXIT_OK;
	if (files.n == 0)
		fprintf(stderr, "ksefctl: no *.xml files in %s%s\n", argv[1],
		    argc > 2 ? " ..." : "");
	ctl_files_free(&files);
	return rc;
}

/* Flatten one JSON object into (key, text) rows; nested objects as "a.b". */
static void
ctl_show_collect(const json_t *o, const char *prefix, json_t *rows)
{
	const char *k;
	json_t *v;
	char *key, *text;

	json_object_foreach((json_t *)o, k, v) {
		key = prefix ? xasprintf("%s.%s", prefix, k) : xstrdup(k);
		if (json_is_object(v)) {
			ctl_show_collect(v, key, rows);
			free(key);
			continue;
		}
		if (json_is_string(v))
			text = xstrdup(json_string_value(v));
		else if (json_is_null(v))
			text = xstrdup("-");
		else if (json_is_boolean(v))
			text = xstrdup(json_is_true(v) ? "yes" : "no");
		else if ((text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
			text = xstrdup("?");
		json_array_append_new(rows, json_pack("[s,s]", key, text));
		free(key);
		free(text);
	}
}

/* The readable view of one invoice: aligned "key: value" lines. */
static void
ctl_show_print(const json_t *inv)
{
	json_t *rows = json_array(), *r;
	size_t i, w = 0, kw;

	ctl_show_collect(inv, NULL, rows);
	json_array_foreach(rows, i, r)
		if ((kw = strlen(json_string_value(json_array_get(r, 0)))) > w)
			w = kw;
	json_array_foreach(rows, i, r) {
		kw = strlen(json_string_value(json_array_get(r, 0)));
		ctl_put_safe(stdout, json_string_value(json_array_get(r, 0)));
		printf(":%*s", (int)(w - kw + 1), "");
		ctl_put_safe(stdout, json_string_value(json_array_get(r, 1)));
		putchar('\n');
	}
	json_decref(rows);
}

/* show ID: one record, readable or as JSON. */
static int
ctl_cmd_show(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	struct http_sync_resp resp;
	json_t *j;
	int rc;

	if (argc != 2)
		return ctl_usage_cmd(cmd);
	if ((rc = ctl_invoice_request(ctl, cmd, argv[1], "GET", NULL,
	    &resp)) != CTL_EXIT_OK)
		return rc;
	j = ctl_resp_json(&resp);
	if (resp.status == 404) {
		fprintf(stderr, "ksefctl: no invoice with id %s\n", argv[1]);
		rc = CTL_EXIT_FAIL;
	} else if (resp.status != 200 || !json_is_object(j)) {
		ctl_server_error(&resp, j);
		rc = CTL_EXIT_FAIL;
	} else if (ctl->json)
		ctl_put_body(&resp);
	else
		ctl_show_print(j);
	json_decref(j);
	http_sync_resp_free(&resp);
	return rc;
}

/* upo ID [-o FILE] */
static int
ctl_cmd_upo(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	struct http_sync_resp resp;
	const char *out = NULL;
	json_t *j;
	int rc;

	if (argc == 4 && strcmp(argv[2], "-o") == 0)
		out = argv[3];
	else if (argc != 2)
		return ctl_usage_cmd(cmd);
	if ((rc = ctl_invoice_request(ctl, cmd, argv[1], "GET", "upo",
	    &resp)) != CTL_EXIT_OK)
		return rc;
	if (resp.status != 200) {
		j = ctl_resp_json(&resp);
		ctl_server_error(&resp, j);
		json_decref(j);
		rc = CTL_EXIT_FAIL;
	} else if (out != NULL) {
		if (file_write_atomic(out, resp.body.data, resp.body.len, 0644) == -1) {
			fprintf(stderr, "ksefctl: cannot write %s: %s\n", out,
			    strerror(errno));
			rc = CTL_EXIT_FAIL;
		}
	} else
		fwrite(resp.body.data, 1, resp.body.len, stdout);
	http_sync_resp_free(&resp);
	return rc;
}

/* POST /v1/invoices/ID/ACTION for retry, hold, release: print "ID: STATE[ done]". */
static int
ctl_invoice_action(struct ctl *ctl, const struct ctl_cmd *cmd, int argc,
    char **argv, const char *done)
{
	struct http_sync_resp resp;
	json_t *j;
	int rc;

	if (argc != 2)
		return ctl_usage_cmd(cmd);
	if ((rc = ctl_invoice_request(ctl, cmd, argv[1], "POST", cmd->name,
	    &resp)) != CTL_EXIT_OK)
		return rc;
	j = ctl_resp_json(&resp);
	if (resp.status != 200 || !json_is_object(j)) {
		ctl_server_error(&resp, j);
		rc = CTL_EXIT_FAIL;
	} else if (ctl->json)
		ctl_put_body(&resp);
	else
		printf("%s: %s%s\n", argv[1], ctl_jstr(j, "state") ?
		    ctl_jstr(j, "state") : "?", done);
	json_decref(j);
	http_sync_resp_free(&resp);
	return rc;
}

/* retry --state FAILED: collect every FAILED id first, then retry each. */
static int
ctl_retry_all(struct ctl *ctl, const struct ctl_cmd *cmd)
{
	struct http_sync_resp resp;
	json_t *ids = json_array(), *j, *inv;
	char after[CTL_ID_LEN + 1] = "", *path, *args[2];
	size_t i, ok = 0, bad = 0;
	int rc = CTL_EXIT_OK;

	for (;;) {
		path = xasprintf("/v1/invoices?state=FAILED&limit=1000%s%s",
		    after[0] ? "&after=" : "", after);
		if (ctl_request(ctl, "GET", path, NULL, NULL, 0, &resp) == -1) {
			free(path);
			json_decref(ids);
			return CTL_EXIT_UNREACHABLE;
		}
		free(path);
		j = ctl_resp_json(&resp);
		if (resp.status != 200 || !json_is_object(j)) {
			ctl_server_error(&resp, j);
			json_decref(j);
			http_sync_resp_free(&resp);
			json_decref(ids);
			return CTL_EXIT_FAIL;
		}
		json_array_foreach(json_object_get(j, "invoices"), i, inv)
			if (ctl_jstr(inv, "id") != NULL)
				json_array_append_new(ids,
				    json_string(ctl_jstr(inv, "id")));
		after[0] = '\0';
		if (ctl_jstr(j, "next") != NULL)
			snprintf(after, sizeof(after), "%s", ctl_jstr(j, "next"));
		json_decref(j);
		http_sync_resp_free(&resp);
		if (after[0] == '\0')
			break;
	}
	json_array_foreach(ids, i, inv) {
		args[0] = (char *)cmd->name;
		args[1] = (char *)json_string_value(inv);
		switch (ctl_invoice_action(ctl, cmd, 2, args, "")) {
		case CTL_EXIT_OK:
			ok++;
			break;
		case CTL_EXIT_UNREACHABLE:
			json_decref(ids);
			return CTL_EXIT_UNREACHABLE;
		default:
			bad++;
			break;
		}
	}
	json_decref(ids);
	if (!ctl->json)
		printf("%zu retried, %zu not retried\n", ok, bad);
	if (bad > 0)
		rc = CTL_EXIT_FAIL;
	return rc;
}

/* retry ID | retry --state FAILED */
static int
ctl_cmd_retry(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--state") == 0) {
		if (strcasecmp(argv[2], "FAILED") != 0) {
			fprintf(stderr, "ksefctl: retry: only FAILED invoices can "
			    "be retried (--state FAILED)\n");
			return CTL_EXIT_USAGE;
		}
		return ctl_retry_all(ctl, cmd);
	}
	return ctl_invoice_action(ctl, cmd, argc, argv, "");
}

/* hold ID, release ID */
static int
ctl_cmd_hold(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	return ctl_invoice_action(ctl, cmd, argc, argv,
	    strcmp(cmd->name, "hold") == 0 ? " held" : " released");
}

/* Print each string of array `key` of o as "PREFIX: string" on fp. */
static void
ctl_print_msgs(FILE *fp, const json_t *o, const char *key, const char *prefix)
{
	const json_t *a = json_object_get(o, key);
	size_t i;

	for (i = 0; i < json_array_size(a); i++) {
		const char *m = json_string_value(json_array_get(a, i));

		fprintf(fp, "%s: ", prefix);
		ctl_put_safe(fp, m ? m : "?");
		fputc('\n', fp);
	}
}

/* reload */
static int
ctl_cmd_reload(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	struct http_sync_resp resp;
	json_t *j;
	int rc = CTL_EXIT_OK;

	if (argc != 1)
		return ctl_usage_cmd(cmd);
	if (ctl_request(ctl, "POST", "/v1/reload", "application/json", "", 0,
	    &resp) == -1)
		return CTL_EXIT_UNREACHABLE;
	j = ctl_resp_json(&resp);
	if ((resp.status != 200 && resp.status != 422) || !json_is_object(j)) {
		ctl_server_error(&resp, j);
		rc = CTL_EXIT_FAIL;
	} else {
		if (resp.status != 200)
			rc = CTL_EXIT_FAIL;
		if (ctl->json) {
			fwrite(resp.body.data, 1, resp.body.len, stdout);
		} else if (rc == CTL_EXIT_OK) {
			printf("reloaded: %zu change%s\n",
			    json_array_size(json_object_get(j, "changed")),
			    json_array_size(json_object_get(j, "changed")) == 1 ?
			    "" : "s");
			ctl_print_msgs(stdout, j, "changed", "changed");
			ctl_print_msgs(stdout, j, "restart", "needs restart");
		} else {
			fputs("ksefctl: reload: the configuration has errors; "
			    "ksefd keeps its old settings\n", stderr);
			ctl_print_msgs(stderr, j, "errors", "ksefctl: reload");
		}
	}
	json_decref(j);
	http_sync_resp_free(&resp);
	return rc;
}

/* DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[Z], UTC) in ms; -1 if it is not one. */
static int
ctl_date_parse(const char *s, int64_t *out)
{
	char iso[32];
	size_t len = strlen(s);

	if (len == 10)
		snprintf(iso, sizeof(iso), "%sT00:00:00Z", s);
	else if (len == 19)
		snprintf(iso, sizeof(iso), "%sZ", s);
	else if (len == 20 && s[19] == 'Z')
		snprintf(iso, sizeof(iso), "%s", s);
	else
		return -1;
	if (time_parse_iso(iso, out) == -1 || *out < 0)
		return -1;
	return 0;
}

/* Print a reconciliation summary (GET /v1/reconcile/last) for people. */
static void
ctl_reconcile_print(const json_t *j)
{
	const json_t *counts = json_object_get(j, "counts");
	const json_t *w, *v;
	const char *k;
	size_t i;

	printf("started: ");
	ctl_put_safe(stdout, ctl_jstr(j, "started") ? ctl_jstr(j, "started") :
	    "?");
	printf("\nduration: %lld ms\n", (long long)json_integer_value(
	    json_object_get(j, "duration_ms")));
	json_object_foreach((json_t *)counts, k, v)
		printf("%s: %lld\n", k, (long long)json_integer_value(v));
	json_array_foreach(json_object_get(j, "windows"), i, w) {
		printf("window: ");
		ctl_put_safe(stdout, ctl_jstr(w, "nip") ? ctl_jstr(w, "nip") : "?");
		printf(" ");
		ctl_put_safe(stdout, ctl_jstr(w, "from") ? ctl_jstr(w, "from") : "?");
		printf(" .. ");
		ctl_put_safe(stdout, ctl_jstr(w, "to") ? ctl_jstr(w, "to") : "?");
		printf(", %lld page(s)", (long long)json_integer_value(
		    json_object_get(w, "pages")));
		if (ctl_jstr(w, "error") != NULL) {
			printf(", failed: ");
			ctl_put_safe(stdout, ctl_jstr(w, "error"));
		}
		printf("\n");
	}
}

/* reconcile [--since DATE] | --last */
static int
ctl_cmd_reconcile(struct ctl *ctl, const struct ctl_cmd *cmd, int argc,
    char **argv)
{
	struct http_sync_resp resp;
	int64_t since = 0;
	int i, last = 0, rc = CTL_EXIT_OK, ok;
	char path[64];
	json_t *j;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--last") == 0)
			last = 1;
		else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
			if (ctl_date_parse(argv[++i], &since) == -1) {
				fprintf(stderr, "ksefctl: reconcile: --since `%s': "
				    "not a date (YYYY-MM-DD or "
				    "YYYY-MM-DDTHH:MM:SSZ)\n", log_escape(argv[i],
				    strlen(argv[i]), 80));
				return CTL_EXIT_USAGE;
			}
		} else
			return ctl_usage_cmd(cmd);
	}
	if (last && since != 0)
		return ctl_usage_cmd(cmd);
	if (last)
		snprintf(path, sizeof(path), "/v1/reconcile/last");
	else if (since != 0)
		snprintf(path, sizeof(path), "/v1/reconcile?since=%lld",
		    (long long)since);
	else
		snprintf(path, sizeof(path), "/v1/reconcile");
	if (ctl_request(ctl, last ? "GET" : "POST", path, "application/json",
	    "", 0, &resp) == -1)
		return CTL_EXIT_UNREACHABLE;
	j = ctl_resp_json(&resp);
	ok = resp.status == (last ? 200 : 202);
	if (!json_is_object(j) || (!ok && resp.status != (last ? 404 : 409))) {
		ctl_server_error(&resp, j);
		rc = CTL_EXIT_FAIL;
	} else if (ctl->json) {
		fwrite(resp.body.data, 1, resp.body.len, stdout);
		rc = ok ? CTL_EXIT_OK : CTL_EXIT_FAIL;
	} else if (!ok) {
		fprintf(stderr, "ksefctl: reconcile: %s\n", last ?
		    "no reconciliation has finished yet" :
		    "a reconciliation is under way already");
		rc = CTL_EXIT_FAIL;
	} else if (last)
		ctl_reconcile_print(j);
	else
		printf("reconciliation started\n");
	json_decref(j);
	http_sync_resp_free(&resp);
	return rc;
}

/* The seq of the last JSON line in data, or -1. */
static long long
ctl_audit_last_seq(const char *data, size_t len)
{
	const char *p;
	json_t *j;
	long long seq;

	if (len < 2)
		return -1;
	for (p = data + len - 2; p > data && p[-1] != '\n'; p--)
		;
	if ((j = json_loadb(p, (size_t)(data + len - p), 0, NULL)) == NULL)
		return -1;
	seq = json_is_integer(json_object_get(j, "seq")) ?
	    (long long)json_integer_value(json_object_get(j, "seq")) : -1;
	json_decref(j);
	return seq;
}

/* audit [--since SEQ|TIME] [--id ID] [--follow] */
static int
ctl_cmd_audit(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "id", required_argument, NULL, 'i' },
		{ "follow", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	struct http_sync_resp resp;
	const char *id = NULL;
	char *since = NULL, *path;
	long long last;
	int ch, follow = 0, rc = CTL_EXIT_OK;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+s:i:f", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (*optarg == '\0' || strlen(optarg) > 40 ||
			    strspn(optarg, "0123456789-:.TZ") != strlen(optarg)) {
				fprintf(stderr, "ksefctl: audit: --since `%s' is "
				    "neither a sequence number nor a UTC time "
				    "YYYY-MM-DD[THH:MM:SS[.mmm]Z]\n",
				    log_escape(optarg, strlen(optarg), 80));
				return CTL_EXIT_USAGE;
			}
			free(since);
			since = xstrdup(optarg);
			break;
		case 'i':
			if (!ctl_id_valid(optarg)) {
				fprintf(stderr, "ksefctl: audit: --id `%s' is not "
				    "an invoice id (64 hex digits)\n",
				    log_escape(optarg, strlen(optarg), 80));
				free(since);
				return CTL_EXIT_USAGE;
			}
			id = optarg;
			break;
		case 'f':
			follow = 1;
			break;
		default:
			free(since);
			return ctl_usage_cmd(cmd);
		}
	}
	if (optind != argc) {
		free(since);
		return ctl_usage_cmd(cmd);
	}
	for (;;) {
		size_t lines = 0, i;

		path = xasprintf("/v1/audit?limit=%d%s%s%s%s%s", CTL_AUDIT_PAGE,
		    since ? "&since=" : "", since ? since : "",
		    id ? "&id=" : "", id ? id : "",
		    follow ? "&wait=" CTL_AUDIT_WAIT : "");
		if (ctl_request(ctl, "GET", path, NULL, NULL, 0, &resp) == -1) {
			free(path);
			rc = CTL_EXIT_UNREACHABLE;
			break;
		}
		free(path);
		if (resp.status != 200) {
			json_t *j = ctl_resp_json(&resp);

			ctl_server_error(&resp, j);
			json_decref(j);
			http_sync_resp_free(&resp);
			rc = CTL_EXIT_FAIL;
			break;
		}
		for (i = 0; i < resp.body.len; i++)
			lines += resp.body.data[i] == '\n';
		if (resp.body.len > 0)
			fwrite(resp.body.data, 1, resp.body.len, stdout);
		fflush(stdout);
		last = ctl_audit_last_seq((const char *)resp.body.data,
		    resp.body.len);
		http_sync_resp_free(&resp);
		if (last >= 0) {
			free(since);
			since = xasprintf("%lld", last + 1);
		}
		if (!follow && lines < CTL_AUDIT_PAGE)
			break;
	}
	free(since);
	return rc;
}

/* The columns of list, each a member of the invoice view. */
static const struct {
	const char	*title;
	const char	*key;
} ctl_list_cols[] = {
	{ "ID", "id" },
	{ "STATE", "state" },
	{ "NIP", "seller_nip" },
	{ "KIND", "kind" },
	{ "NUMBER", "number" },
	{ "ISSUED", "issue_date" },
	{ "KSEF NUMBER", "ksef_number" },
};

/* Print the collected invoices as a table with columns as wide as their widest cell. */
static void
ctl_list_table(const json_t *all)
{
	size_t w[nitems(ctl_list_cols)], c, i, n;
	char id[CTL_ID_SHORT + 1];
	const char *cell;
	const json_t *inv;

	for (c = 0; c < nitems(ctl_list_cols); c++)
		w[c] = strlen(ctl_list_cols[c].title);
	json_array_foreach(all, i, inv)
		for (c = 0; c < nitems(ctl_list_cols); c++) {
			cell = ctl_jstr(inv, ctl_list_cols[c].key);
			n = c == 0 ? CTL_ID_SHORT : cell ? ctl_width(cell) : 1;
			if (n > w[c])
				w[c] = n;
		}
	for (c = 0; c < nitems(ctl_list_cols); c++)
		printf("%-*s%s", c + 1 < nitems(ctl_list_cols) ? (int)w[c] : 0,
		    ctl_list_cols[c].title,
		    c + 1 < nitems(ctl_list_cols) ? "  " : "\n");
	json_array_foreach(all, i, inv)
		for (c = 0; c < nitems(ctl_list_cols); c++) {
			cell = ctl_jstr(inv, ctl_list_cols[c].key);
			if (cell == NULL)
				cell = "-";
			if (c == 0) {
				snprintf(id, sizeof(id), "%s", cell);
				cell = id;
			}
			ctl_put_safe(stdout, cell);
			if (c + 1 == nitems(ctl_list_cols))
				putchar('\n');
			else
				printf("%*s", (int)(w[c] - ctl_width(cell) + 2), "");
		}
}

/* list: the filtered records, one page or (--all) every page. */
static int
ctl_cmd_list(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "nip", required_argument, NULL, 'n' },
		{ "limit", required_argument, NULL, 'l' },
		{ "after", required_argument, NULL, 'a' },
		{ "all", no_argument, NULL, 'A' },
		{ NULL, 0, NULL, 0 },
	};
	struct http_sync_resp resp;
	enum inv_state st;
	struct buf q;
	json_t *j = NULL, *all = json_array(), *inv, *invs;
	const char *state = NULL, *nip = NULL, *limit = NULL, *next;
	char *after = NULL, *end, *line;
	long n;
	size_t i;
	int ch, every = 0, rc = CTL_EXIT_OK;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (record_state_parse(optarg, &st) == -1) {
				fprintf(stderr, "ksefctl: list: unknown state `%s' "
				    "(QUEUED, SENDING, SUBMITTED, ACCEPTED, DONE, "
				    "REJECTED, FAILED)\n",
				    log_escape(optarg, strlen(optarg), 40));
				goto usage;
			}
			state = record_state_name(st);
			break;
		case 'n':
			if (!nip_valid(optarg)) {
				fprintf(stderr, "ksefctl: list: `%s' is not a NIP "
				    "(10 digits with a valid check digit)\n",
				    log_escape(optarg, strlen(optarg), 40));
				goto usage;
			}
			nip = optarg;
			break;
		case 'l':
			n = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || n < 1 || n > 1000) {
				fprintf(stderr, "ksefctl: list: --limit must be "
				    "a number from 1 to 1000\n");
				goto usage;
			}
			limit = optarg;
			break;
		case 'a':
			if (!ctl_id_valid(optarg)) {
				fprintf(stderr, "ksefctl: list: --after needs an "
				    "invoice id (64 hex digits)\n");
				goto usage;
			}
			free(after);
			after = xstrdup(optarg);
			break;
		case 'A':
			every = 1;
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ksefctl: list: unexpected argument `%s'\n",
		    log_escape(argv[optind], strlen(argv[optind]), 40));
		goto usage;
	}
	buf_init(&q);
	for (;;) {
		buf_reset(&q);
		buf_addstr(&q, "/v1/invoices?");
		if (state)
			buf_addf(&q, "state=%s&", state);
		if (nip)
			buf_addf(&q, "nip=%s&", nip);
		if (limit)
			buf_addf(&q, "limit=%s&", limit);
		if (after)
			buf_addf(&q, "after=%s&", after);
		q.data[--q.len] = '\0';
		if (ctl_request(ctl, "GET", (char *)q.data, NULL, NULL, 0,
		    &resp) == -1) {
			rc = CTL_EXIT_UNREACHABLE;
			break;
		}
		j = ctl_resp_json(&resp);
		invs = json_object_get(j, "invoices");
		if (resp.status != 200 || !json_is_array(invs)) {
			ctl_server_error(&resp, j);
			http_sync_resp_free(&resp);
			rc = CTL_EXIT_FAIL;
			break;
		}
		http_sync_resp_free(&resp);
		json_array_foreach(invs, i, inv) {
			if (!ctl->json) {
				json_array_append(all, inv);
				continue;
			}
			line = json_dumps(inv, JSON_COMPACT);
			puts(line ? line : "{}");
			free(line);
		}
		next = ctl_jstr(j, "next");
		if (next == NULL || !ctl_id_valid(next))
			break;
		if (!every) {
			fprintf(stderr, "ksefctl: more invoices follow: --all "
			    "shows them, or --after %s\n", next);
			break;
		}
		free(after);
		after = xstrdup(next);
		json_decref(j);
		j = NULL;
	}
	json_decref(j);
	buf_free(&q);
	if (!ctl->json && rc != CTL_EXIT_UNREACHABLE)
		ctl_list_table(all);
	json_decref(all);
	free(after);
	return rc;
usage:
	json_decref(all);
	free(after);
	return ctl_usage_cmd(cmd);
}

/* status: one context of GET /v1/status as text. */
static void
ctl_status_ctx(const json_t *c)
{
	static const char *const win[] = { "second", "minute", "hour" };
	json_t *states = json_object_get(c, "states");
	json_t *lim = json_object_get(c, "headroom"), *v, *g;
	const json_t *ages = json_object_get(c, "oldest_age_s");
	const json_t *tok = json_object_get(c, "token_expires_in_s");
	const char *name;
	char age[32];
	size_t w;

	printf("context %s: breaker %s, %lld sessions open, %lld sends in "
	    "flight, ", ctl_jstr(c, "context") ? ctl_jstr(c, "context") : "?",
	    ctl_jstr(c, "breaker") ? ctl_jstr(c, "breaker") : "?",
	    (long long)json_integer_value(json_object_get(c, "sessions_open")),
	    (long long)json_integer_value(json_object_get(c, "sends_in_flight")));
	if (json_is_number(tok))
		printf("access token expires in %.0f s\n", json_number_value(tok));
	else
		printf("no access token\n");
	printf("  %-10s %8s  %s\n", "STATE", "COUNT", "OLDEST");
	json_object_foreach(states, name, v) {
		g = json_object_get(ages, name);
		if (json_is_number(g))
			ctl_fmt_secs(json_number_value(g), age, sizeof(age));
		else
			snprintf(age, sizeof(age), "-");
		printf("  %-10s %8lld  %s\n", name,
		    (long long)json_integer_value(v), age);
	}
	printf("  %-28s %7s %7s %7s\n", "HEADROOM", "SECOND", "MINUTE", "HOUR");
	json_object_foreach(lim, name, g) {
		printf("  %-28s", name);
		for (w = 0; w < 3; w++) {
			v = json_object_get(g, win[w]);
			if (json_is_integer(v))
				printf(" %7lld", (long long)json_integer_value(v));
			else
				printf(" %7s", "-");
		}
		v = json_object_get(g, "paused_s");
		if (json_is_number(v))
			printf("  paused %.1f s (429)", json_number_value(v));
		putchar('\n');
	}
}

/* status */
static int
ctl_cmd_status(struct ctl *ctl, const struct ctl_cmd *cmd, int argc,
    char **argv)
{
	struct http_sync_resp resp;
	const json_t *ctxs, *last;
	json_t *j;
	size_t i;
	int rc = CTL_EXIT_OK;

	(void)argv;
	if (argc != 1)
		return ctl_usage_cmd(cmd);
	if (ctl_request(ctl, "GET", "/v1/status", NULL, NULL, 0, &resp) == -1)
		return CTL_EXIT_UNREACHABLE;
	j = ctl_resp_json(&resp);
	ctxs = json_object_get(j, "contexts");
	if (resp.status != 200 || !json_is_array(ctxs)) {
		ctl_server_error(&resp, j);
		rc = CTL_EXIT_FAIL;
	} else if (ctl->json)
		ctl_put_body(&resp);
	else {
		printf("KSeF requests in flight: %lld\n", (long long)
		    json_integer_value(json_object_get(j, "requests_in_flight")));
		last = json_object_get(j, "availability");
		if (json_is_object(last))
			printf("KSeF availability (Latarnia): %s%s\n",
			    ctl_jstr(last, "latarnia") ? ctl_jstr(last, "latarnia") :
			    "?", json_is_true(json_object_get(last, "paused")) ?
			    ", sending paused" : "");
		for (i = 0; i < json_array_size(ctxs); i++)
			ctl_status_ctx(json_array_get(ctxs, i));
		last = json_object_get(j, "last_reconcile");
		if (json_is_object(last)) {
			char *s = json_dumps(last, JSON_COMPACT | JSON_SORT_KEYS);

			printf("last reconciliation: ");
			ctl_put_safe(stdout, s ? s : "?");
			putchar('\n');
			free(s);
		} else
			printf("last reconciliation: none\n");
	}
	json_decref(j);
	http_sync_resp_free(&resp);
	return rc;
}

/* Find a command by name or by an unambiguous prefix; NULL (and a message) if none. */
static const struct ctl_cmd *
ctl_cmd_find(const char *name)
{
	const struct ctl_cmd *found = NULL;
	size_t i, len = strlen(name);

	for (i = 0; i < nitems(ctl_cmds); i++)
		if (strcmp(ctl_cmds[i].name, name) == 0)
			return &ctl_cmds[i];
	for (i = 0; i < nitems(ctl_cmds); i++) {
		if (len == 0 || strncmp(ctl_cmds[i].name, name, len) != 0)
			continue;
		if (found != NULL) {
			fprintf(stderr, "ksefctl: ambiguous command `%s' (%s, "
			    "%s, ...)\n", log_escape(name, len, 40),
			    found->name, ctl_cmds[i].name);
			return NULL;
		}
		found = &ctl_cmds[i];
	}
	if (found == NULL)
		fprintf(stderr, "ksefctl: unknown command `%s' (see ksefctl "
		    "help)\n", log_escape(name, len, 40));
	return found;
}

static int
ctl_cmd_help(struct ctl *ctl, const struct ctl_cmd *cmd, int argc, char **argv)
{
	const struct ctl_cmd *c;

	if (argc > 2)
		return ctl_usage_cmd(cmd);
	if (argc == 1) {
		ctl_usage_print(stdout);
		return CTL_EXIT_OK;
	}
	if ((c = ctl_cmd_find(argv[1])) == NULL)
		return CTL_EXIT_USAGE;
	ctl_cmd_describe(c);
	return CTL_EXIT_OK;
}

/* The [api] socket key of the config file; everything else is skipped. */
static int
ctl_conf_cb(void *arg, const char *section, const char *name, const char *value)
{
	char **sock = arg;

	if (strcmp(section, "api") == 0 && strcmp(name, "socket") == 0) {
		free(*sock);
		*sock = xstrdup(value);
	}
	return 1;
}

/*
 * The socket from the config file.  An explicit file must be readable;
 * the default one may be missing.  Caller frees; NULL when not set.
 */
static int
ctl_conf_socket(const char *file, int explicit, char **sock)
{
	int r;

	*sock = NULL;
	r = ini_parse(file, ctl_conf_cb, sock);
	if (r == -1) {
		if (!explicit && errno == ENOENT)
			return 0;
		fprintf(stderr, "ksefctl: cannot read %s: %s\n", file,
		    strerror(errno));
		return -1;
	}
	if (r == -2)
		fatalx("ksefctl: out of memory");
	if (r > 0)
		fprintf(stderr, "ksefctl: %s:%d: syntax error (ksefctl reads "
		    "only [api] socket; ksefd -n checks the whole file)\n",
		    file, r);
	return 0;
}

/* Is this an http:// URL of a loopback host? */
static int
ctl_url_loopback(const char *url)
{
	const char *h;
	size_t n;

	if (strncmp(url, "http://", 7) != 0)
		return 0;
	h = url + 7;
	if (strncmp(h, "[::1]", 5) == 0)
		return h[5] == '\0' || h[5] == ':' || h[5] == '/';
	n = strcspn(h, ":/");
	if (n == 9 && strncmp(h, "localhost", 9) == 0)
		return 1;
	return strncmp(h, "127.", 4) == 0 && strspn(h, "0123456789.") == n;
}

/* Open the connection the command will use; an exit status on failure. */
static int
ctl_connect(struct ctl *ctl, const char *token_file)
{
	char err[256], *token;

	if (ctl->url == NULL) {
		ctl->target = ctl->socket_path;
		ctl->hs = http_sync_new(ctl->socket_path, NULL, NULL);
		return CTL_EXIT_OK;
	}
	if (!ctl_url_loopback(ctl->url)) {
		fprintf(stderr, "ksefctl: -u %s: only http:// URLs of a loopback "
		    "address (127.0.0.1, [::1], localhost) are allowed\n",
		    log_escape(ctl->url, strlen(ctl->url), 80));
		return CTL_EXIT_USAGE;
	}
	if (token_file == NULL) {
		fprintf(stderr, "ksefctl: -u needs a bearer token file: -t FILE "
		    "or KSEFD_TOKEN_FILE\n");
		return CTL_EXIT_USAGE;
	}
	if ((token = file_read_secret(token_file, err, sizeof(err))) == NULL) {
		fprintf(stderr, "ksefctl: token file: %s\n", err);
		return CTL_EXIT_USAGE;
	}
	if (*token == '\0') {
		fprintf(stderr, "ksefctl: token file %s is empty\n", token_file);
		free(token);
		return CTL_EXIT_USAGE;
	}
	ctl->target = ctl->url;
	ctl->hs = http_sync_new(NULL, ctl->url, token);
	explicit_wipe(token, strlen(token));
	free(token);
	return CTL_EXIT_OK;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct ctl_cmd *cmd;
	const char *conf_file = NULL, *token_file = NULL, *sock_opt = NULL;
	char *conf_sock = NULL;
	struct ctl ctl;
	int ch, rc, i;

	signal(SIGPIPE, SIG_IGN);
	memset(&ctl, 0, sizeof(ctl));
	while ((ch = getopt_long(argc, argv, "+f:hjs:t:u:V", opts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			conf_file = optarg;
			break;
		case 'h':
			ctl_usage_print(stdout);
			return CTL_EXIT_OK;
		case 'j':
			ctl.json = 1;
			break;
		case 's':
			sock_opt = optarg;
			break;
		case 't':
			token_file = optarg;
			break;
		case 'u':
			ctl.url = optarg;
			break;
		case 'V':
			printf("ksefctl %s\n", PACKAGE_VERSION);
			return CTL_EXIT_OK;
		default:
			fprintf(stderr, "usage: ksefctl [-j] [-s SOCKET | -u URL "
			    "-t TOKENFILE] [-f CONFIG] COMMAND [ARGS]\n"
			    "       ksefctl --help\n");
			return CTL_EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		fprintf(stderr, "ksefctl: no command (ksefctl --help lists "
		    "them)\n");
		return CTL_EXIT_USAGE;
	}
	if ((cmd = ctl_cmd_find(argv[0])) == NULL)
		return CTL_EXIT_USAGE;
	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			ctl_cmd_describe(cmd);
			return CTL_EXIT_OK;
		}
	if (sock_opt != NULL && ctl.url != NULL) {
		fprintf(stderr, "ksefctl: -s and -u exclude each other\n");
		return CTL_EXIT_USAGE;
	}
	if (token_file == NULL)
		token_file = getenv("KSEFD_TOKEN_FILE");
	if (cmd->flags & CTL_API) {
		ctl.socket_path = sock_opt;
		if (ctl.socket_path == NULL && ctl.url == NULL &&
		    (ctl.socket_path = getenv("KSEFD_SOCKET")) != NULL &&
		    *ctl.socket_path == '\0')
			ctl.socket_path = NULL;
		if (ctl.socket_path == NULL && ctl.url == NULL) {
			if (ctl_conf_socket(conf_file ? conf_file :
			    CTL_CONF_DEFAULT, conf_file != NULL, &conf_sock) == -1)
				return CTL_EXIT_USAGE;
			ctl.socket_path = conf_sock ? conf_sock :
			    CTL_SOCKET_DEFAULT;
		}
		if ((rc = ctl_connect(&ctl, token_file)) != CTL_EXIT_OK) {
			free(conf_sock);
			return rc;
		}
	}
	rc = cmd->exec(&ctl, cmd, argc, argv);
	http_sync_free(ctl.hs);
	free(conf_sock);
	fflush(stdout);
	if (ferror(stdout)) {
		fprintf(stderr, "ksefctl: error writing the output\n");
		if (rc == CTL_EXIT_OK)
			rc = CTL_EXIT_FAIL;
	}
	return rc;
}
