/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "macro.h"
#include "ratelimit.h"

void ratelimit_set_speed(RateLimit *rl, uint64_t bytes_per_second, uint64_t slice_ns) {
        rl->slice_ns = slice_ns;

        if (bytes_per_second == 0) {
                rl->slice_quota = 0;
                return;
        }

        /* speed × slice / 1 s, computed in 128 bits so that no speed overflows; at least one byte
         * per slice so that a tiny speed still makes progress. */
        unsigned __int128 q = (unsigned __int128) bytes_per_second * slice_ns / NSEC_PER_SEC;
        rl->slice_quota = q == 0 ? 1 : q > UINT64_MAX ? UINT64_MAX : (uint64_t) q;
}

uint64_t ratelimit_calculate_delay(RateLimit *rl, uint64_t now, uint64_t bytes) {
        if (rl->slice_quota == 0)
                return 0;

        if (rl->slice_end < now) {
                /* The previous, possibly stretched, slice is over: start counting afresh. */
                rl->slice_start = now;
                rl->slice_end = now + rl->slice_ns;
                rl->dispatched = 0;
        }

        rl->dispatched = rl->dispatched > UINT64_MAX - bytes ? UINT64_MAX : rl->dispatched + bytes;
        if (rl->dispatched < rl->slice_quota)
                return 0;

        /* Stretch the slice over everything dispatched in it, overshoot included. */
        unsigned __int128 span = (unsigned __int128) rl->dispatched * rl->slice_ns / rl->slice_quota;
        rl->slice_end = span > UINT64_MAX - rl->slice_start ? UINT64_MAX : rl->slice_start + (uint64_t) span;
        return rl->slice_end > now ? rl->slice_end - now : 0;
}
