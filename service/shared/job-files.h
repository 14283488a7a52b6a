/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A job's files, as descriptors: the image chain, top first, and the target. This is the one form
 * in which files reach a job. Names are resolved exactly once, by whoever fills this in: the
 * caller, which passed descriptors (source-fd, image-fd, chain-fds, target-fd), or
 * blockjobd-opener, which resolved the caller's names with the caller's rights. From then on the
 * daemon looks nothing up by name: images are opened from these descriptors (each reopened
 * through /proc into a description of its own, which holds its locks), and a new target is
 * published in the directory it was created in. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "macro.h"

/* As deep as a backing chain may be (IMAGE_CHAIN_DEPTH_MAX). */
#define JOB_FILES_CHAIN_MAX 64

typedef struct JobFiles {
        int chain[JOB_FILES_CHAIN_MAX];
        size_t n_chain;

        /* The target: none (target_fd < 0); a file written in place (target_dir_fd < 0): a block
         * device, or a file the caller passed; or a new, empty file to publish in target_dir_fd
         * as target_name, hidden until then (unnamed, or as target_temp_name). */
        int target_fd;
        int target_dir_fd;
        char *target_name;
        char *target_temp_name;         /* removed by job_files_done() unless handed over */
        uid_t target_owner;             /* a new file: whom it was made for (who may replace what) */
        int target_replaced_fd;         /* a new file: what its name holds now, to be replaced (a
                                         * regular file open for reading, anything else O_PATH);
                                         * -EBADF: the name was free */
} JobFiles;

#define JOB_FILES_INIT { .target_fd = -EBADF, .target_dir_fd = -EBADF, .target_replaced_fd = -EBADF }

/* Closes everything; a named temporary target nobody took over is removed. */
void job_files_done(JobFiles *f);
/* Appends a layer (takes the descriptor); -E2BIG if the chain is full. */
int job_files_add_layer(JobFiles *f, int fd);
/* A new target; takes the descriptors (replaced_fd: what the name holds now, or -EBADF), copies
 * the names. */
int job_files_set_new_target(JobFiles *f, int fd, int dir_fd, const char *name, const char *temp_name, uid_t owner,
                             int replaced_fd);
/* A target written in place; takes the descriptor. */
void job_files_set_target_in_place(JobFiles *f, int fd);
/* A job took the target over: from now on it removes the file itself if it must. */
void job_files_hand_over(JobFiles *f);

static inline bool job_files_has_target(const JobFiles *f) {
        return f->target_fd >= 0;
}
