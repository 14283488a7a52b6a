/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The file behind a descriptor, reached through /proc's magic link: no name is looked up, so
 * whatever happened to the file's name since it was opened does not matter. */

#include <fcntl.h>
#include <stdio.h>

#include "macro.h"

#define PROC_FD_PATH_MAX 32

static inline const char *proc_fd_path(char buf[static PROC_FD_PATH_MAX], int fd) {
        (void) snprintf(buf, PROC_FD_PATH_MAX, "/proc/self/fd/%d", fd);
        return buf;
}

/* A new open file description of the same file, opened with 'flags' (the file's permissions
 * are checked as for any open). Returns the descriptor, or a negative errno. */
static inline int fd_reopen(int fd, int flags) {
        char path[PROC_FD_PATH_MAX];
        int r = open(proc_fd_path(path, fd), flags | O_CLOEXEC | O_NOCTTY);
        return r < 0 ? negative_errno() : r;
}
