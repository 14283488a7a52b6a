/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Lifecycles on the fake executor: every test checks the exact sequence of statuses notified, the
 * driver hooks that ran, and the exact error texts. Each scenario is a function so that the last
 * test can run them all and check that together they take every legal transition. */

#include <errno.h>

#include "core-fixture.h"
#include "macro.h"

#define CHUNK 65536
#define MS G_GUINT64_CONSTANT(1000000)

static const TestDriverConfig mirror_one_chunk = { .total = CHUNK, .mirror = true };

/* ---- completion with each auto-finalize × auto-dismiss combination ------------------------ */

static void scenario_auto_both(CoreFixture *f) {
        Job *j = core_job(f, "j", &test_driver_backup, NULL, true, true, NULL);
        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null");
        assert_calls(f, "j:prepare j:commit j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
        g_assert_null(job_registry_find(f->registry, 0, "j"));
}

static void scenario_manual_finalize(CoreFixture *f) {
        g_autofree char *error = NULL;
        Job *j = core_job(f, "j", &test_driver_backup, NULL, false, true, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending");
        assert_calls(f, "");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PENDING);
        g_assert_cmpuint(job_current_progress(j), ==, 3 * CHUNK);
        g_assert_cmpuint(job_total_progress(j), ==, 3 * CHUNK);

        /* Dismiss is not finalize. */
        g_assert_cmpint(job_dismiss(j, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "Job 'j' in state 'pending' cannot accept command verb 'dismiss'");

        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:concluded j:null");
        assert_calls(f, "j:prepare j:commit j:clean");
}

static void scenario_manual_dismiss(CoreFixture *f) {
        Job *j = core_job(f, "j", &test_driver_backup, NULL, true, false, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_CONCLUDED);
        g_assert_null(job_error(j));
        g_assert_cmpuint(job_registry_count(f->registry), ==, 1);

        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        assert_events(f, "j:null");
        g_assert_cmpuint(job_registry_count(f->registry), ==, 0);
}

static void scenario_manual_both(CoreFixture *f) {
        Job *j = core_job(f, "j", &test_driver_backup, NULL, false, false, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending");
        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:concluded");
        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        assert_events(f, "j:null");
        assert_calls(f, "j:prepare j:commit j:clean");
}

/* ---- pause and resume --------------------------------------------------------------------- */

static void scenario_pause_running(CoreFixture *f) {
        Job *j = core_job_simple(f, "j");

        job_start(j);
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        /* The status changes only when the step in flight returns, at the pause point. */
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_RUNNING);
        g_assert_true(fake_run_one(&f->exec));
        assert_events(f, "j:created j:running j:paused");

        /* Paused means no I/O: nothing is queued, nothing runs however long we wait. */
        unsigned submitted = f->exec.n_submitted;
        fake_advance(&f->exec, 10 * G_GUINT64_CONSTANT(1000000000));
        g_assert_cmpuint(f->exec.n_submitted, ==, submitted);
        g_assert_cmpuint(core_job_state(j)->steps, ==, 1);
        g_assert_cmpuint(job_current_progress(j), ==, CHUNK);

        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:waiting j:pending j:concluded j:null");
}

static void scenario_pause_created(CoreFixture *f) {
        Job *j = core_job_simple(f, "j");

        /* Paused before it started: it starts, and stops at its first pause point. */
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        job_start(j);
        assert_events(f, "j:created j:running j:paused");
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:waiting j:pending j:concluded j:null");
}

static void scenario_pause_ready(CoreFixture *f) {
        Job *j = core_job(f, "j", &test_driver_mirror, &mirror_one_chunk, true, true, NULL);

        job_start(j);
        fake_run_one(&f->exec);
        assert_events(f, "j:created j:running j:ready");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_READY);

        /* Ready and idle: pausing takes effect at once. */
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        assert_events(f, "j:standby");
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        assert_events(f, "j:ready");

        /* It stays ready, idling, until completed. */
        fake_advance(&f->exec, 1000 * MS);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_READY);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:waiting j:pending j:concluded j:null");
        assert_calls(f, "j:complete j:prepare j:commit j:clean");
}

static void scenario_complete_standby(CoreFixture *f) {
        Job *j = core_job(f, "j", &test_driver_mirror, &mirror_one_chunk, true, false, NULL);

        job_start(j);
        fake_run_one(&f->exec);
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        assert_events(f, "j:created j:running j:ready j:standby");

        /* Accepted in standby, effective only once resumed. */
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        fake_advance(&f->exec, 1000 * MS);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_STANDBY);
        assert_events(f, "");

        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:ready j:waiting j:pending j:concluded");
        assert_calls(f, "j:complete j:prepare j:commit j:clean");
        g_assert_null(job_error(j));
}

static void test_pause_errors(CoreFixture *f, gconstpointer data) {
        g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL;
        Job *j = core_job_simple(f, "j");

        job_start(j);
        g_assert_cmpint(job_user_resume(j, &e1), ==, -EBUSY);
        g_assert_cmpstr(e1, ==, "Can't resume a job that was not paused");

        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        g_assert_cmpint(job_user_pause(j, &e2), ==, -EBUSY);
        g_assert_cmpstr(e2, ==, "Job is already paused");
        g_assert_cmpuint(job_pause_count(j), ==, 1);

        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        g_assert_cmpint(job_user_resume(j, &e3), ==, -EBUSY);
        g_assert_cmpstr(e3, ==, "Can't resume a job that was not paused");
}

static void test_resume_checked_before_verb(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Job *j = core_drive_to(f, "j", JOB_STATUS_CONCLUDED, false);

        /* Concluded refuses resume, but the "not paused" check comes first, as in QEMU. */
        g_assert_cmpint(job_user_resume(j, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "Can't resume a job that was not paused");
}

static void scenario_internal_pause(CoreFixture *f) {
        g_autofree char *error = NULL;
        Job *j = core_job_simple(f, "j");

        job_start(j);
        job_pause(j);
        fake_run_one(&f->exec);
        assert_events(f, "j:created j:running j:paused");
        g_assert_false(job_is_user_paused(j));

        /* The user did not pause it, so the user cannot resume it, but may pause it too. */
        g_assert_cmpint(job_user_resume(j, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "Can't resume a job that was not paused");
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        g_assert_cmpuint(job_pause_count(j), ==, 2);

        /* Both pauses must go before it runs again. */
        job_resume(j);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PAUSED);
        assert_events(f, "");
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:waiting j:pending j:concluded j:null");
}

/* ---- cancel in every status that accepts it ----------------------------------------------- */

static void scenario_cancel_created(CoreFixture *f) {
        Job *j = core_job_simple(f, "j");

        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        assert_events(f, "j:created j:aborting");
        fake_run_until_idle(&f->exec);
        /* Never started: dismissed even without auto-dismiss... here it has it anyway. */
        assert_events(f, "j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void test_cancel_created_manual_dismiss(CoreFixture *f, gconstpointer data) {
        Job *j = core_job(f, "j", &test_driver_backup, NULL, true, false, NULL);

        /* A job that never started is dismissed at conclusion whatever its auto-dismiss says. */
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:aborting j:concluded j:null");
        g_assert_cmpuint(job_registry_count(f->registry), ==, 0);
}

static void scenario_cancel_running(CoreFixture *f) {
        Job *j = core_job_simple(f, "j");

        job_start(j);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_true(job_is_cancelled(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:aborting j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void scenario_cancel_paused(CoreFixture *f) {
        Job *j = core_drive_to(f, "j", JOB_STATUS_PAUSED, true);

        assert_events(f, "j:created j:running j:paused");
        /* Cancelling a paused job resumes it first: there is no paused → aborting. */
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_false(job_is_user_paused(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:aborting j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void scenario_cancel_ready(CoreFixture *f) {
        Job *j = core_drive_to(f, "j", JOB_STATUS_READY, false);

        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:ready j:aborting j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void scenario_cancel_standby(CoreFixture *f) {
        Job *j = core_drive_to(f, "j", JOB_STATUS_STANDBY, true);

        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:ready j:standby j:ready j:aborting j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
}

static void scenario_cancel_waiting(CoreFixture *f) {
        Job *j = core_drive_to(f, "a", JOB_STATUS_WAITING, false);

        assert_events(f, "a:created a-peer:created a:running a-peer:running a:waiting");
        /* Cancelling a member that already succeeded aborts the whole transaction. */
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a-peer:aborting a-peer:concluded a-peer:null a:aborting a:concluded a:null");
        assert_calls(f, "a-peer:abort a-peer:clean a:abort a:clean");
        g_assert_cmpstr(core_error_of(f, "a"), ==, "Operation canceled");
        g_assert_cmpstr(core_error_of(f, "a-peer"), ==, "Operation canceled");
}

static void scenario_cancel_pending(CoreFixture *f) {
        Job *j = core_drive_to(f, "j", JOB_STATUS_PENDING, false);

        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:aborting j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void test_cancel_concluded(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Job *j = core_drive_to(f, "j", JOB_STATUS_CONCLUDED, false);

        g_assert_cmpint(job_user_cancel(j, true, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "Job 'j' in state 'concluded' cannot accept command verb 'cancel'");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_CONCLUDED);
}

static void test_cancel_aborting(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Job *j = core_drive_to(f, "j", JOB_STATUS_ABORTING, false);

        g_assert_cmpint(job_user_cancel(j, true, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "Job 'j' in state 'aborting' cannot accept command verb 'cancel'");
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:aborting j:concluded j:null");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Input/output error");
}

/* ---- soft cancel -------------------------------------------------------------------------- */

static void scenario_soft_cancel_ready(CoreFixture *f) {
        Job *j = core_drive_to(f, "j", JOB_STATUS_READY, false);

        /* A mirror keeps a soft cancel soft in ready: it finishes successfully without pivot. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_true(job_cancel_requested(j));
        g_assert_false(job_is_cancelled(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:ready j:waiting j:pending j:concluded j:null");
        assert_calls(f, "j:soft-cancel j:prepare j:commit j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_soft_cancel_before_ready(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 3 * CHUNK, .mirror = true };
        Job *j = core_job(f, "j", &test_driver_mirror, &c, true, true, NULL);

        /* Before ready, the mirror turns every cancel into a force cancel. */
        job_start(j);
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_true(job_is_cancelled(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:aborting j:concluded j:null");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void test_soft_cancel_backup(CoreFixture *f, gconstpointer data) {
        Job *j = core_job_simple(f, "j");

        /* A driver without a cancel hook treats every cancel as a force cancel. */
        job_start(j);
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_true(job_is_cancelled(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:aborting j:concluded j:null");
}

static void test_soft_cancel_after_run(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = CHUNK, .keep_soft_always = true };
        Job *j = core_job(f, "j", &test_driver_mirror, &c, false, true, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending");

        /* The run has returned: a soft request that the driver keeps soft is ignored. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_false(job_cancel_requested(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PENDING);

        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:concluded j:null");
        assert_calls(f, "j:prepare j:commit j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_complete_after_cancel(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Job *j = core_drive_to(f, "j", JOB_STATUS_READY, false);

        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_READY);
        g_assert_cmpint(job_complete(j, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "The active block job 'j' cannot be completed");
        fake_run_until_idle(&f->exec);
}

static void test_force_after_soft(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 3 * CHUNK, .keep_soft_always = true };
        Job *j = core_job(f, "j", &test_driver_mirror, &c, true, true, NULL);

        job_start(j);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        /* A later soft request does not weaken an earlier force request. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_true(job_is_cancelled(j));
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

/* ---- ids and creation --------------------------------------------------------------------- */

static void test_invalid_ids(CoreFixture *f, gconstpointer data) {
        static const char *const bad[] = { "0id", "", "   ", "123", "_id", "-id", ".id", "#id", "id#", "id x", "é" };
        static const char *const good[] = { "id0", "id_2", "a", "A-b.c_d" };

        for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autofree char *error = NULL, *expected = g_strdup_printf("Invalid job ID '%s'", bad[i]);
                JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
                p.id = bad[i];
                p.driver = &test_driver_backup;
                g_assert_cmpint(job_create(f->registry, &p, NULL, &error), ==, -EINVAL);
                g_assert_cmpstr(error, ==, expected);
        }
        for (unsigned i = 0; i < G_N_ELEMENTS(good); i++)
                g_assert_nonnull(core_job_simple(f, good[i]));

        /* A bound on length, for ids that arrive over the bus. */
        g_autofree char *longest = g_strnfill(JOB_ID_MAX, 'a');
        g_autofree char *too_long = g_strnfill(JOB_ID_MAX + 1, 'a');
        g_assert_true(job_id_is_valid(longest));
        g_assert_false(job_id_is_valid(too_long));
        g_assert_false(job_id_is_valid(NULL));
        g_assert_cmpuint(job_registry_count(f->registry), ==, G_N_ELEMENTS(good));
        assert_events(f, "id0:created id_2:created a:created A-b.c_d:created");
}

static void scenario_id_reuse(CoreFixture *f) {
        g_autofree char *error = NULL;
        Job *j = core_drive_to(f, "j", JOB_STATUS_CONCLUDED, false);
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;

        /* Concluded but not dismissed: the id stays taken. */
        p.id = "j";
        p.driver = &test_driver_backup;
        g_assert_cmpint(job_create(f->registry, &p, NULL, &error), ==, -EEXIST);
        g_assert_cmpstr(error, ==, "Job ID 'j' already in use");
        g_assert_cmpint(job_registry_check_id(f->registry, 0, "j", NULL), ==, -EEXIST);

        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        g_assert_cmpint(job_registry_check_id(f->registry, 0, "j", NULL), ==, 0);
        j = core_job_simple(f, "j");
        g_assert_nonnull(j);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null j:created");
}

static void test_automatic_ids(CoreFixture *f, gconstpointer data) {
        Job *b0 = core_job_simple(f, NULL);
        Job *b1 = core_job_simple(f, NULL);
        Job *m0 = core_job(f, NULL, &test_driver_mirror, NULL, true, true, NULL);

        g_assert_cmpstr(job_id(b0), ==, "backup0");
        g_assert_cmpstr(job_id(b1), ==, "backup1");
        g_assert_cmpstr(job_id(m0), ==, "mirror0");
        g_assert_cmpint(job_type(m0), ==, JOB_TYPE_MIRROR);

        /* The lowest free number is reused once its job is gone. */
        g_assert_cmpint(job_user_cancel(b0, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(job_id(core_job_simple(f, NULL)), ==, "backup0");
        g_assert_cmpstr(job_id(core_job_simple(f, NULL)), ==, "backup2");

        /* Newest first, as query-jobs lists them. */
        g_autoptr(GString) order = g_string_new(NULL);
        for (Job *j = job_registry_first(f->registry); j; j = job_registry_next(j))
                g_string_append_printf(order, "%s ", job_id(j));
        g_assert_cmpstr(order->str, ==, "backup2 backup0 mirror0 backup1 ");
}

/* The search for a free id starts past the ids known to be taken, and goes back for any that
 * frees up: one a caller chose for a job of another type too. */
static void test_automatic_ids_gaps(CoreFixture *f, gconstpointer data) {
        Job *b[4];

        for (unsigned i = 0; i < G_N_ELEMENTS(b); i++)
                b[i] = core_job_simple(f, NULL);
        g_assert_cmpstr(job_id(b[3]), ==, "backup3");

        /* A mirror named like a backup: the next backup goes past it. */
        Job *named = core_job(f, "backup4", &test_driver_mirror, NULL, true, true, NULL);
        g_assert_cmpstr(job_id(core_job_simple(f, NULL)), ==, "backup5");

        /* Names that only look like default ids change nothing. */
        Job *zero = core_job(f, "backup02", &test_driver_backup, NULL, true, true, NULL);
        g_assert_cmpint(job_user_cancel(zero, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(job_id(core_job_simple(f, NULL)), ==, "backup6");

        g_assert_cmpint(job_user_cancel(named, true, NULL), ==, 0);
        g_assert_cmpint(job_user_cancel(b[2], true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(job_id(core_job_simple(f, NULL)), ==, "backup2");
        g_assert_cmpstr(job_id(core_job_simple(f, NULL)), ==, "backup4");
        g_assert_cmpstr(job_id(core_job_simple(f, NULL)), ==, "backup7");
        g_assert_cmpstr(job_id(core_job(f, NULL, &test_driver_mirror, NULL, true, true, NULL)), ==, "mirror0");
}

static void test_ids_per_owner(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;

        /* A user's job does not take the id of root's script, nor the other way round. */
        Job *user = core_job_owned(f, 1000, "nightly");
        g_assert_cmpint(job_registry_check_id(f->registry, 0, "nightly", NULL), ==, 0);
        Job *root = core_job_owned(f, 0, "nightly");
        g_assert_true(user != root);
        g_assert_cmpuint(job_owner(user), ==, 1000);
        g_assert_cmpuint(job_owner(root), ==, 0);
        g_assert_true(job_registry_find(f->registry, 1000, "nightly") == user);
        g_assert_true(job_registry_find(f->registry, 0, "nightly") == root);
        g_assert_null(job_registry_find(f->registry, 1001, "nightly"));

        /* Within one owner the id is still taken, with QEMU's message. */
        g_assert_cmpint(job_registry_check_id(f->registry, 1000, "nightly", &error), ==, -EEXIST);
        g_assert_cmpstr(error, ==, "Job ID 'nightly' already in use");
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        p.owner = 1000;
        p.id = "nightly";
        p.driver = &test_driver_backup;
        g_assert_cmpint(job_create(f->registry, &p, NULL, NULL), ==, -EEXIST);

        /* Automatic ids count within the owner: each starts at 0 and fills its own gaps. */
        Job *u0 = core_job_owned(f, 1000, NULL), *u1 = core_job_owned(f, 1000, NULL);
        Job *r0 = core_job_owned(f, 0, NULL), *o0 = core_job_owned(f, 1001, NULL);
        g_assert_cmpstr(job_id(u0), ==, "backup0");
        g_assert_cmpstr(job_id(u1), ==, "backup1");
        g_assert_cmpstr(job_id(r0), ==, "backup0");
        g_assert_cmpstr(job_id(o0), ==, "backup0");
        g_assert_true(job_registry_find(f->registry, 1001, "backup0") == o0);
        g_assert_cmpuint(job_registry_count(f->registry), ==, 6);

        job_early_fail(u0);
        g_assert_null(job_registry_find(f->registry, 1000, "backup0"));
        g_assert_true(job_registry_find(f->registry, 0, "backup0") == r0);
        g_assert_cmpstr(job_id(core_job_owned(f, 1000, NULL)), ==, "backup0");
        g_assert_cmpstr(job_id(core_job_owned(f, 1000, NULL)), ==, "backup2");
        assert_events(f, "nightly:created nightly:created backup0:created backup1:created backup0:created "
                         "backup0:created backup0:null backup0:created backup2:created");
}

static void test_id_kept_until_freed(CoreFixture *f, gconstpointer data) {
        Job *j = core_drive_to(f, "j", JOB_STATUS_CONCLUDED, false);

        /* Someone (a verb waiting for polkit) still holds the job when it is dismissed: it leaves
         * the registry and its id is free again, but the object keeps its name until freed. */
        job_ref(j);
        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        g_assert_null(job_registry_find(f->registry, 0, "j"));
        g_assert_cmpstr(job_id(j), ==, "j");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_NULL);

        Job *again = core_job_simple(f, "j");
        g_assert_true(again != j);
        g_assert_true(job_registry_find(f->registry, 0, "j") == again);
        g_assert_cmpstr(job_id(j), ==, "j");
        job_unref(j);
}

static void test_registry_empty(CoreFixture *f, gconstpointer data) {
        Job *concluded = core_drive_to(f, "c", JOB_STATUS_CONCLUDED, false);
        Job *paused = core_drive_to(f, "p", JOB_STATUS_PAUSED, true);
        Job *running = core_drive_to(f, "r", JOB_STATUS_RUNNING, false);

        g_assert_cmpuint(job_registry_n_live(f->registry), ==, 3);
        assert_events(f, "c:created c:running c:waiting c:pending c:concluded p:created p:running p:paused "
                         "r:created r:running");

        /* A daemon going away: every job cancelled or dismissed; one is still referenced (a verb
         * waiting for polkit), so the registry is not empty yet although no job is listed. */
        job_ref(running);
        g_assert_cmpint(job_user_cancel(running, true, NULL), ==, 0);
        g_assert_cmpint(job_user_cancel(paused, true, NULL), ==, 0);
        g_assert_cmpint(job_dismiss(concluded, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "p:running p:aborting c:null r:aborting p:concluded p:null r:concluded r:null");
        g_assert_cmpuint(job_registry_count(f->registry), ==, 0);
        g_assert_cmpuint(job_registry_n_live(f->registry), ==, 1);
        g_assert_cmpuint(f->n_empty, ==, 0);

        /* The last reference goes: now it is empty, once, and may be freed (by the teardown). */
        job_unref(running);
        g_assert_cmpuint(job_registry_n_live(f->registry), ==, 0);
        g_assert_cmpuint(f->n_empty, ==, 1);
}

static void test_many_ids(CoreFixture *f, gconstpointer data) {
        const unsigned n = 5000;

        /* Thousands of jobs of two owners, each found by its key. */
        for (unsigned i = 0; i < n; i++) {
                g_autofree char *id = g_strdup_printf("job%u", i);
                core_job_owned(f, i % 2, id);
        }
        for (unsigned i = 0; i < n; i++) {
                g_autofree char *id = g_strdup_printf("job%u", i);
                Job *j = job_registry_find(f->registry, i % 2, id);
                g_assert_nonnull(j);
                g_assert_cmpstr(job_id(j), ==, id);
                g_assert_cmpuint(job_owner(j), ==, i % 2);
                g_assert_null(job_registry_find(f->registry, 1 - i % 2, id));
        }
        for (Job *j; (j = job_registry_first(f->registry));)
                job_early_fail(j);
        g_assert_null(job_registry_find(f->registry, 0, "job0"));
}

static void scenario_early_fail(CoreFixture *f) {
        Job *j = core_job_simple(f, "j");

        /* Creation failed after the job existed: created, then null, and no hook runs. */
        job_early_fail(j);
        assert_events(f, "j:created j:null");
        assert_calls(f, "");
        g_assert_cmpuint(job_registry_count(f->registry), ==, 0);
}

static void test_defaults(CoreFixture *f, gconstpointer data) {
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Job *j = NULL;

        p.driver = &test_driver_backup;
        p.driver_data = test_driver_state_new(&(TestDriverConfig) { .total = CHUNK }, NULL);
        g_assert_cmpint(job_create(f->registry, &p, &j, NULL), ==, 0);
        g_assert_true(job_auto_finalize(j));
        g_assert_true(job_auto_dismiss(j));
        g_assert_cmpuint(job_speed(j), ==, 0);
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_OK);
        g_assert_false(job_txn_is_grouped(job_get_txn(j)));
        g_assert_true(job_get_registry(j) == f->registry);
        g_assert_null(job_get_userdata(j));
        job_set_userdata(j, f);
        g_assert_true(job_get_userdata(j) == f);
        g_assert_null(job_error(j));
        g_assert_cmpint(job_ret(j), ==, 0);
        g_assert_true(job_registry_find(f->registry, 0, "backup0") == j);
        g_assert_cmpuint(job_owner(j), ==, 0);
        g_assert_null(job_registry_find(f->registry, 0, "nope"));
        g_assert_null(job_registry_find(f->registry, 0, NULL));
        g_assert_cmpuint(job_registry_now(f->registry), ==, f->exec.now);

        job_progress_set_remaining(j, 1000);
        job_progress_increase_remaining(j, 24);
        g_assert_cmpuint(job_total_progress(j), ==, 1024);
        g_assert_cmpuint(job_current_progress(j), ==, 0);
}

/* ---- failure -------------------------------------------------------------------------------- */

static void scenario_run_fails(CoreFixture *f) {
        TestDriverConfig c = { .total = 3 * CHUNK, .fail_at_step = 2, .fail_ret = -ENOSPC };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, true, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:aborting j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "No space left on device");
}

static void test_run_fails_with_message(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 3 * CHUNK, .fail_at_step = 1, .fail_ret = -EIO,
                               .fail_message = "Could not read 'x' at offset 0: Input/output error" };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, false, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_CONCLUDED);
        g_assert_cmpint(job_ret(j), ==, -EIO);
        g_assert_cmpstr(job_error(j), ==, "Could not read 'x' at offset 0: Input/output error");
}

static void test_prepare_fails(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = CHUNK, .prepare_ret = -EIO, .prepare_message = "Cannot flush 't': I/O" };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, true, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:aborting j:concluded j:null");
        assert_calls(f, "j:prepare j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Cannot flush 't': I/O");
}

/* ---- grouped transactions ------------------------------------------------------------------- */

static void scenario_grouped_success(CoreFixture *f) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = core_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, txn);
        Job *b = core_job(f, "b", &test_driver_backup, NULL, true, true, txn);
        g_assert_true(job_txn_is_grouped(job_get_txn(a)));
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        fake_run_until_idle(&f->exec);
        /* a waits for b; then both go pending together and finalize together. */
        assert_events(f, "a:created b:created a:running b:running a:waiting b:waiting b:pending a:pending "
                         "b:concluded b:null a:concluded a:null");
        assert_calls(f, "b:prepare a:prepare b:commit b:clean a:commit a:clean");
}

static void scenario_grouped_failure(CoreFixture *f) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        core_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, txn);
        core_job(f, "b", &test_driver_backup,
                 &(TestDriverConfig) { .total = 3 * CHUNK, .fail_at_step = 2, .fail_ret = -EIO, .fail_message = "boom" },
                 true, true, txn);
        core_job(f, "c", &test_driver_backup, NULL, true, true, txn);
        job_txn_unref(txn);

        for (Job *j = job_registry_first(f->registry); j; j = job_registry_next(j))
                job_start(j);
        fake_run_until_idle(&f->exec);

        /* a succeeded and waited; b failed; so every member aborts, and a and c report a cancel. */
        assert_events(f, "a:created b:created c:created c:running b:running a:running a:waiting b:aborting "
                         "c:aborting c:concluded c:null b:concluded b:null a:aborting a:concluded a:null");
        assert_calls(f, "c:abort c:clean b:abort b:clean a:abort a:clean");
        g_assert_cmpstr(core_error_of(f, "a"), ==, "Operation canceled");
        g_assert_cmpstr(core_error_of(f, "b"), ==, "boom");
        g_assert_cmpstr(core_error_of(f, "c"), ==, "Operation canceled");
}

static void test_grouped_force_cancel(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = core_job(f, "a", &test_driver_backup, NULL, true, true, txn);
        Job *b = core_job(f, "b", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        fake_run_one(&f->exec);         /* a's first step */
        fake_run_one(&f->exec);         /* b finishes and waits */
        assert_events(f, "a:created b:created a:running b:running b:waiting");

        g_assert_cmpint(job_user_cancel(a, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:aborting b:aborting b:concluded b:null a:concluded a:null");
        assert_calls(f, "b:abort b:clean a:abort a:clean");
        g_assert_cmpstr(core_error_of(f, "a"), ==, "Operation canceled");
        g_assert_cmpstr(core_error_of(f, "b"), ==, "Operation canceled");
}

static void scenario_grouped_mixed_finalize(CoreFixture *f) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = core_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, txn);
        Job *b = core_job(f, "b", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, false, true, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        fake_run_until_idle(&f->exec);
        /* b wants a manual finalize, which holds a too. */
        assert_events(f, "a:created b:created a:running b:running a:waiting b:waiting b:pending a:pending");
        g_assert_cmpint(job_status(a), ==, JOB_STATUS_PENDING);

        /* One finalize, on the member that did not ask for it, finalizes both. */
        g_assert_cmpint(job_finalize(a, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "b:concluded b:null a:concluded a:null");
        assert_calls(f, "b:prepare a:prepare b:commit b:clean a:commit a:clean");
        (void) b;
}

static void test_grouped_prepare_fails(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = core_job(f, "a", &test_driver_backup,
                          &(TestDriverConfig) { .total = CHUNK, .prepare_ret = -EROFS }, true, true, txn);
        Job *b = core_job(f, "b", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        fake_run_until_idle(&f->exec);
        /* b prepared fine, a did not: nothing is committed. */
        assert_events(f, "a:created b:created a:running b:running a:waiting b:waiting b:pending a:pending "
                         "a:aborting b:aborting b:concluded b:null a:concluded a:null");
        assert_calls(f, "b:prepare a:prepare b:abort b:clean a:abort a:clean");
        g_assert_cmpstr(core_error_of(f, "a"), ==, "Read-only file system");
        g_assert_cmpstr(core_error_of(f, "b"), ==, "Operation canceled");
}

static void test_cancel_while_preparing(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = core_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, false, true, txn);
        Job *b = core_job(f, "b", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, false, true, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:created b:created a:running b:running a:waiting b:waiting b:pending a:pending");

        /* b's prepare is in flight when a is cancelled: the cancel still aborts both. */
        g_assert_cmpint(job_finalize(b, NULL), ==, 0);
        g_assert_cmpint(job_finalize(a, NULL), ==, 0);   /* already finalizing: a no-op */
        g_assert_cmpint(job_user_cancel(a, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:aborting b:aborting b:concluded b:null a:concluded a:null");
        assert_calls(f, "b:prepare b:abort b:clean a:abort a:clean");
}

static void test_cancel_while_preparing_self(CoreFixture *f, gconstpointer data) {
        Job *j = core_job(f, "j", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, false, true, NULL);

        job_start(j);
        fake_run_until_idle(&f->exec);
        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        /* Its own prepare is in flight: the cancel wins when it returns. */
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:aborting j:concluded j:null");
        assert_calls(f, "j:prepare j:abort j:clean");
}

/* What a finalizer saw when told: the statuses notified so far. */
typedef struct FinalizeSeen {
        CoreFixture *f;
        GString *told;
} FinalizeSeen;

static void finalize_told(void *userdata) {
        FinalizeSeen *seen = userdata;
        g_string_append_printf(seen->told, "[%s] ", seen->f->events->str);
}

/* job_finalize_notify() tells once every member has concluded, as QEMU's job-finalize returns;
 * a second finalize while the pipeline runs is told with the first; a rolled back transaction
 * is told as well; with nothing to do, before it returns. */
static void test_finalize_notify(CoreFixture *f, gconstpointer data) {
        g_autoptr(GString) told = g_string_new(NULL);
        FinalizeSeen seen = { f, told };
        JobTxn *txn;

        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = core_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, false, false, txn);
        Job *b = core_job(f, "b", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, false, txn);
        job_txn_unref(txn);
        job_start(a);
        job_start(b);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:created b:created a:running b:running a:waiting b:waiting b:pending a:pending");

        g_assert_cmpint(job_finalize_notify(b, finalize_told, &seen, NULL), ==, 0);
        g_assert_cmpint(job_finalize_notify(a, finalize_told, &seen, NULL), ==, 0);
        /* Each step of the pipeline, and nobody told before the last. */
        while (fake_run_one(&f->exec))
                if (job_status(a) != JOB_STATUS_CONCLUDED || job_status(b) != JOB_STATUS_CONCLUDED)
                        g_assert_cmpstr(told->str, ==, "");
        g_assert_cmpstr(told->str, ==, "[b:concluded a:concluded] [b:concluded a:concluded] ");
        assert_events(f, "b:concluded a:concluded");
        assert_calls(f, "b:prepare a:prepare b:commit b:clean a:commit a:clean");
        g_assert_cmpint(job_dismiss(a, NULL), ==, 0);
        g_assert_cmpint(job_dismiss(b, NULL), ==, 0);
        assert_events(f, "a:null b:null");
        g_string_truncate(told, 0);

        /* Rolled back by a failed prepare: told once the job has concluded with the error. */
        Job *c = core_job(f, "c", &test_driver_backup,
                          &(TestDriverConfig) { .total = CHUNK, .prepare_ret = -EROFS }, false, true, NULL);
        job_start(c);
        fake_run_until_idle(&f->exec);
        assert_events(f, "c:created c:running c:waiting c:pending");
        g_assert_cmpint(job_finalize_notify(c, finalize_told, &seen, NULL), ==, 0);
        g_assert_cmpstr(told->str, ==, "");
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(told->str, ==, "[c:aborting c:concluded c:null] ");
        assert_events(f, "c:aborting c:concluded c:null");
        assert_calls(f, "c:prepare c:abort c:clean");
        g_string_truncate(told, 0);

        /* Refused: never told. */
        Job *d = core_job(f, "d", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, false, true, NULL);
        g_assert_cmpint(job_finalize_notify(d, finalize_told, &seen, NULL), ==, -EBUSY);
        job_start(d);
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(told->str, ==, "");
        assert_events(f, "d:created d:running d:waiting d:pending");
        g_assert_cmpint(job_finalize(d, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "d:concluded d:null");
        assert_calls(f, "d:prepare d:commit d:clean");
}

static void test_cancel_while_committing(CoreFixture *f, gconstpointer data) {
        Job *j = core_job(f, "j", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, NULL);

        job_start(j);
        fake_run_one(&f->exec);         /* the step: waiting, pending, prepare queued */
        fake_run_one(&f->exec);         /* prepare: commit queued */
        assert_events(f, "j:created j:running j:waiting j:pending");

        /* Too late: the transaction is being published. */
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_false(job_is_cancelled(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:concluded j:null");
        assert_calls(f, "j:prepare j:commit j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_grouped_cancel_created_member(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = core_job(f, "a", &test_driver_backup, NULL, true, true, txn);
        Job *b = core_job(f, "b", &test_driver_backup, NULL, true, true, txn);
        job_txn_unref(txn);

        /* Neither started: cancelling one aborts both at once. */
        (void) b;
        g_assert_cmpint(job_user_cancel(a, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:created b:created a:aborting b:aborting b:concluded b:null a:concluded a:null");
}

/* ---- a prepare that cannot be undone (commit's pivot) ---------------------------------------- */

/* A commit-like job in ready, completed: its last step is queued, then it runs, and its prepare
 * (which pivots) is queued. */
static Job *final_job_completed(CoreFixture *f, bool auto_finalize) {
        Job *j = core_job(f, "j", &test_driver_final, &mirror_one_chunk, auto_finalize, true, NULL);

        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        g_assert_true(fake_run_one(&f->exec));
        return j;
}

static void test_final_cancel_while_prepare_runs(CoreFixture *f, gconstpointer data) {
        Job *j = final_job_completed(f, true);

        /* The prepare runs on its worker and pivots; the cancel arrives before it returns. */
        g_assert_true(fake_run_begin(&f->exec));
        assert_calls(f, "j:complete j:prepare j:pivot");
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_false(job_cancel_requested(j));
        g_assert_false(job_is_cancelled(j));

        /* Too late, as in the commit phase: the job reports what it did. */
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:ready j:waiting j:pending j:concluded j:null");
        assert_calls(f, "j:commit j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_final_cancel_while_prepare_queued(CoreFixture *f, gconstpointer data) {
        Job *j = final_job_completed(f, true);

        /* Submitted but not yet picked up by a worker: already past the point of no return, since
         * nothing tells the worker to skip it. A soft cancel is no different. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_false(job_cancel_requested(j));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:ready j:waiting j:pending j:concluded j:null");
        assert_calls(f, "j:complete j:prepare j:pivot j:commit j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_final_cancel_before_prepare(CoreFixture *f, gconstpointer data) {
        Job *j = final_job_completed(f, false);

        /* Pending, waiting for a finalize: nothing irreversible has happened, the cancel wins and
         * there is no pivot. */
        assert_events(f, "j:created j:running j:ready j:waiting j:pending");
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:aborting j:concluded j:null");
        assert_calls(f, "j:complete j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void test_final_soft_cancel(CoreFixture *f, gconstpointer data) {
        Job *j = core_job(f, "j", &test_driver_final, &mirror_one_chunk, true, true, NULL);

        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        /* A soft cancel in ready: the step sees it and records it; prepare does not pivot, and a
         * force cancel while that prepare runs changes nothing either. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_true(fake_run_begin(&f->exec));
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_false(job_is_cancelled(j));
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:ready j:waiting j:pending j:concluded j:null");
        assert_calls(f, "j:soft-cancel j:prepare j:commit j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_final_prepare_fails(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = CHUNK, .mirror = true, .prepare_ret = -EIO, .prepare_message = "pivot failed" };
        Job *j = core_job(f, "j", &test_driver_final, &c, true, true, NULL);

        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_true(fake_run_begin(&f->exec));
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        /* Its own failure is what it reports, not a cancel that was ignored. */
        assert_events(f, "j:created j:running j:ready j:waiting j:pending j:aborting j:concluded j:null");
        assert_calls(f, "j:complete j:prepare j:pivot j:abort j:clean");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "pivot failed");
}

static Job *grouped_with_final(CoreFixture *f, JobTxn **ret_txn, Job **ret_plain) {
        JobTxn *txn;

        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *plain = core_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, false, true, txn);
        Job *final = core_job(f, "c", &test_driver_final, &mirror_one_chunk, false, true, txn);
        job_start(plain);
        job_start(final);
        g_assert_true(fake_run_one(&f->exec));          /* a waits */
        g_assert_true(fake_run_one(&f->exec));          /* c is ready */
        g_assert_cmpint(job_complete(final, NULL), ==, 0);
        g_assert_true(fake_run_one(&f->exec));          /* c waits, and both are pending */
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        assert_events(f, "a:created c:created a:running c:running a:waiting c:ready c:waiting c:pending a:pending");
        assert_calls(f, "c:complete");
        *ret_txn = txn;
        *ret_plain = plain;
        return final;
}

static void test_final_grouped_order(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        Job *plain, *final = grouped_with_final(f, &txn, &plain);

        /* c is first in the list, yet prepared last; while its prepare is in flight, cancelling
         * either member is too late. */
        g_assert_cmpint(job_finalize(final, NULL), ==, 0);
        g_assert_true(fake_run_one(&f->exec));
        assert_calls(f, "a:prepare");
        g_assert_true(fake_run_begin(&f->exec));
        assert_calls(f, "c:prepare c:pivot");
        g_assert_cmpint(job_user_cancel(plain, true, NULL), ==, 0);
        g_assert_cmpint(job_user_cancel(final, true, NULL), ==, 0);
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_events(f, "c:concluded c:null a:concluded a:null");
        assert_calls(f, "c:commit c:clean a:commit a:clean");
        g_assert_cmpstr(core_error_of(f, "a"), ==, "");
        g_assert_cmpstr(core_error_of(f, "c"), ==, "");
        job_txn_unref(txn);
}

static void test_final_grouped_cancel_first(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        Job *plain, *final = grouped_with_final(f, &txn, &plain);

        /* The other member is cancelled while its own prepare runs: the final prepare never
         * starts, and everything aborts without a pivot. */
        g_assert_cmpint(job_finalize(final, NULL), ==, 0);
        g_assert_true(fake_run_begin(&f->exec));
        g_assert_cmpint(job_user_cancel(plain, true, NULL), ==, 0);
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:aborting c:aborting c:concluded c:null a:concluded a:null");
        assert_calls(f, "a:prepare c:abort c:clean a:abort a:clean");
        g_assert_cmpstr(core_error_of(f, "a"), ==, "Operation canceled");
        g_assert_cmpstr(core_error_of(f, "c"), ==, "Operation canceled");
        job_txn_unref(txn);
}

static void test_final_one_per_txn(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        JobTxn *txn;

        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        core_job(f, "c", &test_driver_final, &mirror_one_chunk, true, true, txn);
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        p.id = "d";
        p.driver = &test_driver_final;
        p.txn = txn;
        g_assert_cmpint(job_create(f->registry, &p, NULL, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "A transaction can hold only one job whose completion cannot be undone");
        /* Any number of others may join. */
        core_job(f, "a", &test_driver_backup, NULL, true, true, txn);
        core_job(f, "b", &test_driver_mirror, NULL, true, true, txn);
        job_txn_unref(txn);
        assert_events(f, "c:created a:created b:created");
}

/* ---- the rate limiter, on the fake clock ---------------------------------------------------- */

static void test_ratelimit_slices(CoreFixture *f, gconstpointer data) {
        const uint64_t speed = 1048576, quota = 104857;   /* 1 MiB/s: 104857 bytes per 100 ms */
        TestDriverConfig c = { .total = 5 * quota, .chunk = 1048576 };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, true, NULL);
        TestDriverState *s = core_job_state(j);
        uint64_t t0 = f->exec.now;

        g_assert_cmpint(job_set_speed(j, speed, NULL), ==, 0);
        job_start(j);

        /* One quota per step, one step per 100 ms slice, to the nanosecond. */
        for (unsigned i = 1; i < 5; i++) {
                g_assert_true(fake_run_one(&f->exec));
                g_assert_cmpuint(s->last_max_bytes, ==, quota);
                g_assert_cmpuint(job_current_progress(j), ==, i * quota);
                g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + i * 100 * MS);
                g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
                g_assert_true(fake_fire_next_timer(&f->exec));
        }
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null");
}

/* Below JOB_THROTTLE_STEP_MIN per slice, a step still dispatches that much, and the job sleeps
 * until the limiter has paid for it: it wakes as often as it copies, not every slice. */
static void test_ratelimit_step_min(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 2 * JOB_THROTTLE_STEP_MIN, .chunk = 1048576 };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, true, NULL);
        TestDriverState *s = core_job_state(j);
        uint64_t t0 = f->exec.now;

        /* 100 KiB/s: a 10240-byte quota, so 64 KiB pay for 6.4 slices. */
        g_assert_cmpint(job_set_speed(j, 102400, NULL), ==, 0);
        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpuint(s->last_max_bytes, ==, JOB_THROTTLE_STEP_MIN);
        g_assert_cmpuint(job_current_progress(j), ==, JOB_THROTTLE_STEP_MIN);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + 640 * MS);
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        fake_run_until_idle(&f->exec);
        g_assert_cmpuint(f->exec.now, ==, t0 + 640 * MS);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null");
}

/* 1 byte/s: the quota is one byte per slice (QEMU's minimum), and the 64 KiB a step dispatches
 * keep the job asleep for 65536 slices: its timer is armed about two hours ahead, with nothing
 * to do meanwhile. */
static void test_ratelimit_one_byte(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 3 * JOB_THROTTLE_STEP_MIN, .chunk = 1048576 };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, true, NULL);
        TestDriverState *s = core_job_state(j);
        const uint64_t sleep_ns = JOB_THROTTLE_STEP_MIN * 100 * MS;
        uint64_t t0 = f->exec.now;

        g_assert_cmpint(job_set_speed(j, 1, NULL), ==, 0);
        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpuint(s->steps, ==, 1);
        g_assert_cmpuint(s->last_max_bytes, ==, JOB_THROTTLE_STEP_MIN);
        g_assert_cmpuint(job_current_progress(j), ==, JOB_THROTTLE_STEP_MIN);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + sleep_ns);
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);

        /* The next step comes with that timer, and no sooner. */
        fake_advance(&f->exec, sleep_ns - 1);
        g_assert_cmpuint(s->steps, ==, 1);
        g_assert_true(fake_fire_next_timer(&f->exec));
        g_assert_cmpuint(f->exec.now, ==, t0 + sleep_ns);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpuint(s->steps, ==, 2);
        g_assert_cmpuint(job_current_progress(j), ==, 2 * JOB_THROTTLE_STEP_MIN);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + 2 * sleep_ns);

        /* Removing the limit wakes it to finish at once. */
        g_assert_cmpint(job_set_speed(j, 0, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        g_assert_cmpuint(f->exec.now, ==, t0 + sleep_ns);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null");
}

static void test_ratelimit_overshoot(CoreFixture *f, gconstpointer data) {
        const uint64_t quota = 104857;
        TestDriverConfig c = { .total = 6 * quota, .chunk = 3 * quota, .ignore_max_bytes = true };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, true, NULL);
        uint64_t t0 = f->exec.now;

        g_assert_cmpint(job_set_speed(j, 1048576, NULL), ==, 0);
        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        /* Three quotas at once: the slice stretches over three slices. */
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + 300 * MS);

        /* Lowering the limit does not wake the job... */
        g_assert_cmpint(job_set_speed(j, 524288, NULL), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + 300 * MS);
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);

        /* ...raising it does, and the delay is recomputed: 3 × 104857 over 209715 per slice. */
        g_assert_cmpint(job_set_speed(j, 2097152, NULL), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + (3 * quota * 100 * MS) / 209715);

        /* ...and clearing it lets it go at once. */
        g_assert_cmpint(job_set_speed(j, 0, NULL), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, UINT64_MAX);
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 1);
        fake_run_until_idle(&f->exec);
        g_assert_cmpuint(f->exec.now, ==, t0);
}

static void test_ratelimit_pause_while_sleeping(CoreFixture *f, gconstpointer data) {
        const uint64_t quota = 104857;
        TestDriverConfig c = { .total = 3 * quota, .chunk = 1048576 };
        Job *j = core_job(f, "j", &test_driver_backup, &c, true, true, NULL);
        uint64_t t0 = f->exec.now;

        g_assert_cmpint(job_set_speed(j, 1048576, NULL), ==, 0);
        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + 100 * MS);

        /* A throttling wait is a pause point: the pause is immediate. */
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        assert_events(f, "j:created j:running j:paused");
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, UINT64_MAX);

        /* Resumed before the slice ended, it waits for the rest of it. */
        f->exec.now += 40 * MS;
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t0 + 100 * MS);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:waiting j:pending j:concluded j:null");
}

static void test_set_speed_errors(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Job *j = core_drive_to(f, "j", JOB_STATUS_PENDING, false);

        g_assert_cmpint(job_set_speed(j, 1, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "Job 'j' in state 'pending' cannot accept command verb 'set-speed'");
        g_assert_cmpuint(job_speed(j), ==, 0);
}

static void test_idle_wakeups(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = CHUNK, .mirror = true, .idle_ns = 50 * MS };
        Job *j = core_job(f, "j", &test_driver_mirror, &c, true, true, NULL);
        TestDriverState *s = core_job_state(j);
        uint64_t t0 = f->exec.now;

        job_start(j);
        fake_run_one(&f->exec);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_READY);

        /* Ready and idle: the driver is asked again every idle period. */
        fake_advance(&f->exec, 200 * MS);
        g_assert_cmpuint(s->steps, ==, 5);
        g_assert_cmpuint(f->exec.now, ==, t0 + 200 * MS);

        /* Raising the speed wakes an idle job too (QEMU wakes any pending timer). */
        unsigned steps = s->steps;
        g_assert_cmpint(job_set_speed(j, 1000000000, NULL), ==, 0);
        fake_run_queue(&f->exec);
        g_assert_cmpuint(s->steps, ==, steps + 1);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:ready j:waiting j:pending j:concluded j:null");
}

/* ---- I/O error policies --------------------------------------------------------------------- */

static Job *io_error_job_config(CoreFixture *f, JobOnError src, JobOnError tgt, const TestDriverConfig *c,
                                bool auto_dismiss) {
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Job *j = NULL;

        p.id = "j";
        p.driver = &test_driver_backup;
        p.driver_data = test_driver_state_new(c, f->calls);
        p.auto_dismiss = auto_dismiss;
        p.on_source_error = src;
        p.on_target_error = tgt;
        g_assert_cmpint(job_create(f->registry, &p, &j, NULL), ==, 0);
        return j;
}

static Job *io_error_job(CoreFixture *f, JobOnError src, JobOnError tgt, int error, bool on_source, unsigned repeat,
                         bool auto_dismiss) {
        TestDriverConfig c = { .total = 3 * CHUNK, .io_error_at_step = 2, .io_error = error,
                               .io_error_on_source = on_source, .io_error_repeat = repeat };
        return io_error_job_config(f, src, tgt, &c, auto_dismiss);
}

static void test_io_error_report(CoreFixture *f, gconstpointer data) {
        Job *j = io_error_job(f, JOB_ON_ERROR_STOP, JOB_ON_ERROR_REPORT, -EIO, false, 1, true);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_io_errors(f, "j:write:report");
        assert_events(f, "j:created j:running j:aborting j:concluded j:null");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "injected error at offset 65536");
}

static void test_io_error_ignore(CoreFixture *f, gconstpointer data) {
        Job *j = io_error_job(f, JOB_ON_ERROR_IGNORE, JOB_ON_ERROR_REPORT, -EIO, true, 2, false);
        uint64_t t0 = f->exec.now;

        job_start(j);
        fake_run_until_idle(&f->exec);
        /* Reported, retried after 10 and 20 ms, and the job succeeds. */
        assert_io_errors(f, "j:read:ignore j:read:ignore");
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded");
        g_assert_null(job_error(j));
        g_assert_cmpuint(job_current_progress(j), ==, 3 * CHUNK);
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_OK);
        g_assert_cmpuint(f->exec.now, ==, t0 + 30 * MS);
}

/* Run the step in flight, then expect the job to sleep exactly 'ms' (nothing queued meanwhile)
 * and wake it. */
static void expect_backoff(CoreFixture *f, uint64_t ms) {
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, f->exec.now + ms * MS);
        g_assert_true(fake_fire_next_timer(&f->exec));
}

static void test_io_error_ignore_backoff(CoreFixture *f, gconstpointer data) {
        static const uint64_t backoff_ms[] = { 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000 };
        TestDriverConfig c = { .total = 3 * CHUNK, .io_error_at_step = 2, .io_error = -EIO,
                               .io_error_on_source = true, .io_error_repeat = G_N_ELEMENTS(backoff_ms) };
        Job *j = io_error_job_config(f, JOB_ON_ERROR_IGNORE, JOB_ON_ERROR_REPORT, &c, true);
        uint64_t t0 = f->exec.now;

        job_start(j);
        g_assert_true(fake_run_one(&f->exec));          /* step 1 copies */
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 1);

        /* Twelve failing steps in a row: 10 ms, doubling, at most 1 s; no busy loop. */
        for (unsigned i = 0; i < G_N_ELEMENTS(backoff_ms); i++)
                expect_backoff(f, backoff_ms[i]);
        g_assert_cmpuint(f->exec.now, ==, t0 + 6270 * MS);
        g_assert_cmpuint(core_job_state(j)->steps, ==, 1 + G_N_ELEMENTS(backoff_ms));

        /* Errors at 0, 10, 30, 70, 150 ms are told (the burst); those at 310 and 630 ms are not;
         * the one at 1270 ms opens a new window and says it stands for two more; then one a second. */
        assert_io_errors(f, "j:read:ignore j:read:ignore j:read:ignore j:read:ignore j:read:ignore "
                            "j:read:ignore+2 j:read:ignore j:read:ignore j:read:ignore j:read:ignore");

        /* The range reads again: progress without an error, and the job goes on at once. */
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 1);
        fake_run_until_idle(&f->exec);
        g_assert_cmpuint(f->exec.now, ==, t0 + 6270 * MS);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_io_error_ignore_backoff_reset(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 20 * CHUNK, .io_error_at_step = 2, .io_error = -EIO, .io_error_every = 2,
                               .io_error_repeat = 12 };
        Job *j = io_error_job_config(f, JOB_ON_ERROR_REPORT, JOB_ON_ERROR_IGNORE, &c, true);
        uint64_t t0 = f->exec.now;

        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        /* Every other step fails: each success resets the backoff, so each failure waits 10 ms. */
        for (unsigned i = 0; i < 12; i++) {
                expect_backoff(f, 10);
                g_assert_true(fake_run_one(&f->exec));  /* progress, and the next step at once */
                g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 1);
        }
        g_assert_cmpuint(f->exec.now, ==, t0 + 120 * MS);

        /* Twelve errors in 120 ms: the observer hears of the first five only. */
        assert_io_errors(f, "j:write:ignore j:write:ignore j:write:ignore j:write:ignore j:write:ignore");
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
        (void) j;
}

static Job *backing_off_job(CoreFixture *f, unsigned failures) {
        TestDriverConfig c = { .total = 3 * CHUNK, .io_error_at_step = 2, .io_error = -EIO,
                               .io_error_on_source = true, .io_error_repeat = failures };
        Job *j = io_error_job_config(f, JOB_ON_ERROR_IGNORE, JOB_ON_ERROR_REPORT, &c, true);

        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        expect_backoff(f, 10);
        expect_backoff(f, 20);
        g_assert_true(fake_run_one(&f->exec));          /* third failure: 40 ms from now */
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, f->exec.now + 40 * MS);
        return j;
}

static void test_io_error_backoff_pause(CoreFixture *f, gconstpointer data) {
        Job *j = backing_off_job(f, 4);
        uint64_t t = f->exec.now;

        /* Backing off is a pause point: the pause is immediate and disarms the timer. */
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        assert_events(f, "j:created j:running j:paused");
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, UINT64_MAX);

        /* Resumed early, it sleeps what is left of the backoff; pausing cannot skip it. */
        f->exec.now += 15 * MS;
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        assert_events(f, "j:running");
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t + 40 * MS);

        /* Resumed late, it retries at once. */
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        f->exec.now += 100 * MS;
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        assert_events(f, "j:paused j:running");
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 1);
        expect_backoff(f, 80);                          /* the fourth failure */
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:waiting j:pending j:concluded j:null");
}

static void test_io_error_backoff_cancel(CoreFixture *f, gconstpointer data) {
        Job *j = backing_off_job(f, 100);
        uint64_t t = f->exec.now;

        /* A force cancel ends a backing-off job at once, without another step. */
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        assert_events(f, "j:created j:running j:aborting");
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:concluded j:null");
        assert_calls(f, "j:abort j:clean");
        g_assert_cmpuint(f->exec.now, ==, t);
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Operation canceled");
}

static void test_io_error_backoff_set_speed(CoreFixture *f, gconstpointer data) {
        Job *j = backing_off_job(f, 3);
        uint64_t t = f->exec.now;

        /* Set-speed wakes the job as it wakes a throttled one; the job re-evaluates and goes
         * back to sleep until its retry is due: the speed does not make a failing range good. */
        unsigned steps = core_job_state(j)->steps;
        g_assert_cmpint(job_set_speed(j, 1 << 30, NULL), ==, 0);
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, t + 40 * MS);
        g_assert_cmpuint(core_job_state(j)->steps, ==, steps);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:waiting j:pending j:concluded j:null");
        g_assert_cmpuint(f->exec.now, ==, t + 40 * MS);
}

static void test_io_error_corrupt_image(CoreFixture *f, gconstpointer data) {
        static const JobOnError policies[] = { JOB_ON_ERROR_IGNORE, JOB_ON_ERROR_STOP, JOB_ON_ERROR_ENOSPC };

        /* EUCLEAN (a corrupt image) ends the job whatever the policy says. */
        for (unsigned i = 0; i < G_N_ELEMENTS(policies); i++) {
                Job *j = io_error_job(f, policies[i], policies[i], -EUCLEAN, true, 100, true);
                job_start(j);
                fake_run_until_idle(&f->exec);
                assert_io_errors(f, "j:read:report");
                assert_events(f, "j:created j:running j:aborting j:concluded j:null");
                g_assert_cmpstr(core_error_of(f, "j"), ==, "injected error at offset 65536");
        }
}

static void scenario_io_error_stop(CoreFixture *f) {
        Job *j = io_error_job(f, JOB_ON_ERROR_STOP, JOB_ON_ERROR_REPORT, -EIO, true, 1, true);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_io_errors(f, "j:read:stop");
        assert_events(f, "j:created j:running j:paused");
        g_assert_true(job_is_user_paused(j));
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_FAILED);
        g_assert_cmpuint(job_current_progress(j), ==, CHUNK);

        /* Resume clears the io-status and retries the failed range. */
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_OK);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:waiting j:pending j:concluded j:null");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "");
}

static void test_io_error_enospc(CoreFixture *f, gconstpointer data) {
        Job *j = io_error_job(f, JOB_ON_ERROR_REPORT, JOB_ON_ERROR_ENOSPC, -ENOSPC, false, 2, true);

        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_io_errors(f, "j:write:stop");
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_NOSPACE);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PAUSED);

        /* Still no space on the retry: it stops again, and cancel then ends it. */
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_io_errors(f, "j:write:stop");
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_NOSPACE);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_OK);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:paused j:running j:paused j:running j:aborting j:concluded j:null");
}

static void test_io_error_enospc_other(CoreFixture *f, gconstpointer data) {
        Job *j = io_error_job(f, JOB_ON_ERROR_REPORT, JOB_ON_ERROR_ENOSPC, -EIO, false, 1, true);

        /* The enospc policy stops only for ENOSPC and reports anything else. */
        job_start(j);
        fake_run_until_idle(&f->exec);
        assert_io_errors(f, "j:write:report");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "injected error at offset 65536");
}

static void test_io_error_stop_while_paused(CoreFixture *f, gconstpointer data) {
        Job *j = io_error_job(f, JOB_ON_ERROR_STOP, JOB_ON_ERROR_STOP, -EIO, false, 1, true);

        job_start(j);
        fake_run_one(&f->exec);
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        /* The failing step was in flight when the user paused: still a single pause. */
        fake_run_one(&f->exec);
        g_assert_cmpuint(job_pause_count(j), ==, 1);
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_FAILED);
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:paused j:running j:waiting j:pending j:concluded j:null");
}

/* ---- progress ------------------------------------------------------------------------------- */

static void test_progress(CoreFixture *f, gconstpointer data) {
        Job *j = core_job(f, "j", &test_driver_backup, NULL, false, true, NULL);

        g_assert_cmpuint(job_current_progress(j), ==, 0);
        g_assert_cmpuint(job_total_progress(j), ==, 0);
        job_start(j);
        for (unsigned i = 1; i <= 3; i++) {
                g_assert_true(fake_run_one(&f->exec));
                g_assert_cmpuint(job_current_progress(j), ==, i * CHUNK);
                g_assert_cmpuint(job_total_progress(j), ==, 3 * CHUNK);
        }
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PENDING);
}

/* ---- every legal transition is taken -------------------------------------------------------- */

typedef void (*Scenario)(CoreFixture *f);

static const Scenario scenarios[] = {
        scenario_auto_both,         scenario_manual_finalize, scenario_manual_dismiss, scenario_manual_both,
        scenario_pause_running,     scenario_pause_created,   scenario_pause_ready,    scenario_complete_standby,
        scenario_internal_pause,    scenario_cancel_created,  scenario_cancel_running, scenario_cancel_paused,
        scenario_cancel_ready,      scenario_cancel_standby,  scenario_cancel_waiting, scenario_cancel_pending,
        scenario_soft_cancel_ready, scenario_id_reuse,        scenario_early_fail,     scenario_run_fails,
        scenario_grouped_success,   scenario_grouped_failure, scenario_grouped_mixed_finalize,
        scenario_io_error_stop,
};

static void run_scenario(CoreFixture *f, gconstpointer data) {
        ((Scenario) data)(f);
}

/* ---- restoring a job in its recorded status (issue 15) ------------------------------------ */

static Job *restore_job(CoreFixture *f, const char *id, const JobDriver *d, JobStatus status, bool user_paused,
                        bool auto_finalize, bool auto_dismiss, JobTxn *txn) {
        g_autofree char *error = NULL;
        TestDriverConfig config = { .total = 3 * CHUNK, .mirror = d == &test_driver_mirror };
        Job *j = NULL;

        JobRestoreParams p = {
                .create = {
                        .id = id,
                        .driver = d,
                        .driver_data = test_driver_state_new(&config, f->calls),
                        .auto_finalize = auto_finalize,
                        .auto_dismiss = auto_dismiss,
                        .txn = txn,
                },
                .status = status,
                .user_paused = user_paused,
                .progress_current = 5 * CHUNK,
                .progress_total = 8 * CHUNK,
        };
        int r = job_restore(f->registry, &p, &j, &error);
        g_assert_cmpstr(error, ==, NULL);
        g_assert_cmpint(r, ==, 0);
        g_assert_cmpint(job_status(j), ==, status);
        g_assert_cmpuint(job_current_progress(j), ==, 5 * CHUNK);
        g_assert_cmpuint(job_total_progress(j), ==, 8 * CHUNK);
        g_assert_cmpint(job_is_user_paused(j), ==, user_paused);
        return j;
}

/* Running comes back running: nothing told for the restore itself, the run continues from there
 * and the observer sees only the real transitions that follow. */
static void test_restore_running(CoreFixture *f, gconstpointer data) {
        Job *j = restore_job(f, "j", &test_driver_backup, JOB_STATUS_RUNNING, false, true, false, NULL);

        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        assert_calls(f, "");
        g_assert_cmpuint(core_job_state(j)->steps, ==, 0);      /* held until started */

        job_restore_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:waiting j:pending j:concluded");
        assert_calls(f, "j:prepare j:commit j:clean");
        g_assert_cmpuint(core_job_state(j)->steps, ==, 3);
        g_assert_cmpuint(job_current_progress(j), ==, 8 * CHUNK);
        g_assert_null(job_error(j));
}

/* Paused by the user comes back paused, stays so, and Resume works. */
static void test_restore_paused(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Job *j = restore_job(f, "j", &test_driver_backup, JOB_STATUS_PAUSED, true, true, true, NULL);

        job_restore_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PAUSED);
        g_assert_cmpuint(core_job_state(j)->steps, ==, 0);
        g_assert_cmpint(job_user_pause(j, &error), ==, -EBUSY);
        g_assert_cmpstr(error, ==, "Job is already paused");

        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:waiting j:pending j:concluded j:null");
        assert_calls(f, "j:prepare j:commit j:clean");
}

/* A user pause recorded while the job was still running takes effect at the first pause point. */
static void test_restore_running_user_paused(CoreFixture *f, gconstpointer data) {
        Job *j = restore_job(f, "j", &test_driver_backup, JOB_STATUS_RUNNING, true, true, true, NULL);

        job_restore_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:paused");
        g_assert_cmpuint(core_job_state(j)->steps, ==, 0);
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:running j:waiting j:pending j:concluded j:null");
}

/* Verbs that arrive while the job is held take effect when it starts: a resume of a paused job,
 * a pause of a running one; a cancel ends it at once, as it ends a job that never started. */
static void test_restore_verbs_while_held(CoreFixture *f, gconstpointer data) {
        Job *a = restore_job(f, "a", &test_driver_backup, JOB_STATUS_PAUSED, true, true, true, NULL);
        Job *b = restore_job(f, "b", &test_driver_backup, JOB_STATUS_RUNNING, false, true, true, NULL);
        Job *c = restore_job(f, "c", &test_driver_backup, JOB_STATUS_RUNNING, false, true, false, NULL);

        g_assert_cmpint(job_user_resume(a, NULL), ==, 0);
        g_assert_cmpint(job_user_pause(b, NULL), ==, 0);
        g_assert_cmpint(job_user_cancel(c, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "c:aborting c:concluded c:null");
        g_assert_cmpstr(core_error_of(f, "c"), ==, "Operation canceled");
        g_assert_cmpuint(core_job_state(a)->steps, ==, 0);

        job_restore_start(a);
        job_restore_start(b);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:running b:paused a:waiting a:pending a:concluded a:null");
        g_assert_cmpint(job_user_resume(b, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "b:running b:waiting b:pending b:concluded b:null");
}

/* A mirror in standby comes back in standby; resumed it is ready again and completes. */
static void test_restore_standby(CoreFixture *f, gconstpointer data) {
        Job *j = restore_job(f, "m", &test_driver_mirror, JOB_STATUS_STANDBY, true, true, true, NULL);

        job_restore_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        assert_events(f, "m:ready");
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "m:waiting m:pending m:concluded m:null");
}

/* Pending with a manual finalize waits for it; with auto-finalize it finalizes once started. */
static void test_restore_pending(CoreFixture *f, gconstpointer data) {
        Job *manual = restore_job(f, "manual", &test_driver_backup, JOB_STATUS_PENDING, false, false, false, NULL);
        Job *autof = restore_job(f, "auto", &test_driver_backup, JOB_STATUS_PENDING, false, true, false, NULL);

        job_restore_start(manual);
        job_restore_start(autof);
        fake_run_until_idle(&f->exec);
        assert_events(f, "auto:concluded");
        assert_calls(f, "auto:prepare auto:commit auto:clean");
        g_assert_cmpint(job_status(manual), ==, JOB_STATUS_PENDING);
        g_assert_cmpuint(core_job_state(manual)->steps, ==, 0);

        g_assert_cmpint(job_finalize(manual, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "manual:concluded");
        assert_calls(f, "manual:prepare manual:commit manual:clean");
}

/* A grouped transaction comes back as a group: a waiting member goes pending once the others are
 * back and completed, and all finalize together. */
static void test_restore_grouped(CoreFixture *f, gconstpointer data) {
        JobTxn *t = NULL;
        g_assert_cmpint(job_txn_new(f->registry, &t), ==, 0);
        Job *a = restore_job(f, "a", &test_driver_backup, JOB_STATUS_WAITING, false, true, true, t);
        Job *b = restore_job(f, "b", &test_driver_backup, JOB_STATUS_RUNNING, false, true, true, t);
        job_txn_unref(t);

        job_restore_start(a);
        job_restore_start(b);
        fake_run_until_idle(&f->exec);
        assert_events(f, "b:waiting b:pending a:pending b:concluded b:null a:concluded a:null");
        assert_calls(f, "b:prepare a:prepare b:commit b:clean a:commit a:clean");
}

/* Concluded comes back concluded with its error, stepping never, until it is dismissed. */
static void test_restore_concluded(CoreFixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        TestDriverConfig config = { .total = CHUNK };
        Job *j = NULL;

        JobRestoreParams p = {
                .create = { .id = "j", .driver = &test_driver_backup,
                            .driver_data = test_driver_state_new(&config, f->calls), .auto_dismiss = true },
                .status = JOB_STATUS_CONCLUDED,
                .ret = -EIO,
                .error = "Could not write to 'x': Input/output error",
        };
        g_assert_cmpint(job_restore(f->registry, &p, &j, NULL), ==, 0);
        job_restore_start(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        assert_calls(f, "");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_CONCLUDED);
        g_assert_cmpint(job_ret(j), ==, -EIO);
        g_assert_cmpstr(job_error(j), ==, "Could not write to 'x': Input/output error");
        g_assert_null(job_get_txn(j));
        g_assert_cmpint(job_user_pause(j, &error), ==, -EBUSY);
        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        assert_events(f, "j:null");

        /* A failure recorded without a message gets strerror's, as one that fails here does. */
        p.create.driver_data = test_driver_state_new(&config, f->calls);
        p.error = NULL;
        g_assert_cmpint(job_restore(f->registry, &p, &j, NULL), ==, 0);
        g_assert_cmpstr(job_error(j), ==, "Input/output error");
        /* And success has no error at all. */
        Job *ok = NULL;
        JobRestoreParams q = p;
        q.create.id = "ok";
        q.create.driver_data = test_driver_state_new(&config, f->calls);
        q.ret = 0;
        g_assert_cmpint(job_restore(f->registry, &q, &ok, NULL), ==, 0);
        g_assert_null(job_error(ok));
        g_assert_cmpint(job_ret(ok), ==, 0);
}

static void assert_restore_refused(CoreFixture *f, const JobRestoreParams *p, int expected, const char *message) {
        g_autofree char *error = NULL;
        Job *j = NULL;

        g_assert_cmpint(job_restore(f->registry, p, &j, &error), ==, expected);
        g_assert_cmpstr(error, ==, message);
        g_assert_null(j);
}

static void test_restore_refused(CoreFixture *f, gconstpointer data) {
        JobRestoreParams p = { .create = { .id = "j", .driver = &test_driver_backup } };

        p.status = JOB_STATUS_ABORTING;
        assert_restore_refused(f, &p, -EINVAL, "A job cannot be restored in status 'aborting'");
        p.status = JOB_STATUS_NULL;
        assert_restore_refused(f, &p, -EINVAL, "A job cannot be restored in status 'null'");
        p.status = _JOB_STATUS_MAX;
        assert_restore_refused(f, &p, -EINVAL, "A job cannot be restored in status 'invalid'");
        p.status = JOB_STATUS_PAUSED;
        assert_restore_refused(f, &p, -EINVAL, "A job cannot be restored in status 'paused' without a user pause");
        p.status = JOB_STATUS_PENDING;
        p.user_paused = true;
        assert_restore_refused(f, &p, -EINVAL, "A job cannot be restored in status 'pending' with a user pause");
        p.user_paused = false;
        p.status = JOB_STATUS_RUNNING;
        p.ret = -EIO;
        assert_restore_refused(f, &p, -EINVAL, "A job restored in status 'running' cannot have result -5");
        p.ret = 0;
        p.create.id = NULL;
        assert_restore_refused(f, &p, -EINVAL, "A restored job needs its recorded id");
        p.create.id = "9";
        assert_restore_refused(f, &p, -EINVAL, "Invalid job ID '9'");

        (void) core_job_simple(f, "taken");
        assert_events(f, "taken:created");
        p.create.id = "taken";
        assert_restore_refused(f, &p, -EEXIST, "Job ID 'taken' already in use");
        g_assert_cmpuint(job_registry_count(f->registry), ==, 1);
}

/* The user-paused flag is told as soon as it changes, before the status change it leads to, and
 * also when no status changes (a resume while an internal pause holds the job): whoever keeps it
 * (the records) never lags behind what the user asked. */
static void user_pause_status(Job *j, JobStatus status, void *userdata) {
        CoreFixture *f = userdata;
        g_string_append_printf(f->events, "%s%s:%s", f->events->len ? " " : "", job_id(j), job_status_to_string(status));
}

static void user_pause_changed(Job *j, JobChange what, void *userdata) {
        CoreFixture *f = userdata;
        if (what & JOB_CHANGE_USER_PAUSED)
                g_string_append_printf(f->events, "%s%s:user-paused=%s", f->events->len ? " " : "", job_id(j),
                                       job_is_user_paused(j) ? "yes" : "no");
}

static const JobObserver user_pause_observer = {
        .status_changed = user_pause_status,
        .changed = user_pause_changed,
};

static void test_user_pause_told(CoreFixture *f, gconstpointer data) {
        Job *j = core_job_simple(f, "j");

        assert_events(f, "j:created");
        job_registry_set_observer(f->registry, &user_pause_observer, f);
        job_start(j);
        assert_events(f, "j:running");
        /* Asked while a step runs: told at once, paused when the step returns. */
        g_assert_true(fake_run_begin(&f->exec));
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        assert_events(f, "j:user-paused=yes");
        g_assert_true(fake_run_end(&f->exec));
        assert_events(f, "j:paused");

        /* Held by an internal pause too: the user's resume changes no status, and is told. */
        job_pause(j);
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        assert_events(f, "j:user-paused=no");
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PAUSED);
        job_resume(j);
        assert_events(f, "j:running");

        /* Cancelling a paused job ends its user pause. */
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:user-paused=yes j:paused");
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:user-paused=no j:running j:aborting j:concluded j:null");
}

/* ---- checkpoints (issue 15) --------------------------------------------------------------- */

#define SEC G_GUINT64_CONSTANT(1000000000)

static Job *ckpt_job(CoreFixture *f, const char *id, const JobDriver *base, const TestDriverConfig *c,
                     bool auto_finalize, bool auto_dismiss, JobTxn *txn) {
        return core_job(f, id, core_ckpt_driver(base), c, auto_finalize, auto_dismiss, txn);
}

/* A step is asked for a checkpoint once JOB_CHECKPOINT_INTERVAL_NS have passed since the job
 * started (decided as the step is submitted), and the interval starts again when one is reported.
 * The checkpointing driver reports one exactly when asked, and on its finishing step. */
static void test_checkpoint_interval(CoreFixture *f, gconstpointer data) {
        Job *j = ckpt_job(f, "j", &test_driver_backup, &(TestDriverConfig) { .total = 20 * CHUNK }, true, true, NULL);
        uint64_t value = 42;

        g_assert_cmpuint(JOB_CHECKPOINT_INTERVAL_NS, ==, 5 * SEC);
        g_assert_false(job_checkpoint(j, &value));
        g_assert_cmpuint(value, ==, 0);
        g_assert_false(job_checkpoint(j, NULL));

        job_start(j);                           /* step 1 submitted at t0 */
        assert_events(f, "j:created j:running");
        f->exec.now += 5 * SEC - 1;
        g_assert_true(fake_run_one(&f->exec));  /* step 2 submitted at t0 + 5 s - 1 ns */
        g_assert_true(fake_run_one(&f->exec));
        assert_events(f, "");
        f->exec.now += 1;
        g_assert_true(fake_run_one(&f->exec));  /* step 3, submitted before; step 4 at t0 + 5 s */
        assert_events(f, "");
        g_assert_true(fake_run_one(&f->exec));
        assert_events(f, "j:checkpoint=262144");
        g_assert_true(job_checkpoint(j, &value));
        g_assert_cmpuint(value, ==, 4 * CHUNK);

        /* Reported at t0 + 5 s: the next is due at t0 + 10 s, not before, however many steps. */
        for (unsigned i = 0; i < 3; i++)
                g_assert_true(fake_run_one(&f->exec));
        f->exec.now += 5 * SEC - 1;
        g_assert_true(fake_run_one(&f->exec));
        g_assert_true(fake_run_one(&f->exec));
        assert_events(f, "");
        f->exec.now += 1;
        g_assert_true(fake_run_one(&f->exec));
        g_assert_true(fake_run_one(&f->exec));
        assert_events(f, "j:checkpoint=720896");

        /* The finishing step reports one too, told before the status it leads to. */
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:checkpoint=1310720 j:waiting j:pending j:concluded j:null");
}

/* Without anyone to keep them (no job records), no step is asked for a checkpoint, however long
 * the job runs: a flush would buy nothing. (What a driver reports at its end is still kept.) */
static void test_checkpoint_not_wanted(CoreFixture *f, gconstpointer data) {
        job_registry_set_checkpoints(f->registry, false);
        Job *j = ckpt_job(f, "j", &test_driver_backup, &(TestDriverConfig) { .total = 20 * CHUNK }, true, true, NULL);

        job_start(j);
        assert_events(f, "j:created j:running");
        for (unsigned i = 0; i < 6; i++) {
                f->exec.now += 5 * SEC;
                g_assert_true(fake_run_one(&f->exec));
        }
        assert_events(f, "");
        g_assert_false(job_checkpoint(j, NULL));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:checkpoint=1310720 j:waiting j:pending j:concluded j:null");
}

/* Sleeping counts: a job throttled to one step every 2 s is asked at its third step. And a driver
 * that keeps no checkpoints is asked at every step once one is due, which costs it nothing. */
static void test_checkpoint_sleep_counts(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 5 * JOB_THROTTLE_STEP_MIN, .chunk = JOB_THROTTLE_STEP_MIN };
        Job *j = ckpt_job(f, "j", &test_driver_backup, &c, true, false, NULL);
        uint64_t t0 = f->exec.now;

        g_assert_cmpint(job_set_speed(j, JOB_THROTTLE_STEP_MIN / 2, NULL), ==, 0);
        job_start(j);
        assert_events(f, "j:created j:running");
        fake_run_until_idle(&f->exec);
        /* Steps at 0 s and about 2, 4, 6, 8 s (the limiter's slices round up a little): the one
         * at 6 s is asked; the last finishes. */
        g_assert_cmpuint(f->exec.now, >=, t0 + 8 * SEC);
        g_assert_cmpuint(f->exec.now, <, t0 + 8 * SEC + 100 * MS);
        g_assert_cmpuint(job_current_progress(j), ==, 5 * JOB_THROTTLE_STEP_MIN);
        assert_events(f, "j:checkpoint=262144 j:checkpoint=327680 j:waiting j:pending j:concluded");
}

/* A restored job keeps its recorded checkpoint, told nothing; the interval starts at
 * job_restore_start(), however long after the restore. */
static void test_checkpoint_restore(CoreFixture *f, gconstpointer data) {
        TestDriverConfig config = { .total = 4 * CHUNK };
        Job *j = NULL;
        uint64_t value = 0;

        JobRestoreParams p = {
                .create = { .id = "j", .driver = core_ckpt_driver(&test_driver_backup),
                            .driver_data = test_driver_state_new(&config, f->calls), .auto_finalize = true,
                            .auto_dismiss = true },
                .status = JOB_STATUS_RUNNING,
                .progress_current = 2 * CHUNK,
                .progress_total = 4 * CHUNK,
                .has_checkpoint = true,
                .checkpoint = 2 * CHUNK,
        };
        g_assert_cmpint(job_restore(f->registry, &p, &j, NULL), ==, 0);
        g_assert_true(job_checkpoint(j, &value));
        g_assert_cmpuint(value, ==, 2 * CHUNK);

        f->exec.now += 60 * SEC;
        job_restore_start(j);
        g_assert_true(fake_run_one(&f->exec));
        f->exec.now += 5 * SEC;
        g_assert_true(fake_run_one(&f->exec));          /* submitted at the start: not asked */
        assert_events(f, "");
        g_assert_true(job_checkpoint(j, &value));
        g_assert_cmpuint(value, ==, 2 * CHUNK);
        g_assert_true(fake_run_one(&f->exec));          /* asked */
        assert_events(f, "j:checkpoint=196608");
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:checkpoint=262144 j:waiting j:pending j:concluded j:null");

        /* Without one recorded, there is none, whatever the value says. */
        p.create.driver_data = test_driver_state_new(&config, f->calls);
        p.has_checkpoint = false;
        g_assert_cmpint(job_restore(f->registry, &p, &j, NULL), ==, 0);
        g_assert_false(job_checkpoint(j, &value));
        g_assert_cmpuint(value, ==, 0);
}

/* ---- stopping for a restart (issue 15) ---------------------------------------------------- */

#define STOPPING_MESSAGE(id) "blockjobd is stopping; job '" id "' continues after it starts again"

/* Every verb is refused, with a message saying why; no verb is advertised. */
static void assert_verbs_refused(Job *j, const char *message) {
        int (*verbs[])(Job *, char **) = { job_user_pause, job_user_resume, job_complete, job_finalize };

        for (size_t i = 0; i < G_N_ELEMENTS(verbs); i++) {
                g_autofree char *error = NULL;
                g_assert_cmpint(verbs[i](j, &error), ==, -ESHUTDOWN);
                g_assert_cmpstr(error, ==, message);
        }
        for (int force = 0; force < 2; force++) {
                g_autofree char *error = NULL;
                g_assert_cmpint(job_user_cancel(j, force, &error), ==, -ESHUTDOWN);
                g_assert_cmpstr(error, ==, message);
        }
        g_autofree char *error = NULL;
        g_assert_cmpint(job_set_speed(j, 1, &error), ==, -ESHUTDOWN);
        g_assert_cmpstr(error, ==, message);
        for (JobVerb v = 0; v < _JOB_VERB_MAX; v++)
                g_assert_false(job_accepts_verb(j, v));
}

/* Stopped, with nothing left to run: no work queued, no timer armed. */
static void assert_stopped_idle(CoreFixture *f, Job *j, JobStatus status) {
        g_assert_true(job_is_stopped(j));
        g_assert_cmpstr(job_status_to_string(job_status(j)), ==, job_status_to_string(status));
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, UINT64_MAX);
        /* However long one waits. */
        fake_advance(&f->exec, 3600 * SEC);
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 0);
        g_assert_cmpstr(job_status_to_string(job_status(j)), ==, job_status_to_string(status));
}

/* Dismissed at exit whatever its status: 'null' is told, with job_is_stopped() still true. */
static void release(CoreFixture *f, Job *j) {
        g_autofree char *expected = g_strdup_printf("%s:null(stopped)", job_id(j));

        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        g_assert_cmpstr(f->events->str, ==, expected);
        g_string_truncate(f->events, 0);
}

/* Running with a step in flight: the step's result is applied, then one checkpoint_only step
 * runs, then the job is stopped, still running, with the progress of the real steps only. */
static void test_stop_running_step_in_flight(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *j = core_drive_to(f, "j", JOB_STATUS_RUNNING, false);
        assert_events(f, "j:created j:running");

        g_assert_true(fake_run_begin(&f->exec));
        job_stop(j);
        g_assert_false(job_is_stopped(j));
        assert_verbs_refused(j, STOPPING_MESSAGE("j"));
        g_autofree char *error = NULL;
        g_assert_cmpint(job_dismiss(j, &error), ==, -ESHUTDOWN);        /* not stopped yet */
        g_assert_cmpstr(error, ==, STOPPING_MESSAGE("j"));

        g_assert_true(fake_run_end(&f->exec));
        g_assert_cmpuint(job_current_progress(j), ==, CHUNK);
        assert_events(f, "");
        assert_calls(f, "");
        g_assert_cmpuint(g_queue_get_length(&f->exec.queue), ==, 1);    /* the checkpoint_only step */
        g_assert_true(fake_run_one(&f->exec));
        assert_calls(f, "j:checkpoint-only");
        assert_events(f, "j:checkpoint=65536 j:stopped");
        g_assert_cmpuint(core_job_state(j)->steps, ==, 1);
        g_assert_cmpuint(job_current_progress(j), ==, CHUNK);
        g_assert_cmpuint(job_total_progress(j), ==, 3 * CHUNK);
        assert_stopped_idle(f, j, JOB_STATUS_RUNNING);
        assert_verbs_refused(j, STOPPING_MESSAGE("j"));

        /* Once only: again, or through the other way in, nothing happens. */
        job_stop(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        assert_calls(f, "");
        release(f, j);
        assert_calls(f, "");
}

/* Sleeping on the rate limit, or in the backoff after an ignored error: the timer is disarmed, the
 * checkpoint_only step runs at once (not throttled), and nothing fires later. */
static void test_stop_sleeping(CoreFixture *f, gconstpointer data) {
        TestDriverConfig c = { .total = 8 * CHUNK };
        Job *j = ckpt_job(f, "j", &test_driver_backup, &c, true, true, NULL);

        g_assert_cmpint(job_set_speed(j, 1, NULL), ==, 0);
        job_start(j);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_cmpuint(fake_next_deadline(&f->exec), !=, UINT64_MAX);
        assert_events(f, "j:created j:running");

        job_stop(j);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, UINT64_MAX);
        g_assert_true(fake_run_one(&f->exec));
        assert_events(f, "j:checkpoint=65536 j:stopped");
        assert_calls(f, "j:checkpoint-only");
        assert_stopped_idle(f, j, JOB_STATUS_RUNNING);
        g_assert_cmpuint(core_job_state(j)->steps, ==, 1);

        /* The backoff of on-target-error=ignore. */
        TestDriverConfig e = { .total = 3 * CHUNK, .io_error_at_step = 1, .io_error = -EIO, .io_error_repeat = 100 };
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Job *k = NULL;
        p.id = "k";
        p.driver = core_ckpt_driver(&test_driver_backup);
        p.driver_data = test_driver_state_new(&e, f->calls);
        p.on_target_error = JOB_ON_ERROR_IGNORE;
        g_assert_cmpint(job_create(f->registry, &p, &k, NULL), ==, 0);
        job_start(k);
        g_assert_true(fake_run_one(&f->exec));
        assert_io_errors(f, "k:write:ignore");
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, f->exec.now + JOB_IO_ERROR_BACKOFF_MIN_NS);
        job_stop(k);
        fake_run_until_idle(&f->exec);
        assert_events(f, "k:created k:running k:checkpoint=0 k:stopped");
        assert_stopped_idle(f, k, JOB_STATUS_RUNNING);
        assert_io_errors(f, "");
}

/* Paused, by the user or internally: the checkpoint_only step runs all the same, and the job is
 * stopped paused, its user pause kept. */
static void test_stop_paused(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *u = core_drive_to(f, "u", JOB_STATUS_PAUSED, true);
        Job *i = core_drive_to(f, "i", JOB_STATUS_PAUSED, false);
        assert_events(f, "u:created u:running u:paused i:created i:running i:paused");

        job_stop(u);
        job_stop(i);
        g_assert_false(job_is_stopped(u));
        fake_run_until_idle(&f->exec);
        assert_calls(f, "u:checkpoint-only i:checkpoint-only");
        assert_events(f, "u:checkpoint=65536 u:stopped i:checkpoint=65536 i:stopped");
        assert_stopped_idle(f, u, JOB_STATUS_PAUSED);
        g_assert_true(job_is_user_paused(u));
        g_assert_false(job_is_user_paused(i));
        g_assert_cmpuint(job_pause_count(u), ==, 1);

        /* An internal resume or pause changes nothing any more. */
        job_resume(i);
        job_pause(u);
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        assert_stopped_idle(f, i, JOB_STATUS_PAUSED);
        assert_verbs_refused(u, STOPPING_MESSAGE("u"));
        release(f, u);
        release(f, i);
}

/* A user pause asked for while the last step ran takes effect when it returns, as it would have;
 * so does the stop of an I/O error's policy. Both are then stopped paused. */
static void test_stop_pause_in_flight(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *j = core_drive_to(f, "j", JOB_STATUS_RUNNING, true);
        job_stop(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:paused j:checkpoint=65536 j:stopped");
        assert_stopped_idle(f, j, JOB_STATUS_PAUSED);
        g_assert_true(job_is_user_paused(j));

        TestDriverConfig e = { .total = 3 * CHUNK, .io_error_at_step = 2, .io_error = -ENOSPC };
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Job *k = NULL;
        p.id = "k";
        p.driver = core_ckpt_driver(&test_driver_backup);
        p.driver_data = test_driver_state_new(&e, f->calls);
        p.on_target_error = JOB_ON_ERROR_ENOSPC;
        g_assert_cmpint(job_create(f->registry, &p, &k, NULL), ==, 0);
        job_start(k);
        g_assert_true(fake_run_one(&f->exec));
        job_stop(k);
        fake_run_until_idle(&f->exec);
        assert_io_errors(f, "k:write:stop");
        assert_events(f, "k:created k:running k:paused k:checkpoint=65536 k:stopped");
        assert_stopped_idle(f, k, JOB_STATUS_PAUSED);
        g_assert_cmpint(job_io_status(k), ==, JOB_IO_STATUS_NOSPACE);
        g_assert_true(job_is_user_paused(k));
}

/* A ready mirror idling, and one in standby: each makes its work durable once, and is stopped in
 * its status. */
static void test_stop_ready_standby(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *r = core_drive_to(f, "r", JOB_STATUS_READY, false);
        Job *s = core_drive_to(f, "s", JOB_STATUS_STANDBY, true);
        g_assert_cmpuint(fake_next_deadline(&f->exec), !=, UINT64_MAX);        /* r idles */
        assert_events(f, "r:created r:running r:ready s:created s:running s:ready s:standby");

        job_stop(r);
        job_stop(s);
        g_assert_cmpuint(fake_next_deadline(&f->exec), ==, UINT64_MAX);
        fake_run_until_idle(&f->exec);
        assert_calls(f, "r:checkpoint-only s:checkpoint-only");
        assert_events(f, "r:checkpoint=65536 r:stopped s:checkpoint=65536 s:stopped");
        assert_stopped_idle(f, r, JOB_STATUS_READY);
        assert_stopped_idle(f, s, JOB_STATUS_STANDBY);
        assert_verbs_refused(r, STOPPING_MESSAGE("r"));
        release(f, s);
}

/* A job that has not started (created, or restored and held) has nothing to make durable: stopped
 * at once, before job_stop() returns; it does not start afterwards. */
static void test_stop_not_started(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *c = core_drive_to(f, "c", JOB_STATUS_CREATED, false);
        Job *p = core_drive_to(f, "p", JOB_STATUS_CREATED, true);
        assert_events(f, "c:created p:created");

        job_stop(c);
        assert_events(f, "c:stopped");
        job_start(c);
        job_stop(p);
        assert_events(f, "p:stopped");
        job_start(p);
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        assert_calls(f, "");
        assert_stopped_idle(f, c, JOB_STATUS_CREATED);
        assert_stopped_idle(f, p, JOB_STATUS_CREATED);
        g_assert_true(job_is_user_paused(p));
        assert_verbs_refused(c, STOPPING_MESSAGE("c"));

        /* Its creation may still fail (the caller's reply never went out): a real dismissal, the
         * job never existed for anyone. */
        job_early_fail(c);
        assert_events(f, "c:null");

        Job *r = restore_job(f, "r", core_ckpt_driver(&test_driver_backup), JOB_STATUS_RUNNING, false, true, true,
                             NULL);
        job_stop(r);
        assert_events(f, "r:stopped");
        job_restore_start(r);
        fake_run_until_idle(&f->exec);
        assert_events(f, "");
        assert_stopped_idle(f, r, JOB_STATUS_RUNNING);
        g_assert_cmpuint(core_job_state(r)->steps, ==, 0);
}

/* Waiting: stopped at once, while the rest of its group is stopped too: here its peer, whose step
 * is in flight and whose result is applied first. */
static void test_stop_waiting(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *j = core_drive_to(f, "j", JOB_STATUS_WAITING, false);
        Job *peer = job_registry_find(f->registry, 0, "j-peer");
        assert_events(f, "j:created j-peer:created j:running j-peer:running j:checkpoint=65536 j:waiting");

        job_stop(j);
        assert_events(f, "j:stopped");
        g_assert_false(job_is_stopped(peer));
        assert_verbs_refused(peer, STOPPING_MESSAGE("j-peer"));
        fake_run_until_idle(&f->exec);
        assert_events(f, "j-peer:checkpoint=131072 j-peer:stopped");
        g_assert_cmpuint(job_current_progress(peer), ==, 2 * CHUNK);
        assert_stopped_idle(f, j, JOB_STATUS_WAITING);
        assert_stopped_idle(f, peer, JOB_STATUS_RUNNING);
        assert_calls(f, "j-peer:checkpoint-only");
        release(f, peer);
}

/* A grouped member stopped while another's last step is in flight: that step finishes, the member
 * waits, goes pending (the one stopped before keeps waiting: it follows after the restart), and
 * auto-finalize does not start the completion. */
static void test_stop_grouped_last_step(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = ckpt_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, txn);
        Job *b = ckpt_job(f, "b", &test_driver_backup, &(TestDriverConfig) { .total = 2 * CHUNK }, true, true, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        g_assert_true(fake_run_one(&f->exec));          /* a finishes and waits */
        g_assert_true(fake_run_one(&f->exec));          /* b's first step */
        g_assert_true(fake_run_begin(&f->exec));        /* b's last */
        assert_events(f, "a:created b:created a:running b:running a:checkpoint=65536 a:waiting");
        job_stop(a);
        assert_events(f, "a:stopped");
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_events(f, "b:checkpoint=131072 b:waiting b:pending b:stopped");
        assert_calls(f, "");
        assert_stopped_idle(f, a, JOB_STATUS_WAITING);
        assert_stopped_idle(f, b, JOB_STATUS_PENDING);
        release(f, a);
        release(f, b);
}

/* Pending: with a manual finalize it is stopped at once, and finalize is refused; with
 * auto-finalize, a stop while its last step runs leaves it pending, the completion not started. */
static void test_stop_pending(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *m = core_drive_to(f, "m", JOB_STATUS_PENDING, false);
        assert_events(f, "m:created m:running m:checkpoint=65536 m:waiting m:pending");
        job_stop(m);
        assert_events(f, "m:stopped");
        g_autofree char *error = NULL;
        g_assert_cmpint(job_finalize(m, &error), ==, -ESHUTDOWN);
        g_assert_cmpstr(error, ==, STOPPING_MESSAGE("m"));
        assert_stopped_idle(f, m, JOB_STATUS_PENDING);

        Job *a = ckpt_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, NULL);
        job_start(a);
        job_stop(a);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:created a:running a:checkpoint=65536 a:waiting a:pending a:stopped");
        assert_calls(f, "");
        assert_stopped_idle(f, a, JOB_STATUS_PENDING);
        release(f, a);
}

/* Aborting with its abort in flight: the abort and clean run to concluded, then the job is stopped,
 * and (auto-dismiss) goes. */
static void test_stop_aborting(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *j = core_drive_to(f, "j", JOB_STATUS_ABORTING, false);
        assert_events(f, "j:created j:running j:aborting");

        g_assert_true(fake_run_begin(&f->exec));
        job_stop(j);
        assert_events(f, "");
        assert_verbs_refused(j, STOPPING_MESSAGE("j"));
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_calls(f, "j:abort j:clean");
        /* Concluded and auto-dismissed: gone as always, not stopped (nothing comes back). */
        assert_events(f, "j:concluded j:null");
        g_assert_cmpstr(core_error_of(f, "j"), ==, "Input/output error");
        g_assert_cmpuint(job_registry_count(f->registry), ==, 0);
}

/* A group whose abort is under way when stopped: the member whose step is in flight ends its run
 * when the step returns, and every member is aborted, concluded, then stopped. */
static void test_stop_grouped_aborting(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = ckpt_job(f, "a", &test_driver_backup,
                          &(TestDriverConfig) { .total = 3 * CHUNK, .fail_at_step = 1, .fail_ret = -EIO }, true,
                          false, txn);
        Job *b = ckpt_job(f, "b", &test_driver_backup, NULL, true, false, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        g_assert_true(fake_run_begin(&f->exec));        /* a's step, which fails */
        g_assert_true(fake_run_begin(&f->exec));        /* b's first step */
        g_assert_true(fake_run_end(&f->exec));          /* a fails: b is cancelled, its step awaited */
        assert_events(f, "a:created b:created a:running b:running a:aborting");
        job_stop(b);
        assert_events(f, "");
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_events(f, "b:aborting b:concluded b:stopped a:concluded a:stopped");
        assert_calls(f, "b:abort b:clean a:abort a:clean");
        g_assert_cmpstr(core_error_of(f, "b"), ==, "Operation canceled");
        assert_stopped_idle(f, a, JOB_STATUS_CONCLUDED);
        assert_stopped_idle(f, b, JOB_STATUS_CONCLUDED);
        release(f, a);
}

/* A run that fails after the stop (its step was in flight) does not start an abort: the job stays
 * aborting, its result kept, and the rest of its group is not cancelled, only stopped. After the
 * restart the layer above brings it back concluded with its error (and fails the group). So does
 * a force cancel accepted before the stop, whose run ends only when the step returns. */
static void test_stop_run_fails(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = ckpt_job(f, "a", &test_driver_backup,
                          &(TestDriverConfig) { .total = 3 * CHUNK, .fail_at_step = 2, .fail_ret = -EIO,
                                                .fail_message = "boom" },
                          true, true, txn);
        Job *b = ckpt_job(f, "b", &test_driver_backup, NULL, true, true, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        g_assert_true(fake_run_one(&f->exec));          /* a's first step */
        g_assert_true(fake_run_one(&f->exec));          /* b's first step */
        job_stop(b);
        fake_run_until_idle(&f->exec);
        assert_events(f, "a:created b:created a:running b:running a:aborting a:stopped b:checkpoint=131072 b:stopped");
        assert_calls(f, "b:checkpoint-only");
        assert_stopped_idle(f, a, JOB_STATUS_ABORTING);
        assert_stopped_idle(f, b, JOB_STATUS_RUNNING);
        g_assert_cmpint(job_ret(a), ==, -EIO);
        g_assert_cmpstr(job_error(a), ==, "boom");
        g_assert_false(job_cancel_requested(b));
        release(f, a);
        release(f, b);
        assert_calls(f, "");

        Job *c = ckpt_job(f, "c", &test_driver_backup, NULL, true, true, NULL);
        job_start(c);
        g_assert_true(fake_run_begin(&f->exec));
        g_assert_cmpint(job_user_cancel(c, true, NULL), ==, 0);
        job_stop(c);
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_events(f, "c:created c:running c:aborting c:stopped");
        assert_calls(f, "");
        assert_stopped_idle(f, c, JOB_STATUS_ABORTING);
        g_assert_cmpstr(job_error(c), ==, "Operation canceled");
}

/* Concluded: stopped at once, and dismissed as always. */
static void test_stop_concluded(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        Job *j = core_drive_to(f, "j", JOB_STATUS_CONCLUDED, false);
        assert_events(f, "j:created j:running j:checkpoint=65536 j:waiting j:pending j:concluded");
        assert_calls(f, "j:prepare j:commit j:clean");

        job_stop(j);
        assert_events(f, "j:stopped");
        job_stop(j);
        assert_events(f, "");
        assert_stopped_idle(f, j, JOB_STATUS_CONCLUDED);
        g_assert_false(job_accepts_verb(j, JOB_VERB_DISMISS));
        release(f, j);
}

/* A prepare in flight completes, and the completion that was under way runs to the end: the other
 * member's prepare, the commits, the cleans; each member is stopped as it concludes. */
static void test_stop_prepare_in_flight(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        Job *a = ckpt_job(f, "a", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, false, txn);
        Job *b = ckpt_job(f, "b", &test_driver_backup, &(TestDriverConfig) { .total = CHUNK }, true, true, txn);
        job_txn_unref(txn);

        job_start(a);
        job_start(b);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_true(fake_run_one(&f->exec));
        assert_events(f, "a:created b:created a:running b:running a:checkpoint=65536 a:waiting b:checkpoint=65536 "
                         "b:waiting b:pending a:pending");
        g_assert_true(fake_run_begin(&f->exec));        /* b's prepare */
        job_stop(a);
        assert_events(f, "");
        assert_verbs_refused(a, STOPPING_MESSAGE("a"));
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_calls(f, "b:prepare a:prepare b:commit b:clean a:commit a:clean");
        assert_events(f, "b:concluded b:null a:concluded a:stopped");
        g_assert_cmpstr(core_error_of(f, "a"), ==, "");
        assert_stopped_idle(f, a, JOB_STATUS_CONCLUDED);

        /* A prepare that fails in flight aborts the group, to the end. */
        Job *c = ckpt_job(f, "c", &test_driver_backup,
                          &(TestDriverConfig) { .total = CHUNK, .prepare_ret = -ENOSPC, .prepare_message = "full" },
                          true, true, NULL);
        job_start(c);
        g_assert_true(fake_run_one(&f->exec));
        g_assert_true(fake_run_begin(&f->exec));
        job_stop(c);
        g_assert_true(fake_run_end(&f->exec));
        fake_run_until_idle(&f->exec);
        assert_calls(f, "c:prepare c:abort c:clean");
        assert_events(f, "c:created c:running c:checkpoint=65536 c:waiting c:pending c:aborting c:concluded "
                         "c:null");
        g_assert_cmpstr(core_error_of(f, "c"), ==, "full");
}

/* What the checkpoint_only step reports besides its checkpoint is ignored: no progress, no ready,
 * no end of the run; a failure to make the work durable is not the job's failure (it continues from
 * its previous checkpoint after the restart). */
static void test_stop_checkpoint_only_result(CoreFixture *f, gconstpointer data) {
        f->checkpoints = true;
        core_ckpt_only_mode = CORE_CKPT_ONLY_JUNK;
        Job *j = core_drive_to(f, "j", JOB_STATUS_PAUSED, true);
        job_stop(j);
        fake_run_until_idle(&f->exec);
        assert_events(f, "j:created j:running j:paused j:checkpoint=65536 j:stopped");
        assert_stopped_idle(f, j, JOB_STATUS_PAUSED);
        g_assert_cmpuint(job_current_progress(j), ==, CHUNK);
        g_assert_cmpuint(job_total_progress(j), ==, 3 * CHUNK);
        g_assert_cmpint(job_ret(j), ==, 0);

        core_ckpt_only_mode = CORE_CKPT_ONLY_FAIL;
        Job *k = core_drive_to(f, "k", JOB_STATUS_RUNNING, false);
        job_stop(k);
        fake_run_until_idle(&f->exec);
        assert_calls(f, "j:checkpoint-only k:checkpoint-only");
        assert_events(f, "k:created k:running k:stopped");
        assert_io_errors(f, "");
        assert_stopped_idle(f, k, JOB_STATUS_RUNNING);
        g_assert_false(job_checkpoint(k, NULL));
        g_assert_cmpint(job_ret(k), ==, 0);
        g_assert_null(job_error(k));
        g_assert_cmpint(job_io_status(k), ==, JOB_IO_STATUS_OK);
}

/* STOPPED is told once per job, also when the observer dismisses jobs from its callback (as the
 * manager may at exit); a transaction being stopped takes no new member. */
static void stop_dismissing_changed(Job *j, JobChange what, void *userdata) {
        CoreFixture *f = userdata;

        if (!(what & JOB_CHANGE_STOPPED))
                return;
        g_string_append_printf(f->events, "%s%s:stopped", f->events->len ? " " : "", job_id(j));
        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
}

static const JobObserver stop_dismissing_observer = { .changed = stop_dismissing_changed };

static void test_stop_told_once(CoreFixture *f, gconstpointer data) {
        JobTxn *txn;
        g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
        ckpt_job(f, "a", &test_driver_backup, NULL, true, true, txn);
        ckpt_job(f, "b", &test_driver_backup, NULL, true, true, txn);
        Job *c = ckpt_job(f, "c", &test_driver_backup, NULL, true, true, txn);
        assert_events(f, "a:created b:created c:created");

        job_registry_set_observer(f->registry, &stop_dismissing_observer, f);
        job_stop(c);
        g_assert_cmpstr(f->events->str, ==, "c:stopped b:stopped a:stopped");
        g_string_truncate(f->events, 0);
        g_assert_cmpuint(job_registry_count(f->registry), ==, 0);

        g_autofree char *error = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Job *d = NULL;
        p.id = "d";
        p.driver = &test_driver_backup;
        p.txn = txn;
        g_assert_cmpint(job_create(f->registry, &p, &d, &error), ==, -ESHUTDOWN);
        g_assert_cmpstr(error, ==, "blockjobd is stopping; the transaction takes no new job");
        g_assert_null(d);
        job_txn_unref(txn);
        job_registry_set_observer(f->registry, NULL, NULL);
}

static void unref_job(gpointer j) {
        job_unref(j);
}

/* job_stop() called by an observer from inside the core: as a job starts, as it becomes ready, as
 * it makes progress. The job is stopped at its next pause point, as from outside. */
static void stop_from_status(Job *j, JobStatus status, void *userdata) {
        CoreFixture *f = userdata;

        g_string_append_printf(f->events, "%s%s:%s", f->events->len ? " " : "", job_id(j), job_status_to_string(status));
        if (IN_SET(status, JOB_STATUS_RUNNING, JOB_STATUS_READY))
                job_stop(j);
}

static void stop_from_changed(Job *j, JobChange what, void *userdata) {
        CoreFixture *f = userdata;

        if (what & JOB_CHANGE_PROGRESS)
                job_stop(j);
        if (what & JOB_CHANGE_STOPPED)
                g_string_append_printf(f->events, "%s%s:stopped", f->events->len ? " " : "", job_id(j));
}

static const JobObserver stop_from_observer = { .status_changed = stop_from_status, .changed = stop_from_changed };

static void test_stop_from_observer(CoreFixture *f, gconstpointer data) {
        Job *a = ckpt_job(f, "a", &test_driver_backup, NULL, true, true, NULL);
        Job *m = ckpt_job(f, "m", &test_driver_mirror, &mirror_one_chunk, true, true, NULL);
        Job *p = ckpt_job(f, "p", &test_driver_backup, NULL, true, true, NULL);
        assert_events(f, "a:created m:created p:created");

        job_registry_set_observer(f->registry, &stop_from_observer, f);
        job_start(a);
        g_assert_cmpstr(f->events->str, ==, "a:running");
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(f->events->str, ==, "a:running a:stopped");
        g_assert_cmpuint(core_job_state(a)->steps, ==, 0);

        /* Only running/ready stop it: m makes its first step, becomes ready, and stops. */
        g_string_truncate(f->events, 0);
        job_registry_set_observer(f->registry, NULL, NULL);
        job_start(m);
        job_registry_set_observer(f->registry, &stop_from_observer, f);
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(f->events->str, ==, "m:ready m:stopped");
        g_assert_true(job_is_stopped(m));
        g_assert_cmpint(job_status(m), ==, JOB_STATUS_READY);

        g_string_truncate(f->events, 0);
        job_registry_set_observer(f->registry, NULL, NULL);
        job_start(p);
        job_registry_set_observer(f->registry, &stop_from_observer, f);
        fake_run_until_idle(&f->exec);
        g_assert_cmpstr(f->events->str, ==, "p:stopped");
        g_assert_cmpuint(job_current_progress(p), ==, CHUNK);
        g_assert_cmpuint(core_job_state(p)->steps, ==, 1);
        g_string_truncate(f->events, 0);
        job_registry_set_observer(f->registry, NULL, NULL);
        assert_calls(f, "a:checkpoint-only m:checkpoint-only p:checkpoint-only");
}

/* The daemon's exit: every job stopped, whatever its status, then each dismissed, and the
 * registry freed clean (the teardown, under ASan in CI). */
static void test_stop_all_then_free(CoreFixture *f, gconstpointer data) {
        static const JobStatus statuses[] = {
                JOB_STATUS_CREATED, JOB_STATUS_RUNNING, JOB_STATUS_PAUSED, JOB_STATUS_READY, JOB_STATUS_STANDBY,
                JOB_STATUS_WAITING, JOB_STATUS_PENDING, JOB_STATUS_ABORTING, JOB_STATUS_CONCLUDED,
        };

        g_autoptr(GPtrArray) jobs = g_ptr_array_new_with_free_func(unref_job);

        f->checkpoints = true;
        for (size_t i = 0; i < G_N_ELEMENTS(statuses); i++) {
                g_autofree char *id = g_strdup_printf("j%zu", i);
                core_drive_to(f, id, statuses[i], false);
                /* Its work queued (running, waiting's peer, aborting) is in flight from now on,
                 * out of the next one's way. */
                while (fake_run_begin(&f->exec))
                        ;
        }
        /* As the manager would: hold them, since a stop may let one go (not here, but with an
         * observer that dismisses). */
        for (Job *j = job_registry_first(f->registry); j; j = job_registry_next(j))
                g_ptr_array_add(jobs, job_ref(j));
        g_assert_false(job_registry_all_stopped(f->registry));
        for (guint i = 0; i < jobs->len; i++)
                job_stop(jobs->pdata[i]);
        g_ptr_array_set_size(jobs, 0);
        g_assert_false(job_registry_all_stopped(f->registry));
        while (fake_run_end(&f->exec))
                ;
        fake_run_until_idle(&f->exec);
        g_assert_true(job_registry_all_stopped(f->registry));
        /* Told once each, but the one that went. */
        g_auto(GStrv) words = g_strsplit(f->events->str, " ", -1);
        unsigned told = 0;
        for (char **w = words; *w; w++)
                told += g_str_has_suffix(*w, ":stopped");
        g_assert_cmpuint(told, ==, G_N_ELEMENTS(statuses));
        g_string_truncate(f->events, 0);
        g_string_truncate(f->calls, 0);

        Job *j;
        unsigned n = 0;
        while ((j = job_registry_first(f->registry))) {
                g_assert_true(job_is_stopped(j));
                g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
                n++;
        }
        /* One job per status, and the waiting one's peer; the aborting one concluded and went
         * by itself (auto-dismiss). */
        g_assert_cmpuint(n, ==, G_N_ELEMENTS(statuses));
        g_assert_cmpuint(job_registry_n_live(f->registry), ==, 0);
        g_assert_cmpuint(f->n_empty, ==, 1);
        g_assert_true(job_registry_all_stopped(f->registry));
        assert_calls(f, "");
}

static void test_all_transitions_taken(void) {
        bool seen[_JOB_STATUS_MAX][_JOB_STATUS_MAX] = {};

        for (unsigned i = 0; i < G_N_ELEMENTS(scenarios); i++) {
                CoreFixture f;
                core_fixture_setup(&f, NULL);
                scenarios[i](&f);
                for (int a = 0; a < _JOB_STATUS_MAX; a++)
                        for (int b = 0; b < _JOB_STATUS_MAX; b++)
                                seen[a][b] |= f.edges[a][b];
                core_fixture_teardown(&f, NULL);
        }

        for (int a = 0; a < _JOB_STATUS_MAX; a++)
                for (int b = 0; b < _JOB_STATUS_MAX; b++) {
                        /* aborting → aborting is legal but silent by definition. */
                        bool expected = job_transition_allowed(a, b) && a != b;
                        if (seen[a][b] != expected)
                                g_error("transition %s -> %s: %s", job_status_to_string(a), job_status_to_string(b),
                                        seen[a][b] ? "taken although illegal" : "never taken by any scenario");
                }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        g_test_add("/lifecycle/finalize/auto", CoreFixture, scenario_auto_both, core_fixture_setup, run_scenario,
                   core_fixture_teardown);
        g_test_add("/lifecycle/finalize/manual", CoreFixture, scenario_manual_finalize, core_fixture_setup,
                   run_scenario, core_fixture_teardown);
        g_test_add("/lifecycle/dismiss/manual", CoreFixture, scenario_manual_dismiss, core_fixture_setup,
                   run_scenario, core_fixture_teardown);
        g_test_add("/lifecycle/finalize-dismiss/manual", CoreFixture, scenario_manual_both, core_fixture_setup,
                   run_scenario, core_fixture_teardown);

#define SCENARIO(path, fn) g_test_add(path, CoreFixture, fn, core_fixture_setup, run_scenario, core_fixture_teardown)
        SCENARIO("/lifecycle/pause/running", scenario_pause_running);
        SCENARIO("/lifecycle/pause/created", scenario_pause_created);
        SCENARIO("/lifecycle/pause/ready", scenario_pause_ready);
        SCENARIO("/lifecycle/pause/internal", scenario_internal_pause);
        SCENARIO("/lifecycle/complete/standby", scenario_complete_standby);
        SCENARIO("/lifecycle/cancel/created", scenario_cancel_created);
        SCENARIO("/lifecycle/cancel/running", scenario_cancel_running);
        SCENARIO("/lifecycle/cancel/paused", scenario_cancel_paused);
        SCENARIO("/lifecycle/cancel/ready", scenario_cancel_ready);
        SCENARIO("/lifecycle/cancel/standby", scenario_cancel_standby);
        SCENARIO("/lifecycle/cancel/waiting", scenario_cancel_waiting);
        SCENARIO("/lifecycle/cancel/pending", scenario_cancel_pending);
        SCENARIO("/lifecycle/soft-cancel/ready", scenario_soft_cancel_ready);
        SCENARIO("/lifecycle/create/id-reuse", scenario_id_reuse);
        SCENARIO("/lifecycle/create/early-fail", scenario_early_fail);
        SCENARIO("/lifecycle/fail/run", scenario_run_fails);
        SCENARIO("/lifecycle/grouped/success", scenario_grouped_success);
        SCENARIO("/lifecycle/grouped/one-fails", scenario_grouped_failure);
        SCENARIO("/lifecycle/grouped/mixed-auto-finalize", scenario_grouped_mixed_finalize);
        SCENARIO("/lifecycle/io-error/stop", scenario_io_error_stop);

        CORE_TEST("/lifecycle/pause/errors", test_pause_errors);
        CORE_TEST("/lifecycle/pause/resume-checked-before-verb", test_resume_checked_before_verb);
        CORE_TEST("/lifecycle/cancel/created-manual-dismiss", test_cancel_created_manual_dismiss);
        CORE_TEST("/lifecycle/cancel/concluded", test_cancel_concluded);
        CORE_TEST("/lifecycle/cancel/aborting", test_cancel_aborting);
        CORE_TEST("/lifecycle/cancel/force-after-soft", test_force_after_soft);
        CORE_TEST("/lifecycle/soft-cancel/before-ready", test_soft_cancel_before_ready);
        CORE_TEST("/lifecycle/soft-cancel/no-cancel-hook", test_soft_cancel_backup);
        CORE_TEST("/lifecycle/soft-cancel/after-run", test_soft_cancel_after_run);
        CORE_TEST("/lifecycle/complete/after-cancel", test_complete_after_cancel);
        CORE_TEST("/lifecycle/create/invalid-ids", test_invalid_ids);
        CORE_TEST("/lifecycle/create/automatic-ids", test_automatic_ids);
        CORE_TEST("/lifecycle/ids/automatic-gaps", test_automatic_ids_gaps);
        CORE_TEST("/lifecycle/create/ids-per-owner", test_ids_per_owner);
        CORE_TEST("/lifecycle/create/id-kept-until-freed", test_id_kept_until_freed);
        CORE_TEST("/lifecycle/create/many-ids", test_many_ids);
        CORE_TEST("/lifecycle/registry/empty", test_registry_empty);
        CORE_TEST("/lifecycle/create/defaults", test_defaults);
        CORE_TEST("/lifecycle/fail/message", test_run_fails_with_message);
        CORE_TEST("/lifecycle/fail/prepare", test_prepare_fails);
        CORE_TEST("/lifecycle/grouped/force-cancel", test_grouped_force_cancel);
        CORE_TEST("/lifecycle/grouped/prepare-fails", test_grouped_prepare_fails);
        CORE_TEST("/lifecycle/grouped/cancel-while-preparing", test_cancel_while_preparing);
        CORE_TEST("/lifecycle/grouped/cancel-created-member", test_grouped_cancel_created_member);
        CORE_TEST("/lifecycle/finalize/cancel-while-preparing", test_cancel_while_preparing_self);
        CORE_TEST("/lifecycle/finalize/notify", test_finalize_notify);
        CORE_TEST("/lifecycle/finalize/cancel-while-committing", test_cancel_while_committing);
        CORE_TEST("/lifecycle/final-prepare/cancel-while-running", test_final_cancel_while_prepare_runs);
        CORE_TEST("/lifecycle/final-prepare/cancel-while-queued", test_final_cancel_while_prepare_queued);
        CORE_TEST("/lifecycle/final-prepare/cancel-before", test_final_cancel_before_prepare);
        CORE_TEST("/lifecycle/final-prepare/soft-cancel", test_final_soft_cancel);
        CORE_TEST("/lifecycle/final-prepare/fails", test_final_prepare_fails);
        CORE_TEST("/lifecycle/final-prepare/grouped-last", test_final_grouped_order);
        CORE_TEST("/lifecycle/final-prepare/grouped-cancel-first", test_final_grouped_cancel_first);
        CORE_TEST("/lifecycle/final-prepare/one-per-transaction", test_final_one_per_txn);
        CORE_TEST("/lifecycle/ratelimit/slices", test_ratelimit_slices);
        CORE_TEST("/lifecycle/ratelimit/step-min", test_ratelimit_step_min);
        CORE_TEST("/lifecycle/ratelimit/one-byte-per-second", test_ratelimit_one_byte);
        CORE_TEST("/lifecycle/ratelimit/overshoot-and-set-speed", test_ratelimit_overshoot);
        CORE_TEST("/lifecycle/ratelimit/pause-while-sleeping", test_ratelimit_pause_while_sleeping);
        CORE_TEST("/lifecycle/ratelimit/set-speed-refused", test_set_speed_errors);
        CORE_TEST("/lifecycle/ratelimit/idle-wakeups", test_idle_wakeups);
        CORE_TEST("/lifecycle/io-error/report", test_io_error_report);
        CORE_TEST("/lifecycle/io-error/ignore", test_io_error_ignore);
        CORE_TEST("/lifecycle/io-error/ignore-backoff", test_io_error_ignore_backoff);
        CORE_TEST("/lifecycle/io-error/ignore-backoff-reset", test_io_error_ignore_backoff_reset);
        CORE_TEST("/lifecycle/io-error/backoff-pause", test_io_error_backoff_pause);
        CORE_TEST("/lifecycle/io-error/backoff-cancel", test_io_error_backoff_cancel);
        CORE_TEST("/lifecycle/io-error/backoff-set-speed", test_io_error_backoff_set_speed);
        CORE_TEST("/lifecycle/io-error/corrupt-image", test_io_error_corrupt_image);
        CORE_TEST("/lifecycle/io-error/enospc", test_io_error_enospc);
        CORE_TEST("/lifecycle/io-error/enospc-other-error", test_io_error_enospc_other);
        CORE_TEST("/lifecycle/io-error/stop-while-paused", test_io_error_stop_while_paused);
        CORE_TEST("/lifecycle/progress", test_progress);
        CORE_TEST("/lifecycle/restore/running", test_restore_running);
        CORE_TEST("/lifecycle/restore/paused", test_restore_paused);
        CORE_TEST("/lifecycle/restore/running-user-paused", test_restore_running_user_paused);
        CORE_TEST("/lifecycle/restore/verbs-while-held", test_restore_verbs_while_held);
        CORE_TEST("/lifecycle/restore/standby", test_restore_standby);
        CORE_TEST("/lifecycle/restore/pending", test_restore_pending);
        CORE_TEST("/lifecycle/restore/grouped", test_restore_grouped);
        CORE_TEST("/lifecycle/restore/concluded", test_restore_concluded);
        CORE_TEST("/lifecycle/restore/refused", test_restore_refused);
        CORE_TEST("/lifecycle/pause/user-pause-told", test_user_pause_told);
        CORE_TEST("/lifecycle/checkpoint/interval", test_checkpoint_interval);
        CORE_TEST("/lifecycle/checkpoint/sleep-counts", test_checkpoint_sleep_counts);
        CORE_TEST("/lifecycle/checkpoint/not-wanted", test_checkpoint_not_wanted);
        CORE_TEST("/lifecycle/checkpoint/restore", test_checkpoint_restore);
        CORE_TEST("/lifecycle/stop/running-step-in-flight", test_stop_running_step_in_flight);
        CORE_TEST("/lifecycle/stop/sleeping", test_stop_sleeping);
        CORE_TEST("/lifecycle/stop/paused", test_stop_paused);
        CORE_TEST("/lifecycle/stop/pause-in-flight", test_stop_pause_in_flight);
        CORE_TEST("/lifecycle/stop/ready-standby", test_stop_ready_standby);
        CORE_TEST("/lifecycle/stop/not-started", test_stop_not_started);
        CORE_TEST("/lifecycle/stop/waiting", test_stop_waiting);
        CORE_TEST("/lifecycle/stop/grouped-last-step", test_stop_grouped_last_step);
        CORE_TEST("/lifecycle/stop/pending", test_stop_pending);
        CORE_TEST("/lifecycle/stop/aborting", test_stop_aborting);
        CORE_TEST("/lifecycle/stop/grouped-aborting", test_stop_grouped_aborting);
        CORE_TEST("/lifecycle/stop/run-fails", test_stop_run_fails);
        CORE_TEST("/lifecycle/stop/concluded", test_stop_concluded);
        CORE_TEST("/lifecycle/stop/prepare-in-flight", test_stop_prepare_in_flight);
        CORE_TEST("/lifecycle/stop/checkpoint-only-result", test_stop_checkpoint_only_result);
        CORE_TEST("/lifecycle/stop/told-once", test_stop_told_once);
        CORE_TEST("/lifecycle/stop/from-observer", test_stop_from_observer);
        CORE_TEST("/lifecycle/stop/all-then-free", test_stop_all_then_free);

        g_test_add_func("/lifecycle/every-legal-transition-taken", test_all_transitions_taken);

        return g_test_run();
}
