/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Backup and mirror after a restart of the daemon (issue 15). A job's first life runs part of the
 * copy into its target under the hidden name the daemon gives it, takes a checkpoint, and then
 * ends as the daemon would: stopping (a checkpoint_only step, and the target kept), or killed
 * (more steps past the checkpoint, unflushed, then SIGKILL in a child process: exactly what kill -9
 * leaves, the page cache included). Its second life is a new driver built from the same request
 * with DriverResume {true, checkpoint} and the hidden file reopened as the opener hands it over;
 * it finishes on the real core (prepare, commit: published under the final name). qemu-img is the
 * judge: the result compares equal to the source (or to an uninterrupted run), passes qemu-img
 * check, and the second life copied only what was left. */

#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver-fixture.h"
#include "driver-open.h"
#include "file-util.h"
#include "image-fault.h"
#include "qemu-oracle.h"

#define HIDDEN ".target.img.blockjobd-0-b"
#define STEP_BYTES MiB

/* What a step of the first life may copy at most (JobStepInput.max_bytes, as the rate limit sets
 * it): so that it stops where the test wants it to. */
static uint64_t step_bytes = STEP_BYTES;

typedef enum End {
        END_STOP,                       /* the daemon stops: checkpoint_only, target kept */
        END_KILL,                       /* kill -9 some steps after the checkpoint */
} End;

static const char *const end_names[] = { "stop", "kill" };

/* ---- a job's first life ----------------------------------------------------------------------- */

typedef struct Life {
        bool mirror;
        void *driver;                   /* Backup or Mirror */
} Life;

static const JobDriver *life_driver(const Life *l) {
        return l->mirror ? &mirror_driver : &backup_driver;
}

static TargetFile *life_target(const Life *l) {
        return l->mirror ? mirror_target_file(l->driver) : backup_target_file(l->driver);
}

static uint64_t life_size(const Life *l) {
        return l->mirror ? mirror_size(l->driver) : backup_size(l->driver);
}

static void life_free(Life *l) {
        if (l->mirror)
                mirror_free(l->driver);
        else
                backup_free(l->driver);
        l->driver = NULL;
}

/* A step called as the core calls it, on a job that must not fail. */
static void step_ok(const Life *l, const JobStepInput *in, JobStepResult *out) {
        *out = (JobStepResult) {};
        life_driver(l)->step(NULL, l->driver, in, out);
        if (out->io_error.set || out->ret < 0)
                g_error("step failed: %s", out->error ?: out->io_error.message ?: "?");
}

/* Steps until 'until' of the job's bytes are done (as progress counts them), or (if it may) the
 * job finishes; returns them. */
static uint64_t run_steps(const Life *l, uint64_t done, uint64_t until, bool may_finish) {
        JobStepInput in = { .max_bytes = step_bytes };
        JobStepResult out;

        while (done < until) {
                step_ok(l, &in, &out);
                done += out.progress;
                if (may_finish && out.finished) {
                        /* The finishing step keeps the rule: its end is durable, and says so. */
                        g_assert_true(out.checkpoint == !l->mirror);
                        break;
                }
                g_assert_false(out.finished);
                g_assert_false(out.checkpoint);
        }
        return done;
}

/* The first life, up to 'at' (a fraction of the job's bytes), then the checkpoint, then its end;
 * a kill comes after 'extra' more. Returns the checkpoint (for a mirror: 0, it keeps none). */
static uint64_t first_life_here(Life *l, End end, double at, double extra, int report_fd) {
        uint64_t size = life_size(l), done, checkpoint = 0;
        g_autofree char *error = NULL;
        JobStepResult out;

        g_assert_cmpint(target_file_set_hidden_name(life_target(l), HIDDEN, &error), ==, 0);
        done = run_steps(l, 0, (uint64_t) (at * (double) size), false);

        if (end == END_STOP) {
                JobStepInput in = { .checkpoint_only = true };
                step_ok(l, &in, &out);
                /* Nothing copied; for a backup everything done is the checkpoint. */
                g_assert_cmpuint(out.progress, ==, 0);
                g_assert_false(out.finished);
                g_assert_true(out.checkpoint == !l->mirror);
                checkpoint = out.checkpoint_value;
                /* As the daemon leaves it: the hidden file stays, nothing else is written. */
                target_file_keep(life_target(l));
                life_free(l);
                return checkpoint;
        }

        JobStepInput in = { .max_bytes = step_bytes, .checkpoint = true };
        step_ok(l, &in, &out);
        done += out.progress;
        g_assert_true(out.checkpoint == !l->mirror);
        checkpoint = out.checkpoint_value;
        g_assert_cmpint(write(report_fd, &checkpoint, sizeof(checkpoint)), ==, sizeof(checkpoint));
        run_steps(l, done, done + (uint64_t) (extra * (double) size), true);
        /* kill -9: no flush, no close, nothing. */
        raise(SIGKILL);
        g_assert_not_reached();
}

typedef int (*OpenFunc)(const void *params, Life *ret);

static int open_backup(const void *params, Life *ret) {
        g_autofree char *error = NULL;
        Backup *b = NULL;
        int r = test_backup_open(params, &b, &error);
        if (r < 0)
                g_test_message("backup_open: %s", error);
        *ret = (Life) { .driver = b };
        return r;
}

static int open_mirror(const void *params, Life *ret) {
        g_autofree char *error = NULL;
        Mirror *m = NULL;
        int r = test_mirror_open(params, &m, &error);
        if (r < 0)
                g_test_message("mirror_open: %s", error);
        *ret = (Life) { .mirror = true, .driver = m };
        return r;
}

/* Runs the first life (a kill in a child process) and returns its checkpoint. */
static uint64_t first_life(OpenFunc open_job, const void *params, End end, double at, double extra) {
        uint64_t checkpoint = 0;
        int pipe_fds[2], status;
        Life l;

        if (end == END_STOP) {
                g_assert_cmpint(open_job(params, &l), ==, 0);
                return first_life_here(&l, end, at, extra, -1);
        }

        g_assert_cmpint(pipe2(pipe_fds, O_CLOEXEC), ==, 0);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                close(pipe_fds[0]);
                if (open_job(params, &l) < 0)
                        _exit(EXIT_FAILURE);
                first_life_here(&l, end, at, extra, pipe_fds[1]);
        }
        close(pipe_fds[1]);
        g_assert_cmpint(read(pipe_fds[0], &checkpoint, sizeof(checkpoint)), ==, sizeof(checkpoint));
        close(pipe_fds[0]);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        /* Killed where it was meant to be, not by a failed assertion. */
        g_assert_true(WIFSIGNALED(status));
        g_assert_cmpint(WTERMSIG(status), ==, SIGKILL);
        return checkpoint;
}

/* ---- its second life ---------------------------------------------------------------------------- */

static char *hidden_path(Fixture *f) {
        return g_build_filename(f->dir, HIDDEN, NULL);
}

static Job *start_job(Fixture *f, const Life *l, uint64_t done) {
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Job *j = NULL;

        p.id = l->mirror ? "m" : "b";
        p.driver = life_driver(l);
        p.driver_data = l->driver;
        p.auto_dismiss = false;
        g_assert_cmpint(job_create(f->loop.registry, &p, &j, NULL), ==, 0);
        f->job = j;
        job_progress_set_remaining(j, life_size(l) - done);
        job_start(j);
        return j;
}

static void dismiss(Fixture *f, Job *j) {
        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
}

/* The backup's second life, to its end; returns the bytes it moved into the target. */
static uint64_t second_life_backup(Fixture *f, const TestBackupParams *bp, uint64_t checkpoint) {
        TestBackupParams resumed = *bp;
        Life l;

        resumed.resume = (DriverResume) { .resume = true, .offset = checkpoint };
        resumed.hidden = HIDDEN;
        g_assert_cmpint(open_backup(&resumed, &l), ==, 0);
        /* Giving it its hidden name again (as for a new job) changes nothing. */
        g_autofree char *error = NULL;
        g_assert_cmpint(target_file_set_hidden_name(backup_target_file(l.driver), HIDDEN, &error), ==, 0);
        /* What was done before counts: at most the checkpoint, rounded down to a cluster. */
        uint64_t done = backup_resumed_progress(l.driver);
        g_assert_cmpuint(done, <=, checkpoint);
        Job *j = start_job(f, &l, done);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_CONCLUDED);
        g_assert_null(job_error(j));
        const CopyIoStats *s = backup_copy_stats(l.driver);
        uint64_t moved = s->cloned + s->kernel_copied + s->written + s->zero_written;
        dismiss(f, j);
        return moved;
}

/* The published target reads as 'expected', passes qemu-img check if qcow2, and no hidden file is
 * left. */
static void assert_result(Fixture *f, const char *expected, bool qcow2) {
        g_autofree char *hidden = hidden_path(f), *out = NULL, *err = NULL;

        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
        if (oracle_try(&out, &err, "qemu-img compare -U %s %s", expected, f->target) != 0)
                g_error("%s differs from %s: %s%s", f->target, expected, out, err);
        g_free(g_steal_pointer(&out));
        g_free(g_steal_pointer(&err));
        if (qcow2 && oracle_try(&out, &err, "qemu-img check -U %s", f->target) != 0)
                g_error("qemu-img check %s: %s%s", f->target, out, err);
}

/* qemu-img check's exit status for the hidden file as the first life left it. */
static int check_hidden(Fixture *f) {
        g_autofree char *hidden = hidden_path(f), *out = NULL, *err = NULL;
        int r = oracle_try(&out, &err, "qemu-img check -U %s", hidden);
        g_test_message("after the first life: qemu-img check exit %d: %s", r, out);
        return r;
}

/* One backup, interrupted at 80 % each way, resumed and finished: equal to 'expected', and the
 * second life copied at most 'max_moved' bytes. */
static void backup_both_ways(Fixture *f, TestBackupParams *bp, const char *expected, bool qcow2, uint64_t max_moved) {
        bp->target = f->target;
        for (End end = END_STOP; end <= END_KILL; end++) {
                uint64_t checkpoint = first_life(open_backup, bp, end, 0.8, 0.1);
                g_assert_true(g_file_test(f->target, G_FILE_TEST_EXISTS) == false);
                if (qcow2)
                        g_assert_cmpint(check_hidden(f), !=, 2);
                uint64_t moved = second_life_backup(f, bp, checkpoint);
                g_test_message("%s: checkpoint %" PRIu64 ", second life moved %" PRIu64 " bytes (at most %" PRIu64 ")",
                               end_names[end], checkpoint, moved, max_moved);
                g_assert_cmpuint(moved, <=, max_moved);
                assert_result(f, expected, qcow2);
                g_assert_cmpint(g_unlink(f->target), ==, 0);
        }
}

static void assert_refused(Fixture *f, TestBackupParams *bp, const char *expected);

/* ---- backup ------------------------------------------------------------------------------------- */

#define RAW_SIZE (64 * MiB)

/* Data almost everywhere, some holes: 56 MiB of data in 64 MiB. */
static uint64_t make_raw_source(Fixture *f) {
        const Extent extents[] = { { 0, 20 * MiB }, { 22 * MiB, 20 * MiB }, { 44 * MiB, 16 * MiB } };
        make_sparse_file(f->source, RAW_SIZE, extents, G_N_ELEMENTS(extents), 7);
        return 56 * MiB;
}

static void test_backup_raw_raw(Fixture *f, gconstpointer data) {
        uint64_t data_bytes = make_raw_source(f);
        TestBackupParams bp = { .source = f->source, .target_format = IMAGE_FORMAT_RAW, .chunk_size = STEP_BYTES };

        /* Resumed from 80 %: a quarter of the data at most (20 % left, and the cluster rounding). */
        backup_both_ways(f, &bp, f->source, false, data_bytes / 4);
}

static void test_backup_raw_qcow2(Fixture *f, gconstpointer data) {
        uint64_t data_bytes = make_raw_source(f);
        TestBackupParams bp = { .source = f->source, .target_format = IMAGE_FORMAT_QCOW2, .chunk_size = STEP_BYTES };

        backup_both_ways(f, &bp, f->source, true, data_bytes / 4);
}

/* A chain as test-backup-image makes it, but large enough for steps: base, mid, top (4 KiB
 * clusters), all 64 MiB. */
static char *make_chain(Fixture *f) {
        g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
        g_autofree char *mid = g_build_filename(f->dir, "mid.qcow2", NULL);
        char *top = g_build_filename(f->dir, "top.qcow2", NULL);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64M", base));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 24M' -c 'write -P 0x12 48M 8M' %s", base));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 %s", mid));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x21 4M 8M' -c 'write -z 16M 4M' -c 'write -P 0x22 40M 16M' %s",
                          mid));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x31 2M 10M' -c 'write -P 0x32 30M 20M' -c 'write -P 0x33 54M 10M' %s",
                          top));
        return top;
}

static void test_backup_chain_full(Fixture *f, gconstpointer data) {
        g_autofree char *top = make_chain(f);
        TestBackupParams bp = { .source = top, .source_format = IMAGE_FORMAT_QCOW2, .chunk_size = STEP_BYTES };

        /* The whole chain flattened into a qcow2 image; 64 MiB of which at most a quarter again. */
        backup_both_ways(f, &bp, top, true, 16 * MiB);
}

static void test_backup_chain_top(Fixture *f, gconstpointer data) {
        g_autofree char *top = make_chain(f);
        TestBackupParams bp = { .source = top, .source_format = IMAGE_FORMAT_QCOW2, .sync_top = true,
                                .chunk_size = STEP_BYTES };

        /* The copy of the top alone compares equal to the top only if it rests on 'mid', as a new
         * one does. */
        backup_both_ways(f, &bp, top, true, 16 * MiB);
}

static uint64_t bitmap_dirty(const char *image, const char *name) {
        g_autofree char *error = NULL;
        ImageDirtyMap *m = NULL;
        Image *img = NULL;
        uint64_t n;

        g_assert_cmpint(image_open(image, IMAGE_FORMAT_QCOW2, IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_NO_LOCK, &img, &error),
                        ==, 0);
        g_assert_cmpint(image_bitmap_load(img, name, &m), ==, 0);
        n = image_dirty_map_count(m);
        image_dirty_map_free(m);
        image_close(img);
        return n;
}

/* sync=bitmap: a source whose bitmap marks 12 MiB spread over 64 MiB; an uninterrupted run (mode
 * never) is the reference. The resumed run (on-success) clears the bitmap at its commit only. */
static void test_backup_bitmap(Fixture *f, gconstpointer data) {
        g_autofree char *src = g_build_filename(f->dir, "src.qcow2", NULL);
        g_autofree char *ref = g_build_filename(f->dir, "ref.qcow2", NULL);
        g_autofree char *info = NULL;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64M", src));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 32M' %s", src));
        g_free(oracle_run("qemu-img bitmap --add %s b0", src));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 1000k 3M' -c 'write -P 0x33 20M 3M' "
                          "-c 'write -z 30M 2M' -c 'write -P 0x44 50M 4M' %s",
                          src));

        TestBackupParams bp = { .source = src, .source_format = IMAGE_FORMAT_QCOW2, .target = ref,
                                .target_format = IMAGE_FORMAT_QCOW2, .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_NEVER,
                                .sync_bitmap = true, .chunk_size = STEP_BYTES };
        driver_fixture_start_backup(f, &bp, 0, true);
        test_loop_run_until_empty(&f->loop);
        g_string_truncate(f->events, 0);

        bp.bitmap_mode = BITMAP_SYNC_ON_SUCCESS;
        bp.target = f->target;
        for (End end = END_STOP; end <= END_KILL; end++) {
                uint64_t checkpoint = first_life(open_backup, &bp, end, 0.8, 0.1);
                /* The bitmap is the job's to clear at its commit, not before. */
                info = oracle_run("qemu-img info -U --output=json %s", src);
                g_assert_nonnull(strstr(info, "\"b0\""));
                g_free(g_steal_pointer(&info));
                g_assert_cmpint(check_hidden(f), !=, 2);
                uint64_t moved = second_life_backup(f, &bp, checkpoint);
                g_test_message("%s: checkpoint %" PRIu64 ", second life moved %" PRIu64, end_names[end], checkpoint, moved);
                /* 12 MiB marked (each dirty granule's 64 KiB cluster), so a quarter is 3 MiB. */
                g_assert_cmpuint(moved, <=, 3 * MiB + 256 * KiB);
                assert_result(f, ref, true);
                g_assert_cmpint(g_unlink(f->target), ==, 0);
                g_assert_cmpuint(bitmap_dirty(src, "b0"), ==, 0);
                if (end == END_STOP) {
                        /* Cleared by the commit: dirty again for the second run. */
                        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 1000k 3M' -c 'write -P 0x33 20M 3M' "
                                          "-c 'write -z 30M 2M' -c 'write -P 0x44 50M 4M' %s",
                                          src));
                }
        }
}

/* An incremental backup made an overlay of the full one (target-backing) and resumed: reopened on
 * the same backing file, it reads as the source. */
static void test_backup_overlay(Fixture *f, gconstpointer data) {
        g_autofree char *src = g_build_filename(f->dir, "src.qcow2", NULL);
        g_autofree char *full = g_build_filename(f->dir, "full.qcow2", NULL);
        g_autofree char *hidden = hidden_path(f);

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64M", src));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x11 0 32M' -c 'write -P 0x12 40M 8M' %s", src));
        g_free(oracle_run("qemu-img convert -q -O qcow2 %s %s", src, full));
        g_free(oracle_run("qemu-img bitmap --add %s b0", src));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0x22 1000k 3M' -c 'write -P 0x33 20M 3M' "
                          "-c 'write -z 30M 2M' -c 'write -P 0x44 44M 4M' %s",
                          src));

        TestBackupParams bp = { .source = src, .source_format = IMAGE_FORMAT_QCOW2, .target_format = IMAGE_FORMAT_QCOW2,
                                .bitmap = "b0", .bitmap_mode = BITMAP_SYNC_NEVER, .sync_bitmap = true,
                                .target_backing = "full.qcow2", .target_backing_format = IMAGE_FORMAT_QCOW2,
                                .chunk_size = STEP_BYTES };
        backup_both_ways(f, &bp, src, true, 3 * MiB + 256 * KiB);

        /* An overlay of another file is not the one the job was writing. */
        g_free(oracle_run("qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 %s", hidden));
        assert_refused(f, &bp, "backing file");
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
}

/* A qcow2 target whose writer is killed after it allocated many L2 tables past the checkpoint
 * (64 KiB clusters, so an L2 table maps 512 MiB; the cache holds 16): evicting them writes
 * refcounts that count clusters the L1 table on disk does not reach yet, so the killed file has
 * leaks. The resumed job counts them free again before it writes, and the result is clean. */
static void test_backup_qcow2_leaks(Fixture *f, gconstpointer data) {
        Extent extents[200];
        for (size_t i = 0; i < G_N_ELEMENTS(extents); i++)
                extents[i] = (Extent) { i * 512 * MiB + 64 * KiB * (i % 7), 64 * KiB };
        make_sparse_file(f->source, 100 * 1024 * MiB, extents, G_N_ELEMENTS(extents), 3);

        TestBackupParams bp = { .source = f->source, .target = f->target, .target_format = IMAGE_FORMAT_QCOW2,
                                .chunk_size = STEP_BYTES };
        /* An extent (and an L2 table) a step. */
        step_bytes = 64 * KiB;
        uint64_t checkpoint = first_life(open_backup, &bp, END_KILL, 0.6, 0.3);
        /* The case this test is for: leaked clusters (3), nothing worse (2). */
        g_assert_cmpint(check_hidden(f), ==, 3);
        uint64_t moved = second_life_backup(f, &bp, checkpoint);
        g_assert_cmpuint(moved, <=, 82 * 64 * KiB);
        assert_result(f, f->source, true);
        step_bytes = STEP_BYTES;
}

/* A target written in place (a file the caller passed): no hidden name, the same file again. */
static void test_backup_in_place(Fixture *f, gconstpointer data) {
        uint64_t data_bytes = make_raw_source(f);
        TestBackupParams bp = { .source = f->source, .target = f->target, .target_format = IMAGE_FORMAT_QCOW2,
                                .target_passed = true, .chunk_size = STEP_BYTES };

        for (End end = END_STOP; end <= END_KILL; end++) {
                uint64_t checkpoint = first_life(open_backup, &bp, end, 0.8, 0.1);
                /* Not emptied when it is taken over again. */
                g_assert_cmpint(check_hidden(f), ==, 1);        /* no such file */
                uint64_t moved = second_life_backup(f, &bp, checkpoint);
                g_test_message("%s: checkpoint %" PRIu64 ", second life moved %" PRIu64, end_names[end], checkpoint, moved);
                g_assert_cmpuint(moved, <=, data_bytes / 4);
                assert_result(f, f->source, true);
                g_assert_cmpint(g_unlink(f->target), ==, 0);
        }
}

/* A checkpoint whose flush fails is a target I/O error under the job's policy (report: the job
 * fails), here the one on the finishing step. */
static const char *failing_flush_path;

static int fail_flush(const char *path, ImageIo io, uint64_t offset, uint64_t length) {
        return io == IMAGE_IO_FLUSH && g_str_equal(path, failing_flush_path) ? -EIO : 0;
}

static void test_backup_checkpoint_fails(Fixture *f, gconstpointer data) {
        TestBackupParams bp = { .source = f->source, .target = f->target, .target_format = IMAGE_FORMAT_QCOW2 };
        Life l;

        make_raw_source(f);
        failing_flush_path = f->target;
        image_set_fault_hook(fail_flush);
        g_assert_cmpint(open_backup(&bp, &l), ==, 0);
        Job *j = start_job(f, &l, 0);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_CONCLUDED);
        image_set_fault_hook(NULL);
        g_assert_nonnull(job_error(j));
        g_test_message("the job failed: %s (%s)", job_error(j), f->events->str);
        /* In a step (the finishing one's checkpoint), not at prepare, which comes after waiting. */
        g_assert_null(strstr(f->events->str, "waiting"));
        dismiss(f, j);
        g_assert_false(g_file_test(f->target, G_FILE_TEST_EXISTS));
}

/* ---- mirror ------------------------------------------------------------------------------------- */

static void test_mirror(Fixture *f, ImageFormat format) {
        const Extent extents[] = { { 0, 30 * MiB }, { 34 * MiB, 30 * MiB } };
        TestMirrorParams mp = { .source = f->source, .target = f->target, .target_format = format,
                                .buf_size = STEP_BYTES };

        for (End end = END_STOP; end <= END_KILL; end++) {
                make_sparse_file(f->source, RAW_SIZE, extents, G_N_ELEMENTS(extents), 11 + end);
                /* Two thirds of the first pass: the target holds [0, 40M) and more. */
                g_assert_cmpuint(first_life(open_mirror, &mp, end, 0.6, 0.1), ==, 0);

                /* Meanwhile the source changes: new data where the target has some, zeroes where
                 * it has data (written zeroes and a hole), data where it has none yet. */
                g_free(oracle_run("qemu-io -f raw -c 'write -P 0x5a 1M 2M' -c 'write -z 8M 4M' %s", f->source));
                g_free(oracle_run("fallocate -p -o %d -l %d %s", 20 * 1024 * 1024, 2 * 1024 * 1024, f->source));
                g_free(oracle_run("qemu-io -f raw -c 'write -P 0xa5 31M 2M' -c 'write -P 0x77 60M 1M' %s", f->source));

                TestMirrorParams resumed = mp;
                resumed.resume = (DriverResume) { .resume = true };
                resumed.hidden = HIDDEN;
                Life l;
                g_assert_cmpint(open_mirror(&resumed, &l), ==, 0);
                Job *j = start_job(f, &l, 0);
                test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
                g_assert_cmpint(job_complete(j, NULL), ==, 0);
                test_loop_run_until_status(&f->loop, j, JOB_STATUS_CONCLUDED);
                g_assert_null(job_error(j));
                dismiss(f, j);
                assert_result(f, f->source, format == IMAGE_FORMAT_QCOW2);
                g_assert_cmpint(g_unlink(f->target), ==, 0);
        }
}

static void test_mirror_raw(Fixture *f, gconstpointer data) {
        test_mirror(f, IMAGE_FORMAT_RAW);
}

static void test_mirror_qcow2(Fixture *f, gconstpointer data) {
        test_mirror(f, IMAGE_FORMAT_QCOW2);
}

/* ---- what is refused ---------------------------------------------------------------------------- */

static void assert_refused(Fixture *f, TestBackupParams *bp, const char *expected) {
        g_autofree char *error = NULL;
        Backup *b = NULL;

        bp->target = f->target;
        bp->resume = (DriverResume) { .resume = true, .offset = 4 * MiB };
        bp->hidden = HIDDEN;
        g_assert_cmpint(test_backup_open(bp, &b, &error), ==, -EINVAL);
        g_assert_null(b);
        if (!strstr(error, "is not the image the job was writing") || !strstr(error, expected))
                g_error("\"%s\" does not say \"%s\"", error, expected);
}

static void test_refused(Fixture *f, gconstpointer data) {
        g_autofree char *hidden = hidden_path(f), *top = make_chain(f);
        g_autofree char *other = g_build_filename(f->dir, "other.qcow2", NULL);

        make_data_file(f->source, RAW_SIZE);

        /* A raw file where a qcow2 image was being written. */
        make_data_file(hidden, RAW_SIZE);
        TestBackupParams bp = { .source = f->source, .target_format = IMAGE_FORMAT_QCOW2 };
        assert_refused(f, &bp, "qcow2");

        /* A qcow2 image of another size. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 32M", hidden));
        assert_refused(f, &bp, "bytes");

        /* A raw one of another size. */
        make_data_file(hidden, RAW_SIZE / 2);
        bp.target_format = IMAGE_FORMAT_RAW;
        assert_refused(f, &bp, "bytes");

        /* A sync=top copy resting on another backing file than the source's. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64M", other));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b other.qcow2 -F qcow2 %s 64M", hidden));
        bp = (TestBackupParams) { .source = top, .source_format = IMAGE_FORMAT_QCOW2, .sync_top = true };
        assert_refused(f, &bp, "backing file");

        /* A flattened copy that has a backing file. */
        g_free(oracle_run("qemu-img create -q -f qcow2 -b other.qcow2 -F qcow2 %s 64M", hidden));
        bp.sync_top = false;
        assert_refused(f, &bp, "backing file");

        /* Each refusal removed the hidden file, as a job that cannot continue does. */
        g_assert_false(g_file_test(hidden, G_FILE_TEST_EXISTS));
}

#define RESUME_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        RESUME_TEST("/copy-resume/backup/raw-to-raw", test_backup_raw_raw);
        RESUME_TEST("/copy-resume/backup/raw-to-qcow2", test_backup_raw_qcow2);
        RESUME_TEST("/copy-resume/backup/chain-sync-full", test_backup_chain_full);
        RESUME_TEST("/copy-resume/backup/chain-sync-top", test_backup_chain_top);
        RESUME_TEST("/copy-resume/backup/bitmap", test_backup_bitmap);
        RESUME_TEST("/copy-resume/backup/overlay", test_backup_overlay);
        RESUME_TEST("/copy-resume/backup/qcow2-leaks", test_backup_qcow2_leaks);
        RESUME_TEST("/copy-resume/backup/in-place", test_backup_in_place);
        RESUME_TEST("/copy-resume/backup/checkpoint-fails", test_backup_checkpoint_fails);
        RESUME_TEST("/copy-resume/mirror/raw", test_mirror_raw);
        RESUME_TEST("/copy-resume/mirror/qcow2", test_mirror_qcow2);
        RESUME_TEST("/copy-resume/refused", test_refused);
        return g_test_run();
}
