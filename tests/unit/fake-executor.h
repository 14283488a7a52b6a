/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A deterministic executor for the core's tests: work items queue up in submission order and run
 * (on the test's own thread) only when the test says so; time moves only when the test advances
 * the fake clock, and timers fire in deadline order. */

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "job-executor.h"

typedef struct FakeExecutor {
        uint64_t now;
        GQueue queue;           /* Job *, submitted and not yet run */
        GQueue held;            /* Job *, run but not yet reported done (fake_run_begin) */
        GPtrArray *timers;      /* FakeTimer *, one per attached job */
        unsigned n_submitted;
        unsigned n_attached;
} FakeExecutor;

extern const JobExecutor fake_executor_ops;

void fake_executor_init(FakeExecutor *e);
void fake_executor_done(FakeExecutor *e);

/* Run the oldest queued work item; false if none. */
bool fake_run_one(FakeExecutor *e);
/* Run the oldest queued work item as a worker would, but hold back its completion: the core still
 * sees it in flight, and the test may act (cancel, pause) before fake_run_end() reports it done,
 * oldest first. False if nothing is queued / held. */
bool fake_run_begin(FakeExecutor *e);
bool fake_run_end(FakeExecutor *e);
/* Run queued work until none is left (timers do not fire). */
void fake_run_queue(FakeExecutor *e);
/* The earliest armed timer's deadline, or UINT64_MAX. */
uint64_t fake_next_deadline(FakeExecutor *e);
/* Advance the clock to the earliest armed timer and fire it; false if none is armed. */
bool fake_fire_next_timer(FakeExecutor *e);
/* Run work and fire timers until nothing is left to do. */
void fake_run_until_idle(FakeExecutor *e);
/* Move the clock forward, firing every timer that falls due on the way (and the work it queues). */
void fake_advance(FakeExecutor *e, uint64_t ns);
