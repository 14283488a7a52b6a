/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "event-loop.h"

#define ITERATIONS_MAX 10000000U

void test_loop_init(TestLoop *l, unsigned n_threads, const JobObserver *observer, void *userdata) {
        *l = (TestLoop) { .thread = pthread_self() };
        g_assert_cmpint(sd_event_new(&l->event), >=, 0);
        g_assert_cmpint(worker_pool_new(l->event, n_threads, &l->pool), ==, 0);
        g_assert_cmpint(job_registry_new(&worker_pool_executor, l->pool, &l->registry), ==, 0);
        job_registry_set_observer(l->registry, observer, userdata);
}

void test_loop_done(TestLoop *l) {
        g_assert_cmpuint(job_registry_count(l->registry), ==, 0);
        job_registry_free(l->registry);
        worker_pool_free(l->pool);
        sd_event_unref(l->event);
}

void test_loop_iterate(TestLoop *l) {
        g_assert_cmpint(sd_event_run(l->event, 10 * G_USEC_PER_SEC), >=, 0);
}

void test_loop_run_until_empty(TestLoop *l) {
        for (unsigned i = 0; job_registry_count(l->registry) > 0; i++) {
                g_assert_cmpuint(i, <, ITERATIONS_MAX);
                test_loop_iterate(l);
        }
}

void test_loop_run_until_status(TestLoop *l, Job *j, JobStatus status) {
        for (unsigned i = 0; job_status(j) != status; i++) {
                g_assert_cmpuint(i, <, ITERATIONS_MAX);
                test_loop_iterate(l);
        }
}

void test_loop_run_for(TestLoop *l, uint64_t usec) {
        uint64_t end = g_get_monotonic_time() + usec;

        for (int64_t now; (now = g_get_monotonic_time()) < (int64_t) end;)
                g_assert_cmpint(sd_event_run(l->event, end - now), >=, 0);
}
