/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The a{sv} options of the Manager's job-creating methods. Every key is checked against the table
 * of the job type (an unknown key, a wrong variant type, a repeated key, a bad value or one past
 * its bound is InvalidArgs naming the key), so nothing unvalidated reaches the job factory. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "job-request.h"

/* An a{sv} of options, read by a table of keys (job_options[] below, AddBitmap()'s): find() gives
 * the index of 'key' (below n_keys) and the signature its variant must have, or -ENOENT for a key
 * the table does not have; read() reads the value, inside the variant. */
typedef struct BusOptionsReader {
        size_t n_keys;
        int (*find)(const char *key, void *userdata, const char **ret_signature);
        int (*read)(sd_bus_message *m, const char *key, size_t i, void *userdata, sd_bus_error *error);
} BusOptionsReader;

/* Reads the a{sv} at 'm': an unknown key ("Unknown option 'KEY' for WHAT"), one given twice
 * ("Option 'KEY' given twice") or of another type ("Option 'KEY' must be of type 'S', not 'T'") is
 * InvalidArgs, as is what read() refuses. */
int bus_read_options(sd_bus_message *m, const char *what, const BusOptionsReader *reader, void *userdata,
                     sd_bus_error *error);

/* Reads an a{sv} for a job of q->type from 'm' into 'q' (which starts as JOB_REQUEST_INIT):
 * every option, and the descriptors passed in them, which go into q->files (source-fd or
 * image-fd first, then chain-fds; target-fd). */
int bus_read_job_options(sd_bus_message *m, JobRequest *q, sd_bus_error *error);

/* Transaction properties: completion-mode. */
int bus_read_transaction_properties(sd_bus_message *m, bool *ret_grouped, sd_bus_error *error);

/* A file name from the bus: non-empty, absolute, shorter than PATH_MAX, without "." or ".."
 * components. 'what' names it in the error ("Source", "Target", "Image"). */
int bus_check_path(const char *what, const char *path, sd_bus_error *error);
