/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Fault injection, for tests only, in the spirit of QEMU's blkdebug: the image layer asks a hook
 * before each data read, each write (data, zeroes, discards) and each flush it does on behalf of a
 * caller, and fails the request with the errno the hook returns. Nothing in the daemon sets the
 * hook; only the test daemon (tests/fault/) and unit tests do, so that the jobs' error paths for
 * data I/O run for real against real images. Metadata (qcow2 tables, refcounts, bitmaps, the
 * header) is written and synced beneath the hook: tests fail those with real kernel errors
 * (RLIMIT_FSIZE, a full tmpfs). */

#include <stdint.h>

typedef enum ImageIo {
        IMAGE_IO_READ,
        IMAGE_IO_WRITE,
        IMAGE_IO_FLUSH,
        _IMAGE_IO_MAX,
} ImageIo;

/* 'path' is the layer's name as opened; a flush has offset and length 0. Returns 0 to let the
 * request through, or a negative errno to fail it. Called from the jobs' worker threads. */
typedef int (*ImageFaultHook)(const char *path, ImageIo io, uint64_t offset, uint64_t length);

void image_set_fault_hook(ImageFaultHook hook);
