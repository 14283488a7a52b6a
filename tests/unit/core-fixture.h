/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The core on a fake executor, with an observer that writes every status change as "<id>:<status>"
 * into one string (a checkpoint told as "<id>:checkpoint=<value>", a job stopped as
 * "<id>:stopped", and a stopped job's dismissal as "<id>:null(stopped)", in the same string), every I/O error event as "<id>:<read|write>:<action>"
 * (with "+<n>" when it stands for n more that were suppressed), and remembers each
 * job's error text at conclusion. Also records which (from, to) transitions were taken. */

#include <glib.h>

#include "fake-executor.h"
#include "job.h"
#include "test-driver.h"

typedef struct CoreFixture {
        FakeExecutor exec;
        JobRegistry *registry;
        GString *events;
        GString *calls;                 /* driver hooks, see test-driver.h */
        GString *io_errors;
        GHashTable *errors;             /* id → error text at concluded ("" for success) */
        GHashTable *last_status;        /* Job * → JobStatus, to derive transitions */
        bool edges[_JOB_STATUS_MAX][_JOB_STATUS_MAX];
        unsigned n_empty;               /* JobObserver.empty calls */
        bool checkpoints;               /* core_drive_to() makes jobs with core_ckpt_driver()s */
        GHashTable *stopped;            /* Job * told JOB_CHANGE_STOPPED, until its 'null' */
} CoreFixture;

/* The test driver 'base' (test-driver.h) keeping checkpoints, as real drivers do (job-driver.h): a
 * step asked for one reports its offset, and so does the step that finishes successfully; a
 * checkpoint_only step does nothing else, and is logged as "<id>:checkpoint-only" with the hooks.
 * core_ckpt_only_mode makes that step misbehave, to check what the core ignores. */
const JobDriver *core_ckpt_driver(const JobDriver *base);

typedef enum CoreCkptOnlyMode {
        CORE_CKPT_ONLY_NORMAL,
        CORE_CKPT_ONLY_JUNK,            /* also reports progress, ready, idle and finished */
        CORE_CKPT_ONLY_FAIL,            /* no checkpoint: a target write error (report) */
} CoreCkptOnlyMode;
extern CoreCkptOnlyMode core_ckpt_only_mode;    /* reset by core_fixture_setup() */

void core_fixture_setup(CoreFixture *f, gconstpointer data);
void core_fixture_teardown(CoreFixture *f, gconstpointer data);

/* A 3-step job (3 × 64 KiB) unless the config says otherwise. */
Job *core_job(CoreFixture *f, const char *id, const JobDriver *d, const TestDriverConfig *c, bool auto_finalize,
              bool auto_dismiss, JobTxn *txn);
Job *core_job_simple(CoreFixture *f, const char *id);
/* A simple job of another owner (core_job's are owner 0's). */
Job *core_job_owned(CoreFixture *f, uint32_t owner, const char *id);
TestDriverState *core_job_state(Job *j);

/* Compare and clear the recorded events / hook calls / I/O errors. */
#define assert_events(f, expected) core_assert_string((f)->events, (expected), __FILE__, __LINE__)
#define assert_calls(f, expected) core_assert_string((f)->calls, (expected), __FILE__, __LINE__)
#define assert_io_errors(f, expected) core_assert_string((f)->io_errors, (expected), __FILE__, __LINE__)
void core_assert_string(GString *s, const char *expected, const char *file, int line);

/* The error a job concluded with ("" for success); the job need not exist any more. */
const char *core_error_of(CoreFixture *f, const char *id);

/* Create a job called 'id' and bring it into 'status' (created, running, paused, ready, standby,
 * waiting, pending, aborting or concluded) and keep it there until the test acts; with
 * f->checkpoints its driver keeps checkpoints (core_ckpt_driver()). With
 * user_paused the job is also user-paused on arrival (where the verb table allows it, the pause
 * happens before arrival; elsewhere while its last step is in flight). Jobs in paused and standby
 * are held there by an internal pause unless user_paused. Waiting needs a second job in the
 * transaction, called "<id>-peer", which stays running. */
Job *core_drive_to(CoreFixture *f, const char *id, JobStatus status, bool user_paused);

/* Cancel and dismiss whatever is left, so that teardown finds an empty registry. */
void core_fixture_drain(CoreFixture *f);

#define CORE_TEST(path, fn) g_test_add(path, CoreFixture, NULL, core_fixture_setup, fn, core_fixture_teardown)
