/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The raw backup driver on real files, through the real executor: byte-for-byte copies, holes
 * that stay holes, the rate limit in a real run, pause that stops I/O, cancel that leaves no file,
 * the O_TMPFILE and named-temp-file ways of publishing, and every refusal at open. */

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver-open.h"
#include "event-loop.h"
#include "driver-fixture.h"
#include "file-util.h"


static const Extent layout[] = {
        { 0, 1 * MiB },
        { 3 * MiB, 64 * KiB },
        { 3 * MiB + 192 * KiB, 1 * MiB + 512 * KiB },
        { 9 * MiB, 4 * KiB },
        { 12 * MiB, 2 * MiB },
};
#define LAYOUT_SIZE (16 * MiB)

static void check_sparse_copy(Fixture *f, bool named_temp_file) {
        TestBackupParams bp = { .source = f->source, .target = f->target, .named_temp_file = named_temp_file };
        struct stat st;

        make_sparse_file(f->source, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout), 1);
        driver_fixture_start_backup(f, &bp, 0, true);
        test_loop_run_until_empty(&f->loop);

        g_assert_cmpstr(f->events->str, ==, "created running waiting pending concluded null ");
        assert_same_content(f->source, f->target);
        assert_holes(f->target, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout));
        g_assert_cmpint(stat(f->target, &st), ==, 0);
        g_assert_cmpuint(st.st_size, ==, LAYOUT_SIZE);
        g_assert_cmpuint(st.st_mode & 0777, ==, 0640);
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", "target.img", NULL });

        /* Holes count as progress: the last sample is the whole size. */
        ProgressSample last = g_array_index(f->samples, ProgressSample, f->samples->len - 1);
        g_assert_cmpuint(last.bytes, ==, LAYOUT_SIZE);
}

static void test_sparse_copy(Fixture *f, gconstpointer data) {
        check_sparse_copy(f, false);
}

static void test_sparse_copy_named_temp(Fixture *f, gconstpointer data) {
        check_sparse_copy(f, true);
}

/* More data extents than the driver reads ahead of the copy (16), of sizes below and above what
 * it reads ahead of each (2 MiB), some closer together than a chunk and some further apart than
 * it looks ahead (128 MiB), and one that ends the file: read ahead or not, the copy is exact and
 * the holes stay holes. */
static void test_many_extents(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target };
        Extent many[40];
        uint64_t offset = 0, size;
        size_t n = 0;

        for (unsigned i = 0; i < 39; i++) {
                uint64_t length = i % 5 == 0 ? 3 * MiB : i % 3 == 0 ? 4 * KiB : 192 * KiB;
                many[n++] = (Extent) { offset, length };
                offset += length + (i == 20 ? 129 * MiB : i % 2 ? 64 * KiB : 1 * MiB);
        }
        size = offset + 1 * MiB;
        many[n++] = (Extent) { offset, 1 * MiB };

        make_sparse_file(f->source, size, many, n, 3);
        driver_fixture_start_backup(f, &bp, 0, true);
        test_loop_run_until_empty(&f->loop);

        g_assert_cmpstr(f->events->str, ==, "created running waiting pending concluded null ");
        assert_same_content(f->source, f->target);
        assert_holes(f->target, size, many, n);
}

static void test_unaligned_sizes(Fixture *f, gconstpointer data) {
        const Extent odd[] = { { 0, 100 }, { 70 * KiB + 3, 5000 }, { 3 * MiB - 17, 17 } };
        TestBackupParams bp = { .source = f->source, .target = f->target, .chunk_size = 4096 + 7 };

        make_sparse_file(f->source, 3 * MiB, odd, G_N_ELEMENTS(odd), 2);
        driver_fixture_start_backup(f, &bp, 0, true);
        test_loop_run_until_empty(&f->loop);
        assert_same_content(f->source, f->target);
}

static void test_empty_and_all_hole(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target };
        struct stat st;

        make_sparse_file(f->source, 0, NULL, 0, 3);
        driver_fixture_start_backup(f, &bp, 0, true);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpint(stat(f->target, &st), ==, 0);
        g_assert_cmpuint(st.st_size, ==, 0);
        g_assert_cmpint(unlink(f->target), ==, 0);

        make_sparse_file(f->source, 64 * MiB, NULL, 0, 3);
        driver_fixture_start_backup(f, &bp, 0, true);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpint(stat(f->target, &st), ==, 0);
        g_assert_cmpuint(st.st_size, ==, 64 * MiB);
        g_assert_cmpuint(st.st_blocks, ==, 0);
        g_assert_cmpstr(f->events->str, ==, "created running waiting pending concluded null "
                                            "created running waiting pending concluded null ");
}

static void test_rate_limit(Fixture *f, gconstpointer data) {
        const uint64_t speed = 8 * MiB, quota = speed / 10, size = 4 * MiB;
        TestBackupParams bp = { .source = f->source, .target = f->target };

        make_data_file(f->source, size);
        int64_t start = g_get_monotonic_time();
        driver_fixture_start_backup(f, &bp, speed, true);
        test_loop_run_until_empty(&f->loop);
        assert_same_content(f->source, f->target);

        /* Never ahead of the rate by more than one slice's quota, at any moment it was observed. */
        g_assert_cmpuint(f->samples->len, >=, size / quota);
        for (guint i = 0; i < f->samples->len; i++) {
                ProgressSample s = g_array_index(f->samples, ProgressSample, i);
                uint64_t allowed = (uint64_t) (s.usec - start) * speed / G_USEC_PER_SEC + quota;
                if (s.bytes > allowed)
                        g_error("after %" G_GINT64_FORMAT " µs: %" G_GUINT64_FORMAT " bytes copied, the limit allows %"
                                G_GUINT64_FORMAT, s.usec - start, s.bytes, allowed);
        }
}

static void test_pause_stops_io(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target };
        Backup *b;
        Job *j;

        make_data_file(f->source, 8 * MiB);
        j = driver_fixture_start_backup(f, &bp, 4 * MiB, true);
        b = job_driver_data(j);
        while (job_current_progress(j) == 0)
                test_loop_iterate(&f->loop);

        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PAUSED);
        uint64_t calls = backup_io_calls(b), progress = job_current_progress(j);
        g_assert_cmpuint(progress, <, 8 * MiB);

        /* Paused: not a single read or write, however long it stays so. */
        test_loop_run_for(&f->loop, 300 * 1000);
        g_assert_cmpuint(backup_io_calls(b), ==, calls);
        g_assert_cmpuint(job_current_progress(j), ==, progress);
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PAUSED);

        /* And it picks up where it stopped. */
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        g_assert_cmpint(job_set_speed(j, 0, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running paused running waiting pending concluded null ");
        assert_same_content(f->source, f->target);
}

static void test_cancel_leaves_nothing(Fixture *f, gconstpointer data) {
        for (int named = 0; named <= 1; named++) {
                TestBackupParams bp = { .source = f->source, .target = f->target, .named_temp_file = named };
                Job *j;

                make_data_file(f->source, 8 * MiB);
                j = driver_fixture_start_backup(f, &bp, 8 * MiB, true);
                while (job_current_progress(j) == 0)
                        test_loop_iterate(&f->loop);
                g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
                test_loop_run_until_empty(&f->loop);

                g_assert_cmpstr(f->events->str, ==, "created running aborting concluded (Operation canceled) null ");
                g_string_truncate(f->events, 0);
                g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
                assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
        }
}

static void test_cancel_pending_leaves_nothing(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target, .named_temp_file = true };
        Job *j;

        make_data_file(f->source, 1 * MiB);
        j = driver_fixture_start_backup(f, &bp, 0, false);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        /* All copied, not published: the hidden file exists, the target does not. */
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

static void test_overwrite(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target };
        g_autofree char *error = NULL, *expected = NULL;
        Backup *b = NULL;
        Job *j;

        make_data_file(f->source, 2 * MiB);
        g_assert_true(g_file_set_contents(f->target, "old contents", -1, NULL));

        /* Without overwrite an existing target is refused before anything is created. */
        g_assert_cmpint(test_backup_open(&bp, &b, &error), ==, -EEXIST);
        expected = g_strdup_printf("Target '%s' already exists", f->target);
        g_assert_cmpstr(error, ==, expected);
        g_assert_null(b);

        /* With it, the old file stays whole until commit, then is replaced in one step. */
        bp.overwrite = true;
        j = driver_fixture_start_backup(f, &bp, 0, false);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        g_autofree char *before = NULL;
        g_assert_true(g_file_get_contents(f->target, &before, NULL, NULL));
        g_assert_cmpstr(before, ==, "old contents");

        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        assert_same_content(f->source, f->target);
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", "target.img", NULL });
}

static void test_target_appears_before_commit(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target };
        g_autofree char *expected = NULL;
        Job *j;

        make_data_file(f->source, 1 * MiB);
        j = driver_fixture_start_backup(f, &bp, 0, false);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);

        /* Someone else creates the target meanwhile: prepare refuses, and their file stays. */
        g_assert_true(g_file_set_contents(f->target, "theirs", -1, NULL));
        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        expected = g_strdup_printf("created running waiting pending aborting concluded (Target '%s' already exists) null ",
                                   f->target);
        g_assert_cmpstr(f->events->str, ==, expected);
        g_autofree char *theirs = NULL;
        g_assert_true(g_file_get_contents(f->target, &theirs, NULL, NULL));
        g_assert_cmpstr(theirs, ==, "theirs");
}

static void assert_open_fails(const char *source, const char *target, int expected_r, const char *expected) {
        TestBackupParams bp = { .source = source, .target = target };
        g_autofree char *error = NULL;
        Backup *b = NULL;

        g_assert_cmpint(test_backup_open(&bp, &b, &error), ==, expected_r);
        g_assert_cmpstr(error, ==, expected);
        g_assert_null(b);
}

static void test_open_errors(Fixture *f, gconstpointer data) {
        g_autofree char *missing = g_build_filename(f->dir, "missing.img", NULL);
        g_autofree char *nodir = g_build_filename(f->dir, "nodir", "t.img", NULL);
        g_autofree char *m1 = g_strdup_printf("Could not open '%s': No such file or directory", missing);
        g_autofree char *m2 = g_strdup_printf("'%s' is neither a regular file nor a block device", f->dir);
        g_autofree char *m3 = g_strdup_printf("Could not create target '%s': No such file or directory", nodir);
        g_autofree char *m4 = g_strdup_printf("Target '%s' is a directory", f->dir);
        g_autofree char *slash = g_strdup_printf("%s/new/", f->dir);
        g_autofree char *m5 = g_strdup_printf("Target '%s' names a directory", slash);

        make_data_file(f->source, 64 * KiB);
        assert_open_fails(missing, f->target, -ENOENT, m1);
        assert_open_fails(f->dir, f->target, -EINVAL, m2);
        g_autofree char *m6 = g_strdup_printf("Target '%s' already exists", f->source);
        assert_open_fails(f->source, f->source, -EEXIST, m6);
        assert_open_fails(f->source, nodir, -ENOENT, m3);
        assert_open_fails(f->source, f->dir, -EISDIR, m4);
        assert_open_fails(f->source, slash, -EISDIR, m5);
        assert_open_fails(f->source, "/dev/null", -EINVAL, "Target '/dev/null' is neither a regular file nor a block device");
        assert_open_fails("", f->target, -EINVAL, "No image given");
        assert_open_fails(f->source, NULL, -EINVAL, "No target given");

        TestBackupParams big = { .source = f->source, .target = f->target, .chunk_size = BACKUP_CHUNK_MAX + 1 };
        g_autofree char *error = NULL;
        Backup *b = NULL;

        /* With overwrite the name would be replaced: by the source itself, never. */
        TestBackupParams same = { .source = f->source, .target = f->source, .overwrite = true };
        g_assert_cmpint(test_backup_open(&same, &b, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "Source and target cannot be the same");
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(test_backup_open(&big, &b, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "Chunk size"));

        /* Nothing was created by any of these. */
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

static void test_block_device_source(Fixture *f, gconstpointer data) {
        g_autofree char *cmd = NULL, *out = NULL, *err = NULL, *detach = NULL;
        TestBackupParams bp = { .source = NULL, .target = f->target };
        int status = 0;

        if (geteuid() != 0) {
                g_test_skip("loop devices need root");
                return;
        }

        make_sparse_file(f->source, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout), 4);
        cmd = g_strdup_printf("losetup --find --show --read-only %s", f->source);
        if (!g_spawn_command_line_sync(cmd, &out, &err, &status, NULL) || status != 0 || !out || !*out) {
                g_test_skip("no loop device available here");
                return;
        }
        g_strstrip(out);

        bp.source = out;
        driver_fixture_start_backup(f, &bp, 0, true);
        test_loop_run_until_empty(&f->loop);

        detach = g_strdup_printf("losetup --detach %s", out);
        g_assert_true(g_spawn_command_line_sync(detach, NULL, NULL, &status, NULL));
        assert_same_content(f->source, f->target);
        g_assert_cmpstr(f->events->str, ==, "created running waiting pending concluded null ");

        /* A copy of a device is private to its owner. */
        struct stat st;
        g_assert_cmpint(stat(f->target, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 0777, ==, 0600);
}

#define BACKUP_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        BACKUP_TEST("/backup-raw/sparse-copy", test_sparse_copy);
        BACKUP_TEST("/backup-raw/sparse-copy-named-temp-file", test_sparse_copy_named_temp);
        BACKUP_TEST("/backup-raw/many-extents", test_many_extents);
        BACKUP_TEST("/backup-raw/unaligned-sizes", test_unaligned_sizes);
        BACKUP_TEST("/backup-raw/empty-and-all-hole", test_empty_and_all_hole);
        BACKUP_TEST("/backup-raw/rate-limit", test_rate_limit);
        BACKUP_TEST("/backup-raw/pause-stops-io", test_pause_stops_io);
        BACKUP_TEST("/backup-raw/cancel-leaves-nothing", test_cancel_leaves_nothing);
        BACKUP_TEST("/backup-raw/cancel-pending-leaves-nothing", test_cancel_pending_leaves_nothing);
        BACKUP_TEST("/backup-raw/overwrite", test_overwrite);
        BACKUP_TEST("/backup-raw/target-appears-before-commit", test_target_appears_before_commit);
        BACKUP_TEST("/backup-raw/open-errors", test_open_errors);
        BACKUP_TEST("/backup-raw/block-device-source", test_block_device_source);
        return g_test_run();
}
