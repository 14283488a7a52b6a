/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A backing chain opened from descriptors (ImageChainFds): what a caller passes, or what the
 * helper opened with the caller's rights. The layers come from the descriptors, never from the
 * names in the headers; a chain that needs a file that was not passed is refused, and so is a
 * layer to be written whose descriptor is read-only. */

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "qemu-oracle.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)

typedef struct Chain {
        char *dir;
        char *paths[3];         /* top, mid, base */
        int fds[3];
} Chain;

/* base <- mid <- top, each with its own pattern somewhere, opened read-only. */
static void chain_make(Chain *c, int mode) {
        static const char *const names[] = { "top.qcow2", "mid.qcow2", "base.qcow2" };
        g_autoptr(GError) error = NULL;

        c->dir = g_dir_make_tmp("blockjobd-fds-XXXXXX", &error);
        g_assert_no_error(error);
        for (unsigned i = 0; i < 3; i++)
                c->paths[i] = g_build_filename(c->dir, names[i], NULL);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", c->paths[2]));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x31 0 4M' %s", c->paths[2]));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", c->paths[1]));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x32 1M 1M' %s", c->paths[1]));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 %s", c->paths[0]));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x33 1536k 64k' %s", c->paths[0]));

        for (unsigned i = 0; i < 3; i++) {
                c->fds[i] = open(c->paths[i], mode | O_CLOEXEC);
                g_assert_cmpint(c->fds[i], >=, 0);
        }
}

static void chain_free(Chain *c) {
        for (unsigned i = 0; i < 3; i++) {
                close(c->fds[i]);
                g_free(c->paths[i]);
        }
        g_free(oracle_run("rm -rf %s", c->dir));
        g_free(c->dir);
}

static GBytes *read_all(Image *img) {
        gsize size = image_size(img);
        uint8_t *buf = g_malloc(size);

        g_assert_cmpint(image_read(img, buf, 0, size), ==, 0);
        return g_bytes_new_take(buf, size);
}

/* The same content as the chain opened by name, even once the names are gone. */
static void test_reads_like_the_named_chain(void) {
        g_autofree char *error = NULL;
        g_autoptr(GBytes) by_name = NULL, by_fd = NULL;
        Image *img = NULL;
        Chain c;

        chain_make(&c, O_RDONLY);
        g_assert_cmpint(image_open(c.paths[0], IMAGE_FORMAT_QCOW2, 0, &img, &error), ==, 0);
        by_name = read_all(img);
        image_close(img);

        /* Nothing is opened by name: the files may as well not be there any more. */
        for (unsigned i = 0; i < 3; i++)
                g_assert_cmpint(g_unlink(c.paths[i]), ==, 0);

        ImageChainFds fds = { .fds = c.fds, .n = 3 };
        ImageOpenOptions o = { .fds = &fds };
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, 0, &o, &img, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpint(image_chain_depth(img), ==, 3);
        /* Each layer is called by the name its parent records, resolved as usual. */
        g_assert_cmpstr(image_path(image_backing(img)), ==, c.paths[1]);
        by_fd = read_all(img);
        g_assert_true(g_bytes_equal(by_name, by_fd));
        image_close(img);
        chain_free(&c);
}

/* A chain that names more files than were passed: refused, naming the missing one. Not even a
 * file that exists under that name is opened. */
static void test_missing_backing_file_refused(void) {
        g_autofree char *error = NULL;
        Image *img = NULL;
        Chain c;

        chain_make(&c, O_RDONLY);
        ImageChainFds fds = { .fds = c.fds, .n = 2 };
        ImageOpenOptions o = { .fds = &fds };
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, 0, &o, &img, &error), ==, -EPERM);
        g_assert_null(img);
        g_assert_nonnull(strstr(error, "base.qcow2' of '"));
        g_assert_nonnull(strstr(error, "was not passed (the chain has 2 files)"));

        g_clear_pointer(&error, g_free);
        ImageChainFds none = { .fds = c.fds, .n = 0 };
        o.fds = &none;
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, 0, &o, &img, &error), ==, -EPERM);
        g_autofree char *expected = g_strdup_printf("No descriptor was passed for '%s'", c.paths[0]);
        g_assert_cmpstr(error, ==, expected);

        /* Without its backing file, as asked: the top layer alone is fine. */
        g_clear_pointer(&error, g_free);
        ImageChainFds one = { .fds = c.fds, .n = 1 };
        o.fds = &one;
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING, &o, &img, &error), ==, 0);
        g_assert_cmpint(image_chain_depth(img), ==, 1);
        image_close(img);
        chain_free(&c);
}

/* Writing needs a descriptor open for writing, and reading one open for reading. */
static void test_access_mode_checked(void) {
        g_autofree char *error = NULL;
        Image *img = NULL;
        Chain c;

        chain_make(&c, O_RDONLY);
        ImageChainFds fds = { .fds = c.fds, .n = 3 };
        ImageOpenOptions o = { .fds = &fds };
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &o, &img, &error), ==, -EACCES);
        g_assert_nonnull(strstr(error, "is not open for writing"));

        /* A writable layer further down (as commit asks for): the same. */
        g_clear_pointer(&error, g_free);
        struct stat st;
        g_assert_cmpint(fstat(c.fds[2], &st), ==, 0);
        o.writable = &st;
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, 0, &o, &img, &error), ==, -EACCES);
        g_assert_nonnull(strstr(error, "base.qcow2' is not open for writing"));
        chain_free(&c);

        g_clear_pointer(&error, g_free);
        chain_make(&c, O_WRONLY);
        o = (ImageOpenOptions) { .fds = &fds };
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &o, &img, &error), ==, -EACCES);
        g_assert_nonnull(strstr(error, "is not open for reading"));
        chain_free(&c);

        /* Read-write descriptors: writing works, and goes where the descriptor points. */
        g_clear_pointer(&error, g_free);
        chain_make(&c, O_RDWR);
        o = (ImageOpenOptions) { .fds = &fds };
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &o, &img, &error), ==, 0);
        g_assert_cmpint(image_write(img, "blockjobd", 0, 9), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        /* The image holds its locks on a description of its own: a second writer from the same
         * descriptors is refused, as one by name would be... */
        Image *second = NULL;
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &o, &second, &error), ==, -EBUSY);
        image_close(img);
        /* ...and once it is closed, the locks are gone, though the caller's descriptor is open. */
        g_autofree char *out = oracle_run("qemu-io -f qcow2 -c 'read -v 0 9' %s", c.paths[0]);
        g_assert_nonnull(strstr(out, "blockjobd"));
        chain_free(&c);
}

/* Stopping before a layer, as commit opens the part above its base, works the same from
 * descriptors: the layer is recognized by its file. */
static void test_stop_before(void) {
        g_autofree char *error = NULL;
        Image *img = NULL;
        struct stat st;
        Chain c;

        chain_make(&c, O_RDONLY);
        g_assert_cmpint(fstat(c.fds[1], &st), ==, 0);
        ImageChainFds fds = { .fds = c.fds, .n = 3 };
        ImageOpenOptions o = { .fds = &fds, .stop_before = &st };
        g_assert_cmpint(image_open_full(c.paths[0], IMAGE_FORMAT_QCOW2, 0, &o, &img, &error), ==, 0);
        g_assert_cmpint(image_chain_depth(img), ==, 1);
        image_close(img);
        chain_free(&c);
}

/* A FIFO where an image should be: refused at once, by name or as a descriptor, never waited on
 * for a writer. */
static void test_fifo_refused(void) {
        g_autoptr(GError) gerror = NULL;
        g_autofree char *dir = g_dir_make_tmp("blockjobd-fds-XXXXXX", &gerror);
        g_autofree char *fifo = g_build_filename(dir, "fifo", NULL);
        g_autofree char *error = NULL;
        Image *img = NULL;

        g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
        g_assert_cmpint(image_open(fifo, IMAGE_FORMAT_PROBE, 0, &img, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "is neither a regular file nor a block device"));

        int fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        ImageChainFds fds = { .fds = &fd, .n = 1 };
        ImageOpenOptions o = { .fds = &fds };
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(image_open_full(fifo, IMAGE_FORMAT_PROBE, 0, &o, &img, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "is neither a regular file nor a block device"));
        close(fd);
        g_free(oracle_run("rm -rf %s", dir));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        if (!oracle_available())
                return 1;

        g_test_add_func("/image-fds/reads-like-the-named-chain", test_reads_like_the_named_chain);
        g_test_add_func("/image-fds/missing-backing-file-refused", test_missing_backing_file_refused);
        g_test_add_func("/image-fds/access-mode-checked", test_access_mode_checked);
        g_test_add_func("/image-fds/stop-before", test_stop_before);
        g_test_add_func("/image-fds/fifo-refused", test_fifo_refused);
        return g_test_run();
}
