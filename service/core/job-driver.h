/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What a job type implements. A driver does its work in bounded steps; the core decides between
 * steps whether the job pauses, sleeps for the rate limit, is cancelled, or goes on. So every
 * step boundary is a pause point and a cancellation point, and a driver never blocks on the
 * lifecycle itself.
 *
 * Threads: hooks marked "worker" run on a worker thread, never on the event loop, and may block on
 * I/O; the core runs at most one of them at a time per job. Hooks marked "loop" run on the event
 * loop and must not block. A step reads what the loop side decided (complete, soft cancel, the
 * rate limit) from its JobStepInput and reports back through its JobStepResult, so driver data is
 * never touched by two threads at once. Worker hooks must not read the job's lifecycle state
 * (job_cancel_requested(), job_status(), ...): the loop writes it meanwhile. A step that finishes
 * because of a soft cancel records that in the driver's data if prepare needs to know.
 */

#include <stdbool.h>
#include <stdint.h>

#include "job-lifecycle.h"

typedef struct Job Job;

typedef struct JobStepInput {
        /* Upper bound for the bytes this step should dispatch: the rate limiter's slice quota, so
         * that a throttled job never overshoots by more than one slice. 0 means no limit: the
         * driver picks its own chunk size. */
        uint64_t max_bytes;
        /* Complete() was accepted: converge one last time and finish successfully. */
        bool complete_requested;
        /* A soft cancel that the driver kept soft (see JobDriver.cancel): finish successfully
         * without switching over (mirror's "complete without pivot"). A force cancel never reaches
         * a step: the core ends the run itself at the next pause point. */
        bool cancel_requested;
        /* A checkpoint is due: JOB_CHECKPOINT_INTERVAL_NS (job.h) of the registry's clock have
         * passed since the job's last checkpoint, or since it started running (a restore counts
         * as a start). A driver that keeps checkpoints makes what it has done durable (waits for
         * its writes in flight, flushes the target) and reports it (JobStepResult.checkpoint);
         * it may go on working in the same step. The flag stays set, step after step, until a
         * checkpoint is reported. A driver that keeps none ignores it. */
        bool checkpoint;
        /* The daemon is stopping (job_stop()) and the job is to continue after it starts again:
         * do no work at all, make what was done durable and report a checkpoint. Set together
         * with 'checkpoint'; max_bytes is 0, complete_requested and cancel_requested are false.
         * The job's last step before it is stopped; it may come while the job is paused. Of its
         * result the core uses the checkpoint only: progress, ready, idle_ns, finished and an I/O
         * error are ignored (an error is logged), the job keeps its status and comes back after
         * the restart from its last checkpoint (job_stop() in job.h). */
        bool checkpoint_only;
} JobStepInput;

/* An I/O error that hit the job's error policy (QEMU's BLOCK_JOB_ERROR). */
typedef struct JobIoError {
        bool set;
        bool is_read;              /* the failed operation: read, or write */
        bool on_source;            /* which policy applied: on-source-error or on-target-error */
        JobErrorAction action;
        int error;                 /* negative errno */
        char *message;             /* what failed, with the file and offset; may be NULL */
        /* Set by the core for the observer: ignored errors of this job that the observer was not
         * told about since the last one it was (see JOB_IO_ERROR_BURST in job.h). */
        unsigned suppressed;
} JobIoError;

typedef struct JobStepResult {
        /* The run is over: 'ret' is its result (0 or negative errno) and 'error' an optional
         * message naming what failed (otherwise the core uses strerror). */
        bool finished;
        int ret;
        char *error;

        /* Progress in bytes made by this step (ranges that need no copy count too), and, if
         * has_remaining, how much is left after it: total becomes current + remaining. */
        uint64_t progress;
        bool has_remaining;
        uint64_t remaining;

        /* Bytes that count against the speed limit. */
        uint64_t dispatched;

        /* Source and target are synchronized: the job moves from running to ready. */
        bool ready;

        /* Nothing to do right now (a ready mirror waiting for changes): sleep this long before
         * the next step, unless woken earlier by complete, cancel, pause or set-speed. */
        uint64_t idle_ns;

        JobIoError io_error;

        /* A checkpoint: everything below checkpoint_value, in the driver's own unit (an offset),
         * is durable, so that a job re-created after a restart (job_restore()) continues from
         * there. The core keeps the last one (job_checkpoint()), restarts the checkpoint interval
         * and tells the observer (JOB_CHANGE_CHECKPOINT) before anything else this step leads
         * to; taken from any step, the finishing or failing one and the checkpoint_only one
         * included.
         *
         * The rule for drivers that keep checkpoints: also report one on the step that finishes
         * successfully (finished, ret == 0), after making the end durable, so that a job recorded
         * as waiting or pending comes back with nothing left to copy. */
        bool checkpoint;
        uint64_t checkpoint_value;
} JobStepResult;

typedef struct JobDriver {
        JobType type;

        /* prepare changes the images for good (commit pivots and empties the image): once it has
         * been submitted, a cancel is a no-op, as in the commit phase, so that the job's outcome
         * and its report agree. Such a job is prepared after every other member of its
         * transaction, and a transaction holds at most one. */
        bool prepare_is_final;

        /* worker: do one bounded unit of work. Required. */
        void (*step)(Job *j, void *data, const JobStepInput *in, JobStepResult *out);

        /* worker: make the result durable and check that it can be published; may fail. Runs for
         * every member of a transaction before any of them commits. */
        int (*prepare)(Job *j, void *data, char **ret_error);
        /* worker: exactly one of commit (success) or abort (failure, cancel) runs, then clean. */
        void (*commit)(Job *j, void *data);
        void (*abort)(Job *j, void *data);
        void (*clean)(Job *j, void *data);

        /* loop: a cancel was requested; return whether it is a force cancel. A driver may keep a
         * soft request soft (mirror in ready: finish without pivot); it can never turn a force
         * request soft. Without this hook every cancel is a force cancel. */
        bool (*cancel)(Job *j, void *data, bool force);

        /* loop: complete was requested in ready or standby; may refuse with a message. Without
         * this hook the job cannot be completed. */
        int (*complete)(Job *j, void *data, char **ret_error);

        /* loop: free the driver's data (after clean, or when creation failed). */
        void (*free)(void *data);
} JobDriver;

/* For a step (worker thread): apply the job's error policy to an I/O error and record it in the
 * step result. With the report action the step result is marked finished with the error; with
 * stop the core pauses the job and sets its io-status once the step returns, and the driver keeps
 * its position so that the next step after resume retries the failed range; with ignore the
 * driver decides whether to retry or skip, and the core waits before the next step (a backoff,
 * see JOB_IO_ERROR_BACKOFF_MIN_NS in job.h) so that a range that keeps failing is not retried in a
 * busy loop. The message is formatted like printf. */
JobErrorAction job_step_io_error(Job *j, JobStepResult *out, bool on_source, bool is_read, int error,
                                 const char *format, ...) __attribute__((format(printf, 6, 7)));
