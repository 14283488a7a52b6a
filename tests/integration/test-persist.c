/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Jobs across a restart of the daemon (issue 15), the records: every job has a record in the
 * state directory (--state-dir=); after a kill -9 or SIGTERM the daemon brings every recorded job
 * back at the same object path (test-resume.c: how they continue); a concluded one as it was, one
 * that cannot continue concluded with the reason; damaged records fail only their own job;
 * Dismiss removes the record; a daemon with records does not exit on idle. */

#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus-fixture.h"

#define MiB (1024 * 1024)
#define S(s) g_variant_new_string(s)

typedef struct Fixture {
        BusFixture bus;
        char *state;                    /* the state directory */
        char *jobs;                     /* its jobs/ */
} Fixture;

static void start_daemon(Fixture *f, const char *extra) {
        g_autofree char *args = g_strdup_printf("--idle-timeout=0 --state-dir=%s %s", f->state, extra ?: "");
        bus_fixture_start_daemon(&f->bus, args);
}

static void setup(Fixture *f, gconstpointer data) {
        bus_fixture_init(&f->bus);
        f->state = bus_fixture_path(&f->bus, "state");
        f->jobs = g_build_filename(f->state, "jobs", NULL);
        g_assert_cmpint(g_mkdir(f->state, 0700), ==, 0);
        bus_fixture_start_bus(&f->bus, NULL);
        start_daemon(f, NULL);
}

static void teardown(Fixture *f, gconstpointer data) {
        bus_fixture_teardown(&f->bus, data);
        g_free(f->state);
        g_free(f->jobs);
}

static char *record_path(Fixture *f, const char *id) {
        g_autofree char *name = g_strdup_printf("0-%s.job", id);
        return g_build_filename(f->jobs, name, NULL);
}

static void kill_daemon(Fixture *f) {
        bus_fixture_kill_daemon(&f->bus);
        g_string_truncate(f->bus.statuses, 0);
}

static void wait_for_gone(Fixture *f, const char *path) {
        bus_wait_for_file_gone(&f->bus, path);
}

static void wait_for_record(Fixture *f, const char *path, const char *line) {
        bus_wait_for_file_text(&f->bus, path, line);
}

static void assert_mode(const char *path, mode_t mode) {
        struct stat st;
        g_assert_cmpint(lstat(path, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, geteuid());
        g_assert_cmpuint(st.st_mode & 07777, ==, mode);
}

static char *error_of(Fixture *f, const char *path) {
        return bus_get_string(&f->bus, path, "Error");
}

/* A backup held at 1 MiB/s and paused, then kill -9: it comes back at the same path, paused, with
 * its unfinished target; resumed, it finishes and its record goes. */
static void test_kill_paused(Fixture *f, gconstpointer data) {
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.raw");
        g_autofree char *record = record_path(f, "p");
        g_autofree char *hidden = bus_fixture_path(&f->bus, ".target.raw.blockjobd-0-p");

        bus_make_file(disk, 64 * MiB);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S("p"), "speed", g_variant_new_uint64(1 * MiB), NULL));
        /* The reply came after the record was durable. */
        g_assert_true(g_file_test(record, G_FILE_TEST_IS_REGULAR));
        assert_mode(f->state, 0700);
        assert_mode(f->jobs, 0700);
        assert_mode(record, 0600);
        /* The new target is built under its hidden name, which the record holds, with its inode. */
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        {
                g_autofree char *text = NULL;
                struct stat st;
                g_assert_true(g_file_get_contents(record, &text, NULL, NULL));
                g_assert_nonnull(strstr(text, "\nTARGET_HIDDEN=.target.raw.blockjobd-0-p\n"));
                g_assert_cmpint(stat(hidden, &st), ==, 0);
                g_autofree char *identity = g_strdup_printf("\nTARGET_IDENTITY=dev=%" G_GUINT64_FORMAT " ino=%" G_GUINT64_FORMAT " ",
                                                            (guint64) st.st_dev, (guint64) st.st_ino);
                g_assert_nonnull(strstr(text, identity));
        }

        while (bus_get_uint64(&f->bus, path, "CurrentProgress") == 0)
                bus_iterate_for(&f->bus, 10 * 1000);
        bus_job_call(&f->bus, path, "Pause");
        bus_wait_for_status(&f->bus, "p", "paused");
        /* The paused status reaches the record. */
        wait_for_record(f, record, "\nSTATUS=paused\n");
        wait_for_record(f, record, "\nUSER_PAUSED=yes\n");

        kill_daemon(f);
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
        start_daemon(f, NULL);

        /* Back at the same path, still paused by its user, its unfinished target kept. */
        g_autofree char *again = bus_job_path_for_id(&f->bus, "p");
        g_assert_cmpstr(again, ==, path);
        g_autofree char *status = bus_get_string(&f->bus, path, "Status");
        g_assert_cmpstr(status, ==, "paused");
        g_autofree char *type = bus_get_string(&f->bus, path, "Type");
        g_assert_cmpstr(type, ==, "backup");
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

        /* Its verbs work: it finishes, and its record goes with it. */
        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_job_call(&f->bus, path, "Resume");
        bus_wait_for_status(&f->bus, "p", "null");
        bus_assert_same_file(disk, target);
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        wait_for_gone(f, record);
}

/* A job that failed, kept undismissed: after kill -9 it is back, concluded with its error, and
 * its source and target as they were. */
static void test_concluded(Fixture *f, gconstpointer data) {
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.raw");
        g_autofree char *record = record_path(f, "failed");

        bus_make_file(disk, 4 * MiB);
        bus_fixture_set_faults(&f->bus, "%s read %d EIO\n", disk, 1 * MiB);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S("failed"), "auto-dismiss", g_variant_new_boolean(FALSE),
                                                    NULL));
        bus_wait_for_status(&f->bus, "failed", "concluded");
        g_autofree char *error = error_of(f, path);
        g_assert_cmpstr(error, !=, "");
        wait_for_record(f, record, "\nSTATUS=concluded\n");
        /* A failed job removed its hidden target itself. */
        g_autofree char *hidden = bus_fixture_path(&f->bus, ".target.raw.blockjobd-0-failed");
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        bus_fixture_set_faults(&f->bus, "%s", "");

        kill_daemon(f);
        gsize mark = f->bus.statuses->len;
        start_daemon(f, NULL);

        g_autofree char *again = bus_job_path_for_id(&f->bus, "failed");
        g_assert_cmpstr(again, ==, path);
        bus_wait_for_status_since(&f->bus, mark, "failed", "concluded");
        /* It came back directly concluded: no status it did not have (created, running, aborting). */
        g_assert_cmpstr(f->bus.statuses->str + mark, ==, "failed:concluded ");
        g_autofree char *error2 = error_of(f, path);
        g_assert_cmpstr(error2, ==, error);
        g_autofree char *source = bus_get_string(&f->bus, path, "Source");
        g_assert_cmpstr(source, ==, disk);
        g_autofree char *target2 = bus_get_string(&f->bus, path, "Target");
        g_assert_cmpstr(target2, ==, target);
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

        bus_job_call(&f->bus, path, "Dismiss");
        wait_for_gone(f, record);
}

static void write_file(const char *path, const char *text, gssize size) {
        g_autoptr(GError) error = NULL;
        g_assert_true(g_file_set_contents_full(path, text, size, G_FILE_SET_CONTENTS_NONE, 0600, &error));
        g_assert_no_error(error);
}

/* Damaged records next to a good one: each fails only its own job, clearly; one that does not
 * even tell its type is set aside as damaged/<name>.damaged; the good one is restored. */
static void test_damaged(Fixture *f, gconstpointer data) {
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.raw");
        g_autofree char *good = record_path(f, "good");

        bus_make_file(disk, 16 * MiB);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S("good"), "speed", g_variant_new_uint64(1 * MiB), NULL));
        wait_for_record(f, good, "\nSTATUS=running\n");
        kill_daemon(f);

        g_autofree char *text = NULL;
        gsize size;
        g_assert_true(g_file_get_contents(good, &text, &size, NULL));
        g_assert_true(g_str_has_prefix(text, "BLOCKJOBD-JOB-RECORD=1\n"));

        /* Truncated in the middle of a line (the TYPE line is early, so the job is told). */
        g_autofree char *truncated = g_strdup(text);
        char *type_line = strstr(truncated, "\nTYPE=");
        g_assert_nonnull(type_line);
        g_autofree char *r_trunc = record_path(f, "trunc");
        write_file(r_trunc, truncated, (gssize) (strchr(type_line + 1, '\n') - truncated) + 4);
        /* A newer version. */
        g_autofree char *r_version = record_path(f, "version");
        g_autoptr(GString) v = g_string_new(text);
        g_string_replace(v, "BLOCKJOBD-JOB-RECORD=1\n", "BLOCKJOBD-JOB-RECORD=2\n", 1);
        g_string_replace(v, "\nID=good\n", "\nID=version\n", 1);
        write_file(r_version, v->str, -1);
        /* Another job's record under this name. */
        g_autofree char *r_other = record_path(f, "other");
        write_file(r_other, text, -1);
        /* Garbage: not even a type. */
        g_autofree char *r_garbage = record_path(f, "garbage");
        write_file(r_garbage, "\x01\x02 nothing to see\n", -1);

        start_daemon(f, NULL);

        /* The good one continues, unaffected; held paused while the others are looked at. */
        g_autofree char *again = bus_job_path_for_id(&f->bus, "good");
        g_assert_cmpstr(again, ==, path);
        bus_job_call(&f->bus, path, "Pause");
        g_autofree char *status = bus_get_string(&f->bus, path, "Status");
        g_assert_true(g_str_equal(status, "running") || g_str_equal(status, "paused"));

        static const struct { const char *id, *what; } damaged[] = {
                { "trunc", "0-trunc.job" },
                { "version", "0-version.job" },
                { "other", "0-other.job" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(damaged); i++) {
                bus_wait_for_status(&f->bus, damaged[i].id, "concluded");
                g_autofree char *p = bus_job_path_for_id(&f->bus, damaged[i].id);
                g_autofree char *e = error_of(f, p);
                g_test_message("%s: %s", damaged[i].id, e);
                g_assert_nonnull(strstr(e, "is damaged, so the job was not restored"));
                g_assert_nonnull(strstr(e, damaged[i].what));
                g_autofree char *type = bus_get_string(&f->bus, p, "Type");
                g_assert_cmpstr(type, ==, "backup");
        }

        /* Out of jobs/, which blockjobd.path watches: a file left there would start the daemon
         * again and again. */
        g_autofree char *aside = g_build_filename(f->state, "damaged", "0-garbage.job.damaged", NULL);
        g_assert_false(g_file_test(r_garbage, G_FILE_TEST_EXISTS));
        g_assert_true(g_file_test(aside, G_FILE_TEST_IS_REGULAR));
        g_autoptr(GVariant) jobs = bus_call(&f->bus, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autoptr(GVariant) list = g_variant_get_child_value(jobs, 0);
        g_assert_cmpuint(g_variant_n_children(list), ==, 4);

        /* Dismissing a damaged record's job removes the record. */
        g_autofree char *p_other = bus_job_path_for_id(&f->bus, "other");
        bus_job_call(&f->bus, p_other, "Dismiss");
        wait_for_gone(f, r_other);
        g_assert_true(g_file_test(good, G_FILE_TEST_EXISTS));

        /* The good one finishes. */
        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_job_call(&f->bus, path, "Resume");
        bus_wait_for_status(&f->bus, "good", "null");
        bus_assert_same_file(disk, target);
        wait_for_gone(f, good);
}

/* While records exist, the daemon does not exit on idle; once the last is dismissed, it does. */
static void test_idle(Fixture *f, gconstpointer data) {
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.raw");
        g_autofree char *record = record_path(f, "idle");

        bus_make_file(disk, 16 * MiB);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S("idle"), "speed", g_variant_new_uint64(1 * MiB),
                                                    "auto-dismiss", g_variant_new_boolean(FALSE), NULL));
        kill_daemon(f);

        /* It continues, and concludes: kept, with its record, until dismissed. */
        g_autofree char *args = g_strdup_printf("--idle-timeout=1 --state-dir=%s", f->state);
        bus_fixture_start_daemon(&f->bus, args);
        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(&f->bus, "idle", "concluded");
        /* Three idle timeouts: still there. */
        bus_iterate_for(&f->bus, 3 * G_USEC_PER_SEC);
        g_assert_true(bus_name_has_owner(&f->bus));
        g_assert_true(g_file_test(record, G_FILE_TEST_EXISTS));

        bus_job_call(&f->bus, path, "Dismiss");
        bus_wait_for_name(&f->bus, false);
        g_assert_false(g_file_test(record, G_FILE_TEST_EXISTS));
        g_assert_true(g_subprocess_wait(f->bus.daemon, NULL, NULL));
        g_assert_true(g_subprocess_get_if_exited(f->bus.daemon));
        g_assert_cmpint(g_subprocess_get_exit_status(f->bus.daemon), ==, 0);
        g_clear_object(&f->bus.daemon);
}

/* SIGTERM does not cancel: a running job stops where it is and keeps its record, and continues
 * after the restart; a concluded one keeps its record and is back as it was. */
static void test_sigterm(Fixture *f, gconstpointer data) {
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.raw");
        g_autofree char *failed_target = bus_fixture_path(&f->bus, "failed.raw");
        g_autofree char *record = record_path(f, "t"), *failed_record = record_path(f, "failed");

        bus_make_file(disk, 16 * MiB);
        bus_fixture_set_faults(&f->bus, "%s read %d EIO\n", disk, 1 * MiB);
        g_autofree char *failed = bus_backup(&f->bus, disk, failed_target,
                                             bus_opts("job-id", S("failed"), "auto-dismiss", g_variant_new_boolean(FALSE),
                                                      NULL));
        bus_wait_for_status(&f->bus, "failed", "concluded");
        g_autofree char *error = error_of(f, failed);
        bus_fixture_set_faults(&f->bus, "%s", "");

        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S("t"), "speed", g_variant_new_uint64(1 * MiB), NULL));
        g_assert_true(g_file_test(record, G_FILE_TEST_EXISTS));
        g_subprocess_send_signal(f->bus.daemon, SIGTERM);
        g_assert_true(g_subprocess_wait(f->bus.daemon, NULL, NULL));
        g_assert_true(g_subprocess_get_if_exited(f->bus.daemon));
        g_assert_cmpint(g_subprocess_get_exit_status(f->bus.daemon), ==, 0);
        g_clear_object(&f->bus.daemon);
        bus_wait_for_name(&f->bus, false);
        /* Not cancelled: stopped where it was, its record and its unfinished target kept. */
        g_autofree char *running = NULL;
        g_assert_true(g_file_get_contents(record, &running, NULL, NULL));
        g_assert_nonnull(strstr(running, "\nSTATUS=running\n"));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        g_assert_true(g_file_test(failed_record, G_FILE_TEST_EXISTS));
        g_autofree char *text = NULL;
        g_assert_true(g_file_get_contents(failed_record, &text, NULL, NULL));
        g_assert_nonnull(strstr(text, "\nSTATUS=concluded\n"));

        g_string_truncate(f->bus.statuses, 0);
        start_daemon(f, NULL);
        bus_wait_for_status(&f->bus, "failed", "concluded");
        g_autofree char *again = bus_job_path_for_id(&f->bus, "failed");
        g_assert_cmpstr(again, ==, failed);
        g_autofree char *error2 = error_of(f, failed);
        g_assert_cmpstr(error2, ==, error);
        g_autoptr(GVariant) jobs = bus_call(&f->bus, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autoptr(GVariant) list = g_variant_get_child_value(jobs, 0);
        g_assert_cmpuint(g_variant_n_children(list), ==, 2);
        g_autofree char *again2 = bus_job_path_for_id(&f->bus, "t");
        g_assert_cmpstr(again2, ==, path);
        bus_call(&f->bus, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL);
        bus_wait_for_status(&f->bus, "t", "null");
        bus_assert_same_file(disk, target);
        wait_for_gone(f, record);
        bus_job_call(&f->bus, failed, "Dismiss");
        wait_for_gone(f, failed_record);
}

/* A record that cannot be written fails the creation, clearly, and leaves nothing: no job, no
 * target, no record. (A temporary file of the same record, as an interrupted write leaves it,
 * makes the write fail: it is not the daemon's to truncate.) The same id works once it is gone,
 * and in a grouped transaction one member's failure takes the others and their records along. */
static void test_record_fails(Fixture *f, gconstpointer data) {
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.raw");
        g_autofree char *target2 = bus_fixture_path(&f->bus, "target2.raw");
        g_autofree char *record = record_path(f, "x"), *record_y = record_path(f, "y");
        g_autofree char *stray = g_build_filename(f->jobs, ".#0-x.job.tmp", NULL);

        bus_make_file(disk, 4 * MiB);
        write_file(stray, "", -1);
        g_autofree char *message = bus_call_error(&f->bus, MANAGER_PATH, MANAGER_IFACE, "Backup",
                                                  g_variant_new("(ss@a{sv})", disk, target,
                                                                bus_opts("job-id", S("x"), NULL)),
                                                  "org.freedesktop.DBus.Error.Failed");
        g_test_message("%s", message);
        g_assert_nonnull(strstr(message, "Cannot keep a record of the job"));
        g_assert_nonnull(strstr(message, ".#0-x.job.tmp"));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(record, G_FILE_TEST_EXISTS));
        g_autoptr(GVariant) jobs = bus_call(&f->bus, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autoptr(GVariant) list = g_variant_get_child_value(jobs, 0);
        g_assert_cmpuint(g_variant_n_children(list), ==, 0);

        /* A grouped transaction: y is recorded, x is not; neither job nor record stays. */
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&b, "(sss@a{sv})", "backup", disk, target2, bus_opts("job-id", S("y"), NULL));
        g_variant_builder_add(&b, "(sss@a{sv})", "backup", disk, target, bus_opts("job-id", S("x"), NULL));
        g_autofree char *message2 = bus_call_error(
                &f->bus, MANAGER_PATH, MANAGER_IFACE, "Transaction",
                g_variant_new("(a(sssa{sv})@a{sv})", &b, bus_opts("completion-mode", S("grouped"), NULL)),
                "org.freedesktop.DBus.Error.Failed");
        g_assert_nonnull(strstr(message2, "Cannot keep a record of the job"));
        wait_for_gone(f, record_y);
        g_assert_false(g_file_test(target2, G_FILE_TEST_EXISTS));
        g_autoptr(GVariant) jobs2 = bus_call(&f->bus, MANAGER_PATH, MANAGER_IFACE, "ListJobs", NULL, "(a(ossstts))");
        g_autoptr(GVariant) list2 = g_variant_get_child_value(jobs2, 0);
        g_assert_cmpuint(g_variant_n_children(list2), ==, 0);

        g_assert_cmpint(unlink(stray), ==, 0);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S("x"), "auto-dismiss", g_variant_new_boolean(FALSE), NULL));
        g_assert_true(g_file_test(record, G_FILE_TEST_IS_REGULAR));
        bus_wait_for_status(&f->bus, "x", "concluded");
        bus_assert_same_file(disk, target);

        /* A job that succeeded comes back so, its published target untouched. */
        wait_for_record(f, record, "\nSTATUS=concluded\n");
        kill_daemon(f);
        start_daemon(f, NULL);
        bus_wait_for_status(&f->bus, "x", "concluded");
        g_autofree char *error = error_of(f, path);
        g_assert_cmpstr(error, ==, "");
        bus_assert_same_file(disk, target);
        bus_job_call(&f->bus, path, "Dismiss");
        wait_for_gone(f, record);
        bus_assert_same_file(disk, target);
        g_autofree char *hidden = bus_fixture_path(&f->bus, ".target.raw.blockjobd-0-x");
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
}

/* Publishing from the hidden name: a new name is taken only while free; with overwrite the old
 * file is swapped out (as without records); no hidden name is left either way. After a restart,
 * a hidden name that holds another file than the one recorded (replaced, or a symlink) is left
 * alone. */
static void test_hidden(Fixture *f, gconstpointer data) {
        g_autofree char *disk = bus_fixture_path(&f->bus, "disk.raw");
        g_autofree char *target = bus_fixture_path(&f->bus, "target.raw");
        g_autofree char *hidden = bus_fixture_path(&f->bus, ".target.raw.blockjobd-0-h");
        g_autofree char *other = bus_fixture_path(&f->bus, "other");

        bus_make_file(disk, 4 * MiB);
        g_autofree char *p1 = bus_backup(&f->bus, disk, target, bus_opts("job-id", S("h"), NULL));
        bus_wait_for_status(&f->bus, "h", "null");
        bus_assert_same_file(disk, target);
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));

        /* Overwrite: the file at the name is replaced. */
        write_file(target, "old", -1);
        gsize mark = f->bus.statuses->len;
        g_autofree char *p2 = bus_backup(&f->bus, disk, target,
                                         bus_opts("job-id", S("h"), "overwrite", g_variant_new_boolean(TRUE), NULL));
        bus_wait_for_status_since(&f->bus, mark, "h", "null");
        bus_assert_same_file(disk, target);
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        g_assert_cmpint(unlink(target), ==, 0);

        /* Replaced while the daemon was down: not the recorded file, left alone. */
        g_autofree char *p3 = bus_backup(&f->bus, disk, target,
                                         bus_opts("job-id", S("h"), "speed", g_variant_new_uint64(MiB / 4), NULL));
        g_autofree char *record = record_path(f, "h");
        wait_for_record(f, record, "\nSTATUS=running\n");
        kill_daemon(f);
        /* Made before the original goes, so that it cannot reuse its inode number. */
        write_file(other, "someone else's", -1);
        g_assert_cmpint(rename(other, hidden), ==, 0);
        start_daemon(f, NULL);
        bus_wait_for_status(&f->bus, "h", "concluded");
        g_autofree char *text = NULL;
        g_assert_true(g_file_get_contents(hidden, &text, NULL, NULL));
        g_assert_cmpstr(text, ==, "someone else's");

        /* A symlink to the very file: not followed, left alone. */
        kill_daemon(f);
        g_assert_cmpint(rename(hidden, other), ==, 0);
        g_assert_cmpint(symlink(other, hidden), ==, 0);
        start_daemon(f, NULL);
        bus_wait_for_status(&f->bus, "h", "concluded");
        struct stat st;
        g_assert_cmpint(lstat(hidden, &st), ==, 0);
        g_assert_true(S_ISLNK(st.st_mode));
        g_assert_true(g_file_test(other, G_FILE_TEST_IS_REGULAR));
        bus_job_call(&f->bus, p3, "Dismiss");
        wait_for_gone(f, record);
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
}

/* A backup recorded running, then the daemon killed: the job's source is reopened (as its owner)
 * and compared with the record. 'change' does something to the source while the daemon is down;
 * the job comes back concluded with 'expected' (where '@' stands for the source's path) and the
 * source's path in its error, its hidden target gone. */
static void check_source_after_kill(Fixture *f, const char *id, void (*change)(const char *disk),
                                    const char *expected) {
        g_autofree char *name = g_strdup_printf("disk-%s.raw", id);
        g_autofree char *tname = g_strdup_printf("target-%s.raw", id);
        g_autofree char *hname = g_strdup_printf(".target-%s.raw.blockjobd-0-%s", id, id);
        g_autofree char *disk = bus_fixture_path(&f->bus, name);
        g_autofree char *target = bus_fixture_path(&f->bus, tname);
        g_autofree char *hidden = bus_fixture_path(&f->bus, hname);
        g_autofree char *record = record_path(f, id);

        bus_make_file(disk, 64 * MiB);
        g_autofree char *path = bus_backup(&f->bus, disk, target,
                                           bus_opts("job-id", S(id), "speed", g_variant_new_uint64(1 * MiB), NULL));
        wait_for_record(f, record, "\nSTATUS=running\n");
        kill_daemon(f);
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
        change(disk);
        start_daemon(f, NULL);

        bus_wait_for_status(&f->bus, id, "concluded");
        g_autofree char *error = error_of(f, path);
        g_test_message("%s: %s", id, error);
        g_autoptr(GString) want = g_string_new(expected);
        g_string_replace(want, "@", disk, 0);
        g_assert_nonnull(strstr(error, want->str));
        g_assert_nonnull(strstr(error, disk));
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
        wait_for_record(f, record, "\nSTATUS=concluded\n");
        bus_job_call(&f->bus, path, "Dismiss");
        wait_for_gone(f, record);
}

static void grow(const char *disk) {
        g_assert_cmpint(truncate(disk, 65 * MiB), ==, 0);
}

/* Same size, one byte written: the modification time tells. */
static void write_one_byte(const char *disk) {
        int fd = open(disk, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        /* mtime has nanoseconds, but a coarse clock could leave it equal within a tick: the change
         * time moves with it, and either one differing is enough. Make sure one does. */
        struct stat before, after;
        g_assert_cmpint(fstat(fd, &before), ==, 0);
        do {
                g_assert_cmpint(pwrite(fd, "x", 1, 12345), ==, 1);
                g_assert_cmpint(fstat(fd, &after), ==, 0);
        } while (after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec &&
                 after.st_ctim.tv_sec == before.st_ctim.tv_sec && after.st_ctim.tv_nsec == before.st_ctim.tv_nsec);
        g_assert_cmpint(close(fd), ==, 0);
}

static void replace(const char *disk) {
        g_autofree char *tmp = g_strconcat(disk, ".new", NULL);
        bus_make_file(tmp, 64 * MiB);
        g_assert_cmpint(rename(tmp, disk), ==, 0);
}

static void delete(const char *disk) {
        g_assert_cmpint(unlink(disk), ==, 0);
}

/* A backup is a point-in-time copy: a source that changed while the daemon was stopped, was
 * replaced or is gone fails the job with that reason, not a generic one. */
static void test_source_changed(Fixture *f, gconstpointer data) {
        check_source_after_kill(f, "grown", grow,
                                "Source '@' changed while blockjobd was stopped (its size differs from when the job "
                                "was created), so the job cannot continue");
        check_source_after_kill(f, "written", write_one_byte, "Source '@' changed while blockjobd was stopped (its ");
        check_source_after_kill(f, "replaced", replace,
                                "Source '@' was replaced by another file while blockjobd was stopped, so the job "
                                "cannot continue");
        check_source_after_kill(f, "deleted", delete,
                                "The job cannot continue after blockjobd was restarted (its files were opened again "
                                "with the rights of its owner, uid 0): ");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/persist/kill-paused", Fixture, NULL, setup, test_kill_paused, teardown);
        g_test_add("/persist/concluded", Fixture, NULL, setup, test_concluded, teardown);
        g_test_add("/persist/damaged", Fixture, NULL, setup, test_damaged, teardown);
        g_test_add("/persist/idle", Fixture, NULL, setup, test_idle, teardown);
        g_test_add("/persist/sigterm", Fixture, NULL, setup, test_sigterm, teardown);
        g_test_add("/persist/record-fails", Fixture, NULL, setup, test_record_fails, teardown);
        g_test_add("/persist/hidden", Fixture, NULL, setup, test_hidden, teardown);
        g_test_add("/persist/source-changed", Fixture, NULL, setup, test_source_changed, teardown);
        return g_test_run();
}
