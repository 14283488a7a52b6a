/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* blockjobd's D-Bus errors (documented in dbus/org.blockjobd.Jobs1.xml) and the mapping from the
 * negative errno values that the core and the drivers return. */

#include <systemd/sd-bus.h>

#include "bitmap-ops.h"
#include "job-factory.h"

#define BUS_ERROR_INVALID_STATE  "org.blockjobd.Jobs1.Error.InvalidState"
#define BUS_ERROR_NO_SUCH_JOB    "org.blockjobd.Jobs1.Error.NoSuchJob"
#define BUS_ERROR_JOB_EXISTS     "org.blockjobd.Jobs1.Error.JobExists"
#define BUS_ERROR_INVALID_JOB_ID "org.blockjobd.Jobs1.Error.InvalidJobId"
#define BUS_ERROR_IMAGE_ERROR    "org.blockjobd.Jobs1.Error.ImageError"
#define BUS_ERROR_SHUTTING_DOWN  "org.blockjobd.Jobs1.Error.ShuttingDown"
#define BUS_ERROR_LIMIT_EXCEEDED "org.blockjobd.Jobs1.Error.LimitExceeded"
#define BUS_ERROR_IMAGE_IN_USE   "org.blockjobd.Jobs1.Error.ImageInUse"
#define BUS_ERROR_BITMAP         "org.blockjobd.Jobs1.Error.BitmapError"

/* So that sd-bus clients get a meaningful errno from sd_bus_error_get_errno(). */
extern const sd_bus_error_map bus_error_map[];

/* A refused verb (the core's -EBUSY and its message) as InvalidState, a bad argument as
 * InvalidArgs, anything else as a generic failure carrying the message. */
int bus_error_from_core(sd_bus_error *error, int r, const char *message);
/* A job id the core refused: InvalidJobId (-EINVAL) or JobExists (-EEXIST). */
int bus_error_from_job_id(sd_bus_error *error, int r, const char *message);

/* An image that could not be opened, parsed or created: ImageError, except a bad argument
 * (-EINVAL, e.g. source and target are the same file), which is InvalidArgs. */
int bus_error_from_image(sd_bus_error *error, int r, const char *message);

/* A job creation that failed for lack of descriptors or memory, wherever (reading the call,
 * asking polkit, putting the jobs on the bus): LimitExceeded, saying which ran out. Anything else,
 * or an error already set, is returned as it is. */
int bus_error_from_resources(sd_bus_error *error, int r);

/* For a call answered later: if r < 0, its error reply ('error' if set, else r's); a reply that
 * cannot be sent is logged. */
void bus_reply_error(sd_bus_message *call, const sd_bus_error *error, int r);

/* A creation the job factory refused, by what failed (job-factory.h). */
int bus_error_from_creation(sd_bus_error *error, JobCreationError kind, int r, const char *message);

/* A bitmap operation that failed, by what failed (bitmap-ops.h): BitmapError for the bitmap (not
 * found, exists, inconsistent, not possible on this image), InvalidArgs for a name or granularity
 * QEMU refuses, ImageInUse, LimitExceeded, and an image that could not be opened as for jobs. */
int bus_error_from_bitmap(sd_bus_error *error, BitmapOpError kind, int r, const char *message);
