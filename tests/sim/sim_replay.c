/*
 * sim_replay.c: runs every file of tests/sim/corpus through the fuzz target
 * (LLVMFuzzerTestOneInput in fuzz_sim.c) and checks each answer: a sane
 * status, valid JSON where JSON is declared, and, for files named
 * sNNN_description, the expected status NNN.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/catalog.h>
#include <libxml/parser.h>

#include "util.h"
#include "../tap.h"

int	LLVMFuzzerTestOneInput(const unsigned char *, size_t);
void	fuzz_sim_cleanup(void);
extern int fuzz_sim_last_status;
extern char fuzz_sim_last_error[200];

#ifndef SIM_CORPUS
#define SIM_CORPUS	"tests/sim/corpus"
#endif

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : SIM_CORPUS;
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL, *path;
	unsigned char *data;
	size_t n = 0, i, len;
	int want;

	if (d == NULL) {
		ok(0, "open corpus %s", dir);
		return tap_done();
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = xrealloc(names, (n + 1) * sizeof(*names));
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	ok(n >= 10, "corpus has %zu files", n);
	for (i = 0; i < n; i++) {
		path = xasprintf("%s/%s", dir, names[i]);
		data = file_read(path, 8 << 20, &len);
		ok(data != NULL, "read %s", names[i]);
		if (data != NULL) {
			LLVMFuzzerTestOneInput(data, len);
			ok(fuzz_sim_last_error[0] == '\0', "%s: sane answer%s%s", names[i],
			    fuzz_sim_last_error[0] ? ": " : "", fuzz_sim_last_error);
			if (names[i][0] == 's' && sscanf(names[i], "s%3d_", &want) == 1)
				is_int(fuzz_sim_last_status, want, "%s: status", names[i]);
		}
		free(data);
		free(path);
		free(names[i]);
	}
	free(names);
	fuzz_sim_cleanup();
	xmlCatalogCleanup();
	xmlCleanupParser();
	return tap_done();
}
