/* map.c: open-addressing hash map with linear probing and tombstones. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"
#include "util.h"

struct map_slot {
	uint64_t	 hash;		/* 0: empty; 1: deleted; else hash | 2 */
	void		*key;
	size_t		 len;
	void		*val;
};

struct map {
	struct map_slot	*slots;
	size_t		 cap;		/* power of two */
	size_t		 used;		/* live entries */
	size_t		 filled;	/* live + deleted */
};

#define SLOT_EMPTY	0
#define SLOT_DELETED	1

/* FNV-1a, 64 bit, never 0 or 1. */
static uint64_t
map_hash(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 14695981039346656037ULL;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h | 2;
}

struct map *
map_new(void)
{
	struct map *m = xcalloc(1, sizeof(*m));

	m->cap = 16;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	return m;
}

void
map_free(struct map *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->cap; i++)
		if (m->slots[i].hash > SLOT_DELETED)
			free(m->slots[i].key);
	free(m->slots);
	free(m);
}

/* The slot holding key, or NULL. */
static struct map_slot *
map_find(const struct map *m, const void *key, size_t len, uint64_t h)
{
	size_t i = (size_t)h & (m->cap - 1);

	for (;;) {
		struct map_slot *s = &m->slots[i];

		if (s->hash == SLOT_EMPTY)
			return NULL;
		if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
			return s;
		i = (i + 1) & (m->cap - 1);
	}
}

/* Rebuild with room for growth, dropping tombstones. */
static void
map_resize(struct map *m, size_t cap)
{
	struct map_slot *old = m->slots;
	size_t oldcap = m->cap, i, j;

	m->slots = xcalloc(cap, sizeof(*m->slots));
	m->cap = cap;
	m->filled = m->used;
	for (i = 0; i < oldcap; i++) {
		if (old[i].hash <= SLOT_DELETED)
			continue;
		j = (size_t)old[i].hash & (cap - 1);
		while (m->slots[j].hash != SLOT_EMPTY)
			j = (j + 1) & (cap - 1);
		m->slots[j] = old[i];
	}
	free(old);
}

void
map_put(struct map *m, const void *key, size_t len, void *val)
{
	uint64_t h = map_hash(key, len);
	struct map_slot *s = map_find(m, key, len, h);
	size_t i;

	if (s != NULL) {
		s->val = val;
		return;
	}
	if ((m->filled + 1) * 4 >= m->cap * 3)
		map_resize(m, m->used * 2 >= m->cap / 2 ? m->cap * 2 : m->cap);
	i = (size_t)h & (m->cap - 1);
	while (m->slots[i].hash > SLOT_DELETED)
		i = (i + 1) & (m->cap - 1);
	if (m->slots[i].hash == SLOT_EMPTY)
		m->filled++;
	s = &m->slots[i];
	s->hash = h;
	s->key = xmalloc(len ? len : 1);
	memcpy(s->key, key, len);
	s->len = len;
	s->val = val;
	m->used++;
}

void *
map_get(const struct map *m, const void *key, size_t len)
{
	struct map_slot *s = map_find(m, key, len, map_hash(key, len));

	return s ? s->val : NULL;
}

void *
map_del(struct map *m, const void *key, size_t len)
{
	struct map_slot *s = map_find(m, key, len, map_hash(key, len));
	void *val;

	if (s == NULL)
		return NULL;
	val = s->val;
	free(s->key);
	s->key = NULL;
	s->val = NULL;
	s->hash = SLOT_DELETED;
	m->used--;
	return val;
}

size_t
map_count(const struct map *m)
{
	return m->used;
}

void
map_foreach(const struct map *m,
    int (*cb)(const void *, size_t, void *, void *), void *arg)
{
	size_t i;

	for (i = 0; i < m->cap; i++)
		if (m->slots[i].hash > SLOT_DELETED &&
		    cb(m->slots[i].key, m->slots[i].len, m->slots[i].val, arg))
			return;
}
