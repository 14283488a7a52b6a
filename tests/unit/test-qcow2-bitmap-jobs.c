/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Commit and stream, the real drivers on the real executor, on images with persistent bitmaps:
 * what a job writes into an image is recorded in its enabled bitmaps, as QEMU records writes. A
 * commit marks what it copies into base, a stream what it copies into the image, emptying the
 * top of an active commit all of it; disabled bitmaps and images the job does not write stay as
 * they were; afterwards `qemu-img check` is clean and nothing is in use.
 *
 * On chains where what a job writes is determined (every cluster it copies holds data, so it must
 * write each and may write nothing else), each bitmap is checked exactly, as qemu-nbd exports it:
 * what was dirty before, plus the written clusters rounded out to its granularity.
 *
 * Where it is not (zero clusters, which a job may skip or write), each bitmap is checked between
 * two bounds: at least what the job must have written (the data it copies), at most what it may
 * have written (where the image could change at all), each plus what was dirty before; read with
 * our own reader, which test-qcow2-bitmap.c checks against qemu-nbd. */

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

/* ---- exactly, as QEMU sees it ---------------------------------------------------------------- */

#define CHAIN_SIZE (16 * MiB)

/* base (64 KiB clusters) <- mid (4 KiB clusters) <- top (64 KiB clusters), each with bitmaps of
 * 512 B, 64 KiB and 1 MiB granularity, and one disabled after some writes, so that it holds
 * something that must not change. Every cluster a layer holds is data and no zero clusters: a job
 * copying a layer must write each of its clusters and has nothing it may skip. Writes start and
 * end either on a cluster boundary or where the layers below hold data: qemu-io allocates whole
 * clusters, and pads them from below, with data; padding with zeroes may leave holes in the
 * file, which read as zeroes. And where the data of two copied layers meet, it is on a boundary
 * of top's 64 KiB clusters: a write into part of a cluster of the image written fills the rest
 * from below (copy-on-write), which then need not be copied again, so which of the two a job
 * writes there would be up to it. layer_ranges() checks both. */
static void make_exact_chain(Fixture *f) {
        g_autofree char *base = path(f, "base.qcow2"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=65536 %s 16M", base));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s b512", base));
        g_free(oracle_run("qemu-img bitmap --add -g 65536 %s b64k", base));
        g_free(oracle_run("qemu-img bitmap --add -g 1M %s b1m", base));
        g_free(oracle_run("qemu-img bitmap --add -g 65536 %s boff", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xa1 0 4M' -c 'write -P 0xa2 13M 128k' %s", base));
        g_free(oracle_run("qemu-img bitmap --disable %s boff", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xa3 15M 64k' %s", base));

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 %s", mid));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s m512", mid));
        g_free(oracle_run("qemu-img bitmap --add -g 65536 %s m64k", mid));
        g_free(oracle_run("qemu-img bitmap --add -g 1M %s moff", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb1 1049088 2096640' -c 'write -P 0xb2 7270400 36k' %s", mid));
        g_free(oracle_run("qemu-img bitmap --disable %s moff", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb3 10M 1M' %s", mid));

        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s t512", top));
        g_free(oracle_run("qemu-img bitmap --add -g 65536 %s t64k", top));
        g_free(oracle_run("qemu-img bitmap --add -g 1M %s t1m", top));
        g_free(oracle_run("qemu-img bitmap --add -g 65536 %s toff", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc1 1000 1M' -c 'write -P 0xc2 10515760 20k' %s", top));
        g_free(oracle_run("qemu-img bitmap --disable %s toff", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc3 14M 64k' %s", top));
}

/* One bitmap as QEMU sees it: its flags (qemu-img info) and its dirty ranges (qemu-nbd). */
typedef struct OracleBitmapState {
        char *image, *name;
        uint64_t granularity;
        bool enabled;
        GArray *ranges;                 /* OracleRange */
} OracleBitmapState;

static void oracle_bitmap_state_free(gpointer p) {
        OracleBitmapState *b = p;
        g_free(b->image);
        g_free(b->name);
        g_array_unref(b->ranges);
        g_free(b);
}

/* Every bitmap of the images, as QEMU sees it. None may be in use. */
static GPtrArray *oracle_snapshot(Fixture *f, const char *const *images) {
        GPtrArray *states = g_ptr_array_new_with_free_func(oracle_bitmap_state_free);

        for (; *images; images++) {
                g_autofree char *list = oracle_bitmap_list(*images);
                g_auto(GStrv) bitmaps = g_strsplit(list, " ", -1);

                for (char **b = bitmaps; *b && **b; b++) {
                        g_auto(GStrv) fields = g_strsplit(*b, ":", 3);
                        OracleBitmapState *s = g_new0(OracleBitmapState, 1);

                        g_assert_cmpuint(g_strv_length(fields), ==, 3);
                        if (strstr(fields[2], "in-use"))
                                g_error("%s: bitmap %s is in use", *images, fields[0]);
                        s->image = g_strdup(*images);
                        s->name = g_strdup(fields[0]);
                        s->granularity = g_ascii_strtoull(fields[1], NULL, 10);
                        s->enabled = strstr(fields[2], "auto");
                        s->ranges = oracle_dirty(*images, s->name, f->dir);
                        g_ptr_array_add(states, s);
                }
        }
        return states;
}

/* The ranges that layers [min_depth, stop_depth) of the chain of 'image' hold, as qemu-img map
 * says: what a job copying those layers writes. Each must be data, or a job might skip it; and
 * where two of those layers meet, it is on a boundary of 'cluster' (the cluster size of the
 * image written), or which of them a job writes there is up to it (see make_exact_chain()). */
static GArray *layer_ranges(const char *image, int min_depth, int stop_depth, uint64_t cluster) {
        g_autoptr(GArray) map = oracle_map(image);
        GArray *ranges = g_array_new(FALSE, FALSE, sizeof(OracleRange));
        const OracleExtent *last = NULL;

        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (!e->present || e->depth < min_depth || e->depth >= stop_depth) {
                        last = NULL;
                        continue;
                }
                if (!e->data || e->zero)
                        g_error("%s: %" PRIu64 "+%" PRIu64 " reads as zeroes: a job may skip it", image, e->start,
                                e->length);
                if (last && last->depth != e->depth && e->start % cluster != 0)
                        g_error("%s: layers %d and %d meet at %" PRIu64 ", inside a cluster", image, last->depth,
                                e->depth, e->start);
                last = e;
                g_array_append_val(ranges, ((OracleRange) { e->start, e->length }));
        }
        g_assert_cmpuint(ranges->len, >, 0);
        return ranges;
}

/* 'before' and 'written' rounded out to 'granularity' (so many granules of an image of 'size'),
 * merged: what QEMU's bitmap holds after those writes. Counted granule by granule, independently
 * of the image code's own arithmetic. */
static GArray *rounded_union(GArray *before, GArray *written, uint64_t granularity, uint64_t size) {
        uint64_t n = (size + granularity - 1) / granularity;
        g_autofree bool *dirty = g_new0(bool, n);
        GArray *ranges = g_array_new(FALSE, FALSE, sizeof(OracleRange));

        for (GArray **a = (GArray *[]) { before, written, NULL }; *a; a++)
                for (guint i = 0; i < (*a)->len; i++) {
                        OracleRange *r = &g_array_index(*a, OracleRange, i);
                        for (uint64_t g = r->start / granularity; g * granularity < r->start + r->length; g++)
                                dirty[g] = true;
                }
        for (uint64_t g = 0; g < n; g++) {
                if (!dirty[g])
                        continue;
                OracleRange r = { g * granularity, MIN(granularity, size - g * granularity) };
                if (ranges->len > 0) {
                        OracleRange *last = &g_array_index(ranges, OracleRange, ranges->len - 1);
                        if (last->start + last->length == r.start) {
                                last->length += r.length;
                                continue;
                        }
                }
                g_array_append_val(ranges, r);
        }
        return ranges;
}

static bool ranges_equal(GArray *a, GArray *b) {
        return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len * sizeof(OracleRange)) == 0);
}

static void log_ranges(const char *what, GArray *a) {
        g_autoptr(GString) s = g_string_new(NULL);

        for (guint i = 0; i < a->len; i++)
                g_string_append_printf(s, " %" PRIu64 "+%" PRIu64, g_array_index(a, OracleRange, i).start,
                                       g_array_index(a, OracleRange, i).length);
        g_test_message("%s:%s", what, s->str);
}

typedef struct Written {
        const char *image;
        GArray *ranges;                 /* OracleRange */
} Written;

/* Every bitmap of 'before' as QEMU now sees it: an enabled one of an image the job wrote holds
 * what it held and what was written there, rounded out to its granularity; every other one is
 * as it was. Flags and granularities are as they were (nothing in use), `qemu-img check` is clean
 * and `qemu-img info` says nothing is inconsistent. Returns how many bitmaps gained granules. */
static unsigned assert_exact(Fixture *f, GPtrArray *before, const char *const *images, const Written *written,
                             size_t n_written) {
        g_autoptr(GPtrArray) after = oracle_snapshot(f, images);
        unsigned grown = 0;

        g_assert_cmpuint(after->len, ==, before->len);
        for (guint i = 0; i < before->len; i++) {
                OracleBitmapState *b = before->pdata[i], *a = after->pdata[i];
                g_autoptr(GArray) expected = NULL;

                g_assert_cmpstr(a->image, ==, b->image);
                g_assert_cmpstr(a->name, ==, b->name);
                g_assert_cmpuint(a->granularity, ==, b->granularity);
                g_assert_cmpint(a->enabled, ==, b->enabled);
                expected = g_array_copy(b->ranges);
                for (size_t w = 0; w < n_written; w++)
                        if (b->enabled && g_str_equal(b->image, written[w].image)) {
                                g_array_unref(expected);
                                expected = rounded_union(b->ranges, written[w].ranges, b->granularity, CHAIN_SIZE);
                        }
                if (!ranges_equal(a->ranges, expected)) {
                        log_ranges("before", b->ranges);
                        log_ranges("qemu-nbd", a->ranges);
                        log_ranges("expected", expected);
                        g_error("%s: bitmap %s is not what was written", b->image, b->name);
                }
                grown += !ranges_equal(a->ranges, b->ranges);
        }
        for (const char *const *i = images; *i; i++) {
                g_autofree char *out = NULL, *err = NULL, *info = NULL;
                if (oracle_try(&out, &err, "qemu-img check %s", *i) != 0)
                        g_error("qemu-img check %s: %s%s", *i, out, err);
                info = oracle_run("qemu-img info %s", *i);
                g_assert_null(strstr(info, "inconsistent"));
                g_assert_null(strstr(info, "in-use"));
        }
        return grown;
}

/* Committing mid into base marks in base's enabled bitmaps exactly mid's clusters; base's
 * disabled bitmap, mid's and top's (only top's header is rewritten) stay as they were. */
static void test_commit_exact(Fixture *f, gconstpointer data) {
        g_autofree char *base = path(f, "base.qcow2"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");
        const char *const images[] = { base, mid, top, NULL };
        g_autofree char *error = NULL;
        g_autoptr(GPtrArray) before = NULL;
        g_autoptr(GArray) copied = NULL;
        Commit *c = NULL;

        make_exact_chain(f);
        before = oracle_snapshot(f, images);
        copied = layer_ranges(mid, 0, 1, 65536);

        TestCommitParams p = { .image = top, .top = mid, .base = base };
        if (test_commit_open(&p, &c, &error) < 0)
                g_error("commit_open: %s", error);
        start_job(f, &commit_driver, c, commit_size(c));
        run_to_end(f, SUCCESS);

        /* b512, b64k, b1m. */
        g_assert_cmpuint(assert_exact(f, before, images, &(Written) { base, copied }, 1), ==, 3);
}

/* An active commit of top into base (mid in between) marks in base's enabled bitmaps exactly the
 * clusters of top and mid, and in top's all of it (emptied: QEMU marks discards); disabled ones
 * and mid's stay as they were. */
static void test_commit_active_exact(Fixture *f, gconstpointer data) {
        g_autofree char *base = path(f, "base.qcow2"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");
        const char *const images[] = { base, mid, top, NULL };
        g_autofree char *error = NULL;
        g_autoptr(GPtrArray) before = NULL;
        g_autoptr(GArray) copied = NULL, all = g_array_new(FALSE, FALSE, sizeof(OracleRange));
        Commit *c = NULL;
        Job *j;

        make_exact_chain(f);
        before = oracle_snapshot(f, images);
        copied = layer_ranges(top, 0, 2, 65536);
        g_array_append_val(all, ((OracleRange) { 0, CHAIN_SIZE }));

        TestCommitParams p = { .image = top, .base = base };
        if (test_commit_open(&p, &c, &error) < 0)
                g_error("commit_open: %s", error);
        start_job(f, &commit_driver, c, commit_size(c));
        j = f->job;
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        run_to_end(f, "created running ready waiting pending concluded null ");

        /* b512, b64k, b1m; t512, t64k, t1m. */
        g_assert_cmpuint(assert_exact(f, before, images, (Written[]) { { base, copied }, { top, all } }, 2), ==, 6);
}

/* Streaming into top marks in its enabled bitmaps exactly the clusters it copies from below: all
 * of mid and base that top does not hide, or with base kept, mid's only. Nothing else changes. */
static void test_stream_exact(Fixture *f, gconstpointer data) {
        bool keep_base = GPOINTER_TO_INT(data);
        g_autofree char *base = path(f, "base.qcow2"), *mid = path(f, "mid.qcow2"), *top = path(f, "top.qcow2");
        const char *const images[] = { base, mid, top, NULL };
        g_autofree char *error = NULL;
        g_autoptr(GPtrArray) before = NULL;
        g_autoptr(GArray) copied = NULL;
        Stream *s = NULL;

        make_exact_chain(f);
        before = oracle_snapshot(f, images);
        copied = layer_ranges(top, 1, keep_base ? 2 : 3, 65536);

        TestStreamParams p = { .image = top, .base = keep_base ? base : NULL };
        if (test_stream_open(&p, &s, &error) < 0)
                g_error("stream_open: %s", error);
        start_job(f, &stream_driver, s, stream_size(s));
        run_to_end(f, SUCCESS);

        /* t512, t64k, t1m. */
        g_assert_cmpuint(assert_exact(f, before, images, &(Written) { top, copied }, 1), ==, 3);
}

#define TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        TEST("/bitmap-jobs/commit", test_commit);
        TEST("/bitmap-jobs/stream", test_stream);
        TEST("/bitmap-jobs/commit-active", test_commit_active);
        TEST("/bitmap-jobs/exact/commit", test_commit_exact);
        TEST("/bitmap-jobs/exact/commit-active", test_commit_active_exact);
        g_test_add("/bitmap-jobs/exact/stream", Fixture, GINT_TO_POINTER(false), driver_fixture_setup,
                   test_stream_exact, driver_fixture_teardown);
        g_test_add("/bitmap-jobs/exact/stream-base", Fixture, GINT_TO_POINTER(true), driver_fixture_setup,
                   test_stream_exact, driver_fixture_teardown);
        return g_test_run();
}
