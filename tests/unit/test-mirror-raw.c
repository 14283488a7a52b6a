/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The raw mirror driver on real files through the real executor: the copy and ready, changes to
 * the source followed while ready (data, zeroes, holes), passes started by inotify rather than by
 * re-reading all the time, complete (also from standby), soft and force cancel, a source that
 * changes its size. */

#include <fcntl.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include "driver-fixture.h"
#include "file-util.h"
#include "driver-open.h"

static const Extent layout[] = {
        { 0, 1 * MiB },
        { 2 * MiB + 64 * KiB, 192 * KiB },
        { 5 * MiB, 3 * MiB },
};
#define LAYOUT_SIZE (10 * MiB + 3 * KiB)       /* the last block is a short one */




static void test_copy_follow_complete(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .buf_size = 256 * KiB };
        char block[4096];
        Mirror *m;
        Job *j;

        make_sparse_file(f->source, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout), 11);
        j = driver_fixture_start_mirror(f, &mp, true);
        m = job_driver_data(j);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpuint(mirror_passes(m), ==, 1);
        g_assert_cmpuint(job_current_progress(j), ==, LAYOUT_SIZE);
        g_assert_cmpuint(job_total_progress(j), ==, LAYOUT_SIZE);

        /* Ready, and the source changes: data into a hole, into data, and into the short last block. */
        memset(block, 0xab, sizeof(block));
        write_at(f->source, 3 * MiB, block, sizeof(block));
        write_at(f->source, 6 * MiB + 17, block, 100);
        write_at(f->source, LAYOUT_SIZE - 10, block, 10);
        /* Progress grows by what had to be copied, three blocks of 64 KiB (the last one shorter),
         * in one pass or several, depending on when the writes were noticed. */
        for (unsigned i = 0; job_current_progress(j) < LAYOUT_SIZE + 2 * 64 * KiB + 3 * KiB; i++) {
                g_assert_cmpuint(i, <, 100000);
                test_loop_iterate(&f->loop);
        }
        g_assert_cmpuint(mirror_passes(m), >=, 2);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_READY);
        g_assert_cmpuint(job_current_progress(j), ==, LAYOUT_SIZE + 2 * 64 * KiB + 3 * KiB);
        g_assert_cmpuint(job_total_progress(j), ==, job_current_progress(j));

        /* Data that becomes zeroes becomes a hole in the target. */
        memset(block, 0, sizeof(block));
        uint64_t passes = mirror_passes(m);
        for (uint64_t off = 0; off < 64 * KiB; off += sizeof(block))
                write_at(f->source, 5 * MiB + off, block, sizeof(block));
        driver_fixture_wait_for_passes(f, m, passes + 1);

        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");
        assert_same_content(f->source, f->target);

        const Extent after[] = {
                { 0, 1 * MiB }, { 2 * MiB + 64 * KiB, 192 * KiB }, { 3 * MiB, 64 * KiB },
                { 5 * MiB + 64 * KiB, 3 * MiB - 64 * KiB }, { 10 * MiB, 3 * KiB },
        };
        assert_holes(f->target, LAYOUT_SIZE, after, G_N_ELEMENTS(after));
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", "target.img", NULL });
}

static void test_fine_granularity(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = 512 };
        char block[4096];
        Mirror *m;
        Job *j;

        /* 20486 blocks: the mirror's table of them spans six pages of 4096, the last one short. */
        make_sparse_file(f->source, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout), 12);
        j = driver_fixture_start_mirror(f, &mp, true);
        m = job_driver_data(j);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);

        /* Changes across a page boundary (blocks 4095 and 4096), into a page that held only
         * zeroes until now, and into the short last block, in the short last page. */
        memset(block, 0x5a, sizeof(block));
        uint64_t passes = mirror_passes(m);
        write_at(f->source, 2 * MiB - 100, block, 200);
        write_at(f->source, 9 * MiB + 512 * 3, block, 1024);
        write_at(f->source, LAYOUT_SIZE - 700, block, 700);
        /* ...and data that becomes zeroes. */
        memset(block, 0, sizeof(block));
        write_at(f->source, 5 * MiB + 4096, block, sizeof(block));
        driver_fixture_wait_for_passes(f, m, passes + 1);

        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");
        assert_same_content(f->source, f->target);
}

static void test_passes_only_on_change(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .poll_ns = 10 * 1000 * 1000 };
        char byte = 7;
        Mirror *m;
        Job *j;

        make_data_file(f->source, 4 * MiB);
        j = driver_fixture_start_mirror(f, &mp, true);
        m = job_driver_data(j);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);

        /* Nothing changes: it looks often (10 ms), but reads nothing again. */
        test_loop_run_for(&f->loop, 300 * 1000);
        g_assert_cmpuint(mirror_passes(m), ==, 1);

        /* A change wakes it. */
        write_at(f->source, 12345, &byte, 1);
        driver_fixture_wait_for_passes(f, m, 2);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready aborting concluded (Operation canceled) null ");
        /* A cancelled mirror leaves no target. */
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

static void test_complete_in_standby(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = 4096 };
        Job *j;

        make_data_file(f->source, 2 * MiB);
        j = driver_fixture_start_mirror(f, &mp, true);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_STANDBY);

        /* Accepted, but nothing happens while paused. */
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_for(&f->loop, 200 * 1000);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_STANDBY);
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));

        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready standby ready waiting pending concluded null ");
        assert_same_content(f->source, f->target);
}

static void test_soft_cancel_in_ready(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        Job *j;

        make_data_file(f->source, 2 * MiB);
        j = driver_fixture_start_mirror(f, &mp, true);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);

        /* QEMU's block-job-cancel in ready: a last pass, success, the target stays. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");
        assert_same_content(f->source, f->target);
}

static void test_soft_cancel_before_ready(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .buf_size = 64 * KiB };
        Job *j;

        make_data_file(f->source, 8 * MiB);
        j = driver_fixture_start_mirror(f, &mp, true);
        g_assert_cmpint(job_set_speed(j, 1 * MiB, NULL), ==, 0);
        /* Before ready a soft cancel is a force cancel. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        g_assert_true(job_is_cancelled(j));
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running aborting concluded (Operation canceled) null ");
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

static void test_source_size_changes(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        g_autofree char *expected = NULL;
        Job *j;

        make_data_file(f->source, 1 * MiB);
        j = driver_fixture_start_mirror(f, &mp, true);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpint(truncate(f->source, 2 * MiB), ==, 0);
        test_loop_run_until_empty(&f->loop);
        expected = g_strdup_printf("created running ready aborting concluded (Source '%s' changed its size from 1048576 "
                                   "to 2097152 bytes) null ",
                                   f->source);
        g_assert_cmpstr(f->events->str, ==, expected);
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

static void test_empty_source(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        Job *j;

        make_sparse_file(f->source, 0, NULL, 0, 1);
        j = driver_fixture_start_mirror(f, &mp, true);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");
        assert_same_content(f->source, f->target);
}

static void test_bad_granularity(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = 3000 };
        g_autofree char *error = NULL;
        Mirror *m = NULL;

        make_data_file(f->source, 4096);
        g_assert_cmpint(test_mirror_open(&mp, &m, &error), ==, -EINVAL);
        g_assert_null(m);
        g_assert_nonnull(strstr(error, "granularity"));
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

#define MIRROR_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        MIRROR_TEST("/mirror-raw/copy-follow-complete", test_copy_follow_complete);
        MIRROR_TEST("/mirror-raw/fine-granularity", test_fine_granularity);
        MIRROR_TEST("/mirror-raw/passes-only-on-change", test_passes_only_on_change);
        MIRROR_TEST("/mirror-raw/complete-in-standby", test_complete_in_standby);
        MIRROR_TEST("/mirror-raw/soft-cancel-in-ready", test_soft_cancel_in_ready);
        MIRROR_TEST("/mirror-raw/soft-cancel-before-ready", test_soft_cancel_before_ready);
        MIRROR_TEST("/mirror-raw/source-size-changes", test_source_size_changes);
        MIRROR_TEST("/mirror-raw/empty-source", test_empty_source);
        MIRROR_TEST("/mirror-raw/bad-granularity", test_bad_granularity);
        return g_test_run();
}
