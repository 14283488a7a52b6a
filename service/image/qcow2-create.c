/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* New qcow2 images, version 3 (compat 1.1), laid out as qemu-img does: the header (with the
 * backing format extension and the backing file name) in cluster 0, then the refcount table,
 * the refcount blocks that count all these clusters, and the L1 table, empty. */

#include <string.h>
#include <unistd.h>

#include "qcow2.h"

#define HEADER_LENGTH 112U              /* the v3 header with its compression type field, padded */

static uint64_t div_round_up(uint64_t a, uint64_t b) {
        return a / b + (a % b != 0);
}

static int write_all(int fd, const char *name, const void *buf, size_t length, uint64_t offset, char **ret_error) {
        for (size_t done = 0; done < length;) {
                ssize_t k = pwrite(fd, (const uint8_t *) buf + done, length - done, (off_t) (offset + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return error_message(ret_error, k < 0 ? negative_errno() : -EIO, "Could not write '%s': %m",
                                             name);
                done += (size_t) k;
        }
        return 0;
}

int qcow2_create_fd(int fd, const char *name, const ImageCreateParams *p, char **ret_error) {
        uint64_t cs = p->cluster_size ?: 65536, bits = p->refcount_bits ?: 16, size;
        unsigned cluster_bits = 0, order = 0;
        uint64_t l1_entries, l1_clusters, rb_entries, rt_clusters = 1, rb_count = 1, total;
        size_t name_len = p->backing_name ? strlen(p->backing_name) : 0, pos;
        _cleanup_free_ uint8_t *buf = NULL;
        int r;

        if (cs < 512 || cs > (UINT64_C(1) << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1)))
                return error_message(ret_error, -EINVAL,
                                     "Cluster size %" PRIu64 " is not a power of 2 from 512 B to 2 MiB", cs);
        if (bits > 64 || (bits & (bits - 1)))
                return error_message(ret_error, -EINVAL, "Refcount width %" PRIu64 " is not a power of 2 up to 64 bits",
                                     bits);
        while ((UINT64_C(1) << cluster_bits) < cs)
                cluster_bits++;
        while ((UINT64_C(1) << order) < bits)
                order++;
        if (p->size > (UINT64_C(1) << 61))
                return error_message(ret_error, -EFBIG, "Virtual size %" PRIu64 " is too large", p->size);
        /* QEMU reads a qcow2 image in whole sectors of 512 bytes, and so do we: a size that is
         * not a multiple is rounded up (as qemu-img create does), so that all of it reads. */
        size = (p->size + 511) & ~(uint64_t) 511;
        if (name_len > QCOW2_MAX_BACKING_NAME)
                return error_message(ret_error, -ENAMETOOLONG, "Backing file name is too long");

        l1_entries = div_round_up(size, (cs / 8) * cs);
        if (l1_entries * 8 > QCOW2_MAX_L1_BYTES)
                return error_message(ret_error, -EFBIG,
                                     "Virtual size %" PRIu64 " is too large for clusters of %" PRIu64 " bytes", size,
                                     cs);
        /* An image of size 0 has no L1 table at all (as qemu-img makes it): a cluster for one
         * would be counted, yet nothing would point to it, a leak for `qemu-img check`. */
        l1_clusters = div_round_up(l1_entries * 8, cs);
        rb_entries = cs * 8 / bits;

        /* As many refcount blocks as it takes to count everything, themselves and the table
         * that points to them included. */
        for (;;) {
                total = 1 + rt_clusters + rb_count + l1_clusters;
                uint64_t need_rb = div_round_up(total, rb_entries), need_rt = div_round_up(need_rb * 8, cs);
                if (need_rb == rb_count && need_rt == rt_clusters)
                        break;
                rb_count = need_rb;
                rt_clusters = need_rt;
        }

        buf = calloc(1, cs);
        if (!buf)
                return error_message(ret_error, -ENOMEM, "Out of memory");

        /* Cluster 0: the header, its extensions, the backing file name. */
        memcpy(buf, QCOW2_MAGIC, 4);
        put_be32(buf + QCOW2_HDR_VERSION, 3);
        put_be32(buf + QCOW2_HDR_CLUSTER_BITS, cluster_bits);
        put_be64(buf + QCOW2_HDR_SIZE, size);
        put_be32(buf + QCOW2_HDR_L1_SIZE, (uint32_t) l1_entries);
        put_be64(buf + QCOW2_HDR_L1_OFFSET, l1_entries > 0 ? (1 + rt_clusters + rb_count) * cs : 0);
        put_be64(buf + QCOW2_HDR_REFTABLE_OFFSET, cs);
        put_be32(buf + QCOW2_HDR_REFTABLE_CLUSTERS, (uint32_t) rt_clusters);
        put_be32(buf + QCOW2_HDR_REFCOUNT_ORDER, order);
        put_be32(buf + QCOW2_HDR_LENGTH, HEADER_LENGTH);
        pos = HEADER_LENGTH;
        if (p->backing_name && p->backing_format != IMAGE_FORMAT_PROBE) {
                const char *fmt = image_format_to_string(p->backing_format);
                size_t len = strlen(fmt);
                put_be32(buf + pos, QCOW2_EXT_BACKING_FORMAT);
                put_be32(buf + pos + 4, (uint32_t) len);
                memcpy(buf + pos + 8, fmt, len);
                pos += 8 + ((len + 7) & ~(size_t) 7);
        }
        pos += 8;               /* end of extensions */
        if (pos + name_len > cs)
                return error_message(ret_error, -ENAMETOOLONG,
                                     "Backing file name does not fit in a cluster of %" PRIu64 " bytes", cs);
        if (p->backing_name) {
                memcpy(buf + pos, p->backing_name, name_len);
                put_be64(buf + QCOW2_HDR_BACKING_OFFSET, pos);
                put_be32(buf + QCOW2_HDR_BACKING_SIZE, (uint32_t) name_len);
        }
        r = write_all(fd, name, buf, cs, 0, ret_error);
        if (r < 0)
                return r;

        /* The refcount table, then its blocks: every cluster so far counted once. */
        for (uint64_t t = 0; t < rt_clusters; t++) {
                memset(buf, 0, cs);
                for (uint64_t i = 0; i < cs / 8; i++) {
                        uint64_t block = t * (cs / 8) + i;
                        if (block < rb_count)
                                put_be64(buf + 8 * i, (1 + rt_clusters + block) * cs);
                }
                r = write_all(fd, name, buf, cs, (1 + t) * cs, ret_error);
                if (r < 0)
                        return r;
        }
        for (uint64_t b = 0; b < rb_count; b++) {
                memset(buf, 0, cs);
                for (uint64_t i = 0; i < rb_entries && b * rb_entries + i < total; i++)
                        qcow2_refcount_entry_set(order, buf, i, 1);
                r = write_all(fd, name, buf, cs, (1 + rt_clusters + b) * cs, ret_error);
                if (r < 0)
                        return r;
        }

        /* The L1 table: all zeroes, as the file's end gives it. */
        if (ftruncate(fd, (off_t) (total * cs)) < 0)
                return error_message(ret_error, negative_errno(), "Could not size '%s': %m", name);
        return 0;
}
