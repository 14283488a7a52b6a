/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The backup driver on the image layer: qcow2 sources with backing chains and compressed
 * clusters, sync=full and sync=top, checked against the oracle; and what it refuses. */

#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>

#include "driver-open.h"
#include "driver-fixture.h"
#include "file-util.h"
#include "qemu-oracle.h"

/* The format of a source, as its caller knows it: blockjobd follows no backing file of an image
 * whose format it had to guess. */
static ImageFormat format_of(const char *source) {
        return g_str_has_suffix(source, ".qcow2") ? IMAGE_FORMAT_QCOW2 : IMAGE_FORMAT_PROBE;
}

static Job *start(Fixture *f, const char *source, bool sync_top, ImageFormat format) {
        TestBackupParams bp = { .source = source, .source_format = format_of(source), .target = f->target,
                                .sync_top = sync_top, .target_format = format };
        g_autofree char *error = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Backup *b = NULL;

        g_assert_cmpint(test_backup_open(&bp, &b, &error), ==, 0);
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

/* The target reads as 'image' does, is of the format, and (if qcow2) passes qemu-img check. */
static void assert_target_is(Fixture *f, const char *image, const char *format) {
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", f->target);
        g_autofree char *expected_format = g_strdup_printf("\"format\": \"%s\"", format);
        g_autofree char *out = NULL, *err = NULL;

        g_assert_nonnull(strstr(info, expected_format));
        if (oracle_try(&out, &err, "qemu-img compare -U %s %s", f->target, image) != 0)
                g_error("%s differs from %s: %s%s", f->target, image, out, err);
        if (g_str_equal(format, "qcow2"))
                g_free(oracle_run("qemu-img check -U %s", f->target));
}

static void run_to_end(Fixture *f) {
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running waiting pending concluded null ");
        g_string_truncate(f->events, 0);
}

static void test_chain_full(Fixture *f, gconstpointer data) {
        g_autofree char *top = make_chain(f);

        /* The whole chain, flattened, as QEMU reads it: a qcow2 image by default... */
        start(f, top, false, IMAGE_FORMAT_PROBE);
        run_to_end(f);
        assert_target_is(f, top, "qcow2");
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", f->target);
        g_assert_null(strstr(info, "backing-filename"));
        g_assert_cmpint(g_unlink(f->target), ==, 0);

        /* ...or raw, where whatever reads as zeroes stays a hole. */
        start(f, top, false, IMAGE_FORMAT_RAW);
        run_to_end(f);
        assert_target_is(f, top, "raw");
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
        g_autofree char *mid = g_build_filename(f->dir, "mid.qcow2", NULL);

        /* A qcow2 copy of the top layer, on the same backing file: it reads as the source. */
        start(f, top, true, IMAGE_FORMAT_PROBE);
        run_to_end(f);
        assert_target_is(f, top, "qcow2");
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", f->target);
        g_autofree char *backing = g_strdup_printf("\"backing-filename\": \"%s\"", mid);
        g_assert_nonnull(strstr(info, backing));
        g_assert_cmpint(g_unlink(f->target), ==, 0);

        /* Raw: only what the top image holds, as the top reads without its backing file. */
        start(f, top, true, IMAGE_FORMAT_RAW);
        run_to_end(f);
        g_free(oracle_run("cp %s %s", top, alone));
        g_free(oracle_run("qemu-img rebase -u -b '' %s", alone));
        assert_target_is(f, alone, "raw");
}

static void test_compressed(Fixture *f, gconstpointer data) {
        g_autofree char *comp = g_build_filename(f->dir, "comp.qcow2", NULL);

        make_data_file(f->source, 4 * MiB);
        g_free(oracle_run("qemu-img convert -q -c -O qcow2 -f raw %s %s", f->source, comp));
        start(f, comp, false, IMAGE_FORMAT_PROBE);
        run_to_end(f);
        assert_target_is(f, comp, "qcow2");
}

static void test_raw_to_qcow2(Fixture *f, gconstpointer data) {
        const Extent extents[] = { { 0, 3 * MiB }, { 5 * MiB + 4096, 777 }, { 9 * MiB, 64 * KiB } };

        make_sparse_file(f->source, 10 * MiB, extents, G_N_ELEMENTS(extents), 5);
        start(f, f->source, false, IMAGE_FORMAT_QCOW2);
        run_to_end(f);
        assert_target_is(f, f->source, "qcow2");
        /* Holes were not written: the image is as small as its data. */
        g_autoptr(GArray) map = oracle_map(f->target);
        uint64_t data_bytes = 0;
        for (guint i = 0; i < map->len; i++)
                if (g_array_index(map, OracleExtent, i).data)
                        data_bytes += g_array_index(map, OracleExtent, i).length;
        g_assert_cmpuint(data_bytes, <=, 3 * MiB + 2 * 64 * KiB);
}


static void assert_open_fails(const char *source, const char *target, bool overwrite, const char *expected) {
        TestBackupParams bp = { .source = source, .source_format = format_of(source), .target = target,
                                .overwrite = overwrite };
        g_autofree char *error = NULL;
        Backup *b = NULL;

        g_assert_cmpint(test_backup_open(&bp, &b, &error), <, 0);
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
        /* Wait until it holds the image (byte 101: it has write permission), then try. */
        for (int i = 0; !oracle_lock_byte_held(top, 101); i++) {
                g_assert_cmpint(i, <, 1000);
                g_usleep(10 * 1000);
        }
        g_autofree char *expected = g_strdup_printf("Image '%s' is in use by another process", top);
        assert_open_fails(top, f->target, false, expected);
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
        BACKUP_TEST("/backup-image/raw-to-qcow2", test_raw_to_qcow2);
        BACKUP_TEST("/backup-image/refusals", test_refusals);
        return g_test_run();
}
