/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Which file a descriptor is, for telling whether two descriptors reach the same data: the same
 * inode, the same block device under any name, or a loop device and the file behind it. */

#include <stdbool.h>
#include <sys/stat.h>

typedef struct FileIdentity {
        struct stat st;
        bool loop;                      /* a loop device, backed by the file below */
        dev_t backing_dev;
        ino_t backing_ino;
} FileIdentity;

/* Fills 'ret' for 'fd'; a negative errno if it cannot be stat'ed. */
int file_identity(int fd, FileIdentity *ret);
bool file_identity_same(const FileIdentity *a, const FileIdentity *b);
