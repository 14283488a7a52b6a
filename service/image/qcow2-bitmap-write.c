/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* qcow2 persistent dirty bitmaps: writing them (new data, tables and directory, then the header
 * that names them), changing them as QEMU's bitmap commands do, and recording our own writes in
 * the enabled ones. Reading and checking is qcow2-bitmap.c's. */

#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static Qcow2 *Q(Image *img) {
        return img->format_data;
}

static bool is_qcow2(const Image *img) {
        return img->ops == &qcow2_ops && img->format_data;
}

/* ---- writing ------------------------------------------------------------------------------- *
 *
 * The write order is the rest of the writer's (qcow2-write.c): a bitmap's new data and table, and
 * a new directory, go to new clusters; once they and their reference counts are durable, one
 * write of the header names the new directory (with autoclear bit 0 set if any bitmap is left);
 * only then are the old directory and the clusters of replaced or removed bitmaps freed. A crash
 * leaves the old bitmaps or the new ones, never a mix, and at worst clusters that leak. Nothing is
 * changed in place, so nothing QEMU trusts is ever half written. */

/* QEMU's serialization of bytes [first, first + n) of the bits. */
static void serialize(const ImageDirtyMap *m, uint64_t first, uint64_t n, uint8_t *out) {
        for (uint64_t k = 0; k < n; k++) {
                uint64_t byte = first + k;
                out[k] = (uint8_t) (m->words[byte / 8] >> (8 * (byte % 8)));
        }
}

static bool all_zero(const uint8_t *p, size_t n) {
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Frees, once nothing points to them any more, the clusters of a table in memory and the
 * table's own. */
static int free_table_later(Image *img, Qcow2 *q, const uint64_t *table, uint32_t n, uint64_t table_offset) {
        int r;

        for (uint32_t i = 0; table && i < n; i++)
                if (table[i] & QCOW2_BME_TABLE_OFFSET_MASK) {
                        r = qcow2_free_later(img, q, table[i] & QCOW2_BME_TABLE_OFFSET_MASK, q->cluster_size);
                        if (r < 0)
                                return r;
                }
        if (table_offset == 0)
                return 0;
        return qcow2_free_later(img, q, table_offset, qcow2_div_round_up((uint64_t) n * 8, q->cluster_size) << q->cluster_bits);
}

static int write_table(Image *img, Qcow2 *q, const uint64_t *table, uint32_t n, uint64_t *ret_offset) {
        uint64_t clusters = qcow2_div_round_up((uint64_t) n * 8, q->cluster_size);
        _cleanup_free_ uint8_t *raw = calloc(clusters, q->cluster_size);
        int r;

        if (!raw)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint32_t i = 0; i < n; i++)
                put_be64(raw + 8 * i, table[i]);
        r = qcow2_alloc_clusters(img, q, clusters, ret_offset);
        if (r < 0)
                return r;
        r = image_file_write(img, raw, *ret_offset, clusters << q->cluster_bits);
        if (r < 0)
                (void) qcow2_free_later(img, q, *ret_offset, clusters << q->cluster_bits);
        return r;
}

/* Writes each cluster of bits that is not all zeroes to a new cluster; the others are all-zeroes
 * entries, as QEMU writes them. */
static int write_data(Image *img, Qcow2 *q, const ImageDirtyMap *m, uint64_t *table, uint32_t n) {
        uint64_t bytes = qcow2_div_round_up(m->nbits, 8);
        _cleanup_free_ uint8_t *buf = malloc(q->cluster_size);
        int r;

        if (!buf)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint32_t i = 0; i < n; i++) {
                uint64_t first = (uint64_t) i << q->cluster_bits, len = MIN(q->cluster_size, bytes - first);

                memset(buf, 0, q->cluster_size);
                serialize(m, first, len, buf);
                if (all_zero(buf, len))
                        continue;
                r = qcow2_alloc_clusters(img, q, 1, &table[i]);
                if (r < 0)
                        return r;
                r = image_file_write(img, buf, table[i], q->cluster_size);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A bitmap's map stored in new clusters: its table (in memory, host order), the table's offset
 * and size. Nothing points to them yet; on failure they are freed again. */
static int store_map(Image *img, Qcow2 *q, const ImageDirtyMap *m, uint64_t **ret_table, uint64_t *ret_offset,
                     uint32_t *ret_size) {
        uint32_t n = (uint32_t) qcow2_div_round_up(qcow2_div_round_up(m->nbits, 8), q->cluster_size);
        _cleanup_free_ uint64_t *table = calloc(n ?: 1, 8);
        int r;

        if (!table)
                return image_fail(img, -ENOMEM, "Out of memory");
        r = write_data(img, q, m, table, n);
        if (r >= 0)
                r = write_table(img, q, table, n, ret_offset);
        if (r < 0) {
                (void) free_table_later(img, q, table, n, 0);
                return r;
        }
        *ret_table = TAKE_PTR(table);
        *ret_size = n;
        return 0;
}

/* Frees a stored bitmap's clusters once nothing points to them. An inconsistent bitmap's table
 * may not satisfy the checks: then its clusters are left (a leak `qemu-img check -r leaks`
 * reclaims), never freed on the word of a table we cannot trust. */
static int free_bitmap_later(Image *img, Qcow2 *q, const Qcow2Bitmap *bm) {
        _cleanup_free_ uint64_t *table = NULL;
        int r;

        r = qcow2_bitmap_read_table(img, q, bm, &table);
        if (r < 0)
                return bm->inconsistent ? 0 : r;
        return free_table_later(img, q, table, bm->table_size, bm->table_offset);
}

static uint64_t directory_size(const Qcow2Bitmap *list, uint32_t n) {
        uint64_t size = 0;

        for (uint32_t i = 0; i < n; i++)
                size += qcow2_bitmap_entry_size(strlen(list[i].name), 0);
        return size;
}

static void encode_entry(const Qcow2Bitmap *bm, uint8_t *p) {
        size_t len = strlen(bm->name);

        put_be64(p, bm->table_offset);
        put_be32(p + 8, bm->table_size);
        put_be32(p + 12, bm->flags);
        p[16] = QCOW2_BME_TYPE_DIRTY_TRACKING;
        p[17] = bm->granularity_bits;
        p[18] = (uint8_t) (len >> 8);
        p[19] = (uint8_t) len;
        put_be32(p + 20, 0);
        memcpy(p + QCOW2_BME_HEADER_SIZE, bm->name, len);
}

/* The directory for 'list', written to new clusters. */
static int write_directory(Image *img, Qcow2 *q, const Qcow2Bitmap *list, uint32_t n, uint64_t *ret_offset,
                           uint64_t *ret_size) {
        uint64_t size = directory_size(list, n), clusters = qcow2_div_round_up(size, q->cluster_size), pos = 0;
        _cleanup_free_ uint8_t *dir = calloc(clusters, q->cluster_size);
        int r;

        if (!dir)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint32_t i = 0; i < n; i++) {
                encode_entry(&list[i], dir + pos);
                pos += qcow2_bitmap_entry_size(strlen(list[i].name), 0);
        }
        r = qcow2_alloc_clusters(img, q, clusters, ret_offset);
        if (r < 0)
                return r;
        r = image_file_write(img, dir, *ret_offset, clusters << q->cluster_bits);
        if (r < 0) {
                (void) qcow2_free_later(img, q, *ret_offset, clusters << q->cluster_bits);
                return r;
        }
        *ret_size = size;
        return 0;
}

/* The header names the new directory (or, with no bitmap left, none), with autoclear bit 0 set
 * exactly when there is one. Every other autoclear bit is cleared, as the format asks of a writer
 * that does not know them. */
static int write_extension(Image *img, Qcow2 *q, uint32_t n, uint64_t dir_offset, uint64_t dir_size,
                           bool *ret_written) {
        uint8_t ext[QCOW2_BITMAPS_EXT_SIZE] = {};

        put_be32(ext, n);
        put_be64(ext + 8, dir_size);
        put_be64(ext + 16, dir_offset);
        return qcow2_rewrite_header(img, q, &(Qcow2HeaderEdit) {
                .set_bitmaps = true,
                .bitmaps_ext = n > 0 ? ext : NULL,
                .autoclear = n > 0 ? QCOW2_AUTOCLEAR_BITMAPS : 0,
        }, ret_written);
}

/* Makes 'list' (n entries; the array is taken over, whatever happens, the names stay the
 * caller's) the image's bitmaps, and frees the clusters of 'old' (bitmaps replaced or removed)
 * after. On failure before the header is written, nothing changed; after it (the header write or
 * its sync failed), what is on disk is unknown: the bitmaps in memory are kept, and further
 * changes refused. */
static int commit_directory(Image *img, Qcow2 *q, Qcow2Bitmap *list, uint32_t n, const Qcow2Bitmap *old,
                            size_t n_old) {
        Qcow2Bitmaps *b = &q->bitmaps;
        uint64_t dir_offset = 0, dir_size = 0, old_offset = b->dir_offset, old_size = b->dir_size;
        bool written = false;
        int r;

        if (n > 0) {
                r = write_directory(img, q, list, n, &dir_offset, &dir_size);
                if (r < 0) {
                        free(list);
                        return r;
                }
        }
        /* Everything new, and the counts of its clusters, durable before anything names it. */
        r = qcow2_flush(img);
        if (r >= 0) {
                r = write_extension(img, q, n, dir_offset, dir_size, &written);
                /* Failing to write the header, or to sync it, may have written some of it. */
                if (r < 0 && written) {
                        b->broken = true;
                        free(list);
                        return r;
                }
        }
        if (r < 0) {
                free(list);
                if (dir_size > 0)
                        (void) qcow2_free_later(img, q, dir_offset, qcow2_div_round_up(dir_size, q->cluster_size) << q->cluster_bits);
                return r;
        }

        qcow2_bitmap_list_free(b->list, 0);
        b->list = list;
        b->nb_bitmaps = n;
        b->dir_offset = dir_offset;
        b->dir_size = dir_size;
        b->ext_found = n > 0;
        b->lost = false;
        b->loaded = true;

        /* Now nothing names the old ones. */
        if (old_size > 0) {
                r = qcow2_free_later(img, q, old_offset, qcow2_div_round_up(old_size, q->cluster_size) << q->cluster_bits);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < n_old; i++) {
                r = free_bitmap_later(img, q, &old[i]);
                if (r < 0)
                        return r;
        }
        return qcow2_flush(img);
}

/* ---- changing bitmaps ---------------------------------------------------------------------- */

uint32_t image_bitmap_default_granularity(const Image *img) {
        /* QEMU's bdrv_get_default_bitmap_granularity(): the cluster size, within 4 to 64 KiB. */
        return MIN(UINT32_C(65536), MAX(UINT32_C(4096), img->cluster_size));
}

/* The layer's bitmaps, ready to be changed. */
static int changeable(Image *img, Qcow2 **ret) {
        Qcow2 *q = NULL;
        int r;

        if (!is_qcow2(img))
                return image_fail(img, -EOPNOTSUPP, "Can't store persistent bitmaps to '%s': it is not a qcow2 image",
                                  img->path);
        q = Q(img);
        if (!(img->flags & IMAGE_OPEN_WRITE) || !q->writable)
                return image_fail(img, -EBADF, "Image '%s' is not open for writing", img->path);
        /* Without autoclear bits, every program that writes it without knowing bitmaps would
         * leave them looking valid (QEMU's reason too). */
        if (q->version < 3)
                return image_fail(img, -EOPNOTSUPP, "Cannot store dirty bitmaps in qcow2 v2 files");
        if (q->bitmaps.broken)
                return image_fail(img, -EIO,
                                  "The bitmaps of '%s' are in an unknown state after a failed write; open the image again",
                                  img->path);
        r = qcow2_bitmaps_load(img, q);
        if (r < 0)
                return r;
        /* Every change frees clusters of the bitmaps (the old directory, at least). */
        r = qcow2_bitmaps_check_owned(img, q);
        if (r < 0)
                return r;
        /* Writes recorded so far are stored first; the set of bitmaps that record writes is
         * taken anew at the next write, after this change. */
        r = qcow2_bitmaps_sync(img, q);
        if (r < 0)
                return r;
        qcow2_bitmaps_drop_tracked(q);
        *ret = q;
        return 0;
}

static int find_usable(Image *img, Qcow2 *q, const char *name, bool consistent, Qcow2Bitmap **ret) {
        Qcow2Bitmap *bm = qcow2_bitmap_find(q, name);

        if (!bm)
                return image_fail(img, -ENOENT, "Dirty bitmap '%s' not found", name);
        if (consistent && bm->inconsistent)
                return image_fail(img, -EBUSY, "Bitmap '%s' is inconsistent and cannot be used", name);
        *ret = bm;
        return 0;
}

/* The layer's bitmaps ready to be changed, and bitmap 'name' among them: how every change of
 * one bitmap starts. */
static int changeable_bitmap(Image *img, const char *name, bool consistent, Qcow2 **ret_q, Qcow2Bitmap **ret) {
        int r;

        r = changeable(img, ret_q);
        if (r < 0)
                return r;
        return find_usable(img, *ret_q, name, consistent, ret);
}

/* Does the list in memory still name this string? */
static bool name_in_use(const Qcow2 *q, const char *name) {
        for (uint32_t i = 0; q->bitmaps.list && i < q->bitmaps.nb_bitmaps; i++)
                if (q->bitmaps.list[i].name == name)
                        return true;
        return false;
}

/* A copy of the list (names shared) with room for one more. */
static Qcow2Bitmap *copy_list(Image *img, const Qcow2 *q) {
        Qcow2Bitmap *copy = calloc((size_t) q->bitmaps.nb_bitmaps + 1, sizeof(Qcow2Bitmap));

        if (!copy) {
                image_fail(img, -ENOMEM, "Out of memory");
                return NULL;
        }
        if (q->bitmaps.nb_bitmaps > 0)
                memcpy(copy, q->bitmaps.list, q->bitmaps.nb_bitmaps * sizeof(Qcow2Bitmap));
        return copy;
}

/* QEMU's checks for a new persistent bitmap (qcow2_co_can_store_new_dirty_bitmap() and
 * check_constraints_on_bitmap()), with its texts. */
static const char *add_violation(Image *img, const Qcow2 *q, const char *name, uint32_t granularity) {
        if (strlen(name) > QCOW2_BME_MAX_NAME_SIZE)
                return "Name length exceeds maximum (1023 characters)";
        if (qcow2_bitmap_bytes(img->size, (unsigned) __builtin_ctz(granularity)) > QCOW2_BME_MAX_PHYS_SIZE)
                return "Too much space will be occupied by the bitmap. Use larger granularity";
        if (q->bitmaps.nb_bitmaps + 1 > QCOW2_MAX_BITMAPS)
                return "Maximum number of persistent bitmaps is already reached";
        if (q->bitmaps.dir_size + qcow2_bitmap_entry_size(strlen(name), 0) > QCOW2_MAX_BITMAP_DIRECTORY_SIZE)
                return "Not enough space in the bitmap directory";
        /* A disk of no bytes has no bitmap table, which the format does not allow. */
        if (img->size == 0)
                return "The image is empty";
        return NULL;
}

static int check_new(Image *img, Qcow2 *q, const char *name, uint32_t granularity) {
        const char *why;

        if (!name || !*name)
                return image_fail(img, -EINVAL, "Bitmap name cannot be empty");
        if (granularity < 512 || (granularity & (granularity - 1)))
                return image_fail(img, -EINVAL, "Granularity must be power of 2 and at least 512");
        if (qcow2_bitmap_find(q, name))
                return image_fail(img, -EEXIST, "Bitmap already exists: %s", name);
        why = add_violation(img, q, name, granularity);
        if (why)
                return image_fail(img, -EINVAL, "Can't make bitmap '%s' persistent in '%s': %s", name, img->path, why);
        return 0;
}

static bool table_in_use(const Qcow2 *q, uint64_t offset) {
        for (uint32_t i = 0; q->bitmaps.list && i < q->bitmaps.nb_bitmaps; i++)
                if (q->bitmaps.list[i].table_offset == offset)
                        return true;
        return false;
}

/* Commits 'list' (taken over) with a bitmap's new map at index i, and its old clusters ('old')
 * freed after. */
static int commit_replaced(Image *img, Qcow2 *q, Qcow2Bitmap *list, uint32_t n, uint32_t i, const ImageDirtyMap *m,
                           const Qcow2Bitmap *old) {
        _cleanup_free_ uint64_t *table = NULL;
        uint64_t offset = 0;
        uint32_t size = 0;
        int r;

        r = store_map(img, q, m, &table, &offset, &size);
        if (r < 0) {
                free(list);
                return r;
        }
        list[i].table_offset = offset;
        list[i].table_size = size;
        r = commit_directory(img, q, list, n, old, old ? 1 : 0);
        /* Not committed (and surely not: the header is not in doubt): the new clusters go. */
        if (r < 0 && !q->bitmaps.broken && !table_in_use(q, offset))
                (void) free_table_later(img, q, table, size, offset);
        return r;
}

int image_bitmap_add(Image *img, const char *name, uint32_t granularity, bool disabled) {
        ImageDirtyMap *m = NULL;
        Qcow2Bitmap *list;
        char *new_name;
        Qcow2 *q = NULL;
        uint32_t n;
        int r;

        r = changeable(img, &q);
        if (r < 0)
                return r;
        granularity = granularity ?: image_bitmap_default_granularity(img);
        r = check_new(img, q, name, granularity);
        if (r < 0)
                return r;
        r = image_dirty_map_new(img->size, granularity, &m);
        if (r < 0)
                return image_fail(img, r, "Could not make bitmap '%s': %m", name);
        new_name = strdup(name);
        list = new_name ? copy_list(img, q) : NULL;
        if (!list) {
                free(new_name);
                image_dirty_map_free(m);
                return image_fail(img, -ENOMEM, "Out of memory");
        }
        n = q->bitmaps.nb_bitmaps;
        list[n] = (Qcow2Bitmap) {
                .name = new_name,
                .flags = disabled ? 0 : QCOW2_BME_FLAG_AUTO,
                .granularity_bits = (uint8_t) __builtin_ctz(granularity),
        };
        r = commit_replaced(img, q, list, n + 1, n, m, NULL);
        if (r < 0)
                free(new_name);
        image_dirty_map_free(m);
        return r;
}

int image_bitmap_remove(Image *img, const char *name) {
        Qcow2Bitmap *bm = NULL, *list, removed;
        uint32_t n, i;
        Qcow2 *q = NULL;
        int r;

        r = changeable_bitmap(img, name, false, &q, &bm);
        if (r < 0)
                return r;
        i = (uint32_t) (bm - q->bitmaps.list);
        removed = *bm;
        list = copy_list(img, q);
        if (!list)
                return -ENOMEM;
        n = q->bitmaps.nb_bitmaps - 1;
        memmove(list + i, list + i + 1, (n - i) * sizeof(Qcow2Bitmap));
        r = commit_directory(img, q, list, n, &removed, 1);
        if (!name_in_use(q, removed.name))
                free(removed.name);
        return r;
}

/* The bitmap's new flags, in a new directory. */
static int set_flags(Image *img, const char *name, uint32_t clear, uint32_t set) {
        Qcow2Bitmap *bm = NULL, *list;
        Qcow2 *q = NULL;
        int r;

        r = changeable_bitmap(img, name, true, &q, &bm);
        if (r < 0)
                return r;
        if (((bm->flags & ~clear) | set) == bm->flags)
                return 0;
        list = copy_list(img, q);
        if (!list)
                return -ENOMEM;
        list[bm - q->bitmaps.list].flags = (bm->flags & ~clear) | set;
        return commit_directory(img, q, list, q->bitmaps.nb_bitmaps, NULL, 0);
}

int image_bitmap_enable(Image *img, const char *name, bool enable) {
        return set_flags(img, name, enable ? 0 : QCOW2_BME_FLAG_AUTO, enable ? QCOW2_BME_FLAG_AUTO : 0);
}

/* Bitmap 'name' gets the content 'm' (NULL: empty), in new clusters; its old ones are freed. */
static int replace_content(Image *img, Qcow2 *q, Qcow2Bitmap *bm, const ImageDirtyMap *m) {
        ImageDirtyMap *empty = NULL;
        Qcow2Bitmap *list, old = *bm;
        int r;

        if (!m) {
                r = image_dirty_map_new(img->size, UINT32_C(1) << bm->granularity_bits, &empty);
                if (r < 0)
                        return image_fail(img, r, "Could not clear bitmap '%s': %m", bm->name);
                m = empty;
        }
        list = copy_list(img, q);
        r = list ? commit_replaced(img, q, list, q->bitmaps.nb_bitmaps, (uint32_t) (bm - q->bitmaps.list), m, &old)
                 : -ENOMEM;
        image_dirty_map_free(empty);
        return r;
}

int image_bitmap_clear(Image *img, const char *name) {
        Qcow2Bitmap *bm = NULL;
        Qcow2 *q = NULL;
        int r;

        r = changeable_bitmap(img, name, true, &q, &bm);
        if (r < 0)
                return r;
        return replace_content(img, q, bm, NULL);
}

int image_bitmap_replace(Image *img, const char *name, const ImageDirtyMap *m) {
        Qcow2Bitmap *bm = NULL;
        Qcow2 *q = NULL;
        int r;

        r = changeable_bitmap(img, name, true, &q, &bm);
        if (r < 0)
                return r;
        if (m->granularity != UINT32_C(1) << bm->granularity_bits || m->size != img->size)
                return image_fail(img, -EINVAL, "Bitmap '%s' of '%s' has another granularity or size", name, img->path);
        return replace_content(img, q, bm, m);
}

/* Every dirty range of 'src' marked in 'dst', at dst's granularity (QEMU merges bitmaps of
 * different granularities so too). */
static void merge_into(ImageDirtyMap *dst, const ImageDirtyMap *src) {
        uint64_t start, length;

        for (uint64_t off = 0; image_dirty_map_next(src, off, &start, &length); off = start + length)
                image_dirty_map_set(dst, start, length);
}

static int load_merged(Image *img, Qcow2 *q, const Qcow2Bitmap *target, const char *const *sources, size_t n,
                       ImageDirtyMap **ret) {
        ImageDirtyMap *m = NULL;
        int r;

        r = qcow2_bitmap_read(img, q, target, &m);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                Qcow2Bitmap *src = NULL;
                ImageDirtyMap *s = NULL;

                r = find_usable(img, q, sources[i], true, &src);
                if (r >= 0)
                        r = qcow2_bitmap_read(img, q, src, &s);
                if (r >= 0)
                        merge_into(m, s);
                image_dirty_map_free(s);
        }
        if (r < 0) {
                image_dirty_map_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int image_bitmap_merge(Image *img, const char *target, const char *const *sources, size_t n) {
        ImageDirtyMap *m = NULL;
        Qcow2Bitmap *bm = NULL;
        Qcow2 *q = NULL;
        int r;

        r = changeable_bitmap(img, target, true, &q, &bm);
        if (r < 0)
                return r;
        r = load_merged(img, q, bm, sources, n, &m);
        if (r < 0)
                return r;
        r = replace_content(img, q, bm, m);
        image_dirty_map_free(m);
        return r;
}

/* ---- recording writes ---------------------------------------------------------------------- *
 *
 * Whatever is written to a layer with enabled ("auto") bitmaps is recorded in them, as QEMU
 * records a guest's writes: each such bitmap is loaded when the layer is opened for writing (an
 * image whose bitmaps we cannot read, and so cannot keep, is refused then, before anything is
 * written). Nothing about them changes unless data is written: before the first change, a new
 * directory marks them in_use, durably; writes are marked in memory; at the layer's flush (and
 * close), once the data is durable, the maps are stored and a directory without in_use takes over
 * (the commit above). A crash in between leaves them in_use: inconsistent, never wrong and
 * trusted. Disabled and inconsistent bitmaps are left as they are. */

void qcow2_bitmaps_drop_tracked(Qcow2 *q) {
        Qcow2Bitmaps *b = &q->bitmaps;

        for (size_t i = 0; i < b->n_tracked; i++) {
                free(b->tracked[i].name);
                image_dirty_map_free(b->tracked[i].map);
        }
        free(b->tracked);
        b->tracked = NULL;
        b->n_tracked = 0;
        b->tracking = false;
}

static bool trackable(const Qcow2Bitmap *bm) {
        return (bm->flags & QCOW2_BME_FLAG_AUTO) && !bm->inconsistent;
}

static int track(Image *img, Qcow2 *q, const Qcow2Bitmap *bm) {
        Qcow2Tracked *t = &q->bitmaps.tracked[q->bitmaps.n_tracked];
        int r;

        r = qcow2_bitmap_read(img, q, bm, &t->map);
        if (r < 0)
                return r;
        t->name = strdup(bm->name);
        if (!t->name) {
                t->map = image_dirty_map_free(t->map);
                return image_fail(img, -ENOMEM, "Out of memory");
        }
        q->bitmaps.n_tracked++;
        return 0;
}

/* The enabled bitmaps, loaded (once, until a change of the bitmaps drops them). */
static int load_tracked(Image *img, Qcow2 *q) {
        Qcow2Bitmaps *b = &q->bitmaps;
        uint64_t bytes = 0;
        int r;

        if (b->tracked || !b->loaded)
                return 0;
        b->tracked = calloc(b->nb_bitmaps ?: 1, sizeof(Qcow2Tracked));
        if (!b->tracked)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint32_t i = 0; i < b->nb_bitmaps; i++) {
                if (!trackable(&b->list[i]))
                        continue;
                /* All of them together within QEMU's bound for one. */
                bytes += qcow2_bitmap_bytes(img->size, b->list[i].granularity_bits);
                r = bytes > QCOW2_BME_MAX_PHYS_SIZE
                            ? image_fail(img, -E2BIG, "its enabled bitmaps would take more than 512 MiB of memory")
                            : track(img, q, &b->list[i]);
                if (r < 0) {
                        qcow2_bitmaps_drop_tracked(q);
                        return r;
                }
        }
        return 0;
}

static int refuse_unkept(Image *img, int r, char **ret_error) {
        return error_message(ret_error, r, "Image '%s' has persistent bitmaps that blockjobd cannot keep consistent: %s",
                             img->path, img->error);
}

int qcow2_bitmaps_open_writable(Image *img, Qcow2 *q, char **ret_error) {
        int r;

        /* The directory only: the maps it names are counted in the estimate from it, and loaded
         * once the open has checked that (qcow2_bitmaps_open_tracked()). */
        r = qcow2_bitmaps_load(img, q);
        return r < 0 ? refuse_unkept(img, r, ret_error) : 0;
}

int qcow2_bitmaps_open_tracked(Image *img, char **ret_error) {
        Qcow2 *q = Q(img);
        int r;

        /* Its data is never written (qcow2_bitmaps_before_change() refuses it): no write to
         * record. */
        if (q->version < 3 || (img->flags & IMAGE_OPEN_BITMAPS_ONLY))
                return 0;
        r = load_tracked(img, q);
        /* Enabled bitmaps are stored anew at the first flush after a write, and their old
         * clusters freed: the image is refused now if they own clusters that are not theirs
         * alone. Without them, writes change nothing of the bitmaps (only autoclear bits). */
        if (r >= 0 && q->bitmaps.n_tracked > 0)
                r = qcow2_bitmaps_check_owned(img, q);
        return r < 0 ? refuse_unkept(img, r, ret_error) : 0;
}

uint64_t qcow2_bitmaps_autoclear(const Qcow2 *q) {
        return q->bitmaps.ext_found && !q->bitmaps.lost ? QCOW2_AUTOCLEAR_BITMAPS : 0;
}

/* A copy of the list with the tracked bitmaps' in_use flag set or cleared. */
static Qcow2Bitmap *list_with_in_use(Image *img, Qcow2 *q, bool in_use) {
        Qcow2Bitmap *list = copy_list(img, q);

        for (uint32_t i = 0; list && i < q->bitmaps.nb_bitmaps; i++)
                if (trackable(&list[i])) {
                        if (in_use)
                                list[i].flags |= QCOW2_BME_FLAG_IN_USE;
                        else
                                list[i].flags &= ~QCOW2_BME_FLAG_IN_USE;
                }
        return list;
}

/* Only autoclear bits we keep stay set (the format's rule for a writer): durably, before the
 * first change. */
static int clear_unknown_autoclear(Image *img, Qcow2 *q) {
        uint64_t keep = q->autoclear & qcow2_bitmaps_autoclear(q);
        uint8_t field[8];
        int r;

        if (q->autoclear == keep)
                return 0;
        put_be64(field, keep);
        r = image_file_write(img, field, QCOW2_HDR_AUTOCLEAR, sizeof(field));
        if (r >= 0)
                r = image_file_sync(img);
        if (r < 0)
                return r;
        q->autoclear = keep;
        return 0;
}

/* Are the enabled bitmaps in_use on disk (as the list in memory, which is what the last commit
 * wrote, says)? */
static bool tracked_in_use(const Qcow2 *q) {
        for (uint32_t i = 0; q->bitmaps.list && i < q->bitmaps.nb_bitmaps; i++)
                if (trackable(&q->bitmaps.list[i]) && (q->bitmaps.list[i].flags & QCOW2_BME_FLAG_IN_USE))
                        return true;
        return false;
}

int qcow2_bitmaps_before_change(Image *img, Qcow2 *q) {
        Qcow2Bitmaps *b = &q->bitmaps;
        Qcow2Bitmap *list;
        int r;

        /* Its enabled bitmaps are not loaded, and not counted: a write could not be recorded. */
        if (img->flags & IMAGE_OPEN_BITMAPS_ONLY)
                return image_fail(img, -EBADF, "Image '%s' is open to change its bitmaps only, not its data", img->path);
        if (q->version < 3)
                return 0;
        /* Whether the header names bitmaps that say they are consistent is not known: no write
         * may go unrecorded in them. */
        if (b->broken)
                return image_fail(img, -EIO,
                                  "The bitmaps of '%s' are in an unknown state after a failed write; open the image again",
                                  img->path);
        if (b->tracking)
                return 0;
        r = load_tracked(img, q);
        if (r < 0)
                return r;
        if (b->n_tracked == 0)
                return clear_unknown_autoclear(img, q);
        list = list_with_in_use(img, q, true);
        if (!list)
                return -ENOMEM;
        /* The header this writes keeps bit 0 alone of the autoclear bits. A failure after it
         * (freeing the old directory) still leaves them in_use. */
        r = commit_directory(img, q, list, b->nb_bitmaps, NULL, 0);
        b->tracking = tracked_in_use(q);
        return r;
}

void qcow2_bitmaps_mark(Qcow2 *q, uint64_t offset, uint64_t length) {
        for (size_t i = 0; i < q->bitmaps.n_tracked; i++)
                image_dirty_map_set(q->bitmaps.tracked[i].map, offset, length);
}

/* Stores each tracked map in new clusters, into 'list'; the entries as they were go to 'old',
 * as they become to 'fresh'. */
static int store_tracked(Image *img, Qcow2 *q, Qcow2Bitmap *list, Qcow2Bitmap *old, Qcow2Bitmap *fresh, size_t *n) {
        Qcow2Bitmaps *b = &q->bitmaps;
        int r;

        for (size_t i = 0; i < b->n_tracked; i++) {
                Qcow2Bitmap *bm = qcow2_bitmap_find(q, b->tracked[i].name);
                _cleanup_free_ uint64_t *table = NULL;
                size_t k;

                if (!bm)
                        continue;
                k = (size_t) (bm - b->list);
                r = store_map(img, q, b->tracked[i].map, &table, &list[k].table_offset, &list[k].table_size);
                if (r < 0)
                        return r;
                old[*n] = *bm;
                fresh[(*n)++] = list[k];
        }
        return 0;
}

/* New tables that nothing names: freed again. */
static void unstore(Image *img, Qcow2 *q, const Qcow2Bitmap *fresh, size_t n) {
        for (size_t i = 0; i < n; i++)
                (void) free_bitmap_later(img, q, &fresh[i]);
}

int qcow2_bitmaps_sync(Image *img, Qcow2 *q) {
        Qcow2Bitmaps *b = &q->bitmaps;
        _cleanup_free_ Qcow2Bitmap *old = NULL, *fresh = NULL;
        Qcow2Bitmap *list;
        size_t n = 0;
        int r;

        if (!b->tracking || b->broken)
                return 0;
        list = list_with_in_use(img, q, false);
        old = calloc(b->n_tracked ?: 1, sizeof(Qcow2Bitmap));
        fresh = calloc(b->n_tracked ?: 1, sizeof(Qcow2Bitmap));
        if (!list || !old || !fresh) {
                free(list);
                return image_fail(img, -ENOMEM, "Out of memory");
        }
        r = store_tracked(img, q, list, old, fresh, &n);
        if (r < 0) {
                free(list);
                unstore(img, q, fresh, n);
                return r;
        }
        r = commit_directory(img, q, list, b->nb_bitmaps, old, n);
        /* Not committed, or committed and failing after (freeing the old tables): as the list
         * in memory says. Until in_use is cleared on disk, writes need not set it again. */
        b->tracking = tracked_in_use(q);
        if (r < 0 && !b->broken && b->tracking && n > 0 && !table_in_use(q, fresh[0].table_offset))
                unstore(img, q, fresh, n);      /* the old tables are named, the new ones not */
        return r;
}
