/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Crash safety: a child process writes an image as hard as it can (new clusters, refcount blocks,
 * refcount table moves, copies of clusters shared with a snapshot, zeroes, discards) and is
 * killed with SIGKILL at varying moments; `qemu-img check` must find no corruption after any of
 * them (leaked clusters are allowed, and reclaimed between rounds), and the image must open and
 * be written again. */

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image.h"
#include "qemu-oracle.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)
#define ROUNDS 10

/* The child: writes until killed. */
G_GNUC_NORETURN static void write_forever(const char *path, guint32 seed) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
        g_autofree uint8_t *buf = g_malloc(512 * 1024);
        char *error = NULL;
        Image *img = NULL;

        if (image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &img, &error) < 0) {
                g_printerr("child: %s\n", error);
                _exit(2);
        }
        for (unsigned i = 0;; i++) {
                uint64_t size = image_size(img);
                uint64_t len = g_rand_int_range(rand, 1, 512 * 1024);
                uint64_t off = g_rand_int_range(rand, 0, (gint32) (size - len));
                int r;

                memset(buf, (int) (i & 0xff), len);
                switch (g_rand_int_range(rand, 0, 10)) {
                case 0:
                        r = image_write_zeroes(img, off, len);
                        break;
                case 1:
                        r = image_discard(img, off, len);
                        break;
                default:
                        r = image_write(img, buf, off, len);
                        break;
                }
                if (r >= 0 && i % 5 == 0)
                        r = image_flush(img);
                if (r < 0) {
                        g_printerr("child: %s\n", image_error(img));
                        _exit(3);
                }
        }
}

static void crash_rounds(const char *path) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(7);

        for (int round = 0; round < ROUNDS; round++) {
                g_autofree char *out = NULL, *err = NULL;
                int status;
                pid_t pid;

                pid = fork();
                g_assert_cmpint(pid, >=, 0);
                if (pid == 0)
                        write_forever(path, (guint32) round);

                g_usleep(g_rand_int_range(rand, 20, 400) * 1000);
                g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
                g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
                if (!WIFSIGNALED(status))
                        g_error("round %d: the writer ended by itself (status %d)", round, status);

                /* Leaks at worst (exit 3), never corruption (exit 2). */
                status = oracle_try(&out, &err, "qemu-img check %s", path);
                if (status != 0 && status != 3)
                        g_error("round %d: qemu-img check exit %d\n%s%s", round, status, out, err);
                g_test_message("round %d: %s", round, status == 0 ? "clean" : "leaks only");

                /* Reclaim the leaks, so that the next round starts from a clean image. */
                if (status == 3)
                        g_free(oracle_run("qemu-img check -q -r leaks %s", path));
        }
}

static void test_crash(gconstpointer data) {
        const char *shape = data;
        g_autoptr(GError) error = NULL;
        g_autofree char *dir = g_dir_make_tmp("blockjobd-crash-XXXXXX", &error);
        g_autofree char *path = g_build_filename(dir, "crash.qcow2", NULL);
        g_autofree char *base = g_build_filename(dir, "base.qcow2", NULL);

        g_assert_no_error(error);
        if (g_str_equal(shape, "small-clusters")) {
                /* Tiny clusters and wide counts: refcount blocks and table moves all the time. */
                ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = 24 * MiB, .cluster_size = 512, .refcount_bits = 64 };
                g_autofree char *message = NULL;
                g_assert_cmpint(image_create(path, &p, &message), ==, 0);
        } else if (g_str_equal(shape, "snapshot")) {
                /* Clusters shared with a snapshot: every write copies. */
                g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 %s 24M", path));
                g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 1 0 24M' %s", path));
                g_free(oracle_run("qemu-img snapshot -c s1 %s", path));
        } else {
                /* An overlay: partial writes copy from the backing file. */
                g_free(oracle_run("qemu-img create -q -f qcow2 %s 24M", base));
                g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 2 0 20M' %s", base));
                g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=16384 -b base.qcow2 -F qcow2 %s", path));
        }

        crash_rounds(path);
        g_free(oracle_run("rm -rf %s", dir));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_data_func("/image-crash/small-clusters", "small-clusters", test_crash);
        g_test_add_data_func("/image-crash/snapshot", "snapshot", test_crash);
        g_test_add_data_func("/image-crash/overlay", "overlay", test_crash);
        return g_test_run();
}
