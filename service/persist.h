/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Jobs that outlive the process (issue 15), the layer between the daemon and service/state/: it
 * keeps one record per job in the state directory (state-dir.h, job-record.h) and brings the
 * recorded jobs back at start.
 *
 * Writes. A job's record is written when the job is created (the creation's reply waits until it
 * is durable; if it cannot be written, the creation fails), at every status change (with the
 * user-paused flag and the error), when its speed or its user-paused flag changes (the core tells
 * both even without a status change), at its driver's checkpoints (JOB_CHANGE_CHECKPOINT: a
 * backup's copied prefix, commit's and stream's offset), and removed when the job is dismissed
 * (status null). Every write and removal runs on the worker pool, never on the event loop (they
 * fsync). The writes of one job are ordered and coalesced: at most one of its writes or its
 * removal is in flight at a time, and when it returns only the newest state is written next, so
 * an older state never lands after a newer one. A job created under the id of one whose record
 * is still being removed waits behind that removal (records are named by owner and id). A job
 * stopped for a restart (job_stop()) is forgotten (persist_forget()), not dismissed: its record
 * and its unfinished target stay.
 *
 * Restore. At start, before the daemon takes its bus name, every record is read and validated as
 * untrusted input (job-record.h). A job that can continue (resume_refusal() finds nothing against
 * it) is built again through the job factory exactly as a new call with its recorded arguments
 * would be, as its owner (job_creation_new_restore()): its files opened by blockjobd-opener with
 * the owner's rights, its unfinished target reopened under its hidden name, descriptors its caller
 * had passed taken back from systemd's file descriptor store, every file compared with the record
 * (resume_check()), and the job created directly in its recorded status (job_restore()) with its
 * driver continuing from its last checkpoint. A grouped transaction is built as one creation,
 * whole or not at all. The bus name is taken once every such creation is done
 * (manager_jobs_restored()). A job recorded as concluded comes back directly concluded with its
 * error; one that cannot continue (or whose creation failed) comes back concluded with the
 * reason (restore_outcome(), restore_back()). A damaged record fails its job the same
 * way with an error naming the problem, if the record still tells the job's type; otherwise it is
 * moved to "damaged/<name>.damaged" and logged. Restored jobs keep their records until they are
 * dismissed.
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

