/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Backups with QEMU's persistent dirty bitmaps: sync=bitmap copies exactly the clusters a bitmap
 * marks, and bitmap-mode decides what becomes of the bitmap at the job's end (on-success, always,
 * never), in a transaction too; QEMU (qemu-io) is the writer that fills the bitmaps, qemu-img the
 * judge of what the images hold. */

#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "driver-fixture.h"
#include "driver-open.h"
#include "file-util.h"
#include "image-fault.h"
#include "log.h"
#include "qemu-oracle.h"

#define SIZE (16 * MiB)

/* A copy of the source as it reads now (qemu-img compare is the judge of "reads as"). */
static char *snapshot(Fixture *f, const char *src, const char *name) {
        char *copy = g_build_filename(f->dir, name, NULL);
        g_free(oracle_run("qemu-img convert -U -q -O raw %s %s", src, copy));
        return copy;
}

/* Source: 16 MiB qcow2 with data, a bitmap "b0" added after that data (so it is clean), then
 * writes by qemu-io, which records them in the bitmap. 'base' (if not NULL): a raw copy of the
 * source as it was when the bitmap was added, the backing file that makes an incremental target
 * read as the whole source. */
static char *make_source_named(Fixture *f, const char *name, const char *granularity, const char *base) {
        char *src = g_build_filename(f->dir, name, NULL);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 16M", src));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 8M' %s", src));
        g_free(oracle_run("qemu-img bitmap --add %s%s %s b0", granularity ? "-g " : "", strempty(granularity), src));
        if (base)
                g_free(snapshot(f, src, base));
        /* Dirty: 100 KiB across a 64 KiB boundary, one byte, a zeroed range, data at the end. */
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 1000k 100k' -c 'write -P 0x33 5M 1' "
                          "-c 'write -z 6M 128k' -c 'write -P 0x44 15M 1M' %s",
                          src));
        return src;
}

static char *make_source(Fixture *f, const char *granularity) {
        return make_source_named(f, "src.qcow2", granularity, NULL);
}

/* The bitmap's dirty bytes, read by the image layer (its agreement with QEMU is
 * test-qcow2-bitmap's), and QEMU's view: in qemu-img info, not in use, and check clean. */
static uint64_t bitmap_dirty(const char *image, const char *name) {
        g_autofree char *error = NULL, *info = NULL;
        ImageDirtyMap *m = NULL;
        Image *img = NULL;
        uint64_t n;

        g_assert_cmpint(image_open(image, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_NO_LOCK, &img, &error),
                        ==, 0);
        g_assert_cmpint(image_bitmap_load(img, name, &m), ==, 0);
        n = image_dirty_map_count(m);
        image_dirty_map_free(m);
        image_close(img);

        info = oracle_run("qemu-img info -U --output=json %s", image);
        g_assert_nonnull(strstr(info, name));
        g_assert_null(strstr(info, "in-use"));
        g_free(oracle_run("qemu-img check -U %s", image));
        return n;
}

static Job *start(Fixture *f, TestBackupParams *bp, bool auto_finalize) {
        bp->target = bp->target ?: f->target;
        bp->source_format = IMAGE_FORMAT_QCOW2;
        return driver_fixture_start_backup(f, bp, 0, auto_finalize);
}

static void run_to_end(Fixture *f, const char *expected) {
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, expected);
        g_string_truncate(f->events, 0);
}

#define SUCCESS "created running waiting pending concluded null "

/* The target's allocated extents, from qemu-img map, within [start, end). */
static uint64_t allocated_in(const char *image, uint64_t start, uint64_t end) {
        g_autoptr(GArray) map = oracle_map(image);
        uint64_t n = 0;

        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                uint64_t s = MAX(e->start, start), t = MIN(e->start + e->length, end);
                if (e->present && e->depth == 0 && s < t)
                        n += t - s;
        }
        return n;
}

/* sync=bitmap copies the dirty clusters (64 KiB: QEMU's backup cluster), whole, and nothing
 * else; the zeroed range is copied as zeroes; on success with on-success the bitmap is empty. */
static void test_sync_bitmap(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, NULL), *expect = g_build_filename(f->dir, "expect.raw", NULL);
        TestBackupParams bp = { .source = src, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_ON_SUCCESS,
                                .sync_bitmap = true, .target_format = IMAGE_FORMAT_QCOW2 };
        /* Dirty 64 KiB clusters: 960k..1152k (3 clusters), 5M (1), 6M..6M+128k (2), 15M..16M (16). */
        const uint64_t dirty = (3 + 1 + 2 + 16) * 64 * KiB;

        /* The bitmap's granularity is the cluster's (QEMU's default): the same granules. */
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, dirty);
        Job *j = start(f, &bp, true);
        g_assert_cmpuint(job_total_progress(j), ==, dirty);
        run_to_end(f, SUCCESS);

        /* The target holds those clusters, as the source reads there, and nothing else; the
         * zeroed range needs nothing in a target without backing file (it reads zeroes). */
        g_assert_cmpuint(allocated_in(f->target, 0, SIZE), ==, dirty - 128 * KiB);
        g_free(oracle_run("qemu-img check -U %s", f->target));
        g_free(oracle_run("qemu-img create -q -f raw %s 16M", expect));
        g_free(oracle_run("qemu-io -f raw -c 'write -P 0x11 960k 192k' -c 'write -P 0x22 1000k 100k' "
                          "-c 'write -P 0x11 5M 64k' -c 'write -P 0x33 5M 1' -c 'write -P 0x44 15M 1M' %s",
                          expect));
        g_autofree char *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img compare -U -f qcow2 -F raw %s %s", f->target, expect) != 0)
                g_error("target differs: %s%s", out, err);

        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);
}

/* mode never: the bitmap stays; a bitmap of 1 MiB granularity copies whole 1 MiB granules. */
static void test_never_coarse(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, "1M");
        TestBackupParams bp = { .source = src, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_NEVER,
                                .sync_bitmap = true, .target_format = IMAGE_FORMAT_QCOW2 };
        uint64_t before = bitmap_dirty(src, "b0");

        g_assert_cmpuint(before, ==, 5 * MiB);        /* 0-2M (1000k+100k crosses 1M), 5M, 6M, 15M */
        Job *j = start(f, &bp, true);
        g_assert_cmpuint(job_total_progress(j), ==, 5 * MiB);
        run_to_end(f, SUCCESS);
        g_assert_cmpuint(allocated_in(f->target, 0, SIZE), ==, 5 * MiB - 128 * KiB);   /* less the zeroed range */
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, before);
}

/* sync=full with a bitmap (on-success): everything copied, and the bitmap emptied, starting a
 * chain. */
static void test_full_clears(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, NULL);
        TestBackupParams bp = { .source = src, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_ON_SUCCESS };

        g_assert_cmpuint(bitmap_dirty(src, "b0"), >, 0);
        Job *j = start(f, &bp, true);
        g_assert_cmpuint(job_total_progress(j), ==, SIZE);
        run_to_end(f, SUCCESS);
        g_free(oracle_run("qemu-img compare -U %s %s", f->target, src));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);

        /* sync=top with a bitmap and always, as QEMU allows it: emptied too. */
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x55 3M 64k' %s", src));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 64 * KiB);
        g_assert_cmpint(g_unlink(f->target), ==, 0);
        TestBackupParams top = { .source = src, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_ALWAYS, .sync_top = true };
        start(f, &top, true);
        run_to_end(f, SUCCESS);
        g_free(oracle_run("qemu-img compare -U %s %s", f->target, src));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);
}

static atomic_int fail_after;           /* target writes to let through, then EIO */
static const char *fail_path;

static int fail_target_writes(const char *path, ImageIo io, uint64_t offset, uint64_t length) {
        if (io != IMAGE_IO_WRITE || !fail_path || !strstr(path, fail_path))
                return 0;
        return atomic_fetch_sub(&fail_after, 1) > 0 ? 0 : -EIO;
}

/* Runs the backup with its target failing at the third write (fail_path): it aborts. */
static void run_failing(Fixture *f, TestBackupParams *bp) {
        atomic_store(&fail_after, 2);
        image_set_fault_hook(fail_target_writes);
        start(f, bp, true);
        test_loop_run_until_empty(&f->loop);
        image_set_fault_hook(NULL);
        g_assert_nonnull(strstr(f->events->str, "aborting"));
        g_string_truncate(f->events, 0);
}

/* A failed backup: on-success leaves the bitmap as it was; so does always when the target is a
 * new file, removed at abort (what was copied is in no backup); always clears what was copied
 * only into a target that stays, written in place; a cancelled one with on-success leaves the
 * bitmap too. */
static void test_failure_modes(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, "64K"), *passed = g_build_filename(f->dir, "passed.raw", NULL);
        uint64_t before = bitmap_dirty(src, "b0");

        /* on-success, a target write fails: the job fails and the bitmap is as it was. */
        TestBackupParams bp = { .source = src, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_ON_SUCCESS,
                                .sync_bitmap = true, .target_format = IMAGE_FORMAT_RAW, .chunk_size = 64 * KiB };
        fail_path = f->target;
        run_failing(f, &bp);
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, before);

        /* always, the same failure, into a new file: the file is gone with the first two 64 KiB
         * copied into it, so the bitmap keeps them: as it was. */
        bp.bitmap_mode = BITMAP_SYNC_ALWAYS;
        bp.target = NULL;
        run_failing(f, &bp);
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, before);

        /* always, cancelled once everything was copied into a new file: it is gone, and so the
         * bitmap is whole (clearing what was copied would empty it). */
        bp.target = NULL;
        Job *j = start(f, &bp, false);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_nonnull(strstr(f->events->str, "aborting"));
        g_string_truncate(f->events, 0);
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, before);

        /* always, the same failure, into a file the caller passed (target-fd), written in place:
         * it stays with what was copied (the first two 64 KiB writes), which is cleared. */
        bp.target = passed;
        bp.target_passed = true;
        fail_path = passed;
        run_failing(f, &bp);
        g_assert_true(g_file_test(passed, G_FILE_TEST_EXISTS));
        uint64_t after = bitmap_dirty(src, "b0");
        g_assert_cmpuint(after, <, before);
        g_assert_cmpuint(after, >=, before - 2 * 64 * KiB);
        bp.target_passed = false;
        fail_path = f->target;

        /* on-success, cancelled before it ends: untouched. */
        bp.bitmap_mode = BITMAP_SYNC_ON_SUCCESS;
        bp.target = NULL;
        j = start(f, &bp, false);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_string_truncate(f->events, 0);
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, after);
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));

        /* The retry copies everything since the last success, and clears it. */
        bp.target = NULL;
        j = start(f, &bp, true);
        g_assert_cmpuint(job_total_progress(j), ==, after);
        run_to_end(f, SUCCESS);
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);
}

/* QEMU's locks of a reader (qemu-io -r of a qcow2 image: "consistent read" held, "write" denied),
 * taken on a description of their own: while qemu-io itself opens an image its locks come and go
 * as it settles its permissions, these stay put. */
static int hold_reader_locks(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        for (int byte = 100; byte <= 201; byte += 101) {
                struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
                g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, 0);
        }
        return fd;
}

/* Someone holds the source at finalize (QEMU, reading it): the job fails at prepare rather than
 * succeed with a bitmap it could not clear, and the bitmap stays. */
static void test_locked_at_finalize(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, NULL);
        TestBackupParams bp = { .source = src, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_ON_SUCCESS,
                                .sync_bitmap = true };
        uint64_t before = bitmap_dirty(src, "b0");

        Job *j = start(f, &bp, false);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        int reader = hold_reader_locks(src);
        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        close(reader);
        if (!strstr(f->events->str, "Cannot write bitmap 'b0'"))
                g_error("events: %s", f->events->str);
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, before);
}

static Job *create_in(Fixture *f, JobTxn *txn, const char *id, const char *source, const char *target,
                      BitmapSyncMode mode) {
        TestBackupParams bp = { .source = source, .target = target, .source_format = IMAGE_FORMAT_QCOW2,
                                .bitmap = "b0", .bitmap_mode = mode, .sync_bitmap = true,
                                .chunk_size = 64 * KiB };
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        g_autofree char *error = NULL;
        Backup *b = NULL;
        Job *j = NULL;

        g_assert_cmpint(test_backup_open(&bp, &b, &error), ==, 0);
        p.id = id;
        p.driver = &backup_driver;
        p.driver_data = b;
        p.txn = txn;
        g_assert_cmpint(job_create(f->loop.registry, &p, &j, &error), ==, 0);
        job_progress_set_remaining(j, backup_size(b));
        return j;
}

/* A grouped transaction of two incrementals: bitmaps are cleared only when both commit; one
 * failing leaves both as they were, with on-success, and with always too, the targets being new
 * files that are removed (the member that copied everything included). */
static void test_transaction(Fixture *f, gconstpointer data) {
        g_autofree char *s1 = make_source_named(f, "s1.qcow2", NULL, NULL),
                         *s2 = make_source_named(f, "s2.qcow2", NULL, NULL);
        g_autofree char *t1 = g_build_filename(f->dir, "t1.qcow2", NULL), *t2 = g_build_filename(f->dir, "t2.qcow2", NULL);
        uint64_t before1 = bitmap_dirty(s1, "b0"), before2 = bitmap_dirty(s2, "b0");
        JobTxn *txn = NULL;
        Job *a, *b;

        static const BitmapSyncMode modes[] = { BITMAP_SYNC_ON_SUCCESS, BITMAP_SYNC_ALWAYS };
        for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
                BitmapSyncMode mode = modes[i];

                /* The second one's target fails at its third write. */
                g_assert_cmpint(job_txn_new(f->loop.registry, &txn), ==, 0);
                a = create_in(f, txn, "a", s1, t1, mode);
                b = create_in(f, txn, "b", s2, t2, mode);
                job_txn_unref(txn);
                fail_path = t2;
                atomic_store(&fail_after, 2);
                image_set_fault_hook(fail_target_writes);
                job_start(a);
                job_start(b);
                test_loop_run_until_empty(&f->loop);
                image_set_fault_hook(NULL);
                g_assert_false(g_file_test(t1, G_FILE_TEST_EXISTS));
                g_assert_false(g_file_test(t2, G_FILE_TEST_EXISTS));
                g_assert_cmpuint(bitmap_dirty(s1, "b0"), ==, before1);
                g_assert_cmpuint(bitmap_dirty(s2, "b0"), ==, before2);
        }

        /* Both succeed: both cleared. */
        g_assert_cmpint(job_txn_new(f->loop.registry, &txn), ==, 0);
        a = create_in(f, txn, "a", s1, t1, BITMAP_SYNC_ON_SUCCESS);
        b = create_in(f, txn, "b", s2, t2, BITMAP_SYNC_ON_SUCCESS);
        job_txn_unref(txn);
        job_start(a);
        job_start(b);
        test_loop_run_until_empty(&f->loop);
        g_assert_true(g_file_test(t1, G_FILE_TEST_EXISTS));
        g_assert_true(g_file_test(t2, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(bitmap_dirty(s1, "b0"), ==, 0);
        g_assert_cmpuint(bitmap_dirty(s2, "b0"), ==, 0);
}


/* ---- the whole cycle, QEMU writing between backups ------------------------------------------ */

static void assert_reads_as(const char *image, const char *raw) {
        g_autofree char *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img compare -U -F raw %s %s", image, raw) != 0)
                g_error("%s does not read as %s: %s%s", image, raw, out, err);
        g_free(oracle_run("qemu-img check -U %s", image));
}

/* Bytes the image itself allocates (qemu-img map: depth 0, data or zero clusters). */
static uint64_t own_bytes(const char *image) {
        return allocated_in(image, 0, SIZE);
}

static Job *backup_to(Fixture *f, const char *src, const char *target, bool incremental, const char *backing) {
        TestBackupParams bp = { .source = src, .target = target, .bitmap = "b0",
                                .bitmap_mode = BITMAP_SYNC_ON_SUCCESS, .sync_bitmap = incremental,
                                .target_format = IMAGE_FORMAT_QCOW2, .target_backing = backing,
                                .target_backing_format = backing ? IMAGE_FORMAT_QCOW2 : IMAGE_FORMAT_PROBE,
                                .chunk_size = 64 * KiB };
        return start(f, &bp, true);
}

static void test_cycle(Fixture *f, gconstpointer data) {
        g_autofree char *src = g_build_filename(f->dir, "disk.qcow2", NULL);
        g_autofree char *full = g_build_filename(f->dir, "full.qcow2", NULL);
        g_autofree char *inc1 = g_build_filename(f->dir, "inc1.qcow2", NULL);
        g_autofree char *inc2 = g_build_filename(f->dir, "inc2.qcow2", NULL);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 16M", src));
        g_free(oracle_run("qemu-img bitmap --add %s b0", src));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 10M' %s", src));

        /* Full backup, starting the chain: the bitmap is empty after it. */
        g_autofree char *t0 = snapshot(f, src, "t0.raw");
        backup_to(f, src, full, false, NULL);
        run_to_end(f, SUCCESS);
        assert_reads_as(full, t0);
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);

        /* QEMU writes (and records in b0); incremental 1 on top of the full backup, by a relative
         * name as QEMU would record it. */
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 1M 200k' -c 'write -z 4M 64k' "
                          "-c 'write -P 0x23 12M 1M' %s", src));
        uint64_t dirty1 = bitmap_dirty(src, "b0");
        g_assert_cmpuint(dirty1, ==, 4 * 64 * KiB + 64 * KiB + MiB);
        g_autofree char *t1 = snapshot(f, src, "t1.raw");
        Job *j = backup_to(f, src, inc1, true, "full.qcow2");
        g_assert_cmpuint(job_total_progress(j), ==, dirty1);
        run_to_end(f, SUCCESS);
        assert_reads_as(inc1, t1);
        g_assert_cmpuint(own_bytes(inc1), ==, dirty1);
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", inc1);
        g_assert_nonnull(strstr(info, "\"backing-filename\": \"full.qcow2\""));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);
        assert_reads_as(full, t0);

        /* More writes. A cancelled incremental and a failed one leave the bitmap as it was... */
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x33 1100k 8k' -c 'write -P 0x34 15M 512k' %s", src));
        uint64_t dirty2 = bitmap_dirty(src, "b0");
        g_autofree char *t2 = snapshot(f, src, "t2.raw");
        TestBackupParams bp = { .source = src, .target = inc2, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_ON_SUCCESS,
                                .sync_bitmap = true, .target_format = IMAGE_FORMAT_QCOW2, .target_backing = "inc1.qcow2",
                                .target_backing_format = IMAGE_FORMAT_QCOW2 };
        j = start(f, &bp, false);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_string_truncate(f->events, 0);
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, dirty2);

        fail_path = inc2;
        atomic_store(&fail_after, 1);
        image_set_fault_hook(fail_target_writes);
        backup_to(f, src, inc2, true, "inc1.qcow2");
        test_loop_run_until_empty(&f->loop);
        image_set_fault_hook(NULL);
        g_assert_nonnull(strstr(f->events->str, "aborting"));
        g_string_truncate(f->events, 0);
        g_assert_false(g_file_test(inc2, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, dirty2);

        /* ...and the retry copies everything since the last success. */
        j = backup_to(f, src, inc2, true, "inc1.qcow2");
        g_assert_cmpuint(job_total_progress(j), ==, dirty2);
        run_to_end(f, SUCCESS);
        assert_reads_as(inc2, t2);
        g_assert_cmpuint(own_bytes(inc2), ==, dirty2);
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);
        /* Each link of the chain still reads as the source did at its time. */
        assert_reads_as(inc1, t1);
        assert_reads_as(full, t0);
}

/* kill -9 of a process in the middle of an incremental backup: the source's bitmap is exactly as
 * it was (it is written only at commit), the source passes qemu-img check, and no target is
 * left. The backup runs in a child (this program, run again), throttled so that it is still
 * copying when it is killed. */
__attribute__((noreturn)) static void child_backup(const char *src, const char *target) {
        Fixture f = {};
        TestBackupParams bp = { .source = src, .target = target, .source_format = IMAGE_FORMAT_QCOW2, .bitmap = "b0",
                                .bitmap_mode = BITMAP_SYNC_ON_SUCCESS, .sync_bitmap = true,
                                .target_format = IMAGE_FORMAT_QCOW2, .chunk_size = 64 * KiB };

        driver_fixture_setup(&f, NULL);
        Job *j = driver_fixture_start_backup(&f, &bp, 256 * KiB, true);
        while (job_current_progress(j) == 0)
                test_loop_iterate(&f.loop);
        printf("copying %s\n", f.dir);
        fflush(stdout);
        for (;;)
                test_loop_iterate(&f.loop);
}

static const char *self;

static void test_kill(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, NULL), *out = NULL;
        g_autofree char *target = g_build_filename(f->dir, "inc.qcow2", NULL);
        g_autoptr(GError) error = NULL;
        uint64_t before = bitmap_dirty(src, "b0");
        g_autofree char *t = snapshot(f, src, "before.raw");

        GSubprocess *p = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, self, "--child-backup", src, target,
                                          NULL);
        g_assert_no_error(error);
        g_autoptr(GDataInputStream) in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(p));
        out = g_data_input_stream_read_line(in, NULL, NULL, &error);
        g_assert_no_error(error);
        g_assert_true(g_str_has_prefix(out, "copying /"));
        g_subprocess_force_exit(p);
        g_assert_true(g_subprocess_wait(p, NULL, NULL));
        g_assert_true(g_subprocess_get_if_signaled(p));
        g_object_unref(p);
        /* The child's own fixture directory (empty but for what its setup made). */
        g_free(oracle_run("rm -rf -- %s", out + strlen("copying ")));

        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, before);
        assert_reads_as(src, t);
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
}

/* A writer that slipped in after the copy, before the bitmap could be cleared (simulated: the
 * file's times change while the job waits in pending): the job fails, and the bitmap keeps
 * everything, with on-success and with always alike. */
static void test_changed_at_finalize(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, NULL);
        uint64_t before = bitmap_dirty(src, "b0");

        for (BitmapSyncMode mode = BITMAP_SYNC_ON_SUCCESS; mode <= BITMAP_SYNC_ALWAYS; mode += 2) {
                TestBackupParams bp = { .source = src, .bitmap = "b0", .bitmap_mode = mode, .sync_bitmap = true };
                Job *j = start(f, &bp, false);
                test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
                g_free(oracle_run("touch %s", src));
                g_assert_cmpint(job_finalize(j, NULL), ==, 0);
                test_loop_run_until_empty(&f->loop);
                if (!strstr(f->events->str, "was changed by another process at the end of the backup"))
                        g_error("events: %s", f->events->str);
                g_string_truncate(f->events, 0);
                g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
                g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, before);
        }
}

/* ---- a bitmap that cannot be cleared at the job's end ------------------------------------- */

static GMutex journal_lock;
static GString *journal;                /* entries, their fields one a line, each followed by an empty line */

static int capture_sendv(const struct iovec *iov, int n) {
        g_mutex_lock(&journal_lock);
        for (int i = 0; i < n; i++) {
                g_string_append_len(journal, iov[i].iov_base, (gssize) iov[i].iov_len);
                g_string_append_c(journal, '\n');
        }
        g_string_append_c(journal, '\n');
        g_mutex_unlock(&journal_lock);
        return 0;
}

/* The log goes to "the journal" as under systemd: standard error is the stream JOURNAL_STREAM
 * names (a file here), and log.c hands each entry, with its own fields, to capture_sendv().
 * log_open() is called while no job runs, as log.h asks. Returns the saved standard error. */
static int journal_begin(Fixture *f) {
        g_autofree char *path = g_build_filename(f->dir, "journal-stream", NULL), *stream = NULL;
        struct stat st;
        int fd, saved;

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        g_assert_cmpint(saved, >=, 0);
        g_assert_cmpint(dup2(fd, STDERR_FILENO), ==, STDERR_FILENO);
        close(fd);
        stream = g_strdup_printf("%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        g_assert_true(g_setenv("JOURNAL_STREAM", stream, TRUE));
        journal = g_string_new(NULL);
        log_open(capture_sendv);
        g_assert_true(log_to_journal());
        return saved;
}

static char *journal_end(int saved) {
        log_open(NULL);
        g_unsetenv("JOURNAL_STREAM");
        g_assert_cmpint(dup2(saved, STDERR_FILENO), ==, STDERR_FILENO);
        close(saved);
        return g_string_free(g_steal_pointer(&journal), FALSE);
}

/* The one entry of 'entries' with all of 'lines' (NULL-terminated) among its fields, or fail. */
static void assert_entry(const char *entries, const char *const *lines) {
        g_auto(GStrv) split = g_strsplit(entries, "\n\n", -1);
        unsigned found = 0;

        for (char **e = split; *e; e++) {
                bool all = true;
                for (const char *const *l = lines; *l && all; l++)
                        all = strstr(*e, *l) != NULL;
                found += all;
        }
        if (found != 1)
                g_error("%u entries with %s...: %s", found, lines[0], entries);
}

/* qemu-img compare of two qcow2 images, and check of the first. */
static void assert_same_as(const char *image, const char *other) {
        g_autofree char *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img compare -U %s %s", image, other) != 0)
                g_error("%s differs from %s: %s%s", image, other, out, err);
        g_free(oracle_run("qemu-img check -U %s", image));
}

static void assert_same_ranges(GArray *a, GArray *b) {
        g_assert_cmpuint(a->len, ==, b->len);
        for (guint i = 0; i < a->len; i++) {
                g_assert_cmpuint(g_array_index(a, OracleRange, i).start, ==, g_array_index(b, OracleRange, i).start);
                g_assert_cmpuint(g_array_index(a, OracleRange, i).length, ==, g_array_index(b, OracleRange, i).length);
        }
}

/* The file may not grow past its size now (RLIMIT_FSIZE, as a quota or a full disk would stop
 * it; SIGXFSZ ignored, so the write fails with EFBIG): a real write error, from the kernel.
 * Clearing a bitmap writes its new (empty) table and a new directory in clusters the file does
 * not have yet. Children would inherit it: lifted before the oracle runs again. */
static struct rlimit limit_growth(const char *path) {
        struct rlimit old, lim;
        struct stat st;

        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
        lim = (struct rlimit) { .rlim_cur = (rlim_t) st.st_size, .rlim_max = old.rlim_max };
        g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
        return old;
}

/* Clearing the bitmap at finalize fails once the source is open for writing (the file cannot
 * grow): as in QEMU the job still concludes without error, its target complete; the bitmap keeps
 * exactly its bits, the source is consistent, the job's journal entry says why; the next
 * incremental copies those bits again and clears them. With on-success (sync=incremental) and
 * always alike. */
static void test_clear_fails(Fixture *f, gconstpointer data) {
        g_autofree char *made = make_source_named(f, "made.qcow2", NULL, "base.raw");
        g_autofree char *src = g_build_filename(f->dir, "src.qcow2", NULL);
        g_autofree char *inc = g_build_filename(f->dir, "inc.qcow2", NULL);

        /* The same image with no free cluster inside it (QEMU, storing b0 anew at each close,
         * freed its old clusters: clearing would reuse those and not need to grow the file). */
        g_free(oracle_run("qemu-img convert --bitmaps -q -O qcow2 %s %s", made, src));
        g_autoptr(GArray) before = oracle_dirty(src, "b0", f->dir);
        uint64_t dirty = bitmap_dirty(src, "b0");

        g_assert_cmpuint(before->len, >, 0);
        g_assert_cmpuint(dirty, ==, (3 + 1 + 2 + 16) * 64 * KiB);        /* see test_sync_bitmap */

        for (BitmapSyncMode mode = BITMAP_SYNC_ON_SUCCESS; mode <= BITMAP_SYNC_ALWAYS; mode += 2) {
                TestBackupParams bp = { .source = src, .target = inc, .bitmap = "b0", .bitmap_mode = mode,
                                        .sync_bitmap = true, .target_format = IMAGE_FORMAT_QCOW2,
                                        .target_backing = "base.raw", .target_backing_format = IMAGE_FORMAT_RAW,
                                        .chunk_size = 64 * KiB };
                int saved = journal_begin(f);
                Job *j = start(f, &bp, false);
                g_autofree char *id = g_strdup(job_id(j));
                g_assert_cmpuint(job_total_progress(j), ==, dirty);
                test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);

                void (*xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
                g_assert_true(xfsz != SIG_ERR);
                struct rlimit old = limit_growth(src);
                g_assert_cmpint(job_finalize(j, NULL), ==, 0);
                test_loop_run_until_empty(&f->loop);
                g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
                g_assert_true(signal(SIGXFSZ, xfsz) != SIG_ERR);
                g_autofree char *entries = journal_end(saved);

                g_assert_cmpstr(f->events->str, ==, SUCCESS);
                g_string_truncate(f->events, 0);
                g_autofree char *field_job = g_strdup_printf("BLOCKJOBD_JOB=%s", id);
                g_autofree char *message = g_strdup_printf("MESSAGE=Job '%s': could not clear bitmap 'b0' of '%s'", id, src);
                assert_entry(entries, (const char *const[]) { message, "PRIORITY=4", field_job, "BLOCKJOBD_BITMAP=b0",
                                                              "which keeps its bits", "File too large", NULL });

                /* The target reads as the source; the bitmap is as it was, for QEMU (qemu-nbd) and
                 * for us; the source is consistent (qemu-img check, and not in-use: bitmap_dirty). */
                assert_same_as(inc, src);
                g_autoptr(GArray) after = oracle_dirty(src, "b0", f->dir);
                assert_same_ranges(after, before);
                g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, dirty);
                g_assert_cmpint(g_unlink(inc), ==, 0);
        }

        /* Without the fault, the next incremental copies those bits again, and clears them. */
        TestBackupParams bp = { .source = src, .target = inc, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_ON_SUCCESS,
                                .sync_bitmap = true, .target_format = IMAGE_FORMAT_QCOW2, .target_backing = "base.raw",
                                .target_backing_format = IMAGE_FORMAT_RAW, .chunk_size = 64 * KiB };
        Job *j = start(f, &bp, true);
        g_assert_cmpuint(job_total_progress(j), ==, dirty);
        run_to_end(f, SUCCESS);
        assert_same_as(inc, src);
        g_assert_cmpuint(own_bytes(inc), ==, dirty);    /* the zeroed range too: the backing file has data there */
        g_autoptr(GArray) cleared = oracle_dirty(src, "b0", f->dir);
        g_assert_cmpuint(cleared->len, ==, 0);
        g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);
}

static void assert_open_fails(const TestBackupParams *bp, const char *expected) {
        g_autofree char *error = NULL;
        Backup *b = NULL;

        g_assert_cmpint(test_backup_open(bp, &b, &error), <, 0);
        g_assert_null(b);
        if (!strstr(error, expected))
                g_error("\"%s\" does not say \"%s\"", error, expected);
}

/* QEMU's texts for a bitmap that cannot be used. */
static void test_refusals(Fixture *f, gconstpointer data) {
        g_autofree char *src = make_source(f, NULL), *raw = g_build_filename(f->dir, "src.raw", NULL);
        TestBackupParams bp = { .source = src, .target = f->target, .source_format = IMAGE_FORMAT_QCOW2,
                                .bitmap = "nope", .bitmap_mode = BITMAP_SYNC_ON_SUCCESS, .sync_bitmap = true };

        assert_open_fails(&bp, "Bitmap 'nope' could not be found");
        /* Writing it takes a descriptor the caller could open for writing. */
        bp.bitmap = "b0";
        bp.source_read_only = true;
        assert_open_fails(&bp, "Bitmap 'b0' is readonly and cannot be modified");
        bp.source_read_only = false;
        /* A QEMU that had it open for writing and died: in_use, inconsistent. */
        g_assert_cmpint(oracle_try(NULL, NULL, "qemu-io -f qcow2 -c 'sigraise 9' %s", src), !=, 0);
        assert_open_fails(&bp, "Bitmap 'b0' is inconsistent and cannot be used");
        /* Raw images have no bitmaps. */
        make_data_file(raw, MiB);
        bp.source = raw;
        bp.source_format = IMAGE_FORMAT_RAW;
        assert_open_fails(&bp, "Bitmap 'b0' could not be found");
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
}

#define BITMAP_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        if (argc == 4 && g_str_equal(argv[1], "--child-backup"))
                child_backup(argv[2], argv[3]);
        self = argv[0];
        g_test_init(&argc, &argv, NULL);
        if (!oracle_available())
                return 77;
        BITMAP_TEST("/backup-bitmap/sync-bitmap", test_sync_bitmap);
        BITMAP_TEST("/backup-bitmap/never-coarse", test_never_coarse);
        BITMAP_TEST("/backup-bitmap/full-clears", test_full_clears);
        BITMAP_TEST("/backup-bitmap/failure-modes", test_failure_modes);
        BITMAP_TEST("/backup-bitmap/locked-at-finalize", test_locked_at_finalize);
        BITMAP_TEST("/backup-bitmap/changed-at-finalize", test_changed_at_finalize);
        BITMAP_TEST("/backup-bitmap/clear-fails", test_clear_fails);
        BITMAP_TEST("/backup-bitmap/transaction", test_transaction);
        BITMAP_TEST("/backup-bitmap/cycle", test_cycle);
        BITMAP_TEST("/backup-bitmap/kill", test_kill);
        BITMAP_TEST("/backup-bitmap/refusals", test_refusals);
        return g_test_run();
}
