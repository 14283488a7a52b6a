/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Commit and stream, the real drivers on the real executor, on images with persistent bitmaps:
 * what a job writes into an image is recorded in its enabled bitmaps, as QEMU records writes. A
 * commit marks what it copies into base, a stream what it copies into the image, emptying the
 * top of an active commit all of it; disabled bitmaps and images the job does not write stay as
 * they were; afterwards `qemu-img check` is clean and nothing is in use.
 *
 * What a job writes is known only within bounds (it may skip zeroes, or write them), so each
 * bitmap is checked between two: at least what the job must have written (the data it copies), at
 * most what it may have written (where the image could change at all), each plus what was dirty
 * before. test-qcow2-bitmap.c checks that
 * the bitmaps read here are what qemu-nbd exports. */

#include <glib/gstdio.h>
#include <stdlib.h>

#include "driver-fixture.h"
#include "driver-open.h"
#include "qemu-oracle.h"

#define MiB (UINT64_C(1) << 20)
#define SUCCESS "created running waiting pending concluded null "

static char *path(Fixture *f, const char *name) {
        return g_build_filename(f->dir, name, NULL);
}

static void start_job(Fixture *f, const JobDriver *driver, void *data, uint64_t size) {
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;

        p.id = "j";
        p.driver = driver;
        p.driver_data = data;
        g_assert_cmpint(job_create(f->loop.registry, &p, &f->job, NULL), ==, 0);
        job_progress_set_remaining(f->job, size);
        job_start(f->job);
}

static void run_to_end(Fixture *f, const char *expected_events) {
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, expected_events);
        g_string_truncate(f->events, 0);
}

static ImageDirtyMap *load(const char *image, const char *name) {
        g_autofree char *error = NULL;
        ImageDirtyMap *m = NULL;
        Image *img = NULL;

        if (image_open(image, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_NO_LOCK, &img, &error) < 0)
                g_error("%s", error);
        if (image_bitmap_load(img, name, &m) < 0)
                g_error("%s", image_error(img));
        image_close(img);
        return m;
}

/* The ranges of 'image' that its own layer holds (data only, or anything), as qemu-img map
 * says, marked in 'm'. */
static void mark_layer(ImageDirtyMap *m, const char *image, bool data_only) {
        g_autoptr(GArray) map = oracle_map(image);

        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (e->depth == 0 && e->present && (e->data || !data_only))
                        image_dirty_map_set(m, e->start, e->length);
        }
}

/* The data the layers below 'image' hold and it reads, marked in 'm': what a stream copies. */
static void mark_below(ImageDirtyMap *m, const char *image) {
        g_autoptr(GArray) map = oracle_map(image);

        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (e->depth > 0 && e->data)
                        image_dirty_map_set(m, e->start, e->length);
        }
}

static ImageDirtyMap *copy(const ImageDirtyMap *m) {
        ImageDirtyMap *c = NULL;

        g_assert_cmpint(image_dirty_map_new(m->size, m->granularity, &c), ==, 0);
        memcpy(c->words, m->words, (m->nbits + 63) / 64 * 8);
        return c;
}

/* lower ⊆ m ⊆ upper, bit by bit. */
static void assert_between(const ImageDirtyMap *lower, const ImageDirtyMap *m, const ImageDirtyMap *upper,
                           const char *what) {
        for (uint64_t w = 0; w < (m->nbits + 63) / 64; w++) {
                if (lower->words[w] & ~m->words[w])
                        g_error("%s: misses what the job wrote near %" PRIu64, what, w * 64 * m->granularity);
                if (m->words[w] & ~upper->words[w])
                        g_error("%s: marks what the job cannot have written near %" PRIu64, what, w * 64 * m->granularity);
        }
}

static void assert_equal(const ImageDirtyMap *a, const ImageDirtyMap *b, const char *what) {
        if (memcmp(a->words, b->words, (a->nbits + 63) / 64 * 8) != 0)
                g_error("%s changed", what);
}

/* qemu-img check finds nothing, and no bitmap is in use. */
static void assert_clean(const char *image) {
        g_autofree char *out = NULL, *err = NULL, *info = NULL;
        int status = oracle_try(&out, &err, "qemu-img check %s", image);

        if (status != 0)
                g_error("qemu-img check %s: status %d: %s%s", image, status, out, err);
        info = oracle_run("qemu-img info %s", image);
        g_assert_null(strstr(info, "in-use"));
        g_assert_nonnull(strstr(info, "bitmaps:"));
}

/* base (bitmaps "on", 64 KiB, and "off", disabled) ← mid (bitmap "mid") ← top, each written by
 * QEMU over the one below, base's bitmap dirtied by its own writes. */
static void make_chain(Fixture *f) {
        g_autofree char *base = path(f, "base.qcow2"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 16M", base));
        g_free(oracle_run("qemu-img bitmap --add %s on", base));
        g_free(oracle_run("qemu-img bitmap --add -g 512 --disable %s off", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xa1 0 6M' -c 'write -P 0xa2 14M 64k' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 %s", mid));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s mid", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb1 1M 2M' -c 'write -z 8M 1M' -c 'write -P 0xb2 11M 100k' %s", mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc1 5M 1M' %s", top));
}

/* Committing mid into base marks in base's enabled bitmap what mid held, and nothing else; the
 * disabled one and mid's own stay as they were. */
static void test_commit(Fixture *f, gconstpointer data) {
        g_autofree char *base = path(f, "base.qcow2"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");
        g_autofree char *error = NULL;
        Commit *c = NULL;

        make_chain(f);
        ImageDirtyMap *before = load(base, "on"), *off_before = load(base, "off"), *mid_before = load(mid, "mid");
        ImageDirtyMap *lower = copy(before), *upper = copy(before);
        mark_layer(lower, mid, true);
        mark_layer(upper, mid, false);

        TestCommitParams p = { .image = top, .top = mid, .base = base };
        if (test_commit_open(&p, &c, &error) < 0)
                g_error("commit_open: %s", error);
        start_job(f, &commit_driver, c, commit_size(c));
        run_to_end(f, SUCCESS);

        ImageDirtyMap *after = load(base, "on"), *off_after = load(base, "off"), *mid_after = load(mid, "mid");
        assert_between(lower, after, upper, "base's enabled bitmap");
        assert_equal(off_before, off_after, "base's disabled bitmap");
        assert_equal(mid_before, mid_after, "mid's bitmap");
        assert_clean(base);
        g_assert_cmpuint(image_dirty_map_count(after), >, image_dirty_map_count(before));
        for (ImageDirtyMap **m = (ImageDirtyMap *[]) { before, off_before, mid_before, lower, upper, after, off_after, mid_after, NULL }; *m; m++)
                image_dirty_map_free(*m);
}

/* Streaming into top (a bitmap added to it) marks what it copies: at least the data below, at
 * most what top did not hold. */
static void test_stream(Fixture *f, gconstpointer data) {
        g_autofree char *top = path(f, "top.qcow2"), *error = NULL;
        Stream *s = NULL;

        make_chain(f);
        g_free(oracle_run("qemu-img bitmap --add -g 4096 %s t", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc2 15M 4k' %s", top));
        ImageDirtyMap *before = load(top, "t"), *held = NULL, *lower = copy(before), *upper = NULL;
        g_assert_cmpint(image_dirty_map_new(before->size, before->granularity, &held), ==, 0);
        mark_layer(held, top, false);
        /* lower: before, and the data below, which the stream must copy. */
        mark_below(lower, top);

        TestStreamParams p = { .image = top };
        if (test_stream_open(&p, &s, &error) < 0)
                g_error("stream_open: %s", error);
        start_job(f, &stream_driver, s, stream_size(s));
        run_to_end(f, SUCCESS);

        /* upper: before, and all that top did not hold (granules partly held count). */
        upper = copy(before);
        for (uint64_t i = 0; i < held->nbits; i++)
                if (!(held->words[i / 64] >> (i % 64) & 1))
                        image_dirty_map_set(upper, i * held->granularity, held->granularity);
        ImageDirtyMap *after = load(top, "t");
        assert_between(lower, after, upper, "top's bitmap");
        assert_clean(top);
        g_assert_cmpuint(image_dirty_map_count(after), >, image_dirty_map_count(before));
        for (ImageDirtyMap **m = (ImageDirtyMap *[]) { before, held, lower, upper, after, NULL }; *m; m++)
                image_dirty_map_free(*m);
}

/* An active commit empties top at its end: all of top's disk is marked in its enabled bitmap
 * (QEMU marks discards too), and base's records what was copied into it. */
static void test_commit_active(Fixture *f, gconstpointer data) {
        g_autofree char *base = path(f, "base.qcow2"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");
        g_autofree char *error = NULL;
        Commit *c = NULL;
        Job *j;

        make_chain(f);
        g_free(oracle_run("qemu-img bitmap --add %s t", top));
        ImageDirtyMap *before = load(mid, "mid"), *lower = copy(before), *upper = copy(before);
        mark_layer(lower, top, true);
        mark_layer(upper, top, false);

        TestCommitParams p = { .image = top, .base = mid };
        if (test_commit_open(&p, &c, &error) < 0)
                g_error("commit_open: %s", error);
        start_job(f, &commit_driver, c, commit_size(c));
        j = f->job;
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        run_to_end(f, "created running ready waiting pending concluded null ");

        ImageDirtyMap *t = load(top, "t"), *after = load(mid, "mid");
        g_assert_cmpuint(image_dirty_map_count(t), ==, 16 * MiB);
        assert_between(lower, after, upper, "mid's bitmap");
        assert_clean(top);
        assert_clean(mid);
        for (ImageDirtyMap **m = (ImageDirtyMap *[]) { before, lower, upper, t, after, NULL }; *m; m++)
                image_dirty_map_free(*m);
}

#define TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        TEST("/bitmap-jobs/commit", test_commit);
        TEST("/bitmap-jobs/stream", test_stream);
        TEST("/bitmap-jobs/commit-active", test_commit_active);
        return g_test_run();
}
