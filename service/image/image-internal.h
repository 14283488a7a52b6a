/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the format drivers (raw.c, qcow2.c) and the generic layer (image.c) share. */

#include <stdarg.h>
#include <sys/stat.h>

#include "error-message.h"
#include "image.h"
#include "macro.h"
#include "shared-fd.h"

/* One layer's status: unallocated, zeroes, or data. Data whose storage in the file is a hole is
 * data that reads as zeroes ('zero' set): qemu-img map says so, and nothing needs reading. */
typedef struct LayerExtent {
        LayerKind kind;
        uint64_t length;
        bool zero;
} LayerExtent;

typedef struct ImageOps {
        ImageFormat format;

        /* Reads the header and checks it; sets size, cluster size and backing name. */
        int (*open)(Image *img, char **ret_error);
        void (*close)(Image *img);
        /* The most memory the open layer's metadata and buffers can take (see image.h). */
        uint64_t (*memory_estimate)(const Image *img);
        /* A layer opened for writing, once its whole chain is open and within the bound on its
         * memory: what writing it needs that may be big (qcow2: its enabled bitmaps' maps, which
         * memory_estimate() counts from the headers). NULL: nothing. */
        int (*open_writable)(Image *img, char **ret_error);

        /* This layer's status at 'offset', for at most 'length' bytes. */
        int (*status)(Image *img, uint64_t offset, uint64_t length, LayerExtent *ret);

        /* Reads a range that status() called data, all of it within one such extent. */
        int (*read)(Image *img, void *buf, uint64_t offset, size_t length);

        /* Writing, on images opened with IMAGE_OPEN_WRITE. */
        int (*write)(Image *img, const void *buf, uint64_t offset, size_t length);
        int (*write_zeroes)(Image *img, uint64_t offset, uint64_t length);
        int (*discard)(Image *img, uint64_t offset, uint64_t length);
        int (*flush)(Image *img);
        int (*set_backing)(Image *img, const char *name, ImageFormat format);
} ImageOps;

struct Image {
        const ImageOps *ops;
        void *format_data;

        int fd;
        SharedFd *shared_fd;            /* fd is this entry's, shared with other jobs' layers */
        bool fd_borrowed;               /* fd is the caller's (IMAGE_OPEN_BORROW_FD) */
        char *path;
        struct stat st;
        uint64_t file_size;             /* of the file holding the image (for bounds checks) */
        unsigned flags;
        bool probed;                    /* the format was decided by the content */

        uint64_t size;                  /* virtual size */
        uint32_t cluster_size;

        char *backing_name;             /* as recorded, NULL if none */
        ImageFormat backing_format;     /* as recorded; PROBE if not recorded */
        Image *backing;
        int depth_below;                /* layers below this one */

        char *error;

        /* Something was written with image_file_write() since the last image_file_sync() (or the
         * layer was opened for writing and not synced yet): a flush that finds nothing else to
         * write needs no sync then. */
        bool file_unsynced;
};

extern const ImageOps raw_ops;
extern const ImageOps qcow2_ops;

int qcow2_create_fd(int fd, const char *name, const ImageCreateParams *p, char **ret_error);

/* Record the reason of a failure, like printf, and return r. %m names r. */
int image_fail(Image *img, int r, const char *format, ...) _printf_(3, 4);
/* Opening fails with error_message() (error-message.h): the message goes to the caller. */

/* Does [offset, offset + length) of the file hold data, or a hole? Returns the length of the
 * leading part that is one or the other (at least 1), and which in *ret_hole. */
int image_file_allocation(Image *img, uint64_t offset, uint64_t length, bool *ret_hole, uint64_t *ret_length);

/* Reads exactly 'length' bytes at 'offset' of the file; beyond its end, zeroes (as QEMU's file
 * layer does). */
int image_file_read(Image *img, void *buf, uint64_t offset, size_t length);
/* All of it written, or an error recorded; and the data made durable. */
int image_file_write(Image *img, const void *buf, uint64_t offset, size_t length);
int image_file_sync(Image *img);

/* raw.c: the kernel copies a range of one raw file into another (image_copy_range()). Returns
 * bytes copied or a negative errno, recording nothing. */
int raw_copy_range(Image *src, Image *dst, uint64_t offset, uint64_t length, ImageCopyMode mode);
