/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <string.h>

#include "bus-errors.h"
#include "log.h"
#include "macro.h"

const sd_bus_error_map bus_error_map[] = {
        SD_BUS_ERROR_MAP(BUS_ERROR_INVALID_STATE, EBUSY),
        SD_BUS_ERROR_MAP(BUS_ERROR_NO_SUCH_JOB, ENXIO),
        SD_BUS_ERROR_MAP(BUS_ERROR_JOB_EXISTS, EEXIST),
        SD_BUS_ERROR_MAP(BUS_ERROR_INVALID_JOB_ID, EINVAL),
        SD_BUS_ERROR_MAP(BUS_ERROR_IMAGE_ERROR, EIO),
        SD_BUS_ERROR_MAP(BUS_ERROR_SHUTTING_DOWN, ESHUTDOWN),
        SD_BUS_ERROR_MAP(BUS_ERROR_LIMIT_EXCEEDED, EUSERS),
        SD_BUS_ERROR_MAP(BUS_ERROR_IMAGE_IN_USE, ETXTBSY),
        SD_BUS_ERROR_MAP(BUS_ERROR_BITMAP, ENOENT),
        SD_BUS_ERROR_MAP_END,
};

/* Returns the negative errno that sd-bus maps the name to, as method handlers must. */
static int set_error(sd_bus_error *error, const char *name, int r, const char *message) {
        return sd_bus_error_set(error, name, message ?: strerror(r < 0 ? -r : r));
}

int bus_error_from_core(sd_bus_error *error, int r, const char *message) {
        switch (r) {
        case -EBUSY:
                return set_error(error, BUS_ERROR_INVALID_STATE, r, message);
        case -EINVAL:
                return set_error(error, SD_BUS_ERROR_INVALID_ARGS, r, message);
        case -ESHUTDOWN:
                /* The job was stopped (job_stop()): it continues after the daemon starts again. */
                return set_error(error, BUS_ERROR_SHUTTING_DOWN, r, message);
        case -ENOMEM:
                return -ENOMEM;
        default:
                return set_error(error, SD_BUS_ERROR_FAILED, r, message);
        }
}

int bus_error_from_job_id(sd_bus_error *error, int r, const char *message) {
        switch (r) {
        case -EINVAL:
                return set_error(error, BUS_ERROR_INVALID_JOB_ID, r, message);
        case -EEXIST:
                return set_error(error, BUS_ERROR_JOB_EXISTS, r, message);
        default:
                return bus_error_from_core(error, r, message);
        }
}

int bus_error_from_image(sd_bus_error *error, int r, const char *message) {
        if (r == -ENOMEM)
                return -ENOMEM;
        /* A file the caller may not open (or did not pass) is a matter of rights. */
        if (IN_SET(r, -EACCES, -EPERM))
                return set_error(error, SD_BUS_ERROR_ACCESS_DENIED, r, message);
        return set_error(error, r == -EINVAL ? SD_BUS_ERROR_INVALID_ARGS : BUS_ERROR_IMAGE_ERROR, r, message);
}

void bus_reply_error(sd_bus_message *call, const sd_bus_error *error, int r) {
        if (r >= 0)
                return;
        r = sd_bus_error_is_set(error) ? sd_bus_reply_method_error(call, error) : sd_bus_reply_method_errno(call, r, NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to send an error reply: %m");
}

int bus_error_from_resources(sd_bus_error *error, int r) {
        if (r >= 0 || sd_bus_error_is_set(error))
                return r;
        if (IN_SET(r, -EMFILE, -ENFILE))
                return set_error(error, BUS_ERROR_LIMIT_EXCEEDED, r, "blockjobd has run out of file descriptors");
        if (r == -ENOMEM)
                return set_error(error, BUS_ERROR_LIMIT_EXCEEDED, r, "blockjobd has run out of memory");
        return r;
}

int bus_error_from_creation(sd_bus_error *error, JobCreationError kind, int r, const char *message) {
        switch (kind) {
        case JOB_CREATION_ERROR_LIMIT:
                return set_error(error, BUS_ERROR_LIMIT_EXCEEDED, r, message);
        case JOB_CREATION_ERROR_IN_USE:
                return set_error(error, BUS_ERROR_IMAGE_IN_USE, r, message);
        case JOB_CREATION_ERROR_CORE:
                return bus_error_from_job_id(error, r, message);
        case JOB_CREATION_ERROR_IMAGE:
        default:
                return bus_error_from_image(error, r, message);
        }
}

int bus_error_from_bitmap(sd_bus_error *error, BitmapOpError kind, int r, const char *message) {
        switch (kind) {
        case BITMAP_OP_ERROR_BITMAP:
                return set_error(error, BUS_ERROR_BITMAP, r, message);
        case BITMAP_OP_ERROR_INVALID:
                return set_error(error, SD_BUS_ERROR_INVALID_ARGS, r, message);
        case BITMAP_OP_ERROR_IN_USE:
                return set_error(error, BUS_ERROR_IMAGE_IN_USE, r, message);
        case BITMAP_OP_ERROR_LIMIT:
                return set_error(error, BUS_ERROR_LIMIT_EXCEEDED, r, message);
        case BITMAP_OP_ERROR_IMAGE:
        default:
                return bus_error_from_image(error, r, message);
        }
}
