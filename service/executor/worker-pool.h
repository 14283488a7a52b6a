/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's executor (see job-executor.h): a fixed pool of worker threads runs job work and
 * any other blocking call the daemon must keep off its event loop (opening images before a job
 * exists); each finished item is queued back to the loop, which an eventfd wakes. Timers are
 * sd-event CLOCK_MONOTONIC sources, one per job. Worker threads block every signal, so signals
 * reach the event loop's handlers only. */

#include <systemd/sd-event.h>

#include "job-executor.h"

#define WORKER_POOL_THREADS_DEFAULT 4U
#define WORKER_POOL_THREADS_MAX 64U

typedef struct WorkerPool WorkerPool;

int worker_pool_new(sd_event *event, unsigned n_threads, WorkerPool **ret);
/* Stops and joins the threads. Every job using the pool must be gone by then. */
WorkerPool *worker_pool_free(WorkerPool *p);

/* The executor to pass to job_registry_new(), with the pool as its userdata. */
extern const JobExecutor worker_pool_executor;

unsigned worker_pool_n_threads(const WorkerPool *p);

/* Run run(userdata) on a worker, then done(userdata) on the event loop. -ENOMEM is the only
 * failure; nothing runs then. */
typedef void (*WorkerFunc)(void *userdata);
int worker_pool_call(WorkerPool *p, WorkerFunc run, WorkerFunc done, void *userdata);
