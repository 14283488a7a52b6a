/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The vocabulary of QEMU's job lifecycle (qapi/job.json): statuses, verbs, job types, and the two
 * tables that the core consults: which status may follow which, and which verb a status accepts.
 * The tables are data, written out cell by cell below in job-lifecycle.c, so that a reader can
 * compare them with QEMU's job.c at a glance. */

#include <stdbool.h>

typedef enum JobStatus {
        JOB_STATUS_UNDEFINED,
        JOB_STATUS_CREATED,
        JOB_STATUS_RUNNING,
        JOB_STATUS_PAUSED,
        JOB_STATUS_READY,
        JOB_STATUS_STANDBY,
        JOB_STATUS_WAITING,
        JOB_STATUS_PENDING,
        JOB_STATUS_ABORTING,
        JOB_STATUS_CONCLUDED,
        JOB_STATUS_NULL,
        _JOB_STATUS_MAX,
        _JOB_STATUS_INVALID = -1,
} JobStatus;

typedef enum JobVerb {
        JOB_VERB_CANCEL,
        JOB_VERB_PAUSE,
        JOB_VERB_RESUME,
        JOB_VERB_SET_SPEED,
        JOB_VERB_COMPLETE,
        JOB_VERB_DISMISS,
        JOB_VERB_FINALIZE,
        _JOB_VERB_MAX,
        _JOB_VERB_INVALID = -1,
} JobVerb;

typedef enum JobType {
        JOB_TYPE_COMMIT,
        JOB_TYPE_STREAM,
        JOB_TYPE_MIRROR,
        JOB_TYPE_BACKUP,
        _JOB_TYPE_MAX,
        _JOB_TYPE_INVALID = -1,
} JobType;

/* What the user asked for when a source or target I/O error happens (QEMU's BlockdevOnError). */
typedef enum JobOnError {
        JOB_ON_ERROR_REPORT,
        JOB_ON_ERROR_IGNORE,
        JOB_ON_ERROR_ENOSPC,
        JOB_ON_ERROR_STOP,
        _JOB_ON_ERROR_MAX,
        _JOB_ON_ERROR_INVALID = -1,
} JobOnError;

/* What actually happens for one error (QEMU's BlockErrorAction). */
typedef enum JobErrorAction {
        JOB_ERROR_ACTION_IGNORE,
        JOB_ERROR_ACTION_REPORT,
        JOB_ERROR_ACTION_STOP,
        _JOB_ERROR_ACTION_MAX,
        _JOB_ERROR_ACTION_INVALID = -1,
} JobErrorAction;

typedef enum JobIoStatus {
        JOB_IO_STATUS_OK,
        JOB_IO_STATUS_FAILED,
        JOB_IO_STATUS_NOSPACE,
        _JOB_IO_STATUS_MAX,
        _JOB_IO_STATUS_INVALID = -1,
} JobIoStatus;

/* QAPI strings, and the reverse lookups (which return _..._INVALID for an unknown string). */
const char *job_status_to_string(JobStatus s);
JobStatus job_status_from_string(const char *s);
const char *job_verb_to_string(JobVerb v);
JobVerb job_verb_from_string(const char *s);
const char *job_type_to_string(JobType t);
JobType job_type_from_string(const char *s);
const char *job_on_error_to_string(JobOnError e);
JobOnError job_on_error_from_string(const char *s);
const char *job_error_action_to_string(JobErrorAction a);
const char *job_io_status_to_string(JobIoStatus s);

/* The transition table: may a job in status 'from' move to status 'to'? */
bool job_transition_allowed(JobStatus from, JobStatus to);

/* The verb table: does a job in status 's' accept verb 'v'? */
bool job_verb_allowed(JobVerb v, JobStatus s);

/* READY or STANDBY. */
bool job_status_is_ready(JobStatus s);
/* The run has returned: WAITING, PENDING, ABORTING, CONCLUDED or NULL. */
bool job_status_is_completed(JobStatus s);

/* The error policy applied to one error (errno, positive or negative). EUCLEAN, a corrupt image,
 * is always 'report', whatever the policy: retrying cannot repair the image, and ignoring it
 * would only loop (ignore) or stop (stop, enospc) on the same broken metadata. */
JobErrorAction job_on_error_decide(JobOnError policy, int error);
