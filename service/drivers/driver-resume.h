/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A job that existed before the daemon stopped (issue 15) is built again from its record, and its
 * driver continues from its last checkpoint instead of from zero. What a checkpoint means is the
 * driver's (JobStepResult.checkpoint, job-driver.h): for backup, commit and stream an offset below
 * which everything the job writes is durable in the file it writes (backup: the target; commit:
 * the base; stream: the image); a mirror keeps none and copies everything again, since the source
 * may have changed under it while it was being mirrored. */

#include <stdbool.h>
#include <stdint.h>

typedef struct DriverResume {
        bool resume;            /* built again after a restart: the file the job writes holds its work */
        uint64_t offset;        /* the last checkpoint (0: none was reached) */
} DriverResume;
