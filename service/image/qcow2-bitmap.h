/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* qcow2 persistent dirty bitmaps: the bitmaps header extension, the bitmap directory and the
 * bitmap tables (docs/interop/qcow2.txt, "Bitmaps extension" and "Bitmaps"), with the limits
 * QEMU keeps (block/qcow2-bitmap.c). Everything read from the file is checked before use; a
 * violation is an error naming the image and what is wrong. */

#include <stdbool.h>
#include <stdint.h>

#define QCOW2_AUTOCLEAR_BITMAPS (UINT64_C(1) << 0)

#define QCOW2_BITMAPS_EXT_SIZE 24U
#define QCOW2_MAX_BITMAPS 65535U
#define QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1024U * QCOW2_MAX_BITMAPS)

/* A directory entry: fixed part, then extra data, then the name, padded to 8 bytes. */
#define QCOW2_BME_HEADER_SIZE 24U
#define QCOW2_BME_FLAG_IN_USE (1U << 0)
#define QCOW2_BME_FLAG_AUTO (1U << 1)
#define QCOW2_BME_FLAG_EXTRA_DATA_COMPATIBLE (1U << 2)
#define QCOW2_BME_TYPE_DIRTY_TRACKING 1U
#define QCOW2_BME_MIN_GRANULARITY_BITS 9U
#define QCOW2_BME_MAX_GRANULARITY_BITS 31U
#define QCOW2_BME_MAX_NAME_SIZE 1023U
#define QCOW2_BME_MAX_TABLE_SIZE UINT32_C(0x8000000)
/* The most bitmap data (table entries times the cluster size) one bitmap may have: QEMU's bound
 * on what it keeps in memory, and so ours. */
#define QCOW2_BME_MAX_PHYS_SIZE UINT64_C(0x20000000)

/* Bitmap table entries. */
#define QCOW2_BME_TABLE_RESERVED_MASK UINT64_C(0xff000000000001fe)
#define QCOW2_BME_TABLE_OFFSET_MASK UINT64_C(0x00fffffffffffe00)
#define QCOW2_BME_TABLE_ALL_ONES UINT64_C(1)

typedef struct Qcow2Bitmap {
        char *name;
        uint64_t table_offset;
        uint32_t table_size;            /* entries */
        uint32_t flags;                 /* QCOW2_BME_FLAG_* */
        uint8_t granularity_bits;
        bool inconsistent;              /* in_use when the image was opened: not ours to trust */
} Qcow2Bitmap;

/* An enabled bitmap, in memory while its layer is written. */
typedef struct Qcow2Tracked {
        char *name;
        struct ImageDirtyMap *map;
} Qcow2Tracked;

typedef struct Qcow2Bitmaps {
        bool ext_found;                 /* the extension is in the header ... */
        bool lost;                      /* ... but autoclear bit 0 is clear: QEMU ignores it */
        uint32_t nb_bitmaps;
        uint64_t dir_offset, dir_size;

        bool loaded;                    /* the directory is read and checked */
        bool broken;                    /* a header write failed: what is on disk is unknown */
        bool owned_checked;             /* every cluster of the bitmaps is theirs alone */

        Qcow2Tracked *tracked;          /* the enabled bitmaps, recording writes */
        size_t n_tracked;
        bool tracking;                  /* they are in_use on disk, since we write */
        Qcow2Bitmap *list;              /* nb_bitmaps entries once loaded */
} Qcow2Bitmaps;

static inline uint64_t qcow2_div_round_up(uint64_t a, uint64_t b) {
        return a / b + (a % b != 0);
}

/* The size of a directory entry with a name and extra data of these sizes, padded. */
static inline uint64_t qcow2_bitmap_entry_size(uint64_t name_size, uint64_t extra_size) {
        return (QCOW2_BME_HEADER_SIZE + name_size + extra_size + 7) & ~UINT64_C(7);
}

/* Bytes of bitmap data a disk of 'size' needs at this granularity (QEMU's
 * get_bitmap_bytes_needed()). */
static inline uint64_t qcow2_bitmap_bytes(uint64_t size, unsigned granularity_bits) {
        return qcow2_div_round_up(qcow2_div_round_up(size, UINT64_C(1) << granularity_bits), 8);
}
