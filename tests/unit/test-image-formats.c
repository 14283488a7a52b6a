/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Formats: which format each layer of a chain is opened as. Probing never makes the image layer
 * read a file nobody named: the format of a backing file is the one its parent records (version 2
 * images record it too), and a top image that only looks like qcow2 is not followed to its
 * backing file unless its format was given. */

#include <glib/gstdio.h>
#include <string.h>

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

#define FORMATS_TEST(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        FORMATS_TEST("/image-formats/v2-backing-format", test_v2_backing_format);
        return g_test_run();
}
