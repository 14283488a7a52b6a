/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bad images: refused features, hostile headers and tables, broken chains. Each is made from a
 * valid image of qemu-img's by patching bytes, and each must give its clear error (in the
 * sanitizer build: without any memory error), never a crash and never wrong data. */

#include <fcntl.h>
#include <inttypes.h>
#include <glib/gstdio.h>
#include <linux/falloc.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image.h"
#include "address-space.h"
#include "qemu-oracle.h"

typedef struct Fixture {
        char *dir;
        char *img;              /* a v3, 64 KiB-cluster image with data, made by qemu-img */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;

        f->dir = g_dir_make_tmp("blockjobd-hostile-XXXXXX", &error);
        g_assert_no_error(error);
        f->img = g_build_filename(f->dir, "a.qcow2", NULL);
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8M", f->img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' %s", f->img));
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_free(oracle_run("rm -rf %s", f->dir));
        g_free(f->dir);
        g_free(f->img);
}

static void poke(const char *path, uint64_t offset, const void *bytes, size_t n) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, bytes, n, offset), ==, (ssize_t) n);
        g_assert_cmpint(close(fd), ==, 0);
}

static void poke32(const char *path, uint64_t offset, uint32_t v) {
        uint8_t b[4] = { v >> 24, v >> 16, v >> 8, v };
        poke(path, offset, b, 4);
}

static void poke64(const char *path, uint64_t offset, uint64_t v) {
        uint8_t b[8];
        for (int i = 7; i >= 0; i--, v >>= 8)
                b[i] = (uint8_t) v;
        poke(path, offset, b, 8);
}

static uint64_t peek64(const char *path, uint64_t offset) {
        uint8_t b[8];
        uint64_t v = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(pread(fd, b, 8, offset), ==, 8);
        close(fd);
        for (int i = 0; i < 8; i++)
                v = v << 8 | b[i];
        return v;
}

/* Opening fails with this errno and a message that contains 'expected'. */
static void assert_open_fails(const char *path, unsigned flags, int expected_r, const char *expected) {
        g_autofree char *error = NULL;
        Image *img = NULL;
        int r = image_open(path, IMAGE_FORMAT_QCOW2, flags, &img, &error);

        if (r >= 0)
                g_error("'%s' opened, expected: %s", path, expected);
        g_assert_null(img);
        g_assert_nonnull(error);
        if (!strstr(error, expected))
                g_error("error \"%s\" does not say \"%s\"", error, expected);
        g_assert_cmpint(r, ==, expected_r);
}

/* Opening works, reading everything fails with a message that contains 'expected'; when the
 * metadata is what is broken, block status says so too. */
static void assert_read_fails_status(const char *path, const char *expected, bool status_too) {
        g_autofree char *error = NULL;
        g_autofree uint8_t *buf = NULL;
        Image *img = NULL;
        int r;

        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, 0, &img, &error), ==, 0);
        buf = g_malloc(image_size(img));
        r = image_read(img, buf, 0, image_size(img));
        g_assert_cmpint(r, <, 0);
        if (!strstr(image_error(img), expected))
                g_error("error \"%s\" does not say \"%s\"", image_error(img), expected);

        if (!status_too) {
                image_close(img);
                return;
        }

        /* Block status meets the same problem and says the same. */
        ImageExtent e;
        r = 0;
        for (uint64_t off = 0; off < image_size(img); off += e.length) {
                r = image_block_status(img, off, image_size(img) - off, &e);
                if (r < 0)
                        break;
        }
        g_assert_cmpint(r, <, 0);
        if (!strstr(image_error(img), expected))
                g_error("block status error \"%s\" does not say \"%s\"", image_error(img), expected);
        image_close(img);
}

static void assert_read_fails(const char *path, const char *expected) {
        assert_read_fails_status(path, expected, true);
}

static void test_header_fields(Fixture *f, gconstpointer data) {
        g_autofree char *copy = g_build_filename(f->dir, "patched.qcow2", NULL);
        struct { uint64_t offset; unsigned width; uint64_t value; int r; const char *error; } cases[] = {
                { 4, 4, 1, -EOPNOTSUPP, "qcow2 version 1, which blockjobd does not support" },
                { 4, 4, 4, -EOPNOTSUPP, "qcow2 version 4" },
                { 20, 4, 8, -EUCLEAN, "unsupported cluster size (2^8 bytes)" },
                { 20, 4, 22, -EUCLEAN, "unsupported cluster size (2^22 bytes)" },
                { 20, 4, 0xffffffff, -EUCLEAN, "unsupported cluster size" },
                { 32, 4, 1, -EOPNOTSUPP, "is encrypted" },
                { 32, 4, 2, -EOPNOTSUPP, "is encrypted" },
                { 24, 8, UINT64_C(1) << 62, -EUCLEAN, "virtual size" },
                { 36, 4, 0xffffffff, -EUCLEAN, "L1 table of 4294967295 entries is too large" },
                { 36, 4, 0, -EUCLEAN, "L1 table of 0 entries is too small" },
                { 40, 8, 0x30001, -EUCLEAN, "L1 table at offset 0x30001 is unaligned" },
                { 40, 8, UINT64_C(1) << 40, -EUCLEAN, "beyond the end of the file" },
                { 40, 8, 0, -EUCLEAN, "L1 table at offset 0x0" },
                { 48, 8, UINT64_C(1) << 40, -EUCLEAN, "refcount table at offset" },
                { 56, 4, 0xffffff, -EUCLEAN, "refcount table at offset" },
                { 60, 4, 0x7fffffff, -EUCLEAN, "snapshot table" },
                { 72, 8, UINT64_C(1) << 2, -EOPNOTSUPP, "external data file" },
                { 72, 8, UINT64_C(1) << 4, -EOPNOTSUPP, "extended L2 entries" },
                { 72, 8, UINT64_C(1) << 10, -EOPNOTSUPP, "unknown incompatible feature (bit 10)" },
                { 96, 4, 7, -EUCLEAN, "refcount order 7" },
                { 100, 4, 7, -EUCLEAN, "header length 7" },
                { 100, 4, 100, -EUCLEAN, "header length 100" },
                { 100, 4, 1 << 20, -EUCLEAN, "header length" },
                { 16, 4, 5000, -EUCLEAN, "backing file name of 5000 bytes" },
        };

        for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_free(oracle_run("cp %s %s", f->img, copy));
                if (cases[i].offset == 16) {
                        /* A name needs an offset to count. */
                        poke64(copy, 8, 512);
                }
                if (cases[i].width == 4)
                        poke32(copy, cases[i].offset, (uint32_t) cases[i].value);
                else
                        poke64(copy, cases[i].offset, cases[i].value);
                assert_open_fails(copy, 0, cases[i].r, cases[i].error);
        }
}

static void test_known_features(Fixture *f, gconstpointer data) {
        g_autofree char *copy = g_build_filename(f->dir, "patched.qcow2", NULL);
        Image *img = NULL;

        /* zstd compression: a type field, and the bit that says it matters. */
        g_free(oracle_run("cp %s %s", f->img, copy));
        poke64(copy, 72, UINT64_C(1) << 3);
        poke(copy, 104, "\x01", 1);
        assert_open_fails(copy, 0, -EOPNOTSUPP, "uses zstd compression");

        /* Dirty: readable, but not writable until repaired. */
        g_free(oracle_run("cp %s %s", f->img, copy));
        poke64(copy, 72, UINT64_C(1) << 0);
        g_assert_cmpint(image_open(copy, IMAGE_FORMAT_PROBE, 0, &img, NULL), ==, 0);
        image_close(img);
        assert_open_fails(copy, IMAGE_OPEN_WRITE, -EUCLEAN, "repair it with 'qemu-img check -r all");

        /* Corrupt: the same. */
        poke64(copy, 72, UINT64_C(1) << 1);
        assert_open_fails(copy, IMAGE_OPEN_WRITE, -EUCLEAN, "is marked corrupt");

        /* qemu-img's own encrypted images: the old AES kind, and LUKS, whose key derivation
         * times itself and can fail on a loaded machine ("Unable to get accurate CPU usage"),
         * so it gets a few tries. */
        g_autofree char *aes = g_build_filename(f->dir, "aes.qcow2", NULL);
        g_free(oracle_run("qemu-img create -q --object secret,id=sec0,data=abc -f qcow2 -o encrypt.format=aes,encrypt.key-secret=sec0 %s 1M",
                          aes));
        assert_open_fails(aes, 0, -EOPNOTSUPP, "is encrypted");

        g_autofree char *enc = g_build_filename(f->dir, "enc.qcow2", NULL);
        int status = -1;
        for (unsigned i = 0; i < 5 && status != 0; i++) {
                g_autofree char *out = NULL, *err = NULL;
                g_unlink(enc);
                status = oracle_try(&out, &err,
                                    "qemu-img create -q --object secret,id=sec0,data=abc -f qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0 %s 1M",
                                    enc);
        }
        g_assert_cmpint(status, ==, 0);
        assert_open_fails(enc, 0, -EOPNOTSUPP, "is encrypted");
}

static void test_tables(Fixture *f, gconstpointer data) {
        g_autofree char *copy = g_build_filename(f->dir, "patched.qcow2", NULL);
        uint64_t l1 = peek64(f->img, 40), l2;

        /* An L2 table beyond the end of the file. */
        g_free(oracle_run("cp %s %s", f->img, copy));
        poke64(copy, l1, (UINT64_C(1) << 40) | (UINT64_C(1) << 63));
        assert_read_fails(copy, "L2 table at offset 0x10000000000 is unaligned or beyond the end of the file");

        /* An unaligned L2 table. */
        g_free(oracle_run("cp %s %s", f->img, copy));
        poke64(copy, l1, peek64(f->img, l1) + 512);
        assert_read_fails(copy, "is unaligned or beyond the end of the file");

        /* A data cluster at an unaligned offset. */
        l2 = peek64(f->img, l1) & UINT64_C(0x00fffffffffffe00);
        g_free(oracle_run("cp %s %s", f->img, copy));
        poke64(copy, l2, peek64(f->img, l2) + 4096);
        assert_read_fails(copy, "at unaligned host offset");

        /* A zero flag in a version 2 image. */
        g_autofree char *v2 = g_build_filename(f->dir, "v2.qcow2", NULL);
        g_free(oracle_run("qemu-img convert -q -O qcow2 -o compat=0.10 %s %s", f->img, v2));
        l1 = peek64(v2, 40);
        l2 = peek64(v2, l1) & UINT64_C(0x00fffffffffffe00);
        poke64(v2, l2, peek64(v2, l2) | 1);
        assert_read_fails(v2, "zero cluster at guest offset 0x0 in a version 2 image");

        /* Truncated: the tables are gone. */
        g_free(oracle_run("cp %s %s", f->img, copy));
        g_assert_cmpint(truncate(copy, 200000), ==, 0);
        assert_read_fails(copy, "beyond the end of the file");
        g_assert_cmpint(truncate(copy, 65536), ==, 0);
        assert_open_fails(copy, 0, -EUCLEAN, "beyond the end of the file");
        g_assert_cmpint(truncate(copy, 100), ==, 0);
        assert_open_fails(copy, 0, -EUCLEAN, "too short for a qcow2 v3 header");
        g_assert_cmpint(truncate(copy, 10), ==, 0);
        assert_open_fails(copy, 0, -EUCLEAN, "too short for a qcow2 header");
}

static void test_compressed_garbage(Fixture *f, gconstpointer data) {
        g_autofree char *comp = g_build_filename(f->dir, "comp.qcow2", NULL);
        uint64_t l1, l2, entry;
        g_autofree uint8_t *junk = g_malloc(4096);

        g_free(oracle_run("qemu-img convert -q -c -O qcow2 %s %s", f->img, comp));
        l1 = peek64(comp, 40);
        l2 = peek64(comp, l1) & UINT64_C(0x00fffffffffffe00);
        entry = peek64(comp, l2);
        g_assert_true(entry & (UINT64_C(1) << 62));

        /* The compressed bytes replaced by junk: it must say so, not return junk. */
        memset(junk, 0xe7, 4096);
        poke(comp, entry & ((UINT64_C(1) << 54) - 1), junk, 4096);
        assert_read_fails_status(comp, "does not decompress", false);
}

static void test_chains(Fixture *f, gconstpointer data) {
        g_autofree char *b = g_build_filename(f->dir, "b.qcow2", NULL);
        g_autofree char *c = g_build_filename(f->dir, "c.qcow2", NULL);

        /* a → b → a: a loop. */
        g_free(oracle_run("qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 %s", b));
        g_free(oracle_run("qemu-img rebase -u -b b.qcow2 -F qcow2 %s", f->img));
        assert_open_fails(b, 0, -ELOOP, "loops back to");
        /* a → a. */
        g_free(oracle_run("qemu-img rebase -u -b a.qcow2 -F qcow2 %s", f->img));
        assert_open_fails(f->img, 0, -ELOOP, "loops back to");

        /* A backing file that is not there. */
        g_free(oracle_run("qemu-img rebase -u -b gone.qcow2 -F qcow2 %s", f->img));
        assert_open_fails(f->img, 0, -ENOENT, "Could not open backing file");
        /* ...and without the chain it opens. */
        Image *img = NULL;
        g_assert_cmpint(image_open(f->img, IMAGE_FORMAT_PROBE, IMAGE_OPEN_NO_BACKING, &img, NULL), ==, 0);
        g_assert_cmpstr(image_backing_name(img), ==, "gone.qcow2");
        g_assert_null(image_backing(img));
        image_close(img);

        /* A backing file format that is not ours. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", c));
        g_free(oracle_run("qemu-img rebase -u -b c.qcow2 -F vmdk %s", f->img));
        assert_open_fails(f->img, 0, -EOPNOTSUPP, "backing file of format 'vmdk'");

        /* QEMU's pseudo-protocols are not files. */
        g_free(oracle_run("qemu-img rebase -u -b nbd://localhost/x -F raw %s", f->img));
        assert_open_fails(f->img, IMAGE_OPEN_NO_LOCK, -EOPNOTSUPP, "is not a local file");

        /* Too deep: a chain of 70. */
        g_autofree char *prev = g_strdup("c.qcow2");
        g_autofree char *top = NULL;
        for (int i = 0; i < 70; i++) {
                g_free(top);
                top = g_strdup_printf("%s/l%d.qcow2", f->dir, i);
                g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F qcow2 %s", prev, top));
                g_free(prev);
                prev = g_strdup_printf("l%d.qcow2", i);
        }
        assert_open_fails(top, 0, -ELOOP, "deeper than 64 images");
}

/* ---- the header's extensions and the backing file name ------------------------------------- */

#define UNKNOWN_EXTENSION 0x12345678U

/* A fresh image of qemu-img's with clusters of 'cluster' bytes whose extensions are replaced: one
 * unknown extension of 'len' bytes at offset 112 (where qemu-img puts the first), then nothing
 * (zeroes); and a backing file name 'name' at 'name_offset'. */
static char *make_extension_image(Fixture *f, unsigned cluster, uint32_t len, uint64_t name_offset, const char *name) {
        char *path = g_strdup_printf("%s/ext-%u-%u.qcow2", f->dir, cluster, len);
        g_autofree uint8_t *junk = g_malloc(cluster);

        g_unlink(path);
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=%u %s 1M", cluster, path));
        /* qemu-img check and info open the backing file: let there be one. */
        g_free(oracle_run("qemu-img create -q -f raw %s/%s 1M", f->dir, name));
        memset(junk, 0, cluster);
        poke(path, 112, junk, cluster - 112);
        memset(junk, 0xab, cluster);
        poke32(path, 112, UNKNOWN_EXTENSION);
        poke32(path, 116, len);
        poke(path, 120, junk, len);
        poke(path, name_offset, name, strlen(name));
        poke64(path, 8, name_offset);
        poke32(path, 16, (uint32_t) strlen(name));
        return path;
}

static GBytes *file_bytes(const char *path) {
        g_autofree char *contents = NULL;
        gsize length;

        g_assert_true(g_file_get_contents(path, &contents, &length, NULL));
        return g_bytes_new_take(g_steal_pointer(&contents), length);
}

/* The review's header: an unknown extension that ends 4 bytes before the end of cluster 0, and a
 * 4-byte backing file name in its padding. QEMU reads the extensions only up to the name, and
 * `qemu-img check` finds nothing wrong. Rewriting the name finds no room (the extension alone
 * fills the cluster): it must say so and write nothing, not write past its buffer. */
static void test_set_backing_no_room(Fixture *f, gconstpointer data) {
        static const unsigned clusters[] = { 512, 4096, 65536 };

        for (unsigned i = 0; i < G_N_ELEMENTS(clusters); i++) {
                unsigned c = clusters[i];
                g_autofree char *path = make_extension_image(f, c, c - 124, c - 4, "base");
                g_autofree char *info = NULL, *error = NULL;
                g_autoptr(GBytes) before = NULL, after = NULL;
                Image *img = NULL;

                g_free(oracle_run("qemu-img check -q %s", path));
                info = oracle_run("qemu-img info -U --output=json %s", path);
                g_assert_nonnull(strstr(info, "\"backing-filename\": \"base\""));

                before = file_bytes(path);
                g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING, &img, &error),
                                ==, 0);
                g_assert_cmpstr(image_backing_name(img), ==, "base");
                g_assert_cmpint(image_set_backing(img, "base", IMAGE_FORMAT_QCOW2), ==, -ENOSPC);
                g_assert_nonnull(strstr(image_error(img), "has no room for backing file name 'base'"));
                g_assert_cmpint(image_set_backing(img, "b", IMAGE_FORMAT_RAW), ==, -ENOSPC);
                g_assert_cmpint(image_set_backing(img, NULL, IMAGE_FORMAT_PROBE), ==, -ENOSPC);
                g_assert_nonnull(strstr(image_error(img), "has no room to be rewritten"));
                g_assert_cmpstr(image_backing_name(img), ==, "base");
                image_close(img);

                /* Nothing written. */
                after = file_bytes(path);
                g_assert_true(g_bytes_equal(before, after));
                g_free(oracle_run("qemu-img check -q %s", path));
        }
}

/* The same shape with room to spare: the name in the padding of a short extension. The extension
 * is kept (its padding zeroed), the old name does not survive as part of it. */
static void test_set_backing_name_in_padding(Fixture *f, gconstpointer data) {
        g_autofree char *path = make_extension_image(f, 65536, 4, 124, "base");
        g_autofree char *info = NULL;
        Image *img = NULL;
        uint8_t ext[16];

        g_free(oracle_run("qemu-img check -q %s", path));
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING, &img, NULL), ==, 0);
        g_assert_cmpstr(image_backing_name(img), ==, "base");
        g_free(oracle_run("qemu-img create -q -f raw %s/new-base.raw 1M", f->dir));
        g_assert_cmpint(image_set_backing(img, "new-base.raw", IMAGE_FORMAT_RAW), ==, 0);
        image_close(img);

        info = oracle_run("qemu-img info -U --output=json %s", path);
        g_assert_nonnull(strstr(info, "\"backing-filename\": \"new-base.raw\""));
        g_assert_nonnull(strstr(info, "\"backing-filename-format\": \"raw\""));
        g_free(oracle_run("qemu-img check -q %s", path));

        int fd = open(path, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(pread(fd, ext, sizeof(ext), 112), ==, (ssize_t) sizeof(ext));
        close(fd);
        g_assert_cmpuint(peek64(path, 112), ==, (uint64_t) UNKNOWN_EXTENSION << 32 | 4);
        g_assert_cmpmem(ext + 8, 8, "\xab\xab\xab\xab\0\0\0\0", 8);
}

/* Extensions end where the name begins, as QEMU reads them: what lies beyond is the name, not an
 * extension (here the name itself would read as one that runs past the cluster). */
static void test_extensions_end_at_name(Fixture *f, gconstpointer data) {
        g_autofree char *path = make_extension_image(f, 65536, 0, 112, "base.raw");
        g_autofree char *info = NULL;
        Image *img = NULL;

        info = oracle_run("qemu-img info -U --output=json %s", path);
        g_assert_nonnull(strstr(info, "\"backing-filename\": \"base.raw\""));
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING, &img, NULL), ==, 0);
        g_assert_cmpstr(image_backing_name(img), ==, "base.raw");
        image_close(img);

        /* An extension header cut by the name: QEMU refuses it ("Header extension too large"),
         * and so do we. */
        g_free(path);
        path = make_extension_image(f, 65536, 0, 116, "base.raw");
        g_autofree char *out = NULL, *err = NULL;
        g_assert_cmpint(oracle_try(&out, &err, "qemu-img info -U %s", path), !=, 0);
        g_autofree char *error = NULL;
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING, &img, &error), ==, -EUCLEAN);
        g_assert_nonnull(strstr(error, "runs into the backing file name"));
}

static void test_not_images(Fixture *f, gconstpointer data) {
        g_autofree char *missing = g_build_filename(f->dir, "missing", NULL);

        assert_open_fails(missing, 0, -ENOENT, "Could not open");
        assert_open_fails(f->dir, 0, -EINVAL, "is neither a regular file nor a block device");
        assert_open_fails("", 0, -EINVAL, "No image given");
}

/* A virtual size that is not a multiple of 512: QEMU counts the disk in whole sectors and reads
 * it rounded down; so do we, the sector it cuts off included. */
static void test_odd_virtual_size(Fixture *f, gconstpointer data) {
        g_autofree char *copy = g_build_filename(f->dir, "odd.qcow2", NULL);
        g_autofree char *info = NULL, *expected_size = NULL;
        g_autofree uint8_t *buf = NULL;
        g_autoptr(GBytes) expected = NULL;
        Image *img = NULL;

        g_free(oracle_run("cp %s %s", f->img, copy));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x66 8387584 1024' %s", copy));
        poke64(copy, 24, 8 * 1024 * 1024 - 100);

        info = oracle_run("qemu-img info -U --output=json %s", copy);
        expected_size = g_strdup_printf("\"virtual-size\": %u,", 8 * 1024 * 1024 - 512);
        g_assert_nonnull(strstr(info, expected_size));

        g_assert_cmpint(image_open(copy, IMAGE_FORMAT_QCOW2, 0, &img, NULL), ==, 0);
        g_assert_cmpuint(image_size(img), ==, 8 * 1024 * 1024 - 512);
        expected = oracle_read_all(copy, f->dir);
        g_assert_cmpuint(g_bytes_get_size(expected), ==, image_size(img));
        buf = g_malloc(image_size(img));
        g_assert_cmpint(image_read(img, buf, 0, image_size(img)), ==, 0);
        g_assert_cmpmem(buf, image_size(img), g_bytes_get_data(expected, NULL), g_bytes_get_size(expected));
        image_close(img);
}

/* An image with lazy refcounts whose writer died: its dirty bit says the counts on disk may be
 * wrong. Reading is fine; every way of opening it for writing (the image itself, or a layer of
 * a chain to be written, as commit's base) is refused with the command that repairs it. */
static void test_dirty_lazy_refcounts(Fixture *f, gconstpointer data) {
        g_autofree char *lazy = g_build_filename(f->dir, "lazy.qcow2", NULL);
        g_autofree char *top = g_build_filename(f->dir, "top.qcow2", NULL);
        g_autofree char *out = NULL, *err = NULL, *expected = NULL;
        g_autofree uint8_t *buf = NULL;
        g_autoptr(GBytes) theirs = NULL;
        Image *img = NULL;
        struct stat st;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o lazy_refcounts=on %s 1M", lazy));
        g_assert_cmpint(oracle_try(&out, &err, "qemu-io -f qcow2 -c 'write -P 0x11 0 64k' -c abort %s", lazy), !=, 0);
        g_assert_cmpuint(peek64(lazy, 72) & 1, ==, 1);
        expected = g_strdup_printf("repair it with 'qemu-img check -r all %s'", lazy);

        assert_open_fails(lazy, IMAGE_OPEN_WRITE, -EUCLEAN, expected);
        assert_open_fails(lazy, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_NO_LOCK, -EUCLEAN, expected);

        g_assert_cmpint(image_open(lazy, IMAGE_FORMAT_QCOW2, 0, &img, NULL), ==, 0);
        theirs = oracle_read_all(lazy, f->dir);
        buf = g_malloc(image_size(img));
        g_assert_cmpint(image_read(img, buf, 0, image_size(img)), ==, 0);
        g_assert_cmpmem(buf, image_size(img), g_bytes_get_data(theirs, NULL), g_bytes_get_size(theirs));
        image_close(img);

        /* As the layer of a chain that commit writes into. */
        g_free(oracle_run("qemu-img create -q -f qcow2 -b lazy.qcow2 -F qcow2 %s", top));
        g_assert_cmpint(stat(lazy, &st), ==, 0);
        ImageOpenOptions o = { .writable = &st };
        g_autofree char *error = NULL;
        g_assert_cmpint(image_open_full(top, IMAGE_FORMAT_QCOW2, 0, &o, &img, &error), ==, -EUCLEAN);
        g_assert_nonnull(strstr(error, expected));

        /* Repaired, it opens for writing. */
        g_free(oracle_run("qemu-img check -q -r all %s", lazy));
        g_assert_cmpint(image_open_full(top, IMAGE_FORMAT_QCOW2, 0, &o, &img, NULL), ==, 0);
        image_close(img);
        g_assert_cmpint(image_open(lazy, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &img, NULL), ==, 0);
        image_close(img);
}

/* One refcount block, all ones, named by every entry of the refcount table: every cluster of a
 * 16 TiB range counts as used, most of it beyond the end of a small file. Finding a free cluster
 * must not search all of it (hours, in a worker that nothing can cancel): the image is corrupt. */
static void test_counted_beyond_end(Fixture *f, gconstpointer data) {
        g_autofree char *copy = g_build_filename(f->dir, "counted.qcow2", NULL);
        g_autofree uint8_t *ones = g_malloc(65536), *table = g_malloc(65536);
        uint64_t reftable = peek64(f->img, 48), refblock = peek64(f->img, reftable);
        uint8_t buf[4096] = {};
        Image *img = NULL;

        g_free(oracle_run("cp %s %s", f->img, copy));
        memset(ones, 0xff, 65536);
        poke(copy, refblock, ones, 65536);
        for (unsigned i = 0; i < 65536; i += 8)
                for (unsigned k = 0; k < 8; k++)
                        table[i + k] = (uint8_t) (refblock >> (56 - 8 * k));
        poke(copy, reftable, table, 65536);

        g_assert_cmpint(image_open(copy, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &img, NULL), ==, 0);
        gint64 start = g_get_monotonic_time();
        g_assert_cmpint(image_write(img, buf, 2 * 1024 * 1024, sizeof(buf)), ==, -EUCLEAN);
        g_assert_nonnull(strstr(image_error(img), "beyond the end of the file"));
        g_assert_cmpint(g_get_monotonic_time() - start, <, 10 * G_USEC_PER_SEC);
        image_close(img);
}

/* ---- memory driven by headers ---------------------------------------------------------------- */

#define MiB (UINT64_C(1) << 20)

/* A small file whose header claims a large L1 table: 32 GiB in 512-byte clusters is an L1 of
 * 1 Mi entries, 8 MiB. The estimate says so, and what writing and refreshing add. */
static void test_memory_large_l1(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "l1.qcow2", NULL);
        uint64_t ro, rw, shared;
        Image *img = NULL;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=512 %s 32G", path));
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, 0, &img, NULL), ==, 0);
        ro = image_memory_estimate(img);
        image_close(img);
        g_assert_cmpuint(ro, >=, 8 * MiB);
        g_assert_cmpuint(ro, <=, 8 * MiB + 64 * 1024);

        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_SHARE_WRITE, &img, NULL), ==, 0);
        shared = image_memory_estimate(img);
        image_close(img);
        g_assert_cmpuint(shared, >=, 16 * MiB);

        /* Writable: the refcount table can grow to count 32 GiB of clusters of 512 bytes, within
         * QEMU's 8 MiB, and is copied as it is written. */
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE, &img, NULL), ==, 0);
        rw = image_memory_estimate(img);
        image_close(img);
        g_assert_cmpuint(rw, >, ro + 4 * MiB);
        g_assert_cmpuint(rw, <=, ro + 2 * 8 * MiB + MiB);
}

static uint64_t heap_in_use(void) {
#ifdef __SANITIZE_ADDRESS__
        /* AddressSanitizer's allocator is not glibc's: mallinfo2() knows nothing of it. */
        return 0;
#else
        struct mallinfo2 m = mallinfo2();
        return m.uordblks + m.hblkhd;
#endif
}

/* An image of 2 MiB clusters with 17 L2 tables: walking all of it keeps two tables cached
 * (4 MiB), not sixteen (32 MiB). */
static void test_memory_l2_cache_bound(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "c2m.qcow2", NULL);
        g_autoptr(GString) cmd = g_string_new("qemu-io -f qcow2");
        uint64_t before, after, estimate;
        Image *img = NULL;

        /* One zeroed cluster in each 512 GiB (what one L2 table maps): a table each, no data. */
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=2M %s 8704G", path));
        for (unsigned k = 0; k < 17; k++)
                g_string_append_printf(cmd, " -c 'write -z %uG 2M'", k * 512);
        g_string_append_printf(cmd, " %s", path);
        g_free(oracle_run("%s", cmd->str));

        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, 0, &img, NULL), ==, 0);
        estimate = image_memory_estimate(img);
        g_assert_cmpuint(estimate, <=, 16 * MiB);

        before = heap_in_use();
        for (unsigned k = 0; k < 17; k++) {
                ImageExtent e;
                g_assert_cmpint(image_block_status(img, (uint64_t) k * 512 * 1024 * MiB, 4 * MiB, &e), ==, 0);
                g_assert_true(e.zero);
        }
        after = heap_in_use();
        g_assert_cmpuint(after - MIN(after, before), <=, 2 * 2 * MiB + MiB);
        g_assert_cmpuint(after - MIN(after, before), <=, estimate);
        image_close(img);
}

/* A chain's estimate is its layers' together. */
static void test_memory_chain(Fixture *f, gconstpointer data) {
        g_autofree char *top = g_build_filename(f->dir, "top.qcow2", NULL);
        Image *img = NULL, *alone = NULL, *base = NULL;

        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b a.qcow2 -F qcow2 %s", top));
        g_assert_cmpint(image_open(top, IMAGE_FORMAT_QCOW2, 0, &img, NULL), ==, 0);
        g_assert_cmpint(image_open(top, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING, &alone, NULL), ==, 0);
        g_assert_cmpint(image_open(f->img, IMAGE_FORMAT_QCOW2, 0, &base, NULL), ==, 0);
        g_assert_cmpuint(image_memory_estimate(img), ==, image_memory_estimate(alone) + image_memory_estimate(base));
        g_assert_cmpuint(image_memory_estimate(image_backing(img)), ==, image_memory_estimate(base));
        image_close(img);
        image_close(alone);
        image_close(base);
}

/* Three enabled bitmaps of 128 MiB each (1 TiB at 1 KiB granularity), together within QEMU's
 * 512 MiB for all of them, but far beyond a job's bound: what a hostile image (or a big one)
 * asks of a writer. */
static void make_big_bitmaps(const char *path) {
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1T", path));
        for (unsigned k = 0; k < 3; k++)
                g_free(oracle_run("qemu-img bitmap --add -g 1024 %s b%u", path, k));
}

static int open_bounded(const char *path, uint64_t bound, Image **ret, char **ret_error) {
        ImageOpenOptions options = { .memory_max = bound };
        return image_open_full(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, &options, ret, ret_error);
}

/* In a child whose address space may grow by 64 MiB only: the bounded open is refused for the
 * bound (-E2BIG), not for want of memory (-ENOMEM, what loading the first map before the check
 * gave), and the image can still be opened read-only, so the bound is what refused it. */
static int open_in_child(const char *path) {
        char *error = NULL;
        Image *img = NULL;

        if (open_bounded(path, 32 * MiB, &img, &error) != -E2BIG)
                return 11;
        if (!strstr(error, "MiB of memory"))
                return 12;
        if (image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_LOCK, &img, NULL) < 0)
                return 13;
        image_close(img);
        return 0;
}

/* A writable open counts the maps of the enabled bitmaps it would load, and is refused beyond its
 * bound before any of them is allocated. */
static void test_memory_bitmaps(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "bitmaps.qcow2", NULL);
        g_autofree char *error = NULL;
        Image *img = NULL;

        make_big_bitmaps(path);
        g_assert_cmpint(open_bounded(path, 32 * MiB, &img, &error), ==, -E2BIG);
        g_assert_null(img);
        g_assert_nonnull(strstr(error, "MiB of memory"));
        g_assert_nonnull(strstr(error, "more than the 32 MiB"));

        /* Read-only, nothing is loaded: the maps are not counted. */
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_LOCK, &img, NULL), ==, 0);
        g_assert_cmpuint(image_memory_estimate(img), <, 32 * MiB);
        image_close(img);

        if (!address_space_limit_works()) {
                g_test_message("the address space child is skipped: ASan reserves more than the bound");
                return;
        }
        g_assert_cmpint(run_with_address_space(64 * MiB, open_in_child, path), ==, 0);
}

/* ---- raw files that change while they are read ------------------------------------------- */

typedef struct Toggler {
        int fd;
        gint stop;
        unsigned toggles;
} Toggler;

/* Makes the first block of the file data, then a hole, then data again, as fast as it can: what
 * a guest's writes and discards do to a raw disk that a mirror reads. */
static gpointer toggle_block(gpointer data) {
        Toggler *t = data;
        uint8_t block[4096];

        memset(block, 0x77, sizeof(block));
        while (!g_atomic_int_get(&t->stop)) {
                g_assert_cmpint(pwrite(t->fd, block, sizeof(block), 0), ==, (ssize_t) sizeof(block));
                g_assert_cmpint(fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, sizeof(block)), ==, 0);
                t->toggles++;
        }
        return NULL;
}

static void test_raw_toggling_block(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "toggled.raw", NULL);
        Toggler t = { .fd = -1 };
        uint8_t buf[8192];
        unsigned calls = 0;
        Image *img = NULL;

        /* Block 0 toggles, block 1 stays a hole, the rest is data: status at 0 and at 8 KiB
         * are different extents, so that every call looks at the file again. */
        t.fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        g_assert_cmpint(t.fd, >=, 0);
        g_assert_cmpint(ftruncate(t.fd, 64 * 1024), ==, 0);
        memset(buf, 0x55, sizeof(buf));
        for (off_t o = 8192; o < 64 * 1024; o += sizeof(buf))
                g_assert_cmpint(pwrite(t.fd, buf, sizeof(buf), o), ==, (ssize_t) sizeof(buf));
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_RAW, IMAGE_OPEN_SHARE_WRITE, &img, NULL), ==, 0);

        GThread *thread = g_thread_new("toggle", toggle_block, &t);
        gint64 end = g_get_monotonic_time() + G_USEC_PER_SEC;
        while (g_get_monotonic_time() < end) {
                ImageExtent e;
                LayerKind kind;
                uint64_t length;

                uint64_t off = calls++ % 2 ? 0 : 8192;
                g_assert_cmpint(image_block_status(img, off, image_size(img) - off, &e), ==, 0);
                g_assert_cmpuint(e.length, >, 0);
                g_assert_cmpuint(e.length, <=, image_size(img) - off);
                g_assert_cmpint(image_layer_status(img, off ^ 8192, 4096, &kind, &length), ==, 0);
                g_assert_cmpuint(length, >, 0);
                g_assert_cmpuint(length, <=, 4096);
                g_assert_cmpint(image_read(img, buf, 0, sizeof(buf)), ==, 0);
                g_assert_true(buf[0] == 0 || buf[0] == 0x77);
                g_assert_true(buf[4096] == 0);
        }
        g_atomic_int_set(&t.stop, 1);
        g_thread_join(thread);
        g_test_message("%u status calls while the block toggled %u times", calls, t.toggles);
        image_close(img);
        close(t.fd);
}

/* ---- bitmaps ------------------------------------------------------------------------------- */

static uint64_t peek_be(const char *path, uint64_t offset, unsigned width) {
        return peek64(path, offset) >> (64 - 8 * width);
}

/* Where the bitmaps extension's data lies in the header. */
static uint64_t bitmaps_ext(const char *path) {
        for (uint64_t pos = peek_be(path, 100, 4);;) {
                uint32_t type = (uint32_t) peek_be(path, pos, 4), len = (uint32_t) peek_be(path, pos + 4, 4);
                g_assert_cmpuint(type, !=, 0);
                if (type == 0x23852875)
                        return pos + 8;
                pos += 8 + ((len + 7) & ~7U);
        }
}

typedef enum BitmapFailure {
        FAILS_OPEN,             /* the extension itself: no open at all */
        FAILS_DIRECTORY,        /* the directory: listing fails, and opening for writing */
        FAILS_LOAD,             /* one (enabled) bitmap: reading it fails, and opening for writing */
} BitmapFailure;

static void assert_bitmaps_fail(const char *path, BitmapFailure level, int expected_r, const char *expected) {
        g_autofree char *error = NULL;
        ImageBitmapInfo *list = NULL;
        ImageDirtyMap *m = NULL;
        Image *img = NULL;
        size_t n = 0;
        int r;

        if (level == FAILS_OPEN) {
                assert_open_fails(path, 0, expected_r, expected);
                return;
        }
        /* Writing it would mean keeping its bitmaps, which cannot be read: refused at once. */
        assert_open_fails(path, IMAGE_OPEN_WRITE, expected_r, expected);
        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, 0, &img, &error), ==, 0);
        r = image_bitmap_list(img, &list, &n);
        if (level == FAILS_LOAD) {
                g_assert_cmpint(r, ==, 0);
                image_bitmap_list_free(list, n);
                r = image_bitmap_load(img, "aa", &m);
        }
        if (r >= 0)
                g_error("bitmaps of '%s' read, expected: %s", path, expected);
        g_assert_null(m);
        if (!strstr(image_error(img), expected))
                g_error("error \"%s\" does not say \"%s\"", image_error(img), expected);
        g_assert_cmpint(r, ==, expected_r);
        image_close(img);
}

/* Hostile bitmaps extensions, directories and tables, each patched into an image with two
 * bitmaps whose first has data ("aa", 64 KiB granularity; "ab", 512 bytes): each refused at
 * the right step with its clear error (in the sanitizer build: without any memory error). */
static void test_bitmaps(Fixture *f, gconstpointer data) {
        g_autofree char *img = g_build_filename(f->dir, "bitmaps.qcow2", NULL);
        g_autofree char *copy = g_build_filename(f->dir, "patched.qcow2", NULL);
        uint64_t ext, dir, table, cluster, l1, reftable;

        g_free(oracle_run("cp %s %s", f->img, img));
        g_free(oracle_run("qemu-img bitmap --add %s aa", img));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s ab", img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write 2M 64k' %s", img));
        ext = bitmaps_ext(img);
        dir = peek64(img, ext + 16);
        table = peek64(img, dir);
        cluster = peek64(img, table);
        l1 = peek64(img, 40);
        reftable = peek64(img, 48);
        g_assert_cmpuint(peek_be(img, ext, 4), ==, 2);
        g_assert_cmpuint(peek64(img, ext + 8), ==, 64);
        g_assert_cmpuint(cluster, !=, 0);

        struct { uint64_t offset; unsigned width; uint64_t value; BitmapFailure level; int r; const char *error; } cases[] = {
                /* The extension. */
                { ext - 4, 4, 16, FAILS_OPEN, -EUCLEAN, "bitmaps_ext: Invalid extension length" },
                { ext + 4, 4, 1, FAILS_OPEN, -EUCLEAN, "bitmaps_ext: Reserved field is not zero" },
                { ext, 4, 0, FAILS_OPEN, -EUCLEAN, "found bitmaps extension with zero bitmaps" },
                { ext, 4, 65536, FAILS_OPEN, -EUCLEAN, "Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535" },
                { ext + 16, 8, dir + 8, FAILS_OPEN, -EUCLEAN, "bitmaps_ext: invalid bitmap directory offset" },
                { ext + 8, 8, 1 << 30, FAILS_OPEN, -EUCLEAN, "bitmap directory size (1073741824) exceeds the maximum supported size (67107840)" },
                { ext + 8, 8, 0, FAILS_OPEN, -EUCLEAN, "Requested bitmap directory size is zero" },
                /* Where the directory is, and what it holds. */
                { ext + 16, 8, UINT64_C(1) << 40, FAILS_DIRECTORY, -EUCLEAN, "the bitmap directory at offset 0x10000000000 lies beyond the end of the file" },
                { ext + 16, 8, 0, FAILS_DIRECTORY, -EUCLEAN, "the bitmap directory at offset 0x0 overlaps the header" },
                { ext + 16, 8, l1, FAILS_DIRECTORY, -EUCLEAN, "overlaps the L1 table" },
                { ext + 16, 8, reftable, FAILS_DIRECTORY, -EUCLEAN, "overlaps the refcount table" },
                { ext, 4, 3, FAILS_DIRECTORY, -EUCLEAN, "Less bitmaps found than specified in header extension" },
                { ext, 4, 1, FAILS_DIRECTORY, -EUCLEAN, "More bitmaps found than specified in header extension" },
                { ext + 8, 8, 60, FAILS_DIRECTORY, -EUCLEAN, "Broken bitmap directory" },
                { ext + 8, 8, 40, FAILS_DIRECTORY, -EUCLEAN, "Broken bitmap directory" },
                /* Its first entry. */
                { dir + 8, 4, 0, FAILS_DIRECTORY, -EUCLEAN, "Bitmap 'aa' doesn't satisfy the constraints: its bitmap table is empty or unaligned" },
                { dir, 8, table + 8, FAILS_DIRECTORY, -EUCLEAN, "its bitmap table is empty or unaligned" },
                { dir, 8, 0, FAILS_DIRECTORY, -EUCLEAN, "its bitmap table is empty or unaligned" },
                { dir + 8, 4, 0x8000001, FAILS_DIRECTORY, -EUCLEAN, "its bitmap table is too large" },
                { dir + 17, 1, 8, FAILS_DIRECTORY, -EUCLEAN, "its granularity is out of range" },
                { dir + 17, 1, 32, FAILS_DIRECTORY, -EUCLEAN, "its granularity is out of range" },
                { dir + 12, 4, 4, FAILS_DIRECTORY, -EUCLEAN, "it has reserved flags set" },
                { dir + 12, 4, 0x80000002, FAILS_DIRECTORY, -EUCLEAN, "it has reserved flags set" },
                { dir + 16, 1, 2, FAILS_DIRECTORY, -EUCLEAN, "it is not a dirty tracking bitmap" },
                { dir + 18, 2, 0, FAILS_DIRECTORY, -EUCLEAN, "its name is empty" },
                { dir + 18, 2, 1024, FAILS_DIRECTORY, -EUCLEAN, "Broken bitmap directory" },
                { dir + 20, 4, 8, FAILS_DIRECTORY, -EOPNOTSUPP, "Bitmap extra data is not supported" },
                { dir + 20, 4, 0xffffffff, FAILS_DIRECTORY, -EUCLEAN, "Broken bitmap directory" },
                { dir + 24, 1, 0, FAILS_DIRECTORY, -EUCLEAN, "its name contains a NUL byte" },
                { dir + 26, 1, 0x55, FAILS_DIRECTORY, -EUCLEAN, "padding is not zero" },
                { dir + 32 + 25, 1, 'a', FAILS_DIRECTORY, -EUCLEAN, "two bitmaps are called 'aa'" },
                { dir, 8, UINT64_C(1) << 40, FAILS_DIRECTORY, -EUCLEAN, "a bitmap table at offset 0x10000000000 lies beyond the end of the file" },
                { dir, 8, l1, FAILS_DIRECTORY, -EUCLEAN, "a bitmap table at offset" },
                { dir, 8, dir, FAILS_DIRECTORY, -EUCLEAN, "bitmap structures at offsets" },
                { dir, 8, peek64(img, dir + 32), FAILS_DIRECTORY, -EUCLEAN, "bitmap structures at offsets" },
                { 24, 8, 512 << 20, FAILS_DIRECTORY, -EUCLEAN, "Bitmap 'ab' doesn't satisfy the constraints: its bitmap table is too small for the disk" },
                /* One bitmap's table. */
                { dir + 8, 4, 2, FAILS_LOAD, -EUCLEAN, "Could not read bitmap 'aa' from image: its table has 2 entries" },
                { table, 8, cluster | 2, FAILS_LOAD, -EUCLEAN, "Could not read bitmap_table table from image for bitmap 'aa': invalid entry" },
                { table, 8, cluster | 1, FAILS_LOAD, -EUCLEAN, "invalid entry" },
                { table, 8, cluster + 512, FAILS_LOAD, -EUCLEAN, "invalid entry" },
                { table, 8, UINT64_C(1) << 55, FAILS_LOAD, -EUCLEAN, "a bitmap data cluster at offset 0x80000000000000 lies beyond the end of the file" },
                { table, 8, l1, FAILS_LOAD, -EUCLEAN, "a bitmap data cluster at offset" },
                { table, 8, dir, FAILS_LOAD, -EUCLEAN, "overlaps the bitmap directory or its table" },
        };

        for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_free(oracle_run("cp %s %s", img, copy));
                if (cases[i].width == 8)
                        poke64(copy, cases[i].offset, cases[i].value);
                else if (cases[i].width == 4)
                        poke32(copy, cases[i].offset, (uint32_t) cases[i].value);
                else {
                        uint8_t b[2] = { (uint8_t) (cases[i].value >> (8 * (cases[i].width - 1))), (uint8_t) cases[i].value };
                        poke(copy, cases[i].offset, cases[i].width == 2 ? b : b + 1, cases[i].width);
                }
                g_test_message("case %u", i);
                assert_bitmaps_fail(copy, cases[i].level, cases[i].r, cases[i].error);
        }

        /* The unpatched image reads, and so do its bitmaps. */
        g_autofree char *error = NULL;
        ImageDirtyMap *m = NULL;
        Image *good = NULL;
        g_assert_cmpint(image_open(img, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, &good, &error), ==, 0);
        g_assert_cmpint(image_bitmap_load(good, "aa", &m), ==, 0);
        g_assert_cmpuint(image_dirty_map_count(m), ==, 65536);
        image_dirty_map_free(m);
        image_close(good);
}

/* ---- what bitmaps own ---------------------------------------------------------------------- */

#define L2_OFFSET_MASK UINT64_C(0x00fffffffffffe00)

/* The image of the ownership cases (64 KiB clusters, 8 MiB): compressed data at 1 MiB (`qemu-img
 * convert -c`), a snapshot, then data at 2 MiB written after it (so that the active L1 table and
 * the snapshot's name different L2 tables), bitmaps "aa" (enabled, with data: 3 MiB written
 * after it was added) and "ab" (disabled, 512 bytes). Guest offset 0 is never written: entry 0
 * of the active L2 table is zero, a valid bitmap table entry. */
static void make_owned_image(Fixture *f, const char *path) {
        g_autofree char *raw = g_build_filename(f->dir, "owned.raw", NULL);

        g_free(oracle_run("qemu-img create -q -f raw %s 8M", raw));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x33 1M 128k' %s", raw));
        g_free(oracle_run("qemu-img convert -c -O qcow2 -o cluster_size=65536 %s %s", raw, path));
        g_free(oracle_run("qemu-img snapshot -c s1 %s", path));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x44 2M 64k' %s", path));
        g_free(oracle_run("qemu-img bitmap --add %s aa", path));
        g_free(oracle_run("qemu-img bitmap --add --disable -g 512 %s ab", path));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x55 3M 64k' %s", path));
}

/* Each change of the bitmaps refused with this message, and -EUCLEAN. */
static void assert_changes_refused(const char *path, const char *expected) {
        static const char *const aa[] = { "aa" }, *const ab[] = { "ab" };
        g_autofree char *error = NULL;
        Image *img = NULL;

        g_assert_cmpint(image_open(path, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, &img, &error), ==, 0);
        for (unsigned op = 0; op < 8; op++) {
                int r = -1;
                switch (op) {
                case 0: r = image_bitmap_remove(img, "aa"); break;
                case 1: r = image_bitmap_remove(img, "ab"); break;
                case 2: r = image_bitmap_clear(img, "aa"); break;
                case 3: r = image_bitmap_merge(img, "aa", ab, 1); break;
                case 4: r = image_bitmap_merge(img, "ab", aa, 1); break;
                case 5: r = image_bitmap_add(img, "new", 0, false); break;
                case 6: r = image_bitmap_enable(img, "aa", true); break;
                case 7: r = image_bitmap_enable(img, "ab", false); break;
                }
                if (r != -EUCLEAN || !strstr(image_error(img), expected))
                        g_error("change %u of '%s': %d \"%s\", expected \"%s\"", op, path, r,
                                r < 0 ? image_error(img) : "", expected);
        }
        image_close(img);
}

/* A bitmap table or data cluster that is also something else, or not counted exactly once: any
 * change of the bitmaps would free it (and a later allocation overwrite it). Each is refused
 * before anything is written: opening for writing while "aa" is enabled (it would be stored
 * anew), and, with "aa" disabled, every bitmap command; the file stays byte for byte as it was.
 * `qemu-img check` sees each patched image as corrupt too (exit 2), but for a count of 2, which
 * it calls a leak (exit 3): we refuse that as well, since freeing a cluster on a count we know to
 * be wrong is how clusters get lost or shared. Reading the bitmaps still works. */
static void test_bitmaps_owned(Fixture *f, gconstpointer data) {
        g_autofree char *img = g_build_filename(f->dir, "owned.qcow2", NULL);
        g_autofree char *copy = g_build_filename(f->dir, "patched.qcow2", NULL);
        uint64_t ext, dir, table, cluster, l1, l2, reftable, refblock, snapshots, snap_l1, snap_l2, compressed;

        make_owned_image(f, img);
        ext = bitmaps_ext(img);
        dir = peek64(img, ext + 16);
        table = peek64(img, dir);
        cluster = peek64(img, table);
        l1 = peek64(img, 40);
        l2 = peek64(img, l1) & L2_OFFSET_MASK;
        reftable = peek64(img, 48);
        refblock = peek64(img, reftable);
        snapshots = peek64(img, 64);
        snap_l1 = peek64(img, snapshots);
        snap_l2 = peek64(img, snap_l1) & L2_OFFSET_MASK;
        /* 1 MiB is entry 16; 64 KiB clusters: the host offset is the low 54 bits. */
        compressed = peek64(img, l2 + 16 * 8);
        g_assert_cmpuint(compressed >> 62, ==, 1);
        compressed = (compressed & ((UINT64_C(1) << 54) - 1)) & ~UINT64_C(0xffff);
        g_assert_cmpuint(peek_be(img, 60, 4), ==, 1);
        g_assert_cmpuint(peek64(img, l2), ==, 0);
        g_assert_cmpuint(cluster, !=, 0);
        g_assert_cmpuint(snap_l2, !=, 0);
        g_assert_cmpuint(snap_l2, !=, l2);
        g_assert_cmpuint(peek64(img, l2 + 32 * 8) & L2_OFFSET_MASK, !=, 0);
        g_assert_cmpint(oracle_try(NULL, NULL, "qemu-img check %s", img), ==, 0);

        uint64_t data_refcount = refblock + 2 * (cluster >> 16);   /* 16-bit refcounts */
        g_assert_cmpuint(peek_be(img, data_refcount, 2), ==, 1);
        g_autofree char *aa_table_msg = g_strdup_printf("the bitmap table of bitmap 'aa' at offset 0x%" PRIx64 " is also used as an L2 table", l2);
        g_autofree char *l2_msg = g_strdup_printf("a data cluster of bitmap 'aa' at offset 0x%" PRIx64 " is also used as an L2 table", l2);

        struct { uint64_t offset; unsigned width; uint64_t value; int check; const char *error, *also; } cases[] = {
                { dir, 8, l2, 2, aa_table_msg },
                { table, 8, l2, 2, l2_msg },
                { table, 8, snap_l2, 2, "is also used as an L2 table of a snapshot" },
                { table, 8, snap_l1, 2, "is also used as the L1 table of a snapshot" },
                { table, 8, snapshots, 2, "is also used as the snapshot table" },
                { table, 8, refblock, 2, "is also used as a refcount block" },
                { table, 8, peek64(img, l2 + 32 * 8) & L2_OFFSET_MASK, 2, "is also used as a guest data cluster" },
                { table, 8, compressed, 2, "is also used as a compressed guest data cluster" },
                { table, 8, peek64(img, dir + 32), 2, "a data cluster of bitmap 'aa' at offset", "is used twice by the bitmaps" },
                { data_refcount, 2, 0, 2, "a data cluster of bitmap 'aa' at offset", "has refcount 0, not 1" },
                { data_refcount, 2, 2, 3, "a data cluster of bitmap 'aa' at offset", "has refcount 2, not 1" },
                /* What the walk reads must be what it can read. */
                { snapshots, 8, UINT64_C(1) << 40, 2, "a snapshot's L1 table at offset 0x10000000000 is unaligned, too large or beyond the end of the file" },
                { snap_l1, 8, UINT64_C(1) << 40, 2, "L2 table of a snapshot at offset 0x10000000000 is unaligned or beyond the end of the file" },
        };

        for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GBytes) before = NULL, after = NULL;
                g_autofree char *error = NULL;
                ImageBitmapInfo *list = NULL;
                Image *ro = NULL;
                size_t n = 0;

                g_test_message("case %u: %s", i, cases[i].error);
                g_free(oracle_run("cp %s %s", img, copy));
                if (cases[i].width == 8)
                        poke64(copy, cases[i].offset, cases[i].value);
                else
                        poke(copy, cases[i].offset, (uint8_t[]) { cases[i].value >> 8, cases[i].value }, 2);
                g_assert_cmpint(oracle_try(NULL, NULL, "qemu-img check %s", copy), ==, cases[i].check);

                before = file_bytes(copy);
                assert_open_fails(copy, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, -EUCLEAN,
                                  "has persistent bitmaps that blockjobd cannot keep consistent");
                assert_open_fails(copy, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, -EUCLEAN, cases[i].error);
                if (cases[i].also)
                        assert_open_fails(copy, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, -EUCLEAN, cases[i].also);
                after = file_bytes(copy);
                g_assert_true(g_bytes_equal(before, after));

                /* "aa" disabled: the image opens for writing, and every change is refused. */
                poke32(copy, dir + 12, 0);
                g_bytes_unref(before);
                g_bytes_unref(after);
                before = file_bytes(copy);
                assert_changes_refused(copy, cases[i].error);
                if (cases[i].also)
                        assert_changes_refused(copy, cases[i].also);
                after = file_bytes(copy);
                g_assert_true(g_bytes_equal(before, after));

                /* Read only, nothing is freed: the bitmaps are listed as ever. */
                g_assert_cmpint(image_open(copy, IMAGE_FORMAT_QCOW2, 0, &ro, &error), ==, 0);
                g_assert_cmpint(image_bitmap_list(ro, &list, &n), ==, 0);
                g_assert_cmpuint(n, ==, 2);
                image_bitmap_list_free(list, n);
                image_close(ro);
        }
}

/* The same image unpatched, with another snapshot and more bitmaps (some with data): opened for writing with an
 * enabled bitmap, written, and every change made; `qemu-img check` finds nothing wrong. */
static void test_bitmaps_owned_good(Fixture *f, gconstpointer data) {
        static const char *const sources[] = { "aa", "b3" };
        g_autofree char *img = g_build_filename(f->dir, "owned.qcow2", NULL);
        g_autofree char *error = NULL, *out = NULL, *err = NULL;
        uint8_t buf[4096];
        Image *w = NULL;
        int status;

        make_owned_image(f, img);
        /* A second snapshot, sharing L2 tables with the first and with the active L1 table. */
        g_free(oracle_run("qemu-img snapshot -c s2 %s", img));
        for (unsigned i = 0; i < 8; i++)
                g_free(oracle_run("qemu-img bitmap --add -g %u %s b%u", 512U << i, img, i));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x66 5M 300k' %s", img));

        g_assert_cmpint(image_open(img, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, &w, &error), ==, 0);
        memset(buf, 0x77, sizeof(buf));
        g_assert_cmpint(image_write(w, buf, 6 << 20, sizeof(buf)), ==, 0);
        g_assert_cmpint(image_flush(w), ==, 0);
        g_assert_cmpint(image_bitmap_merge(w, "ab", sources, 2), ==, 0);
        g_assert_cmpint(image_bitmap_clear(w, "b0"), ==, 0);
        g_assert_cmpint(image_bitmap_remove(w, "b1"), ==, 0);
        g_assert_cmpint(image_bitmap_add(w, "new", 0, false), ==, 0);
        g_assert_cmpint(image_bitmap_enable(w, "ab", true), ==, 0);
        g_assert_cmpint(image_bitmap_enable(w, "b2", false), ==, 0);
        g_assert_cmpint(image_write(w, buf, 7 << 20, sizeof(buf)), ==, 0);
        image_close(w);

        status = oracle_try(&out, &err, "qemu-img check %s", img);
        if (status != 0)
                g_error("qemu-img check: status %d: %s%s", status, out, err);
        g_autofree char *info = oracle_run("qemu-img info %s", img);
        g_assert_nonnull(strstr(info, "name: new"));
        g_assert_null(strstr(info, "name: b1\n"));
        g_assert_null(strstr(info, "in-use"));
}

/* A table whose entries all name one data cluster, more of them than the file has clusters:
 * refused before the set of what bitmaps own outgrows the file (QEMU sees wrong counts). */
static void test_bitmaps_owned_too_many(Fixture *f, gconstpointer data) {
        static const char *const expected = "its bitmaps name more clusters than the file has";
        g_autofree char *img = g_build_filename(f->dir, "many.qcow2", NULL);
        g_autofree char *error = NULL;
        g_autoptr(GBytes) before = NULL, after = NULL;
        uint64_t dir, table, cluster;
        Image *w = NULL;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 8G", img));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s big", img));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write 0 512' %s", img));
        dir = peek64(img, bitmaps_ext(img) + 16);
        table = peek64(img, dir);
        cluster = peek64(img, table);
        g_assert_cmpuint(peek_be(img, dir + 8, 4), ==, 32);
        g_assert_cmpuint(cluster, !=, 0);
        for (unsigned i = 1; i < 32; i++)
                poke64(img, table + 8 * i, cluster);
        g_assert_cmpint(oracle_try(NULL, NULL, "qemu-img check %s", img), ==, 2);

        before = file_bytes(img);
        g_assert_cmpuint(g_bytes_get_size(before) / 65536, <, 32);
        assert_open_fails(img, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, -EUCLEAN, expected);
        after = file_bytes(img);
        g_assert_true(g_bytes_equal(before, after));

        poke32(img, dir + 12, 0);               /* disabled: opens, and changes are refused */
        g_bytes_unref(before);
        g_bytes_unref(after);
        before = file_bytes(img);
        g_assert_cmpint(image_open(img, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK, &w, &error), ==, 0);
        g_assert_cmpint(image_bitmap_remove(w, "big"), ==, -EUCLEAN);
        g_assert_nonnull(strstr(image_error(w), expected));
        g_assert_cmpint(image_bitmap_clear(w, "big"), ==, -EUCLEAN);
        g_assert_nonnull(strstr(image_error(w), expected));
        image_close(w);
        after = file_bytes(img);
        g_assert_true(g_bytes_equal(before, after));
}

#define HOSTILE_TEST(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        HOSTILE_TEST("/image-hostile/header-fields", test_header_fields);
        HOSTILE_TEST("/image-hostile/refused-features", test_known_features);
        HOSTILE_TEST("/image-hostile/tables", test_tables);
        HOSTILE_TEST("/image-hostile/compressed-garbage", test_compressed_garbage);
        HOSTILE_TEST("/image-hostile/chains", test_chains);
        HOSTILE_TEST("/image-hostile/not-images", test_not_images);
        HOSTILE_TEST("/image-hostile/set-backing-no-room", test_set_backing_no_room);
        HOSTILE_TEST("/image-hostile/set-backing-name-in-padding", test_set_backing_name_in_padding);
        HOSTILE_TEST("/image-hostile/extensions-end-at-name", test_extensions_end_at_name);
        HOSTILE_TEST("/image-hostile/raw-toggling-block", test_raw_toggling_block);
        HOSTILE_TEST("/image-hostile/odd-virtual-size", test_odd_virtual_size);
        HOSTILE_TEST("/image-hostile/dirty-lazy-refcounts", test_dirty_lazy_refcounts);
        HOSTILE_TEST("/image-hostile/counted-beyond-end", test_counted_beyond_end);
        HOSTILE_TEST("/image-hostile/memory-large-l1", test_memory_large_l1);
        HOSTILE_TEST("/image-hostile/memory-l2-cache-bound", test_memory_l2_cache_bound);
        HOSTILE_TEST("/image-hostile/memory-chain", test_memory_chain);
        HOSTILE_TEST("/image-hostile/memory-bitmaps", test_memory_bitmaps);
        HOSTILE_TEST("/image-hostile/bitmaps", test_bitmaps);
        HOSTILE_TEST("/image-hostile/bitmaps-owned", test_bitmaps_owned);
        HOSTILE_TEST("/image-hostile/bitmaps-owned-good", test_bitmaps_owned_good);
        HOSTILE_TEST("/image-hostile/bitmaps-owned-too-many", test_bitmaps_owned_too_many);
        return g_test_run();
}
