/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>

#include "file-identity.h"
#include "macro.h"

#define LOOP_MAJOR_NUMBER 7

int file_identity(int fd, FileIdentity *ret) {
        struct loop_info64 info;

        *ret = (FileIdentity) {};
        if (fstat(fd, &ret->st) < 0)
                return negative_errno();
        /* A loop device writes into the file it is backed by, behind every lock of that file's. */
        if (S_ISBLK(ret->st.st_mode) && major(ret->st.st_rdev) == LOOP_MAJOR_NUMBER &&
            ioctl(fd, LOOP_GET_STATUS64, &info) >= 0) {
                ret->loop = true;
                ret->backing_dev = (dev_t) info.lo_device;
                ret->backing_ino = (ino_t) info.lo_inode;
        }
        return 0;
}

static bool same_inode(const struct stat *a, const struct stat *b) {
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static bool is_backing_of(const FileIdentity *loop, const FileIdentity *f) {
        return loop->loop && !S_ISBLK(f->st.st_mode) && loop->backing_dev == f->st.st_dev &&
               loop->backing_ino == f->st.st_ino;
}

bool file_identity_same(const FileIdentity *a, const FileIdentity *b) {
        if (same_inode(&a->st, &b->st))
                return true;
        if (S_ISBLK(a->st.st_mode) && S_ISBLK(b->st.st_mode))
                return a->st.st_rdev == b->st.st_rdev ||
                       (a->loop && b->loop && a->backing_dev == b->backing_dev && a->backing_ino == b->backing_ino);
        return is_backing_of(a, b) || is_backing_of(b, a);
}
