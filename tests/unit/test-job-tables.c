/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The lifecycle's vocabulary and its two tables, checked three ways: the strings against QAPI, the
 * tables cell by cell against QEMU's job.c (typed in again here, independently of the core), and
 * live: every verb sent to a real job in every status it can be held in, also once the job is
 * being stopped for a restart (job_stop(): every verb refused, but the dismissal of a stopped
 * job), and every illegal transition attempted from every such status (it must abort the
 * process). */

#include <errno.h>

#include "core-fixture.h"
#include "macro.h"

/* QEMU's JobSTT, as in job.c.                U  C  R  P  Y  S  W  D  X  E  N */
static const int qemu_transitions[11][11] = {
        /* undefined */                     { 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
        /* created   */                     { 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1 },
        /* running   */                     { 0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0 },
        /* paused    */                     { 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 },
        /* ready     */                     { 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0 },
        /* standby   */                     { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
        /* waiting   */                     { 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0 },
        /* pending   */                     { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
        /* aborting  */                     { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
        /* concluded */                     { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
        /* null      */                     { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
};

/* QEMU's JobVerbTable since 6.0, without 8.2's 'change'.
 *                                            U  C  R  P  Y  S  W  D  X  E  N */
static const struct {
        const char *verb;
        int allowed[11];
} qemu_verbs[] = {
        { "cancel",    { 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 } },
        { "pause",     { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 } },
        { "resume",    { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 } },
        { "set-speed", { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 } },
        { "complete",  { 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0 } },
        { "finalize",  { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 } },
        { "dismiss",   { 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 } },
};

static const char *const qapi_status[] = {
        "undefined", "created", "running", "paused", "ready", "standby",
        "waiting", "pending", "aborting", "concluded", "null",
};

/* The statuses a job can be held in (undefined and null are never observable for long). */
static const JobStatus holdable[] = {
        JOB_STATUS_CREATED, JOB_STATUS_RUNNING, JOB_STATUS_PAUSED,  JOB_STATUS_READY,     JOB_STATUS_STANDBY,
        JOB_STATUS_WAITING, JOB_STATUS_PENDING, JOB_STATUS_ABORTING, JOB_STATUS_CONCLUDED,
};

static void test_strings(void) {
        static const char *const verbs[] = { "cancel", "pause", "resume", "set-speed", "complete", "dismiss", "finalize" };
        static const char *const types[] = { "commit", "stream", "mirror", "backup" };
        static const char *const on_error[] = { "report", "ignore", "enospc", "stop" };

        g_assert_cmpint(_JOB_STATUS_MAX, ==, G_N_ELEMENTS(qapi_status));
        for (unsigned i = 0; i < G_N_ELEMENTS(qapi_status); i++) {
                g_assert_cmpstr(job_status_to_string(i), ==, qapi_status[i]);
                g_assert_cmpint(job_status_from_string(qapi_status[i]), ==, i);
        }
        g_assert_cmpint(_JOB_VERB_MAX, ==, G_N_ELEMENTS(verbs));
        for (unsigned i = 0; i < G_N_ELEMENTS(verbs); i++) {
                g_assert_cmpstr(job_verb_to_string(i), ==, verbs[i]);
                g_assert_cmpint(job_verb_from_string(verbs[i]), ==, i);
        }
        g_assert_cmpint(_JOB_TYPE_MAX, ==, G_N_ELEMENTS(types));
        for (unsigned i = 0; i < G_N_ELEMENTS(types); i++) {
                g_assert_cmpstr(job_type_to_string(i), ==, types[i]);
                g_assert_cmpint(job_type_from_string(types[i]), ==, i);
        }
        g_assert_cmpint(_JOB_ON_ERROR_MAX, ==, G_N_ELEMENTS(on_error));
        for (unsigned i = 0; i < G_N_ELEMENTS(on_error); i++) {
                g_assert_cmpstr(job_on_error_to_string(i), ==, on_error[i]);
                g_assert_cmpint(job_on_error_from_string(on_error[i]), ==, i);
        }
        g_assert_cmpstr(job_error_action_to_string(JOB_ERROR_ACTION_IGNORE), ==, "ignore");
        g_assert_cmpstr(job_error_action_to_string(JOB_ERROR_ACTION_REPORT), ==, "report");
        g_assert_cmpstr(job_error_action_to_string(JOB_ERROR_ACTION_STOP), ==, "stop");
        g_assert_cmpstr(job_io_status_to_string(JOB_IO_STATUS_OK), ==, "ok");
        g_assert_cmpstr(job_io_status_to_string(JOB_IO_STATUS_FAILED), ==, "failed");
        g_assert_cmpstr(job_io_status_to_string(JOB_IO_STATUS_NOSPACE), ==, "nospace");

        /* Unknown strings and values, and the verb QEMU 8.2 added but blockjobd does not have. */
        g_assert_cmpint(job_status_from_string("Running"), ==, _JOB_STATUS_INVALID);
        g_assert_cmpint(job_status_from_string(NULL), ==, _JOB_STATUS_INVALID);
        g_assert_cmpint(job_verb_from_string("change"), ==, _JOB_VERB_INVALID);
        g_assert_cmpint(job_verb_from_string("set_speed"), ==, _JOB_VERB_INVALID);
        g_assert_cmpint(job_type_from_string("create"), ==, _JOB_TYPE_INVALID);
        g_assert_cmpint(job_on_error_from_string("auto"), ==, _JOB_ON_ERROR_INVALID);
        g_assert_null(job_status_to_string(_JOB_STATUS_MAX));
        g_assert_null(job_verb_to_string(_JOB_VERB_INVALID));
        g_assert_null(job_type_to_string(_JOB_TYPE_MAX));
}

static void test_transition_table(void) {
        for (int from = 0; from < _JOB_STATUS_MAX; from++)
                for (int to = 0; to < _JOB_STATUS_MAX; to++) {
                        if (job_transition_allowed(from, to) != (bool) qemu_transitions[from][to])
                                g_error("transition %s -> %s: core says %d, QEMU says %d", qapi_status[from],
                                        qapi_status[to], job_transition_allowed(from, to),
                                        qemu_transitions[from][to]);
                }
}

static void test_verb_table(void) {
        for (unsigned v = 0; v < G_N_ELEMENTS(qemu_verbs); v++) {
                JobVerb verb = job_verb_from_string(qemu_verbs[v].verb);
                g_assert_cmpint(verb, >=, 0);
                for (int s = 0; s < _JOB_STATUS_MAX; s++)
                        if (job_verb_allowed(verb, s) != (bool) qemu_verbs[v].allowed[s])
                                g_error("verb %s in %s: core says %d, QEMU says %d", qemu_verbs[v].verb,
                                        qapi_status[s], job_verb_allowed(verb, s), qemu_verbs[v].allowed[s]);
        }
}

static void test_predicates(void) {
        for (int s = 0; s < _JOB_STATUS_MAX; s++) {
                g_assert_cmpint(job_status_is_ready(s), ==, s == JOB_STATUS_READY || s == JOB_STATUS_STANDBY);
                g_assert_cmpint(job_status_is_completed(s), ==, s >= JOB_STATUS_WAITING);
        }

        /* The error policies, as QEMU's block_job_error_action(). */
        g_assert_cmpint(job_on_error_decide(JOB_ON_ERROR_REPORT, -ENOSPC), ==, JOB_ERROR_ACTION_REPORT);
        g_assert_cmpint(job_on_error_decide(JOB_ON_ERROR_IGNORE, -EIO), ==, JOB_ERROR_ACTION_IGNORE);
        g_assert_cmpint(job_on_error_decide(JOB_ON_ERROR_STOP, EIO), ==, JOB_ERROR_ACTION_STOP);
        g_assert_cmpint(job_on_error_decide(JOB_ON_ERROR_ENOSPC, -ENOSPC), ==, JOB_ERROR_ACTION_STOP);
        g_assert_cmpint(job_on_error_decide(JOB_ON_ERROR_ENOSPC, ENOSPC), ==, JOB_ERROR_ACTION_STOP);
        g_assert_cmpint(job_on_error_decide(JOB_ON_ERROR_ENOSPC, -EIO), ==, JOB_ERROR_ACTION_REPORT);

        /* A corrupt image is reported whatever the policy. */
        for (JobOnError p = 0; p < _JOB_ON_ERROR_MAX; p++) {
                g_assert_cmpint(job_on_error_decide(p, -EUCLEAN), ==, JOB_ERROR_ACTION_REPORT);
                g_assert_cmpint(job_on_error_decide(p, EUCLEAN), ==, JOB_ERROR_ACTION_REPORT);
        }
}

/* ---- every verb in every status, on a live job ------------------------------------------- */

typedef struct VerbCell {
        JobStatus status;
        JobVerb verb;
} VerbCell;

/* The expectation comes from QEMU's table as typed in above, not from the core's. */
static bool qemu_allows(JobVerb v, JobStatus s) {
        for (unsigned i = 0; i < G_N_ELEMENTS(qemu_verbs); i++)
                if (g_str_equal(qemu_verbs[i].verb, job_verb_to_string(v)))
                        return qemu_verbs[i].allowed[s];
        g_assert_not_reached();
}

static int call_verb(Job *j, JobVerb v, char **error) {
        switch (v) {
        case JOB_VERB_CANCEL:
                return job_user_cancel(j, true, error);
        case JOB_VERB_PAUSE:
                return job_user_pause(j, error);
        case JOB_VERB_RESUME:
                return job_user_resume(j, error);
        case JOB_VERB_SET_SPEED:
                return job_set_speed(j, 1000000, error);
        case JOB_VERB_COMPLETE:
                return job_complete(j, error);
        case JOB_VERB_DISMISS:
                return job_dismiss(j, error);
        case JOB_VERB_FINALIZE:
                return job_finalize(j, error);
        default:
                g_assert_not_reached();
        }
}

static void test_verb_cell(CoreFixture *f, gconstpointer data) {
        const VerbCell *cell = data;
        g_autofree char *error = NULL;
        Job *j;
        int r;

        /* Resume is refused with its own message unless the job is user-paused, so only a
         * user-paused job shows what the verb table says about resume. */
        j = core_drive_to(f, "j", cell->status, cell->verb == JOB_VERB_RESUME);
        r = call_verb(j, cell->verb, &error);

        if (qemu_allows(cell->verb, cell->status)) {
                g_assert_cmpstr(error, ==, NULL);
                g_assert_cmpint(r, ==, 0);
        } else {
                g_autofree char *expected =
                        g_strdup_printf("Job 'j' in state '%s' cannot accept command verb '%s'",
                                        job_status_to_string(cell->status), job_verb_to_string(cell->verb));
                g_assert_cmpint(r, ==, -EBUSY);
                g_assert_cmpstr(error, ==, expected);
        }
}

/* Stopping for a restart: every verb is refused, whatever the status, with one message; a job
 * that needed nothing to stop (not started, waiting, pending, concluded) is stopped at once, and
 * then, only then, may be dismissed (the daemon's exit). */
static void test_stopped_verb_cell(CoreFixture *f, gconstpointer data) {
        const VerbCell *cell = data;
        bool at_once = IN_SET(cell->status, JOB_STATUS_CREATED, JOB_STATUS_WAITING, JOB_STATUS_PENDING,
                              JOB_STATUS_CONCLUDED);
        g_autofree char *error = NULL;
        Job *j;
        int r;

        f->checkpoints = true;
        j = core_drive_to(f, "j", cell->status, cell->verb == JOB_VERB_RESUME);
        job_stop(j);
        g_assert_cmpint(job_is_stopped(j), ==, at_once);
        g_assert_false(job_accepts_verb(j, cell->verb));
        r = call_verb(j, cell->verb, &error);

        if (cell->verb == JOB_VERB_DISMISS && at_once) {
                g_assert_cmpstr(error, ==, NULL);
                g_assert_cmpint(r, ==, 0);
                g_assert_null(job_registry_find(f->registry, 0, "j"));
        } else {
                g_assert_cmpint(r, ==, -ESHUTDOWN);
                g_assert_cmpstr(error, ==, "blockjobd is stopping; job 'j' continues after it starts again");
                g_assert_cmpstr(job_status_to_string(job_status(j)), ==, job_status_to_string(cell->status));
        }
}

/* ---- every illegal transition from every holdable status aborts --------------------------- */

typedef struct TransitionCell {
        JobStatus from;
        JobStatus to;
} TransitionCell;

static void test_illegal_transition(gconstpointer data) {
        const TransitionCell *cell = data;

        if (g_test_subprocess()) {
                CoreFixture f;
                core_fixture_setup(&f, NULL);
                Job *j = core_drive_to(&f, "j", cell->from, false);
                job_state_transition(j, cell->to);
                /* Not reached: the transition aborts. */
                return;
        }

        g_test_trap_subprocess(NULL, 0, 0);
        g_test_trap_assert_failed();
        g_test_trap_assert_stderr("*illegal transition*");
}

int main(int argc, char **argv) {
        static VerbCell verb_cells[G_N_ELEMENTS(holdable) * _JOB_VERB_MAX];
        static TransitionCell transition_cells[G_N_ELEMENTS(holdable) * _JOB_STATUS_MAX];
        unsigned nv = 0, nt = 0;

        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/job-tables/strings", test_strings);
        g_test_add_func("/job-tables/transition-table", test_transition_table);
        g_test_add_func("/job-tables/verb-table", test_verb_table);
        g_test_add_func("/job-tables/predicates", test_predicates);

        for (unsigned s = 0; s < G_N_ELEMENTS(holdable); s++)
                for (int v = 0; v < _JOB_VERB_MAX; v++) {
                        VerbCell *c = &verb_cells[nv++];
                        *c = (VerbCell) { holdable[s], v };
                        g_autofree char *path = g_strdup_printf("/job-tables/verb/%s/%s",
                                                                job_status_to_string(c->status),
                                                                job_verb_to_string(c->verb));
                        g_test_add(path, CoreFixture, c, core_fixture_setup, test_verb_cell,
                                   core_fixture_teardown);
                        g_autofree char *stopped_path = g_strdup_printf("/job-tables/stopped-verb/%s/%s",
                                                                        job_status_to_string(c->status),
                                                                        job_verb_to_string(c->verb));
                        g_test_add(stopped_path, CoreFixture, c, core_fixture_setup, test_stopped_verb_cell,
                                   core_fixture_teardown);
                }

        for (unsigned s = 0; s < G_N_ELEMENTS(holdable); s++)
                for (int to = 0; to < _JOB_STATUS_MAX; to++) {
                        if (job_transition_allowed(holdable[s], to))
                                continue;
                        TransitionCell *c = &transition_cells[nt++];
                        *c = (TransitionCell) { holdable[s], to };
                        g_autofree char *path = g_strdup_printf("/job-tables/illegal-transition/%s/%s",
                                                                job_status_to_string(c->from),
                                                                job_status_to_string(c->to));
                        g_test_add_data_func(path, c, test_illegal_transition);
                }

        return g_test_run();
}
