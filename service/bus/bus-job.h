/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* One D-Bus object per job, /org/blockjobd/Jobs1/job/<id escaped with sd_bus_path_encode()>,
 * interface org.blockjobd.Jobs1.Job. It turns the core's notifications into StatusChanged,
 * IoError and PropertiesChanged, the latter for progress at most every 100 ms per job. */

#include <sys/types.h>

#include "manager.h"

typedef struct BusJob BusJob;

/* Exports the fallback vtable, node enumerator and object manager for job objects. */
int bus_job_register(Manager *m);

/* The core's observer: installed on the registry by the manager. */
extern const JobObserver bus_job_observer;

/* Puts a freshly created job on the bus: the object appears (InterfacesAdded), then its
 * StatusChanged "created". 'transaction' is NULL for a job of its own. */
int bus_job_attach(Manager *m, Job *j, const char *source, const char *target, uid_t owner,
                   const char *transaction, BusJob **ret);

const char *bus_job_path(const BusJob *bj);
/* Who created the job. */
uid_t bus_job_owner(const BusJob *bj);
/* The job at this object path, or NULL. */
BusJob *bus_job_find_by_path(Manager *m, const char *path);
