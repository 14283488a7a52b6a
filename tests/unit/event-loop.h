/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The core on the real executor: an sd-event loop, a worker pool and a registry, for tests that
 * run real work on real threads. Every wait is bounded, so a hang fails the test. */

#include <glib.h>
#include <pthread.h>
#include <stdbool.h>

#include "job.h"
#include "worker-pool.h"

typedef struct TestLoop {
        sd_event *event;
        WorkerPool *pool;
        JobRegistry *registry;
        pthread_t thread;
} TestLoop;

void test_loop_init(TestLoop *l, unsigned n_threads, const JobObserver *observer, void *userdata);
void test_loop_done(TestLoop *l);

/* Run one loop iteration (waiting at most 10 s for something to happen). */
void test_loop_iterate(TestLoop *l);
/* Run until the registry is empty. */
void test_loop_run_until_empty(TestLoop *l);
/* Run until the job has the given status. */
void test_loop_run_until_status(TestLoop *l, Job *j, JobStatus status);
/* Run the loop for 'usec' of wall time, whatever happens meanwhile. */
void test_loop_run_for(TestLoop *l, uint64_t usec);
