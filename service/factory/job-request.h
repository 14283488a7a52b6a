/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What a caller asks for when it creates a job: the type, the names, the options (each checked
 * by the bus layer as it read them, bus-options.c), and any descriptors it passed instead of
 * names. The job factory (job-factory.h) turns it into a job. */

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "job-files.h"
#include "job-lifecycle.h"

typedef enum SyncMode {
        SYNC_FULL,
        SYNC_TOP,
} SyncMode;

typedef struct JobRequest {
        JobType type;
        char *source;                   /* backup, mirror: the source; commit, stream: the image */
        char *target;                   /* backup, mirror */

        char *job_id;                   /* NULL: picked */
        uint64_t speed;
        bool auto_finalize;
        bool auto_dismiss;
        JobOnError on_source_error;
        JobOnError on_target_error;

        SyncMode sync;
        ImageFormat source_format;      /* source-format, image-format; PROBE: not given */
        ImageFormat target_format;      /* format; PROBE: the source's */
        ImageFormat base_format;        /* PROBE: not given */
        bool overwrite;
        uint32_t granularity;           /* 0: the driver's default */
        uint64_t buf_size;              /* 0: the driver's default */

        char *top;
        char *base;
        char *backing_file;

        /* Descriptors the caller passed: then 'source' and 'target' only label them. */
        JobFiles files;
        bool chain_passed;
        bool target_passed;
} JobRequest;

#define JOB_REQUEST_INIT { .auto_finalize = true, .auto_dismiss = true, .files = JOB_FILES_INIT }

void job_request_done(JobRequest *r);
