/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Open file descriptions that jobs share, so that a daemon with thousands of jobs on a few files
 * does not hold a descriptor per job and file: a read-only image layer (image.c), the directory a
 * new target is published in (target-file.c).
 *
 * One process-wide table, keyed by what makes two descriptions interchangeable for their users:
 * the file (st_dev, st_ino), the mount it was reached through (a clone or a link between two
 * mounts of one file system fails with EXDEV, so a description from another mount would not do
 * the same), and a 'kind' that the user chooses (how it was opened, which locks it holds). An
 * entry is refcounted and closed with its last user; a mutex keeps it right for the worker
 * threads that open and close images. Nothing that changes a description's state (its locks,
 * its flags) may be done on one from this table: its other users would see it too. */

#include <stdint.h>
#include <sys/types.h>

typedef struct SharedFdKey {
        dev_t dev;
        ino_t ino;
        uint64_t mnt_id;
        uint64_t kind;
} SharedFdKey;

typedef struct SharedFd SharedFd;

/* The key of the file behind 'fd', for 'kind'. -EOPNOTSUPP where the mount cannot be told (the
 * descriptor is then not to be shared). */
int shared_fd_key(int fd, uint64_t kind, SharedFdKey *ret);

/* The entry for 'key', with a reference taken, or NULL. */
SharedFd *shared_fd_get(const SharedFdKey *key);
/* Adds 'fd' (taken over, whatever happens) under 'key'. If an entry came first meanwhile, 'fd'
 * is closed and that entry is referenced instead. NULL (and 'fd' closed) only on -ENOMEM. */
SharedFd *shared_fd_add(const SharedFdKey *key, int fd);
/* Either of the above, on a duplicate of 'fd' (not a new description: 'fd' must be shareable as
 * it is). Returns 0, or a negative errno (then nothing was taken). */
int shared_fd_acquire(int fd, uint64_t kind, SharedFd **ret);

int shared_fd_fd(const SharedFd *s);
/* Drops a reference; the last one closes the descriptor. Returns NULL. */
SharedFd *shared_fd_unref(SharedFd *s);

/* Entries in the table (tests). */
size_t shared_fd_count(void);
