/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Jobs that outlive the process (issue 15), the layer between the daemon and service/state/: it
 * keeps one record per job in the state directory (state-dir.h, job-record.h) and brings the
 * recorded jobs back at start.
 *
 * Writes. A job's record is written when the job is created (the creation's reply waits until it
 * is durable; if it cannot be written, the creation fails), at every status change (with the
 * user-paused flag and the error), when its speed or its user-paused flag changes (the core tells
 * both even without a status change), and removed when the job is dismissed
 * (status null). Every write and removal runs on the worker pool, never on the event loop (they
 * fsync). The writes of one job are ordered and coalesced: at most one of its writes or its
 * removal is in flight at a time, and when it returns only the newest state is written next, so
 * an older state never lands after a newer one. A job created under the id of one whose record
 * is still being removed waits behind that removal (records are named by owner and id).
 *
 * Restore. At start, before the daemon takes its bus name and before its event loop runs, every
 * record is read (there, not on a worker: nothing waits on the loop yet, and the daemon must not
 * answer a call before its jobs are back) and validated as untrusted input (job-record.h), and
 * its job comes back with the same id, object path, type,
 * owner, options and transaction name. This layer does not resume work yet: a job recorded as
 * concluded comes back directly concluded with its error (job_restore(): no status it did not go
 * through is told); one recorded in any other status has its source reopened by
 * blockjobd-opener as its owner and compared with the record (restore_check_source(): gone,
 * unreadable to the owner, another file, or for a backup changed at all), and comes back
 * concluded with that reason, or else with an error that says it was not resumed
 * (persist_restore_outcome(), the one place that the resumption layer replaces). A damaged record
 * fails its job the same way with an error naming the problem, if the record still tells the
 * job's type; otherwise it is moved to "damaged/<name>.damaged" and logged. Restored jobs keep
 * their records until they are dismissed.
 *
 * Hidden targets. A new target file is built under ".<name>.blockjobd-<owner>-<id>" next to its
 * final name while its job is recorded: the record names it (with the file's device and inode)
 * before the file takes the name (persist_hide_targets()), so a crash never leaves a hidden file
 * that no record names. A restored job that cannot continue has it removed before it goes on:
 * through the directory as blockjobd-opener opens it for the job's owner, and only while the name
 * is still the recorded regular file. */

#include <stdbool.h>
#include <stddef.h>

#include "job-factory.h"
#include "job-record.h"
#include "job-request.h"
#include "job.h"

typedef struct Manager Manager;
typedef struct Persist Persist;

typedef void (*PersistDoneFunc)(int r, const char *error, void *userdata);

/* Opens the state directory 'path' (state_dir_open(): checked, "jobs/" made if missing). */
int persist_new(Manager *m, const char *path, Persist **ret);
/* After the worker pool is freed: what is on disk stays. */
Persist *persist_free(Persist *p);

/* Once the records of a creation's jobs are durable: gives each new target ('targets[i]', NULL for
 * none) the hidden name its record holds, on a worker. 0: nothing to do ('done' is not called);
 * 1: started, 'done' follows (r < 0 and a message if a name could not be given). */
int persist_hide_targets(Persist *p, Job *const *jobs, TargetFile *const *targets, size_t n, PersistDoneFunc done,
                         void *userdata);

/* The daemon is going away while 'j' stays recorded: its record is left as it is, and the job may
 * be dismissed without removing it. */
void persist_forget(Persist *p, Job *j);

/* No write or removal in flight or waiting. */
bool persist_is_idle(const Persist *p);

/* The core's observer calls, forwarded by the manager. */
void persist_status_changed(Persist *p, Job *j, JobStatus status);
void persist_changed(Persist *p, Job *j, JobChange what);

/* A new job's record, from what its caller asked for and what its files are; 'txn_name' and its
 * members for a grouped transaction (NULL: none). -EINVAL for a file that has neither an absolute
 * name nor a passed descriptor, -EIO when the files were not seen, -ENOMEM. */
int persist_record_new(const JobRequest *q, Job *j, const JobCreationFiles *files, const char *txn_name,
                       Job *const *members, size_t n_members, JobRecord **ret);

/* A new job's first record ('record' is taken, even on failure): 'done' is called on the loop once
 * it is durable (r = 0) or could not be written (r < 0, with a message). Not before this returns. */
int persist_job_created(Persist *p, Job *j, JobRecord *record, PersistDoneFunc done, void *userdata);

/* A new job's descriptors that its caller passed, kept in systemd's file descriptor store under
 * the names its record gives them (nothing without systemd). */
void persist_store_fds(Persist *p, const JobRecord *record, const JobFiles *files);

/* Brings back every recorded job (see above); for the start, after the bus objects are registered
 * and before the loop runs. Jobs that continue are built again through the job factory, which
 * takes the loop: returns 1 if that is under way (manager_jobs_restored() follows once every one
 * of them is back or has failed), 0 if everything is back already, or a negative errno. */
int persist_restore(Persist *p);

/* What becomes of a restored job in this layer: 0 and *ret_error the error it concludes with
 * (NULL: it concluded successfully), or -ENOMEM. */
int persist_restore_outcome(Persist *p, const JobRecord *record, char **ret_error);
