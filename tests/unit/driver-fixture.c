/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ftw.h>
#include <stdio.h>
#include <glib/gstdio.h>

#include "driver-fixture.h"

static void on_status(Job *j, JobStatus status, void *userdata) {
        Fixture *f = userdata;
        g_string_append_printf(f->events, "%s ", job_status_to_string(status));
        if (status == JOB_STATUS_CONCLUDED && job_error(j))
                g_string_append_printf(f->events, "(%s) ", job_error(j));
        if (status == JOB_STATUS_NULL && j == f->job)
                f->job = NULL;
}

static void on_changed(Job *j, JobChange what, void *userdata) {
        Fixture *f = userdata;
        if (what & JOB_CHANGE_PROGRESS) {
                ProgressSample s = { g_get_monotonic_time(), job_current_progress(j) };
                g_array_append_val(f->samples, s);
        }
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static const JobObserver observer = { .status_changed = on_status, .changed = on_changed };

void driver_fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        *f = (Fixture) {};
        f->dir = g_dir_make_tmp("blockjobd-backup-XXXXXX", &error);
        g_assert_no_error(error);
        f->source = g_build_filename(f->dir, "source.img", NULL);
        f->target = g_build_filename(f->dir, "target.img", NULL);
        f->events = g_string_new(NULL);
        f->samples = g_array_new(FALSE, FALSE, sizeof(ProgressSample));
        test_loop_init(&f->loop, 2, &observer, f);
}

void driver_fixture_teardown(Fixture *f, gconstpointer data) {
        test_loop_done(&f->loop);
        /* Depth first, links not followed: the cases build chains in subdirectories too. */
        (void) nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        g_free(f->dir);
        g_free(f->source);
        g_free(f->target);
        g_string_free(f->events, TRUE);
        g_array_free(f->samples, TRUE);
}


Job *driver_fixture_start_backup(Fixture *f, const TestBackupParams *bp, uint64_t speed, bool auto_finalize) {
        g_autofree char *error = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Backup *b = NULL;

        g_assert_cmpint(test_backup_open(bp, &b, &error), ==, 0);
        g_assert_null(error);
        p.id = "b";
        p.driver = &backup_driver;
        p.driver_data = b;
        p.speed = speed;
        p.auto_finalize = auto_finalize;
        g_assert_cmpint(job_create(f->loop.registry, &p, &f->job, &error), ==, 0);
        job_progress_set_remaining(f->job, backup_size(b));
        job_start(f->job);
        return f->job;
}

Job *driver_fixture_start_mirror(Fixture *f, const TestMirrorParams *mp, bool auto_dismiss) {
        g_autofree char *error = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Mirror *m = NULL;

        g_assert_cmpint(test_mirror_open(mp, &m, &error), ==, 0);
        g_assert_null(error);
        p.id = "m";
        p.driver = &mirror_driver;
        p.driver_data = m;
        p.auto_dismiss = auto_dismiss;
        g_assert_cmpint(job_create(f->loop.registry, &p, &f->job, NULL), ==, 0);
        job_progress_set_remaining(f->job, mirror_size(m));
        job_start(f->job);
        return f->job;
}

void driver_fixture_wait_for_passes(Fixture *f, Mirror *m, uint64_t n) {
        for (unsigned i = 0; mirror_passes(m) < n; i++) {
                g_assert_cmpuint(i, <, 100000);
                test_loop_iterate(&f->loop);
        }
}
