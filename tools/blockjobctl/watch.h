/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Following jobs to their result: `wait`, --wait and --follow.
 *
 * A Watch subscribes to the job signals and to blockjobd's name before the call that creates a
 * job or acts on it, so that nothing the job does after the call is missed. Each job's state is
 * then read once (GetAll); signals the service sent before that answer are already in it and
 * are skipped (by their serial, which grows with every message the service sends), later ones
 * apply. The watch ends when every job has ended, or waits for someone (ready, pending, stopped
 * by an I/O error: it says what to run), or blockjobd goes away (NameOwnerChanged), or the job
 * vanishes, or on Ctrl-C (which says the job goes on and how to cancel it, or cancels it with
 * --cancel-on-interrupt). */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

typedef enum WatchGoal {
        WATCH_UNTIL_END,                /* the job's result */
        WATCH_UNTIL_PAUSED,             /* pause --wait */
} WatchGoal;

typedef enum JobOutcome {
        OUTCOME_NONE,                   /* not ended yet */
        OUTCOME_SUCCEEDED,
        OUTCOME_FAILED,
        OUTCOME_CANCELLED,              /* after our own cancel */
        OUTCOME_READY,
        OUTCOME_PENDING,
        OUTCOME_STOPPED,                /* paused by an I/O error */
        OUTCOME_PAUSED,                 /* pause --wait: it is */
        OUTCOME_LOST,
        OUTCOME_INTERRUPTED,
        _OUTCOME_MAX,
} JobOutcome;

typedef struct Watch Watch;

typedef struct WatchJob {
        Watch *watch;
        char *path;
        char *raw_id;
        char *id;                       /* escaped, as printed */
        char type[16];
        char status[32];
        char io_status[16];
        char *transaction;
        uint64_t current, total, rate, end_time;
        char *error;                    /* escaped */
        bool auto_finalize, auto_dismiss;
        uint64_t min_cookie;            /* signals with a serial below this are in the state read */
        bool known;                     /* the state was read */
        bool user_paused_told;
        bool complete_sent, cancel_sent;
        bool dismiss;                   /* we made it not auto-dismiss: dismiss once its result is read */
        bool cancelling;                /* the verb was cancel: a cancelled end is what was asked */
        const char *leaving;            /* the status the verb acted on, not a stop while the state read shows it */
        bool concluding;                /* concluded: its end is in the answers below */
        sd_bus_slot *error_read;        /* the Error property asked for, not answered yet */
        sd_bus_slot *dismissing;        /* Dismiss called, not answered yet */
        JobOutcome outcome;
} WatchJob;

typedef struct Progress Progress;

struct Watch {
        sd_bus *bus;
        sd_event *event;
        WatchGoal goal;
        WatchJob **jobs;
        size_t n_jobs;
        Progress *progress;             /* --follow */
        bool interrupted;
        int exit_status;
        sd_bus_slot *slots[6];
        int match_error;                /* a subscription the bus refused */
};

/* Before the call: the subscriptions. */
int watch_new(sd_bus *bus, WatchGoal goal, Watch **ret);
/* After it: a job to follow, its state read. 'leaving' is the status the verb took it from
 * (ready for complete, pending for finalize, paused for resume), or NULL. */
int watch_add_job(Watch *w, const char *path, const char *leaving, bool dismiss, bool cancelling);
/* Until every job has ended or waits for someone. Returns the exit status. */
int watch_run(Watch *w);
Watch *watch_free(Watch *w);

static inline void watch_freep(Watch **w) {
        watch_free(*w);
}

const char *job_outcome_to_string(JobOutcome o);
