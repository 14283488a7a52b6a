/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* How much one step of a copying job does. Handing a step back to the event loop and the next
 * one to a worker costs tens of microseconds, about what copying a chunk costs: so an unthrottled
 * step keeps copying chunk after chunk for up to STEP_TIME_NS, and a throttled one copies the
 * limiter's quota (JobStepInput.max_bytes). Either way the job reaches a pause point within
 * about STEP_TIME_NS of work, well inside the 100 ms the API promises. */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "job-driver.h"
#include "macro.h"

#define STEP_TIME_NS (20 * NSEC_PER_MSEC)
#define STEP_BYTES_MAX (UINT64_C(256) << 20)
/* Ranges that need no copy are skipped without I/O; a step skips this many at most before it
 * returns, so that even a huge sparse image keeps its pause points close together. */
#define STEP_SKIPS_MAX 1024U
/* Zeroes are written a bounded range at a time: a device without discard support, or a qcow2
 * image that needs an L2 table per 512 MiB of zeroes, takes real time for them. */
#define STEP_ZEROES_MAX (UINT64_C(64) << 20)

typedef struct StepBudget {
        uint64_t deadline_ns;
        uint64_t bytes_left;
} StepBudget;

static inline uint64_t step_budget_now(void) {
        struct timespec ts;
        assert_se(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

static inline StepBudget step_budget_start(const JobStepInput *in) {
        return (StepBudget) {
                .deadline_ns = step_budget_now() + STEP_TIME_NS,
                .bytes_left = in->max_bytes > 0 ? in->max_bytes : STEP_BYTES_MAX,
        };
}

/* May the step do more? Checked before each chunk: the first always goes ahead. */
static inline bool step_budget_left(const StepBudget *b) {
        return b->bytes_left > 0 && step_budget_now() < b->deadline_ns;
}

/* At most this many bytes of copy now. */
static inline uint64_t step_budget_clamp(const StepBudget *b, uint64_t n) {
        return MIN(n, b->bytes_left);
}

static inline void step_budget_spend(StepBudget *b, uint64_t n) {
        b->bytes_left -= MIN(n, b->bytes_left);
}
