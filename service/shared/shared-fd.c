/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "hashmap.h"
#include "macro.h"
#include "shared-fd.h"

struct SharedFd {
        SharedFdKey key;                /* first: the map's key points here */
        int fd;
        unsigned n_ref;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static Hashmap *table;

static void key_hash(const void *p, SipHash *state) {
        const SharedFdKey *k = p;

        siphash24_compress(&k->dev, sizeof(k->dev), state);
        siphash24_compress(&k->ino, sizeof(k->ino), state);
        siphash24_compress(&k->mnt_id, sizeof(k->mnt_id), state);
        siphash24_compress(&k->kind, sizeof(k->kind), state);
}

static bool key_equal(const void *a, const void *b) {
        const SharedFdKey *x = a, *y = b;
        return x->dev == y->dev && x->ino == y->ino && x->mnt_id == y->mnt_id && x->kind == y->kind;
}

static const HashOps key_hash_ops = { .hash = key_hash, .equal = key_equal };

int shared_fd_key(int fd, uint64_t kind, SharedFdKey *ret) {
        struct statx stx;

        if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, STATX_INO | STATX_MNT_ID, &stx) < 0)
                return negative_errno();
        if (!(stx.stx_mask & STATX_MNT_ID) || !(stx.stx_mask & STATX_INO))
                return -EOPNOTSUPP;
        *ret = (SharedFdKey) {
                .dev = makedev(stx.stx_dev_major, stx.stx_dev_minor),
                .ino = stx.stx_ino,
                .mnt_id = stx.stx_mnt_id,
                .kind = kind,
        };
        return 0;
}

SharedFd *shared_fd_get(const SharedFdKey *key) {
        SharedFd *s;

        pthread_mutex_lock(&table_lock);
        s = table ? hashmap_get(table, key) : NULL;
        if (s)
                s->n_ref++;
        pthread_mutex_unlock(&table_lock);
        return s;
}

SharedFd *shared_fd_add(const SharedFdKey *key, int fd) {
        SharedFd *s, *existing;

        s = malloc(sizeof(*s));
        if (!s) {
                safe_close(fd);
                return NULL;
        }
        *s = (SharedFd) { .key = *key, .fd = fd, .n_ref = 1 };

        pthread_mutex_lock(&table_lock);
        existing = table ? hashmap_get(table, key) : NULL;
        if (existing)
                existing->n_ref++;
        else if ((table || hashmap_new(&key_hash_ops, &table) >= 0) && hashmap_put(table, &s->key, s) >= 0) {
                pthread_mutex_unlock(&table_lock);
                return s;
        }
        pthread_mutex_unlock(&table_lock);

        /* Outside the lock: a close may take a while, and nobody else needs to wait for it. */
        safe_close(fd);
        free(s);
        return existing;
}

int shared_fd_acquire(int fd, uint64_t kind, SharedFd **ret) {
        SharedFdKey key;
        SharedFd *s;
        int r, copy;

        r = shared_fd_key(fd, kind, &key);
        if (r < 0)
                return r;
        s = shared_fd_get(&key);
        if (!s) {
                copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (copy < 0)
                        return negative_errno();
                s = shared_fd_add(&key, copy);
                if (!s)
                        return -ENOMEM;
        }
        *ret = s;
        return 0;
}

int shared_fd_fd(const SharedFd *s) {
        return s->fd;
}

SharedFd *shared_fd_unref(SharedFd *s) {
        bool last;

        if (!s)
                return NULL;
        pthread_mutex_lock(&table_lock);
        assert(s->n_ref > 0);
        last = --s->n_ref == 0;
        if (last) {
                (void) hashmap_remove(table, &s->key);
                if (hashmap_size(table) == 0)
                        table = hashmap_free(table);
        }
        pthread_mutex_unlock(&table_lock);

        if (last) {
                safe_close(s->fd);
                free(s);
        }
        return NULL;
}

size_t shared_fd_count(void) {
        size_t n;

        pthread_mutex_lock(&table_lock);
        n = table ? hashmap_size(table) : 0;
        pthread_mutex_unlock(&table_lock);
        return n;
}
