/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What both fuzzers do: put the bytes in a file, and read an open image as a job would, extent
 * by extent, within a budget. */

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image.h"

#define FUZZ_READ_BUDGET (16U << 20)
#define FUZZ_EXTENTS_MAX 4096U
#define FUZZ_PIECE (1U << 20)

/* A memfd holding 'data' (an anonymous regular file: probing, SEEK_DATA and fallocate work as on
 * a file system), or -1. */
static inline int fuzz_memfd(const uint8_t *data, size_t size) {
        int fd = memfd_create("fuzz-image", MFD_CLOEXEC);

        if (fd < 0)
                return -1;
        if (size > 0 && write(fd, data, size) != (ssize_t) size) {
                close(fd);
                return -1;
        }
        return fd;
}

/* Block status of everything, and a read of each extent (up to a piece of it). Errors end the
 * walk: all that matters is that there is no crash, hang or memory error on the way. */
static inline void fuzz_walk(Image *img) {
        static uint8_t *buf;
        uint64_t virtual_size = image_size(img), off = 0, budget = FUZZ_READ_BUDGET;

        if (!buf && !(buf = malloc(FUZZ_PIECE)))
                return;
        for (unsigned n = 0; off < virtual_size && n < FUZZ_EXTENTS_MAX && budget > 0; n++) {
                ImageExtent e;

                if (image_block_status(img, off, virtual_size - off, &e) < 0)
                        break;
                size_t piece = (size_t) (e.length < FUZZ_PIECE ? e.length : FUZZ_PIECE);
                if (piece > budget)
                        piece = budget;
                (void) image_read(img, buf, off, piece);
                budget -= piece;
                off += e.length;
        }
}

/* The bitmaps: listed, and each read whose map in memory stays small (a hostile directory may
 * describe half a GiB of bits, which is allowed but would only slow the fuzzer down). Errors end
 * the walk, as above. */
#define FUZZ_BITMAP_BYTES_MAX (4U << 20)

static inline void fuzz_bitmaps(Image *img) {
        ImageBitmapInfo *list = NULL;
        size_t n = 0;

        if (image_bitmap_list(img, &list, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                ImageDirtyMap *m = NULL;
                uint64_t start, length;

                if (image_size(img) / list[i].granularity / 8 > FUZZ_BITMAP_BYTES_MAX)
                        continue;
                if (image_bitmap_load(img, list[i].name, &m) < 0)
                        continue;
                (void) image_dirty_map_count(m);
                (void) image_dirty_map_next(m, 0, &start, &length);
                image_dirty_map_free(m);
        }
        image_bitmap_list_free(list, n);
}
