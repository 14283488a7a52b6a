/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Formats: which format each layer of a chain is opened as. Probing never makes the image layer
 * read a file nobody named: the format of a backing file is the one its parent records (version 2
 * images record it too), and a top image that only looks like qcow2 is not followed to its
 * backing file unless its format was given. */

#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "qemu-oracle.h"

typedef struct Fixture {
        char *dir;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;
        f->dir = g_dir_make_tmp("blockjobd-formats-XXXXXX", &error);
        g_assert_no_error(error);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_free(oracle_run("rm -rf %s", f->dir));
        g_free(f->dir);
}

static char *path_in(Fixture *f, const char *name) {
        return g_build_filename(f->dir, name, NULL);
}

/* A raw image whose content is a qcow2 image: what a guest may write into its disk. */
static char *make_qcow2_lookalike(Fixture *f, const char *name) {
        char *path = path_in(f, name);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", path));
        g_assert_cmpint(truncate(path, 1 << 20), ==, 0);
        return path;
}

/* Reads all of 'path' as blockjobd opened it and compares with what QEMU reads. */
static void assert_reads_as_qemu(Fixture *f, Image *img, const char *path) {
        g_autoptr(GBytes) expected = oracle_read_all(path, f->dir);
        g_autofree uint8_t *buf = g_malloc(image_size(img));

        g_assert_cmpuint(image_size(img), ==, g_bytes_get_size(expected));
        g_assert_cmpint(image_read(img, buf, 0, image_size(img)), ==, 0);
        g_assert_cmpmem(buf, image_size(img), g_bytes_get_data(expected, NULL), g_bytes_get_size(expected));
}

/* `qemu-img create -o compat=0.10 -b base.raw -F raw`: the format is in a header extension of a
 * version 2 image, and it is what the backing file is opened as, even when its content looks
 * like qcow2. */
static void test_v2_backing_format(Fixture *f, gconstpointer data) {
        g_autofree char *base = make_qcow2_lookalike(f, "base.raw");
        g_autofree char *top = path_in(f, "top.qcow2");
        g_autofree char *error = NULL;
        Image *img = NULL;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x5a 512k 64k' %s", top));

        g_assert_cmpint(image_open(top, IMAGE_FORMAT_QCOW2, 0, &img, &error), ==, 0);
        g_assert_nonnull(image_backing(img));
        g_assert_cmpint(image_format(image_backing(img)), ==, IMAGE_FORMAT_RAW);
        g_assert_cmpint(image_chain_depth(img), ==, 2);
        assert_reads_as_qemu(f, img, top);
        image_close(img);
}

static void poke32(const char *path, uint64_t offset, uint32_t v) {
        uint8_t b[4] = { v >> 24, v >> 16, v >> 8, v };
        int fd = open(path, O_WRONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, b, 4, (off_t) offset), ==, 4);
        g_assert_cmpint(close(fd), ==, 0);
}

static void assert_error(int r, int expected_r, const char *error, const char *expected) {
        g_assert_cmpint(r, ==, expected_r);
        g_assert_nonnull(error);
        if (!strstr(error, expected))
                g_error("error \"%s\" does not say \"%s\"", error, expected);
}

/* A guest wrote a qcow2 header naming a host file as backing file into its raw disk (QEMU's
 * CVE-2008-2004). Probed, the disk is refused; given as raw, it is read byte for byte, header
 * and all; given as qcow2 (its owner says so), it is followed. */
static void test_probed_backing_refused(Fixture *f, gconstpointer data) {
        g_autofree char *secret = path_in(f, "secret");
        g_autofree char *disk = path_in(f, "guest.raw");
        g_autofree char *error = NULL, *contents = NULL;
        gsize length;
        Image *img = NULL;
        int r;

        g_assert_true(g_file_set_contents(secret, "HOST-SECRET", -1, NULL));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F raw %s 1M", secret, disk));
        g_assert_cmpint(truncate(disk, 1 << 20), ==, 0);

        r = image_open(disk, IMAGE_FORMAT_PROBE, 0, &img, &error);
        assert_error(r, -EINVAL, error, "looks like a qcow2 image with backing file");
        g_assert_null(img);
        g_assert_nonnull(strstr(error, secret));
        g_assert_nonnull(strstr(error, "pass source-format=qcow2"));

        /* Also for writing, and through a descriptor. */
        g_clear_pointer(&error, g_free);
        r = image_open(disk, IMAGE_FORMAT_PROBE, IMAGE_OPEN_WRITE, &img, &error);
        assert_error(r, -EINVAL, error, "looks like a qcow2 image");
        g_clear_pointer(&error, g_free);
        int fd = open(disk, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        r = image_open_fd(fd, disk, IMAGE_FORMAT_PROBE, 0, &img, &error);
        assert_error(r, -EINVAL, error, "looks like a qcow2 image");
        close(fd);

        /* As raw: what the guest sees. */
        g_assert_cmpint(image_open(disk, IMAGE_FORMAT_RAW, 0, &img, NULL), ==, 0);
        g_assert_cmpint(image_format(img), ==, IMAGE_FORMAT_RAW);
        g_assert_false(image_format_probed(img));
        g_assert_null(image_backing(img));
        g_assert_true(g_file_get_contents(disk, &contents, &length, NULL));
        g_autofree uint8_t *buf = g_malloc(length);
        g_assert_cmpuint(image_size(img), ==, length);
        g_assert_cmpint(image_read(img, buf, 0, length), ==, 0);
        g_assert_cmpmem(buf, length, contents, length);
        image_close(img);

        /* Probed without its chain: nothing is followed, so nothing to refuse. */
        g_assert_cmpint(image_open(disk, IMAGE_FORMAT_PROBE, IMAGE_OPEN_NO_BACKING, &img, NULL), ==, 0);
        g_assert_cmpint(image_format(img), ==, IMAGE_FORMAT_QCOW2);
        g_assert_true(image_format_probed(img));
        g_assert_cmpstr(image_backing_name(img), ==, secret);
        g_assert_cmpint(image_backing_format(img), ==, IMAGE_FORMAT_RAW);
        image_close(img);

        /* Given as qcow2: its owner says it is one. */
        g_assert_cmpint(image_open(disk, IMAGE_FORMAT_QCOW2, 0, &img, NULL), ==, 0);
        g_assert_cmpint(image_chain_depth(img), ==, 2);
        image_close(img);

        /* A probed qcow2 image without backing file is fine, and says it was probed. */
        g_autofree char *alone = path_in(f, "alone.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", alone));
        g_assert_cmpint(image_open(alone, IMAGE_FORMAT_PROBE, 0, &img, NULL), ==, 0);
        g_assert_cmpint(image_format(img), ==, IMAGE_FORMAT_QCOW2);
        g_assert_true(image_format_probed(img));
        image_close(img);
}

/* A chain top → mid → base (qcow2, qcow2, raw) whose mid records no format for base, as old
 * qemu-img made them: base is not guessed. */
static void make_unrecorded_chain(Fixture *f, char **ret_top, char **ret_base) {
        g_autofree char *mid = path_in(f, "mid.qcow2");
        char *base = path_in(f, "base.raw"), *top = path_in(f, "top.qcow2");

        g_free(oracle_run("qemu-img create -q -f raw %s 1M", base));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x42 0 64k' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.raw -F raw %s", mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 %s", top));
        /* The backing format extension (the first, at 112) becomes one nobody knows. */
        poke32(mid, 112, 0x12345678);
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", mid);
        g_assert_nonnull(strstr(info, "\"backing-filename\": \"base.raw\""));
        g_assert_null(strstr(info, "backing-filename-format"));
        *ret_top = top;
        *ret_base = base;
}

static void test_unrecorded_backing_format(Fixture *f, gconstpointer data) {
        g_autofree char *top = NULL, *base = NULL, *error = NULL;
        Image *img = NULL;
        struct stat st;
        int r;

        make_unrecorded_chain(f, &top, &base);
        g_assert_cmpint(stat(base, &st), ==, 0);

        r = image_open(top, IMAGE_FORMAT_QCOW2, 0, &img, &error);
        assert_error(r, -EINVAL, error, "does not record the format of its backing file 'base.raw'");
        g_assert_nonnull(strstr(error, "qemu-img rebase -u -b base.raw -F FORMAT"));
        g_assert_null(img);

        /* Without the chain, the name alone. */
        g_assert_cmpint(image_open(top, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING, &img, NULL), ==, 0);
        image_close(img);

        /* The caller knows the base's format (commit's or stream's base-format). */
        ImageOpenOptions o = { .base = &st, .base_format = IMAGE_FORMAT_RAW };
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(image_open_full(top, IMAGE_FORMAT_QCOW2, 0, &o, &img, &error), ==, 0);
        g_assert_cmpint(image_chain_depth(img), ==, 3);
        g_assert_cmpint(image_format(image_backing(image_backing(img))), ==, IMAGE_FORMAT_RAW);
        assert_reads_as_qemu(f, img, top);
        image_close(img);

        /* Knowing another file's format does not help. */
        struct stat other;
        g_assert_cmpint(stat(top, &other), ==, 0);
        o.base = &other;
        g_clear_pointer(&error, g_free);
        r = image_open_full(top, IMAGE_FORMAT_QCOW2, 0, &o, &img, &error);
        assert_error(r, -EINVAL, error, "does not record the format");

        /* A format given that differs from a recorded one. */
        g_autofree char *mid = path_in(f, "mid.qcow2");
        g_assert_cmpint(stat(mid, &other), ==, 0);
        o = (ImageOpenOptions) { .base = &other, .base_format = IMAGE_FORMAT_RAW };
        g_clear_pointer(&error, g_free);
        r = image_open_full(top, IMAGE_FORMAT_QCOW2, 0, &o, &img, &error);
        assert_error(r, -EINVAL, error, "is recorded as a qcow2 image, but was given as raw");
        /* ... and the same one is fine (base itself still needs its own). */
        o.base_format = IMAGE_FORMAT_QCOW2;
        g_clear_pointer(&error, g_free);
        r = image_open_full(top, IMAGE_FORMAT_QCOW2, 0, &o, &img, &error);
        assert_error(r, -EINVAL, error, "does not record the format of its backing file 'base.raw'");

        /* Where the chain stops above base, base's format does not matter. */
        g_assert_cmpint(stat(base, &st), ==, 0);
        o = (ImageOpenOptions) { .stop_before = &st };
        g_assert_cmpint(image_open_full(top, IMAGE_FORMAT_QCOW2, 0, &o, &img, NULL), ==, 0);
        g_assert_cmpint(image_chain_depth(img), ==, 2);
        image_close(img);
}

#define FORMATS_TEST(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        FORMATS_TEST("/image-formats/v2-backing-format", test_v2_backing_format);
        FORMATS_TEST("/image-formats/probed-backing-refused", test_probed_backing_refused);
        FORMATS_TEST("/image-formats/unrecorded-backing-format", test_unrecorded_backing_format);
        return g_test_run();
}
