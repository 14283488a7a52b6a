/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's executor (see job-executor.h): a fixed pool of worker threads runs job work and
 * any other blocking call the daemon must keep off its event loop (opening images before a job
 * exists); each finished item is queued back to the loop, which an eventfd wakes. Timers are
 * sd-event CLOCK_MONOTONIC sources, one per job. Worker threads block every signal, so signals
 * reach the event loop's handlers only. Work is shared fairly between owners (uids): see
 * worker_pool_owner_cap(). */

#include <systemd/sd-event.h>

#include "job-executor.h"

#define WORKER_POOL_THREADS_DEFAULT 4U
#define WORKER_POOL_THREADS_MAX 64U

typedef struct WorkerPool WorkerPool;
typedef void (*WorkerFunc)(void *userdata);

int worker_pool_new(sd_event *event, unsigned n_threads, WorkerPool **ret);
/* Stops and joins the threads: a worker finishes the item it runs (it cannot be interrupted; this
 * waits for it), items not yet started never start, and results not yet delivered are dropped,
 * their done callbacks never called. Every job using the pool must be freed first (the registry
 * freed): a job's work can only end through its done callback. A caller that needs every done
 * callback to run (to free what it handed over) first runs the loop until
 * worker_pool_n_outstanding() is 0, which the idle callback tells. */
WorkerPool *worker_pool_free(WorkerPool *p);

/* The executor to pass to job_registry_new(), with the pool as its userdata. */
extern const JobExecutor worker_pool_executor;

unsigned worker_pool_n_threads(const WorkerPool *p);

/* Work submitted whose done callback has not run yet (job work and worker_pool_call() alike). */
unsigned worker_pool_n_outstanding(const WorkerPool *p);
/* Called on the event loop whenever worker_pool_n_outstanding() drops to 0 (after a done
 * callback); NULL to stop. It may free nothing that the pool's own dispatch still uses, so it
 * should only take note (or sd_event_exit()); the pool itself may be freed after it returns. */
void worker_pool_set_idle_callback(WorkerPool *p, WorkerFunc idle, void *userdata);

/* Run run(userdata) on a worker, then done(userdata) on the event loop, for 'owner' (the uid the
 * work is done for; jobs are their job_owner()'s). Event-loop thread only. -ENOMEM is the only
 * failure; nothing runs then. */
int worker_pool_call(WorkerPool *p, uint32_t owner, WorkerFunc run, WorkerFunc done, void *userdata);
/* At most this many of the pool's workers run one owner's work at once: n - 1 of n threads (1 of
 * 1), so that an owner whose work blocks (a hung mount) leaves a worker for everyone else.
 * Owners with work waiting take turns, one item each. */
unsigned worker_pool_owner_cap(const WorkerPool *p);
