/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The four job types on real images, over D-Bus, against the daemon built for tests
 * (blockjobd-faulty: the real daemon plus the fault rules of tests/fault/).
 *
 * Every image is made by qemu-img and qemu-io, with random data, holes, zero clusters and
 * compressed clusters, and every result is judged by them: `qemu-img compare` (the copy, or the
 * chain after commit and stream, reads exactly as the source did), `qemu-img check`, and
 * `qemu-img info --backing-chain`. Sources of backup and mirror are checksummed before and after.
 * StatusChanged sequences are compared in full. Faults are injected into chosen images at chosen
 * offsets, for every error action; the daemon is killed with SIGKILL in the middle of every job
 * type; a mirror keeps converging while another process writes its source. */

#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>

#include "bus-fixture.h"
#include "qemu-oracle.h"

#define MiB (1024 * 1024)
#define IMAGE_SIZE (8 * MiB)

#define ERR_IO "org.blockjobd.Jobs1.Error.IoError"

/* ---- images ----------------------------------------------------------------------------------- */

typedef enum Shape {
        SHAPE_RAW,                      /* src.raw: random data, a hole, zeroes */
        SHAPE_QCOW2,                    /* src.qcow2: data, zero clusters, unallocated ranges */
        SHAPE_COMPRESSED,               /* src.qcow2: compressed clusters and a hole */
        SHAPE_CHAIN3,                   /* base.qcow2 ← mid.qcow2 ← top.qcow2 */
        SHAPE_RAW_BASE,                 /* base.raw ← top.qcow2 */
        SHAPE_COMPRESSED_BASE,          /* base.qcow2 (compressed clusters) ← top.qcow2 */
        SHAPE_TREE,                     /* base/base.qcow2 ← sub/mid.qcow2 ("../base/base.qcow2")
                                         * ← top.qcow2 ("sub/mid.qcow2") */
} Shape;

static const char *const shape_top[] = {
        [SHAPE_RAW] = "src.raw",
        [SHAPE_QCOW2] = "src.qcow2",
        [SHAPE_COMPRESSED] = "src.qcow2",
        [SHAPE_CHAIN3] = "top.qcow2",
        [SHAPE_RAW_BASE] = "top.qcow2",
        [SHAPE_COMPRESSED_BASE] = "top.qcow2",
        [SHAPE_TREE] = "top.qcow2",
};

static const char *const shape_files[][4] = {
        [SHAPE_RAW] = { "src.raw" },
        [SHAPE_QCOW2] = { "src.qcow2" },
        [SHAPE_COMPRESSED] = { "src.qcow2" },
        [SHAPE_CHAIN3] = { "top.qcow2", "mid.qcow2", "base.qcow2" },
        [SHAPE_RAW_BASE] = { "top.qcow2", "base.raw" },
        [SHAPE_COMPRESSED_BASE] = { "top.qcow2", "base.qcow2" },
        [SHAPE_TREE] = { "top.qcow2", "sub/mid.qcow2", "base/base.qcow2" },
};

/* Runs a shell command line in the test's directory; it must succeed. */
static void sh(BusFixture *f, const char *format, ...) G_GNUC_PRINTF(2, 3);
static void sh(BusFixture *f, const char *format, ...) {
        g_autofree char *cmd = NULL, *quoted_dir = g_shell_quote(f->dir), *quoted = NULL;
        va_list ap;

        va_start(ap, format);
        cmd = g_strdup_vprintf(format, ap);
        va_end(ap);
        quoted = g_shell_quote(cmd);
        g_free(oracle_run("/bin/sh -ec 'cd %s && '%s", quoted_dir, quoted));
}

/* Random bytes that compress (16 values per byte), so that qemu-img keeps clusters compressed. */
static void make_compressible(const char *path, gsize size) {
        g_autofree guint8 *data = g_malloc(size);
        g_autoptr(GRand) rand = g_rand_new_with_seed(7);

        for (gsize i = 0; i < size; i++)
                data[i] = (guint8) (g_rand_int(rand) & 0x0f) * 17;
        g_assert_true(g_file_set_contents(path, (const char *) data, (gssize) size, NULL));
}

/* Random bytes, different for every name, so that no layer repeats another. */
static void make_random(BusFixture *f, const char *name, gsize size) {
        g_autofree char *p = bus_fixture_path(f, name);
        g_autofree guint32 *data = g_malloc(size);
        g_autoptr(GRand) rand = g_rand_new_with_seed(g_str_hash(name));

        for (gsize i = 0; i < size / 4; i++)
                data[i] = g_rand_int(rand);
        g_assert_true(g_file_set_contents(p, (const char *) data, (gssize) size, NULL));
}

static void assert_has_compressed_clusters(BusFixture *f, const char *image) {
        g_autofree char *p = bus_fixture_path(f, image);
        g_autofree char *json = oracle_run("qemu-img check -U --output=json %s", p);
        const char *s = strstr(json, "\"compressed-clusters\": ");
        g_assert_nonnull(s);
        g_assert_cmpuint(g_ascii_strtoull(s + strlen("\"compressed-clusters\": "), NULL, 10), >, 0);
}

static void build_shape(BusFixture *f, Shape shape) {
        g_autofree char *semi = bus_fixture_path(f, "semi.bin");

        make_random(f, "rnd1.bin", IMAGE_SIZE);
        make_random(f, "rnd2.bin", 2 * MiB);
        make_random(f, "rnd3.bin", 1 * MiB);

        switch (shape) {
        case SHAPE_RAW:
                sh(f, "cp rnd1.bin src.raw && fallocate --punch-hole --offset 1048576 --length 1048576 src.raw && "
                      "qemu-io -f raw -c 'write -z 5M 512k' src.raw >/dev/null");
                break;
        case SHAPE_QCOW2:
                sh(f, "qemu-img create -q -f qcow2 src.qcow2 8M && "
                      "qemu-io -f qcow2 -c 'write -s rnd1.bin 0 3M' -c 'write -z 3M 1M' -c 'write -s rnd2.bin 5M 2M' "
                      "-c 'write -P 0 7M 64k' src.qcow2 >/dev/null");
                break;
        case SHAPE_COMPRESSED:
                make_compressible(semi, IMAGE_SIZE);
                sh(f, "fallocate --punch-hole --offset 2097152 --length 1048576 semi.bin && "
                      "qemu-img convert -c -O qcow2 semi.bin src.qcow2");
                assert_has_compressed_clusters(f, "src.qcow2");
                break;
        case SHAPE_CHAIN3:
                sh(f, "qemu-img create -q -f qcow2 base.qcow2 8M && "
                      "qemu-io -f qcow2 -c 'write -s rnd1.bin 0 6M' -c 'write -c -P 0x42 6M 1M' base.qcow2 >/dev/null && "
                      "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -s rnd2.bin 1M 1M' -c 'write -z 3M 256k' -c 'write -s rnd3.bin 7M 1M' "
                      "mid.qcow2 >/dev/null && "
                      "qemu-img create -q -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F qcow2 top.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -s rnd3.bin 2M 64k' -c 'write -P 0xd1 4M 1M' -c 'write -z 1M 4k' "
                      "top.qcow2 >/dev/null");
                assert_has_compressed_clusters(f, "base.qcow2");
                break;
        case SHAPE_RAW_BASE:
                sh(f, "cp rnd1.bin base.raw && fallocate --punch-hole --offset 4194304 --length 2097152 base.raw && "
                      "qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -s rnd2.bin 1M 2M' -c 'write -z 6M 64k' top.qcow2 >/dev/null");
                break;
        case SHAPE_COMPRESSED_BASE:
                make_compressible(semi, IMAGE_SIZE);
                sh(f, "qemu-img convert -c -O qcow2 semi.bin base.qcow2 && "
                      "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -s rnd2.bin 3M 1M' -c 'write -z 5M 128k' top.qcow2 >/dev/null");
                assert_has_compressed_clusters(f, "base.qcow2");
                break;
        case SHAPE_TREE:
                sh(f, "mkdir base sub && qemu-img create -q -f qcow2 base/base.qcow2 8M && "
                      "qemu-io -f qcow2 -c 'write -s rnd1.bin 0 6M' base/base.qcow2 >/dev/null && "
                      "qemu-img create -q -f qcow2 -b ../base/base.qcow2 -F qcow2 sub/mid.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -s rnd2.bin 1M 1M' -c 'write -z 3M 256k' sub/mid.qcow2 >/dev/null && "
                      "qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 top.qcow2 && "
                      "qemu-io -f qcow2 -c 'write -s rnd3.bin 2M 64k' -c 'write -P 0xd1 4M 1M' top.qcow2 >/dev/null");
                break;
        }
}

/* Checksums of every file of the shape, to see that a source was never written. */
static char *shape_checksum(BusFixture *f, Shape shape) {
        g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);

        for (unsigned i = 0; i < G_N_ELEMENTS(shape_files[shape]) && shape_files[shape][i]; i++) {
                g_autofree char *p = bus_fixture_path(f, shape_files[shape][i]), *data = NULL;
                gsize len;
                g_assert_true(g_file_get_contents(p, &data, &len, NULL));
                g_checksum_update(sum, (const guchar *) data, len);
        }
        return g_strdup(g_checksum_get_string(sum));
}

/* What the top reads now, flat, to compare with later. */
static void snapshot(BusFixture *f, Shape shape) {
        sh(f, "qemu-img convert -U -O raw %s before.raw", shape_top[shape]);
}

static void assert_reads_as_before(BusFixture *f, const char *image) {
        g_autofree char *out = NULL, *err = NULL, *p = bus_fixture_path(f, image), *flat = bus_fixture_path(f, "before.raw");
        if (oracle_try(&out, &err, "qemu-img compare -U %s %s", p, flat) != 0)
                g_error("%s does not read as before: %s%s", image, out, err);
}

static void assert_identical(BusFixture *f, const char *a, const char *b) {
        g_autofree char *out = NULL, *err = NULL, *pa = bus_fixture_path(f, a), *pb = bus_fixture_path(f, b);
        if (oracle_try(&out, &err, "qemu-img compare -U %s %s", pa, pb) != 0)
                g_error("%s and %s differ: %s%s", a, b, out, err);
}

/* qemu-img check: clean, or (after a crash) leaked clusters only, which waste space but lose
 * nothing. */
static void assert_check(BusFixture *f, const char *image, bool leaks_allowed) {
        g_autofree char *out = NULL, *err = NULL, *p = bus_fixture_path(f, image);
        int status = oracle_try(&out, &err, "qemu-img check -U %s", p);
        if (status != 0 && !(leaks_allowed && status == 3))
                g_error("qemu-img check %s: status %d: %s%s", image, status, out, err);
}

static void assert_shape_checks(BusFixture *f, Shape shape, bool leaks_allowed) {
        for (unsigned i = 0; i < G_N_ELEMENTS(shape_files[shape]) && shape_files[shape][i]; i++)
                if (g_str_has_suffix(shape_files[shape][i], ".qcow2"))
                        assert_check(f, shape_files[shape][i], leaks_allowed);
}

static char *info(BusFixture *f, const char *image) {
        g_autofree char *p = bus_fixture_path(f, image);
        return oracle_run("qemu-img info -U --backing-chain %s", p);
}

/* The backing file recorded in the header, as it is spelt ("" for none); as a path (a relative
 * one resolved against the test's directory). */
static char *backing_name_of(BusFixture *f, const char *image) {
        g_autofree char *p = bus_fixture_path(f, image);
        g_autofree char *json = oracle_run("qemu-img info -U --output=json %s", p);
        const char *s = strstr(json, "\"backing-filename\": \"");
        if (!s)
                return g_strdup("");
        s += strlen("\"backing-filename\": \"");
        return g_strndup(s, strchr(s, '"') - s);
}

static char *backing_of(BusFixture *f, const char *image) {
        g_autofree char *name = backing_name_of(f, image);
        return name[0] == '/' || !*name ? g_steal_pointer(&name) : bus_fixture_path(f, name);
}

static char *format_of(BusFixture *f, const char *image) {
        g_autofree char *p = bus_fixture_path(f, image);
        g_autofree char *json = oracle_run("qemu-img info -U --output=json %s", p);
        const char *s = strstr(json, "\"format\": \"");
        g_assert_nonnull(s);
        s += strlen("\"format\": \"");
        return g_strndup(s, strchr(s, '"') - s);
}

static bool exists(BusFixture *f, const char *name) {
        g_autofree char *p = bus_fixture_path(f, name);
        return g_file_test(p, G_FILE_TEST_EXISTS);
}

/* Nothing but the given names (and what build_shape made) in the directory: no temporary files. */
static void assert_no_strays(BusFixture *f) {
        g_autoptr(GDir) d = g_dir_open(f->dir, 0, NULL);
        const char *name;

        while ((name = g_dir_read_name(d)))
                if (name[0] == '.')
                        g_error("stray file %s left in the directory", name);
}

/* ---- faults ----------------------------------------------------------------------------------- */

/* ---- starting jobs ---------------------------------------------------------------------------- */

/* COMMIT commits the middle of a chain (never ready), ACTIVE_COMMIT the image itself. */
typedef enum Kind { BACKUP, MIRROR, COMMIT, STREAM, ACTIVE_COMMIT } Kind;

/* Starts a job; a Backup or Mirror of a qcow2 source names its format, as blockjobd follows the
 * backing files only of an image whose format its caller gave. */
static char *start(BusFixture *f, const char *method, const char *source, const char *target, GVariant *options) {
        if (!options)
                options = g_variant_new("a{sv}", NULL);
        if ((g_str_equal(method, "Backup") || g_str_equal(method, "Mirror")) && g_str_has_suffix(source, ".qcow2"))
                options = bus_opts_add(options, "source-format", g_variant_new_string("qcow2"));
        return bus_start(f, method, source, target, options);
}

static const char *const kind_method[] = { "Backup", "Mirror", "Commit", "Stream", "Commit" };
static const char *const kind_id[] = { "backup0", "mirror0", "commit0", "stream0", "commit0" };

static bool kind_gets_ready(Kind kind) {
        return kind == MIRROR || kind == ACTIVE_COMMIT;
}

/* A StatusChanged sequence as the fixture records it: "created running" → "<id>:created <id>:running ". */
static char *sequence(const char *id, const char *statuses) {
        g_auto(GStrv) words = g_strsplit(statuses, " ", -1);
        GString *s = g_string_new(NULL);

        for (char **w = words; *w; w++)
                if (**w)
                        g_string_append_printf(s, "%s:%s ", id, *w);
        return g_string_free(s, FALSE);
}

/* The sequence of a job that ran to its end, with or without ready. */
static char *success_sequence(const char *id, bool ready) {
        return sequence(id, ready ? "created running ready waiting pending concluded null"
                                  : "created running waiting pending concluded null");
}

/* The statuses one job went through, from the interleaved record. */
static void assert_statuses_of(BusFixture *f, const char *id, const char *expected) {
        g_auto(GStrv) words = g_strsplit(f->statuses->str, " ", -1);
        g_autofree char *prefix = g_strdup_printf("%s:", id), *want = sequence(id, expected);
        g_autoptr(GString) seen = g_string_new(NULL);

        for (char **w = words; *w; w++)
                if (g_str_has_prefix(*w, prefix))
                        g_string_append_printf(seen, "%s ", *w);
        g_assert_cmpstr(seen->str, ==, want);
}

static void assert_statuses(BusFixture *f, const char *expected) {
        g_assert_cmpstr(f->statuses->str, ==, expected);
}

/* Lets a job run to its end (completing it in ready, if it gets there) and checks that it went
 * through exactly the statuses of a success. */
static void run_to_success(BusFixture *f, const char *path, const char *id, bool ready) {
        g_autofree char *expected = success_sequence(id, ready);

        if (ready) {
                bus_wait_for_status(f, id, "ready");
                bus_job_call(f, path, "Complete");
        }
        bus_wait_for_status(f, id, "null");
        assert_statuses(f, expected);
}

/* ---- backup and mirror: copies ---------------------------------------------------------------- */

typedef struct CopyCase {
        Kind kind;
        Shape shape;
        bool sync_top;
        const char *format;             /* NULL: the default */
        const char *target;             /* file name */
        const char *expect_format;
} CopyCase;

static GVariant *copy_options(const CopyCase *c) {
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        if (c->sync_top)
                g_variant_builder_add(&b, "{sv}", "sync", g_variant_new_string("top"));
        if (c->format)
                g_variant_builder_add(&b, "{sv}", "format", g_variant_new_string(c->format));
        return g_variant_builder_end(&b);
}

static void test_copy(BusFixture *f, gconstpointer data) {
        const CopyCase *c = data;
        g_autofree char *source = bus_fixture_path(f, shape_top[c->shape]), *target = bus_fixture_path(f, c->target);
        g_autofree char *sum = NULL, *sum_after = NULL, *path = NULL, *expected = NULL, *fmt = NULL;

        build_shape(f, c->shape);
        sum = shape_checksum(f, c->shape);

        path = start(f, kind_method[c->kind], source, target, copy_options(c));
        run_to_success(f, path, kind_id[c->kind], c->kind == MIRROR);

        /* The copy reads as the source, is what was asked for, and checks clean. */
        assert_identical(f, shape_top[c->shape], c->target);
        fmt = format_of(f, c->target);
        g_assert_cmpstr(fmt, ==, c->expect_format);
        if (g_str_equal(fmt, "qcow2"))
                assert_check(f, c->target, false);
        if (c->sync_top) {
                /* A copy of the top alone rests on the source's backing file. */
                g_autofree char *chain = info(f, c->target), *backing = backing_of(f, c->target);
                g_autofree char *mid = bus_fixture_path(f, "mid.qcow2");
                g_assert_cmpstr(backing, ==, mid);
                g_assert_nonnull(strstr(chain, "base.qcow2"));
        } else {
                g_autofree char *backing = backing_of(f, c->target);
                g_assert_cmpstr(backing, ==, "");
        }

        /* The source was only read. */
        sum_after = shape_checksum(f, c->shape);
        g_assert_cmpstr(sum_after, ==, sum);
        assert_no_strays(f);
}

/* ---- commit and stream: chains ---------------------------------------------------------------- */

typedef struct ChainCase {
        Kind kind;
        Shape shape;
        const char *top;                /* commit: a file name, NULL for the image itself */
        const char *base;               /* a file name, NULL for the default */
        const char *expect_backing;     /* of top.qcow2 afterwards, as recorded; "" for none */
        const char *still_reads;        /* a file that reads as before too (active commit: the base) */
} ChainCase;

static GVariant *chain_options(BusFixture *f, const ChainCase *c) {
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        if (c->top) {
                g_autofree char *p = bus_fixture_path(f, c->top);
                g_variant_builder_add(&b, "{sv}", "top", g_variant_new_string(p));
        }
        if (c->base) {
                g_autofree char *p = bus_fixture_path(f, c->base);
                g_variant_builder_add(&b, "{sv}", "base", g_variant_new_string(p));
        }
        return g_variant_builder_end(&b);
}

static void test_chain(BusFixture *f, gconstpointer data) {
        const ChainCase *c = data;
        g_autofree char *image = bus_fixture_path(f, shape_top[c->shape]);
        g_autofree char *path = NULL, *expected = NULL, *backing = NULL;
        bool active = c->kind == COMMIT && !c->top;

        build_shape(f, c->shape);
        snapshot(f, c->shape);

        path = start(f, kind_method[c->kind], image, NULL, chain_options(f, c));
        run_to_success(f, path, kind_id[c->kind], active);

        /* The chain reads exactly as before, every layer checks clean, and the chain is what it
         * should be now. */
        assert_reads_as_before(f, shape_top[c->shape]);
        if (c->still_reads)
                assert_reads_as_before(f, c->still_reads);
        assert_shape_checks(f, c->shape, false);
        /* The chain names its layers relative to one another (qemu-img create -b base.qcow2):
         * the new backing name is the one the chain recorded, still relative. */
        backing = backing_name_of(f, shape_top[c->shape]);
        g_assert_cmpstr(backing, ==, c->expect_backing);
}

/* ---- pause, resume, cancel mid-run ------------------------------------------------------------ */

typedef struct RunCase {
        Kind kind;
        Shape shape;
} RunCase;

/* Starts a job of this kind on the shape: backup and mirror to "target.img", commit of the
 * middle of a chain or of the whole (active), stream of the whole chain. Takes the builder's
 * options. */
static char *start_case(BusFixture *f, Kind kind, Shape shape, GVariantBuilder *options) {
        g_autofree char *source = bus_fixture_path(f, shape_top[shape]), *target = bus_fixture_path(f, "target.img");
        g_autofree char *mid = bus_fixture_path(f, "mid.qcow2");

        if (kind == COMMIT)
                g_variant_builder_add(options, "{sv}", "top", g_variant_new_string(mid));
        return start(f, kind_method[kind], source, kind == BACKUP || kind == MIRROR ? target : NULL,
                         g_variant_builder_end(options));
}

/* Waits (bounded) until the job has made at least this much progress. */
static void wait_for_progress(BusFixture *f, const char *path, guint64 at_least) {
        for (unsigned i = 0; bus_get_uint64(f, path, "CurrentProgress") < at_least; i++) {
                if (i > 3000)
                        g_error("job %s made no progress", path);
                bus_iterate_for(f, 10000);
        }
}

static GVariantBuilder *options_new(void) {
        return g_variant_builder_new(G_VARIANT_TYPE("a{sv}"));
}

static void add_option(GVariantBuilder *b, const char *key, GVariant *value) {
        g_variant_builder_add(b, "{sv}", key, value);
}

/* Everything a job that did not finish must leave: the source untouched and no target (backup,
 * mirror), or the chain reading as it did, its images checking clean but for leaks (commit,
 * stream). */
static void assert_left_intact(BusFixture *f, Kind kind, Shape shape, const char *sum, bool leaks_allowed) {
        g_autofree char *sum_after = shape_checksum(f, shape);

        if (kind == BACKUP || kind == MIRROR) {
                g_assert_false(exists(f, "target.img"));
                g_assert_cmpstr(sum_after, ==, sum);
        } else {
                assert_reads_as_before(f, shape_top[shape]);
                assert_shape_checks(f, shape, leaks_allowed);
        }
        assert_no_strays(f);
}

static void test_pause_resume_cancel(BusFixture *f, gconstpointer data) {
        const RunCase *c = data;
        g_autofree char *path = NULL, *sum = NULL, *expected = NULL, *error = NULL;
        g_autoptr(GVariantBuilder) options = options_new();
        const char *id = kind_id[c->kind];
        guint64 progress;
        gsize mark;

        build_shape(f, c->shape);
        snapshot(f, c->shape);
        sum = shape_checksum(f, c->shape);

        /* 1 MiB/s: the job takes seconds, time enough to act in the middle. */
        add_option(options, "speed", g_variant_new_uint64(1 * MiB));
        add_option(options, "auto-dismiss", g_variant_new_boolean(FALSE));
        path = start_case(f, c->kind, c->shape, options);
        bus_wait_for_status(f, id, "running");
        wait_for_progress(f, path, 1);

        bus_job_call(f, path, "Pause");
        bus_wait_for_status(f, id, "paused");
        progress = bus_get_uint64(f, path, "CurrentProgress");
        bus_iterate_for(f, 300000);
        g_assert_cmpuint(bus_get_uint64(f, path, "CurrentProgress"), ==, progress);

        mark = f->statuses->len;
        bus_job_call(f, path, "Resume");
        bus_wait_for_status_since(f, mark, id, "running");
        bus_job_call(f, path, "Cancel");
        bus_wait_for_status(f, id, "concluded");
        error = bus_get_string(f, path, "Error");
        g_assert_cmpstr(error, ==, "Operation canceled");
        bus_job_call(f, path, "Dismiss");
        bus_wait_for_status(f, id, "null");

        expected = sequence(id, "created running paused running aborting concluded null");
        assert_statuses(f, expected);
        assert_left_intact(f, c->kind, c->shape, sum, false);
}

/* ---- error actions ---------------------------------------------------------------------------- */

typedef struct FaultCase {
        Kind kind;
        Shape shape;
        const char *action;             /* on-source-error and on-target-error */
        const char *layer;              /* the image the fault is in ("target.img": the target) */
        const char *io;                 /* read, write */
        guint64 offset;
        const char *error;              /* EIO, ENOSPC */
        int count;                      /* 0: for ever */
        const char *expect_action;      /* in IoError: report, ignore, stop */
        const char *expect_io_status;   /* after a stop */
} FaultCase;

static void test_fault(BusFixture *f, gconstpointer data) {
        const FaultCase *c = data;
        g_autofree char *layer = bus_fixture_path(f, c->layer), *path = NULL, *sum = NULL, *expected = NULL;
        g_autofree char *io_errors = g_strdup_printf("%s:%s ", c->io, c->expect_action), *error = NULL;
        g_autoptr(GVariantBuilder) options = options_new();
        const char *id = kind_id[c->kind];
        bool ready = c->kind == MIRROR;

        build_shape(f, c->shape);
        snapshot(f, c->shape);
        sum = shape_checksum(f, c->shape);
        if (c->count > 0)
                bus_fixture_set_faults(f, "%s %s %" G_GUINT64_FORMAT " %s %d\n", layer, c->io, c->offset, c->error, c->count);
        else
                bus_fixture_set_faults(f, "%s %s %" G_GUINT64_FORMAT " %s\n", layer, c->io, c->offset, c->error);

        add_option(options, "on-source-error", g_variant_new_string(c->action));
        add_option(options, "on-target-error", g_variant_new_string(c->action));
        add_option(options, "auto-dismiss", g_variant_new_boolean(FALSE));
        path = start_case(f, c->kind, c->shape, options);

        if (g_str_equal(c->expect_action, "report")) {
                g_autofree char *prefix = g_strdup_printf("Could not %s '%s' at offset ", c->io, layer);
                bus_wait_for_status(f, id, "concluded");
                error = bus_get_string(f, path, "Error");
                g_assert_true(g_str_has_prefix(error, prefix));
                g_assert_true(g_str_has_suffix(error, g_str_equal(c->error, "ENOSPC") ? ": No space left on device"
                                                                                     : ": Input/output error"));
                g_assert_cmpstr(f->io_errors->str, ==, io_errors);
                /* The signal, for everyone, says what went wrong; IoErrorMessage says where. */
                g_assert_nonnull(strstr(f->io_messages->str, g_str_equal(c->error, "ENOSPC") ? "No space left on device"
                                                                                            : "Input/output error"));
                g_autofree char *io_message = bus_get_string(f, path, "IoErrorMessage");
                g_assert_cmpstr(io_message, ==, error);
                bus_job_call(f, path, "Dismiss");
                bus_wait_for_status(f, id, "null");
                expected = sequence(id, "created running aborting concluded null");
                assert_statuses(f, expected);
                assert_left_intact(f, c->kind, c->shape, sum, false);
                return;
        }

        if (g_str_equal(c->expect_action, "stop")) {
                g_autofree char *status = NULL, *status_after = NULL;
                bus_wait_for_status(f, id, "paused");
                status = bus_get_string(f, path, "IoStatus");
                g_assert_cmpstr(status, ==, c->expect_io_status);
                g_assert_cmpstr(f->io_errors->str, ==, io_errors);
                /* Resume retries what failed, which now succeeds. */
                gsize mark = f->statuses->len;
                bus_job_call(f, path, "Resume");
                bus_wait_for_status_since(f, mark, id, "running");
                status_after = bus_get_string(f, path, "IoStatus");
                g_assert_cmpstr(status_after, ==, "ok");
        }

        if (ready) {
                bus_wait_for_status(f, id, "ready");
                bus_job_call(f, path, "Complete");
        }
        bus_wait_for_status(f, id, "concluded");
        error = bus_get_string(f, path, "Error");
        g_assert_cmpstr(error, ==, "");
        g_assert_cmpstr(f->io_errors->str, ==, io_errors);
        bus_job_call(f, path, "Dismiss");
        bus_wait_for_status(f, id, "null");

        if (g_str_equal(c->expect_action, "stop"))
                expected = sequence(id, ready ? "created running paused running ready waiting pending concluded null"
                                              : "created running paused running waiting pending concluded null");
        else
                expected = success_sequence(id, ready);
        assert_statuses(f, expected);

        /* The failed range was retried and made it: the result is whole. */
        if (c->kind == BACKUP || c->kind == MIRROR) {
                g_autofree char *sum_after = shape_checksum(f, c->shape);
                assert_identical(f, shape_top[c->shape], "target.img");
                g_assert_cmpstr(sum_after, ==, sum);
        } else {
                assert_reads_as_before(f, shape_top[c->shape]);
                assert_shape_checks(f, c->shape, false);
        }
}

/* ---- a grouped transaction with one failure ----------------------------------------------------- */

static void test_transaction_fault(BusFixture *f, gconstpointer data) {
        g_autofree char *s1 = bus_fixture_path(f, "src.raw"), *s2 = bus_fixture_path(f, "src.qcow2");
        g_autofree char *t1 = bus_fixture_path(f, "t1.img"), *t2 = bus_fixture_path(f, "t2.qcow2");
        g_autofree char *e1 = NULL, *e2 = NULL, *prefix = g_strdup_printf("Could not read '%s' at offset ", s2);
        g_auto(GStrv) paths = NULL;
        GVariantBuilder actions;

        build_shape(f, SHAPE_RAW);
        build_shape(f, SHAPE_QCOW2);
        /* The qcow2 source cannot be read at 5 MiB: that backup fails, and takes the other along. */
        bus_fixture_set_faults(f, "%s read %d EIO\n", s2, 5 * MiB + 4096);

        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", s1, t1,
                              bus_opts("job-id", g_variant_new_string("one"), "auto-dismiss", g_variant_new_boolean(FALSE),
                                       NULL));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", s2, t2,
                              bus_opts("job-id", g_variant_new_string("two"), "auto-dismiss", g_variant_new_boolean(FALSE),
                                       "speed", g_variant_new_uint64(4 * MiB), NULL));
        paths = bus_transaction_grouped(f, g_variant_builder_end(&actions));

        bus_wait_for_status(f, "one", "concluded");
        bus_wait_for_status(f, "two", "concluded");
        e1 = bus_get_string(f, paths[0], "Error");
        e2 = bus_get_string(f, paths[1], "Error");
        g_assert_cmpstr(e1, ==, "Operation canceled");
        g_assert_true(g_str_has_prefix(e2, prefix));
        g_assert_cmpstr(f->io_errors->str, ==, "read:report ");
        assert_statuses_of(f, "one", "created running waiting aborting concluded");
        assert_statuses_of(f, "two", "created running aborting concluded");

        /* All or nothing: neither target appeared. */
        g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(t2, G_FILE_TEST_EXISTS));
        bus_job_call(f, paths[0], "Dismiss");
        bus_job_call(f, paths[1], "Dismiss");
        assert_no_strays(f);
}

/* ---- Finalize() answers once the transaction has ended ------------------------------------------ */

/* A backup of 'source' that waits in pending (auto-finalize false); its object path. */
static char *backup_to_pending(BusFixture *f, const char *source, const char *target, const char *id,
                               bool auto_dismiss) {
        char *path = bus_backup(f, source, target,
                                bus_opts("job-id", g_variant_new_string(id), "auto-finalize", g_variant_new_boolean(FALSE),
                                         "auto-dismiss", g_variant_new_boolean(auto_dismiss), NULL));
        bus_wait_for_status(f, id, "pending");
        return path;
}

/* QEMU's job-finalize runs prepare, commit or abort, and clean for the whole transaction before
 * it returns. blockjobd runs them on its workers, and answers Finalize() once they are done: a
 * Status read right after the answer is never "pending" (a `finalize` then a `wait` used to be
 * told to finalize), whether the transaction was published or rolled back. */
static void test_finalize_answer(BusFixture *f, gconstpointer data) {
        g_autofree char *s1 = bus_fixture_path(f, "s1.raw"), *s2 = bus_fixture_path(f, "s2.raw");
        g_autofree char *t1 = bus_fixture_path(f, "t1.img"), *t2 = bus_fixture_path(f, "t2.img");
        g_autofree char *t3 = bus_fixture_path(f, "t3.img"), *t4 = bus_fixture_path(f, "t4.img");
        g_auto(GStrv) paths = NULL;
        GVariantBuilder actions;

        bus_make_file(s1, IMAGE_SIZE);
        bus_make_file(s2, IMAGE_SIZE);

        /* A grouped transaction, one member of which waits for Finalize(): finalizing either ends
         * both, before the answer. */
        g_variant_builder_init(&actions, G_VARIANT_TYPE("a(sssa{sv})"));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", s1, t1,
                              bus_opts("job-id", g_variant_new_string("one"), "auto-finalize",
                                       g_variant_new_boolean(FALSE), "auto-dismiss", g_variant_new_boolean(FALSE),
                                       NULL));
        g_variant_builder_add(&actions, "(sss@a{sv})", "backup", s2, t2,
                              bus_opts("job-id", g_variant_new_string("two"), "auto-dismiss", g_variant_new_boolean(FALSE),
                                       NULL));
        paths = bus_transaction_grouped(f, g_variant_builder_end(&actions));
        bus_wait_for_status(f, "one", "pending");
        bus_wait_for_status(f, "two", "pending");
        bus_job_call(f, paths[1], "Finalize");
        for (unsigned i = 0; i < 2; i++) {
                g_autofree char *status = bus_get_string(f, paths[i], "Status");
                g_autofree char *error = bus_get_string(f, paths[i], "Error");
                g_assert_cmpstr(status, ==, "concluded");
                g_assert_cmpstr(error, ==, "");
        }
        bus_assert_same_file(s1, t1);
        bus_assert_same_file(s2, t2);
        bus_job_call(f, paths[0], "Dismiss");
        bus_job_call(f, paths[1], "Dismiss");

        /* With auto-dismiss, the job is gone by the answer. */
        g_autofree char *p3 = backup_to_pending(f, s1, t3, "gone", true);
        bus_job_call(f, p3, "Finalize");
        g_free(bus_call_error(f, p3, "org.freedesktop.DBus.Properties", "Get",
                              g_variant_new("(ss)", JOB_IFACE, "Status"), "org.freedesktop.DBus.Error.UnknownObject"));
        bus_assert_same_file(s1, t3);

        /* Rolled back: the target's name was taken meanwhile, prepare fails, and the job has
         * concluded with that error by the answer. */
        g_autofree char *p4 = backup_to_pending(f, s1, t4, "taken", false);
        g_assert_true(g_file_set_contents(t4, "mine", -1, NULL));
        bus_job_call(f, p4, "Finalize");
        g_autofree char *status = bus_get_string(f, p4, "Status");
        g_autofree char *error = bus_get_string(f, p4, "Error");
        g_assert_cmpstr(status, ==, "concluded");
        g_autofree char *expected = g_strdup_printf("Target '%s' already exists", t4);
        g_assert_cmpstr(error, ==, expected);
        bus_job_call(f, p4, "Dismiss");

        bus_wait_for_status(f, "taken", "null");
        assert_statuses_of(f, "one", "created running waiting pending concluded null");
        assert_statuses_of(f, "two", "created running waiting pending concluded null");
        assert_statuses_of(f, "gone", "created running waiting pending concluded null");
        assert_statuses_of(f, "taken", "created running waiting pending aborting concluded null");
        assert_no_strays(f);
}

/* ---- kill -9 in the middle ---------------------------------------------------------------------- */

/* Three rounds, each killed further into the job (one that gets ready: the last in ready), each followed by
 * the checks and a fresh daemon. */
static void test_kill(BusFixture *f, gconstpointer data) {
        const RunCase *c = data;
        g_autofree char *sum = NULL;
        const char *id = kind_id[c->kind];

        build_shape(f, c->shape);
        snapshot(f, c->shape);
        sum = shape_checksum(f, c->shape);

        for (unsigned round = 0; round < 3; round++) {
                g_autoptr(GVariantBuilder) options = options_new();
                g_autofree char *path = NULL;

                add_option(options, "speed", g_variant_new_uint64(2 * MiB));
                path = start_case(f, c->kind, c->shape, options);
                if (kind_gets_ready(c->kind) && round == 2)
                        bus_wait_for_status(f, id, "ready");
                else
                        wait_for_progress(f, path, (2 * round + 1) * (IMAGE_SIZE / 8));
                bus_fixture_kill_daemon(f);
                /* The job must really have been cut short. */
                g_assert_null(strstr(f->statuses->str, ":pending "));

                assert_left_intact(f, c->kind, c->shape, sum, true);

                bus_fixture_start_daemon(f, "--idle-timeout=0");
                g_string_truncate(f->statuses, 0);
        }
}

/* ---- a mirror while another process writes its source ----------------------------------------- */

static void test_mirror_writer(BusFixture *f, gconstpointer data) {
        const RunCase *c = data;
        g_autofree char *source = bus_fixture_path(f, shape_top[c->shape]), *target = bus_fixture_path(f, "target.img");
        g_autofree char *path = NULL, *expected = NULL, *script = NULL, *stop = bus_fixture_path(f, "stop");
        g_autoptr(GSubprocess) writer = NULL;
        g_autoptr(GError) error = NULL;
        guint64 total;

        build_shape(f, c->shape);
        path = start(f, "Mirror", source, target,
                         bus_opts("format", g_variant_new_string(c->shape == SHAPE_RAW ? "raw" : "qcow2"), NULL));
        bus_wait_for_status(f, "mirror0", "ready");
        total = bus_get_uint64(f, path, "TotalProgress");

        /* Random 64 KiB blocks of random data, until told to stop. */
        if (c->shape == SHAPE_RAW)
                script = g_strdup_printf("cd %s && while [ ! -e stop ]; do "
                                         "dd if=/dev/urandom of=src.raw bs=64k count=1 seek=$((RANDOM %% 128)) "
                                         "conv=notrunc status=none; sleep 0.005; done", f->dir);
        else
                script = g_strdup_printf("cd %s && while [ ! -e stop ]; do "
                                         "qemu-io -f qcow2 -c \"write -P $((RANDOM %% 256)) $(((RANDOM %% 128) * 65536)) 64k\" "
                                         "src.qcow2 >/dev/null; done", f->dir);
        writer = g_subprocess_new(G_SUBPROCESS_FLAGS_NONE, &error, "/bin/bash", "-c", script, NULL);
        g_assert_no_error(error);

        /* The mirror keeps copying what changes: its total grows by each pass's work. */
        for (unsigned i = 0; bus_get_uint64(f, path, "TotalProgress") < total + 8 * 65536; i++) {
                if (i > 3000)
                        g_error("the mirror did not follow the writes");
                bus_iterate_for(f, 10000);
        }
        g_assert_cmpstr(f->io_errors->str, ==, "");

        g_assert_true(g_file_set_contents(stop, "", 0, NULL));
        g_assert_true(g_subprocess_wait_check(writer, NULL, &error));
        g_assert_no_error(error);
        g_unlink(stop);

        run_to_success(f, path, "mirror0", true);
        assert_identical(f, shape_top[c->shape], "target.img");
        if (c->shape != SHAPE_RAW)
                assert_check(f, "target.img", false);
}

/* ---- a block device as the target, written in place ------------------------------------------ */

#define ERR_IMAGE "org.blockjobd.Jobs1.Error.ImageError"
#define ERR_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"

/* Loop devices made by the running test, detached at teardown whatever happened. */
static GPtrArray *loop_devices;

/* A loop device over a file of old random data; NULL (and the test skipped) where loop devices
 * cannot be made (no privileges, no /dev/loop-control). */
static const char *loop_device(BusFixture *f, const char *file, gsize size) {
        g_autofree char *p = bus_fixture_path(f, file), *out = NULL, *err = NULL;

        make_random(f, file, size);
        if (oracle_try(&out, &err, "losetup --find --show %s", p) != 0) {
                g_test_skip("cannot make loop devices here");
                return NULL;
        }
        if (!loop_devices)
                loop_devices = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(loop_devices, g_strdup(g_strstrip(out)));
        return g_ptr_array_index(loop_devices, loop_devices->len - 1);
}

static void teardown(BusFixture *f, gconstpointer data) {
        bus_fixture_teardown(f, data);
        for (guint i = 0; loop_devices && i < loop_devices->len; i++) {
                g_autofree char *out = NULL, *err = NULL;
                (void) oracle_try(&out, &err, "losetup --detach %s", (char *) g_ptr_array_index(loop_devices, i));
        }
        g_clear_pointer(&loop_devices, g_ptr_array_unref);
}

static void test_device_target(BusFixture *f, gconstpointer data) {
        const RunCase *c = data;
        g_autofree char *source = bus_fixture_path(f, shape_top[c->shape]);
        g_autofree char *m = NULL, *path = NULL, *sum = NULL, *sum_after = NULL, *expected = NULL, *busy = NULL;
        g_autofree char *out = NULL, *err = NULL;
        const char *device, *small;

        build_shape(f, c->shape);
        sum = shape_checksum(f, c->shape);
        device = loop_device(f, "device.bin", IMAGE_SIZE);
        if (!device)
                return;
        small = loop_device(f, "small.bin", IMAGE_SIZE / 2);
        g_assert_nonnull(small);

        /* A device is overwritten only when asked to, and must be the source's size. */
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, kind_method[c->kind],
                           g_variant_new("(ss@a{sv})", source, device, g_variant_new("a{sv}", NULL)), ERR_IMAGE);
        g_assert_true(g_str_has_suffix(m, "already exists"));
        g_free(m);
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, kind_method[c->kind],
                           g_variant_new("(ss@a{sv})", source, small,
                                         bus_opts("overwrite", g_variant_new_boolean(TRUE), NULL)),
                           ERR_INVALID_ARGS);
        g_assert_cmpstr(m, ==, "Source and target image have different sizes");
        g_free(m);
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, kind_method[c->kind],
                           g_variant_new("(ss@a{sv})", source, device,
                                         bus_opts("overwrite", g_variant_new_boolean(TRUE), "format",
                                                  g_variant_new_string("qcow2"), NULL)),
                           ERR_INVALID_ARGS);
        g_assert_true(g_str_has_suffix(m, "can only be written as a raw image"));

        /* One job at a time writes a device. */
        path = start(f, kind_method[c->kind], source, device,
                         bus_opts("overwrite", g_variant_new_boolean(TRUE), "speed", g_variant_new_uint64(2 * MiB), NULL));
        g_free(m);
        m = bus_call_error(f, MANAGER_PATH, MANAGER_IFACE, "Backup",
                           g_variant_new("(ss@a{sv})", source, device,
                                         bus_opts("overwrite", g_variant_new_boolean(TRUE), NULL)),
                           "org.blockjobd.Jobs1.Error.ImageInUse");
        busy = g_strdup_printf("Image '%s' is in use by job '%s' (%s)", device, kind_id[c->kind],
                               kind_method[c->kind][0] == 'B' ? "backup" : "mirror");
        g_assert_cmpstr(m, ==, busy);

        g_variant_unref(bus_call(f, path, JOB_IFACE, "SetSpeed", g_variant_new("(t)", (guint64) 0), NULL));
        run_to_success(f, path, kind_id[c->kind], c->kind == MIRROR);

        /* The old random data is gone: the device reads exactly as the source, holes included. */
        if (oracle_try(&out, &err, "qemu-img compare -U -F raw %s %s", source, device) != 0)
                g_error("%s does not read as %s: %s%s", device, source, out, err);
        sum_after = shape_checksum(f, c->shape);
        g_assert_cmpstr(sum_after, ==, sum);
}

/* ---- the cases ---------------------------------------------------------------------------------- */

static const CopyCase copy_cases[] = {
        { BACKUP, SHAPE_RAW, false, NULL, "copy.raw", "raw" },
        { BACKUP, SHAPE_QCOW2, false, NULL, "copy.qcow2", "qcow2" },
        { BACKUP, SHAPE_QCOW2, false, "raw", "copy.raw", "raw" },
        { BACKUP, SHAPE_RAW, false, "qcow2", "copy.qcow2", "qcow2" },
        { BACKUP, SHAPE_COMPRESSED, false, NULL, "copy.qcow2", "qcow2" },
        { BACKUP, SHAPE_CHAIN3, false, NULL, "copy.qcow2", "qcow2" },
        { BACKUP, SHAPE_CHAIN3, false, "raw", "copy.raw", "raw" },
        { BACKUP, SHAPE_CHAIN3, true, NULL, "copy.qcow2", "qcow2" },
        { MIRROR, SHAPE_RAW, false, NULL, "copy.raw", "raw" },
        { MIRROR, SHAPE_QCOW2, false, NULL, "copy.qcow2", "qcow2" },
        { MIRROR, SHAPE_QCOW2, false, "raw", "copy.raw", "raw" },
        { MIRROR, SHAPE_RAW, false, "qcow2", "copy.qcow2", "qcow2" },
        { MIRROR, SHAPE_COMPRESSED, false, NULL, "copy.qcow2", "qcow2" },
        { MIRROR, SHAPE_CHAIN3, false, NULL, "copy.qcow2", "qcow2" },
        { MIRROR, SHAPE_CHAIN3, true, NULL, "copy.qcow2", "qcow2" },
};

static const ChainCase chain_cases[] = {
        /* Commit the middle into the base: top then rests on base. */
        { COMMIT, SHAPE_CHAIN3, "mid.qcow2", NULL, "base.qcow2", NULL },
        /* Active commits: everything into the bottom (raw, compressed, qcow2) or into mid. */
        { COMMIT, SHAPE_CHAIN3, NULL, NULL, "base.qcow2", "base.qcow2" },
        { COMMIT, SHAPE_CHAIN3, NULL, "mid.qcow2", "mid.qcow2", "mid.qcow2" },
        { COMMIT, SHAPE_RAW_BASE, NULL, NULL, "base.raw", "base.raw" },
        { COMMIT, SHAPE_COMPRESSED_BASE, NULL, NULL, "base.qcow2", "base.qcow2" },
        /* Streams: the whole chain, or down to a base. */
        { STREAM, SHAPE_CHAIN3, NULL, NULL, "", NULL },
        { STREAM, SHAPE_CHAIN3, NULL, "base.qcow2", "base.qcow2", NULL },
        { STREAM, SHAPE_RAW_BASE, NULL, NULL, "", NULL },
        { STREAM, SHAPE_COMPRESSED_BASE, NULL, NULL, "", NULL },
        /* Layers in directories of their own: the name reaches base from top's directory. */
        { COMMIT, SHAPE_TREE, "sub/mid.qcow2", NULL, "base/base.qcow2", NULL },
        { COMMIT, SHAPE_TREE, NULL, NULL, "base/base.qcow2", "base/base.qcow2" },
        { COMMIT, SHAPE_TREE, NULL, "sub/mid.qcow2", "sub/mid.qcow2", "sub/mid.qcow2" },
        { STREAM, SHAPE_TREE, NULL, "base/base.qcow2", "base/base.qcow2", NULL },
};

static const RunCase run_cases[] = {
        { BACKUP, SHAPE_QCOW2 },
        { MIRROR, SHAPE_RAW },
        { COMMIT, SHAPE_CHAIN3 },
        { STREAM, SHAPE_CHAIN3 },
};

static const RunCase kill_cases[] = {
        { BACKUP, SHAPE_CHAIN3 },
        { MIRROR, SHAPE_QCOW2 },
        { COMMIT, SHAPE_CHAIN3 },
        { STREAM, SHAPE_CHAIN3 },
        { ACTIVE_COMMIT, SHAPE_CHAIN3 },
};

static const RunCase device_cases[] = {
        { BACKUP, SHAPE_QCOW2 },
        { MIRROR, SHAPE_RAW },
};

static const RunCase writer_cases[] = {
        { MIRROR, SHAPE_RAW },
        { MIRROR, SHAPE_QCOW2 },
};

/* For each type: report a read and a write error; ignore, stop on, and enospc-stop on a
 * passing fault; enospc on EIO reports. Backup and mirror fault the source where it has data,
 * and the target there; commit (mid into base) reads mid at 1 MiB and writes base; stream reads
 * mid there and writes top. */
#define FAULTS(kind, shape, src, dst, at)                                                               \
        { kind, shape, "report", src, "read", at, "EIO", 0, "report", NULL },                          \
        { kind, shape, "report", dst, "write", at, "EIO", 0, "report", NULL },                         \
        { kind, shape, "ignore", src, "read", at, "EIO", 1, "ignore", NULL },                          \
        { kind, shape, "stop", src, "read", at, "EIO", 1, "stop", "failed" },                          \
        { kind, shape, "stop", dst, "write", at, "EIO", 1, "stop", "failed" },                         \
        { kind, shape, "enospc", dst, "write", at, "ENOSPC", 1, "stop", "nospace" },                   \
        { kind, shape, "enospc", src, "read", at, "EIO", 0, "report", NULL }

static const FaultCase fault_cases[] = {
        FAULTS(BACKUP, SHAPE_QCOW2, "src.qcow2", "target.img", 2 * MiB + 4096),
        FAULTS(MIRROR, SHAPE_RAW, "src.raw", "target.img", 4096),
        FAULTS(COMMIT, SHAPE_CHAIN3, "mid.qcow2", "base.qcow2", MiB + 4096),
        FAULTS(STREAM, SHAPE_CHAIN3, "mid.qcow2", "top.qcow2", MiB + 4096),
};

static const char *const shape_names[] = {
        [SHAPE_RAW] = "raw",
        [SHAPE_QCOW2] = "qcow2",
        [SHAPE_COMPRESSED] = "compressed",
        [SHAPE_CHAIN3] = "chain3",
        [SHAPE_RAW_BASE] = "raw-base",
        [SHAPE_COMPRESSED_BASE] = "compressed-base",
        [SHAPE_TREE] = "tree",
};

static const char *const kind_names[] = { "backup", "mirror", "commit", "stream", "commit-active" };

/* The cases' data is theirs, not daemon arguments. */
static void setup(BusFixture *f, gconstpointer data) {
        bus_fixture_setup(f, NULL);
}

int main(int argc, char *argv[]) {
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);

        g_test_init(&argc, &argv, NULL);

        for (size_t i = 0; i < G_N_ELEMENTS(copy_cases); i++) {
                const CopyCase *c = &copy_cases[i];
                char *name = g_strdup_printf("/jobs/%s/%s%s-to-%s", kind_names[c->kind], shape_names[c->shape],
                                             c->sync_top ? "-top" : "", c->expect_format);
                g_ptr_array_add(names, name);
                g_test_add(name, BusFixture, c, setup, test_copy, bus_fixture_teardown);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(chain_cases); i++) {
                const ChainCase *c = &chain_cases[i];
                /* "sub/mid.qcow2" is one part of the test's path. */
                g_autofree char *top = g_strdelimit(g_strdup(c->top ?: "active"), "/", '-');
                g_autofree char *base = g_strdelimit(g_strdup(c->base ?: "default"), "/", '-');
                char *name = g_strdup_printf("/jobs/%s/%s-%s-%s", kind_names[c->kind], shape_names[c->shape], top,
                                             base);
                g_ptr_array_add(names, name);
                g_test_add(name, BusFixture, c, setup, test_chain, bus_fixture_teardown);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(run_cases); i++) {
                char *name = g_strdup_printf("/jobs/%s/pause-resume-cancel", kind_names[run_cases[i].kind]);
                g_ptr_array_add(names, name);
                g_test_add(name, BusFixture, &run_cases[i], setup, test_pause_resume_cancel,
                           bus_fixture_teardown);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(fault_cases); i++) {
                const FaultCase *c = &fault_cases[i];
                char *name = g_strdup_printf("/jobs/%s/fault/%s-%s-%s-%s", kind_names[c->kind], c->action, c->io,
                                             c->error, c->count ? "once" : "always");
                g_ptr_array_add(names, name);
                g_test_add(name, BusFixture, c, setup, test_fault, bus_fixture_teardown);
        }
        g_test_add("/jobs/backup/transaction-fault", BusFixture, NULL, setup, test_transaction_fault,
                   bus_fixture_teardown);
        g_test_add("/jobs/backup/finalize-answer", BusFixture, NULL, setup, test_finalize_answer,
                   bus_fixture_teardown);
        for (size_t i = 0; i < G_N_ELEMENTS(kill_cases); i++) {
                char *name = g_strdup_printf("/jobs/%s/kill-9", kind_names[kill_cases[i].kind]);
                g_ptr_array_add(names, name);
                g_test_add(name, BusFixture, &kill_cases[i], setup, test_kill, bus_fixture_teardown);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(writer_cases); i++) {
                char *name = g_strdup_printf("/jobs/mirror/writer-%s", shape_names[writer_cases[i].shape]);
                g_ptr_array_add(names, name);
                g_test_add(name, BusFixture, &writer_cases[i], setup, test_mirror_writer,
                           bus_fixture_teardown);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(device_cases); i++) {
                char *name = g_strdup_printf("/jobs/%s/device-target", kind_names[device_cases[i].kind]);
                g_ptr_array_add(names, name);
                g_test_add(name, BusFixture, &device_cases[i], setup, test_device_target, teardown);
        }
        return g_test_run();
}
