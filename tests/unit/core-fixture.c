/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>

#include "core-fixture.h"

static void append_word(GString *s, const char *word) {
        if (s->len > 0)
                g_string_append_c(s, ' ');
        g_string_append(s, word);
}

static void on_status_changed(Job *j, JobStatus status, void *userdata) {
        CoreFixture *f = userdata;
        /* A stopped job dismissed at exit: its record would stay. */
        bool released = status == JOB_STATUS_NULL && job_is_stopped(j);
        g_autofree char *word = g_strdup_printf("%s:%s%s", job_id(j), job_status_to_string(status),
                                                released ? "(stopped)" : "");
        gpointer prev;
        JobStatus from = JOB_STATUS_UNDEFINED;

        append_word(f->events, word);

        /* A stopped job changes no more: it only goes, at exit (or as a failed creation). */
        if (status == JOB_STATUS_NULL)
                g_hash_table_remove(f->stopped, j);
        else {
                g_assert_false(job_is_stopped(j));
                g_assert_false(g_hash_table_contains(f->stopped, j));
        }

        if (g_hash_table_lookup_extended(f->last_status, j, NULL, &prev))
                from = GPOINTER_TO_INT(prev);
        f->edges[from][status] = true;
        if (status == JOB_STATUS_NULL)
                g_hash_table_remove(f->last_status, j);
        else
                g_hash_table_insert(f->last_status, j, GINT_TO_POINTER(status));

        if (status == JOB_STATUS_CONCLUDED)
                g_hash_table_insert(f->errors, g_strdup(job_id(j)), g_strdup(job_error(j) ?: ""));
}

static void on_io_error(Job *j, const JobIoError *e, void *userdata) {
        CoreFixture *f = userdata;
        g_autofree char *word = g_strdup_printf("%s:%s:%s", job_id(j), e->is_read ? "read" : "write",
                                                job_error_action_to_string(e->action));
        if (e->suppressed > 0) {
                g_autofree char *plain = g_steal_pointer(&word);
                word = g_strdup_printf("%s+%u", plain, e->suppressed);
        }
        append_word(f->io_errors, word);
}

static void on_changed(Job *j, JobChange what, void *userdata) {
        CoreFixture *f = userdata;

        if (what & JOB_CHANGE_CHECKPOINT) {
                uint64_t value = 0;
                g_assert_true(job_checkpoint(j, &value));
                g_autofree char *word = g_strdup_printf("%s:checkpoint=%" G_GUINT64_FORMAT, job_id(j), value);
                append_word(f->events, word);
        }
        if (what & JOB_CHANGE_STOPPED) {
                g_autofree char *word = g_strdup_printf("%s:stopped", job_id(j));
                g_assert_true(job_is_stopped(j));
                g_assert_true(g_hash_table_add(f->stopped, j));        /* told once */
                append_word(f->events, word);
        }
}

static void on_empty(JobRegistry *r, void *userdata) {
        CoreFixture *f = userdata;

        g_assert_true(r == f->registry);
        g_assert_cmpuint(job_registry_n_live(r), ==, 0);
        f->n_empty++;
}

static const JobObserver core_observer = {
        .status_changed = on_status_changed,
        .io_error = on_io_error,
        .changed = on_changed,
        .empty = on_empty,
};

CoreCkptOnlyMode core_ckpt_only_mode;

static void ckpt_log(Job *j, TestDriverState *s, const char *what) {
        if (s->log->len > 0)
                g_string_append_c(s->log, ' ');
        g_string_append_printf(s->log, "%s:%s", job_id(j), what);
}

static void ckpt_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        TestDriverState *s = data;

        if (in->checkpoint_only) {
                /* Nothing is asked of it but the checkpoint. */
                g_assert_true(in->checkpoint);
                g_assert_cmpuint(in->max_bytes, ==, 0);
                g_assert_false(in->complete_requested);
                g_assert_false(in->cancel_requested);
                ckpt_log(j, s, "checkpoint-only");
                switch (core_ckpt_only_mode) {
                case CORE_CKPT_ONLY_JUNK:
                        *out = (JobStepResult) {
                                .finished = true, .progress = 65536, .dispatched = 65536, .has_remaining = true,
                                .remaining = 1, .ready = true, .idle_ns = 1,
                        };
                        break;
                case CORE_CKPT_ONLY_FAIL:
                        g_assert_cmpint(job_step_io_error(j, out, false, false, -EIO, "flush failed"), ==,
                                        JOB_ERROR_ACTION_REPORT);
                        return;
                case CORE_CKPT_ONLY_NORMAL:
                        break;
                }
                out->checkpoint = true;
                out->checkpoint_value = s->offset;
                return;
        }

        test_driver_backup.step(j, data, in, out);      /* every test driver's step */
        if (in->checkpoint || (out->finished && out->ret == 0)) {
                out->checkpoint = true;
                out->checkpoint_value = s->offset;
        }
}

const JobDriver *core_ckpt_driver(const JobDriver *base) {
        static JobDriver drivers[3];
        const JobDriver *bases[3] = { &test_driver_backup, &test_driver_mirror, &test_driver_final };

        for (size_t i = 0; i < G_N_ELEMENTS(bases); i++)
                if (base == bases[i]) {
                        drivers[i] = *base;
                        drivers[i].step = ckpt_step;
                        return &drivers[i];
                }
        g_assert_not_reached();
}

void core_fixture_setup(CoreFixture *f, gconstpointer data) {
        (void) data;
        memset(f, 0, sizeof(*f));
        core_ckpt_only_mode = CORE_CKPT_ONLY_NORMAL;
        fake_executor_init(&f->exec);
        g_assert_cmpint(job_registry_new(&fake_executor_ops, &f->exec, &f->registry), ==, 0);
        job_registry_set_observer(f->registry, &core_observer, f);
        f->events = g_string_new(NULL);
        f->calls = g_string_new(NULL);
        f->io_errors = g_string_new(NULL);
        f->errors = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        f->last_status = g_hash_table_new(NULL, NULL);
        f->stopped = g_hash_table_new(NULL, NULL);
}

void core_fixture_drain(CoreFixture *f) {
        Job *j;

        /* Force-cancel and dismiss until nothing is left; every round makes progress. A stopped
         * job is dismissed whatever its status; a stopping one gets there by running its work. */
        for (unsigned round = 0; (j = job_registry_first(f->registry)); round++) {
                g_assert_cmpuint(round, <, 1000);
                if (job_status(j) == JOB_STATUS_CONCLUDED || job_is_stopped(j))
                        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
                else if (job_accepts_verb(j, JOB_VERB_CANCEL))
                        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
                fake_run_until_idle(&f->exec);
        }
}

void core_fixture_teardown(CoreFixture *f, gconstpointer data) {
        (void) data;
        core_fixture_drain(f);
        g_assert_cmpuint(job_registry_count(f->registry), ==, 0);
        g_assert_cmpuint(job_registry_n_live(f->registry), ==, 0);
        job_registry_free(f->registry);
        fake_executor_done(&f->exec);
        g_string_free(f->events, TRUE);
        g_string_free(f->calls, TRUE);
        g_string_free(f->io_errors, TRUE);
        g_hash_table_unref(f->errors);
        g_hash_table_unref(f->last_status);
        g_assert_cmpuint(g_hash_table_size(f->stopped), ==, 0);
        g_hash_table_unref(f->stopped);
}

static Job *core_job_full(CoreFixture *f, uint32_t owner, const char *id, const JobDriver *d,
                          const TestDriverConfig *c, bool auto_finalize, bool auto_dismiss, JobTxn *txn) {
        TestDriverConfig config = c ? *c : (TestDriverConfig) {};
        g_autofree char *error = NULL;
        Job *j = NULL;

        if (config.total == 0 && !c)
                config.total = 3 * 65536;

        JobCreateParams p = {
                .owner = owner,
                .id = id,
                .driver = d,
                .driver_data = test_driver_state_new(&config, f->calls),
                .auto_finalize = auto_finalize,
                .auto_dismiss = auto_dismiss,
                .txn = txn,
        };
        int r = job_create(f->registry, &p, &j, &error);
        g_assert_cmpstr(error, ==, NULL);
        g_assert_cmpint(r, ==, 0);
        return j;
}

Job *core_job(CoreFixture *f, const char *id, const JobDriver *d, const TestDriverConfig *c, bool auto_finalize,
              bool auto_dismiss, JobTxn *txn) {
        return core_job_full(f, 0, id, d, c, auto_finalize, auto_dismiss, txn);
}

Job *core_job_owned(CoreFixture *f, uint32_t owner, const char *id) {
        return core_job_full(f, owner, id, &test_driver_backup, NULL, true, true, NULL);
}

Job *core_job_simple(CoreFixture *f, const char *id) {
        return core_job(f, id, &test_driver_backup, NULL, true, true, NULL);
}

TestDriverState *core_job_state(Job *j) {
        return job_driver_data(j);
}

void core_assert_string(GString *s, const char *expected, const char *file, int line) {
        if (!g_str_equal(s->str, expected)) {
                g_autofree char *msg = g_strdup_printf("%s:%d: expected \"%s\", got \"%s\"", file, line, expected,
                                                       s->str);
                g_assertion_message(G_LOG_DOMAIN, file, line, G_STRFUNC, msg);
        }
        g_string_truncate(s, 0);
}

const char *core_error_of(CoreFixture *f, const char *id) {
        return g_hash_table_lookup(f->errors, id);
}

static void user_pause(Job *j) {
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
}

Job *core_drive_to(CoreFixture *f, const char *id, JobStatus status, bool user_paused) {
        const JobDriver *backup = f->checkpoints ? core_ckpt_driver(&test_driver_backup) : &test_driver_backup;
        const JobDriver *mirror_driver = f->checkpoints ? core_ckpt_driver(&test_driver_mirror) : &test_driver_mirror;
        TestDriverConfig one_step = { .total = 65536 };
        TestDriverConfig mirror = { .total = 65536, .mirror = true };
        TestDriverConfig failing = { .total = 3 * 65536, .fail_at_step = 1, .fail_ret = -EIO };
        Job *j, *peer;
        JobTxn *txn;

        switch (status) {
        case JOB_STATUS_CREATED:
                j = core_job(f, id, backup, NULL, true, true, NULL);
                if (user_paused)
                        user_pause(j);
                break;

        case JOB_STATUS_RUNNING:
                j = core_job(f, id, backup, NULL, true, true, NULL);
                job_start(j);           /* its first step is now in flight */
                if (user_paused)
                        user_pause(j);  /* takes effect when the step returns */
                break;

        case JOB_STATUS_PAUSED:
                j = core_job(f, id, backup, NULL, true, true, NULL);
                job_start(j);
                if (user_paused)
                        user_pause(j);
                else
                        job_pause(j);
                fake_run_one(&f->exec);
                break;

        case JOB_STATUS_READY:
                j = core_job(f, id, mirror_driver, &mirror, true, true, NULL);
                job_start(j);
                fake_run_one(&f->exec); /* copies everything, becomes ready, sleeps */
                if (user_paused) {
                        /* A sleeping ready job goes to standby at once when paused; only a step in
                         * flight keeps it ready while user-paused. */
                        g_assert_true(fake_fire_next_timer(&f->exec));
                        user_pause(j);
                }
                break;

        case JOB_STATUS_STANDBY:
                j = core_job(f, id, mirror_driver, &mirror, true, true, NULL);
                job_start(j);
                fake_run_one(&f->exec);
                if (user_paused)
                        user_pause(j);
                else
                        job_pause(j);
                break;

        case JOB_STATUS_WAITING: {
                g_autofree char *peer_id = g_strdup_printf("%s-peer", id);
                g_assert_cmpint(job_txn_new(f->registry, &txn), ==, 0);
                j = core_job(f, id, backup, &one_step, true, true, txn);
                peer = core_job(f, peer_id, backup, NULL, true, true, txn);
                job_txn_unref(txn);
                job_start(j);
                job_start(peer);
                if (user_paused)
                        user_pause(j);
                fake_run_one(&f->exec); /* j finishes and waits for its peer */
                fake_run_one(&f->exec); /* the peer's first step; its second is queued */
                break;
        }

        case JOB_STATUS_PENDING:
                j = core_job(f, id, backup, &one_step, false, true, NULL);
                job_start(j);
                if (user_paused)
                        user_pause(j);
                fake_run_one(&f->exec);
                break;

        case JOB_STATUS_ABORTING:
                j = core_job(f, id, backup, &failing, true, true, NULL);
                job_start(j);
                if (user_paused)
                        user_pause(j);
                fake_run_one(&f->exec); /* fails; its abort is queued, not run */
                break;

        case JOB_STATUS_CONCLUDED:
                j = core_job(f, id, backup, &one_step, true, false, NULL);
                job_start(j);
                if (user_paused)
                        user_pause(j);
                fake_run_queue(&f->exec);
                break;

        default:
                g_assert_not_reached();
        }

        g_assert_cmpstr(job_status_to_string(job_status(j)), ==, job_status_to_string(status));
        if (user_paused)
                g_assert_true(job_is_user_paused(j));
        return j;
}
