/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The type of the file system a descriptor's file is on, told by /proc (the descriptor's mount
 * id, and that mount's line in mountinfo), so that nothing is asked of the file system itself:
 * a FUSE file system's server may never answer. */

#include <stdbool.h>

/* The type as mountinfo names it ("ext4", "fuse.sshfs", ...): a new string, or NULL with errno
 * set when it cannot be told. */
char *fd_fs_type(int fd);

/* Is the file on a file system served by a process (FUSE)? Such a server can make any call on
 * the file, and even close(), wait for ever; the daemon does not use such files. Returns the
 * type (free it), or NULL if the file is elsewhere or it cannot be told. */
char *fd_fuse_type(int fd);
