/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What a caller asks for when it creates a job: the type, the names, the options (each checked
 * by the bus layer as it read them, bus-options.c), and any descriptors it passed instead of
 * names. The job factory (job-factory.h) turns it into a job. */

#include <stdbool.h>
#include <stdint.h>

#include "backup-bitmap.h"
#include "driver-resume.h"
#include "image.h"
#include "job-files.h"
#include "job-lifecycle.h"
#include "job.h"

typedef enum SyncMode {
        SYNC_FULL,
        SYNC_TOP,
        SYNC_BITMAP,                    /* backup: what 'bitmap' marks */
        SYNC_INCREMENTAL,               /* as read; the bus layer makes it bitmap + on-success, as QEMU */
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

        /* Backup: a persistent bitmap of the source's top layer and what becomes of it
         * (bitmap_mode_given: the option was given); target-backing, as recorded, and its format
         * (PROBE: as the file is); its chain, opened read-only with the caller's rights. */
        char *bitmap;
        BitmapSyncMode bitmap_mode;
        bool bitmap_mode_given;
        char *target_backing;
        char *target_backing_path;      /* where it is opened: relative to the target's directory */
        ImageFormat target_backing_format;
        JobFiles target_backing_files;

        /* Descriptors the caller passed: then 'source' and 'target' only label them. */
        JobFiles files;
        bool chain_passed;
        bool target_passed;

        /* A job that existed before the daemon stopped, built again from its record (persist.h):
         * created directly in its recorded status (restore_params; .create is the factory's to
         * fill in), its driver continuing from 'resume', and a new target's unfinished file
         * reopened under its hidden name 'target_resume_name' instead of made anew. */
        bool restore;
        JobRestoreParams restore_params;
        DriverResume resume;
        char *target_resume_name;
} JobRequest;

#define JOB_REQUEST_INIT { .auto_finalize = true, .auto_dismiss = true, .files = JOB_FILES_INIT, \
                           .target_backing_files = JOB_FILES_INIT }

/* Does the job write the source's top layer (its bitmap: never its data)? */
static inline bool job_request_writes_bitmap(const JobRequest *q) {
        return q->type == JOB_TYPE_BACKUP && q->bitmap && q->bitmap_mode != BITMAP_SYNC_NEVER;
}

void job_request_done(JobRequest *r);
