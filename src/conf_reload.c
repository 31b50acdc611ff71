/* conf_reload.c: SIGHUP reload the bgpd way: parse anew, diff, keep what needs a restart, swap, tell the modules. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "util.h"

struct conf_hook {
	conf_reload_cb	 cb;
	void		*arg;
};

static struct conf_hook *conf_hooks;
static size_t conf_nhooks;

void
conf_reload_hook_add(conf_reload_cb cb, void *arg)
{
	conf_hooks = xrealloc(conf_hooks, (conf_nhooks + 1) *
	    sizeof(*conf_hooks));
	conf_hooks[conf_nhooks].cb = cb;
	conf_hooks[conf_nhooks].arg = arg;
	conf_nhooks++;
}

void
conf_reload_hook_remove(conf_reload_cb cb, void *arg)
{
	size_t i;

	for (i = 0; i < conf_nhooks; i++)
		if (conf_hooks[i].cb == cb && conf_hooks[i].arg == arg) {
			memmove(&conf_hooks[i], &conf_hooks[i + 1],
			    (conf_nhooks - i - 1) * sizeof(*conf_hooks));
			conf_nhooks--;
			return;
		}
}

void
conf_reload_hooks_clear(void)
{
	free(conf_hooks);
	conf_hooks = NULL;
	conf_nhooks = 0;
}

void
conf_log_apply(const struct conf *conf, int verbose)
{
	int level = conf->log_level + verbose;

	log_setlevel(level > LOG_LVL_DEBUG ? LOG_LVL_DEBUG : level);
	log_trace_set(conf->log_trace | (verbose >= 2 ? TRACE_ALL : 0));
}

/* Join message lines with ", ". Caller frees. */
static char *
conf_msgs_join(const struct conf_msgs *m)
{
	struct buf b;
	size_t i;

	buf_init(&b);
	for (i = 0; i < m->n; i++)
		buf_addf(&b, "%s%s", i ? ", " : "", m->v[i]);
	return (char *)buf_release(&b, NULL);
}

int
conf_reload_report(struct conf **cur, int verbose, struct conf_msgs *errs,
    struct conf_msgs *changed, struct conf_msgs *restart)
{
	struct conf *old = *cur, *new;
	char *summary;
	size_t i;

	if ((new = conf_load(old->file, errs)) == NULL) {
		log_warnx("conf: config file %s has errors, not reloading",
		    old->file);
		for (i = 0; i < errs->n; i++)
			log_warnx("conf: %s", errs->v[i]);
		return -1;
	}
	conf_diff(old, new, changed, restart);
	for (i = 0; i < restart->n; i++)
		log_warnx("conf: %s needs restart, keeping the old value",
		    restart->v[i]);
	conf_restart_keep(new, old);
	if (new->api_listen != NULL && new->api_token == NULL) {
		log_warnx("conf: config file %s has errors, not reloading",
		    old->file);
		summary = xasprintf("%s: api.listen stays on until a restart, "
		    "so api.token_file is still required", old->file);
		log_warnx("conf: %s", summary);
		errs->v = xrealloc(errs->v, (errs->n + 1) * sizeof(*errs->v));
		errs->v[errs->n++] = summary;
		conf_restart_keep(new, old);	/* swap back before freeing */
		conf_free(new);
		return -1;
	}
	/* Say it at the chattier of the two levels, so that it is seen. */
	summary = conf_msgs_join(changed);
	if (log_getlevel() < LOG_LVL_INFO)
		conf_log_apply(new, verbose);
	log_info("conf: reloaded configuration%s%s", changed->n ? ": " : "",
	    changed->n ? summary : " (no changes)");
	conf_log_apply(new, verbose);
	free(summary);
	*cur = new;
	for (i = 0; i < conf_nhooks; i++)
		conf_hooks[i].cb(old, new, conf_hooks[i].arg);
	conf_free(old);
	return 0;
}

int
conf_reload(struct conf **cur, int verbose)
{
	struct conf_msgs errs = { NULL, 0 }, changed = { NULL, 0 };
	struct conf_msgs restart = { NULL, 0 };
	int rc;

	rc = conf_reload_report(cur, verbose, &errs, &changed, &restart);
	conf_msgs_free(&errs);
	conf_msgs_free(&changed);
	conf_msgs_free(&restart);
	return rc;
}
