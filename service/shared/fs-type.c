/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs-type.h"
#include "macro.h"

static int fd_mount_id(int fd, int *ret) {
        char path[64], line[256];
        _cleanup_(fclosep) FILE *f = NULL;

        (void) snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "mnt_id: %d", ret) == 1)
                        return 0;
        return -ENOENT;
}

char *fd_fs_type(int fd) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        int id, r;

        r = fd_mount_id(fd, &id);
        if (r < 0) {
                errno = -r;
                return NULL;
        }
        f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return NULL;
        /* "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue" */
        while (getline(&line, &size, f) > 0) {
                const char *sep;
                int this_id;
                char type[64];

                if (sscanf(line, "%d ", &this_id) != 1 || this_id != id)
                        continue;
                sep = strstr(line, " - ");
                if (!sep || sscanf(sep + 3, "%63s", type) != 1)
                        break;
                return strdup(type);
        }
        errno = ENOENT;
        return NULL;
}

char *fd_fuse_type(int fd) {
        char *type = fd_fs_type(fd);

        if (type && (strcmp(type, "fuse") == 0 || strcmp(type, "fuseblk") == 0 || strncmp(type, "fuse.", 5) == 0))
                return type;
        free(type);
        return NULL;
}
