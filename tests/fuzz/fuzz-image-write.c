/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the write paths: arbitrary bytes as an image file, opened for writing,
 * then changed as stream and commit change images (data writes, zeroes, discards, flushes, and
 * rewrites of the header's backing file name and format) and as bitmap commands change its
 * persistent bitmaps, then opened again read-only and read
 * throughout. Whatever the bytes, every step must end in success or in an error, never in a
 * crash, a hang, an over-allocation or a memory error. No backing file is opened and no lock
 * taken, as in the read fuzzer.
 *
 * The input is the image, then a script of operations, then one byte: the script's length.
 * Seeds (tests/fuzz/run-fuzzer) are qemu-img's images with a script appended. */

#include <string.h>

#include "fuzz-common.h"

#define OPS_MAX 32U
#define WRITE_BUDGET (8U << 20)         /* bytes written, zeroed or discarded per input */
#define NAME_MAX_FUZZ 1100U             /* past the 1023 bytes a name may have */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Script {
        const uint8_t *p;
        size_t n;
} Script;

static unsigned take8(Script *s) {
        if (s->n == 0)
                return 0;
        s->n--;
        return *s->p++;
}

static unsigned take16(Script *s) {
        unsigned hi = take8(s);
        return hi << 8 | take8(s);
}

/* Where an operation goes: near the start or near the end of the image, aligned to sectors or
 * not; and how long it is, from a byte to a MiB. */
static void take_range(Script *s, unsigned op, uint64_t size, uint64_t *ret_offset, uint64_t *ret_length) {
        uint64_t off = (uint64_t) take16(s) << 9, length = take16(s) + 1;

        if (op & 0x10)
                off += take8(s);
        if (op & 0x20)
                length <<= 4;
        off %= size;
        if (op & 0x40)
                off = size - 1 - off;
        *ret_offset = off;
        *ret_length = length < size - off ? length : size - off;
}

static void set_backing(Image *img, Script *s) {
        static const ImageFormat formats[] = { IMAGE_FORMAT_QCOW2, IMAGE_FORMAT_RAW, IMAGE_FORMAT_PROBE };
        char name[NAME_MAX_FUZZ + 1];
        size_t len = take8(s) * 5U;
        ImageFormat format = formats[take8(s) % 3];

        if (len > NAME_MAX_FUZZ)
                len = NAME_MAX_FUZZ;
        for (size_t i = 0; i < len; i++)
                name[i] = (char) ('a' + i % 26);
        name[len] = 0;
        (void) image_set_backing(img, len > 0 ? name : NULL, format);
}

/* A change of the persistent bitmaps: add (granularity 2^9 to 2^31, maybe disabled), remove,
 * clear, enable or disable, merge; of four names, so that they meet each other. */
static void bitmap_op(Image *img, Script *s) {
        static const char *const names[] = { "b0", "b1", "b2", "b3" };
        unsigned op = take8(s), arg = take8(s);
        const char *name = names[op >> 4 & 3], *other = names[arg & 3];

        switch (op % 6) {
        case 0:
                (void) image_bitmap_add(img, name, UINT32_C(1) << (9 + arg % 23), arg & 0x80);
                break;
        case 1:
                (void) image_bitmap_remove(img, name);
                break;
        case 2:
                (void) image_bitmap_clear(img, name);
                break;
        case 3:
        case 4:
                (void) image_bitmap_enable(img, name, op % 6 == 3);
                break;
        default:
                (void) image_bitmap_merge(img, name, &other, 1);
                break;
        }
}

static void run_script(Image *img, Script *s) {
        static uint8_t *buf;
        uint64_t budget = WRITE_BUDGET;

        if (!buf && !(buf = malloc(FUZZ_PIECE)))
                return;

        for (unsigned i = 0; i < OPS_MAX && s->n > 0 && budget > 0; i++) {
                unsigned op = take8(s);
                uint64_t size = image_size(img), off, length;

                switch (op & 7) {
                case 0:
                case 1:
                case 2:
                case 3:
                        if (size == 0)
                                break;
                        take_range(s, op, size, &off, &length);
                        if (length > budget)
                                length = budget;
                        budget -= length;
                        if ((op & 7) <= 1) {
                                if (length > FUZZ_PIECE)
                                        length = FUZZ_PIECE;
                                memset(buf, (int) take8(s), (size_t) length);
                                (void) image_write(img, buf, off, (size_t) length);
                        } else if ((op & 7) == 2)
                                (void) image_write_zeroes(img, off, length);
                        else
                                (void) image_discard(img, off, length);
                        break;
                case 4:
                        (void) image_flush(img);
                        break;
                case 5:
                case 6:
                        set_backing(img, s);
                        break;
                default:
                        if (op & 0x80)
                                bitmap_op(img, s);
                        else
                                (void) image_set_backing(img, NULL, IMAGE_FORMAT_PROBE);
                        break;
                }
        }
        (void) image_flush(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *error = NULL;
        Image *img = NULL;
        size_t script_len, image_len;
        int fd;

        if (size == 0)
                return 0;
        script_len = data[size - 1];
        if (script_len > size - 1)
                script_len = size - 1;
        image_len = size - 1 - script_len;
        Script script = { data + image_len, script_len };

        fd = fuzz_memfd(data, image_len);
        if (fd < 0)
                return 0;

        if (image_open_fd(fd, "/fuzz/image", IMAGE_FORMAT_PROBE,
                          IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_NO_BACKING, &img, &error) >= 0) {
                run_script(img, &script);
                image_close(img);

                /* What was written must read, whatever it is. */
                if (image_open_fd(fd, "/fuzz/image", IMAGE_FORMAT_PROBE, IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_NO_BACKING,
                                  &img, NULL) >= 0) {
                        fuzz_walk(img);
                        fuzz_bitmaps(img);
                        image_close(img);
                }
        }
        free(error);
        close(fd);
        return 0;
}
