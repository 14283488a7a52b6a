/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Sizes and durations, read and shown as people write them. */

#include <stddef.h>
#include <stdint.h>

/* "1048576", "512k", "4M", "0.5G", "2GiB": bytes, with qemu-img's suffixes in either case (B, K,
 * M, G, T; powers of 1024) or KiB, MiB, GiB, TiB. A fraction needs a unit larger than a byte, and
 * a value that is not 0 must not round down to 0 bytes. -EINVAL with a reason in *ret_why,
 * -ERANGE past 2^64 - 1. */
int parse_size(const char *s, uint64_t *ret, const char **ret_why);

/* "512 B", "1.5 KiB", "3.9 GiB": one decimal, as qemu-img and importctl show them. */
#define FORMAT_BYTES_MAX 32
char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes);

/* "42s", "12m05s", "3h41m", "2d03h". */
#define FORMAT_DURATION_MAX 32
char *format_duration(char buf[static FORMAT_DURATION_MAX], uint64_t usec);
