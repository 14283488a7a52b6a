/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The real executor: job steps run on a small pool of worker threads, never on the event loop,
 * and the loop stays free to answer while a step blocks. */

#include <pthread.h>

#include "job.h"
#include "test-driver.h"
#include "event-loop.h"
#include "worker-pool.h"

typedef struct Loop {
        TestLoop t;
        unsigned n_null;                /* jobs gone without an error */
        bool allow_errors;              /* otherwise a job that fails fails the test */
        GString *events;
        unsigned n_empty;               /* JobObserver.empty */
        unsigned n_idle;                /* the pool's idle callback */
} Loop;

static void on_status(Job *j, JobStatus status, void *userdata) {
        Loop *l = userdata;

        g_assert_true(pthread_equal(pthread_self(), l->t.thread));
        if (status == JOB_STATUS_NULL) {
                if (!l->allow_errors)
                        g_assert_null(job_error(j));
                if (!job_error(j))
                        l->n_null++;
        }
        g_string_append_printf(l->events, "%s:%s ", job_id(j), job_status_to_string(status));
}

static void on_empty(JobRegistry *r, void *userdata) {
        Loop *l = userdata;
        g_assert_cmpuint(job_registry_n_live(r), ==, 0);
        l->n_empty++;
}

static const JobObserver observer = { .status_changed = on_status, .empty = on_empty };

static void on_idle(void *userdata) {
        Loop *l = userdata;
        g_assert_cmpuint(worker_pool_n_outstanding(l->t.pool), ==, 0);
        l->n_idle++;
}

static void loop_init(Loop *l, unsigned n_threads) {
        *l = (Loop) { .events = g_string_new(NULL) };
        test_loop_init(&l->t, n_threads, &observer, l);
        worker_pool_set_idle_callback(l->t.pool, on_idle, l);
        g_assert_cmpuint(worker_pool_n_threads(l->t.pool), ==, n_threads ?: WORKER_POOL_THREADS_DEFAULT);
}

static void loop_done(Loop *l) {
        test_loop_done(&l->t);
        g_string_free(l->events, TRUE);
}

/* ---- many jobs, few threads ------------------------------------------------------------------ */

typedef struct ThreadRecorder {
        pthread_mutex_t lock;
        pthread_t loop_thread;
        GArray *threads;
        unsigned steps;
        bool on_loop;
} ThreadRecorder;

static ThreadRecorder recorder = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void recording_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        unsigned *left = data;
        pthread_t self = pthread_self();
        bool known = false;

        pthread_mutex_lock(&recorder.lock);
        recorder.steps++;
        if (pthread_equal(self, recorder.loop_thread))
                recorder.on_loop = true;
        for (guint i = 0; i < recorder.threads->len; i++)
                known = known || pthread_equal(g_array_index(recorder.threads, pthread_t, i), self);
        if (!known)
                g_array_append_val(recorder.threads, self);
        pthread_mutex_unlock(&recorder.lock);

        out->progress = 1;
        out->has_remaining = true;
        out->remaining = --(*left);
        out->finished = *left == 0;
}

static const JobDriver recording_driver = {
        .type = JOB_TYPE_BACKUP,
        .step = recording_step,
        .free = g_free,
};

static void test_many_jobs(void) {
        const unsigned n_jobs = 500, n_steps = 20;
        Loop l;

        loop_init(&l, 2);
        recorder.loop_thread = pthread_self();
        recorder.threads = g_array_new(FALSE, FALSE, sizeof(pthread_t));

        for (unsigned i = 0; i < n_jobs; i++) {
                unsigned *left = g_new(unsigned, 1);
                JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
                Job *j;

                *left = n_steps;
                p.driver = &recording_driver;
                p.driver_data = left;
                g_assert_cmpint(job_create(l.t.registry, &p, &j, NULL), ==, 0);
                job_start(j);
        }
        test_loop_run_until_empty(&l.t);

        /* Every job ran to the end, 10 000 steps on just the pool's two threads. */
        g_assert_cmpuint(l.n_null, ==, n_jobs);
        g_assert_cmpuint(recorder.steps, ==, n_jobs * n_steps);
        g_assert_false(recorder.on_loop);
        g_assert_cmpuint(recorder.threads->len, >=, 1);
        g_assert_cmpuint(recorder.threads->len, <=, 2);

        g_array_free(recorder.threads, TRUE);
        loop_done(&l);
}

/* ---- the loop answers while a step blocks ------------------------------------------------ */

typedef struct Gate {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool entered, open;
        unsigned steps;
} Gate;

static void gate_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        Gate *g = data;

        pthread_mutex_lock(&g->lock);
        g->steps++;
        if (g->steps == 1) {
                /* Block until the event loop, which must stay free meanwhile, opens the gate. */
                g->entered = true;
                pthread_cond_broadcast(&g->cond);
                while (!g->open)
                        pthread_cond_wait(&g->cond, &g->lock);
        }
        pthread_mutex_unlock(&g->lock);

        out->progress = 1;
        out->finished = g->steps == 2;
}

static void gate_free(void *data) {
        (void) data;
}

static const JobDriver gate_driver = {
        .type = JOB_TYPE_BACKUP,
        .step = gate_step,
        .free = gate_free,
};

typedef struct GateTest {
        Gate *gate;
        Job *job;
        bool cancel;                    /* what the loop does meanwhile: cancel, or pause */
        bool acted_while_blocked;
} GateTest;

static int on_defer(sd_event_source *s, void *userdata) {
        GateTest *t = userdata;
        Gate *g = t->gate;

        pthread_mutex_lock(&g->lock);
        bool entered = g->entered;
        pthread_mutex_unlock(&g->lock);
        if (!entered) {
                /* The worker has not reached the gate yet: look again on the next iteration. */
                return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }

        /* The work is blocked on the worker, and here the loop answers a verb at once. */
        if (t->cancel) {
                /* A prepare that cannot be undone is in flight: the cancel is a no-op. */
                g_assert_cmpint(job_user_cancel(t->job, true, NULL), ==, 0);
                g_assert_false(job_is_cancelled(t->job));
                g_assert_cmpint(job_status(t->job), ==, JOB_STATUS_PENDING);
        } else {
                g_assert_cmpint(job_user_pause(t->job, NULL), ==, 0);
                g_assert_cmpint(job_status(t->job), ==, JOB_STATUS_RUNNING);
        }
        t->acted_while_blocked = true;

        pthread_mutex_lock(&g->lock);
        g->open = true;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
        return 0;
}

static void test_loop_free_while_step_blocks(void) {
        Gate gate = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
        GateTest t = { .gate = &gate };
        sd_event_source *defer = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Loop l;

        loop_init(&l, 1);
        p.id = "gate";
        p.driver = &gate_driver;
        p.driver_data = &gate;
        g_assert_cmpint(job_create(l.t.registry, &p, &t.job, NULL), ==, 0);
        job_start(t.job);

        g_assert_cmpint(sd_event_add_defer(l.t.event, &defer, on_defer, &t), >=, 0);
        test_loop_run_until_status(&l.t, t.job, JOB_STATUS_PAUSED);
        g_assert_true(t.acted_while_blocked);
        g_assert_cmpuint(gate.steps, ==, 1);

        g_assert_cmpint(job_user_resume(t.job, NULL), ==, 0);
        test_loop_run_until_empty(&l.t);
        g_assert_cmpstr(l.events->str, ==, "gate:created gate:running gate:paused gate:running gate:waiting "
                                           "gate:pending gate:concluded gate:null ");
        sd_event_source_unref(defer);
        loop_done(&l);
}

/* ---- a cancel racing a prepare that cannot be undone, on real threads ------------------------ */

static void final_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        out->progress = 1;
        out->finished = true;
}

static int final_prepare(Job *j, void *data, char **ret_error) {
        Gate *g = data;

        /* Blocks like a slow pivot, and looks at nothing but its own data meanwhile: under
         * ThreadSanitizer a read of the job's cancel state here would be reported. */
        pthread_mutex_lock(&g->lock);
        g->entered = true;
        pthread_cond_broadcast(&g->cond);
        while (!g->open)
                pthread_cond_wait(&g->cond, &g->lock);
        g->steps++;                     /* the pivot */
        pthread_mutex_unlock(&g->lock);
        return 0;
}

static const JobDriver final_gate_driver = {
        .type = JOB_TYPE_COMMIT,
        .prepare_is_final = true,
        .step = final_step,
        .prepare = final_prepare,
        .free = gate_free,
};

static void test_cancel_during_final_prepare(void) {
        Gate gate = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
        GateTest t = { .gate = &gate, .cancel = true };
        sd_event_source *defer = NULL;
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Loop l;

        loop_init(&l, 2);
        p.id = "commit";
        p.driver = &final_gate_driver;
        p.driver_data = &gate;
        g_assert_cmpint(job_create(l.t.registry, &p, &t.job, NULL), ==, 0);
        job_start(t.job);

        /* The defer polls until the prepare is blocked; below every other source, so that it does
         * not starve the delivery of the step before it. */
        g_assert_cmpint(sd_event_add_defer(l.t.event, &defer, on_defer, &t), >=, 0);
        g_assert_cmpint(sd_event_source_set_priority(defer, SD_EVENT_PRIORITY_IDLE), >=, 0);
        test_loop_run_until_empty(&l.t);

        /* It pivoted, and it says so: no "Operation canceled" (on_status checks the error). */
        g_assert_true(t.acted_while_blocked);
        g_assert_cmpuint(gate.steps, ==, 1);
        g_assert_cmpstr(l.events->str, ==, "commit:created commit:running commit:waiting commit:pending "
                                           "commit:concluded commit:null ");
        sd_event_source_unref(defer);
        loop_done(&l);
}

/* ---- timers: a throttled job sleeps on sd-event and wakes ------------------------------------ */

static void test_throttled_job(void) {
        TestDriverConfig c = { .total = 3 * 65536, .chunk = 1 << 20 };
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        g_autoptr(GString) calls = g_string_new(NULL);
        Job *j;
        Loop l;

        loop_init(&l, 0);
        p.id = "slow";
        p.driver = &test_driver_backup;
        p.driver_data = test_driver_state_new(&c, calls);
        p.auto_dismiss = false;
        p.speed = 655360;               /* 65536 bytes per slice: three slices, two sleeps */
        g_assert_cmpint(job_create(l.t.registry, &p, &j, NULL), ==, 0);
        TestDriverState *s = job_driver_data(j);
        job_start(j);

        test_loop_run_until_status(&l.t, j, JOB_STATUS_CONCLUDED);
        g_assert_cmpuint(s->steps, ==, 3);
        g_assert_cmpuint(s->last_max_bytes, ==, 65536);
        g_assert_cmpuint(job_current_progress(j), ==, 3 * 65536);
        g_assert_cmpstr(calls->str, ==, "slow:prepare slow:commit slow:clean");
        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
        loop_done(&l);
}

typedef struct Call {
        pthread_t loop_thread, ran_on;
        int ran, done;
} Call;

static void call_run(void *userdata) {
        Call *c = userdata;
        c->ran_on = pthread_self();
        c->ran++;
}

static void call_done(void *userdata) {
        Call *c = userdata;
        g_assert_true(pthread_equal(pthread_self(), c->loop_thread));
        g_assert_cmpint(c->ran, ==, 1);
        c->done++;
}

static void test_plain_calls(void) {
        Call calls[50];
        Loop l;

        loop_init(&l, 3);
        for (unsigned i = 0; i < G_N_ELEMENTS(calls); i++) {
                calls[i] = (Call) { .loop_thread = pthread_self() };
                g_assert_cmpint(worker_pool_call(l.t.pool, 0, call_run, call_done, &calls[i]), ==, 0);
        }
        for (unsigned i = 0; i < G_N_ELEMENTS(calls); i++) {
                while (calls[i].done == 0)
                        test_loop_iterate(&l.t);
                g_assert_cmpint(calls[i].done, ==, 1);
                g_assert_false(pthread_equal(calls[i].ran_on, pthread_self()));
        }
        g_assert_cmpuint(worker_pool_n_outstanding(l.t.pool), ==, 0);
        g_assert_cmpuint(l.n_idle, >=, 1);
        loop_done(&l);
}

/* ---- shutting down with jobs and calls alive --------------------------------------------------- */

static void gate_wait_entered(Gate *g) {
        pthread_mutex_lock(&g->lock);
        while (!g->entered)
                pthread_cond_wait(&g->cond, &g->lock);
        pthread_mutex_unlock(&g->lock);
}

static void gate_open(Gate *g) {
        pthread_mutex_lock(&g->lock);
        g->open = true;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
}

static Job *shutdown_job(Loop *l, const char *id, const JobDriver *d, void *data, bool auto_finalize,
                         bool auto_dismiss, uint64_t speed) {
        JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
        Job *j;

        p.id = id;
        p.driver = d;
        p.driver_data = data;
        p.auto_finalize = auto_finalize;
        p.auto_dismiss = auto_dismiss;
        p.speed = speed;
        g_assert_cmpint(job_create(l->t.registry, &p, &j, NULL), ==, 0);
        job_start(j);
        return j;
}

/* What a daemon does when its bus goes away: every job is cancelled (or dismissed), and whoever
 * would have dismissed them will not. */
static void unref_job(gpointer j) {
        job_unref(j);
}

static void cancel_everything(JobRegistry *r) {
        g_autoptr(GPtrArray) jobs = g_ptr_array_new_with_free_func(unref_job);

        for (Job *j = job_registry_first(r); j; j = job_registry_next(j))
                g_ptr_array_add(jobs, job_ref(j));
        for (guint i = 0; i < jobs->len; i++) {
                Job *j = jobs->pdata[i];
                if (job_status(j) == JOB_STATUS_CONCLUDED)
                        g_assert_cmpint(job_dismiss(j, NULL), ==, 0);
                else {
                        job_set_auto_dismiss(j);
                        if (job_accepts_verb(j, JOB_VERB_CANCEL))
                                g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
                }
        }
}

static void test_shutdown_with_live_jobs(void) {
        Gate gate = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
        g_autoptr(GString) calls = g_string_new(NULL);
        Call call = { .loop_thread = pthread_self() };
        Loop l;

        /* Three threads: one owner may occupy two, one of them stays blocked. */
        loop_init(&l, 3);
        l.allow_errors = true;

        /* A step blocked in I/O, a throttled job asleep, one that waits to be finalized, one to
         * be dismissed, one the user paused, and a plain call in flight. */
        Job *blocked = shutdown_job(&l, "blocked", &gate_driver, &gate, true, true, 0);
        TestDriverConfig slow = { .total = 100 * 10485, .chunk = 1 << 20 };
        shutdown_job(&l, "slow", &test_driver_backup, test_driver_state_new(&slow, calls), true, true, 104857);
        TestDriverConfig one = { .total = 1 };
        Job *pending = shutdown_job(&l, "pending", &test_driver_backup, test_driver_state_new(&one, calls), false,
                                    true, 0);
        Job *done = shutdown_job(&l, "done", &test_driver_backup, test_driver_state_new(&one, calls), true, false, 0);
        Job *paused = shutdown_job(&l, "paused", &test_driver_backup, test_driver_state_new(&slow, calls), true,
                                   true, 104857);
        g_assert_cmpint(job_user_pause(paused, NULL), ==, 0);
        gate_wait_entered(&gate);
        test_loop_run_until_status(&l.t, pending, JOB_STATUS_PENDING);
        test_loop_run_until_status(&l.t, done, JOB_STATUS_CONCLUDED);
        test_loop_run_until_status(&l.t, paused, JOB_STATUS_PAUSED);
        g_assert_cmpint(worker_pool_call(l.t.pool, 0, call_run, call_done, &call), ==, 0);
        g_assert_cmpuint(job_registry_count(l.t.registry), ==, 5);

        cancel_everything(l.t.registry);

        /* The blocked step cannot be interrupted: the registry stays alive while it runs. */
        test_loop_run_for(&l.t, 50000);
        g_assert_cmpuint(l.n_empty, ==, 0);
        g_assert_cmpuint(job_registry_n_live(l.t.registry), ==, 1);
        g_assert_cmpint(job_status(blocked), ==, JOB_STATUS_RUNNING);
        g_assert_cmpint(call.done, ==, 1);

        /* Its I/O returns: the job ends, the registry is empty, the pool idle, and both can go. */
        gate_open(&gate);
        for (unsigned i = 0; l.n_empty == 0 || worker_pool_n_outstanding(l.t.pool) > 0; i++) {
                g_assert_cmpuint(i, <, 1000);
                test_loop_iterate(&l.t);
        }
        g_assert_cmpuint(l.n_empty, ==, 1);
        g_assert_cmpuint(l.n_idle, >=, 1);
        g_assert_cmpuint(job_registry_n_live(l.t.registry), ==, 0);
        g_assert_nonnull(strstr(l.events->str, "blocked:aborting blocked:concluded blocked:null"));
        g_assert_nonnull(strstr(l.events->str, "done:null"));
        g_assert_nonnull(strstr(calls->str, "slow:abort slow:clean"));
        g_assert_nonnull(strstr(calls->str, "pending:abort pending:clean"));
        g_assert_nonnull(strstr(calls->str, "paused:abort paused:clean"));
        g_assert_cmpuint(l.n_null, ==, 1);      /* only 'done' ended without an error */
        loop_done(&l);
}

typedef struct Blocker {
        Gate *gate;
        bool ran, done;
} Blocker;

static void blocker_run(void *userdata) {
        Blocker *b = userdata;

        if (b->gate) {
                pthread_mutex_lock(&b->gate->lock);
                b->gate->entered = true;
                pthread_cond_broadcast(&b->gate->cond);
                while (!b->gate->open)
                        pthread_cond_wait(&b->gate->cond, &b->gate->lock);
                pthread_mutex_unlock(&b->gate->lock);
        }
        __atomic_store_n(&b->ran, true, __ATOMIC_SEQ_CST);
}

static void blocker_done(void *userdata) {
        Blocker *b = userdata;
        b->done = true;
}

static void *open_later(void *userdata) {
        g_usleep(50000);
        gate_open(userdata);
        return NULL;
}

static void test_free_with_calls_outstanding(void) {
        Gate gate = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
        Blocker quick = {}, blocking = { .gate = &gate }, queued = {};
        sd_event *e = NULL;
        WorkerPool *p = NULL;
        pthread_t opener;

        g_assert_cmpint(sd_event_new(&e), >=, 0);
        g_assert_cmpint(worker_pool_new(e, 1, &p), ==, 0);

        /* One call ran but its result was never delivered (the loop stopped), one runs when the
         * pool is freed, one waits behind it. */
        g_assert_cmpint(worker_pool_call(p, 0, blocker_run, blocker_done, &quick), ==, 0);
        while (!__atomic_load_n(&quick.ran, __ATOMIC_SEQ_CST))
                g_usleep(1000);
        g_assert_cmpint(worker_pool_call(p, 0, blocker_run, blocker_done, &blocking), ==, 0);
        g_assert_cmpint(worker_pool_call(p, 0, blocker_run, blocker_done, &queued), ==, 0);
        gate_wait_entered(&gate);
        g_assert_cmpuint(worker_pool_n_outstanding(p), ==, 3);

        /* Freeing waits for the running call (opened from another thread meanwhile), never starts
         * the queued one, and calls no done callback: no abort, nothing leaked (ASan). */
        g_assert_cmpint(pthread_create(&opener, NULL, open_later, &gate), ==, 0);
        g_assert_null(worker_pool_free(p));
        g_assert_cmpint(pthread_join(opener, NULL), ==, 0);
        g_assert_true(blocking.ran);
        g_assert_false(quick.done || blocking.done || queued.done);
        sd_event_unref(e);
}

/* ---- fairness between owners ------------------------------------------------------------------- */

typedef struct Fair {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool open;                      /* the hung mount comes back */
        unsigned running[3], max_running[3];
        GString *order;
} Fair;

typedef struct FairCall {
        Fair *fair;
        unsigned owner;
        const char *name;
        bool blocks;
        bool done;
} FairCall;

static void fair_run(void *userdata) {
        FairCall *c = userdata;
        Fair *f = c->fair;

        pthread_mutex_lock(&f->lock);
        g_string_append_printf(f->order, "%s ", c->name);
        f->running[c->owner]++;
        f->max_running[c->owner] = MAX(f->max_running[c->owner], f->running[c->owner]);
        pthread_cond_broadcast(&f->cond);
        while (c->blocks && !f->open)
                pthread_cond_wait(&f->cond, &f->lock);
        f->running[c->owner]--;
        pthread_mutex_unlock(&f->lock);
}

static void fair_done(void *userdata) {
        FairCall *c = userdata;
        c->done = true;
}

static void fair_open(Fair *f) {
        pthread_mutex_lock(&f->lock);
        f->open = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
}

static void fair_wait_running(Fair *f, unsigned owner, unsigned n) {
        pthread_mutex_lock(&f->lock);
        while (f->running[owner] < n)
                pthread_cond_wait(&f->cond, &f->lock);
        pthread_mutex_unlock(&f->lock);
}

static void test_owner_cap(void) {
        Fair fair = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .order = g_string_new(NULL) };
        FairCall hung[6], other = { .fair = &fair, .owner = 2, .name = "b" };
        Loop l;

        loop_init(&l, 3);
        g_assert_cmpuint(worker_pool_owner_cap(l.t.pool), ==, 2);

        /* Owner 1's files hang: six calls, each blocking until the mount comes back. */
        for (unsigned i = 0; i < G_N_ELEMENTS(hung); i++) {
                hung[i] = (FairCall) { .fair = &fair, .owner = 1, .name = "a", .blocks = true };
                g_assert_cmpint(worker_pool_call(l.t.pool, 1, fair_run, fair_done, &hung[i]), ==, 0);
        }
        fair_wait_running(&fair, 1, 2);

        /* It holds two of the three workers, never the third: owner 2 is served meanwhile. */
        g_assert_cmpint(worker_pool_call(l.t.pool, 2, fair_run, fair_done, &other), ==, 0);
        while (!other.done)
                test_loop_iterate(&l.t);
        g_assert_cmpuint(fair.max_running[1], ==, 2);
        for (unsigned i = 0; i < G_N_ELEMENTS(hung); i++)
                g_assert_false(hung[i].done);
        g_assert_cmpuint(worker_pool_n_outstanding(l.t.pool), ==, G_N_ELEMENTS(hung));

        /* The mount comes back: everything finishes, still two at a time. */
        fair_open(&fair);
        while (worker_pool_n_outstanding(l.t.pool) > 0)
                test_loop_iterate(&l.t);
        g_assert_cmpuint(fair.max_running[1], ==, 2);
        g_assert_cmpstr(fair.order->str, ==, "a a b a a a a ");
        g_string_free(fair.order, TRUE);
        loop_done(&l);
}

static void test_owners_take_turns(void) {
        Fair fair = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .order = g_string_new(NULL) };
        FairCall first = { .fair = &fair, .owner = 0, .name = "c", .blocks = true };
        FairCall a[3], b[2];
        Loop l;

        /* One thread (a cap of one), held by a call of owner 0 while the others queue up: owner 1
         * first with three calls, then owner 2 with two. */
        loop_init(&l, 1);
        g_assert_cmpuint(worker_pool_owner_cap(l.t.pool), ==, 1);
        g_assert_cmpint(worker_pool_call(l.t.pool, 0, fair_run, fair_done, &first), ==, 0);
        fair_wait_running(&fair, 0, 1);
        for (unsigned i = 0; i < G_N_ELEMENTS(a); i++) {
                a[i] = (FairCall) { .fair = &fair, .owner = 1, .name = i == 0 ? "a1" : i == 1 ? "a2" : "a3" };
                g_assert_cmpint(worker_pool_call(l.t.pool, 1, fair_run, fair_done, &a[i]), ==, 0);
        }
        for (unsigned i = 0; i < G_N_ELEMENTS(b); i++) {
                b[i] = (FairCall) { .fair = &fair, .owner = 2, .name = i == 0 ? "b1" : "b2" };
                g_assert_cmpint(worker_pool_call(l.t.pool, 2, fair_run, fair_done, &b[i]), ==, 0);
        }

        /* Round robin, one call per turn: owner 2 does not wait behind all of owner 1's. */
        fair_open(&fair);
        while (worker_pool_n_outstanding(l.t.pool) > 0)
                test_loop_iterate(&l.t);
        g_assert_cmpstr(fair.order->str, ==, "c a1 b1 a2 b2 a3 ");
        g_string_free(fair.order, TRUE);
        loop_done(&l);
}

/* Steps of owner 1's jobs hang; owner 0's job runs beside them. */
static void fair_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        FairCall *c = data;

        fair_run(c);
        out->progress = 1;
        out->finished = true;
}

static void fair_free(void *data) {
        (void) data;
}

static const JobDriver fair_driver = {
        .type = JOB_TYPE_BACKUP,
        .step = fair_step,
        .free = fair_free,
};

static void test_owner_cap_jobs(void) {
        Fair fair = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .order = g_string_new(NULL) };
        FairCall calls[3] = {
                { .fair = &fair, .owner = 1, .name = "hung0", .blocks = true },
                { .fair = &fair, .owner = 1, .name = "hung1", .blocks = true },
                { .fair = &fair, .owner = 0, .name = "root" },
        };
        Job *jobs[3];
        Loop l;

        loop_init(&l, 2);
        for (unsigned i = 0; i < G_N_ELEMENTS(calls); i++) {
                JobCreateParams p = JOB_CREATE_PARAMS_DEFAULT;
                p.owner = calls[i].owner * 1000;
                p.id = calls[i].name;
                p.driver = &fair_driver;
                p.driver_data = &calls[i];
                p.auto_dismiss = false;
                g_assert_cmpint(job_create(l.t.registry, &p, &jobs[i], NULL), ==, 0);
                g_assert_cmpuint(job_owner(jobs[i]), ==, calls[i].owner * 1000);
                job_start(jobs[i]);
        }

        /* Owner 1000's first step hangs on one worker, its second waits for that worker; root's
         * job takes the other and finishes. */
        test_loop_run_until_status(&l.t, jobs[2], JOB_STATUS_CONCLUDED);
        g_assert_cmpint(job_status(jobs[0]), ==, JOB_STATUS_RUNNING);
        g_assert_cmpint(job_status(jobs[1]), ==, JOB_STATUS_RUNNING);
        g_assert_cmpuint(fair.max_running[1], ==, 1);

        fair_open(&fair);
        test_loop_run_until_status(&l.t, jobs[0], JOB_STATUS_CONCLUDED);
        test_loop_run_until_status(&l.t, jobs[1], JOB_STATUS_CONCLUDED);
        g_assert_cmpuint(fair.max_running[1], ==, 1);
        /* hung0 and root start on two workers at once: which of the two threads notes its start
         * first is up to the scheduler (under load root does, now and then). What the cap
         * decides is that hung1 starts only after hung0, after both of them. */
        if (!g_str_equal(fair.order->str, "root hung0 hung1 "))
                g_assert_cmpstr(fair.order->str, ==, "hung0 root hung1 ");
        for (unsigned i = 0; i < G_N_ELEMENTS(jobs); i++)
                g_assert_cmpint(job_dismiss(jobs[i], NULL), ==, 0);
        g_string_free(fair.order, TRUE);
        loop_done(&l);
}

static void test_bad_thread_count(void) {
        sd_event *e = NULL;
        WorkerPool *p = NULL;

        g_assert_cmpint(sd_event_new(&e), >=, 0);
        g_assert_cmpint(worker_pool_new(e, WORKER_POOL_THREADS_MAX + 1, &p), ==, -EINVAL);
        g_assert_null(p);
        sd_event_unref(e);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/worker-pool/many-jobs-few-threads", test_many_jobs);
        g_test_add_func("/worker-pool/loop-free-while-step-blocks", test_loop_free_while_step_blocks);
        g_test_add_func("/worker-pool/cancel-during-final-prepare", test_cancel_during_final_prepare);
        g_test_add_func("/worker-pool/throttled-job", test_throttled_job);
        g_test_add_func("/worker-pool/plain-calls", test_plain_calls);
        g_test_add_func("/worker-pool/shutdown-with-live-jobs", test_shutdown_with_live_jobs);
        g_test_add_func("/worker-pool/free-with-calls-outstanding", test_free_with_calls_outstanding);
        g_test_add_func("/worker-pool/fair/owner-cap", test_owner_cap);
        g_test_add_func("/worker-pool/fair/owners-take-turns", test_owners_take_turns);
        g_test_add_func("/worker-pool/fair/owner-cap-jobs", test_owner_cap_jobs);
        g_test_add_func("/worker-pool/bad-thread-count", test_bad_thread_count);
        return g_test_run();
}
