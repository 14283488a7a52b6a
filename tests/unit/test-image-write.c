/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Writing images, checked by the oracle: images blockjobd creates and writes pass `qemu-img
 * check` without errors or leaks, and read exactly as images that qemu-io wrote the same way
 * (`qemu-img compare`), in every shape: cluster sizes from 512 B to 2 MiB, refcount widths from
 * 1 to 64 bits, refcount tables that must grow, v2 images, compressed clusters, snapshots and
 * backing chains. */

#include <glib/gstdio.h>
#include <string.h>

#include "image.h"
#include "qemu-oracle.h"

#define KiB (G_GUINT64_CONSTANT(1) << 10)
#define MiB (G_GUINT64_CONSTANT(1) << 20)

typedef struct Fixture {
        char *dir;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;
        f->dir = g_dir_make_tmp("blockjobd-write-XXXXXX", &error);
        g_assert_no_error(error);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_free(oracle_run("rm -rf %s", f->dir));
        g_free(f->dir);
}

/* qemu-img check: no corruption, and (unless told) no leak either. */
static void assert_check(const char *path, bool leaks_allowed) {
        g_autofree char *out = NULL, *err = NULL;
        int status = oracle_try(&out, &err, "qemu-img check -U %s", path);

        if (status == 0 || (leaks_allowed && status == 3))
                return;
        g_error("qemu-img check %s: exit %d\n%s%s", path, status, out, err);
}

static void assert_same(const char *a, const char *b) {
        g_autofree char *out = NULL, *err = NULL;
        int status = oracle_try(&out, &err, "qemu-img compare -U %s %s", a, b);
        if (status != 0)
                g_error("qemu-img compare %s %s: exit %d\n%s%s", a, b, status, out, err);
}

static Image *open_flags(const char *path, ImageFormat format, unsigned flags) {
        g_autofree char *error = NULL;
        Image *img = NULL;

        if (image_open(path, format, flags, &img, &error) < 0)
                g_error("opening %s: %s", path, error);
        return img;
}

static Image *open_rw(const char *path) {
        return open_flags(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE);
}

static void create(const char *path, const ImageCreateParams *p) {
        g_autofree char *error = NULL;
        if (image_create(path, p, &error) < 0)
                g_error("creating %s: %s", path, error);
}

/* ---- operations applied to our image and, through qemu-io, to the oracle's ------------------ */

typedef enum OpKind { OP_WRITE, OP_ZERO, OP_DISCARD } OpKind;

typedef struct Op {
        OpKind kind;
        uint64_t offset, length;
        uint8_t pattern;
} Op;

static GArray *random_ops(guint32 seed, uint64_t size, unsigned n, bool with_discard) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
        GArray *ops = g_array_new(FALSE, FALSE, sizeof(Op));

        for (unsigned i = 0; i < n; i++) {
                Op op;
                unsigned kind = g_rand_int_range(rand, 0, with_discard ? 10 : 8);
                op.kind = kind < 7 ? OP_WRITE : kind < 8 ? OP_ZERO : OP_DISCARD;
                /* Mostly small, sometimes spanning many clusters; aligned or not. */
                op.length = g_rand_int_range(rand, 0, 4) == 0 ? g_rand_int_range(rand, 1, 3 * MiB) : g_rand_int_range(rand, 1, 70000);
                if (g_rand_boolean(rand))
                        op.length = MAX(op.length & ~(uint64_t) 4095, 4096);
                op.length = MIN(op.length, size);
                op.offset = g_rand_int_range(rand, 0, (gint32) (size - op.length + 1));
                if (g_rand_boolean(rand))
                        op.offset &= ~(uint64_t) 511;
                op.pattern = (uint8_t) g_rand_int_range(rand, 1, 256);
                g_array_append_val(ops, op);
        }
        return ops;
}

static void apply_ours(Image *img, GArray *ops, bool flush_often) {
        for (guint i = 0; i < ops->len; i++) {
                Op *op = &g_array_index(ops, Op, i);
                int r;

                switch (op->kind) {
                case OP_WRITE: {
                        g_autofree uint8_t *buf = g_malloc(op->length);
                        memset(buf, op->pattern, op->length);
                        r = image_write(img, buf, op->offset, op->length);
                        break;
                }
                case OP_ZERO:
                        r = image_write_zeroes(img, op->offset, op->length);
                        break;
                default:
                        r = image_discard(img, op->offset, op->length);
                        break;
                }
                if (r < 0)
                        g_error("op %u: %s", i, image_error(img));
                if (flush_often && i % 7 == 0)
                        g_assert_cmpint(image_flush(img), ==, 0);
        }
        g_assert_cmpint(image_flush(img), ==, 0);
}

/* The same operations through qemu-io, in batches, onto the oracle's copy. */
static void apply_theirs(const char *path, GArray *ops) {
        for (guint i = 0; i < ops->len;) {
                GString *cmd = g_string_new("qemu-io -f qcow2");
                for (guint k = 0; k < 40 && i < ops->len; k++, i++) {
                        Op *op = &g_array_index(ops, Op, i);
                        switch (op->kind) {
                        case OP_WRITE:
                                g_string_append_printf(cmd, " -c 'write -P %u %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "'",
                                                       op->pattern, op->offset, op->length);
                                break;
                        case OP_ZERO:
                                g_string_append_printf(cmd, " -c 'write -z %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "'",
                                                       op->offset, op->length);
                                break;
                        default:
                                g_string_append_printf(cmd, " -c 'discard %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "'",
                                                       op->offset, op->length);
                                break;
                        }
                }
                g_string_append_printf(cmd, " %s", path);
                g_free(oracle_run("%s", cmd->str));
                g_string_free(cmd, TRUE);
        }
}

/* ---- creating ------------------------------------------------------------------------------- */

static void test_create_shapes(Fixture *f, gconstpointer data) {
        static const uint32_t clusters[] = { 512, 4096, 65536, 2 * 1024 * 1024 };
        static const unsigned widths[] = { 1, 2, 16, 64 };

        for (unsigned c = 0; c < G_N_ELEMENTS(clusters); c++)
                for (unsigned w = 0; w < G_N_ELEMENTS(widths); w++) {
                        g_autofree char *path = g_strdup_printf("%s/c%u-w%u.qcow2", f->dir, clusters[c], widths[w]);
                        ImageCreateParams p = {
                                .format = IMAGE_FORMAT_QCOW2,
                                .size = clusters[c] == 512 ? 3 * G_GUINT64_CONSTANT(1) << 30 : 100 * G_GUINT64_CONSTANT(1) << 30,
                                .cluster_size = clusters[c],
                                .refcount_bits = widths[w],
                        };
                        create(path, &p);
                        assert_check(path, false);
                        g_autofree char *info = oracle_run("qemu-img info --output=json %s", path);
                        g_autofree char *cs = g_strdup_printf("\"cluster-size\": %u", clusters[c]);
                        g_autofree char *rb = g_strdup_printf("\"refcount-bits\": %u", widths[w]);
                        g_autofree char *vs = g_strdup_printf("\"virtual-size\": %" G_GUINT64_FORMAT, p.size);
                        g_assert_nonnull(strstr(info, cs));
                        g_assert_nonnull(strstr(info, rb));
                        g_assert_nonnull(strstr(info, vs));
                        g_assert_nonnull(strstr(info, "\"compat\": \"1.1\""));
                }
}

static void test_create_with_backing(Fixture *f, gconstpointer data) {
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        g_autofree char *top = g_build_filename(f->dir, "top.qcow2", NULL);
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = 8 * MiB };

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x42 0 1M' %s", base));
        p.backing_name = "base.qcow2";
        p.backing_format = IMAGE_FORMAT_QCOW2;
        create(top, &p);
        assert_check(top, false);
        g_autofree char *info = oracle_run("qemu-img info --output=json %s", top);
        g_assert_nonnull(strstr(info, "\"backing-filename\": \"base.qcow2\""));
        g_assert_nonnull(strstr(info, "\"backing-filename-format\": \"qcow2\""));
        assert_same(top, base);

        /* Raw images: sparse files of the size. */
        g_autofree char *raw = g_build_filename(f->dir, "r.raw", NULL);
        ImageCreateParams rp = { .format = IMAGE_FORMAT_RAW, .size = 5 * MiB + 3 };
        create(raw, &rp);
        GStatBuf st;
        g_assert_cmpint(g_stat(raw, &st), ==, 0);
        g_assert_cmpuint(st.st_size, ==, 5 * MiB + 3);
        g_assert_cmpuint(st.st_blocks, ==, 0);

        /* Refusals: odd clusters, and a backing file without its format. */
        g_autofree char *error = NULL, *bad = g_build_filename(f->dir, "bad.qcow2", NULL);
        ImageCreateParams unrecorded = { .format = IMAGE_FORMAT_QCOW2, .size = MiB, .backing_name = "base.qcow2" };
        g_assert_cmpint(image_create(bad, &unrecorded, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "No format given for backing file 'base.qcow2'"));
        g_assert_false(g_file_test(bad, G_FILE_TEST_EXISTS));
        g_clear_pointer(&error, g_free);
        ImageCreateParams odd = { .format = IMAGE_FORMAT_QCOW2, .size = MiB, .cluster_size = 3000 };
        g_assert_cmpint(image_create(bad, &odd, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "not a power of 2"));
        g_assert_false(g_file_test(bad, G_FILE_TEST_EXISTS));
        g_free(error);
        error = NULL;
        g_assert_cmpint(image_create(top, &p, &error), ==, -EEXIST);
}

/* Sizes qemu-img would round: a qcow2 image holds whole sectors of 512 bytes, so a size that is
 * not a multiple becomes the next one (as `qemu-img create` makes it), and all of it can be
 * written. */
static void test_create_odd_size(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "odd.qcow2", NULL);
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = 1000 };
        uint8_t buf[1000];
        Image *img;

        create(path, &p);
        assert_check(path, false);
        g_autofree char *info = oracle_run("qemu-img info --output=json %s", path);
        g_assert_nonnull(strstr(info, "\"virtual-size\": 1024,"));
        img = open_rw(path);
        g_assert_cmpuint(image_size(img), ==, 1024);
        memset(buf, 0x3c, sizeof(buf));
        g_assert_cmpint(image_write(img, buf, 0, sizeof(buf)), ==, 0);
        image_close(img);
        assert_check(path, false);
}

/* A copy of a zero-size image (of any version: the copy is version 3) has nothing to point to
 * and must not count a cluster that nothing points to. */
static void test_create_zero_size(Fixture *f, gconstpointer data) {
        g_autofree char *v2 = g_build_filename(f->dir, "zero-v2.qcow2", NULL);
        g_autofree char *copy = g_build_filename(f->dir, "copy.qcow2", NULL);
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2 };
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 %s 0", v2));
        img = open_flags(v2, IMAGE_FORMAT_QCOW2, 0);
        p.size = image_size(img);
        image_close(img);
        g_assert_cmpuint(p.size, ==, 0);

        create(copy, &p);
        assert_check(copy, false);
        assert_same(copy, v2);
        img = open_rw(copy);
        g_assert_cmpuint(image_size(img), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(copy, false);
}

/* ---- writing -------------------------------------------------------------------------------- */

static void check_random_writes(Fixture *f, uint32_t cluster_size, unsigned refcount_bits, guint32 seed) {
        g_autofree char *ours = g_strdup_printf("%s/ours-%u-%u.qcow2", f->dir, cluster_size, refcount_bits);
        g_autofree char *theirs = g_strdup_printf("%s/theirs-%u-%u.qcow2", f->dir, cluster_size, refcount_bits);
        const uint64_t size = 16 * MiB;
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = size, .cluster_size = cluster_size,
                                .refcount_bits = refcount_bits };
        g_autoptr(GArray) ops = random_ops(seed, size, 120, true);
        Image *img;

        create(ours, &p);
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=%u %s 16M", cluster_size, theirs));

        img = open_rw(ours);
        apply_ours(img, ops, true);
        image_close(img);
        apply_theirs(theirs, ops);

        assert_check(ours, false);
        assert_same(ours, theirs);
}

static void test_random_writes(Fixture *f, gconstpointer data) {
        check_random_writes(f, 65536, 16, 1);
        check_random_writes(f, 4096, 1, 2);
        check_random_writes(f, 2 * 1024 * 1024, 64, 3);
}

static void test_refcount_table_grows(Fixture *f, gconstpointer data) {
        /* 512-byte clusters with 64-bit counts: a refcount block counts 64 clusters and the
         * one-cluster table 64 blocks, 2 MiB of file; writing 12 MiB must move it, twice over. */
        check_random_writes(f, 512, 64, 4);

        g_autofree char *path = g_build_filename(f->dir, "grow.qcow2", NULL);
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = 64 * MiB, .cluster_size = 512, .refcount_bits = 64 };
        g_autofree uint8_t *buf = g_malloc(12 * MiB);
        Image *img;

        memset(buf, 0x77, 12 * MiB);
        create(path, &p);
        img = open_rw(path);
        g_assert_cmpint(image_write(img, buf, 3 * MiB, 12 * MiB), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(path, false);
        g_autoptr(GArray) map = oracle_map(path);
        g_assert_cmpuint(map->len, ==, 3);
        OracleExtent *data_extent = &g_array_index(map, OracleExtent, 1);
        g_assert_cmpuint(data_extent->start, ==, 3 * MiB);
        g_assert_cmpuint(data_extent->length, ==, 12 * MiB);
        g_assert_true(data_extent->data);
}

static void check_writes_into(Fixture *f, const char *name, const char *make, bool with_discard) {
        g_autofree char *ours = g_strdup_printf("%s/%s-ours.qcow2", f->dir, name);
        g_autofree char *theirs = g_strdup_printf("%s/%s-theirs.qcow2", f->dir, name);
        g_autoptr(GArray) ops = random_ops(g_str_hash(name), 8 * MiB, 60, with_discard);
        Image *img;

        /* The same image twice, made by QEMU; one written by us, the other by qemu-io. */
        g_free(oracle_run("sh -c '%s'", make));
        g_free(oracle_run("cp %s %s", theirs, ours));
        img = open_rw(ours);
        apply_ours(img, ops, false);
        image_close(img);
        apply_theirs(theirs, ops);

        /* QEMU leaves leaks of its own sometimes (compressed clusters): compare with its own. */
        assert_check(ours, false);
        assert_same(ours, theirs);
}

static void test_writes_into_qemu_images(Fixture *f, gconstpointer data) {
        g_autofree char *v2 = g_strdup_printf("cd %s && qemu-img create -q -f qcow2 -o compat=0.10 v2-theirs.qcow2 8M && "
                                              "qemu-io -f qcow2 -c \"write -P 1 0 3M\" v2-theirs.qcow2 >/dev/null",
                                              f->dir);
        check_writes_into(f, "v2", v2, false);

        g_autofree char *comp = g_strdup_printf("cd %s && qemu-img create -q -f raw plain 8M && "
                                                "qemu-io -f raw -c \"write -P 2 0 6M\" plain >/dev/null && "
                                                "qemu-img convert -q -c -O qcow2 plain comp-theirs.qcow2",
                                                f->dir);
        check_writes_into(f, "comp", comp, true);

        g_autofree char *snap = g_strdup_printf("cd %s && qemu-img create -q -f qcow2 snap-theirs.qcow2 8M && "
                                                "qemu-io -f qcow2 -c \"write -P 3 0 5M\" snap-theirs.qcow2 >/dev/null && "
                                                "qemu-img snapshot -c s1 snap-theirs.qcow2",
                                                f->dir);
        check_writes_into(f, "snap", snap, true);
        /* The snapshot still reads as it was taken. */
        g_autofree char *s1 = g_strdup_printf("%s/s1.raw", f->dir), *ours = g_strdup_printf("%s/snap-ours.qcow2", f->dir);
        g_free(oracle_run("qemu-img convert -U -l snapshot.name=s1 -O raw %s %s", ours, s1));
        g_autofree char *expected = g_strdup_printf("%s/s1-expected.raw", f->dir);
        g_free(oracle_run("qemu-img create -q -f raw %s 8M", expected));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 3 0 5M' %s", expected));
        assert_same(s1, expected);

        g_autofree char *chain = g_strdup_printf("cd %s && qemu-img create -q -f qcow2 base.qcow2 8M && "
                                                 "qemu-io -f qcow2 -c \"write -P 4 0 7M\" base.qcow2 >/dev/null && "
                                                 "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 chain-theirs.qcow2",
                                                 f->dir);
        /* Partial writes into unallocated clusters take the rest from the backing file. */
        check_writes_into(f, "chain", chain, false);
}

static void test_set_backing(Fixture *f, gconstpointer data) {
        g_autofree char *a = g_build_filename(f->dir, "a.qcow2", NULL), *b = g_build_filename(f->dir, "b.qcow2", NULL);
        g_autofree char *top = g_build_filename(f->dir, "top.qcow2", NULL);
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", a));
        g_free(oracle_run("qemu-img create -q -f raw %s 4M", b));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 9 0 64k' %s", top));

        img = open_rw(top);
        g_assert_cmpint(image_set_backing(img, "b.qcow2-renamed-to-something-longer.raw", IMAGE_FORMAT_RAW), ==, 0);
        image_close(img);
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", top);
        g_assert_nonnull(strstr(info, "\"backing-filename\": \"b.qcow2-renamed-to-something-longer.raw\""));
        g_assert_nonnull(strstr(info, "\"backing-filename-format\": \"raw\""));

        /* Its backing file does not exist (yet): rewriting the name needs only the image. A name
         * goes with its format: nobody is left to guess it. */
        img = open_flags(top, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING);
        g_assert_cmpint(image_set_backing(img, "b.qcow2", IMAGE_FORMAT_PROBE), ==, -EINVAL);
        g_assert_nonnull(strstr(image_error(img), "No format given for backing file 'b.qcow2'"));
        g_assert_cmpint(image_set_backing(img, "b.qcow2", IMAGE_FORMAT_RAW), ==, 0);
        image_close(img);
        g_free(info);
        info = oracle_run("qemu-img info -U --output=json %s", top);
        g_assert_nonnull(strstr(info, "\"backing-filename\": \"b.qcow2\""));
        g_assert_nonnull(strstr(info, "\"backing-filename-format\": \"raw\""));

        /* None: the image stands alone. */
        img = open_rw(top);
        g_assert_cmpint(image_set_backing(img, NULL, IMAGE_FORMAT_PROBE), ==, 0);
        image_close(img);
        g_free(info);
        info = oracle_run("qemu-img info -U --output=json %s", top);
        g_assert_null(strstr(info, "backing-filename"));
        assert_check(top, false);

        /* Raw images have no header to record one in. */
        img = open_flags(b, IMAGE_FORMAT_RAW, IMAGE_OPEN_WRITE);
        g_assert_cmpint(image_set_backing(img, "x", IMAGE_FORMAT_RAW), ==, -EOPNOTSUPP);
        image_close(img);
}

/* Persistent bitmaps survive an image that is opened for writing but never changed, and stay
 * consistent when it is: they record the change (test-qcow2-bitmap.c checks what they record). */
static void test_bitmaps_kept_until_changed(Fixture *f, gconstpointer data) {
        g_autofree char *a = g_build_filename(f->dir, "a.qcow2", NULL);
        g_autofree char *info = NULL;
        uint8_t buf[4096];
        Image *img;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", a));
        g_free(oracle_run("qemu-img bitmap --add %s b0", a));
        info = oracle_run("qemu-img info -U --output=json %s", a);
        g_assert_nonnull(strstr(info, "\"name\": \"b0\""));

        /* Opened, flushed, closed: nothing changed. */
        img = open_rw(a);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        g_free(info);
        info = oracle_run("qemu-img info -U --output=json %s", a);
        g_assert_nonnull(strstr(info, "\"name\": \"b0\""));
        assert_check(a, false);

        /* A refused change changes nothing either. */
        img = open_rw(a);
        g_assert_cmpint(image_set_backing(img, "x", IMAGE_FORMAT_PROBE), ==, -EINVAL);
        image_close(img);
        g_free(info);
        info = oracle_run("qemu-img info -U --output=json %s", a);
        g_assert_nonnull(strstr(info, "\"name\": \"b0\""));

        /* Written: the bitmap is kept, consistent (not in use), and nothing leaks. */
        img = open_rw(a);
        memset(buf, 0x21, sizeof(buf));
        g_assert_cmpint(image_write(img, buf, 0, sizeof(buf)), ==, 0);
        image_close(img);
        g_free(info);
        info = oracle_run("qemu-img info -U --output=json %s", a);
        g_assert_nonnull(strstr(info, "\"name\": \"b0\""));
        g_assert_null(strstr(info, "in-use"));
        assert_check(a, false);

        /* The same for a header rewrite, which changes nothing the guest reads. */
        g_free(oracle_run("qemu-img bitmap --add %s b1", a));
        img = open_rw(a);
        g_assert_cmpint(image_set_backing(img, NULL, IMAGE_FORMAT_PROBE), ==, 0);
        image_close(img);
        g_free(info);
        info = oracle_run("qemu-img info -U --output=json %s", a);
        g_assert_nonnull(strstr(info, "\"name\": \"b1\""));
        g_assert_null(strstr(info, "in-use"));
        assert_check(a, false);
}

/* A discard that frees more clusters than wait in memory at once (QCOW2_PENDING_FREES_MAX, and
 * clusters that do not lie one after another, so that each is a range of its own): it flushes on
 * the way, and the image stays consistent. */
static void test_discard_many_frees(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "frees.qcow2", NULL);
        const unsigned n = 20000;
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = n * 512, .cluster_size = 512 };
        uint8_t sector[512];
        Image *img;

        create(path, &p);
        img = open_rw(path);
        /* Backwards: guest clusters in one order, host clusters in the other. */
        for (unsigned i = n; i-- > 0;) {
                memset(sector, (int) (i % 251) + 1, sizeof(sector));
                g_assert_cmpint(image_write(img, sector, (uint64_t) i * 512, sizeof(sector)), ==, 0);
        }
        g_assert_cmpint(image_flush(img), ==, 0);
        g_assert_cmpint(image_discard(img, 512, (uint64_t) (n - 2) * 512), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(path, false);

        g_autoptr(GArray) map = oracle_map(path);
        g_assert_cmpuint(map->len, ==, 3);
        g_assert_false(g_array_index(map, OracleExtent, 1).present);
        g_assert_cmpuint(g_array_index(map, OracleExtent, 1).length, ==, (uint64_t) (n - 2) * 512);
}

/* ---- runs of clusters ------------------------------------------------------------------------ */

/* How many runs of host clusters hold the image's data: qemu-img map reports data extents that
 * lie one after another in the file as one. */
static unsigned data_runs(const char *path) {
        g_autofree char *json = oracle_run("qemu-img map --output=json -U %s", path);
        unsigned n = 0;

        for (const char *p = json; (p = strstr(p, "\"data\": true")); p++)
                n++;
        return n;
}

static void write_pattern(Image *img, uint8_t pattern, uint64_t offset, uint64_t length) {
        g_autofree uint8_t *buf = g_malloc(length);

        memset(buf, pattern, length);
        if (image_write(img, buf, offset, length) < 0)
                g_error("writing %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT ": %s", offset, length, image_error(img));
}

/* A write of many clusters into an empty image allocates them as one run per L2 table (the table
 * in front of it), not cluster by cluster; across table boundaries, with unaligned ends, and over
 * clusters of which some are allocated already (written in place) and some not. */
static void test_runs_across_l2_tables(Fixture *f, gconstpointer data) {
        g_autofree char *ours = g_build_filename(f->dir, "runs-ours.qcow2", NULL);
        g_autofree char *theirs = g_build_filename(f->dir, "runs-theirs.qcow2", NULL);
        /* 4 KiB clusters: an L2 table maps 2 MiB. */
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = 16 * MiB, .cluster_size = 4096 };
        Image *img;

        create(ours, &p);
        img = open_rw(ours);
        write_pattern(img, 0x31, 1 * MiB, 6 * MiB);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(ours, false);
        /* Four tables: [1, 2), [2, 4), [4, 6), [6, 7) MiB, each run behind its table. */
        g_assert_cmpuint(data_runs(ours), ==, 4);

        /* Partly allocated: some clusters here and there, then one write over all of them, with
         * an unaligned head and tail, across three table boundaries. */
        g_autoptr(GArray) ops = g_array_new(FALSE, FALSE, sizeof(Op));
        static const Op scattered[] = {
                { OP_WRITE, 9 * MiB + 8 * KiB, 4 * KiB, 0x41 },
                { OP_WRITE, 10 * MiB - 4 * KiB, 12 * KiB, 0x42 },
                { OP_ZERO, 11 * MiB, 64 * KiB, 0 },
                { OP_WRITE, 13 * MiB + 100, 3000, 0x43 },
                { OP_WRITE, 8 * MiB + 512 * KiB + 100, 6 * MiB + 1000, 0x44 },
                { OP_WRITE, 15 * MiB, 1 * MiB, 0x45 },
        };
        g_array_append_vals(ops, scattered, G_N_ELEMENTS(scattered));
        g_free(oracle_run("cp %s %s", ours, theirs));
        img = open_rw(ours);
        apply_ours(img, ops, false);
        image_close(img);
        apply_theirs(theirs, ops);
        assert_check(ours, false);
        assert_same(ours, theirs);
}

/* A run long enough to need new refcount blocks, and a larger refcount table, while it is
 * allocated: 512-byte clusters with 64-bit counts (a block counts 64 clusters, the first table
 * 4,096). The blocks go behind the run, which stays one run per L2 table (64 clusters). */
static void test_run_grows_refcounts(Fixture *f, gconstpointer data) {
        g_autofree char *ours = g_build_filename(f->dir, "grow-ours.qcow2", NULL);
        g_autofree char *theirs = g_build_filename(f->dir, "grow-theirs.qcow2", NULL);
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = 8 * MiB, .cluster_size = 512, .refcount_bits = 64 };
        Image *img;

        create(ours, &p);
        g_free(oracle_run("cp %s %s", ours, theirs));
        img = open_rw(ours);
        write_pattern(img, 0x51, 2 * MiB, 4 * MiB);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x51 2M 4M' %s", theirs));
        assert_check(ours, false);
        assert_same(ours, theirs);
        g_assert_cmpuint(data_runs(ours), ==, 4 * MiB / (64 * 512));
}

/* ---- zeroes ----------------------------------------------------------------------------------- */

/* Zeroes, as QEMU makes them: where nothing lies below, whole clusters become unallocated and
 * part clusters that read as zeroes already are left alone; where a backing file would show
 * through (recorded in the header, whether its chain is open or not), zero clusters. */
static void test_zeroes_unallocated_or_zero(Fixture *f, gconstpointer data) {
        g_autofree char *alone = g_build_filename(f->dir, "alone.qcow2", NULL);
        g_autofree char *empty = g_build_filename(f->dir, "empty.qcow2", NULL);
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        g_autofree char *top = g_build_filename(f->dir, "top.qcow2", NULL);
        g_autofree char *top_theirs = g_build_filename(f->dir, "top-theirs.qcow2", NULL);
        ImageCreateParams p = { .format = IMAGE_FORMAT_QCOW2, .size = 4 * MiB };
        const uint64_t zoff = 64 * KiB + 100, zlen = 2 * MiB;
        Image *img;
        GStatBuf st;

        /* Nothing below, data written before: the whole clusters go, the ends are written. */
        create(alone, &p);
        img = open_rw(alone);
        write_pattern(img, 0x11, 0, 4 * MiB);
        g_assert_cmpint(image_write_zeroes(img, zoff, zlen), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(alone, false);
        g_autoptr(GArray) map = oracle_map(alone);
        g_assert_cmpuint(map->len, ==, 3);
        g_assert_cmpuint(g_array_index(map, OracleExtent, 1).start, ==, 128 * KiB);
        g_assert_cmpuint(g_array_index(map, OracleExtent, 1).length, ==, 2 * MiB - 64 * KiB);
        g_assert_false(g_array_index(map, OracleExtent, 1).present);
        g_autofree char *expected = g_build_filename(f->dir, "expected.raw", NULL);
        g_free(oracle_run("qemu-img create -q -f raw %s 4M", expected));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x11 0 4M' -c 'write -z %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "' %s",
                          zoff, zlen, expected));
        assert_same(alone, expected);

        /* Nothing below and nothing written: nothing allocated, not even for the ends. */
        create(empty, &p);
        g_assert_cmpint(g_stat(empty, &st), ==, 0);
        const goffset empty_size = st.st_size;
        img = open_rw(empty);
        g_assert_cmpint(image_write_zeroes(img, zoff, zlen), ==, 0);
        g_assert_cmpint(image_write_zeroes(img, 3 * MiB + 7, 5), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(empty, false);
        g_assert_cmpint(g_stat(empty, &st), ==, 0);
        g_assert_cmpint(st.st_size, ==, empty_size);
        g_autoptr(GArray) empty_map = oracle_map(empty);
        g_assert_cmpuint(empty_map->len, ==, 1);
        g_assert_false(g_array_index(empty_map, OracleExtent, 0).present);

        /* A backing file below: zero clusters, so that it does not show through; the ends of
         * unallocated clusters are written, with the rest from below. Opened with its chain, and
         * without (as commit opens the layers above base; whole clusters, as nothing below can
         * be read for the ends). */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 0 4M' %s", base));
        for (int chain = 0; chain < 2; chain++) {
                uint64_t o = chain ? zoff : 128 * KiB, l = chain ? zlen : 2 * MiB - 64 * KiB;

                g_free(oracle_run("rm -f %s %s", top, top_theirs));
                g_free(oracle_run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", top));
                g_free(oracle_run("cp %s %s", top, top_theirs));
                g_free(oracle_run("qemu-io -f qcow2 -c 'write -z %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "' %s", o, l,
                                  top_theirs));
                img = open_flags(top, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | (chain ? 0 : IMAGE_OPEN_NO_BACKING));
                g_assert_cmpint(image_write_zeroes(img, o, l), ==, 0);
                g_assert_cmpint(image_flush(img), ==, 0);
                image_close(img);
                assert_check(top, false);
                assert_same(top, top_theirs);
                g_autoptr(GArray) top_map = oracle_map(top);
                bool found = false;
                for (guint i = 0; i < top_map->len; i++) {
                        OracleExtent *e = &g_array_index(top_map, OracleExtent, i);
                        if (e->start <= 128 * KiB && e->start + e->length >= 2 * MiB) {
                                g_assert_true(e->present);
                                g_assert_true(e->zero);
                                g_assert_cmpint(e->depth, ==, 0);
                                found = true;
                        }
                }
                g_assert_true(found);
        }

        /* Version 2 has no zero flag: with a backing file below, zeroes are written as data. */
        g_autofree char *v2 = g_build_filename(f->dir, "v2.qcow2", NULL);
        g_autofree char *v2_theirs = g_build_filename(f->dir, "v2-theirs.qcow2", NULL);
        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 %s", v2));
        g_free(oracle_run("cp %s %s", v2, v2_theirs));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -z %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "' %s", zoff, zlen,
                          v2_theirs));
        img = open_flags(v2, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE);
        g_assert_cmpint(image_write_zeroes(img, zoff, zlen), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(v2, false);
        assert_same(v2, v2_theirs);
        /* The same without its chain open: whole clusters, still data, never unallocated. */
        g_free(oracle_run("rm -f %s %s", v2, v2_theirs));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 %s", v2));
        g_free(oracle_run("cp %s %s", v2, v2_theirs));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -z 128K 1M' %s", v2_theirs));
        img = open_flags(v2, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING);
        g_assert_cmpint(image_write_zeroes(img, 128 * KiB, 1 * MiB), ==, 0);
        g_assert_cmpint(image_flush(img), ==, 0);
        image_close(img);
        assert_check(v2, false);
        assert_same(v2, v2_theirs);
}

static void test_read_only_refuses(Fixture *f, gconstpointer data) {
        g_autofree char *a = g_build_filename(f->dir, "a.qcow2", NULL);
        Image *img = NULL;
        uint8_t byte = 1;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", a));
        g_assert_cmpint(image_open(a, IMAGE_FORMAT_PROBE, 0, &img, NULL), ==, 0);
        g_assert_cmpint(image_write(img, &byte, 0, 1), ==, -EBADF);
        g_assert_nonnull(strstr(image_error(img), "is not open for writing"));
        image_close(img);

        img = open_rw(a);
        g_assert_cmpint(image_write(img, &byte, 1 * MiB, 1), ==, -EINVAL);
        g_assert_nonnull(strstr(image_error(img), "beyond its end"));
        image_close(img);
}

#define WRITE_TEST(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        WRITE_TEST("/image-write/create-shapes", test_create_shapes);
        WRITE_TEST("/image-write/create-with-backing", test_create_with_backing);
        WRITE_TEST("/image-write/create-odd-size", test_create_odd_size);
        WRITE_TEST("/image-write/create-zero-size", test_create_zero_size);
        WRITE_TEST("/image-write/random-writes", test_random_writes);
        WRITE_TEST("/image-write/refcount-table-grows", test_refcount_table_grows);
        WRITE_TEST("/image-write/into-qemu-images", test_writes_into_qemu_images);
        WRITE_TEST("/image-write/set-backing", test_set_backing);
        WRITE_TEST("/image-write/read-only-refuses", test_read_only_refuses);
        WRITE_TEST("/image-write/bitmaps-kept-until-changed", test_bitmaps_kept_until_changed);
        WRITE_TEST("/image-write/discard-many-frees", test_discard_many_frees);
        WRITE_TEST("/image-write/runs-across-l2-tables", test_runs_across_l2_tables);
        WRITE_TEST("/image-write/run-grows-refcounts", test_run_grows_refcounts);
        WRITE_TEST("/image-write/zeroes-unallocated-or-zero", test_zeroes_unallocated_or_zero);
        return g_test_run();
}
