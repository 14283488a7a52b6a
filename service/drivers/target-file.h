/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the copying drivers (backup, mirror) share about raw images: opening a source (a regular
 * file or a block device, read-only), and a target that is built unseen and published at commit
 * (see tmpfile.h), with the checks that must fail early rather than late. */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "tmpfile.h"

#include "job-driver.h"

typedef struct RawSource {
        int fd;
        char *path;
        struct stat st;
        uint64_t size;
        atomic_uint_fast64_t io_calls;  /* reads, for tests */
} RawSource;

typedef struct RawTarget {
        TmpFile file;
        char *path;
        bool overwrite;
        atomic_uint_fast64_t io_calls;  /* writes, for tests */
} RawTarget;

#define RAW_SOURCE_NULL { .fd = -EBADF }
#define RAW_TARGET_NULL { .file = TMPFILE_NULL }

/* Failures return a negative errno and a message naming the file; -EINVAL means a bad argument
 * (not a regular file or block device, source and target the same), anything else an image
 * that cannot be used. */
int raw_source_open(RawSource *s, const char *path, char **ret_error);
void raw_source_close(RawSource *s);

/* Checks the target path against the source and creates the unpublished file, 'size' bytes,
 * sparse, with the source's permission bits ('source_st' describes the source's top file). */
int raw_target_open(RawTarget *t, const char *path, const struct stat *source_st, uint64_t size, bool overwrite,
                    bool named_temp_file, char **ret_error);
/* For a step (worker thread): read or write exactly 'len' bytes at 'offset'. A failure is put
 * through the job's error policy for the source (reads) or the target (writes), with a message
 * naming the file and the offset, and returned. */
int raw_source_read(RawSource *s, Job *j, JobStepResult *out, void *buf, size_t len, uint64_t offset);
int raw_target_write(RawTarget *t, Job *j, JobStepResult *out, const void *buf, size_t len, uint64_t offset);

/* Prepare: flush, and refuse if the target appeared meanwhile (without overwrite). */
int raw_target_prepare(RawTarget *t, char **ret_error);
/* Commit: publish under the final name; on failure keep the data and say where. */
void raw_target_commit(RawTarget *t, Job *j);
/* Abort, clean: remove an unpublished target, close. */
void raw_target_discard(RawTarget *t);
