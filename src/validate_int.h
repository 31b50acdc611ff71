/* validate_int.h: what validate.c and validate_rules.c share; not for other modules. */
#ifndef KSEFD_VALIDATE_INT_H
#define KSEFD_VALIDATE_INT_H

#include <libxml/tree.h>

#include "validate.h"

/* What the business rules need besides the tree. */
struct validate_rules_env {
	enum validate_form form;
	long		 today;		/* days since 1970-01-01, local calendar */
	long		 future_days;	/* P_1 may be this many days after today */
	const char *const *nips;
	size_t		 nnips;
	int		 any_seller;
};

/* Append a problem (listed while there is room, always counted). */
void	validate_problem_add(struct validate_result *, enum validate_severity,
	    const char *rule, const xmlNode *, int column, const char *fmt, ...)
	    __attribute__((format(printf, 6, 7)));
/* "/Faktura/Fa/FaWiersz[2]/P_11": local names, an index where siblings share a name. Caller frees. */
char	*validate_node_path(const xmlNode *);
/* Days since 1970-01-01 of "YYYY-MM-DD..." or -1. */
long	 validate_date_days(const char *);

/* Extract the identity fields into res and apply the business rules. */
void	validate_rules_check(const struct validate_rules_env *, xmlNode *root,
	    struct validate_result *);

#endif
