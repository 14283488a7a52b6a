/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "image-internal.h"
#include "lock.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

static const char *const perm_names[] = { "consistent read", "write", "write unchanged", "resize" };

static int lock_byte(int fd, int offset, short type) {
        struct flock fl = {
                .l_type = type,
                .l_whence = SEEK_SET,
                .l_start = offset,
                .l_len = 1,
        };
        return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? negative_errno() : 0;
}

/* Would an exclusive lock on the byte conflict with someone else's? (Our own locks, on this open
 * file description, never do.) */
static int byte_taken(int fd, int offset) {
        struct flock fl = {
                .l_type = F_WRLCK,
                .l_whence = SEEK_SET,
                .l_start = offset,
                .l_len = 1,
        };
        if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
                return negative_errno();
        return fl.l_type != F_UNLCK;
}

int image_lock_held_by_others(int fd, uint64_t perm) {
        for (unsigned i = 0; i < ELEMENTSOF(perm_names); i++) {
                if (!(perm & (UINT64_C(1) << i)))
                        continue;
                int r = byte_taken(fd, LOCK_PERM_BASE + i);
                if (r != 0)
                        return r;
        }
        return 0;
}

static void unlock_all(int fd) {
        for (unsigned i = 0; i < ELEMENTSOF(perm_names); i++) {
                (void) lock_byte(fd, LOCK_PERM_BASE + i, F_UNLCK);
                (void) lock_byte(fd, LOCK_SHARED_BASE + i, F_UNLCK);
        }
}

int image_lock(int fd, uint64_t perm, uint64_t shared, const char *path, char **ret_error) {
        int r;

        for (unsigned i = 0; i < ELEMENTSOF(perm_names); i++) {
                uint64_t bit = UINT64_C(1) << i;

                if ((perm & bit) && (r = lock_byte(fd, LOCK_PERM_BASE + i, F_RDLCK)) < 0)
                        goto fail_lock;
                if (!(shared & bit) && (r = lock_byte(fd, LOCK_SHARED_BASE + i, F_RDLCK)) < 0)
                        goto fail_lock;
        }

        for (unsigned i = 0; i < ELEMENTSOF(perm_names); i++) {
                uint64_t bit = UINT64_C(1) << i;

                /* Someone denies what we want to have... */
                if (perm & bit) {
                        r = byte_taken(fd, LOCK_SHARED_BASE + i);
                        if (r != 0) {
                                unlock_all(fd);
                                return error_message(ret_error, r < 0 ? r : -EBUSY,
                                                     "Image '%s' is in use by another process: failed to get \"%s\" lock",
                                                     path, perm_names[i]);
                        }
                }
                /* ...or has what we want to deny. */
                if (!(shared & bit)) {
                        r = byte_taken(fd, LOCK_PERM_BASE + i);
                        if (r != 0) {
                                unlock_all(fd);
                                return error_message(ret_error, r < 0 ? r : -EBUSY,
                                                     "Image '%s' is in use by another process: failed to get shared \"%s\" lock",
                                                     path, perm_names[i]);
                        }
                }
        }
        return 0;

fail_lock:
        unlock_all(fd);
        return error_message(ret_error, r, "Could not lock image '%s': %m", path);
}
