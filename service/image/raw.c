/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Raw images: the file or block device is the disk. Block status comes from SEEK_DATA/SEEK_HOLE:
 * holes read as zeroes (allocated, in qemu-img map's sense: a raw image has no backing file to
 * fall through to); a block device is data throughout. */

#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "image-internal.h"

typedef struct Raw {
        /* The last extent SEEK_DATA/SEEK_HOLE found, to save system calls on sequential scans. */
        uint64_t extent_start, extent_end;
        LayerKind extent_kind;
        bool seek_works;
} Raw;

static int raw_open(Image *img, char **ret_error) {
        Raw *raw = calloc(1, sizeof(*raw));

        if (!raw)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        raw->seek_works = S_ISREG(img->st.st_mode);
        img->format_data = raw;
        img->size = img->file_size;
        img->cluster_size = 512;
        return 0;
}

static void raw_close(Image *img) {
        free(img->format_data);
        img->format_data = NULL;
}

static int raw_find_extent(Image *img, Raw *raw, uint64_t offset) {
        off_t data, hole;

        data = lseek(img->fd, (off_t) offset, SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
                /* A hole up to the end. */
                raw->extent_kind = LAYER_ZERO;
                raw->extent_start = offset;
                raw->extent_end = img->size;
                return 0;
        }
        if (data < 0) {
                if (IN_SET(errno, EINVAL, EOPNOTSUPP)) {
                        raw->seek_works = false;
                        return 0;
                }
                return image_fail(img, negative_errno(), "Could not get the allocation of '%s': %m", img->path);
        }

        if ((uint64_t) data > offset) {
                raw->extent_kind = LAYER_ZERO;
                raw->extent_start = offset;
                raw->extent_end = MIN((uint64_t) data, img->size);
                return 0;
        }

        hole = lseek(img->fd, (off_t) offset, SEEK_HOLE);
        if (hole < 0)
                return image_fail(img, negative_errno(), "Could not get the allocation of '%s': %m", img->path);
        /* Someone else may write the file meanwhile (a mirror's source, a guest's discard): data
         * at 'offset' for SEEK_DATA can be a hole there for SEEK_HOLE. Call it data for a byte
         * (reading it gives whatever it holds now); the next call looks again. An extent is
         * never empty. */
        raw->extent_kind = LAYER_DATA;
        raw->extent_start = offset;
        raw->extent_end = MIN(MAX((uint64_t) hole, offset + 1), img->size);
        return 0;
}

static int raw_status(Image *img, uint64_t offset, uint64_t length, LayerExtent *ret) {
        Raw *raw = img->format_data;
        int r;

        if (raw->seek_works && !(offset >= raw->extent_start && offset < raw->extent_end)) {
                r = raw_find_extent(img, raw, offset);
                if (r < 0)
                        return r;
        }
        if (!raw->seek_works) {
                *ret = (LayerExtent) { .kind = LAYER_DATA, .length = length };
                return 0;
        }
        *ret = (LayerExtent) {
                .kind = raw->extent_kind,
                .length = MIN(length, raw->extent_end - offset),
        };
        return 0;
}

/* Zeroes that cannot be a hole are written from a buffer of this size. */
#define ZEROES_BUFFER (UINT64_C(1) << 20)

static uint64_t raw_memory_estimate(const Image *img) {
        return sizeof(Raw) + ((img->flags & IMAGE_OPEN_WRITE) ? ZEROES_BUFFER : 0);
}

static int raw_read(Image *img, void *buf, uint64_t offset, size_t length) {
        return image_file_read(img, buf, offset, length);
}

static void raw_forget_extent(Image *img) {
        Raw *raw = img->format_data;
        /* Our own writes change what is data and what is hole. */
        raw->extent_start = raw->extent_end = 0;
}

static int raw_write(Image *img, const void *buf, uint64_t offset, size_t length) {
        raw_forget_extent(img);
        return image_file_write(img, buf, offset, length);
}

static int raw_write_zeroes(Image *img, uint64_t offset, uint64_t length) {
        _cleanup_free_ uint8_t *zeroes = NULL;

        raw_forget_extent(img);
        /* A hole where the file system can, zeroes written where it cannot. */
        if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) length) >= 0)
                return 0;
        if (fallocate(img->fd, FALLOC_FL_ZERO_RANGE, (off_t) offset, (off_t) length) >= 0)
                return 0;

        zeroes = calloc(1, ZEROES_BUFFER);
        if (!zeroes)
                return image_fail(img, -ENOMEM, "Out of memory");
        for (uint64_t done = 0; done < length;) {
                size_t n = (size_t) MIN(length - done, ZEROES_BUFFER);
                int r = raw_write(img, zeroes, offset + done, n);
                if (r < 0)
                        return r;
                done += n;
        }
        return 0;
}

static int raw_discard(Image *img, uint64_t offset, uint64_t length) {
        /* A raw image has nothing to fall through to: discarded means zeroes. */
        return raw_write_zeroes(img, offset, length);
}

static int raw_flush(Image *img) {
        return image_file_sync(img);
}

int raw_copy_range(Image *src, Image *dst, uint64_t offset, uint64_t length, ImageCopyMode mode) {
        raw_forget_extent(dst);

        if (mode == IMAGE_COPY_CLONE) {
                struct file_clone_range range = {
                        .src_fd = src->fd,
                        .src_offset = offset,
                        .src_length = length,
                        .dest_offset = offset,
                };
                /* All or nothing: the extents are shared, or an error says why not. */
                if (ioctl(dst->fd, FICLONERANGE, &range) < 0)
                        return negative_errno();
                return (int) MIN(length, (uint64_t) INT_MAX);
        }

        for (;;) {
                loff_t in = (loff_t) offset, out = (loff_t) offset;
                ssize_t k = copy_file_range(src->fd, &in, dst->fd, &out, (size_t) MIN(length, (uint64_t) INT_MAX), 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                /* The end of the source file came first (a file that shrank under us: reads give
                 * zeroes there, which is the reader's business). */
                if (k == 0)
                        return -ENODATA;
                return (int) k;
        }
}

const ImageOps raw_ops = {
        .format = IMAGE_FORMAT_RAW,
        .open = raw_open,
        .memory_estimate = raw_memory_estimate,
        .close = raw_close,
        .status = raw_status,
        .read = raw_read,
        .write = raw_write,
        .write_zeroes = raw_write_zeroes,
        .discard = raw_discard,
        .flush = raw_flush,
};
