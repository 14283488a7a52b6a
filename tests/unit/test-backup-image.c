/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The backup driver on the image layer: qcow2 sources with backing chains and compressed
 * clusters, sync=full and sync=top, checked against the oracle; and what it refuses. */

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "backup.h"
#include "driver-fixture.h"
#include "file-util.h"
#include "qemu-oracle.h"

static Job *start(Fixture *f, const char *source, bool sync_top) {
        BackupParams bp = { .source = source, .target = f->target, .sync_top = sync_top };
        g_autofree char *error = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Backup *b = NULL;

        g_assert_cmpint(backup_open(&bp, &b, &error), ==, 0);
        g_assert_null(error);
        p.driver = &backup_driver;
        p.driver_data = b;
        g_assert_cmpint(job_create(f->loop.registry, &p, &f->job, NULL), ==, 0);
        job_progress_set_remaining(f->job, backup_size(b));
        job_start(f->job);
        return f->job;
}

static char *make_chain(Fixture *f) {
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        g_autofree char *mid = g_build_filename(f->dir, "mid.qcow2", NULL);
        char *top = g_build_filename(f->dir, "top.qcow2", NULL);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 16M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 6M' -c 'write -P 0x12 12M 1M' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x21 1M 2M' -c 'write -z 4M 1M' %s", mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x31 2M 100k' -c 'write -P 0x32 14M 3k' %s", top));
        return top;
}

static void assert_target_is(Fixture *f, const char *image) {
        g_autoptr(GBytes) expected = oracle_read_all(image, f->dir);
        g_autofree char *got = NULL;
        gsize length;

        g_assert_true(g_file_get_contents(f->target, &got, &length, NULL));
        g_assert_cmpuint(length, ==, g_bytes_get_size(expected));
        g_assert_true(memcmp(got, g_bytes_get_data(expected, NULL), length) == 0);
}

static void test_chain_full(Fixture *f, gconstpointer data) {
        g_autofree char *top = make_chain(f);

        start(f, top, false);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running waiting pending concluded null ");
        /* The whole chain, flattened, as QEMU reads it. */
        assert_target_is(f, top);
        /* Whatever reads as zeroes stayed a hole. */
        g_autoptr(GArray) map = oracle_map(f->target);
        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (e->start >= 6 * MiB && e->start + e->length <= 12 * MiB)
                        g_assert_false(e->data);
        }
}

static void test_chain_top(Fixture *f, gconstpointer data) {
        g_autofree char *top = make_chain(f);
        g_autofree char *alone = g_build_filename(f->dir, "top-alone.qcow2", NULL);

        start(f, top, true);
        test_loop_run_until_empty(&f->loop);

        /* Only what the top image holds: the top read without its backing file. */
        g_free(oracle_run("cp %s %s", top, alone));
        g_free(oracle_run("qemu-img rebase -u -b '' %s", alone));
        assert_target_is(f, alone);
}

static void test_compressed(Fixture *f, gconstpointer data) {
        g_autofree char *comp = g_build_filename(f->dir, "comp.qcow2", NULL);

        make_data_file(f->source, 4 * MiB);
        g_free(oracle_run("qemu-img convert -q -c -O qcow2 -f raw %s %s", f->source, comp));
        start(f, comp, false);
        test_loop_run_until_empty(&f->loop);
        assert_same_content(f->source, f->target);
}

static void assert_open_fails(const char *source, const char *target, bool overwrite, const char *expected) {
        BackupParams bp = { .source = source, .target = target, .overwrite = overwrite };
        g_autofree char *error = NULL;
        Backup *b = NULL;

        g_assert_cmpint(backup_open(&bp, &b, &error), <, 0);
        g_assert_null(b);
        if (!strstr(error, expected))
                g_error("\"%s\" does not say \"%s\"", error, expected);
}

static void test_refusals(Fixture *f, gconstpointer data) {
        g_autofree char *top = make_chain(f), *base = g_build_filename(f->dir, "base.qcow2", NULL);
        g_autoptr(GError) error = NULL;
        GSubprocess *writer;

        /* A backing file of the source, even with overwrite: that would change the source. */
        assert_open_fails(top, base, true, "is a backing file of the source");

        /* A source that someone writes cannot give a point-in-time copy. */
        writer = g_subprocess_new(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_SILENCE |
                                          G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                                  &error, "qemu-io", "-f", "qcow2", top, NULL);
        g_assert_no_error(error);
        g_autofree char *expected = g_strdup_printf("Image '%s' is in use by another process", top);
        for (int i = 0;; i++) {
                BackupParams bp = { .source = top, .target = f->target };
                g_autofree char *message = NULL;
                Backup *b = NULL;
                if (backup_open(&bp, &b, &message) < 0 && strstr(message, expected))
                        break;
                backup_free(b);
                g_assert_cmpint(i, <, 1000);
                g_usleep(10 * 1000);
        }
        g_assert_true(g_output_stream_close(g_subprocess_get_stdin_pipe(writer), NULL, NULL));
        g_assert_true(g_subprocess_wait(writer, NULL, NULL));
        g_object_unref(writer);

        /* Nothing was left behind by any of this. */
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
}

#define BACKUP_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        BACKUP_TEST("/backup-image/chain-sync-full", test_chain_full);
        BACKUP_TEST("/backup-image/chain-sync-top", test_chain_top);
        BACKUP_TEST("/backup-image/compressed", test_compressed);
        BACKUP_TEST("/backup-image/refusals", test_refusals);
        return g_test_run();
}
