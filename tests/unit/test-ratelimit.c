/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The slice rule, step by step, on explicit times. */

#include <glib.h>

#include "ratelimit.h"

#define MS G_GUINT64_CONSTANT(1000000)
#define SLICE (100 * MS)

static void test_quota(void) {
        RateLimit rl = {};

        ratelimit_set_speed(&rl, 0, SLICE);
        g_assert_cmpuint(ratelimit_quota(&rl), ==, 0);
        ratelimit_set_speed(&rl, 1048576, SLICE);
        g_assert_cmpuint(ratelimit_quota(&rl), ==, 104857);
        ratelimit_set_speed(&rl, 10, SLICE);
        g_assert_cmpuint(ratelimit_quota(&rl), ==, 1);
        /* At least one byte per slice, however slow. */
        ratelimit_set_speed(&rl, 1, SLICE);
        g_assert_cmpuint(ratelimit_quota(&rl), ==, 1);
        /* No overflow at the top of the range. */
        ratelimit_set_speed(&rl, UINT64_MAX, SLICE);
        g_assert_cmpuint(ratelimit_quota(&rl), ==, UINT64_MAX / 10);
}

static void test_unlimited(void) {
        RateLimit rl = {};

        ratelimit_set_speed(&rl, 0, SLICE);
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, 1000, UINT64_MAX), ==, 0);
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, 1000, 0), ==, 0);
}

static void test_slices(void) {
        RateLimit rl = {};
        const uint64_t t0 = 5000 * MS;

        ratelimit_set_speed(&rl, 1000, SLICE);   /* 100 bytes per slice */

        /* Below the quota: go on. */
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0, 40), ==, 0);
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 10 * MS, 59), ==, 0);
        /* Reaching the quota: wait until the slice ends (t0 + 100 ms). */
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 20 * MS, 1), ==, 80 * MS);
        /* Asking again without dispatching: the same end. */
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 50 * MS, 0), ==, 50 * MS);
        /* At exactly the end the slice is not over yet, but its quota is paid for. */
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 100 * MS, 0), ==, 0);
        /* Dispatching in the same, stretched slice: 200 bytes → two slices. */
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 100 * MS, 100), ==, 100 * MS);
        /* Overshoot is carried: 550 bytes in total → 5.5 slices from t0. */
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 150 * MS, 350), ==, 400 * MS);
        /* After the stretched slice has ended, a new one starts from zero. */
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 551 * MS, 99), ==, 0);
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0 + 560 * MS, 300), ==, 390 * MS);
}

static void test_speed_change(void) {
        RateLimit rl = {};
        const uint64_t t0 = 5000 * MS;

        ratelimit_set_speed(&rl, 1000, SLICE);
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0, 300), ==, 300 * MS);
        /* A higher speed shortens the wait for what was already dispatched. */
        ratelimit_set_speed(&rl, 2000, SLICE);
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0, 0), ==, 150 * MS);
        /* Unlimited: no wait at all. */
        ratelimit_set_speed(&rl, 0, SLICE);
        g_assert_cmpuint(ratelimit_calculate_delay(&rl, t0, 0), ==, 0);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/ratelimit/quota", test_quota);
        g_test_add_func("/ratelimit/unlimited", test_unlimited);
        g_test_add_func("/ratelimit/slices", test_slices);
        g_test_add_func("/ratelimit/speed-change", test_speed_change);
        return g_test_run();
}
