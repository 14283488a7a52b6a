/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The a{sv} options of the Manager's job-creating methods. Every key is checked against the table
 * of the job type (an unknown key, a wrong variant type, a repeated key or a bad value is
 * InvalidArgs naming the key), so nothing unvalidated reaches a driver. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "image.h"
#include "job-lifecycle.h"

typedef enum SyncMode {
        SYNC_FULL,
        SYNC_TOP,
} SyncMode;

typedef struct JobOptions {
        char *job_id;
        uint64_t speed;
        bool auto_finalize;
        bool auto_dismiss;
        JobOnError on_source_error;
        JobOnError on_target_error;

        SyncMode sync;
        ImageFormat format;             /* IMAGE_FORMAT_PROBE: not given, the driver decides */
        bool overwrite;
        uint32_t granularity;           /* 0: the driver's default */
        uint64_t buf_size;              /* 0: the driver's default */

        char *top;
        char *base;
        char *backing_file;

        /* Descriptors instead of names (duplicated, ours): source-fd or image-fd, the backing
         * files below it (chain-fds), target-fd. */
        int source_fd;
        int chain_fds[IMAGE_CHAIN_DEPTH_MAX - 1];
        size_t n_chain_fds;
        int target_fd;
} JobOptions;

#define JOB_OPTIONS_DEFAULT { .auto_finalize = true, .auto_dismiss = true, .source_fd = -EBADF, .target_fd = -EBADF }

/* Reads an a{sv} for a job of 'type' from 'm' into 'o' (which starts as JOB_OPTIONS_DEFAULT). */
int bus_read_job_options(sd_bus_message *m, JobType type, JobOptions *o, sd_bus_error *error);
void job_options_done(JobOptions *o);

/* Transaction properties: completion-mode. */
int bus_read_transaction_properties(sd_bus_message *m, bool *ret_grouped, sd_bus_error *error);

/* A file name from the bus: non-empty, absolute, shorter than PATH_MAX. 'what' names it in the
 * error ("Source", "Target", "Image"). */
int bus_check_path(const char *what, const char *path, sd_bus_error *error);
