/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* QEMU's image locks (block/file-posix.c), so that blockjobd and QEMU (qemu-system, qemu-img,
 * qemu-io, qemu-storage-daemon) respect each other's use of an image.
 *
 * A process holding permission i takes a shared OFD lock on byte 100 + i of the image file; one
 * that does not let others have permission i takes a shared OFD lock on byte 200 + i. Before
 * taking permission i it tests that nobody holds byte 200 + i, and before denying it to others
 * that nobody holds byte 100 + i. The locks belong to the open file description: they go when
 * the descriptor is closed, so they live as long as the image is open. */

#include <stdint.h>

#define IMAGE_PERM_CONSISTENT_READ  UINT64_C(0x1)
#define IMAGE_PERM_WRITE            UINT64_C(0x2)
#define IMAGE_PERM_WRITE_UNCHANGED  UINT64_C(0x4)
#define IMAGE_PERM_RESIZE           UINT64_C(0x8)
#define IMAGE_PERM_ALL              UINT64_C(0xf)

/* Takes 'perm' and denies what 'shared' leaves out. On a conflict, releases what it took and
 * fails with -EBUSY and a message naming the file and the permission. */
int image_lock(int fd, uint64_t perm, uint64_t shared, const char *path, char **ret_error);

/* Does another open file description (another process, or another open of the file in this one)
 * hold any of 'perm'? Only tests (F_OFD_GETLK), taking nothing; the locks of the open file
 * description of 'fd' itself do not count. Returns 1, 0, or a negative errno. */
int image_lock_held_by_others(int fd, uint64_t perm);
