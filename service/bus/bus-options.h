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

/* Reads an a{sv} for a job of q->type from 'm' into 'q' (which starts as JOB_REQUEST_INIT):
 * every option, and the descriptors passed in them, which go into q->files (source-fd or
 * image-fd first, then chain-fds; target-fd). */
int bus_read_job_options(sd_bus_message *m, JobRequest *q, sd_bus_error *error);

/* Transaction properties: completion-mode. */
int bus_read_transaction_properties(sd_bus_message *m, bool *ret_grouped, sd_bus_error *error);

/* A file name from the bus: non-empty, absolute, shorter than PATH_MAX, without "." or ".."
 * components. 'what' names it in the error ("Source", "Target", "Image"). */
int bus_check_path(const char *what, const char *path, sd_bus_error *error);
