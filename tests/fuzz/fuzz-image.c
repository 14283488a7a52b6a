/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target: arbitrary bytes as an image file (probed as qcow2 or raw), opened, its block
 * status walked, its data read and its persistent bitmaps listed and read. Whatever the bytes, this must end in an error or in data,
 * never in a crash, a hang, an over-allocation or a memory error. No backing files are opened
 * (a fuzzed name could name any file) and no locks taken. */

#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *error = NULL;
        Image *img = NULL;
        int fd;

        fd = fuzz_memfd(data, size);
        if (fd < 0)
                return 0;
        if (image_open_fd(fd, "/fuzz/image", IMAGE_FORMAT_PROBE, IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_NO_BACKING, &img,
                          &error) >= 0) {
                fuzz_walk(img);
                fuzz_bitmaps(img);
                image_close(img);
        }
        free(error);
        close(fd);
        return 0;
}
