/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The job factory's bitmap operations (bitmap-ops.h), on the real loop, worker pool and
 * blockjobd-opener ($BLOCKJOBD_OPENER), against qemu-img as the oracle: what they change is what
 * qemu-img info then sees, what they list is what qemu-img made; raw images, missing bitmaps,
 * files a job of ours has, files a running qemu-io holds, and files the caller may not open are
 * refused with the right kind and text. */

#include <glib/gstdio.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitmap-ops.h"
#include "event-loop.h"
#include "file-identity.h"
#include "address-space.h"
#include "qemu-oracle.h"
#include "reservations.h"
#include "opener.h"

typedef struct Fixture {
        TestLoop loop;
        JobFactory *factory;
        char *dir;
} Fixture;

typedef struct Result {
        bool done;
        int r;
        BitmapOpError kind;
        char *message;
        BitmapListEntry *list;
        size_t n_list;
} Result;

static void fixture_setup(Fixture *f, gconstpointer data) {
        test_loop_init(&f->loop, 2, NULL, NULL);
        g_assert_cmpint(job_factory_new(f->loop.event, f->loop.pool, f->loop.registry, &f->factory), ==, 0);
        f->dir = g_dir_make_tmp("test-bitmap-ops-XXXXXX", NULL);
        g_assert_nonnull(f->dir);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
        g_assert_cmpint(system(cmd), ==, 0);
        job_factory_free(f->factory);
        /* The opener servers are the loop's: they go with it. */
        opener_servers_close();
        test_loop_done(&f->loop);
        g_free(f->dir);
}

static char *path(Fixture *f, const char *name) {
        return g_build_filename(f->dir, name, NULL);
}

static void on_done(BitmapOp *op, int r, BitmapOpError kind, const char *message, void *userdata) {
        Result *res = userdata;
        const BitmapListEntry *l;
        size_t n;

        res->done = true;
        res->r = r;
        res->kind = kind;
        res->message = g_strdup(message);
        if (r >= 0 && bitmap_op_request(op)->type == BITMAP_OP_LIST) {
                l = bitmap_op_list(op, &n);
                res->list = g_new0(BitmapListEntry, MAX(n, 1U));
                for (size_t i = 0; i < n; i++) {
                        res->list[i] = l[i];
                        res->list[i].name = g_strdup(l[i].name);
                }
                res->n_list = n;
        }
        bitmap_op_free(op);
}

static void result_done(Result *res) {
        for (size_t i = 0; i < res->n_list; i++)
                g_free(res->list[i].name);
        g_free(res->list);
        g_free(res->message);
        *res = (Result) {};
}

/* Starts one operation as 'uid' (root: 0); res->done once it ended. */
static void start_as(Fixture *f, uid_t uid, BitmapOpType type, const char *image, const char *name,
                     const char *const *sources, uint32_t granularity, bool disabled, Result *res) {
        BitmapRequest q = {
                .type = type,
                .image = image ? strdup(image) : NULL,
                .name = name ? strdup(name) : NULL,
                .granularity = granularity,
                .disabled = disabled,
        };
        JobCaller caller = { .uid = uid, .groups_unknown = true };
        g_autofree char *error = NULL;
        BitmapOp *op = NULL;

        for (; sources && sources[q.n_sources]; q.n_sources++)
                ;
        if (q.n_sources > 0) {
                q.sources = calloc(q.n_sources, sizeof(char *));
                for (size_t i = 0; i < q.n_sources; i++)
                        q.sources[i] = strdup(sources[i]);
        }

        *res = (Result) {};
        g_assert_cmpint(bitmap_op_new(f->factory, &caller, &q, &op, &error), ==, 0);
        g_assert_cmpint(bitmap_op_start(op, on_done, res), ==, 0);
}

/* Runs one operation as 'uid' (root: 0) to its end. */
static void run_as(Fixture *f, uid_t uid, BitmapOpType type, const char *image, const char *name,
                   const char *const *sources, uint32_t granularity, bool disabled, Result *res) {
        start_as(f, uid, type, image, name, sources, granularity, disabled, res);
        for (unsigned i = 0; !res->done; i++) {
                g_assert_cmpuint(i, <, 10000);
                test_loop_iterate(&f->loop);
        }
}

static void run(Fixture *f, BitmapOpType type, const char *image, const char *name, Result *res) {
        run_as(f, 0, type, image, name, NULL, 0, false, res);
}

static void assert_ok(Result *res) {
        if (res->r < 0)
                g_error("operation failed (%d, kind %d): %s", res->r, res->kind, res->message);
}

/* A change that must work, whose result is not looked at further. */
static void run_ok(Fixture *f, BitmapOpType type, const char *image, const char *name) {
        Result res;

        run(f, type, image, name, &res);
        assert_ok(&res);
        result_done(&res);
}

static void assert_fails(Result *res, BitmapOpError kind, const char *message) {
        if (res->r >= 0)
                g_error("operation succeeded, expected: %s", message);
        g_assert_cmpint(res->kind, ==, kind);
        if (!strstr(res->message, message))
                g_error("message '%s' does not say '%s'", res->message, message);
}

/* Refused for memory: LimitExceeded (-E2BIG) naming the method, and saying what would not fit. */
static void assert_refused(Result *res, const char *method, const char *detail) {
        g_autofree char *prefix = g_strdup_printf("%s() on '", method);

        assert_fails(res, BITMAP_OP_ERROR_LIMIT, prefix);
        g_assert_cmpint(res->r, ==, -E2BIG);
        if (!strstr(res->message, detail))
                g_error("message '%s' does not say '%s'", res->message, detail);
        g_test_message("refused: %s", res->message);
        result_done(res);
}

/* Calls as nobody need root, and a directory nobody can enter. */
static bool can_act_as_nobody(Fixture *f) {
        if (getuid() != 0) {
                g_test_skip("needs root, to act as nobody");
                return false;
        }
        g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
        return true;
}

static void assert_clean(const char *image) {
        g_autofree char *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img check -U %s", image) != 0)
                g_error("qemu-img check %s: %s%s", image, out, err);
}

static void test_change_and_list(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "a.qcow2"), *bm = NULL;
        Result res;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", img));

        /* Added as asked; qemu-img sees it, and the image stays clean. */
        run_as(f, 0, BITMAP_OP_ADD, img, "b0", NULL, 0, false, &res);
        assert_ok(&res);
        result_done(&res);
        run_as(f, 0, BITMAP_OP_ADD, img, "b1", NULL, 4096, true, &res);
        assert_ok(&res);
        result_done(&res);
        bm = oracle_bitmap_list(img);
        g_assert_cmpstr(bm, ==, "b0:65536:auto b1:4096:");
        assert_clean(img);

        /* qemu-io records its writes in the enabled bitmap; the listing counts them. */
        g_free(oracle_run("qemu-io -f qcow2 -c 'write 0 100k' -c 'write 1M 1' %s", img));
        run(f, BITMAP_OP_LIST, img, NULL, &res);
        assert_ok(&res);
        g_assert_cmpuint(res.n_list, ==, 2);
        g_assert_cmpstr(res.list[0].name, ==, "b0");
        g_assert_cmpuint(res.list[0].granularity, ==, 65536);
        g_assert_cmpuint(res.list[0].dirty, ==, 3 * 65536);
        g_assert_cmpuint(res.list[0].flags, ==, IMAGE_BITMAP_AUTO);
        g_assert_cmpstr(res.list[1].name, ==, "b1");
        g_assert_cmpuint(res.list[1].dirty, ==, 0);
        g_assert_cmpuint(res.list[1].flags, ==, 0);
        result_done(&res);

        /* Merge, enable, disable, clear, remove: as qemu-img then sees them. */
        run_as(f, 0, BITMAP_OP_MERGE, img, "b1", (const char *const[]) { "b0", NULL }, 0, false, &res);
        assert_ok(&res);
        result_done(&res);
        run_ok(f, BITMAP_OP_ENABLE, img, "b1");
        run_ok(f, BITMAP_OP_DISABLE, img, "b0");
        g_free(bm);
        bm = oracle_bitmap_list(img);
        g_assert_cmpstr(bm, ==, "b0:65536: b1:4096:auto");
        run(f, BITMAP_OP_LIST, img, NULL, &res);
        assert_ok(&res);
        /* b0's granules, 64 KiB each, become sixteen of b1's each. */
        g_assert_cmpuint(res.list[1].dirty, ==, 3 * 65536);
        result_done(&res);
        run_ok(f, BITMAP_OP_CLEAR, img, "b1");
        run_ok(f, BITMAP_OP_REMOVE, img, "b0");
        g_free(bm);
        bm = oracle_bitmap_list(img);
        g_assert_cmpstr(bm, ==, "b1:4096:auto");
        run(f, BITMAP_OP_LIST, img, NULL, &res);
        assert_ok(&res);
        g_assert_cmpuint(res.n_list, ==, 1);
        g_assert_cmpuint(res.list[0].dirty, ==, 0);
        result_done(&res);
        assert_clean(img);
}

static void test_errors(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "a.qcow2"), *raw = path(f, "a.raw"), *v2 = path(f, "v2.qcow2");
        g_autofree char *missing = path(f, "none.qcow2");
        Result res;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", img));
        g_free(oracle_run("qemu-img bitmap --add %s b", img));
        g_free(oracle_run("qemu-img create -q -f raw %s 1M", raw));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o compat=0.10 %s 1M", v2));

        run(f, BITMAP_OP_REMOVE, img, "nope", &res);
        assert_fails(&res, BITMAP_OP_ERROR_BITMAP, "Dirty bitmap 'nope' not found");
        g_assert_cmpint(res.r, ==, -ENOENT);
        result_done(&res);
        run(f, BITMAP_OP_ADD, img, "b", &res);
        assert_fails(&res, BITMAP_OP_ERROR_BITMAP, "Bitmap already exists: b");
        result_done(&res);
        run(f, BITMAP_OP_ADD, raw, "b", &res);
        assert_fails(&res, BITMAP_OP_ERROR_BITMAP, "it is not a qcow2 image");
        result_done(&res);
        run(f, BITMAP_OP_LIST, raw, NULL, &res);
        assert_fails(&res, BITMAP_OP_ERROR_BITMAP, "is not a qcow2 image");
        result_done(&res);
        run(f, BITMAP_OP_ADD, v2, "b", &res);
        assert_fails(&res, BITMAP_OP_ERROR_BITMAP, "Cannot store dirty bitmaps in qcow2 v2 files");
        result_done(&res);
        /* A v2 image can hold none: listed as empty, as qemu-img info shows it. */
        run(f, BITMAP_OP_LIST, v2, NULL, &res);
        assert_ok(&res);
        g_assert_cmpuint(res.n_list, ==, 0);
        result_done(&res);
        run(f, BITMAP_OP_LIST, missing, NULL, &res);
        assert_fails(&res, BITMAP_OP_ERROR_IMAGE, "none.qcow2");
        g_assert_cmpint(res.r, ==, -ENOENT);
        result_done(&res);

        /* Nothing was changed by the refusals. */
        g_autofree char *bm = oracle_bitmap_list(img);
        g_assert_cmpstr(bm, ==, "b:65536:auto");
        g_autofree char *info = oracle_run("qemu-img info -U %s", raw);
        g_assert_nonnull(strstr(info, "file format: raw"));
}

/* A file a job of ours writes is refused, naming the job, before anything is opened for
 * writing; one a job only reads may be listed but not changed. */
static void test_reserved(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "a.qcow2"), *message = NULL;
        Reservations *reservations = job_factory_reservations(f->factory);
        Result res;
        int fd;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", img));
        fd = open(img, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);

        for (int write = 1; write >= 0; write--) {
                FileClaim c = { .write = write, .label = strdup(img) };
                g_assert_cmpint(file_identity(fd, &c.id), ==, 0);
                ReservationSet *job = reservation_set_new(reservations);
                g_assert_cmpint(reservation_set_add(job, &c, 1), ==, 0);
                g_assert_cmpint(reservation_set_commit(job, "commit0", "commit"), ==, 0);

                run(f, BITMAP_OP_ADD, img, "b", &res);
                g_autofree char *expected = g_strdup_printf("Image '%s' is in use by job 'commit0' (commit)", img);
                assert_fails(&res, BITMAP_OP_ERROR_IN_USE, expected);
                g_assert_cmpint(res.r, ==, -ETXTBSY);
                result_done(&res);

                run(f, BITMAP_OP_LIST, img, NULL, &res);
                if (write)
                        assert_fails(&res, BITMAP_OP_ERROR_IN_USE, "is written by job 'commit0' (commit)");
                else
                        assert_ok(&res);
                result_done(&res);
                reservation_set_free(job);
        }
        close(fd);

        /* And free again. */
        run_ok(f, BITMAP_OP_ADD, img, "b");
}

/* A file another process (qemu-io, as a running QEMU) holds: refused by QEMU's locks, changes and
 * listings alike while it writes; a reader lets others list, not change. */
static void test_locked(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "a.qcow2");
        GSubprocess *holder;
        Result res;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", img));
        g_free(oracle_run("qemu-img bitmap --add %s b", img));

        holder = oracle_qemu_io_hold(img, "qcow2", false);
        run(f, BITMAP_OP_CLEAR, img, "b", &res);
        assert_fails(&res, BITMAP_OP_ERROR_IN_USE, "is in use by another process");
        result_done(&res);
        run(f, BITMAP_OP_LIST, img, NULL, &res);
        assert_fails(&res, BITMAP_OP_ERROR_IN_USE, "is in use by another process");
        result_done(&res);
        oracle_qemu_io_release(holder);

        holder = oracle_qemu_io_hold(img, "qcow2", true);
        run(f, BITMAP_OP_REMOVE, img, "b", &res);
        assert_fails(&res, BITMAP_OP_ERROR_IN_USE, "is in use by another process");
        result_done(&res);
        run(f, BITMAP_OP_LIST, img, NULL, &res);
        assert_ok(&res);
        g_assert_cmpuint(res.n_list, ==, 1);
        result_done(&res);
        oracle_qemu_io_release(holder);

        g_autofree char *bm = oracle_bitmap_list(img);
        g_assert_cmpstr(bm, ==, "b:65536:auto");
}

/* Opened with the caller's rights: nobody may not change root's image, nor list one it cannot
 * read. */
static void test_callers_rights(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "a.qcow2");
        Result res;

        if (!can_act_as_nobody(f))
                return;
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", img));
        g_assert_cmpint(chmod(img, 0644), ==, 0);

        run_as(f, 65534, BITMAP_OP_ADD, img, "b", NULL, 0, false, &res);
        assert_fails(&res, BITMAP_OP_ERROR_IMAGE, "Permission denied");
        g_assert_cmpint(res.r, ==, -EACCES);
        result_done(&res);
        run_as(f, 65534, BITMAP_OP_LIST, img, NULL, NULL, 0, false, &res);
        assert_ok(&res);
        result_done(&res);
        g_assert_cmpint(chmod(img, 0600), ==, 0);
        run_as(f, 65534, BITMAP_OP_LIST, img, NULL, NULL, 0, false, &res);
        assert_fails(&res, BITMAP_OP_ERROR_IMAGE, "Permission denied");
        result_done(&res);
}

/* A change loads the image's enabled bitmaps: bounded as a job's images are (a job's memory, within
 * what is left of the user's), and counted in the user's memory only while it works. Root is not
 * bounded, as in creations. */
static void test_memory_bound(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "big.qcow2"), *bm = NULL;
        JobFactoryLimits *l = job_factory_limits(f->factory);
        Result res;

        if (!can_act_as_nobody(f))
                return;
        /* 64 GiB at 512 bytes a bit: a map of 16 MiB, in memory once the image is open for writing. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64G", img));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s b", img));
        g_assert_cmpint(chmod(img, 0666), ==, 0);

        l->max_memory_per_job = 8 << 20;
        run_as(f, 65534, BITMAP_OP_CLEAR, img, "b", NULL, 0, false, &res);
        assert_refused(&res, "ClearBitmap", "MiB of memory");
        /* A merge too. */
        const char *const sources[] = { "b", NULL };
        run_as(f, 65534, BITMAP_OP_MERGE, img, "b", sources, 0, false, &res);
        assert_refused(&res, "MergeBitmaps", "MiB of memory");

        /* What is left of the user's bounds it as well. */
        l->max_memory_per_job = 0;
        l->max_memory_per_user = 8 << 20;
        run_as(f, 65534, BITMAP_OP_CLEAR, img, "b", NULL, 0, false, &res);
        assert_refused(&res, "ClearBitmap", "MiB of memory");

        /* Root is not bounded. */
        run_as(f, 0, BITMAP_OP_CLEAR, img, "b", NULL, 0, false, &res);
        assert_ok(&res);
        result_done(&res);

        /* Within the bound it works; each call gives its memory back (else the second could not
         * have the user's whole 256 MiB). */
        l->max_memory_per_user = 256 << 20;
        for (unsigned i = 0; i < 2; i++) {
                run_as(f, 65534, BITMAP_OP_CLEAR, img, "b", NULL, 0, false, &res);
                assert_ok(&res);
                result_done(&res);
        }
        bm = oracle_bitmap_list(img);
        g_assert_cmpstr(bm, ==, "b:512:auto");
        assert_clean(img);
}

/* AddBitmap()'s new map counts too, though the image's tables are small: 64 GiB at 512 bytes a
 * bit is a map of 16 MiB, more than a bound of 8 MiB; at 64 KiB a bit, 128 KiB, well within. */
static void test_add_bounded(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "big.qcow2"), *bm = NULL;
        JobFactoryLimits *l = job_factory_limits(f->factory);
        Result res;

        if (!can_act_as_nobody(f))
                return;
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64G", img));
        g_assert_cmpint(chmod(img, 0666), ==, 0);
        l->max_memory_per_job = 8 << 20;

        run_as(f, 65534, BITMAP_OP_ADD, img, "fine", NULL, 512, false, &res);
        assert_refused(&res, "AddBitmap", "bitmap 'fine' would need 16 MiB of memory");

        run_as(f, 65534, BITMAP_OP_ADD, img, "coarse", NULL, 65536, false, &res);
        assert_ok(&res);
        result_done(&res);
        bm = oracle_bitmap_list(img);
        g_assert_cmpstr(bm, ==, "coarse:65536:auto");
        assert_clean(img);
}

/* A bitmap as large as QEMU makes one: 2 TiB at 512 bytes a bit is 512 MiB of bits (QEMU refuses
 * more: "Too much space will be occupied by the bitmap"), in a sparse file of a few MiB; qemu-io
 * marks 64 KiB, 1 MiB of data and 1 MiB of zeroes in it. */
#define HUGE_DIRTY ((UINT64_C(64) << 10) + (UINT64_C(2) << 20))

static void make_huge_bitmap(const char *img) {
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 2T", img));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s b", img));
        g_free(oracle_run("qemu-io -c 'write -P 1 0 64k' -c 'write -P 1 1T 1M' -c 'write -z 2047G 1M' %s", img));
        g_assert_cmpint(chmod(img, 0666), ==, 0);
}

/* ListBitmaps() counts a bitmap's dirty bytes without its map: at a bound of 8 MiB, far below the
 * bitmap's 512 MiB, it lists it and counts right; below what the image's tables take, it is
 * refused with the bound named. */
static void test_list_bounded(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "huge.qcow2");
        JobFactoryLimits *l = job_factory_limits(f->factory);
        Result res;

        if (!can_act_as_nobody(f))
                return;
        make_huge_bitmap(img);

        l->max_memory_per_job = 8 << 20;
        run_as(f, 65534, BITMAP_OP_LIST, img, NULL, NULL, 0, false, &res);
        assert_ok(&res);
        g_assert_cmpuint(res.n_list, ==, 1);
        g_assert_cmpstr(res.list[0].name, ==, "b");
        g_assert_cmpuint(res.list[0].granularity, ==, 512);
        g_assert_cmpuint(res.list[0].dirty, ==, HUGE_DIRTY);
        result_done(&res);

        /* A change needs the map: refused at that bound. */
        run_as(f, 65534, BITMAP_OP_CLEAR, img, "b", NULL, 0, false, &res);
        assert_refused(&res, "ClearBitmap", "MiB of memory");

        /* Less than the image's tables and the two clusters a count reads through. */
        l->max_memory_per_job = 1 << 20;
        run_as(f, 65534, BITMAP_OP_LIST, img, NULL, NULL, 0, false, &res);
        assert_refused(&res, "ListBitmaps", "of memory");
}

/* A change of a small bitmap beside big enabled ones (512 MiB and 64 MiB of maps) works at a
 * bound of 8 MiB: it does not load the enabled bitmaps (a job would, to record its writes), only
 * the maps it names, so that a merge from the big one is refused at that bound. The big ones are
 * left as they were, and the image clean. */
static void test_change_beside_big(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "huge.qcow2");
        JobFactoryLimits *l = job_factory_limits(f->factory);
        const char *small[] = { "t", NULL }, *big[] = { "b", NULL };
        Result res;

        if (!can_act_as_nobody(f))
                return;
        make_huge_bitmap(img);
        g_free(oracle_run("qemu-img bitmap --add -g 4096 %s b2", img));
        g_free(oracle_run("qemu-img bitmap --add -g 1M %s s", img));
        g_free(oracle_run("qemu-img bitmap --add -g 1M --disable %s t", img));

        l->max_memory_per_job = 8 << 20;
        static const BitmapOpType changes[] = { BITMAP_OP_DISABLE, BITMAP_OP_ENABLE, BITMAP_OP_CLEAR };
        for (size_t i = 0; i < G_N_ELEMENTS(changes); i++) {
                run_as(f, 65534, changes[i], img, "s", NULL, 0, false, &res);
                assert_ok(&res);
                result_done(&res);
        }
        run_as(f, 65534, BITMAP_OP_MERGE, img, "s", small, 0, false, &res);
        assert_ok(&res);
        result_done(&res);
        run_as(f, 65534, BITMAP_OP_MERGE, img, "s", big, 0, false, &res);
        assert_refused(&res, "MergeBitmaps", "MiB of memory");
        run_as(f, 65534, BITMAP_OP_REMOVE, img, "t", NULL, 0, false, &res);
        assert_ok(&res);
        result_done(&res);
        run_as(f, 65534, BITMAP_OP_ADD, img, "n", NULL, UINT32_C(1) << 20, false, &res);
        assert_ok(&res);
        result_done(&res);
        assert_clean(img);

        run_as(f, 65534, BITMAP_OP_LIST, img, NULL, NULL, 0, false, &res);
        assert_ok(&res);
        g_assert_cmpuint(res.n_list, ==, 4);
        g_assert_cmpstr(res.list[0].name, ==, "b");
        g_assert_cmpuint(res.list[0].dirty, ==, HUGE_DIRTY);
        g_assert_cmpstr(res.list[1].name, ==, "b2");
        g_assert_cmpuint(res.list[1].dirty, ==, 0);
        for (size_t i = 0; i < res.n_list; i++)
                g_assert_cmpuint(res.list[i].flags, ==, IMAGE_BITMAP_AUTO);
        result_done(&res);
}

/* What the process may allocate, proven: in a child whose address space may grow by 64 MiB only,
 * the count of the 512 MiB bitmap works, and loading its map (what ListBitmaps() did before) fails
 * for want of memory, so the bound is real. Not under ASan, which reserves terabytes of address
 * space for its shadow. */
static int count_in_child(const char *img) {
        char *error = NULL;
        Image *image = NULL;
        ImageBitmapInfo *infos = NULL;
        ImageDirtyMap *m = NULL;
        uint64_t dirty = 0;
        size_t n = 0;

        if (image_open_full(img, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING, NULL, &image, &error) < 0)
                return 11;
        if (image_bitmap_list(image, &infos, &n) < 0 || n != 1)
                return 12;
        if (image_bitmap_dirty_bytes(image, 0, &dirty) < 0)
                return 13;
        if (dirty != HUGE_DIRTY)
                return 14;
        if (image_bitmap_load(image, "b", &m) != -ENOMEM)
                return 15;
        return 0;
}

static void test_list_address_space(void) {
        g_autofree char *dir = NULL, *img = NULL, *cmd = NULL;

        if (!address_space_limit_works()) {
                g_test_skip("ASan reserves more address space than the bound");
                return;
        }
        dir = g_dir_make_tmp("test-bitmap-ops-XXXXXX", NULL);
        img = g_build_filename(dir, "huge.qcow2", NULL);
        make_huge_bitmap(img);
        g_assert_cmpint(run_with_address_space(UINT64_C(64) << 20, count_in_child, img), ==, 0);
        cmd = g_strdup_printf("rm -rf '%s'", dir);
        g_assert_cmpint(system(cmd), ==, 0);
}

/* Holds its owner's only worker (a pool of 2 threads lets an owner have 1) until released. */
typedef struct Blocker {
        int started[2], release[2];
        bool done;
} Blocker;

static void blocker_run(void *userdata) {
        Blocker *b = userdata;
        char c = 0;

        g_assert_cmpint(write(b->started[1], &c, 1), ==, 1);
        g_assert_cmpint(read(b->release[0], &c, 1), ==, 1);
}

static void blocker_done(void *userdata) {
        ((Blocker *) userdata)->done = true;
}

/* Is 'image' reserved for writing (by an operation that has its file)? */
static bool reserved(Fixture *f, const char *image) {
        FileClaim c = { .write = true, .label = strdup(image) };
        ReservationSet *set = reservation_set_new(job_factory_reservations(f->factory));
        int fd = open(image, O_RDONLY | O_CLOEXEC), r;

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(file_identity(fd, &c.id), ==, 0);
        g_assert_cmpint(reservation_set_add(set, &c, 1), ==, 0);
        r = reservation_set_check(set, NULL, 0, NULL);
        reservation_set_free(set);
        close(fd);
        return r == -ETXTBSY;
}

/* A change counts its whole bound (here all of the user's 64 MiB) while its image is opened, then
 * only what the open image may take: with the user's only worker held once the image is open, the
 * change waits to be made, and the user has memory again meanwhile. */
static void test_change_counts_need(Fixture *f, gconstpointer data) {
        g_autofree char *img = path(f, "a.qcow2"), *error = NULL;
        JobFactoryLimits *l = job_factory_limits(f->factory);
        Blocker blocker = {};
        uint64_t max = 0;
        Result res;
        char c = 0;

        if (!can_act_as_nobody(f))
                return;
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1M", img));
        g_free(oracle_run("qemu-img bitmap --add %s b", img));
        g_assert_cmpint(chmod(img, 0666), ==, 0);
        g_assert_cmpint(pipe2(blocker.started, O_CLOEXEC), ==, 0);
        g_assert_cmpint(pipe2(blocker.release, O_CLOEXEC), ==, 0);
        l->max_memory_per_job = 0;
        l->max_memory_per_user = 64 << 20;

        start_as(f, 65534, BITMAP_OP_CLEAR, img, "b", NULL, 0, false, &res);
        /* The file is reserved in the callback that sends the open to a worker: behind it, the
         * blocker, which starts once the open is done. */
        for (unsigned i = 0; !reserved(f, img); i++) {
                g_assert_false(res.done);
                g_assert_cmpuint(i, <, 10000);
                test_loop_iterate(&f->loop);
        }
        g_assert_cmpint(job_factory_claim_call_memory(f->factory, 65534, false, &max, &error), ==, -E2BIG);
        g_clear_pointer(&error, free);
        g_assert_cmpint(worker_pool_call(f->loop.pool, 65534, blocker_run, blocker_done, &blocker), ==, 0);
        g_assert_cmpint(read(blocker.started[0], &c, 1), ==, 1);

        for (unsigned i = 0; job_factory_claim_call_memory(f->factory, 65534, false, &max, NULL) < 0; i++) {
                g_assert_false(res.done);
                g_assert_cmpuint(i, <, 10000);
                test_loop_iterate(&f->loop);
        }
        g_assert_false(res.done);
        g_test_message("while the change waits, the user may still take %" PRIu64 " of %u bytes", max, 64U << 20);
        g_assert_cmpuint(max, <, 64U << 20);
        g_assert_cmpuint(max, >, 32U << 20);

        g_assert_cmpint(write(blocker.release[1], &c, 1), ==, 1);
        for (unsigned i = 0; !res.done || !blocker.done; i++) {
                g_assert_cmpuint(i, <, 10000);
                test_loop_iterate(&f->loop);
        }
        assert_ok(&res);
        result_done(&res);
        /* All given back. */
        g_assert_cmpint(job_factory_claim_call_memory(f->factory, 65534, false, &max, NULL), ==, 0);
        g_assert_cmpuint(max, ==, 64U << 20);
        for (unsigned i = 0; i < 2; i++) {
                close(blocker.started[i]);
                close(blocker.release[i]);
        }
}

/* Bitmap 'b''s dirty bytes, counted a cluster at a time and from its whole map: they must agree. */
static uint64_t dirty_bytes(const char *img) {
        g_autofree char *error = NULL;
        ImageBitmapInfo *infos = NULL;
        ImageDirtyMap *m = NULL;
        Image *image = NULL;
        uint64_t dirty = 0;
        size_t n = 0;

        g_assert_cmpint(image_open_full(img, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING, NULL, &image, &error), ==, 0);
        g_assert_cmpint(image_bitmap_list(image, &infos, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpint(image_bitmap_dirty_bytes(image, 0, &dirty), ==, 0);
        g_assert_cmpint(image_bitmap_load(image, "b", &m), ==, 0);
        g_assert_cmpuint(image_dirty_map_count(m), ==, dirty);
        image_dirty_map_free(m);
        image_bitmap_list_free(infos, n);
        image_close(image);
        return dirty;
}

/* Table entry i of the first bitmap of a qcow2 v3 image becomes 'entry' (the bitmaps extension,
 * its directory and the table, found as docs/interop/qcow2.txt places them). */
static void set_table_entry(const char *img, unsigned i, uint64_t entry) {
        uint8_t buf[8];
        uint64_t pos, dir, table;
        int fd = open(img, O_RDWR | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, buf, 4, 100), ==, 4);
        pos = (uint64_t) buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3];
        for (;;) {
                uint32_t type, len;
                g_assert_cmpint(pread(fd, buf, 8, (off_t) pos), ==, 8);
                type = GUINT32_FROM_BE(*(uint32_t *) buf);
                len = GUINT32_FROM_BE(*(uint32_t *) (buf + 4));
                g_assert_cmpuint(type, !=, 0);
                if (type == 0x23852875)
                        break;
                pos += 8 + ((len + 7) & ~7U);
        }
        g_assert_cmpint(pread(fd, buf, 8, (off_t) pos + 8 + 16), ==, 8);
        dir = GUINT64_FROM_BE(*(uint64_t *) buf);
        g_assert_cmpint(pread(fd, buf, 8, (off_t) dir), ==, 8);
        table = GUINT64_FROM_BE(*(uint64_t *) buf);
        *(uint64_t *) buf = GUINT64_TO_BE(entry);
        g_assert_cmpint(pwrite(fd, buf, 8, (off_t) (table + 8 * i)), ==, 8);
        close(fd);
}

/* The count's corners: a last granule that reaches past the end of the disk counts up to the end;
 * all-ones table entries count without a read, the last one only up to the end of the disk; and
 * qemu-img check still finds the image clean. */
static void test_count_corners(void) {
        g_autofree char *dir = g_dir_make_tmp("test-bitmap-ops-XXXXXX", NULL);
        g_autofree char *tail = g_build_filename(dir, "tail.qcow2", NULL), *ones = g_build_filename(dir, "ones.qcow2", NULL);
        g_autofree char *cmd = NULL;

        /* 1 MiB and 1 KiB at 64 KiB a bit: one byte dirties a granule, the last granule is 1 KiB. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1049600", tail));
        g_free(oracle_run("qemu-img bitmap --add %s b", tail));
        g_free(oracle_run("qemu-io -c 'write 0 1' -c 'write 1M 1k' %s", tail));
        g_assert_cmpuint(dirty_bytes(tail), ==, 65536 + 1024);

        /* 600 MiB at 512 bytes a bit: three clusters of bitmap data (256 MiB of disk each, the
         * last 88 MiB); 4 KiB written in the second, the first and last made all ones. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 600M", ones));
        g_free(oracle_run("qemu-img bitmap --add -g 512 %s b", ones));
        g_free(oracle_run("qemu-io -c 'write 300M 4k' %s", ones));
        g_assert_cmpuint(dirty_bytes(ones), ==, 4096);
        set_table_entry(ones, 0, 1);
        set_table_entry(ones, 2, 1);
        g_assert_cmpuint(dirty_bytes(ones), ==, (UINT64_C(256) << 20) + 4096 + (UINT64_C(88) << 20));
        assert_clean(ones);

        cmd = g_strdup_printf("rm -rf '%s'", dir);
        g_assert_cmpint(system(cmd), ==, 0);
}

static void test_checks(void) {
        g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL;
        char name[BITMAP_NAME_MAX + 2];

        memset(name, 'x', sizeof(name) - 1);
        name[sizeof(name) - 1] = 0;
        g_assert_cmpint(bitmap_check_name("", &e1), ==, -EINVAL);
        g_assert_cmpstr(e1, ==, "Bitmap name cannot be empty");
        g_assert_cmpint(bitmap_check_name(name, &e2), ==, -EINVAL);
        g_assert_nonnull(strstr(e2, "Bitmap name too long"));
        name[BITMAP_NAME_MAX] = 0;
        g_assert_cmpint(bitmap_check_name(name, NULL), ==, 0);
        g_assert_cmpint(bitmap_check_granularity(0, NULL), ==, 0);
        g_assert_cmpint(bitmap_check_granularity(512, NULL), ==, 0);
        g_assert_cmpint(bitmap_check_granularity(UINT32_C(1) << 31, NULL), ==, 0);
        g_assert_cmpint(bitmap_check_granularity(256, &e3), ==, -EINVAL);
        g_assert_cmpstr(e3, ==, "Granularity must be power of 2 and at least 512");
        g_assert_cmpint(bitmap_check_granularity(3 * 512, NULL), ==, -EINVAL);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/bitmap-ops/checks", test_checks);
        if (!oracle_available() || !g_getenv("BLOCKJOBD_OPENER"))
                return g_test_run();
#define T(name, fn) g_test_add(name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        T("/bitmap-ops/change-and-list", test_change_and_list);
        T("/bitmap-ops/errors", test_errors);
        T("/bitmap-ops/reserved", test_reserved);
        T("/bitmap-ops/locked", test_locked);
        T("/bitmap-ops/callers-rights", test_callers_rights);
        T("/bitmap-ops/memory-bound", test_memory_bound);
        T("/bitmap-ops/list-bounded", test_list_bounded);
        T("/bitmap-ops/add-bounded", test_add_bounded);
        T("/bitmap-ops/change-beside-big", test_change_beside_big);
        T("/bitmap-ops/change-counts-need", test_change_counts_need);
        g_test_add_func("/bitmap-ops/list-address-space", test_list_address_space);
        g_test_add_func("/bitmap-ops/count-corners", test_count_corners);
        return g_test_run();
}
