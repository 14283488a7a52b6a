/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Proof that a memory bound is real: code run in a child whose address space may grow by a few
 * MiB only, where an allocation beyond that fails with ENOMEM. */

#include <stdbool.h>
#include <stdint.h>

/* False under ASan, which reserves terabytes of address space for its shadow: no RLIMIT_AS then
 * leaves room to run, and the tests skip what needs it. */
bool address_space_limit_works(void);

/* Runs fn(arg) in a forked child whose address space may grow by 'growth' bytes beyond what it
 * has; returns the child's exit status (fn's return value; 10 when the limit cannot be set).
 * Asserts that the child exited rather than died. */
int run_with_address_space(uint64_t growth, int (*fn)(const char *arg), const char *arg);
