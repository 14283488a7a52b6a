/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "hashmap.h"
#include "macro.h"

#define HASHMAP_MIN_CAPACITY 8U

typedef struct HashEntry {
        const void *key;                /* NULL: a free slot */
        void *value;
        uint64_t hash;
} HashEntry;

struct Hashmap {
        const HashOps *ops;
        uint8_t key[SIPHASH_KEY_SIZE];
        HashEntry *entries;
        size_t capacity;                /* a power of two */
        size_t size;
};

static void string_hash(const void *key, SipHash *state) {
        const char *s = key;
        siphash24_compress(s, strlen(s) + 1, state);
}

static bool string_equal(const void *a, const void *b) {
        return strcmp(a, b) == 0;
}

const HashOps string_hash_ops = {
        .hash = string_hash,
        .equal = string_equal,
};

static void random_key(uint8_t key[SIPHASH_KEY_SIZE]) {
        static const uint8_t fixed[SIPHASH_KEY_SIZE] = {};
        struct timespec ts = {};
        uint64_t mix[4];

        /* Early in boot the pool may not be ready; a key that is merely hard to guess is still far
         * better than none, and blocking here would stall the daemon. */
        if (getrandom(key, SIPHASH_KEY_SIZE, GRND_NONBLOCK) == SIPHASH_KEY_SIZE)
                return;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        mix[0] = (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
        (void) clock_gettime(CLOCK_REALTIME, &ts);
        mix[1] = (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
        mix[2] = (uint64_t) getpid();
        mix[3] = (uint64_t) (uintptr_t) key;
        uint64_t a = siphash24(mix, sizeof(mix), fixed), b = siphash24(&a, sizeof(a), fixed);
        memcpy(key, &a, sizeof(a));
        memcpy(key + sizeof(a), &b, sizeof(b));
}

int hashmap_new(const HashOps *ops, Hashmap **ret) {
        Hashmap *h;

        assert(ops && ops->hash && ops->equal && ret);

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->ops = ops;
        random_key(h->key);
        *ret = h;
        return 0;
}

Hashmap *hashmap_free(Hashmap *h) {
        if (!h)
                return NULL;
        free(h->entries);
        free(h);
        return NULL;
}

static uint64_t hash_key(const Hashmap *h, const void *key) {
        SipHash state;

        siphash24_init(&state, h->key);
        h->ops->hash(key, &state);
        return siphash24_finalize(&state);
}

/* The slot holding an equal key, or the free slot where the probe for it ends. */
static size_t find_slot(const Hashmap *h, const void *key, uint64_t hash) {
        size_t mask = h->capacity - 1;

        for (size_t i = hash & mask;; i = (i + 1) & mask) {
                const HashEntry *e = &h->entries[i];
                if (!e->key || (e->hash == hash && h->ops->equal(e->key, key)))
                        return i;
        }
}

static int resize(Hashmap *h, size_t capacity) {
        HashEntry *old = h->entries, *entries;
        size_t old_capacity = h->capacity;

        entries = calloc(capacity, sizeof(HashEntry));
        if (!entries)
                return -ENOMEM;

        h->entries = entries;
        h->capacity = capacity;
        for (size_t i = 0; i < old_capacity; i++)
                if (old[i].key)
                        h->entries[find_slot(h, old[i].key, old[i].hash)] = old[i];
        free(old);
        return 0;
}

int hashmap_put(Hashmap *h, const void *key, void *value) {
        uint64_t hash;
        size_t i;
        int r;

        assert(h && key && value);

        hash = hash_key(h, key);
        if (h->capacity > 0 && h->entries[find_slot(h, key, hash)].key)
                return -EEXIST;

        /* At most 3/4 full, so that every probe ends soon at a free slot. */
        if ((h->size + 1) * 4 > h->capacity * 3) {
                r = resize(h, h->capacity > 0 ? h->capacity * 2 : HASHMAP_MIN_CAPACITY);
                if (r < 0)
                        return r;
        }

        i = find_slot(h, key, hash);
        h->entries[i] = (HashEntry) { .key = key, .value = value, .hash = hash };
        h->size++;
        return 0;
}

void *hashmap_get(const Hashmap *h, const void *key) {
        if (!h || h->size == 0 || !key)
                return NULL;
        return h->entries[find_slot(h, key, hash_key(h, key))].value;
}

void *hashmap_remove(Hashmap *h, const void *key) {
        size_t mask, hole, i;
        void *value;

        if (!h || h->size == 0 || !key)
                return NULL;

        mask = h->capacity - 1;
        hole = find_slot(h, key, hash_key(h, key));
        if (!h->entries[hole].key)
                return NULL;
        value = h->entries[hole].value;

        /* Backward shift: pull each later entry of the run into the hole if the hole lies between
         * its home slot and where it sits now, so that no probe ever stops early at the hole. */
        for (i = (hole + 1) & mask; h->entries[i].key; i = (i + 1) & mask) {
                size_t home = h->entries[i].hash & mask;
                if (((i - home) & mask) >= ((i - hole) & mask)) {
                        h->entries[hole] = h->entries[i];
                        hole = i;
                }
        }
        h->entries[hole] = (HashEntry) {};
        h->size--;

        /* Give memory back after a burst, but not down to nothing: a map that empties and fills
         * again should not reallocate every time. */
        if (h->capacity > HASHMAP_MIN_CAPACITY && h->size * 8 < h->capacity)
                (void) resize(h, h->capacity / 2);
        return value;
}

size_t hashmap_size(const Hashmap *h) {
        return h ? h->size : 0;
}

size_t hashmap_capacity(const Hashmap *h) {
        return h ? h->capacity : 0;
}
