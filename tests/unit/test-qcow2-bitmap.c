/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Persistent dirty bitmaps read against the oracle: bitmaps made by `qemu-img bitmap`, dirtied by
 * qemu-io's writes (QEMU records them in the enabled bitmaps), listed as `qemu-img info` lists
 * them, and read bit for bit as qemu-nbd exports them (`-B NAME`, seen through `qemu-img map` with
 * x-dirty-bitmap) and as the writes we made say they must be. */

#include <fcntl.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image.h"
#include "qemu-oracle.h"

typedef OracleRange Range;

typedef struct Fixture {
        char *dir;
        char *img;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        f->dir = g_dir_make_tmp("blockjobd-bitmap-XXXXXX", &error);
        g_assert_no_error(error);
        f->img = g_build_filename(f->dir, "a.qcow2", NULL);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_free(oracle_run("rm -rf %s", f->dir));
        g_free(f->dir);
        g_free(f->img);
}

/* ---- the oracle's view --------------------------------------------------------------------- */

typedef struct OracleBitmap {
        char name[64];
        uint64_t granularity;
        bool in_use, autoflag;
} OracleBitmap;

/* The bitmaps `qemu-img info --output=json` lists, in its order. Names in these tests are plain
 * words, and the objects of the list hold no objects, so a walk over the JSON text does. */
static GArray *oracle_bitmaps(const char *image) {
        g_autofree char *json = oracle_run("qemu-img info -U --output=json %s", image);
        GArray *list = g_array_new(FALSE, TRUE, sizeof(OracleBitmap));
        char *p = strstr(json, "\"bitmaps\": [");

        if (!p)
                return list;
        p += strlen("\"bitmaps\": [");
        for (;;) {
                OracleBitmap b = {};
                char *end, *name;

                p += strspn(p, " \n,");
                if (*p != '{')
                        break;
                end = strchr(p, '}');
                g_assert_nonnull(end);
                *end = 0;
                b.in_use = strstr(p, "\"in-use\"");
                b.autoflag = strstr(p, "\"auto\"");
                name = strstr(p, "\"name\": \"");
                g_assert_nonnull(name);
                name += strlen("\"name\": \"");
                g_assert_nonnull(strchr(name, '"'));
                g_strlcpy(b.name, name, MIN(sizeof(b.name), (size_t) (strchr(name, '"') - name + 1)));
                b.granularity = g_ascii_strtoull(strstr(p, "\"granularity\": ") + 15, NULL, 10);
                g_array_append_val(list, b);
                p = end + 1;
        }
        return list;
}

/* ---- our view ------------------------------------------------------------------------------ */

static Image *open_image(const char *path, unsigned flags) {
        g_autofree char *error = NULL;
        Image *img = NULL;

        if (image_open(path, IMAGE_FORMAT_QCOW2, flags | IMAGE_OPEN_NO_LOCK, &img, &error) < 0)
                g_error("could not open %s: %s", path, error);
        return img;
}

static GArray *our_dirty(const ImageDirtyMap *m) {
        GArray *ranges = g_array_new(FALSE, FALSE, sizeof(Range));
        Range r;

        for (uint64_t off = 0; image_dirty_map_next(m, off, &r.start, &r.length); off = r.start + r.length)
                g_array_append_val(ranges, r);
        return ranges;
}

static ImageDirtyMap *load(Image *img, const char *name) {
        ImageDirtyMap *m = NULL;

        if (image_bitmap_load(img, name, &m) < 0)
                g_error("could not load bitmap %s: %s", name, image_error(img));
        return m;
}

static void assert_ranges_equal(GArray *a, GArray *b, const char *what) {
        bool same = a->len == b->len;

        for (guint i = 0; same && i < a->len; i++)
                same = memcmp(&g_array_index(a, Range, i), &g_array_index(b, Range, i), sizeof(Range)) == 0;
        if (same)
                return;
        for (guint i = 0; i < MAX(a->len, b->len); i++)
                g_test_message("%u: ours %" PRIu64 "+%" PRIu64 "  expected %" PRIu64 "+%" PRIu64, i,
                               i < a->len ? g_array_index(a, Range, i).start : 0,
                               i < a->len ? g_array_index(a, Range, i).length : 0,
                               i < b->len ? g_array_index(b, Range, i).start : 0,
                               i < b->len ? g_array_index(b, Range, i).length : 0);
        g_error("%s: dirty ranges differ", what);
}

/* Our list is `qemu-img info`'s: names, granularities and flags, in order. */
static void assert_list_matches_oracle(Image *img, const char *path) {
        g_autoptr(GArray) oracle = oracle_bitmaps(path);
        ImageBitmapInfo *list = NULL;
        size_t n = 0;

        g_assert_cmpint(image_bitmap_list(img, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, oracle->len);
        for (size_t i = 0; i < n; i++) {
                OracleBitmap *o = &g_array_index(oracle, OracleBitmap, i);
                g_assert_cmpstr(list[i].name, ==, o->name);
                g_assert_cmpuint(list[i].granularity, ==, o->granularity);
                g_assert_cmpint(!!(list[i].flags & IMAGE_BITMAP_AUTO), ==, o->autoflag);
                g_assert_cmpint(!!(list[i].flags & IMAGE_BITMAP_IN_USE), ==, o->in_use);
        }
        image_bitmap_list_free(list, n);
}

/* The bitmap as qemu-nbd exports it, and as 'expected' (ranges we wrote, rounded out to the
 * granularity, merged) says. Returns the dirty byte count it checked. */
static void assert_bitmap(Fixture *f, Image *img, const char *name, GArray *expected) {
        g_autoptr(GArray) ours = NULL, theirs = NULL;
        ImageDirtyMap *m = load(img, name);
        uint64_t total = 0;

        ours = our_dirty(m);
        theirs = oracle_dirty(f->img, name, f->dir);
        assert_ranges_equal(ours, theirs, "against qemu-nbd");
        if (expected)
                assert_ranges_equal(ours, expected, "against the writes");
        for (guint i = 0; i < ours->len; i++)
                total += g_array_index(ours, Range, i).length;
        g_assert_cmpuint(image_dirty_map_count(m), ==, total);
        image_dirty_map_free(m);
}

/* The writes (offset, length) rounded out to 'granularity', merged, clipped to 'size'. */
static GArray *expected_ranges(const uint64_t (*writes)[2], size_t n, uint64_t granularity, uint64_t size) {
        ImageDirtyMap *m = NULL;
        GArray *r;

        g_assert_cmpint(image_dirty_map_new(size, (uint32_t) granularity, &m), ==, 0);
        for (size_t i = 0; i < n; i++)
                image_dirty_map_set(m, writes[i][0], writes[i][1]);
        r = our_dirty(m);
        image_dirty_map_free(m);
        return r;
}

static void qemu_io_writes(const char *path, const uint64_t (*writes)[2], size_t n) {
        g_autoptr(GString) cmd = g_string_new("qemu-io -f qcow2");

        for (size_t i = 0; i < n; i++)
                g_string_append_printf(cmd, " -c 'write -P 0x%02zx %" PRIu64 " %" PRIu64 "'", i + 1, writes[i][0],
                                       writes[i][1]);
        g_string_append_printf(cmd, " %s", path);
        g_free(oracle_run("%s", cmd->str));
}

/* ---- reading what QEMU made ---------------------------------------------------------------- */

typedef struct Layout {
        const char *cluster_size;
        uint64_t size;
} Layout;

static const uint64_t some_writes[][2] = {
        { 1, 3 },                               /* inside the first granule, unaligned */
        { 65536 + 100, 4096 },                  /* across a 4 KiB boundary */
        { (1 << 20) - 512, 1024 },              /* across 1 MiB */
        { 6000001, 70000 },                     /* odd offset and length */
        { (3 << 20), 2 << 20 },                 /* 2 MiB run */
};

/* Bitmaps of several granularities, enabled and one disabled, on layouts of several cluster
 * sizes; qemu-io writes; each bitmap read as QEMU exports it and as the writes say. */
static void test_read_qemu_bitmaps(Fixture *f, gconstpointer data) {
        static const Layout layouts[] = {
                { "64k", 8 << 20 },
                { "512", 8 << 20 },
                { "2M", (8 << 20) + 512 },      /* a partial last granule */
        };
        static const struct { const char *name; uint64_t granularity; } bitmaps[] = {
                { "g512", 512 }, { "g64k", 65536 }, { "g1m", 1 << 20 }, { "g2g", UINT64_C(1) << 31 },
        };

        for (size_t l = 0; l < G_N_ELEMENTS(layouts); l++) {
                Image *img;

                g_unlink(f->img);
                g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=%s %s %" PRIu64, layouts[l].cluster_size,
                                  f->img, layouts[l].size));
                for (size_t b = 0; b < G_N_ELEMENTS(bitmaps); b++)
                        g_free(oracle_run("qemu-img bitmap --add -g %" PRIu64 " %s %s", bitmaps[b].granularity, f->img,
                                          bitmaps[b].name));
                g_free(oracle_run("qemu-img bitmap --add --disable %s off", f->img));
                qemu_io_writes(f->img, some_writes, G_N_ELEMENTS(some_writes));

                img = open_image(f->img, 0);
                g_assert_false(image_bitmaps_lost(img));
                assert_list_matches_oracle(img, f->img);
                for (size_t b = 0; b < G_N_ELEMENTS(bitmaps); b++) {
                        g_autoptr(GArray) expected = expected_ranges(some_writes, G_N_ELEMENTS(some_writes),
                                                                     bitmaps[b].granularity, layouts[l].size);
                        assert_bitmap(f, img, bitmaps[b].name, expected);
                }
                /* Disabled: nothing recorded. */
                g_autoptr(GArray) none = g_array_new(FALSE, FALSE, sizeof(Range));
                assert_bitmap(f, img, "off", none);
                image_close(img);
        }
}

/* The default granularity is QEMU's: the cluster size, within 4 KiB to 64 KiB. */
static void test_default_granularity(Fixture *f, gconstpointer data) {
        static const struct { const char *cluster; uint32_t granularity; } cases[] = {
                { "512", 4096 }, { "8k", 8192 }, { "64k", 65536 }, { "2M", 65536 },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                ImageBitmapInfo *list = NULL;
                size_t n = 0;
                Image *img;

                g_unlink(f->img);
                g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=%s %s 8M", cases[i].cluster, f->img));
                g_free(oracle_run("qemu-img bitmap --add %s def", f->img));
                img = open_image(f->img, 0);
                g_assert_cmpint(image_bitmap_list(img, &list, &n), ==, 0);
                g_assert_cmpuint(n, ==, 1);
                g_assert_cmpuint(list[0].granularity, ==, cases[i].granularity);
                image_bitmap_list_free(list, n);
                image_close(img);
        }
}

/* Bitmaps in an overlay and in its backing file are each the layer's own. */
static void test_backing_chain(Fixture *f, gconstpointer data) {
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        static const uint64_t base_writes[][2] = { { 0, 65536 }, { 5 << 20, 512 } };
        static const uint64_t top_writes[][2] = { { 1 << 20, 4096 } };
        g_autoptr(GArray) base_expected = expected_ranges(base_writes, 2, 65536, 8 << 20);
        g_autoptr(GArray) top_expected = expected_ranges(top_writes, 1, 65536, 8 << 20);
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", base));
        g_free(oracle_run("qemu-img bitmap --add %s inbase", base));
        qemu_io_writes(base, base_writes, 2);
        g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F qcow2 %s", base, f->img));
        g_free(oracle_run("qemu-img bitmap --add %s intop", f->img));
        qemu_io_writes(f->img, top_writes, 1);

        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        assert_bitmap(f, img, "intop", top_expected);
        assert_list_matches_oracle(image_backing(img), base);
        ImageDirtyMap *m = load(image_backing(img), "inbase");
        g_autoptr(GArray) ours = our_dirty(m);
        assert_ranges_equal(ours, base_expected, "backing file's bitmap");
        image_dirty_map_free(m);
        /* A bitmap of the other layer is not this one's. */
        g_assert_cmpint(image_bitmap_load(img, "inbase", &m), ==, -ENOENT);
        g_assert_cmpstr(image_error(img), ==, "Dirty bitmap 'inbase' not found");
        image_close(img);
}

/* A QEMU that dies with the image open leaves its bitmaps in_use: listed as such, and refused
 * with QEMU's words when read. */
static void test_in_use_after_kill(Fixture *f, gconstpointer data) {
        ImageBitmapInfo *list = NULL;
        ImageDirtyMap *m = NULL;
        GSubprocess *p;
        size_t n = 0;
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s b", f->img));
        p = oracle_qemu_io_hold(f->img, "qcow2", false);
        /* It marks the bitmap in_use just after it takes its locks. */
        for (int i = 0;; i++) {
                g_autofree char *info = oracle_run("qemu-img info -U %s", f->img);
                if (strstr(info, "in-use"))
                        break;
                g_assert_cmpint(i, <, 500);
                g_usleep(10 * 1000);
        }
        g_subprocess_send_signal(p, SIGKILL);
        g_assert_true(g_subprocess_wait(p, NULL, NULL));
        g_object_unref(p);

        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        g_assert_cmpint(image_bitmap_list(img, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(list[0].flags, ==, IMAGE_BITMAP_IN_USE | IMAGE_BITMAP_AUTO | IMAGE_BITMAP_INCONSISTENT);
        image_bitmap_list_free(list, n);
        g_assert_cmpint(image_bitmap_load(img, "b", &m), ==, -EBUSY);
        g_assert_cmpstr(image_error(img), ==, "Bitmap 'b' is inconsistent and cannot be used");
        image_close(img);
}

static void poke(const char *path, uint64_t offset, const void *bytes, size_t n) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, bytes, n, offset), ==, (ssize_t) n);
        g_assert_cmpint(close(fd), ==, 0);
}

static uint64_t peek_be(const char *path, uint64_t offset, unsigned width) {
        uint8_t b[8];
        uint64_t v = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(pread(fd, b, width, offset), ==, (ssize_t) width);
        close(fd);
        for (unsigned i = 0; i < width; i++)
                v = v << 8 | b[i];
        return v;
}

static void poke_be64(const char *path, uint64_t offset, uint64_t v) {
        uint8_t b[8];
        for (int i = 7; i >= 0; i--, v >>= 8)
                b[i] = (uint8_t) v;
        poke(path, offset, b, 8);
}

/* The autoclear bit cleared, as a program lacking bitmap support leaves it: QEMU lists no
 * bitmaps, and neither do we, but we say they were lost. */
static void test_autoclear_clear(Fixture *f, gconstpointer data) {
        ImageBitmapInfo *list = NULL;
        ImageDirtyMap *m = NULL;
        size_t n = 1;
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s b", f->img));
        poke_be64(f->img, 88, 0);

        img = open_image(f->img, 0);
        g_assert_true(image_bitmaps_lost(img));
        assert_list_matches_oracle(img, f->img);
        g_assert_cmpint(image_bitmap_list(img, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 0);
        image_bitmap_list_free(list, n);
        g_assert_cmpint(image_bitmap_load(img, "b", &m), ==, -ENOENT);
        image_close(img);
}

/* The bitmap directory entry of the first bitmap, and its table's offset. */
static uint64_t first_table_offset(const char *path) {
        uint32_t header_length = (uint32_t) peek_be(path, 100, 4);

        for (uint64_t pos = header_length;;) {
                uint32_t type = (uint32_t) peek_be(path, pos, 4), len = (uint32_t) peek_be(path, pos + 4, 4);
                g_assert_cmpuint(type, !=, 0);
                if (type == 0x23852875)
                        return peek_be(path, peek_be(path, pos + 8 + 16, 8), 8);
                pos += 8 + ((len + 7) & ~7U);
        }
}

/* Table entries that say "all zeroes" and "all ones" (QEMU reads both, though it writes only
 * the first): a 512-byte cluster image whose 512-byte granularity bitmap has four entries. */
static void test_all_ones_entry(Fixture *f, gconstpointer data) {
        static const uint64_t writes[][2] = { { 0, 512 }, { 7 << 20, 4096 } };
        uint64_t table;
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=512 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s b", f->img));
        qemu_io_writes(f->img, writes, 2);
        table = first_table_offset(f->img);
        /* Entries 1 and 2 cover untouched megabytes: all zeroes. Entry 2 becomes all ones. */
        g_assert_cmpuint(peek_be(f->img, table + 8, 8), ==, 0);
        g_assert_cmpuint(peek_be(f->img, table + 16, 8), ==, 0);
        poke_be64(f->img, table + 16, 1);

        g_autoptr(GArray) expected = g_array_new(FALSE, FALSE, sizeof(Range));
        Range r[] = { { 0, 512 }, { 4 << 20, 2 << 20 }, { 7 << 20, 4096 } };
        for (size_t i = 0; i < G_N_ELEMENTS(r); i++)
                g_array_append_val(expected, r[i]);
        img = open_image(f->img, 0);
        assert_bitmap(f, img, "b", expected);
        image_close(img);
}

/* A layer opened for writing reads its directory at once: the bitmaps are there to list. */
static void test_writable_open(Fixture *f, gconstpointer data) {
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s b1", f->img));
        g_free(oracle_run("qemu-img bitmap --add --disable -g 512 %s b2", f->img));
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        assert_list_matches_oracle(img, f->img);
        image_close(img);
        /* Opening and closing changed nothing. */
        g_autofree char *check = oracle_run("qemu-img check -q %s", f->img);
        g_assert_cmpstr(g_strstrip(check), ==, "");
}

static void test_raw_has_none(Fixture *f, gconstpointer data) {
        g_autofree char *raw = g_build_filename(f->dir, "a.raw", NULL);
        g_autofree char *error = NULL;
        ImageBitmapInfo *list = NULL;
        ImageDirtyMap *m = NULL;
        Image *img = NULL;
        size_t n = 1;

        g_free(oracle_run("qemu-img create -q -f raw %s 1M", raw));
        g_assert_cmpint(image_open(raw, IMAGE_FORMAT_RAW, IMAGE_OPEN_NO_LOCK, &img, &error), ==, 0);
        g_assert_cmpint(image_bitmap_list(img, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 0);
        image_bitmap_list_free(list, n);
        g_assert_cmpint(image_bitmap_load(img, "x", &m), ==, -ENOENT);
        g_assert_false(image_bitmaps_lost(img));
        image_close(img);
}

/* ---- dirty maps ---------------------------------------------------------------------------- */

static void test_dirty_map(void) {
        ImageDirtyMap *m = NULL;
        uint64_t s, l;

        g_assert_cmpint(image_dirty_map_new(1000, 256, &m), ==, -EINVAL);
        g_assert_cmpint(image_dirty_map_new(1000, 1000, &m), ==, -EINVAL);
        g_assert_cmpint(image_dirty_map_new(UINT64_C(1) << 62, 512, &m), ==, -E2BIG);

        /* 200 granules and a half. */
        g_assert_cmpint(image_dirty_map_new(200 * 512 + 256, 512, &m), ==, 0);
        g_assert_cmpuint(m->nbits, ==, 201);
        g_assert_false(image_dirty_map_next(m, 0, &s, &l));
        g_assert_cmpuint(image_dirty_map_count(m), ==, 0);
        image_dirty_map_set(m, 511, 2);                 /* granules 0 and 1 */
        image_dirty_map_set(m, 63 * 512, 66 * 512);     /* 63 .. 128, across words */
        image_dirty_map_set(m, 200 * 512, 1 << 20);     /* the last, partial one; clipped */
        g_assert_true(image_dirty_map_next(m, 0, &s, &l));
        g_assert_cmpuint(s, ==, 0);
        g_assert_cmpuint(l, ==, 1024);
        g_assert_true(image_dirty_map_next(m, 1024, &s, &l));
        g_assert_cmpuint(s, ==, 63 * 512);
        g_assert_cmpuint(l, ==, 66 * 512);
        g_assert_true(image_dirty_map_next(m, 100 * 512 + 7, &s, &l));
        g_assert_cmpuint(s, ==, 100 * 512 + 7);
        g_assert_cmpuint(l, ==, 129 * 512 - s);
        g_assert_true(image_dirty_map_next(m, 129 * 512, &s, &l));
        g_assert_cmpuint(s, ==, 200 * 512);
        g_assert_cmpuint(l, ==, 256);
        g_assert_false(image_dirty_map_next(m, 200 * 512 + 256, &s, &l));
        g_assert_cmpuint(image_dirty_map_count(m), ==, 2 * 512 + 66 * 512 + 256);

        /* Reset: granules covered whole only; the partial last one by the end of the disk. */
        image_dirty_map_reset(m, 100, 1000);            /* covers granule 1 whole, not 0 */
        g_assert_true(image_dirty_map_next(m, 0, &s, &l));
        g_assert_cmpuint(s, ==, 0);
        g_assert_cmpuint(l, ==, 512);
        image_dirty_map_reset(m, 64 * 512, 64 * 512);   /* granules 64 .. 127 */
        g_assert_true(image_dirty_map_next(m, 512, &s, &l));
        g_assert_cmpuint(s, ==, 63 * 512);
        g_assert_cmpuint(l, ==, 512);
        g_assert_true(image_dirty_map_next(m, 64 * 512, &s, &l));
        g_assert_cmpuint(s, ==, 128 * 512);
        g_assert_cmpuint(l, ==, 512);
        image_dirty_map_reset(m, 200 * 512, 256);       /* the partial last one */
        g_assert_true(image_dirty_map_next(m, 129 * 512, &s, &l) == false);
        g_assert_cmpuint(image_dirty_map_count(m), ==, 3 * 512);
        image_dirty_map_free(m);
}


/* ---- changing bitmaps ---------------------------------------------------------------------- */

/* qemu-img check finds nothing (no corruption, no leak), and qemu-img info does not warn. */
static void assert_clean(const char *path) {
        g_autofree char *out = NULL, *err = NULL, *info_err = NULL;
        int status = oracle_try(&out, &err, "qemu-img check %s", path);

        if (status != 0)
                g_error("qemu-img check %s: status %d: %s%s", path, status, out, err);
        g_assert_cmpint(oracle_try(NULL, &info_err, "qemu-img info %s", path), ==, 0);
        g_assert_null(strstr(info_err, "lacking bitmap support"));
        g_assert_null(strstr(info_err, "inconsistent"));
}

static guint oracle_count(const char *path) {
        g_autoptr(GArray) list = oracle_bitmaps(path);
        return list->len;
}

static bool oracle_info_says(const char *path, const char *what) {
        g_autofree char *info = oracle_run("qemu-img info -U %s", path);
        return strstr(info, what);
}

static void must(Image *img, int r) {
        if (r < 0)
                g_error("%s", image_error(img));
}

static void assert_fails(Image *img, int r, int expected_r, const char *expected) {
        g_assert_cmpint(r, ==, expected_r);
        if (!strstr(image_error(img), expected))
                g_error("error \"%s\" does not say \"%s\"", image_error(img), expected);
}

static GArray *no_ranges(void) {
        return g_array_new(FALSE, FALSE, sizeof(Range));
}

/* Bitmaps we add are QEMU's: listed by qemu-img info with their flags, and recording qemu-io's
 * writes when enabled. */
static void test_add(Fixture *f, gconstpointer data) {
        static const uint64_t writes[][2] = { { 4096, 1 }, { 5 << 20, 70000 } };
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 %s 8M", f->img));
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_bitmap_add(img, "a", 0, false));
        must(img, image_bitmap_add(img, "b", 512, true));
        must(img, image_bitmap_add(img, "c", UINT32_C(1) << 31, false));
        assert_list_matches_oracle(img, f->img);
        image_close(img);
        assert_clean(f->img);

        qemu_io_writes(f->img, writes, G_N_ELEMENTS(writes));
        assert_clean(f->img);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        g_autoptr(GArray) a = expected_ranges(writes, 2, 4096, 8 << 20);
        g_autoptr(GArray) c = expected_ranges(writes, 2, UINT64_C(1) << 31, 8 << 20);
        g_autoptr(GArray) none = no_ranges();
        assert_bitmap(f, img, "a", a);
        assert_bitmap(f, img, "b", none);
        assert_bitmap(f, img, "c", c);
        image_close(img);
}

static uint64_t ext_position(const char *path) {
        for (uint64_t pos = peek_be(path, 100, 4);; pos += 8 + ((peek_be(path, pos + 4, 4) + 7) & ~UINT64_C(7))) {
                uint32_t type = (uint32_t) peek_be(path, pos, 4);
                if (type == 0 || type == 0x23852875)
                        return type ? pos : 0;
        }
}

/* A change of the bitmaps keeps the header's layout: the extension stays where QEMU put it (a
 * change that keeps some bitmaps then rewrites its 24 bytes and nothing else), and the backing
 * file name stays as it is. */
static void test_header_layout_kept(Fixture *f, gconstpointer data) {
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        uint64_t pos;
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F qcow2 %s", base, f->img));
        g_free(oracle_run("qemu-img bitmap --add %s a", f->img));
        pos = ext_position(f->img);
        g_assert_cmpuint(pos, >, 0);
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_bitmap_add(img, "b", 0, false));
        must(img, image_bitmap_remove(img, "a"));
        image_close(img);
        g_assert_cmpuint(ext_position(f->img), ==, pos);
        assert_clean(f->img);
        img = open_image(f->img, 0);
        g_assert_cmpstr(image_backing_name(img), ==, base);
        g_assert_cmpint(image_backing_format(img), ==, IMAGE_FORMAT_QCOW2);
        image_close(img);
}

/* A header with no room for the extension (512-byte clusters, a backing file name that fills the
 * first one; the backing file need not exist, the chain is not opened): the change is refused
 * before anything names what it wrote, which is freed again; the image is as it was. */
static void test_header_no_room(Fixture *f, gconstpointer data) {
        g_autofree char *name = NULL, *info = NULL;
        uint64_t name_offset;
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=512 %s 1M", f->img));
        g_free(oracle_run("qemu-img rebase -u -b b.qcow2 -F qcow2 %s", f->img));
        name_offset = peek_be(f->img, 8, 8);
        /* A name that leaves less room than an extension takes (32 bytes). */
        name = g_strnfill(512 - name_offset - 16, 'b');
        g_free(oracle_run("qemu-img rebase -u -b %s -F qcow2 %s", name, f->img));

        img = open_image(f->img, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING);
        assert_fails(img, image_bitmap_add(img, "a", 0, false), -ENOSPC, "has no room to be rewritten");
        g_assert_cmpstr(image_backing_name(img), ==, name);
        image_close(img);
        /* Checked without its (missing) backing file. */
        g_autofree char *out = NULL, *err = NULL;
        int status = oracle_try(&out, &err, "qemu-img check 'json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}'", f->img);
        if (status != 0)
                g_error("qemu-img check: status %d: %s%s", status, out, err);
        info = oracle_run("qemu-img info -U --output=json %s", f->img);
        g_assert_null(strstr(info, "bitmaps"));
        g_assert_nonnull(strstr(info, name));
}

/* QEMU's refusals, with its texts; nothing changes. */
static void test_refusals(Fixture *f, gconstpointer data) {
        g_autofree char *v2 = g_build_filename(f->dir, "v2.qcow2", NULL);
        g_autofree char *raw = g_build_filename(f->dir, "a.raw", NULL);
        g_autofree char *long_name = g_strnfill(1024, 'x');
        const char *sources[] = { "nope" };
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s a", f->img));
        img = open_image(f->img, 0);
        assert_fails(img, image_bitmap_add(img, "b", 0, false), -EBADF, "is not open for writing");
        image_close(img);

        img = open_image(f->img, IMAGE_OPEN_WRITE);
        assert_fails(img, image_bitmap_add(img, "a", 0, false), -EEXIST, "Bitmap already exists: a");
        assert_fails(img, image_bitmap_add(img, "", 0, false), -EINVAL, "Bitmap name cannot be empty");
        assert_fails(img, image_bitmap_add(img, "b", 1000, false), -EINVAL, "Granularity must be power of 2 and at least 512");
        assert_fails(img, image_bitmap_add(img, "b", 256, false), -EINVAL, "Granularity must be power of 2 and at least 512");
        assert_fails(img, image_bitmap_add(img, long_name, 0, false), -EINVAL, "Name length exceeds maximum (1023 characters)");
        assert_fails(img, image_bitmap_remove(img, "b"), -ENOENT, "Dirty bitmap 'b' not found");
        assert_fails(img, image_bitmap_clear(img, "b"), -ENOENT, "Dirty bitmap 'b' not found");
        assert_fails(img, image_bitmap_enable(img, "b", true), -ENOENT, "Dirty bitmap 'b' not found");
        assert_fails(img, image_bitmap_merge(img, "a", sources, 1), -ENOENT, "Dirty bitmap 'nope' not found");
        image_close(img);
        assert_clean(f->img);
        g_assert_cmpuint(oracle_count(f->img), ==, 1);

        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 %s 8M", v2));
        img = open_image(v2, IMAGE_OPEN_WRITE);
        assert_fails(img, image_bitmap_add(img, "a", 0, false), -EOPNOTSUPP, "Cannot store dirty bitmaps in qcow2 v2 files");
        image_close(img);

        g_autofree char *error = NULL;
        g_free(oracle_run("qemu-img create -q -f raw %s 1M", raw));
        g_assert_cmpint(image_open(raw, IMAGE_FORMAT_RAW, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, &img, &error), ==, 0);
        assert_fails(img, image_bitmap_add(img, "a", 0, false), -EOPNOTSUPP, "Can't store persistent bitmaps to");
        image_close(img);
}

/* Clear, merge, disable, enable and remove bitmaps QEMU made and dirtied; after each, QEMU sees
 * what we say, the image checks clean, and the bitmaps we did not touch are as they were. */
static void test_change_qemu_bitmaps(Fixture *f, gconstpointer data) {
        static const uint64_t w1[][2] = { { 0, 4096 }, { 3 << 20, 1 << 20 } };
        static const uint64_t w2[][2] = { { 7 << 20, 512 } };
        static const uint64_t both[][2] = { { 0, 4096 }, { 3 << 20, 1 << 20 }, { 7 << 20, 512 } };
        const char *sources[] = { "b1", "b2" };
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s b1", f->img));
        qemu_io_writes(f->img, w1, 2);
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s b2", f->img));
        qemu_io_writes(f->img, w2, 1);
        g_autoptr(GArray) b1 = expected_ranges(both, 3, 65536, 8 << 20);
        g_autoptr(GArray) b2 = expected_ranges(w2, 1, 512, 8 << 20);
        /* b1's 64 KiB granules cover all of b2's: the merge is b1, in 4 KiB bits. */
        g_autoptr(GArray) merged = expected_ranges(both, 3, 65536, 8 << 20);
        g_autoptr(GArray) none = no_ranges();

        /* Merged into a new disabled bitmap of another granularity. */
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_bitmap_add(img, "m", 4096, true));
        must(img, image_bitmap_merge(img, "m", sources, 2));
        image_close(img);
        assert_clean(f->img);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        assert_bitmap(f, img, "m", merged);
        assert_bitmap(f, img, "b1", b1);
        assert_bitmap(f, img, "b2", b2);
        image_close(img);

        /* Cleared, disabled, enabled. */
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_bitmap_clear(img, "b1"));
        must(img, image_bitmap_enable(img, "b2", false));
        must(img, image_bitmap_enable(img, "m", true));
        image_close(img);
        assert_clean(f->img);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        assert_bitmap(f, img, "b1", none);
        assert_bitmap(f, img, "b2", b2);
        assert_bitmap(f, img, "m", merged);
        image_close(img);

        /* Replaced by a map of ours; one of another granularity is refused. */
        ImageDirtyMap *mine = NULL;
        g_assert_cmpint(image_dirty_map_new(8 << 20, 512, &mine), ==, 0);
        image_dirty_map_set(mine, 5 << 20, 1000);
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        assert_fails(img, image_bitmap_replace(img, "b1", mine), -EINVAL, "another granularity or size");
        must(img, image_bitmap_replace(img, "b2", mine));
        image_close(img);
        assert_clean(f->img);
        img = open_image(f->img, 0);
        g_autoptr(GArray) mine_ranges = our_dirty(mine);
        assert_bitmap(f, img, "b2", mine_ranges);
        image_close(img);
        image_dirty_map_free(mine);

        /* qemu-img works on what we wrote. */
        g_free(oracle_run("qemu-img bitmap --merge b2 %s b1", f->img));
        assert_clean(f->img);
        img = open_image(f->img, 0);
        static const uint64_t mine_w[][2] = { { 5 << 20, 1000 } };
        g_autoptr(GArray) b2_in_b1 = expected_ranges(mine_w, 1, 65536, 8 << 20);
        assert_bitmap(f, img, "b1", b2_in_b1);
        image_close(img);

        /* Removed one by one: the last one takes the extension and the autoclear bit along. */
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_bitmap_remove(img, "b2"));
        image_close(img);
        assert_clean(f->img);
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        assert_list_matches_oracle(img, f->img);
        must(img, image_bitmap_remove(img, "b1"));
        must(img, image_bitmap_remove(img, "m"));
        assert_list_matches_oracle(img, f->img);
        g_assert_false(image_bitmaps_lost(img));
        image_close(img);
        assert_clean(f->img);
        g_assert_cmpuint(peek_be(f->img, 88, 8), ==, 0);
        g_assert_false(oracle_info_says(f->img, "bitmaps"));
        /* And added again, to an image that had none. */
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_bitmap_add(img, "again", 0, false));
        image_close(img);
        assert_clean(f->img);
        g_assert_cmpuint(oracle_count(f->img), ==, 1);
}

/* An inconsistent bitmap can only be removed (as in QEMU), and removing it leaks nothing that
 * its table names. */
static void test_inconsistent_removed(Fixture *f, gconstpointer data) {
        const char *sources[] = { "b" };
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s b", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s ok", f->img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write 0 64k' %s", f->img));
        /* in_use, as a QEMU that died leaves it: flags of the first entry. */
        uint64_t ext = 0;
        for (uint64_t pos = peek_be(f->img, 100, 4);; pos += 8 + ((peek_be(f->img, pos + 4, 4) + 7) & ~UINT64_C(7)))
                if (peek_be(f->img, pos, 4) == 0x23852875) {
                        ext = pos + 8;
                        break;
                }
        uint8_t flags[4] = { 0, 0, 0, 3 };
        poke(f->img, peek_be(f->img, ext + 16, 8) + 12, flags, 4);

        img = open_image(f->img, IMAGE_OPEN_WRITE);
        assert_fails(img, image_bitmap_clear(img, "b"), -EBUSY, "Bitmap 'b' is inconsistent and cannot be used");
        assert_fails(img, image_bitmap_enable(img, "b", false), -EBUSY, "is inconsistent");
        assert_fails(img, image_bitmap_merge(img, "ok", sources, 1), -EBUSY, "is inconsistent");
        must(img, image_bitmap_remove(img, "b"));
        image_close(img);
        assert_clean(f->img);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        image_close(img);
}

/* Data written after bitmap changes, in the same opening: the bitmap added records it. */
static void test_write_after_change(Fixture *f, gconstpointer data) {
        static const uint64_t writes[][2] = { { 0, 4096 } };
        g_autoptr(GArray) expected = expected_ranges(writes, 1, 65536, 8 << 20);
        uint8_t buf[4096] = { 1 };
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_bitmap_add(img, "a", 0, false));
        must(img, image_write(img, buf, 0, sizeof(buf)));
        g_assert_false(image_bitmaps_lost(img));
        image_close(img);
        assert_clean(f->img);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        assert_bitmap(f, img, "a", expected);
        image_close(img);
}

/* Opened to change bitmaps only: the enabled bitmaps are neither loaded nor counted (the estimate
 * is smaller by their maps at least), a write of data is refused and changes nothing, and the
 * changes themselves are QEMU's; a later writable open records writes in the enabled ones. */
static void test_bitmaps_only(Fixture *f, gconstpointer data) {
        static const uint64_t writes[][2] = { { 0, 4096 } };
        g_autoptr(GArray) expected = expected_ranges(writes, 1, 512, 64 << 20);
        g_autoptr(GArray) none = no_ranges();
        const char *sources[] = { "big" };
        uint8_t buf[4096] = { 1 };
        uint64_t full, only;
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64M", f->img));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s big", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s small", f->img));
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        full = image_memory_estimate(img);
        image_close(img);

        img = open_image(f->img, IMAGE_OPEN_WRITE | IMAGE_OPEN_BITMAPS_ONLY);
        only = image_memory_estimate(img);
        /* The map of 'big' (16 KiB) is not counted, nor the two of any change. */
        g_assert_cmpuint(only + 3 * 16384, <=, full);
        g_assert_cmpuint(image_bitmap_change_memory(img, sources, 1), ==, 2 * 16384);
        assert_fails(img, image_write(img, buf, 0, sizeof(buf)), -EBADF, "its bitmaps only");
        must(img, image_bitmap_enable(img, "small", false));
        must(img, image_bitmap_clear(img, "small"));
        must(img, image_bitmap_merge(img, "small", sources, 1));
        must(img, image_flush(img));
        image_close(img);
        assert_clean(f->img);
        g_autofree char *read = oracle_run("qemu-io -f qcow2 -r -c 'read -P 0 0 4096' %s", f->img);
        g_assert_null(strstr(read, "verification failed"));
        img = open_image(f->img, 0);
        assert_bitmap(f, img, "big", none);
        assert_bitmap(f, img, "small", none);
        image_close(img);

        /* Written as a job writes it: 'big' records the write, the disabled 'small' not. */
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_write(img, buf, 0, sizeof(buf)));
        image_close(img);
        assert_clean(f->img);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        assert_bitmap(f, img, "big", expected);
        assert_bitmap(f, img, "small", none);
        image_close(img);
}

/* ---- recording writes ---------------------------------------------------------------------- */

static const uint64_t qemu_writes[][2] = { { 0, 512 }, { 2 << 20, 4096 } };

/* An image as a VM leaves it: enabled bitmaps of two granularities and a disabled one, dirtied by
 * QEMU's writes. */
static void make_vm_image(Fixture *f, const char *backing) {
        if (backing)
                g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F qcow2 %s", backing, f->img));
        else
                g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-img bitmap --add %s e64k", f->img));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s e512", f->img));
        g_free(oracle_run("qemu-img bitmap --add --disable %s off", f->img));
        qemu_io_writes(f->img, qemu_writes, G_N_ELEMENTS(qemu_writes));
}

/* The bitmaps hold QEMU's writes and 'ours' (as ranges), the disabled one nothing; the image
 * checks clean and nothing is in use. */
static void assert_recorded(Fixture *f, const uint64_t (*ours)[2], size_t n) {
        g_autofree uint64_t (*all)[2] = g_malloc((n + G_N_ELEMENTS(qemu_writes)) * sizeof(uint64_t[2]));
        Image *img;

        memcpy(all, qemu_writes, sizeof(qemu_writes));
        memcpy(all + G_N_ELEMENTS(qemu_writes), ours, n * sizeof(ours[0]));
        g_autoptr(GArray) e64k = expected_ranges((const uint64_t (*)[2]) all, n + 2, 65536, 8 << 20);
        g_autoptr(GArray) e512 = expected_ranges((const uint64_t (*)[2]) all, n + 2, 512, 8 << 20);
        g_autoptr(GArray) none = no_ranges();

        assert_clean(f->img);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        ImageBitmapInfo *list = NULL;
        size_t k = 0;
        must(img, image_bitmap_list(img, &list, &k));
        for (size_t i = 0; i < k; i++)
                g_assert_false(list[i].flags & (IMAGE_BITMAP_IN_USE | IMAGE_BITMAP_INCONSISTENT));
        image_bitmap_list_free(list, k);
        assert_bitmap(f, img, "e64k", e64k);
        assert_bitmap(f, img, "e512", e512);
        assert_bitmap(f, img, "off", none);
        image_close(img);
}

/* Writes, zeroes and discards through the image layer, as commit and stream make them, are
 * recorded in the enabled bitmaps, on top of what QEMU recorded. */
static void test_writes_recorded(Fixture *f, gconstpointer data) {
        static const uint64_t ours[][2] = { { 1 << 20, 70000 }, { 4 << 20, 1 << 20 }, { 7 << 20, 131072 } };
        g_autofree uint8_t *buf = g_malloc0(70000);
        Image *img;

        make_vm_image(f, NULL);
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        memset(buf, 0x3c, 70000);
        must(img, image_write(img, buf, ours[0][0], ours[0][1]));
        must(img, image_write_zeroes(img, ours[1][0], ours[1][1]));
        must(img, image_discard(img, ours[2][0], ours[2][1]));
        must(img, image_flush(img));
        image_close(img);
        assert_recorded(f, ours, G_N_ELEMENTS(ours));
}

/* Stream-like: an overlay with bitmaps is filled from its backing file through the image layer;
 * what it copies is recorded. */
static void test_stream_recorded(Fixture *f, gconstpointer data) {
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        /* All but the two clusters QEMU's writes allocated. */
        static const uint64_t ours[][2] = { { 65536, (2 << 20) - 65536 }, { (2 << 20) + 65536, (6 << 20) - 65536 } };
        g_autofree uint8_t *buf = g_malloc(8 << 20);
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 8M' %s", base));
        make_vm_image(f, base);
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        for (uint64_t off = 0, n; off < (8 << 20); off += n) {
                LayerKind kind;
                must(img, image_layer_status(img, off, (8 << 20) - off, &kind, &n));
                if (kind != LAYER_UNALLOCATED)
                        continue;
                must(img, image_read(img, buf, off, n));
                must(img, image_write(img, buf, off, n));
        }
        image_close(img);
        assert_recorded(f, ours, 2);
}

/* While data is written and not yet flushed, the enabled bitmaps are in_use on disk (a crash
 * then leaves them inconsistent, never wrong); the flush stores them and clears it. */
static void test_in_use_until_flush(Fixture *f, gconstpointer data) {
        static const uint64_t ours[][2] = { { 6 << 20, 512 } };
        uint8_t buf[512] = { 9 };
        Image *img;

        make_vm_image(f, NULL);
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        g_assert_false(oracle_info_says(f->img, "in-use"));
        must(img, image_write(img, buf, ours[0][0], sizeof(buf)));
        /* Read back before the flush: the write is there already. */
        ImageDirtyMap *m = load(img, "e512");
        g_autoptr(GArray) now = our_dirty(m);
        image_dirty_map_free(m);
        g_assert_cmpuint(now->len, ==, 3);
        g_assert_cmpuint(g_array_index(now, Range, 2).start, ==, ours[0][0]);
        g_autoptr(GArray) on_disk = oracle_bitmaps(f->img);
        g_assert_cmpuint(on_disk->len, ==, 3);
        for (guint i = 0; i < on_disk->len; i++)
                g_assert_cmpint(g_array_index(on_disk, OracleBitmap, i).in_use, ==,
                                g_array_index(on_disk, OracleBitmap, i).autoflag);
        must(img, image_flush(img));
        g_assert_false(oracle_info_says(f->img, "in-use"));
        image_close(img);
        assert_recorded(f, ours, 1);
}

/* A writer that dies after writing leaves its bitmaps in_use: QEMU and we call them
 * inconsistent. */
static void test_crash_leaves_in_use(Fixture *f, gconstpointer data) {
        uint8_t buf[512] = { 9 };
        ImageBitmapInfo *list = NULL;
        size_t n = 0;
        pid_t pid;
        int status;
        Image *img;

        make_vm_image(f, NULL);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                img = open_image(f->img, IMAGE_OPEN_WRITE);
                if (image_write(img, buf, 0, sizeof(buf)) < 0)
                        _exit(1);
                _exit(0);       /* no flush, no close */
        }
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        img = open_image(f->img, 0);
        assert_list_matches_oracle(img, f->img);
        must(img, image_bitmap_list(img, &list, &n));
        for (size_t i = 0; i < n; i++)
                g_assert_cmpuint(list[i].flags & IMAGE_BITMAP_INCONSISTENT, ==,
                                 (list[i].flags & IMAGE_BITMAP_AUTO) ? IMAGE_BITMAP_INCONSISTENT : 0);
        image_bitmap_list_free(list, n);
        image_close(img);
}

/* Opened for writing, never written: not one byte of the file changes. */
static void test_unwritten_unchanged(Fixture *f, gconstpointer data) {
        g_autofree char *before = NULL, *after = NULL;
        uint8_t buf[512];
        Image *img;

        make_vm_image(f, NULL);
        before = oracle_run("sha256sum %s", f->img);
        img = open_image(f->img, IMAGE_OPEN_WRITE);
        must(img, image_read(img, buf, 0, sizeof(buf)));
        must(img, image_flush(img));
        image_close(img);
        after = oracle_run("sha256sum %s", f->img);
        g_assert_cmpstr(before, ==, after);
}

/* An enabled bitmap that cannot be read (a table entry QEMU would refuse) cannot be kept: the
 * image is refused for writing, before anything is written. */
static void test_unkeepable_refused(Fixture *f, gconstpointer data) {
        g_autofree char *before = NULL, *after = NULL, *error = NULL;
        Image *img = NULL;

        make_vm_image(f, NULL);
        uint64_t ext = 0;
        for (uint64_t pos = peek_be(f->img, 100, 4);; pos += 8 + ((peek_be(f->img, pos + 4, 4) + 7) & ~UINT64_C(7)))
                if (peek_be(f->img, pos, 4) == 0x23852875) {
                        ext = pos + 8;
                        break;
                }
        uint64_t table = peek_be(f->img, peek_be(f->img, ext + 16, 8), 8);
        poke_be64(f->img, table, peek_be(f->img, table, 8) | 2);
        before = oracle_run("sha256sum %s", f->img);
        g_assert_cmpint(image_open(f->img, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, &img, &error), ==,
                        -EUCLEAN);
        g_assert_nonnull(strstr(error, "has persistent bitmaps that blockjobd cannot keep consistent"));
        g_assert_nonnull(strstr(error, "bitmap 'e64k'"));
        after = oracle_run("sha256sum %s", f->img);
        g_assert_cmpstr(before, ==, after);
}

/* ---- crashes ------------------------------------------------------------------------------- */

#define CRASH_ROUNDS 12
#define CRASH_ROUNDS_MAX (4 * CRASH_ROUNDS)
#define CRASH_SIZE (8 << 20)

/* The child: writes, zeroes, discards, flushes now and then, and merges one enabled bitmap into
 * the other (which only adds bits), until it is killed. */
G_GNUC_NORETURN static void crash_writer(const char *path, guint32 seed) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
        g_autofree uint8_t *buf = g_malloc(256 * 1024);
        const char *sources[] = { "b512" };
        char *error = NULL;
        Image *img = NULL;

        if (image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &img, &error) < 0) {
                g_printerr("child: %s\n", error);
                _exit(2);
        }
        for (unsigned i = 0;; i++) {
                uint64_t len = g_rand_int_range(rand, 1, 256 * 1024);
                uint64_t off = g_rand_int_range(rand, 0, (gint32) (CRASH_SIZE - len));
                int r;

                memset(buf, (int) (i & 0xff) | 1, len);
                switch (g_rand_int_range(rand, 0, 12)) {
                case 0:
                        r = image_write_zeroes(img, off, len);
                        break;
                case 1:
                        r = image_discard(img, off, len);
                        break;
                case 2:
                        r = image_bitmap_merge(img, "b64k", sources, 1);
                        break;
                default:
                        r = image_write(img, buf, off, len);
                        break;
                }
                if (r >= 0 && i % 4 == 0)
                        r = image_flush(img);
                if (r < 0 && r != -EBUSY && r != -ENOENT) {
                        g_printerr("child: %s\n", image_error(img));
                        _exit(3);
                }
        }
}

/* Every granule whose content changed from 'before' to 'after' is dirty in a bitmap that says it
 * is consistent: the one thing a crash must never break. Returns whether it was consistent. */
static bool assert_covers(Image *img, const char *name, GBytes *before, GBytes *after) {
        const uint8_t *a = g_bytes_get_data(before, NULL), *b = g_bytes_get_data(after, NULL);
        ImageDirtyMap *m = NULL;
        int r = image_bitmap_load(img, name, &m);

        if (r == -EBUSY)
                return false;           /* in_use: nobody trusts it */
        must(img, r);
        for (uint64_t g = 0; g < m->nbits; g++) {
                uint64_t start = g * m->granularity, n = MIN(m->granularity, m->size - start);
                if (memcmp(a + start, b + start, n) != 0 && !(m->words[g / 64] >> (g % 64) & 1))
                        g_error("bitmap %s is consistent but misses the change at %" PRIu64, name, start);
        }
        image_dirty_map_free(m);
        return true;
}

/* Bitmaps left in_use by a crash are made anew (removed and added), so that the next round has
 * consistent ones to check again. */
static void renew_bitmaps(const char *path) {
        static const struct { const char *name; uint32_t granularity; } bitmaps[] = { { "b64k", 65536 }, { "b512", 512 } };
        Image *img = open_image(path, IMAGE_OPEN_WRITE);

        for (size_t i = 0; i < G_N_ELEMENTS(bitmaps); i++) {
                ImageDirtyMap *m = NULL;
                int r = image_bitmap_load(img, bitmaps[i].name, &m);
                image_dirty_map_free(m);
                if (r >= 0)
                        continue;
                if (r == -EBUSY)
                        must(img, image_bitmap_remove(img, bitmaps[i].name));
                must(img, image_bitmap_add(img, bitmaps[i].name, bitmaps[i].granularity, false));
        }
        image_close(img);
}

/* A writer killed at random moments: qemu-img check finds no corruption (leaks are allowed, and
 * reclaimed), and each bitmap either says it is in use or covers every change of the round.
 * A kill leaves the bitmaps consistent only between a flush and the next change (about one round
 * in four or five here), so rounds go on past CRASH_ROUNDS until one did, within a bound: the
 * test never passes without having checked a consistent bitmap. */
static void test_crash_rounds(Fixture *f, gconstpointer data) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(11);
        unsigned consistent = 0;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=512 %s %d", f->img, CRASH_SIZE));
        renew_bitmaps(f->img);
        int round;
        for (round = 0; round < CRASH_ROUNDS || (consistent == 0 && round < CRASH_ROUNDS_MAX); round++) {
                g_autofree char *out = NULL, *err = NULL;
                g_autoptr(GBytes) before = oracle_read_all(f->img, f->dir), after = NULL;
                int status;
                pid_t pid;
                Image *img;

                pid = fork();
                g_assert_cmpint(pid, >=, 0);
                if (pid == 0)
                        crash_writer(f->img, (guint32) round);
                gint32 ms = g_rand_int_range(rand, 20, 300);
                g_usleep(ms * 1000);
                g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
                g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
                if (!WIFSIGNALED(status))
                        g_error("round %d: the writer ended by itself (status %d)", round, status);

                status = oracle_try(&out, &err, "qemu-img check %s", f->img);
                if (status != 0 && status != 3)
                        g_error("round %d: qemu-img check exit %d\n%s%s", round, status, out, err);
                after = oracle_read_all(f->img, f->dir);
                img = open_image(f->img, 0);
                assert_list_matches_oracle(img, f->img);
                unsigned here = assert_covers(img, "b64k", before, after) + assert_covers(img, "b512", before, after);
                consistent += here;
                image_close(img);
                g_test_message("round %d, killed after %d ms: %s, %u consistent bitmaps", round, ms,
                               status == 0 ? "clean" : "leaks only", here);
                if (status == 3)
                        g_free(oracle_run("qemu-img check -q -r leaks %s", f->img));
                renew_bitmaps(f->img);
        }
        g_test_message("%u of %u bitmaps consistent after a crash", consistent, 2 * round);
        if (consistent == 0)
                g_error("no bitmap was left consistent by %d crashes: nothing checked", round);
}

#define BITMAP_TEST(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/qcow2-bitmap/dirty-map", test_dirty_map);
        if (!oracle_available()) {
                g_test_skip("qemu-img is not installed");
                return g_test_run();
        }
        BITMAP_TEST("/qcow2-bitmap/read-qemu-bitmaps", test_read_qemu_bitmaps);
        BITMAP_TEST("/qcow2-bitmap/default-granularity", test_default_granularity);
        BITMAP_TEST("/qcow2-bitmap/backing-chain", test_backing_chain);
        BITMAP_TEST("/qcow2-bitmap/in-use-after-kill", test_in_use_after_kill);
        BITMAP_TEST("/qcow2-bitmap/autoclear-clear", test_autoclear_clear);
        BITMAP_TEST("/qcow2-bitmap/all-ones-entry", test_all_ones_entry);
        BITMAP_TEST("/qcow2-bitmap/writable-open", test_writable_open);
        BITMAP_TEST("/qcow2-bitmap/raw-has-none", test_raw_has_none);
        BITMAP_TEST("/qcow2-bitmap/add", test_add);
        BITMAP_TEST("/qcow2-bitmap/refusals", test_refusals);
        BITMAP_TEST("/qcow2-bitmap/header-layout-kept", test_header_layout_kept);
        BITMAP_TEST("/qcow2-bitmap/header-no-room", test_header_no_room);
        BITMAP_TEST("/qcow2-bitmap/change-qemu-bitmaps", test_change_qemu_bitmaps);
        BITMAP_TEST("/qcow2-bitmap/inconsistent-removed", test_inconsistent_removed);
        BITMAP_TEST("/qcow2-bitmap/write-after-change", test_write_after_change);
        BITMAP_TEST("/qcow2-bitmap/bitmaps-only", test_bitmaps_only);
        BITMAP_TEST("/qcow2-bitmap/writes-recorded", test_writes_recorded);
        BITMAP_TEST("/qcow2-bitmap/stream-recorded", test_stream_recorded);
        BITMAP_TEST("/qcow2-bitmap/in-use-until-flush", test_in_use_until_flush);
        BITMAP_TEST("/qcow2-bitmap/crash-leaves-in-use", test_crash_leaves_in_use);
        BITMAP_TEST("/qcow2-bitmap/unwritten-unchanged", test_unwritten_unchanged);
        BITMAP_TEST("/qcow2-bitmap/unkeepable-refused", test_unkeepable_refused);
        BITMAP_TEST("/qcow2-bitmap/crash-rounds", test_crash_rounds);
        return g_test_run();
}
