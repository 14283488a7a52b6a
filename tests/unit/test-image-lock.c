/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* QEMU's image locks, both ways: blockjobd refuses an image that qemu-io has open for writing
 * (unless it only reads and lets others write, as a mirror's source does), and QEMU's tools
 * refuse an image that blockjobd is writing. */

#include <fcntl.h>
#include <gio/gio.h>
#include <unistd.h>

#include "image.h"
#include "qemu-oracle.h"

typedef struct Fixture {
        char *dir;
        char *qcow2;
        char *raw;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        f->dir = g_dir_make_tmp("blockjobd-lock-XXXXXX", &error);
        g_assert_no_error(error);
        f->qcow2 = g_build_filename(f->dir, "a.qcow2", NULL);
        f->raw = g_build_filename(f->dir, "a.raw", NULL);
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", f->qcow2));
        g_free(oracle_run("qemu-img create -q -f raw %s 4M", f->raw));
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_free(oracle_run("rm -rf %s", f->dir));
        g_free(f->dir);
        g_free(f->qcow2);
        g_free(f->raw);
}




static void assert_open_refused(const char *path, unsigned flags, const char *expected) {
        g_autofree char *error = NULL, *full = g_strdup_printf("Image '%s' is in use by another process: %s", path, expected);
        Image *img = NULL;

        g_assert_cmpint(image_open(path, IMAGE_FORMAT_PROBE, flags, &img, &error), ==, -EBUSY);
        g_assert_null(img);
        g_assert_cmpstr(error, ==, full);
}

static void check_qemu_writer(const char *path, const char *format, const char *write_refusal) {
        GSubprocess *writer = oracle_qemu_io_hold(path, format, false);
        Image *img = NULL;

        /* Someone writes: neither writing nor a consistent read is possible... */
        assert_open_refused(path, IMAGE_OPEN_WRITE, write_refusal);
        assert_open_refused(path, 0, "failed to get shared \"write\" lock");
        /* ...but a reader that lets others write (a mirror's source) may. */
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_PROBE, IMAGE_OPEN_SHARE_WRITE, &img, NULL), ==, 0);
        image_close(img);

        oracle_qemu_io_release(writer);
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_PROBE, IMAGE_OPEN_WRITE, &img, NULL), ==, 0);
        image_close(img);
}

static void test_qemu_writes_qcow2(Fixture *f, gconstpointer data) {
        check_qemu_writer(f->qcow2, "qcow2", "failed to get \"write\" lock");
}

static void test_qemu_writes_raw(Fixture *f, gconstpointer data) {
        /* Over raw, qemu-io lets others write: what stops us is that it writes itself. */
        check_qemu_writer(f->raw, "raw", "failed to get shared \"write\" lock");
}

static void test_qemu_reads(Fixture *f, gconstpointer data) {
        GSubprocess *reader = oracle_qemu_io_hold(f->qcow2, "qcow2", true);
        Image *img = NULL;

        /* Readers get along; a writer does not get in. */
        g_assert_cmpint(image_open(f->qcow2, IMAGE_FORMAT_PROBE, 0, &img, NULL), ==, 0);
        image_close(img);
        assert_open_refused(f->qcow2, IMAGE_OPEN_WRITE, "failed to get \"write\" lock");
        oracle_qemu_io_release(reader);
}

static void test_we_write(Fixture *f, gconstpointer data) {
        g_autofree char *out = NULL, *err = NULL;
        Image *img = NULL;

        g_assert_cmpint(image_open(f->qcow2, IMAGE_FORMAT_PROBE, IMAGE_OPEN_WRITE, &img, NULL), ==, 0);

        /* QEMU's tools keep out, with QEMU's own words, and say why. */
        g_assert_cmpint(oracle_try(&out, &err, "qemu-io -f qcow2 -c 'write 0 512' %s", f->qcow2), !=, 0);
        g_assert_nonnull(strstr(err, "Failed to get \"write\" lock"));
        g_assert_nonnull(strstr(err, "Is another process using the image"));
        g_free(err);
        err = NULL;
        g_free(out);
        out = NULL;
        g_assert_cmpint(oracle_try(&out, &err, "qemu-img info %s", f->qcow2), !=, 0);
        g_assert_nonnull(strstr(err, "Failed to get shared \"write\" lock"));
        /* ...unless told to share, as -U does. */
        g_free(oracle_run("qemu-img info -U %s", f->qcow2));

        /* Two writers in one process exclude each other too (the locks are per open file). */
        Image *second = NULL;
        assert_open_refused(f->qcow2, IMAGE_OPEN_WRITE, "failed to get \"write\" lock");
        g_assert_null(second);

        image_close(img);
        g_free(oracle_run("qemu-io -f qcow2 -c 'write 0 512' %s", f->qcow2));
}

static void test_no_lock(Fixture *f, gconstpointer data) {
        GSubprocess *writer = oracle_qemu_io_hold(f->qcow2, "qcow2", false);
        Image *img = NULL;

        /* Without locks (tests, fuzzing) nothing is checked, and nothing is left held. */
        g_assert_cmpint(image_open(f->qcow2, IMAGE_FORMAT_PROBE, IMAGE_OPEN_NO_LOCK, &img, NULL), ==, 0);
        image_close(img);
        oracle_qemu_io_release(writer);
        g_assert_false(oracle_lock_byte_held(f->qcow2, 100));
        g_assert_false(oracle_lock_byte_held(f->qcow2, 201));
}

#define LOCK_TEST(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        LOCK_TEST("/image-lock/qemu-writes-qcow2", test_qemu_writes_qcow2);
        LOCK_TEST("/image-lock/qemu-writes-raw", test_qemu_writes_raw);
        LOCK_TEST("/image-lock/qemu-reads", test_qemu_reads);
        LOCK_TEST("/image-lock/we-write", test_we_write);
        LOCK_TEST("/image-lock/no-lock", test_no_lock);
        return g_test_run();
}
