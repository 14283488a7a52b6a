/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Test files for the drivers: sparse files with random data in chosen extents, and checks of
 * content, holes and directory listings. */

#include <glib.h>
#include <stdint.h>

#define KiB 1024ULL
#define MiB (1024ULL * 1024ULL)

typedef struct Extent {
        uint64_t offset, length;
} Extent;

/* A file of 'size' bytes, mode 0640, with random data (from 'seed') in the extents, holes elsewhere. */
void make_sparse_file(const char *path, uint64_t size, const Extent *extents, size_t n, guint32 seed);
void make_data_file(const char *path, uint64_t size);
/* Writes 'n' bytes at 'offset' of an existing file. */
void write_at(const char *path, uint64_t offset, const void *data, size_t n);
void assert_same_content(const char *a, const char *b);
/* No data allocated in 'path' outside the extents (the holes of the source it was copied from). */
void assert_holes(const char *path, uint64_t size, const Extent *data, size_t n);
/* The directory holds exactly these names (no temporary file left behind), NULL-terminated. */
void assert_dir_holds(const char *dir, const char *const *names);
