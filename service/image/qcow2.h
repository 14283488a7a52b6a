/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The qcow2 format as QEMU's docs/interop/qcow2.txt describes it: on-disk constants, and the
 * state of an open qcow2 layer, shared by the reading (qcow2.c) and the writing code. All
 * on-disk numbers are big-endian. */

#include <stdbool.h>
#include <stdint.h>

#include "image-internal.h"
#include "qcow2-bitmap.h"

#define QCOW2_MAGIC "QFI\xfb"
#define QCOW2_HEADER_V2_SIZE 72U
#define QCOW2_HEADER_V3_SIZE 104U

#define QCOW2_MIN_CLUSTER_BITS 9U
#define QCOW2_MAX_CLUSTER_BITS 21U             /* 2 MiB, QEMU's limit */
#define QCOW2_MAX_L1_BYTES (UINT64_C(32) << 20) /* QEMU's limits, which keep memory bounded */
#define QCOW2_MAX_REFTABLE_BYTES (UINT64_C(8) << 20)
#define QCOW2_MAX_SNAPSHOTS 65536U
#define QCOW2_MAX_BACKING_NAME 1023U

/* Header fields: byte offsets. */
#define QCOW2_HDR_VERSION 4
#define QCOW2_HDR_BACKING_OFFSET 8
#define QCOW2_HDR_BACKING_SIZE 16
#define QCOW2_HDR_CLUSTER_BITS 20
#define QCOW2_HDR_SIZE 24
#define QCOW2_HDR_CRYPT_METHOD 32
#define QCOW2_HDR_L1_SIZE 36
#define QCOW2_HDR_L1_OFFSET 40
#define QCOW2_HDR_REFTABLE_OFFSET 48
#define QCOW2_HDR_REFTABLE_CLUSTERS 56
#define QCOW2_HDR_NB_SNAPSHOTS 60
#define QCOW2_HDR_SNAPSHOTS_OFFSET 64
#define QCOW2_HDR_INCOMPATIBLE 72
#define QCOW2_HDR_COMPATIBLE 80
#define QCOW2_HDR_AUTOCLEAR 88
#define QCOW2_HDR_REFCOUNT_ORDER 96
#define QCOW2_HDR_LENGTH 100
#define QCOW2_HDR_COMPRESSION_TYPE 104

#define QCOW2_INCOMPAT_DIRTY (UINT64_C(1) << 0)
#define QCOW2_INCOMPAT_CORRUPT (UINT64_C(1) << 1)
#define QCOW2_INCOMPAT_DATA_FILE (UINT64_C(1) << 2)
#define QCOW2_INCOMPAT_COMPRESSION (UINT64_C(1) << 3)
#define QCOW2_INCOMPAT_EXTL2 (UINT64_C(1) << 4)
#define QCOW2_INCOMPAT_KNOWN (UINT64_C(0x1f))

#define QCOW2_COMPAT_LAZY_REFCOUNTS (UINT64_C(1) << 0)

#define QCOW2_EXT_END 0x00000000U
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857U
#define QCOW2_EXT_BITMAPS 0x23852875U
#define QCOW2_EXT_CRYPTO 0x0537be77U
#define QCOW2_EXT_DATA_FILE 0x44415441U

/* L1 and L2 entries. */
#define QCOW2_OFFSET_MASK UINT64_C(0x00fffffffffffe00)     /* bits 9-55 */
#define QCOW2_FLAG_COPIED (UINT64_C(1) << 63)
#define QCOW2_FLAG_COMPRESSED (UINT64_C(1) << 62)
#define QCOW2_FLAG_ZERO UINT64_C(1)
#define QCOW2_COMPRESSED_SECTOR 512U

typedef enum Qcow2ClusterType {
        QCOW2_CLUSTER_UNALLOCATED,
        QCOW2_CLUSTER_ZERO,             /* the zero flag, with or without a preallocated offset */
        QCOW2_CLUSTER_NORMAL,
        QCOW2_CLUSTER_COMPRESSED,
} Qcow2ClusterType;

/* The L2 table and refcount block caches of a layer: each at most 16 tables, and at most 4 MiB
 * (but two tables at least): a layer of 2 MiB clusters costs 4 MiB per cache, not 32. */
#define QCOW2_L2_CACHE_TABLES 16U
#define QCOW2_REFBLOCK_CACHE 16U
#define QCOW2_CACHE_BYTES (UINT64_C(4) << 20)
/* Clusters freed and not yet applied (qcow2_free_later()): a request that frees more flushes,
 * which applies them; so the list stays small whatever a request covers. */
#define QCOW2_PENDING_FREES_MAX 16384U
/* Data written in runs one after another starts its writeback once it reaches this much (see
 * write_behind() in qcow2-write.c). */
#define QCOW2_WRITE_BEHIND_MIN (UINT64_C(1) << 20)
/* Clusters beyond the end of the file that may be counted as used before the image is called
 * corrupt (see find_free()). */
#define QCOW2_COUNTED_BEYOND_END_MAX UINT64_C(65536)
#define QCOW2_REFTABLE_OFFSET_MASK UINT64_C(0xfffffffffffffe00)

typedef struct Qcow2CachedTable {
        uint64_t offset;                /* 0: free slot */
        uint64_t *entries;              /* host byte order */
        uint64_t last_use;
        bool dirty;
        bool unreachable;               /* new: no L1 entry on disk points to it yet */
} Qcow2CachedTable;

typedef struct Qcow2CachedRefblock {
        uint64_t offset;                /* 0: free slot */
        uint8_t *data;                  /* as on disk: entries of 2^refcount_order bits */
        uint64_t last_use;
        bool dirty;
} Qcow2CachedRefblock;

typedef struct Qcow2Range {
        uint64_t offset;
        uint64_t length;
} Qcow2Range;

typedef struct Qcow2 {
        uint32_t version;
        uint32_t cluster_bits;
        uint64_t cluster_size;
        uint32_t l2_bits;               /* log2 of entries per L2 table */
        uint64_t l2_entries;

        uint64_t incompatible, compatible, autoclear;
        uint32_t refcount_order;
        uint32_t header_length;
        uint64_t reftable_offset;
        uint32_t reftable_clusters;
        uint32_t nb_snapshots;
        uint64_t snapshots_offset;

        Qcow2Bitmaps bitmaps;

        uint64_t l1_offset;
        uint32_t l1_size;
        uint64_t *l1;                   /* host byte order */

        /* Compressed cluster descriptors. */
        uint32_t csize_shift;
        uint64_t csize_mask;
        uint64_t coffset_mask;

        unsigned cache_tables;          /* slots used in each cache (see QCOW2_CACHE_BYTES) */
        Qcow2CachedTable l2_cache[QCOW2_L2_CACHE_TABLES];
        uint64_t use_counter;

        /* Writing (qcow2-refcount.c, qcow2-write.c). */
        bool writable;
        uint64_t *reftable;             /* host byte order */
        uint64_t reftable_entries;
        uint32_t refblock_bits;         /* log2 of entries per refcount block */
        uint64_t refcount_max;
        Qcow2CachedRefblock refblocks[QCOW2_REFBLOCK_CACHE];
        bool reftable_dirty;
        bool reftable_moved;            /* lives at a new place the header does not name yet */
        uint64_t free_hint;             /* clusters below are not worth searching */
        uint32_t l1_dirty_min, l1_dirty_max; /* entries to write; min > max: none */
        Qcow2Range *pending_free;       /* freed once the tables that dropped them are on disk */
        size_t n_pending_free, pending_free_cap;
        uint64_t write_behind_start, write_behind_end; /* data written, writeback not started */

        /* Where the file was last seen to hold data (file_allocation() in qcow2.c); empty if
         * nowhere yet. */
        uint64_t data_start, data_end;

        /* The last cluster decompressed, kept for reads of its other parts. */
        uint64_t decompressed_entry;    /* its L2 entry, 0 if none */
        uint8_t *decompressed;
        uint8_t *compressed;            /* input buffer: up to two clusters */
} Qcow2;

static inline uint64_t get_be64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = (v << 8) | p[i];
        return v;
}

static inline uint32_t get_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static inline void put_be64(uint8_t *p, uint64_t v) {
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

static inline void put_be32(uint8_t *p, uint32_t v) {
        for (int i = 3; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

/* Internal interfaces between the qcow2 files. Functions return a negative errno and leave the
 * reason in image_error(). */

/* qcow2.c */
/* The most memory this layer's metadata can take while it is open (image_memory_estimate()). */
uint64_t qcow2_memory_estimate(const Image *img);
/* Where the header extensions of a first cluster (hdr_len bytes of it) end. */
size_t qcow2_extensions_end(const uint8_t *hdr, size_t hdr_len);
int qcow2_load_l2(Image *img, Qcow2 *q, uint64_t offset, uint64_t **ret);
/* The L2 entries for the guest cluster holding 'offset', allocating nothing: the table (NULL if
 * the L1 entry is empty) and the index in it. */
int qcow2_lookup_l2(Image *img, Qcow2 *q, uint64_t offset, uint64_t **ret_table, uint64_t *ret_index);
/* A cached table for a newly allocated cluster, all entries zero, marked changed. */
int qcow2_new_l2(Image *img, Qcow2 *q, uint64_t offset, uint64_t **ret);
Qcow2ClusterType qcow2_entry_type(const Qcow2 *q, uint64_t entry);
int qcow2_decompress(Image *img, Qcow2 *q, uint64_t entry, uint64_t guest_offset);

/* qcow2-refcount.c */
/* Entry i of a refcount block of entries 2^order bits wide. */
uint64_t qcow2_refcount_entry_get(unsigned order, const uint8_t *block, uint64_t i);
void qcow2_refcount_entry_set(unsigned order, uint8_t *block, uint64_t i, uint64_t v);
int qcow2_refcount_init(Image *img, Qcow2 *q, char **ret_error);
void qcow2_refcount_done(Qcow2 *q);
int qcow2_refcount_get(Image *img, Qcow2 *q, uint64_t cluster, uint64_t *ret);
/* Finds 'n' free clusters one after another, counts them used, returns the first's offset. */
int qcow2_alloc_clusters(Image *img, Qcow2 *q, uint64_t n, uint64_t *ret_offset);
/* Remembers clusters to free once nothing on disk points to them any more. */
int qcow2_free_later(Image *img, Qcow2 *q, uint64_t offset, uint64_t length);
/* The clusters a compressed cluster's data lies in. */
void qcow2_compressed_range(const Qcow2 *q, uint64_t entry, uint64_t *ret_offset, uint64_t *ret_length);
/* Step 1 of the write order: every refcount change made so far, durable. */
int qcow2_flush_refcounts(Image *img, Qcow2 *q);
/* Step 3: the pending frees, applied (and flushed). */
int qcow2_apply_pending_frees(Image *img, Qcow2 *q);
/* image_repair_leaks() of a qcow2 layer. */
int qcow2_repair_leaks(Image *img, Qcow2 *q, uint64_t *ret_leaked);

/* qcow2-bitmap.c: reading */
/* The bitmaps extension's data (len bytes), checked as QEMU checks it on opening. */
int qcow2_bitmaps_parse_ext(Image *img, Qcow2 *q, const uint8_t *data, uint32_t len, char **ret_error);
/* Reads and checks the bitmap directory, once; nothing if there is no (consistent) extension. */
int qcow2_bitmaps_load(Image *img, Qcow2 *q);
void qcow2_bitmaps_done(Qcow2 *q);
uint64_t qcow2_bitmaps_memory_estimate(const Image *img, const Qcow2 *q);
Qcow2Bitmap *qcow2_bitmap_find(const Qcow2 *q, const char *name);
void qcow2_bitmap_list_free(Qcow2Bitmap *list, uint32_t n);
/* A bitmap's table, its entries checked; and the bitmap read into a new map. */
int qcow2_bitmap_read_table(Image *img, Qcow2 *q, const Qcow2Bitmap *bm, uint64_t **ret);
int qcow2_bitmap_read(Image *img, Qcow2 *q, const Qcow2Bitmap *bm, ImageDirtyMap **ret);
int qcow2_dirty_map_copy(Image *img, const ImageDirtyMap *m, ImageDirtyMap **ret);
/* Before the first change of the bitmaps of a layer open for writing (which frees clusters they
 * own): each cluster they own is used by nothing else and counted exactly once. Walks every L2
 * table, once per open image. */
int qcow2_bitmaps_check_owned(Image *img, Qcow2 *q);

/* qcow2-bitmap-write.c: writing, changing, recording writes */
/* A layer opened for writing: its directory checked; refused (with the reason) if it cannot be
 * kept. */
int qcow2_bitmaps_open_writable(Image *img, Qcow2 *q, char **ret_error);
/* Then, once the chain is open within its memory bound (ImageOps.open_writable): its enabled
 * bitmaps loaded to record the writes, and what they own checked; refused (with the reason) if
 * they cannot be kept. */
int qcow2_bitmaps_open_tracked(Image *img, char **ret_error);
/* The autoclear bits a writer keeps: bit 0 if the bitmaps extension is consistent. */
uint64_t qcow2_bitmaps_autoclear(const Qcow2 *q);
/* Before the first change since the last sync: the enabled bitmaps marked in_use, durably (and
 * unknown autoclear bits cleared). */
int qcow2_bitmaps_before_change(Image *img, Qcow2 *q);
/* A change of [offset, offset + length) of the virtual disk, recorded in the enabled bitmaps. */
void qcow2_bitmaps_mark(Qcow2 *q, uint64_t offset, uint64_t length);
/* After a flush: the recorded writes stored, and in_use cleared. */
int qcow2_bitmaps_sync(Image *img, Qcow2 *q);
/* The enabled bitmaps' maps freed: taken anew at the next change. */
void qcow2_bitmaps_drop_tracked(Qcow2 *q);

/* qcow2-write.c */
int qcow2_write(Image *img, const void *buf, uint64_t offset, size_t length);
int qcow2_write_zeroes(Image *img, uint64_t offset, uint64_t length);
int qcow2_discard(Image *img, uint64_t offset, uint64_t length);
/* Everything written so far durable (the writer's order, see qcow2-write.c). */
int qcow2_flush(Image *img);
/* image_flush(): that, and the bitmaps stored. */
int qcow2_flush_image(Image *img);
int qcow2_set_backing(Image *img, const char *name, ImageFormat format);
/* A new first cluster, written at once and synced: the fixed header as on disk with these
 * autoclear bits, and its extensions and backing file name as they are, but what the edit sets. */
typedef struct Qcow2HeaderEdit {
        bool set_backing;
        const char *backing_name;       /* NULL: none */
        ImageFormat backing_format;
        bool set_bitmaps;
        const uint8_t *bitmaps_ext;     /* QCOW2_BITMAPS_EXT_SIZE bytes; NULL: none */
        uint64_t autoclear;
} Qcow2HeaderEdit;
/* *ret_written (if given): the write was attempted, so that on failure the header may be the old
 * one, the new one, or neither. */
int qcow2_rewrite_header(Image *img, Qcow2 *q, const Qcow2HeaderEdit *e, bool *ret_written);
int qcow2_open_writable(Image *img, Qcow2 *q, char **ret_error);
int qcow2_evict_l2(Image *img, Qcow2 *q, Qcow2CachedTable *t);
/* What a writable layer adds to qcow2_memory_estimate(). */
uint64_t qcow2_write_memory_estimate(const Image *img, const Qcow2 *q);
