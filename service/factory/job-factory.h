/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The job factory: turns what a caller asks for (job-request.h) into jobs, under one set of rules
 * that can be read here top to bottom:
 *
 *   - Names are resolved in one place, blockjobd-opener (opener.h), with the caller's rights:
 *     everyone's calls, root's included; root's request on another user's image follows that
 *     image's chain with that user's rights only. Descriptors a caller passed are used as they
 *     are (never a descriptor open for appending where it would be written). The daemon itself
 *     opens nothing by name: drivers get descriptors (job-files.h).
 *   - Formats: only a Backup or Mirror source without source-format is probed, and a probed
 *     qcow2 image that names a backing file is refused; backing files take the format their
 *     parent records, and one without a recorded format is refused (the image layer's rules).
 *   - Identity: source and target, and the files of different jobs, are compared by what they
 *     are (inode, device, loop device backing file), never by name; a file one job writes is
 *     reserved for it until it ends (reservations.h): ImageInUse.
 *   - Bounds: a user other than root has at most so many jobs, counting those being created, and
 *     so many creations in progress; a job's worst-case memory for image metadata is bounded per
 *     job and per user; running out of descriptors or memory is said as such.
 *
 * A creation goes: admitted (limits) → files opened (openers, on the loop, one deadline for the
 * whole creation) → drivers built (on a worker) → reservations and memory checked, jobs created
 * (on the loop). Loop thread only, but for what it hands to the worker pool. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "job-request.h"
#include "target-file.h"
#include "job.h"
#include "worker-pool.h"

typedef struct JobFactory JobFactory;
typedef struct JobCreation JobCreation;
typedef struct JobClaim JobClaim;

typedef struct JobFactoryLimits {
        unsigned max_jobs_per_user;             /* 0: none */
        unsigned max_creations_per_user;        /* 0: none */
        uint64_t max_memory_per_job;            /* bytes; 0: none */
        uint64_t max_memory_per_user;           /* bytes; 0: none */
} JobFactoryLimits;

#define JOB_FACTORY_MAX_JOBS_PER_USER 64U
#define JOB_FACTORY_MAX_CREATIONS_PER_USER 16U
#define JOB_FACTORY_MAX_MEMORY_PER_JOB (UINT64_C(512) << 20)
#define JOB_FACTORY_MAX_MEMORY_PER_USER (UINT64_C(2) << 30)
/* A creation's files are opened within this time, however many jobs it creates. */
#define JOB_FACTORY_OPEN_TIMEOUT_USEC (30 * UINT64_C(1000000))

int job_factory_new(sd_event *event, WorkerPool *pool, JobRegistry *registry, JobFactory **ret);
/* Every creation and claim must be gone. */
JobFactory *job_factory_free(JobFactory *f);
JobFactoryLimits *job_factory_limits(JobFactory *f);

/* Who asks. */
typedef struct JobCaller {
        uid_t uid;
        const gid_t *groups;
        size_t n_groups;
        bool groups_unknown;            /* the bus could not tell: the user's, from the database */
} JobCaller;

/* Why a creation failed, for the bus layer to name the error. */
typedef enum JobCreationError {
        JOB_CREATION_ERROR_IMAGE,       /* opening or checking a file, image or argument */
        JOB_CREATION_ERROR_CORE,        /* the job core refused (job id) */
        JOB_CREATION_ERROR_LIMIT,       /* a bound, or descriptors or memory ran out */
        JOB_CREATION_ERROR_IN_USE,      /* a reservation (ImageInUse) */
} JobCreationError;

/* Admits a creation of 'n' jobs for 'caller' (grouped: completion-mode grouped), counted
 * against its limits until it is freed or its jobs exist: -EUSERS and a message over a limit. */
int job_creation_new(JobFactory *f, const JobCaller *caller, size_t n, bool grouped, JobCreation **ret,
                     char **ret_error);
JobRequest *job_creation_request(JobCreation *c, size_t i);

/* The jobs of a record after a restart (persist.h; their requests have 'restore' set): admitted
 * whatever the limits say now, since they were admitted when they were created, and counted as
 * any. 'check' (may be NULL) runs on the worker for each request once its files are open and
 * looked at, before its driver is built, and may refuse them (files that are not the ones
 * recorded) with a negative errno and a message. A restored job's unfinished target is not
 * removed by name when such a creation fails before its driver took it: whoever restores decides,
 * with its own checks (persist.c). */
typedef struct JobCreationFiles JobCreationFiles;
typedef int (*JobCreationCheck)(const JobRequest *q, const JobCreationFiles *files, void *userdata,
                                char **ret_error);
int job_creation_new_restore(JobFactory *f, const JobCaller *caller, size_t n, bool grouped, JobCreationCheck check,
                             void *userdata, JobCreation **ret, char **ret_error);

/* Called once, on the loop (possibly before job_creation_start() returns): r < 0 with what
 * failed and a message, or 0 once every job exists (status created, not started; see
 * job_creation_job()). The callback may free the creation. */
typedef void (*JobCreationDone)(JobCreation *c, int r, JobCreationError kind, const char *message, void *userdata);
int job_creation_start(JobCreation *c, JobCreationDone done, void *userdata);

/* After success: the i-th job (the registry holds it), the format its source was opened as, and
 * its claim, which the caller takes (see job_claim_*). */
Job *job_creation_job(JobCreation *c, size_t i);
ImageFormat job_creation_source_format(JobCreation *c, size_t i);
JobClaim *job_creation_take_claim(JobCreation *c, size_t i);
/* And what its source (the top of the chain) and target were, fstat()ed on the worker that built
 * it: what a job record keeps (persist.h). */
struct JobCreationFiles {
        bool source_known;
        struct stat source;
        bool target_known;
        bool target_in_place;           /* a device or a passed file, not a new file */
        struct stat target;
        TargetFile *target_file;        /* a new target's file, in the job's driver (NULL: none, or
                                         * written in place); valid as long as the job */
};
const JobCreationFiles *job_creation_files(JobCreation *c, size_t i);

/* For the factory's other calls on a caller's files (bitmap-ops.h): what they share with the
 * creations. A call is admitted against its user's bound on calls in progress (the same number
 * as for creations, counted apart) and on openers that did not end: -EUSERS and a message. */
typedef struct Reservations Reservations;
sd_event *job_factory_event(JobFactory *f);
WorkerPool *job_factory_pool(JobFactory *f);
Reservations *job_factory_reservations(JobFactory *f);
int job_factory_admit_call(JobFactory *f, uid_t uid, const char *what, char **ret_error);
void job_factory_release_call(JobFactory *f, uid_t uid);
/* The memory such a call's image may take, under the bounds a creation obeys: what a job may
 * have, within what is left of the user's (*ret_max; 0: no bound, for root or without limits).
 * With 'count', the bound itself is counted in the user's memory until released, since only the
 * worker learns what the image takes: such a call holds, while it runs, the most it may take.
 * -E2BIG and a message when nothing is left of the user's. */
int job_factory_claim_call_memory(JobFactory *f, uid_t uid, bool count, uint64_t *ret_max, char **ret_error);
void job_factory_release_call_memory(JobFactory *f, uid_t uid, uint64_t memory);

/* Gives up: openers are killed; a build in flight is discarded once it returns; jobs already
 * created are not touched (their claims are the caller's). */
JobCreation *job_creation_free(JobCreation *c);

/* What a job holds: its files' reservations and its memory until it ends (concluded), and its
 * place in its owner's job count until it is gone. */
void job_claim_end(JobClaim *c);
JobClaim *job_claim_free(JobClaim *c);
