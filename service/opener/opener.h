/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A job's files, opened with its caller's rights rather than the daemon's.
 *
 * Root's path-based calls open files by name, as root would. For everyone else the daemon opens
 * nothing by name: either the caller passed descriptors (the source-fd, target-fd, image-fd and
 * chain-fds options), or blockjobd-opener (opener-main.c), started for the call, becomes the
 * caller and opens the files as the caller could, and the descriptors come back over a socket.
 * Either way the result is a CallerFiles, which the drivers take instead of names. */

#include <stdbool.h>
#include <sys/types.h>

#include "image.h"
#include "target-file.h"

typedef struct CallerFiles {
        /* The source's (backup, mirror) or image's (commit, stream) chain, top first; none: the
         * chain is opened by name. */
        int chain[IMAGE_CHAIN_DEPTH_MAX];
        size_t n_chain;

        /* The target: none (-EBADF), one to write in place (target_dir_fd < 0), or a new file
         * to publish in target_dir_fd as target_name. */
        int target_fd;
        int target_dir_fd;
        char *target_name;
        char *target_temp_name;         /* its hidden name, or NULL; removed by caller_files_done()
                                         * unless caller_files_hand_over() was called */
        uid_t owner;                    /* whom the opener made the new file for */
} CallerFiles;

#define CALLER_FILES_NULL { .target_fd = -EBADF, .target_dir_fd = -EBADF }

void caller_files_done(CallerFiles *f);
/* A driver took the target over (it removes the file itself if it must). */
void caller_files_hand_over(CallerFiles *f);
/* The chain, and the target, as the drivers take them (NULL: not given). */
const ImageChainFds *caller_files_chain(const CallerFiles *f, ImageChainFds *buf);
const TargetGiven *caller_files_target(const CallerFiles *f, TargetGiven *buf);

/* Who to open as, and what. */
typedef struct OpenerRequest {
        uid_t uid;                      /* the gid is the user's primary group */
        const gid_t *groups;
        size_t n_groups;
        bool groups_from_user_database; /* groups unknown: the user's, from the database */
        const char *chain_path;         /* NULL: no chain */
        bool chain_write;               /* the image is written (commit, stream) */
        const char *target_path;        /* NULL: no target */
        bool target_overwrite;
} OpenerRequest;

/* Runs blockjobd-opener ($BLOCKJOBD_OPENER, or the installed one) for 'req' and adds what it
 * opened to 'f'. Blocking (a worker's job). Fails with the opener's own error (-EACCES for a file
 * the caller may not open, and a message naming it), or -ETIMEDOUT if it did not answer in time. */
int opener_open(const OpenerRequest *req, CallerFiles *f, char **ret_error);
