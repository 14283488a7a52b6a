/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error-message.h"
#include "list.h"
#include "macro.h"
#include "reservations.h"

/* What two claims on the same data have in common: a key. A file has its inode's; a block device
 * its device number's, and a loop device the inode of its backing file as well; a name not
 * published yet, its directory's inode and the name. */
typedef enum KeyKind {
        KEY_INODE,
        KEY_DEVICE,
        KEY_ENTRY,
} KeyKind;

typedef struct Key {
        KeyKind kind;
        uint64_t a, b;
        const char *entry;              /* KEY_ENTRY: the name (the claim's) */
} Key;

typedef struct Entry Entry;
typedef struct KeyNode KeyNode;

/* One key of one job's set. */
struct Entry {
        bool write;
        const char *label;
        ReservationSet *set;
        uint64_t seq;                   /* order of reservation: the newest holder is named */
        KeyNode *node;
        LIST_FIELDS(Entry, holders);
};

/* Everyone who holds one key, readers and writers apart, newest first: a check looks at two list
 * heads and a release unlinks one entry, however many jobs read the same file (a thousand
 * backups of one image would otherwise make every creation and every release walk them all). */
struct KeyNode {
        Key key;                        /* KEY_ENTRY: the name is the node's own copy */
        Entry *readers, *writers;
        KeyNode *bucket_next;
};

struct Reservations {
        KeyNode **buckets;
        size_t n_buckets;
        size_t n_nodes;
        size_t n_entries;
        uint64_t seq;
};

struct ReservationSet {
        Reservations *reservations;
        FileClaim *claims;
        size_t n_claims;
        Entry *entries;                 /* once committed */
        size_t n_entries;
        char *holder;
        char *kind;
};

#define KEYS_PER_CLAIM_MAX 2

void file_claim_done(FileClaim *c) {
        free(c->entry);
        free(c->label);
        *c = (FileClaim) {};
}

static size_t claim_keys(const FileClaim *c, Key keys[static KEYS_PER_CLAIM_MAX]) {
        const struct stat *st = &c->id.st;
        size_t n = 0;

        if (c->entry)
                keys[n++] = (Key) { KEY_ENTRY, st->st_dev, st->st_ino, c->entry };
        else if (S_ISBLK(st->st_mode)) {
                keys[n++] = (Key) { KEY_DEVICE, st->st_rdev, 0, NULL };
                if (c->id.loop)
                        keys[n++] = (Key) { KEY_INODE, c->id.backing_dev, c->id.backing_ino, NULL };
        } else
                keys[n++] = (Key) { KEY_INODE, st->st_dev, st->st_ino, NULL };
        return n;
}

static bool key_equal(const Key *x, const Key *y) {
        return x->kind == y->kind && x->a == y->a && x->b == y->b &&
               (x->kind != KEY_ENTRY || strcmp(x->entry, y->entry) == 0);
}

static uint64_t key_hash(const Key *k) {
        /* FNV-1a over the fields; the table holds at most a few entries per job. */
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        uint64_t words[3] = { (uint64_t) k->kind, k->a, k->b };

        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                for (int s = 0; s < 64; s += 8) {
                        h ^= (words[i] >> s) & 0xff;
                        h *= UINT64_C(0x100000001b3);
                }
        for (const char *p = k->entry; p && *p; p++) {
                h ^= (uint8_t) *p;
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

Reservations *reservations_new(void) {
        Reservations *r = calloc(1, sizeof(*r));

        if (!r)
                return NULL;
        r->n_buckets = 64;
        r->buckets = calloc(r->n_buckets, sizeof(KeyNode *));
        if (!r->buckets) {
                free(r);
                return NULL;
        }
        return r;
}

Reservations *reservations_free(Reservations *r) {
        if (!r)
                return NULL;
        /* Every set is gone by now: each job releases its own. */
        assert(r->n_entries == 0 && r->n_nodes == 0);
        free(r->buckets);
        free(r);
        return NULL;
}

static KeyNode **bucket_of(const Reservations *r, const Key *k) {
        return &r->buckets[key_hash(k) & (r->n_buckets - 1)];
}

static KeyNode *node_find(const Reservations *r, const Key *k) {
        for (KeyNode *n = *bucket_of(r, k); n; n = n->bucket_next)
                if (key_equal(&n->key, k))
                        return n;
        return NULL;
}

static void grow(Reservations *r) {
        size_t n = r->n_buckets * 2;
        KeyNode **b = calloc(n, sizeof(KeyNode *));

        if (!b)
                return;         /* longer chains, still correct */
        for (size_t i = 0; i < r->n_buckets; i++)
                for (KeyNode *e = r->buckets[i], *next; e; e = next) {
                        next = e->bucket_next;
                        KeyNode **slot = &b[key_hash(&e->key) & (n - 1)];
                        e->bucket_next = *slot;
                        *slot = e;
                }
        free(r->buckets);
        r->buckets = b;
        r->n_buckets = n;
}

static KeyNode *node_get(Reservations *r, const Key *k) {
        KeyNode *n = node_find(r, k);

        if (n)
                return n;
        n = calloc(1, sizeof(*n));
        if (!n)
                return NULL;
        n->key = *k;
        if (k->entry && !(n->key.entry = strdup(k->entry))) {
                free(n);
                return NULL;
        }
        KeyNode **slot = bucket_of(r, k);
        n->bucket_next = *slot;
        *slot = n;
        if (++r->n_nodes > r->n_buckets)
                grow(r);
        return n;
}

static void node_free_if_unused(Reservations *r, KeyNode *n) {
        if (n->readers || n->writers)
                return;
        for (KeyNode **p = bucket_of(r, &n->key); *p; p = &(*p)->bucket_next)
                if (*p == n) {
                        *p = n->bucket_next;
                        break;
                }
        r->n_nodes--;
        free((char *) n->key.entry);
        free(n);
}

ReservationSet *reservation_set_new(Reservations *r) {
        ReservationSet *s = calloc(1, sizeof(*s));

        if (s)
                s->reservations = r;
        return s;
}

int reservation_set_add(ReservationSet *s, FileClaim *claims, size_t n) {
        FileClaim *c = reallocarray(s->claims, s->n_claims + n, sizeof(FileClaim));

        if (!c)
                return -ENOMEM;
        s->claims = c;
        for (size_t i = 0; i < n; i++) {
                s->claims[s->n_claims++] = claims[i];
                claims[i] = (FileClaim) {};
        }
        return 0;
}

static const char *conflict_word(bool mine_write) {
        return mine_write ? "in use by" : "written by";
}

/* A conflict: the same data, and one of the two writes it. */
static bool conflicts(const Key *k, bool write, const Key *other, bool other_write) {
        return (write || other_write) && key_equal(k, other);
}

static int check_claim(const ReservationSet *s, const FileClaim *c, ReservationSet *const *batch, size_t n_batch,
                       char **ret_error) {
        Key keys[KEYS_PER_CLAIM_MAX];
        size_t n = claim_keys(c, keys);

        for (size_t k = 0; k < n; k++) {
                const KeyNode *node = node_find(s->reservations, &keys[k]);
                /* A writer conflicts with any holder, a reader with writers only: name the newest. */
                const Entry *e = node ? node->writers : NULL;
                if (node && c->write && node->readers && (!e || node->readers->seq > e->seq))
                        e = node->readers;
                if (e && !e->set->holder)
                        return error_message(ret_error, -ETXTBSY, "Image '%s' is %s blockjobd's %s", c->label,
                                             conflict_word(c->write), e->set->kind);
                if (e)
                        return error_message(ret_error, -ETXTBSY, "Image '%s' is %s job '%s' (%s)", c->label,
                                             conflict_word(c->write), e->set->holder, e->set->kind);

                /* The other members of the same creation. */
                for (size_t b = 0; b < n_batch && batch[b] != s; b++)
                        for (size_t i = 0; i < batch[b]->n_claims; i++) {
                                Key other[KEYS_PER_CLAIM_MAX];
                                size_t m = claim_keys(&batch[b]->claims[i], other);
                                for (size_t j = 0; j < m; j++)
                                        if (conflicts(&keys[k], c->write, &other[j], batch[b]->claims[i].write))
                                                return error_message(ret_error, -ETXTBSY,
                                                                     "Image '%s' is used by two jobs of the transaction, and written by at least one",
                                                                     c->label);
                        }
        }
        return 0;
}

int reservation_set_check(ReservationSet *s, ReservationSet *const *batch, size_t n_batch, char **ret_error) {
        int r;

        for (size_t i = 0; i < s->n_claims; i++) {
                r = check_claim(s, &s->claims[i], batch, n_batch, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

int reservation_set_commit(ReservationSet *s, const char *holder, const char *kind) {
        Reservations *r = s->reservations;
        size_t n = 0;

        assert(!s->entries);
        s->holder = holder ? strdup(holder) : NULL;
        s->kind = strdup(kind);
        s->entries = calloc(MAX(s->n_claims * KEYS_PER_CLAIM_MAX, (size_t) 1), sizeof(Entry));
        if ((holder && !s->holder) || !s->kind || !s->entries)
                return -ENOMEM;

        for (size_t i = 0; i < s->n_claims; i++) {
                Key keys[KEYS_PER_CLAIM_MAX];
                size_t m = claim_keys(&s->claims[i], keys);
                for (size_t k = 0; k < m; k++) {
                        KeyNode *node = node_get(r, &keys[k]);
                        if (!node)
                                return -ENOMEM;         /* what is linked so far goes with the set */
                        Entry *e = &s->entries[n++];
                        *e = (Entry) {
                                .write = s->claims[i].write,
                                .label = s->claims[i].label,
                                .set = s,
                                .seq = ++r->seq,
                                .node = node,
                        };
                        if (e->write)
                                LIST_PREPEND(holders, node->writers, e);
                        else
                                LIST_PREPEND(holders, node->readers, e);
                        s->n_entries = n;
                        r->n_entries++;
                }
        }
        return 0;
}

static void unlink_entry(Reservations *r, Entry *e) {
        KeyNode *node = e->node;

        if (e->write)
                LIST_REMOVE(holders, node->writers, e);
        else
                LIST_REMOVE(holders, node->readers, e);
        r->n_entries--;
        node_free_if_unused(r, node);
}

ReservationSet *reservation_set_free(ReservationSet *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_entries; i++)
                unlink_entry(s->reservations, &s->entries[i]);
        free(s->entries);
        for (size_t i = 0; i < s->n_claims; i++)
                file_claim_done(&s->claims[i]);
        free(s->claims);
        free(s->holder);
        free(s->kind);
        free(s);
        return NULL;
}
