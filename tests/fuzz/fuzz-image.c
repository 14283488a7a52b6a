/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target: arbitrary bytes as an image file (probed as qcow2 or raw), opened, its block
 * status walked and its data read. Whatever the bytes, this must end in an error or in data,
 * never in a crash, a hang, an over-allocation or a memory error. No backing files are opened
 * (a fuzzed name could name any file) and no locks taken. */

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image.h"

#define READ_BUDGET (16U << 20)
#define EXTENTS_MAX 4096U
#define PIECE (1U << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t *buf;
        char *error = NULL;
        Image *img = NULL;
        int fd;

        if (!buf && !(buf = malloc(PIECE)))
                return 0;

        fd = memfd_create("fuzz-image", MFD_CLOEXEC);
        if (fd < 0)
                return 0;
        if (write(fd, data, size) != (ssize_t) size) {
                close(fd);
                return 0;
        }

        if (image_open_fd(fd, "/fuzz/image", IMAGE_FORMAT_PROBE, IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_NO_BACKING, &img,
                          &error) >= 0) {
                uint64_t virtual_size = image_size(img), off = 0, budget = READ_BUDGET;

                for (unsigned n = 0; off < virtual_size && n < EXTENTS_MAX && budget > 0; n++) {
                        ImageExtent e;

                        if (image_block_status(img, off, virtual_size - off, &e) < 0)
                                break;
                        size_t piece = (size_t) (e.length < PIECE ? e.length : PIECE);
                        if (piece > budget)
                                piece = budget;
                        (void) image_read(img, buf, off, piece);
                        budget -= piece;
                        off += e.length;
                }
                image_close(img);
        }
        free(error);
        close(fd);
        return 0;
}
