/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Each way copy-io moves data, through the backup driver on the real executor, judged by qemu-img
 * (the copy reads as the source does) and by the allocation of the target (holes stay holes,
 * zeroes are not written): copy_file_range() on ext4, FICLONERANGE on a loop-mounted XFS with
 * reflink, the fallback to reading and writing on a file system the kernel cannot copy across,
 * zero detection into raw and qcow2 targets (unallocated clusters, and zero clusters where a
 * backing file would show through), the rate limit and pause during offload, a kill -9 during an
 * offloaded copy, and a job's memory without a copy buffer. */

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <malloc.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "copy-io.h"
#include "driver-fixture.h"
#include "driver-open.h"
#include "event-loop.h"
#include "file-util.h"
#include "qemu-oracle.h"

/* Runs the backup to pending, returns what copy-io did, and publishes the target. */
static CopyIoStats run_backup(Fixture *f, const TestBackupParams *bp) {
        Job *j = driver_fixture_start_backup(f, bp, 0, false);
        CopyIoStats s;

        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        s = *backup_copy_stats(job_driver_data(j));
        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running waiting pending concluded null ");
        g_test_message("cloned %" G_GUINT64_FORMAT " copy_file_range %" G_GUINT64_FORMAT " read %" G_GUINT64_FORMAT
                       " written %" G_GUINT64_FORMAT " zeroes skipped %" G_GUINT64_FORMAT " zeroes written %" G_GUINT64_FORMAT,
                       s.cloned, s.kernel_copied, s.read, s.written, s.zero_skipped, s.zero_written);
        return s;
}

static void compare(const char *a, const char *b) {
        g_free(oracle_run("qemu-img compare %s %s", a, b));
}

static uint64_t allocated(const char *path) {
        struct stat st;
        g_assert_cmpint(stat(path, &st), ==, 0);
        return (uint64_t) st.st_blocks * 512;
}

static const Extent layout[] = {
        { 0, 1 * MiB },
        { 3 * MiB, 64 * KiB },
        { 3 * MiB + 192 * KiB, 1 * MiB + 512 * KiB },
        { 9 * MiB, 4 * KiB },
        { 12 * MiB, 2 * MiB },
        { 30 * MiB, 20 * MiB },
};
#define LAYOUT_SIZE (64 * MiB)
#define LAYOUT_DATA (1 * MiB + 64 * KiB + 1 * MiB + 512 * KiB + 4 * KiB + 2 * MiB + 20 * MiB)

static bool need_oracle(void) {
        if (oracle_available())
                return true;
        g_test_skip("qemu-img is not installed");
        return false;
}

/* ---- copy_file_range on ext4 (or whatever the temporary directory is on) -------------------- */

static void test_copy_range(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target, .chunk_size = 1 * MiB };
        CopyIoStats s;

        if (!need_oracle())
                return;
        make_sparse_file(f->source, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout), 1);
        s = run_backup(f, &bp);
        if (s.kernel_copied == 0 && s.cloned == 0) {
                g_test_skip("the temporary directory's file system copies no ranges in the kernel");
                return;
        }
        /* All of the data went through the kernel, none through our buffer. */
        g_assert_cmpuint(s.kernel_copied + s.cloned, ==, LAYOUT_DATA);
        g_assert_cmpuint(s.read, ==, 0);
        compare(f->source, f->target);
        assert_holes(f->target, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout));
        /* As much as the source, give or take the file system's own blocks (an extent tree). */
        g_assert_cmpuint(allocated(f->target), <=, allocated(f->source) + 64 * KiB);
}

/* ---- FICLONERANGE on XFS with reflink --------------------------------------------------------- */

typedef struct XfsMount {
        char *image;
        char *loop;
        char *dir;
        bool mounted;
} XfsMount;

static bool run_quiet(const char *cmd) {
        g_autofree char *out = NULL, *err = NULL;
        int status = 0;
        return g_spawn_command_line_sync(cmd, &out, &err, &status, NULL) && g_spawn_check_wait_status(status, NULL);
}

static void xfs_unmount(XfsMount *m) {
        if (m->mounted)
                g_assert_cmpint(umount2(m->dir, 0), ==, 0);
        if (m->loop) {
                g_autofree char *cmd = g_strdup_printf("losetup --detach %s", m->loop);
                g_assert_true(run_quiet(cmd));
        }
        if (m->dir)
                (void) g_rmdir(m->dir);
        if (m->image)
                (void) g_unlink(m->image);
        g_free(m->image);
        g_free(m->loop);
        g_free(m->dir);
        *m = (XfsMount) {};
}

/* A 512 MiB XFS with reflink on a loop device, mounted under the fixture's directory. False (and
 * the test skipped, with the reason) where that cannot be had. */
static bool xfs_mount(Fixture *f, XfsMount *m) {
        g_autofree char *cmd = NULL, *out = NULL, *err = NULL, *mkfs = g_find_program_in_path("mkfs.xfs");
        int status = 0, fd;

        if (geteuid() != 0) {
                g_test_skip("loop devices and mounts need root");
                return false;
        }
        if (!mkfs && access("/sbin/mkfs.xfs", X_OK) < 0) {
                g_test_skip("mkfs.xfs is not installed (xfsprogs)");
                return false;
        }
        m->image = g_build_filename(f->dir, "xfs.img", NULL);
        m->dir = g_build_filename(f->dir, "xfs", NULL);
        fd = open(m->image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, 512 * MiB), ==, 0);
        close(fd);
        cmd = g_strdup_printf("mkfs.xfs -q -m reflink=1 %s", m->image);
        if (!run_quiet(cmd)) {
                g_test_skip("mkfs.xfs -m reflink=1 failed");
                return false;
        }
        g_clear_pointer(&cmd, g_free);
        cmd = g_strdup_printf("losetup --find --show %s", m->image);
        if (!g_spawn_command_line_sync(cmd, &out, &err, &status, NULL) || status != 0 || !out || !*out) {
                g_test_skip("no loop device available here");
                return false;
        }
        m->loop = g_strdup(g_strstrip(out));
        g_assert_cmpint(g_mkdir(m->dir, 0700), ==, 0);
        if (mount(m->loop, m->dir, "xfs", 0, NULL) < 0) {
                g_test_skip("could not mount the XFS (no xfs module?)");
                return false;
        }
        m->mounted = true;
        return true;
}

/* Every data extent of 'path' shares its blocks with another file. */
static void assert_all_shared(const char *path) {
        g_autofree struct fiemap *fm = g_malloc0(sizeof(struct fiemap) + 256 * sizeof(struct fiemap_extent));
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        fm->fm_length = FIEMAP_MAX_OFFSET;
        fm->fm_flags = FIEMAP_FLAG_SYNC;
        fm->fm_extent_count = 256;
        g_assert_cmpint(ioctl(fd, FS_IOC_FIEMAP, fm), ==, 0);
        close(fd);
        g_assert_cmpuint(fm->fm_mapped_extents, >, 0);
        for (unsigned i = 0; i < fm->fm_mapped_extents; i++)
                if (!(fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_SHARED))
                        g_error("extent %u of '%s' at %llu (%llu bytes) is not shared", i, path,
                                (unsigned long long) fm->fm_extents[i].fe_logical,
                                (unsigned long long) fm->fm_extents[i].fe_length);
}

static void test_clone(Fixture *f, gconstpointer data) {
        XfsMount m = {};

        if (need_oracle() && xfs_mount(f, &m)) {
                g_autofree char *source = g_build_filename(m.dir, "source.img", NULL);
                g_autofree char *target = g_build_filename(m.dir, "target.img", NULL);
                TestBackupParams bp = { .source = source, .target = target, .chunk_size = 1 * MiB };
                CopyIoStats s;

                make_sparse_file(source, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout), 2);
                s = run_backup(f, &bp);
                /* Everything but the one 4 KiB extent... which is a whole block too: all cloned. */
                g_assert_cmpuint(s.cloned, ==, LAYOUT_DATA);
                g_assert_cmpuint(s.read + s.kernel_copied, ==, 0);
                compare(source, target);
                assert_holes(target, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout));
                assert_all_shared(target);

                /* An unaligned size: the tail that is no whole block goes the next way. */
                const Extent odd[] = { { 0, 100 * KiB }, { 1 * MiB, 1 * MiB - 17 } };
                g_assert_cmpint(g_unlink(source), ==, 0);
                g_assert_cmpint(g_unlink(target), ==, 0);
                make_sparse_file(source, 2 * MiB - 17, odd, G_N_ELEMENTS(odd), 3);
                g_string_truncate(f->events, 0);
                s = run_backup(f, &bp);
                g_assert_cmpuint(s.cloned, >, 0);
                g_assert_cmpuint(s.cloned + s.kernel_copied + s.read, ==, 100 * KiB + 1 * MiB - 17);
                compare(source, target);
        }
        xfs_unmount(&m);
}

/* ---- the fallback ----------------------------------------------------------------------------- */

static void test_fallback_across_file_systems(Fixture *f, gconstpointer data) {
        g_autofree char *dir = g_build_filename(f->dir, "tmpfs", NULL);
        g_autofree char *target = g_build_filename(dir, "target.img", NULL);
        TestBackupParams bp = { .source = f->source, .target = target, .chunk_size = 1 * MiB };
        CopyIoStats s;

        if (!need_oracle())
                return;
        if (geteuid() != 0) {
                g_test_skip("mounting a tmpfs needs root");
                return;
        }
        g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
        g_assert_cmpint(mount("tmpfs", dir, "tmpfs", 0, "size=128m"), ==, 0);

        make_sparse_file(f->source, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout), 4);
        s = run_backup(f, &bp);
        /* The kernel refuses to copy from ext4 to tmpfs (EXDEV): read and written instead. */
        g_assert_cmpuint(s.cloned + s.kernel_copied, ==, 0);
        g_assert_cmpuint(s.read, ==, LAYOUT_DATA);
        g_assert_cmpuint(s.written, ==, LAYOUT_DATA);
        compare(f->source, target);
        assert_holes(target, LAYOUT_SIZE, layout, G_N_ELEMENTS(layout));

        g_assert_cmpint(umount2(dir, 0), ==, 0);
}

/* ---- zero detection ----------------------------------------------------------------------------- */

/* A raw file whose data extents hold written zeroes: half of each 1 MiB chunk, 4 KiB blocks
 * scattered, a whole chunk. qemu-img convert -S 0 keeps them as data in a qcow2 source. */
static void make_zero_data_source(Fixture *f, const char *raw, const char *qcow2) {
        g_autofree uint8_t *buf = g_malloc(16 * MiB);
        g_autoptr(GRand) rand = g_rand_new_with_seed(9);
        int fd;

        for (size_t i = 0; i < 16 * MiB; i += 4)
                *(guint32 *) (buf + i) = g_rand_int(rand);
        memset(buf + 0, 0, 512 * KiB);                  /* half of the first chunk */
        for (size_t i = 2 * MiB; i < 3 * MiB; i += 64 * KiB)
                memset(buf + i, 0, 4 * KiB);            /* scattered blocks */
        memset(buf + 5 * MiB, 0, 2 * MiB);              /* whole chunks */
        fd = open(raw, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(write(fd, buf, 16 * MiB), ==, 16 * MiB);
        close(fd);
        g_free(oracle_run("qemu-img convert -S 0 -f raw -O qcow2 %s %s", raw, qcow2));
}

#define ZERO_DATA_ZEROES (512 * KiB + 16 * 4 * KiB + 2 * MiB)

static void test_zero_detection_raw(Fixture *f, gconstpointer data) {
        g_autofree char *raw = g_build_filename(f->dir, "zeroes.raw", NULL);
        g_autofree char *qcow2 = g_build_filename(f->dir, "zeroes.qcow2", NULL);
        TestBackupParams bp = { .source = qcow2, .source_format = IMAGE_FORMAT_QCOW2, .target = f->target,
                                .target_format = IMAGE_FORMAT_RAW, .chunk_size = 1 * MiB };
        CopyIoStats s;

        if (!need_oracle())
                return;
        make_zero_data_source(f, raw, qcow2);
        s = run_backup(f, &bp);
        g_assert_cmpuint(s.read, ==, 16 * MiB);
        g_assert_cmpuint(s.zero_skipped, ==, ZERO_DATA_ZEROES);
        g_assert_cmpuint(s.written, ==, 16 * MiB - ZERO_DATA_ZEROES);
        compare(raw, f->target);
        /* The zeroes are holes: the target holds the data only. */
        g_assert_cmpuint(allocated(f->target), >=, 16 * MiB - ZERO_DATA_ZEROES);
        g_assert_cmpuint(allocated(f->target), <=, 16 * MiB - ZERO_DATA_ZEROES + 64 * KiB);
}

static void test_zero_detection_qcow2(Fixture *f, gconstpointer data) {
        g_autofree char *raw = g_build_filename(f->dir, "zeroes.raw", NULL);
        g_autofree char *qcow2 = g_build_filename(f->dir, "zeroes.qcow2", NULL);
        TestBackupParams bp = { .source = qcow2, .source_format = IMAGE_FORMAT_QCOW2, .target = f->target,
                                .target_format = IMAGE_FORMAT_QCOW2, .chunk_size = 1 * MiB };
        uint64_t data_bytes = 0, unallocated = 0;
        g_autoptr(GArray) map = NULL;
        CopyIoStats s;

        if (!need_oracle())
                return;
        make_zero_data_source(f, raw, qcow2);
        s = run_backup(f, &bp);
        compare(qcow2, f->target);
        /* 64 KiB clusters: only whole clusters of zeroes are found (the 4 KiB blocks are not). */
        g_assert_cmpuint(s.zero_skipped, ==, 512 * KiB + 2 * MiB);

        map = oracle_map(f->target);
        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (e->data)
                        data_bytes += e->length;
                if (!e->present)
                        unallocated += e->length;
        }
        g_assert_cmpuint(unallocated, ==, 512 * KiB + 2 * MiB);
        g_assert_cmpuint(data_bytes, ==, 16 * MiB - (512 * KiB + 2 * MiB));
}

/* Bytes of [start, end) that the image leaves unallocated. */
static uint64_t unallocated_in(GArray *map, uint64_t start, uint64_t end) {
        uint64_t n = 0;

        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                uint64_t a = MAX(e->start, start), b = MIN(e->start + e->length, end);
                if (!e->present && a < b)
                        n += b - a;
        }
        return n;
}

/* Reading and writing moves a chunk in pieces (COPY_IO_PIECE) of whole target clusters: data
 * extents that start and end off cluster and piece boundaries, zeroes across a piece's edge,
 * copied with the default chunk into a qcow2 image, read as the source does, and the zeroes
 * found (whole clusters only) are left unallocated. */
static void test_pieces_qcow2(Fixture *f, gconstpointer data) {
        static const Extent extents[] = {
                { 4 * KiB, 3 * MiB },                           /* off a cluster boundary */
                { 5 * MiB + 68 * KiB, 9 * MiB + 4 * KiB },      /* across chunks, ending off one */
                { 20 * MiB, 64 * KiB },
        };
        TestBackupParams bp = { .source = f->source, .target = f->target, .target_format = IMAGE_FORMAT_QCOW2 };
        uint64_t data_len = 3 * MiB + 9 * MiB + 4 * KiB + 64 * KiB;
        g_autoptr(GArray) map = NULL;
        uint8_t zeroes[128 * KiB] = {};
        CopyIoStats s;

        if (!need_oracle())
                return;
        make_sparse_file(f->source, 24 * MiB, extents, G_N_ELEMENTS(extents), 3);
        /* Zeroes written inside the data: two whole clusters, one each side of the first
         * piece's end in the second extent (its start plus a piece, down to a cluster:
         * 5 MiB + 576 KiB); a whole cluster; a cluster's worth off cluster boundaries, which
         * is no granule of zeroes. */
        write_at(f->source, 5 * MiB + 512 * KiB, zeroes, 128 * KiB);
        write_at(f->source, 8 * MiB, zeroes, 64 * KiB);
        write_at(f->source, 1 * MiB + 4 * KiB, zeroes, 64 * KiB);
        s = run_backup(f, &bp);
        g_assert_cmpuint(s.read, ==, data_len);
        compare(f->source, f->target);

        g_assert_cmpuint(s.zero_skipped, ==, 3 * 64 * KiB);
        g_assert_cmpuint(s.written, ==, data_len - 3 * 64 * KiB);
        map = oracle_map(f->target);
        g_assert_cmpuint(unallocated_in(map, 5 * MiB + 512 * KiB, 5 * MiB + 640 * KiB), ==, 128 * KiB);
        g_assert_cmpuint(unallocated_in(map, 8 * MiB, 8 * MiB + 64 * KiB), ==, 64 * KiB);
        g_assert_cmpuint(unallocated_in(map, 0, 3 * MiB + 4 * KiB), ==, 0);
}

/* sync=top over a backing file: a cluster of the top that holds zeroes must stay zeroes in the
 * copy, which has the same backing file: a zero cluster, not an unallocated one. */
static void test_zero_clusters_over_backing(Fixture *f, gconstpointer data) {
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        g_autofree char *top = g_build_filename(f->dir, "top.qcow2", NULL);
        TestBackupParams bp = { .source = top, .source_format = IMAGE_FORMAT_QCOW2, .target = f->target,
                                .target_format = IMAGE_FORMAT_QCOW2, .sync_top = true, .chunk_size = 1 * MiB };
        g_autoptr(GArray) map = NULL;
        uint64_t zero_clusters = 0;
        CopyIoStats s;

        if (!need_oracle())
                return;
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c \"write -P 0x5a 0 4M\" %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", top));
        /* Data clusters of zeroes (written as data, not as zero clusters), and real data. */
        g_free(oracle_run("qemu-io -f qcow2 -c \"write -P 0 0 256k\" -c \"write -P 0x11 1M 64k\" %s", top));

        s = run_backup(f, &bp);
        g_assert_cmpuint(s.zero_written, ==, 256 * KiB);
        g_assert_cmpuint(s.zero_skipped, ==, 0);
        compare(top, f->target);

        map = oracle_map(f->target);
        for (guint i = 0; i < map->len; i++) {
                OracleExtent *e = &g_array_index(map, OracleExtent, i);
                if (e->depth == 0 && e->present && e->zero && !e->data)
                        zero_clusters += e->length;
        }
        g_assert_cmpuint(zero_clusters, ==, 256 * KiB);
}

/* ---- pause, rate limit, kill -9, memory ------------------------------------------------------- */

static void test_rate_limit_and_pause_during_offload(Fixture *f, gconstpointer data) {
        const uint64_t speed = 16 * MiB, quota = speed / 10, size = 8 * MiB;
        TestBackupParams bp = { .source = f->source, .target = f->target };
        Backup *b;
        Job *j;

        make_data_file(f->source, size);
        int64_t start = g_get_monotonic_time();
        j = driver_fixture_start_backup(f, &bp, speed, false);
        b = job_driver_data(j);
        while (job_current_progress(j) < 2 * MiB)
                test_loop_iterate(&f->loop);

        /* Paused in the middle of an offloaded copy: no call at all while paused. */
        g_assert_cmpint(job_user_pause(j, NULL), ==, 0);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PAUSED);
        uint64_t calls = backup_io_calls(b), progress = job_current_progress(j);
        int64_t paused = g_get_monotonic_time();
        test_loop_run_for(&f->loop, 200 * 1000);
        g_assert_cmpuint(backup_io_calls(b), ==, calls);
        g_assert_cmpuint(job_current_progress(j), ==, progress);
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        int64_t pause_us = g_get_monotonic_time() - paused;

        test_loop_run_until_status(&f->loop, j, JOB_STATUS_PENDING);
        const CopyIoStats *s = backup_copy_stats(b);
        if (s->kernel_copied + s->cloned == 0)
                g_test_message("no offload on this file system: the limit was checked on reads and writes");
        else
                g_assert_cmpuint(s->read, ==, 0);

        /* Never ahead of the rate by more than a slice's quota (the pause counted as time). */
        for (guint i = 0; i < f->samples->len; i++) {
                ProgressSample p = g_array_index(f->samples, ProgressSample, i);
                uint64_t allowed = (uint64_t) (p.usec - start) * speed / G_USEC_PER_SEC + quota;
                if (p.bytes > allowed)
                        g_error("after %" G_GINT64_FORMAT " µs: %" G_GUINT64_FORMAT " bytes, the limit allows %" G_GUINT64_FORMAT,
                                p.usec - start, p.bytes, allowed);
        }
        g_assert_cmpint(g_get_monotonic_time() - start, >=, (int64_t) (size * G_USEC_PER_SEC / speed) - pause_us / 2 - 100000);
        g_assert_cmpint(job_finalize(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        assert_same_content(f->source, f->target);
}

/* The child: a backup, throttled so that it lasts, until it is killed. */
G_GNUC_NORETURN static void backup_until_killed(const char *source, const char *target) {
        TestBackupParams bp = { .source = source, .target = target };
        g_autofree char *error = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        TestLoop loop;
        Backup *b = NULL;
        Job *j = NULL;

        test_loop_init(&loop, 2, NULL, NULL);
        if (test_backup_open(&bp, &b, &error) < 0) {
                g_printerr("child: %s\n", error);
                _exit(2);
        }
        p.id = "k";
        p.driver = &backup_driver;
        p.driver_data = b;
        p.speed = 32 * MiB;
        if (job_create(loop.registry, &p, &j, &error) < 0)
                _exit(3);
        job_start(j);
        for (;;)
                test_loop_iterate(&loop);
}

static void test_kill_during_offload(Fixture *f, gconstpointer data) {
        for (int round = 0; round < 3; round++) {
                int status;
                pid_t pid;

                make_data_file(f->source, 64 * MiB);
                pid = fork();
                g_assert_cmpint(pid, >=, 0);
                if (pid == 0)
                        backup_until_killed(f->source, f->target);
                g_usleep((100 + 300 * round) * 1000);
                g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
                g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
                g_assert_true(WIFSIGNALED(status));

                /* The target was never published, and its unnamed file went with the process. */
                g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
                assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
        }
}

static void test_no_buffer_per_job(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target, .chunk_size = BACKUP_CHUNK_MAX };
        g_autofree char *error = NULL;
        Backup *b = NULL;
        struct mallinfo2 before, after;

        make_data_file(f->source, 1 * MiB);
        before = mallinfo2();
        g_assert_cmpint(test_backup_open(&bp, &b, &error), ==, 0);
        after = mallinfo2();
        /* A 64 MiB chunk, and the job took its structs and images only. */
        g_assert_cmpuint(after.uordblks + after.hblkhd - before.uordblks - before.hblkhd, <, 64 * KiB);
        uint64_t m = backup_memory(b);
        backup_free(b);
        bp.chunk_size = 4 * KiB;
        g_assert_cmpint(test_backup_open(&bp, &b, &error), ==, 0);
        g_assert_cmpuint(backup_memory(b), ==, m);
        backup_free(b);

        /* The buffer is the thread's: it grows to the chunk asked, and goes when asked to. */
        g_assert_nonnull(copy_io_buffer(1 * MiB));
        g_assert_cmpuint(copy_io_buffer_size(), ==, 1 * MiB);
        g_assert_nonnull(copy_io_buffer(4 * KiB));
        g_assert_cmpuint(copy_io_buffer_size(), ==, 1 * MiB);
        copy_io_buffer_release();
        g_assert_cmpuint(copy_io_buffer_size(), ==, 0);
}

static void test_is_zero(void) {
        g_autofree uint8_t *buf = g_malloc0(8192 + 64);

        for (size_t off = 0; off < 9; off++)
                for (size_t n = 0; n < 300; n += 7) {
                        g_assert_true(copy_io_is_zero(buf + off, n));
                        for (size_t i = 0; i < n; i += 13) {
                                buf[off + i] = 1;
                                g_assert_false(copy_io_is_zero(buf + off, n));
                                buf[off + i] = 0;
                        }
                        if (n > 0) {
                                buf[off + n - 1] = 0x80;
                                g_assert_false(copy_io_is_zero(buf + off, n));
                                buf[off + n - 1] = 0;
                        }
                        buf[off + n] = 1;       /* just past the end: not looked at */
                        g_assert_true(copy_io_is_zero(buf + off, n));
                        buf[off + n] = 0;
                }
        g_assert_true(copy_io_is_zero(buf, 8192));
        buf[8191] = 1;
        g_assert_false(copy_io_is_zero(buf, 8192));
}

#define OFFLOAD_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/copy-io/is-zero", test_is_zero);
        OFFLOAD_TEST("/backup-offload/copy-range", test_copy_range);
        OFFLOAD_TEST("/backup-offload/clone-xfs", test_clone);
        OFFLOAD_TEST("/backup-offload/fallback-across-file-systems", test_fallback_across_file_systems);
        OFFLOAD_TEST("/backup-offload/zero-detection-raw", test_zero_detection_raw);
        OFFLOAD_TEST("/backup-offload/zero-detection-qcow2", test_zero_detection_qcow2);
        OFFLOAD_TEST("/backup-offload/pieces-qcow2", test_pieces_qcow2);
        OFFLOAD_TEST("/backup-offload/zero-clusters-over-backing", test_zero_clusters_over_backing);
        OFFLOAD_TEST("/backup-offload/rate-limit-and-pause", test_rate_limit_and_pause_during_offload);
        OFFLOAD_TEST("/backup-offload/kill-9", test_kill_during_offload);
        OFFLOAD_TEST("/backup-offload/no-buffer-per-job", test_no_buffer_per_job);
        return g_test_run();
}
