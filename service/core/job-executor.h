/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* How the core gets work done and time measured, without knowing about threads or event loops.
 * The daemon plugs in a worker pool on sd-event (service/executor/); the unit tests plug in a
 * deterministic fake with a fake clock. */

#include <stdint.h>

typedef struct Job Job;

typedef struct JobExecutor {
        /* Monotonic time in ns. */
        uint64_t (*now)(void *userdata);

        /* A job was created / is about to be freed: set up and tear down whatever per-job state
         * the executor needs (job_executor_data() holds it). attach may fail with -ENOMEM.
         * job_owner() is set by then: an executor may share its threads fairly between owners
         * (the worker pool does). */
        int (*attach)(void *userdata, Job *j);
        void (*detach)(void *userdata, Job *j);

        /* Call job_work_run(j) off the event loop, then job_work_done(j) on it. The core submits
         * at most one work item per job at a time. */
        void (*submit)(void *userdata, Job *j);

        /* Call job_timer_fired(j) on the event loop at 'deadline' (the clock of now());
         * UINT64_MAX disarms. One timer per job; arming again moves it. */
        void (*set_timer)(void *userdata, Job *j, uint64_t deadline);
} JobExecutor;

/* Entry points for executors. */
void job_work_run(Job *j);        /* worker thread */
void job_work_done(Job *j);       /* event loop */
void job_timer_fired(Job *j);     /* event loop */

void *job_executor_data(Job *j);
void job_set_executor_data(Job *j, void *data);
