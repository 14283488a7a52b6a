/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "job-lifecycle.h"
#include "macro.h"

static const char *const job_status_table[_JOB_STATUS_MAX] = {
        [JOB_STATUS_UNDEFINED] = "undefined",
        [JOB_STATUS_CREATED]   = "created",
        [JOB_STATUS_RUNNING]   = "running",
        [JOB_STATUS_PAUSED]    = "paused",
        [JOB_STATUS_READY]     = "ready",
        [JOB_STATUS_STANDBY]   = "standby",
        [JOB_STATUS_WAITING]   = "waiting",
        [JOB_STATUS_PENDING]   = "pending",
        [JOB_STATUS_ABORTING]  = "aborting",
        [JOB_STATUS_CONCLUDED] = "concluded",
        [JOB_STATUS_NULL]      = "null",
};

static const char *const job_verb_table[_JOB_VERB_MAX] = {
        [JOB_VERB_CANCEL]    = "cancel",
        [JOB_VERB_PAUSE]     = "pause",
        [JOB_VERB_RESUME]    = "resume",
        [JOB_VERB_SET_SPEED] = "set-speed",
        [JOB_VERB_COMPLETE]  = "complete",
        [JOB_VERB_DISMISS]   = "dismiss",
        [JOB_VERB_FINALIZE]  = "finalize",
};

static const char *const job_type_table[_JOB_TYPE_MAX] = {
        [JOB_TYPE_COMMIT] = "commit",
        [JOB_TYPE_STREAM] = "stream",
        [JOB_TYPE_MIRROR] = "mirror",
        [JOB_TYPE_BACKUP] = "backup",
};

static const char *const job_on_error_table[_JOB_ON_ERROR_MAX] = {
        [JOB_ON_ERROR_REPORT] = "report",
        [JOB_ON_ERROR_IGNORE] = "ignore",
        [JOB_ON_ERROR_ENOSPC] = "enospc",
        [JOB_ON_ERROR_STOP]   = "stop",
};

static const char *const job_error_action_table[_JOB_ERROR_ACTION_MAX] = {
        [JOB_ERROR_ACTION_IGNORE] = "ignore",
        [JOB_ERROR_ACTION_REPORT] = "report",
        [JOB_ERROR_ACTION_STOP]   = "stop",
};

static const char *const job_io_status_table[_JOB_IO_STATUS_MAX] = {
        [JOB_IO_STATUS_OK]      = "ok",
        [JOB_IO_STATUS_FAILED]  = "failed",
        [JOB_IO_STATUS_NOSPACE] = "nospace",
};

static const char *lookup_name(const char *const *table, size_t n, int i) {
        if (i < 0 || (size_t) i >= n)
                return NULL;
        return table[i];
}

static int lookup_index(const char *const *table, size_t n, const char *s) {
        if (!s)
                return -1;
        for (size_t i = 0; i < n; i++)
                if (table[i] && strcmp(table[i], s) == 0)
                        return (int) i;
        return -1;
}

const char *job_status_to_string(JobStatus s) {
        return lookup_name(job_status_table, ELEMENTSOF(job_status_table), s);
}

JobStatus job_status_from_string(const char *s) {
        return lookup_index(job_status_table, ELEMENTSOF(job_status_table), s);
}

const char *job_verb_to_string(JobVerb v) {
        return lookup_name(job_verb_table, ELEMENTSOF(job_verb_table), v);
}

JobVerb job_verb_from_string(const char *s) {
        return lookup_index(job_verb_table, ELEMENTSOF(job_verb_table), s);
}

const char *job_type_to_string(JobType t) {
        return lookup_name(job_type_table, ELEMENTSOF(job_type_table), t);
}

JobType job_type_from_string(const char *s) {
        return lookup_index(job_type_table, ELEMENTSOF(job_type_table), s);
}

const char *job_on_error_to_string(JobOnError e) {
        return lookup_name(job_on_error_table, ELEMENTSOF(job_on_error_table), e);
}

JobOnError job_on_error_from_string(const char *s) {
        return lookup_index(job_on_error_table, ELEMENTSOF(job_on_error_table), s);
}

const char *job_error_action_to_string(JobErrorAction a) {
        return lookup_name(job_error_action_table, ELEMENTSOF(job_error_action_table), a);
}

const char *job_io_status_to_string(JobIoStatus s) {
        return lookup_name(job_io_status_table, ELEMENTSOF(job_io_status_table), s);
}

/* QEMU's JobSTT, row = current status, column = next status.
 *
 *                                   U  C  R  P  Y  S  W  D  X  E  N */
static const bool job_transition_table[_JOB_STATUS_MAX][_JOB_STATUS_MAX] = {
        [JOB_STATUS_UNDEFINED] = { 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
        [JOB_STATUS_CREATED]   = { 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1 },
        [JOB_STATUS_RUNNING]   = { 0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0 },
        [JOB_STATUS_PAUSED]    = { 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 },
        [JOB_STATUS_READY]     = { 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0 },
        [JOB_STATUS_STANDBY]   = { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
        [JOB_STATUS_WAITING]   = { 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0 },
        [JOB_STATUS_PENDING]   = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
        [JOB_STATUS_ABORTING]  = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
        [JOB_STATUS_CONCLUDED] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
        [JOB_STATUS_NULL]      = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
};

/* QEMU's JobVerbTable (since 6.0, when complete became legal in standby; QEMU 8.2's 'change' verb
 * is not part of blockjobd's API), row = verb, column = current status.
 *
 *                                  U  C  R  P  Y  S  W  D  X  E  N */
static const bool job_verb_table_allowed[_JOB_VERB_MAX][_JOB_STATUS_MAX] = {
        [JOB_VERB_CANCEL]    = { 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 },
        [JOB_VERB_PAUSE]     = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
        [JOB_VERB_RESUME]    = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
        [JOB_VERB_SET_SPEED] = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
        [JOB_VERB_COMPLETE]  = { 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0 },
        [JOB_VERB_FINALIZE]  = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 },
        [JOB_VERB_DISMISS]   = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
};

bool job_transition_allowed(JobStatus from, JobStatus to) {
        assert(from >= 0 && from < _JOB_STATUS_MAX);
        assert(to >= 0 && to < _JOB_STATUS_MAX);
        return job_transition_table[from][to];
}

bool job_verb_allowed(JobVerb v, JobStatus s) {
        assert(v >= 0 && v < _JOB_VERB_MAX);
        assert(s >= 0 && s < _JOB_STATUS_MAX);
        return job_verb_table_allowed[v][s];
}

bool job_status_is_ready(JobStatus s) {
        return IN_SET(s, JOB_STATUS_READY, JOB_STATUS_STANDBY);
}

bool job_status_is_completed(JobStatus s) {
        return IN_SET(s, JOB_STATUS_WAITING, JOB_STATUS_PENDING, JOB_STATUS_ABORTING, JOB_STATUS_CONCLUDED,
                      JOB_STATUS_NULL);
}

JobErrorAction job_on_error_decide(JobOnError policy, int error) {
        if (error < 0)
                error = -error;

        /* A corrupt image stays corrupt: no policy makes a retry worthwhile. */
        if (error == EUCLEAN)
                return JOB_ERROR_ACTION_REPORT;

        switch (policy) {
        case JOB_ON_ERROR_ENOSPC:
                return error == ENOSPC ? JOB_ERROR_ACTION_STOP : JOB_ERROR_ACTION_REPORT;
        case JOB_ON_ERROR_STOP:
                return JOB_ERROR_ACTION_STOP;
        case JOB_ON_ERROR_IGNORE:
                return JOB_ERROR_ACTION_IGNORE;
        case JOB_ON_ERROR_REPORT:
        default:
                return JOB_ERROR_ACTION_REPORT;
        }
}
