/* spool.c: the spool directory, watched with inotify and rescanned as a safety net. */
#include "config.h"

#include <sys/inotify.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "intake.h"
#include "log.h"
#include "render.h"
#include "spool.h"
#include "util.h"
#include "validate.h"

#define SPOOL_BATCH	64	/* files read per loop pass */

/* One file: queued, or handed to intake and waiting for its outcome. */
struct spool_file {
	struct spool		*spool;
	char			*name;
	int			 submitted;
	struct spool_file	*next;
};

struct spool {
	struct event_base	*base;
	struct intake		*intake;
	char			*dir;
	char			*incoming, *accepted, *refused;
	size_t			 max_body;
	int64_t			 rescan_ms;
	int			 ifd;
	struct event		*ev_inotify;
	struct event		*ev_rescan;
	struct event		*ev_work;
	struct spool_file	*files;		/* queued and in flight */
	size_t			 nsubmitted;
	int			 dying;
};

static void spool_work_cb(evutil_socket_t, short, void *);

/* Is this a name the ERP finished writing: NAME.xml, not a dotfile? */
static int
spool_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (name[0] == '.' || n < 5)
		return 0;
	return strcmp(name + n - 4, ".xml") == 0;
}

/* Queue a file unless it is queued or in flight already. */
static void
spool_enqueue(struct spool *sp, const char *name)
{
	struct spool_file *f;

	if (!spool_name_ok(name))
		return;
	for (f = sp->files; f != NULL; f = f->next)
		if (strcmp(f->name, name) == 0)
			return;
	f = xcalloc(1, sizeof(*f));
	f->spool = sp;
	f->name = xstrdup(name);
	f->next = sp->files;
	sp->files = f;
	event_active(sp->ev_work, EV_TIMEOUT, 0);
}

static void
spool_unlink_file(struct spool *sp, struct spool_file *f)
{
	struct spool_file **pp;

	for (pp = &sp->files; *pp != NULL; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	free(f->name);
	free(f);
}

static void
spool_maybe_free(struct spool *sp)
{
	if (!sp->dying || sp->nsubmitted > 0)
		return;
	while (sp->files != NULL)
		spool_unlink_file(sp, sp->files);
	free(sp->dir);
	free(sp->incoming);
	free(sp->accepted);
	free(sp->refused);
	free(sp);
}

/* Move incoming/NAME into `todir`, never overwriting: NAME, NAME.1, ... */
static int
spool_move(struct spool *sp, const char *name, const char *todir, char **dst)
{
	char *src = xasprintf("%s/%s", sp->incoming, name), *to;
	struct stat st;
	int i;

	to = xasprintf("%s/%s", todir, name);
	for (i = 1; lstat(to, &st) == 0 && i < 10000; i++) {
		free(to);
		to = xasprintf("%s/%s.%d", todir, name, i);
	}
	if (rename(src, to) == -1) {
		log_warn("spool: cannot move %s to %s", src, to);
		free(src);
		free(to);
		return -1;
	}
	free(src);
	*dst = to;
	return 0;
}

/* Write refused/NAME.err next to a refused file; JSON of the outcome. */
static void
spool_write_err(const char *xmlpath, json_t *body)
{
	char *path = xasprintf("%s.err", xmlpath);
	char *s = json_dumps(body, JSON_INDENT(2) | JSON_ENSURE_ASCII);

	if (s == NULL)
		fatalx("spool: cannot encode JSON");
	if (file_write_atomic(path, s, strlen(s), 0644) == -1)
		log_warn("spool: cannot write %s", path);
	free(s);
	free(path);
}

/* Refuse a file with a JSON explanation. */
static void
spool_refuse(struct spool *sp, const char *name, json_t *body)
{
	char *dst;

	if (spool_move(sp, name, sp->refused, &dst) == 0) {
		spool_write_err(dst, body);
		free(dst);
	}
	json_decref(body);
}

/* The outcome of one file, after its group committed. */
static void
spool_intake_cb(const struct intake_outcome *o, void *arg)
{
	struct spool_file *f = arg;
	struct spool *sp = f->spool;
	char key[17], *dst, msg[300];
	json_t *body;

	sp->nsubmitted--;
	switch (o->status) {
	case INTAKE_CREATED:
	case INTAKE_EXISTS:
		record_key_short(o->inv->key, key);
		if (spool_move(sp, f->name, sp->accepted, &dst) == 0) {
			log_info("spool: %s %s: %s", key,
			    o->status == INTAKE_CREATED ? "accepted" :
			    "already known, accepted", dst);
			free(dst);
		}
		break;
	case INTAKE_CONFLICT:
		body = json_object();
		json_object_set_new(body, "error", json_string("conflict"));
		snprintf(msg, sizeof(msg), "an invoice with seller NIP %s, type "
		    "%s and this number already exists (state %s) with other "
		    "content; change an accepted invoice with a correcting "
		    "invoice", o->inv->seller_nip, o->inv->kind,
		    record_state_name(o->inv->state));
		json_object_set_new(body, "message", json_string(msg));
		json_object_set_new(body, "invoice", render_invoice_json(o->inv));
		log_warnx("spool: %s refused: conflict", f->name);
		spool_refuse(sp, f->name, body);
		break;
	case INTAKE_REFUSED:
		body = json_object();
		json_object_set_new(body, "error", json_string("invalid"));
		json_object_set_new(body, "problems",
		    render_problems_json(o->vr, -1));
		log_warnx("spool: %s refused: %zu error(s), first: %s",
		    log_escape(f->name, strlen(f->name), 200), o->vr->nerrors,
		    o->vr->nproblems ? o->vr->problems[0].rule : "?");
		spool_refuse(sp, f->name, body);
		break;
	case INTAKE_UNAVAILABLE:
		/* Not stored; it stays in incoming/ and is tried again. */
		log_warnx("spool: %s: could not be stored, will retry",
		    log_escape(f->name, strlen(f->name), 200));
		break;
	}
	spool_unlink_file(sp, f);
	spool_maybe_free(sp);
}

/* Read and submit one queued file; 0 when it was handed over. */
static void
spool_submit(struct spool *sp, struct spool_file *f)
{
	char *path = xasprintf("%s/%s", sp->incoming, f->name), msg[200];
	unsigned char *data;
	size_t len;
	json_t *body;

	data = file_read(path, sp->max_body, &len);
	free(path);
	if (data == NULL) {
		if (errno == EFBIG) {
			snprintf(msg, sizeof(msg), "file is larger than the "
			    "limit of %zu bytes (api.max_body)", sp->max_body);
			body = json_pack("{s:s, s:[{s:s, s:s, s:i, s:i}]}",
			    "error", "invalid", "problems", "rule",
			    "body.too_large", "message", msg, "line", 0,
			    "column", 0);
			log_warnx("spool: %s refused: too large", f->name);
			spool_refuse(sp, f->name, body);
		} else if (errno != ENOENT)
			log_warn("spool: cannot read %s", f->name);
		spool_unlink_file(sp, f);
		return;
	}
	f->submitted = 1;
	sp->nsubmitted++;
	intake_submit(sp->intake, data, len, INV_SRC_SPOOL, f->name,
	    spool_intake_cb, f);
	free(data);
}

/* Submit up to SPOOL_BATCH queued files per loop pass, so the loop stays responsive. */
static void
spool_work_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct spool *sp = arg;
	struct spool_file *f, *next;
	int n = 0;

	for (f = sp->files; f != NULL && n < SPOOL_BATCH; f = next) {
		next = f->next;
		if (f->submitted)
			continue;
		spool_submit(sp, f);
		n++;
	}
	for (f = sp->files; f != NULL; f = f->next)
		if (!f->submitted) {
			event_active(sp->ev_work, EV_TIMEOUT, 0);
			break;
		}
}

/* Queue every *.xml in incoming/. */
static void
spool_scan(struct spool *sp)
{
	struct dirent *de;
	DIR *d;

	if ((d = opendir(sp->incoming)) == NULL) {
		log_warn("spool: cannot read %s", sp->incoming);
		return;
	}
	while ((de = readdir(d)) != NULL)
		spool_enqueue(sp, de->d_name);
	closedir(d);
}

static void
spool_rescan_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct spool *sp = arg;
	struct timeval tv;

	spool_scan(sp);
	tv.tv_sec = sp->rescan_ms / 1000;
	tv.tv_usec = (sp->rescan_ms % 1000) * 1000;
	evtimer_add(sp->ev_rescan, &tv);
}

static void
spool_inotify_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct spool *sp = arg;
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	const struct inotify_event *ie;
	ssize_t n;
	char *p;

	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n <= 0) {
			if (n == -1 && errno != EAGAIN && errno != EINTR)
				log_warn("spool: inotify read");
			break;
		}
		for (p = buf; p < buf + n; p += sizeof(*ie) + ie->len) {
			ie = (const struct inotify_event *)p;
			if (ie->mask & IN_Q_OVERFLOW) {
				log_warnx("spool: inotify overflow, rescanning");
				spool_scan(sp);
			} else if (ie->len > 0)
				spool_enqueue(sp, ie->name);
		}
	}
}

/* mkdir -p of one level below an existing parent. */
static int
spool_mkdir(const char *path, char *err, size_t errlen)
{
	if (mkdir(path, 0750) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "spool.directory: cannot create %s: %s",
		    path, strerror(errno));
		return -1;
	}
	return 0;
}

struct spool *
spool_start(struct event_base *base, const char *dir, int64_t rescan_ms,
    size_t max_body, struct intake *intake, char *err, size_t errlen)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));

	sp->base = base;
	sp->intake = intake;
	sp->dir = xstrdup(dir);
	sp->incoming = xasprintf("%s/incoming", dir);
	sp->accepted = xasprintf("%s/accepted", dir);
	sp->refused = xasprintf("%s/refused", dir);
	sp->max_body = max_body;
	sp->rescan_ms = rescan_ms > 0 ? rescan_ms : 60000;
	sp->ifd = -1;
	if (spool_mkdir(dir, err, errlen) == -1 ||
	    spool_mkdir(sp->incoming, err, errlen) == -1 ||
	    spool_mkdir(sp->accepted, err, errlen) == -1 ||
	    spool_mkdir(sp->refused, err, errlen) == -1)
		goto fail;
	if ((sp->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) == -1 ||
	    inotify_add_watch(sp->ifd, sp->incoming,
	    IN_MOVED_TO | IN_CLOSE_WRITE) == -1) {
		snprintf(err, errlen, "spool: cannot watch %s: %s", sp->incoming,
		    strerror(errno));
		goto fail;
	}
	sp->ev_inotify = event_new(base, sp->ifd, EV_READ | EV_PERSIST,
	    spool_inotify_cb, sp);
	sp->ev_rescan = evtimer_new(base, spool_rescan_cb, sp);
	sp->ev_work = event_new(base, -1, 0, spool_work_cb, sp);
	if (sp->ev_inotify == NULL || sp->ev_rescan == NULL || sp->ev_work == NULL)
		fatalx("spool: cannot create events");
	event_add(sp->ev_inotify, NULL);
	/* The first scan happens at once; then every rescan_ms. */
	spool_rescan_cb(-1, 0, sp);
	log_info("spool: watching %s", sp->incoming);
	return sp;
fail:
	sp->dying = 1;
	if (sp->ifd != -1)
		close(sp->ifd);
	spool_maybe_free(sp);
	return NULL;
}

void
spool_update(struct spool *sp, int64_t rescan_ms, size_t max_body)
{
	sp->max_body = max_body;
	if (rescan_ms > 0 && rescan_ms != sp->rescan_ms) {
		sp->rescan_ms = rescan_ms;
		event_del(sp->ev_rescan);
		spool_rescan_cb(-1, 0, sp);
	}
}

size_t
spool_in_flight(const struct spool *sp)
{
	return sp->nsubmitted;
}

void
spool_free(struct spool *sp)
{
	struct spool_file *f, *next;

	if (sp == NULL)
		return;
	event_free(sp->ev_inotify);
	event_free(sp->ev_rescan);
	event_free(sp->ev_work);
	close(sp->ifd);
	/* Queued files not yet submitted stay in incoming/ for the next start. */
	for (f = sp->files; f != NULL; f = next) {
		next = f->next;
		if (!f->submitted)
			spool_unlink_file(sp, f);
	}
	sp->dying = 1;
	spool_maybe_free(sp);
}
