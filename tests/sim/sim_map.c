/* sim_map.c: a chained hash table from strings to pointers, for the simulator's indexes. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* FNV-1a, 64 bit. */
static uint64_t
map_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (*s) {
		h ^= (unsigned char)*s++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

void
sim_map_init(struct sim_map *m)
{
	m->nb = 64;
	m->n = 0;
	m->b = xcalloc(m->nb, sizeof(*m->b));
}

static struct sim_map_ent *
map_find(const struct sim_map *m, const char *key, uint64_t h)
{
	struct sim_map_ent *e;

	for (e = m->b[h & (m->nb - 1)]; e != NULL; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

void *
sim_map_get(const struct sim_map *m, const char *key)
{
	struct sim_map_ent *e;

	if (key == NULL)
		return NULL;
	e = map_find(m, key, map_hash(key));
	return e ? e->val : NULL;
}

/* Double the bucket array when the load passes 1. */
static void
map_grow(struct sim_map *m)
{
	struct sim_map_ent **nb, *e, *next;
	size_t i, n = m->nb * 2;

	nb = xcalloc(n, sizeof(*nb));
	for (i = 0; i < m->nb; i++)
		for (e = m->b[i]; e != NULL; e = next) {
			next = e->next;
			e->next = nb[e->hash & (n - 1)];
			nb[e->hash & (n - 1)] = e;
		}
	free(m->b);
	m->b = nb;
	m->nb = n;
}

void *
sim_map_put(struct sim_map *m, const char *key, void *val)
{
	uint64_t h = map_hash(key);
	struct sim_map_ent *e = map_find(m, key, h);
	void *old;

	if (e != NULL) {
		old = e->val;
		e->val = val;
		return old;
	}
	if (m->n >= m->nb)
		map_grow(m);
	e = xmalloc(sizeof(*e));
	e->hash = h;
	e->key = xstrdup(key);
	e->val = val;
	e->next = m->b[h & (m->nb - 1)];
	m->b[h & (m->nb - 1)] = e;
	m->n++;
	return NULL;
}

void *
sim_map_del(struct sim_map *m, const char *key)
{
	uint64_t h = map_hash(key);
	struct sim_map_ent **pp, *e;
	void *val;

	for (pp = &m->b[h & (m->nb - 1)]; (e = *pp) != NULL; pp = &e->next)
		if (e->hash == h && strcmp(e->key, key) == 0) {
			*pp = e->next;
			val = e->val;
			free(e->key);
			free(e);
			m->n--;
			return val;
		}
	return NULL;
}

void
sim_map_foreach(const struct sim_map *m, void (*fn)(const char *, void *, void *),
    void *arg)
{
	struct sim_map_ent *e, *next;
	size_t i;

	for (i = 0; i < m->nb; i++)
		for (e = m->b[i]; e != NULL; e = next) {
			next = e->next;
			fn(e->key, e->val, arg);
		}
}

void
sim_map_free(struct sim_map *m, void (*fn)(void *))
{
	struct sim_map_ent *e, *next;
	size_t i;

	if (m->b == NULL)
		return;
	for (i = 0; i < m->nb; i++)
		for (e = m->b[i]; e != NULL; e = next) {
			next = e->next;
			if (fn != NULL)
				fn(e->val);
			free(e->key);
			free(e);
		}
	free(m->b);
	m->b = NULL;
	m->nb = m->n = 0;
}
