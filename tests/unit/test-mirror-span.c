/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The mirror's spans: a pass reads the blocks that need a read in spans of up to buf_size, one
 * request each, and writes the runs of changed blocks in one request each. Here the spans are
 * 4 blocks (buf_size 256 KiB, blocks of 64 KiB) over a source whose holes cut them short, with a
 * block that is half data and half hole and a short last block; the source changes in the middle
 * of a span while the pass writes it, and at the edges of spans while ready. Each time the
 * target must read as the source does (qemu-img compare) and keep the source's holes. */

#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "driver-fixture.h"
#include "driver-open.h"
#include "file-util.h"
#include "image-fault.h"
#include "qemu-oracle.h"

#define BLOCK (64 * KiB)
#define SPAN (4 * BLOCK)
#define SIZE (3 * MiB + 3 * KiB)        /* the last block is a short one */

/* Spans [0, 256K) [256K, 512K) [512K, 704K), cut short by the hole block at 704K; data from
 * 768K ends inside the block at 1088K (half data, half hole); the last extent reaches into the
 * short last block. */
static const Extent layout[] = {
        { 0, 704 * KiB },
        { 768 * KiB, 356 * KiB },
        { 2 * MiB, 1 * MiB + 3 * KiB },
};

/* ---- a source written while a pass writes a span -------------------------------------------- */

static const char *hook_source;
static atomic_bool hook_fired;

static void poke(uint64_t offset, uint8_t byte, size_t n) {
        uint8_t buf[4096];

        g_assert_cmpuint(n, <=, sizeof(buf));
        memset(buf, byte, n);
        write_at(hook_source, offset, buf, n);
}

/* The first write to the target of the span at 256K, after the pass read and hashed it: the
 * source changes under it, in the middle of the span, at both its edges, in the next span (not
 * read yet), and in the hole block inside the span after that. The pass writes what it read; the
 * next pass must find the three blocks of this span changed. */
static int change_source_during_write(const char *path, ImageIo io, uint64_t offset, uint64_t length) {
        bool expected = false;

        if (io != IMAGE_IO_WRITE || g_str_equal(path, hook_source) || offset + length <= SPAN || offset >= 2 * SPAN)
                return 0;
        if (!atomic_compare_exchange_strong(&hook_fired, &expected, true))
                return 0;
        poke(SPAN, 0x11, 100);                          /* first byte of the span */
        poke(SPAN + BLOCK + 10, 0x22, 1000);            /* its middle */
        poke(2 * SPAN - 1, 0x33, 1);                    /* its last byte */
        poke(2 * SPAN + 5, 0x44, 10);                   /* the next span */
        poke(704 * KiB + 5, 0x55, 1);                   /* the hole block after it */
        return 0;
}

static void assert_mirrored(Fixture *f, const Extent *data, size_t n) {
        /* What the guest reads, by QEMU's reading of both... */
        g_free(oracle_run("qemu-img compare -q -f raw -F raw %s %s", f->source, f->target));
        /* ...and the holes kept. */
        assert_holes(f->target, SIZE, data, n);
}

static void test_change_during_pass(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = BLOCK, .buf_size = SPAN };
        Mirror *m;
        Job *j;

        make_sparse_file(f->source, SIZE, layout, G_N_ELEMENTS(layout), 21);
        hook_source = f->source;
        atomic_store(&hook_fired, false);
        image_set_fault_hook(change_source_during_write);

        j = driver_fixture_start_mirror(f, &mp, true);
        m = job_driver_data(j);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_true(atomic_load(&hook_fired));
        image_set_fault_hook(NULL);
        /* The first pass copied the span as it read it; inotify saw the writes, and a pass after
         * it copies what changed. */
        driver_fixture_wait_for_passes(f, m, 2);

        /* Ready: changes at the edges of spans (the last byte of one, the first of the next), a
         * block in the middle of a span that becomes zeroes (a hole in the target), and the
         * short last block. */
        uint64_t passes = mirror_passes(m);
        g_autofree uint8_t *zeroes = g_malloc0(BLOCK);
        poke(2 * MiB + SPAN - 1, 0x66, 1);
        poke(2 * MiB + SPAN, 0x77, 1);
        write_at(f->source, 2 * MiB + 2 * SPAN + BLOCK, zeroes, BLOCK);
        poke(SIZE - 10, 0x88, 10);
        driver_fixture_wait_for_passes(f, m, passes + 1);

        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");

        /* The source's data (the byte poked into the hole block allocated a file system block of
         * 4 KiB there) and nothing else, but the block of zeroes, which became a hole. */
        const Extent after[] = {
                { 0, 708 * KiB },
                { 768 * KiB, 356 * KiB },
                { 2 * MiB, 2 * SPAN + BLOCK },
                { 2 * MiB + 2 * SPAN + 2 * BLOCK, 1 * MiB + 3 * KiB - 2 * SPAN - 2 * BLOCK },
        };
        assert_mirrored(f, after, G_N_ELEMENTS(after));
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", "target.img", NULL });
}

/* ---- a write that fails half done ----------------------------------------------------------- */

/* The second request of the first span's run fails (its first, the data before a granule of
 * zeroes, went out), and meanwhile the source's first block becomes zeroes: what the target held
 * there before the first pass. */
static int fail_second_write(const char *path, ImageIo io, uint64_t offset, uint64_t length) {
        bool expected = false;

        if (io != IMAGE_IO_WRITE || g_str_equal(path, hook_source) || offset == 0 || offset >= SPAN)
                return 0;
        if (!atomic_compare_exchange_strong(&hook_fired, &expected, true))
                return 0;
        g_autofree uint8_t *zeroes = g_malloc0(BLOCK);
        write_at(hook_source, 0, zeroes, BLOCK);
        return -EIO;
}

/* A run of blocks whose write failed part way holds what neither the table nor the source says:
 * here the first block got the source's data and the table still says zeroes, the target's
 * before the copy. The retry (on-target-error=ignore goes on at once) reads zeroes there, which
 * must not pass for what the target holds: the run's blocks are unknown after a failed write, and
 * written again whatever the source holds. */
static void test_failed_write_part_done(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = BLOCK, .buf_size = SPAN };
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        g_autofree uint8_t *zeroes = g_malloc0(4 * KiB);
        Mirror *m = NULL;
        Job *j;

        make_sparse_file(f->source, SIZE, layout, G_N_ELEMENTS(layout), 24);
        /* Zeroes written in the second block: data to block status, a granule copy-io does not
         * write as data, so the run's write is several requests. */
        write_at(f->source, BLOCK + 8 * KiB, zeroes, 4 * KiB);
        hook_source = f->source;
        atomic_store(&hook_fired, false);
        image_set_fault_hook(fail_second_write);

        g_assert_cmpint(test_mirror_open(&mp, &m, NULL), ==, 0);
        p.id = "m";
        p.driver = &mirror_driver;
        p.driver_data = m;
        p.on_target_error = JOB_ON_ERROR_IGNORE;
        g_assert_cmpint(job_create(f->loop.registry, &p, &f->job, NULL), ==, 0);
        j = f->job;
        job_progress_set_remaining(j, mirror_size(m));
        job_start(j);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_true(atomic_load(&hook_fired));
        image_set_fault_hook(NULL);

        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_true(g_str_has_suffix(f->events->str, "ready waiting pending concluded null "));
        g_free(oracle_run("qemu-img compare -q -f raw -F raw %s %s", f->source, f->target));
}

/* ---- spans driven step by step ----------------------------------------------------------------- */

/* Runs steps of at most 'max_bytes' until the pass ends; returns the steps. */
static unsigned run_pass(Mirror *m, uint64_t max_bytes, bool complete, uint64_t *ret_read) {
        unsigned steps = 0;

        *ret_read = 0;
        for (uint64_t passes = mirror_passes(m); mirror_passes(m) == passes; steps++) {
                JobStepInput in = { .max_bytes = max_bytes, .complete_requested = complete };
                JobStepResult out = {};

                mirror_driver.step(NULL, m, &in, &out);
                g_assert_false(out.io_error.set);
                g_assert_null(out.error);
                g_assert_cmpuint(out.dispatched, <=, MAX(max_bytes ?: SPAN, BLOCK));
                *ret_read += out.dispatched;
                g_assert_cmpuint(steps, <, 10000);
        }
        return steps;
}

static void test_throttled_spans(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = BLOCK, .buf_size = SPAN };
        uint64_t read_bytes;
        Mirror *m = NULL;

        /* Steps of one span (buf_size), and throttled ones of less than a block, which still
         * read one block each: either way only the data is read, the holes are not. */
        make_sparse_file(f->source, SIZE, layout, G_N_ELEMENTS(layout), 22);
        hook_source = f->source;
        g_assert_cmpint(test_mirror_open(&mp, &m, NULL), ==, 0);
        run_pass(m, 0, false, &read_bytes);
        /* Data blocks: 11 to 704K, 6 from 768K (the last one half hole), 16 and the short one
         * from 2M. */
        g_assert_cmpuint(read_bytes, ==, 33 * BLOCK + 3 * KiB);

        /* A change in the middle of a span, read by throttled steps of 1000 bytes: one block per
         * step. */
        poke(2 * MiB + BLOCK + 7, 0x99, 7);
        g_assert_cmpuint(run_pass(m, 1000, true, &read_bytes), >=, 34);
        g_assert_cmpuint(read_bytes, ==, 33 * BLOCK + 3 * KiB);
        mirror_free(m);
}

/* ---- qcow2 on both sides ------------------------------------------------------------------------ */

static void test_qcow2(Fixture *f, gconstpointer data) {
        g_autofree char *raw = g_build_filename(f->dir, "layout.raw", NULL);
        TestMirrorParams mp = {
                .source = f->source, .source_format = IMAGE_FORMAT_QCOW2,
                .target = f->target, .target_format = IMAGE_FORMAT_QCOW2,
                .granularity = BLOCK, .buf_size = SPAN,
        };
        Job *j;

        /* The same layout in a qcow2 source (block status by clusters, the half-hole block
         * allocated whole) into a new qcow2 target: spans across clusters, and what reads as
         * zeroes stays unallocated; data only in the clusters (64 KiB, a block) that hold
         * some. */
        make_sparse_file(raw, SIZE, layout, G_N_ELEMENTS(layout), 23);
        g_free(oracle_run("qemu-img convert -f raw -O qcow2 %s %s", raw, f->source));
        j = driver_fixture_start_mirror(f, &mp, true);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");

        g_free(oracle_run("qemu-img compare -q -f raw -F qcow2 %s %s", raw, f->target));
        g_autoptr(GArray) map = oracle_map(f->target);
        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                bool inside = false;
                if (!e->data)
                        continue;
                for (size_t k = 0; k < G_N_ELEMENTS(layout); k++)
                        inside = inside ||
                                 (e->start >= layout[k].offset / BLOCK * BLOCK &&
                                  e->start + e->length <= (layout[k].offset + layout[k].length + BLOCK - 1) / BLOCK * BLOCK);
                g_assert_true(inside);
        }
}

#define SPAN_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        if (!oracle_available())
                return 77;
        SPAN_TEST("/mirror-span/change-during-pass", test_change_during_pass);
        SPAN_TEST("/mirror-span/throttled-spans", test_throttled_spans);
        SPAN_TEST("/mirror-span/failed-write-part-done", test_failed_write_part_done);
        SPAN_TEST("/mirror-span/qcow2", test_qcow2);
        return g_test_run();
}
