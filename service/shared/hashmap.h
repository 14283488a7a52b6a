/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A small hash table from keys to values, both borrowed pointers: the map never copies or frees
 * what they point to, so a key usually lives inside its value (a job's id inside the job).
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones), at most 3/4
 * full. The hash is SipHash-2-4 under a random key chosen per map, so that keys picked by a caller
 * cannot be made to collide on purpose. Lookups, insertions and removals take constant expected
 * time; only an insertion allocates, and it may fail with -ENOMEM. Not thread-safe. */

#include <stdbool.h>
#include <stddef.h>

#include "siphash24.h"

typedef struct HashOps {
        /* Feed the key's identity into the hash (siphash24_compress()). */
        void (*hash)(const void *key, SipHash *state);
        /* Do two keys name the same thing? Must agree with hash. */
        bool (*equal)(const void *a, const void *b);
} HashOps;

/* Keys that are NUL-terminated strings. */
extern const HashOps string_hash_ops;

typedef struct Hashmap Hashmap;

int hashmap_new(const HashOps *ops, Hashmap **ret);
/* Frees the table only; keys and values stay the caller's. */
Hashmap *hashmap_free(Hashmap *h);

/* -EEXIST if an equal key is present (the map is unchanged), -ENOMEM. Neither key nor value may
 * be NULL. */
int hashmap_put(Hashmap *h, const void *key, void *value);
/* The value stored under an equal key, or NULL. */
void *hashmap_get(const Hashmap *h, const void *key);
/* Removes the entry under an equal key and returns its value, or NULL if there was none. Never
 * fails (it may keep a larger table than needed if shrinking runs out of memory). */
void *hashmap_remove(Hashmap *h, const void *key);
size_t hashmap_size(const Hashmap *h);
/* The number of slots, for tests of the growth and shrink rules. */
size_t hashmap_capacity(const Hashmap *h);
