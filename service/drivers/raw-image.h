/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the copying drivers (backup, mirror) share about raw images: opening a source (a regular
 * file or a block device, read-only), and a target that is built unseen and published at commit
 * (see tmpfile.h), with the checks that must fail early rather than late. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "tmpfile.h"

typedef struct Job Job;

typedef struct RawSource {
        int fd;
        char *path;
        struct stat st;
        uint64_t size;
} RawSource;

typedef struct RawTarget {
        TmpFile file;
        char *path;
        bool overwrite;
} RawTarget;

#define RAW_SOURCE_NULL { .fd = -EBADF }
#define RAW_TARGET_NULL { .file = TMPFILE_NULL }

/* Failures return a negative errno and a message naming the file; -EINVAL means a bad argument
 * (not a regular file or block device, source and target the same), anything else an image
 * that cannot be used. */
int raw_source_open(RawSource *s, const char *path, char **ret_error);
void raw_source_close(RawSource *s);

/* Checks the target path against the source and creates the unpublished file, 'size' bytes,
 * sparse. */
int raw_target_open(RawTarget *t, const char *path, const RawSource *source, bool overwrite, bool named_temp_file,
                    char **ret_error);
/* Prepare: flush, and refuse if the target appeared meanwhile (without overwrite). */
int raw_target_prepare(RawTarget *t, char **ret_error);
/* Commit: publish under the final name; on failure keep the data and say where. */
void raw_target_commit(RawTarget *t, Job *j);
/* Abort, clean: remove an unpublished target, close. */
void raw_target_discard(RawTarget *t);
