/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>

#include "test-driver.h"

static void log_hook(Job *j, TestDriverState *s, const char *hook) {
        if (!s->log)
                return;
        if (s->log->len > 0)
                g_string_append_c(s->log, ' ');
        g_string_append_printf(s->log, "%s:%s", job_id(j), hook);
}

static void test_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        TestDriverState *s = data;
        const TestDriverConfig *c = &s->config;

        s->steps++;
        s->last_max_bytes = in->max_bytes;

        if (c->fail_at_step == s->steps) {
                out->finished = true;
                out->ret = c->fail_ret;
                out->error = c->fail_message ? g_strdup(c->fail_message) : NULL;
                return;
        }

        if (c->io_error_at_step > 0 && s->steps >= c->io_error_at_step &&
            (s->steps - c->io_error_at_step) % (c->io_error_every ?: 1) == 0 &&
            (s->steps - c->io_error_at_step) / (c->io_error_every ?: 1) < (c->io_error_repeat ?: 1)) {
                JobErrorAction a = job_step_io_error(j, out, c->io_error_on_source, c->io_error_on_source,
                                                     c->io_error, "injected error at offset %" G_GUINT64_FORMAT,
                                                     s->offset);
                /* ignore and stop: keep the position, so the range is retried later. */
                (void) a;
                return;
        }

        if (s->offset < c->total) {
                uint64_t n = c->chunk ?: 65536;
                if (in->max_bytes > 0 && !c->ignore_max_bytes)
                        n = MIN(n, in->max_bytes);
                n = MIN(n, c->total - s->offset);
                s->offset += n;
                out->progress = n;
                out->dispatched = n;
                out->has_remaining = true;
                out->remaining = c->total - s->offset;
                if (s->offset < c->total)
                        return;
                if (c->mirror) {
                        out->ready = true;
                        out->idle_ns = c->idle_ns ?: 100 * G_GUINT64_CONSTANT(1000000);
                        return;
                }
                out->finished = true;
                return;
        }

        if (!c->mirror) {
                out->finished = true;
                return;
        }

        /* In ready: wait for complete or a soft cancel. */
        if (in->complete_requested || in->cancel_requested) {
                log_hook(j, s, in->complete_requested ? "complete" : "soft-cancel");
                s->soft_cancelled = in->cancel_requested;
                out->finished = true;
                return;
        }
        out->idle_ns = c->idle_ns ?: 100 * G_GUINT64_CONSTANT(1000000);
}

static int test_prepare(Job *j, void *data, char **ret_error) {
        TestDriverState *s = data;

        log_hook(j, s, "prepare");
        if (s->config.prepare_ret < 0 && s->config.prepare_message)
                *ret_error = g_strdup(s->config.prepare_message);
        return s->config.prepare_ret;
}

static int test_prepare_final(Job *j, void *data, char **ret_error) {
        TestDriverState *s = data;

        int r = test_prepare(j, data, ret_error);

        /* Decided from what the step saw, never from the job's state: this runs on a worker. The
         * pivot happens even when prepare then fails, as a real one may fail halfway. */
        if (!s->soft_cancelled)
                log_hook(j, s, "pivot");
        return r;
}

static void test_commit(Job *j, void *data) {
        log_hook(j, data, "commit");
}

static void test_abort(Job *j, void *data) {
        log_hook(j, data, "abort");
}

static void test_clean(Job *j, void *data) {
        log_hook(j, data, "clean");
}

static bool test_cancel(Job *j, void *data, bool force) {
        TestDriverState *s = data;

        if (s->config.keep_soft_always)
                return force;
        /* QEMU's mirror: before ready every cancel is a force cancel. */
        return force || !job_status_is_ready(job_status(j));
}

static int test_complete(Job *j, void *data, char **ret_error) {
        (void) j;
        (void) data;
        (void) ret_error;
        return 0;
}

static void test_free(void *data) {
        g_free(data);
}

const JobDriver test_driver_backup = {
        .type = JOB_TYPE_BACKUP,
        .step = test_step,
        .prepare = test_prepare,
        .commit = test_commit,
        .abort = test_abort,
        .clean = test_clean,
        .free = test_free,
};

const JobDriver test_driver_mirror = {
        .type = JOB_TYPE_MIRROR,
        .step = test_step,
        .prepare = test_prepare,
        .commit = test_commit,
        .abort = test_abort,
        .clean = test_clean,
        .cancel = test_cancel,
        .complete = test_complete,
        .free = test_free,
};

const JobDriver test_driver_final = {
        .type = JOB_TYPE_COMMIT,
        .prepare_is_final = true,
        .step = test_step,
        .prepare = test_prepare_final,
        .commit = test_commit,
        .abort = test_abort,
        .clean = test_clean,
        .cancel = test_cancel,
        .complete = test_complete,
        .free = test_free,
};

TestDriverState *test_driver_state_new(const TestDriverConfig *c, GString *log) {
        TestDriverState *s = g_new0(TestDriverState, 1);
        s->config = *c;
        s->log = log;
        return s;
}
