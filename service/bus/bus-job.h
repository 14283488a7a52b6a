/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* One D-Bus object per job, /org/blockjobd/Jobs1/job/<id escaped with sd_bus_path_encode()>,
 * interface org.blockjobd.Jobs1.Job. It turns the core's notifications into StatusChanged,
 * IoError and PropertiesChanged, the latter for progress at most every 100 ms per job. */

#include <sys/types.h>

#include "image.h"
#include "job-factory.h"
#include "manager.h"

typedef struct BusJob BusJob;

/* Exports the fallback vtable, node enumerator and object manager for job objects. */
int bus_job_register(Manager *m);

/* The core's observer: installed on the registry by the manager. */
extern const JobObserver bus_job_observer;

/* What the bus shows of a job beyond what the core knows. */
typedef struct BusJobInfo {
        const char *source;
        const char *target;             /* NULL for the types that have none */
        uid_t owner;
        const char *transaction;        /* NULL for a job of its own */
        ImageFormat source_format;
        JobClaim *claim;                /* taken on success: ended when the job concludes, freed when it goes */
} BusJobInfo;

/* Puts a freshly created job on the bus: the object appears (InterfacesAdded), then its
 * StatusChanged "created". Its path is /org/blockjobd/Jobs1/job/<escaped id> for root's jobs,
 * and .../job/<escaped id>_u<uid> for other users' (ids are unique per owner only;
 * sd_bus_path_encode() never writes "_u"). */
int bus_job_attach(Manager *m, Job *j, const BusJobInfo *info, BusJob **ret);

const char *bus_job_path(const BusJob *bj);
/* Who created the job. */
uid_t bus_job_owner(const BusJob *bj);
/* Error as the reader of the message being dispatched may see it in 'reply' (see
 * bus-read-access.h). */
const char *bus_job_error_for_reader(BusJob *bj, sd_bus_message *reply);
/* The job at this object path, or NULL. */
BusJob *bus_job_find_by_path(Manager *m, const char *path);
