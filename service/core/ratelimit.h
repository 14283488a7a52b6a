/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A byte-rate limiter with QEMU's slice rule (include/qemu/ratelimit.h):
 *
 *  - time is cut into slices (100 ms for jobs); a slice may carry 'quota' bytes, where
 *    quota = max(speed × slice / 1 s, 1), and a speed of 0 means "unlimited" (quota 0, no delay);
 *  - every dispatch adds its bytes to the current slice; while the slice holds less than its
 *    quota, the caller may go on at once;
 *  - once it holds the quota or more, the slice is stretched to cover all of it
 *    (end = start + dispatched / quota × slice) and the caller must wait until that end;
 *  - a dispatch after the (possibly stretched) end starts a new slice.
 *
 * Overshoot is carried: a 3-quota write waits three slices. The limiter is pure arithmetic on a
 * caller-supplied clock, so a test drives it with a fake one. */

#include <stdint.h>

#define RATELIMIT_JOB_SLICE_NS UINT64_C(100000000)

typedef struct RateLimit {
        uint64_t slice_ns;
        uint64_t slice_quota;       /* bytes per slice; 0 = unlimited */
        uint64_t slice_start;       /* ns, caller's clock */
        uint64_t slice_end;
        uint64_t dispatched;        /* bytes in the current slice */
} RateLimit;

void ratelimit_set_speed(RateLimit *rl, uint64_t bytes_per_second, uint64_t slice_ns);

/* Account 'bytes' at time 'now' and return how many ns the caller must wait before dispatching
 * more (0: go on). Calling with bytes == 0 asks for the delay without dispatching anything. */
uint64_t ratelimit_calculate_delay(RateLimit *rl, uint64_t now, uint64_t bytes);

static inline uint64_t ratelimit_quota(const RateLimit *rl) {
        return rl->slice_quota;
}
