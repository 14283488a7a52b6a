/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "fake-executor.h"
#include "job.h"

typedef struct FakeTimer {
        Job *job;
        uint64_t deadline;
} FakeTimer;

static uint64_t fake_now(void *userdata) {
        FakeExecutor *e = userdata;
        return e->now;
}

static int fake_attach(void *userdata, Job *j) {
        FakeExecutor *e = userdata;
        FakeTimer *t = g_new0(FakeTimer, 1);

        t->job = j;
        t->deadline = UINT64_MAX;
        job_set_executor_data(j, t);
        g_ptr_array_add(e->timers, t);
        e->n_attached++;
        return 0;
}

static void fake_detach(void *userdata, Job *j) {
        FakeExecutor *e = userdata;
        FakeTimer *t = job_executor_data(j);

        g_assert_nonnull(t);
        g_assert_true(g_ptr_array_remove(e->timers, t));
        g_free(t);
        e->n_attached--;
}

static void fake_submit(void *userdata, Job *j) {
        FakeExecutor *e = userdata;
        g_queue_push_tail(&e->queue, j);
        e->n_submitted++;
}

static void fake_set_timer(void *userdata, Job *j, uint64_t deadline) {
        FakeTimer *t = job_executor_data(j);
        (void) userdata;
        t->deadline = deadline;
}

const JobExecutor fake_executor_ops = {
        .now = fake_now,
        .attach = fake_attach,
        .detach = fake_detach,
        .submit = fake_submit,
        .set_timer = fake_set_timer,
};

void fake_executor_init(FakeExecutor *e) {
        *e = (FakeExecutor) {
                .now = 1000 * G_GUINT64_CONSTANT(1000000000),
                .timers = g_ptr_array_new(),
        };
        g_queue_init(&e->queue);
        g_queue_init(&e->held);
}

void fake_executor_done(FakeExecutor *e) {
        g_assert_cmpuint(g_queue_get_length(&e->queue), ==, 0);
        g_assert_cmpuint(g_queue_get_length(&e->held), ==, 0);
        g_assert_cmpuint(e->timers->len, ==, 0);
        g_ptr_array_free(e->timers, TRUE);
}

bool fake_run_one(FakeExecutor *e) {
        Job *j = g_queue_pop_head(&e->queue);
        if (!j)
                return false;
        job_work_run(j);
        job_work_done(j);
        return true;
}

bool fake_run_begin(FakeExecutor *e) {
        Job *j = g_queue_pop_head(&e->queue);
        if (!j)
                return false;
        job_work_run(j);
        g_queue_push_tail(&e->held, j);
        return true;
}

bool fake_run_end(FakeExecutor *e) {
        Job *j = g_queue_pop_head(&e->held);
        if (!j)
                return false;
        job_work_done(j);
        return true;
}

void fake_run_queue(FakeExecutor *e) {
        for (unsigned i = 0; fake_run_one(e); i++)
                g_assert_cmpuint(i, <, 1000000);
}

static FakeTimer *fake_earliest(FakeExecutor *e) {
        FakeTimer *best = NULL;
        for (guint i = 0; i < e->timers->len; i++) {
                FakeTimer *t = e->timers->pdata[i];
                if (t->deadline != UINT64_MAX && (!best || t->deadline < best->deadline))
                        best = t;
        }
        return best;
}

uint64_t fake_next_deadline(FakeExecutor *e) {
        FakeTimer *t = fake_earliest(e);
        return t ? t->deadline : UINT64_MAX;
}

bool fake_fire_next_timer(FakeExecutor *e) {
        FakeTimer *t = fake_earliest(e);
        if (!t)
                return false;
        if (t->deadline > e->now)
                e->now = t->deadline;
        t->deadline = UINT64_MAX;
        job_timer_fired(t->job);
        return true;
}

void fake_run_until_idle(FakeExecutor *e) {
        for (unsigned i = 0;; i++) {
                g_assert_cmpuint(i, <, 1000000);
                if (fake_run_one(e))
                        continue;
                if (!fake_fire_next_timer(e))
                        return;
        }
}

void fake_advance(FakeExecutor *e, uint64_t ns) {
        uint64_t end = e->now + ns;

        for (;;) {
                fake_run_queue(e);
                FakeTimer *t = fake_earliest(e);
                if (!t || t->deadline > end)
                        break;
                fake_fire_next_timer(e);
        }
        e->now = end;
}
