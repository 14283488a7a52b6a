/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Descriptors per job, for ten thousand jobs within one RLIMIT_NOFILE: backups of one source
 * into one directory hold one descriptor each (the target) plus, between them all, one for the
 * source and one for the directory. Sharing changes nothing QEMU or another job can see: the
 * source stays locked against writers (qemu-io as the oracle, and a writer in this process) as
 * long as any of the backups is open, and is free once the last one is gone; targets are
 * published where they belong, and nothing is left behind when the jobs go without publishing. */

#include <dirent.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver-open.h"
#include "image.h"
#include "qemu-oracle.h"
#include "shared-fd.h"
#include "tmpfile.h"

#define N_JOBS 8

typedef struct Fixture {
        char *dir;
        char *source;
        char *targets;                  /* the directory the targets go to */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        f->dir = g_dir_make_tmp("blockjobd-job-fds-XXXXXX", &error);
        g_assert_no_error(error);
        f->source = g_build_filename(f->dir, "source.raw", NULL);
        f->targets = g_build_filename(f->dir, "targets", NULL);
        g_assert_cmpint(g_mkdir(f->targets, 0755), ==, 0);
        g_free(oracle_run("qemu-img create -q -f raw %s 4M", f->source));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x5a 0 1M' %s", f->source));
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_free(oracle_run("rm -rf %s", f->dir));
        g_free(f->dir);
        g_free(f->source);
        g_free(f->targets);
}

static unsigned count_entries(const char *path) {
        g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
        unsigned n = 0;

        g_assert_nonnull(d);
        while (g_dir_read_name(d))
                n++;
        return n;
}

static unsigned count_fds(void) {
        /* g_dir_open's own descriptor is not among the names it reads: opendir() happens first,
         * but it shows, so it is taken off. */
        return count_entries("/proc/self/fd") - 1;
}

static Backup *open_backup(Fixture *f, unsigned i, bool named_temp_file) {
        g_autofree char *target = g_strdup_printf("%s/t%u.raw", f->targets, i);
        g_autofree char *error = NULL;
        TestBackupParams p = {
                .source = f->source,
                .target = target,
                .source_format = IMAGE_FORMAT_RAW,
                .named_temp_file = named_temp_file,
        };
        Backup *b = NULL;

        g_assert_cmpint(test_backup_open(&p, &b, &error), ==, 0);
        g_assert_null(error);
        return b;
}

typedef struct Files {
        int fds[8];
        size_t n;
} Files;

static void collect(int fd, const char *entry, const char *label, FileUse use, void *userdata) {
        Files *l = userdata;
        g_assert_cmpuint(l->n, <, G_N_ELEMENTS(l->fds));
        l->fds[l->n++] = fd;
}

static void check_fds_per_job(Fixture *f, bool named_temp_file) {
        Backup *b[N_JOBS];
        Files files[N_JOBS] = {};
        unsigned before, during;

        before = count_fds();
        for (unsigned i = 0; i < N_JOBS; i++) {
                b[i] = open_backup(f, i, named_temp_file);
                backup_list_files(b[i], collect, &files[i]);
        }
        during = count_fds();
        g_test_message("%u backups of one source into one directory: %u descriptors", N_JOBS, during - before);
        /* One per target, one source and one directory between them all. */
        g_assert_cmpuint(during - before, ==, N_JOBS + 2);
        g_assert_cmpuint(shared_fd_count(), ==, 2);

        /* Listed as the reservations see them: the source, then the target's directory. */
        for (unsigned i = 0; i < N_JOBS; i++) {
                g_assert_cmpuint(files[i].n, ==, 2);
                g_assert_cmpint(files[i].fds[0], ==, files[0].fds[0]);
                g_assert_cmpint(files[i].fds[1], ==, files[0].fds[1]);
        }

        /* Gone without publishing (as after an abort): nothing is left in the directory, and the
         * shared descriptors go with the last job. */
        for (unsigned i = 0; i < N_JOBS; i++) {
                backup_free(b[i]);
                g_assert_cmpuint(shared_fd_count(), ==, i + 1 < N_JOBS ? 2 : 0);
        }
        g_assert_cmpuint(count_fds(), ==, before);
        g_assert_cmpuint(count_entries(f->targets), ==, 0);
}

static void test_fds_per_job(Fixture *f, gconstpointer data) {
        check_fds_per_job(f, false);
}

static void test_fds_per_job_named(Fixture *f, gconstpointer data) {
        check_fds_per_job(f, true);
}

static bool qemu_io_can_write(const char *path) {
        g_autofree char *out = NULL, *err = NULL;
        return oracle_try(&out, &err, "qemu-io -f raw -c 'write 0 4k' %s", path) == 0;
}

static void assert_in_process_writer_refused(const char *path) {
        g_autofree char *error = NULL;
        Image *img = NULL;

        g_assert_cmpint(image_open(path, IMAGE_FORMAT_RAW, IMAGE_OPEN_WRITE, &img, &error), ==, -EBUSY);
        g_assert_null(img);
        g_assert_nonnull(strstr(error, "in use by another process"));
}

/* The shared description holds the readers' locks for all of them, until the last one goes. */
static void test_locks_until_last_reader(Fixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Backup *a, *b;
        Image *img = NULL;

        a = open_backup(f, 0, false);
        b = open_backup(f, 1, false);
        g_assert_false(qemu_io_can_write(f->source));
        assert_in_process_writer_refused(f->source);

        backup_free(a);
        g_assert_false(qemu_io_can_write(f->source));
        assert_in_process_writer_refused(f->source);
        /* A reader that lets others write (a mirror's source) takes other locks: a description
         * of its own (the backup's source and directory, and this one). */
        g_assert_cmpint(image_open(f->source, IMAGE_FORMAT_RAW, IMAGE_OPEN_SHARE_WRITE, &img, &error), ==, 0);
        g_assert_cmpuint(shared_fd_count(), ==, 3);
        img = image_close(img);
        g_assert_cmpuint(shared_fd_count(), ==, 2);

        backup_free(b);
        g_assert_cmpuint(shared_fd_count(), ==, 0);
        g_assert_true(qemu_io_can_write(f->source));
        g_free(TAKE_PTR(error));
        g_assert_cmpint(image_open(f->source, IMAGE_FORMAT_RAW, IMAGE_OPEN_WRITE, &img, &error), ==, 0);
        image_close(img);
}

/* A writer first: readers are refused, shared description or not; and a reader that came while
 * nothing was shared does not make a later one skip the check. */
static void test_writer_keeps_readers_out(Fixture *f, gconstpointer data) {
        g_autofree char *error = NULL;
        Image *writer = NULL, *r1 = NULL, *r2 = NULL;
        GSubprocess *qemu;

        g_assert_cmpint(image_open(f->source, IMAGE_FORMAT_RAW, IMAGE_OPEN_WRITE, &writer, &error), ==, 0);
        g_assert_cmpint(image_open(f->source, IMAGE_FORMAT_RAW, 0, &r1, &error), ==, -EBUSY);
        g_assert_cmpuint(shared_fd_count(), ==, 0);
        image_close(writer);

        /* Two readers share; a reader of QEMU's may join them, a writer of QEMU's may not. */
        g_assert_cmpint(image_open(f->source, IMAGE_FORMAT_RAW, 0, &r1, NULL), ==, 0);
        g_assert_cmpint(image_open(f->source, IMAGE_FORMAT_RAW, 0, &r2, NULL), ==, 0);
        g_assert_cmpint(image_fd(r1), ==, image_fd(r2));
        qemu = oracle_qemu_io_hold(f->source, "raw", true);
        oracle_qemu_io_release(qemu);
        g_assert_false(qemu_io_can_write(f->source));
        image_close(r1);
        g_assert_false(qemu_io_can_write(f->source));
        image_close(r2);
        g_assert_true(qemu_io_can_write(f->source));

        /* QEMU writes: our readers are refused, and nothing is left in the table. */
        qemu = oracle_qemu_io_hold(f->source, "raw", false);
        g_free(TAKE_PTR(error));
        g_assert_cmpint(image_open(f->source, IMAGE_FORMAT_RAW, 0, &r1, &error), ==, -EBUSY);
        g_assert_cmpuint(shared_fd_count(), ==, 0);
        oracle_qemu_io_release(qemu);
}

/* The directory is the inode: files published through a shared descriptor of a directory renamed
 * meanwhile land in it under its new name, as with a descriptor of one's own. */
static void test_shared_dir_follows_rename(Fixture *f, gconstpointer data) {
        g_autofree char *moved = g_build_filename(f->dir, "moved", NULL);
        g_autofree char *p0 = NULL, *p1 = NULL;
        TmpFile t[2] = { TMPFILE_NULL, TMPFILE_NULL };
        int dir_fd;

        dir_fd = open(f->targets, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(dir_fd, >=, 0);
        for (unsigned i = 0; i < 2; i++) {
                TmpFile own;
                g_autofree char *path = g_strdup_printf("%s/f%u", f->targets, i);

                g_assert_cmpint(tmpfile_open(&own, path, 0600, true), ==, 0);
                g_assert_cmpint(tmpfile_share_dir(&t[i], dir_fd), ==, 0);
                t[i].fd = TAKE_FD(own.fd);
                t[i].name = TAKE_PTR(own.name);
                tmpfile_close(&own);
        }
        g_assert_cmpint(t[0].dir_fd, ==, t[1].dir_fd);
        g_assert_cmpuint(shared_fd_count(), ==, 1);
        close(dir_fd);

        g_assert_cmpint(g_rename(f->targets, moved), ==, 0);
        g_assert_cmpint(tmpfile_publish(&t[0], -EBADF), ==, 0);
        tmpfile_close(&t[0]);
        g_assert_cmpuint(shared_fd_count(), ==, 1);
        g_assert_cmpint(tmpfile_publish(&t[1], -EBADF), ==, 0);
        tmpfile_close(&t[1]);
        g_assert_cmpuint(shared_fd_count(), ==, 0);

        p0 = g_build_filename(moved, "f0", NULL);
        p1 = g_build_filename(moved, "f1", NULL);
        g_assert_true(g_file_test(p0, G_FILE_TEST_IS_REGULAR));
        g_assert_true(g_file_test(p1, G_FILE_TEST_IS_REGULAR));
        g_assert_cmpint(g_rename(moved, f->targets), ==, 0);
}

/* A hidden name (tmpfile_set_hidden_name()): given once, never over another file; published from
 * there only while it still holds the file; discarded from there. */
static void test_hidden_name(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->targets, "h.img", NULL);
        g_autofree char *hidden = g_build_filename(f->targets, ".h.img.hidden", NULL);
        g_autofree char *other = g_build_filename(f->targets, "other", NULL);
        TmpFile t = TMPFILE_NULL;

        /* Taken: refused, the file stays unnamed. */
        g_assert_true(g_file_set_contents(hidden, "x", -1, NULL));
        g_assert_cmpint(tmpfile_open(&t, path, 0600, true), ==, 0);
        g_assert_cmpint(tmpfile_set_hidden_name(&t, ".h.img.hidden"), ==, -EEXIST);
        g_assert_cmpint(unlink(hidden), ==, 0);
        g_assert_cmpint(tmpfile_set_hidden_name(&t, ".h.img.hidden"), ==, 0);
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));

        /* Swapped for another file: not published; back: published, the hidden name gone. */
        g_assert_cmpint(rename(hidden, other), ==, 0);
        g_assert_true(g_file_set_contents(hidden, "someone else's", -1, NULL));
        g_assert_cmpint(tmpfile_publish(&t, -EBADF), ==, -ESTALE);
        g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
        g_assert_cmpint(rename(other, hidden), ==, 0);
        g_assert_cmpint(tmpfile_publish(&t, -EBADF), ==, 0);
        g_assert_true(g_file_test(path, G_FILE_TEST_IS_REGULAR));
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        tmpfile_close(&t);
        g_assert_cmpint(unlink(path), ==, 0);

        /* Named fallback: renamed to the hidden name; discarded from there. */
        g_assert_cmpint(tmpfile_open(&t, path, 0600, false), ==, 0);
        g_assert_nonnull(t.temp_name);
        g_assert_cmpint(tmpfile_set_hidden_name(&t, ".h.img.hidden"), ==, 0);
        g_assert_cmpstr(t.temp_name, ==, ".h.img.hidden");
        g_assert_true(g_file_test(hidden, G_FILE_TEST_IS_REGULAR));
        tmpfile_discard(&t);
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        g_autoptr(GDir) d = g_dir_open(f->targets, 0, NULL);
        g_assert_null(g_dir_read_name(d));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        if (!oracle_available())
                return g_test_run();

        g_test_add("/job-fds/per-job", Fixture, NULL, fixture_setup, test_fds_per_job, fixture_teardown);
        g_test_add("/job-fds/per-job-named", Fixture, NULL, fixture_setup, test_fds_per_job_named, fixture_teardown);
        g_test_add("/job-fds/locks-until-last-reader", Fixture, NULL, fixture_setup, test_locks_until_last_reader,
                   fixture_teardown);
        g_test_add("/job-fds/writer-keeps-readers-out", Fixture, NULL, fixture_setup, test_writer_keeps_readers_out,
                   fixture_teardown);
        g_test_add("/job-fds/shared-dir-follows-rename", Fixture, NULL, fixture_setup, test_shared_dir_follows_rename,
                   fixture_teardown);
        g_test_add("/job-fds/hidden-name", Fixture, NULL, fixture_setup, test_hidden_name, fixture_teardown);
        return g_test_run();
}
