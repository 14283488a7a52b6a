/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The image layer against the oracle: images that qemu-img and qemu-io make, in many shapes,
 * read by blockjobd byte for byte as `qemu-img convert -O raw` reads them, with the block status
 * that `qemu-img map --output=json` reports. */

#include <glib/gstdio.h>
#include <string.h>

#include "image.h"
#include "qemu-oracle.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)

typedef struct Shape {
        const char *name;
        /* Builds the image(s) in 'dir', returns the path to open. */
        char *(*build)(const char *dir);
} Shape;

static char *path_in(const char *dir, const char *name) {
        return g_build_filename(dir, name, NULL);
}

/* Writes of every kind into a qcow2 image: aligned and not, zeroes, discards, patterns. */
static void scribble(const char *img, int seed) {
        g_free(oracle_run("qemu-io -f qcow2 "
                          "-c 'write -P %d 0 100k' "
                          "-c 'write -P %d 1M 64k' "
                          "-c 'write -z 1536k 128k' "
                          "-c 'write -P %d 3145985 1000' "
                          "-c 'write -P %d 5M 1M' "
                          "-c 'discard 5M 64k' "
                          "-c 'write -z 6400k 4k' "
                          "-c 'write -P %d 8388096 512' %s",
                          seed, seed + 1, seed + 2, seed + 3, seed + 4, img));
}

static char *build_v3(const char *dir) {
        char *img = path_in(dir, "v3.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", img));
        scribble(img, 0x10);
        return img;
}

static char *build_v2(const char *dir) {
        char *img = path_in(dir, "v2.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 %s 8M", img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x21 0 100k' -c 'write -P 0x22 3M 1M' "
                          "-c 'write -P 0x23 8388096 512' %s",
                          img));
        return img;
}

static char *build_small_clusters(const char *dir) {
        char *img = path_in(dir, "c512.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 %s 8M", img));
        scribble(img, 0x30);
        return img;
}

static char *build_big_clusters(const char *dir) {
        char *img = path_in(dir, "c2m.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=2M,refcount_bits=64 %s 32M", img));
        scribble(img, 0x40);
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x4f 20M 3M' %s", img));
        return img;
}

static char *build_refcount16(const char *dir) {
        char *img = path_in(dir, "r16.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096,refcount_bits=16,lazy_refcounts=on %s 8M", img));
        scribble(img, 0x50);
        return img;
}

static char *build_compressed(const char *dir) {
        g_autofree char *raw = path_in(dir, "plain.raw");
        char *img = path_in(dir, "comp.qcow2");

        g_free(oracle_run("qemu-img create -q -f raw %s 8M", raw));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x61 0 2M' -c 'write -P 0x62 3M 1536k' "
                          "-c 'write -P 0x63 8323072 65536' %s",
                          raw));
        g_free(oracle_run("qemu-img convert -q -c -O qcow2 %s %s", raw, img));
        /* Some compressed clusters overwritten, partly: normal and compressed clusters mix. */
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x64 65536 4096' -c 'write -z 3M 64k' %s", img));
        return img;
}

static char *build_compressed_small(const char *dir) {
        g_autofree char *raw = path_in(dir, "plain.raw");
        char *img = path_in(dir, "comp512.qcow2");

        g_free(oracle_run("qemu-img create -q -f raw %s 2M", raw));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x71 0 300k' -c 'write -P 0x72 1M 100k' %s", raw));
        g_free(oracle_run("qemu-img convert -q -c -O qcow2 -o cluster_size=512 %s %s", raw, img));
        return img;
}

static char *build_snapshots(const char *dir) {
        char *img = path_in(dir, "snap.qcow2");

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x81 0 2M' %s", img));
        g_free(oracle_run("qemu-img snapshot -c first %s", img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x82 1M 2M' -c 'write -z 0 64k' %s", img));
        g_free(oracle_run("qemu-img snapshot -c second %s", img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x83 1536k 64k' -c 'discard 2M 64k' %s", img));
        return img;
}

static char *build_chain(const char *dir) {
        g_autofree char *base = path_in(dir, "base.qcow2"), *mid = path_in(dir, "mid.qcow2");
        char *top = path_in(dir, "top.qcow2");

        /* Relative backing names, resolved against each image's own directory. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x91 0 4M' -c 'write -z 6M 1M' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x92 1M 1M' -c 'write -z 2M 64k' -c 'write -P 0x93 7M 4k' %s", mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x94 1536k 1M' -c 'write -z 3M 128k' %s", top));
        return top;
}

static char *build_raw_backing(const char *dir) {
        g_autofree char *base = path_in(dir, "base.raw");
        char *top = path_in(dir, "over.qcow2");

        /* A raw backing file, smaller than the overlay on top of it. */
        g_free(oracle_run("qemu-img create -q -f raw %s 3M", base));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0xa1 0 1M' -c 'write -P 0xa2 2M 512k' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F raw %s 8M", base, top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xa3 512k 1M' -c 'write -P 0xa4 4M 64k' %s", top));
        return top;
}

static char *build_v2_chain(const char *dir) {
        g_autofree char *base = path_in(dir, "b2.qcow2");
        char *top = path_in(dir, "t2.qcow2");

        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 %s 8M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb1 0 3M' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 -b b2.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb2 1M 64k' %s", top));
        return top;
}

static char *build_preallocated(const char *dir) {
        char *img = path_in(dir, "prealloc.qcow2");
        g_free(oracle_run("qemu-img create -q -f qcow2 -o preallocation=metadata %s 8M", img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc1 1M 1M' %s", img));
        return img;
}

static char *build_raw(const char *dir) {
        char *img = path_in(dir, "plain.raw");
        g_free(oracle_run("qemu-img create -q -f raw %s 8M", img));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0xd1 64k 64k' -c 'write -P 0xd2 5M 12345' %s", img));
        return img;
}

static const Shape shapes[] = {
        { "v3", build_v3 },
        { "v2", build_v2 },
        { "cluster-512-refcount-1", build_small_clusters },
        { "cluster-2M-refcount-64", build_big_clusters },
        { "cluster-4k-refcount-16-lazy", build_refcount16 },
        { "compressed", build_compressed },
        { "compressed-cluster-512", build_compressed_small },
        { "snapshots", build_snapshots },
        { "chain-3-deep-relative", build_chain },
        { "raw-backing-smaller", build_raw_backing },
        { "v2-chain", build_v2_chain },
        { "preallocation-metadata", build_preallocated },
        { "raw", build_raw },
};

static GArray *our_map(Image *img) {
        GArray *extents = g_array_new(FALSE, FALSE, sizeof(OracleExtent));
        uint64_t size = image_size(img);

        for (uint64_t off = 0; off < size;) {
                ImageExtent e;
                g_assert_cmpint(image_block_status(img, off, size - off, &e), ==, 0);
                g_assert_cmpuint(e.length, >, 0);
                OracleExtent o = { off, e.length, e.depth, e.present, e.zero, e.data };
                g_array_append_val(extents, o);
                off += e.length;
        }
        oracle_merge(extents);
        return extents;
}

static char *describe(GArray *extents) {
        GString *s = g_string_new(NULL);
        for (guint i = 0; i < extents->len; i++) {
                OracleExtent *e = &g_array_index(extents, OracleExtent, i);
                g_string_append_printf(s, "[%" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT " d%d %s%s%s] ", e->start, e->length,
                                       e->depth, e->present ? "P" : "-", e->zero ? "Z" : "-", e->data ? "D" : "-");
        }
        return g_string_free(s, FALSE);
}

static void test_shape(gconstpointer data) {
        const Shape *shape = data;
        g_autoptr(GError) gerror = NULL;
        g_autofree char *dir = g_dir_make_tmp("blockjobd-image-XXXXXX", &gerror);
        g_autofree char *path = NULL, *error = NULL;
        g_autoptr(GBytes) expected = NULL;
        g_autoptr(GArray) ours = NULL, theirs = NULL;
        g_autofree uint8_t *buf = NULL;
        Image *img = NULL;
        gsize size;

        g_assert_no_error(gerror);
        path = shape->build(dir);

        /* As the daemon opens them: with their format given (a probed qcow2 image is not followed
         * to its backing file). */
        ImageFormat format = g_str_has_suffix(path, ".raw") ? IMAGE_FORMAT_RAW : IMAGE_FORMAT_QCOW2;
        g_assert_cmpint(image_open(path, format, 0, &img, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpint(image_format(img), ==, format);
        g_assert_false(image_format_probed(img));
        expected = oracle_read_all(path, dir);
        size = g_bytes_get_size(expected);
        g_assert_cmpuint(image_size(img), ==, size);

        /* Read in odd pieces, so that requests start and end inside clusters. */
        buf = g_malloc(size);
        for (uint64_t off = 0, piece = 3 * 65536 + 4097; off < size; off += piece) {
                size_t n = MIN(piece, size - off);
                g_assert_cmpint(image_read(img, buf + off, off, n), ==, 0);
        }
        if (memcmp(buf, g_bytes_get_data(expected, NULL), size) != 0) {
                for (gsize i = 0; i < size; i++)
                        if (buf[i] != ((const uint8_t *) g_bytes_get_data(expected, NULL))[i])
                                g_error("%s: first difference at offset %" G_GSIZE_FORMAT, shape->name, i);
        }

        ours = our_map(img);
        theirs = oracle_map(path);
        g_autofree char *a = describe(ours), *b = describe(theirs);
        g_assert_cmpstr(a, ==, b);

        image_close(img);
        g_free(oracle_run("rm -rf %s", dir));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        if (!oracle_available())
                return 1;

        for (unsigned i = 0; i < G_N_ELEMENTS(shapes); i++) {
                g_autofree char *p = g_strdup_printf("/image-read/%s", shapes[i].name);
                g_test_add_data_func(p, &shapes[i], test_shape);
        }
        return g_test_run();
}
