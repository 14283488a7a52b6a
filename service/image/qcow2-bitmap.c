/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* qcow2 persistent dirty bitmaps: reading the bitmaps extension, the bitmap directory and the
 * bitmaps themselves. Written from docs/interop/qcow2.txt; the checks and their texts are QEMU's
 * (block/qcow2.c, block/qcow2-bitmap.c), so that an image is refused here exactly when QEMU would
 * refuse it, plus the checks that keep a hostile file from making us read past what it holds or
 * mistake one structure for another.
 *
 * The autoclear rule: bit 0 of the autoclear features says the extension is consistent. A program
 * that does not know bitmaps clears unknown autoclear bits before it writes; an extension found
 * with the bit clear was left stale by such a program, and QEMU ignores it (and drops it when it
 * opens the image for writing). So do we: such an image has no bitmaps. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define CORRUPT(img, ...) image_fail((img), -EUCLEAN, __VA_ARGS__)

static Qcow2 *Q(Image *img) {
        return img->format_data;
}

static bool is_qcow2(const Image *img) {
        return img->ops == &qcow2_ops && img->format_data;
}

/* ---- the header extension ------------------------------------------------------------------ */

int qcow2_bitmaps_parse_ext(Image *img, Qcow2 *q, const uint8_t *data, uint32_t len, char **ret_error) {
        Qcow2Bitmaps *b = &q->bitmaps;

        if (b->ext_found)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: more than one bitmaps extension",
                                     img->path);
        if (len != QCOW2_BITMAPS_EXT_SIZE)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: bitmaps_ext: Invalid extension length",
                                     img->path);
        b->ext_found = true;
        /* Stale: its content says nothing, and is not even checked (as QEMU does). */
        if (!(q->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
                b->lost = true;
                return 0;
        }

        if (get_be32(data + 4) != 0)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: bitmaps_ext: Reserved field is not zero",
                                     img->path);
        b->nb_bitmaps = get_be32(data);
        b->dir_size = get_be64(data + 8);
        b->dir_offset = get_be64(data + 16);
        if (b->nb_bitmaps > QCOW2_MAX_BITMAPS)
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is corrupt: bitmaps_ext: Image has %" PRIu32 " bitmaps, exceeding the QEMU supported maximum of %u",
                                     img->path, b->nb_bitmaps, QCOW2_MAX_BITMAPS);
        if (b->nb_bitmaps == 0)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: found bitmaps extension with zero bitmaps",
                                     img->path);
        if (b->dir_offset & (q->cluster_size - 1))
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: bitmaps_ext: invalid bitmap directory offset",
                                     img->path);
        if (b->dir_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE)
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is corrupt: bitmaps_ext: bitmap directory size (%" PRIu64 ") exceeds the maximum supported size (%u)",
                                     img->path, b->dir_size, QCOW2_MAX_BITMAP_DIRECTORY_SIZE);
        if (b->dir_size == 0)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: Requested bitmap directory size is zero",
                                     img->path);
        return 0;
}

/* ---- where structures may lie -------------------------------------------------------------- */

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
        return a < b + blen && b < a + alen;
}

/* What of the image's fixed metadata [offset, offset + length) would overlap, or NULL. Checked
 * for everything a bitmap owns: a hostile directory could otherwise have us read the L1 table as
 * a bitmap, and once bitmaps are written, free or overwrite it. */
static const char *overlapped_metadata(const Qcow2 *q, uint64_t offset, uint64_t length) {
        if (offset < q->cluster_size)
                return "the header";
        if (q->l1_size > 0 && ranges_overlap(offset, length, q->l1_offset, (uint64_t) q->l1_size * 8))
                return "the L1 table";
        if (ranges_overlap(offset, length, q->reftable_offset, (uint64_t) q->reftable_clusters << q->cluster_bits))
                return "the refcount table";
        return NULL;
}

/* Is [offset, offset + length) inside the file and clear of the fixed metadata? Names the
 * problem in 'what' for the message. */
static int check_placement(Image *img, Qcow2 *q, uint64_t offset, uint64_t length, const char *what) {
        const char *other;

        if (length > img->file_size || offset > img->file_size - length)
                return CORRUPT(img, "Image '%s' is corrupt: %s at offset 0x%" PRIx64 " lies beyond the end of the file",
                               img->path, what, offset);
        other = overlapped_metadata(q, offset, length);
        if (other)
                return CORRUPT(img, "Image '%s' is corrupt: %s at offset 0x%" PRIx64 " overlaps %s", img->path, what,
                               offset, other);
        return 0;
}

/* ---- the directory ------------------------------------------------------------------------- */

/* A bitmap's name as a message can show it: bytes that are not printable ASCII escaped. */
static void printable_name(const uint8_t *name, size_t len, char *buf, size_t buf_size) {
        size_t o = 0;

        for (size_t i = 0; i < len && o + 5 < buf_size; i++) {
                if (name[i] >= 0x20 && name[i] < 0x7f)
                        buf[o++] = (char) name[i];
                else
                        o += (size_t) snprintf(buf + o, buf_size - o, "\\x%02x", name[i]);
        }
        buf[o] = 0;
}

typedef struct DirEntry {
        uint64_t table_offset;
        uint32_t table_size, flags, extra_size;
        uint8_t type, granularity_bits;
        uint16_t name_size;
        const uint8_t *name;
} DirEntry;

static void decode_entry(const uint8_t *p, DirEntry *e) {
        *e = (DirEntry) {
                .table_offset = get_be64(p),
                .table_size = get_be32(p + 8),
                .flags = get_be32(p + 12),
                .type = p[16],
                .granularity_bits = p[17],
                .name_size = (uint16_t) (p[18] << 8 | p[19]),
                .extra_size = get_be32(p + 20),
        };
}

/* Why an entry does not satisfy QEMU's constraints (check_dir_entry()), or NULL. */
static const char *entry_violation(const Image *img, const Qcow2 *q, const DirEntry *e) {
        uint64_t phys;

        if (e->table_size == 0 || e->table_offset == 0 || (e->table_offset & (q->cluster_size - 1)))
                return "its bitmap table is empty or unaligned";
        if (e->table_size > QCOW2_BME_MAX_TABLE_SIZE)
                return "its bitmap table is too large";
        if (e->granularity_bits < QCOW2_BME_MIN_GRANULARITY_BITS || e->granularity_bits > QCOW2_BME_MAX_GRANULARITY_BITS)
                return "its granularity is out of range (2^9 to 2^31 bytes)";
        /* QEMU knows no flag but in_use and auto (extra_data_compatible only means something
         * with extra data, which it refuses). */
        if (e->flags & ~(QCOW2_BME_FLAG_IN_USE | QCOW2_BME_FLAG_AUTO))
                return "it has reserved flags set";
        if (e->name_size == 0 || e->name_size > QCOW2_BME_MAX_NAME_SIZE)
                return "its name is empty or longer than 1023 bytes";
        if (memchr(e->name, 0, e->name_size))
                return "its name contains a NUL byte";
        if (e->type != QCOW2_BME_TYPE_DIRTY_TRACKING)
                return "it is not a dirty tracking bitmap";
        phys = (uint64_t) e->table_size << q->cluster_bits;
        if (phys > QCOW2_BME_MAX_PHYS_SIZE)
                return "its data would be larger than 512 MiB";
        /* An in_use bitmap may have the wrong size (an image resized under it): it is never
         * read anyway. */
        if (!(e->flags & QCOW2_BME_FLAG_IN_USE) && img->size > ((phys * 8) << e->granularity_bits))
                return "its bitmap table is too small for the disk";
        return NULL;
}

static int check_padding(Image *img, const uint8_t *p, const DirEntry *e) {
        uint64_t used = QCOW2_BME_HEADER_SIZE + (uint64_t) e->extra_size + e->name_size;

        for (uint64_t i = used; i < qcow2_bitmap_entry_size(e->name_size, e->extra_size); i++)
                if (p[i] != 0)
                        return CORRUPT(img, "Image '%s' is corrupt: Broken bitmap directory (padding is not zero)",
                                       img->path);
        return 0;
}

/* One entry at 'pos' of the directory, checked as QEMU checks it (bitmap_list_load()). */
static int parse_entry(Image *img, Qcow2 *q, const uint8_t *dir, uint64_t size, uint64_t *pos, Qcow2Bitmap *bm) {
        const uint8_t *p = dir + *pos;
        const char *why;
        char name[128];
        DirEntry e;
        int r;

        if (size - *pos < QCOW2_BME_HEADER_SIZE)
                return CORRUPT(img, "Image '%s' is corrupt: Broken bitmap directory", img->path);
        decode_entry(p, &e);
        if (qcow2_bitmap_entry_size(e.name_size, e.extra_size) > size - *pos)
                return CORRUPT(img, "Image '%s' is corrupt: Broken bitmap directory", img->path);
        /* The spec lets a bitmap with extra data marked compatible be used, but QEMU, which writes
         * every such image, has never written extra data and refuses to open an image that has
         * any: so do we, rather than keep data nobody can check through our rewrites. */
        if (e.extra_size != 0)
                return image_fail(img, -EOPNOTSUPP, "Image '%s': Bitmap extra data is not supported", img->path);
        e.name = p + QCOW2_BME_HEADER_SIZE;
        printable_name(e.name, MIN(e.name_size, (uint16_t) 64), name, sizeof(name));
        why = entry_violation(img, q, &e);
        if (why)
                return CORRUPT(img, "Image '%s' is corrupt: Bitmap '%s' doesn't satisfy the constraints: %s", img->path,
                               name, why);
        r = check_padding(img, p, &e);
        if (r < 0)
                return r;
        r = check_placement(img, q, e.table_offset, (uint64_t) e.table_size * 8, "a bitmap table");
        if (r < 0)
                return r;

        *bm = (Qcow2Bitmap) {
                .table_offset = e.table_offset,
                .table_size = e.table_size,
                .flags = e.flags,
                .granularity_bits = e.granularity_bits,
                .inconsistent = e.flags & QCOW2_BME_FLAG_IN_USE,
        };
        bm->name = strndup((const char *) e.name, e.name_size);
        if (!bm->name)
                return image_fail(img, -ENOMEM, "Out of memory");
        *pos += qcow2_bitmap_entry_size(e.name_size, e.extra_size);
        return 0;
}

static int compare_names(const void *a, const void *b) {
        return strcmp((*(const Qcow2Bitmap *const *) a)->name, (*(const Qcow2Bitmap *const *) b)->name);
}

/* Names must be unique (QEMU could not load two of one name): sorted copies, neighbours
 * compared, so that 65535 bitmaps cost no 2^31 comparisons. */
static int check_unique_names(Image *img, Qcow2 *q) {
        _cleanup_free_ Qcow2Bitmap **sorted = calloc(q->bitmaps.nb_bitmaps, sizeof(Qcow2Bitmap *));

        if (!sorted)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint32_t i = 0; i < q->bitmaps.nb_bitmaps; i++)
                sorted[i] = &q->bitmaps.list[i];
        qsort(sorted, q->bitmaps.nb_bitmaps, sizeof(Qcow2Bitmap *), compare_names);
        for (uint32_t i = 1; i < q->bitmaps.nb_bitmaps; i++)
                if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
                        char name[128];
                        printable_name((const uint8_t *) sorted[i]->name, MIN(strlen(sorted[i]->name), (size_t) 64),
                                       name, sizeof(name));
                        return CORRUPT(img, "Image '%s' is corrupt: two bitmaps are called '%s'", img->path, name);
                }
        return 0;
}

static int compare_ranges(const void *a, const void *b) {
        const Qcow2Range *x = a, *y = b;
        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* No two of the directory and the bitmap tables may share a byte: sorted by offset, each must end
 * before the next begins. */
static int check_tables_apart(Image *img, Qcow2 *q) {
        uint32_t n = q->bitmaps.nb_bitmaps;
        _cleanup_free_ Qcow2Range *r = calloc((size_t) n + 1, sizeof(Qcow2Range));

        if (!r)
                return image_fail(img, -ENOMEM, "Out of memory");
        r[0] = (Qcow2Range) { q->bitmaps.dir_offset, q->bitmaps.dir_size };
        for (uint32_t i = 0; i < n; i++)
                r[i + 1] = (Qcow2Range) { q->bitmaps.list[i].table_offset, (uint64_t) q->bitmaps.list[i].table_size * 8 };
        qsort(r, (size_t) n + 1, sizeof(Qcow2Range), compare_ranges);
        for (uint32_t i = 1; i <= n; i++)
                if (r[i - 1].offset + r[i - 1].length > r[i].offset)
                        return CORRUPT(img, "Image '%s' is corrupt: bitmap structures at offsets 0x%" PRIx64 " and 0x%" PRIx64 " overlap",
                                       img->path, r[i - 1].offset, r[i].offset);
        return 0;
}

void qcow2_bitmap_list_free(Qcow2Bitmap *list, uint32_t n) {
        for (uint32_t i = 0; list && i < n; i++)
                free(list[i].name);
        free(list);
}

static int parse_directory(Image *img, Qcow2 *q, const uint8_t *dir) {
        Qcow2Bitmaps *b = &q->bitmaps;
        uint64_t pos = 0;
        uint32_t n = 0;
        int r;

        for (; pos < b->dir_size; n++) {
                if (n >= b->nb_bitmaps)
                        return CORRUPT(img, "Image '%s' is corrupt: More bitmaps found than specified in header extension",
                                       img->path);
                r = parse_entry(img, q, dir, b->dir_size, &pos, &b->list[n]);
                if (r < 0)
                        return r;
        }
        if (n != b->nb_bitmaps)
                return CORRUPT(img, "Image '%s' is corrupt: Less bitmaps found than specified in header extension", img->path);
        return 0;
}

void qcow2_bitmaps_done(Qcow2 *q) {
        qcow2_bitmaps_drop_tracked(q);
        qcow2_bitmap_list_free(q->bitmaps.list, q->bitmaps.nb_bitmaps);
        q->bitmaps.list = NULL;
        q->bitmaps.loaded = false;
        q->bitmaps.owned_checked = false;
}

int qcow2_bitmaps_load(Image *img, Qcow2 *q) {
        Qcow2Bitmaps *b = &q->bitmaps;
        _cleanup_free_ uint8_t *dir = NULL;
        int r;

        if (b->loaded || !b->ext_found || b->lost)
                return 0;
        r = check_placement(img, q, b->dir_offset, b->dir_size, "the bitmap directory");
        if (r < 0)
                return r;
        dir = malloc(b->dir_size);
        b->list = calloc(b->nb_bitmaps, sizeof(Qcow2Bitmap));
        if (!dir || !b->list)
                return image_fail(img, -ENOMEM, "Out of memory");
        r = image_file_read(img, dir, b->dir_offset, b->dir_size);
        if (r >= 0)
                r = parse_directory(img, q, dir);
        if (r >= 0)
                r = check_unique_names(img, q);
        if (r >= 0)
                r = check_tables_apart(img, q);
        if (r < 0) {
                qcow2_bitmaps_done(q);
                return r;
        }
        b->loaded = true;
        return 0;
}

/* A dirty map of this bitmap, in memory. */
static uint64_t map_bytes(const Image *img, const Qcow2Bitmap *bm) {
        return qcow2_div_round_up(qcow2_div_round_up(img->size, UINT64_C(1) << bm->granularity_bits), 64) * 8;
}

uint64_t qcow2_bitmaps_memory_estimate(const Image *img, const Qcow2 *q) {
        const Qcow2Bitmaps *b = &q->bitmaps;
        uint64_t total, largest_table = 0, largest_map = 0, owned;
        bool bitmaps_only = img->flags & IMAGE_OPEN_BITMAPS_ONLY;

        if (!b->ext_found || b->lost)
                return 0;
        /* The directory as read, and parsed (entries, names, and the arrays that check them). */
        total = 2 * b->dir_size + (uint64_t) b->nb_bitmaps * (sizeof(Qcow2Bitmap) + sizeof(Qcow2Tracked) + 2 * sizeof(Qcow2Range));
        /* Writing, the check of what they own (qcow2_bitmaps_check_owned()): each cluster's
         * offset (no more than the file has), the active L2 tables' offsets, and two clusters.
         * (The offsets of the L2 tables only snapshots name are not known before it reads them;
         * they are bounded by the snapshots' L1 tables, which QEMU bounds.) */
        owned = qcow2_div_round_up(b->dir_size, q->cluster_size);
        if (q->writable)
                total += (uint64_t) q->l1_size * 8 + 2 * q->cluster_size;
        /* The enabled bitmaps in memory while the layer is written; and for any bitmap read or
         * stored meanwhile, its table, a cluster of its data, and two more maps (a merge's target
         * and source). */
        for (uint32_t i = 0; b->list && i < b->nb_bitmaps; i++) {
                owned += qcow2_div_round_up((uint64_t) b->list[i].table_size * 8, q->cluster_size) + b->list[i].table_size;
                if ((b->list[i].flags & QCOW2_BME_FLAG_AUTO) && !bitmaps_only)
                        total += map_bytes(img, &b->list[i]);
                largest_table = MAX(largest_table, (uint64_t) b->list[i].table_size * 8);
                largest_map = MAX(largest_map, map_bytes(img, &b->list[i]));
        }
        /* Opened to change bitmaps only: the maps it reads are those the change names, which the
         * caller counts (image_bitmap_change_memory()). */
        if (bitmaps_only)
                largest_map = 0;
        return total + (q->writable ? MIN(owned, (img->file_size >> q->cluster_bits) + 1) * 8 : 0) + largest_table + q->cluster_size + 2 * largest_map;
}

uint64_t image_bitmap_change_memory(const Image *img, const char *const *names, size_t n) {
        const Qcow2 *q = is_qcow2(img) ? img->format_data : NULL;
        uint64_t largest_map = 0;

        for (size_t k = 0; q && k < n; k++) {
                const Qcow2Bitmap *bm = qcow2_bitmap_find(q, names[k]);
                if (bm)
                        largest_map = MAX(largest_map, map_bytes(img, bm));
        }
        return 2 * largest_map;
}

Qcow2Bitmap *qcow2_bitmap_find(const Qcow2 *q, const char *name) {
        for (uint32_t i = 0; q->bitmaps.list && i < q->bitmaps.nb_bitmaps; i++)
                if (strcmp(q->bitmaps.list[i].name, name) == 0)
                        return &q->bitmaps.list[i];
        return NULL;
}

/* ---- dirty maps ---------------------------------------------------------------------------- */

int image_dirty_map_new(uint64_t size, uint32_t granularity, ImageDirtyMap **ret) {
        ImageDirtyMap *m;
        uint64_t nbits, words;

        if (granularity < 512 || (granularity & (granularity - 1)))
                return -EINVAL;
        nbits = qcow2_div_round_up(size, granularity);
        words = qcow2_div_round_up(nbits, 64);
        if (words * 8 > QCOW2_BME_MAX_PHYS_SIZE)
                return -E2BIG;
        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->words = calloc(words ?: 1, 8);
        if (!m->words) {
                free(m);
                return -ENOMEM;
        }
        m->size = size;
        m->granularity = granularity;
        m->nbits = nbits;
        *ret = m;
        return 0;
}

ImageDirtyMap *image_dirty_map_free(ImageDirtyMap *m) {
        if (m)
                free(m->words);
        free(m);
        return NULL;
}

static void set_bits(ImageDirtyMap *m, uint64_t first, uint64_t end) {
        for (uint64_t i = first; i < end && i < m->nbits;) {
                if (i % 64 == 0 && end - i >= 64 && m->nbits - i >= 64) {
                        m->words[i / 64] = UINT64_MAX;
                        i += 64;
                } else {
                        m->words[i / 64] |= UINT64_C(1) << (i % 64);
                        i++;
                }
        }
}

void image_dirty_map_set(ImageDirtyMap *m, uint64_t offset, uint64_t length) {
        if (length == 0 || offset >= m->size)
                return;
        length = MIN(length, m->size - offset);
        set_bits(m, offset / m->granularity, qcow2_div_round_up(offset + length, m->granularity));
}

void image_dirty_map_reset(ImageDirtyMap *m, uint64_t offset, uint64_t length) {
        uint64_t end;

        if (length == 0 || offset >= m->size)
                return;
        /* Only granules the range covers whole; the end of the disk counts as covering. */
        end = MIN(offset + MIN(length, m->size - offset), m->size);
        for (uint64_t i = qcow2_div_round_up(offset, m->granularity);
             i < m->nbits && (end == m->size || (i + 1) * m->granularity <= end); i++)
                m->words[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

static bool bit_set(const ImageDirtyMap *m, uint64_t i) {
        return m->words[i / 64] >> (i % 64) & 1;
}

uint64_t image_dirty_map_count(const ImageDirtyMap *m) {
        uint64_t bits = 0;

        for (uint64_t w = 0; w < qcow2_div_round_up(m->nbits, 64); w++)
                bits += (uint64_t) __builtin_popcountll(m->words[w]);
        if (bits == 0)
                return 0;
        /* The last granule may reach past the end of the disk. */
        if (bit_set(m, m->nbits - 1))
                return bits * m->granularity - ((uint64_t) m->nbits * m->granularity - m->size);
        return bits * m->granularity;
}

/* The first bit at or after i that is 'value', or nbits. */
static uint64_t find_bit(const ImageDirtyMap *m, uint64_t i, bool value) {
        while (i < m->nbits) {
                uint64_t w = m->words[i / 64];
                if (!value)
                        w = ~w;
                w &= UINT64_MAX << (i % 64);
                if (w)
                        return MIN(m->nbits, (i & ~UINT64_C(63)) + (uint64_t) __builtin_ctzll(w));
                i = (i & ~UINT64_C(63)) + 64;
        }
        return m->nbits;
}

bool image_dirty_map_next(const ImageDirtyMap *m, uint64_t offset, uint64_t *ret_start, uint64_t *ret_length) {
        uint64_t first, end;

        if (offset >= m->size)
                return false;
        first = find_bit(m, offset / m->granularity, true);
        if (first >= m->nbits)
                return false;
        end = find_bit(m, first, false);
        *ret_start = MAX(first * m->granularity, offset);
        *ret_length = MIN(end * m->granularity, m->size) - *ret_start;
        return true;
}

/* ---- reading a bitmap ---------------------------------------------------------------------- */

/* A table entry as QEMU accepts it (check_table_entry()), and its data cluster where we can
 * read it. */
static int check_table_entry(Image *img, Qcow2 *q, const Qcow2Bitmap *bm, uint64_t entry) {
        uint64_t offset = entry & QCOW2_BME_TABLE_OFFSET_MASK;

        if ((entry & QCOW2_BME_TABLE_RESERVED_MASK) ||
            (offset != 0 && ((entry & QCOW2_BME_TABLE_ALL_ONES) || (offset & (q->cluster_size - 1)))))
                return CORRUPT(img, "Image '%s' is corrupt: Could not read bitmap_table table from image for bitmap '%s': invalid entry 0x%016" PRIx64,
                               img->path, bm->name, entry);
        if (offset == 0)
                return 0;
        if (ranges_overlap(offset, q->cluster_size, q->bitmaps.dir_offset, q->bitmaps.dir_size) ||
            ranges_overlap(offset, q->cluster_size, bm->table_offset, (uint64_t) bm->table_size * 8))
                return CORRUPT(img, "Image '%s' is corrupt: a data cluster of bitmap '%s' at offset 0x%" PRIx64 " overlaps the bitmap directory or its table",
                               img->path, bm->name, offset);
        return check_placement(img, q, offset, q->cluster_size, "a bitmap data cluster");
}

int qcow2_bitmap_read_table(Image *img, Qcow2 *q, const Qcow2Bitmap *bm, uint64_t **ret) {
        _cleanup_free_ uint64_t *table = malloc((size_t) bm->table_size * 8);
        int r;

        if (!table)
                return image_fail(img, -ENOMEM, "Out of memory");
        r = image_file_read(img, table, bm->table_offset, (size_t) bm->table_size * 8);
        if (r < 0)
                return r;
        for (uint32_t i = 0; i < bm->table_size; i++) {
                table[i] = get_be64((const uint8_t *) &table[i]);
                r = check_table_entry(img, q, bm, table[i]);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(table);
        return 0;
}

/* Cluster i of the bitmap data (QEMU's serialization: bit n is bit n % 8 of byte n / 8) into
 * the map's words, which hold the same bits little-endian. */
static void merge_cluster(ImageDirtyMap *m, const uint8_t *data, uint64_t first_byte, uint64_t n) {
        for (uint64_t k = 0; k < n; k++) {
                uint64_t byte = first_byte + k;
                m->words[byte / 8] |= (uint64_t) data[k] << (8 * (byte % 8));
        }
}

/* Bits past the end of the disk say nothing (the format wants them zero; we make sure). */
static void clear_tail(ImageDirtyMap *m) {
        if (m->nbits % 64)
                m->words[m->nbits / 64] &= (UINT64_C(1) << (m->nbits % 64)) - 1;
}

static int read_data(Image *img, Qcow2 *q, const Qcow2Bitmap *bm, const uint64_t *table, ImageDirtyMap *m) {
        uint64_t bytes = qcow2_bitmap_bytes(m->size, bm->granularity_bits);
        _cleanup_free_ uint8_t *buf = malloc(q->cluster_size);
        int r;

        if (!buf)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint64_t i = 0; i < bm->table_size; i++) {
                uint64_t first = i << q->cluster_bits, n = MIN(q->cluster_size, bytes - first);
                uint64_t offset = table[i] & QCOW2_BME_TABLE_OFFSET_MASK;

                if (offset == 0) {
                        if (table[i] & QCOW2_BME_TABLE_ALL_ONES)
                                set_bits(m, first * 8, (first + n) * 8);
                        continue;
                }
                r = image_file_read(img, buf, offset, q->cluster_size);
                if (r < 0)
                        return r;
                merge_cluster(m, buf, first, n);
        }
        clear_tail(m);
        return 0;
}

int qcow2_bitmap_read(Image *img, Qcow2 *q, const Qcow2Bitmap *bm, ImageDirtyMap **ret) {
        _cleanup_free_ uint64_t *table = NULL;
        ImageDirtyMap *m;
        int r;

        /* Exactly the clusters the disk needs, as QEMU's load_bitmap_data() wants. */
        if (qcow2_div_round_up(qcow2_bitmap_bytes(img->size, bm->granularity_bits), q->cluster_size) != bm->table_size)
                return CORRUPT(img, "Image '%s' is corrupt: Could not read bitmap '%s' from image: its table has %" PRIu32 " entries for a disk of %" PRIu64 " bytes",
                               img->path, bm->name, bm->table_size, img->size);
        r = qcow2_bitmap_read_table(img, q, bm, &table);
        if (r < 0)
                return r;
        r = image_dirty_map_new(img->size, UINT32_C(1) << bm->granularity_bits, &m);
        if (r < 0)
                return image_fail(img, r, "Could not load bitmap '%s' of '%s': %m", bm->name, img->path);
        r = read_data(img, q, bm, table, m);
        if (r < 0) {
                image_dirty_map_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

/* ---- who owns the bitmaps' clusters -------------------------------------------------------- *
 *
 * Changing bitmaps frees the clusters of the old directory and of replaced or removed bitmaps
 * (qcow2-bitmap-write.c), and the allocator hands them out again. The checks above keep a
 * hostile directory from pointing into the header, the L1 table or the refcount table, but a
 * bitmap table or data cluster could still be an L2 table, a refcount block, a guest data
 * cluster (or hold part of a compressed one), or a snapshot's table: freeing it would let a
 * later allocation overwrite guest data or metadata. So before the first change of an image's
 * bitmaps, every cluster they own is checked to be theirs alone: used by nothing else the image
 * names, and counted exactly once. This is qemu-img check's walk: every L2 table is read once,
 * one at a time, in file order (the snapshots' own L2 tables too, each once however many
 * snapshots or L1 entries name it), each entry looked up in the sorted set of the bitmaps'
 * clusters; memory is that set, the L2 tables' offsets and one cluster, and a hostile image can
 * make it read no more than about twice its length. It costs a read of all the metadata, so it
 * is done once per open image (a job's open for writing, or the first bitmap command): after it,
 * the bitmaps own only clusters checked here or allocated by us, whose counts the allocator
 * keeps.
 *
 * Reading a bitmap (listing, loading, a backup's sync=bitmap) needs none of this: it writes and
 * frees nothing, and a data cluster that is also something else only gives wrong bits of a
 * bitmap, never a change of the image. */

typedef struct Owned {
        uint64_t *clusters;             /* offsets, sorted */
        size_t n, cap;
} Owned;

static int compare_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static int owned_add(Image *img, Owned *o, const Qcow2 *q, uint64_t offset, uint64_t length) {
        for (uint64_t c = offset; c < offset + length; c += q->cluster_size) {
                /* Each lies in the file (the checks when the directory and the tables were read):
                 * more than the file has means some are there twice. */
                if (o->n == o->cap)
                        return CORRUPT(img, "Image '%s' is corrupt: its bitmaps name more clusters than the file has",
                                       img->path);
                o->clusters[o->n++] = c;
        }
        return 0;
}

/* The tables of the bitmaps whose clusters a change may free: all but an inconsistent one whose
 * table fails the checks (free_bitmap_later() leaves its clusters alone). */
static int owned_collect(Image *img, Qcow2 *q, Owned *o) {
        const Qcow2Bitmaps *b = &q->bitmaps;
        uint64_t max = qcow2_div_round_up(b->dir_size, q->cluster_size);
        int r;

        for (uint32_t i = 0; i < b->nb_bitmaps; i++)
                max += qcow2_div_round_up((uint64_t) b->list[i].table_size * 8, q->cluster_size) + b->list[i].table_size;
        o->cap = (size_t) MIN(max, (img->file_size >> q->cluster_bits) + 1);
        o->clusters = malloc(MAX(o->cap, (size_t) 1) * sizeof(uint64_t));
        if (!o->clusters)
                return image_fail(img, -ENOMEM, "Out of memory");
        r = owned_add(img, o, q, b->dir_offset, b->dir_size);
        for (uint32_t i = 0; r >= 0 && i < b->nb_bitmaps; i++) {
                const Qcow2Bitmap *bm = &b->list[i];
                _cleanup_free_ uint64_t *table = NULL;

                r = qcow2_bitmap_read_table(img, q, bm, &table);
                if (r < 0) {
                        if (!bm->inconsistent)
                                return r;
                        r = 0;
                        continue;
                }
                r = owned_add(img, o, q, bm->table_offset, (uint64_t) bm->table_size * 8);
                for (uint32_t k = 0; r >= 0 && k < bm->table_size; k++)
                        if (table[k] & QCOW2_BME_TABLE_OFFSET_MASK)
                                r = owned_add(img, o, q, table[k] & QCOW2_BME_TABLE_OFFSET_MASK, q->cluster_size);
        }
        if (r < 0)
                return r;
        qsort(o->clusters, o->n, sizeof(uint64_t), compare_u64);
        return 0;
}

/* What of the bitmaps a cluster is, for a message: "the bitmap directory", "the table of bitmap
 * 'x'", "a data cluster of bitmap 'x'". Only on the way to an error: it reads the tables again. */
static void owner_name(Image *img, Qcow2 *q, uint64_t cluster, char *buf, size_t size) {
        const Qcow2Bitmaps *b = &q->bitmaps;
        char name[128];

        snprintf(buf, size, "a cluster of the bitmaps");
        if (ranges_overlap(cluster, q->cluster_size, b->dir_offset, b->dir_size)) {
                snprintf(buf, size, "the bitmap directory");
                return;
        }
        for (uint32_t i = 0; i < b->nb_bitmaps; i++) {
                const Qcow2Bitmap *bm = &b->list[i];
                _cleanup_free_ uint64_t *table = NULL;

                printable_name((const uint8_t *) bm->name, MIN(strlen(bm->name), (size_t) 64), name, sizeof(name));
                if (ranges_overlap(cluster, q->cluster_size, bm->table_offset, (uint64_t) bm->table_size * 8)) {
                        snprintf(buf, size, "the bitmap table of bitmap '%s'", name);
                        return;
                }
                if (qcow2_bitmap_read_table(img, q, bm, &table) < 0)
                        continue;
                for (uint32_t k = 0; k < bm->table_size; k++)
                        if ((table[k] & QCOW2_BME_TABLE_OFFSET_MASK) == cluster) {
                                snprintf(buf, size, "a data cluster of bitmap '%s'", name);
                                return;
                        }
        }
}

static int owner_conflict(Image *img, Qcow2 *q, uint64_t cluster, const char *what) {
        char owner[200];

        owner_name(img, q, cluster, owner, sizeof(owner));
        return CORRUPT(img, "Image '%s' is corrupt: %s at offset 0x%" PRIx64 " is also used as %s", img->path, owner,
                       cluster, what);
}

/* Is any cluster of [offset, offset + length) the bitmaps'? */
static int check_not_owned(Image *img, Qcow2 *q, const Owned *o, uint64_t offset, uint64_t length, const char *what) {
        uint64_t first = offset & ~(q->cluster_size - 1);

        if (length == 0)
                return 0;
        for (uint64_t c = first; c < offset + length && c >= first; c += q->cluster_size)
                if (bsearch(&c, o->clusters, o->n, sizeof(uint64_t), compare_u64))
                        return owner_conflict(img, q, c, what);
        return 0;
}

/* The L2 table at 'offset' as it is now: the cached copy if there is one (it may be newer than
 * the file), else read into 'buf' (host order). */
static int l2_entries(Image *img, Qcow2 *q, uint64_t offset, uint64_t *buf, const uint64_t **ret) {
        int r;

        for (unsigned i = 0; i < q->cache_tables; i++)
                if (q->l2_cache[i].offset == offset && q->l2_cache[i].entries) {
                        *ret = q->l2_cache[i].entries;
                        return 0;
                }
        if ((offset & (q->cluster_size - 1)) || offset > img->file_size || img->file_size - offset < q->cluster_size)
                return CORRUPT(img, "Image '%s' is corrupt: L2 table at offset 0x%" PRIx64 " is unaligned or beyond the end of the file",
                               img->path, offset);
        r = image_file_read(img, buf, offset, q->cluster_size);
        if (r < 0)
                return r;
        for (uint64_t i = 0; i < q->l2_entries; i++)
                buf[i] = get_be64((const uint8_t *) &buf[i]);
        *ret = buf;
        return 0;
}

/* The L2 table, and every cluster its entries point to. */
static int check_l2(Image *img, Qcow2 *q, const Owned *o, uint64_t offset, uint64_t *buf, bool snapshot) {
        const uint64_t *l2 = NULL;
        int r;

        r = check_not_owned(img, q, o, offset, q->cluster_size, snapshot ? "an L2 table of a snapshot" : "an L2 table");
        if (r < 0)
                return r;
        r = l2_entries(img, q, offset, buf, &l2);
        if (r < 0)
                return r;
        for (uint64_t i = 0; i < q->l2_entries; i++) {
                uint64_t start = l2[i] & QCOW2_OFFSET_MASK, length = q->cluster_size;
                const char *what = "a guest data cluster";

                if (qcow2_entry_type(q, l2[i]) == QCOW2_CLUSTER_COMPRESSED) {
                        qcow2_compressed_range(q, l2[i], &start, &length);
                        what = "a compressed guest data cluster";
                }
                if (start == 0)
                        continue;
                r = check_not_owned(img, q, o, start, length, what);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A set of L2 table offsets: sorted, each once. */
typedef struct OffsetSet {
        uint64_t *v;
        size_t n, cap;
        size_t compacted;               /* n at the last sort */
} OffsetSet;

static void offset_set_done(OffsetSet *s) {
        free(s->v);
}

static void offset_set_sort(OffsetSet *s) {
        size_t k = 0;

        if (s->n == 0)
                return;         /* v may be NULL, which qsort() must not get */
        qsort(s->v, s->n, sizeof(uint64_t), compare_u64);
        for (size_t i = 0; i < s->n; i++)
                if (k == 0 || s->v[i] != s->v[k - 1])
                        s->v[k++] = s->v[i];
        s->n = s->compacted = k;
}

static int offset_set_add(Image *img, OffsetSet *s, uint64_t v) {
        if (s->n == s->cap) {
                /* Sorting first keeps it at the distinct offsets (twice them at most). */
                if (s->n > 2 * s->compacted + 1024)
                        offset_set_sort(s);
                if (s->n == s->cap) {
                        size_t cap = MAX(s->cap * 2, (size_t) 1024);
                        uint64_t *grown = reallocarray(s->v, cap, sizeof(uint64_t));
                        if (!grown)
                                return image_fail(img, -ENOMEM, "Out of memory");
                        s->v = grown;
                        s->cap = cap;
                }
        }
        s->v[s->n++] = v;
        return 0;
}

static bool offset_set_has(const OffsetSet *s, uint64_t v) {
        return s->compacted > 0 && bsearch(&v, s->v, s->compacted, sizeof(uint64_t), compare_u64);
}

/* Walks each L2 table of the set once (in file order), with its clusters. */
static int check_l2_set(Image *img, Qcow2 *q, const Owned *o, OffsetSet *s, uint64_t *buf, bool snapshot) {
        int r;

        offset_set_sort(s);
        for (size_t i = 0; i < s->n; i++) {
                r = check_l2(img, q, o, s->v[i], buf, snapshot);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The active L1 table's L2 tables, each once however often the table names it. */
static int active_l2_set(Image *img, Qcow2 *q, OffsetSet *s) {
        int r;

        for (uint32_t i = 0; i < q->l1_size; i++)
                if (q->l1[i] & QCOW2_OFFSET_MASK) {
                        r = offset_set_add(img, s, q->l1[i] & QCOW2_OFFSET_MASK);
                        if (r < 0)
                                return r;
                }
        offset_set_sort(s);
        return 0;
}

/* The snapshot table (QEMU's layout: a fixed part of 40 bytes, extra data, ID and name, padded
 * to 8 bytes). */
#define SNAPSHOT_HEADER_SIZE 40U
#define SNAPSHOT_MAX_EXTRA_DATA 1024U                   /* QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA */
#define SNAPSHOT_MAX_TABLE_SIZE (UINT64_C(64) << 20)    /* QEMU's QCOW_MAX_SNAPSHOTS_SIZE */

/* Each snapshot's L1 table (n of them, sorted by offset), and the snapshot table's length. */
static int read_snapshot_table(Image *img, Qcow2 *q, Qcow2Range *l1s, uint64_t *ret_length) {
        uint64_t pos = q->snapshots_offset;
        int r;

        for (uint32_t i = 0; i < q->nb_snapshots; i++) {
                uint8_t h[SNAPSHOT_HEADER_SIZE];
                uint64_t offset, bytes;

                if (pos > img->file_size || img->file_size - pos < sizeof(h) ||
                    pos - q->snapshots_offset > SNAPSHOT_MAX_TABLE_SIZE)
                        return CORRUPT(img, "Image '%s' is corrupt: the snapshot table at offset 0x%" PRIx64 " is too large or lies beyond the end of the file",
                                       img->path, q->snapshots_offset);
                r = image_file_read(img, h, pos, sizeof(h));
                if (r < 0)
                        return r;
                if (get_be32(h + 36) > SNAPSHOT_MAX_EXTRA_DATA)
                        return CORRUPT(img, "Image '%s' is corrupt: a snapshot has too much extra data", img->path);
                pos += (sizeof(h) + get_be32(h + 36) + (uint64_t) (h[12] << 8 | h[13]) + (uint64_t) (h[14] << 8 | h[15]) + 7) &
                       ~UINT64_C(7);
                offset = get_be64(h);
                bytes = (uint64_t) get_be32(h + 8) * 8;
                if (bytes > QCOW2_MAX_L1_BYTES || (offset & (q->cluster_size - 1)) || offset > img->file_size ||
                    img->file_size - offset < bytes)
                        return CORRUPT(img, "Image '%s' is corrupt: a snapshot's L1 table at offset 0x%" PRIx64 " is unaligned, too large or beyond the end of the file",
                                       img->path, offset);
                l1s[i] = (Qcow2Range) { offset, bytes };
        }
        if (pos > img->file_size || pos - q->snapshots_offset > SNAPSHOT_MAX_TABLE_SIZE)
                return CORRUPT(img, "Image '%s' is corrupt: the snapshot table at offset 0x%" PRIx64 " is too large or lies beyond the end of the file",
                               img->path, q->snapshots_offset);
        /* Each snapshot has its own L1 table (QEMU counts each once): so all of them together are
         * read in at most the file's length. */
        qsort(l1s, q->nb_snapshots, sizeof(Qcow2Range), compare_ranges);
        for (uint32_t i = 1; i < q->nb_snapshots; i++)
                if (l1s[i].length > 0 && l1s[i - 1].offset + l1s[i - 1].length > l1s[i].offset)
                        return CORRUPT(img, "Image '%s' is corrupt: the L1 tables of two snapshots at offsets 0x%" PRIx64 " and 0x%" PRIx64 " overlap",
                                       img->path, l1s[i - 1].offset, l1s[i].offset);
        *ret_length = pos - q->snapshots_offset;
        return 0;
}

/* A snapshot's L1 table, read a cluster at a time: its L2 tables that the active L1 table does
 * not name go to 'extra'. */
static int snapshot_l2_set(Image *img, Qcow2 *q, const Owned *o, const Qcow2Range *l1, const OffsetSet *active,
                           OffsetSet *extra, uint8_t *chunk) {
        int r;

        r = check_not_owned(img, q, o, l1->offset, l1->length, "the L1 table of a snapshot");
        if (r < 0)
                return r;
        for (uint64_t pos = 0; pos < l1->length; pos += q->cluster_size) {
                uint64_t n = MIN(q->cluster_size, l1->length - pos);

                r = image_file_read(img, chunk, l1->offset + pos, n);
                if (r < 0)
                        return r;
                for (uint64_t k = 0; k < n; k += 8) {
                        uint64_t l2 = get_be64(chunk + k) & QCOW2_OFFSET_MASK;

                        if (l2 == 0 || offset_set_has(active, l2))
                                continue;
                        /* Only tables the walk can read are kept: no more of them than the file
                         * has clusters. */
                        if ((l2 & (q->cluster_size - 1)) || l2 > img->file_size || img->file_size - l2 < q->cluster_size)
                                return CORRUPT(img, "Image '%s' is corrupt: L2 table of a snapshot at offset 0x%" PRIx64 " is unaligned or beyond the end of the file",
                                               img->path, l2);
                        r = offset_set_add(img, extra, l2);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* The snapshot table, each snapshot's L1 table, and the L2 tables only snapshots name (each
 * once, however many snapshots share it). */
static int check_snapshots(Image *img, Qcow2 *q, const Owned *o, const OffsetSet *active, uint64_t *buf) {
        _cleanup_free_ Qcow2Range *l1s = NULL;
        _cleanup_(offset_set_done) OffsetSet extra = {};
        uint64_t length = 0;
        int r;

        if (q->nb_snapshots == 0)
                return 0;
        l1s = calloc(q->nb_snapshots, sizeof(Qcow2Range));
        if (!l1s)
                return image_fail(img, -ENOMEM, "Out of memory");
        r = read_snapshot_table(img, q, l1s, &length);
        if (r < 0)
                return r;
        r = check_not_owned(img, q, o, q->snapshots_offset, length, "the snapshot table");
        for (uint32_t i = 0; r >= 0 && i < q->nb_snapshots; i++)
                r = snapshot_l2_set(img, q, o, &l1s[i], active, &extra, (uint8_t *) buf);
        if (r < 0)
                return r;
        return check_l2_set(img, q, o, &extra, buf, true);
}

/* Everything the image names besides the bitmaps: header, L1 table, refcount table and blocks,
 * L2 tables, data clusters, snapshots. */
static int check_others(Image *img, Qcow2 *q, const Owned *o) {
        _cleanup_free_ uint64_t *buf = malloc(q->cluster_size);
        _cleanup_(offset_set_done) OffsetSet active = {};
        int r;

        if (!buf)
                return image_fail(img, -ENOMEM, "Out of memory");
        r = check_not_owned(img, q, o, 0, q->cluster_size, "the header");
        if (r >= 0)
                r = check_not_owned(img, q, o, q->l1_offset, (uint64_t) q->l1_size * 8, "the L1 table");
        if (r >= 0)
                r = check_not_owned(img, q, o, q->reftable_offset, (uint64_t) q->reftable_clusters << q->cluster_bits,
                                    "the refcount table");
        for (uint64_t i = 0; r >= 0 && i < q->reftable_entries; i++)
                if (q->reftable[i] & QCOW2_REFTABLE_OFFSET_MASK)
                        r = check_not_owned(img, q, o, q->reftable[i] & QCOW2_REFTABLE_OFFSET_MASK, q->cluster_size,
                                            "a refcount block");
        if (r >= 0)
                r = active_l2_set(img, q, &active);
        /* The snapshots' L1 tables are read through 'buf' before the L2 walk needs it. */
        if (r >= 0)
                r = check_snapshots(img, q, o, &active, buf);
        if (r >= 0)
                r = check_l2_set(img, q, o, &active, buf, false);
        return r;
}

/* No cluster twice among the bitmaps' own, and each counted exactly once. */
static int check_owned_counts(Image *img, Qcow2 *q, const Owned *o) {
        char owner[200];
        int r;

        for (size_t i = 0; i < o->n; i++) {
                uint64_t refcount = 0;

                if (i > 0 && o->clusters[i] == o->clusters[i - 1]) {
                        owner_name(img, q, o->clusters[i], owner, sizeof(owner));
                        return CORRUPT(img, "Image '%s' is corrupt: %s at offset 0x%" PRIx64 " is used twice by the bitmaps",
                                       img->path, owner, o->clusters[i]);
                }
                r = qcow2_refcount_get(img, q, o->clusters[i] >> q->cluster_bits, &refcount);
                if (r < 0)
                        return r;
                if (refcount != 1) {
                        owner_name(img, q, o->clusters[i], owner, sizeof(owner));
                        return CORRUPT(img, "Image '%s' is corrupt: %s at offset 0x%" PRIx64 " has refcount %" PRIu64 ", not 1",
                                       img->path, owner, o->clusters[i], refcount);
                }
        }
        return 0;
}

int qcow2_bitmaps_check_owned(Image *img, Qcow2 *q) {
        Qcow2Bitmaps *b = &q->bitmaps;
        _cleanup_free_ uint64_t *clusters = NULL;
        Owned o = {};
        int r;

        if (b->owned_checked || !b->loaded || b->nb_bitmaps == 0)
                return 0;
        if (!q->writable)
                return image_fail(img, -EBADF, "Image '%s' is not open for writing", img->path);
        r = owned_collect(img, q, &o);
        clusters = o.clusters;
        /* What else a cluster is first: that says more than its count (a compressed cluster's
         * host cluster, for one, is counted once for each compressed cluster in it). */
        if (r >= 0)
                r = check_others(img, q, &o);
        if (r >= 0)
                r = check_owned_counts(img, q, &o);
        if (r < 0)
                return r;
        b->owned_checked = true;
        return 0;
}

/* ---- the interface ------------------------------------------------------------------------- */

int qcow2_dirty_map_copy(Image *img, const ImageDirtyMap *m, ImageDirtyMap **ret) {
        ImageDirtyMap *copy = NULL;
        int r;

        r = image_dirty_map_new(m->size, m->granularity, &copy);
        if (r < 0)
                return image_fail(img, r, "Out of memory");
        memcpy(copy->words, m->words, qcow2_div_round_up(m->nbits, 64) * 8);
        *ret = copy;
        return 0;
}

static int load_directory(Image *img) {
        if (!is_qcow2(img))
                return 0;
        if (img->flags & IMAGE_OPEN_HEADERS_ONLY)
                return image_fail(img, -EBADF, "Image '%s' was opened for its headers only", img->path);
        return qcow2_bitmaps_load(img, Q(img));
}

bool image_bitmaps_lost(Image *img) {
        return is_qcow2(img) && Q(img)->bitmaps.lost;
}

static unsigned info_flags(const Qcow2Bitmap *bm) {
        return ((bm->flags & QCOW2_BME_FLAG_IN_USE) ? IMAGE_BITMAP_IN_USE : 0) |
               ((bm->flags & QCOW2_BME_FLAG_AUTO) ? IMAGE_BITMAP_AUTO : 0) |
               (bm->inconsistent ? IMAGE_BITMAP_INCONSISTENT : 0);
}

int image_bitmap_list(Image *img, ImageBitmapInfo **ret, size_t *ret_n) {
        ImageBitmapInfo *list;
        uint32_t n;
        int r;

        r = load_directory(img);
        if (r < 0)
                return r;
        n = is_qcow2(img) && Q(img)->bitmaps.loaded ? Q(img)->bitmaps.nb_bitmaps : 0;
        list = calloc(n ?: 1, sizeof(ImageBitmapInfo));
        if (!list)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint32_t i = 0; i < n; i++) {
                const Qcow2Bitmap *bm = &Q(img)->bitmaps.list[i];
                list[i] = (ImageBitmapInfo) {
                        .name = strdup(bm->name),
                        .granularity = UINT32_C(1) << bm->granularity_bits,
                        .flags = info_flags(bm),
                };
                if (!list[i].name) {
                        image_bitmap_list_free(list, i);
                        return image_fail(img, -ENOMEM, "Out of memory");
                }
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

void image_bitmap_list_free(ImageBitmapInfo *list, size_t n) {
        for (size_t i = 0; list && i < n; i++)
                free(list[i].name);
        free(list);
}

int image_bitmap_load(Image *img, const char *name, ImageDirtyMap **ret) {
        const Qcow2Bitmap *bm;
        int r;

        r = load_directory(img);
        if (r < 0)
                return r;
        bm = is_qcow2(img) ? qcow2_bitmap_find(Q(img), name) : NULL;
        if (!bm)
                return image_fail(img, -ENOENT, "Dirty bitmap '%s' not found", name);
        if (bm->inconsistent)
                return image_fail(img, -EBUSY, "Bitmap '%s' is inconsistent and cannot be used", name);
        /* One that records our writes is newer in memory than on disk. */
        for (size_t i = 0; i < Q(img)->bitmaps.n_tracked; i++)
                if (strcmp(Q(img)->bitmaps.tracked[i].name, name) == 0)
                        return qcow2_dirty_map_copy(img, Q(img)->bitmaps.tracked[i].map, ret);
        return qcow2_bitmap_read(img, Q(img), bm, ret);
}

/* Dirty bits in bytes [first, first + n) of the bitmap data, of which only the first 'nbits' bits
 * (of the whole data) stand for the disk; and whether the disk's last bit is among them, set. */
static uint64_t count_cluster(const uint8_t *data, uint64_t first, uint64_t n, uint64_t nbits, bool *ret_last) {
        uint64_t whole = MIN(n, nbits / 8 > first ? nbits / 8 - first : 0), bits = 0, k = 0;

        /* The bytes that lie wholly on the disk, eight at a time; then what is left of the last. */
        for (; k + 8 <= whole; k += 8) {
                uint64_t w;
                memcpy(&w, data + k, 8);
                bits += (uint64_t) __builtin_popcountll(w);
        }
        for (; k < whole; k++)
                bits += (uint64_t) __builtin_popcount(data[k]);
        if (k < n && (first + k) * 8 < nbits) {
                unsigned left = (unsigned) (nbits - (first + k) * 8);
                bits += (uint64_t) __builtin_popcount(data[k] & ((1U << left) - 1));
        }
        if (first * 8 < nbits && nbits <= (first + n) * 8) {
                uint64_t b = nbits - 1 - first * 8;
                *ret_last = data[b / 8] >> (b % 8) & 1;
        }
        return bits;
}

/* The dirty bytes of a bitmap read from the file a cluster of its table and a cluster of its data
 * at a time, never as a whole map: two clusters of memory, whatever the bitmap's size. */
static int count_dirty(Image *img, Qcow2 *q, const Qcow2Bitmap *bm, uint64_t *ret) {
        uint64_t bytes = qcow2_bitmap_bytes(img->size, bm->granularity_bits), granularity = UINT64_C(1) << bm->granularity_bits;
        uint64_t nbits = qcow2_div_round_up(img->size, granularity), per = q->cluster_size / 8, bits = 0;
        _cleanup_free_ uint64_t *table = malloc(q->cluster_size);
        _cleanup_free_ uint8_t *data = malloc(q->cluster_size);
        bool last = false;
        int r;

        if (!table || !data)
                return image_fail(img, -ENOMEM, "Out of memory");
        if (qcow2_div_round_up(bytes, q->cluster_size) != bm->table_size)
                return CORRUPT(img, "Image '%s' is corrupt: Could not read bitmap '%s' from image: its table has %" PRIu32 " entries for a disk of %" PRIu64 " bytes",
                               img->path, bm->name, bm->table_size, img->size);
        for (uint64_t base = 0; base < bm->table_size; base += per) {
                uint64_t n_entries = MIN(per, bm->table_size - base);

                r = image_file_read(img, table, bm->table_offset + base * 8, n_entries * 8);
                if (r < 0)
                        return r;
                for (uint64_t j = 0; j < n_entries; j++) {
                        uint64_t entry = get_be64((const uint8_t *) &table[j]), offset = entry & QCOW2_BME_TABLE_OFFSET_MASK;
                        uint64_t first = (base + j) << q->cluster_bits, n = MIN(q->cluster_size, bytes - first);

                        r = check_table_entry(img, q, bm, entry);
                        if (r < 0)
                                return r;
                        if (offset == 0 && !(entry & QCOW2_BME_TABLE_ALL_ONES))
                                continue;
                        if (offset == 0) {
                                /* All ones, unread: the bits of the disk in it. */
                                uint64_t end = MIN((first + n) * 8, nbits);
                                bits += end - first * 8;
                                last = end == nbits;
                                continue;
                        }
                        r = image_file_read(img, data, offset, q->cluster_size);
                        if (r < 0)
                                return r;
                        bits += count_cluster(data, first, n, nbits, &last);
                }
        }
        /* The last granule counts only up to the end of the disk, as image_dirty_map_count(). */
        *ret = bits * granularity - (last ? nbits * granularity - img->size : 0);
        return 0;
}

int image_bitmap_dirty_bytes(Image *img, size_t i, uint64_t *ret) {
        const Qcow2Bitmap *bm;
        int r;

        r = load_directory(img);
        if (r < 0)
                return r;
        if (!is_qcow2(img) || !Q(img)->bitmaps.loaded || i >= Q(img)->bitmaps.nb_bitmaps)
                return image_fail(img, -ENOENT, "Image '%s' has no bitmap %zu", img->path, i);
        bm = &Q(img)->bitmaps.list[i];
        if (bm->inconsistent)
                return image_fail(img, -EBUSY, "Bitmap '%s' is inconsistent and cannot be used", bm->name);
        /* One that records our writes is newer in memory than on disk. */
        for (size_t t = 0; t < Q(img)->bitmaps.n_tracked; t++)
                if (strcmp(Q(img)->bitmaps.tracked[t].name, bm->name) == 0) {
                        *ret = image_dirty_map_count(Q(img)->bitmaps.tracked[t].map);
                        return 0;
                }
        return count_dirty(img, Q(img), bm, ret);
}
