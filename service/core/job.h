/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The job core: QEMU's job lifecycle (job.c) without QEMU. It owns the jobs and transactions,
 * applies the verb and transition tables, pauses, cancels, completes, finalizes and dismisses,
 * limits the rate, counts progress, and tells an observer about every status change. It does no
 * I/O and knows nothing of D-Bus; drivers (job-driver.h) do the work through an executor
 * (job-executor.h).
 *
 * All functions here run on the event-loop thread, except where a comment says otherwise.
 * Functions that can be refused return a negative errno and, if ret_error is not NULL, a message
 * with QEMU's exact wording (free() it):
 *   -EBUSY   the job's status does not allow the request (the verb table and its companions)
 *   -EINVAL  a malformed job id, or a transaction that cannot take the job
 *   -EEXIST  a job id in use (ids are unique per owner)
 *   -ENOMEM  out of memory
 *   -ESHUTDOWN  the job is stopped or stopping (job_stop()): it continues after the restart */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job-driver.h"
#include "job-executor.h"
#include "job-lifecycle.h"

#define JOB_ID_MAX 128

/* on-*-error=ignore: after a step whose I/O error was ignored, the job sleeps before its next step,
 * 10 ms at first, doubling with each further failing step up to 1 s; a step that makes progress
 * without an error resets it. The sleep is a pause point like the rate limit's: pause and force
 * cancel take effect at once; set-speed, complete and a soft cancel re-evaluate the job but do not
 * cut the backoff short (they have nothing to do with the failing range). */
#define JOB_IO_ERROR_BACKOFF_MIN_NS (10 * UINT64_C(1000000))
#define JOB_IO_ERROR_BACKOFF_MAX_NS (1000 * UINT64_C(1000000))

/* The observer is told about at most JOB_IO_ERROR_BURST ignored errors of one job per
 * JOB_IO_ERROR_INTERVAL_NS; the next one it is told about carries the number it missed
 * (JobIoError.suppressed). Errors that change the job's course (stop, report) are always told.
 * The backoff alone bounds a job that keeps failing to about one error a second; this bounds a
 * job whose failing steps alternate with steps that progress (and so reset the backoff). */
#define JOB_IO_ERROR_INTERVAL_NS (1000 * UINT64_C(1000000))
#define JOB_IO_ERROR_BURST 5U

/* A throttled step dispatches at least this much, whatever the slice quota: a job limited to B
 * bytes/s then wakes about every JOB_THROTTLE_STEP_MIN / B seconds, as often as it copies, rather
 * than once per 100 ms slice to copy a few bytes (1,000 jobs at 1 byte/s cost 65 % of a core that
 * way). The limiter carries the overshoot, so the average rate stays the limit. */
#define JOB_THROTTLE_STEP_MIN (UINT64_C(64) << 10)

/* A step is asked for a checkpoint (JobStepInput.checkpoint) once this much of the registry's clock
 * has passed since the job's last checkpoint or since it started running (job_start(),
 * job_restore_start()): a restart then loses at most about this much work, and the layer above
 * writes a record at most this often per job. Time spent paused or sleeping counts: the first step
 * after a long pause is asked for one (cheap: nothing new to make durable). */
#define JOB_CHECKPOINT_INTERVAL_NS (5 * UINT64_C(1000000000))

typedef struct JobRegistry JobRegistry;
typedef struct JobTxn JobTxn;

typedef enum JobChange {
        JOB_CHANGE_PROGRESS  = 1 << 0,  /* current or total progress */
        JOB_CHANGE_SPEED     = 1 << 1,
        JOB_CHANGE_IO_STATUS = 1 << 2,
        JOB_CHANGE_USER_PAUSED = 1 << 3,        /* job_is_user_paused(), told even without a status change */
        JOB_CHANGE_CHECKPOINT = 1 << 4,         /* a step reported a checkpoint: job_checkpoint() */
        JOB_CHANGE_STOPPED   = 1 << 5,          /* job_stop() has taken effect: job_is_stopped(); told once */
} JobChange;

typedef struct JobObserver {
        /* Every real status change, in order, 'null' included (the job is about to go away). */
        void (*status_changed)(Job *j, JobStatus status, void *userdata);
        /* An I/O error met the error policy (ignored ones rate-limited, see JOB_IO_ERROR_BURST). */
        void (*io_error)(Job *j, const JobIoError *e, void *userdata);
        /* Some other observable property changed. */
        void (*changed)(Job *j, JobChange what, void *userdata);
        /* The last job object was freed (job_registry_n_live() is 0): job_registry_free() may now be
         * called, though not from here, since a job_unref() is on the stack. For a daemon that
         * shuts down and whose jobs continue after it starts again: job_stop() every job, run the
         * loop until job_registry_all_stopped() (check on JOB_CHANGE_STOPPED and on 'null'),
         * job_dismiss() each (which takes any stopped job out of the registry), drop every
         * reference, then free. */
        void (*empty)(JobRegistry *r, void *userdata);
} JobObserver;

typedef struct JobCreateParams {
        /* Whose job it is: ids are unique per owner, so two owners may both have a job "nightly".
         * The core treats it as an opaque key (the daemon passes the creator's uid); the worker
         * pool also shares its threads fairly between owners (worker-pool.h). */
        uint32_t owner;
        const char *id;                 /* NULL: the core picks "<type><N>", lowest free N of the owner */
        const JobDriver *driver;
        void *driver_data;              /* the job owns it on success; freed with driver->free */
        bool auto_finalize;
        bool auto_dismiss;
        uint64_t speed;                 /* bytes per second, 0 = unlimited */
        JobOnError on_source_error;
        JobOnError on_target_error;
        JobTxn *txn;                    /* NULL: a transaction of its own (completion-mode individual) */
} JobCreateParams;

#define JOB_CREATE_PARAMS_DEFAULT { .auto_finalize = true, .auto_dismiss = true }

/* The registry: all jobs, newest first, as query-jobs lists them. */
int job_registry_new(const JobExecutor *executor, void *executor_userdata, JobRegistry **ret);
/* Frees the registry. Every job object must be gone by then, dismissed and unreferenced
 * (job_registry_n_live() == 0, JobObserver.empty): jobs point to the registry and its executor,
 * and a job's work may still be running on a worker. Stopped jobs (job_stop()) are no exception:
 * dismiss them first (job_dismiss() takes a stopped job out whatever its status). */
JobRegistry *job_registry_free(JobRegistry *r);
void job_registry_set_observer(JobRegistry *r, const JobObserver *observer, void *userdata);
/* Does anyone keep the jobs' checkpoints (a daemon with job records)? If not, no step is asked for
 * one every JOB_CHECKPOINT_INTERVAL_NS (JobStepInput.checkpoint): making the work durable (a
 * flush of the target) would buy nothing. Default: wanted. */
void job_registry_set_checkpoints(JobRegistry *r, bool wanted);
/* The owner's job with this id (a hash lookup, not a walk), or NULL. A job leaves the registry
 * when it is dismissed (status null): from then on it is not found and its id is free again for
 * its owner, although job_id() and job_owner() stay valid as long as a reference is held. */
Job *job_registry_find(JobRegistry *r, uint32_t owner, const char *id);
Job *job_registry_first(JobRegistry *r);
Job *job_registry_next(Job *j);
/* Jobs in the registry (not yet dismissed). */
size_t job_registry_count(JobRegistry *r);
/* Every job in the registry is stopped (job_stop()): true for an empty one. A walk. */
bool job_registry_all_stopped(JobRegistry *r);
/* Job objects not yet freed: those in the registry, and dismissed ones someone still references. */
size_t job_registry_n_live(JobRegistry *r);
uint64_t job_registry_now(JobRegistry *r);

/* QEMU's id rules: a letter, then letters, digits, '-', '.', '_'; at most JOB_ID_MAX bytes. */
bool job_id_is_valid(const char *id);
/* Would job_create() accept this id for this owner (NULL: an automatic one)? Lets a caller fail
 * before it does any expensive preparation. */
int job_registry_check_id(JobRegistry *r, uint32_t owner, const char *id, char **ret_error);

/* A grouped transaction (completion-mode grouped): its members wait for each other, finalize
 * together, and abort together. Members hold a reference; drop yours once they are created. */
int job_txn_new(JobRegistry *r, JobTxn **ret);
JobTxn *job_txn_ref(JobTxn *t);
JobTxn *job_txn_unref(JobTxn *t);

/* Creates a job in status created (the observer sees 'created'). The returned pointer is borrowed:
 * the registry holds the job until it is dismissed. */
int job_create(JobRegistry *r, const JobCreateParams *p, Job **ret, char **ret_error);
/* Re-creating a job that existed before the daemon stopped (its record, issue 15): same owner, id
 * and options, directly in its recorded status, with its progress, user pause and (concluded) its
 * result. No status is walked through and the observer is told nothing: the job is new to every
 * observer, and the layer above announces it as it is (InterfacesAdded carries its status);
 * observers hear of the real transitions from job_restore_start() on.
 *
 * The job is held until job_restore_start(): it does not step, and verbs that arrive meanwhile
 * take effect then (a cancel ends it at once, as it ends a job never started). Restore every member
 * of a transaction before starting any: a waiting member goes pending once all are completed, a
 * pending one finalizes by itself once every member is pending and all auto-finalize. */
typedef struct JobRestoreParams {
        JobCreateParams create;         /* .id is required: a restored job keeps its id */
        JobStatus status;               /* created, running, paused, ready, standby, waiting, pending, concluded */
        bool user_paused;               /* required in paused and standby, allowed in created, running, ready */
        int ret;                        /* concluded: 0 or negative errno; 0 elsewhere */
        const char *error;              /* concluded with ret < 0: its message (NULL: strerror) */
        uint64_t progress_current;
        uint64_t progress_total;
        /* The last checkpoint recorded: kept as if a step had reported it (job_checkpoint()), not
         * told. The checkpoint interval starts again at job_restore_start(). */
        bool has_checkpoint;
        uint64_t checkpoint;
} JobRestoreParams;

int job_restore(JobRegistry *r, const JobRestoreParams *p, Job **ret, char **ret_error);
void job_restore_start(Job *j);

/* created → running, and the first pause point. Does nothing once the job is stopped or stopping
 * (job_stop()): it stays created. The same goes for job_restore_start(): the job stays held. */
void job_start(Job *j);
/* Creation failed after the job existed: created → null, the job goes away. */
void job_early_fail(Job *j);

Job *job_ref(Job *j);
Job *job_unref(Job *j);

/* The verbs, as QEMU's job-* commands. job_user_cancel(j, true) is job-cancel; force=false is the
 * soft cancel of block-job-cancel, which a driver may keep soft. */
int job_user_pause(Job *j, char **ret_error);
int job_user_resume(Job *j, char **ret_error);
int job_user_cancel(Job *j, bool force, char **ret_error);
int job_complete(Job *j, char **ret_error);
int job_finalize(Job *j, char **ret_error);
/* job_finalize(), and 'done' called once its whole transaction has ended, every member concluded
 * (or gone, with auto-dismiss), published or rolled back: that is when QEMU's job-finalize returns,
 * having run prepare, commit or abort, and clean for all of them. Here they run through the
 * executor, so 'done' comes later, or before this returns if none of them had work to do. A
 * second finalize while the first is under way is told with the first. Not called if this fails. */
typedef void (*JobFinalizedFunc)(void *userdata);
int job_finalize_notify(Job *j, JobFinalizedFunc done, void *userdata, char **ret_error);
/* Also takes a stopped job (job_is_stopped()) out of the registry, whatever its status: the daemon
 * is exiting. Observers are told 'null' as for a dismissal, with job_is_stopped() still true then,
 * which tells the two apart: a stopped job comes back after the restart, so its record stays. */
int job_dismiss(Job *j, char **ret_error);
int job_set_speed(Job *j, uint64_t bytes_per_second, char **ret_error);

/* Internal pauses (a drain, a daemon-side hold): counted with the user's, but not resumable by the
 * user, and they do not touch the user-paused flag. */
void job_pause(Job *j);
void job_resume(Job *j);

/* The daemon is going away (SIGTERM) and the job is to continue after it starts again: the job
 * keeps its status, makes its work durable, and is then stopped (job_is_stopped(); the observer is
 * told JOB_CHANGE_STOPPED once, maybe before this returns; from then on nothing about the job
 * changes). Stops the job's whole transaction: a group is stopped as one, so that its
 * all-or-nothing rule holds across the restart. A second call, or one for another member, does
 * nothing more. The daemon may exit once job_registry_all_stopped(). A stopped job that is still
 * created (its creation waits for something) may yet fail: job_early_fail() is a real dismissal.
 *
 * From the call on, the core starts nothing new: no step, no prepare, no commit or abort; sleeps
 * (rate limit, backoff, idle) are cut short and do not lead to a step; auto-finalize does not
 * start the completion, a run that ends does not start an abort; job_start() and
 * job_restore_start() do nothing; internal pauses and resumes change no status; every verb is
 * refused with -ESHUTDOWN (job_accepts_verb() is false), except job_dismiss() of a stopped job
 * (see there); the transaction takes no new member (-ESHUTDOWN). What is under way ends as usual:
 *   - a step in flight completes and its result is applied (progress, ready, a checkpoint, an
 *     I/O error's stop, a pause asked for before job_stop()); if it ends the run, the job goes to
 *     the status that follows: waiting, pending (others of its group that are stopped already
 *     keep waiting, and follow after the restart), or on failure (a force cancel accepted before
 *     job_stop() included) aborting, where it stays without its abort and without cancelling the
 *     rest of its group: as after a crash, the layer above brings it back concluded with its
 *     error, and must fail the rest of its group with it;
 *   - a transaction whose completion is under way (preparing, committing or aborting: a prepare,
 *     commit, abort or clean in flight, or members waiting their turn) runs it to the end, every
 *     member concluded: it is short (flushes, renames), and a half-published group, or a commit
 *     that is final and half-done, must not be left behind. Its members are stopped as they
 *     conclude, except those that go then (auto-dismiss, as always): finished, they are gone for
 *     good, told 'null' as any dismissed job, never STOPPED.
 * Then a job that has been started and is running, paused, ready or standby runs exactly one more
 * step, with JobStepInput.checkpoint_only (even when paused): its driver may hold work that is not
 * durable yet. That step is not progress of the run, changes no status and is not rate-limited;
 * only its checkpoint is used: finished, ready, idle_ns, progress and an I/O error are ignored
 * (an error is logged; the job then comes back from its previous checkpoint). Then it is stopped.
 * Jobs that need nothing (not started or held after a restore, waiting, pending, aborting without
 * its abort, concluded) are stopped at once. */
void job_stop(Job *j);
bool job_is_stopped(const Job *j);

/* The last checkpoint a step reported or the restore brought (JobStepResult.checkpoint): false if
 * there is none. ret may be NULL. */
bool job_checkpoint(const Job *j, uint64_t *ret);

/* Progress, for drivers before the job starts (after that, through step results). */
void job_progress_set_remaining(Job *j, uint64_t remaining);
void job_progress_increase_remaining(Job *j, uint64_t delta);

/* Accessors. */
const char *job_id(const Job *j);
uint32_t job_owner(const Job *j);
JobType job_type(const Job *j);
JobStatus job_status(const Job *j);
const char *job_error(const Job *j);      /* NULL while the job has not failed */
int job_ret(const Job *j);
uint64_t job_current_progress(const Job *j);
uint64_t job_total_progress(const Job *j);
uint64_t job_speed(const Job *j);
bool job_auto_finalize(const Job *j);
bool job_auto_dismiss(const Job *j);
JobIoStatus job_io_status(const Job *j);
bool job_is_user_paused(const Job *j);
unsigned job_pause_count(const Job *j);
/* Any cancel, soft included / a force cancel. Event-loop thread only, like the rest of the job's
 * state: a driver's worker hooks learn of a soft cancel from JobStepInput.cancel_requested. */
bool job_cancel_requested(const Job *j);
bool job_is_cancelled(const Job *j);
/* The verb table for the job's status; false for every verb from job_stop() on. */
bool job_accepts_verb(const Job *j, JobVerb v);

/* Dismisses the job by itself once it concludes, whatever it was created with: for a daemon
 * that is going away for good (the bus is lost), where nobody is left to dismiss it. */
void job_set_auto_dismiss(Job *j);
JobTxn *job_get_txn(const Job *j);
bool job_txn_is_grouped(const JobTxn *t);
void *job_driver_data(const Job *j);
void *job_get_userdata(const Job *j);
void job_set_userdata(Job *j, void *userdata);
JobRegistry *job_get_registry(const Job *j);

/* Programming-error check: moves the job to 'to' or aborts the process if the transition table
 * forbids it. Exported for the table tests; the core is its only real caller. */
void job_state_transition(Job *j, JobStatus to);
