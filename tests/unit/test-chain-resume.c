/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Commit and stream across a restart of the daemon (issue 15). A job runs part of the way and
 * stops: a step with checkpoint_only (what SIGTERM does), or a child process that runs the job
 * past a checkpoint and is killed with SIGKILL. Then the driver is built again, as the restore
 * layer builds it (the chain opened by name as a new job opens it, resume = {true, checkpoint}),
 * and the job is restored in its status and finishes on the real executor. The result must be
 * what an uninterrupted run of the same job gives on a copy of the chain made first (`qemu-img
 * compare` of the image and of the image written, reading their chains; the same backing file
 * names; `qemu-img check` exit 0 on every image written), and must read as the chain did before.
 *
 * The steps before the stop are called directly (the core of this branch never asks for
 * checkpoints); they run without a Job, which only an I/O error would need, and none happens
 * there. */

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver-fixture.h"
#include "image-fault.h"
#include "job-files.h"
#include "macro.h"
#include "open-files.h"
#include "qemu-oracle.h"

#define STEP_BYTES (256 * 1024)         /* a step's budget when the steps are called directly */

typedef enum Kind {
        COMMIT,
        COMMIT_ACTIVE,
        STREAM,
} Kind;

typedef struct Case {
        const char *name;
        Kind kind;
        bool raw_base;                  /* the bottom of the chain is a.raw */
        const char *top;                /* commit: NULL for the image itself */
        const char *base;               /* NULL: commit: the bottom; stream: none */
        const char *written;            /* what the job writes: base (commit), the image (stream) */
        const char *holder;             /* the layer whose header is rewritten */
} Case;

/* The image is always d.qcow2, in a ← b ← c ← d. */
static const Case cases[] = {
        /* b and c into a: d, the image itself, names a. */
        { "commit",        COMMIT,        false, "c.qcow2", "a.qcow2", "a.qcow2", "d.qcow2" },
        /* b into a raw a: c, below the image, names a. */
        { "commit-raw",    COMMIT,        true,  "b.qcow2", "a.raw",   "a.raw",   "c.qcow2" },
        /* d and c into b; d then rests on b, empty. */
        { "commit-active", COMMIT_ACTIVE, false, NULL,      "b.qcow2", "b.qcow2", "d.qcow2" },
        { "stream-base",   STREAM,        false, NULL,      "b.qcow2", "d.qcow2", "d.qcow2" },
        { "stream-whole",  STREAM,        true,  NULL,      NULL,      "d.qcow2", "d.qcow2" },
};

static char *in_dir(Fixture *f, const char *dir, const char *name) {
        return g_build_filename(f->dir, dir, name, NULL);
}

/* a ← b ← c ← d in 'dir', 32 MiB, each writing over the one below and leaving data spread over
 * the whole disk, so that a job at 256 KiB a step takes many steps everywhere. */
static void make_chain(Fixture *f, const char *dir, bool raw_base) {
        g_autofree char *d = g_build_filename(f->dir, dir, NULL);
        g_autofree char *a = in_dir(f, dir, raw_base ? "a.raw" : "a.qcow2"), *b = in_dir(f, dir, "b.qcow2");
        g_autofree char *c = in_dir(f, dir, "c.qcow2"), *top = in_dir(f, dir, "d.qcow2");
        const char *fmt = raw_base ? "raw" : "qcow2";

        g_assert_cmpint(g_mkdir_with_parents(d, 0755), ==, 0);
        g_free(oracle_run("qemu-img create -q -f %s %s 32M", fmt, a));
        g_free(oracle_run("qemu-io -f %s -c 'write -P 0xa1 0 24M' -c 'write -P 0xa2 28M 2M' %s", fmt, a));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b %s -F %s %s", raw_base ? "a.raw" : "a.qcow2", fmt, b));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xb1 2M 8M' -c 'write -z 12M 1M' -c 'write -P 0xb2 20M 6M' %s",
                          b));
        g_free(oracle_run("qemu-img create -q -f qcow2 -o cluster_size=4096 -b b.qcow2 -F qcow2 %s", c));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xc1 4M 64k' -c 'write -z 5M 4k' -c 'write -P 0xc2 16M 2M' "
                          "-c 'write -P 0xc3 30M 1M' %s",
                          c));
        g_free(oracle_run("qemu-img create -q -f qcow2 -b c.qcow2 -F qcow2 %s", top));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 0xd1 1M 1M' -c 'write -P 0xd2 18M 8k' -c 'write -P 0xd3 27M 3M' %s",
                          top));
}

/* The chain in work/ (the job's) and a copy in ref/ (the uninterrupted run's), and what the
 * image reads now, flat. */
static char *make_chains(Fixture *f, const Case *c) {
        g_autofree char *work = g_build_filename(f->dir, "work", NULL), *ref = g_build_filename(f->dir, "ref", NULL);
        g_autofree char *image = in_dir(f, "work", "d.qcow2");
        char *flat = g_build_filename(f->dir, "d.flat", NULL);

        make_chain(f, "work", c->raw_base);
        g_free(oracle_run("cp -a %s %s", work, ref));
        g_free(oracle_run("qemu-img convert -U -O raw %s %s", image, flat));
        return flat;
}

/* ---- what the image layer writes ----------------------------------------------------------- */

typedef struct Write {
        uint64_t offset, length;
} Write;

static GMutex writes_lock;
static GArray *writes;                  /* Write, to the layer named 'writes_name' */
static unsigned flushes;                /* of that layer */
static const char *writes_name;
static const char *failing_flush;       /* fail flushes of this layer (-EIO) */

static bool is_layer(const char *path, const char *name) {
        const char *slash = strrchr(path, '/');
        return strcmp(slash ? slash + 1 : path, name) == 0;
}

static int hook(const char *path, ImageIo io, uint64_t offset, uint64_t length) {
        if (io == IMAGE_IO_FLUSH && failing_flush && is_layer(path, failing_flush))
                return -EIO;
        if (io == IMAGE_IO_READ || !writes_name || !is_layer(path, writes_name))
                return 0;
        g_mutex_lock(&writes_lock);
        if (io == IMAGE_IO_FLUSH)
                flushes++;
        else
                g_array_append_val(writes, ((Write) { offset, length }));
        g_mutex_unlock(&writes_lock);
        return 0;
}

static void record_writes(const char *name) {
        if (writes)
                g_array_free(writes, TRUE);
        writes = g_array_new(FALSE, FALSE, sizeof(Write));
        writes_name = name;
        flushes = 0;
        image_set_fault_hook(hook);
}

/* Bytes written at or after 'from' (a write across it counts from there). */
static uint64_t written_in(GArray *list, uint64_t from) {
        uint64_t sum = 0;
        for (guint i = 0; i < list->len; i++) {
                Write *w = &g_array_index(list, Write, i);
                if (w->offset + w->length > from)
                        sum += w->offset + w->length - MAX(w->offset, from);
        }
        return sum;
}

static uint64_t written_since(uint64_t from) {
        return written_in(writes, from);
}

/* What was recorded so far, and nothing recorded from now on. */
static GArray *take_writes(void) {
        GArray *w = writes;
        image_set_fault_hook(NULL);
        writes = NULL;
        writes_name = NULL;
        return w;
}

static void stop_recording(void) {
        image_set_fault_hook(NULL);
        writes_name = NULL;
        failing_flush = NULL;
        if (writes)
                g_array_free(writes, TRUE);
        writes = NULL;
}

/* ---- the driver, opened as the restore layer opens it ---------------------------------------- */

static const JobDriver *driver_of(const Case *c) {
        return c->kind == STREAM ? &stream_driver : &commit_driver;
}

static uint64_t size_of(const Case *c, void *data) {
        return c->kind == STREAM ? stream_size(data) : commit_size(data);
}

static bool rewrite_done(const Case *c, void *data) {
        return c->kind == STREAM ? stream_rewrite_done(data) : commit_rewrite_done(data);
}

/* The chain opened by name from the image, as blockjobd-opener opens it for a new job (it
 * follows the backing files the headers name now), handed to the driver as descriptors. */
static int open_job(Fixture *f, const Case *c, const char *dir, const char *backing_file, DriverResume resume,
                    void **ret, char **ret_error) {
        g_autofree char *image = in_dir(f, dir, "d.qcow2");
        g_autofree char *top = c->top ? in_dir(f, dir, c->top) : NULL, *base = c->base ? in_dir(f, dir, c->base) : NULL;
        JobFiles files = JOB_FILES_INIT;
        int r;

        r = open_chain_files(image, IMAGE_FORMAT_QCOW2, true, NULL, &files, ret_error);
        if (r >= 0 && c->kind == STREAM) {
                StreamParams p = {
                        .image = image,
                        .base = base,
                        .backing_file = backing_file,
                        .files = &files,
                        .resume = resume,
                };
                r = stream_open(&p, (Stream **) ret, ret_error);
        } else if (r >= 0) {
                CommitParams p = {
                        .image = image,
                        .top = top,
                        .base = base,
                        .backing_file = backing_file,
                        .files = &files,
                        .resume = resume,
                };
                r = commit_open(&p, (Commit **) ret, ret_error);
        }
        if (r >= 0)
                job_files_hand_over(&files);
        job_files_done(&files);
        return r;
}

static void *must_open(Fixture *f, const Case *c, const char *dir, DriverResume resume) {
        g_autofree char *error = NULL;
        void *data = NULL;

        if (open_job(f, c, dir, NULL, resume, &data, &error) < 0)
                g_error("opening the %s job in %s: %s", c->name, dir, error);
        return data;
}

/* ---- steps called directly ------------------------------------------------------------------- */

static void step(const Case *c, void *data, const JobStepInput *in, JobStepResult *out) {
        *out = (JobStepResult) {};
        driver_of(c)->step(NULL, data, in, out);
        g_assert_false(out->io_error.set);
        g_assert_null(out->error);
}

/* 'n' steps of STEP_BYTES, the last with a checkpoint if 'checkpoint'; none finishes or gets
 * ready. Returns the progress made. */
static uint64_t run_steps(const Case *c, void *data, unsigned n, bool checkpoint, JobStepResult *ret_last) {
        uint64_t progress = 0;

        for (unsigned i = 0; i < n; i++) {
                JobStepInput in = { .max_bytes = STEP_BYTES, .checkpoint = checkpoint && i == n - 1 };
                step(c, data, &in, ret_last);
                g_assert_false(ret_last->finished);
                g_assert_false(ret_last->ready);
                g_assert_cmpint(ret_last->checkpoint, ==, in.checkpoint);
                progress += ret_last->progress;
        }
        return progress;
}

/* Steps until the job finishes (active commit: gets ready, then is completed), and checks the
 * last step's checkpoint: durable up to the end. */
static void run_to_finish(const Case *c, void *data) {
        JobStepInput in = { .max_bytes = STEP_BYTES };
        JobStepResult out;

        for (unsigned i = 0;; i++) {
                g_assert_cmpuint(i, <, 10000);
                step(c, data, &in, &out);
                if (out.finished || out.ready)
                        break;
        }
        g_assert_true(out.checkpoint);
        g_assert_cmpuint(out.checkpoint_value, ==, size_of(c, data));
        if (c->kind == COMMIT_ACTIVE) {
                g_assert_true(out.ready);
                /* Ready: a checkpoint reports the end again, and the job stays ready. */
                step(c, data, &(JobStepInput) { .checkpoint = true }, &out);
                g_assert_true(out.checkpoint);
                g_assert_cmpuint(out.checkpoint_value, ==, size_of(c, data));
                g_assert_false(out.finished);
                g_assert_cmpuint(out.idle_ns, >, 0);
                in.complete_requested = true;
                step(c, data, &in, &out);
                g_assert_true(out.finished);
                g_assert_true(out.checkpoint);
                g_assert_cmpuint(out.checkpoint_value, ==, size_of(c, data));
        }
}

/* ---- the job on the executor ----------------------------------------------------------------- */

#define SUCCESS "created running waiting pending concluded null "
#define ACTIVE_SUCCESS "created running ready waiting pending concluded null "

static void expect_events(Fixture *f, const char *expected) {
        g_assert_cmpstr(f->events->str, ==, expected);
        g_string_truncate(f->events, 0);
}

/* Runs a job until it is gone; an active commit is completed once ready. */
static void run_job(Fixture *f, const Case *c, Job *j) {
        if (c->kind == COMMIT_ACTIVE && job_status(j) != JOB_STATUS_PENDING) {
                test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
                g_assert_cmpint(job_complete(j, NULL), ==, 0);
        }
        test_loop_run_until_empty(&f->loop);
}

/* The uninterrupted run, in ref/. */
static void run_reference(Fixture *f, const Case *c) {
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        void *data = must_open(f, c, "ref", (DriverResume) {});

        p.id = "ref";
        p.driver = driver_of(c);
        p.driver_data = data;
        g_assert_cmpint(job_create(f->loop.registry, &p, &f->job, NULL), ==, 0);
        job_progress_set_remaining(f->job, size_of(c, data));
        job_start(f->job);
        run_job(f, c, f->job);
        expect_events(f, c->kind == COMMIT_ACTIVE ? ACTIVE_SUCCESS : SUCCESS);
}

/* The job built again after a restart, restored in 'status' with its progress at the checkpoint,
 * and run to its end. */
static void resume_job(Fixture *f, const Case *c, uint64_t checkpoint, JobStatus status, bool expect_rewritten) {
        void *data = must_open(f, c, "work", (DriverResume) { .resume = true, .offset = checkpoint });
        JobRestoreParams p = {
                .create = JOB_CREATE_PARAMS_DEFAULT,
                .status = status,
                .progress_current = checkpoint,
                .progress_total = size_of(c, data),
        };
        const char *expected;

        g_assert_cmpint(rewrite_done(c, data), ==, expect_rewritten);
        p.create.id = "j";
        p.create.driver = driver_of(c);
        p.create.driver_data = data;
        g_assert_cmpint(job_restore(f->loop.registry, &p, &f->job, NULL), ==, 0);
        g_assert_cmpuint(job_current_progress(f->job), ==, checkpoint);
        job_restore_start(f->job);
        run_job(f, c, f->job);

        if (status == JOB_STATUS_PENDING)
                expected = "concluded null ";
        else if (c->kind == COMMIT_ACTIVE)
                expected = "ready waiting pending concluded null ";
        else
                expected = "waiting pending concluded null ";
        expect_events(f, expected);
}

/* ---- the oracle ------------------------------------------------------------------------------- */

static char *backing_of(const char *image) {
        g_autofree char *info = oracle_run("qemu-img info -U --output=json %s", image);
        const char *s = strstr(info, "\"backing-filename\": \"");
        if (!s)
                return g_strdup("");
        s += strlen("\"backing-filename\": \"");
        return g_strndup(s, strchr(s, '"') - s);
}

static void assert_same(const char *a, const char *b) {
        g_autofree char *out = NULL, *err = NULL;
        if (oracle_try(&out, &err, "qemu-img compare -U %s %s", a, b) != 0)
                g_error("%s does not read as %s: %s%s", a, b, out, err);
}

static void assert_check(const char *image) {
        g_autofree char *out = NULL, *err = NULL;
        int status = oracle_try(&out, &err, "qemu-img check -U %s", image);
        if (status != 0)
                g_error("qemu-img check %s: exit %d: %s%s", image, status, out, err);
}

/* work/ is what ref/ is: the image and the image written read the same through their chains,
 * the rewritten header names the same file, and the image reads as before the job. */
static void assert_as_reference(Fixture *f, const Case *c, const char *flat) {
        const char *names[] = { "d.qcow2", c->written, c->holder };

        for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
                g_autofree char *work = in_dir(f, "work", names[i]), *ref = in_dir(f, "ref", names[i]);
                assert_same(work, ref);
                if (strcmp(names[i], "a.raw") != 0)
                        assert_check(work);
        }
        g_autofree char *image = in_dir(f, "work", "d.qcow2"), *holder = in_dir(f, "work", c->holder);
        g_autofree char *ref_holder = in_dir(f, "ref", c->holder);
        g_autofree char *backing = backing_of(holder), *ref_backing = backing_of(ref_holder);
        g_assert_cmpstr(backing, ==, ref_backing);
        assert_same(image, flat);

        if (c->kind == COMMIT_ACTIVE) {
                /* Emptied: everything reads through to base. */
                g_autoptr(GArray) map = oracle_map(image);
                for (guint i = 0; i < map->len; i++)
                        g_assert_cmpint(g_array_index(map, OracleExtent, i).depth, !=, 0);
        }
}

/* ---- stopped by checkpoint_only (SIGTERM) ----------------------------------------------------- */

static void test_stop(Fixture *f, gconstpointer data) {
        const Case *c = data;
        g_autofree char *flat = make_chains(f, c);
        JobStepResult out;
        uint64_t progress;
        void *job;

        run_reference(f, c);

        job = must_open(f, c, "work", (DriverResume) {});
        progress = run_steps(c, job, 6, false, &out);
        g_assert_cmpuint(progress, >, 0);

        /* The daemon stops: nothing is copied, base/the image is made durable, the position
         * reported. */
        record_writes(c->written);
        step(c, job, &(JobStepInput) { .max_bytes = STEP_BYTES, .checkpoint_only = true }, &out);
        g_assert_true(out.checkpoint);
        g_assert_cmpuint(out.checkpoint_value, ==, progress);
        g_assert_cmpuint(out.progress, ==, 0);
        g_assert_cmpuint(out.dispatched, ==, 0);
        g_assert_false(out.finished);
        g_assert_cmpuint(writes->len, ==, 0);
        g_assert_cmpuint(flushes, ==, 1);
        stop_recording();
        driver_of(c)->free(job);

        resume_job(f, c, out.checkpoint_value, JOB_STATUS_RUNNING, false);
        assert_as_reference(f, c, flat);
}

/* The same through the core: job_stop() mid-run (the daemon's SIGTERM) gives the job a last
 * step with checkpoint_only; the job is dismissed as the daemon dismisses stopped jobs at exit,
 * and built again from the checkpoint the core kept. */
static void test_job_stop(Fixture *f, gconstpointer data) {
        const Case *c = data;
        g_autofree char *flat = make_chains(f, c);
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        uint64_t checkpoint;
        void *job;
        Job *j;

        run_reference(f, c);

        job = must_open(f, c, "work", (DriverResume) {});
        p.id = "j";
        p.driver = driver_of(c);
        p.driver_data = job;
        p.speed = 4 * 1024 * 1024;      /* many steps, so that the stop comes mid-run */
        g_assert_cmpint(job_create(f->loop.registry, &p, &j, NULL), ==, 0);
        job_ref(j);
        job_progress_set_remaining(j, size_of(c, job));
        job_start(j);
        for (unsigned i = 0; job_current_progress(j) == 0; i++) {
                g_assert_cmpuint(i, <, 100000);
                test_loop_iterate(&f->loop);
        }
        job_stop(j);
        for (unsigned i = 0; !job_is_stopped(j); i++) {
                g_assert_cmpuint(i, <, 100000);
                test_loop_iterate(&f->loop);
        }
        g_assert_true(job_checkpoint(j, &checkpoint));
        g_assert_cmpuint(checkpoint, >, 0);
        g_assert_cmpuint(checkpoint, ==, job_current_progress(j));
        g_assert_cmpuint(checkpoint, <, size_of(c, job));
        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        job_unref(j);
        test_loop_run_until_empty(&f->loop);
        expect_events(f, "created running null ");

        resume_job(f, c, checkpoint, JOB_STATUS_RUNNING, false);
        assert_as_reference(f, c, flat);
}

/* ---- killed -9 --------------------------------------------------------------------------------- */

typedef enum KillPoint {
        KILL_AFTER_CHECKPOINT,          /* past a checkpoint, with unflushed writes after it */
        KILL_AFTER_PREPARE,             /* the run finished and prepared; the job not concluded */
} KillPoint;

/* In a child: opens the job, runs it to 'point', tells the checkpoint reached, and waits to be
 * killed. Returns that checkpoint. The child opens the files itself, so that its death drops
 * its locks as a killed daemon's does. */
static uint64_t run_and_kill(Fixture *f, const Case *c, KillPoint point) {
        int fds[2];
        uint64_t value;
        ssize_t n;
        pid_t pid;
        int status;

        g_assert_cmpint(pipe2(fds, O_CLOEXEC), ==, 0);
        fflush(NULL);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                void *job = must_open(f, c, "work", (DriverResume) {});
                JobStepResult out;

                close(fds[0]);
                if (point == KILL_AFTER_CHECKPOINT) {
                        run_steps(c, job, 4, true, &out);
                        value = out.checkpoint_value;
                        /* Written after the checkpoint, not flushed: lost or half there after
                         * the kill, and written again after it. */
                        run_steps(c, job, 3, false, &out);
                } else {
                        g_autofree char *error = NULL;
                        run_to_finish(c, job);
                        value = size_of(c, job);
                        if (driver_of(c)->prepare(NULL, job, &error) < 0)
                                g_error("prepare: %s", error);
                }
                if (write(fds[1], &value, sizeof(value)) != sizeof(value))
                        _exit(EXIT_FAILURE);
                for (;;)
                        pause();
        }

        close(fds[1]);
        n = read(fds[0], &value, sizeof(value));
        g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        close(fds[0]);
        g_assert_cmpint(n, ==, sizeof(value));
        g_assert_true(WIFSIGNALED(status));
        g_assert_cmpint(WTERMSIG(status), ==, SIGKILL);
        return value;
}

static void test_kill(Fixture *f, gconstpointer data) {
        const Case *c = data;
        g_autofree char *flat = make_chains(f, c);
        uint64_t checkpoint;

        run_reference(f, c);
        checkpoint = run_and_kill(f, c, KILL_AFTER_CHECKPOINT);
        g_assert_cmpuint(checkpoint, >, 0);
        resume_job(f, c, checkpoint, JOB_STATUS_RUNNING, false);
        assert_as_reference(f, c, flat);
}

/* Killed between prepare and the job's end: the record may say pending (prepare runs again) or,
 * since records are written behind the job, something older with an older checkpoint (the job
 * runs again from there). Either way the job concludes successfully, writes nothing more into
 * the image written, and the result is the reference's. */
static void test_kill_after_prepare(Fixture *f, gconstpointer data) {
        const Case *c = data;
        g_autofree char *flat = make_chains(f, c), *error = NULL, *image = in_dir(f, "work", "d.qcow2");
        bool rewritten = c->kind != COMMIT_ACTIVE;      /* active commit's image still rests on base */
        uint64_t checkpoint;
        void *job = NULL;

        run_reference(f, c);
        checkpoint = run_and_kill(f, c, KILL_AFTER_PREPARE);

        /* The rewrite is there, and a new job (not resumed) finds its chain as it is. */
        g_autofree char *holder = in_dir(f, "work", c->holder), *ref_holder = in_dir(f, "ref", c->holder);
        g_autofree char *backing = backing_of(holder), *ref_backing = backing_of(ref_holder);
        g_assert_cmpstr(backing, ==, ref_backing);
        assert_same(image, flat);
        if (c->kind == COMMIT) {
                g_assert_cmpint(open_job(f, c, "work", NULL, (DriverResume) {}, &job, &error), ==, -EINVAL);
                g_assert_nonnull(strstr(error, "is not in the backing chain"));
                g_clear_pointer(&error, g_free);
                /* A chain that is not what the commit left is refused. */
                g_assert_cmpint(open_job(f, c, "work", "x.qcow2", (DriverResume) { .resume = true, .offset = checkpoint },
                                         &job, &error),
                                ==, -EINVAL);
                g_assert_nonnull(strstr(error, "not what the commit left"));
        }

        struct stat before, after;
        g_assert_cmpint(stat(holder, &before), ==, 0);
        record_writes(c->written);
        resume_job(f, c, checkpoint, JOB_STATUS_PENDING, rewritten);
        if (c->kind != COMMIT_ACTIVE) {
                /* Prepare again: no data written, and the header not written again (the file
                 * holding it unmodified). */
                g_assert_cmpuint(writes->len, ==, 0);
                g_assert_cmpint(stat(holder, &after), ==, 0);
                g_assert_cmpint(after.st_mtim.tv_sec, ==, before.st_mtim.tv_sec);
                g_assert_cmpint(after.st_mtim.tv_nsec, ==, before.st_mtim.tv_nsec);
        }
        assert_as_reference(f, c, flat);

        /* Again, as a record from before the end of the copy would bring it back: running, from
         * the start. */
        g_array_set_size(writes, 0);
        resume_job(f, c, 0, JOB_STATUS_RUNNING, rewritten);
        g_assert_cmpuint(written_since(0), ==, 0);
        stop_recording();
        assert_as_reference(f, c, flat);
}

/* ---- what resuming costs ----------------------------------------------------------------------- */

/* Resumed from a late checkpoint, the job writes exactly what the uninterrupted run wrote beyond
 * it, and nothing below it. */
static void test_late_checkpoint(Fixture *f, gconstpointer data) {
        const Case *c = data;
        g_autofree char *flat = make_chains(f, c);
        uint64_t full, beyond, size, progress = 0;
        JobStepResult out;
        void *job;

        record_writes(c->written);
        run_reference(f, c);
        g_autoptr(GArray) reference = take_writes();
        full = written_in(reference, 0);

        job = must_open(f, c, "work", (DriverResume) {});
        size = size_of(c, job);
        while (progress < size / 4 * 3)
                progress += run_steps(c, job, 1, false, &out);
        step(c, job, &(JobStepInput) { .checkpoint_only = true }, &out);
        g_assert_cmpuint(out.checkpoint_value, ==, progress);
        driver_of(c)->free(job);
        beyond = written_in(reference, progress);

        record_writes(c->written);
        resume_job(f, c, progress, JOB_STATUS_RUNNING, false);
        g_test_message("%s: %" PRIu64 " of %" PRIu64 " bytes written after the checkpoint at %" PRIu64, c->name,
                       written_since(0), full, progress);
        g_assert_cmpuint(written_since(0), ==, beyond);
        g_assert_cmpuint(written_since(0), <, full / 2);
        stop_recording();
        assert_as_reference(f, c, flat);
}

/* ---- checkpoints, step by step ------------------------------------------------------------------ */

static void test_checkpoints(Fixture *f, gconstpointer data) {
        const Case *c = data;
        g_autofree char *flat = make_chains(f, c), *error = NULL;
        JobStepResult out;
        uint64_t progress;
        void *job, *other = NULL;

        job = must_open(f, c, "work", (DriverResume) {});
        /* A step asked for one reports where it ended; one not asked reports none. */
        progress = run_steps(c, job, 3, true, &out);
        g_assert_cmpuint(out.checkpoint_value, ==, progress);
        g_assert_cmpuint(out.remaining, ==, size_of(c, job) - progress);
        progress += run_steps(c, job, 2, false, &out);
        /* Asked twice for checkpoint_only: the same position, nothing copied. */
        step(c, job, &(JobStepInput) { .checkpoint_only = true }, &out);
        g_assert_cmpuint(out.checkpoint_value, ==, progress);
        step(c, job, &(JobStepInput) { .checkpoint_only = true }, &out);
        g_assert_cmpuint(out.checkpoint_value, ==, progress);
        g_assert_cmpuint(out.progress, ==, 0);
        driver_of(c)->free(job);

        /* Resumed: the first step reports what is left from the checkpoint on. */
        job = must_open(f, c, "work", (DriverResume) { .resume = true, .offset = progress });
        step(c, job, &(JobStepInput) { .max_bytes = STEP_BYTES, .checkpoint = true }, &out);
        g_assert_cmpuint(out.checkpoint_value, ==, progress + out.progress);
        g_assert_cmpuint(out.remaining, ==, size_of(c, job) - progress - out.progress);
        /* The end is reported durable; in ready (active commit) a checkpoint reports it again. */
        run_to_finish(c, job);
        driver_of(c)->free(job);

        /* A checkpoint beyond the end is refused. */
        g_assert_cmpint(open_job(f, c, "work", NULL, (DriverResume) { .resume = true, .offset = 64 * 1024 * 1024 }, &other,
                                 &error),
                        ==, -ERANGE);
        g_assert_nonnull(strstr(error, "lies beyond the end of"));
        g_assert_null(other);
}

/* The flush that makes the end durable fails: an I/O error under on-target-error, never a
 * success. With stop, the job pauses and finishes once the flush works. */
static void test_flush_fails(Fixture *f, gconstpointer data) {
        const Case *c = data;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        void *job;
        Job *j;

        make_chain(f, "work", c->raw_base);
        job = must_open(f, c, "work", (DriverResume) {});
        p.id = "j";
        p.driver = driver_of(c);
        p.driver_data = job;
        p.on_target_error = JOB_ON_ERROR_STOP;
        failing_flush = c->written;
        image_set_fault_hook(hook);
        g_assert_cmpint(job_create(f->loop.registry, &p, &j, NULL), ==, 0);
        job_progress_set_remaining(j, size_of(c, job));
        job_ref(j);
        job_start(j);
        for (unsigned i = 0; !IN_SET(job_status(j), JOB_STATUS_PAUSED, JOB_STATUS_NULL); i++) {
                g_assert_cmpuint(i, <, 100000);
                test_loop_iterate(&f->loop);
        }
        g_assert_cmpint(job_status(j), ==, JOB_STATUS_PAUSED);
        g_assert_cmpint(job_io_status(j), ==, JOB_IO_STATUS_FAILED);
        stop_recording();
        g_assert_cmpint(job_user_resume(j, NULL), ==, 0);
        run_job(f, c, j);
        job_unref(j);
        g_assert_true(g_str_has_suffix(f->events->str, "waiting pending concluded null "));
        g_string_truncate(f->events, 0);

        /* With report, the job fails. */
        make_chain(f, "again", c->raw_base);
        job = must_open(f, c, "again", (DriverResume) {});
        p = (JobCreateParams) JOB_CREATE_PARAMS_DEFAULT;
        p.id = "k";
        p.driver = driver_of(c);
        p.driver_data = job;
        failing_flush = c->written;
        image_set_fault_hook(hook);
        g_assert_cmpint(job_create(f->loop.registry, &p, &j, NULL), ==, 0);
        job_progress_set_remaining(j, size_of(c, job));
        job_start(j);
        test_loop_run_until_empty(&f->loop);
        stop_recording();
        g_assert_nonnull(strstr(f->events->str, "aborting concluded ("));
}

#define TEST(path, fn, c) g_test_add(path, Fixture, c, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                const Case *c = &cases[i];
                struct {
                        const char *what;
                        void (*fn)(Fixture *f, gconstpointer data);
                } tests[] = {
                        { "stop", test_stop },
                        { "job-stop", test_job_stop },
                        { "kill", test_kill },
                        { "kill-after-prepare", test_kill_after_prepare },
                        { "checkpoints", test_checkpoints },
                };
                for (size_t t = 0; t < G_N_ELEMENTS(tests); t++) {
                        g_autofree char *name = g_strdup_printf("/chain-resume/%s/%s", c->name, tests[t].what);
                        TEST(name, tests[t].fn, c);
                }
        }
        TEST("/chain-resume/commit/late-checkpoint", test_late_checkpoint, &cases[0]);
        TEST("/chain-resume/stream-whole/late-checkpoint", test_late_checkpoint, &cases[4]);
        TEST("/chain-resume/commit-raw/flush-fails", test_flush_fails, &cases[1]);
        TEST("/chain-resume/stream-base/flush-fails", test_flush_fails, &cases[3]);
        return g_test_run();
}
