/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The drivers as the tests call them: by name. The files are opened in this process, as
 * blockjobd-opener opens them (open-files.h), then handed to the driver as descriptors, so
 * that every driver test goes through the one way the daemon gives a job its files. */

#include <stdbool.h>
#include <stdint.h>

#include "backup.h"
#include "commit.h"
#include "mirror.h"
#include "stream.h"

typedef struct TestBackupParams {
        const char *source;
        const char *target;
        ImageFormat source_format;
        bool overwrite;
        bool sync_top;
        ImageFormat target_format;
        uint64_t chunk_size;
        bool named_temp_file;           /* do not use O_TMPFILE (tests of the fallback) */
        const char *bitmap;             /* the source opened read-write, as the factory has the
                                         * opener open it, unless bitmap_mode is never or
                                         * source_read_only */
        BitmapSyncMode bitmap_mode;
        bool sync_bitmap;
        bool source_read_only;
        const char *target_backing;     /* as recorded; opened relative to the target's directory */
        ImageFormat target_backing_format;
        bool target_passed;             /* 'target' opened (created if need be) and passed as a
                                         * caller's target-fd: written in place */
        DriverResume resume;            /* built again after a restart: see 'hidden' */
        const char *hidden;             /* with resume: the new target's hidden name (in the
                                         * directory of 'target'), reopened as the opener does */
} TestBackupParams;

typedef struct TestMirrorParams {
        const char *source;
        const char *target;
        ImageFormat source_format;
        bool overwrite;
        bool sync_top;
        ImageFormat target_format;
        uint32_t granularity;
        uint64_t buf_size;
        uint64_t poll_ns;
        uint64_t max_interval_ns;
        bool named_temp_file;
        DriverResume resume;            /* as TestBackupParams */
        const char *hidden;
} TestMirrorParams;

typedef struct TestCommitParams {
        const char *image;
        const char *top;
        const char *base;
        const char *backing_file;
        ImageFormat base_format;
} TestCommitParams;

typedef struct TestStreamParams {
        const char *image;
        const char *base;
        const char *backing_file;
        ImageFormat base_format;
} TestStreamParams;

int test_backup_open(const TestBackupParams *p, Backup **ret, char **ret_error);
int test_mirror_open(const TestMirrorParams *p, Mirror **ret, char **ret_error);
int test_commit_open(const TestCommitParams *p, Commit **ret, char **ret_error);
int test_stream_open(const TestStreamParams *p, Stream **ret, char **ret_error);
