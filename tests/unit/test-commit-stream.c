/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Commit and stream on real qcow2 chains, through the real executor, checked by the oracle: the
 * chain reads exactly as before (`qemu-img compare` against a flat copy made first), the images
 * pass `qemu-img check`, and the backing files are what they should be (`qemu-img info`): the
 * base's name as the chain recorded it, relative names kept relative (what `qemu-img commit` and
 * `qemu-img rebase` leave, run on a copy of the same chain). */

#include <glib/gstdio.h>
#include <stdlib.h>

#include "driver-open.h"
#include "driver-fixture.h"
#include "file-util.h"
#include "image-fault.h"
#include "step-budget.h"
#include "qemu-oracle.h"

/* a ← b ← c ← d, each writing over the one below, with zeroes and a compressed base. */
static void make_chain(Fixture *f) {
        g_autofree char *raw = g_build_filename(f->dir, "a.raw", NULL);
        g_autofree char *a = g_build_filename(f->dir, "a.qcow2", NULL), *b = g_build_filename(f->dir, "b.qcow2", NULL);
        g_autofree char *c = g_build_filename(f->dir, "c.qcow2", NULL), *d = g_build_filename(f->dir, "d.qcow2", NULL);

        g_free(oracle_run("qemu-img create -q -f raw %s 16M", raw));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0xa1 0 10M' -c 'write -P 0xa2 14M 1M' %s", raw));
        g_free(oracle_run("qemu-img convert -q -c -O qcow2 %s %s", raw, a));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 %s", b));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb1 1M 2M' -c 'write -z 4M 1M' -c 'write -P 0xb2 11M 100k' %s", b));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b b.qcow2 -F qcow2 %s", c));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc1 2M 64k' -c 'write -z 1M 4k' -c 'write -P 0xc2 15M 3k' %s", c));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b c.qcow2 -F qcow2 %s", d));
        /* d overwrites what c and b hold, so that a layer left in between would show. */
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xd1 6M 1M' -c 'write -P 0xd2 2M 8k' -c 'write -P 0xd3 1M 1M' %s", d));
}

static char *path(Fixture *f, const char *name) {
        return g_build_filename(f->dir, name, NULL);
}

/* What an image reads now, flat, for comparing later. */
static char *snapshot(Fixture *f, const char *image) {
        g_autofree char *src = path(f, image);
        char *flat = g_strdup_printf("%s/%s.flat", f->dir, image);
        g_free(oracle_run("qemu-img convert -U -O raw %s %s", src, flat));
        return flat;
}

static void assert_reads_as(Fixture *f, const char *image, const char *flat) {
        g_autofree char *p = path(f, image), *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img compare -U %s %s", p, flat) != 0)
                g_error("%s no longer reads as before: %s%s", image, out, err);
}

static void assert_check(Fixture *f, const char *image) {
        g_autofree char *p = path(f, image);
        g_free(oracle_run("qemu-img check -U %s", p));
}

/* A string of `qemu-img info --output=json` ("" when it is not there). */
static char *info_string(Fixture *f, const char *image, const char *key) {
        g_autofree char *p = path(f, image), *pattern = g_strdup_printf("\"%s\": \"", key);
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", p);
        const char *s = strstr(info, pattern);
        if (!s)
                return g_strdup("");
        s += strlen(pattern);
        return g_strndup(s, strchr(s, '"') - s);
}

/* The backing file name recorded in the header, as it is spelt ("" for none). */
static char *backing_of(Fixture *f, const char *image) {
        return info_string(f, image, "backing-filename");
}

/* The speed limit of the next job started; a job throttled from its start is caught mid-run
 * (an unthrottled step copies for up to 20 ms, which is all of these small chains). */
static uint64_t start_speed;

static void start_job(Fixture *f, const JobDriver *driver, void *data, uint64_t size) {
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;

        p.speed = start_speed;
        start_speed = 0;

        p.id = "j";
        p.driver = driver;
        p.driver_data = data;
        g_assert_cmpint(job_create(f->loop.registry, &p, &f->job, NULL), ==, 0);
        job_progress_set_remaining(f->job, size);
        job_start(f->job);
}

static void stream(Fixture *f, const char *image, const char *base, const char *backing_file) {
        g_autofree char *ip = path(f, image), *bp = base ? path(f, base) : NULL;
        TestStreamParams p = { .image = ip, .base = bp, .backing_file = backing_file };
        g_autofree char *error = NULL;
        Stream *s = NULL;

        if (test_stream_open(&p, &s, &error) < 0)
                g_error("stream_open: %s", error);
        start_job(f, &stream_driver, s, stream_size(s));
}

static Job *commit(Fixture *f, const char *image, const char *top, const char *base, const char *backing_file) {
        g_autofree char *ip = path(f, image), *tp = top ? path(f, top) : NULL, *bp = base ? path(f, base) : NULL;
        TestCommitParams p = { .image = ip, .top = tp, .base = bp, .backing_file = backing_file };
        g_autofree char *error = NULL;
        Commit *c = NULL;

        if (test_commit_open(&p, &c, &error) < 0)
                g_error("commit_open: %s", error);
        start_job(f, &commit_driver, c, commit_size(c));
        return f->job;
}

static void run_to_end(Fixture *f, const char *expected_events) {
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, expected_events);
        g_string_truncate(f->events, 0);
}

#define SUCCESS "created running waiting pending concluded null "

/* ---- stream ---------------------------------------------------------------------------------- */

static void test_stream_whole_chain(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL, *backing = NULL;

        make_chain(f);
        flat = snapshot(f, "d.qcow2");
        stream(f, "d.qcow2", NULL, NULL);
        run_to_end(f, SUCCESS);

        /* Standalone now, and the same. */
        backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, "");
        assert_reads_as(f, "d.qcow2", flat);
        assert_check(f, "d.qcow2");
}

static void test_stream_to_base(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL, *backing = NULL;

        make_chain(f);
        flat = snapshot(f, "d.qcow2");
        stream(f, "d.qcow2", "b.qcow2", NULL);
        run_to_end(f, SUCCESS);

        /* c dropped out: d now rests on b, named as c named it, and reads the same. */
        backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, "b.qcow2");
        assert_reads_as(f, "d.qcow2", flat);
        assert_check(f, "d.qcow2");
}

static void test_stream_backing_file_name(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL, *backing = NULL;

        make_chain(f);
        flat = snapshot(f, "c.qcow2");
        stream(f, "c.qcow2", "a.qcow2", "a.qcow2");
        run_to_end(f, SUCCESS);
        backing = backing_of(f, "c.qcow2");
        g_assert_cmpstr(backing, ==, "a.qcow2");
        assert_reads_as(f, "c.qcow2", flat);
}

static void assert_stream_fails(Fixture *f, const char *image, const char *base, const char *backing_file,
                                const char *expected) {
        g_autofree char *ip = path(f, image), *bp = base ? path(f, base) : NULL;
        TestStreamParams p = { .image = ip, .base = bp, .backing_file = backing_file };
        g_autofree char *error = NULL;
        Stream *s = NULL;

        g_assert_cmpint(test_stream_open(&p, &s, &error), <, 0);
        g_assert_null(s);
        if (!strstr(error, expected))
                g_error("\"%s\" does not say \"%s\"", error, expected);
}

static void test_stream_refusals(Fixture *f, gconstpointer data) {
        g_autofree char *other = path(f, "other.qcow2");

        make_chain(f);
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 16M", other));
        assert_stream_fails(f, "d.qcow2", "other.qcow2", NULL, "Can't find");
        assert_stream_fails(f, "d.qcow2", "d.qcow2", NULL, "is not a backing image of");
        assert_stream_fails(f, "d.qcow2", NULL, "x.qcow2", "backing file specified, but streaming the entire chain");
        assert_stream_fails(f, "a.raw", NULL, NULL, "is not a qcow2 image");
}

/* The largest write of any kind the image layer was asked for, since the hook went in. */
static uint64_t largest_write;

static int record_writes(const char *image_path, ImageIo io, uint64_t offset, uint64_t length) {
        if (io == IMAGE_IO_WRITE && length > largest_write)
                largest_write = length;
        return 0;
}

/* A gigabyte of zeroes is written a bounded range at a time, as backup writes them, so that the
 * job's pause points stay close together however the images lay out their zeroes. */
static void test_stream_zeroes_bounded(Fixture *f, gconstpointer data) {
        g_autofree char *base = path(f, "base.raw"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");
        g_autofree char *flat = NULL;

        g_free(oracle_run("qemu-img create -q -f raw %s 1G", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.raw -F raw %s", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -z 0 1G' %s", mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 %s", top));
        flat = snapshot(f, "top.qcow2");

        largest_write = 0;
        image_set_fault_hook(record_writes);
        stream(f, "top.qcow2", "base.raw", NULL);
        run_to_end(f, SUCCESS);
        image_set_fault_hook(NULL);

        assert_reads_as(f, "top.qcow2", flat);
        assert_check(f, "top.qcow2");
        g_assert_cmpuint(largest_write, >, 0);
        g_assert_cmpuint(largest_write, <=, STEP_ZEROES_MAX);
}

/* ---- commit ---------------------------------------------------------------------------------- */

static void test_commit_intermediate(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL, *backing = NULL, *flat_c = NULL;

        make_chain(f);
        flat = snapshot(f, "d.qcow2");
        flat_c = snapshot(f, "c.qcow2");
        /* b and c into a; d then rests on a. */
        commit(f, "d.qcow2", "c.qcow2", "a.qcow2", NULL);
        run_to_end(f, SUCCESS);

        backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, "a.qcow2");
        assert_reads_as(f, "d.qcow2", flat);
        /* a alone now reads as c did. */
        assert_reads_as(f, "a.qcow2", flat_c);
        assert_check(f, "a.qcow2");
        assert_check(f, "d.qcow2");
}

/* Zeroes that top holds go into base as QEMU puts them there: unallocated clusters where
 * nothing lies below base, zero clusters where base's own backing file would show through. */
static void check_commit_zeroes(Fixture *f, bool base_has_backing) {
        g_autofree char *under = path(f, "under.qcow2"), *base = path(f, "base.qcow2");
        g_autofree char *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");
        g_autofree char *flat = NULL, *flat_mid = NULL;

        g_free(oracle_run("rm -f %s %s %s %s", under, base, mid, top));
        if (base_has_backing) {
                g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", under));
                g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x70 0 4M' %s", under));
                g_free(oracle_run("qemu-img create -q -f qcow2 -b under.qcow2 -F qcow2 %s", base));
        } else
                g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x71 0 4M' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -z 1M 2M' -c 'write -P 0x72 3M 512k' %s", mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 %s", top));
        flat = snapshot(f, "top.qcow2");
        flat_mid = snapshot(f, "mid.qcow2");

        commit(f, "top.qcow2", "mid.qcow2", "base.qcow2", NULL);
        run_to_end(f, SUCCESS);
        assert_reads_as(f, "top.qcow2", flat);
        assert_reads_as(f, "base.qcow2", flat_mid);
        assert_check(f, "base.qcow2");

        g_autoptr(GArray) map = oracle_map(base);
        bool found = false;
        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (e->start > 1 * MiB || e->start + e->length < 3 * MiB)
                        continue;
                found = true;
                g_assert_true(e->zero);
                g_assert_cmpint(e->present, ==, base_has_backing);
                if (base_has_backing)
                        g_assert_cmpint(e->depth, ==, 0);
        }
        g_assert_true(found);
}

static void test_commit_zeroes(Fixture *f, gconstpointer data) {
        check_commit_zeroes(f, false);
        check_commit_zeroes(f, true);
}

static void test_commit_into_middle(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL, *backing = NULL;

        make_chain(f);
        flat = snapshot(f, "d.qcow2");
        /* c into b, with the name to record given; defaults otherwise (base: the bottom). */
        commit(f, "d.qcow2", "c.qcow2", "b.qcow2", "b.qcow2");
        run_to_end(f, SUCCESS);
        backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, "b.qcow2");
        assert_reads_as(f, "d.qcow2", flat);
        assert_check(f, "b.qcow2");
}

static void test_commit_active(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL;
        Job *j;

        make_chain(f);
        flat = snapshot(f, "d.qcow2");
        j = commit(f, "d.qcow2", NULL, "b.qcow2", NULL);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        run_to_end(f, "created running ready waiting pending concluded null ");

        /* d is empty now, an overlay on b (c dropped out), and the chain reads the same. */
        g_autofree char *d = path(f, "d.qcow2"), *backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, "b.qcow2");
        g_autoptr(GArray) map = oracle_map(d);
        for (guint i = 0; i < map->len; i++)
                g_assert_cmpint(g_array_index(map, OracleExtent, i).depth, !=, 0);
        assert_reads_as(f, "d.qcow2", flat);
        assert_check(f, "d.qcow2");
        assert_check(f, "b.qcow2");
}

static void test_commit_active_soft_cancel(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL;
        Job *j;

        make_chain(f);
        flat = snapshot(f, "d.qcow2");
        j = commit(f, "d.qcow2", NULL, NULL, NULL);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        /* Finished, base holds everything, but d keeps its data: no pivot. */
        g_assert_cmpint(job_user_cancel(j, false, NULL), ==, 0);
        run_to_end(f, "created running ready waiting pending concluded null ");
        g_autofree char *d = path(f, "d.qcow2");
        g_autoptr(GArray) map = oracle_map(d);
        bool top_has_data = false;
        for (guint i = 0; i < map->len; i++)
                top_has_data |= g_array_index(map, OracleExtent, i).depth == 0 && g_array_index(map, OracleExtent, i).data;
        g_assert_true(top_has_data);
        assert_reads_as(f, "d.qcow2", flat);
        /* The bottom alone now reads as the whole chain. */
        assert_reads_as(f, "a.qcow2", flat);
}

static void test_commit_cancel(Fixture *f, gconstpointer data) {
        g_autofree char *flat = NULL, *backing = NULL;
        Job *j;

        make_chain(f);
        flat = snapshot(f, "d.qcow2");
        start_speed = 1024 * 1024;
        j = commit(f, "d.qcow2", "c.qcow2", "a.qcow2", NULL);
        while (job_current_progress(j) == 0)
                test_loop_iterate(&f->loop);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        run_to_end(f, "created running aborting concluded (Operation canceled) null ");

        /* Half done and cancelled: the chain is unchanged and reads the same. */
        backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, "c.qcow2");
        assert_reads_as(f, "d.qcow2", flat);
        assert_check(f, "a.qcow2");
}

static void assert_commit_fails(Fixture *f, const char *image, const char *top, const char *base,
                                const char *backing_file, const char *expected) {
        g_autofree char *ip = path(f, image), *tp = top ? path(f, top) : NULL, *bp = base ? path(f, base) : NULL;
        TestCommitParams p = { .image = ip, .top = tp, .base = bp, .backing_file = backing_file };
        g_autofree char *error = NULL;
        Commit *c = NULL;

        g_assert_cmpint(test_commit_open(&p, &c, &error), <, 0);
        g_assert_null(c);
        if (!strstr(error, expected))
                g_error("\"%s\" does not say \"%s\"", error, expected);
}

static void test_commit_refusals(Fixture *f, gconstpointer data) {
        g_autofree char *other = path(f, "other.qcow2"), *big = path(f, "big.qcow2");

        make_chain(f);
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 16M", other));
        assert_commit_fails(f, "d.qcow2", "other.qcow2", NULL, NULL, "is not in the backing chain");
        assert_commit_fails(f, "d.qcow2", NULL, "other.qcow2", NULL, "Can't find");
        assert_commit_fails(f, "d.qcow2", "b.qcow2", "c.qcow2", NULL, "is not below top");
        assert_commit_fails(f, "d.qcow2", "c.qcow2", "c.qcow2", NULL, "cannot commit an image into itself");
        assert_commit_fails(f, "d.qcow2", NULL, NULL, "x", "'backing-file' specified, but 'top' is the active layer");
        assert_commit_fails(f, "a.qcow2", NULL, NULL, NULL, "has no backing file to commit into");
        g_free(oracle_run("qemu-img create -q -f qcow2 -b d.qcow2 -F qcow2 %s 32M", big));
        assert_commit_fails(f, "big.qcow2", NULL, "d.qcow2", NULL, "is smaller than top");
}

/* ---- backing file names across directories ---------------------------------------------------- */

/* Layers in directories of their own, each naming the one below relative to itself:
 *   t/base/a.qcow2 ← t/mid/b.qcow2 ("../base/a.qcow2") ← t/mid/sub/c.qcow2 ("../b.qcow2")
 *   ← t/d.qcow2 ("mid/sub/c.qcow2") */
static void make_tree(Fixture *f) {
        g_autofree char *sub = path(f, "t/mid/sub"), *base = path(f, "t/base");
        g_autofree char *a = path(f, "t/base/a.qcow2"), *b = path(f, "t/mid/b.qcow2");
        g_autofree char *c = path(f, "t/mid/sub/c.qcow2"), *d = path(f, "t/d.qcow2");

        g_assert_cmpint(g_mkdir_with_parents(sub, 0755), ==, 0);
        g_assert_cmpint(g_mkdir_with_parents(base, 0755), ==, 0);
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", a));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xa1 0 6M' %s", a));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b ../base/a.qcow2 -F qcow2 %s", b));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb1 1M 2M' -c 'write -z 4M 512k' %s", b));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b ../b.qcow2 -F qcow2 %s", c));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc1 2M 64k' -c 'write -z 1M 4k' %s", c));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid/sub/c.qcow2 -F qcow2 %s", d));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xd1 6M 1M' -c 'write -P 0xd2 1M 8k' %s", d));
}

typedef struct TreeCase {
        bool commit;
        const char *image;              /* in the tree */
        const char *top;                /* commit: NULL for the image itself (active) */
        const char *base;               /* NULL: the bottom (commit), none (stream) */
        const char *holder;             /* the layer whose header names base afterwards */
        const char *expected;           /* what it records; "" for none */
} TreeCase;

static const TreeCase tree_cases[] = {
        /* The image is in the top directory; base is named from mid/ or mid/sub/. */
        { true, "d.qcow2", "mid/sub/c.qcow2", "base/a.qcow2", "d.qcow2", "base/a.qcow2" },
        { true, "d.qcow2", "mid/sub/c.qcow2", "mid/b.qcow2", "d.qcow2", "mid/b.qcow2" },
        { true, "d.qcow2", "mid/b.qcow2", NULL, "mid/sub/c.qcow2", "../../base/a.qcow2" },
        { true, "d.qcow2", NULL, "base/a.qcow2", "d.qcow2", "base/a.qcow2" },
        { true, "d.qcow2", NULL, "mid/b.qcow2", "d.qcow2", "mid/b.qcow2" },
        { true, "mid/sub/c.qcow2", NULL, "base/a.qcow2", "mid/sub/c.qcow2", "../../base/a.qcow2" },
        /* Stream: down to a base, from the top directory or from below; the whole chain. */
        { false, "d.qcow2", NULL, "base/a.qcow2", "d.qcow2", "base/a.qcow2" },
        { false, "d.qcow2", NULL, "mid/b.qcow2", "d.qcow2", "mid/b.qcow2" },
        { false, "mid/sub/c.qcow2", NULL, "base/a.qcow2", "mid/sub/c.qcow2", "../../base/a.qcow2" },
        { false, "d.qcow2", NULL, NULL, "d.qcow2", "" },
};

static char *in_tree(const char *dir, const char *name) {
        return g_build_filename(dir, name, NULL);
}

/* What qemu-img does on a copy of the tree: commit (then rebase the layer above, as a user of
 * qemu-img must: it leaves that layer's header alone), or a rebase, which is what stream is. */
static void oracle_tree_job(const char *copy, const TreeCase *c) {
        g_autofree char *image = in_tree(copy, c->image), *holder = in_tree(copy, c->holder);
        g_autofree char *base = c->base ? in_tree(copy, c->base) : NULL;
        g_autofree char *top = c->top ? in_tree(copy, c->top) : NULL;
        g_autofree char *bottom = in_tree(copy, "base/a.qcow2");

        if (!c->commit) {
                /* Safe mode: the new name is resolved from the image's directory, as it will be. */
                if (*c->expected)
                        g_free(oracle_run("qemu-img rebase -q -b %s -F qcow2 %s", c->expected, image));
                else
                        g_free(oracle_run("qemu-img rebase -q -b '' %s", image));
                return;
        }
        g_free(oracle_run("qemu-img commit -q -b %s %s", base ?: bottom, top ?: image));
        if (top)
                g_free(oracle_run("qemu-img rebase -q -b %s -F qcow2 %s", c->expected, holder));
        else
                /* The image is emptied: the layers in between would show through it. */
                g_free(oracle_run("qemu-img rebase -q -u -b %s -F qcow2 %s", c->expected, image));
}

/* The file the recorded name reaches, resolved by qemu-img and then by the kernel. */
static char *resolved_backing(Fixture *f, const char *image) {
        g_autofree char *full = info_string(f, image, "full-backing-filename");
        char *r = realpath(full, NULL);
        if (!r)
                g_error("%s: backing file %s does not resolve", image, full);
        return r;
}

static void test_tree(Fixture *f, gconstpointer data) {
        const TreeCase *c = data;
        g_autofree char *image = g_build_filename("t", c->image, NULL), *holder = g_build_filename("t", c->holder, NULL);
        g_autofree char *base = g_build_filename("t", c->base ?: "base/a.qcow2", NULL);
        g_autofree char *top = c->top ? g_build_filename("t", c->top, NULL) : NULL;
        g_autofree char *copy_image = g_build_filename("copy", c->image, NULL);
        g_autofree char *copy_holder = g_build_filename("copy", c->holder, NULL);
        g_autofree char *tree = path(f, "t"), *copy = path(f, "copy"), *flat = NULL;
        g_autofree char *backing = NULL, *oracle_backing = NULL, *oracle_flat = NULL;

        make_tree(f);
        flat = snapshot(f, image);
        g_free(oracle_run("cp -a %s %s", tree, copy));

        if (!c->commit) {
                stream(f, image, c->base ? base : NULL, NULL);
                run_to_end(f, SUCCESS);
        } else if (c->top) {
                commit(f, image, top, c->base ? base : NULL, NULL);
                run_to_end(f, SUCCESS);
        } else {
                Job *j = commit(f, image, NULL, c->base ? base : NULL, NULL);
                test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
                g_assert_cmpint(job_complete(j, NULL), ==, 0);
                run_to_end(f, "created running ready waiting pending concluded null ");
        }
        oracle_tree_job(copy, c);
        oracle_flat = snapshot(f, copy_holder);

        /* Recorded as qemu-img leaves it... */
        backing = backing_of(f, holder);
        oracle_backing = backing_of(f, copy_holder);
        g_assert_cmpstr(backing, ==, c->expected);
        g_assert_cmpstr(oracle_backing, ==, c->expected);
        /* ...reaching the same file... */
        if (*c->expected) {
                g_autofree char *got = resolved_backing(f, holder), *want_path = path(f, base);
                g_autofree char *want = realpath(want_path, NULL);
                g_assert_cmpstr(got, ==, want);
        }
        /* ...and reading as before, and as qemu-img's result does. */
        assert_reads_as(f, image, flat);
        assert_reads_as(f, holder, oracle_flat);
        assert_check(f, image);
        assert_check(f, holder);
        if (c->commit)
                assert_check(f, base);
}

/* a ← b (names a by an absolute path, spelt "<dir>/./a.qcow2") ← c ("./b.qcow2") ← d ("c.qcow2"). */
static char *make_spelled_chain(Fixture *f) {
        g_autofree char *a = path(f, "a.qcow2"), *b = path(f, "b.qcow2"), *c = path(f, "c.qcow2"), *d = path(f, "d.qcow2");
        char *absolute = g_strdup_printf("%s/./a.qcow2", f->dir);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", a));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xa1 0 4M' %s", a));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F qcow2 %s", absolute, b));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb1 1M 1M' %s", b));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b ./b.qcow2 -F qcow2 %s", c));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc1 2M 64k' %s", c));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b c.qcow2 -F qcow2 %s", d));
        return absolute;
}

/* The name is kept byte for byte where the layer that records it does not move: an absolute
 * one always, a relative one in the same directory however it is spelt. */
static void test_names_kept_as_spelt(Fixture *f, gconstpointer data) {
        g_autofree char *absolute = make_spelled_chain(f), *flat = snapshot(f, "d.qcow2"), *backing = NULL;

        /* c and b into a: d takes b's name for a. */
        commit(f, "d.qcow2", "c.qcow2", "a.qcow2", NULL);
        run_to_end(f, SUCCESS);
        backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, absolute);
        assert_reads_as(f, "d.qcow2", flat);
        assert_check(f, "d.qcow2");
}

static void test_stream_name_kept_as_spelt(Fixture *f, gconstpointer data) {
        g_autofree char *absolute = make_spelled_chain(f), *flat = snapshot(f, "d.qcow2"), *backing = NULL;

        /* c into d: d takes c's name for b. */
        stream(f, "d.qcow2", "b.qcow2", NULL);
        run_to_end(f, SUCCESS);
        backing = backing_of(f, "d.qcow2");
        g_assert_cmpstr(backing, ==, "./b.qcow2");
        assert_reads_as(f, "d.qcow2", flat);
        assert_check(f, "d.qcow2");
}

#define TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        TEST("/stream/whole-chain", test_stream_whole_chain);
        TEST("/stream/to-base", test_stream_to_base);
        TEST("/stream/backing-file-name", test_stream_backing_file_name);
        TEST("/stream/refusals", test_stream_refusals);
        TEST("/stream/zeroes-bounded", test_stream_zeroes_bounded);
        TEST("/commit/intermediate", test_commit_intermediate);
        TEST("/commit/zeroes", test_commit_zeroes);
        TEST("/commit/into-middle", test_commit_into_middle);
        TEST("/commit/active", test_commit_active);
        TEST("/commit/active-soft-cancel", test_commit_active_soft_cancel);
        TEST("/commit/cancel", test_commit_cancel);
        TEST("/commit/refusals", test_commit_refusals);
        TEST("/backing-name/commit-kept", test_names_kept_as_spelt);
        TEST("/backing-name/stream-kept", test_stream_name_kept_as_spelt);
        for (unsigned i = 0; i < G_N_ELEMENTS(tree_cases); i++) {
                const TreeCase *c = &tree_cases[i];
                g_autofree char *name = g_strdup_printf("/backing-name/%s%s/%u", c->commit ? "commit" : "stream",
                                                        c->commit && !c->top ? "-active" : "", i);
                g_test_add(name, Fixture, c, driver_fixture_setup, test_tree, driver_fixture_teardown);
        }
        return g_test_run();
}
