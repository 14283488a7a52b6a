/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A deterministic job driver for the core's tests. It "copies" a number of bytes in chunks,
 * without I/O, and can be told to fail, to hit I/O errors, to reach ready and wait there like a
 * mirror, or to fail its prepare. Every hook it runs is logged as "<id>:<hook>" so that tests can
 * check that exactly one of commit or abort ran, then clean; a mirror-like run that ends in ready
 * also logs why: "<id>:complete" or "<id>:soft-cancel". */

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "job.h"

typedef struct TestDriverConfig {
        uint64_t total;                 /* bytes to "copy" */
        uint64_t chunk;                 /* bytes per step when unthrottled (0: 64 KiB) */
        bool ignore_max_bytes;          /* copy 'chunk' even when the limiter asks for less */

        bool mirror;                    /* reach ready when done, idle until complete/cancel */
        uint64_t idle_ns;               /* idle sleep in ready (0: 100 ms) */

        unsigned fail_at_step;          /* 1-based; 0 = never */
        int fail_ret;
        const char *fail_message;       /* NULL: the core's strerror */

        int prepare_ret;                /* 0 = prepare succeeds */
        const char *prepare_message;

        unsigned io_error_at_step;      /* 1-based; 0 = never */
        unsigned io_error_repeat;       /* how many steps fail (0 = 1) */
        unsigned io_error_every;        /* 1 step in this many fails from io_error_at_step on (0 = 1) */
        int io_error;                   /* negative errno */
        bool io_error_on_source;

        bool keep_soft_always;          /* cancel hook keeps every soft request soft */
} TestDriverConfig;

typedef struct TestDriverState {
        TestDriverConfig config;
        GString *log;                   /* borrowed */
        uint64_t offset;
        unsigned steps;
        uint64_t last_max_bytes;
        bool soft_cancelled;            /* the run ended on a soft cancel, as the step saw it */
} TestDriverState;

/* A backup-like driver (no cancel hook: every cancel is a force cancel; cannot complete) and a
 * mirror-like one (keeps soft cancels soft in ready, as QEMU's mirror; can complete). */
extern const JobDriver test_driver_backup;
extern const JobDriver test_driver_mirror;
/* Like the mirror one, with a prepare that cannot be undone, as commit's: it logs "<id>:pivot"
 * unless the run ended on a soft cancel. */
extern const JobDriver test_driver_final;

TestDriverState *test_driver_state_new(const TestDriverConfig *c, GString *log);
