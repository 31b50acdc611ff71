/* failpoint.c: SIGKILL at named points, for crash tests (debug builds only). */
#include "config.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failpoint.h"
#include "log.h"
#include "util.h"

#ifdef KSEFD_FAILPOINTS
struct failpoint {
	char		*name;
	long		 nth;		/* kill at this hit; 0: by probability */
	double		 p;
	long		 hits;
};

static struct failpoint *fps;
static size_t nfps;

void
failpoint_init(void)
{
	const char *env = getenv("KSEFD_FAILPOINTS"), *seed;
	char *copy, *tok, *save, *eq;

	if (env == NULL || *env == '\0')
		return;
	seed = getenv("KSEFD_FAILPOINT_SEED");
	srand48(seed ? atol(seed) : (long)getpid());
	copy = xstrdup(env);
	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if ((eq = strchr(tok, '=')) == NULL)
			fatalx("failpoint: %s: want NAME=N or NAME=pP", tok);
		*eq++ = '\0';
		fps = xrealloc(fps, (nfps + 1) * sizeof(*fps));
		memset(&fps[nfps], 0, sizeof(fps[nfps]));
		fps[nfps].name = xstrdup(tok);
		if (*eq == 'p')
			fps[nfps].p = atof(eq + 1);
		else
			fps[nfps].nth = atol(eq);
		log_warnx("failpoint: %s armed (%s)", tok, eq);
		nfps++;
	}
	free(copy);
}

void
failpoint_hit(const char *name)
{
	size_t i;

	for (i = 0; i < nfps; i++) {
		struct failpoint *f = &fps[i];

		if (strcmp(f->name, name) != 0)
			continue;
		f->hits++;
		if ((f->nth > 0 && f->hits == f->nth) ||
		    (f->nth == 0 && drand48() < f->p)) {
			log_warnx("failpoint: %s reached, SIGKILL", name);
			raise(SIGKILL);
		}
	}
}
#else
void
failpoint_init(void)
{
}
#endif
