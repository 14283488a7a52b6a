/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* qcow2 images: opening (every header field is checked before use), mapping guest offsets to
 * host clusters through the L1 and L2 tables, block status, and reading, compressed clusters
 * included. Written from docs/interop/qcow2.txt.
 *
 * Metadata is untrusted input: a table or cluster offset is used only once it is known to be
 * aligned and inside the file, sizes are bounded before anything is allocated for them, and a
 * violation is reported as a corrupt image naming what is wrong, never as a crash. */

#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "qcow2.h"

#define CORRUPT(img, ...) image_fail((img), -EUCLEAN, __VA_ARGS__)

static Qcow2 *Q(Image *img) {
        return img->format_data;
}

/* ---- opening ------------------------------------------------------------------------------- */

static void qcow2_close(Image *img) {
        Qcow2 *q = Q(img);

        if (!q)
                return;
        /* Callers flush and check; this is the last chance not to lose what they did not. */
        if (q->writable && qcow2_flush_image(img) < 0)
                fprintf(stderr, "<3>Could not flush '%s' on closing it: %s\n", img->path, strempty(img->error));
        qcow2_refcount_done(q);
        qcow2_bitmaps_done(q);
        for (unsigned i = 0; i < QCOW2_L2_CACHE_TABLES; i++)
                free(q->l2_cache[i].entries);
        free(q->l1);
        free(q->decompressed);
        free(q->compressed);
        free(q);
        img->format_data = NULL;
}

/* Is [offset, offset + length) a cluster-aligned range inside the file, clear of the header? */
static bool table_in_file(const Image *img, const Qcow2 *q, uint64_t offset, uint64_t length) {
        return offset >= q->cluster_size && (offset & (q->cluster_size - 1)) == 0 && length <= img->file_size &&
               offset <= img->file_size - length;
}

static const char *feature_name(const uint8_t *table, size_t table_len, unsigned type, unsigned bit, char buf[48]) {
        /* The image's own feature name table, if it has one, can name what we do not know. */
        for (size_t i = 0; table && i + 48 <= table_len; i += 48)
                if (table[i] == type && table[i + 1] == bit) {
                        memcpy(buf, table + i + 2, 46);
                        buf[46] = 0;
                        return buf;
                }
        return NULL;
}

size_t qcow2_extensions_end(const uint8_t *hdr, size_t hdr_len) {
        uint64_t name = get_be64(hdr + QCOW2_HDR_BACKING_OFFSET);

        /* As QEMU reads them: up to the backing file name if there is one (it may lie in the
         * padding of the last extension), else to the end of the first cluster. */
        return name != 0 ? (size_t) MIN(name, (uint64_t) hdr_len) : hdr_len;
}

static int parse_extensions(Image *img, Qcow2 *q, const uint8_t *hdr, size_t hdr_len, char **ret_error) {
        const uint8_t *features = NULL;
        size_t features_len = 0;
        size_t pos = q->header_length, end = qcow2_extensions_end(hdr, hdr_len);

        while (pos < end) {
                uint32_t type, len;

                if (end - pos < 8)
                        return error_message(ret_error, -EUCLEAN,
                                             "Image '%s' is corrupt: a header extension runs into the backing file name",
                                             img->path);
                type = get_be32(hdr + pos);
                len = get_be32(hdr + pos + 4);
                pos += 8;
                if (type == QCOW2_EXT_END)
                        break;
                if (len > end - pos)
                        return error_message(ret_error, -EUCLEAN,
                                             "Image '%s' is corrupt: header extension 0x%08x runs past %s",
                                             img->path, type, end < hdr_len ? "the backing file name" : "the first cluster");

                switch (type) {
                case QCOW2_EXT_BACKING_FORMAT: {
                        char name[32];
                        if (len >= sizeof(name))
                                return error_message(ret_error, -EUCLEAN,
                                                     "Image '%s' is corrupt: backing format name too long", img->path);
                        memcpy(name, hdr + pos, len);
                        name[len] = 0;
                        img->backing_format = image_format_from_string(name);
                        if (img->backing_format == _IMAGE_FORMAT_MAX)
                                return error_message(ret_error, -EOPNOTSUPP,
                                                     "Image '%s' has a backing file of format '%s', which blockjobd does not support",
                                                     img->path, name);
                        break;
                }
                case QCOW2_EXT_FEATURE_TABLE:
                        features = hdr + pos;
                        features_len = len;
                        break;
                case QCOW2_EXT_BITMAPS: {
                        int r = qcow2_bitmaps_parse_ext(img, q, hdr + pos, len, ret_error);
                        if (r < 0)
                                return r;
                        break;
                }
                case QCOW2_EXT_CRYPTO:
                        return error_message(ret_error, -EOPNOTSUPP,
                                             "Image '%s' is encrypted, which blockjobd does not support", img->path);
                case QCOW2_EXT_DATA_FILE:
                        return error_message(ret_error, -EOPNOTSUPP,
                                             "Image '%s' uses an external data file, which blockjobd does not support",
                                             img->path);
                default:
                        break;          /* unknown extensions may be ignored */
                }
                pos += (len + 7) & ~(size_t) 7;
        }

        /* Now that the names are known: refuse what cannot be read correctly. */
        uint64_t unknown = q->incompatible & ~QCOW2_INCOMPAT_KNOWN;
        if (unknown) {
                char buf[48];
                unsigned bit = (unsigned) __builtin_ctzll(unknown);
                const char *name = feature_name(features, features_len, 0, bit, buf);
                return error_message(ret_error, -EOPNOTSUPP,
                                     "Image '%s' uses an unknown incompatible feature (bit %u%s%s%s), which blockjobd does not support",
                                     img->path, bit, name ? ": '" : "", strempty(name), name ? "'" : "");
        }
        return 0;
}

static int check_features(Image *img, Qcow2 *q, const uint8_t *hdr, char **ret_error) {
        if (q->incompatible & QCOW2_INCOMPAT_DATA_FILE)
                return error_message(ret_error, -EOPNOTSUPP,
                                     "Image '%s' uses an external data file, which blockjobd does not support",
                                     img->path);
        if (q->incompatible & QCOW2_INCOMPAT_EXTL2)
                return error_message(ret_error, -EOPNOTSUPP,
                                     "Image '%s' uses extended L2 entries (subclusters), which blockjobd does not support",
                                     img->path);
        if (q->incompatible & QCOW2_INCOMPAT_COMPRESSION) {
                uint8_t type = q->header_length > QCOW2_HDR_COMPRESSION_TYPE ? hdr[QCOW2_HDR_COMPRESSION_TYPE] : 0;
                if (type == 1)
                        return error_message(ret_error, -EOPNOTSUPP,
                                             "Image '%s' uses zstd compression, which blockjobd does not support",
                                             img->path);
                return error_message(ret_error, -EOPNOTSUPP,
                                     "Image '%s' uses compression type %u, which blockjobd does not support", img->path,
                                     type);
        }
        if ((img->flags & IMAGE_OPEN_WRITE) && (q->incompatible & QCOW2_INCOMPAT_DIRTY))
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' was not closed cleanly and its reference counts may be wrong; " "repair it with 'qemu-img check -r all %s' first",
                                     img->path, img->path);
        if ((img->flags & IMAGE_OPEN_WRITE) && (q->incompatible & QCOW2_INCOMPAT_CORRUPT))
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is marked corrupt; repair it with 'qemu-img check -r all %s' before writing to it",
                                     img->path, img->path);
        return 0;
}

static int read_backing_name(Image *img, Qcow2 *q, const uint8_t *hdr, size_t hdr_len, char **ret_error) {
        uint64_t offset = get_be64(hdr + QCOW2_HDR_BACKING_OFFSET);
        uint32_t size = get_be32(hdr + QCOW2_HDR_BACKING_SIZE);

        if (offset == 0)
                return 0;
        if (size == 0 || size > QCOW2_MAX_BACKING_NAME)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: backing file name of %u bytes",
                                     img->path, size);
        /* The name lives in the first cluster, after the header and its extensions. */
        if (offset < q->header_length || offset > hdr_len || size > hdr_len - offset)
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is corrupt: backing file name outside the first cluster", img->path);
        if (memchr(hdr + offset, 0, size))
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is corrupt: backing file name contains a NUL byte", img->path);

        img->backing_name = strndup((const char *) hdr + offset, size);
        if (!img->backing_name)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        return 0;
}

/* Entries of a table as read from the file, big-endian, turned into host order in place (no
 * second buffer of the table's size). */
static void table_from_disk(uint64_t *entries, uint64_t n) {
        for (uint64_t i = 0; i < n; i++)
                entries[i] = get_be64((const uint8_t *) &entries[i]);
}

static int load_l1(Image *img, Qcow2 *q, char **ret_error) {
        uint64_t bytes = (uint64_t) q->l1_size * 8;
        int r;

        if (q->l1_size == 0)
                return 0;
        if (!table_in_file(img, q, q->l1_offset, bytes))
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is corrupt: L1 table at offset 0x%" PRIx64 " is unaligned or beyond the end of the file",
                                     img->path, q->l1_offset);

        q->l1 = malloc(bytes);
        if (!q->l1)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        r = image_file_read(img, q->l1, q->l1_offset, bytes);
        if (r < 0)
                return error_message(ret_error, r, "%s", img->error);
        table_from_disk(q->l1, q->l1_size);
        return 0;
}

/* A layer to be written: its bitmaps must be ones we can keep consistent, which is known before
 * anything is written (neither step writes; the bitmaps' check needs the refcounts). */
static int open_writable(Image *img, Qcow2 *q, char **ret_error) {
        int r;

        r = qcow2_open_writable(img, q, ret_error);
        if (r < 0)
                return r;
        return qcow2_bitmaps_open_writable(img, q, ret_error);
}

static int qcow2_open(Image *img, char **ret_error) {
        uint8_t fixed[QCOW2_HEADER_V3_SIZE] = {};
        _cleanup_free_ uint8_t *hdr = NULL;
        size_t hdr_len;
        Qcow2 *q;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        img->format_data = q;

        if (img->file_size < QCOW2_HEADER_V2_SIZE)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is too short for a qcow2 header", img->path);
        r = image_file_read(img, fixed, 0, sizeof(fixed));
        if (r < 0)
                return error_message(ret_error, r, "%s", img->error);
        if (memcmp(fixed, QCOW2_MAGIC, 4) != 0)
                return error_message(ret_error, -EMEDIUMTYPE, "Image '%s' is not a qcow2 image", img->path);

        q->version = get_be32(fixed + QCOW2_HDR_VERSION);
        if (q->version != 2 && q->version != 3)
                return error_message(ret_error, -EOPNOTSUPP,
                                     "Image '%s' is qcow2 version %u, which blockjobd does not support", img->path,
                                     q->version);

        q->cluster_bits = get_be32(fixed + QCOW2_HDR_CLUSTER_BITS);
        if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS || q->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
                return error_message(ret_error, -EUCLEAN, "Image '%s' has an unsupported cluster size (2^%u bytes)",
                                     img->path, q->cluster_bits);
        q->cluster_size = UINT64_C(1) << q->cluster_bits;
        q->cache_tables = (unsigned) MIN((uint64_t) QCOW2_L2_CACHE_TABLES,
                                         MAX(UINT64_C(2), QCOW2_CACHE_BYTES / q->cluster_size));
        q->l2_bits = q->cluster_bits - 3;
        q->l2_entries = UINT64_C(1) << q->l2_bits;

        if (get_be32(fixed + QCOW2_HDR_CRYPT_METHOD) != 0)
                return error_message(ret_error, -EOPNOTSUPP,
                                     "Image '%s' is encrypted, which blockjobd does not support", img->path);

        if (q->version == 2) {
                q->header_length = QCOW2_HEADER_V2_SIZE;
                q->refcount_order = 4;
        } else {
                if (img->file_size < QCOW2_HEADER_V3_SIZE)
                        return error_message(ret_error, -EUCLEAN, "Image '%s' is too short for a qcow2 v3 header",
                                             img->path);
                q->incompatible = get_be64(fixed + QCOW2_HDR_INCOMPATIBLE);
                q->compatible = get_be64(fixed + QCOW2_HDR_COMPATIBLE);
                q->autoclear = get_be64(fixed + QCOW2_HDR_AUTOCLEAR);
                q->refcount_order = get_be32(fixed + QCOW2_HDR_REFCOUNT_ORDER);
                q->header_length = get_be32(fixed + QCOW2_HDR_LENGTH);
                if (q->refcount_order > 6)
                        return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: refcount order %u", img->path,
                                             q->refcount_order);
                if (q->header_length < QCOW2_HEADER_V3_SIZE || q->header_length % 8 != 0 ||
                    q->header_length > q->cluster_size)
                        return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: header length %u", img->path,
                                             q->header_length);
        }

        /* The first cluster holds the header, its extensions and the backing file name. */
        hdr_len = (size_t) MIN(q->cluster_size, img->file_size);
        hdr = malloc(hdr_len);
        if (!hdr)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        r = image_file_read(img, hdr, 0, hdr_len);
        if (r < 0)
                return error_message(ret_error, r, "%s", img->error);
        if (q->header_length > hdr_len)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: header longer than the file",
                                     img->path);

        r = check_features(img, q, hdr, ret_error);
        if (r < 0)
                return r;
        /* Version 2 images have extensions too (right after their 72 bytes), the backing file's
         * format among them: QEMU reads them for both versions. */
        r = parse_extensions(img, q, hdr, hdr_len, ret_error);
        if (r < 0)
                return r;
        r = read_backing_name(img, q, hdr, hdr_len, ret_error);
        if (r < 0)
                return r;

        uint64_t size = get_be64(fixed + QCOW2_HDR_SIZE);
        img->cluster_size = (uint32_t) q->cluster_size;
        if (size > (UINT64_C(1) << 61))
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: virtual size %" PRIu64, img->path,
                                     size);
        /* QEMU counts a disk in sectors of 512 bytes: a partial last sector is not part of it. */
        img->size = size & ~(uint64_t) 511;

        /* The L1 table must cover the whole virtual size (as the header says it), and stay within
         * QEMU's bounds. */
        q->l1_size = get_be32(fixed + QCOW2_HDR_L1_SIZE);
        q->l1_offset = get_be64(fixed + QCOW2_HDR_L1_OFFSET);
        uint64_t per_l2 = q->l2_entries << q->cluster_bits;
        uint64_t needed = size / per_l2 + (size % per_l2 != 0);
        if ((uint64_t) q->l1_size * 8 > QCOW2_MAX_L1_BYTES)
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: L1 table of %u entries is too large",
                                     img->path, q->l1_size);
        if (q->l1_size < needed)
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is corrupt: L1 table of %u entries is too small for the virtual size",
                                     img->path, q->l1_size);

        q->reftable_offset = get_be64(fixed + QCOW2_HDR_REFTABLE_OFFSET);
        q->reftable_clusters = get_be32(fixed + QCOW2_HDR_REFTABLE_CLUSTERS);
        if ((uint64_t) q->reftable_clusters << q->cluster_bits > QCOW2_MAX_REFTABLE_BYTES ||
            !table_in_file(img, q, q->reftable_offset, (uint64_t) q->reftable_clusters << q->cluster_bits))
                return error_message(ret_error, -EUCLEAN,
                                     "Image '%s' is corrupt: refcount table at offset 0x%" PRIx64 " is unaligned, too large or beyond the end of the file",
                                     img->path, q->reftable_offset);

        q->nb_snapshots = get_be32(fixed + QCOW2_HDR_NB_SNAPSHOTS);
        q->snapshots_offset = get_be64(fixed + QCOW2_HDR_SNAPSHOTS_OFFSET);
        if (q->nb_snapshots > QCOW2_MAX_SNAPSHOTS ||
            (q->nb_snapshots > 0 && !table_in_file(img, q, q->snapshots_offset, 40)))
                return error_message(ret_error, -EUCLEAN, "Image '%s' is corrupt: snapshot table", img->path);

        /* Its tables are for reading it: a walk that only finds the chain's files needs none. */
        r = (img->flags & IMAGE_OPEN_HEADERS_ONLY) ? 0 : load_l1(img, q, ret_error);
        if (r < 0)
                return r;

        q->csize_shift = 62 - (q->cluster_bits - 8);
        q->csize_mask = (UINT64_C(1) << (q->cluster_bits - 8)) - 1;
        q->coffset_mask = (UINT64_C(1) << q->csize_shift) - 1;

        if (img->flags & IMAGE_OPEN_WRITE)
                return open_writable(img, q, ret_error);
        return 0;
}

/* ---- mapping ------------------------------------------------------------------------------- */

/* A cache slot for the L2 table at 'offset': its content read from the file, or (fresh, for a
 * table just allocated) all zeroes. A changed table leaving the cache is written back. */
static int get_l2(Image *img, Qcow2 *q, uint64_t offset, bool fresh, uint64_t **ret) {
        Qcow2CachedTable *slot = NULL;
        int r;

        for (unsigned i = 0; i < q->cache_tables; i++) {
                Qcow2CachedTable *t = &q->l2_cache[i];
                if (t->offset == offset && t->entries) {
                        t->last_use = ++q->use_counter;
                        *ret = t->entries;
                        return 0;
                }
                if (!slot || t->last_use < slot->last_use)
                        slot = t;
        }

        if (!fresh && !table_in_file(img, q, offset, q->cluster_size))
                return CORRUPT(img, "Image '%s' is corrupt: L2 table at offset 0x%" PRIx64 " is unaligned or beyond the end of the file",
                               img->path, offset);

        if (slot->dirty) {
                r = qcow2_evict_l2(img, q, slot);
                if (r < 0)
                        return r;
        }
        if (!slot->entries && !(slot->entries = malloc(q->cluster_size)))
                return image_fail(img, -ENOMEM, "Out of memory");
        slot->offset = 0;
        if (fresh)
                memset(slot->entries, 0, q->cluster_size);
        else {
                r = image_file_read(img, slot->entries, offset, q->cluster_size);
                if (r < 0)
                        return r;
                table_from_disk(slot->entries, q->l2_entries);
        }
        slot->offset = offset;
        slot->dirty = fresh;
        slot->unreachable = false;
        slot->last_use = ++q->use_counter;
        *ret = slot->entries;
        return 0;
}

int qcow2_load_l2(Image *img, Qcow2 *q, uint64_t offset, uint64_t **ret) {
        return get_l2(img, q, offset, false, ret);
}

int qcow2_new_l2(Image *img, Qcow2 *q, uint64_t offset, uint64_t **ret) {
        return get_l2(img, q, offset, true, ret);
}

Qcow2ClusterType qcow2_entry_type(const Qcow2 *q, uint64_t entry) {
        if (entry & QCOW2_FLAG_COMPRESSED)
                return QCOW2_CLUSTER_COMPRESSED;
        if (q->version >= 3 && (entry & QCOW2_FLAG_ZERO))
                return QCOW2_CLUSTER_ZERO;
        if ((entry & QCOW2_OFFSET_MASK) == 0)
                return QCOW2_CLUSTER_UNALLOCATED;
        return QCOW2_CLUSTER_NORMAL;
}

int qcow2_lookup_l2(Image *img, Qcow2 *q, uint64_t offset, uint64_t **ret_table, uint64_t *ret_index) {
        uint64_t cluster = offset >> q->cluster_bits;
        uint64_t l1_index = cluster >> q->l2_bits;
        uint64_t l2_offset;
        int r;

        *ret_index = cluster & (q->l2_entries - 1);
        *ret_table = NULL;
        if (l1_index >= q->l1_size)
                return 0;
        l2_offset = q->l1[l1_index] & QCOW2_OFFSET_MASK;
        if (l2_offset == 0)
                return 0;
        r = qcow2_load_l2(img, q, l2_offset, ret_table);
        return r < 0 ? r : 0;
}

static int check_entry(Image *img, Qcow2 *q, uint64_t entry, uint64_t guest_offset) {
        Qcow2ClusterType t = qcow2_entry_type(q, entry);

        if (t == QCOW2_CLUSTER_NORMAL && (entry & QCOW2_OFFSET_MASK & (q->cluster_size - 1)))
                return CORRUPT(img, "Image '%s' is corrupt: the cluster at guest offset 0x%" PRIx64 " is at unaligned host offset 0x%" PRIx64,
                               img->path, guest_offset, entry & QCOW2_OFFSET_MASK);
        if (q->version < 3 && (entry & QCOW2_FLAG_ZERO) && !(entry & QCOW2_FLAG_COMPRESSED))
                return CORRUPT(img, "Image '%s' is corrupt: zero cluster at guest offset 0x%" PRIx64 " in a version 2 image",
                               img->path, guest_offset);
        return 0;
}

static LayerKind kind_of(Qcow2ClusterType t) {
        switch (t) {
        case QCOW2_CLUSTER_NORMAL:
        case QCOW2_CLUSTER_COMPRESSED:
                return LAYER_DATA;
        case QCOW2_CLUSTER_ZERO:
                return LAYER_ZERO;
        default:
                return LAYER_UNALLOCATED;
        }
}

/* Does the file hold data at [offset, offset + length), or a hole? A copy asks about each chunk
 * twice (block status, then its read), and SEEK_DATA and SEEK_HOLE each time would be four system
 * calls per chunk: so the extent of data last found is remembered, and asked about again only
 * beyond it. Only data is remembered, since it stays data: nothing punches holes into a file we
 * write (we hold its write lock), and a source that others write is refreshed, which starts
 * with a new Qcow2 and forgets. Holes are asked about each time: a write may fill them. */
static int file_allocation(Image *img, Qcow2 *q, uint64_t offset, uint64_t length, bool *ret_hole,
                           uint64_t *ret_length) {
        uint64_t k;
        bool hole;
        int r;

        if (offset >= q->data_start && offset < q->data_end) {
                *ret_hole = false;
                *ret_length = MIN(length, q->data_end - offset);
                return 0;
        }
        /* As far as the file says, not only as far as was asked: the next chunk is likely
         * in the same extent. */
        r = image_file_allocation(img, offset, UINT64_MAX - offset, &hole, &k);
        if (r < 0)
                return r;
        if (!hole) {
                q->data_start = offset;
                q->data_end = offset + k;
        }
        *ret_hole = hole;
        *ret_length = MIN(length, k);
        return 0;
}

static int qcow2_status(Image *img, uint64_t offset, uint64_t length, LayerExtent *ret) {
        Qcow2 *q = Q(img);
        uint64_t *table, index, in_cluster = offset & (q->cluster_size - 1);
        uint64_t n = 1, span;
        Qcow2ClusterType type;
        int r;

        r = qcow2_lookup_l2(img, q, offset, &table, &index);
        if (r < 0)
                return r;

        /* Whole clusters alike, up to the end of this L2 table: of the same kind, and for normal
         * clusters also one after another in the file, so that the file can say whether they
         * hold anything at all. */
        uint64_t clusters_left = q->l2_entries - index;
        uint64_t want = (in_cluster + length + q->cluster_size - 1) >> q->cluster_bits;
        if (!table) {
                *ret = (LayerExtent) {
                        .kind = LAYER_UNALLOCATED,
                        .length = MIN(length, (clusters_left << q->cluster_bits) - in_cluster),
                };
                return 0;
        }

        r = check_entry(img, q, table[index], offset);
        if (r < 0)
                return r;
        type = qcow2_entry_type(q, table[index]);
        for (; n < clusters_left && n < want; n++) {
                uint64_t e = table[index + n];
                if (qcow2_entry_type(q, e) != type)
                        break;
                if (type == QCOW2_CLUSTER_NORMAL &&
                    (e & QCOW2_OFFSET_MASK) != (table[index] & QCOW2_OFFSET_MASK) + (n << q->cluster_bits))
                        break;
                r = check_entry(img, q, e, offset + (n << q->cluster_bits));
                if (r < 0)
                        return r;
        }
        span = MIN(length, (n << q->cluster_bits) - in_cluster);
        *ret = (LayerExtent) { .kind = kind_of(type), .length = span };

        if (type == QCOW2_CLUSTER_NORMAL) {
                /* Allocated, but maybe never written: a hole in the file reads as zeroes. */
                bool hole;
                uint64_t host = (table[index] & QCOW2_OFFSET_MASK) + in_cluster, k;

                r = file_allocation(img, q, host, span, &hole, &k);
                if (r < 0)
                        return r;
                ret->zero = hole;
                ret->length = k;
        }
        return 0;
}

/* ---- reading ------------------------------------------------------------------------------- */

int qcow2_decompress(Image *img, Qcow2 *q, uint64_t entry, uint64_t guest_offset) {
        uint64_t coffset = entry & q->coffset_mask;
        uint64_t sectors = ((entry >> q->csize_shift) & q->csize_mask) + 1;
        uint64_t csize = sectors * QCOW2_COMPRESSED_SECTOR - (coffset & (QCOW2_COMPRESSED_SECTOR - 1));
        z_stream z = {};
        int r, zr;

        if (q->decompressed_entry == entry)
                return 0;

        if (!q->decompressed)
                q->decompressed = malloc(q->cluster_size);
        if (!q->compressed)
                q->compressed = malloc(2 * q->cluster_size);
        if (!q->decompressed || !q->compressed)
                return image_fail(img, -ENOMEM, "Out of memory");

        /* At most two clusters' worth by construction of the descriptor. */
        assert(csize <= 2 * q->cluster_size);
        if (coffset >= img->file_size)
                return CORRUPT(img, "Image '%s' is corrupt: compressed cluster at guest offset 0x%" PRIx64 " is beyond the end of the file",
                               img->path, guest_offset);
        r = image_file_read(img, q->compressed, coffset, csize);
        if (r < 0)
                return r;

        /* Raw deflate, as QEMU writes it; the stream must produce exactly one cluster. */
        q->decompressed_entry = 0;
        if (inflateInit2(&z, -12) != Z_OK)
                return image_fail(img, -ENOMEM, "Could not set up decompression");
        z.next_in = q->compressed;
        z.avail_in = (uInt) csize;
        z.next_out = q->decompressed;
        z.avail_out = (uInt) q->cluster_size;
        zr = inflate(&z, Z_FINISH);
        inflateEnd(&z);
        if (!(zr == Z_STREAM_END || (zr == Z_BUF_ERROR && z.avail_out == 0)) || z.avail_out != 0)
                return CORRUPT(img, "Image '%s' is corrupt: the compressed cluster at guest offset 0x%" PRIx64 " does not decompress",
                               img->path, guest_offset);

        q->decompressed_entry = entry;
        return 0;
}

static int qcow2_read(Image *img, void *buf, uint64_t offset, size_t length) {
        Qcow2 *q = Q(img);
        uint8_t *p = buf;
        int r;

        while (length > 0) {
                uint64_t *table, index, in_cluster = offset & (q->cluster_size - 1), entry;
                size_t n;

                r = qcow2_lookup_l2(img, q, offset, &table, &index);
                if (r < 0)
                        return r;
                entry = table ? table[index] : 0;
                r = check_entry(img, q, entry, offset);
                if (r < 0)
                        return r;

                switch (qcow2_entry_type(q, entry)) {
                case QCOW2_CLUSTER_NORMAL: {
                        /* As many clusters as lie one after another in the file, in one read. */
                        uint64_t host = (entry & QCOW2_OFFSET_MASK) + in_cluster;
                        uint64_t run = q->cluster_size - in_cluster;
                        for (uint64_t i = index + 1; run < length && i < q->l2_entries; i++) {
                                uint64_t e = table[i];
                                if (qcow2_entry_type(q, e) != QCOW2_CLUSTER_NORMAL ||
                                    (e & QCOW2_OFFSET_MASK) != (entry & QCOW2_OFFSET_MASK) + ((i - index) << q->cluster_bits))
                                        break;
                                run += q->cluster_size;
                        }
                        n = (size_t) MIN((uint64_t) length, run);
                        r = image_file_read(img, p, host, n);
                        if (r < 0)
                                return r;
                        break;
                }
                case QCOW2_CLUSTER_COMPRESSED:
                        n = (size_t) MIN((uint64_t) length, q->cluster_size - in_cluster);
                        r = qcow2_decompress(img, q, entry, offset);
                        if (r < 0)
                                return r;
                        memcpy(p, q->decompressed + in_cluster, n);
                        break;
                default:
                        /* Only ever asked for data; the map changed under us? Be safe. */
                        n = (size_t) MIN((uint64_t) length, q->cluster_size - in_cluster);
                        memset(p, 0, n);
                        break;
                }

                p += n;
                offset += n;
                length -= n;
        }
        return 0;
}

/* ---- memory -------------------------------------------------------------------------------- */

uint64_t qcow2_memory_estimate(const Image *img) {
        const Qcow2 *q = img->format_data;
        uint64_t l1 = (uint64_t) q->l1_size * 8, total;

        total = sizeof(Qcow2) + l1;
        /* A source others write is refreshed: a second copy of its metadata is read before the
         * first goes. */
        if (img->flags & IMAGE_OPEN_SHARE_WRITE)
                total += l1;
        /* The L2 cache full; a cluster decompressed and its input (two clusters); the header's
         * first cluster while it is parsed. */
        total += (uint64_t) q->cache_tables * q->cluster_size + 3 * q->cluster_size + q->cluster_size;
        total += qcow2_bitmaps_memory_estimate(img, q);
        if (q->writable)
                total += qcow2_write_memory_estimate(img, q);
        return total;
}

const ImageOps qcow2_ops = {
        .format = IMAGE_FORMAT_QCOW2,
        .open = qcow2_open,
        .memory_estimate = qcow2_memory_estimate,
        .open_writable = qcow2_bitmaps_open_tracked,
        .close = qcow2_close,
        .status = qcow2_status,
        .read = qcow2_read,
        .write = qcow2_write,
        .write_zeroes = qcow2_write_zeroes,
        .discard = qcow2_discard,
        .flush = qcow2_flush_image,
        .set_backing = qcow2_set_backing,
};
