/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* qcow2 reference counts: reading and changing them, finding free clusters, allocating refcount
 * blocks and moving the refcount table when it runs out of room, and writing all that back in
 * the order that keeps the image consistent after a crash (see qcow2-write.c for the whole
 * order). Refcount entries are 2^refcount_order bits wide, 1 to 64. */

#include <string.h>
#include <unistd.h>

#include "qcow2.h"

#define CORRUPT(img, ...) image_fail((img), -EUCLEAN, __VA_ARGS__)

/* ---- entries ------------------------------------------------------------------------------- */

uint64_t qcow2_refcount_entry_get(unsigned order, const uint8_t *block, uint64_t i) {
        unsigned bits = 1U << order;

        if (bits >= 8) {
                const uint8_t *p = block + i * (bits / 8);
                uint64_t v = 0;
                for (unsigned k = 0; k < bits / 8; k++)
                        v = v << 8 | p[k];
                return v;
        }
        /* Sub-byte widths: bit 0 is the least significant bit of the byte. */
        uint64_t bit = i * bits;
        return (block[bit / 8] >> (bit % 8)) & ((1U << bits) - 1);
}

void qcow2_refcount_entry_set(unsigned order, uint8_t *block, uint64_t i, uint64_t v) {
        unsigned bits = 1U << order;

        if (bits >= 8) {
                uint8_t *p = block + i * (bits / 8);
                for (int k = (int) (bits / 8) - 1; k >= 0; k--, v >>= 8)
                        p[k] = (uint8_t) v;
                return;
        }
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t) (((1U << bits) - 1) << (bit % 8));
        block[bit / 8] = (uint8_t) ((block[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
}

/* ---- setup --------------------------------------------------------------------------------- */

int qcow2_refcount_init(Image *img, Qcow2 *q, char **ret_error) {
        uint64_t bytes = (uint64_t) q->reftable_clusters << q->cluster_bits;
        _cleanup_free_ uint8_t *raw = NULL;
        int r;

        q->refblock_bits = q->cluster_bits + 3 - q->refcount_order;
        q->refcount_max = q->refcount_order == 6 ? UINT64_MAX : (UINT64_C(1) << (1U << q->refcount_order)) - 1;
        q->reftable_entries = bytes / 8;
        q->l1_dirty_min = UINT32_MAX;
        q->l1_dirty_max = 0;

        raw = malloc(bytes);
        q->reftable = calloc(q->reftable_entries ?: 1, sizeof(uint64_t));
        if (!raw || !q->reftable)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        r = image_file_read(img, raw, q->reftable_offset, bytes);
        if (r < 0)
                return error_message(ret_error, r, "%s", img->error);
        for (uint64_t i = 0; i < q->reftable_entries; i++)
                q->reftable[i] = get_be64(raw + 8 * i);
        return 0;
}

void qcow2_refcount_done(Qcow2 *q) {
        for (unsigned i = 0; i < QCOW2_REFBLOCK_CACHE; i++)
                free(q->refblocks[i].data);
        free(q->reftable);
        free(q->pending_free);
}

/* ---- the refcount block cache -------------------------------------------------------------- */

static int write_refblock(Image *img, Qcow2 *q, Qcow2CachedRefblock *b) {
        int r;

        if (!b->dirty)
                return 0;
        r = image_file_write(img, b->data, b->offset, q->cluster_size);
        if (r < 0)
                return r;
        b->dirty = false;
        return 0;
}

/* A slot for a block at 'offset', with its content read (or zeroes, for a new one). */
static int get_refblock(Image *img, Qcow2 *q, uint64_t offset, bool fresh, uint8_t **ret) {
        Qcow2CachedRefblock *slot = NULL;
        int r;

        for (unsigned i = 0; i < q->cache_tables; i++) {
                Qcow2CachedRefblock *b = &q->refblocks[i];
                if (b->offset == offset && b->data) {
                        b->last_use = ++q->use_counter;
                        *ret = b->data;
                        return 0;
                }
                if (!slot || b->last_use < slot->last_use)
                        slot = b;
        }

        if (!fresh && ((offset & (q->cluster_size - 1)) || offset < q->cluster_size ||
                       offset > img->file_size - MIN(img->file_size, q->cluster_size)))
                return CORRUPT(img, "Image '%s' is corrupt: refcount block at offset 0x%" PRIx64 " is unaligned or beyond the end of the file",
                               img->path, offset);

        /* Evicting a changed block writes it; the table's order rules hold for it as for all. */
        r = write_refblock(img, q, slot);
        if (r < 0)
                return r;
        if (!slot->data && !(slot->data = malloc(q->cluster_size)))
                return image_fail(img, -ENOMEM, "Out of memory");
        slot->offset = 0;
        if (fresh)
                memset(slot->data, 0, q->cluster_size);
        else {
                r = image_file_read(img, slot->data, offset, q->cluster_size);
                if (r < 0)
                        return r;
        }
        slot->offset = offset;
        slot->dirty = fresh;
        slot->last_use = ++q->use_counter;
        *ret = slot->data;
        return 0;
}

static void mark_refblock_dirty(Qcow2 *q, const uint8_t *data) {
        for (unsigned i = 0; i < QCOW2_REFBLOCK_CACHE; i++)
                if (q->refblocks[i].data == data)
                        q->refblocks[i].dirty = true;
}

int qcow2_refcount_get(Image *img, Qcow2 *q, uint64_t cluster, uint64_t *ret) {
        uint64_t index = cluster >> q->refblock_bits, offset;
        uint8_t *block;
        int r;

        *ret = 0;
        if (index >= q->reftable_entries)
                return 0;
        offset = q->reftable[index] & QCOW2_REFTABLE_OFFSET_MASK;
        if (offset == 0)
                return 0;
        r = get_refblock(img, q, offset, false, &block);
        if (r < 0)
                return r;
        *ret = qcow2_refcount_entry_get(q->refcount_order, block, cluster & ((UINT64_C(1) << q->refblock_bits) - 1));
        return 0;
}

/* ---- finding free clusters ------------------------------------------------------------------ */

static int find_free(Image *img, Qcow2 *q, uint64_t n, uint64_t *ret_cluster) {
        uint64_t start = q->free_hint, run = 0;
        uint64_t file_end = (img->file_size + q->cluster_size - 1) >> q->cluster_bits;
        int r;

        for (uint64_t c = start;; c++) {
                uint64_t refcount;

                if (c >= (UINT64_C(1) << (56 - q->cluster_bits)))
                        return image_fail(img, -EFBIG, "Image '%s' is full", img->path);
                r = qcow2_refcount_get(img, q, c, &refcount);
                if (r < 0)
                        return r;
                if (refcount != 0) {
                        /* Nothing is stored beyond the end of the file, yet clusters there may be
                         * counted: a few (a crash between counting a cluster and writing it leaks
                         * it), or, in a corrupt image, so many (one refcount block named all over
                         * a large refcount table) that the search would last for hours. */
                        if (c >= file_end + QCOW2_COUNTED_BEYOND_END_MAX)
                                return CORRUPT(img, "Image '%s' is corrupt: the clusters beyond the end of the file (offset 0x%" PRIx64 ") are counted as used",
                                               img->path, file_end << q->cluster_bits);
                        run = 0;
                        continue;
                }
                if (run++ == 0)
                        start = c;
                if (run == n) {
                        *ret_cluster = start;
                        /* Never hand these out again, whatever is allocated until their
                         * refcounts are set. */
                        q->free_hint = start + n;
                        return 0;
                }
        }
}

static void note_file_end(Image *img, Qcow2 *q, uint64_t cluster, uint64_t n) {
        uint64_t end = (cluster + n) << q->cluster_bits;
        if (end > img->file_size)
                img->file_size = end;
}

static int update_refcount(Image *img, Qcow2 *q, uint64_t cluster, int delta);

/* The table must have an entry for refcount block 'index': make it larger, at a new place. */
static int grow_reftable(Image *img, Qcow2 *q, uint64_t index) {
        uint64_t entries = MAX(q->reftable_entries * 2, index + 1), clusters, table;
        uint64_t *bigger;
        int r;

        for (;;) {
                clusters = (entries * 8 + q->cluster_size - 1) >> q->cluster_bits;
                if ((clusters << q->cluster_bits) > QCOW2_MAX_REFTABLE_BYTES)
                        return image_fail(img, -EFBIG, "Image '%s' is too large for its refcount table", img->path);
                r = find_free(img, q, clusters, &table);
                if (r < 0)
                        return r;
                /* The new table must also count its own clusters. */
                if (((table + clusters - 1) >> q->refblock_bits) < entries)
                        break;
                entries = ((table + clusters) >> q->refblock_bits) + 1;
                q->free_hint = table;
        }

        bigger = realloc(q->reftable, (clusters << q->cluster_bits));
        if (!bigger)
                return image_fail(img, -ENOMEM, "Out of memory");
        memset(bigger + q->reftable_entries, 0, (clusters << q->cluster_bits) - q->reftable_entries * 8);
        q->reftable = bigger;

        /* The old table is freed once the header names the new one (frees wait for that); a
         * table that was never named (a second move before a flush) goes the same way. */
        r = qcow2_free_later(img, q, q->reftable_offset, (uint64_t) q->reftable_clusters << q->cluster_bits);
        if (r < 0)
                return r;

        q->reftable_entries = (clusters << q->cluster_bits) / 8;
        q->reftable_offset = table << q->cluster_bits;
        q->reftable_clusters = (uint32_t) clusters;
        q->reftable_moved = true;
        q->reftable_dirty = true;
        note_file_end(img, q, table, clusters);

        for (uint64_t c = table; c < table + clusters; c++) {
                r = update_refcount(img, q, c, +1);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Refcount block 'index' must exist: allocate it, preferably where it counts itself. */
static int ensure_refblock(Image *img, Qcow2 *q, uint64_t index) {
        uint64_t cluster;
        uint8_t *block;
        int r;

        if (index >= q->reftable_entries) {
                r = grow_reftable(img, q, index);
                if (r < 0)
                        return r;
        }
        if (q->reftable[index] & QCOW2_REFTABLE_OFFSET_MASK)
                return 0;

        r = find_free(img, q, 1, &cluster);
        if (r < 0)
                return r;
        r = get_refblock(img, q, cluster << q->cluster_bits, true, &block);
        if (r < 0)
                return r;
        q->reftable[index] = cluster << q->cluster_bits;
        q->reftable_dirty = true;
        note_file_end(img, q, cluster, 1);

        if ((cluster >> q->refblock_bits) == index) {
                qcow2_refcount_entry_set(q->refcount_order, block, cluster & ((UINT64_C(1) << q->refblock_bits) - 1), 1);
                return 0;
        }
        return update_refcount(img, q, cluster, +1);
}

static int update_refcount(Image *img, Qcow2 *q, uint64_t cluster, int delta) {
        uint64_t index = cluster >> q->refblock_bits, value;
        uint64_t i = cluster & ((UINT64_C(1) << q->refblock_bits) - 1);
        uint8_t *block;
        int r;

        r = ensure_refblock(img, q, index);
        if (r < 0)
                return r;
        r = get_refblock(img, q, q->reftable[index] & QCOW2_REFTABLE_OFFSET_MASK, false, &block);
        if (r < 0)
                return r;

        value = qcow2_refcount_entry_get(q->refcount_order, block, i);
        if (delta < 0 && value == 0)
                return CORRUPT(img, "Image '%s' is corrupt: cluster 0x%" PRIx64 " freed more often than used", img->path,
                               cluster << q->cluster_bits);
        if (delta > 0 && value == q->refcount_max)
                return image_fail(img, -ERANGE, "Image '%s': reference count of cluster 0x%" PRIx64 " would overflow",
                                  img->path, cluster << q->cluster_bits);
        qcow2_refcount_entry_set(q->refcount_order, block, i, value + (uint64_t) (int64_t) delta);
        mark_refblock_dirty(q, block);

        if (delta < 0 && value == 1 && cluster < q->free_hint)
                q->free_hint = cluster;
        return 0;
}

int qcow2_alloc_clusters(Image *img, Qcow2 *q, uint64_t n, uint64_t *ret_offset) {
        uint64_t first;
        int r;

        r = find_free(img, q, n, &first);
        if (r < 0)
                return r;
        note_file_end(img, q, first, n);
        for (uint64_t c = first; c < first + n; c++) {
                r = update_refcount(img, q, c, +1);
                if (r < 0)
                        return r;
        }
        *ret_offset = first << q->cluster_bits;
        return 0;
}

/* ---- freeing, later ------------------------------------------------------------------------ */

int qcow2_free_later(Image *img, Qcow2 *q, uint64_t offset, uint64_t length) {
        if (length == 0)
                return 0;
        /* Clusters freed one after another (a discard of a run of data) take one entry. */
        if (q->n_pending_free > 0) {
                Qcow2Range *last = &q->pending_free[q->n_pending_free - 1];
                if (last->offset + last->length == offset) {
                        last->length += length;
                        return 0;
                }
        }
        if (q->n_pending_free == q->pending_free_cap) {
                size_t cap = MAX(q->pending_free_cap * 2, (size_t) 64);
                Qcow2Range *p = realloc(q->pending_free, cap * sizeof(Qcow2Range));
                if (!p)
                        return image_fail(img, -ENOMEM, "Out of memory");
                q->pending_free = p;
                q->pending_free_cap = cap;
        }
        q->pending_free[q->n_pending_free++] = (Qcow2Range) { offset, length };
        return 0;
}

void qcow2_compressed_range(const Qcow2 *q, uint64_t entry, uint64_t *ret_offset, uint64_t *ret_length) {
        uint64_t coffset = entry & q->coffset_mask;
        uint64_t sectors = ((entry >> q->csize_shift) & q->csize_mask) + 1;
        uint64_t end = (coffset & ~(uint64_t) (QCOW2_COMPRESSED_SECTOR - 1)) + sectors * QCOW2_COMPRESSED_SECTOR;

        /* Every cluster the compressed bytes touch holds a reference for them. */
        *ret_offset = coffset & ~(q->cluster_size - 1);
        *ret_length = ((end + q->cluster_size - 1) & ~(q->cluster_size - 1)) - *ret_offset;
}

int qcow2_apply_pending_frees(Image *img, Qcow2 *q) {
        int r;

        if (q->n_pending_free == 0)
                return 0;
        for (size_t i = 0; i < q->n_pending_free; i++) {
                Qcow2Range *f = &q->pending_free[i];
                for (uint64_t c = f->offset >> q->cluster_bits; c < (f->offset + f->length) >> q->cluster_bits; c++) {
                        r = update_refcount(img, q, c, -1);
                        if (r < 0)
                                return r;
                }
        }
        q->n_pending_free = 0;
        return qcow2_flush_refcounts(img, q);
}

/* ---- writing back -------------------------------------------------------------------------- */

static int write_reftable(Image *img, Qcow2 *q) {
        size_t bytes = (size_t) q->reftable_clusters << q->cluster_bits;
        _cleanup_free_ uint8_t *raw = calloc(1, bytes);

        if (!raw)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint64_t i = 0; i < q->reftable_entries && (i + 1) * 8 <= bytes; i++)
                put_be64(raw + 8 * i, q->reftable[i]);
        return image_file_write(img, raw, q->reftable_offset, bytes);
}

int qcow2_flush_refcounts(Image *img, Qcow2 *q) {
        bool any = false;
        int r;

        for (unsigned i = 0; i < QCOW2_REFBLOCK_CACHE; i++) {
                any = any || q->refblocks[i].dirty;
                r = write_refblock(img, q, &q->refblocks[i]);
                if (r < 0)
                        return r;
        }
        if (!any && !q->reftable_dirty)
                return 0;

        if (q->reftable_dirty) {
                /* The blocks first, then the table that points to them. */
                r = image_file_sync(img);
                if (r < 0)
                        return r;
                r = write_reftable(img, q);
                if (r < 0)
                        return r;
                if (q->reftable_moved) {
                        /* The new table, durable, then the header that names it: one write of
                         * twelve bytes in one sector. */
                        uint8_t field[12];
                        r = image_file_sync(img);
                        if (r < 0)
                                return r;
                        put_be64(field, q->reftable_offset);
                        put_be32(field + 8, q->reftable_clusters);
                        r = image_file_write(img, field, QCOW2_HDR_REFTABLE_OFFSET, sizeof(field));
                        if (r < 0)
                                return r;
                        q->reftable_moved = false;
                }
                q->reftable_dirty = false;
        }
        return image_file_sync(img);
}

/* ---- leaks left by a writer that was killed -------------------------------------------------- */

/* The clusters marked in one pass: a window of the file, so that the bitmap stays bounded
 * (8 MiB: a file of 4 TiB in clusters of 64 KiB takes one pass) however small its clusters. */
#define REPAIR_WINDOW_CLUSTERS (UINT64_C(64) << 20)

typedef struct RepairWindow {
        uint64_t first, n;              /* clusters [first, first + n) of the file */
        uint64_t file_clusters;
        uint64_t *used;                 /* one bit each */
} RepairWindow;

/* The clusters of [offset, offset + length) of the file are used by 'what': marked, and each
 * used once, all within the file. */
static int repair_mark(Image *img, Qcow2 *q, RepairWindow *w, uint64_t offset, uint64_t length, const char *what) {
        if (length == 0)
                return 0;
        uint64_t first = offset >> q->cluster_bits, end = (offset + length + q->cluster_size - 1) >> q->cluster_bits;

        if (end > w->file_clusters || end < first)
                return CORRUPT(img, "Image '%s' is corrupt: %s at offset 0x%" PRIx64 " lies beyond the end of the file",
                               img->path, what, offset);
        for (uint64_t c = MAX(first, w->first); c < MIN(end, w->first + w->n); c++) {
                uint64_t bit = c - w->first;
                if (w->used[bit / 64] & (UINT64_C(1) << (bit % 64)))
                        return CORRUPT(img, "Image '%s' is corrupt: cluster 0x%" PRIx64 " (%s) is used twice", img->path,
                                       c << q->cluster_bits, what);
                w->used[bit / 64] |= UINT64_C(1) << (bit % 64);
        }
        return 0;
}

/* Everything the image's metadata names: header, L1 table, refcount table and blocks, L2 tables,
 * and the data clusters the L2 tables name. */
static int repair_mark_all(Image *img, Qcow2 *q, RepairWindow *w) {
        int r;

        r = repair_mark(img, q, w, 0, q->cluster_size, "the header");
        if (r >= 0)
                r = repair_mark(img, q, w, q->l1_offset, (uint64_t) q->l1_size * 8, "the L1 table");
        if (r >= 0)
                r = repair_mark(img, q, w, q->reftable_offset, (uint64_t) q->reftable_clusters << q->cluster_bits,
                                "the refcount table");
        for (uint64_t i = 0; r >= 0 && i < q->reftable_entries; i++)
                if (q->reftable[i] & QCOW2_REFTABLE_OFFSET_MASK)
                        r = repair_mark(img, q, w, q->reftable[i] & QCOW2_REFTABLE_OFFSET_MASK, q->cluster_size,
                                        "a refcount block");
        for (uint32_t i = 0; r >= 0 && i < q->l1_size; i++) {
                uint64_t l2_offset = q->l1[i] & QCOW2_OFFSET_MASK, *l2;

                if (l2_offset == 0)
                        continue;
                r = repair_mark(img, q, w, l2_offset, q->cluster_size, "an L2 table");
                if (r >= 0)
                        r = qcow2_load_l2(img, q, l2_offset, &l2);
                for (uint64_t k = 0; r >= 0 && k < q->l2_entries; k++) {
                        uint64_t host = l2[k] & QCOW2_OFFSET_MASK;

                        if (qcow2_entry_type(q, l2[k]) == QCOW2_CLUSTER_COMPRESSED)
                                return image_fail(img, -EOPNOTSUPP,
                                                  "Image '%s' holds compressed clusters, which blockjobd does not write",
                                                  img->path);
                        /* Normal clusters, and zero clusters that keep their allocation. */
                        if (host != 0)
                                r = repair_mark(img, q, w, host, q->cluster_size, "a data cluster");
                }
        }
        return r;
}

/* Sets the count of a cluster that is counted (so its refcount block exists). */
static int repair_set(Image *img, Qcow2 *q, uint64_t cluster, uint64_t value) {
        uint64_t index = cluster >> q->refblock_bits;
        uint8_t *block;
        int r;

        r = get_refblock(img, q, q->reftable[index] & QCOW2_REFTABLE_OFFSET_MASK, false, &block);
        if (r < 0)
                return r;
        qcow2_refcount_entry_set(q->refcount_order, block, cluster & ((UINT64_C(1) << q->refblock_bits) - 1), value);
        mark_refblock_dirty(q, block);
        return 0;
}

/* Compares the counts of the window's clusters with what uses them. */
static int repair_window(Image *img, Qcow2 *q, RepairWindow *w, uint64_t *leaked) {
        int r;

        for (uint64_t c = w->first; c < w->first + w->n; c++) {
                uint64_t bit = c - w->first, refcount;
                bool used = w->used[bit / 64] & (UINT64_C(1) << (bit % 64));

                r = qcow2_refcount_get(img, q, c, &refcount);
                if (r < 0)
                        return r;
                if (used && refcount == 0)
                        return CORRUPT(img, "Image '%s' is corrupt: cluster 0x%" PRIx64 " is used but not counted",
                                       img->path, c << q->cluster_bits);
                if (refcount > (used ? 1U : 0U)) {
                        r = repair_set(img, q, c, used ? 1 : 0);
                        if (r < 0)
                                return r;
                        (*leaked)++;
                }
        }
        return 0;
}

int qcow2_repair_leaks(Image *img, Qcow2 *q, uint64_t *ret_leaked) {
        uint64_t file_clusters = (img->file_size + q->cluster_size - 1) >> q->cluster_bits, leaked = 0;
        int r;

        /* What the walk below does not follow: none of it is in an image blockjobd makes. */
        if (q->nb_snapshots > 0 || q->bitmaps.nb_bitmaps > 0)
                return image_fail(img, -EOPNOTSUPP, "Image '%s' has snapshots or bitmaps", img->path);
        if (!q->writable)
                return image_fail(img, -EBADF, "Image '%s' is not open for writing", img->path);
        /* Every change so far on disk: the walk reads the tables from the file. */
        r = qcow2_flush(img);
        if (r < 0)
                return r;

        for (uint64_t first = 0; first < file_clusters; first += REPAIR_WINDOW_CLUSTERS) {
                RepairWindow w = {
                        .first = first,
                        .n = MIN(REPAIR_WINDOW_CLUSTERS, file_clusters - first),
                        .file_clusters = file_clusters,
                };
                w.used = calloc((w.n + 63) / 64, sizeof(uint64_t));
                if (!w.used)
                        return image_fail(img, -ENOMEM, "Out of memory");
                r = repair_mark_all(img, q, &w);
                if (r >= 0)
                        r = repair_window(img, q, &w, &leaked);
                free(w.used);
                if (r < 0)
                        return r;
        }
        /* Clusters counted beyond the end of the file: used by nothing (the marking refused
         * anything there). A few at most, as find_free() says; past its bound it calls the image
         * corrupt anyway. */
        uint64_t end = MIN(file_clusters + QCOW2_COUNTED_BEYOND_END_MAX, q->reftable_entries << q->refblock_bits);
        for (uint64_t c = file_clusters; c < end; c++) {
                uint64_t refcount;

                if (!(q->reftable[c >> q->refblock_bits] & QCOW2_REFTABLE_OFFSET_MASK)) {
                        c = ((c >> q->refblock_bits) + 1) << q->refblock_bits;
                        c--;
                        continue;
                }
                r = qcow2_refcount_get(img, q, c, &refcount);
                if (r < 0)
                        return r;
                if (refcount > 0) {
                        r = repair_set(img, q, c, 0);
                        if (r < 0)
                                return r;
                        leaked++;
                }
        }

        if (leaked > 0) {
                q->free_hint = 0;
                r = qcow2_flush_refcounts(img, q);
                if (r < 0)
                        return r;
        }
        if (ret_leaked)
                *ret_leaked = leaked;
        return 0;
}
