/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Writing qcow2 images.
 *
 * Crash safety comes from one rule: nothing on disk may point to a cluster whose reference
 * count is not on disk yet, and no reference count may drop while something on disk still
 * points to the cluster. A crash at any moment then leaves at worst clusters that are counted
 * but unused (leaks, which `qemu-img check -r leaks` reclaims), never a cluster used twice.
 *
 * Changes are made in memory (cached L2 tables, cached refcount blocks, the L1 and refcount
 * tables) and reach the disk in this order, by image_flush() and whenever a changed L2 table is
 * evicted from the cache:
 *
 *   1. refcount blocks (counting new clusters), and the new L2 tables that no L1 entry on disk
 *      names yet (new or copied tables: unreachable, so their order does not matter), are
 *      written, then fsync; if the refcount table changed it is written (at a new place if it
 *      grew), then fsync, then the header fields that name a moved table (one 12-byte write),
 *      then fsync;
 *   2. the other changed L2 tables and the changed L1 entries are written, then fsync, which
 *      also makes data written in place durable (no fsync at all if nothing was written since
 *      the last one);
 *   3. only now are the clusters that the new tables no longer point to freed: their counts
 *      drop, and those refcount blocks are written and synced as in step 1.
 *
 * Guest data is written to its cluster before the L2 entry that points there is even in step 2,
 * so a crash never exposes a cluster of stale data either. A cluster or table that is shared
 * with a snapshot (no COPIED flag), or compressed, is never written in place: the data goes to a
 * new cluster, and the old one's count drops in step 3.
 */

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "qcow2.h"

#define CORRUPT(img, ...) image_fail((img), -EUCLEAN, __VA_ARGS__)

static Qcow2 *Q(Image *img) {
        return img->format_data;
}

static int check_writable(Image *img, Qcow2 *q) {
        if (!q->writable)
                return image_fail(img, -EBADF, "Image '%s' is not open for writing", img->path);
        return 0;
}

/* ---- opening for writing -------------------------------------------------------------------- */

int qcow2_open_writable(Image *img, Qcow2 *q, char **ret_error) {
        int r;

        r = qcow2_refcount_init(img, q, ret_error);
        if (r < 0)
                return r;
        /* Nothing is written yet: an image opened for writing but never changed (a job
         * cancelled before its end, a commit's layer above top whose header is rewritten only at
         * the very end) keeps its persistent bitmaps. See before_change(). */
        q->writable = true;
        return 0;
}

/* Called before anything of a change reaches the file: the persistent bitmaps that record
 * changes are marked in_use first, durably, and autoclear bits we do not maintain are cleared
 * (qcow2-bitmap.c). Not before: merely opening an image for writing changes nothing. */
static int before_change(Image *img, Qcow2 *q, uint64_t offset, uint64_t length) {
        int r;

        r = qcow2_bitmaps_before_change(img, q);
        if (r < 0)
                return r;
        qcow2_bitmaps_mark(q, offset, length);
        return 0;
}

/* ---- memory -------------------------------------------------------------------------------- */

uint64_t qcow2_write_memory_estimate(const Image *img, const Qcow2 *q) {
        uint64_t cs = q->cluster_size, clusters, entries, table;

        /* The refcount table as large as writing can make it: counting a file that holds, besides
         * what it holds now, all of the virtual size with its L2 tables; twice that, as it grows
         * by doubling; within QEMU's bound, which grow_reftable() keeps. */
        clusters = img->file_size / cs + img->size / cs + img->size / cs / q->l2_entries + 2;
        entries = (clusters >> q->refblock_bits) + 2;
        table = MIN(MAX(2 * ((entries * 8 + cs - 1) / cs * cs), (uint64_t) q->reftable_clusters * cs),
                    QCOW2_MAX_REFTABLE_BYTES);

        /* Twice the table: it is written out from a copy, and grows by realloc. Then the refcount
         * block cache; the clusters freed and not yet applied (a request flushes past
         * QCOW2_PENDING_FREES_MAX, after at most one L2 table's worth more), in an array that
         * grows by doubling; and the buffers of one request: a cluster of data, the copy of a
         * shared L2 table, an L2 table written out, and a part cluster of zeroes. */
        return 2 * table + (uint64_t) q->cache_tables * cs +
               2 * (QCOW2_PENDING_FREES_MAX + q->l2_entries + 64) * sizeof(Qcow2Range) + 4 * cs;
}

/* Too many clusters wait to be freed: flushing applies them. Called between the steps of a
 * request, where the tables in memory are consistent with the data written so far. */
static int bound_pending_frees(Image *img, Qcow2 *q) {
        if (q->n_pending_free < QCOW2_PENDING_FREES_MAX)
                return 0;
        return qcow2_flush(img);
}

/* ---- write-behind -------------------------------------------------------------------------- */

/* Data just written at [offset, offset + length) of the file is handed to the device now
 * (sync_file_range(), which starts the writeback and does not wait for it), once runs written one
 * after another reach QCOW2_WRITE_BEHIND_MIN. A copy into the image then keeps the device writing
 * while it reads its next chunk, and the flush at its end waits for the last run only instead of
 * for everything the job wrote. Durability and the write order still come from image_file_sync()
 * alone: this only starts early what a sync would do anyway. Small writes here and there (a
 * guest's, metadata) are left to the flush: a system call each would cost more than it saves. */
static void write_behind(Image *img, Qcow2 *q, uint64_t offset, uint64_t length) {
        if (!S_ISREG(img->st.st_mode) && !S_ISBLK(img->st.st_mode))
                return;
        if (offset != q->write_behind_end)
                q->write_behind_start = offset;
        q->write_behind_end = offset + length;
        if (q->write_behind_end - q->write_behind_start < QCOW2_WRITE_BEHIND_MIN)
                return;
        /* An optimisation only: a file system that does not do it loses nothing. */
        (void) sync_file_range(img->fd, (off_t) q->write_behind_start,
                               (off_t) (q->write_behind_end - q->write_behind_start), SYNC_FILE_RANGE_WRITE);
        q->write_behind_start = q->write_behind_end;
}

/* ---- L2 tables ------------------------------------------------------------------------------ */

static int write_l2(Image *img, Qcow2 *q, Qcow2CachedTable *t) {
        _cleanup_free_ uint8_t *raw = malloc(q->cluster_size);
        int r;

        if (!raw)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint64_t i = 0; i < q->l2_entries; i++)
                put_be64(raw + 8 * i, t->entries[i]);
        r = image_file_write(img, raw, t->offset, q->cluster_size);
        if (r < 0)
                return r;
        t->dirty = false;
        return 0;
}

int qcow2_evict_l2(Image *img, Qcow2 *q, Qcow2CachedTable *t) {
        int r;

        /* The table may point to new clusters: their counts go to disk first (step 1). */
        r = qcow2_flush_refcounts(img, q);
        if (r < 0)
                return r;
        return write_l2(img, q, t);
}

static void mark_l1_dirty(Qcow2 *q, uint32_t index) {
        q->l1_dirty_min = MIN(q->l1_dirty_min, index);
        q->l1_dirty_max = MAX(q->l1_dirty_max, index);
}

static Qcow2CachedTable *slot_of(Qcow2 *q, const uint64_t *entries) {
        for (unsigned i = 0; i < QCOW2_L2_CACHE_TABLES; i++)
                if (q->l2_cache[i].entries == entries)
                        return &q->l2_cache[i];
        return NULL;
}

/* The L2 table for guest cluster range 'l1_index', ready to be changed: allocated if there is
 * none, copied if it is shared with a snapshot. */
static int l2_for_write(Image *img, Qcow2 *q, uint64_t l1_index, Qcow2CachedTable **ret) {
        uint64_t entry = q->l1[l1_index], old = entry & QCOW2_OFFSET_MASK, offset;
        uint64_t *entries, *copy = NULL;
        int r;

        if (old != 0 && (entry & QCOW2_FLAG_COPIED)) {
                r = qcow2_load_l2(img, q, old, &entries);
                if (r < 0)
                        return r;
                *ret = slot_of(q, entries);
                return 0;
        }

        if (old != 0) {
                /* Shared: keep what it says, in a table of our own. */
                r = qcow2_load_l2(img, q, old, &entries);
                if (r < 0)
                        return r;
                copy = malloc(q->cluster_size);
                if (!copy)
                        return image_fail(img, -ENOMEM, "Out of memory");
                memcpy(copy, entries, q->cluster_size);
        }

        r = qcow2_alloc_clusters(img, q, 1, &offset);
        if (r >= 0)
                r = qcow2_new_l2(img, q, offset, &entries);
        if (r < 0) {
                free(copy);
                return r;
        }
        if (copy) {
                memcpy(entries, copy, q->cluster_size);
                free(copy);
                r = qcow2_free_later(img, q, old, q->cluster_size);
                if (r < 0)
                        return r;
        }
        q->l1[l1_index] = offset | QCOW2_FLAG_COPIED;
        mark_l1_dirty(q, (uint32_t) l1_index);
        *ret = slot_of(q, entries);
        (*ret)->dirty = true;
        (*ret)->unreachable = true;
        return 0;
}

/* ---- clusters ------------------------------------------------------------------------------- */

/* What is to be freed once an entry no longer points to its cluster. */
static int free_entry(Image *img, Qcow2 *q, uint64_t entry) {
        switch (qcow2_entry_type(q, entry)) {
        case QCOW2_CLUSTER_COMPRESSED: {
                uint64_t offset, length;
                qcow2_compressed_range(q, entry, &offset, &length);
                return qcow2_free_later(img, q, offset, length);
        }
        case QCOW2_CLUSTER_NORMAL:
        case QCOW2_CLUSTER_ZERO:
                if (entry & QCOW2_OFFSET_MASK)
                        return qcow2_free_later(img, q, entry & QCOW2_OFFSET_MASK, q->cluster_size);
                return 0;
        default:
                return 0;
        }
}

/* The current content of guest cluster 'guest' (as this image reads it), for the parts of a
 * new cluster that a write does not cover. */
static int old_content(Image *img, Qcow2 *q, uint64_t entry, uint64_t guest, uint8_t *buf) {
        int r;

        switch (qcow2_entry_type(q, entry)) {
        case QCOW2_CLUSTER_NORMAL:
                return image_file_read(img, buf, entry & QCOW2_OFFSET_MASK, q->cluster_size);
        case QCOW2_CLUSTER_COMPRESSED:
                r = qcow2_decompress(img, q, entry, guest);
                if (r < 0)
                        return r;
                memcpy(buf, q->decompressed, q->cluster_size);
                return 0;
        case QCOW2_CLUSTER_ZERO:
                memset(buf, 0, q->cluster_size);
                return 0;
        default: {
                /* Unallocated: what the backing chain says, zeroes past its end. */
                uint64_t n = 0;
                if (img->backing && guest < img->backing->size)
                        n = MIN(q->cluster_size, img->backing->size - guest);
                if (n > 0) {
                        r = image_read(img->backing, buf, guest, (size_t) n);
                        if (r < 0)
                                return image_fail(img, r, "%s", strempty(image_error(img->backing)));
                }
                memset(buf + n, 0, q->cluster_size - n);
                return 0;
        }
        }
}

static bool writable_in_place(const Qcow2 *q, uint64_t entry) {
        return qcow2_entry_type(q, entry) == QCOW2_CLUSTER_NORMAL && (entry & QCOW2_FLAG_COPIED);
}

/* Refuses to write guest data over the image's own fixed metadata, which only a corrupt L2
 * entry could ask for. */
static int check_data_cluster(Image *img, Qcow2 *q, uint64_t host) {
        uint64_t l1_end = q->l1_offset + (uint64_t) q->l1_size * 8;
        uint64_t rt_end = q->reftable_offset + ((uint64_t) q->reftable_clusters << q->cluster_bits);

        if ((host < l1_end && host + q->cluster_size > q->l1_offset) ||
            (host < rt_end && host + q->cluster_size > q->reftable_offset))
                return CORRUPT(img, "Image '%s' is corrupt: a data cluster at 0x%" PRIx64 " overlaps its metadata", img->path,
                               host);
        return 0;
}

int qcow2_write(Image *img, const void *buf, uint64_t offset, size_t length) {
        Qcow2 *q = Q(img);
        const uint8_t *p = buf;
        _cleanup_free_ uint8_t *cluster = NULL;
        int r;

        r = check_writable(img, q);
        if (r >= 0)
                r = before_change(img, q, offset, length);
        if (r < 0)
                return r;

        while (length > 0) {
                uint64_t guest_cluster = offset >> q->cluster_bits, in = offset & (q->cluster_size - 1);
                uint64_t l1_index = guest_cluster >> q->l2_bits, index = guest_cluster & (q->l2_entries - 1);
                Qcow2CachedTable *t;
                uint64_t *e, host, n;

                r = l2_for_write(img, q, l1_index, &t);
                if (r < 0)
                        return r;
                e = t->entries;

                if (writable_in_place(q, e[index])) {
                        /* Ours alone: write where it is, as many such clusters in a row as lie
                         * one after another in the file. */
                        uint64_t k = 1;
                        while (index + k < q->l2_entries && in + length > (k << q->cluster_bits) &&
                               writable_in_place(q, e[index + k]) &&
                               (e[index + k] & QCOW2_OFFSET_MASK) == (e[index] & QCOW2_OFFSET_MASK) + (k << q->cluster_bits))
                                k++;
                        host = e[index] & QCOW2_OFFSET_MASK;
                        for (uint64_t i = 0; i < k; i++) {
                                r = check_data_cluster(img, q, host + (i << q->cluster_bits));
                                if (r < 0)
                                        return r;
                        }
                        n = MIN((uint64_t) length, (k << q->cluster_bits) - in);
                        r = image_file_write(img, p, host + in, (size_t) n);
                        if (r < 0)
                                return r;
                        write_behind(img, q, host + in, n);
                } else if (in == 0 && length >= q->cluster_size) {
                        /* Whole clusters: as many as the write covers and need a new home, in one
                         * run of new clusters and one write. */
                        uint64_t k = 1;
                        while (index + k < q->l2_entries && length >= ((k + 1) << q->cluster_bits) &&
                               !writable_in_place(q, e[index + k]))
                                k++;
                        r = qcow2_alloc_clusters(img, q, k, &host);
                        if (r < 0)
                                return r;
                        n = k << q->cluster_bits;
                        r = image_file_write(img, p, host, (size_t) n);
                        if (r < 0)
                                return r;
                        write_behind(img, q, host, n);
                        for (uint64_t i = 0; i < k; i++) {
                                r = free_entry(img, q, e[index + i]);
                                if (r < 0)
                                        return r;
                                e[index + i] = (host + (i << q->cluster_bits)) | QCOW2_FLAG_COPIED;
                        }
                        t->dirty = true;
                } else {
                        /* Part of a cluster that needs a new home: the rest comes from what it
                         * read as before. */
                        if (!cluster && !(cluster = malloc(q->cluster_size)))
                                return image_fail(img, -ENOMEM, "Out of memory");
                        r = old_content(img, q, e[index], guest_cluster << q->cluster_bits, cluster);
                        if (r < 0)
                                return r;
                        n = MIN((uint64_t) length, q->cluster_size - in);
                        memcpy(cluster + in, p, (size_t) n);
                        r = qcow2_alloc_clusters(img, q, 1, &host);
                        if (r < 0)
                                return r;
                        r = image_file_write(img, cluster, host, q->cluster_size);
                        if (r < 0)
                                return r;
                        write_behind(img, q, host, q->cluster_size);
                        r = free_entry(img, q, e[index]);
                        if (r < 0)
                                return r;
                        e[index] = host | QCOW2_FLAG_COPIED;
                        t->dirty = true;
                }

                /* Reads of a cluster we just rewrote must not come from a stale decompression. */
                q->decompressed_entry = 0;
                p += n;
                offset += n;
                length -= (size_t) n;

                r = bound_pending_frees(img, q);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Sets whole clusters [first, first + count) to 'entry' (zero flag or unallocated), freeing what
 * they held. */
static int set_whole_clusters(Image *img, Qcow2 *q, uint64_t first, uint64_t count, uint64_t new_entry) {
        int r;

        for (uint64_t c = first; c < first + count;) {
                uint64_t l1_index = c >> q->l2_bits, index = c & (q->l2_entries - 1);
                Qcow2CachedTable *t;

                /* Nothing to do where there is no table and nothing to say. */
                if (new_entry == 0 && (l1_index >= q->l1_size || !(q->l1[l1_index] & QCOW2_OFFSET_MASK))) {
                        c = (l1_index + 1) << q->l2_bits;
                        continue;
                }
                r = l2_for_write(img, q, l1_index, &t);
                if (r < 0)
                        return r;
                for (; index < q->l2_entries && c < first + count; index++, c++) {
                        if (t->entries[index] == new_entry)
                                continue;
                        r = free_entry(img, q, t->entries[index]);
                        if (r < 0)
                                return r;
                        t->entries[index] = new_entry;
                        t->dirty = true;
                }
                r = bound_pending_frees(img, q);
                if (r < 0)
                        return r;
        }
        q->decompressed_entry = 0;
        return 0;
}

/* Does anything lie below this layer? Whether its chain is open or not (commit opens the layers
 * above base without it): what the header records decides, as it decides what QEMU reads. */
static bool has_backing(const Image *img) {
        return img->backing_name != NULL;
}

/* The L2 entry of guest cluster 'cluster' as it is, without allocating anything. */
static int current_entry(Image *img, Qcow2 *q, uint64_t cluster, uint64_t *ret) {
        uint64_t *table, index;
        int r;

        r = qcow2_lookup_l2(img, q, cluster << q->cluster_bits, &table, &index);
        if (r < 0)
                return r;
        *ret = table ? table[index] : 0;
        return 0;
}

/* Writes zeroes over part of a cluster (a head or tail of a request), unless the cluster reads
 * as zeroes already: a zero cluster, or an unallocated one with nothing below it. Then writing
 * would allocate a cluster for nothing. */
static int zero_partial(Image *img, uint64_t offset, uint64_t length) {
        Qcow2 *q = Q(img);
        _cleanup_free_ uint8_t *zeroes = NULL;
        uint64_t entry;
        int r;

        r = current_entry(img, q, offset >> q->cluster_bits, &entry);
        if (r < 0)
                return r;
        switch (qcow2_entry_type(q, entry)) {
        case QCOW2_CLUSTER_ZERO:
                return 0;
        case QCOW2_CLUSTER_UNALLOCATED:
                if (!has_backing(img))
                        return 0;
                break;
        default:
                break;
        }

        zeroes = calloc(1, (size_t) length);
        if (!zeroes)
                return image_fail(img, -ENOMEM, "Out of memory");
        return qcow2_write(img, zeroes, offset, (size_t) length);
}

int qcow2_write_zeroes(Image *img, uint64_t offset, uint64_t length) {
        Qcow2 *q = Q(img);
        uint64_t head_end = MIN(offset + length, (offset + q->cluster_size - 1) & ~(q->cluster_size - 1));
        uint64_t tail_start = MAX(head_end, (offset + length) & ~(q->cluster_size - 1));
        int r;

        r = check_writable(img, q);
        if (r >= 0)
                r = before_change(img, q, offset, length);
        if (r < 0)
                return r;

        if (head_end > offset) {
                r = zero_partial(img, offset, head_end - offset);
                if (r < 0)
                        return r;
        }
        if (tail_start > head_end) {
                uint64_t first = head_end >> q->cluster_bits, count = (tail_start - head_end) >> q->cluster_bits;

                /* As QEMU does: zero clusters where a backing file would show through,
                 * unallocated clusters where nothing lies below (they read as zeroes, cost no
                 * L2 table where there is none, and leave the image as sparse as the data). */
                if (!has_backing(img))
                        r = set_whole_clusters(img, q, first, count, 0);
                else if (q->version >= 3)
                        r = set_whole_clusters(img, q, first, count, QCOW2_FLAG_ZERO);
                else
                        /* Version 2 has no zero flag. */
                        r = zero_partial(img, head_end, tail_start - head_end);
                if (r < 0)
                        return r;
        }
        if (offset + length > tail_start)
                return zero_partial(img, tail_start, offset + length - tail_start);
        return 0;
}

int qcow2_discard(Image *img, uint64_t offset, uint64_t length) {
        Qcow2 *q = Q(img);
        uint64_t first = (offset + q->cluster_size - 1) >> q->cluster_bits;
        uint64_t end = (offset + length) >> q->cluster_bits;
        int r;

        r = check_writable(img, q);
        if (r >= 0)
                r = before_change(img, q, offset, length);
        if (r < 0)
                return r;

        /* Whole clusters become unallocated: they read through to the backing file again. The
         * cluster-sized tail of an image whose size is not a multiple of the cluster size
         * counts as whole. */
        if (offset + length >= img->size)
                end = (img->size + q->cluster_size - 1) >> q->cluster_bits;
        if (end <= first)
                return 0;
        return set_whole_clusters(img, q, first, end - first, 0);
}

/* ---- flushing ------------------------------------------------------------------------------- */

int qcow2_flush_image(Image *img) {
        int r;

        r = qcow2_flush(img);
        return r < 0 ? r : qcow2_bitmaps_sync(img, Q(img));
}

int qcow2_flush(Image *img) {
        Qcow2 *q = Q(img);
        bool l1_changed;
        int r;

        if (!q->writable)
                return 0;

        /* Step 1: counts, and with them the new L2 tables: nothing on disk points to those
         * yet, so they may reach the disk before the counts of what they point to, and the
         * sync that makes the counts durable makes them durable too. */
        for (unsigned i = 0; i < QCOW2_L2_CACHE_TABLES; i++)
                if (q->l2_cache[i].dirty && q->l2_cache[i].unreachable) {
                        r = write_l2(img, q, &q->l2_cache[i]);
                        if (r < 0)
                                return r;
                }
        r = qcow2_flush_refcounts(img, q);
        if (r < 0)
                return r;
        l1_changed = q->l1_dirty_min <= q->l1_dirty_max;
        if (l1_changed && img->file_unsynced) {
                /* No counts to write: the new tables, durable before the L1 names them. */
                r = image_file_sync(img);
                if (r < 0)
                        return r;
        }

        /* Step 2: the tables the disk already points to, and the L1 entries that name the new
         * ones, in one batch: both point only to what is durable now. */
        for (unsigned i = 0; i < QCOW2_L2_CACHE_TABLES; i++)
                if (q->l2_cache[i].dirty) {
                        r = write_l2(img, q, &q->l2_cache[i]);
                        if (r < 0)
                                return r;
                }
        if (l1_changed) {
                size_t n = q->l1_dirty_max - q->l1_dirty_min + 1;
                _cleanup_free_ uint8_t *raw = malloc(n * 8);

                if (!raw)
                        return image_fail(img, -ENOMEM, "Out of memory");
                for (size_t i = 0; i < n; i++)
                        put_be64(raw + 8 * i, q->l1[q->l1_dirty_min + i]);
                /* Once the write is tried, the disk may point to them, whatever it returns. */
                for (unsigned i = 0; i < QCOW2_L2_CACHE_TABLES; i++)
                        q->l2_cache[i].unreachable = false;
                r = image_file_write(img, raw, q->l1_offset + (uint64_t) q->l1_dirty_min * 8, n * 8);
                if (r < 0)
                        return r;
                q->l1_dirty_min = UINT32_MAX;
                q->l1_dirty_max = 0;
        }
        /* Data written in place, tables, L1 entries: durable. Nothing written since the last
         * sync (a second flush, the one on closing after the job's own): nothing to wait for. */
        if (img->file_unsynced) {
                r = image_file_sync(img);
                if (r < 0)
                        return r;
        }

        /* Step 3: nothing on disk points to the dropped clusters any more. */
        return qcow2_apply_pending_frees(img, q);
}

/* ---- the header ----------------------------------------------------------------------------- */

/* Is there room for 'need' more bytes at 'pos' of the new first cluster? */
static int header_room(Image *img, size_t pos, size_t need, size_t cluster, const char *name) {
        if (pos <= cluster && need <= cluster - pos)
                return 0;
        if (name)
                return image_fail(img, -ENOSPC,
                                  "The header of '%s' has no room for backing file name '%s': its extensions and the name must fit in its first cluster (%zu bytes)",
                                  img->path, name, cluster);
        return image_fail(img, -ENOSPC,
                          "The header of '%s' has no room to be rewritten: its extensions must fit in its first cluster (%zu bytes)",
                          img->path, cluster);
}

/* Appends an extension to the new first cluster, padded to 8 bytes as the format wants. */
static int append_extension(Image *img, uint8_t *hdr, size_t *pos, size_t cluster, uint32_t type,
                            const void *data, size_t len, const char *name) {
        size_t padded = (len + 7) & ~(size_t) 7;
        int r;

        r = header_room(img, *pos, 8 + padded, cluster, name);
        if (r < 0)
                return r;
        put_be32(hdr + *pos, type);
        put_be32(hdr + *pos + 4, (uint32_t) len);
        memcpy(hdr + *pos + 8, data, len);      /* the padding stays zero (calloc) */
        *pos += 8 + padded;
        return 0;
}

/* Copies the old header's extensions (read as opening reads them: up to the old name, which
 * may lie in the last one's padding) but those the edit replaces. A new bitmaps extension takes
 * the old one's place: the header keeps its layout, and a change that keeps some bitmaps changes
 * the 24 bytes of the extension only. Sets *ret_bitmaps_done if it was placed. */
static int copy_extensions(Image *img, Qcow2 *q, const uint8_t *old, uint8_t *hdr, size_t *pos,
                           const Qcow2HeaderEdit *e, bool *ret_bitmaps_done) {
        size_t cluster = (size_t) q->cluster_size, ext_end = qcow2_extensions_end(old, cluster);
        int r;

        for (size_t i = q->header_length; i < ext_end && ext_end - i >= 8;) {
                uint32_t type = get_be32(old + i), len = get_be32(old + i + 4);
                bool replaced = (type == QCOW2_EXT_BACKING_FORMAT && e->set_backing) ||
                                (type == QCOW2_EXT_BITMAPS && e->set_bitmaps);

                if (type == QCOW2_EXT_END || len > ext_end - i - 8)
                        break;
                r = 0;
                if (!replaced)
                        r = append_extension(img, hdr, pos, cluster, type, old + i + 8, len, e->backing_name);
                else if (type == QCOW2_EXT_BITMAPS && e->bitmaps_ext && !*ret_bitmaps_done) {
                        r = append_extension(img, hdr, pos, cluster, type, e->bitmaps_ext, QCOW2_BITMAPS_EXT_SIZE,
                                             e->backing_name);
                        *ret_bitmaps_done = true;
                }
                if (r < 0)
                        return r;
                i += 8 + (((size_t) len + 7) & ~(size_t) 7);
        }
        return 0;
}

/* Where the content of a first cluster ends: what lies beyond is zeroes. */
static size_t content_end(const uint8_t *p, size_t n) {
        while (n > 0 && p[n - 1] == 0)
                n--;
        return n;
}

/* The new first cluster in 'hdr' (zeroed, a cluster long): the fixed header as it is on disk, the
 * extensions as the edit wants them, the end of the extensions, the backing file name. Every byte
 * is checked for room before it is written: a header that QEMU accepts may leave none. Returns
 * where the name ends. */
static int build_header(Image *img, Qcow2 *q, const uint8_t *old, uint8_t *hdr, const Qcow2HeaderEdit *e,
                        size_t *ret_end) {
        size_t cluster = (size_t) q->cluster_size, pos = q->header_length;
        const char *name = e->set_backing ? e->backing_name : img->backing_name;
        size_t name_len = name ? strlen(name) : 0;
        bool bitmaps_done = false;
        int r;

        memcpy(hdr, old, q->header_length);
        r = copy_extensions(img, q, old, hdr, &pos, e, &bitmaps_done);
        if (r < 0)
                return r;
        if (e->set_backing && name && e->backing_format != IMAGE_FORMAT_PROBE) {
                const char *fmt = image_format_to_string(e->backing_format);
                r = append_extension(img, hdr, &pos, cluster, QCOW2_EXT_BACKING_FORMAT, fmt, strlen(fmt), name);
                if (r < 0)
                        return r;
        }
        if (e->set_bitmaps && e->bitmaps_ext && !bitmaps_done) {
                r = append_extension(img, hdr, &pos, cluster, QCOW2_EXT_BITMAPS, e->bitmaps_ext, QCOW2_BITMAPS_EXT_SIZE,
                                     e->backing_name);
                if (r < 0)
                        return r;
        }
        /* The end of the extensions (type 0, length 0: zeroes already), then the name. */
        r = header_room(img, pos, 8 + name_len, cluster, e->backing_name);
        if (r < 0)
                return r;
        pos += 8;
        memcpy(hdr + pos, name ?: "", name_len);
        put_be64(hdr + QCOW2_HDR_BACKING_OFFSET, name ? pos : 0);
        put_be32(hdr + QCOW2_HDR_BACKING_SIZE, (uint32_t) name_len);
        *ret_end = pos + name_len;
        return 0;
}

int qcow2_rewrite_header(Image *img, Qcow2 *q, const Qcow2HeaderEdit *e, bool *ret_written) {
        size_t cluster = (size_t) q->cluster_size, end;
        _cleanup_free_ uint8_t *old = NULL, *hdr = NULL;
        uint64_t autoclear;
        int r;

        if (ret_written)
                *ret_written = false;
        old = malloc(cluster);
        hdr = calloc(1, cluster);
        if (!old || !hdr)
                return image_fail(img, -ENOMEM, "Out of memory");
        r = image_file_read(img, old, 0, cluster);
        if (r < 0)
                return r;
        r = build_header(img, q, old, hdr, e, &end);
        if (r < 0)
                return r;
        autoclear = e->autoclear;
        if (q->version >= 3)
                put_be64(hdr + QCOW2_HDR_AUTOCLEAR, autoclear);

        /* Whatever of the old extensions and name lay beyond is cleared too; the zeroes after
         * both are left as they are (a cluster of 2 MiB is not rewritten for a few bytes). */
        if (ret_written)
                *ret_written = true;
        r = image_file_write(img, hdr, 0, MAX(end, content_end(old, (size_t) MIN((uint64_t) cluster, img->file_size))));
        if (r >= 0)
                r = image_file_sync(img);
        if (r < 0)
                return r;
        if (q->version >= 3)
                q->autoclear = autoclear;
        return 0;
}

/* ---- the backing file ------------------------------------------------------------------------ */

int qcow2_set_backing(Image *img, const char *name, ImageFormat format) {
        Qcow2 *q = Q(img);
        char *new_name = NULL;
        int r;

        r = check_writable(img, q);
        if (r < 0)
                return r;
        if (name && strlen(name) > QCOW2_MAX_BACKING_NAME)
                return image_fail(img, -ENAMETOOLONG, "Backing file name of %zu bytes is too long for '%s'", strlen(name),
                                  img->path);
        if (name) {
                new_name = strdup(name);
                if (!new_name)
                        return image_fail(img, -ENOMEM, "Out of memory");
        }

        /* What the guest reads does not change (commit drops layers that read the same), so
         * the bitmaps stay as they are; autoclear bits we do not know go. */
        r = qcow2_rewrite_header(img, q, &(Qcow2HeaderEdit) {
                .set_backing = true,
                .backing_name = name,
                .backing_format = format,
                .autoclear = q->autoclear & qcow2_bitmaps_autoclear(q),
        }, NULL);
        if (r < 0) {
                free(new_name);
                return r;
        }
        free(img->backing_name);
        img->backing_name = new_name;
        img->backing_format = name ? format : IMAGE_FORMAT_PROBE;
        return 0;
}
