/* map.h: a hash map from byte strings to pointers (open addressing, grows). */
#ifndef KSEFD_MAP_H
#define KSEFD_MAP_H

#include <stddef.h>

struct map;

/* Caller frees with map_free(); keys are copied, values are borrowed. */
struct map	*map_new(void);
void		 map_free(struct map *);
/* Set key -> val (replacing any); val must not be NULL. */
void		 map_put(struct map *, const void *key, size_t len, void *val);
/* The value, or NULL. */
void		*map_get(const struct map *, const void *key, size_t len);
/* Remove key; returns its value or NULL. */
void		*map_del(struct map *, const void *key, size_t len);
size_t		 map_count(const struct map *);
/* Call cb for every entry until it returns non-zero; cb must not change the map. */
void		 map_foreach(const struct map *,
		    int (*cb)(const void *key, size_t len, void *val, void *arg),
		    void *arg);

#endif
